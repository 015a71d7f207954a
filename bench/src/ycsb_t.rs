//! `ycsb-t`: YCSB's operations grouped into transactions (issue 11). Each
//! transaction is `ops_per_txn` operations on YCSB's hashed `user…` keys, chosen
//! by the same scrambled zipfian as the key-value workloads ([`crate::workload`]):
//! a read with probability `read_proportion`, otherwise an update (a blind write
//! of a whole record, as YCSB-A/B) or, with `rmw`, a read-modify-write (read
//! for update, then write, as YCSB-F). No scans: ycsb-t groups YCSB's point
//! operations (a transaction's scan, under a shared range lock per shard, is
//! exercised by the simulator's scanning audits and `corekv-ctl`).
//!
//! The transactions run on [`crate::txn_loop`]'s closed loop, retried while
//! aborted. `plain` runs the same operations without a transaction, each its own
//! request: with one update per group it is the single put that a one-shard
//! transaction is measured against, on the same client, keys and values.

use std::sync::Arc;
use std::time::Instant;

use corekv_rpc::client::blocking::Client;
use corekv_rpc::client::{ClientConfig, KvError};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::txn_loop::{Attempt, FIGURE_COLUMNS, Figures, LoopSpec, TxnHistory, TxnResult, Worker, closed_loop};
use crate::workload::{Kind, key_of};
use crate::zipf::{Zipfian, fnv1a64};

/// Operations per transaction when none is given.
pub const OPS_PER_TXN_DEFAULT: usize = 4;
/// The largest `ops_per_txn` (a transaction's write set is bounded by the
/// server; this keeps a typo from asking for a huge one).
pub const OPS_PER_TXN_MAX: usize = 1024;
/// The read proportion when none is given (YCSB-A's).
pub const READ_PROPORTION_DEFAULT: f64 = 0.5;

/// One `ycsb-t` run.
#[derive(Debug, Clone)]
pub struct YcsbTSpec {
    /// Records loaded (keys `user…` of records `0..records`).
    pub records: u64,
    /// Bytes per value.
    pub value_bytes: usize,
    /// The zipfian constant of the key choice.
    pub theta: f64,
    /// Operations per transaction.
    pub ops_per_txn: usize,
    /// The fraction of operations that read.
    pub read_proportion: f64,
    /// The other operations read-modify-write instead of writing blindly.
    pub rmw: bool,
    /// Run the operations without transactions, each its own request.
    pub plain: bool,
    /// Clients, policy, timing, seed.
    pub run: LoopSpec,
}

impl YcsbTSpec {
    /// Checks the numbers; the error says which is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.records == 0 {
            return Err("the key space is empty (--keys must be at least 1)".into());
        }
        if !(self.theta > 0.0 && self.theta < 1.0) {
            return Err(format!("zipfian theta {} is outside (0, 1)", self.theta));
        }
        if !(1..=OPS_PER_TXN_MAX).contains(&self.ops_per_txn) {
            return Err(format!("--ops-per-txn {} is outside 1..={OPS_PER_TXN_MAX}", self.ops_per_txn));
        }
        if !(0.0..=1.0).contains(&self.read_proportion) {
            return Err(format!("--read-proportion {} is outside [0, 1]", self.read_proportion));
        }
        if self.run.clients == 0 || self.run.duration.is_zero() {
            return Err("--clients and --duration must be above zero".into());
        }
        Ok(())
    }

    /// The mix in words: `4 ops/txn, 50% read, 50% update`.
    pub fn mix(&self) -> String {
        let read = (self.read_proportion * 100.0).round();
        let other = if self.rmw { "read-modify-write" } else { "update" };
        let grouping = if self.plain { "plain ops" } else { "ops/txn" };
        format!("{} {grouping}, {read}% read, {}% {other}", self.ops_per_txn, 100.0 - read)
    }
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Read the key.
    Read(Vec<u8>),
    /// Write the value.
    Update(Vec<u8>, Vec<u8>),
    /// Read the key for update, then write the value.
    ReadModifyWrite(Vec<u8>, Vec<u8>),
}

/// One client's operations: YCSB's scrambled zipfian keys, values distinct per
/// write (a history tells writes apart by value).
#[derive(Debug, Clone)]
pub struct OpSource {
    spec: YcsbTSpec,
    zipf: Zipfian,
    value_seq: u64,
}

impl OpSource {
    /// The operations of `spec`.
    pub fn new(spec: &YcsbTSpec) -> OpSource {
        OpSource { spec: spec.clone(), zipf: Zipfian::new(spec.records, spec.theta), value_seq: 0 }
    }

    /// The next transaction's operations.
    pub fn next_txn(&mut self, rng: &mut ChaCha8Rng) -> Vec<TxnOp> {
        (0..self.spec.ops_per_txn).map(|_| self.next_op(rng)).collect()
    }

    fn next_op(&mut self, rng: &mut ChaCha8Rng) -> TxnOp {
        let read = rng.random::<f64>() < self.spec.read_proportion;
        // Scrambled, as YCSB's ScrambledZipfianGenerator: popular ranks land
        // anywhere in the key space.
        let rank = self.zipf.next(rng);
        let key = key_of(Kind::A, fnv1a64(&rank.to_le_bytes()) % self.spec.records);
        match (read, self.spec.rmw) {
            (true, _) => TxnOp::Read(key),
            (false, false) => TxnOp::Update(key, self.value(rng)),
            (false, true) => TxnOp::ReadModifyWrite(key, self.value(rng)),
        }
    }

    fn value(&mut self, rng: &mut ChaCha8Rng) -> Vec<u8> {
        self.value_seq += 1;
        filled_value(self.spec.value_bytes, rng.random(), self.value_seq)
    }
}

/// `bytes` bytes that start with the stamp and sequence number in hex.
fn filled_value(bytes: usize, stamp: u64, seq: u64) -> Vec<u8> {
    let tag = format!("{stamp:016x}{seq:08x}");
    let mut value: Vec<u8> = (0..bytes).map(|i| b'a' + (i % 26) as u8).collect();
    let n = tag.len().min(bytes);
    value[..n].copy_from_slice(&tag.as_bytes()[..n]);
    value
}

/// A transaction's body: the operations in order; a key that is absent reads as
/// not found, which is no error.
fn run_ops(t: &mut Attempt<'_>, ops: &[TxnOp]) -> Result<(), KvError> {
    for op in ops {
        match op {
            TxnOp::Read(key) => absent_is_fine(t.get(key))?,
            TxnOp::Update(key, value) => t.put(key, value)?,
            TxnOp::ReadModifyWrite(key, value) => {
                absent_is_fine(t.get_for_update(key))?;
                t.put(key, value)?;
            }
        }
    }
    Ok(())
}

fn absent_is_fine(got: Result<corekv_rpc::client::Got, KvError>) -> Result<(), KvError> {
    match got {
        Ok(_) | Err(KvError::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The operations as plain requests, one after another; a group counts as done
/// when every one of them succeeded.
fn run_plain(client: &mut Client, ops: &[TxnOp]) -> TxnResult {
    let began = Instant::now();
    let mut ok = true;
    for op in ops {
        let done = match op {
            TxnOp::Read(key) => absent_is_fine(client.get(key, None)),
            TxnOp::Update(key, value) => client.put(key, value).map(drop),
            TxnOp::ReadModifyWrite(key, value) => {
                absent_is_fine(client.get(key, None)).and_then(|()| client.put(key, value).map(drop))
            }
        };
        ok &= done.is_ok();
    }
    TxnResult { committed: ok, attempts: 1, aborts: Vec::new(), elapsed: began.elapsed() }
}

/// Writes every record once, `clients` threads each taking every `clients`-th
/// record; how many writes failed.
pub fn load(config: &ClientConfig, spec: &YcsbTSpec) -> Result<u64, String> {
    let clients = spec.run.clients as u64;
    let mut threads = Vec::with_capacity(spec.run.clients);
    for w in 0..clients {
        let mut client = Client::connect(config.clone()).map_err(|e| format!("cannot connect: {e}"))?;
        let (records, bytes, seed) = (spec.records, spec.value_bytes, spec.run.seed);
        threads.push(std::thread::spawn(move || {
            let mut failed = 0;
            for n in (w..records).step_by(clients as usize) {
                let value = filled_value(bytes, seed, n);
                failed += u64::from(client.put(&key_of(Kind::A, n), &value).is_err());
            }
            failed
        }));
    }
    let mut failed = 0;
    for t in threads {
        failed += t.join().map_err(|_| "a loader panicked".to_string())?;
    }
    Ok(failed)
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct YcsbTReport {
    /// The run.
    pub spec: YcsbTSpec,
    /// Committed txns/s (groups/s when plain), aborts, retries, latency.
    pub figures: Figures,
}

/// Runs `spec` against the cluster at `config` (load it first with [`load`]),
/// recording every attempt to `history` when given.
pub fn run_ycsb_t(
    config: &ClientConfig,
    spec: &YcsbTSpec,
    history: Option<&Arc<TxnHistory>>,
) -> Result<YcsbTReport, String> {
    spec.validate()?;
    let plain = spec.plain;
    let figures = closed_loop(config, &spec.run, history, |_| {
        let mut source = OpSource::new(spec);
        move |worker: &mut Worker| {
            let ops = source.next_txn(&mut worker.rng);
            if plain { run_plain(&mut worker.client, &ops) } else { worker.run_txn(|t| run_ops(t, &ops)) }
        }
    })?;
    Ok(YcsbTReport { spec: spec.clone(), figures })
}

/// A markdown table of runs, one row each.
pub fn table(reports: &[YcsbTReport]) -> String {
    let mut out = format!("| policy | mix | θ | clients | {FIGURE_COLUMNS} |\n|{}\n", "---|".repeat(12));
    for r in reports {
        let policy = if r.spec.plain { "none (plain ops)".to_string() } else { r.spec.run.policy.to_string() };
        out.push_str(&format!(
            "| {policy} | {} | {} | {} | {} |\n",
            r.spec.mix(),
            r.spec.theta,
            r.spec.run.clients,
            r.figures.cells()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use corekv_rpc::txn::Policy;
    use rand::SeedableRng;

    use super::*;

    fn seeded(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    fn spec() -> YcsbTSpec {
        YcsbTSpec {
            records: 1000,
            value_bytes: 100,
            theta: 0.99,
            ops_per_txn: 4,
            read_proportion: 0.5,
            rmw: false,
            plain: false,
            run: LoopSpec {
                clients: 4,
                policy: Policy::WoundWait,
                duration: Duration::from_secs(1),
                warmup: Duration::ZERO,
                seed: 1,
            },
        }
    }

    #[test]
    fn transactions_have_the_asked_size_and_mix() {
        let mut source = OpSource::new(&spec());
        let mut rng = seeded(1);
        let mut reads = 0;
        for _ in 0..2000 {
            let ops = source.next_txn(&mut rng);
            assert_eq!(ops.len(), 4);
            for op in ops {
                match op {
                    TxnOp::Read(key) => {
                        reads += 1;
                        assert!(key.starts_with(b"user"));
                    }
                    TxnOp::Update(key, value) => assert!(key.starts_with(b"user") && value.len() == 100),
                    TxnOp::ReadModifyWrite(..) => panic!("no rmw asked"),
                }
            }
        }
        assert!((reads as f64 / 8000.0 - 0.5).abs() < 0.03, "{reads}");
        let mut rmw = OpSource::new(&YcsbTSpec { rmw: true, read_proportion: 0.0, ..spec() });
        assert!(rmw.next_txn(&mut rng).iter().all(|op| matches!(op, TxnOp::ReadModifyWrite(..))));
    }

    #[test]
    fn keys_are_ycsbs_and_skewed() {
        let mut source = OpSource::new(&YcsbTSpec { read_proportion: 1.0, ..spec() });
        let mut rng = seeded(2);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..10_000 {
            if let TxnOp::Read(key) = source.next_op(&mut rng) {
                *counts.entry(key).or_insert(0u32) += 1;
            }
        }
        let hottest = counts.values().copied().max().unwrap_or(0);
        assert!(hottest > 500, "θ 0.99 puts several percent on the hottest key: {hottest}");
        let valid: Vec<Vec<u8>> = (0..1000).map(|n| key_of(Kind::A, n)).collect();
        assert!(counts.keys().all(|k| valid.contains(k)));
    }

    #[test]
    fn values_are_distinct_and_sized() {
        assert_eq!(filled_value(10, 1, 1).len(), 10);
        assert_eq!(filled_value(40, 1, 1).len(), 40);
        assert_ne!(filled_value(40, 1, 1), filled_value(40, 1, 2));
    }

    #[test]
    fn specs_are_checked() {
        assert!(spec().validate().is_ok());
        assert!(YcsbTSpec { ops_per_txn: 0, ..spec() }.validate().is_err());
        assert!(YcsbTSpec { read_proportion: 1.5, ..spec() }.validate().is_err());
        assert!(YcsbTSpec { theta: 1.0, ..spec() }.validate().is_err());
        assert!(YcsbTSpec { records: 0, ..spec() }.validate().is_err());
        assert_eq!(spec().mix(), "4 ops/txn, 50% read, 50% update");
    }
}
