//! Transactions (DESIGN §8): the pieces that live with a shard leader on its core
//! and are not replicated.
//!
//! - [`lock`]: the core-local lock table of one shard leader: shared and exclusive
//!   key locks, shared range locks, conflicts settled by the transaction's policy
//!   (wound-wait, wait-die, no-wait, OCC), waiters granted in age order.
//!
//! The replicated side (prepare records, intents, decisions, transaction records)
//! is part of the shard state machine in `kv`.

pub mod lock;
