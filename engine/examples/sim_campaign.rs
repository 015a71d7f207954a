//! A long randomized simulator campaign: many seeds, each a 5-node cluster under
//! a random mix of faults (unreliable network with long reordering, partitions,
//! crashes and restarts of single nodes or of every node, snapshots, reads at
//! deposed leaders, a leader transfer), checked by the simulator's invariants.
//!
//! `cargo run --release -p corekv-engine --example sim_campaign -- --seeds 200`
//! prints one line per failing seed (`CORE_SEED=<n>`) and a summary; exit code 1
//! when any seed failed. `--first-seed N` picks where the seeds start.

use std::time::Instant;

use corekv_engine::sim::{NetFaults, Sim, SimConfig};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Outcome {
    acked: usize,
    reads: u64,
    elections: usize,
    sim_ms: u64,
}

fn campaign(seed: u64) -> Outcome {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let mut cfg = SimConfig::new(seed, 5);
    cfg.snapshot_every = r.random_range(5..50);
    cfg.snapshot_padding_bytes = r.random_range(0..5000);
    cfg.faults = match r.random_range(0..3) {
        0 => NetFaults::reliable(),
        1 => NetFaults::unreliable(),
        _ => NetFaults::unreliable_long_reordering(),
    };
    cfg.raft.lease_read = r.random_bool(0.5);
    let mut sim = Sim::new(cfg);
    for _ in 0..30 {
        let until = sim.now_ms() + r.random_range(50..500);
        while sim.now_ms() < until {
            let _ = sim.propose();
            if let Some(l) = sim.leader() {
                sim.read_at(l);
            }
            sim.run_for(r.random_range(1..20));
        }
        let n = r.random_range(1..=5);
        match r.random_range(0..8) {
            0 if sim.is_up(n) => sim.crash(n),
            1 if !sim.is_up(n) => sim.restart(n),
            2 => sim.isolate(n),
            3 => sim.partition(&[&[1, 2, 3], &[4, 5]]),
            4 => {
                for id in 1..=5 {
                    if sim.is_up(id) {
                        sim.crash(id);
                    }
                }
                for id in 1..=5 {
                    sim.restart(id);
                }
            }
            5 => {
                let _ = sim.transfer_leader(n);
            }
            _ => sim.heal(),
        }
    }
    sim.finish(20_000);
    Outcome { acked: sim.acked_count(), reads: sim.reads_served(), elections: sim.leader_terms(), sim_ms: sim.now_ms() }
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            eprintln!("{name} needs a number");
            std::process::exit(2);
        }),
        None => default,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: sim_campaign [--seeds N (200)] [--first-seed S (1)]");
        return;
    }
    let seeds = arg(&args, "--seeds", 200);
    let first = arg(&args, "--first-seed", 1);
    std::panic::set_hook(Box::new(|_| {})); // failures are reported below, one line each
    let started = Instant::now();
    let (mut failed, mut acked, mut reads, mut elections, mut sim_ms) = (Vec::new(), 0, 0, 0, 0);
    for seed in first..first + seeds {
        match std::panic::catch_unwind(|| campaign(seed)) {
            Ok(o) => {
                acked += o.acked;
                reads += o.reads;
                elections += o.elections;
                sim_ms += o.sim_ms;
            }
            Err(e) => {
                let msg = e.downcast_ref::<String>().cloned().unwrap_or_else(|| "panic".into());
                println!("FAILED CORE_SEED={seed}: {msg}");
                failed.push(seed);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{seeds} seeds in {secs:.1} s ({:.1} seeds/s, {:.0}x real time): {} failed; \
         {acked} commands acknowledged, {reads} linearizable reads checked, {elections} leader terms",
        seeds as f64 / secs,
        sim_ms as f64 / 1000.0 / secs,
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
