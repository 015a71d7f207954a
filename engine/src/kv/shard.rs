//! The shard state machine: what every replica of one shard applies, in log order,
//! and what the leader reads after ReadIndex.
//!
//! Runs on the core that owns the shard replica, under the Raft core: the node
//! passes each committed `Normal` entry's index and data to [`Shard::apply`], and
//! installs Raft snapshots with [`Shard::restore`]. Sans-I/O.
//!
//! Invariants:
//! - apply is deterministic: the same entries give the same state and the same
//!   replies on every replica (no clock, no RNG, no hash-order iteration);
//! - a plain write gets `version = max(last_applied_version + 1, stamp_ts)` (DESIGN
//!   §6), so versions only rise, even when a new leader's clock is behind;
//! - a write whose client already has its reply is never applied twice ([`super::dedup`]);
//! - `applied_index` only rises; an entry at or below it is refused.
//!
//! Transactions (issue 11) fit here without a rewrite: a new [`CommandBody`]
//! variant is dispatched next to `Write` in [`Shard::apply`], prepare records join
//! the replicated state beside the store and the dedup table (and the snapshot as a
//! further part), and a commit writes exactly its version through `Store::write`,
//! raising `last_applied_version` to it.

use corekv_rpc::kv::{Limits, OkReply, Outcome, ReadOp, Version, WriteOp, WriteTag};
use corekv_rpc::raft::Index;
use rkyv::{Archive, Deserialize, Serialize};
use thiserror::Error;

use super::command::{self, CommandBody, CommandError, WriteCommand};
use super::dedup::{Admission, Dedup, DedupLimits};
use super::hlc::TS_MAX;
use super::store::{Retention, SWEEP_KEYS_PER_STEP, Store};
use super::txn::{Applied, TxnLimits, TxnState};

/// A shard's settings. Must be the same on every replica of the shard: retention
/// and dedup limits decide replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShardConfig {
    /// How much history the store keeps.
    pub retention: Retention,
    /// Bounds of the exactly-once table.
    pub dedup: DedupLimits,
    /// Request limits (value size), checked again at apply.
    pub limits: Limits,
    /// Bounds of the transaction state.
    pub txn: TxnLimits,
}

/// The shard's own counters, replicated and carried in snapshots.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShardMeta {
    /// The last log index applied (or covered by the restored snapshot).
    pub applied_index: Index,
    /// The highest version written; the next plain write gets a higher one.
    pub last_applied_version: Version,
    /// The log's clock: the highest command stamp applied. Dedup ages use it.
    pub log_clock_ts: u64,
}

/// An entry could not be applied; the shard's state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApplyError {
    /// The index is at or below the last applied one (already in the state).
    #[error("entry {index} is at or below the applied index {applied_index}")]
    Stale {
        /// The entry's index.
        index: Index,
        /// The shard's applied index.
        applied_index: Index,
    },
    /// The entry's bytes are not a command this build reads. A committed entry
    /// that fails here must stop the replica: skipping it would diverge.
    #[error("entry {index}: {source}")]
    Command {
        /// The entry's index.
        index: Index,
        /// What is wrong with it.
        source: CommandError,
    },
    /// A transaction's commit broke an invariant the protocol keeps (a commit
    /// version not above a key's newest version, or below a participant's bound).
    /// Applying it would break atomic visibility; the replica must stop.
    #[error("transaction invariant: {0}")]
    Txn(String),
    /// The leader's stamp is outside the clock's range.
    #[error("entry {index}: stamp {stamp_ts} is beyond the clock's range")]
    StampOutOfRange {
        /// The entry's index.
        index: Index,
        /// The stamp.
        stamp_ts: u64,
    },
}

/// One replica of one shard's state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub(crate) meta: ShardMeta,
    pub(crate) store: Store,
    pub(crate) dedup: Dedup,
    pub(crate) txns: TxnState,
    pub(crate) config: ShardConfig,
}

impl Shard {
    /// An empty shard (nothing applied).
    pub fn new(config: ShardConfig) -> Self {
        Shard {
            meta: ShardMeta::default(),
            store: Store::new(config.retention),
            dedup: Dedup::new(config.dedup),
            txns: TxnState::new(config.txn),
            config,
        }
    }

    /// The last applied log index.
    pub fn applied_index(&self) -> Index {
        self.meta.applied_index
    }

    /// The highest version written.
    pub fn last_applied_version(&self) -> Version {
        self.meta.last_applied_version
    }

    /// The log's clock (highest command stamp applied): a new leader starts its HLC
    /// above it and above `last_applied_version`.
    pub fn log_clock_ts(&self) -> u64 {
        self.meta.log_clock_ts
    }

    /// The settings.
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// The versioned store (read-only).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The exactly-once table (read-only).
    pub fn dedup(&self) -> &Dedup {
        &self.dedup
    }

    /// Applies the committed entry `index` whose data is `data` (a command encoded by
    /// [`command::encode`]) and returns what it produced: the reply for the client
    /// that proposed a write, a prepare's vote, a decision.
    pub fn apply(&mut self, index: Index, data: &[u8]) -> Result<Applied, ApplyError> {
        if index <= self.meta.applied_index {
            return Err(ApplyError::Stale { index, applied_index: self.meta.applied_index });
        }
        let cmd = command::decode(data).map_err(|source| ApplyError::Command { index, source })?;
        if cmd.stamp_ts > TS_MAX {
            return Err(ApplyError::StampOutOfRange { index, stamp_ts: cmd.stamp_ts });
        }
        self.meta.applied_index = index;
        self.meta.log_clock_ts = self.meta.log_clock_ts.max(cmd.stamp_ts);
        let applied = match cmd.body {
            CommandBody::Write(WriteCommand { tag, op }) => self.apply_write(&tag, op, cmd.stamp_ts),
            CommandBody::Prepare(prepare) => self.apply_prepare(prepare),
            CommandBody::Decide(decide) => self.apply_decide(decide)?,
            CommandBody::Resolve(items) => self.apply_resolve(items)?,
            CommandBody::Forget(txns) => self.apply_forget(txns),
            CommandBody::OnePhase(one) => self.apply_one_phase(one)?,
        };
        self.store.sweep_step(SWEEP_KEYS_PER_STEP);
        self.txns.expire(self.meta.log_clock_ts);
        Ok(applied)
    }

    fn apply_write(&mut self, tag: &WriteTag, op: WriteOp, stamp_ts: u64) -> Applied {
        // The leader validated before proposing; checking again keeps a replica safe
        // from a buggy or older leader, and is deterministic.
        if let Err(invalid) = tag.validate().and_then(|()| op.validate(&self.config.limits)) {
            return Applied::Reply(invalid);
        }
        let now_ts = self.meta.log_clock_ts;
        match self.dedup.admit(tag, now_ts) {
            Admission::Replay(reply) | Admission::Refuse(reply) => Applied::Reply(reply),
            Admission::Apply => {
                // A prepared transaction holds the key: not applied, not recorded,
                // so the same tag applies once the intent is resolved.
                if let Some(txn) = self.write_blocked(op.key()) {
                    return Applied::Blocked { txn };
                }
                let reply = self.apply_op(op, stamp_ts);
                self.dedup.record(tag, now_ts, reply.clone());
                Applied::Reply(reply)
            }
        }
    }

    fn apply_op(&mut self, op: WriteOp, stamp_ts: u64) -> Outcome {
        let version = self.meta.last_applied_version.saturating_add(1).max(stamp_ts);
        let reply = match op {
            WriteOp::Put { key, value } => self.store.put(&key, value, version),
            WriteOp::Delete { key } => self.store.delete(&key, version),
            WriteOp::Cas { key, expected, value } => self.store.cas(&key, expected, value, version),
        };
        if let Outcome::Ok(OkReply::Written { version }) = reply {
            self.meta.last_applied_version = version;
            self.store.raise_floor(version.saturating_sub(self.config.retention.history_ts_span));
        }
        reply
    }

    /// Serves a read (after ReadIndex, or a lease, on the leader; or a stale read).
    /// Validates it first: bad input answers `invalid`.
    pub fn read(&self, op: &ReadOp) -> Outcome {
        if let Err(invalid) = op.validate() {
            return invalid;
        }
        match op {
            ReadOp::Get { key, at } => self.store.get(key, *at),
            ReadOp::Versions { key } => self.store.versions(key),
            ReadOp::Scan { start, end, limit, at } => self.store.scan(start, end, *limit as usize, *at),
        }
    }

    /// [`Shard::apply`] for an entry that must produce a client reply (tests).
    #[cfg(test)]
    pub(crate) fn apply_reply(&mut self, index: Index, data: &[u8]) -> Result<Outcome, ApplyError> {
        match self.apply(index, data)? {
            Applied::Reply(outcome) => Ok(outcome),
            other => panic!("entry {index} produced {other:?}, not a reply"),
        }
    }

    /// get: the newest version (`at: None`) or the newest version ≤ `at`.
    pub fn get(&self, key: &[u8], at: Option<Version>) -> Outcome {
        self.store.get(key, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::command::{Command, WriteCommand};
    use corekv_rpc::kv::ClientId;

    pub(crate) fn entry(client: u128, seq: u64, acked: u64, stamp_ts: u64, op: WriteOp) -> Vec<u8> {
        command::encode(&Command {
            stamp_ts,
            body: CommandBody::Write(WriteCommand {
                tag: WriteTag { client: ClientId::from_u128(client), seq, acked },
                op,
            }),
        })
    }

    fn put(key: &[u8], value: &[u8]) -> WriteOp {
        WriteOp::Put { key: key.to_vec(), value: value.to_vec() }
    }

    fn written(version: Version) -> Outcome {
        Outcome::Ok(OkReply::Written { version })
    }

    #[test]
    fn version_is_the_stamp_when_ahead_and_never_goes_back() {
        let mut s = Shard::new(ShardConfig::default());
        assert_eq!(s.apply_reply(1, &entry(1, 1, 0, 1000, put(b"k", b"a"))), Ok(written(1000)));
        // A new leader whose clock is behind stamps 500: the version still rises.
        assert_eq!(s.apply_reply(2, &entry(1, 2, 1, 500, put(b"k", b"b"))), Ok(written(1001)));
        assert_eq!(s.apply_reply(3, &entry(1, 3, 2, 500, put(b"j", b"c"))), Ok(written(1002)));
        assert_eq!(s.apply_reply(4, &entry(1, 4, 3, 5000, put(b"k", b"d"))), Ok(written(5000)));
        assert_eq!(s.last_applied_version(), 5000);
        assert_eq!(s.log_clock_ts(), 5000);
        assert_eq!(s.get(b"k", Some(1001)), Outcome::Ok(OkReply::Value { version: 1001, value: b"b".to_vec() }));
    }

    #[test]
    fn writes_that_change_nothing_take_no_version() {
        let mut s = Shard::new(ShardConfig::default());
        assert_eq!(
            s.apply_reply(1, &entry(1, 1, 0, 10, WriteOp::Delete { key: b"k".to_vec() })),
            Ok(Outcome::NotFound)
        );
        let cas = WriteOp::Cas { key: b"k".to_vec(), expected: 7, value: b"x".to_vec() };
        assert_eq!(s.apply_reply(2, &entry(1, 2, 0, 11, cas)), Ok(Outcome::VersionMismatch { current: 0 }));
        assert_eq!(s.last_applied_version(), 0);
        assert_eq!(s.store().key_count(), 0);
        assert_eq!(s.applied_index(), 2);
    }

    #[test]
    fn retried_write_is_applied_once() {
        let mut s = Shard::new(ShardConfig::default());
        let e = entry(9, 1, 0, 100, put(b"k", b"a"));
        assert_eq!(s.apply_reply(1, &e), Ok(written(100)));
        // The same command proposed again (the client retried after a leader change).
        assert_eq!(s.apply_reply(2, &e), Ok(written(100)));
        assert_eq!(s.store().versions(b"k"), s.store().versions(b"k"));
        match s.store().versions(b"k") {
            Outcome::Ok(OkReply::Versions { versions, .. }) => assert_eq!(versions.len(), 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.last_applied_version(), 100);
    }

    #[test]
    fn stale_indexes_and_bad_entries_are_errors_that_change_nothing() {
        let mut s = Shard::new(ShardConfig::default());
        s.apply_reply(5, &entry(1, 1, 0, 1, put(b"k", b"a"))).unwrap();
        let before = s.clone();
        assert_eq!(
            s.apply_reply(5, &entry(1, 2, 0, 1, put(b"k", b"b"))),
            Err(ApplyError::Stale { index: 5, applied_index: 5 })
        );
        assert!(matches!(s.apply_reply(6, b"\x01garbage"), Err(ApplyError::Command { index: 6, .. })));
        assert!(matches!(
            s.apply_reply(6, &entry(1, 2, 0, u64::MAX, put(b"k", b"b"))),
            Err(ApplyError::StampOutOfRange { .. })
        ));
        assert_eq!(s, before);
    }

    #[test]
    fn invalid_writes_answer_invalid_at_apply() {
        let config = ShardConfig { limits: Limits { value_bytes_max: 2 }, ..ShardConfig::default() };
        let mut s = Shard::new(config);
        assert!(matches!(s.apply_reply(1, &entry(1, 1, 0, 1, put(b"k", b"abc"))), Ok(Outcome::Invalid { .. })));
        assert!(matches!(s.apply_reply(2, &entry(1, 1, 1, 1, put(b"k", b"a"))), Ok(Outcome::Invalid { .. })));
        assert_eq!(s.store().key_count(), 0);
    }

    #[test]
    fn history_floor_trails_the_newest_version() {
        let config = ShardConfig {
            retention: Retention { versions_per_key_max: 100, history_ts_span: 50 },
            ..ShardConfig::default()
        };
        let mut s = Shard::new(config);
        s.apply_reply(1, &entry(1, 1, 0, 100, put(b"k", b"a"))).unwrap();
        s.apply_reply(2, &entry(1, 2, 1, 200, put(b"k", b"b"))).unwrap();
        assert_eq!(s.store().floor_version(), 150);
        assert_eq!(s.get(b"k", Some(149)), Outcome::Compacted);
        assert_eq!(s.get(b"k", Some(150)), Outcome::Ok(OkReply::Value { version: 100, value: b"a".to_vec() }));
        assert_eq!(s.read(&ReadOp::Scan { start: vec![], end: vec![], limit: 0, at: None }).word(), "invalid");
    }
}
