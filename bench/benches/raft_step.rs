//! Placeholder: the Raft step bench arrives with the Raft core.
fn main() {}
