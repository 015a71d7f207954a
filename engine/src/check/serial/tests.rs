//! Hand-made transaction histories, named after the rule they check. Every
//! anomaly the checker exists for has a history it must reject with the
//! expected kind, next to histories it must accept.

use super::*;

/// Builds transactions tersely: `txn(3).reads("x", 10, Some(1)).writes("y",
/// Some(2)).commit(20)`. Every transaction starts invoked at 0 and returned
/// at 1_000, so all overlap and real time orders nothing unless `times` says
/// otherwise.
trait Build {
    fn reads(self, key: &str, version: Version, value: Option<u64>) -> Txn;
    fn writes(self, key: &str, value: Option<u64>) -> Txn;
    fn commit(self, version: Version) -> Txn;
    fn abort(self) -> Txn;
    fn unknown(self) -> Txn;
    fn read_only(self, snapshot: Version) -> Txn;
    fn times(self, invoke_time: u64, return_time: u64) -> Txn;
}

fn txn(id: TxnId) -> Txn {
    Txn {
        id,
        kind: TxnKind::ReadWrite,
        reads: Vec::new(),
        writes: Vec::new(),
        outcome: TxnOutcome::Committed { version: 0 },
        invoke_time: 0,
        return_time: Some(1_000),
    }
}

impl Build for Txn {
    fn reads(mut self, key: &str, version: Version, value: Option<u64>) -> Txn {
        self.reads.push(Read { key: key.as_bytes().to_vec(), version, value });
        self
    }

    fn writes(mut self, key: &str, value: Option<u64>) -> Txn {
        self.writes.push(Write { key: key.as_bytes().to_vec(), value });
        self
    }

    fn commit(mut self, version: Version) -> Txn {
        self.outcome = TxnOutcome::Committed { version };
        self
    }

    fn abort(mut self) -> Txn {
        self.outcome = TxnOutcome::Aborted;
        self
    }

    fn unknown(mut self) -> Txn {
        self.outcome = TxnOutcome::Unknown;
        self.return_time = None;
        self
    }

    fn read_only(mut self, snapshot: Version) -> Txn {
        self.kind = TxnKind::ReadOnly { snapshot };
        self
    }

    fn times(mut self, invoke_time: u64, return_time: u64) -> Txn {
        self.invoke_time = invoke_time;
        self.return_time = Some(return_time);
        self
    }
}

const STRICT: SerialOptions = SerialOptions { strict: true };
const PLAIN: SerialOptions = SerialOptions { strict: false };

fn check(txns: &[Txn], options: SerialOptions) -> SerialVerdict {
    check_serializable(txns, &options).expect("a well-formed history")
}

fn assert_serializable(txns: &[Txn]) {
    for options in [STRICT, PLAIN] {
        let verdict = check(txns, options);
        assert_eq!(verdict, SerialVerdict::Serializable, "{verdict}");
    }
}

/// The anomaly found (strict), which must be of `kind` and need no real time.
fn assert_anomaly(txns: &[Txn], kind: AnomalyKind) -> Anomaly {
    for options in [PLAIN, STRICT] {
        let verdict = check(txns, options);
        let SerialVerdict::Anomaly(anomaly) = &verdict else {
            panic!("expected {kind}, got {verdict}");
        };
        assert_eq!(anomaly.kind, kind, "{anomaly}");
        assert!(!anomaly.needs_real_time, "{anomaly}");
        assert_eq!(anomaly.kind.is_cycle(), !anomaly.cycle.is_empty(), "{anomaly}");
        assert_cycle_is_closed(anomaly);
    }
    let SerialVerdict::Anomaly(anomaly) = check(txns, STRICT) else { unreachable!("checked above") };
    anomaly
}

fn assert_cycle_is_closed(anomaly: &Anomaly) {
    for (index, edge) in anomaly.cycle.iter().enumerate() {
        let next = &anomaly.cycle[(index + 1) % anomaly.cycle.len()];
        assert_eq!(edge.to, next.from, "{anomaly}");
    }
    let ids: Vec<TxnId> = anomaly.cycle.iter().map(|edge| edge.from).collect();
    if !ids.is_empty() {
        assert_eq!(ids, anomaly.txns, "{anomaly}");
    }
}

fn rw_edges(anomaly: &Anomaly) -> usize {
    anomaly.cycle.iter().filter(|edge| matches!(edge.kind, EdgeKind::Rw { .. })).count()
}

// ----- histories a correct store produces -----

#[test]
fn an_empty_history_is_serializable() {
    assert_serializable(&[]);
}

#[test]
fn a_serial_history_is_serializable() {
    assert_serializable(&[
        txn(1).reads("x", 0, None).writes("x", Some(1)).writes("y", Some(2)).commit(10),
        txn(2).reads("x", 10, Some(1)).writes("y", Some(3)).commit(20),
        txn(3).reads("y", 20, Some(3)).reads("x", 10, Some(1)).commit(25),
        txn(4).writes("x", None).commit(30),
        txn(5).reads("x", 30, None).reads("z", 0, None).commit(31),
    ]);
}

#[test]
fn a_read_modify_write_needs_no_edge_to_itself() {
    assert_serializable(&[
        txn(1).writes("x", Some(1)).commit(10),
        txn(2).reads("x", 10, Some(1)).writes("x", Some(2)).commit(20),
        txn(3).reads("x", 20, Some(2)).writes("x", Some(3)).commit(30),
    ]);
}

#[test]
fn concurrent_transactions_may_serialize_in_either_order() {
    // T2 reads the state before T1 although both overlap in time.
    assert_serializable(&[
        txn(1).writes("x", Some(1)).commit(10).times(0, 50),
        txn(2).reads("x", 0, None).commit(5).times(10, 60),
    ]);
}

#[test]
fn a_read_only_transaction_reads_its_snapshot() {
    assert_serializable(&[
        txn(1).writes("x", Some(1)).commit(10),
        txn(2).writes("y", Some(2)).commit(20),
        txn(3).read_only(15).reads("x", 10, Some(1)).reads("y", 0, None),
        txn(4).read_only(20).reads("x", 10, Some(1)).reads("y", 20, Some(2)),
    ]);
}

#[test]
fn read_only_transactions_are_not_ordered_by_real_time() {
    // T2 began after T1 returned, yet reads a snapshot from before it.
    assert_serializable(&[
        txn(1).writes("x", Some(1)).commit(10).times(0, 5),
        txn(2).read_only(9).reads("x", 0, None).times(6, 7),
    ]);
}

#[test]
fn an_observed_unknown_transaction_committed_at_the_observed_version() {
    assert_serializable(&[
        txn(1).writes("x", Some(1)).writes("y", Some(2)).unknown(),
        txn(2).reads("x", 12, Some(1)).commit(13),
        txn(3).reads("y", 12, Some(2)).commit(14),
    ]);
}

#[test]
fn an_observed_unknown_transaction_commits_all_its_writes_at_that_version() {
    // T1's write of y is at version 12 too, so a snapshot at 15 must see it.
    let anomaly = assert_anomaly(
        &[
            txn(1).writes("x", Some(1)).writes("y", Some(2)).unknown(),
            txn(2).reads("x", 12, Some(1)).commit(13),
            txn(3).read_only(15).reads("y", 0, None),
        ],
        AnomalyKind::StaleSnapshot,
    );
    assert_eq!(anomaly.txns, vec![3, 1]);
}

#[test]
fn unknown_writers_are_found_through_each_other() {
    // T1 is seen by T2 (unknown), which T3 (committed) sees: both committed,
    // and T2's read of T1 counts.
    assert_serializable(&[
        txn(1).writes("x", Some(1)).unknown(),
        txn(2).reads("x", 5, Some(1)).writes("y", Some(2)).unknown(),
        txn(3).reads("y", 7, Some(2)).commit(9),
    ]);
    // The same chain, where T2's read (counted only once T2 is known live)
    // sees x after T3 overwrote it: a cycle.
    let anomaly = assert_anomaly(
        &[
            txn(1).writes("x", Some(1)).unknown(),
            txn(2).reads("x", 5, Some(1)).reads("z", 8, Some(3)).writes("y", Some(2)).unknown(),
            txn(3).reads("y", 7, Some(2)).writes("z", Some(3)).commit(8),
        ],
        AnomalyKind::G1c,
    );
    assert_eq!(anomaly.txns, vec![2, 3]);
}

#[test]
fn unobserved_unknown_and_aborted_transactions_are_dropped() {
    // Their reads would be impossible, but they never committed (or may not
    // have), so they do not count.
    assert_serializable(&[
        txn(1).reads("y", 99, Some(99)).writes("x", Some(1)).unknown(),
        txn(2).reads("y", 98, Some(98)).writes("x", Some(2)).abort(),
        txn(3).reads("x", 0, None).commit(1),
    ]);
}

#[test]
fn a_tombstone_is_read_as_absent_at_its_version() {
    assert_serializable(&[
        txn(1).writes("x", Some(1)).commit(10),
        txn(2).reads("x", 10, Some(1)).writes("x", None).commit(20),
        txn(3).reads("x", 20, None).commit(21),
    ]);
}

// ----- anomalies found before the graph -----

#[test]
fn an_aborted_read_is_g1a() {
    let anomaly = assert_anomaly(
        &[txn(1).writes("x", Some(7)).abort(), txn(2).reads("x", 5, Some(7)).commit(6)],
        AnomalyKind::AbortedRead,
    );
    assert_eq!(anomaly.txns, vec![2, 1]);
}

#[test]
fn a_garbage_read_is_caught() {
    assert_anomaly(
        &[txn(1).writes("x", Some(7)).commit(5), txn(2).reads("x", 6, Some(7)).commit(6)],
        AnomalyKind::GarbageRead,
    );
    assert_anomaly(&[txn(1).reads("x", 3, Some(1)).commit(6)], AnomalyKind::GarbageRead);
}

#[test]
fn a_read_of_its_own_commit_version_is_a_future_read() {
    // Reads of its own writes are served by the client and never recorded:
    // this one came from the store, before the write was installed.
    let anomaly =
        assert_anomaly(&[txn(1).reads("x", 10, Some(1)).writes("x", Some(1)).commit(10)], AnomalyKind::FutureRead);
    assert_eq!(anomaly.txns, vec![1]);
}

#[test]
fn a_value_mismatch_is_caught() {
    assert_anomaly(
        &[txn(1).writes("x", Some(7)).commit(5), txn(2).reads("x", 5, Some(8)).commit(6)],
        AnomalyKind::ValueMismatch,
    );
    // A tombstone read as a value, a value read as absent.
    assert_anomaly(
        &[txn(1).writes("x", None).commit(5), txn(2).reads("x", 5, Some(8)).commit(6)],
        AnomalyKind::ValueMismatch,
    );
    assert_anomaly(
        &[txn(1).writes("x", Some(7)).commit(5), txn(2).reads("x", 5, None).commit(6)],
        AnomalyKind::ValueMismatch,
    );
    // The initial state is absent.
    assert_anomaly(&[txn(1).reads("x", 0, Some(1)).commit(6)], AnomalyKind::ValueMismatch);
}

#[test]
fn a_duplicate_version_is_caught() {
    let anomaly = assert_anomaly(
        &[txn(1).writes("x", Some(1)).commit(5), txn(2).writes("x", Some(2)).commit(5)],
        AnomalyKind::DuplicateVersion,
    );
    assert_eq!(anomaly.txns, vec![1, 2]);
    // Also when one writer is an unknown transaction placed by a read.
    assert_anomaly(
        &[
            txn(1).writes("x", Some(1)).commit(5),
            txn(2).writes("x", Some(2)).writes("y", Some(3)).unknown(),
            txn(3).reads("y", 5, Some(3)).commit(6),
        ],
        AnomalyKind::DuplicateVersion,
    );
}

#[test]
fn one_committed_version_may_span_keys_of_different_transactions() {
    // Two shards may give two transactions the same commit version.
    assert_serializable(&[txn(1).writes("x", Some(1)).commit(5), txn(2).writes("y", Some(2)).commit(5)]);
}

#[test]
fn an_unknown_transaction_seen_at_two_versions_is_caught() {
    assert_anomaly(
        &[
            txn(1).writes("x", Some(1)).writes("y", Some(2)).unknown(),
            txn(2).reads("x", 5, Some(1)).commit(6),
            txn(3).reads("y", 7, Some(2)).commit(8),
        ],
        AnomalyKind::UnknownAtTwoVersions,
    );
}

#[test]
fn a_fractured_read_only_snapshot_is_stale() {
    // T2 sees one of T1's two writes.
    let anomaly = assert_anomaly(
        &[
            txn(1).writes("x", Some(1)).writes("y", Some(2)).commit(10),
            txn(2).read_only(15).reads("x", 10, Some(1)).reads("y", 0, None),
        ],
        AnomalyKind::StaleSnapshot,
    );
    assert!(anomaly.explanation.contains("fractured"), "{anomaly}");
}

#[test]
fn a_stale_read_only_snapshot_is_caught() {
    assert_anomaly(
        &[
            txn(1).writes("x", Some(1)).commit(10),
            txn(2).reads("x", 10, Some(1)).writes("x", Some(2)).commit(12),
            txn(3).read_only(14).reads("x", 10, Some(1)),
        ],
        AnomalyKind::StaleSnapshot,
    );
}

#[test]
fn a_read_above_the_snapshot_is_caught() {
    assert_anomaly(
        &[txn(1).writes("x", Some(1)).commit(10), txn(2).read_only(9).reads("x", 10, Some(1))],
        AnomalyKind::ReadAboveSnapshot,
    );
}

// ----- cycles -----

#[test]
fn a_lost_update_is_g_single() {
    // Both read x@0 and both write x: T2 overwrote T1's write without seeing it.
    let anomaly = assert_anomaly(
        &[
            txn(1).reads("x", 0, None).writes("x", Some(1)).commit(10),
            txn(2).reads("x", 0, None).writes("x", Some(2)).commit(20),
        ],
        AnomalyKind::GSingle,
    );
    assert_eq!(anomaly.txns, vec![1, 2]);
    assert_eq!(rw_edges(&anomaly), 1);
}

#[test]
fn write_skew_is_g2() {
    // Each reads both keys before either wrote, and each writes one of them.
    let anomaly = assert_anomaly(
        &[
            txn(1).reads("x", 0, None).reads("y", 0, None).writes("x", Some(1)).commit(10),
            txn(2).reads("x", 0, None).reads("y", 0, None).writes("y", Some(2)).commit(20),
        ],
        AnomalyKind::G2,
    );
    assert_eq!(rw_edges(&anomaly), 2);
}

#[test]
fn read_skew_is_g_single() {
    // T2 sees T1's write of y but not of x.
    assert_anomaly(
        &[
            txn(1).writes("x", Some(1)).writes("y", Some(2)).commit(10),
            txn(2).reads("x", 0, None).reads("y", 10, Some(2)).commit(11),
        ],
        AnomalyKind::GSingle,
    );
}

#[test]
fn a_non_repeatable_read_is_g_single() {
    assert_anomaly(
        &[
            txn(1).writes("x", Some(1)).commit(10),
            txn(2).writes("x", Some(2)).commit(20),
            txn(3).reads("x", 10, Some(1)).reads("x", 20, Some(2)).commit(21),
        ],
        AnomalyKind::GSingle,
    );
}

#[test]
fn circular_information_flow_is_g1c() {
    // Each read the other's write.
    let anomaly = assert_anomaly(
        &[
            txn(1).reads("y", 20, Some(2)).writes("x", Some(1)).commit(10),
            txn(2).reads("x", 10, Some(1)).writes("y", Some(2)).commit(20),
        ],
        AnomalyKind::G1c,
    );
    assert!(anomaly.cycle.iter().all(|edge| matches!(edge.kind, EdgeKind::Wr { .. })), "{anomaly}");
}

#[test]
fn a_read_of_a_later_overwrite_of_its_own_key_is_g1c() {
    // T1 writes x@10 yet read y written by T2, which overwrote x (ww + wr).
    assert_anomaly(
        &[
            txn(1).reads("y", 20, Some(2)).writes("x", Some(1)).commit(10),
            txn(2).writes("x", Some(3)).writes("y", Some(2)).commit(20),
        ],
        AnomalyKind::G1c,
    );
}

#[test]
fn a_real_time_violation_is_caught_only_when_strict() {
    // T2 began after T1 returned, yet read x from before T1's write.
    let history = [
        txn(1).writes("x", Some(1)).commit(10).times(0, 5),
        txn(2).reads("x", 0, None).writes("y", Some(2)).commit(11).times(6, 9),
    ];
    assert_eq!(check(&history, PLAIN), SerialVerdict::Serializable);
    let verdict = check(&history, STRICT);
    let SerialVerdict::Anomaly(anomaly) = &verdict else {
        panic!("expected a real-time cycle, got {verdict}");
    };
    assert_eq!(anomaly.kind, AnomalyKind::GSingle);
    assert!(anomaly.needs_real_time);
    assert_eq!(format!("{}", CycleText(&anomaly.cycle)), "T1 -rt-> T2 -rw(x@0..10)-> T1");
    assert!(anomaly.explanation.contains("T1 returned at 5 before T2 was invoked at 6"), "{anomaly}");
}

#[test]
fn equal_return_and_invoke_times_are_concurrent() {
    let history =
        [txn(1).writes("x", Some(1)).commit(10).times(0, 5), txn(2).reads("x", 0, None).commit(11).times(5, 9)];
    assert_eq!(check(&history, STRICT), SerialVerdict::Serializable);
}

#[test]
fn a_real_time_violation_through_many_returns_is_one_edge() {
    // Between T1's return and T2's invocation, other transactions return: the
    // barrier chain they make still collapses to one real-time edge.
    let mut history = vec![txn(1).writes("x", Some(1)).commit(10).times(0, 5)];
    for id in 3..20 {
        history.push(txn(id).writes(&format!("other{id}"), Some(id)).commit(id).times(5 + id, 6 + id));
    }
    history.push(txn(2).reads("x", 0, None).commit(11).times(100, 110));
    let SerialVerdict::Anomaly(anomaly) = check(&history, STRICT) else { panic!("expected a real-time cycle") };
    assert_eq!(format!("{}", CycleText(&anomaly.cycle)), "T1 -rt-> T2 -rw(x@0..10)-> T1");
}

#[test]
fn versions_going_backwards_in_real_time_are_g0_realtime() {
    // T2 began after T1 returned, but got a lower version of x.
    let history =
        [txn(1).writes("x", Some(1)).commit(20).times(0, 5), txn(2).writes("x", Some(2)).commit(10).times(6, 9)];
    assert_eq!(check(&history, PLAIN), SerialVerdict::Serializable);
    let SerialVerdict::Anomaly(anomaly) = check(&history, STRICT) else { panic!("expected a real-time cycle") };
    assert_eq!((anomaly.kind, anomaly.needs_real_time), (AnomalyKind::G0, true), "{anomaly}");
}

#[test]
fn an_observed_unknown_transaction_that_never_returned_is_ordered_after_earlier_returns() {
    // T2 never returned but was invoked after T1 returned; it read x before
    // T1's write.
    let history = [
        txn(1).writes("x", Some(1)).commit(10).times(0, 5),
        Txn { invoke_time: 6, ..txn(2).reads("x", 0, None).writes("y", Some(2)).unknown() },
        txn(3).reads("y", 12, Some(2)).commit(13).times(7, 9),
    ];
    let SerialVerdict::Anomaly(anomaly) = check(&history, STRICT) else { panic!("expected a real-time cycle") };
    assert!(anomaly.needs_real_time, "{anomaly}");
    assert_eq!(check(&history, PLAIN), SerialVerdict::Serializable);
}

#[test]
fn an_unknown_outcome_bounds_nothing_in_real_time() {
    // T1's client gave up at 5 (indeterminate); T1 committed later, at 12,
    // after T2, which began at 6, read x before it.
    let history = [
        Txn { return_time: Some(5), ..txn(1).writes("x", Some(1)).unknown() },
        txn(2).reads("x", 0, None).commit(11).times(6, 9),
        txn(3).reads("x", 12, Some(1)).commit(13).times(20, 30),
    ];
    assert_serializable(&history);
    // Committed, the same history is a real-time violation.
    let mut committed = history.to_vec();
    committed[0].outcome = TxnOutcome::Committed { version: 12 };
    let SerialVerdict::Anomaly(anomaly) = check(&committed, STRICT) else { panic!("expected a real-time cycle") };
    assert!(anomaly.needs_real_time, "{anomaly}");
}

#[test]
fn the_cycle_prints_like_elle() {
    let history = [
        txn(1).writes("y", Some(10)).commit(9),
        txn(5).reads("x", 17, Some(30)).reads("y", 9, Some(10)).commit(18),
        txn(3).writes("x", Some(30)).writes("y", Some(31)).commit(17),
    ];
    let anomaly = assert_anomaly(&history, AnomalyKind::GSingle);
    assert_eq!(format!("{}", CycleText(&anomaly.cycle)), "T3 -wr(x@17)-> T5 -rw(y@9..17)-> T3");
    assert_eq!(
        anomaly.to_string(),
        "G-single: T3 -wr(x@17)-> T5 -rw(y@9..17)-> T3: T5 read T3's write x@17; \
         T5 read y@9, which T3 overwrote with y@17; so each must precede the next, around a cycle"
    );
}

// ----- what the checker cannot decide -----

#[test]
fn two_unknown_writers_of_one_value_are_undecided() {
    // Two unknown deletes of x: either may be the tombstone read at 5.
    let history =
        [txn(1).writes("x", None).unknown(), txn(2).writes("x", None).unknown(), txn(3).reads("x", 5, None).commit(6)];
    let verdict = check(&history, STRICT);
    let SerialVerdict::Undecided(undecided) = &verdict else { panic!("expected undecided, got {verdict}") };
    assert_eq!(undecided.candidates, vec![1, 2]);
    assert_eq!(undecided.reader, 3);
}

#[test]
fn another_observation_can_decide_between_unknown_writers() {
    // T1 is also seen writing y at 5, so it wrote the tombstone.
    let history = [
        txn(1).writes("x", None).writes("y", Some(1)).unknown(),
        txn(2).writes("x", None).unknown(),
        txn(3).reads("x", 5, None).commit(6),
        txn(4).reads("y", 5, Some(1)).commit(6),
    ];
    assert_serializable(&history);
}

#[test]
fn an_anomaly_is_reported_despite_an_undecided_read() {
    let history = [
        txn(1).writes("x", None).unknown(),
        txn(2).writes("x", None).unknown(),
        txn(3).reads("x", 5, None).commit(6),
        txn(4).reads("z", 0, None).writes("z", Some(1)).commit(10),
        txn(5).reads("z", 0, None).writes("z", Some(2)).commit(20),
    ];
    assert_anomaly(&history, AnomalyKind::GSingle);
}

// ----- malformed histories -----

#[test]
fn malformed_histories_are_errors() {
    let cases = [
        (vec![txn(1), txn(1)], TxnHistoryError::DuplicateId { id: 1 }),
        (vec![txn(1).times(5, 4)], TxnHistoryError::ReturnBeforeInvoke { id: 1, invoke_time: 5, return_time: 4 }),
        (vec![Txn { return_time: None, ..txn(1) }], TxnHistoryError::DefiniteOutcomeWithoutReturn { id: 1 }),
        (vec![txn(1).writes("x", Some(1)).commit(0)], TxnHistoryError::CommitVersionZero { id: 1 }),
        (vec![txn(1).read_only(5).writes("x", Some(1)).commit(5)], TxnHistoryError::ReadOnlyWithWrites { id: 1 }),
        (
            vec![txn(1).writes("x", Some(1)).writes("x", Some(2)).commit(5)],
            TxnHistoryError::KeyWrittenTwice { id: 1, key: b"x".to_vec() },
        ),
    ];
    for (history, error) in cases {
        assert_eq!(check_serializable(&history, &STRICT), Err(error));
    }
}
