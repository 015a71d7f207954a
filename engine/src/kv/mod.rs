//! The shard state machine: a versioned (MVCC) key-value store, the exactly-once
//! table and snapshots, under one shard's Raft group (DESIGN §6).
//!
//! Sans-I/O like the Raft core: no clock (the leader's HLC reading is passed in and
//! travels in each command), no file, no socket, no thread, no RNG. Each shard
//! replica lives on one core and this code runs there. Apply is deterministic: the
//! same committed entries give the same state and replies on every replica.
//!
//! - [`hlc`]: the hybrid logical clock a leader stamps writes with.
//! - [`store`]: key -> version chain, retention, get/put/delete/cas/scan/versions.
//! - [`command`]: the log-entry encoding of a shard command (format byte + rkyv).
//! - [`dedup`]: the exactly-once table (replies per client, expired by log age).
//! - [`shard`]: `apply`, the reads, and (in [`snapshot`]) `snapshot` / `restore`.

pub mod command;
pub mod dedup;
pub mod hlc;
pub mod shard;
pub mod snapshot;
pub mod store;
pub mod txn;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_txn;

pub use command::{COMMAND_FORMAT_V1, Command, CommandBody, CommandError, WriteCommand};
pub use dedup::{Admission, Dedup, DedupLimits};
pub use hlc::{Hlc, HlcError};
pub use shard::{ApplyError, Shard, ShardConfig, ShardMeta};
pub use snapshot::{SNAPSHOT_FORMAT_V1, SNAPSHOT_FORMAT_V2, SnapshotError};
pub use store::{Retention, Store};
pub use txn::{Applied, Decision, TxnLimits, TxnState, Vote};
