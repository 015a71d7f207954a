//! Property tests: histories produced by a reference implementation of the
//! DESIGN §6 register, with every operation's window stretched at random
//! around its real linearization point, must pass; the same histories with one
//! read answer changed to something no write produced must fail.

use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use super::test_rng::SplitMix;
use super::*;

/// The reference register of one key: versions oldest first, `None` a tombstone.
#[derive(Default)]
struct Register {
    chain: Vec<(Version, Option<Vec<u8>>)>,
}

impl Register {
    fn last_version(&self) -> Version {
        self.chain.last().map_or(0, |(version, _)| *version)
    }

    /// Version reported as "current": 0 when absent or deleted.
    fn current(&self) -> Version {
        match self.chain.last() {
            Some((version, Some(_))) => *version,
            _ => 0,
        }
    }

    fn latest(&self) -> Outcome {
        self.read(Version::MAX)
    }

    fn read(&self, at_version: Version) -> Outcome {
        match self.chain.iter().rev().find(|(v, _)| *v <= at_version) {
            Some((version, Some(value))) => Outcome::Value { value: value.clone(), version: *version },
            _ => Outcome::NotFound,
        }
    }
}

/// How a generated write ends.
enum Fate {
    Acknowledged,
    Unavailable,
    IndeterminateApplied,
    IndeterminateLost,
}

/// A history that a correct store could have produced: one operation per
/// 100 time units, each linearized at the middle of its slot and recorded with
/// a window stretched up to `stretch` units to either side.
fn generate(seed: u64, ops_count: usize, keys: u64, stretch: u64) -> Vec<Operation> {
    let mut rng = SplitMix(seed);
    let mut registers: Vec<Register> = (0..keys).map(|_| Register::default()).collect();
    let mut history = Vec::with_capacity(ops_count);
    for index in 0..ops_count {
        let key_index = rng.below(keys) as usize;
        let key = format!("k{key_index}").into_bytes();
        let register = &mut registers[key_index];
        let point = 1_000 + 100 * index as u64;
        let invoke_time = point - rng.below(stretch + 1);
        let return_time = point + rng.below(stretch + 1);
        let value = format!("v{index}").into_bytes();
        let new_version = register.last_version() + 1 + rng.below(3);
        let fate = match rng.below(10) {
            0 => Fate::Unavailable,
            1 => Fate::IndeterminateLost,
            2 => Fate::IndeterminateApplied,
            _ => Fate::Acknowledged,
        };
        let (call, definite) = match rng.below(10) {
            0..=2 => (Call::Get { key }, Some(register.latest())),
            3 => {
                let at_version = rng.below(register.last_version() + 3);
                (Call::GetAt { key, at_version }, Some(register.read(at_version)))
            }
            4 | 5 | 9 => (Call::Put { key, value }, None),
            6 => (Call::Delete { key }, None),
            _ => {
                let expected_version = match rng.below(4) {
                    0 => register.current(),
                    1 => 0,
                    2 => register.current() + 1,
                    _ => rng.below(register.last_version() + 2),
                };
                let call = Call::Cas { key, expected_version, value };
                (call, None)
            }
        };
        let outcome = match definite {
            Some(_) if matches!(fate, Fate::Unavailable) => Outcome::Unavailable,
            Some(read) => read,
            None => apply_write(register, &call, new_version, &fate),
        };
        let return_time = match (&outcome, rng.below(2)) {
            (Outcome::Indeterminate, 0) => None,
            _ => Some(return_time),
        };
        history.push(Operation { client: index as u64 % 4, invoke_time, return_time, call, outcome });
    }
    history
}

/// Applies a write to the reference register as its fate says and returns
/// what the client was told.
fn apply_write(register: &mut Register, call: &Call, new_version: Version, fate: &Fate) -> Outcome {
    let applies = matches!(fate, Fate::Acknowledged | Fate::IndeterminateApplied);
    let live = register.current() != 0;
    let (outcome, entry) = match call {
        Call::Put { value, .. } => (Outcome::Written { version: new_version }, Some(Some(value.clone()))),
        Call::Delete { .. } if live => (Outcome::Written { version: new_version }, Some(None)),
        Call::Delete { .. } => (Outcome::NotFound, None),
        Call::Cas { expected_version, value, .. } if *expected_version == register.current() => {
            (Outcome::Written { version: new_version }, Some(Some(value.clone())))
        }
        Call::Cas { .. } => (Outcome::VersionMismatch { current: register.current() }, None),
        Call::Get { .. } | Call::GetAt { .. } => unreachable!("reads are not writes"),
    };
    if applies && let Some(entry) = entry {
        register.chain.push((new_version, entry));
    }
    match fate {
        Fate::Acknowledged => outcome,
        Fate::Unavailable => Outcome::Unavailable,
        Fate::IndeterminateApplied | Fate::IndeterminateLost => Outcome::Indeterminate,
    }
}

/// Changes the answer of one definite read (picked by `pick`) to one that no
/// linearization allows, in one of three ways: a value never written; for a
/// value whose write was acknowledged, a version that write did not get; or,
/// for a latest read, a stale value: one acknowledged with a version below
/// that of a write acknowledged before the read began. `None` when the
/// history has no definite read.
fn mutate_one_read(history: &[Operation], pick: u64) -> Option<Vec<Operation>> {
    let reads: Vec<usize> = (0..history.len())
        .filter(|&i| {
            !history[i].call.is_write() && matches!(history[i].outcome, Outcome::Value { .. } | Outcome::NotFound)
        })
        .collect();
    let target = *reads.get((pick / 3) as usize % reads.len().max(1))?;
    let mut mutated = history.to_vec();
    let never_written = Outcome::Value { value: b"never written".to_vec(), version: 1 };
    // When the picked way does not apply to this read, fall back to a value
    // never written, which always does.
    mutated[target].outcome = match (pick % 3, &history[target].outcome) {
        (0, Outcome::Value { value, version }) => {
            let acknowledged = history
                .iter()
                .any(|op| matches!(op.outcome, Outcome::Written { .. }) && written_value(op) == Some(value));
            if acknowledged { Outcome::Value { value: value.clone(), version: version + 1 } } else { never_written }
        }
        (2, _) => stale_value(history, target).unwrap_or(never_written),
        _ => never_written,
    };
    Some(mutated)
}

fn written_value(op: &Operation) -> Option<&Vec<u8>> {
    match &op.call {
        Call::Put { value, .. } | Call::Cas { value, .. } => Some(value),
        _ => None,
    }
}

/// For a latest read, the value of an acknowledged write of its key older
/// than another acknowledged write that returned before the read began.
fn stale_value(history: &[Operation], read: usize) -> Option<Outcome> {
    let read = &history[read];
    if !matches!(read.call, Call::Get { .. }) {
        return None;
    }
    let acknowledged =
        |op: &&Operation| op.call.key() == read.call.key() && matches!(op.outcome, Outcome::Written { .. });
    let version_of = |op: &Operation| match op.outcome {
        Outcome::Written { version } => version,
        _ => 0,
    };
    let newest_before = history
        .iter()
        .filter(acknowledged)
        .filter(|op| op.return_time.is_some_and(|time| time < read.invoke_time))
        .map(version_of)
        .max()?;
    let stale =
        history.iter().filter(acknowledged).find(|op| version_of(op) < newest_before && written_value(op).is_some())?;
    Some(Outcome::Value { value: written_value(stale)?.clone(), version: version_of(stale) })
}

fn config() -> CheckConfig {
    CheckConfig { states_per_key_max: 200_000 }
}

/// Inputs proptest once found that ran the search out of budget before the
/// checker settled observed indeterminate writes and skipped useless ones.
const REGRESSIONS: [(u64, usize, u64, u64); 4] = [
    (12_741_387_193_780_775_548, 62, 1, 0),
    (15_479_685_134_099_154_023, 71, 1, 0),
    (15_621_489_511_834_670_731, 48, 2, 219),
    (2_712_764_082_474_069_177, 69, 1, 0),
];

#[test]
fn regressions_are_decided() {
    for (seed, ops_count, keys, stretch) in REGRESSIONS {
        let history = generate(seed, ops_count, keys, stretch);
        let result = check_history(&history, &config()).expect("valid");
        assert_eq!(result, CheckResult::Linearizable, "seed {seed}: {result}");
        for pick in 0..30 {
            let Some(mutated) = mutate_one_read(&history, pick) else {
                continue;
            };
            let result = check_history(&mutated, &config()).expect("valid");
            assert!(matches!(result, CheckResult::NotLinearizable { .. }), "seed {seed} pick {pick}: {result}");
        }
    }
}

/// The same cases on every run, as CI needs; `PROPTEST_RNG_SEED` explores
/// others and `PROPTEST_CASES` runs more. Failures print their inputs (the ones
/// found so far are in [`REGRESSIONS`]); nothing is written to disk.
pub(super) fn proptest_config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig { failure_persistence: None, ..ProptestConfig::default() };
    if matches!(config.rng_seed, RngSeed::Random) {
        config.rng_seed = RngSeed::Fixed(0x636f_7265_6b76);
    }
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

proptest! {
    #![proptest_config(proptest_config(256))]

    #[test]
    fn histories_of_a_correct_store_are_linearizable(
        seed in any::<u64>(),
        ops_count in 0usize..80,
        keys in 1u64..=3,
        stretch in 0u64..=400,
    ) {
        let history = generate(seed, ops_count, keys, stretch);
        let result = check_history(&history, &config()).expect("generated histories are valid");
        prop_assert_eq!(&result, &CheckResult::Linearizable, "{}", result);
    }

    #[test]
    fn one_impossible_read_is_caught(
        seed in any::<u64>(),
        ops_count in 1usize..64,
        keys in 1u64..=3,
        stretch in 0u64..=400,
        pick in any::<u64>(),
    ) {
        let history = generate(seed, ops_count, keys, stretch);
        let mutated = mutate_one_read(&history, pick);
        prop_assume!(mutated.is_some());
        let mutated = mutated.expect("assumed");
        let result = check_history(&mutated, &config()).expect("mutated histories are valid");
        prop_assert!(
            matches!(result, CheckResult::NotLinearizable { .. }),
            "mutation not caught: {}", result
        );
    }
}

proptest! {
    #![proptest_config(proptest_config(64))]

    #[test]
    fn shrunk_history_still_fails_and_is_no_larger(
        seed in any::<u64>(),
        ops_count in 1usize..60,
        stretch in 0u64..=300,
        pick in any::<u64>(),
    ) {
        let history = generate(seed, ops_count, 1, stretch);
        let mutated = mutate_one_read(&history, pick);
        prop_assume!(mutated.is_some());
        let mutated = mutated.expect("assumed");
        let shrunk = shrink_key_history(&mutated, &config(), 300)
            .expect("valid")
            .expect("the mutated history fails");
        prop_assert!(shrunk.ops.len() <= mutated.len());
        let verdict = check_key(&shrunk.ops, &config()).expect("valid");
        prop_assert!(matches!(verdict, KeyVerdict::NotLinearizable(_)));
    }
}
