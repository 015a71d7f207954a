//! The lock table of one shard leader (DESIGN §8): shared and exclusive key locks,
//! shared range locks, and the waits between transactions, settled by each
//! transaction's policy.
//!
//! Owns the locks of the transactions that touch this shard while this node leads
//! it. One table per shard leader, on the core that owns the shard; it is not
//! replicated: a new leader rebuilds it from the replicated prepare records
//! ([`LockTable::install_prepared`]), and a leader that steps down drops it
//! ([`LockTable::clear`]). Sans-I/O: time comes in as `now_ms` arguments, answers
//! go out as return values and [`LockEvent`]s. Deterministic: every map is ordered,
//! so the same calls give the same answers and events in the same order.
//!
//! Rules:
//! - Shared/shared is compatible; an exclusive lock conflicts with any lock of
//!   another transaction on the same key; a range lock (always shared) conflicts
//!   with another transaction's exclusive lock on a key inside it. Locks are
//!   re-entrant; a shared holder asking exclusive upgrades, conflicting only with
//!   other holders.
//! - A request's conflict set is its incompatible holders plus its incompatible
//!   waiters that are older than it (they go first). A member with another policy
//!   aborts the requester (`conflict`); no-wait and OCC abort it (`conflict`);
//!   wound-wait wounds every younger unprepared holder in the set and waits for the
//!   rest; wait-die kills the requester (`died`) if any member is older, else waits.
//! - Waiters are granted oldest first, and the policy is applied again whenever a
//!   waiter's conflict set may have changed (a lock or a wait added next to it, or
//!   one removed).
//!
//! Invariants, kept after every call (the property test checks each one):
//! - no two transactions hold incompatible granted locks (prepare records installed
//!   by a new leader are trusted: they never conflict in a correct history);
//! - every waiter has a non-empty conflict set, all of its own policy; a wound-wait
//!   waiter waits only for older or prepared transactions, a wait-die waiter only for
//!   younger ones; a prepared transaction never waits. So no waits-for edge crosses
//!   policies; under wait-die every edge goes from older to younger; under
//!   wound-wait every edge goes from younger to older or into a prepared
//!   transaction, which has no outgoing edge. The waits-for graph has no cycle and
//!   no deadlock can form; the lock-wait timeout is only a backstop;
//! - a prepared transaction loses its locks only by [`LockTable::release`],
//!   [`LockTable::abort`] or [`LockTable::clear`], never to a wound or an expiry;
//! - a transaction has at most one waiting request (a client operation blocks).
//!
//! Costs: a key request is `O(log keys + holders + waiters of the key)` plus, for an
//! exclusive request, a walk of the range locks that start at or below the key. A
//! range request walks every locked key inside the range. Range locks (scans inside
//! read-write transactions) are rare, so they live in one table-wide ordered set
//! rather than an interval tree. Releasing a transaction costs `O(its locks)` plus
//! a check of each waiter next to them, oldest first. A removal only shrinks
//! conflict sets, so that check stops at the first remaining conflict (usually the
//! first holder) and a release on a key with `w` waiters costs `O(w)`; only an
//! added lock or wait runs the full policy on its neighbours, which walks their
//! older waiters.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Bound, ControlFlow};

use corekv_rpc::txn::{AbortReason, Age, Policy, TxnId};

/// Default longest lock wait before the waiter's transaction aborts (`timeout`): a
/// backstop, since no deadlock can form.
pub const WAIT_MS_MAX_DEFAULT: u64 = 5_000;
/// Default longest life of a transaction that has not prepared: twice the client
/// deadline, so a client that vanished does not hold locks for long.
pub const LIFETIME_MS_DEFAULT: u64 = 10_000;
/// Default most locks one transaction holds on one shard.
pub const LOCKS_PER_TXN_MAX_DEFAULT: usize = 10_000;
/// Default most transactions with locks or a wait in one table (and most
/// tombstones kept).
pub const TXNS_MAX_DEFAULT: usize = 100_000;

/// The table's bounds and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockConfig {
    /// A lock wait longer than this aborts the waiter's transaction (`timeout`).
    pub wait_ms_max: u64,
    /// A transaction that has not prepared and began longer ago than this aborts
    /// (`timeout`). Prepared transactions never expire here.
    pub lifetime_ms: u64,
    /// Most locks (keys plus ranges) one transaction holds; at least 1.
    pub locks_per_txn_max: usize,
    /// Most active transactions in the table; at least 1. Also the most tombstones
    /// kept.
    pub txns_max: usize,
}

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig {
            wait_ms_max: WAIT_MS_MAX_DEFAULT,
            lifetime_ms: LIFETIME_MS_DEFAULT,
            locks_per_txn_max: LOCKS_PER_TXN_MAX_DEFAULT,
            txns_max: TXNS_MAX_DEFAULT,
        }
    }
}

/// What the table needs to know about a transaction. The first request of a
/// transaction registers it; later requests' copies are not read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnInfo {
    /// The attempt's identity.
    pub id: TxnId,
    /// Its age; the table uses `age.start` and breaks ties by `id`.
    pub age: Age,
    /// How its conflicts are settled.
    pub policy: Policy,
    /// When it began, in the caller's milliseconds (its lifetime's start).
    pub begun_ms: u64,
}

/// A lock's mode. `Shared < Exclusive`: an exclusive lock covers a shared one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockMode {
    /// For reads: compatible with other shared locks.
    Shared,
    /// For writes: conflicts with every lock of another transaction on the key.
    Exclusive,
}

/// What a request locks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// One key.
    Key(Vec<u8>),
    /// The keys in `[start, end)`; an empty `end` is unbounded. Always shared.
    Range {
        /// First key in the range.
        start: Vec<u8>,
        /// First key past the range; empty: no end.
        end: Vec<u8>,
    },
}

/// The caller's id for one request, echoed in the event that answers a request
/// that waited.
pub type Token = u64;

/// The answer to [`LockTable::acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    /// The lock is held.
    Granted,
    /// The request waits; a [`LockEvent`] with its token answers it (possibly one
    /// already queued by this same call).
    Waiting,
    /// The transaction is aborted in this table (now or before).
    Aborted(AbortReason),
    /// The transaction would hold more than `locks_per_txn_max` locks: nothing
    /// changed; the caller answers `invalid`.
    TooManyLocks,
    /// The table holds `txns_max` transactions: nothing changed; the caller answers
    /// `busy`.
    Full,
    /// The request breaks the lock protocol: the transaction already has a waiting
    /// request, or it has prepared (a prepared transaction takes no new lock), or it
    /// asks an exclusive range. Nothing changed; the caller answers `invalid`.
    Invalid,
}

/// What the table decided on its own, for the caller to act on.
///
/// Every waiting request is answered exactly once: by an event, or by the list
/// [`LockTable::clear`] returns. Every transaction the table aborts on its own gets
/// exactly one `Aborted` event, which also answers its waiting request if it had
/// one; except the requester of [`LockTable::acquire`], whose abort is the answer
/// (an event then only if it had a request waiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockEvent {
    /// A waiting request was granted.
    Granted {
        /// Its transaction.
        id: TxnId,
        /// The request's token.
        token: Token,
    },
    /// A transaction was aborted by the table (wounded, died at a grant, timed out,
    /// policy conflict), or a waiting request was ended by `abort`/`release`. The
    /// caller tells the transaction's client and other participants.
    Aborted {
        /// The transaction.
        id: TxnId,
        /// Why.
        reason: AbortReason,
        /// The waiting request this answers, if the transaction had one.
        token: Option<Token>,
    },
}

/// A transaction's state in this table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    /// Known, not prepared: it may be wounded or expire.
    Active,
    /// Prepared: it keeps its locks until released.
    Prepared,
    /// Aborted here (a tombstone): later requests answer this reason.
    Aborted(AbortReason),
}

/// Counters since the table was made (kept across [`LockTable::clear`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockStats {
    /// Requests answered [`Acquire::Granted`] at once (re-entrant ones included).
    pub granted_at_once: u64,
    /// Requests answered [`Acquire::Waiting`].
    pub waits: u64,
    /// Waiting requests granted later.
    pub grants_after_wait: u64,
    /// Total time the granted waiters waited, in milliseconds.
    pub wait_ms_total: u64,
    /// Transactions wounded (wound-wait).
    pub wounds: u64,
    /// Transactions that died (wait-die), as requesters or at a later grant.
    pub deaths: u64,
    /// Transactions aborted by a no-wait, OCC or mixed-policy conflict, or by a
    /// prepare record installed over their lock.
    pub conflicts: u64,
    /// Transactions aborted because a lock wait ran past `wait_ms_max`.
    pub timeouts: u64,
    /// Unprepared transactions aborted because they ran past `lifetime_ms`.
    pub lifetime_expiries: u64,
}

/// A lockable item, borrowed from a request or a stored lock.
#[derive(Debug, Clone, Copy)]
enum Item<'a> {
    Key(&'a [u8]),
    Range(&'a [u8], &'a [u8]),
}

impl Target {
    fn item(&self) -> Item<'_> {
        match self {
            Target::Key(key) => Item::Key(key),
            Target::Range { start, end } => Item::Range(start, end),
        }
    }
}

/// The locks of one key: holders by transaction, waiters oldest first. Never empty
/// in the table.
#[derive(Debug, Default)]
struct KeyLocks {
    holders: BTreeMap<TxnId, LockMode>,
    waiters: BTreeMap<Age, LockMode>,
}

impl KeyLocks {
    fn is_empty(&self) -> bool {
        self.holders.is_empty() && self.waiters.is_empty()
    }
}

/// A range lock, granted or waiting; ordered by start so a walk can stop early.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RangeLock {
    start: Vec<u8>,
    end: Vec<u8>,
    age: Age,
}

/// Why a waiter's request is checked again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Recheck {
    /// Only locks or waits next to it went (or turned from waits into holds): its
    /// conflict set shrank, so it still meets its policy and only a grant can
    /// follow. A cheap emptiness check, so a queue on a hot key costs `O(waiters)`
    /// per release instead of `O(waiters²)`.
    Freed,
    /// A lock or wait came next to it: the policy runs again in full (wait-die may
    /// kill it, a new policy may abort it).
    Hit,
}

/// Waiters to check again, oldest first.
type Dirty = BTreeMap<Age, Recheck>;

fn mark(dirty: &mut Dirty, age: Age, why: Recheck) {
    let entry = dirty.entry(age).or_insert(why);
    *entry = (*entry).max(why);
}

/// A waiting request.
#[derive(Debug)]
struct Wait {
    token: Token,
    target: Target,
    mode: LockMode,
    since_ms: u64,
}

/// One transaction's entry: what it holds (so release is `O(its locks)`) and what
/// it waits for.
#[derive(Debug)]
struct Txn {
    /// `start` from the caller, `id` always the transaction's own: ages are unique.
    age: Age,
    policy: Policy,
    begun_ms: u64,
    prepared: bool,
    keys: BTreeMap<Vec<u8>, LockMode>,
    ranges: BTreeSet<(Vec<u8>, Vec<u8>)>,
    waiting: Option<Wait>,
}

impl Txn {
    fn lock_count(&self) -> usize {
        self.keys.len() + self.ranges.len()
    }

    /// True when a held lock already covers the request.
    fn covers(&self, target: &Target, mode: LockMode) -> bool {
        match target {
            Target::Key(key) => self.keys.get(key).is_some_and(|held| *held >= mode),
            Target::Range { start, end } => self.ranges.contains(&(start.clone(), end.clone())),
        }
    }

    /// True when granting the request adds a lock (an upgrade does not).
    fn adds_lock(&self, target: &Target) -> bool {
        match target {
            Target::Key(key) => !self.keys.contains_key(key),
            Target::Range { .. } => true,
        }
    }
}

/// A member of a conflict set.
#[derive(Debug, Clone, Copy)]
struct Member {
    age: Age,
    policy: Policy,
    prepared: bool,
    /// A holder (else an older waiter).
    holder: bool,
}

/// What the policy says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Grant,
    Wait,
    Abort(AbortReason),
}

/// The core-local lock table of one shard leader.
#[derive(Debug)]
pub struct LockTable {
    cfg: LockConfig,
    txns: BTreeMap<TxnId, Txn>,
    keys: BTreeMap<Vec<u8>, KeyLocks>,
    ranges_granted: BTreeSet<RangeLock>,
    ranges_waiting: BTreeSet<RangeLock>,
    /// (wait start, txn) of every waiting request: the wait timeouts in order.
    wait_since: BTreeSet<(u64, TxnId)>,
    /// (begun, txn) of every unprepared transaction: the lifetimes in order.
    lifetimes: BTreeSet<(u64, TxnId)>,
    /// Aborted transactions: (insertion number, reason).
    tombstones: BTreeMap<TxnId, (u64, AbortReason)>,
    /// Tombstones by insertion number: the oldest is forgotten first.
    tombstone_order: BTreeMap<u64, TxnId>,
    tombstone_next: u64,
    events: Vec<LockEvent>,
    stats: LockStats,
}

fn incompatible(a: LockMode, b: LockMode) -> bool {
    a == LockMode::Exclusive || b == LockMode::Exclusive
}

fn range_covers(start: &[u8], end: &[u8], key: &[u8]) -> bool {
    key >= start && (end.is_empty() || key < end)
}

/// Map bounds over keys borrowed as byte slices.
type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The map bounds of `[start, end)`, or `None` for an empty range (`BTreeMap::range`
/// panics on an inverted one, and the bounds come from clients).
fn key_bounds<'a>(start: &'a [u8], end: &'a [u8]) -> Option<KeyBounds<'a>> {
    if end.is_empty() {
        Some((Bound::Included(start), Bound::Unbounded))
    } else if start < end {
        Some((Bound::Included(start), Bound::Excluded(end)))
    } else {
        None
    }
}

impl LockTable {
    /// An empty table.
    pub fn new(cfg: LockConfig) -> Self {
        assert!(cfg.locks_per_txn_max >= 1 && cfg.txns_max >= 1, "lock limits must allow one lock and one txn");
        LockTable {
            cfg,
            txns: BTreeMap::new(),
            keys: BTreeMap::new(),
            ranges_granted: BTreeSet::new(),
            ranges_waiting: BTreeSet::new(),
            wait_since: BTreeSet::new(),
            lifetimes: BTreeSet::new(),
            tombstones: BTreeMap::new(),
            tombstone_order: BTreeMap::new(),
            tombstone_next: 0,
            events: Vec::new(),
            stats: LockStats::default(),
        }
    }

    /// Asks for `target` in `mode` for `txn`, on behalf of the request `token`.
    ///
    /// In order: a tombstoned transaction answers `Aborted(reason)`; an exclusive
    /// range is `Invalid`; a new transaction beyond `txns_max` is `Full`; an
    /// unprepared transaction past its lifetime aborts (`timeout`); a transaction
    /// that already waits is `Invalid` (its waiting request stays: a client
    /// operation blocks, so a second one is a protocol error, not a reason to abort
    /// the transaction); a lock already held is `Granted`; a prepared transaction
    /// asking a new lock is `Invalid`; one lock too many is `TooManyLocks`;
    /// otherwise the policy decides (module header). Waiters freed or hit by this
    /// request are settled before returning.
    pub fn acquire(&mut self, txn: &TxnInfo, target: Target, mode: LockMode, token: Token, now_ms: u64) -> Acquire {
        let id = txn.id;
        if let Some(&(_, reason)) = self.tombstones.get(&id) {
            return Acquire::Aborted(reason);
        }
        if matches!(target, Target::Range { .. }) && mode == LockMode::Exclusive {
            return Acquire::Invalid;
        }
        if !self.txns.contains_key(&id) {
            if self.txns.len() >= self.cfg.txns_max {
                return Acquire::Full;
            }
            self.register(txn);
        }
        let mut dirty = Dirty::new();
        let state = self.txn(id);
        if !state.prepared && now_ms.saturating_sub(state.begun_ms) > self.cfg.lifetime_ms {
            // The answer tells the caller; an event only for a request that waited.
            self.stats.lifetime_expiries += 1;
            if let Some(token) = self.abort_txn(id, AbortReason::Timeout, &mut dirty) {
                self.events.push(LockEvent::Aborted { id, reason: AbortReason::Timeout, token: Some(token) });
            }
            self.settle(dirty, now_ms);
            return Acquire::Aborted(AbortReason::Timeout);
        }
        if state.waiting.is_some() {
            return Acquire::Invalid;
        }
        if state.covers(&target, mode) {
            self.stats.granted_at_once += 1;
            return Acquire::Granted;
        }
        if state.prepared {
            return Acquire::Invalid;
        }
        if state.adds_lock(&target) && state.lock_count() >= self.cfg.locks_per_txn_max {
            return Acquire::TooManyLocks;
        }
        let (age, policy) = (state.age, state.policy);
        let answer = match self.decide(age, policy, target.item(), mode, &mut dirty) {
            Decision::Grant => {
                // Every waiter this lock conflicts with is younger (an older one would
                // be in the conflict set): re-check it against its new older holder.
                self.stats.granted_at_once += 1;
                self.touch_waiters(id, target.item(), mode, Recheck::Hit, &mut dirty);
                self.insert_lock(age, target, mode);
                Acquire::Granted
            }
            Decision::Wait => {
                self.stats.waits += 1;
                self.touch_waiters(id, target.item(), mode, Recheck::Hit, &mut dirty);
                self.enqueue(age, Wait { token, target, mode, since_ms: now_ms });
                Acquire::Waiting
            }
            Decision::Abort(reason) => {
                let token = self.abort_txn(id, reason, &mut dirty);
                assert!(token.is_none(), "an aborted requester had no other waiting request");
                Acquire::Aborted(reason)
            }
        };
        self.settle(dirty, now_ms);
        answer
    }

    /// Marks `id` prepared, from the moment its prepare is proposed: it can no
    /// longer be wounded nor expire. False (nothing changed) if the transaction is
    /// unknown, aborted, or has a waiting request (a prepared transaction must
    /// never wait: that is what keeps wound-wait free of deadlocks).
    pub fn prepare(&mut self, id: TxnId) -> bool {
        let Some(txn) = self.txns.get_mut(&id) else {
            return false;
        };
        if txn.waiting.is_some() {
            return false;
        }
        if !txn.prepared {
            txn.prepared = true;
            self.lifetimes.remove(&(txn.begun_ms, id));
        }
        true
    }

    /// True when `id` holds, granted by this table: every key of `reads` shared or
    /// exclusive, every range of `ranges` (exactly as it was asked), and every key
    /// of `writes` exclusive. A waiting request is not a held lock.
    pub fn holds(&self, id: TxnId, reads: &[Vec<u8>], ranges: &[(Vec<u8>, Vec<u8>)], writes: &[Vec<u8>]) -> bool {
        let Some(txn) = self.txns.get(&id) else {
            return false;
        };
        reads.iter().all(|key| txn.keys.contains_key(key))
            && ranges.iter().all(|range| txn.ranges.contains(range))
            && writes.iter().all(|key| txn.keys.get(key) == Some(&LockMode::Exclusive))
    }

    /// Forgets `id` (its decision is applied or it finished): drops its locks and
    /// its wait; freed waiters may be granted (events). A request of it still
    /// waiting is answered `Aborted { reason: Conflict }`: only an abort can end a
    /// transaction that waits (a committing one has prepared, and a prepared one
    /// never waits); a caller that knows the reason calls [`LockTable::abort`].
    pub fn release(&mut self, id: TxnId, now_ms: u64) {
        let mut dirty = Dirty::new();
        if let Some(token) = self.remove_txn(id, &mut dirty) {
            self.events.push(LockEvent::Aborted { id, reason: AbortReason::Conflict, token: Some(token) });
        }
        self.settle(dirty, now_ms);
    }

    /// Aborts `id` for `reason`: drops its locks and its wait and keeps a tombstone,
    /// so a later [`LockTable::acquire`] answers `Aborted(reason)` and
    /// [`LockTable::prepare`] false, even for an id never seen here. A waiting
    /// request is answered by an `Aborted` event with its token. The caller's
    /// decision: it works on prepared transactions too (an abort decision), which
    /// the table never aborts on its own. An existing tombstone keeps its reason.
    pub fn abort(&mut self, id: TxnId, reason: AbortReason, now_ms: u64) {
        let mut dirty = Dirty::new();
        if let Some(token) = self.abort_txn(id, reason, &mut dirty) {
            self.events.push(LockEvent::Aborted { id, reason, token: Some(token) });
        }
        self.settle(dirty, now_ms);
    }

    /// True when `id` has a request waiting here.
    pub fn is_waiting(&self, id: TxnId) -> bool {
        self.txns.get(&id).is_some_and(|txn| txn.waiting.is_some())
    }

    /// The state of `id` here; `None` if unknown (never seen, released, or its
    /// tombstone forgotten).
    pub fn state(&self, id: TxnId) -> Option<TxnState> {
        if let Some(&(_, reason)) = self.tombstones.get(&id) {
            return Some(TxnState::Aborted(reason));
        }
        self.txns.get(&id).map(|txn| if txn.prepared { TxnState::Prepared } else { TxnState::Active })
    }

    /// A new leader rebuilds a prepared transaction from its replicated prepare
    /// record: its locks are granted at once, without a conflict check against other
    /// prepared transactions, and it is marked prepared. Bounds do not apply (the
    /// record is already replicated), and a tombstone of it here is dropped (the
    /// replicated record wins). An unprepared transaction holding a lock the record
    /// conflicts with is aborted (`conflict`, event); waiters next to the installed
    /// locks are settled again.
    ///
    /// Precondition (asserted): the transaction has no waiting request here. Records
    /// are installed when leadership starts, before requests are served, and a
    /// transaction reaches prepare only through [`LockTable::prepare`], which refuses
    /// while it waits.
    pub fn install_prepared(
        &mut self,
        txn: &TxnInfo,
        reads: &[Vec<u8>],
        ranges: &[(Vec<u8>, Vec<u8>)],
        writes: &[Vec<u8>],
        now_ms: u64,
    ) {
        let id = txn.id;
        if let Some((number, _)) = self.tombstones.remove(&id) {
            self.tombstone_order.remove(&number);
        }
        if !self.txns.contains_key(&id) {
            self.register(txn);
        }
        let entry = self.txns.get_mut(&id).expect("registered above");
        assert!(entry.waiting.is_none(), "install_prepared of {id}, which has a waiting request");
        entry.prepared = true;
        let age = entry.age;
        self.lifetimes.remove(&(entry.begun_ms, id));
        let mut dirty = Dirty::new();
        let shared = reads.iter().map(|key| (Target::Key(key.clone()), LockMode::Shared));
        let scans = ranges
            .iter()
            .map(|(start, end)| (Target::Range { start: start.clone(), end: end.clone() }, LockMode::Shared));
        let exclusive = writes.iter().map(|key| (Target::Key(key.clone()), LockMode::Exclusive));
        for (target, mode) in shared.chain(scans).chain(exclusive) {
            if self.txn(id).covers(&target, mode) {
                continue;
            }
            let losers: BTreeSet<TxnId> = self
                .conflicts(age, target.item(), mode)
                .into_iter()
                .filter(|member| member.holder && !member.prepared)
                .map(|member| member.age.id)
                .collect();
            for loser in losers {
                self.stats.conflicts += 1;
                self.abort_and_report(loser, AbortReason::Conflict, &mut dirty);
            }
            self.touch_waiters(id, target.item(), mode, Recheck::Hit, &mut dirty);
            self.insert_lock(age, target, mode);
        }
        self.settle(dirty, now_ms);
    }

    /// Applies time: a request waiting longer than `wait_ms_max` aborts its
    /// transaction (`timeout`, event with its token); an unprepared transaction
    /// that began longer than `lifetime_ms` ago aborts (`timeout`, event). Freed
    /// waiters may be granted.
    pub fn tick(&mut self, now_ms: u64) {
        let mut dirty = Dirty::new();
        while let Some(&(since_ms, id)) = self.wait_since.first() {
            if now_ms.saturating_sub(since_ms) <= self.cfg.wait_ms_max {
                break;
            }
            self.stats.timeouts += 1;
            self.abort_and_report(id, AbortReason::Timeout, &mut dirty);
        }
        while let Some(&(begun_ms, id)) = self.lifetimes.first() {
            if now_ms.saturating_sub(begun_ms) <= self.cfg.lifetime_ms {
                break;
            }
            self.stats.lifetime_expiries += 1;
            self.abort_and_report(id, AbortReason::Timeout, &mut dirty);
        }
        self.settle(dirty, now_ms);
    }

    /// The events since the last call, in the order they happened. The caller takes
    /// them after every call that changes the table.
    pub fn take_events(&mut self) -> Vec<LockEvent> {
        std::mem::take(&mut self.events)
    }

    /// Leadership lost: every transaction, lock and wait is dropped. Returns the
    /// waiting requests, oldest transaction first, for the caller to answer.
    /// Tombstones, stats and events not yet taken are kept.
    pub fn clear(&mut self) -> Vec<(TxnId, Token)> {
        let mut waiting: Vec<(Age, Token)> =
            self.txns.values().filter_map(|txn| txn.waiting.as_ref().map(|wait| (txn.age, wait.token))).collect();
        waiting.sort();
        self.txns.clear();
        self.keys.clear();
        self.ranges_granted.clear();
        self.ranges_waiting.clear();
        self.wait_since.clear();
        self.lifetimes.clear();
        waiting.into_iter().map(|(age, token)| (age.id, token)).collect()
    }

    /// The counters.
    pub fn stats(&self) -> LockStats {
        self.stats
    }

    /// True when no transaction holds or waits for a lock (tombstones aside).
    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    /// Active transactions (prepared included, tombstones not).
    pub fn txn_count(&self) -> usize {
        self.txns.len()
    }

    fn register(&mut self, info: &TxnInfo) {
        let age = Age { start: info.age.start, id: info.id };
        let txn = Txn {
            age,
            policy: info.policy,
            begun_ms: info.begun_ms,
            prepared: false,
            keys: BTreeMap::new(),
            ranges: BTreeSet::new(),
            waiting: None,
        };
        self.lifetimes.insert((info.begun_ms, info.id));
        self.txns.insert(info.id, txn);
    }

    fn txn(&self, id: TxnId) -> &Txn {
        self.txns.get(&id).expect("a lock's or waiter's txn is in the table")
    }

    fn txn_mut(&mut self, id: TxnId) -> &mut Txn {
        self.txns.get_mut(&id).expect("a lock's or waiter's txn is in the table")
    }

    fn member(&self, id: TxnId, holder: bool) -> Member {
        let txn = self.txn(id);
        Member { age: txn.age, policy: txn.policy, prepared: txn.prepared, holder }
    }

    /// The conflict set of a request by the transaction of `age`: incompatible
    /// holders of other transactions and incompatible older waiters. A transaction
    /// may appear twice (holder and waiter).
    fn conflicts(&self, age: Age, item: Item<'_>, mode: LockMode) -> Vec<Member> {
        let mut members = Vec::new();
        let _ = self.visit_conflicts(age, item, mode, |id, holder| {
            members.push(self.member(id, holder));
            ControlFlow::Continue(())
        });
        members
    }

    /// True when the request's conflict set is not empty; stops at the first member.
    fn has_conflict(&self, age: Age, item: Item<'_>, mode: LockMode) -> bool {
        self.visit_conflicts(age, item, mode, |_, _| ControlFlow::Break(())).is_break()
    }

    /// Calls `visit(txn, is_holder)` for each member of the conflict set (holders
    /// first), until it breaks.
    fn visit_conflicts<F>(&self, age: Age, item: Item<'_>, mode: LockMode, mut visit: F) -> ControlFlow<()>
    where
        F: FnMut(TxnId, bool) -> ControlFlow<()>,
    {
        let id = age.id;
        match item {
            Item::Key(key) => {
                if let Some(locks) = self.keys.get(key) {
                    for (&holder, &held) in &locks.holders {
                        if holder != id && incompatible(mode, held) {
                            visit(holder, true)?;
                        }
                    }
                    for (&waiter, &wanted) in locks.waiters.range(..age) {
                        if incompatible(mode, wanted) {
                            visit(waiter.id, false)?;
                        }
                    }
                }
                if mode == LockMode::Exclusive {
                    for (set, holder) in [(&self.ranges_granted, true), (&self.ranges_waiting, false)] {
                        for range in set.iter().take_while(|range| range.start.as_slice() <= key) {
                            let counts = if holder { range.age.id != id } else { range.age < age };
                            if counts && range_covers(&range.start, &range.end, key) {
                                visit(range.age.id, holder)?;
                            }
                        }
                    }
                }
            }
            Item::Range(start, end) => {
                let Some(bounds) = key_bounds(start, end) else {
                    return ControlFlow::Continue(());
                };
                for locks in self.keys.range::<[u8], _>(bounds).map(|(_, locks)| locks) {
                    for (&holder, &held) in &locks.holders {
                        if holder != id && held == LockMode::Exclusive {
                            visit(holder, true)?;
                        }
                    }
                    for (&waiter, &wanted) in locks.waiters.range(..age) {
                        if wanted == LockMode::Exclusive {
                            visit(waiter.id, false)?;
                        }
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// Marks in `dirty`, for `why`, every waiter (of another transaction than `id`)
    /// whose request conflicts with `item` in `mode`: its conflict set changes when
    /// such a lock or wait comes or goes.
    fn touch_waiters(&self, id: TxnId, item: Item<'_>, mode: LockMode, why: Recheck, dirty: &mut Dirty) {
        match item {
            Item::Key(key) => {
                if let Some(locks) = self.keys.get(key) {
                    for (&waiter, &wanted) in &locks.waiters {
                        if waiter.id != id && incompatible(mode, wanted) {
                            mark(dirty, waiter, why);
                        }
                    }
                }
                if mode == LockMode::Exclusive {
                    for range in self.ranges_waiting.iter().take_while(|range| range.start.as_slice() <= key) {
                        if range.age.id != id && range_covers(&range.start, &range.end, key) {
                            mark(dirty, range.age, why);
                        }
                    }
                }
            }
            Item::Range(start, end) => {
                let Some(bounds) = key_bounds(start, end) else {
                    return;
                };
                for locks in self.keys.range::<[u8], _>(bounds).map(|(_, locks)| locks) {
                    for (&waiter, &wanted) in &locks.waiters {
                        if waiter.id != id && wanted == LockMode::Exclusive {
                            mark(dirty, waiter, why);
                        }
                    }
                }
            }
        }
    }

    /// Applies the requester's policy to its conflict set. Wound-wait wounds here;
    /// the victims' neighbours go to `dirty`.
    fn decide(&mut self, age: Age, policy: Policy, item: Item<'_>, mode: LockMode, dirty: &mut Dirty) -> Decision {
        let members = self.conflicts(age, item, mode);
        if members.is_empty() {
            return Decision::Grant;
        }
        if members.iter().any(|member| member.policy != policy) {
            self.stats.conflicts += 1;
            return Decision::Abort(AbortReason::Conflict);
        }
        match policy {
            Policy::NoWait | Policy::Occ => {
                self.stats.conflicts += 1;
                Decision::Abort(AbortReason::Conflict)
            }
            Policy::WaitDie => {
                if members.iter().any(|member| member.age < age) {
                    self.stats.deaths += 1;
                    Decision::Abort(AbortReason::Died)
                } else {
                    Decision::Wait
                }
            }
            Policy::WoundWait => {
                let victims: BTreeSet<TxnId> = members
                    .iter()
                    .filter(|member| member.holder && !member.prepared && age < member.age)
                    .map(|member| member.age.id)
                    .collect();
                let blocked = members.iter().any(|member| !victims.contains(&member.age.id));
                for victim in victims {
                    self.stats.wounds += 1;
                    self.abort_and_report(victim, AbortReason::Wounded, dirty);
                }
                if blocked { Decision::Wait } else { Decision::Grant }
            }
        }
    }

    /// Re-checks the waiters in `dirty`, oldest first, until none is left: grants,
    /// deaths and wounds mark the waiters next to them.
    fn settle(&mut self, mut dirty: Dirty, now_ms: u64) {
        while let Some((queued, why)) = dirty.pop_first() {
            let Some(txn) = self.txns.get_mut(&queued.id) else {
                continue;
            };
            let (age, policy) = (txn.age, txn.policy);
            // Taken out while the policy runs (it only reads other transactions),
            // so the target need not be cloned; put back unless granted.
            let Some(wait) = txn.waiting.take() else {
                continue;
            };
            let decision = match why {
                Recheck::Freed if self.has_conflict(age, wait.target.item(), wait.mode) => Decision::Wait,
                Recheck::Freed => Decision::Grant,
                Recheck::Hit => self.decide(age, policy, wait.target.item(), wait.mode, &mut dirty),
            };
            match decision {
                Decision::Grant => self.grant_waiter(age, wait, now_ms),
                Decision::Wait => self.txn_mut(age.id).waiting = Some(wait),
                Decision::Abort(reason) => {
                    self.txn_mut(age.id).waiting = Some(wait);
                    self.abort_and_report(age.id, reason, &mut dirty);
                }
            }
        }
    }

    fn grant_waiter(&mut self, age: Age, wait: Wait, now_ms: u64) {
        let id = age.id;
        self.wait_since.remove(&(wait.since_ms, id));
        self.stats.grants_after_wait += 1;
        self.stats.wait_ms_total += now_ms.saturating_sub(wait.since_ms);
        self.unqueue(age, &wait.target);
        self.insert_lock(age, wait.target, wait.mode);
        self.events.push(LockEvent::Granted { id, token: wait.token });
    }

    /// Records a granted lock in the key or range index and in its transaction.
    fn insert_lock(&mut self, age: Age, target: Target, mode: LockMode) {
        let id = age.id;
        match target {
            Target::Key(key) => {
                let held = self.keys.entry(key.clone()).or_default().holders.entry(id).or_insert(mode);
                *held = (*held).max(mode);
                let held = *held;
                self.txn_mut(id).keys.insert(key, held);
            }
            Target::Range { start, end } => {
                self.txn_mut(id).ranges.insert((start.clone(), end.clone()));
                self.ranges_granted.insert(RangeLock { start, end, age });
            }
        }
    }

    fn enqueue(&mut self, age: Age, wait: Wait) {
        match &wait.target {
            Target::Key(key) => {
                self.keys.entry(key.clone()).or_default().waiters.insert(age, wait.mode);
            }
            Target::Range { start, end } => {
                self.ranges_waiting.insert(RangeLock { start: start.clone(), end: end.clone(), age });
            }
        }
        self.wait_since.insert((wait.since_ms, age.id));
        let txn = self.txn_mut(age.id);
        assert!(txn.waiting.is_none(), "a transaction waits for one request at a time");
        txn.waiting = Some(wait);
    }

    /// Drops a waiting request from the key or range index.
    fn unqueue(&mut self, age: Age, target: &Target) {
        match target {
            Target::Key(key) => {
                let locks = self.keys.get_mut(key.as_slice()).expect("a waiter's key is in the table");
                locks.waiters.remove(&age);
                if locks.is_empty() {
                    self.keys.remove(key.as_slice());
                }
            }
            Target::Range { start, end } => {
                let removed = self.ranges_waiting.remove(&RangeLock { start: start.clone(), end: end.clone(), age });
                assert!(removed, "a waiting range is indexed");
            }
        }
    }

    /// Removes `id` with its locks and its wait, adding the waiters next to them to
    /// `dirty`. Returns the token of its waiting request.
    fn remove_txn(&mut self, id: TxnId, dirty: &mut Dirty) -> Option<Token> {
        let txn = self.txns.remove(&id)?;
        self.lifetimes.remove(&(txn.begun_ms, id));
        let token = txn.waiting.map(|wait| {
            self.wait_since.remove(&(wait.since_ms, id));
            self.unqueue(txn.age, &wait.target);
            self.touch_waiters(id, wait.target.item(), wait.mode, Recheck::Freed, dirty);
            wait.token
        });
        for (key, mode) in txn.keys {
            let locks = self.keys.get_mut(&key).expect("a held key is in the table");
            locks.holders.remove(&id);
            if locks.is_empty() {
                self.keys.remove(&key);
            }
            self.touch_waiters(id, Item::Key(&key), mode, Recheck::Freed, dirty);
        }
        for (start, end) in txn.ranges {
            self.touch_waiters(id, Item::Range(&start, &end), LockMode::Shared, Recheck::Freed, dirty);
            let removed = self.ranges_granted.remove(&RangeLock { start, end, age: txn.age });
            assert!(removed, "a held range is indexed");
        }
        token
    }

    /// Removes `id` and keeps its tombstone. Returns the token of its waiting
    /// request.
    fn abort_txn(&mut self, id: TxnId, reason: AbortReason, dirty: &mut Dirty) -> Option<Token> {
        let token = self.remove_txn(id, dirty);
        if !self.tombstones.contains_key(&id) {
            let number = self.tombstone_next;
            self.tombstone_next += 1;
            self.tombstones.insert(id, (number, reason));
            self.tombstone_order.insert(number, id);
            while self.tombstones.len() > self.cfg.txns_max {
                let (_, oldest) = self.tombstone_order.pop_first().expect("more tombstones than zero");
                self.tombstones.remove(&oldest);
            }
        }
        token
    }

    /// Aborts `id` on the table's own decision and tells the caller.
    fn abort_and_report(&mut self, id: TxnId, reason: AbortReason, dirty: &mut Dirty) {
        let token = self.abort_txn(id, reason, dirty);
        self.events.push(LockEvent::Aborted { id, reason, token });
    }
}

#[cfg(test)]
mod tests;
