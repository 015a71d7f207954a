//! What a run measured: per operation kind an hdrhistogram of latencies, counts and
//! errors by outcome word; the server-side figures from the `stats` counters; the
//! table users read and the JSON machines read.
//!
//! Counting rules: every operation that ends inside the measured window (after the
//! warm-up) counts, whatever its outcome; its latency (from the intended send time
//! in open loop) goes into its kind's histogram. Throughput counts only operations
//! that succeeded; the others are listed by outcome word.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use corekv_rpc::node::CoreStats;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::workload::OpKind;

/// Longest latency a histogram holds exactly (longer ones are clamped to it).
const LATENCY_NS_MAX: u64 = 120_000_000_000;

/// The latencies and outcomes of one kind of operation.
#[derive(Debug, Clone)]
pub struct KindStats {
    /// Latencies in ns, every outcome.
    pub latency: Histogram<u64>,
    /// Operations that succeeded.
    pub ok: u64,
    /// The others, by outcome word.
    pub errors: BTreeMap<&'static str, u64>,
}

impl Default for KindStats {
    fn default() -> Self {
        KindStats {
            latency: Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("static histogram bounds are valid"),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }
}

/// What one executor recorded.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    kinds: BTreeMap<OpKind, KindStats>,
}

impl Recorder {
    /// One operation of `kind` that took `latency` and ended `outcome` (`Ok` or the
    /// outcome word).
    pub fn record(&mut self, kind: OpKind, latency: Duration, outcome: Result<(), &'static str>) {
        let stats = self.kinds.entry(kind).or_default();
        let ns = (latency.as_nanos() as u64).clamp(1, LATENCY_NS_MAX);
        stats.latency.saturating_record(ns);
        match outcome {
            Ok(()) => stats.ok += 1,
            Err(word) => *stats.errors.entry(word).or_insert(0) += 1,
        }
    }

    /// Adds `other`'s records.
    pub fn merge(&mut self, other: &Recorder) {
        for (kind, theirs) in &other.kinds {
            let ours = self.kinds.entry(*kind).or_default();
            ours.latency.add(&theirs.latency).expect("histograms of equal bounds add");
            ours.ok += theirs.ok;
            for (word, n) in &theirs.errors {
                *ours.errors.entry(word).or_insert(0) += n;
            }
        }
    }

    /// Operations recorded, any outcome.
    pub fn count(&self) -> u64 {
        self.kinds.values().map(|k| k.latency.len()).sum()
    }

    /// Operations that succeeded.
    pub fn ok(&self) -> u64 {
        self.kinds.values().map(|k| k.ok).sum()
    }

    /// Operations that did not succeed.
    pub fn errors(&self) -> u64 {
        self.count() - self.ok()
    }

    /// The 99th percentile over every kind, in ns (0 when empty).
    pub fn p99_ns(&self) -> u64 {
        let mut all = KindStats::default().latency;
        for k in self.kinds.values() {
            all.add(&k.latency).expect("histograms of equal bounds add");
        }
        if all.is_empty() { 0 } else { all.value_at_quantile(0.99) }
    }

    /// The per-kind stats.
    pub fn kinds(&self) -> &BTreeMap<OpKind, KindStats> {
        &self.kinds
    }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpRow {
    /// `read`, `update`, `insert`, `scan`, `rmw`.
    pub op: &'static str,
    /// Operations ended in the window, any outcome.
    pub count: u64,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Latency percentiles and maximum, in µs.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Maximum.
    pub max_us: f64,
    /// Unsuccessful operations by outcome word.
    pub errors: BTreeMap<&'static str, u64>,
}

/// Server-side figures: the difference of the `stats` counters of every core
/// between the start and the end of the measured window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerFigures {
    /// Cores that answered both times.
    pub cores: usize,
    /// WAL fdatasyncs.
    pub fdatasyncs: u64,
    /// Successful client operations per fdatasync.
    pub ops_per_fdatasync: f64,
    /// Successful writes per fdatasync (group commit at work).
    pub writes_per_fdatasync: f64,
    /// WAL bytes written per successful operation.
    pub wal_bytes_per_op: f64,
    /// Peer frames per peer message (below 1: batching).
    pub frames_per_message: f64,
    /// Server CPU seconds, all cores of all nodes.
    pub cpu_seconds: f64,
    /// Successful operations per server CPU-second.
    pub ops_per_cpu_second: f64,
}

impl ServerFigures {
    /// The figures of the window `before..after` (matched by node and core), for
    /// `ops` successful operations of which `writes` wrote.
    pub fn from_counters(before: &[CoreStats], after: &[CoreStats], ops: u64, writes: u64) -> ServerFigures {
        let mut delta = CoreStats::default();
        let mut cores = 0;
        for a in after {
            let Some(b) = before.iter().find(|b| b.node == a.node && b.core == a.core) else { continue };
            cores += 1;
            delta.wal_fdatasyncs += a.wal_fdatasyncs.saturating_sub(b.wal_fdatasyncs);
            delta.wal_bytes += a.wal_bytes.saturating_sub(b.wal_bytes);
            delta.peer_frames_sent += a.peer_frames_sent.saturating_sub(b.peer_frames_sent);
            delta.peer_messages_sent += a.peer_messages_sent.saturating_sub(b.peer_messages_sent);
            delta.cpu_ns += a.cpu_ns.saturating_sub(b.cpu_ns);
        }
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let cpu_seconds = delta.cpu_ns as f64 / 1e9;
        ServerFigures {
            cores,
            fdatasyncs: delta.wal_fdatasyncs,
            ops_per_fdatasync: ratio(ops as f64, delta.wal_fdatasyncs as f64),
            writes_per_fdatasync: ratio(writes as f64, delta.wal_fdatasyncs as f64),
            wal_bytes_per_op: ratio(delta.wal_bytes as f64, ops as f64),
            frames_per_message: ratio(delta.peer_frames_sent as f64, delta.peer_messages_sent as f64),
            cpu_seconds,
            ops_per_cpu_second: ratio(ops as f64, cpu_seconds),
        }
    }
}

/// A whole run's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// What ran against what (`corekv 3 nodes`, `etcd://…`).
    pub target: String,
    /// The workload's name.
    pub workload: String,
    /// Closed-loop clients.
    pub clients: usize,
    /// Requests in flight per client.
    pub inflight: usize,
    /// Open-loop offered rate (ops/s), if any.
    pub rate: Option<f64>,
    /// Length of the measured window, in seconds.
    pub seconds: f64,
    /// Successful operations per second, all kinds.
    pub ops_per_sec: f64,
    /// Operations that did not succeed.
    pub errors: u64,
    /// Per kind.
    pub ops: Vec<OpRow>,
    /// Server-side figures (corekv targets only).
    pub server: Option<ServerFigures>,
}

impl Report {
    /// Builds the report of `recorder` over a window of `elapsed`.
    pub fn new(
        target: String,
        workload: String,
        (clients, inflight, rate): (usize, usize, Option<f64>),
        recorder: &Recorder,
        elapsed: Duration,
        server: Option<ServerFigures>,
    ) -> Report {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let us = |ns: u64| ns as f64 / 1000.0;
        let ops = recorder
            .kinds()
            .iter()
            .map(|(kind, s)| OpRow {
                op: kind.name(),
                count: s.latency.len(),
                ops_per_sec: s.ok as f64 / seconds,
                p50_us: us(s.latency.value_at_quantile(0.50)),
                p90_us: us(s.latency.value_at_quantile(0.90)),
                p99_us: us(s.latency.value_at_quantile(0.99)),
                p999_us: us(s.latency.value_at_quantile(0.999)),
                max_us: us(s.latency.max()),
                errors: s.errors.clone(),
            })
            .collect();
        Report {
            target,
            workload,
            clients,
            inflight,
            rate,
            seconds,
            ops_per_sec: recorder.ok() as f64 / seconds,
            errors: recorder.errors(),
            ops,
            server,
        }
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let pacing = match self.rate {
            Some(rate) => format!("open loop at {rate:.0} ops/s, {} workers", self.clients * self.inflight),
            None => format!("closed loop, {} clients × {} in flight", self.clients, self.inflight),
        };
        let _ = writeln!(out, "{} on {}: {pacing}, {:.1} s measured", self.workload, self.target, self.seconds);
        let _ = writeln!(
            out,
            "{:<8} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}  errors",
            "op", "count", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for row in &self.ops {
            let errors = if row.errors.is_empty() {
                "-".to_string()
            } else {
                row.errors.iter().map(|(w, n)| format!("{w}={n}")).collect::<Vec<_>>().join(" ")
            };
            let _ = writeln!(
                out,
                "{:<8} {:>9} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}  {errors}",
                row.op,
                row.count,
                row.ops_per_sec,
                row.p50_us / 1000.0,
                row.p90_us / 1000.0,
                row.p99_us / 1000.0,
                row.p999_us / 1000.0,
                row.max_us / 1000.0
            );
        }
        let _ = writeln!(out, "total    {:>9.0} ops/s, {} errors", self.ops_per_sec, self.errors);
        if let Some(s) = &self.server {
            let _ = writeln!(
                out,
                "server   {} fdatasyncs ({:.2} ops, {:.2} writes each), {:.0} WAL bytes/op, {:.3} frames/message, \
                 {:.2} CPU s, {:.0} ops per server CPU-second ({} cores)",
                s.fdatasyncs,
                s.ops_per_fdatasync,
                s.writes_per_fdatasync,
                s.wal_bytes_per_op,
                s.frames_per_message,
                s.cpu_seconds,
                s.ops_per_cpu_second,
                s.cores
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_counts_percentiles_and_errors() {
        let mut r = Recorder::default();
        for i in 1..=100u64 {
            r.record(OpKind::Read, Duration::from_micros(i * 10), Ok(()));
        }
        r.record(OpKind::Update, Duration::from_millis(5), Err("unavailable"));
        r.record(OpKind::Update, Duration::from_millis(1), Ok(()));
        assert_eq!((r.count(), r.ok(), r.errors()), (102, 101, 1));
        let report = Report::new("t".into(), "w".into(), (1, 1, None), &r, Duration::from_secs(2), None);
        let read = report.ops.iter().find(|o| o.op == "read").unwrap();
        assert_eq!(read.count, 100);
        assert!((read.ops_per_sec - 50.0).abs() < 1e-9);
        assert!((read.p50_us - 500.0).abs() < 2.0, "{}", read.p50_us);
        assert!((read.max_us - 1000.0).abs() < 2.0, "{}", read.max_us);
        let update = report.ops.iter().find(|o| o.op == "update").unwrap();
        assert_eq!(update.errors.get("unavailable"), Some(&1));
        assert!(report.table().contains("unavailable=1"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["ops"][0]["op"], "read");

        let mut merged = Recorder::default();
        merged.merge(&r);
        merged.merge(&r);
        assert_eq!(merged.count(), 204);
    }

    #[test]
    fn server_figures_are_counter_differences() {
        let core = |node, fsyncs, bytes, frames, messages, cpu_ns| CoreStats {
            node,
            core: 0,
            wal_fdatasyncs: fsyncs,
            wal_bytes: bytes,
            peer_frames_sent: frames,
            peer_messages_sent: messages,
            cpu_ns,
            ..CoreStats::default()
        };
        let before = [core(1, 10, 1000, 5, 10, 1_000_000_000), core(2, 0, 0, 0, 0, 0)];
        let after = [core(1, 20, 5000, 10, 30, 3_000_000_000), core(2, 10, 4000, 5, 10, 1_000_000_000)];
        let f = ServerFigures::from_counters(&before, &after, 400, 100);
        assert_eq!((f.cores, f.fdatasyncs), (2, 20));
        assert!((f.ops_per_fdatasync - 20.0).abs() < 1e-9);
        assert!((f.writes_per_fdatasync - 5.0).abs() < 1e-9);
        assert!((f.wal_bytes_per_op - 20.0).abs() < 1e-9);
        assert!((f.frames_per_message - 10.0 / 30.0).abs() < 1e-9);
        assert!((f.cpu_seconds - 3.0).abs() < 1e-9);
        assert!((f.ops_per_cpu_second - 400.0 / 3.0).abs() < 1e-9);
    }
}
