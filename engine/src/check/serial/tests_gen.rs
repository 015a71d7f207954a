//! Histories a correct store could have produced: a serial execution of
//! random read-write and read-only transactions against a reference store,
//! for the property and oracle tests.
//!
//! Transaction i runs alone at time point 1_000 + 100·i and is recorded with a
//! window stretched up to `stretch` units to either side of it, so windows
//! overlap (concurrent-looking transactions) but one that returned before
//! another was invoked always ran first: the serial order respects real time.
//! Commit versions strictly increase along it, with gaps. Read-only
//! transactions read the state at a snapshot at or below the newest version.
//! Some read-write transactions abort, and some end with an unknown outcome,
//! applied or not. Every value written is distinct, and a transaction of
//! unknown outcome never deletes, so every version read names its writer
//! (the checker never has to answer `Undecided`).

use std::collections::HashMap;

use super::super::test_rng::SplitMix;
use super::*;

/// A generated history and what the reference store knows of it.
pub(super) struct Generated {
    /// The recorded transactions, in serial order.
    pub(super) txns: Vec<Txn>,
    /// Per transaction, the version it was applied at, if it was (committed,
    /// or of unknown outcome but applied); `None` for one that wrote nothing.
    pub(super) applied: Vec<Option<Version>>,
}

/// One applied version of a key: (version, value, index of its writer).
pub(super) type Applied = (Version, Option<u64>, usize);

impl Generated {
    /// Per key, its versions oldest first.
    pub(super) fn chains(&self) -> HashMap<&[u8], Vec<Applied>> {
        let mut chains: HashMap<&[u8], Vec<_>> = HashMap::new();
        for (index, txn) in self.txns.iter().enumerate() {
            let Some(version) = self.applied[index] else {
                continue;
            };
            for write in &txn.writes {
                chains.entry(write.key.as_slice()).or_default().push((version, write.value, index));
            }
        }
        chains
    }
}

/// The name of key `index`.
pub(super) fn key_name(index: u64) -> Vec<u8> {
    format!("k{index}").into_bytes()
}

/// The reference store: per key, its versions oldest first.
struct Store {
    chains: Vec<Vec<(Version, Option<u64>)>>,
}

impl Store {
    /// The newest version of `key` at or below `at`, (0, absent) if none.
    fn read(&self, key: u64, at: Version) -> Read {
        let newest = self.chains[key as usize].iter().rev().find(|(version, _)| *version <= at);
        let (version, value) = newest.copied().unwrap_or((0, None));
        Read { key: key_name(key), version, value }
    }
}

/// How a read-write transaction ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Committed,
    Aborted,
    UnknownApplied,
    UnknownLost,
}

/// A serial history of `txns_count` transactions over `keys` keys.
pub(super) fn serial_history(seed: u64, txns_count: usize, keys: u64, stretch: u64) -> Generated {
    let mut rng = SplitMix(seed);
    let mut store = Store { chains: vec![Vec::new(); keys as usize] };
    let mut newest: Version = 0;
    let mut next_value = 1u64;
    let mut txns = Vec::with_capacity(txns_count);
    let mut applied = Vec::with_capacity(txns_count);
    for index in 0..txns_count {
        let point = 1_000 + 100 * index as u64;
        let invoke_time = point - rng.below(stretch + 1);
        let return_time = point + rng.below(stretch + 1);
        let id = index as u64 + 1;
        if rng.below(10) < 3 {
            let snapshot = newest - rng.below(newest.min(8) + 1);
            let reads = (0..1 + rng.below(3)).map(|_| store.read(rng.below(keys), snapshot)).collect();
            let kind = TxnKind::ReadOnly { snapshot };
            let outcome = TxnOutcome::Committed { version: snapshot };
            txns.push(Txn {
                id,
                kind,
                reads,
                writes: Vec::new(),
                outcome,
                invoke_time,
                return_time: Some(return_time),
            });
            applied.push(None);
            continue;
        }
        let fate = match rng.below(10) {
            0 => Fate::Aborted,
            1 => Fate::UnknownLost,
            2 => Fate::UnknownApplied,
            _ => Fate::Committed,
        };
        let reads = (0..rng.below(3)).map(|_| store.read(rng.below(keys), Version::MAX)).collect();
        let mut written_keys: Vec<u64> = (0..rng.below(4)).map(|_| rng.below(keys)).collect();
        written_keys.sort_unstable();
        written_keys.dedup();
        let writes: Vec<Write> = written_keys
            .iter()
            .map(|&key| {
                let deletes = fate != Fate::UnknownApplied && fate != Fate::UnknownLost && rng.below(8) == 0;
                let value = if deletes { None } else { Some(next_value) };
                next_value += 1;
                Write { key: key_name(key), value }
            })
            .collect();
        let applies = matches!(fate, Fate::Committed | Fate::UnknownApplied) && !writes.is_empty();
        if applies {
            newest += 1 + rng.below(3);
            for (&key, write) in written_keys.iter().zip(&writes) {
                store.chains[key as usize].push((newest, write.value));
            }
        }
        applied.push(applies.then_some(newest));
        let (outcome, return_time) = match fate {
            Fate::Committed => (TxnOutcome::Committed { version: newest.max(1) }, Some(return_time)),
            Fate::Aborted => (TxnOutcome::Aborted, Some(return_time)),
            Fate::UnknownApplied | Fate::UnknownLost => {
                (TxnOutcome::Unknown, if rng.below(2) == 0 { None } else { Some(return_time) })
            }
        };
        txns.push(Txn { id, kind: TxnKind::ReadWrite, reads, writes, outcome, invoke_time, return_time });
    }
    Generated { txns, applied }
}
