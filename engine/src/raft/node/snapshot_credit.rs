//! The send credit of snapshot chunks: how the node core holds a leader to a byte
//! rate without the Raft core naming a clock.
//!
//! Replica moves stream whole shards to new members, and operators cap that per
//! node (`--move-rate`). The node core owns one token bucket per core; each tick it
//! asks every group how many bytes it wants ([`RawNode::snapshot_bytes_wanted`]),
//! shares the bucket among them and hands each its share
//! ([`RawNode::grant_snapshot_credit`]). Time stays outside: the core only counts
//! bytes.
//!
//! Rules, once [`RawNode::limit_snapshot_sending`] was called (without it sending is
//! unlimited and nothing here applies):
//! - A chunk goes out only when the credit covers its whole length, which is then
//!   deducted. A resend (a lost chunk) costs like a first send. The one empty chunk
//!   of an empty snapshot is free. Appends, heartbeats and votes never need credit.
//! - A transfer sends its first chunk alone (limited or not), and waits for the
//!   answer to learn what the follower already holds (a partial copy from before),
//!   so no credit is spent on bytes it has; the same after a resume or a suspected
//!   loss.
//! - Without credit a transfer pauses with nothing in flight; the heartbeat rule
//!   that resends lost chunks only looks at chunks that were in flight for a whole
//!   heartbeat interval, so a paused or slow transfer is neither resent by mistake
//!   nor stalled (see [`SnapshotTransfer::on_heartbeat_answer`]).
//! - Credit left after a grant is kept, capped at the in-flight window of one
//!   transfer ([`SNAPSHOT_CHUNKS_IN_FLIGHT_MAX`] chunks): enough to refill a window
//!   when acknowledgements come back, never a hoard for a burst after idling.
//!
//! Runs on the core of its group, like the rest of the Raft core.

use super::*;

impl RawNode {
    /// From now on snapshot chunks need send credit, starting from none. Calling it
    /// again keeps the credit held. Off by default: sending is unlimited.
    pub fn limit_snapshot_sending(&mut self) {
        self.snapshot_credit_bytes.get_or_insert(0);
    }

    /// Adds `bytes` of send credit (saturating) and at once sends what the credit
    /// and the in-flight windows now allow, one chunk per follower in turn so
    /// concurrent transfers share the grant; the chunks are in the next
    /// [`Ready`]'s messages. What is left is kept up to one transfer's window. No
    /// effect while sending is unlimited.
    pub fn grant_snapshot_credit(&mut self, bytes: u64) {
        let Some(credit) = self.snapshot_credit_bytes.as_mut() else {
            return;
        };
        *credit = credit.saturating_add(bytes);
        let receiving: Vec<NodeId> =
            self.progress.iter().filter(|(_, p)| p.state == ProgressState::Snapshot).map(|(&id, _)| id).collect();
        let mut sent = true;
        while sent {
            sent = false;
            for &to in &receiving {
                sent |= self.send_snapshot_chunk(to);
            }
        }
        let cap = self.snapshot_window_bytes();
        if let Some(credit) = self.snapshot_credit_bytes.as_mut() {
            *credit = (*credit).min(cap);
        }
    }

    /// Chunk bytes this node would send right now if credit allowed: over every
    /// follower receiving a snapshot, the unsent bytes inside its in-flight window
    /// (resends included). While a transfer's first chunk (or the first after a
    /// resume) awaits its answer, that transfer wants nothing more; while its link
    /// is reported broken, nothing at all. 0 when not leader or no transfer is
    /// under way. Credit already held is not subtracted (normally it is below each
    /// transfer's next chunk, or that chunk would have gone out).
    pub fn snapshot_bytes_wanted(&self) -> u64 {
        if self.role != Role::Leader {
            return 0;
        }
        let chunk_bytes = self.cfg.snapshot_chunk_bytes;
        let window_bytes = self.snapshot_window_bytes();
        self.progress
            .values()
            .filter(|p| p.state == ProgressState::Snapshot)
            .filter_map(|p| p.snapshot.as_ref())
            .map(|t| t.sendable_bytes(chunk_bytes, window_bytes))
            .sum()
    }

    /// Send credit held now; `None` while sending is unlimited.
    pub fn snapshot_credit_bytes(&self) -> Option<u64> {
        self.snapshot_credit_bytes
    }
}
