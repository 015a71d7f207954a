//! Runs a workload against any system through the [`Driver`] trait, on any
//! single-threaded async runtime through the [`Runtime`] trait: the load phase,
//! then closed-loop or open-loop workers, recording latencies, outcomes, the
//! optional history file and a live progress line.
//!
//! Pacing:
//! - closed loop: `clients × inflight` workers, each sends its next operation as
//!   soon as the previous one is answered;
//! - open loop (`rate`): the same workers follow a fixed schedule (worker i sends at
//!   start + i/rate, then every workers/rate); latency counts from the intended send
//!   time, so a slow answer that delays later sends is charged to them too (no
//!   coordinated omission).

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::future::Future;
use std::io::{BufWriter, IsTerminal, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use corekv_tools::history::{HistoryWriter, Record, value_hash};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::report::Recorder;
use crate::workload::{Generator, Inserted, Kind, Op, OpKind, Spec, key_of};

/// What a system answered, in DESIGN §6's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// `Ok` with the version written or read (when the system has versions), or
    /// the outcome word.
    pub result: Result<Option<u64>, &'static str>,
    /// A read's value (to record its hash in the history).
    pub value: Option<Vec<u8>>,
}

impl Answer {
    /// Success with an optional version.
    pub fn ok(version: Option<u64>) -> Answer {
        Answer { result: Ok(version), value: None }
    }

    /// A read's value.
    pub fn value(version: Option<u64>, value: Vec<u8>) -> Answer {
        Answer { result: Ok(version), value: Some(value) }
    }

    /// Failure with an outcome word.
    pub fn err(word: &'static str) -> Answer {
        Answer { result: Err(word), value: None }
    }
}

/// One system's client, as the workloads use it. Clone shares the connection(s).
#[allow(async_fn_in_trait)]
pub trait Driver: Clone + 'static {
    /// Reads `key` (not found is the word `not_found`).
    async fn read(&self, key: &[u8]) -> Answer;
    /// Writes the whole record `value` at `key`.
    async fn write(&self, key: &[u8], value: &[u8]) -> Answer;
    /// Reads up to `count` records from `start` on, in key order.
    async fn scan(&self, start: &[u8], count: u32) -> Answer;
}

/// The async runtime the workers run on (one thread).
pub trait Runtime: Clone + 'static {
    /// Waits `d`.
    fn sleep(&self, d: Duration) -> impl Future<Output = ()>;
    /// Starts `future` as a task; the returned future waits for it.
    fn spawn(&self, future: impl Future<Output = ()> + 'static) -> impl Future<Output = ()>;
}

/// How the workers send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    /// Clients (each with its own connection(s) where the system has them).
    pub clients: usize,
    /// Operations in flight per client.
    pub inflight: usize,
    /// Open loop at this many operations per second, all workers together.
    pub rate: Option<f64>,
}

impl Pacing {
    /// Workers in all.
    pub fn workers(&self) -> usize {
        self.clients * self.inflight
    }
}

/// Everything one run shares between its workers (one thread).
pub struct Shared {
    /// The run's time base (history timestamps count from it).
    pub epoch: Instant,
    recorder: RefCell<Recorder>,
    interval: RefCell<Recorder>,
    history: RefCell<Option<HistoryWriter<BufWriter<File>>>>,
    history_error: RefCell<Option<String>>,
    writes_ok: Cell<u64>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

impl Shared {
    /// Shared state; every operation goes to `history` when given.
    pub fn new(history: Option<File>) -> Rc<Shared> {
        Rc::new(Shared {
            epoch: Instant::now(),
            recorder: RefCell::new(Recorder::default()),
            interval: RefCell::new(Recorder::default()),
            history: RefCell::new(history.map(|f| HistoryWriter::new(BufWriter::new(f)))),
            history_error: RefCell::new(None),
            writes_ok: Cell::new(0),
        })
    }

    /// What the measured window recorded.
    pub fn recorder(&self) -> Recorder {
        self.recorder.borrow().clone()
    }

    /// Successful writes in the measured window.
    pub fn writes_ok(&self) -> u64 {
        self.writes_ok.get()
    }

    /// Flushes the history; the first write error, if any happened.
    pub fn finish_history(&self) -> Result<(), String> {
        if let Some(w) = self.history.borrow_mut().as_mut()
            && let Err(e) = w.flush()
        {
            self.history_error.borrow_mut().get_or_insert(e.to_string());
        }
        match self.history_error.borrow().clone() {
            Some(e) => Err(format!("cannot write the history file: {e}")),
            None => Ok(()),
        }
    }

    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn log(&self, record: Record) {
        let mut history = self.history.borrow_mut();
        let Some(w) = history.as_mut() else { return };
        if let Err(e) = w.write(&record) {
            self.history_error.borrow_mut().get_or_insert(e.to_string());
            *history = None;
        }
    }

    fn has_history(&self) -> bool {
        self.history.borrow().is_some()
    }
}

fn record_of(
    client: u64,
    op: &str,
    key: &[u8],
    invoke: u64,
    ret: u64,
    answer: &Answer,
    written: Option<&[u8]>,
) -> Record {
    let indeterminate = answer.result == Err("indeterminate");
    let (outcome, version) = match answer.result {
        Ok(version) => ("ok".to_string(), version),
        Err(word) => (word.to_string(), None),
    };
    let value_hash = match (written, &answer.value) {
        (Some(value), _) => Some(value_hash(value)),
        (None, Some(value)) => Some(value_hash(value)),
        (None, None) => None,
    };
    Record {
        client,
        op: op.to_string(),
        key: None,
        key_b64: None,
        value_hash,
        expected: None,
        invoke_ns: invoke,
        return_ns: if indeterminate { None } else { Some(ret) },
        outcome,
        version,
    }
    .with_key(key)
}

/// Runs one operation, logging its register calls to the history; its overall
/// outcome.
async fn execute<D: Driver>(driver: &D, op: &Op, client: u64, shared: &Shared) -> Result<(), &'static str> {
    let logged = shared.has_history();
    let read = |key: Vec<u8>| async move {
        let invoke = shared.ns(Instant::now());
        let answer = driver.read(&key).await;
        if logged {
            shared.log(record_of(client, "get", &key, invoke, shared.ns(Instant::now()), &answer, None));
        }
        answer.result.map(|_| ())
    };
    let write = |key: Vec<u8>, value: Vec<u8>| async move {
        let invoke = shared.ns(Instant::now());
        let answer = driver.write(&key, &value).await;
        if logged {
            shared.log(record_of(client, "put", &key, invoke, shared.ns(Instant::now()), &answer, Some(&value)));
        }
        answer.result.map(|_| ())
    };
    match op {
        Op::Read { key } => read(key.clone()).await,
        Op::Update { key, value } | Op::Insert { key, value } => write(key.clone(), value.clone()).await,
        Op::Scan { start, count } => {
            let invoke = shared.ns(Instant::now());
            let answer = driver.scan(start, *count).await;
            if logged {
                shared.log(record_of(client, "scan", start, invoke, shared.ns(Instant::now()), &answer, None));
            }
            answer.result.map(|_| ())
        }
        Op::ReadModifyWrite { key, value } => {
            read(key.clone()).await?;
            write(key.clone(), value.clone()).await
        }
    }
}

/// The measured window: operations that end after `warm_until` and by `end` count.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// When the first worker starts.
    pub start: Instant,
    /// End of the warm-up.
    pub warm_until: Instant,
    /// End of the run.
    pub end: Instant,
}

#[allow(clippy::too_many_arguments)]
async fn worker<D: Driver, R: Runtime>(
    driver: D,
    rt: R,
    mut generator: Generator,
    worker: usize,
    pacing: Pacing,
    window: Window,
    shared: Rc<Shared>,
) {
    let workers = pacing.workers();
    let interval = pacing.rate.map(|rate| Duration::from_secs_f64(workers as f64 / rate));
    let mut next = match interval {
        Some(iv) => window.start + iv.mul_f64(worker as f64 / workers as f64),
        None => window.start,
    };
    loop {
        let now = Instant::now();
        let intended = match interval {
            Some(iv) => {
                if next > now {
                    rt.sleep(next - now).await;
                }
                let t = next;
                next += iv;
                t
            }
            None => now,
        };
        if intended >= window.end {
            return;
        }
        let op = generator.next_op();
        let kind = op.kind();
        let outcome = execute(&driver, &op, worker as u64, &shared).await;
        let done = Instant::now();
        if done > window.warm_until && done <= window.end {
            let latency = done.saturating_duration_since(intended);
            shared.recorder.borrow_mut().record(kind, latency, outcome);
            if outcome.is_ok() && matches!(kind, OpKind::Update | OpKind::Insert | OpKind::ReadModifyWrite) {
                shared.writes_ok.set(shared.writes_ok.get() + 1);
            }
        }
        shared.interval.borrow_mut().record(kind, done.saturating_duration_since(intended), outcome);
    }
}

/// Writes every record of `spec` (the load phase), `concurrency` at a time; the
/// writes that failed, by outcome word.
pub async fn load<D: Driver, R: Runtime>(
    drivers: &[D],
    rt: &R,
    spec: &Spec,
    concurrency: usize,
    seed: u64,
    shared: &Rc<Shared>,
) -> Recorder {
    let next = Rc::new(Cell::new(0u64));
    let result = Rc::new(RefCell::new(Recorder::default()));
    let mut tasks = Vec::new();
    for i in 0..concurrency.max(1) {
        let driver = drivers[i % drivers.len()].clone();
        let (next, result, shared, spec) = (next.clone(), result.clone(), shared.clone(), spec.clone());
        let mut generator =
            Generator::new(spec.clone(), ChaCha8Rng::seed_from_u64(seed ^ (i as u64) << 32), Inserted::new(0));
        let client = 1_000_000 + i as u64;
        tasks.push(rt.spawn(async move {
            loop {
                let n = next.get();
                if n >= spec.records {
                    return;
                }
                next.set(n + 1);
                let op = Op::Insert { key: key_of(spec.kind, n), value: generator.value() };
                let started = Instant::now();
                let outcome = execute(&driver, &op, client, &shared).await;
                result.borrow_mut().record(OpKind::Insert, started.elapsed(), outcome);
            }
        }));
    }
    for task in tasks {
        task.await;
    }
    result.take()
}

/// Runs `pacing`'s workers over `spec` from `window.start` to `window.end`;
/// `drivers` holds one driver per client. Prints a progress line each second on a
/// terminal.
pub async fn run<D: Driver, R: Runtime>(
    drivers: &[D],
    rt: &R,
    spec: &Spec,
    pacing: Pacing,
    window: Window,
    seed: u64,
    shared: &Rc<Shared>,
) {
    let inserted = Inserted::new(spec.records);
    let mut tasks = Vec::new();
    for w in 0..pacing.workers() {
        let driver = drivers[w / pacing.inflight.max(1) % drivers.len()].clone();
        let rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(w as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let generator = Generator::new(spec.clone(), rng, inserted.clone());
        tasks.push(rt.spawn(worker(driver, rt.clone(), generator, w, pacing, window, shared.clone())));
    }
    let progress = std::io::stderr().is_terminal().then(|| {
        let (rt2, shared) = (rt.clone(), shared.clone());
        rt.spawn(async move {
            let mut tick = window.start;
            loop {
                tick += Duration::from_secs(1);
                if tick > window.end {
                    return;
                }
                rt2.sleep(tick.saturating_duration_since(Instant::now())).await;
                let r = std::mem::take(&mut *shared.interval.borrow_mut());
                let phase = if tick <= window.warm_until { "warm-up" } else { "measured" };
                eprint!(
                    "\r[{:>5.1} s {phase:<8}] {:>8} ops/s  p99 {:>8.3} ms  errors {:<6}",
                    (tick - window.start).as_secs_f64(),
                    r.ok(),
                    r.p99_ns() as f64 / 1e6,
                    r.errors()
                );
                let _ = std::io::stderr().flush();
            }
        })
    });
    for task in tasks {
        task.await;
    }
    if let Some(progress) = progress {
        progress.await;
        eprintln!();
    }
}

/// The default key space of a workload: YCSB's loads are sized to load in seconds
/// here; etcd's op guide names its own.
pub fn default_records(kind: Kind) -> u64 {
    if kind.is_ycsb() { 10_000 } else { 100_000 }
}
