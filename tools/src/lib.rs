//! corekv-tools: the `corekv-ctl` admin and data CLI, and the cluster launcher library
//! (start N `corekv-server` processes on loopback, wait for leaders, stop them) that
//! `corekv-ctl local`, `corekv-bench --local` and the end-to-end tests share.
//!
//! - [`offline`]: the offline WAL and snapshot tools behind `corekv-ctl wal|snapshot`.
//!
//! The launcher arrives with the node (issue "The node"), the data commands with the
//! client library.

pub mod offline;
