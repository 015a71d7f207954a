//! The group-commit writer: a sans-I/O state machine that turns appended records of
//! many groups into batches of aligned I/O commands, and learns of their
//! completion.
//!
//! Owns: the next batch and segment sequence numbers, the write position, the
//! pending (not yet written) records, the one batch in flight, and which groups'
//! entries each live segment holds (for compaction). Runs on the core that owns the
//! WAL; the same code is driven by the simulated disk and by glommio DMA files.
//!
//! Invariants:
//! - At most one batch is in flight; records appended meanwhile accumulate and form
//!   the next batch ([`WalWriter::start_batch`] returns `None` until
//!   [`WalWriter::complete`]).
//! - A batch is written once, at a block boundary, padded to the block, and the
//!   write position then moves past it: no block holding an acknowledged batch is
//!   ever written again.
//! - Each new segment's first batch starts with every group's hard state and
//!   snapshot marker (a checkpoint), so dropping older segments loses neither.
//!   A group dropped from the core is no longer in it.
//! - Only a prefix of segments is ever dropped, never the newest, and a segment
//!   only once durable snapshot markers cover every live entry in it.

use std::collections::{BTreeMap, VecDeque};

use corekv_rpc::raft::{Entry, HardState};

use super::format::{
    BATCH_HEADER_BYTES, BATCH_PAYLOAD_BYTES_MAX, BLOCK_BYTES, FORMAT_VERSION, Record, SegmentHeader, SnapshotMarker,
    WalIdentity, check_entries, check_record, encode_batch, encode_entries_record, encode_record,
    encode_segment_header, pad_to_block,
};
use super::recovery::{Recovered, ResumePoint, SegmentSummary};
use super::{IoMode, WalError};

/// Upper bound of one checkpoint record (a hard state record: 16 + 24 bytes).
const CHECKPOINT_RECORD_BYTES_MAX: u64 = 40;

/// WAL configuration of one core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// Whose WAL this is (written into every segment header, checked on recovery).
    pub identity: WalIdentity,
    /// Fixed size of every segment file, a multiple of [`BLOCK_BYTES`].
    pub segment_bytes: u64,
    /// Most bytes of records that may wait for the next batch; beyond it `append`
    /// answers [`WalError::Busy`] (back-pressure, DESIGN §1.6).
    pub pending_bytes_max: u64,
    /// Covered segments kept for reuse instead of deleted (DESIGN §12: overwriting
    /// a written file syncs faster than filling fresh extents).
    pub recycle_segments_max: usize,
    /// O_DIRECT or buffered writes (file systems such as tmpfs lack O_DIRECT).
    pub io_mode: IoMode,
}

impl WalConfig {
    /// Defaults: 64 MiB segments, 8 MiB pending, 2 recycled segments, O_DIRECT.
    pub fn new(identity: WalIdentity) -> Self {
        WalConfig {
            identity,
            segment_bytes: 64 << 20,
            pending_bytes_max: 8 << 20,
            recycle_segments_max: 2,
            io_mode: IoMode::Direct,
        }
    }

    /// Checks the sizes.
    pub fn validate(&self) -> Result<(), WalError> {
        if !self.segment_bytes.is_multiple_of(BLOCK_BYTES)
            || self.segment_bytes < 4 * BLOCK_BYTES
            || self.segment_bytes > BATCH_PAYLOAD_BYTES_MAX
        {
            return Err(WalError::Config(format!(
                "segment_bytes {} must be a multiple of {BLOCK_BYTES}, at least 4 blocks, at most {BATCH_PAYLOAD_BYTES_MAX}",
                self.segment_bytes
            )));
        }
        if self.pending_bytes_max < BLOCK_BYTES {
            return Err(WalError::Config(format!("pending_bytes_max {} below one block", self.pending_bytes_max)));
        }
        Ok(())
    }
}

/// One I/O step the executor performs, in order, for a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoCommand {
    /// Make segment `segment_seq` exist at `segment_bytes` with `header` (one block)
    /// at offset 0, durably (data and directory entry) before the next command.
    /// `recycle_from`: rename that old, covered segment instead of creating a fresh
    /// one (its stale bytes stay; recovery ignores them). Fresh segments are
    /// preallocated and zero-filled. An existing file named `segment_seq` (a torn
    /// earlier creation) is overwritten.
    CreateSegment {
        /// The new segment.
        segment_seq: u64,
        /// A covered segment to reuse.
        recycle_from: Option<u64>,
        /// The segment's size.
        segment_bytes: u64,
        /// The header block.
        header: Vec<u8>,
    },
    /// Write `bytes` (a multiple of the block) at `offset_bytes` (block aligned).
    Write {
        /// The segment.
        segment_seq: u64,
        /// Where.
        offset_bytes: u64,
        /// What.
        bytes: Vec<u8>,
    },
    /// fdatasync the segment: afterwards everything written to it is durable.
    Sync {
        /// The segment.
        segment_seq: u64,
    },
    /// Delete a covered segment (nothing in it is needed any more).
    DeleteSegment {
        /// The segment.
        segment_seq: u64,
    },
}

/// The commands of one batch. The batch is durable once all of them completed,
/// in order; then call [`WalWriter::complete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoBatch {
    /// The batch's sequence number.
    pub batch_seq: u64,
    /// The steps, in order.
    pub commands: Vec<IoCommand>,
}

/// What became durable when a batch completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableBatch {
    /// The batch.
    pub batch_seq: u64,
    /// Per group, the last entry index this batch wrote: that group's entries up to
    /// it are durable now (together with everything of earlier batches).
    pub last_entry_index: BTreeMap<u64, u64>,
    /// Records in the batch (checkpoint records included).
    pub record_count: u32,
    /// Bytes written, padding included.
    pub written_bytes: u64,
}

/// State changes a record makes, applied when its batch is sealed.
#[derive(Debug, Clone)]
enum Update {
    Entries { group_id: u64, first: u64, last: u64 },
    HardState { group_id: u64, hard_state: HardState },
    Truncate { group_id: u64, from_index: u64 },
    Marker { group_id: u64, marker: SnapshotMarker },
    Drop { group_id: u64 },
    Handoff { group_id: u64, since: u64 },
}

/// What a sealed batch reports, or applies, once it is durable.
#[derive(Debug, Default)]
struct Sealed {
    /// Per group, the last entry index the batch wrote (none before a drop).
    last_entry_index: BTreeMap<u64, u64>,
    /// Snapshot markers, in record order (none of a group before its drop).
    markers: Vec<(u64, SnapshotMarker)>,
}

#[derive(Debug)]
struct Inflight {
    batch_seq: u64,
    sealed: Sealed,
    record_count: u32,
    written_bytes: u64,
}

/// The group-commit writer of one core's WAL.
#[derive(Debug)]
pub struct WalWriter {
    config: WalConfig,
    next_batch_seq: u64,
    next_segment_seq: u64,
    /// Live segments, oldest first; while `current` is set, its segment is last.
    segments: VecDeque<SegmentSummary>,
    /// Segment and offset of the next batch; `None`: the next batch starts a segment.
    current: Option<(u64, u64)>,
    /// Covered segments waiting to be recycled, oldest first; always the segments
    /// right before the live ones.
    free_segments: VecDeque<u64>,
    pending_payload: Vec<u8>,
    pending_records: u32,
    pending_updates: Vec<Update>,
    inflight: Option<Inflight>,
    /// An I/O of a batch failed: nothing more is accepted (fail-stop).
    stopped: bool,
    housekeeping: Vec<IoCommand>,
    /// Hard state and marker per group as of the last sealed batch (checkpoints).
    sealed_hard_states: BTreeMap<u64, HardState>,
    sealed_markers: BTreeMap<u64, SnapshotMarker>,
    /// Per group, the hand-off its state was installed by (re-emitted in every
    /// checkpoint, like hard states and markers, until the group is dropped).
    sealed_handoffs: BTreeMap<u64, u64>,
    /// Snapshot index per group as of the last durable batch (compaction).
    durable_snapshot_index: BTreeMap<u64, u64>,
}

impl WalWriter {
    /// A writer continuing after `recovered`.
    pub fn new(config: WalConfig, recovered: &Recovered) -> Result<Self, WalError> {
        config.validate()?;
        let mut segments: VecDeque<SegmentSummary> = recovered.segments.iter().cloned().collect();
        let (current, next_segment_seq) = match recovered.resume {
            // A segment created but never written to lacks its checkpoint: create it
            // again, so its first batch carries one.
            ResumePoint::Append { segment_seq, offset_bytes, .. } if offset_bytes == BLOCK_BYTES => {
                let empty = segments.pop_back().map(|s| s.segment_seq);
                assert_eq!(empty, Some(segment_seq), "recovery resumes in its last segment");
                (None, segment_seq)
            }
            // A segment written with another size is closed as it is: appending past
            // the size its header states would put batches where recovery never looks.
            // So is one of an older format version: its header does not admit the
            // record kinds added since (recovery refuses them there).
            ResumePoint::Append { segment_seq, segment_bytes, format_version, .. }
                if segment_bytes != config.segment_bytes || format_version != FORMAT_VERSION =>
            {
                (None, segment_seq + 1)
            }
            ResumePoint::Append { segment_seq, offset_bytes, .. } => {
                let last = segments.back().map(|s| s.segment_seq);
                assert_eq!(last, Some(segment_seq), "recovery resumes in its last segment");
                (Some((segment_seq, offset_bytes)), segment_seq + 1)
            }
            ResumePoint::CreateSegment { segment_seq } => (None, segment_seq),
        };
        let mut writer = WalWriter {
            next_batch_seq: recovered.next_batch_seq,
            next_segment_seq,
            segments,
            current,
            free_segments: VecDeque::new(),
            pending_payload: Vec::new(),
            pending_records: 0,
            pending_updates: Vec::new(),
            inflight: None,
            stopped: false,
            housekeeping: Vec::new(),
            sealed_hard_states: recovered.groups.iter().filter_map(|(id, g)| Some((*id, g.hard_state?))).collect(),
            sealed_markers: recovered.groups.iter().filter_map(|(id, g)| Some((*id, g.snapshot?))).collect(),
            sealed_handoffs: recovered.groups.iter().filter_map(|(id, g)| Some((*id, g.handoff_since?))).collect(),
            durable_snapshot_index: recovered.groups.iter().map(|(id, g)| (*id, g.snapshot_index())).collect(),
            config,
        };
        writer.compact();
        Ok(writer)
    }

    /// The configuration.
    pub fn config(&self) -> &WalConfig {
        &self.config
    }

    /// Sequence number the next sealed batch gets.
    pub fn next_batch_seq(&self) -> u64 {
        self.next_batch_seq
    }

    /// The batch in flight, if any.
    pub fn inflight_batch_seq(&self) -> Option<u64> {
        self.inflight.as_ref().map(|b| b.batch_seq)
    }

    /// Bytes of records waiting for the next batch.
    pub fn pending_bytes(&self) -> u64 {
        self.pending_payload.len() as u64
    }

    /// Records waiting for the next batch.
    pub fn pending_records(&self) -> u32 {
        self.pending_records
    }

    /// Sequence numbers of the live segments, oldest first.
    pub fn live_segments(&self) -> Vec<u64> {
        self.segments.iter().map(|s| s.segment_seq).collect()
    }

    /// Covered segments kept for recycling.
    pub fn free_segments(&self) -> Vec<u64> {
        self.free_segments.iter().copied().collect()
    }

    /// The driver reports that an I/O of the batch in flight failed. The batch's
    /// fate on disk is unknown, so the WAL stops: every later call answers
    /// [`WalError::Stopped`] until a restart recovers what is really there.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// `Err(Stopped)` once [`WalWriter::stop`] was called.
    pub fn check_running(&self) -> Result<(), WalError> {
        if self.stopped { Err(WalError::Stopped) } else { Ok(()) }
    }

    /// Queues a record for the next batch.
    pub fn append(&mut self, record: &Record) -> Result<(), WalError> {
        self.check_running()?;
        check_record(record)?;
        self.reserve(record.encoded_bytes() as u64)?;
        encode_record(record, &mut self.pending_payload);
        self.pending_records += 1;
        let group_id = record.group_id();
        self.pending_updates.push(match record {
            Record::Entries { entries, .. } => {
                Update::Entries { group_id, first: entries[0].index, last: entries[entries.len() - 1].index }
            }
            Record::HardState { hard_state, .. } => Update::HardState { group_id, hard_state: *hard_state },
            Record::Truncate { from_index, .. } => Update::Truncate { group_id, from_index: *from_index },
            Record::SnapshotMarker { marker, .. } => Update::Marker { group_id, marker: *marker },
            Record::DropGroup { .. } => Update::Drop { group_id },
            Record::HandoffInstalled { since, .. } => Update::Handoff { group_id, since: *since },
        });
        Ok(())
    }

    /// Queues entries of a group for the next batch without copying them into a
    /// [`Record`].
    pub fn append_entries(&mut self, group_id: u64, entries: &[Entry]) -> Result<(), WalError> {
        self.check_running()?;
        check_entries(entries)?;
        let bytes = 16 + 4 + entries.iter().map(|e| 21 + e.data.len() as u64).sum::<u64>();
        self.reserve(bytes)?;
        encode_entries_record(group_id, entries, &mut self.pending_payload);
        self.pending_records += 1;
        self.pending_updates.push(Update::Entries {
            group_id,
            first: entries[0].index,
            last: entries[entries.len() - 1].index,
        });
        Ok(())
    }

    /// Checks that `record_bytes` more fit the next batch.
    /// Bytes of records the open batch can still take before `append` answers
    /// [`WalError::Busy`] (the checkpoint a segment roll may add is set aside).
    pub fn room_bytes(&self) -> u64 {
        let checkpoint_bytes_max = CHECKPOINT_RECORD_BYTES_MAX
            * (self.sealed_hard_states.len()
                + self.sealed_markers.len()
                + self.sealed_handoffs.len()
                + self.pending_records as usize
                + 1) as u64;
        let batch_bytes_max = self.config.segment_bytes - BLOCK_BYTES;
        let pending_limit = self.config.pending_bytes_max.min(batch_bytes_max);
        pending_limit.saturating_sub(BATCH_HEADER_BYTES as u64 + checkpoint_bytes_max + self.pending_bytes())
    }

    fn reserve(&self, record_bytes: u64) -> Result<(), WalError> {
        // The checkpoint a new segment starts with is bounded by one record per
        // known hard state and marker, plus one per pending record.
        let checkpoint_bytes_max = CHECKPOINT_RECORD_BYTES_MAX
            * (self.sealed_hard_states.len()
                + self.sealed_markers.len()
                + self.sealed_handoffs.len()
                + self.pending_records as usize
                + 1) as u64;
        let batch_bytes_max = self.config.segment_bytes - BLOCK_BYTES;
        let pending_limit = self.config.pending_bytes_max.min(batch_bytes_max);
        let needed = BATCH_HEADER_BYTES as u64 + checkpoint_bytes_max + self.pending_bytes() + record_bytes;
        if needed <= pending_limit {
            return Ok(());
        }
        if self.pending_records == 0 {
            return Err(WalError::RecordTooLarge { record_bytes, limit_bytes: pending_limit });
        }
        Err(WalError::Busy { pending_bytes: self.pending_bytes(), limit_bytes: pending_limit })
    }

    /// Seals the pending records into a batch and returns its I/O commands, unless a
    /// batch is already in flight or nothing is pending.
    pub fn start_batch(&mut self) -> Option<IoBatch> {
        if self.stopped || self.inflight.is_some() || self.pending_records == 0 {
            return None;
        }
        let batch_seq = self.next_batch_seq;
        let mut payload = std::mem::take(&mut self.pending_payload);
        let mut record_count = std::mem::take(&mut self.pending_records);
        // Deletions first: a roll below recycles the pool's oldest kept segment, and
        // the older ones queued for deletion must be gone before that rename.
        let mut commands = std::mem::take(&mut self.housekeeping);
        let padded = pad_to_block(BATCH_HEADER_BYTES as u64 + payload.len() as u64);
        let fits = self.current.is_some_and(|(_, offset)| offset + padded <= self.config.segment_bytes);
        if !fits {
            let (create, checkpoint, checkpoint_records) = self.roll_segment(batch_seq);
            commands.push(create);
            record_count += checkpoint_records;
            payload.splice(0..0, checkpoint);
        }
        let (segment_seq, offset_bytes) = self.current.expect("a segment is open");
        let bytes = encode_batch(batch_seq, segment_seq, record_count, &payload);
        let written_bytes = bytes.len() as u64;
        assert!(offset_bytes + written_bytes <= self.config.segment_bytes, "batch overruns its segment");
        self.current = Some((segment_seq, offset_bytes + written_bytes));
        commands.push(IoCommand::Write { segment_seq, offset_bytes, bytes });
        commands.push(IoCommand::Sync { segment_seq });
        let sealed = self.seal_updates();
        self.inflight = Some(Inflight { batch_seq, sealed, record_count, written_bytes });
        self.next_batch_seq += 1;
        Some(IoBatch { batch_seq, commands })
    }

    /// Starts the next segment; returns its creation command and checkpoint.
    fn roll_segment(&mut self, first_batch_seq: u64) -> (IoCommand, Vec<u8>, u32) {
        let segment_seq = self.next_segment_seq;
        self.next_segment_seq += 1;
        let header = encode_segment_header(&SegmentHeader {
            format_version: FORMAT_VERSION,
            identity: self.config.identity,
            segment_seq,
            first_batch_seq,
            segment_bytes: self.config.segment_bytes,
        });
        let mut checkpoint = Vec::new();
        let mut records = 0;
        for (&group_id, &hard_state) in &self.sealed_hard_states {
            encode_record(&Record::HardState { group_id, hard_state }, &mut checkpoint);
            records += 1;
        }
        for (&group_id, &marker) in &self.sealed_markers {
            encode_record(&Record::SnapshotMarker { group_id, marker }, &mut checkpoint);
            records += 1;
        }
        for (&group_id, &since) in &self.sealed_handoffs {
            encode_record(&Record::HandoffInstalled { group_id, since }, &mut checkpoint);
            records += 1;
        }
        self.segments.push_back(SegmentSummary { segment_seq, group_max_index: BTreeMap::new() });
        self.current = Some((segment_seq, BLOCK_BYTES));
        let create = IoCommand::CreateSegment {
            segment_seq,
            recycle_from: self.free_segments.pop_front(),
            segment_bytes: self.config.segment_bytes,
            header,
        };
        (create, checkpoint, records)
    }

    /// Applies the sealed batch's records to the tracking state.
    ///
    /// Records are applied in order, so a record of a group after its drop in the
    /// same batch (the replica added back) survives, and one before it does not.
    fn seal_updates(&mut self) -> Sealed {
        let mut sealed = Sealed::default();
        for update in std::mem::take(&mut self.pending_updates) {
            match update {
                Update::Entries { group_id, first, last } => {
                    self.clamp(group_id, first);
                    let current = self.segments.back_mut().expect("current segment");
                    current.group_max_index.insert(group_id, last);
                    sealed.last_entry_index.insert(group_id, last);
                }
                Update::HardState { group_id, hard_state } => {
                    self.sealed_hard_states.insert(group_id, hard_state);
                }
                Update::Truncate { group_id, from_index } => self.clamp(group_id, from_index),
                Update::Marker { group_id, marker } => {
                    self.sealed_markers.insert(group_id, marker);
                    sealed.markers.push((group_id, marker));
                }
                Update::Drop { group_id } => self.drop_group(group_id, &mut sealed),
                Update::Handoff { group_id, since } => {
                    self.sealed_handoffs.insert(group_id, since);
                }
            }
        }
        sealed
    }

    /// Forgets a dropped group: its entries in every segment (they no longer hold
    /// segments back), its hard state and marker (no later checkpoint re-emits
    /// them), its durable snapshot index (entries of a replica added back must not
    /// pass for covered by the old replica's snapshot), and what earlier records of
    /// the same batch said about it.
    ///
    /// The drop itself is never re-emitted in a checkpoint, and need not be: every
    /// record it voids was written before it, so it lies in the drop's segment or
    /// an older one. Compaction releases segments from the front only, and the
    /// pool deletes or recycles its oldest first, so the segment files on disk are
    /// always a suffix of the history (stale batches of a recycled file are
    /// ignored by recovery). While any voided record is on disk, the drop after it
    /// is too; once the drop's segment is gone, so is all it voided. A checkpoint
    /// written later no longer names the group, and one written in the drop's own
    /// batch precedes the drop in it. The price: after that segment is gone,
    /// recovery no longer lists the group in [`Recovered::dropped`].
    fn drop_group(&mut self, group_id: u64, sealed: &mut Sealed) {
        self.clamp(group_id, 1);
        self.sealed_hard_states.remove(&group_id);
        self.sealed_markers.remove(&group_id);
        self.sealed_handoffs.remove(&group_id);
        // Before the batch is durable: compaction only runs once it is (in
        // `complete`), and then the drop is durable too.
        self.durable_snapshot_index.remove(&group_id);
        sealed.markers.retain(|&(id, _)| id != group_id);
        sealed.last_entry_index.remove(&group_id);
    }

    fn clamp(&mut self, group_id: u64, from_index: u64) {
        for segment in &mut self.segments {
            if let Some(max) = segment.group_max_index.get_mut(&group_id) {
                *max = (*max).min(from_index - 1);
            }
        }
    }

    /// The in-flight batch's commands all completed: it is durable.
    ///
    /// Panics if `batch_seq` is not the batch in flight (a driver bug).
    pub fn complete(&mut self, batch_seq: u64) -> DurableBatch {
        let inflight = self.inflight.take().expect("complete() without a batch in flight");
        assert_eq!(inflight.batch_seq, batch_seq, "complete() for a batch that is not in flight");
        for (group_id, marker) in inflight.sealed.markers {
            self.durable_snapshot_index.insert(group_id, marker.index);
        }
        self.compact();
        DurableBatch {
            batch_seq,
            last_entry_index: inflight.sealed.last_entry_index,
            record_count: inflight.record_count,
            written_bytes: inflight.written_bytes,
        }
    }

    /// Drops covered segments from the front: to the recycling pool or deleted.
    /// Only called with no batch in flight, so every segment's first batch (its
    /// checkpoint) is durable.
    fn compact(&mut self) {
        while self.segments.len() >= 2 && self.covered(&self.segments[0]) {
            let gone = self.segments.pop_front().expect("len >= 2").segment_seq;
            // The pool keeps the newest covered segments and gives up its oldest
            // first, so the files on disk (pool, then live segments) always form
            // one consecutive range: recovery treats a gap as a lost segment.
            self.free_segments.push_back(gone);
            if self.free_segments.len() > self.config.recycle_segments_max {
                let oldest = self.free_segments.pop_front().expect("over the limit");
                self.housekeeping.push(IoCommand::DeleteSegment { segment_seq: oldest });
            }
        }
    }

    /// True when durable snapshot markers cover every live entry of `segment`.
    fn covered(&self, segment: &SegmentSummary) -> bool {
        segment.group_max_index.iter().all(|(group_id, &max)| {
            max == 0 || self.durable_snapshot_index.get(group_id).is_some_and(|&index| index >= max)
        })
    }

    /// The groups whose entries keep the oldest live segment (no durable snapshot
    /// covers them yet), each with the index a snapshot must reach to release it,
    /// when more than `live_max` segments are live; empty otherwise. Segments go
    /// from the front only, so a quiet group's few entries would otherwise keep
    /// every later segment on disk: the core snapshots these groups early.
    pub fn pinning_groups(&self, live_max: usize) -> Vec<(u64, u64)> {
        if self.segments.len() <= live_max.max(1) {
            return Vec::new();
        }
        let oldest = &self.segments[0];
        oldest
            .group_max_index
            .iter()
            .filter(|&(group_id, &max)| max > 0 && self.durable_snapshot_index.get(group_id).is_none_or(|&i| i < max))
            .map(|(&group_id, &max)| (group_id, max))
            .collect()
    }

    /// Deletions waiting for the next batch; an idle driver may run them now.
    pub fn take_housekeeping(&mut self) -> Vec<IoCommand> {
        std::mem::take(&mut self.housekeeping)
    }
}
