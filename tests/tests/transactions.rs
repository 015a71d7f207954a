//! Transactions against real `corekv-server` processes (3 nodes × 2 cores,
//! DESIGN §8, §11): bank transfers between accounts on different shards under
//! every policy, random read-write transactions over several keys (puts, and
//! deletes of keys they read present) under random policies, and read-only
//! audits, all through the blocking client, while the nemesis kills shard
//! leaders (anchors among them: the accounts' shards) and random nodes with
//! kill -9, hangs nodes with SIGSTOP, and restarts every node at once.
//!
//! Every attempt is recorded as a transaction line of the history file and the
//! checker of `corekv-ctl check-history` judges them: the read-write
//! transactions strictly serializable, all of them serializable with the
//! read-only ones at their snapshots. Besides: the bank's total never changes
//! (every audit and the final one sum to zero), the final balances are exactly
//! what the committed transfers made them when none was indeterminate, and
//! nothing acknowledged is lost (each key's newest version is its newest
//! committed write, or a later write of a transaction of unknown outcome).
//!
//! `COREKV_E2E_SEED` reruns a failure's choices; `COREKV_E2E_LONG=N` runs N
//! times as many fault rounds. A failing run leaves the history beside the
//! cluster's data (`txn-history.jsonl`, for `corekv-ctl check-history`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corekv_rpc::client::KvError;
use corekv_rpc::client::blocking::Client;
use corekv_rpc::kv::Version;
use corekv_rpc::txn::Policy;
use corekv_tests::history::Recorder;
use corekv_tests::nemesis::{FaultKind, Nemesis, Plan};
use corekv_tests::txn::{Attempt, Ended, TxnLog, verdict_text};
use corekv_tests::{knobs, local};
use corekv_tools::history::{TxnRecord, value_hash};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Bank accounts, spread over the shards; never deleted.
const ACCOUNTS: usize = 6;
/// Keys of the random transactions: the first half are only ever put, the
/// second half may be deleted too.
const RANDOM_KEYS: usize = 8;
/// Each client request's deadline, retries included; a transaction is retried
/// while aborted until it passes too.
const CLIENT_DEADLINE: Duration = Duration::from_secs(3);
/// Some random transactions' deadline (drawn from this range): short enough
/// that a fault makes them give up, which leaves indeterminate commits (and
/// unavailable attempts) in the history.
const SHORT_DEADLINE: (Duration, Duration) = (Duration::from_millis(20), Duration::from_millis(1500));
/// Fault rounds per run (times `COREKV_E2E_LONG`): each kind at least once.
const ROUNDS: usize = 8;
/// A bound on one fault round, far above the plan's own times: a nemesis stuck
/// longer is stopped and the test fails (liveness, not speed).
const ROUND_BOUND: Duration = Duration::from_secs(40);
/// The final reads run on a healed cluster: generous.
const FINAL_DEADLINE: Duration = Duration::from_secs(20);

fn account(i: usize) -> Vec<u8> {
    format!("acct{i}").into_bytes()
}

fn random_key(i: usize) -> Vec<u8> {
    format!("rand{i}").into_bytes()
}

fn deletable(i: usize) -> bool {
    i >= RANDOM_KEYS / 2
}

/// A balance as stored: `<balance>@<tag>`, the tag making every value written
/// distinct (so the checker can always name the writer of a value); absent = 0.
fn balance(value: Option<&[u8]>) -> i64 {
    let Some(value) = value else { return 0 };
    let text = std::str::from_utf8(value).expect("a balance is utf-8");
    text.split('@').next().and_then(|b| b.parse().ok()).unwrap_or_else(|| panic!("not a balance: {text:?}"))
}

/// A client thread's body: given the shared state, its client and its number,
/// what it got committed (two counts), or why it stopped.
type ClientThread = dyn FnOnce(Shared, Client, u64) -> Result<(u64, u64), String> + Send;

/// What one client thread shares with the others.
#[derive(Clone)]
struct Shared {
    clock: Arc<Recorder>,
    log: Arc<TxnLog>,
    stop: Arc<AtomicBool>,
    /// What the committed transfers did to each account.
    expected: Arc<Mutex<BTreeMap<usize, i64>>>,
    /// Transfers of unknown outcome: the exact balances are unknowable then.
    indeterminate_transfers: Arc<AtomicU64>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// Runs `body` as one transaction of client `worker` under `policy`, each
/// attempt recorded, again while aborted until [`CLIENT_DEADLINE`] (wait-die
/// keeps its first start version).
fn run_recorded(
    shared: &Shared,
    client: &mut Client,
    worker: u64,
    policy: Policy,
    mut body: impl FnMut(&mut Attempt, &mut Client) -> Result<(), KvError>,
) -> Result<Ended, String> {
    let deadline = Instant::now() + CLIENT_DEADLINE;
    let mut first_start = None;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let start = if policy == Policy::WaitDie { first_start } else { None };
        let mut txn = Attempt::begin(&shared.clock, client, worker, Some(policy), start, attempt);
        first_start.get_or_insert(txn.start_version());
        let ended = match body(&mut txn, client) {
            Ok(()) => txn.commit(&shared.clock, &shared.log, client)?,
            Err(e) => txn.fail(&shared.clock, &shared.log, client, e)?,
        };
        match ended {
            Ended::NotCommitted(KvError::Aborted { .. }) if Instant::now() < deadline && !shared.stopped() => {
                std::thread::sleep(Duration::from_millis(1 << attempt.min(5)));
            }
            other => return Ok(other),
        }
    }
}

/// Transfers between random accounts under one policy until stopped; the
/// number committed.
fn bank_worker(shared: Shared, mut client: Client, worker: u64, policy: Policy, seed: u64) -> Result<u64, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut committed = 0;
    for n in 0u64.. {
        if shared.stopped() {
            break;
        }
        let from = rng.random_range(0..ACCOUNTS);
        let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
        let amount = rng.random_range(1..50i64);
        let mut tries = 0u32;
        let ended = run_recorded(&shared, &mut client, worker, policy, |txn, client| {
            tries += 1;
            let a = balance(txn.get(client, &account(from), false)?.as_deref());
            let b = balance(txn.get(client, &account(to), false)?.as_deref());
            txn.write(client, &account(from), Some(format!("{}@{worker}.{n}.{tries}", a - amount).as_bytes()))?;
            txn.write(client, &account(to), Some(format!("{}@{worker}.{n}.{tries}", b + amount).as_bytes()))
        })?;
        match ended {
            Ended::Committed(_) => {
                committed += 1;
                let mut expected = shared.expected.lock().expect("a worker panicked");
                *expected.entry(from).or_default() -= amount;
                *expected.entry(to).or_default() += amount;
            }
            Ended::Indeterminate => {
                shared.indeterminate_transfers.fetch_add(1, Ordering::Relaxed);
            }
            Ended::NotCommitted(_) => {}
        }
    }
    Ok(committed)
}

/// Random read-write transactions over a few random keys and an account (read
/// only), half of them with a short deadline, and now and then a read-only
/// one; the number of each committed.
fn random_worker(shared: Shared, mut client: Client, worker: u64, seed: u64) -> Result<(u64, u64), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut read_write, mut read_only) = (0, 0);
    for n in 0u64.. {
        if shared.stopped() {
            break;
        }
        let keys: BTreeSet<usize> = (0..rng.random_range(2..=4)).map(|_| rng.random_range(0..RANDOM_KEYS)).collect();
        if rng.random_range(0..5u32) == 0 {
            let mut txn = Attempt::begin(&shared.clock, &mut client, worker, None, None, 1);
            let mut body = || -> Result<(), KvError> {
                for &k in &keys {
                    txn.get(&mut client, &random_key(k), deletable(k))?;
                }
                Ok(())
            };
            let ended = match body() {
                Ok(()) => txn.commit(&shared.clock, &shared.log, &mut client)?,
                Err(e) => txn.fail(&shared.clock, &shared.log, &mut client, e)?,
            };
            read_only += u64::from(matches!(ended, Ended::Committed(_)));
            continue;
        }
        let policy = Policy::ALL[rng.random_range(0..Policy::ALL.len())];
        let short = SHORT_DEADLINE.0 + (SHORT_DEADLINE.1 - SHORT_DEADLINE.0).mul_f64(rng.random::<f64>());
        client.set_deadline(if rng.random_bool(0.5) { short } else { CLIENT_DEADLINE });
        // Each key: read it, write it, or both; decided before the attempts, so
        // that every attempt tries the same transaction.
        let plan: Vec<(usize, u32)> = keys.iter().map(|&k| (k, rng.random_range(0..3u32))).collect();
        let audit_account = rng.random_range(0..ACCOUNTS);
        let deletes = rng.random_bool(0.3);
        let mut tries = 0u32;
        let ended = run_recorded(&shared, &mut client, worker, policy, |txn, client| {
            tries += 1;
            txn.get(client, &account(audit_account), false)?;
            for &(k, what) in &plan {
                let key = random_key(k);
                let present = if what != 1 { txn.get(client, &key, deletable(k))?.is_some() } else { false };
                if what == 0 {
                    continue;
                }
                // A delete only of a key read present: it makes a tombstone.
                if deletes && deletable(k) && present {
                    txn.write(client, &key, None)?;
                } else {
                    txn.write(client, &key, Some(format!("v@{worker}.{n}.{tries}.{k}").as_bytes()))?;
                }
            }
            Ok(())
        })?;
        read_write += u64::from(matches!(ended, Ended::Committed(_)));
    }
    Ok((read_write, read_only))
}

/// Every account read in one read-only transaction (recorded); the balances
/// when it was served.
fn audit(shared: &Shared, client: &mut Client, worker: u64) -> Result<Option<BTreeMap<usize, i64>>, String> {
    let mut txn = Attempt::begin(&shared.clock, client, worker, None, None, 1);
    let mut balances = BTreeMap::new();
    for i in 0..ACCOUNTS {
        match txn.get(client, &account(i), false) {
            Ok(value) => {
                balances.insert(i, balance(value.as_deref()));
            }
            Err(e) => {
                txn.fail(&shared.clock, &shared.log, client, e)?;
                return Ok(None);
            }
        }
    }
    Ok(match txn.commit(&shared.clock, &shared.log, client)? {
        Ended::Committed(_) => Some(balances),
        _ => None,
    })
}

/// Audits until stopped; each must sum to zero. The number finished.
fn auditor(shared: Shared, mut client: Client, worker: u64) -> Result<u64, String> {
    let mut audits = 0;
    while !shared.stopped() {
        if let Some(balances) = audit(&shared, &mut client, worker)? {
            let total: i64 = balances.values().sum();
            if total != 0 {
                return Err(format!("an audit saw money made or lost: {balances:?}"));
            }
            audits += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(audits)
}

/// Nothing acknowledged is lost: each key's newest version is its newest
/// committed write (same value, or a tombstone for a delete), or a later
/// write of a transaction of unknown outcome. The problems found.
fn lost_writes(records: &[TxnRecord], client: &mut Client, keys: &[Vec<u8>]) -> Vec<String> {
    let mut committed: HashMap<Vec<u8>, (Version, Option<String>, String)> = HashMap::new();
    let mut unknown: HashSet<(Vec<u8>, Option<String>)> = HashSet::new();
    for record in records {
        for write in &record.writes {
            let key = write.key.clone().expect("the tests' keys are utf-8").into_bytes();
            match (record.outcome.as_str(), record.version) {
                ("ok", Some(version)) => {
                    let newest = committed.entry(key).or_insert((0, None, String::new()));
                    if version > newest.0 {
                        *newest = (version, write.value_hash.clone(), record.txn.clone());
                    }
                }
                ("indeterminate", _) => {
                    unknown.insert((key, write.value_hash.clone()));
                }
                _ => {}
            }
        }
    }
    let mut problems = Vec::new();
    for key in keys {
        let name = String::from_utf8_lossy(key).into_owned();
        let entries = match client.versions(key) {
            Ok(entries) => entries,
            Err(KvError::NotFound) => Vec::new(),
            Err(e) => {
                problems.push(format!("{name}: versions answered {e}"));
                continue;
            }
        };
        let newest = entries.iter().max_by_key(|e| e.version);
        let hash_of = |e: &corekv_rpc::client::VersionEntry| (!e.deleted).then(|| value_hash(&e.value));
        let (acked_version, acked_hash, txn) = committed.get(key).cloned().unwrap_or((0, None, String::new()));
        match newest {
            None if acked_version > 0 => {
                problems.push(format!("{name}: no version at all, but txn {txn} committed it at {acked_version}"));
            }
            None => {}
            Some(entry) if entry.version < acked_version => problems.push(format!(
                "{name}: newest version {} is older than txn {txn}'s committed {acked_version}",
                entry.version
            )),
            Some(entry) if entry.version == acked_version && hash_of(entry) != acked_hash => problems.push(format!(
                "{name}@{acked_version}: holds {:?}, but txn {txn} committed {acked_hash:?}",
                hash_of(entry)
            )),
            Some(entry) if entry.version > acked_version && !unknown.contains(&(key.clone(), hash_of(entry))) => {
                problems.push(format!(
                    "{name}@{}: a version no committed or indeterminate transaction wrote ({:?})",
                    entry.version,
                    hash_of(entry)
                ));
            }
            Some(_) => {}
        }
    }
    problems
}

#[test]
fn bank_and_random_transactions_stay_serializable_through_kills_pauses_and_restarts() {
    let seed = knobs::seed();
    eprintln!("seed {seed}: rerun with {}", knobs::rerun_hint(seed));
    let cluster = local::start(3, 16);
    let status_client = local::connect(&cluster, CLIENT_DEADLINE);
    let mut keys: Vec<Vec<u8>> = (0..ACCOUNTS).map(account).collect();
    keys.extend((0..RANDOM_KEYS).map(random_key));
    let hot_shards: BTreeSet<u32> = keys.iter().map(|key| status_client.map().shard_of(key)).collect();
    let plan = Plan {
        seed,
        rounds: ROUNDS * knobs::scale() as usize,
        hot_shards: hot_shards.into_iter().collect(),
        warmup: Duration::from_secs(1),
        gap: (Duration::from_millis(500), Duration::from_secs(1)),
        hold: (Duration::from_secs(1), Duration::from_secs(3)),
    };
    let rounds = plan.rounds;
    let shared = Shared {
        clock: Arc::new(Recorder::new()),
        log: Arc::default(),
        stop: Arc::default(),
        expected: Arc::default(),
        indeterminate_transfers: Arc::default(),
    };

    let mut worker = 0u64;
    let mut spawn = |f: Box<ClientThread>| {
        worker += 1;
        let (shared, client, w) = (shared.clone(), local::connect(&cluster, CLIENT_DEADLINE), worker);
        std::thread::spawn(move || f(shared, client, w))
    };
    let bank: Vec<_> = Policy::ALL
        .into_iter()
        .enumerate()
        .map(|(i, policy)| {
            let seed = seed.wrapping_add(i as u64 + 1);
            spawn(Box::new(move |s, c, w| bank_worker(s, c, w, policy, seed).map(|n| (n, 0))))
        })
        .collect();
    let random: Vec<_> = (0..2u64)
        .map(|i| {
            let seed = seed.wrapping_add(100 + i);
            spawn(Box::new(move |s, c, w| random_worker(s, c, w, seed)))
        })
        .collect();
    let audits = spawn(Box::new(|s, c, w| auditor(s, c, w).map(|n| (n, 0))));
    let final_worker = worker + 1;

    let nemesis = Nemesis::start(cluster, status_client, plan, shared.clock.clone());
    let bound = ROUND_BOUND * (rounds as u32 + 1);
    let started = Instant::now();
    while !nemesis.is_finished() && started.elapsed() < bound {
        std::thread::sleep(Duration::from_millis(100));
    }
    let timed_out = !nemesis.is_finished();
    let ending = nemesis.stop();
    shared.stop.store(true, Ordering::Release);
    let join = |h: std::thread::JoinHandle<Result<(u64, u64), String>>| {
        h.join().expect("a client thread panicked").unwrap_or_else(|e| panic!("{e} (seed {seed})"))
    };
    let transfers: u64 = bank.into_iter().map(|h| join(h).0).sum();
    let (random_rw, random_ro) = random.into_iter().map(join).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let audits = join(audits).0;
    let mut cluster = ending.cluster;
    let faults: Vec<String> = ending.faults.iter().map(ToString::to_string).collect();
    eprintln!("faults:\n  {}", faults.join("\n  "));
    assert!(ending.error.is_none(), "the nemesis failed: {:?} (seed {seed})", ending.error);
    assert!(!timed_out, "the nemesis did not finish {rounds} rounds within {bound:?} (seed {seed})");
    for kind in FaultKind::ALL {
        assert!(ending.faults.iter().any(|f| f.kind == kind), "no {kind:?} fault happened: {faults:?} (seed {seed})");
    }

    // Healed: the final audit joins the history; the bank's total holds, and
    // the balances are the committed transfers' when none was indeterminate.
    cluster.wait_ready(local::READY_WITHIN).expect("the cluster heals once the nemesis stops");
    let mut reader = local::connect(&cluster, FINAL_DEADLINE);
    let balances = audit(&shared, &mut reader, final_worker)
        .unwrap_or_else(|e| panic!("{e} (seed {seed})"))
        .unwrap_or_else(|| panic!("a healed cluster serves the final audit (seed {seed})"));
    assert_eq!(balances.values().sum::<i64>(), 0, "the final audit: {balances:?} (seed {seed})");
    let indeterminate = shared.indeterminate_transfers.load(Ordering::Relaxed);
    if indeterminate == 0 {
        let expected = shared.expected.lock().unwrap();
        for (i, b) in &balances {
            assert_eq!(*b, expected.get(i).copied().unwrap_or(0), "account {i}: {balances:?} vs {expected:?}");
        }
    }

    let records = shared.log.records();
    let outcomes = records.iter().fold(BTreeMap::<&str, usize>::new(), |mut m, r| {
        *m.entry(r.outcome.as_str()).or_default() += 1;
        m
    });
    eprintln!(
        "{transfers} transfers, {random_rw} random read-write and {random_ro} read-only transactions, \
         {audits} audits committed; {indeterminate} transfers indeterminate; attempts by outcome {outcomes:?}"
    );
    let lost = lost_writes(&records, &mut reader, &keys);
    let check_started = Instant::now();
    let verdict = shared.log.check();
    eprintln!("checked {} attempts in {:?}", records.len(), check_started.elapsed());
    let passed = matches!(&verdict, Ok(v) if v.passed());
    if !passed || !lost.is_empty() {
        let path = cluster.dir().join("txn-history.jsonl");
        std::fs::write(&path, shared.log.to_file()).expect("the history is saved beside the cluster");
        let verdict = verdict.map(|v| verdict_text(&v)).unwrap_or_else(|e| format!("the history is malformed: {e}"));
        panic!(
            "{verdict}\nlost writes: {lost:#?}\nhistory: {} (corekv-ctl check-history)\nfaults:\n  {}\nseed {seed}: rerun with {}",
            path.display(),
            faults.join("\n  "),
            knobs::rerun_hint(seed)
        );
    }

    // Not vacuous: each kind of transaction got done.
    assert!(transfers > 0 && random_rw > 0, "too little committed: {outcomes:?} (seed {seed})");
    assert!(audits > 0 && random_ro > 0, "no read-only transaction committed: {outcomes:?} (seed {seed})");
    cluster.stop();
}
