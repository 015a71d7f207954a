//! The rebalancing planner (DESIGN §7, issue 12): from the placement as it is and
//! the state of every node, the replica moves and leader transfers that make the
//! placement balanced again with the fewest moves.
//!
//! Pure and deterministic (sans-I/O, DESIGN §1.1): the same input gives the same
//! plan whatever the order its nodes, shards and replicas were listed in (all are
//! sorted by id first, and the solver breaks ties by index). Runs on the meta
//! group's leader, which carries the plan out a bounded number of moves at a time
//! ([`Plan::next_moves`]) and plans again as the map changes.
//!
//! # Rules
//! - **Who holds replicas.** `Up` nodes share the replicas. `Draining`, `Dead` and
//!   `Removed` nodes end with none. A `Down` node keeps the replicas it has (it may
//!   come back; it still counts towards its shards' replication factor) and
//!   receives none; it stays outside the balance until it is up again or declared
//!   dead.
//! - **Targets.** Each up node holds the floor or the ceiling of its core-weighted
//!   share of the replicas that up nodes hold, capped at one replica of a shard per
//!   node (water-filling, as in [`super::initial_map`]); within a node, replica
//!   counts per core differ by at most one. Leaders likewise: each up node leads the
//!   floor or ceiling of its share of the shards, capped by its replica count, by
//!   leader transfer (no data moves), spread over its cores as evenly as the
//!   replicas' cores allow.
//! - **Fewest moves.** Among the placements that are balanced (or, where none is,
//!   the least unbalanced ones) the plan takes one with the fewest replica moves
//!   between nodes; among those, the fewest moves that take a replica off an
//!   unchanged node or onto one (see below); among those, the fewest bytes.
//!   So after a join only replicas onto the new node move, after a leave or death
//!   only replicas off it, and a move between two unchanged nodes happens only when
//!   balance needs it.
//! - **Unchanged nodes.** A node is *changed* when it leaves (draining, dead,
//!   removed) or is new to placement (up and holding no replica: a node that has
//!   just joined). Up nodes holding replicas are unchanged.
//! - **Manual moves** ([`ManualMove`]) are fixed parts of the plan; the automatic
//!   moves are planned around them, never against them.
//! - **Cost.** [`Plan::bytes`] is what the moves transfer; [`Plan::minimal_bytes`]
//!   the sizes of the replicas that had to move: every replica of a leaving node,
//!   every manual move, and on each up node that ends with fewer replicas than it
//!   had, its smallest replicas making up the difference (a lower bound for any
//!   plan reaching the same counts), plus the moves between a node's cores.
//!
//! # How
//! The node-level placement is one minimum-cost flow (`source -> shard -> node ->
//! sink`; a unit is a replica; keeping a replica where it is costs nothing, moving
//! it costs one move and its bytes; each node's edge to the sink is cut in tiers
//! below, within and above its target range) with lexicographic costs
//! ([`super::flow`]), which makes the move count exact, not a heuristic. Then the
//! replicas a node gives up are exchanged for others where that evens its
//! cores: one of a fuller core goes to the same node instead, or, when that
//! node holds it already, another giver keeps it and gives the first instead
//! (`even_out_departures`: same counts, same moves, only bytes may differ).
//! Cores are then dealt within each node (arrivals to the least loaded core,
//! then moves between cores if a spread above one is left: rare, when no such
//! exchange exists; the driver does not carry those out), and leaders are chosen by
//! a second flow over the final replicas. Time: one shortest-path search over
//! `shards × up nodes` edges per distinct path cost (blocking flows send every
//! unit of one cost), which is why sizes weigh in steps of 1/64 of the largest
//! shard; a join of a node to 16 nodes of 8 cores with 1024 shards (3 replicas)
//! plans in a few ms (the `placement` criterion bench). The largest maps the
//! limits allow (65 536 shards × 1024 nodes) would be far slower: not a case
//! the planner is built for yet.

use std::collections::BTreeSet;

use corekv_rpc::kv::{NodeId, ShardId};
pub use corekv_rpc::map::NodeState;
use corekv_rpc::map::{ClusterMap, CoreIndex, NODES_MAX, REPLICAS_MAX, Replica, SHARDS_MAX};

use super::flow::{self, Cost, EdgeId, Network, ZERO};

/// One node as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanNode {
    /// The node's id (never 0).
    pub id: NodeId,
    /// How many cores it runs (1 to [`NODE_CORES_MAX`]).
    pub cores: u16,
    /// Its state.
    pub state: NodeState,
}

/// One shard as the planner sees it (input), or as the plan leaves it (output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanShard {
    /// The shard's id.
    pub id: ShardId,
    /// Its voters, on distinct nodes, as many as the replication factor. In a
    /// plan's output, sorted by node id.
    pub replicas: Vec<Replica>,
    /// The node that leads it (or is its preferred leader), if any.
    pub leader: Option<NodeId>,
    /// The size of one replica (its snapshot), which a move transfers.
    pub bytes: u64,
}

/// A move an operator asked for (`corekv-ctl shard move S --from N --to M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ManualMove {
    /// The shard.
    pub shard: ShardId,
    /// The node that holds a replica of it now.
    pub from: NodeId,
    /// The up node that should hold it instead (it must not hold one already).
    pub to: NodeId,
}

/// Everything the planner reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanInput {
    /// Every node the map names, removed ones included.
    pub nodes: Vec<PlanNode>,
    /// Every shard.
    pub shards: Vec<PlanShard>,
    /// Replicas per shard (1 to [`REPLICAS_MAX`]).
    pub replication_factor: usize,
    /// Moves asked for by hand, at most one per shard.
    pub manual: Vec<ManualMove>,
}

impl PlanInput {
    /// The input for `map`: each node's state from `state_of`, each shard's size
    /// from `bytes_of`, the preferred leader (first replica) as its leader and the
    /// replica count of shard 0 as the replication factor; no manual moves.
    pub fn from_map(
        map: &ClusterMap,
        state_of: impl Fn(NodeId) -> NodeState,
        bytes_of: impl Fn(ShardId) -> u64,
    ) -> PlanInput {
        let nodes = map.nodes.iter().map(|n| PlanNode { id: n.id, cores: n.cores, state: state_of(n.id) }).collect();
        let shards = (0..map.shard_count())
            .map(|id| {
                // A replica being handed to another core of its node is planned
                // on that core.
                let handoff = map.handoff_of(id);
                let replicas: Vec<Replica> = map
                    .replicas(id)
                    .iter()
                    .map(|&r| handoff.filter(|h| h.to.node == r.node).map_or(r, |h| h.to))
                    .collect();
                PlanShard { id, leader: replicas.first().map(|r| r.node), replicas, bytes: bytes_of(id) }
            })
            .collect();
        let replication_factor = map.shards.first().map_or(0, |s| s.replicas.len());
        PlanInput { nodes, shards, replication_factor, manual: Vec::new() }
    }
}

/// Why a replica moves; also the order [`Plan::next_moves`] serves them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MoveReason {
    /// Off a dead or removed node: the shard is short of a live replica, so this
    /// comes first.
    Rereplicate,
    /// Asked for by an operator.
    Manual,
    /// Off a draining node.
    Drain,
    /// Between up nodes, for balance.
    Rebalance,
    /// Between two cores of one node, for balance within it.
    Core,
}

/// One replica move: add `to` as a learner, catch it up, promote it, remove `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaMove {
    /// The shard.
    pub shard: ShardId,
    /// The replica that goes away.
    pub from: Replica,
    /// The replica that takes its place.
    pub to: Replica,
    /// The bytes the move transfers (the shard's size).
    pub bytes: u64,
    /// Why it moves.
    pub reason: MoveReason,
}

/// One leader transfer (moves no data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderTransfer {
    /// The shard.
    pub shard: ShardId,
    /// Its leader now, if it has one.
    pub from: Option<NodeId>,
    /// The node that should lead it once the moves are done.
    pub to: NodeId,
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Every move, in the order [`Plan::next_moves`] serves them (by reason, then
    /// shard id, then source node).
    pub moves: Vec<ReplicaMove>,
    /// Leader transfers to make once the moves are done, by shard id.
    pub leader_transfers: Vec<LeaderTransfer>,
    /// Every shard as the plan leaves it, by shard id.
    pub after: Vec<PlanShard>,
    /// Bytes the moves transfer.
    pub bytes: u64,
    /// Sizes of the replicas that had to move (the module header says which).
    pub minimal_bytes: u64,
    /// Whether every up node ends within its replica target.
    pub balanced: bool,
    /// Whether every up node ends within its leader target.
    pub leaders_balanced: bool,
}

impl Plan {
    /// The next at most `max` moves to start, at most one per shard (a shard
    /// changes its membership one step at a time). The meta leader runs these,
    /// then plans again from the map they leave.
    pub fn next_moves(&self, max: usize) -> Vec<ReplicaMove> {
        let mut shards = BTreeSet::new();
        self.moves.iter().filter(|m| shards.insert(m.shard)).take(max).copied().collect()
    }

    /// How many moves go between nodes (those between cores of one node aside).
    pub fn node_moves(&self) -> usize {
        self.moves.iter().filter(|m| m.from.node != m.to.node).count()
    }
}

/// Why no plan can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No nodes, or more than a map may name.
    #[error("a cluster has 1 to {NODES_MAX} nodes, got {nodes}")]
    NodeCount {
        /// How many were given.
        nodes: usize,
    },
    /// The replication factor is out of range.
    #[error("replicas per shard must be 1 to {REPLICAS_MAX}, got {replicas}")]
    ReplicationFactor {
        /// The factor given.
        replicas: usize,
    },
    /// A node is malformed (id 0, cores out of range, an id twice): the same
    /// checks as the founding map's.
    #[error(transparent)]
    Node(#[from] super::PlacementError),
    /// No shards, or more than a cluster may have.
    #[error("a cluster has 1 to {SHARDS_MAX} shards, got {shards}")]
    ShardCount {
        /// How many were given.
        shards: usize,
    },
    /// Two shards with one id.
    #[error("shard {shard} appears more than once")]
    DuplicateShard {
        /// The id.
        shard: ShardId,
    },
    /// A shard whose replica count is not the replication factor.
    #[error("shard {shard} has {replicas} replicas, expected {expected}")]
    ShardReplicas {
        /// The shard.
        shard: ShardId,
        /// Its replica count.
        replicas: usize,
        /// The replication factor.
        expected: usize,
    },
    /// A replica on a node the input does not name.
    #[error("shard {shard} has a replica on unknown node {node}")]
    UnknownNode {
        /// The shard.
        shard: ShardId,
        /// The node.
        node: NodeId,
    },
    /// Two replicas of a shard on one node.
    #[error("shard {shard} has two replicas on node {node}")]
    DuplicateReplica {
        /// The shard.
        shard: ShardId,
        /// The node.
        node: NodeId,
    },
    /// A replica on a core its node does not run.
    #[error("shard {shard} has a replica on core {core} of node {node}, which runs fewer cores")]
    CoreOutOfRange {
        /// The shard.
        shard: ShardId,
        /// The node.
        node: NodeId,
        /// The core.
        core: CoreIndex,
    },
    /// Fewer nodes may hold a shard than its replication factor asks.
    #[error("shard {shard} needs {needed} replicas but only {eligible} nodes may hold it")]
    NotEnoughNodes {
        /// The shard.
        shard: ShardId,
        /// The replication factor.
        needed: usize,
        /// Up nodes (and down nodes already holding it) that may hold it.
        eligible: usize,
    },
    /// A manual move that cannot be made.
    #[error("cannot move shard {shard} from node {from} to node {to}: {why}")]
    Manual {
        /// The shard.
        shard: ShardId,
        /// The source asked for.
        from: NodeId,
        /// The target asked for.
        to: NodeId,
        /// What is wrong with it.
        why: ManualFault,
    },
}

/// What is wrong with a [`ManualMove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ManualFault {
    /// The shard does not exist.
    #[error("no such shard")]
    UnknownShard,
    /// The source does not hold the shard.
    #[error("the source holds no replica of it")]
    SourceMissing,
    /// The target is unknown or not up.
    #[error("the target is not an up node")]
    TargetNotUp,
    /// The target already holds the shard.
    #[error("the target already holds it")]
    TargetHolds,
    /// Another manual move names the same shard.
    #[error("another manual move names the same shard")]
    Repeated,
}

/// The role a node plays in this change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Up and holding replicas.
    Unchanged,
    /// Up and holding none: just joined.
    New,
    /// Down: frozen as it is.
    Frozen,
    /// Draining, dead or removed: must end empty.
    Leaving,
}

/// The input sorted by id, with nodes referred to by index.
struct Sorted {
    nodes: Vec<PlanNode>,
    shards: Vec<PlanShard>,
    /// Per shard, its replicas as (node index, core), by node index.
    holders: Vec<Vec<(usize, CoreIndex)>>,
    roles: Vec<Role>,
    /// Per shard, its manual move as (from, to) node indices.
    manual: Vec<Option<(usize, usize)>>,
    replication_factor: usize,
}

impl Sorted {
    fn is_up(&self, node: usize) -> bool {
        self.nodes[node].state == NodeState::Up
    }

    /// The down nodes holding shard `j` that keep it (all but a manual source).
    fn frozen(&self, j: usize) -> impl Iterator<Item = usize> + '_ {
        let manual_from = self.manual[j].map(|(from, _)| from);
        self.holders[j]
            .iter()
            .map(|&(h, _)| h)
            .filter(move |&h| self.roles[h] == Role::Frozen && Some(h) != manual_from)
    }
}

/// The plan that balances `input` with the fewest moves (see the module header).
pub fn plan(input: &PlanInput) -> Result<Plan, PlanError> {
    let sorted = sort_and_check(input)?;
    let mut placed = place_replicas(&sorted, BYTES_STEPS)?;
    even_out_departures(&sorted, &mut placed.members);
    let (moves, arrivals) = pair_moves(&sorted, &placed.members);
    let cores = deal_cores(&sorted, &placed.members, &arrivals);
    let mut moves: Vec<ReplicaMove> = moves
        .into_iter()
        .map(|m| {
            let core = cores.arrival_core[m.shard_index].get(&m.moved.to.node).copied();
            assert!(core.is_some(), "every arrival was dealt a core");
            ReplicaMove { to: Replica { node: m.moved.to.node, core: core.unwrap_or(0) }, ..m.moved }
        })
        .collect();
    moves.extend(cores.core_moves.iter().copied());
    moves.sort_by_key(|m| (m.reason, m.shard, m.from.node, m.from.core, m.to.node, m.to.core));

    let finals = &cores.replicas;
    let leaders = choose_leaders(&sorted, finals);
    let after: Vec<PlanShard> = sorted
        .shards
        .iter()
        .enumerate()
        .map(|(j, shard)| PlanShard {
            id: shard.id,
            replicas: finals[j].iter().map(|&(i, core)| Replica { node: sorted.nodes[i].id, core }).collect(),
            leader: leaders.leader[j].map(|i| sorted.nodes[i].id),
            bytes: shard.bytes,
        })
        .collect();
    let leader_transfers = sorted
        .shards
        .iter()
        .zip(&after)
        .filter_map(|(before, after)| match after.leader {
            Some(to) if before.leader != Some(to) => Some(LeaderTransfer { shard: before.id, from: before.leader, to }),
            _ => None,
        })
        .collect();
    let bytes = moves.iter().fold(0u64, |sum, m| sum.saturating_add(m.bytes));
    let core_bytes = cores.core_moves.iter().fold(0u64, |sum, m| sum.saturating_add(m.bytes));
    let minimal_bytes = minimal_bytes(&sorted, &placed.members).saturating_add(core_bytes);
    Ok(Plan {
        moves,
        leader_transfers,
        after,
        bytes,
        minimal_bytes,
        balanced: placed.balanced,
        leaders_balanced: leaders.balanced,
    })
}

/// Checks the input and sorts it by id.
fn sort_and_check(input: &PlanInput) -> Result<Sorted, PlanError> {
    let replication_factor = input.replication_factor;
    if replication_factor == 0 || replication_factor > REPLICAS_MAX {
        return Err(PlanError::ReplicationFactor { replicas: replication_factor });
    }
    if input.nodes.is_empty() || input.nodes.len() > NODES_MAX {
        return Err(PlanError::NodeCount { nodes: input.nodes.len() });
    }
    if input.shards.is_empty() || input.shards.len() > SHARDS_MAX as usize {
        return Err(PlanError::ShardCount { shards: input.shards.len() });
    }
    super::check_nodes(input.nodes.iter().map(|n| (n.id, n.cores)))?;
    let mut nodes = input.nodes.clone();
    nodes.sort_by_key(|n| n.id);
    let mut shards = input.shards.clone();
    shards.sort_by_key(|s| s.id);
    let mut holders = Vec::with_capacity(shards.len());
    for (j, shard) in shards.iter().enumerate() {
        if j > 0 && shards[j - 1].id == shard.id {
            return Err(PlanError::DuplicateShard { shard: shard.id });
        }
        if shard.replicas.len() != replication_factor {
            return Err(PlanError::ShardReplicas {
                shard: shard.id,
                replicas: shard.replicas.len(),
                expected: replication_factor,
            });
        }
        let mut on = Vec::with_capacity(replication_factor);
        for r in &shard.replicas {
            let Ok(i) = nodes.binary_search_by_key(&r.node, |n| n.id) else {
                return Err(PlanError::UnknownNode { shard: shard.id, node: r.node });
            };
            if r.core >= nodes[i].cores {
                return Err(PlanError::CoreOutOfRange { shard: shard.id, node: r.node, core: r.core });
            }
            on.push((i, r.core));
        }
        on.sort_unstable();
        if let Some(w) = on.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(PlanError::DuplicateReplica { shard: shard.id, node: nodes[w[0].0].id });
        }
        holders.push(on);
    }
    let mut held = vec![0usize; nodes.len()];
    holders.iter().flatten().for_each(|&(i, _)| held[i] += 1);
    let roles = nodes
        .iter()
        .zip(&held)
        .map(|(n, &held)| match n.state {
            NodeState::Up if held == 0 => Role::New,
            NodeState::Up => Role::Unchanged,
            NodeState::Down => Role::Frozen,
            NodeState::Draining | NodeState::Dead | NodeState::Removed => Role::Leaving,
        })
        .collect();
    let mut sorted = Sorted { nodes, shards, holders, roles, manual: Vec::new(), replication_factor };
    sorted.manual = check_manual(&sorted, &input.manual)?;
    Ok(sorted)
}

/// Checks the manual moves; per shard, its move as node indices.
fn check_manual(sorted: &Sorted, manual: &[ManualMove]) -> Result<Vec<Option<(usize, usize)>>, PlanError> {
    let mut per_shard = vec![None; sorted.shards.len()];
    let mut manual = manual.to_vec();
    manual.sort_unstable();
    for m in manual {
        let fault = |why| PlanError::Manual { shard: m.shard, from: m.from, to: m.to, why };
        let Ok(j) = sorted.shards.binary_search_by_key(&m.shard, |s| s.id) else {
            return Err(fault(ManualFault::UnknownShard));
        };
        if per_shard[j].is_some() {
            return Err(fault(ManualFault::Repeated));
        }
        let index = |id: NodeId| sorted.nodes.binary_search_by_key(&id, |n| n.id).ok();
        let Some(from) = index(m.from).filter(|&i| sorted.holders[j].iter().any(|&(h, _)| h == i)) else {
            return Err(fault(ManualFault::SourceMissing));
        };
        let Some(to) = index(m.to).filter(|&i| sorted.is_up(i)) else {
            return Err(fault(ManualFault::TargetNotUp));
        };
        if sorted.holders[j].iter().any(|&(h, _)| h == to) {
            return Err(fault(ManualFault::TargetHolds));
        }
        per_shard[j] = Some((from, to));
    }
    Ok(per_shard)
}

/// The node-level placement the plan ends with.
struct Placed {
    /// Per shard, the node indices holding it, ascending.
    members: Vec<Vec<usize>>,
    balanced: bool,
}

/// Cost parts of the replica flow, most important first.
const OVER: usize = 0;
const FILL: usize = 1;
const MOVES: usize = 2;
const TOUCH: usize = 3;
const CORE_EXCESS: usize = 4;
const BYTES: usize = 5;
/// How finely the replica flow tells shard sizes apart (see `place_replicas`):
/// a plan may move up to 1/64 of the largest shard more per move than the
/// smallest choice, never more moves.
const BYTES_STEPS: u64 = 64;

/// The fewest bytes a plan reaching what [`plan`] reaches (same balance, as few
/// moves, no more moves between unchanged nodes) sends between nodes, with the
/// shards' sizes exact rather than in [`plan`]'s steps: the replica flow again,
/// each arrival counted at its shard's size. At least [`Plan::minimal_bytes`]
/// (a bound that lets each node give its smallest replicas even when those are
/// the same shards), at most the plan's bytes between nodes. Costs one search
/// per distinct size, so it is for reports (`rebalance --dry-run`, the join
/// bench), not for the meta leader's looks.
pub fn minimal_bytes_exact(input: &PlanInput) -> Result<u64, PlanError> {
    let sorted = sort_and_check(input)?;
    let placed = place_replicas(&sorted, u64::MAX)?;
    let arrivals = placed.members.iter().enumerate().map(|(j, on)| {
        let new = on.iter().filter(|&&i| !sorted.holders[j].iter().any(|&(h, _)| h == i)).count() as u64;
        sorted.shards[j].bytes.saturating_mul(new)
    });
    Ok(arrivals.fold(0u64, u64::saturating_add))
}

/// Chooses which nodes hold each shard: one minimum-cost flow (module header),
/// sizes counted in steps of the largest shard / `bytes_steps`.
fn place_replicas(sorted: &Sorted, bytes_steps: u64) -> Result<Placed, PlanError> {
    let (node_count, shard_count) = (sorted.nodes.len(), sorted.shards.len());
    // Per shard: the replicas up nodes must hold between them (down holders stay,
    // a manual target is fixed), and whether node i may take one.
    let mut demand = vec![0i64; shard_count];
    let mut fixed_into = vec![0u64; node_count];
    let may_hold =
        |j: usize, i: usize| sorted.is_up(i) && sorted.manual[j].is_none_or(|(from, to)| i != from && i != to);
    let mut caps = vec![0u64; node_count];
    for (j, demand) in demand.iter_mut().enumerate() {
        let frozen = sorted.frozen(j).count();
        let manual = usize::from(sorted.manual[j].is_some());
        if let Some((_, to)) = sorted.manual[j] {
            fixed_into[to] += 1;
        }
        let need = sorted.replication_factor - frozen - manual;
        let eligible = (0..node_count).filter(|&i| may_hold(j, i)).count();
        if eligible < need {
            return Err(PlanError::NotEnoughNodes {
                shard: sorted.shards[j].id,
                needed: sorted.replication_factor,
                eligible: eligible + frozen + manual,
            });
        }
        *demand = need as i64;
        if need > 0 {
            (0..node_count).filter(|&i| may_hold(j, i)).for_each(|i| caps[i] += 1);
        }
    }
    let up: Vec<usize> = (0..node_count).filter(|&i| sorted.is_up(i)).collect();
    let total: u64 = demand.iter().map(|&d| d as u64).sum::<u64>() + fixed_into.iter().sum::<u64>();
    let up_caps: Vec<u64> = up.iter().map(|&i| caps[i] + fixed_into[i]).collect();
    let bounds =
        share_bounds(total, &up.iter().map(|&i| u64::from(sorted.nodes[i].cores)).collect::<Vec<_>>(), &up_caps);

    let (source, sink) = (0, 1);
    let shard_vertex = |j: usize| 2 + j;
    let node_vertex = |i: usize| 2 + shard_count + i;
    // Kept replicas pass through a vertex per core of their node, so that of
    // equally good choices the plan keeps a node's cores even and needs no
    // moves between them (arrivals are dealt to the emptiest cores later).
    // A node that ends above its floor (with a unit of its fill tier) may keep
    // one more on one core when the floor fills its cores evenly: that unit
    // passes through the node's spare vertex into its fill vertex.
    let mut core_base = vec![0usize; node_count];
    let (mut spare, mut fill) = (vec![0usize; node_count], vec![0usize; node_count]);
    let mut vertices = 2 + shard_count + node_count;
    for &i in &up {
        core_base[i] = vertices;
        spare[i] = vertices + usize::from(sorted.nodes[i].cores);
        fill[i] = spare[i] + 1;
        vertices = fill[i] + 1;
    }
    let mut net = Network::new(vertices);
    let mut core_even_tier = vec![Vec::new(); node_count];
    for (k, &i) in up.iter().enumerate() {
        let cores = u64::from(sorted.nodes[i].cores);
        let (lo, hi) = bounds[k];
        let even = lo.div_ceil(cores) as i64;
        let spare_room = hi > lo && lo % cores == 0;
        for core in 0..usize::from(sorted.nodes[i].cores) {
            let from = core_base[i] + core;
            core_even_tier[i].push(net.add_edge(from, node_vertex(i), even, ZERO));
            if spare_room {
                net.add_edge(from, spare[i], 1, ZERO);
            }
            net.add_edge(from, node_vertex(i), shard_count as i64, flow::unit(CORE_EXCESS, 1));
        }
        if spare_room {
            net.add_edge(spare[i], fill[i], 1, ZERO);
        }
    }
    // Bytes count in steps of 1/BYTES_STEPS of the largest shard: the flow
    // runs one search per distinct path cost, and exact sizes (all different)
    // made that one per move; shards within a step of each other tie.
    let largest = sorted.shards.iter().map(|s| s.bytes).max().unwrap_or(0);
    let bytes_step = (largest / bytes_steps).max(1);
    let touch = |i: usize| if sorted.roles[i] == Role::Unchanged { -1 } else { 0 };
    // Every unit into the sink through an unchanged node earns -1 "touch"; the
    // sink's potential makes those edges' reduced costs non-negative.
    net.set_potential(sink, flow::unit(TOUCH, -1));
    let supply: Vec<EdgeId> =
        (0..shard_count).map(|j| net.add_edge(source, shard_vertex(j), demand[j], ZERO)).collect();
    let mut links: Vec<Vec<(usize, EdgeId)>> = vec![Vec::new(); shard_count];
    for (j, shard) in sorted.shards.iter().enumerate() {
        if demand[j] == 0 {
            continue;
        }
        for &i in up.iter().filter(|&&i| may_hold(j, i)) {
            let kept = sorted.holders[j].iter().find(|&&(h, _)| h == i).map(|&(_, core)| core);
            if let Some(core) = kept {
                links[j].push((i, net.add_edge(shard_vertex(j), core_base[i] + usize::from(core), 1, ZERO)));
                continue;
            }
            // Touching an unchanged node costs its arrival (2) less the unit it
            // then carries to the sink (-1): unchanged losses and gains are both
            // counted (module header).
            let mut cost = flow::unit(MOVES, 1);
            cost[TOUCH] = if sorted.roles[i] == Role::Unchanged { 2 } else { 0 };
            cost[BYTES] = i128::from(shard.bytes.div_ceil(bytes_step));
            links[j].push((i, net.add_edge(shard_vertex(j), node_vertex(i), 1, cost)));
        }
    }
    let mut floor_tier = vec![None; node_count];
    for (k, &i) in up.iter().enumerate() {
        let (lo, hi) = bounds[k];
        let tiers = [(lo, ZERO), (hi - lo, flow::unit(FILL, 1)), (up_caps[k] - hi, flow::unit(OVER, 1))];
        for (t, (capacity, cost)) in consume(tiers, fixed_into[i]).into_iter().enumerate() {
            let cost = flow::add(cost, flow::unit(TOUCH, touch(i)));
            // The fill tier is shared with the spare vertex (see above).
            let from = if t == 1 {
                net.add_edge(node_vertex(i), fill[i], capacity as i64, ZERO);
                fill[i]
            } else {
                node_vertex(i)
            };
            let edge = net.add_edge(from, sink, capacity as i64, cost);
            if t == 0 {
                floor_tier[i] = Some(edge);
            }
        }
    }
    // Keep replicas where they are up to each node's floor, largest first: every
    // such unit costs the least any unit can, so this is a minimum-cost flow.
    for &i in up.iter().filter(|&&i| sorted.roles[i] == Role::Unchanged) {
        let Some(tier) = floor_tier[i] else { continue };
        let mut held: Vec<usize> = (0..shard_count).filter(|&j| links[j].iter().any(|&(n, _)| n == i)).collect();
        held.retain(|&j| sorted.holders[j].iter().any(|&(h, _)| h == i));
        held.sort_by_key(|&j| (std::cmp::Reverse(sorted.shards[j].bytes), j));
        for j in held {
            if net.residual(tier) == 0 {
                break;
            }
            if net.residual(supply[j]) == 0 {
                continue;
            }
            let Some(&(_, link)) = links[j].iter().find(|&&(n, _)| n == i) else { continue };
            let Some(core) = sorted.holders[j].iter().find(|&&(h, _)| h == i).map(|&(_, c)| usize::from(c)) else {
                continue;
            };
            let even = core_even_tier[i][core];
            if net.residual(even) == 0 {
                continue;
            }
            net.push(supply[j], 1);
            net.push(link, 1);
            net.push(even, 1);
            net.push(tier, 1);
        }
    }
    let wanted: i64 = demand.iter().sum();
    let prefilled: i64 = supply.iter().map(|&e| net.flow(e)).sum();
    let sent = net.min_cost_flow(source, sink, wanted - prefilled);
    assert_eq!(prefilled + sent, wanted, "every shard found its nodes: eligibility was checked");

    let members: Vec<Vec<usize>> = (0..shard_count)
        .map(|j| {
            let mut on: Vec<usize> = sorted
                .frozen(j)
                .chain(sorted.manual[j].map(|(_, to)| to))
                .chain(links[j].iter().filter(|&&(_, e)| net.flow(e) == 1).map(|&(i, _)| i))
                .collect();
            on.sort_unstable();
            assert_eq!(on.len(), sorted.replication_factor, "shard {j} placed at its replication factor");
            on
        })
        .collect();
    let mut counts = vec![0u64; node_count];
    members.iter().flatten().for_each(|&i| counts[i] += 1);
    let balanced = up.iter().zip(&bounds).all(|(&i, &(lo, hi))| (lo..=hi).contains(&counts[i]));
    Ok(Placed { members, balanced })
}

/// Takes `used` units off the cheapest tiers first (fixed arrivals take the
/// cheapest room a node has, as any flow would give them).
fn consume(mut tiers: [(u64, Cost); 3], mut used: u64) -> [(u64, Cost); 3] {
    for tier in tiers.iter_mut() {
        let taken = used.min(tier.0);
        tier.0 -= taken;
        used -= taken;
    }
    tiers
}

/// Floor and ceiling of each party's share of `total`, in proportion to
/// `weights` and at most `caps[i]` for party i: shares above their cap are cut to
/// it and the rest shared again among the others (water-filling).
pub(crate) fn share_bounds(total: u64, weights: &[u64], caps: &[u64]) -> Vec<(u64, u64)> {
    assert_eq!(weights.len(), caps.len(), "one cap per weight");
    let mut capped = vec![false; weights.len()];
    loop {
        let rest = total.saturating_sub((0..caps.len()).filter(|&i| capped[i]).map(|i| caps[i]).sum());
        let weight_sum: u64 = (0..weights.len()).filter(|&i| !capped[i]).map(|i| weights[i]).sum();
        let over: Vec<usize> =
            (0..weights.len()).filter(|&i| !capped[i] && rest * weights[i] > caps[i] * weight_sum).collect();
        if over.is_empty() {
            return (0..weights.len())
                .map(|i| match (capped[i], weight_sum) {
                    (true, _) => (caps[i], caps[i]),
                    (false, 0) => (0, 0),
                    (false, sum) => ((rest * weights[i]) / sum, (rest * weights[i]).div_ceil(sum)),
                })
                .collect();
        }
        over.into_iter().for_each(|i| capped[i] = true);
    }
}

/// A node-level move before its target core is dealt.
struct Pending {
    shard_index: usize,
    /// The move, its target core not dealt yet.
    moved: ReplicaMove,
}

/// Chooses which of a node's replicas leave it so that its cores stay even
/// without moves between them. The flow decides how many replicas a node gives
/// to which node, but its core tier only caps each core, so a node can keep
/// three on one core and one on another. While that is so, a replica leaving
/// node i from an emptier core (b) stays, and one of a core at least two
/// fuller (a, the fullest first) goes in its place:
/// - to the node t that was to receive b, when t does not hold a (a swap;
///   the bytes moved may change);
/// - else, when t was to receive a from another up node k that keeps b, k
///   keeps a and gives b to t instead (a chain; the bytes do not change), if
///   k's cores stay as even as they were, or within one.
///
/// Node counts, move counts and the nodes each move touches are the flow's;
/// only the bytes can change, the last of the costs. What neither can even
/// out, `deal_cores` evens with moves between cores.
fn even_out_departures(sorted: &Sorted, members: &mut [Vec<usize>]) {
    let shard_count = sorted.shards.len();
    let core_of = |j: usize, i: usize| sorted.holders[j].iter().find(|&&(h, _)| h == i).map(|&(_, c)| usize::from(c));
    let manual_touches = |j: usize, i: usize| sorted.manual[j].is_some_and(|(from, to)| from == i || to == i);
    // Node i's replicas per core that it keeps, and how many arrive on it.
    let kept_and_arriving = |i: usize, members: &[Vec<usize>]| {
        let mut kept = vec![0u64; usize::from(sorted.nodes[i].cores)];
        let mut arriving = 0;
        for j in (0..shard_count).filter(|&j| members[j].contains(&i)) {
            match core_of(j, i) {
                Some(c) => kept[c] += 1,
                None => arriving += 1,
            }
        }
        (kept, arriving)
    };
    for i in (0..sorted.nodes.len()).filter(|&i| sorted.is_up(i) && sorted.nodes[i].cores > 1) {
        // Each swap or chain lowers node i's sum of squared counts per core by
        // two or more, so this ends; the bound only guards that reasoning.
        for _ in 0..shard_count {
            let (kept, arriving) = kept_and_arriving(i, members);
            if spread(&deal_arrivals(kept.clone(), arriving)) <= 1 {
                break;
            }
            // The shards node i keeps, with their cores.
            let stays: Vec<(usize, usize)> = (0..shard_count)
                .filter(|&j| members[j].contains(&i))
                .filter_map(|j| core_of(j, i).map(|c| (j, c)))
                .collect();
            // A departure from a core at least two below some other core, the
            // emptiest cores first.
            let top = kept.iter().copied().max().unwrap_or(0);
            let mut leaving: Vec<(u64, usize)> = (0..shard_count)
                .filter(|&j| !members[j].contains(&i) && !manual_touches(j, i))
                .filter_map(|j| core_of(j, i).map(|c| (kept[c], j)))
                .filter(|&(level, _)| level + 2 <= top)
                .collect();
            leaving.sort_unstable();
            // The replicas node i could give instead, fullest core first.
            let mut instead: Vec<(std::cmp::Reverse<u64>, u64, usize)> = stays
                .iter()
                .filter(|&&(a, _)| !manual_touches(a, i))
                .map(|&(a, c)| (std::cmp::Reverse(kept[c]), sorted.shards[a].bytes, a))
                .collect();
            instead.sort_unstable();
            let arrival_of = |j: usize, t: usize| members[j].contains(&t) && core_of(j, t).is_none();
            let swap = leaving.iter().find_map(|&(level, b)| {
                let targets: Vec<usize> =
                    members[b].iter().copied().filter(|&t| arrival_of(b, t) && !manual_touches(b, t)).collect();
                let fuller = instead.iter().filter(move |&&(std::cmp::Reverse(from), _, _)| from >= level + 2);
                targets.iter().find_map(|&t| {
                    fuller
                        .clone()
                        .find(|&&(_, _, a)| {
                            !members[a].contains(&t) && core_of(a, t).is_none() && !manual_touches(a, t)
                        })
                        .map(|&(_, _, a)| (a, b, t))
                })
            });
            let chain = || {
                leaving.iter().find_map(|&(level, b)| {
                    let fuller = instead.iter().filter(move |&&(std::cmp::Reverse(from), _, _)| from >= level + 2);
                    let targets = members[b].iter().copied().filter(|&t| arrival_of(b, t));
                    targets.into_iter().find_map(|t| {
                        fuller.clone().filter(|&&(_, _, a)| arrival_of(a, t)).find_map(|&(_, _, a)| {
                            // k gave a (to t) and keeps b: it can give b instead.
                            let givers = members[b].iter().copied().filter(|&k| {
                                sorted.is_up(k)
                                    && !members[a].contains(&k)
                                    && !manual_touches(a, k)
                                    && !manual_touches(b, k)
                            });
                            givers.into_iter().find_map(|k| {
                                let (Some(ca), Some(cb)) = (core_of(a, k), core_of(b, k)) else { return None };
                                let (mut kept_k, arriving_k) = kept_and_arriving(k, members);
                                let before = spread(&deal_arrivals(kept_k.clone(), arriving_k));
                                kept_k[cb] -= 1;
                                kept_k[ca] += 1;
                                let after = spread(&deal_arrivals(kept_k, arriving_k));
                                (after <= before.max(1)).then_some((a, b, k))
                            })
                        })
                    })
                })
            };
            // Node i takes b back and gives a; `other` (t for a swap, k for a
            // chain) gives b up and takes a.
            let Some((a, b, other)) = swap.or_else(chain) else { break };
            members[b].retain(|&n| n != other);
            members[b].push(i);
            members[b].sort_unstable();
            members[a].retain(|&n| n != i);
            members[a].push(other);
            members[a].sort_unstable();
        }
    }
}

/// `kept` with `arriving` more replicas dealt, each to the emptiest core.
fn deal_arrivals(mut kept: Vec<u64>, arriving: usize) -> Vec<u64> {
    for _ in 0..arriving {
        let core = least_loaded(&kept);
        kept[usize::from(core)] += 1;
    }
    kept
}

/// The difference between the fullest and the emptiest core.
fn spread(load: &[u64]) -> u64 {
    load.iter().max().copied().unwrap_or(0) - load.iter().min().copied().unwrap_or(0)
}

/// Pairs each shard's lost replicas with its gained ones into moves: the manual
/// move first, then unchanged sources with new targets and leaving sources with
/// unchanged targets, so that as few moves as possible join two unchanged nodes.
/// Also returns, per shard, the node indices it arrives on.
fn pair_moves(sorted: &Sorted, members: &[Vec<usize>]) -> (Vec<Pending>, Vec<Vec<usize>>) {
    let mut moves = Vec::new();
    let mut arrivals = Vec::with_capacity(members.len());
    for (j, on) in members.iter().enumerate() {
        let shard = &sorted.shards[j];
        let held: Vec<usize> = sorted.holders[j].iter().map(|&(h, _)| h).collect();
        let mut lost: Vec<usize> = held.iter().copied().filter(|h| !on.contains(h)).collect();
        let mut gained: Vec<usize> = on.iter().copied().filter(|i| !held.contains(i)).collect();
        assert_eq!(lost.len(), gained.len(), "shard {j}: every lost replica is replaced");
        arrivals.push(gained.clone());
        let mut pairs = Vec::new();
        if let Some((from, to)) = sorted.manual[j] {
            lost.retain(|&h| h != from);
            gained.retain(|&i| i != to);
            pairs.push((from, to, MoveReason::Manual));
        }
        let unchanged = |i: &usize| sorted.roles[*i] == Role::Unchanged;
        let (mut lost_unchanged, mut lost_other): (Vec<usize>, Vec<usize>) = lost.into_iter().partition(unchanged);
        let (mut gained_new, mut gained_unchanged): (Vec<usize>, Vec<usize>) =
            gained.into_iter().partition(|i| !unchanged(i));
        let mut take = |from: &mut Vec<usize>, to: &mut Vec<usize>| {
            while !from.is_empty() && !to.is_empty() {
                pairs.push((from.remove(0), to.remove(0), MoveReason::Rebalance));
            }
        };
        take(&mut lost_unchanged, &mut gained_new);
        take(&mut lost_other, &mut gained_unchanged);
        take(&mut lost_unchanged, &mut gained_unchanged);
        take(&mut lost_other, &mut gained_new);
        for (from, to, reason) in pairs {
            let reason = match (reason, sorted.nodes[from].state) {
                (MoveReason::Manual, _) => MoveReason::Manual,
                (_, NodeState::Dead | NodeState::Removed) => MoveReason::Rereplicate,
                (_, NodeState::Draining) => MoveReason::Drain,
                (reason, _) => reason,
            };
            let core = sorted.holders[j].iter().find(|&&(h, _)| h == from).map_or(0, |&(_, c)| c);
            let from = Replica { node: sorted.nodes[from].id, core };
            let to = Replica { node: sorted.nodes[to].id, core: 0 };
            moves.push(Pending {
                shard_index: j,
                moved: ReplicaMove { shard: shard.id, from, to, bytes: shard.bytes, reason },
            });
        }
    }
    (moves, arrivals)
}

/// The cores the plan ends with.
struct Dealt {
    /// Per shard, its replicas as (node index, core), by node index.
    replicas: Vec<Vec<(usize, CoreIndex)>>,
    /// Per shard, the core each arrival lands on, by node id.
    arrival_core: Vec<std::collections::BTreeMap<NodeId, CoreIndex>>,
    /// Moves between cores of one node.
    core_moves: Vec<ReplicaMove>,
}

/// Deals cores within each up node: arrivals (by shard id) to the least loaded
/// core, then, while two cores differ by more than one, the smallest replica of
/// the fullest core to the emptiest (departures can leave a node lopsided).
fn deal_cores(sorted: &Sorted, members: &[Vec<usize>], arrivals: &[Vec<usize>]) -> Dealt {
    let shard_count = sorted.shards.len();
    let mut replicas: Vec<Vec<(usize, CoreIndex)>> = (0..shard_count)
        .map(|j| sorted.holders[j].iter().copied().filter(|(h, _)| members[j].contains(h)).collect())
        .collect();
    let mut arrival_core = vec![std::collections::BTreeMap::new(); shard_count];
    let mut core_moves = Vec::new();
    for (i, node) in sorted.nodes.iter().enumerate().filter(|&(i, _)| sorted.is_up(i)) {
        let mut load = vec![0u64; usize::from(node.cores)];
        replicas.iter().flatten().filter(|&&(h, _)| h == i).for_each(|&(_, c)| load[usize::from(c)] += 1);
        for j in (0..shard_count).filter(|&j| arrivals[j].contains(&i)) {
            let core = least_loaded(&load);
            load[usize::from(core)] += 1;
            replicas[j].push((i, core));
            arrival_core[j].insert(node.id, core);
        }
        loop {
            let (emptiest, fullest) = (least_loaded(&load), most_loaded(&load));
            if load[usize::from(fullest)] <= load[usize::from(emptiest)] + 1 {
                break;
            }
            let pick = (0..shard_count)
                .filter(|&j| replicas[j].contains(&(i, fullest)))
                .min_by_key(|&j| (!arrivals[j].contains(&i), sorted.shards[j].bytes, j));
            let Some(j) = pick else { break };
            let slot = replicas[j].iter_mut().find(|r| **r == (i, fullest));
            slot.into_iter().for_each(|r| r.1 = emptiest);
            arrival_core[j].entry(node.id).and_modify(|c| *c = emptiest);
            load[usize::from(fullest)] -= 1;
            load[usize::from(emptiest)] += 1;
            // An arrival just re-dealt needs no move of its own.
            if !arrivals[j].contains(&i) {
                core_moves.push(ReplicaMove {
                    shard: sorted.shards[j].id,
                    from: Replica { node: node.id, core: fullest },
                    to: Replica { node: node.id, core: emptiest },
                    bytes: sorted.shards[j].bytes,
                    reason: MoveReason::Core,
                });
            }
        }
    }
    replicas.iter_mut().for_each(|r| r.sort_unstable());
    Dealt { replicas, arrival_core, core_moves }
}

fn least_loaded(load: &[u64]) -> CoreIndex {
    (0..load.len()).min_by_key(|&c| (load[c], c)).map_or(0, |c| c as CoreIndex)
}

fn most_loaded(load: &[u64]) -> CoreIndex {
    (0..load.len()).max_by_key(|&c| (load[c], std::cmp::Reverse(c))).map_or(0, |c| c as CoreIndex)
}

/// The lower bound on bytes moved for the counts the plan reaches (module header).
fn minimal_bytes(sorted: &Sorted, members: &[Vec<usize>]) -> u64 {
    let mut sum = 0u64;
    for (i, node) in sorted.nodes.iter().enumerate() {
        let held: Vec<usize> =
            (0..sorted.shards.len()).filter(|&j| sorted.holders[j].iter().any(|&(h, _)| h == i)).collect();
        let forced = |j: &usize| node.state.leaves() || sorted.manual[*j].is_some_and(|(from, _)| from == i);
        let (forced, mut free): (Vec<usize>, Vec<usize>) = held.into_iter().partition(forced);
        sum = forced.iter().fold(sum, |s, &j| s.saturating_add(sorted.shards[j].bytes));
        if !sorted.is_up(i) {
            continue;
        }
        let ends_with = members.iter().filter(|on| on.contains(&i)).count();
        let fixed_arrivals = sorted.manual.iter().filter(|m| m.is_some_and(|(_, to)| to == i)).count();
        // Of the replicas the node had and may keep, this many had to go.
        let excess = free.len().saturating_sub(ends_with.saturating_sub(fixed_arrivals));
        free.sort_by_key(|&j| (sorted.shards[j].bytes, j));
        sum = free.iter().take(excess).fold(sum, |s, &j| s.saturating_add(sorted.shards[j].bytes));
    }
    sum
}

/// The leaders the plan ends with.
struct Leaders {
    /// Per shard, its leader's node index.
    leader: Vec<Option<usize>>,
    balanced: bool,
}

/// Cost parts of the leader flow, most important first.
const LEADER_OVER: usize = 0;
const LEADER_FILL: usize = 1;
const CORE_OVER: usize = 2;
const CORE_SKEW: usize = 3;
const TRANSFERS: usize = 4;

/// Chooses each shard's leader among its final up replicas: balance across nodes
/// first, then across each node's cores, then the fewest transfers.
fn choose_leaders(sorted: &Sorted, finals: &[Vec<(usize, CoreIndex)>]) -> Leaders {
    let (node_count, shard_count) = (sorted.nodes.len(), sorted.shards.len());
    let up: Vec<usize> = (0..node_count).filter(|&i| sorted.is_up(i)).collect();
    let index_of = |id: NodeId| sorted.nodes.binary_search_by_key(&id, |n| n.id).ok();
    let current: Vec<Option<usize>> = sorted.shards.iter().map(|s| s.leader.and_then(index_of)).collect();
    let mut replica_counts = vec![0u64; node_count];
    finals.iter().flatten().for_each(|&(i, _)| replica_counts[i] += 1);
    let ledable: Vec<bool> = finals.iter().map(|f| f.iter().any(|&(i, _)| sorted.is_up(i))).collect();
    let total = ledable.iter().filter(|&&l| l).count() as u64;
    let weights: Vec<u64> = up.iter().map(|&i| u64::from(sorted.nodes[i].cores)).collect();
    let caps: Vec<u64> = up.iter().map(|&i| replica_counts[i]).collect();
    let bounds = share_bounds(total, &weights, &caps);

    let mut core_base = vec![0usize; node_count];
    let mut vertices = 2 + shard_count;
    for &i in &up {
        core_base[i] = vertices;
        vertices += usize::from(sorted.nodes[i].cores);
    }
    let node_vertex_base = vertices;
    let node_vertex = |i: usize| node_vertex_base + i;
    let mut net = Network::new(vertices + node_count);
    let (source, sink) = (0, 1);
    let mut links: Vec<Vec<(usize, EdgeId)>> = vec![Vec::new(); shard_count];
    for j in (0..shard_count).filter(|&j| ledable[j]) {
        net.add_edge(source, 2 + j, 1, ZERO);
        for &(i, core) in finals[j].iter().filter(|&&(i, _)| sorted.is_up(i)) {
            let cost = flow::unit(TRANSFERS, i128::from(current[j] != Some(i)));
            links[j].push((i, net.add_edge(2 + j, core_base[i] + usize::from(core), 1, cost)));
        }
    }
    for (k, &i) in up.iter().enumerate() {
        let (lo, hi) = bounds[k];
        let cores = u64::from(sorted.nodes[i].cores);
        let (even, most) = (lo / cores, hi.div_ceil(cores));
        for core in 0..sorted.nodes[i].cores {
            let room = finals.iter().flatten().filter(|&&r| r == (i, core)).count() as u64;
            let from = core_base[i] + usize::from(core);
            net.add_edge(from, node_vertex(i), even.min(room) as i64, ZERO);
            net.add_edge(from, node_vertex(i), (most - even).min(room) as i64, flow::unit(CORE_SKEW, 1));
            net.add_edge(from, node_vertex(i), room as i64, flow::unit(CORE_OVER, 1));
        }
        net.add_edge(node_vertex(i), sink, lo as i64, ZERO);
        net.add_edge(node_vertex(i), sink, (hi - lo) as i64, flow::unit(LEADER_FILL, 1));
        net.add_edge(node_vertex(i), sink, (caps[k] - hi) as i64, flow::unit(LEADER_OVER, 1));
    }
    let sent = net.min_cost_flow(source, sink, total as i64);
    assert_eq!(sent as u64, total, "every shard with an up replica got a leader");

    let leader: Vec<Option<usize>> = (0..shard_count)
        .map(|j| match links[j].iter().find(|&&(_, e)| net.flow(e) == 1) {
            Some(&(i, _)) => Some(i),
            // No up replica: the leader stays if it still holds the shard.
            None => current[j].filter(|&c| finals[j].iter().any(|&(i, _)| i == c)),
        })
        .collect();
    let mut led = vec![0u64; node_count];
    leader.iter().flatten().filter(|&&i| sorted.is_up(i)).for_each(|&i| led[i] += 1);
    let balanced = up.iter().zip(&bounds).all(|(&i, &(lo, hi))| (lo..=hi).contains(&led[i]));
    Leaders { leader, balanced }
}
