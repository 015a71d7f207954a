//! Recording transactions run through the blocking client as the history
//! file's transaction lines (`corekv_tools::history::TxnRecord`, one per
//! attempt, docs/HISTORY.md), and judging them with the same reader and checker
//! as `corekv-ctl check-history`.
//!
//! What is recorded is what the client was told: reads the store answered
//! (not those served from the transaction's own writes), the writes buffered
//! when it ended, and the outcome of its commit (`ok`, `aborted`,
//! `indeterminate`, `unavailable`). An attempt that fails before its commit is
//! `aborted` or `unavailable`: its commit was never sent, so it cannot have
//! committed.
//!
//! Two rules keep the record true (docs/HISTORY.md): a read answered "not
//! found" is recorded as version 0 only for a key that is never deleted (the
//! client is not told a tombstone's version), so the caller says per read
//! whether the key may have a tombstone; and a delete is only recorded when it
//! creates a tombstone, so callers delete only keys the transaction read
//! present.

use std::collections::BTreeMap;
use std::sync::Mutex;

use corekv_rpc::client::KvError;
use corekv_rpc::client::blocking::{Client, TxnHandle};
use corekv_rpc::kv::Version;
use corekv_rpc::txn::Policy;
use corekv_tools::history::{
    FileVerdict, HistoryWriter, TxnReadRecord, TxnRecord, TxnWriteRecord, check_all, describe_txns, read_all,
};

use crate::history::Recorder;

/// Every attempt of every client, against the clock of a [`Recorder`].
#[derive(Debug, Default)]
pub struct TxnLog {
    records: Mutex<Vec<TxnRecord>>,
}

impl TxnLog {
    /// Every attempt recorded so far.
    pub fn records(&self) -> Vec<TxnRecord> {
        self.records.lock().expect("a client thread panicked while recording").clone()
    }

    fn push(&self, record: TxnRecord) {
        self.records.lock().expect("a client thread panicked while recording").push(record);
    }

    /// The history file's bytes: one transaction line per attempt.
    pub fn to_file(&self) -> Vec<u8> {
        let mut writer = HistoryWriter::new(Vec::new());
        for record in self.records() {
            writer.write_txn(&record).expect("writing to memory cannot fail");
        }
        writer.flush().expect("flushing memory cannot fail");
        writer.into_inner()
    }

    /// Reads the lines back as `check-history` does and runs both checkers.
    pub fn check(&self) -> Result<FileVerdict, String> {
        let bytes = self.to_file();
        check_all(&read_all(&bytes[..])?)
    }
}

/// One attempt being recorded.
#[derive(Debug)]
pub struct Attempt {
    handle: TxnHandle,
    record: TxnRecord,
    /// The transaction's own writes, last one per key: reads of them are the
    /// client's, not the store's.
    own: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Committed at this version (the snapshot version for read-only).
    Committed(Version),
    /// Certainly not committed; worth retrying when `aborted`.
    NotCommitted(KvError),
    /// May have committed.
    Indeterminate,
}

impl Attempt {
    /// Begins attempt `attempt` of client `worker`'s transaction: read-write
    /// under `policy` from `start` (a wait-die retry keeps its first start), or
    /// read-only when `policy` is `None`.
    pub fn begin(
        clock: &Recorder,
        client: &mut Client,
        worker: u64,
        policy: Option<Policy>,
        start: Option<Version>,
        attempt: u32,
    ) -> Attempt {
        let invoke_ns = clock.now_ns();
        let handle = match (policy, start) {
            (None, _) => client.txn_begin_read_only(None),
            (Some(policy), Some(start)) => client.txn_begin_at(policy, start),
            (Some(policy), None) => client.txn_begin(policy),
        };
        let record = TxnRecord {
            client: worker,
            op: "txn".into(),
            txn: handle.id().to_string(),
            policy: policy.map_or("read-only", |p| p.name()).into(),
            attempt,
            start_version: handle.start_version(),
            reads: Vec::new(),
            writes: Vec::new(),
            invoke_ns,
            return_ns: None,
            outcome: String::new(),
            reason: None,
            version: None,
        };
        Attempt { handle, record, own: BTreeMap::new() }
    }

    /// The start version (a wait-die retry begins again from it).
    pub fn start_version(&self) -> Version {
        self.handle.start_version()
    }

    /// Reads `key`: its value, `None` when absent. `may_be_deleted` says the key
    /// may hold a tombstone, whose version the client does not tell: then an
    /// absent answer is not recorded. An error ends the attempt (see
    /// [`Attempt::fail`]).
    pub fn get(&mut self, client: &mut Client, key: &[u8], may_be_deleted: bool) -> Result<Option<Vec<u8>>, KvError> {
        if let Some(own) = self.own.get(key) {
            return Ok(own.clone());
        }
        match client.txn_get(&mut self.handle, key) {
            Ok(got) => {
                self.record.reads.push(TxnReadRecord::new(key, got.version, Some(&got.value)));
                Ok(Some(got.value))
            }
            Err(KvError::NotFound) => {
                if !may_be_deleted {
                    self.record.reads.push(TxnReadRecord::new(key, 0, None));
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes `value` at `key` at commit (`None`: a delete, which the caller
    /// makes only of a key it read present).
    pub fn write(&mut self, client: &mut Client, key: &[u8], value: Option<&[u8]>) -> Result<(), KvError> {
        match value {
            Some(value) => client.txn_put(&mut self.handle, key, value)?,
            None => client.txn_delete(&mut self.handle, key)?,
        }
        self.own.insert(key.to_vec(), value.map(<[u8]>::to_vec));
        Ok(())
    }

    /// Commits and records the outcome; an answer no commit gets is an error
    /// for the test to fail on.
    pub fn commit(mut self, clock: &Recorder, log: &TxnLog, client: &mut Client) -> Result<Ended, String> {
        self.record.writes = self.own.iter().map(|(key, value)| TxnWriteRecord::new(key, value.as_deref())).collect();
        let result = client.txn_commit(self.handle);
        let returned = clock.now_ns();
        let mut record = self.record;
        let ended = match result {
            Ok(version) => {
                record.outcome = "ok".into();
                record.version = Some(version);
                Ended::Committed(version)
            }
            Err(KvError::Indeterminate { .. }) => {
                record.outcome = "indeterminate".into();
                Ended::Indeterminate
            }
            Err(e @ (KvError::Aborted { .. } | KvError::Unavailable { .. })) => {
                record.outcome = e.word().into();
                record.reason = abort_reason(&e);
                Ended::NotCommitted(e)
            }
            Err(other) => return Err(format!("txn {}: commit answered {other:?}", record.txn)),
        };
        if ended != Ended::Indeterminate {
            record.return_ns = Some(returned);
        }
        log.push(record);
        Ok(ended)
    }

    /// Ends the attempt after `error` from a read or a write, before any commit
    /// was sent: `aborted` or `unavailable` (it cannot have committed). An
    /// answer no read or write inside a transaction gets is an error for the
    /// test to fail on.
    pub fn fail(
        mut self,
        clock: &Recorder,
        log: &TxnLog,
        client: &mut Client,
        error: KvError,
    ) -> Result<Ended, String> {
        let word = match &error {
            KvError::Aborted { .. } => "aborted",
            KvError::Unavailable { .. } | KvError::Indeterminate { .. } => "unavailable",
            other => return Err(format!("txn {}: a read or write answered {other:?}", self.record.txn)),
        };
        if self.handle.is_open() {
            // Releases what it holds; its answer changes nothing recorded.
            let _ = client.txn_abort(self.handle);
        }
        self.record.writes = self.own.iter().map(|(key, value)| TxnWriteRecord::new(key, value.as_deref())).collect();
        self.record.outcome = word.into();
        self.record.reason = abort_reason(&error);
        self.record.return_ns = Some(clock.now_ns());
        log.push(self.record);
        Ok(Ended::NotCommitted(error))
    }
}

fn abort_reason(error: &KvError) -> Option<String> {
    match error {
        KvError::Aborted { reason } => Some(reason.to_string()),
        _ => None,
    }
}

/// The verdict in lines fit for a panic message.
pub fn verdict_text(verdict: &FileVerdict) -> String {
    let mut lines = vec![format!("registers: {:?}", verdict.registers)];
    lines.extend(describe_txns(&verdict.txns));
    lines.join("\n")
}
