//! WAL tests on the simulated disk: round trips, crashes at every byte of the last
//! write, corruption, compaction, and property tests against a reference model
//! (the records of the synced batches, applied by a deliberately simple model).
//! The drop-group record has its own file, `tests/drop_group.rs`.

mod drop_group;

use std::collections::BTreeMap;

use corekv_rpc::raft::{Entry, EntryKind, HardState};
use proptest::prelude::*;

use super::format::{BLOCK_BYTES, decode_batch, encode_batch, encode_record, encode_segment_header};
use super::*;

const IDENTITY: WalIdentity = WalIdentity { cluster_id: 0xC1, node_id: 2, core_id: 1 };

fn config(segment_bytes: u64) -> WalConfig {
    WalConfig { segment_bytes, pending_bytes_max: segment_bytes / 2, ..WalConfig::new(IDENTITY) }
}

/// Deterministic generator for test workloads.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The reference model: per group, a map index -> entry.
#[derive(Debug, Clone, Default, PartialEq)]
struct ModelGroup {
    hard_state: Option<HardState>,
    snapshot: Option<SnapshotMarker>,
    entries: BTreeMap<u64, Entry>,
    /// The hand-off whose installed state the group's records are.
    handoff_since: Option<u64>,
    /// The group's last record is a drop (it holds nothing else then).
    dropped: bool,
}

impl ModelGroup {
    fn snapshot_index(&self) -> u64 {
        self.snapshot.map_or(0, |s| s.index)
    }
    fn last_index(&self) -> u64 {
        self.entries.keys().next_back().copied().unwrap_or(0).max(self.snapshot_index())
    }
}

type Model = BTreeMap<u64, ModelGroup>;

fn model_apply(model: &mut Model, record: &Record) {
    if let Record::DropGroup { group_id } = record {
        model.insert(*group_id, ModelGroup { dropped: true, ..ModelGroup::default() });
        return;
    }
    let group = model.entry(record.group_id()).or_default();
    group.dropped = false;
    match record {
        Record::Entries { entries, .. } => {
            group.entries.split_off(&entries[0].index);
            let snap = group.snapshot_index();
            for e in entries.iter().filter(|e| e.index > snap) {
                group.entries.insert(e.index, e.clone());
            }
        }
        Record::HardState { hard_state, .. } => group.hard_state = Some(*hard_state),
        Record::Truncate { from_index, .. } => {
            group.entries.split_off(from_index);
        }
        Record::SnapshotMarker { marker, .. } => {
            group.entries = group.entries.split_off(&(marker.index + 1));
            group.snapshot = Some(*marker);
        }
        Record::DropGroup { .. } => unreachable!("applied above"),
        Record::HandoffInstalled { since, .. } => group.handoff_since = Some(*since),
    }
}

fn model_of(batches: &[Vec<Record>]) -> Model {
    let mut model = Model::new();
    for record in batches.iter().flatten() {
        model_apply(&mut model, record);
    }
    model
}

/// Compact view of a group: hard state, marker, (index, term, data length, data
/// checksum) per entry, and the hand-off it was installed by.
type GroupView = (Option<HardState>, Option<SnapshotMarker>, Vec<(u64, u64, usize, u32)>, Option<u64>);

fn view(entries: &mut dyn Iterator<Item = &Entry>) -> Vec<(u64, u64, usize, u32)> {
    entries.map(|e| (e.index, e.term, e.data.len(), crc32fast::hash(&e.data))).collect()
}

/// A group with no hard state, no snapshot and no entries holds nothing: whether
/// it is listed is not state. (A group whose only records were truncations has
/// nothing to keep a segment for, so compaction may drop the segment and the
/// group with it, while the model lists it empty.)
fn holds_something(view: &GroupView) -> bool {
    view.0.is_some() || view.1.is_some() || !view.2.is_empty() || view.3.is_some()
}

fn assert_matches_model(recovered: &Recovered, model: &Model) {
    let got: BTreeMap<u64, GroupView> = recovered
        .groups
        .iter()
        .map(|(id, g)| (*id, (g.hard_state, g.snapshot, view(&mut g.entries.iter()), g.handoff_since)))
        .filter(|(_, v)| holds_something(v))
        .collect();
    let want: BTreeMap<u64, GroupView> = model
        .iter()
        .map(|(id, g)| (*id, (g.hard_state, g.snapshot, view(&mut g.entries.values()), g.handoff_since)))
        .filter(|(_, v)| holds_something(v))
        .collect();
    assert_eq!(got, want);
    // A drop is listed while its segment is on disk, never for a group with a
    // record after it; compaction may have released it already.
    for group_id in &recovered.dropped {
        assert!(!recovered.groups.contains_key(group_id), "group {group_id} both dropped and recovered");
        assert!(model.get(group_id).is_some_and(|g| g.dropped), "group {group_id} listed as dropped");
    }
}

/// Random, Raft-plausible records for `groups` groups, consistent with `model`.
fn random_batch(g: &mut Gen, model: &Model, groups: u64, records_max: u64, data_bytes_max: u64) -> Vec<Record> {
    let mut scratch = model.clone();
    let mut batch = Vec::new();
    for _ in 0..1 + g.below(records_max) {
        let group_id = g.below(groups) * 1_000_003;
        let state = scratch.get(&group_id).cloned().unwrap_or_default();
        let (snap, last) = (state.snapshot_index(), state.last_index());
        let record = match g.below(21) {
            0..=11 => {
                let first = snap + 1 + g.below(last - snap + 1);
                let count = 1 + g.below(4);
                let entries = (first..first + count)
                    .map(|index| Entry {
                        term: 1 + index / 3,
                        index,
                        kind: EntryKind::Normal,
                        data: (0..g.below(data_bytes_max + 1)).map(|i| (i as u8) ^ (index as u8)).collect(),
                    })
                    .collect();
                Record::Entries { group_id, entries }
            }
            12..=15 => Record::HardState {
                group_id,
                hard_state: HardState { term: g.below(100), vote: g.below(5), commit: g.below(last + 1) },
            },
            16 => Record::Truncate { group_id, from_index: snap + 1 + g.below(last - snap + 1) },
            17 => Record::DropGroup { group_id },
            18 => Record::HandoffInstalled { group_id, since: 1 + g.below(1000) },
            _ => Record::SnapshotMarker {
                group_id,
                marker: SnapshotMarker { index: snap + g.below(last - snap + 3), term: g.below(50) },
            },
        };
        model_apply(&mut scratch, &record);
        batch.push(record);
    }
    batch
}

fn append_all(wal: &mut SyncWal<SimDisk>, batch: &[Record]) {
    for record in batch {
        wal.append(record).expect("append");
    }
}

fn reopen(disk: SimDisk, segment_bytes: u64) -> (SyncWal<SimDisk>, Recovered) {
    SyncWal::open(disk, config(segment_bytes)).expect("recovery succeeds")
}

#[test]
fn random_batches_of_many_groups_come_back_in_order() {
    let mut g = Gen(7);
    let (mut wal, recovered) = reopen(SimDisk::new(), 64 * 1024);
    assert!(recovered.groups.is_empty());
    let mut synced = Vec::new();
    for round in 0..120 {
        let batch = random_batch(&mut g, &model_of(&synced), 40, 12, 600);
        append_all(&mut wal, &batch);
        let durable = wal.flush().expect("flush").expect("a batch");
        assert_eq!(durable.batch_seq, round + 1);
        synced.push(batch);
        if round % 40 == 39 {
            let (w, recovered) = reopen(wal.into_store(), 64 * 1024);
            assert_matches_model(&recovered, &model_of(&synced));
            assert_eq!(recovered.next_batch_seq, round + 2);
            wal = w;
        }
    }
    assert!(wal.store_mut().segments_created > 3, "the test must cross segment boundaries");
}

#[test]
fn one_batch_is_one_write_and_one_fdatasync_for_64_groups() {
    let (mut wal, _) = reopen(SimDisk::new(), 1 << 20);
    for group_id in 0..64 {
        let entry = Entry { term: 1, index: 1, kind: EntryKind::Normal, data: vec![1; 100] };
        wal.append(&Record::Entries { group_id, entries: vec![entry] }).unwrap();
    }
    let durable = wal.flush().unwrap().unwrap();
    assert_eq!(durable.last_entry_index.len(), 64);
    assert_eq!((wal.store_mut().writes, wal.store_mut().syncs), (1, 1));
}

#[test]
fn no_block_holding_an_acknowledged_batch_is_written_again() {
    let segment_bytes = 32 * 1024;
    let mut g = Gen(99);
    let (mut wal, _) = reopen(SimDisk::new(), segment_bytes);
    let mut synced: Vec<Vec<Record>> = Vec::new();
    // (segment, first byte, end byte) of every acknowledged write; a recycled or
    // recreated segment starts afresh.
    let mut acknowledged: Vec<(u64, u64, u64)> = Vec::new();
    for round in 0..300u64 {
        let batch = random_batch(&mut g, &model_of(&synced), 6, 4, 1200);
        append_all(&mut wal, &batch);
        let io = wal.writer_mut().start_batch().unwrap();
        for command in &io.commands {
            match command {
                IoCommand::CreateSegment { segment_seq, .. } => acknowledged.retain(|a| a.0 != *segment_seq),
                IoCommand::Write { segment_seq, offset_bytes, bytes } => {
                    assert_eq!(offset_bytes % BLOCK_BYTES, 0);
                    assert_eq!(bytes.len() as u64 % BLOCK_BYTES, 0);
                    let end = offset_bytes + bytes.len() as u64;
                    for &(seq, from, to) in &acknowledged {
                        assert!(
                            seq != *segment_seq || end <= from || *offset_bytes >= to,
                            "rewrite of an acknowledged block"
                        );
                    }
                }
                _ => {}
            }
            wal.store_mut().execute(command).unwrap();
        }
        for command in &io.commands {
            if let IoCommand::Write { segment_seq, offset_bytes, bytes } = command {
                acknowledged.push((*segment_seq, *offset_bytes, offset_bytes + bytes.len() as u64));
            }
        }
        wal.writer_mut().complete(io.batch_seq);
        synced.push(batch);
        if round % 50 == 49 {
            wal = reopen(wal.into_store(), segment_bytes).0;
        }
    }
}

#[test]
fn records_appended_while_a_batch_is_in_flight_form_the_next_batch() {
    let (mut wal, _) = reopen(SimDisk::new(), 1 << 20);
    let hs = |term| Record::HardState { group_id: 1, hard_state: HardState { term, vote: 0, commit: 0 } };
    wal.append(&hs(1)).unwrap();
    let first = wal.writer_mut().start_batch().expect("batch 1");
    wal.append(&hs(2)).unwrap();
    wal.append(&hs(3)).unwrap();
    assert_eq!(wal.writer_mut().start_batch(), None, "one batch in flight at a time");
    for c in &first.commands {
        wal.store_mut().execute(c).unwrap();
    }
    assert_eq!(wal.writer_mut().complete(first.batch_seq).batch_seq, 1);
    let second = wal.flush().unwrap().unwrap();
    assert_eq!((second.batch_seq, second.record_count), (2, 2));
}

/// Builds a WAL with `batches` synced batches, then leaves one more batch written
/// but not synced. Returns the disk, the synced batches, and the unsynced batch
/// with its write's length.
fn disk_with_unsynced_tail(
    seed: u64,
    batches: usize,
    segment_bytes: u64,
) -> (SimDisk, Vec<Vec<Record>>, (Vec<Record>, u64)) {
    let mut g = Gen(seed);
    let (mut wal, _) = reopen(SimDisk::new(), segment_bytes);
    let mut synced = Vec::new();
    for _ in 0..batches {
        let batch = random_batch(&mut g, &model_of(&synced), 8, 4, 1500);
        append_all(&mut wal, &batch);
        wal.flush().unwrap().unwrap();
        synced.push(batch);
    }
    let tail = random_batch(&mut g, &model_of(&synced), 8, 4, 1500);
    append_all(&mut wal, &tail);
    let io = wal.writer_mut().start_batch().unwrap();
    for command in &io.commands {
        if matches!(command, IoCommand::Sync { .. }) {
            break;
        }
        wal.store_mut().execute(command).unwrap();
    }
    let len = wal.store_mut().last_unsynced_write_bytes().expect("an unsynced write");
    (wal.into_store(), synced, (tail, len))
}

/// Bytes of the batch header plus records of the batch being written (the rest is
/// padding), from its header.
fn used_bytes(disk: &SimDisk, tail: &[Record]) -> u64 {
    let mut disk = disk.clone();
    let last = *disk.list_segments().unwrap().last().unwrap();
    let bytes = disk.read_segment(last).unwrap();
    let mut offset = BLOCK_BYTES as usize;
    loop {
        let batch = decode_batch(&bytes[offset..]).expect("the unsynced batch is visible");
        // A checkpoint may precede the tail's records; an earlier batch may hold
        // fewer records than the tail.
        if batch.records.ends_with(tail) {
            let payload = u32::from_le_bytes(bytes[offset + 24..offset + 28].try_into().unwrap());
            return 32 + u64::from(payload);
        }
        offset += batch.padded_bytes as usize;
    }
}

/// After a crash, the unsynced batch is either wholly there (its write reached the
/// disk in full) or wholly gone; in the first case the model keeps it too.
fn keep_tail_if_whole(recovered: &Recovered, synced: &mut Vec<Vec<Record>>, tail: Vec<Record>) {
    let expected = synced.len() as u64 + 1;
    assert!(
        recovered.next_batch_seq == expected || recovered.next_batch_seq == expected + 1,
        "batches after the tear: next {} vs {expected}",
        recovered.next_batch_seq
    );
    if recovered.next_batch_seq == expected + 1 {
        synced.push(tail);
    }
}

#[test]
fn a_crash_at_every_byte_of_the_last_write_keeps_exactly_the_synced_batches() {
    let segment_bytes = 64 * 1024;
    // The first seed whose unsynced batch spans several blocks.
    let (disk, synced, (tail, len)) = (11..)
        .map(|seed| disk_with_unsynced_tail(seed, 9, segment_bytes))
        .find(|(_, _, (_, len))| *len > 2 * BLOCK_BYTES)
        .expect("some seed");
    let model = model_of(&synced);
    let with_tail = model_of(&[synced.clone(), vec![tail.clone()]].concat());
    let used = used_bytes(&disk, &tail);
    assert!(used < len, "the write has padding to tear in");
    for keep_bytes in 0..=len {
        for mode in
            [CrashMode::TearLastWrite { keep_bytes }, CrashMode::TearLastWriteGarbage { keep_bytes, seed: keep_bytes }]
        {
            let mut crashed = disk.clone();
            crashed.crash(mode);
            let recovered = recover_store(&mut crashed, Some(IDENTITY))
                .unwrap_or_else(|e| panic!("tear at {keep_bytes} ({mode:?}): {e}"));
            // A write whose header and records reached the disk (the zero padding
            // after them is not checked) is a valid batch, never acknowledged and
            // harmless to keep; anything less is cut off.
            if keep_bytes >= used {
                assert_matches_model(&recovered, &with_tail);
                assert_eq!(recovered.next_batch_seq, synced.len() as u64 + 2);
            } else {
                assert_matches_model(&recovered, &model);
                assert_eq!(recovered.next_batch_seq, synced.len() as u64 + 1);
            }
        }
    }
}

#[test]
fn after_a_torn_tail_the_log_continues_and_recovers_again() {
    let segment_bytes = 64 * 1024;
    for seed in 0..40 {
        let (mut disk, mut synced, (tail, _)) =
            disk_with_unsynced_tail(100 + seed, 1 + seed as usize % 12, segment_bytes);
        disk.crash(CrashMode::Seeded { seed });
        let (mut wal, recovered) = reopen(disk, segment_bytes);
        keep_tail_if_whole(&recovered, &mut synced, tail);
        assert_matches_model(&recovered, &model_of(&synced));
        let mut g = Gen(seed);
        for _ in 0..6 {
            let batch = random_batch(&mut g, &model_of(&synced), 8, 6, 1500);
            append_all(&mut wal, &batch);
            wal.flush().unwrap().unwrap();
            synced.push(batch);
        }
        let (_, recovered) = reopen(wal.into_store(), segment_bytes);
        assert_matches_model(&recovered, &model_of(&synced));
    }
}

#[test]
fn a_corrupt_byte_in_an_earlier_batch_names_file_and_offset() {
    let segment_bytes = 64 * 1024;
    let (mut disk, _, _) = disk_with_unsynced_tail(5, 12, segment_bytes);
    disk.crash(CrashMode::LoseUnsynced);
    let segments = disk.list_segments().unwrap();
    assert!(segments.len() >= 2);
    // Find every batch start in the first segment; damage each one in turn except
    // nothing: every batch of segment 1 is followed by later batches.
    let first = disk.durable_bytes(segments[0]).unwrap().to_vec();
    let mut offset = BLOCK_BYTES;
    let mut checked = 0;
    while let Ok(batch) = decode_batch(&first[offset as usize..]) {
        // Padding after the records is not covered by the CRC (it is never read);
        // every byte before it is.
        let used = 32 + u64::from(u32::from_le_bytes(first[offset as usize + 24..][..4].try_into().unwrap()));
        for delta in [0, 9, 40, used / 2, used - 1] {
            let mut bad = disk.clone();
            assert!(bad.corrupt_byte(segments[0], offset + delta, 0x20));
            match recover_store(&mut bad, Some(IDENTITY)) {
                Err(WalError::Corrupt { file, offset_bytes, .. }) => {
                    assert_eq!(file, segment_file_name(segments[0]));
                    assert_eq!(offset_bytes, offset, "the error points at the damaged batch");
                }
                other => panic!("damage at {} not refused: {other:?}", offset + delta),
            }
            checked += 1;
        }
        offset += batch.padded_bytes;
    }
    assert!(checked >= 8);
}

#[test]
fn a_damaged_batch_in_the_newest_segment_is_caught_by_the_batches_after_it() {
    let segment_bytes = 64 * 1024;
    let (mut disk, _, _) = disk_with_unsynced_tail(8, 20, segment_bytes);
    disk.crash(CrashMode::LoseUnsynced);
    let last = *disk.list_segments().unwrap().last().unwrap();
    let bytes = disk.durable_bytes(last).unwrap().to_vec();
    let mut offsets = Vec::new();
    let mut offset = BLOCK_BYTES;
    while let Ok(batch) = decode_batch(&bytes[offset as usize..]) {
        offsets.push(offset);
        offset += batch.padded_bytes;
    }
    assert!(offsets.len() >= 3, "the newest segment holds several batches");
    // Every batch but the last has a later batch after it in the same segment:
    // only the scan for evidence beyond the break can tell this from a torn tail.
    for &damaged in &offsets[..offsets.len() - 1] {
        let mut bad = disk.clone();
        bad.corrupt_byte(last, damaged + 33, 0x08);
        match recover_store(&mut bad, Some(IDENTITY)) {
            Err(WalError::Corrupt { file, offset_bytes, reason }) => {
                assert_eq!((file, offset_bytes), (segment_file_name(last), damaged), "{reason}");
            }
            other => panic!("damage at {damaged} not refused: {other:?}"),
        }
    }
}

#[test]
fn a_damaged_last_batch_of_a_segment_is_caught_by_the_next_segment_header() {
    let segment_bytes = 64 * 1024;
    let (mut disk, _, _) = disk_with_unsynced_tail(5, 12, segment_bytes);
    disk.crash(CrashMode::LoseUnsynced);
    let segments = disk.list_segments().unwrap();
    let first = disk.durable_bytes(segments[0]).unwrap().to_vec();
    let mut offset = BLOCK_BYTES;
    let mut last = offset;
    while let Ok(batch) = decode_batch(&first[offset as usize..]) {
        last = offset;
        offset += batch.padded_bytes;
    }
    disk.corrupt_byte(segments[0], last + 40, 1);
    let err = recover_store(&mut disk, Some(IDENTITY)).unwrap_err();
    assert!(matches!(&err, WalError::Corrupt { offset_bytes, .. } if *offset_bytes == last), "{err}");
}

#[test]
fn a_segment_of_another_core_is_refused() {
    let (mut wal, _) = reopen(SimDisk::new(), 64 * 1024);
    wal.append(&Record::Truncate { group_id: 1, from_index: 3 }).unwrap();
    wal.flush().unwrap();
    let other = WalConfig::new(WalIdentity { core_id: 9, ..IDENTITY });
    match SyncWal::open(wal.into_store(), WalConfig { segment_bytes: 64 * 1024, ..other }) {
        Err(WalError::ForeignSegment { found, .. }) => assert_eq!(found, IDENTITY),
        other => panic!("expected a foreign segment error, got {other:?}"),
    }
}

#[test]
fn a_missing_middle_segment_is_refused() {
    let (mut disk, _, _) = disk_with_unsynced_tail(3, 40, 64 * 1024);
    let segments = disk.list_segments().unwrap();
    assert!(segments.len() >= 3);
    disk.remove_segment(segments[1]);
    assert!(matches!(recover_store(&mut disk, None), Err(WalError::MissingSegment { .. })));
}

#[test]
fn a_torn_segment_creation_is_recreated() {
    let segment_bytes = 64 * 1024;
    let (mut disk, synced, _) = disk_with_unsynced_tail(21, 3, segment_bytes);
    disk.crash(CrashMode::LoseUnsynced);
    let last = *disk.list_segments().unwrap().last().unwrap();
    // A half-created next segment: garbage header, zeros after.
    let mut bytes = vec![0u8; segment_bytes as usize];
    bytes[..8].copy_from_slice(b"CKVWALSG");
    disk.put_segment(last + 1, bytes);
    let (mut wal, recovered) = reopen(disk, segment_bytes);
    assert_eq!(recovered.resume, ResumePoint::CreateSegment { segment_seq: last + 1 });
    assert_matches_model(&recovered, &model_of(&synced));
    wal.append(&Record::Truncate { group_id: 77, from_index: 1 }).unwrap();
    wal.flush().unwrap();
    let (_, again) = reopen(wal.into_store(), segment_bytes);
    assert!(again.groups.contains_key(&77));
}

#[test]
fn covered_segments_are_recycled_then_deleted_and_state_survives() {
    let segment_bytes = 16 * 1024;
    let (mut wal, _) = reopen(SimDisk::new(), segment_bytes);
    let mut synced: Vec<Vec<Record>> = Vec::new();
    let data = vec![7u8; 1500];
    for index in 1..=400u64 {
        let mut batch = Vec::new();
        for group_id in [1, 2] {
            let entry = Entry { term: 1, index, kind: EntryKind::Normal, data: data.clone() };
            batch.push(Record::Entries { group_id, entries: vec![entry] });
            batch.push(Record::HardState { group_id, hard_state: HardState { term: 1, vote: 1, commit: index } });
            if index % 10 == 0 {
                batch.push(Record::SnapshotMarker { group_id, marker: SnapshotMarker { index: index - 2, term: 1 } });
            }
        }
        append_all(&mut wal, &batch);
        wal.flush().unwrap().unwrap();
        synced.push(batch);
        assert!(
            wal.writer_mut().live_segments().len() <= 6,
            "compaction keeps the WAL bounded: {:?} at {index}",
            wal.writer_mut().live_segments()
        );
    }
    let disk = wal.store_mut();
    assert!(disk.segments_deleted > 10, "old segments are deleted");
    assert!(disk.segments_created > disk.segments_deleted, "some segments were recycled");
    let (_, recovered) = reopen(wal.into_store(), segment_bytes);
    assert_matches_model(&recovered, &model_of(&synced));
    assert_eq!(recovered.groups[&1].hard_state.map(|h| h.commit), Some(400));
}

#[test]
fn an_overlong_record_is_refused_and_a_full_batch_answers_busy() {
    let (mut wal, _) = reopen(SimDisk::new(), 64 * 1024);
    let big = Entry { term: 1, index: 1, kind: EntryKind::Normal, data: vec![0; 40 * 1024] };
    assert!(matches!(
        wal.append(&Record::Entries { group_id: 1, entries: vec![big] }),
        Err(WalError::RecordTooLarge { .. })
    ));
    let mid = |index| Entry { term: 1, index, kind: EntryKind::Normal, data: vec![0; 12 * 1024] };
    wal.append(&Record::Entries { group_id: 1, entries: vec![mid(1)] }).unwrap();
    wal.append(&Record::Entries { group_id: 1, entries: vec![mid(2)] }).unwrap();
    assert!(matches!(wal.append(&Record::Entries { group_id: 1, entries: vec![mid(3)] }), Err(WalError::Busy { .. })));
    wal.flush().unwrap();
    wal.append(&Record::Entries { group_id: 1, entries: vec![mid(3)] }).unwrap();
}

#[test]
fn segment_file_names_round_trip_and_sort_numerically() {
    assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
    assert!(segment_file_name(9) < segment_file_name(10));
    assert_eq!(parse_segment_file_name("42.wal"), None);
    assert_eq!(parse_segment_file_name("00000000000000000042.tmp"), None);
}

#[test]
fn the_committed_fuzz_corpus_replays_without_panics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut replayed = 0;
    for (target, run) in [
        ("wal_decode", fuzzing::decode_any as fn(&[u8])),
        ("wal_recover", fuzzing::recover_any),
        ("snapshot_read", fuzzing::read_snapshot_any),
    ] {
        let dir = root.join(target);
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            run(&std::fs::read(entry.unwrap().path()).unwrap());
            replayed += 1;
        }
    }
    assert!(replayed >= 9, "the corpus is committed");
}

fn arb_entry_run() -> impl Strategy<Value = Vec<Entry>> {
    (1u64..1000, 1usize..5, proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(first, n, data)| {
        (0..n as u64)
            .map(|i| Entry { term: first / 2 + i, index: first + i, kind: EntryKind::ConfChange, data: data.clone() })
            .collect()
    })
}

fn arb_record() -> impl Strategy<Value = Record> {
    prop_oneof![
        (any::<u64>(), arb_entry_run()).prop_map(|(group_id, entries)| Record::Entries { group_id, entries }),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(group_id, term, vote, commit)| {
            Record::HardState { group_id, hard_state: HardState { term, vote, commit } }
        }),
        (any::<u64>(), 1u64..).prop_map(|(group_id, from_index)| Record::Truncate { group_id, from_index }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(group_id, index, term)| {
            Record::SnapshotMarker { group_id, marker: SnapshotMarker { index, term } }
        }),
        any::<u64>().prop_map(|group_id| Record::DropGroup { group_id }),
        (any::<u64>(), any::<u64>()).prop_map(|(group_id, since)| Record::HandoffInstalled { group_id, since }),
    ]
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(records in proptest::collection::vec(arb_record(), 1..20), seq in any::<u64>()) {
        let mut payload = Vec::new();
        for r in &records {
            encode_record(r, &mut payload);
        }
        let bytes = encode_batch(seq, 3, records.len() as u32, &payload);
        let batch = decode_batch(&bytes).unwrap();
        prop_assert_eq!(batch.records, records);
        prop_assert_eq!(batch.batch_seq, seq);
    }

    #[test]
    fn recovery_matches_the_model_of_synced_batches(seed in any::<u64>(), rounds in 1usize..25, crash_every in 2u64..6) {
        let segment_bytes = 32 * 1024;
        let mut g = Gen(seed);
        let (mut wal, _) = reopen(SimDisk::new(), segment_bytes);
        let mut synced: Vec<Vec<Record>> = Vec::new();
        for round in 0..rounds as u64 {
            let batch = random_batch(&mut g, &model_of(&synced), 5, 4, 600);
            append_all(&mut wal, &batch);
            if round % crash_every == crash_every - 1 {
                // Written, not synced, then a crash with a seeded tear.
                let io = wal.writer_mut().start_batch().unwrap();
                for c in io.commands.iter().take_while(|c| !matches!(c, IoCommand::Sync { .. })) {
                    wal.store_mut().execute(c).unwrap();
                }
                let mut disk = wal.into_store();
                disk.crash(CrashMode::Seeded { seed: g.next() });
                let (w, recovered) = reopen(disk, segment_bytes);
                keep_tail_if_whole(&recovered, &mut synced, batch);
                assert_matches_model(&recovered, &model_of(&synced));
                wal = w;
            } else {
                wal.flush().unwrap().unwrap();
                synced.push(batch);
            }
        }
        let (_, recovered) = reopen(wal.into_store(), segment_bytes);
        assert_matches_model(&recovered, &model_of(&synced));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(data in proptest::collection::vec(any::<u8>(), 0..9000)) {
        fuzzing::decode_any(&data);
        fuzzing::recover_any(&data);
        fuzzing::read_snapshot_any(&data);
    }

    #[test]
    fn a_valid_segment_with_arbitrary_tail_bytes_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..12000), first in 1u64..5) {
        let mut bytes = encode_segment_header(&format::SegmentHeader {
            format_version: format::FORMAT_VERSION,
            identity: IDENTITY,
            segment_seq: 1,
            first_batch_seq: first,
            segment_bytes: 4 * BLOCK_BYTES,
        });
        bytes.extend_from_slice(&tail);
        let _ = recover(None, &[SegmentFile { file_name: "x", segment_seq: 1, bytes: &bytes }]);
    }
}

#[test]
fn a_departed_group_releases_its_segments_by_truncating_from_1() {
    let segment_bytes = 16 * 1024;
    let (mut wal, _) = reopen(SimDisk::new(), segment_bytes);
    let entry = |index| Entry { term: 1, index, kind: EntryKind::Normal, data: vec![1; 3000] };
    // Group 1 never snapshots: it pins every segment it wrote to.
    for index in 1..=20 {
        wal.append(&Record::Entries { group_id: 1, entries: vec![entry(index)] }).unwrap();
        wal.flush().unwrap();
    }
    let pinned = wal.writer_ref().live_segments().len();
    assert!(pinned >= 5);
    // The group leaves the core.
    wal.append(&Record::Truncate { group_id: 1, from_index: 1 }).unwrap();
    wal.flush().unwrap();
    assert!(wal.writer_ref().live_segments().len() <= 2, "{:?}", wal.writer_ref().live_segments());
    let (_, recovered) = reopen(wal.into_store(), segment_bytes);
    assert!(recovered.groups[&1].entries.is_empty());
}

// ----- regressions found by review ------------------------------------------

/// A crash after a rolling batch's Sync but before that batch's trailing
/// DeleteSegment (queued by the previous batch's compaction) leaves a gap in the
/// segment numbers: the roll renamed the pool's oldest *kept* segment while the
/// older, to-be-deleted one was still on disk. Recovery then refuses the whole
/// WAL with MissingSegment and the node cannot start.
#[test]
fn crash_between_recycle_and_queued_delete_leaves_no_gap() {
    let segment_bytes = 16 * 1024;
    let entry = |index| Entry { term: 1, index, kind: EntryKind::Normal, data: vec![7; 3000] };
    for warmup in 10..30u64 {
        let (mut wal, _) = reopen(SimDisk::new(), segment_bytes);
        // Many segments accumulate (no snapshot yet) ...
        for index in 1..=warmup {
            wal.append(&Record::Entries { group_id: 1, entries: vec![entry(index)] }).unwrap();
            wal.flush().unwrap().unwrap();
        }
        // ... then one snapshot marker covers most of them at once.
        wal.append(&Record::Entries { group_id: 1, entries: vec![entry(warmup + 1)] }).unwrap();
        wal.append(&Record::SnapshotMarker { group_id: 1, marker: SnapshotMarker { index: warmup - 3, term: 1 } })
            .unwrap();
        wal.flush().unwrap().unwrap();
        wal.append(&Record::Entries { group_id: 1, entries: vec![entry(warmup + 2)] }).unwrap();
        let batch = wal.writer_mut().start_batch().unwrap();
        let recycles =
            batch.commands.iter().any(|c| matches!(c, IoCommand::CreateSegment { recycle_from: Some(_), .. }));
        let deletes = batch.commands.iter().any(|c| matches!(c, IoCommand::DeleteSegment { .. }));
        if !(recycles && deletes) {
            continue;
        }
        // Everything up to and including the Sync runs (the batch is durable),
        // then the machine crashes before the housekeeping deletes.
        for command in &batch.commands {
            if matches!(command, IoCommand::DeleteSegment { .. }) {
                break;
            }
            wal.store_mut().execute(command).unwrap();
        }
        let mut disk = wal.into_store();
        disk.crash(CrashMode::LoseUnsynced);
        let listed = disk.list_segments().unwrap();
        let reopened = SyncWal::open(disk, config(segment_bytes));
        assert!(
            reopened.is_ok(),
            "commands {:?}\nfiles {listed:?}: {:?}",
            describe_all(&batch.commands),
            reopened.err()
        );
        return;
    }
    panic!("workload never produced a recycling batch carrying a delete");
}

fn describe_all(commands: &[IoCommand]) -> Vec<String> {
    commands.iter().map(describe).collect()
}

/// A media error in the header block of the only segment is taken for a torn
/// segment creation: recovery returns an empty log (every acknowledged record
/// silently dropped) and the writer then recreates the segment over it.
#[test]
fn damaged_header_of_the_only_segment_is_not_a_torn_creation() {
    let segment_bytes = 64 * 1024;
    let (mut wal, _) = reopen(SimDisk::new(), segment_bytes);
    for index in 1..=3u64 {
        let entry = Entry { term: 1, index, kind: EntryKind::Normal, data: vec![9; 100] };
        wal.append(&Record::Entries { group_id: 5, entries: vec![entry] }).unwrap();
        wal.append(&Record::HardState { group_id: 5, hard_state: HardState { term: 1, vote: 1, commit: index } })
            .unwrap();
        wal.flush().unwrap().unwrap(); // acknowledged
    }
    let mut disk = wal.into_store();
    assert_eq!(disk.list_segments().unwrap(), vec![1]);
    assert!(disk.corrupt_byte(1, 20, 0x01)); // node_id byte of the header: CRC now fails
    match SyncWal::open(disk, config(segment_bytes)) {
        Err(WalError::Corrupt { .. }) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok((_, recovered)) => panic!(
            "acknowledged batches silently dropped: groups {:?}, resume {:?}",
            recovered.groups.keys().collect::<Vec<_>>(),
            recovered.resume
        ),
    }
}

/// Sequence/index arithmetic on CRC-valid but hostile bytes overflows (a panic
/// in debug/test builds, a silent wrap in release): the decoder's "never panics
/// on any input" invariant does not hold.
#[test]
fn crc_valid_extreme_indexes_do_not_panic_recovery() {
    use super::format::{FORMAT_VERSION, SegmentHeader};
    let header = SegmentHeader {
        format_version: FORMAT_VERSION,
        identity: IDENTITY,
        segment_seq: 1,
        first_batch_seq: 1,
        segment_bytes: 4 * BLOCK_BYTES,
    };
    let mut payload = Vec::new();
    encode_record(
        &Record::SnapshotMarker { group_id: 1, marker: SnapshotMarker { index: u64::MAX, term: 1 } },
        &mut payload,
    );
    let entry = Entry { term: 1, index: 1, kind: EntryKind::Normal, data: vec![] };
    encode_record(&Record::Entries { group_id: 1, entries: vec![entry] }, &mut payload);
    let mut bytes = encode_segment_header(&header);
    bytes.extend(encode_batch(1, 1, 2, &payload));
    bytes.resize(4 * BLOCK_BYTES as usize, 0);
    let result = std::panic::catch_unwind(|| {
        recovery::recover(Some(IDENTITY), &[SegmentFile { file_name: "x", segment_seq: 1, bytes: &bytes }]).is_ok()
    });
    assert!(result.is_ok(), "recovery panicked on CRC-valid bytes");
}

/// Recovery reads a segment only up to the size in its header. After a restart
/// with a larger segment_bytes, batches appended past the old size were
/// acknowledged but silently cut off at the next recovery.
#[test]
fn a_larger_segment_size_after_restart_loses_no_acknowledged_batch() {
    let (mut wal, _) = reopen(SimDisk::new(), 64 * 1024);
    let entry = |index| Entry { term: 1, index, kind: EntryKind::Normal, data: vec![3; 3900] };
    wal.append(&Record::Entries { group_id: 1, entries: vec![entry(1)] }).unwrap();
    wal.flush().unwrap().unwrap();
    // The operator raises segment_bytes and restarts.
    let (mut wal, _) = reopen(wal.into_store(), 128 * 1024);
    for index in 2..=25 {
        wal.append(&Record::Entries { group_id: 1, entries: vec![entry(index)] }).unwrap();
        let durable = wal.flush().unwrap().unwrap();
        assert_eq!(durable.last_entry_index.get(&1), Some(&index)); // acknowledged
    }
    let (_, recovered) = reopen(wal.into_store(), 128 * 1024);
    assert_eq!(recovered.groups[&1].entries.last().map(|e| e.index), Some(25), "acknowledged entries lost");
}

/// Fail-stop (found in review): after an I/O error the writer kept the failed
/// batch "in flight" forever while appends succeeded and `flush` answered
/// Ok(None) with records pending: a driver that did not crash on the first error
/// was told nothing was wrong, and the records never became durable.
#[test]
fn flush_after_a_failed_io_does_not_report_nothing_pending() {
    let segment_bytes = 64 * 1024;
    let (mut wal, _) = reopen(SimDisk::new(), segment_bytes);
    wal.append(&Record::Truncate { group_id: 1, from_index: 1 }).unwrap();
    wal.flush().unwrap();
    // The segment vanishes (e.g. EIO / ENOENT on write): the next flush fails.
    wal.store_mut().remove_segment(1);
    wal.append(&Record::Truncate { group_id: 1, from_index: 2 }).unwrap();
    assert!(wal.flush().is_err());
    // Later records: accepted, then "nothing to flush".
    let appended = wal.append(&Record::Truncate { group_id: 1, from_index: 3 });
    let flushed = wal.flush();
    assert!(
        appended.is_err() || flushed.is_err(),
        "after a failed I/O the WAL reports success: append {appended:?}, flush {flushed:?} with {} records pending",
        wal.writer_ref().pending_records()
    );
}
