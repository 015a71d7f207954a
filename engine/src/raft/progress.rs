//! What a leader knows about one follower's log, and how it feeds it.
//!
//! States (etcd-io/raft's model): `Probe` sends one append at a time until the
//! leader finds where the logs match; `Replicate` streams appends optimistically
//! inside the bounded [`Inflights`] window; `Snapshot` streams a snapshot in chunks
//! because the entries the follower needs are compacted away.

use std::sync::Arc;

use corekv_rpc::raft::{Index, SnapshotMeta};

use super::inflights::Inflights;

/// How the leader is currently feeding a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// Looking for the match point: one append per round trip (or heartbeat).
    Probe,
    /// Match point known: appends stream inside the in-flight window.
    Replicate,
    /// Sending a snapshot; no appends until it is installed.
    Snapshot,
}

/// A snapshot transfer to one follower. It keeps its own handle on the data so a
/// newer local compaction does not disturb a transfer under way.
#[derive(Clone)]
pub struct SnapshotTransfer {
    /// What is being sent.
    pub meta: SnapshotMeta,
    /// The snapshot's bytes.
    pub data: Arc<[u8]>,
    /// Bytes the follower has acknowledged.
    pub acked_offset: u64,
    /// Bytes sent (chunks after `acked_offset` are in flight).
    pub sent_offset: u64,
    /// `acked_offset` at the previous heartbeat answer, to detect a stalled transfer.
    pub acked_at_last_heartbeat: u64,
}

impl std::fmt::Debug for SnapshotTransfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotTransfer")
            .field("meta", &self.meta)
            .field("bytes", &self.data.len())
            .field("acked_offset", &self.acked_offset)
            .field("sent_offset", &self.sent_offset)
            .finish()
    }
}

/// The leader's view of one peer (voter or learner), itself included.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Highest index known to match the leader's log.
    pub match_index: Index,
    /// Next index to send.
    pub next_index: Index,
    /// Feeding mode.
    pub state: ProgressState,
    /// In `Probe`: an append is out and unanswered; wait for an answer or a heartbeat.
    pub probe_sent: bool,
    /// Appends in flight (used in `Replicate`).
    pub inflights: Inflights,
    /// In `Snapshot`: the transfer.
    pub snapshot: Option<SnapshotTransfer>,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Newest heartbeat round this peer answered (ReadIndex and lease).
    pub acked_round: u64,
    /// `match_index` at the previous heartbeat answer, to detect a lost append.
    pub match_at_last_heartbeat: Index,
    /// Consecutive heartbeat answers with no replication progress and entries owed.
    pub stalled_heartbeats: u32,
}

impl Progress {
    /// A fresh progress for a peer when a leader takes office: probe from the end.
    pub fn new(next_index: Index, inflights: Inflights) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights,
            snapshot: None,
            recent_active: false,
            acked_round: 0,
            match_at_last_heartbeat: 0,
            stalled_heartbeats: 0,
        }
    }

    /// True when no append may be sent to this peer now.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot => true,
        }
    }

    /// Switches to probing from `match_index + 1`.
    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            // After a snapshot the follower holds at least its index.
            let snap_index = self.snapshot.take().map_or(0, |s| s.meta.index);
            self.next_index = self.match_index.max(snap_index) + 1;
        } else {
            self.next_index = self.match_index + 1;
        }
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflights.reset();
        self.stalled_heartbeats = 0;
    }

    /// Switches to streaming from `match_index + 1`.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.snapshot = None;
        self.inflights.reset();
        self.stalled_heartbeats = 0;
    }

    /// Switches to sending `transfer`.
    pub fn become_snapshot(&mut self, transfer: SnapshotTransfer) {
        self.state = ProgressState::Snapshot;
        self.probe_sent = false;
        self.inflights.reset();
        self.snapshot = Some(transfer);
    }

    /// Records that an append ending at `last_index` carrying `bytes` was sent.
    pub fn sent_entries(&mut self, last_index: Index, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                self.next_index = last_index + 1;
                self.inflights.add(last_index, bytes);
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => panic!("append sent to a follower receiving a snapshot"),
        }
    }

    /// An acknowledgement that the follower's log matches up to `index`. Returns true
    /// when it taught the leader something new.
    pub fn on_ack(&mut self, index: Index) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        self.inflights.free_to(index);
        updated
    }

    /// A rejection of the append whose `prev_index` was `rejected`; `hint` is the
    /// index after which to continue (computed from the follower's hint). Returns
    /// false when the rejection is stale (answers an older append).
    pub fn on_reject(&mut self, rejected: Index, hint: Index) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.match_index {
                return false;
            }
            // An append in the stream did not match: probe from what is known.
            self.become_probe();
            return true;
        }
        if self.next_index == 0 || self.next_index - 1 != rejected {
            return false;
        }
        self.next_index = hint.saturating_add(1).min(rejected).max(self.match_index + 1);
        self.probe_sent = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress() -> Progress {
        Progress::new(11, Inflights::new(2, 0))
    }

    #[test]
    fn probe_sends_one_append_per_answer() {
        let mut p = progress();
        assert!(!p.is_paused());
        p.sent_entries(12, 10);
        assert!(p.is_paused());
        assert!(p.on_ack(12));
        assert!(!p.is_paused());
        assert_eq!(p.next_index, 13);
    }

    #[test]
    fn replicate_streams_until_the_window_is_full() {
        let mut p = progress();
        p.on_ack(10);
        p.become_replicate();
        p.sent_entries(12, 1);
        p.sent_entries(14, 1);
        assert!(p.is_paused());
        assert_eq!(p.next_index, 15);
        p.on_ack(12);
        assert!(!p.is_paused());
    }

    #[test]
    fn stale_rejections_are_ignored_and_fresh_ones_back_up() {
        let mut p = progress();
        p.on_ack(5);
        p.next_index = 11;
        assert!(!p.on_reject(7, 3), "answers an append we did not send last");
        assert!(p.on_reject(10, 3));
        assert_eq!(p.next_index, 6, "never below match + 1");
        p.next_index = 11;
        assert!(p.on_reject(10, 8));
        assert_eq!(p.next_index, 9);
    }

    #[test]
    fn a_rejection_while_streaming_falls_back_to_probe() {
        let mut p = progress();
        p.on_ack(10);
        p.become_replicate();
        p.sent_entries(20, 1);
        assert!(!p.on_reject(9, 0), "at or below match: stale");
        assert!(p.on_reject(15, 0));
        assert_eq!((p.state, p.next_index), (ProgressState::Probe, 11));
    }
}
