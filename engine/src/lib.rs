//! corekv-engine: the corekv node.
//!
//! - [`raft`]: the pure, deterministic Raft core (sans-I/O).
//! - [`sim`]: the deterministic simulator that drives the same core through
//!   simulated networks, disks and crashes, with safety checkers.
//! - [`wal`]: the per-core write-ahead log (format, recovery, group commit, the
//!   simulated disk); [`snap`]: shard snapshot files; [`runtime`]: the only
//!   module that names glommio (DMA WAL executor, executor setup).
//!
//! Later layers (write-ahead log, shard state machine, transactions, placement, the
//! per-core node core and the glommio runtime) join as their issues land; see
//! `docs/ARCHITECTURE.md`.

pub mod check;
pub mod raft;
pub mod runtime;
pub mod sim;
pub mod snap;
pub mod wal;
