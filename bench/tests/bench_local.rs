//! `corekv-bench` end to end: a short run against a local cluster it starts itself
//! prints its table, writes the JSON report with every field the docs promise,
//! records a history that its own `--check` finds linearizable, and refuses bad
//! input with exit 2. Liveness bounds only; no speed is asserted.

use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_corekv-bench"))
}

#[test]
fn a_short_local_run_reports_and_checks_its_history() {
    let dir = std::env::temp_dir().join(format!("corekv-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let history = dir.join("history.jsonl");
    let output = bench()
        .args(["--local", "1", "--cores", "2", "--keys", "300", "--clients", "4", "--inflight", "2"])
        .args(["--duration", "2s", "--warmup", "500ms", "--check"])
        .arg("--json")
        .arg(&json)
        .arg("--history")
        .arg(&history)
        .output()
        .expect("corekv-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);
    assert!(stdout.contains("ycsb-a on corekv 1 nodes"), "{stdout}");
    assert!(stdout.contains("check: linearizable"), "{stdout}");
    assert!(stderr.contains("loaded 300 records"), "{stderr}");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["workload"], "ycsb-a");
    assert_eq!(report["clients"], 4);
    let ops = report["ops"].as_array().expect("an ops array");
    let names: Vec<&str> = ops.iter().map(|o| o["op"].as_str().unwrap()).collect();
    assert_eq!(names, ["read", "update"]);
    for op in ops {
        assert!(op["count"].as_u64().unwrap() > 0, "{op}");
        for field in ["ops_per_sec", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
            assert!(op[field].as_f64().is_some(), "{field} in {op}");
        }
        assert!(op["p50_us"].as_f64() <= op["p99_us"].as_f64());
    }
    let server = &report["server"];
    assert!(server["fdatasyncs"].as_u64().unwrap() > 0, "updates were made durable: {server}");
    assert!(server["cpu_seconds"].as_f64().unwrap() > 0.0, "{server}");

    // The history: the load phase's 300 inserts and every measured operation.
    let lines = std::fs::read_to_string(&history).unwrap();
    assert!(lines.lines().count() > 300);
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    for field in ["client", "op", "invoke_ns", "return_ns", "outcome"] {
        assert!(first.get(field).is_some(), "{field} in {first}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_refused_with_exit_2() {
    for args in [
        vec!["--local", "1", "--workload", "ycsb-z"],
        vec!["--local", "1", "--clients", "0"],
        vec!["--local", "1", "--duration", "ten"],
        vec!["--local", "1", "--theta", "1.5"],
        vec!["--cluster", "localhost"],
        vec![],
    ] {
        let output = bench().args(&args).output().expect("corekv-bench runs");
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.trim().is_empty(), "{args:?} says why");
    }
}
