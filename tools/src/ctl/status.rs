//! `corekv-ctl status`: the cluster as its cores report it, one JSON object with
//! `nodes` (each core with its counters) and `shards` (each with the leader's
//! view and every replica's), or a summary line and tables for people.

use std::collections::BTreeMap;

use corekv_rpc::kv::{NodeId, ShardId};
use corekv_rpc::map::{CoreIndex, META_SHARD};
use corekv_rpc::node::{CoreStats, ShardStatus};
use serde::Serialize;

use super::render::Rendered;
use corekv_rpc::client::{ClusterStatus, CoreStatus};

#[derive(Serialize)]
struct StatusJson<'a> {
    ok: bool,
    cluster_id: u64,
    epoch: u64,
    nodes: Vec<NodeJson<'a>>,
    shards: Vec<ShardJson>,
    /// The meta group (the cluster map's own Raft group), when a replica answered.
    meta: Option<ShardJson>,
}

#[derive(Serialize)]
struct NodeJson<'a> {
    id: NodeId,
    addr: &'a str,
    cores: Vec<CoreJson<'a>>,
}

#[derive(Serialize)]
struct CoreJson<'a> {
    core: CoreIndex,
    addr: &'a str,
    /// Why the core did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    /// Shard replicas the core reported.
    replicas: usize,
    /// Of which it leads.
    leading: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<StatsJson>,
}

/// The counters of the `stats` call, minus the node and core the JSON already
/// names. Built by destructuring, so a counter added to [`CoreStats`] cannot be
/// forgotten here: the build breaks.
#[derive(Serialize)]
struct StatsJson {
    groups: u64,
    leaders: u64,
    gets: u64,
    puts: u64,
    deletes: u64,
    cas: u64,
    txn_reads: u64,
    txn_locks: u64,
    txn_commits: u64,
    versions: u64,
    scans: u64,
    stale_reads: u64,
    busy: u64,
    redirects: u64,
    raft_proposals: u64,
    raft_entries_persisted: u64,
    raft_entries_applied: u64,
    wal_batches: u64,
    wal_bytes: u64,
    wal_fdatasyncs: u64,
    snapshots_taken: u64,
    snapshots_for_wal: u64,
    snapshots_installed: u64,
    snapshot_bytes_installed: u64,
    move_snapshot_bytes: u64,
    move_snapshots: u64,
    move_store_bytes: u64,
    move_log_bytes: u64,
    replicas_added: u64,
    replicas_dropped: u64,
    conf_changes_proposed: u64,
    meta_writes: u64,
    maps_installed: u64,
    peer_frames_sent: u64,
    peer_messages_sent: u64,
    peer_frames_received: u64,
    peer_messages_received: u64,
    heartbeat_messages_sent: u64,
    client_frames_received: u64,
    client_frames_sent: u64,
    bad_connections: u64,
    iterations: u64,
    cpu_ns: u64,
}

impl From<&CoreStats> for StatsJson {
    fn from(s: &CoreStats) -> StatsJson {
        let CoreStats {
            node: _,
            core: _,
            groups,
            leaders,
            gets,
            puts,
            deletes,
            cas,
            txn_reads,
            txn_locks,
            txn_commits,
            versions,
            scans,
            stale_reads,
            busy,
            redirects,
            raft_proposals,
            raft_entries_persisted,
            raft_entries_applied,
            wal_batches,
            wal_bytes,
            wal_fdatasyncs,
            snapshots_taken,
            snapshots_for_wal,
            snapshots_installed,
            snapshot_bytes_installed,
            move_snapshot_bytes,
            move_snapshots,
            move_store_bytes,
            move_log_bytes,
            replicas_added,
            replicas_dropped,
            conf_changes_proposed,
            meta_writes,
            maps_installed,
            peer_frames_sent,
            peer_messages_sent,
            peer_frames_received,
            peer_messages_received,
            heartbeat_messages_sent,
            client_frames_received,
            client_frames_sent,
            bad_connections,
            iterations,
            cpu_ns,
        } = *s;
        StatsJson {
            groups,
            leaders,
            gets,
            puts,
            deletes,
            cas,
            txn_reads,
            txn_locks,
            txn_commits,
            versions,
            scans,
            stale_reads,
            busy,
            redirects,
            raft_proposals,
            raft_entries_persisted,
            raft_entries_applied,
            wal_batches,
            wal_bytes,
            wal_fdatasyncs,
            snapshots_taken,
            snapshots_for_wal,
            snapshots_installed,
            snapshot_bytes_installed,
            move_snapshot_bytes,
            move_snapshots,
            move_store_bytes,
            move_log_bytes,
            replicas_added,
            replicas_dropped,
            conf_changes_proposed,
            meta_writes,
            maps_installed,
            peer_frames_sent,
            peer_messages_sent,
            peer_frames_received,
            peer_messages_received,
            heartbeat_messages_sent,
            client_frames_received,
            client_frames_sent,
            bad_connections,
            iterations,
            cpu_ns,
        }
    }
}

/// One shard: its leader's view (leader 0 and the replicas' highest numbers
/// when no replica leads) and every replica's.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
struct ShardJson {
    shard: ShardId,
    leader: NodeId,
    term: u64,
    raft_commit_index: u64,
    applied_index: u64,
    lag: u64,
    replicas: Vec<ReplicaJson>,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
struct ReplicaJson {
    node: NodeId,
    core: CoreIndex,
    is_leader: bool,
    leader: NodeId,
    term: u64,
    raft_commit_index: u64,
    applied_index: u64,
    last_index: u64,
    lag: u64,
}

fn shards_of(status: &ClusterStatus) -> Vec<ShardJson> {
    let mut by_shard: BTreeMap<ShardId, Vec<(NodeId, CoreIndex, ShardStatus)>> = BTreeMap::new();
    for node in &status.nodes {
        for core in &node.cores {
            for s in &core.shards {
                by_shard.entry(s.shard).or_default().push((node.id, core.core, s.clone()));
            }
        }
    }
    by_shard.into_iter().map(|(shard, replicas)| shard_json(shard, &replicas)).collect()
}

fn shard_json(shard: ShardId, replicas: &[(NodeId, CoreIndex, ShardStatus)]) -> ShardJson {
    let leader = replicas.iter().filter(|(_, _, s)| s.is_leader).max_by_key(|(_, _, s)| s.term);
    let (leader, term, raft_commit_index, applied_index, lag) = match leader {
        Some((node, _, s)) => (*node, s.term, s.raft_commit_index, s.applied_index, s.lag),
        None => {
            let max = |f: fn(&ShardStatus) -> u64| replicas.iter().map(|(_, _, s)| f(s)).max().unwrap_or(0);
            (0, max(|s| s.term), max(|s| s.raft_commit_index), max(|s| s.applied_index), 0)
        }
    };
    let replicas = replicas
        .iter()
        .map(|(node, core, s)| ReplicaJson {
            node: *node,
            core: *core,
            is_leader: s.is_leader,
            leader: s.leader,
            term: s.term,
            raft_commit_index: s.raft_commit_index,
            applied_index: s.applied_index,
            last_index: s.last_index,
            lag: s.lag,
        })
        .collect();
    ShardJson { shard, leader, term, raft_commit_index, applied_index, lag, replicas }
}

fn core_json(core: &CoreStatus) -> CoreJson<'_> {
    CoreJson {
        core: core.core,
        addr: &core.addr,
        error: core.error.as_deref(),
        replicas: core.shards.len(),
        leading: core.shards.iter().filter(|s| s.is_leader).count(),
        stats: core.stats.as_ref().map(StatsJson::from),
    }
}

/// One line for a core: its replicas and its main counters, or why it did not
/// answer.
fn core_line(core: &CoreStatus) -> String {
    if let Some(error) = &core.error {
        return format!("  core {} {}: unreachable: {error}", core.core, core.addr);
    }
    let leading = core.shards.iter().filter(|s| s.is_leader).count();
    let mut line = format!("  core {} {}: {} replicas, {leading} leading", core.core, core.addr, core.shards.len());
    if let Some(s) = &core.stats {
        line.push_str(&format!(
            "; gets {} puts {} deletes {} cas {} versions {} scans {} busy {}; wal batches {} fdatasyncs {}; \
             peer frames {}/{} sent/received; cpu {:.2} s",
            s.gets,
            s.puts,
            s.deletes,
            s.cas,
            s.versions,
            s.scans,
            s.busy,
            s.wal_batches,
            s.wal_fdatasyncs,
            s.peer_frames_sent,
            s.peer_frames_received,
            s.cpu_ns as f64 / 1e9
        ));
    }
    line
}

/// The summary line: nodes, cores that answered, shards and how many have a leader.
fn summary(status: &ClusterStatus, shards: &[ShardJson]) -> String {
    let cores: Vec<&CoreStatus> = status.nodes.iter().flat_map(|n| &n.cores).collect();
    let answered = cores.iter().filter(|c| c.error.is_none()).count();
    let led = shards.iter().filter(|s| s.leader != 0).count();
    let lag = shards.iter().map(|s| s.lag).max().unwrap_or(0);
    format!(
        "cluster {:#018x} epoch {}: {} nodes, {answered} of {} cores answered, {} shards, {led} with a leader, \
         max lag {lag}",
        status.cluster_id,
        status.epoch,
        status.nodes.len(),
        cores.len(),
        shards.len()
    )
}

/// status: `{"ok":true,"cluster_id":…,"epoch":…,"nodes":[…],"shards":[…]}`;
/// human: the summary line, a line per node and core, a line per shard (the
/// shell prints the summary line).
pub fn render_status(status: &ClusterStatus, json: bool) -> Rendered {
    let mut shards = shards_of(status);
    let meta = shards.iter().position(|s| s.shard == META_SHARD).map(|i| shards.remove(i));
    let line = summary(status, &shards);
    let mut lines = vec![line.clone()];
    for node in &status.nodes {
        lines.push(format!("node {} {}", node.id, node.addr));
        lines.extend(node.cores.iter().map(core_line));
    }
    if !shards.is_empty() {
        lines.push(format!(
            "{:>5} {:>6} {:>6} {:>10} {:>10} {:>6}  replicas (node/core)",
            "shard", "leader", "term", "commit", "applied", "lag"
        ));
    }
    for (s, name) in shards.iter().map(|s| (s, s.shard.to_string())).chain(meta.iter().map(|m| (m, "meta".to_string())))
    {
        let replicas: Vec<String> = s.replicas.iter().map(|r| format!("{}/{}", r.node, r.core)).collect();
        lines.push(format!(
            "{:>5} {:>6} {:>6} {:>10} {:>10} {:>6}  {}",
            name,
            s.leader,
            s.term,
            s.raft_commit_index,
            s.applied_index,
            s.lag,
            replicas.join(" ")
        ));
    }
    let nodes = status
        .nodes
        .iter()
        .map(|n| NodeJson { id: n.id, addr: &n.addr, cores: n.cores.iter().map(core_json).collect() })
        .collect();
    let object = StatusJson { ok: true, cluster_id: status.cluster_id, epoch: status.epoch, nodes, shards, meta };
    Rendered::ok(json, &object, lines, line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use corekv_rpc::client::NodeStatus;

    fn replica(shard: ShardId, is_leader: bool, leader: NodeId, term: u64, commit: u64) -> ShardStatus {
        ShardStatus {
            shard,
            is_leader,
            leader,
            term,
            raft_commit_index: commit,
            applied_index: commit,
            last_index: commit + 1,
            lag: u64::from(is_leader),
            ..ShardStatus::default()
        }
    }

    fn cluster() -> ClusterStatus {
        let stats = CoreStats {
            node: 1,
            core: 0,
            groups: 2,
            leaders: 1,
            puts: 7,
            cpu_ns: 1_500_000_000,
            ..CoreStats::default()
        };
        ClusterStatus {
            cluster_id: 0xabc,
            epoch: 1,
            nodes: vec![
                NodeStatus {
                    id: 1,
                    addr: "127.0.0.1:7100".into(),
                    cores: vec![CoreStatus {
                        core: 0,
                        addr: "127.0.0.1:7100".into(),
                        error: None,
                        stats: Some(stats),
                        shards: vec![replica(0, true, 1, 3, 10), replica(1, false, 0, 2, 4)],
                    }],
                },
                NodeStatus {
                    id: 2,
                    addr: "127.0.0.1:7200".into(),
                    cores: vec![
                        CoreStatus {
                            core: 0,
                            addr: "127.0.0.1:7200".into(),
                            error: None,
                            stats: None,
                            shards: vec![replica(0, false, 1, 3, 9), replica(1, false, 0, 2, 5)],
                        },
                        CoreStatus {
                            core: 1,
                            addr: "127.0.0.1:7201".into(),
                            error: Some("connection refused".into()),
                            stats: None,
                            shards: Vec::new(),
                        },
                    ],
                },
            ],
        }
    }

    #[test]
    fn status_json_has_nodes_with_counters_and_shards_with_their_leader() {
        let r = render_status(&cluster(), true);
        let v: serde_json::Value = serde_json::from_str(&r.line).unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(v["cluster_id"], 0xabc);
        assert_eq!(v["nodes"].as_array().unwrap().len(), 2);
        assert_eq!(v["nodes"][0]["cores"][0]["stats"]["puts"], 7);
        assert_eq!(v["nodes"][0]["cores"][0]["leading"], 1);
        assert_eq!(v["nodes"][1]["cores"][1]["error"], "connection refused");
        assert!(v["nodes"][1]["cores"][0].get("error").is_none());
        let shards = v["shards"].as_array().unwrap();
        assert_eq!(shards.len(), 2);
        assert_eq!(
            (&shards[0]["shard"], &shards[0]["leader"], &shards[0]["term"], &shards[0]["raft_commit_index"]),
            (&0.into(), &1.into(), &3.into(), &10.into())
        );
        assert_eq!(shards[0]["lag"], 1);
        assert_eq!(shards[0]["replicas"].as_array().unwrap().len(), 2);
        // No replica leads shard 1: leader 0, the replicas' highest numbers.
        assert_eq!((&shards[1]["leader"], &shards[1]["raft_commit_index"]), (&0.into(), &5.into()));
        assert_eq!(r.lines.len(), 1);
    }

    #[test]
    fn status_for_people_is_a_summary_then_tables() {
        let r = render_status(&cluster(), false);
        assert_eq!(
            r.line,
            "cluster 0x0000000000000abc epoch 1: 2 nodes, 2 of 3 cores answered, 2 shards, 1 with a leader, max lag 1"
        );
        assert_eq!(r.lines[0], r.line);
        assert!(r.lines.iter().any(|l| l.contains("core 1 127.0.0.1:7201: unreachable: connection refused")));
        assert!(r.lines.iter().any(|l| l.contains("puts 7") && l.contains("cpu 1.50 s")));
        assert_eq!(
            r.lines[r.lines.len() - 3],
            "shard leader   term     commit    applied    lag  replicas (node/core)"
        );
        assert_eq!(r.lines.last().unwrap(), "    1      0      2          5          5      0  1/0 2/0");
    }
}
