//! The checker against a brute-force oracle on small random histories, both
//! linearizable and not. The oracle knows nothing of intervals, pruning,
//! subsumption or just-in-time choices: it tries every subset of the
//! indeterminate writes, every order that respects real time and every
//! concrete version for each indeterminate write, on a plain version chain.
//! Agreement in both directions is what makes the checker's shortcuts safe.

use proptest::prelude::*;

use super::test_rng::SplitMix;
use super::*;

const VERSION_MAX: u64 = 6;
const VALUES: [&[u8]; 3] = [b"a", b"b", b"c"];

/// A small history with random, often impossible, answers over few values
/// and versions, so that both verdicts are common.
fn random_history(seed: u64, ops_count: usize) -> Vec<Operation> {
    let mut rng = SplitMix(seed);
    let key = b"k".to_vec();
    (0..ops_count)
        .map(|index| {
            let value = VALUES[rng.below(3) as usize].to_vec();
            let version = 1 + rng.below(VERSION_MAX);
            let indeterminate = rng.below(5) == 0;
            let (call, outcome) = match rng.below(5) {
                0 => (Call::Get { key: key.clone() }, read_outcome(&mut rng, value.clone(), version)),
                1 => (
                    Call::GetAt { key: key.clone(), at_version: rng.below(VERSION_MAX + 1) },
                    read_outcome(&mut rng, value.clone(), version),
                ),
                2 => (Call::Put { key: key.clone(), value }, Outcome::Written { version }),
                3 => {
                    let outcome = if rng.below(2) == 0 { Outcome::Written { version } } else { Outcome::NotFound };
                    (Call::Delete { key: key.clone() }, outcome)
                }
                _ => {
                    let outcome = if rng.below(2) == 0 {
                        Outcome::Written { version }
                    } else {
                        Outcome::VersionMismatch { current: rng.below(VERSION_MAX + 1) }
                    };
                    let call = Call::Cas { key: key.clone(), expected_version: rng.below(4), value };
                    (call, outcome)
                }
            };
            let invoke_time = rng.below(40);
            let mut return_time = Some(invoke_time + rng.below(20));
            let outcome = if indeterminate && call.is_write() {
                if rng.below(2) == 0 {
                    return_time = None;
                }
                Outcome::Indeterminate
            } else {
                outcome
            };
            Operation { client: index as u64, invoke_time, return_time, call, outcome }
        })
        .collect()
}

/// A small history a correct store could have produced (values repeat,
/// windows overlap heavily), with, when `perturb`, one answer replaced by a
/// random one: usually, but not always, an impossible one.
fn model_history(seed: u64, ops_count: usize, perturb: bool) -> Vec<Operation> {
    let mut rng = SplitMix(seed);
    let key = b"k".to_vec();
    let mut chain = Chain::new();
    let mut history: Vec<Operation> = (0..ops_count)
        .map(|index| {
            let point = 100 + 10 * index as u64;
            let invoke_time = point - rng.below(25);
            let return_time = point + rng.below(25);
            let value = VALUES[rng.below(3) as usize].to_vec();
            let last_version = chain.last().map_or(0, |(version, _)| *version);
            let new_version = last_version + 1 + rng.below(2);
            let call = match rng.below(5) {
                0 => Call::Get { key: key.clone() },
                1 => Call::GetAt { key: key.clone(), at_version: rng.below(last_version + 2) },
                2 => Call::Put { key: key.clone(), value },
                3 => Call::Delete { key: key.clone() },
                _ => Call::Cas {
                    key: key.clone(),
                    expected_version: match rng.below(3) {
                        0 => 0,
                        1 => last_version,
                        _ => rng.below(last_version + 2),
                    },
                    value,
                },
            };
            let mut op = Operation {
                client: index as u64,
                invoke_time,
                return_time: Some(return_time),
                call,
                outcome: Outcome::NotFound,
            };
            op.outcome = true_outcome(&chain, &op, new_version);
            let applied_outcome = op.outcome.clone();
            let applies = op.call.is_write() && rng.below(4) != 0;
            if op.call.is_write() && rng.below(4) == 0 {
                op.outcome = Outcome::Indeterminate;
                if rng.below(2) == 0 {
                    op.return_time = None;
                }
            }
            if op.outcome != Outcome::Indeterminate || applies {
                let mut definite = op.clone();
                definite.outcome = applied_outcome;
                assert!(apply(&mut chain, &definite, new_version), "the model applies");
            }
            op
        })
        .collect();
    if perturb && !history.is_empty() {
        let target = rng.below(history.len() as u64) as usize;
        let original = &mut history[target];
        // Borrow a random answer from a random operation of the same kind.
        let kind = std::mem::discriminant(&original.call);
        let replacement =
            (0..50).flat_map(|_| random_history(rng.next(), 1)).find(|op| std::mem::discriminant(&op.call) == kind);
        if let Some(replacement) = replacement
            && original.return_time.is_some()
            && replacement.return_time.is_some()
        {
            original.outcome = replacement.outcome;
        }
    }
    history
}

/// What a correct store answers to `op` on `chain`, a write taking
/// `new_version`.
fn true_outcome(chain: &Chain, op: &Operation, new_version: Version) -> Outcome {
    let current = match chain.last() {
        Some((version, Some(_))) => *version,
        _ => 0,
    };
    let newest_at = |at: Version| match chain.iter().rev().find(|(v, _)| *v <= at) {
        Some((version, Some(value))) => Outcome::Value { value: value.clone(), version: *version },
        _ => Outcome::NotFound,
    };
    match &op.call {
        Call::Get { .. } => newest_at(Version::MAX),
        Call::GetAt { at_version, .. } => newest_at(*at_version),
        Call::Put { .. } => Outcome::Written { version: new_version },
        Call::Delete { .. } if current == 0 => Outcome::NotFound,
        Call::Delete { .. } => Outcome::Written { version: new_version },
        Call::Cas { expected_version, .. } if *expected_version == current => Outcome::Written { version: new_version },
        Call::Cas { .. } => Outcome::VersionMismatch { current },
    }
}

fn read_outcome(rng: &mut SplitMix, value: Vec<u8>, version: Version) -> Outcome {
    if rng.below(3) == 0 { Outcome::NotFound } else { Outcome::Value { value, version } }
}

/// The concrete register: versions oldest first, `None` a tombstone.
type Chain = Vec<(Version, Option<Vec<u8>>)>;

/// Applies `op` to `chain`, an indeterminate write with version `unknown`.
/// False when the recorded answer is impossible here.
fn apply(chain: &mut Chain, op: &Operation, unknown: Version) -> bool {
    let last_version = chain.last().map_or(0, |(version, _)| *version);
    let current = match chain.last() {
        Some((version, Some(_))) => *version,
        _ => 0,
    };
    let live = current != 0;
    let newest_at = |chain: &Chain, at: Version| match chain.iter().rev().find(|(v, _)| *v <= at) {
        Some((version, Some(value))) => Outcome::Value { value: value.clone(), version: *version },
        _ => Outcome::NotFound,
    };
    let new_version = match op.outcome {
        Outcome::Written { version } => version,
        _ => unknown,
    };
    match (&op.call, &op.outcome) {
        (Call::Get { .. }, outcome) => *outcome == newest_at(chain, Version::MAX),
        (Call::GetAt { at_version, .. }, outcome) => *outcome == newest_at(chain, *at_version),
        _ => apply_write(chain, op, new_version, live, current, last_version),
    }
}

fn apply_write(
    chain: &mut Chain,
    op: &Operation,
    new_version: Version,
    live: bool,
    current: Version,
    last_version: Version,
) -> bool {
    let mut push = |value: Option<Vec<u8>>| {
        if new_version <= last_version {
            return false;
        }
        chain.push((new_version, value));
        true
    };
    match (&op.call, &op.outcome) {
        (Call::Get { .. } | Call::GetAt { .. }, _) => unreachable!("reads are applied above"),
        (Call::Put { value, .. }, _) => push(Some(value.clone())),
        (Call::Delete { .. }, Outcome::NotFound) => !live,
        (Call::Delete { .. }, Outcome::Written { .. }) => live && push(None),
        // An indeterminate delete of an absent key writes nothing.
        (Call::Delete { .. }, _) => !live || push(None),
        (Call::Cas { expected_version, value, .. }, outcome) => {
            let matches = *expected_version == current;
            match outcome {
                Outcome::VersionMismatch { current: reported } => !matches && *reported == current,
                Outcome::Written { .. } => matches && push(Some(value.clone())),
                _ => !matches || push(Some(value.clone())),
            }
        }
    }
}

/// True when some subset of the indeterminate writes, some real-time order
/// and some versions for them explain every answer.
fn brute_force_linearizable(history: &[Operation]) -> bool {
    let ops: Vec<&Operation> = history.iter().filter(|op| op.constrains()).collect();
    brute_force(&ops, ops.len())
}

/// As [`brute_force_linearizable`], where `ops[may_from..]` may also never
/// have happened (but if they did, inside their window as recorded).
fn brute_force(ops: &[&Operation], may_from: usize) -> bool {
    let optional: Vec<usize> =
        (0..ops.len()).filter(|&i| i >= may_from || ops[i].outcome == Outcome::Indeterminate).collect();
    let mentioned_max = ops
        .iter()
        .map(|op| match (&op.call, &op.outcome) {
            (_, Outcome::Value { version, .. } | Outcome::Written { version }) => *version,
            (_, Outcome::VersionMismatch { current }) => *current,
            _ => 0,
        })
        .max()
        .unwrap_or(0);
    let version_max = mentioned_max + optional.len() as u64 + 1;
    (0..1u32 << optional.len()).any(|mask| {
        let chosen: Vec<usize> = (0..ops.len())
            .filter(|i| match optional.iter().position(|o| o == i) {
                Some(bit) => mask & (1 << bit) != 0,
                None => true,
            })
            .collect();
        orders(ops, &chosen, &mut Vec::new(), &mut Chain::new(), version_max)
    })
}

/// Depth-first over orders of `remaining` that respect real time.
fn orders(
    ops: &[&Operation],
    remaining: &[usize],
    placed: &mut Vec<usize>,
    chain: &mut Chain,
    version_max: Version,
) -> bool {
    if remaining.is_empty() {
        return true;
    }
    let deadline = |i: usize| match ops[i].outcome {
        Outcome::Indeterminate => None,
        _ => ops[i].return_time,
    };
    remaining.iter().any(|&next| {
        // Nothing left may have had to finish before `next` began.
        let blocked = remaining.iter().any(|&other| deadline(other).is_some_and(|time| time < ops[next].invoke_time));
        if blocked {
            return false;
        }
        let rest: Vec<usize> = remaining.iter().copied().filter(|&i| i != next).collect();
        let versions = if ops[next].outcome == Outcome::Indeterminate { 1..=version_max } else { 0..=0 };
        versions.into_iter().any(|version| {
            let mut after = chain.clone();
            if !apply(&mut after, ops[next], version) {
                return false;
            }
            placed.push(next);
            let found = orders(ops, &rest, placed, &mut after, version_max);
            placed.pop();
            found
        })
    })
}

proptest! {
    #![proptest_config(super::tests_prop::proptest_config(1_500))]

    #[test]
    fn checker_agrees_with_brute_force(
        seed in any::<u64>(),
        ops_count in 1usize..=7,
        source in 0u8..3,
    ) {
        let history = match source {
            0 => random_history(seed, ops_count),
            1 => model_history(seed, ops_count, false),
            _ => model_history(seed, ops_count, true),
        };
        let expected = brute_force_linearizable(&history);
        let verdict = check_key(&history, &CheckConfig::default()).expect("valid history");
        match verdict {
            KeyVerdict::Linearizable { .. } => prop_assert!(expected, "checker passed a bad history"),
            KeyVerdict::NotLinearizable(witness) => {
                prop_assert!(!expected, "checker failed a good history: {}", witness)
            }
            KeyVerdict::Unknown { .. } => prop_assert!(false, "small history left undecided"),
        }
    }
}

proptest! {
    #![proptest_config(super::tests_prop::proptest_config(500))]

    /// The shrinker's weakened writes (as recorded, or never) against the
    /// oracle.
    #[test]
    fn weakened_writes_agree_with_brute_force(
        seed in any::<u64>(),
        ops_count in 1usize..=7,
        perturb in any::<bool>(),
        weaken in any::<u8>(),
    ) {
        let history = model_history(seed, ops_count, perturb);
        let (mut required, mut may) = (Vec::new(), Vec::new());
        for (index, op) in history.iter().filter(|op| op.constrains()).enumerate() {
            let definite_write = matches!(op.outcome, Outcome::Written { .. });
            if definite_write && weaken & (1 << (index % 8)) != 0 {
                may.push(op.clone());
            } else {
                required.push(op.clone());
            }
        }
        let all: Vec<&Operation> = required.iter().chain(&may).collect();
        let expected = brute_force(&all, required.len());
        let found = super::search_key(&required, &may, &CheckConfig::default());
        match found {
            search::Search::Linearizable { .. } => prop_assert!(expected, "passed a bad history"),
            search::Search::NotLinearizable { .. } => prop_assert!(!expected, "failed a good history"),
            search::Search::Unknown { .. } => prop_assert!(false, "small history left undecided"),
        }
    }
}
