//! Support for corekv's end-to-end tests against real `corekv-server` processes
//! (DESIGN §11): starting and hanging nodes ([`local`]), a nemesis that kills,
//! hangs and restarts them while clients work ([`nemesis`]), the clients' random
//! operations ([`workload`]), recording what they were told as a history for the
//! linearizability checker and judging it ([`history`]), acknowledged writes and
//! the proof that they survived ([`ledger`]), transactions recorded as the
//! history file's transaction lines and judged by its checker ([`txn`]), and the knobs a person turns to
//! rerun or lengthen a run ([`knobs`]).
//!
//! The clients are the client library's own (`corekv_rpc::client::blocking`):
//! what the tests prove is what users get.

pub mod history;
pub mod knobs;
pub mod ledger;
pub mod local;
pub mod nemesis;
pub mod txn;
pub mod workload;
