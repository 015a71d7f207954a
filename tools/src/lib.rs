//! corekv-tools: the `corekv-ctl` admin and data CLI, and the cluster launcher library
//! (start N `corekv-server` processes on loopback, wait for leaders, stop them) that
//! `corekv-ctl local`, `corekv-bench --local` and the end-to-end tests share.
//!
//! - [`ctl`]: `corekv-ctl`'s commands, result shapes, exit codes and shell;
//! - [`offline`]: the offline WAL and snapshot tools behind `corekv-ctl wal|snapshot`;
//! - [`launcher`]: the local cluster launcher (DESIGN §11);
//! - [`local`]: a launched cluster that outlives its launcher (`corekv-ctl local`);
//! - [`history`]: the operation history file of `corekv-bench --history`.

pub mod ctl;
pub mod history;
pub mod launcher;
pub mod local;
pub mod offline;
