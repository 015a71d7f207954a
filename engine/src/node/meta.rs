//! The meta group (DESIGN §7): the cluster map as a Raft group of its own.
//!
//! The meta group is a shard group like the others, with the group id
//! [`META_SHARD`], replicated on core 0 of the nodes the map's `meta` names (the
//! largest odd number ≤ min(5, nodes)) and moved like any replica. Its state
//! machine is the ordinary shard state machine holding one key, [`MAP_KEY`]: the
//! map, rkyv-encoded. Absent, the map is the founding one (epoch 1), which every
//! node starts with.
//!
//! Edits ([`MetaEdit`]) reach the core that leads the meta group: replica moves
//! asked by an operator, and the reports of shard leaders whose configuration
//! reached what the map wants (a move to settle). That core applies the edit to
//! the newest map its state machine holds ([`crate::placement::moves`]) and
//! proposes the result as a compare-and-set on the map's version, one edit at a
//! time: a lost race (a new leader, an edit of another core) only retries the
//! edit on the newer map. Every replica that applies a new map installs it on its
//! own core; the leader also sends it to every core of the cluster. A core that
//! sees a newer epoch in a peer frame asks that peer for its map, so a lost push
//! only delays a core until it next hears from one that has it.

use std::collections::VecDeque;

use corekv_rpc::kv::{NodeId, OkReply, Outcome, ShardId};
pub use corekv_rpc::map::META_SHARD;
use corekv_rpc::map::{ClusterMap, NodeState};
pub use corekv_rpc::node::MetaEdit;
use corekv_rpc::node::ShardSize;

use crate::placement::moves::{self, MoveError};
use crate::placement::nodes::{self, NodeEditError};

/// The meta group's one key.
pub const MAP_KEY: &[u8] = b"cluster-map";

/// Edits waiting at the meta leader's core, at most this many (more are refused:
/// the edits a cluster makes are few, and reports repeat).
const META_EDITS_QUEUED_MAX: usize = 1024;

/// Why the meta group refuses an edit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// A replica move that cannot be made.
    #[error(transparent)]
    Move(#[from] MoveError),
    /// A node change the rules do not allow.
    #[error(transparent)]
    Node(#[from] NodeEditError),
}

/// The map after `edit`; `Ok(None)` when it changes nothing (a repeated report or
/// request: every sender repeats until the map shows its edit).
pub fn apply_edit(edit: &MetaEdit, map: &ClusterMap) -> Result<Option<ClusterMap>, EditError> {
    // A hand-off ends with its node's membership (epoch bumped by the edit).
    Ok(apply_one(edit, map)?.map(moves::drop_stale_handoffs))
}

fn apply_one(edit: &MetaEdit, map: &ClusterMap) -> Result<Option<ClusterMap>, EditError> {
    Ok(match edit {
        MetaEdit::AddNode { node } => nodes::add_node(map, node)?,
        MetaEdit::SetNodeState { node, state, force } => nodes::set_state(map, *node, *state, *force)?,
        MetaEdit::SetRebalance { on } => nodes::set_rebalance(map, *on),
        MetaEdit::Lead { picks } => moves::lead(map, picks),
        MetaEdit::GrowMeta { node } => {
            if map.replicas(META_SHARD).iter().any(|r| r.node == *node) {
                None
            } else {
                Some(moves::grow_meta(map, *node)?)
            }
        }
        MetaEdit::ShrinkMeta { node } => {
            if map.outgoing(META_SHARD).iter().any(|r| r.node == *node) {
                None
            } else {
                Some(moves::shrink_meta(map, *node)?)
            }
        }
        MetaEdit::Relocate { shard, to } => {
            if map.group(*shard).is_some_and(|s| s.handoff.is_some_and(|h| h.to == *to)) {
                None
            } else {
                Some(moves::relocate(map, *shard, *to)?)
            }
        }
        MetaEdit::Relocated { shard, to, since } => moves::relocated(map, *shard, *to, *since),
        MetaEdit::Begin { .. } | MetaEdit::Revert { .. } | MetaEdit::Settle { .. } => apply_move(edit, map)?,
    })
}

fn apply_move(edit: &MetaEdit, map: &ClusterMap) -> Result<Option<ClusterMap>, MoveError> {
    match edit {
        MetaEdit::Begin { shard, from, to } => {
            let under_way = map.replicas(*shard).contains(to) && map.outgoing(*shard).iter().any(|r| r.node == *from);
            if under_way {
                return Ok(None);
            }
            moves::begin(map, *shard, *from, *to).map(Some)
        }
        MetaEdit::Revert { shard, target } => {
            if map.outgoing(*shard).iter().any(|r| r.node == *target) {
                return Ok(None);
            }
            moves::revert(map, *shard, *target).map(Some)
        }
        MetaEdit::Settle { shard, conf } => Ok(moves::settle(map, *shard, conf)),
        _ => Ok(None),
    }
}

/// The meta leader's queue of edits and the batch in flight.
#[derive(Debug, Default)]
pub(crate) struct MetaQueue {
    queue: VecDeque<MetaEdit>,
    /// The edits whose map, one compare-and-set, is proposed and not yet
    /// answered (empty: none in flight).
    pub inflight: Vec<MetaEdit>,
    /// Sequence number of this core's meta writes (the write tag's).
    pub next_seq: u64,
}

impl MetaQueue {
    /// Queues `edit` unless an equal one waits already or the queue is full.
    pub fn push(&mut self, edit: MetaEdit) -> bool {
        if self.queue.len() >= META_EDITS_QUEUED_MAX || self.queue.contains(&edit) || self.inflight.contains(&edit) {
            return false;
        }
        self.queue.push_back(edit);
        true
    }

    /// Nothing waits and nothing is in flight.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.inflight.is_empty()
    }

    /// The edits to fold into the next write, in order, when none is in flight.
    pub fn take_waiting(&mut self) -> Vec<MetaEdit> {
        if !self.inflight.is_empty() {
            return Vec::new();
        }
        self.queue.drain(..).collect()
    }

    /// The write in flight was answered: done, or its edits are to be tried
    /// again (first, in their order) on the newer map.
    pub fn answered(&mut self, retry: bool) {
        let edits = std::mem::take(&mut self.inflight);
        if retry {
            for edit in edits.into_iter().rev() {
                self.queue.push_front(edit);
            }
        }
    }

    /// This core no longer leads the meta group: its edits are dropped (operators
    /// ask again; shard leaders report again at their next heartbeat).
    pub fn clear(&mut self) {
        self.queue.clear();
        self.inflight.clear();
    }
}

/// Moves the meta leader keeps under way at once (re-replication, drains,
/// joins and rebalancing together).
pub const MOVES_AT_ONCE: usize = 4;

/// Ticks without a frame from a node after which the meta leader counts it down
/// (it keeps its replicas and receives none until it is heard from again). Every
/// core polls every meta replica each [`super::MAP_POLL_TICKS`], so a live node is
/// heard from several times within it.
pub const DOWN_AFTER_TICKS: u64 = 300;

/// Ticks between two looks of the meta leader at nodes and placement (it also
/// looks at the tick after each newer map it installs).
pub const DRIVE_EVERY_TICKS: u64 = 50;

/// The fewest ticks between a look and one a newer map asks for: 2, or one per
/// 128 shards when that is more. A look plans the whole map (about 0.4 ms for
/// 64 shards on 3 nodes of 2 cores, 11-13 ms for 1024 shards on 16 nodes of 8
/// cores in the `placement` criterion bench), on a core that also serves shards;
/// a move ends every few ticks during a rebalance, and the next should begin
/// soon.
pub fn drive_gap_ticks(shards: u32) -> u64 {
    (u64::from(shards) / 128).max(2)
}

/// What the meta leader knows of the nodes beyond the map: when it last heard
/// from each, how large the shards are, and what it planned last.
#[derive(Debug, Default)]
pub(crate) struct MetaDriver {
    /// Tick of the last frame from each node, on this core.
    heard: std::collections::HashMap<NodeId, u64>,
    /// Tick this core became the meta leader (None: it does not lead): nobody is
    /// declared down or dead for silence from before that.
    lead_since: Option<u64>,
    /// The map epoch and unreachable nodes of the last plan: the same facts give
    /// the same plan, which need not be made again.
    planned: Option<(u64, Vec<NodeId>)>,
    /// Each shard's size as its leader last reported it (its core's map poll):
    /// the plan moves the smallest replicas of equally few moves. A shard not
    /// heard of counts 0. Sizes change all the time, so a change alone does not
    /// make a new plan; the next change of facts plans with them.
    sizes: std::collections::HashMap<ShardId, u64>,
}

impl MetaDriver {
    /// A frame from `node` arrived at tick `now`. True when this leader counted
    /// it unreachable until now (silent past [`DOWN_AFTER_TICKS`], or never heard
    /// from: a node that has just joined): the placement should be looked at
    /// again now rather than at the next periodic look.
    pub fn heard(&mut self, node: NodeId, now: u64) -> bool {
        let Some(since) = self.lead_since else {
            self.heard.insert(node, now);
            return false;
        };
        let last = self.heard.insert(node, now).unwrap_or(0).max(since);
        now.saturating_sub(last) > DOWN_AFTER_TICKS
    }

    /// Shard sizes a core reported with its map poll (every meta replica keeps
    /// them, so a new meta leader plans with them at once).
    pub fn sized(&mut self, sizes: &[ShardSize]) {
        for s in sizes {
            self.sizes.insert(s.shard, s.bytes);
        }
    }

    /// This core no longer leads the meta group.
    pub fn stop(&mut self) {
        self.lead_since = None;
        self.planned = None;
    }

    /// The edits the meta leader makes next for `map` at tick `now` (this core is
    /// node `me`): deaths and returns first, alone (the plan follows from the map
    /// they make); then the placement's edits, when the facts changed since the
    /// last plan.
    pub fn next(&mut self, map: &ClusterMap, me: NodeId, now: u64, dead_after: u64, auto: bool) -> Vec<MetaEdit> {
        let since = *self.lead_since.get_or_insert(now);
        let silent = |n: NodeId| if n == me { 0 } else { now - self.heard.get(&n).copied().unwrap_or(0).max(since) };
        let mut edits = Vec::new();
        let mut unreachable = std::collections::BTreeSet::new();
        for n in &map.nodes {
            let quiet = silent(n.id);
            if quiet > DOWN_AFTER_TICKS {
                unreachable.insert(n.id);
            }
            let state = match n.state {
                NodeState::Up | NodeState::Draining if quiet > dead_after => NodeState::Dead,
                NodeState::Dead if quiet <= DOWN_AFTER_TICKS => NodeState::Up,
                _ => continue,
            };
            edits.push(MetaEdit::SetNodeState { node: n.id, state, force: false });
        }
        if !edits.is_empty() {
            return edits;
        }
        let facts = (map.epoch, unreachable.iter().copied().collect());
        if self.planned.as_ref() == Some(&facts) {
            return Vec::new();
        }
        self.planned = Some(facts);
        let bytes_of = |shard: ShardId| self.sizes.get(&shard).copied().unwrap_or(0);
        crate::placement::drive::next_edits(map, &unreachable, auto, MOVES_AT_ONCE, bytes_of)
    }
}

/// The map a meta state machine's read of [`MAP_KEY`] holds, and its version (0:
/// never written, so the founding map `founding`, when it is one).
pub(crate) fn stored_map(read: Outcome, founding: Option<&ClusterMap>) -> Result<(ClusterMap, u64), String> {
    match read {
        Outcome::Ok(OkReply::Value { version, value }) => {
            let map = corekv_rpc::archive::from_unaligned::<ClusterMap>(&value)?;
            Ok((map, version))
        }
        Outcome::NotFound => match founding {
            Some(founding) => Ok((founding.clone(), 0)),
            None => Err("the meta group holds no map and this core does not know the founding one".into()),
        },
        other => Err(format!("reading the map: {}", other.word())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rebalance(on: bool) -> MetaEdit {
        MetaEdit::SetRebalance { on }
    }

    fn grow(node: NodeId) -> MetaEdit {
        MetaEdit::GrowMeta { node }
    }

    #[test]
    fn every_waiting_edit_goes_in_one_write_and_a_lost_race_retries_them_first_in_order() {
        let mut q = MetaQueue::default();
        assert!(q.push(rebalance(true)) && q.push(grow(4)) && q.push(grow(5)));
        assert!(!q.push(grow(4)), "an equal edit waits already");
        let batch = q.take_waiting();
        assert_eq!(batch, vec![rebalance(true), grow(4), grow(5)]);
        q.inflight = batch;
        assert!(q.take_waiting().is_empty(), "one write in flight at a time");
        assert!(!q.push(grow(5)), "an equal edit is in flight");
        assert!(q.push(grow(6)));
        q.answered(true);
        assert_eq!(q.take_waiting(), vec![rebalance(true), grow(4), grow(5), grow(6)]);
        assert!(q.is_idle());
        q.inflight = vec![grow(7)];
        q.answered(false);
        assert!(q.is_idle(), "a done write leaves nothing behind");
    }

    /// The meta leader plans with the sizes the shard leaders reported: a node
    /// joining 3 nodes that hold 8 shards twice over takes 4 of them, the 4
    /// smallest (here the highest ids, which ties on size would not pick).
    #[test]
    fn the_plan_moves_the_smallest_shards_the_leaders_reported() {
        use corekv_rpc::map::NodeInfo;
        let info = |id: NodeId| NodeInfo { id, addr: format!("10.0.0.{id}:7000"), cores: 1, state: NodeState::Up };
        let founding = crate::placement::initial_map(1, &[info(1), info(2), info(3)], 8, 2).unwrap();
        let joined = nodes::add_node(&founding, &info(4)).unwrap().unwrap();
        let map = nodes::set_rebalance(&joined, true).unwrap();
        let moved = |d: &mut MetaDriver| -> Vec<ShardId> {
            let edits = d.next(&map, 1, 10, 1_000_000, true);
            let mut shards: Vec<ShardId> = edits
                .iter()
                .filter_map(|e| match e {
                    MetaEdit::Begin { shard, .. } => Some(*shard),
                    _ => None,
                })
                .collect();
            shards.sort_unstable();
            shards
        };
        let unsized_plan = moved(&mut MetaDriver::default());
        assert_eq!(unsized_plan.len(), 4, "{unsized_plan:?}");
        assert!(unsized_plan.iter().any(|&s| s < 4), "without sizes ties pick low ids: {unsized_plan:?}");
        let mut d = MetaDriver::default();
        let sizes: Vec<ShardSize> =
            (0..8).map(|shard| ShardSize { shard, bytes: if shard < 4 { 100 << 20 } else { 1 << 20 } }).collect();
        d.sized(&sizes[..4]);
        d.sized(&sizes[4..]);
        assert_eq!(moved(&mut d), vec![4, 5, 6, 7]);
    }

    #[test]
    fn hearing_from_a_node_the_leader_counted_unreachable_asks_for_a_look() {
        let mut d = MetaDriver::default();
        assert!(!d.heard(4, 5), "a core that does not lead looks at nothing");
        d.lead_since = Some(100);
        assert!(!d.heard(2, 150), "heard within the down threshold of taking the lead");
        assert!(d.heard(4, 100 + DOWN_AFTER_TICKS + 1), "a node never heard from since the lead began");
        assert!(!d.heard(4, 100 + DOWN_AFTER_TICKS + 2), "then only when it falls silent again");
        assert!(d.heard(2, 150 + DOWN_AFTER_TICKS + 1));
    }
}
