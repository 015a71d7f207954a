//! Fresh snapshots for transfers: how a leader asks the application for a new
//! snapshot before it streams one to a follower.
//!
//! The latest snapshot may be old: a group compacts when its log has grown past a
//! threshold, so a follower that needs a snapshot (a new replica of a move, a
//! replica back from a long absence) would receive the state as of that old index
//! and then every entry since, which can be as large as the state itself. A
//! snapshot taken now costs one serialization and one local write and sends only
//! the state, not its history.
//!
//! Rules, once [`RawNode::want_fresh_snapshots`] was called (without it a transfer
//! always starts from the latest snapshot and nothing here applies):
//! - A transfer that would start from a snapshot older than the applied index
//!   waits instead: its follower is in `Snapshot` state with no transfer, nothing
//!   is sent to it, and [`RawNode::snapshot_wanted`] is true.
//! - The application answers before it next steps the node: with
//!   [`RawNode::compact`] (the waiting transfers start from the new snapshot) or
//!   with [`RawNode::send_latest_snapshot`] (they start from the latest one, e.g.
//!   because [`RawNode::compaction_harmless`] says another follower still needs
//!   the log after it: one streaming that snapshot, or replaying the log).
//! - A waiting follower that answers an append meanwhile goes back to probing, as
//!   one receiving a snapshot would; a leader that steps down forgets the wait
//!   with the rest of its progress.
//!
//! Runs on the core of its group, like the rest of the Raft core.

use super::*;

impl RawNode {
    /// From now on transfers wait for a fresh snapshot as described above. Off by
    /// default.
    pub fn want_fresh_snapshots(&mut self) {
        self.fresh_snapshots = true;
    }

    /// True when a leader's follower waits for a snapshot the application is to
    /// take now (or decline with [`RawNode::send_latest_snapshot`]).
    pub fn snapshot_wanted(&self) -> bool {
        self.role == Role::Leader && self.progress.values().any(Progress::awaits_snapshot)
    }

    /// True while a transfer streams the latest snapshot to a follower: a
    /// compaction now would leave that follower short of the entries after it.
    pub fn snapshot_streaming(&self) -> bool {
        self.role == Role::Leader && self.progress.values().any(Progress::streams_snapshot)
    }

    /// True when compacting the log to the applied index now costs no other
    /// follower anything: no transfer streams the latest snapshot, and no follower
    /// still needs entries between the latest snapshot and the applied index (one
    /// replaying the log after its own snapshot, or back from a short absence):
    /// those entries would be gone and it would need a whole snapshot too. A
    /// follower that needs entries from before the latest snapshot needs one
    /// anyway. False when not leader.
    pub fn compaction_harmless(&self) -> bool {
        if self.role != Role::Leader {
            return false;
        }
        let (snap, applied) = (self.log.snapshot_index(), self.log.applied());
        let cut = |need: Index| need > snap && need <= applied;
        let me = self.id();
        self.progress.iter().filter(|&(&id, _)| id != me).all(|(_, p)| match p.state {
            ProgressState::Snapshot => p.snapshot.is_none(),
            ProgressState::Replicate => !cut(p.next_index),
            ProgressState::Probe => !cut(p.match_index + 1),
        })
    }

    /// Starts the waiting transfers from the latest snapshot as it is.
    pub fn send_latest_snapshot(&mut self) {
        self.start_waiting_transfers();
    }

    /// Starts every waiting transfer from the latest snapshot.
    pub(super) fn start_waiting_transfers(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let waiting: Vec<NodeId> =
            self.progress.iter().filter(|(_, p)| p.awaits_snapshot()).map(|(&id, _)| id).collect();
        for to in waiting {
            self.stream_latest_snapshot(to);
        }
    }
}
