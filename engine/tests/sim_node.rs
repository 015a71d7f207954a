//! The node core proven in the whole-cluster simulator (DESIGN §11): clusters of
//! node cores with many Raft groups per core, clients that retry, and faults of
//! network, disk and clock. Each scenario runs 20 seeds (`CORE_SIM_SEEDS=<n>` for
//! more, `CORE_SEED=<s>` for one); every run checks the client history for
//! linearizability, compares replicas at equal applied indexes, and checks that
//! no acknowledged write is lost. A failure prints `CORE_SEED=<s>`, which
//! reproduces it exactly.
//!
//! The planted-bug tests show that these checks can fail: each plants a bug in
//! every node core and runs seeds until a check catches it.

use std::collections::BTreeSet;

use corekv_engine::node::PlantedBug;
use corekv_engine::placement::drive;
use corekv_engine::sim::cluster::{
    Cluster, ClusterConfig, ClusterStats, FailureKind, MoveStage, TxnCrashPoint, TxnCrashes,
};
use corekv_engine::sim::{DEFAULT_SEEDS, NetFaults, seed_list};
use corekv_rpc::map::{META_SHARD, NodeState, Replica};
use corekv_rpc::raft::NodeId;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seeds a planted-bug test may try before it declares the bug missed.
const PLANTED_SEEDS_MAX: u64 = 40;

/// Runs `scenario` for each seed and returns the counters of every run when at
/// least the default number of seeds ran (so that coverage can be asserted, and
/// a run of fewer seeds is not failed for missing a rare event). A failure names
/// the seed that reproduces it.
fn seeds(name: &str, scenario: impl Fn(u64) -> ClusterStats + std::panic::RefUnwindSafe) -> Vec<ClusterStats> {
    let list = seed_list(name);
    let mut all = Vec::new();
    for seed in &list {
        match std::panic::catch_unwind(|| scenario(*seed)) {
            Ok(stats) => all.push(stats),
            Err(panic) => {
                eprintln!("scenario {name} failed: rerun with CORE_SEED={seed}");
                std::panic::resume_unwind(panic);
            }
        }
    }
    if (list.len() as u64) < DEFAULT_SEEDS { Vec::new() } else { all }
}

fn sum(stats: &[ClusterStats], field: impl Fn(&ClusterStats) -> u64) -> u64 {
    stats.iter().map(field).sum()
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ 0x0de5)
}

/// Finishes the run and fails the test with the seed on any failed check.
fn finish(cluster: Cluster) -> ClusterStats {
    match cluster.finish() {
        Ok(report) => {
            assert!(report.stats.writes_acknowledged > 0, "no write was ever acknowledged");
            report.stats
        }
        Err(failure) => panic!("{failure}"),
    }
}

/// A lossy network: drops, duplicates, delays up to 20 ms and some 100–800 ms.
fn lossy() -> NetFaults {
    NetFaults {
        drop_prob: 0.1,
        dup_prob: 0.05,
        delay_us: (100, 20_000),
        long_delay_prob: 0.03,
        long_delay_us: (100_000, 800_000),
    }
}

fn random_node(r: &mut ChaCha8Rng, nodes: u64) -> NodeId {
    r.random_range(1..=nodes)
}

/// Rounds of partitions (one without any majority), isolations and link cuts,
/// each followed by a heal.
fn nemesis_partitions(c: &mut Cluster, r: &mut ChaCha8Rng, rounds: usize) {
    let nodes = c.node_ids();
    let n = nodes.len() as u64;
    for _ in 0..rounds {
        match r.random_range(0..5u32) {
            0 => {
                let victim = c.busiest_leader().unwrap_or_else(|| random_node(r, n));
                c.isolate(victim);
            }
            1 => {
                // A random minority on one side.
                let mut minority: Vec<NodeId> = Vec::new();
                while (minority.len() as u64) < (n - 1) / 2 {
                    let v = random_node(r, n);
                    if !minority.contains(&v) {
                        minority.push(v);
                    }
                }
                let majority: Vec<NodeId> = nodes.iter().copied().filter(|v| !minority.contains(v)).collect();
                c.partition(&[&minority, &majority]);
            }
            2 => {
                let a = random_node(r, n);
                let b = a % n + 1;
                c.cut(a, b);
            }
            3 => {
                // No majority anywhere: writes wait, proposed but uncommitted.
                let singletons: Vec<[NodeId; 1]> = nodes.iter().map(|&v| [v]).collect();
                let groups: Vec<&[NodeId]> = singletons.iter().map(|g| g.as_slice()).collect();
                c.partition(&groups);
            }
            _ => c.isolate(random_node(r, n)),
        }
        c.run_for(r.random_range(300..800));
        c.heal();
        c.run_for(r.random_range(100..400));
    }
}

/// Crashes one node at a time (often a leader), restarting it after a while.
fn nemesis_crashes(c: &mut Cluster, r: &mut ChaCha8Rng, rounds: usize) {
    let n = c.node_ids().len() as u64;
    for _ in 0..rounds {
        let victim = if r.random_bool(0.5) { c.busiest_leader().unwrap_or(1) } else { random_node(r, n) };
        c.run_for(r.random_range(50..300));
        c.crash(victim);
        c.run_for(r.random_range(100..600));
        c.restart(victim);
        c.run_for(r.random_range(100..300));
    }
}

/// Crashes every node at once, then restarts them all.
fn nemesis_crash_all(c: &mut Cluster, r: &mut ChaCha8Rng, rounds: usize) {
    for _ in 0..rounds {
        c.run_for(r.random_range(200..600));
        for node in c.node_ids() {
            c.crash(node);
        }
        c.run_for(r.random_range(10..300));
        for node in c.node_ids() {
            c.restart(node);
        }
    }
}

// ----- scenarios -----------------------------------------------------------------

#[test]
fn calm_three_nodes_of_two_cores() {
    seeds("calm", |seed| {
        let mut c = Cluster::new(ClusterConfig::new(seed, 3, 2));
        c.run_for(2_000);
        finish(c)
    });
}

#[test]
fn lossy_network_drops_duplicates_and_reorders() {
    let stats = seeds("lossy", |seed| {
        let mut cfg = ClusterConfig::new(seed, 3, 2);
        cfg.faults = lossy();
        cfg.client_faults = lossy();
        // Pipelined clients: retries of several writes of one client interleave.
        cfg.client_ops_in_flight_max = 3;
        let mut c = Cluster::new(cfg);
        c.run_for(2_500);
        finish(c)
    });
    if !stats.is_empty() {
        assert!(sum(&stats, |s| s.blind_write_retries) > 0, "lost replies must make clients retry writes");
        assert!(sum(&stats, |s| s.frames_lost) > 0);
    }
}

#[test]
fn partitions_and_heals() {
    let stats = seeds("partitions", |seed| {
        let mut r = rng(seed);
        let mut cfg = ClusterConfig::new(seed, 3, 2);
        // Short deadlines: writes stuck at a cut-off leader end indeterminate.
        cfg.request_deadline_ms = 600;
        let mut c = Cluster::new(cfg);
        c.run_for(300);
        nemesis_partitions(&mut c, &mut r, 3);
        finish(c)
    });
    if !stats.is_empty() {
        assert!(sum(&stats, |s| s.writes_indeterminate) > 0, "some writes must end with an unknown outcome");
    }
}

#[test]
fn crash_and_restart_one_node_at_a_time_with_torn_writes() {
    let stats = seeds("crash_one", |seed| {
        let mut r = rng(seed);
        let mut cfg = ClusterConfig::new(seed, 3, 2);
        cfg.faults = NetFaults { drop_prob: 0.02, dup_prob: 0.02, ..lossy() };
        let mut c = Cluster::new(cfg);
        c.run_for(300);
        nemesis_crashes(&mut c, &mut r, 3);
        finish(c)
    });
    if !stats.is_empty() {
        assert!(sum(&stats, |s| s.core_crashes_with_unsynced_writes) > 0, "crashes must hit unsynced writes");
    }
}

#[test]
fn crash_every_node_at_once_and_restart() {
    let stats = seeds("crash_all", |seed| {
        let mut r = rng(seed);
        let mut c = Cluster::new(ClusterConfig::new(seed, 3, 2));
        nemesis_crash_all(&mut c, &mut r, 3);
        c.run_for(500);
        finish(c)
    });
    if !stats.is_empty() {
        assert!(sum(&stats, |s| s.core_crashes_with_unsynced_writes) > 0, "crashes must hit unsynced writes");
    }
}

#[test]
fn skewed_and_drifting_clocks_with_lease_reads() {
    seeds("clock_skew", |seed| {
        let mut r = rng(seed);
        let mut cfg = ClusterConfig::new(seed, 3, 2);
        // Clocks 2% fast or slow and up to 5 s apart; leases keep a margin of 3
        // of their 10 ticks, far above what 2% drift eats.
        cfg.clock_drift_permille = 20;
        cfg.clock_offset_ms_max = 5_000;
        cfg.raft.lease_read = true;
        cfg.raft.lease_drift_margin_ticks = 3;
        let mut c = Cluster::new(cfg);
        c.run_for(300);
        nemesis_partitions(&mut c, &mut r, 2);
        nemesis_crashes(&mut c, &mut r, 1);
        finish(c)
    });
}

#[test]
fn five_nodes_with_partitions_and_crashes() {
    seeds("five_nodes", |seed| {
        let mut r = rng(seed);
        let mut cfg = ClusterConfig::new(seed, 5, 2);
        cfg.shards = 16;
        cfg.clients = 5;
        cfg.client_ops_in_flight_max = 2;
        cfg.faults = NetFaults { drop_prob: 0.02, ..lossy() };
        let mut c = Cluster::new(cfg);
        c.run_for(300);
        nemesis_partitions(&mut c, &mut r, 2);
        nemesis_crashes(&mut c, &mut r, 1);
        finish(c)
    });
}

#[test]
fn compaction_and_snapshot_install_to_a_lagging_or_restarted_node() {
    let stats = seeds("snapshots", |seed| {
        let mut r = rng(seed);
        let mut cfg = ClusterConfig::new(seed, 3, 1);
        cfg.snapshot_log_bytes = 1_024;
        cfg.clients = 5;
        cfg.think_us = (0, 5_000);
        let mut c = Cluster::new(cfg);
        c.run_for(300);
        // A node falls behind while the others compact, then catches up.
        let lagging = random_node(&mut r, 3);
        c.isolate(lagging);
        c.run_for(r.random_range(800..1_200));
        c.heal();
        c.run_for(400);
        // A node restarts from its snapshot files and its WAL.
        let restarted = random_node(&mut r, 3);
        c.crash(restarted);
        c.run_for(r.random_range(400..800));
        c.restart(restarted);
        c.run_for(400);
        finish(c)
    });
    if !stats.is_empty() {
        assert!(sum(&stats, |s| s.snapshots_taken) > 0, "groups must compact");
        assert!(sum(&stats, |s| s.snapshots_installed) > 0, "a lagging replica must install a snapshot");
    }
}

#[test]
fn every_fault_at_once() {
    seeds("chaos", |seed| {
        let mut r = rng(seed);
        let mut cfg = ClusterConfig::new(seed, 3, 2);
        cfg.faults = NetFaults { drop_prob: 0.03, dup_prob: 0.03, ..lossy() };
        cfg.client_faults = NetFaults { drop_prob: 0.05, ..lossy() };
        cfg.snapshot_log_bytes = 2_048;
        cfg.clock_drift_permille = 20;
        cfg.clock_offset_ms_max = 2_000;
        cfg.request_deadline_ms = 800;
        cfg.client_ops_in_flight_max = 2;
        let mut c = Cluster::new(cfg);
        c.run_for(300);
        nemesis_partitions(&mut c, &mut r, 2);
        nemesis_crashes(&mut c, &mut r, 2);
        nemesis_crash_all(&mut c, &mut r, 1);
        finish(c)
    });
}

#[test]
fn a_seed_reproduces_the_same_trace_and_history() {
    let run = |seed: u64| {
        let mut r = rng(seed);
        let mut cfg = ClusterConfig::new(seed, 3, 2);
        cfg.faults = lossy();
        cfg.client_faults = lossy();
        let mut c = Cluster::new(cfg);
        nemesis_crashes(&mut c, &mut r, 1);
        c.finish().unwrap_or_else(|f| panic!("{f}"))
    };
    let a = run(7);
    let b = run(7);
    assert_eq!(a.trace_hash, b.trace_hash, "one seed, one trace");
    assert_eq!(a.history, b.history, "one seed, one history");
    assert_ne!(run(8).trace_hash, a.trace_hash, "the trace hash reflects the run");
}

// ----- planted bugs --------------------------------------------------------------

/// Runs `scenario` with `bug` planted over up to [`PLANTED_SEEDS_MAX`] seeds and
/// asserts that some run failed one of `caught_by`.
fn planted(name: &str, bug: PlantedBug, caught_by: &[FailureKind], scenario: impl Fn(ClusterConfig) -> Cluster) {
    let base = name.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut misses = Vec::new();
    for seed in (0..PLANTED_SEEDS_MAX).map(|i| base.wrapping_add(i)) {
        let mut cfg = ClusterConfig::new(seed, 3, 2);
        cfg.planted_bug = bug;
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(cfg).finish()));
        match run {
            Ok(Err(failure)) if caught_by.contains(&failure.kind) => {
                eprintln!("planted {bug:?} caught: {failure}");
                return;
            }
            Ok(Err(failure)) => misses.push(format!("{:?}", failure.kind)),
            Ok(Ok(_)) => misses.push("passed".into()),
            Err(_) => misses.push("panicked".into()),
        }
    }
    panic!("planted {bug:?} was never caught by {caught_by:?} in {PLANTED_SEEDS_MAX} seeds: {misses:?}");
}

#[test]
fn planted_read_without_read_index_is_not_linearizable() {
    planted("plant_read", PlantedBug::ReadWithoutReadIndex, &[FailureKind::NotLinearizable], |cfg| {
        let mut r = rng(cfg.seed);
        let mut c = Cluster::new(cfg);
        c.run_for(300);
        nemesis_partitions(&mut c, &mut r, 2);
        c
    });
}

#[test]
fn planted_retry_applied_twice_is_not_linearizable() {
    planted("plant_retry", PlantedBug::RetryAppliedTwice, &[FailureKind::NotLinearizable], |mut cfg| {
        // Lost replies make clients resend writes that were applied.
        cfg.client_faults = NetFaults { drop_prob: 0.2, ..NetFaults::reliable() };
        let mut c = Cluster::new(cfg);
        c.run_for(1_500);
        c
    });
}

#[test]
fn planted_ack_before_fsync_loses_acknowledged_writes() {
    let caught_by = [FailureKind::AckedWriteLost, FailureKind::NotLinearizable, FailureKind::Diverged];
    planted("plant_fsync", PlantedBug::AckBeforeFsync, &caught_by, |mut cfg| {
        // Slow fdatasyncs widen the window in which an acknowledged entry is only
        // in memory; whole-cluster crashes then lose it.
        cfg.fsync_us = (5_000, 40_000);
        let mut r = rng(cfg.seed);
        let mut c = Cluster::new(cfg);
        nemesis_crash_all(&mut c, &mut r, 3);
        c
    });
}

// ----- transactions ----------------------------------------------------------------

/// A cluster with bank clients beside the key-value clients, under `policy`.
fn bank_config(seed: u64, nodes: u64, policy: corekv_rpc::txn::Policy) -> ClusterConfig {
    let mut cfg = ClusterConfig::new(seed, nodes, 2);
    cfg.clients = 2;
    cfg.txn_clients = 4;
    cfg.accounts = 6;
    cfg.txn_policy = policy;
    cfg
}

/// The policy a seed runs under: every policy gets a quarter of the seeds.
fn policy_of(seed: u64) -> corekv_rpc::txn::Policy {
    corekv_rpc::txn::Policy::ALL[(seed % 4) as usize]
}

#[test]
fn bank_transfers_commit_serializably_on_a_calm_cluster() {
    let stats = seeds("bank-calm", |seed| {
        let mut c = Cluster::new(bank_config(seed, 3, policy_of(seed)));
        c.run_for(2_000);
        finish(c)
    });
    if !stats.is_empty() {
        assert!(sum(&stats, |s| s.txns.committed) > 100, "transfers commit");
        assert!(sum(&stats, |s| s.txns.audits) > 10, "audits run");
        let scans = sum(&stats, |s| s.txns.scan_audits);
        assert!(scans > 5, "scanning audits commit");
    }
}

#[test]
fn bank_transfers_stay_serializable_through_crashes_and_partitions() {
    let stats = seeds("bank-faults", |seed| {
        let mut r = rng(seed);
        let mut cfg = bank_config(seed, 3, policy_of(seed));
        cfg.faults = NetFaults { drop_prob: 0.03, dup_prob: 0.03, ..lossy() };
        cfg.client_faults = NetFaults { drop_prob: 0.03, ..lossy() };
        cfg.clock_offset_ms_max = 200;
        let mut c = Cluster::new(cfg);
        c.run_for(300);
        nemesis_crashes(&mut c, &mut r, 2);
        nemesis_partitions(&mut c, &mut r, 1);
        nemesis_crash_all(&mut c, &mut r, 1);
        finish(c)
    });
    if !stats.is_empty() {
        assert!(sum(&stats, |s| s.txns.committed) > 50, "transfers commit");
        assert!(sum(&stats, |s| s.txns.aborted) > 0, "faults abort some");
    }
}

#[test]
fn bank_transfers_survive_a_crash_at_every_step_of_two_phase_commit() {
    // Seeds take turns over the steps (and, independently, the policies).
    let stats = seeds("bank-2pc-crash", |seed| {
        let mut cfg = bank_config(seed, 3, policy_of(seed));
        let point = TxnCrashPoint::ALL[((seed / 4) % 4) as usize];
        cfg.txn_crashes = Some(TxnCrashes { point, chance_percent: 30, max: 3, down_ms: (50, 400) });
        cfg.clock_offset_ms_max = 100;
        let mut c = Cluster::new(cfg);
        c.run_for(3_000);
        finish(c)
    });
    if !stats.is_empty() {
        assert!(stats.iter().all(|s| s.txn_step_crashes > 0), "every run crashes at its step");
        assert!(sum(&stats, |s| s.txns.committed) > 100, "transfers commit");
    }
}

#[test]
fn bank_transfers_on_five_nodes() {
    seeds("bank-five", |seed| {
        let mut r = rng(seed);
        let mut c = Cluster::new(bank_config(seed, 5, policy_of(seed)));
        c.run_for(300);
        nemesis_crashes(&mut c, &mut r, 1);
        finish(c)
    });
}

/// A bank run for the planted transaction bugs: contention on few accounts.
fn planted_bank(policy: corekv_rpc::txn::Policy) -> impl Fn(ClusterConfig) -> Cluster {
    move |mut cfg| {
        cfg.clients = 1;
        cfg.txn_clients = 6;
        cfg.accounts = 4;
        cfg.txn_policy = policy;
        let mut c = Cluster::new(cfg);
        c.run_for(2_000);
        c
    }
}

#[test]
fn planted_skipped_validation_is_not_serializable() {
    let caught_by = [FailureKind::NotSerializable, FailureKind::BankTotal];
    planted("plant_occ", PlantedBug::SkipTxnValidation, &caught_by, planted_bank(corekv_rpc::txn::Policy::Occ));
}

#[test]
fn planted_skipped_range_validation_lets_a_scanning_audit_see_half_a_transfer() {
    let caught_by = [FailureKind::NotSerializable, FailureKind::BankTotal];
    planted("plant_range", PlantedBug::SkipRangeValidation, &caught_by, planted_bank(corekv_rpc::txn::Policy::Occ));
}

#[test]
fn planted_split_commit_version_is_caught() {
    let caught_by = [FailureKind::NotSerializable, FailureKind::BankTotal];
    planted(
        "plant_split",
        PlantedBug::SplitCommitVersion,
        &caught_by,
        planted_bank(corekv_rpc::txn::Policy::WoundWait),
    );
}

#[test]
fn planted_forgetting_a_prepared_transaction_on_a_leader_change_is_caught() {
    // Its locks stay until the abort applies: the history must show it.
    let caught_by = [FailureKind::NotSerializable, FailureKind::BankTotal];
    planted("plant_forget", PlantedBug::ForgetPreparedOnLeaderChange, &caught_by, |mut cfg| {
        cfg.clients = 1;
        cfg.txn_clients = 6;
        cfg.accounts = 4;
        cfg.txn_policy = corekv_rpc::txn::Policy::WoundWait;
        let mut r = rng(cfg.seed);
        let mut c = Cluster::new(cfg);
        c.run_for(300);
        nemesis_crashes(&mut c, &mut r, 3);
        c
    });
}

#[test]
fn planted_releasing_locks_before_the_decision_is_caught() {
    let caught_by = [FailureKind::TxnLocksLost];
    planted(
        "plant_release",
        PlantedBug::ReleaseLocksBeforeDecision,
        &caught_by,
        planted_bank(corekv_rpc::txn::Policy::WaitDie),
    );
}

#[test]
fn planted_read_past_an_intent_is_caught() {
    let caught_by = [FailureKind::NotSerializable, FailureKind::BankTotal];
    planted("plant_intent", PlantedBug::ReadPastIntent, &caught_by, planted_bank(corekv_rpc::txn::Policy::WoundWait));
}

// ----- replica moves -----------------------------------------------------------------

/// `placed` nodes holding the shards and `spare` empty ones (the last ids), with
/// logs compacted often, so that moves ship snapshots.
fn move_config(seed: u64, placed: u64, spare: u64) -> ClusterConfig {
    let mut cfg = ClusterConfig::new(seed, placed + spare, 2);
    cfg.spare_nodes = spare;
    cfg.snapshot_log_bytes = 2 << 10;
    cfg
}

/// The core a shard's moved replica gets on its target: spread over the cores.
fn target(node: NodeId, shard: u32) -> Replica {
    Replica { node, core: (shard % 2) as u16 }
}

/// Moves shard `shard`'s replica off `from` onto `to`, failing the test on a refusal.
fn start_move(c: &mut Cluster, shard: u32, from: NodeId, to: NodeId) {
    c.move_replica(shard, from, target(to, shard)).unwrap_or_else(|e| panic!("move of shard {shard}: {e}"));
}

/// Runs the cluster until the newest map wants `shard` on `node` (the meta group
/// wrote the move), for at most two simulated seconds.
fn until_map_shows(c: &mut Cluster, shard: u32, node: NodeId) {
    for _ in 0..2_000 {
        if c.shards_of(node).contains(&shard) {
            return;
        }
        c.run_for(1);
    }
    panic!("the map never showed shard {shard} on node {node}");
}

fn moves_counted(stats: &[ClusterStats]) {
    if stats.is_empty() {
        return;
    }
    let started = sum(stats, |s| s.moves_started);
    assert!(started > 0);
    // Each move is written to the map twice (begun, then settled: `finish` checks
    // that none is left under way).
    assert!(sum(stats, |s| s.meta_writes) >= 2 * started, "the meta group writes every move");
    assert!(sum(stats, |s| s.replicas_dropped) >= started, "every source deletes its replica");
    assert!(sum(stats, |s| s.snapshots_installed) > 0, "moves ship snapshots");
}

#[test]
fn a_new_node_takes_replicas_under_load_and_the_sources_delete_theirs() {
    let stats = seeds("move_join", |seed| {
        let mut r = rng(seed);
        let mut c = Cluster::new(move_config(seed, 3, 1));
        c.run_for(500);
        // Two shards at once, each from a random one of its replicas (often the leader).
        for shard in [0, 5] {
            let from = c.map().replicas(shard)[r.random_range(0..3)].node;
            start_move(&mut c, shard, from, 4);
        }
        c.run_for(1_500);
        assert_eq!(c.shards_of(4), vec![0, 5]);
        finish(c)
    });
    moves_counted(&stats);
}

#[test]
fn a_leader_moves_away_by_handing_leadership_over_first() {
    let stats = seeds("move_leader", |seed| {
        let mut c = Cluster::new(move_config(seed, 3, 1));
        c.run_for(500);
        for shard in [1, 2, 3] {
            let from = c.leader_of(shard).unwrap_or(c.map().replicas(shard)[0].node);
            start_move(&mut c, shard, from, 4);
        }
        c.run_for(1_500);
        finish(c)
    });
    moves_counted(&stats);
}

#[test]
fn a_drained_node_hands_every_replica_over_through_crashes_and_a_lossy_network() {
    let stats = seeds("move_drain", |seed| {
        let mut r = rng(seed);
        let mut cfg = move_config(seed, 3, 1);
        cfg.faults = NetFaults { drop_prob: 0.03, dup_prob: 0.02, ..lossy() };
        cfg.client_faults = lossy();
        let mut c = Cluster::new(cfg);
        c.run_for(300);
        for shard in c.shards_of(1) {
            start_move(&mut c, shard, 1, 4);
            c.run_for(r.random_range(0..150));
        }
        nemesis_crashes(&mut c, &mut r, 2);
        assert!(c.shards_of(1).is_empty());
        finish(c)
    });
    moves_counted(&stats);
}

#[test]
fn moves_survive_a_crash_of_either_side_at_every_step() {
    let stages = [MoveStage::Planned, MoveStage::Learner, MoveStage::Promoted, MoveStage::SourceRemoved];
    let stats = seeds("move_crash_steps", |seed| {
        let mut r = rng(seed);
        // Every (step, side) pair gets its share of the seeds.
        let stage = stages[(seed % 4) as usize];
        let crash_source = (seed / 4).is_multiple_of(2);
        let mut cfg = move_config(seed, 3, 1);
        cfg.faults = NetFaults { drop_prob: 0.02, ..NetFaults::reliable() };
        let mut c = Cluster::new(cfg);
        c.run_for(400);
        let shard = (seed % 8) as u32;
        let from = c.map().replicas(shard)[r.random_range(0..3)].node;
        start_move(&mut c, shard, from, 4);
        // Step the cluster until the move reaches the stage (a move may pass one
        // between two looks: then the crash hits the next).
        let mut waited = 0;
        while c.move_stage(shard, 4).is_none_or(|s| s < stage) && waited < 3_000 {
            c.run_for(1);
            waited += 1;
        }
        let victim = if crash_source { from } else { 4 };
        c.crash(victim);
        c.run_for(r.random_range(50..500));
        c.restart(victim);
        c.run_for(800);
        finish(c)
    });
    moves_counted(&stats);
}

#[test]
fn a_move_whose_target_dies_is_turned_around_or_re_replicated() {
    let stats = seeds("move_revert", |seed| {
        let mut r = rng(seed);
        let mut c = Cluster::new(move_config(seed, 3, 1));
        c.run_for(400);
        let shard = (seed % 8) as u32;
        let from = c.map().replicas(shard)[r.random_range(0..3)].node;
        start_move(&mut c, shard, from, 4);
        until_map_shows(&mut c, shard, 4);
        c.run_for(r.random_range(0..60));
        c.crash(4);
        if c.move_stage(shard, 4) != Some(MoveStage::Settled) {
            c.revert_move(shard, 4).unwrap_or_else(|e| panic!("revert: {e}"));
            c.run_for(1_000);
        }
        if c.move_stage(shard, 4) == Some(MoveStage::Settled) {
            // Too late to turn around (settled before the crash, or the shard's
            // report that it is done reached the meta group before the revert):
            // the dead target's replica is re-created on the node it came from,
            // from the two survivors.
            start_move(&mut c, shard, 4, from);
        }
        c.run_for(1_000);
        assert!(c.shards_of(4).is_empty());
        assert!(c.moves_settled(), "a dead node does not hold a move up");
        // The target comes back (finish restarts it) and drops what it had.
        finish(c)
    });
    if !stats.is_empty() {
        assert!(sum(&stats, |s| s.moves_reverted) > 0);
        assert!(sum(&stats, |s| s.meta_writes) >= 2 * sum(&stats, |s| s.moves_started));
    }
}

#[test]
fn transactions_keep_committing_while_their_shards_move() {
    let stats = seeds("move_bank", |seed| {
        let mut r = rng(seed);
        let mut cfg = bank_config(seed, 4, policy_of(seed));
        cfg.spare_nodes = 1;
        cfg.snapshot_log_bytes = 2 << 10;
        let mut c = Cluster::new(cfg);
        c.run_for(400);
        for shard in c.shards_of(2) {
            start_move(&mut c, shard, 2, 4);
            c.run_for(r.random_range(50..300));
        }
        c.run_for(1_000);
        finish(c)
    });
    moves_counted(&stats);
    if !stats.is_empty() {
        assert!(sum(&stats, |s| s.txns.committed) > 0);
    }
}

#[test]
fn planted_kept_replica_data_is_caught() {
    planted("plant_keep", PlantedBug::KeepMovedReplicaData, &[FailureKind::Placement], |mut cfg| {
        cfg.nodes = 4;
        cfg.spare_nodes = 1;
        cfg.snapshot_log_bytes = 2 << 10;
        let mut c = Cluster::new(cfg);
        c.run_for(500);
        for shard in c.shards_of(1) {
            start_move(&mut c, shard, 1, 4);
        }
        c.run_for(1_500);
        c
    });
}

#[test]
fn the_meta_group_moves_too_and_survives_its_leader_crashing_mid_move() {
    let stats = seeds("move_meta", |seed| {
        let mut r = rng(seed);
        let mut c = Cluster::new(move_config(seed, 3, 1));
        c.run_for(400);
        // The meta group's replica on its leader's node goes to the spare node,
        // and a shard moves at the same time.
        let meta_leader = c.leader_of(META_SHARD).unwrap_or(1);
        c.move_replica(META_SHARD, meta_leader, Replica { node: 4, core: 0 })
            .unwrap_or_else(|e| panic!("move of the meta group: {e}"));
        let shard = (seed % 8) as u32;
        let from = c.map().replicas(shard)[r.random_range(0..3)].node;
        if from != 4 && !c.shards_of(4).contains(&shard) {
            start_move(&mut c, shard, from, 4);
        }
        c.run_for(r.random_range(0..200));
        // Whoever leads the meta group now dies for a while.
        let victim = c.leader_of(META_SHARD).unwrap_or(meta_leader);
        c.crash(victim);
        c.run_for(r.random_range(200..600));
        c.restart(victim);
        c.run_for(800);
        assert!(c.map().replicas(META_SHARD).iter().any(|r| r.node == 4));
        finish(c)
    });
    moves_counted(&stats);
}

/// Hands shard `shard`'s replica on `node` to that node's other core.
fn relocate_to_other_core(c: &mut Cluster, shard: u32, node: NodeId) -> Replica {
    let core = c.map().replicas(shard).iter().find(|r| r.node == node).expect("a replica there").core;
    let to = Replica { node, core: 1 - core };
    c.relocate(shard, to).unwrap_or_else(|e| panic!("hand-off of shard {shard}: {e}"));
    to
}

#[test]
fn replicas_change_cores_under_load_through_crashes_at_any_moment() {
    let stats = seeds("handoff", |seed| {
        let mut r = rng(seed);
        let mut cfg = move_config(seed, 3, 0);
        cfg.faults = NetFaults { drop_prob: 0.02, dup_prob: 0.01, ..NetFaults::reliable() };
        let mut c = Cluster::new(cfg);
        c.run_for(400);
        // Two shards: one handed over by its leader's node (the leader hands
        // leadership over first), one by a random replica's node.
        let first = (seed % 8) as u32;
        let second = (first + 1 + (seed / 8 % 7) as u32) % 8;
        let leader = c.leader_of(first).unwrap_or(1);
        let a = relocate_to_other_core(&mut c, first, leader);
        let other = c.map().replicas(second)[r.random_range(0..3)].node;
        let b = relocate_to_other_core(&mut c, second, other);
        // Half the seeds crash one of the two nodes at a random moment of its
        // hand-off (both of its cores go down: source and target).
        if seed % 2 == 0 {
            // A hand-off takes a few milliseconds: most crashes land inside one.
            c.run_for(r.random_range(0..30));
            let victim = if r.random_bool(0.5) { a.node } else { b.node };
            c.crash(victim);
            c.run_for(r.random_range(50..400));
            c.restart(victim);
        }
        let done = |c: &Cluster| {
            c.moves_settled() && c.map().replicas(first).contains(&a) && c.map().replicas(second).contains(&b)
        };
        for _ in 0..4_000 {
            if done(&c) {
                break;
            }
            c.run_for(1);
        }
        assert!(done(&c), "the hand-offs end: {:?}", c.map());
        c.run_for(300);
        finish(c)
    });
    if !stats.is_empty() {
        assert!(sum(&stats, |s| s.moves_started) > 0);
        assert!(sum(&stats, |s| s.replicas_dropped) > 0, "every source deletes its replica");
    }
}

/// A replica handed back and forth between its node's cores, the node
/// crashing at random moments: a core may restart holding an older copy, or
/// the state it installed for a hand-off the meta group has ended already.
#[test]
fn a_replica_handed_back_and_forth_through_crashes_keeps_its_data() {
    let stats = seeds("handoff_back_and_forth", |seed| {
        let mut r = rng(seed);
        let mut cfg = move_config(seed, 3, 0);
        cfg.faults = NetFaults { drop_prob: 0.02, ..NetFaults::reliable() };
        let mut c = Cluster::new(cfg);
        c.run_for(300);
        let shard = (seed % 8) as u32;
        let node = c.map().replicas(shard)[r.random_range(0..3)].node;
        for _ in 0..4 {
            let to = relocate_to_other_core(&mut c, shard, node);
            if r.random_bool(0.6) {
                c.run_for(r.random_range(0..40));
                c.crash(node);
                c.run_for(r.random_range(20..200));
                c.restart(node);
            }
            until_map(&mut c, "the hand-off done", |m| {
                m.replicas(shard).contains(&to) && m.handoff_of(shard).is_none()
            });
            c.run_for(r.random_range(0..100));
        }
        c.run_for(500);
        finish(c)
    });
    if !stats.is_empty() {
        assert!(sum(&stats, |s| s.replicas_dropped) > 0, "the sources delete their replicas");
    }
}

#[test]
fn a_single_replica_shard_changes_cores_and_keeps_its_data() {
    let stats = seeds("handoff_single", |seed| {
        let mut r = rng(seed);
        let mut cfg = ClusterConfig::new(seed, 1, 2);
        cfg.replication = 1;
        cfg.snapshot_log_bytes = 2 << 10;
        let mut c = Cluster::new(cfg);
        c.run_for(300);
        // The only replica leads: it stops as it is, and its target elects itself.
        let shard = r.random_range(0..8u32);
        let to = relocate_to_other_core(&mut c, shard, 1);
        if seed % 2 == 0 {
            c.run_for(r.random_range(0..30));
            c.crash(1);
            c.run_for(r.random_range(50..300));
            c.restart(1);
        }
        until_map(&mut c, "the hand-off done", |m| m.replicas(shard).contains(&to) && m.handoff_of(shard).is_none());
        c.run_for(500);
        finish(c)
    });
    if !stats.is_empty() {
        assert!(sum(&stats, |s| s.replicas_dropped) > 0, "the source deletes its replica");
    }
}

/// Writes commit with a shard's leader and the node about to hand its replica
/// over while the third replica is cut off; the leader dies as the hand-off
/// starts and the third comes back: the new leader must have those writes.
fn hand_off_as_the_leader_dies(cfg: ClusterConfig) -> Cluster {
    let mut r = rng(cfg.seed);
    let mut c = Cluster::new(cfg);
    c.run_for(400);
    let shard = r.random_range(0..8u32);
    let leader = c.leader_of(shard).unwrap_or(1);
    let others: Vec<NodeId> = c.map().replicas(shard).iter().map(|r| r.node).filter(|&n| n != leader).collect();
    let (mut handing, mut behind) = if r.random_bool(0.5) { (others[0], others[1]) } else { (others[1], others[0]) };
    // The simulator hands edits to the first meta replica: it must not be the
    // one cut off.
    if c.map().members(META_SHARD).next().is_some_and(|m| m.node == behind) {
        (handing, behind) = (behind, handing);
    }
    c.isolate(behind);
    c.run_for(r.random_range(200..400));
    let to = relocate_to_other_core(&mut c, shard, handing);
    until_map(&mut c, "the hand-off", |m| m.handoff_of(shard).is_some() || m.replicas(shard).contains(&to));
    c.run_for(r.random_range(5..60));
    c.crash(leader);
    c.heal();
    c.run_for(r.random_range(400..800));
    c.restart(leader);
    c.run_for(800);
    c
}

#[test]
fn a_hand_off_as_the_leader_dies_and_a_lagging_replica_returns_loses_nothing() {
    seeds("handoff_leader_dies", |seed| finish(hand_off_as_the_leader_dies(ClusterConfig::new(seed, 3, 2))));
}

/// A hand-off must carry the source's log after its snapshot: a target without
/// the entries its source acknowledged (and the leader counted) leads without
/// them in [`hand_off_as_the_leader_dies`].
#[test]
fn planted_hand_off_without_the_log_tail_is_caught() {
    let caught_by = [FailureKind::AckedWriteLost, FailureKind::NotLinearizable, FailureKind::Diverged];
    planted("plant_handoff", PlantedBug::HandoffWithoutLogTail, &caught_by, hand_off_as_the_leader_dies);
}

// ----- nodes join, drain, die and leave; the meta leader plans the moves -----------

/// `founders` nodes holding the shards and `joining` ones outside the map (the
/// last ids), automatic rebalancing on, logs compacted often (moves ship
/// snapshots).
fn elastic_config(seed: u64, founders: u64, joining: u64) -> ClusterConfig {
    let mut cfg = ClusterConfig::new(seed, founders + joining, 2);
    cfg.joining_nodes = joining;
    cfg.auto_rebalance = true;
    cfg.snapshot_log_bytes = 2 << 10;
    cfg
}

/// The nodes the newest map wants for `shard`.
fn nodes_of(c: &Cluster, shard: u32) -> BTreeSet<NodeId> {
    c.map().replicas(shard).iter().map(|r| r.node).collect()
}

/// Runs until the newest map satisfies `shows` (the meta group took a request),
/// for at most five simulated seconds.
fn until_map(c: &mut Cluster, what: &str, shows: impl Fn(&corekv_rpc::map::ClusterMap) -> bool) {
    for _ in 0..500 {
        if shows(c.map()) {
            return;
        }
        c.run_for(10);
    }
    panic!("the map never showed {what}");
}

fn state_of(c: &Cluster, node: NodeId) -> Option<NodeState> {
    c.map().node(node).map(|n| n.state)
}

/// Runs until the meta leader declares the silent `node` dead, for at most 20
/// simulated seconds.
fn until_dead(c: &mut Cluster, node: NodeId) {
    for _ in 0..2_000 {
        if state_of(c, node) == Some(NodeState::Dead) {
            return;
        }
        c.run_for(10);
    }
    panic!("node {node} was never declared dead after its silence");
}

/// The meta leader moved replicas on its own: written, shipped, deleted.
fn auto_moves_counted(stats: &[ClusterStats]) {
    if stats.is_empty() {
        return;
    }
    assert!(sum(stats, |s| s.replicas_dropped) > 0, "sources delete their replicas");
    assert!(sum(stats, |s| s.snapshots_installed) > 0, "moves ship snapshots");
    let moved = sum(stats, |s| s.move_snapshot_bytes);
    assert!(moved > 0 && moved <= sum(stats, |s| s.snapshot_bytes_installed), "moves' bytes are counted apart");
    assert!(sum(stats, |s| s.move_snapshots) > 0, "moves' snapshots are counted");
    assert!(sum(stats, |s| s.move_store_bytes) > 0, "so are the sizes they restored");
    assert!(sum(stats, |s| s.move_log_bytes) > 0, "and the log the targets caught up from");
    assert!(sum(stats, |s| s.meta_writes) > 2 * stats.len() as u64, "the meta group writes the moves");
}

/// Runs until no move is under way and the planner has none left to make, for at
/// most `ms` simulated milliseconds.
fn until_balanced(c: &mut Cluster, ms: u64) {
    let none_left = |c: &Cluster| {
        let plan = drive::plan_for(c.map(), &BTreeSet::new(), |_| 0).expect("a plan");
        c.moves_settled() && plan.moves.iter().all(|m| m.from.node == m.to.node)
    };
    for _ in 0..ms / 10 {
        if none_left(c) {
            return;
        }
        c.run_for(10);
    }
    panic!("not balanced after {ms} ms: {:?}", c.map().shards);
}

#[test]
fn a_node_joins_under_load_and_a_crash_and_only_replicas_onto_it_move() {
    let stats = seeds("elastic_join", |seed| {
        let mut r = rng(seed);
        let mut cfg = elastic_config(seed, 3, 1);
        cfg.faults = NetFaults { drop_prob: 0.02, dup_prob: 0.01, ..NetFaults::reliable() };
        let mut c = Cluster::new(cfg);
        c.run_for(300);
        let before: Vec<BTreeSet<NodeId>> = (0..8).map(|s| nodes_of(&c, s)).collect();
        c.join(4);
        until_map(&mut c, "node 4", |m| m.node(4).is_some());
        c.run_for(r.random_range(0..400));
        nemesis_crashes(&mut c, &mut r, 1);
        until_balanced(&mut c, 30_000);
        // 24 replicas over four nodes of two cores: six each.
        assert_eq!(c.shards_of(4).len(), 6, "the new node holds its share");
        for (s, before) in before.iter().enumerate() {
            let after = nodes_of(&c, s as u32);
            assert!(after.difference(before).all(|&n| n == 4), "shard {s}: {before:?} -> {after:?}");
        }
        // Leaders follow, by transfer: eight shards, two led by each node.
        until_leaders_balanced(&mut c, 20_000);
        for node in 1..=4 {
            assert_eq!((0..8).filter(|&s| c.leader_of(s) == Some(node)).count(), 2, "node {node} leads its share");
        }
        finish(c)
    });
    auto_moves_counted(&stats);
}

/// Runs until the rebalance is over (its last step, the leader picks, applied)
/// and every shard is led by the replica the map puts first, for at most `ms`
/// simulated milliseconds.
fn until_leaders_balanced(c: &mut Cluster, ms: u64) {
    let done = |c: &Cluster| {
        !c.map().rebalance
            && (0..c.map().shard_count()).all(|s| c.leader_of(s) == c.map().replicas(s).first().map(|r| r.node))
    };
    for _ in 0..ms / 10 {
        if done(c) {
            return;
        }
        c.run_for(10);
    }
    let leaders: Vec<_> = (0..c.map().shard_count()).map(|s| c.leader_of(s)).collect();
    panic!("leaders not balanced after {ms} ms: {leaders:?}, map {:?}", c.map().shards);
}

/// The meta group's voters, as its leader's configuration says.
fn meta_voters(c: &Cluster) -> Option<BTreeSet<NodeId>> {
    let conf = c.leader_conf(META_SHARD)?;
    conf.learners.is_empty().then(|| conf.voters.iter().copied().collect())
}

/// Runs until the meta group's configuration is exactly the map's replicas,
/// for at most `ms` simulated milliseconds.
fn until_meta_settled(c: &mut Cluster, ms: u64) -> BTreeSet<NodeId> {
    for _ in 0..ms / 10 {
        let wanted: BTreeSet<NodeId> = c.map().replicas(META_SHARD).iter().map(|r| r.node).collect();
        if c.map().outgoing(META_SHARD).is_empty() && meta_voters(c).as_ref() == Some(&wanted) {
            return wanted;
        }
        c.run_for(10);
    }
    panic!("the meta group never matched the map: {:?} vs {:?}", meta_voters(c), c.map().meta);
}

#[test]
fn the_meta_group_grows_to_five_when_a_fifth_node_joins_and_shrinks_to_three_when_one_dies() {
    let stats = seeds("elastic_meta", |seed| {
        let mut r = rng(seed);
        let mut cfg = elastic_config(seed, 4, 1);
        cfg.dead_after_ticks = 600;
        cfg.faults = NetFaults { drop_prob: 0.02, dup_prob: 0.01, ..NetFaults::reliable() };
        let mut c = Cluster::new(cfg);
        c.run_for(300);
        assert_eq!(c.map().replicas(META_SHARD).len(), 3, "four nodes: three meta replicas");
        c.join(5);
        until_map(&mut c, "node 5", |m| m.node(5).is_some());
        c.run_for(r.random_range(0..300));
        nemesis_crashes(&mut c, &mut r, 1);
        until_balanced(&mut c, 30_000);
        until_map(&mut c, "five meta replicas", |m| m.replicas(META_SHARD).len() == 5);
        assert_eq!(until_meta_settled(&mut c, 20_000), (1..=5).collect());
        // A meta node dies for good: four live nodes, three meta replicas, none
        // on it; its shards are re-created on the others.
        let victim = 2 + seed % 4;
        c.crash(victim);
        until_dead(&mut c, victim);
        until_balanced(&mut c, 40_000);
        until_map(&mut c, "three meta replicas", |m| m.replicas(META_SHARD).len() == 3);
        let voters = until_meta_settled(&mut c, 20_000);
        assert!(!voters.contains(&victim), "{voters:?}");
        assert!(c.shards_of(victim).is_empty(), "every replica re-created elsewhere");
        finish(c)
    });
    auto_moves_counted(&stats);
}

/// Every running core's WAL holds at most two segments above what it allows
/// (the snapshots it takes land one batch later; the current segment fills
/// meanwhile); answers the most live segments seen.
fn wal_within_target(c: &Cluster) -> usize {
    let mut most = 0;
    for (core, live, allowed) in c.wal_segments() {
        assert!(live <= allowed + 2, "{core:?}: {live} live WAL segments, {allowed} allowed");
        most = most.max(live);
    }
    most
}

#[test]
fn every_wal_stays_within_its_segment_target_through_load_and_a_join_however_quiet_its_groups() {
    let stats = seeds("wal_bounded", |seed| {
        let mut r = rng(seed);
        let mut cfg = elastic_config(seed, 3, 1);
        // Four groups of a core may log 4 × 16 KiB × 2 before the WAL (128 KiB
        // segments) asks for more than its four segments: the meta group, quiet
        // after the join's edits, never reaches 16 KiB by itself.
        cfg.snapshot_log_bytes = 16 << 10;
        let mut c = Cluster::new(cfg);
        let mut most = 0;
        for _ in 0..30 {
            c.run_for(100);
            most = most.max(wal_within_target(&c));
        }
        c.join(4);
        until_map(&mut c, "node 4", |m| m.node(4).is_some());
        nemesis_crashes(&mut c, &mut r, 1);
        for _ in 0..100 {
            c.run_for(100);
            most = most.max(wal_within_target(&c));
        }
        until_balanced(&mut c, 30_000);
        most = most.max(wal_within_target(&c));
        eprintln!("seed {seed}: at most {most} live WAL segments on a core");
        finish(c)
    });
    if !stats.is_empty() {
        assert!(sum(&stats, |s| s.snapshots_for_wal) > 0, "quiet groups were snapshotted for the WAL's sake");
    }
}

#[test]
fn a_drained_node_ends_empty_through_a_lossy_network_and_is_removed() {
    let stats = seeds("elastic_drain", |seed| {
        let mut r = rng(seed);
        let mut cfg = elastic_config(seed, 4, 0);
        cfg.faults = NetFaults { drop_prob: 0.03, dup_prob: 0.02, ..lossy() };
        cfg.client_faults = lossy();
        let mut c = Cluster::new(cfg);
        c.run_for(300);
        // Node 1 holds a meta replica: it moves too.
        let victim = 1 + seed % 2;
        c.drain(victim).unwrap_or_else(|e| panic!("drain: {e}"));
        until_map(&mut c, "the drain", |m| m.node(victim).is_some_and(|n| n.state == NodeState::Draining));
        assert!(c.remove(victim, false).is_err(), "not drained yet: refused");
        c.run_for(r.random_range(0..300));
        c.heal();
        until_balanced(&mut c, 30_000);
        assert!(c.shards_of(victim).is_empty());
        assert!(c.map().members(META_SHARD).all(|r| r.node != victim), "{:?}", c.map().meta);
        c.remove(victim, false).unwrap_or_else(|e| panic!("remove after the drain: {e}"));
        until_map(&mut c, "the removal", |m| m.node(victim).is_some_and(|n| n.state == NodeState::Removed));
        finish(c)
    });
    auto_moves_counted(&stats);
}

#[test]
fn a_node_that_stays_down_is_declared_dead_its_replicas_re_created_then_it_is_removed_by_force() {
    let stats = seeds("elastic_death", |seed| {
        let mut r = rng(seed);
        let mut cfg = elastic_config(seed, 4, 0);
        cfg.dead_after_ticks = 600;
        let mut c = Cluster::new(cfg);
        c.run_for(300);
        let victim = 2 + seed % 3;
        c.crash(victim);
        c.run_for(r.random_range(0..200));
        nemesis_crashes_sparing(&mut c, &mut r, victim);
        until_dead(&mut c, victim);
        until_balanced(&mut c, 40_000);
        assert!(c.shards_of(victim).is_empty(), "every replica re-created elsewhere");
        assert!((0..8).all(|s| nodes_of(&c, s).len() == 3));
        c.remove(victim, true).unwrap_or_else(|e| panic!("remove --force: {e}"));
        until_map(&mut c, "the removal", |m| m.node(victim).is_some_and(|n| n.state == NodeState::Removed));
        // `finish` restarts the removed node: it holds nothing and gets nothing.
        finish(c)
    });
    auto_moves_counted(&stats);
}

/// One crash and restart of a node other than `spared` (which stays down).
fn nemesis_crashes_sparing(c: &mut Cluster, r: &mut ChaCha8Rng, spared: NodeId) {
    let others: Vec<NodeId> = c.node_ids().into_iter().filter(|&n| n != spared).collect();
    let victim = others[r.random_range(0..others.len())];
    c.crash(victim);
    c.run_for(r.random_range(100..500));
    c.restart(victim);
}
