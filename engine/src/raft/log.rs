//! The in-memory Raft log of one group: entries since the last snapshot, and the
//! marks that say how far they are committed, persisted, handed to storage and
//! handed to the application.
//!
//! Invariants (asserted): `snapshot_index ≤ applied ≤ committed`,
//! `applied ≤ persisted` (nothing is applied before it is durable locally),
//! `persisted ≤ last_index`, `committed ≤ last_index` and entry `i` of `entries`
//! has index `snapshot_index + 1 + i`. Committed entries are never truncated.

use std::collections::VecDeque;

use corekv_rpc::raft::{Entry, Index, Term};

/// The log of one group.
#[derive(Debug, Clone)]
pub struct RaftLog {
    snapshot_index: Index,
    snapshot_term: Term,
    entries: VecDeque<Entry>,
    committed: Index,
    applied: Index,
    /// Every entry in `(snapshot_index, persisted]` is durable in local storage.
    persisted: Index,
    /// First index not yet handed to storage in a `Ready`.
    unstable_from: Index,
}

impl RaftLog {
    /// A log that starts after a snapshot at `(snapshot_index, snapshot_term)` and
    /// holds `entries` (already durable: this is how a node restarts).
    pub fn restore_durable(
        snapshot_index: Index,
        snapshot_term: Term,
        entries: Vec<Entry>,
        committed: Index,
    ) -> RaftLog {
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.index, snapshot_index + 1 + i as u64, "durable log has a gap");
        }
        let last = snapshot_index + entries.len() as u64;
        RaftLog {
            snapshot_index,
            snapshot_term,
            entries: entries.into(),
            committed: committed.clamp(snapshot_index, last),
            applied: snapshot_index,
            persisted: last,
            unstable_from: last + 1,
        }
    }

    /// Index of the last snapshot (0 when none).
    pub fn snapshot_index(&self) -> Index {
        self.snapshot_index
    }

    /// Term of the entry at the snapshot index.
    pub fn snapshot_term(&self) -> Term {
        self.snapshot_term
    }

    /// First index held in memory.
    pub fn first_index(&self) -> Index {
        self.snapshot_index + 1
    }

    /// Last index (the snapshot index when no entries follow it).
    pub fn last_index(&self) -> Index {
        self.snapshot_index + self.entries.len() as u64
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot_term, |e| e.term)
    }

    /// Highest committed index.
    pub fn committed(&self) -> Index {
        self.committed
    }

    /// Highest index handed to the application.
    pub fn applied(&self) -> Index {
        self.applied
    }

    /// Highest index durable locally.
    pub fn persisted(&self) -> Index {
        self.persisted
    }

    /// Term at `index`, or `None` when it is compacted away or past the end.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.get(index).map(|e| e.term)
    }

    /// The entry at `index`, if held.
    pub fn get(&self, index: Index) -> Option<&Entry> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries.get((index - self.snapshot_index - 1) as usize)
    }

    /// True when the log holds `index` with `term`.
    pub fn matches(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Raft's "at least as up to date" rule (§5.4.1) for a candidate's last entry.
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term() || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// The largest index ≤ `index` whose term is ≤ `term`, with that term; the
    /// term is 0 when the index is compacted (unknown) or 0. Used on both sides of
    /// the fast back-up.
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Some(t) if t > term && i > self.snapshot_index => i -= 1,
                Some(t) => return (i, if t <= term { t } else { 0 }),
                None => return (i, 0),
            }
        }
    }

    /// Up to `bytes_max` bytes of entries starting at `from` (at least one entry
    /// when any exists). Empty when `from` is past the end.
    pub fn entries_from(&self, from: Index, bytes_max: u64) -> Vec<Entry> {
        assert!(from > self.snapshot_index, "entries below the snapshot are gone");
        let mut out = Vec::new();
        let mut bytes = 0;
        let start = (from - self.snapshot_index - 1) as usize;
        for e in self.entries.range(start..) {
            bytes += e.size_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(e.clone());
        }
        out
    }

    /// Bytes of the entries after `index` (their data and `overhead` each).
    pub fn bytes_after(&self, index: Index, overhead: u64) -> u64 {
        let start = index.saturating_sub(self.snapshot_index) as usize;
        self.entries.range(start.min(self.entries.len())..).map(|e| e.data.len() as u64 + overhead).sum()
    }

    /// Appends entries created by this node as leader.
    pub fn append_own(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index() + 1, "leader appends must be contiguous");
        assert!(entry.term >= self.last_term(), "leader appends must not go back in term");
        self.entries.push_back(entry);
    }

    /// Follower side of an append whose entries follow `prev_index` (which the
    /// caller has matched). Entries already held with the same term are skipped; at
    /// the first conflict the log is cut and the rest appended. Returns the index of
    /// the last entry of the message (the follower now matches the leader up to it).
    pub fn append_after(&mut self, prev_index: Index, entries: Vec<Entry>) -> Index {
        let last_new = prev_index + entries.len() as u64;
        let mut iter = entries.into_iter().peekable();
        while let Some(e) = iter.peek() {
            if e.index <= self.snapshot_index || self.matches(e.index, e.term) {
                iter.next();
                continue;
            }
            break;
        }
        if let Some(first) = iter.peek() {
            let from = first.index;
            assert!(from > self.committed, "a leader tried to overwrite committed entry {from}");
            self.truncate_from(from);
        }
        for e in iter {
            assert_eq!(e.index, self.last_index() + 1, "append with a gap");
            self.entries.push_back(e);
        }
        last_new
    }

    /// Drops every entry at or after `from`.
    fn truncate_from(&mut self, from: Index) {
        assert!(from > self.snapshot_index);
        let keep = (from - self.snapshot_index - 1) as usize;
        self.entries.truncate(keep);
        self.persisted = self.persisted.min(from - 1);
        self.unstable_from = self.unstable_from.min(from);
    }

    /// Raises the commit index (never lowers it).
    pub fn commit_to(&mut self, index: Index) {
        if index > self.committed {
            assert!(index <= self.last_index(), "commit {index} past the last index {}", self.last_index());
            self.committed = index;
        }
    }

    /// Hands out the entries not yet handed to storage, marking them in flight.
    pub fn take_unstable(&mut self) -> Vec<Entry> {
        if self.unstable_from > self.last_index() {
            return Vec::new();
        }
        let from = self.unstable_from.max(self.first_index());
        self.unstable_from = self.last_index() + 1;
        self.entries_from(from, u64::MAX)
    }

    /// True when entries wait to be handed to storage.
    pub fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index()
    }

    /// Storage reports entries up to `(index, term)` durable. Ignored when the log
    /// no longer holds that entry (it was replaced meanwhile).
    pub fn persisted_to(&mut self, index: Index, term: Term) {
        if index > self.persisted && self.matches(index, term) {
            self.persisted = index;
        }
    }

    /// The highest index the application may apply now.
    pub fn applicable_to(&self) -> Index {
        self.committed.min(self.persisted)
    }

    /// True when committed, durable entries wait to be applied.
    pub fn has_applicable(&self) -> bool {
        self.applicable_to() > self.applied
    }

    /// Hands out committed, durable entries for the application, up to `bytes_max`
    /// (at least one), and marks them applied.
    pub fn take_applicable(&mut self, bytes_max: u64) -> Vec<Entry> {
        let to = self.applicable_to();
        if to <= self.applied {
            return Vec::new();
        }
        let mut out = self.entries_from(self.applied + 1, bytes_max);
        out.truncate((to - self.applied) as usize);
        self.applied = out.last().map_or(self.applied, |e| e.index);
        out
    }

    /// Drops entries up to `index` after the application made a snapshot there.
    pub fn compact_to(&mut self, index: Index) {
        assert!(index <= self.applied, "compaction past the applied index");
        if index <= self.snapshot_index {
            return;
        }
        let term = self.term(index).expect("compaction point is in the log");
        let drop = (index - self.snapshot_index) as usize;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Replaces the whole log with a snapshot received from the leader.
    pub fn restore_snapshot(&mut self, index: Index, term: Term) {
        assert!(index > self.committed, "a snapshot must move the log forward");
        self.entries.clear();
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.committed = index;
        self.applied = index;
        self.persisted = index;
        self.unstable_from = index + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corekv_rpc::raft::EntryKind;

    fn e(index: Index, term: Term) -> Entry {
        Entry { term, index, kind: EntryKind::Normal, data: vec![index as u8] }
    }

    fn log_with(terms: &[Term]) -> RaftLog {
        let entries = terms.iter().enumerate().map(|(i, &t)| e(i as u64 + 1, t)).collect();
        RaftLog::restore_durable(0, 0, entries, 0)
    }

    #[test]
    fn append_skips_matching_entries_and_cuts_at_the_first_conflict() {
        let mut log = log_with(&[1, 1, 2, 2]);
        assert_eq!(log.append_after(1, vec![e(2, 1), e(3, 2)]), 3);
        assert_eq!(log.last_index(), 4, "matching entries are not a conflict");
        assert_eq!(log.append_after(2, vec![e(3, 3)]), 3);
        assert_eq!((log.last_index(), log.last_term()), (3, 3));
        assert_eq!(log.persisted(), 2, "the replaced entries are no longer durable");
        assert_eq!(log.take_unstable(), vec![e(3, 3)]);
    }

    #[test]
    #[should_panic(expected = "overwrite committed")]
    fn overwriting_a_committed_entry_is_a_bug() {
        let mut log = log_with(&[1, 1]);
        log.commit_to(2);
        log.append_after(1, vec![e(2, 2)]);
    }

    #[test]
    fn nothing_is_applied_before_it_is_durable() {
        let mut log = log_with(&[1]);
        log.append_own(e(2, 1));
        log.append_own(e(3, 1));
        log.commit_to(3);
        assert_eq!(log.take_applicable(u64::MAX).len(), 1);
        assert_eq!(log.take_unstable().len(), 2);
        log.persisted_to(3, 1);
        assert_eq!(log.take_applicable(u64::MAX).iter().map(|e| e.index).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn a_persist_report_for_a_replaced_entry_is_ignored() {
        let mut log = log_with(&[1]);
        log.append_after(1, vec![e(2, 1), e(3, 1)]);
        log.take_unstable();
        log.append_after(1, vec![e(2, 2)]);
        log.persisted_to(3, 1);
        assert_eq!(log.persisted(), 1);
        log.persisted_to(2, 2);
        assert_eq!(log.persisted(), 2);
    }

    #[test]
    fn find_conflict_by_term_skips_whole_terms() {
        let log = log_with(&[1, 1, 1, 4, 4, 5, 5, 6, 6, 6]);
        assert_eq!(log.find_conflict_by_term(10, 3), (3, 1));
        assert_eq!(log.find_conflict_by_term(10, 5), (7, 5));
        assert_eq!(log.find_conflict_by_term(100, 6), (10, 6));
        assert_eq!(log.find_conflict_by_term(5, 0), (0, 0));
    }

    #[test]
    fn compaction_and_snapshot_restore_move_the_start() {
        let mut log = log_with(&[1, 1, 2, 2]);
        log.commit_to(4);
        log.take_applicable(u64::MAX);
        log.compact_to(3);
        assert_eq!((log.first_index(), log.term(3), log.term(2)), (4, Some(2), None));
        log.restore_snapshot(10, 3);
        assert_eq!((log.last_index(), log.last_term(), log.committed(), log.applied()), (10, 3, 10, 10));
        assert!(log.is_up_to_date(10, 3) && !log.is_up_to_date(11, 2));
    }

    #[test]
    fn take_applicable_respects_the_byte_budget_but_makes_progress() {
        let mut log = log_with(&[1, 1, 1]);
        log.commit_to(3);
        assert_eq!(log.take_applicable(1).len(), 1);
        assert_eq!(log.take_applicable(u64::MAX).len(), 2);
    }
}
