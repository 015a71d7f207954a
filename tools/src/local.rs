//! A local cluster that outlives the process that started it: the library behind
//! `corekv-ctl local up|down|status`, on top of the [`launcher`](crate::launcher).
//!
//! Owns the cluster's dir `D`: `D/local.json` (the cluster's shape and ports,
//! written once every shard of a start has a leader), and, from the launcher,
//! `D/node-<id>/` (data), `D/node-<id>.log` and `D/node-<id>.pid`. Runs on the
//! caller's thread with blocking I/O.
//!
//! Invariants:
//! - a node runs when its pid file names a live process (not a zombie) whose
//!   command line holds the node's data dir: a pid reused by another process
//!   is not mistaken for a server;
//! - `up` never starts a second cluster over a running one, and never writes into
//!   a non-empty dir that is not a local cluster's;
//! - a stopped cluster restarts on its recorded ports (its data names them), so
//!   `down` keeps data unless asked to purge it;
//! - every wait is bounded: a server that ignores SIGTERM for [`STOP_GRACE`] is
//!   SIGKILLed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corekv_rpc::kv::NodeId;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::launcher::{
    LaunchError, LaunchOptions, LocalCluster, STOP_GRACE, find_server_binary, node_data_dir, node_log, node_pid_file,
};

/// The state file's name inside the cluster's dir.
pub const STATE_FILE: &str = "local.json";
/// Bumped whenever [`LocalState`] changes shape.
pub const STATE_FORMAT: u32 = 1;
/// Most nodes `up` starts: a local cluster shares one machine.
pub const LOCAL_NODES_MAX: usize = 16;
/// Pause between two liveness polls while stopping.
const STOP_POLL: Duration = Duration::from_millis(50);
/// How long a SIGKILLed server may take to vanish.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Why a local cluster could not be started, stopped or read.
#[derive(Debug, Error)]
pub enum LocalError {
    /// The dir holds a cluster with running nodes.
    #[error(
        "{dir} already holds a running cluster (node {node}, pid {pid}); `corekv-ctl local down --dir {dir}` stops it"
    )]
    AlreadyRunning {
        /// The dir.
        dir: String,
        /// A running node.
        node: NodeId,
        /// Its pid.
        pid: u32,
    },
    /// The dir holds no local cluster.
    #[error("{0} holds no local cluster (no {STATE_FILE} and no pid files)")]
    NoCluster(String),
    /// The dir is not empty and not a local cluster's.
    #[error("{0} is not empty and holds no local cluster: pick another --dir")]
    NotOurs(String),
    /// The dir holds what a start left behind before it finished.
    #[error(
        "{0} holds the leftovers of a start that did not finish (see its node-*.log); `corekv-ctl local down --purge --dir {0}` clears them"
    )]
    Unfinished(String),
    /// The options contradict the stopped cluster the dir holds.
    #[error(
        "{dir} holds a stopped cluster of {recorded}, which restarts only with that shape; {asked} was asked (leave the options out, or pick another --dir)"
    )]
    Shape {
        /// The dir.
        dir: String,
        /// The recorded shape.
        recorded: String,
        /// The shape asked for.
        asked: String,
    },
    /// The options make no cluster.
    #[error("{0}")]
    Options(String),
    /// The server binary is missing.
    #[error(
        "cannot find corekv-server (looked at {searched}); build it with `cargo build --release -p corekv-engine --bin corekv-server`, or set COREKV_SERVER_BIN"
    )]
    ServerNotFound {
        /// Where the launcher looked.
        searched: String,
    },
    /// The launcher failed.
    #[error("{0}")]
    Launch(#[from] LaunchError),
    /// A file of the dir could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// The state file is not one this build reads.
    #[error("{path}: {reason}")]
    State {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> LocalError {
    let what = what.into();
    move |source| LocalError::Io { what, source }
}

/// `D/local.json`: what a restart needs to bring the same cluster back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalState {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// Nodes (ids 1..=nodes).
    pub nodes: usize,
    /// Cores per node.
    pub cores: u16,
    /// Shards of the cluster.
    pub shards: u32,
    /// Replicas per shard.
    pub replicas: usize,
    /// Each node's base port, by node id (core 0's port; core i listens on +i).
    pub base_ports: Vec<u16>,
    /// Extra server arguments.
    pub server_args: Vec<String>,
}

impl LocalState {
    /// Core 0's address of every node, by node id.
    pub fn addrs(&self) -> Vec<String> {
        self.base_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect()
    }

    fn shape(&self) -> String {
        shape(self.nodes, self.cores, self.shards, self.replicas)
    }
}

fn shape(nodes: usize, cores: u16, shards: u32, replicas: usize) -> String {
    format!("{nodes} nodes of {cores} cores, {shards} shards, {replicas} replicas")
}

/// What `up` is asked for; `None` takes the recorded value of a stopped cluster,
/// else the default.
#[derive(Debug, Clone, Default)]
pub struct UpRequest {
    /// Nodes [3].
    pub nodes: Option<usize>,
    /// Cores per node [2].
    pub cores: Option<u16>,
    /// Shards [64].
    pub shards: Option<u32>,
    /// Replicas [min(3, nodes)].
    pub replicas: Option<usize>,
    /// Extra server arguments (empty: the recorded ones on a restart).
    pub server_args: Vec<String>,
    /// The server binary; `None`: the launcher's search, never a build.
    pub server_bin: Option<PathBuf>,
    /// How long to wait for every shard to have a leader; `None`: the launcher's.
    pub startup_deadline: Option<Duration>,
}

/// One node as `up`, `status` or `down` saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// The node id.
    pub id: NodeId,
    /// Core 0's address (`None` when the state file is missing).
    pub addr: Option<String>,
    /// The pid its pid file names (`None`: no pid file).
    pub pid: Option<u32>,
    /// Whether that process runs now (for `down`: ran before it was stopped).
    pub running: bool,
    /// Its log file.
    pub log: PathBuf,
}

/// A started cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpReport {
    /// The cluster's dir, absolute.
    pub dir: PathBuf,
    /// Its recorded state.
    pub state: LocalState,
    /// A stopped cluster was started again (same ports, same data).
    pub restarted: bool,
    /// Its nodes.
    pub nodes: Vec<NodeReport>,
}

impl UpReport {
    /// The `--cluster` string: every node's core 0 address.
    pub fn cluster(&self) -> String {
        self.state.addrs().join(",")
    }
}

/// A cluster's dir as `status` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// The cluster's dir, absolute.
    pub dir: PathBuf,
    /// Its state, when a start finished.
    pub state: Option<LocalState>,
    /// Its nodes.
    pub nodes: Vec<NodeReport>,
}

/// How `down` stopped a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It was not running.
    NotRunning,
    /// It exited after SIGTERM.
    Terminated,
    /// It ignored SIGTERM for the grace period and was SIGKILLed.
    Killed,
    /// It survived even SIGKILL's wait (should not happen; reported, not hidden).
    StillRunning,
}

impl Stopped {
    /// The word used in reports.
    pub fn word(self) -> &'static str {
        match self {
            Stopped::NotRunning => "not_running",
            Stopped::Terminated => "stopped",
            Stopped::Killed => "killed",
            Stopped::StillRunning => "still_running",
        }
    }
}

/// What `down` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownReport {
    /// The cluster's dir.
    pub dir: PathBuf,
    /// Each node and how it was stopped.
    pub nodes: Vec<(NodeReport, Stopped)>,
    /// The data, logs and pid files were removed.
    pub purged: bool,
}

/// The dir as an absolute path (it need not exist).
fn absolute(dir: &Path) -> Result<PathBuf, LocalError> {
    std::path::absolute(dir).map_err(io_error(format!("cannot resolve {}", dir.display())))
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

/// Reads `D/local.json`; `None` when there is none.
pub fn read_state(dir: &Path) -> Result<Option<LocalState>, LocalError> {
    let path = state_path(dir);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(format!("cannot read {}", path.display()))(e)),
    };
    let bad = |reason: String| LocalError::State { path: path.display().to_string(), reason };
    let state: LocalState = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if state.format != STATE_FORMAT {
        return Err(bad(format!("format {} (this build reads {STATE_FORMAT})", state.format)));
    }
    if state.base_ports.len() != state.nodes {
        return Err(bad(format!("{} base ports for {} nodes", state.base_ports.len(), state.nodes)));
    }
    Ok(Some(state))
}

/// Writes `D/local.json` through a temp file and a rename, so a reader never
/// sees half of it.
fn write_state(dir: &Path, state: &LocalState) -> Result<(), LocalError> {
    let path = state_path(dir);
    let temp = dir.join(format!("{STATE_FILE}.tmp"));
    let text = serde_json::to_string_pretty(state).expect("plain structs always serialize");
    fs::write(&temp, text + "\n").map_err(io_error(format!("cannot write {}", temp.display())))?;
    fs::rename(&temp, &path).map_err(io_error(format!("cannot write {}", path.display())))
}

/// The node ids with a pid file in `dir`, ascending.
fn pid_file_nodes(dir: &Path) -> Result<Vec<NodeId>, LocalError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(format!("cannot list {}", dir.display()))(e)),
    };
    let mut ids: Vec<NodeId> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            name.to_str()?.strip_prefix("node-")?.strip_suffix(".pid")?.parse().ok()
        })
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// The pid in node `id`'s pid file, if there is one that reads.
fn read_pid(dir: &Path, id: NodeId) -> Option<u32> {
    fs::read_to_string(node_pid_file(dir, id)).ok()?.trim().parse().ok().filter(|&pid| pid > 0)
}

/// Whether `pid` is a live (not zombie) process whose arguments hold
/// `data_dir`: a server of this cluster, not a process that reused its pid.
pub fn is_server_of(pid: u32, data_dir: &Path) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = fs::read_to_string(proc_dir.join("stat")) else { return false };
    // "pid (comm) S ...": the state follows the last ')' (comm may hold any byte).
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, Some('Z' | 'X') | None) {
        return false;
    }
    let Ok(cmdline) = fs::read(proc_dir.join("cmdline")) else { return false };
    let wanted = data_dir.as_os_str().as_encoded_bytes();
    cmdline.split(|&b| b == 0).any(|arg| arg == wanted)
}

/// Every node of the cluster in `dir` (by the state file, else by pid files)
/// and whether it runs.
fn node_reports(dir: &Path, state: Option<&LocalState>) -> Result<Vec<NodeReport>, LocalError> {
    let mut ids = pid_file_nodes(dir)?;
    if let Some(state) = state {
        ids.extend(1..=state.nodes as NodeId);
        ids.sort_unstable();
        ids.dedup();
    }
    Ok(ids
        .into_iter()
        .map(|id| {
            let pid = read_pid(dir, id);
            let running = pid.is_some_and(|pid| is_server_of(pid, &node_data_dir(dir, id)));
            let addr = state.and_then(|s| s.addrs().get((id as usize).wrapping_sub(1)).cloned());
            NodeReport { id, addr, pid, running, log: node_log(dir, id) }
        })
        .collect())
}

/// Which nodes of the cluster in `dir` run.
pub fn status(dir: &Path) -> Result<StatusReport, LocalError> {
    let dir = absolute(dir)?;
    let state = read_state(&dir)?;
    let nodes = node_reports(&dir, state.as_ref())?;
    if state.is_none() && nodes.is_empty() {
        return Err(LocalError::NoCluster(dir.display().to_string()));
    }
    Ok(StatusReport { dir, state, nodes })
}

/// Whether `dir` holds only what a local cluster writes.
fn only_cluster_files(dir: &Path) -> Result<bool, LocalError> {
    let entries = fs::read_dir(dir).map_err(io_error(format!("cannot list {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_error(format!("cannot list {}", dir.display())))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { return Ok(false) };
        let ours = name == STATE_FILE
            || name.strip_prefix("node-").is_some_and(|rest| {
                let id = rest.strip_suffix(".log").or_else(|| rest.strip_suffix(".pid")).unwrap_or(rest);
                id.parse::<NodeId>().is_ok()
            });
        if !ours {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Starts a cluster in `dir` (a new one, or the stopped one it holds) and waits
/// until every shard has a leader; the servers outlive this process.
pub fn up(dir: &Path, request: &UpRequest) -> Result<UpReport, LocalError> {
    let dir = absolute(dir)?;
    let recorded = read_state(&dir)?;
    if let Some(node) = node_reports(&dir, recorded.as_ref())?.into_iter().find(|n| n.running) {
        return Err(LocalError::AlreadyRunning {
            dir: dir.display().to_string(),
            node: node.id,
            pid: node.pid.unwrap_or(0),
        });
    }
    if recorded.is_none() && dir.exists() {
        if !only_cluster_files(&dir)? {
            return Err(LocalError::NotOurs(dir.display().to_string()));
        }
        if fs::read_dir(&dir).map_err(io_error(format!("cannot list {}", dir.display())))?.next().is_some() {
            return Err(LocalError::Unfinished(dir.display().to_string()));
        }
    }
    let opts = launch_options(&dir, recorded.as_ref(), request)?;
    fs::create_dir_all(&dir).map_err(io_error(format!("cannot create {}", dir.display())))?;
    let cluster = LocalCluster::start(opts).map_err(|e| match e {
        LaunchError::ServerNotFound { searched } => LocalError::ServerNotFound { searched: searched.join(", ") },
        other => LocalError::Launch(other),
    })?;
    let detached = cluster.into_detached();
    let state = LocalState {
        format: STATE_FORMAT,
        nodes: detached.opts.nodes,
        cores: detached.opts.cores,
        shards: detached.opts.shards,
        replicas: detached.opts.replicas(),
        base_ports: detached.base_ports.clone(),
        server_args: detached.opts.extra_args.clone(),
    };
    write_state(&dir, &state)?;
    let nodes = detached
        .nodes
        .iter()
        .map(|n| NodeReport {
            id: n.id,
            addr: Some(n.addr.clone()),
            pid: n.pid,
            running: true,
            log: node_log(&dir, n.id),
        })
        .collect();
    Ok(UpReport { dir, state, restarted: recorded.is_some(), nodes })
}

/// The launcher's options for `up`: the request over the recorded shape (which
/// must agree) or over the defaults.
fn launch_options(dir: &Path, recorded: Option<&LocalState>, request: &UpRequest) -> Result<LaunchOptions, LocalError> {
    let defaults = LaunchOptions::default();
    let mut opts = LaunchOptions {
        data_dir: Some(dir.to_path_buf()),
        keep: true,
        detached: true,
        build_if_missing: false,
        server_bin: request.server_bin.clone(),
        startup_deadline: request.startup_deadline.unwrap_or(defaults.startup_deadline),
        ..defaults
    };
    match recorded {
        Some(state) => {
            let nodes = request.nodes.unwrap_or(state.nodes);
            let cores = request.cores.unwrap_or(state.cores);
            let shards = request.shards.unwrap_or(state.shards);
            let replicas = request.replicas.unwrap_or(state.replicas);
            if (nodes, cores, shards, replicas) != (state.nodes, state.cores, state.shards, state.replicas) {
                return Err(LocalError::Shape {
                    dir: dir.display().to_string(),
                    recorded: state.shape(),
                    asked: shape(nodes, cores, shards, replicas),
                });
            }
            opts.nodes = nodes;
            opts.cores = cores;
            opts.shards = shards;
            opts.replicas = Some(replicas);
            opts.base_ports = Some(state.base_ports.clone());
            opts.extra_args =
                if request.server_args.is_empty() { state.server_args.clone() } else { request.server_args.clone() };
        }
        None => {
            opts.nodes = request.nodes.unwrap_or(opts.nodes);
            opts.cores = request.cores.unwrap_or(opts.cores);
            opts.shards = request.shards.unwrap_or(opts.shards);
            opts.replicas = request.replicas;
            opts.extra_args = request.server_args.clone();
        }
    }
    if opts.nodes > LOCAL_NODES_MAX {
        return Err(LocalError::Options(format!(
            "{} nodes: a local cluster has at most {LOCAL_NODES_MAX} (they share this machine)",
            opts.nodes
        )));
    }
    if opts.server_bin.is_none() {
        opts.server_bin = Some(find_server_binary(false).map_err(|e| match e {
            LaunchError::ServerNotFound { searched } => LocalError::ServerNotFound { searched: searched.join(", ") },
            other => LocalError::Launch(other),
        })?);
    }
    Ok(opts)
}

/// Stops every running node of the cluster in `dir`: SIGTERM to all, up to
/// `grace` for them to exit, then SIGKILL (reported as `Killed`). Removes the
/// pid files of stopped nodes, and with `purge` the data and logs too.
pub fn down(dir: &Path, purge: bool, grace: Duration) -> Result<DownReport, LocalError> {
    let report = status(dir)?;
    let dir = report.dir;
    let data = |id| node_data_dir(&dir, id);
    for node in report.nodes.iter().filter(|n| n.running) {
        if let Some(pid) = node.pid {
            // A race with its own exit is fine: it is stopping either way.
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    let alive = |n: &NodeReport| n.running && n.pid.is_some_and(|pid| is_server_of(pid, &data(n.id)));
    wait_until(grace, || !report.nodes.iter().any(alive));
    let mut killed = Vec::new();
    for node in report.nodes.iter().filter(|n| alive(n)) {
        if let Some(pid) = node.pid {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            killed.push(node.id);
        }
    }
    if !killed.is_empty() {
        wait_until(KILL_WAIT, || !report.nodes.iter().any(alive));
    }
    let mut nodes = Vec::new();
    for node in report.nodes {
        let how = if !node.running {
            Stopped::NotRunning
        } else if alive(&node) {
            Stopped::StillRunning
        } else if killed.contains(&node.id) {
            Stopped::Killed
        } else {
            Stopped::Terminated
        };
        if how != Stopped::StillRunning {
            remove_if_present(&node_pid_file(&dir, node.id))?;
        }
        nodes.push((node, how));
    }
    let purged = purge && nodes.iter().all(|(_, how)| *how != Stopped::StillRunning);
    if purged {
        for (node, _) in &nodes {
            remove_if_present(&node_data_dir(&dir, node.id))?;
            remove_if_present(&node_log(&dir, node.id))?;
        }
        remove_if_present(&state_path(&dir))?;
        // Only our files were in it: an empty dir goes too, anything else stays.
        let _ = fs::remove_dir(&dir);
    }
    Ok(DownReport { dir, nodes, purged })
}

/// Polls `done` until it holds or `limit` passes.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() && start.elapsed() < limit {
        std::thread::sleep(STOP_POLL);
    }
}

fn remove_if_present(path: &Path) -> Result<(), LocalError> {
    let removed = if path.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(format!("cannot remove {}", path.display()))(e)),
    }
}

/// `down`'s default grace period: the launcher's.
pub const DOWN_GRACE: Duration = STOP_GRACE;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Child, Command};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("corekv-local-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A process whose command line holds `data_dir`, as a server's does; once it
    /// returns, the process has set up its signal handling.
    fn fake_server(dir: &Path, id: NodeId, ignore_term: bool) -> Child {
        // Beside the cluster's dir, not in it: a purge must find only our files.
        let script = dir.with_extension("fake-server");
        let body = "if [ \"$3\" = ignore ]; then trap '' TERM; fi\n: > \"$4\"\nwhile :; do sleep 0.05; done\n";
        fs::write(&script, format!("#!/bin/sh\n{body}")).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let data = node_data_dir(dir, id);
        let mode = if ignore_term { "ignore" } else { "obey" };
        let ready = dir.with_extension(format!("ready-{id}"));
        let _ = fs::remove_file(&ready);
        let child = Command::new(&script).arg("--data-dir").arg(&data).arg(mode).arg(&ready).spawn().unwrap();
        // A liveness bound: the shell starts in milliseconds.
        wait_until(Duration::from_secs(30), || ready.exists());
        assert!(ready.exists(), "the fake server started");
        fs::remove_file(&ready).unwrap();
        fs::write(node_pid_file(dir, id), format!("{}\n", child.id())).unwrap();
        child
    }

    fn state(nodes: usize) -> LocalState {
        LocalState {
            format: STATE_FORMAT,
            nodes,
            cores: 2,
            shards: 8,
            replicas: nodes.min(3),
            base_ports: (0..nodes as u16).map(|i| 40000 + 10 * i).collect(),
            server_args: Vec::new(),
        }
    }

    /// Reaps `child` in the background, as init does for a detached server.
    fn reap(mut child: Child) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let _ = child.wait();
        })
    }

    #[test]
    fn the_state_file_round_trips_and_a_foreign_format_is_refused() {
        let dir = scratch("state");
        assert_eq!(read_state(&dir).unwrap(), None);
        write_state(&dir, &state(3)).unwrap();
        assert_eq!(read_state(&dir).unwrap(), Some(state(3)));
        assert_eq!(state(3).addrs(), ["127.0.0.1:40000", "127.0.0.1:40010", "127.0.0.1:40020"]);
        fs::write(
            state_path(&dir),
            r#"{"format":99,"nodes":1,"cores":1,"shards":1,"replicas":1,"base_ports":[1],"server_args":[]}"#,
        )
        .unwrap();
        assert!(matches!(read_state(&dir), Err(LocalError::State { reason, .. }) if reason.contains("format 99")));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_pid_is_a_server_only_while_it_lives_and_names_the_data_dir() {
        let dir = scratch("alive");
        let mut child = fake_server(&dir, 1, false);
        let pid = child.id();
        assert!(is_server_of(pid, &node_data_dir(&dir, 1)));
        assert!(!is_server_of(pid, &node_data_dir(&dir, 2)), "another node's data dir: a reused pid");
        child.kill().unwrap();
        // A zombie (killed, not yet reaped) is not a server.
        wait_until(Duration::from_secs(5), || !is_server_of(pid, &node_data_dir(&dir, 1)));
        assert!(!is_server_of(pid, &node_data_dir(&dir, 1)));
        child.wait().unwrap();
        assert!(!is_server_of(pid, &node_data_dir(&dir, 1)));
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_file(dir.with_extension("fake-server")).unwrap();
    }

    #[test]
    fn status_reads_pid_files_and_down_terminates_then_kills() {
        let dir = scratch("down");
        write_state(&dir, &state(3)).unwrap();
        let obeys = fake_server(&dir, 1, false);
        let ignores = fake_server(&dir, 2, true);
        let (pid1, pid2) = (obeys.id(), ignores.id());
        let reapers = [reap(obeys), reap(ignores)];
        // Node 3 has no pid file: it is listed (the state names it) as not running.
        let report = status(&dir).unwrap();
        let running: Vec<(NodeId, bool)> = report.nodes.iter().map(|n| (n.id, n.running)).collect();
        assert_eq!(running, [(1, true), (2, true), (3, false)]);
        assert_eq!(report.nodes[1].pid, Some(pid2));
        assert_eq!(report.nodes[2].addr.as_deref(), Some("127.0.0.1:40020"));
        assert!(matches!(up(&dir, &UpRequest::default()), Err(LocalError::AlreadyRunning { node: 1, .. })));

        let down = down(&dir, false, Duration::from_millis(500)).unwrap();
        let how: Vec<(NodeId, Stopped)> = down.nodes.iter().map(|(n, how)| (n.id, *how)).collect();
        assert_eq!(how, [(1, Stopped::Terminated), (2, Stopped::Killed), (3, Stopped::NotRunning)]);
        for reaper in reapers {
            reaper.join().unwrap();
        }
        assert!(!is_server_of(pid1, &node_data_dir(&dir, 1)));
        assert!(!node_pid_file(&dir, 1).exists() && !node_pid_file(&dir, 2).exists());
        assert!(state_path(&dir).exists(), "data kept without --purge");
        let after = status(&dir).unwrap();
        assert!(after.nodes.iter().all(|n| !n.running && n.pid.is_none()));

        let purged = super::down(&dir, true, Duration::from_millis(500)).unwrap();
        assert!(purged.purged);
        assert!(!dir.exists(), "a purged dir that held only our files is gone");
        assert!(matches!(status(&dir), Err(LocalError::NoCluster(_))));
        fs::remove_file(dir.with_extension("fake-server")).unwrap();
    }

    #[test]
    fn up_refuses_a_foreign_dir_and_leftovers_and_a_changed_shape() {
        let dir = scratch("refuse");
        fs::write(dir.join("notes.txt"), "mine").unwrap();
        assert!(matches!(up(&dir, &UpRequest::default()), Err(LocalError::NotOurs(_))));
        fs::remove_file(dir.join("notes.txt")).unwrap();
        fs::write(node_log(&dir, 1), "it died").unwrap();
        assert!(matches!(up(&dir, &UpRequest::default()), Err(LocalError::Unfinished(_))));
        fs::remove_file(node_log(&dir, 1)).unwrap();

        write_state(&dir, &state(3)).unwrap();
        let request = UpRequest { nodes: Some(5), ..UpRequest::default() };
        match launch_options(&dir, Some(&state(3)), &request) {
            Err(LocalError::Shape { recorded, asked, .. }) => {
                assert_eq!(recorded, "3 nodes of 2 cores, 8 shards, 3 replicas");
                assert_eq!(asked, "5 nodes of 2 cores, 8 shards, 3 replicas");
            }
            other => panic!("{other:?}"),
        }
        let request = UpRequest { server_bin: Some("/bin/true".into()), ..UpRequest::default() };
        let opts = launch_options(&dir, Some(&state(3)), &request).unwrap();
        assert_eq!(opts.base_ports, Some(state(3).base_ports), "a restart keeps the recorded ports");
        assert!(opts.detached && opts.keep && !opts.build_if_missing);
        let fresh = launch_options(&dir, None, &request).unwrap();
        assert_eq!((fresh.nodes, fresh.cores, fresh.base_ports), (3, 2, None));
        let many = UpRequest { nodes: Some(LOCAL_NODES_MAX + 1), ..request };
        assert!(matches!(launch_options(&dir, None, &many), Err(LocalError::Options(_))));
        fs::remove_dir_all(&dir).unwrap();
    }
}
