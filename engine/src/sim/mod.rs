//! The deterministic simulator (arrives next).
