//! The operation history file (`corekv-bench --history FILE`): one JSON object per
//! line per operation, read back by `corekv-ctl check-history` into the checker's
//! types (`corekv_engine::check`). The schema is documented in docs/HISTORY.md; a
//! line that does not fit it is an error naming the line, never a panic.
//!
//! Two kinds of line share the file: register operations ([`Record`], checked
//! for linearizability per key) and transaction attempts ([`TxnRecord`],
//! `"op":"txn"`, checked for serializability by the rules of
//! `history/txn.rs`); one file may hold both.
//!
//! Values are recorded by hash (FNV-1a 64 in 16 hex digits), so a 1 KB record
//! costs 16 bytes in the file; the checker compares hashes as values, which keeps
//! its verdict (two different values written in one run with the same 64-bit hash
//! would be needed to fool it).

use std::io::{self, BufRead, Write};

use base64::Engine as _;
use corekv_engine::check::{Call, Operation, Outcome};
use serde::{Deserialize, Serialize};

mod txn;
#[cfg(test)]
mod txn_tests;

pub use txn::{TxnScope, TxnVerdict};

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Who issued it (the bench's client number).
    pub client: u64,
    /// `get`, `get_at`, `put`, `delete`, `cas` or `scan` (scans are not checked).
    pub op: String,
    /// The key when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The key in base64 when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_b64: Option<String>,
    /// A write's value, or a read's answer: its FNV-1a 64 hash in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_hash: Option<String>,
    /// A cas's expected version; a get_at's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<u64>,
    /// Invocation time, ns since the run's start.
    pub invoke_ns: u64,
    /// Return time, ns since the run's start; absent (null) for an indeterminate
    /// write, which may take effect at any time after its invocation.
    pub return_ns: Option<u64>,
    /// DESIGN §6's outcome word, or `ok`.
    pub outcome: String,
    /// The version written or read; for `version_mismatch`, the current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// One transaction attempt (`"op":"txn"`): what it read from the store, what it
/// wrote, and how it ended. An attempt retried after `aborted` is a line of its
/// own with the next `attempt` number; reads a transaction served from its own
/// writes are not listed (they read nothing from the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRecord {
    /// Who issued it (the bench's client number).
    pub client: u64,
    /// Always `txn`.
    pub op: String,
    /// The transaction's id as the server knows it (`<client id>.<attempt>`).
    pub txn: String,
    /// `wound-wait`, `wait-die`, `no-wait`, `occ`, or `read-only`.
    pub policy: String,
    /// 1 for the first attempt, counting up across retries of one transaction.
    pub attempt: u32,
    /// The start version (the snapshot version for read-only).
    pub start_version: u64,
    /// Reads answered by the store, in the order made.
    pub reads: Vec<TxnReadRecord>,
    /// Writes buffered by the transaction, one per key (the last one wins).
    pub writes: Vec<TxnWriteRecord>,
    /// Invocation time (its begin), ns since the run's start.
    pub invoke_ns: u64,
    /// Return time (the commit's or abort's answer); null for `indeterminate`.
    pub return_ns: Option<u64>,
    /// `ok` (committed), `aborted`, `indeterminate`, `unavailable`.
    pub outcome: String,
    /// The abort reason for `aborted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The commit version for `ok` (the snapshot version for read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// A read inside a [`TxnRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnReadRecord {
    /// The key when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The key in base64 when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_b64: Option<String>,
    /// The version read; 0 when the key was absent.
    pub version: u64,
    /// The value read (FNV-1a 64 hex); absent when the key was absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_hash: Option<String>,
}

/// A write inside a [`TxnRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnWriteRecord {
    /// The key when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The key in base64 when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_b64: Option<String>,
    /// The value written (FNV-1a 64 hex); absent for a delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_hash: Option<String>,
}

fn key_fields(key: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(key) {
        Ok(s) => (Some(s.to_string()), None),
        Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(key))),
    }
}

impl TxnReadRecord {
    /// A read of `key` that found `value` at `version` (`None`, 0: absent).
    pub fn new(key: &[u8], version: u64, value: Option<&[u8]>) -> TxnReadRecord {
        let (key, key_b64) = key_fields(key);
        TxnReadRecord { key, key_b64, version, value_hash: value.map(value_hash) }
    }
}

impl TxnWriteRecord {
    /// A write of `value` to `key` (`None`: a delete).
    pub fn new(key: &[u8], value: Option<&[u8]>) -> TxnWriteRecord {
        let (key, key_b64) = key_fields(key);
        TxnWriteRecord { key, key_b64, value_hash: value.map(value_hash) }
    }
}

/// A key from its `key` or `key_b64` field: exactly one must be there.
fn key_bytes(key: &Option<String>, key_b64: &Option<String>) -> Result<Vec<u8>, String> {
    match (key, key_b64) {
        (Some(key), None) => Ok(key.clone().into_bytes()),
        (None, Some(b64)) => {
            base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| format!("bad key_b64: {e}"))
        }
        _ => Err("needs exactly one of key and key_b64".into()),
    }
}

/// FNV-1a 64 of `bytes` in 16 hex digits: how values appear in the file.
pub fn value_hash(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

impl Record {
    /// Sets `key` or `key_b64` from raw bytes.
    pub fn with_key(mut self, key: &[u8]) -> Record {
        match std::str::from_utf8(key) {
            Ok(s) => self.key = Some(s.to_string()),
            Err(_) => self.key_b64 = Some(base64::engine::general_purpose::STANDARD.encode(key)),
        }
        self
    }

    fn key_bytes(&self) -> Result<Vec<u8>, String> {
        key_bytes(&self.key, &self.key_b64)
    }

    /// The checker's operation, or `None` for a record the checker does not take
    /// (a scan, or an `invalid` answer: nothing was applied, nothing was read).
    pub fn to_operation(&self) -> Result<Option<Operation>, String> {
        if self.op == "scan" || self.outcome == "invalid" {
            return Ok(None);
        }
        let key = self.key_bytes()?;
        let hash = || -> Result<Vec<u8>, String> {
            self.value_hash.clone().map(String::into_bytes).ok_or_else(|| format!("{} needs value_hash", self.op))
        };
        let expected = || self.expected.ok_or_else(|| format!("{} needs expected", self.op));
        let call = match self.op.as_str() {
            "get" => Call::Get { key },
            "get_at" => Call::GetAt { key, at_version: expected()? },
            "put" => Call::Put { key, value: hash()? },
            "delete" => Call::Delete { key },
            "cas" => Call::Cas { key, expected_version: expected()?, value: hash()? },
            other => return Err(format!("unknown op {other:?}")),
        };
        let version = || self.version.ok_or_else(|| format!("outcome {} needs version", self.outcome));
        let outcome = match (self.outcome.as_str(), &call) {
            ("ok", Call::Get { .. } | Call::GetAt { .. }) => Outcome::Value { value: hash()?, version: version()? },
            ("ok", _) => Outcome::Written { version: version()? },
            ("not_found", _) => Outcome::NotFound,
            ("version_mismatch", _) => Outcome::VersionMismatch { current: version()? },
            ("compacted", _) => Outcome::Compacted,
            ("unavailable", _) => Outcome::Unavailable,
            ("indeterminate", _) => Outcome::Indeterminate,
            (other, _) => return Err(format!("unknown outcome {other:?}")),
        };
        Ok(Some(Operation {
            client: self.client,
            invoke_time: self.invoke_ns,
            return_time: self.return_ns,
            call,
            outcome,
        }))
    }
}

/// Appends records as JSON lines.
#[derive(Debug)]
pub struct HistoryWriter<W: Write> {
    out: W,
}

impl<W: Write> HistoryWriter<W> {
    /// Writes to `out` (wrap a file in a `BufWriter`).
    pub fn new(out: W) -> HistoryWriter<W> {
        HistoryWriter { out }
    }

    /// One line.
    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")
    }

    /// One transaction line.
    pub fn write_txn(&mut self, record: &TxnRecord) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")
    }

    /// Flushes what is buffered.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The sink back (a test's in-memory file).
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// One line of the file, of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A register operation.
    Register(Record),
    /// A transaction attempt (`"op":"txn"`).
    Txn(TxnRecord),
}

/// Parses one line: its `op` says which kind it is.
pub fn parse_line(line: &str) -> Result<Line, String> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    if value.get("op").and_then(serde_json::Value::as_str) == Some("txn") {
        serde_json::from_value(value).map(Line::Txn).map_err(|e| format!("a txn line: {e}"))
    } else {
        serde_json::from_value(value).map(Line::Register).map_err(|e| e.to_string())
    }
}

/// Every line of a history, numbered from 1; blank lines left out. The error
/// names the first line that cannot be read or parsed.
fn read_lines(input: impl BufRead) -> Result<Vec<(usize, Line)>, String> {
    let mut lines = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(|e| format!("line {}: {e}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        lines.push((n + 1, parse_line(&line).map_err(|e| format!("line {}: {e}", n + 1))?));
    }
    Ok(lines)
}

/// Reads the register lines of a history: the linearizability checker's
/// operations and how many register lines were skipped (scans, invalid
/// answers); transaction lines are left out (see [`read_all`]). The error
/// names the first bad line.
pub fn read_history(input: impl BufRead) -> Result<(Vec<Operation>, usize), String> {
    let mut ops = Vec::new();
    let mut skipped = 0;
    for (n, line) in read_lines(input)? {
        if let Line::Register(record) = line {
            match record.to_operation().map_err(|e| format!("line {n}: {e}"))? {
                Some(op) => ops.push(op),
                None => skipped += 1,
            }
        }
    }
    Ok((ops, skipped))
}

/// A whole history, split for its two checkers.
#[derive(Debug, Default)]
pub struct History {
    /// Register operations on keys no transaction line touches: for the
    /// linearizability checker.
    pub ops: Vec<Operation>,
    /// Register lines neither checker takes (scans, invalid answers, and on
    /// keys transactions touch, answers without a known version).
    pub skipped: usize,
    txns: txn::TxnHistory,
}

impl History {
    /// Transaction lines read.
    pub fn txn_lines(&self) -> usize {
        self.txns.txn_lines
    }
}

/// Reads a history of both kinds of line. Register lines on a key that a
/// transaction line also reads or writes go to the serializability checker as
/// one-key transactions (`history/txn.rs`); the others to the linearizability
/// checker. The error names the first bad line.
pub fn read_all(input: impl BufRead) -> Result<History, String> {
    let lines = read_lines(input)?;
    let mut txn_keys = std::collections::HashSet::new();
    let mut txn_ids = std::collections::HashMap::new();
    let mut history = History::default();
    for (n, line) in &lines {
        let Line::Txn(record) = line else { continue };
        if let Some(first) = txn_ids.insert(record.txn.clone(), *n) {
            return Err(format!("line {n}: txn {:?} is also on line {first} (one line per attempt)", record.txn));
        }
        history.txns.push_txn(*n, record).map_err(|e| format!("line {n}: {e}"))?;
        for (key, key_b64) in
            record.reads.iter().map(|r| (&r.key, &r.key_b64)).chain(record.writes.iter().map(|w| (&w.key, &w.key_b64)))
        {
            txn_keys.insert(key_bytes(key, key_b64).map_err(|e| format!("line {n}: {e}"))?);
        }
    }
    for (n, line) in &lines {
        let Line::Register(record) = line else { continue };
        let shared =
            record.op != "scan" && txn_keys.contains(&record.key_bytes().map_err(|e| format!("line {n}: {e}"))?);
        let checked = if shared {
            history.txns.push_register(*n, record).map_err(|e| format!("line {n}: {e}"))?
        } else {
            match record.to_operation().map_err(|e| format!("line {n}: {e}"))? {
                Some(op) => {
                    history.ops.push(op);
                    true
                }
                None => false,
            }
        };
        history.skipped += usize::from(!checked);
    }
    Ok(history)
}

/// The linearizability checker's verdict on the register lines of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's history is linearizable.
    Linearizable {
        /// Operations checked.
        operations: usize,
        /// Lines not checked (scans, invalid answers).
        skipped: usize,
    },
    /// This key's is not: the smallest failing sub-history the shrinker found (or
    /// the checker's witness when shrinking could not run), one operation a line.
    NotLinearizable {
        /// The key.
        key: Vec<u8>,
        /// Its failing operations.
        history: Vec<String>,
    },
    /// No key failed, but this one ran out of the search budget: not a pass.
    Unknown {
        /// The key.
        key: Vec<u8>,
        /// States explored before the budget ran out.
        states_explored: u64,
    },
}

/// Both checkers' verdicts on a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileVerdict {
    /// Linearizability of the register lines (a pass when there are none).
    pub registers: Verdict,
    /// Serializability of the transaction lines (a pass when there are none).
    pub txns: TxnVerdict,
}

impl FileVerdict {
    /// 0 when both pass; 1 when either found a violation; 3 when neither did
    /// but one could not decide (not a pass).
    pub fn exit_code(&self) -> u8 {
        let violation = matches!(self.registers, Verdict::NotLinearizable { .. })
            || matches!(self.txns, TxnVerdict::NotSerializable { .. });
        if violation {
            1
        } else if self.passed() {
            0
        } else {
            3
        }
    }

    /// Whether both checkers passed.
    pub fn passed(&self) -> bool {
        matches!(self.registers, Verdict::Linearizable { .. }) && self.txns.passed()
    }
}

/// Reads the history at `path` and runs both checkers: linearizability on the
/// register lines, serializability on the transaction lines (`corekv-ctl
/// check-history`). The error says why the file could not be checked
/// (unreadable, a bad line, a malformed history).
pub fn check_history_file(path: &std::path::Path) -> Result<FileVerdict, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let history = read_all(io::BufReader::new(file)).map_err(|e| format!("{}: {e}", path.display()))?;
    check_all(&history).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs both checkers on a history already read.
pub fn check_all(history: &History) -> Result<FileVerdict, String> {
    let registers = check_registers(&history.ops, history.skipped)?;
    let txns = txn::check(&history.txns)?;
    Ok(FileVerdict { registers, txns })
}

fn check_registers(ops: &[Operation], skipped: usize) -> Result<Verdict, String> {
    use corekv_engine::check::{
        CheckConfig, CheckResult, SHRINK_CHECKS_MAX_DEFAULT, check_history, shrink_key_history, split_by_key,
    };
    let config = CheckConfig::default();
    match check_history(ops, &config).map_err(|e| format!("malformed history: {e}"))? {
        CheckResult::Linearizable => Ok(Verdict::Linearizable { operations: ops.len(), skipped }),
        CheckResult::Unknown { key, states_explored } => Ok(Verdict::Unknown { key, states_explored }),
        CheckResult::NotLinearizable { key, witness } => {
            let key_ops = split_by_key(ops).remove(&key).unwrap_or_default();
            let history = match shrink_key_history(&key_ops, &config, SHRINK_CHECKS_MAX_DEFAULT) {
                Ok(Some(shrunk)) => shrunk.ops.iter().map(ToString::to_string).collect(),
                _ => witness.to_string().lines().map(str::to_string).collect(),
            };
            Ok(Verdict::NotLinearizable { key, history })
        }
    }
}

/// The transactions' verdict in human lines: the first says what it is, the
/// others name the transactions involved.
pub fn describe_txns(verdict: &TxnVerdict) -> Vec<String> {
    match verdict {
        TxnVerdict::Serializable { transactions, read_only, plain } => vec![format!(
            "serializable: {transactions} transactions ({read_only} read-only; read-write strictly), \
             {plain} plain operations among them"
        )],
        TxnVerdict::NotSerializable { scope, anomaly, involved } => {
            let what = match scope {
                TxnScope::ReadWrite => "not strictly serializable (read-write transactions)",
                TxnScope::All => "not serializable (read-only transactions included)",
            };
            std::iter::once(format!("{what}: {anomaly}"))
                .chain(involved.iter().map(|name| format!("  T{}", name.trim_start_matches("line "))))
                .collect()
        }
        TxnVerdict::Undecided { scope, undecided, involved } => {
            std::iter::once(format!("undecided ({} transactions): {undecided}; not a pass", scope.word()))
                .chain(involved.iter().map(|name| format!("  T{}", name.trim_start_matches("line "))))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use corekv_engine::check::{CheckConfig, CheckResult, check_history};

    use super::*;

    fn record(client: u64, op: &str, key: &str, invoke: u64, ret: Option<u64>, outcome: &str) -> Record {
        Record {
            client,
            op: op.into(),
            key: None,
            key_b64: None,
            value_hash: None,
            expected: None,
            invoke_ns: invoke,
            return_ns: ret,
            outcome: outcome.into(),
            version: None,
        }
        .with_key(key.as_bytes())
    }

    fn file(records: &[Record]) -> Vec<u8> {
        let mut w = HistoryWriter::new(Vec::new());
        for r in records {
            w.write(r).unwrap();
        }
        w.out
    }

    #[test]
    fn round_trip_and_check() {
        let put = Record {
            value_hash: Some(value_hash(b"v1")),
            version: Some(10),
            ..record(1, "put", "k", 0, Some(5), "ok")
        };
        let get = Record {
            value_hash: Some(value_hash(b"v1")),
            version: Some(10),
            ..record(2, "get", "k", 6, Some(8), "ok")
        };
        let scan = record(2, "scan", "a", 9, Some(10), "ok");
        let lost = Record { value_hash: Some(value_hash(b"v2")), ..record(1, "put", "k", 9, None, "indeterminate") };
        let bytes = file(&[put, get.clone(), scan, lost]);
        let (ops, skipped) = read_history(&bytes[..]).unwrap();
        assert_eq!((ops.len(), skipped), (3, 1));
        assert_eq!(check_history(&ops, &CheckConfig::default()).unwrap(), CheckResult::Linearizable);

        // A stale read after a newer write returned: the checker must say so.
        let put2 = Record {
            value_hash: Some(value_hash(b"v3")),
            version: Some(20),
            ..record(1, "put", "k", 11, Some(12), "ok")
        };
        let stale = Record { invoke_ns: 13, return_ns: Some(14), ..get };
        let (ops, _) = read_history(&file(&[put2, stale])[..]).unwrap();
        assert!(matches!(check_history(&ops, &CheckConfig::default()).unwrap(), CheckResult::NotLinearizable { .. }));
    }

    #[test]
    fn check_file_gives_each_verdict() {
        let dir = std::env::temp_dir().join(format!("corekv-history-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let put = |v: &[u8], version, at| Record {
            value_hash: Some(value_hash(v)),
            version: Some(version),
            ..record(1, "put", "k", at, Some(at + 1), "ok")
        };
        let get = |v: &[u8], version, at| Record {
            value_hash: Some(value_hash(v)),
            version: Some(version),
            ..record(2, "get", "k", at, Some(at + 1), "ok")
        };
        let good = dir.join("good.jsonl");
        std::fs::write(&good, file(&[put(b"a", 1, 0), get(b"a", 1, 2), put(b"b", 2, 4), get(b"b", 2, 6)])).unwrap();
        assert_eq!(
            check_history_file(&good).map(|v| v.registers),
            Ok(Verdict::Linearizable { operations: 4, skipped: 0 })
        );
        let stale = dir.join("stale.jsonl");
        std::fs::write(&stale, file(&[put(b"a", 1, 0), put(b"b", 2, 4), get(b"a", 1, 6)])).unwrap();
        match check_history_file(&stale).unwrap().registers {
            Verdict::NotLinearizable { key, history } => {
                assert_eq!(key, b"k");
                assert!(!history.is_empty() && history.len() <= 3, "{history:?}");
            }
            other => panic!("a stale read passed: {other:?}"),
        }
        assert!(check_history_file(&dir.join("missing.jsonl")).unwrap_err().contains("cannot read"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn non_utf8_keys_travel_in_base64() {
        let r = record(1, "delete", "x", 0, Some(1), "not_found").with_key(&[0xff, 0x00]);
        let r = Record { key: None, ..r };
        let (ops, _) = read_history(&file(&[r])[..]).unwrap();
        assert_eq!(ops[0].call, Call::Delete { key: vec![0xff, 0x00] });
    }

    #[test]
    fn bad_lines_are_errors_naming_the_line() {
        let good = record(1, "delete", "k", 0, Some(1), "not_found");
        let mut bytes = file(&[good]);
        bytes.extend_from_slice(b"{\"client\":1}\n");
        assert!(read_history(&bytes[..]).unwrap_err().starts_with("line 2:"));
        let no_version = record(1, "put", "k", 0, Some(1), "ok");
        let no_version = Record { value_hash: Some(value_hash(b"v")), ..no_version };
        assert!(read_history(&file(&[no_version])[..]).unwrap_err().contains("needs version"));
        assert!(read_history(&b"not json\n"[..]).unwrap_err().starts_with("line 1:"));
    }
}
