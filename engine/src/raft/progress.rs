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
/// newer local compaction does not disturb a transfer under way (only an
/// interruption, [`RawNode::report_unreachable`](super::RawNode::report_unreachable),
/// switches it to a newer snapshot).
///
/// Offsets: `acked_offset <= sent_offset`; the bytes in between are in flight and
/// never more than one window. The follower's answer is the truth about what it
/// holds; the leader's offsets only follow it. An empty snapshot is one empty chunk,
/// after which `sent_offset` is 1.
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
    /// `sent_offset` at the previous heartbeat answer: only bytes sent before it can
    /// be declared lost (a chunk sent just now, after credit arrived, is not late).
    pub sent_at_last_heartbeat: u64,
    /// The offset sending last went back to. Answers that still report it come from
    /// chunks sent before that and do not mean a new loss: without this, each of the
    /// window's chunks that followed a lost one would trigger its own resend.
    pub resent_from: Option<u64>,
    /// The connection broke ([`RawNode::report_unreachable`](super::RawNode::report_unreachable)):
    /// nothing is sent, and no credit spent, until the follower answers a heartbeat.
    /// Then the transfer resumes from `acked_offset`, or starts over with a newer
    /// snapshot if the leader compacted meanwhile.
    pub interrupted: bool,
    /// The leader does not know what the follower holds (a new transfer, a resume,
    /// a suspected loss): one chunk at a time until it answers. Sending a window it
    /// may already hold would be paid twice, and every duplicate's answer (its
    /// offset, unchanged) would look like a loss and send the next window twice too.
    pub probing: bool,
}

impl SnapshotTransfer {
    /// A transfer of `meta`/`data` from offset 0.
    pub fn new(meta: SnapshotMeta, data: Arc<[u8]>) -> SnapshotTransfer {
        SnapshotTransfer {
            meta,
            data,
            acked_offset: 0,
            sent_offset: 0,
            acked_at_last_heartbeat: 0,
            sent_at_last_heartbeat: 0,
            resent_from: None,
            interrupted: false,
            probing: true,
        }
    }

    /// The snapshot's size.
    pub fn total_bytes(&self) -> u64 {
        self.data.len() as u64
    }

    /// The length of the next chunk to send, if the in-flight window of
    /// `window_bytes` allows one: chunks of `chunk_bytes`, the last one shorter, and
    /// `Some(0)` for the single empty chunk of an empty snapshot.
    pub fn next_chunk_bytes(&self, chunk_bytes: u64, window_bytes: u64) -> Option<u64> {
        if self.interrupted {
            return None;
        }
        if self.total_bytes() == 0 {
            return (self.sent_offset == 0).then_some(0);
        }
        self.chunk_bytes_at(self.sent_offset, chunk_bytes, window_bytes)
    }

    /// The chunk bytes the window allows to send now (0 for an empty snapshot, whose
    /// one chunk is free, and while interrupted).
    pub fn sendable_bytes(&self, chunk_bytes: u64, window_bytes: u64) -> u64 {
        if self.interrupted {
            return 0;
        }
        let (mut offset, mut bytes) = (self.sent_offset, 0);
        while let Some(len) = self.chunk_bytes_at(offset, chunk_bytes, window_bytes) {
            bytes += len;
            offset += len;
        }
        bytes
    }

    fn chunk_bytes_at(&self, offset: u64, chunk_bytes: u64, window_bytes: u64) -> Option<u64> {
        let total = self.total_bytes();
        let window_bytes = if self.probing { 1 } else { window_bytes };
        let in_flight = offset.saturating_sub(self.acked_offset);
        (offset < total && in_flight < window_bytes).then(|| (total - offset).min(chunk_bytes))
    }

    /// Records that the chunk at `sent_offset` of `len` bytes went out.
    pub fn sent_chunk(&mut self, len: u64) {
        // The one empty chunk of an empty snapshot still moves the offset, to 1.
        self.sent_offset += len.max(1);
    }

    /// Everything after the acknowledged offset was lost: send it again.
    pub fn resend_from_acked(&mut self) {
        self.sent_offset = self.acked_offset;
        self.resent_from = Some(self.acked_offset);
    }

    /// The connection broke: what was in flight is lost. The follower keeps its
    /// partial copy, so the transfer will resume from the acknowledged offset.
    pub fn interrupt(&mut self) {
        self.resend_from_acked();
        self.interrupted = true;
        self.probing = true; // chunks in flight may have arrived: ask with one first
    }

    /// A heartbeat answer arrived. Chunks that were already in flight at the
    /// previous answer and are still unacknowledged, with no progress since, were
    /// lost: resend from the acknowledged offset. A transfer paused for lack of
    /// send credit is judged only by what it did send: with nothing in flight
    /// (`sent_offset == acked_offset`) nothing is declared lost, and a chunk sent
    /// since the previous answer is not late yet, so a slow, credit-limited transfer
    /// is never resent by mistake. A resend waits for credit like any chunk.
    pub fn on_heartbeat_answer(&mut self) {
        self.interrupted = false;
        let no_progress = self.acked_offset == self.acked_at_last_heartbeat;
        if no_progress && self.acked_offset < self.sent_at_last_heartbeat {
            self.resend_from_acked();
            self.probing = true; // they may only be late: ask with one chunk first
        }
        self.acked_at_last_heartbeat = self.acked_offset;
        self.sent_at_last_heartbeat = self.sent_offset;
    }

    /// The follower holds the first `next_offset` bytes (below the total).
    pub fn on_answer(&mut self, next_offset: u64) {
        let in_flight = next_offset < self.sent_offset;
        if next_offset == self.acked_offset && in_flight && self.resent_from == Some(next_offset) {
            return; // answers a chunk sent before sending went back here: the resend is under way
        }
        self.probing = false; // the follower said where it stands
        if next_offset < self.acked_offset || next_offset > self.sent_offset {
            // The follower's offset is the truth: it lost what it had (restart), or
            // holds more than this transfer sent (a resume, a transfer restarted by
            // a probe).
            self.acked_offset = next_offset;
            self.resend_from_acked();
        } else if next_offset == self.acked_offset && in_flight {
            self.resend_from_acked(); // a chunk went missing: resend from there, once
        } else {
            self.acked_offset = next_offset;
        }
    }
}

impl std::fmt::Debug for SnapshotTransfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotTransfer")
            .field("meta", &self.meta)
            .field("bytes", &self.data.len())
            .field("acked_offset", &self.acked_offset)
            .field("sent_offset", &self.sent_offset)
            .field("resent_from", &self.resent_from)
            .field("interrupted", &self.interrupted)
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
    /// In `Snapshot`: the transfer (none while the leader waits for a fresh
    /// snapshot, see `RawNode::want_fresh_snapshots`).
    pub snapshot: Option<SnapshotTransfer>,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Heard from in the check-quorum round before that one.
    pub active_last_round: bool,
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
            active_last_round: false,
            acked_round: 0,
            match_at_last_heartbeat: 0,
            stalled_heartbeats: 0,
        }
    }

    /// Heard from within the last full check-quorum round (an election timeout)
    /// or since: unlike `recent_active`, true right after a round starts too, so a
    /// check made at any phase of the round sees a peer that answers.
    pub fn active_lately(&self) -> bool {
        self.recent_active || self.active_last_round
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

    /// In `Snapshot` with no transfer yet: waiting for the application's fresh
    /// snapshot (see [`Progress::await_snapshot`]).
    pub fn awaits_snapshot(&self) -> bool {
        self.state == ProgressState::Snapshot && self.snapshot.is_none()
    }

    /// In `Snapshot` with a transfer under way.
    pub fn streams_snapshot(&self) -> bool {
        self.state == ProgressState::Snapshot && self.snapshot.is_some()
    }

    /// Switches to `Snapshot` with no transfer yet: the leader waits for the
    /// application's fresh snapshot.
    pub fn await_snapshot(&mut self) {
        self.state = ProgressState::Snapshot;
        self.probe_sent = false;
        self.inflights.reset();
        self.snapshot = None;
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

    /// A transfer of `total` bytes past its first chunk's answer, streaming.
    fn transfer(total: usize) -> SnapshotTransfer {
        let meta = SnapshotMeta { index: 9, term: 2, conf: Default::default() };
        let mut t = SnapshotTransfer::new(meta, Arc::from(vec![0u8; total]));
        t.probing = false;
        t
    }

    #[test]
    fn a_new_transfer_sends_one_chunk_until_the_follower_says_where_it_stands() {
        let mut t = transfer(40);
        t.probing = true;
        assert_eq!((t.next_chunk_bytes(4, 16), t.sendable_bytes(4, 16)), (Some(4), 4));
        t.sent_chunk(4);
        assert_eq!(t.next_chunk_bytes(4, 16), None);
        t.on_answer(24); // it held a partial copy already
        assert_eq!((t.acked_offset, t.sent_offset, t.sendable_bytes(4, 16)), (24, 24, 16));
    }

    #[test]
    fn a_transfer_sends_chunks_inside_its_window_and_the_last_one_short() {
        let mut t = transfer(10);
        assert_eq!(t.sendable_bytes(4, 8), 8);
        assert_eq!(t.next_chunk_bytes(4, 8), Some(4));
        t.sent_chunk(4);
        t.sent_chunk(4);
        assert_eq!((t.next_chunk_bytes(4, 8), t.sendable_bytes(4, 8)), (None, 0), "window full");
        t.on_answer(4);
        assert_eq!((t.next_chunk_bytes(4, 8), t.sendable_bytes(4, 8)), (Some(2), 2), "the short last chunk");
        let mut empty = transfer(0);
        assert_eq!((empty.next_chunk_bytes(4, 8), empty.sendable_bytes(4, 8)), (Some(0), 0));
        empty.sent_chunk(0);
        assert_eq!(empty.next_chunk_bytes(4, 8), None, "one empty chunk only");
    }

    #[test]
    fn a_lost_chunk_is_resent_once_not_once_per_chunk_that_followed_it() {
        let mut t = transfer(40);
        for _ in 0..4 {
            t.sent_chunk(4);
        }
        t.on_answer(4); // chunk 0 arrived, chunk 4 was lost
        t.on_answer(4); // chunk 8 arrived out of order
        assert_eq!(t.sent_offset, 4, "resend from the gap");
        t.sent_chunk(4);
        t.on_answer(4); // chunk 12 arrived out of order: the resend is under way
        assert_eq!(t.sent_offset, 8, "no second resend");
        t.on_answer(8);
        assert_eq!((t.acked_offset, t.sent_offset), (8, 8));
    }

    #[test]
    fn the_follower_offset_is_the_truth_in_both_directions() {
        let mut t = transfer(40);
        t.sent_chunk(4);
        t.on_answer(20); // holds more than sent: a transfer restarted under it
        assert_eq!((t.acked_offset, t.sent_offset), (20, 20));
        t.on_answer(0); // lost its partial copy
        assert_eq!((t.acked_offset, t.sent_offset), (0, 0));
    }

    #[test]
    fn only_chunks_in_flight_for_a_whole_heartbeat_interval_count_as_lost() {
        let mut t = transfer(40);
        t.on_heartbeat_answer();
        t.on_heartbeat_answer();
        assert_eq!(t.sent_offset, 0, "paused (no credit): nothing to resend");
        t.sent_chunk(4); // credit arrived just before this answer
        t.on_heartbeat_answer();
        assert_eq!(t.sent_offset, 4, "sent since the previous answer: not late");
        t.on_heartbeat_answer();
        assert_eq!(t.sent_offset, 0, "a whole interval unanswered: lost");
        assert_eq!(t.sendable_bytes(4, 16), 4, "or late: one chunk asks");
        t.sent_chunk(4);
        t.on_answer(4);
        t.sent_chunk(4);
        t.on_heartbeat_answer();
        assert_eq!(t.sent_offset, 8, "progress was made");
    }

    #[test]
    fn an_interrupted_transfer_sends_nothing_until_a_heartbeat_answer_then_resumes_from_the_ack() {
        let mut t = transfer(40);
        t.sent_chunk(4);
        t.sent_chunk(4);
        t.on_answer(4);
        t.interrupt();
        assert_eq!((t.next_chunk_bytes(4, 16), t.sendable_bytes(4, 16)), (None, 0));
        t.on_heartbeat_answer();
        assert_eq!((t.sent_offset, t.next_chunk_bytes(4, 16)), (4, Some(4)), "from the acknowledged offset");
        assert_eq!(t.sendable_bytes(4, 16), 4, "one chunk: chunks in flight at the break may have arrived");
    }
}
