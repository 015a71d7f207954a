//! `RawNode`: one replica of one Raft group as a deterministic state machine.
//!
//! Inputs: [`RawNode::tick`], [`RawNode::step`] (a message), [`RawNode::propose`],
//! [`RawNode::read_index`], [`RawNode::propose_conf_change`],
//! [`RawNode::transfer_leader`], [`RawNode::compact`] and
//! [`RawNode::on_persisted`]. Output: [`Ready`], taken with [`RawNode::ready`].
//! Nothing here touches a clock, a socket, a file or a thread; randomness (election
//! timeouts) comes from a RNG seeded by the caller. The driver (the production runtime
//! or the simulator) runs it on one core.
//!
//! Batching: proposals and commit advances only mark work; the appends go out once
//! per [`RawNode::ready`], so every proposal of one loop iteration travels in one
//! append per follower, and the reads of one iteration share one heartbeat round.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use corekv_rpc::raft::{
    ConfChange, ConfState, Entry, EntryKind, HardState, Index, Message, MessageBody, NO_NODE, NodeId, RejectHint,
    SnapshotMeta, Term,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

use super::config::{Config, ConfigError};
use super::inflights::Inflights;
use super::log::RaftLog;
use super::progress::{Progress, ProgressState, SnapshotTransfer};
use super::quorum::{VoteResult, majority, majority_value, vote_result};
use super::ready::{PendingPersist, ReadState, Ready, Role, Snapshot, SoftState};

mod fresh_snapshots;
mod output;
mod reads;
mod replication;
mod snapshot_credit;

/// Snapshot chunks in flight to one follower, at most.
const SNAPSHOT_CHUNKS_IN_FLIGHT_MAX: u64 = 4;
/// Heartbeat rounds whose send tick is remembered for the lease, at most.
const LEASE_ROUNDS_REMEMBERED_MAX: usize = 64;
/// Heartbeat answers without replication progress before a streaming follower is
/// probed again (an append was lost).
const STALLED_HEARTBEATS_MAX: u32 = 2;

/// What a node restarts from: exactly what its storage made durable.
#[derive(Debug, Clone)]
pub struct DurableState {
    /// The last persisted hard state.
    pub hard_state: HardState,
    /// The last snapshot. A new group starts from a snapshot at index 0 whose
    /// membership names the founding voters and whose data is empty.
    pub snapshot: Snapshot,
    /// The durable log after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

impl DurableState {
    /// The state of a brand-new group member. A founding member (`voters` non-empty)
    /// starts with the founding membership both in its snapshot at index 0 and as
    /// committed `AddVoter` entries 1..=n of term 1, identical on every founding
    /// member; a member that joins later starts empty (`voters` empty) and learns
    /// everything from the leader, whether it is sent a snapshot or the log from
    /// index 1.
    pub fn bootstrap(voters: Vec<NodeId>) -> DurableState {
        let mut voters = voters;
        voters.sort_unstable();
        voters.dedup();
        let entries: Vec<Entry> = voters
            .iter()
            .enumerate()
            .map(|(i, &id)| Entry {
                term: 1,
                index: i as u64 + 1,
                kind: EntryKind::ConfChange,
                data: ConfChange::AddVoter(id).encode(),
            })
            .collect();
        let founded = !entries.is_empty();
        let commit = entries.len() as u64;
        DurableState {
            hard_state: HardState { term: u64::from(founded), vote: NO_NODE, commit },
            snapshot: Snapshot {
                meta: SnapshotMeta { index: 0, term: 0, conf: ConfState { voters, learners: vec![] } },
                data: Arc::from(Vec::new()),
            },
            entries,
        }
    }
}

/// Why a proposal (or conf change, read, transfer) was refused. Nothing was
/// appended: the caller may retry elsewhere or later.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProposeError {
    /// This node does not lead; `leader` is the one it knows of (0 = none).
    #[error("not the leader (leader hint {leader})")]
    NotLeader {
        /// The leader this node knows of, or 0.
        leader: NodeId,
    },
    /// A leader transfer is under way.
    #[error("leader transfer in progress")]
    TransferInProgress,
    /// Too many uncommitted bytes or pending reads.
    #[error("busy: too much uncommitted work")]
    Busy,
    /// A membership change is still being applied.
    #[error("a membership change is pending")]
    ConfChangePending,
    /// The leader has not yet committed an entry of its term (needed before a
    /// membership change or a read).
    #[error("the leader has not committed an entry in its term yet")]
    NotCommittedInTerm,
    /// A leader transfer names a node that is not a voter.
    #[error("node {node} is not a voter: leadership cannot go there")]
    NotAVoter {
        /// The named node.
        node: NodeId,
    },
    /// The membership change makes no sense for the current membership.
    #[error("invalid membership change: {0}")]
    InvalidConfChange(&'static str),
}

/// A message that cannot be processed (from a confused or hostile peer).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StepError {
    /// The message is not addressed to this node or names no sender.
    #[error("misaddressed message (from {from} to {to})")]
    Misaddressed {
        /// Sender.
        from: NodeId,
        /// Receiver.
        to: NodeId,
    },
    /// The message contradicts itself.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

/// A snapshot being received in chunks.
#[derive(Debug)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    total_bytes: u64,
    /// The leader sending it, and its term.
    from: NodeId,
    term: Term,
    data: Vec<u8>,
}

/// A read waiting for a heartbeat round.
#[derive(Debug, Clone, Copy)]
struct PendingRead {
    ctx: u64,
    index: Index,
    round: u64,
}

/// Point-in-time facts about a node, for tests, status and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Node id.
    pub id: NodeId,
    /// Current term.
    pub term: Term,
    /// Vote in the current term.
    pub vote: NodeId,
    /// Role.
    pub role: Role,
    /// Known leader (0 = none).
    pub leader: NodeId,
    /// Raft commit index.
    pub commit: Index,
    /// Index handed to the application.
    pub applied: Index,
    /// Index durable locally.
    pub persisted: Index,
    /// Last log index.
    pub last_index: Index,
    /// Last snapshot index.
    pub snapshot_index: Index,
    /// Membership.
    pub conf: ConfState,
    /// Snapshot chunk bytes this node sent as leader since it started, resends
    /// included (the rate a send credit holds it to).
    pub snapshot_bytes_sent: u64,
}

/// One replica of one Raft group.
#[derive(Debug)]
pub struct RawNode {
    cfg: Config,
    term: Term,
    vote: NodeId,
    role: Role,
    leader: NodeId,
    log: RaftLog,
    conf: ConfState,
    rng: ChaCha8Rng,

    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_election_timeout: u32,
    /// Ticks since start: the lease clock.
    ticks: u64,

    votes: BTreeMap<NodeId, bool>,
    progress: BTreeMap<NodeId, Progress>,
    lead_transferee: NodeId,
    /// A TimeoutNow went out in this term: the lease can no longer be trusted.
    transfer_sent_in_term: bool,
    pending_conf_index: Index,
    uncommitted_bytes: u64,

    read_round: u64,
    round_sent_ticks: VecDeque<(u64, u64)>,
    lease_start_tick: Option<u64>,
    pending_reads: VecDeque<PendingRead>,
    reads_waiting_commit: Vec<u64>,
    read_heartbeat_due: bool,
    ready_reads: Vec<ReadState>,
    dropped_reads: Vec<u64>,

    append_due: bool,
    commit_advanced: bool,
    incoming_snapshot: Option<IncomingSnapshot>,
    snapshot_to_install: Option<Snapshot>,
    latest_snapshot: Snapshot,
    /// Chunk bytes snapshot sending may still spend; `None` = unlimited (the
    /// default). See `snapshot_credit.rs`.
    snapshot_credit_bytes: Option<u64>,
    snapshot_bytes_sent: u64,
    /// A transfer whose latest snapshot is older than the applied index waits for
    /// the application to take a fresh one (or to decline). See `fresh_snapshots.rs`.
    fresh_snapshots: bool,

    msgs: Vec<Message>,
    msgs_after_persist: Vec<Message>,
    prev_hard_state: HardState,
    prev_soft_state: SoftState,
    ready_number: u64,
    pending_persists: VecDeque<PendingPersist>,
}

impl RawNode {
    /// A node that starts (or restarts) from `durable`, with election timeouts drawn
    /// from a RNG seeded with `seed`.
    pub fn new(cfg: Config, durable: DurableState, seed: u64) -> Result<RawNode, ConfigError> {
        cfg.validate()?;
        let DurableState { hard_state, snapshot, entries } = durable;
        let meta = &snapshot.meta;
        let log = RaftLog::restore_durable(meta.index, meta.term, entries, hard_state.commit);
        let mut node = RawNode {
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: NO_NODE,
            conf: meta.conf.clone(),
            log,
            rng: ChaCha8Rng::seed_from_u64(seed),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: cfg.election_timeout_ticks,
            ticks: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            lead_transferee: NO_NODE,
            transfer_sent_in_term: false,
            pending_conf_index: 0,
            uncommitted_bytes: 0,
            read_round: 0,
            round_sent_ticks: VecDeque::new(),
            lease_start_tick: None,
            pending_reads: VecDeque::new(),
            reads_waiting_commit: Vec::new(),
            read_heartbeat_due: false,
            ready_reads: Vec::new(),
            dropped_reads: Vec::new(),
            append_due: false,
            commit_advanced: false,
            incoming_snapshot: None,
            snapshot_to_install: None,
            latest_snapshot: snapshot,
            snapshot_credit_bytes: None,
            snapshot_bytes_sent: 0,
            fresh_snapshots: false,
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            prev_hard_state: hard_state,
            prev_soft_state: SoftState { role: Role::Follower, leader: NO_NODE },
            ready_number: 0,
            pending_persists: VecDeque::new(),
            cfg,
        };
        node.reset_election_timeout();
        Ok(node)
    }

    fn id(&self) -> NodeId {
        self.cfg.id
    }

    /// Facts about this node now.
    pub fn status(&self) -> Status {
        Status {
            id: self.id(),
            term: self.term,
            vote: self.vote,
            role: self.role,
            leader: self.leader,
            commit: self.log.committed(),
            applied: self.log.applied(),
            persisted: self.log.persisted(),
            last_index: self.log.last_index(),
            snapshot_index: self.log.snapshot_index(),
            conf: self.conf.clone(),
            snapshot_bytes_sent: self.snapshot_bytes_sent,
        }
    }

    /// The configuration in force (the last one appended).
    pub fn conf(&self) -> &ConfState {
        &self.conf
    }

    /// Whether the configuration in force may still be lost: a membership change
    /// (or, on a new leader, any entry of the tail it inherited) is not applied
    /// yet. Only a settled configuration may be reported as the group's truth.
    pub fn conf_change_pending(&self) -> bool {
        self.pending_conf_index > self.log.applied()
    }

    /// The leader's progress record of `peer` (leaders only; for tests and status).
    pub fn progress(&self, peer: NodeId) -> Option<&Progress> {
        self.progress.get(&peer)
    }

    /// The in-memory log (for tests and status).
    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    /// Everything this replica holds, as a state another replica of the same
    /// node can start from (a hand-off between two cores, issue 12): the latest
    /// snapshot, every entry after it, the term, vote and commit index. A
    /// superset of what it made durable.
    pub fn durable_copy(&self) -> DurableState {
        let from = self.log.snapshot_index() + 1;
        let entries = if self.log.last_index() >= from { self.log.entries_from(from, u64::MAX) } else { Vec::new() };
        let hard_state = HardState { term: self.term, vote: self.vote, commit: self.log.committed() };
        DurableState { hard_state, snapshot: self.latest_snapshot.clone(), entries }
    }

    /// True when this node may campaign: it is a voter.
    fn promotable(&self) -> bool {
        self.conf.voters.contains(&self.id())
    }

    fn reset_election_timeout(&mut self) {
        let base = self.cfg.election_timeout_ticks;
        self.randomized_election_timeout = self.rng.random_range(base..2 * base);
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.ticks += 1;
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.election_elapsed = self.election_elapsed.saturating_add(1);
            if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
                self.election_elapsed = 0;
                self.campaign(self.cfg.pre_vote, false);
            }
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_timeout_ticks {
            self.election_elapsed = 0;
            if self.cfg.check_quorum {
                if !self.quorum_recently_active() {
                    self.become_follower(self.term, NO_NODE);
                    return;
                }
                let me = self.id();
                for (&id, pr) in self.progress.iter_mut() {
                    pr.active_last_round = pr.recent_active;
                    pr.recent_active = id == me;
                }
            }
            self.lead_transferee = NO_NODE;
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_interval_ticks {
            self.broadcast_heartbeat();
        }
    }

    fn quorum_recently_active(&self) -> bool {
        let me = self.id();
        let active = self
            .conf
            .voters
            .iter()
            .filter(|&&v| v == me || self.progress.get(&v).is_some_and(|p| p.recent_active))
            .count();
        active >= majority(self.conf.voters.len())
    }

    /// Appends `data` as a command if this node leads. Returns the entry's index and
    /// term: the command is committed when an entry with that index *and term* is
    /// applied. The append goes out at the next [`RawNode::ready`].
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(Index, Term), ProposeError> {
        self.check_can_propose()?;
        let size = corekv_rpc::raft::ENTRY_OVERHEAD_BYTES + data.len() as u64;
        if self.uncommitted_bytes > 0 && self.uncommitted_bytes + size > self.cfg.uncommitted_bytes_max {
            return Err(ProposeError::Busy);
        }
        Ok(self.append_entry(EntryKind::Normal, data))
    }

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if self.lead_transferee != NO_NODE {
            return Err(ProposeError::TransferInProgress);
        }
        Ok(())
    }

    fn append_entry(&mut self, kind: EntryKind, data: Vec<u8>) -> (Index, Term) {
        let entry = Entry { term: self.term, index: self.log.last_index() + 1, kind, data };
        self.uncommitted_bytes += entry.size_bytes();
        let at = (entry.index, entry.term);
        self.log.append_own(entry);
        self.append_due = true;
        at
    }

    fn committed_in_term(&self) -> bool {
        self.log.term(self.log.committed()) == Some(self.term)
    }

    /// Proposes a single-server membership change. Refused while another is
    /// pending, and before the leader committed an entry of its own term (the
    /// thesis' fix for single-server changes across leader changes).
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<(Index, Term), ProposeError> {
        self.check_can_propose()?;
        if self.pending_conf_index > self.log.applied() {
            return Err(ProposeError::ConfChangePending);
        }
        if !self.committed_in_term() {
            return Err(ProposeError::NotCommittedInTerm);
        }
        let invalid = |why| Err(ProposeError::InvalidConfChange(why));
        match cc {
            ConfChange::AddLearner(id) if id == NO_NODE => return invalid("node id 0"),
            ConfChange::AddLearner(id) if self.conf.contains(id) => {
                return invalid("already a member");
            }
            ConfChange::Promote(id) if !self.conf.learners.contains(&id) => {
                return invalid("not a learner");
            }
            ConfChange::Remove(id) if !self.conf.contains(id) => return invalid("not a member"),
            ConfChange::Remove(id) if self.conf.voters == [id] => {
                return invalid("cannot remove the last voter");
            }
            ConfChange::AddVoter(_) => return invalid("add a learner, let it catch up, then promote it"),
            _ => {}
        }
        let at = self.append_entry(EntryKind::ConfChange, cc.encode());
        self.pending_conf_index = at.0;
        Ok(at)
    }

    /// The voter this leader is handing leadership to, if a transfer is under way.
    pub fn transferee(&self) -> Option<NodeId> {
        (self.lead_transferee != NO_NODE).then_some(self.lead_transferee)
    }

    /// Hands leadership to voter `to` (TimeoutNow once it has caught up). Proposals
    /// are refused until it completes or an election timeout passes.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if to == self.id() || to == self.lead_transferee {
            return Ok(());
        }
        if !self.conf.voters.contains(&to) {
            return Err(ProposeError::NotAVoter { node: to });
        }
        self.lead_transferee = to;
        self.election_elapsed = 0;
        if self.progress[&to].match_index == self.log.last_index() {
            self.send_timeout_now(to);
        } else if !self.send_append(to, false) {
            // Everything was sent already but not acknowledged: probe now rather than
            // wait for the stall detector, a transfer blocks proposals meanwhile.
            self.progress.get_mut(&to).expect("voters have progress").become_probe();
            self.send_append(to, true);
        }
        Ok(())
    }

    fn send_timeout_now(&mut self, to: NodeId) {
        self.transfer_sent_in_term = true;
        self.send(to, MessageBody::TimeoutNow);
    }

    /// Tells the leader that the connection to `peer` broke: whatever was in flight
    /// is lost. A streaming follower is probed again. A snapshot transfer pauses
    /// (spending no credit on a dead link) until `peer` answers a heartbeat, then
    /// resumes from the offset the follower acknowledged: the follower keeps its
    /// partial copy (per sender and term). If this node compacted to a newer
    /// snapshot meanwhile, the transfer starts over from offset 0 with that one
    /// instead, and the follower drops its partial copy of the old one when the
    /// new one's first chunk arrives (see `handle_heartbeat_response`).
    pub fn report_unreachable(&mut self, peer: NodeId) {
        let Some(pr) = self.progress.get_mut(&peer) else {
            return;
        };
        match (pr.state, pr.snapshot.as_mut()) {
            (ProgressState::Replicate, _) => pr.become_probe(),
            (ProgressState::Snapshot, Some(t)) => t.interrupt(),
            _ => {}
        }
    }

    /// Replaces the log up to the applied index with `data`, the application's
    /// state as of that index. Lagging followers will be sent this snapshot.
    /// Transfers waiting for a fresh snapshot (see [`RawNode::want_fresh_snapshots`])
    /// start with this one, or with the latest when there is nothing new to compact.
    pub fn compact(&mut self, data: Arc<[u8]>) {
        let index = self.log.applied();
        if index <= self.log.snapshot_index() {
            // Not reached with a transfer waiting (it waits only while the latest
            // snapshot is older than the applied index); kept so that none can
            // ever be left waiting by a compaction.
            self.start_waiting_transfers();
            return;
        }
        let term = self.log.term(index).expect("the applied index is in the log");
        self.log.compact_to(index);
        self.latest_snapshot = Snapshot { meta: SnapshotMeta { index, term, conf: self.conf.clone() }, data };
        self.start_waiting_transfers();
    }

    /// Storage made Ready number `number` durable. Readys must be reported in the
    /// order they were taken (asserted).
    pub fn on_persisted(&mut self, number: u64) {
        let pending = self.pending_persists.pop_front().expect("on_persisted without a Ready to persist");
        assert_eq!(pending.number, number, "Readys must become durable in the order they were taken");
        if let Some((index, term)) = pending.last_entry {
            self.log.persisted_to(index, term);
        }
        if self.role == Role::Leader {
            let me = self.id();
            let persisted = self.log.persisted();
            if let Some(pr) = self.progress.get_mut(&me) {
                pr.match_index = persisted;
            }
            self.maybe_commit();
        }
    }

    /// Processes one message from a peer.
    pub fn step(&mut self, m: Message) -> Result<(), StepError> {
        if m.to != self.id() || m.from == NO_NODE || m.from == self.id() {
            return Err(StepError::Misaddressed { from: m.from, to: m.to });
        }
        if m.term > self.term {
            match &m.body {
                MessageBody::Vote { pre_vote, transfer, .. } => {
                    let in_lease = self.cfg.check_quorum
                        && self.leader != NO_NODE
                        && self.election_elapsed < self.cfg.election_timeout_ticks;
                    // Volatile memory of the leader is lost in a crash, but a lease this
                    // node acknowledged before it may still run: with lease reads on, a
                    // node that just started waits an election timeout before voting.
                    let lease_after_start =
                        self.cfg.lease_read && self.ticks < u64::from(self.cfg.election_timeout_ticks);
                    let in_lease = in_lease || lease_after_start;
                    if in_lease && !transfer {
                        return Ok(()); // a leader is alive: ignore a disruptive candidate
                    }
                    if !pre_vote {
                        self.become_follower(m.term, NO_NODE);
                    }
                }
                MessageBody::VoteResponse { pre_vote: true, granted: true } => {}
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::Snapshot { .. } => {
                    self.become_follower(m.term, m.from)
                }
                _ => self.become_follower(m.term, NO_NODE),
            }
        } else if m.term < self.term {
            match &m.body {
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. }
                    if self.cfg.check_quorum || self.cfg.pre_vote =>
                {
                    // A leader of an older term: tell it ours so it steps down (with
                    // check-quorum we may not raise terms through votes).
                    self.send(m.from, MessageBody::HeartbeatResponse { read_round: 0 });
                }
                MessageBody::Vote { pre_vote: true, .. } => {
                    self.send(m.from, MessageBody::VoteResponse { pre_vote: true, granted: false });
                }
                _ => {}
            }
            return Ok(());
        }
        self.step_same_term(m)
    }

    fn step_same_term(&mut self, m: Message) -> Result<(), StepError> {
        let from = m.from;
        match m.body {
            MessageBody::Vote { pre_vote, last_index, last_term, .. } => {
                self.handle_vote(from, m.term, pre_vote, last_index, last_term);
            }
            MessageBody::VoteResponse { pre_vote, granted } => self.handle_vote_response(from, pre_vote, granted),
            MessageBody::Append { prev_index, prev_term, entries, commit } => {
                self.follow(from);
                self.handle_append(from, prev_index, prev_term, entries, commit)?;
            }
            MessageBody::Heartbeat { commit, read_round } => {
                self.follow(from);
                self.log.commit_to(commit.min(self.log.last_index()));
                self.send(from, MessageBody::HeartbeatResponse { read_round });
            }
            MessageBody::Snapshot { meta, total_bytes, offset, chunk, chunk_crc } => {
                self.follow(from);
                self.handle_snapshot_chunk(from, meta, total_bytes, offset, chunk, chunk_crc);
            }
            MessageBody::AppendResponse { index, reject } => self.handle_append_response(from, index, reject),
            MessageBody::HeartbeatResponse { read_round } => self.handle_heartbeat_response(from, read_round),
            MessageBody::SnapshotResponse { index, next_offset, rejected } => {
                self.handle_snapshot_response(from, index, next_offset, rejected)
            }
            MessageBody::TimeoutNow => {
                if self.role != Role::Leader && self.promotable() {
                    self.campaign(false, true);
                }
            }
        }
        Ok(())
    }

    /// A message from the leader of the current term arrived.
    fn follow(&mut self, leader: NodeId) {
        if self.role != Role::Follower || self.leader != leader {
            self.become_follower(self.term, leader);
        }
        self.election_elapsed = 0;
    }

    fn become_follower(&mut self, term: Term, leader: NodeId) {
        if self.role == Role::Leader {
            self.step_down_as_leader();
        }
        if term != self.term {
            self.term = term;
            self.vote = NO_NODE;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.election_elapsed = 0;
        self.votes.clear();
        self.reset_election_timeout();
    }

    fn step_down_as_leader(&mut self) {
        self.progress.clear();
        self.lead_transferee = NO_NODE;
        self.append_due = false;
        self.read_heartbeat_due = false;
        self.lease_start_tick = None;
        self.round_sent_ticks.clear();
        self.dropped_reads.extend(self.pending_reads.drain(..).map(|r| r.ctx));
        self.dropped_reads.append(&mut self.reads_waiting_commit);
    }

    fn campaign(&mut self, pre_vote: bool, transfer: bool) {
        let campaign_term = if pre_vote {
            self.role = Role::PreCandidate;
            self.term + 1
        } else {
            self.role = Role::Candidate;
            self.term += 1;
            self.vote = self.id();
            self.term
        };
        self.leader = NO_NODE;
        self.election_elapsed = 0;
        self.reset_election_timeout();
        self.votes.clear();
        self.votes.insert(self.id(), true);
        if self.tally_votes() != VoteResult::Pending {
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let me = self.id();
        for voter in self.conf.voters.clone() {
            if voter == me {
                continue;
            }
            let msg = Message {
                from: me,
                to: voter,
                term: campaign_term,
                body: MessageBody::Vote { pre_vote, last_index, last_term, transfer },
            };
            // A real candidate's own vote must be durable before anyone counts on it.
            if pre_vote { self.msgs.push(msg) } else { self.msgs_after_persist.push(msg) }
        }
    }

    /// Counts votes and acts on the outcome.
    fn tally_votes(&mut self) -> VoteResult {
        let granted = self.votes.values().filter(|&&g| g).count();
        let rejected = self.votes.len() - granted;
        let result = vote_result(self.conf.voters.len(), granted, rejected);
        match result {
            VoteResult::Won if self.role == Role::PreCandidate => self.campaign(false, false),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => self.become_follower(self.term, NO_NODE),
            VoteResult::Pending => {}
        }
        result
    }

    fn become_leader(&mut self) {
        assert_eq!(self.role, Role::Candidate, "only a candidate becomes leader");
        self.role = Role::Leader;
        self.leader = self.id();
        self.votes.clear();
        self.lead_transferee = NO_NODE;
        self.transfer_sent_in_term = false;
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        self.uncommitted_bytes = 0;
        self.lease_start_tick = None;
        // Any membership change in the uncommitted tail must apply before another.
        self.pending_conf_index = self.log.last_index();
        let next = self.log.last_index() + 1;
        let members: Vec<NodeId> = self.conf.voters.iter().chain(&self.conf.learners).copied().collect();
        for id in members {
            self.progress.insert(id, self.new_progress(next));
        }
        let me = self.id();
        if let Some(pr) = self.progress.get_mut(&me) {
            pr.match_index = self.log.persisted();
            pr.become_replicate();
            pr.recent_active = true;
        }
        // Commit an entry of this term at once: earlier terms' entries commit with it.
        self.append_entry(EntryKind::Empty, Vec::new());
    }

    fn new_progress(&self, next: Index) -> Progress {
        Progress::new(next, Inflights::new(self.cfg.inflight_msgs_max, self.cfg.inflight_bytes_max))
    }

    fn handle_vote(&mut self, from: NodeId, msg_term: Term, pre_vote: bool, last_index: Index, last_term: Term) {
        let can_vote = if pre_vote {
            msg_term > self.term
        } else {
            self.vote == from || (self.vote == NO_NODE && self.leader == NO_NODE)
        };
        let granted = can_vote && self.log.is_up_to_date(last_index, last_term);
        let term = if granted { msg_term } else { self.term };
        let msg = Message { from: self.id(), to: from, term, body: MessageBody::VoteResponse { pre_vote, granted } };
        if granted && !pre_vote {
            self.vote = from;
            self.election_elapsed = 0;
            self.msgs_after_persist.push(msg); // the vote is durable before it is told
        } else {
            self.msgs.push(msg);
        }
    }

    fn handle_vote_response(&mut self, from: NodeId, pre_vote: bool, granted: bool) {
        let expected = if pre_vote { Role::PreCandidate } else { Role::Candidate };
        if self.role != expected || !self.conf.voters.contains(&from) {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        self.tally_votes();
    }
}
