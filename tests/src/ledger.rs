//! Acknowledged writes and the proof that they are still there: for the
//! durability and shutdown tests, where every node goes down at once.
//!
//! Each writer thread owns its keys (no other writer touches them), so whatever
//! a key holds later came from this writer: the last acknowledged write, or one
//! of the writes after it whose fate the writer never learned. [`Ledger`] keeps
//! every write a writer did, in order, and [`verify`] asks the cluster for each
//! key's current value and its retained versions:
//! - every acknowledged write is in the key's versions, with its version and
//!   its value (or as a tombstone);
//! - the current value is the last acknowledged write, or a later one that was
//!   not acknowledged (with a higher version); never an older one, never
//!   nothing when a put was the last acknowledged write and no later delete was
//!   tried.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use corekv_rpc::client::KvError;
use corekv_rpc::client::blocking::Client;
use corekv_rpc::kv::Version;

/// One write a writer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The value put; `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// The version the cluster acknowledged; `None` when the writer never learned
    /// the outcome (it may or may not have been applied).
    pub acked: Option<Version>,
}

/// Every write of one writer, per key, in the order done.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// Key -> its writes.
    pub keys: BTreeMap<Vec<u8>, Vec<Write>>,
    /// Writes done.
    pub writes: u64,
    /// Writes acknowledged.
    pub acked: u64,
}

/// A writer's loop: puts (and every `DELETE_EVERY`th operation a delete) on its
/// own `keys` keys, cycling through them, so most keys are overwritten; until
/// `stop`. Answers that are neither a version nor a word of unknown fate are
/// violations, returned as errors.
pub fn write_until(
    client: &mut Client,
    writer: usize,
    keys: usize,
    stop: &AtomicBool,
    ledger: &mut Ledger,
) -> Result<(), String> {
    write_padded_until(client, writer, keys, 0, stop, ledger)
}

/// [`write_until`] with each value padded by `pad` bytes (more bytes per write:
/// logs that fill, shards that compact).
pub fn write_padded_until(
    client: &mut Client,
    writer: usize,
    keys: usize,
    pad: usize,
    stop: &AtomicBool,
    ledger: &mut Ledger,
) -> Result<(), String> {
    const DELETE_EVERY: u64 = 7;
    while !stop.load(Ordering::Relaxed) {
        let n = ledger.writes;
        ledger.writes += 1;
        let key = format!("w{writer}-k{:04}", n % keys as u64).into_bytes();
        let delete = n % DELETE_EVERY == DELETE_EVERY - 1;
        let (value, result) = if delete {
            (None, client.delete(&key))
        } else {
            let mut value = format!("w{writer}-n{n}").into_bytes();
            value.resize(value.len() + pad, b'.');
            let result = client.put(&key, &value);
            (Some(value), result)
        };
        let acked = match result {
            Ok(version) => Some(version),
            // A delete of an absent key writes nothing: nothing to remember.
            Err(KvError::NotFound) if delete => continue,
            Err(KvError::Indeterminate { .. } | KvError::Unavailable { .. }) => None,
            Err(other) => return Err(format!("{} was answered {other:?}", String::from_utf8_lossy(&key))),
        };
        ledger.acked += u64::from(acked.is_some());
        ledger.keys.entry(key).or_default().push(Write { value, acked });
    }
    Ok(())
}

/// What [`verify`] looked at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verified {
    /// Keys read.
    pub keys: usize,
    /// Acknowledged writes found in the versions.
    pub acked_writes: usize,
}

/// Checks every key of `ledgers` against the cluster (see the module doc);
/// every problem found, each one line.
pub fn verify(client: &mut Client, ledgers: &[Ledger]) -> Result<Verified, Vec<String>> {
    let mut problems = Vec::new();
    let mut verified = Verified::default();
    for (key, writes) in ledgers.iter().flat_map(|l| &l.keys) {
        verified.keys += 1;
        let name = String::from_utf8_lossy(key).into_owned();
        match verify_key(client, key, writes) {
            Ok(acked) => verified.acked_writes += acked,
            Err(problem) => problems.push(format!("{name}: {problem}")),
        }
    }
    if problems.is_empty() { Ok(verified) } else { Err(problems) }
}

fn verify_key(client: &mut Client, key: &[u8], writes: &[Write]) -> Result<usize, String> {
    let versions = match client.versions(key) {
        Ok(versions) => versions,
        // No history at all: right when none of the key's writes was
        // acknowledged (a writer whose first write of a key was cut off by the
        // kill; it happens when the load did not get round its keys once).
        Err(KvError::NotFound) if writes.iter().all(|w| w.acked.is_none()) => Vec::new(),
        Err(e) => return Err(format!("versions not served: {e}")),
    };
    let mut found = 0;
    for write in writes {
        let Some(version) = write.acked else { continue };
        let entry = versions.iter().find(|e| e.version == version);
        let matches = entry.is_some_and(|e| match &write.value {
            Some(value) => !e.deleted && &e.value == value,
            None => e.deleted,
        });
        if !matches {
            return Err(format!(
                "acknowledged {} at version {version} is not in its versions: {versions:?}",
                show(write)
            ));
        }
        found += 1;
    }
    let last_acked = writes.iter().rposition(|w| w.acked.is_some());
    let later = &writes[last_acked.map_or(0, |i| i + 1)..];
    let floor = last_acked.and_then(|i| writes[i].acked).unwrap_or(0);
    let current = match client.get(key, None) {
        Ok(got) => Some(got),
        Err(KvError::NotFound) => None,
        Err(e) => return Err(format!("get not served: {e}")),
    };
    let explained = match &current {
        // The last acknowledged write itself.
        Some(got) if got.version == floor => last_acked.is_some_and(|i| writes[i].value.as_ref() == Some(&got.value)),
        // A later put whose fate was unknown.
        Some(got) => got.version > floor && later.iter().any(|w| w.value.as_ref() == Some(&got.value)),
        // Deleted by the last acknowledged write, by a later delete of unknown
        // fate, or never written (nothing acknowledged).
        None => last_acked.is_none_or(|i| writes[i].value.is_none()) || later.iter().any(|w| w.value.is_none()),
    };
    if !explained {
        let last = last_acked.map_or("nothing".to_string(), |i| show(&writes[i]));
        return Err(format!("reads {current:?}, but the last acknowledged write was {last} at {floor}"));
    }
    Ok(found)
}

fn show(write: &Write) -> String {
    match &write.value {
        Some(value) => format!("put {:?}", String::from_utf8_lossy(value)),
        None => "delete".to_string(),
    }
}
