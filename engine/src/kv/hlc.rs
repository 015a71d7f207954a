//! The hybrid logical clock a shard leader stamps into every write it proposes.
//!
//! A timestamp is `physical_ms << 16 | logical` (DESIGN §6). Sans-I/O: the caller
//! passes the physical time in; this module never reads a clock. Runs on the core
//! that owns the shard (one clock per shard replica, or one per core shared by its
//! shards: either keeps the invariant).
//!
//! Invariant: every value `now` returns is strictly above every value it returned
//! before and every timestamp `observe`d, whatever the physical time does (it may
//! stand still or go backwards). The logical part may carry into the physical part
//! when more than 65 536 stamps fall in one millisecond; the order stays strict.

use thiserror::Error;

/// Bits of the logical counter.
pub const LOGICAL_BITS: u32 = 16;
/// The largest timestamp the clock accepts or produces. Half the u64 range: about
/// 4 400 years of milliseconds, so reaching it means a corrupt or hostile peer, and
/// a clock that stopped there could not move on.
pub const TS_MAX: u64 = u64::MAX >> 1;

/// A remote timestamp the clock refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HlcError {
    /// The timestamp is beyond [`TS_MAX`].
    #[error("timestamp {ts} is beyond the clock's range (max {max})", max = OBSERVE_TS_MAX)]
    OutOfRange {
        /// The refused timestamp.
        ts: u64,
    },
}

/// A hybrid logical clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hlc {
    /// The highest timestamp returned or observed.
    last_ts: u64,
}

/// The largest timestamp `observe` accepts and `now` reaches from physical time:
/// 2^32 logical steps below [`TS_MAX`].
pub const OBSERVE_TS_MAX: u64 = TS_MAX - (1 << 32);

/// The timestamp of a physical time with logical part 0 (clipped to [`TS_MAX`]).
pub fn ts_of_physical_ms(physical_ms: u64) -> u64 {
    physical_ms.min(TS_MAX >> LOGICAL_BITS) << LOGICAL_BITS
}

/// The physical milliseconds of a timestamp.
pub fn physical_ms_of_ts(ts: u64) -> u64 {
    ts >> LOGICAL_BITS
}

impl Hlc {
    /// A clock that has seen nothing.
    pub fn new() -> Self {
        Hlc::default()
    }

    /// A clock that starts above `ts` (a new leader starts above what it has seen).
    pub fn starting_at(ts: u64) -> Result<Self, HlcError> {
        let mut clock = Hlc::new();
        clock.observe(ts)?;
        Ok(clock)
    }

    /// A fresh timestamp: the physical time when it is ahead, otherwise one above
    /// the last timestamp returned or observed.
    pub fn now(&mut self, physical_ms: u64) -> u64 {
        let next = ts_of_physical_ms(physical_ms).min(OBSERVE_TS_MAX).max(self.last_ts + 1);
        assert!(next <= TS_MAX, "HLC exhausted: 2^32 stamps past the largest observable timestamp");
        assert!(next > self.last_ts, "HLC must be strictly increasing");
        self.last_ts = next;
        next
    }

    /// Takes a timestamp seen elsewhere (a message, a vote, a read at a version) into
    /// account: every later `now` is above it.
    pub fn observe(&mut self, remote_ts: u64) -> Result<(), HlcError> {
        // Keep room above every observed timestamp, so `now` can never step past
        // TS_MAX into a stamp every replica refuses.
        if remote_ts > OBSERVE_TS_MAX {
            return Err(HlcError::OutOfRange { ts: remote_ts });
        }
        self.last_ts = self.last_ts.max(remote_ts);
        Ok(())
    }

    /// The highest timestamp returned or observed so far.
    pub fn last(&self) -> u64 {
        self.last_ts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_physical_time_when_it_moves() {
        let mut clock = Hlc::new();
        assert_eq!(clock.now(5), 5 << 16);
        assert_eq!(clock.now(9), 9 << 16);
        assert_eq!(physical_ms_of_ts(clock.last()), 9);
    }

    #[test]
    fn logical_part_counts_when_physical_stands_still_or_goes_back() {
        let mut clock = Hlc::new();
        let a = clock.now(100);
        let b = clock.now(100);
        let c = clock.now(50);
        assert_eq!(b, a + 1);
        assert_eq!(c, a + 2);
        assert_eq!(physical_ms_of_ts(c), 100);
    }

    #[test]
    fn observe_moves_the_clock_past_remote_stamps() {
        let mut clock = Hlc::new();
        clock.now(10);
        clock.observe(20 << 16 | 7).unwrap();
        assert_eq!(clock.now(15), (20 << 16 | 7) + 1);
        clock.observe(1).unwrap();
        assert_eq!(clock.now(15), (20 << 16 | 7) + 2);
        assert_eq!(clock.observe(u64::MAX), Err(HlcError::OutOfRange { ts: u64::MAX }));
        assert_eq!(Hlc::starting_at(42).unwrap().now(0), 43);
    }

    #[test]
    fn logical_overflow_carries_and_stays_strict() {
        let mut clock = Hlc::new();
        let mut prev = clock.now(1);
        for _ in 0..(1 << LOGICAL_BITS) + 10 {
            let ts = clock.now(1);
            assert!(ts > prev);
            prev = ts;
        }
        assert_eq!(physical_ms_of_ts(prev), 2);
    }

    #[test]
    fn physical_time_beyond_range_is_clipped() {
        let mut clock = Hlc::new();
        let ts = clock.now(u64::MAX);
        assert!(ts <= TS_MAX);
        assert!(clock.now(u64::MAX) > ts);
    }

    proptest::proptest! {
        #[test]
        fn strictly_increasing_under_any_inputs(
            steps in proptest::collection::vec((proptest::bool::ANY, 0u64..1_000_000, 0u64..(1 << 40)), 1..200)
        ) {
            let mut clock = Hlc::new();
            let mut prev = 0u64;
            let mut seen = 0u64;
            for (is_observe, physical_ms, remote) in steps {
                if is_observe {
                    clock.observe(remote).unwrap();
                    seen = seen.max(remote);
                } else {
                    let ts = clock.now(physical_ms);
                    proptest::prop_assert!(ts > prev && ts > seen);
                    prev = ts;
                }
            }
        }
    }
}
