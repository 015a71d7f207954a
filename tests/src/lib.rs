//! Support for corekv's end-to-end tests against real `corekv-server` processes
//! (DESIGN §11): starting and hanging nodes ([`local`]), a nemesis that kills,
//! hangs and restarts them while clients work ([`nemesis`]), the clients' random
//! operations ([`workload`]), recording what they were told as a history for the
//! linearizability checker and judging it ([`history`]), and the knobs a person
//! turns to rerun or lengthen a run ([`knobs`]).
//!
//! [`TestClient`] is a minimal, blocking, retrying key-value client over
//! [`corekv_rpc::blocking`], and [`client`] gives it the shape of the client
//! library's blocking facade until that library lands.
//!
//! [`TestClient`] routes a key to its shard's preferred replica, follows
//! `NotLeader` hints, and retries `Busy`, `NotLeader`, lost connections and
//! `indeterminate` with the same write tag until its deadline, so a write is
//! applied at most once and a reply it reports is the one the shard gave.

pub mod client;
pub mod history;
pub mod knobs;
pub mod local;
pub mod nemesis;
pub mod workload;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use corekv_rpc::blocking::BlockingConn;
use corekv_rpc::kv::{
    ClientId, OkReply, Outcome, ReadOp, Request, RequestBody, Response, ScanItem, Seq, ShardId, Version, WriteOp,
    WriteTag,
};
use corekv_rpc::map::{ClusterMap, Replica};
use corekv_rpc::node::{AdminCall, AdminReply, Call, CoreStats, Reply, ShardStatus};

/// Per-connection I/O timeout.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before retrying a busy or leaderless shard.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// What a request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The shard answered.
    Outcome(Outcome),
    /// The deadline passed: for a write, its fate is unknown.
    GaveUp(String),
}

/// A blocking client for tests.
#[derive(Debug)]
pub struct TestClient {
    map: ClusterMap,
    conns: HashMap<(u64, u16), BlockingConn>,
    id: ClientId,
    next_seq: Seq,
    /// Sequence numbers sent and not yet answered; the acked prefix is below the
    /// smallest.
    unanswered: std::collections::BTreeSet<Seq>,
    /// Last leader seen per shard.
    leaders: HashMap<ShardId, u64>,
    deadline: Duration,
}

impl TestClient {
    /// Learns the cluster map from any of `addrs` (core 0 addresses).
    pub fn connect(addrs: &[String], deadline: Duration) -> Result<TestClient, String> {
        let start = Instant::now();
        loop {
            for addr in addrs {
                if let Ok(mut conn) = BlockingConn::connect(addr, 0, IO_TIMEOUT)
                    && let Ok(Reply::Admin(AdminReply::ClusterMap(map))) = conn.call(Call::Admin(AdminCall::ClusterMap))
                {
                    let id = ClientId::from_u128(u128::from(std::process::id()) << 64 | now_nanos());
                    return Ok(TestClient {
                        map,
                        conns: HashMap::new(),
                        id,
                        next_seq: 1,
                        unanswered: Default::default(),
                        leaders: HashMap::new(),
                        deadline,
                    });
                }
            }
            if start.elapsed() > deadline {
                return Err(format!("no node of {addrs:?} answered with a cluster map"));
            }
            std::thread::sleep(RETRY_PAUSE);
        }
    }

    /// Changes the per-request deadline.
    pub fn set_deadline(&mut self, deadline: Duration) {
        self.deadline = deadline;
    }

    /// The cluster map.
    pub fn map(&self) -> &ClusterMap {
        &self.map
    }

    fn conn(&mut self, node: u64, core: u16) -> Result<&mut BlockingConn, String> {
        if !self.conns.contains_key(&(node, core)) {
            let addr = self.map.core_addr(node, core).ok_or_else(|| format!("no address for node {node}"))?;
            let conn = BlockingConn::connect(&addr, self.map.cluster_id, IO_TIMEOUT).map_err(|e| e.to_string())?;
            self.conns.insert((node, core), conn);
        }
        Ok(self.conns.get_mut(&(node, core)).expect("inserted"))
    }

    /// One call to one core; a broken connection is dropped (and reconnected later).
    pub fn call_at(&mut self, node: u64, core: u16, call: Call) -> Result<Reply, String> {
        let result = self.conn(node, core)?.call(call).map_err(|e| e.to_string());
        if result.is_err() {
            self.conns.remove(&(node, core));
        }
        result
    }

    /// Sends `body` for `shard` until an answer or the deadline.
    fn request(&mut self, shard: ShardId, body: RequestBody) -> Answer {
        let start = Instant::now();
        let replicas: Vec<Replica> = self.map.replicas(shard).to_vec();
        let mut target = self.leaders.get(&shard).copied().unwrap_or(replicas[0].node);
        let mut attempt = 0usize;
        let mut last = String::from("no attempt");
        while start.elapsed() < self.deadline {
            let core = replicas.iter().find(|r| r.node == target).map_or(0, |r| r.core);
            let request = Request { shard, epoch: self.map.epoch, body: body.clone() };
            match self.call_at(target, core, Call::Kv(request)) {
                Ok(Reply::Kv(Response::Outcome(Outcome::Indeterminate))) => last = "indeterminate".into(),
                Ok(Reply::Kv(Response::Outcome(outcome))) => {
                    self.leaders.insert(shard, target);
                    return Answer::Outcome(outcome);
                }
                Ok(Reply::Kv(Response::NotLeader { hint })) if hint != 0 && hint != target => {
                    last = format!("not leader, hint {hint}");
                    target = hint;
                    continue;
                }
                Ok(other) => last = format!("{other:?}"),
                Err(e) => last = e,
            }
            attempt += 1;
            target = replicas[attempt % replicas.len()].node;
            std::thread::sleep(RETRY_PAUSE);
        }
        Answer::GaveUp(last)
    }

    /// One write, retried with its tag until an answer or the deadline.
    pub fn write(&mut self, op: WriteOp) -> Answer {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unanswered.insert(seq);
        let acked = self.unanswered.first().map_or(seq, |s| s - 1);
        let shard = self.map.shard_of(op.key());
        let tag = WriteTag { client: self.id, seq, acked };
        let answer = self.request(shard, RequestBody::Write { tag, op });
        if matches!(answer, Answer::Outcome(_)) {
            self.unanswered.remove(&seq);
        }
        answer
    }

    /// Puts `value` at `key`; the version written.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<Version, String> {
        match self.write(WriteOp::Put { key: key.to_vec(), value: value.to_vec() }) {
            Answer::Outcome(Outcome::Ok(OkReply::Written { version })) => Ok(version),
            other => Err(format!("put {}: {other:?}", String::from_utf8_lossy(key))),
        }
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: &[u8]) -> Answer {
        self.write(WriteOp::Delete { key: key.to_vec() })
    }

    /// Compare-and-set.
    pub fn cas(&mut self, key: &[u8], expected: Version, value: &[u8]) -> Answer {
        self.write(WriteOp::Cas { key: key.to_vec(), expected, value: value.to_vec() })
    }

    /// One read, retried until an answer or the deadline.
    pub fn read(&mut self, op: ReadOp) -> Answer {
        let shard = self.map.shard_of(match &op {
            ReadOp::Get { key, .. } | ReadOp::Versions { key } => key,
            ReadOp::Scan { start, .. } => start,
        });
        self.request(shard, RequestBody::Read(op))
    }

    /// Linearizable get: `Some((version, value))` or `None` when absent.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<(Version, Vec<u8>)>, String> {
        let shard = self.map.shard_of(key);
        match self.request(shard, RequestBody::Read(ReadOp::Get { key: key.to_vec(), at: None })) {
            Answer::Outcome(Outcome::Ok(OkReply::Value { version, value })) => Ok(Some((version, value))),
            Answer::Outcome(Outcome::NotFound) => Ok(None),
            other => Err(format!("get {}: {other:?}", String::from_utf8_lossy(key))),
        }
    }

    /// Live keys in `[start, end)` in key order, at most `limit`: every shard is
    /// asked (each answers for its own keys, resuming where it stopped) and the
    /// answers are merged.
    pub fn scan(&mut self, start: &[u8], end: &[u8], limit: u32) -> Result<Vec<ScanItem>, String> {
        let mut items = Vec::new();
        for shard in 0..self.map.shard_count() {
            let mut from = start.to_vec();
            loop {
                let op = ReadOp::Scan { start: from.clone(), end: end.to_vec(), limit, at: None };
                match self.request(shard, RequestBody::Read(op)) {
                    Answer::Outcome(Outcome::Ok(OkReply::Scan { items: got, resume })) => {
                        items.extend(got);
                        match resume {
                            Some(next) if items.len() < limit as usize * 64 => from = next,
                            _ => break,
                        }
                    }
                    other => return Err(format!("scan of shard {shard}: {other:?}")),
                }
            }
        }
        items.sort_by(|a, b| a.key.cmp(&b.key));
        items.truncate(limit as usize);
        Ok(items)
    }

    /// `call` answered by every core of every node that answers, with who answered.
    fn ask_every_core(&mut self, call: AdminCall) -> Vec<(u64, u16, AdminReply)> {
        let mut out = Vec::new();
        for (node, cores) in self.map.nodes.iter().map(|n| (n.id, n.cores)).collect::<Vec<_>>() {
            for core in 0..cores {
                if let Ok(Reply::Admin(reply)) = self.call_at(node, core, Call::Admin(call.clone())) {
                    out.push((node, core, reply));
                }
            }
        }
        out
    }

    /// Every core's shard status, from every node that answers.
    pub fn status(&mut self) -> Vec<(u64, u16, Vec<ShardStatus>)> {
        let replies = self.ask_every_core(AdminCall::Status);
        replies
            .into_iter()
            .filter_map(|(node, core, reply)| match reply {
                AdminReply::Status { shards, .. } => Some((node, core, shards)),
                _ => None,
            })
            .collect()
    }

    /// Every core's counters, from every node that answers.
    pub fn stats(&mut self) -> Vec<CoreStats> {
        let replies = self.ask_every_core(AdminCall::Stats);
        replies
            .into_iter()
            .filter_map(|(_, _, reply)| match reply {
                AdminReply::Stats(stats) => Some(stats),
                _ => None,
            })
            .collect()
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}
