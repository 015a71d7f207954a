//! Raft step cost: three in-memory nodes, messages delivered by hand, storage
//! instant. Reports time per committed entry for batches of 1 and 64 proposals
//! (one proposal batch = one loop iteration on the leader), so the ratio shows
//! what batching saves per entry.

use std::collections::VecDeque;

use corekv_engine::raft::{Config, DurableState, RawNode, Role};
use corekv_rpc::raft::Message;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Takes every node's Ready, persists at once, applies, and delivers messages until
/// the cluster is quiet. Returns the number of entries the leader applied.
fn settle(nodes: &mut [RawNode], queue: &mut VecDeque<Message>) -> usize {
    let mut applied_by_leader = 0;
    loop {
        for (i, node) in nodes.iter_mut().enumerate() {
            while node.has_ready() {
                let rd = node.ready();
                if rd.must_persist() {
                    node.on_persisted(rd.number);
                }
                if i == 0 {
                    applied_by_leader += rd.committed_entries.len();
                }
                queue.extend(rd.messages);
                queue.extend(rd.messages_after_persist);
            }
        }
        if queue.is_empty() {
            return applied_by_leader;
        }
        while let Some(m) = queue.pop_front() {
            let to = (m.to - 1) as usize;
            nodes[to].step(m).expect("well-formed message");
        }
    }
}

fn cluster() -> Vec<RawNode> {
    let voters = vec![1, 2, 3];
    let mut nodes: Vec<RawNode> = voters
        .iter()
        .map(|&id| {
            let cfg = Config { election_timeout_ticks: 10, heartbeat_interval_ticks: 5, ..Config::new(id) };
            RawNode::new(cfg, DurableState::bootstrap(voters.clone()), id).expect("valid config")
        })
        .collect();
    let mut queue = VecDeque::new();
    while nodes[0].status().role != Role::Leader {
        nodes[0].tick();
        settle(&mut nodes, &mut queue);
    }
    nodes
}

fn raft_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft_step");
    let payload = vec![7u8; 128];
    for batch in [1usize, 64] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("propose_to_commit_128B", batch), &batch, |b, &batch| {
            let mut nodes = cluster();
            let mut queue = VecDeque::new();
            let mut applied_total = 0;
            let mut compact_every = 0;
            b.iter(|| {
                for _ in 0..batch {
                    nodes[0].propose(payload.clone()).expect("leader accepts");
                }
                let applied = settle(&mut nodes, &mut queue);
                assert!(applied >= batch, "every proposal committed");
                applied_total += applied;
                // Keep the in-memory log bounded over long runs.
                compact_every += 1;
                if compact_every % 1024 == 0 {
                    for n in nodes.iter_mut() {
                        n.compact(std::sync::Arc::from(Vec::new()));
                    }
                }
            });
            assert!(applied_total > 0);
        });
    }
    group.finish();
}

criterion_group!(benches, raft_step);
criterion_main!(benches);
