//! A scripted client for the cluster simulator: the lab scenarios of issue 11
//! (DESIGN §8, §11) say step by step which transaction sends what, and when.
//!
//! A test submits a request and gets a [`Handle`]; it runs simulated time until
//! the answer comes or a budget of simulated milliseconds passes
//! ([`Cluster::run_until_reply`]) and reads the answer by its handle. "The
//! request waits" is then "no answer after N simulated ms while nothing else
//! happens", which the simulator makes deterministic: the interleaving is the
//! script's, never a race of timers.
//!
//! Routing is a client's: a shard's first replica in the map, then the leader a
//! `NotLeader` answer names (the next replica when it names none). `Busy`,
//! `WrongShard` and `unavailable` (certainly not applied) are sent again after
//! a pause; any other outcome is the request's answer. There are no attempt
//! timeouts: the scripted cluster is calm (no faults, no crashes), every
//! request reaches a node, so a request without an answer is one that waits.
//!
//! Transactions keep their client-side state in
//! [`corekv_rpc::client::txn::TxnState`], the sans-I/O bookkeeping the client
//! library uses: a read records the version it saw, a write is buffered and
//! locked (two-phase locking) or only buffered (OCC), the commit lists every
//! shard touched and goes to the anchor. Every attempt that ends (committed,
//! aborted, or a commit of unknown outcome) is recorded in the cluster's
//! transaction history, which [`Cluster::finish`] checks for strict
//! serializability.
//!
//! Runs on the simulator's one thread, like the rest of it.

use std::collections::{BTreeMap, BTreeSet};

use corekv_rpc::client::txn::{TxnState, txn_meta};
use corekv_rpc::kv::{
    ClientId, OkReply, Outcome, ReadOp, Request, RequestBody, Response, ShardId, TxnReadOp, Version, WriteTag,
};
use corekv_rpc::map::Replica;
use corekv_rpc::raft::NodeId;
use corekv_rpc::txn::{AbortReason, Policy, TxnMeta};
use rand::RngExt;

use super::super::net;
use super::{CLOCK_BASE_MS, Cluster, Event};
use crate::check::serial;

/// The client number of the scripted client's requests and replies (above the
/// transactional clients' numbers).
pub(super) const SCRIPT_CLIENT: usize = 1 << 21;
/// Pause before a request answered `busy` is sent again.
const RETRY_BUSY_US: u64 = 10_000;
/// Pause before a request answered `unavailable` (or `WrongShard`) is sent again.
const RETRY_UNAVAILABLE_US: u64 = 5_000;
/// Pause before a request goes to the next replica, when a `NotLeader` answer
/// names no leader (an election is under way).
const RETRY_NEXT_REPLICA_US: u64 = 2_000;
/// Scripted transactions' ids in the history start here (away from the
/// transactional clients' `index << 32`).
const RECORD_ID_BASE: u64 = 1 << 48;

/// A request the script submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handle(usize);

/// A transaction attempt the script began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnHandle(usize);

/// How a scripted transaction attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnEnd {
    /// Committed: every key it wrote got this version.
    Committed(Version),
    /// Aborted, for this reason (`Requested` when the script aborted it).
    Aborted(AbortReason),
    /// Its commit answered `indeterminate`.
    Unknown,
}

/// What an answer means to the transaction that asked.
#[derive(Debug, Clone)]
enum Purpose {
    Plain,
    Read { txn: usize, key: Vec<u8> },
    Lock { txn: usize, key: Vec<u8> },
    Commit { txn: usize },
    Release,
}

/// One submitted request: its attempts so far and its answer.
#[derive(Debug)]
struct Sent {
    purpose: Purpose,
    /// `None` for an answer the client gave itself (a read of its own write, an
    /// OCC write, which locks nothing before the commit).
    request: Option<Request>,
    /// The node the next attempt goes to.
    target: NodeId,
    /// The node the latest attempt went to.
    asked: NodeId,
    attempts: Vec<u64>,
    answer: Option<Outcome>,
}

#[derive(Debug)]
struct ScriptTxn {
    state: TxnState,
    /// The sequence number the next commit of this client takes.
    seq_next: u64,
    /// The commit's tag, fixed at its first send (a resend is the same commit).
    tag: Option<WriteTag>,
    /// Attempts of this transaction so far, this one included.
    attempts: u32,
    /// First reads of keys not written before, for the history.
    reads: Vec<serial::Read>,
    /// Buffered writes, for the history.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    invoke_us: u64,
    end: Option<TxnEnd>,
}

/// The scripted client's state, kept in the [`Cluster`].
#[derive(Debug, Default)]
pub(super) struct Script {
    sent: Vec<Sent>,
    /// Attempt number -> index in `sent`.
    by_attempt: BTreeMap<u64, usize>,
    txns: Vec<ScriptTxn>,
    leader_of: BTreeMap<ShardId, NodeId>,
    next_attempt: u64,
    /// The last start version handed out: each new one is above it, so a
    /// transaction begun earlier is older.
    last_ts: u64,
}

/// A value's hash for the serializability checker.
fn value_hash(value: &[u8]) -> u64 {
    value.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

impl Cluster {
    // ----- requests ----------------------------------------------------------

    /// Submits `request` for the scripted client; it is sent at once and
    /// answered as the simulation runs.
    pub fn script_submit(&mut self, request: Request) -> Handle {
        self.script_submit_for(request, Purpose::Plain)
    }

    /// A linearizable read of `key`'s newest version (outside any transaction).
    pub fn script_read(&mut self, key: &[u8]) -> Handle {
        let request = Request {
            shard: self.map.shard_of(key),
            epoch: self.map.epoch,
            body: RequestBody::Read(ReadOp::Get { key: key.to_vec(), at: None }),
        };
        self.script_submit(request)
    }

    /// The answer to `h`, once it came.
    pub fn script_reply(&self, h: Handle) -> Option<&Outcome> {
        self.script.sent[h.0].answer.as_ref()
    }

    /// Runs the simulation until `h` is answered or `ms_max` simulated
    /// milliseconds pass; the answer, if any.
    pub fn run_until_reply(&mut self, h: Handle, ms_max: u64) -> Option<Outcome> {
        self.run_until(ms_max, |c| c.script.sent[h.0].answer.is_some());
        self.script_reply(h).cloned()
    }

    /// Runs the simulation until every shard is led by its preferred replica
    /// (the first in the map) or `ms_max` simulated milliseconds pass; true when
    /// every shard is. Leaders hand leadership back to the preferred replica, and
    /// a new leader starts with an empty lock table: a script that begins before
    /// would see its locks vanish with that hand-over.
    pub fn run_until_preferred_leaders(&mut self, ms_max: u64) -> bool {
        let preferred = |c: &Cluster| {
            (0..c.map.shard_count()).all(|shard| c.leader_of(shard) == Some(c.map.replicas(shard)[0].node))
        };
        self.run_until(ms_max, preferred)
    }

    /// Runs the simulation until no replica of any shard holds a prepared
    /// intent of `t` (every participant applied the decision, so its leader
    /// released `t`'s locks there) or `ms_max` simulated milliseconds pass; true
    /// when none does. The client hears a two-phase commit's outcome once the
    /// anchor decided, before the participants resolved: a script that wants the
    /// next step to meet no lock of `t` waits for this first.
    pub fn run_until_resolved(&mut self, t: TxnHandle, ms_max: u64) -> bool {
        let id = self.script_meta(t).id;
        let resolved = move |c: &Cluster| {
            (0..c.map.shard_count()).all(|shard| {
                c.map.replicas(shard).iter().all(|&r| {
                    let sm = c.core(r).and_then(|core| core.shard_state(shard));
                    sm.is_none_or(|sm| sm.txns().intent(&id).is_none())
                })
            })
        };
        self.run_until(ms_max, resolved)
    }

    fn script_submit_for(&mut self, request: Request, purpose: Purpose) -> Handle {
        let shard = request.shard;
        let target = self.script.leader_of.get(&shard).copied().unwrap_or_else(|| self.map.replicas(shard)[0].node);
        let index = self.script.sent.len();
        let sent = Sent { purpose, request: Some(request), target, asked: target, attempts: Vec::new(), answer: None };
        self.script.sent.push(sent);
        self.script_send(index);
        Handle(index)
    }

    /// A request the client answers itself.
    fn script_answer_locally(&mut self, purpose: Purpose, answer: Outcome) -> Handle {
        let index = self.script.sent.len();
        let sent = Sent { purpose, request: None, target: 0, asked: 0, attempts: Vec::new(), answer: None };
        self.script.sent.push(sent);
        self.script_answered(index, answer);
        Handle(index)
    }

    /// Sends the next attempt of request `index`.
    fn script_send(&mut self, index: usize) {
        let attempt = self.script.next_attempt;
        self.script.next_attempt += 1;
        let s = &mut self.script.sent[index];
        let request = s.request.clone().expect("only requests sent to a node are sent again");
        let replicas = self.map.replicas(request.shard);
        let to: Replica = replicas.iter().copied().find(|r| r.node == s.target).unwrap_or(replicas[0]);
        s.asked = to.node;
        s.attempts.push(attempt);
        self.script.by_attempt.insert(attempt, index);
        self.record(&[30, attempt, to.node]);
        // A node that is down never answers: the calm scripted cluster has none.
        let Some(to_incarnation) = self.nodes.get(&to.node).filter(|n| n.up).map(|n| n.incarnation) else {
            return;
        };
        for delay in net::fate(&mut self.rng, &self.cfg.client_faults) {
            let request = request.clone();
            let event = Event::Request { client: SCRIPT_CLIENT, to, to_incarnation, attempt, request };
            self.schedule(delay, event);
        }
    }

    /// An answer to the scripted client's attempt `attempt`.
    pub(super) fn script_on_reply(&mut self, attempt: u64, response: Response) {
        let Some(&index) = self.script.by_attempt.get(&attempt) else { return };
        let s = &mut self.script.sent[index];
        if s.answer.is_some() || s.attempts.last() != Some(&attempt) {
            return; // an earlier attempt's answer: its retry is on its way
        }
        let shard = s.request.as_ref().expect("sent").shard;
        match response {
            Response::Outcome(Outcome::Unavailable) | Response::WrongShard { .. } => {
                self.schedule(RETRY_UNAVAILABLE_US, Event::ClientRetry { client: SCRIPT_CLIENT, attempt });
            }
            Response::Busy => self.schedule(RETRY_BUSY_US, Event::ClientRetry { client: SCRIPT_CLIENT, attempt }),
            Response::NotLeader { hint } if hint != 0 && hint != s.asked && self.map.core_of(shard, hint).is_some() => {
                s.target = hint;
                self.script.leader_of.insert(shard, hint);
                self.script_send(index);
            }
            Response::NotLeader { .. } => {
                let replicas = self.map.replicas(shard);
                let at = replicas.iter().position(|r| r.node == s.asked).unwrap_or(0);
                s.target = replicas[(at + 1) % replicas.len()].node;
                self.script.leader_of.insert(shard, s.target);
                self.schedule(RETRY_NEXT_REPLICA_US, Event::ClientRetry { client: SCRIPT_CLIENT, attempt });
            }
            Response::Outcome(outcome) => self.script_answered(index, outcome),
        }
    }

    /// A retry's pause is over.
    pub(super) fn script_on_retry(&mut self, attempt: u64) {
        let Some(&index) = self.script.by_attempt.get(&attempt) else { return };
        let s = &self.script.sent[index];
        if s.answer.is_none() && s.attempts.last() == Some(&attempt) {
            self.script_send(index);
        }
    }

    /// Request `index` has its answer: the transaction that asked learns it.
    fn script_answered(&mut self, index: usize, outcome: Outcome) {
        let s = &mut self.script.sent[index];
        s.answer = Some(outcome.clone());
        let shard = s.request.as_ref().map(|r| r.shard);
        let purpose = s.purpose.clone();
        let (txn, end) = match (purpose, outcome) {
            (Purpose::Plain | Purpose::Release, _) => return,
            (Purpose::Read { txn, key }, Outcome::Ok(OkReply::TxnValue { version, value })) => {
                let t = &mut self.script.txns[txn];
                if let Some(shard) = shard {
                    if !t.reads.iter().any(|r| r.key == key) {
                        t.reads.push(serial::Read {
                            key: key.clone(),
                            version,
                            value: value.as_deref().map(value_hash),
                        });
                    }
                    t.state.read(shard, &key, version);
                }
                return;
            }
            (Purpose::Lock { txn, key }, Outcome::Ok(OkReply::Done)) => {
                if let Some(shard) = shard {
                    self.script.txns[txn].state.locked(shard, &key);
                }
                return;
            }
            (Purpose::Commit { txn }, Outcome::Ok(OkReply::Written { version })) => (txn, TxnEnd::Committed(version)),
            (Purpose::Commit { txn }, Outcome::Indeterminate) => (txn, TxnEnd::Unknown),
            (
                Purpose::Read { txn, .. } | Purpose::Lock { txn, .. } | Purpose::Commit { txn },
                Outcome::Aborted { reason },
            ) => (txn, TxnEnd::Aborted(reason)),
            // Anything else is the test's to judge; the transaction goes on.
            _ => return,
        };
        self.script_end(txn, end);
    }

    // ----- transactions --------------------------------------------------------

    /// Begins a read-write transaction with `policy`: a new client, attempt 1,
    /// younger than every transaction the script began before.
    pub fn script_begin(&mut self, policy: Policy) -> TxnHandle {
        let client = ClientId::from_u128(self.rng.random::<u128>());
        let start = self.script_fresh_ts();
        self.script_begin_attempt(client, 1, start, policy, 1, 1)
    }

    /// Retries the transaction of `t` as a new attempt of the same client: under
    /// wait-die with `t`'s start version (so it ages), otherwise with a fresh
    /// one. The script runs its steps again.
    pub fn script_retry(&mut self, t: TxnHandle) -> TxnHandle {
        let old = &self.script.txns[t.0];
        let meta = *old.state.meta();
        let (attempts, seq_next) = (old.attempts, old.seq_next);
        let start = if meta.policy == Policy::WaitDie { meta.age.start } else { self.script_fresh_ts() };
        self.script_begin_attempt(meta.id.client, meta.id.attempt + 1, start, meta.policy, attempts + 1, seq_next)
    }

    fn script_begin_attempt(
        &mut self,
        client: ClientId,
        attempt: u64,
        start: Version,
        policy: Policy,
        attempts: u32,
        seq_next: u64,
    ) -> TxnHandle {
        // Its lifetime runs from now, whatever its age.
        let now_ts = self.script_fresh_ts();
        let meta = txn_meta(client, attempt, start, policy, now_ts);
        self.script.txns.push(ScriptTxn {
            state: TxnState::read_write(meta),
            seq_next,
            tag: None,
            attempts,
            reads: Vec::new(),
            writes: BTreeMap::new(),
            invoke_us: self.now_us,
            end: None,
        });
        TxnHandle(self.script.txns.len() - 1)
    }

    /// An HLC-like reading of the simulated time (node clocks run near it),
    /// above every reading handed out before.
    fn script_fresh_ts(&mut self) -> u64 {
        let ts = ((CLOCK_BASE_MS + self.now_us / 1000) << 16).max(self.script.last_ts + 1);
        self.script.last_ts = ts;
        ts
    }

    /// The attempt `t`: its id, age and policy.
    pub fn script_meta(&self, t: TxnHandle) -> TxnMeta {
        *self.script.txns[t.0].state.meta()
    }

    /// How many attempts the transaction of `t` made, `t` included.
    pub fn script_attempts(&self, t: TxnHandle) -> u32 {
        self.script.txns[t.0].attempts
    }

    /// How `t` ended, once it did.
    pub fn script_end_of(&self, t: TxnHandle) -> Option<TxnEnd> {
        self.script.txns[t.0].end
    }

    /// A read of `key` inside `t`: a shared lock first under two-phase locking.
    /// A key `t` wrote is answered by the client (version 0).
    pub fn script_get(&mut self, t: TxnHandle, key: &[u8]) -> Handle {
        let txn = &self.script.txns[t.0];
        let purpose = Purpose::Read { txn: t.0, key: key.to_vec() };
        if let Some(own) = txn.state.own_write(key) {
            let value = own.map(<[u8]>::to_vec);
            return self.script_answer_locally(purpose, Outcome::Ok(OkReply::TxnValue { version: 0, value }));
        }
        let body = RequestBody::TxnRead { txn: *txn.state.meta(), op: TxnReadOp::Get { key: key.to_vec() } };
        let request = Request { shard: self.map.shard_of(key), epoch: self.map.epoch, body };
        self.script_submit_for(request, purpose)
    }

    /// A write of `value` to `key` inside `t` (buffered until the commit): the
    /// exclusive lock under two-phase locking, nothing to send under OCC.
    pub fn script_put(&mut self, t: TxnHandle, key: &[u8], value: &[u8]) -> Handle {
        let txn = &mut self.script.txns[t.0];
        txn.state.write(key, Some(value.to_vec()));
        txn.writes.insert(key.to_vec(), Some(value.to_vec()));
        let purpose = Purpose::Lock { txn: t.0, key: key.to_vec() };
        if !txn.state.needs_lock(key) {
            return self.script_answer_locally(purpose, Outcome::Ok(OkReply::Done));
        }
        let body = RequestBody::TxnLock { txn: *txn.state.meta(), key: key.to_vec() };
        let request = Request { shard: self.map.shard_of(key), epoch: self.map.epoch, body };
        self.script_submit_for(request, purpose)
    }

    /// Commits `t` at its anchor (the shard of its first write, else of its
    /// first read). Panics when `t` read and wrote nothing: a script error.
    pub fn script_commit(&mut self, t: TxnHandle) -> Handle {
        let txn = &mut self.script.txns[t.0];
        let tag = match txn.tag {
            Some(tag) => tag,
            None => {
                let seq = txn.seq_next;
                txn.seq_next += 1;
                *txn.tag.insert(WriteTag { client: txn.state.meta().id.client, seq, acked: seq - 1 })
            }
        };
        let (anchor, body) =
            txn.state.commit_request(&self.map, tag).expect("a commit of a transaction that did nothing");
        let request = Request { shard: anchor, epoch: self.map.epoch, body };
        self.script_submit_for(request, Purpose::Commit { txn: t.0 })
    }

    /// Aborts `t` as a client does after an `aborted` answer or when it gives
    /// up: `TxnAbort` to every shard it touched or waits on. One handle per
    /// shard; each answers `Done`.
    pub fn script_abort(&mut self, t: TxnHandle) -> Vec<Handle> {
        let txn = &self.script.txns[t.0];
        let id = txn.state.meta().id;
        let mut shards: BTreeSet<ShardId> = txn.state.touched().collect();
        let waiting = self.script.sent.iter().filter(|s| s.answer.is_none());
        for s in waiting {
            if let (Purpose::Read { txn, .. } | Purpose::Lock { txn, .. }, Some(r)) = (&s.purpose, &s.request)
                && *txn == t.0
            {
                shards.insert(r.shard);
            }
        }
        if txn.end.is_none() {
            self.script_end(t.0, TxnEnd::Aborted(AbortReason::Requested));
        }
        let epoch = self.map.epoch;
        shards
            .into_iter()
            .map(|shard| {
                let request = Request { shard, epoch, body: RequestBody::TxnAbort { txn: id } };
                self.script_submit_for(request, Purpose::Release)
            })
            .collect()
    }

    /// Ends attempt `txn` and records it in the history the run checks.
    fn script_end(&mut self, txn: usize, end: TxnEnd) {
        let now_us = self.now_us;
        let t = &mut self.script.txns[txn];
        if t.end.is_some() {
            return;
        }
        t.end = Some(end);
        let outcome = match end {
            TxnEnd::Committed(version) => serial::TxnOutcome::Committed { version },
            TxnEnd::Aborted(_) => serial::TxnOutcome::Aborted,
            TxnEnd::Unknown => serial::TxnOutcome::Unknown,
        };
        let writes = t
            .writes
            .iter()
            .map(|(key, value)| serial::Write { key: key.clone(), value: value.as_deref().map(value_hash) })
            .collect();
        let record = serial::Txn {
            id: RECORD_ID_BASE + txn as u64,
            kind: serial::TxnKind::ReadWrite,
            reads: t.reads.clone(),
            writes,
            outcome,
            invoke_time: t.invoke_us,
            return_time: (end != TxnEnd::Unknown).then_some(now_us),
        };
        self.record(&[31, record.id]);
        self.txn_history.push(record);
    }
}
