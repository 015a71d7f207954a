//! The WAL's on-disk format: pure encode/decode of segment headers, batches and
//! records (drawn byte by byte in `docs/WAL.md`).
//!
//! Owns: byte layouts, magic numbers, [`FORMAT_VERSION`], and the checks that turn
//! untrusted bytes into typed values. No I/O, no clock; runs on whichever core owns
//! the WAL (and in offline tools).
//!
//! Invariants: every length read from disk is checked against the bytes actually
//! present and against a named limit before anything is allocated; decoding never
//! panics on any input; every integer is little endian; a batch always starts on a
//! block boundary and is padded with zeros to the next one.

use std::fmt;

use corekv_rpc::raft::{Entry, EntryKind, HardState};

/// The format version written in every segment header.
///
/// History: 1 = first version (segment header with cluster/node/core ids, batch
/// header with batch and segment sequence numbers, one CRC32 per batch).
/// 2 = adds the drop-group record (kind 5); nothing else changed, so a version 1
/// segment reads as a version 2 segment that holds no drop-group record.
/// 3 = adds the hand-off record (kind 6); likewise, older segments hold none.
pub const FORMAT_VERSION: u32 = 3;

/// The oldest format version this build still reads. Segments of versions
/// `FORMAT_VERSION_OLDEST_READ..=FORMAT_VERSION` are accepted; new segments are
/// always written with [`FORMAT_VERSION`].
pub const FORMAT_VERSION_OLDEST_READ: u32 = 1;

/// The first format version whose segments may hold a [`Record::DropGroup`].
pub const FORMAT_VERSION_DROP_GROUP: u32 = 2;

/// The first format version whose segments may hold a [`Record::HandoffInstalled`].
pub const FORMAT_VERSION_HANDOFF: u32 = 3;

/// I/O unit: segments, headers and batches are aligned to it (O_DIRECT needs it).
pub const BLOCK_BYTES: u64 = 4096;

/// Magic at byte 0 of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"CKVWALSG";
/// Magic at byte 0 of every batch.
pub const BATCH_MAGIC: [u8; 4] = *b"CKVB";

/// Bytes of the segment header that carry data (the rest of block 0 is zero).
pub const SEGMENT_HEADER_BYTES: usize = 68;
/// Bytes of a batch header.
pub const BATCH_HEADER_BYTES: usize = 32;
/// Bytes of a record header (length, kind, reserved, group id).
pub const RECORD_HEADER_BYTES: usize = 16;
/// Bytes of an entry header inside an entries record (index, term, kind, length).
pub const ENTRY_HEADER_BYTES: usize = 21;

/// Largest batch payload accepted from disk: bounds the allocation a corrupt length
/// could ask for. Segments are never larger than this plus their header block.
pub const BATCH_PAYLOAD_BYTES_MAX: u64 = 1 << 30;
/// Largest data of one Raft entry accepted from disk or from the caller.
pub const ENTRY_DATA_BYTES_MAX: u64 = 64 << 20;

/// Who a WAL belongs to. A segment of another cluster, node or core is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WalIdentity {
    /// The cluster id (DESIGN §9).
    pub cluster_id: u64,
    /// The node id within the cluster.
    pub node_id: u64,
    /// The core (executor) index on the node that owns this WAL.
    pub core_id: u32,
}

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The format version the segment was written with.
    pub format_version: u32,
    /// Owner of the segment.
    pub identity: WalIdentity,
    /// The segment's sequence number (also in its file name).
    pub segment_seq: u64,
    /// Sequence number of the first batch written into this segment.
    pub first_batch_seq: u64,
    /// The segment's size in bytes (a multiple of [`BLOCK_BYTES`]).
    pub segment_bytes: u64,
}

/// Raft snapshot position a group's log starts after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotMarker {
    /// Last index the snapshot covers: the log up to here is gone.
    pub index: u64,
    /// Term of the entry at `index`.
    pub term: u64,
}

/// One WAL record. Every record names its Raft group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Raft entries of a group, consecutive indexes, each with its term and index.
    /// Entries from the first one's index on replace what the log held there.
    Entries {
        /// The Raft group.
        group_id: u64,
        /// The entries, in index order.
        entries: Vec<Entry>,
    },
    /// The group's hard state; the newest one wins.
    HardState {
        /// The Raft group.
        group_id: u64,
        /// Term, vote, commit.
        hard_state: HardState,
    },
    /// Entries of the group from `from_index` on are void.
    Truncate {
        /// The Raft group.
        group_id: u64,
        /// First voided index.
        from_index: u64,
    },
    /// The group has a durable snapshot up to `marker.index`: the log before is gone.
    SnapshotMarker {
        /// The Raft group.
        group_id: u64,
        /// Index and term the snapshot covers.
        marker: SnapshotMarker,
    },
    /// The group's replica left this core: every earlier record of the group
    /// (entries, hard state, truncations, snapshot marker) is void. Records of the
    /// group after it start the group afresh (the replica was added back).
    DropGroup {
        /// The Raft group.
        group_id: u64,
    },
    /// The group's records before it (in the same batch) are the whole state
    /// its replica on another core of this node handed over in the hand-off
    /// begun at map epoch `since` (issue 12): the install is complete.
    HandoffInstalled {
        /// The Raft group.
        group_id: u64,
        /// The epoch of the map that began the hand-off.
        since: u64,
    },
}

impl Record {
    /// The group the record belongs to.
    pub fn group_id(&self) -> u64 {
        match self {
            Record::Entries { group_id, .. }
            | Record::HardState { group_id, .. }
            | Record::Truncate { group_id, .. }
            | Record::SnapshotMarker { group_id, .. }
            | Record::DropGroup { group_id }
            | Record::HandoffInstalled { group_id, .. } => *group_id,
        }
    }

    /// Bytes the record takes inside a batch payload.
    pub fn encoded_bytes(&self) -> usize {
        RECORD_HEADER_BYTES + self.body_bytes()
    }

    fn body_bytes(&self) -> usize {
        match self {
            Record::Entries { entries, .. } => entries_body_bytes(entries),
            Record::HardState { .. } => 24,
            Record::Truncate { .. } => 8,
            Record::SnapshotMarker { .. } => 16,
            Record::DropGroup { .. } => 0,
            Record::HandoffInstalled { .. } => 8,
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Record::Entries { .. } => KIND_ENTRIES,
            Record::HardState { .. } => KIND_HARD_STATE,
            Record::Truncate { .. } => KIND_TRUNCATE,
            Record::SnapshotMarker { .. } => KIND_SNAPSHOT_MARKER,
            Record::DropGroup { .. } => KIND_DROP_GROUP,
            Record::HandoffInstalled { .. } => KIND_HANDOFF_INSTALLED,
        }
    }
}

/// One line per record, as the offline tools print it (`corekv-ctl wal dump`).
impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Entries { group_id, entries } => {
                // An entries record always holds at least one entry (checked on
                // encode and decode); an empty one is printed, not panicked on.
                let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
                    return write!(f, "group {group_id} entries (none)");
                };
                let data_bytes: usize = entries.iter().map(|e| e.data.len()).sum();
                write!(
                    f,
                    "group {group_id} entries {}..={} terms {}..={} ({data_bytes} data bytes)",
                    first.index, last.index, first.term, last.term
                )
            }
            Record::HardState { group_id, hard_state: h } => {
                write!(f, "group {group_id} hard_state term {} vote {} commit {}", h.term, h.vote, h.commit)
            }
            Record::Truncate { group_id, from_index } => write!(f, "group {group_id} truncate from {from_index}"),
            Record::SnapshotMarker { group_id, marker } => {
                write!(f, "group {group_id} snapshot_marker index {} term {}", marker.index, marker.term)
            }
            Record::DropGroup { group_id } => write!(f, "group {group_id} drop_group"),
            Record::HandoffInstalled { group_id, since } => {
                write!(f, "group {group_id} handoff_installed since epoch {since}")
            }
        }
    }
}

const KIND_ENTRIES: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_TRUNCATE: u8 = 3;
const KIND_SNAPSHOT_MARKER: u8 = 4;
/// Since [`FORMAT_VERSION_DROP_GROUP`].
const KIND_DROP_GROUP: u8 = 5;
/// Since [`FORMAT_VERSION_HANDOFF`].
const KIND_HANDOFF_INSTALLED: u8 = 6;

/// A decoded batch: one group-commit write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Sequence number, +1 per batch across all segments of the WAL.
    pub batch_seq: u64,
    /// The segment the batch was written into.
    pub segment_seq: u64,
    /// The records, in write order.
    pub records: Vec<Record>,
    /// Bytes the batch occupies on disk, padding included (a multiple of the block).
    pub padded_bytes: u64,
}

/// Why bytes are not a valid header, batch or record. Offsets are relative to the
/// slice given to the decoder; callers add the file offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Fewer bytes than the structure needs.
    #[error("truncated: need {needed_bytes} bytes at offset {offset}, have {available_bytes}")]
    Truncated {
        /// Offset of the structure.
        offset: u64,
        /// Bytes it needs.
        needed_bytes: u64,
        /// Bytes present.
        available_bytes: u64,
    },
    /// The magic number does not match.
    #[error("bad magic at offset {offset}")]
    BadMagic {
        /// Offset of the magic.
        offset: u64,
    },
    /// The CRC does not match the bytes.
    #[error("CRC mismatch at offset {offset}: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc {
        /// Offset of the checked structure.
        offset: u64,
        /// CRC written on disk.
        stored: u32,
        /// CRC of the bytes read.
        computed: u32,
    },
    /// The segment was written by a format this build does not read.
    #[error(
        "unsupported WAL format version {found} (this build reads {FORMAT_VERSION_OLDEST_READ} to {FORMAT_VERSION})"
    )]
    UnsupportedVersion {
        /// Version found on disk.
        found: u32,
    },
    /// A field holds a value the format does not allow.
    #[error("invalid {field} at offset {offset}: {value}")]
    InvalidField {
        /// Offset of the field.
        offset: u64,
        /// Field name.
        field: &'static str,
        /// The value found.
        value: u64,
    },
}

/// Rounds `bytes` up to the next multiple of [`BLOCK_BYTES`].
pub fn pad_to_block(bytes: u64) -> u64 {
    bytes.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
}

/// Encodes a segment header into one zero-padded block.
pub fn encode_segment_header(header: &SegmentHeader) -> Vec<u8> {
    let mut block = vec![0u8; BLOCK_BYTES as usize];
    let mut w = Cursor::new(&mut block);
    w.put(&SEGMENT_MAGIC);
    w.u32(header.format_version);
    w.u32(BLOCK_BYTES as u32);
    w.u64(header.identity.cluster_id);
    w.u64(header.identity.node_id);
    w.u32(header.identity.core_id);
    w.u32(0);
    w.u64(header.segment_seq);
    w.u64(header.first_batch_seq);
    w.u64(header.segment_bytes);
    let crc = crc32fast::hash(&block[..SEGMENT_HEADER_BYTES - 4]);
    block[SEGMENT_HEADER_BYTES - 4..SEGMENT_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    block
}

/// Decodes the segment header at the start of `bytes`.
pub fn decode_segment_header(bytes: &[u8]) -> Result<SegmentHeader, FormatError> {
    let mut r = Reader::new(bytes, 0);
    r.need(SEGMENT_HEADER_BYTES)?;
    if r.take(8)? != SEGMENT_MAGIC {
        return Err(FormatError::BadMagic { offset: 0 });
    }
    let stored = u32::from_le_bytes(bytes[64..68].try_into().expect("4 bytes"));
    let computed = crc32fast::hash(&bytes[..64]);
    if stored != computed {
        return Err(FormatError::BadCrc { offset: 0, stored, computed });
    }
    let format_version = r.u32()?;
    if !(FORMAT_VERSION_OLDEST_READ..=FORMAT_VERSION).contains(&format_version) {
        return Err(FormatError::UnsupportedVersion { found: format_version });
    }
    let block_bytes = r.u32()?;
    if u64::from(block_bytes) != BLOCK_BYTES {
        return Err(FormatError::InvalidField { offset: 12, field: "block_bytes", value: block_bytes.into() });
    }
    let cluster_id = r.u64()?;
    let node_id = r.u64()?;
    let core_id = r.u32()?;
    let _reserved = r.u32()?;
    let segment_seq = r.u64()?;
    let first_batch_seq = r.u64()?;
    let segment_bytes = r.u64()?;
    if !segment_bytes.is_multiple_of(BLOCK_BYTES) || segment_bytes < 2 * BLOCK_BYTES {
        return Err(FormatError::InvalidField { offset: 56, field: "segment_bytes", value: segment_bytes });
    }
    Ok(SegmentHeader {
        format_version,
        identity: WalIdentity { cluster_id, node_id, core_id },
        segment_seq,
        first_batch_seq,
        segment_bytes,
    })
}

/// Encodes one record, appending it to `out`.
///
/// Panics if an entry's data exceeds [`ENTRY_DATA_BYTES_MAX`] or entries are not
/// consecutive: callers check with [`check_record`] first (our own invariant).
pub fn encode_record(record: &Record, out: &mut Vec<u8>) {
    assert!(check_record(record).is_ok(), "encode_record on an invalid record: {:?}", check_record(record));
    let body_bytes = record.body_bytes();
    out.reserve(RECORD_HEADER_BYTES + body_bytes);
    out.extend_from_slice(&(body_bytes as u32).to_le_bytes());
    out.push(record.kind());
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&record.group_id().to_le_bytes());
    match record {
        Record::Entries { entries, .. } => encode_entries_body(entries, out),
        Record::HardState { hard_state, .. } => {
            out.extend_from_slice(&hard_state.term.to_le_bytes());
            out.extend_from_slice(&hard_state.vote.to_le_bytes());
            out.extend_from_slice(&hard_state.commit.to_le_bytes());
        }
        Record::Truncate { from_index, .. } => out.extend_from_slice(&from_index.to_le_bytes()),
        Record::SnapshotMarker { marker, .. } => {
            out.extend_from_slice(&marker.index.to_le_bytes());
            out.extend_from_slice(&marker.term.to_le_bytes());
        }
        Record::DropGroup { .. } => {}
        Record::HandoffInstalled { since, .. } => out.extend_from_slice(&since.to_le_bytes()),
    }
}

/// Encodes an entries record straight from a slice (no copy into a [`Record`]).
///
/// Panics on entries [`check_entries`] refuses (our own invariant).
pub fn encode_entries_record(group_id: u64, entries: &[Entry], out: &mut Vec<u8>) {
    assert!(check_entries(entries).is_ok(), "encode_entries_record on invalid entries: {:?}", check_entries(entries));
    let body_bytes = entries_body_bytes(entries);
    out.reserve(RECORD_HEADER_BYTES + body_bytes);
    out.extend_from_slice(&(body_bytes as u32).to_le_bytes());
    out.push(KIND_ENTRIES);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&group_id.to_le_bytes());
    encode_entries_body(entries, out);
}

/// Bytes of an entries record's body.
fn entries_body_bytes(entries: &[Entry]) -> usize {
    4 + entries.iter().map(|e| ENTRY_HEADER_BYTES + e.data.len()).sum::<usize>()
}

fn encode_entries_body(entries: &[Entry], out: &mut Vec<u8>) {
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for entry in entries {
        out.extend_from_slice(&entry.index.to_le_bytes());
        out.extend_from_slice(&entry.term.to_le_bytes());
        out.push(entry.kind as u8);
        out.extend_from_slice(&(entry.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&entry.data);
    }
}

/// Why the caller's record cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// An entries record with no entries.
    #[error("entries record without entries")]
    NoEntries,
    /// Entry indexes must be consecutive and start at 1 or later.
    #[error("entry indexes not consecutive at index {index}")]
    NotConsecutive {
        /// The offending index.
        index: u64,
    },
    /// An entry's data is larger than [`ENTRY_DATA_BYTES_MAX`].
    #[error("entry {index} carries {data_bytes} bytes, limit {ENTRY_DATA_BYTES_MAX}")]
    EntryTooLarge {
        /// The entry's index.
        index: u64,
        /// Its size.
        data_bytes: u64,
    },
    /// Index 0 is the empty log: no entry, truncation point or marker uses it.
    #[error("index 0 is not a valid position for this record")]
    ZeroIndex,
}

/// Checks what [`encode_record`] requires of a record.
pub fn check_record(record: &Record) -> Result<(), RecordError> {
    match record {
        Record::Entries { entries, .. } => check_entries(entries),
        Record::Truncate { from_index: 0, .. } => Err(RecordError::ZeroIndex),
        Record::HardState { .. }
        | Record::Truncate { .. }
        | Record::SnapshotMarker { .. }
        | Record::DropGroup { .. }
        | Record::HandoffInstalled { .. } => Ok(()),
    }
}

/// Checks that entries can form one entries record: at least one, consecutive
/// indexes from 1 or later, each within [`ENTRY_DATA_BYTES_MAX`].
pub fn check_entries(entries: &[Entry]) -> Result<(), RecordError> {
    let first = entries.first().ok_or(RecordError::NoEntries)?;
    if first.index == 0 {
        return Err(RecordError::ZeroIndex);
    }
    for (i, entry) in entries.iter().enumerate() {
        if entry.index != first.index + i as u64 {
            return Err(RecordError::NotConsecutive { index: entry.index });
        }
        if entry.data.len() as u64 > ENTRY_DATA_BYTES_MAX {
            return Err(RecordError::EntryTooLarge { index: entry.index, data_bytes: entry.data.len() as u64 });
        }
    }
    Ok(())
}

/// Encodes a batch of already-encoded records (`payload`) into block-padded bytes.
pub fn encode_batch(batch_seq: u64, segment_seq: u64, record_count: u32, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() as u64 <= BATCH_PAYLOAD_BYTES_MAX, "batch payload over the format limit");
    let total = pad_to_block((BATCH_HEADER_BYTES + payload.len()) as u64) as usize;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&BATCH_MAGIC);
    out.extend_from_slice(&record_count.to_le_bytes());
    out.extend_from_slice(&batch_seq.to_le_bytes());
    out.extend_from_slice(&segment_seq.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&out[..28]);
    hasher.update(payload);
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out.resize(total, 0);
    out
}

/// What a batch header says, after its CRC has been checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// The batch's sequence number.
    pub batch_seq: u64,
    /// The segment the writer put it in.
    pub segment_seq: u64,
    /// Number of records in the payload.
    pub record_count: u32,
    /// Payload bytes after the header (padding excluded).
    pub payload_bytes: u32,
}

impl BatchHeader {
    /// Bytes the batch occupies on disk, padding included.
    pub fn padded_bytes(&self) -> u64 {
        pad_to_block(BATCH_HEADER_BYTES as u64 + u64::from(self.payload_bytes))
    }
}

/// Checks the batch at the start of `bytes` (magic, lengths, CRC) without decoding
/// its records. Returns the header and the payload slice.
pub fn check_batch(bytes: &[u8]) -> Result<(BatchHeader, &[u8]), FormatError> {
    let mut r = Reader::new(bytes, 0);
    r.need(BATCH_HEADER_BYTES)?;
    if r.take(4)? != BATCH_MAGIC {
        return Err(FormatError::BadMagic { offset: 0 });
    }
    let record_count = r.u32()?;
    let batch_seq = r.u64()?;
    let segment_seq = r.u64()?;
    let payload_bytes = r.u32()?;
    let stored = r.u32()?;
    if u64::from(payload_bytes) > BATCH_PAYLOAD_BYTES_MAX {
        return Err(FormatError::InvalidField { offset: 24, field: "payload_bytes", value: payload_bytes.into() });
    }
    let payload = r.take(payload_bytes as usize)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[..28]);
    hasher.update(payload);
    let computed = hasher.finalize();
    if stored != computed {
        return Err(FormatError::BadCrc { offset: 0, stored, computed });
    }
    Ok((BatchHeader { batch_seq, segment_seq, record_count, payload_bytes }, payload))
}

/// Decodes the batch at the start of `bytes`: header, CRC, then every record.
pub fn decode_batch(bytes: &[u8]) -> Result<Batch, FormatError> {
    let (header, payload) = check_batch(bytes)?;
    let records = decode_records(payload, header.record_count, BATCH_HEADER_BYTES as u64)?;
    Ok(Batch {
        batch_seq: header.batch_seq,
        segment_seq: header.segment_seq,
        records,
        padded_bytes: header.padded_bytes(),
    })
}

/// Decodes exactly `record_count` records filling `payload`. `base_offset` is
/// added to offsets in errors.
pub fn decode_records(payload: &[u8], record_count: u32, base_offset: u64) -> Result<Vec<Record>, FormatError> {
    // Every record takes at least its header: a count that cannot fit is refused
    // before the Vec is sized by it.
    if u64::from(record_count) * RECORD_HEADER_BYTES as u64 > payload.len() as u64 {
        return Err(FormatError::InvalidField {
            offset: base_offset,
            field: "record_count",
            value: record_count.into(),
        });
    }
    let mut records = Vec::with_capacity(record_count as usize);
    let mut r = Reader::new(payload, base_offset);
    for _ in 0..record_count {
        records.push(decode_record(&mut r)?);
    }
    if r.remaining() != 0 {
        return Err(FormatError::InvalidField {
            offset: r.offset(),
            field: "trailing payload bytes",
            value: r.remaining() as u64,
        });
    }
    Ok(records)
}

fn decode_record(r: &mut Reader<'_>) -> Result<Record, FormatError> {
    let record_offset = r.offset();
    let body_bytes = r.u32()?;
    let kind = r.u8()?;
    let reserved = r.take(3)?;
    if reserved != [0, 0, 0] {
        return Err(FormatError::InvalidField { offset: record_offset + 5, field: "record reserved", value: 0 });
    }
    let group_id = r.u64()?;
    let body_offset = r.offset();
    let body = r.take(body_bytes as usize)?;
    let mut b = Reader::new(body, body_offset);
    let record = match kind {
        KIND_ENTRIES => Record::Entries { group_id, entries: decode_entries(&mut b)? },
        KIND_HARD_STATE => {
            Record::HardState { group_id, hard_state: HardState { term: b.u64()?, vote: b.u64()?, commit: b.u64()? } }
        }
        KIND_TRUNCATE => {
            let from_index = b.u64()?;
            if from_index == 0 {
                return Err(FormatError::InvalidField { offset: body_offset, field: "truncate from_index", value: 0 });
            }
            Record::Truncate { group_id, from_index }
        }
        KIND_SNAPSHOT_MARKER => {
            Record::SnapshotMarker { group_id, marker: SnapshotMarker { index: b.u64()?, term: b.u64()? } }
        }
        // No body: a non-empty one is refused by the length check below.
        KIND_DROP_GROUP => Record::DropGroup { group_id },
        KIND_HANDOFF_INSTALLED => Record::HandoffInstalled { group_id, since: b.u64()? },
        other => {
            return Err(FormatError::InvalidField {
                offset: record_offset + 4,
                field: "record kind",
                value: other.into(),
            });
        }
    };
    if b.remaining() != 0 {
        return Err(FormatError::InvalidField {
            offset: b.offset(),
            field: "record body length",
            value: body_bytes.into(),
        });
    }
    Ok(record)
}

fn decode_entries(b: &mut Reader<'_>) -> Result<Vec<Entry>, FormatError> {
    let count_offset = b.offset();
    let count = b.u32()?;
    if count == 0 || u64::from(count) * ENTRY_HEADER_BYTES as u64 > b.remaining() as u64 {
        return Err(FormatError::InvalidField { offset: count_offset, field: "entry count", value: count.into() });
    }
    let mut entries = Vec::with_capacity(count as usize);
    for i in 0..u64::from(count) {
        let entry_offset = b.offset();
        let index = b.u64()?;
        let term = b.u64()?;
        let kind = match b.u8()? {
            0 => EntryKind::Normal,
            1 => EntryKind::ConfChange,
            2 => EntryKind::Empty,
            other => {
                return Err(FormatError::InvalidField {
                    offset: entry_offset + 16,
                    field: "entry kind",
                    value: other.into(),
                });
            }
        };
        let data_bytes = b.u32()?;
        if u64::from(data_bytes) > ENTRY_DATA_BYTES_MAX {
            return Err(FormatError::InvalidField {
                offset: entry_offset + 17,
                field: "entry data length",
                value: data_bytes.into(),
            });
        }
        let data = b.take(data_bytes as usize)?.to_vec();
        let first_index = entries.first().map_or(index, |e: &Entry| e.index);
        if index == 0 || Some(index) != first_index.checked_add(i) {
            return Err(FormatError::InvalidField { offset: entry_offset, field: "entry index", value: index });
        }
        entries.push(Entry { term, index, kind, data });
    }
    Ok(entries)
}

/// Bounds-checked little-endian reader over untrusted bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base_offset: u64,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], base_offset: u64) -> Self {
        Reader { bytes, pos: 0, base_offset }
    }

    fn offset(&self) -> u64 {
        self.base_offset + self.pos as u64
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn need(&self, n: usize) -> Result<(), FormatError> {
        if self.remaining() < n {
            return Err(FormatError::Truncated {
                offset: self.offset(),
                needed_bytes: n as u64,
                available_bytes: self.remaining() as u64,
            });
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        self.need(n)?;
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

/// Little-endian writer into a pre-sized buffer (our own bytes: overruns panic).
struct Cursor<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }

    fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry { term, index, kind: EntryKind::Normal, data: data.to_vec() }
    }

    fn sample_records() -> Vec<Record> {
        vec![
            Record::Entries { group_id: 7, entries: vec![entry(5, 2, b"a"), entry(6, 3, b"")] },
            Record::HardState { group_id: 7, hard_state: HardState { term: 3, vote: 2, commit: 5 } },
            Record::Truncate { group_id: u64::MAX, from_index: 9 },
            Record::SnapshotMarker { group_id: 0, marker: SnapshotMarker { index: 4, term: 1 } },
            Record::DropGroup { group_id: 7 },
        ]
    }

    fn batch_bytes(records: &[Record]) -> Vec<u8> {
        let mut payload = Vec::new();
        for r in records {
            encode_record(r, &mut payload);
        }
        encode_batch(11, 3, records.len() as u32, &payload)
    }

    #[test]
    fn batch_round_trips_and_is_block_padded() {
        let records = sample_records();
        let bytes = batch_bytes(&records);
        assert_eq!(bytes.len() as u64 % BLOCK_BYTES, 0);
        let batch = decode_batch(&bytes).expect("decode");
        assert_eq!(batch.records, records);
        assert_eq!((batch.batch_seq, batch.segment_seq, batch.padded_bytes), (11, 3, BLOCK_BYTES));
    }

    #[test]
    fn every_flipped_bit_of_a_batch_is_detected() {
        let bytes = batch_bytes(&sample_records());
        let used = BATCH_HEADER_BYTES + sample_records().iter().map(Record::encoded_bytes).sum::<usize>();
        for i in 0..used {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode_batch(&bad).is_err(), "flip at {i} not detected");
        }
    }

    #[test]
    fn segment_header_round_trips_and_rejects_damage() {
        let header = SegmentHeader {
            format_version: FORMAT_VERSION,
            identity: WalIdentity { cluster_id: 1, node_id: 2, core_id: 3 },
            segment_seq: 4,
            first_batch_seq: 5,
            segment_bytes: 1 << 20,
        };
        let block = encode_segment_header(&header);
        assert_eq!(decode_segment_header(&block), Ok(header));
        for i in 0..SEGMENT_HEADER_BYTES {
            let mut bad = block.clone();
            bad[i] ^= 1;
            assert!(decode_segment_header(&bad).is_err(), "flip at {i} not detected");
        }
        assert!(matches!(decode_segment_header(&block[..10]), Err(FormatError::Truncated { .. })));
    }

    #[test]
    fn huge_counts_are_refused_before_allocation() {
        // A record count of u32::MAX in a tiny payload must fail on the count check.
        let mut bytes = batch_bytes(&sample_records());
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        // Recompute the CRC so only the count is wrong.
        let payload_bytes = u32::from_le_bytes(bytes[24..28].try_into().unwrap()) as usize;
        let mut h = crc32fast::Hasher::new();
        h.update(&bytes[..28]);
        h.update(&bytes[32..32 + payload_bytes]);
        let crc = h.finalize();
        bytes[28..32].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(decode_batch(&bytes), Err(FormatError::InvalidField { field: "record_count", .. })));
    }

    #[test]
    fn check_record_refuses_what_encode_cannot_write() {
        assert_eq!(check_record(&Record::Entries { group_id: 1, entries: vec![] }), Err(RecordError::NoEntries));
        let gap = Record::Entries { group_id: 1, entries: vec![entry(1, 1, b""), entry(3, 1, b"")] };
        assert_eq!(check_record(&gap), Err(RecordError::NotConsecutive { index: 3 }));
        assert_eq!(check_record(&Record::Truncate { group_id: 1, from_index: 0 }), Err(RecordError::ZeroIndex));
    }
}
