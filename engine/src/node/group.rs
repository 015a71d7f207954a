//! One shard replica on a core: its Raft node, its state machine, and the client
//! requests waiting on it.

use std::collections::{BTreeMap, VecDeque};

use corekv_rpc::kv::{ReadOp, ShardId, TxnReadOp};
use corekv_rpc::raft::{HardState, Index, NodeId, Term};
use corekv_rpc::txn::TxnId;

use crate::kv::Shard;
use crate::raft::RawNode;
use crate::txn::lock::{LockConfig, LockTable};

use super::txn::GroupTxns;

/// Who to answer: an opaque reference the driver maps back to a connection and a
/// call id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientRef {
    /// The driver's connection number.
    pub conn: u64,
    /// The call's id on that connection.
    pub id: u64,
}

/// A read waiting for its ReadIndex confirmation or for apply.
#[derive(Debug, Clone)]
pub(crate) struct PendingRead {
    pub client: ClientRef,
    pub op: ReadKind,
    /// Served only once this index is applied: a read at a version waits for
    /// every entry its leader had proposed when the read arrived, so nothing
    /// proposed before it can later appear at or below that version.
    pub after: Index,
}

/// What a waiting read asks.
#[derive(Debug, Clone)]
pub(crate) enum ReadKind {
    /// A plain linearizable read.
    Plain(ReadOp),
    /// A read inside a read-write transaction (its locks, if any, are held).
    Txn(TxnId, TxnReadOp),
}

/// One replica of one shard.
#[derive(Debug)]
pub(crate) struct Group {
    pub shard: ShardId,
    pub raft: RawNode,
    pub sm: Shard,
    /// The leader this replica knows (0 = none).
    pub leader: NodeId,
    pub is_leader: bool,
    /// Proposed writes by log index, with the term they were proposed in.
    pub writes: BTreeMap<Index, (Term, ClientRef)>,
    /// Reads asked this iteration: one ReadIndex request covers them all.
    pub reads_queued: Vec<PendingRead>,
    /// Reads whose ReadIndex request is out, by its context.
    pub reads_confirming: BTreeMap<u64, Vec<PendingRead>>,
    /// Confirmed reads, served once applied up to their index.
    pub reads_confirmed: VecDeque<(Index, Vec<PendingRead>)>,
    /// Confirmed reads waiting for their `after` index to apply.
    pub reads_after: Vec<PendingRead>,
    pub next_read_ctx: u64,
    /// Entry bytes applied since the last snapshot (compaction by size).
    pub applied_bytes_since_snapshot: u64,
    /// The size of the state machine's last snapshot (taken, installed or
    /// restored; 0 before any): the log grows to at least this much before
    /// the next one, so rewriting the state costs no more than the log it
    /// replaces.
    pub snapshot_bytes: u64,
    /// The last hard state handed to storage.
    pub hard_state: HardState,
    /// Readys of this group handed to storage and not yet reported persisted.
    pub persists_pending: u32,
    /// Ticks until this leader may try to hand leadership to the preferred replica.
    pub transfer_cooldown_ticks: u64,
    /// The tick this leader last reported its shard's move settled to the meta
    /// group (0: never): the report repeats once a heartbeat interval.
    pub settle_reported_at: u64,
    /// The index of the last snapshot marker this replica appended since the
    /// core started (0: none): a marker at or past what the WAL needs is on its
    /// way to disk, and another snapshot would not help.
    pub marker_index: Index,
    /// Started empty on this core for a move (the map placed it here) and fed
    /// no snapshot yet: its first snapshot is the move's transfer.
    pub awaits_first_snapshot: bool,
    /// The source of a hand-off to another core of this node: stopped for good
    /// (no tick, no message in), unless the hand-off is called off.
    pub frozen: bool,
    /// A stopped hand-off source owes its target its state.
    pub package_due: bool,
    /// A hand-off target holding the source's state: it neither ticks nor
    /// steps until the map lists the node's member on this core (messages go
    /// to the source's core until then).
    pub parked: bool,
    /// The hand-off a parked target's state was installed by (its epoch).
    pub installed_since: u64,
    /// A hand-off source waits for its log tail to shrink (logged once).
    pub handoff_tail_waits: bool,
    /// The tick a leading hand-off source last handed leadership over (0:
    /// never): it tries again each election timeout until it does not lead.
    pub handoff_transfer_at: u64,
    /// The seal token of the WAL batch holding a hand-off target's state (0:
    /// durable from the start): it acts once that batch is durable.
    pub written_in: u64,
    /// The tick a hand-off target last reported itself ready to the meta group.
    pub relocated_reported_at: u64,
    /// The leader's lock table (empty on followers; rebuilt from intents).
    pub locks: LockTable,
    /// Transaction work of this replica (the leader's).
    pub txns: GroupTxns,
}

impl Group {
    pub fn new(shard: ShardId, raft: RawNode, sm: Shard) -> Group {
        Group {
            shard,
            raft,
            sm,
            leader: 0,
            is_leader: false,
            writes: BTreeMap::new(),
            reads_queued: Vec::new(),
            reads_confirming: BTreeMap::new(),
            reads_confirmed: VecDeque::new(),
            reads_after: Vec::new(),
            next_read_ctx: 1,
            applied_bytes_since_snapshot: 0,
            snapshot_bytes: 0,
            transfer_cooldown_ticks: 0,
            settle_reported_at: 0,
            marker_index: 0,
            awaits_first_snapshot: false,
            frozen: false,
            package_due: false,
            parked: false,
            installed_since: 0,
            handoff_tail_waits: false,
            handoff_transfer_at: 0,
            written_in: 0,
            relocated_reported_at: 0,
            locks: LockTable::new(LockConfig::default()),
            txns: GroupTxns::default(),
            hard_state: HardState::default(),
            persists_pending: 0,
        }
    }

    /// Reads waiting in any stage.
    pub fn reads_pending(&self) -> usize {
        self.reads_queued.len()
            + self.reads_confirming.values().map(Vec::len).sum::<usize>()
            + self.reads_confirmed.iter().map(|(_, r)| r.len()).sum::<usize>()
            + self.reads_after.len()
    }
}
