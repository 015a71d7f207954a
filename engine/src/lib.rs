//! corekv-engine: the corekv node.
//!
//! - [`raft`]: the pure, deterministic Raft core (sans-I/O).
//! - [`sim`]: the deterministic simulator that drives the same core through
//!   simulated networks, disks and crashes, with safety checkers.
//!
//! Later layers (write-ahead log, shard state machine, transactions, placement, the
//! per-core node core and the glommio runtime) join as their issues land; see
//! `docs/ARCHITECTURE.md`.

pub mod kv;
pub mod raft;
pub mod sim;
