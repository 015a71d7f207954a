//! What travels on a corekv connection after the frame codec (DESIGN §9): the
//! handshake, batches of peer messages for one destination core, client calls and
//! their replies, and the admin calls (`stats`, `status`, cluster map).
//!
//! A connection goes to one core of one node. Its first frame is a [`Hello`]; the
//! server answers with a [`HelloReply`] and, when it refuses (another cluster, a
//! core count that does not match the map), closes the connection. After that a
//! peer connection carries [`PeerBatch`] frames (one per flush, for one destination
//! core) and a client connection [`ClientBatch`] frames one way and [`ServerBatch`]
//! frames back, each call tagged with the client's id for pipelining.
//!
//! Heartbeats are coalesced (DESIGN §4): a core sends the heartbeats of all groups
//! it leads, for one destination core, as one [`PeerMessage::Heartbeats`] per
//! interval, and the answers come back as one [`PeerMessage::HeartbeatResponses`].

// rkyv's derive emits resolver types whose fields carry no docs.
#![allow(missing_docs)]

use crate::txn::{ResolveItem, TxnId, TxnMeta, TxnSets, Vote};
use rkyv::rancor;
use rkyv::{Archive, Deserialize, Serialize};

use crate::kv::{DecodeError, Epoch, NodeId, Request, Response, ShardId};
use crate::map::{ClusterMap, CoreIndex};
use crate::raft::{Index, Message, Term};

/// Bumped whenever a type in this module changes shape.
pub const WIRE_VERSION: u32 = 10;
/// Most calls a client may pipeline on one connection before it waits for replies;
/// the server answers Busy beyond it.
pub const CLIENT_CALLS_INFLIGHT_MAX: usize = 4096;

/// Who is connecting.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Role {
    /// Another node's core, which will send [`PeerBatch`] frames.
    Peer { node: NodeId, core: CoreIndex, cores: u16 },
    /// A client, which will send [`ClientBatch`] frames.
    Client,
}

/// The first frame on every connection.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Hello {
    /// [`WIRE_VERSION`] of the sender.
    pub wire_version: u32,
    /// The cluster the sender belongs to (a client learns it from any node: 0 =
    /// "tell me").
    pub cluster_id: u64,
    /// The node the sender means to reach (0 = any).
    pub to_node: NodeId,
    /// The sender.
    pub role: Role,
}

/// The server's answer to a [`Hello`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum HelloReply {
    /// Accepted: who answered.
    Welcome { cluster_id: u64, node: NodeId, core: CoreIndex, cores: u16 },
    /// Refused; the connection closes. `reason` names both values of a mismatch.
    Refused { reason: String },
}

/// What an accepted handshake tells the connecting side: the fields of
/// [`HelloReply::Welcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    /// The answering node's cluster.
    pub cluster_id: u64,
    /// The answering node.
    pub node: NodeId,
    /// The answering core.
    pub core: CoreIndex,
    /// How many cores the answering node runs.
    pub cores: u16,
}

impl From<Welcome> for HelloReply {
    fn from(w: Welcome) -> HelloReply {
        HelloReply::Welcome { cluster_id: w.cluster_id, node: w.node, core: w.core, cores: w.cores }
    }
}

impl HelloReply {
    /// The welcome, or the refusal's reason.
    pub fn into_welcome(self) -> Result<Welcome, String> {
        match self {
            HelloReply::Welcome { cluster_id, node, core, cores } => Ok(Welcome { cluster_id, node, core, cores }),
            HelloReply::Refused { reason } => Err(reason),
        }
    }
}

/// One heartbeat of one group, inside a coalesced message.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct HeartbeatItem {
    pub shard: ShardId,
    pub term: Term,
    pub commit: Index,
    pub read_round: u64,
}

/// One heartbeat answer of one group, inside a coalesced message.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct HeartbeatResponseItem {
    pub shard: ShardId,
    pub term: Term,
    pub read_round: u64,
}

/// A message between two nodes' cores.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum PeerMessage {
    /// A Raft message of one group (shard).
    Raft { shard: ShardId, message: Message },
    /// The heartbeats of every group the sending core leads and the receiving core
    /// follows in, from node `from` to node `to`.
    Heartbeats { from: NodeId, to: NodeId, items: Vec<HeartbeatItem> },
    /// The answers to coalesced heartbeats.
    HeartbeatResponses { from: NodeId, to: NodeId, items: Vec<HeartbeatResponseItem> },
    /// Two-phase commit between shard leaders, addressed by shard: every replica of
    /// `to_shard` gets it and only its leader acts; answers go to `from_shard` the
    /// same way. Every message is safe to lose, repeat and reorder: senders retry
    /// on timers and receivers answer from replicated state.
    Txn { from_shard: ShardId, to_shard: ShardId, message: TxnPeerMessage },
    /// The sender's cluster map: pushed by the meta group's leader to every core
    /// when it changes, and the answer to a [`PeerMessage::MapRequest`].
    Map { map: ClusterMap },
    /// "Send me your map if it is newer than `epoch`": the sender saw a newer
    /// epoch in this core's frame, or polls a meta replica (a core that was down
    /// when a map was pushed, or that nobody talks to, learns it so). A poll
    /// carries the sizes of the shards the sending core leads: the meta leader
    /// plans with them, so of equally few moves the smallest replicas move.
    MapRequest { epoch: Epoch, sizes: Vec<ShardSize> },
    /// A change to the cluster map, for the meta group's leader (every meta
    /// replica gets it, only the leader acts; senders repeat until the map shows
    /// it).
    MetaEdit { edit: MetaEdit },
    /// Target -> source core of group `shard`'s hand-off begun at epoch `since`
    /// (see [`crate::map::ShardReplicas::handoff`]): "give me your state" (the
    /// target restarted before it was durable, or it started after the source
    /// stopped). The state itself goes from core to core inside the process.
    HandoffAsk { shard: ShardId, since: Epoch },
}

/// A change to the cluster map (DESIGN §7), applied by the meta group's leader.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum MetaEdit {
    /// Move group `shard`'s replica off node `from` onto `to`.
    Begin { shard: ShardId, from: NodeId, to: crate::map::Replica },
    /// Turn group `shard`'s move to node `target` around.
    Revert { shard: ShardId, target: NodeId },
    /// Group `shard`'s leader reports its configuration: a move is over once it is
    /// exactly the wanted set.
    Settle { shard: ShardId, conf: crate::raft::ConfState },
    /// A node joins the cluster (up, holding nothing).
    AddNode { node: crate::map::NodeInfo },
    /// A node's state changes (drain, removal, death, return); `force` removes
    /// a node that was not drained.
    SetNodeState { node: NodeId, state: crate::map::NodeState, force: bool },
    /// An operator asks for a rebalance (`on`), or the meta leader finds the
    /// placement balanced (`!on`).
    SetRebalance { on: bool },
    /// Shards' preferred leaders change (leader balance; no data moves): each
    /// named node becomes its shard's first replica, and the shard's leader hands
    /// leadership to it.
    Lead { picks: Vec<LeaderPick> },
    /// The meta group gains a replica on core 0 of node `node` (the cluster grew:
    /// DESIGN §7 sizes it).
    GrowMeta { node: NodeId },
    /// The meta group's replica on node `node` leaves it (the cluster shrank, or
    /// the node leaves and no up node is free to take its place).
    ShrinkMeta { node: NodeId },
    /// Group `shard`'s replica on node `to.node` moves to core `to.core` of that
    /// node: a hand-off begins (the planner evens a node's cores).
    Relocate { shard: ShardId, to: crate::map::Replica },
    /// The target of group `shard`'s hand-off to `to`, begun at epoch `since`,
    /// holds the source's state durably: the member moves to its core.
    Relocated { shard: ShardId, to: crate::map::Replica, since: Epoch },
}

/// A shard's size as its leader estimates it (keys and retained versions: about
/// what moving a replica ships), in a [`PeerMessage::MapRequest`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ShardSize {
    pub shard: ShardId,
    pub bytes: u64,
}

/// One shard's chosen leader, in a [`MetaEdit::Lead`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct LeaderPick {
    pub shard: ShardId,
    pub node: NodeId,
}

/// What shard leaders tell each other to run two-phase commit (DESIGN §8).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum TxnPeerMessage {
    /// Anchor -> participant: prepare what the transaction did on your shard.
    Prepare { txn: TxnMeta, sets: TxnSets },
    /// Participant -> anchor: this shard's vote.
    Vote { txn: TxnId, vote: Vote },
    /// Anchor -> participant: apply these decisions.
    Resolve { items: Vec<ResolveItem> },
    /// Participant -> anchor: these decisions are applied here.
    Resolved { txns: Vec<TxnId> },
    /// Participant -> anchor: what became of this prepared transaction?
    Query { txn: TxnId },
    /// Shard leader -> every core: this transaction, not prepared, was aborted
    /// here (wounded, or past its lifetime); every shard the receiving core
    /// leads drops its locks and refuses its later requests, unless it is
    /// prepared there (only its anchor's decision ends it then). Sent to one
    /// replica per core, which applies it to all the groups that core leads.
    Abort { txn: TxnId, reason: crate::txn::AbortReason },
}

/// One frame of a peer connection: messages for one destination core.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct PeerBatch {
    /// The sending core's hybrid clock (DESIGN §8): the receiver's clock moves
    /// past it before it reads a message, so every version a leader has read at
    /// or written reaches, through the heartbeats and votes of a quorum, whoever
    /// leads next.
    pub clock: u64,
    /// The sending core's map epoch: a receiver with an older map asks for it.
    pub epoch: Epoch,
    /// The sending core's index (its node is the connection's).
    pub from_core: CoreIndex,
    pub messages: Vec<PeerMessage>,
}

/// An admin call.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum AdminCall {
    /// The answering core's counters.
    Stats,
    /// The answering core's shard replicas.
    Status,
    /// The node's cluster map.
    ClusterMap,
    /// A change to the cluster map, handed to the meta group's leader (answered
    /// `Accepted` at once; the caller watches the map for its effect).
    MetaEdit(MetaEdit),
}

/// What a client asks.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Call {
    /// A key-value request.
    Kv(Request),
    /// An admin call.
    Admin(AdminCall),
}

/// A call with the client's tag, echoed in its [`TaggedReply`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TaggedCall {
    pub id: u64,
    pub call: Call,
}

/// A reply with the tag of its call.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TaggedReply {
    pub id: u64,
    pub reply: Reply,
}

/// One frame from a client.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct ClientBatch {
    pub calls: Vec<TaggedCall>,
}

/// A core's counters (DESIGN §9). Monotonic since the process started, except the
/// gauges `groups` and `leaders`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct CoreStats {
    pub node: NodeId,
    pub core: CoreIndex,
    /// Shard replicas on this core.
    pub groups: u64,
    /// Of which this core leads.
    pub leaders: u64,
    pub gets: u64,
    pub puts: u64,
    pub deletes: u64,
    pub cas: u64,
    /// Transactional reads received.
    pub txn_reads: u64,
    /// Transactional write locks asked.
    pub txn_locks: u64,
    /// Transaction commits received (at anchors).
    pub txn_commits: u64,
    pub versions: u64,
    pub scans: u64,
    pub stale_reads: u64,
    /// Requests answered Busy (a bounded queue was full).
    pub busy: u64,
    /// Requests answered NotLeader or WrongShard.
    pub redirects: u64,
    pub raft_proposals: u64,
    pub raft_entries_persisted: u64,
    pub raft_entries_applied: u64,
    pub wal_batches: u64,
    pub wal_bytes: u64,
    pub wal_fdatasyncs: u64,
    pub snapshots_taken: u64,
    /// The part of those taken early, because the group's entries kept the WAL
    /// above the live segments its core allows.
    pub snapshots_for_wal: u64,
    pub snapshots_installed: u64,
    /// Bytes of the snapshots installed (what replica moves and lagging
    /// followers received).
    pub snapshot_bytes_installed: u64,
    /// The part of those installed by the targets of replica moves (a replica
    /// started empty for a move, or one that does not vote yet): a move's bytes
    /// on the wire, its log tail aside.
    pub move_snapshot_bytes: u64,
    /// How many snapshots those were: one per move unless a target needed
    /// another (it fell behind its source's compacted log).
    pub move_snapshots: u64,
    /// The store sizes (`ShardStatus.bytes`) the first snapshots of replicas
    /// started empty for a move restored: the sizes of the moved replicas when
    /// they moved, which the plan estimated earlier (a repeat snapshot adds
    /// to `move_snapshot_bytes`, not here).
    pub move_store_bytes: u64,
    /// Log entry bytes replicas appended while they did not vote yet: the
    /// targets of replica moves catching up after their snapshot (the source
    /// ships its last compaction snapshot and the log after it). With
    /// `move_snapshot_bytes`, what the moves shipped.
    pub move_log_bytes: u64,
    /// Replicas this core started for shards moved onto it (empty, fed by the leader).
    pub replicas_added: u64,
    /// Replicas this core deleted because their shard moved away.
    pub replicas_dropped: u64,
    /// Membership changes this core's leaders proposed to reach the map's placement.
    pub conf_changes_proposed: u64,
    /// Map edits this core proposed as the meta group's leader.
    pub meta_writes: u64,
    /// Newer maps this core installed (from the meta group or a peer).
    pub maps_installed: u64,
    pub peer_frames_sent: u64,
    pub peer_messages_sent: u64,
    pub peer_frames_received: u64,
    pub peer_messages_received: u64,
    /// Coalesced heartbeat messages sent (one per destination core per interval).
    pub heartbeat_messages_sent: u64,
    pub client_frames_received: u64,
    pub client_frames_sent: u64,
    /// Connections closed for bad input (garbage, oversized or bad-CRC frames,
    /// refused handshakes).
    pub bad_connections: u64,
    /// Node-core loop iterations that had work.
    pub iterations: u64,
    /// CPU time of this core's thread, in ns.
    pub cpu_ns: u64,
}

/// A shard replica as its core sees it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct ShardStatus {
    pub shard: ShardId,
    /// This replica leads the shard.
    pub is_leader: bool,
    /// The leader this replica knows (0 = none).
    pub leader: NodeId,
    pub term: Term,
    pub raft_commit_index: Index,
    pub applied_index: Index,
    pub last_index: Index,
    /// On a leader: how far the slowest voter's match is behind the last index.
    pub lag: u64,
    /// The group's configuration as this replica applied it: who votes.
    pub voters: Vec<NodeId>,
    /// Who receives the log without voting (a replica being added).
    pub learners: Vec<NodeId>,
    /// The estimated size of the replica's data (keys and retained versions):
    /// about what moving it ships.
    pub bytes: u64,
}

/// The answer of an admin call.
// Admin replies are rare and short-lived: the counters stay inline rather than
// boxed, which keeps the archived form a plain struct.
#[allow(clippy::large_enum_variant)]
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum AdminReply {
    Stats(CoreStats),
    Status {
        node: NodeId,
        core: CoreIndex,
        epoch: Epoch,
        shards: Vec<ShardStatus>,
    },
    ClusterMap(ClusterMap),
    /// The call was taken; its effect shows later.
    Accepted,
}

/// What a server answers a call with.
// Replies are built once and moved into a batch; boxing the admin variant would
// cost an allocation for the rare admin call and change the wire shape.
#[allow(clippy::large_enum_variant)]
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Reply {
    Kv(Response),
    Admin(AdminReply),
}

/// One frame to a client.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct ServerBatch {
    pub replies: Vec<TaggedReply>,
}

/// Serialises any wire type of this module into a frame payload.
pub fn to_bytes<T>(value: &T) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rancor::Error,
            >,
        >,
{
    rkyv::to_bytes::<rancor::Error>(value).expect("wire types always serialize").into_vec()
}

/// Validates and decodes a payload received from the network.
pub fn from_bytes<T>(bytes: &[u8]) -> Result<T, DecodeError>
where
    T: Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    crate::archive::from_unaligned(bytes).map_err(DecodeError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::MessageBody;

    #[test]
    fn a_peer_batch_round_trips() {
        let batch = PeerBatch {
            clock: 7 << 16,
            epoch: 3,
            from_core: 1,
            messages: vec![
                PeerMessage::Raft {
                    shard: 3,
                    message: Message { from: 1, to: 2, term: 4, body: MessageBody::TimeoutNow },
                },
                PeerMessage::Heartbeats {
                    from: 1,
                    to: 2,
                    items: vec![HeartbeatItem { shard: 1, term: 2, commit: 3, read_round: 4 }],
                },
            ],
        };
        assert_eq!(from_bytes::<PeerBatch>(&to_bytes(&batch)).unwrap(), batch);
    }

    #[test]
    fn garbage_is_refused_not_read() {
        let hello = Hello { wire_version: WIRE_VERSION, cluster_id: 9, to_node: 1, role: Role::Client };
        let mut bytes = to_bytes(&hello);
        assert_eq!(from_bytes::<Hello>(&bytes).unwrap(), hello);
        let last = bytes.len() - 1;
        bytes[last] = 0xff;
        bytes.truncate(last - 3);
        assert!(from_bytes::<Hello>(&bytes).is_err());
        assert!(from_bytes::<ClientBatch>(&[0xde, 0xad, 0xbe, 0xef]).is_err());
    }
}
