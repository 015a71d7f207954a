//! The async client, for a glommio executor: one connection per (node, core) it
//! talks to, shared by every request of the client; requests issued while a frame
//! is being written leave together in the next frame (pipelining), and replies
//! are matched to requests by call id.
//!
//! Core affinity: a [`Client`] lives on one executor (`Rc`, `RefCell`, no `Send`);
//! clone it to share it between that executor's tasks (one client id). Each core
//! of a load generator builds its own.
//!
//! Invariants:
//! - at most `inflight_max` requests in flight per client (a semaphore; a request
//!   waits for a slot), and so at most that many calls per connection;
//! - a call that was never handed to the socket is withdrawn when its attempt
//!   gives up, so an attempt reported "not sent" can never reach the server later;
//! - a connection that fails fails every call on it at once: "not sent" for calls
//!   still queued, "maybe sent" for calls written, and is replaced on next use;
//! - nothing busy-polls: tasks wait on wakers, sockets or timers.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::future::or;
use glommio::sync::Semaphore;
use glommio::task::JoinHandle;

use super::core::{Attempt, BOOTSTRAP_PAUSE, Lost, Next, Router, Session, Target, check_key, check_scan, no_map};
use super::{
    ClientConfig, ClusterStatus, CoreStatus, Got, KvError, NodeStatus, ScanPage, ScanPlan, VersionEntry,
    random_client_id,
};
use crate::frame::{self, FRAME_PAYLOAD_BYTES_MAX, FrameError};
use crate::kv::{ClientId, NodeId, Outcome, ReadOp, Request, RequestBody, ShardId, Version, WriteOp};
use crate::map::{ClusterMap, CoreIndex};
use crate::node::{
    AdminCall, AdminReply, Call, ClientBatch, Hello, Reply, Role, ServerBatch, TaggedCall, WIRE_VERSION,
};
use crate::transport::{self, Signal, TransportError, encode_batches};

/// How one attempt on one connection ended without an answer.
#[derive(Debug, Clone)]
enum CallError {
    NotSent(String),
    MaybeSent(String),
}

/// An async corekv client. Cheap to clone; clones share the id, the map and the
/// connections.
#[derive(Clone)]
pub struct Client {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("id", &self.inner.session.borrow().id()).finish_non_exhaustive()
    }
}

struct Inner {
    config: ClientConfig,
    router: RefCell<Router>,
    session: RefCell<Session>,
    conns: RefCell<HashMap<(NodeId, CoreIndex), Rc<Conn>>>,
    slots: Semaphore,
}

impl Client {
    /// Learns the cluster map from any address of `config.cluster`, trying them in
    /// turn until `config.deadline`; `unavailable` when none answers. Must be called
    /// inside a glommio executor.
    pub async fn connect(config: ClientConfig) -> Result<Client, KvError> {
        if config.cluster.is_empty() {
            return Err(KvError::Invalid { message: "no cluster address given".into() });
        }
        let map = fetch_map(&config.cluster, 0, &config, Instant::now() + config.deadline).await?;
        let slots = Semaphore::new(config.inflight_max.max(1) as u64);
        Ok(Client {
            inner: Rc::new(Inner {
                router: RefCell::new(Router::new(map)),
                session: RefCell::new(Session::new(random_client_id())),
                conns: RefCell::new(HashMap::new()),
                slots,
                config,
            }),
        })
    }

    /// This client's id.
    pub fn client_id(&self) -> ClientId {
        self.inner.session.borrow().id()
    }

    /// A copy of the cluster map in use.
    pub fn map(&self) -> ClusterMap {
        self.inner.router.borrow().map().clone()
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Writes `value` at `key`; the new version.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<Version, KvError> {
        self.write(WriteOp::Put { key: key.to_vec(), value: value.to_vec() }).await
    }

    /// Deletes `key`; `not_found` when it is absent, and nothing is written.
    pub async fn delete(&self, key: &[u8]) -> Result<Version, KvError> {
        self.write(WriteOp::Delete { key: key.to_vec() }).await
    }

    /// Writes `value` only if `key`'s current version is `expected` (0: only if
    /// absent).
    pub async fn cas(&self, key: &[u8], expected: Version, value: &[u8]) -> Result<Version, KvError> {
        self.write(WriteOp::Cas { key: key.to_vec(), expected, value: value.to_vec() }).await
    }

    /// The newest version of `key`, or the newest ≤ `at`; linearizable.
    pub async fn get(&self, key: &[u8], at: Option<Version>) -> Result<Got, KvError> {
        check_key("key", key)?;
        let shard = self.inner.router.borrow().shard_of(key);
        super::got(self.read(shard, ReadOp::Get { key: key.to_vec(), at }).await?)
    }

    /// The retained history of `key`, newest first.
    pub async fn versions(&self, key: &[u8]) -> Result<Vec<VersionEntry>, KvError> {
        check_key("key", key)?;
        let shard = self.inner.router.borrow().shard_of(key);
        super::version_list(self.read(shard, ReadOp::Versions { key: key.to_vec() }).await?)
    }

    /// Live keys of `[start, end)` (empty `end`: no bound), at most `limit`, in key
    /// order; every shard is asked at once. Each shard's part is linearizable; the
    /// page is not one snapshot across shards.
    pub async fn scan(&self, start: &[u8], end: &[u8], limit: u32) -> Result<ScanPage, KvError> {
        check_scan(start, end, limit)?;
        let deadline = Instant::now() + self.inner.config.deadline;
        let shard_count = self.inner.router.borrow().map().shard_count();
        let mut plan = ScanPlan::new(shard_count, start, end, limit);
        while !plan.is_done() {
            let tasks: Vec<(ShardId, JoinHandle<Result<Outcome, KvError>>)> = plan
                .pending()
                .into_iter()
                .map(|(shard, op)| {
                    let client = self.clone();
                    let task = glommio::spawn_local(async move {
                        let _slot = client.inner.slots.acquire_permit(1).await;
                        client.run(shard, RequestBody::Read(op), deadline).await
                    })
                    .detach();
                    (shard, task)
                })
                .collect();
            for (shard, task) in tasks {
                let outcome = task
                    .await
                    .unwrap_or_else(|| Err(KvError::Unavailable { reason: "the scan's task was cancelled".into() }))?;
                plan.on_outcome(shard, outcome)?;
            }
        }
        Ok(plan.finish())
    }

    /// Every core of every node: its shards and counters, or why it did not answer.
    pub async fn status(&self) -> ClusterStatus {
        let map = self.map();
        let mut nodes = Vec::with_capacity(map.nodes.len());
        for node in &map.nodes {
            let mut tasks = Vec::with_capacity(node.cores as usize);
            for core in 0..node.cores {
                let addr = map.core_addr(node.id, core).unwrap_or_default();
                let target = Target { node: node.id, core, addr };
                let client = self.clone();
                tasks.push(glommio::spawn_local(async move { client.core_status(target).await }).detach());
            }
            let mut cores = Vec::with_capacity(tasks.len());
            for (core, task) in tasks.into_iter().enumerate() {
                cores.push(task.await.unwrap_or_else(|| CoreStatus {
                    core: core as CoreIndex,
                    addr: String::new(),
                    error: Some("cancelled".into()),
                    stats: None,
                    shards: Vec::new(),
                }));
            }
            nodes.push(NodeStatus { id: node.id, addr: node.addr.clone(), cores });
        }
        ClusterStatus { cluster_id: map.cluster_id, epoch: map.epoch, nodes }
    }

    async fn core_status(&self, target: Target) -> CoreStatus {
        let mut report =
            CoreStatus { core: target.core, addr: target.addr.clone(), error: None, stats: None, shards: Vec::new() };
        let wait = self.inner.config.attempt_timeout;
        let (status, stats) = futures_lite::future::zip(
            self.call(&target, Call::Admin(AdminCall::Status), wait),
            self.call(&target, Call::Admin(AdminCall::Stats), wait),
        )
        .await;
        for reply in [status, stats] {
            match reply {
                Ok(Reply::Admin(AdminReply::Status { shards, .. })) => report.shards = shards,
                Ok(Reply::Admin(AdminReply::Stats(stats))) => report.stats = Some(stats),
                Ok(other) => report.error = Some(format!("unexpected answer {other:?}")),
                Err(CallError::NotSent(why) | CallError::MaybeSent(why)) => report.error = Some(why),
            }
        }
        report
    }

    /// Asks the cluster for its current map now.
    pub async fn refresh_map(&self) -> Result<(), KvError> {
        self.refresh_map_by(Instant::now() + self.inner.config.deadline).await
    }

    async fn refresh_map_by(&self, deadline: Instant) -> Result<(), KvError> {
        let (sources, cluster_id) = {
            let router = self.inner.router.borrow();
            (router.map_sources(), router.map().cluster_id)
        };
        let map = fetch_map(&sources, cluster_id, &self.inner.config, deadline).await?;
        self.inner.router.borrow_mut().update_map(map);
        Ok(())
    }

    async fn write(&self, op: WriteOp) -> Result<Version, KvError> {
        check_key("key", op.key())?;
        let _slot = self.inner.slots.acquire_permit(1).await;
        let shard = self.inner.router.borrow().shard_of(op.key());
        let tag = self.inner.session.borrow_mut().begin();
        let deadline = Instant::now() + self.inner.config.deadline;
        let result = self.run(shard, RequestBody::Write { tag, op }, deadline).await;
        self.inner.session.borrow_mut().finish(tag.seq);
        super::written(result?)
    }

    async fn read(&self, shard: ShardId, op: ReadOp) -> Result<Outcome, KvError> {
        let _slot = self.inner.slots.acquire_permit(1).await;
        let deadline = Instant::now() + self.inner.config.deadline;
        self.run(shard, RequestBody::Read(op), deadline).await
    }

    /// One request to `shard`, retried as [`Attempt`] decides, until `deadline`.
    async fn run(&self, shard: ShardId, body: RequestBody, deadline: Instant) -> Result<Outcome, KvError> {
        let is_write = matches!(body, RequestBody::Write { .. });
        let mut attempt = Attempt::new(shard, is_write, deadline);
        loop {
            let now = Instant::now();
            if !attempt.may_send(now) {
                return Err(attempt.give_up());
            }
            let (target, epoch) = {
                let router = self.inner.router.borrow();
                (attempt.target(&router), router.map().epoch)
            };
            let Some(target) = target else {
                return Err(KvError::Unavailable {
                    reason: format!("the cluster map names no replica of shard {shard}"),
                });
            };
            let request = Request { shard, epoch, body: body.clone() };
            let wait = attempt.wait_for(&self.inner.config, now);
            let result = self.call(&target, Call::Kv(request), wait).await;
            let next = {
                let mut router = self.inner.router.borrow_mut();
                let now = Instant::now();
                match result {
                    Ok(Reply::Kv(response)) => attempt.on_response(&mut router, &target, response, now),
                    Ok(other) => {
                        let why = format!("answered a request with {other:?}");
                        attempt.on_lost(&mut router, &target, Lost::MaybeSent, &why, now)
                    }
                    Err(CallError::NotSent(why)) => attempt.on_lost(&mut router, &target, Lost::NotSent, &why, now),
                    Err(CallError::MaybeSent(why)) => attempt.on_lost(&mut router, &target, Lost::MaybeSent, &why, now),
                }
            };
            match next {
                Next::Send => {}
                Next::Pause(pause) => glommio::timer::sleep(pause).await,
                Next::RefreshMap => {
                    if let Err(e) = self.refresh_map_by(deadline).await {
                        match attempt.on_map_refresh_failed(&e.to_string(), Instant::now()) {
                            Next::Pause(pause) => glommio::timer::sleep(pause).await,
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

    /// One call to one core, answered within `wait`.
    async fn call(&self, target: &Target, call: Call, wait: Duration) -> Result<Reply, CallError> {
        let conn = self.conn(target);
        let (id, slot) = conn.shared.submit(call)?;
        let result = match glommio::future::timeout(wait, SlotWait { slot: &slot }).await {
            Ok(result) => result,
            Err(_) => {
                let sent = conn.shared.withdraw(id);
                let why = format!("no answer within {wait:?}");
                Err(if sent { CallError::MaybeSent(why) } else { CallError::NotSent(why) })
            }
        };
        if result.is_err() && conn.shared.failed.borrow().is_some() {
            let mut conns = self.inner.conns.borrow_mut();
            if conns.get(&(target.node, target.core)).is_some_and(|c| Rc::ptr_eq(c, &conn)) {
                conns.remove(&(target.node, target.core));
            }
        }
        result
    }

    /// The live connection to `target`, opened on first use or after a failure.
    fn conn(&self, target: &Target) -> Rc<Conn> {
        let key = (target.node, target.core);
        let mut conns = self.inner.conns.borrow_mut();
        if let Some(conn) = conns.get(&key)
            && conn.shared.failed.borrow().is_none()
        {
            return conn.clone();
        }
        let hello = Hello {
            wire_version: WIRE_VERSION,
            cluster_id: self.inner.router.borrow().map().cluster_id,
            to_node: target.node,
            role: Role::Client,
        };
        let conn = Rc::new(Conn::open(target.addr.clone(), hello, self.inner.config.connect_timeout));
        conns.insert(key, conn.clone());
        conn
    }
}

/// One connection to one core: a task that connects, writes each flush of the
/// queue as one frame, and hands replies to their waiting calls.
struct Conn {
    shared: Rc<ConnShared>,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shared.fail(String::from("the client dropped the connection"));
        self.task.cancel();
    }
}

struct ConnShared {
    /// Calls waiting for the writer.
    queue: RefCell<Vec<TaggedCall>>,
    /// Calls not yet answered, by id.
    pending: RefCell<HashMap<u64, Rc<Slot>>>,
    next_id: Cell<u64>,
    work: Signal,
    /// Why the connection is dead (`None` while it lives).
    failed: RefCell<Option<String>>,
    /// The server refused the handshake (another cluster, say): asking it again
    /// will not help.
    refused: Cell<bool>,
}

#[derive(Default)]
struct Slot {
    reply: RefCell<Option<Result<Reply, CallError>>>,
    sent: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Slot {
    fn complete(&self, result: Result<Reply, CallError>) {
        *self.reply.borrow_mut() = Some(result);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

struct SlotWait<'a> {
    slot: &'a Slot,
}

impl Future for SlotWait<'_> {
    type Output = Result<Reply, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(result) = self.slot.reply.borrow_mut().take() {
            return Poll::Ready(result);
        }
        *self.slot.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Conn {
    fn open(addr: String, hello: Hello, connect_timeout: Duration) -> Conn {
        let shared = Rc::new(ConnShared {
            queue: RefCell::new(Vec::new()),
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
            work: Signal::default(),
            failed: RefCell::new(None),
            refused: Cell::new(false),
        });
        let task = glommio::spawn_local(run_conn(shared.clone(), addr, hello, connect_timeout)).detach();
        Conn { shared, task }
    }
}

impl ConnShared {
    /// Queues `call` for the next frame.
    fn submit(&self, call: Call) -> Result<(u64, Rc<Slot>), CallError> {
        if let Some(why) = self.failed.borrow().as_ref() {
            return Err(CallError::NotSent(why.clone()));
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let slot = Rc::new(Slot::default());
        self.pending.borrow_mut().insert(id, slot.clone());
        self.queue.borrow_mut().push(TaggedCall { id, call });
        self.work.notify();
        Ok((id, slot))
    }

    /// Gives up on call `id`: it leaves the queue if it is still there (so it is
    /// never sent). Whether it had been sent.
    fn withdraw(&self, id: u64) -> bool {
        let slot = self.pending.borrow_mut().remove(&id);
        let mut queue = self.queue.borrow_mut();
        if let Some(at) = queue.iter().position(|c| c.id == id) {
            queue.remove(at);
            return false;
        }
        slot.is_none_or(|s| s.sent.get())
    }

    /// The connection is dead: every call on it fails now.
    fn fail(&self, why: String) {
        if self.failed.borrow().is_some() {
            return;
        }
        *self.failed.borrow_mut() = Some(why.clone());
        self.queue.borrow_mut().clear();
        let pending: Vec<Rc<Slot>> = self.pending.borrow_mut().drain().map(|(_, slot)| slot).collect();
        for slot in pending {
            let error =
                if slot.sent.get() { CallError::MaybeSent(why.clone()) } else { CallError::NotSent(why.clone()) };
            slot.complete(Err(error));
        }
        self.work.notify();
    }
}

async fn run_conn(shared: Rc<ConnShared>, addr: String, hello: Hello, connect_timeout: Duration) {
    let connected =
        glommio::future::timeout(connect_timeout, transport::connect(&addr, &hello, FRAME_PAYLOAD_BYTES_MAX)).await;
    let (mut reader, mut writer) = match connected {
        Ok(Ok((reader, writer, _welcome))) => (reader, writer),
        Ok(Err(e)) => {
            shared.refused.set(matches!(e, TransportError::Refused(_)));
            return shared.fail(format!("cannot connect to {addr}: {e}"));
        }
        Err(_) => return shared.fail(format!("cannot connect to {addr} within {connect_timeout:?}")),
    };
    let read = async {
        loop {
            let payload = match reader.next_frame().await {
                Ok(payload) => payload,
                Err(e) => return e,
            };
            let batch = match frame::access::<ServerBatch>(&payload).and_then(|archived| {
                rkyv::deserialize::<ServerBatch, rkyv::rancor::Error>(archived)
                    .map_err(|e| FrameError::Invalid(e.to_string()))
            }) {
                Ok(batch) => batch,
                Err(e) => return TransportError::Frame(e),
            };
            for tagged in batch.replies {
                // A reply to a withdrawn call has nobody waiting: dropped.
                let slot = shared.pending.borrow_mut().remove(&tagged.id);
                if let Some(slot) = slot {
                    slot.complete(Ok(tagged.reply));
                }
            }
        }
    };
    let write = async {
        loop {
            shared.work.wait_until(|| shared.failed.borrow().is_some() || !shared.queue.borrow().is_empty()).await;
            if shared.failed.borrow().is_some() {
                return TransportError::Closed;
            }
            let calls: Vec<TaggedCall> = std::mem::take(&mut *shared.queue.borrow_mut());
            {
                let pending = shared.pending.borrow();
                for call in &calls {
                    if let Some(slot) = pending.get(&call.id) {
                        slot.sent.set(true);
                    }
                }
            }
            let (payloads, oversized) = encode_batches(calls, |calls| ClientBatch { calls }, |batch| batch.calls);
            if oversized > 0 {
                return TransportError::Protocol("a call too large for one frame");
            }
            for (payload, _) in payloads {
                if let Err(e) = writer.write_frame(&payload).await {
                    return e;
                }
            }
        }
    };
    let why = or(read, write).await;
    shared.fail(format!("connection to {addr} lost: {why}"));
}

/// Asks `addrs` in turn for the cluster map until one answers or `deadline`.
async fn fetch_map(
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
            let hello = Hello { wire_version: WIRE_VERSION, cluster_id, to_node: 0, role: Role::Client };
            let conn = Conn::open(addr.clone(), hello, config.connect_timeout.min(left));
            let answer = match conn.shared.submit(Call::Admin(AdminCall::ClusterMap)) {
                Ok((_, slot)) => {
                    match glommio::future::timeout(config.attempt_timeout.min(left), SlotWait { slot: &slot }).await {
                        Ok(answer) => answer,
                        Err(_) => {
                            let wait = config.attempt_timeout.min(left);
                            Err(CallError::NotSent(format!("{addr}: no answer within {wait:?}")))
                        }
                    }
                }
                Err(e) => Err(e),
            };
            match answer {
                Ok(Reply::Admin(AdminReply::ClusterMap(map))) if !map.shards.is_empty() => return Ok(map),
                Ok(other) => errors.push(format!("{addr}: unexpected answer {other:?}")),
                Err(CallError::NotSent(why) | CallError::MaybeSent(why)) => {
                    if conn.shared.refused.get() {
                        // A node of another cluster will not change its mind.
                        return Err(KvError::Unavailable { reason: why });
                    }
                    errors.push(why);
                }
            }
        }
        if Instant::now() + BOOTSTRAP_PAUSE >= deadline {
            return Err(no_map(addrs, &errors));
        }
        glommio::timer::sleep(BOOTSTRAP_PAUSE).await;
    }
}
