//! The blocking client: the caller's thread, `std::net`, one request at a time
//! (scans and `status` ask shard after shard). For tools, tests and scripts; the
//! async [`super::Client`] is the one to load a cluster with.
//!
//! Its decisions are [`super::core`]'s: the same routing, retries, exactly-once
//! tags and outcome words as the async client.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::core::{Attempt, BOOTSTRAP_PAUSE, Lost, Next, Router, Session, Target, check_key, check_scan, no_map};
use super::txn::{TxnState, txn_meta};
use super::{
    ClientConfig, ClusterStatus, CoreStatus, Got, KvError, NodeStatus, ScanPage, ScanPlan, VersionEntry,
    overlay_own_writes, random_client_id,
};
use crate::blocking::{BlockingConn, ClientError};
use crate::kv::{
    ClientId, NodeId, OkReply, Outcome, ReadOp, Request, RequestBody, ShardId, TxnReadOp, Version, WriteOp,
};
use crate::map::{ClusterMap, CoreIndex, META_SHARD};
use crate::node::{AdminCall, AdminReply, Call, MetaEdit, Reply};
use crate::txn::{Policy, TxnId};

/// A blocking corekv client. One client id per object (DESIGN §6).
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    router: Router,
    session: Session,
    conns: HashMap<(NodeId, CoreIndex), BlockingConn>,
    /// Transaction attempts begun (their ids' numbers).
    txn_attempts: u64,
    /// The highest version this client has seen: read-only transactions read at
    /// or above it.
    seen: Version,
}

/// A committed [`Client::run_txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRun<T> {
    /// What the transaction's body returned.
    pub value: T,
    /// The commit version.
    pub version: Version,
    /// The start version (kept across wait-die retries).
    pub start_version: Version,
    /// Attempts made, the committed one included.
    pub attempts: u32,
}

/// A transaction of a blocking client (DESIGN §8) that borrows its client for
/// its whole life. Reads and lock requests go to the shard leaders as the
/// transaction runs; writes stay here until [`Txn::commit`]. Any `aborted`,
/// `indeterminate` or `unavailable` answer ends it (its locks are released).
/// Dropped without commit or abort, it is aborted. A thin wrapper of the owned
/// [`TxnHandle`] API.
#[derive(Debug)]
pub struct Txn<'c> {
    client: &'c mut Client,
    handle: TxnHandle,
}

/// A transaction that lives beside its client instead of borrowing it: each call
/// takes the client and the handle (`Client::txn_get(&mut handle, …)`), so a
/// long-lived owner such as `corekv-ctl shell` can keep both. Same rules as
/// [`Txn`], except that dropping a handle does not abort it (it has no client to
/// send with): end it with [`Client::txn_commit`] or [`Client::txn_abort`], or
/// its locks stay until the shard leaders' lifetime limit.
#[derive(Debug)]
#[must_use = "a transaction holds locks until it is committed or aborted"]
pub struct TxnHandle {
    state: TxnState,
    /// False once committed, aborted, or ended by an answer that leaves it unable
    /// to go on; its locks are released by then.
    open: bool,
}

/// How one attempt on one connection ended without an answer.
enum CallError {
    NotSent(String),
    MaybeSent(String),
}

impl Client {
    /// Learns the cluster map from any address of `config.cluster`, trying them in
    /// turn until `config.deadline`; `unavailable` (with every address's error) when
    /// none answers.
    pub fn connect(config: ClientConfig) -> Result<Client, KvError> {
        if config.cluster.is_empty() {
            return Err(KvError::Invalid { message: "no cluster address given".into() });
        }
        let map = fetch_map(&config.cluster, 0, &config, Instant::now() + config.deadline)?;
        Ok(Client {
            router: Router::new(map),
            session: Session::new(random_client_id()),
            conns: HashMap::new(),
            txn_attempts: 0,
            seen: 0,
            config,
        })
    }

    /// Begins a read-write transaction under `policy`.
    pub fn begin(&mut self, policy: Policy) -> Txn<'_> {
        let handle = self.txn_begin(policy);
        Txn { client: self, handle }
    }

    /// Begins a read-write transaction whose age starts at `start` (a wait-die
    /// retry keeps its first start).
    pub fn begin_at(&mut self, policy: Policy, start: Version) -> Txn<'_> {
        let handle = self.txn_begin_at(policy, start);
        Txn { client: self, handle }
    }

    /// Begins a read-only transaction at `at`, or at a version at or above every
    /// version this client has seen.
    pub fn begin_read_only(&mut self, at: Option<Version>) -> Txn<'_> {
        let handle = self.txn_begin_read_only(at);
        Txn { client: self, handle }
    }

    /// [`Client::begin`], owned: a handle to pass to the `txn_*` calls.
    pub fn txn_begin(&mut self, policy: Policy) -> TxnHandle {
        let start = self.seen.max(now_ts());
        self.txn_begin_at(policy, start)
    }

    /// [`Client::begin_at`], owned.
    pub fn txn_begin_at(&mut self, policy: Policy, start: Version) -> TxnHandle {
        self.txn_attempts += 1;
        let meta = txn_meta(self.session.id(), self.txn_attempts, start, policy, now_ts());
        TxnHandle { state: TxnState::read_write(meta), open: true }
    }

    /// [`Client::begin_read_only`], owned.
    pub fn txn_begin_read_only(&mut self, at: Option<Version>) -> TxnHandle {
        self.txn_attempts += 1;
        let at = at.unwrap_or_else(|| self.seen.max(now_ts()));
        let meta = txn_meta(self.session.id(), self.txn_attempts, at, Policy::Occ, now_ts());
        TxnHandle { state: TxnState::read_only(meta, at), open: true }
    }

    /// Runs `body` as one transaction, again while it is aborted, until it commits
    /// or the client's deadline passes (then the last `aborted` answer). Wait-die
    /// retries keep the first start version, so they age and eventually win.
    pub fn run_txn<T>(
        &mut self,
        policy: Policy,
        mut body: impl FnMut(&mut Txn<'_>) -> Result<T, KvError>,
    ) -> Result<TxnRun<T>, KvError> {
        let deadline = Instant::now() + self.config.deadline;
        let first_start = self.seen.max(now_ts());
        let mut attempts = 0;
        loop {
            attempts += 1;
            let start = if policy == Policy::WaitDie { first_start } else { self.seen.max(now_ts()) };
            let mut txn = self.begin_at(policy, start);
            let result = body(&mut txn).and_then(|value| txn.commit().map(|version| (value, version)));
            match result {
                Ok((value, version)) => {
                    return Ok(TxnRun { value, version, start_version: first_start.min(start), attempts });
                }
                Err(KvError::Aborted { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1 << attempts.min(6)));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// This client's id.
    pub fn client_id(&self) -> ClientId {
        self.session.id()
    }

    /// The cluster map in use.
    pub fn map(&self) -> &ClusterMap {
        self.router.map()
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Sets the per-request deadline.
    pub fn set_deadline(&mut self, deadline: Duration) {
        self.config.deadline = deadline;
    }

    /// Writes `value` at `key`; the new version.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<Version, KvError> {
        self.write(WriteOp::Put { key: key.to_vec(), value: value.to_vec() })
    }

    /// Deletes `key` (a tombstone with its own version); `not_found` when it is
    /// absent, and nothing is written.
    pub fn delete(&mut self, key: &[u8]) -> Result<Version, KvError> {
        self.write(WriteOp::Delete { key: key.to_vec() })
    }

    /// Writes `value` only if `key`'s current version is `expected` (0: only if
    /// absent); `version_mismatch` with the current version otherwise.
    pub fn cas(&mut self, key: &[u8], expected: Version, value: &[u8]) -> Result<Version, KvError> {
        self.write(WriteOp::Cas { key: key.to_vec(), expected, value: value.to_vec() })
    }

    /// The newest version of `key`, or the newest ≤ `at`; linearizable.
    pub fn get(&mut self, key: &[u8], at: Option<Version>) -> Result<Got, KvError> {
        check_key("key", key)?;
        let outcome = self.read(self.router.shard_of(key), ReadOp::Get { key: key.to_vec(), at })?;
        super::got(outcome)
    }

    /// The retained history of `key`, newest first.
    pub fn versions(&mut self, key: &[u8]) -> Result<Vec<VersionEntry>, KvError> {
        check_key("key", key)?;
        let outcome = self.read(self.router.shard_of(key), ReadOp::Versions { key: key.to_vec() })?;
        super::version_list(outcome)
    }

    /// Live keys of `[start, end)` (empty `end`: no bound), at most `limit`, in key
    /// order, from every shard. Each shard's part is linearizable; the page is not
    /// one snapshot across shards.
    pub fn scan(&mut self, start: &[u8], end: &[u8], limit: u32) -> Result<ScanPage, KvError> {
        self.scan_at(start, end, limit, None)
    }

    /// Every core of every node: its shards and counters, or why it did not answer.
    pub fn status(&mut self) -> ClusterStatus {
        let map = self.router.map().clone();
        let mut nodes = Vec::with_capacity(map.nodes.len());
        for node in &map.nodes {
            let mut cores = Vec::with_capacity(node.cores as usize);
            for core in 0..node.cores {
                let addr = map.core_addr(node.id, core).unwrap_or_default();
                let mut report = CoreStatus { core, addr: addr.clone(), error: None, stats: None, shards: Vec::new() };
                let target = Target { node: node.id, core, addr };
                let calls = vec![Call::Admin(AdminCall::Status), Call::Admin(AdminCall::Stats)];
                match self.call_many(&target, calls, self.config.attempt_timeout) {
                    Ok(replies) => {
                        for reply in replies {
                            match reply {
                                Reply::Admin(AdminReply::Status { shards, .. }) => report.shards = shards,
                                Reply::Admin(AdminReply::Stats(stats)) => report.stats = Some(stats),
                                other => report.error = Some(format!("unexpected answer {other:?}")),
                            }
                        }
                    }
                    Err(CallError::NotSent(why) | CallError::MaybeSent(why)) => report.error = Some(why),
                }
                cores.push(report);
            }
            nodes.push(NodeStatus { id: node.id, addr: node.addr.clone(), cores });
        }
        ClusterStatus { cluster_id: map.cluster_id, epoch: map.epoch, nodes }
    }

    /// Hands a change of the cluster map to the meta group: sent to one meta
    /// replica after another until one takes it (it passes it to its leader).
    /// Taken is not done: the caller watches the map ([`Client::refresh_map`]).
    pub fn submit_meta(&mut self, edit: MetaEdit) -> Result<(), KvError> {
        let map = self.router.map().clone();
        let mut last = String::from("the map names no meta replica");
        for r in map.members(META_SHARD) {
            let addr = map.core_addr(r.node, r.core).unwrap_or_default();
            let target = Target { node: r.node, core: r.core, addr };
            let call = vec![Call::Admin(AdminCall::MetaEdit(edit.clone()))];
            match self.call_many(&target, call, self.config.attempt_timeout) {
                Ok(replies) if replies.iter().all(|r| matches!(r, Reply::Admin(AdminReply::Accepted))) => return Ok(()),
                Ok(replies) => last = format!("unexpected answer {replies:?}"),
                Err(CallError::NotSent(why) | CallError::MaybeSent(why)) => last = why,
            }
        }
        Err(KvError::Unavailable { reason: last })
    }

    /// Asks the cluster for its current map now.
    pub fn refresh_map(&mut self) -> Result<(), KvError> {
        let deadline = Instant::now() + self.config.deadline;
        let map = fetch_map(&self.router.map_sources(), self.router.map().cluster_id, &self.config, deadline)?;
        self.router.update_map(map);
        Ok(())
    }

    /// [`Client::scan`] of the newest state (`at: None`) or of the newest versions
    /// ≤ `at` (a read-only transaction's snapshot).
    fn scan_at(&mut self, start: &[u8], end: &[u8], limit: u32, at: Option<Version>) -> Result<ScanPage, KvError> {
        check_scan(start, end, limit)?;
        let deadline = Instant::now() + self.config.deadline;
        let mut plan = ScanPlan::new(self.router.map().shard_count(), start, end, limit);
        while !plan.is_done() {
            for (shard, op) in plan.pending() {
                let outcome = self.run(shard, RequestBody::Read(scan_at_version(op, at)), deadline)?;
                plan.on_outcome(shard, outcome)?;
            }
        }
        Ok(plan.finish())
    }

    fn write(&mut self, op: WriteOp) -> Result<Version, KvError> {
        check_key("key", op.key())?;
        let shard = self.router.shard_of(op.key());
        let tag = self.session.begin();
        let deadline = Instant::now() + self.config.deadline;
        let result = self.run(shard, RequestBody::Write { tag, op }, deadline);
        self.session.finish(tag.seq);
        let version = super::written(result?)?;
        self.seen = self.seen.max(version);
        Ok(version)
    }

    fn read(&mut self, shard: ShardId, op: ReadOp) -> Result<Outcome, KvError> {
        let deadline = Instant::now() + self.config.deadline;
        self.run(shard, RequestBody::Read(op), deadline)
    }

    /// One request to `shard`, retried as [`Attempt`] decides, until `deadline`.
    fn run(&mut self, shard: ShardId, body: RequestBody, deadline: Instant) -> Result<Outcome, KvError> {
        let is_write = matches!(body, RequestBody::Write { .. } | RequestBody::TxnCommit { .. });
        let mut attempt = Attempt::new(shard, is_write, deadline);
        loop {
            let now = Instant::now();
            if !attempt.may_send(now) {
                return Err(attempt.give_up());
            }
            let Some(target) = attempt.target(&self.router) else {
                return Err(KvError::Unavailable {
                    reason: format!("the cluster map names no replica of shard {shard}"),
                });
            };
            let request = Request { shard, epoch: self.router.map().epoch, body: body.clone() };
            let wait = attempt.wait_for(&self.config, now);
            let next = match self.call_many(&target, vec![Call::Kv(request)], wait) {
                Ok(mut replies) => match replies.pop() {
                    Some(Reply::Kv(response)) => {
                        attempt.on_response(&mut self.router, &target, response, Instant::now())
                    }
                    other => {
                        let why = format!("answered a request with {other:?}");
                        attempt.on_lost(&mut self.router, &target, Lost::MaybeSent, &why, Instant::now())
                    }
                },
                Err(CallError::NotSent(why)) => {
                    attempt.on_lost(&mut self.router, &target, Lost::NotSent, &why, Instant::now())
                }
                Err(CallError::MaybeSent(why)) => {
                    attempt.on_lost(&mut self.router, &target, Lost::MaybeSent, &why, Instant::now())
                }
            };
            match next {
                Next::Send => {}
                Next::Pause(pause) => std::thread::sleep(pause),
                Next::RefreshMap => {
                    if let Err(e) = self.refresh_map_by(deadline) {
                        match attempt.on_map_refresh_failed(&e.to_string(), Instant::now()) {
                            Next::Pause(pause) => std::thread::sleep(pause),
                            Next::Failed(e) => return Err(e),
                            _ => {}
                        }
                    }
                }
                Next::Done(outcome) => return Ok(outcome),
                Next::Failed(e) => return Err(e),
            }
        }
    }

    fn refresh_map_by(&mut self, deadline: Instant) -> Result<(), KvError> {
        let map = fetch_map(&self.router.map_sources(), self.router.map().cluster_id, &self.config, deadline)?;
        self.router.update_map(map);
        Ok(())
    }

    /// `calls` to one core in one frame; a connection that fails is dropped.
    fn call_many(&mut self, target: &Target, calls: Vec<Call>, wait: Duration) -> Result<Vec<Reply>, CallError> {
        let key = (target.node, target.core);
        if !self.conns.contains_key(&key) {
            let timeout = self.config.connect_timeout.min(wait).max(Duration::from_millis(1));
            let conn = BlockingConn::connect(&target.addr, self.router.map().cluster_id, timeout)
                .map_err(|e| CallError::NotSent(e.to_string()))?;
            self.conns.insert(key, conn);
        }
        let conn = self.conns.get_mut(&key).expect("inserted above");
        conn.set_timeout(wait.max(Duration::from_millis(1)));
        match conn.call_many(calls) {
            Ok(replies) => Ok(replies),
            Err(e) => {
                self.conns.remove(&key);
                Err(match e {
                    ClientError::Refused(_) | ClientError::Connect { .. } => CallError::NotSent(e.to_string()),
                    _ => CallError::MaybeSent(e.to_string()),
                })
            }
        }
    }
}

/// The HLC reading of the wall clock: a transaction's start and its attempt's
/// begin (`ms << 16`).
fn now_ts() -> Version {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    ms << 16
}

/// [`ScanPlan`] pages the newest state; a snapshot scan asks each shard for the
/// newest versions ≤ `at` instead.
fn scan_at_version(op: ReadOp, at: Option<Version>) -> ReadOp {
    match op {
        ReadOp::Scan { start, end, limit, .. } => ReadOp::Scan { start, end, limit, at },
        other => other,
    }
}

/// Transactions, owned: the calls behind [`Txn`], for a caller that keeps the
/// [`TxnHandle`] itself. An answer that leaves the transaction unable to go on
/// (`aborted`, or no definite answer from a shard) closes the handle and
/// releases its locks.
impl Client {
    /// Reads `key` in `txn`: its own write if it wrote it (version 0), else the
    /// newest version under a shared lock (two-phase locking) or recorded for
    /// validation (OCC), or the version of a read-only transaction's snapshot.
    pub fn txn_get(&mut self, txn: &mut TxnHandle, key: &[u8]) -> Result<Got, KvError> {
        self.txn_get_op(txn, key, false)
    }

    /// [`Client::txn_get`], under an exclusive lock when `for_update` and the
    /// key is not locked yet (lock and read in one request).
    fn txn_get_op(&mut self, txn: &mut TxnHandle, key: &[u8], for_update: bool) -> Result<Got, KvError> {
        txn.check_open()?;
        check_key("key", key)?;
        match txn.state.own_write(key) {
            Some(Some(value)) => return Ok(Got { version: 0, value: value.to_vec() }),
            Some(None) => return Err(KvError::NotFound),
            None => {}
        }
        let shard = self.router.shard_of(key);
        if let Some(at) = txn.state.read_only_at() {
            let body = RequestBody::Read(ReadOp::Get { key: key.to_vec(), at: Some(at) });
            return super::got(self.txn_step(txn, shard, body)?);
        }
        let exclusive = for_update && txn.state.needs_lock(key);
        let op = if exclusive {
            TxnReadOp::GetForUpdate { key: key.to_vec() }
        } else {
            TxnReadOp::Get { key: key.to_vec() }
        };
        let body = RequestBody::TxnRead { txn: *txn.state.meta(), op };
        match self.txn_step(txn, shard, body)? {
            Outcome::Ok(OkReply::TxnValue { version, value }) => {
                if exclusive {
                    txn.state.locked(shard, key);
                }
                txn.state.read(shard, key, version);
                self.seen = self.seen.max(version);
                value.map(|value| Got { version, value }).ok_or(KvError::NotFound)
            }
            other => Err(self.txn_fail(txn, other)),
        }
    }

    /// Live keys of `[start, end)` (empty `end`: unbounded), at most `limit`, as
    /// [`Client::scan`] pages them: at a read-only transaction's snapshot; in a
    /// read-write transaction, the newest versions under a shared range lock on
    /// every shard (two-phase locking: no phantom can appear before the commit)
    /// or recorded for validation (OCC), with the transaction's own writes laid
    /// over them (version 0 for its puts; its deletes hidden).
    pub fn txn_scan(&mut self, txn: &mut TxnHandle, start: &[u8], end: &[u8], limit: u32) -> Result<ScanPage, KvError> {
        txn.check_open()?;
        if txn.state.read_only_at().is_some() {
            let page = self.scan_at(start, end, limit, txn.state.read_only_at());
            if let Err(KvError::Unavailable { .. } | KvError::Indeterminate { .. }) = &page {
                // A read-only transaction holds no locks: nothing to release.
                txn.open = false;
            }
            return page;
        }
        check_scan(start, end, limit)?;
        let mut from = start.to_vec();
        loop {
            let page = self.txn_scan_round(txn, &from, end, limit)?;
            let raw_last = page.items.last().map(|i| i.key.clone());
            let page = overlay_own_writes(page, txn.state.own_writes_in(&from, end), limit);
            match raw_last {
                // Every key the store gave was one this transaction deleted, and
                // more follow: an empty page could not be resumed, so go on.
                Some(mut last) if page.items.is_empty() && page.more => {
                    last.push(0);
                    from = last;
                }
                _ => return Ok(page),
            }
        }
    }

    /// One scatter-gather round of a read-write transaction's scan, each shard's
    /// range recorded (and, under two-phase locking, locked) as it answers.
    fn txn_scan_round(
        &mut self,
        txn: &mut TxnHandle,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<ScanPage, KvError> {
        let mut plan = ScanPlan::new(self.router.map().shard_count(), start, end, limit);
        while !plan.is_done() {
            let end = plan.end().to_vec();
            for (shard, start, limit) in plan.pending_from() {
                let body = RequestBody::TxnRead {
                    txn: *txn.state.meta(),
                    op: TxnReadOp::Scan { start: start.clone(), end: end.clone(), limit },
                };
                match self.txn_step(txn, shard, body)? {
                    outcome @ Outcome::Ok(OkReply::TxnScan { read_ts, .. }) => {
                        txn.state.range_read(shard, &start, &end, read_ts);
                        self.seen = self.seen.max(read_ts);
                        if let Err(e) = plan.on_outcome(shard, outcome) {
                            txn.open = false;
                            self.txn_release(txn);
                            return Err(e);
                        }
                    }
                    other => return Err(self.txn_fail(txn, other)),
                }
            }
        }
        Ok(plan.finish())
    }

    /// Writes `value` at `key` when `txn` commits (under two-phase locking, after
    /// locking `key` now).
    pub fn txn_put(&mut self, txn: &mut TxnHandle, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.txn_buffer(txn, key, Some(value.to_vec()))
    }

    /// Deletes `key` when `txn` commits (nothing is written if it is absent then).
    pub fn txn_delete(&mut self, txn: &mut TxnHandle, key: &[u8]) -> Result<(), KvError> {
        self.txn_buffer(txn, key, None)
    }

    /// Commits `txn`: the commit version of every key written (the snapshot
    /// version of a read-only transaction; the start version of one that did
    /// nothing). `aborted`, `indeterminate` (it may have committed) or
    /// `unavailable` (certainly not) otherwise.
    pub fn txn_commit(&mut self, mut txn: TxnHandle) -> Result<Version, KvError> {
        self.commit_handle(&mut txn)
    }

    /// Aborts `txn`: every lock released.
    pub fn txn_abort(&mut self, mut txn: TxnHandle) -> Result<(), KvError> {
        self.abort_handle(&mut txn)
    }

    fn txn_buffer(&mut self, txn: &mut TxnHandle, key: &[u8], value: Option<Vec<u8>>) -> Result<(), KvError> {
        txn.check_open()?;
        check_key("key", key)?;
        if txn.state.read_only_at().is_some() {
            return Err(KvError::Invalid { message: "a read-only transaction cannot write".into() });
        }
        if txn.state.needs_lock(key) {
            self.txn_lock(txn, key)?;
        }
        txn.state.write(key, value);
        Ok(())
    }

    /// Takes `key`'s exclusive lock for `txn` (two-phase locking).
    fn txn_lock(&mut self, txn: &mut TxnHandle, key: &[u8]) -> Result<(), KvError> {
        let shard = self.router.shard_of(key);
        let body = RequestBody::TxnLock { txn: *txn.state.meta(), key: key.to_vec() };
        match self.txn_step(txn, shard, body)? {
            Outcome::Ok(OkReply::Done) => {
                txn.state.locked(shard, key);
                Ok(())
            }
            other => Err(self.txn_fail(txn, other)),
        }
    }

    /// Reads `key` for a write that follows: under two-phase locking it takes
    /// the exclusive lock with the read, in one request (a read-modify-write that
    /// takes a shared lock and upgrades it later meets every other reader's
    /// upgrade, and one of them must abort: the SELECT FOR UPDATE of SQL); under
    /// OCC, and in a read-only transaction, a plain [`Client::txn_get`].
    pub fn txn_get_for_update(&mut self, txn: &mut TxnHandle, key: &[u8]) -> Result<Got, KvError> {
        self.txn_get_op(txn, key, true)
    }

    /// Commits and closes `txn`; [`Client::txn_commit`] and [`Txn::commit`].
    fn commit_handle(&mut self, txn: &mut TxnHandle) -> Result<Version, KvError> {
        txn.check_open()?;
        txn.open = false;
        if let Some(at) = txn.state.read_only_at() {
            return Ok(at);
        }
        let tag = self.session.begin();
        let Some((anchor, body)) = txn.state.commit_request(self.router.map(), tag) else {
            self.session.finish(tag.seq);
            return Ok(txn.state.meta().age.start);
        };
        let deadline = Instant::now() + self.config.deadline;
        let result = self.run(anchor, body, deadline);
        self.session.finish(tag.seq);
        let result = result.and_then(super::written);
        match &result {
            Ok(version) => self.seen = self.seen.max(*version),
            // Not committed: release what it still holds.
            Err(KvError::Aborted { .. } | KvError::Unavailable { .. }) => self.txn_release(txn),
            Err(_) => {}
        }
        result
    }

    /// Aborts and closes `txn`; [`Client::txn_abort`], [`Txn::abort`] and
    /// [`Txn`]'s drop.
    fn abort_handle(&mut self, txn: &mut TxnHandle) -> Result<(), KvError> {
        txn.check_open()?;
        txn.open = false;
        self.txn_release(txn);
        Ok(())
    }

    /// One transactional request to `shard`'s leader, retried like any read.
    fn txn_step(&mut self, txn: &mut TxnHandle, shard: ShardId, body: RequestBody) -> Result<Outcome, KvError> {
        let deadline = Instant::now() + self.config.deadline;
        match self.run(shard, body, deadline) {
            Ok(Outcome::Aborted { reason }) => Err(self.txn_fail(txn, Outcome::Aborted { reason })),
            Ok(outcome) => Ok(outcome),
            Err(e) => {
                // Unsure where the transaction stands: it cannot go on.
                txn.open = false;
                self.txn_release(txn);
                Err(e)
            }
        }
    }

    /// `txn` cannot go on: locks released, the outcome as an error.
    fn txn_fail(&mut self, txn: &mut TxnHandle, outcome: Outcome) -> KvError {
        txn.open = false;
        self.txn_release(txn);
        super::definite_error(outcome)
    }

    /// Best effort: every shard `txn` touched drops its locks (the leaders'
    /// lifetime limit is the backstop).
    fn txn_release(&mut self, txn: &TxnHandle) {
        let id = txn.state.meta().id;
        let deadline = Instant::now() + self.config.attempt_timeout;
        for shard in txn.state.touched().collect::<Vec<_>>() {
            let _ = self.run(shard, RequestBody::TxnAbort { txn: id }, deadline);
        }
    }
}

impl TxnHandle {
    /// The attempt's id.
    pub fn id(&self) -> TxnId {
        self.state.meta().id
    }

    /// The start version (for a read-only transaction, its snapshot version).
    pub fn start_version(&self) -> Version {
        self.state.read_only_at().unwrap_or(self.state.meta().age.start)
    }

    /// True for a transaction begun read-only.
    pub fn is_read_only(&self) -> bool {
        self.state.read_only_at().is_some()
    }

    /// True while the transaction may go on.
    pub fn is_open(&self) -> bool {
        self.open
    }

    fn check_open(&self) -> Result<(), KvError> {
        if self.open { Ok(()) } else { Err(KvError::Invalid { message: "the transaction has ended".into() }) }
    }
}

impl Txn<'_> {
    /// The attempt's id.
    pub fn id(&self) -> TxnId {
        self.handle.id()
    }

    /// The start version (for a read-only transaction, its snapshot version).
    pub fn start_version(&self) -> Version {
        self.handle.start_version()
    }

    /// True while the transaction may go on.
    pub fn is_open(&self) -> bool {
        self.handle.is_open()
    }

    /// Reads `key`; see [`Client::txn_get`].
    pub fn get(&mut self, key: &[u8]) -> Result<Got, KvError> {
        self.client.txn_get(&mut self.handle, key)
    }

    /// Reads `key` for a write that follows; see [`Client::txn_get_for_update`].
    pub fn get_for_update(&mut self, key: &[u8]) -> Result<Got, KvError> {
        self.client.txn_get_for_update(&mut self.handle, key)
    }

    /// Writes `value` at `key` when the transaction commits.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.client.txn_put(&mut self.handle, key, value)
    }

    /// Deletes `key` when the transaction commits (nothing is written if it is
    /// absent then).
    pub fn delete(&mut self, key: &[u8]) -> Result<(), KvError> {
        self.client.txn_delete(&mut self.handle, key)
    }

    /// Commits; see [`Client::txn_commit`].
    pub fn commit(mut self) -> Result<Version, KvError> {
        self.client.commit_handle(&mut self.handle)
    }

    /// Aborts: every lock released.
    pub fn abort(mut self) -> Result<(), KvError> {
        self.client.abort_handle(&mut self.handle)
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if self.handle.open {
            // Best effort, like every release: nothing to report from a drop.
            let _ = self.client.abort_handle(&mut self.handle);
        }
    }
}

/// Asks `addrs` in turn for the cluster map until one answers or `deadline`.
fn fetch_map(
    addrs: &[String],
    cluster_id: u64,
    config: &ClientConfig,
    deadline: Instant,
) -> Result<ClusterMap, KvError> {
    let mut errors: Vec<String> = Vec::new();
    loop {
        errors.clear();
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let timeout = config.connect_timeout.min(left);
            let answer = BlockingConn::connect(addr, cluster_id, timeout).and_then(|mut conn| {
                conn.set_timeout(config.attempt_timeout.min(left));
                conn.call(Call::Admin(AdminCall::ClusterMap))
            });
            match answer {
                Ok(Reply::Admin(AdminReply::ClusterMap(map))) if !map.shards.is_empty() => return Ok(map),
                Ok(other) => errors.push(format!("{addr}: unexpected answer {other:?}")),
                Err(ClientError::Refused(reason)) => {
                    // A node of another cluster will not change its mind.
                    return Err(KvError::Unavailable { reason: format!("{addr} refused the connection: {reason}") });
                }
                // A connect error names the address already.
                Err(e @ ClientError::Connect { .. }) => errors.push(e.to_string()),
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        if Instant::now() + BOOTSTRAP_PAUSE >= deadline {
            return Err(no_map(addrs, &errors));
        }
        std::thread::sleep(BOOTSTRAP_PAUSE);
    }
}
