//! `corekv-bench --scenario join` (issue 12): a local cluster under a steady
//! read/write load; a node joins mid-run and the cluster rebalances onto it. The
//! run prints the operations completed in every second (so the dip, if any, is
//! visible), the throughput while the cluster rebalanced against the steady rate
//! before the join, the time from the join to a balanced placement against the
//! bound the move rate sets, and the bytes the moves shipped (snapshots and the
//! log after them) against the minimal bytes the planner computed (the fewest
//! bytes any plan reaching balance with as few moves sends, at the shards'
//! sizes when the node joined: `plan::minimal_bytes_exact`) and against those replicas' sizes
//! when they moved, and the request latency before, during and after the
//! rebalance (a shard its clients cannot reach shows there even when the
//! throughput hides it). Measured here, never asserted in a test.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use corekv_engine::placement::drive;
use corekv_rpc::client::ClientConfig;
use corekv_rpc::client::blocking::Client;
use corekv_rpc::map::ClusterMap;
use corekv_rpc::node::CoreStats;
use corekv_tools::launcher::{LaunchOptions, LocalCluster};
use hdrhistogram::Histogram;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::plot::{self, Axes, Curve};

/// What the join scenario runs.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// Nodes before the join.
    pub nodes: usize,
    /// Cores per node.
    pub cores: u16,
    /// Shards.
    pub shards: u32,
    /// Keys loaded before the run.
    pub records: u64,
    /// Bytes per value.
    pub value_size: usize,
    /// Closed-loop client threads (half their operations are reads).
    pub clients: usize,
    /// The whole run.
    pub duration: Duration,
    /// When, into the run, the node joins.
    pub join_at: Duration,
    /// The servers' `--move-rate` (bytes per second per core).
    pub move_rate: u64,
    /// Per-request deadline.
    pub timeout: Duration,
    /// Seed of the key choices.
    pub seed: u64,
    /// Where to draw ops/s per second (SVG).
    pub plot: Option<PathBuf>,
    /// Where the cluster keeps its data (default: a temp dir).
    pub dir: Option<PathBuf>,
    /// Keep the data dir.
    pub keep: bool,
}

/// What the join scenario measured.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinReport {
    /// Operations completed in each second of the run.
    pub per_second: Vec<u64>,
    /// The second the node joined in.
    pub join_second: usize,
    /// Seconds from the join to a balanced placement (None: not within the run).
    pub time_to_balance: Option<f64>,
    /// Bytes the moves' targets received during the run before they voted:
    /// snapshots and the log entries after them.
    pub bytes_moved: u64,
    /// The part of `bytes_moved` that was log entries (a source ships its last
    /// compaction snapshot, then the log written since).
    pub move_log_bytes: u64,
    /// How many snapshots the moves' targets installed (one per move unless a
    /// target needed another).
    pub move_snapshots: u64,
    /// The store sizes the moves' first snapshots restored: the moved replicas'
    /// sizes when they moved (the plan's sizes plus what the load wrote into
    /// them since); a repeat snapshot does not add to it.
    pub move_store_bytes: u64,
    /// Snapshot bytes every replica installed during the run: the moves' and
    /// those of voters that fell behind a compacted log under the load.
    pub snapshot_bytes: u64,
    /// The fewest bytes a plan for the join sends between nodes, at the shards'
    /// sizes then (`plan::minimal_bytes_exact`).
    pub minimal_bytes: u64,
    /// The planner's bytes for its plan.
    pub planned_bytes: u64,
    /// Moves the plan had.
    pub planned_moves: usize,
    /// Errors the clients saw.
    pub errors: u64,
    /// Latency of the requests that succeeded, by the phase they started in:
    /// before the join, during the rebalance, after it.
    pub latency: [Latency; 3],
}

/// Latency figures of one phase, in microseconds (all 0 when no request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Latency {
    /// Requests that succeeded in the phase.
    pub requests: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// The slowest request.
    pub max_us: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            requests: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        }
    }

    /// "p50/p99/max" in ms, or "no request" (a run that never balanced has no
    /// "after").
    fn text(&self) -> String {
        if self.requests == 0 {
            return "no request".to_string();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        format!("{:.1}/{:.1}/{:.1}", ms(self.p50_us), ms(self.p99_us), ms(self.max_us))
    }
}

/// The phases of a run, as the clients' latency is kept.
const BEFORE: usize = 0;
const DURING: usize = 1;
const AFTER: usize = 2;

/// 1 µs to a minute: a request slower than that records as a minute.
fn latency_histograms() -> [Histogram<u64>; 3] {
    std::array::from_fn(|_| Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid"))
}

impl JoinReport {
    /// Mean ops/s over the whole seconds before the join (the first second, a
    /// ramp-up, left out when there are others).
    pub fn steady_rate(&self) -> f64 {
        let before = &self.per_second[..self.join_second.min(self.per_second.len())];
        let before = if before.len() > 1 { &before[1..] } else { before };
        mean(before)
    }

    /// The seconds of the rebalance (from the join to balance, or to the end).
    fn during(&self) -> &[u64] {
        let end = match self.time_to_balance {
            Some(t) => (self.join_second + t.ceil() as usize + 1).min(self.per_second.len()),
            None => self.per_second.len(),
        };
        &self.per_second[self.join_second.min(end)..end]
    }

    /// The report as text lines.
    pub fn lines(&self, move_rate: u64) -> Vec<String> {
        let per_second: Vec<String> = self.per_second.iter().map(u64::to_string).collect();
        let steady = self.steady_rate();
        let during = self.during();
        let ratio = |x: f64| if steady > 0.0 { x / steady } else { 0.0 };
        let lowest = during.iter().copied().min().unwrap_or(0) as f64;
        let mut lines = vec![
            format!("ops/s per second (join in second {}): {}", self.join_second, per_second.join(" ")),
            format!("steady rate before the join: {steady:.0} ops/s"),
            format!(
                "during the rebalance: mean {:.0} ops/s ({:.2} of steady), lowest second {lowest:.0} ({:.2}); goal >= 0.70",
                mean(during),
                ratio(mean(during)),
                ratio(lowest)
            ),
        ];
        let bound = 1.5 * self.minimal_bytes as f64 / move_rate.max(1) as f64;
        lines.push(match self.time_to_balance {
            Some(t) => format!("time to balance: {t:.2} s (goal <= 1.5 x minimal bytes / move rate = {bound:.2} s)"),
            None => "time to balance: not balanced within the run".to_string(),
        });
        let over = |n: u64, d: u64| if d > 0 { n as f64 / d as f64 } else { 0.0 };
        let snapshot_bytes = self.bytes_moved.saturating_sub(self.move_log_bytes);
        lines.push(format!(
            "bytes moved {} ({snapshot_bytes} in snapshots, {} of log after them) / minimal at the plan {} = {:.3} \
             (goal <= 1.05); the plan: {} moves, {} bytes",
            self.bytes_moved,
            self.move_log_bytes,
            self.minimal_bytes,
            over(self.bytes_moved, self.minimal_bytes),
            self.planned_moves,
            self.planned_bytes
        ));
        lines.push(format!(
            "{} snapshots for {} planned moves: {snapshot_bytes} bytes restoring stores of {} bytes = {:.3}; \
             bytes moved / those stores (the replicas' sizes when they moved) = {:.3}",
            self.move_snapshots,
            self.planned_moves,
            self.move_store_bytes,
            over(snapshot_bytes, self.move_store_bytes),
            over(self.bytes_moved, self.move_store_bytes),
        ));
        lines.push(format!(
            "snapshots installed by all replicas, lagging voters included: {} bytes",
            self.snapshot_bytes
        ));
        let [before, during, after] = &self.latency;
        lines.push(format!(
            "request latency p50/p99/max (ms): before the join {}, during the rebalance {}, after {}",
            before.text(),
            during.text(),
            after.text()
        ));
        lines.push(format!("client errors: {}", self.errors));
        lines
    }
}

fn mean(xs: &[u64]) -> f64 {
    if xs.is_empty() { 0.0 } else { xs.iter().sum::<u64>() as f64 / xs.len() as f64 }
}

/// Snapshots installed, summed over every core.
#[derive(Debug, Clone, Copy, Default)]
struct Installed {
    /// By moves' targets: bytes, count, and the store sizes they restored;
    /// then the log bytes they appended before they voted.
    move_bytes: u64,
    move_snapshots: u64,
    move_store_bytes: u64,
    move_log_bytes: u64,
    /// By every replica, bytes.
    all_bytes: u64,
}

impl Installed {
    fn of(stats: &[CoreStats]) -> Installed {
        stats.iter().fold(Installed::default(), |t, s| Installed {
            move_bytes: t.move_bytes + s.move_snapshot_bytes,
            move_snapshots: t.move_snapshots + s.move_snapshots,
            move_store_bytes: t.move_store_bytes + s.move_store_bytes,
            move_log_bytes: t.move_log_bytes + s.move_log_bytes,
            all_bytes: t.all_bytes + s.snapshot_bytes_installed,
        })
    }

    /// What was installed since `before`.
    fn since(self, before: Installed) -> Installed {
        Installed {
            move_bytes: self.move_bytes.saturating_sub(before.move_bytes),
            move_snapshots: self.move_snapshots.saturating_sub(before.move_snapshots),
            move_store_bytes: self.move_store_bytes.saturating_sub(before.move_store_bytes),
            move_log_bytes: self.move_log_bytes.saturating_sub(before.move_log_bytes),
            all_bytes: self.all_bytes.saturating_sub(before.all_bytes),
        }
    }
}

fn all_stats(client: &mut Client) -> Vec<CoreStats> {
    client.status().nodes.iter().flat_map(|n| &n.cores).filter_map(|c| c.stats).collect()
}

fn balanced(map: &ClusterMap, joined: u64) -> bool {
    map.node(joined).is_some() && !map.rebalance && map.groups().all(|s| map.outgoing(s).is_empty())
}

/// Runs the scenario (see the module header).
pub fn run(opts: &JoinOptions) -> Result<JoinReport, String> {
    let launch = LaunchOptions {
        nodes: opts.nodes,
        cores: opts.cores,
        shards: opts.shards,
        data_dir: opts.dir.clone(),
        keep: opts.keep,
        build_if_missing: true,
        // Shards compact their log into a snapshot every 64 KiB (the least the
        // server takes), so a new replica gets the data as a snapshot (what the
        // bytes moved count) and only a short tail of log.
        extra_args: vec![
            "--move-rate".into(),
            opts.move_rate.to_string(),
            "--snapshot-log-bytes".into(),
            (64u64 << 10).to_string(),
        ],
        ..LaunchOptions::default()
    };
    let mut cluster = LocalCluster::start(launch).map_err(|e| format!("cannot start the local cluster: {e}"))?;
    let mut config = ClientConfig::new(cluster.addrs());
    config.deadline = opts.timeout;
    let connect = |config: &ClientConfig| Client::connect(config.clone()).map_err(|e| format!("cannot connect: {e}"));

    // Load, from a few threads.
    let value = vec![b'v'; opts.value_size];
    let loaders = 4u64;
    let handles: Vec<_> = (0..loaders)
        .map(|t| {
            let (config, value, records) = (config.clone(), value.clone(), opts.records);
            std::thread::spawn(move || -> Result<(), String> {
                let mut client = Client::connect(config).map_err(|e| format!("cannot connect: {e}"))?;
                for i in (t..records).step_by(loaders as usize) {
                    client.put(format!("user{i:010}").as_bytes(), &value).map_err(|e| format!("load: {e}"))?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "a loader panicked".to_string())??;
    }

    let mut admin = connect(&config)?;
    let installed_before = Installed::of(&all_stats(&mut admin));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let phase = Arc::new(AtomicUsize::new(BEFORE));
    let workers: Vec<_> = (0..opts.clients)
        .map(|c| {
            let (stop, done, errors, phase) = (stop.clone(), done.clone(), errors.clone(), phase.clone());
            let (config, value, records) = (config.clone(), value.clone(), opts.records.max(1));
            let seed = opts.seed ^ (c as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            std::thread::spawn(move || -> Result<[Histogram<u64>; 3], String> {
                let mut client = Client::connect(config).map_err(|e| format!("cannot connect: {e}"))?;
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let mut latency = latency_histograms();
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("user{:010}", rng.random_range(0..records));
                    let (started, at) = (phase.load(Ordering::Relaxed), Instant::now());
                    let ok = if rng.random_bool(0.5) {
                        client.get(key.as_bytes(), None).is_ok()
                    } else {
                        client.put(key.as_bytes(), &value).is_ok()
                    };
                    if ok {
                        latency[started].saturating_record(at.elapsed().as_micros() as u64);
                    }
                    let counter = if ok { &done } else { &errors };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(latency)
            })
        })
        .collect();

    let start = Instant::now();
    // Its own thread reads the count at every whole second, so a slow call
    // below (starting the node, a status of every core) cannot shift operations
    // from one second into the next and draw a dip that did not happen.
    let sampler = {
        let (done, seconds) = (done.clone(), opts.duration.as_secs());
        std::thread::spawn(move || {
            let mut per_second = Vec::with_capacity(seconds as usize);
            let mut last = 0;
            for k in 1..=seconds {
                let at = start + Duration::from_secs(k);
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                let now = done.load(Ordering::Relaxed);
                per_second.push(now - last);
                last = now;
            }
            per_second
        })
    };
    let mut join_second = None;
    let mut joined_at = None;
    let mut joined_id = 0;
    let mut plan_figures = None;
    let mut time_to_balance = None;
    while start.elapsed() < opts.duration {
        std::thread::sleep(Duration::from_millis(100));
        if joined_at.is_none() && start.elapsed() >= opts.join_at {
            // The seconds wholly before the join.
            join_second = Some(start.elapsed().as_secs() as usize);
            phase.store(DURING, Ordering::Relaxed);
            joined_id = cluster.join_node().map_err(|e| format!("cannot start the joining node: {e}"))?;
            joined_at = Some(Instant::now());
        }
        let Some(at) = joined_at else { continue };
        if plan_figures.is_some() && time_to_balance.is_some() {
            continue;
        }
        if admin.refresh_map().is_err() {
            continue;
        }
        let map = admin.map().clone();
        if plan_figures.is_none() && map.node(joined_id).is_some() {
            // The plan the meta leader makes for the joined map, with each shard's
            // size as its replicas report it.
            let status = admin.status();
            let mut sizes = vec![0u64; map.shard_count() as usize];
            for s in status.nodes.iter().flat_map(|n| &n.cores).flat_map(|c| &c.shards) {
                if let Some(size) = sizes.get_mut(s.shard as usize) {
                    *size = (*size).max(s.bytes);
                }
            }
            let plan = drive::plan_for(&map, &Default::default(), |s| sizes[s as usize])
                .map_err(|e| format!("no plan for the joined map: {e}"))?;
            // A hand-off between two cores of one node sends no bytes between nodes.
            let moves: Vec<_> = plan.moves.iter().filter(|m| m.from.node != m.to.node).collect();
            let bytes = moves.iter().map(|m| m.bytes).sum();
            let minimal = drive::minimal_bytes_for(&map, &Default::default(), |s| sizes[s as usize])
                .map_err(|e| format!("no plan for the joined map: {e}"))?;
            plan_figures = Some((minimal, bytes, moves.len()));
        }
        if plan_figures.is_some() && time_to_balance.is_none() && balanced(&map, joined_id) {
            let held = map.shards.iter().filter(|s| s.replicas.iter().any(|r| r.node == joined_id)).count();
            if held > 0 || plan_figures.is_some_and(|p| p.2 == 0) {
                time_to_balance = Some(at.elapsed().as_secs_f64());
                phase.store(AFTER, Ordering::Relaxed);
            }
        }
    }
    let per_second = sampler.join().map_err(|_| "the sampler panicked".to_string())?;
    stop.store(true, Ordering::Relaxed);
    let mut latency = latency_histograms();
    for w in workers {
        let mine = w.join().map_err(|_| "a client panicked".to_string())??;
        for (all, one) in latency.iter_mut().zip(&mine) {
            all.add(one).map_err(|e| format!("latency histograms: {e}"))?;
        }
    }
    let installed = Installed::of(&all_stats(&mut admin)).since(installed_before);
    let (minimal_bytes, planned_bytes, planned_moves) = plan_figures.unwrap_or((0, 0, 0));
    let report = JoinReport {
        join_second: join_second.unwrap_or(per_second.len()),
        per_second,
        time_to_balance,
        bytes_moved: installed.move_bytes + installed.move_log_bytes,
        move_log_bytes: installed.move_log_bytes,
        move_snapshots: installed.move_snapshots,
        move_store_bytes: installed.move_store_bytes,
        snapshot_bytes: installed.all_bytes,
        minimal_bytes,
        planned_bytes,
        planned_moves,
        errors: errors.load(Ordering::Relaxed),
        latency: latency.each_ref().map(Latency::of),
    };
    if let Some(path) = &opts.plot {
        let points = report.per_second.iter().enumerate().map(|(i, &n)| (i as f64 + 1.0, n.max(1) as f64)).collect();
        let curve = Curve { label: format!("ops/s (node joins in second {})", report.join_second), points };
        let axes = Axes { title: "corekv: a node joins mid-run", x: "time (s)", y: "ops/s (log)", x_min: 0.0 };
        plot::draw_log_y(path, axes, &[curve])?;
    }
    cluster.stop();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_compares_the_rebalance_with_the_steady_rate() {
        let report = JoinReport {
            per_second: vec![50, 100, 100, 100, 60, 80, 100],
            join_second: 4,
            time_to_balance: Some(1.2),
            bytes_moved: 1155,
            move_log_bytes: 55,
            move_snapshots: 3,
            move_store_bytes: 1000,
            snapshot_bytes: 2000,
            minimal_bytes: 1000,
            planned_bytes: 1000,
            planned_moves: 3,
            errors: 0,
            latency: [
                Latency { requests: 10, p50_us: 1200, p99_us: 4500, max_us: 9000 },
                Latency { requests: 20, p50_us: 2000, p99_us: 9100, max_us: 1_950_000 },
                Latency::default(),
            ],
        };
        assert_eq!(report.steady_rate(), 100.0, "the ramp-up second is left out");
        assert_eq!(report.during(), &[60, 80, 100]);
        let lines = report.lines(1000);
        assert!(lines[2].contains("mean 80 ops/s (0.80 of steady), lowest second 60 (0.60)"), "{}", lines[2]);
        assert!(lines[3].contains("1.20 s (goal <= 1.5 x minimal bytes / move rate = 1.50 s)"), "{}", lines[3]);
        assert!(
            lines[4].starts_with(
                "bytes moved 1155 (1100 in snapshots, 55 of log after them) / minimal at the plan 1000 = 1.155 \
                 (goal <= 1.05)"
            ),
            "{}",
            lines[4]
        );
        assert!(
            lines[5]
                == "3 snapshots for 3 planned moves: 1100 bytes restoring stores of 1000 bytes = 1.100; \
                    bytes moved / those stores (the replicas' sizes when they moved) = 1.155",
            "{}",
            lines[5]
        );
        // A target that needed a second snapshot: bytes moved rise, sizes do not.
        let repeat = JoinReport { bytes_moved: 1595, move_snapshots: 4, ..report.clone() };
        let lines = repeat.lines(1000);
        assert!(lines[4].contains("= 1.595 (goal <= 1.05)"), "{}", lines[4]);
        assert!(lines[5].starts_with("4 snapshots for 3 planned moves: 1540 bytes"), "{}", lines[5]);
        assert!(lines[6].ends_with("lagging voters included: 2000 bytes"), "{}", lines[6]);
        assert_eq!(
            lines[7],
            "request latency p50/p99/max (ms): before the join 1.2/4.5/9.0, during the rebalance 2.0/9.1/1950.0, \
             after no request"
        );
    }

    #[test]
    fn latency_figures_come_from_the_recorded_requests() {
        let mut h = latency_histograms();
        for us in 1..=100 {
            h[DURING].record(us * 10).expect("in range");
        }
        let during = Latency::of(&h[DURING]);
        assert_eq!((during.requests, during.p50_us, during.max_us), (100, 500, 1000));
        assert!((990..=1000).contains(&during.p99_us), "{during:?}");
        assert_eq!(Latency::of(&h[BEFORE]), Latency::default(), "no request: zeros");
    }
}
