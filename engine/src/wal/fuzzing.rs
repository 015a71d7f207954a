//! Entry points (WAL and snapshot decoders) shared by the cargo-fuzz targets (`engine/fuzz`) and the stable
//! test suite, which replays the committed corpus and runs proptest over arbitrary
//! bytes through the same functions (DESIGN §11).
//!
//! Owns nothing; pure. Each function must return for any input, never panic and
//! never allocate more than a small multiple of the input.

use super::format::{decode_batch, decode_segment_header};
use super::recovery::{Recovery, SegmentFile};

/// Decodes `data` as a segment header and as a batch (both may fail).
pub fn decode_any(data: &[u8]) {
    let _ = decode_segment_header(data);
    let _ = decode_batch(data);
}

/// Recovers from `data` cut into segments: byte 0 says how many (1 to 4), the rest
/// is split evenly among them, named by sequence numbers 1, 2, ...
pub fn recover_any(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let segment_count = 1 + usize::from(first % 4);
    let segment_len = rest.len().div_ceil(segment_count).max(1);
    let mut recovery = Recovery::new(None);
    for (i, bytes) in rest.chunks(segment_len).enumerate() {
        let segment = SegmentFile { file_name: "fuzz", segment_seq: i as u64 + 1, bytes };
        if recovery.add_segment(&segment).is_err() {
            return;
        }
    }
    let _ = recovery.finish();
}

/// Reads `data` as a snapshot file, every chunk (may fail).
pub fn read_snapshot_any(data: &[u8]) {
    let _ = crate::snap::verify_reader(data, "fuzz");
}
