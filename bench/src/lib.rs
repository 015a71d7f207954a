//! corekv-bench: the `corekv-bench` load generator (arrives with the client library) and,
//! under `benches/`, the criterion microbenchmarks of the hot paths.
