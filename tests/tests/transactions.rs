//! Transactions against real `corekv-server` processes (3 nodes × 2 cores): bank
//! transfers between accounts on different shards, under every policy, through a
//! kill -9 of a node and its restart; read-only audits at a version. The bank's
//! total never changes, every audit sums to zero, and the final balances are
//! exactly what the committed transfers made them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corekv_rpc::client::KvError;
use corekv_rpc::client::blocking::Client;
use corekv_rpc::txn::Policy;
use corekv_tests::local::{connect, start};

const ACCOUNTS: usize = 8;

fn account(i: usize) -> Vec<u8> {
    format!("acct{i}").into_bytes()
}

fn balance(got: Result<corekv_rpc::client::Got, KvError>) -> Result<i64, KvError> {
    match got {
        Ok(got) => Ok(std::str::from_utf8(&got.value).expect("utf-8").parse().expect("a balance")),
        Err(KvError::NotFound) => Ok(0),
        Err(e) => Err(e),
    }
}

/// Moves `amount` from `from` to `to` in one transaction, retried while aborted.
fn transfer(client: &mut Client, policy: Policy, from: usize, to: usize, amount: i64) -> Result<u32, KvError> {
    let run = client.run_txn(policy, |t| {
        let a = balance(t.get(&account(from)))?;
        let b = balance(t.get(&account(to)))?;
        t.put(&account(from), (a - amount).to_string().as_bytes())?;
        t.put(&account(to), (b + amount).to_string().as_bytes())?;
        Ok(())
    })?;
    Ok(run.attempts)
}

/// Every account read at one version; its total.
fn audit(client: &mut Client) -> Result<(i64, BTreeMap<usize, i64>), KvError> {
    let mut t = client.begin_read_only(None);
    let mut balances = BTreeMap::new();
    for i in 0..ACCOUNTS {
        balances.insert(i, balance(t.get(&account(i)))?);
    }
    t.commit()?;
    Ok((balances.values().sum(), balances))
}

#[test]
fn bank_transfers_keep_the_total_through_a_kill_and_restart() {
    let mut cluster = start(3, 16);
    let deadline = Duration::from_secs(20);
    // What the committed transfers did to each account; an indeterminate one
    // makes the exact balances unknowable (the total still holds).
    let expected: Arc<Mutex<BTreeMap<usize, i64>>> = Arc::default();
    let indeterminate = Arc::new(Mutex::new(0u64));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = Policy::ALL
        .into_iter()
        .enumerate()
        .map(|(w, policy)| {
            let mut client = connect(&cluster, deadline);
            let (expected, indeterminate, stop) = (expected.clone(), indeterminate.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut committed = 0u64;
                let mut i = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let from = (w * 3 + i) % ACCOUNTS;
                    let to = (from + 1 + i % (ACCOUNTS - 1)) % ACCOUNTS;
                    let amount = (i % 50) as i64 + 1;
                    match transfer(&mut client, policy, from, to, amount) {
                        Ok(_) => {
                            committed += 1;
                            let mut e = expected.lock().unwrap();
                            *e.entry(from).or_default() -= amount;
                            *e.entry(to).or_default() += amount;
                        }
                        Err(KvError::Indeterminate { .. }) => *indeterminate.lock().unwrap() += 1,
                        // Aborted past the deadline, or no leader: not committed.
                        Err(KvError::Aborted { .. } | KvError::Unavailable { .. }) => {}
                        Err(e) => panic!("{policy}: transfer answered {e}"),
                    }
                }
                committed
            })
        })
        .collect();
    let mut auditor = connect(&cluster, deadline);
    let until = Instant::now() + Duration::from_secs(4);
    let mut audits = 0;
    while Instant::now() < until {
        if let Ok((total, balances)) = audit(&mut auditor) {
            assert_eq!(total, 0, "an audit saw money made or lost: {balances:?}");
            audits += 1;
        }
    }
    // kill -9 of a node in the middle of the load, then its restart.
    cluster.kill(2).expect("node 2 is killed");
    std::thread::sleep(Duration::from_secs(2));
    cluster.restart(2).expect("node 2 restarts");
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        if let Ok((total, balances)) = audit(&mut auditor) {
            assert_eq!(total, 0, "an audit saw money made or lost: {balances:?}");
            audits += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let committed: u64 = workers.into_iter().map(|w| w.join().expect("a worker panicked")).sum();
    assert!(committed > 0, "no transfer committed");
    assert!(audits > 0, "no audit finished");
    let (total, balances) = audit(&mut auditor).expect("a final audit");
    assert_eq!(total, 0, "{balances:?}");
    if *indeterminate.lock().unwrap() == 0 {
        let expected = expected.lock().unwrap();
        for (i, b) in &balances {
            assert_eq!(*b, expected.get(i).copied().unwrap_or(0), "account {i}: {balances:?} vs {expected:?}");
        }
    }
    eprintln!("{committed} transfers committed, {audits} audits");
}
