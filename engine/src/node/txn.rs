//! Transactions in the node core (DESIGN §8): what every shard leader on this core
//! does for them, sans I/O.
//!
//! - **Locks and reads.** A transactional read takes a shared lock (a shared range
//!   lock for a scan) in the shard leader's [`LockTable`] under two-phase locking,
//!   none under OCC, then is served like any linearizable read (ReadIndex). A
//!   transactional write asks an exclusive lock (`TxnLock`); its value travels
//!   with the commit. A request that must wait is parked under a lock-table token
//!   and answered from the table's events.
//! - **Intents block reads.** A read that meets another transaction's prepared
//!   write (at or below the version it reads) waits until the intent resolves.
//! - **One-phase commit** when every read and write is on one shard: the leader
//!   checks it still holds every lock (OCC: takes them now), proposes one entry,
//!   and the entry's apply decides.
//! - **Two-phase commit** otherwise, coordinated by the anchor shard's leader
//!   (the shard the commit request is sent to): prepare on every participant (its
//!   own included), votes back to the anchor, one decision entry at the anchor
//!   (the client hears the outcome once it applied, so it is durable), then
//!   resolutions to the participants and a forget once all have applied them.
//! - **Recovery.** Every message is safe to lose or repeat: the anchor resends
//!   prepares and resolutions on a timer and writes an abort decision when votes
//!   do not come; a participant that holds an intent nobody resolves asks the
//!   anchor, which answers from its record, or writes an abort decision when it
//!   has none and coordinates nothing. A new leader rebuilds its lock table from
//!   the prepared intents and resumes resolving its records.
//!
//! Only the leader of a shard sends; followers apply the same entries silently.
//! Messages for another shard go to every replica of it (only its leader acts),
//! through the outbox, or straight into this core's own inbox when the replica
//! lives here. This module holds the client-facing side; the participants, the
//! anchor, the timers and the messages are in [`super::twopc`].

use std::collections::{BTreeMap, BTreeSet};

use corekv_rpc::kv::WriteOp;
use corekv_rpc::kv::{OkReply, Outcome, ReadOp, Response, ShardId, ShardSets, TxnReadOp, Version, WriteTag};
use corekv_rpc::node::TxnPeerMessage;
use corekv_rpc::raft::Index;
use corekv_rpc::txn::{AbortReason, Age, Policy, ResolveItem, TxnId, TxnMeta, TxnSets};

use super::group::{ClientRef, PendingRead, ReadKind};
use super::{ENTRY_OVERHEAD_BYTES, NodeCore, PlantedBug, ready_reserve_bytes, refusal};
use crate::kv::txn::{DecideCommand, OnePhaseCommand};
use crate::kv::{Command, CommandBody, command};
use crate::txn::lock::{Acquire, LockEvent, LockMode, Target, TxnInfo};

/// Ticks between resends of prepares, resolutions and queries.
pub const TXN_RESEND_TICKS: u64 = 10;
/// Ticks a coordinator waits for every vote before it decides abort.
pub const TXN_VOTE_TIMEOUT_TICKS: u64 = 100;
/// Ticks a participant's intent waits for a decision before it asks the anchor.
pub const TXN_QUERY_AFTER_TICKS: u64 = 50;

/// A request parked on a lock wait.
#[derive(Debug, Clone)]
pub(crate) enum Parked {
    /// A transactional read, served once its lock is granted.
    Read { client: ClientRef, txn: TxnMeta, op: TxnReadOp },
    /// An exclusive lock for a write.
    Lock { client: ClientRef, txn: TxnId, key: Vec<u8> },
    /// A plain write waiting for its key's lock.
    Write { client: ClientRef, tag: WriteTag, op: WriteOp, id: TxnId },
}

impl Parked {
    /// The transaction of a transactional request (plain writes have none).
    fn txn(&self) -> Option<TxnId> {
        match self {
            Parked::Read { txn, .. } => Some(txn.id),
            Parked::Lock { txn, .. } => Some(*txn),
            Parked::Write { .. } => None,
        }
    }

    /// True when `other` asks what this parked request asks (a retry of it).
    fn same_request(&self, other: &Parked) -> bool {
        match (self, other) {
            (Parked::Read { op: a, .. }, Parked::Read { op: b, .. }) => a == b,
            (Parked::Lock { key: a, .. }, Parked::Lock { key: b, .. }) => a == b,
            _ => false,
        }
    }

    fn client_mut(&mut self) -> &mut ClientRef {
        match self {
            Parked::Read { client, .. } | Parked::Lock { client, .. } | Parked::Write { client, .. } => client,
        }
    }
}

/// A commit the anchor leader coordinates (in memory; a new leader resumes from
/// the replicated record, or the participants' queries).
#[derive(Debug, Clone)]
pub(crate) struct Coord {
    pub txn: TxnMeta,
    pub tag: WriteTag,
    /// Who waits for the outcome (the latest attempt of the client's request).
    pub client: Option<ClientRef>,
    /// Every participant, the anchor included, with what it does there.
    pub shards: Vec<ShardSets>,
    /// The yes votes so far: shard -> lower bound.
    pub votes: BTreeMap<ShardId, Version>,
    /// The decision is proposed: no more votes count.
    pub deciding: bool,
    pub started_tick: u64,
    pub sent_tick: u64,
}

/// A decided transaction the anchor leader still resolves at its participants.
#[derive(Debug, Clone)]
pub(crate) struct Resolving {
    pub item: ResolveItem,
    pub pending: BTreeSet<ShardId>,
    pub sent_tick: u64,
}

/// The transaction state of one shard replica on this core (its leader's part is
/// empty on followers).
#[derive(Debug, Default)]
pub(crate) struct GroupTxns {
    pub parked: BTreeMap<u64, Parked>,
    pub next_token: u64,
    /// Reads waiting for a prepared transaction's decision.
    pub intent_waiters: BTreeMap<TxnId, Vec<PendingRead>>,
    /// Proposed entries whose apply releases a transaction's locks here.
    pub proposed: BTreeMap<Index, TxnId>,
    /// Prepares proposed here, not yet applied.
    pub preparing: BTreeSet<TxnId>,
    pub coords: BTreeMap<TxnId, Coord>,
    pub resolving: BTreeMap<TxnId, Resolving>,
    /// Decisions to apply here, batched into one entry per iteration.
    pub resolve_queue: BTreeMap<TxnId, ResolveItem>,
    /// Records every participant resolved, forgotten in one entry per iteration.
    pub forget_queue: BTreeSet<TxnId>,
    /// Intents this leader asked its anchor about: txn -> tick of the last ask.
    pub queried: BTreeMap<TxnId, u64>,
    /// The anchor that sent each queued resolution (told once it applied).
    pub resolve_anchor: BTreeMap<TxnId, ShardId>,
}

/// The lock table's view of a transaction.
pub(super) fn info(txn: &TxnMeta, now_ms: u64) -> TxnInfo {
    TxnInfo { id: txn.id, age: txn.age, policy: txn.policy, begun_ms: now_ms }
}

/// The keys a transaction's sets lock on one shard: reads, ranges, writes.
pub(super) type LockKeys = (Vec<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>, Vec<Vec<u8>>);

pub(super) fn lock_keys(sets: &TxnSets) -> LockKeys {
    (
        sets.reads.iter().map(|r| r.key.clone()).collect(),
        sets.ranges.iter().map(|r| (r.start.clone(), r.end.clone())).collect(),
        sets.writes.iter().map(|w| w.key.clone()).collect(),
    )
}

impl NodeCore {
    // ----- client requests -----------------------------------------------------

    /// A transactional read: lock (two-phase locking), then a linearizable read.
    pub(super) fn txn_read(&mut self, client: ClientRef, shard: ShardId, txn: TxnMeta, op: TxnReadOp) {
        if !self.lead_or_redirect(client, shard) {
            return;
        }
        if txn.policy == Policy::Occ {
            return self.queue_txn_read(client, shard, txn, op);
        }
        let (target, mode) = match &op {
            TxnReadOp::Get { key } => (Target::Key(key.clone()), LockMode::Shared),
            TxnReadOp::GetForUpdate { key } => (Target::Key(key.clone()), LockMode::Exclusive),
            TxnReadOp::Scan { start, end, .. } => {
                (Target::Range { start: start.clone(), end: end.clone() }, LockMode::Shared)
            }
        };
        self.lock(client, shard, &txn, target, mode, Parked::Read { client, txn, op });
    }

    /// An exclusive lock for a write the transaction will commit.
    pub(super) fn txn_lock(&mut self, client: ClientRef, shard: ShardId, txn: TxnMeta, key: Vec<u8>) {
        if !self.lead_or_redirect(client, shard) {
            return;
        }
        if txn.policy == Policy::Occ {
            // OCC locks at commit; nothing to hold now.
            return self.answer(client, Response::Outcome(Outcome::Ok(OkReply::Done)));
        }
        let parked = Parked::Lock { client, txn: txn.id, key: key.clone() };
        self.lock(client, shard, &txn, Target::Key(key), LockMode::Exclusive, parked);
    }

    /// The client gave up on the transaction: drop its locks here.
    pub(super) fn txn_abort(&mut self, client: ClientRef, shard: ShardId, txn: TxnId) {
        if !self.lead_or_redirect(client, shard) {
            return;
        }
        let now_ms = self.now_ms;
        let g = self.groups.get_mut(&shard).expect("checked by the caller");
        // A prepared transaction ends only by its anchor's decision.
        if g.sm.txns().intent(&txn).is_none() {
            g.locks.abort(txn, AbortReason::Requested, now_ms);
        }
        self.lock_events(shard);
        self.answer(client, Response::Outcome(Outcome::Ok(OkReply::Done)));
    }

    fn lead_or_redirect(&mut self, client: ClientRef, shard: ShardId) -> bool {
        let g = &self.groups[&shard];
        if g.is_leader {
            return true;
        }
        self.stats.redirects += 1;
        let hint = g.leader;
        self.answer(client, Response::NotLeader { hint });
        false
    }

    fn lock(&mut self, client: ClientRef, shard: ShardId, txn: &TxnMeta, target: Target, mode: LockMode, then: Parked) {
        let now_ms = self.now_ms;
        let g = self.groups.get_mut(&shard).expect("checked by the caller");
        // The client retried a request that waits (its attempt timed out): the
        // retry takes the wait over; the earlier attempt is answered busy. A
        // different request while one waits means the client moved on without
        // this leader (its answer came from another): the transaction's locks here
        // are not what it believes, so it is aborted.
        if let Some(p) = g.txns.parked.values_mut().find(|p| p.txn() == Some(txn.id)) {
            if p.same_request(&then) {
                let old = std::mem::replace(p.client_mut(), client);
                return self.answer(old, Response::Busy);
            }
            g.locks.abort(txn.id, AbortReason::Conflict, now_ms);
            self.lock_events(shard);
            let reason = AbortReason::Conflict;
            return self.answer(client, Response::Outcome(Outcome::Aborted { reason }));
        }
        let token = g.txns.next_token;
        g.txns.next_token += 1;
        match g.locks.acquire(&info(txn, now_ms), target, mode, token, now_ms) {
            Acquire::Granted => self.unpark(shard, then),
            Acquire::Waiting => {
                g.txns.parked.insert(token, then);
                self.requests_pending += 1;
            }
            Acquire::Aborted(reason) => self.answer(client, Response::Outcome(Outcome::Aborted { reason })),
            Acquire::TooManyLocks => self.answer(
                client,
                Response::Outcome(Outcome::invalid("the transaction holds too many locks on this shard")),
            ),
            Acquire::Full => {
                self.stats.busy += 1;
                self.answer(client, Response::Busy);
            }
            Acquire::Invalid => self.answer(
                client,
                Response::Outcome(Outcome::invalid(
                    "lock protocol: one request at a time per transaction, none after prepare",
                )),
            ),
        }
        self.lock_events(shard);
    }

    /// A parked request's lock is held: go on with it.
    fn unpark(&mut self, shard: ShardId, parked: Parked) {
        match parked {
            Parked::Read { client, txn, op } => self.queue_txn_read(client, shard, txn, op),
            Parked::Lock { client, .. } => self.answer(client, Response::Outcome(Outcome::Ok(OkReply::Done))),
            Parked::Write { client, tag, op, id } => self.propose_write(client, shard, tag, op, Some(id)),
        }
    }

    /// A plain write is a one-key transaction: it takes its key's exclusive lock,
    /// waiting behind the transactions that hold it. It holds nothing else while it
    /// waits, so it cannot close a cycle; when the table refuses it (a policy
    /// conflict, a timeout) it answers busy: certainly not applied, retried by the
    /// client. Never `aborted`.
    pub(super) fn plain_write(&mut self, client: ClientRef, shard: ShardId, tag: WriteTag, op: WriteOp, stamp_ts: u64) {
        let now_ms = self.now_ms;
        let policy = self.cfg.txn_policy;
        let g = self.groups.get_mut(&shard).expect("checked by the caller");
        let token = g.txns.next_token;
        g.txns.next_token += 1;
        // An id of its own per attempt: an abort's tombstone never meets a retry.
        let id = TxnId { client: tag.client, attempt: u64::MAX - token };
        let who = TxnInfo { id, age: Age { start: stamp_ts, id }, policy, begun_ms: now_ms };
        match g.locks.acquire(&who, Target::Key(op.key().to_vec()), LockMode::Exclusive, token, now_ms) {
            Acquire::Granted => self.propose_write(client, shard, tag, op, Some(id)),
            Acquire::Waiting => {
                g.txns.parked.insert(token, Parked::Write { client, tag, op, id });
                self.requests_pending += 1;
            }
            _ => {
                self.stats.busy += 1;
                self.answer(client, Response::Busy);
            }
        }
        self.lock_events(shard);
    }

    fn queue_txn_read(&mut self, client: ClientRef, shard: ShardId, txn: TxnMeta, op: TxnReadOp) {
        let g = self.groups.get_mut(&shard).expect("known group");
        g.reads_queued.push(PendingRead { client, op: ReadKind::Txn(txn.id, op), after: 0 });
        self.requests_pending += 1;
        self.dirty.insert(shard);
    }

    /// Acts on what the lock table decided: grants continue parked requests,
    /// aborts answer them.
    pub(super) fn lock_events(&mut self, shard: ShardId) {
        loop {
            let g = self.groups.get_mut(&shard).expect("known group");
            let events = g.locks.take_events();
            if events.is_empty() {
                return;
            }
            for event in events {
                let g = self.groups.get_mut(&shard).expect("known group");
                match event {
                    LockEvent::Granted { token, .. } => {
                        if let Some(parked) = g.txns.parked.remove(&token) {
                            self.requests_pending -= 1;
                            self.unpark(shard, parked);
                        }
                    }
                    LockEvent::Aborted { reason, token: Some(token), .. } => {
                        match g.txns.parked.remove(&token) {
                            Some(Parked::Read { client, .. } | Parked::Lock { client, .. }) => {
                                self.answer_pending(client, Response::Outcome(Outcome::Aborted { reason }));
                            }
                            // A plain write is never aborted: not applied, retried.
                            Some(Parked::Write { client, .. }) => self.answer_pending(client, Response::Busy),
                            None => {}
                        }
                    }
                    LockEvent::Aborted { id, reason, token: None } => {
                        // A holder wounded or expired while it waited for nothing
                        // here: its other shards, wherever they are, are told, so
                        // its locks there fall at once and its next request there
                        // is refused (its client is busy elsewhere).
                        if reason != AbortReason::Requested {
                            self.broadcast_txn_abort(shard, id, reason);
                        }
                    }
                }
            }
        }
    }

    /// Commit, at the anchor.
    pub(super) fn txn_commit(
        &mut self,
        client: ClientRef,
        shard: ShardId,
        txn: TxnMeta,
        tag: WriteTag,
        shards: Vec<ShardSets>,
    ) {
        if !self.lead_or_redirect(client, shard) {
            return;
        }
        if !shards.iter().any(|s| s.shard == shard) {
            return self.answer(client, Response::Outcome(Outcome::invalid("the anchor must be one of the shards")));
        }
        if shards.len() == 1 {
            let sets = shards.into_iter().next().expect("one").sets;
            return self.one_phase(client, shard, txn, tag, sets);
        }
        let tick = self.ticks;
        let g = self.groups.get_mut(&shard).expect("known group");
        if let Some(coord) = g.txns.coords.get_mut(&txn.id) {
            // The client retried: answer the newest attempt.
            self.requests_pending += 1;
            if let Some(old) = coord.client.replace(client) {
                self.answer_pending(old, Response::Outcome(Outcome::Indeterminate));
            }
            return;
        }
        if let Some(decision) = g.sm.txns().decision(&txn.id) {
            // Decided before (a retry after a leader change): the decide entry's
            // exactly-once handling answers with the first decision.
            let participants = shards.iter().map(|s| s.shard).filter(|&s| s != shard).collect();
            let cmd = DecideCommand { txn: txn.id, decision, participants, tag: Some(tag), attempt_ts: txn.attempt_ts };
            self.propose_txn(shard, CommandBody::Decide(cmd), Some(client), None, None);
            return;
        }
        let coord = Coord {
            txn,
            tag,
            client: Some(client),
            shards: shards.clone(),
            votes: BTreeMap::new(),
            deciding: false,
            started_tick: tick,
            sent_tick: tick,
        };
        g.txns.coords.insert(txn.id, coord);
        self.requests_pending += 1;
        for s in shards {
            if s.shard == shard {
                self.prepare_here(shard, shard, txn, s.sets);
            } else {
                self.send_txn(shard, s.shard, TxnPeerMessage::Prepare { txn, sets: s.sets });
            }
        }
    }

    fn one_phase(&mut self, client: ClientRef, shard: ShardId, txn: TxnMeta, tag: WriteTag, mut sets: TxnSets) {
        self.plant_skip_validation(shard, &mut sets);
        if let Err(reason) = self.lock_for_prepare(shard, &txn, &sets) {
            return self.answer(client, Response::Outcome(Outcome::Aborted { reason }));
        }
        let bound = self.hlc.now(self.now_ms);
        let cmd = OnePhaseCommand { txn, tag, bound, sets };
        self.propose_txn(shard, CommandBody::OnePhase(cmd), Some(client), Some(txn.id), Some(txn.id));
    }

    /// The planted bugs [`PlantedBug::SkipTxnValidation`]: every read version
    /// becomes the current one; [`PlantedBug::SkipRangeValidation`]: every
    /// range's read version becomes its newest.
    pub(super) fn plant_skip_validation(&self, shard: ShardId, sets: &mut TxnSets) {
        if self.cfg.planted_bug == PlantedBug::SkipTxnValidation {
            let store = self.groups[&shard].sm.store();
            for r in &mut sets.reads {
                r.version = store.newest_version(&r.key);
            }
        }
        if self.cfg.planted_bug == PlantedBug::SkipRangeValidation {
            let store = self.groups[&shard].sm.store();
            for range in &mut sets.ranges {
                range.read_ts = range.read_ts.max(store.newest_in_range(&range.start, &range.end));
            }
        }
    }

    /// Checks (two-phase locking) or takes (OCC) every lock `sets` needs here and
    /// marks the transaction prepared in the table; `Err` with the abort reason.
    pub(super) fn lock_for_prepare(
        &mut self,
        shard: ShardId,
        txn: &TxnMeta,
        sets: &TxnSets,
    ) -> Result<(), AbortReason> {
        let now_ms = self.now_ms;
        let g = self.groups.get_mut(&shard).expect("known group");
        let (reads, ranges, writes) = lock_keys(sets);
        if txn.policy == Policy::Occ {
            let who = info(txn, now_ms);
            let token = g.txns.next_token;
            g.txns.next_token += 1;
            let targets = reads
                .iter()
                .map(|k| (Target::Key(k.clone()), LockMode::Shared))
                .chain(
                    ranges.iter().map(|(s, e)| (Target::Range { start: s.clone(), end: e.clone() }, LockMode::Shared)),
                )
                .chain(writes.iter().map(|k| (Target::Key(k.clone()), LockMode::Exclusive)));
            for (target, mode) in targets {
                match g.locks.acquire(&who, target, mode, token, now_ms) {
                    Acquire::Granted => {}
                    Acquire::Aborted(reason) => {
                        self.lock_events(shard);
                        return Err(reason);
                    }
                    _ => {
                        g.locks.abort(txn.id, AbortReason::Conflict, now_ms);
                        self.lock_events(shard);
                        return Err(AbortReason::Conflict);
                    }
                }
            }
        } else if !g.locks.holds(txn.id, &reads, &ranges, &writes) {
            let reason = match g.locks.state(txn.id) {
                Some(crate::txn::lock::TxnState::Aborted(reason)) => reason,
                // Locks lost with a leader change, or never asked for.
                _ => AbortReason::Conflict,
            };
            return Err(reason);
        }
        let g = self.groups.get_mut(&shard).expect("known group");
        g.locks.prepare(txn.id);
        Ok(())
    }

    /// Proposes a transaction entry on `shard`. `client` hears the applied reply
    /// (or a refusal now); `release` names the transaction whose locks the apply
    /// releases; `refused` the one whose locks a refusal aborts (they were marked
    /// prepared for an entry that will never apply). True when it was proposed.
    pub(super) fn propose_txn(
        &mut self,
        shard: ShardId,
        body: CommandBody,
        client: Option<ClientRef>,
        release: Option<TxnId>,
        refused: Option<TxnId>,
    ) -> bool {
        let now_ms = self.now_ms;
        let stamp_ts = self.hlc.now(self.now_ms);
        let data = command::encode(&Command { stamp_ts, body });
        let bytes = data.len() as u64 + ENTRY_OVERHEAD_BYTES;
        let g = self.groups.get_mut(&shard).expect("known group");
        if self.proposed_bytes + bytes + ready_reserve_bytes(&self.cfg) > self.room_bytes {
            self.stats.busy += 1;
            if let Some(txn) = refused {
                g.locks.abort(txn, AbortReason::Conflict, now_ms);
                g.txns.preparing.remove(&txn);
            }
            if let Some(client) = client {
                self.answer(client, Response::Busy);
            }
            self.lock_events(shard);
            return false;
        }
        match g.raft.propose(data) {
            Ok((index, term)) => {
                self.proposed_bytes += bytes;
                self.stats.raft_proposals += 1;
                if let Some(client) = client {
                    g.writes.insert(index, (term, client));
                    self.requests_pending += 1;
                }
                if let Some(txn) = release {
                    g.txns.proposed.insert(index, txn);
                }
                self.dirty.insert(shard);
                true
            }
            Err(e) => {
                if let Some(txn) = refused {
                    g.locks.abort(txn, AbortReason::Conflict, now_ms);
                    g.txns.preparing.remove(&txn);
                }
                if let Some(client) = client {
                    self.answer(client, refusal(&e));
                }
                self.lock_events(shard);
                false
            }
        }
    }

    /// Serves reads that waited on intents no longer there.
    pub(super) fn wake_intent_waiters(&mut self, shard: ShardId) {
        let g = self.groups.get_mut(&shard).expect("known group");
        if g.txns.intent_waiters.is_empty() {
            return;
        }
        let done: Vec<TxnId> =
            g.txns.intent_waiters.keys().filter(|t| g.sm.txns().intent(t).is_none()).copied().collect();
        let mut reads = Vec::new();
        for t in done {
            reads.extend(g.txns.intent_waiters.remove(&t).unwrap_or_default());
        }
        for r in reads {
            self.serve_read(shard, r);
        }
    }

    /// Serves one confirmed read, or parks it behind the intent it must wait for.
    pub(super) fn serve_read(&mut self, shard: ShardId, r: PendingRead) {
        let g = self.groups.get_mut(&shard).expect("known group");
        let blocker = match &r.op {
            ReadKind::Plain(ReadOp::Get { key, at }) => g.sm.intent_blocking(key, *at, None),
            ReadKind::Plain(ReadOp::Scan { start, end, at, .. }) => g.sm.range_blocking(start, end, *at, None),
            ReadKind::Plain(ReadOp::Versions { .. }) => None,
            ReadKind::Txn(txn, TxnReadOp::Get { key } | TxnReadOp::GetForUpdate { key }) => {
                g.sm.intent_blocking(key, None, Some(*txn))
            }
            ReadKind::Txn(txn, TxnReadOp::Scan { start, end, .. }) => g.sm.range_blocking(start, end, None, Some(*txn)),
        };
        if let Some(txn) = blocker.filter(|_| self.cfg.planted_bug != PlantedBug::ReadPastIntent) {
            g.txns.intent_waiters.entry(txn).or_default().push(r);
            return;
        }
        let outcome = match &r.op {
            ReadKind::Plain(op) => g.sm.read(op),
            ReadKind::Txn(_, op) => g.sm.txn_read(op),
        };
        self.answer_pending(r.client, Response::Outcome(outcome));
    }
}
