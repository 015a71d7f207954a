//! What the meta leader asks of the map next (issue 12): the edits that carry a
//! rebalancing plan out, a bounded number of moves at a time.
//!
//! Pure (sans-I/O): from the map and the nodes the meta leader cannot reach now,
//! [`next_edits`] answers the edits to make. The meta leader calls it whenever the
//! map or its view of the nodes changed, applies the edits one by one, and calls
//! it again on the map they leave: each settled move changes the map, so the plan
//! is made afresh as the cluster changes (a join during a drain, a death during a
//! join) and never runs on stale facts.
//!
//! In order:
//! 1. a move whose target is leaving (draining, dead, removed) while its source
//!    is up is turned around;
//! 2. without a rebalance under way (the map's `rebalance` flag), one starts
//!    (the flag is set) when an operator asks, or with `--auto-rebalance` after a
//!    change of nodes that needs moves: a join (an up node holding nothing), a
//!    drain, death or removal (a leaving node holding replicas). An imbalance
//!    made by hand (`shard move`) starts none, so automatic moves never undo it;
//!    A meta group of the wrong size starts one too, whatever changed;
//! 3. during a rebalance: one change of the meta group's replicas (see
//!    [`meta_step`]: a replica on a leaving node replaced or dropped, then a
//!    grow or a shrink towards [`meta_target`]); then the planner's moves, in
//!    its order (re-replication first), at most one per shard and `moves_max`
//!    under way in all, never on a shard already moving;
//! 4. once no move is left and every node is reachable, the planner's leader
//!    choice, as one `Lead` edit (no data moves);
//! 5. the flag is cleared once nothing is left.

use std::collections::{BTreeMap, BTreeSet};

use corekv_rpc::kv::NodeId;
use corekv_rpc::map::{ClusterMap, CoreIndex, META_SHARD, NodeState, Replica};
use corekv_rpc::node::{LeaderPick, MetaEdit};

use super::meta_size;
use super::plan::{self, PlanInput};

/// A node's state as the planner is to see it: the map's, except that an up node
/// the meta leader cannot reach is down.
pub fn effective_state(map: &ClusterMap, node: NodeId, unreachable: &BTreeSet<NodeId>) -> NodeState {
    match map.node(node).map_or(NodeState::Removed, |n| n.state) {
        NodeState::Up if unreachable.contains(&node) => NodeState::Down,
        state => state,
    }
}

/// The plan for `map` as it is, with shard sizes from `bytes_of`.
pub fn plan_for(
    map: &ClusterMap,
    unreachable: &BTreeSet<NodeId>,
    bytes_of: impl Fn(u32) -> u64,
) -> Result<plan::Plan, plan::PlanError> {
    let input = PlanInput::from_map(map, |n| effective_state(map, n, unreachable), bytes_of);
    plan::plan(&input)
}

/// The fewest bytes between nodes of a plan for `map` as it is, sizes exact
/// ([`plan::minimal_bytes_exact`]).
pub fn minimal_bytes_for(
    map: &ClusterMap,
    unreachable: &BTreeSet<NodeId>,
    bytes_of: impl Fn(u32) -> u64,
) -> Result<u64, plan::PlanError> {
    let input = PlanInput::from_map(map, |n| effective_state(map, n, unreachable), bytes_of);
    plan::minimal_bytes_exact(&input)
}

/// The edits to make next (see the module header). `rebalance` is the meta
/// leader's `--auto-rebalance`; `moves_max` bounds the moves under way;
/// `bytes_of` gives the shards' sizes the plan weighs (of equally few moves, the
/// smallest replicas move).
pub fn next_edits(
    map: &ClusterMap,
    unreachable: &BTreeSet<NodeId>,
    rebalance: bool,
    moves_max: usize,
    bytes_of: impl Fn(u32) -> u64,
) -> Vec<MetaEdit> {
    let state = |n: NodeId| effective_state(map, n, unreachable);
    let mut edits = Vec::new();
    let mut moving = 0;
    for shard in map.groups() {
        let outgoing = map.outgoing(shard);
        if map.handoff_of(shard).is_some() && outgoing.is_empty() {
            moving += 1;
        }
        if outgoing.is_empty() {
            continue;
        }
        moving += 1;
        if let [source] = outgoing
            && state(source.node) == NodeState::Up
            && let Some(target) = map.replicas(shard).iter().find(|r| state(r.node).leaves())
        {
            edits.push(MetaEdit::Revert { shard, target: target.node });
        }
    }
    if !map.rebalance {
        // Automatic rebalancing starts after a change of nodes only: a leaving
        // node that still holds replicas, or an up node that holds none (it just
        // joined, or came back from the dead). An imbalance an operator made by
        // hand is left alone.
        let holds = |n: NodeId| map.groups().any(|s| map.members(s).any(|r| r.node == n));
        let changed = map.nodes.iter().any(|n| {
            let st = state(n.id);
            (st.leaves() && holds(n.id)) || (st == NodeState::Up && !holds(n.id))
        });
        let replica_moves =
            plan_for(map, unreachable, |_| 0).is_ok_and(|p| p.moves.iter().any(|m| m.from.node != m.to.node));
        // A meta group of the wrong size is the cluster's own shape, never an
        // operator's choice: it starts a rebalance whatever changed.
        if rebalance && (meta_step(map, &state).is_some() || changed && replica_moves) {
            edits.push(MetaEdit::SetRebalance { on: true });
        }
        return edits;
    }
    let mut budget = moves_max.saturating_sub(moving);
    if budget == 0 && moving > 0 {
        // Nothing more can start and the rebalance cannot end while moves run:
        // no plan is needed (it is the costly part of a look).
        return edits;
    }
    let meta = meta_step(map, &state);
    if budget > 0
        && let Some(edit) = meta.clone()
    {
        edits.push(edit);
        budget -= 1;
    }
    let plan = match plan_for(map, unreachable, bytes_of) {
        Ok(plan) => plan,
        Err(e) => {
            tracing::warn!(error = %e, "no rebalancing plan for this map");
            return edits;
        }
    };
    // One move or hand-off per shard at a time; a hand-off waits only for
    // itself, unless its node leaves (a dead node's never ends: its replicas
    // move off all the same).
    let free =
        |shard: u32| map.outgoing(shard).is_empty() && map.handoff_of(shard).is_none_or(|h| state(h.to.node).leaves());
    let planned: Vec<_> = plan
        .next_moves(usize::MAX)
        .into_iter()
        .filter(|m| free(m.shard))
        .filter(|m| {
            // A move between two cores of one node is a hand-off of the node's
            // replica: only on an up node.
            m.from.node != m.to.node || (map.handoff_of(m.shard).is_none() && state(m.to.node) == NodeState::Up)
        })
        .collect();
    // Once every replica is where the plan wants it, leaders are balanced by
    // reordering replicas (the shards' leaders hand leadership to their first).
    // Not while a node is unreachable: the planner would move its leaderships
    // away for good, though it may be back in a moment; the rebalance stays
    // open meanwhile, and ends with the picks once it is back (or dead, and
    // its replicas re-created).
    let down = map.nodes.iter().any(|n| state(n.id) == NodeState::Down);
    let picks: Vec<LeaderPick> = if planned.is_empty() && moving == 0 && !down {
        plan.leader_transfers
            .iter()
            .filter(|t| t.shard != META_SHARD)
            .map(|t| LeaderPick { shard: t.shard, node: t.to })
            .collect()
    } else {
        Vec::new()
    };
    // A meta replica on a leaving node with no up node to take it (every up node
    // holds one already, and the group is no larger than the cluster wants) keeps
    // the rebalance open: clearing it would only start it again at the next
    // look, an epoch bump every time.
    let meta_stuck = map.members(META_SHARD).any(|r| state(r.node).leaves());
    if planned.is_empty() && moving == 0 && picks.is_empty() && meta.is_none() && !meta_stuck && !down {
        edits.push(MetaEdit::SetRebalance { on: false });
    }
    if !picks.is_empty() {
        edits.push(MetaEdit::Lead { picks });
    }
    // The plan deals cores for all its moves at once; the moves run a few at a
    // time and each look plans again, so a target's core is chosen now: the one
    // of its node that will hold the fewest replicas, counting the moves under
    // way and the departures the plan still has to start (a node can both
    // receive and give). That keeps a node's cores even through any batching.
    let mut load: BTreeMap<NodeId, Vec<u64>> = BTreeMap::new();
    for m in planned.into_iter().take(budget) {
        if m.from.node == m.to.node {
            edits.push(MetaEdit::Relocate { shard: m.shard, to: m.to });
            continue;
        }
        let cores = load.entry(m.to.node).or_insert_with(|| {
            let mut cores = core_load(map, m.to.node);
            let departures = plan.moves.iter().filter(|d| d.from.node == m.to.node && d.to.node != m.to.node);
            for d in departures {
                if let Some(n) = cores.get_mut(usize::from(d.from.core)) {
                    *n = n.saturating_sub(1);
                }
            }
            cores
        });
        let core = (0..cores.len()).min_by_key(|&c| (cores[c], c)).unwrap_or(0);
        if let Some(n) = cores.get_mut(core) {
            *n += 1;
        }
        let to = Replica { node: m.to.node, core: core as CoreIndex };
        edits.push(MetaEdit::Begin { shard: m.shard, from: m.from.node, to });
    }
    edits
}

/// Replicas per core of `node` in `map` (targets of moves under way included;
/// the meta group apart).
fn core_load(map: &ClusterMap, node: NodeId) -> Vec<u64> {
    let cores = map.node(node).map_or(1, |n| usize::from(n.cores.max(1)));
    let mut load = vec![0u64; cores];
    for s in &map.shards {
        let Some(r) = s.replicas.iter().find(|r| r.node == node) else { continue };
        // A replica being handed over counts on its new core.
        let core = s.handoff.filter(|h| h.to.node == node).map_or(r.core, |h| h.to.core);
        if let Some(n) = load.get_mut(usize::from(core)) {
            *n += 1;
        }
    }
    load
}

/// How many replicas the meta group should have (DESIGN §7): the largest odd
/// number ≤ min(5, live nodes), live being up or down (a node briefly unreachable
/// does not shrink it). It never shrinks below three on its own: with fewer live
/// nodes it waits under-replicated for a node to come, as a shard does.
pub fn meta_target(map: &ClusterMap, state: &impl Fn(NodeId) -> NodeState) -> usize {
    let live = map.nodes.iter().filter(|n| !state(n.id).leaves()).count();
    meta_size(live).max(map.replicas(META_SHARD).len().min(3))
}

/// The next change to the meta group's replicas, one at a time, while none is
/// under way: a replica on a leaving node is replaced by core 0 of the lowest-id
/// up node without one, or just dropped when the group is larger than
/// [`meta_target`]; then the group grows onto the lowest-id free up node, or
/// sheds a replica (an unreachable one first, else the highest id) to reach it,
/// or to an odd count when it cannot grow (it grows from an odd count only
/// with two free up nodes).
fn meta_step(map: &ClusterMap, state: &impl Fn(NodeId) -> NodeState) -> Option<MetaEdit> {
    if !map.outgoing(META_SHARD).is_empty() {
        return None;
    }
    let replicas = map.replicas(META_SHARD);
    let target = meta_target(map, state);
    let spares: Vec<NodeId> = map
        .nodes
        .iter()
        .filter(|n| state(n.id) == NodeState::Up && !replicas.iter().any(|r| r.node == n.id))
        .map(|n| n.id)
        .collect();
    let spare = spares.first().copied();
    if let Some(leaving) = replicas.iter().find(|r| state(r.node).leaves()) {
        return match spare {
            _ if replicas.len() > target => Some(MetaEdit::ShrinkMeta { node: leaving.node }),
            Some(to) => {
                Some(MetaEdit::Begin { shard: META_SHARD, from: leaving.node, to: Replica { node: to, core: 0 } })
            }
            None => None,
        };
    }
    // Growing from an odd count only when the next odd one is reachable: an
    // even group would be shed again at once.
    let can_grow = replicas.len().is_multiple_of(2) || spares.len() >= 2;
    if replicas.len() < target
        && can_grow
        && let Some(node) = spare
    {
        return Some(MetaEdit::GrowMeta { node });
    }
    // Too many, or an even count with no node to grow onto (an even group
    // tolerates no more failures than the odd one below it).
    if replicas.len() > target || (replicas.len() > 3 && replicas.len().is_multiple_of(2)) {
        let shed = replicas
            .iter()
            .find(|r| state(r.node) == NodeState::Down)
            .or_else(|| replicas.iter().max_by_key(|r| r.node))?;
        return Some(MetaEdit::ShrinkMeta { node: shed.node });
    }
    None
}

#[cfg(test)]
mod tests {
    use corekv_rpc::map::NodeInfo;

    use super::*;
    use crate::node::meta::apply_edit;
    use crate::placement::{initial_map, nodes};

    fn info(id: NodeId) -> NodeInfo {
        NodeInfo { id, addr: format!("10.0.0.{id}:7000"), cores: 2, state: NodeState::Up }
    }

    fn info_cores(id: NodeId, cores: u16) -> NodeInfo {
        NodeInfo { cores, ..info(id) }
    }

    /// Runs the meta leader's loop with every move finishing at once: applies the
    /// edits, settles every move, until nothing is left to do.
    fn run(mut map: ClusterMap, unreachable: &BTreeSet<NodeId>, moves_max: usize) -> (ClusterMap, usize) {
        let mut begun = 0;
        for _ in 0..10_000 {
            let edits = next_edits(&map, unreachable, true, moves_max, |_| 0);
            let moving = map.groups().filter(|&s| !map.outgoing(s).is_empty() || map.handoff_of(s).is_some()).count();
            let starting =
                edits.iter().filter(|e| matches!(e, MetaEdit::Begin { .. } | MetaEdit::Relocate { .. })).count();
            assert!(moving + starting <= moves_max, "no more than {moves_max} moves under way");
            if edits.is_empty() && moving == 0 {
                return (map, begun);
            }
            for edit in &edits {
                begun += usize::from(matches!(edit, MetaEdit::Begin { .. }));
                if let Some(next) = apply_edit(edit, &map).expect("the driver's edits apply") {
                    map = next;
                }
            }
            // Every move and hand-off under way finishes.
            for shard in map.groups().collect::<Vec<_>>() {
                if !map.outgoing(shard).is_empty() {
                    map.group_mut(shard).unwrap().outgoing.clear();
                    map.epoch += 1;
                }
                if let Some(h) = map.handoff_of(shard) {
                    map = crate::placement::moves::relocated(&map, shard, h.to, h.since)
                        .expect("a hand-off under way ends");
                }
            }
        }
        panic!("the driver never finished");
    }

    /// The nodes holding the meta group's wanted replicas.
    fn meta_nodes(map: &ClusterMap) -> BTreeSet<NodeId> {
        map.meta.replicas.iter().map(|r| r.node).collect()
    }

    /// The shards whose preferred leader (first replica) is `node`.
    fn leaders(map: &ClusterMap, node: NodeId) -> usize {
        map.shards.iter().filter(|s| s.replicas[0].node == node).count()
    }

    fn held(map: &ClusterMap, node: NodeId) -> usize {
        map.shards.iter().filter(|s| s.replicas.iter().any(|r| r.node == node)).count()
    }

    /// Every node's replicas per core differ by at most one (DESIGN §7): the
    /// planner picks the cores that moves leave and land on, and hands a
    /// replica to another core of its node where that is not enough.
    fn assert_cores_balanced(map: &ClusterMap) {
        for n in &map.nodes {
            let mut per_core = vec![0usize; usize::from(n.cores)];
            for r in map.shards.iter().flat_map(|s| &s.replicas).filter(|r| r.node == n.id) {
                per_core[usize::from(r.core)] += 1;
            }
            let (lo, hi) = (per_core.iter().min().unwrap(), per_core.iter().max().unwrap());
            assert!(hi - lo <= 1, "node {}: replicas per core {per_core:?}", n.id);
        }
    }

    #[test]
    fn a_join_moves_replicas_only_onto_the_new_node_a_few_at_a_time() {
        let founding = initial_map(9, &(1..=3).map(info).collect::<Vec<_>>(), 24, 3).unwrap();
        let joined = nodes::add_node(&founding, &info(4)).unwrap().unwrap();
        let (after, begun) = run(joined.clone(), &BTreeSet::new(), 2);
        assert_eq!(held(&after, 4), 18, "the new node holds its share: 72 replicas × 2/8 cores");
        assert_eq!(begun, 18, "only the moves onto the new node");
        assert_cores_balanced(&after);
        for s in 0..24 {
            let before: BTreeSet<NodeId> = joined.replicas(s).iter().map(|r| r.node).collect();
            let now: BTreeSet<NodeId> = after.replicas(s).iter().map(|r| r.node).collect();
            assert!(before.difference(&now).count() <= 1 && now.difference(&before).all(|&n| n == 4));
        }
    }

    #[test]
    fn a_drained_or_dead_node_ends_empty_and_the_meta_group_leaves_it_too() {
        let founding = initial_map(9, &(1..=4).map(info).collect::<Vec<_>>(), 16, 3).unwrap();
        assert!(founding.meta.replicas.iter().any(|r| r.node == 2));
        let draining = nodes::set_state(&founding, 2, NodeState::Draining, false).unwrap().unwrap();
        let (after, _) = run(draining, &BTreeSet::new(), 3);
        assert_eq!(held(&after, 2), 0);
        assert!(after.meta.replicas.iter().all(|r| r.node != 2), "the meta replica moved: {:?}", after.meta);
        assert_eq!(after.meta.replicas.len(), 3);
        assert!(!after.rebalance, "the drain's request is cleared once done");
        assert_cores_balanced(&after);
        let removed = nodes::set_state(&after, 2, NodeState::Removed, false).unwrap();
        assert!(removed.is_some(), "a drained node can be removed");

        let dead = nodes::set_state(&founding, 3, NodeState::Dead, false).unwrap().unwrap();
        let (after, _) = run(dead, &BTreeSet::new(), 4);
        assert_eq!(held(&after, 3), 0);
        assert!(after.shards.iter().all(|s| s.replicas.len() == 3));
        assert_cores_balanced(&after);
    }

    #[test]
    fn cores_stay_balanced_through_joins_drains_and_deaths_of_nodes_with_unequal_cores() {
        let founding = initial_map(9, &[info_cores(1, 1), info_cores(2, 3), info_cores(3, 4)], 40, 3).unwrap();
        assert_cores_balanced(&founding);
        let joined = nodes::add_node(&founding, &info_cores(4, 3)).unwrap().unwrap();
        let (mut map, _) = run(joined, &BTreeSet::new(), 3);
        assert_cores_balanced(&map);
        map = nodes::add_node(&map, &info_cores(5, 2)).unwrap().unwrap();
        (map, _) = run(map, &BTreeSet::new(), 3);
        assert_cores_balanced(&map);
        map = nodes::set_state(&map, 3, NodeState::Draining, false).unwrap().unwrap();
        (map, _) = run(map, &BTreeSet::new(), 3);
        assert_eq!(held(&map, 3), 0);
        assert_cores_balanced(&map);
        map = nodes::set_state(&map, 2, NodeState::Dead, false).unwrap().unwrap();
        (map, _) = run(map, &BTreeSet::new(), 3);
        assert_eq!(held(&map, 2), 0);
        assert!(map.shards.iter().all(|s| s.replicas.len() == 3));
        assert_cores_balanced(&map);
    }

    /// A node whose replicas all sit on one of its two cores (as a restart with
    /// more cores, or moves by hand, could leave it): a rebalance hands half of
    /// them to the other core, moving no replica between nodes, never two
    /// hand-offs of one shard at once, and only on up nodes.
    #[test]
    fn a_rebalance_evens_a_nodes_cores_by_hand_offs() {
        let mut map = initial_map(9, &(1..=3).map(info).collect::<Vec<_>>(), 8, 3).unwrap();
        for s in &mut map.shards {
            for r in s.replicas.iter_mut().filter(|r| r.node == 1) {
                r.core = 0;
            }
        }
        map.rebalance = true;
        let edits = next_edits(&map, &BTreeSet::new(), true, 3, |_| 0);
        assert!(!edits.iter().any(|e| matches!(e, MetaEdit::Begin { .. })), "{edits:?}");
        let relocations: Vec<_> = edits.iter().filter(|e| matches!(e, MetaEdit::Relocate { .. })).collect();
        assert_eq!(relocations.len(), 3, "as many as may run at once: {edits:?}");
        assert!(
            relocations
                .iter()
                .all(|e| matches!(e, MetaEdit::Relocate { to, .. } if *to == Replica { node: 1, core: 1 }))
        );
        // While they run, none of their shards is handed off again.
        let mut during = map.clone();
        for edit in &edits {
            if let Some(next) = apply_edit(edit, &during).unwrap() {
                during = next;
            }
        }
        let again = next_edits(&during, &BTreeSet::new(), true, 8, |_| 0);
        for e in &again {
            if let MetaEdit::Relocate { shard, .. } = e {
                assert!(during.handoff_of(*shard).is_none(), "{e:?} twice");
            }
        }
        let (after, begun) = run(map.clone(), &BTreeSet::new(), 3);
        assert_eq!(begun, 0, "no replica moves between nodes");
        assert_cores_balanced(&after);
        // An unreachable node's cores are left alone.
        let unreachable = BTreeSet::from([1]);
        let edits = next_edits(&map, &unreachable, true, 3, |_| 0);
        assert!(!edits.iter().any(|e| matches!(e, MetaEdit::Relocate { .. })), "{edits:?}");
    }

    /// A join of a 4-core node to 3, 3, 4 and 4-core nodes: before the planner
    /// chose which replicas leave a node with its cores in mind, node 4 ended
    /// at [3, 3, 2, 1] (a case a property test found).
    #[test]
    fn a_join_leaves_the_givers_cores_even() {
        let founders: Vec<NodeInfo> = [3, 3, 4, 4].iter().zip(1..).map(|(&c, id)| info_cores(id, c)).collect();
        let founding = initial_map(9, &founders, 14, 3).unwrap();
        let joined = nodes::add_node(&founding, &info_cores(5, 4)).unwrap().unwrap();
        let (after, _) = run(joined, &BTreeSet::new(), 3);
        assert_cores_balanced(&after);
    }

    /// A join of a 4-core node to 3, 2 and 2-core nodes holding every one of 9
    /// shards: the new node takes a replica of each, so no replica it does not
    /// hold is left for a plain swap. Before chains (node 1 keeps one from its
    /// emptier core and another giver gives that shard instead), node 1 ended
    /// at [1, 3, 3] (a case a random search found).
    #[test]
    fn a_join_that_takes_a_replica_of_every_shard_leaves_the_givers_cores_even() {
        let founders: Vec<NodeInfo> = [3, 2, 2].iter().zip(1..).map(|(&c, id)| info_cores(id, c)).collect();
        let founding = initial_map(9, &founders, 9, 3).unwrap();
        let joined = nodes::add_node(&founding, &info_cores(4, 4)).unwrap().unwrap();
        let (after, _) = run(joined, &BTreeSet::new(), 2);
        assert_eq!(held(&after, 4), 9);
        assert_cores_balanced(&after);
    }

    /// A drain in which node 1 both receives the draining node's replicas and
    /// gives one for balance, the giving planned after the receiving: the
    /// targets' cores must be dealt with that departure counted, or node 1
    /// ends at [6, 4] (a case a random search found).
    #[test]
    fn a_node_that_receives_and_gives_in_one_rebalance_keeps_its_cores_even() {
        join_then_leave(&[2, 2, 3, 1], 14, 4, 4, (2, NodeState::Draining));
    }

    /// A death after a join, planned afresh at every look: the flow charged a
    /// 1-core node's unit above its floor as core excess (its floor fills its
    /// one core), so a later look had that node give a replica rather than
    /// node 3, whose arrival had been dealt around its planned departure, and
    /// node 3 ended at [4, 2] (a case a random search found).
    #[test]
    fn a_node_ending_one_above_an_evenly_divided_floor_pays_no_core_excess() {
        join_then_leave(&[4, 2, 2, 1, 4], 11, 2, 3, (2, NodeState::Dead));
    }

    /// Founders with `cores` (ids from 1) holding `shards` shards; a node with
    /// `joiner_cores` joins, then `leave.0` drains or dies, each carried out
    /// `moves_max` moves at a time: every node's cores are even after each, and
    /// the leaver ends holding nothing.
    fn join_then_leave(cores: &[u16], shards: u32, joiner_cores: u16, moves_max: usize, leave: (NodeId, NodeState)) {
        let founders: Vec<NodeInfo> = cores.iter().zip(1..).map(|(&c, id)| info_cores(id, c)).collect();
        let founding = initial_map(9, &founders, shards, 3).unwrap();
        let joiner = info_cores(founders.len() as NodeId + 1, joiner_cores);
        let joined = nodes::add_node(&founding, &joiner).unwrap().unwrap();
        let (after, _) = run(joined, &BTreeSet::new(), moves_max);
        assert_cores_balanced(&after);
        let leaving = nodes::set_state(&after, leave.0, leave.1, false).unwrap().unwrap();
        let (after, _) = run(leaving, &BTreeSet::new(), moves_max);
        assert_eq!(held(&after, leave.0), 0);
        assert_cores_balanced(&after);
    }

    /// A fixed pseudo-random sample of 300 joins, each followed by a drain or a
    /// death, carried out a few moves at a time: every up node's cores end
    /// even. (Before chains, counted departures and the spare vertex, 10 nodes
    /// in this sample ended two or more apart; a search of 6000 such cases
    /// still finds 2, which only a move between cores mends: they are not in
    /// this sample.)
    #[test]
    fn a_sample_of_joins_then_leaves_keeps_every_nodes_cores_even() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut uneven = Vec::new();
        let mut leaves = 0;
        for case in 0..300 {
            let count = 3 + next(3) as usize;
            let founders: Vec<NodeInfo> = (0..count).map(|i| info_cores(i as u64 + 1, 1 + next(4) as u16)).collect();
            let shards = 3 + next(70) as u32;
            let joiner = info_cores(count as u64 + 1, 1 + next(4) as u16);
            let moves_max = 1 + next(4) as usize;
            let victim = 1 + next(count as u64 + 1);
            let state = if next(2) == 0 { NodeState::Draining } else { NodeState::Dead };
            let founding = initial_map(9, &founders, shards, 3).unwrap();
            let joined = nodes::add_node(&founding, &joiner).unwrap().unwrap();
            let (joined, _) = run(joined, &BTreeSet::new(), moves_max);
            let mut ends = vec![("join", joined.clone())];
            // A leave some shard could not survive (too few nodes) is refused
            // by the planner: that case ends at the join.
            if let Some(left) = nodes::set_state(&joined, victim, state, false).unwrap()
                && plan_for(&left, &BTreeSet::new(), |_| 0).is_ok()
            {
                leaves += 1;
                ends.push(("leave", run(left, &BTreeSet::new(), moves_max).0));
            }
            for (step, map) in ends {
                for n in map.nodes.iter().filter(|n| n.state == NodeState::Up) {
                    let per_core = core_load(&map, n.id);
                    if per_core.iter().max().unwrap() - per_core.iter().min().unwrap() > 1 {
                        let cores: Vec<u16> = founders.iter().map(|f| f.cores).collect();
                        uneven.push(format!(
                            "case {case} after the {step}: founders' cores {cores:?}, joiner's {}, {shards} shards, \
                             {moves_max} moves at a time, node {victim} {state:?}: node {} at {per_core:?}",
                            joiner.cores, n.id
                        ));
                    }
                }
            }
        }
        assert!(leaves > 200, "most cases have a leave too: {leaves}");
        assert!(uneven.is_empty(), "{}", uneven.join("\n"));
    }

    #[test]
    fn a_move_onto_a_node_that_died_is_turned_around_and_an_unreachable_node_gets_nothing() {
        let founding = initial_map(9, &(1..=3).map(info).collect::<Vec<_>>(), 8, 3).unwrap();
        let joined = nodes::add_node(&founding, &info(4)).unwrap().unwrap();
        assert_eq!(next_edits(&joined, &BTreeSet::new(), true, 1, |_| 0), vec![MetaEdit::SetRebalance { on: true }]);
        let joined = nodes::set_rebalance(&joined, true).unwrap();
        let edits = next_edits(&joined, &BTreeSet::new(), true, 1, |_| 0);
        let [MetaEdit::Begin { shard, from, .. }] = edits[..] else { panic!("one move: {edits:?}") };
        let moving = apply_edit(&edits[0], &joined).unwrap().unwrap();
        let dead = nodes::set_state(&moving, 4, NodeState::Dead, false).unwrap().unwrap();
        assert_eq!(next_edits(&dead, &BTreeSet::new(), true, 1, |_| 0), vec![MetaEdit::Revert { shard, target: 4 }]);
        let reverted = apply_edit(&MetaEdit::Revert { shard, target: 4 }, &dead).unwrap().unwrap();
        assert!(reverted.replicas(shard).iter().any(|r| r.node == from));
        // Node 4 unreachable (down): it keeps what it has and receives nothing.
        let unreachable = BTreeSet::from([4]);
        let edits = next_edits(&joined, &unreachable, true, 4, |_| 0);
        assert!(edits.iter().all(|e| !matches!(e, MetaEdit::Begin { to, .. } if to.node == 4)), "{edits:?}");
    }

    #[test]
    fn a_dead_meta_replica_with_nowhere_to_go_does_not_flap_the_rebalance_flag() {
        // Three nodes, three meta replicas: when one dies, no up node is free and
        // the group does not shrink below three. Nothing can move, so no
        // rebalance starts; one an operator asks for stays set (no edit at all),
        // rather than being cleared and set again at every look.
        let founding = initial_map(9, &(1..=3).map(info).collect::<Vec<_>>(), 6, 3).unwrap();
        let dead = nodes::set_state(&founding, 3, NodeState::Dead, false).unwrap().unwrap();
        assert!(next_edits(&dead, &BTreeSet::new(), true, 4, |_| 0).is_empty());
        let asked = nodes::set_rebalance(&dead, true).unwrap();
        let (after, _) = run(asked, &BTreeSet::new(), 4);
        assert_eq!(after.meta.replicas.len(), 3);
        assert!(after.rebalance);
        assert!(next_edits(&after, &BTreeSet::new(), true, 4, |_| 0).is_empty());
    }

    #[test]
    fn the_meta_group_follows_the_cluster_size_one_replica_at_a_time() {
        // Four nodes hold three meta replicas; a fifth joins: five.
        let founding = initial_map(9, &(1..=4).map(info).collect::<Vec<_>>(), 10, 3).unwrap();
        assert_eq!(meta_nodes(&founding), BTreeSet::from([1, 2, 3]));
        let joined = nodes::add_node(&founding, &info(5)).unwrap().unwrap();
        let (grown, _) = run(joined, &BTreeSet::new(), 4);
        assert_eq!(meta_nodes(&grown), BTreeSet::from([1, 2, 3, 4, 5]));
        assert!(!grown.rebalance);
        // One of the five dies: four live nodes want three, and the dead one's
        // replica is the first to go.
        let dead = nodes::set_state(&grown, 2, NodeState::Dead, false).unwrap().unwrap();
        let edits = next_edits(&nodes::set_rebalance(&dead, true).unwrap(), &BTreeSet::new(), true, 4, |_| 0);
        assert_eq!(edits.first(), Some(&MetaEdit::ShrinkMeta { node: 2 }), "{edits:?}");
        let (shrunk, _) = run(dead, &BTreeSet::new(), 4);
        assert_eq!(meta_nodes(&shrunk), BTreeSet::from([1, 3, 4]));
        assert!(!shrunk.rebalance);
        assert_eq!(held(&shrunk, 2), 0);
        // A node unreachable for a while counts as live: nothing shrinks, even
        // during a rebalance.
        let unreachable = BTreeSet::from([5]);
        let asked = nodes::set_rebalance(&grown, true).unwrap();
        let edits = next_edits(&asked, &unreachable, true, 4, |_| 0);
        assert!(!edits.iter().any(|e| matches!(e, MetaEdit::ShrinkMeta { .. })), "{edits:?}");
        assert!(!edits.contains(&MetaEdit::SetRebalance { on: false }), "open while node 5 is away: {edits:?}");
    }

    #[test]
    fn an_even_meta_group_that_cannot_grow_sheds_a_replica_and_grows_back_later() {
        // Five nodes, four meta replicas (node 3 came back after a death while
        // node 5, the only node free, is unreachable).
        let mut map = initial_map(9, &(1..=5).map(info).collect::<Vec<_>>(), 10, 3).unwrap();
        map.meta.replicas.retain(|r| r.node != 5);
        let unreachable = BTreeSet::from([5]);
        let (odd, _) = run(map, &unreachable, 4);
        assert_eq!(meta_nodes(&odd), BTreeSet::from([1, 2, 3]), "four voters tolerate no more than three");
        // Node 5 is back: five again, without anyone asking.
        let (five, _) = run(odd, &BTreeSet::new(), 4);
        assert_eq!(meta_nodes(&five), BTreeSet::from([1, 2, 3, 4, 5]));
        assert!(!five.rebalance);
    }

    #[test]
    fn leaders_are_not_picked_while_a_node_is_unreachable() {
        let founding = initial_map(9, &(1..=3).map(info).collect::<Vec<_>>(), 24, 3).unwrap();
        let joined = nodes::add_node(&founding, &info(4)).unwrap().unwrap();
        // Node 2 is unreachable during the join: it keeps its leaderships.
        let (during, _) = run(joined, &BTreeSet::from([2]), 4);
        assert_eq!(leaders(&during, 2), 8, "its founding share");
        assert!(during.rebalance, "the rebalance waits for node 2");
        let (after, _) = run(during, &BTreeSet::new(), 4);
        assert!((1..=4).all(|n| leaders(&after, n) == 6), "{:?}", after.shards);
        assert!(!after.rebalance);
    }

    #[test]
    fn leaders_are_balanced_by_reordering_replicas_once_the_moves_are_done() {
        let founding = initial_map(9, &(1..=3).map(info).collect::<Vec<_>>(), 24, 3).unwrap();
        let joined = nodes::add_node(&founding, &info(4)).unwrap().unwrap();
        let (after, _) = run(joined, &BTreeSet::new(), 4);
        for node in 1..=4 {
            assert_eq!(leaders(&after, node), 6, "24 leaders over four equal nodes: {:?}", after.shards);
        }
        assert!(plan_for(&after, &BTreeSet::new(), |_| 0).unwrap().leader_transfers.is_empty());
        // A rebalance asked of a balanced cluster picks no leaders: nothing flips.
        let asked = nodes::set_rebalance(&after, true).unwrap();
        assert_eq!(next_edits(&asked, &BTreeSet::new(), true, 4, |_| 0), vec![MetaEdit::SetRebalance { on: false }]);
    }

    #[test]
    fn an_imbalance_made_by_hand_starts_no_automatic_rebalance() {
        let founding = initial_map(9, &(1..=4).map(info).collect::<Vec<_>>(), 8, 3).unwrap();
        let to = (1..=4).find(|&n| !founding.replicas(0).iter().any(|r| r.node == n)).unwrap();
        let from = founding.replicas(0)[0].node;
        let moved = crate::placement::moves::begin(&founding, 0, from, Replica { node: to, core: 0 }).unwrap();
        let mut settled = moved.clone();
        settled.group_mut(0).unwrap().outgoing.clear();
        assert!(drive_plan_moves(&settled) > 0, "the planner alone would undo it");
        assert!(next_edits(&moved, &BTreeSet::new(), true, 4, |_| 0).is_empty());
        assert!(next_edits(&settled, &BTreeSet::new(), true, 4, |_| 0).is_empty());
    }

    fn drive_plan_moves(map: &ClusterMap) -> usize {
        plan_for(map, &BTreeSet::new(), |_| 0).unwrap().moves.iter().filter(|m| m.from.node != m.to.node).count()
    }

    #[test]
    fn without_auto_rebalance_only_an_operators_request_moves_replicas() {
        let founding = initial_map(9, &(1..=3).map(info).collect::<Vec<_>>(), 8, 3).unwrap();
        let joined = nodes::add_node(&founding, &info(4)).unwrap().unwrap();
        assert!(next_edits(&joined, &BTreeSet::new(), false, 4, |_| 0).is_empty());
        let asked = nodes::set_rebalance(&joined, true).unwrap();
        assert_eq!(next_edits(&asked, &BTreeSet::new(), false, 4, |_| 0).len(), 4);
        let balanced = ClusterMap { rebalance: true, ..founding.clone() };
        assert_eq!(
            next_edits(&balanced, &BTreeSet::new(), false, 4, |_| 0),
            vec![MetaEdit::SetRebalance { on: false }]
        );
    }
}
