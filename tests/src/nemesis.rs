//! The nemesis: a thread that owns a [`LocalCluster`] while clients load it, and
//! every few seconds does one fault, holds it, and heals it:
//! - [`FaultKind::KillLeader`]: kill -9 the leader of a shard that holds a hot
//!   key (found through a status report), restart it after the hold;
//! - [`FaultKind::KillNode`]: kill -9 a random node, restart it;
//! - [`FaultKind::PauseNode`]: SIGSTOP a node (half the time a hot shard's
//!   leader) so that it hangs with its sockets open, SIGCONT it;
//! - [`FaultKind::RestartAll`]: kill -9 every node at once, restart them all.
//!
//! One fault at a time, so a majority of every shard's replicas is back before
//! the next one starts (liveness, not safety: safety must hold throughout). The
//! first rounds do every kind once in a seeded random order, so a run of at
//! least [`FaultKind::ALL`]`.len()` rounds is sure to have done each.
//!
//! The nemesis ends after its rounds, or at once when stopped (healing the
//! fault it holds), and hands the cluster back with the record of what it did.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use corekv_rpc::kv::{NodeId, ShardId};
use corekv_tools::launcher::LocalCluster;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::history::Recorder;
use crate::local;
use corekv_rpc::client::blocking::Client;

/// Granularity of the nemesis' sleeps: how fast it notices a stop.
const STOP_POLL: Duration = Duration::from_millis(50);

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// kill -9 a hot shard's leader, then restart it.
    KillLeader,
    /// kill -9 a random node, then restart it.
    KillNode,
    /// SIGSTOP a node, then SIGCONT it.
    PauseNode,
    /// kill -9 every node, then restart them all.
    RestartAll,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 4] =
        [FaultKind::KillLeader, FaultKind::KillNode, FaultKind::PauseNode, FaultKind::RestartAll];
}

/// What the nemesis does and when.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Seeds every choice.
    pub seed: u64,
    /// Faults to do (each done, held, healed).
    pub rounds: usize,
    /// Shards whose leaders are worth killing: those of the hot keys.
    pub hot_shards: Vec<ShardId>,
    /// Quiet time before the first fault.
    pub warmup: Duration,
    /// Quiet time after each healing, drawn from this range.
    pub gap: (Duration, Duration),
    /// How long a fault lasts, drawn from this range (a restart of every node is
    /// held for a fifth of it: its election gap is the fault).
    pub hold: (Duration, Duration),
}

/// One fault done.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    /// Its kind.
    pub kind: FaultKind,
    /// The nodes it hit.
    pub nodes: Vec<NodeId>,
    /// When it started (the recorder's clock, ns).
    pub start_ns: u64,
    /// When it was healed.
    pub healed_ns: u64,
    /// How the victim was chosen.
    pub note: String,
}

impl std::fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>8.3}s..{:>8.3}s {:?} of node(s) {:?} ({})",
            self.start_ns as f64 / 1e9,
            self.healed_ns as f64 / 1e9,
            self.kind,
            self.nodes,
            self.note
        )
    }
}

/// What the nemesis hands back.
#[derive(Debug)]
pub struct Ending {
    /// The cluster, every node running and none paused (unless `error` says
    /// otherwise).
    pub cluster: LocalCluster,
    /// What it did, in order.
    pub faults: Vec<FaultRecord>,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
}

/// A running nemesis.
#[derive(Debug)]
pub struct Nemesis {
    stop: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
    handle: JoinHandle<Ending>,
}

impl Nemesis {
    /// Starts the nemesis on `cluster`; `status` is the client it asks for
    /// leaders, `recorder` the clock its records use.
    pub fn start(cluster: LocalCluster, status: Client, plan: Plan, recorder: Arc<Recorder>) -> Nemesis {
        let stop = Arc::new(AtomicBool::new(false));
        let finished = Arc::new(AtomicBool::new(false));
        let mut worker = Worker {
            cluster,
            status,
            rng: ChaCha8Rng::seed_from_u64(plan.seed),
            plan,
            recorder,
            stop: stop.clone(),
            faults: Vec::new(),
        };
        let done = finished.clone();
        let handle = std::thread::Builder::new()
            .name("nemesis".into())
            .spawn(move || {
                let error = worker.run().err();
                done.store(true, Ordering::Release);
                Ending { cluster: worker.cluster, faults: worker.faults, error }
            })
            .expect("spawns the nemesis thread");
        Nemesis { stop, finished, handle }
    }

    /// Whether it has done all its rounds (or given up).
    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Stops it (the fault it holds is healed) and takes the cluster back.
    pub fn stop(self) -> Ending {
        self.stop.store(true, Ordering::Release);
        match self.handle.join() {
            Ok(ending) => ending,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

struct Worker {
    cluster: LocalCluster,
    status: Client,
    rng: ChaCha8Rng,
    plan: Plan,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    faults: Vec<FaultRecord>,
}

impl Worker {
    fn run(&mut self) -> Result<(), String> {
        let order = self.first_kinds();
        if !self.sleep(self.plan.warmup) {
            return Ok(());
        }
        for round in 0..self.plan.rounds {
            let kind = order.get(round).copied().unwrap_or_else(|| {
                let all = FaultKind::ALL;
                all[self.rng.random_range(0..all.len())]
            });
            let stopped = self.fault(kind)?;
            if stopped {
                return Ok(());
            }
            let gap = self.draw(self.plan.gap);
            if !self.sleep(gap) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Every kind once, in a seeded random order (Fisher–Yates).
    fn first_kinds(&mut self) -> Vec<FaultKind> {
        let mut kinds = FaultKind::ALL.to_vec();
        for i in (1..kinds.len()).rev() {
            let j = self.rng.random_range(0..=i);
            kinds.swap(i, j);
        }
        kinds
    }

    /// Does one fault, holds it and heals it; true when stopped meanwhile (the
    /// fault is healed all the same).
    fn fault(&mut self, kind: FaultKind) -> Result<bool, String> {
        let nodes = self.cluster.options().nodes as NodeId;
        let hold = self.draw(self.plan.hold);
        let start_ns = self.recorder.now_ns();
        let (victims, note, stopped) = match kind {
            FaultKind::KillLeader | FaultKind::KillNode => {
                let (victim, note) = if kind == FaultKind::KillLeader {
                    self.hot_leader()
                } else {
                    (self.rng.random_range(1..=nodes), "random".to_string())
                };
                self.cluster.kill(victim).map_err(|e| format!("kill -9 node {victim}: {e}"))?;
                let stopped = !self.sleep(hold);
                self.cluster.restart(victim).map_err(|e| format!("restart node {victim}: {e}"))?;
                (vec![victim], note, stopped)
            }
            FaultKind::PauseNode => {
                let (victim, note) = if self.rng.random_bool(0.5) {
                    self.hot_leader()
                } else {
                    (self.rng.random_range(1..=nodes), "random".to_string())
                };
                local::pause(&self.cluster, victim)?;
                let stopped = !self.sleep(hold);
                local::resume(&self.cluster, victim)?;
                (vec![victim], note, stopped)
            }
            FaultKind::RestartAll => {
                let all: Vec<NodeId> = (1..=nodes).collect();
                local::kill_all(&mut self.cluster)?;
                let stopped = !self.sleep(hold / 5);
                for &node in &all {
                    self.cluster.restart(node).map_err(|e| format!("restart node {node}: {e}"))?;
                }
                (all, "every node".to_string(), stopped)
            }
        };
        let healed_ns = self.recorder.now_ns();
        self.faults.push(FaultRecord { kind, nodes: victims, start_ns, healed_ns, note });
        Ok(stopped)
    }

    /// The leader of a random hot shard, as the cluster reports it; a random
    /// node when no hot shard has a known leader (say, just after a restart).
    fn hot_leader(&mut self) -> (NodeId, String) {
        let leaders = local::leaders(&self.status.status());
        let led: Vec<(ShardId, NodeId)> =
            self.plan.hot_shards.iter().filter_map(|shard| leaders.get(shard).map(|&node| (*shard, node))).collect();
        if led.is_empty() {
            let nodes = self.cluster.options().nodes as NodeId;
            return (self.rng.random_range(1..=nodes), "no hot shard had a known leader: random".into());
        }
        let (shard, node) = led[self.rng.random_range(0..led.len())];
        (node, format!("leader of shard {shard}"))
    }

    fn draw(&mut self, (low, high): (Duration, Duration)) -> Duration {
        if high <= low { low } else { low + (high - low).mul_f64(self.rng.random::<f64>()) }
    }

    /// Sleeps `duration` unless stopped first; false when stopped.
    fn sleep(&self, duration: Duration) -> bool {
        let until = Instant::now() + duration;
        loop {
            if self.stop.load(Ordering::Acquire) {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(STOP_POLL));
        }
    }
}
