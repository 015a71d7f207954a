//! The simulated network: per-link connectivity and the faults every message may
//! meet (drop, duplication, delay, long delay; reordering follows from random
//! delays). Pure decisions from the simulator's seeded RNG.

use std::collections::BTreeSet;

use corekv_rpc::raft::NodeId;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// Fault rates and delays, in microseconds of simulated time.
#[derive(Debug, Clone)]
pub struct NetFaults {
    /// Probability that a message is lost.
    pub drop_prob: f64,
    /// Probability that a message is delivered twice.
    pub dup_prob: f64,
    /// Ordinary one-way delay, uniform in this range.
    pub delay_us: (u64, u64),
    /// Probability that a message is held back for a long delay instead.
    pub long_delay_prob: f64,
    /// Long delay range.
    pub long_delay_us: (u64, u64),
}

impl NetFaults {
    /// A healthy LAN: 100–500 µs, nothing lost.
    pub fn reliable() -> NetFaults {
        NetFaults { drop_prob: 0.0, dup_prob: 0.0, delay_us: (100, 500), long_delay_prob: 0.0, long_delay_us: (0, 0) }
    }

    /// The classic "unreliable" lab network: 10% loss, duplicates, 0–26 ms delays.
    pub fn unreliable() -> NetFaults {
        NetFaults { drop_prob: 0.1, dup_prob: 0.05, delay_us: (0, 26_000), long_delay_prob: 0.0, long_delay_us: (0, 0) }
    }

    /// Unreliable plus long reordering: some messages arrive 200–2200 ms late.
    pub fn unreliable_long_reordering() -> NetFaults {
        NetFaults { long_delay_prob: 0.1, long_delay_us: (200_000, 2_200_000), ..NetFaults::unreliable() }
    }
}

/// Which links are up.
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// Directed links that are down.
    down: BTreeSet<(NodeId, NodeId)>,
}

impl Links {
    /// True when `from` can reach `to`.
    pub fn connected(&self, from: NodeId, to: NodeId) -> bool {
        !self.down.contains(&(from, to))
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.down.insert((a, b));
        self.down.insert((b, a));
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.down.clear();
    }

    /// Cuts `node` from every one of `all`.
    pub fn isolate(&mut self, node: NodeId, all: &[NodeId]) {
        for &other in all {
            if other != node {
                self.cut(node, other);
            }
        }
    }

    /// Splits `all` into `groups`: links inside a group stay, links across are cut.
    /// A node in no group is isolated.
    pub fn partition(&mut self, groups: &[&[NodeId]], all: &[NodeId]) {
        self.heal();
        let group_of = |n: NodeId| groups.iter().position(|g| g.contains(&n));
        for &a in all {
            for &b in all {
                if a != b && (group_of(a).is_none() || group_of(a) != group_of(b)) {
                    self.down.insert((a, b));
                }
            }
        }
    }
}

/// What happens to one message: delivered after these delays (none = lost).
pub fn fate(rng: &mut ChaCha8Rng, faults: &NetFaults) -> Vec<u64> {
    if faults.drop_prob > 0.0 && rng.random_bool(faults.drop_prob) {
        return Vec::new();
    }
    let copies = if faults.dup_prob > 0.0 && rng.random_bool(faults.dup_prob) { 2 } else { 1 };
    (0..copies)
        .map(|_| {
            if faults.long_delay_prob > 0.0 && rng.random_bool(faults.long_delay_prob) {
                rng.random_range(faults.long_delay_us.0..=faults.long_delay_us.1)
            } else {
                rng.random_range(faults.delay_us.0..=faults.delay_us.1)
            }
        })
        .collect()
}
