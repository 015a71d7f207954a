//! Shrinking a failing key history to a small one that still fails.
//!
//! Owns [`shrink_key_history`]: greedy delta debugging over the key's
//! operations (drop halves, then quarters, … then single operations, keeping
//! every drop after which the history still fails).
//!
//! Invariant: every accepted drop is a *weakening*, so the kept operations
//! fail on their own and their failure implies the original history's (the
//! result is evidence, not an artefact of shrinking). Dropping a read, a
//! not-found delete or a failed cas only removes constraints. Dropping a write
//! is not a weakening by itself (a read of its value would lose its
//! justification), so a write counts as dropped only if the history still fails
//! when that write, and every write dropped before it, may or may not have
//! taken effect: either as recorded (inside its window, with its version) or
//! never. (Already indeterminate writes stay as they were: anywhere after their
//! invocation, or never.) Writes weakened this way keep the search cheap: the
//! search settles each one at its return time.

use super::history::{HistoryError, Operation, Outcome};
use super::search::Search;
use super::{CheckConfig, KeyVerdict, check_key, search_key};

/// A shrunk failing key history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shrunk {
    /// The operations kept, in input order. Not linearizable on their own.
    pub ops: Vec<Operation>,
    /// The writes dropped, as recorded: `ops` stays non-linearizable whether
    /// each of them took effect as recorded or never did.
    pub dropped_writes: Vec<Operation>,
    /// Checks run while shrinking.
    pub checks_used: u32,
    /// True when the check budget ran out before no single drop helped any
    /// more: a smaller failing history may exist.
    pub budget_exhausted: bool,
}

/// Shrinks the history of one key. `None` when the history is not definitely
/// non-linearizable under `config` (linearizable, or budget spent): there is
/// nothing to shrink. At most `checks_max` searches are run, each within
/// `config`'s budget; a search that runs out of budget counts as "does not
/// fail", so shrinking never rests on an undecided check.
pub fn shrink_key_history(
    ops: &[Operation],
    config: &CheckConfig,
    checks_max: u32,
) -> Result<Option<Shrunk>, HistoryError> {
    let KeyVerdict::NotLinearizable(witness) = check_key(ops, config)? else {
        return Ok(None);
    };
    let mut shrinker =
        Shrinker { config, checks_max, checks_used: 1, kept: witness.history, dropped_writes: Vec::new() };
    let budget_exhausted = !shrinker.run();
    Ok(Some(Shrunk {
        ops: shrinker.kept,
        dropped_writes: shrinker.dropped_writes,
        checks_used: shrinker.checks_used,
        budget_exhausted,
    }))
}

struct Shrinker<'a> {
    config: &'a CheckConfig,
    checks_max: u32,
    checks_used: u32,
    kept: Vec<Operation>,
    dropped_writes: Vec<Operation>,
}

impl Shrinker<'_> {
    /// Shrinks until 1-minimal (true) or out of checks (false).
    fn run(&mut self) -> bool {
        let mut chunk = (self.kept.len() / 2).max(1);
        loop {
            let mut progress = false;
            let mut start = 0;
            while start < self.kept.len() {
                let end = (start + chunk).min(self.kept.len());
                match self.try_drop(start, end) {
                    None => return false,
                    Some(true) => progress = true,
                    Some(false) => start = end,
                }
            }
            if chunk > 1 {
                chunk /= 2;
            } else if !progress {
                return true;
            }
        }
    }

    /// Drops `kept[start..end]` if the rest still fails. `None` when out of
    /// checks.
    fn try_drop(&mut self, start: usize, end: usize) -> Option<bool> {
        if self.checks_used >= self.checks_max {
            return None;
        }
        self.checks_used += 1;
        let writes: Vec<Operation> =
            self.kept[start..end].iter().filter(|op| op.call.is_write() && !is_pure_constraint(op)).cloned().collect();
        let candidate: Vec<Operation> = self.kept[..start].iter().chain(&self.kept[end..]).cloned().collect();
        let mut may_have_happened = self.dropped_writes.clone();
        may_have_happened.extend(writes);
        let fails = matches!(search_key(&candidate, &may_have_happened, self.config), Search::NotLinearizable { .. });
        if fails {
            self.kept = candidate;
            self.dropped_writes = may_have_happened;
        }
        Some(fails)
    }
}

/// Writes that wrote nothing: a not-found delete, a failed cas.
fn is_pure_constraint(op: &Operation) -> bool {
    matches!(op.outcome, Outcome::NotFound | Outcome::VersionMismatch { .. })
}
