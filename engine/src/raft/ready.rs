//! What a Raft node asks its driver to do, and in which order.
//!
//! The ordering contract, field by field, is the whole point of this type: it is
//! what lets the leader write its own log in parallel with replication while
//! nothing is acknowledged before it is durable. `RawNode::on_persisted` asserts
//! the order in which the driver reports durability.

use std::sync::Arc;

use corekv_rpc::raft::{Entry, HardState, Index, Message, NodeId, SnapshotMeta, Term};

/// A snapshot: what it covers and its bytes (opaque to Raft).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Index, term and membership the snapshot covers.
    pub meta: SnapshotMeta,
    /// The application's state as of `meta.index`.
    pub data: Arc<[u8]>,
}

/// A node's role in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for pre-votes; has not changed term.
    PreCandidate,
    /// Asking for votes in a new term.
    Candidate,
    /// Leads the group.
    Leader,
}

/// Volatile state worth telling the driver about when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftState {
    /// This node's role.
    pub role: Role,
    /// The leader this node knows of, or 0.
    pub leader: NodeId,
}

/// A linearizable read that may now be served: once the application has applied
/// up to `index`, its state reflects every write acknowledged before the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    /// Apply up to here, then read.
    pub index: Index,
    /// The caller's tag given to `read_index`.
    pub ctx: u64,
}

/// Work for the driver. Take it with `RawNode::ready`, then, in this order:
///
/// 1. Send `messages` at once (they depend on nothing local being durable: the
///    leader's appends go out while its own write is under way).
/// 2. Make durable, in one write if possible: `snapshot` (if any), then `entries`
///    (dropping every stored entry at or after `entries[0].index` first), then
///    `hard_state`. Readys must become durable in the order they were taken.
/// 3. Once durable, call `RawNode::on_persisted(ready.number)`, and only then send
///    `messages_after_persist` (votes and acknowledgements that promise durability).
/// 4. Install `snapshot` into the state machine (if any), then apply
///    `committed_entries` in order; serve `read_states` once applied up to their
///    index. Step 4 may overlap step 2: committed entries are already durable.
#[derive(Debug, Default)]
pub struct Ready {
    /// Sequence number of this Ready, for `on_persisted`. 0 when there is nothing
    /// to persist (then `on_persisted` must not be called).
    pub number: u64,
    /// Role or leader changed.
    pub soft_state: Option<SoftState>,
    /// Durable before `messages_after_persist` are sent.
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader: durable (and the log before it dropped)
    /// before `messages_after_persist` are sent; installed before any entry after it
    /// is applied.
    pub snapshot: Option<Snapshot>,
    /// Entries to append to the durable log; durable before
    /// `messages_after_persist` are sent.
    pub entries: Vec<Entry>,
    /// May be sent immediately.
    pub messages: Vec<Message>,
    /// Sent only after this Ready's snapshot, entries and hard state are durable.
    pub messages_after_persist: Vec<Message>,
    /// Committed and locally durable: apply in order.
    pub committed_entries: Vec<Entry>,
    /// Reads confirmed by a heartbeat round (or the lease).
    pub read_states: Vec<ReadState>,
    /// Reads that will never be confirmed (leadership lost): retry elsewhere.
    pub dropped_reads: Vec<u64>,
}

impl Ready {
    /// True when the driver must persist something and report it.
    pub fn must_persist(&self) -> bool {
        self.number != 0
    }
}

/// What a Ready asked to persist, remembered until the driver reports it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingPersist {
    pub number: u64,
    /// Last entry handed out in that Ready.
    pub last_entry: Option<(Index, Term)>,
}
