//! The transaction workloads end to end against a local 1-node cluster: `bank`
//! and `ycsb-t` print their figures and write one history line per attempt with
//! the fields the checker reads (ids, attempts, reads from the store, the last
//! write per key, outcomes). Liveness bounds only; no speed is asserted.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use corekv_tools::history::TxnRecord;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_corekv-bench"))
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("corekv-bench-txn-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn records(path: &Path) -> Vec<TxnRecord> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// Fields every line must have right, whatever the workload.
fn check_lines(lines: &[TxnRecord], policy: &str) {
    assert!(!lines.is_empty());
    let mut last_of_client: HashMap<u64, &TxnRecord> = HashMap::new();
    for r in lines {
        assert_eq!(r.op, "txn");
        let (client_id, attempt) = r.txn.split_once('.').expect("<client id>.<attempt>");
        assert_eq!(client_id.len(), 32, "{}", r.txn);
        assert!(attempt.parse::<u64>().is_ok(), "{}", r.txn);
        assert!(r.start_version > 0);
        match r.outcome.as_str() {
            "ok" if r.policy == "read-only" => assert_eq!(r.version, Some(r.start_version), "{r:?}"),
            "ok" => assert!(r.version.is_some(), "{r:?}"),
            "aborted" => assert!(r.reason.is_some() && r.version.is_none(), "{r:?}"),
            "indeterminate" => assert!(r.return_ns.is_none(), "{r:?}"),
            "unavailable" => {}
            other => panic!("outcome {other}"),
        }
        if r.outcome != "indeterminate" {
            assert!(r.return_ns.is_some_and(|t| t >= r.invoke_ns), "{r:?}");
        }
        let mut keys: Vec<_> = r.writes.iter().map(|w| w.key.clone()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), r.writes.len(), "one write per key: {r:?}");
        if r.policy == "read-only" {
            continue;
        }
        assert_eq!(r.policy, policy);
        // A retry follows its client's aborted attempt, with the next number.
        if r.attempt > 1 {
            let before = last_of_client.get(&r.client).expect("a retry follows an attempt");
            assert_eq!((before.attempt + 1, before.outcome.as_str()), (r.attempt, "aborted"), "{before:?} then {r:?}");
            if policy == "wait-die" {
                assert_eq!(before.start_version, r.start_version, "wait-die keeps the start version");
            }
        }
        last_of_client.insert(r.client, r);
    }
}

/// Runs `command` to its end; its stdout and stderr, after asserting it
/// succeeded.
fn succeeds(command: &mut std::process::Command) -> (String, String) {
    let output = command.output().expect("corekv-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);
    (stdout, stderr)
}

#[test]
fn bank_prints_the_figures_and_records_each_attempt() {
    let dir = scratch("bank");
    let history = dir.join("bank.jsonl");
    let (stdout, stderr) = succeeds(
        bench()
            .args([
                "bank",
                "--local",
                "1",
                "--cores",
                "2",
                "--accounts",
                "20",
                "--clients",
                "4",
                "--policy",
                "wait-die",
            ])
            .args(["--duration", "2s", "--warmup", "500ms", "--audit-every", "500ms", "--check", "--history"])
            .arg(&history),
    );
    assert!(stderr.contains("audits while the clients ran"), "{stderr}");
    // --check ran the serializability checker on what was recorded.
    assert!(stdout.contains("check: transactions: serializable:"), "{stdout}");
    for column in ["committed txns/s", "retries/commit", "p50 ms", "p99 ms", "aborts by reason"] {
        assert!(stdout.contains(column), "{column}: {stdout}");
    }
    let lines = records(&history);
    check_lines(&lines, "wait-die");
    let committed: Vec<_> = lines.iter().filter(|r| r.outcome == "ok" && r.policy == "wait-die").collect();
    assert!(!committed.is_empty());
    for r in &committed {
        assert_eq!((r.reads.len(), r.writes.len()), (2, 2), "a transfer reads and writes two accounts: {r:?}");
        assert!(r.writes.iter().all(|w| w.value_hash.is_some()));
    }
    let audits: Vec<_> = lines.iter().filter(|r| r.policy == "read-only").collect();
    assert!(audits.len() >= 2, "audits now and then, and one at the end: {}", audits.len());
    for audit in &audits {
        assert_eq!((audit.outcome.as_str(), audit.reads.len(), audit.client), ("ok", 20, 4), "{audit:?}");
    }
    assert_eq!(lines.last().unwrap().policy, "read-only", "the final audit ends the history");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ycsb_t_prints_the_figures_and_records_each_attempt() {
    let dir = scratch("ycsb");
    let history = dir.join("ycsb.jsonl");
    let (stdout, stderr) = succeeds(
        bench()
            .args(["ycsb-t", "--local", "1", "--cores", "2", "--keys", "200", "--value-size", "100", "--clients", "4"])
            .args(["--ops-per-txn", "3", "--duration", "2s", "--warmup", "500ms", "--history"])
            .arg(&history),
    );
    assert!(stdout.contains("3 ops/txn, 50% read, 50% update") && stdout.contains("committed txns/s"), "{stdout}");
    assert!(stderr.contains("loaded 200 records"), "{stderr}");
    let lines = records(&history);
    check_lines(&lines, "wound-wait");
    for r in lines.iter().filter(|r| r.outcome == "ok") {
        assert!(r.reads.len() + r.writes.len() <= 3, "{r:?}");
        assert!(r.reads.iter().all(|read| read.version > 0 && read.value_hash.is_some()), "loaded keys: {r:?}");
    }

    let plain = bench()
        .args(["ycsb-t", "--local", "1", "--plain", "--history"])
        .arg(dir.join("plain.jsonl"))
        .output()
        .expect("corekv-bench runs");
    assert_eq!(plain.status.code(), Some(2), "--plain has no transactions to record");
    std::fs::remove_dir_all(&dir).unwrap();
}
