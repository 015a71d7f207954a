//! glommio runtime (placeholder while the WAL compiles).
