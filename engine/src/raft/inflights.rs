//! The in-flight window of one follower: appends sent but not yet acknowledged.
//!
//! Owned by the leader's [`Progress`](super::progress::Progress) of that follower.
//! Bounded twice, in messages and in bytes, so a slow follower can never make the
//! leader buffer or send without limit (pipelining inside a bounded window).

use std::collections::VecDeque;

use corekv_rpc::raft::Index;

/// Appends in flight to one follower, oldest first.
#[derive(Debug, Clone)]
pub struct Inflights {
    /// `(last index of the append, payload bytes)`, indexes strictly increasing.
    window: VecDeque<(Index, u64)>,
    bytes: u64,
    msgs_max: usize,
    bytes_max: u64,
}

impl Inflights {
    /// An empty window holding at most `msgs_max` appends and `bytes_max` bytes.
    pub fn new(msgs_max: usize, bytes_max: u64) -> Inflights {
        assert!(msgs_max > 0, "an in-flight window of 0 messages could never send");
        Inflights { window: VecDeque::with_capacity(msgs_max), bytes: 0, msgs_max, bytes_max }
    }

    /// True when no further append may be sent until an acknowledgement frees room.
    /// A single append larger than `bytes_max` still goes out when the window is empty.
    pub fn is_full(&self) -> bool {
        self.window.len() >= self.msgs_max || (self.bytes_max > 0 && self.bytes >= self.bytes_max)
    }

    /// Records an append whose last entry is `last_index`.
    pub fn add(&mut self, last_index: Index, bytes: u64) {
        assert!(!self.is_full(), "append sent into a full in-flight window");
        if let Some(&(back, _)) = self.window.back() {
            assert!(last_index > back, "in-flight appends must have increasing indexes");
        }
        self.window.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Frees every append whose last index is ≤ `index` (acknowledged).
    pub fn free_to(&mut self, index: Index) {
        while let Some(&(last, bytes)) = self.window.front() {
            if last > index {
                break;
            }
            self.window.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Forgets everything in flight (the follower is probed again from scratch).
    pub fn reset(&mut self) {
        self.window.clear();
        self.bytes = 0;
    }

    /// Number of appends in flight.
    pub fn count(&self) -> usize {
        self.window.len()
    }

    /// Payload bytes in flight.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_by_count_then_freed_by_acks() {
        let mut w = Inflights::new(3, 0);
        w.add(1, 10);
        w.add(2, 10);
        assert!(!w.is_full());
        w.add(5, 10);
        assert!(w.is_full());
        w.free_to(1);
        assert!(!w.is_full());
        assert_eq!((w.count(), w.bytes()), (2, 20));
        w.free_to(4);
        assert_eq!((w.count(), w.bytes()), (1, 10));
        w.free_to(100);
        assert_eq!((w.count(), w.bytes()), (0, 0));
    }

    #[test]
    fn full_by_bytes_but_an_oversized_append_still_fits_an_empty_window() {
        let mut w = Inflights::new(100, 1000);
        w.add(1, 5000);
        assert!(w.is_full(), "one append over the byte limit fills the window");
        w.free_to(1);
        w.add(2, 400);
        w.add(3, 500);
        assert!(!w.is_full());
        w.add(4, 200);
        assert!(w.is_full());
    }

    #[test]
    #[should_panic(expected = "increasing")]
    fn decreasing_indexes_are_a_bug() {
        let mut w = Inflights::new(4, 0);
        w.add(5, 1);
        w.add(4, 1);
    }
}
