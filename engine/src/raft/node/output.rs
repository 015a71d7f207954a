//! What leaves the node: messages, the `Ready` (with the ordering contract of
//! `super::super::ready`), and membership changes taking effect as their entries
//! are handed out for apply.

use super::*;

impl RawNode {
    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.msgs.push(Message { from: self.id(), to, term: self.term, body });
    }

    pub(super) fn respond_after_persist(&mut self, to: NodeId, body: MessageBody) {
        self.msgs_after_persist.push(Message { from: self.id(), to, term: self.term, body });
    }

    pub(super) fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.committed() }
    }

    pub(super) fn soft_state(&self) -> SoftState {
        SoftState { role: self.role, leader: self.leader }
    }

    /// True when [`RawNode::ready`] would return work.
    pub fn has_ready(&self) -> bool {
        (self.role == Role::Leader && (self.append_due || self.commit_advanced || self.read_heartbeat_due))
            || self.soft_state() != self.prev_soft_state
            || self.hard_state() != self.prev_hard_state
            || self.snapshot_to_install.is_some()
            || self.log.has_unstable()
            || !self.msgs.is_empty()
            || !self.msgs_after_persist.is_empty()
            || self.log.has_applicable()
            || !self.ready_reads.is_empty()
            || !self.dropped_reads.is_empty()
    }

    /// Takes the work accumulated since the last call. See [`Ready`] for the order
    /// in which the driver must carry it out.
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            if self.read_heartbeat_due {
                self.broadcast_heartbeat();
            }
            if self.append_due || self.commit_advanced {
                self.broadcast_append(self.commit_advanced);
            }
        }
        self.append_due = false;
        self.commit_advanced = false;

        let mut rd = Ready::default();
        let soft = self.soft_state();
        if soft != self.prev_soft_state {
            rd.soft_state = Some(soft);
            self.prev_soft_state = soft;
        }
        let hard = self.hard_state();
        if hard != self.prev_hard_state {
            rd.hard_state = Some(hard);
            self.prev_hard_state = hard;
        }
        rd.snapshot = self.snapshot_to_install.take();
        rd.entries = self.log.take_unstable();
        rd.messages = std::mem::take(&mut self.msgs);
        rd.messages_after_persist = std::mem::take(&mut self.msgs_after_persist);
        let must_persist = rd.hard_state.is_some()
            || rd.snapshot.is_some()
            || !rd.entries.is_empty()
            || !rd.messages_after_persist.is_empty();
        if must_persist {
            self.ready_number += 1;
            rd.number = self.ready_number;
            let last_entry = rd.entries.last().map(|e| (e.index, e.term));
            self.pending_persists.push_back(PendingPersist { number: rd.number, last_entry });
        }
        rd.committed_entries = self.log.take_applicable(self.cfg.apply_bytes_max);
        for e in &rd.committed_entries {
            if e.kind == EntryKind::ConfChange
                && let Some(cc) = ConfChange::decode(&e.data)
            {
                self.apply_conf_change(cc);
            }
        }
        rd.read_states = std::mem::take(&mut self.ready_reads);
        rd.dropped_reads = std::mem::take(&mut self.dropped_reads);
        rd
    }

    pub(super) fn apply_conf_change(&mut self, cc: ConfChange) {
        let conf = &mut self.conf;
        match cc {
            ConfChange::AddLearner(id) => {
                if !conf.contains(id) {
                    conf.learners.push(id);
                    conf.learners.sort_unstable();
                }
            }
            ConfChange::Promote(id) => {
                if let Some(pos) = conf.learners.iter().position(|&l| l == id) {
                    conf.learners.remove(pos);
                    conf.voters.push(id);
                    conf.voters.sort_unstable();
                }
            }
            ConfChange::Remove(id) => {
                conf.voters.retain(|&v| v != id);
                conf.learners.retain(|&l| l != id);
            }
            ConfChange::AddVoter(id) => {
                conf.learners.retain(|&l| l != id);
                if !conf.voters.contains(&id) {
                    conf.voters.push(id);
                    conf.voters.sort_unstable();
                }
            }
        }
        if self.role != Role::Leader {
            return;
        }
        let members: Vec<NodeId> = self.conf.voters.iter().chain(&self.conf.learners).copied().collect();
        self.progress.retain(|id, _| members.contains(id));
        let next = self.log.last_index() + 1;
        for id in members {
            if !self.progress.contains_key(&id) {
                let pr = self.new_progress(next);
                self.progress.insert(id, pr);
                self.append_due = true;
            }
        }
        if !self.conf.voters.contains(&self.lead_transferee) {
            self.lead_transferee = NO_NODE;
        }
        if !self.promotable() {
            self.become_follower(self.term, NO_NODE); // removed or demoted: stop leading
            return;
        }
        self.maybe_commit();
    }
}
