//! corekv-bench: the `corekv-bench` load generator and, under `benches/`, the
//! criterion microbenchmarks of the hot paths.
//!
//! - [`workload`]: YCSB A–F and etcd's op-guide `put` / `get` (with [`zipf`]);
//! - [`runner`]: load phase, closed / open loop workers, history, progress, over a
//!   [`runner::Driver`] (one per system) and a [`runner::Runtime`];
//! - [`corekv`]: the corekv driver (the async client on glommio);
//! - [`report`]: histograms, the table, JSON, the server-side figures;
//! - [`peers`]: etcd and Redis behind the same workloads (cargo feature `peers`);
//! - [`compare`]: `corekv-bench compare`, corekv beside etcd and Redis, and
//!   [`compare_bank`], its `bank` workload;
//! - [`bank`] and [`ycsb_t`]: transaction workloads, on [`txn_loop`]'s closed
//!   loop of blocking clients.

pub mod bank;
pub mod compare;
pub mod compare_bank;
pub mod corekv;
pub mod join;
pub mod peers;
pub mod plot;
pub mod report;
pub mod runner;
pub mod txn_loop;
pub mod workload;
pub mod ycsb_t;
pub mod zipf;
