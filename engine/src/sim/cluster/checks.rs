//! The checks of a cluster run: replicas at equal applied indexes hold the same
//! state, the message rate stays sane, the cluster settles after healing, every
//! acknowledged write survives, and the history is linearizable.

use std::collections::BTreeMap;

use corekv_rpc::kv::{ShardId, Version};
use corekv_rpc::map::CoreIndex;
use corekv_rpc::raft::NodeId;

use super::{CHECK_INTERVAL_US, Cluster, FRAMES_PER_CHECK_MAX, FailureKind, SETTLE_MS_MAX, WITNESS_OPS_SHOWN_MAX};
use crate::check::{self, CheckResult};
use crate::raft::Role;
use crate::sim::invariants::chain;

impl Cluster {
    /// Replicas of a shard at the same applied index must hold the same state: the
    /// first replica seen at an index sets its digest, every later one must match.
    pub(super) fn compare_replicas(&mut self) {
        let mut diverged = None;
        for (&node, n) in &self.nodes {
            if !n.up {
                continue;
            }
            for core in n.cores.iter().filter_map(|sc| sc.core.as_ref()) {
                for shard in core.shards() {
                    let applied = core.raft_status(shard).expect("a shard of the core").applied;
                    if self.compared.insert((shard, node), applied) == Some(applied) {
                        continue;
                    }
                    let state = core.shard_state(shard).expect("a shard of the core").snapshot();
                    let digest = chain(0, &state);
                    let (first, first_digest) = *self.digests.entry((shard, applied)).or_insert((node, digest));
                    if first_digest != digest && diverged.is_none() {
                        diverged = Some(format!(
                            "shard {shard}: nodes {first} and {node} applied up to {applied} but hold different states"
                        ));
                    }
                }
            }
        }
        if let Some(message) = diverged {
            self.fail(FailureKind::Diverged, message);
        }
    }

    /// Every shard leader's lock table holds the locks of every transaction
    /// prepared on its shard ([`crate::node::NodeCore::txn_locks_violation`]).
    pub(super) fn check_txn_locks(&mut self) {
        let violation = self
            .nodes
            .iter()
            .filter(|(_, n)| n.up)
            .flat_map(|(&node, n)| n.cores.iter().filter_map(move |sc| sc.core.as_ref().map(|c| (node, c))))
            .find_map(|(node, core)| core.txn_locks_violation().map(|m| format!("node {node}: {m}")));
        if let Some(message) = violation {
            self.fail(FailureKind::TxnLocksLost, message);
        }
    }

    pub(super) fn check_message_rate(&mut self) {
        let frames = self.stats.frames_sent - self.frames_at_last_check;
        self.frames_at_last_check = self.stats.frames_sent;
        if frames > FRAMES_PER_CHECK_MAX {
            let us = CHECK_INTERVAL_US;
            self.fail(FailureKind::Stuck, format!("message storm: {frames} peer frames in {us} µs"));
        }
    }

    /// Every shard has one leader, whose whole log is committed, and every replica
    /// has applied all of it in the leader's term; every running core has the
    /// newest map and has deleted the files of the replicas it dropped.
    pub(super) fn settled(&self) -> bool {
        let maps_current = self
            .nodes
            .values()
            .flat_map(|n| &n.cores)
            .all(|sc| sc.core.as_ref().is_none_or(|c| c.map().epoch == self.map.epoch && !c.drops_pending()));
        maps_current
            && self.map.groups().all(|shard| {
                let statuses: Option<Vec<_>> =
                    self.map.replicas(shard).iter().map(|&r| self.core(r).and_then(|c| c.raft_status(shard))).collect();
                let Some(statuses) = statuses else { return false };
                let mut leaders = statuses.iter().filter(|s| s.role == Role::Leader);
                let (Some(leader), None) = (leaders.next(), leaders.next()) else { return false };
                let mut wanted: Vec<NodeId> = self.map.replicas(shard).iter().map(|r| r.node).collect();
                wanted.sort_unstable();
                self.map.outgoing(shard).is_empty()
                    && leader.conf.voters == wanted
                    && leader.conf.learners.is_empty()
                    && leader.commit == leader.last_index
                    && statuses.iter().all(|s| s.term == leader.term && s.applied == leader.commit)
            })
    }

    /// Every core holds exactly the replicas the map places on it, and a core keeps
    /// no snapshot file of a shard it does not hold: moved data was deleted.
    pub(super) fn check_placement(&mut self) {
        let mut wrong = Vec::new();
        for (&node, n) in &self.nodes {
            for (core, sc) in n.cores.iter().enumerate() {
                let Some(nc) = &sc.core else { continue };
                let placed: Vec<ShardId> = self.map.shards_on(node, core as CoreIndex).collect();
                if nc.shards() != placed {
                    wrong.push(format!("n{node} core {core} holds {:?}, the map places {placed:?}", nc.shards()));
                }
                let stray: Vec<u64> =
                    sc.disk.snapshot_groups().filter(|&g| !placed.iter().any(|&s| u64::from(s) == g)).collect();
                if !stray.is_empty() {
                    wrong.push(format!("n{node} core {core} keeps snapshot files of moved shards {stray:?}"));
                }
            }
        }
        if !wrong.is_empty() {
            self.fail(FailureKind::Placement, wrong.join("; "));
        }
    }

    pub(super) fn settle_or_fail(&mut self, what: &str) {
        if !self.run_until(SETTLE_MS_MAX, Cluster::settled) {
            let stale: Vec<String> = self
                .nodes
                .iter()
                .flat_map(|(id, n)| n.cores.iter().enumerate().map(move |(core, sc)| (id, core, sc)))
                .filter_map(|(id, core, sc)| {
                    let epoch = sc.core.as_ref()?.map().epoch;
                    (epoch != self.map.epoch).then(|| format!("n{id} core {core} at epoch {epoch}"))
                })
                .collect();
            let mut states: Vec<String> = vec![format!("map epoch {}, stale cores {stale:?}", self.map.epoch)];
            states.extend(self.map.groups().map(|shard| {
                let replicas: Vec<String> = self
                    .map
                    .members(shard)
                    .map(|&r| match self.core(r).and_then(|c| c.raft_status(shard)) {
                        Some(st) => format!(
                            "n{} {:?} t{} commit {} applied {} last {} conf {:?}/{:?}",
                            r.node,
                            st.role,
                            st.term,
                            st.commit,
                            st.applied,
                            st.last_index,
                            st.conf.voters,
                            st.conf.learners
                        ),
                        None => format!("n{} down", r.node),
                    })
                    .collect();
                format!("group {shard}: [{}] wanted {:?}", replicas.join("; "), self.map.replicas(shard))
            }));
            self.fail(FailureKind::Stuck, format!("not settled {what}: {}", states.join(" | ")));
        }
    }

    /// Every replica of each key's shard holds the newest acknowledged version of
    /// the key, or a later one.
    pub(super) fn check_acknowledged_writes(&mut self) {
        let mut newest: BTreeMap<&[u8], Version> = BTreeMap::new();
        for op in &self.history {
            if let (true, check::Outcome::Written { version }) = (op.call.is_write(), &op.outcome) {
                let v = newest.entry(op.call.key()).or_default();
                *v = (*v).max(*version);
            }
        }
        let mut lost = None;
        for (&key, &version) in &newest {
            let shard = self.map.shard_of(key);
            for &r in self.map.replicas(shard) {
                let state = self.core(r).and_then(|c| c.shard_state(shard)).expect("every node runs at the end");
                let have = state.store().newest_version(key);
                if have < version && lost.is_none() {
                    lost = Some(format!(
                        "node {} holds version {have} of key {:?}, below the acknowledged version {version}",
                        r.node,
                        String::from_utf8_lossy(key)
                    ));
                }
            }
        }
        if let Some(message) = lost {
            self.fail(FailureKind::AckedWriteLost, message);
        }
    }

    pub(super) fn check_linearizable(&mut self) {
        let result = match check::check_history(&self.history, &self.cfg.check) {
            Ok(result) => result,
            Err(e) => return self.fail(FailureKind::BadAnswer, format!("the recorded history is malformed: {e}")),
        };
        match result {
            CheckResult::Linearizable => {}
            CheckResult::Unknown { key, states_explored } => self.fail(
                FailureKind::CheckerUnknown,
                format!("key {:?} undecided after {states_explored} states", String::from_utf8_lossy(&key)),
            ),
            CheckResult::NotLinearizable { key, witness } => {
                let key_ops = check::split_by_key(&self.history).remove(&key).unwrap_or_default();
                let shown = match check::shrink_key_history(&key_ops, &self.cfg.check, 500) {
                    Ok(Some(shrunk)) => shrunk.ops,
                    _ => witness.history,
                };
                let ops: Vec<String> = shown.iter().take(WITNESS_OPS_SHOWN_MAX).map(|op| format!("  {op}")).collect();
                self.fail(
                    FailureKind::NotLinearizable,
                    format!(
                        "key {:?} is not linearizable; a failing core of its history ({} ops):\n{}",
                        String::from_utf8_lossy(&key),
                        shown.len(),
                        ops.join("\n")
                    ),
                );
            }
        }
    }
}
