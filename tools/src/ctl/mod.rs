//! `corekv-ctl`, the admin and data CLI, as a library: the command line
//! ([`args`]), one session that runs commands with one client ([`session`]),
//! the result shapes and exit codes ([`render`], [`status`], [`check`] for
//! `check-history`), the line shell
//! ([`shell`]) and the local cluster commands ([`local`]). The binary
//! (`src/bin/corekv-ctl.rs`) only wires them to the process.
//!
//! Runs on the caller's thread; the client is the blocking facade of the
//! client library. Every result is rendered by a pure function, so the JSON
//! shapes of the issue are asserted string for string in unit tests.

pub mod args;
pub mod check;
pub mod local;
#[cfg(test)]
pub(crate) mod memory;
pub mod nodes;
pub mod placement;
pub mod render;
pub mod session;
pub mod shell;
pub mod status;
