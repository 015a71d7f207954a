//! The server's configuration (DESIGN §10): flags, a TOML file, defaults, and the
//! checks that turn them into one [`ServerConfig`] or one clear error.
//!
//! Owns: the `corekv-server` command line ([`Cli`]), the config file's keys
//! ([`FileConfig`], the same names in snake_case), how they combine (a flag beats
//! the file, the file beats the default), and the data dir's identity file
//! ([`prepare_data_dir`]). Runs once, on the main thread, before any executor
//! starts.
//!
//! Invariants of a [`ServerConfig`]: this node is in `initial_cluster` with the
//! address of `--listen` and the core count of `--cores`; node ids are unique and
//! non-zero; every node's ports (base + core) fit in u16 and no two nodes on one
//! host share a port; the placement inputs, the Raft timing and the WAL segment
//! size are valid; `cluster_id` is [`placement::cluster_id`] of the rest.
//! Every error is a [`ConfigError`] whose message is one line naming the value.

mod cluster;
mod data_dir;
#[cfg(test)]
mod tests;

use corekv_rpc::txn::Policy;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corekv_rpc::frame::FRAME_PAYLOAD_BYTES_MAX;
use corekv_rpc::kv::{Limits, NodeId, VALUE_BYTES_MAX_DEFAULT};
use corekv_rpc::map::{ClusterMap, CoreIndex, NODE_CORES_MAX, NodeInfo};
use serde::{Deserialize, Serialize};

pub use cluster::{check_ports, format_initial_cluster, parse_initial_cluster, split_host_port};
pub use data_dir::{
    CLUSTER_ID_FILE, DataDirIdentity, DataDirState, core_dir, prepare_data_dir, read_data_dir_identity,
};

use crate::kv::store::{HISTORY_TS_SPAN_DEFAULT, Retention};
use crate::placement::{self, PlacementError};
use crate::raft;
use crate::wal::{IoMode, WalConfig, WalError, WalIdentity};

/// Default shard count (DESIGN §7).
pub const SHARDS_DEFAULT: u32 = 64;
/// Default replication factor, lowered to the node count for smaller clusters.
pub const REPLICAS_DEFAULT: usize = 3;
/// Default tick: the Raft defaults (`raft::Config::new`) are meant for 10 ms ticks.
pub const TICK_MS_DEFAULT: u64 = 10;
/// Longest tick: beyond a second, elections take minutes.
pub const TICK_MS_MAX: u64 = 1000;
/// Default versions kept per key.
pub const HISTORY_VERSIONS_DEFAULT: usize = crate::kv::store::VERSIONS_PER_KEY_MAX_DEFAULT;
/// Most versions per key a server may keep: a chain is scanned linearly.
pub const HISTORY_VERSIONS_CEILING: usize = 1 << 16;
/// Largest `value_bytes_max` a server may set: a value must fit a frame with its
/// key and the other entries of an append (a quarter of the frame limit).
pub const VALUE_BYTES_CEILING: usize = FRAME_PAYLOAD_BYTES_MAX as usize / 4;
/// Default log size of a shard past which it is compacted into a snapshot.
pub const SNAPSHOT_LOG_BYTES_DEFAULT: u64 = 64 << 20;
/// Smallest `snapshot_log_bytes`: below it a busy shard would snapshot constantly.
pub const SNAPSHOT_LOG_BYTES_FLOOR: u64 = 64 << 10;
/// Default WAL segment size (as [`WalConfig::new`]).
pub const WAL_SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// Default memory glommio registers per executor for I/O (DESIGN §12).
pub const IO_MEMORY_BYTES_DEFAULT: usize = 10 << 20;
/// Smallest `io_memory_bytes`: a few WAL batches and socket buffers must fit.
pub const IO_MEMORY_BYTES_FLOOR: usize = 256 << 10;
/// Longest cluster name.
pub const CLUSTER_NAME_BYTES_MAX: usize = 256;
/// Default tracing filter.
pub const LOG_DEFAULT: &str = "info";
/// Default `--dead-after`: five minutes.
pub const DEAD_AFTER_DEFAULT: Duration = Duration::from_secs(300);
/// Shortest `--dead-after`.
pub const DEAD_AFTER_MIN: Duration = Duration::from_secs(1);
/// Longest `--dead-after`: a week.
pub const DEAD_AFTER_MAX: Duration = Duration::from_secs(7 * 86_400);

/// Why the server cannot start with the configuration given. Each message is one
/// line that names what is wrong and the value given.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required setting is in neither the flags nor the file.
    #[error("missing --{flag} (or `{key}` in the config file)")]
    Missing {
        /// The flag, without dashes.
        flag: &'static str,
        /// The config file key.
        key: &'static str,
    },
    /// The config file cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these keys (an unknown key included).
    #[error("config file {}, line {line}: {message}", path.display())]
    FileSyntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An `--initial-cluster` entry does not parse.
    #[error("bad --initial-cluster entry `{entry}`: {reason}")]
    ClusterEntry {
        /// The entry as written.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An address is not `HOST:PORT`.
    #[error("{what} `{addr}` is not HOST:PORT: {reason}")]
    Address {
        /// Which address.
        what: String,
        /// The address given.
        addr: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Two nodes with one id.
    #[error("node id {id} appears twice in --initial-cluster")]
    DuplicateNode {
        /// The id.
        id: NodeId,
    },
    /// This node is not a founding node.
    #[error("this node's --id {id} is not in --initial-cluster (it names nodes {listed})")]
    NotInCluster {
        /// This node's id.
        id: NodeId,
        /// The ids listed.
        listed: String,
    },
    /// `--listen` differs from this node's address in the cluster.
    #[error("--listen {listen} differs from node {id}'s address {cluster_addr} in --initial-cluster")]
    ListenMismatch {
        /// This node's id.
        id: NodeId,
        /// `--listen`.
        listen: String,
        /// The address in `--initial-cluster`.
        cluster_addr: String,
    },
    /// `--cores` differs from this node's core count in the cluster.
    #[error("--cores {cores} differs from node {id}'s core count {cluster_cores} in --initial-cluster")]
    CoresMismatch {
        /// This node's id.
        id: NodeId,
        /// `--cores`.
        cores: u16,
        /// The count in `--initial-cluster`.
        cluster_cores: u16,
    },
    /// A node's last core would listen past port 65535.
    #[error("node {id} at {addr} with {cores} cores needs ports past 65535 (core i listens on base port + i)")]
    PortOverflow {
        /// The node.
        id: NodeId,
        /// Its base address.
        addr: String,
        /// Its core count.
        cores: u16,
    },
    /// Two nodes on one host share a port.
    #[error("nodes {first} and {second} would both listen on {addr} (core i listens on base port + i)")]
    PortCollision {
        /// One node.
        first: NodeId,
        /// The other.
        second: NodeId,
        /// The shared `HOST:PORT`.
        addr: String,
    },
    /// A value that does not parse.
    #[error("--{flag}: {why}")]
    Invalid {
        /// The flag, without dashes.
        flag: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// A number outside its allowed range.
    #[error("--{flag} {value} is out of range: {allowed}")]
    OutOfRange {
        /// The flag, without dashes.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// No placement is possible (shards, replicas, nodes).
    #[error("invalid cluster: {0}")]
    Placement(#[from] PlacementError),
    /// The Raft timing cannot work.
    #[error("{0} (see --election-timeout-ticks, --heartbeat-interval-ticks)")]
    Raft(#[from] raft::ConfigError),
    /// The WAL segment size cannot work.
    #[error("invalid --wal-segment-bytes: {0}")]
    WalSegment(String),
    /// The tracing filter does not parse.
    #[error("invalid --log filter `{filter}`: {reason}")]
    LogFilter {
        /// The filter given.
        filter: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A data dir operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    DataDirIo {
        /// What was done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The data dir belongs to another cluster, node or core count.
    #[error("data dir {} belongs to {found}, not {expected}", path.display())]
    ForeignDataDir {
        /// The data dir.
        path: PathBuf,
        /// What its identity file says.
        found: DataDirIdentity,
        /// What this configuration says.
        expected: DataDirIdentity,
    },
    /// The data dir holds data but no identity file.
    #[error("{} holds files but the data dir has no {CLUSTER_ID_FILE}: refusing to claim data of an unknown cluster", path.display())]
    DataWithoutIdentity {
        /// The WAL or snapshot dir that holds files.
        path: PathBuf,
    },
    /// The data dir's identity file does not parse.
    #[error("{} is garbled: {reason}; it must hold the lines cluster_id=0x…, node_id=… and cores=…", path.display())]
    GarbledIdentity {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A transaction conflict policy as flags and files spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TxnPolicyName {
    /// An older transaction wounds a younger holder; a younger one waits.
    WoundWait,
    /// An older transaction waits; a younger one dies and retries with its start.
    WaitDie,
    /// Any conflict aborts the requester (the naive baseline).
    NoWait,
    /// Optimistic: validate reads at commit.
    Occ,
}

impl From<TxnPolicyName> for Policy {
    fn from(name: TxnPolicyName) -> Policy {
        match name {
            TxnPolicyName::WoundWait => Policy::WoundWait,
            TxnPolicyName::WaitDie => Policy::WaitDie,
            TxnPolicyName::NoWait => Policy::NoWait,
            TxnPolicyName::Occ => Policy::Occ,
        }
    }
}

impl From<Policy> for TxnPolicyName {
    fn from(policy: Policy) -> TxnPolicyName {
        match policy {
            Policy::WoundWait => TxnPolicyName::WoundWait,
            Policy::WaitDie => TxnPolicyName::WaitDie,
            Policy::NoWait => TxnPolicyName::NoWait,
            Policy::Occ => TxnPolicyName::Occ,
        }
    }
}

/// The I/O mode as flags and files spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IoModeName {
    /// O_DIRECT + fdatasync.
    Direct,
    /// Buffered writes + fdatasync (tmpfs and other file systems without O_DIRECT).
    Buffered,
}

impl From<IoModeName> for IoMode {
    fn from(name: IoModeName) -> IoMode {
        match name {
            IoModeName::Direct => IoMode::Direct,
            IoModeName::Buffered => IoMode::Buffered,
        }
    }
}

impl From<IoMode> for IoModeName {
    fn from(mode: IoMode) -> IoModeName {
        match mode {
            IoMode::Direct => IoModeName::Direct,
            IoMode::Buffered => IoModeName::Buffered,
        }
    }
}

/// The `corekv-server` command line. Every setting may instead come from the
/// `--config` file under the same name in snake_case; a flag beats the file.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "corekv-server",
    version,
    // A later flag replaces an earlier one, so wrapper scripts can append overrides.
    args_override_self = true,
    about = "Runs one corekv node: a sharded, Raft-replicated key-value store, one executor per core.",
    after_help = "Example (node 1 of 3, 2 cores each):\n  corekv-server --id 1 --data-dir /var/lib/corekv --listen 127.0.0.1:7100 --cores 2 \\\n    --initial-cluster 1=127.0.0.1:7100,2=127.0.0.1:7200,3=127.0.0.1:7300"
)]
pub struct Cli {
    /// TOML file with any of the settings below (snake_case keys, e.g. `data_dir`); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id, 1 or more; never reused for another node.
    #[arg(long, value_name = "ID")]
    pub id: Option<NodeId>,
    /// Directory for this node's identity file, WALs and snapshots; created if absent.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Core 0's listening address; core i listens on PORT + i. Must match this node's entry in --initial-cluster.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Number of cores (one executor and one WAL each) this node runs, 1 to 256.
    #[arg(long, value_name = "N")]
    pub cores: Option<u16>,
    /// Every founding node: ID=HOST:PORT[/CORES],… (CORES defaults to --cores). Identical on every node.
    #[arg(long, value_name = "ID=HOST:PORT[/CORES],...")]
    pub initial_cluster: Option<String>,
    /// Join a running cluster through any of these nodes (HOST:PORT of a core 0)
    /// instead of founding one: this node is added to the cluster's map, holding
    /// nothing, and receives replicas as the cluster rebalances. Only for a first
    /// start; a restart needs neither this nor --initial-cluster.
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]", conflicts_with = "initial_cluster")]
    pub join: Option<String>,
    /// Number of shards, fixed at cluster creation [default: 64].
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
    /// Replicas per shard [default: 3, or the node count if smaller].
    #[arg(long, value_name = "N")]
    pub replicas: Option<usize>,
    /// Optional name mixed into the cluster id, to tell apart clusters of the same shape [default: ""].
    #[arg(long, value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// Length of one Raft tick in milliseconds [default: 10].
    #[arg(long, value_name = "MS")]
    pub tick_ms: Option<u64>,
    /// Ticks without a leader before a follower campaigns (randomised up to twice this) [default: 100].
    #[arg(long, value_name = "TICKS")]
    pub election_timeout_ticks: Option<u32>,
    /// Ticks between a leader's heartbeats; below the election timeout [default: 10].
    #[arg(long, value_name = "TICKS")]
    pub heartbeat_interval_ticks: Option<u32>,
    /// WAL and snapshot I/O: direct (O_DIRECT) or buffered (for tmpfs and others without O_DIRECT); both fdatasync [default: direct].
    #[arg(long, value_enum, value_name = "MODE", alias = "wal-io-mode")]
    pub io: Option<IoModeName>,
    /// Busy-poll instead of parking idle executors; only for dedicated hosts [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub spin: Option<bool>,
    /// Serve reads under a leader lease instead of a heartbeat round (assumes bounded clock drift) [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub lease_reads: Option<bool>,
    /// Conflict policy of plain writes and of transactions that name none [default: wound-wait].
    #[arg(long, value_enum, value_name = "POLICY")]
    pub txn_policy: Option<TxnPolicyName>,
    /// Largest value accepted, in bytes [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub value_bytes_max: Option<usize>,
    /// Versions kept per key, tombstones included [default: 64].
    #[arg(long, value_name = "N")]
    pub history_versions_max: Option<usize>,
    /// Compact a shard's log into a snapshot once it holds this many bytes, and
    /// at least as many as the shard's last snapshot [default: 64 MiB].
    #[arg(long, value_name = "BYTES")]
    pub snapshot_log_bytes: Option<u64>,
    /// Snapshot bytes per second each core may send to new or lagging replicas
    /// (replica moves); 0 for no limit [default: 67108864, 64 MiB/s].
    #[arg(long, value_name = "BYTES_PER_SEC")]
    pub move_rate: Option<u64>,
    /// Move replicas on their own after a join, drain, removal or death (the meta
    /// group leader's value rules) [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub auto_rebalance: Option<bool>,
    /// How long a node may be unreachable before it is declared dead and its
    /// replicas are re-created elsewhere, e.g. 30s, 5m (the meta group leader's
    /// value rules) [default: 5m].
    #[arg(long, value_name = "DURATION")]
    pub dead_after: Option<String>,
    /// Size of each WAL segment file, a multiple of 4096 [default: 64 MiB].
    #[arg(long, value_name = "BYTES")]
    pub wal_segment_bytes: Option<u64>,
    /// Memory each executor locks for I/O buffers; needs RLIMIT_MEMLOCK unless root [default: 10 MiB].
    #[arg(long, value_name = "BYTES")]
    pub io_memory_bytes: Option<usize>,
    /// Tracing filter, e.g. `info` or `corekv_engine=debug` [default: $RUST_LOG, else the file's, else info].
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
    /// Print the resolved configuration as TOML (usable as a --config file) and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// The config file: the same settings as [`Cli`], snake_case, all optional; an
/// unknown key is an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // each key is the flag of the same name, documented on `Cli`
pub struct FileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<NodeId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tick_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub election_timeout_ticks: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ticks: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", alias = "wal_io_mode")]
    pub io: Option<IoModeName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spin: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_reads: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub txn_policy: Option<TxnPolicyName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_bytes_max: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_versions_max: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_log_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub move_rate: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_rebalance: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_segment_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_memory_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

impl FileConfig {
    /// Parses the text of config file `path`.
    pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |span| text[..span.start].matches('\n').count() + 1);
            ConfigError::FileSyntax { path: path.to_path_buf(), line, message: one_line(e.message()) }
        })
    }

    /// Reads and parses config file `path`.
    pub fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::ReadFile { path: path.to_path_buf(), source })?;
        FileConfig::parse(path, &text)
    }
}

/// Everything one node needs to start, resolved and checked (see the module header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// This node's id.
    pub id: NodeId,
    /// The data dir.
    pub data_dir: PathBuf,
    /// Core 0's `HOST:PORT`; core i listens on PORT + i.
    pub listen: String,
    /// Executors (cores) this node runs.
    pub cores: u16,
    /// The founding nodes, sorted by id (this node included); empty for a node
    /// that joined (or joins) a running cluster.
    pub initial_cluster: Vec<NodeInfo>,
    /// Addresses to join a running cluster through (`--join`); empty otherwise.
    pub join: Vec<String>,
    /// Shard count (0 for a node that joined: the cluster's map says).
    pub shards: u32,
    /// Replicas per shard (0 for a node that joined).
    pub replicas: usize,
    /// The optional name mixed into the cluster id.
    pub cluster_name: String,
    /// [`placement::cluster_id`] of the founding configuration; for a node that
    /// joined, 0 until [`crate::runtime::join::resolve`] reads it from the data
    /// dir or learns it from the cluster.
    pub cluster_id: u64,
    /// One Raft tick, in milliseconds.
    pub tick_ms: u64,
    /// Raft election timeout, in ticks.
    pub election_timeout_ticks: u32,
    /// Raft heartbeat interval, in ticks.
    pub heartbeat_interval_ticks: u32,
    /// WAL and snapshot I/O mode.
    pub io_mode: IoMode,
    /// Busy-poll instead of parking idle executors.
    pub spin: bool,
    /// Serve reads under leader leases.
    pub lease_reads: bool,
    /// Conflict policy of plain writes and of transactions that name none.
    pub txn_policy: Policy,
    /// Largest value accepted, in bytes.
    pub value_bytes_max: usize,
    /// Versions kept per key.
    pub history_versions_max: usize,
    /// Log bytes of a shard past which it is compacted into a snapshot.
    pub snapshot_log_bytes: u64,
    /// Snapshot bytes per second per core (0: no limit).
    pub move_rate: u64,
    /// The meta leader moves replicas on its own.
    pub auto_rebalance: bool,
    /// Unreachable this long, a node is declared dead.
    pub dead_after: Duration,
    /// WAL segment file size.
    pub wal_segment_bytes: u64,
    /// I/O memory each executor registers.
    pub io_memory_bytes: usize,
    /// The tracing filter.
    pub log: String,
}

impl ServerConfig {
    /// The configuration of a command line: reads its `--config` file if any,
    /// then [`ServerConfig::resolve`]s. `rust_log` is the `RUST_LOG` variable.
    pub fn from_cli(cli: &Cli, rust_log: Option<&str>) -> Result<ServerConfig, ConfigError> {
        let file = match &cli.config {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        ServerConfig::resolve(cli, &file, rust_log)
    }

    /// Combines flags, file and defaults (a flag beats the file; for the log
    /// filter `RUST_LOG` sits between the flag and the file) and checks the result.
    pub fn resolve(cli: &Cli, file: &FileConfig, rust_log: Option<&str>) -> Result<ServerConfig, ConfigError> {
        fn required<T: Clone>(
            flag: Option<&T>,
            file: Option<&T>,
            name: &'static str,
            key: &'static str,
        ) -> Result<T, ConfigError> {
            flag.or(file).cloned().ok_or(ConfigError::Missing { flag: name, key })
        }
        let id = required(cli.id.as_ref(), file.id.as_ref(), "id", "id")?;
        let data_dir = required(cli.data_dir.as_ref(), file.data_dir.as_ref(), "data-dir", "data_dir")?;
        let listen = required(cli.listen.as_ref(), file.listen.as_ref(), "listen", "listen")?;
        let cores = required(cli.cores.as_ref(), file.cores.as_ref(), "cores", "cores")?;
        let cluster_text = cli.initial_cluster.as_ref().or(file.initial_cluster.as_ref());
        let join_text = cli.join.as_ref().or(file.join.as_ref());
        if cluster_text.is_some() && join_text.is_some() {
            let why = "give --initial-cluster to found a cluster or --join to join one, not both".to_string();
            return Err(ConfigError::Invalid { flag: "join", why });
        }
        let join: Vec<String> = join_text
            .map(|t| t.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect())
            .unwrap_or_default();
        for addr in &join {
            split_host_port(addr).map_err(|reason| ConfigError::Address {
                what: "--join".into(),
                addr: addr.clone(),
                reason,
            })?;
        }
        if join_text.is_some() && join.is_empty() {
            return Err(ConfigError::Invalid { flag: "join", why: "no address given".into() });
        }

        check_range("id", id, 1..=NodeId::MAX, "node ids start at 1")?;
        check_range("cores", cores, 1..=NODE_CORES_MAX, &format!("1 to {NODE_CORES_MAX}"))?;
        split_host_port(&listen).map_err(|reason| ConfigError::Address {
            what: "--listen".into(),
            addr: listen.clone(),
            reason,
        })?;
        let cluster_name = cli.cluster_name.clone().or_else(|| file.cluster_name.clone()).unwrap_or_default();
        if cluster_name.len() > CLUSTER_NAME_BYTES_MAX || cluster_name.contains(['\n', '\r']) {
            let allowed = format!("at most {CLUSTER_NAME_BYTES_MAX} bytes on one line");
            return Err(ConfigError::OutOfRange { flag: "cluster-name", value: format!("{cluster_name:?}"), allowed });
        }
        let (initial_cluster, shards, replicas, cluster_id) = match cluster_text {
            Some(cluster_text) => {
                let initial_cluster = parse_initial_cluster(cluster_text, cores)?;
                check_membership(id, &listen, cores, &initial_cluster)?;
                check_ports(&initial_cluster)?;
                let shards = cli.shards.or(file.shards).unwrap_or(SHARDS_DEFAULT);
                let replicas = cli.replicas.or(file.replicas).unwrap_or(REPLICAS_DEFAULT.min(initial_cluster.len()));
                placement::validate(&initial_cluster, shards, replicas)?;
                let cluster_id = placement::cluster_id(&initial_cluster, shards, replicas, &cluster_name);
                (initial_cluster, shards, replicas, cluster_id)
            }
            // Joining, or restarting after a join: the cluster (or the data dir)
            // says the rest.
            None => (Vec::new(), 0, 0, 0),
        };
        let log = match (&cli.log, rust_log, &file.log) {
            (Some(flag), _, _) => flag.clone(),
            (None, Some(env), _) if !env.trim().is_empty() => env.to_string(),
            (None, _, Some(file)) => file.clone(),
            _ => LOG_DEFAULT.to_string(),
        };

        let config = ServerConfig {
            id,
            data_dir,
            listen,
            cores,
            initial_cluster,
            join,
            shards,
            replicas,
            cluster_name,
            cluster_id,
            tick_ms: cli.tick_ms.or(file.tick_ms).unwrap_or(TICK_MS_DEFAULT),
            election_timeout_ticks: cli
                .election_timeout_ticks
                .or(file.election_timeout_ticks)
                .unwrap_or(raft::Config::new(id).election_timeout_ticks),
            heartbeat_interval_ticks: cli
                .heartbeat_interval_ticks
                .or(file.heartbeat_interval_ticks)
                .unwrap_or(raft::Config::new(id).heartbeat_interval_ticks),
            io_mode: cli.io.or(file.io).map_or(IoMode::Direct, IoMode::from),
            spin: cli.spin.or(file.spin).unwrap_or(false),
            lease_reads: cli.lease_reads.or(file.lease_reads).unwrap_or(false),
            txn_policy: cli.txn_policy.or(file.txn_policy).map_or(Policy::WoundWait, Policy::from),
            value_bytes_max: cli.value_bytes_max.or(file.value_bytes_max).unwrap_or(VALUE_BYTES_MAX_DEFAULT),
            history_versions_max: cli
                .history_versions_max
                .or(file.history_versions_max)
                .unwrap_or(HISTORY_VERSIONS_DEFAULT),
            snapshot_log_bytes: cli
                .snapshot_log_bytes
                .or(file.snapshot_log_bytes)
                .unwrap_or(SNAPSHOT_LOG_BYTES_DEFAULT),
            move_rate: cli.move_rate.or(file.move_rate).unwrap_or(crate::node::MOVE_RATE_DEFAULT),
            auto_rebalance: cli.auto_rebalance.or(file.auto_rebalance).unwrap_or(true),
            dead_after: match cli.dead_after.as_ref().or(file.dead_after.as_ref()) {
                None => DEAD_AFTER_DEFAULT,
                Some(text) => corekv_rpc::duration::parse_duration(text)
                    .map_err(|why| ConfigError::Invalid { flag: "dead-after", why })?,
            },
            wal_segment_bytes: cli.wal_segment_bytes.or(file.wal_segment_bytes).unwrap_or(WAL_SEGMENT_BYTES_DEFAULT),
            io_memory_bytes: cli.io_memory_bytes.or(file.io_memory_bytes).unwrap_or(IO_MEMORY_BYTES_DEFAULT),
            log,
        };
        config.check_tunables()?;
        Ok(config)
    }

    /// Checks the numbers that have no cross-field rules beyond their own ranges
    /// and what Raft and the WAL themselves accept.
    fn check_tunables(&self) -> Result<(), ConfigError> {
        check_range("tick-ms", self.tick_ms, 1..=TICK_MS_MAX, &format!("1 to {TICK_MS_MAX} ms"))?;
        if !(DEAD_AFTER_MIN..=DEAD_AFTER_MAX).contains(&self.dead_after) {
            let why = format!("{:?} is out of range: 1s to 7 days", self.dead_after);
            return Err(ConfigError::Invalid { flag: "dead-after", why });
        }
        self.raft_config().validate()?;
        let allowed = format!("1 to {VALUE_BYTES_CEILING} bytes (a value must fit a frame)");
        check_range("value-bytes-max", self.value_bytes_max, 1..=VALUE_BYTES_CEILING, &allowed)?;
        let allowed = format!("1 to {HISTORY_VERSIONS_CEILING}");
        check_range("history-versions-max", self.history_versions_max, 1..=HISTORY_VERSIONS_CEILING, &allowed)?;
        let allowed = format!("at least {SNAPSHOT_LOG_BYTES_FLOOR} bytes");
        check_range("snapshot-log-bytes", self.snapshot_log_bytes, SNAPSHOT_LOG_BYTES_FLOOR..=u64::MAX, &allowed)?;
        let allowed = format!("at least {IO_MEMORY_BYTES_FLOOR} bytes");
        check_range("io-memory-bytes", self.io_memory_bytes, IO_MEMORY_BYTES_FLOOR..=usize::MAX, &allowed)?;
        match self.wal_config(0).validate() {
            Err(WalError::Config(reason)) => return Err(ConfigError::WalSegment(reason)),
            Err(other) => return Err(ConfigError::WalSegment(other.to_string())),
            Ok(()) => {}
        }
        // One loop iteration's records must fit a batch, which fits a segment:
        // the replication window, one append and the largest value, twice over.
        let raft = self.raft_config();
        let needed = 2 * (raft.inflight_bytes_max + raft.append_bytes_max + self.value_bytes_max as u64);
        if self.wal_segment_bytes < needed {
            return Err(ConfigError::WalSegment(format!(
                "{} bytes cannot hold one loop iteration's records: with --value-bytes-max {} it must be at least {needed}",
                self.wal_segment_bytes, self.value_bytes_max
            )));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            return Err(ConfigError::LogFilter { filter: self.log.clone(), reason: one_line(&e.to_string()) });
        }
        Ok(())
    }

    /// The Raft configuration of this node's replicas.
    pub fn raft_config(&self) -> raft::Config {
        raft::Config {
            election_timeout_ticks: self.election_timeout_ticks,
            heartbeat_interval_ticks: self.heartbeat_interval_ticks,
            lease_read: self.lease_reads,
            ..raft::Config::new(self.id)
        }
    }

    /// What each shard keeps of a key's history.
    pub fn retention(&self) -> Retention {
        Retention { versions_per_key_max: self.history_versions_max, history_ts_span: HISTORY_TS_SPAN_DEFAULT }
    }

    /// The request limits this node enforces.
    pub fn limits(&self) -> Limits {
        Limits { value_bytes_max: self.value_bytes_max }
    }

    /// The WAL configuration of core `core`.
    pub fn wal_config(&self, core: CoreIndex) -> WalConfig {
        let identity = WalIdentity { cluster_id: self.cluster_id, node_id: self.id, core_id: u32::from(core) };
        WalConfig { segment_bytes: self.wal_segment_bytes, io_mode: self.io_mode, ..WalConfig::new(identity) }
    }

    /// The address core `core` of this node listens on.
    pub fn core_listen_addr(&self, core: CoreIndex) -> String {
        assert!(core < self.cores, "core {core} of a {}-core node", self.cores);
        corekv_rpc::map::core_addr(&self.listen, core).expect("ports were checked when the config was resolved")
    }

    /// This node founds its cluster (`--initial-cluster`), rather than joined one.
    pub fn is_founding(&self) -> bool {
        !self.initial_cluster.is_empty()
    }

    /// The founding cluster map (epoch 1), the same on every founding node.
    /// Panics on a node that joined: it has none.
    pub fn initial_map(&self) -> ClusterMap {
        placement::initial_map(self.cluster_id, &self.initial_cluster, self.shards, self.replicas)
            .expect("placement inputs were checked when the config was resolved")
    }

    /// The identity this node's data dir must carry.
    pub fn data_dir_identity(&self) -> DataDirIdentity {
        DataDirIdentity { cluster_id: self.cluster_id, node_id: self.id, cores: self.cores }
    }

    /// The configuration as a TOML config file (every setting explicit), headed by
    /// the computed cluster id as a comment.
    pub fn to_toml(&self) -> String {
        let file = FileConfig {
            id: Some(self.id),
            // TOML strings are UTF-8: a path that is not prints lossily rather than failing.
            data_dir: Some(PathBuf::from(self.data_dir.to_string_lossy().into_owned())),
            listen: Some(self.listen.clone()),
            cores: Some(self.cores),
            initial_cluster: (!self.initial_cluster.is_empty()).then(|| format_initial_cluster(&self.initial_cluster)),
            join: (!self.join.is_empty()).then(|| self.join.join(",")),
            shards: (self.shards > 0).then_some(self.shards),
            replicas: (self.replicas > 0).then_some(self.replicas),
            cluster_name: Some(self.cluster_name.clone()),
            tick_ms: Some(self.tick_ms),
            election_timeout_ticks: Some(self.election_timeout_ticks),
            heartbeat_interval_ticks: Some(self.heartbeat_interval_ticks),
            io: Some(self.io_mode.into()),
            spin: Some(self.spin),
            lease_reads: Some(self.lease_reads),
            txn_policy: Some(self.txn_policy.into()),
            value_bytes_max: Some(self.value_bytes_max),
            history_versions_max: Some(self.history_versions_max),
            snapshot_log_bytes: Some(self.snapshot_log_bytes),
            move_rate: Some(self.move_rate),
            auto_rebalance: Some(self.auto_rebalance),
            dead_after: Some(format!("{}ms", self.dead_after.as_millis())),
            wal_segment_bytes: Some(self.wal_segment_bytes),
            io_memory_bytes: Some(self.io_memory_bytes),
            log: Some(self.log.clone()),
        };
        let body = toml::to_string(&file).expect("plain keys and small numbers serialize");
        format!("# corekv-server configuration; cluster_id = {:#018x}\n{body}", self.cluster_id)
    }
}

/// This node appears in the cluster with its own address and core count.
fn check_membership(id: NodeId, listen: &str, cores: u16, nodes: &[NodeInfo]) -> Result<(), ConfigError> {
    let Some(me) = nodes.iter().find(|n| n.id == id) else {
        let listed: Vec<String> = nodes.iter().map(|n| n.id.to_string()).collect();
        return Err(ConfigError::NotInCluster { id, listed: listed.join(", ") });
    };
    if me.addr != listen {
        return Err(ConfigError::ListenMismatch { id, listen: listen.into(), cluster_addr: me.addr.clone() });
    }
    if me.cores != cores {
        return Err(ConfigError::CoresMismatch { id, cores, cluster_cores: me.cores });
    }
    Ok(())
}

fn check_range<T: PartialOrd + ToString>(
    flag: &'static str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    allowed: &str,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange { flag, value: value.to_string(), allowed: allowed.to_string() })
    }
}

/// `text` with its line breaks folded, so an error stays one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
