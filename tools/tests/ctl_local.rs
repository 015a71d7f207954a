//! The real `corekv-ctl` binary against a real local cluster it starts itself
//! (`local up --nodes 3 --cores 2`): every data command with `--json` and its exit
//! code, a `shell` session through a pipe, bad input, an unreachable cluster, and
//! `local down`. It starts server processes, so it holds the launcher's
//! machine-wide lock throughout (DESIGN §11); a detached cluster takes none
//! itself. Bounds on time are liveness bounds, never speed claims.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use corekv_tools::launcher::{ClusterLock, SERVER_BIN_ENV, find_server_binary, node_data_dir};
use corekv_tools::local;
use serde_json::Value;

/// Runs `corekv-ctl` with `args`, the server binary named, and no cluster from
/// the caller's environment.
fn ctl<I, S>(server: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_corekv-ctl"))
        .args(args)
        .env(SERVER_BIN_ENV, server)
        .env_remove("COREKV_CLUSTER")
        .stdin(Stdio::null())
        .output()
        .expect("corekv-ctl runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The one JSON line of a `--json` command, and its exit code.
fn json(out: &Output) -> (Value, i32) {
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line: {stdout}; stderr: {}", text(&out.stderr));
    let value = serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {}", lines[0]));
    (value, out.status.code().expect("exited"))
}

/// Runs `corekv-ctl --json shell` against `cluster` with `script` piped in.
fn shell(cluster: &str, script: &str) -> Output {
    let mut shell = Command::new(env!("CARGO_BIN_EXE_corekv-ctl"))
        .args(["shell", "--json", "--cluster", cluster])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    shell.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    shell.wait_with_output().unwrap()
}

/// Every answer line of a shell, parsed.
fn shell_answers(out: &Output) -> Vec<Value> {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Stops the cluster however the test ends: keeps the dir when the test failed.
struct Cleanup {
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if let Err(e) = local::down(&self.dir, !failed, Duration::from_secs(10))
            && self.dir.exists()
        {
            eprintln!("cleanup of {}: {e}", self.dir.display());
        }
        if failed {
            eprintln!("the cluster's data and logs are kept in {}", self.dir.display());
        }
    }
}

#[test]
fn ctl_drives_a_local_cluster_end_to_end() {
    let _lock = ClusterLock::acquire(&ClusterLock::default_path()).expect("the launcher lock");
    let locked_at = std::time::Instant::now();
    let server = find_server_binary(true).expect("corekv-server is found or built");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ctl-local-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_arg = dir.to_str().unwrap();
    let cleanup = Cleanup { dir: dir.clone() };

    // local up: one JSON object with the addresses, the dir and the pids.
    let up =
        ctl(&server, ["local", "up", "--nodes", "3", "--cores", "2", "--shards", "16", "--dir", dir_arg, "--json"]);
    let (up, code) = json(&up);
    assert_eq!(code, 0, "{up}");
    let cluster = up["cluster"].as_str().unwrap().to_string();
    assert_eq!(cluster.split(',').count(), 3);
    let pids: Vec<u32> = up["nodes"].as_array().unwrap().iter().map(|n| n["pid"].as_u64().unwrap() as u32).collect();
    assert_eq!(pids.len(), 3);
    let again = ctl(&server, ["local", "up", "--dir", dir_arg]);
    assert_eq!(again.status.code(), Some(1), "a running cluster is not started twice");
    assert!(text(&again.stderr).contains("already holds a running cluster"), "{}", text(&again.stderr));
    let (status, code) = json(&ctl(&server, ["local", "status", "--dir", dir_arg, "--json"]));
    assert_eq!((code, &status["running"]), (0, &Value::from(3)));

    let data = |args: &[&str]| {
        let mut all = vec!["--cluster", &cluster, "--json"];
        all.extend_from_slice(args);
        json(&ctl(&server, all))
    };

    // put / get / get -v / cas / delete / not found / versions.
    let (put, code) = data(&["put", "greeting", "hello"]);
    assert_eq!(code, 0, "{put}");
    let v1 = put["version"].as_u64().expect("an exact integer version");
    let (got, code) = data(&["get", "greeting"]);
    assert_eq!((code, &got["value"], &got["version"]), (0, &Value::from("hello"), &Value::from(v1)));
    let verbose = ctl(&server, ["--cluster", &cluster, "get", "greeting", "-v"]);
    assert_eq!(text(&verbose.stdout), format!("hello (version {v1})\n"));
    let (mismatch, code) = data(&["cas", "greeting", "1", "nope"]);
    assert_eq!(code, 1);
    assert_eq!(mismatch, serde_json::json!({"ok": false, "error": "version_mismatch", "version": v1}));
    let (cas, code) = data(&["cas", "greeting", &v1.to_string(), "world"]);
    assert_eq!(code, 0, "{cas}");
    let v2 = cas["version"].as_u64().unwrap();
    assert!(v2 > v1);
    let (deleted, code) = data(&["delete", "greeting"]);
    assert_eq!(code, 0, "{deleted}");
    let v3 = deleted["version"].as_u64().unwrap();
    let (missing, code) = data(&["get", "greeting"]);
    assert_eq!((code, missing), (1, serde_json::json!({"ok": false, "error": "not_found"})));
    let (at, code) = data(&["get", "greeting", "--at", &v1.to_string()]);
    assert_eq!((code, &at["value"]), (0, &Value::from("hello")));
    // A one-shot transaction over two shards' keys: one commit version for both.
    let (txn, code) = data(&["txn", "--", "put from 90", "put to 10", "get greeting", "get from"]);
    assert_eq!(code, 0, "{txn}");
    let tv = txn["version"].as_u64().expect("a commit version");
    assert_eq!(txn["reads"][0], serde_json::json!({"key": "greeting", "ok": false, "error": "not_found"}));
    assert_eq!(txn["reads"][1], serde_json::json!({"key": "from", "ok": true, "value": "90", "version": 0}));
    for key in ["from", "to"] {
        let (got, code) = data(&["get", key]);
        assert_eq!((code, &got["version"]), (0, &Value::from(tv)), "{key}: {got}");
    }
    let (gone, code) = data(&["txn", "--", "delete from", "delete to"]);
    assert_eq!(code, 0, "{gone}");
    assert_eq!(data(&["get", "to"]).1, 1, "deleted in one transaction");
    let (versions, code) = data(&["versions", "greeting"]);
    assert_eq!(code, 0);
    assert_eq!(
        versions,
        serde_json::json!({"ok": true, "versions": [
            {"version": v3, "deleted": true},
            {"version": v2, "value": "world"},
            {"version": v1, "value": "hello"},
        ]})
    );

    // A key and a value that are not UTF-8 are bytes; scan shows them as base64.
    let raw = ctl(
        &server,
        [
            OsStr::new("--cluster"),
            OsStr::new(&cluster),
            OsStr::new("put"),
            OsStr::from_bytes(b"k\xff"),
            OsStr::from_bytes(b"\xfe"),
        ],
    );
    assert_eq!(raw.status.code(), Some(0), "{}", text(&raw.stderr));
    for key in ["k1", "k2", "k3"] {
        assert_eq!(data(&["put", key, &format!("value of {key}")]).1, 0);
    }
    let (scan, code) = data(&["scan", "k", "l", "--limit", "2"]);
    assert_eq!(code, 0);
    assert_eq!(scan["more"], true);
    let keys: Vec<&Value> = scan["items"].as_array().unwrap().iter().map(|i| &i["key"]).collect();
    assert_eq!(keys, [&Value::from("k1"), &Value::from("k2")]);
    let (scan, _) = data(&["scan", "k3", ""]);
    let items = scan["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{scan}");
    assert_eq!((&items[1]["key_b64"], &items[1]["value_b64"]), (&Value::from("a/8="), &Value::from("/g==")));
    assert_eq!(scan["more"], false);

    // status: nodes with their cores' counters, every shard with its leader (a
    // status may fall inside an election or a leader transfer: asked again then,
    // within a liveness bound).
    let started = std::time::Instant::now();
    let (status, code) = loop {
        let (status, code) = data(&["status"]);
        let led = status["shards"].as_array().is_some_and(|s| s.iter().all(|s| s["leader"].as_u64() > Some(0)));
        if led || started.elapsed() > std::time::Duration::from_secs(20) {
            break (status, code);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(code, 0);
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert!(nodes.iter().all(|n| n["cores"].as_array().unwrap().len() == 2));
    assert!(nodes[0]["cores"][0]["stats"]["puts"].is_u64());
    let shards = status["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 16);
    assert!(shards.iter().all(|s| s["leader"].as_u64().unwrap() > 0 && s["replicas"].as_array().unwrap().len() == 3));

    // shell: one answer per line, in order; a bad line answers invalid and it goes on.
    let script =
        "put s1 'two words'\nget s1\nthis is not a command\ncas s1 0 x\n\ndelete s1\nget s1\nexit\nput s2 never\n";
    let out = shell(&cluster, script);
    let answers = shell_answers(&out);
    assert_eq!(answers.len(), 6, "{}", text(&out.stdout));
    let s1 = answers[0]["version"].as_u64().unwrap();
    assert_eq!(answers[1], serde_json::json!({"ok": true, "value": "two words", "version": s1}));
    assert_eq!((&answers[2]["error"], answers[2]["message"].is_string()), (&Value::from("invalid"), true));
    assert_eq!(answers[3], serde_json::json!({"ok": false, "error": "version_mismatch", "version": s1}));
    assert!(answers[4]["version"].as_u64().unwrap() > s1);
    assert_eq!(answers[5], serde_json::json!({"ok": false, "error": "not_found"}));
    assert_eq!(data(&["get", "s2"]).0["error"], "not_found", "nothing runs after exit");

    // A shell transaction: writes answer {"ok":true}, its own write reads at
    // version 0, and the commit's version is every written key's version.
    let out = shell(&cluster, "begin\nput x 1\nput y 2\nget x\ncommit\n");
    let txn = shell_answers(&out);
    assert_eq!(txn.len(), 5, "{}", text(&out.stdout));
    let id = txn[0]["txn"].as_str().expect("a transaction id");
    assert!(id.split_once('-').is_some_and(|(client, attempt)| client.len() == 32 && attempt.parse::<u64>().is_ok()));
    assert!(txn[0]["start_version"].is_u64(), "{}", txn[0]);
    assert_eq!(
        txn[1..4],
        [
            serde_json::json!({"ok": true}),
            serde_json::json!({"ok": true}),
            serde_json::json!({"ok": true, "value": "1", "version": 0})
        ]
    );
    let committed = txn[4]["version"].as_u64().expect("a commit version");
    for (key, value) in [("x", "1"), ("y", "2")] {
        let (got, code) = data(&["get", key]);
        assert_eq!((code, got), (0, serde_json::json!({"ok": true, "value": value, "version": committed})));
    }
    // The end of input aborts an open transaction: its write is gone, its lock
    // too (a plain put of the key goes through).
    let out = shell(&cluster, "begin\nput x never\n");
    assert_eq!(shell_answers(&out)[1], serde_json::json!({"ok": true}));
    assert!(text(&out.stderr).contains("was still open when the shell ended: aborted"), "{}", text(&out.stderr));
    assert_eq!(data(&["get", "x"]).0["version"], committed);
    assert_eq!(data(&["put", "x", "3"]).1, 0, "the lock was released");
    // A scan inside a read-write transaction: the store's keys under range
    // locks, with the transaction's own writes laid over them.
    let x3 = data(&["get", "x"]).0["version"].as_u64().expect("x's version");
    let out = shell(&cluster, "begin\ndelete y\nput xx 9\nscan x z\nabort\n");
    let answers = shell_answers(&out);
    assert_eq!(
        answers[3],
        serde_json::json!({"ok": true, "items": [
            {"key": "x", "value": "3", "version": x3},
            {"key": "xx", "value": "9", "version": 0}
        ], "more": false}),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(answers[4], serde_json::json!({"ok": true}));
    assert_eq!(data(&["get", "y"]).0["version"], committed, "aborted: y stays");

    // Bad input never reaches the cluster; an unreachable cluster is unavailable.
    let huge = "k".repeat(5000);
    let (too_big, code) = data(&["put", &huge, "v"]);
    assert_eq!((code, &too_big["error"]), (2, &Value::from("invalid")));
    let plain = ctl(&server, ["--cluster", &cluster, "get", &huge]);
    assert_eq!(plain.status.code(), Some(2));
    assert_eq!(text(&plain.stderr), "error: invalid: key is 5000 bytes, above the 4096-byte limit\n");
    let unreachable = ctl(&server, ["--cluster", "127.0.0.1:1", "--timeout", "500ms", "get", "k"]);
    assert_eq!(unreachable.status.code(), Some(3));
    let stderr = text(&unreachable.stderr);
    assert!(stderr.starts_with("error: unavailable") && stderr.contains("127.0.0.1:1"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let (unavailable, code) =
        json(&ctl(&server, ["--json", "--cluster", "127.0.0.1:1", "--timeout", "500ms", "put", "k", "v"]));
    assert_eq!((code, unavailable), (3, serde_json::json!({"ok": false, "error": "unavailable"})));

    // local down: every server exits; the data stays until --purge.
    let down = ctl(&server, ["local", "down", "--dir", dir_arg]);
    assert_eq!(down.status.code(), Some(0), "{}", text(&down.stderr));
    for (i, pid) in pids.iter().enumerate() {
        assert!(!local::is_server_of(*pid, &node_data_dir(&dir, i as u64 + 1)), "node {} exited", i + 1);
    }
    assert!(dir.join("local.json").exists(), "data kept without --purge");
    let (status, code) = json(&ctl(&server, ["local", "status", "--dir", dir_arg, "--json"]));
    assert_eq!((code, &status["running"]), (0, &Value::from(0)));
    drop(cleanup);
    assert!(!dir.exists(), "a passing test leaves nothing behind");
    eprintln!("ran for {:?} once it had the lock", locked_at.elapsed());
}
