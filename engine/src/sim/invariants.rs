//! Raft safety invariants, checked by the simulator as the run goes:
//!
//! - election safety: at most one leader per term;
//! - log matching: two logs that hold an entry with the same index and term hold
//!   the same entries up to it;
//! - leader completeness: a new leader's log holds every entry applied anywhere;
//! - state-machine safety: every node applies the same command at each index, in
//!   strictly increasing order, never below a snapshot it restored; a snapshot
//!   carries the same state every node reached at its index;
//! - durability: no command acknowledged to a client is ever replaced.
//!
//! Each check returns a description of the violation; the simulator turns it into
//! a failure that names the seed. Every check has a test with a planted bug.

use std::collections::BTreeMap;

use corekv_rpc::raft::{Entry, Index, NodeId, Term};

/// The state chain after applying `data` to a state whose chain was `prev`: an
/// FNV-1a style fold, so two nodes agree on the chain iff they applied the same
/// commands in the same order.
pub fn chain(prev: u64, data: &[u8]) -> u64 {
    let mut h = prev ^ 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ (data.len() as u64).rotate_left(17)
}

/// What the whole cluster has established so far.
#[derive(Debug, Default)]
pub struct History {
    /// term -> the node that led it.
    leaders: BTreeMap<Term, NodeId>,
    /// index -> (term, data, state chain after it), from the first application.
    applied: BTreeMap<Index, (Term, Vec<u8>, u64)>,
    /// Highest index whose chain is known (applied somewhere).
    pub applied_max: Index,
}

impl History {
    /// A node became leader of `term`.
    pub fn on_leader(&mut self, term: Term, node: NodeId) -> Result<(), String> {
        match self.leaders.insert(term, node) {
            Some(other) if other != node => Err(format!("two leaders in term {term}: {other} and {node}")),
            _ => Ok(()),
        }
    }

    /// Number of distinct terms that had a leader.
    pub fn leader_terms(&self) -> usize {
        self.leaders.len()
    }

    /// `node` applied `entry`, reaching state chain `state`.
    pub fn on_apply(&mut self, node: NodeId, entry: &Entry, state: u64) -> Result<(), String> {
        let first = self.applied.entry(entry.index).or_insert_with(|| (entry.term, entry.data.clone(), state));
        if first.0 != entry.term || first.1 != entry.data || first.2 != state {
            return Err(format!(
                "state machine safety: node {node} applied (term {}, {} bytes) at index {}, \
                 another node applied (term {}, {} bytes) there",
                entry.term,
                entry.data.len(),
                entry.index,
                first.0,
                first.1.len()
            ));
        }
        self.applied_max = self.applied_max.max(entry.index);
        Ok(())
    }

    /// The state chain the cluster reached at `index`, if anyone applied it.
    pub fn chain_at(&self, index: Index) -> Option<u64> {
        if index == 0 {
            return Some(0);
        }
        self.applied.get(&index).map(|a| a.2)
    }

    /// The entry the cluster applied at `index`.
    pub fn entry_at(&self, index: Index) -> Option<(Term, &[u8])> {
        self.applied.get(&index).map(|a| (a.0, a.1.as_slice()))
    }

    /// A new leader must hold every applied entry past its snapshot.
    pub fn check_leader_complete(
        &self,
        node: NodeId,
        snapshot_index: Index,
        term_at: impl Fn(Index) -> Option<Term>,
    ) -> Result<(), String> {
        for (&index, (term, _, _)) in self.applied.range(snapshot_index + 1..) {
            if term_at(index) != Some(*term) {
                return Err(format!(
                    "leader completeness: new leader {node} lacks applied entry {index} of term {term}"
                ));
            }
        }
        Ok(())
    }
}

/// Log matching over the in-memory logs of nodes `a` and `b`.
pub fn check_log_matching(a: NodeId, log_a: &[Entry], b: NodeId, log_b: &[Entry]) -> Result<(), String> {
    let by_index: BTreeMap<Index, &Entry> = log_b.iter().map(|e| (e.index, e)).collect();
    // The highest index at which both hold the same term...
    let top = log_a.iter().rev().find(|e| by_index.get(&e.index).is_some_and(|o| o.term == e.term)).map(|e| e.index);
    let Some(top) = top else { return Ok(()) };
    // ...and everything both hold below it must be identical.
    for e in log_a.iter().filter(|e| e.index <= top) {
        if let Some(o) = by_index.get(&e.index)
            && (o.term != e.term || o.data != e.data)
        {
            return Err(format!(
                "log matching: nodes {a} and {b} agree at index {top} but differ at index {}",
                e.index
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use corekv_rpc::raft::EntryKind;

    fn e(index: Index, term: Term, data: &[u8]) -> Entry {
        Entry { term, index, kind: EntryKind::Normal, data: data.to_vec() }
    }

    #[test]
    fn planted_second_leader_in_a_term_is_caught() {
        let mut h = History::default();
        h.on_leader(3, 1).unwrap();
        h.on_leader(3, 1).unwrap();
        assert!(h.on_leader(3, 2).is_err());
    }

    #[test]
    fn planted_divergent_application_is_caught() {
        let mut h = History::default();
        h.on_apply(1, &e(1, 1, b"a"), chain(0, b"a")).unwrap();
        h.on_apply(2, &e(1, 1, b"a"), chain(0, b"a")).unwrap();
        assert!(h.on_apply(3, &e(1, 1, b"b"), chain(0, b"b")).is_err(), "other command");
        assert!(h.on_apply(3, &e(1, 2, b"a"), chain(0, b"a")).is_err(), "other term");
        assert!(h.on_apply(3, &e(1, 1, b"a"), 42).is_err(), "other state (double apply earlier)");
    }

    #[test]
    fn planted_incomplete_leader_is_caught() {
        let mut h = History::default();
        h.on_apply(1, &e(1, 1, b"a"), 1).unwrap();
        h.on_apply(1, &e(2, 2, b"b"), 2).unwrap();
        assert!(h.check_leader_complete(3, 0, |i| [None, Some(1), Some(2)].get(i as usize).copied().flatten()).is_ok());
        assert!(h.check_leader_complete(3, 0, |i| if i == 1 { Some(1) } else { None }).is_err());
        assert!(h.check_leader_complete(3, 2, |_| None).is_ok(), "covered by the snapshot");
    }

    #[test]
    fn planted_log_mismatch_is_caught() {
        let a = vec![e(1, 1, b"x"), e(2, 1, b"y"), e(3, 2, b"z")];
        let diverged_after = vec![e(1, 1, b"x"), e(2, 1, b"y"), e(3, 3, b"w")];
        let broken = vec![e(1, 1, b"q"), e(2, 1, b"y"), e(3, 2, b"z")];
        assert!(check_log_matching(1, &a, 2, &a.clone()).is_ok());
        assert!(check_log_matching(1, &a, 2, &diverged_after).is_ok(), "a conflicting tail is allowed");
        assert!(check_log_matching(1, &a, 2, &broken).is_err());
    }
}
