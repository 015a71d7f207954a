//! Property tests: serial executions of random transactions (see
//! `tests_gen`) must pass, strictly; the same histories with one read moved to
//! the version just before the one it saw must fail, with the expected kind,
//! wherever that makes an anomaly by construction:
//! - a read-only reader now misses a version at or below its snapshot: a stale
//!   snapshot;
//! - a read-write reader that also read another write of the overwriting
//!   transaction now sees half of it: a G-single cycle of data edges;
//! - a read-write reader that began after the overwriting transaction
//!   returned now serializes before it: a cycle through real time (strict).

use proptest::prelude::*;

use super::super::tests_prop::proptest_config;
use super::tests_gen::{Generated, serial_history};
use super::*;

fn check(txns: &[Txn], strict: bool) -> SerialVerdict {
    check_serializable(txns, &SerialOptions { strict }).expect("generated histories are well-formed")
}

/// What a mutation must produce.
#[derive(Debug)]
enum Expected {
    /// This kind, with and without `strict`, needing no real time.
    Exactly(AnomalyKind),
    /// A cycle through the reader, with `strict`.
    StrictCycleThrough(TxnId),
}

/// The history with one committed transaction's read of (k, v) changed to
/// the version of k just before v (0 when none), with its value, and what the
/// checker must then say; `pick` chooses among the reads where an anomaly
/// follows by construction. `None` when there is no such read.
fn move_read_back(generated: &Generated, pick: u64) -> Option<(Vec<Txn>, Expected)> {
    let txns = &generated.txns;
    let chains = generated.chains();
    let mut candidates = Vec::new();
    for (index, reader) in txns.iter().enumerate() {
        if !matches!(reader.outcome, TxnOutcome::Committed { .. }) {
            continue;
        }
        for (read_index, read) in reader.reads.iter().enumerate() {
            let Some(chain) = chains.get(read.key.as_slice()) else {
                continue;
            };
            let Some(position) = chain.iter().position(|&(version, _, _)| version == read.version) else {
                continue;
            };
            let writer = &txns[chain[position].2];
            if !matches!(writer.outcome, TxnOutcome::Committed { .. }) {
                continue;
            }
            let (older, older_value) = match position {
                0 => (0, None),
                _ => (chain[position - 1].0, chain[position - 1].1),
            };
            let saw_more_of_writer = reader
                .reads
                .iter()
                .enumerate()
                .any(|(other, seen)| other != read_index && seen.version == read.version);
            let began_after_writer = writer.return_time.is_some_and(|time| time < reader.invoke_time);
            let expected = match reader.kind {
                TxnKind::ReadOnly { .. } => Expected::Exactly(AnomalyKind::StaleSnapshot),
                TxnKind::ReadWrite if saw_more_of_writer => Expected::Exactly(AnomalyKind::GSingle),
                TxnKind::ReadWrite if began_after_writer => Expected::StrictCycleThrough(reader.id),
                TxnKind::ReadWrite => continue,
            };
            candidates.push((index, read_index, older, older_value, expected));
        }
    }
    if candidates.is_empty() {
        return None;
    }
    let (index, read_index, older, older_value, expected) =
        candidates.swap_remove((pick % candidates.len() as u64) as usize);
    let mut mutated = txns.clone();
    let read = &mut mutated[index].reads[read_index];
    read.version = older;
    read.value = older_value;
    Some((mutated, expected))
}

fn assert_expected(mutated: &[Txn], expected: &Expected) -> Result<(), TestCaseError> {
    match *expected {
        Expected::Exactly(kind) => {
            for strict in [false, true] {
                let verdict = check(mutated, strict);
                let SerialVerdict::Anomaly(anomaly) = &verdict else {
                    return Err(TestCaseError::fail(format!("expected {kind}, got {verdict}")));
                };
                prop_assert_eq!(anomaly.kind, kind, "{}", anomaly);
                prop_assert!(!anomaly.needs_real_time, "{}", anomaly);
            }
        }
        Expected::StrictCycleThrough(reader) => {
            let verdict = check(mutated, true);
            let SerialVerdict::Anomaly(anomaly) = &verdict else {
                return Err(TestCaseError::fail(format!("expected a cycle through T{reader}, got {verdict}")));
            };
            prop_assert!(anomaly.kind.is_cycle(), "{}", anomaly);
            prop_assert!(anomaly.txns.contains(&reader), "{}", anomaly);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(proptest_config(256))]

    #[test]
    fn serial_histories_are_strictly_serializable(
        seed in any::<u64>(),
        txns_count in 0usize..150,
        keys in 1u64..=6,
        stretch in 0u64..=400,
    ) {
        let generated = serial_history(seed, txns_count, keys, stretch);
        for strict in [true, false] {
            let verdict = check(&generated.txns, strict);
            prop_assert_eq!(&verdict, &SerialVerdict::Serializable, "{}", verdict);
        }
    }

    #[test]
    fn a_read_moved_to_an_older_version_is_caught(
        seed in any::<u64>(),
        txns_count in 10usize..120,
        keys in 1u64..=4,
        stretch in 0u64..=400,
        pick in any::<u64>(),
    ) {
        let generated = serial_history(seed, txns_count, keys, stretch);
        let mutation = move_read_back(&generated, pick);
        prop_assume!(mutation.is_some());
        let (mutated, expected) = mutation.expect("assumed");
        assert_expected(&mutated, &expected)?;
    }
}

#[test]
fn a_hundred_thousand_serial_transactions_are_serializable_and_one_moved_read_is_caught() {
    let generated = serial_history(0x636f_7265_6b76, 100_000, 1_000, 300);
    assert_eq!(check(&generated.txns, true), SerialVerdict::Serializable);
    for pick in [0, 7_777] {
        let (mutated, expected) = move_read_back(&generated, pick).expect("a long history has reads to move");
        assert_expected(&mutated, &expected).expect("the moved read is caught");
    }
}

/// The generator gives the mutation property all three constructions to
/// check, often: a property that only ever saw one would prove less than it
/// claims.
#[test]
fn moved_reads_cover_every_construction() {
    let (mut stale, mut half_seen, mut real_time) = (0, 0, 0);
    for seed in 0..300 {
        let generated = serial_history(seed, 60, 3, 200);
        let Some((mutated, expected)) = move_read_back(&generated, seed) else {
            continue;
        };
        assert_expected(&mutated, &expected).unwrap_or_else(|error| panic!("seed {seed}: {error}"));
        match expected {
            Expected::Exactly(AnomalyKind::StaleSnapshot) => stale += 1,
            Expected::Exactly(_) => half_seen += 1,
            Expected::StrictCycleThrough(_) => real_time += 1,
        }
    }
    assert!(
        stale >= 30 && half_seen >= 30 && real_time >= 30,
        "{stale} stale, {half_seen} half seen, {real_time} real time"
    );
}
