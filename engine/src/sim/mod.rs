//! The deterministic simulator: whole Raft clusters in one thread, one seed,
//! simulated time (DESIGN §11).
//!
//! It drives the very [`RawNode`] code the runtime will drive, through:
//! - a simulated network ([`net`]): per-link cuts, partitions, drops, duplicates,
//!   delays, long delays (reordering);
//! - a simulated disk: every `Ready` becomes durable only after a simulated fsync
//!   latency; a crash loses what was not yet durable, and the restarted node gets
//!   nothing addressed to its old incarnation;
//! - drifting node clocks (each node ticks at its own rate);
//! - a client that proposes unique commands and records which were acknowledged.
//!
//! Every event is checked against the Raft safety invariants ([`invariants`]); a
//! violation panics with `CORE_SEED=<seed>`, and a run is reproduced bit for bit by
//! its seed ([`Sim::trace`] is the hash of every event, in order). No clock, thread,
//! socket, file or global RNG is used here. [`cluster`] does the same for whole
//! clusters of node cores (many groups per core) with retrying clients.

pub mod cluster;
pub mod invariants;
pub mod net;
pub mod storage;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use corekv_rpc::raft::{ConfChange, Entry, EntryKind, Index, Message, NodeId};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::raft::{Config, DurableState, ProposeError, RawNode, ReadState, Ready, Role, Snapshot, Status};
use invariants::{History, chain, check_log_matching};
pub use net::{Links, NetFaults};

/// Seeds a simulated scenario runs by default in `cargo test` (DESIGN §11).
pub const DEFAULT_SEEDS: u64 = 20;

/// The seeds scenario `name` runs: `CORE_SEED=<s>` for that one seed, else
/// `CORE_SIM_SEEDS=<n>` (default [`DEFAULT_SEEDS`]) seeds starting at a hash of
/// the name, so that scenarios differ and the suite covers more ground.
///
/// # Panics
/// When either variable is set to something that is not a number: a test
/// knob, failing loudly.
pub fn seed_list(name: &str) -> Vec<u64> {
    match std::env::var("CORE_SEED") {
        Ok(s) => vec![s.parse().expect("CORE_SEED must be a number")],
        Err(_) => {
            let n = std::env::var("CORE_SIM_SEEDS").map_or(DEFAULT_SEEDS, |s| s.parse().expect("a count"));
            let base = name.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
            (0..n).map(|i| base.wrapping_add(i)).collect()
        }
    }
}
use storage::{NodeStorage, PersistWait, Persisted};

/// How a simulated cluster is built.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed: everything random derives from it.
    pub seed: u64,
    /// Founding voters are `1..=nodes`.
    pub nodes: u64,
    /// Simulated time per Raft tick.
    pub tick_us: u64,
    /// Each node's clock runs up to this many parts per thousand fast or slow.
    pub clock_drift_permille: u64,
    /// fsync latency, uniform in this range.
    pub fsync_us: (u64, u64),
    /// Network faults (changeable during a run).
    pub faults: NetFaults,
    /// A node compacts its log into a snapshot every this many applied entries
    /// (0 = never).
    pub snapshot_every: u64,
    /// Extra bytes in each snapshot, to exercise chunked transfer.
    pub snapshot_padding_bytes: usize,
    /// Bytes in each client command (at least 8: the command id).
    pub command_bytes: usize,
    /// Raft configuration applied to every node (the id is set per node).
    pub raft: Config,
}

impl SimConfig {
    /// A reliable cluster of `nodes` with 10 ms ticks.
    pub fn new(seed: u64, nodes: u64) -> SimConfig {
        SimConfig {
            seed,
            nodes,
            tick_us: 10_000,
            clock_drift_permille: 10,
            fsync_us: (100, 2_000),
            faults: NetFaults::reliable(),
            snapshot_every: 0,
            snapshot_padding_bytes: 0,
            command_bytes: 16,
            // The lab's timing: elections after 200–400 ms, heartbeats every 50 ms.
            raft: Config {
                election_timeout_ticks: 20,
                heartbeat_interval_ticks: 5,
                snapshot_chunk_bytes: 1024,
                inflight_msgs_max: 32,
                ..Config::new(1)
            },
        }
    }
}

#[derive(Debug)]
enum Event {
    Tick { node: NodeId, incarnation: u64 },
    Deliver { msg: Message, incarnation: u64 },
    PersistDone { node: NodeId, incarnation: u64 },
}

/// The replicated state machine of a node: the chain of applied commands.
#[derive(Debug, Clone, Copy)]
struct Machine {
    applied: Index,
    state: u64,
}

#[derive(Debug)]
struct SimNode {
    raft: Option<RawNode>,
    incarnation: u64,
    storage: NodeStorage,
    machine: Machine,
    /// Reads confirmed by Raft, waiting for the machine to reach their index.
    confirmed_reads: Vec<ReadState>,
    /// Tick period of this node's clock.
    tick_us: u64,
}

/// Counters of what crossed the network.
#[derive(Debug, Default, Clone)]
pub struct NetStats {
    /// Messages sent, by kind.
    pub sent_by_kind: BTreeMap<&'static str, u64>,
    /// Entry payload bytes sent in appends.
    pub append_payload_bytes: u64,
    /// Messages sent in all.
    pub sent: u64,
}

/// A simulated cluster.
pub struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    now_us: u64,
    seq: u64,
    events: BTreeMap<(u64, u64), Event>,
    nodes: BTreeMap<NodeId, SimNode>,
    links: Links,
    history: History,
    /// command id -> (index, term, proposing node), for commands in flight.
    proposed: BTreeMap<u64, (Index, u64)>,
    /// command id -> index where it was acknowledged.
    acked: BTreeMap<u64, Index>,
    next_command: u64,
    trace: Vec<u64>,
    stats: NetStats,
    /// Highest index of any acknowledged command.
    acked_index_max: Index,
    /// read tag -> the acknowledged index the read must reflect.
    reads_in_flight: BTreeMap<u64, Index>,
    next_read: u64,
    reads_served: u64,
}

impl Sim {
    /// Builds the cluster and schedules every node's first tick.
    pub fn new(cfg: SimConfig) -> Sim {
        let mut sim = Sim {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            now_us: 0,
            seq: 0,
            events: BTreeMap::new(),
            nodes: BTreeMap::new(),
            links: Links::default(),
            history: History::default(),
            proposed: BTreeMap::new(),
            acked: BTreeMap::new(),
            next_command: 1,
            trace: Vec::new(),
            stats: NetStats::default(),
            acked_index_max: 0,
            reads_in_flight: BTreeMap::new(),
            next_read: 1,
            reads_served: 0,
            cfg,
        };
        let voters: Vec<NodeId> = (1..=sim.cfg.nodes).collect();
        for &id in &voters {
            sim.add_node_with(id, DurableState::bootstrap(voters.clone()));
        }
        sim
    }

    fn add_node_with(&mut self, id: NodeId, durable: DurableState) {
        let drift = self.cfg.clock_drift_permille;
        let skew = self.rng.random_range(0..=2 * drift) as i64 - drift as i64;
        let tick_us = (self.cfg.tick_us as i64 * (1000 + skew) / 1000) as u64;
        let storage = NodeStorage::create(id, &durable).unwrap_or_else(|e| self.fail(e));
        let node = SimNode {
            raft: None,
            incarnation: 0,
            storage,
            machine: Machine { applied: 0, state: 0 },
            confirmed_reads: Vec::new(),
            tick_us,
        };
        self.nodes.insert(id, node);
        self.start(id);
    }

    /// Adds a node that belongs to no configuration yet (to be added as a learner).
    pub fn add_empty_node(&mut self, id: NodeId) {
        assert!(!self.nodes.contains_key(&id), "node {id} exists");
        self.add_node_with(id, DurableState::bootstrap(vec![]));
    }

    fn start(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let mut cfg = self.cfg.raft.clone();
        cfg.id = id;
        let seed = self.rng.random::<u64>();
        let durable = match node.storage.open() {
            Ok(d) => d,
            Err(e) => self.fail(format!("node {id} cannot recover: {e}")),
        };
        let node = self.nodes.get_mut(&id).expect("known node");
        node.machine = machine_from_snapshot(&durable.snapshot);
        let raft = RawNode::new(cfg, durable, seed).unwrap_or_else(|e| panic!("bad simulator config: {e}"));
        node.raft = Some(raft);
        let incarnation = node.incarnation;
        let phase = self.rng.random_range(0..node.tick_us);
        self.schedule(phase, Event::Tick { node: id, incarnation });
        let m = self.nodes[&id].machine;
        if let Some(expected) = self.history.chain_at(m.applied)
            && expected != m.state
        {
            self.fail(format!("node {id} restarted from a snapshot at {} with a foreign state", m.applied));
        }
    }

    fn schedule(&mut self, after_us: u64, event: Event) {
        self.seq += 1;
        self.events.insert((self.now_us + after_us, self.seq), event);
    }

    fn fail(&self, what: String) -> ! {
        panic!("CORE_SEED={} at t={}ms: {what}", self.cfg.seed, self.now_us / 1000);
    }

    fn record(&mut self, parts: &[u64]) {
        let mut h = self.trace.last().copied().unwrap_or(0);
        for &p in parts {
            h = chain(h, &p.to_le_bytes());
        }
        self.trace.push(h);
    }

    // ----- time ------------------------------------------------------------------

    /// Current simulated time in milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.now_us / 1000
    }

    /// Runs the cluster for `ms` of simulated time.
    pub fn run_for(&mut self, ms: u64) {
        let until = self.now_us + ms * 1000;
        while let Some((&(at, seq), _)) = self.events.first_key_value() {
            if at > until {
                break;
            }
            let event = self.events.remove(&(at, seq)).expect("just seen");
            self.now_us = at;
            self.handle(event);
        }
        self.now_us = until;
    }

    /// Runs until `done` holds (checked every 10 ms) or `timeout_ms` passes.
    /// Returns whether it held.
    pub fn run_until(&mut self, timeout_ms: u64, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let mut waited = 0;
        while waited <= timeout_ms {
            if done(self) {
                return true;
            }
            self.run_for(10);
            waited += 10;
        }
        done(self)
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick { node, incarnation } => {
                let Some(n) = self.nodes.get_mut(&node) else { return };
                if n.incarnation != incarnation || n.raft.is_none() {
                    return;
                }
                let tick_us = n.tick_us;
                n.raft.as_mut().expect("live").tick();
                self.record(&[1, node]);
                self.schedule(tick_us, Event::Tick { node, incarnation });
                self.process(node);
            }
            Event::Deliver { msg, incarnation } => {
                let to = msg.to;
                let live = self.nodes.get(&to).is_some_and(|n| n.incarnation == incarnation && n.raft.is_some());
                if !live {
                    return;
                }
                self.record(&[2, msg.from, to, msg.term]);
                let raft = self.nodes.get_mut(&to).and_then(|n| n.raft.as_mut()).expect("live");
                if let Err(e) = raft.step(msg) {
                    self.fail(format!("node {to} refused a message from a correct peer: {e}"));
                }
                self.process(to);
            }
            Event::PersistDone { node, incarnation } => {
                let live = self.nodes.get(&node).is_some_and(|n| n.incarnation == incarnation && n.raft.is_some());
                if !live {
                    return;
                }
                let n = self.nodes.get_mut(&node).expect("known node");
                let waits = match n.storage.finish_batch() {
                    Ok(w) => w,
                    Err(e) => self.fail(format!("node {node}: {e}")),
                };
                self.record(&[3, node, waits.len() as u64]);
                for wait in waits {
                    self.persisted(node, wait);
                }
                self.start_batch(node);
                self.process(node);
            }
        }
    }

    /// A Ready became durable: tell Raft, then send what waited for it.
    fn persisted(&mut self, id: NodeId, wait: PersistWait) {
        let raft = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()).expect("live");
        raft.on_persisted(wait.number);
        for m in wait.messages_after_persist {
            self.send(m);
        }
    }

    /// Starts the node's next WAL batch if it can; its fdatasync completes later.
    fn start_batch(&mut self, id: NodeId) {
        let n = self.nodes.get_mut(&id).expect("known node");
        match n.storage.start_batch() {
            Ok(false) => {}
            Ok(true) => {
                let incarnation = n.incarnation;
                let latency = self.rng.random_range(self.cfg.fsync_us.0..=self.cfg.fsync_us.1);
                self.schedule(latency, Event::PersistDone { node: id, incarnation });
            }
            Err(e) => self.fail(format!("node {id}: {e}")),
        }
    }

    fn send(&mut self, msg: Message) {
        *self.stats.sent_by_kind.entry(msg.body.kind_name()).or_default() += 1;
        self.stats.sent += 1;
        if let corekv_rpc::raft::MessageBody::Append { entries, .. } = &msg.body {
            self.stats.append_payload_bytes += entries.iter().map(|e| e.data.len() as u64).sum::<u64>();
        }
        if !self.links.connected(msg.from, msg.to) {
            return;
        }
        let Some(incarnation) = self.nodes.get(&msg.to).map(|n| n.incarnation) else { return };
        let delays = net::fate(&mut self.rng, &self.cfg.faults);
        for delay in delays {
            self.schedule(delay, Event::Deliver { msg: msg.clone(), incarnation });
        }
    }

    /// Drains a node's Readys: messages out, writes to the disk queue, entries applied.
    fn process(&mut self, id: NodeId) {
        loop {
            let n = self.nodes.get_mut(&id).expect("known node");
            let raft = n.raft.as_mut().expect("live");
            if !raft.has_ready() {
                return;
            }
            let rd = raft.ready();
            self.handle_ready(id, rd);
        }
    }

    /// A leader's commit index must be held by a majority of its voters (durably
    /// or in memory): catches a follower that threw away entries it acknowledged.
    /// Skipped near membership changes, where the old configuration still counts.
    fn check_commit_replicated(&self, id: NodeId) {
        let Some(raft) = self.nodes[&id].raft.as_ref() else { return };
        let st = raft.status();
        let commit = st.commit;
        if st.role != Role::Leader || commit <= st.snapshot_index {
            return;
        }
        let log = raft.log();
        let term = log.term(commit);
        let recent_conf_change =
            (commit.saturating_sub(64)..=commit).any(|i| log.get(i).is_some_and(|e| e.kind == EntryKind::ConfChange));
        if recent_conf_change {
            return;
        }
        // Running nodes by their log; crashed ones by what they would recover (read
        // only when the running ones fall short: it is a full WAL recovery).
        let live_holds = |n: &SimNode| {
            n.raft.as_ref().is_some_and(|r| r.log().snapshot_index() >= commit || r.log().term(commit) == term)
        };
        let crashed_holds = |n: &SimNode| {
            n.raft.is_none()
                && (n.storage.snapshot_index() >= commit
                    || n.storage
                        .durable_log()
                        .is_ok_and(|log| log.iter().any(|&(i, t)| i == commit && Some(t) == term)))
        };
        let count =
            |f: &dyn Fn(&SimNode) -> bool| st.conf.voters.iter().filter(|v| self.nodes.get(v).is_some_and(f)).count();
        let mut holders = count(&live_holds);
        if holders < st.conf.voters.len() / 2 + 1 {
            holders += count(&crashed_holds);
        }
        if holders < st.conf.voters.len() / 2 + 1 {
            self.fail(format!("leader {id} committed {commit} but only {holders} voters hold it"));
        }
    }

    fn handle_ready(&mut self, id: NodeId, rd: Ready) {
        self.check_commit_replicated(id);
        if let Some(ss) = rd.soft_state
            && ss.role == Role::Leader
        {
            self.on_new_leader(id);
        }
        let must_persist = rd.must_persist();
        for m in rd.messages {
            self.send(m);
        }
        if must_persist {
            let n = self.nodes.get_mut(&id).expect("known node");
            let queued = n.storage.persist(
                rd.number,
                rd.hard_state,
                rd.snapshot.as_ref(),
                &rd.entries,
                rd.messages_after_persist,
            );
            match queued {
                Ok(Persisted::Now(wait)) => self.persisted(id, wait),
                Ok(Persisted::Later) => {}
                Err(e) => self.fail(format!("node {id}: {e}")),
            }
        } else if !rd.messages_after_persist.is_empty() {
            self.fail("messages after persist without anything to persist".into());
        }
        if let Some(snap) = &rd.snapshot {
            self.install(id, snap);
        }
        for e in &rd.committed_entries {
            self.apply(id, e);
        }
        for ctx in rd.dropped_reads {
            self.reads_in_flight.remove(&ctx);
        }
        self.nodes.get_mut(&id).expect("known node").confirmed_reads.extend(rd.read_states);
        self.serve_reads(id);
        self.maybe_compact(id);
        self.start_batch(id);
    }

    fn on_new_leader(&mut self, id: NodeId) {
        let raft = self.nodes[&id].raft.as_ref().expect("live");
        let st = raft.status();
        if let Err(e) = self.history.on_leader(st.term, id) {
            self.fail(e);
        }
        let log = raft.log();
        if let Err(e) = self.history.check_leader_complete(id, st.snapshot_index, |i| log.term(i)) {
            self.fail(e);
        }
        self.record(&[4, id, st.term]);
    }

    fn install(&mut self, id: NodeId, snap: &Snapshot) {
        let m = machine_from_snapshot(snap);
        let before = self.nodes[&id].machine.applied;
        if m.applied <= before {
            self.fail(format!("node {id} installed snapshot {} at or below applied {before}", m.applied));
        }
        self.nodes.get_mut(&id).expect("known node").machine = m;
        match self.history.chain_at(m.applied) {
            Some(expected) if expected != m.state => {
                self.fail(format!("node {id} installed a snapshot at {} whose state differs", m.applied))
            }
            _ => {}
        }
    }

    fn apply(&mut self, id: NodeId, e: &Entry) {
        let n = self.nodes.get_mut(&id).expect("known node");
        if e.index != n.machine.applied + 1 {
            let applied = n.machine.applied;
            self.fail(format!("node {id} applied index {} right after {applied}", e.index));
        }
        n.machine.applied = e.index;
        n.machine.state = chain(n.machine.state, &e.data);
        let state = n.machine.state;
        if let Err(err) = self.history.on_apply(id, e, state) {
            self.fail(err);
        }
        if e.kind == EntryKind::Normal && e.data.len() >= 8 {
            let cmd = u64::from_le_bytes(e.data[..8].try_into().expect("8 bytes"));
            if let Some(&(index, term)) = self.proposed.get(&cmd)
                && index == e.index
                && term == e.term
            {
                self.proposed.remove(&cmd);
                self.acked.insert(cmd, e.index);
                self.acked_index_max = self.acked_index_max.max(e.index);
            }
        }
    }

    /// Serves the confirmed reads whose index the machine reached. A read must see
    /// every command acknowledged before it was issued: its index must cover them.
    fn serve_reads(&mut self, id: NodeId) {
        let n = self.nodes.get_mut(&id).expect("known node");
        let applied = n.machine.applied;
        let (ready, waiting): (Vec<ReadState>, Vec<ReadState>) =
            n.confirmed_reads.drain(..).partition(|r| r.index <= applied);
        n.confirmed_reads = waiting;
        for r in ready {
            let Some(floor) = self.reads_in_flight.remove(&r.ctx) else { continue };
            if r.index < floor {
                self.fail(format!(
                    "stale read at node {id}: read index {} misses command acknowledged at {floor}",
                    r.index
                ));
            }
            self.reads_served += 1;
            self.record(&[8, id, r.ctx]);
        }
    }

    fn maybe_compact(&mut self, id: NodeId) {
        let every = self.cfg.snapshot_every;
        let padding = self.cfg.snapshot_padding_bytes;
        let n = self.nodes.get_mut(&id).expect("known node");
        let raft = n.raft.as_mut().expect("live");
        let st = raft.status();
        if every == 0 || st.applied < st.snapshot_index + every {
            return;
        }
        let mut data = Vec::with_capacity(16 + padding);
        data.extend_from_slice(&n.machine.applied.to_le_bytes());
        data.extend_from_slice(&n.machine.state.to_le_bytes());
        data.resize(16 + padding, 0xAB);
        assert_eq!(n.machine.applied, st.applied, "the machine applied what Raft handed out");
        raft.compact(Arc::from(data.clone()));
        // The application persists its snapshot file, then marks the WAL.
        let index = st.applied;
        let term = raft.log().snapshot_term();
        let conf = raft.status().conf;
        let snapshot = Snapshot { meta: corekv_rpc::raft::SnapshotMeta { index, term, conf }, data: Arc::from(data) };
        if let Err(e) = n.storage.compacted(snapshot) {
            self.fail(format!("node {id}: {e}"));
        }
    }

    // ----- faults ----------------------------------------------------------------

    /// Ids of every node in the simulation.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Changes the network's fault rates.
    pub fn set_faults(&mut self, faults: NetFaults) {
        self.cfg.faults = faults;
    }

    /// Cuts `node` off from everyone.
    pub fn isolate(&mut self, node: NodeId) {
        let all = self.node_ids();
        self.links.isolate(node, &all);
    }

    /// Cuts the link between `a` and `b` (both directions).
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.links.cut(a, b);
    }

    /// Splits the cluster into groups that only talk inside themselves.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        let all = self.node_ids();
        self.links.partition(groups, &all);
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.links.heal();
    }

    /// Crashes `node`: volatile state and unsynced writes are lost.
    pub fn crash(&mut self, node: NodeId) {
        let n = self.nodes.get_mut(&node).expect("known node");
        n.raft = None;
        n.confirmed_reads.clear();
        n.incarnation += 1;
        let seed = self.rng.random::<u64>();
        self.nodes.get_mut(&node).expect("known node").storage.crash(seed);
        self.record(&[5, node]);
    }

    /// Restarts a crashed `node` from its disk.
    pub fn restart(&mut self, node: NodeId) {
        assert!(self.nodes[&node].raft.is_none(), "node {node} is running");
        self.record(&[6, node]);
        self.start(node);
        self.process(node);
    }

    /// True when `node` runs.
    pub fn is_up(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.raft.is_some())
    }

    // ----- clients and queries ---------------------------------------------------

    /// Status of a running node.
    pub fn status(&self, node: NodeId) -> Option<Status> {
        self.nodes.get(&node).and_then(|n| n.raft.as_ref()).map(RawNode::status)
    }

    /// The running node that leads the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .keys()
            .filter_map(|&id| self.status(id))
            .filter(|s| s.role == Role::Leader)
            .max_by_key(|s| s.term)
            .map(|s| s.id)
    }

    /// Running nodes that believe they lead, with their terms.
    pub fn leaders(&self) -> Vec<(NodeId, u64)> {
        self.nodes
            .keys()
            .filter_map(|&id| self.status(id))
            .filter(|s| s.role == Role::Leader)
            .map(|s| (s.id, s.term))
            .collect()
    }

    /// Proposes a fresh command at `node`. Returns its id when the node accepted
    /// it; it counts as acknowledged once that node applies it.
    pub fn propose_at(&mut self, node: NodeId) -> Option<u64> {
        self.propose_many_at(node, 1).pop()
    }

    /// Proposes up to `count` fresh commands at `node` in one loop iteration (one
    /// Ready for all of them), stopping at the first refusal. Returns the ids of
    /// the accepted ones.
    pub fn propose_many_at(&mut self, node: NodeId, count: usize) -> Vec<u64> {
        let mut accepted = Vec::new();
        for _ in 0..count {
            let cmd = self.next_command;
            let mut data = cmd.to_le_bytes().to_vec();
            data.resize(self.cfg.command_bytes.max(8), 0x5A);
            let Some(raft) = self.nodes.get_mut(&node).and_then(|n| n.raft.as_mut()) else { break };
            match raft.propose(data) {
                Ok((index, term)) => {
                    self.next_command += 1;
                    self.proposed.insert(cmd, (index, term));
                    self.record(&[7, node, cmd]);
                    accepted.push(cmd);
                }
                Err(ProposeError::NotLeader { .. } | ProposeError::Busy | ProposeError::TransferInProgress) => break,
                Err(e) => self.fail(format!("unexpected proposal error: {e}")),
            }
        }
        if self.is_up(node) {
            self.process(node);
        }
        accepted
    }

    /// Issues a linearizable read at `node`. Returns false when the node refused it
    /// (not the leader, or busy).
    pub fn read_at(&mut self, node: NodeId) -> bool {
        let ctx = self.next_read;
        let floor = self.acked_index_max;
        let Some(raft) = self.nodes.get_mut(&node).and_then(|n| n.raft.as_mut()) else { return false };
        if raft.read_index(ctx).is_err() {
            return false;
        }
        self.next_read += 1;
        self.reads_in_flight.insert(ctx, floor);
        self.process(node);
        true
    }

    /// Reads served and checked so far.
    pub fn reads_served(&self) -> u64 {
        self.reads_served
    }

    /// Proposes at whichever node leads now.
    pub fn propose(&mut self) -> Option<u64> {
        let leader = self.leader()?;
        self.propose_at(leader)
    }

    /// Proposes a membership change at the leader.
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<(), ProposeError> {
        let leader = self.leader().ok_or(ProposeError::NotLeader { leader: 0 })?;
        let raft = self.nodes.get_mut(&leader).and_then(|n| n.raft.as_mut()).expect("live leader");
        raft.propose_conf_change(cc)?;
        self.process(leader);
        Ok(())
    }

    /// Asks the leader to hand over to `to`.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        let leader = self.leader().ok_or(ProposeError::NotLeader { leader: 0 })?;
        let raft = self.nodes.get_mut(&leader).and_then(|n| n.raft.as_mut()).expect("live leader");
        raft.transfer_leader(to)?;
        self.process(leader);
        Ok(())
    }

    /// Whether command `cmd` was acknowledged (applied where it was proposed).
    pub fn is_acked(&self, cmd: u64) -> bool {
        self.acked.contains_key(&cmd)
    }

    /// Number of acknowledged commands.
    pub fn acked_count(&self) -> usize {
        self.acked.len()
    }

    /// The highest index applied anywhere.
    pub fn applied_max(&self) -> Index {
        self.history.applied_max
    }

    /// Index applied by `node`'s state machine (running or not).
    pub fn applied(&self, node: NodeId) -> Index {
        self.nodes[&node].machine.applied
    }

    /// Network counters so far.
    pub fn net_stats(&self) -> &NetStats {
        &self.stats
    }

    /// The distinct terms that had a leader.
    pub fn leader_terms(&self) -> usize {
        self.history.leader_terms()
    }

    /// The running hash of every event so far, one per event.
    pub fn trace(&self) -> &[u64] {
        &self.trace
    }

    /// Entries in `node`'s durable log after its snapshot: what a crash now would
    /// leave in its WAL (a full recovery of a copy of the disk).
    pub fn durable_log_len(&self, node: NodeId) -> usize {
        self.nodes[&node].storage.durable_log().unwrap_or_else(|e| self.fail(e)).len()
    }

    /// Index of the snapshot file on `node`'s disk.
    pub fn snapshot_index_on_disk(&self, node: NodeId) -> Index {
        self.nodes[&node].storage.snapshot_index()
    }

    /// WAL writes and fdatasyncs `node` issued so far.
    pub fn wal_io_counts(&self, node: NodeId) -> (u64, u64) {
        self.nodes[&node].storage.io_counts()
    }

    /// Checks log matching across every pair of running nodes.
    pub fn check_log_matching(&self) {
        let logs: Vec<(NodeId, Vec<Entry>)> = self
            .nodes
            .iter()
            .filter_map(|(&id, n)| n.raft.as_ref().map(|r| (id, r.log())))
            .map(|(id, log)| (id, (log.first_index()..=log.last_index()).filter_map(|i| log.get(i).cloned()).collect()))
            .collect();
        for (i, (a, log_a)) in logs.iter().enumerate() {
            for (b, log_b) in &logs[i + 1..] {
                if let Err(e) = check_log_matching(*a, log_a, *b, log_b) {
                    self.fail(e);
                }
            }
        }
    }

    /// Heals the network, restarts crashed nodes, and runs until every member has
    /// applied everything any node applied and every acknowledged command is in
    /// place. Then checks log matching and that no acknowledged command was lost.
    pub fn finish(&mut self, timeout_ms: u64) {
        self.heal();
        self.set_faults(NetFaults::reliable());
        for id in self.node_ids() {
            if !self.is_up(id) {
                self.restart(id);
            }
        }
        // Commit something in the final term so every earlier entry commits too.
        let settled = self.run_until(timeout_ms, |s| s.leader().is_some());
        if !settled {
            self.fail("no leader after healing".into());
        }
        self.run_for(200);
        let _ = self.propose();
        // Membership may still be changing: ask the current leader at every check.
        let converged = self.run_until(timeout_ms, |s| {
            let max = s.history.applied_max;
            s.members().is_some_and(|members| members.iter().all(|&m| s.applied(m) >= max))
        });
        if !converged {
            let members = self.members().unwrap_or_else(|| self.nodes.keys().copied().collect());
            let applied: Vec<_> = members.iter().map(|&m| (m, self.applied(m))).collect();
            let leader = self.leader().and_then(|l| self.nodes[&l].raft.as_ref());
            let lagging: Vec<String> = members
                .iter()
                .filter(|&&m| self.applied(m) < self.applied_max())
                .map(|&m| format!("{:?}; leader's view: {:?}", self.status(m), leader.and_then(|l| l.progress(m))))
                .collect();
            self.fail(format!(
                "did not converge after healing: applied {applied:?}, max {}; lagging: {lagging:?}",
                self.applied_max()
            ));
        }
        self.check_log_matching();
        for (&cmd, &index) in &self.acked {
            let expected = cmd.to_le_bytes();
            match self.history.entry_at(index) {
                Some((_, data)) if data.starts_with(&expected) => {}
                _ => self.fail(format!("acknowledged command {cmd} at index {index} was lost")),
            }
        }
    }

    /// Voters and learners according to the current leader, if there is one.
    fn members(&self) -> Option<BTreeSet<NodeId>> {
        let st = self.leader().and_then(|l| self.status(l))?;
        Some(st.conf.voters.iter().chain(&st.conf.learners).copied().collect())
    }
}

fn machine_from_snapshot(snap: &Snapshot) -> Machine {
    if snap.data.len() < 16 {
        return Machine { applied: snap.meta.index, state: 0 };
    }
    let applied = u64::from_le_bytes(snap.data[..8].try_into().expect("8 bytes"));
    let state = u64::from_le_bytes(snap.data[8..16].try_into().expect("8 bytes"));
    assert_eq!(applied, snap.meta.index, "snapshot data and meta disagree");
    Machine { applied, state }
}
