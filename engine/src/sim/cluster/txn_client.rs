//! Simulated transactional clients: bank transfers between accounts spread over
//! the shards, and read-only audits of every account at a version.
//!
//! One transaction at a time per client. A transfer reads both accounts (shared
//! locks under two-phase locking), asks exclusive locks for both (none under OCC),
//! then commits at the anchor (the first account's shard) with its read versions
//! and new balances; one account, or two on one shard, commit in one phase. An
//! audit reads every account at one version (the highest this client has seen)
//! with plain reads at that version: a read-only transaction without locks.
//! Every other audit is a read-write transaction instead: it scans the accounts'
//! key range on every shard (shared range locks under two-phase locking, the
//! ranges validated at commit under OCC) and commits with no writes, so a
//! transfer that slipped into a scanned range before the commit would show.
//! Balances start absent (0) and transfers move amounts, so every audit must sum
//! to 0.
//!
//! Each step is retried like the key-value client's requests (NotLeader follows
//! the hint, silence rotates to the next replica, Busy waits); the commit is
//! retried with the same write tag, so it is decided once. An `aborted` answer
//! ends the attempt: its locks are released with `TxnAbort` to every shard it
//! touched, and the transfer is tried again as a new attempt (wait-die keeps the
//! first attempt's start version, so it ages) up to a bound. Every attempt is
//! recorded for the serializability checker: committed, aborted, or unknown when
//! the commit's outcome never came.

use std::collections::{BTreeMap, BTreeSet};

use corekv_rpc::kv::{
    ClientId, OkReply, Outcome, ReadOp, Request, RequestBody, Response, ShardId, ShardSets, TxnReadOp, Version,
    WriteTag,
};
use corekv_rpc::map::{ClusterMap, Replica};
use corekv_rpc::raft::NodeId;
use corekv_rpc::txn::{AbortReason, Age, Policy, RangeItem, ReadItem, TxnId, TxnMeta, TxnSets, WriteItem};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::client::Attempt;
use crate::check::serial;

/// Attempts of one transfer before it is given up (aborted attempts stay in the
/// history).
const ATTEMPTS_MAX: u32 = 4;
/// One audit in this many transactions.
const AUDIT_EVERY: u64 = 5;
/// The accounts' key range (`acct<n>`), for the scanning audits.
const ACCOUNTS_START: &[u8] = b"acct";
const ACCOUNTS_END: &[u8] = b"acct:";
/// Keys a scanning audit asks one shard for at a time.
const SCAN_PAGE: u32 = 3;

/// What a transactional client does next.
#[derive(Debug)]
pub enum TxnNext {
    /// Nothing (a stale answer or timer).
    Nothing,
    /// Send again after `after_us` unless `attempt` is no longer current.
    RetryAfter {
        /// The pause.
        after_us: u64,
        /// The step's latest attempt.
        attempt: u64,
    },
    /// Send this now.
    Send(Attempt),
    /// A transaction attempt ended: its history record, the lock releases to send
    /// (fire and forget), and whether the client starts another one now.
    Ended {
        /// The record.
        record: serial::Txn,
        /// `TxnAbort` requests for the shards it touched.
        releases: Vec<Attempt>,
        /// An audit that did not sum to zero: the bank lost or made money.
        audit_total: Option<i64>,
        /// The next attempt of the same transfer, if it is retried.
        retry: Option<Attempt>,
    },
    /// The cluster answered something a correct node never answers.
    Broken(String),
}

#[derive(Debug, Clone)]
enum Step {
    Read(Vec<u8>),
    /// A read under an exclusive lock, taken with it (no `Lock` step follows).
    ReadForUpdate(Vec<u8>),
    Lock(Vec<u8>),
    Commit,
    AuditGet(Vec<u8>, Version),
    /// A scanning audit's page of one shard's accounts, from this key.
    Scan(ShardId, Vec<u8>),
}

#[derive(Debug)]
struct Running {
    meta: TxnMeta,
    record_id: u64,
    audit_at: Option<Version>,
    from: Vec<u8>,
    to: Vec<u8>,
    amount: i64,
    steps: Vec<Step>,
    step: usize,
    reads: BTreeMap<Vec<u8>, (Version, Option<Vec<u8>>)>,
    /// A scanning audit's ranges read, per shard.
    ranges: Vec<(ShardId, RangeItem)>,
    scan_audit: bool,
    touched: BTreeSet<ShardId>,
    tag: Option<WriteTag>,
    request: Request,
    attempts: Vec<u64>,
    target: NodeId,
    asked: NodeId,
    invoke_us: u64,
    deadline_us: u64,
    tries: u32,
}

/// Counters of the transactional clients.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TxnStats {
    /// Transfers committed.
    pub committed: u64,
    /// Attempts aborted, any reason.
    pub aborted: u64,
    /// Attempts whose commit outcome never came.
    pub unknown: u64,
    /// Audits finished (read-only at a version, and scanning).
    pub audits: u64,
    /// Scanning audits committed.
    pub scan_audits: u64,
    /// Attempts sent beyond the first of a step.
    pub retries: u64,
}

/// One simulated transactional client.
#[derive(Debug)]
pub struct TxnClient {
    index: u64,
    id: ClientId,
    policy: Policy,
    next_txn_attempt: u64,
    next_seq: u64,
    next_attempt: u64,
    started: u64,
    seen: Version,
    leader_of: BTreeMap<ShardId, NodeId>,
    running: Option<Running>,
    /// Counters.
    pub stats: TxnStats,
}

/// A value's hash for the checker.
fn hash(value: &[u8]) -> u64 {
    value.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// A scanning audit: the accounts' range on every shard, then the commit.
fn scan_steps(map: &ClusterMap) -> Vec<Step> {
    (0..map.shard_count()).map(|s| Step::Scan(s, ACCOUNTS_START.to_vec())).chain([Step::Commit]).collect()
}

fn balance(value: Option<&Vec<u8>>) -> Result<i64, String> {
    match value {
        None => Ok(0),
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("an account holds {v:?}, not a balance")),
    }
}

impl TxnClient {
    /// A client numbered `index` (its history ids start at `index << 32`).
    pub fn new(index: u64, policy: Policy, rng: &mut ChaCha8Rng) -> TxnClient {
        TxnClient {
            index,
            id: ClientId::from_u128(rng.random::<u128>()),
            policy,
            next_txn_attempt: 1,
            next_seq: 1,
            next_attempt: 1,
            started: 0,
            seen: 0,
            leader_of: BTreeMap::new(),
            running: None,
            stats: TxnStats::default(),
        }
    }

    /// True while a transaction runs.
    pub fn busy(&self) -> bool {
        self.running.is_some()
    }

    /// Starts the next transaction: a transfer between two random accounts, or
    /// now and then an audit of all of them.
    pub fn start(
        &mut self,
        rng: &mut ChaCha8Rng,
        map: &ClusterMap,
        accounts: &[Vec<u8>],
        now_us: u64,
        deadline_us: u64,
    ) -> Attempt {
        self.started += 1;
        let start = self.seen.max(now_us << 16);
        let age_start = start;
        if self.started.is_multiple_of(2 * AUDIT_EVERY) {
            let steps = scan_steps(map);
            let attempt = self.begin(map, age_start, None, Vec::new(), Vec::new(), 0, steps, 1, now_us, deadline_us);
            self.running.as_mut().expect("just begun").scan_audit = true;
            return attempt;
        }
        if self.started.is_multiple_of(AUDIT_EVERY) && self.seen > 0 {
            let at = self.seen;
            let steps = accounts.iter().map(|k| Step::AuditGet(k.clone(), at)).collect();
            return self.begin(map, age_start, Some(at), Vec::new(), Vec::new(), 0, steps, 1, now_us, deadline_us);
        }
        let a = rng.random_range(0..accounts.len());
        let mut b = rng.random_range(0..accounts.len() - 1);
        if b >= a {
            b += 1;
        }
        let amount = rng.random_range(1..100i64);
        let (from, to) = (accounts[a].clone(), accounts[b].clone());
        let steps = self.transfer_steps(&from, &to);
        self.begin(map, age_start, None, from, to, amount, steps, 1, now_us, deadline_us)
    }

    fn transfer_steps(&self, from: &[u8], to: &[u8]) -> Vec<Step> {
        // Half the transfers (by the paying account) read for update, the others
        // read under shared locks and upgrade: both lock paths run under faults.
        if from.last().is_some_and(|b| b % 2 == 1) {
            return vec![Step::ReadForUpdate(from.to_vec()), Step::ReadForUpdate(to.to_vec()), Step::Commit];
        }
        let mut steps = vec![Step::Read(from.to_vec()), Step::Read(to.to_vec())];
        if self.policy != Policy::Occ {
            steps.push(Step::Lock(from.to_vec()));
            steps.push(Step::Lock(to.to_vec()));
        }
        steps.push(Step::Commit);
        steps
    }

    #[allow(clippy::too_many_arguments)]
    fn begin(
        &mut self,
        map: &ClusterMap,
        age_start: Version,
        audit_at: Option<Version>,
        from: Vec<u8>,
        to: Vec<u8>,
        amount: i64,
        steps: Vec<Step>,
        tries: u32,
        now_us: u64,
        deadline_us: u64,
    ) -> Attempt {
        let id = TxnId { client: self.id, attempt: self.next_txn_attempt };
        self.next_txn_attempt += 1;
        let meta = TxnMeta { id, age: Age { start: age_start, id }, policy: self.policy, attempt_ts: now_us << 16 };
        let record_id = (self.index << 32) | id.attempt;
        let placeholder = Request { shard: 0, epoch: map.epoch, body: RequestBody::TxnAbort { txn: id } };
        self.running = Some(Running {
            meta,
            record_id,
            audit_at,
            from,
            to,
            amount,
            steps,
            step: 0,
            reads: BTreeMap::new(),
            ranges: Vec::new(),
            scan_audit: false,
            touched: BTreeSet::new(),
            tag: None,
            request: placeholder,
            attempts: Vec::new(),
            target: 0,
            asked: 0,
            invoke_us: now_us,
            deadline_us,
            tries,
        });
        self.step_request(map);
        self.attempt(map, None)
    }

    /// Builds the current step's request.
    fn step_request(&mut self, map: &ClusterMap) {
        let r = self.running.as_mut().expect("running");
        let txn = r.meta;
        let (shard, body) = match r.steps[r.step].clone() {
            Step::Read(key) => (map.shard_of(&key), RequestBody::TxnRead { txn, op: TxnReadOp::Get { key } }),
            Step::ReadForUpdate(key) => {
                (map.shard_of(&key), RequestBody::TxnRead { txn, op: TxnReadOp::GetForUpdate { key } })
            }
            Step::Lock(key) => (map.shard_of(&key), RequestBody::TxnLock { txn, key }),
            Step::AuditGet(key, at) => (map.shard_of(&key), RequestBody::Read(ReadOp::Get { key, at: Some(at) })),
            Step::Scan(shard, start) => {
                let op = TxnReadOp::Scan { start, end: ACCOUNTS_END.to_vec(), limit: SCAN_PAGE };
                (shard, RequestBody::TxnRead { txn, op })
            }
            Step::Commit if r.scan_audit => {
                let mut sets: BTreeMap<ShardId, TxnSets> = BTreeMap::new();
                for (shard, range) in &r.ranges {
                    sets.entry(*shard).or_default().ranges.push(range.clone());
                }
                let anchor = *sets.keys().next().expect("a scanning audit scans every shard");
                let shards = sets.into_iter().map(|(shard, sets)| ShardSets { shard, sets }).collect();
                let seq = self.next_seq;
                self.next_seq += 1;
                let tag = *r.tag.get_or_insert(WriteTag { client: self.id, seq, acked: seq - 1 });
                (anchor, RequestBody::TxnCommit { txn, tag, shards })
            }
            Step::Commit => {
                let mut sets: BTreeMap<ShardId, TxnSets> = BTreeMap::new();
                let (va, a) = r.reads[&r.from].clone();
                let (vb, b) = r.reads[&r.to].clone();
                let (a, b) = (balance(a.as_ref()).unwrap_or(0), balance(b.as_ref()).unwrap_or(0));
                for (key, version, value) in [(&r.from, va, a - r.amount), (&r.to, vb, b + r.amount)] {
                    let s = sets.entry(map.shard_of(key)).or_default();
                    s.reads.push(ReadItem { key: key.clone(), version });
                    s.writes.push(WriteItem { key: key.clone(), value: Some(value.to_string().into_bytes()) });
                }
                let shards = sets.into_iter().map(|(shard, sets)| ShardSets { shard, sets }).collect();
                let seq = self.next_seq;
                self.next_seq += 1;
                let tag = *r.tag.get_or_insert(WriteTag { client: self.id, seq, acked: seq - 1 });
                (map.shard_of(&r.from), RequestBody::TxnCommit { txn, tag, shards })
            }
        };
        if !matches!(r.steps[r.step], Step::AuditGet(..)) {
            r.touched.insert(shard);
        }
        r.request = Request { shard, epoch: map.epoch, body };
        r.attempts.clear();
        r.target = self.leader_of.get(&shard).copied().unwrap_or_else(|| map.replicas(shard)[0].node);
    }

    fn attempt(&mut self, map: &ClusterMap, rotate: Option<()>) -> Attempt {
        let r = self.running.as_mut().expect("running");
        let shard = r.request.shard;
        let replicas: Vec<Replica> = map.members(shard).copied().collect();
        if rotate.is_some() {
            let at = replicas.iter().position(|x| x.node == r.asked).unwrap_or(0);
            r.target = replicas[(at + 1) % replicas.len()].node;
            self.leader_of.insert(shard, r.target);
        }
        let to = replicas.iter().copied().find(|x| x.node == r.target).unwrap_or(replicas[0]);
        if !r.attempts.is_empty() {
            self.stats.retries += 1;
        }
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        r.attempts.push(attempt);
        r.asked = to.node;
        Attempt { to, attempt, request: r.request.clone() }
    }

    fn is_latest(&self, attempt: u64) -> bool {
        self.running.as_ref().is_some_and(|r| r.attempts.last() == Some(&attempt))
    }

    fn is_current(&self, attempt: u64) -> bool {
        self.running.as_ref().is_some_and(|r| r.attempts.contains(&attempt))
    }

    /// The step's latest attempt got no answer in time.
    pub fn on_timeout(&mut self, attempt: u64, map: &ClusterMap, now_us: u64) -> TxnNext {
        if !self.is_latest(attempt) {
            return TxnNext::Nothing;
        }
        if let Some(ended) = self.expire_if_due(map, now_us) {
            return ended;
        }
        TxnNext::Send(self.attempt(map, Some(())))
    }

    /// A retry's pause is over.
    pub fn on_retry(&mut self, attempt: u64, map: &ClusterMap, now_us: u64) -> TxnNext {
        if !self.is_latest(attempt) {
            return TxnNext::Nothing;
        }
        if let Some(ended) = self.expire_if_due(map, now_us) {
            return ended;
        }
        TxnNext::Send(self.attempt(map, None))
    }

    fn expire_if_due(&mut self, map: &ClusterMap, now_us: u64) -> Option<TxnNext> {
        let r = self.running.as_ref()?;
        if now_us < r.deadline_us {
            return None;
        }
        // A commit sent may have been decided: unknown. Anything earlier: aborted
        // (nothing was committed; the locks are released).
        let committing = matches!(r.steps[r.step], Step::Commit);
        let outcome = if committing { serial::TxnOutcome::Unknown } else { serial::TxnOutcome::Aborted };
        Some(self.end(map, outcome, None, now_us, false))
    }

    /// An answer to `attempt` arrived.
    pub fn on_reply(&mut self, attempt: u64, response: Response, map: &ClusterMap, now_us: u64) -> TxnNext {
        if !self.is_current(attempt) {
            return TxnNext::Nothing;
        }
        let latest = self.is_latest(attempt);
        let retry = |after_us| TxnNext::RetryAfter { after_us, attempt };
        match response {
            Response::Outcome(outcome) => self.on_outcome(outcome, latest, attempt, map, now_us),
            _ if !latest => TxnNext::Nothing,
            Response::NotLeader { hint } => {
                let r = self.running.as_mut().expect("running");
                let shard = r.request.shard;
                if hint != 0 && map.core_of(shard, hint).is_some() && hint != r.asked {
                    r.target = hint;
                    self.leader_of.insert(shard, hint);
                    retry(0)
                } else {
                    let replicas: Vec<Replica> = map.members(shard).copied().collect();
                    let at = replicas.iter().position(|x| x.node == r.asked).unwrap_or(0);
                    r.target = replicas[(at + 1) % replicas.len()].node;
                    retry(2_000)
                }
            }
            Response::WrongShard { .. } => retry(1_000),
            Response::Busy => retry(10_000),
        }
    }

    fn on_outcome(&mut self, outcome: Outcome, latest: bool, attempt: u64, map: &ClusterMap, now_us: u64) -> TxnNext {
        let r = self.running.as_mut().expect("running");
        let step = r.steps[r.step].clone();
        match (step, outcome) {
            (_, Outcome::Invalid { message }) => {
                TxnNext::Broken(format!("a transaction step answered invalid: {message}"))
            }
            (_, Outcome::Indeterminate | Outcome::Unavailable) if !latest => TxnNext::Nothing,
            (_, Outcome::Indeterminate | Outcome::Unavailable) => TxnNext::RetryAfter { after_us: 5_000, attempt },
            (_, Outcome::Aborted { reason }) => {
                let retryable = !matches!(reason, AbortReason::Requested);
                self.end(map, serial::TxnOutcome::Aborted, None, now_us, retryable)
            }
            (Step::Read(key) | Step::ReadForUpdate(key), Outcome::Ok(OkReply::TxnValue { version, value })) => {
                self.seen = self.seen.max(version);
                r.reads.insert(key, (version, value));
                self.advance(map, now_us)
            }
            (Step::Lock(_), Outcome::Ok(OkReply::Done)) => self.advance(map, now_us),
            (Step::Scan(shard, start), Outcome::Ok(OkReply::TxnScan { items, resume, read_ts })) => {
                self.seen = self.seen.max(read_ts);
                let range = RangeItem { start: start.clone(), end: ACCOUNTS_END.to_vec(), read_ts };
                r.ranges.push((shard, range));
                for item in items {
                    if map.shard_of(&item.key) != shard
                        || !(ACCOUNTS_START..ACCOUNTS_END).contains(&item.key.as_slice())
                    {
                        return TxnNext::Broken(format!("shard {shard} scanned {:?}", item.key));
                    }
                    r.reads.insert(item.key, (item.version, Some(item.value)));
                }
                match resume {
                    Some(next) if next <= start => {
                        return TxnNext::Broken(format!("shard {shard}'s scan made no progress"));
                    }
                    Some(next) => r.steps.insert(r.step + 1, Step::Scan(shard, next)),
                    None => {}
                }
                self.advance(map, now_us)
            }
            (Step::AuditGet(key, _), Outcome::Ok(OkReply::Value { version, value })) => {
                r.reads.insert(key, (version, Some(value)));
                self.advance(map, now_us)
            }
            (Step::AuditGet(key, _), Outcome::NotFound) => {
                r.reads.insert(key, (0, None));
                self.advance(map, now_us)
            }
            (Step::Commit, Outcome::Ok(OkReply::Written { version })) => {
                self.seen = self.seen.max(version);
                self.end(map, serial::TxnOutcome::Committed { version }, None, now_us, false)
            }
            (step, other) => TxnNext::Broken(format!("{step:?} answered {other:?}")),
        }
    }

    fn advance(&mut self, map: &ClusterMap, now_us: u64) -> TxnNext {
        let r = self.running.as_mut().expect("running");
        r.step += 1;
        if r.step == r.steps.len() {
            // An audit: every account read at one version.
            let at = r.audit_at.expect("only audits run out of steps");
            return self.end(map, serial::TxnOutcome::Committed { version: at }, Some(at), now_us, false);
        }
        self.step_request(map);
        TxnNext::Send(self.attempt(map, None))
    }

    /// Ends the running attempt with `outcome`; a retryable abort starts the next
    /// attempt of the same transfer.
    fn end(
        &mut self,
        map: &ClusterMap,
        outcome: serial::TxnOutcome,
        audit_at: Option<Version>,
        now_us: u64,
        retryable: bool,
    ) -> TxnNext {
        let r = self.running.take().expect("running");
        // An audit that ran out of time still read what it read at its version:
        // a read-only transaction, recorded, but too short for a total.
        let complete_audit = audit_at.is_some();
        let audit_at = audit_at.or(r.audit_at);
        let outcome = match audit_at {
            Some(at) => serial::TxnOutcome::Committed { version: at },
            None => outcome,
        };
        let kind = match audit_at {
            Some(snapshot) => serial::TxnKind::ReadOnly { snapshot },
            None => serial::TxnKind::ReadWrite,
        };
        let reads = r
            .reads
            .iter()
            .map(|(k, (version, value))| serial::Read {
                key: k.clone(),
                version: *version,
                value: value.as_deref().map(hash),
            })
            .collect();
        let mut writes = Vec::new();
        let mut audit_total = None;
        if complete_audit {
            self.stats.audits += 1;
            let total: Result<i64, String> = r.reads.values().map(|(_, v)| balance(v.as_ref())).sum();
            match total {
                Ok(0) => {}
                Ok(total) => audit_total = Some(total),
                Err(e) => return TxnNext::Broken(e),
            }
        } else if r.scan_audit {
            if let serial::TxnOutcome::Committed { .. } = outcome {
                // Every account the scans did not return was absent.
                for (k, v) in &r.reads {
                    if v.1.is_none() {
                        return TxnNext::Broken(format!("a scan returned {k:?} without a value"));
                    }
                }
                self.stats.audits += 1;
                self.stats.scan_audits += 1;
                let total: Result<i64, String> = r.reads.values().map(|(_, v)| balance(v.as_ref())).sum();
                match total {
                    Ok(0) => {}
                    Ok(total) => audit_total = Some(total),
                    Err(e) => return TxnNext::Broken(e),
                }
            }
        } else if audit_at.is_none() && r.reads.len() == 2 {
            let a = balance(r.reads[&r.from].1.as_ref()).unwrap_or(0) - r.amount;
            let b = balance(r.reads[&r.to].1.as_ref()).unwrap_or(0) + r.amount;
            for (key, value) in [(&r.from, a), (&r.to, b)] {
                writes.push(serial::Write { key: key.clone(), value: Some(hash(value.to_string().as_bytes())) });
            }
        }
        let committed_or_unknown = !matches!(outcome, serial::TxnOutcome::Aborted);
        if committed_or_unknown && writes.is_empty() && audit_at.is_none() && !r.scan_audit {
            return TxnNext::Broken("a transfer committed before it read both accounts".into());
        }
        match outcome {
            serial::TxnOutcome::Committed { .. } if audit_at.is_none() => self.stats.committed += 1,
            serial::TxnOutcome::Aborted => self.stats.aborted += 1,
            serial::TxnOutcome::Unknown => self.stats.unknown += 1,
            _ => {}
        }
        let record = serial::Txn {
            id: r.record_id,
            kind,
            reads,
            writes,
            outcome,
            invoke_time: r.invoke_us,
            return_time: (!matches!(outcome, serial::TxnOutcome::Unknown)).then_some(now_us),
        };
        let mut releases = Vec::new();
        if matches!(outcome, serial::TxnOutcome::Aborted) {
            for &shard in &r.touched {
                let request = Request { shard, epoch: map.epoch, body: RequestBody::TxnAbort { txn: r.meta.id } };
                let to = map.replicas(shard)[0];
                let to = self
                    .leader_of
                    .get(&shard)
                    .and_then(|&n| map.members(shard).copied().find(|x| x.node == n))
                    .unwrap_or(to);
                let attempt = self.next_attempt;
                self.next_attempt += 1;
                releases.push(Attempt { to, attempt, request });
            }
        }
        let retry = (retryable && audit_at.is_none() && r.tries < ATTEMPTS_MAX && now_us < r.deadline_us).then(|| {
            let steps = if r.scan_audit { scan_steps(map) } else { self.transfer_steps(&r.from, &r.to) };
            // Wait-die ages: the retry keeps the first attempt's start.
            let start = if self.policy == Policy::WaitDie { r.meta.age.start } else { self.seen.max(now_us << 16) };
            let attempt = self.begin(
                map,
                start,
                None,
                r.from.clone(),
                r.to.clone(),
                r.amount,
                steps,
                r.tries + 1,
                now_us,
                r.deadline_us,
            );
            if r.scan_audit {
                self.running.as_mut().expect("just begun").scan_audit = true;
            }
            attempt
        });
        TxnNext::Ended { record, releases, audit_total, retry }
    }
}
