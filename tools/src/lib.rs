//! corekv-tools: the `corekv-ctl` admin and data CLI, and the cluster launcher library
//! (start N `corekv-server` processes on loopback, wait for leaders, stop them) that
//! `corekv-ctl local`, `corekv-bench --local` and the end-to-end tests share.
//!
//! Nothing lives here yet: the launcher arrives with the node (issue "The node"), the
//! CLI with the client library.
