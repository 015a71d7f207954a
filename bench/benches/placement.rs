//! The meta leader's look at the placement (`drive::next_edits`): it plans the
//! whole map with the minimal-transfer planner and picks the next moves. It runs
//! on a core that also serves shards, every 50 ticks and soon after each newer
//! map (`meta::drive_gap_ticks` apart), so its cost is paid about once per map
//! change while a rebalance runs.
//! Measured right after a node joins and right after one dies, on a small
//! cluster (3 nodes of 2 cores, 64 shards) and a large one (16 nodes of 8 cores,
//! 1024 shards), 3 replicas each, with the shards' sizes known (as the meta
//! leader learns them from the shard leaders) and unknown (all 0).

use std::collections::BTreeSet;
use std::hint::black_box;

use corekv_engine::placement::{drive, initial_map, nodes};
use corekv_rpc::map::{ClusterMap, NodeInfo, NodeState};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn info(id: u64, cores: u16) -> NodeInfo {
    NodeInfo { id, addr: format!("10.0.0.{id}:7100"), cores, state: NodeState::Up }
}

/// The map once node `n + 1` joined `n` founders, rebalancing on.
fn joined(n: u64, cores: u16, shards: u32) -> ClusterMap {
    let founders: Vec<NodeInfo> = (1..=n).map(|id| info(id, cores)).collect();
    let founding = initial_map(1, &founders, shards, 3).expect("a valid cluster");
    let joined = nodes::add_node(&founding, &info(n + 1, cores)).expect("a new id").expect("a change");
    nodes::set_rebalance(&joined, true).expect("a change")
}

/// The map once node 1 of `n` died, rebalancing on.
fn died(n: u64, cores: u16, shards: u32) -> ClusterMap {
    let founders: Vec<NodeInfo> = (1..=n).map(|id| info(id, cores)).collect();
    let founding = initial_map(1, &founders, shards, 3).expect("a valid cluster");
    let dead = nodes::set_state(&founding, 1, NodeState::Dead, false).expect("a known node").expect("a change");
    nodes::set_rebalance(&dead, true).expect("a change")
}

/// Shard sizes as the meta leader learns them: all different, within ±25% of
/// 4 MiB (so the plan's bytes part ranks every candidate differently).
fn size_of(shard: u32) -> u64 {
    (3 << 20) + u64::from(shard.wrapping_mul(2_654_435_761) % (2 << 20))
}

fn placement(c: &mut Criterion) {
    let mut group = c.benchmark_group("placement_next_edits");
    let none = BTreeSet::new();
    for (nodes, cores, shards) in [(3u64, 2u16, 64u32), (16, 8, 1024)] {
        for (event, map) in [("join", joined(nodes, cores, shards)), ("death", died(nodes + 1, cores, shards))] {
            let edits = drive::next_edits(&map, &none, true, 4, size_of);
            assert!(!edits.is_empty(), "{event} on {nodes} nodes: the driver has moves to start");
            let id = BenchmarkId::new(event, format!("{nodes}x{cores}_cores_{shards}_shards"));
            group.bench_with_input(id, &map, |b, map| {
                b.iter(|| black_box(drive::next_edits(map, &none, true, 4, size_of)))
            });
            let id =
                BenchmarkId::new(format!("{event}_sizes_unknown"), format!("{nodes}x{cores}_cores_{shards}_shards"));
            group.bench_with_input(id, &map, |b, map| {
                b.iter(|| black_box(drive::next_edits(map, &none, true, 4, |_| 0)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, placement);
criterion_main!(benches);
