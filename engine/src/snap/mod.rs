//! Shard snapshot files (placeholder).
