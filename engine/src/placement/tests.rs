//! Placement rules, each checked by name; then all of them over random clusters.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

fn node(id: NodeId, cores: u16) -> NodeInfo {
    NodeInfo { id, addr: format!("127.0.0.1:{}", 7000 + 100 * id), cores, state: corekv_rpc::map::NodeState::Up }
}

fn nodes(cores: &[u16]) -> Vec<NodeInfo> {
    cores.iter().enumerate().map(|(i, &c)| node(i as NodeId + 1, c)).collect()
}

/// Per node id: (replicas held, shards led), per core: (replicas, leaders).
struct Counts {
    replicas: Vec<u64>,
    leaders: Vec<u64>,
    replicas_per_core: Vec<Vec<u64>>,
    leaders_per_core: Vec<Vec<u64>>,
}

fn counts(map: &ClusterMap) -> Counts {
    let index = |id: NodeId| map.nodes.iter().position(|n| n.id == id).expect("replica on a known node");
    let n = map.nodes.len();
    let mut c = Counts {
        replicas: vec![0; n],
        leaders: vec![0; n],
        replicas_per_core: map.nodes.iter().map(|n| vec![0; n.cores as usize]).collect(),
        leaders_per_core: map.nodes.iter().map(|n| vec![0; n.cores as usize]).collect(),
    };
    for shard in &map.shards {
        for (slot, r) in shard.replicas.iter().enumerate() {
            let i = index(r.node);
            c.replicas[i] += 1;
            c.replicas_per_core[i][r.core as usize] += 1;
            if slot == 0 {
                c.leaders[i] += 1;
                c.leaders_per_core[i][r.core as usize] += 1;
            }
        }
    }
    c
}

/// Floor and ceiling of each party's water-filled share of `total` (the oracle:
/// shares above a cap are cut to it and the excess shared again by weight).
fn share_bounds(total: u64, weights: &[u64], caps: &[u64]) -> Vec<(u64, u64)> {
    let mut capped = BTreeSet::new();
    loop {
        let rest = total - capped.iter().map(|&i| caps[i]).sum::<u64>();
        let weight_sum: u64 = (0..weights.len()).filter(|i| !capped.contains(i)).map(|i| weights[i]).sum();
        let newly: Vec<usize> = (0..weights.len())
            .filter(|i| !capped.contains(i))
            .filter(|&i| rest * weights[i] > caps[i] * weight_sum)
            .collect();
        if newly.is_empty() {
            return (0..weights.len())
                .map(|i| {
                    if capped.contains(&i) {
                        (caps[i], caps[i])
                    } else {
                        let share = rest * weights[i];
                        (share / weight_sum, share.div_ceil(weight_sum))
                    }
                })
                .collect();
        }
        capped.extend(newly);
    }
}

fn spread(per_core: &[u64]) -> u64 {
    per_core.iter().max().unwrap() - per_core.iter().min().unwrap()
}

/// Every rule of the module header, asserted on one map.
fn assert_balanced(map: &ClusterMap, input: &[NodeInfo], shard_count: u32, replicas: usize) {
    assert_eq!(map.epoch, 1);
    assert_eq!(map.shard_count(), shard_count);
    assert!(map.nodes.windows(2).all(|w| w[0].id < w[1].id), "nodes sorted by id");
    assert_eq!(map.nodes.len(), input.len());
    for (s, shard) in map.shards.iter().enumerate() {
        assert_eq!(shard.replicas.len(), replicas, "shard {s} has {replicas} replicas");
        let distinct: BTreeSet<NodeId> = shard.replicas.iter().map(|r| r.node).collect();
        assert_eq!(distinct.len(), replicas, "shard {s} on distinct nodes: {:?}", shard.replicas);
        for r in &shard.replicas {
            assert!(r.core < map.node(r.node).unwrap().cores, "shard {s}: core {} exists", r.core);
        }
    }
    let c = counts(map);
    let weights: Vec<u64> = map.nodes.iter().map(|n| u64::from(n.cores)).collect();
    let shards = u64::from(shard_count);
    let total_cores: u64 = weights.iter().sum();

    let replica_bounds = share_bounds(shards * replicas as u64, &weights, &vec![shards; weights.len()]);
    let leader_bounds = share_bounds(shards, &weights, &c.replicas);
    // Where no cap binds, the shares are the plain core-weighted ones.
    let replicas_uncapped = weights.iter().all(|&w| replicas as u64 * w <= total_cores);
    let leaders_uncapped = (0..weights.len()).all(|i| shards * weights[i] <= c.replicas[i] * total_cores);
    for i in 0..weights.len() {
        let (lo, hi) = replica_bounds[i];
        assert!((lo..=hi).contains(&c.replicas[i]), "node {i}: {} replicas, share {lo}..={hi}", c.replicas[i]);
        let (lo, hi) = leader_bounds[i];
        assert!((lo..=hi).contains(&c.leaders[i]), "node {i}: leads {}, share {lo}..={hi}", c.leaders[i]);
        if replicas_uncapped {
            let share = shards * replicas as u64 * weights[i];
            assert!(c.replicas[i] >= share / total_cores && c.replicas[i] <= share.div_ceil(total_cores));
        }
        if leaders_uncapped {
            let share = shards * weights[i];
            assert!(c.leaders[i] >= share / total_cores && c.leaders[i] <= share.div_ceil(total_cores));
        }
        assert!(spread(&c.replicas_per_core[i]) <= 1, "node {i} replicas per core {:?}", c.replicas_per_core[i]);
        assert!(spread(&c.leaders_per_core[i]) <= 1, "node {i} leaders per core {:?}", c.leaders_per_core[i]);
    }
}

#[test]
fn three_equal_nodes_hold_every_shard_and_split_leaders() {
    let input = nodes(&[2, 2, 2]);
    let map = initial_map(7, &input, 64, 3).unwrap();
    assert_balanced(&map, &input, 64, 3);
    let c = counts(&map);
    assert_eq!(c.replicas, vec![64, 64, 64]);
    assert_eq!(c.replicas_per_core, vec![vec![32, 32]; 3]);
    assert_eq!(c.leaders.iter().sum::<u64>(), 64);
    assert!(c.leaders.iter().all(|&l| l == 21 || l == 22), "{:?}", c.leaders);
    assert_eq!(map.cluster_id, 7);
}

#[test]
fn replica_counts_follow_core_counts() {
    let input = nodes(&[1, 2, 3, 2]);
    let map = initial_map(1, &input, 64, 2).unwrap();
    assert_balanced(&map, &input, 64, 2);
    // 128 replicas over 8 cores: 16 per core.
    assert_eq!(counts(&map).replicas, vec![16, 32, 48, 32]);
    assert_eq!(counts(&map).leaders, vec![8, 16, 24, 16]);
}

#[test]
fn a_node_never_holds_two_replicas_of_a_shard_even_when_its_share_is_larger() {
    // Node 3's weighted share (15 of 20) exceeds the 10 shards: it holds every shard
    // once and the other two split the rest evenly.
    let input = nodes(&[1, 1, 6]);
    let map = initial_map(1, &input, 10, 2).unwrap();
    assert_balanced(&map, &input, 10, 2);
    assert_eq!(counts(&map).replicas, vec![5, 5, 10]);
}

#[test]
fn preferred_leaders_are_interleaved_not_in_runs() {
    let map = initial_map(1, &nodes(&[1, 1, 1]), 9, 1).unwrap();
    let leaders: Vec<NodeId> = map.shards.iter().map(|s| s.replicas[0].node).collect();
    assert_eq!(leaders, vec![1, 2, 3, 1, 2, 3, 1, 2, 3]);
}

#[test]
fn the_map_does_not_depend_on_input_order() {
    let input = nodes(&[1, 3, 2, 2, 1]);
    let mut reversed = input.clone();
    reversed.reverse();
    assert_eq!(initial_map(5, &input, 100, 3).unwrap(), initial_map(5, &reversed, 100, 3).unwrap());
}

#[test]
fn impossible_inputs_are_named_errors() {
    let three = nodes(&[1, 1, 1]);
    assert_eq!(initial_map(1, &three, 8, 4), Err(PlacementError::Replicas { replicas: 4, nodes: 3 }));
    assert_eq!(initial_map(1, &three, 8, 0), Err(PlacementError::Replicas { replicas: 0, nodes: 3 }));
    let many = nodes(&[1; 9]);
    assert_eq!(initial_map(1, &many, 8, 8), Err(PlacementError::Replicas { replicas: 8, nodes: 9 }));
    assert_eq!(initial_map(1, &three, 0, 1), Err(PlacementError::ShardCount { shards: 0 }));
    assert_eq!(initial_map(1, &three, SHARDS_MAX + 1, 1), Err(PlacementError::ShardCount { shards: SHARDS_MAX + 1 }));
    assert_eq!(initial_map(1, &[], 8, 1), Err(PlacementError::NodeCount { nodes: 0 }));
    let dup = vec![node(1, 1), node(2, 1), node(1, 2)];
    assert_eq!(initial_map(1, &dup, 8, 1), Err(PlacementError::DuplicateNode { id: 1 }));
    assert_eq!(initial_map(1, &[node(1, 0)], 8, 1), Err(PlacementError::NodeCores { id: 1, cores: 0 }));
    let big = node(1, NODE_CORES_MAX + 1);
    assert_eq!(initial_map(1, &[big], 8, 1), Err(PlacementError::NodeCores { id: 1, cores: NODE_CORES_MAX + 1 }));
    assert_eq!(initial_map(1, &[node(0, 1)], 8, 1), Err(PlacementError::NodeIdZero));
}

#[test]
fn the_cluster_id_hashes_the_normal_form() {
    let input = nodes(&[2, 2, 2]);
    let mut shuffled = input.clone();
    shuffled.swap(0, 2);
    let id = cluster_id(&input, 64, 3, "");
    assert_ne!(id, 0);
    assert_eq!(id, cluster_id(&shuffled, 64, 3, ""), "input order does not matter");
    let expected = "nodes=1=127.0.0.1:7100/2,2=127.0.0.1:7200/2,3=127.0.0.1:7300/2;shards=64;replicas=3;name=";
    assert_eq!(id, stable_hash(expected.as_bytes()));
    assert_ne!(id, cluster_id(&input, 32, 3, ""));
    assert_ne!(id, cluster_id(&input, 64, 2, ""));
    assert_ne!(id, cluster_id(&input, 64, 3, "prod"));
    assert_ne!(id, cluster_id(&nodes(&[2, 2, 1]), 64, 3, ""));
}

#[test]
fn apportion_gives_floor_or_ceiling_of_the_capped_share() {
    assert_eq!(apportion(10, &[1, 1, 1], &[10, 10, 10]), vec![4, 3, 3]);
    assert_eq!(apportion(20, &[1, 1, 6], &[10, 10, 10]), vec![5, 5, 10]);
    assert_eq!(apportion(3, &[5, 1], &[1, 3]), vec![1, 2]);
    assert_eq!(apportion(0, &[1, 2], &[0, 0]), vec![0, 0]);
}

// 256 cases by default; PROPTEST_CASES=N runs more.
proptest! {
    #[test]
    fn every_random_cluster_is_balanced(
        cores in proptest::collection::vec(1u16..=4, 1..=9),
        shard_count in 1u32..=300,
        replicas_pick in 1usize..=3,
        ids_from in 1u64..1000,
        rotate in 0usize..9,
    ) {
        let replicas = replicas_pick.min(cores.len());
        let mut input: Vec<NodeInfo> = cores
            .iter()
            .enumerate()
            .map(|(i, &c)| NodeInfo { id: ids_from + 7 * i as u64, addr: format!("10.0.0.{i}:7000"), cores: c, state: corekv_rpc::map::NodeState::Up })
            .collect();
        let map = initial_map(3, &input, shard_count, replicas).unwrap();
        assert_balanced(&map, &input, shard_count, replicas);
        let len = input.len();
        input.rotate_left(rotate % len);
        prop_assert_eq!(&map, &initial_map(3, &input, shard_count, replicas).unwrap());
    }

    #[test]
    fn wide_random_clusters_are_balanced(
        cores in proptest::collection::vec(1u16..=16, 1..=24),
        shard_count in 1u32..=2000,
        replicas_pick in 1usize..=REPLICAS_MAX,
    ) {
        let replicas = replicas_pick.min(cores.len());
        let input = nodes(&cores);
        let map = initial_map(3, &input, shard_count, replicas).unwrap();
        assert_balanced(&map, &input, shard_count, replicas);
    }
}

#[test]
fn the_largest_map_is_balanced_too() {
    let input: Vec<NodeInfo> = (1..=64).map(|i| node(i, (i % 7 + 1) as u16)).collect();
    let map = initial_map(1, &input, SHARDS_MAX, REPLICAS_MAX).unwrap();
    assert_balanced(&map, &input, SHARDS_MAX, REPLICAS_MAX);
}
