//! Shard placement (DESIGN §7): which node cores hold each shard's replicas, and
//! which replica is each shard's preferred leader. This file makes the founding
//! map; [`plan`] rebalances a running cluster's map with the fewest moves.
//!
//! Pure and deterministic (sans-I/O, DESIGN §1.1): the same nodes, shard count and
//! replication factor give the same map on every machine, whatever the order the
//! nodes were given in (they are sorted by id first). Runs wherever a map is made:
//! at cluster creation on every founding node, later in the meta group's planner.
//!
//! Invariants of [`initial_map`]'s map:
//! - every shard has `replicas` replicas on distinct nodes;
//! - each node holds the floor or the ceiling of its core-weighted share of the
//!   `shard_count * replicas` replicas, where that is reachable (a node never
//!   holds two replicas of one shard, so its count is capped at `shard_count` and
//!   the rest of its share goes to the others, by weight);
//! - each node is the preferred leader (first replica) of the floor or ceiling of
//!   its core-weighted share of the shards, capped likewise by its replica count;
//! - within a node, replica counts per core and leader counts per core differ by
//!   at most one.

pub mod drive;
mod flow;
pub mod moves;
pub mod nodes;
pub mod plan;
#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod tests;

use corekv_rpc::kv::NodeId;
use corekv_rpc::map::{
    ClusterMap, CoreIndex, FOUNDING_EPOCH, META_REPLICAS_MAX, NODE_CORES_MAX, NODES_MAX, NodeInfo, REPLICAS_MAX,
    Replica, SHARDS_MAX, ShardReplicas, stable_hash,
};

/// Why no placement can be made for the inputs given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// No nodes at all, or more than a map may name.
    #[error("a cluster needs 1 to {NODES_MAX} nodes, got {nodes}")]
    NodeCount {
        /// How many were given.
        nodes: usize,
    },
    /// The replication factor cannot be met.
    #[error("replicas must be 1 to {REPLICAS_MAX} and at most the node count {nodes}, got {replicas}")]
    Replicas {
        /// The replication factor given.
        replicas: usize,
        /// How many nodes there are.
        nodes: usize,
    },
    /// The shard count is out of range.
    #[error("shard count must be 1 to {SHARDS_MAX}, got {shards}")]
    ShardCount {
        /// The shard count given.
        shards: u32,
    },
    /// Node id 0 (reserved for "no node").
    #[error("node id 0 is reserved; ids start at 1")]
    NodeIdZero,
    /// Two nodes with one id.
    #[error("node id {id} appears more than once")]
    DuplicateNode {
        /// The id.
        id: NodeId,
    },
    /// A node's core count is out of range.
    #[error("node {id} has {cores} cores; a node runs 1 to {NODE_CORES_MAX}")]
    NodeCores {
        /// The node.
        id: NodeId,
        /// Its core count.
        cores: u16,
    },
}

/// Checks the inputs of [`initial_map`] without placing anything.
pub fn validate(nodes: &[NodeInfo], shard_count: u32, replicas: usize) -> Result<(), PlacementError> {
    if nodes.is_empty() || nodes.len() > NODES_MAX {
        return Err(PlacementError::NodeCount { nodes: nodes.len() });
    }
    if replicas == 0 || replicas > REPLICAS_MAX || replicas > nodes.len() {
        return Err(PlacementError::Replicas { replicas, nodes: nodes.len() });
    }
    if shard_count == 0 || shard_count > SHARDS_MAX {
        return Err(PlacementError::ShardCount { shards: shard_count });
    }
    check_nodes(nodes.iter().map(|n| (n.id, n.cores)))
}

/// The per-node checks every placement makes: no id 0, cores in range, no id
/// twice (the founding map and the rebalancing planner alike).
pub(crate) fn check_nodes(nodes: impl Iterator<Item = (NodeId, u16)>) -> Result<(), PlacementError> {
    let mut ids = Vec::new();
    for (id, cores) in nodes {
        if id == 0 {
            return Err(PlacementError::NodeIdZero);
        }
        if cores == 0 || cores > NODE_CORES_MAX {
            return Err(PlacementError::NodeCores { id, cores });
        }
        ids.push(id);
    }
    ids.sort_unstable();
    if let Some(pair) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(PlacementError::DuplicateNode { id: pair[0] });
    }
    Ok(())
}

/// The founding cluster map, epoch 1: `shard_count` shards with `replicas`
/// replicas each over `nodes`, balanced as the module header says.
pub fn initial_map(
    cluster_id: u64,
    nodes: &[NodeInfo],
    shard_count: u32,
    replicas: usize,
) -> Result<ClusterMap, PlacementError> {
    validate(nodes, shard_count, replicas)?;
    let mut nodes = nodes.to_vec();
    nodes.sort_by_key(|n| n.id);
    let shards = u64::from(shard_count);
    let weights: Vec<u64> = nodes.iter().map(|n| u64::from(n.cores)).collect();

    let replica_counts = apportion(shards * replicas as u64, &weights, &vec![shards; nodes.len()]);
    let leader_counts = apportion(shards, &weights, &replica_counts);
    let leaders = spread_leaders(&leader_counts, shard_count);
    let follower_counts: Vec<u64> = replica_counts.iter().zip(&leader_counts).map(|(t, l)| t - l).collect();
    let members = choose_followers(&leaders, &follower_counts, replicas - 1);

    // Per node, its shards in shard order: led ones first, then the others, dealt
    // round-robin over its cores, so leaders and replicas both spread evenly.
    let mut next_core = vec![0u16; nodes.len()];
    let mut core_of = vec![vec![0 as CoreIndex; replicas]; shard_count as usize];
    for (shard, &leader) in leaders.iter().enumerate() {
        core_of[shard][0] = deal(&mut next_core[leader], nodes[leader].cores);
    }
    for (shard, followers) in members.iter().enumerate() {
        for (slot, &node) in followers.iter().enumerate() {
            core_of[shard][slot + 1] = deal(&mut next_core[node], nodes[node].cores);
        }
    }

    let shards = (0..shard_count as usize)
        .map(|shard| {
            let indices = std::iter::once(leaders[shard]).chain(members[shard].iter().copied());
            let replicas =
                indices.zip(&core_of[shard]).map(|(node, &core)| Replica { node: nodes[node].id, core }).collect();
            ShardReplicas::new(replicas)
        })
        .collect();
    let meta = meta_replicas(&nodes);
    Ok(ClusterMap { cluster_id, epoch: FOUNDING_EPOCH, nodes, shards, meta, rebalance: false })
}

/// The meta group's founding replicas: core 0 of the lowest-id nodes, as many as
/// the largest odd number ≤ min(5, nodes) (an even count adds no fault
/// tolerance, only a vote to wait for).
pub fn meta_replicas(nodes: &[NodeInfo]) -> ShardReplicas {
    let mut ids: Vec<NodeId> = nodes.iter().map(|n| n.id).collect();
    ids.sort_unstable();
    let count = meta_size(ids.len());
    ShardReplicas::new(ids.into_iter().take(count).map(|node| Replica { node, core: 0 }).collect())
}

/// The meta group's size for a cluster of `nodes` nodes.
pub fn meta_size(nodes: usize) -> usize {
    let n = nodes.min(META_REPLICAS_MAX);
    if n.is_multiple_of(2) { n.saturating_sub(1) } else { n }
}

/// The cluster id of a founding configuration (DESIGN §9): a stable hash of its
/// normal form (nodes sorted by id as `id=addr/cores`, then shard count,
/// replication factor and name). Never 0, which means "no cluster".
pub fn cluster_id(nodes: &[NodeInfo], shard_count: u32, replicas: usize, cluster_name: &str) -> u64 {
    let mut sorted: Vec<&NodeInfo> = nodes.iter().collect();
    sorted.sort_by_key(|n| n.id);
    let nodes: Vec<String> = sorted.iter().map(|n| format!("{}={}/{}", n.id, n.addr, n.cores)).collect();
    let normal = format!("nodes={};shards={shard_count};replicas={replicas};name={cluster_name}", nodes.join(","));
    match stable_hash(normal.as_bytes()) {
        0 => 1,
        id => id,
    }
}

/// The next core of a node, round-robin.
fn deal(next: &mut u16, cores: u16) -> CoreIndex {
    let core = *next;
    *next = (*next + 1) % cores;
    core
}

/// Splits `total` units over parties in proportion to `weights`, party `i` taking
/// at most `caps[i]`: parties whose share exceeds their cap get the cap and the
/// rest is shared again among the others (water-filling). Each party then gets
/// the floor or the ceiling of its share; the ceilings go to the largest
/// fractional parts, ties to the lower index.
pub(crate) fn apportion(total: u64, weights: &[u64], caps: &[u64]) -> Vec<u64> {
    assert_eq!(weights.len(), caps.len(), "one cap per weight");
    assert!(caps.iter().sum::<u64>() >= total, "the caps leave room for {total} units");
    let mut capped = vec![false; weights.len()];
    let (rest, weight_sum) = loop {
        let rest = total - (0..caps.len()).filter(|&i| capped[i]).map(|i| caps[i]).sum::<u64>();
        let weight_sum: u64 = (0..weights.len()).filter(|&i| !capped[i]).map(|i| weights[i]).sum();
        let over: Vec<usize> =
            (0..weights.len()).filter(|&i| !capped[i] && rest * weights[i] > caps[i] * weight_sum).collect();
        if over.is_empty() {
            break (rest, weight_sum);
        }
        over.into_iter().for_each(|i| capped[i] = true);
    };
    let mut counts: Vec<u64> = (0..weights.len())
        .map(|i| match (capped[i], weight_sum) {
            (true, _) => caps[i],
            (false, 0) => 0,
            (false, sum) => rest * weights[i] / sum,
        })
        .collect();
    let given: u64 = counts.iter().sum();
    let mut by_remainder: Vec<usize> = (0..weights.len()).filter(|&i| !capped[i] && weight_sum > 0).collect();
    by_remainder.sort_by_key(|&i| (std::cmp::Reverse(rest * weights[i] % weight_sum), i));
    for &i in by_remainder.iter().take((total - given) as usize) {
        counts[i] += 1;
    }
    assert_eq!(counts.iter().sum::<u64>(), total, "apportioned every unit");
    counts
}

/// The preferred leader (a node index) of every shard, node `i` leading
/// `counts[i]` shards, interleaved rather than in runs (smooth weighted
/// round-robin: each step credits every node its count and the most credited
/// node leads the next shard and pays one round).
fn spread_leaders(counts: &[u64], shard_count: u32) -> Vec<usize> {
    let round = i128::from(shard_count);
    let mut credit = vec![0i128; counts.len()];
    (0..shard_count)
        .map(|_| {
            for (c, &n) in credit.iter_mut().zip(counts) {
                *c += i128::from(n);
            }
            let best = (0..counts.len()).max_by_key(|&i| (credit[i], std::cmp::Reverse(i))).expect("nodes exist");
            credit[best] -= round;
            best
        })
        .collect()
}

/// The followers (node indices, ascending) of every shard: `per_shard` nodes
/// other than its leader, node `i` following `counts[i]` shards in all.
///
/// Shard after shard, the nodes with the least slack go first, slack being the
/// shards still open to a node (those it does not lead) minus the shards it still
/// has to follow. A node with no slack must follow every shard left that it can.
fn choose_followers(leaders: &[usize], counts: &[u64], per_shard: usize) -> Vec<Vec<usize>> {
    let mut led_left = vec![0u64; counts.len()];
    leaders.iter().for_each(|&l| led_left[l] += 1);
    let mut shards_left = leaders.len() as u64;
    let mut owed = counts.to_vec();
    let members: Vec<Vec<usize>> = leaders
        .iter()
        .map(|&leader| {
            // Shards still open to node i (this one included): those left it does not lead.
            let slack = |i: usize| (shards_left - led_left[i]) as i64 - owed[i] as i64;
            let mut candidates: Vec<usize> = (0..counts.len()).filter(|&i| i != leader && owed[i] > 0).collect();
            assert!(candidates.len() >= per_shard, "placement ran out of followers: a bug in the follower choice");
            if per_shard < candidates.len() {
                candidates.select_nth_unstable_by_key(per_shard, |&i| (slack(i), std::cmp::Reverse(owed[i]), i));
            }
            let mut chosen: Vec<usize> = candidates[..per_shard].to_vec();
            chosen.iter().for_each(|&i| owed[i] -= 1);
            led_left[leader] -= 1;
            shards_left -= 1;
            chosen.sort_unstable();
            chosen
        })
        .collect();
    // A node whose slack went negative could not catch up: it still owes some now.
    assert!(owed.iter().all(|&o| o == 0), "placement left followers unplaced: a bug in the follower choice");
    members
}
