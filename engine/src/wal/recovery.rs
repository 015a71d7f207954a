//! Recovery: from the bytes of a WAL's segments, in sequence order, to each group's
//! hard state, snapshot marker and log, plus where the writer continues.
//!
//! Owns: the rules that decide what is the log, what is a torn tail to cut off,
//! and what is corruption (DESIGN §5). Pure: it is fed bytes and file names (for
//! error messages), one segment at a time, so a caller never needs more than one
//! segment in memory. Runs on the core that owns the WAL, before its Raft groups
//! start, and in the offline tools.
//!
//! The rules:
//! - Batches form one chain: batch `n + 1` follows batch `n`, at the next block
//!   boundary of the same segment, or as the first batch of the next segment, whose
//!   header names it (`first_batch_seq`).
//! - The chain stops at the first block that does not hold the next batch. That is
//!   the end of the log, unless *evidence* of a later batch exists anywhere after it:
//!   a CRC-valid batch with a sequence number ≥ the missing one, or a valid segment
//!   header whose `first_batch_seq` is above it. Evidence means an acknowledged batch
//!   is gone: recovery refuses with the file and offset where the chain broke.
//! - A torn write, torn across any number of blocks, leaves no evidence (only one
//!   batch is ever in flight); neither do stale batches of a recycled segment
//!   (their sequence numbers are lower).
//! - Only the last segment may have a damaged header (its creation was torn): the
//!   writer recreates it. A damaged header anywhere else is corruption.
//! - Entries of a group may resume past the end of its log only where compaction
//!   dropped the segments in between; by the end of recovery every group's log
//!   must again start right after its snapshot marker, else recovery refuses.
//! - A drop-group record voids every earlier record of its group; records of the
//!   group after it start the group afresh. Only segments of format version 2 or
//!   later may hold one.

use std::collections::{BTreeMap, BTreeSet};

use corekv_rpc::raft::{Entry, HardState};

use super::WalError;
use super::format::{
    BATCH_MAGIC, BLOCK_BYTES, FORMAT_VERSION_DROP_GROUP, FORMAT_VERSION_HANDOFF, FormatError, Record, SnapshotMarker,
    WalIdentity, check_batch, decode_records, decode_segment_header,
};

/// One group's state rebuilt from the WAL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupLog {
    /// The newest hard state written, if any.
    pub hard_state: Option<HardState>,
    /// The newest snapshot marker written, if any: the log before it is gone.
    pub snapshot: Option<SnapshotMarker>,
    /// The log after the snapshot: consecutive indexes, truncations applied.
    pub entries: Vec<Entry>,
    /// The hand-off (the epoch that began it) whose installed state the group's
    /// records are, if they are one (issue 12).
    pub handoff_since: Option<u64>,
}

impl GroupLog {
    /// Index of the last entry, or the snapshot's index, or 0.
    pub fn last_index(&self) -> u64 {
        self.entries.last().map_or_else(|| self.snapshot_index(), |e| e.index)
    }

    /// The snapshot marker's index, 0 when none.
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.map_or(0, |m| m.index)
    }

    fn truncate_from(&mut self, from_index: u64) {
        let keep = self.entries.partition_point(|e| e.index < from_index);
        self.entries.truncate(keep);
    }
}

/// What one segment holds, for compaction: per group, the highest entry index it
/// holds that is still part of the log (truncations applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The segment's sequence number.
    pub segment_seq: u64,
    /// Per group id, the highest live entry index in this segment (0: none left).
    pub group_max_index: BTreeMap<u64, u64>,
}

/// Where the writer continues after recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumePoint {
    /// Append the next batch to this segment at this offset (a block boundary).
    /// Whatever lies there (a torn batch, zeros) holds nothing acknowledged.
    Append {
        /// The segment.
        segment_seq: u64,
        /// Byte offset of the next batch.
        offset_bytes: u64,
        /// The segment's size as its header says (the configuration may differ).
        segment_bytes: u64,
        /// The format version in the segment's header: the writer appends only to
        /// a segment of the version it writes, so that the header keeps telling
        /// which record kinds the segment may hold.
        format_version: u32,
    },
    /// Create (or overwrite) this segment before the next batch: it does not exist
    /// yet, or its creation was torn.
    CreateSegment {
        /// The segment to create.
        segment_seq: u64,
    },
}

/// The outcome of recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The identity found in the segment headers (`None`: no valid segment).
    pub identity: Option<WalIdentity>,
    /// Every group that has a record in the log after its last drop-group record
    /// (if any).
    pub groups: BTreeMap<u64, GroupLog>,
    /// The groups whose last record is a drop-group record: their replica left
    /// this core, nothing of them is in `groups`, and their snapshot file (if
    /// still there) is garbage. Only drops still on disk are listed: once
    /// compaction released the segment holding the drop (and with it every record
    /// the drop voided), the group is in neither `groups` nor here: the WAL then
    /// holds nothing of it, as of a group it never held.
    pub dropped: BTreeSet<u64>,
    /// The segments that hold the log, oldest first.
    pub segments: Vec<SegmentSummary>,
    /// Sequence number the next batch gets.
    pub next_batch_seq: u64,
    /// Batches read back.
    pub batches_recovered: u64,
    /// Where the writer continues.
    pub resume: ResumePoint,
}

/// The bytes of one segment file.
#[derive(Debug, Clone, Copy)]
pub struct SegmentFile<'a> {
    /// The file name (for error messages).
    pub file_name: &'a str,
    /// The sequence number in the file name.
    pub segment_seq: u64,
    /// The whole file.
    pub bytes: &'a [u8],
}

/// Recovers from whole segments held in memory (tests, tools, the simulator).
pub fn recover(expected: Option<WalIdentity>, segments: &[SegmentFile<'_>]) -> Result<Recovered, WalError> {
    let mut recovery = Recovery::new(expected);
    for segment in segments {
        recovery.add_segment(segment)?;
    }
    recovery.finish()
}

/// Where the chain of batches stopped last, and why.
#[derive(Debug, Clone)]
struct Break {
    file_name: String,
    offset_bytes: u64,
    why: String,
}

/// Streaming recovery: feed segments in sequence order, then [`Recovery::finish`].
#[derive(Debug)]
pub struct Recovery {
    expected_identity: Option<WalIdentity>,
    identity: Option<WalIdentity>,
    prev_segment: Option<(String, u64)>,
    next_batch_seq: Option<u64>,
    last_break: Option<Break>,
    damaged_header: Option<String>,
    groups: BTreeMap<u64, GroupLog>,
    dropped: BTreeSet<u64>,
    segments: Vec<SegmentSummary>,
    /// Format version of the segment being read.
    segment_format_version: u32,
    batches_recovered: u64,
    resume: Option<ResumePoint>,
    gaps: BTreeMap<u64, Gap>,
}

/// Where a group's entries last resumed past its log's end (fine only if, by the
/// end of recovery, a snapshot marker or a rewrite covers the missing part).
#[derive(Debug, Clone)]
struct Gap {
    file_name: String,
    offset_bytes: u64,
    first_index: u64,
}

impl Recovery {
    /// Starts a recovery. `expected`: the identity every segment must carry; `None`
    /// adopts the first valid header's (offline tools).
    pub fn new(expected: Option<WalIdentity>) -> Self {
        Recovery {
            expected_identity: expected,
            identity: expected,
            prev_segment: None,
            next_batch_seq: None,
            last_break: None,
            damaged_header: None,
            groups: BTreeMap::new(),
            dropped: BTreeSet::new(),
            segments: Vec::new(),
            segment_format_version: 0,
            batches_recovered: 0,
            resume: None,
            gaps: BTreeMap::new(),
        }
    }

    /// Feeds the next segment (sequence numbers must be given in increasing order).
    pub fn add_segment(&mut self, segment: &SegmentFile<'_>) -> Result<(), WalError> {
        let file = segment.file_name;
        if let Some((prev_file, prev_seq)) = &self.prev_segment {
            assert!(segment.segment_seq > *prev_seq, "segments must be fed in increasing order");
            if segment.segment_seq != prev_seq + 1 {
                return Err(WalError::MissingSegment { after_file: prev_file.clone(), missing_seq: prev_seq + 1 });
            }
        }
        self.prev_segment = Some((file.to_string(), segment.segment_seq));
        if let Some(damaged) = &self.damaged_header {
            return Err(corrupt(damaged, 0, "segment header damaged, yet a later segment follows"));
        }
        let header = match decode_segment_header(segment.bytes) {
            Err(FormatError::UnsupportedVersion { found }) => {
                return Err(WalError::UnsupportedVersion { file: file.to_string(), found });
            }
            Ok(h) if h.segment_seq == segment.segment_seq => h,
            _ => {
                // A torn creation or an unfinished recycle: acceptable only as the
                // last segment and only if it holds no evidence of later batches.
                self.scan_for_evidence(file, segment.bytes, BLOCK_BYTES)?;
                self.damaged_header = Some(file.to_string());
                self.resume = Some(ResumePoint::CreateSegment { segment_seq: segment.segment_seq });
                return Ok(());
            }
        };
        match self.expected_identity {
            Some(expected) if expected != header.identity => {
                return Err(WalError::ForeignSegment { file: file.to_string(), expected, found: header.identity });
            }
            _ => {}
        }
        if let Some(adopted) = self.identity
            && adopted != header.identity
        {
            return Err(WalError::ForeignSegment { file: file.to_string(), expected: adopted, found: header.identity });
        }
        self.identity = Some(header.identity);
        let expected = *self.next_batch_seq.get_or_insert(header.first_batch_seq);
        if header.first_batch_seq > expected {
            return Err(self.evidence_error(file, 0, header.first_batch_seq, "segment header"));
        }
        if header.first_batch_seq < expected {
            return Err(corrupt(
                file,
                0,
                &format!(
                    "segment header says its first batch is {}, but batch {} is next",
                    header.first_batch_seq, expected
                ),
            ));
        }
        let end = (segment.bytes.len() as u64).min(header.segment_bytes);
        let bytes = &segment.bytes[..end as usize];
        self.segments.push(SegmentSummary { segment_seq: segment.segment_seq, group_max_index: BTreeMap::new() });
        self.segment_format_version = header.format_version;
        self.read_chain(file, segment.segment_seq, header.segment_bytes, bytes)
    }

    fn read_chain(&mut self, file: &str, segment_seq: u64, segment_bytes: u64, bytes: &[u8]) -> Result<(), WalError> {
        let mut offset = BLOCK_BYTES;
        loop {
            let expected = self.next_batch_seq.expect("set from the segment header");
            let why = match check_batch(bytes.get(offset as usize..).unwrap_or(&[])) {
                Ok((h, payload)) if h.batch_seq == expected && h.segment_seq == segment_seq => {
                    let records = decode_records(payload, h.record_count, 32)
                        .map_err(|e| corrupt(file, offset, &format!("batch {expected} passes its CRC but {e}")))?;
                    for record in records {
                        self.apply(file, offset, record)?;
                    }
                    self.batches_recovered += 1;
                    self.next_batch_seq = Some(expected.saturating_add(1));
                    offset += h.padded_bytes();
                    continue;
                }
                Ok((h, _)) => format!("found batch {} of segment {}", h.batch_seq, h.segment_seq),
                Err(e) => e.to_string(),
            };
            self.last_break = Some(Break { file_name: file.to_string(), offset_bytes: offset, why });
            self.resume = Some(ResumePoint::Append {
                segment_seq,
                offset_bytes: offset,
                segment_bytes,
                format_version: self.segment_format_version,
            });
            return self.scan_for_evidence(file, bytes, offset);
        }
    }

    /// Looks at every block boundary from `from` on for a valid batch at or after
    /// the next expected sequence number.
    fn scan_for_evidence(&self, file: &str, bytes: &[u8], from: u64) -> Result<(), WalError> {
        let Some(expected) = self.next_batch_seq else {
            // No earlier segment: this one was created fresh (zero-filled), so any
            // CRC-valid batch the writer put into it is evidence.
            let mut offset = from;
            while offset < bytes.len() as u64 {
                if let Ok((h, _)) = check_batch(&bytes[offset as usize..])
                    && Some(h.segment_seq) == parse_seq(file)
                {
                    return Err(corrupt(
                        file,
                        0,
                        &format!("segment header damaged, yet batch {} follows at byte {offset}", h.batch_seq),
                    ));
                }
                offset += BLOCK_BYTES;
            }
            return Ok(());
        };
        let mut offset = from;
        while offset < bytes.len() as u64 {
            let at = &bytes[offset as usize..];
            if at.starts_with(&BATCH_MAGIC)
                && let Ok((h, _)) = check_batch(at)
                && h.batch_seq >= expected
            {
                return Err(self.evidence_error(file, offset, h.batch_seq, "batch"));
            }
            offset += BLOCK_BYTES;
        }
        Ok(())
    }

    fn evidence_error(&self, file: &str, offset: u64, seq: u64, what: &str) -> WalError {
        let expected = self.next_batch_seq.unwrap_or(0);
        match &self.last_break {
            Some(b) => corrupt(
                &b.file_name,
                b.offset_bytes,
                &format!(
                    "batch {expected} missing or damaged here ({}), but {what} {seq} follows in {file} at byte {offset}",
                    b.why
                ),
            ),
            None => corrupt(file, offset, &format!("{what} {seq} found where batch {expected} was expected")),
        }
    }

    fn apply(&mut self, file: &str, offset: u64, record: Record) -> Result<(), WalError> {
        let group_id = record.group_id();
        if let Record::DropGroup { .. } = record {
            return self.apply_drop(file, offset, group_id);
        }
        // A record after a drop: the replica was added back, starting afresh.
        self.dropped.remove(&group_id);
        let group = self.groups.entry(group_id).or_default();
        match record {
            Record::Entries { entries, .. } => {
                let first = entries[0].index;
                let last = entries[entries.len() - 1].index;
                if first > group.last_index().saturating_add(1) {
                    // The entries in between were in compacted segments (voided or
                    // covered by a snapshot marker when dropped): by the end, a
                    // later marker or rewrite must cover them, or they are lost.
                    group.entries.clear();
                    self.gaps.insert(
                        group_id,
                        Gap { file_name: file.to_string(), offset_bytes: offset, first_index: first },
                    );
                }
                let snapshot_index = group.snapshot_index();
                group.truncate_from(first);
                group.entries.extend(entries.into_iter().filter(|e| e.index > snapshot_index));
                clamp_segments(&mut self.segments, group_id, first);
                let current = self.segments.last_mut().expect("a segment is being read");
                current.group_max_index.insert(group_id, last);
            }
            Record::HardState { hard_state, .. } => group.hard_state = Some(hard_state),
            Record::Truncate { from_index, .. } => {
                group.truncate_from(from_index);
                clamp_segments(&mut self.segments, group_id, from_index);
            }
            Record::SnapshotMarker { marker, .. } => {
                if marker.index < group.snapshot_index() {
                    return Err(corrupt(
                        file,
                        offset,
                        &format!("group {group_id}: snapshot marker {} below {}", marker.index, group.snapshot_index()),
                    ));
                }
                let drop = group.entries.partition_point(|e| e.index <= marker.index);
                group.entries.drain(..drop);
                group.snapshot = Some(marker);
            }
            Record::DropGroup { .. } => unreachable!("handled by apply_drop"),
            Record::HandoffInstalled { since, .. } => {
                if self.segment_format_version < FORMAT_VERSION_HANDOFF {
                    return Err(corrupt(
                        file,
                        offset,
                        &format!(
                            "group {group_id}: hand-off record in a segment of format version {}",
                            self.segment_format_version
                        ),
                    ));
                }
                group.handoff_since = Some(since);
            }
        }
        Ok(())
    }

    /// Forgets everything of the group so far: its log, hard state and marker, a
    /// gap its entries left, and its entries in every segment summary (as a
    /// truncation from index 1 would), so that compaction no longer keeps them.
    fn apply_drop(&mut self, file: &str, offset: u64, group_id: u64) -> Result<(), WalError> {
        if self.segment_format_version < FORMAT_VERSION_DROP_GROUP {
            return Err(corrupt(
                file,
                offset,
                &format!(
                    "group {group_id}: drop-group record in a segment of format version {}",
                    self.segment_format_version
                ),
            ));
        }
        self.groups.remove(&group_id);
        self.gaps.remove(&group_id);
        clamp_segments(&mut self.segments, group_id, 1);
        self.dropped.insert(group_id);
        Ok(())
    }

    /// Ends recovery.
    pub fn finish(self) -> Result<Recovered, WalError> {
        for (group_id, gap) in &self.gaps {
            let group = &self.groups[group_id];
            if group.entries.first().is_some_and(|e| e.index > group.snapshot_index() + 1) {
                return Err(corrupt(
                    &gap.file_name,
                    gap.offset_bytes,
                    &format!(
                        "group {group_id}: entries resume at {} after a gap that no snapshot marker or rewrite covers",
                        gap.first_index
                    ),
                ));
            }
        }
        let resume = self.resume.unwrap_or(ResumePoint::CreateSegment { segment_seq: 1 });
        Ok(Recovered {
            identity: self.identity,
            groups: self.groups,
            dropped: self.dropped,
            segments: self.segments,
            next_batch_seq: self.next_batch_seq.unwrap_or(1),
            batches_recovered: self.batches_recovered,
            resume,
        })
    }
}

/// Entries of `group_id` from `from_index` on are void in every segment.
fn clamp_segments(segments: &mut [SegmentSummary], group_id: u64, from_index: u64) {
    for segment in segments {
        if let Some(max) = segment.group_max_index.get_mut(&group_id) {
            *max = (*max).min(from_index - 1);
        }
    }
}

fn corrupt(file: &str, offset_bytes: u64, reason: &str) -> WalError {
    WalError::Corrupt { file: file.to_string(), offset_bytes, reason: reason.to_string() }
}

fn parse_seq(file: &str) -> Option<u64> {
    let name = std::path::Path::new(file).file_name()?.to_str()?;
    super::parse_segment_file_name(name)
}
