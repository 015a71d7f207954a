//! The drop-group record: a core forgets a group whose replica moved away,
//! durably, releases the segments the group held, and reports the drop.

use std::collections::BTreeSet;

use corekv_rpc::raft::{Entry, EntryKind, HardState};

use super::super::format::{
    BLOCK_BYTES, FORMAT_VERSION, FORMAT_VERSION_OLDEST_READ, FormatError, SegmentHeader, decode_batch,
    decode_segment_header, encode_batch, encode_record, encode_segment_header,
};
use super::super::*;
use super::{IDENTITY, config, reopen};

fn entry(index: u64, term: u64, data_bytes: usize) -> Entry {
    Entry { term, index, kind: EntryKind::Normal, data: vec![index as u8; data_bytes] }
}

fn hard_state(term: u64, commit: u64) -> HardState {
    HardState { term, vote: 1, commit }
}

/// Appends the records and makes them one durable batch.
fn write_batch(wal: &mut SyncWal<SimDisk>, records: &[Record]) -> DurableBatch {
    for record in records {
        wal.append(record).expect("append");
    }
    wal.flush().expect("flush").expect("a batch")
}

fn recover_copy(wal: &SyncWal<SimDisk>) -> Recovered {
    recover_store(&mut wal.store().clone(), Some(IDENTITY)).expect("recovery succeeds")
}

#[test]
fn a_drop_group_record_round_trips_with_an_empty_body() {
    let record = Record::DropGroup { group_id: 0xDEAD_BEEF };
    assert_eq!(record.group_id(), 0xDEAD_BEEF);
    let mut payload = Vec::new();
    encode_record(&record, &mut payload);
    assert_eq!(payload.len(), 16, "a record header and nothing else");
    assert_eq!(record.encoded_bytes(), 16);
    assert_eq!(payload[4], 5, "kind byte");
    let batch = decode_batch(&encode_batch(1, 1, 1, &payload)).expect("decode");
    assert_eq!(batch.records, vec![record.clone()]);
    assert_eq!(record.to_string(), "group 3735928559 drop_group");
}

#[test]
fn a_drop_group_record_with_a_body_is_refused() {
    // Kind 5 claiming 8 body bytes, inside a batch whose CRC is valid.
    let mut payload = Vec::new();
    payload.extend_from_slice(&8u32.to_le_bytes());
    payload.extend_from_slice(&[5, 0, 0, 0]);
    payload.extend_from_slice(&7u64.to_le_bytes());
    payload.extend_from_slice(&1u64.to_le_bytes());
    match decode_batch(&encode_batch(1, 1, 1, &payload)) {
        Err(FormatError::InvalidField { field: "record body length", offset, value: 8 }) => {
            assert_eq!(offset, 32 + 16, "the error points at the unexpected body");
        }
        other => panic!("a drop-group record with a body was not refused: {other:?}"),
    }
}

#[test]
fn recovery_forgets_a_dropped_group_and_lists_it() {
    let (mut wal, _) = reopen(SimDisk::new(), 64 * 1024);
    write_batch(
        &mut wal,
        &[
            Record::Entries { group_id: 1, entries: vec![entry(1, 1, 10), entry(2, 1, 10), entry(3, 2, 10)] },
            Record::HardState { group_id: 1, hard_state: hard_state(2, 3) },
            Record::SnapshotMarker { group_id: 1, marker: SnapshotMarker { index: 1, term: 1 } },
            Record::Truncate { group_id: 1, from_index: 3 },
            Record::Entries { group_id: 2, entries: vec![entry(1, 1, 10)] },
        ],
    );
    write_batch(&mut wal, &[Record::DropGroup { group_id: 1 }]);
    let (_, recovered) = reopen(wal.into_store(), 64 * 1024);
    assert_eq!(recovered.groups.keys().copied().collect::<Vec<_>>(), vec![2]);
    assert_eq!(recovered.dropped, BTreeSet::from([1]));
    let summary = &recovered.segments[0];
    assert_eq!(summary.group_max_index.get(&1), Some(&0), "the dropped group's entries no longer count");
    assert_eq!(summary.group_max_index.get(&2), Some(&1));
}

#[test]
fn a_group_added_back_after_its_drop_recovers_only_the_new_records() {
    let (mut wal, _) = reopen(SimDisk::new(), 64 * 1024);
    let old = |group_id| {
        [
            Record::Entries { group_id, entries: (1..=5).map(|i| entry(i, 3, 40)).collect() },
            Record::HardState { group_id, hard_state: hard_state(3, 5) },
            Record::SnapshotMarker { group_id, marker: SnapshotMarker { index: 4, term: 3 } },
        ]
    };
    let fresh = |group_id| {
        [
            Record::HardState { group_id, hard_state: hard_state(7, 0) },
            Record::Entries { group_id, entries: vec![entry(1, 7, 3), entry(2, 7, 3)] },
        ]
    };
    // Group 1 is added back in a later batch, group 2 within the batch of its drop.
    write_batch(&mut wal, &[old(1), old(2)].concat());
    write_batch(
        &mut wal,
        &[vec![Record::DropGroup { group_id: 1 }, Record::DropGroup { group_id: 2 }], fresh(2).to_vec()].concat(),
    );
    write_batch(&mut wal, &fresh(1));
    let (_, recovered) = reopen(wal.into_store(), 64 * 1024);
    assert!(recovered.dropped.is_empty(), "added back: {:?}", recovered.dropped);
    for group_id in [1, 2] {
        let group = &recovered.groups[&group_id];
        assert_eq!(group.hard_state, Some(hard_state(7, 0)), "group {group_id}");
        assert_eq!(group.snapshot, None, "group {group_id}: the old replica's marker is void");
        assert_eq!(group.entries, vec![entry(1, 7, 3), entry(2, 7, 3)], "group {group_id}");
    }
}

#[test]
fn a_drop_voids_the_entries_its_batch_wrote_before_it() {
    let (mut wal, _) = reopen(SimDisk::new(), 64 * 1024);
    let durable = write_batch(
        &mut wal,
        &[
            Record::Entries { group_id: 3, entries: vec![entry(1, 1, 0)] },
            Record::DropGroup { group_id: 5 },
            Record::DropGroup { group_id: 3 },
            Record::DropGroup { group_id: 4 },
            Record::HardState { group_id: 4, hard_state: hard_state(1, 0) },
            Record::Entries { group_id: 6, entries: vec![entry(1, 1, 0)] },
        ],
    );
    assert_eq!(durable.last_entry_index.keys().copied().collect::<Vec<_>>(), vec![6], "entries of 3 are void");
    let (_, recovered) = reopen(wal.into_store(), 64 * 1024);
    assert_eq!(recovered.dropped.iter().copied().collect::<Vec<_>>(), vec![3, 5], "4 was added back in the batch");
}

/// Group 1 writes entries and never snapshots, pinning every segment it wrote to,
/// then leaves the core.
fn wal_pinned_by_group_1(segment_bytes: u64) -> SyncWal<SimDisk> {
    let (mut wal, _) = reopen(SimDisk::new(), segment_bytes);
    for index in 1..=20 {
        write_batch(&mut wal, &[Record::Entries { group_id: 1, entries: vec![entry(index, 1, 3000)] }]);
    }
    assert!(wal.writer_ref().live_segments().len() >= 5, "{:?}", wal.writer_ref().live_segments());
    wal
}

#[test]
fn segments_holding_only_a_dropped_group_are_recycled() {
    let segment_bytes = 16 * 1024;
    let mut wal = wal_pinned_by_group_1(segment_bytes);
    let files_before = wal.store_mut().list_segments().unwrap().len();
    write_batch(&mut wal, &[Record::DropGroup { group_id: 1 }]);
    assert!(wal.writer_ref().live_segments().len() <= 2, "{:?}", wal.writer_ref().live_segments());
    // The deletions run with the next batch, or now when the driver is idle.
    for command in wal.writer_mut().take_housekeeping() {
        wal.store_mut().execute(&command).unwrap();
    }
    let files_after = wal.store_mut().list_segments().unwrap().len();
    assert!(files_after <= 2 + config(segment_bytes).recycle_segments_max, "{files_after} segment files");
    assert!(files_after < files_before, "disk use falls: {files_before} -> {files_after} segment files");
    let (_, recovered) = reopen(wal.into_store(), segment_bytes);
    assert!(!recovered.groups.contains_key(&1));
    assert_eq!(recovered.dropped, BTreeSet::from([1]));
}

#[test]
fn a_writer_recovered_after_a_drop_recycles_the_segments_it_released() {
    let segment_bytes = 16 * 1024;
    let mut wal = wal_pinned_by_group_1(segment_bytes);
    let pinned = wal.writer_ref().live_segments().len();
    // The drop is synced, then the node crashes before the writer learns it.
    wal.append(&Record::DropGroup { group_id: 1 }).unwrap();
    let batch = wal.writer_mut().start_batch().unwrap();
    for command in &batch.commands {
        wal.store_mut().execute(command).unwrap();
    }
    let mut disk = wal.into_store();
    disk.crash(CrashMode::LoseUnsynced);
    let (wal, recovered) = reopen(disk, segment_bytes);
    assert_eq!(recovered.segments.len(), pinned);
    assert!(wal.writer_ref().live_segments().len() <= 2, "{:?}", wal.writer_ref().live_segments());
}

#[test]
fn a_checkpoint_after_a_drop_does_not_bring_the_group_back() {
    let segment_bytes = 16 * 1024;
    let (mut wal, _) = reopen(SimDisk::new(), segment_bytes);
    write_batch(
        &mut wal,
        &[
            Record::Entries { group_id: 1, entries: vec![entry(1, 1, 100), entry(2, 1, 100)] },
            Record::HardState { group_id: 1, hard_state: hard_state(1, 2) },
            Record::SnapshotMarker { group_id: 1, marker: SnapshotMarker { index: 1, term: 1 } },
        ],
    );
    write_batch(&mut wal, &[Record::DropGroup { group_id: 1 }]);
    let drop_segment = *wal.writer_ref().live_segments().last().unwrap();
    // Group 2 keeps writing and snapshotting: segments roll (each starting with a
    // checkpoint) and compaction releases the drop's segment.
    let mut rolled = false;
    for index in 1..=30u64 {
        let mut batch = vec![
            Record::Entries { group_id: 2, entries: vec![entry(index, 1, 3000)] },
            Record::HardState { group_id: 2, hard_state: hard_state(1, index) },
        ];
        if index % 3 == 0 {
            batch.push(Record::SnapshotMarker { group_id: 2, marker: SnapshotMarker { index, term: 1 } });
        }
        write_batch(&mut wal, &batch);
        if !rolled && wal.writer_ref().live_segments().last() != Some(&drop_segment) {
            rolled = true;
            let recovered = recover_copy(&wal);
            assert!(!recovered.groups.contains_key(&1), "the first checkpoint after the drop names group 1");
            assert_eq!(recovered.dropped, BTreeSet::from([1]));
        }
    }
    assert!(rolled);
    let on_disk = wal.store_mut().list_segments().unwrap();
    assert!(on_disk[0] > drop_segment, "the drop's segment was released: {on_disk:?}");
    let (_, recovered) = reopen(wal.into_store(), segment_bytes);
    assert!(!recovered.groups.contains_key(&1), "a checkpoint brought group 1 back");
    assert!(recovered.dropped.is_empty(), "the drop went with its segment");
    assert_eq!(recovered.groups[&2].hard_state, Some(hard_state(1, 30)));
}

/// A group added back must not pass for covered by the snapshot of the replica
/// that was dropped: its new entries keep their segments. The old snapshot's
/// marker is durable in an earlier batch (`marker_in_drop_batch` false) or in the
/// drop's own batch, before the drop.
fn added_back_entries_keep_their_segments(marker_in_drop_batch: bool) {
    let segment_bytes = 16 * 1024;
    let (mut wal, _) = reopen(SimDisk::new(), segment_bytes);
    let entries = |range: std::ops::RangeInclusive<u64>| range.map(|i| entry(i, 1, 10)).collect::<Vec<_>>();
    let old_marker = Record::SnapshotMarker { group_id: 1, marker: SnapshotMarker { index: 10, term: 1 } };
    let mut first = vec![Record::Entries { group_id: 1, entries: entries(1..=10) }];
    let mut second = vec![Record::DropGroup { group_id: 1 }, Record::Entries { group_id: 1, entries: entries(1..=3) }];
    if marker_in_drop_batch {
        second.insert(0, old_marker);
    } else {
        first.push(old_marker);
    }
    write_batch(&mut wal, &first);
    write_batch(&mut wal, &second);
    let added_back_segment = *wal.writer_ref().live_segments().last().unwrap();
    // Group 2's entries are covered as soon as written: only group 1 can hold
    // segments back.
    for index in 1..=30u64 {
        let mut batch = vec![Record::Entries { group_id: 2, entries: vec![entry(index, 1, 3000)] }];
        batch.push(Record::SnapshotMarker { group_id: 2, marker: SnapshotMarker { index, term: 1 } });
        write_batch(&mut wal, &batch);
    }
    let live = wal.writer_ref().live_segments();
    assert!(live[0] <= added_back_segment, "the segment of the new entries was released: {live:?}");
    let (_, recovered) = reopen(wal.into_store(), segment_bytes);
    let group = &recovered.groups[&1];
    assert_eq!(group.snapshot, None);
    assert_eq!(group.entries, entries(1..=3), "entries of the new replica lost");
}

#[test]
fn added_back_entries_outlive_a_snapshot_marker_of_an_earlier_batch() {
    added_back_entries_keep_their_segments(false);
}

#[test]
fn added_back_entries_outlive_a_snapshot_marker_before_the_drop_in_its_batch() {
    added_back_entries_keep_their_segments(true);
}

fn header(format_version: u32) -> SegmentHeader {
    SegmentHeader { format_version, identity: IDENTITY, segment_seq: 1, first_batch_seq: 1, segment_bytes: 1 << 16 }
}

#[test]
fn version_1_segment_headers_still_decode() {
    assert_eq!(FORMAT_VERSION, 3);
    let v1 = header(FORMAT_VERSION_OLDEST_READ);
    assert_eq!(decode_segment_header(&encode_segment_header(&v1)), Ok(v1));
    for version in [0, FORMAT_VERSION + 1] {
        let refused = decode_segment_header(&encode_segment_header(&header(version)));
        assert_eq!(refused, Err(FormatError::UnsupportedVersion { found: version }));
        assert!(refused.unwrap_err().to_string().contains("reads 1 to 3"));
    }
}

/// A segment as a version 1 build wrote it: one batch of `records`.
fn version_1_segment(records: &[Record], segment_bytes: u64) -> Vec<u8> {
    let mut payload = Vec::new();
    for record in records {
        encode_record(record, &mut payload);
    }
    let mut bytes = encode_segment_header(&SegmentHeader { segment_bytes, ..header(FORMAT_VERSION_OLDEST_READ) });
    bytes.extend(encode_batch(1, 1, records.len() as u32, &payload));
    bytes.resize(segment_bytes as usize, 0);
    bytes
}

#[test]
fn a_version_1_wal_recovers_and_is_continued_in_a_version_2_segment() {
    let segment_bytes = 64 * 1024;
    let mut disk = SimDisk::new();
    let old = [
        Record::Entries { group_id: 1, entries: vec![entry(1, 1, 10)] },
        Record::HardState { group_id: 1, hard_state: hard_state(1, 1) },
    ];
    disk.put_segment(1, version_1_segment(&old, segment_bytes));
    let (mut wal, recovered) = reopen(disk, segment_bytes);
    assert_eq!(recovered.groups[&1].entries, vec![entry(1, 1, 10)]);
    write_batch(&mut wal, &[Record::DropGroup { group_id: 1 }]);
    let first = version_1_segment(&old, segment_bytes);
    assert_eq!(wal.store().durable_bytes(1), Some(&first[..]), "nothing appended to the version 1 segment");
    let second = wal.store().durable_bytes(2).unwrap();
    assert_eq!(decode_segment_header(second).map(|h| h.format_version), Ok(FORMAT_VERSION));
    let (_, recovered) = reopen(wal.into_store(), segment_bytes);
    assert!(recovered.groups.is_empty());
    assert_eq!(recovered.dropped, BTreeSet::from([1]));
}

#[test]
fn a_drop_group_record_in_a_version_1_segment_is_corruption() {
    let segment_bytes = 64 * 1024;
    let mut disk = SimDisk::new();
    disk.put_segment(1, version_1_segment(&[Record::DropGroup { group_id: 1 }], segment_bytes));
    match SyncWal::open(disk, config(segment_bytes)) {
        Err(WalError::Corrupt { offset_bytes, reason, .. }) => {
            assert_eq!(offset_bytes, BLOCK_BYTES, "{reason}");
            assert!(reason.contains("format version 1"), "{reason}");
        }
        other => panic!("a drop-group record in a version 1 segment was accepted: {:?}", other.map(|(_, r)| r)),
    }
}

#[test]
fn a_hand_off_record_in_a_version_2_segment_is_corruption() {
    let segment_bytes = 64 * 1024;
    let mut disk = SimDisk::new();
    let mut bytes = version_1_segment(&[Record::HandoffInstalled { group_id: 1, since: 4 }], segment_bytes);
    let v2 = encode_segment_header(&SegmentHeader { segment_bytes, ..header(2) });
    bytes[..v2.len()].copy_from_slice(&v2);
    disk.put_segment(1, bytes);
    match SyncWal::open(disk, config(segment_bytes)) {
        Err(WalError::Corrupt { reason, .. }) => assert!(reason.contains("format version 2"), "{reason}"),
        other => panic!("a hand-off record in a version 2 segment was accepted: {:?}", other.map(|(_, r)| r)),
    }
}

/// A hand-off record outlives the segment it was written in: every new
/// segment's checkpoint names it again, until the group is dropped.
#[test]
fn a_hand_off_record_survives_segment_rolls_until_its_group_is_dropped() {
    let segment_bytes = 16 * 1024;
    let (mut wal, _) = reopen(SimDisk::new(), segment_bytes);
    write_batch(&mut wal, &[Record::HandoffInstalled { group_id: 5, since: 9 }]);
    // Group 1 fills segments and snapshots, so the first ones are released.
    for i in 1..=40u64 {
        write_batch(&mut wal, &[Record::Entries { group_id: 1, entries: vec![entry(i, 1, 1000)] }]);
        if i % 8 == 0 {
            write_batch(
                &mut wal,
                &[Record::SnapshotMarker { group_id: 1, marker: SnapshotMarker { index: i, term: 1 } }],
            );
        }
    }
    assert!(wal.writer_ref().live_segments()[0] > 1, "the first segment was released");
    let (mut wal, recovered) = reopen(wal.into_store(), segment_bytes);
    assert_eq!(recovered.groups[&5].handoff_since, Some(9));
    write_batch(&mut wal, &[Record::DropGroup { group_id: 5 }]);
    let (_, recovered) = reopen(wal.into_store(), segment_bytes);
    assert!(!recovered.groups.contains_key(&5));
}

#[test]
fn past_the_live_segment_target_the_groups_keeping_the_oldest_segment_are_named_until_a_snapshot_covers_them() {
    let segment_bytes = 16 * 1024;
    let (mut wal, _) = reopen(SimDisk::new(), segment_bytes);
    // Group 7 writes two entries and goes quiet; group 1 keeps writing and
    // snapshots after every entry.
    write_batch(&mut wal, &[Record::Entries { group_id: 7, entries: vec![entry(1, 1, 10), entry(2, 1, 10)] }]);
    let target = 4;
    let mut index = 0;
    while wal.writer_ref().live_segments().len() <= target {
        assert!(wal.writer_ref().pinning_groups(target).is_empty(), "within the target nothing is named");
        index += 1;
        write_batch(
            &mut wal,
            &[
                Record::Entries { group_id: 1, entries: vec![entry(index, 1, 3000)] },
                Record::SnapshotMarker { group_id: 1, marker: SnapshotMarker { index, term: 1 } },
            ],
        );
    }
    assert_eq!(wal.writer_ref().pinning_groups(target), vec![(7, 2)], "only group 7 keeps the oldest segment");
    // A marker not yet durable does not count; once durable, the segments go.
    wal.append(&Record::SnapshotMarker { group_id: 7, marker: SnapshotMarker { index: 2, term: 1 } }).unwrap();
    assert_eq!(wal.writer_ref().pinning_groups(target), vec![(7, 2)]);
    wal.flush().expect("flush").expect("a batch");
    assert!(wal.writer_ref().live_segments().len() <= 2, "{:?}", wal.writer_ref().live_segments());
    assert!(wal.writer_ref().pinning_groups(target).is_empty());
}
