//! What a person running the end-to-end tests may turn: the seed of the random
//! choices and how long the fault runs last.
//!
//! Real processes are not deterministic (the OS schedules them), so a seed
//! reproduces the operations and the faults chosen, not the interleaving; it is
//! still the first thing to rerun a failure with.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seeds the clients' and the nemesis' choices: `COREKV_E2E_SEED=<u64>`.
pub const SEED_ENV: &str = "COREKV_E2E_SEED";
/// Multiplies the length of the fault runs: `COREKV_E2E_LONG=10` runs ten times
/// as many fault rounds (and clients keep going throughout).
pub const LONG_ENV: &str = "COREKV_E2E_LONG";
/// Largest multiplier accepted: beyond it a typo would run for days.
pub const LONG_MAX: u32 = 1000;

/// The seed from [`SEED_ENV`], or a fresh one from the clock.
pub fn seed() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("{SEED_ENV}={text:?} is not a u64")),
        Err(_) => {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            // Mix the pid in: two tests started in the same nanosecond differ.
            (nanos as u64) ^ (u64::from(std::process::id()) << 40)
        }
    }
}

/// The multiplier from [`LONG_ENV`] (1 when unset).
pub fn scale() -> u32 {
    match std::env::var(LONG_ENV) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(n) if (1..=LONG_MAX).contains(&n) => n,
            _ => panic!("{LONG_ENV}={text:?} is not a whole number from 1 to {LONG_MAX}"),
        },
        Err(_) => 1,
    }
}

/// The line that reruns a test with the same choices.
pub fn rerun_hint(seed: u64) -> String {
    format!("{SEED_ENV}={seed}")
}
