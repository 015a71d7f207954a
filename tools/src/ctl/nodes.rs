//! `corekv-ctl node list|drain|remove` and `rebalance` (issue 12).
//!
//! Every change is checked first against a fresh map with the rules the meta
//! group applies (a refusal is `invalid` with the reason, before anything is
//! sent), then handed to the meta group, whose leader plans and runs the moves;
//! the command watches the map for the change (or, with `--wait`, for its end).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use corekv_engine::placement::{drive, nodes};
use corekv_rpc::client::ClusterStatus;
use corekv_rpc::kv::{NodeId, ShardId};
use corekv_rpc::map::{ClusterMap, NodeState};
use corekv_rpc::node::MetaEdit;
use serde::Serialize;

use super::placement::{MoveCluster, group_view};
use super::render::{Failure, Rendered};

/// How often a command looks at the map.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Serialize)]
struct NodeJson {
    id: NodeId,
    addr: String,
    cores: u16,
    state: &'static str,
    replicas: usize,
    leaders: usize,
}

#[derive(Serialize)]
struct NodeListJson {
    ok: bool,
    nodes: Vec<NodeJson>,
}

#[derive(Serialize)]
struct OkJson {
    ok: bool,
}

#[derive(Serialize)]
struct MoveJson {
    shard: ShardId,
    from: NodeId,
    to: NodeId,
    bytes: u64,
}

#[derive(Serialize)]
struct PlanJson {
    ok: bool,
    moves: Vec<MoveJson>,
    bytes: u64,
    minimal_bytes: u64,
}

/// The up nodes none of whose cores answered `status`: down, as an observer sees
/// them.
fn unreachable(map: &ClusterMap, status: &ClusterStatus) -> BTreeSet<NodeId> {
    status
        .nodes
        .iter()
        .filter(|n| !n.cores.is_empty() && n.cores.iter().all(|c| c.error.is_some()))
        .map(|n| n.id)
        .filter(|&id| map.node(id).is_some_and(|n| n.state == NodeState::Up))
        .collect()
}

/// `node list`: `{"ok":true,"nodes":[{"id":N,"addr":"…","cores":C,"state":"up",
/// "replicas":R,"leaders":L}]}`; R and L count shard replicas and leaderships
/// as the shards' leaders report them (the meta group apart).
pub fn render_node_list(map: &ClusterMap, status: &ClusterStatus, json: bool) -> Rendered {
    let down = unreachable(map, status);
    let views: Vec<_> = (0..map.shard_count()).map(|s| group_view(map, status, s)).collect();
    let nodes: Vec<NodeJson> = map
        .nodes
        .iter()
        .map(|n| NodeJson {
            id: n.id,
            addr: n.addr.clone(),
            cores: n.cores,
            state: drive::effective_state(map, n.id, &down).name(),
            replicas: views.iter().filter(|(v, l, _)| v.contains(&n.id) || l.contains(&n.id)).count(),
            leaders: views.iter().filter(|(_, _, leader)| *leader == Some(n.id)).count(),
        })
        .collect();
    let human: Vec<String> = nodes
        .iter()
        .map(|n| {
            format!(
                "node {} {} cores {} {}: {} replicas, {} leaders",
                n.id, n.addr, n.cores, n.state, n.replicas, n.leaders
            )
        })
        .collect();
    let line = format!("{} nodes", nodes.len());
    Rendered::ok(json, &NodeListJson { ok: true, nodes }, human, line)
}

/// Hands `edit` to the meta group and polls the map until `accepted` (or with
/// `wait`, `done`) holds; `unavailable` past `timeout` (the change goes on).
fn submit_and_watch<C: MoveCluster + ?Sized>(
    cluster: &mut C,
    edit: MetaEdit,
    accepted: impl Fn(&ClusterMap) -> bool,
    done: impl Fn(&ClusterMap) -> bool,
    wait: bool,
    timeout: Duration,
) -> Result<(), Failure> {
    let deadline = Instant::now() + timeout;
    cluster.submit(edit.clone())?;
    let mut shown = false;
    loop {
        let map = cluster.fresh_map()?;
        shown |= accepted(&map);
        if shown && (!wait || done(&map)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let what = if shown { "the change is under way" } else { "the meta group has not taken the change yet" };
            let mut reason = format!("{what} past the deadline; it goes on");
            // The driver neither moves replicas onto an unreachable node nor
            // spreads leaders while one is: say so, rather than leave the
            // operator guessing why --wait never ends.
            let down = if shown && wait { unreachable(&map, &cluster.status()) } else { BTreeSet::new() };
            if !down.is_empty() {
                let ids: Vec<String> = down.iter().map(u64::to_string).collect();
                reason.push_str(&format!(
                    "; unreachable: node {}, and it ends once they are back or declared dead (--dead-after)",
                    ids.join(", node ")
                ));
            }
            return Err(Failure::goes_on(reason));
        }
        std::thread::sleep(POLL_INTERVAL);
        // Asked again in case the meta leader changed and dropped it (repeats are
        // harmless: an edit the map shows changes nothing).
        if !shown {
            cluster.submit(edit.clone())?;
        }
    }
}

/// `node drain N`: `{"ok":true}` once the map shows the node draining (with
/// `--wait`, once it holds no replica).
pub fn run_drain<C: MoveCluster + ?Sized>(
    cluster: &mut C,
    node: NodeId,
    wait: bool,
    timeout: Duration,
    json: bool,
) -> Result<Rendered, Failure> {
    let map = cluster.fresh_map()?;
    nodes::set_state(&map, node, NodeState::Draining, false).map_err(|e| Failure::invalid(e.to_string()))?;
    let edit = MetaEdit::SetNodeState { node, state: NodeState::Draining, force: false };
    let draining = |m: &ClusterMap| m.node(node).is_some_and(|n| n.state != NodeState::Up);
    let empty = |m: &ClusterMap| nodes::replicas_on(m, node) == 0;
    submit_and_watch(cluster, edit, draining, empty, wait, timeout)?;
    let human = if wait { format!("node {node} drained") } else { format!("node {node} draining") };
    Ok(Rendered::ok_line(json, &OkJson { ok: true }, human))
}

/// `node remove N [--force]`: `{"ok":true}` once the map shows the node removed
/// (with `--wait`, once its replicas were re-created elsewhere too).
pub fn run_remove<C: MoveCluster + ?Sized>(
    cluster: &mut C,
    node: NodeId,
    force: bool,
    wait: bool,
    timeout: Duration,
    json: bool,
) -> Result<Rendered, Failure> {
    let map = cluster.fresh_map()?;
    nodes::set_state(&map, node, NodeState::Removed, force).map_err(|e| Failure::invalid(e.to_string()))?;
    let edit = MetaEdit::SetNodeState { node, state: NodeState::Removed, force };
    let removed = |m: &ClusterMap| m.node(node).is_some_and(|n| n.state == NodeState::Removed);
    let empty = |m: &ClusterMap| nodes::replicas_on(m, node) == 0;
    submit_and_watch(cluster, edit, removed, empty, wait, timeout)?;
    Ok(Rendered::ok_line(json, &OkJson { ok: true }, format!("node {node} removed")))
}

/// The plan for the cluster as it is: the moves the meta leader would make, with
/// each shard's size as its leader reports it; and the fewest bytes any such
/// plan sends between nodes (sizes exact).
fn current_plan(
    map: &ClusterMap,
    status: &ClusterStatus,
) -> Result<(corekv_engine::placement::plan::Plan, u64), Failure> {
    let down = unreachable(map, status);
    let mut sizes = vec![0u64; map.shard_count() as usize];
    for shard in status.nodes.iter().flat_map(|n| &n.cores).flat_map(|c| &c.shards) {
        if let Some(size) = sizes.get_mut(shard.shard as usize) {
            *size = (*size).max(shard.bytes);
        }
    }
    let no_plan = |e| Failure::invalid(format!("no plan: {e}"));
    let plan = drive::plan_for(map, &down, |s| sizes[s as usize]).map_err(no_plan)?;
    let minimal = drive::minimal_bytes_for(map, &down, |s| sizes[s as usize]).map_err(no_plan)?;
    Ok((plan, minimal))
}

/// `rebalance --dry-run`: the plan, `{"ok":true,"moves":[{"shard":S,"from":N,
/// "to":M,"bytes":B}],"bytes":B,"minimal_bytes":B}`. Hand-offs between two cores
/// of one node are left out: they send no bytes between nodes.
pub fn render_plan(map: &ClusterMap, status: &ClusterStatus, json: bool) -> Result<Rendered, Failure> {
    let (plan, minimal_bytes) = current_plan(map, status)?;
    let moves: Vec<MoveJson> = plan
        .moves
        .iter()
        .filter(|m| m.from.node != m.to.node)
        .map(|m| MoveJson { shard: m.shard, from: m.from.node, to: m.to.node, bytes: m.bytes })
        .collect();
    let bytes = moves.iter().map(|m| m.bytes).sum();
    let mut human: Vec<String> = moves
        .iter()
        .map(|m| format!("shard {} from node {} to node {} ({} bytes)", m.shard, m.from, m.to, m.bytes))
        .collect();
    let line = format!("{} moves, {bytes} bytes (minimal {minimal_bytes})", moves.len());
    human.push(line.clone());
    Ok(Rendered::ok(json, &PlanJson { ok: true, moves, bytes, minimal_bytes }, human, line))
}

/// `rebalance`: asks the meta leader to plan and move (even with automatic
/// rebalancing off); `{"ok":true}` once it took the request (with `--wait`, once
/// the placement is balanced and no move is under way).
pub fn run_rebalance<C: MoveCluster + ?Sized>(
    cluster: &mut C,
    wait: bool,
    timeout: Duration,
    json: bool,
) -> Result<Rendered, Failure> {
    let before = cluster.fresh_map()?.epoch;
    let balanced = |m: &ClusterMap| {
        let settled = m.groups().all(|s| m.outgoing(s).is_empty());
        let plan = drive::plan_for(m, &BTreeSet::new(), |_| 0);
        settled && !m.rebalance && plan.is_ok_and(|p| p.moves.iter().all(|x| x.from.node == x.to.node))
    };
    // Taken once the map changed after the request (the flag may be set and
    // cleared before a look, when nothing needs to move).
    let taken = |m: &ClusterMap| m.epoch > before || m.rebalance;
    submit_and_watch(cluster, MetaEdit::SetRebalance { on: true }, taken, balanced, wait, timeout)?;
    let human = if wait { "balanced".to_string() } else { "rebalancing".to_string() };
    Ok(Rendered::ok_line(json, &OkJson { ok: true }, human))
}

#[cfg(test)]
mod tests {
    use corekv_engine::placement::initial_map;
    use corekv_rpc::client::{CoreStatus, KvError, NodeStatus};
    use corekv_rpc::map::NodeInfo;
    use corekv_rpc::node::ShardStatus;

    use super::*;

    fn info(id: NodeId) -> NodeInfo {
        NodeInfo { id, addr: format!("10.0.0.{id}:7000"), cores: 1, state: NodeState::Up }
    }

    /// Every shard led by its first replica, each replica reporting `bytes`;
    /// nodes in `silent` answer nothing.
    fn status(map: &ClusterMap, silent: &[NodeId], bytes: u64) -> ClusterStatus {
        let nodes = map
            .nodes
            .iter()
            .map(|n| {
                let shards = (0..map.shard_count())
                    .filter(|&s| map.core_of(s, n.id).is_some())
                    .map(|s| {
                        let mut voters: Vec<NodeId> = map.replicas(s).iter().map(|r| r.node).collect();
                        voters.sort_unstable();
                        let leader = map.replicas(s)[0].node;
                        ShardStatus {
                            shard: s,
                            is_leader: leader == n.id,
                            leader,
                            term: 2,
                            raft_commit_index: 5,
                            applied_index: 5,
                            last_index: 5,
                            lag: 0,
                            voters,
                            learners: Vec::new(),
                            bytes,
                        }
                    })
                    .collect();
                let answered = !silent.contains(&n.id);
                let core = CoreStatus {
                    core: 0,
                    addr: n.addr.clone(),
                    error: (!answered).then(|| "connection refused".to_string()),
                    stats: None,
                    shards: if answered { shards } else { Vec::new() },
                };
                NodeStatus { id: n.id, addr: n.addr.clone(), cores: vec![core] }
            })
            .collect();
        ClusterStatus { cluster_id: map.cluster_id, epoch: map.epoch, nodes }
    }

    #[test]
    fn node_list_has_the_issues_shape_and_shows_an_unreachable_up_node_down() {
        let map = initial_map(9, &(1..=3).map(info).collect::<Vec<_>>(), 3, 3).unwrap();
        let mut map = nodes::add_node(&map, &info(4)).unwrap().unwrap();
        map.nodes[1].state = NodeState::Draining;
        let rendered = render_node_list(&map, &status(&map, &[3], 10), true);
        assert_eq!(
            rendered.line,
            concat!(
                r#"{"ok":true,"nodes":["#,
                r#"{"id":1,"addr":"10.0.0.1:7000","cores":1,"state":"up","replicas":3,"leaders":1},"#,
                r#"{"id":2,"addr":"10.0.0.2:7000","cores":1,"state":"draining","replicas":3,"leaders":1},"#,
                // Its shard's leader does not answer: no leader is reported for it.
                r#"{"id":3,"addr":"10.0.0.3:7000","cores":1,"state":"down","replicas":3,"leaders":0},"#,
                r#"{"id":4,"addr":"10.0.0.4:7000","cores":1,"state":"up","replicas":0,"leaders":0}]}"#
            )
        );
    }

    /// A cluster whose map never changes and whose nodes in `silent` answer
    /// nothing.
    struct Frozen {
        map: ClusterMap,
        silent: Vec<NodeId>,
    }

    impl MoveCluster for Frozen {
        fn fresh_map(&mut self) -> Result<ClusterMap, KvError> {
            Ok(self.map.clone())
        }
        fn submit(&mut self, _: MetaEdit) -> Result<(), KvError> {
            Ok(())
        }
        fn status(&mut self) -> ClusterStatus {
            status(&self.map, &self.silent, 10)
        }
    }

    #[test]
    fn a_wait_past_its_deadline_names_the_unreachable_nodes_it_waits_on() {
        let map = initial_map(9, &(1..=3).map(info).collect::<Vec<_>>(), 3, 3).unwrap();
        let map = nodes::add_node(&map, &info(4)).unwrap().unwrap();
        let map = nodes::set_rebalance(&map, true).unwrap();
        let timeout = Duration::from_millis(120);
        let mut cluster = Frozen { map, silent: vec![2, 3] };
        let failure = run_rebalance(&mut cluster, true, timeout, true).unwrap_err();
        assert_eq!(failure.word, "unavailable");
        assert!(
            failure.text.ends_with(
                "unreachable: node 2, node 3, and it ends once they are back or declared dead (--dead-after)"
            ),
            "{}",
            failure.text
        );
        // Every node answering: the plain deadline.
        cluster.silent.clear();
        let failure = run_rebalance(&mut cluster, true, timeout, true).unwrap_err();
        assert!(failure.text.ends_with("the change is under way past the deadline; it goes on"), "{}", failure.text);
        // Without --wait the change was accepted at once.
        assert!(run_rebalance(&mut cluster, false, timeout, true).is_ok());
    }

    #[test]
    fn a_dry_run_after_a_join_lists_moves_onto_the_new_node_with_their_bytes() {
        let map = initial_map(9, &(1..=3).map(info).collect::<Vec<_>>(), 4, 3).unwrap();
        let map = nodes::add_node(&map, &info(4)).unwrap().unwrap();
        let rendered = render_plan(&map, &status(&map, &[], 1000), true).unwrap();
        // 12 replicas over four equal nodes: three move onto node 4, 1000 bytes each.
        assert!(rendered.line.starts_with(r#"{"ok":true,"moves":[{"shard":"#), "{}", rendered.line);
        assert!(rendered.line.ends_with(r#"],"bytes":3000,"minimal_bytes":3000}"#), "{}", rendered.line);
        assert_eq!(rendered.line.matches(r#""to":4,"bytes":1000}"#).count(), 3, "{}", rendered.line);
    }
}
