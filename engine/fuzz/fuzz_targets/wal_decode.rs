//! Segment header, batch and record decoding of arbitrary bytes: errors are fine,
//! panics and unbounded allocations are not.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    corekv_engine::wal::fuzzing::decode_any(data);
});
