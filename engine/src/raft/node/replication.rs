//! Log replication, both sides: the follower accepting appends and snapshot chunks,
//! the leader feeding each follower by its progress (probe, streaming inside the
//! in-flight window, snapshot) and committing by counting current-term entries.

use super::*;

impl RawNode {
    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    ) -> Result<(), StepError> {
        if prev_index.checked_add(entries.len() as u64).is_none() {
            return Err(StepError::Malformed("append past the last possible index"));
        }
        let contiguous = entries.iter().enumerate().all(|(i, e)| e.index == prev_index + 1 + i as u64);
        let terms_ordered =
            entries.windows(2).all(|w| w[0].term <= w[1].term) && entries.first().is_none_or(|e| e.term >= prev_term);
        if !contiguous || !terms_ordered || entries.last().is_some_and(|e| e.term > self.term) {
            return Err(StepError::Malformed("append entries out of order"));
        }
        let committed = self.log.committed();
        if prev_index < committed {
            self.respond_after_persist(from, MessageBody::AppendResponse { index: committed, reject: None });
            return Ok(());
        }
        if self.log.matches(prev_index, prev_term) {
            let last_new = self.log.append_after(prev_index, entries);
            self.log.commit_to(commit.min(last_new));
            self.respond_after_persist(from, MessageBody::AppendResponse { index: last_new, reject: None });
        } else {
            let (index, term) = self.log.find_conflict_by_term(prev_index, prev_term);
            let reject = Some(RejectHint { index, term });
            self.respond_after_persist(from, MessageBody::AppendResponse { index: prev_index, reject });
        }
        Ok(())
    }

    pub(super) fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        total_bytes: u64,
        offset: u64,
        chunk: Vec<u8>,
        chunk_crc: u32,
    ) {
        let index = meta.index;
        if index > self.log.committed() && self.log.matches(index, meta.term) {
            // The log already holds the snapshot's last entry: keep it and what follows
            // (entries this node may have acknowledged), just learn the commit.
            self.log.commit_to(index);
            self.incoming_snapshot = None;
            let done = MessageBody::SnapshotResponse { index, next_offset: total_bytes, rejected: false };
            self.respond_after_persist(from, done);
            return;
        }
        if index <= self.log.committed() {
            // A stale or duplicated chunk must not throw away a newer transfer.
            if self.incoming_snapshot.as_ref().is_some_and(|s| s.meta.index <= index) {
                self.incoming_snapshot = None;
            }
            let committed = self.log.committed();
            self.respond_after_persist(from, MessageBody::AppendResponse { index: committed, reject: None });
            return;
        }
        if total_bytes > self.cfg.snapshot_bytes_max {
            self.send(from, MessageBody::SnapshotResponse { index, next_offset: 0, rejected: true });
            return;
        }
        // Chunks are only spliced from one sender in one term: two leaders' snapshots
        // of the same index may serialize the same state differently.
        let term = self.term;
        let same = self
            .incoming_snapshot
            .as_ref()
            .is_some_and(|s| s.meta == meta && s.total_bytes == total_bytes && s.from == from && s.term == term);
        let older =
            self.incoming_snapshot.as_ref().is_some_and(|s| s.from == from && s.term == term && s.meta.index > index);
        if !same && offset == 0 && !older {
            // Grow as chunks arrive: a hostile total must not allocate up front.
            self.incoming_snapshot = Some(IncomingSnapshot { meta, total_bytes, from, term, data: Vec::new() });
        } else if !same {
            // A chunk of a transfer this node does not hold (it restarted, or the
            // chunk is stale): ask for the start, keeping any transfer under way.
            self.send(from, MessageBody::SnapshotResponse { index, next_offset: 0, rejected: false });
            return;
        }
        let incoming = self.incoming_snapshot.as_mut().expect("set above");
        let have = incoming.data.len() as u64;
        let fits = offset.checked_add(chunk.len() as u64).is_some_and(|end| end <= total_bytes);
        if offset == have && fits && crc32fast::hash(&chunk) == chunk_crc {
            incoming.data.extend_from_slice(&chunk);
        }
        let have = incoming.data.len() as u64;
        if have < total_bytes {
            self.send(from, MessageBody::SnapshotResponse { index, next_offset: have, rejected: false });
            return;
        }
        let done = self.incoming_snapshot.take().expect("checked above");
        self.install_snapshot(Snapshot { meta: done.meta, data: Arc::from(done.data) });
        self.respond_after_persist(
            from,
            MessageBody::SnapshotResponse { index, next_offset: total_bytes, rejected: false },
        );
    }

    pub(super) fn install_snapshot(&mut self, snapshot: Snapshot) {
        let meta = &snapshot.meta;
        self.log.restore_snapshot(meta.index, meta.term);
        self.conf = meta.conf.clone();
        self.latest_snapshot = snapshot.clone();
        self.snapshot_to_install = Some(snapshot);
    }

    pub(super) fn handle_append_response(&mut self, from: NodeId, index: Index, reject: Option<RejectHint>) {
        if self.role != Role::Leader || index > self.log.last_index() {
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if let Some(hint) = reject {
            let next_probe =
                if hint.term > 0 { self.log.find_conflict_by_term(hint.index, hint.term).0 } else { hint.index };
            let pr = self.progress.get_mut(&from).expect("checked above");
            if pr.on_reject(index, next_probe) {
                self.send_append(from, true);
            }
            return;
        }
        let was_paused = pr.is_paused();
        let updated = pr.on_ack(index);
        // A probe answered at the known match point (after a snapshot) also ends probing.
        let probe_matched = pr.state == ProgressState::Probe && pr.match_index == index;
        if !updated && !probe_matched {
            if was_paused {
                self.send_append(from, false);
            }
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot if pr.snapshot.as_ref().is_none_or(|s| pr.match_index >= s.meta.index) => {
                pr.become_probe()
            }
            _ => {}
        }
        self.maybe_commit();
        while self.send_append(from, false) {}
        self.maybe_finish_transfer(from);
    }

    /// Sends TimeoutNow once the transfer target holds the whole log, however it
    /// got there (appends or a snapshot).
    pub(super) fn maybe_finish_transfer(&mut self, from: NodeId) {
        if from == self.lead_transferee && self.progress[&from].match_index == self.log.last_index() {
            self.send_timeout_now(from);
        }
    }

    pub(super) fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.acked_round = pr.acked_round.max(read_round);
        pr.probe_sent = false;
        match pr.state {
            ProgressState::Replicate if pr.match_index < last_index => {
                if pr.match_index == pr.match_at_last_heartbeat {
                    pr.stalled_heartbeats += 1;
                    if pr.stalled_heartbeats >= STALLED_HEARTBEATS_MAX {
                        pr.become_probe(); // an append was lost in the stream
                    }
                } else {
                    pr.stalled_heartbeats = 0;
                }
            }
            ProgressState::Snapshot => {
                let latest = &self.latest_snapshot;
                match pr.snapshot.as_mut() {
                    // Back after a broken connection, with a newer snapshot here: the
                    // old one, once installed, would need this one sent after it anyway
                    // (the log between the two is compacted away), so send this one.
                    Some(t) if t.interrupted && t.meta.index < latest.meta.index => {
                        *t = SnapshotTransfer::new(latest.meta.clone(), latest.data.clone());
                    }
                    Some(t) => t.on_heartbeat_answer(), // resumes; resends what was lost
                    None => {}
                }
            }
            _ => {}
        }
        pr.match_at_last_heartbeat = pr.match_index;
        let behind = pr.match_index < last_index;
        if pr.state == ProgressState::Snapshot {
            self.send_snapshot_chunks(from);
        } else if behind {
            self.send_append(from, true); // an empty probe finds the match point
        }
        // A transferee that holds the whole log yet did not campaign had not
        // applied its own promotion when the TimeoutNow came (it arrived right
        // behind the commit index): it has by now, so send it again rather
        // than wait out the transfer's election timeout.
        self.maybe_finish_transfer(from);
        self.advance_reads();
    }

    pub(super) fn handle_snapshot_response(&mut self, from: NodeId, index: Index, next_offset: u64, rejected: bool) {
        if self.role != Role::Leader {
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        let Some(t) = pr.snapshot.as_mut().filter(|t| t.meta.index == index) else {
            return;
        };
        let total = t.total_bytes();
        if rejected {
            pr.become_probe();
            pr.probe_sent = true; // try again at the next heartbeat, not in a hot loop
            return;
        }
        if next_offset >= total {
            pr.on_ack(index);
            pr.become_probe();
            self.maybe_commit();
            self.send_append(from, true);
            self.maybe_finish_transfer(from);
            return;
        }
        t.on_answer(next_offset);
        self.send_snapshot_chunks(from);
    }

    /// Sends one append to `to` if its progress allows. With `allow_empty`, an
    /// append without entries still goes out (a probe or a commit update).
    pub(super) fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let commit = self.log.committed();
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let prev_index = pr.next_index - 1;
        let Some(prev_term) = self.log.term(prev_index) else {
            self.start_snapshot_transfer(to);
            return true;
        };
        let entries = if pr.next_index > last_index {
            Vec::new()
        } else {
            self.log.entries_from(pr.next_index, self.cfg.append_bytes_max)
        };
        if entries.is_empty() && !allow_empty {
            return false;
        }
        if let Some(last) = entries.last() {
            let bytes = entries.iter().map(Entry::size_bytes).sum();
            let pr = self.progress.get_mut(&to).expect("checked above");
            pr.sent_entries(last.index, bytes);
        }
        self.send(to, MessageBody::Append { prev_index, prev_term, entries, commit });
        true
    }

    pub(super) fn start_snapshot_transfer(&mut self, to: NodeId) {
        if self.fresh_snapshots && self.latest_snapshot.meta.index < self.log.applied() {
            // Wait for the application's fresh snapshot (see `fresh_snapshots.rs`).
            self.progress.get_mut(&to).expect("caller checked").await_snapshot();
            return;
        }
        self.stream_latest_snapshot(to);
    }

    /// Starts streaming the latest snapshot to `to`.
    pub(super) fn stream_latest_snapshot(&mut self, to: NodeId) {
        let snap = &self.latest_snapshot;
        let transfer = SnapshotTransfer::new(snap.meta.clone(), snap.data.clone());
        self.progress.get_mut(&to).expect("caller checked").become_snapshot(transfer);
        self.send_snapshot_chunks(to);
    }

    /// Sends `to` every chunk its window and the send credit allow.
    pub(super) fn send_snapshot_chunks(&mut self, to: NodeId) {
        while self.send_snapshot_chunk(to) {}
    }

    /// Sends `to` the next chunk of its snapshot if the window and the send credit
    /// allow. A chunk is sent whole or not at all; the one empty chunk of an empty
    /// snapshot is free.
    pub(super) fn send_snapshot_chunk(&mut self, to: NodeId) -> bool {
        let chunk_bytes = self.cfg.snapshot_chunk_bytes;
        let window_bytes = self.snapshot_window_bytes();
        let Some(t) = self.progress.get_mut(&to).and_then(|p| p.snapshot.as_mut()) else {
            return false;
        };
        let Some(len) = t.next_chunk_bytes(chunk_bytes, window_bytes) else {
            return false;
        };
        if let Some(credit) = self.snapshot_credit_bytes.as_mut() {
            if *credit < len {
                return false; // paused until the node core grants more
            }
            *credit -= len;
        }
        let offset = t.sent_offset;
        let chunk = t.data[offset as usize..(offset + len) as usize].to_vec();
        let chunk_crc = crc32fast::hash(&chunk);
        let body =
            MessageBody::Snapshot { meta: t.meta.clone(), total_bytes: t.total_bytes(), offset, chunk, chunk_crc };
        t.sent_chunk(len);
        self.snapshot_bytes_sent += len;
        self.send(to, body);
        true
    }

    /// The in-flight window of one snapshot transfer, in bytes.
    pub(super) fn snapshot_window_bytes(&self) -> u64 {
        SNAPSHOT_CHUNKS_IN_FLIGHT_MAX.saturating_mul(self.cfg.snapshot_chunk_bytes)
    }

    /// Sends appends to every peer: as many as their windows allow.
    pub(super) fn broadcast_append(&mut self, allow_empty: bool) {
        let me = self.id();
        let peers: Vec<NodeId> = self.progress.keys().copied().filter(|&p| p != me).collect();
        for peer in peers {
            let mut allow_empty = allow_empty;
            while self.send_append(peer, allow_empty) {
                allow_empty = false;
                if self.progress[&peer].state != ProgressState::Replicate {
                    break;
                }
            }
        }
    }

    /// Raises the commit index to what a majority of voters holds, counting only
    /// entries of the current term (Raft §5.4.2, Figure 8).
    pub(super) fn maybe_commit(&mut self) {
        let me = self.id();
        let mut matches: Vec<Index> = self
            .conf
            .voters
            .iter()
            .map(|v| if *v == me { self.log.persisted() } else { self.progress.get(v).map_or(0, |p| p.match_index) })
            .collect();
        let quorum_index = majority_value(&mut matches);
        if quorum_index <= self.log.committed() || self.log.term(quorum_index) != Some(self.term) {
            return;
        }
        let was_committed_in_term = self.committed_in_term();
        let old = self.log.committed();
        self.log.commit_to(quorum_index);
        let newly: u64 = (old + 1..=quorum_index).filter_map(|i| self.log.get(i)).map(Entry::size_bytes).sum();
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(newly);
        self.commit_advanced = true;
        if !was_committed_in_term {
            let index = self.log.committed();
            for ctx in std::mem::take(&mut self.reads_waiting_commit) {
                if self.conf.voters == [me] || self.lease_valid() {
                    self.ready_reads.push(ReadState { index, ctx });
                } else {
                    self.pending_reads.push_back(PendingRead { ctx, index, round: self.read_round + 1 });
                    self.read_heartbeat_due = true;
                }
            }
        }
    }
}
