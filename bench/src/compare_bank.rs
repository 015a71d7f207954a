//! `corekv-bench compare --workload bank`: the bank of [`crate::bank`] on corekv
//! beside the same transfers on etcd (a `Txn` comparing both accounts' mod
//! revisions) and on Redis (WATCH / MULTI / EXEC), one system at a time, each
//! started by [`crate::compare`] on this machine with the same durability as
//! for the key-value comparison (etcd fsyncs; `redis-fsync` is `appendfsync
//! always`). Same clients, accounts, θ, warm-up and duration for every system,
//! `reps` times; the table gives medians with min–max and each system's
//! throughput against corekv 3 nodes measured in the same run. An audit after
//! each run must find the bank's total unchanged.

use std::fmt::Write as _;

use crate::bank::BankSpec;
use crate::compare::{Check, Goal, Summary, System, cell, goals_and_checks, summarize};
use crate::txn_loop::Figures;

/// What one run of one system measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BankSample {
    /// Committed transfers per second.
    pub txns_per_s: f64,
    /// Aborted attempts per committed transfer.
    pub aborts_per_commit: f64,
    /// Retries per committed transfer.
    pub retries_per_commit: f64,
    /// p50 of a committed transfer, retries included, ms.
    pub p50_ms: f64,
    /// p99 of the same, ms.
    pub p99_ms: f64,
    /// Transfers given up or failed.
    pub failed: u64,
}

impl BankSample {
    /// The sample of a run's figures.
    pub fn of(figures: &Figures) -> BankSample {
        BankSample {
            txns_per_s: figures.txns_per_s(),
            aborts_per_commit: figures.aborts_per_commit(),
            retries_per_commit: figures.retries_per_commit(),
            p50_ms: figures.latency_ms(0.5),
            p99_ms: figures.latency_ms(0.99),
            failed: figures.failed,
        }
    }
}

/// Every run of one system.
#[derive(Debug, Clone, PartialEq)]
pub struct BankRow {
    /// The system.
    pub system: System,
    /// One per repetition.
    pub samples: Vec<BankSample>,
}

impl BankRow {
    fn summary(&self, f: impl Fn(&BankSample) -> f64) -> Option<Summary> {
        summarize(&self.samples.iter().map(f).collect::<Vec<_>>())
    }
}

/// Everything a bank comparison found.
#[derive(Debug, Clone, PartialEq)]
pub struct BankResults {
    /// The run's shape, one line.
    pub setup: String,
    /// One per system, in run order.
    pub rows: Vec<BankRow>,
    /// The audits.
    pub checks: Vec<Check>,
}

impl BankResults {
    fn median_txns(&self, system: System) -> Option<f64> {
        let row = self.rows.iter().find(|r| r.system == system)?;
        row.summary(|s| s.txns_per_s).map(|s| s.median)
    }

    /// Median throughput of `system` over that of `base`.
    pub fn ratio(&self, system: System, base: System) -> Option<f64> {
        let (ours, theirs) = (self.median_txns(system)?, self.median_txns(base)?);
        (theirs > 0.0).then(|| ours / theirs)
    }

    /// The bank goals this run measured.
    pub fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        if let Some(r) = self.ratio(System::Corekv3, System::Etcd3) {
            goals.push(Goal {
                goal: "bank: corekv 3 nodes ≥ 5× etcd's Txn-based bank",
                measured: format!("{r:.2}×"),
                met: r >= 5.0,
            });
        }
        if let Some(r) = self.ratio(System::Corekv3, System::RedisFsync) {
            goals.push(Goal {
                goal: "bank: corekv 3 nodes ≥ Redis WATCH/MULTI/EXEC, appendfsync always",
                measured: format!("{r:.2}×"),
                met: r >= 1.0,
            });
        }
        goals
    }

    /// Whether every audit found the total unchanged.
    pub fn checks_passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// The markdown report: setup, table, goals, audits.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}\n", self.setup);
        let _ = writeln!(
            out,
            "| system | committed txns/s median (min–max) | aborts/commit | retries/commit | p50 ms | p99 ms | failed \
             | ÷ corekv 3 nodes |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for row in &self.rows {
            let ratio = self.ratio(row.system, System::Corekv3).map_or(String::new(), |r| format!("{r:.2}×"));
            let failed: u64 = row.samples.iter().map(|s| s.failed).sum();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {failed} | {ratio} |",
                row.system.label(),
                cell(row.summary(|s| s.txns_per_s), 0),
                cell(row.summary(|s| s.aborts_per_commit), 2),
                cell(row.summary(|s| s.retries_per_commit), 2),
                cell(row.summary(|s| s.p50_ms), 2),
                cell(row.summary(|s| s.p99_ms), 2),
            );
        }
        goals_and_checks(&mut out, &self.goals(), "Audits", &self.checks);
        out
    }
}

/// The audit of one system: every run's final total must be 0.
pub fn audit_check(system: System, totals: &[i64]) -> Check {
    Check {
        name: format!("bank total on {}", system.label()),
        passed: totals.iter().all(|t| *t == 0),
        detail: format!("final audits {totals:?} (0 each when no money was made or lost)"),
    }
}

/// The line that says what ran.
pub fn setup_line(bank: &BankSpec, reps: usize, cores: u16) -> String {
    format!(
        "Workload bank: transfers between 2 of {} accounts picked by a zipfian θ {}, {} clients (one transfer in \
         flight each), {} s warm-up + {} s measured, {} repetitions; corekv under {} with {} cores per node.",
        bank.accounts,
        bank.theta,
        bank.clients,
        bank.warmup.as_secs_f64(),
        bank.duration.as_secs_f64(),
        reps,
        bank.policy,
        cores
    )
}

#[cfg(feature = "peers")]
pub use live::run;

/// The comparison itself: each system started, run, audited and stopped.
#[cfg(feature = "peers")]
mod live {
    use corekv_rpc::client::ClientConfig;

    use super::*;
    use crate::compare::{Live, Options, ensure_peers, in_dir, start};

    /// Runs `bank` on every system of `opts` (their order: [`System::ALL`]'s),
    /// `opts.reps` times each.
    pub fn run(opts: &Options, bank: &BankSpec) -> Result<BankResults, String> {
        bank.validate()?;
        if opts.reps == 0 {
            return Err("--reps must be at least 1".into());
        }
        let mut systems = opts.systems.clone();
        systems.sort();
        systems.dedup();
        ensure_peers(&systems)?;
        in_dir(opts.dir.as_deref(), opts.keep, |dir| {
            let mut results =
                BankResults { setup: setup_line(bank, opts.reps, opts.cores), rows: Vec::new(), checks: Vec::new() };
            for system in systems {
                eprintln!("corekv-bench compare: starting {} ...", system.label());
                let live = start(system, opts, dir)?;
                let mut row = BankRow { system, samples: Vec::new() };
                let mut totals = Vec::new();
                for rep in 1..=opts.reps {
                    let (figures, total) = measure(&live, opts, bank)?;
                    let sample = BankSample::of(&figures);
                    eprintln!(
                        "corekv-bench compare: {:<12} bank rep {rep}/{}  {:>8.0} txns/s  aborts/commit {:.2}  p50 {:.2} \
                         ms  p99 {:.2} ms  failed {}",
                        system.name(),
                        opts.reps,
                        sample.txns_per_s,
                        sample.aborts_per_commit,
                        sample.p50_ms,
                        sample.p99_ms,
                        sample.failed
                    );
                    row.samples.push(sample);
                    totals.push(total);
                }
                results.rows.push(row);
                results.checks.push(audit_check(system, &totals));
                drop(live);
            }
            Ok(results)
        })
    }

    fn measure(live: &Live, opts: &Options, bank: &BankSpec) -> Result<(Figures, i64), String> {
        match live {
            Live::Peer { target, .. } => {
                let report = crate::peers::bank::run_bank(target, bank, opts.conns, opts.timeout)?;
                Ok((report.figures, report.audit_total))
            }
            Live::Corekv(cluster) => {
                let mut config = ClientConfig::new(cluster.addrs());
                config.deadline = opts.timeout;
                let report = crate::bank::run_bank(&config, bank, None)?;
                Ok((report.figures, report.audit_total))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(txns: f64) -> BankSample {
        BankSample {
            txns_per_s: txns,
            aborts_per_commit: 0.5,
            retries_per_commit: 0.5,
            p50_ms: 1.0,
            p99_ms: 9.0,
            failed: 0,
        }
    }

    fn results() -> BankResults {
        BankResults {
            setup: "Workload bank.".into(),
            rows: vec![
                BankRow { system: System::Etcd3, samples: vec![sample(100.0), sample(120.0), sample(110.0)] },
                BankRow { system: System::Corekv3, samples: vec![sample(660.0)] },
                BankRow { system: System::RedisFsync, samples: vec![sample(1320.0)] },
            ],
            checks: vec![audit_check(System::Corekv3, &[0, 0]), audit_check(System::Etcd3, &[0, 3])],
        }
    }

    #[test]
    fn ratios_and_goals_come_from_medians() {
        let r = results();
        assert_eq!(r.ratio(System::Corekv3, System::Etcd3), Some(6.0));
        let goals = r.goals();
        assert_eq!(goals.iter().map(|g| g.met).collect::<Vec<_>>(), [true, false], "{goals:#?}");
        assert_eq!(goals[1].measured, "0.50×");
    }

    #[test]
    fn the_table_names_each_system_and_its_ratio_to_corekv() {
        let text = results().markdown();
        assert!(text.contains("| etcd, 3 members (fsync) | 110 (100–120) |"), "{text}");
        assert!(text.contains("| 0.17× |"), "{text}");
        assert!(text.contains("| Redis, appendfsync always | 1320 (1320–1320) |"), "{text}");
        assert!(text.contains("| 2.00× |"), "{text}");
        assert!(text.contains("FAILED"), "a changed total is shown: {text}");
        assert!(!results().checks_passed());
    }
}
