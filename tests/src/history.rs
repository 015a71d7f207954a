//! Recording what real clients were told, as `corekv_engine::check` histories,
//! and judging them.
//!
//! Every operation gets its invoke and return times in nanoseconds from one
//! [`Instant`] shared by all the clients of a test, so real-time order between
//! threads is what the checker sees. Outcome words map as the checker reads them
//! (`check::Operation::constrains`): `indeterminate` writes are kept with no
//! return time (they may take effect at any point after their invocation, or
//! never); `unavailable` operations are recorded and constrain nothing; reads
//! that could not be served are `unavailable`.
//!
//! A client answer that no correct cluster gives (a put answering `not_found`, a
//! latest read answering `compacted`, `invalid` for well-formed input) is not
//! turned into history: it is returned as an error for the test to fail on.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use corekv_engine::check::{
    self, Call, CheckConfig, CheckResult, Operation, Outcome, SHRINK_CHECKS_MAX_DEFAULT, Version,
};

use corekv_rpc::client::{Got, KvError};

/// Dropped writes listed in a shrunk report; the rest are counted.
const DROPPED_WRITES_SHOWN_MAX: usize = 20;

/// Collects the operations of many client threads against one clock.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Operation>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty history whose clock starts now.
    pub fn new() -> Recorder {
        Recorder { start: Instant::now(), ops: Mutex::new(Vec::new()) }
    }

    /// Nanoseconds since the recorder was made.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).expect("a test runs for less than 584 years")
    }

    /// Adds one operation.
    pub fn push(&self, op: Operation) {
        self.ops.lock().expect("a client thread panicked while recording").push(op);
    }

    /// Runs a write for `client` and records it: `run` is timed, its answer
    /// mapped by [`write_outcome`].
    pub fn write(
        &self,
        client: u64,
        call: Call,
        run: impl FnOnce() -> Result<Version, KvError>,
    ) -> Result<Outcome, String> {
        let invoke_time = self.now_ns();
        let result = run();
        let returned = self.now_ns();
        let outcome = write_outcome(&call, &result)?;
        let return_time = (outcome != Outcome::Indeterminate).then_some(returned);
        self.push(Operation { client, invoke_time, return_time, call, outcome: outcome.clone() });
        Ok(outcome)
    }

    /// Runs a latest-version get for `client` and records it.
    pub fn read(&self, client: u64, key: &[u8], run: impl FnOnce() -> Result<Got, KvError>) -> Result<Outcome, String> {
        let invoke_time = self.now_ns();
        let result = run();
        let return_time = Some(self.now_ns());
        let call = Call::Get { key: key.to_vec() };
        let outcome = read_outcome(&call, &result)?;
        self.push(Operation { client, invoke_time, return_time, call, outcome: outcome.clone() });
        Ok(outcome)
    }

    /// Every operation recorded so far, in the order they were recorded.
    pub fn ops(&self) -> Vec<Operation> {
        self.ops.lock().expect("a client thread panicked while recording").clone()
    }
}

/// The history outcome of a write's answer; an error for answers a write never
/// gets.
pub fn write_outcome(call: &Call, result: &Result<Version, KvError>) -> Result<Outcome, String> {
    let outcome = match (call, result) {
        (_, Ok(version)) => Outcome::Written { version: *version },
        (_, Err(KvError::Indeterminate { .. })) => Outcome::Indeterminate,
        (_, Err(KvError::Unavailable { .. })) => Outcome::Unavailable,
        (Call::Delete { .. }, Err(KvError::NotFound)) => Outcome::NotFound,
        (Call::Cas { .. }, Err(KvError::VersionMismatch { current })) => Outcome::VersionMismatch { current: *current },
        (call, Err(other)) => return Err(format!("{call} was answered {other:?}, which a write of it never is")),
    };
    Ok(outcome)
}

/// The history outcome of a get's answer; an error for answers a latest-version
/// get never gets.
pub fn read_outcome(call: &Call, result: &Result<Got, KvError>) -> Result<Outcome, String> {
    let outcome = match result {
        Ok(got) => Outcome::Value { value: got.value.clone(), version: got.version },
        Err(KvError::NotFound) => Outcome::NotFound,
        // A read that was not served constrains nothing, whatever its word.
        Err(KvError::Unavailable { .. } | KvError::Indeterminate { .. }) => Outcome::Unavailable,
        Err(other) => return Err(format!("{call} was answered {other:?}, which a get never is")),
    };
    Ok(outcome)
}

/// How many operations came to what: the evidence that a history says something.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Operations recorded.
    pub ops: usize,
    /// Writes that took effect with a version (put, delete, cas).
    pub ok_writes: usize,
    /// Cas that took effect.
    pub ok_cas: usize,
    /// Cas answered `version_mismatch`.
    pub cas_mismatches: usize,
    /// Deletes answered `not_found`.
    pub deletes_not_found: usize,
    /// Gets answered with a value.
    pub reads_with_value: usize,
    /// Gets answered `not_found`.
    pub reads_not_found: usize,
    /// Writes whose fate is unknown.
    pub indeterminate: usize,
    /// Operations certainly not applied or reads not served.
    pub unavailable: usize,
}

impl Tally {
    /// Counts `ops`.
    pub fn of(ops: &[Operation]) -> Tally {
        let mut tally = Tally { ops: ops.len(), ..Tally::default() };
        for op in ops {
            match (&op.call, &op.outcome) {
                (Call::Cas { .. }, Outcome::Written { .. }) => {
                    tally.ok_writes += 1;
                    tally.ok_cas += 1;
                }
                (_, Outcome::Written { .. }) => tally.ok_writes += 1,
                (_, Outcome::VersionMismatch { .. }) => tally.cas_mismatches += 1,
                (Call::Delete { .. }, Outcome::NotFound) => tally.deletes_not_found += 1,
                (_, Outcome::Value { .. }) => tally.reads_with_value += 1,
                (_, Outcome::NotFound) => tally.reads_not_found += 1,
                (_, Outcome::Indeterminate) => tally.indeterminate += 1,
                (_, Outcome::Unavailable | Outcome::Compacted) => tally.unavailable += 1,
            }
        }
        tally
    }

    /// Reads with a definite answer.
    pub fn ok_reads(&self) -> usize {
        self.reads_with_value + self.reads_not_found
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} operations: {} writes ok ({} of them cas), {} cas mismatches, {} deletes not found, \
             {} reads with a value, {} reads not found, {} indeterminate, {} unavailable",
            self.ops,
            self.ok_writes,
            self.ok_cas,
            self.cas_mismatches,
            self.deletes_not_found,
            self.reads_with_value,
            self.reads_not_found,
            self.indeterminate,
            self.unavailable
        )
    }
}

/// Checks `ops` for linearizability with the default budget. `Err` carries a
/// report for a failing or undecided history: the verdict and, when not
/// linearizable, the failing key's history shrunk to a few operations. The whole
/// history is written to `dump` first (a file in the data dir, which the
/// launcher keeps when the test fails).
pub fn check_linearizable(ops: &[Operation], dump: &Path) -> Result<(), String> {
    let mut text = String::new();
    for op in ops {
        let _ = writeln!(text, "{op}");
    }
    let dumped = match std::fs::write(dump, text) {
        Ok(()) => format!("the whole history is in {}", dump.display()),
        Err(e) => format!("(cannot write the history to {}: {e})", dump.display()),
    };
    let config = CheckConfig::default();
    let result = check::check_history(ops, &config).map_err(|e| format!("the recorded history is malformed: {e}"))?;
    match result {
        CheckResult::Linearizable => Ok(()),
        CheckResult::Unknown { .. } => {
            Err(format!("the checker could not decide (a failure to check, never a pass): {result}\n{dumped}"))
        }
        CheckResult::NotLinearizable { ref key, .. } => {
            Err(format!("NOT LINEARIZABLE: {result}\n{}\n{dumped}", shrunk_report(ops, key, &config)))
        }
    }
}

/// The failing key's history shrunk to the operations that prove the failure.
fn shrunk_report(ops: &[Operation], key: &[u8], config: &CheckConfig) -> String {
    let by_key: BTreeMap<Vec<u8>, Vec<Operation>> = check::split_by_key(ops);
    let Some(key_ops) = by_key.get(key) else { return "(no operations on the failing key)".into() };
    match check::shrink_key_history(key_ops, config, SHRINK_CHECKS_MAX_DEFAULT) {
        Ok(Some(shrunk)) => {
            let mut text = format!(
                "shrunk to {} operations ({} checks{}); they fail on their own:\n",
                shrunk.ops.len(),
                shrunk.checks_used,
                if shrunk.budget_exhausted { ", budget spent: a smaller one may exist" } else { "" }
            );
            for op in &shrunk.ops {
                let _ = writeln!(text, "  {op}");
            }
            let dropped = shrunk.dropped_writes.len();
            let _ = writeln!(text, "and still fail whether or not the {dropped} dropped writes took effect, e.g.:");
            for op in shrunk.dropped_writes.iter().take(DROPPED_WRITES_SHOWN_MAX) {
                let _ = writeln!(text, "  {op}");
            }
            text
        }
        Ok(None) => "(shrinking could not reproduce the failure within its budget)".into(),
        Err(e) => format!("(cannot shrink: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(recorder: &Recorder, key: &str, value: &str, answer: Result<Version, KvError>) {
        let call = Call::Put { key: key.into(), value: value.into() };
        recorder.write(1, call, || answer).expect("a put's answer");
    }

    fn get(recorder: &Recorder, key: &str, answer: Result<Got, KvError>) {
        recorder.read(2, key.as_bytes(), || answer).expect("a get's answer");
    }

    fn got(value: &str, version: Version) -> Result<Got, KvError> {
        Ok(Got { version, value: value.into() })
    }

    fn verdict(recorder: &Recorder) -> Result<(), String> {
        let dump = std::env::temp_dir().join(format!("corekv-tests-history-{}.txt", std::process::id()));
        let verdict = check_linearizable(&recorder.ops(), &dump);
        let _ = std::fs::remove_file(&dump);
        verdict
    }

    fn indeterminate() -> KvError {
        KvError::Indeterminate { reason: "deadline".into() }
    }

    fn unavailable() -> KvError {
        KvError::Unavailable { reason: "no leader".into() }
    }

    #[test]
    fn a_lost_acknowledged_write_fails_the_check_with_a_shrunk_history() {
        let recorder = Recorder::new();
        put(&recorder, "k", "a", Ok(5));
        get(&recorder, "k", got("a", 5));
        get(&recorder, "k", Err(KvError::NotFound));
        let report = verdict(&recorder).expect_err("a write acknowledged then gone");
        assert!(report.contains("NOT LINEARIZABLE") && report.contains("shrunk to"), "{report}");
    }

    #[test]
    fn a_stale_read_fails_the_check() {
        let recorder = Recorder::new();
        put(&recorder, "k", "a", Ok(5));
        put(&recorder, "k", "b", Ok(7));
        get(&recorder, "k", got("a", 5));
        assert!(verdict(&recorder).is_err(), "a read after b was acknowledged saw a");
    }

    #[test]
    fn an_indeterminate_write_may_have_happened_and_an_unavailable_one_may_not() {
        let recorder = Recorder::new();
        put(&recorder, "k", "a", Err(indeterminate()));
        get(&recorder, "k", got("a", 9));
        get(&recorder, "j", Err(unavailable()));
        assert_eq!(verdict(&recorder), Ok(()), "an indeterminate write may take effect");
        put(&recorder, "j", "b", Err(unavailable()));
        get(&recorder, "j", got("b", 3));
        assert!(verdict(&recorder).is_err(), "an unavailable write was certainly not applied");
    }

    #[test]
    fn answers_a_call_never_gets_are_errors_not_history() {
        let recorder = Recorder::new();
        let call = Call::Put { key: b"k".to_vec(), value: b"v".to_vec() };
        assert!(recorder.write(1, call, || Err(KvError::NotFound)).is_err());
        assert!(recorder.read(1, b"k", || Err(KvError::Compacted)).is_err());
        assert!(recorder.ops().is_empty());
        let tally = Tally::of(&[]);
        assert_eq!(tally.ok_reads(), 0);
    }
}
