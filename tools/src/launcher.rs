//! The local cluster launcher (DESIGN §11): starts N `corekv-server` processes on
//! loopback, waits until every shard has a leader its replicas agree on, and
//! kills, terminates, restarts and stops them. `corekv-ctl local`,
//! `corekv-bench --local` and the end-to-end tests share it.
//!
//! Runs on the caller's thread with blocking I/O. Invariants:
//! - one cluster at a time per machine: a [`LocalCluster`] holds a machine-wide
//!   file lock for its whole life, so process tests serialise under both
//!   `cargo test` and nextest (they share 2 cores). A detached cluster (a user's
//!   `corekv-ctl local up`, [`LaunchOptions::detached`]) takes no lock: it would
//!   hold it for as long as it runs and block every process test meanwhile, and
//!   servers that outlive the launching process could not hold it anyway;
//! - every server's pid is written to `node-<id>.pid` in the cluster's dir as it
//!   starts, so a cluster whose launcher died (or detached) can still be stopped;
//! - ports are picked free (each node needs `cores` consecutive ports), and a
//!   start that loses a port race (a server reports an address in use) is retried
//!   with new ports, a bounded number of times;
//! - dropping a cluster stops every process; its data dir is removed unless the
//!   thread is panicking (a failed test) or `keep` was asked;
//! - a caller cargo runs that allows a build never runs a server older than a
//!   file it was built from ([`find_server_binary`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use corekv_rpc::blocking::BlockingConn;
use corekv_rpc::kv::{NodeId, ShardId};
use corekv_rpc::map::{META_SHARD, core_addr};
use corekv_rpc::node::{AdminCall, AdminReply, Call, Reply, ShardStatus};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use thiserror::Error;

/// The server binary's name.
pub const SERVER_BIN: &str = "corekv-server";
/// The environment variable that names the server binary.
pub const SERVER_BIN_ENV: &str = "COREKV_SERVER_BIN";
/// Starts retried after a server lost a port race.
pub const PORT_RETRIES_MAX: usize = 5;
/// Attempts at finding `cores` consecutive free ports for one node.
const PORT_PICK_ATTEMPTS_MAX: usize = 200;
/// How long `stop` waits for a SIGTERMed server before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Pause between two readiness polls.
const READY_POLL_PAUSE: Duration = Duration::from_millis(100);
/// Timeout of one readiness poll's connection and call.
const READY_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes of each node's log shown in an error.
const LOG_TAIL_BYTES: u64 = 4096;
/// The machine-wide lock file's name, under `std::env::temp_dir()`.
const LOCK_FILE: &str = "corekv-launcher.lock";

/// Why a cluster could not be started or driven.
#[derive(Debug, Error)]
pub enum LaunchError {
    /// The options make no cluster.
    #[error("bad launch options: {0}")]
    Options(String),
    /// No server binary was found.
    #[error("cannot find {SERVER_BIN}: looked at {}; set {SERVER_BIN_ENV} or build it", .searched.join(", "))]
    ServerNotFound {
        /// Where it looked.
        searched: Vec<String>,
    },
    /// Building the server binary failed.
    #[error("cannot build {SERVER_BIN}: {0}")]
    Build(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// No free ports could be found, or every start lost its port race.
    #[error("no free ports: {0}")]
    Ports(String),
    /// A server exited while the cluster was starting.
    #[error("node {node} exited during start-up ({status}); log tail:\n{log_tail}")]
    Exited {
        /// The node.
        node: NodeId,
        /// Its exit status.
        status: ExitStatus,
        /// The end of its log.
        log_tail: String,
    },
    /// Not every shard had an agreed leader by the deadline.
    #[error("{} shard(s) without an agreed leader after {waited:?}: {}\n{logs}", .shards.len(), shard_list(.shards))]
    NotReady {
        /// The shards without an agreed leader.
        shards: Vec<ShardId>,
        /// How long it waited.
        waited: Duration,
        /// The end of every node's log.
        logs: String,
    },
    /// The node id is not part of this cluster.
    #[error("no node {0} in this cluster")]
    NoSuchNode(NodeId),
    /// A signal could not be sent.
    #[error("cannot signal node {node}: {reason}")]
    Signal {
        /// The node.
        node: NodeId,
        /// The OS error.
        reason: String,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> LaunchError {
    let what = what.into();
    move |source| LaunchError::Io { what, source }
}

/// "0-3, 7, 9-10": a compact list of shard ids.
fn shard_list(shards: &[ShardId]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < shards.len() {
        let start = shards[i];
        while i + 1 < shards.len() && shards[i + 1] == shards[i] + 1 {
            i += 1;
        }
        parts.push(match start {
            META_SHARD => "meta".to_string(),
            _ if start == shards[i] => start.to_string(),
            _ => format!("{start}-{}", shards[i]),
        });
        i += 1;
    }
    parts.join(", ")
}

/// What to start.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// Nodes (ids 1..=nodes).
    pub nodes: usize,
    /// Cores (executors) per node.
    pub cores: u16,
    /// Shards of the cluster.
    pub shards: u32,
    /// Replicas per shard; `None`: min(3, nodes).
    pub replicas: Option<usize>,
    /// Where the nodes keep their data (`node-<id>/`) and logs (`node-<id>.log`);
    /// `None`: a fresh dir under `std::env::temp_dir()`.
    pub data_dir: Option<PathBuf>,
    /// Arguments added to every server's command line.
    pub extra_args: Vec<String>,
    /// How long [`LocalCluster::start`] waits for every shard to have a leader.
    pub startup_deadline: Duration,
    /// Keep the data dir when the cluster is dropped.
    pub keep: bool,
    /// The server binary; `None`: [`find_server_binary`].
    pub server_bin: Option<PathBuf>,
    /// When the binary is not found, build it with cargo (tests do; a user's
    /// `corekv-ctl local` should not).
    pub build_if_missing: bool,
    /// The cluster is meant to outlive this process ([`LocalCluster::into_detached`],
    /// `corekv-ctl local up`): no machine-wide lock is taken, and each server
    /// runs in a process group of its own, so a Ctrl-C at the launching
    /// terminal does not reach it.
    pub detached: bool,
    /// Base ports to use instead of picking free ones: restarting a cluster whose
    /// data names them (the cluster id hashes the initial cluster). A server that
    /// loses a port race is then an error, not a reason to pick others.
    pub base_ports: Option<Vec<u16>>,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            nodes: 3,
            cores: 2,
            shards: 64,
            replicas: None,
            data_dir: None,
            extra_args: Vec::new(),
            startup_deadline: Duration::from_secs(120),
            keep: false,
            server_bin: None,
            build_if_missing: false,
            detached: false,
            base_ports: None,
        }
    }
}

impl LaunchOptions {
    /// The replication factor in effect.
    pub fn replicas(&self) -> usize {
        self.replicas.unwrap_or(self.nodes.min(3))
    }

    fn check(&self) -> Result<(), LaunchError> {
        let problem = if self.nodes == 0 {
            Some("a cluster needs at least one node".to_string())
        } else if self.cores == 0 {
            Some("a node needs at least one core".to_string())
        } else if self.shards == 0 {
            Some("a cluster needs at least one shard".to_string())
        } else if self.replicas() == 0 || self.replicas() > self.nodes {
            Some(format!("{} replicas do not fit {} nodes", self.replicas(), self.nodes))
        } else if self.base_ports.as_ref().is_some_and(|ports| ports.len() != self.nodes) {
            Some(format!("{} base ports given for {} nodes", self.base_ports.as_ref().map_or(0, Vec::len), self.nodes))
        } else {
            None
        };
        problem.map_or(Ok(()), |p| Err(LaunchError::Options(p)))
    }
}

/// Where the server binary may be, in order: `$COREKV_SERVER_BIN` (alone, when
/// set: a wrong path is an error, not a reason to run another binary), then next
/// to `exe`, then in `target/<profile>` (test binaries live in its `deps/`, examples in
/// its `examples/`).
pub fn server_binary_candidates(env: Option<OsString>, exe: &Path) -> Vec<PathBuf> {
    if let Some(path) = env.filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(path)];
    }
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent() {
        candidates.push(dir.join(SERVER_BIN));
        if let Some(profile_dir) = profile_dir(exe)
            && profile_dir != dir
        {
            candidates.push(profile_dir.join(SERVER_BIN));
        }
    }
    candidates
}

/// `target/<profile>` of an executable cargo built: its own dir, or the parent of
/// `deps/` (tests) and `examples/` (examples).
fn profile_dir(exe: &Path) -> Option<&Path> {
    let dir = exe.parent()?;
    if dir.file_name().is_some_and(|name| name == "deps" || name == "examples") { dir.parent() } else { Some(dir) }
}

/// The server binary: the first of [`server_binary_candidates`] that is a file,
/// else (when `build` is set and the variable is not) one built by cargo.
///
/// A caller cargo runs (a test binary, or `cargo run -p corekv-bench`) with
/// `build` set also asks cargo to build the server when a file it was built
/// from is newer than it ([`server_is_stale`]): `cargo test -p corekv-tests`
/// and `cargo run -p corekv-bench` do not build the engine's binaries, and a
/// server an older build left in `target/` would otherwise run as it is,
/// failing on a wire version or running old code. Decided once per process.
/// Any other caller (`target/release/corekv-bench` run by hand) runs the server
/// it finds, and is warned on stderr when cargo's record shows it out of date.
pub fn find_server_binary(build: bool) -> Result<PathBuf, LaunchError> {
    let env = std::env::var_os(SERVER_BIN_ENV).filter(|p| !p.is_empty());
    let from_env = env.is_some();
    let exe = std::env::current_exe().map_err(io_error("cannot locate the running executable"))?;
    let candidates = server_binary_candidates(env, &exe);
    let found = candidates.iter().find(|p| p.is_file());
    if build && !from_env && run_by_cargo(&exe) {
        static CHOSEN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        return CHOSEN
            .get_or_init(|| match found {
                Some(bin) if !server_is_stale(bin) => Ok(bin.clone()),
                _ => build_server_binary(&exe).map_err(|e| match e {
                    LaunchError::Build(reason) => reason,
                    other => other.to_string(),
                }),
            })
            .clone()
            .map_err(LaunchError::Build);
    }
    if let Some(found) = found {
        if !from_env {
            warn_if_out_of_date(found);
        }
        return Ok(found.clone());
    }
    if build && !from_env {
        return build_server_binary(&exe);
    }
    Err(LaunchError::ServerNotFound { searched: candidates.iter().map(|p| p.display().to_string()).collect() })
}

/// Whether cargo runs this process: a test binary (in `target/<profile>/deps/`),
/// or anything `cargo run` started (it sets `CARGO_MANIFEST_DIR`).
fn run_by_cargo(exe: &Path) -> bool {
    is_test_binary(exe) || std::env::var_os("CARGO_MANIFEST_DIR").is_some()
}

/// Whether `exe` is a test binary cargo built (it lives in `target/<profile>/deps/`).
fn is_test_binary(exe: &Path) -> bool {
    exe.parent().and_then(Path::file_name).is_some_and(|name| name == "deps")
}

/// The workspace this crate was built in (None when it was built elsewhere).
fn workspace_root() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.to_path_buf();
    root.join("Cargo.lock").is_file().then_some(root)
}

/// Whether a file `bin` was built from is newer than it, or missing: the
/// sources cargo's dep-info file next to it (`<bin>.d`) lists, and the
/// manifests and lock file that also decide the build. No dep-info file, or
/// one that does not parse, counts as stale (cargo decides then).
fn server_is_stale(bin: &Path) -> bool {
    let Ok(dep_info) = fs::read_to_string(bin.with_extension("d")) else { return true };
    let Some(mut inputs) = dep_info_inputs(&dep_info) else { return true };
    if let Some(root) = workspace_root() {
        inputs.extend(["Cargo.toml", "Cargo.lock", "engine/Cargo.toml", "rpc/Cargo.toml"].iter().map(|p| root.join(p)));
    }
    newer_than(&inputs, bin)
}

/// Warns on stderr when [`out_of_date_warning`] has something to say, checked
/// once per process: a user who runs a binary by hand after changing the
/// sources would otherwise measure old code, or meet a wire version mismatch,
/// unawares.
fn warn_if_out_of_date(bin: &Path) {
    static CHECKED: std::sync::Once = std::sync::Once::new();
    CHECKED.call_once(|| {
        if let Some(warning) = out_of_date_warning(bin) {
            eprintln!("corekv launcher: warning: {warning}");
        }
    });
}

/// Why `bin` is out of date, and the command that rebuilds it, when cargo's
/// dep-info file next to it lists a file newer than it. A server without
/// dep-info (installed, copied) is taken as it is.
fn out_of_date_warning(bin: &Path) -> Option<String> {
    if !bin.with_extension("d").is_file() || !server_is_stale(bin) {
        return None;
    }
    let how = match profile_dir(bin).and_then(Path::file_name).and_then(|n| n.to_str()) {
        Some("debug") | None => "cargo build -p corekv-engine".to_string(),
        Some("release") => "cargo build --release -p corekv-engine".to_string(),
        Some(other) => format!("cargo build --profile {other} -p corekv-engine"),
    };
    Some(format!("{} is older than the sources it was built from; `{how}` rebuilds it", bin.display()))
}

/// The files of a dep-info file's first rule (`target: a b\ c`: spaces in a
/// name are escaped with a backslash).
fn dep_info_inputs(dep_info: &str) -> Option<Vec<PathBuf>> {
    let (_, deps) = dep_info.lines().next()?.split_once(": ")?;
    let mut inputs = Vec::new();
    let mut name = String::new();
    let mut chars = deps.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => name.extend(chars.next()),
            ' ' => {
                if !name.is_empty() {
                    inputs.push(PathBuf::from(std::mem::take(&mut name)));
                }
            }
            c => name.push(c),
        }
    }
    if !name.is_empty() {
        inputs.push(PathBuf::from(name));
    }
    Some(inputs)
}

/// Whether any of `inputs` was modified after `bin`, or is missing.
fn newer_than(inputs: &[PathBuf], bin: &Path) -> bool {
    let Ok(built) = fs::metadata(bin).and_then(|m| m.modified()) else { return true };
    inputs.iter().any(|input| fs::metadata(input).and_then(|m| m.modified()).map_or(true, |m| m > built))
}

/// The cargo profile that built `exe` (`target/<dir>/[deps/|examples/]exe`): the `debug`
/// dir is the dev (and test) profile; any other dir is its profile's name.
pub fn cargo_profile_of(exe: &Path) -> String {
    match profile_dir(exe).and_then(Path::file_name).and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_string(),
        Some(profile) => profile.to_string(),
    }
}

/// Builds `corekv-server` with cargo in the profile that built `exe`, into the
/// same target dir, and returns its path.
pub fn build_server_binary(exe: &Path) -> Result<PathBuf, LaunchError> {
    let profile = cargo_profile_of(exe);
    let mut build = escargot::CargoBuild::new().package("corekv-engine").bin(SERVER_BIN).arg("--profile").arg(&profile);
    // The workspace's manifest, whatever the current directory.
    if let Some(root) = workspace_root() {
        build = build.manifest_path(root.join("Cargo.toml"));
    }
    // target/<profile>/[deps/|examples/]exe -> target
    if let Some(target) = profile_dir(exe).and_then(Path::parent) {
        build = build.target_dir(target);
    }
    let run = build.run().map_err(|e| LaunchError::Build(e.to_string()))?;
    Ok(run.path().to_path_buf())
}

/// The machine-wide launcher lock, held while it lives. Process tests take it for
/// their whole run (a [`LocalCluster`] does so itself); a detached user cluster
/// does not (see the module's invariants).
#[derive(Debug)]
pub struct ClusterLock {
    _file: File,
}

impl ClusterLock {
    /// The lock file every launcher on this machine uses.
    pub fn default_path() -> PathBuf {
        std::env::temp_dir().join(LOCK_FILE)
    }

    /// Waits for the lock at `path`.
    pub fn acquire(path: &Path) -> Result<ClusterLock, LaunchError> {
        let file = open_lock_file(path)?;
        file.lock().map_err(io_error(format!("cannot lock {}", path.display())))?;
        Ok(ClusterLock { _file: file })
    }

    /// Takes the lock at `path` if nobody holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<ClusterLock>, LaunchError> {
        let file = open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(ClusterLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(io_error(format!("cannot lock {}", path.display()))(e)),
        }
    }
}

fn open_lock_file(path: &Path) -> Result<File, LaunchError> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_error(format!("cannot open {}", path.display())))
}

/// Base ports for `nodes` nodes: for each, `cores` consecutive ports that are
/// free now, and no two nodes' ranges overlap.
pub fn pick_base_ports(nodes: usize, cores: u16) -> Result<Vec<u16>, LaunchError> {
    // Held until every node has its range, so no two ranges can collide.
    let mut held: Vec<TcpListener> = Vec::new();
    let mut bases = Vec::with_capacity(nodes);
    for _ in 0..nodes {
        let base = (0..PORT_PICK_ATTEMPTS_MAX)
            .find_map(|_| reserve_range(cores, &mut held))
            .ok_or_else(|| LaunchError::Ports(format!("no {cores} consecutive free ports on 127.0.0.1")))?;
        bases.push(base);
    }
    Ok(bases)
}

/// Binds a free port and the `cores - 1` after it; keeps them in `held`.
fn reserve_range(cores: u16, held: &mut Vec<TcpListener>) -> Option<u16> {
    let first = TcpListener::bind("127.0.0.1:0").ok()?;
    let base = first.local_addr().ok()?.port();
    let mut range = vec![first];
    for core in 1..cores {
        let port = base.checked_add(core)?;
        range.push(TcpListener::bind(("127.0.0.1", port)).ok()?);
    }
    held.extend(range);
    Some(base)
}

/// `1=127.0.0.1:P1/C,2=…`: DESIGN §9's initial cluster.
pub fn initial_cluster(base_ports: &[u16], cores: u16) -> String {
    let nodes = base_ports.iter().enumerate().map(|(i, port)| format!("{}=127.0.0.1:{port}/{cores}", i + 1));
    nodes.collect::<Vec<_>>().join(",")
}

/// The command line of node `id` (1-based).
pub fn server_args(opts: &LaunchOptions, id: NodeId, base_ports: &[u16], dir: &Path) -> Vec<String> {
    let mut args = vec![
        "--id".to_string(),
        id.to_string(),
        "--data-dir".to_string(),
        node_data_dir(dir, id).display().to_string(),
        "--listen".to_string(),
        format!("127.0.0.1:{}", base_ports[(id - 1) as usize]),
        "--cores".to_string(),
        opts.cores.to_string(),
        "--initial-cluster".to_string(),
        initial_cluster(base_ports, opts.cores),
        "--shards".to_string(),
        opts.shards.to_string(),
        "--replicas".to_string(),
        opts.replicas().to_string(),
    ];
    args.extend(opts.extra_args.iter().cloned());
    args
}

/// Node `id`'s data dir inside a cluster's dir.
pub fn node_data_dir(dir: &Path, id: NodeId) -> PathBuf {
    dir.join(format!("node-{id}"))
}

/// Node `id`'s log file (its stdout and stderr) inside a cluster's dir.
pub fn node_log(dir: &Path, id: NodeId) -> PathBuf {
    dir.join(format!("node-{id}.log"))
}

/// Node `id`'s pid file inside a cluster's dir: the pid in decimal and a newline,
/// written as the server starts.
pub fn node_pid_file(dir: &Path, id: NodeId) -> PathBuf {
    dir.join(format!("node-{id}.pid"))
}

/// The last [`LOG_TAIL_BYTES`] of a file, or a note saying why there is none.
fn tail(path: &Path) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

/// Whether a server's log says it could not bind its port.
fn lost_port_race(log: &str) -> bool {
    ["Address already in use", "AddrInUse", "EADDRINUSE", "already in use"].iter().any(|s| log.contains(s))
}

struct NodeProc {
    id: NodeId,
    args: Vec<String>,
    child: Option<Child>,
}

/// A running local cluster. Dropping it stops every server.
pub struct LocalCluster {
    opts: LaunchOptions,
    server_bin: PathBuf,
    dir: PathBuf,
    base_ports: Vec<u16>,
    nodes: Vec<NodeProc>,
    /// `None` for a detached cluster.
    _lock: Option<ClusterLock>,
    /// Handed over by [`LocalCluster::into_detached`]: dropping stops nothing.
    detached: bool,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster").field("dir", &self.dir).field("base_ports", &self.base_ports).finish()
    }
}

impl LocalCluster {
    /// Takes the machine-wide lock, starts every node and waits (up to the
    /// startup deadline) until every shard has a leader its replicas agree on.
    /// A start where a server could not bind its port is retried with new ports
    /// ([`PORT_RETRIES_MAX`] starts in all). On failure the data dir and the logs
    /// are kept, and the error says where.
    pub fn start(opts: LaunchOptions) -> Result<LocalCluster, LaunchError> {
        let mut cluster = LocalCluster::spawn(opts)?;
        let mut attempt = 1;
        loop {
            let failure = match cluster.wait_ready(cluster.opts.startup_deadline) {
                Ok(()) => return Ok(cluster),
                Err(LaunchError::Exited { log_tail, .. })
                    if lost_port_race(&log_tail) && attempt < PORT_RETRIES_MAX && cluster.opts.base_ports.is_none() =>
                {
                    cluster.kill_all();
                    cluster.clear_node_dirs()?;
                    cluster.spawn_all()?;
                    attempt += 1;
                    continue;
                }
                Err(LaunchError::Exited { log_tail, .. }) if lost_port_race(&log_tail) => {
                    LaunchError::Ports(match &cluster.opts.base_ports {
                        Some(ports) => format!("the ports {ports:?} are taken; log:\n{log_tail}"),
                        None => format!("each of {PORT_RETRIES_MAX} starts lost a port race; last log:\n{log_tail}"),
                    })
                }
                Err(e) => e,
            };
            // The logs explain the failure: keep them, and say where.
            cluster.opts.keep = true;
            return Err(failure);
        }
    }

    /// Takes the machine-wide lock and starts every node without waiting for
    /// anything: for tests that watch a cluster come up (or not) themselves.
    pub fn spawn(opts: LaunchOptions) -> Result<LocalCluster, LaunchError> {
        opts.check()?;
        let server_bin = match &opts.server_bin {
            Some(path) => path.clone(),
            None => find_server_binary(opts.build_if_missing)?,
        };
        let lock = if opts.detached { None } else { Some(ClusterLock::acquire(&ClusterLock::default_path())?) };
        let dir = match &opts.data_dir {
            Some(dir) => dir.clone(),
            None => fresh_dir()?,
        };
        fs::create_dir_all(&dir).map_err(io_error(format!("cannot create {}", dir.display())))?;
        let mut cluster = LocalCluster {
            opts,
            server_bin,
            dir,
            base_ports: Vec::new(),
            nodes: Vec::new(),
            _lock: lock,
            detached: false,
        };
        cluster.spawn_all()?;
        Ok(cluster)
    }

    fn spawn_all(&mut self) -> Result<(), LaunchError> {
        self.base_ports = match &self.opts.base_ports {
            Some(ports) => ports.clone(),
            None => pick_base_ports(self.opts.nodes, self.opts.cores)?,
        };
        self.nodes = (1..=self.opts.nodes as NodeId)
            .map(|id| NodeProc { id, args: server_args(&self.opts, id, &self.base_ports, &self.dir), child: None })
            .collect();
        for i in 0..self.nodes.len() {
            self.spawn_node(i)?;
        }
        Ok(())
    }

    fn spawn_node(&mut self, index: usize) -> Result<(), LaunchError> {
        let node = &mut self.nodes[index];
        let log_path = node_log(&self.dir, node.id);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_error(format!("cannot open {}", log_path.display())))?;
        let mut command = Command::new(&self.server_bin);
        command
            .args(&node.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io_error("cannot share the log file"))?)
            .stderr(log);
        if self.opts.detached {
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
        }
        let child = command.spawn().map_err(io_error(format!("cannot start {}", self.server_bin.display())))?;
        let pid_path = node_pid_file(&self.dir, node.id);
        let pid = child.id();
        node.child = Some(child);
        fs::write(&pid_path, format!("{pid}\n")).map_err(io_error(format!("cannot write {}", pid_path.display())))
    }

    fn clear_node_dirs(&self) -> Result<(), LaunchError> {
        for node in &self.nodes {
            for path in
                [node_data_dir(&self.dir, node.id), node_log(&self.dir, node.id), node_pid_file(&self.dir, node.id)]
            {
                let removed = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
                match removed {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error(format!("cannot remove {}", path.display()))(e)),
                }
            }
        }
        Ok(())
    }

    /// Polls every core of every running node (`AdminCall::Status`) until every
    /// shard has a leader that all its replicas name, or `deadline` passes.
    pub fn wait_ready(&mut self, deadline: Duration) -> Result<(), LaunchError> {
        let start = Instant::now();
        loop {
            self.check_exits()?;
            let missing = self.shards_without_agreed_leader();
            if missing.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= deadline {
                return Err(LaunchError::NotReady { shards: missing, waited: start.elapsed(), logs: self.log_tails() });
            }
            std::thread::sleep(READY_POLL_PAUSE);
        }
    }

    /// A start-up failure when a server that should run has exited.
    fn check_exits(&mut self) -> Result<(), LaunchError> {
        for node in &mut self.nodes {
            let Some(child) = node.child.as_mut() else { continue };
            if let Some(status) = child.try_wait().map_err(io_error(format!("cannot poll node {}", node.id)))? {
                node.child = None;
                return Err(LaunchError::Exited {
                    node: node.id,
                    status,
                    log_tail: tail(&node_log(&self.dir, node.id)),
                });
            }
        }
        Ok(())
    }

    fn shards_without_agreed_leader(&self) -> Vec<ShardId> {
        let mut seen: BTreeMap<ShardId, Vec<(NodeId, ShardStatus)>> = BTreeMap::new();
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            for core in 0..self.opts.cores {
                for status in core_status(&self.node_addr_of(node.id), core) {
                    seen.entry(status.shard).or_default().push((node.id, status));
                }
            }
        }
        let replicas = self.opts.replicas();
        let meta_replicas = corekv_engine::placement::meta_size(self.opts.nodes);
        // The meta group too: a map change needs its leader.
        (0..self.opts.shards)
            .map(|shard| (shard, replicas))
            .chain(std::iter::once((META_SHARD, meta_replicas)))
            .filter(|&(shard, replicas)| !agreed_leader(seen.get(&shard).map_or(&[], Vec::as_slice), replicas))
            .map(|(shard, _)| shard)
            .collect()
    }

    fn log_tails(&self) -> String {
        let tails = self.nodes.iter().map(|n| {
            let path = node_log(&self.dir, n.id);
            format!("--- node {} ({}):\n{}", n.id, path.display(), tail(&path))
        });
        tails.collect::<Vec<_>>().join("\n")
    }

    fn index(&self, id: NodeId) -> Result<usize, LaunchError> {
        self.nodes.iter().position(|n| n.id == id).ok_or(LaunchError::NoSuchNode(id))
    }

    fn signal(&self, id: NodeId, signal: Signal) -> Result<(), LaunchError> {
        let node = &self.nodes[self.index(id)?];
        let Some(child) = node.child.as_ref() else { return Ok(()) };
        let pid = Pid::from_raw(child.id() as i32);
        kill(pid, signal).map_err(|e| LaunchError::Signal { node: id, reason: e.to_string() })
    }

    /// SIGKILLs node `id` and reaps it (nothing happens if it is not running).
    pub fn kill(&mut self, id: NodeId) -> Result<(), LaunchError> {
        self.signal(id, Signal::SIGKILL)?;
        let index = self.index(id)?;
        if let Some(mut child) = self.nodes[index].child.take() {
            child.wait().map_err(io_error(format!("cannot reap node {id}")))?;
        }
        Ok(())
    }

    /// SIGTERMs node `id` and waits for it (SIGKILL after [`STOP_GRACE`]);
    /// returns its exit status, `None` if it was not running.
    pub fn terminate(&mut self, id: NodeId) -> Result<Option<ExitStatus>, LaunchError> {
        self.signal(id, Signal::SIGTERM)?;
        let index = self.index(id)?;
        let Some(mut child) = self.nodes[index].child.take() else { return Ok(None) };
        wait_or_kill(&mut child, STOP_GRACE).map(Some).map_err(io_error(format!("cannot reap node {id}")))
    }

    /// Starts node `id` again with its original command line (same ports, same
    /// data dir). A running node is killed first.
    pub fn restart(&mut self, id: NodeId) -> Result<(), LaunchError> {
        self.kill(id)?;
        let index = self.index(id)?;
        self.spawn_node(index)
    }

    /// Starts one more node, the next id, with `--join` through the running
    /// nodes (and the cluster's `extra_args`): it joins the cluster, holding
    /// nothing until the cluster rebalances. Answers its id. Ports are picked
    /// free as for the others; a restart gives it the same command line.
    pub fn join_node(&mut self) -> Result<NodeId, LaunchError> {
        let id = self.nodes.len() as NodeId + 1;
        let port = pick_base_ports(1, self.opts.cores)?[0];
        let join: Vec<String> =
            self.nodes.iter().filter(|n| n.child.is_some()).map(|n| self.node_addr_of(n.id)).collect();
        self.base_ports.push(port);
        let mut args = vec![
            "--id".to_string(),
            id.to_string(),
            "--data-dir".to_string(),
            node_data_dir(&self.dir, id).display().to_string(),
            "--listen".to_string(),
            format!("127.0.0.1:{port}"),
            "--cores".to_string(),
            self.opts.cores.to_string(),
            "--join".to_string(),
            join.join(","),
        ];
        args.extend(self.opts.extra_args.iter().cloned());
        self.nodes.push(NodeProc { id, args, child: None });
        self.spawn_node(self.nodes.len() - 1)?;
        Ok(id)
    }

    /// Whether node `id` has a running process.
    pub fn is_running(&self, id: NodeId) -> bool {
        self.nodes.iter().any(|n| n.id == id && n.child.is_some())
    }

    /// Core 0's address of every node, by node id.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| self.node_addr_of(n.id)).collect()
    }

    /// Core 0's address of node `id`.
    pub fn node_addr(&self, id: NodeId) -> Result<String, LaunchError> {
        self.index(id).map(|_| self.node_addr_of(id))
    }

    fn node_addr_of(&self, id: NodeId) -> String {
        format!("127.0.0.1:{}", self.base_ports[(id - 1) as usize])
    }

    /// Node `id`'s log file (its stderr).
    pub fn log_path(&self, id: NodeId) -> PathBuf {
        node_log(&self.dir, id)
    }

    /// The process id of node `id`, when it runs.
    pub fn pid(&self, id: NodeId) -> Option<u32> {
        self.nodes.iter().find(|n| n.id == id).and_then(|n| n.child.as_ref()).map(|c| c.id())
    }

    /// The cluster's data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options it was started with.
    pub fn options(&self) -> &LaunchOptions {
        &self.opts
    }

    /// SIGTERMs every node, waits up to [`STOP_GRACE`] each, then SIGKILLs.
    pub fn stop(&mut self) {
        for node in &self.nodes {
            if let Some(child) = node.child.as_ref() {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            }
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take()
                && let Err(e) = wait_or_kill(&mut child, STOP_GRACE)
            {
                eprintln!("corekv launcher: cannot reap node {}: {e}", node.id);
            }
        }
    }

    /// Lets the servers run on after this value (and this process) is gone: for
    /// `corekv-ctl local up`, with [`LaunchOptions::detached`] set. The pid files
    /// in the cluster's dir are what stops them later. Nothing is stopped or
    /// removed when the returned value is dropped.
    pub fn into_detached(mut self) -> DetachedCluster {
        let nodes = self
            .nodes
            .iter_mut()
            .map(|n| {
                let pid = n.child.take().map(|c| c.id());
                DetachedNode { id: n.id, addr: format!("127.0.0.1:{}", self.base_ports[(n.id - 1) as usize]), pid }
            })
            .collect();
        self.detached = true;
        DetachedCluster { dir: self.dir.clone(), base_ports: self.base_ports.clone(), opts: self.opts.clone(), nodes }
    }

    fn kill_all(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        self.stop();
        if std::thread::panicking() || self.opts.keep {
            eprintln!("corekv launcher: the cluster's data and logs are kept in {}", self.dir.display());
        } else if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("corekv launcher: cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// A cluster handed over by [`LocalCluster::into_detached`]: what it was started
/// with and where its servers are.
#[derive(Debug, Clone)]
pub struct DetachedCluster {
    /// The cluster's dir (data, logs and pid files).
    pub dir: PathBuf,
    /// Each node's base port, by node id.
    pub base_ports: Vec<u16>,
    /// The options it was started with.
    pub opts: LaunchOptions,
    /// Its nodes.
    pub nodes: Vec<DetachedNode>,
}

/// One node of a [`DetachedCluster`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachedNode {
    /// The node id.
    pub id: NodeId,
    /// Core 0's address.
    pub addr: String,
    /// The server's pid; `None` when it was not running.
    pub pid: Option<u32>,
}

/// Waits for `child` up to `grace`, then SIGKILLs it and reaps it.
fn wait_or_kill(child: &mut Child, grace: Duration) -> io::Result<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < grace {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    child.wait()
}

/// The shard replicas one core reports; nothing when it does not answer.
fn core_status(node_addr: &str, core: u16) -> Vec<ShardStatus> {
    let Some(addr) = core_addr(node_addr, core) else { return Vec::new() };
    let Ok(mut conn) = BlockingConn::connect(&addr, 0, READY_CALL_TIMEOUT) else { return Vec::new() };
    match conn.call(Call::Admin(AdminCall::Status)) {
        Ok(Reply::Admin(AdminReply::Status { shards, .. })) => shards,
        _ => Vec::new(),
    }
}

/// Whether a shard's replicas (as reported, with the node reporting each) agree
/// on one leader: all `replicas` answered, exactly one leads, and all name it.
pub fn agreed_leader(reports: &[(NodeId, ShardStatus)], replicas: usize) -> bool {
    let leaders: Vec<NodeId> = reports.iter().filter(|(_, s)| s.is_leader).map(|(node, _)| *node).collect();
    let [leader] = leaders[..] else { return false };
    reports.len() >= replicas && reports.iter().all(|(_, s)| s.leader == leader)
}

/// A new, empty dir under the system temp dir.
fn fresh_dir() -> Result<PathBuf, LaunchError> {
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    for n in 0..1000u32 {
        let dir = base.join(format!("corekv-local-{}-{nanos}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error(format!("cannot create {}", dir.display()))(e)),
        }
    }
    Err(LaunchError::Options(format!("cannot find a fresh dir name under {}", base.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fresh scratch dir for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("corekv-launcher-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// An executable shell script standing in for `corekv-server`.
    fn fake_server(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("fake-corekv-server");
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn options(dir: &Path, server: PathBuf) -> LaunchOptions {
        LaunchOptions {
            nodes: 2,
            cores: 2,
            shards: 4,
            data_dir: Some(dir.join("cluster")),
            startup_deadline: Duration::from_millis(300),
            server_bin: Some(server),
            ..LaunchOptions::default()
        }
    }

    #[test]
    fn the_server_binary_is_looked_for_in_the_documented_order() {
        let exe = Path::new("/w/target/debug/deps/launcher-1234");
        assert_eq!(
            server_binary_candidates(None, exe),
            vec![PathBuf::from("/w/target/debug/deps/corekv-server"), PathBuf::from("/w/target/debug/corekv-server")]
        );
        assert_eq!(
            server_binary_candidates(None, Path::new("/w/target/release/corekv-ctl")),
            vec![PathBuf::from("/w/target/release/corekv-server")]
        );
        // The variable alone decides when set; an empty one counts as unset.
        assert_eq!(server_binary_candidates(Some("/opt/my-server".into()), exe), vec![PathBuf::from("/opt/my-server")]);
        assert_eq!(server_binary_candidates(Some("".into()), exe).len(), 2);
    }

    #[test]
    fn a_fake_server_named_by_the_variable_is_the_one_found() {
        let dir = scratch("discovery");
        let fake = fake_server(&dir, "exit 0");
        let exe = dir.join("deps").join("some-test");
        let found =
            server_binary_candidates(Some(fake.clone().into_os_string()), &exe).into_iter().find(|p| p.is_file());
        assert_eq!(found, Some(fake));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_binary_is_stale_once_a_file_its_dep_info_lists_is_newer_or_gone() {
        let dir = scratch("stale");
        let (a, b) = (dir.join("a.rs"), dir.join("with space.rs"));
        fs::write(&a, "a").unwrap();
        fs::write(&b, "b").unwrap();
        let bin = dir.join("server");
        fs::write(&bin, "binary").unwrap();
        let rule = format!("{}: {} {}\n", bin.display(), a.display(), b.display().to_string().replace(' ', "\\ "));
        fs::write(bin.with_extension("d"), &rule).unwrap();
        assert_eq!(dep_info_inputs(&rule), Some(vec![a.clone(), b.clone()]));
        let at = |path: &Path, secs: u64| {
            let time = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            File::options().write(true).open(path).unwrap().set_modified(time).unwrap();
        };
        at(&a, 1_000);
        at(&b, 1_000);
        at(&bin, 2_000);
        assert!(!newer_than(&[a.clone(), b.clone()], &bin), "inputs older than the binary");
        at(&b, 3_000);
        assert!(newer_than(&[a.clone(), b.clone()], &bin), "a newer input, its name escaped");
        at(&b, 1_000);
        assert!(newer_than(&[a.clone(), dir.join("gone.rs")], &bin), "a missing input");
        assert!(newer_than(std::slice::from_ref(&a), &dir.join("no-binary")), "no binary");
        // Run by hand: a warning that names the binary when a source is newer.
        // (The workspace's manifests count too: the binary is dated now.)
        fs::write(bin.with_extension("d"), format!("{}: {}\n", bin.display(), a.display())).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        at(&bin, now);
        assert_eq!(out_of_date_warning(&bin), None, "up to date");
        at(&a, now + 3_600);
        let warning = out_of_date_warning(&bin).unwrap_or_default();
        assert!(warning.contains(&bin.display().to_string()) && warning.contains("cargo build"), "{warning}");
        fs::remove_file(bin.with_extension("d")).unwrap();
        assert_eq!(out_of_date_warning(&bin), None, "no dep-info file: an installed server, taken as it is");
        assert!(server_is_stale(&bin), "no dep-info file: cargo decides");
        assert!(workspace_root().is_some_and(|root| root.join("engine").is_dir()), "the workspace is found");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_binaries_in_deps_are_test_binaries() {
        assert!(is_test_binary(Path::new("/w/target/debug/deps/join-0123")));
        assert!(!is_test_binary(Path::new("/w/target/release/corekv-bench")));
        assert!(!is_test_binary(Path::new("/w/target/release/examples/closed_loop")));
    }

    #[test]
    fn the_build_profile_is_read_from_the_executable_path() {
        assert_eq!(cargo_profile_of(Path::new("/w/target/debug/deps/t-1")), "dev");
        assert_eq!(cargo_profile_of(Path::new("/w/target/debug/corekv-ctl")), "dev");
        assert_eq!(cargo_profile_of(Path::new("/w/target/release/deps/t-1")), "release");
        assert_eq!(cargo_profile_of(Path::new("/w/target/sim/deps/t-1")), "sim");
        assert_eq!(cargo_profile_of(Path::new("/w/target/release/examples/closed_loop")), "release");
    }

    #[test]
    fn the_lock_excludes_a_second_holder_until_released() {
        let dir = scratch("lock");
        let path = dir.join("test.lock");
        let first = ClusterLock::try_acquire(&path).unwrap().expect("nobody holds it");
        assert!(ClusterLock::try_acquire(&path).unwrap().is_none(), "a second holder must wait");
        drop(first);
        // Other tests of this process spawn children; one forked while the lock was
        // held keeps a copy of its descriptor until it execs (close-on-exec), so
        // the release may take a moment to show: a liveness bound, not a timing.
        let released = (0..200).any(|_| {
            let got = ClusterLock::try_acquire(&path).unwrap().is_some();
            if !got {
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            got
        });
        assert!(released, "released with its holder");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn picked_port_ranges_are_free_and_disjoint() {
        let cores = 3;
        let bases = pick_base_ports(4, cores).unwrap();
        assert_eq!(bases.len(), 4);
        let mut ports: Vec<u16> = bases.iter().flat_map(|&b| (0..cores).map(move |c| b + c)).collect();
        // Free after the pick returns: the servers can bind them.
        let held: Vec<TcpListener> = ports.iter().map(|&p| TcpListener::bind(("127.0.0.1", p)).unwrap()).collect();
        drop(held);
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 4 * cores as usize, "no two nodes share a port");
    }

    #[test]
    fn server_arguments_follow_design_section_9() {
        let opts = LaunchOptions {
            nodes: 3,
            cores: 2,
            shards: 8,
            extra_args: vec!["--election-ticks".into(), "20".into()],
            ..LaunchOptions::default()
        };
        let args = server_args(&opts, 2, &[7100, 7200, 7300], Path::new("/d"));
        let expected = "--id 2 --data-dir /d/node-2 --listen 127.0.0.1:7200 --cores 2 \
            --initial-cluster 1=127.0.0.1:7100/2,2=127.0.0.1:7200/2,3=127.0.0.1:7300/2 --shards 8 --replicas 3 \
            --election-ticks 20";
        assert_eq!(args.join(" "), expected);
        assert_eq!(LaunchOptions { nodes: 2, ..LaunchOptions::default() }.replicas(), 2);
        assert!(LaunchOptions { nodes: 2, replicas: Some(3), ..LaunchOptions::default() }.check().is_err());
        assert!(LaunchOptions { nodes: 2, base_ports: Some(vec![7100]), ..LaunchOptions::default() }.check().is_err());
    }

    /// The process group of `pid`: the third field after the command name in
    /// `/proc/<pid>/stat`.
    fn process_group(pid: u32) -> u32 {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after_name = stat.rsplit_once(')').unwrap().1;
        after_name.split_whitespace().nth(2).unwrap().parse().unwrap()
    }

    #[test]
    fn a_detached_cluster_runs_on_in_its_own_process_groups_with_pid_files_on_the_ports_given() {
        let dir = scratch("detached");
        let opts = LaunchOptions {
            detached: true,
            base_ports: Some(vec![7100, 7200]),
            ..options(&dir, fake_server(&dir, "exec sleep 600"))
        };
        let cluster = LocalCluster::spawn(opts).unwrap();
        assert_eq!(cluster.addrs(), ["127.0.0.1:7100", "127.0.0.1:7200"], "the ports given, not picked ones");
        let pids = [cluster.pid(1).unwrap(), cluster.pid(2).unwrap()];
        for (id, pid) in [(1, pids[0]), (2, pids[1])] {
            assert_eq!(fs::read_to_string(node_pid_file(cluster.dir(), id)).unwrap(), format!("{pid}\n"));
            assert_eq!(process_group(pid), pid, "a Ctrl-C at our terminal must not reach it");
        }
        let data = cluster.dir().to_path_buf();
        let detached = cluster.into_detached();
        let listed: Vec<Option<u32>> = detached.nodes.iter().map(|n| n.pid).collect();
        assert_eq!(listed, [Some(pids[0]), Some(pids[1])]);
        assert_eq!(detached.nodes[1].addr, "127.0.0.1:7200");
        drop(detached);
        for pid in pids {
            assert!(kill(Pid::from_raw(pid as i32), None).is_ok(), "still running once handed over");
            kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
        }
        assert!(data.exists(), "a detached cluster's dir is not removed");
        fs::remove_dir_all(&dir).unwrap();
    }

    fn status(shard: ShardId, is_leader: bool, leader: NodeId) -> ShardStatus {
        ShardStatus { shard, is_leader, leader, term: 1, ..ShardStatus::default() }
    }

    #[test]
    fn a_shard_is_ready_when_all_its_replicas_name_the_one_leader() {
        let agreed = [(1, status(0, true, 1)), (2, status(0, false, 1)), (3, status(0, false, 1))];
        assert!(agreed_leader(&agreed, 3));
        assert!(!agreed_leader(&agreed[..2], 3), "a replica has not answered");
        let disagree = [(1, status(0, true, 1)), (2, status(0, false, 1)), (3, status(0, false, 0))];
        assert!(!agreed_leader(&disagree, 3));
        let two_leaders = [(1, status(0, true, 1)), (2, status(0, true, 2)), (3, status(0, false, 1))];
        assert!(!agreed_leader(&two_leaders, 3));
        assert!(!agreed_leader(&[], 1));
        assert_eq!(shard_list(&[0, 1, 2, 3, 7, 9, 10]), "0-3, 7, 9-10");
    }

    #[test]
    fn a_server_that_exits_is_reported_with_its_log_and_its_arguments_were_ours() {
        let dir = scratch("exits");
        let args_file = dir.join("args");
        let fake = fake_server(&dir, &format!("echo \"$@\" >> {}\necho boom >&2\nexit 3", args_file.display()));
        let opts = options(&dir, fake);
        match LocalCluster::start(opts.clone()) {
            Err(LaunchError::Exited { status, log_tail, .. }) => {
                assert_eq!(status.code(), Some(3));
                assert!(log_tail.contains("boom"), "{log_tail}");
            }
            other => panic!("expected an exit error, got {other:?}"),
        }
        let seen = fs::read_to_string(&args_file).unwrap();
        // Node 1 or 2 exited first; the other may have been stopped before it ran.
        assert!((1..=2).contains(&seen.lines().count()), "at most one start per node: {seen}");
        for line in seen.lines() {
            assert!(line.starts_with("--id 1 --data-dir ") || line.starts_with("--id 2 --data-dir "), "{line}");
            assert!(line.ends_with("--shards 4 --replicas 2"), "{line}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_start_that_loses_its_ports_is_retried_a_bounded_number_of_times() {
        let dir = scratch("ports");
        let count = dir.join("starts");
        let body =
            format!("echo start >> {}\necho 'bind 127.0.0.1: Address already in use' >&2\nexit 1", count.display());
        let opts = LaunchOptions { nodes: 1, ..options(&dir, fake_server(&dir, &body)) };
        match LocalCluster::start(opts) {
            Err(LaunchError::Ports(message)) => assert!(message.contains("already in use"), "{message}"),
            other => panic!("expected a port error, got {other:?}"),
        }
        assert_eq!(fs::read_to_string(&count).unwrap().lines().count(), PORT_RETRIES_MAX);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn servers_that_never_elect_are_reported_per_shard_and_can_be_signalled() {
        let dir = scratch("silent");
        // A generous deadline: the scripts must have started when the logs are read.
        let opts = LaunchOptions {
            startup_deadline: Duration::from_secs(3),
            ..options(&dir, fake_server(&dir, "echo started >&2\nexec sleep 600"))
        };
        match LocalCluster::start(opts.clone()) {
            Err(LaunchError::NotReady { shards, logs, .. }) => {
                assert_eq!(shards, vec![0, 1, 2, 3, META_SHARD], "the meta group too");
                assert!(logs.contains("--- node 2") && logs.contains("started"), "{logs}");
            }
            other => panic!("expected a readiness error, got {other:?}"),
        }

        let mut cluster = LocalCluster::spawn(opts).unwrap();
        assert_eq!(cluster.addrs().len(), 2);
        assert_eq!(cluster.node_addr(2).unwrap(), cluster.addrs()[1]);
        assert!(matches!(cluster.node_addr(3), Err(LaunchError::NoSuchNode(3))));
        let status = cluster.terminate(1).unwrap().expect("node 1 was running");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(Signal::SIGTERM as i32));
        assert!(!cluster.is_running(1));
        cluster.kill(2).unwrap();
        assert!(!cluster.is_running(2));
        cluster.restart(2).unwrap();
        assert!(cluster.is_running(2));
        let data = cluster.dir().to_path_buf();
        drop(cluster);
        assert!(!data.exists(), "a cluster that was not kept removes its dir");
        fs::remove_dir_all(&dir).unwrap();
    }
}
