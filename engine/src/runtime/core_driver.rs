//! The glommio driver of one core: runs a [`NodeCore`] against the real WAL
//! ([`DmaWal`]), the snapshot files and the TCP transport.
//!
//! Runs inside the core's own executor; everything here is `Rc`/`RefCell`, never
//! shared with another core. Four tasks:
//! - the loop: woken by any input (a frame, a client call, a tick, a finished
//!   batch), it runs [`NodeCore::process`] once for everything that arrived, sends
//!   one frame per destination core and the replies, and asks for a flush;
//! - the flusher: seals the WAL's open batch, writes and fdatasyncs it (one batch
//!   in flight; records appended meanwhile form the next), reports it durable;
//! - the ticker: one Raft tick per `tick_ms` for every group;
//! - the snapshot writer ([`SnapshotFiles`]): snapshot files, off the core's
//!   thread, each durable before the flusher starts a batch after it.
//!
//! No busy-polling: every task parks on a channel or a timer.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use corekv_rpc::kv::{Response, ShardId};
use corekv_rpc::map::{ClusterMap, CoreIndex, Replica};
use corekv_rpc::node::{
    AdminCall, AdminReply, ArchivedPeerBatch, Call, CoreStats, Hello, PeerBatch, Reply, Role, TaggedCall, WIRE_VERSION,
    Welcome,
};
use corekv_rpc::raft::{Entry, NodeId};
use corekv_rpc::transport::{
    Inbound, LinkState, Listener, ListenerConfig, PeerId, PeerLink, PeerLinkConfig, ReplySender,
};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use rkyv::rancor;

use super::dma_wal::DmaWal;
use super::map_file;
use super::snap_files::SnapshotFiles;
use crate::node::{ClientRef, CoreStorage, GroupRecovery, NodeCore, NodeCoreConfig, NodeError, StorageError};
use crate::raft::Snapshot;
use crate::snap::{SnapshotHeader, SnapshotReader, list_snapshots, remove_snapshot, remove_temp_files};
use crate::wal::{Record, WalConfig};

/// What one core needs to start.
#[derive(Debug, Clone)]
pub struct CoreSetup {
    /// The node core's settings.
    pub node_core: NodeCoreConfig,
    /// The cluster map.
    pub map: Arc<ClusterMap>,
    /// This node's core count.
    pub cores: u16,
    /// The address this core listens on.
    pub listen: String,
    /// `DATA/core-<i>`.
    pub core_dir: PathBuf,
    /// The WAL's settings.
    pub wal: WalConfig,
    /// Real time per Raft tick.
    pub tick: Duration,
    /// Set by SIGTERM / SIGINT: stop cleanly.
    pub shutdown: Arc<AtomicBool>,
    /// Hand-off states between this process's cores.
    pub handoffs: Arc<super::handoff_board::HandoffBoard>,
}

/// The core's durable side: the WAL's open batch and the snapshot files (written
/// off the core's thread, each durable before the next WAL batch: see
/// [`SnapshotFiles`]).
struct DiskStorage {
    wal: Rc<DmaWal>,
    snapshots: Rc<SnapshotFiles>,
    cluster_id: u64,
}

impl CoreStorage for DiskStorage {
    fn append(&mut self, record: &Record) -> Result<(), StorageError> {
        self.wal.append(record).map_err(|e| StorageError(e.to_string()))
    }

    fn append_entries(&mut self, group_id: u64, entries: &[Entry]) -> Result<(), StorageError> {
        self.wal.append_entries(group_id, entries).map_err(|e| StorageError(e.to_string()))
    }

    fn save_snapshot(&mut self, group_id: u64, snapshot: &Snapshot) -> Result<(), StorageError> {
        let header = SnapshotHeader { cluster_id: self.cluster_id, group_id, meta: snapshot.meta.clone() };
        self.snapshots.write(header, snapshot.data.clone());
        Ok(())
    }

    fn room_bytes(&self) -> u64 {
        self.wal.room_bytes()
    }

    fn pinning_groups(&self, live_max: usize) -> Vec<(u64, u64)> {
        self.wal.pinning_groups(live_max)
    }
}

/// Reads every snapshot file of a core, checking each belongs to this cluster.
fn load_snapshots(dir: &std::path::Path, cluster_id: u64) -> Result<BTreeMap<u64, Snapshot>, String> {
    remove_temp_files(dir).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for path in list_snapshots(dir).map_err(|e| e.to_string())? {
        let mut reader = SnapshotReader::open(&path).map_err(|e| e.to_string())?;
        let header = reader.header().clone();
        if header.cluster_id != cluster_id {
            return Err(format!(
                "{} belongs to cluster {:#x}, not this cluster {cluster_id:#x}",
                path.display(),
                header.cluster_id
            ));
        }
        let mut data = Vec::with_capacity(reader.data_bytes() as usize);
        while let Some(chunk) = reader.next_chunk().map_err(|e| e.to_string())? {
            data.extend_from_slice(&chunk.data);
        }
        out.insert(header.group_id, Snapshot { meta: header.meta, data: Arc::from(data) });
    }
    Ok(out)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// CPU time of the calling thread, in ns (0 where /proc does not say).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// A wake-up signal: many senders, one waiting task; extra signals merge.
#[derive(Clone)]
struct Wake(Rc<LocalSender<()>>);

impl Wake {
    fn new() -> (Wake, LocalReceiver<()>) {
        let (tx, rx) = local_channel::new_bounded(1);
        (Wake(Rc::new(tx)), rx)
    }

    fn notify(&self) {
        let _ = self.0.try_send(()); // full: a wake-up is already pending
    }
}

/// One core's shared state.
struct Core {
    setup: CoreSetup,
    node: RefCell<NodeCore>,
    storage: RefCell<DiskStorage>,
    wal: Rc<DmaWal>,
    wake: Wake,
    flush: Wake,
    /// Replies owed, by the number the node core knows the call by.
    senders: RefCell<HashMap<u64, (ReplySender, u64)>>,
    next_call: Cell<u64>,
    links: RefCell<BTreeMap<Replica, PeerLink>>,
    /// Links that were up at the last look: one that is down now broke since.
    links_up: RefCell<BTreeSet<Replica>>,
    listener: RefCell<Option<Listener>>,
    /// Set when the core must stop (shutdown or a fatal error).
    stopping: Cell<bool>,
    failure: RefCell<Option<String>>,
    /// The epoch of the map in this core's map file.
    map_saved: Cell<u64>,
}

impl Core {
    fn me(&self) -> (NodeId, CoreIndex) {
        (self.setup.node_core.node, self.setup.node_core.core)
    }

    fn fail(&self, what: String) {
        tracing::error!(core = self.setup.node_core.core, "stopping: {what}");
        self.failure.borrow_mut().get_or_insert(what);
        self.stopping.set(true);
        self.wake.notify();
        self.flush.notify();
    }

    fn stats(&self) -> CoreStats {
        let mut s = self.node.borrow().stats();
        let wal = self.wal.stats();
        s.wal_batches = wal.batches;
        s.wal_bytes = wal.batch_bytes;
        s.wal_fdatasyncs = wal.fdatasyncs;
        // What actually went on the wire: a link may merge several iterations'
        // batches into one frame.
        let (mut frames, mut messages) = (0, 0);
        for link in self.links.borrow().values() {
            let l = link.stats();
            frames += l.frames_sent;
            messages += l.messages_sent;
        }
        s.peer_frames_sent = frames;
        s.peer_messages_sent = messages;
        if let Some(listener) = self.listener.borrow().as_ref() {
            let l = listener.stats();
            s.bad_connections = l.bad_connections;
            s.client_frames_received = l.client_frames_received;
            s.client_frames_sent = l.client_frames_sent;
            s.busy += l.busy;
        }
        s.cpu_ns = thread_cpu_ns();
        s
    }

    fn admin(&self, call: &AdminCall) -> AdminReply {
        let (node, core) = self.me();
        match call {
            AdminCall::Stats => AdminReply::Stats(self.stats()),
            AdminCall::Status => {
                let node_core = self.node.borrow();
                AdminReply::Status { node, core, epoch: node_core.map().epoch, shards: node_core.status() }
            }
            AdminCall::ClusterMap => AdminReply::ClusterMap((**self.node.borrow().map()).clone()),
            AdminCall::MetaEdit(edit) => {
                self.node.borrow_mut().submit_meta(edit.clone());
                self.wake.notify();
                AdminReply::Accepted
            }
        }
    }

    /// One iteration: process everything that arrived, send, ask for a flush.
    fn iterate(&self) -> Result<(), NodeError> {
        let (frames, replies, map, handoffs) = {
            let mut node = self.node.borrow_mut();
            node.process(&mut *self.storage.borrow_mut())?;
            (node.take_frames(), node.take_replies(), node.map().clone(), node.take_handoffs())
        };
        // A newer map is kept before anything it caused leaves this core (a restart
        // must not route or place by an older one).
        if map.epoch > self.map_saved.get() {
            map_file::save(&self.setup.core_dir, &map).map_err(|e| NodeError::Storage(StorageError(e)))?;
            self.map_saved.set(map.epoch);
        }
        for (dest, batch) in frames {
            self.send(dest, batch);
        }
        for (core, state) in handoffs {
            self.setup.handoffs.post(core, state);
        }
        self.report_broken_links();
        let mut senders = self.senders.borrow_mut();
        for (client, response) in replies {
            if let Some((sender, id)) = senders.remove(&client.conn) {
                // A closed connection: nobody is left to read the answer.
                let _ = sender.reply(id, Reply::Kv(response));
            }
        }
        drop(senders);
        if self.node.borrow().has_unsealed() {
            self.flush.notify();
        }
        Ok(())
    }

    /// Tells the node core about every link that went down since the last look.
    fn report_broken_links(&self) {
        let mut broken = Vec::new();
        {
            let links = self.links.borrow();
            let mut up = self.links_up.borrow_mut();
            for (&dest, link) in links.iter() {
                match link.state() {
                    LinkState::Up => {
                        up.insert(dest);
                    }
                    LinkState::Down if up.remove(&dest) => broken.push(dest),
                    _ => {}
                }
            }
        }
        for dest in broken {
            self.node.borrow_mut().report_unreachable(dest);
        }
    }

    fn send(&self, dest: Replica, batch: PeerBatch) {
        let mut links = self.links.borrow_mut();
        let link = links.entry(dest).or_insert_with(|| {
            let (node, core) = self.me();
            // The newest map knows nodes that joined after this core started.
            let addr = self.node.borrow().map().core_addr(dest.node, dest.core).unwrap_or_default();
            let hello = Hello {
                wire_version: WIRE_VERSION,
                cluster_id: self.setup.map.cluster_id,
                to_node: dest.node,
                role: Role::Peer { node, core, cores: self.setup.cores },
            };
            PeerLink::spawn(addr, hello, PeerLinkConfig::default())
        });
        link.note_clock(batch.clock);
        link.note_epoch(batch.epoch);
        for message in batch.messages {
            // A full queue or a link that is down drops the message (counted by the
            // link); Raft retransmits.
            let _ = link.try_send(message);
        }
    }
}

/// The transport's view of a core.
struct CoreInbound(Rc<Core>);

impl Inbound for CoreInbound {
    fn hello(&self, hello: &Hello, from: SocketAddr) -> Result<Welcome, String> {
        let core = &self.0;
        let (node, core_index) = core.me();
        let cluster_id = core.setup.map.cluster_id;
        if hello.wire_version != WIRE_VERSION {
            return Err(format!("wire version {} is not this server's {WIRE_VERSION}", hello.wire_version));
        }
        let client_asks = matches!(hello.role, Role::Client) && hello.cluster_id == 0;
        if hello.cluster_id != cluster_id && !client_asks {
            return Err(format!(
                "{from} belongs to cluster {:#x}, this server to cluster {cluster_id:#x}",
                hello.cluster_id
            ));
        }
        if hello.to_node != 0 && hello.to_node != node {
            return Err(format!("{from} wants node {}, this is node {node}", hello.to_node));
        }
        if let Role::Peer { node: peer, cores, .. } = hello.role {
            match core.node.borrow().map().node(peer) {
                None => return Err(format!("node {peer} is not in this cluster's map")),
                Some(info) if info.state == corekv_rpc::map::NodeState::Removed => {
                    return Err(format!("node {peer} was removed from this cluster; its id is never reused"));
                }
                Some(info) if info.cores != cores => {
                    return Err(format!("node {peer} says it has {cores} cores, the cluster map says {}", info.cores));
                }
                Some(_) => {}
            }
        }
        Ok(Welcome { cluster_id, node, core: core_index, cores: core.setup.cores })
    }

    fn peer_batch(&self, from: PeerId, batch: &ArchivedPeerBatch) {
        let core = &self.0;
        match rkyv::deserialize::<PeerBatch, rancor::Error>(batch) {
            Ok(batch) => core.node.borrow_mut().step_peer(from.node, batch),
            Err(e) => tracing::warn!("dropping a frame from node {}: {e}", from.node),
        }
        core.wake.notify();
    }

    fn client_call(&self, call: TaggedCall, replies: &ReplySender) {
        let core = &self.0;
        match call.call {
            Call::Admin(admin) => {
                let _ = replies.reply(call.id, Reply::Admin(core.admin(&admin)));
            }
            Call::Kv(request) => {
                if core.stopping.get() {
                    core.node.borrow_mut().stats_mut().busy += 1;
                    let _ = replies.reply(call.id, Reply::Kv(Response::Busy));
                    return;
                }
                let n = core.next_call.get();
                core.next_call.set(n + 1);
                core.senders.borrow_mut().insert(n, (replies.clone(), call.id));
                let mut node = core.node.borrow_mut();
                // The clock a request is judged by (a read at a version beyond it
                // is refused) is now, not the last tick: a core that was paused
                // or starved of CPU serves its queued requests before its timer.
                node.set_now_ms(now_ms());
                node.client_request(ClientRef { conn: n, id: call.id }, request);
                drop(node);
                core.wake.notify();
            }
        }
    }
}

/// Runs one core until shutdown or a fatal error (returned).
pub async fn run_core(setup: CoreSetup) -> Result<(), String> {
    let core_index = setup.node_core.core;
    let cluster_id = setup.map.cluster_id;
    let (wal, recovered) =
        DmaWal::open(setup.core_dir.join("wal"), setup.wal.clone()).await.map_err(|e| e.to_string())?;
    let wal = Rc::new(wal);
    let snap_dir = setup.core_dir.join("snap");
    // Replicas dropped before a crash whose snapshot files were not deleted yet.
    for &group_id in &recovered.dropped {
        remove_snapshot(&snap_dir, group_id).map_err(|e| e.to_string())?;
    }
    let mut snapshots = load_snapshots(&snap_dir, cluster_id)?;
    let mut groups: BTreeMap<ShardId, GroupRecovery> = BTreeMap::new();
    let mut logs = recovered.groups;
    let ids: std::collections::BTreeSet<u64> = logs.keys().chain(snapshots.keys()).copied().collect();
    for id in ids {
        let shard = ShardId::try_from(id).map_err(|_| format!("core {core_index}: group {id} is not a shard"))?;
        groups.insert(shard, GroupRecovery { log: logs.remove(&id), snapshot: snapshots.remove(&id) });
    }
    let snapshot_files = SnapshotFiles::new(snap_dir);
    let snapshot_writer = glommio::spawn_local(snapshot_files.clone().run());
    let mut storage = DiskStorage { wal: wal.clone(), snapshots: snapshot_files.clone(), cluster_id };
    let map = match map_file::load(&setup.core_dir)? {
        Some(saved) if saved.cluster_id != cluster_id || saved.shard_count() != setup.map.shard_count() => {
            return Err(format!(
                "{}: a map of cluster {:#x} with {} shards, not this cluster's",
                setup.core_dir.join("map").display(),
                saved.cluster_id,
                saved.shard_count()
            ));
        }
        Some(saved) if saved.epoch > setup.map.epoch => Arc::new(saved),
        _ => setup.map.clone(),
    };
    let map_saved = map.epoch;
    let node =
        NodeCore::open(setup.node_core.clone(), map, groups, &mut storage, now_ms()).map_err(|e| e.to_string())?;
    // Bootstrap records are durable before this core says anything.
    snapshot_files.settled().await?;
    wal.flush().await.map_err(|e| e.to_string())?;
    tracing::info!(core = core_index, shards = node.shards().len(), "core recovered");
    let (wake, wake_rx) = Wake::new();
    let (flush, flush_rx) = Wake::new();
    let core = Rc::new(Core {
        setup: setup.clone(),
        node: RefCell::new(node),
        storage: RefCell::new(storage),
        wal: wal.clone(),
        wake,
        flush,
        senders: RefCell::new(HashMap::new()),
        next_call: Cell::new(1),
        links: RefCell::new(BTreeMap::new()),
        links_up: RefCell::new(BTreeSet::new()),
        listener: RefCell::new(None),
        stopping: Cell::new(false),
        failure: RefCell::new(None),
        map_saved: Cell::new(map_saved),
    });
    let inbound: Rc<dyn Inbound> = Rc::new(CoreInbound(core.clone()));
    let listener = Listener::bind(&setup.listen, inbound, ListenerConfig::default())
        .map_err(|e| format!("core {core_index}: cannot listen on {}: {e}", setup.listen))?;
    tracing::info!(core = core_index, addr = %listener.local_addr(), "listening");
    *core.listener.borrow_mut() = Some(listener);
    let flusher = glommio::spawn_local(flusher(core.clone(), flush_rx));
    let ticker = glommio::spawn_local(ticker(core.clone()));
    while !core.stopping.get() {
        if wake_rx.recv().await.is_none() {
            break;
        }
        if let Err(e) = core.iterate() {
            core.fail(e.to_string());
        }
    }
    // Shut down: no new connections, finish the batch in flight, sync, close.
    let listener = core.listener.borrow_mut().take();
    if let Some(listener) = listener {
        listener.stop().await;
    }
    core.flush.notify();
    ticker.await;
    flusher.await;
    core.links.borrow_mut().clear();
    if let Some(failure) = core.failure.borrow_mut().take() {
        return Err(failure);
    }
    // Records that waited for a batch of their own (commit indexes, compaction
    // markers) are written before the WAL closes, after their files.
    snapshot_files.settled().await?;
    core.wal.flush().await.map_err(|e| e.to_string())?;
    snapshot_files.close();
    snapshot_writer.await;
    drop(core);
    match Rc::try_unwrap(wal) {
        Ok(wal) => wal.close().await.map_err(|e| e.to_string())?,
        Err(_) => tracing::warn!(core = core_index, "WAL still shared at shutdown; closed by drop"),
    }
    tracing::info!(core = core_index, "core stopped");
    Ok(())
}

async fn flusher(core: Rc<Core>, signal: LocalReceiver<()>) {
    loop {
        while core.node.borrow().has_unsealed() {
            let token = core.node.borrow_mut().seal();
            // The batch may hold snapshot markers: their files first (no yield
            // between this and the batch's start when none is pending).
            let snapshots = core.storage.borrow().snapshots.clone();
            if let Err(e) = snapshots.settled().await {
                core.fail(e);
                return;
            }
            match core.wal.flush().await {
                Ok(_) => {
                    core.node.borrow_mut().on_durable(token);
                    let dropped = core.node.borrow_mut().take_dropped();
                    for shard in dropped {
                        if let Err(e) = remove_snapshot(snapshots.dir(), u64::from(shard)) {
                            core.fail(format!("deleting the snapshot of moved shard {shard}: {e}"));
                            return;
                        }
                    }
                    core.wake.notify();
                }
                Err(e) => {
                    core.fail(format!("WAL: {e}"));
                    return;
                }
            }
        }
        if core.stopping.get() {
            return;
        }
        if signal.recv().await.is_none() {
            return;
        }
    }
}

async fn ticker(core: Rc<Core>) {
    let tick = core.setup.tick;
    loop {
        glommio::timer::sleep(tick).await;
        if core.setup.shutdown.load(Ordering::Relaxed) && !core.stopping.get() {
            tracing::info!(core = core.setup.node_core.core, "shutting down");
            core.stopping.set(true);
        }
        if core.stopping.get() {
            core.wake.notify();
            core.flush.notify();
            return;
        }
        {
            let mut node = core.node.borrow_mut();
            for state in core.setup.handoffs.take(core.setup.node_core.core) {
                node.receive_handoff(state);
            }
            node.tick(now_ms());
        }
        core.wake.notify();
    }
}
