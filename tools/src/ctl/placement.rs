//! `corekv-ctl shard list|move`: where the replicas are, and moving one (issue 12).
//!
//! `shard list` prints each group's configuration as its leader reports it (the
//! truth about its replicas; the map says what placement wants). `shard move`
//! checks the move against a fresh map with the same rules the meta group
//! applies, hands it to the meta group and watches the map.

use std::time::{Duration, Instant};

use corekv_engine::placement::moves;
use corekv_rpc::client::{ClusterStatus, KvError};
use corekv_rpc::kv::{NodeId, ShardId};
use corekv_rpc::map::{ClusterMap, CoreIndex, META_SHARD, Replica};
use corekv_rpc::node::{MetaEdit, ShardStatus};
use serde::Serialize;

use super::render::{EXIT_NEGATIVE, Failure, Rendered};

/// How often `shard move` looks at the map.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Serialize)]
struct MetaJson {
    voters: Vec<NodeId>,
    leader: Option<NodeId>,
}

#[derive(Serialize)]
struct ShardJson {
    id: ShardId,
    voters: Vec<NodeId>,
    learners: Vec<NodeId>,
    leader: Option<NodeId>,
}

#[derive(Serialize)]
struct ListJson {
    ok: bool,
    epoch: u64,
    meta: MetaJson,
    shards: Vec<ShardJson>,
}

#[derive(Serialize)]
struct OkJson {
    ok: bool,
}

/// What the replicas of `shard` report: the leader's configuration (the newest
/// term's), else the most advanced replica's, else the map's wanted voters.
pub(super) fn group_view(
    map: &ClusterMap,
    status: &ClusterStatus,
    shard: ShardId,
) -> (Vec<NodeId>, Vec<NodeId>, Option<NodeId>) {
    let reports: Vec<&ShardStatus> =
        status.nodes.iter().flat_map(|n| &n.cores).flat_map(|c| &c.shards).filter(|s| s.shard == shard).collect();
    let leader = reports.iter().filter(|s| s.is_leader).max_by_key(|s| s.term);
    let best = leader.or_else(|| reports.iter().max_by_key(|s| (s.term, s.applied_index)));
    match best {
        Some(s) if !s.voters.is_empty() => {
            (s.voters.clone(), s.learners.clone(), leader.map(|_| s.leader).filter(|&l| l != 0))
        }
        _ => {
            let mut voters: Vec<NodeId> = map.replicas(shard).iter().map(|r| r.node).collect();
            voters.sort_unstable();
            (voters, Vec::new(), None)
        }
    }
}

/// `shard list`: `{"ok":true,"epoch":E,"meta":{"voters":[…],"leader":N},
/// "shards":[{"id":S,"voters":[…],"learners":[…],"leader":N}]}` (`leader` null
/// when there is none).
pub fn render_shard_list(map: &ClusterMap, status: &ClusterStatus, json: bool) -> Rendered {
    let (meta_voters, _, meta_leader) = group_view(map, status, META_SHARD);
    let shards: Vec<ShardJson> = (0..map.shard_count())
        .map(|id| {
            let (voters, learners, leader) = group_view(map, status, id);
            ShardJson { id, voters, learners, leader }
        })
        .collect();
    let name = |l: Option<NodeId>| l.map_or("none".to_string(), |l| l.to_string());
    let mut lines = vec![format!(
        "epoch {}: {} shards; meta group voters {:?} leader {}",
        map.epoch,
        shards.len(),
        meta_voters,
        name(meta_leader)
    )];
    for s in &shards {
        let learners = if s.learners.is_empty() { String::new() } else { format!(" learners {:?}", s.learners) };
        lines.push(format!("shard {} voters {:?}{learners} leader {}", s.id, s.voters, name(s.leader)));
    }
    let line = lines[0].clone();
    let object =
        ListJson { ok: true, epoch: map.epoch, meta: MetaJson { voters: meta_voters, leader: meta_leader }, shards };
    Rendered::ok(json, &object, lines, line)
}

/// The group a `shard move` argument names.
pub fn parse_group(arg: &str) -> Result<ShardId, Failure> {
    if arg == "meta" {
        return Ok(META_SHARD);
    }
    arg.parse().map_err(|_| Failure::invalid(format!("`{arg}` is not a shard number (or `meta`)")))
}

/// The core of `node` that takes a replica by default: the meta group's core 0,
/// else the core holding the fewest replicas (the lowest on a tie).
fn default_core(map: &ClusterMap, shard: ShardId, node: NodeId) -> CoreIndex {
    let cores = map.node(node).map_or(1, |n| n.cores.max(1));
    if shard == META_SHARD {
        return 0;
    }
    (0..cores).min_by_key(|&c| (map.shards_on(node, c).filter(|&s| s != META_SHARD).count(), c)).unwrap_or(0)
}

/// What `shard move` needs of the cluster.
pub trait MoveCluster {
    /// The cluster's newest map (asked for now).
    fn fresh_map(&mut self) -> Result<ClusterMap, KvError>;
    /// Hands `edit` to the meta group.
    fn submit(&mut self, edit: MetaEdit) -> Result<(), KvError>;
    /// Every node core's status (an unreachable core reports its error).
    fn status(&mut self) -> ClusterStatus;
}

/// `shard move`: `{"ok":true}` once the map shows the move (with `wait`, once it
/// is over); `invalid` when the map refuses it; `aborted` when it was turned
/// around; `unavailable` past `timeout` (the move goes on).
#[allow(clippy::too_many_arguments)] // the command's own arguments, one each
pub fn run_shard_move<C: MoveCluster + ?Sized>(
    cluster: &mut C,
    shard: ShardId,
    from: NodeId,
    to: NodeId,
    core: Option<CoreIndex>,
    wait: bool,
    timeout: Duration,
    json: bool,
) -> Result<Rendered, Failure> {
    let deadline = Instant::now() + timeout;
    let map = cluster.fresh_map()?;
    if from == to {
        let Some(core) = core else {
            return Err(Failure::invalid(format!(
                "node {to} already holds shard {}: name another node, or --core to move it to another core of node {to}",
                group_name(shard)
            )));
        };
        return run_handoff(cluster, shard, Replica { node: to, core }, wait, deadline, json);
    }
    let target = Replica { node: to, core: core.unwrap_or_else(|| default_core(&map, shard, to)) };
    moves::begin(&map, shard, from, target).map_err(|e| Failure::invalid(e.to_string()))?;
    cluster.submit(MetaEdit::Begin { shard, from, to: target })?;
    let mut shown = false;
    loop {
        let map = cluster.fresh_map()?;
        let wanted = map.replicas(shard).contains(&target);
        if !wanted && (shown || map.outgoing(shard).contains(&target)) {
            let reason = "the move was turned around (its target failed or an operator reverted it)";
            let failure = Failure::new("aborted", format!("aborted: {reason}"), None, EXIT_NEGATIVE);
            return Err(Failure { message: Some(reason.into()), ..failure });
        }
        shown |= wanted;
        let done = wanted && map.outgoing(shard).is_empty();
        if (shown && !wait) || done {
            let human = if done {
                format!("shard {} moved from node {from} to node {to} core {}", group_name(shard), target.core)
            } else {
                format!("shard {} moving from node {from} to node {to} core {}", group_name(shard), target.core)
            };
            return Ok(Rendered::ok_line(json, &OkJson { ok: true }, human));
        }
        if Instant::now() >= deadline {
            let what = if shown { "the move is under way" } else { "the meta group has not taken the move yet" };
            return Err(Failure::goes_on(format!("{what} past the deadline; it goes on")));
        }
        std::thread::sleep(POLL_INTERVAL);
        // Asked again in case the meta leader changed and dropped it (repeats are
        // harmless: the meta group applies a move once).
        if !shown {
            cluster.submit(MetaEdit::Begin { shard, from, to: target })?;
        }
    }
}

/// `shard move S --from N --to N --core C`: a hand-off of node N's replica to
/// its core C, answered like a move.
fn run_handoff<C: MoveCluster + ?Sized>(
    cluster: &mut C,
    shard: ShardId,
    target: Replica,
    wait: bool,
    deadline: Instant,
    json: bool,
) -> Result<Rendered, Failure> {
    let map = cluster.fresh_map()?;
    moves::relocate(&map, shard, target).map_err(|e| Failure::invalid(e.to_string()))?;
    cluster.submit(MetaEdit::Relocate { shard, to: target })?;
    let (node, core) = (target.node, target.core);
    let mut shown = false;
    loop {
        let map = cluster.fresh_map()?;
        let under_way = map.handoff_of(shard).is_some_and(|h| h.to == target);
        let done = !under_way && map.members(shard).any(|r| *r == target);
        if shown && !under_way && !done {
            let reason = "the hand-off ended with the node's membership (the node left the shard)";
            let failure = Failure::new("aborted", format!("aborted: {reason}"), None, EXIT_NEGATIVE);
            return Err(Failure { message: Some(reason.into()), ..failure });
        }
        shown |= under_way || done;
        if (shown && !wait) || done {
            let verb = if done { "moved" } else { "moving" };
            let human = format!("shard {} {verb} to core {core} of node {node}", group_name(shard));
            return Ok(Rendered::ok_line(json, &OkJson { ok: true }, human));
        }
        if Instant::now() >= deadline {
            let what =
                if shown { "the hand-off is under way" } else { "the meta group has not taken the hand-off yet" };
            return Err(Failure::goes_on(format!("{what} past the deadline; it goes on")));
        }
        std::thread::sleep(POLL_INTERVAL);
        if !shown {
            cluster.submit(MetaEdit::Relocate { shard, to: target })?;
        }
    }
}

fn group_name(shard: ShardId) -> String {
    if shard == META_SHARD { "meta".into() } else { shard.to_string() }
}
