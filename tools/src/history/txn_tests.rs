//! Transaction lines through the reader and both checkers: planted anomalies
//! that must fail, clean histories that must pass, both kinds of line in one
//! file, bad lines named.

use corekv_engine::check::serial::AnomalyKind;

use super::*;

/// A committed read-write transaction `name` of `client` that did nothing yet,
/// from `invoke` to `invoke + 1`.
fn txn(name: &str, client: u64, invoke: u64) -> TxnRecord {
    TxnRecord {
        client,
        op: "txn".into(),
        txn: name.into(),
        policy: "wound-wait".into(),
        attempt: 1,
        start_version: invoke,
        reads: Vec::new(),
        writes: Vec::new(),
        invoke_ns: invoke,
        return_ns: Some(invoke + 1),
        outcome: "ok".into(),
        reason: None,
        // Ignored for a transaction that writes nothing.
        version: Some(invoke + 1),
    }
}

impl TxnRecord {
    fn reads(mut self, key: &str, version: u64, value: Option<&str>) -> TxnRecord {
        self.reads.push(TxnReadRecord::new(key.as_bytes(), version, value.map(str::as_bytes)));
        self
    }

    fn writes(mut self, key: &str, value: Option<&str>) -> TxnRecord {
        self.writes.push(TxnWriteRecord::new(key.as_bytes(), value.map(str::as_bytes)));
        self
    }

    fn committed_at(self, version: u64) -> TxnRecord {
        TxnRecord { version: Some(version), ..self }
    }

    fn ended(self, outcome: &str) -> TxnRecord {
        let return_ns = if outcome == "indeterminate" { None } else { self.return_ns };
        TxnRecord { outcome: outcome.into(), return_ns, version: None, ..self }
    }

    fn during(self, invoke: u64, ret: u64) -> TxnRecord {
        TxnRecord { invoke_ns: invoke, return_ns: Some(ret), ..self }
    }

    fn read_only_at(self, snapshot: u64) -> TxnRecord {
        TxnRecord { policy: "read-only".into(), start_version: snapshot, version: Some(snapshot), ..self }
    }
}

/// A register line: a put or get of `key` answered ok at `version`.
fn register(op: &str, key: &str, value: &str, version: u64, at: u64) -> Record {
    Record {
        client: 9,
        op: op.into(),
        key: None,
        key_b64: None,
        value_hash: Some(value_hash(value.as_bytes())),
        expected: None,
        invoke_ns: at,
        return_ns: Some(at + 1),
        outcome: "ok".into(),
        version: Some(version),
    }
    .with_key(key.as_bytes())
}

enum L {
    R(Record),
    T(TxnRecord),
}

fn bytes(lines: &[L]) -> Vec<u8> {
    let mut w = HistoryWriter::new(Vec::new());
    for line in lines {
        match line {
            L::R(r) => w.write(r).unwrap(),
            L::T(t) => w.write_txn(t).unwrap(),
        }
    }
    w.out
}

fn verdict(lines: &[L]) -> FileVerdict {
    check_all(&read_all(&bytes(lines)[..]).unwrap()).unwrap()
}

fn txns(records: Vec<TxnRecord>) -> Vec<L> {
    records.into_iter().map(L::T).collect()
}

/// The anomaly of a failed check, or a panic naming the verdict.
fn anomaly_of(verdict: &FileVerdict) -> (TxnScope, AnomalyKind, bool, Vec<String>) {
    assert_eq!(verdict.exit_code(), 1, "{verdict:?}");
    match &verdict.txns {
        TxnVerdict::NotSerializable { scope, anomaly, involved } => {
            (*scope, anomaly.kind, anomaly.needs_real_time, involved.clone())
        }
        other => panic!("the planted anomaly passed: {other:?}"),
    }
}

#[test]
fn a_clean_bank_history_passes() {
    let history = txns(vec![
        // Two transfers in a row, one aborted, one indeterminate never seen.
        txn("a.1", 1, 0)
            .reads("x", 0, None)
            .reads("y", 0, None)
            .writes("x", Some("x1"))
            .writes("y", Some("y1"))
            .committed_at(10),
        txn("b.1", 2, 1).reads("x", 0, None).writes("x", Some("lost")).ended("aborted").during(1, 3),
        txn("b.2", 2, 4).reads("x", 10, Some("x1")).writes("x", Some("x2")).committed_at(20),
        txn("c.1", 3, 6).reads("y", 10, Some("y1")).writes("y", Some("maybe")).ended("indeterminate"),
        // An audit at a snapshot between the two commits: not fresh, but consistent.
        txn("d.1", 4, 30).reads("x", 10, Some("x1")).reads("y", 10, Some("y1")).read_only_at(15),
        txn("e.1", 5, 40).writes("z", None).ended("unavailable"),
    ]);
    let verdict = verdict(&history);
    assert_eq!(verdict.txns, TxnVerdict::Serializable { transactions: 6, read_only: 1, plain: 0 });
    assert_eq!(verdict.registers, Verdict::Linearizable { operations: 0, skipped: 0 });
    assert_eq!(verdict.exit_code(), 0);
}

#[test]
fn a_lost_update_fails() {
    // Both read x absent and wrote it: the first write is lost.
    let history = txns(vec![
        txn("a.1", 1, 0).reads("x", 0, None).writes("x", Some("a")).committed_at(10).during(0, 5),
        txn("b.1", 2, 1).reads("x", 0, None).writes("x", Some("b")).committed_at(20).during(1, 6),
    ]);
    let (scope, kind, needs_real_time, involved) = anomaly_of(&verdict(&history));
    assert_eq!((scope, kind, needs_real_time), (TxnScope::ReadWrite, AnomalyKind::GSingle, false));
    assert!(involved.iter().any(|name| name.starts_with("line 1: txn a.1")), "{involved:?}");
    assert!(involved.iter().any(|name| name.starts_with("line 2: txn b.1")), "{involved:?}");
}

#[test]
fn write_skew_fails() {
    // Each read both keys absent and wrote one: no serial order gives that.
    let history = txns(vec![
        txn("a.1", 1, 0).reads("x", 0, None).reads("y", 0, None).writes("x", Some("a")).committed_at(10).during(0, 5),
        txn("b.1", 2, 1).reads("x", 0, None).reads("y", 0, None).writes("y", Some("b")).committed_at(11).during(1, 6),
    ]);
    let (_, kind, _, involved) = anomaly_of(&verdict(&history));
    assert_eq!(kind, AnomalyKind::G2);
    assert_eq!(involved.len(), 2, "{involved:?}");
}

#[test]
fn a_read_of_an_aborted_write_fails() {
    let history = txns(vec![
        txn("a.1", 1, 0).writes("x", Some("never")).ended("aborted"),
        txn("b.1", 2, 5).reads("x", 7, Some("never")),
    ]);
    let (_, kind, _, involved) = anomaly_of(&verdict(&history));
    assert_eq!(kind, AnomalyKind::AbortedRead);
    assert!(involved.iter().any(|name| name.contains("txn a.1")), "{involved:?}");
    // `unavailable` means certainly not committed too.
    let history = txns(vec![
        txn("a.1", 1, 0).writes("x", Some("never")).ended("unavailable"),
        txn("b.1", 2, 5).reads("x", 7, Some("never")),
    ]);
    assert_eq!(anomaly_of(&verdict(&history)).1, AnomalyKind::AbortedRead);
}

#[test]
fn an_indeterminate_write_that_was_read_committed() {
    let history = txns(vec![
        txn("a.1", 1, 0).writes("x", Some("maybe")).ended("indeterminate"),
        txn("b.1", 2, 5).reads("x", 7, Some("maybe")),
    ]);
    assert!(verdict(&history).passed());
}

#[test]
fn read_write_transactions_are_held_to_real_time() {
    // b began after a returned committed, yet read x before a's write: a
    // serial order exists (b, a), just not one in real time.
    let history = txns(vec![
        txn("a.1", 1, 0).writes("x", Some("a")).committed_at(10).during(0, 5),
        txn("b.1", 2, 6).reads("x", 0, None).during(6, 8),
    ]);
    let (scope, kind, needs_real_time, _) = anomaly_of(&verdict(&history));
    assert_eq!((scope, kind, needs_real_time), (TxnScope::ReadWrite, AnomalyKind::GSingle, true));
    // A read-only transaction is not: it serializes at its snapshot.
    let history = txns(vec![
        txn("a.1", 1, 0).writes("x", Some("a")).committed_at(10).during(0, 5),
        txn("b.1", 2, 6).reads("x", 0, None).read_only_at(9),
    ]);
    assert!(verdict(&history).passed());
}

#[test]
fn a_stale_snapshot_fails_with_read_only_transactions_included() {
    let history = txns(vec![
        txn("a.1", 1, 0).writes("x", Some("a")).committed_at(10),
        txn("b.1", 2, 6).reads("x", 0, None).read_only_at(12),
    ]);
    let (scope, kind, _, _) = anomaly_of(&verdict(&history));
    assert_eq!((scope, kind), (TxnScope::All, AnomalyKind::StaleSnapshot));
}

#[test]
fn register_and_txn_lines_mix_in_one_file() {
    // `r` is a register key: linearizability. `x` is written by a plain put and
    // read by transactions: the put joins the serializability check.
    let clean = vec![
        L::R(register("put", "r", "r1", 5, 0)),
        L::T(txn("a.1", 1, 2).reads("x", 0, None).writes("x", Some("a")).committed_at(10)),
        L::R(register("get", "r", "r1", 5, 4)),
        L::R(register("put", "x", "p", 20, 6)),
        L::T(txn("b.1", 2, 8).reads("x", 20, Some("p")).committed_at(20)),
        L::R(Record { op: "scan".into(), ..register("scan", "a", "a", 1, 9) }),
    ];
    let verdict_clean = verdict(&clean);
    assert_eq!(verdict_clean.registers, Verdict::Linearizable { operations: 2, skipped: 1 });
    assert_eq!(verdict_clean.txns, TxnVerdict::Serializable { transactions: 2, read_only: 0, plain: 1 });
    assert_eq!(verdict_clean.exit_code(), 0);

    // A stale register read fails the file though the transactions pass.
    let mut stale = clean;
    stale.push(L::R(register("put", "r", "r2", 30, 20)));
    stale.push(L::R(register("get", "r", "r1", 5, 22)));
    let verdict_stale = verdict(&stale);
    assert!(matches!(verdict_stale.registers, Verdict::NotLinearizable { .. }), "{verdict_stale:?}");
    assert!(verdict_stale.txns.passed());
    assert_eq!(verdict_stale.exit_code(), 1);

    // A transaction that missed a plain put returned before it began fails.
    let missed = vec![
        L::R(register("put", "x", "p", 20, 0)),
        L::T(txn("a.1", 1, 5).reads("x", 0, None).writes("x", Some("a")).committed_at(30)),
    ];
    assert_eq!(anomaly_of(&verdict(&missed)).1, AnomalyKind::GSingle);
}

#[test]
fn an_undecided_check_is_not_a_pass() {
    // Two unknown deletes of x, and a read of a tombstone: whose is it?
    let history = txns(vec![
        txn("a.1", 1, 0).writes("x", None).ended("indeterminate"),
        txn("b.1", 2, 0).writes("x", None).ended("indeterminate"),
        txn("c.1", 3, 5).reads("x", 7, None),
    ]);
    let verdict = verdict(&history);
    assert!(matches!(verdict.txns, TxnVerdict::Undecided { .. }), "{verdict:?}");
    assert_eq!(verdict.exit_code(), 3);
}

#[test]
fn check_file_reports_each_checkers_failure() {
    let dir = std::env::temp_dir().join(format!("corekv-history-txn-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let lost = dir.join("lost.jsonl");
    std::fs::write(
        &lost,
        bytes(&txns(vec![
            txn("a.1", 1, 0).reads("x", 0, None).writes("x", Some("a")).committed_at(10).during(0, 5),
            txn("b.1", 2, 1).reads("x", 0, None).writes("x", Some("b")).committed_at(20).during(1, 6),
        ])),
    )
    .unwrap();
    let verdict = check_history_file(&lost).unwrap();
    assert_eq!(verdict.exit_code(), 1);
    // The registers pass (there are none); the transactions' failure is named.
    assert!(matches!(verdict.registers, Verdict::Linearizable { operations: 0, .. }));
    let error = describe_txns(&verdict.txns).join("; ");
    assert!(error.contains("G-single") && error.contains("T1: txn a.1"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_txn_lines_are_errors_naming_the_line() {
    let good = txn("a.1", 1, 0).writes("x", Some("a")).committed_at(10);
    let error = |bad: TxnRecord| read_all(&bytes(&txns(vec![good.clone(), bad]))[..]).unwrap_err();
    let bad_hash = TxnRecord {
        reads: vec![TxnReadRecord { value_hash: Some("xyz".into()), ..TxnReadRecord::new(b"x", 10, None) }],
        ..txn("b.1", 1, 2)
    };
    assert!(error(bad_hash).starts_with("line 2: value_hash \"xyz\""));
    assert!(error(TxnRecord { policy: "2pl".into(), ..txn("b.1", 1, 2) }).starts_with("line 2: unknown policy"));
    let no_version = TxnRecord { version: None, ..txn("b.1", 1, 2).writes("x", Some("b")) };
    assert!(error(no_version).starts_with("line 2: outcome ok needs"));
    assert!(error(txn("b.1", 1, 2).ended("maybe")).starts_with("line 2: unknown outcome"));
    assert!(error(txn("a.1", 1, 2)).starts_with("line 2: txn \"a.1\" is also on line 1"));
    let twice = txn("b.1", 1, 2).writes("x", Some("b")).writes("x", Some("c")).committed_at(11);
    assert!(error(twice).starts_with("line 2: T2: writes key x twice"));
    let writing_reader = txn("b.1", 1, 2).writes("x", Some("b")).read_only_at(11);
    assert!(error(writing_reader).starts_with("line 2: T2: a read-only transaction with writes"));
    let aborted_without_return = TxnRecord { return_ns: None, ..txn("b.1", 1, 2).ended("aborted") };
    assert!(error(aborted_without_return).starts_with("line 2: T2: a definite outcome without a return time"));
    let mut missing_field = bytes(&txns(vec![good]));
    missing_field.extend_from_slice(b"{\"op\":\"txn\",\"client\":1}\n");
    assert!(read_all(&missing_field[..]).unwrap_err().starts_with("line 2: a txn line: missing field"));
    // read_history (register lines only) leaves transaction lines out.
    let mixed = bytes(&[L::T(txn("a.1", 1, 0)), L::R(register("put", "r", "r1", 5, 0))]);
    assert_eq!(read_history(&mixed[..]).unwrap().0.len(), 1);
}
