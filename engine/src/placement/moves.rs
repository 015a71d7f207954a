//! Replica moves as map edits (DESIGN §7): what the map says while a shard's
//! replica moves from one node to another, and when the move is over.
//!
//! A move is declarative. [`begin`] puts the target in the source's place among
//! the shard's wanted replicas and keeps the source in `outgoing`; the shard's
//! leader then changes the group's configuration step by step towards the wanted
//! set (the node core's `reconcile`: learner, snapshot and log, promotion, leader
//! transfer if the source led, removal). [`settle`] ends the move once the
//! shard's configuration is exactly the wanted set: only then does the map stop
//! naming the source, which makes the source's core delete its replica.
//! [`revert`] turns a move around (its target died): the source is wanted again
//! and the target leaves the same way.
//!
//! Pure functions of a map, so the meta group and the simulator's stand-in for it
//! apply exactly the same rules. Every edit bumps the epoch.

use corekv_rpc::kv::{Epoch, NodeId, ShardId};
use corekv_rpc::map::{ClusterMap, Handoff, META_REPLICAS_MAX, META_SHARD, NodeState, Replica};
use corekv_rpc::node::LeaderPick;
use corekv_rpc::raft::ConfState;
use thiserror::Error;

/// Why a move was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MoveError {
    /// The map has no such shard.
    #[error("no shard {shard}")]
    UnknownShard {
        /// The shard asked for.
        shard: ShardId,
    },
    /// The map has no such node, or the node has no such core.
    #[error("node {node} has no core {core}")]
    UnknownTarget {
        /// The node asked for.
        node: NodeId,
        /// The core asked for.
        core: u16,
    },
    /// The target node is draining, dead or removed.
    #[error("node {node} is {state}: it takes no replicas")]
    TargetNotUp {
        /// The node asked for.
        node: NodeId,
        /// Its state.
        state: &'static str,
    },
    /// The source holds no wanted replica of the shard.
    #[error("node {node} holds no replica of shard {shard}")]
    NotAReplica {
        /// The shard.
        shard: ShardId,
        /// The node.
        node: NodeId,
    },
    /// The target already holds (or is still leaving) the shard.
    #[error("node {node} already holds shard {shard}")]
    TargetHoldsShard {
        /// The shard.
        shard: ShardId,
        /// The node.
        node: NodeId,
    },
    /// A move of the shard is still under way.
    #[error("shard {shard} is already moving")]
    AlreadyMoving {
        /// The shard.
        shard: ShardId,
    },
    /// The meta group grows to at most five replicas and sheds them (without a
    /// replacement) only above three.
    #[error("the meta group has {replicas} replicas: it grows to at most 5 and shrinks only above 3")]
    MetaSize {
        /// Its replicas now.
        replicas: usize,
    },
    /// Nothing to revert.
    #[error("shard {shard} is not moving")]
    NotMoving {
        /// The shard.
        shard: ShardId,
    },
}

/// The map with shard `shard`'s replica on node `from` moving to `to`.
pub fn begin(map: &ClusterMap, shard: ShardId, from: NodeId, to: Replica) -> Result<ClusterMap, MoveError> {
    let s = map.group(shard).ok_or(MoveError::UnknownShard { shard })?;
    // The meta group lives on core 0 of its nodes.
    if map.node(to.node).is_none_or(|n| to.core >= n.cores) || (shard == META_SHARD && to.core != 0) {
        return Err(MoveError::UnknownTarget { node: to.node, core: to.core });
    }
    let state = map.node(to.node).map_or(NodeState::Up, |n| n.state);
    if state != NodeState::Up {
        return Err(MoveError::TargetNotUp { node: to.node, state: state.name() });
    }
    // A hand-off takes its node out of quorums for a moment: no move on top of
    // it, unless its node leaves (its replicas move off all the same).
    let handing = s.handoff.is_some_and(|h| map.node(h.to.node).is_some_and(|n| !n.state.leaves()));
    if !s.outgoing.is_empty() || handing {
        return Err(MoveError::AlreadyMoving { shard });
    }
    let at = s.replicas.iter().position(|r| r.node == from).ok_or(MoveError::NotAReplica { shard, node: from })?;
    if s.members().any(|r| r.node == to.node) {
        return Err(MoveError::TargetHoldsShard { shard, node: to.node });
    }
    let mut next = map.clone();
    let moving = next.group_mut(shard).expect("checked above");
    let source = std::mem::replace(&mut moving.replicas[at], to);
    moving.outgoing.push(source);
    next.epoch += 1;
    Ok(next)
}

/// The map with shard `shard`'s replica on node `to.node` being handed to core
/// `to.core` of that node (see [`corekv_rpc::map::ShardReplicas::handoff`]).
/// Refused for the meta group (it stays on core 0), for a shard already moving
/// or handing off, and for a replica already on that core.
pub fn relocate(map: &ClusterMap, shard: ShardId, to: Replica) -> Result<ClusterMap, MoveError> {
    let s = map.group(shard).ok_or(MoveError::UnknownShard { shard })?;
    if map.node(to.node).is_none_or(|n| to.core >= n.cores) || shard == META_SHARD {
        return Err(MoveError::UnknownTarget { node: to.node, core: to.core });
    }
    let state = map.node(to.node).map_or(NodeState::Up, |n| n.state);
    if state != NodeState::Up {
        return Err(MoveError::TargetNotUp { node: to.node, state: state.name() });
    }
    if !s.outgoing.is_empty() || s.handoff.is_some() {
        return Err(MoveError::AlreadyMoving { shard });
    }
    let at =
        s.replicas.iter().position(|r| r.node == to.node).ok_or(MoveError::NotAReplica { shard, node: to.node })?;
    if s.replicas[at].core == to.core {
        return Err(MoveError::TargetHoldsShard { shard, node: to.node });
    }
    let mut next = map.clone();
    next.epoch += 1;
    next.group_mut(shard).expect("checked above").handoff = Some(Handoff { to, since: next.epoch });
    Ok(next)
}

/// The map with shard `shard`'s hand-off to `to`, begun at epoch `since`, done:
/// the node's member is listed on the target core. None when no such hand-off
/// is under way (a late report of an earlier one changes nothing).
pub fn relocated(map: &ClusterMap, shard: ShardId, to: Replica, since: Epoch) -> Option<ClusterMap> {
    if map.group(shard)?.handoff != Some(Handoff { to, since }) {
        return None;
    }
    let mut next = map.clone();
    let s = next.group_mut(shard).expect("checked above");
    s.handoff = None;
    for r in s.replicas.iter_mut().chain(s.outgoing.iter_mut()).filter(|r| r.node == to.node) {
        r.core = to.core;
    }
    next.epoch += 1;
    Some(next)
}

/// `map` without the hand-offs whose node no longer holds the shard (it left
/// the group by a move, or was removed): nothing is left to hand over.
pub fn drop_stale_handoffs(mut map: ClusterMap) -> ClusterMap {
    for shard in map.groups().collect::<Vec<_>>() {
        let s = map.group_mut(shard).expect("listed");
        if let Some(h) = s.handoff
            && !s.members().any(|r| r.node == h.to.node)
        {
            s.handoff = None;
        }
    }
    map
}

/// The map with shard `shard`'s move to node `target` turned around (the target
/// died, or an operator cancelled): the replica that was leaving is wanted again,
/// in the target's place, and the target leaves the same way a source does.
pub fn revert(map: &ClusterMap, shard: ShardId, target: NodeId) -> Result<ClusterMap, MoveError> {
    let s = map.group(shard).ok_or(MoveError::UnknownShard { shard })?;
    let [source] = s.outgoing[..] else { return Err(MoveError::NotMoving { shard }) };
    let at = s.replicas.iter().position(|r| r.node == target).ok_or(MoveError::NotAReplica { shard, node: target })?;
    let mut next = map.clone();
    let moving = next.group_mut(shard).expect("checked above");
    let target = std::mem::replace(&mut moving.replicas[at], source);
    moving.outgoing = vec![target];
    next.epoch += 1;
    Ok(next)
}

/// The map with each picked shard's preferred leader (its first wanted replica)
/// set to the picked node: leader balance, which moves no data. A pick that no
/// longer fits the map (the shard is moving, or the node holds no wanted replica
/// of it) is skipped; None when nothing changes.
pub fn lead(map: &ClusterMap, picks: &[LeaderPick]) -> Option<ClusterMap> {
    let mut next = map.clone();
    let mut changed = false;
    for pick in picks {
        let Some(s) = next.group_mut(pick.shard).filter(|s| pick.shard != META_SHARD && s.outgoing.is_empty()) else {
            continue;
        };
        if let Some(at) = s.replicas.iter().position(|r| r.node == pick.node).filter(|&at| at > 0) {
            let first = s.replicas.remove(at);
            s.replicas.insert(0, first);
            changed = true;
        }
    }
    changed.then(|| {
        next.epoch += 1;
        next
    })
}

/// The map with the meta group grown by a replica on core 0 of `to`. Nothing
/// leaves: the meta group's leader adds it as a learner, streams it the map and
/// promotes it, as for any move.
pub fn grow_meta(map: &ClusterMap, to: NodeId) -> Result<ClusterMap, MoveError> {
    let state = map.node(to).ok_or(MoveError::UnknownTarget { node: to, core: 0 })?.state;
    if state != NodeState::Up {
        return Err(MoveError::TargetNotUp { node: to, state: state.name() });
    }
    if !map.meta.outgoing.is_empty() {
        return Err(MoveError::AlreadyMoving { shard: META_SHARD });
    }
    if map.meta.members().any(|r| r.node == to) {
        return Err(MoveError::TargetHoldsShard { shard: META_SHARD, node: to });
    }
    if map.meta.replicas.len() >= META_REPLICAS_MAX {
        return Err(MoveError::MetaSize { replicas: map.meta.replicas.len() });
    }
    let mut next = map.clone();
    next.meta.replicas.push(Replica { node: to, core: 0 });
    next.epoch += 1;
    Ok(next)
}

/// The map with the meta group's replica on `node` leaving it, without a
/// replacement: it is outgoing until the group's configuration drops it
/// ([`settle`]). Only a group of more than three replicas sheds one: below that
/// a replica is replaced, never just dropped (a retried edit on a newer map
/// cannot shrink the group past what the driver wanted).
pub fn shrink_meta(map: &ClusterMap, node: NodeId) -> Result<ClusterMap, MoveError> {
    if !map.meta.outgoing.is_empty() {
        return Err(MoveError::AlreadyMoving { shard: META_SHARD });
    }
    let at = map
        .meta
        .replicas
        .iter()
        .position(|r| r.node == node)
        .ok_or(MoveError::NotAReplica { shard: META_SHARD, node })?;
    if map.meta.replicas.len() <= 3 {
        return Err(MoveError::MetaSize { replicas: map.meta.replicas.len() });
    }
    let mut next = map.clone();
    let leaving = next.meta.replicas.remove(at);
    next.meta.outgoing.push(leaving);
    next.epoch += 1;
    Ok(next)
}

/// The map with shard `shard`'s move over, when `conf` (the shard leader's
/// configuration) is exactly the wanted set: the outgoing replicas are no longer
/// members and may delete their copies. None while the move is under way.
pub fn settle(map: &ClusterMap, shard: ShardId, conf: &ConfState) -> Option<ClusterMap> {
    if !settles(map, shard, conf) {
        return None;
    }
    let mut next = map.clone();
    next.group_mut(shard).expect("checked above").outgoing.clear();
    next.epoch += 1;
    Some(next)
}

/// Whether [`settle`] would end shard `shard`'s move with `conf`, without
/// making the map (a shard leader asks at every tick of a move).
pub fn settles(map: &ClusterMap, shard: ShardId, conf: &ConfState) -> bool {
    let Some(s) = map.group(shard) else { return false };
    if s.outgoing.is_empty() || !conf.learners.is_empty() || conf.voters.len() != s.replicas.len() {
        return false;
    }
    // Replicas are on distinct nodes; a reported configuration comes off the
    // wire, so its voters are checked both ways: with the counts equal, that
    // makes them the same set.
    conf.voters.iter().all(|v| s.replicas.iter().any(|r| r.node == *v))
        && s.replicas.iter().all(|r| conf.voters.contains(&r.node))
}

#[cfg(test)]
mod tests {
    use corekv_rpc::map::{NodeInfo, ShardReplicas};

    use super::*;

    fn r(node: NodeId) -> Replica {
        Replica { node, core: 0 }
    }

    fn map() -> ClusterMap {
        let nodes = (1..=4)
            .map(|id| NodeInfo {
                id,
                addr: format!("10.0.0.{id}:7000"),
                cores: 2,
                state: corekv_rpc::map::NodeState::Up,
            })
            .collect();
        let shards = vec![ShardReplicas::new(vec![r(1), r(2), r(3)])];
        ClusterMap { cluster_id: 1, epoch: 3, nodes, shards, meta: ShardReplicas::new(vec![r(1)]), rebalance: false }
    }

    fn conf(voters: &[NodeId], learners: &[NodeId]) -> ConfState {
        ConfState { voters: voters.to_vec(), learners: learners.to_vec() }
    }

    #[test]
    fn a_hand_off_names_its_epoch_and_ends_only_by_its_own_report() {
        let to = Replica { node: 2, core: 1 };
        let begun = relocate(&map(), 0, to).unwrap();
        assert_eq!(begun.handoff_of(0), Some(Handoff { to, since: 4 }));
        assert_eq!(begun.core_of(0, 2), Some(0), "messages still go to the source");
        assert!(begun.shards_on(2, 1).any(|s| s == 0) && begun.shards_on(2, 0).any(|s| s == 0));
        assert_eq!(relocate(&begun, 0, Replica { node: 3, core: 1 }), Err(MoveError::AlreadyMoving { shard: 0 }));
        assert_eq!(relocate(&map(), 0, r(2)), Err(MoveError::TargetHoldsShard { shard: 0, node: 2 }));
        assert_eq!(
            relocate(&map(), 0, Replica { node: 4, core: 1 }),
            Err(MoveError::NotAReplica { shard: 0, node: 4 })
        );
        assert_eq!(
            relocate(&map(), META_SHARD, Replica { node: 1, core: 1 }).map(|_| ()),
            Err(MoveError::UnknownTarget { node: 1, core: 1 })
        );
        // A late report of another hand-off changes nothing.
        assert_eq!(relocated(&begun, 0, to, 3), None);
        let done = relocated(&begun, 0, to, 4).unwrap();
        assert_eq!((done.core_of(0, 2), done.handoff_of(0)), (Some(1), None));
        // No move starts on a shard handing off, unless the hand-off's node leaves.
        assert_eq!(begin(&begun, 0, 1, r(4)), Err(MoveError::AlreadyMoving { shard: 0 }));
        let mut leaving = begun.clone();
        leaving.nodes[1].state = corekv_rpc::map::NodeState::Draining;
        let moved = begin(&leaving, 0, 2, r(4)).unwrap();
        // Once node 2's member is gone, so is its hand-off.
        let settled = drop_stale_handoffs(settle(&moved, 0, &conf(&[1, 3, 4], &[])).unwrap());
        assert_eq!(settled.handoff_of(0), None);
    }

    #[test]
    fn a_move_puts_the_target_in_the_sources_place_and_keeps_the_source_until_the_shard_drops_it() {
        let m = begin(&map(), 0, 1, Replica { node: 4, core: 1 }).unwrap();
        assert_eq!(m.epoch, 4);
        assert_eq!(m.replicas(0), &[Replica { node: 4, core: 1 }, r(2), r(3)]);
        assert_eq!(m.outgoing(0), &[r(1)]);
        assert_eq!(m.core_of(0, 1), Some(0), "the source still gets its messages");
        // Under way: a learner, or the source still voting, keeps the move open.
        assert_eq!(settle(&m, 0, &conf(&[1, 2, 3], &[4])), None);
        assert_eq!(settle(&m, 0, &conf(&[1, 2, 3, 4], &[])), None);
        assert_eq!(settle(&m, 0, &conf(&[2, 2, 4], &[])), None, "a malformed report settles nothing");
        assert!(!settles(&m, 0, &conf(&[2, 3, 1], &[])));
        assert!(settles(&m, 0, &conf(&[3, 4, 2], &[])), "voters in any order");
        let done = settle(&m, 0, &conf(&[2, 3, 4], &[])).unwrap();
        assert_eq!(done.epoch, 5);
        assert!(done.outgoing(0).is_empty());
        assert_eq!(done.core_of(0, 1), None);
        assert_eq!(settle(&done, 0, &conf(&[2, 3, 4], &[])), None, "nothing left to settle");
    }

    #[test]
    fn a_reverted_move_wants_the_source_back_and_sends_the_target_away() {
        let m = begin(&map(), 0, 2, r(4)).unwrap();
        let back = revert(&m, 0, 4).unwrap();
        assert_eq!(back.replicas(0), &[r(1), r(2), r(3)]);
        assert_eq!(back.outgoing(0), &[r(4)]);
        assert_eq!(settle(&back, 0, &conf(&[1, 2, 3], &[4])), None, "the target is still a learner");
        assert!(settle(&back, 0, &conf(&[1, 2, 3], &[])).is_some());
        assert_eq!(revert(&map(), 0, 4), Err(MoveError::NotMoving { shard: 0 }));
    }

    #[test]
    fn a_leader_pick_reorders_the_wanted_replicas_and_skips_what_no_longer_fits() {
        let m = map();
        let led = lead(&m, &[LeaderPick { shard: 0, node: 3 }]).unwrap();
        assert_eq!(led.replicas(0), &[r(3), r(1), r(2)]);
        assert_eq!(led.epoch, m.epoch + 1);
        assert_eq!(lead(&led, &[LeaderPick { shard: 0, node: 3 }]), None, "already first");
        assert_eq!(lead(&m, &[LeaderPick { shard: 0, node: 4 }]), None, "node 4 holds no replica");
        assert_eq!(lead(&m, &[LeaderPick { shard: 7, node: 2 }]), None, "no such shard");
        let moving = begin(&m, 0, 2, r(4)).unwrap();
        assert_eq!(lead(&moving, &[LeaderPick { shard: 0, node: 4 }]), None, "a moving shard keeps its order");
    }

    #[test]
    fn the_meta_group_grows_onto_an_up_node_and_shrinks_through_outgoing() {
        let m = map();
        let grown = grow_meta(&m, 3).unwrap();
        assert_eq!(grown.replicas(META_SHARD), &[r(1), r(3)]);
        assert!(grown.outgoing(META_SHARD).is_empty());
        assert_eq!(grow_meta(&grown, 3), Err(MoveError::TargetHoldsShard { shard: META_SHARD, node: 3 }));
        assert_eq!(grow_meta(&m, 9), Err(MoveError::UnknownTarget { node: 9, core: 0 }));
        assert_eq!(shrink_meta(&grown, 1), Err(MoveError::MetaSize { replicas: 2 }), "three or fewer: no shedding");
        let four = grow_meta(&grow_meta(&grown, 2).unwrap(), 4).unwrap();
        let shrunk = shrink_meta(&four, 1).unwrap();
        assert_eq!(shrunk.replicas(META_SHARD), &[r(3), r(2), r(4)]);
        assert_eq!(shrunk.outgoing(META_SHARD), &[r(1)]);
        assert_eq!(shrink_meta(&shrunk, 3), Err(MoveError::AlreadyMoving { shard: META_SHARD }));
        assert_eq!(grow_meta(&shrunk, 1), Err(MoveError::AlreadyMoving { shard: META_SHARD }));
        let done = settle(&shrunk, META_SHARD, &conf(&[2, 3, 4], &[])).unwrap();
        assert_eq!(shrink_meta(&done, 3), Err(MoveError::MetaSize { replicas: 3 }));
    }

    #[test]
    fn bad_moves_are_refused() {
        let m = map();
        assert_eq!(begin(&m, 1, 1, r(4)), Err(MoveError::UnknownShard { shard: 1 }));
        assert_eq!(begin(&m, 0, 1, r(9)), Err(MoveError::UnknownTarget { node: 9, core: 0 }));
        assert_eq!(begin(&m, 0, 1, Replica { node: 4, core: 2 }), Err(MoveError::UnknownTarget { node: 4, core: 2 }));
        assert_eq!(begin(&m, 0, 4, r(4)), Err(MoveError::NotAReplica { shard: 0, node: 4 }));
        assert_eq!(begin(&m, 0, 1, r(2)), Err(MoveError::TargetHoldsShard { shard: 0, node: 2 }));
        let moving = begin(&m, 0, 1, r(4)).unwrap();
        assert_eq!(begin(&moving, 0, 2, r(1)), Err(MoveError::AlreadyMoving { shard: 0 }));
    }
}
