//! `corekv-server`'s command line as a user meets it: exit codes and one-line
//! errors. These runs never get as far as starting executors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use clap::Parser;
use corekv_engine::config::{Cli, ServerConfig, prepare_data_dir};

const CLUSTER: &str = "1=127.0.0.1:7100/2,2=127.0.0.1:7200/2,3=127.0.0.1:7300/2";

fn server(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corekv-server"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("corekv-server runs")
}

/// A path for a test's own files under the temp dir (removed first).
fn scratch(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("corekv-server-cli-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    let _ = std::fs::remove_file(&path);
    path
}

/// The node-1 flags with data dir `dir`.
fn node1(dir: &Path) -> Vec<String> {
    let dir = dir.to_str().expect("utf-8 temp path");
    ["--id", "1", "--data-dir", dir, "--listen", "127.0.0.1:7100", "--cores", "2", "--initial-cluster", CLUSTER]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn with(mut base: Vec<String>, extra: &[&str]) -> Vec<String> {
    base.extend(extra.iter().map(|s| s.to_string()));
    base
}

fn run(args: &[String]) -> Output {
    server(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Asserts exit code 2 and exactly one stderr line, and returns it.
fn refused(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "exit 2; stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("corekv-server: "), "{stderr}");
    stderr.trim_end().to_string()
}

#[test]
fn help_exits_zero_and_documents_every_flag() {
    let output = server(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in ["--initial-cluster", "--data-dir", "--io", "--print-config", "--history-versions-max"] {
        assert!(help.contains(flag), "help names {flag}");
    }
}

#[test]
fn a_missing_required_flag_exits_2_with_one_line() {
    let line = refused(&server(&["--id", "1", "--listen", "127.0.0.1:7100"]));
    assert_eq!(line, "corekv-server: missing --data-dir (or `data_dir` in the config file)");
}

#[test]
fn clap_usage_errors_exit_2_with_one_line() {
    let line = refused(&server(&["--no-such-flag"]));
    assert!(line.contains("--no-such-flag"), "{line}");
    let line = refused(&server(&["--id", "one"]));
    assert!(line.contains("one"), "{line}");
}

#[test]
fn a_bad_initial_cluster_names_the_bad_entry() {
    let dir = scratch("bad-cluster");
    let args = with(node1(&dir), &["--initial-cluster", "1=127.0.0.1:7100,2=127.0.0.1:72x0"]);
    let line = refused(&run(&args));
    assert!(line.contains("`2=127.0.0.1:72x0`"), "{line}");
    assert!(!dir.exists(), "nothing created");
}

#[test]
fn a_node_absent_from_the_cluster_is_refused() {
    let dir = scratch("absent");
    let line = refused(&run(&with(node1(&dir), &["--id", "9"])));
    assert!(line.contains("--id 9 is not in --initial-cluster (it names nodes 1, 2, 3)"), "{line}");
}

#[test]
fn an_unknown_key_in_the_config_file_is_named() {
    let file = scratch("unknown-key.toml");
    std::fs::write(&file, "id = 1\nreplica_count = 3\n").unwrap();
    let line = refused(&server(&["--config", file.to_str().unwrap()]));
    assert!(line.contains("line 2: unknown field `replica_count`"), "{line}");
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn a_flag_overrides_the_config_file() {
    let file = scratch("override.toml");
    let dir = scratch("override-data");
    let text = format!(
        "id = 1\ndata_dir = {:?}\nlisten = \"127.0.0.1:7100\"\ncores = 2\ninitial_cluster = \"{CLUSTER}\"\n\
         shards = 16\ntick_ms = 20\n",
        dir.to_str().unwrap()
    );
    std::fs::write(&file, text).unwrap();
    let output = server(&["--config", file.to_str().unwrap(), "--shards", "8", "--print-config"]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let dump = String::from_utf8(output.stdout).unwrap();
    assert!(dump.contains("\nshards = 8\n"), "the flag wins: {dump}");
    assert!(dump.contains("\ntick_ms = 20\n"), "the file fills the rest: {dump}");
    assert!(dump.contains("\ninitial_cluster = \"1=127.0.0.1:7100/2,"), "{dump}");
    assert!(!dir.exists(), "--print-config touches no data dir");

    // The dump is itself a valid config file for the same configuration.
    let dumped = scratch("dumped.toml");
    std::fs::write(&dumped, &dump).unwrap();
    let again = server(&["--config", dumped.to_str().unwrap(), "--print-config"]);
    assert_eq!(String::from_utf8(again.stdout).unwrap(), dump);
    std::fs::remove_file(&file).unwrap();
    std::fs::remove_file(&dumped).unwrap();
}

#[test]
fn a_data_dir_of_another_cluster_names_both_cluster_ids() {
    let dir = scratch("foreign-data");
    let theirs = resolve(&with(node1(&dir), &["--cluster-name", "theirs"]));
    prepare_data_dir(&theirs).unwrap();
    let ours = with(node1(&dir), &["--cluster-name", "ours"]);
    let line = refused(&run(&ours));
    let ours = resolve(&ours);
    assert_ne!(ours.cluster_id, theirs.cluster_id);
    let found = format!("belongs to cluster {:#018x} node 1", theirs.cluster_id);
    let expected = format!("not cluster {:#018x} node 1", ours.cluster_id);
    assert!(line.contains(&found) && line.contains(&expected), "{line}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn resolve(args: &[String]) -> ServerConfig {
    let cli = Cli::try_parse_from(std::iter::once("corekv-server").chain(args.iter().map(String::as_str))).unwrap();
    ServerConfig::from_cli(&cli, None).unwrap()
}
