//! The node core alone: a loss-free in-memory cluster of cores, and the batching
//! promises asserted by counters (DESIGN §11), never by timing.

use std::collections::BTreeMap;
use std::sync::Arc;

use corekv_rpc::kv::{ClientId, OkReply, Outcome, ReadOp, Request, RequestBody, Response, WriteOp, WriteTag};
use corekv_rpc::map::{ClusterMap, NodeInfo, Replica, ShardReplicas};
use corekv_rpc::node::PeerBatch;
use corekv_rpc::raft::Entry;

use super::*;

/// A storage that keeps everything in memory and counts batches.
#[derive(Debug, Default)]
struct MemStorage {
    open: Vec<Record>,
    batches: Vec<Vec<Record>>,
    snapshots: BTreeMap<u64, Snapshot>,
    /// Bytes an open batch may hold (None: unbounded).
    room_limit: Option<u64>,
    /// What `pinning_groups` answers (a segmented WAL's view; none here).
    pinning: Vec<(u64, u64)>,
}

impl CoreStorage for MemStorage {
    fn room_bytes(&self) -> u64 {
        let used: u64 = self.open.iter().map(|r| r.encoded_bytes() as u64).sum();
        self.room_limit.map_or(u64::MAX / 2, |limit| limit.saturating_sub(used))
    }
    fn append(&mut self, record: &Record) -> Result<(), StorageError> {
        // Like the WAL: a record the open batch cannot take is an error (the
        // core stops), which the core must never cause.
        if record.encoded_bytes() as u64 > self.room_bytes() {
            return Err(StorageError(format!("the open batch cannot take {record}")));
        }
        self.open.push(record.clone());
        Ok(())
    }
    fn append_entries(&mut self, group_id: u64, entries: &[Entry]) -> Result<(), StorageError> {
        self.append(&Record::Entries { group_id, entries: entries.to_vec() })
    }
    fn save_snapshot(&mut self, group_id: u64, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.snapshots.insert(group_id, snapshot.clone());
        Ok(())
    }
    fn pinning_groups(&self, _live_max: usize) -> Vec<(u64, u64)> {
        self.pinning.clone()
    }
}

/// Shard `s` lives on core `s % cores` of nodes `s, s+1, …` (mod n), preferred
/// leader first.
fn test_map(nodes: u64, cores: u16, shards: u32, replicas: u64) -> Arc<ClusterMap> {
    let nodes_info: Vec<NodeInfo> = (1..=nodes)
        .map(|id| NodeInfo {
            id,
            addr: format!("127.0.0.1:{}", 7000 + id * 100),
            cores,
            state: corekv_rpc::map::NodeState::Up,
        })
        .collect();
    let shards = (0..shards)
        .map(|s| {
            ShardReplicas::new(
                (0..replicas)
                    .map(|k| Replica { node: (u64::from(s) + k) % nodes + 1, core: (s % u32::from(cores)) as u16 })
                    .collect(),
            )
        })
        .collect();
    let meta = crate::placement::meta_replicas(&nodes_info);
    Arc::new(ClusterMap { cluster_id: 7, epoch: 1, nodes: nodes_info, shards, meta, rebalance: false })
}

fn config(node: NodeId, core: CoreIndex, tune: impl Fn(&mut NodeCoreConfig)) -> NodeCoreConfig {
    let mut cfg = NodeCoreConfig::new(node, core);
    cfg.raft.election_timeout_ticks = 10;
    cfg.raft.heartbeat_interval_ticks = 2;
    tune(&mut cfg);
    cfg
}

struct Core {
    core: NodeCore,
    storage: MemStorage,
    replies: Vec<(ClientRef, Response)>,
}

/// Cores exchanging frames without loss; every sealed batch is durable at once.
struct Cluster {
    map: Arc<ClusterMap>,
    cores: BTreeMap<Replica, Core>,
    now_ms: u64,
    /// Frames sent, by (source core, destination core).
    frames: BTreeMap<(Replica, Replica), u64>,
    /// Ticks a frame spends on the wire (0: delivered within the tick it was sent in).
    delay_ticks: u64,
    /// Frames on the wire, with the tick they arrive at.
    wire: Vec<(u64, Replica, Replica, PeerBatch)>,
    ticks: u64,
    /// Frames to this node are lost until this tick.
    cut: Option<(NodeId, u64)>,
}

impl Cluster {
    fn new(map: Arc<ClusterMap>) -> Cluster {
        Cluster::with_config(map, |_| {})
    }

    fn with_config(map: Arc<ClusterMap>, tune: impl Fn(&mut NodeCoreConfig)) -> Cluster {
        let mut cores = BTreeMap::new();
        for node in &map.nodes {
            for core in 0..node.cores {
                let cfg = config(node.id, core, &tune);
                let mut storage = MemStorage::default();
                let nc = NodeCore::open(cfg, map.clone(), BTreeMap::new(), &mut storage, 0).expect("opens");
                cores.insert(Replica { node: node.id, core }, Core { core: nc, storage, replies: Vec::new() });
            }
        }
        Cluster {
            map,
            cores,
            now_ms: 0,
            frames: BTreeMap::new(),
            delay_ticks: 0,
            wire: Vec::new(),
            ticks: 0,
            cut: None,
        }
    }

    /// Runs every core's iteration until no message or batch is left.
    fn settle(&mut self) {
        for _ in 0..1000 {
            if !self.round() {
                return;
            }
        }
        panic!("the cluster did not settle");
    }

    /// One iteration of every core, then the frames delivered. False when the
    /// cluster was already quiet.
    fn round(&mut self) -> bool {
        let mut in_flight: Vec<(Replica, Replica, PeerBatch)> = Vec::new();
        for (&at, c) in self.cores.iter_mut() {
            c.core.process(&mut c.storage).expect("process");
            if !c.storage.open.is_empty() || c.core.has_unsealed() {
                let token = c.core.seal();
                c.storage.batches.push(std::mem::take(&mut c.storage.open));
                c.core.on_durable(token);
                c.core.process(&mut c.storage).expect("process");
            }
            for (dest, batch) in c.core.take_frames() {
                in_flight.push((at, dest, batch));
            }
            c.replies.extend(c.core.take_replies());
        }
        if in_flight.is_empty() && self.cores.values().all(|c| !c.core.has_work() && c.storage.open.is_empty()) {
            return false;
        }
        for (from, to, batch) in in_flight {
            *self.frames.entry((from, to)).or_default() += 1;
            if self.delay_ticks > 0 {
                self.wire.push((self.ticks + self.delay_ticks, from, to, batch));
            } else {
                self.deliver(from, to, batch);
            }
        }
        true
    }

    fn deliver(&mut self, from: Replica, to: Replica, batch: PeerBatch) {
        if self.cut.is_some_and(|(node, until)| node == to.node && self.ticks < until) {
            return;
        }
        // A core taken out of the map (crashed) loses what was sent to it.
        if let Some(c) = self.cores.get_mut(&to) {
            c.core.step_peer(from.node, batch);
        }
    }

    fn tick(&mut self) {
        self.now_ms += 10;
        self.ticks += 1;
        for c in self.cores.values_mut() {
            c.core.tick(self.now_ms);
        }
        let now = self.ticks;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.wire).into_iter().partition(|f| f.0 <= now);
        self.wire = later;
        for (_, from, to, batch) in due {
            self.deliver(from, to, batch);
        }
        self.settle();
    }

    fn leader_core(&self, shard: ShardId) -> Option<Replica> {
        self.cores.iter().find(|(_, c)| c.core.groups.get(&shard).is_some_and(|g| g.is_leader)).map(|(r, _)| *r)
    }

    fn all_led(&self) -> bool {
        (0..self.map.shard_count()).all(|s| self.leader_core(s).is_some())
    }

    fn run_until_led(&mut self) {
        for _ in 0..2000 {
            if self.all_led() {
                return;
            }
            self.tick();
        }
        panic!("not every shard elected a leader");
    }

    /// The next map, with `shard`'s replica on `to.node` handed to core `to.core`,
    /// given to every core.
    fn begin_hand_off(&mut self, shard: ShardId, to: Replica) -> Arc<ClusterMap> {
        let mut next = (*self.map).clone();
        next.epoch += 1;
        next.shards[shard as usize].handoff = Some(corekv_rpc::map::Handoff { to, since: next.epoch });
        self.map = Arc::new(next);
        for c in self.cores.values_mut() {
            c.core.update_map(self.map.clone(), &mut c.storage).expect("map");
        }
        self.map.clone()
    }

    fn reply(&mut self, at: Replica, client: ClientRef) -> Option<Response> {
        let c = self.cores.get_mut(&at).expect("known core");
        let pos = c.replies.iter().position(|(r, _)| *r == client)?;
        Some(c.replies.remove(pos).1)
    }
}

fn key_for(map: &ClusterMap, shard: ShardId) -> Vec<u8> {
    (0..).map(|i| format!("key{i}").into_bytes()).find(|k| map.shard_of(k) == shard).expect("some key hashes there")
}

fn put(map: &ClusterMap, shard: ShardId, seq: u64, value: &[u8]) -> Request {
    let tag = WriteTag { client: ClientId::from_u128(1), seq, acked: seq - 1 };
    let op = WriteOp::Put { key: key_for(map, shard), value: value.to_vec() };
    Request { shard, epoch: 1, body: RequestBody::Write { tag, op } }
}

#[test]
fn every_shard_elects_a_leader_and_serves_a_write_then_a_read() {
    let map = test_map(3, 2, 8, 3);
    let mut cl = Cluster::new(map.clone());
    cl.run_until_led();
    for shard in 0..8 {
        let at = cl.leader_core(shard).expect("led");
        let client = ClientRef { conn: 1, id: u64::from(shard) };
        cl.cores.get_mut(&at).unwrap().core.client_request(client, put(&map, shard, 1, b"v1"));
        cl.settle();
        let version = match cl.reply(at, client) {
            Some(Response::Outcome(Outcome::Ok(OkReply::Written { version }))) => version,
            other => panic!("shard {shard}: {other:?}"),
        };
        let read =
            Request { shard, epoch: 1, body: RequestBody::Read(ReadOp::Get { key: key_for(&map, shard), at: None }) };
        let client = ClientRef { conn: 2, id: u64::from(shard) };
        cl.cores.get_mut(&at).unwrap().core.client_request(client, read);
        cl.settle();
        // The read needs a heartbeat round: it is served in the same settle, as its
        // heartbeats leave at once.
        assert_eq!(
            cl.reply(at, client),
            Some(Response::Outcome(Outcome::Ok(OkReply::Value { version, value: b"v1".to_vec() })))
        );
    }
}

#[test]
fn a_new_leader_writes_above_a_version_its_crashed_predecessor_read_at() {
    let map = test_map(3, 1, 1, 3);
    let mut cl = Cluster::new(map.clone());
    cl.run_until_led();
    let old = cl.leader_core(0).expect("led");
    cl.cores.get_mut(&old).unwrap().core.client_request(ClientRef { conn: 1, id: 1 }, put(&map, 0, 1, b"v1"));
    cl.settle();
    let Some(Response::Outcome(Outcome::Ok(OkReply::Written { version: v1 }))) =
        cl.reply(old, ClientRef { conn: 1, id: 1 })
    else {
        panic!("the put is written")
    };
    // A read at a version half a second ahead of every clock: allowed (within the
    // drift margin), it moves the leader's clock past it.
    let at = v1 + (500 << crate::kv::hlc::LOGICAL_BITS);
    let read =
        Request { shard: 0, epoch: 1, body: RequestBody::Read(ReadOp::Get { key: key_for(&map, 0), at: Some(at) }) };
    cl.cores.get_mut(&old).unwrap().core.client_request(ClientRef { conn: 2, id: 1 }, read);
    cl.settle();
    assert_eq!(
        cl.reply(old, ClientRef { conn: 2, id: 1 }),
        Some(Response::Outcome(Outcome::Ok(OkReply::Value { version: v1, value: b"v1".to_vec() })))
    );
    // The leader dies at once; a new one is elected well within the half second.
    cl.cores.remove(&old);
    let started = cl.now_ms;
    cl.run_until_led();
    assert!(cl.now_ms - started < 500, "elected after {} ms", cl.now_ms - started);
    let new = cl.leader_core(0).expect("led");
    cl.cores.get_mut(&new).unwrap().core.client_request(ClientRef { conn: 3, id: 1 }, put(&map, 0, 2, b"v2"));
    cl.settle();
    match cl.reply(new, ClientRef { conn: 3, id: 1 }) {
        // Else a read at `at` would now see v2: the snapshot at `at` changed.
        Some(Response::Outcome(Outcome::Ok(OkReply::Written { version }))) => {
            assert!(version > at, "the new leader wrote at {version}, not above {at}, a version read at")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_follower_redirects_to_the_leader_and_a_foreign_shard_is_wrong_shard() {
    let map = test_map(3, 2, 4, 3);
    let mut cl = Cluster::new(map.clone());
    cl.run_until_led();
    let at = cl.leader_core(0).unwrap();
    let follower = map.replicas(0).iter().copied().find(|r| *r != at).unwrap();
    let client = ClientRef { conn: 1, id: 1 };
    cl.cores.get_mut(&follower).unwrap().core.client_request(client, put(&map, 0, 1, b"x"));
    assert_eq!(cl.reply(follower, client), None, "answers come out with take_replies");
    cl.settle();
    assert_eq!(cl.reply(follower, client), Some(Response::NotLeader { hint: at.node }));
    // Shard 1 lives on core 1: core 0 of the same node does not serve it.
    let other = Replica { node: at.node, core: 1 - map.replicas(0)[0].core };
    cl.cores.get_mut(&other).unwrap().core.client_request(client, put(&map, 0, 1, b"x"));
    cl.settle();
    assert!(matches!(cl.reply(other, client), Some(Response::WrongShard { epoch: 1, .. })));
    // A key that does not hash to the named shard is refused the same way.
    let mut req = put(&map, 0, 1, b"x");
    req.shard = 2;
    let at2 = cl.leader_core(2).unwrap();
    cl.cores.get_mut(&at2).unwrap().core.client_request(client, req);
    cl.settle();
    assert!(matches!(cl.reply(at2, client), Some(Response::WrongShard { .. })));
}

#[test]
fn sixty_four_groups_with_one_proposal_each_make_one_wal_batch_and_one_frame_per_core() {
    // One node, one core: every group leads alone, so the test sees the whole batch.
    let map = test_map(3, 1, 64, 3);
    let mut cl = Cluster::new(map.clone());
    cl.run_until_led();
    // Move every leader to node 1 so one core has all 64 proposals.
    for _ in 0..200 {
        if (0..64).all(|s| cl.leader_core(s).map(|r| r.node) == Some(1)) {
            break;
        }
        for s in 0..64 {
            if let Some(at) = cl.leader_core(s)
                && at.node != 1
            {
                let _ = cl.cores.get_mut(&at).unwrap().core.groups.get_mut(&s).unwrap().raft.transfer_leader(1);
            }
        }
        cl.tick();
    }
    assert!((0..64).all(|s| cl.leader_core(s).map(|r| r.node) == Some(1)), "node 1 leads every shard");
    let me = Replica { node: 1, core: 0 };
    let c = cl.cores.get_mut(&me).unwrap();
    let before = c.storage.batches.len();
    for shard in 0..64 {
        c.core
            .client_request(ClientRef { conn: 9, id: u64::from(shard) }, put(&map, shard, u64::from(shard) + 1, b"v"));
    }
    c.core.process(&mut c.storage).unwrap();
    let entries_records = c.storage.open.iter().filter(|r| matches!(r, Record::Entries { .. })).count();
    assert_eq!(entries_records, 64, "every group's entry is in the one open batch");
    let frames = c.core.take_frames();
    assert_eq!(frames.len(), 2, "one frame per destination core (nodes 2 and 3, core 0)");
    for (_, batch) in &frames {
        assert_eq!(batch.messages.len(), 64, "the appends of all 64 groups share the frame");
    }
    let token = c.core.seal();
    c.storage.batches.push(std::mem::take(&mut c.storage.open));
    assert_eq!(c.storage.batches.len(), before + 1, "one WAL batch, so one write and one fdatasync");
    c.core.on_durable(token);
    for (dest, batch) in frames {
        cl.cores.get_mut(&dest).unwrap().core.step_peer(1, batch);
    }
    cl.settle();
    for shard in 0..64u32 {
        let reply = cl.reply(me, ClientRef { conn: 9, id: u64::from(shard) });
        assert!(matches!(reply, Some(Response::Outcome(Outcome::Ok(_)))), "shard {shard}: {reply:?}");
    }
}

/// Heartbeat messages sent by the whole cluster over `intervals` idle intervals.
fn idle_heartbeat_messages(shards: u32, intervals: u64) -> (u64, usize) {
    let map = test_map(3, 2, shards, 3);
    let mut cl = Cluster::new(map);
    cl.run_until_led();
    for _ in 0..100 {
        cl.tick(); // let leader balancing finish
    }
    let count = |cl: &Cluster| cl.cores.values().map(|c| c.core.stats().heartbeat_messages_sent).sum::<u64>();
    let before = count(&cl);
    cl.frames.clear();
    for _ in 0..intervals * 2 {
        cl.tick();
    }
    (count(&cl) - before, cl.frames.len())
}

#[test]
fn an_idle_cluster_sends_one_heartbeat_message_per_core_pair_per_interval_whatever_the_shard_count() {
    let intervals = 10;
    let (sent_64, pairs_64) = idle_heartbeat_messages(64, intervals);
    let (sent_256, pairs_256) = idle_heartbeat_messages(256, intervals);
    assert_eq!(pairs_64, pairs_256);
    // Each (source core, destination core) pair carries at most one heartbeat
    // message per interval; the answers travel the other way.
    assert!(sent_64 <= intervals * pairs_64 as u64, "{sent_64} heartbeat messages over {pairs_64} pairs");
    assert_eq!(sent_64, sent_256, "the shard count does not change the heartbeat traffic");
    assert!(sent_64 >= intervals * pairs_64 as u64 / 2, "leaders keep heartbeating: {sent_64}");
}

#[test]
fn leadership_returns_to_the_preferred_replicas_after_a_lost_transfer_however_long_replies_take() {
    // A transfer restarts the leader's check-quorum round at the tick of the
    // balancing check, and later checks come a whole number of rounds after it:
    // each then falls one tick into a fresh round. A check that only counted
    // answers heard in the current round saw none once replies took a tick or more
    // (as on a loaded machine), and the shard stayed led by the wrong replica for
    // good.
    for delay in 1..=3 {
        let map = test_map(3, 1, 6, 3);
        // The servers' own timing: heartbeats every 10 ticks, an election timeout
        // (and check-quorum window) of 100.
        let mut cl = Cluster::with_config(map.clone(), |cfg| {
            let defaults = crate::raft::Config::new(cfg.node);
            cfg.raft.election_timeout_ticks = defaults.election_timeout_ticks;
            cfg.raft.heartbeat_interval_ticks = defaults.heartbeat_interval_ticks;
        });
        cl.delay_ticks = delay;
        let preferred = |s: ShardId| Replica { node: map.replicas(s)[0].node, core: 0 };
        // First every shard is led elsewhere: its second replica.
        let second = |s: ShardId| Replica { node: map.replicas(s)[1].node, core: 0 };
        for c in cl.cores.values_mut() {
            c.core.cfg.leader_balance = false;
        }
        let moved = (0..5000).any(|_| {
            cl.tick();
            for s in 0..map.shard_count() {
                let Some(at) = cl.leader_core(s) else { continue };
                if at != second(s) {
                    let g = cl.cores.get_mut(&at).unwrap().core.groups.get_mut(&s).unwrap();
                    let _ = g.raft.transfer_leader(second(s).node);
                }
            }
            (0..map.shard_count()).all(|s| cl.leader_core(s) == Some(second(s)))
        });
        assert!(moved, "leadership moved away from the preferred replicas");
        for c in cl.cores.values_mut() {
            c.core.cfg.leader_balance = true;
        }
        // Node 1 hears nothing for a while, starting mid-window: its leaders saw it
        // answer early in the window, try to hand it leadership, and the transfer
        // is lost.
        cl.cut = Some((1, cl.ticks + 150));
        let balanced = (0..5000).any(|_| {
            cl.tick();
            (0..map.shard_count()).all(|s| cl.leader_core(s) == Some(preferred(s)))
        });
        let leaders: Vec<_> = (0..map.shard_count()).map(|s| cl.leader_core(s)).collect();
        assert!(balanced, "with replies {delay} ticks late, leaders stay at {leaders:?}");
    }
}

#[test]
fn a_ready_that_only_moves_the_commit_index_asks_for_no_fdatasync() {
    let map = test_map(3, 1, 1, 3);
    let mut cl = Cluster::new(map.clone());
    cl.run_until_led();
    let at = cl.leader_core(0).unwrap();
    let client = ClientRef { conn: 1, id: 1 };
    let c = cl.cores.get_mut(&at).unwrap();
    c.core.client_request(client, put(&map, 0, 1, b"v"));
    c.core.process(&mut c.storage).unwrap();
    assert!(c.core.has_unsealed(), "the new entry needs a batch");
    let token = c.core.seal();
    c.storage.batches.push(std::mem::take(&mut c.storage.open));
    c.core.on_durable(token);
    // The followers persist and acknowledge; the leader's commit index moves.
    let frames = c.core.take_frames();
    for (dest, batch) in frames {
        let f = cl.cores.get_mut(&dest).unwrap();
        f.core.step_peer(at.node, batch);
        f.core.process(&mut f.storage).unwrap();
        let token = f.core.seal();
        f.storage.batches.push(std::mem::take(&mut f.storage.open));
        f.core.on_durable(token);
        f.core.process(&mut f.storage).unwrap();
        for (back, batch) in f.core.take_frames() {
            cl.cores.get_mut(&back).unwrap().core.step_peer(dest.node, batch);
        }
    }
    let c = cl.cores.get_mut(&at).unwrap();
    c.core.process(&mut c.storage).unwrap();
    assert!(
        matches!(c.core.take_replies().as_slice(), [(r, Response::Outcome(Outcome::Ok(_)))] if *r == client),
        "the write is answered"
    );
    assert!(!c.core.has_unsealed(), "a commit-index-only hard state waits for no batch");
    assert!(
        c.storage.open.iter().any(|r| matches!(r, Record::HardState { .. })),
        "its record rides with the next batch"
    );
}

#[test]
fn a_read_asked_before_a_new_leader_commits_in_its_term_is_served_without_waiting_for_a_heartbeat_interval() {
    let map = test_map(3, 1, 1, 3);
    let mut cl = Cluster::new(map.clone());
    cl.run_until_led();
    let old = cl.leader_core(0).expect("led");
    let target = map.replicas(0).iter().copied().find(|r| *r != old).expect("a follower");
    let g = cl.cores.get_mut(&old).unwrap().core.groups.get_mut(&0).unwrap();
    g.raft.transfer_leader(target.node).expect("a voter");
    cl.cores.get_mut(&old).unwrap().core.dirty.insert(0);
    // Round by round, without a tick: stop as soon as the new leader knows it leads,
    // before its first entry (the one of its term) is committed.
    let mut rounds = 0;
    while !cl.cores[&target].core.groups[&0].is_leader {
        assert!(cl.round(), "the transfer finishes without ticks");
        rounds += 1;
        assert!(rounds < 100, "the transfer finishes");
    }
    let status = cl.cores[&target].core.raft_status(0).unwrap();
    assert!(status.commit < status.last_index, "the new leader's own entry is not committed yet");
    let client = ClientRef { conn: 3, id: 1 };
    let read = Request { shard: 0, epoch: 1, body: RequestBody::Read(ReadOp::Get { key: key_for(&map, 0), at: None }) };
    // A write in the same iteration gives that iteration's Ready other work too.
    let writer = ClientRef { conn: 3, id: 2 };
    cl.cores.get_mut(&target).unwrap().core.client_request(writer, put(&map, 0, 1, b"v"));
    cl.cores.get_mut(&target).unwrap().core.client_request(client, read);
    cl.settle();
    assert!(matches!(cl.reply(target, writer), Some(Response::Outcome(Outcome::Ok(_)))));
    // No tick happened: the heartbeat round the read needs must not wait for the
    // core's next periodic heartbeat boundary.
    assert!(
        matches!(cl.reply(target, client), Some(Response::Outcome(Outcome::NotFound | Outcome::Ok(_)))),
        "the read is answered"
    );
}

#[test]
fn a_write_the_open_wal_batch_cannot_take_is_busy_not_a_stopped_core() {
    let map = test_map(3, 1, 1, 3);
    let mut cl = Cluster::new(map.clone());
    cl.run_until_led();
    let at = cl.leader_core(0).unwrap();
    let c = cl.cores.get_mut(&at).unwrap();
    let reserve = ready_reserve_bytes(&c.core.cfg);
    c.storage.room_limit = Some(reserve + (200 << 10));
    c.core.process(&mut c.storage).unwrap(); // learns the room
    let big = vec![7u8; 150 << 10];
    let mut req = put(&map, 0, 1, &big);
    c.core.client_request(ClientRef { conn: 1, id: 1 }, req.clone());
    // The second write of 150 KiB (of another key: the first holds its key's
    // lock) would not fit before the next flush.
    if let RequestBody::Write { tag, op } = &mut req.body {
        tag.seq = 2;
        tag.acked = 0;
        *op = WriteOp::Put { key: b"another key".to_vec(), value: big.clone() };
    }
    c.core.client_request(ClientRef { conn: 1, id: 2 }, req);
    let replies = c.core.take_replies();
    assert_eq!(replies, vec![(ClientRef { conn: 1, id: 2 }, Response::Busy)]);
    c.core.process(&mut c.storage).expect("the first write fits: no storage error");
    assert!(c.core.has_unsealed());
}

/// A hand-off's state installed into a nearly full batch while the target core
/// has a write accepted: the write's Ready waits for the next batch instead of
/// overflowing this one (which would stop the core, and its node).
#[test]
fn a_hand_off_install_that_nearly_fills_the_batch_holds_back_the_writes_behind_it() {
    let map = test_map(3, 2, 2, 3);
    let mut cl = Cluster::new(map.clone());
    cl.run_until_led();
    // The target core leads shard 1 (writes come to it); its node's replica of
    // shard 0 moves to it from core 0.
    let target = cl.leader_core(1).expect("led");
    assert_eq!(target.core, 1);
    let source = Replica { node: target.node, core: 0 };
    let moved = cl.begin_hand_off(0, target);
    let mut given = None;
    for _ in 0..500 {
        cl.tick();
        if let Some((core, h)) = cl.cores.get_mut(&source).unwrap().core.take_handoffs().pop() {
            assert_eq!(core, 1);
            given = Some(h);
            break;
        }
    }
    let mut h = given.expect("the source gives its state");
    let t = cl.cores.get_mut(&target).unwrap();
    let reserve = ready_reserve_bytes(&t.core.cfg);
    t.storage.room_limit = Some(reserve + (200 << 10));
    t.core.process(&mut t.storage).unwrap(); // learns the room
    // A 150 KiB write fits the batch when it is accepted.
    t.core.client_request(ClientRef { conn: 1, id: 1 }, put(&moved, 1, 1, &vec![7u8; 150 << 10]));
    assert!(t.core.take_replies().is_empty(), "the write is accepted");
    // The state's log tail leaves the batch less than the reserve.
    let last = h.state.entries.last().map_or(h.state.snapshot.meta.index, |e| e.index);
    let tail = reserve + (180 << 10);
    h.state.entries.push(Entry {
        term: h.state.hard_state.term,
        index: last + 1,
        kind: EntryKind::Normal,
        data: vec![1; tail as usize],
    });
    t.core.receive_handoff(h);
    t.core.process(&mut t.storage).expect("the install and the write fit, in two batches");
    assert!(t.core.groups[&0].parked, "the state is installed");
    cl.settle();
    let reply = cl.reply(target, ClientRef { conn: 1, id: 1 });
    assert!(matches!(reply, Some(Response::Outcome(Outcome::Ok(_)))), "{reply:?}");
}

/// A hand-off source holding more log after its applied index than the
/// target's WAL batch could take goes on as a follower; it stops once its
/// leader commits that log (and it applies it), then gives its state.
#[test]
fn a_hand_off_source_with_a_long_uncommitted_tail_waits_until_it_is_committed() {
    let map = test_map(3, 2, 1, 3);
    // Half of a 64 KiB segment: the most tail a source stops with.
    let mut cl = Cluster::with_config(map.clone(), |cfg| cfg.wal_segment_bytes = 64 << 10);
    cl.run_until_led();
    let leader = cl.leader_core(0).expect("led");
    let source = *map.replicas(0).iter().find(|r| r.node != leader.node).expect("a follower");
    // Nothing reaches the leader: the followers log its writes, none commits.
    cl.cut = Some((leader.node, u64::MAX));
    for seq in 1..=3 {
        let key = format!("tail-{seq}").into_bytes();
        let mut req = put(&map, 0, seq, &vec![5u8; 30 << 10]);
        if let RequestBody::Write { op, .. } = &mut req.body {
            *op = WriteOp::Put { key, value: vec![5u8; 30 << 10] };
        }
        cl.cores.get_mut(&leader).unwrap().core.client_request(ClientRef { conn: 1, id: seq }, req);
    }
    cl.settle();
    let tail = |cl: &Cluster| {
        let log = cl.cores[&source].core.groups[&0].raft.log();
        log.bytes_after(log.applied(), 0)
    };
    assert!(tail(&cl) > 64 << 10, "the source holds 90 KiB it has not applied");
    cl.begin_hand_off(0, Replica { node: source.node, core: 1 });
    cl.tick();
    let src = &cl.cores[&source].core;
    assert!(!src.groups[&0].frozen, "the source does not stop with a tail the target's batch cannot take");
    // The leader hears its followers again and commits: the source stops.
    cl.cut = None;
    let mut given = false;
    for _ in 0..300 {
        cl.tick();
        if !cl.cores.get_mut(&source).unwrap().core.take_handoffs().is_empty() {
            given = true;
            break;
        }
    }
    assert!(given, "the source stops and gives its state once its log is committed");
    assert!(cl.cores[&source].core.groups[&0].frozen);
}

#[test]
fn a_snapshot_from_the_leader_that_does_not_decode_stops_the_core_before_it_is_saved() {
    use corekv_rpc::raft::{ConfState, MessageBody, SnapshotMeta};
    let map = test_map(3, 1, 1, 3);
    let mut cl = Cluster::new(map);
    cl.run_until_led();
    let leader = cl.leader_core(0).unwrap();
    let term = cl.cores[&leader].core.raft_status(0).unwrap().term;
    let follower = *cl.cores.keys().find(|r| **r != leader).unwrap();
    let chunk = b"not a shard snapshot".to_vec();
    let meta = SnapshotMeta { index: 1000, term, conf: ConfState { voters: vec![1, 2, 3], learners: vec![] } };
    let body = MessageBody::Snapshot {
        meta,
        total_bytes: chunk.len() as u64,
        offset: 0,
        chunk_crc: crc32fast::hash(&chunk),
        chunk,
    };
    let message = Message { from: leader.node, to: follower.node, term, body };
    let f = cl.cores.get_mut(&follower).unwrap();
    f.core.step_peer(
        leader.node,
        PeerBatch { messages: vec![PeerMessage::Raft { shard: 0, message }], ..PeerBatch::default() },
    );
    let result = f.core.process(&mut f.storage);
    assert!(matches!(result, Err(NodeError::Snapshot { shard: 0, .. })), "{result:?}");
    assert!(f.storage.snapshots.is_empty(), "a snapshot that does not decode is never made durable");
}

// ----- transactions through the node core ------------------------------------

mod txn {
    use super::*;
    use corekv_rpc::kv::{ShardSets, TxnReadOp};
    use corekv_rpc::txn::{AbortReason, Age, Policy, TxnId, TxnMeta, TxnSets, WriteItem};

    fn meta(n: u64, start: u64, policy: Policy) -> TxnMeta {
        let id = TxnId { client: ClientId::from_u128(100 + u128::from(n)), attempt: 1 };
        TxnMeta { id, age: Age { start, id }, policy, attempt_ts: start }
    }

    struct Txns {
        cl: Cluster,
        map: Arc<ClusterMap>,
        next: u64,
    }

    impl Txns {
        fn new() -> Txns {
            let map = test_map(3, 2, 4, 3);
            let mut cl = Cluster::new(map.clone());
            cl.run_until_led();
            Txns { cl, map, next: 1 }
        }

        /// Sends `body` to `shard`'s leader; the client to collect its reply.
        fn send(&mut self, shard: ShardId, body: RequestBody) -> (Replica, ClientRef) {
            let at = self.cl.leader_core(shard).expect("led");
            let client = ClientRef { conn: 9, id: self.next };
            self.next += 1;
            self.cl.cores.get_mut(&at).unwrap().core.client_request(client, Request { shard, epoch: 1, body });
            self.cl.settle();
            (at, client)
        }

        fn call(&mut self, shard: ShardId, body: RequestBody) -> Option<Response> {
            let (at, client) = self.send(shard, body);
            self.cl.reply(at, client)
        }

        fn lock(&mut self, txn: TxnMeta, key: &[u8]) -> Option<Response> {
            let shard = self.map.shard_of(key);
            self.call(shard, RequestBody::TxnLock { txn, key: key.to_vec() })
        }

        fn commit(&mut self, txn: TxnMeta, anchor: ShardId, writes: &[(&[u8], &[u8])]) -> (Replica, ClientRef) {
            let mut by_shard: BTreeMap<ShardId, TxnSets> = BTreeMap::new();
            for (k, v) in writes {
                by_shard
                    .entry(self.map.shard_of(k))
                    .or_default()
                    .writes
                    .push(WriteItem { key: k.to_vec(), value: Some(v.to_vec()) });
            }
            let shards = by_shard.into_iter().map(|(shard, sets)| ShardSets { shard, sets }).collect();
            let tag = WriteTag { client: txn.id.client, seq: 1, acked: 0 };
            self.send(anchor, RequestBody::TxnCommit { txn, tag, shards })
        }

        fn get(&mut self, key: &[u8], at: Option<u64>) -> Option<Response> {
            let shard = self.map.shard_of(key);
            self.call(shard, RequestBody::Read(ReadOp::Get { key: key.to_vec(), at }))
        }
    }

    fn done() -> Option<Response> {
        Some(Response::Outcome(Outcome::Ok(OkReply::Done)))
    }

    fn written(r: Option<Response>) -> u64 {
        match r {
            Some(Response::Outcome(Outcome::Ok(OkReply::Written { version }))) => version,
            other => panic!("expected a commit, got {other:?}"),
        }
    }

    #[test]
    fn a_one_shard_transaction_commits_in_one_entry_at_one_version() {
        let mut t = Txns::new();
        let a = key_for(&t.map, 1);
        let b = (0..).map(|i| format!("other{i}").into_bytes()).find(|k| t.map.shard_of(k) == 1).unwrap();
        let txn = meta(1, 10, Policy::WoundWait);
        assert_eq!(t.lock(txn, &a), done());
        assert_eq!(t.lock(txn, &b), done());
        let (at, client) = t.commit(txn, 1, &[(&a, b"A"), (&b, b"B")]);
        let v = written(t.cl.reply(at, client));
        assert_eq!(
            t.get(&a, None),
            Some(Response::Outcome(Outcome::Ok(OkReply::Value { version: v, value: b"A".to_vec() })))
        );
        assert_eq!(
            t.get(&b, None),
            Some(Response::Outcome(Outcome::Ok(OkReply::Value { version: v, value: b"B".to_vec() })))
        );
        assert_eq!(t.get(&a, Some(v - 1)), Some(Response::Outcome(Outcome::NotFound)));
        // Locks were released at apply: another transaction locks at once.
        assert_eq!(t.lock(meta(2, 20, Policy::WoundWait), &a), done());
    }

    #[test]
    fn a_cross_shard_commit_prepares_everywhere_and_writes_one_version() {
        let mut t = Txns::new();
        let keys: Vec<Vec<u8>> = (0..4).map(|s| key_for(&t.map, s)).collect();
        let txn = meta(1, 10, Policy::WoundWait);
        for k in &keys {
            assert_eq!(t.lock(txn, k), done());
        }
        let writes: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (k.as_slice(), b"v".as_slice())).collect();
        let (at, client) = t.commit(txn, 2, &writes);
        let v = written(t.cl.reply(at, client));
        for k in &keys {
            assert_eq!(
                t.get(k, None),
                Some(Response::Outcome(Outcome::Ok(OkReply::Value { version: v, value: b"v".to_vec() })))
            );
            assert_eq!(t.get(k, Some(v - 1)), Some(Response::Outcome(Outcome::NotFound)));
        }
        // Every intent resolved and the record forgotten, on every replica.
        t.cl.tick();
        for c in t.cl.cores.values() {
            for shard in c.core.shards() {
                let txns = c.core.shard_state(shard).unwrap().txns();
                assert_eq!(txns.intents().count(), 0, "shard {shard}");
                assert_eq!(txns.records().count(), 0, "shard {shard}");
            }
        }
    }

    #[test]
    fn without_its_locks_a_transaction_cannot_commit() {
        let mut t = Txns::new();
        let a = key_for(&t.map, 0);
        let b = key_for(&t.map, 3);
        let txn = meta(1, 10, Policy::WoundWait);
        assert_eq!(t.lock(txn, &a), done());
        // b was never locked: shard 3 votes no, nothing is written anywhere.
        let (at, client) = t.commit(txn, 0, &[(&a, b"x"), (&b, b"y")]);
        assert_eq!(t.cl.reply(at, client), Some(Response::Outcome(Outcome::Aborted { reason: AbortReason::Conflict })));
        assert_eq!(t.get(&a, None), Some(Response::Outcome(Outcome::NotFound)));
        assert_eq!(t.get(&b, None), Some(Response::Outcome(Outcome::NotFound)));
    }

    #[test]
    fn wound_wait_an_older_writer_wounds_a_younger_holder_and_a_younger_one_waits() {
        let mut t = Txns::new();
        let k = key_for(&t.map, 2);
        let young = meta(1, 50, Policy::WoundWait);
        let old = meta(2, 10, Policy::WoundWait);
        assert_eq!(t.lock(young, &k), done());
        // The older requester wounds the younger holder and gets the lock.
        assert_eq!(t.lock(old, &k), done());
        let (at, client) = t.commit(young, 2, &[(&k, b"young")]);
        assert_eq!(t.cl.reply(at, client), Some(Response::Outcome(Outcome::Aborted { reason: AbortReason::Wounded })));
        // A younger requester now waits for the older holder…
        let younger = meta(3, 90, Policy::WoundWait);
        let (wat, waiter) = t.send(2, RequestBody::TxnLock { txn: younger, key: k.clone() });
        assert_eq!(t.cl.reply(wat, waiter), None, "waits");
        let (at, client) = t.commit(old, 2, &[(&k, b"old")]);
        let v = written(t.cl.reply(at, client));
        // …and is granted when it commits.
        assert_eq!(t.cl.reply(wat, waiter), done());
        assert_eq!(
            t.get(&k, None),
            Some(Response::Outcome(Outcome::Ok(OkReply::Value { version: v, value: b"old".to_vec() })))
        );
    }

    #[test]
    fn a_prepared_participant_whose_coordinator_vanished_gets_an_abort_and_a_late_commit_is_refused() {
        let mut t = Txns::new();
        let (anchor, participant) = (0, 3);
        let k = key_for(&t.map, participant);
        let k0 = key_for(&t.map, anchor);
        let txn = meta(1, 10, Policy::WoundWait);
        assert_eq!(t.lock(txn, &k), done());
        assert_eq!(t.lock(txn, &k0), done());
        // The anchor's leader sent a prepare and then vanished: deliver the prepare
        // as if from the anchor, with no coordinator behind it.
        let sets =
            TxnSets { writes: vec![WriteItem { key: k.clone(), value: Some(b"x".to_vec()) }], ..TxnSets::default() };
        let at = t.cl.leader_core(participant).unwrap();
        let prepare = corekv_rpc::node::TxnPeerMessage::Prepare { txn, sets };
        t.cl.cores.get_mut(&at).unwrap().core.on_txn_message(anchor, participant, prepare);
        t.cl.settle();
        let has_intent = |t: &Txns| {
            t.cl.cores
                .values()
                .any(|c| c.core.shard_state(participant).is_some_and(|s| s.txns().intent(&txn.id).is_some()))
        };
        assert!(has_intent(&t), "prepared");
        // A read of the key waits for the intent's decision.
        let (rat, reader) = t.send(participant, RequestBody::Read(ReadOp::Get { key: k.clone(), at: None }));
        assert_eq!(t.cl.reply(rat, reader), None, "the read waits for the decision");
        for _ in 0..(super::super::txn::TXN_QUERY_AFTER_TICKS + 20) {
            t.cl.tick();
        }
        assert!(!has_intent(&t), "the participant asked, the anchor wrote an abort, the intent is gone");
        match t.cl.reply(rat, reader) {
            Some(Response::Outcome(Outcome::NotFound)) => {}
            // Leadership moved back to the preferred replica meanwhile: the waiting
            // read was answered (not served) and a retry is served.
            Some(Response::NotLeader { .. }) => assert_eq!(t.get(&k, None), Some(Response::Outcome(Outcome::NotFound))),
            other => panic!("the read answered {other:?}"),
        }
        // The client's commit arrives late: the first decision stands.
        let (cat, client) = t.commit(txn, anchor, &[(&k0, b"y"), (&k, b"x")]);
        assert_eq!(t.cl.reply(cat, client), Some(Response::Outcome(Outcome::Aborted { reason: AbortReason::Timeout })));
        assert_eq!(t.get(&k, None), Some(Response::Outcome(Outcome::NotFound)));
    }

    #[test]
    fn a_read_for_update_takes_the_exclusive_lock_with_the_read() {
        let mut t = Txns::new();
        let k = key_for(&t.map, 1);
        let v0 = written(t.call(1, put(&t.map, 1, 1, b"v0").body));
        let updater = meta(1, 10, Policy::NoWait);
        let got = t.call(1, RequestBody::TxnRead { txn: updater, op: TxnReadOp::GetForUpdate { key: k.clone() } });
        assert_eq!(
            got,
            Some(Response::Outcome(Outcome::Ok(OkReply::TxnValue { version: v0, value: Some(b"v0".to_vec()) })))
        );
        // A shared read by another transaction now conflicts (a shared lock would
        // have let it in).
        let reader = meta(2, 20, Policy::NoWait);
        let got = t.call(1, RequestBody::TxnRead { txn: reader, op: TxnReadOp::Get { key: k.clone() } });
        assert_eq!(got, Some(Response::Outcome(Outcome::Aborted { reason: AbortReason::Conflict })));
        // The updater needs no further lock to write: its commit succeeds.
        let (at, client) = t.commit(updater, 1, &[(&k, b"v1")]);
        let v1 = written(t.cl.reply(at, client));
        assert!(v1 > v0);
        // Under OCC it is a plain read: nothing is locked.
        let occ = meta(3, 30, Policy::Occ);
        let got = t.call(1, RequestBody::TxnRead { txn: occ, op: TxnReadOp::GetForUpdate { key: k.clone() } });
        assert_eq!(
            got,
            Some(Response::Outcome(Outcome::Ok(OkReply::TxnValue { version: v1, value: Some(b"v1".to_vec()) })))
        );
        let after = meta(4, 40, Policy::NoWait);
        let got = t.call(1, RequestBody::TxnRead { txn: after, op: TxnReadOp::Get { key: k } });
        assert!(
            matches!(got, Some(Response::Outcome(Outcome::Ok(OkReply::TxnValue { version, .. }))) if version == v1)
        );
    }

    #[test]
    fn a_transactional_read_returns_the_newest_version_tombstones_included() {
        let mut t = Txns::new();
        let k = key_for(&t.map, 1);
        let v0 = written(t.call(1, put(&t.map, 1, 1, b"v0").body));
        let reader = meta(1, 10, Policy::WoundWait);
        let got = t.call(1, RequestBody::TxnRead { txn: reader, op: TxnReadOp::Get { key: k.clone() } });
        assert_eq!(
            got,
            Some(Response::Outcome(Outcome::Ok(OkReply::TxnValue { version: v0, value: Some(b"v0".to_vec()) })))
        );
        let absent = (0..).map(|i| format!("absent{i}").into_bytes()).find(|k| t.map.shard_of(k) == 1).unwrap();
        let got = t.call(1, RequestBody::TxnRead { txn: reader, op: TxnReadOp::Get { key: absent } });
        assert_eq!(got, Some(Response::Outcome(Outcome::Ok(OkReply::TxnValue { version: 0, value: None }))));
        // A plain write is a one-key transaction: it waits behind the reader's
        // shared lock until the reader ends.
        let tag = WriteTag { client: ClientId::from_u128(1), seq: 2, acked: 1 };
        let (wat, writer) = t.send(1, RequestBody::Write { tag, op: WriteOp::Delete { key: k.clone() } });
        assert_eq!(t.cl.reply(wat, writer), None, "waits for the reader");
        assert_eq!(t.call(1, RequestBody::TxnAbort { txn: reader.id }), done());
        let deleted = written(t.cl.reply(wat, writer));
        assert!(deleted > v0);
        // The delete left a tombstone whose version a transaction reads (to
        // validate it at commit).
        let reader = meta(2, 20, Policy::WoundWait);
        let got = t.call(1, RequestBody::TxnRead { txn: reader, op: TxnReadOp::Get { key: k } });
        assert_eq!(got, Some(Response::Outcome(Outcome::Ok(OkReply::TxnValue { version: deleted, value: None }))));
    }
}

/// The move rate of the snapshot-transfer tests, in bytes per second.
const SLOW_RATE: u64 = 100_000;

/// Their tuning: that rate, 8 KiB chunks, compaction every 16 KiB of log.
fn slow_snapshots(cfg: &mut NodeCoreConfig) {
    cfg.move_rate_bytes_per_sec = SLOW_RATE;
    cfg.raft.snapshot_chunk_bytes = 8 << 10;
    cfg.snapshot_log_bytes = 16 << 10;
    cfg.leader_balance = false;
}

/// One shard on three cores, led; one follower taken away (its disk lost).
/// Answers the cluster, the leader and the lost core.
fn one_follower_lost() -> (Cluster, Arc<ClusterMap>, Replica, Replica) {
    let map = test_map(3, 1, 1, 3);
    let mut cl = Cluster::with_config(map.clone(), slow_snapshots);
    cl.run_until_led();
    let leader = cl.leader_core(0).expect("led");
    let lost = *cl.cores.keys().find(|&&r| r != leader).expect("three cores");
    cl.cores.remove(&lost);
    (cl, map, leader, lost)
}

/// `count` writes of 1000 bytes to shard 0 at `leader`, each answered before the next.
fn write_while_lost(cl: &mut Cluster, map: &ClusterMap, leader: Replica, count: u64) {
    for seq in 1..=count {
        let client = ClientRef { conn: 1, id: seq };
        cl.cores.get_mut(&leader).unwrap().core.client_request(client, put(map, 0, seq, &[seq as u8; 1000]));
        cl.settle();
        assert!(matches!(cl.reply(leader, client), Some(Response::Outcome(Outcome::Ok(_)))));
    }
}

/// The lost core comes back with an empty disk.
fn return_empty(cl: &mut Cluster, map: &Arc<ClusterMap>, lost: Replica) {
    let mut storage = MemStorage::default();
    let cfg = config(lost.node, lost.core, slow_snapshots);
    let core = NodeCore::open(cfg, map.clone(), BTreeMap::new(), &mut storage, cl.now_ms).expect("opens");
    cl.cores.insert(lost, Core { core, storage, replies: Vec::new() });
}

#[test]
fn a_snapshot_to_a_replica_that_lost_its_disk_goes_no_faster_than_the_move_rate() {
    let (mut cl, map, leader, lost) = one_follower_lost();
    // 200 writes of 1000 bytes, compacted away while it is gone.
    write_while_lost(&mut cl, &map, leader, 200);
    let sent = |cl: &Cluster| cl.cores[&leader].core.raft_status(0).expect("leads").snapshot_bytes_sent;
    let before = sent(&cl);
    // It comes back empty: only a snapshot can catch it up.
    return_empty(&mut cl, &map, lost);
    let started = cl.now_ms;
    // The bucket starts full (100 ms of the rate) and the leader may hold one
    // window of credit it was granted before.
    let slack = SLOW_RATE / 10 + 4 * (8 << 10);
    let caught_up = |cl: &Cluster| {
        let st = cl.cores[&lost].core.raft_status(0).expect("held");
        st.applied >= cl.cores[&leader].core.raft_status(0).expect("leads").commit
    };
    while !caught_up(&cl) {
        assert!(cl.now_ms - started < 20_000, "the replica never caught up");
        cl.tick();
        let allowed = SLOW_RATE * (cl.now_ms - started) / 1000 + slack;
        assert!(sent(&cl) - before <= allowed, "{} bytes sent in {} ms", sent(&cl) - before, cl.now_ms - started);
    }
    let shipped = sent(&cl) - before;
    // One key's retained history (64 versions of 1000 bytes) went as a snapshot,
    // in more than one bucketful.
    assert!(shipped > 60_000 && shipped > slack, "the data went as a snapshot: {shipped} bytes");
    let stats = cl.cores[&lost].core.stats();
    assert!(stats.snapshots_installed >= 1 && stats.snapshot_bytes_installed > 0);
    assert_eq!(stats.move_snapshot_bytes, 0, "a voter that lost its disk is not a move's target");
    assert_eq!((stats.move_snapshots, stats.move_store_bytes), (0, 0));
}

#[test]
fn a_replica_fed_a_slow_snapshot_under_steady_writes_catches_up_after_one() {
    // The leader compacts every 16 KiB of log, writes keep coming at about the
    // rate the snapshot streams, and the snapshot takes ~1 s. A leader that
    // compacted meanwhile would leave the replica needing a newer snapshot each
    // time one arrived.
    let (mut cl, map, leader, lost) = one_follower_lost();
    let mut seq = 0u64;
    let mut write = |cl: &mut Cluster| {
        seq += 1;
        // Distinct keys: the snapshot grows with the data.
        let key = format!("k{seq}").into_bytes();
        let tag = WriteTag { client: ClientId::from_u128(1), seq, acked: seq - 1 };
        let request = Request {
            shard: 0,
            epoch: 1,
            body: RequestBody::Write { tag, op: WriteOp::Put { key, value: vec![7; 500] } },
        };
        cl.cores.get_mut(&leader).unwrap().core.client_request(ClientRef { conn: 1, id: seq }, request);
    };
    for _ in 0..200 {
        write(&mut cl);
        cl.settle();
    }
    return_empty(&mut cl, &map, lost);
    let caught_up = |cl: &Cluster| {
        let st = cl.cores[&lost].core.raft_status(0).expect("held");
        st.applied >= cl.cores[&leader].core.raft_status(0).expect("leads").commit
    };
    let started = cl.now_ms;
    while !caught_up(&cl) {
        assert!(cl.now_ms - started < 30_000, "the replica never caught up");
        // About 5 KB of writes a tick of 10 ms: faster than the snapshot streams.
        for _ in 0..2 {
            write(&mut cl);
        }
        cl.tick();
    }
    let installed = cl.cores[&lost].core.stats().snapshots_installed;
    assert_eq!(installed, 1, "one snapshot, then the log");
}

#[test]
fn a_quiet_group_keeping_the_wal_over_its_segment_target_is_snapshotted_early() {
    let map = test_map(3, 1, 2, 3);
    let mut cl = Cluster::new(map.clone());
    cl.run_until_led();
    let at = cl.leader_core(0).expect("led");
    let client = ClientRef { conn: 1, id: 1 };
    cl.cores.get_mut(&at).unwrap().core.client_request(client, put(&map, 0, 1, b"a few bytes"));
    cl.settle();
    assert!(matches!(cl.reply(at, client), Some(Response::Outcome(Outcome::Ok(_)))));
    let c = cl.cores.get_mut(&at).unwrap();
    assert!(!c.storage.snapshots.contains_key(&0), "far below its size threshold: no snapshot");
    // The WAL says shard 0 (and shard 7, unknown here) keep its oldest segment,
    // up to an index shard 0 has not applied yet: a snapshot would not help.
    let applied = c.core.groups[&0].raft.status().applied;
    c.storage.pinning = vec![(0, applied + 1), (7, 3)];
    c.core.process(&mut c.storage).expect("process");
    assert!(!c.storage.snapshots.contains_key(&0), "it has not applied that far");
    c.storage.pinning = vec![(0, applied), (7, 3)];
    c.core.process(&mut c.storage).expect("process");
    let snapshot = c.storage.snapshots.get(&0).expect("shard 0 snapshotted early");
    assert!(snapshot.meta.index >= applied && applied >= 2, "it covers the write: {:?}", snapshot.meta);
    assert_eq!(c.core.stats().snapshots_for_wal, 1);
    // Its marker is on its way: asked again, it takes no second snapshot.
    c.core.process(&mut c.storage).expect("process");
    assert_eq!(c.core.stats().snapshots_for_wal, 1);
    assert!(c.storage.open.iter().any(|r| matches!(r, Record::SnapshotMarker { group_id: 0, .. })));
}

#[test]
fn a_shard_snapshots_no_more_often_than_its_log_grows_by_its_own_size() {
    // One key of 1000-byte values, compaction configured at 16 KiB of log: the
    // key keeps 64 versions, so the state grows to about 64 KB. Snapshotting
    // at every 16 KiB would rewrite 64 KB per 16 KiB written (about 25 times in
    // 400 writes); with the threshold at the last snapshot's size once that is
    // larger, it stays at about one snapshot per 64 KB of log (9 in all).
    let map = test_map(3, 1, 1, 3);
    let mut cl = Cluster::with_config(map.clone(), slow_snapshots);
    cl.run_until_led();
    let leader = cl.leader_core(0).expect("led");
    for seq in 1..=400u64 {
        let client = ClientRef { conn: 1, id: seq };
        cl.cores.get_mut(&leader).unwrap().core.client_request(client, put(&map, 0, seq, &[seq as u8; 1000]));
        cl.settle();
        assert!(matches!(cl.reply(leader, client), Some(Response::Outcome(Outcome::Ok(_)))));
    }
    for core in cl.cores.values() {
        let taken = core.core.stats().snapshots_taken;
        assert!((3..=12).contains(&taken), "{taken} snapshots for 400 KB of log over a 64 KB state");
    }
}

#[test]
fn a_replica_needing_a_snapshot_gets_a_fresh_one_not_an_old_one_and_the_log_after_it() {
    // Distinct keys: the state grows past 200 KB, so the leader's compaction
    // threshold (the last snapshot's size) lets its log grow well past
    // fresh_snapshot_log_min since the last snapshot. Streaming that old snapshot
    // would send all of that log after it too.
    let (mut cl, map, leader, lost) = one_follower_lost();
    let mut seq = 0u64;
    let since_snapshot = |cl: &Cluster| cl.cores[&leader].core.groups[&0].applied_bytes_since_snapshot;
    while seq < 200 || since_snapshot(&cl) < 2 * fresh_snapshot_log_min(&cl.cores[&leader].core.groups[&0]) {
        assert!(seq < 3000, "the log never grew past the threshold");
        seq += 1;
        let tag = WriteTag { client: ClientId::from_u128(1), seq, acked: seq - 1 };
        let op = WriteOp::Put { key: format!("k{seq}").into_bytes(), value: vec![3; 1000] };
        let request = Request { shard: 0, epoch: 1, body: RequestBody::Write { tag, op } };
        cl.cores.get_mut(&leader).unwrap().core.client_request(ClientRef { conn: 1, id: seq }, request);
        cl.settle();
    }
    let old = cl.cores[&leader].core.raft_status(0).expect("leads");
    assert!(old.snapshot_index > 0 && old.snapshot_index < old.applied, "an old snapshot: {old:?}");
    return_empty(&mut cl, &map, lost);
    let started = cl.now_ms;
    loop {
        let st = cl.cores[&lost].core.raft_status(0).expect("held");
        if st.applied >= old.applied {
            break;
        }
        assert!(cl.now_ms - started < 30_000, "the replica never caught up");
        cl.tick();
    }
    let installed = cl.cores[&lost].storage.snapshots.get(&0).expect("it installed a snapshot");
    assert!(
        installed.meta.index >= old.applied,
        "the snapshot it got covers everything applied when it came back ({} < {})",
        installed.meta.index,
        old.applied
    );
    assert_eq!(cl.cores[&lost].core.stats().snapshots_installed, 1);
}

#[test]
fn a_shard_keeps_answering_writes_while_its_leader_streams_a_slow_snapshot() {
    let (mut cl, map, leader, lost) = one_follower_lost();
    write_while_lost(&mut cl, &map, leader, 100);
    return_empty(&mut cl, &map, lost);
    let streaming = |cl: &Cluster| {
        let st = cl.cores[&lost].core.raft_status(0).expect("held");
        st.applied < cl.cores[&leader].core.raft_status(0).expect("leads").commit
    };
    // The transfer takes about a second at the test's rate; a write asked at
    // every tick meanwhile is answered within a few ticks, not at its end.
    let mut seq = 100u64;
    let mut waiting: Vec<(ClientRef, u64)> = Vec::new();
    let mut answered = 0;
    let started = cl.ticks;
    while streaming(&cl) {
        assert!(cl.ticks - started < 3_000, "the replica never caught up");
        seq += 1;
        let client = ClientRef { conn: 1, id: seq };
        cl.cores.get_mut(&leader).unwrap().core.client_request(client, put(&map, 0, seq, &[1; 100]));
        waiting.push((client, cl.ticks));
        cl.tick();
        waiting.retain(|&(client, asked)| match cl.reply(leader, client) {
            Some(r) => {
                assert!(matches!(r, Response::Outcome(Outcome::Ok(_))), "{r:?}");
                answered += 1;
                false
            }
            None => {
                assert!(cl.ticks - asked <= 5, "a write waited {} ticks during the transfer", cl.ticks - asked);
                true
            }
        });
    }
    assert!(cl.ticks - started > 20 && answered > 20, "the transfer was not slow: {} ticks", cl.ticks - started);
}

/// A crash kept a snapshot file (durable at once) but lost the batch with its
/// WAL marker, and the WAL's own log ends below the file's index: the group
/// restarts from the file, and the entries it appends next must not follow a gap
/// in the WAL (recovery would refuse the core at the next restart).
#[test]
fn a_snapshot_file_whose_marker_was_lost_is_marked_again_before_the_log_goes_on() {
    use crate::wal::{SimDisk, SyncWal, WalConfig, WalIdentity, recover_store};
    let identity = WalIdentity { cluster_id: 1, node_id: 2, core_id: 0 };
    let wal_config = WalConfig { segment_bytes: 128 << 10, pending_bytes_max: 64 << 10, ..WalConfig::new(identity) };
    let entry = |index| Entry { term: 2, index, kind: EntryKind::Normal, data: vec![index as u8; 8] };
    let shard: ShardId = 2;
    let group = u64::from(shard);
    // Before the crash: entries 1..=12 durable; then a snapshot at 15 is installed
    // (file saved), its marker and truncation lost with the unsynced batch.
    let (mut wal, _) = SyncWal::open(SimDisk::new(), wal_config.clone()).expect("opens");
    wal.append(&Record::Entries { group_id: group, entries: (1..=12).map(entry).collect() }).expect("append");
    wal.flush().expect("flush");
    let fresh = DurableState::bootstrap(Vec::new());
    let file = Snapshot {
        meta: SnapshotMeta { index: 15, term: 2, conf: fresh.snapshot.meta.conf.clone() },
        data: Arc::from(Vec::new()),
    };
    // The restart: the group resumes from the file, then appends 16 and 17.
    let (mut wal, recovered) = SyncWal::open(wal.into_store(), wal_config.clone()).expect("recovers");
    let rec = GroupRecovery { log: recovered.groups.get(&group).cloned(), snapshot: Some(file) };
    let mut storage = MemStorage::default();
    let durable = durable_state(shard, Vec::new(), rec, &mut storage).expect("restarts from the file");
    assert_eq!(durable.snapshot.meta.index, 15);
    assert!(durable.entries.is_empty());
    for record in &storage.open {
        wal.append(record).expect("append");
    }
    wal.append(&Record::Entries { group_id: group, entries: (16..=17).map(entry).collect() }).expect("append");
    wal.flush().expect("flush");
    // The next restart recovers the group: snapshot 15, then 16 and 17.
    let recovered = recover_store(&mut wal.into_store(), Some(identity)).expect("no gap in the WAL");
    let log = &recovered.groups[&group];
    assert_eq!(log.snapshot_index(), 15);
    assert_eq!(log.entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![16, 17]);
}

/// A crash kept an installed snapshot's file but lost the batch with its marker
/// and the truncation of the log after it. Where the log disagrees with the
/// file at its index (a stale leader's entries, of older terms), the restart
/// drops the log after the file, in the WAL too; where it agrees (a
/// compaction's file), the log after the file stays.
#[test]
fn a_restart_from_an_installed_snapshot_file_drops_a_log_that_disagrees_with_it() {
    use crate::wal::{SimDisk, SyncWal, WalConfig, WalIdentity, recover_store};
    let identity = WalIdentity { cluster_id: 1, node_id: 2, core_id: 0 };
    let wal_config = WalConfig { segment_bytes: 128 << 10, pending_bytes_max: 64 << 10, ..WalConfig::new(identity) };
    let entry = |term, index| Entry { term, index, kind: EntryKind::Normal, data: vec![index as u8; 8] };
    let conf = DurableState::bootstrap(Vec::new()).snapshot.meta.conf;
    let file = Snapshot { meta: SnapshotMeta { index: 10, term: 3, conf }, data: Arc::from(Vec::new()) };
    for (log_term, kept) in [(2, false), (3, true)] {
        let shard: ShardId = 4;
        let group = u64::from(shard);
        let (mut wal, _) = SyncWal::open(SimDisk::new(), wal_config.clone()).expect("opens");
        wal.append(&Record::Entries { group_id: group, entries: (1..=14).map(|i| entry(log_term, i)).collect() })
            .expect("append");
        wal.flush().expect("flush");
        let (mut wal, recovered) = SyncWal::open(wal.into_store(), wal_config.clone()).expect("recovers");
        let rec = GroupRecovery { log: recovered.groups.get(&group).cloned(), snapshot: Some(file.clone()) };
        let mut storage = MemStorage::default();
        let durable = durable_state(shard, Vec::new(), rec, &mut storage).expect("restarts from the file");
        let after: Vec<u64> = durable.entries.iter().map(|e| e.index).collect();
        let expected: Vec<u64> = if kept { (11..=14).collect() } else { Vec::new() };
        assert_eq!(after, expected, "entries after the file, log of term {log_term}");
        for record in &storage.open {
            wal.append(record).expect("append");
        }
        wal.flush().expect("flush");
        // The next restart agrees: the WAL itself no longer holds the stale log.
        let recovered = recover_store(&mut wal.into_store(), Some(identity)).expect("recovers");
        let log = &recovered.groups[&group];
        assert_eq!(log.snapshot_index(), 10);
        assert_eq!(log.entries.iter().map(|e| e.index).collect::<Vec<_>>(), expected, "log of term {log_term}");
    }
}
