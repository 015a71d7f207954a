//! The contention workload (issue 11's bank and sweep): transactions that each
//! read K accounts chosen by a zipfian (θ) and move money from the first to the
//! others, under one conflict policy, from closed-loop clients.
//!
//! Each client is a thread with its own blocking client (one transaction in
//! flight each: a transaction's steps are sequential anyway, so the blocking
//! client measures the same thing an async one would, with less machinery). An
//! aborted attempt is retried as a new attempt (wait-die keeps the first start
//! version) until the transaction's deadline; the latency of a committed
//! transaction includes its retries. Money is only moved, so an audit (a read-only
//! transaction over every account) must sum to zero; the run ends with one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corekv_rpc::client::blocking::{Client, Txn};
use corekv_rpc::client::{ClientConfig, KvError};
use corekv_rpc::txn::Policy;
use hdrhistogram::Histogram;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::zipf::Zipfian;

/// One contention run.
#[derive(Debug, Clone)]
pub struct BankSpec {
    /// Accounts (keys `acct<i>`).
    pub accounts: u64,
    /// Accounts each transaction reads and writes (2: a transfer).
    pub keys_per_txn: usize,
    /// The zipfian constant of the account choice (0: uniform).
    pub theta: f64,
    /// The conflict policy.
    pub policy: Policy,
    /// Closed-loop clients.
    pub clients: usize,
    /// Measured length.
    pub duration: Duration,
    /// Warm-up before it.
    pub warmup: Duration,
    /// Seed of the choices.
    pub seed: u64,
}

impl BankSpec {
    /// Checks the sizes.
    pub fn validate(&self) -> Result<(), String> {
        if self.keys_per_txn < 2 {
            return Err("a transaction needs at least 2 accounts".into());
        }
        if self.accounts < self.keys_per_txn as u64 {
            return Err(format!("{} accounts cannot give {} distinct ones", self.accounts, self.keys_per_txn));
        }
        if !(0.0..1.0).contains(&self.theta) {
            return Err(format!("theta {} is outside [0, 1)", self.theta));
        }
        if self.clients == 0 || self.duration.is_zero() {
            return Err("--clients and --duration must be above zero".into());
        }
        Ok(())
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct BankReport {
    /// The run.
    pub spec: BankSpec,
    /// Transactions committed in the measured window.
    pub committed: u64,
    /// Aborted attempts by reason word, in the window.
    pub aborts: BTreeMap<&'static str, u64>,
    /// Attempts of the committed transactions (the committed ones included).
    pub attempts: u64,
    /// Transactions given up (deadline) or indeterminate.
    pub failed: u64,
    /// The window's length.
    pub elapsed: Duration,
    /// Committed transaction latency including retries, microseconds.
    pub latency_us: Histogram<u64>,
    /// The final audit's total (0 when the bank is right).
    pub audit_total: i64,
}

impl BankReport {
    /// Committed transactions per second.
    pub fn txns_per_s(&self) -> f64 {
        self.committed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Aborted attempts in all.
    pub fn aborted(&self) -> u64 {
        self.aborts.values().sum()
    }

    /// Aborted attempts per committed transaction.
    pub fn aborts_per_commit(&self) -> f64 {
        self.aborted() as f64 / (self.committed.max(1)) as f64
    }

    /// The fraction of attempts that aborted.
    pub fn abort_ratio(&self) -> f64 {
        let attempts = self.aborted() + self.committed;
        self.aborted() as f64 / attempts.max(1) as f64
    }

    /// Retries per committed transaction.
    pub fn retries_per_commit(&self) -> f64 {
        self.attempts.saturating_sub(self.committed) as f64 / self.committed.max(1) as f64
    }
}

fn account(i: u64) -> Vec<u8> {
    format!("acct{i}").into_bytes()
}

fn balance(got: Result<corekv_rpc::client::Got, KvError>) -> Result<i64, KvError> {
    match got {
        Ok(got) => std::str::from_utf8(&got.value)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| KvError::Invalid { message: format!("account holds {:?}, not a balance", got.value) }),
        Err(KvError::NotFound) => Ok(0),
        Err(e) => Err(e),
    }
}

/// `keys` distinct accounts, the first drawn first.
fn pick(zipf: &mut Zipfian, rng: &mut ChaCha8Rng, accounts: u64, keys: usize) -> Vec<u64> {
    let mut picked: Vec<u64> = Vec::with_capacity(keys);
    while picked.len() < keys {
        let a = zipf.next_below(rng, accounts);
        if !picked.contains(&a) {
            picked.push(a);
        }
    }
    picked
}

/// The body of one transaction: the first account pays one unit to each other.
fn move_money(t: &mut Txn<'_>, picked: &[u64]) -> Result<(), KvError> {
    let mut balances = Vec::with_capacity(picked.len());
    for &a in picked {
        balances.push(balance(t.get_for_update(&account(a)))?);
    }
    let others = picked.len() as i64 - 1;
    t.put(&account(picked[0]), (balances[0] - others).to_string().as_bytes())?;
    for (i, &a) in picked.iter().enumerate().skip(1) {
        t.put(&account(a), (balances[i] + 1).to_string().as_bytes())?;
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Tally {
    committed: u64,
    aborts: BTreeMap<&'static str, u64>,
    attempts: u64,
    failed: u64,
}

/// Runs `spec` against the cluster at `config`.
pub fn run_bank(config: &ClientConfig, spec: &BankSpec) -> Result<BankReport, String> {
    spec.validate()?;
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("3 significant digits are valid")));
    let mut workers = Vec::with_capacity(spec.clients);
    for w in 0..spec.clients {
        let mut client = Client::connect(config.clone()).map_err(|e| format!("cannot connect: {e}"))?;
        let (spec, stop, measuring, tally, latency) =
            (spec.clone(), stop.clone(), measuring.clone(), tally.clone(), latency.clone());
        workers.push(std::thread::spawn(move || {
            let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ (w as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut zipf = Zipfian::new(spec.accounts, spec.theta);
            let deadline = client.config().deadline;
            while !stop.load(Ordering::Relaxed) {
                let picked = pick(&mut zipf, &mut rng, spec.accounts, spec.keys_per_txn);
                let began = Instant::now();
                let mut local = Tally::default();
                let mut start = None;
                loop {
                    local.attempts += 1;
                    let mut t = match (spec.policy, start) {
                        (Policy::WaitDie, Some(s)) => client.begin_at(spec.policy, s),
                        _ => client.begin(spec.policy),
                    };
                    start.get_or_insert(t.start_version());
                    match move_money(&mut t, &picked).and_then(|()| t.commit()) {
                        Ok(_) => {
                            local.committed += 1;
                            break;
                        }
                        Err(KvError::Aborted { reason }) if began.elapsed() < deadline => {
                            *local.aborts.entry(reason.word()).or_default() += 1;
                            // Exponential backoff with jitter, the same for every
                            // policy: without it two no-wait transactions can abort
                            // each other forever.
                            let cap_us = 250u64 << local.attempts.min(6);
                            std::thread::sleep(Duration::from_micros(rng.random_range(0..=cap_us)));
                        }
                        Err(KvError::Aborted { reason }) => {
                            *local.aborts.entry(reason.word()).or_default() += 1;
                            local.failed += 1;
                            break;
                        }
                        Err(_) => {
                            local.failed += 1;
                            break;
                        }
                    }
                }
                if measuring.load(Ordering::Relaxed) {
                    if local.committed > 0 {
                        let us = began.elapsed().as_micros().max(1) as u64;
                        let _ = latency.lock().expect("no worker panics holding it").record(us);
                    }
                    let mut t = tally.lock().expect("no worker panics holding it");
                    t.committed += local.committed;
                    if local.committed > 0 {
                        t.attempts += local.attempts;
                    }
                    t.failed += local.failed;
                    for (k, v) in local.aborts {
                        *t.aborts.entry(k).or_default() += v;
                    }
                }
            }
        }));
    }
    std::thread::sleep(spec.warmup);
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(spec.duration);
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().map_err(|_| "a bank worker panicked".to_string())?;
    }
    let mut auditor = Client::connect(config.clone()).map_err(|e| format!("cannot connect: {e}"))?;
    let audit_total = audit(&mut auditor, spec.accounts).map_err(|e| format!("the final audit failed: {e}"))?;
    let tally = std::mem::take(&mut *tally.lock().expect("workers are done"));
    let latency_us = latency.lock().expect("workers are done").clone();
    Ok(BankReport {
        spec: spec.clone(),
        committed: tally.committed,
        aborts: tally.aborts,
        attempts: tally.attempts,
        failed: tally.failed,
        elapsed,
        latency_us,
        audit_total,
    })
}

/// Every account read in one read-only transaction: their total.
pub fn audit(client: &mut Client, accounts: u64) -> Result<i64, KvError> {
    let mut t = client.begin_read_only(None);
    let mut total = 0;
    for a in 0..accounts {
        total += balance(t.get(&account(a)))?;
    }
    t.commit()?;
    Ok(total)
}

/// A markdown table of runs, one row each.
pub fn table(reports: &[BankReport]) -> String {
    let mut out = String::from(
        "| policy | θ | keys/txn | clients | committed txns/s | abort ratio | aborts/commit | retries/commit | p50 ms | p99 ms | aborts by reason |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        let reasons: Vec<String> = r.aborts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {:.3} | {:.2} | {:.2} | {:.2} | {:.2} | {} |\n",
            r.spec.policy,
            r.spec.theta,
            r.spec.keys_per_txn,
            r.spec.clients,
            r.txns_per_s(),
            r.abort_ratio(),
            r.aborts_per_commit(),
            r.retries_per_commit(),
            r.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
            r.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
            if reasons.is_empty() { "-".to_string() } else { reasons.join(", ") },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_are_distinct_and_in_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut zipf = Zipfian::new(16, 0.99);
        for _ in 0..1000 {
            let p = pick(&mut zipf, &mut rng, 16, 4);
            assert_eq!(p.len(), 4);
            assert!(p.iter().all(|&a| a < 16));
            let mut sorted = p.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 4);
        }
    }

    #[test]
    fn specs_are_checked() {
        let ok = BankSpec {
            accounts: 100,
            keys_per_txn: 2,
            theta: 0.99,
            policy: Policy::WoundWait,
            clients: 4,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            seed: 1,
        };
        assert!(ok.validate().is_ok());
        assert!(BankSpec { keys_per_txn: 1, ..ok.clone() }.validate().is_err());
        assert!(BankSpec { accounts: 3, keys_per_txn: 4, ..ok.clone() }.validate().is_err());
        assert!(BankSpec { theta: 1.0, ..ok.clone() }.validate().is_err());
        assert!(BankSpec { clients: 0, ..ok }.validate().is_err());
    }
}
