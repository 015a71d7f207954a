//! corekv-engine: the corekv node.
//!
//! - [`raft`]: the pure, deterministic Raft core (sans-I/O).
//! - [`wal`]: the per-core write-ahead log: format, group-commit writer and
//!   recovery (sans-I/O), with a simulated disk; [`snap`]: shard snapshot files.
//! - [`kv`]: the shard state machine: versioned store, HLC, exactly-once table.
//! - [`runtime`]: the glommio driver (today: the direct-I/O WAL); the only module
//!   that names glommio.
//! - [`sim`]: the deterministic simulator that drives the same code through
//!   simulated networks, disks and crashes, with safety checkers.
//! - [`check`]: history checkers (linearizability) over recorded histories.
//! - [`placement`]: the founding cluster map and the rebalancing planner (`placement::plan`): balanced, deterministic shard placement with the fewest moves.
//! - [`config`]: the server's flags, config file and data dir identity.
//! - [`txn`]: the core-local lock table of a shard leader (transactions).
//!
//! Later layers (transactions, rebalancing, the per-core node core) join as their
//! issues land; see `docs/ARCHITECTURE.md`.

pub mod check;
pub mod config;
pub mod kv;
pub mod node;
pub mod placement;
pub mod raft;
pub mod runtime;
pub mod sim;
pub mod snap;
pub mod txn;
pub mod wal;
