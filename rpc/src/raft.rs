//! Raft wire types: log entries, hard state, configurations, snapshots and the
//! messages Raft peers exchange.
//!
//! The Raft core in `corekv-engine` consumes and produces these owned types; the
//! write-ahead log persists [`Entry`] and [`HardState`]. A message names no Raft
//! group: the node layer wraps messages of many groups into one frame per
//! destination core and adds the group id there.

// rkyv's derive emits resolver types for enum struct variants whose fields carry no
// docs; every item written here is documented by hand.
#![allow(missing_docs)]

use rkyv::{Archive, Deserialize, Serialize};

/// A node (server) id. `0` is never a valid id; it means "none".
pub type NodeId = u64;
/// A Raft term. Terms start at 1 once a node has voted or heard of a leader.
pub type Term = u64;
/// A Raft log index. Index 0 is the empty log; the first entry has index 1.
pub type Index = u64;

/// The id that means "no node" (no vote cast, no leader known).
pub const NO_NODE: NodeId = 0;

/// What a log entry carries.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
#[repr(u8)]
pub enum EntryKind {
    /// An application command: `data` is opaque to Raft.
    Normal = 0,
    /// A membership change: `data` is an encoded [`ConfChange`].
    ConfChange = 1,
    /// The empty entry a new leader appends to commit an entry of its own term.
    Empty = 2,
}

/// One Raft log entry.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: Index,
    /// What `data` means.
    pub kind: EntryKind,
    /// Payload: an application command or an encoded [`ConfChange`].
    pub data: Vec<u8>,
}

impl Entry {
    /// Bytes this entry accounts for in size limits (payload plus a fixed header cost).
    pub fn size_bytes(&self) -> u64 {
        ENTRY_OVERHEAD_BYTES + self.data.len() as u64
    }
}

/// The fixed per-entry cost counted against byte limits (term, index, kind, length).
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

/// The part of a node's Raft state that must be durable before the node tells
/// anyone about it (a vote cast, a term adopted, a commit index learned).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, or [`NO_NODE`].
    pub vote: NodeId,
    /// The highest index known committed. Persisting it is an optimisation (it
    /// lets a restarted node apply sooner); safety never depends on it.
    pub commit: Index,
}

/// A group's membership: who votes and who only follows.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct ConfState {
    /// Voting members, sorted, no duplicates.
    pub voters: Vec<NodeId>,
    /// Non-voting members that receive the log, sorted, disjoint from `voters`.
    pub learners: Vec<NodeId>,
}

impl ConfState {
    /// True when `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }
}

/// A single-server membership change (Raft thesis §4.1): one node at a time.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ConfChange {
    /// Add `0` as a learner (it receives the log but does not vote).
    AddLearner(NodeId),
    /// Make learner `0` a voter.
    Promote(NodeId),
    /// Remove `0`, voter or learner.
    Remove(NodeId),
    /// Make `0` a voter directly. Only written at bootstrap: the founding members
    /// are the first entries of every group's log, so a member fed the log from
    /// index 1 learns them. A running group adds a learner and promotes it.
    AddVoter(NodeId),
}

impl ConfChange {
    /// Encoding of a change as entry data: one tag byte then the node id, little endian.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, id) = match *self {
            ConfChange::AddLearner(id) => (1u8, id),
            ConfChange::Promote(id) => (2, id),
            ConfChange::Remove(id) => (3, id),
            ConfChange::AddVoter(id) => (4, id),
        };
        let mut out = Vec::with_capacity(9);
        out.push(tag);
        out.extend_from_slice(&id.to_le_bytes());
        out
    }

    /// Decodes [`ConfChange::encode`]'s output; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<ConfChange> {
        let (&tag, rest) = bytes.split_first()?;
        let id = NodeId::from_le_bytes(rest.try_into().ok()?);
        match tag {
            1 => Some(ConfChange::AddLearner(id)),
            2 => Some(ConfChange::Promote(id)),
            3 => Some(ConfChange::Remove(id)),
            4 => Some(ConfChange::AddVoter(id)),
            _ => None,
        }
    }
}

/// What a snapshot covers.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct SnapshotMeta {
    /// The last log index the snapshot includes.
    pub index: Index,
    /// The term of the entry at `index`.
    pub term: Term,
    /// The membership as of `index`.
    pub conf: ConfState,
}

/// A Raft message between two members of one group.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The sender's term (for pre-votes: the term the sender would campaign in).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of Raft messages.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum MessageBody {
    /// Leader -> follower: entries after `(prev_index, prev_term)`.
    Append {
        /// Index of the entry just before `entries`.
        prev_index: Index,
        /// Term of the entry at `prev_index`.
        prev_term: Term,
        /// Entries to append (may be empty: a probe).
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: Index,
    },
    /// Follower -> leader: answer to `Append`.
    AppendResponse {
        /// Accepted: the follower's log matches the leader's up to `index`.
        /// Rejected: the log did not match at the append's `prev_index` = `index`.
        index: Index,
        /// `Some` on rejection: where the leader should look next (fast back-up).
        reject: Option<RejectHint>,
    },
    /// Candidate -> voter: a request for a vote (or a pre-vote).
    Vote {
        /// A pre-vote (Raft thesis §9.6): no one changes term for it.
        pre_vote: bool,
        /// Index of the candidate's last entry.
        last_index: Index,
        /// Term of the candidate's last entry.
        last_term: Term,
        /// The campaign follows a leader transfer: voters ignore their leader lease.
        transfer: bool,
    },
    /// Voter -> candidate: answer to `Vote`.
    VoteResponse {
        /// Answers a pre-vote.
        pre_vote: bool,
        /// The vote is granted.
        granted: bool,
    },
    /// Leader -> follower: I am alive; commit up to `commit`.
    Heartbeat {
        /// `min(leader commit, follower match)`: never past what the follower holds.
        commit: Index,
        /// Read round this heartbeat confirms (ReadIndex); 0 when none.
        read_round: u64,
    },
    /// Follower -> leader: answer to `Heartbeat`.
    HeartbeatResponse {
        /// Echo of the heartbeat's read round.
        read_round: u64,
    },
    /// Leader -> follower: one chunk of a snapshot.
    Snapshot {
        /// What the whole snapshot covers.
        meta: SnapshotMeta,
        /// Total size of the snapshot data in bytes.
        total_bytes: u64,
        /// Offset of `chunk` within the data.
        offset: u64,
        /// The bytes at `offset`.
        chunk: Vec<u8>,
        /// CRC32 of `chunk`, checked by the receiver.
        chunk_crc: u32,
    },
    /// Follower -> leader: answer to a `Snapshot` chunk.
    SnapshotResponse {
        /// The snapshot this answers.
        index: Index,
        /// Next offset the follower wants; equals the total size when complete.
        next_offset: u64,
        /// The follower refused the transfer (bad chunk, too large, out of order).
        rejected: bool,
    },
    /// Leader -> transfer target: start an election now (leader transfer).
    TimeoutNow,
}

/// Where a rejecting follower's log may diverge, so the leader skips whole terms
/// instead of backing up one entry per round trip (the leader continues at the
/// largest index ≤ `index` whose term in its own log is ≤ `term`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RejectHint {
    /// The largest index ≤ the append's `prev_index` at which the follower's term
    /// is ≤ the append's `prev_term` (0 when none).
    pub index: Index,
    /// The follower's term at `index` (0 when unknown or none).
    pub term: Term,
}

impl MessageBody {
    /// A short name for traces and counters.
    pub fn kind_name(&self) -> &'static str {
        match self {
            MessageBody::Append { .. } => "append",
            MessageBody::AppendResponse { .. } => "append_resp",
            MessageBody::Vote { pre_vote: true, .. } => "prevote",
            MessageBody::Vote { .. } => "vote",
            MessageBody::VoteResponse { pre_vote: true, .. } => "prevote_resp",
            MessageBody::VoteResponse { .. } => "vote_resp",
            MessageBody::Heartbeat { .. } => "heartbeat",
            MessageBody::HeartbeatResponse { .. } => "heartbeat_resp",
            MessageBody::Snapshot { .. } => "snapshot",
            MessageBody::SnapshotResponse { .. } => "snapshot_resp",
            MessageBody::TimeoutNow => "timeout_now",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_change_round_trips_and_rejects_garbage() {
        for cc in
            [ConfChange::AddLearner(7), ConfChange::Promote(u64::MAX), ConfChange::Remove(1), ConfChange::AddVoter(3)]
        {
            assert_eq!(ConfChange::decode(&cc.encode()), Some(cc));
        }
        assert_eq!(ConfChange::decode(&[]), None);
        assert_eq!(ConfChange::decode(&[9, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(ConfChange::decode(&[1, 0, 0]), None);
    }

    #[test]
    fn message_survives_rkyv_round_trip_with_validation() {
        let msg = Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::Append {
                prev_index: 4,
                prev_term: 2,
                entries: vec![Entry { term: 3, index: 5, kind: EntryKind::Normal, data: b"x".to_vec() }],
                commit: 4,
            },
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&msg).expect("serialize");
        let back = rkyv::from_bytes::<Message, rkyv::rancor::Error>(&bytes).expect("validate");
        assert_eq!(back, msg);
    }
}
