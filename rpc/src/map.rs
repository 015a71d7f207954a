//! The cluster map: which nodes exist, where they listen, and which node cores hold
//! each shard's replicas (DESIGN §7, §9).
//!
//! Every server and client holds a copy; the epoch orders copies (every change bumps
//! it, issue 12). Keys map to shards by [`shard_of_key`], a fixed function (FNV-1a
//! 64) that gives the same answer on every machine, CPU and build: never ahash,
//! whose output is not stable.

// rkyv's derive emits resolver types whose fields carry no docs.
#![allow(missing_docs)]

use rkyv::{Archive, Deserialize, Serialize};

use crate::kv::{Epoch, NodeId, ShardId};

/// A core index within a node (core i listens on base port + i).
pub type CoreIndex = u16;

/// Most cores one node may run.
pub const NODE_CORES_MAX: u16 = 256;
/// Most shards a cluster may have.
pub const SHARDS_MAX: u32 = 65_536;
/// Most replicas per shard.
pub const REPLICAS_MAX: usize = 7;
/// Most nodes a cluster map may name.
pub const NODES_MAX: usize = 1024;
/// The group id of the meta group, the Raft group that holds the map itself
/// (DESIGN §7). It is addressed like a shard wherever groups are (Raft messages,
/// WAL records, snapshot files), and no key maps to it.
pub const META_SHARD: ShardId = u32::MAX;
/// Most replicas of the meta group.
pub const META_REPLICAS_MAX: usize = 5;

/// The epoch of a founding map: the replicas it names start the shards, every
/// later replica joins an existing group and starts empty.
pub const FOUNDING_EPOCH: Epoch = 1;

/// The state of a node (issue 12). The map records `Up`, `Draining`, `Dead` and
/// `Removed`, which the meta group decides; `Down` (unreachable for a short
/// while) is what an observer sees of an `Up` node it cannot reach, and what the
/// planner is told of such a node.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[rkyv(derive(Debug))]
pub enum NodeState {
    /// Serving; shares the replicas.
    Up,
    /// Unreachable for a short while: keeps its replicas, receives none.
    Down,
    /// Being emptied on request before removal: ends with no replica.
    Draining,
    /// Down past `--dead-after`: its replicas are re-created elsewhere.
    Dead,
    /// Gone for good (its id is never reused): holds nothing.
    Removed,
}

impl NodeState {
    /// Whether a node in this state must end with no replica.
    pub fn leaves(self) -> bool {
        matches!(self, NodeState::Draining | NodeState::Dead | NodeState::Removed)
    }

    /// The state's name in `corekv-ctl` output: `up`, `down`, `draining`, `dead`,
    /// `removed`.
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Down => "down",
            NodeState::Draining => "draining",
            NodeState::Dead => "dead",
            NodeState::Removed => "removed",
        }
    }
}

/// One node of the cluster.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct NodeInfo {
    /// The node's id (never 0, never reused).
    pub id: NodeId,
    /// Core 0's address, `HOST:PORT`; core i listens on PORT + i.
    pub addr: String,
    /// How many cores (executors) the node runs.
    pub cores: u16,
    /// Its state as the meta group decided it (never `Down`).
    pub state: NodeState,
}

/// One replica of a shard: the node and the core of that node that owns it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[rkyv(derive(Debug))]
pub struct Replica {
    /// The node.
    pub node: NodeId,
    /// The core of that node.
    pub core: CoreIndex,
}

/// A shard's replicas. The first is the preferred leader: leaders are spread by
/// placement and nudged back there by leader transfer.
///
/// `replicas` is what the placement wants; the shard's own Raft configuration is
/// the truth about who is a member now. Its leader brings the configuration to
/// `replicas` one single-server change at a time (a new replica joins as a learner
/// and is promoted once it caught up; a replica that is not wanted is removed once
/// every wanted one votes). A replacement keeps the replaced replica in
/// `outgoing` until the shard reports a configuration without it: until then it
/// is still a member, and messages must still reach it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ShardReplicas {
    /// The voters the placement wants, preferred leader first.
    pub replicas: Vec<Replica>,
    /// Replicas being replaced: members until the shard's configuration drops them.
    pub outgoing: Vec<Replica>,
    /// A replica changing cores within its node: the node's member (in
    /// `replicas` or `outgoing`, on its old core, the source) hands its Raft
    /// identity over to another core of that node (the target). Both cores hold
    /// the group meanwhile; messages still go to the source, which, once it does
    /// not lead, stops for good and gives the target its whole state (snapshot,
    /// log tail, term and vote). The target makes it durable, then the meta
    /// group moves the member to the target's core, and the target acts from
    /// the map that says so.
    pub handoff: Option<Handoff>,
}

/// A hand-off under way (see [`ShardReplicas::handoff`]).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Handoff {
    /// The target: the node and its core that takes the replica over.
    pub to: Replica,
    /// The epoch of the map that began it: names this hand-off among all of the
    /// shard's, in the messages that carry it out.
    pub since: Epoch,
}

impl ShardReplicas {
    /// A shard with these wanted voters and nobody leaving.
    pub fn new(replicas: Vec<Replica>) -> ShardReplicas {
        ShardReplicas { replicas, outgoing: Vec::new(), handoff: None }
    }

    /// Every replica that may be a member now: the wanted ones, then the outgoing.
    pub fn members(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.iter().chain(&self.outgoing)
    }
}

/// The whole map.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ClusterMap {
    /// The cluster's id (DESIGN §9).
    pub cluster_id: u64,
    /// Bumped by every change.
    pub epoch: Epoch,
    /// Nodes by id, ascending.
    pub nodes: Vec<NodeInfo>,
    /// Shard `s` is `shards[s]`.
    pub shards: Vec<ShardReplicas>,
    /// The meta group's replicas ([`META_SHARD`]), always on core 0.
    pub meta: ShardReplicas,
    /// A rebalance is under way: the meta leader plans and moves until the
    /// placement is balanced, then clears this. Set by an operator
    /// (`corekv-ctl rebalance`, a drain, a removal; also with automatic
    /// rebalancing off) or, with `--auto-rebalance`, by the meta leader after a
    /// change of nodes.
    pub rebalance: bool,
}

impl ClusterMap {
    /// The number of shards.
    pub fn shard_count(&self) -> u32 {
        self.shards.len() as u32
    }

    /// The node `id`, if the map names it.
    pub fn node(&self, id: NodeId) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The replicas of group `shard`: a shard, or the meta group.
    pub fn group(&self, shard: ShardId) -> Option<&ShardReplicas> {
        if shard == META_SHARD { Some(&self.meta) } else { self.shards.get(shard as usize) }
    }

    /// The replicas of group `shard`, to edit.
    pub fn group_mut(&mut self, shard: ShardId) -> Option<&mut ShardReplicas> {
        if shard == META_SHARD { Some(&mut self.meta) } else { self.shards.get_mut(shard as usize) }
    }

    /// Every group: the shards in order, then the meta group.
    pub fn groups(&self) -> impl Iterator<Item = ShardId> + '_ {
        (0..self.shard_count()).chain(std::iter::once(META_SHARD))
    }

    /// The wanted replicas of group `shard` (empty for an unknown one).
    pub fn replicas(&self, shard: ShardId) -> &[Replica] {
        self.group(shard).map_or(&[], |s| &s.replicas)
    }

    /// Every replica of group `shard` that may be a member now (see
    /// [`ShardReplicas::members`]); none for an unknown group.
    pub fn members(&self, shard: ShardId) -> impl Iterator<Item = &Replica> {
        self.group(shard).into_iter().flat_map(ShardReplicas::members)
    }

    /// The groups (shards and the meta group) with a replica on core `core` of
    /// node `node`: both cores of a hand-off hold one (the source its replica,
    /// the target the one taking over).
    pub fn shards_on(&self, node: NodeId, core: CoreIndex) -> impl Iterator<Item = ShardId> + '_ {
        self.groups().filter(move |&s| {
            self.core_of(s, node) == Some(core) || self.handoff(s, node).is_some_and(|(_, to, _)| to == core)
        })
    }

    /// The hand-off of group `shard`'s replica on `node` to another core of that
    /// node, if one is under way: (the source core, the target core, the epoch
    /// that began it).
    pub fn handoff(&self, shard: ShardId, node: NodeId) -> Option<(CoreIndex, CoreIndex, Epoch)> {
        let group = self.group(shard)?;
        let h = group.handoff.filter(|h| h.to.node == node)?;
        let from = group.members().find(|r| r.node == node)?;
        Some((from.core, h.to.core, h.since))
    }

    /// Group `shard`'s hand-off, if one is under way.
    pub fn handoff_of(&self, shard: ShardId) -> Option<Handoff> {
        self.group(shard)?.handoff
    }

    /// The replicas leaving group `shard` (empty for an unknown one).
    pub fn outgoing(&self, shard: ShardId) -> &[Replica] {
        self.group(shard).map_or(&[], |s| &s.outgoing)
    }

    /// The core of `node` holding group `shard`, if that node holds it (as a
    /// wanted replica or as one on its way out): where its messages go (during
    /// a hand-off, the source's core, until the map lists the target's).
    pub fn core_of(&self, shard: ShardId, node: NodeId) -> Option<CoreIndex> {
        self.group(shard)?.members().find(|r| r.node == node).map(|r| r.core)
    }

    /// The shard owning `key`.
    pub fn shard_of(&self, key: &[u8]) -> ShardId {
        shard_of_key(key, self.shard_count())
    }

    /// The address (`HOST:PORT`) of core `core` of node `node`.
    pub fn core_addr(&self, node: NodeId, core: CoreIndex) -> Option<String> {
        let info = self.node(node)?;
        core_addr(&info.addr, core)
    }
}

/// `HOST:PORT` with PORT raised by `core`, or None when the address has no port or
/// the sum overflows.
pub fn core_addr(base: &str, core: CoreIndex) -> Option<String> {
    let (host, port) = base.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let port = port.checked_add(core)?;
    Some(format!("{host}:{port}"))
}

/// FNV-1a, 64 bits: a fixed, portable hash (DESIGN §7).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

/// The shard of `key` among `shard_count` shards. The top bits of the hash are
/// mixed in, as FNV's low bits alone spread short keys poorly.
pub fn shard_of_key(key: &[u8], shard_count: u32) -> ShardId {
    assert!(shard_count > 0, "a cluster has at least one shard");
    let h = stable_hash(key);
    let mixed = h ^ (h >> 32);
    (mixed % u64::from(shard_count)) as ShardId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_the_published_fnv1a() {
        // Reference values of FNV-1a 64.
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn keys_spread_over_shards() {
        let mut counts = vec![0u32; 64];
        for i in 0..64_000 {
            counts[shard_of_key(format!("user{i}").as_bytes(), 64) as usize] += 1;
        }
        // 1000 expected per shard; a fair hash stays well inside ±25 %.
        assert!(counts.iter().all(|&c| (750..1250).contains(&c)), "{counts:?}");
    }

    #[test]
    fn core_addresses_add_the_core_to_the_port() {
        assert_eq!(core_addr("127.0.0.1:7100", 1).as_deref(), Some("127.0.0.1:7101"));
        assert_eq!(core_addr("[::1]:7100", 2).as_deref(), Some("[::1]:7102"));
        assert_eq!(core_addr("host", 0), None);
        assert_eq!(core_addr("host:65535", 1), None);
    }
}
