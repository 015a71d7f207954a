//! The clients of a linearizability run: each thread owns one client (one client
//! id, one request at a time) and does random get / put / delete / cas on a few
//! hot keys until told to stop, recording every operation.
//!
//! The mix follows the simulator's clients (`corekv_engine::sim`): puts write
//! values unique in the whole run (so a read names the write it saw), and a cas
//! mostly expects the version this client last saw of the key, so that many
//! succeed, sometimes 0 (only if absent) and sometimes a version that is not
//! there. Some requests get a short deadline, so that faults leave writes
//! whose fate is unknown (`indeterminate`) in the history.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use corekv_engine::check::{Call, Outcome, Version};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::history::Recorder;
use corekv_rpc::client::blocking::Client;

/// What one client thread did.
#[derive(Debug, Default)]
pub struct ClientReport {
    /// Operations it completed (whatever their outcome).
    pub ops: u64,
    /// Answers no correct cluster gives; the test fails on any.
    pub violations: Vec<String>,
}

/// One client thread's loop: random operations on `keys` until `stop`, each
/// followed by a pause of up to `think_max` (which bounds the history's size,
/// and so the checker's work).
#[derive(Debug)]
pub struct ClientLoop<'a> {
    /// The client's number in the run (its history id; part of every value).
    pub index: u64,
    /// The hot keys.
    pub keys: &'a [Vec<u8>],
    /// Seeds this client's choices.
    pub seed: u64,
    /// Longest pause between two operations.
    pub think_max: Duration,
    /// The deadline of most requests.
    pub deadline: Duration,
    /// Some requests get a deadline drawn from this range instead, shorter than a
    /// fault lasts: caught by one, they give up, and a write that gave up after it
    /// may have been sent is `indeterminate`.
    pub short_deadline: (Duration, Duration),
    /// Percentage of requests with a short deadline.
    pub short_percent: u32,
    /// Where operations go.
    pub recorder: &'a Recorder,
    /// Set when the run is over.
    pub stop: &'a AtomicBool,
}

impl ClientLoop<'_> {
    /// Runs until `stop`; the client is this thread's own.
    pub fn run(&self, client: &mut Client) -> ClientReport {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut known: HashMap<Vec<u8>, Version> = HashMap::new();
        let mut report = ClientReport::default();
        while !self.stop.load(Ordering::Relaxed) {
            let key = self.keys[rng.random_range(0..self.keys.len())].clone();
            let deadline = if rng.random_range(0..100) < self.short_percent {
                let (low, high) = self.short_deadline;
                low + (high.saturating_sub(low)).mul_f64(rng.random::<f64>())
            } else {
                self.deadline
            };
            client.set_deadline(deadline);
            report.ops += 1;
            let value = format!("c{}.{}", self.index, report.ops).into_bytes();
            let roll = rng.random_range(0..100u32);
            let result = match roll {
                0..35 => self.recorder.read(self.index, &key, || client.get(&key, None)),
                35..65 => {
                    let call = Call::Put { key: key.clone(), value: value.clone() };
                    self.recorder.write(self.index, call, || client.put(&key, &value))
                }
                65..80 => {
                    let call = Call::Delete { key: key.clone() };
                    self.recorder.write(self.index, call, || client.delete(&key))
                }
                _ => {
                    let seen = known.get(&key).copied().unwrap_or(0);
                    let expected = match rng.random_range(0..10u32) {
                        0..7 => seen,
                        7..9 => 0,
                        _ => seen + 1,
                    };
                    let call = Call::Cas { key: key.clone(), expected_version: expected, value: value.clone() };
                    self.recorder.write(self.index, call, || client.cas(&key, expected, &value))
                }
            };
            let deleted = (65..80).contains(&roll);
            match result {
                // A tombstone's version is no version a cas can expect.
                Ok(Outcome::Written { .. }) if deleted => {
                    known.insert(key, 0);
                }
                Ok(Outcome::Value { version, .. } | Outcome::Written { version }) => {
                    known.insert(key, version);
                }
                Ok(Outcome::NotFound) => {
                    known.insert(key, 0);
                }
                Ok(Outcome::VersionMismatch { current }) => {
                    known.insert(key, current);
                }
                Ok(_) => {}
                Err(violation) => report.violations.push(violation),
            }
            if !self.think_max.is_zero() {
                std::thread::sleep(self.think_max.mul_f64(rng.random::<f64>()));
            }
        }
        report
    }
}
