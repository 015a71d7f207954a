//! The rebalancing planner's rules: the lab cases by name, then properties over
//! random maps, the move count checked against a brute force on small ones.

use std::collections::BTreeSet;

use corekv_rpc::kv::{NodeId, ShardId};
use corekv_rpc::map::{NodeInfo, Replica};
use proptest::prelude::*;

use super::plan::*;
use super::{PlacementError, initial_map};

fn info(id: NodeId, cores: u16) -> NodeInfo {
    NodeInfo { id, addr: format!("127.0.0.1:{}", 7000 + 100 * id), cores, state: corekv_rpc::map::NodeState::Up }
}

/// The input for a founding map of `cores.len()` up nodes, every shard `bytes` big.
fn founded(cores: &[u16], shards: u32, replicas: usize) -> PlanInput {
    let nodes: Vec<NodeInfo> = cores.iter().enumerate().map(|(i, &c)| info(i as NodeId + 1, c)).collect();
    let map = initial_map(1, &nodes, shards, replicas).expect("a valid founding map");
    PlanInput::from_map(&map, |_| NodeState::Up, |s| 1000 + u64::from(s))
}

fn join(input: &mut PlanInput, id: NodeId, cores: u16) {
    input.nodes.push(PlanNode { id, cores, state: NodeState::Up });
}

fn set_state(input: &mut PlanInput, id: NodeId, state: NodeState) {
    input.nodes.iter_mut().filter(|n| n.id == id).for_each(|n| n.state = state);
}

fn state_of(input: &PlanInput, id: NodeId) -> NodeState {
    input.nodes.iter().find(|n| n.id == id).map(|n| n.state).expect("a known node")
}

fn holders(shard: &PlanShard) -> BTreeSet<NodeId> {
    shard.replicas.iter().map(|r| r.node).collect()
}

/// Replicas per node id.
fn counts(shards: &[PlanShard]) -> std::collections::BTreeMap<NodeId, u64> {
    let mut counts = std::collections::BTreeMap::new();
    shards.iter().flat_map(|s| &s.replicas).for_each(|r| *counts.entry(r.node).or_insert(0) += 1);
    counts
}

/// Nodes new to placement: up and holding nothing (the planner's "changed" joiners).
fn new_nodes(input: &PlanInput) -> BTreeSet<NodeId> {
    let held = counts(&input.shards);
    input.nodes.iter().filter(|n| n.state == NodeState::Up && !held.contains_key(&n.id)).map(|n| n.id).collect()
}

/// Up nodes holding replicas: the unchanged ones.
fn unchanged_nodes(input: &PlanInput) -> BTreeSet<NodeId> {
    let held = counts(&input.shards);
    input.nodes.iter().filter(|n| n.state == NodeState::Up && held.contains_key(&n.id)).map(|n| n.id).collect()
}

/// The test's own oracle for targets: per up node id, the floor and ceiling of its
/// core-weighted share of the replicas up nodes hold, a node taking at most one
/// replica of each shard that up nodes hold (shares above that cap are cut and
/// the rest shared again). No manual moves.
fn targets(input: &PlanInput) -> Vec<(NodeId, u64, u64)> {
    let down: BTreeSet<NodeId> = input.nodes.iter().filter(|n| n.state == NodeState::Down).map(|n| n.id).collect();
    let demand: Vec<u64> = input
        .shards
        .iter()
        .map(|s| (s.replicas.len() - s.replicas.iter().filter(|r| down.contains(&r.node)).count()) as u64)
        .collect();
    let cap = demand.iter().filter(|&&d| d > 0).count() as u64;
    let up: Vec<&PlanNode> = input.nodes.iter().filter(|n| n.state == NodeState::Up).collect();
    let mut capped: BTreeSet<NodeId> = BTreeSet::new();
    loop {
        let rest = demand.iter().sum::<u64>() - cap * capped.len() as u64;
        let weight: u64 = up.iter().filter(|n| !capped.contains(&n.id)).map(|n| u64::from(n.cores)).sum();
        let newly: Vec<NodeId> = up
            .iter()
            .filter(|n| !capped.contains(&n.id) && rest * u64::from(n.cores) > cap * weight)
            .map(|n| n.id)
            .collect();
        if newly.is_empty() {
            return up
                .iter()
                .map(|n| match capped.contains(&n.id) {
                    true => (n.id, cap, cap),
                    false => {
                        let share = rest * u64::from(n.cores);
                        (n.id, share / weight, share.div_ceil(weight))
                    }
                })
                .collect();
        }
        capped.extend(newly);
    }
}

/// Replays the moves on the input's shards; returns them by shard id.
fn apply(input: &PlanInput, plan: &Plan) -> Vec<PlanShard> {
    let mut shards = input.shards.clone();
    shards.sort_by_key(|s| s.id);
    for m in &plan.moves {
        let shard = shards.iter_mut().find(|s| s.id == m.shard).expect("a move of a known shard");
        let slot = shard.replicas.iter_mut().find(|r| **r == m.from).expect("a move from a replica that exists");
        *slot = m.to;
    }
    shards.iter_mut().for_each(|s| s.replicas.sort());
    shards
}

/// Moves whose source and target are both unchanged nodes (core moves aside).
fn moves_between_unchanged(input: &PlanInput, plan: &Plan) -> usize {
    let unchanged = unchanged_nodes(input);
    plan.moves
        .iter()
        .filter(|m| m.from.node != m.to.node && unchanged.contains(&m.from.node) && unchanged.contains(&m.to.node))
        .count()
}

/// Everything a plan must satisfy whatever the input.
fn assert_valid(input: &PlanInput, plan: &Plan) {
    let after = apply(input, plan);
    let mut expected = plan.after.clone();
    expected.iter_mut().for_each(|s| s.leader = None);
    let mut replayed = after.clone();
    replayed.iter_mut().for_each(|s| s.leader = None);
    assert_eq!(replayed, expected, "the moves lead to the placement the plan reports");
    let mut input_shards = input.shards.clone();
    input_shards.sort_by_key(|s| s.id);
    for (shard, before) in plan.after.iter().zip(&input_shards) {
        assert_eq!(shard.replicas.len(), input.replication_factor, "shard {} at its replication factor", shard.id);
        assert_eq!(holders(shard).len(), input.replication_factor, "shard {} on distinct nodes", shard.id);
        for r in &shard.replicas {
            let node = input.nodes.iter().find(|n| n.id == r.node).expect("a known node");
            assert!(r.core < node.cores, "shard {}: core {} of node {} exists", shard.id, r.core, r.node);
            assert!(!node.state.leaves(), "shard {} left on leaving node {}", shard.id, r.node);
            if node.state == NodeState::Down {
                assert!(before.replicas.contains(r), "down node {} received shard {}", r.node, shard.id);
            }
        }
        for r in before.replicas.iter().filter(|r| state_of(input, r.node) == NodeState::Down) {
            assert!(shard.replicas.contains(r), "down node {} kept shard {}", r.node, shard.id);
        }
        if let Some(leader) = shard.leader {
            assert!(holders(shard).contains(&leader), "shard {} led by one of its replicas", shard.id);
        }
    }
    let mut shards = BTreeSet::new();
    assert!(plan.next_moves(usize::MAX).iter().all(|m| shards.insert(m.shard)), "next moves name distinct shards");
    assert_eq!(plan.bytes, plan.moves.iter().map(|m| m.bytes).sum::<u64>());
    assert!(plan.bytes >= plan.minimal_bytes, "bytes {} below the lower bound {}", plan.bytes, plan.minimal_bytes);
    for node in input.nodes.iter().filter(|n| n.state == NodeState::Up) {
        let mut per_core = vec![0u64; usize::from(node.cores)];
        plan.after
            .iter()
            .flat_map(|s| &s.replicas)
            .filter(|r| r.node == node.id)
            .for_each(|r| per_core[usize::from(r.core)] += 1);
        let spread = per_core.iter().max().copied().unwrap_or(0) - per_core.iter().min().copied().unwrap_or(0);
        assert!(spread <= 1, "node {} replicas per core {per_core:?}", node.id);
    }
}

/// Asserts every up node ends within its target.
fn assert_balanced(input: &PlanInput, plan: &Plan) {
    assert!(plan.balanced, "the planner says it reached balance");
    let held = counts(&plan.after);
    for (id, lo, hi) in targets(input) {
        let n = held.get(&id).copied().unwrap_or(0);
        assert!((lo..=hi).contains(&n), "node {id} holds {n}, target {lo}..={hi}");
    }
}

// ---- Lab cases ----

#[test]
fn a_joining_node_takes_its_share_and_only_moves_onto_it_happen() {
    let mut input = founded(&[2, 2, 2], 64, 3);
    join(&mut input, 4, 2);
    let plan = plan(&input).unwrap();
    assert_valid(&input, &plan);
    assert_balanced(&input, &plan);
    // 192 replicas over 8 cores: 48 per node, all 48 of node 4's arrive.
    assert_eq!(counts(&plan.after).values().copied().collect::<Vec<_>>(), vec![48, 48, 48, 48]);
    assert_eq!(plan.node_moves(), 48);
    assert!(plan.moves.iter().all(|m| m.to.node == 4 && m.reason == MoveReason::Rebalance), "{:?}", plan.moves);
    assert!(plan.moves.iter().all(|m| m.reason != MoveReason::Core), "the departures keep cores even");
    // Keeping cores even may cost a slightly larger replica than the smallest.
    assert!(plan.bytes * 100 <= plan.minimal_bytes * 105, "{} bytes against {}", plan.bytes, plan.minimal_bytes);
    assert!(plan.leaders_balanced);
    let led = plan.after.iter().filter(|s| s.leader == Some(4)).count();
    assert_eq!(led, 16, "the new node leads its share");
    let per_core =
        [0, 1].map(|c| plan.after.iter().flat_map(|s| &s.replicas).filter(|r| r.node == 4 && r.core == c).count());
    assert_eq!(per_core, [24, 24]);
}

#[test]
fn a_draining_node_only_loses_replicas() {
    let mut input = founded(&[1, 1, 1, 1], 64, 3);
    set_state(&mut input, 4, NodeState::Draining);
    let plan = plan(&input).unwrap();
    assert_valid(&input, &plan);
    assert_balanced(&input, &plan);
    assert_eq!(plan.node_moves(), 48, "exactly node 4's replicas move");
    assert!(plan.moves.iter().all(|m| m.from.node == 4 && m.reason == MoveReason::Drain));
    assert_eq!(plan.bytes, plan.minimal_bytes);
    assert!(plan.leader_transfers.iter().all(|t| t.to != 4));
}

#[test]
fn a_dead_node_is_re_replicated_from_first() {
    let mut input = founded(&[1, 2, 1, 2, 1], 40, 3);
    set_state(&mut input, 2, NodeState::Dead);
    let plan = plan(&input).unwrap();
    assert_valid(&input, &plan);
    assert_balanced(&input, &plan);
    let lost = input.shards.iter().filter(|s| holders(s).contains(&2)).count();
    assert_eq!(plan.node_moves(), lost);
    assert!(plan.moves.iter().all(|m| m.from.node == 2 && m.reason == MoveReason::Rereplicate));
    assert_eq!(moves_between_unchanged(&input, &plan), 0);
}

#[test]
fn a_join_and_a_leave_in_one_change_move_straight_from_one_to_the_other() {
    let mut input = founded(&[2, 2, 2, 2], 64, 3);
    set_state(&mut input, 4, NodeState::Removed);
    join(&mut input, 5, 2);
    let plan = plan(&input).unwrap();
    assert_valid(&input, &plan);
    assert_balanced(&input, &plan);
    assert_eq!(plan.node_moves(), 48, "node 4's replicas go, node 5's arrive, one move each");
    assert!(plan.moves.iter().all(|m| m.from.node == 4 && m.to.node == 5), "{:?}", plan.moves);
}

#[test]
fn many_nodes_joining_and_leaving_move_no_replica_between_unchanged_nodes() {
    let mut input = founded(&[1, 2, 3, 1, 2, 2], 128, 3);
    set_state(&mut input, 2, NodeState::Dead);
    set_state(&mut input, 5, NodeState::Draining);
    join(&mut input, 7, 4);
    join(&mut input, 8, 1);
    join(&mut input, 9, 2);
    let plan = plan(&input).unwrap();
    assert_valid(&input, &plan);
    assert_balanced(&input, &plan);
    assert_eq!(moves_between_unchanged(&input, &plan), 0, "{:?}", plan.moves);
    // Each leaving replica moves once and each new replica arrives once; no relays.
    let leaving = input.shards.iter().flat_map(|s| &s.replicas).filter(|r| [2, 5].contains(&r.node)).count();
    let arriving = plan.after.iter().flat_map(|s| &s.replicas).filter(|r| [7, 8, 9].contains(&r.node)).count();
    assert_eq!(plan.node_moves(), leaving.max(arriving));
}

#[test]
fn of_equally_short_plans_the_one_without_moves_between_unchanged_nodes_wins() {
    // Node 1 must shed 3 (to 5 of 12); node 3 may take 2 or 3 and node 2 4 or 5:
    // giving node 2 one would be as short, but moves data between unchanged nodes.
    let nodes = vec![
        PlanNode { id: 1, cores: 2, state: NodeState::Up },
        PlanNode { id: 2, cores: 2, state: NodeState::Up },
        PlanNode { id: 3, cores: 1, state: NodeState::Up },
    ];
    let shards = (0..12)
        .map(|s| {
            let replica = Replica { node: if s < 8 { 1 } else { 2 }, core: (s % 2) as u16 };
            PlanShard { id: s, replicas: vec![replica], leader: Some(replica.node), bytes: 10 }
        })
        .collect();
    let input = PlanInput { nodes, shards, replication_factor: 1, manual: Vec::new() };
    let plan = plan(&input).unwrap();
    assert_valid(&input, &plan);
    assert_balanced(&input, &plan);
    assert_eq!(plan.node_moves(), 3);
    assert!(plan.moves.iter().all(|m| m.from.node == 1 && m.to.node == 3), "{:?}", plan.moves);
}

#[test]
fn a_down_node_keeps_its_replicas_and_receives_none() {
    let mut input = founded(&[1, 1, 1, 1], 32, 2);
    set_state(&mut input, 3, NodeState::Down);
    join(&mut input, 5, 1);
    let plan = plan(&input).unwrap();
    assert_valid(&input, &plan);
    assert_balanced(&input, &plan);
    assert_eq!(counts(&plan.after)[&3], 16);
    assert!(plan.moves.iter().all(|m| m.from.node != 3 && m.to.node != 3));
    assert!(plan.after.iter().all(|s| s.leader != Some(3)), "a down node leads nothing");
}

#[test]
fn a_balanced_map_needs_no_plan() {
    let input = founded(&[1, 2, 3], 50, 2);
    let plan = plan(&input).unwrap();
    assert!(plan.moves.is_empty(), "{:?}", plan.moves);
    assert!(plan.leader_transfers.is_empty(), "{:?}", plan.leader_transfers);
    assert_eq!((plan.bytes, plan.minimal_bytes), (0, 0));
}

#[test]
fn smaller_shards_move_when_the_count_allows() {
    let mut input = founded(&[1, 1], 8, 1);
    input.shards.iter_mut().for_each(|s| s.bytes = [900, 10, 20, 800, 700, 30, 40, 600][s.id as usize]);
    join(&mut input, 3, 2);
    let plan = plan(&input).unwrap();
    assert_valid(&input, &plan);
    assert_balanced(&input, &plan);
    assert_eq!(plan.node_moves(), 4);
    assert_eq!(plan.bytes, plan.minimal_bytes);
    // Nodes 1 and 2 hold the even and the odd shards; each gives its two smallest.
    assert_eq!(plan.bytes, 20 + 40 + 10 + 30);
}

/// Three nodes hold every one of 8 shards and a fourth joins: it takes 6
/// distinct shards, so the 6 smallest move. The plan's bound lets each giver
/// give its own 2 smallest, the same 2 shards thrice (unreachable); the exact
/// minimal is the plan's bytes.
#[test]
fn the_exact_minimal_is_what_a_join_to_full_replication_must_move() {
    let mut input = founded(&[1, 1, 1], 8, 3);
    input.shards.iter_mut().for_each(|s| s.bytes = [900, 10, 20, 800, 700, 30, 40, 600][s.id as usize]);
    join(&mut input, 4, 1);
    let plan = plan(&input).unwrap();
    assert_balanced(&input, &plan);
    assert_eq!(plan.node_moves(), 6);
    assert_eq!(plan.bytes, 10 + 20 + 30 + 40 + 600 + 700);
    assert_eq!(plan.minimal_bytes, 3 * (10 + 20));
    assert_eq!(minimal_bytes_exact(&input), Ok(plan.bytes));
}

#[test]
fn too_few_nodes_for_the_replication_factor_is_an_error() {
    let mut input = founded(&[1, 1, 1], 8, 3);
    set_state(&mut input, 1, NodeState::Draining);
    assert_eq!(plan(&input), Err(PlanError::NotEnoughNodes { shard: 0, needed: 3, eligible: 2 }));
    set_state(&mut input, 1, NodeState::Down);
    assert!(plan(&input).is_ok(), "a down node still counts towards its shards");
}

#[test]
fn malformed_inputs_are_named_errors() {
    let good = founded(&[1, 1, 1], 4, 2);
    let mut bad = good.clone();
    bad.replication_factor = 3;
    assert_eq!(plan(&bad), Err(PlanError::ShardReplicas { shard: 0, replicas: 2, expected: 3 }));
    let mut bad = good.clone();
    bad.shards[1].replicas[1] = Replica { node: 9, core: 0 };
    assert_eq!(plan(&bad), Err(PlanError::UnknownNode { shard: 1, node: 9 }));
    let mut bad = good.clone();
    bad.shards[2].replicas[1] = bad.shards[2].replicas[0];
    assert!(matches!(plan(&bad), Err(PlanError::DuplicateReplica { shard: 2, .. })));
    let mut bad = good.clone();
    bad.shards[0].replicas[0].core = 1;
    assert!(matches!(plan(&bad), Err(PlanError::CoreOutOfRange { shard: 0, core: 1, .. })));
    let mut bad = good.clone();
    bad.nodes.push(PlanNode { id: 2, cores: 1, state: NodeState::Up });
    assert_eq!(plan(&bad), Err(PlanError::Node(PlacementError::DuplicateNode { id: 2 })));
    let mut bad = good.clone();
    bad.shards.push(bad.shards[0].clone());
    assert_eq!(plan(&bad), Err(PlanError::DuplicateShard { shard: 0 }));
    let mut bad = good.clone();
    bad.replication_factor = 0;
    assert_eq!(plan(&bad), Err(PlanError::ReplicationFactor { replicas: 0 }));
    let mut bad = good;
    bad.nodes[0].cores = 0;
    assert_eq!(plan(&bad), Err(PlanError::Node(PlacementError::NodeCores { id: 1, cores: 0 })));
}

#[test]
fn a_manual_move_is_planned_with_the_automatic_ones() {
    let mut input = founded(&[2, 2, 2], 64, 3);
    join(&mut input, 4, 2);
    input.manual.push(ManualMove { shard: 5, from: 1, to: 4 });
    let plan = plan(&input).unwrap();
    assert_valid(&input, &plan);
    assert_balanced(&input, &plan);
    assert_eq!(plan.node_moves(), 48, "the manual move counts towards node 4's share");
    let manual: Vec<_> = plan.moves.iter().filter(|m| m.reason == MoveReason::Manual).collect();
    assert_eq!(manual.len(), 1);
    assert_eq!((manual[0].shard, manual[0].from.node, manual[0].to.node), (5, 1, 4));
    assert!(plan.moves.iter().all(|m| m.to.node == 4));
}

#[test]
fn a_manual_move_in_a_balanced_map_is_offset_not_undone() {
    let mut input = founded(&[1, 1, 1], 6, 1);
    let shard = input.shards.iter().find(|s| holders(s).contains(&1)).map(|s| s.id).unwrap();
    input.manual.push(ManualMove { shard, from: 1, to: 2 });
    let plan = plan(&input).unwrap();
    assert_valid(&input, &plan);
    assert_balanced(&input, &plan);
    assert_eq!(plan.node_moves(), 2);
    assert!(plan.moves.iter().any(|m| m.shard == shard && m.reason == MoveReason::Manual));
    assert!(plan.moves.iter().any(|m| m.shard != shard && m.from.node == 2 && m.to.node == 1));
    assert_eq!(plan.after.iter().find(|s| s.id == shard).map(holders), Some(BTreeSet::from([2])));
}

#[test]
fn bad_manual_moves_are_refused() {
    let input = founded(&[1, 1, 1], 4, 2);
    let on_1 = input.shards.iter().find(|s| holders(s) == BTreeSet::from([1, 2])).map(|s| s.id).unwrap();
    let refused = |m: ManualMove| {
        let mut with = input.clone();
        with.manual.push(m);
        match plan(&with) {
            Err(PlanError::Manual { why, .. }) => why,
            other => panic!("{m:?} was not refused: {other:?}"),
        }
    };
    assert_eq!(refused(ManualMove { shard: 99, from: 1, to: 3 }), ManualFault::UnknownShard);
    assert_eq!(refused(ManualMove { shard: on_1, from: 3, to: 1 }), ManualFault::SourceMissing);
    assert_eq!(refused(ManualMove { shard: on_1, from: 1, to: 2 }), ManualFault::TargetHolds);
    assert_eq!(refused(ManualMove { shard: on_1, from: 1, to: 7 }), ManualFault::TargetNotUp);
    let mut twice = input.clone();
    twice.manual = vec![ManualMove { shard: on_1, from: 1, to: 3 }, ManualMove { shard: on_1, from: 2, to: 3 }];
    assert!(matches!(plan(&twice), Err(PlanError::Manual { why: ManualFault::Repeated, .. })));
}

#[test]
fn next_moves_are_bounded_one_per_shard_and_re_replication_first() {
    let mut input = founded(&[1, 1, 1, 1, 1], 20, 3);
    set_state(&mut input, 1, NodeState::Dead);
    set_state(&mut input, 2, NodeState::Draining);
    join(&mut input, 6, 1);
    let plan = plan(&input).unwrap();
    assert_valid(&input, &plan);
    let next = plan.next_moves(4);
    assert_eq!(next.len(), 4);
    assert!(next.iter().all(|m| m.reason == MoveReason::Rereplicate), "{next:?}");
    assert_eq!(next.iter().map(|m| m.shard).collect::<BTreeSet<ShardId>>().len(), 4);
    assert!(plan.next_moves(0).is_empty());
    let all = plan.next_moves(usize::MAX);
    let shards_moving: BTreeSet<ShardId> = plan.moves.iter().map(|m| m.shard).collect();
    assert_eq!(all.len(), shards_moving.len());
}

#[test]
fn leadership_leaves_a_draining_node_by_transfer() {
    let mut input = founded(&[1, 1, 1, 1], 12, 3);
    set_state(&mut input, 1, NodeState::Draining);
    let plan = plan(&input).unwrap();
    assert!(plan.leaders_balanced);
    for s in input.shards.iter().filter(|s| s.leader == Some(1)) {
        let t = plan.leader_transfers.iter().find(|t| t.shard == s.id).expect("a transfer off node 1");
        assert_eq!(t.from, Some(1));
        assert_ne!(t.to, 1);
    }
    let led = |id| plan.after.iter().filter(|s| s.leader == Some(id)).count();
    assert_eq!([led(2), led(3), led(4)], [4, 4, 4]);
}

// ---- Properties over random maps ----

/// A small random cluster and a change to it: `old` nodes holding random
/// replicas, some of them leaving or down afterwards, and `new` nodes joining.
#[derive(Debug, Clone)]
struct Change {
    input: PlanInput,
}

fn small_change() -> impl Strategy<Value = Change> {
    (2usize..=4, 0usize..=1, 1usize..=4, 1usize..=3).prop_flat_map(|(old, new, shards, rf)| {
        let rf = rf.min(old);
        (
            proptest::collection::vec(1u16..=2, old + new),
            proptest::collection::vec(proptest::sample::subsequence((0..old).collect::<Vec<_>>(), rf), shards),
            proptest::collection::vec(0u8..8, old),
            proptest::collection::vec(1u64..100, shards),
            proptest::collection::vec(any::<prop::sample::Index>(), shards),
        )
            .prop_map(move |(cores, placed, states, sizes, leader)| {
                let state = |s: u8| match s {
                    4 => NodeState::Down,
                    5 => NodeState::Draining,
                    6 => NodeState::Dead,
                    7 => NodeState::Removed,
                    _ => NodeState::Up,
                };
                let nodes = (0..old + new)
                    .map(|i| PlanNode {
                        id: 3 * i as NodeId + 2,
                        cores: cores[i],
                        state: if i < old { state(states[i]) } else { NodeState::Up },
                    })
                    .collect();
                let shards = placed
                    .iter()
                    .enumerate()
                    .map(|(s, on)| {
                        let replicas: Vec<Replica> = on
                            .iter()
                            .map(|&i| Replica { node: 3 * i as NodeId + 2, core: (s % 2) as u16 % cores[i] })
                            .collect();
                        PlanShard {
                            id: 10 + s as ShardId,
                            leader: Some(replicas[leader[s].index(rf)].node),
                            replicas,
                            bytes: sizes[s],
                        }
                    })
                    .collect();
                Change { input: PlanInput { nodes, shards, replication_factor: rf, manual: Vec::new() } }
            })
    })
}

/// The brute force: every placement of every shard on the nodes that may hold
/// it. Returns, among the balanced placements, the fewest moves and, among
/// those, the fewest moves that must join two unchanged nodes; None when no
/// placement is balanced; Err when some shard cannot be placed at all.
fn brute_force(input: &PlanInput) -> Result<Option<(usize, usize)>, ()> {
    let up: Vec<NodeId> = input.nodes.iter().filter(|n| n.state == NodeState::Up).map(|n| n.id).collect();
    let new = new_nodes(input);
    let unchanged = unchanged_nodes(input);
    let mut options: Vec<Vec<BTreeSet<NodeId>>> = Vec::new();
    for shard in &input.shards {
        let down: BTreeSet<NodeId> =
            holders(shard).into_iter().filter(|&n| state_of(input, n) == NodeState::Down).collect();
        let need = input.replication_factor - down.len();
        if need > up.len() {
            return Err(());
        }
        let mut sets = Vec::new();
        for mask in 0u32..(1 << up.len()) {
            if mask.count_ones() as usize == need {
                let mut set = down.clone();
                set.extend((0..up.len()).filter(|&b| mask & (1 << b) != 0).map(|b| up[b]));
                sets.push(set);
            }
        }
        options.push(sets);
    }
    let bounds = targets(input);
    let mut best: Option<(usize, usize)> = None;
    let mut pick = vec![0usize; options.len()];
    loop {
        let mut held = std::collections::BTreeMap::new();
        let (mut moves, mut between) = (0, 0);
        for (s, shard) in input.shards.iter().enumerate() {
            let before = holders(shard);
            let after = &options[s][pick[s]];
            after.iter().for_each(|&n| *held.entry(n).or_insert(0u64) += 1);
            let gained: Vec<NodeId> = after.difference(&before).copied().collect();
            let lost: Vec<NodeId> = before.difference(after).copied().collect();
            moves += gained.len();
            let lost_unchanged = lost.iter().filter(|n| unchanged.contains(n)).count();
            let gained_new = gained.iter().filter(|n| new.contains(n)).count();
            between += lost_unchanged.saturating_sub(gained_new);
        }
        let balanced = bounds.iter().all(|&(id, lo, hi)| (lo..=hi).contains(&held.get(&id).copied().unwrap_or(0)));
        if balanced && best.is_none_or(|b| (moves, between) < b) {
            best = Some((moves, between));
        }
        // Next combination, odometer style.
        let Some(s) = (0..pick.len()).find(|&s| pick[s] + 1 < options[s].len()) else { return Ok(best) };
        pick[s] += 1;
        (0..s).for_each(|t| pick[t] = 0);
    }
}

/// Whether the change only adds nodes, or only takes nodes away (or neither).
fn one_sided(input: &PlanInput) -> bool {
    new_nodes(input).is_empty() || !input.nodes.iter().any(|n| n.state.leaves())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Valid, balanced where balance is reachable, with the brute force's move
    /// count; and no move between unchanged nodes that the brute force avoids.
    #[test]
    fn small_plans_match_the_brute_force(change in small_change()) {
        let input = &change.input;
        match (plan(input), brute_force(input)) {
            (Err(PlanError::NotEnoughNodes { .. }), Err(())) => {}
            (Ok(plan), Ok(best)) => {
                assert_valid(input, &plan);
                if let Some((moves, between)) = best {
                    assert_balanced(input, &plan);
                    prop_assert_eq!(plan.node_moves(), moves, "fewest moves; plan {:?}", plan.moves);
                    let planned_between = moves_between_unchanged(input, &plan);
                    prop_assert!(planned_between >= between);
                    if one_sided(input) {
                        prop_assert_eq!(planned_between, between, "needless moves between unchanged nodes");
                    }
                } else {
                    prop_assert!(!plan.balanced);
                }
            }
            (planned, brute) => prop_assert!(false, "planner {:?} but brute force {:?}", planned, brute),
        }
    }

    /// The exact minimal bytes lie between the plan's lower bound and the bytes
    /// the plan moves between nodes.
    #[test]
    fn exact_minimal_bytes_lie_between_the_bound_and_the_plan(change in small_change()) {
        let input = &change.input;
        if let (Ok(plan), Ok(exact)) = (plan(input), minimal_bytes_exact(input)) {
            let between = |m: &&ReplicaMove| m.from.node != m.to.node;
            let core_bytes: u64 = plan.moves.iter().filter(|m| !between(m)).map(|m| m.bytes).sum();
            let node_bytes: u64 = plan.moves.iter().filter(between).map(|m| m.bytes).sum();
            prop_assert!(plan.minimal_bytes - core_bytes <= exact, "bound {} exact {exact}", plan.minimal_bytes);
            prop_assert!(exact <= node_bytes, "exact {exact} plan {node_bytes}: {:?}", plan.moves);
        }
    }

    /// The same change listed in another order gives the same plan.
    #[test]
    fn plans_do_not_depend_on_input_order(change in small_change(), rotate in 0usize..8) {
        let input = change.input;
        let mut shuffled = input.clone();
        shuffled.nodes.reverse();
        let len = shuffled.shards.len();
        shuffled.shards.rotate_left(rotate % len);
        shuffled.shards.iter_mut().for_each(|s| s.replicas.reverse());
        prop_assert_eq!(plan(&input), plan(&shuffled));
    }

    /// Larger balanced clusters: joins only move replicas onto the new nodes, and
    /// the result is balanced. (After a leave, moves between unchanged nodes are
    /// sometimes needed, when a leaving replica's shard is already on the nodes
    /// that must grow; the brute force above checks those are only the needed ones.)
    #[test]
    fn joins_and_leaves_of_founded_maps_touch_only_changed_nodes(
        cores in proptest::collection::vec(1u16..=4, 3..=7),
        joining in proptest::collection::vec(1u16..=4, 0..=3),
        leaving in proptest::collection::vec(0u8..3, 3..=7),
        shards in 8u32..=96,
        rf in 1usize..=3,
        sizes in proptest::collection::vec(1u64..1_000_000, 96),
    ) {
        let mut input = founded(&cores, shards, rf);
        input.shards.iter_mut().for_each(|s| s.bytes = sizes[s.id as usize]);
        let first_new = cores.len() as NodeId + 1;
        for (k, &c) in joining.iter().enumerate() {
            join(&mut input, first_new + k as NodeId, c);
        }
        // Leave only while enough nodes stay up for the replication factor.
        let mut up = input.nodes.len();
        for (i, &l) in leaving.iter().enumerate().take(cores.len()) {
            let state = [NodeState::Draining, NodeState::Dead, NodeState::Removed][usize::from(l)];
            if up > rf && (i + l as usize).is_multiple_of(3) {
                set_state(&mut input, i as NodeId + 1, state);
                up -= 1;
            }
        }
        let plan = plan(&input).unwrap();
        assert_valid(&input, &plan);
        assert_balanced(&input, &plan);
        let leaves = input.nodes.iter().any(|n| n.state.leaves());
        if !leaves {
            prop_assert!(plan.moves.iter().all(|m| m.from.node == m.to.node || m.to.node >= first_new), "{:?}", plan.moves);
        }
        let leaving_replicas =
            input.shards.iter().flat_map(|s| &s.replicas).filter(|r| state_of(&input, r.node).leaves()).count();
        let off_leaving = plan.moves.iter().filter(|m| state_of(&input, m.from.node).leaves()).count();
        prop_assert_eq!(off_leaving, leaving_replicas, "each leaving replica moves once");
        prop_assert!(plan.leaders_balanced);
    }
}
