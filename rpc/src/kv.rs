//! Client-facing key-value wire types: requests, outcomes and routing answers.
//!
//! These are rkyv types; a receiver validates every inbound payload with bytecheck
//! ([`decode_request`], [`decode_response`]) before it reads a field. The shard state
//! machine in `corekv-engine` answers with [`Outcome`], the same type the client
//! library, `corekv-ctl --json` and the bench will map to DESIGN §6's outcome words
//! ([`Outcome::word`]).
//!
//! Exactly-once (DESIGN §6): every write carries a [`WriteTag`]: the client's random
//! 128-bit [`ClientId`], the write's sequence number and the client's acked prefix
//! (every seq ≤ it has had its reply). Sequence numbers start at 1; acked 0 means
//! nothing acknowledged yet.
//!
//! Limits live here, named, with [`Request::validate`] turning a violation into
//! [`Outcome::Invalid`] before anything is proposed.

// rkyv's derive emits resolver types for enum struct variants whose fields carry no
// docs; every item written here is documented by hand.
#![allow(missing_docs)]

use rkyv::{Archive, Deserialize, Serialize, rancor};

/// A commit version: a hybrid logical clock timestamp, physical ms << 16 | logical
/// (DESIGN §6). 0 means "no version" (absent or deleted).
pub type Version = u64;
/// A client's write sequence number (starts at 1).
pub type Seq = u64;
/// A shard id (fixed shard count, set at cluster creation).
pub type ShardId = u32;
/// The cluster map's epoch; every map change bumps it.
pub type Epoch = u64;
pub use crate::raft::NodeId;

/// Largest key, in bytes (DESIGN §6, issue 8).
pub const KEY_BYTES_MAX: usize = 4 * 1024;
/// Largest value by default, in bytes; a server may configure another bound
/// ([`Limits::value_bytes_max`]).
pub const VALUE_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// Most items one scan request may ask for: bounds the reply to
/// `SCAN_ITEMS_MAX * (KEY_BYTES_MAX + value)` well under a frame.
pub const SCAN_ITEMS_MAX: u32 = 1_000;
/// Most key and value bytes one scan reply carries (at least one item is always
/// returned): 1000 values of 1 MiB must not make a 1 GiB reply.
pub const SCAN_REPLY_BYTES_MAX: usize = 4 << 20;
/// Most value bytes one `versions` reply carries (the newest version is always
/// returned): 64 retained versions of 1 MiB must not make a 64 MiB reply.
pub const VERSIONS_REPLY_BYTES_MAX: usize = 4 << 20;
/// Most keys one scan looks at, live or deleted: a long run of tombstones cannot
/// make one request unbounded work; the reply then says where to resume.
pub const SCAN_KEYS_EXAMINED_MAX: usize = 10_000;
/// Longest message carried by [`Outcome::Invalid`], in bytes.
pub const INVALID_MESSAGE_BYTES_MAX: usize = 256;

/// The limits a server enforces on requests (configurable parts included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest value accepted, in bytes.
    pub value_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { value_bytes_max: VALUE_BYTES_MAX_DEFAULT }
    }
}

/// A client's identity: 128 random bits, picked once per client object.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
// Ordered when archived too: snapshots keep client sessions in an ordered map.
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash))]
pub struct ClientId(pub [u8; 16]);

impl ClientId {
    /// The id of a 128-bit number (big-endian, so ids order like the numbers).
    pub fn from_u128(n: u128) -> Self {
        ClientId(n.to_be_bytes())
    }

    /// The id as a 128-bit number.
    pub fn as_u128(&self) -> u128 {
        u128::from_be_bytes(self.0)
    }
}

/// The exactly-once header every write carries.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
pub struct WriteTag {
    /// Who writes.
    pub client: ClientId,
    /// This write's sequence number, ≥ 1, unique per client.
    pub seq: Seq,
    /// Every seq ≤ `acked` has had its reply; the server may forget those replies.
    /// Always < `seq`.
    pub acked: Seq,
}

/// A read, served by a shard leader after ReadIndex (or a lease).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ReadOp {
    /// The newest version of `key` (`at: None`), or the newest version ≤ `at`.
    Get { key: Vec<u8>, at: Option<Version> },
    /// The retained history of `key`, newest first, tombstones marked.
    Versions { key: Vec<u8> },
    /// Keys in `[start, end)` in order, at most `limit` live ones, each at its newest
    /// version (`at: None`) or its newest version ≤ `at`. An empty `end` means no
    /// upper bound.
    Scan { start: Vec<u8>, end: Vec<u8>, limit: u32, at: Option<Version> },
}

/// A write, proposed into the shard's Raft log.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum WriteOp {
    /// Write `value` as a new version of `key`.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// Write a tombstone; `not_found` (and nothing written) when the key is absent or
    /// already deleted.
    Delete { key: Vec<u8> },
    /// Write `value` only if the key's current version is `expected`; 0 means "only
    /// if absent or deleted".
    Cas { key: Vec<u8>, expected: Version, value: Vec<u8> },
}

impl WriteOp {
    /// The key the write touches.
    pub fn key(&self) -> &[u8] {
        match self {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } | WriteOp::Cas { key, .. } => key,
        }
    }
}

/// A read inside a read-write transaction, served by the shard's leader at its
/// newest state.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum TxnReadOp {
    /// The newest version of `key`, tombstones included.
    Get { key: Vec<u8> },
    /// The same read under an exclusive lock instead of a shared one, for a
    /// write that follows (SELECT FOR UPDATE): lock and read in one round trip.
    /// Under OCC, a plain [`TxnReadOp::Get`].
    GetForUpdate { key: Vec<u8> },
    /// Live keys in `[start, end)` (empty `end`: unbounded), at most `limit`.
    Scan { start: Vec<u8>, end: Vec<u8>, limit: u32 },
}

/// What one transaction does on one shard, as its commit request lists it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ShardSets {
    /// The shard.
    pub shard: ShardId,
    /// Its reads, range reads and writes there.
    pub sets: crate::txn::TxnSets,
}

/// Most keys and ranges one transaction may read and write, over all its shards.
pub const TXN_ITEMS_MAX: usize = 10_000;

/// What a client asks of a shard.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum RequestBody {
    /// A linearizable read (ReadIndex, or the lease when the server enables it).
    Read(ReadOp),
    /// A stale read: any replica answers from what it has applied, which may lag
    /// the leader (an explicit option, DESIGN §3).
    StaleRead(ReadOp),
    /// A write with its exactly-once header.
    Write { tag: WriteTag, op: WriteOp },
    /// A read inside a read-write transaction: under two-phase locking the leader
    /// takes a shared lock (a range lock for a scan) first; under OCC it takes none.
    TxnRead { txn: crate::txn::TxnMeta, op: TxnReadOp },
    /// An exclusive lock on `key` for a write the transaction will commit (two-phase
    /// locking; OCC sends none).
    TxnLock { txn: crate::txn::TxnMeta, key: Vec<u8> },
    /// Commit, sent to the anchor shard's leader (the shard of the first key written,
    /// or of the first read when nothing was written): every shard the transaction
    /// touched, with what it did there.
    TxnCommit { txn: crate::txn::TxnMeta, tag: WriteTag, shards: Vec<ShardSets> },
    /// Abort: this shard's leader drops the transaction's locks.
    TxnAbort { txn: crate::txn::TxnId },
}

/// One client request, routed by shard and cluster-map epoch.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Request {
    /// The shard the client believes owns the key(s).
    pub shard: ShardId,
    /// The epoch of the client's cluster map; an older one may get `WrongShard`.
    pub epoch: Epoch,
    /// The operation.
    pub body: RequestBody,
}

/// One entry of a key's history.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct VersionInfo {
    /// The version written.
    pub version: Version,
    /// The version is a tombstone (a delete).
    pub deleted: bool,
    /// The value written (empty for a tombstone).
    pub value: Vec<u8>,
}

/// One live key of a scan.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ScanItem {
    /// The key.
    pub key: Vec<u8>,
    /// The version read.
    pub version: Version,
    /// Its value.
    pub value: Vec<u8>,
}

/// A successful answer's payload.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum OkReply {
    /// A write (put, delete, cas) took effect at `version`.
    Written { version: Version },
    /// A get found `value` at `version`.
    Value { version: Version, value: Vec<u8> },
    /// A key's retained history, newest first. `more`: older versions are retained
    /// but left out, as the reply reached [`VERSIONS_REPLY_BYTES_MAX`].
    Versions { versions: Vec<VersionInfo>, more: bool },
    /// A scan's live keys in order. `resume`: the scan stopped early (the item limit,
    /// or [`SCAN_KEYS_EXAMINED_MAX`] keys looked at); continue from this key,
    /// inclusive. `None`: the range is done.
    Scan { items: Vec<ScanItem>, resume: Option<Vec<u8>> },
    /// A transactional get: the newest version, tombstones included (0 when never
    /// written), and the value (`None` when absent or deleted).
    TxnValue { version: Version, value: Option<Vec<u8>> },
    /// A transactional scan, as `Scan`, read at version `read_ts`.
    TxnScan { items: Vec<ScanItem>, resume: Option<Vec<u8>>, read_ts: Version },
    /// Done (a lock granted, an abort applied).
    Done,
}

/// DESIGN §6's outcome of an operation (routing answers aside).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Outcome {
    /// Done.
    Ok(OkReply),
    /// The key is absent or deleted (at the version asked).
    NotFound,
    /// A compare-and-set found another version: `current` (0 when absent or deleted).
    VersionMismatch { current: Version },
    /// The version asked for is older than the retained history.
    Compacted,
    /// Certainly not applied (no leader before the deadline, refused before proposal,
    /// or refused by a full table).
    Unavailable,
    /// A write that may or may not have been applied.
    Indeterminate,
    /// Bad input; the message says what is wrong.
    Invalid { message: String },
    /// A transaction was aborted (certainly not committed); `reason` says why.
    Aborted { reason: crate::txn::AbortReason },
}

impl Outcome {
    /// DESIGN §6's word for this outcome.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::NotFound => "not_found",
            Outcome::VersionMismatch { .. } => "version_mismatch",
            Outcome::Compacted => "compacted",
            Outcome::Unavailable => "unavailable",
            Outcome::Indeterminate => "indeterminate",
            Outcome::Invalid { .. } => "invalid",
            Outcome::Aborted { .. } => "aborted",
        }
    }

    /// An `invalid` outcome, its message cut to [`INVALID_MESSAGE_BYTES_MAX`].
    pub fn invalid(message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > INVALID_MESSAGE_BYTES_MAX {
            let mut cut = INVALID_MESSAGE_BYTES_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        Outcome::Invalid { message }
    }
}

/// A server's answer to a [`Request`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Response {
    /// The shard answered.
    Outcome(Outcome),
    /// This replica is not the shard's leader; `hint` is the leader it knows (0 = none).
    NotLeader { hint: NodeId },
    /// This node does not serve the shard at the client's epoch; `hint` is a node
    /// that may, and `epoch` the server's current cluster-map epoch.
    WrongShard { hint: NodeId, epoch: Epoch },
    /// A bounded queue is full: nothing was proposed; retry after a pause.
    Busy,
}

/// A wire payload failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid kv payload: {0}")]
pub struct DecodeError(pub String);

fn check_key(what: &str, key: &[u8]) -> Result<(), Outcome> {
    if key.is_empty() {
        return Err(Outcome::invalid(format!("{what} is empty")));
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(Outcome::invalid(format!("{what} is {} bytes, above the {KEY_BYTES_MAX}-byte limit", key.len())));
    }
    Ok(())
}

fn check_value(value: &[u8], limits: &Limits) -> Result<(), Outcome> {
    if value.len() > limits.value_bytes_max {
        return Err(Outcome::invalid(format!(
            "value is {} bytes, above the {}-byte limit",
            value.len(),
            limits.value_bytes_max
        )));
    }
    Ok(())
}

impl ReadOp {
    /// Checks sizes and ranges; the error is always [`Outcome::Invalid`].
    pub fn validate(&self) -> Result<(), Outcome> {
        match self {
            ReadOp::Get { key, .. } | ReadOp::Versions { key } => check_key("key", key),
            ReadOp::Scan { start, end, limit, .. } => {
                if !start.is_empty() {
                    check_key("scan start", start)?;
                }
                if !end.is_empty() {
                    check_key("scan end", end)?;
                }
                if *limit == 0 || *limit > SCAN_ITEMS_MAX {
                    return Err(Outcome::invalid(format!("scan limit {limit} is outside 1..={SCAN_ITEMS_MAX}")));
                }
                Ok(())
            }
        }
    }
}

impl WriteTag {
    /// Checks the exactly-once header: seq ≥ 1 and acked < seq.
    pub fn validate(&self) -> Result<(), Outcome> {
        if self.seq == 0 {
            return Err(Outcome::invalid("sequence number 0 (sequence numbers start at 1)"));
        }
        if self.acked >= self.seq {
            return Err(Outcome::invalid(format!(
                "acked prefix {} is not below sequence number {}",
                self.acked, self.seq
            )));
        }
        Ok(())
    }
}

impl WriteOp {
    /// Checks key and value sizes; the error is always [`Outcome::Invalid`].
    pub fn validate(&self, limits: &Limits) -> Result<(), Outcome> {
        check_key("key", self.key())?;
        match self {
            WriteOp::Put { value, .. } | WriteOp::Cas { value, .. } => check_value(value, limits),
            WriteOp::Delete { .. } => Ok(()),
        }
    }
}

impl TxnReadOp {
    /// The same checks as the plain read.
    pub fn validate(&self) -> Result<(), Outcome> {
        match self {
            TxnReadOp::Get { key } | TxnReadOp::GetForUpdate { key } => check_key("key", key),
            TxnReadOp::Scan { start, end, limit } => {
                ReadOp::Scan { start: start.clone(), end: end.clone(), limit: *limit, at: None }.validate()
            }
        }
    }
}

impl crate::txn::TxnSets {
    /// Checks every key, range and value.
    pub fn validate(&self, limits: &Limits) -> Result<(), Outcome> {
        for r in &self.reads {
            check_key("read key", &r.key)?;
        }
        for r in &self.ranges {
            if !r.start.is_empty() {
                check_key("range start", &r.start)?;
            }
            if !r.end.is_empty() {
                check_key("range end", &r.end)?;
            }
        }
        for w in &self.writes {
            check_key("written key", &w.key)?;
            if let Some(value) = &w.value {
                check_value(value, limits)?;
            }
        }
        Ok(())
    }
}

impl Request {
    /// Checks every limit of DESIGN §6; the error is always [`Outcome::Invalid`].
    pub fn validate(&self, limits: &Limits) -> Result<(), Outcome> {
        match &self.body {
            RequestBody::Read(op) | RequestBody::StaleRead(op) => op.validate(),
            RequestBody::Write { tag, op } => {
                tag.validate()?;
                op.validate(limits)
            }
            RequestBody::TxnRead { op, .. } => op.validate(),
            RequestBody::TxnLock { key, .. } => check_key("key", key),
            RequestBody::TxnCommit { tag, shards, .. } => {
                tag.validate()?;
                if shards.is_empty() {
                    return Err(Outcome::invalid("a commit names no shard"));
                }
                let items: usize = shards.iter().map(|s| s.sets.len()).sum();
                if items > TXN_ITEMS_MAX {
                    return Err(Outcome::invalid(format!(
                        "the transaction reads and writes {items} keys and ranges, above the limit {TXN_ITEMS_MAX}"
                    )));
                }
                for s in shards {
                    s.sets.validate(limits)?;
                }
                if shards.windows(2).any(|w| w[0].shard >= w[1].shard) {
                    return Err(Outcome::invalid("a commit's shards must be listed once each, in order"));
                }
                Ok(())
            }
            RequestBody::TxnAbort { .. } => Ok(()),
        }
    }
}

fn decode<T>(bytes: &[u8]) -> Result<T, DecodeError>
where
    T: Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
        + Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    crate::archive::from_unaligned(bytes).map_err(DecodeError)
}

/// Encodes a request.
pub fn encode_request(req: &Request) -> Vec<u8> {
    rkyv::to_bytes::<rancor::Error>(req).expect("a request always serializes").into_vec()
}

/// Validates and decodes a request received from the network.
pub fn decode_request(bytes: &[u8]) -> Result<Request, DecodeError> {
    decode(bytes)
}

/// Encodes a response.
pub fn encode_response(resp: &Response) -> Vec<u8> {
    rkyv::to_bytes::<rancor::Error>(resp).expect("a response always serializes").into_vec()
}

/// Validates and decodes a response received from the network.
pub fn decode_response(bytes: &[u8]) -> Result<Response, DecodeError> {
    decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(seq: Seq, acked: Seq) -> WriteTag {
        WriteTag { client: ClientId::from_u128(7), seq, acked }
    }

    fn write(op: WriteOp) -> Request {
        Request { shard: 1, epoch: 1, body: RequestBody::Write { tag: tag(2, 1), op } }
    }

    #[test]
    fn client_id_round_trips_and_orders_like_the_number() {
        let a = ClientId::from_u128(1);
        let b = ClientId::from_u128(1 << 100);
        assert!(a < b);
        assert_eq!(b.as_u128(), 1 << 100);
    }

    #[test]
    fn limits_are_enforced_with_invalid() {
        let limits = Limits::default();
        let big_key = vec![1u8; KEY_BYTES_MAX + 1];
        let ok_key = vec![1u8; KEY_BYTES_MAX];
        assert!(
            write(WriteOp::Put { key: ok_key.clone(), value: vec![0; VALUE_BYTES_MAX_DEFAULT] })
                .validate(&limits)
                .is_ok()
        );
        let err = write(WriteOp::Put { key: big_key, value: vec![] }).validate(&limits).unwrap_err();
        assert_eq!(err.word(), "invalid");
        let err = write(WriteOp::Put { key: ok_key.clone(), value: vec![0; VALUE_BYTES_MAX_DEFAULT + 1] })
            .validate(&limits)
            .unwrap_err();
        assert!(matches!(&err, Outcome::Invalid { message } if message.contains("value")));
        let small = Limits { value_bytes_max: 4 };
        assert!(write(WriteOp::Cas { key: ok_key, expected: 0, value: vec![0; 5] }).validate(&small).is_err());
        assert!(write(WriteOp::Delete { key: vec![] }).validate(&limits).is_err());
    }

    #[test]
    fn write_tags_need_seq_above_acked() {
        assert!(tag(1, 0).validate().is_ok());
        assert!(tag(0, 0).validate().is_err());
        assert!(tag(3, 3).validate().is_err());
        assert!(tag(3, 4).validate().is_err());
    }

    #[test]
    fn scan_limits() {
        let scan = |limit| ReadOp::Scan { start: vec![], end: vec![], limit, at: None };
        assert!(scan(1).validate().is_ok());
        assert!(scan(0).validate().is_err());
        assert!(scan(SCAN_ITEMS_MAX + 1).validate().is_err());
    }

    #[test]
    fn outcome_words_match_design() {
        let words: Vec<_> = [
            Outcome::Ok(OkReply::Written { version: 1 }),
            Outcome::NotFound,
            Outcome::VersionMismatch { current: 0 },
            Outcome::Compacted,
            Outcome::Unavailable,
            Outcome::Indeterminate,
            Outcome::invalid("x"),
            Outcome::Aborted { reason: crate::txn::AbortReason::Wounded },
        ]
        .iter()
        .map(Outcome::word)
        .collect();
        assert_eq!(
            words,
            ["ok", "not_found", "version_mismatch", "compacted", "unavailable", "indeterminate", "invalid", "aborted"]
        );
        let long = Outcome::invalid("é".repeat(INVALID_MESSAGE_BYTES_MAX));
        assert!(matches!(long, Outcome::Invalid { message } if message.len() <= INVALID_MESSAGE_BYTES_MAX));
    }

    #[test]
    fn request_and_response_round_trip_validated_even_misaligned() {
        let req = write(WriteOp::Cas { key: b"k".to_vec(), expected: 0, value: b"v".to_vec() });
        let bytes = encode_request(&req);
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        assert_eq!(decode_request(&shifted[1..]).unwrap(), req);
        for resp in [
            Response::Outcome(Outcome::Ok(OkReply::Value { version: 1 << 60, value: b"v".to_vec() })),
            Response::NotLeader { hint: 3 },
            Response::WrongShard { hint: 2, epoch: 9 },
            Response::Busy,
        ] {
            assert_eq!(decode_response(&encode_response(&resp)).unwrap(), resp);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let bytes = encode_request(&write(WriteOp::Delete { key: b"k".to_vec() }));
        for cut in 0..bytes.len() {
            let _ = decode_request(&bytes[..cut]);
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            let _ = decode_request(&b);
        }
        assert!(decode_request(&[0xff; 64]).is_err());
    }
}
