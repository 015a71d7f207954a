//! Linearizability under faults, with real `corekv-server` processes (DESIGN §6,
//! §11): clients on their own threads do random get / put / delete / cas on a few
//! hot keys while a nemesis kills shard leaders and random nodes with kill -9,
//! hangs nodes with SIGSTOP, and restarts every node at once. Once the nemesis
//! stops and every shard has a leader again, a final read of every key joins the
//! history, and `corekv_engine::check` must find the whole history linearizable:
//! every acknowledged write stays, no read sees a value out of order, an
//! `unavailable` write never took effect, and an `indeterminate` one took effect
//! at most once.
//!
//! The test fails when the checker finds a violation (printing the failing key's
//! history shrunk to the operations that prove it) and when it cannot decide
//! (budget spent); and it asserts that the history is worth checking: enough
//! writes and reads succeeded and every kind of fault happened.
//!
//! `COREKV_E2E_SEED` reruns a failure's choices; `COREKV_E2E_LONG=N` runs N
//! times as many fault rounds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use corekv_engine::check::Outcome;
use corekv_tests::history::{Recorder, Tally, check_linearizable};
use corekv_tests::nemesis::{FaultKind, Nemesis, Plan};
use corekv_tests::workload::{ClientLoop, ClientReport};
use corekv_tests::{knobs, local};

/// Concurrent clients (threads), each one client id with one request at a time.
const CLIENTS: u64 = 8;
/// Hot keys: few enough that clients collide on them all the time.
const KEYS: usize = 6;
/// Most client requests' deadline, retries included: long enough to ride out
/// most faults (the client retries with the same write tag).
const CLIENT_DEADLINE: Duration = Duration::from_secs(3);
/// Some requests' deadline (drawn from this range): short enough that a fault
/// makes them give up, which leaves indeterminate writes in the history.
const SHORT_DEADLINE: (Duration, Duration) = (Duration::from_millis(20), Duration::from_millis(1500));
/// Percentage of requests with a short deadline.
const SHORT_PERCENT: u32 = 50;
/// Longest pause of a client between operations: keeps the history at a size
/// the checker decides in seconds.
const THINK_MAX: Duration = Duration::from_millis(4);
/// Fault rounds per run (times `COREKV_E2E_LONG`): at least one of each kind.
const ROUNDS: usize = 8;
/// The final reads run on a healed cluster: generous.
const FINAL_READ_DEADLINE: Duration = Duration::from_secs(20);
/// A bound on one fault round (warm-up, gap, hold, restart), far above the plan's
/// own times: a nemesis stuck longer is stopped and the test fails.
const ROUND_BOUND: Duration = Duration::from_secs(40);

fn plan(seed: u64, hot_shards: Vec<u32>) -> Plan {
    Plan {
        seed,
        rounds: ROUNDS * knobs::scale() as usize,
        hot_shards,
        warmup: Duration::from_secs(2),
        gap: (Duration::from_millis(1500), Duration::from_secs(3)),
        hold: (Duration::from_secs(2), Duration::from_secs(4)),
    }
}

fn linearizable_under_faults(nodes: usize) {
    let seed = knobs::seed();
    eprintln!("{nodes} nodes, seed {seed}: rerun with {}", knobs::rerun_hint(seed));
    let cluster = local::start(nodes, 64);
    let dump = cluster.dir().join("history.txt");
    let keys: Arc<Vec<Vec<u8>>> = Arc::new((0..KEYS).map(|i| format!("hot-{i}").into_bytes()).collect());
    let status_client = local::connect(&cluster, CLIENT_DEADLINE);
    let hot_shards = keys.iter().map(|key| status_client.map().shard_of(key)).collect();
    let plan = plan(seed, hot_shards);
    let rounds = plan.rounds;
    let recorder = Arc::new(Recorder::new());
    let stop = Arc::new(AtomicBool::new(false));

    let workers: Vec<_> = (0..CLIENTS)
        .map(|index| {
            let mut client = local::connect(&cluster, CLIENT_DEADLINE);
            let (keys, recorder, stop) = (keys.clone(), recorder.clone(), stop.clone());
            std::thread::spawn(move || {
                let seed = seed.wrapping_add(index + 1);
                let work = ClientLoop {
                    index,
                    keys: &keys,
                    seed,
                    think_max: THINK_MAX,
                    deadline: CLIENT_DEADLINE,
                    short_deadline: SHORT_DEADLINE,
                    short_percent: SHORT_PERCENT,
                    recorder: &recorder,
                    stop: &stop,
                };
                work.run(&mut client)
            })
        })
        .collect();
    let nemesis = Nemesis::start(cluster, status_client, plan, recorder.clone());
    let bound = ROUND_BOUND * (rounds as u32 + 1);
    let started = Instant::now();
    while !nemesis.is_finished() && started.elapsed() < bound {
        std::thread::sleep(Duration::from_millis(100));
    }
    let timed_out = !nemesis.is_finished();
    let ending = nemesis.stop();
    stop.store(true, Ordering::Release);
    let reports: Vec<ClientReport> = workers.into_iter().map(|w| w.join().expect("a client thread panicked")).collect();
    let mut cluster = ending.cluster;
    let faults: Vec<String> = ending.faults.iter().map(ToString::to_string).collect();
    let faults_text = faults.join("\n  ");
    eprintln!("faults:\n  {faults_text}");
    assert!(ending.error.is_none(), "the nemesis failed: {:?} (seed {seed})", ending.error);
    assert!(!timed_out, "the nemesis did not finish {rounds} rounds within {bound:?} (seed {seed})");

    // Healed: every shard has a leader its replicas agree on; then every key is
    // read once more, into the same history.
    cluster.wait_ready(local::READY_WITHIN).expect("the cluster heals once the nemesis stops");
    let mut reader = local::connect(&cluster, FINAL_READ_DEADLINE);
    for key in keys.iter() {
        let outcome = recorder.read(CLIENTS, key, || reader.get(key, None)).expect("a get answers as a get");
        assert_ne!(outcome, Outcome::Unavailable, "a healed cluster serves the final read of {key:?} (seed {seed})");
    }

    let ops = recorder.ops();
    let tally = Tally::of(&ops);
    eprintln!("{tally}; client threads did {:?} operations", reports.iter().map(|r| r.ops).collect::<Vec<_>>());
    let violations: Vec<&String> = reports.iter().flat_map(|r| &r.violations).collect();
    assert!(violations.is_empty(), "answers no correct cluster gives (seed {seed}): {violations:#?}");

    let check_started = Instant::now();
    let verdict = check_linearizable(&ops, &dump);
    eprintln!("checked {} operations in {:?}", ops.len(), check_started.elapsed());
    if let Err(report) = verdict {
        panic!("{report}\n{tally}\nfaults:\n  {faults_text}\nseed {seed}: rerun with {}", knobs::rerun_hint(seed));
    }

    // Not vacuous: the clients got plenty done, faults caught some of their
    // requests, and every kind of fault happened.
    assert!(tally.ok_writes >= 100 && tally.ok_cas >= 10, "too few writes succeeded: {tally} (seed {seed})");
    assert!(tally.ok_reads() >= 100 && tally.reads_with_value >= 30, "too few reads succeeded: {tally} (seed {seed})");
    assert!(tally.indeterminate + tally.unavailable > 0, "no request was caught by a fault: {tally} (seed {seed})");
    for kind in FaultKind::ALL {
        assert!(ending.faults.iter().any(|f| f.kind == kind), "no {kind:?} fault happened: {faults:?} (seed {seed})");
    }
    cluster.stop();
}

#[test]
fn three_nodes_stay_linearizable_under_kills_pauses_and_full_restarts() {
    linearizable_under_faults(3);
}

#[test]
fn five_nodes_stay_linearizable_under_kills_pauses_and_full_restarts() {
    linearizable_under_faults(5);
}
