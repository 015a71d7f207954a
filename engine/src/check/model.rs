//! The sequential model of one key: a versioned register (DESIGN §6) whose
//! versions may be only partly known.
//!
//! Owns [`State`] (the key's version chain as the search sees it) and [`Step`]
//! (one operation of the key, normalised, values interned), and the transition
//! function between them.
//!
//! Invariants of a [`State`]'s chain (entries oldest first):
//! - every entry's version lies in its interval `lo..=hi`, `lo >= 1`;
//! - the chain is *bounds-consistent* for strictly increasing versions:
//!   `entry[i+1].lo >= entry[i].lo + 1` and `entry[i].hi <= entry[i+1].hi - 1`,
//!   and every interval is non-empty. Under this invariant any single value in
//!   any single interval extends to a strictly increasing assignment of all
//!   versions, so narrowing one interval to a non-empty part of itself and
//!   propagating along the chain can never fail; [`State::restrict`] relies on
//!   it and asserts it;
//! - the chain may have lost entries that no remaining `GetAt` can observe
//!   ([`State::prune`]), only where that loses no ordering constraint between
//!   the entries kept; the last entry (the key's current value) is never lost.

/// A value of one key, interned: equal ids mean equal bytes.
pub(crate) type ValueId = u32;

use super::history::Version;

/// What a read saw, values interned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// A live value at a version.
    Value { value: ValueId, version: Version },
    /// Nothing (absent, tombstone, or no version ≤ V).
    NotFound,
}

/// One constraining operation of a key, as the model applies it. A `version`
/// of `None` marks an indeterminate write: optional, and its version unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A latest read.
    Get(Seen),
    /// A read of the newest version ≤ `at_version`.
    GetAt { at_version: Version, seen: Seen },
    /// A put that took effect (`Some`) or may have (`None`).
    Put { value: ValueId, version: Option<Version> },
    /// A delete that wrote a tombstone (`Some`) or may have (`None`).
    Delete { version: Option<Version> },
    /// A delete that found nothing and wrote nothing.
    DeleteNotFound,
    /// A cas that took effect (`Some`) or may have (`None`).
    Cas { expected: Version, value: ValueId, version: Option<Version> },
    /// A cas that failed, reporting the key's `current` version.
    CasMismatch { expected: Version, current: Version },
}

impl Step {
    /// True for indeterminate writes: they may take effect at any point after
    /// their invocation, or never, so the search may leave them out.
    pub(crate) fn is_optional(&self) -> bool {
        matches!(
            self,
            Step::Put { version: None, .. } | Step::Delete { version: None } | Step::Cas { version: None, .. }
        )
    }

    /// The version a `GetAt` reads at, if this is one.
    pub(crate) fn at_version(&self) -> Option<Version> {
        match self {
            Step::GetAt { at_version, .. } => Some(*at_version),
            _ => None,
        }
    }
}

/// One version of the key: a value (`None` = tombstone) whose version is known
/// to lie in `lo..=hi` (`lo == hi` once known).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Entry {
    value: Option<ValueId>,
    lo: Version,
    hi: Version,
}

/// The key's state: its version chain, oldest first. Empty = never written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct State {
    chain: Vec<Entry>,
}

impl State {
    /// True when the key currently holds a value (not absent, not deleted).
    fn live(&self) -> bool {
        self.chain.last().is_some_and(|entry| entry.value.is_some())
    }

    /// The smallest version a new write may take.
    fn next_lo(&self) -> Option<Version> {
        match self.chain.last() {
            None => Some(1),
            Some(last) => last.lo.checked_add(1),
        }
    }

    /// Narrows entry `index` to `lo..=hi` and propagates the bounds along the
    /// chain. False (state unchanged in meaning, to be dropped) when the narrowed
    /// interval is empty.
    fn restrict(&mut self, index: usize, lo: Version, hi: Version) -> bool {
        let entry = &mut self.chain[index];
        let new_lo = entry.lo.max(lo);
        let new_hi = entry.hi.min(hi);
        if new_lo > new_hi {
            return false;
        }
        entry.lo = new_lo;
        entry.hi = new_hi;
        for next in index + 1..self.chain.len() {
            let floor = self.chain[next - 1].lo + 1;
            if self.chain[next].lo >= floor {
                break;
            }
            self.chain[next].lo = floor;
            assert!(floor <= self.chain[next].hi, "version chain lost bounds-consistency");
        }
        for previous in (0..index).rev() {
            let ceiling = self.chain[previous + 1].hi - 1;
            if self.chain[previous].hi <= ceiling {
                break;
            }
            self.chain[previous].hi = ceiling;
            assert!(self.chain[previous].lo <= ceiling, "version chain lost bounds-consistency");
        }
        true
    }

    /// Appends a new version holding `value`, with a version in `lo..=hi` and
    /// above the current one. False when no such version exists.
    fn append(&mut self, value: Option<ValueId>, lo: Version, hi: Version) -> bool {
        let Some(floor) = self.next_lo() else {
            return false;
        };
        let lo = lo.max(floor);
        if lo > hi {
            return false;
        }
        // Enter it unconstrained above, then narrow: `restrict` propagates the
        // new upper bound back to the older entries.
        self.chain.push(Entry { value, lo, hi: Version::MAX });
        let last = self.chain.len() - 1;
        self.restrict(last, lo, hi)
    }

    /// Appends a write with a known version, or one with only a lower bound.
    fn append_write(&mut self, value: Option<ValueId>, version: Option<Version>) -> bool {
        match version {
            Some(version) => self.append(value, version, version),
            None => self.append(value, 0, Version::MAX),
        }
    }

    /// Pins the current (last) entry's version to `version`.
    fn pin_current(&mut self, version: Version) -> bool {
        match self.chain.len() {
            0 => false,
            len => self.restrict(len - 1, version, version),
        }
    }

    /// Every state the key can be in after `step` is linearized now. Empty when
    /// the step cannot take effect now (for an optional step, also when taking
    /// effect would change nothing: leaving it out is the same).
    pub(crate) fn successors(&self, step: &Step) -> Vec<State> {
        match *step {
            Step::Get(seen) => self.after_get(seen).into_iter().collect(),
            Step::GetAt { at_version, seen } => self.after_get_at(at_version, seen),
            Step::Put { value, version } => {
                let mut next = self.clone();
                keep_if(next.append_write(Some(value), version), next)
            }
            Step::Delete { version } => {
                let mut next = self.clone();
                keep_if(self.live() && next.append_write(None, version), next)
            }
            Step::DeleteNotFound => keep_if(!self.live(), self.clone()),
            Step::Cas { expected, value, version } => {
                let mut next = self.clone();
                let matched = if expected == 0 { !self.live() } else { self.live() && next.pin_current(expected) };
                keep_if(matched && next.append_write(Some(value), version), next)
            }
            Step::CasMismatch { expected, current } => {
                let mut next = self.clone();
                let reported = if current == 0 { !self.live() } else { self.live() && next.pin_current(current) };
                keep_if(reported && current != expected, next)
            }
        }
    }

    fn after_get(&self, seen: Seen) -> Option<State> {
        match seen {
            Seen::NotFound => (!self.live()).then(|| self.clone()),
            Seen::Value { value, version } => {
                let last = self.chain.last()?;
                if last.value != Some(value) {
                    return None;
                }
                let mut next = self.clone();
                next.pin_current(version).then_some(next)
            }
        }
    }

    /// A read at V sees the entry just below the first entry above V. With
    /// intervals, several split points may be possible: one successor each.
    fn after_get_at(&self, at_version: Version, seen: Seen) -> Vec<State> {
        let above = at_version.checked_add(1);
        let len = self.chain.len();
        let mut out = Vec::new();
        match seen {
            Seen::Value { value, version } => {
                if version > at_version {
                    return out;
                }
                for index in 0..len {
                    if self.chain[index].value != Some(value) {
                        continue;
                    }
                    let mut next = self.clone();
                    if !next.restrict(index, version, version) {
                        continue;
                    }
                    if index + 1 < len {
                        let Some(above) = above else { continue };
                        if !next.restrict(index + 1, above, Version::MAX) {
                            continue;
                        }
                    }
                    out.push(next);
                }
            }
            Seen::NotFound => {
                // `split` = number of entries with a version ≤ V.
                for split in 0..=len {
                    if split > 0 && self.chain[split - 1].value.is_some() {
                        continue;
                    }
                    let mut next = self.clone();
                    if split > 0 && !next.restrict(split - 1, 0, at_version) {
                        continue;
                    }
                    if split < len {
                        let Some(above) = above else { continue };
                        if !next.restrict(split, above, Version::MAX) {
                            continue;
                        }
                    }
                    out.push(next);
                }
            }
        }
        out
    }

    /// Forgets the entries no remaining read can observe, so that two states
    /// that differ only there merge in the memo. `reads_at` holds the
    /// `at_version`s of the `GetAt` reads not yet linearized, ascending.
    ///
    /// Entry i is observable iff it can be the newest ≤ V for one of them:
    /// `lo[i] <= V < hi[i+1]`. The last entry is always kept (it is the key's
    /// current value). An unobservable entry is dropped when that loses no
    /// constraint between the entries kept: when its version is known, or when
    /// every entry between it and the previous known one (or the start of the
    /// chain) is unobservable too. Such an entry's interval never changes again
    /// (nothing observes it and no bound flows into it from a fixed version),
    /// so what it implied for its successors is already in their `lo`, and a
    /// successor's shrinking `hi` can never empty it.
    pub(crate) fn prune(&mut self, reads_at: &[Version]) {
        let chain = &self.chain;
        let last = chain.len().saturating_sub(1);
        let observable = |index: usize| {
            let first_at_or_above = reads_at.partition_point(|&at| at < chain[index].lo);
            reads_at.get(first_at_or_above).is_some_and(|&at| at < chain[index + 1].hi)
        };
        let mut keep = vec![true; chain.len()];
        let mut after_fixed = true;
        for (index, kept) in keep.iter_mut().enumerate().take(last) {
            let known = chain[index].lo == chain[index].hi;
            let dropped = (known || after_fixed) && !observable(index);
            *kept = !dropped;
            after_fixed = known || dropped;
        }
        if keep.iter().all(|&kept| kept) {
            return;
        }
        let mut keep = keep.into_iter();
        self.chain.retain(|_| keep.next().unwrap_or(true));
    }

    /// The chain, for reports and tests: (value, lowest, highest version).
    #[cfg(test)]
    pub(crate) fn entries(&self) -> Vec<(Option<ValueId>, Version, Version)> {
        self.chain.iter().map(|entry| (entry.value, entry.lo, entry.hi)).collect()
    }
}

fn keep_if(condition: bool, state: State) -> Vec<State> {
    if condition { vec![state] } else { Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(state: &State, value: ValueId, version: Option<Version>) -> State {
        let mut next = state.successors(&Step::Put { value, version });
        assert_eq!(next.len(), 1, "put must apply");
        next.pop().expect("one successor")
    }

    #[test]
    fn put_version_must_exceed_the_current_one() {
        let state = put(&State::default(), 1, Some(5));
        assert!(state.successors(&Step::Put { value: 2, version: Some(5) }).is_empty());
        assert_eq!(put(&state, 2, Some(6)).entries().len(), 2);
    }

    #[test]
    fn unknown_version_is_bounded_by_its_neighbours() {
        let state = put(&State::default(), 1, Some(3));
        let state = put(&state, 2, None);
        let state = put(&state, 3, Some(9));
        assert_eq!(state.entries(), vec![(Some(1), 3, 3), (Some(2), 4, 8), (Some(3), 9, 9)]);
        // A read at 6 that finds nothing newer than the value at 3 pins the
        // unknown one above 6.
        let seen = Seen::Value { value: 1, version: 3 };
        let after = state.successors(&Step::GetAt { at_version: 6, seen });
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].entries()[1], (Some(2), 7, 8));
    }

    #[test]
    fn prune_keeps_unknown_versions_that_still_order_others() {
        let state = put(&State::default(), 1, None);
        let state = put(&state, 2, None);
        let state = put(&state, 3, None);
        // The middle entry is unobservable, but pinning the first later must
        // still push the last two versions above it.
        let mut pruned = state;
        pruned.prune(&[]);
        assert_eq!(pruned.entries().len(), 1);
        let state = put(&State::default(), 1, None);
        let state = put(&state, 2, None);
        let mut state = put(&state, 3, None);
        state.prune(&[1]);
        assert_eq!(state.entries().len(), 3);
    }

    #[test]
    fn no_room_between_adjacent_versions() {
        let state = put(&State::default(), 1, Some(3));
        let state = put(&state, 2, None);
        assert!(state.successors(&Step::Put { value: 3, version: Some(4) }).is_empty());
    }

    #[test]
    fn prune_keeps_what_a_read_at_can_still_see() {
        let state = put(&State::default(), 1, Some(3));
        let state = put(&state, 2, Some(5));
        let state = put(&state, 3, Some(7));
        let mut pruned = state.clone();
        pruned.prune(&[5]);
        assert_eq!(pruned.entries(), vec![(Some(2), 5, 5), (Some(3), 7, 7)]);
        // A read at 3 or 4 sees the first, one at 7 or more the last.
        let mut pruned = state.clone();
        pruned.prune(&[4, 8]);
        assert_eq!(pruned.entries(), vec![(Some(1), 3, 3), (Some(3), 7, 7)]);
        let mut pruned = state;
        pruned.prune(&[]);
        assert_eq!(pruned.entries(), vec![(Some(3), 7, 7)]);
    }
}
