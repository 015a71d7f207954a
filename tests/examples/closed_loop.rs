//! A simple closed-loop driver until `corekv-bench` exists: starts a local
//! cluster, measures its idle CPU use, then runs `--clients` threads each putting
//! 128-byte values in a loop for `--seconds`, and reports throughput with the
//! servers' own counters: ops per fdatasync and frames per peer message.
//!
//! ```sh
//! cargo build --release -p corekv-engine --bin corekv-server
//! COREKV_SERVER_BIN=target/release/corekv-server \
//!   cargo run --release -p corekv-tests --example closed_loop -- --clients 32 --seconds 10
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use corekv_rpc::node::CoreStats;
use corekv_tests::local;
use corekv_tools::launcher::{LaunchOptions, LocalCluster};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Clock ticks of CPU (user + system) a process used, from /proc.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ") ".
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12) // utime, stime (fields 14 and 15 of the full line)
}

fn sum(stats: &[CoreStats], f: impl Fn(&CoreStats) -> u64) -> u64 {
    stats.iter().map(f).sum()
}

fn main() {
    let clients = arg("--clients", 32);
    let seconds = arg("--seconds", 10);
    let nodes = arg("--nodes", 3);
    let options = LaunchOptions { nodes: nodes as usize, cores: 2, build_if_missing: true, ..LaunchOptions::default() };
    let mut cluster = LocalCluster::start(options).expect("the cluster starts and every shard has a leader");
    std::thread::sleep(Duration::from_secs(3)); // leader balancing settles

    let idle_secs = 10;
    let pids: Vec<u32> = (1..=nodes).map(|n| cluster.pid(n).expect("running")).collect();
    let before: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p)).collect();
    std::thread::sleep(Duration::from_secs(idle_secs));
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    for ((node, &pid), b) in (1..).zip(&pids).zip(&before) {
        let used = (cpu_ticks(pid) - b) as f64 / ticks_per_sec;
        println!("idle: node {node} used {:.2}% of one CPU", 100.0 * used / idle_secs as f64);
    }

    let mut probe = local::connect(&cluster, Duration::from_secs(20));
    let start_stats = local::core_stats(&probe.status());
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let mut client = local::connect(&cluster, Duration::from_secs(20));
            let (stop, done) = (stop.clone(), done.clone());
            std::thread::spawn(move || {
                let value = vec![b'v'; 128];
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("c{c}-k{}", i % 1000);
                    client.put(key.as_bytes(), &value).expect("put");
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("client thread");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let end_stats = local::core_stats(&probe.status());
    let ops = done.load(Ordering::Relaxed);
    let delta = |f: &dyn Fn(&CoreStats) -> u64| sum(&end_stats, f) - sum(&start_stats, f);
    let fdatasyncs = delta(&|s| s.wal_fdatasyncs);
    let batches = delta(&|s| s.wal_batches);
    let entries = delta(&|s| s.raft_entries_persisted);
    let frames = delta(&|s| s.peer_frames_sent);
    let messages = delta(&|s| s.peer_messages_sent);
    let cpu_ns = delta(&|s| s.cpu_ns);
    println!("load: {clients} clients, {ops} puts in {elapsed:.1} s = {:.0} ops/s", ops as f64 / elapsed);
    println!(
        "      fdatasyncs (all nodes) {fdatasyncs}: {:.2} ops per fdatasync",
        ops as f64 / fdatasyncs.max(1) as f64
    );
    println!(
        "      WAL batches (all nodes) {batches} holding {entries} entries: {:.2} entries per batch",
        entries as f64 / batches.max(1) as f64
    );
    println!(
        "      peer frames {frames} for {messages} messages: {:.3} frames per message",
        frames as f64 / messages.max(1) as f64
    );
    println!(
        "      server core CPU {:.2} s: {:.0} ops per CPU-second",
        cpu_ns as f64 / 1e9,
        ops as f64 / (cpu_ns as f64 / 1e9)
    );
    cluster.stop();
}
