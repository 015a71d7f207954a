//! Snapshot file tests: round trip, torn temporary files, corrupt chunks,
//! truncation, and arbitrary bytes.

use std::path::PathBuf;

use corekv_rpc::raft::{ConfState, SnapshotMeta};
use proptest::prelude::*;

use super::*;

fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("corekv-snap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn header(group_id: u64) -> SnapshotHeader {
    SnapshotHeader {
        cluster_id: 0xABCD,
        group_id,
        meta: SnapshotMeta { index: 42, term: 7, conf: ConfState { voters: vec![1, 2, 3], learners: vec![9] } },
    }
}

fn chunk_data(i: u64) -> Vec<u8> {
    (0..(i * 997 % 5000)).map(|b| (b ^ i) as u8).collect()
}

fn write_snapshot(dir: &std::path::Path, group_id: u64, chunks: u64) -> PathBuf {
    let mut writer = SnapshotWriter::create(dir, &header(group_id)).unwrap();
    for i in 0..chunks {
        writer.write_chunk(&chunk_data(i)).unwrap();
    }
    writer.finish().unwrap()
}

#[test]
fn a_snapshot_reads_back_chunk_by_chunk_with_offsets() {
    let dir = test_dir("round");
    let path = write_snapshot(&dir, 5, 12);
    assert_eq!(path, dir.join(snapshot_file_name(5)));
    let mut reader = SnapshotReader::open(&path).unwrap();
    assert_eq!(reader.header(), &header(5));
    let mut offset = 0;
    for i in 0..12 {
        let chunk = reader.next_chunk().unwrap().expect("a chunk");
        assert_eq!((chunk.data_offset, &chunk.data), (offset, &chunk_data(i)));
        assert_eq!(chunk.crc, crc32fast::hash(&chunk.data));
        offset += chunk.data.len() as u64;
    }
    assert_eq!(reader.next_chunk().unwrap(), None);
    assert_eq!(verify_file(&path).unwrap().data_bytes, offset);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_torn_temporary_file_is_never_listed_and_is_removed_on_restart() {
    let dir = test_dir("torn");
    let complete = write_snapshot(&dir, 1, 3);
    // A crash mid-write of a newer snapshot of the same group: only the temp file.
    let mut torn = SnapshotWriter::create(&dir, &header(1)).unwrap();
    torn.write_chunk(&[1; 100]).unwrap();
    drop(torn);
    assert_eq!(list_snapshots(&dir).unwrap(), vec![complete.clone()]);
    let removed = remove_temp_files(&dir).unwrap();
    assert_eq!(removed.len(), 1);
    assert!(verify_file(&complete).is_ok(), "the older complete snapshot is intact");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_corrupt_chunk_is_reported_with_file_and_offset() {
    let dir = test_dir("corrupt");
    let path = write_snapshot(&dir, 2, 4);
    let header_bytes = encode_header(&header(2)).unwrap().len() as u64;
    let second_frame = header_bytes + FRAME_HEADER_BYTES + chunk_data(0).len() as u64;
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(second_frame + FRAME_HEADER_BYTES + 10) as usize] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let mut reader = SnapshotReader::open(&path).unwrap();
    assert!(reader.next_chunk().unwrap().is_some(), "the first chunk is fine");
    match reader.next_chunk() {
        Err(SnapError::Corrupt { file, offset_bytes, .. }) => {
            assert_eq!(file, path.display().to_string());
            assert_eq!(offset_bytes, second_frame);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_truncated_snapshot_is_corrupt_not_short() {
    let dir = test_dir("truncated");
    let path = write_snapshot(&dir, 3, 4);
    let bytes = std::fs::read(&path).unwrap();
    for cut in [bytes.len() - 1, bytes.len() - 20, 70, 10] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        assert!(matches!(verify_file(&path), Err(SnapError::Corrupt { .. })), "cut at {cut}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn oversized_lengths_are_refused_before_allocation() {
    let mut bytes = encode_header(&header(4)).unwrap();
    bytes.extend_from_slice(&FRAME_CHUNK.to_le_bytes());
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    match verify_reader(&bytes[..], "x") {
        Err(SnapError::Corrupt { offset_bytes, reason, .. }) => {
            assert!(reason.contains("over its limit"), "{reason}");
            assert_eq!(offset_bytes, encode_header(&header(4)).unwrap().len() as u64);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        SnapshotWriter::create(&test_dir("big"), &header(4)).unwrap().write_chunk(&vec![
            0;
            SNAP_CHUNK_BYTES_MAX as usize
                + 1
        ]),
        Err(SnapError::ChunkTooLarge { .. })
    ));
    let _ = std::fs::remove_dir_all(test_dir("big"));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_snapshot_reader(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = verify_reader(&data[..], "fuzz");
        let mut with_header = encode_header(&header(1)).unwrap();
        with_header.extend_from_slice(&data);
        let _ = verify_reader(&with_header[..], "fuzz");
    }
}
