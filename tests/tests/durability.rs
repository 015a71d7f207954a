//! Acknowledged means durable, with real `corekv-server` processes (DESIGN §5,
//! §6, §11):
//! - kill -9 of every node at once, while writers are busy, twice: after each
//!   restart every acknowledged write is in its key's versions and every key
//!   holds its last acknowledged write or a later one (never an older one);
//! - the same while every shard compacts its log every 64 KiB, so the kills
//!   land among snapshot files being written;
//! - SIGTERM under load, first of one node and then of every node at once: each
//!   server exits 0, and after a restart nothing acknowledged is lost.
//!
//! Writers own their keys (see `corekv_tests::ledger`), cycle through them
//! (so most are overwritten) and delete now and then.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use corekv_rpc::kv::NodeId;
use corekv_tests::ledger::{self, Ledger};
use corekv_tests::local::{self, READY_WITHIN};
use corekv_tools::launcher::{LaunchOptions, LocalCluster};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Writer threads, each with its own client and keys.
const WRITERS: usize = 4;
/// Keys per writer: a few hundred keys in all, each written several times.
const KEYS_PER_WRITER: usize = 150;
/// A writer request's deadline: short, so writers notice a dead cluster soon.
const WRITE_DEADLINE: Duration = Duration::from_secs(2);
/// Verification runs on a healed cluster: generous.
const VERIFY_DEADLINE: Duration = Duration::from_secs(20);
/// Bytes added to each value while shards compact every 64 KiB.
const COMPACTING_PAD: usize = 2048;
/// Load before each fault.
const LOAD: Duration = Duration::from_secs(3);
/// How long the writers may take to make every shard compact (a liveness bound).
const COMPACT_WITHIN: Duration = Duration::from_secs(60);

/// Writer threads that keep their ledgers across rounds.
struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<Ledger, String>>>,
}

impl Writers {
    fn start(cluster: &LocalCluster, ledgers: Vec<Ledger>) -> Writers {
        Writers::start_padded(cluster, ledgers, 0)
    }

    /// Writers whose values carry `pad` more bytes.
    fn start_padded(cluster: &LocalCluster, ledgers: Vec<Ledger>, pad: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = ledgers
            .into_iter()
            .enumerate()
            .map(|(writer, mut ledger)| {
                let mut client = local::connect(cluster, WRITE_DEADLINE);
                let stop = stop.clone();
                std::thread::spawn(move || {
                    ledger::write_padded_until(&mut client, writer, KEYS_PER_WRITER, pad, &stop, &mut ledger)
                        .map(|()| ledger)
                })
            })
            .collect();
        Writers { stop, threads }
    }

    fn stop(self) -> Vec<Ledger> {
        self.stop.store(true, Ordering::Relaxed);
        let ledgers = self.threads.into_iter().map(|t| t.join().expect("a writer thread panicked"));
        ledgers.collect::<Result<_, _>>().unwrap_or_else(|violation| panic!("{violation}"))
    }
}

/// Restarts every node, waits for leaders, and checks every ledger.
fn restart_all_and_verify(cluster: &mut LocalCluster, ledgers: &[Ledger], what: &str) {
    for node in 1..=cluster.options().nodes as NodeId {
        cluster.restart(node).expect("restarts");
    }
    cluster.wait_ready(READY_WITHIN).expect("every shard has a leader after the restart");
    let mut client = local::connect(cluster, VERIFY_DEADLINE);
    let acked: u64 = ledgers.iter().map(|l| l.acked).sum();
    let writes: u64 = ledgers.iter().map(|l| l.writes).sum();
    match ledger::verify(&mut client, ledgers) {
        Ok(verified) => {
            eprintln!("after {what}: {verified:?} of {acked} acknowledged among {writes} writes");
            assert_eq!(verified.acked_writes as u64, acked, "every acknowledged write was looked at");
        }
        Err(problems) => panic!("after {what}, acknowledged writes are lost:\n{}", problems.join("\n")),
    }
}

#[test]
fn acknowledged_writes_survive_kill_9_of_every_node_at_once() {
    let mut cluster = local::start(3, 64);
    let mut ledgers = vec![Ledger::default(); WRITERS];
    for round in 1..=2 {
        let writers = Writers::start(&cluster, ledgers);
        std::thread::sleep(LOAD);
        local::kill_all(&mut cluster).expect("kill -9 of every node");
        ledgers = writers.stop();
        let acked: u64 = ledgers.iter().map(|l| l.acked).sum();
        assert!(acked >= 200 * round, "the writers got enough done to prove something: {acked} acknowledged");
        restart_all_and_verify(&mut cluster, &ledgers, &format!("kill -9 of every node (round {round})"));
    }
    cluster.stop();
}

/// The same with every shard compacting its log into a snapshot after each
/// 64 KiB of it (values padded to 2 KiB): the kills land while snapshot files
/// are written off the cores' threads, and recovery must rebuild every group
/// from its latest file and the WAL after its marker. (A kill -9 keeps the page
/// cache, so the order of fdatasyncs, a file's before its marker's, is not what
/// this tests: `runtime::snap_files`'s unit tests do.)
#[test]
fn acknowledged_writes_survive_kill_9_while_every_shard_compacts() {
    let extra_args = vec!["--snapshot-log-bytes".to_string(), "65536".to_string()];
    let mut cluster = local::start_with(LaunchOptions { nodes: 3, shards: 16, extra_args, ..LaunchOptions::default() });
    let mut ledgers = vec![Ledger::default(); WRITERS];
    for round in 1..=2 {
        let writers = Writers::start_padded(&cluster, ledgers, COMPACTING_PAD);
        // At least LOAD of writing, and on until the shards have compacted: a
        // slow machine writes less per second, and a shard's threshold grows
        // with its snapshot (a liveness bound, not a speed claim).
        let started = Instant::now();
        let mut client = local::connect(&cluster, VERIFY_DEADLINE);
        let snapshots = loop {
            std::thread::sleep(Duration::from_millis(500));
            let status = client.status();
            let snapshots: u64 =
                status.nodes.iter().flat_map(|n| &n.cores).filter_map(|c| c.stats).map(|s| s.snapshots_taken).sum();
            if (snapshots >= 16 && started.elapsed() >= LOAD) || started.elapsed() >= COMPACT_WITHIN {
                break snapshots;
            }
        };
        drop(client);
        local::kill_all(&mut cluster).expect("kill -9 of every node");
        ledgers = writers.stop();
        assert!(snapshots >= 16, "the shards compacted while the writers ran: {snapshots} snapshots");
        restart_all_and_verify(&mut cluster, &ledgers, &format!("kill -9 while compacting (round {round})"));
    }
    cluster.stop();
}

#[test]
fn sigterm_under_load_exits_0_and_a_restart_loses_nothing_acknowledged() {
    let mut cluster = local::start(3, 64);
    let writers = Writers::start(&cluster, vec![Ledger::default(); WRITERS]);
    std::thread::sleep(LOAD);
    // One node alone: the others go on serving meanwhile.
    let status = cluster.terminate(1).expect("SIGTERM");
    assert!(status.is_some_and(|s| s.success()), "node 1 exits 0 on SIGTERM under load: {status:?}");
    cluster.restart(1).expect("restarts");
    std::thread::sleep(LOAD);
    // Every node at once, then each is reaped.
    for node in 1..=3 {
        let pid = cluster.pid(node).expect("running") as i32;
        kill(Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM");
    }
    for node in 1..=3 {
        let status = cluster.terminate(node).expect("reaps");
        assert!(status.is_some_and(|s| s.success()), "node {node} exits 0 on SIGTERM under load: {status:?}");
    }
    let ledgers = writers.stop();
    let acked: u64 = ledgers.iter().map(|l| l.acked).sum();
    assert!(acked >= 200, "the writers got enough done to prove something: {acked} acknowledged");
    restart_all_and_verify(&mut cluster, &ledgers, "SIGTERM of every node");
    cluster.stop();
}
