//! What a cluster run leaves: its counters, or the failure that names its seed.

use std::fmt;

use crate::check::Operation;

/// Which check a run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The client history has no linearization.
    NotLinearizable,
    /// The checker ran out of budget: not a pass.
    CheckerUnknown,
    /// Two replicas of a shard at the same applied index hold different states.
    Diverged,
    /// A replica lacks a write a client was told succeeded.
    AckedWriteLost,
    /// The cluster did not settle or answer after healing.
    Stuck,
    /// A node core stopped with an error (storage, apply, recovery).
    NodeError,
    /// A client got an answer a correct node never gives.
    BadAnswer,
    /// The transaction history has no serial order (or the checker could not
    /// name a version's writer: not a pass).
    NotSerializable,
    /// A bank audit did not sum to zero: money was made or lost.
    BankTotal,
    /// A shard leader's lock table does not hold, as prepared, every lock of a
    /// transaction prepared on its shard.
    TxnLocksLost,
    /// After settling, a core holds a replica the map does not place on it (or
    /// lacks one it does), or keeps the data of a replica that moved away.
    Placement,
}

/// A failed run: rerun with `CORE_SEED=<seed>` to reproduce it exactly.
#[derive(Debug, Clone)]
pub struct SimFailure {
    /// The run's seed.
    pub seed: u64,
    /// Which check failed.
    pub kind: FailureKind,
    /// When (simulated milliseconds).
    pub at_ms: u64,
    /// What exactly.
    pub message: String,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CORE_SEED={} at t={}ms: {:?}: {}", self.seed, self.at_ms, self.kind, self.message)
    }
}

/// Counters of a run, for scenarios that assert their faults really happened.
#[derive(Debug, Default, Clone)]
pub struct ClusterStats {
    /// Operations in the history (final reads included).
    pub ops_recorded: u64,
    /// Writes answered definitely with a new version.
    pub writes_acknowledged: u64,
    /// Writes given up at their deadline (outcome unknown).
    pub writes_indeterminate: u64,
    /// Reads given up at their deadline (not recorded).
    pub reads_expired: u64,
    /// Client attempts beyond the first of each operation.
    pub client_retries: u64,
    /// Writes resent after silence or an `indeterminate` answer.
    pub blind_write_retries: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Core crashes that found unsynced WAL writes on the disk.
    pub core_crashes_with_unsynced_writes: u64,
    /// Peer frames handed to the network, and those lost (dropped, cut, or to a
    /// node that was down).
    pub frames_sent: u64,
    /// Peer frames that never arrived.
    pub frames_lost: u64,
    /// Snapshots taken by compaction, over every incarnation.
    pub snapshots_taken: u64,
    /// The part of `snapshots_taken` taken early for the WAL's sake.
    pub snapshots_for_wal: u64,
    /// Snapshots installed from a leader, over every incarnation.
    pub snapshots_installed: u64,
    /// Bytes of those installed by moves' targets.
    pub move_snapshot_bytes: u64,
    /// How many those were.
    pub move_snapshots: u64,
    /// The store sizes restored by the first snapshots of replicas started
    /// empty for a move.
    pub move_store_bytes: u64,
    /// Log entry bytes appended by replicas that did not vote yet (moves'
    /// catch-up after their snapshots).
    pub move_log_bytes: u64,
    /// Bytes of those installed by every replica.
    pub snapshot_bytes_installed: u64,
    /// WAL fdatasyncs over every core.
    pub wal_fdatasyncs: u64,
    /// Transactional clients' counters (transfers, aborts, unknowns, audits).
    pub txns: super::txn_client::TxnStats,
    /// Crashes at a step of two-phase commit (`ClusterConfig::txn_crashes`).
    pub txn_step_crashes: u64,
    /// Replica moves started ([`super::Cluster::move_replica`]).
    pub moves_started: u64,
    /// Moves turned around ([`super::Cluster::revert_move`]).
    pub moves_reverted: u64,
    /// Map edits the meta group's leaders wrote, over every incarnation.
    pub meta_writes: u64,
    /// Newer maps cores installed, over every incarnation.
    pub maps_installed: u64,
    /// Empty replicas started on move targets, over every incarnation.
    pub replicas_added: u64,
    /// Replicas deleted after their shard moved away, over every incarnation.
    pub replicas_dropped: u64,
}

/// What a passing run leaves.
#[derive(Debug)]
pub struct Report {
    /// Counters.
    pub stats: ClusterStats,
    /// The hash of every event, in order.
    pub trace_hash: u64,
    /// The checked history.
    pub history: Vec<Operation>,
}
