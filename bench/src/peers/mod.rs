//! Peer systems behind the same workload code, so that a comparison asks every
//! system the same questions: etcd through its v3 API ([`etcd`]) and Redis
//! through RESP ([`redis`], over [`resp`]).
//!
//! The drivers run on a tokio current-thread runtime with a `LocalSet`
//! ([`TokioLocal`]), one thread like the corekv driver's glommio executor, and
//! go through [`runner::load`] / [`runner::run`] into the same [`Report`]. They
//! are behind the cargo feature `peers` (tokio and etcd's client are not in the
//! default build); what needs no runtime (target URLs, the metrics text, the
//! measuring plan) is always built, so it is always tested.
//!
//! What each system is asked:
//! - etcd: a read is a linearizable `Range` of one key, a write a `Put`, a scan a
//!   `Range` from the key on with a limit (etcd orders keys, so YCSB-E is honest);
//!   clients share `--conns` gRPC connections, one per 10 clients by default as
//!   etcd's own benchmark tool does, spread over the endpoints.
//! - Redis: `GET` / `SET` on one connection per client, pipelined when a client
//!   has more than one request in flight. Redis keeps plain keys unordered, so
//!   YCSB-E's scans are refused up front rather than imitated.

#[cfg(feature = "peers")]
pub mod bank;
#[cfg(feature = "peers")]
pub mod etcd;
#[cfg(feature = "peers")]
pub mod redis;
pub mod resp;
pub mod servers;

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::rc::Rc;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::report::Recorder;
use crate::runner::{self, Driver, Pacing, Runtime, Shared, Window};
use crate::workload::{Kind, Spec};

/// Concurrency of the load phase (as for corekv).
pub const LOAD_CONCURRENCY: usize = 64;
/// Clients per etcd connection by default (etcd's benchmark tool: `--conns`
/// defaults to a tenth of `--clients`).
pub const ETCD_CLIENTS_PER_CONN: usize = 10;
/// Deadline of the blocking HTTP and RESP probes used around the runs.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest HTTP answer a probe reads (etcd's /metrics is a few hundred KiB).
const HTTP_BODY_BYTES_MAX: u64 = 16 << 20;

/// A peer system to drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// etcd's client endpoints, `HOST:PORT` each.
    Etcd(Vec<String>),
    /// A Redis server's `HOST:PORT`.
    Redis(String),
}

impl Target {
    /// The system's name.
    pub fn system(&self) -> &'static str {
        match self {
            Target::Etcd(_) => "etcd",
            Target::Redis(_) => "redis",
        }
    }

    /// Connections for `clients` clients when `--conns` is not given: etcd one per
    /// 10 clients, Redis one per client (as `redis-benchmark -c` does).
    pub fn default_conns(&self, clients: usize) -> usize {
        match self {
            Target::Etcd(_) => clients.div_ceil(ETCD_CLIENTS_PER_CONN).max(1),
            Target::Redis(_) => clients.max(1),
        }
    }

    /// Whether the system can run `kind` honestly; the reason when not.
    pub fn supports(&self, kind: Kind) -> Result<(), String> {
        match (self, kind) {
            (Target::Redis(_), Kind::E) => Err("redis:// cannot run ycsb-e: Redis keeps plain keys unordered, so it \
                                                has no range scan to compare (use another workload)"
                .into()),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Etcd(endpoints) => write!(f, "etcd://{}", endpoints.join(",")),
            Target::Redis(addr) => write!(f, "redis://{addr}"),
        }
    }
}

impl FromStr for Target {
    type Err = String;

    /// `etcd://HOST:PORT[,HOST:PORT…]` or `redis://HOST:PORT`.
    fn from_str(url: &str) -> Result<Target, String> {
        let bad =
            |why: &str| format!("bad --target {url:?}: {why} (etcd://HOST:PORT[,HOST:PORT...] or redis://HOST:PORT)");
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let rest = rest.trim_end_matches('/');
        let addrs =
            rest.split(',').map(str::trim).map(|a| host_port(a).map_err(|e| bad(&e))).collect::<Result<Vec<_>, _>>()?;
        match scheme.to_ascii_lowercase().as_str() {
            "etcd" => Ok(Target::Etcd(addrs)),
            "redis" if addrs.len() == 1 => Ok(Target::Redis(addrs.into_iter().next().expect("one address"))),
            "redis" => Err(bad("redis takes one HOST:PORT (no cluster mode)")),
            other => Err(bad(&format!("unknown scheme {other:?}"))),
        }
    }
}

/// `HOST:PORT` with a non-empty host and a port in 1..=65535 (`[::1]:P` for IPv6).
fn host_port(addr: &str) -> Result<String, String> {
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("{addr:?} has no port"))?;
    if host.is_empty() || host.contains('/') || host.contains('@') {
        return Err(format!("{addr:?} has no usable host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(addr.to_string()),
        _ => Err(format!("{port:?} is not a port")),
    }
}

/// What one measured run does, whatever the system.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The workload.
    pub spec: Spec,
    /// Clients, in-flight requests, open-loop rate.
    pub pacing: Pacing,
    /// Run but not counted.
    pub warmup: Duration,
    /// Counted.
    pub duration: Duration,
    /// The workload's seed.
    pub seed: u64,
    /// Run the load phase first (when the workload needs one).
    pub load: bool,
}

impl Plan {
    /// The window of a run that starts now.
    pub fn window_from_now(&self) -> Window {
        let start = Instant::now();
        Window { start, warm_until: start + self.warmup, end: start + self.warmup + self.duration }
    }
}

/// The load phase (when `plan` asks for it), then the measured run; what the
/// window recorded. `drivers` holds one driver per client.
pub async fn measure<D: Driver, R: Runtime>(drivers: &[D], rt: &R, plan: &Plan, shared: &Rc<Shared>) -> Recorder {
    if plan.load && plan.spec.kind.needs_load() {
        let started = Instant::now();
        let loaded = runner::load(drivers, rt, &plan.spec, LOAD_CONCURRENCY, plan.seed, shared).await;
        eprintln!(
            "corekv-bench: loaded {} records of {} bytes in {:.1} s ({} errors)",
            loaded.ok(),
            plan.spec.value_bytes,
            started.elapsed().as_secs_f64(),
            loaded.errors()
        );
    }
    let window = plan.window_from_now();
    runner::run(drivers, rt, &plan.spec, plan.pacing, window, plan.seed, shared).await;
    shared.recorder()
}

/// The writes a driver sent and those answered as done, over a whole run (load,
/// warm-up and measured window), for checking a driver against the server's own
/// counters.
#[derive(Debug, Default)]
pub struct WriteCounts {
    sent: std::cell::Cell<u64>,
    ok: std::cell::Cell<u64>,
}

impl WriteCounts {
    /// A write is about to go out.
    pub fn sent(&self) {
        self.sent.set(self.sent.get() + 1);
    }

    /// A write was answered as done.
    pub fn ok(&self) {
        self.ok.set(self.ok.get() + 1);
    }

    /// (sent, answered as done).
    pub fn get(&self) -> (u64, u64) {
        (self.sent.get(), self.ok.get())
    }
}

/// One run against a peer.
#[derive(Debug, Clone)]
pub struct PeerRun {
    /// The same report as corekv's.
    pub report: crate::report::Report,
    /// What the measured window recorded.
    pub recorder: Recorder,
    /// Writes sent over the whole run (load included).
    pub writes_sent: u64,
    /// Writes answered as done over the whole run.
    pub writes_ok: u64,
}

/// How a peer run connects.
#[derive(Debug, Clone, Copy)]
pub struct Connect {
    /// Connections (`None`: [`Target::default_conns`]).
    pub conns: Option<usize>,
    /// Per-request deadline.
    pub timeout: Duration,
}

/// The single-threaded runtime every peer driver runs on (its tasks share `Rc`
/// state on a `LocalSet`).
#[cfg(feature = "peers")]
pub(crate) fn current_thread_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))
}

/// Runs `plan` against `target` on a tokio current-thread runtime, recording to
/// `history` when given.
#[cfg(feature = "peers")]
pub fn run(target: &Target, plan: &Plan, connect: Connect, history: Option<std::fs::File>) -> Result<PeerRun, String> {
    target.supports(plan.spec.kind)?;
    let conns = connect.conns.unwrap_or_else(|| target.default_conns(plan.pacing.clients)).max(1);
    let runtime = current_thread_runtime()?;
    tokio::task::LocalSet::new().block_on(&runtime, async {
        let shared = Shared::new(history);
        let counts = Rc::new(WriteCounts::default());
        let recorder = match target {
            Target::Etcd(endpoints) => {
                let drivers =
                    etcd::EtcdDriver::connect_all(endpoints, plan.pacing.clients, conns, connect.timeout, &counts)
                        .await?;
                measure(&drivers, &TokioLocal, plan, &shared).await
            }
            Target::Redis(addr) => {
                let drivers =
                    redis::RedisDriver::connect_all(addr, plan.pacing.clients, conns, connect.timeout, &counts).await?;
                measure(&drivers, &TokioLocal, plan, &shared).await
            }
        };
        shared.finish_history()?;
        let (writes_sent, writes_ok) = counts.get();
        let label = format!("{target} ({conns} connections)");
        let report = crate::report::Report::new(
            label,
            plan.spec.kind.name().to_string(),
            (plan.pacing.clients, plan.pacing.inflight, plan.pacing.rate),
            &recorder,
            plan.duration,
            None,
        );
        Ok(PeerRun { report, recorder, writes_sent, writes_ok })
    })
}

/// The tokio current-thread runtime with a `LocalSet` (tasks are `!Send`).
#[cfg(feature = "peers")]
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioLocal;

#[cfg(feature = "peers")]
impl Runtime for TokioLocal {
    fn sleep(&self, d: Duration) -> impl std::future::Future<Output = ()> {
        tokio::time::sleep(d)
    }

    fn spawn(&self, future: impl std::future::Future<Output = ()> + 'static) -> impl std::future::Future<Output = ()> {
        let handle = tokio::task::spawn_local(future);
        async move {
            if let Err(e) = handle.await
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
}

/// `GET path` over HTTP/1.0 from `addr` (blocking, plain TCP): the body of a 200
/// answer. For etcd's `/metrics` and `/health` around the runs.
pub fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let fail = |e: std::io::Error| format!("GET http://{addr}{path}: {e}");
    let sock = addr
        .to_socket_addrs()
        .map_err(fail)?
        .next()
        .ok_or_else(|| format!("GET http://{addr}{path}: the address resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&sock, PROBE_TIMEOUT).map_err(fail)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).map_err(fail)?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).map_err(fail)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(fail)?;
    let mut answer = String::new();
    stream.take(HTTP_BODY_BYTES_MAX).read_to_string(&mut answer).map_err(fail)?;
    let (head, body) =
        answer.split_once("\r\n\r\n").ok_or_else(|| format!("GET http://{addr}{path}: no HTTP answer"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("GET http://{addr}{path}: {status}"));
    }
    Ok(body.to_string())
}

/// The value of the Prometheus sample `name` (without labels) in `text`, the
/// exposition format etcd's `/metrics` serves.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (key, value) = line.split_once(char::is_whitespace)?;
        (key == name).then(|| value.split_whitespace().next()?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            "etcd://127.0.0.1:2379,localhost:22379".parse::<Target>(),
            Ok(Target::Etcd(vec!["127.0.0.1:2379".into(), "localhost:22379".into()]))
        );
        assert_eq!("redis://127.0.0.1:6379/".parse::<Target>(), Ok(Target::Redis("127.0.0.1:6379".into())));
        assert_eq!("REDIS://[::1]:6379".parse::<Target>(), Ok(Target::Redis("[::1]:6379".into())));
        assert_eq!("etcd://a:1".parse::<Target>().unwrap().to_string(), "etcd://a:1");
    }

    #[test]
    fn bad_targets_say_what_is_wrong() {
        for (url, why) in [
            ("127.0.0.1:2379", "no scheme"),
            ("http://h:1", "unknown scheme"),
            ("etcd://h", "has no port"),
            ("etcd://h:0", "is not a port"),
            ("etcd://h:99999", "is not a port"),
            ("etcd://:1", "no usable host"),
            ("redis://a:1,b:2", "one HOST:PORT"),
            ("etcd://a:1,", "has no port"),
        ] {
            let e = url.parse::<Target>().unwrap_err();
            assert!(e.contains(why) && e.contains("etcd://HOST:PORT"), "{url}: {e}");
        }
    }

    #[test]
    fn connections_default_like_etcds_benchmark_tool() {
        let etcd = Target::Etcd(vec!["h:1".into()]);
        assert_eq!((etcd.default_conns(1), etcd.default_conns(10), etcd.default_conns(64)), (1, 1, 7));
        assert_eq!(Target::Redis("h:1".into()).default_conns(64), 64);
    }

    #[test]
    fn redis_refuses_scans_and_nothing_else() {
        let redis = Target::Redis("h:1".into());
        assert!(redis.supports(Kind::E).unwrap_err().contains("unordered"));
        assert!(Kind::ALL.iter().filter(|k| **k != Kind::E).all(|k| redis.supports(*k).is_ok()));
        assert!(Target::Etcd(vec!["h:1".into()]).supports(Kind::E).is_ok());
    }

    #[test]
    fn metrics_are_read_from_the_exposition_text() {
        let text = "# HELP etcd_server_proposals_committed_total The total number of consensus proposals committed.\n\
                    # TYPE etcd_server_proposals_committed_total gauge\n\
                    etcd_server_proposals_committed_total 1.2345e+06\n\
                    etcd_server_proposals_committed_total_other 3\n\
                    etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 7\n";
        assert_eq!(metric(text, "etcd_server_proposals_committed_total"), Some(1_234_500.0));
        assert_eq!(metric(text, "etcd_server_proposals_applied_total"), None);
        assert_eq!(metric(text, "etcd_disk_wal_fsync_duration_seconds_bucket"), None);
    }
}
