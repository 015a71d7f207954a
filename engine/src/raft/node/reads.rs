//! Linearizable reads: heartbeat rounds confirm leadership for every read asked
//! before the round went out; the lease (anchored at the send time of the newest
//! round a majority answered) lets the leader skip the round while it holds.

use super::*;

impl RawNode {
    /// Asks for a linearizable read tagged `ctx`. When confirmed, a [`ReadState`]
    /// with that tag appears in a later `Ready`: serve the read once applied up to
    /// its index. One heartbeat round confirms every read asked before it went out.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if self.pending_reads.len() + self.reads_waiting_commit.len() >= self.cfg.pending_reads_max {
            return Err(ProposeError::Busy);
        }
        if !self.committed_in_term() {
            // The commit index may still be behind what earlier leaders committed.
            self.reads_waiting_commit.push(ctx);
            return Ok(());
        }
        let index = self.log.committed();
        if self.conf.voters == [self.id()] || self.lease_valid() {
            self.ready_reads.push(ReadState { index, ctx });
            return Ok(());
        }
        self.pending_reads.push_back(PendingRead { ctx, index, round: self.read_round + 1 });
        self.read_heartbeat_due = true;
        Ok(())
    }

    pub(super) fn lease_valid(&self) -> bool {
        if !self.cfg.lease_read || self.transfer_sent_in_term {
            return false;
        }
        let lease_ticks = u64::from(self.cfg.election_timeout_ticks - self.cfg.lease_drift_margin_ticks);
        self.lease_start_tick.is_some_and(|start| self.ticks < start + lease_ticks)
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        self.heartbeat_elapsed = 0;
        self.read_heartbeat_due = false;
        self.read_round += 1;
        if self.round_sent_ticks.len() == LEASE_ROUNDS_REMEMBERED_MAX {
            self.round_sent_ticks.pop_front();
        }
        self.round_sent_ticks.push_back((self.read_round, self.ticks));
        let me = self.id();
        let commit = self.log.committed();
        let targets: Vec<(NodeId, Index)> =
            self.progress.iter().filter(|(id, _)| **id != me).map(|(&id, pr)| (id, pr.match_index)).collect();
        for (to, match_index) in targets {
            let body = MessageBody::Heartbeat { commit: commit.min(match_index), read_round: self.read_round };
            self.send(to, body);
        }
        self.advance_reads();
    }

    /// Releases reads whose heartbeat round a majority of voters has answered, and
    /// extends the lease to the send time of that round.
    pub(super) fn advance_reads(&mut self) {
        let me = self.id();
        let mut acked: Vec<u64> = self
            .conf
            .voters
            .iter()
            .map(|v| if *v == me { self.read_round } else { self.progress.get(v).map_or(0, |p| p.acked_round) })
            .collect();
        let round = majority_value(&mut acked);
        while let Some(r) = self.pending_reads.front() {
            if r.round > round {
                break;
            }
            self.ready_reads.push(ReadState { index: r.index, ctx: r.ctx });
            self.pending_reads.pop_front();
        }
        while let Some(&(r, tick)) = self.round_sent_ticks.front() {
            if r > round {
                break;
            }
            if r == round {
                self.lease_start_tick = Some(self.lease_start_tick.map_or(tick, |s| s.max(tick)));
            }
            self.round_sent_ticks.pop_front();
        }
    }
}
