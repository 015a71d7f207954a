//! The replicated side of transactions (DESIGN §8): prepared intents at every
//! participant, transaction records at the anchor, and the memory of resolved
//! transactions, all part of one shard's state machine.
//!
//! Runs inside [`Shard::apply`] on the core that owns the shard, on every replica,
//! and travels in snapshots. Deterministic: ordered maps only; time is the log's
//! own clock (the highest command stamp applied), never a local clock.
//!
//! The commands (new [`CommandBody`](super::CommandBody) variants):
//! - **Prepare** (at each participant): the transaction's read set with the
//!   versions read, its range reads with the version they were served at, and its
//!   writes. Applied, it decides this shard's vote, the same on every replica:
//!   `no` when another transaction's intent conflicts (a backstop: the leader's
//!   lock table keeps conflicting transactions from preparing together) or when a
//!   version read is no longer the newest (OCC validation; under two-phase locking
//!   the locks make this always pass, so a failure means locks were lost with a
//!   leader change); otherwise `yes` with a lower bound on the commit version, and
//!   the intent is kept until the decision. The bound is above the leader's
//!   proposed bound (its clock and read timestamp cache), the shard's last applied
//!   version and the newest version of every key read or written, so the commit
//!   version the anchor picks (the maximum of all bounds) writes every key above
//!   its current version. A prepare of a transaction that already has an intent
//!   repeats its vote; one of a transaction already resolved here answers with the
//!   decision and creates nothing.
//! - **Decide** (at the anchor): records the decision once. A second decision for
//!   the same transaction changes nothing and answers the first (a commit after a
//!   timeout abort is refused, and the other way round). Tagged with the client's
//!   write tag, its reply is kept in the exactly-once table like a write's. The
//!   anchor's own intent is resolved by the same entry.
//! - **Resolve** (at each other participant, batched): applies decisions to
//!   intents: a commit writes every key of the intent at exactly the commit
//!   version; an abort drops it. Either way the transaction joins the resolved
//!   memory, so a late duplicate prepare cannot bring an intent back.
//! - **Forget** (at the anchor, batched): drops records every participant has
//!   resolved; they join the resolved memory too.
//! - **OnePhase**: a transaction whose reads and writes are all on this shard:
//!   prepare, decide and resolve in one entry, exactly-once like a write.
//!
//! Intents block: a plain write of a key another transaction has prepared (to read
//! or write it, or inside a prepared range) is not applied and answers
//! [`Applied::Blocked`] (the leader's lock table makes this rare; the node retries
//! it later); a read of a key with a prepared write whose bound is at or below the
//! read's version waits for the decision ([`Shard::intent_blocking`]).
//!
//! Bounds: at most [`TxnLimits::intents_max`] intents and
//! [`TxnLimits::records_max`] records (a prepare or decision beyond them votes
//! `no` / is refused before anything changes); the resolved memory keeps at most
//! [`TxnLimits::resolved_max`] entries for at most [`TxnLimits::resolved_age_ts`]
//! of log time. A transaction attempt that began before the newest entry the
//! memory dropped cannot prepare here any more (`prepare_floor_ts`), so dropping
//! never lets a late prepare through.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use corekv_rpc::kv::{Outcome, ShardId, Version, WriteTag};
use corekv_rpc::txn::{AbortReason, Policy, TxnId};
pub use corekv_rpc::txn::{Decision, RangeItem, ReadItem, ResolveItem, TxnMeta, TxnSets, Vote, WriteItem};
use rkyv::{Archive, Deserialize, Serialize};

use super::dedup::Admission;
use super::shard::{ApplyError, Shard};

/// Default most prepared transactions one shard holds.
pub const INTENTS_MAX_DEFAULT: usize = 100_000;
/// Default most undecided-or-unresolved transaction records one anchor holds.
pub const RECORDS_MAX_DEFAULT: usize = 100_000;
/// Default most resolved transactions remembered.
pub const RESOLVED_MAX_DEFAULT: usize = 200_000;
/// Default time a resolved transaction is remembered: ten minutes of log time, far
/// above any transaction's lifetime.
pub const RESOLVED_AGE_TS_DEFAULT: u64 = (10 * 60 * 1000) << super::hlc::LOGICAL_BITS;

/// Bounds of the transaction state. Must be the same on every replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnLimits {
    /// Most prepared transactions (intents) on this shard.
    pub intents_max: usize,
    /// Most transaction records at this anchor.
    pub records_max: usize,
    /// Most resolved transactions remembered.
    pub resolved_max: usize,
    /// How long (log time, HLC units) a resolved transaction is remembered.
    pub resolved_age_ts: u64,
}

impl Default for TxnLimits {
    fn default() -> Self {
        TxnLimits {
            intents_max: INTENTS_MAX_DEFAULT,
            records_max: RECORDS_MAX_DEFAULT,
            resolved_max: RESOLVED_MAX_DEFAULT,
            resolved_age_ts: RESOLVED_AGE_TS_DEFAULT,
        }
    }
}

/// A prepare record as it travels in the log.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PrepareCommand {
    /// The transaction.
    pub txn: TxnMeta,
    /// Its anchor shard, which holds its record.
    pub anchor: ShardId,
    /// The leader's lower bound for the commit version (its clock and read
    /// timestamp cache for the keys, when it proposed).
    pub bound: Version,
    /// What the transaction does here.
    pub sets: TxnSets,
}

/// A decision as it travels in the log.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DecideCommand {
    /// The transaction.
    pub txn: TxnId,
    /// The decision.
    pub decision: Decision,
    /// The other participants, which must resolve it.
    pub participants: Vec<ShardId>,
    /// The client's exactly-once tag of the commit request (`None` for an abort
    /// the anchor writes on its own after a timeout).
    pub tag: Option<WriteTag>,
    /// When the attempt began (0 when the anchor never learned it).
    pub attempt_ts: u64,
}

/// A one-phase commit as it travels in the log.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct OnePhaseCommand {
    /// The transaction.
    pub txn: TxnMeta,
    /// The client's exactly-once tag.
    pub tag: WriteTag,
    /// The leader's lower bound for the commit version.
    pub bound: Version,
    /// What the transaction does.
    pub sets: TxnSets,
}

/// A prepared transaction at a participant.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// The transaction.
    pub txn: TxnMeta,
    /// Its anchor.
    pub anchor: ShardId,
    /// The vote's lower bound for the commit version.
    pub bound: Version,
    /// What it does here.
    pub sets: TxnSets,
    /// Log time when it prepared.
    pub prepared_ts: u64,
}

/// A transaction record at the anchor.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TxnRecord {
    /// The decision.
    pub decision: Decision,
    /// The participants other than the anchor, which must resolve it.
    pub participants: Vec<ShardId>,
    /// Log time of the decision.
    pub decided_ts: u64,
    /// When the attempt began.
    pub attempt_ts: u64,
}

/// A resolved transaction remembered.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedTxn {
    /// Its decision.
    pub decision: Decision,
    /// Log time when it was resolved here.
    pub resolved_ts: u64,
    /// When its attempt began.
    pub attempt_ts: u64,
}

/// The replicated part of the transaction state: what a snapshot carries.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnData {
    /// Prepared transactions at this participant.
    pub intents: BTreeMap<TxnId, Intent>,
    /// Records of transactions this shard anchors, until every participant resolved.
    pub records: BTreeMap<TxnId, TxnRecord>,
    /// Resolved transactions remembered.
    pub resolved: BTreeMap<TxnId, ResolvedTxn>,
    /// Attempts that began at or before this cannot prepare here (the resolved
    /// memory forgot entries up to here).
    pub prepare_floor_ts: u64,
}

/// What the prepared transactions hold on one key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct KeyHolds {
    writer: Option<TxnId>,
    readers: BTreeSet<TxnId>,
}

/// The transaction state: the replicated data and indexes derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnState {
    data: TxnData,
    limits: TxnLimits,
    /// key -> what intents hold on it.
    keys: BTreeMap<Vec<u8>, KeyHolds>,
    /// Intents with range reads.
    ranged: BTreeSet<TxnId>,
    /// (resolved_ts, id): the resolved memory in age order.
    resolved_order: BTreeSet<(u64, TxnId)>,
}

/// What applying one entry produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A client's reply (a plain write or a one-phase commit).
    Reply(Outcome),
    /// A plain write met a prepared intent of `txn`: not applied, nothing recorded;
    /// certainly not applied, so it may be tried again.
    Blocked {
        /// The transaction holding the key.
        txn: TxnId,
    },
    /// A prepare's vote, for the anchor.
    Vote {
        /// The transaction.
        txn: TxnId,
        /// Its anchor.
        anchor: ShardId,
        /// The vote.
        vote: Vote,
    },
    /// A decision recorded (or found recorded) at the anchor.
    Decided {
        /// The transaction.
        txn: TxnId,
        /// The decision in force.
        decision: Decision,
        /// The participants that must resolve it.
        participants: Vec<ShardId>,
        /// The reply for the client when the decision carried its tag.
        reply: Option<Outcome>,
    },
    /// Decisions applied to these transactions' intents here (their locks may go).
    Resolved {
        /// The transactions.
        txns: Vec<TxnId>,
    },
    /// Nothing to answer (forgets).
    Done,
}

impl TxnState {
    /// An empty state.
    pub fn new(limits: TxnLimits) -> Self {
        TxnState {
            data: TxnData::default(),
            limits,
            keys: BTreeMap::new(),
            ranged: BTreeSet::new(),
            resolved_order: BTreeSet::new(),
        }
    }

    /// Rebuilds the state and its indexes from snapshot data; an error names what
    /// contradicts the invariants.
    pub(crate) fn from_data(data: TxnData, limits: TxnLimits) -> Result<Self, String> {
        if data.intents.len() > limits.intents_max {
            return Err(format!("{} intents, above the limit {}", data.intents.len(), limits.intents_max));
        }
        if data.records.len() > limits.records_max {
            return Err(format!("{} records, above the limit {}", data.records.len(), limits.records_max));
        }
        if data.resolved.len() > limits.resolved_max {
            return Err(format!("{} resolved, above the limit {}", data.resolved.len(), limits.resolved_max));
        }
        let mut state = TxnState::new(limits);
        for (id, intent) in &data.intents {
            if intent.txn.id != *id {
                return Err(format!("intent filed under {id} names {}", intent.txn.id));
            }
            if data.resolved.contains_key(id) {
                return Err(format!("transaction {id} is both prepared and resolved"));
            }
            if let Some(key) = state.conflict(*id, &intent.sets) {
                return Err(format!("intents of two transactions conflict on key {key:02x?}"));
            }
            state.index(intent);
        }
        for (id, r) in &data.resolved {
            state.resolved_order.insert((r.resolved_ts, *id));
        }
        state.data = data;
        Ok(state)
    }

    /// The replicated data.
    pub(crate) fn data(&self) -> &TxnData {
        &self.data
    }

    /// The prepared intent of `txn`, if any.
    pub fn intent(&self, txn: &TxnId) -> Option<&Intent> {
        self.data.intents.get(txn)
    }

    /// Every prepared intent, by id (a new leader rebuilds its lock table and asks
    /// anchors about them).
    pub fn intents(&self) -> impl Iterator<Item = &Intent> {
        self.data.intents.values()
    }

    /// The record of `txn` at this anchor, if any.
    pub fn record(&self, txn: &TxnId) -> Option<&TxnRecord> {
        self.data.records.get(txn)
    }

    /// Every record at this anchor (a new leader resumes resolving them).
    pub fn records(&self) -> impl Iterator<Item = (&TxnId, &TxnRecord)> {
        self.data.records.iter()
    }

    /// The decision of a transaction resolved here and still remembered.
    pub fn resolved(&self, txn: &TxnId) -> Option<Decision> {
        self.data.resolved.get(txn).map(|r| r.decision)
    }

    /// The decision known here for `txn`: its record, else the resolved memory.
    pub fn decision(&self, txn: &TxnId) -> Option<Decision> {
        self.data.records.get(txn).map(|r| r.decision).or_else(|| self.resolved(txn))
    }

    /// The transaction whose prepared write holds `key`, if any.
    pub fn writer_of(&self, key: &[u8]) -> Option<TxnId> {
        self.keys.get(key).and_then(|h| h.writer)
    }

    /// The first prepared transaction other than `txn` whose intent conflicts with
    /// `sets` (write against read or write, read against write, a write inside a
    /// prepared range, a range over a prepared write); the key it was found on.
    fn conflict(&self, txn: TxnId, sets: &TxnSets) -> Option<Vec<u8>> {
        for w in &sets.writes {
            if let Some(h) = self.keys.get(&w.key)
                && (h.writer.is_some_and(|t| t != txn) || h.readers.iter().any(|&t| t != txn))
            {
                return Some(w.key.clone());
            }
            for other in &self.ranged {
                if *other != txn && self.data.intents[other].sets.ranges.iter().any(|r| r.contains(&w.key)) {
                    return Some(w.key.clone());
                }
            }
        }
        for r in &sets.reads {
            if self.writer_of(&r.key).is_some_and(|t| t != txn) {
                return Some(r.key.clone());
            }
        }
        for range in &sets.ranges {
            let upper = if range.end.is_empty() { Bound::Unbounded } else { Bound::Excluded(range.end.as_slice()) };
            for (key, h) in self.keys.range::<[u8], _>((Bound::Included(range.start.as_slice()), upper)) {
                if h.writer.is_some_and(|t| t != txn) {
                    return Some(key.clone());
                }
            }
        }
        None
    }

    fn index(&mut self, intent: &Intent) {
        let id = intent.txn.id;
        for w in &intent.sets.writes {
            self.keys.entry(w.key.clone()).or_default().writer = Some(id);
        }
        for r in &intent.sets.reads {
            self.keys.entry(r.key.clone()).or_default().readers.insert(id);
        }
        if !intent.sets.ranges.is_empty() {
            self.ranged.insert(id);
        }
    }

    fn unindex(&mut self, intent: &Intent) {
        let id = intent.txn.id;
        let keys = intent.sets.writes.iter().map(|w| &w.key).chain(intent.sets.reads.iter().map(|r| &r.key));
        for key in keys {
            if let Some(h) = self.keys.get_mut(key) {
                if h.writer == Some(id) {
                    h.writer = None;
                }
                h.readers.remove(&id);
                if h.writer.is_none() && h.readers.is_empty() {
                    self.keys.remove(key);
                }
            }
        }
        self.ranged.remove(&id);
    }

    /// Remembers `txn` as resolved, forgetting the oldest entries beyond the bounds.
    fn remember(&mut self, txn: TxnId, decision: Decision, attempt_ts: u64, now_ts: u64) {
        if let Some(old) = self.data.resolved.insert(txn, ResolvedTxn { decision, resolved_ts: now_ts, attempt_ts }) {
            self.resolved_order.remove(&(old.resolved_ts, txn));
        }
        self.resolved_order.insert((now_ts, txn));
        self.expire(now_ts);
    }

    /// Drops resolved entries past their age or beyond the count bound, raising
    /// the prepare floor to their attempts' begin.
    pub(crate) fn expire(&mut self, now_ts: u64) {
        let too_old = now_ts.saturating_sub(self.limits.resolved_age_ts);
        while let Some(&(ts, id)) = self.resolved_order.first() {
            if ts >= too_old && self.data.resolved.len() <= self.limits.resolved_max {
                break;
            }
            self.resolved_order.pop_first();
            if let Some(r) = self.data.resolved.remove(&id) {
                // Whatever began before the forgotten attempt (or before its age
                // window) may no longer prepare: its duplicate could otherwise
                // bring back an intent nobody will resolve.
                self.data.prepare_floor_ts = self.data.prepare_floor_ts.max(r.attempt_ts).max(too_old);
            }
        }
    }
}

impl Shard {
    /// The transaction state (read-only).
    pub fn txns(&self) -> &TxnState {
        &self.txns
    }

    /// The prepared transaction a read of `key` at `at` (`None`: the newest) must
    /// wait for: one that writes `key` with a bound at or below `at` (any bound for
    /// a read of the newest). A read of its own transaction's key is not blocked.
    pub fn intent_blocking(&self, key: &[u8], at: Option<Version>, reader: Option<TxnId>) -> Option<TxnId> {
        let writer = self.txns.writer_of(key)?;
        if Some(writer) == reader {
            return None;
        }
        let bound = self.txns.data.intents[&writer].bound;
        match at {
            Some(at) if bound > at => None,
            _ => Some(writer),
        }
    }

    /// A plain write of `key` must wait for this prepared transaction.
    pub(crate) fn write_blocked(&self, key: &[u8]) -> Option<TxnId> {
        if let Some(h) = self.txns.keys.get(key) {
            if let Some(w) = h.writer {
                return Some(w);
            }
            if let Some(&r) = h.readers.first() {
                return Some(r);
            }
        }
        self.txns.ranged.iter().copied().find(|t| self.txns.data.intents[t].sets.ranges.iter().any(|r| r.contains(key)))
    }

    /// The vote `sets` earn here now: `Err` with the reason for `no`, else the
    /// lower bound for the commit version.
    fn vote_on(&self, txn: &TxnMeta, bound: Version, sets: &TxnSets) -> Result<Version, AbortReason> {
        if txn.attempt_ts <= self.txns.data.prepare_floor_ts {
            return Err(AbortReason::Timeout);
        }
        if self.txns.conflict(txn.id, sets).is_some() {
            return Err(AbortReason::Conflict);
        }
        // A version read that is no longer the newest: OCC's validation; under
        // two-phase locking the locks were lost (a leader change).
        let stale = if txn.policy == Policy::Occ { AbortReason::Validation } else { AbortReason::Conflict };
        let mut bound = bound.max(self.meta.last_applied_version.saturating_add(1));
        for r in &sets.reads {
            if self.store.newest_version(&r.key) != r.version {
                return Err(stale);
            }
            bound = bound.max(r.version.saturating_add(1));
        }
        for range in &sets.ranges {
            if self.store.newest_in_range(&range.start, &range.end) > range.read_ts {
                return Err(stale);
            }
            bound = bound.max(range.read_ts.saturating_add(1));
        }
        for w in &sets.writes {
            bound = bound.max(self.store.newest_version(&w.key).saturating_add(1));
        }
        Ok(bound)
    }

    pub(crate) fn apply_prepare(&mut self, cmd: PrepareCommand) -> Applied {
        let txn = cmd.txn.id;
        let anchor = cmd.anchor;
        let vote = if let Some(decision) = self.txns.decision(&txn) {
            Vote::Decided(decision)
        } else if let Some(intent) = self.txns.data.intents.get(&txn) {
            Vote::Yes { bound: intent.bound }
        } else if self.txns.data.intents.len() >= self.txns.limits.intents_max {
            Vote::No { reason: AbortReason::Conflict }
        } else {
            match self.vote_on(&cmd.txn, cmd.bound, &cmd.sets) {
                Err(reason) => Vote::No { reason },
                Ok(bound) => {
                    let intent =
                        Intent { txn: cmd.txn, anchor, bound, sets: cmd.sets, prepared_ts: self.meta.log_clock_ts };
                    self.txns.index(&intent);
                    self.txns.data.intents.insert(txn, intent);
                    Vote::Yes { bound }
                }
            }
        };
        Applied::Vote { txn, anchor, vote }
    }

    pub(crate) fn apply_decide(&mut self, cmd: DecideCommand) -> Result<Applied, ApplyError> {
        let now_ts = self.meta.log_clock_ts;
        if let Some(tag) = &cmd.tag {
            if let Err(invalid) = tag.validate() {
                return Ok(Applied::Reply(invalid));
            }
            match self.dedup.admit(tag, now_ts) {
                Admission::Replay(reply) | Admission::Refuse(reply) => {
                    let decision = self.txns.decision(&cmd.txn).unwrap_or(cmd.decision);
                    return Ok(Applied::Decided {
                        txn: cmd.txn,
                        decision,
                        participants: self.txns.record(&cmd.txn).map(|r| r.participants.clone()).unwrap_or_default(),
                        reply: Some(reply),
                    });
                }
                Admission::Apply => {}
            }
        }
        let (decision, participants) = match self.txns.decision(&cmd.txn) {
            // Decided before: the first decision stands.
            Some(decision) => {
                let participants = self.txns.record(&cmd.txn).map(|r| r.participants.clone()).unwrap_or_default();
                (decision, participants)
            }
            None if self.txns.data.records.len() >= self.txns.limits.records_max
                && matches!(cmd.decision, Decision::Commit(_)) =>
            {
                // No room to remember a commit until it is resolved: refuse it,
                // certainly not committed. (An abort needs no record: with none, an
                // abort is what every later question is answered.)
                let reply = Outcome::Unavailable;
                return Ok(Applied::Reply(reply));
            }
            None => {
                let item = ResolveItem { txn: cmd.txn, decision: cmd.decision, attempt_ts: cmd.attempt_ts };
                self.resolve_local(item)?;
                let record = TxnRecord {
                    decision: cmd.decision,
                    participants: cmd.participants.clone(),
                    decided_ts: now_ts,
                    attempt_ts: cmd.attempt_ts,
                };
                if !cmd.participants.is_empty() {
                    self.txns.data.records.insert(cmd.txn, record);
                }
                (cmd.decision, cmd.participants)
            }
        };
        let reply = decision.reply();
        if let Some(tag) = &cmd.tag {
            self.dedup.record(tag, now_ts, reply.clone());
        }
        Ok(Applied::Decided { txn: cmd.txn, decision, participants, reply: cmd.tag.map(|_| reply) })
    }

    /// Applies a decision to this shard's own intent of the transaction, if it has
    /// one, and remembers it resolved.
    fn resolve_local(&mut self, item: ResolveItem) -> Result<(), ApplyError> {
        let ResolveItem { txn, decision, attempt_ts } = item;
        let now_ts = self.meta.log_clock_ts;
        let Some(intent) = self.txns.data.intents.remove(&txn) else {
            if self.txns.resolved(&txn).is_none() {
                self.txns.remember(txn, decision, attempt_ts, now_ts);
            }
            return Ok(());
        };
        self.txns.unindex(&intent);
        if let Decision::Commit(version) = decision {
            self.write_at(&intent, version)?;
        }
        self.txns.remember(txn, decision, intent.txn.attempt_ts, now_ts);
        Ok(())
    }

    /// Writes every key of `intent` at exactly `version`.
    fn write_at(&mut self, intent: &Intent, version: Version) -> Result<(), ApplyError> {
        if version < intent.bound {
            return Err(ApplyError::Txn(format!(
                "transaction {} commits at {version}, below this participant's bound {}",
                intent.txn.id, intent.bound
            )));
        }
        self.write_sets(&intent.sets, version)
    }

    fn write_sets(&mut self, sets: &TxnSets, version: Version) -> Result<(), ApplyError> {
        for w in &sets.writes {
            let newest = self.store.newest_version(&w.key);
            if version <= newest {
                return Err(ApplyError::Txn(format!(
                    "commit version {version} is not above key {:02x?}'s newest version {newest}",
                    w.key
                )));
            }
        }
        for w in &sets.writes {
            // A delete of a key absent or deleted at commit writes nothing.
            if w.value.is_none() && self.store.current_version(&w.key) == 0 {
                continue;
            }
            self.store.write(&w.key, w.value.clone(), version);
        }
        if version > self.meta.last_applied_version {
            self.meta.last_applied_version = version;
            self.store.raise_floor(version.saturating_sub(self.config.retention.history_ts_span));
        }
        Ok(())
    }

    pub(crate) fn apply_resolve(&mut self, items: Vec<ResolveItem>) -> Result<Applied, ApplyError> {
        let mut txns = Vec::with_capacity(items.len());
        for item in items {
            self.resolve_local(item)?;
            txns.push(item.txn);
        }
        Ok(Applied::Resolved { txns })
    }

    /// The prepared transaction a read of the live keys of `[start, end)` at `at`
    /// (`None`: the newest) must wait for, as [`Shard::intent_blocking`] for each
    /// key.
    pub fn range_blocking(
        &self,
        start: &[u8],
        end: &[u8],
        at: Option<Version>,
        reader: Option<TxnId>,
    ) -> Option<TxnId> {
        if !end.is_empty() && start >= end {
            return None;
        }
        let upper = if end.is_empty() { Bound::Unbounded } else { Bound::Excluded(end) };
        self.txns.keys.range::<[u8], _>((Bound::Included(start), upper)).find_map(|(_, h)| {
            let writer = h.writer.filter(|&w| Some(w) != reader)?;
            let bound = self.txns.data.intents[&writer].bound;
            match at {
                Some(at) if bound > at => None,
                _ => Some(writer),
            }
        })
    }

    /// A transactional read at the newest state: a get answers the newest version
    /// (tombstones included, 0 when never written) with the value if live; a scan
    /// answers like a plain scan, with the version it was read at.
    pub fn txn_read(&self, op: &corekv_rpc::kv::TxnReadOp) -> Outcome {
        use corekv_rpc::kv::{OkReply, TxnReadOp};
        if let Err(invalid) = op.validate() {
            return invalid;
        }
        match op {
            TxnReadOp::Get { key } | TxnReadOp::GetForUpdate { key } => {
                let version = self.store.newest_version(key);
                let value = match self.store.visible(key, None) {
                    super::store::Visible::Value(_, v) => Some(v.to_vec()),
                    _ => None,
                };
                Outcome::Ok(OkReply::TxnValue { version, value })
            }
            TxnReadOp::Scan { start, end, limit } => match self.store.scan(start, end, *limit as usize, None) {
                Outcome::Ok(OkReply::Scan { items, resume }) => {
                    Outcome::Ok(OkReply::TxnScan { items, resume, read_ts: self.meta.last_applied_version })
                }
                other => other,
            },
        }
    }

    pub(crate) fn apply_forget(&mut self, txns: Vec<TxnId>) -> Applied {
        let now_ts = self.meta.log_clock_ts;
        for txn in txns {
            if let Some(record) = self.txns.data.records.remove(&txn) {
                self.txns.remember(txn, record.decision, record.attempt_ts, now_ts);
            }
        }
        Applied::Done
    }

    pub(crate) fn apply_one_phase(&mut self, cmd: OnePhaseCommand) -> Result<Applied, ApplyError> {
        if let Err(invalid) = cmd.tag.validate() {
            return Ok(Applied::Reply(invalid));
        }
        let now_ts = self.meta.log_clock_ts;
        match self.dedup.admit(&cmd.tag, now_ts) {
            Admission::Replay(reply) | Admission::Refuse(reply) => return Ok(Applied::Reply(reply)),
            Admission::Apply => {}
        }
        let decision = match self.vote_on(&cmd.txn, cmd.bound, &cmd.sets) {
            Err(reason) => Decision::Abort(reason),
            Ok(version) => {
                self.write_sets(&cmd.sets, version)?;
                Decision::Commit(version)
            }
        };
        let reply = decision.reply();
        self.dedup.record(&cmd.tag, now_ts, reply.clone());
        Ok(Applied::Reply(reply))
    }
}
