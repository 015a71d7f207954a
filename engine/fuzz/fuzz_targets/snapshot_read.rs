//! Reading a snapshot file made of arbitrary bytes, chunk by chunk.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    corekv_engine::wal::fuzzing::read_snapshot_any(data);
});
