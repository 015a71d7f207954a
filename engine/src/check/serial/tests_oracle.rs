//! The checker against a brute-force oracle on tiny histories (at most six
//! transactions), in both directions, strict and not. The oracle knows
//! nothing of version resolution, graphs or cycles. It tries every choice of
//! which unknown-outcome transactions committed, and at which version, and
//! every order of the committed ones (when strict, a read-write one that
//! returned committed before another read-write one began comes first), and
//! runs each order against a plain store: a write must
//! raise its key's version, a read must see its key's newest version and value
//! at that point, and a read-only transaction must also read, per key, the
//! newest version at or below its snapshot among the committed writers.
//!
//! An unknown transaction is only ever tried at a version at which some read
//! saw one of its values: committing one that no read saw is never needed
//! (drop it from a serial order and every read still sees what it saw), and
//! committing one at another version makes the reads of its values fail.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::super::test_rng::SplitMix;
use super::super::tests_prop::proptest_config;
use super::tests_gen::serial_history;
use super::*;

const KEYS: [&[u8]; 2] = [b"x", b"y"];
const VERSION_MAX: u64 = 6;

/// Whether some serial order explains the history.
fn brute_force(txns: &[Txn], strict: bool) -> bool {
    let mut live: Vec<(usize, Version)> = (0..txns.len())
        .filter_map(|index| match txns[index].outcome {
            TxnOutcome::Committed { version } => Some((index, version)),
            _ => None,
        })
        .collect();
    let unknown: Vec<usize> = (0..txns.len())
        .filter(|&index| txns[index].outcome == TxnOutcome::Unknown && !txns[index].writes.is_empty())
        .collect();
    choose_unknowns(txns, &unknown, &mut live, strict)
}

/// Each unknown transaction either did not commit or committed at one of
/// the versions its values were read at.
fn choose_unknowns(txns: &[Txn], unknown: &[usize], live: &mut Vec<(usize, Version)>, strict: bool) -> bool {
    let Some((&index, rest)) = unknown.split_first() else {
        return exists_order(txns, live, strict);
    };
    if choose_unknowns(txns, rest, live, strict) {
        return true;
    }
    for version in versions_its_values_were_read_at(txns, index) {
        live.push((index, version));
        let found = choose_unknowns(txns, rest, live, strict);
        live.pop();
        if found {
            return true;
        }
    }
    false
}

fn versions_its_values_were_read_at(txns: &[Txn], index: usize) -> BTreeSet<Version> {
    let writes = &txns[index].writes;
    txns.iter()
        .flat_map(|txn| &txn.reads)
        .filter(|read| {
            read.version > 0 && writes.iter().any(|write| write.key == read.key && write.value == read.value)
        })
        .map(|read| read.version)
        .collect()
}

fn exists_order(txns: &[Txn], live: &[(usize, Version)], strict: bool) -> bool {
    for &(index, _) in live {
        let TxnKind::ReadOnly { snapshot } = txns[index].kind else {
            continue;
        };
        for read in &txns[index].reads {
            let newest = live
                .iter()
                .filter(|&&(writer, version)| {
                    version <= snapshot && txns[writer].writes.iter().any(|write| write.key == read.key)
                })
                .map(|&(_, version)| version)
                .max()
                .unwrap_or(0);
            if read.version != newest {
                return false;
            }
        }
    }
    let mut placed = vec![false; live.len()];
    place_next(txns, live, strict, &mut placed, &mut BTreeMap::new())
}

type Store = BTreeMap<Vec<u8>, (Version, Option<u64>)>;

fn place_next(txns: &[Txn], live: &[(usize, Version)], strict: bool, placed: &mut [bool], store: &mut Store) -> bool {
    if placed.iter().all(|&placed| placed) {
        return true;
    }
    for slot in 0..live.len() {
        let (index, version) = live[slot];
        let txn = &txns[index];
        if placed[slot] || (strict && must_wait(txns, live, placed, slot)) {
            continue;
        }
        let current = |key: &[u8]| store.get(key).copied().unwrap_or((0, None));
        if !txn.reads.iter().all(|read| current(&read.key) == (read.version, read.value)) {
            continue;
        }
        if !txn.writes.iter().all(|write| current(&write.key).0 < version) {
            continue;
        }
        let saved: Vec<_> =
            txn.writes.iter().map(|write| (write.key.clone(), store.get(&write.key).copied())).collect();
        for write in &txn.writes {
            store.insert(write.key.clone(), (version, write.value));
        }
        placed[slot] = true;
        if place_next(txns, live, strict, placed, store) {
            return true;
        }
        placed[slot] = false;
        for (key, before) in saved {
            match before {
                Some(before) => store.insert(key, before),
                None => store.remove(&key),
            };
        }
    }
    false
}

/// A read-write transaction waits for every committed read-write one that
/// returned before it was invoked (one of unknown outcome may have committed
/// after its client gave up).
fn must_wait(txns: &[Txn], live: &[(usize, Version)], placed: &[bool], slot: usize) -> bool {
    let txn = &txns[live[slot].0];
    txn.kind == TxnKind::ReadWrite
        && live.iter().enumerate().any(|(other, &(index, _))| {
            !placed[other]
                && other != slot
                && txns[index].kind == TxnKind::ReadWrite
                && matches!(txns[index].outcome, TxnOutcome::Committed { .. })
                && txns[index].return_time.is_some_and(|time| time < txn.invoke_time)
        })
}

/// A tiny history with random, often impossible, reads: each sees another
/// transaction's write (at its commit version, or, for one that did not
/// commit, at a version it might have had), the initial state, or garbage.
fn random_history(seed: u64, txns_count: usize) -> Vec<Txn> {
    let mut rng = SplitMix(seed);
    let mut txns = Vec::with_capacity(txns_count);
    let mut might_have_had = Vec::with_capacity(txns_count);
    for index in 0..txns_count {
        let id = index as u64 + 1;
        let version = 1 + rng.below(VERSION_MAX);
        let outcome = match rng.below(10) {
            0 => TxnOutcome::Aborted,
            1 | 2 => TxnOutcome::Unknown,
            _ => TxnOutcome::Committed { version },
        };
        let read_only = rng.below(4) == 0;
        let mut writes = Vec::new();
        for (key_index, key) in KEYS.iter().enumerate() {
            if read_only || rng.below(2) == 0 {
                continue;
            }
            // Unknown transactions never delete, so every value read names
            // its writer (two unknown deletes of one key would be undecided).
            let deletes = outcome != TxnOutcome::Unknown && rng.below(5) == 0;
            let value = if deletes { None } else { Some(id * 10 + key_index as u64) };
            writes.push(Write { key: key.to_vec(), value });
        }
        let kind =
            if read_only { TxnKind::ReadOnly { snapshot: rng.below(VERSION_MAX + 2) } } else { TxnKind::ReadWrite };
        let invoke_time = rng.below(30);
        let return_time = match outcome {
            TxnOutcome::Unknown if rng.below(2) == 0 => None,
            _ => Some(invoke_time + rng.below(15)),
        };
        txns.push(Txn { id, kind, reads: Vec::new(), writes, outcome, invoke_time, return_time });
        might_have_had.push(version);
    }
    for index in 0..txns_count {
        for _ in 0..rng.below(3) {
            let key = KEYS[rng.below(2) as usize];
            let sources: Vec<(Version, Option<u64>)> = (0..txns_count)
                .filter(|&other| other != index)
                .flat_map(|other| {
                    let version = might_have_had[other];
                    txns[other].writes.iter().filter(|write| write.key == key).map(move |write| (version, write.value))
                })
                .collect();
            let choice = rng.below(sources.len() as u64 + 2) as usize;
            let (version, value) = match choice {
                _ if choice < sources.len() => sources[choice],
                _ if choice == sources.len() => (0, None),
                _ => (1 + rng.below(VERSION_MAX), Some(1_000 + rng.below(3))),
            };
            txns[index].reads.push(Read { key: key.to_vec(), version, value });
        }
    }
    txns
}

/// A tiny serial history with one read (if any read a version above 0)
/// moved to an older version of its key, with that version's value.
fn serial_history_with_a_read_moved_back(seed: u64, txns_count: usize, stretch: u64, pick: u64) -> Vec<Txn> {
    let generated = serial_history(seed, txns_count, 2, stretch);
    let chains = generated.chains();
    let mut txns = generated.txns.clone();
    let reads: Vec<(usize, usize)> = (0..txns.len())
        .flat_map(|index| (0..txns[index].reads.len()).map(move |read| (index, read)))
        .filter(|&(index, read)| txns[index].reads[read].version > 0)
        .collect();
    let Some(&(index, read)) = reads.get((pick % reads.len().max(1) as u64) as usize) else {
        return txns;
    };
    let read = &mut txns[index].reads[read];
    let older: Vec<(Version, Option<u64>)> = chains[read.key.as_slice()]
        .iter()
        .filter(|&&(version, _, _)| version < read.version)
        .map(|&(version, value, _)| (version, value))
        .chain([(0, None)])
        .collect();
    (read.version, read.value) = older[((pick / 7) % older.len() as u64) as usize];
    txns
}

/// Asserts the checker and the oracle agree, and returns the oracle's answer.
fn agree(txns: &[Txn], strict: bool) -> Result<bool, TestCaseError> {
    let verdict = check_serializable(txns, &SerialOptions { strict }).expect("generated histories are well-formed");
    let serializable = brute_force(txns, strict);
    match &verdict {
        SerialVerdict::Serializable => prop_assert!(serializable, "checker passed, oracle found no order: {txns:?}"),
        SerialVerdict::Anomaly(anomaly) => prop_assert!(!serializable, "oracle found an order, checker: {anomaly}"),
        SerialVerdict::Undecided(undecided) => prop_assert!(false, "values are distinct, yet {undecided}"),
    }
    Ok(serializable)
}

proptest! {
    #![proptest_config(proptest_config(1024))]

    #[test]
    fn checker_agrees_with_brute_force_on_random_tiny_histories(seed in any::<u64>(), txns_count in 1usize..=6) {
        let txns = random_history(seed, txns_count);
        for strict in [false, true] {
            agree(&txns, strict)?;
        }
    }

    #[test]
    fn checker_agrees_with_brute_force_on_tiny_serial_histories_with_a_read_moved_back(
        seed in any::<u64>(),
        txns_count in 1usize..=6,
        stretch in 0u64..=300,
        pick in any::<u64>(),
    ) {
        let txns = serial_history_with_a_read_moved_back(seed, txns_count, stretch, pick);
        for strict in [false, true] {
            agree(&txns, strict)?;
        }
    }
}

/// Both answers are common in the histories above: agreement where one
/// answer dominated would prove little. Strict and plain differ too.
#[test]
fn the_oracle_tests_see_both_answers_often() {
    let mut counts = BTreeMap::new();
    for seed in 0..600 {
        let txns_count = 2 + seed as usize % 5;
        let random = random_history(seed, txns_count);
        let moved = serial_history_with_a_read_moved_back(seed, txns_count, 150, seed / 3);
        for (name, txns) in [("random", &random), ("moved", &moved)] {
            let answers = (agree(txns, false), agree(txns, true));
            let (Ok(plain), Ok(strict)) = answers else {
                panic!("seed {seed} ({name}): {answers:?}");
            };
            *counts.entry((name, plain, strict)).or_insert(0u32) += 1;
        }
    }
    for name in ["random", "moved"] {
        let count = |plain, strict| counts.get(&(name, plain, strict)).copied().unwrap_or(0);
        assert!(count(true, true) >= 60 && count(false, false) >= 60, "{name}: {counts:?}");
        assert!(count(true, false) >= 5, "{name}: serializable but not strictly: {counts:?}");
        assert_eq!(count(false, true), 0, "{name}: strictly serializable but not serializable: {counts:?}");
    }
}
