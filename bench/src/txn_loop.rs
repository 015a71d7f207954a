//! The closed loop of transactions that `bank` and `ycsb-t` share: one thread per
//! client with its own blocking client, each running transactions one after
//! another; an aborted attempt is retried as a new attempt (wait-die keeps the
//! first start version, as `Client::run_txn` does) until the transaction's
//! deadline; the figures of the measured window; and `--history`, one line per
//! attempt.
//!
//! The attempts are driven here rather than through `run_txn` because a history
//! line needs what `run_txn` hides: each attempt's id, start version, reads and
//! writes, and how it ended. The retry rule is `run_txn`'s; the backoff between
//! attempts is jittered (without jitter two no-wait transactions can abort each
//! other forever).
//!
//! Runs on plain threads, not on a corekv core; the only shared state is the
//! figures and the history writer, each behind a mutex.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corekv_rpc::client::blocking::{Client, TxnHandle};
use corekv_rpc::client::{ClientConfig, Got, KvError};
use corekv_rpc::kv::Version;
use corekv_rpc::txn::{Policy, TxnId};
use corekv_tools::history::{HistoryWriter, TxnReadRecord, TxnRecord, TxnWriteRecord, value_hash};
use hdrhistogram::Histogram;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Backoff before the second attempt, microseconds; it doubles per attempt up
/// to [`BACKOFF_DOUBLINGS_MAX`] times, and the pause is uniform below it.
pub const BACKOFF_FIRST_US: u64 = 500;
/// Doublings of the backoff cap (500 µs × 2^5 = 16 ms at most).
pub const BACKOFF_DOUBLINGS_MAX: u32 = 5;

/// The history file of a run: one JSON line per transaction attempt, written by
/// every worker through one lock (docs/HISTORY.md has the schema).
#[derive(Debug)]
pub struct TxnHistory {
    out: Mutex<HistoryWriter<BufWriter<File>>>,
    /// Times in the file count from here.
    start: Instant,
    /// The first write error; later lines are dropped, and the run reports it.
    error: Mutex<Option<String>>,
}

impl TxnHistory {
    /// A history written to `path` (created or truncated), its clock started now.
    pub fn create(path: &Path) -> Result<Arc<TxnHistory>, String> {
        let file = File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Arc::new(TxnHistory {
            out: Mutex::new(HistoryWriter::new(BufWriter::new(file))),
            start: Instant::now(),
            error: Mutex::new(None),
        }))
    }

    /// Nanoseconds since the run started.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn write(&self, record: &TxnRecord) {
        let mut error = self.error.lock().expect("no worker panics holding it");
        if error.is_some() {
            return;
        }
        if let Err(e) = self.out.lock().expect("no worker panics holding it").write_txn(record) {
            *error = Some(format!("cannot write the history: {e}"));
        }
    }

    /// Flushes the file; the first error any line met.
    pub fn finish(&self) -> Result<(), String> {
        if let Some(e) = self.error.lock().expect("no worker panics holding it").clone() {
            return Err(e);
        }
        self.out
            .lock()
            .expect("no worker panics holding it")
            .flush()
            .map_err(|e| format!("cannot write the history: {e}"))
    }
}

/// `<client id>.<attempt>`: the attempt's id as a history line names it.
pub fn txn_name(id: TxnId) -> String {
    format!("{:032x}.{}", id.client.as_u128(), id.attempt)
}

/// What one attempt read from the store and wrote, for its history line.
#[derive(Debug, Default)]
struct AttemptLog {
    reads: Vec<TxnReadRecord>,
    /// The last write per key, in the order the keys were first written
    /// (`None`: a delete).
    writes: Vec<(Vec<u8>, Option<String>)>,
}

impl AttemptLog {
    fn wrote(&self, key: &[u8]) -> bool {
        self.writes.iter().any(|(k, _)| k == key)
    }

    fn write(&mut self, key: &[u8], value: Option<&[u8]>) {
        let hash = value.map(value_hash);
        match self.writes.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = hash,
            None => self.writes.push((key.to_vec(), hash)),
        }
    }
}

/// One attempt of a transaction, handed to a transaction's body: the client's
/// transactional calls, recorded for the history when one is kept.
#[derive(Debug)]
pub struct Attempt<'c> {
    client: &'c mut Client,
    handle: TxnHandle,
    /// `None` when no history is kept (nothing is copied then).
    log: Option<AttemptLog>,
}

impl Attempt<'_> {
    /// Reads `key` (see `Client::txn_get`).
    pub fn get(&mut self, key: &[u8]) -> Result<Got, KvError> {
        let own = self.log.as_ref().is_some_and(|l| l.wrote(key));
        let got = self.client.txn_get(&mut self.handle, key);
        self.log_read(own, key, &got);
        got
    }

    /// Reads `key` for a write that follows (see `Client::txn_get_for_update`).
    pub fn get_for_update(&mut self, key: &[u8]) -> Result<Got, KvError> {
        let own = self.log.as_ref().is_some_and(|l| l.wrote(key));
        let got = self.client.txn_get_for_update(&mut self.handle, key);
        self.log_read(own, key, &got);
        got
    }

    /// Writes `value` at `key` when the transaction commits.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.client.txn_put(&mut self.handle, key, value)?;
        if let Some(log) = &mut self.log {
            log.write(key, Some(value));
        }
        Ok(())
    }

    /// Deletes `key` when the transaction commits.
    pub fn delete(&mut self, key: &[u8]) -> Result<(), KvError> {
        self.client.txn_delete(&mut self.handle, key)?;
        if let Some(log) = &mut self.log {
            log.write(key, None);
        }
        Ok(())
    }

    /// A read the store answered goes in the log; one served from the
    /// transaction's own writes does not (it read nothing from the store).
    fn log_read(&mut self, own: bool, key: &[u8], got: &Result<Got, KvError>) {
        let Some(log) = &mut self.log else { return };
        if own {
            return;
        }
        match got {
            Ok(got) => log.reads.push(TxnReadRecord::new(key, got.version, Some(&got.value))),
            Err(KvError::NotFound) => log.reads.push(TxnReadRecord::new(key, 0, None)),
            Err(_) => {}
        }
    }
}

/// How one transaction (all its attempts) ended.
#[derive(Debug, Clone, Default)]
pub struct TxnResult {
    /// It committed.
    pub committed: bool,
    /// Attempts made, the last included.
    pub attempts: u64,
    /// The reason word of each aborted attempt.
    pub aborts: Vec<&'static str>,
    /// From its first begin to its last answer.
    pub elapsed: Duration,
}

/// How an attempt ended, in the history's words.
#[derive(Debug, Clone, Copy)]
struct Ending {
    outcome: &'static str,
    reason: Option<&'static str>,
    version: Option<Version>,
}

impl Ending {
    fn committed(version: Version) -> Ending {
        Ending { outcome: "ok", reason: None, version: Some(version) }
    }

    /// An error from the body (`committing` false) or from the commit itself.
    fn failed(e: &KvError, committing: bool) -> Ending {
        let (outcome, reason) = match e {
            KvError::Aborted { reason } => ("aborted", Some(reason.word())),
            // Only a commit that may have been applied is in doubt: before the
            // commit is sent nothing can commit, and `invalid` and `unavailable`
            // are refusals.
            KvError::Indeterminate { .. } if committing => ("indeterminate", None),
            KvError::Indeterminate { .. } | KvError::Unavailable { .. } | KvError::Invalid { .. } => {
                ("unavailable", None)
            }
            _ if committing => ("indeterminate", None),
            // The body gave up on its own (say, a value it could not parse): the
            // attempt was aborted at its request.
            _ => ("aborted", Some("requested")),
        };
        Ending { outcome, reason, version: None }
    }
}

/// One client of a closed loop: its number, its client, its policy and its
/// random choices.
#[derive(Debug)]
pub struct Worker {
    /// The client's number in the run (the history's `client`).
    pub number: u64,
    /// Its client.
    pub client: Client,
    /// The conflict policy of its read-write transactions.
    pub policy: Policy,
    /// Its random choices (seeded per client).
    pub rng: ChaCha8Rng,
    history: Option<Arc<TxnHistory>>,
}

impl Worker {
    /// Client `number` of a run, seeded from `seed`, recording to `history`.
    pub fn new(number: u64, client: Client, policy: Policy, seed: u64, history: Option<Arc<TxnHistory>>) -> Worker {
        let rng = ChaCha8Rng::seed_from_u64(seed ^ number.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        Worker { number, client, policy, rng, history }
    }

    /// Runs `body` as one read-write transaction under the worker's policy, a new
    /// attempt after each `aborted` answer until the client's deadline.
    pub fn run_txn(&mut self, mut body: impl FnMut(&mut Attempt<'_>) -> Result<(), KvError>) -> TxnResult {
        let deadline = self.client.config().deadline;
        let began = Instant::now();
        let mut result = TxnResult::default();
        let mut first_start = None;
        loop {
            result.attempts += 1;
            let invoke_ns = self.history.as_ref().map_or(0, |h| h.now_ns());
            let handle = match (self.policy, first_start) {
                (Policy::WaitDie, Some(start)) => self.client.txn_begin_at(self.policy, start),
                _ => self.client.txn_begin(self.policy),
            };
            first_start.get_or_insert(handle.start_version());
            let ending = self.attempt(handle, invoke_ns, result.attempts as u32, &mut body);
            match ending.reason {
                Some(reason) if ending.outcome == "aborted" => {
                    result.aborts.push(reason);
                    if began.elapsed() >= deadline || reason == "requested" {
                        break;
                    }
                    let cap_us = BACKOFF_FIRST_US << (result.attempts as u32 - 1).min(BACKOFF_DOUBLINGS_MAX);
                    std::thread::sleep(Duration::from_micros(self.rng.random_range(0..=cap_us)));
                }
                _ => {
                    result.committed = ending.outcome == "ok";
                    break;
                }
            }
        }
        result.elapsed = began.elapsed();
        result
    }

    /// Runs `body` as one read-only transaction (a snapshot at or above every
    /// version this client has seen); its snapshot version.
    pub fn run_read_only<T>(
        &mut self,
        mut body: impl FnMut(&mut Attempt<'_>) -> Result<T, KvError>,
    ) -> Result<(T, Version), KvError> {
        let invoke_ns = self.history.as_ref().map_or(0, |h| h.now_ns());
        let handle = self.client.txn_begin_read_only(None);
        let mut attempt =
            Attempt { client: &mut self.client, log: self.history.as_ref().map(|_| AttemptLog::default()), handle };
        let value = body(&mut attempt);
        let Attempt { handle, log, .. } = attempt;
        let start_version = handle.start_version();
        let id = handle.id();
        let (result, ending) = match value {
            Ok(value) => match self.client.txn_commit(handle) {
                Ok(version) => (Ok((value, version)), Ending::committed(version)),
                Err(e) => {
                    let ending = Ending::failed(&e, true);
                    (Err(e), ending)
                }
            },
            Err(e) => {
                if handle.is_open() {
                    let _ = self.client.txn_abort(handle);
                }
                let ending = Ending::failed(&e, false);
                (Err(e), ending)
            }
        };
        self.record(id, "read-only", 1, start_version, log, invoke_ns, ending);
        result
    }

    /// One attempt: the body, then commit (or abort when the body failed and the
    /// transaction is still open); its history line.
    fn attempt(
        &mut self,
        handle: TxnHandle,
        invoke_ns: u64,
        number: u32,
        body: &mut impl FnMut(&mut Attempt<'_>) -> Result<(), KvError>,
    ) -> Ending {
        let id = handle.id();
        let start_version = handle.start_version();
        let log = self.history.as_ref().map(|_| AttemptLog::default());
        let mut attempt = Attempt { client: &mut self.client, handle, log };
        let done = body(&mut attempt);
        let Attempt { handle, log, .. } = attempt;
        let ending = match done {
            Ok(()) => match self.client.txn_commit(handle) {
                Ok(version) => Ending::committed(version),
                Err(e) => Ending::failed(&e, true),
            },
            Err(e) => {
                if handle.is_open() {
                    // Best effort, like every release: the leaders' lifetime
                    // limit is the backstop.
                    let _ = self.client.txn_abort(handle);
                }
                Ending::failed(&e, false)
            }
        };
        self.record(id, self.policy.name(), number, start_version, log, invoke_ns, ending);
        ending
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        id: TxnId,
        policy: &str,
        attempt: u32,
        start_version: Version,
        log: Option<AttemptLog>,
        invoke_ns: u64,
        ending: Ending,
    ) {
        let (Some(history), Some(log)) = (&self.history, log) else { return };
        let return_ns = (ending.outcome != "indeterminate").then(|| history.now_ns());
        history.write(&TxnRecord {
            client: self.number,
            op: "txn".into(),
            txn: txn_name(id),
            policy: policy.into(),
            attempt,
            start_version,
            reads: log.reads,
            writes: log.writes.iter().map(|(k, v)| write_record(k, v.as_deref())).collect(),
            invoke_ns,
            return_ns,
            outcome: ending.outcome.into(),
            reason: ending.reason.map(str::to_string),
            version: ending.version,
        });
    }
}

fn write_record(key: &[u8], hash: Option<&str>) -> TxnWriteRecord {
    TxnWriteRecord { value_hash: hash.map(str::to_string), ..TxnWriteRecord::new(key, None) }
}

/// The shape of a closed-loop run.
#[derive(Debug, Clone)]
pub struct LoopSpec {
    /// Closed-loop clients (threads).
    pub clients: usize,
    /// The conflict policy of their read-write transactions.
    pub policy: Policy,
    /// Measured length.
    pub duration: Duration,
    /// Warm-up before it.
    pub warmup: Duration,
    /// Seed of the choices.
    pub seed: u64,
}

/// What the measured window of a closed loop saw.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Transactions committed in the window.
    pub committed: u64,
    /// Aborted attempts by reason word, in the window.
    pub aborts: BTreeMap<&'static str, u64>,
    /// Attempts of the committed transactions (the committed ones included).
    pub attempts: u64,
    /// Transactions given up (deadline) or not definitely answered.
    pub failed: u64,
    /// The window's length.
    pub elapsed: Duration,
    /// Committed transaction latency including retries, microseconds.
    pub latency_us: Histogram<u64>,
}

impl Default for Figures {
    fn default() -> Figures {
        Figures {
            committed: 0,
            aborts: BTreeMap::new(),
            attempts: 0,
            failed: 0,
            elapsed: Duration::ZERO,
            latency_us: Histogram::new(3).expect("3 significant digits are valid"),
        }
    }
}

impl Figures {
    /// Committed transactions per second.
    pub fn txns_per_s(&self) -> f64 {
        self.committed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Aborted attempts in all.
    pub fn aborted(&self) -> u64 {
        self.aborts.values().sum()
    }

    /// Aborted attempts per committed transaction.
    pub fn aborts_per_commit(&self) -> f64 {
        self.aborted() as f64 / self.committed.max(1) as f64
    }

    /// The fraction of attempts that aborted.
    pub fn abort_ratio(&self) -> f64 {
        self.aborted() as f64 / (self.aborted() + self.committed).max(1) as f64
    }

    /// Retries per committed transaction.
    pub fn retries_per_commit(&self) -> f64 {
        self.attempts.saturating_sub(self.committed) as f64 / self.committed.max(1) as f64
    }

    /// A latency quantile of committed transactions, milliseconds.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// `wounded 3, died 1`, or a dash.
    pub fn reasons(&self) -> String {
        let reasons: Vec<String> = self.aborts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        if reasons.is_empty() { "-".to_string() } else { reasons.join(", ") }
    }

    /// The table cells every transaction workload prints, in the order of
    /// [`FIGURE_COLUMNS`].
    pub fn cells(&self) -> String {
        format!(
            "{:.0} | {:.3} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {}",
            self.txns_per_s(),
            self.abort_ratio(),
            self.aborts_per_commit(),
            self.retries_per_commit(),
            self.latency_ms(0.5),
            self.latency_ms(0.99),
            self.failed,
            self.reasons(),
        )
    }

    /// Counts one transaction that ended in the window.
    pub(crate) fn add(&mut self, result: &TxnResult) {
        if result.committed {
            self.committed += 1;
            self.attempts += result.attempts;
            let _ = self.latency_us.record(result.elapsed.as_micros().max(1) as u64);
        } else {
            self.failed += 1;
        }
        for reason in &result.aborts {
            *self.aborts.entry(reason).or_default() += 1;
        }
    }
}

/// The column headers of [`Figures::cells`].
pub const FIGURE_COLUMNS: &str = "committed txns/s | abort ratio | aborts/commit | retries/commit | p50 ms | p99 ms \
                                  | failed | aborts by reason";

/// Runs `clients` workers for the warm-up and the measured window: worker `i`
/// calls `step_of(i)`'s closure again and again (one transaction each call)
/// until the window ends; the figures of the window.
pub fn closed_loop<S>(
    config: &ClientConfig,
    spec: &LoopSpec,
    history: Option<&Arc<TxnHistory>>,
    mut step_of: impl FnMut(usize) -> S,
) -> Result<Figures, String>
where
    S: FnMut(&mut Worker) -> TxnResult + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let figures = Arc::new(Mutex::new(Figures::default()));
    let mut threads = Vec::with_capacity(spec.clients);
    for w in 0..spec.clients {
        let client = Client::connect(config.clone()).map_err(|e| format!("cannot connect: {e}"))?;
        let mut worker = Worker::new(w as u64, client, spec.policy, spec.seed, history.cloned());
        let mut step = step_of(w);
        let (stop, measuring, figures) = (stop.clone(), measuring.clone(), figures.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let result = step(&mut worker);
                if measuring.load(Ordering::Relaxed) {
                    figures.lock().expect("no worker panics holding it").add(&result);
                }
            }
        }));
    }
    std::thread::sleep(spec.warmup);
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(spec.duration);
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| "a worker panicked".to_string())?;
    }
    let mut figures = std::mem::take(&mut *figures.lock().expect("workers are done"));
    figures.elapsed = elapsed;
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_the_last_write_per_key_in_first_write_order() {
        let mut log = AttemptLog::default();
        log.write(b"b", Some(b"1"));
        log.write(b"a", Some(b"2"));
        log.write(b"b", None);
        assert!(log.wrote(b"a") && log.wrote(b"b") && !log.wrote(b"c"));
        let keys: Vec<&[u8]> = log.writes.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, [b"b".as_slice(), b"a".as_slice()]);
        assert_eq!(log.writes[0].1, None, "the delete replaced the put");
        assert_eq!(log.writes[1].1, Some(value_hash(b"2")));
    }

    #[test]
    fn endings_use_the_history_words() {
        use corekv_rpc::txn::AbortReason;
        let aborted = Ending::failed(&KvError::Aborted { reason: AbortReason::Wounded }, false);
        assert_eq!((aborted.outcome, aborted.reason), ("aborted", Some("wounded")));
        let lost = Ending::failed(&KvError::Indeterminate { reason: "x".into() }, true);
        assert_eq!((lost.outcome, lost.reason), ("indeterminate", None));
        let before_commit = Ending::failed(&KvError::Indeterminate { reason: "x".into() }, false);
        assert_eq!(before_commit.outcome, "unavailable", "nothing commits before the commit is sent");
        let refused = Ending::failed(&KvError::Unavailable { reason: "x".into() }, true);
        assert_eq!(refused.outcome, "unavailable");
        let gave_up = Ending::failed(&KvError::NotFound, false);
        assert_eq!((gave_up.outcome, gave_up.reason), ("aborted", Some("requested")));
    }

    #[test]
    fn txn_names_are_client_dot_attempt() {
        let id = TxnId { client: corekv_rpc::kv::ClientId::from_u128(0xabc), attempt: 7 };
        assert_eq!(txn_name(id), "00000000000000000000000000000abc.7");
    }

    #[test]
    fn figures_count_commits_aborts_and_failures() {
        let mut f = Figures { elapsed: Duration::from_secs(2), ..Figures::default() };
        f.add(&TxnResult {
            committed: true,
            attempts: 3,
            aborts: vec!["wounded", "wounded"],
            elapsed: Duration::from_millis(4),
        });
        f.add(&TxnResult { committed: true, attempts: 1, aborts: vec![], elapsed: Duration::from_millis(1) });
        f.add(&TxnResult {
            committed: false,
            attempts: 2,
            aborts: vec!["died", "died"],
            elapsed: Duration::from_secs(5),
        });
        assert_eq!((f.committed, f.attempts, f.failed, f.aborted()), (2, 4, 1, 4));
        assert_eq!(f.txns_per_s(), 1.0);
        assert_eq!(f.retries_per_commit(), 1.0);
        assert_eq!(f.aborts_per_commit(), 2.0);
        assert_eq!(f.reasons(), "died 2, wounded 2");
        assert!(f.latency_ms(0.99) >= 3.9 && f.latency_ms(0.99) <= 4.1, "{}", f.latency_ms(0.99));
    }
}
