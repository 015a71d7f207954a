//! The whole-cluster simulator of node cores (DESIGN §11): N nodes of C cores,
//! each core a [`NodeCore`] with its own simulated disk, many Raft groups per
//! core, clients that retry, one thread, one seed, simulated time.
//!
//! Where the single-group simulator ([`super::Sim`]) proves the Raft core, this
//! one proves the node core the runtime drives, through the same loop a server
//! runs (`tick` / `step_peer` / `client_request`, `process`, `take_frames`,
//! `take_replies`, `seal` … `on_durable`) and the same recovery path
//! (`SyncWal::open` on the core's disk, `GroupRecovery` per shard,
//! `NodeCore::open`). Faults:
//! - network between node cores and to clients: drop, duplicate, delay, long delay
//!   (reordering), partitions and per-link cuts ([`super::net`]);
//! - disks: one WAL batch in flight per core with a random fdatasync latency; a
//!   crash loses unsynced writes and may tear the last one, and drops everything
//!   in flight to or from the node's old incarnation;
//! - clocks: every node ticks at its own rate and reads its own physical clock
//!   (offset and drift) for the HLC.
//!
//! What a run checks: clients record every operation (invoke and return in
//! simulated microseconds) and the history must be linearizable ([`crate::check`];
//! a checker that runs out of budget fails the run); replicas of a shard that
//! applied up to the same index hold byte-identical state machines (checked as
//! the run goes and at the end); after healing, every replica holds every
//! acknowledged write. A failure is a [`SimFailure`] naming `CORE_SEED=<seed>`,
//! and a seed reproduces its run bit for bit ([`Cluster::trace_hash`]). No clock,
//! thread, socket, file, hash-ordered map or global RNG is used here.

mod checks;
mod client;
mod config;
mod disk;
mod report;
pub mod script;
#[cfg(test)]
mod tests;
mod txn_client;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use corekv_rpc::kv::{Request, Response, ShardId};
use corekv_rpc::map::{ClusterMap, CoreIndex, NodeInfo, NodeState, Replica, ShardReplicas};
use corekv_rpc::node::{PeerBatch, PeerMessage, TxnPeerMessage};
use corekv_rpc::raft::{Index, NodeId};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::invariants::chain;
use super::net::{self, Links, NetFaults};
use crate::check::{self, Call, Operation};
use crate::node::meta::{META_SHARD, MetaEdit};
use crate::node::{ClientRef, NodeCore, NodeCoreConfig};
use crate::placement::moves::{self, MoveError};
use crate::placement::nodes::{self, NodeEditError};
use crate::raft::Role;
use crate::wal::WalIdentity;
use client::{Attempt, Client, Next};
pub use config::{ClusterConfig, TxnCrashPoint, TxnCrashes};
use disk::{BatchStart, CoreDisk};
pub use report::{ClusterStats, FailureKind, Report, SimFailure};
pub use txn_client::TxnStats;
use txn_client::{TxnClient, TxnNext};

/// The cluster id in every simulated WAL header and map.
const SIM_CLUSTER_ID: u64 = 0xc0de;
/// Node clocks start near a real epoch time, so versions look like real ones.
const CLOCK_BASE_MS: u64 = 1_700_000_000_000;
/// Replicas are compared this often (simulated).
const CHECK_INTERVAL_US: u64 = 20_000;
/// Loop iterations one input may cause on a core before the core is declared
/// stuck (each iteration handles new Readys; a healthy core settles in a few).
const DRIVE_ROUNDS_MAX: usize = 64;
/// Peer frames the whole cluster may send between two checks: about 50 times
/// what a busy simulated cluster sends. More is a message storm (a replication
/// loop that never converges), reported instead of simulated for minutes.
const FRAMES_PER_CHECK_MAX: u64 = 2_000;
/// How long the end of a run waits for the cluster to settle after healing.
const SETTLE_MS_MAX: u64 = 10_000;
/// Final reads get this long each before the run counts as stuck.
const FINAL_READ_DEADLINE_MS: u64 = 20_000;
/// Operations printed from a shrunk non-linearizable key history.
const WITNESS_OPS_SHOWN_MAX: usize = 40;
/// Client numbers from here on are transactional clients.
const TXN_CLIENT_BASE: usize = 1 << 20;

#[derive(Debug)]
enum Event {
    Tick { node: NodeId, incarnation: u64 },
    Frame { from: Replica, from_incarnation: u64, to: Replica, to_incarnation: u64, batch: PeerBatch },
    FsyncDone { at: Replica, incarnation: u64 },
    Request { client: usize, to: Replica, to_incarnation: u64, attempt: u64, request: Request },
    Reply { client: usize, from: NodeId, from_incarnation: u64, attempt: u64, response: Response },
    ClientNext { client: usize },
    ClientRetry { client: usize, attempt: u64 },
    AttemptTimeout { client: usize, attempt: u64 },
    Check,
    Restart { node: NodeId },
}

/// The steps of a replica move, as the shard's configuration shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MoveStage {
    /// The map wants the target; the shard has not added it yet.
    Planned,
    /// The target is a learner: it is being sent a snapshot and the log.
    Learner,
    /// The target votes; the source still does too.
    Promoted,
    /// The source is no longer a member; the map still names it.
    SourceRemoved,
    /// The map no longer names the source, which deletes its replica.
    Settled,
}

/// A node's clock: its ticks and its physical clock run at `rate_permille` of
/// simulated time, the physical clock `offset_ms` ahead.
#[derive(Debug, Clone, Copy)]
struct NodeClock {
    rate_permille: u64,
    offset_ms: u64,
}

impl NodeClock {
    fn local_ms(&self, now_us: u64) -> u64 {
        CLOCK_BASE_MS + self.offset_ms + now_us * self.rate_permille / 1_000_000
    }

    fn tick_us(&self, nominal_us: u64) -> u64 {
        nominal_us * 1000 / self.rate_permille
    }
}

#[derive(Debug)]
struct SimCore {
    core: Option<NodeCore>,
    disk: CoreDisk,
}

#[derive(Debug)]
struct SimNode {
    up: bool,
    incarnation: u64,
    clock: NodeClock,
    cores: Vec<SimCore>,
}

/// A simulated cluster of node cores.
pub struct Cluster {
    cfg: ClusterConfig,
    /// The newest map any core installed (clients route by it).
    map: Arc<ClusterMap>,
    /// The founding map every node starts from.
    founding: Arc<ClusterMap>,
    /// Map edits asked for that the newest map does not show yet.
    edits: Vec<MetaEdit>,
    /// Joining nodes not started yet: they start once the map shows them.
    joining: BTreeSet<NodeId>,
    keys: Vec<Vec<u8>>,
    rng: ChaCha8Rng,
    now_us: u64,
    seq: u64,
    events: BTreeMap<(u64, u64), Event>,
    nodes: BTreeMap<NodeId, SimNode>,
    links: Links,
    clients: Vec<Client>,
    /// Transactional clients (numbered from `TXN_CLIENT_BASE`).
    txn_clients: Vec<TxnClient>,
    /// The scripted client (`script::SCRIPT_CLIENT`), idle unless a test drives it.
    script: script::Script,
    /// Bank accounts.
    accounts: Vec<Vec<u8>>,
    /// Every transaction attempt recorded.
    txn_history: Vec<crate::check::serial::Txn>,
    /// Clients start new random operations while this holds.
    load: bool,
    /// Keys the final client still has to read.
    final_reads: VecDeque<Vec<u8>>,
    history: Vec<Operation>,
    /// (shard, applied index) -> (first node seen there, state digest).
    digests: BTreeMap<(ShardId, Index), (NodeId, u64)>,
    /// (shard, node) -> applied index last compared.
    compared: BTreeMap<(ShardId, NodeId), Index>,
    /// `stats.frames_sent` at the last check.
    frames_at_last_check: u64,
    trace: u64,
    stats: ClusterStats,
    failure: Option<SimFailure>,
}

/// The cluster map of the simulator: shard `s` on nodes `s, s+1, …` (mod n), its
/// preferred leader first (so leaders spread over nodes), each replica on a core
/// that varies with the shard and the replica (so every core holds groups and
/// frames cross between different core pairs).
pub fn build_map(nodes: u64, cores: u16, shards: u32, replication: usize) -> ClusterMap {
    assert!(nodes >= replication as u64 && cores >= 1 && shards >= 1, "a map needs enough nodes and cores");
    let nodes_info: Vec<NodeInfo> = (1..=nodes)
        .map(|id| NodeInfo { id, addr: format!("10.0.0.{id}:7000"), cores, state: corekv_rpc::map::NodeState::Up })
        .collect();
    let shards = (0..shards)
        .map(|s| {
            ShardReplicas::new(
                (0..replication as u64)
                    .map(|k| {
                        let node = (u64::from(s) + k) % nodes + 1;
                        let core = ((u64::from(s) / nodes + k) % u64::from(cores)) as CoreIndex;
                        Replica { node, core }
                    })
                    .collect(),
            )
        })
        .collect();
    let meta = crate::placement::meta_replicas(&nodes_info);
    ClusterMap { cluster_id: SIM_CLUSTER_ID, epoch: 1, nodes: nodes_info, shards, meta, rebalance: false }
}

/// `count` keys over as many different shards as possible.
fn pick_keys(map: &ClusterMap, count: usize) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut shards_used = std::collections::BTreeSet::new();
    let candidates: Vec<Vec<u8>> = (0..1000).map(|i| format!("key{i}").into_bytes()).collect();
    for key in &candidates {
        if keys.len() < count && shards_used.insert(map.shard_of(key)) {
            keys.push(key.clone());
        }
    }
    for key in &candidates {
        if keys.len() < count && !keys.contains(key) {
            keys.push(key.clone());
        }
    }
    keys
}

impl Cluster {
    /// Builds the cluster, starts every node from an empty disk and lets the
    /// clients loose.
    pub fn new(cfg: ClusterConfig) -> Cluster {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let founders = cfg.nodes - cfg.joining_nodes;
        let mut map = build_map(founders - cfg.spare_nodes, cfg.cores, cfg.shards, cfg.replication);
        map.nodes = (1..=founders)
            .map(|id| NodeInfo {
                id,
                addr: format!("10.0.0.{id}:7000"),
                cores: cfg.cores,
                state: corekv_rpc::map::NodeState::Up,
            })
            .collect();
        let map = Arc::new(map);
        let keys = pick_keys(&map, cfg.keys);
        let mut nodes = BTreeMap::new();
        for id in 1..=cfg.nodes {
            let drift = cfg.clock_drift_permille;
            let rate_permille = 1000 - drift + rng.random_range(0..=2 * drift);
            let offset_ms = rng.random_range(0..=cfg.clock_offset_ms_max);
            let cores = (0..cfg.cores)
                .map(|core| SimCore {
                    core: None,
                    disk: CoreDisk::new(WalIdentity {
                        cluster_id: SIM_CLUSTER_ID,
                        node_id: id,
                        core_id: u32::from(core),
                    }),
                })
                .collect();
            let node = SimNode { up: false, incarnation: 0, clock: NodeClock { rate_permille, offset_ms }, cores };
            nodes.insert(id, node);
        }
        let clients = (0..cfg.clients as u64).map(|i| Client::new(i, &mut rng)).collect();
        let txn_clients =
            (0..cfg.txn_clients as u64).map(|i| TxnClient::new(1000 + i, cfg.txn_policy, &mut rng)).collect();
        let accounts = (0..cfg.accounts).map(|i| format!("acct{i}").into_bytes()).collect();
        let mut cluster = Cluster {
            founding: map.clone(),
            edits: Vec::new(),
            joining: BTreeSet::new(),
            map,
            keys,
            rng,
            now_us: 0,
            seq: 0,
            events: BTreeMap::new(),
            nodes,
            links: Links::default(),
            clients,
            txn_clients,
            script: script::Script::default(),
            accounts,
            txn_history: Vec::new(),
            load: true,
            final_reads: VecDeque::new(),
            history: Vec::new(),
            digests: BTreeMap::new(),
            compared: BTreeMap::new(),
            frames_at_last_check: 0,
            trace: 0,
            stats: ClusterStats::default(),
            failure: None,
            cfg,
        };
        for id in 1..=cluster.cfg.nodes - cluster.cfg.joining_nodes {
            cluster.start(id);
        }
        for client in 0..cluster.clients.len() {
            for _ in 0..cluster.cfg.client_ops_in_flight_max {
                let think = cluster.think_us();
                cluster.schedule(think, Event::ClientNext { client });
            }
        }
        for client in 0..cluster.txn_clients.len() {
            let think = cluster.think_us();
            cluster.schedule(think, Event::ClientNext { client: TXN_CLIENT_BASE + client });
        }
        cluster.schedule(CHECK_INTERVAL_US, Event::Check);
        cluster
    }

    // ----- bookkeeping -------------------------------------------------------------

    fn schedule(&mut self, after_us: u64, event: Event) {
        self.seq += 1;
        self.events.insert((self.now_us + after_us, self.seq), event);
    }

    fn record(&mut self, parts: &[u64]) {
        for &p in parts {
            self.trace = chain(self.trace, &p.to_le_bytes());
        }
    }

    fn fail(&mut self, kind: FailureKind, message: String) {
        if self.failure.is_none() {
            self.failure = Some(SimFailure { seed: self.cfg.seed, kind, at_ms: self.now_us / 1000, message });
        }
    }

    fn think_us(&mut self) -> u64 {
        let (lo, hi) = self.cfg.think_us;
        self.rng.random_range(lo..=hi)
    }

    fn live(&self, node: NodeId, incarnation: u64) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.up && n.incarnation == incarnation)
    }

    fn core(&self, at: Replica) -> Option<&NodeCore> {
        let n = self.nodes.get(&at.node)?;
        n.cores.get(usize::from(at.core))?.core.as_ref()
    }

    // ----- queries -----------------------------------------------------------------

    /// The seed of this run.
    pub fn seed(&self) -> u64 {
        self.cfg.seed
    }

    /// Current simulated time in milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.now_us / 1000
    }

    /// The cluster map.
    pub fn map(&self) -> &ClusterMap {
        &self.map
    }

    /// Ids of every node.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// True when `node` runs.
    pub fn is_up(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.up)
    }

    /// The running replica of `shard` that leads the highest term, if any.
    pub fn leader_of(&self, shard: ShardId) -> Option<NodeId> {
        self.map
            .members(shard)
            .filter_map(|&r| self.core(r).and_then(|c| c.raft_status(shard)).map(|st| (r.node, st)))
            .filter(|(_, st)| st.role == Role::Leader)
            .max_by_key(|(_, st)| st.term)
            .map(|(node, _)| node)
    }

    /// The node that leads the most shards now (ties: the lowest id).
    pub fn busiest_leader(&self) -> Option<NodeId> {
        let mut led: BTreeMap<NodeId, usize> = BTreeMap::new();
        for shard in 0..self.map.shard_count() {
            if let Some(node) = self.leader_of(shard) {
                *led.entry(node).or_default() += 1;
            }
        }
        led.iter().max_by_key(|&(&node, &count)| (count, std::cmp::Reverse(node))).map(|(&node, _)| node)
    }

    /// Counters so far.
    pub fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    /// The hash of every event handled so far, in order.
    pub fn trace_hash(&self) -> u64 {
        self.trace
    }

    /// The failure, once a check failed (the run then stands still).
    pub fn failure(&self) -> Option<&SimFailure> {
        self.failure.as_ref()
    }

    // ----- faults ------------------------------------------------------------------

    /// Changes the fault rates between node cores.
    pub fn set_faults(&mut self, faults: NetFaults) {
        self.cfg.faults = faults;
    }

    /// Changes the fault rates between clients and node cores.
    pub fn set_client_faults(&mut self, faults: NetFaults) {
        self.cfg.client_faults = faults;
    }

    /// Cuts `node` off from every other node.
    pub fn isolate(&mut self, node: NodeId) {
        let all = self.node_ids();
        self.links.isolate(node, &all);
        self.record(&[20, node]);
    }

    /// Cuts the link between `a` and `b`, both ways.
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.links.cut(a, b);
        self.record(&[21, a, b]);
    }

    /// Splits the nodes into groups that only reach inside themselves.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        let all = self.node_ids();
        self.links.partition(groups, &all);
        self.record(&[22, groups.len() as u64]);
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.links.heal();
        self.record(&[23]);
    }

    /// Power loss on `node`: its cores stop, unsynced WAL writes are lost (the
    /// last one maybe torn), everything in flight to or from it is dropped.
    pub fn crash(&mut self, node: NodeId) {
        let Some(n) = self.nodes.get_mut(&node) else { return };
        if !n.up {
            return;
        }
        n.up = false;
        n.incarnation += 1;
        for sc in &mut n.cores {
            if let Some(core) = sc.core.take() {
                add_core_stats(&mut self.stats, &core);
            }
            if sc.disk.crash(self.rng.random::<u64>()) {
                self.stats.core_crashes_with_unsynced_writes += 1;
            }
        }
        self.stats.crashes += 1;
        self.record(&[24, node]);
        // Every other core's connections to the dead node's cores break, as a
        // server's links do (the frames in flight on them are lost).
        let cores = self.cfg.cores;
        let live: Vec<Replica> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.up)
            .flat_map(|(&id, _)| (0..cores).map(move |core| Replica { node: id, core }))
            .collect();
        // They act on it at their next iteration.
        for at in live {
            if let Some(nc) = self.core_mut(at) {
                for core in 0..cores {
                    nc.report_unreachable(Replica { node, core });
                }
            }
        }
    }

    // ----- replica moves, asked of the meta group as an operator does ------------

    /// Asks the meta group to move group `shard`'s replica on node `from` to core
    /// `to` (refused at once when the newest map says it cannot be). The edit is
    /// handed to a running core, which passes it to the meta leader; it is
    /// handed over again at every check until the map shows it. The shard's leader
    /// does the rest, and reports to the meta group when it is done.
    pub fn move_replica(&mut self, shard: ShardId, from: NodeId, to: Replica) -> Result<(), MoveError> {
        moves::begin(&self.map, shard, from, to)?;
        self.record(&[40, u64::from(shard), from, to.node]);
        self.stats.moves_started += 1;
        self.submit(MetaEdit::Begin { shard, from, to });
        Ok(())
    }

    /// Asks the meta group to hand group `shard`'s replica on node `to.node`
    /// over to core `to.core` of that node.
    pub fn relocate(&mut self, shard: ShardId, to: Replica) -> Result<(), MoveError> {
        moves::relocate(&self.map, shard, to)?;
        self.record(&[45, u64::from(shard), to.node, u64::from(to.core)]);
        self.stats.moves_started += 1;
        self.submit(MetaEdit::Relocate { shard, to });
        Ok(())
    }

    /// Asks the meta group to turn group `shard`'s move to `target` around.
    pub fn revert_move(&mut self, shard: ShardId, target: NodeId) -> Result<(), MoveError> {
        moves::revert(&self.map, shard, target)?;
        self.record(&[41, u64::from(shard), target]);
        self.stats.moves_reverted += 1;
        self.submit(MetaEdit::Revert { shard, target });
        Ok(())
    }

    /// Node `node` (one of the `joining_nodes`) joins: the meta group adds it to
    /// the map, and it starts with that map once the map shows it, as a server
    /// started with `--join` does.
    pub fn join(&mut self, node: NodeId) {
        self.record(&[42, node]);
        let info =
            NodeInfo { id: node, addr: format!("10.0.0.{node}:7000"), cores: self.cfg.cores, state: NodeState::Up };
        self.joining.insert(node);
        self.submit(MetaEdit::AddNode { node: info });
    }

    /// Asks the meta group to drain `node`.
    pub fn drain(&mut self, node: NodeId) -> Result<(), NodeEditError> {
        nodes::set_state(&self.map, node, NodeState::Draining, false)?;
        self.record(&[43, node]);
        self.submit(MetaEdit::SetNodeState { node, state: NodeState::Draining, force: false });
        Ok(())
    }

    /// Asks the meta group to remove `node` (`force`: whether drained or not).
    pub fn remove(&mut self, node: NodeId, force: bool) -> Result<(), NodeEditError> {
        nodes::set_state(&self.map, node, NodeState::Removed, force)?;
        self.record(&[44, node, u64::from(force)]);
        self.submit(MetaEdit::SetNodeState { node, state: NodeState::Removed, force });
        Ok(())
    }

    /// Starts the joining nodes the newest map shows.
    fn start_joined(&mut self) {
        let shown: Vec<NodeId> = self.joining.iter().copied().filter(|&n| self.map.node(n).is_some()).collect();
        for node in shown {
            self.joining.remove(&node);
            let map = self.map.clone();
            for sc in &mut self.nodes.get_mut(&node).expect("known node").cores {
                sc.disk.map = Some(map.clone());
            }
            self.start(node);
        }
    }

    fn submit(&mut self, edit: MetaEdit) {
        self.edits.push(edit);
        self.submit_edits();
    }

    /// Hands every edit the newest map does not show yet to a running core: a
    /// meta replica, which passes it to its leader.
    fn submit_edits(&mut self) {
        let map = self.map.clone();
        self.edits.retain(|edit| match edit {
            MetaEdit::Begin { shard, to, .. } => !map.replicas(*shard).contains(to),
            MetaEdit::Revert { shard, target } => map.replicas(*shard).iter().any(|r| r.node == *target),
            MetaEdit::Relocate { shard, to } => {
                !map.replicas(*shard).contains(to) && map.handoff_of(*shard).is_none_or(|h| h.to != *to)
            }
            MetaEdit::Settle { .. } | MetaEdit::Relocated { .. } => false,
            MetaEdit::AddNode { .. }
            | MetaEdit::SetNodeState { .. }
            | MetaEdit::SetRebalance { .. }
            | MetaEdit::Lead { .. }
            | MetaEdit::GrowMeta { .. }
            | MetaEdit::ShrinkMeta { .. } => {
                matches!(crate::node::meta::apply_edit(edit, &map), Ok(Some(_)))
            }
        });
        if self.edits.is_empty() {
            return;
        }
        let Some(at) = self.map.members(META_SHARD).copied().find(|r| self.core(*r).is_some()) else { return };
        for edit in self.edits.clone() {
            self.core_mut(at).expect("running").submit_meta(edit);
        }
        self.drive(at);
    }

    /// Every running core's live WAL segments, with the most it allows before
    /// it snapshots the groups that keep the oldest.
    pub fn wal_segments(&self) -> Vec<(Replica, usize, usize)> {
        let mut out = Vec::new();
        for (&node, sn) in &self.nodes {
            for (core, sc) in sn.cores.iter().enumerate() {
                let at = Replica { node, core: core as u16 };
                if let (Some(live), Some(running)) = (sc.disk.wal_segments(), self.core(at)) {
                    out.push((at, live, running.wal_segments_allowed()));
                }
            }
        }
        out
    }

    /// Group `shard`'s configuration as its leader has it (None: no leader runs
    /// now).
    pub fn leader_conf(&self, shard: ShardId) -> Option<corekv_rpc::raft::ConfState> {
        let leader = self.leader_of(shard)?;
        let core = self.map.core_of(shard, leader)?;
        Some(self.core(Replica { node: leader, core })?.raft_status(shard)?.conf)
    }

    /// How far shard `shard`'s move to node `target` got, as its leader's
    /// configuration says (None: no leader runs now).
    pub fn move_stage(&self, shard: ShardId, target: NodeId) -> Option<MoveStage> {
        if self.map.outgoing(shard).is_empty() && self.map.replicas(shard).iter().any(|r| r.node == target) {
            return Some(MoveStage::Settled);
        }
        let conf = self.leader_conf(shard)?;
        let leaving = self.map.outgoing(shard).iter().any(|r| conf.voters.contains(&r.node));
        Some(if conf.learners.contains(&target) {
            MoveStage::Learner
        } else if !conf.voters.contains(&target) {
            MoveStage::Planned
        } else if leaving {
            MoveStage::Promoted
        } else {
            MoveStage::SourceRemoved
        })
    }

    /// True when no move is under way.
    pub fn moves_settled(&self) -> bool {
        self.map.groups().all(|s| self.map.outgoing(s).is_empty() && self.map.handoff_of(s).is_none())
    }

    /// The shards whose replica on `node` the newest map wants.
    pub fn shards_of(&self, node: NodeId) -> Vec<ShardId> {
        (0..self.map.shard_count()).filter(|&s| self.map.replicas(s).iter().any(|r| r.node == node)).collect()
    }

    /// Restarts a crashed `node` from its disks.
    pub fn restart(&mut self, node: NodeId) {
        // A node that has not joined yet (or never will) has nothing to restart.
        let founder = node <= self.cfg.nodes - self.cfg.joining_nodes;
        let joined = founder || (self.map.node(node).is_some() && !self.joining.contains(&node));
        if joined && self.nodes.get(&node).is_some_and(|n| !n.up) {
            self.record(&[25, node]);
            self.start(node);
        }
    }

    /// Opens every core of `id` from its disk, as a server starting does.
    fn start(&mut self, id: NodeId) {
        let now_us = self.now_us;
        let cores = self.cfg.cores;
        // Every core starts from the newest map any of the node's cores kept.
        let newest = self.nodes[&id]
            .cores
            .iter()
            .filter_map(|sc| sc.disk.map.clone())
            .max_by_key(|m| m.epoch)
            .unwrap_or_else(|| self.founding.clone());
        for core in 0..cores {
            let mut cfg = NodeCoreConfig::new(id, core);
            cfg.raft = self.cfg.raft.clone();
            cfg.snapshot_log_bytes = self.cfg.snapshot_log_bytes;
            cfg.wal_segment_bytes = disk::SEGMENT_BYTES;
            cfg.planted_bug = self.cfg.planted_bug;
            cfg.auto_rebalance = self.cfg.auto_rebalance;
            cfg.dead_after_ticks = self.cfg.dead_after_ticks;
            cfg.seed = self.rng.random::<u64>();
            let n = self.nodes.get_mut(&id).expect("known node");
            let local_ms = n.clock.local_ms(now_us);
            let sc = &mut n.cores[usize::from(core)];
            let opened = sc
                .disk
                .recover()
                .and_then(|recovered| {
                    NodeCore::open(cfg, newest.clone(), recovered, &mut sc.disk, local_ms).map_err(|e| e.to_string())
                })
                .map(|nc| sc.core = Some(nc));
            if let Err(e) = opened {
                return self.fail(FailureKind::NodeError, format!("node {id} core {core} cannot start: {e}"));
            }
        }
        let n = self.nodes.get_mut(&id).expect("known node");
        n.up = true;
        let incarnation = n.incarnation;
        let tick_us = n.clock.tick_us(self.cfg.tick_us);
        let phase = self.rng.random_range(0..tick_us);
        self.schedule(phase, Event::Tick { node: id, incarnation });
        for core in 0..cores {
            self.drive(Replica { node: id, core });
        }
    }

    // ----- time --------------------------------------------------------------------

    /// Runs the cluster for `ms` of simulated time (stands still after a failure).
    pub fn run_for(&mut self, ms: u64) {
        let until = self.now_us + ms * 1000;
        while self.failure.is_none() {
            let Some((&(at, seq), _)) = self.events.first_key_value() else { break };
            if at > until {
                break;
            }
            let event = self.events.remove(&(at, seq)).expect("just seen");
            self.now_us = at;
            self.handle(event);
        }
        if self.failure.is_none() {
            self.now_us = until;
        }
    }

    /// Runs until `done` holds (checked every 10 ms) or `timeout_ms` passes.
    fn run_until(&mut self, timeout_ms: u64, done: impl Fn(&Cluster) -> bool) -> bool {
        let mut waited_ms = 0;
        while waited_ms <= timeout_ms && self.failure.is_none() {
            if done(self) {
                return true;
            }
            self.run_for(10);
            waited_ms += 10;
        }
        self.failure.is_none() && done(self)
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick { node, incarnation } => self.on_tick(node, incarnation),
            Event::Frame { from, from_incarnation, to, to_incarnation, batch } => {
                if !self.live(to.node, to_incarnation) || !self.live(from.node, from_incarnation) {
                    return;
                }
                self.record(&[2, from.node, u64::from(from.core), to.node, u64::from(to.core)]);
                let local_ms = self.nodes[&to.node].clock.local_ms(self.now_us);
                let Some(core) = self.core_mut(to) else { return };
                core.set_now_ms(local_ms);
                core.step_peer(from.node, batch);
                self.drive(to);
            }
            Event::FsyncDone { at, incarnation } => {
                if !self.live(at.node, incarnation) {
                    return;
                }
                self.record(&[3, at.node, u64::from(at.core)]);
                let sc = &mut self.nodes.get_mut(&at.node).expect("live").cores[usize::from(at.core)];
                let core = sc.core.as_mut().expect("a live node has its cores");
                if let Err(e) = sc.disk.finish_batch(core) {
                    return self.fail(FailureKind::NodeError, format!("{at:?}: {e}"));
                }
                self.drive(at);
            }
            Event::Request { client, to, to_incarnation, attempt, request } => {
                if !self.live(to.node, to_incarnation) {
                    return;
                }
                self.record(&[4, client as u64, attempt, to.node]);
                let local_ms = self.nodes[&to.node].clock.local_ms(self.now_us);
                let Some(core) = self.core_mut(to) else { return };
                core.set_now_ms(local_ms);
                core.client_request(ClientRef { conn: client as u64, id: attempt }, request);
                self.drive(to);
            }
            Event::Reply { client, from, from_incarnation, attempt, response } => {
                if self.nodes.get(&from).is_none_or(|n| n.incarnation != from_incarnation) {
                    return;
                }
                self.record(&[5, client as u64, attempt, response_code(&response)]);
                if client == script::SCRIPT_CLIENT {
                    return self.script_on_reply(attempt, response);
                }
                if let Some(t) = client.checked_sub(TXN_CLIENT_BASE) {
                    let next = self.txn_clients[t].on_reply(attempt, response, &self.map, self.now_us);
                    return self.txn_next(client, next);
                }
                let next = self.clients[client].on_reply(attempt, response, &self.map, self.now_us);
                self.client_next(client, next);
            }
            Event::ClientNext { client } if client >= TXN_CLIENT_BASE => self.next_txn(client),
            Event::ClientNext { client } => self.next_op(client),
            Event::ClientRetry { client, attempt } if client == script::SCRIPT_CLIENT => self.script_on_retry(attempt),
            Event::ClientRetry { client, attempt } => {
                if let Some(t) = client.checked_sub(TXN_CLIENT_BASE) {
                    let next = self.txn_clients[t].on_retry(attempt, &self.map, self.now_us);
                    return self.txn_next(client, next);
                }
                let next = self.clients[client].on_retry(attempt, &mut self.rng, &self.map, self.now_us);
                self.client_next(client, next);
            }
            Event::AttemptTimeout { client, attempt } => {
                if let Some(t) = client.checked_sub(TXN_CLIENT_BASE) {
                    let next = self.txn_clients[t].on_timeout(attempt, &self.map, self.now_us);
                    return self.txn_next(client, next);
                }
                let next = self.clients[client].on_timeout(attempt, &mut self.rng, &self.map, self.now_us);
                self.client_next(client, next);
            }
            Event::Restart { node } => self.restart(node),
            Event::Check => {
                self.submit_edits();
                self.start_joined();
                self.compare_replicas();
                self.check_txn_locks();
                self.check_message_rate();
                self.schedule(CHECK_INTERVAL_US, Event::Check);
            }
        }
    }

    fn core_mut(&mut self, at: Replica) -> Option<&mut NodeCore> {
        self.nodes.get_mut(&at.node)?.cores.get_mut(usize::from(at.core))?.core.as_mut()
    }

    fn on_tick(&mut self, node: NodeId, incarnation: u64) {
        if !self.live(node, incarnation) {
            return;
        }
        self.record(&[1, node]);
        let n = self.nodes.get_mut(&node).expect("live");
        let local_ms = n.clock.local_ms(self.now_us);
        for sc in &mut n.cores {
            sc.core.as_mut().expect("a live node has its cores").tick(local_ms);
        }
        let tick_us = n.clock.tick_us(self.cfg.tick_us);
        self.schedule(tick_us, Event::Tick { node, incarnation });
        for core in 0..self.cfg.cores {
            self.drive(Replica { node, core });
        }
    }

    /// One core's loop iterations after an input: process every Ready, send
    /// frames and replies, seal the next WAL batch when none is in flight.
    fn drive(&mut self, at: Replica) {
        for _ in 0..DRIVE_ROUNDS_MAX {
            let fsync_us = self.rng.random_range(self.cfg.fsync_us.0..=self.cfg.fsync_us.1);
            let n = self.nodes.get_mut(&at.node).expect("known node");
            let incarnation = n.incarnation;
            let sc = &mut n.cores[usize::from(at.core)];
            let Some(core) = sc.core.as_mut() else { return };
            if let Err(e) = core.process(&mut sc.disk) {
                return self.fail(FailureKind::NodeError, format!("{at:?} stopped: {e}"));
            }
            let frames = core.take_frames();
            let replies = core.take_replies();
            let handoffs = core.take_handoffs();
            // The driver keeps the newest map the core installed (durable at once,
            // as a server writes it before it acts on it).
            let core_map = core.map().clone();
            if sc.disk.map.as_ref().is_none_or(|m| m.epoch < core_map.epoch) {
                sc.disk.map = Some(core_map.clone());
            }
            if core_map.epoch > self.map.epoch {
                self.map = core_map;
            }
            let started = match sc.disk.start_batch(core) {
                Ok(started) => started,
                Err(e) => return self.fail(FailureKind::NodeError, format!("{at:?}: {e}")),
            };
            let again = core.has_work() || started == BatchStart::DurableNow;
            let crash = self.txn_crash_point(&frames);
            for (to, batch) in frames {
                if crash == Some(false) {
                    self.stats.frames_lost += 1;
                    continue;
                }
                self.send_frame(at, incarnation, to, batch);
            }
            if crash.is_some() {
                // The step is taken (its entry proposed or applied, the message
                // out or lost with the node): the node dies now.
                let spec = self.cfg.txn_crashes.expect("a crash point is configured");
                let down_ms = self.rng.random_range(spec.down_ms.0..=spec.down_ms.1);
                self.stats.txn_step_crashes += 1;
                self.crash(at.node);
                self.schedule(down_ms * 1000, Event::Restart { node: at.node });
                return;
            }
            for (client, response) in replies {
                self.send_reply(at.node, incarnation, client, response);
            }
            // A hand-off's state goes to the other core in memory, as in a
            // server (lost with the node if it crashes first).
            for (to, handoff) in handoffs {
                let sibling = self.nodes.get_mut(&at.node).and_then(|n| n.cores.get_mut(usize::from(to)));
                if let Some(core) = sibling.and_then(|sc| sc.core.as_mut()) {
                    core.receive_handoff(handoff);
                }
            }
            if started == BatchStart::Started {
                self.schedule(fsync_us, Event::FsyncDone { at, incarnation });
            }
            if !again {
                return;
            }
        }
        self.fail(FailureKind::Stuck, format!("{at:?} does not settle after {DRIVE_ROUNDS_MAX} iterations"));
    }

    /// Whether the frames of one iteration take the configured step of two-phase
    /// commit and the node crashes there: `Some(true)` with the frames sent,
    /// `Some(false)` with them lost.
    fn txn_crash_point(&mut self, frames: &[(Replica, PeerBatch)]) -> Option<bool> {
        let spec = self.cfg.txn_crashes?;
        if self.stats.txn_step_crashes >= u64::from(spec.max) {
            return None;
        }
        let takes_step = frames.iter().flat_map(|(_, b)| &b.messages).any(|m| match m {
            PeerMessage::Txn { message, .. } => matches!(
                (spec.point, message),
                (TxnCrashPoint::PrepareSent, TxnPeerMessage::Prepare { .. })
                    | (TxnCrashPoint::VoteSent, TxnPeerMessage::Vote { .. })
                    | (TxnCrashPoint::ResolveSent, TxnPeerMessage::Resolve { .. })
                    | (TxnCrashPoint::ResolvedSent, TxnPeerMessage::Resolved { .. })
            ),
            _ => false,
        });
        if !takes_step || self.rng.random_range(0..100) >= spec.chance_percent {
            return None;
        }
        Some(self.rng.random_bool(0.5))
    }

    fn send_frame(&mut self, from: Replica, from_incarnation: u64, to: Replica, batch: PeerBatch) {
        self.stats.frames_sent += 1;
        let to_incarnation = self.nodes.get(&to.node).filter(|n| n.up).map(|n| n.incarnation);
        let (Some(to_incarnation), true) = (to_incarnation, self.links.connected(from.node, to.node)) else {
            self.stats.frames_lost += 1;
            return;
        };
        let delays = net::fate(&mut self.rng, &self.cfg.faults);
        if delays.is_empty() {
            self.stats.frames_lost += 1;
        }
        for delay in delays {
            let batch = batch.clone();
            self.schedule(delay, Event::Frame { from, from_incarnation, to, to_incarnation, batch });
        }
    }

    fn send_reply(&mut self, from: NodeId, from_incarnation: u64, client: ClientRef, response: Response) {
        let client_index = client.conn as usize;
        for delay in net::fate(&mut self.rng, &self.cfg.client_faults) {
            let response = response.clone();
            let reply = Event::Reply { client: client_index, from, from_incarnation, attempt: client.id, response };
            self.schedule(delay, reply);
        }
    }

    // ----- clients -----------------------------------------------------------------

    fn is_final_client(&self, client: usize) -> bool {
        client == self.cfg.clients
    }

    fn next_op(&mut self, client: usize) {
        let deadline_ms =
            if self.is_final_client(client) { FINAL_READ_DEADLINE_MS } else { self.cfg.request_deadline_ms };
        let deadline_us = self.now_us + deadline_ms * 1000;
        let attempt = if self.is_final_client(client) {
            let Some(key) = self.final_reads.pop_front() else { return };
            self.clients[client].start(Call::Get { key }, &mut self.rng, &self.map, self.now_us, deadline_us)
        } else if self.load && self.clients[client].in_flight() < self.cfg.client_ops_in_flight_max {
            self.clients[client].start_random(&mut self.rng, &self.map, &self.keys, self.now_us, deadline_us)
        } else {
            return;
        };
        self.send_request(client, attempt);
    }

    fn send_request(&mut self, client: usize, attempt: Attempt) {
        let timeout_us = self.cfg.attempt_timeout_ms * 1000;
        self.schedule(timeout_us, Event::AttemptTimeout { client, attempt: attempt.attempt });
        let Some(to_incarnation) = self.nodes.get(&attempt.to.node).filter(|n| n.up).map(|n| n.incarnation) else {
            return;
        };
        for delay in net::fate(&mut self.rng, &self.cfg.client_faults) {
            let request = attempt.request.clone();
            let event = Event::Request { client, to: attempt.to, to_incarnation, attempt: attempt.attempt, request };
            self.schedule(delay, event);
        }
    }

    fn client_next(&mut self, client: usize, next: Next) {
        match next {
            Next::Nothing => {}
            Next::RetryAfter { after_us, attempt } => self.schedule(after_us, Event::ClientRetry { client, attempt }),
            Next::Send(attempt) => self.send_request(client, attempt),
            Next::Done(op) => {
                self.on_done(client, op);
                let think = if self.is_final_client(client) { 0 } else { self.think_us() };
                self.schedule(think, Event::ClientNext { client });
            }
            Next::Broken(message) => self.fail(FailureKind::BadAnswer, format!("client {client}: {message}")),
        }
    }

    fn next_txn(&mut self, client: usize) {
        let t = client - TXN_CLIENT_BASE;
        if !self.load || self.txn_clients[t].busy() {
            return;
        }
        let deadline_us = self.now_us + self.cfg.request_deadline_ms * 1000;
        let attempt = self.txn_clients[t].start(&mut self.rng, &self.map, &self.accounts, self.now_us, deadline_us);
        self.send_request(client, attempt);
    }

    fn txn_next(&mut self, client: usize, next: TxnNext) {
        match next {
            TxnNext::Nothing => {}
            TxnNext::RetryAfter { after_us, attempt } => {
                self.schedule(after_us, Event::ClientRetry { client, attempt })
            }
            TxnNext::Send(attempt) => self.send_request(client, attempt),
            TxnNext::Ended { record, releases, audit_total, retry } => {
                self.record(&[9, client as u64, record.id, record.reads.len() as u64]);
                self.txn_history.push(record);
                for release in releases {
                    self.send_request(client, release);
                }
                if let Some(total) = audit_total {
                    return self.fail(FailureKind::BankTotal, format!("client {client}: an audit summed to {total}"));
                }
                match retry {
                    Some(attempt) => self.send_request(client, attempt),
                    None => {
                        let think = self.think_us();
                        self.schedule(think, Event::ClientNext { client });
                    }
                }
            }
            TxnNext::Broken(message) => self.fail(FailureKind::BadAnswer, format!("client {client}: {message}")),
        }
    }

    /// Checks the transaction history (DESIGN §8): read-write transactions are
    /// strictly serializable among themselves (real-time order included), and the
    /// whole history, read-only audits included, is serializable (a read-only
    /// transaction serializes at its version, not necessarily fresh in real time).
    fn check_serializable(&mut self) {
        use crate::check::serial::{SerialOptions, SerialVerdict, TxnKind, check_serializable};
        if self.txn_history.is_empty() {
            return;
        }
        let read_write: Vec<_> = self.txn_history.iter().filter(|t| t.kind == TxnKind::ReadWrite).cloned().collect();
        let mut failed = None;
        for (what, txns, strict) in [("read-write", &read_write, true), ("whole", &self.txn_history, false)] {
            let message = match check_serializable(txns, &SerialOptions { strict }) {
                Ok(SerialVerdict::Serializable) => continue,
                Ok(SerialVerdict::Anomaly(anomaly)) => format!("{what} history: {anomaly}"),
                Ok(SerialVerdict::Undecided(u)) => format!("{what} history: the checker could not decide: {u:?}"),
                Err(e) => format!("{what} history is malformed: {e}"),
            };
            failed = Some(message);
            break;
        }
        if let Some(message) = failed {
            self.fail(FailureKind::NotSerializable, message);
        }
    }

    fn on_done(&mut self, client: usize, op: Option<Operation>) {
        let Some(op) = op else {
            self.stats.reads_expired += 1;
            if self.is_final_client(client) {
                self.fail(FailureKind::Stuck, "a final read found no leader before its deadline".into());
            }
            return;
        };
        match op.outcome {
            check::Outcome::Written { version } => {
                self.stats.writes_acknowledged += 1;
                self.record(&[6, client as u64, version]);
            }
            check::Outcome::Indeterminate => self.stats.writes_indeterminate += 1,
            check::Outcome::Value { version, .. } => self.record(&[7, client as u64, version]),
            _ => self.record(&[8, client as u64]),
        }
        self.stats.ops_recorded += 1;
        self.history.push(op);
    }

    /// Ends the run: heals the network, restarts crashed nodes, lets the clients
    /// finish, waits for every shard to settle, reads every key once more, and
    /// checks replica states, acknowledged writes and the history.
    pub fn finish(mut self) -> Result<Report, SimFailure> {
        self.heal();
        self.set_faults(NetFaults::reliable());
        self.set_client_faults(NetFaults::reliable());
        for node in self.node_ids() {
            self.restart(node);
        }
        self.load = false;
        let quiet_ms = self.cfg.request_deadline_ms + self.cfg.attempt_timeout_ms + 1_000;
        let idle =
            |c: &Cluster| c.clients.iter().all(|cl| cl.in_flight() == 0) && c.txn_clients.iter().all(|t| !t.busy());
        if !self.run_until(quiet_ms, idle) {
            self.fail(FailureKind::Stuck, "clients still busy past their deadlines".into());
        }
        self.settle_or_fail("after healing");
        let final_client = self.clients.len();
        let client = Client::new(final_client as u64, &mut self.rng);
        self.clients.push(client);
        self.final_reads = self.keys.iter().cloned().collect();
        self.next_op(final_client);
        let reads_done = |c: &Cluster| c.final_reads.is_empty() && c.clients[final_client].in_flight() == 0;
        if !self.run_until(FINAL_READ_DEADLINE_MS * (self.keys.len() as u64 + 1), reads_done) {
            self.fail(FailureKind::Stuck, "the final reads did not finish".into());
        }
        self.settle_or_fail("after the final reads");
        if self.failure.is_none() {
            self.check_placement();
        }
        if self.failure.is_none() {
            self.compare_replicas();
        }
        if self.failure.is_none() {
            self.check_acknowledged_writes();
        }
        if self.failure.is_none() {
            self.check_serializable();
        }
        match self.failure.take() {
            None => self.check_linearizable(),
            // A cluster that cannot settle may have lost or mixed up writes before:
            // the history says which, a more precise verdict than "stuck".
            Some(stuck) if stuck.kind == FailureKind::Stuck => {
                self.check_linearizable();
                if let Some(f) = self.failure.as_mut() {
                    f.message = format!("{} (and then: {})", f.message, stuck.message);
                } else {
                    self.failure = Some(stuck);
                }
            }
            Some(other) => self.failure = Some(other),
        }
        if let Some(failure) = self.failure.take() {
            return Err(failure);
        }
        for n in self.nodes.values() {
            for sc in &n.cores {
                if let Some(core) = &sc.core {
                    add_core_stats(&mut self.stats, core);
                }
                self.stats.wal_fdatasyncs += sc.disk.io_counts().1;
            }
        }
        for c in &self.clients {
            self.stats.client_retries += c.stats.retries;
            self.stats.blind_write_retries += c.stats.blind_write_retries;
        }
        for t in &self.txn_clients {
            let s = t.stats;
            self.stats.txns.committed += s.committed;
            self.stats.txns.aborted += s.aborted;
            self.stats.txns.unknown += s.unknown;
            self.stats.txns.audits += s.audits;
            self.stats.txns.scan_audits += s.scan_audits;
            self.stats.txns.retries += s.retries;
        }
        Ok(Report { stats: self.stats, trace_hash: self.trace, history: self.history })
    }
}

/// Adds the counters of one core incarnation to the run's.
fn add_core_stats(stats: &mut ClusterStats, core: &NodeCore) {
    let s = core.stats();
    stats.snapshots_taken += s.snapshots_taken;
    stats.snapshots_installed += s.snapshots_installed;
    stats.snapshots_for_wal += s.snapshots_for_wal;
    stats.move_snapshot_bytes += s.move_snapshot_bytes;
    stats.move_snapshots += s.move_snapshots;
    stats.move_store_bytes += s.move_store_bytes;
    stats.move_log_bytes += s.move_log_bytes;
    stats.snapshot_bytes_installed += s.snapshot_bytes_installed;
    stats.replicas_added += s.replicas_added;
    stats.replicas_dropped += s.replicas_dropped;
    stats.meta_writes += s.meta_writes;
    stats.maps_installed += s.maps_installed;
}

/// A number per kind of answer, for the trace.
fn response_code(response: &Response) -> u64 {
    match response {
        Response::Outcome(outcome) => match outcome {
            corekv_rpc::kv::Outcome::Ok(_) => 10,
            corekv_rpc::kv::Outcome::NotFound => 11,
            corekv_rpc::kv::Outcome::VersionMismatch { current } => 12 ^ current.rotate_left(8),
            corekv_rpc::kv::Outcome::Compacted => 13,
            corekv_rpc::kv::Outcome::Unavailable => 14,
            corekv_rpc::kv::Outcome::Indeterminate => 15,
            corekv_rpc::kv::Outcome::Invalid { .. } => 16,
            corekv_rpc::kv::Outcome::Aborted { reason } => 17 + ((*reason as u64) << 8),
        },
        Response::NotLeader { hint } => 20 + (hint << 8),
        Response::WrongShard { hint, .. } => 30 + (hint << 8),
        Response::Busy => 40,
    }
}
