//! The client's per-request decisions (sans I/O): route a key to its shard's
//! leader core, tag a write, and take the answer, beside the key hash alone as the
//! floor (a request cannot route without hashing its key).

use std::hint::black_box;
use std::time::{Duration, Instant};

use corekv_rpc::client::core::{Attempt, Router, Session};
use corekv_rpc::kv::{ClientId, OkReply, Outcome, Response};
use corekv_rpc::map::{ClusterMap, NodeInfo, Replica, ShardReplicas};
use criterion::{Criterion, criterion_group, criterion_main};

fn map() -> ClusterMap {
    let nodes: Vec<NodeInfo> = (1..=3)
        .map(|id| NodeInfo {
            id,
            addr: format!("127.0.0.1:{}", 7000 + id * 100),
            cores: 2,
            state: corekv_rpc::map::NodeState::Up,
        })
        .collect();
    let shards = (0..64u64)
        .map(|s| ShardReplicas::new((0..3).map(|r| Replica { node: (s + r) % 3 + 1, core: (s % 2) as u16 }).collect()))
        .collect();
    ClusterMap {
        cluster_id: 1,
        epoch: 1,
        nodes,
        shards,
        meta: ShardReplicas::new(vec![Replica { node: 1, core: 0 }]),
        rebalance: false,
    }
}

fn client(c: &mut Criterion) {
    let mut group = c.benchmark_group("client");
    let keys: Vec<Vec<u8>> = (0..1024).map(|i| format!("user{i:016}").into_bytes()).collect();
    let mut router = Router::new(map());
    let mut session = Session::new(ClientId::from_u128(7));
    let deadline = Instant::now() + Duration::from_secs(3600);
    let answer = Response::Outcome(Outcome::Ok(OkReply::Written { version: 1 }));
    let mut i = 0usize;
    group.bench_function("key_hash_floor", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(router.shard_of(&keys[i]))
        })
    });
    group.bench_function("route_tag_and_answer_a_write", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let shard = router.shard_of(&keys[i]);
            let tag = session.begin();
            let mut attempt = Attempt::new(shard, true, deadline);
            let target = attempt.target(&router).expect("every shard has replicas");
            let next = attempt.on_response(&mut router, &target, answer.clone(), Instant::now());
            session.finish(tag.seq);
            black_box(next)
        })
    });
    group.finish();
}

criterion_group!(benches, client);
criterion_main!(benches);
