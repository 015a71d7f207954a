//! The versioned (MVCC) store of one shard: an ordered map key -> version chain.
//!
//! Owns the shard's data; runs on the core that owns the shard, inside the shard
//! state machine ([`super::shard`]), which picks every version. Sans-I/O and
//! deterministic: the same calls give the same state on every replica.
//!
//! A chain holds the key's retained versions **oldest first, newest last** (a write
//! appends; trimming drops a prefix). A version with no value is a tombstone.
//!
//! Invariants:
//! - versions in a chain are strictly increasing, and a chain is never empty;
//! - a chain answers reads at any `V ≥ history_from`: versions older than
//!   `history_from` were dropped, so a read below it answers `compacted`;
//! - retention (DESIGN §6 "bounded history"): after every write a chain keeps at
//!   most [`Retention::versions_per_key_max`] versions, and of the versions at or
//!   below the store's floor only the newest (which answers reads at the floor);
//!   a read at `V < floor` answers `compacted` for every key;
//! - a deleted key behaves exactly like an absent one except in `versions`;
//! - the sweep ([`Store::sweep_step`]) trims chains the floor has passed and drops
//!   keys whose only retained version is a tombstone at or below the floor, so
//!   deletes do not leave history behind forever. It keeps its cursor in the
//!   replicated data: every replica sweeps the same keys at the same entry.

use std::collections::BTreeMap;
use std::ops::Bound;

use corekv_rpc::kv::{
    OkReply, Outcome, SCAN_KEYS_EXAMINED_MAX, SCAN_REPLY_BYTES_MAX, ScanItem, VERSIONS_REPLY_BYTES_MAX, Version,
    VersionInfo,
};
use rkyv::{Archive, Deserialize, Serialize};

/// One retained version of a key.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    /// The version (commit timestamp).
    pub version: Version,
    /// The value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

/// The retained versions of one key.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Reads at a version below this answer `compacted` (0: the whole history is here).
    pub history_from: Version,
    /// Oldest first, strictly increasing, never empty.
    pub versions: Vec<StoredVersion>,
}

/// The replicated part of the store: what a snapshot carries.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreData {
    /// key -> chain, in key order.
    pub keys: BTreeMap<Vec<u8>, Chain>,
    /// Reads at a version below this answer `compacted`; only ever rises.
    pub floor_version: Version,
    /// Where the next sweep step starts (empty: at the first key).
    pub sweep_cursor: Vec<u8>,
}

/// How much history the store keeps. Must be the same on every replica of a shard
/// (it decides which reads answer `compacted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Most versions (tombstones included) kept per key; at least 1.
    pub versions_per_key_max: usize,
    /// The shard keeps every version newer than `last_applied_version` minus this
    /// span of HLC timestamp units (`ms << 16`): the history floor trails the newest
    /// version by this much.
    pub history_ts_span: u64,
}

/// Keys one sweep step examines. The shard runs a step after every applied command,
/// so the sweep walks the whole key space again and again at a bounded cost each.
pub const SWEEP_KEYS_PER_STEP: usize = 8;

/// Default versions kept per key.
pub const VERSIONS_PER_KEY_MAX_DEFAULT: usize = 64;
/// Default history span: one hour of HLC time.
pub const HISTORY_TS_SPAN_DEFAULT: u64 = (60 * 60 * 1000) << super::hlc::LOGICAL_BITS;

impl Default for Retention {
    fn default() -> Self {
        Retention { versions_per_key_max: VERSIONS_PER_KEY_MAX_DEFAULT, history_ts_span: HISTORY_TS_SPAN_DEFAULT }
    }
}

/// What a read at a version found for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visible<'a> {
    /// A live value.
    Value(Version, &'a [u8]),
    /// Absent or deleted at that version.
    Absent,
    /// Older than the retained history.
    Compacted,
}

impl Chain {
    fn newest(&self) -> &StoredVersion {
        self.versions.last().expect("a chain is never empty")
    }

    /// The current version, 0 when the newest version is a tombstone.
    fn current_version(&self) -> Version {
        let newest = self.newest();
        if newest.value.is_some() { newest.version } else { 0 }
    }

    /// The newest version ≤ `at` (`None`: the newest).
    fn visible_at(&self, at: Option<Version>) -> Visible<'_> {
        let found = match at {
            None => Some(self.newest()),
            Some(at) if at < self.history_from => return Visible::Compacted,
            Some(at) => {
                let n = self.versions.partition_point(|v| v.version <= at);
                if n == 0 { None } else { Some(&self.versions[n - 1]) }
            }
        };
        match found {
            Some(StoredVersion { version, value: Some(value) }) => Visible::Value(*version, value),
            _ => Visible::Absent,
        }
    }

    /// Index of the oldest version retention keeps: at most `max` versions, and of
    /// those at or below `floor` only the newest.
    fn retained_start(&self, retention: &Retention, floor: Version) -> usize {
        let by_count = self.versions.len().saturating_sub(retention.versions_per_key_max);
        let at_or_below_floor = self.versions.partition_point(|v| v.version <= floor);
        by_count.max(at_or_below_floor.saturating_sub(1))
    }

    fn trim(&mut self, retention: &Retention, floor: Version) {
        let start = self.retained_start(retention, floor);
        if start > 0 {
            self.versions.drain(..start);
            self.history_from = self.versions[0].version;
        }
    }
}

/// The versioned store of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    data: StoreData,
    retention: Retention,
    /// [`chain_bytes`] summed over every key: the store's size, kept as it changes.
    bytes: u64,
}

/// Bytes per stored version beside its value (version, tag), and per key beside
/// its bytes (the chain's bookkeeping): a size estimate, close to what a snapshot
/// of the store takes.
const VERSION_OVERHEAD_BYTES: u64 = 16;
const KEY_OVERHEAD_BYTES: u64 = 16;

/// The estimated size of `key` and its retained versions.
fn chain_bytes(key: &[u8], chain: &Chain) -> u64 {
    let versions: u64 =
        chain.versions.iter().map(|v| VERSION_OVERHEAD_BYTES + v.value.as_ref().map_or(0, |x| x.len() as u64)).sum();
    KEY_OVERHEAD_BYTES + key.len() as u64 + versions
}

impl Store {
    /// An empty store.
    pub fn new(retention: Retention) -> Self {
        assert!(retention.versions_per_key_max >= 1, "retention must keep at least one version per key");
        Store { data: StoreData::default(), retention, bytes: 0 }
    }

    /// A store over already validated data (snapshot restore).
    pub(crate) fn from_data(data: StoreData, retention: Retention) -> Self {
        let mut store = Store::new(retention);
        store.bytes = data.keys.iter().map(|(k, c)| chain_bytes(k, c)).sum();
        store.data = data;
        store
    }

    /// The store's estimated size in bytes: keys and retained versions (what a
    /// replica move ships, about).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The replicated data, for snapshots.
    pub(crate) fn data(&self) -> &StoreData {
        &self.data
    }

    /// The retention policy.
    pub fn retention(&self) -> &Retention {
        &self.retention
    }

    /// Number of keys with retained history (deleted keys included).
    pub fn key_count(&self) -> usize {
        self.data.keys.len()
    }

    /// Reads at a version below this answer `compacted`.
    pub fn floor_version(&self) -> Version {
        self.data.floor_version
    }

    /// Raises the history floor (never lowers it). Versions below it go at the next
    /// write of their key; reads below it answer `compacted` at once.
    pub fn raise_floor(&mut self, floor: Version) {
        self.data.floor_version = self.data.floor_version.max(floor);
    }

    /// Examines up to `keys_max` keys from the sweep cursor on (wrapping at the end):
    /// drops versions retention no longer keeps, and keys left with nothing but a
    /// tombstone at or below the floor.
    pub fn sweep_step(&mut self, keys_max: usize) {
        let floor = self.data.floor_version;
        if floor == 0 {
            return;
        }
        let start = std::mem::take(&mut self.data.sweep_cursor);
        let mut dead = Vec::new();
        let range = self.data.keys.range_mut::<[u8], _>((Bound::Included(&start[..]), Bound::Unbounded));
        for (examined, (key, chain)) in range.enumerate() {
            if examined == keys_max {
                self.data.sweep_cursor = key.clone();
                break;
            }
            let before = chain_bytes(key, chain);
            chain.trim(&self.retention, floor);
            self.bytes = self.bytes - before + chain_bytes(key, chain);
            if let [StoredVersion { version, value: None }] = chain.versions[..]
                && version <= floor
            {
                dead.push(key.clone());
            }
        }
        for key in dead {
            if let Some(chain) = self.data.keys.remove(&key) {
                self.bytes -= chain_bytes(&key, &chain);
            }
        }
    }

    /// What a read of `key` at `at` (`None`: latest) sees.
    pub fn visible(&self, key: &[u8], at: Option<Version>) -> Visible<'_> {
        if at.is_some_and(|at| at < self.data.floor_version) {
            return Visible::Compacted;
        }
        match self.data.keys.get(key) {
            Some(chain) => chain.visible_at(at),
            None => Visible::Absent,
        }
    }

    /// The current version of `key`: 0 when absent or deleted.
    pub fn current_version(&self, key: &[u8]) -> Version {
        self.data.keys.get(key).map_or(0, Chain::current_version)
    }

    /// The newest version of `key`, tombstones included (0 when none is retained).
    pub fn newest_version(&self, key: &[u8]) -> Version {
        self.data.keys.get(key).map_or(0, |c| c.newest().version)
    }

    /// The highest newest version (tombstones included) of any key in `[start,
    /// end)` (empty `end`: unbounded); 0 when none. Costs one step per key in the
    /// range.
    pub fn newest_in_range(&self, start: &[u8], end: &[u8]) -> Version {
        if !end.is_empty() && start >= end {
            return 0;
        }
        let upper = if end.is_empty() { Bound::Unbounded } else { Bound::Excluded(end) };
        self.data
            .keys
            .range::<[u8], _>((Bound::Included(start), upper))
            .map(|(_, c)| c.newest().version)
            .max()
            .unwrap_or(0)
    }

    /// get (latest, or newest version ≤ `at`): `ok` with value and version,
    /// `not_found`, or `compacted`.
    pub fn get(&self, key: &[u8], at: Option<Version>) -> Outcome {
        match self.visible(key, at) {
            Visible::Value(version, value) => Outcome::Ok(OkReply::Value { version, value: value.to_vec() }),
            Visible::Absent => Outcome::NotFound,
            Visible::Compacted => Outcome::Compacted,
        }
    }

    /// The retained history of `key`, newest first, tombstones marked; `not_found`
    /// when nothing is retained.
    pub fn versions(&self, key: &[u8]) -> Outcome {
        let Some(chain) = self.data.keys.get(key) else { return Outcome::NotFound };
        // Report what retention keeps even where the floor rose after the last write.
        let start = chain.retained_start(&self.retention, self.data.floor_version);
        let mut versions = Vec::new();
        let mut bytes = 0usize;
        let mut more = false;
        for v in chain.versions[start..].iter().rev() {
            let value = v.value.as_deref().unwrap_or_default();
            if !versions.is_empty() && bytes + value.len() > VERSIONS_REPLY_BYTES_MAX {
                more = true;
                break;
            }
            bytes += value.len();
            versions.push(VersionInfo { version: v.version, deleted: v.value.is_none(), value: value.to_vec() });
        }
        Outcome::Ok(OkReply::Versions { versions, more })
    }

    /// The live keys of `[start, end)` (empty `end`: no upper bound) at `at`, at most
    /// `limit`, in order. Stops early, with the key to resume from, at the limit,
    /// after [`SCAN_KEYS_EXAMINED_MAX`] keys (tombstones count), or before the reply
    /// would pass [`SCAN_REPLY_BYTES_MAX`] bytes of keys and values. `compacted` when `at`
    /// is below the retained history of any key it meets.
    pub fn scan(&self, start: &[u8], end: &[u8], limit: usize, at: Option<Version>) -> Outcome {
        if at.is_some_and(|at| at < self.data.floor_version) {
            return Outcome::Compacted;
        }
        if !end.is_empty() && start >= end {
            return Outcome::Ok(OkReply::Scan { items: Vec::new(), resume: None });
        }
        let upper = if end.is_empty() { Bound::Unbounded } else { Bound::Excluded(end) };
        let mut items = Vec::new();
        let mut reply_bytes = 0;
        for (examined, (key, chain)) in self.data.keys.range::<[u8], _>((Bound::Included(start), upper)).enumerate() {
            if examined == SCAN_KEYS_EXAMINED_MAX {
                return Outcome::Ok(OkReply::Scan { items, resume: Some(key.clone()) });
            }
            match chain.visible_at(at) {
                Visible::Value(_, value)
                    if items.len() == limit
                        || (!items.is_empty() && reply_bytes + key.len() + value.len() > SCAN_REPLY_BYTES_MAX) =>
                {
                    return Outcome::Ok(OkReply::Scan { items, resume: Some(key.clone()) });
                }
                Visible::Value(version, value) => {
                    reply_bytes += key.len() + value.len();
                    items.push(ScanItem { key: key.clone(), version, value: value.to_vec() })
                }
                Visible::Absent => {}
                Visible::Compacted => return Outcome::Compacted,
            }
        }
        Outcome::Ok(OkReply::Scan { items, resume: None })
    }

    /// Writes `value` (`None`: a tombstone) as `version` of `key`, unconditionally.
    /// The seam for every kind of write: plain writes below, and later a transaction's
    /// commit, which writes exactly its commit version.
    ///
    /// Panics if `version` is not above the key's newest version: the caller (the
    /// shard) picks versions and must keep them increasing.
    pub fn write(&mut self, key: &[u8], value: Option<Vec<u8>>, version: Version) {
        let stored = StoredVersion { version, value };
        match self.data.keys.get_mut(key) {
            Some(chain) => {
                assert!(
                    version > chain.newest().version,
                    "version {version} not above the key's newest {}",
                    chain.newest().version
                );
                let before = chain_bytes(key, chain);
                chain.versions.push(stored);
                chain.trim(&self.retention, self.data.floor_version);
                self.bytes = self.bytes - before + chain_bytes(key, chain);
            }
            None => {
                let chain = Chain { history_from: 0, versions: vec![stored] };
                self.bytes += chain_bytes(key, &chain);
                self.data.keys.insert(key.to_vec(), chain);
            }
        }
    }

    /// put: always writes; `ok` with the version.
    pub fn put(&mut self, key: &[u8], value: Vec<u8>, version: Version) -> Outcome {
        self.write(key, Some(value), version);
        Outcome::Ok(OkReply::Written { version })
    }

    /// delete: writes a tombstone if the key is live; `not_found` (writing nothing)
    /// when it is absent or already deleted.
    pub fn delete(&mut self, key: &[u8], version: Version) -> Outcome {
        if self.current_version(key) == 0 {
            return Outcome::NotFound;
        }
        self.write(key, None, version);
        Outcome::Ok(OkReply::Written { version })
    }

    /// compare-and-set: writes only if the current version (0 for absent or
    /// deleted) equals `expected`; otherwise `version_mismatch` with the current one.
    pub fn cas(&mut self, key: &[u8], expected: Version, value: Vec<u8>, version: Version) -> Outcome {
        let current = self.current_version(key);
        if current != expected {
            return Outcome::VersionMismatch { current };
        }
        self.write(key, Some(value), version);
        Outcome::Ok(OkReply::Written { version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(Retention { versions_per_key_max: 4, history_ts_span: 0 })
    }

    fn value(out: &Outcome) -> (Version, &[u8]) {
        match out {
            Outcome::Ok(OkReply::Value { version, value }) => (*version, value),
            other => panic!("expected a value, got {other:?}"),
        }
    }

    fn history(s: &Store, key: &[u8]) -> Vec<(Version, bool)> {
        match s.versions(key) {
            Outcome::Ok(OkReply::Versions { versions, .. }) => {
                versions.iter().map(|v| (v.version, v.deleted)).collect()
            }
            Outcome::NotFound => vec![],
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn put_then_get_latest_and_at_version() {
        let mut s = store();
        assert_eq!(s.put(b"k", b"a".to_vec(), 10), Outcome::Ok(OkReply::Written { version: 10 }));
        s.put(b"k", b"b".to_vec(), 20);
        assert_eq!(value(&s.get(b"k", None)), (20, &b"b"[..]));
        assert_eq!(value(&s.get(b"k", Some(15))), (10, &b"a"[..]));
        assert_eq!(value(&s.get(b"k", Some(20))), (20, &b"b"[..]));
        assert_eq!(value(&s.get(b"k", Some(u64::MAX))), (20, &b"b"[..]));
        assert_eq!(s.get(b"k", Some(9)), Outcome::NotFound, "before the first version there is nothing");
        assert_eq!(s.get(b"other", None), Outcome::NotFound);
    }

    #[test]
    fn versions_carry_values_newest_first_and_stop_at_the_byte_bound() {
        let mut s = store();
        s.put(b"k", b"a".to_vec(), 10);
        s.delete(b"k", 11);
        s.put(b"k", b"c".to_vec(), 12);
        match s.versions(b"k") {
            Outcome::Ok(OkReply::Versions { versions, more }) => {
                let got: Vec<_> = versions.iter().map(|v| (v.version, v.deleted, v.value.as_slice())).collect();
                assert_eq!(got, [(12, false, &b"c"[..]), (11, true, &b""[..]), (10, false, &b"a"[..])]);
                assert!(!more);
            }
            other => panic!("unexpected {other:?}"),
        }
        let big = vec![7u8; VERSIONS_REPLY_BYTES_MAX / 2 + 1];
        s.put(b"big", big.clone(), 20);
        s.put(b"big", big.clone(), 21);
        s.put(b"big", big, 22);
        match s.versions(b"big") {
            Outcome::Ok(OkReply::Versions { versions, more }) => {
                assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), [22], "two halves pass the bound");
                assert!(more, "older retained versions were left out and the reply says so");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn delete_writes_a_tombstone_visible_only_in_versions() {
        let mut s = store();
        s.put(b"k", b"a".to_vec(), 10);
        assert_eq!(s.delete(b"k", 11), Outcome::Ok(OkReply::Written { version: 11 }));
        assert_eq!(s.get(b"k", None), Outcome::NotFound);
        assert_eq!(s.get(b"k", Some(11)), Outcome::NotFound, "a tombstone at V reads as not found");
        assert_eq!(value(&s.get(b"k", Some(10))), (10, &b"a"[..]));
        assert_eq!(history(&s, b"k"), vec![(11, true), (10, false)]);
    }

    #[test]
    fn delete_of_deleted_or_absent_key_is_not_found_and_writes_nothing() {
        let mut s = store();
        assert_eq!(s.delete(b"k", 5), Outcome::NotFound);
        assert_eq!(s.key_count(), 0);
        s.put(b"k", b"a".to_vec(), 10);
        s.delete(b"k", 11);
        assert_eq!(s.delete(b"k", 12), Outcome::NotFound);
        assert_eq!(history(&s, b"k"), vec![(11, true), (10, false)]);
    }

    #[test]
    fn cas_treats_deleted_like_absent() {
        let mut s = store();
        assert_eq!(s.cas(b"k", 3, b"x".to_vec(), 5), Outcome::VersionMismatch { current: 0 });
        assert_eq!(s.cas(b"k", 0, b"a".to_vec(), 10), Outcome::Ok(OkReply::Written { version: 10 }));
        assert_eq!(s.cas(b"k", 0, b"b".to_vec(), 11), Outcome::VersionMismatch { current: 10 });
        assert_eq!(s.cas(b"k", 10, b"b".to_vec(), 12), Outcome::Ok(OkReply::Written { version: 12 }));
        s.delete(b"k", 13);
        assert_eq!(s.cas(b"k", 12, b"c".to_vec(), 14), Outcome::VersionMismatch { current: 0 });
        assert_eq!(s.cas(b"k", 13, b"c".to_vec(), 14), Outcome::VersionMismatch { current: 0 });
        assert_eq!(s.cas(b"k", 0, b"c".to_vec(), 15), Outcome::Ok(OkReply::Written { version: 15 }));
        assert_eq!(value(&s.get(b"k", None)), (15, &b"c"[..]));
    }

    #[test]
    fn retention_by_count_keeps_newest_and_answers_compacted_below() {
        let mut s = store();
        for v in 1..=6 {
            s.put(b"k", vec![v as u8], v * 10);
        }
        assert_eq!(history(&s, b"k"), vec![(60, false), (50, false), (40, false), (30, false)]);
        assert_eq!(s.get(b"k", Some(25)), Outcome::Compacted, "version 20 was dropped");
        assert_eq!(value(&s.get(b"k", Some(30))), (30, &[3u8][..]));
        assert_eq!(value(&s.get(b"k", Some(45))), (40, &[4u8][..]));
        // Other keys keep their whole history.
        s.put(b"j", b"x".to_vec(), 70);
        assert_eq!(s.get(b"j", Some(1)), Outcome::NotFound);
    }

    #[test]
    fn floor_compacts_reads_below_it_and_keeps_the_newest_version_at_or_below_it() {
        let mut s = Store::new(Retention { versions_per_key_max: 100, history_ts_span: 0 });
        for v in [10, 20, 30] {
            s.put(b"k", vec![v as u8], v);
        }
        s.raise_floor(25);
        s.raise_floor(5); // never lowers
        assert_eq!(s.floor_version(), 25);
        assert_eq!(s.get(b"k", Some(24)), Outcome::Compacted);
        assert_eq!(s.get(b"absent", Some(24)), Outcome::Compacted);
        assert_eq!(value(&s.get(b"k", Some(25))), (20, &[20u8][..]));
        assert_eq!(history(&s, b"k"), vec![(30, false), (20, false)], "versions hides what retention drops");
        s.put(b"k", vec![40], 40);
        assert_eq!(s.data.keys[&b"k"[..]].versions.len(), 3, "the write trimmed version 10");
        assert_eq!(s.data.keys[&b"k"[..]].history_from, 20);
        assert_eq!(s.scan(b"a", b"z", 10, Some(24)), Outcome::Compacted);
    }

    #[test]
    fn scan_is_ordered_bounded_and_skips_tombstones() {
        let mut s = store();
        for (i, k) in [b"a", b"b", b"c", b"d", b"e"].iter().enumerate() {
            s.put(*k, vec![i as u8], 10 + i as u64);
        }
        s.delete(b"c", 20);
        let keys = |out: Outcome| match out {
            Outcome::Ok(OkReply::Scan { items, resume }) => (
                items.into_iter().map(|i| String::from_utf8(i.key).unwrap()).collect::<Vec<_>>(),
                resume.map(|k| String::from_utf8(k).unwrap()),
            ),
            other => panic!("unexpected {other:?}"),
        };
        let v = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        assert_eq!(keys(s.scan(b"b", b"e", 10, None)), (v(&["b", "d"]), None));
        assert_eq!(keys(s.scan(b"a", b"", 2, None)), (v(&["a", "b"]), Some("d".into())));
        assert_eq!(keys(s.scan(b"d", b"", 2, None)), (v(&["d", "e"]), None));
        assert_eq!(keys(s.scan(b"a", b"", 4, None)), (v(&["a", "b", "d", "e"]), None));
        assert_eq!(keys(s.scan(b"b", b"e", 10, Some(15))), (v(&["b", "c", "d"]), None));
        assert_eq!(keys(s.scan(b"a", b"", 10, Some(11))), (v(&["a", "b"]), None));
        assert_eq!(keys(s.scan(b"e", b"b", 10, None)), (v(&[]), None));
        assert_eq!(keys(s.scan(b"d", b"d", 10, None)), (v(&[]), None));
    }

    #[test]
    fn a_scan_reply_stops_at_its_byte_budget_and_always_carries_one_item() {
        let mut s = store();
        let big = vec![7u8; 1 << 20];
        for (i, key) in [b"a", b"b", b"c", b"d", b"e", b"f"].iter().enumerate() {
            s.put(*key, big.clone(), i as u64 + 1);
        }
        let (items, resume) = match s.scan(b"a", b"", 100, None) {
            Outcome::Ok(OkReply::Scan { items, resume }) => (items, resume),
            other => panic!("unexpected {other:?}"),
        };
        let bytes: usize = items.iter().map(|i| i.key.len() + i.value.len()).sum();
        assert!(bytes <= SCAN_REPLY_BYTES_MAX, "{bytes} bytes in one reply");
        assert_eq!(items.len(), 3, "three 1 MiB values fit in 4 MiB, a fourth does not");
        assert_eq!(resume, Some(b"d".to_vec()));
        let mut huge = store();
        huge.put(b"k", vec![1u8; SCAN_REPLY_BYTES_MAX + 1], 1);
        match huge.scan(b"", b"", 10, None) {
            Outcome::Ok(OkReply::Scan { items, resume: None }) => assert_eq!(items.len(), 1, "progress is guaranteed"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn scan_over_a_long_run_of_tombstones_stops_and_says_where_to_resume() {
        let mut s = store();
        let mut version = 0;
        for i in 0..SCAN_KEYS_EXAMINED_MAX + 5 {
            let key = format!("k{i:06}").into_bytes();
            version += 1;
            s.put(&key, b"v".to_vec(), version);
            if i < SCAN_KEYS_EXAMINED_MAX + 2 {
                version += 1;
                s.delete(&key, version);
            }
        }
        let resume = match s.scan(b"k", b"", 10, None) {
            Outcome::Ok(OkReply::Scan { items, resume: Some(resume) }) => {
                assert!(items.is_empty());
                resume
            }
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(resume, format!("k{SCAN_KEYS_EXAMINED_MAX:06}").into_bytes());
        match s.scan(&resume, b"", 10, None) {
            Outcome::Ok(OkReply::Scan { items, resume: None }) => assert_eq!(items.len(), 3),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn sweep_drops_old_tombstones_and_trims_history_below_the_floor() {
        let mut s = Store::new(Retention { versions_per_key_max: 100, history_ts_span: 0 });
        for (i, key) in [b"a", b"b", b"c", b"d", b"e"].iter().enumerate() {
            s.put(*key, b"1".to_vec(), 10 * i as u64 + 1);
            s.put(*key, b"2".to_vec(), 10 * i as u64 + 2);
        }
        s.delete(b"b", 100);
        s.delete(b"d", 200);
        s.sweep_step(100);
        assert_eq!(s.key_count(), 5, "no floor, no sweep");
        s.raise_floor(150);
        s.sweep_step(2);
        assert_eq!(s.data.sweep_cursor, b"c".to_vec());
        assert_eq!(s.key_count(), 4, "b's tombstone (100) is below the floor: gone");
        assert_eq!(s.data.keys[&b"a"[..]].versions.len(), 1, "a keeps only its newest version below the floor");
        s.sweep_step(2);
        assert_eq!(s.data.sweep_cursor, b"e".to_vec());
        assert!(s.data.keys.contains_key(&b"d"[..]), "d's tombstone (200) is above the floor");
        s.sweep_step(2);
        assert!(s.data.sweep_cursor.is_empty(), "the cursor wraps");
        assert_eq!(s.get(b"b", None), Outcome::NotFound);
        assert_eq!(s.versions(b"b"), Outcome::NotFound);
        assert_eq!(value(&s.get(b"e", Some(150))), (42, &b"2"[..]));
        assert_eq!(s.get(b"e", Some(149)), Outcome::Compacted);
        assert_eq!(history(&s, b"d"), vec![(200, true), (32, false)]);
    }

    #[test]
    #[should_panic(expected = "not above")]
    fn versions_must_increase_per_key() {
        let mut s = store();
        s.put(b"k", b"a".to_vec(), 10);
        s.put(b"k", b"b".to_vec(), 10);
    }

    #[test]
    fn the_kept_size_always_equals_the_size_recounted() {
        use proptest::prelude::*;
        let op = (0u8..4, 0u8..6, 0usize..40);
        proptest!(|(ops in proptest::collection::vec(op, 1..150))| {
            let mut s = Store::new(Retention { versions_per_key_max: 3, history_ts_span: 0 });
            for (next, (kind, k, len)) in (1..).zip(ops) {
                let key = vec![b'a' + k; 1 + usize::from(k)];
                match kind {
                    0 => { let _ = s.put(&key, vec![k; len], next); }
                    1 => { let _ = s.delete(&key, next); }
                    2 => s.raise_floor(next.saturating_sub(len as u64)),
                    _ => s.sweep_step(len % 4 + 1),
                }
                let recount: u64 = s.data.keys.iter().map(|(k, c)| chain_bytes(k, c)).sum();
                prop_assert_eq!(s.bytes(), recount);
                let restored = Store::from_data(s.data.clone(), s.retention);
                prop_assert_eq!(restored.bytes(), recount);
            }
        });
    }

    /// Every write ever made to one key, oldest first.
    type History = Vec<(Version, Option<Vec<u8>>)>;

    /// A naive model: every write ever made, per key. Retention is off (huge), so the
    /// store must answer every read like the model.
    #[test]
    fn store_agrees_with_a_naive_model() {
        use proptest::prelude::*;
        let op = (0u8..4, 0u8..6, 0u64..4, 0u64..80);
        proptest!(|(ops in proptest::collection::vec(op, 1..120))| {
            let mut s = Store::new(Retention { versions_per_key_max: 1000, history_ts_span: 0 });
            let mut model: BTreeMap<Vec<u8>, History> = BTreeMap::new();
            for (next, (kind, k, expected, at)) in (1..).zip(ops) {
                let key = vec![b'a' + k];
                let hist = model.entry(key.clone()).or_default();
                let current = match hist.last() { Some((v, Some(_))) => *v, _ => 0 };
                match kind {
                    0 => {
                        prop_assert_eq!(s.put(&key, vec![k], next), Outcome::Ok(OkReply::Written { version: next }));
                        hist.push((next, Some(vec![k])));
                    }
                    1 => {
                        let out = s.delete(&key, next);
                        if current == 0 { prop_assert_eq!(out, Outcome::NotFound) } else { hist.push((next, None)) }
                    }
                    2 => {
                        let expected = [0, current, current + 1, current + 2][expected as usize];
                        let out = s.cas(&key, expected, vec![k], next);
                        if expected == current { hist.push((next, Some(vec![k]))) }
                        else { prop_assert_eq!(out, Outcome::VersionMismatch { current }) }
                    }
                    _ => {
                        let want = hist.iter().rev().find(|(v, _)| *v <= at);
                        let got = s.get(&key, Some(at));
                        match want {
                            Some((v, Some(val))) => prop_assert_eq!(got, Outcome::Ok(OkReply::Value { version: *v, value: val.clone() })),
                            _ => prop_assert_eq!(got, Outcome::NotFound),
                        }
                    }
                }
            }
        });
    }
}
