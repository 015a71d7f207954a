//! The pure Raft core: leader election (randomized timeouts, pre-vote,
//! check-quorum), log replication with per-follower progress and bounded
//! pipelining, commitment by counting current-term entries, log compaction with
//! chunked snapshots, ReadIndex and lease reads, learners and single-server
//! membership changes, and leader transfer.
//!
//! Sans-I/O (DESIGN §1): inputs are ticks, messages, proposals and "persisted"
//! reports; the output is a [`Ready`] whose type documents what must be durable
//! before what may be sent or applied. The production runtime and the deterministic
//! simulator drive the very same code. This module never names the runtime, a clock,
//! a file, a socket, a thread or a global RNG.
//!
//! Leaf concepts live in small modules tested alone: [`inflights`], [`quorum`],
//! [`progress`], [`log`].

pub mod config;
pub mod inflights;
pub mod log;
pub mod node;
pub mod progress;
pub mod quorum;
pub mod ready;

#[cfg(test)]
mod tests;

pub use config::{Config, ConfigError};
pub use node::{DurableState, ProposeError, RawNode, Status, StepError};
pub use ready::{ReadState, Ready, Role, Snapshot, SoftState};
