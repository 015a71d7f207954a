//! `corekv-server`'s body: one pinned glommio executor per core, each running its
//! [`core_driver`](super::core_driver) until SIGTERM / SIGINT or a fatal error.
//!
//! Cores share nothing but the read-only cluster map and the shutdown flag.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use corekv_rpc::map::ClusterMap;
use glommio::{LocalExecutorBuilder, Placement};

use super::core_driver::{CoreSetup, run_core};
use crate::config::ServerConfig;
use crate::kv::ShardConfig;
use crate::node::NodeCoreConfig;
use crate::wal::WalConfig;

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Something needed to start is missing or wrong.
    #[error("{0}")]
    Setup(String),
    /// A core stopped on an error (storage, corrupt state).
    #[error("core {core}: {message}")]
    Core {
        /// The core.
        core: u16,
        /// What happened.
        message: String,
    },
}

/// The WAL pending-batch bound: the segment size bounds a batch anyway; the node
/// core keeps every iteration inside the room left (`CoreStorage::room_bytes`).
const WAL_PENDING_BYTES_MAX: u64 = 1 << 30;

/// Runs the server until SIGTERM / SIGINT (then returns Ok after a clean stop) or
/// until a core fails. `joined` is the cluster's map a first start with `--join`
/// got ([`super::join::resolve`]): saved as every core's map file first.
pub fn run(config: ServerConfig, joined: Option<ClusterMap>) -> Result<(), ServerError> {
    let map = Arc::new(starting_map(&config, joined)?);
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, shutdown.clone())
            .map_err(|e| ServerError::Setup(format!("cannot install the signal handler: {e}")))?;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut handles = Vec::new();
    let handoffs = Arc::new(super::handoff_board::HandoffBoard::new(config.cores));
    for core in 0..config.cores {
        let setup = core_setup(&config, map.clone(), core, shutdown.clone(), handoffs.clone())?;
        let mut builder = LocalExecutorBuilder::new(Placement::Fixed(usize::from(core) % cpus))
            .name(&format!("corekv-core-{core}"))
            .io_memory(config.io_memory_bytes);
        if config.spin {
            builder = builder.spin_before_park(Duration::from_millis(10));
        }
        // A core that fails raises the shared stop flag at once, so the other
        // cores stop too and the process exits (fail-stop) instead of serving on
        // without it until a signal comes.
        let stop_all = shutdown.clone();
        let handle = builder
            .spawn(move || async move {
                let result = run_core(setup).await;
                if let Err(message) = &result {
                    tracing::error!(core, "{message}");
                    stop_all.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                result
            })
            .map_err(|e| {
                let e = std::io::Error::from(e);
                if e.raw_os_error() == Some(12) || e.to_string().contains("MemLock") {
                    ServerError::Setup(format!(
                        "cannot start core {core}: {e}; glommio locks io_memory per core and needs RLIMIT_MEMLOCK \
                     >= 512 KiB: raise it (`ulimit -l`, LimitMEMLOCK= in systemd) or lower --io-memory-bytes"
                    ))
                } else {
                    ServerError::Setup(format!("cannot start core {core}: {e}"))
                }
            })?;
        handles.push((core, handle));
    }
    let mut first_error = None;
    for (core, handle) in handles {
        let result = match handle.join() {
            Ok(result) => result,
            Err(e) => Err(format!("executor failed: {e}")),
        };
        if let Err(message) = result {
            // One core failing stops the process (fail-stop): Raft tolerates it.
            shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
            first_error.get_or_insert(ServerError::Core { core, message });
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The map the cores start from: the newest of the cores' map files, else the
/// founding one (or, for a node that joined, the one the join got). Every core
/// starts from the same newest map: a hand-off between two cores is decided by
/// it (a core whose own file is older must not act on its older view).
fn starting_map(config: &ServerConfig, joined: Option<ClusterMap>) -> Result<ClusterMap, ServerError> {
    if let Some(map) = joined.filter(|_| !config.is_founding()) {
        for core in 0..config.cores {
            let dir = crate::config::core_dir(&config.data_dir, core);
            super::map_file::save(&dir, &map).map_err(ServerError::Setup)?;
        }
        return Ok(map);
    }
    let mut newest: Option<ClusterMap> = None;
    for core in 0..config.cores {
        let dir = crate::config::core_dir(&config.data_dir, core);
        if let Some(map) = super::map_file::load(&dir).map_err(ServerError::Setup)?
            && newest.as_ref().is_none_or(|n| map.epoch > n.epoch)
        {
            newest = Some(map);
        }
    }
    if config.is_founding() {
        let initial = config.initial_map();
        match newest {
            Some(map) if map.epoch > initial.epoch && map.cluster_id == initial.cluster_id => return Ok(map),
            _ => return Ok(initial),
        }
    }
    let map = newest.ok_or_else(|| {
        ServerError::Setup(format!(
            "{} holds no cluster map: this node joined a cluster but never saved its map; start it again with --join",
            config.data_dir.display()
        ))
    })?;
    if map.cluster_id != config.cluster_id {
        return Err(ServerError::Setup(format!(
            "the saved map is of cluster {:#018x}, the data dir's of {:#018x}",
            map.cluster_id, config.cluster_id
        )));
    }
    Ok(map)
}

fn core_setup(
    config: &ServerConfig,
    map: Arc<corekv_rpc::map::ClusterMap>,
    core: u16,
    shutdown: Arc<AtomicBool>,
    handoffs: Arc<super::handoff_board::HandoffBoard>,
) -> Result<CoreSetup, ServerError> {
    let mut node_core = NodeCoreConfig::new(config.id, core);
    node_core.raft = config.raft_config();
    node_core.raft.validate().map_err(|e| ServerError::Setup(format!("raft timing: {e}")))?;
    node_core.shard = ShardConfig { retention: config.retention(), limits: config.limits(), ..ShardConfig::default() };
    node_core.snapshot_log_bytes = config.snapshot_log_bytes;
    node_core.wal_segment_bytes = config.wal_segment_bytes;
    node_core.move_rate_bytes_per_sec = config.move_rate;
    node_core.auto_rebalance = config.auto_rebalance;
    node_core.dead_after_ticks = (config.dead_after.as_millis() as u64 / config.tick_ms).max(1);
    node_core.txn_policy = config.txn_policy;
    let wal = WalConfig { pending_bytes_max: WAL_PENDING_BYTES_MAX, ..config.wal_config(core) };
    Ok(CoreSetup {
        node_core,
        map,
        cores: config.cores,
        listen: config.core_listen_addr(core),
        core_dir: crate::config::core_dir(&config.data_dir, core),
        wal,
        tick: Duration::from_millis(config.tick_ms),
        shutdown,
        handoffs,
    })
}
