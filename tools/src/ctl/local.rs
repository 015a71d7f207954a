//! `corekv-ctl local up|down|status`: runs [`crate::local`] and renders its
//! reports. `up` prints the `--cluster` string and an `export COREKV_CLUSTER=…`
//! line; with `--json`, one object with the addresses, the dir and the pids.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::args::LocalUpArgs;
use super::render::{EXIT_INVALID, EXIT_NEGATIVE, Failure, Rendered};
use crate::local::{self, DOWN_GRACE, DownReport, LocalError, NodeReport, StatusReport, UpReport, UpRequest};

/// A local-cluster failure: bad options are invalid input (exit 2); the rest are
/// definite negatives (exit 1) with a word saying which.
pub fn local_failure(error: LocalError) -> Failure {
    let (word, exit) = match &error {
        LocalError::Options(_) | LocalError::Shape { .. } | LocalError::NotOurs(_) => ("invalid", EXIT_INVALID),
        LocalError::AlreadyRunning { .. } => ("already_running", EXIT_NEGATIVE),
        LocalError::NoCluster(_) => ("no_cluster", EXIT_NEGATIVE),
        _ => ("launch_failed", EXIT_NEGATIVE),
    };
    let message = error.to_string();
    let text = if word == "invalid" { format!("invalid: {message}") } else { message.clone() };
    Failure::new(word, text, Some(message), exit)
}

#[derive(Serialize)]
struct NodeJson {
    id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    addr: Option<String>,
    pid: Option<u32>,
    running: bool,
    log: String,
}

fn node_json(n: &NodeReport) -> NodeJson {
    NodeJson { id: n.id, addr: n.addr.clone(), pid: n.pid, running: n.running, log: n.log.display().to_string() }
}

#[derive(Serialize)]
struct UpJson {
    ok: bool,
    cluster: String,
    dir: String,
    restarted: bool,
    nodes: Vec<NodeJson>,
}

/// `local up`: `{"ok":true,"cluster":"a,b,c","dir":…,"restarted":B,"nodes":[{"id":1,"addr":…,"pid":N,…}]}`;
/// human: what started, the `--cluster` string and the `export` line.
pub fn render_up(report: &UpReport, json: bool) -> Rendered {
    let s = &report.state;
    let started = if report.restarted { "restarted" } else { "started" };
    let cluster = report.cluster();
    let lines = vec![
        format!(
            "{started} {} nodes ({} cores each, {} shards, {} replicas) in {}; every shard has a leader",
            s.nodes,
            s.cores,
            s.shards,
            s.replicas,
            report.dir.display()
        ),
        format!("--cluster {cluster}"),
        format!("export COREKV_CLUSTER={cluster}"),
    ];
    let line = lines.join("; ");
    let object = UpJson {
        ok: true,
        cluster,
        dir: report.dir.display().to_string(),
        restarted: report.restarted,
        nodes: report.nodes.iter().map(node_json).collect(),
    };
    Rendered::ok(json, &object, lines, line)
}

#[derive(Serialize)]
struct StatusJson {
    ok: bool,
    dir: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<String>,
    running: usize,
    nodes: Vec<NodeJson>,
}

/// `local status`: which nodes run, with address and pid.
pub fn render_local_status(report: &StatusReport, json: bool) -> Rendered {
    let running = report.nodes.iter().filter(|n| n.running).count();
    let cluster = report.state.as_ref().map(|s| s.addrs().join(","));
    let mut lines = vec![format!("{}: {running} of {} nodes running", report.dir.display(), report.nodes.len())];
    if let Some(cluster) = &cluster {
        lines[0].push_str(&format!(" (--cluster {cluster})"));
    } else {
        lines[0].push_str(" (a start that did not finish)");
    }
    for n in &report.nodes {
        let addr = n.addr.as_deref().unwrap_or("?");
        let pid = n.pid.map_or("no pid file".to_string(), |p| format!("pid {p}"));
        let state = if n.running { "running" } else { "stopped" };
        lines.push(format!("node {} {addr} {state} ({pid})", n.id));
    }
    let line = lines.join("; ");
    let object = StatusJson {
        ok: true,
        dir: report.dir.display().to_string(),
        cluster,
        running,
        nodes: report.nodes.iter().map(node_json).collect(),
    };
    Rendered::ok(json, &object, lines, line)
}

#[derive(Serialize)]
struct DownJson {
    ok: bool,
    dir: String,
    purged: bool,
    nodes: Vec<DownNodeJson>,
}

#[derive(Serialize)]
struct DownNodeJson {
    id: u64,
    pid: Option<u32>,
    stopped: &'static str,
}

/// `local down`: how each node stopped, and whether the data was purged. A
/// node SIGKILLed after the grace period is also a warning on stderr.
pub fn render_down(report: &DownReport, json: bool) -> Rendered {
    let mut lines = Vec::new();
    let mut warnings = Vec::new();
    for (n, how) in &report.nodes {
        let pid = n.pid.map_or(String::new(), |p| format!(" (pid {p})"));
        let text = match how {
            local::Stopped::NotRunning => "was not running",
            local::Stopped::Terminated => "stopped",
            local::Stopped::Killed => "killed",
            local::Stopped::StillRunning => "STILL RUNNING",
        };
        lines.push(format!("node {}{pid} {text}", n.id));
        match how {
            local::Stopped::Killed => warnings.push(format!(
                "warning: node {}{pid} did not exit within {:?} of SIGTERM and was killed (SIGKILL)",
                n.id, DOWN_GRACE
            )),
            local::Stopped::StillRunning => {
                warnings.push(format!("warning: node {}{pid} is still running after SIGKILL", n.id))
            }
            _ => {}
        }
    }
    lines.push(if report.purged {
        format!("removed the data, logs and pid files in {}", report.dir.display())
    } else {
        format!(
            "data and logs kept in {} (`local up` restarts it; `local down --purge` deletes it)",
            report.dir.display()
        )
    });
    let line = lines.join("; ");
    let object = DownJson {
        ok: true,
        dir: report.dir.display().to_string(),
        purged: report.purged,
        nodes: report.nodes.iter().map(|(n, how)| DownNodeJson { id: n.id, pid: n.pid, stopped: how.word() }).collect(),
    };
    let mut rendered = Rendered::ok(json, &object, lines, line);
    if !warnings.is_empty() {
        rendered.log = Some(warnings.join("\n"));
    }
    rendered
}

/// Runs `local up`.
pub fn run_up(args: &LocalUpArgs, json: bool) -> Result<Rendered, Failure> {
    let request = UpRequest {
        nodes: args.nodes,
        cores: args.cores,
        shards: args.shards,
        replicas: args.replicas,
        server_args: args.server_args.clone(),
        server_bin: None,
        startup_deadline: None,
    };
    eprintln!("corekv-ctl: starting a local cluster in {} ...", display_dir(&args.dir));
    local::up(&args.dir, &request).map(|r| render_up(&r, json)).map_err(local_failure)
}

/// Runs `local down`.
pub fn run_down(dir: &Path, purge: bool, json: bool) -> Result<Rendered, Failure> {
    local::down(dir, purge, DOWN_GRACE).map(|r| render_down(&r, json)).map_err(local_failure)
}

/// Runs `local status`.
pub fn run_status(dir: &Path, json: bool) -> Result<Rendered, Failure> {
    local::status(dir).map(|r| render_local_status(&r, json)).map_err(local_failure)
}

fn display_dir(dir: &Path) -> String {
    std::path::absolute(dir).unwrap_or_else(|_| PathBuf::from(dir)).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::{LocalState, STATE_FORMAT, Stopped};

    fn node(id: u64, running: bool) -> NodeReport {
        NodeReport {
            id,
            addr: Some(format!("127.0.0.1:{}", 7000 + 100 * id)),
            pid: running.then_some(1000 + id as u32),
            running,
            log: PathBuf::from(format!("/d/node-{id}.log")),
        }
    }

    fn state() -> LocalState {
        LocalState {
            format: STATE_FORMAT,
            nodes: 2,
            cores: 2,
            shards: 8,
            replicas: 2,
            base_ports: vec![7100, 7200],
            server_args: Vec::new(),
        }
    }

    #[test]
    fn up_prints_the_cluster_string_and_an_export_line() {
        let report =
            UpReport { dir: "/d".into(), state: state(), restarted: false, nodes: vec![node(1, true), node(2, true)] };
        let human = render_up(&report, false);
        assert_eq!(human.lines[1], "--cluster 127.0.0.1:7100,127.0.0.1:7200");
        assert_eq!(human.lines[2], "export COREKV_CLUSTER=127.0.0.1:7100,127.0.0.1:7200");
        assert_eq!(
            render_up(&report, true).line,
            r#"{"ok":true,"cluster":"127.0.0.1:7100,127.0.0.1:7200","dir":"/d","restarted":false,"nodes":[{"id":1,"addr":"127.0.0.1:7100","pid":1001,"running":true,"log":"/d/node-1.log"},{"id":2,"addr":"127.0.0.1:7200","pid":1002,"running":true,"log":"/d/node-2.log"}]}"#
        );
    }

    #[test]
    fn status_and_down_say_who_runs_and_warn_about_kills() {
        let report =
            StatusReport { dir: "/d".into(), state: Some(state()), nodes: vec![node(1, true), node(2, false)] };
        let human = render_local_status(&report, false);
        assert_eq!(human.lines[0], "/d: 1 of 2 nodes running (--cluster 127.0.0.1:7100,127.0.0.1:7200)");
        assert_eq!(human.lines[2], "node 2 127.0.0.1:7200 stopped (no pid file)");
        let json: serde_json::Value = serde_json::from_str(&render_local_status(&report, true).line).unwrap();
        assert_eq!((&json["running"], &json["nodes"][1]["pid"]), (&1.into(), &serde_json::Value::Null));

        let down = DownReport {
            dir: "/d".into(),
            nodes: vec![(node(1, true), Stopped::Killed), (node(2, false), Stopped::NotRunning)],
            purged: false,
        };
        let human = render_down(&down, false);
        assert_eq!(human.lines[0], "node 1 (pid 1001) killed");
        assert!(human.log.as_deref().unwrap().starts_with("warning: node 1 (pid 1001) did not exit"));
        assert_eq!(human.exit, 0, "down exits 0 even when it had to kill");
        assert_eq!(
            render_down(&down, true).line,
            r#"{"ok":true,"dir":"/d","purged":false,"nodes":[{"id":1,"pid":1001,"stopped":"killed"},{"id":2,"pid":null,"stopped":"not_running"}]}"#
        );
    }

    #[test]
    fn failures_have_words_and_exit_codes() {
        let f = local_failure(LocalError::NoCluster("/d".into()));
        assert_eq!((f.word, f.exit), ("no_cluster", 1));
        let f = local_failure(LocalError::Options("bad".into()));
        assert_eq!((f.word, f.exit, f.text.as_str()), ("invalid", 2, "invalid: bad"));
        let f = local_failure(LocalError::ServerNotFound { searched: "/x".into() });
        assert_eq!(f.word, "launch_failed");
        assert!(f.text.contains("cargo build --release -p corekv-engine --bin corekv-server"), "{}", f.text);
    }
}
