//! An in-memory `Kv` for the session and shell tests: every command without a
//! cluster, with versions that rise by one.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;

use corekv_rpc::kv::{ClientId, ScanItem};
use corekv_rpc::txn::AbortReason;

use corekv_rpc::client::{ClusterStatus, Got, KvError, ScanPage, VersionEntry};
use corekv_rpc::kv::Version;
use corekv_rpc::txn::{Policy, TxnId};

use super::session::*;

/// A key's versions, oldest first; `None` is a tombstone.
type History = Vec<(Version, Option<Vec<u8>>)>;

/// What a test sees of, and does to, the [`MemoryKv`]s its session connects.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// Connections made.
    pub connects: Rc<Cell<u32>>,
    /// Transactions aborted (their locks released).
    pub aborts: Rc<Cell<u32>>,
    /// When set, the next call on the open transaction answers `aborted` with
    /// this reason and leaves the transaction open: the session must end it.
    pub doom: Rc<Cell<Option<AbortReason>>>,
}

/// The open transaction.
#[derive(Debug)]
struct MemoryTxn {
    open: OpenTxn,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

/// Every key's history, and the open transaction.
#[derive(Debug, Default)]
pub struct MemoryKv {
    keys: BTreeMap<Vec<u8>, History>,
    next_version: Version,
    txn: Option<MemoryTxn>,
    txns_begun: u64,
    probe: Probe,
}

impl MemoryKv {
    fn current(&self, key: &[u8]) -> Option<(Version, &Vec<u8>)> {
        let (version, value) = self.keys.get(key)?.last()?;
        value.as_ref().map(|v| (*version, v))
    }

    /// The open transaction, unless the probe dooms this call.
    fn txn_mut(&mut self) -> Result<&mut MemoryTxn, KvError> {
        if let Some(reason) = self.probe.doom.take() {
            return Err(KvError::Aborted { reason });
        }
        self.txn.as_mut().ok_or_else(no_open_txn)
    }

    /// The snapshot of the open transaction when it is read-only.
    fn read_only_at(&self) -> Option<Version> {
        self.txn.as_ref().filter(|t| t.open.read_only).map(|t| t.open.start_version)
    }

    fn txn_write(&mut self, key: &[u8], value: Option<Vec<u8>>) -> Result<(), KvError> {
        let txn = self.txn_mut()?;
        if txn.open.read_only {
            return Err(KvError::Invalid { message: "a read-only transaction cannot write".into() });
        }
        txn.writes.insert(key.to_vec(), value);
        Ok(())
    }

    fn scan_at(&self, start: &[u8], end: &[u8], limit: u32, at: Option<Version>) -> ScanPage {
        let live: Vec<ScanItem> = self
            .keys
            .keys()
            .filter(|k| k.as_slice() >= start && (end.is_empty() || k.as_slice() < end))
            .filter_map(|k| {
                let got = self.get_at(k, at).ok()?;
                Some(ScanItem { key: k.clone(), version: got.version, value: got.value })
            })
            .collect();
        let more = live.len() > limit as usize;
        ScanPage { items: live.into_iter().take(limit as usize).collect(), more }
    }

    fn get_at(&self, key: &[u8], at: Option<Version>) -> Result<Got, KvError> {
        let versions = self.keys.get(key).ok_or(KvError::NotFound)?;
        let found = versions.iter().rev().find(|(v, _)| at.is_none_or(|at| *v <= at));
        match found {
            Some((version, Some(value))) => Ok(Got { version: *version, value: value.clone() }),
            _ => Err(KvError::NotFound),
        }
    }

    fn write(&mut self, key: &[u8], value: Option<Vec<u8>>) -> Version {
        self.next_version += 1;
        self.keys.entry(key.to_vec()).or_default().push((self.next_version, value));
        self.next_version
    }
}

impl Kv for MemoryKv {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<Version, KvError> {
        Ok(self.write(key, Some(value.to_vec())))
    }
    fn delete(&mut self, key: &[u8]) -> Result<Version, KvError> {
        self.current(key).ok_or(KvError::NotFound)?;
        Ok(self.write(key, None))
    }
    fn cas(&mut self, key: &[u8], expected: Version, value: &[u8]) -> Result<Version, KvError> {
        let current = self.current(key).map_or(0, |(v, _)| v);
        if current != expected {
            return Err(KvError::VersionMismatch { current });
        }
        Ok(self.write(key, Some(value.to_vec())))
    }
    fn get(&mut self, key: &[u8], at: Option<Version>) -> Result<Got, KvError> {
        self.get_at(key, at)
    }
    fn versions(&mut self, key: &[u8]) -> Result<Vec<VersionEntry>, KvError> {
        let versions = self.keys.get(key).map_or(&[][..], Vec::as_slice);
        Ok(versions
            .iter()
            .rev()
            .map(|(version, value)| VersionEntry {
                version: *version,
                deleted: value.is_none(),
                value: value.clone().unwrap_or_default(),
            })
            .collect())
    }
    fn txn(&mut self, policy: Policy, ops: &[TxnOp]) -> Result<TxnDone, KvError> {
        // Alone in memory, a transaction never conflicts: one attempt.
        let open = self.begin(TxnMode::ReadWrite(policy))?;
        let mut reads = Vec::new();
        for op in ops {
            let done = match op {
                TxnOp::Get(key) => {
                    reads.push((key.clone(), self.txn_get(key)));
                    Ok(())
                }
                TxnOp::Put(key, value) => self.txn_put(key, value),
                TxnOp::Delete(key) => self.txn_delete(key),
            };
            if let Err(e) = done {
                self.abort()?;
                return Err(e);
            }
        }
        let version = self.commit()?;
        Ok(TxnDone { version, start_version: open.start_version, attempts: 1, reads })
    }
    fn open_txn(&self) -> Option<OpenTxn> {
        self.txn.as_ref().map(|t| t.open)
    }
    fn begin(&mut self, mode: TxnMode) -> Result<OpenTxn, KvError> {
        if let Some(txn) = &self.txn {
            return Err(KvError::Invalid { message: format!("transaction {} is open", txn.open.id) });
        }
        self.txns_begun += 1;
        let id = TxnId { client: ClientId::from_u128(1), attempt: self.txns_begun };
        let open = match mode {
            TxnMode::ReadWrite(_) => OpenTxn { id, start_version: self.next_version + 1, read_only: false },
            TxnMode::ReadOnly { at } => OpenTxn { id, start_version: at.unwrap_or(self.next_version), read_only: true },
        };
        self.txn = Some(MemoryTxn { open, writes: BTreeMap::new() });
        Ok(open)
    }
    fn txn_get(&mut self, key: &[u8]) -> Result<Got, KvError> {
        match self.txn_mut()?.writes.get(key) {
            Some(Some(value)) => Ok(Got { version: 0, value: value.clone() }),
            Some(None) => Err(KvError::NotFound),
            None => self.get_at(key, self.read_only_at()),
        }
    }
    fn txn_scan(&mut self, start: &[u8], end: &[u8], limit: u32) -> Result<ScanPage, KvError> {
        let own: Vec<(Vec<u8>, Option<Vec<u8>>)> = self
            .txn_mut()?
            .writes
            .iter()
            .filter(|(k, _)| k.as_slice() >= start && (end.is_empty() || k.as_slice() < end))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let page = self.scan_at(start, end, limit, self.read_only_at());
        Ok(corekv_rpc::client::overlay_own_writes(page, own.iter().map(|(k, v)| (k.as_slice(), v.as_deref())), limit))
    }
    fn txn_put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.txn_write(key, Some(value.to_vec()))
    }
    fn txn_delete(&mut self, key: &[u8]) -> Result<(), KvError> {
        self.txn_write(key, None)
    }
    fn commit(&mut self) -> Result<Version, KvError> {
        self.txn_mut()?;
        let txn = self.txn.take().expect("checked just above");
        if txn.open.read_only {
            return Ok(txn.open.start_version);
        }
        self.next_version += 1;
        let version = self.next_version;
        for (key, value) in txn.writes {
            // A delete of an absent key writes nothing.
            if value.is_some() || self.current(&key).is_some() {
                self.keys.entry(key).or_default().push((version, value));
            }
        }
        Ok(version)
    }
    fn abort(&mut self) -> Result<(), KvError> {
        self.txn.take().ok_or_else(no_open_txn)?;
        self.probe.aborts.set(self.probe.aborts.get() + 1);
        Ok(())
    }
    fn scan(&mut self, start: &[u8], end: &[u8], limit: u32) -> Result<ScanPage, KvError> {
        Ok(self.scan_at(start, end, limit, None))
    }
    fn status(&mut self) -> ClusterStatus {
        ClusterStatus { cluster_id: 1, epoch: 1, nodes: Vec::new() }
    }
    fn fresh_map(&mut self) -> Result<corekv_rpc::map::ClusterMap, KvError> {
        Err(KvError::Unavailable { reason: "an in-memory store has no cluster map".into() })
    }
    fn submit_meta(&mut self, _edit: corekv_rpc::node::MetaEdit) -> Result<(), KvError> {
        Err(KvError::Unavailable { reason: "an in-memory store has no meta group".into() })
    }
}

/// A session over a fresh [`MemoryKv`], and the count of connections it made.
pub fn session(json: bool) -> (Session, Rc<Cell<u32>>) {
    let (session, probe) = probed_session(json);
    (session, probe.connects)
}

/// A session over a fresh [`MemoryKv`], and its probe.
pub fn probed_session(json: bool) -> (Session, Probe) {
    let probe = Probe::default();
    let shared = probe.clone();
    let connector: Connector = Box::new(move || {
        shared.connects.set(shared.connects.get() + 1);
        Ok(Box::new(MemoryKv { probe: shared.clone(), ..MemoryKv::default() }) as Box<dyn Kv>)
    });
    (Session::with_connector(json, connector), probe)
}
