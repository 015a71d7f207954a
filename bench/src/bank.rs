//! The contention workload (issue 11's bank and sweep): transactions that each
//! read K accounts chosen by a zipfian (θ) and move money from the first to the
//! others, under one conflict policy, from closed-loop clients.
//!
//! Each client is a thread with its own blocking client (one transaction in
//! flight each: a transaction's steps are sequential anyway, so the blocking
//! client measures the same thing an async one would, with less machinery); the
//! loop, the retries and the history are [`crate::txn_loop`]'s. The latency of a
//! committed transaction includes its retries. Money is only moved, so an audit
//! (a read-only transaction over every account) must sum to zero; one runs
//! now and then beside the clients (`audit_every`), and one ends the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use corekv_rpc::client::blocking::Client;
use corekv_rpc::client::{ClientConfig, KvError};
use corekv_rpc::txn::Policy;
use rand_chacha::ChaCha8Rng;

use crate::txn_loop::{Attempt, FIGURE_COLUMNS, Figures, LoopSpec, TxnHistory, Worker, closed_loop};
use crate::zipf::Zipfian;

/// How often a waiting auditor looks at the stop flag.
const AUDITOR_POLL: Duration = Duration::from_millis(50);

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
    /// A read-only audit of every account this often while the clients run
    /// (`None`: only the final one).
    pub audit_every: Option<Duration>,
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
    /// Committed txns/s, aborts, retries and latency of the measured window.
    pub figures: Figures,
    /// The final audit's total (0 when the bank is right).
    pub audit_total: i64,
    /// The totals of the audits made while the clients ran (0 each).
    pub audits: Vec<i64>,
    /// Audits during the run that got no answer (unavailable, say).
    pub audit_errors: u64,
}

impl BankReport {
    /// Whether every audit, the final one included, found the total unchanged.
    pub fn balanced(&self) -> bool {
        self.audit_total == 0 && self.audits.iter().all(|t| *t == 0)
    }
}

/// The key of account `i`.
pub(crate) fn account(i: u64) -> Vec<u8> {
    format!("acct{i}").into_bytes()
}

pub(crate) fn balance(got: Result<corekv_rpc::client::Got, KvError>) -> Result<i64, KvError> {
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
pub(crate) fn pick(zipf: &mut Zipfian, rng: &mut ChaCha8Rng, accounts: u64, keys: usize) -> Vec<u64> {
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
fn move_money(t: &mut Attempt<'_>, picked: &[u64]) -> Result<(), KvError> {
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

/// Runs `spec` against the cluster at `config`, recording every attempt (the
/// final audit's included) to `history` when given.
pub fn run_bank(
    config: &ClientConfig,
    spec: &BankSpec,
    history: Option<&Arc<TxnHistory>>,
) -> Result<BankReport, String> {
    spec.validate()?;
    let stop = Arc::new(AtomicBool::new(false));
    let auditor = match spec.audit_every {
        Some(every) => Some(spawn_auditor(config, spec, history, every, stop.clone())?),
        None => None,
    };
    let loop_spec = LoopSpec {
        clients: spec.clients,
        policy: spec.policy,
        duration: spec.duration,
        warmup: spec.warmup,
        seed: spec.seed,
    };
    let figures = closed_loop(config, &loop_spec, history, |_| {
        let (accounts, keys, mut zipf) = (spec.accounts, spec.keys_per_txn, Zipfian::new(spec.accounts, spec.theta));
        move |worker: &mut Worker| {
            let picked = pick(&mut zipf, &mut worker.rng, accounts, keys);
            worker.run_txn(|t| move_money(t, &picked))
        }
    });
    stop.store(true, Ordering::Relaxed);
    let (audits, audit_errors) = match auditor {
        Some(thread) => thread.join().map_err(|_| "the auditor panicked".to_string())?,
        None => (Vec::new(), 0),
    };
    let figures = figures?;
    let client = Client::connect(config.clone()).map_err(|e| format!("cannot connect: {e}"))?;
    let mut auditor = Worker::new(spec.clients as u64, client, spec.policy, spec.seed, history.cloned());
    let audit_total = audit(&mut auditor, spec.accounts).map_err(|e| format!("the final audit failed: {e}"))?;
    Ok(BankReport { spec: spec.clone(), figures, audit_total, audits, audit_errors })
}

/// Audits every `every` until `stop` (the audits' totals, and how many got no
/// answer). The auditor is client number `clients` in the history, as the
/// final audit is (they never overlap).
fn spawn_auditor(
    config: &ClientConfig,
    spec: &BankSpec,
    history: Option<&Arc<TxnHistory>>,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<(Vec<i64>, u64)>, String> {
    let client = Client::connect(config.clone()).map_err(|e| format!("cannot connect: {e}"))?;
    let mut worker = Worker::new(spec.clients as u64, client, spec.policy, spec.seed, history.cloned());
    let accounts = spec.accounts;
    Ok(std::thread::spawn(move || {
        let (mut totals, mut errors) = (Vec::new(), 0);
        let mut next = Instant::now() + every;
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() < next {
                std::thread::sleep(AUDITOR_POLL.min(next - Instant::now()));
                continue;
            }
            match audit(&mut worker, accounts) {
                Ok(total) => totals.push(total),
                Err(_) => errors += 1,
            }
            next = Instant::now() + every;
        }
        (totals, errors)
    }))
}

/// Every account read in one read-only transaction: their total.
pub fn audit(worker: &mut Worker, accounts: u64) -> Result<i64, KvError> {
    let (total, _) = worker.run_read_only(|t| {
        let mut total = 0;
        for a in 0..accounts {
            total += balance(t.get(&account(a)))?;
        }
        Ok(total)
    })?;
    Ok(total)
}

/// A markdown table of runs, one row each.
pub fn table(reports: &[BankReport]) -> String {
    let mut out = format!("| policy | θ | keys/txn | clients | {FIGURE_COLUMNS} |\n|{}\n", "---|".repeat(12));
    for r in reports {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.spec.policy,
            r.spec.theta,
            r.spec.keys_per_txn,
            r.spec.clients,
            r.figures.cells()
        ));
    }
    out
}

/// The sweep's reports as curves of committed txns/s against θ, one per
/// (policy, keys per transaction), in the order the reports first name them.
pub fn curves_by_theta(reports: &[BankReport]) -> Vec<crate::plot::Curve> {
    let mut curves: Vec<(Policy, usize, crate::plot::Curve)> = Vec::new();
    for r in reports {
        let point = (r.spec.theta, r.figures.txns_per_s());
        match curves.iter_mut().find(|(p, k, _)| *p == r.spec.policy && *k == r.spec.keys_per_txn) {
            Some((_, _, curve)) => curve.points.push(point),
            None => curves.push((
                r.spec.policy,
                r.spec.keys_per_txn,
                crate::plot::Curve {
                    label: format!("{}, {} keys", r.spec.policy, r.spec.keys_per_txn),
                    points: vec![point],
                },
            )),
        }
    }
    let mut curves: Vec<_> = curves.into_iter().map(|(_, _, c)| c).collect();
    for curve in &mut curves {
        curve.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    curves
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

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
    fn the_sweep_plots_one_curve_per_policy_and_size_in_theta_order() {
        let report = |policy, keys_per_txn, theta: f64, committed| BankReport {
            spec: BankSpec {
                accounts: 100,
                keys_per_txn,
                theta,
                policy,
                clients: 4,
                duration: Duration::from_secs(1),
                warmup: Duration::ZERO,
                seed: 1,
                audit_every: None,
            },
            figures: Figures { committed, elapsed: Duration::from_secs(2), ..Figures::default() },
            audit_total: 0,
            audits: Vec::new(),
            audit_errors: 0,
        };
        let reports = [
            report(Policy::NoWait, 4, 0.9, 10),
            report(Policy::WoundWait, 4, 0.9, 30),
            report(Policy::NoWait, 4, 0.0, 40),
            report(Policy::NoWait, 16, 0.0, 8),
        ];
        let curves = curves_by_theta(&reports);
        let labels: Vec<&str> = curves.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["no-wait, 4 keys", "wound-wait, 4 keys", "no-wait, 16 keys"]);
        assert_eq!(curves[0].points, [(0.0, 20.0), (0.9, 5.0)]);
        assert_eq!(curves[1].points, [(0.9, 15.0)]);
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
            audit_every: None,
        };
        assert!(ok.validate().is_ok());
        assert!(BankSpec { keys_per_txn: 1, ..ok.clone() }.validate().is_err());
        assert!(BankSpec { accounts: 3, keys_per_txn: 4, ..ok.clone() }.validate().is_err());
        assert!(BankSpec { theta: 1.0, ..ok.clone() }.validate().is_err());
        assert!(BankSpec { clients: 0, ..ok }.validate().is_err());
    }
}
