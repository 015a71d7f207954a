//! Hand-made histories, named after the rule they check. Every bug class the
//! checker exists for (stale read, lost write, double apply, versions going
//! backwards, a cas against the wrong version, a wrong read-at) has a history
//! it must reject, next to concurrent histories it must accept.

use super::*;

const KEY: &[u8] = b"k";

/// Operation on `KEY` by client 0, invoked and returned at the given times.
fn op(invoke_time: u64, return_time: u64, call: Call, outcome: Outcome) -> Operation {
    Operation { client: 0, invoke_time, return_time: Some(return_time), call, outcome }
}

/// An operation that never returned.
fn lost(invoke_time: u64, call: Call) -> Operation {
    Operation { client: 0, invoke_time, return_time: None, call, outcome: Outcome::Indeterminate }
}

fn get() -> Call {
    Call::Get { key: KEY.to_vec() }
}

fn get_at(at_version: Version) -> Call {
    Call::GetAt { key: KEY.to_vec(), at_version }
}

fn put(value: &str) -> Call {
    Call::Put { key: KEY.to_vec(), value: value.as_bytes().to_vec() }
}

fn delete() -> Call {
    Call::Delete { key: KEY.to_vec() }
}

fn cas(expected_version: Version, value: &str) -> Call {
    Call::Cas { key: KEY.to_vec(), expected_version, value: value.as_bytes().to_vec() }
}

fn value(value: &str, version: Version) -> Outcome {
    Outcome::Value { value: value.as_bytes().to_vec(), version }
}

fn written(version: Version) -> Outcome {
    Outcome::Written { version }
}

fn mismatch(current: Version) -> Outcome {
    Outcome::VersionMismatch { current }
}

fn check(ops: &[Operation]) -> CheckResult {
    check_history(ops, &CheckConfig::default()).expect("valid history")
}

fn assert_linearizable(ops: &[Operation]) {
    let result = check(ops);
    assert_eq!(result, CheckResult::Linearizable, "{result}");
}

fn assert_not_linearizable(ops: &[Operation]) -> Witness {
    match check(ops) {
        CheckResult::NotLinearizable { key, witness } => {
            assert_eq!(key, KEY);
            witness
        }
        other => panic!("expected a violation, got {other}"),
    }
}

// ---- histories that must pass ----

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&[]);
}

#[test]
fn sequential_put_get_delete_cas() {
    assert_linearizable(&[
        op(0, 1, get(), Outcome::NotFound),
        op(2, 3, put("a"), written(5)),
        op(4, 5, get(), value("a", 5)),
        op(6, 7, cas(5, "b"), written(9)),
        op(8, 9, cas(5, "c"), mismatch(9)),
        op(10, 11, delete(), written(10)),
        op(12, 13, get(), Outcome::NotFound),
        op(14, 15, delete(), Outcome::NotFound),
        op(16, 17, cas(10, "d"), mismatch(0)),
        op(18, 19, cas(0, "d"), written(11)),
        op(20, 21, cas(0, "e"), mismatch(11)),
    ]);
}

#[test]
fn concurrent_reads_may_see_old_or_new_value() {
    // The put overlaps both reads: one sees it, the other does not, in an
    // order that is fine because the one that misses it starts first.
    assert_linearizable(&[
        op(0, 100, put("a"), written(1)),
        op(10, 20, get(), value("a", 1)),
        op(5, 90, get(), Outcome::NotFound),
    ]);
}

#[test]
fn concurrent_writes_take_effect_in_version_order() {
    // Two overlapping puts; the reads fix the order b (version 2) then a
    // (version 3), the reverse of their invocation order.
    assert_linearizable(&[
        op(0, 50, put("a"), written(3)),
        op(10, 60, put("b"), written(2)),
        op(20, 30, get(), value("b", 2)),
        op(70, 80, get(), value("a", 3)),
    ]);
}

#[test]
fn concurrent_cas_one_wins() {
    assert_linearizable(&[
        op(0, 10, put("a"), written(1)),
        op(20, 50, cas(1, "x"), mismatch(2)),
        op(21, 49, cas(1, "y"), written(2)),
        op(60, 70, get(), value("y", 2)),
    ]);
}

#[test]
fn operations_that_touch_count_as_concurrent() {
    // The read is invoked at the instant the put returns.
    assert_linearizable(&[op(0, 10, put("a"), written(1)), op(10, 20, get(), Outcome::NotFound)]);
}

#[test]
fn read_at_version_sees_newest_at_or_below() {
    assert_linearizable(&[
        op(0, 1, put("a"), written(3)),
        op(2, 3, put("b"), written(5)),
        op(4, 5, delete(), written(7)),
        op(6, 7, put("c"), written(9)),
        op(10, 11, get_at(2), Outcome::NotFound),
        op(12, 13, get_at(3), value("a", 3)),
        op(14, 15, get_at(4), value("a", 3)),
        op(16, 17, get_at(6), value("b", 5)),
        op(18, 19, get_at(8), Outcome::NotFound),
        op(20, 21, get_at(100), value("c", 9)),
        op(22, 23, get_at(1), Outcome::Compacted),
    ]);
}

#[test]
fn indeterminate_put_that_took_effect() {
    assert_linearizable(&[op(0, 10, put("a"), written(1)), lost(20, put("b")), op(30, 40, get(), value("b", 4))]);
}

#[test]
fn indeterminate_put_that_did_not_take_effect() {
    assert_linearizable(&[
        op(0, 10, put("a"), written(1)),
        lost(20, put("b")),
        op(30, 40, get(), value("a", 1)),
        op(50, 60, put("c"), written(2)),
    ]);
}

#[test]
fn indeterminate_write_may_take_effect_after_its_reply() {
    // The client was told "indeterminate" at 30; the write still applies later.
    assert_linearizable(&[
        op(0, 10, put("a"), written(1)),
        op(20, 30, put("b"), Outcome::Indeterminate),
        op(40, 50, get(), value("a", 1)),
        op(60, 70, get(), value("b", 6)),
    ]);
}

#[test]
fn indeterminate_version_is_learned_from_later_reads() {
    // b's version is unknown; the read-at-4 seeing a pushes it above 4, and
    // c at 8 bounds it below 8: the read of b at 6 fits.
    assert_linearizable(&[
        op(0, 10, put("a"), written(2)),
        lost(20, put("b")),
        op(30, 40, get_at(4), value("a", 2)),
        op(50, 60, put("c"), written(8)),
        op(70, 80, get_at(7), value("b", 6)),
    ]);
}

#[test]
fn indeterminate_delete_and_cas() {
    assert_linearizable(&[
        op(0, 10, put("a"), written(1)),
        lost(20, delete()),
        op(30, 40, get(), Outcome::NotFound),
        lost(50, cas(0, "b")),
        op(60, 70, cas(3, "c"), written(4)),
        op(80, 90, get(), value("c", 4)),
    ]);
}

#[test]
fn unconstraining_outcomes_are_ignored() {
    assert_linearizable(&[
        op(0, 10, put("a"), written(1)),
        op(20, 30, get(), Outcome::Unavailable),
        op(20, 30, get(), Outcome::Indeterminate),
        op(20, 30, put("never"), Outcome::Unavailable),
        op(40, 50, get(), value("a", 1)),
    ]);
}

#[test]
fn keys_are_checked_independently() {
    let other = |call: Call, outcome| Operation { client: 1, invoke_time: 5, return_time: Some(6), call, outcome };
    let history = vec![
        op(0, 10, put("a"), written(1)),
        other(Call::Put { key: b"j".to_vec(), value: b"z".to_vec() }, written(1)),
        op(20, 30, get(), value("a", 1)),
    ];
    assert_linearizable(&history);
}

// ---- histories that must fail ----

#[test]
fn stale_read_is_caught() {
    let witness = assert_not_linearizable(&[
        op(0, 10, put("a"), written(1)),
        op(20, 30, put("b"), written(2)),
        op(40, 50, get(), value("a", 1)),
    ]);
    assert_eq!(witness.history[witness.blocked].call, get());
}

#[test]
fn lost_write_is_caught() {
    // b was acknowledged, yet every later read sees a.
    assert_not_linearizable(&[
        op(0, 10, put("a"), written(1)),
        op(20, 30, get(), value("a", 1)),
        op(40, 50, put("b"), written(2)),
        op(60, 70, get(), value("a", 1)),
        op(80, 90, get(), value("a", 1)),
    ]);
}

#[test]
fn read_of_a_value_never_written_is_caught() {
    assert_not_linearizable(&[op(0, 10, put("a"), written(1)), op(20, 30, get(), value("z", 1))]);
}

#[test]
fn double_apply_of_a_put_is_caught() {
    // The retried put of a shows up at two versions, with b between them.
    assert_not_linearizable(&[
        op(0, 100, put("a"), written(1)),
        op(10, 20, put("b"), written(2)),
        op(30, 40, get(), value("b", 2)),
        op(50, 60, get(), value("a", 3)),
    ]);
}

#[test]
fn double_apply_of_a_cas_is_caught() {
    assert_not_linearizable(&[
        op(0, 10, put("a"), written(1)),
        op(20, 100, cas(1, "b"), written(2)),
        op(30, 40, get(), value("b", 2)),
        op(50, 60, get(), value("b", 3)),
    ]);
}

#[test]
fn versions_going_backwards_are_caught() {
    assert_not_linearizable(&[op(0, 10, put("a"), written(5)), op(20, 30, put("b"), written(3))]);
}

#[test]
fn version_zero_is_never_written() {
    assert_not_linearizable(&[op(0, 10, put("a"), written(0))]);
}

#[test]
fn read_version_must_match_the_write() {
    assert_not_linearizable(&[op(0, 10, put("a"), written(4)), op(20, 30, get(), value("a", 5))]);
}

#[test]
fn cas_against_a_stale_version_is_caught() {
    assert_not_linearizable(&[
        op(0, 10, put("a"), written(1)),
        op(20, 30, put("b"), written(2)),
        op(40, 50, cas(1, "c"), written(3)),
    ]);
}

#[test]
fn cas_mismatch_must_report_the_current_version() {
    assert_not_linearizable(&[op(0, 10, put("a"), written(1)), op(20, 30, cas(7, "c"), mismatch(2))]);
    // A deleted key reports 0.
    assert_not_linearizable(&[
        op(0, 10, put("a"), written(1)),
        op(20, 30, delete(), written(2)),
        op(40, 50, cas(1, "c"), mismatch(2)),
    ]);
}

#[test]
fn cas_expecting_absent_fails_on_a_live_key() {
    assert_not_linearizable(&[op(0, 10, put("a"), written(1)), op(20, 30, cas(0, "c"), written(2))]);
}

#[test]
fn delete_of_an_absent_key_writes_nothing() {
    assert_not_linearizable(&[op(0, 10, delete(), written(1))]);
    assert_not_linearizable(&[op(0, 10, put("a"), written(1)), op(20, 30, delete(), Outcome::NotFound)]);
}

#[test]
fn read_after_delete_finds_nothing() {
    assert_not_linearizable(&[
        op(0, 10, put("a"), written(1)),
        op(20, 30, delete(), written(2)),
        op(40, 50, get(), value("a", 1)),
    ]);
}

#[test]
fn read_at_version_must_return_the_newest_at_or_below() {
    let writes = [op(0, 1, put("a"), written(3)), op(2, 3, put("b"), written(5)), op(4, 5, delete(), written(7))];
    let with = |read: Operation| {
        let mut history = writes.to_vec();
        history.push(read);
        history
    };
    // Not the newest ≤ 6.
    assert_not_linearizable(&with(op(10, 11, get_at(6), value("a", 3))));
    // Newer than V.
    assert_not_linearizable(&with(op(10, 11, get_at(4), value("b", 5))));
    // A value exists at or below 4.
    assert_not_linearizable(&with(op(10, 11, get_at(4), Outcome::NotFound)));
    // The newest ≤ 8 is a tombstone.
    assert_not_linearizable(&with(op(10, 11, get_at(8), value("b", 5))));
}

#[test]
fn indeterminate_write_cannot_take_effect_before_its_invocation() {
    assert_not_linearizable(&[op(0, 10, get(), value("b", 1)), lost(20, put("b"))]);
}

#[test]
fn indeterminate_version_must_exceed_the_one_before() {
    assert_not_linearizable(&[op(0, 10, put("a"), written(1)), lost(20, put("b")), op(30, 40, get(), value("b", 1))]);
}

#[test]
fn no_room_for_an_indeterminate_write_between_adjacent_versions() {
    // The read proves the delete took effect before c, so its tombstone needs
    // a version strictly between 1 and 2: there is none.
    let history = |c_version| {
        vec![
            op(0, 10, put("a"), written(1)),
            lost(20, delete()),
            op(30, 40, get(), Outcome::NotFound),
            op(50, 60, put("c"), written(c_version)),
        ]
    };
    assert_not_linearizable(&history(2));
    assert_linearizable(&history(3));
}

#[test]
fn unavailable_write_never_takes_effect() {
    assert_not_linearizable(&[op(0, 10, put("a"), Outcome::Unavailable), op(20, 30, get(), value("a", 1))]);
}

#[test]
fn failure_names_the_failing_key() {
    let history = vec![
        Operation {
            client: 1,
            invoke_time: 0,
            return_time: Some(1),
            call: Call::Get { key: b"a".to_vec() },
            outcome: Outcome::NotFound,
        },
        op(0, 10, put("a"), written(1)),
        op(20, 30, get(), Outcome::NotFound),
    ];
    let witness = assert_not_linearizable(&history);
    assert_eq!(witness.history.len(), 2);
    assert!(witness.to_string().contains("returned"));
}

// ---- budget ----

#[test]
fn exhausted_budget_answers_unknown() {
    // Twelve reads concurrent with a put can be ordered in thousands of ways,
    // and the stale read at the end makes the search try them all; with
    // a tiny budget it must say so rather than pass.
    let mut history = vec![op(0, 100, put("a"), written(1))];
    for i in 0..12 {
        let outcome = if i % 2 == 0 { Outcome::NotFound } else { value("a", 1) };
        history.push(op(i, 100 - i, get(), outcome));
    }
    history.push(op(200, 210, get(), Outcome::NotFound));
    let config = CheckConfig { states_per_key_max: 100 };
    match check_history(&history, &config).expect("valid history") {
        CheckResult::Unknown { key, states_explored } => {
            assert_eq!(key, KEY);
            assert_eq!(states_explored, 100);
        }
        other => panic!("expected unknown, got {other}"),
    }
    // With the default budget the same history is decided.
    assert_not_linearizable(&history);
}

// ---- validation ----

#[test]
fn malformed_histories_are_errors_not_panics() {
    let config = CheckConfig::default();
    let early = op(10, 5, get(), Outcome::NotFound);
    assert!(matches!(check_history(&[early], &config), Err(HistoryError::ReturnBeforeInvoke { index: 0, .. })));
    let mut unreturned = lost(0, get());
    unreturned.outcome = Outcome::NotFound;
    assert!(matches!(
        check_history(&[unreturned], &config),
        Err(HistoryError::DefiniteOutcomeWithoutReturn { index: 0, .. })
    ));
    let misfit = op(0, 1, put("a"), Outcome::Compacted);
    assert!(matches!(check_history(&[misfit], &config), Err(HistoryError::OutcomeDoesNotFitCall { index: 0, .. })));
    let two_keys = [
        op(0, 1, get(), Outcome::NotFound),
        Operation { call: Call::Get { key: b"j".to_vec() }, ..op(0, 1, get(), Outcome::NotFound) },
    ];
    assert!(matches!(check_key(&two_keys, &config), Err(HistoryError::MoreThanOneKey { index: 1 })));
}

#[test]
fn extreme_versions_and_times_do_not_panic() {
    let max = u64::MAX;
    assert_linearizable(&[
        op(0, 1, put("a"), written(max)),
        op(2, 3, get_at(max), value("a", max)),
        op(4, 5, get(), value("a", max)),
        lost(6, put("b")),
        op(max - 1, max, get_at(max - 1), Outcome::NotFound),
    ]);
    // Nothing can follow the largest version.
    assert_not_linearizable(&[op(0, 1, put("a"), written(max)), op(2, 3, put("b"), written(max))]);
    assert_not_linearizable(&[op(0, 1, put("a"), written(max)), lost(2, put("b")), op(3, 4, get(), value("b", max))]);
}

// ---- shrinking ----

#[test]
fn shrink_finds_the_stale_read_in_a_long_history() {
    // A long linearizable run of puts and reads, with one stale read planted
    // in the middle.
    let mut history = Vec::new();
    for i in 0..40u64 {
        let time = i * 100;
        history.push(op(time, time + 10, put(&format!("v{i}")), written(i + 1)));
        history.push(op(time + 20, time + 30, get(), value(&format!("v{i}"), i + 1)));
    }
    history.push(op(2_050, 2_060, get(), value("v3", 4)));
    let shrunk = shrink_key_history(&history, &CheckConfig::default(), SHRINK_CHECKS_MAX_DEFAULT)
        .expect("valid history")
        .expect("the history fails");
    assert!(!shrunk.budget_exhausted);
    assert!(shrunk.ops.len() <= 3, "kept {:?}", shrunk.ops);
    assert!(shrunk.ops.contains(&op(2_050, 2_060, get(), value("v3", 4))));
    assert!(matches!(check_key(&shrunk.ops, &CheckConfig::default()), Ok(KeyVerdict::NotLinearizable(_))));
}

#[test]
fn shrink_does_not_blame_a_read_for_a_dropped_write() {
    // Dropping the put of a would make the first read unjustified; the shrinker
    // must not report that artefact as the failure.
    let history = [
        op(0, 10, put("a"), written(1)),
        op(20, 30, get(), value("a", 1)),
        op(40, 50, put("b"), written(2)),
        op(60, 70, get(), value("a", 1)),
    ];
    let shrunk =
        shrink_key_history(&history, &CheckConfig::default(), 100).expect("valid history").expect("the history fails");
    assert!(shrunk.ops.contains(&history[2]), "kept {:?}", shrunk.ops);
    assert!(shrunk.ops.contains(&history[3]), "kept {:?}", shrunk.ops);
    assert!(!shrunk.ops.contains(&history[1]), "kept {:?}", shrunk.ops);
}

#[test]
fn shrink_of_a_linearizable_history_is_none() {
    let history = [op(0, 10, put("a"), written(1))];
    assert_eq!(shrink_key_history(&history, &CheckConfig::default(), 10), Ok(None));
}
