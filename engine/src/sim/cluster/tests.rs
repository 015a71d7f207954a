//! The cluster simulator's own checks, each shown to catch a planted fault.

use super::*;

#[test]
fn the_map_spreads_preferred_leaders_and_groups_over_nodes_and_cores() {
    let map = build_map(3, 2, 8, 3);
    let preferred: std::collections::BTreeSet<NodeId> = map.shards.iter().map(|s| s.replicas[0].node).collect();
    assert_eq!(preferred.len(), 3, "every node is some shard's preferred leader");
    let mut cores = std::collections::BTreeSet::new();
    for s in &map.shards {
        let nodes: std::collections::BTreeSet<NodeId> = s.replicas.iter().map(|r| r.node).collect();
        assert_eq!(nodes.len(), 3, "replicas on distinct nodes");
        cores.extend(s.replicas.iter().copied());
    }
    assert_eq!(cores.len(), 6, "every core of every node holds a group");
    let keys = pick_keys(&map, 6);
    let shards: std::collections::BTreeSet<ShardId> = keys.iter().map(|k| map.shard_of(k)).collect();
    assert_eq!(shards.len(), 6, "the keys spread over shards");
}

/// The replica comparison catches a replica whose state differs at an equal
/// applied index: plant another replica's digest where shard 0 will be.
#[test]
fn a_replica_with_another_state_at_the_same_index_is_caught() {
    let mut c = Cluster::new(ClusterConfig::new(11, 3, 2));
    c.run_for(500);
    let applied = (1..=3)
        .filter_map(|n| c.core(Replica { node: n, core: c.map.core_of(0, n)? }))
        .filter_map(|core| core.raft_status(0))
        .map(|st| st.applied)
        .max()
        .expect("shard 0 runs");
    for index in applied + 1..applied + 50 {
        c.digests.insert((0, index), (99, 0xbad));
    }
    c.run_for(1_000);
    let failure = c.failure().expect("the planted divergence is caught");
    assert_eq!(failure.kind, FailureKind::Diverged, "{failure}");
    assert!(failure.to_string().starts_with("CORE_SEED=11 "), "{failure}");
}

/// The end check catches an acknowledged write no replica holds: plant a
/// version above any the run wrote.
#[test]
fn an_acknowledged_write_missing_from_the_replicas_is_caught() {
    let mut c = Cluster::new(ClusterConfig::new(12, 3, 1));
    c.run_for(500);
    let key = c.keys[0].clone();
    c.history.push(Operation {
        client: 99,
        invoke_time: 0,
        return_time: Some(1),
        call: Call::Put { key, value: b"never written".to_vec() },
        outcome: check::Outcome::Written { version: u64::MAX >> 2 },
    });
    let failure = c.finish().expect_err("the lost write is caught");
    assert_eq!(failure.kind, FailureKind::AckedWriteLost, "{failure}");
}
