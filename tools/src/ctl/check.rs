//! `corekv-ctl check-history FILE`: both checkers' verdicts on a history file
//! (docs/HISTORY.md) as one JSON object or human lines, and the exit code: 0
//! both pass, 1 a violation (either checker), 3 unknown or undecided (a check
//! that could not finish is never a pass), 2 a file that cannot be read.
//!
//! Pure rendering of [`crate::history::check_history_file`]'s answer; runs on
//! the caller's thread.

use corekv_engine::check::serial::CycleText;
use serde::Serialize;

use super::render::{EXIT_NEGATIVE, EXIT_OK, EXIT_UNKNOWN, Failure, JsonBytes, Rendered, human_bytes, to_json};
use crate::history::{FileVerdict, TxnVerdict, Verdict, check_history_file, describe_txns};

/// `check-history FILE`. JSON, one object, the worst finding first (a
/// violation before an unknown, registers before transactions):
/// - `{"ok":true,"linearizable":true,"operations":N,"skipped":K,
///   "serializable":true,"transactions":T,"read_only":R,"plain":P}`;
/// - `{"ok":false,"error":"not_linearizable","key":…,"history":[…]}` (exit 1),
///   the smallest failing history of one key, an operation a line;
/// - `{"ok":false,"error":"not_serializable","scope":"read-write"|"all",
///   "strict":B,"anomaly":…,"needs_real_time":B,"txns":[…],"cycle":…,
///   "explanation":…,"lines":[…]}` (exit 1): `txns` are the transactions' ids
///   (their line numbers), `lines` name them;
/// - `{"ok":false,"error":"unknown","key":…,"states_explored":N}` (exit 3);
/// - `{"ok":false,"error":"undecided","scope":…,"explanation":…,"lines":[…]}`
///   (exit 3).
///
/// Human: the register verdict's lines, then the transactions'.
pub fn render_check(path: &std::path::Path, json: bool) -> Result<Rendered, Failure> {
    let verdict = check_history_file(path).map_err(Failure::invalid)?;
    let exit = match verdict.exit_code() {
        0 => EXIT_OK,
        1 => EXIT_NEGATIVE,
        _ => EXIT_UNKNOWN,
    };
    let failed = exit != EXIT_OK;
    if json {
        let line = json_line(&verdict);
        return Ok(Rendered { lines: vec![line.clone()], line, failed, log: None, exit });
    }
    let mut lines = register_lines(&verdict.registers);
    lines.extend(describe_txns(&verdict.txns));
    let line = lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join("; ");
    Ok(Rendered { lines, line, failed, log: None, exit })
}

fn register_lines(verdict: &Verdict) -> Vec<String> {
    match verdict {
        Verdict::Linearizable { operations, skipped } => {
            vec![format!("linearizable: {operations} operations checked ({skipped} scans or invalid not checked)")]
        }
        Verdict::NotLinearizable { key, history } => {
            let first = format!("not linearizable: key {}; smallest failing history found:", human_bytes(key));
            std::iter::once(first).chain(history.iter().map(|l| format!("  {l}"))).collect()
        }
        Verdict::Unknown { key, states_explored } => vec![format!(
            "error: unknown: key {} still undecided after {states_explored} states (the search budget ran out; not a pass)",
            human_bytes(key)
        )],
    }
}

fn json_line(verdict: &FileVerdict) -> String {
    match (&verdict.registers, &verdict.txns) {
        (Verdict::NotLinearizable { key, history }, _) => {
            register_failure_json("not_linearizable", key, Some(history), None)
        }
        (_, TxnVerdict::NotSerializable { scope, anomaly, involved }) => to_json(&NotSerializable {
            ok: false,
            error: "not_serializable",
            scope: scope.word(),
            strict: scope.strict(),
            anomaly: anomaly.kind.to_string(),
            needs_real_time: anomaly.needs_real_time,
            txns: &anomaly.txns,
            cycle: (!anomaly.cycle.is_empty()).then(|| CycleText(&anomaly.cycle).to_string()),
            explanation: &anomaly.explanation,
            lines: involved,
        }),
        (Verdict::Unknown { key, states_explored }, _) => {
            register_failure_json("unknown", key, None, Some(*states_explored))
        }
        (_, TxnVerdict::Undecided { scope, undecided, involved }) => to_json(&Undecided {
            ok: false,
            error: "undecided",
            scope: scope.word(),
            explanation: undecided.to_string(),
            lines: involved,
        }),
        (
            Verdict::Linearizable { operations, skipped },
            TxnVerdict::Serializable { transactions, read_only, plain },
        ) => to_json(&Passed {
            ok: true,
            linearizable: true,
            operations: *operations,
            skipped: *skipped,
            serializable: true,
            transactions: *transactions,
            read_only: *read_only,
            plain: *plain,
        }),
    }
}

#[derive(Serialize)]
struct Passed {
    ok: bool,
    linearizable: bool,
    operations: usize,
    skipped: usize,
    serializable: bool,
    transactions: usize,
    read_only: usize,
    plain: usize,
}

#[derive(Serialize)]
struct NotSerializable<'a> {
    ok: bool,
    error: &'a str,
    scope: &'a str,
    strict: bool,
    anomaly: String,
    needs_real_time: bool,
    txns: &'a [u64],
    #[serde(skip_serializing_if = "Option::is_none")]
    cycle: Option<String>,
    explanation: &'a str,
    lines: &'a [String],
}

#[derive(Serialize)]
struct Undecided<'a> {
    ok: bool,
    error: &'a str,
    scope: &'a str,
    explanation: String,
    lines: &'a [String],
}

/// A failed register check as one JSON object: the key (or `key_b64`), and the
/// failing history or the states explored.
fn register_failure_json(error: &str, key: &[u8], history: Option<&[String]>, states_explored: Option<u64>) -> String {
    #[derive(Serialize)]
    struct CheckFailure<'a> {
        ok: bool,
        error: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        key_b64: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        history: Option<&'a [String]>,
        #[serde(skip_serializing_if = "Option::is_none")]
        states_explored: Option<u64>,
    }
    let (key, key_b64) = JsonBytes::of(key).split();
    to_json(&CheckFailure { ok: false, error, key, key_b64, history, states_explored })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::render::EXIT_INVALID;
    use crate::history::{HistoryWriter, Record, TxnReadRecord, TxnRecord, TxnWriteRecord, value_hash};

    fn record(op: &str, v: &[u8], version: u64, at: u64) -> Record {
        Record {
            client: 1,
            op: op.into(),
            key: None,
            key_b64: None,
            value_hash: Some(value_hash(v)),
            expected: None,
            invoke_ns: at,
            return_ns: Some(at + 1),
            outcome: "ok".into(),
            version: Some(version),
        }
        .with_key(b"k")
    }

    /// A committed transaction that read `x` at `read` and wrote it at `version`.
    fn rmw(name: &str, read: u64, version: u64, at: u64) -> TxnRecord {
        TxnRecord {
            client: 2,
            op: "txn".into(),
            txn: name.into(),
            policy: "occ".into(),
            attempt: 1,
            start_version: at,
            reads: vec![TxnReadRecord::new(b"x", read, None)],
            writes: vec![TxnWriteRecord::new(b"x", Some(name.as_bytes()))],
            invoke_ns: at,
            return_ns: Some(at + 10),
            outcome: "ok".into(),
            reason: None,
            version: Some(version),
        }
    }

    fn write(name: &str, records: &[Record], txns: &[TxnRecord]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("corekv-render-check-{}-{name}", std::process::id()));
        let mut w = HistoryWriter::new(std::fs::File::create(&path).unwrap());
        for r in records {
            w.write(r).unwrap();
        }
        for t in txns {
            w.write_txn(t).unwrap();
        }
        path
    }

    #[test]
    fn check_history_answers_each_verdict_in_its_shape() {
        let good = write("good", &[record("put", b"a", 1, 0), record("get", b"a", 1, 2)], &[]);
        let ok = render_check(&good, true).unwrap();
        assert_eq!(
            ok.lines,
            [concat!(
                r#"{"ok":true,"linearizable":true,"operations":2,"skipped":0,"#,
                r#""serializable":true,"transactions":0,"read_only":0,"plain":0}"#
            )]
        );
        assert_eq!(ok.exit, EXIT_OK);
        let stale =
            write("stale", &[record("put", b"a", 1, 0), record("put", b"b", 2, 2), record("get", b"a", 1, 4)], &[]);
        let failed = render_check(&stale, true).unwrap();
        assert_eq!(failed.exit, EXIT_NEGATIVE);
        let json: serde_json::Value = serde_json::from_str(&failed.lines[0]).unwrap();
        assert_eq!(
            (&json["ok"], &json["error"], &json["key"]),
            (&false.into(), &"not_linearizable".into(), &"k".into())
        );
        assert!(!json["history"].as_array().unwrap().is_empty());
        assert!(json.get("states_explored").is_none());
        let human = render_check(&stale, false).unwrap();
        assert!(human.failed && human.lines[0].starts_with("not linearizable: key k"));
        assert!(human.lines.last().unwrap().starts_with("serializable: 0 transactions"));
        assert_eq!(render_check(&std::env::temp_dir().join("no-such-history"), true).unwrap_err().exit, EXIT_INVALID);
        let _ = std::fs::remove_file(good);
        let _ = std::fs::remove_file(stale);
    }

    #[test]
    fn a_lost_update_answers_not_serializable_with_its_cycle() {
        // Register lines on another key pass; the two transactions lost an update.
        let lost = write("lost", &[record("put", b"a", 1, 0)], &[rmw("t.1", 0, 10, 0), rmw("u.1", 0, 20, 1)]);
        let failed = render_check(&lost, true).unwrap();
        assert_eq!(failed.exit, EXIT_NEGATIVE);
        let json: serde_json::Value = serde_json::from_str(&failed.lines[0]).unwrap();
        assert_eq!(
            (&json["error"], &json["scope"], &json["strict"]),
            (&"not_serializable".into(), &"read-write".into(), &true.into())
        );
        assert_eq!((&json["anomaly"], &json["needs_real_time"]), (&"G-single".into(), &false.into()));
        let mut txns: Vec<u64> = json["txns"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect();
        txns.sort_unstable();
        assert_eq!(txns, [2, 3], "the transactions are named by their lines");
        let cycle = json["cycle"].as_str().unwrap();
        assert!(cycle.contains("ww(x@10..20)") && cycle.contains("rw(x@0..10)"), "{cycle}");
        assert!(!json["explanation"].as_str().unwrap().is_empty());
        assert!(json["lines"][0].as_str().unwrap().starts_with("line "));
        let human = render_check(&lost, false).unwrap();
        assert!(human.failed);
        assert!(human.lines[0].starts_with("linearizable: 1 operations"), "{:?}", human.lines);
        assert!(human.lines[1].starts_with("not strictly serializable (read-write transactions): G-single"));
        assert!(human.lines.iter().any(|l| l.starts_with("  T2: txn t.1 (client 2, attempt 1, occ): ok at 10")));
        let _ = std::fs::remove_file(lost);
    }

    #[test]
    fn an_undecided_check_exits_3() {
        let unknown_delete = |name: &str| TxnRecord {
            writes: vec![TxnWriteRecord::new(b"x", None)],
            reads: Vec::new(),
            outcome: "indeterminate".into(),
            return_ns: None,
            version: None,
            ..rmw(name, 0, 0, 0)
        };
        let reader =
            TxnRecord { reads: vec![TxnReadRecord::new(b"x", 7, None)], writes: Vec::new(), ..rmw("r.1", 0, 9, 20) };
        let path = write("undecided", &[], &[unknown_delete("a.1"), unknown_delete("b.1"), reader]);
        let rendered = render_check(&path, true).unwrap();
        assert_eq!(rendered.exit, EXIT_UNKNOWN);
        let json: serde_json::Value = serde_json::from_str(&rendered.lines[0]).unwrap();
        assert_eq!(json["error"], "undecided");
        assert_eq!(json["lines"].as_array().unwrap().len(), 3);
        let _ = std::fs::remove_file(path);
    }
}
