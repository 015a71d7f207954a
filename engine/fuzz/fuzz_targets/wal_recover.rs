//! Recovery from arbitrary segment bytes (byte 0 picks how many segments).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    corekv_engine::wal::fuzzing::recover_any(data);
});
