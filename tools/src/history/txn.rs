//! Transaction lines (`"op":"txn"`) read into the serializability checker's
//! types (`corekv_engine::check::serial`), and the checker run on them the way
//! the simulator runs it (DESIGN §8): strictly serializable among read-write
//! transactions, serializable with the read-only ones taking part at their
//! snapshots.
//!
//! A transaction's checker id is the number of its line, so the `T17` of a
//! reported cycle is the transaction on line 17 of the file.
//!
//! Register lines on a key that some transaction line also touches are not
//! linearizability material: the versions of that key come from both kinds of
//! writer, and a register checker that sees only half of them would find
//! versions written by nobody. They are fed to the serializability checker as
//! one-key read-write transactions instead (DESIGN §8: read-write transactions
//! are strictly serializable with plain operations, which for one-key
//! operations implies their linearizability).

use corekv_engine::check::serial::{
    self, Anomaly, Read, SerialOptions, SerialVerdict, Txn, TxnId, TxnKind, TxnOutcome, Undecided, Write,
};

use super::{Record, TxnRecord, key_bytes};

/// The policy words a transaction line may carry; `read-only` marks a read-only
/// transaction.
const POLICIES: [&str; 5] = ["wound-wait", "wait-die", "no-wait", "occ", "read-only"];

/// A value hash of the file (16 hex digits) as the checker's u64.
pub(super) fn parse_hash(text: &str) -> Result<u64, String> {
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("value_hash {text:?} is not 16 hex digits"));
    }
    u64::from_str_radix(text, 16).map_err(|e| format!("value_hash {text:?}: {e}"))
}

fn hash_of(text: Option<&str>) -> Result<Option<u64>, String> {
    text.map(parse_hash).transpose()
}

impl TxnRecord {
    /// The checker's transaction, with id `id` (its line number). Outcomes map as
    /// docs/HISTORY.md says: `ok` committed at `version`; `aborted` and
    /// `unavailable` certainly not committed; `indeterminate` unknown.
    pub fn to_txn(&self, id: TxnId) -> Result<Txn, String> {
        if self.op != "txn" {
            return Err(format!("a transaction line has op {:?}, not \"txn\"", self.op));
        }
        if !POLICIES.contains(&self.policy.as_str()) {
            return Err(format!("unknown policy {:?} (one of {})", self.policy, POLICIES.join(", ")));
        }
        let reads = self
            .reads
            .iter()
            .map(|read| {
                let key = key_bytes(&read.key, &read.key_b64)?;
                let value = hash_of(read.value_hash.as_deref())?;
                if read.version == 0 && value.is_some() {
                    return Err("a read of version 0 (absent) with a value_hash".to_string());
                }
                Ok(Read { key, version: read.version, value })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let writes = self
            .writes
            .iter()
            .map(|write| {
                Ok(Write { key: key_bytes(&write.key, &write.key_b64)?, value: hash_of(write.value_hash.as_deref())? })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let outcome = match self.outcome.as_str() {
            "ok" => TxnOutcome::Committed { version: self.version.ok_or("outcome ok needs the commit version")? },
            "aborted" | "unavailable" => TxnOutcome::Aborted,
            "indeterminate" => TxnOutcome::Unknown,
            other => return Err(format!("unknown outcome {other:?}")),
        };
        let kind = if self.policy == "read-only" {
            if let TxnOutcome::Committed { version } = outcome
                && version != self.start_version
            {
                return Err(format!(
                    "a read-only transaction's version {version} differs from its start_version {} (both are its snapshot)",
                    self.start_version
                ));
            }
            TxnKind::ReadOnly { snapshot: self.start_version }
        } else {
            TxnKind::ReadWrite
        };
        let txn = Txn { id, kind, reads, writes, outcome, invoke_time: self.invoke_ns, return_time: self.return_ns };
        serial::validate_txns(std::slice::from_ref(&txn)).map_err(|e| e.to_string())?;
        Ok(txn)
    }

    /// How a report names it.
    fn describe(&self) -> String {
        let version = self.version.map(|v| format!(" at {v}")).unwrap_or_default();
        format!(
            "txn {} (client {}, attempt {}, {}): {}{version}",
            self.txn, self.client, self.attempt, self.policy, self.outcome
        )
    }
}

/// A register line as a one-key transaction, or `None` when it says nothing
/// the serializability checker can use: a `not_found` answer (the client is
/// not told a tombstone's version, so the version read is unknown), a
/// `version_mismatch`, `compacted` or `invalid` answer, an unserved read, a
/// scan.
fn register_as_txn(record: &Record, id: TxnId) -> Result<Option<Txn>, String> {
    let key = record.key_bytes()?;
    let value = || -> Result<Option<u64>, String> {
        hash_of(Some(record.value_hash.as_deref().ok_or_else(|| format!("{} needs value_hash", record.op))?))
    };
    let version = || record.version.ok_or_else(|| format!("outcome {} needs version", record.outcome));
    let write = |outcome| -> Result<Option<Txn>, String> {
        let value = if record.op == "delete" { None } else { value()? };
        Ok(Some(Txn {
            id,
            kind: TxnKind::ReadWrite,
            reads: Vec::new(),
            writes: vec![Write { key: key.clone(), value }],
            outcome,
            invoke_time: record.invoke_ns,
            return_time: record.return_ns,
        }))
    };
    let read = |kind| -> Result<Option<Txn>, String> {
        let version = version()?;
        Ok(Some(Txn {
            id,
            kind,
            reads: vec![Read { key: key.clone(), version, value: value()? }],
            writes: Vec::new(),
            outcome: TxnOutcome::Committed { version },
            invoke_time: record.invoke_ns,
            return_time: record.return_ns,
        }))
    };
    match (record.op.as_str(), record.outcome.as_str()) {
        ("put" | "delete" | "cas", "ok") => write(TxnOutcome::Committed { version: version()? }),
        ("put" | "delete" | "cas", "unavailable") => write(TxnOutcome::Aborted),
        ("put" | "delete" | "cas", "indeterminate") => write(TxnOutcome::Unknown),
        ("get", "ok") => read(TxnKind::ReadWrite),
        ("get_at", "ok") => {
            let at = record.expected.ok_or("get_at needs expected")?;
            read(TxnKind::ReadOnly { snapshot: at })
        }
        _ => Ok(None),
    }
}

/// The transactions of a file, ready to check.
#[derive(Debug, Default)]
pub(super) struct TxnHistory {
    /// Every transaction, ids = line numbers.
    pub txns: Vec<Txn>,
    /// How each is named in a report, by id.
    pub names: std::collections::HashMap<TxnId, String>,
    /// Transaction lines read.
    pub txn_lines: usize,
    /// Of them, read-only.
    pub read_only_lines: usize,
    /// Register lines checked as one-key transactions.
    pub register_lines: usize,
}

impl TxnHistory {
    /// Adds the transaction line `line`.
    pub fn push_txn(&mut self, line: usize, record: &TxnRecord) -> Result<(), String> {
        let txn = record.to_txn(line as TxnId)?;
        self.names.insert(txn.id, format!("line {line}: {}", record.describe()));
        self.read_only_lines += usize::from(matches!(txn.kind, TxnKind::ReadOnly { .. }));
        self.txns.push(txn);
        self.txn_lines += 1;
        Ok(())
    }

    /// Adds the register line `line`; false when it carries nothing to check.
    pub fn push_register(&mut self, line: usize, record: &Record) -> Result<bool, String> {
        let Some(txn) = register_as_txn(record, line as TxnId)? else { return Ok(false) };
        let key =
            String::from_utf8_lossy(txn.reads.first().map_or_else(|| &txn.writes[0].key, |r| &r.key)).into_owned();
        let version = record.version.map(|v| format!(" at {v}")).unwrap_or_default();
        let name = format!("line {line}: {} {key} (client {}): {}{version}", record.op, record.client, record.outcome);
        self.names.insert(txn.id, name);
        self.txns.push(txn);
        self.register_lines += 1;
        Ok(true)
    }
}

/// Which part of the history a transaction verdict is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnScope {
    /// The read-write transactions (and plain operations) alone, in real-time
    /// order (strict serializability).
    ReadWrite,
    /// Every transaction, read-only ones at their snapshots (serializability,
    /// no real-time order).
    All,
}

impl TxnScope {
    /// `read-write` or `all`: the JSON word.
    pub fn word(self) -> &'static str {
        match self {
            TxnScope::ReadWrite => "read-write",
            TxnScope::All => "all",
        }
    }

    /// Whether real-time order was required.
    pub fn strict(self) -> bool {
        self == TxnScope::ReadWrite
    }
}

/// The serializability checker's verdict on the transaction lines of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnVerdict {
    /// Strictly serializable among read-write transactions, serializable with
    /// the read-only ones (or there were none).
    Serializable {
        /// Transaction lines checked.
        transactions: usize,
        /// Of them, read-only.
        read_only: usize,
        /// Register lines checked as one-key transactions (on keys that
        /// transactions touch).
        plain: usize,
    },
    /// Not: the anomaly found, with the named transactions involved.
    NotSerializable {
        /// Which check found it.
        scope: TxnScope,
        /// The checker's anomaly; its `T<n>` is the transaction on line n.
        anomaly: Anomaly,
        /// The lines of the transactions involved, in the anomaly's order.
        involved: Vec<String>,
    },
    /// No anomaly found, but a version's writer could not be named: not a pass.
    Undecided {
        /// Which check could not decide.
        scope: TxnScope,
        /// What the checker could not decide.
        undecided: Undecided,
        /// The reader's and candidates' lines.
        involved: Vec<String>,
    },
}

impl TxnVerdict {
    /// Whether this is a pass.
    pub fn passed(&self) -> bool {
        matches!(self, TxnVerdict::Serializable { .. })
    }
}

/// Runs the checker on `history`: first the read-write transactions alone,
/// strictly, then everything, read-only transactions included, not strictly.
/// The first anomaly found is the verdict; an undecided check is kept while
/// the other may still find an anomaly.
pub(super) fn check(history: &TxnHistory) -> Result<TxnVerdict, String> {
    let read_write: Vec<Txn> = history.txns.iter().filter(|t| t.kind == TxnKind::ReadWrite).cloned().collect();
    let name = |id: &TxnId| history.names.get(id).cloned().unwrap_or_else(|| format!("T{id}"));
    let mut undecided = None;
    for (scope, txns) in [(TxnScope::ReadWrite, &read_write), (TxnScope::All, &history.txns)] {
        let options = SerialOptions { strict: scope.strict() };
        match serial::check_serializable(txns, &options).map_err(|e| format!("malformed transactions: {e}"))? {
            SerialVerdict::Serializable => {}
            SerialVerdict::Anomaly(anomaly) => {
                let involved = anomaly.txns.iter().map(name).collect();
                return Ok(TxnVerdict::NotSerializable { scope, anomaly, involved });
            }
            SerialVerdict::Undecided(u) => {
                let involved = std::iter::once(&u.reader).chain(&u.candidates).map(name).collect();
                undecided.get_or_insert(TxnVerdict::Undecided { scope, undecided: u, involved });
            }
        }
    }
    Ok(undecided.unwrap_or(TxnVerdict::Serializable {
        transactions: history.txn_lines,
        read_only: history.read_only_lines,
        plain: history.register_lines,
    }))
}
