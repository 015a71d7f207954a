//! `corekv-bench compare`: corekv side by side with etcd and Redis on this
//! machine, in one run, one system at a time, every system asked the same
//! questions (workload, key space, value size, clients, warm-up, duration).
//!
//! Systems: etcd 3 members on loopback (fsync on, its default), corekv 3 nodes,
//! corekv 1 node with replication factor 1, Redis with `appendonly yes,
//! appendfsync always` (the durability of a 1-node corekv), Redis without
//! persistence (the in-memory ceiling). Each runs `reps` times (closed loop);
//! the table gives medians with min–max. Beside them:
//! - the disk's fdatasync latency, probed in the same run in the same filesystem;
//! - single-client runs on etcd and corekv 3 nodes (latency against that probe);
//! - open-loop runs of etcd and corekv 3 nodes at one offered rate that etcd
//!   sustains ([`EQUAL_LOAD_FRACTION`] of its median), for p99 at equal load;
//! - driver checks before any number is trusted: the Redis driver against
//!   `redis-benchmark -t set` at the same concurrency, the etcd driver's
//!   acknowledged writes against the proposals etcd itself committed.
//!
//! The peer servers are our own processes on free ports with data under the
//! comparison's dir ([`crate::peers::servers`]); they stop when their system is
//! done, and on any error.

use std::fmt::{self, Write as _};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::report::{KindStats, Recorder};

/// Open-loop rate of the equal-load runs, as a fraction of etcd's median
/// closed-loop throughput (below its knee, so etcd is not simply saturated).
pub const EQUAL_LOAD_FRACTION: f64 = 0.8;
/// `--plot`: the open-loop rates of each system's sweep, as fractions of its own
/// median closed-loop throughput (from idle to past saturation).
pub const SWEEP_FRACTIONS: [f64; 6] = [0.25, 0.5, 0.75, 0.9, 1.0, 1.2];
/// `--plot`: longest measured part of one sweep point.
pub const SWEEP_POINT_SECONDS_MAX: f64 = 5.0;
/// fdatasyncs the disk probe times.
pub const FSYNC_PROBE_ITERATIONS: usize = 200;
/// Bytes written before each probed fdatasync (one page, as a small WAL append).
pub const FSYNC_PROBE_WRITE_BYTES: usize = 4096;
/// The probe file's size; writes cycle through it.
const FSYNC_PROBE_FILE_BYTES: usize = 1 << 20;
/// The Redis driver must reach this fraction of `redis-benchmark`'s rate.
pub const REDIS_DRIVER_FRACTION_MIN: f64 = 0.9;
/// The etcd driver's acknowledged writes and etcd's committed proposals may
/// differ by this fraction (etcd commits a few proposals of its own).
pub const ETCD_COUNT_TOLERANCE: f64 = 0.01;

/// One system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum System {
    /// etcd, 3 members on loopback, fsync on.
    Etcd3,
    /// corekv, 3 nodes, 3 replicas.
    Corekv3,
    /// corekv, 1 node, replication factor 1.
    Corekv1,
    /// Redis, `appendonly yes`, `appendfsync always`.
    RedisFsync,
    /// Redis without persistence.
    RedisMemory,
}

impl System {
    /// Every system, in the order a comparison runs them (etcd first: the
    /// equal-load rate comes from its throughput).
    pub const ALL: [System; 5] =
        [System::Etcd3, System::Corekv3, System::Corekv1, System::RedisFsync, System::RedisMemory];

    /// The name users type in `--systems`.
    pub fn name(self) -> &'static str {
        match self {
            System::Etcd3 => "etcd-3",
            System::Corekv3 => "corekv-3",
            System::Corekv1 => "corekv-1",
            System::RedisFsync => "redis-fsync",
            System::RedisMemory => "redis-memory",
        }
    }

    /// The name in the table.
    pub fn label(self) -> &'static str {
        match self {
            System::Etcd3 => "etcd, 3 members (fsync)",
            System::Corekv3 => "corekv, 3 nodes (RF 3)",
            System::Corekv1 => "corekv, 1 node (RF 1)",
            System::RedisFsync => "Redis, appendfsync always",
            System::RedisMemory => "Redis, no persistence",
        }
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for System {
    type Err = String;

    fn from_str(s: &str) -> Result<System, String> {
        System::ALL.into_iter().find(|sys| sys.name() == s.trim()).ok_or_else(|| {
            let names: Vec<_> = System::ALL.iter().map(|s| s.name()).collect();
            format!("unknown system {s:?} ({})", names.join(", "))
        })
    }
}

/// How a row's runs were paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Closed loop, every client of the comparison.
    Closed,
    /// Closed loop, one client, one request in flight.
    SingleClient,
    /// Open loop at this many operations per second.
    EqualLoad(f64),
}

impl Mode {
    fn describe(self, clients: usize) -> String {
        match self {
            Mode::Closed => format!("closed, {clients} clients"),
            Mode::SingleClient => "closed, 1 client".to_string(),
            Mode::EqualLoad(rate) => format!("open loop, {rate:.0} ops/s"),
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Median latency over every operation kind, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Operations that did not succeed.
    pub errors: u64,
}

impl Sample {
    /// The figures of `recorder` over a window of `seconds`.
    pub fn of(recorder: &Recorder, seconds: f64) -> Sample {
        let mut all = KindStats::default().latency;
        for kind in recorder.kinds().values() {
            all.add(&kind.latency).expect("histograms of equal bounds add");
        }
        let ms = |q: f64| if all.is_empty() { 0.0 } else { all.value_at_quantile(q) as f64 / 1e6 };
        Sample {
            ops_per_sec: recorder.ok() as f64 / seconds.max(1e-9),
            p50_ms: ms(0.50),
            p99_ms: ms(0.99),
            errors: recorder.errors(),
        }
    }
}

/// Median, minimum and maximum of some runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

/// The summary of `values`; `None` when there are none.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = match n {
        0 => return None,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    Some(Summary { median, min: sorted[0], max: sorted[n - 1] })
}

/// The `q` quantile (0..=1) of `values` by nearest rank; `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied()
}

/// Every run of one system in one mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The system.
    pub system: System,
    /// The pacing.
    pub mode: Mode,
    /// One per repetition.
    pub samples: Vec<Sample>,
}

impl Row {
    fn summary(&self, f: impl Fn(&Sample) -> f64) -> Option<Summary> {
        summarize(&self.samples.iter().map(f).collect::<Vec<_>>())
    }

    /// Throughput over the repetitions.
    pub fn ops_per_sec(&self) -> Option<Summary> {
        self.summary(|s| s.ops_per_sec)
    }

    /// p50 over the repetitions.
    pub fn p50_ms(&self) -> Option<Summary> {
        self.summary(|s| s.p50_ms)
    }

    /// p99 over the repetitions.
    pub fn p99_ms(&self) -> Option<Summary> {
        self.summary(|s| s.p99_ms)
    }
}

/// The disk, as the probe saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Disk {
    /// Where the probe ran (the comparison's dir).
    pub dir: PathBuf,
    /// Each timed 4 KiB write + fdatasync, ms.
    pub fdatasync_ms: Vec<f64>,
    /// Mean of corekv's own WAL path (O_DIRECT 4 KiB write + fdatasync), ms, when
    /// the filesystem takes O_DIRECT.
    pub direct_mean_ms: Option<f64>,
}

impl Disk {
    /// The median fdatasync, ms.
    pub fn p50_ms(&self) -> f64 {
        quantile(&self.fdatasync_ms, 0.5).unwrap_or(0.0)
    }

    /// The 99th percentile, ms.
    pub fn p99_ms(&self) -> f64 {
        quantile(&self.fdatasync_ms, 0.99).unwrap_or(0.0)
    }
}

/// Times `iterations` × (a 4 KiB write, then fdatasync) in a file under `dir`,
/// the way a WAL appends; each in ms. The file is removed afterwards.
pub fn probe_fdatasync(dir: &Path, iterations: usize) -> std::io::Result<Vec<f64>> {
    let path = dir.join(".corekv-bench-fdatasync-probe");
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
    // Allocated and synced first, so the probe times data writes, not file growth.
    file.write_all_at(&vec![0u8; FSYNC_PROBE_FILE_BYTES], 0)?;
    file.sync_all()?;
    let mut block = vec![0u8; FSYNC_PROBE_WRITE_BYTES];
    let mut times = Vec::with_capacity(iterations);
    for i in 0..iterations {
        block.fill(i as u8 | 1);
        let offset = (i * FSYNC_PROBE_WRITE_BYTES % FSYNC_PROBE_FILE_BYTES) as u64;
        let started = Instant::now();
        file.write_all_at(&block, offset)?;
        file.sync_data()?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(times)
}

/// A check of a driver against an independent count.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// The numbers.
    pub detail: String,
}

/// A goal of the issue, measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    /// The goal.
    pub goal: &'static str,
    /// What was measured.
    pub measured: String,
    /// Whether it was met.
    pub met: bool,
}

/// Everything a comparison found.
#[derive(Debug, Clone, PartialEq)]
pub struct Results {
    /// Workload, sizes, clients, timing, repetitions: one line.
    pub setup: String,
    /// Closed-loop clients.
    pub clients: usize,
    /// The rows, in run order.
    pub rows: Vec<Row>,
    /// The disk probe.
    pub disk: Disk,
    /// Driver checks.
    pub checks: Vec<Check>,
    /// `--plot`: per system, its sweep.
    pub sweeps: Vec<(System, Vec<SweepPoint>)>,
}

/// One open-loop run of a `--plot` sweep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepPoint {
    /// Offered ops/s.
    pub offered: f64,
    /// Achieved (successful) ops/s.
    pub achieved: f64,
    /// p99 latency, ms, from the intended send times.
    pub p99_ms: f64,
}

impl Results {
    fn row(&self, system: System, single: bool) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.system == system && if single { r.mode == Mode::SingleClient } else { r.mode == Mode::Closed })
    }

    fn equal_load(&self, system: System) -> Option<&Row> {
        self.rows.iter().find(|r| r.system == system && matches!(r.mode, Mode::EqualLoad(_)))
    }

    /// Median closed-loop throughput of `system` over that of `base`.
    pub fn throughput_ratio(&self, system: System, base: System) -> Option<f64> {
        let ours = self.row(system, false)?.ops_per_sec()?.median;
        let theirs = self.row(base, false)?.ops_per_sec()?.median;
        (theirs > 0.0).then(|| ours / theirs)
    }

    /// The goals that this run measured.
    pub fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        if let Some(ratio) = self.throughput_ratio(System::Corekv3, System::Etcd3) {
            goals.push(Goal {
                goal: "corekv 3 nodes ≥ 10× etcd 3 members (throughput)",
                measured: format!("{ratio:.2}×"),
                met: ratio >= 10.0,
            });
        }
        if let (Some(ours), Some(theirs)) = (self.equal_load(System::Corekv3), self.equal_load(System::Etcd3))
            && let (Some(o), Some(t)) = (ours.p99_ms(), theirs.p99_ms())
        {
            let rate = match ours.mode {
                Mode::EqualLoad(rate) => rate,
                _ => 0.0,
            };
            goals.push(Goal {
                goal: "corekv 3 nodes: lower p99 than etcd at equal offered load",
                measured: format!("{:.2} ms vs {:.2} ms at {rate:.0} ops/s", o.median, t.median),
                met: o.median < t.median,
            });
        }
        if let Some(ratio) = self.throughput_ratio(System::Corekv1, System::RedisFsync) {
            goals.push(Goal {
                goal: "corekv 1 node ≥ 2× Redis appendfsync always (throughput)",
                measured: format!("{ratio:.2}×"),
                met: ratio >= 2.0,
            });
        }
        let fsync = self.disk.p50_ms();
        if let Some(p50) = self.row(System::Corekv3, true).and_then(Row::p50_ms)
            && fsync > 0.0
        {
            goals.push(Goal {
                goal: "corekv 3 nodes, single-client put p50 ≤ 2× fdatasync p50",
                measured: format!("{:.3} ms = {:.2}× {fsync:.3} ms", p50.median, p50.median / fsync),
                met: p50.median <= 2.0 * fsync,
            });
        }
        goals
    }

    /// Whether every driver check held.
    pub fn checks_passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// The markdown report: setup, table, disk, goals, checks.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}\n", self.setup);
        let _ = writeln!(
            out,
            "| system | load | ops/s median (min–max) | p50 ms | p99 ms | errors | ÷ etcd | ÷ Redis fsync |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|");
        for row in &self.rows {
            let ratio = |base: System| match (row.mode, row.system != base) {
                (Mode::Closed, true) => {
                    self.throughput_ratio(row.system, base).map_or("".into(), |r| format!("{r:.2}×"))
                }
                _ => String::new(),
            };
            let errors: u64 = row.samples.iter().map(|s| s.errors).sum();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {errors} | {} | {} |",
                row.system.label(),
                row.mode.describe(self.clients),
                cell(row.ops_per_sec(), 0),
                cell(row.p50_ms(), 3),
                cell(row.p99_ms(), 3),
                ratio(System::Etcd3),
                ratio(System::RedisFsync),
            );
        }
        let _ = writeln!(
            out,
            "\nDisk ({}): {} B write + fdatasync, {} times: p50 {:.3} ms, p99 {:.3} ms{}.",
            self.disk.dir.display(),
            FSYNC_PROBE_WRITE_BYTES,
            self.disk.fdatasync_ms.len(),
            self.disk.p50_ms(),
            self.disk.p99_ms(),
            self.disk
                .direct_mean_ms
                .map_or(String::new(), |m| format!("; O_DIRECT write + fdatasync (corekv's WAL path) mean {m:.3} ms")),
        );
        goals_and_checks(&mut out, &self.goals(), "Driver checks", &self.checks);
        out
    }
}

/// The goals' table and the checks' list under `heading`, each only when there
/// is something to list (both comparisons end their report with them).
pub(crate) fn goals_and_checks(out: &mut String, goals: &[Goal], heading: &str, checks: &[Check]) {
    if !goals.is_empty() {
        let _ = writeln!(out, "\n| goal | measured | met |\n|---|---|---|");
        for g in goals {
            let _ = writeln!(out, "| {} | {} | {} |", g.goal, g.measured, if g.met { "yes" } else { "no" });
        }
    }
    if !checks.is_empty() {
        let _ = writeln!(out, "\n{heading}:");
        for c in checks {
            let _ = writeln!(out, "- {}: {} — {}", c.name, if c.passed { "ok" } else { "FAILED" }, c.detail);
        }
    }
}

/// `median (min–max)` with `decimals`, or a dash.
pub(crate) fn cell(summary: Option<Summary>, decimals: usize) -> String {
    match summary {
        Some(s) => format!("{:.d$} ({:.d$}–{:.d$})", s.median, s.min, s.max, d = decimals),
        None => "–".to_string(),
    }
}

/// The etcd check: the writes the driver saw acknowledged against the change in
/// etcd's committed-proposal count over the same span.
pub fn etcd_count_check(rep: usize, writes_ok: u64, committed_delta: f64) -> (bool, String) {
    let ok = writes_ok as f64;
    let off = if ok > 0.0 { (committed_delta - ok) / ok } else { f64::INFINITY };
    let passed = writes_ok > 0 && off.abs() <= ETCD_COUNT_TOLERANCE;
    let detail = format!(
        "rep {rep}: {writes_ok} writes acknowledged, {committed_delta:.0} proposals committed ({:+.3}%)",
        off * 100.0
    );
    (passed, detail)
}

/// The Redis check: the driver's SET rate against `redis-benchmark`'s.
pub fn redis_rate_check(label: &str, driver: f64, benchmark: f64) -> Check {
    let fraction = if benchmark > 0.0 { driver / benchmark } else { 0.0 };
    Check {
        name: format!("Redis driver vs redis-benchmark -t set ({label})"),
        passed: fraction >= REDIS_DRIVER_FRACTION_MIN,
        detail: format!(
            "driver {driver:.0} SET/s, redis-benchmark {benchmark:.0} SET/s: {:.1}% (need ≥ {:.0}%)",
            fraction * 100.0,
            REDIS_DRIVER_FRACTION_MIN * 100.0
        ),
    }
}

/// What to compare, and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The workload (the same for every system).
    pub spec: crate::workload::Spec,
    /// Closed-loop clients, one request in flight each.
    pub clients: usize,
    /// etcd connections (default: one per 10 clients).
    pub conns: Option<usize>,
    /// Warm-up of each run.
    pub warmup: Duration,
    /// Measured part of each run.
    pub duration: Duration,
    /// Repetitions per system.
    pub reps: usize,
    /// The workload's seed.
    pub seed: u64,
    /// Per-request deadline.
    pub timeout: Duration,
    /// Cores per corekv node.
    pub cores: u16,
    /// Which systems, run in [`System::ALL`]'s order.
    pub systems: Vec<System>,
    /// Where the data dirs and logs go (default: a fresh temp dir).
    pub dir: Option<PathBuf>,
    /// Keep that dir afterwards.
    pub keep: bool,
    /// Also sweep open-loop rates per system (for `--plot`).
    pub sweep: bool,
}

#[cfg(feature = "peers")]
pub use live::run;
#[cfg(feature = "peers")]
pub(crate) use live::{Live, ensure_peers, in_dir, start};

/// The comparison itself: processes, runs, checks.
#[cfg(feature = "peers")]
mod live {
    use corekv_rpc::client::{Client, ClientConfig};
    use corekv_tools::launcher::{LaunchOptions, LocalCluster};

    use super::*;
    use crate::corekv::{CorekvDriver, Glommio};
    use crate::peers::servers::{RedisDurability, Servers, redis_benchmark_set, start_etcd, start_redis};
    use crate::peers::{self, Connect, Plan, Target};
    use crate::runner::{Pacing, Shared};
    use crate::workload::Kind;

    /// One run's recorder and its writes.
    struct Measured {
        sample: Sample,
        writes_ok: u64,
    }

    /// A system that is up.
    pub(crate) enum Live {
        /// The servers stop when this is dropped.
        Peer {
            /// Where its clients connect.
            target: Target,
            _servers: Servers,
        },
        /// A local corekv cluster, stopped when this is dropped.
        Corekv(LocalCluster),
    }

    impl Live {
        fn measure(&self, opts: &Options, plan: &Plan) -> Result<Measured, String> {
            let seconds = plan.duration.as_secs_f64();
            match self {
                Live::Peer { target, .. } => {
                    let connect = Connect { conns: opts.conns, timeout: opts.timeout };
                    let run = peers::run(target, plan, connect, None)?;
                    Ok(Measured { sample: Sample::of(&run.recorder, seconds), writes_ok: run.writes_ok })
                }
                Live::Corekv(cluster) => {
                    let addrs = cluster.addrs();
                    let outcome = corekv_engine::runtime::run_local("corekv-bench", async {
                        let mut config = ClientConfig::new(addrs);
                        config.deadline = opts.timeout;
                        let mut drivers = Vec::with_capacity(plan.pacing.clients);
                        for _ in 0..plan.pacing.clients {
                            let client = Client::connect(config.clone())
                                .await
                                .map_err(|e| format!("cannot reach the corekv cluster: {e}"))?;
                            drivers.push(CorekvDriver::new(client));
                        }
                        let shared = Shared::new(None);
                        let recorder = peers::measure(&drivers, &Glommio, plan, &shared).await;
                        Ok::<_, String>(Measured {
                            sample: Sample::of(&recorder, seconds),
                            writes_ok: shared.writes_ok(),
                        })
                    });
                    outcome.map_err(|e| e.to_string())?
                }
            }
        }
    }

    /// Starts `system` with its data and logs under `dir`.
    pub(crate) fn start(system: System, opts: &Options, dir: &Path) -> Result<Live, String> {
        let corekv = |nodes: usize| {
            let options = LaunchOptions {
                nodes,
                cores: opts.cores,
                replicas: Some(nodes.min(3)),
                data_dir: Some(dir.join(format!("corekv-{nodes}"))),
                keep: opts.keep,
                build_if_missing: true,
                ..LaunchOptions::default()
            };
            LocalCluster::start(options).map(Live::Corekv).map_err(|e| format!("cannot start corekv: {e}"))
        };
        let redis = |durability| {
            let servers = start_redis(durability, dir)?;
            Ok(Live::Peer { target: Target::Redis(servers.client_addrs[0].clone()), _servers: servers })
        };
        match system {
            System::Etcd3 => {
                let servers = start_etcd(3, dir)?;
                Ok(Live::Peer { target: Target::Etcd(servers.client_addrs.clone()), _servers: servers })
            }
            System::Corekv3 => corekv(3),
            System::Corekv1 => corekv(1),
            System::RedisFsync => redis(RedisDurability::FsyncAlways),
            System::RedisMemory => redis(RedisDurability::None),
        }
    }

    /// etcd's committed proposals: every member reports the cluster's commit
    /// index, so the count is the highest report, not a sum.
    fn etcd_committed(addrs: &[String]) -> Result<f64, String> {
        let mut best = None::<f64>;
        for addr in addrs {
            let text = peers::http_get(addr, "/metrics")?;
            let value = peers::metric(&text, "etcd_server_proposals_committed_total")
                .ok_or_else(|| format!("etcd at {addr} reports no etcd_server_proposals_committed_total"))?;
            best = Some(best.map_or(value, |b| b.max(value)));
        }
        best.ok_or_else(|| "no etcd member to ask".into())
    }

    fn plan(opts: &Options, pacing: Pacing, load: bool) -> Plan {
        Plan { spec: opts.spec.clone(), pacing, warmup: opts.warmup, duration: opts.duration, seed: opts.seed, load }
    }

    fn say(system: System, what: &str, s: &Sample) {
        eprintln!(
            "corekv-bench compare: {:<12} {what:<22} {:>9.0} ops/s  p50 {:>7.3} ms  p99 {:>7.3} ms  errors {}",
            system.name(),
            s.ops_per_sec,
            s.p50_ms,
            s.p99_ms,
            s.errors
        );
    }

    /// Runs one system through its rows and checks.
    fn run_system(
        system: System,
        opts: &Options,
        dir: &Path,
        equal_rate: &mut Option<f64>,
        results: &mut Results,
    ) -> Result<(), String> {
        eprintln!("corekv-bench compare: starting {} ...", system.label());
        let live = start(system, opts, dir)?;
        let closed = Pacing { clients: opts.clients, inflight: 1, rate: None };
        let mut row = Row { system, mode: Mode::Closed, samples: Vec::new() };
        let mut etcd_details = Vec::new();
        let mut etcd_passed = true;
        for rep in 1..=opts.reps {
            let before = match &live {
                Live::Peer { target: Target::Etcd(addrs), .. } => Some(etcd_committed(addrs)?),
                _ => None,
            };
            let measured = live.measure(opts, &plan(opts, closed, rep == 1))?;
            if let (Some(before), Live::Peer { target: Target::Etcd(addrs), .. }) = (before, &live) {
                let (passed, detail) = etcd_count_check(rep, measured.writes_ok, etcd_committed(addrs)? - before);
                eprintln!("corekv-bench compare: etcd driver check {}", detail);
                etcd_passed &= passed;
                etcd_details.push(detail);
            }
            say(system, &format!("rep {rep}/{}", opts.reps), &measured.sample);
            row.samples.push(measured.sample);
        }
        if !etcd_details.is_empty() {
            results.checks.push(Check {
                name: "etcd driver's acknowledged writes vs etcd_server_proposals_committed_total".into(),
                passed: etcd_passed,
                detail: etcd_details.join("; "),
            });
        }
        let median = row.ops_per_sec().map(|s| s.median).unwrap_or(0.0);
        results.rows.push(row);
        if let Live::Peer { target: Target::Redis(addr), .. } = &live {
            let driver = match opts.spec.kind {
                Kind::Put => median,
                _ => {
                    let mut put = plan(opts, closed, false);
                    put.spec = crate::workload::Spec { kind: Kind::Put, ..opts.spec.clone() };
                    live.measure(opts, &put)?.sample.ops_per_sec
                }
            };
            let requests = ((driver * opts.duration.as_secs_f64()) as u64).max(10_000);
            let benchmark =
                redis_benchmark_set(addr, opts.clients, requests, opts.spec.value_bytes, opts.spec.records)?;
            let check = redis_rate_check(system.label(), driver, benchmark);
            eprintln!("corekv-bench compare: {}: {}", check.name, check.detail);
            results.checks.push(check);
        }
        if opts.sweep && median > 0.0 {
            let mut points = Vec::with_capacity(SWEEP_FRACTIONS.len());
            for fraction in SWEEP_FRACTIONS {
                let rate = (median * fraction).round().max(1.0);
                let open = Pacing { clients: opts.clients, inflight: 1, rate: Some(rate) };
                let mut point = plan(opts, open, false);
                point.warmup = point.warmup.min(Duration::from_secs(1));
                point.duration = point.duration.min(Duration::from_secs_f64(SWEEP_POINT_SECONDS_MAX));
                let measured = live.measure(opts, &point)?;
                say(system, &format!("sweep {rate:.0}/s"), &measured.sample);
                points.push(SweepPoint {
                    offered: rate,
                    achieved: measured.sample.ops_per_sec,
                    p99_ms: measured.sample.p99_ms,
                });
            }
            results.sweeps.push((system, points));
        }
        if matches!(system, System::Etcd3 | System::Corekv3) {
            let single = Pacing { clients: 1, inflight: 1, rate: None };
            let mut row = Row { system, mode: Mode::SingleClient, samples: Vec::new() };
            for rep in 1..=opts.reps {
                let measured = live.measure(opts, &plan(opts, single, false))?;
                say(system, &format!("1 client {rep}/{}", opts.reps), &measured.sample);
                row.samples.push(measured.sample);
            }
            results.rows.push(row);
            if system == System::Etcd3 && median > 0.0 {
                *equal_rate = Some((median * EQUAL_LOAD_FRACTION).round().max(1.0));
            }
            if let Some(rate) = *equal_rate {
                let open = Pacing { clients: opts.clients, inflight: 1, rate: Some(rate) };
                let mut row = Row { system, mode: Mode::EqualLoad(rate), samples: Vec::new() };
                for rep in 1..=opts.reps {
                    let measured = live.measure(opts, &plan(opts, open, false))?;
                    say(system, &format!("{rate:.0}/s {rep}/{}", opts.reps), &measured.sample);
                    row.samples.push(measured.sample);
                }
                results.rows.push(row);
            }
        }
        drop(live);
        Ok(())
    }

    /// Runs the comparison. The comparison's dir is removed afterwards unless
    /// `keep` (or a failure: then the logs are kept and the error says where).
    pub fn run(opts: &Options) -> Result<Results, String> {
        if opts.reps == 0 || opts.clients == 0 {
            return Err("--reps and --clients must be at least 1".into());
        }
        in_dir(opts.dir.as_deref(), opts.keep, |dir| run_in(opts, dir))
    }

    /// Runs `f` in `dir` (default: a fresh temp dir), removed afterwards unless
    /// `keep` or `f` failed (then the error says where the logs are).
    pub(crate) fn in_dir<T>(
        dir: Option<&Path>,
        keep: bool,
        f: impl FnOnce(&Path) -> Result<T, String>,
    ) -> Result<T, String> {
        let dir = match dir {
            Some(dir) => dir.to_path_buf(),
            None => std::env::temp_dir().join(format!(
                "corekv-bench-compare-{}-{}",
                std::process::id(),
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
            )),
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        match f(&dir) {
            Ok(results) => {
                if !keep {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                Ok(results)
            }
            Err(e) => Err(format!("{e} (data and logs kept in {})", dir.display())),
        }
    }

    /// The peer servers `systems` need, installed when missing.
    pub(crate) fn ensure_peers(systems: &[System]) -> Result<(), String> {
        if systems.contains(&System::RedisFsync) || systems.contains(&System::RedisMemory) {
            peers::servers::ensure_installed("redis-server", "redis-server")?;
            peers::servers::ensure_installed("redis-benchmark", "redis-tools")?;
        }
        if systems.contains(&System::Etcd3) {
            peers::servers::ensure_installed("etcd", "etcd-server")?;
        }
        Ok(())
    }

    fn run_in(opts: &Options, dir: &Path) -> Result<Results, String> {
        let mut systems = opts.systems.clone();
        systems.sort();
        systems.dedup();
        if systems.contains(&System::RedisFsync) || systems.contains(&System::RedisMemory) {
            Target::Redis(String::new()).supports(opts.spec.kind)?;
        }
        ensure_peers(&systems)?;
        eprintln!("corekv-bench compare: probing fdatasync in {} ...", dir.display());
        let fdatasync_ms = probe_fdatasync(dir, FSYNC_PROBE_ITERATIONS)
            .map_err(|e| format!("cannot probe fdatasync in {}: {e}", dir.display()))?;
        let direct_mean_ms = corekv_engine::runtime::run_local("corekv-bench-probe", async {
            corekv_engine::runtime::dma_write_fdatasync_probe(dir, FSYNC_PROBE_ITERATIONS as u64).await
        })
        .ok()
        .and_then(Result::ok)
        .map(|total| total.as_secs_f64() * 1e3 / FSYNC_PROBE_ITERATIONS as f64);
        let spec = &opts.spec;
        let setup = format!(
            "Workload {} ({} keys, {} B values), {} clients × 1 in flight (etcd: {} connections), {} s warm-up + {} s \
             measured, {} repetitions; corekv nodes with {} cores.",
            spec.kind,
            spec.records,
            spec.value_bytes,
            opts.clients,
            opts.conns.unwrap_or_else(|| Target::Etcd(Vec::new()).default_conns(opts.clients)),
            opts.warmup.as_secs_f64(),
            opts.duration.as_secs_f64(),
            opts.reps,
            opts.cores
        );
        let disk = Disk { dir: dir.to_path_buf(), fdatasync_ms, direct_mean_ms };
        let mut results =
            Results { setup, clients: opts.clients, rows: Vec::new(), disk, checks: Vec::new(), sweeps: Vec::new() };
        let mut equal_rate = None;
        for system in systems {
            run_system(system, opts, dir, &mut equal_rate, &mut results)?;
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_median_min_max() {
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[3.0]), Some(Summary { median: 3.0, min: 3.0, max: 3.0 }));
        assert_eq!(summarize(&[5.0, 1.0, 3.0]), Some(Summary { median: 3.0, min: 1.0, max: 5.0 }));
        assert_eq!(summarize(&[4.0, 1.0, 2.0, 10.0]), Some(Summary { median: 3.0, min: 1.0, max: 10.0 }));
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(100.0));
        assert_eq!(quantile(&v, 0.99), Some(198.0));
        assert_eq!(quantile(&v, 1.0), Some(200.0));
        assert_eq!(quantile(&[7.0], 0.0), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn systems_parse_by_name() {
        for s in System::ALL {
            assert_eq!(s.name().parse::<System>(), Ok(s));
        }
        assert!("etcd".parse::<System>().unwrap_err().contains("etcd-3"));
    }

    #[test]
    fn samples_merge_every_kind() {
        let mut r = Recorder::default();
        for i in 1..=100u64 {
            r.record(crate::workload::OpKind::Read, Duration::from_micros(i * 10), Ok(()));
        }
        r.record(crate::workload::OpKind::Update, Duration::from_millis(50), Err("indeterminate"));
        let s = Sample::of(&r, 2.0);
        assert_eq!((s.ops_per_sec, s.errors), (50.0, 1));
        assert!((s.p50_ms - 0.51).abs() < 0.01, "{}", s.p50_ms);
        assert!((s.p99_ms - 1.0).abs() < 0.01, "{}", s.p99_ms);
    }

    fn sample(ops: f64, p50: f64, p99: f64) -> Sample {
        Sample { ops_per_sec: ops, p50_ms: p50, p99_ms: p99, errors: 0 }
    }

    fn results() -> Results {
        let row = |system, mode, samples| Row { system, mode, samples };
        Results {
            setup: "Workload put.".into(),
            clients: 64,
            rows: vec![
                row(
                    System::Etcd3,
                    Mode::Closed,
                    vec![sample(1000.0, 5.0, 20.0), sample(900.0, 6.0, 25.0), sample(1100.0, 4.0, 30.0)],
                ),
                row(System::Etcd3, Mode::EqualLoad(800.0), vec![sample(800.0, 3.0, 9.0)]),
                row(System::Corekv3, Mode::Closed, vec![sample(12_000.0, 1.0, 3.0)]),
                row(System::Corekv3, Mode::SingleClient, vec![sample(900.0, 1.5, 2.0)]),
                row(System::Corekv3, Mode::EqualLoad(800.0), vec![sample(800.0, 1.0, 2.0)]),
                row(System::Corekv1, Mode::Closed, vec![sample(15_000.0, 1.0, 2.0)]),
                row(System::RedisFsync, Mode::Closed, vec![sample(10_000.0, 1.0, 2.0)]),
            ],
            disk: Disk { dir: "/d".into(), fdatasync_ms: vec![1.0, 1.0, 0.5, 2.0], direct_mean_ms: None },
            checks: vec![redis_rate_check("Redis", 95.0, 100.0)],
            sweeps: Vec::new(),
        }
    }

    #[test]
    fn goals_are_judged_from_medians() {
        let r = results();
        assert_eq!(r.throughput_ratio(System::Corekv3, System::Etcd3), Some(12.0));
        let goals = r.goals();
        let met: Vec<bool> = goals.iter().map(|g| g.met).collect();
        // 12× etcd; 2 ms < 9 ms at equal load; 1.5× Redis fsync (< 2); 1.5 ms ≤ 2 × 1 ms.
        assert_eq!(met, [true, true, false, true], "{goals:#?}");
        assert_eq!(goals[2].measured, "1.50×");
    }

    #[test]
    fn the_table_has_a_row_per_system_and_mode() {
        let text = results().markdown();
        assert!(
            text.contains("| etcd, 3 members (fsync) | closed, 64 clients | 1000 (900–1100) | 5.000 (4.000–6.000) |"),
            "{text}"
        );
        assert!(text.contains("| corekv, 3 nodes (RF 3) | closed, 64 clients | 12000 (12000–12000) |"), "{text}");
        assert!(text.contains("| 12.00× | 1.20× |"), "{text}");
        assert!(text.contains("| open loop, 800 ops/s |"), "{text}");
        assert!(text.contains("p50 1.000 ms, p99 2.000 ms"), "{text}");
        assert!(text.contains("| corekv 1 node ≥ 2× Redis appendfsync always (throughput) | 1.50× | no |"), "{text}");
        assert!(text.contains("redis-benchmark 100 SET/s: 95.0%"), "{text}");
        let rows = text.lines().filter(|l| l.contains(" | closed, ") || l.contains(" | open loop, ")).count();
        assert_eq!(rows, 7, "{text}");
    }

    #[test]
    fn driver_checks_hold_within_their_tolerances() {
        assert!(etcd_count_check(1, 10_000, 10_004.0).0);
        assert!(etcd_count_check(1, 10_000, 9_950.0).0);
        let (passed, detail) = etcd_count_check(2, 10_000, 10_200.0);
        assert!(!passed && detail.contains("+2.000%"), "{detail}");
        assert!(!etcd_count_check(1, 0, 0.0).0);
        assert!(redis_rate_check("x", 90.0, 100.0).passed);
        assert!(!redis_rate_check("x", 89.0, 100.0).passed);
    }

    #[test]
    fn the_probe_times_each_fdatasync() {
        let dir = std::env::temp_dir().join(format!("corekv-bench-probe-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let times = probe_fdatasync(&dir, 3).unwrap();
        assert_eq!(times.len(), 3);
        assert!(times.iter().all(|t| *t >= 0.0));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "the probe file is removed");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
