//! Simulated clients of the cluster simulator: each one pipelined, with its own
//! random 128-bit id, doing get / put / delete / cas on a small key set, routed by
//! the cluster map like the real client library (DESIGN §6).
//!
//! A client keeps up to a configured number of operations in flight (each write
//! with its own seq; the acked prefix stops below the lowest write still in
//! flight). It sends each attempt to one node core and retries on its own: NotLeader
//! follows the hint, WrongShard and silence (a lost request or reply) move on to
//! the next replica, Busy and Indeterminate wait a little; every retry of a write
//! carries the SAME write tag (client id, seq, acked prefix), so the shard applies
//! it at most once. At the deadline a write that got no definite answer is
//! recorded `indeterminate` (it may have taken effect), a read is not recorded.
//!
//! Pure decisions: the cluster simulator passes in the time, its RNG and the map,
//! delivers what a client sends and calls back with what arrives.

use std::collections::{BTreeMap, BTreeSet};

use corekv_rpc::kv::{
    ClientId, OkReply, Outcome, ReadOp, Request, RequestBody, Response, Seq, ShardId, Version, WriteOp, WriteTag,
};
use corekv_rpc::map::{ClusterMap, Replica};
use corekv_rpc::raft::NodeId;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::check::{self, Call, Operation};

/// One attempt to send: `request` to core `to`, answered under attempt `attempt`.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The node core asked.
    pub to: Replica,
    /// The attempt's id (unique per client).
    pub attempt: u64,
    /// The request (the same for every attempt of one operation).
    pub request: Request,
}

/// What a client does after an answer or a timer.
#[derive(Debug)]
pub enum Next {
    /// Nothing (an answer to a finished operation, or a timer that is no longer
    /// current).
    Nothing,
    /// Send again after `after_us`, to the target chosen then, unless attempt
    /// `attempt` is no longer its operation's latest by then.
    RetryAfter {
        /// The pause.
        after_us: u64,
        /// The operation's latest attempt now.
        attempt: u64,
    },
    /// Send this attempt now.
    Send(Attempt),
    /// The operation finished; `Some` is the history record (reads past their
    /// deadline leave none).
    Done(Option<Operation>),
    /// The cluster answered something a correct node never answers.
    Broken(String),
}

/// An operation a client has in flight.
#[derive(Debug)]
struct Pending {
    call: Call,
    request: Request,
    /// The write's sequence number (None for reads).
    seq: Option<Seq>,
    invoke_us: u64,
    deadline_us: u64,
    /// Every attempt id of this operation.
    attempts: Vec<u64>,
    /// The node the client believes leads the shard.
    target: NodeId,
    /// The node the latest attempt went to (the target, or a random replica).
    asked: NodeId,
}

impl Pending {
    fn latest(&self) -> u64 {
        *self.attempts.last().expect("an operation in flight has an attempt")
    }
}

/// Counters of one client.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClientStats {
    /// Attempts sent beyond the first of each operation.
    pub retries: u64,
    /// Writes retried after a silence (lost request or reply) or an
    /// `indeterminate` answer: the retries exactly-once must absorb.
    pub blind_write_retries: u64,
}

/// One simulated client.
#[derive(Debug)]
pub struct Client {
    /// The client's number in the history.
    pub index: u64,
    id: ClientId,
    next_seq: Seq,
    next_attempt: u64,
    ops_started: u64,
    leader_of: BTreeMap<ShardId, NodeId>,
    known_version: BTreeMap<Vec<u8>, Version>,
    /// Operations in flight, by their first attempt id.
    pending: BTreeMap<u64, Pending>,
    /// Attempt id -> its operation, for every operation in flight.
    attempt_op: BTreeMap<u64, u64>,
    /// Seqs of the writes in flight: the acked prefix stops below the lowest.
    writes_in_flight: BTreeSet<Seq>,
    /// Counters.
    pub stats: ClientStats,
}

/// Chance that an attempt goes to a random replica instead of the believed
/// leader: exercises redirects (and finds replicas that answer when they must not).
const RANDOM_REPLICA_PERCENT: u32 = 10;

impl Client {
    /// A client numbered `index` with a random id.
    pub fn new(index: u64, rng: &mut ChaCha8Rng) -> Client {
        Client {
            index,
            id: ClientId::from_u128(rng.random::<u128>()),
            next_seq: 1,
            next_attempt: 1,
            ops_started: 0,
            leader_of: BTreeMap::new(),
            known_version: BTreeMap::new(),
            pending: BTreeMap::new(),
            attempt_op: BTreeMap::new(),
            writes_in_flight: BTreeSet::new(),
            stats: ClientStats::default(),
        }
    }

    /// Operations in flight.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Starts a random operation on one of `keys`.
    pub fn start_random(
        &mut self,
        rng: &mut ChaCha8Rng,
        map: &ClusterMap,
        keys: &[Vec<u8>],
        now_us: u64,
        deadline_us: u64,
    ) -> Attempt {
        let key = keys[rng.random_range(0..keys.len())].clone();
        self.ops_started += 1;
        let value = format!("c{}.{}", self.index, self.ops_started).into_bytes();
        let roll = rng.random_range(0..100u32);
        let call = match roll {
            0..35 => Call::Get { key },
            35..65 => Call::Put { key, value },
            65..80 => Call::Delete { key },
            _ => {
                let known = self.known_version.get(&key).copied().unwrap_or(0);
                let expected = match rng.random_range(0..10u32) {
                    0..7 => known,
                    7..9 => 0,
                    _ => known + 1,
                };
                Call::Cas { key, expected_version: expected, value }
            }
        };
        self.start(call, rng, map, now_us, deadline_us)
    }

    /// Starts `call`.
    pub fn start(
        &mut self,
        call: Call,
        rng: &mut ChaCha8Rng,
        map: &ClusterMap,
        now_us: u64,
        deadline_us: u64,
    ) -> Attempt {
        let shard = map.shard_of(call.key());
        let mut seq = None;
        let body = match &call {
            Call::Get { key } => RequestBody::Read(ReadOp::Get { key: key.clone(), at: None }),
            Call::GetAt { key, at_version } => {
                RequestBody::Read(ReadOp::Get { key: key.clone(), at: Some(*at_version) })
            }
            Call::Put { key, value } => self.write(&mut seq, WriteOp::Put { key: key.clone(), value: value.clone() }),
            Call::Delete { key } => self.write(&mut seq, WriteOp::Delete { key: key.clone() }),
            Call::Cas { key, expected_version, value } => self
                .write(&mut seq, WriteOp::Cas { key: key.clone(), expected: *expected_version, value: value.clone() }),
        };
        let request = Request { shard, epoch: map.epoch, body };
        let target = self.leader_of.get(&shard).copied().unwrap_or_else(|| map.replicas(shard)[0].node);
        let op = self.next_attempt;
        let pending =
            Pending { call, request, seq, invoke_us: now_us, deadline_us, attempts: Vec::new(), target, asked: target };
        self.pending.insert(op, pending);
        self.attempt(op, rng, map)
    }

    /// A write's tag: the next seq, and the acked prefix: every seq below the
    /// lowest write still in flight has its answer (or was given up on).
    fn write(&mut self, seq_out: &mut Option<Seq>, op: WriteOp) -> RequestBody {
        let seq = self.next_seq;
        self.next_seq += 1;
        let acked = self.writes_in_flight.first().map_or(seq - 1, |&lowest| lowest - 1);
        self.writes_in_flight.insert(seq);
        *seq_out = Some(seq);
        RequestBody::Write { tag: WriteTag { client: self.id, seq, acked }, op }
    }

    fn attempt(&mut self, op: u64, rng: &mut ChaCha8Rng, map: &ClusterMap) -> Attempt {
        let p = self.pending.get_mut(&op).expect("an operation in flight");
        // Every member of the shard: a replica on its way out may still lead.
        let replicas: Vec<Replica> = map.members(p.request.shard).copied().collect();
        let node = if rng.random_range(0..100u32) < RANDOM_REPLICA_PERCENT {
            replicas[rng.random_range(0..replicas.len())].node
        } else {
            p.target
        };
        // A target the map no longer names (it moved away): start over at the first.
        let to = replicas.iter().copied().find(|r| r.node == node).unwrap_or(replicas[0]);
        let node = to.node;
        if !p.attempts.is_empty() {
            self.stats.retries += 1;
        }
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        p.attempts.push(attempt);
        p.asked = node;
        self.attempt_op.insert(attempt, op);
        Attempt { to, attempt, request: p.request.clone() }
    }

    /// The operation whose latest attempt is `attempt`.
    fn op_of_latest(&self, attempt: u64) -> Option<u64> {
        let op = *self.attempt_op.get(&attempt)?;
        (self.pending[&op].latest() == attempt).then_some(op)
    }

    /// The next replica after the one asked last (a silent or wrong one).
    fn rotate(&mut self, op: u64, map: &ClusterMap) {
        let p = self.pending.get_mut(&op).expect("an operation in flight");
        let replicas: Vec<Replica> = map.members(p.request.shard).copied().collect();
        let at = replicas.iter().position(|r| r.node == p.asked).unwrap_or(0);
        p.target = replicas[(at + 1) % replicas.len()].node;
        self.leader_of.insert(p.request.shard, p.target);
    }

    /// The attempt `attempt` got no answer in time.
    pub fn on_timeout(&mut self, attempt: u64, rng: &mut ChaCha8Rng, map: &ClusterMap, now_us: u64) -> Next {
        let Some(op) = self.op_of_latest(attempt) else { return Next::Nothing };
        if let Some(done) = self.expire_if_due(op, now_us) {
            return done;
        }
        if self.pending[&op].call.is_write() {
            self.stats.blind_write_retries += 1;
        }
        self.rotate(op, map);
        Next::Send(self.attempt(op, rng, map))
    }

    /// A retry's pause is over: send again, unless the deadline passed or an answer
    /// came meanwhile.
    pub fn on_retry(&mut self, attempt: u64, rng: &mut ChaCha8Rng, map: &ClusterMap, now_us: u64) -> Next {
        let Some(op) = self.op_of_latest(attempt) else { return Next::Nothing };
        if let Some(done) = self.expire_if_due(op, now_us) {
            return done;
        }
        Next::Send(self.attempt(op, rng, map))
    }

    fn finish(&mut self, op: u64) -> Pending {
        let p = self.pending.remove(&op).expect("an operation in flight");
        for attempt in &p.attempts {
            self.attempt_op.remove(attempt);
        }
        if let Some(seq) = p.seq {
            self.writes_in_flight.remove(&seq);
        }
        p
    }

    fn expire_if_due(&mut self, op: u64, now_us: u64) -> Option<Next> {
        if now_us < self.pending[&op].deadline_us {
            return None;
        }
        let p = self.finish(op);
        // A write that was sent may have been applied: its outcome is unknown.
        let record = p.call.is_write().then_some(Operation {
            client: self.index,
            invoke_time: p.invoke_us,
            return_time: None,
            call: p.call,
            outcome: check::Outcome::Indeterminate,
        });
        Some(Next::Done(record))
    }

    /// An answer to attempt `attempt` arrived. A definite outcome counts from any
    /// attempt of its operation (they all carry the same request); routing
    /// answers only from the latest attempt.
    pub fn on_reply(&mut self, attempt: u64, response: Response, map: &ClusterMap, now_us: u64) -> Next {
        let Some(&op) = self.attempt_op.get(&attempt) else { return Next::Nothing };
        let p = self.pending.get_mut(&op).expect("attempts map to operations in flight");
        let latest = p.latest() == attempt;
        let shard = p.request.shard;
        let retry = |after_us| Next::RetryAfter { after_us, attempt };
        match response {
            Response::Outcome(outcome) => self.on_outcome(op, outcome, latest, now_us),
            _ if !latest => Next::Nothing,
            Response::NotLeader { hint } => {
                if hint != 0 && map.core_of(shard, hint).is_some() && hint != p.asked {
                    p.target = hint;
                    self.leader_of.insert(shard, hint);
                    retry(0)
                } else {
                    self.rotate(op, map);
                    retry(2_000)
                }
            }
            Response::WrongShard { .. } => {
                self.rotate(op, map);
                retry(1_000)
            }
            Response::Busy => retry(10_000),
        }
    }

    fn on_outcome(&mut self, op: u64, outcome: Outcome, latest: bool, now_us: u64) -> Next {
        let p = &self.pending[&op];
        let attempt = p.latest();
        let recorded = match (&p.call, outcome) {
            (_, Outcome::Invalid { message }) => {
                return Next::Broken(format!("{} answered invalid: {message}", p.call));
            }
            (_, Outcome::Indeterminate | Outcome::Unavailable) if !latest => return Next::Nothing,
            // The replica stepped down with the write proposed, or the shard kept no
            // reply for this seq: retry with the same tag (applied at most once).
            (call, Outcome::Indeterminate | Outcome::Unavailable) => {
                if call.is_write() {
                    self.stats.blind_write_retries += 1;
                }
                return Next::RetryAfter { after_us: 5_000, attempt };
            }
            (Call::Get { .. } | Call::GetAt { .. }, Outcome::Ok(OkReply::Value { version, value })) => {
                check::Outcome::Value { value, version }
            }
            (Call::Get { .. } | Call::GetAt { .. } | Call::Delete { .. }, Outcome::NotFound) => {
                check::Outcome::NotFound
            }
            (Call::Put { .. } | Call::Delete { .. } | Call::Cas { .. }, Outcome::Ok(OkReply::Written { version })) => {
                check::Outcome::Written { version }
            }
            (Call::Cas { .. }, Outcome::VersionMismatch { current }) => check::Outcome::VersionMismatch { current },
            (Call::GetAt { .. }, Outcome::Compacted) => check::Outcome::Compacted,
            (call, other) => return Next::Broken(format!("{call} answered {other:?}")),
        };
        let p = self.finish(op);
        let known = match (&p.call, &recorded) {
            (Call::Delete { .. }, _) => Some(0),
            (_, check::Outcome::Value { version, .. } | check::Outcome::Written { version }) => Some(*version),
            (_, check::Outcome::VersionMismatch { current }) => Some(*current),
            (_, check::Outcome::NotFound) => Some(0),
            _ => None,
        };
        if let Some(version) = known {
            self.known_version.insert(p.call.key().to_vec(), version);
        }
        Next::Done(Some(Operation {
            client: self.index,
            invoke_time: p.invoke_us,
            return_time: Some(now_us),
            call: p.call,
            outcome: recorded,
        }))
    }
}
