//! How a simulated cluster is built, faulted and loaded.

use super::super::net::NetFaults;
use crate::check::CheckConfig;
use crate::node::PlantedBug;
use crate::raft::Config;

/// How a simulated cluster is built and loaded.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Everything random derives from it.
    pub seed: u64,
    /// Nodes `1..=nodes`.
    pub nodes: u64,
    /// The last `spare_nodes` of them start with no replica (targets for moves).
    pub spare_nodes: u64,
    /// The last `joining_nodes` of them (after the spare ones) are not in the
    /// founding map and do not run until [`super::Cluster::join`] adds them.
    pub joining_nodes: u64,
    /// The meta leader moves replicas on its own (`--auto-rebalance`).
    pub auto_rebalance: bool,
    /// Ticks of silence after which the meta leader declares a node dead.
    pub dead_after_ticks: u64,
    /// Cores per node.
    pub cores: u16,
    /// Shards in the map.
    pub shards: u32,
    /// Replicas per shard.
    pub replication: usize,
    /// Keys the clients use (spread over shards).
    pub keys: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Operations each client keeps in flight (1: sequential).
    pub client_ops_in_flight_max: usize,
    /// Nominal simulated time per tick.
    pub tick_us: u64,
    /// Each node's clock (ticks and physical clock) runs up to this many parts per
    /// thousand fast or slow.
    pub clock_drift_permille: u64,
    /// Each node's physical clock is ahead by up to this much.
    pub clock_offset_ms_max: u64,
    /// fdatasync latency, uniform in this range.
    pub fsync_us: (u64, u64),
    /// Faults between node cores.
    pub faults: NetFaults,
    /// Faults between clients and node cores.
    pub client_faults: NetFaults,
    /// Groups compact their log past this many applied bytes.
    pub snapshot_log_bytes: u64,
    /// Raft settings of every group.
    pub raft: Config,
    /// A bug planted in every node core, to prove the checks catch it.
    pub planted_bug: PlantedBug,
    /// A client gives an operation up after this long.
    pub request_deadline_ms: u64,
    /// A client retries an attempt that got no answer after this long.
    pub attempt_timeout_ms: u64,
    /// A client pauses this long between operations, uniform.
    pub think_us: (u64, u64),
    /// The linearizability checker's budget.
    pub check: CheckConfig,
    /// Transactional clients (bank transfers and audits), beside `clients`.
    pub txn_clients: usize,
    /// Bank accounts the transactional clients move money between.
    pub accounts: usize,
    /// The transactional clients' conflict policy.
    pub txn_policy: corekv_rpc::txn::Policy,
    /// Crash nodes right after a step of two-phase commit.
    pub txn_crashes: Option<TxnCrashes>,
}

/// A step of two-phase commit, seen as the message a node sends once it took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnCrashPoint {
    /// An anchor sent a prepare: its own is proposed, nothing is decided.
    PrepareSent,
    /// A participant voted: its prepare is applied, the decision unknown to it.
    VoteSent,
    /// An anchor sent a decision: it is applied at the anchor only.
    ResolveSent,
    /// A participant applied a decision and says so: the anchor still keeps its
    /// record.
    ResolvedSent,
}

impl TxnCrashPoint {
    /// Every step, in protocol order.
    pub const ALL: [TxnCrashPoint; 4] =
        [TxnCrashPoint::PrepareSent, TxnCrashPoint::VoteSent, TxnCrashPoint::ResolveSent, TxnCrashPoint::ResolvedSent];
}

/// Crashes at a step of two-phase commit: when a node sends the step's message,
/// with probability `chance_percent`, it crashes as the frame leaves (the frame
/// goes out or is lost, at even odds), for a time in `down_ms`; at most `max`
/// times per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnCrashes {
    /// The step.
    pub point: TxnCrashPoint,
    /// Chance per message of that step.
    pub chance_percent: u32,
    /// Crashes per run at most.
    pub max: u32,
    /// How long the node stays down, uniform.
    pub down_ms: (u64, u64),
}

impl ClusterConfig {
    /// A calm cluster of `nodes` × `cores`: 8 shards of 3 replicas, 6 keys, 6
    /// clients, 10 ms ticks, elections after 100–200 ms.
    pub fn new(seed: u64, nodes: u64, cores: u16) -> ClusterConfig {
        ClusterConfig {
            seed,
            nodes,
            spare_nodes: 0,
            joining_nodes: 0,
            auto_rebalance: false,
            dead_after_ticks: 30_000,
            cores,
            shards: 8,
            replication: 3,
            keys: 6,
            clients: 6,
            client_ops_in_flight_max: 1,
            tick_us: 10_000,
            clock_drift_permille: 10,
            clock_offset_ms_max: 0,
            fsync_us: (200, 3_000),
            faults: NetFaults::reliable(),
            client_faults: NetFaults::reliable(),
            snapshot_log_bytes: 64 << 20,
            raft: Config {
                election_timeout_ticks: 10,
                heartbeat_interval_ticks: 2,
                snapshot_chunk_bytes: 1024,
                inflight_msgs_max: 32,
                // Windows that fit the simulator's small WAL segments, as a server's
                // config requires of its own (`node::ready_reserve_bytes`).
                inflight_bytes_max: 32 << 10,
                append_bytes_max: 8 << 10,
                ..Config::new(1)
            },
            planted_bug: PlantedBug::None,
            request_deadline_ms: 1_500,
            attempt_timeout_ms: 150,
            think_us: (0, 20_000),
            check: CheckConfig::default(),
            txn_clients: 0,
            accounts: 6,
            txn_policy: corekv_rpc::txn::Policy::WoundWait,
            txn_crashes: None,
        }
    }
}
