//! A transaction's client-side bookkeeping, sans I/O (DESIGN §8): what it read
//! (with the versions it saw), what it will write (values stay here until the
//! commit), which shards it touched, and its commit request. The drivers send the
//! requests; this module decides what they are.
//!
//! Reads of the transaction's own writes are answered here, at version 0. The
//! anchor is the shard of the first key written (of the first key read when
//! nothing is written). A read-only transaction reads at one version, with plain
//! reads at that version, and never commits anything.

use std::collections::{BTreeMap, BTreeSet};

use crate::kv::{ClientId, RequestBody, ShardId, ShardSets, Version, WriteTag};
use crate::map::ClusterMap;
use crate::txn::{Age, Policy, RangeItem, ReadItem, TxnId, TxnMeta, TxnSets, WriteItem};

/// What a transaction has done so far.
#[derive(Debug, Clone)]
pub struct TxnState {
    meta: TxnMeta,
    read_only_at: Option<Version>,
    reads: BTreeMap<Vec<u8>, Version>,
    ranges: Vec<(ShardId, RangeItem)>,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    first_write: Option<Vec<u8>>,
    first_read: Option<ShardId>,
    locked: BTreeSet<Vec<u8>>,
    touched: BTreeSet<ShardId>,
}

/// An attempt's identity: attempt `attempt` of `client`, age from `start`,
/// began (for its lifetime) at `now_ts`.
pub fn txn_meta(client: ClientId, attempt: u64, start: Version, policy: Policy, now_ts: u64) -> TxnMeta {
    let id = TxnId { client, attempt };
    TxnMeta { id, age: Age { start, id }, policy, attempt_ts: now_ts }
}

impl TxnState {
    /// A read-write transaction.
    pub fn read_write(meta: TxnMeta) -> TxnState {
        TxnState {
            meta,
            read_only_at: None,
            reads: BTreeMap::new(),
            ranges: Vec::new(),
            writes: BTreeMap::new(),
            first_write: None,
            first_read: None,
            locked: BTreeSet::new(),
            touched: BTreeSet::new(),
        }
    }

    /// A read-only transaction reading at `at`.
    pub fn read_only(meta: TxnMeta, at: Version) -> TxnState {
        TxnState { read_only_at: Some(at), ..TxnState::read_write(meta) }
    }

    /// The attempt.
    pub fn meta(&self) -> &TxnMeta {
        &self.meta
    }

    /// The snapshot version of a read-only transaction.
    pub fn read_only_at(&self) -> Option<Version> {
        self.read_only_at
    }

    /// The transaction's own write of `key`: `Some(Some(value))` for a put,
    /// `Some(None)` for a delete, `None` when it did not write the key.
    pub fn own_write(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        self.writes.get(key).map(|v| v.as_deref())
    }

    /// A read of `key` at `version` (0: never written; a tombstone's version when
    /// deleted) on `shard`. The first read of a key is the one validated.
    pub fn read(&mut self, shard: ShardId, key: &[u8], version: Version) {
        self.touched.insert(shard);
        self.reads.entry(key.to_vec()).or_insert(version);
        self.first_read.get_or_insert(shard);
    }

    /// A scan of `[start, end)` (empty `end`: unbounded) on `shard`, read at
    /// `read_ts`: at commit the shard checks that nothing in the range was written
    /// after it (under two-phase locking the range lock makes that so).
    pub fn range_read(&mut self, shard: ShardId, start: &[u8], end: &[u8], read_ts: Version) {
        self.touched.insert(shard);
        self.ranges.push((shard, RangeItem { start: start.to_vec(), end: end.to_vec(), read_ts }));
        self.first_read.get_or_insert(shard);
    }

    /// The transaction's own writes in `[start, end)` (empty `end`: unbounded),
    /// in key order: `Some(value)` for a put, `None` for a delete.
    pub fn own_writes_in<'a>(
        &'a self,
        start: &[u8],
        end: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        self.writes
            .range::<[u8], _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded))
            .take_while(move |(k, _)| end.is_empty() || k.as_slice() < end)
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
    }

    /// True when `key` must still be locked before it is written (two-phase
    /// locking; OCC never locks before commit).
    pub fn needs_lock(&self, key: &[u8]) -> bool {
        self.meta.policy.locks_early() && !self.locked.contains(key)
    }

    /// `key` is locked on `shard`.
    pub fn locked(&mut self, shard: ShardId, key: &[u8]) {
        self.touched.insert(shard);
        self.locked.insert(key.to_vec());
    }

    /// A write of `key` (`None`: delete), buffered until the commit.
    pub fn write(&mut self, key: &[u8], value: Option<Vec<u8>>) {
        if self.first_write.is_none() {
            self.first_write = Some(key.to_vec());
        }
        self.writes.insert(key.to_vec(), value);
    }

    /// Every shard that may hold a lock of this transaction.
    pub fn touched(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.touched.iter().copied()
    }

    /// The commit request and the anchor to send it to; `None` when the
    /// transaction read and wrote nothing.
    pub fn commit_request(&self, map: &ClusterMap, tag: WriteTag) -> Option<(ShardId, RequestBody)> {
        let anchor = match &self.first_write {
            Some(key) => map.shard_of(key),
            None => self.first_read?,
        };
        let mut sets: BTreeMap<ShardId, TxnSets> = BTreeMap::new();
        for (key, &version) in &self.reads {
            sets.entry(map.shard_of(key)).or_default().reads.push(ReadItem { key: key.clone(), version });
        }
        for (shard, range) in &self.ranges {
            sets.entry(*shard).or_default().ranges.push(range.clone());
        }
        for (key, value) in &self.writes {
            let item = WriteItem { key: key.clone(), value: value.clone() };
            sets.entry(map.shard_of(key)).or_default().writes.push(item);
        }
        // Every shard holding a lock is a participant (it releases them on the
        // decision), even one whose lock covered nothing read or written.
        for &shard in &self.touched {
            sets.entry(shard).or_default();
        }
        let shards = sets.into_iter().map(|(shard, sets)| ShardSets { shard, sets }).collect();
        Some((anchor, RequestBody::TxnCommit { txn: self.meta, tag, shards }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{NodeInfo, Replica, ShardReplicas};

    fn map() -> ClusterMap {
        let nodes = vec![NodeInfo { id: 1, addr: "127.0.0.1:1".into(), cores: 1, state: crate::map::NodeState::Up }];
        let shards = (0..8).map(|_| ShardReplicas::new(vec![Replica { node: 1, core: 0 }])).collect();
        let meta = ShardReplicas::new(vec![Replica { node: 1, core: 0 }]);
        ClusterMap { cluster_id: 1, epoch: 1, nodes, shards, meta, rebalance: false }
    }

    #[test]
    fn the_commit_lists_every_shard_with_its_reads_and_writes_and_anchors_at_the_first_write() {
        let map = map();
        let meta = txn_meta(ClientId::from_u128(1), 1, 10, Policy::WoundWait, 10);
        let mut t = TxnState::read_write(meta);
        t.read(map.shard_of(b"r"), b"r", 5);
        t.read(map.shard_of(b"r"), b"r", 9); // a second read of a key keeps the first version
        t.write(b"w2", Some(b"x".to_vec()));
        t.write(b"w1", None);
        assert_eq!(t.own_write(b"w1"), Some(None));
        assert_eq!(t.own_write(b"w2"), Some(Some(b"x".as_slice())));
        assert_eq!(t.own_write(b"r"), None);
        let tag = WriteTag { client: meta.id.client, seq: 1, acked: 0 };
        let (anchor, body) = t.commit_request(&map, tag).unwrap();
        assert_eq!(anchor, map.shard_of(b"w2"));
        let RequestBody::TxnCommit { shards, .. } = body else { panic!() };
        assert!(shards.windows(2).all(|w| w[0].shard < w[1].shard));
        let reads: Vec<_> = shards.iter().flat_map(|s| s.sets.reads.clone()).collect();
        assert_eq!(reads, vec![ReadItem { key: b"r".to_vec(), version: 5 }]);
        assert_eq!(shards.iter().map(|s| s.sets.writes.len()).sum::<usize>(), 2);
        assert!(TxnState::read_write(meta).commit_request(&map, tag).is_none());
    }

    #[test]
    fn a_scan_makes_every_shard_it_read_a_participant_with_its_range_and_may_anchor() {
        let map = map();
        let meta = txn_meta(ClientId::from_u128(1), 1, 10, Policy::Occ, 10);
        let mut t = TxnState::read_write(meta);
        t.range_read(3, b"a", b"m", 7);
        t.range_read(5, b"a", b"m", 8);
        t.write(b"b", Some(b"x".to_vec()));
        t.write(b"z", None);
        let own: Vec<_> = t.own_writes_in(b"a", b"m").map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect();
        assert_eq!(own, vec![(b"b".to_vec(), Some(b"x".to_vec()))]);
        assert_eq!(t.own_writes_in(b"c", b"").count(), 1, "z, unbounded");
        let tag = WriteTag { client: meta.id.client, seq: 1, acked: 0 };
        let RequestBody::TxnCommit { shards, .. } = t.commit_request(&map, tag).unwrap().1 else { panic!() };
        let ranges: Vec<_> =
            shards.iter().flat_map(|s| s.sets.ranges.iter().map(move |r| (s.shard, r.read_ts))).collect();
        assert_eq!(ranges, vec![(3, 7), (5, 8)]);
        // Nothing written: the first shard read anchors.
        let mut r = TxnState::read_write(meta);
        r.range_read(5, b"a", b"", 8);
        r.read(2, b"k", 1);
        assert_eq!(r.commit_request(&map, tag).unwrap().0, 5);
    }

    #[test]
    fn occ_never_locks_early() {
        let occ = TxnState::read_write(txn_meta(ClientId::from_u128(1), 1, 1, Policy::Occ, 1));
        assert!(!occ.needs_lock(b"k"));
        let mut ww = TxnState::read_write(txn_meta(ClientId::from_u128(1), 1, 1, Policy::WoundWait, 1));
        assert!(ww.needs_lock(b"k"));
        ww.locked(0, b"k");
        assert!(!ww.needs_lock(b"k"));
    }
}
