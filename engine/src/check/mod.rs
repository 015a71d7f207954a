//! Linearizability checker for recorded client histories of the versioned
//! key-value API (DESIGN §6, §11): pure functions, no I/O, no clocks, no
//! threads, no randomness. The simulator checks every run with it and
//! `corekv-ctl check-history` checks bench histories with it. It runs on the
//! caller's thread (no core affinity, nothing shared) and its answers depend
//! only on its inputs. Transaction histories have their own checker,
//! [`serial`]: (strict) serializability, in the style of Elle.
//!
//! # What it decides
//!
//! Whether the operations of a history ([`Operation`]) can be put in one
//! sequential order that respects real time (an operation that returned before
//! another was invoked comes first) and that a single versioned register per key
//! would have answered exactly as recorded. Keys are independent registers, so
//! the history is split per key and each key is checked alone
//! (P-compositionality): [`check_history`] is linearizable iff every key is.
//! The history is assumed to start from an empty store (every key absent).
//!
//! # The model (DESIGN §6)
//!
//! A key holds a chain of versions, each a value or a tombstone. Versions
//! strictly increase per key and are never 0. Get answers the newest version
//! (not-found when absent or a tombstone); get-at-V the newest version ≤ V
//! (not-found when that is a tombstone or none exists); put appends a value
//! under a new, higher version; delete appends a tombstone when the key is live
//! and otherwise answers not-found and writes nothing; cas with expected version
//! 0 succeeds iff the key is absent or deleted, with expected e ≠ 0 iff the key
//! is live at version e; a mismatch reports the current version (0 when absent
//! or deleted). The checker learns versions from outcomes: a write's reported
//! version must exceed the version current at its linearization point.
//!
//! # Outcomes that say little
//!
//! - `Unavailable` means certainly not applied: the operation is dropped.
//! - Reads answered `Unavailable`, `Indeterminate` or `Compacted` constrain
//!   nothing (retention is not modelled) and are dropped.
//! - An `Indeterminate` write (or one that never returned) may take effect at any
//!   point after its invocation, or never: it has no deadline and the search may
//!   leave it out. An indeterminate cas is only ever linearized where it
//!   succeeds; failing there writes nothing and looks exactly like leaving it out.
//!
//! # Unknown versions
//!
//! An indeterminate write that took effect has a version nobody was told. The
//! model does not guess it: every chain entry carries an interval `lo..=hi` that
//! its version must lie in, exact (`lo == hi`) for acknowledged writes. An
//! unknown write enters with `lo` = the previous entry's `lo + 1` and no upper
//! bound; later observations narrow it: a read that sees its value at version v
//! pins it to v, a cas that succeeds against it pins it to its expected
//! version, a later write with version w bounds it below w, and a read-at-V
//! that sees an older entry (or not-found) pushes it above V. Because versions
//! are integers, two adjacent known versions leave no room for an unknown write
//! between them. The chain is kept bounds-consistent (each interval propagated
//! to its neighbours), which makes any value left in an interval extendable to
//! a full assignment: a narrowing that leaves an interval non-empty is always
//! satisfiable, so no solver is needed. Where an observation could match more
//! than one entry (a read-at of a value written twice with unknown versions),
//! the model branches and the search tries each.
//!
//! # The search
//!
//! Wing & Gong's backtracking search with Lowe's just-in-time linearization and
//! memoisation of (settled operations, model state) pairs, the chain first
//! stripped of entries no remaining read-at can observe (see `search` and
//! `model`). What keeps indeterminate writes affordable, each an exact
//! argument, not a heuristic (the property tests hold the checker to a
//! brute-force oracle on small histories):
//! - a read whose value and version no write can have produced fails before
//!   any search;
//! - an indeterminate write whose value is read, and is the only write of that
//!   value, must take effect before that read returns: it gets that deadline;
//! - the memo treats a node as explored when it met the same state with a
//!   subset of the indeterminate writes linearized;
//! - an indeterminate write that no read-at can see is never linearized
//!   directly before a put, which would hide it: the same order without it is
//!   also a linearization.
//!
//! The memo is bounded by [`CheckConfig::states_per_key_max`]: when it fills,
//! that key's answer is [`CheckResult::Unknown`], which callers must treat as a
//! failure to check, never as a pass.
//!
//! # Shrinking
//!
//! [`shrink_key_history`] reduces a failing key history by greedy delta
//! debugging. It only makes changes that cannot turn a linearizable history
//! into a failing one: it drops reads, not-found deletes and failed cas freely
//! (they only constrain), and drops a write only if the rest still fails when
//! every dropped write may either have taken effect as recorded or never. So
//! the kept operations fail on their own *and* prove the whole history fails.
//!
//! # Limits
//!
//! [`STATES_PER_KEY_MAX_DEFAULT`] and [`SHRINK_CHECKS_MAX_DEFAULT`] bound the
//! work (and, through the memo, the memory) of one key. Deciding
//! linearizability is NP-complete in general, and the hard case here is a
//! read-at of an old version that reveals, long afterwards, where an
//! indeterminate write took effect: the search may then have to revisit
//! choices hundreds of operations back, and can run out of budget (an honest
//! `Unknown`). Each step also costs time linear in the key's pending
//! operations, so one key's history of a few thousand operations takes seconds.

mod history;
mod model;
mod search;
pub mod serial;
mod shrink;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod test_rng;
#[cfg(test)]
mod tests_oracle;
#[cfg(test)]
mod tests_prop;

use std::collections::BTreeMap;
use std::fmt;

pub use history::{Call, ClientId, HistoryError, Operation, Outcome, Version, validate};
pub use shrink::{Shrunk, shrink_key_history};

use history::Bytes;
use model::{Seen, Step, ValueId};
use search::{Deadline, KeyOp, Search};

/// Default memo bound per key. A state is a bitset of the key's operations and
/// its chain, a few hundred bytes for simulator histories, so this stays well
/// under a gigabyte while leaving room for heavily concurrent keys.
pub const STATES_PER_KEY_MAX_DEFAULT: u64 = 1_000_000;

/// Default number of checks one shrink may run: each is a full search of a
/// (shrinking) key history, so this bounds shrinking to seconds.
pub const SHRINK_CHECKS_MAX_DEFAULT: u32 = 2_000;

/// How hard the checker may work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    /// Distinct (linearized set, state) pairs explored per key before the key's
    /// answer is [`CheckResult::Unknown`].
    pub states_per_key_max: u64,
}

impl Default for CheckConfig {
    fn default() -> CheckConfig {
        CheckConfig { states_per_key_max: STATES_PER_KEY_MAX_DEFAULT }
    }
}

/// Why a key's history is not linearizable: the operations checked and the
/// longest partial linearization the search found, with the operation it could
/// not get past.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Witness {
    /// The key's operations that constrain it (in input order).
    pub history: Vec<Operation>,
    /// Indices into `history`: the longest order of operations the search could
    /// linearize before it had to give up.
    pub longest_prefix: Vec<usize>,
    /// Index into `history`: an operation that returned before any order
    /// extending `longest_prefix` could take it.
    pub blocked: usize,
}

impl fmt::Display for Witness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "longest linearizable prefix ({} of {} operations):",
            self.longest_prefix.len(),
            self.history.len()
        )?;
        for &index in &self.longest_prefix {
            writeln!(f, "  #{index} {}", self.history[index])?;
        }
        writeln!(
            f,
            "then #{} {} returned, but no pending operation order lets it take effect",
            self.blocked, self.history[self.blocked]
        )
    }
}

/// The verdict for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    /// A linearization exists.
    Linearizable {
        /// Memo entries used.
        states_explored: u64,
    },
    /// None exists.
    NotLinearizable(Witness),
    /// The budget ran out first. Not a pass.
    Unknown {
        /// Memo entries used (the budget).
        states_explored: u64,
    },
}

/// The verdict for a whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Every key is linearizable.
    Linearizable,
    /// This key (the first failing one in key order) is not.
    NotLinearizable {
        /// The failing key.
        key: Vec<u8>,
        /// Why.
        witness: Witness,
    },
    /// No key failed, but this one (the first in key order) ran out of budget.
    /// Not a pass.
    Unknown {
        /// The key whose search ran out.
        key: Vec<u8>,
        /// Memo entries used.
        states_explored: u64,
    },
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Linearizable => f.write_str("linearizable"),
            CheckResult::NotLinearizable { key, witness } => {
                write!(f, "key {} is not linearizable: {witness}", Bytes(key))
            }
            CheckResult::Unknown { key, states_explored } => {
                write!(f, "unknown: key {} still undecided after {states_explored} states", Bytes(key))
            }
        }
    }
}

/// Groups operations by key, keeping their order within each key.
pub fn split_by_key(ops: &[Operation]) -> BTreeMap<Vec<u8>, Vec<Operation>> {
    let mut by_key: BTreeMap<Vec<u8>, Vec<Operation>> = BTreeMap::new();
    for op in ops {
        by_key.entry(op.call.key().to_vec()).or_default().push(op.clone());
    }
    by_key
}

/// Checks a whole history, one key at a time. Stops at the first key that is
/// not linearizable; an `Unknown` key is reported only if no key fails.
pub fn check_history(ops: &[Operation], config: &CheckConfig) -> Result<CheckResult, HistoryError> {
    validate(ops)?;
    let mut first_unknown = None;
    for (key, key_ops) in split_by_key(ops) {
        match check_validated_key(&key_ops, config) {
            KeyVerdict::Linearizable { .. } => {}
            KeyVerdict::NotLinearizable(witness) => {
                return Ok(CheckResult::NotLinearizable { key, witness });
            }
            KeyVerdict::Unknown { states_explored } => {
                first_unknown.get_or_insert(CheckResult::Unknown { key, states_explored });
            }
        }
    }
    Ok(first_unknown.unwrap_or(CheckResult::Linearizable))
}

/// Checks the operations of one key. Operations on other keys are an error
/// ([`HistoryError::MoreThanOneKey`]).
pub fn check_key(ops: &[Operation], config: &CheckConfig) -> Result<KeyVerdict, HistoryError> {
    validate(ops)?;
    if let Some(first) = ops.first()
        && let Some(index) = ops.iter().position(|op| op.call.key() != first.call.key())
    {
        return Err(HistoryError::MoreThanOneKey { index });
    }
    Ok(check_validated_key(ops, config))
}

fn check_validated_key(ops: &[Operation], config: &CheckConfig) -> KeyVerdict {
    let history: Vec<Operation> = ops.iter().filter(|op| op.constrains()).cloned().collect();
    match search_key(&history, &[], config) {
        Search::Linearizable { states_explored } => KeyVerdict::Linearizable { states_explored },
        Search::Unknown { states_explored } => KeyVerdict::Unknown { states_explored },
        Search::NotLinearizable { longest_prefix, blocked, .. } => {
            KeyVerdict::NotLinearizable(Witness { history, longest_prefix, blocked })
        }
    }
}

/// Searches one key's validated, constraining operations: `required` as
/// recorded, plus writes from `may_have_happened` that either took effect as
/// recorded or never did. Indices in the answer follow `required` then
/// `may_have_happened`.
fn search_key(required: &[Operation], may_have_happened: &[Operation], config: &CheckConfig) -> Search {
    let mut values: BTreeMap<&[u8], ValueId> = BTreeMap::new();
    let mut key_ops = Vec::with_capacity(required.len() + may_have_happened.len());
    for (op, is_required) in required.iter().map(|op| (op, true)).chain(may_have_happened.iter().map(|op| (op, false)))
    {
        let step = to_step(op, &mut values);
        let deadline = match op.return_time {
            _ if step.is_optional() => Deadline::Unbounded,
            Some(time) if is_required => Deadline::Required(time),
            Some(time) => Deadline::Optional(time),
            None => unreachable!("validated: a definite outcome has a return time"),
        };
        key_ops.push(KeyOp { step, invoke_time: op.invoke_time, deadline });
    }
    if let Some(read) = unexplained_read(&key_ops) {
        return Search::NotLinearizable { longest_prefix: Vec::new(), blocked: read, states_explored: 0 };
    }
    require_observed_writes(&mut key_ops);
    search::search(&key_ops, config.states_per_key_max)
}

/// A read whose value and version no write can have produced, whatever the
/// order: no write of that value, or only writes of it with known versions,
/// none the one read. Found in one pass, before any search, so that a plainly
/// impossible answer is reported at once and never costs the budget.
fn unexplained_read(key_ops: &[KeyOp]) -> Option<usize> {
    let mut versions_of: BTreeMap<ValueId, Vec<Option<Version>>> = BTreeMap::new();
    for key_op in key_ops {
        if let Step::Put { value, version } | Step::Cas { value, version, .. } = key_op.step {
            versions_of.entry(value).or_default().push(version);
        }
    }
    key_ops.iter().position(|key_op| {
        let (Step::Get(Seen::Value { value, version }) | Step::GetAt { seen: Seen::Value { value, version }, .. }) =
            key_op.step
        else {
            return false;
        };
        match versions_of.get(&value) {
            None => true,
            Some(versions) => versions.iter().all(|written| written.is_some_and(|written| written != version)),
        }
    })
}

/// An indeterminate write whose value some read returned, and which is the
/// only write of that value, took effect, and before that read returned: give
/// it that deadline. Every linearization already satisfies this; saying it
/// up front spares the search from trying to leave the write out, or to place
/// it after its reader.
fn require_observed_writes(key_ops: &mut [KeyOp]) {
    let written_value = |step: &Step| match *step {
        Step::Put { value, .. } | Step::Cas { value, .. } => Some(value),
        _ => None,
    };
    let mut writers: BTreeMap<ValueId, usize> = BTreeMap::new();
    let mut first_read_return: BTreeMap<ValueId, u64> = BTreeMap::new();
    for key_op in key_ops.iter() {
        if let Some(value) = written_value(&key_op.step) {
            *writers.entry(value).or_default() += 1;
        }
        let seen = match key_op.step {
            Step::Get(seen) | Step::GetAt { seen, .. } => seen,
            _ => continue,
        };
        if let (Seen::Value { value, .. }, Deadline::Required(time)) = (seen, key_op.deadline) {
            let deadline = first_read_return.entry(value).or_insert(time);
            *deadline = (*deadline).min(time);
        }
    }
    for key_op in key_ops.iter_mut() {
        if key_op.deadline != Deadline::Unbounded {
            continue;
        }
        let Some(value) = written_value(&key_op.step) else {
            continue;
        };
        if writers.get(&value) == Some(&1)
            && let Some(&time) = first_read_return.get(&value)
        {
            key_op.deadline = Deadline::Required(time);
        }
    }
}

fn intern<'a>(values: &mut BTreeMap<&'a [u8], ValueId>, value: &'a [u8]) -> ValueId {
    let next = ValueId::try_from(values.len()).expect("fewer than 2^32 values per key");
    *values.entry(value).or_insert(next)
}

fn to_step<'a>(op: &'a Operation, values: &mut BTreeMap<&'a [u8], ValueId>) -> Step {
    let written = match op.outcome {
        Outcome::Written { version } => Some(version),
        _ => None,
    };
    let seen = match &op.outcome {
        Outcome::Value { value, version } => Seen::Value { value: intern(values, value), version: *version },
        _ => Seen::NotFound,
    };
    match &op.call {
        Call::Get { .. } => Step::Get(seen),
        Call::GetAt { at_version, .. } => Step::GetAt { at_version: *at_version, seen },
        Call::Put { value, .. } => Step::Put { value: intern(values, value), version: written },
        Call::Delete { .. } if op.outcome == Outcome::NotFound => Step::DeleteNotFound,
        Call::Delete { .. } => Step::Delete { version: written },
        Call::Cas { expected_version, value, .. } => match op.outcome {
            Outcome::VersionMismatch { current } => Step::CasMismatch { expected: *expected_version, current },
            _ => Step::Cas { expected: *expected_version, value: intern(values, value), version: written },
        },
    }
}
