//! Node edits (issue 12): a node joins, is drained, dies, comes back, is removed.
//!
//! Like [`super::moves`], pure functions of a map that the meta group's leader
//! applies (and `corekv-ctl` applies first to a fresh map, to refuse a request
//! with a clear message before it is sent). Each edit bumps the epoch; an edit
//! that changes nothing answers `Ok(None)` (senders repeat edits until the map
//! shows them). The replica moves that follow a change are the planner's
//! ([`super::plan`]), run by the meta leader.
//!
//! States and their changes:
//! - a join adds a node `Up`, holding nothing; an id is never reused, so a
//!   removed id, or an id the map names with another address or core count, is
//!   refused (joining again with the same address and cores changes nothing);
//! - `Up -> Draining` on an operator's request, when enough up nodes are left to
//!   hold every shard's replicas; `Draining -> Up` cancels it;
//! - `Up | Draining -> Dead` when the meta leader has not heard from the node for
//!   `--dead-after`; `Dead -> Up` when it hears from it again (it holds nothing
//!   by then, or less than before, and gets replicas back like a new node);
//! - `-> Removed`: from `Draining` once the node holds no replica, or with
//!   `force` from any state (its replicas are re-created from the survivors), in
//!   both cases only when enough up nodes are left; nothing leaves `Removed`.
//!
//! `Down` is never recorded: it is an observer's view of an `Up` node it cannot
//! reach.

use corekv_rpc::kv::NodeId;
use corekv_rpc::map::{ClusterMap, NODE_CORES_MAX, NODES_MAX, NodeInfo, NodeState};
use thiserror::Error;

/// Why a node edit was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NodeEditError {
    /// The map names no such node.
    #[error("node {node} is not in the cluster")]
    UnknownNode {
        /// The node asked for.
        node: NodeId,
    },
    /// The node was removed: nothing changes it, and its id is never reused.
    #[error("node {node} was removed from the cluster; its id is never reused")]
    Removed {
        /// The node.
        node: NodeId,
    },
    /// A join with an id the map gives another node.
    #[error("node id {node} is already used by {addr} with {cores} cores")]
    IdInUse {
        /// The id.
        node: NodeId,
        /// The address the map has for it.
        addr: String,
        /// Its core count in the map.
        cores: u16,
    },
    /// A join with an address another node listens on.
    #[error("address {addr} is already node {node}'s")]
    AddressInUse {
        /// The address.
        addr: String,
        /// The node listening there.
        node: NodeId,
    },
    /// A join the map cannot take (id 0, cores out of range, too many nodes).
    #[error("{0}")]
    BadJoin(String),
    /// The state change is not one the rules allow.
    #[error("node {node} is {from}: it cannot become {to}")]
    Transition {
        /// The node.
        node: NodeId,
        /// Its state now.
        from: &'static str,
        /// The state asked for.
        to: &'static str,
    },
    /// A removal without `--force` of a node that was not drained.
    #[error("node {node} is {state}, not drained: drain it first (or remove it with --force)")]
    NotDraining {
        /// The node.
        node: NodeId,
        /// Its state.
        state: &'static str,
    },
    /// A removal without `--force` of a node that still holds replicas.
    #[error("node {node} still holds {replicas} replicas: drain it first (or remove it with --force)")]
    NotDrained {
        /// The node.
        node: NodeId,
        /// Replicas it holds (or is still leaving).
        replicas: usize,
    },
    /// The change would leave fewer up nodes than a shard has replicas.
    #[error("node {node} cannot leave: {up} up nodes would be left for {replication} replicas per shard")]
    NotEnoughNodes {
        /// The node.
        node: NodeId,
        /// Up nodes left after the change.
        up: usize,
        /// Replicas per shard.
        replication: usize,
    },
}

/// The map with `info` added as an up node (`Ok(None)`: it is there already,
/// with the same address and cores, and not removed).
pub fn add_node(map: &ClusterMap, info: &NodeInfo) -> Result<Option<ClusterMap>, NodeEditError> {
    if let Some(known) = map.node(info.id) {
        if known.state == NodeState::Removed {
            return Err(NodeEditError::Removed { node: info.id });
        }
        if known.addr == info.addr && known.cores == info.cores {
            return Ok(None);
        }
        return Err(NodeEditError::IdInUse { node: info.id, addr: known.addr.clone(), cores: known.cores });
    }
    if info.id == 0 {
        return Err(NodeEditError::BadJoin("node id 0 is reserved".into()));
    }
    if info.cores == 0 || info.cores > NODE_CORES_MAX {
        return Err(NodeEditError::BadJoin(format!("a node runs 1 to {NODE_CORES_MAX} cores, not {}", info.cores)));
    }
    if map.nodes.len() >= NODES_MAX {
        return Err(NodeEditError::BadJoin(format!("the cluster map already names {NODES_MAX} nodes")));
    }
    if let Some(other) = map.nodes.iter().find(|n| n.addr == info.addr && n.state != NodeState::Removed) {
        return Err(NodeEditError::AddressInUse { addr: info.addr.clone(), node: other.id });
    }
    let mut next = map.clone();
    let at = next.nodes.partition_point(|n| n.id < info.id);
    next.nodes.insert(at, NodeInfo { state: NodeState::Up, ..info.clone() });
    next.epoch += 1;
    Ok(Some(next))
}

/// How many replicas (wanted or leaving, meta group included) node `node` holds.
pub fn replicas_on(map: &ClusterMap, node: NodeId) -> usize {
    map.groups().filter(|&s| map.members(s).any(|r| r.node == node)).count()
}

/// The map with node `node` in state `to` (`Ok(None)`: it is in it already).
/// `force` allows a removal of a node that was not drained.
pub fn set_state(
    map: &ClusterMap,
    node: NodeId,
    to: NodeState,
    force: bool,
) -> Result<Option<ClusterMap>, NodeEditError> {
    let from = map.node(node).ok_or(NodeEditError::UnknownNode { node })?.state;
    if from == NodeState::Removed {
        return Err(NodeEditError::Removed { node });
    }
    if from == to {
        return Ok(None);
    }
    use NodeState::*;
    let allowed = match to {
        Up => matches!(from, Draining | Dead),
        Draining => from == Up,
        Dead => matches!(from, Up | Draining),
        Removed => force || from == Draining,
        Down => false,
    };
    if to == Removed && !allowed {
        return Err(NodeEditError::NotDraining { node, state: from.name() });
    }
    if !allowed {
        return Err(NodeEditError::Transition { node, from: from.name(), to: to.name() });
    }
    if to == Removed && !force {
        let replicas = replicas_on(map, node);
        if replicas > 0 {
            return Err(NodeEditError::NotDrained { node, replicas });
        }
    }
    // An operator's drain or removal must leave room for every shard's replicas
    // (a death is a fact, recorded whatever it leaves).
    if matches!(to, Draining | Removed) && from == Up {
        let replication = map.shards.iter().map(|s| s.replicas.len()).max().unwrap_or(0);
        let up = map.nodes.iter().filter(|n| n.id != node && n.state == Up).count();
        if up < replication {
            return Err(NodeEditError::NotEnoughNodes { node, up, replication });
        }
    }
    let mut next = map.clone();
    next.nodes.iter_mut().find(|n| n.id == node).expect("checked above").state = to;
    // An operator's drain or removal asks for the moves it implies even with
    // automatic rebalancing off.
    if matches!(to, Draining | Removed) {
        next.rebalance = true;
    }
    next.epoch += 1;
    Ok(Some(next))
}

/// The map with the operator's rebalance request set or cleared.
pub fn set_rebalance(map: &ClusterMap, on: bool) -> Option<ClusterMap> {
    if map.rebalance == on {
        return None;
    }
    let mut next = map.clone();
    next.rebalance = on;
    next.epoch += 1;
    Some(next)
}

#[cfg(test)]
mod tests {
    use corekv_rpc::map::{Replica, ShardReplicas};

    use super::*;

    fn info(id: NodeId) -> NodeInfo {
        NodeInfo { id, addr: format!("10.0.0.{id}:7000"), cores: 2, state: NodeState::Up }
    }

    /// Four nodes; shards on nodes 1–3.
    fn map() -> ClusterMap {
        let nodes = (1..=4).map(info).collect();
        let r = |node| Replica { node, core: 0 };
        let shards = vec![ShardReplicas::new(vec![r(1), r(2), r(3)]), ShardReplicas::new(vec![r(2), r(3), r(1)])];
        ClusterMap { cluster_id: 1, epoch: 3, nodes, shards, meta: ShardReplicas::new(vec![r(1)]), rebalance: false }
    }

    #[test]
    fn a_join_adds_an_up_node_in_id_order_once_and_never_reuses_an_id() {
        let m = map();
        let joined = add_node(&m, &info(9)).unwrap().unwrap();
        assert_eq!(joined.epoch, 4);
        assert_eq!(joined.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), [1, 2, 3, 4, 9]);
        assert_eq!(add_node(&joined, &info(9)), Ok(None), "the same join again changes nothing");
        let other = NodeInfo { addr: "10.9.9.9:1".into(), ..info(2) };
        assert!(matches!(add_node(&m, &other), Err(NodeEditError::IdInUse { node: 2, .. })));
        let same_addr = NodeInfo { id: 7, ..info(2) };
        assert!(matches!(add_node(&m, &same_addr), Err(NodeEditError::AddressInUse { node: 2, .. })));
        assert!(matches!(add_node(&m, &info(0)), Err(NodeEditError::BadJoin(_))));
        let removed = set_state(&m, 4, NodeState::Removed, true).unwrap().unwrap();
        assert_eq!(add_node(&removed, &info(4)), Err(NodeEditError::Removed { node: 4 }));
        // A removed node's address may be used by a new id.
        let reused_addr = NodeInfo { id: 5, ..info(4) };
        assert!(add_node(&removed, &reused_addr).unwrap().is_some());
    }

    #[test]
    fn removal_without_force_waits_for_the_drain_and_nothing_leaves_removed() {
        let m = map();
        assert_eq!(
            set_state(&m, 3, NodeState::Removed, false),
            Err(NodeEditError::NotDraining { node: 3, state: "up" })
        );
        let draining = set_state(&m, 3, NodeState::Draining, false).unwrap().unwrap();
        assert!(draining.rebalance, "a drain asks for its moves");
        assert_eq!(
            set_state(&draining, 3, NodeState::Removed, false),
            Err(NodeEditError::NotDrained { node: 3, replicas: 2 })
        );
        // Node 4 holds nothing: drained at once, then removed.
        let d4 = set_state(&m, 4, NodeState::Draining, false).unwrap().unwrap();
        let removed = set_state(&d4, 4, NodeState::Removed, false).unwrap().unwrap();
        assert_eq!(removed.node(4).unwrap().state, NodeState::Removed);
        for to in [NodeState::Up, NodeState::Draining, NodeState::Dead] {
            assert_eq!(set_state(&removed, 4, to, true), Err(NodeEditError::Removed { node: 4 }));
        }
        assert_eq!(set_state(&m, 8, NodeState::Draining, false), Err(NodeEditError::UnknownNode { node: 8 }));
        assert!(matches!(set_state(&m, 1, NodeState::Down, false), Err(NodeEditError::Transition { .. })));
    }

    #[test]
    fn an_operator_cannot_leave_fewer_up_nodes_than_replicas_but_a_death_is_recorded() {
        let m = map();
        let one_gone = set_state(&m, 4, NodeState::Removed, true).unwrap().unwrap();
        assert_eq!(
            set_state(&one_gone, 1, NodeState::Draining, false),
            Err(NodeEditError::NotEnoughNodes { node: 1, up: 2, replication: 3 })
        );
        assert!(matches!(set_state(&one_gone, 1, NodeState::Removed, true), Err(NodeEditError::NotEnoughNodes { .. })));
        let dead = set_state(&one_gone, 1, NodeState::Dead, false).unwrap().unwrap();
        assert!(!set_state(&m, 1, NodeState::Dead, false).unwrap().unwrap().rebalance, "a death is no request");
        // A dead node may be removed by force, and comes back up if it was not.
        assert!(set_state(&dead, 1, NodeState::Removed, true).unwrap().is_some());
        assert_eq!(set_state(&dead, 1, NodeState::Up, false).unwrap().unwrap().node(1).unwrap().state, NodeState::Up);
    }
}
