//! The node core's loop iteration with 64 groups on one core: one write per group
//! per iteration, through proposal, the WAL batch (in memory: this measures the
//! core, not the disk), replication to two follower cores and apply, to the 64
//! replies. The single-replica case is the floor beside it.

use std::collections::BTreeMap;
use std::sync::Arc;

use corekv_engine::node::{ClientRef, CoreStorage, NodeCore, NodeCoreConfig, StorageError};
use corekv_engine::raft::Snapshot;
use corekv_engine::wal::Record;
use corekv_rpc::kv::{ClientId, Request, RequestBody, Response, WriteOp, WriteTag};
use corekv_rpc::map::{ClusterMap, NodeInfo, Replica, ShardReplicas};
use corekv_rpc::raft::Entry;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const GROUPS: u32 = 64;

/// Counts bytes instead of keeping them.
#[derive(Default)]
struct NullStorage {
    records: u64,
}

impl CoreStorage for NullStorage {
    fn room_bytes(&self) -> u64 {
        u64::MAX / 2
    }
    fn append(&mut self, _record: &Record) -> Result<(), StorageError> {
        self.records += 1;
        Ok(())
    }
    fn append_entries(&mut self, _group_id: u64, _entries: &[Entry]) -> Result<(), StorageError> {
        self.records += 1;
        Ok(())
    }
    fn save_snapshot(&mut self, _group_id: u64, _snapshot: &Snapshot) -> Result<(), StorageError> {
        Ok(())
    }
    fn pinning_groups(&self, _live_max: usize) -> Vec<(u64, u64)> {
        Vec::new()
    }
}

/// Every shard on core 0 of every node, node 1 preferred leader of all.
fn map(nodes: u64) -> Arc<ClusterMap> {
    let infos = (1..=nodes)
        .map(|id| NodeInfo {
            id,
            addr: format!("127.0.0.1:{}", 7000 + id * 100),
            cores: 1,
            state: corekv_rpc::map::NodeState::Up,
        })
        .collect();
    let shards =
        (0..GROUPS).map(|_| ShardReplicas::new((1..=nodes).map(|node| Replica { node, core: 0 }).collect())).collect();
    // No meta group: only the shards' work is measured.
    Arc::new(ClusterMap {
        cluster_id: 1,
        epoch: 1,
        nodes: infos,
        shards,
        meta: ShardReplicas::new(Vec::new()),
        rebalance: false,
    })
}

struct Cluster {
    cores: BTreeMap<u64, (NodeCore, NullStorage)>,
    keys: Vec<Vec<u8>>,
    seq: u64,
    now_ms: u64,
}

impl Cluster {
    fn new(nodes: u64) -> Cluster {
        let map = map(nodes);
        let mut cores = BTreeMap::new();
        for node in 1..=nodes {
            let mut cfg = NodeCoreConfig::new(node, 0);
            cfg.raft.election_timeout_ticks = 10;
            cfg.raft.heartbeat_interval_ticks = 2;
            cfg.snapshot_log_bytes = 8 << 20;
            let mut storage = NullStorage::default();
            let core = NodeCore::open(cfg, map.clone(), BTreeMap::new(), &mut storage, 1).expect("opens");
            cores.insert(node, (core, storage));
        }
        let keys = (0..GROUPS)
            .map(|s| {
                (0..).map(|i| format!("k{i}").into_bytes()).find(|k| map.shard_of(k) == s).expect("a key per shard")
            })
            .collect();
        let mut cl = Cluster { cores, keys, seq: 0, now_ms: 1 };
        for _ in 0..3000 {
            let led = cl.cores[&1].0.status().iter().filter(|s| s.is_leader).count();
            if led == GROUPS as usize {
                return cl;
            }
            cl.now_ms += 10;
            for (core, _) in cl.cores.values_mut() {
                core.tick(cl.now_ms);
            }
            cl.settle();
        }
        panic!("node 1 did not come to lead every group");
    }

    /// Runs every core until nothing moves; returns the replies node 1 produced.
    fn settle(&mut self) -> usize {
        let mut replies = 0;
        loop {
            let mut frames = Vec::new();
            for (&node, (core, storage)) in self.cores.iter_mut() {
                core.process(storage).expect("process");
                if core.has_unsealed() {
                    let token = core.seal();
                    core.on_durable(token);
                    core.process(storage).expect("process");
                }
                frames.extend(core.take_frames().into_iter().map(|(dest, b)| (node, dest, b)));
                let r = core.take_replies();
                if node == 1 {
                    replies += r.iter().filter(|(_, resp)| matches!(resp, Response::Outcome(_))).count();
                }
            }
            if frames.is_empty() {
                return replies;
            }
            for (from, dest, batch) in frames {
                self.cores.get_mut(&dest.node).expect("known").0.step_peer(from, batch);
            }
        }
    }

    /// One iteration's worth of work: a write to each group, until all are answered.
    fn round(&mut self) {
        let leader = &mut self.cores.get_mut(&1).expect("node 1").0;
        for (shard, key) in self.keys.iter().enumerate() {
            self.seq += 1;
            let tag = WriteTag { client: ClientId::from_u128(9), seq: self.seq, acked: self.seq - 1 };
            let op = WriteOp::Put { key: key.clone(), value: vec![7; 128] };
            let request = Request { shard: shard as u32, epoch: 1, body: RequestBody::Write { tag, op } };
            leader.client_request(ClientRef { conn: 1, id: self.seq }, request);
        }
        let answered = self.settle();
        assert_eq!(answered, GROUPS as usize, "every write is answered in the round");
    }
}

fn node_core(c: &mut Criterion) {
    let mut group = c.benchmark_group("node_core");
    group.throughput(Throughput::Elements(u64::from(GROUPS)));
    for replicas in [1u64, 3] {
        let mut cl = Cluster::new(replicas);
        group.bench_function(BenchmarkId::new("64_groups_one_write_each", format!("{replicas}_replicas")), |b| {
            b.iter(|| cl.round());
        });
    }
    group.finish();
}

criterion_group!(benches, node_core);
criterion_main!(benches);
