//! Driving a [`LocalCluster`] of real `corekv-server` processes the way the tests
//! need: starting one as DESIGN §11 asks (`--cores 2`, the server built when
//! missing), hanging a node with SIGSTOP and waking it with SIGCONT, and reading
//! leaders and counters out of a status report.
//!
//! The launcher owns the processes (kill, restart, terminate); this module only
//! adds the signals it does not send.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use corekv_rpc::client::blocking::Client;
use corekv_rpc::client::{ClientConfig, ClusterStatus};
use corekv_rpc::kv::{NodeId, ShardId};
use corekv_rpc::map::META_SHARD;
use corekv_rpc::node::CoreStats;
use corekv_tools::launcher::{LaunchOptions, LocalCluster};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Every node of every test runs this many cores, so cross-core paths run.
pub const CORES: u16 = 2;
/// How long a cluster may take to have a leader for every shard after a start or
/// a restart: a liveness bound (elections take 1–2 s, a restart replays its WAL),
/// never a speed claim.
pub const READY_WITHIN: Duration = Duration::from_secs(60);

/// Starts `nodes` nodes with `shards` shards and waits until every shard has a
/// leader; builds the server binary first when it is missing.
pub fn start(nodes: usize, shards: u32) -> LocalCluster {
    start_with(LaunchOptions { nodes, shards, ..LaunchOptions::default() })
}

/// Starts a cluster with `options`, forcing `--cores 2` and the build of a
/// missing server binary.
pub fn start_with(options: LaunchOptions) -> LocalCluster {
    let options = LaunchOptions { cores: CORES, build_if_missing: true, ..options };
    LocalCluster::start(options).expect("the cluster starts and every shard elects a leader")
}

/// A client of `cluster` whose requests (retries included) each get `deadline`.
pub fn connect(cluster: &LocalCluster, deadline: Duration) -> Client {
    let mut config = ClientConfig::new(cluster.addrs());
    config.deadline = deadline;
    Client::connect(config).expect("a client connects to a running cluster")
}

/// kill -9 of every running node at once: all are signalled before any is
/// reaped, so none outlives another by more than the signals' delivery.
pub fn kill_all(cluster: &mut LocalCluster) -> Result<(), String> {
    let nodes = 1..=cluster.options().nodes as NodeId;
    for id in nodes.clone() {
        signal(cluster, id, Signal::SIGKILL)?;
    }
    for id in nodes {
        cluster.kill(id).map_err(|e| format!("cannot reap node {id}: {e}"))?;
    }
    Ok(())
}

/// Hangs node `id` (SIGSTOP): its sockets stay open and nothing answers, like a
/// node stuck in a long pause. A node that is not running is left alone.
/// Returns once every thread of the process is stopped: SIGSTOP is delivered
/// asynchronously, and a node still running a few milliseconds after the signal
/// can acknowledge what the test then blames on the nodes that remain.
pub fn pause(cluster: &LocalCluster, id: NodeId) -> Result<(), String> {
    signal(cluster, id, Signal::SIGSTOP)?;
    let Some(pid) = cluster.pid(id) else { return Ok(()) };
    let start = Instant::now();
    while !all_threads_stopped(pid) {
        if start.elapsed() > READY_WITHIN {
            return Err(format!("node {id} (pid {pid}) did not stop after SIGSTOP"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// True when every thread of `pid` is in state `T` (stopped); false while one
/// still runs, or when the process cannot be read.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().all(|task| {
        // The state follows the command name, which is in parentheses and may
        // hold spaces: it is the first field after the last ')'.
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next().map(String::from))
            })
            .is_some_and(|state| state == "T" || state == "t")
    })
}

/// Wakes node `id` (SIGCONT) after [`pause`].
pub fn resume(cluster: &LocalCluster, id: NodeId) -> Result<(), String> {
    signal(cluster, id, Signal::SIGCONT)
}

fn signal(cluster: &LocalCluster, id: NodeId, signal: Signal) -> Result<(), String> {
    let Some(pid) = cluster.pid(id) else { return Ok(()) };
    let pid = i32::try_from(pid).map_err(|_| format!("node {id}: pid {pid} does not fit a pid_t"))?;
    kill(Pid::from_raw(pid), signal).map_err(|e| format!("cannot send {signal} to node {id}: {e}"))
}

/// The leader of every shard some replica claims to lead, as reported: when two
/// replicas both claim a shard (an old leader not yet told), the higher term wins.
/// The meta group is not a shard and is left out.
pub fn leaders(status: &ClusterStatus) -> BTreeMap<ShardId, NodeId> {
    let mut best: BTreeMap<ShardId, (u64, NodeId)> = BTreeMap::new();
    for node in &status.nodes {
        for core in &node.cores {
            for shard in core.shards.iter().filter(|s| s.is_leader && s.shard != META_SHARD) {
                let entry = best.entry(shard.shard).or_insert((shard.term, node.id));
                if shard.term > entry.0 {
                    *entry = (shard.term, node.id);
                }
            }
        }
    }
    best.into_iter().map(|(shard, (_, node))| (shard, node)).collect()
}

/// A status report in which every core of every node answered, asked again
/// until one is (a core of a loaded machine may miss an attempt's timeout, and a
/// sum of counters that silently leaves it out would shrink); panics with the
/// last errors after `within`, a liveness bound.
pub fn full_status(client: &mut Client, within: Duration) -> ClusterStatus {
    let start = Instant::now();
    loop {
        let status = client.status();
        let missing: Vec<String> = status
            .nodes
            .iter()
            .flat_map(|n| n.cores.iter().map(move |c| (n.id, c)))
            .filter(|(_, c)| c.stats.is_none() || c.error.is_some())
            .map(|(node, c)| format!("node {node} core {}: {}", c.core, c.error.as_deref().unwrap_or("no counters")))
            .collect();
        if missing.is_empty() {
            return status;
        }
        assert!(start.elapsed() < within, "cores did not answer status within {within:?}: {missing:?}");
        eprintln!("status again: {missing:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every answering core's counters.
pub fn core_stats(status: &ClusterStatus) -> Vec<CoreStats> {
    status.nodes.iter().flat_map(|n| n.cores.iter().filter_map(|c| c.stats)).collect()
}

/// The sum of one counter over every answering core.
pub fn stat_sum(status: &ClusterStatus, counter: impl Fn(&CoreStats) -> u64) -> u64 {
    core_stats(status).iter().map(counter).sum()
}
