//! Configuration rules, each checked by name.

use std::sync::atomic::{AtomicU32, Ordering};

use clap::Parser;

use super::*;

fn cli(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("corekv-server").chain(args.iter().copied())).expect("flags parse")
}

const THREE: &str = "1=127.0.0.1:7100/2,2=127.0.0.1:7200/2,3=127.0.0.1:7300/2";

fn base_args(data_dir: &str) -> Vec<String> {
    ["--id", "1", "--data-dir", data_dir, "--listen", "127.0.0.1:7100", "--cores", "2", "--initial-cluster", THREE]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn resolve_args(args: &[&str]) -> Result<ServerConfig, ConfigError> {
    ServerConfig::resolve(&cli(args), &FileConfig::default(), None)
}

fn resolve_with(extra: &[&str]) -> Result<ServerConfig, ConfigError> {
    let mut args = base_args("/tmp/corekv-unused");
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    resolve_args(&args)
}

fn message(result: Result<ServerConfig, ConfigError>) -> String {
    let e = result.expect_err("the configuration is refused");
    let text = e.to_string();
    assert!(!text.contains('\n'), "one line: {text}");
    text
}

/// A fresh, empty directory path under the system temp dir (not created).
fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("corekv-config-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    path
}

#[test]
fn defaults_fill_every_optional_setting() {
    let c = resolve_with(&[]).unwrap();
    assert_eq!(c.id, 1);
    assert_eq!(c.cores, 2);
    assert_eq!(c.initial_cluster.len(), 3);
    assert_eq!(c.shards, 64);
    assert_eq!(c.replicas, 3);
    assert_eq!(c.cluster_name, "");
    assert_eq!(c.cluster_id, placement::cluster_id(&c.initial_cluster, 64, 3, ""));
    assert_eq!((c.tick_ms, c.election_timeout_ticks, c.heartbeat_interval_ticks), (10, 100, 10));
    assert_eq!(c.io_mode, IoMode::Direct);
    assert!(!c.spin && !c.lease_reads);
    assert_eq!(c.value_bytes_max, VALUE_BYTES_MAX_DEFAULT);
    assert_eq!(c.history_versions_max, 64);
    assert_eq!((c.snapshot_log_bytes, c.wal_segment_bytes), (64 << 20, 64 << 20));
    assert_eq!(c.io_memory_bytes, 10 << 20);
    assert_eq!(c.log, "info");
    assert_eq!(c.retention().versions_per_key_max, 64);
    assert_eq!(c.limits().value_bytes_max, VALUE_BYTES_MAX_DEFAULT);
    assert_eq!(c.core_listen_addr(1), "127.0.0.1:7101");
    assert_eq!(c.wal_config(1).identity, WalIdentity { cluster_id: c.cluster_id, node_id: 1, core_id: 1 });
    assert_eq!(c.initial_map().shards.len(), 64);
}

#[test]
fn replicas_default_to_the_node_count_when_fewer_than_three() {
    let c = resolve_args(&[
        "--id=2",
        "--data-dir=/d",
        "--listen=h:1000",
        "--cores=1",
        "--initial-cluster=1=h:2000,2=h:1000",
    ])
    .unwrap();
    assert_eq!(c.replicas, 2);
    assert_eq!(c.initial_cluster.iter().map(|n| (n.id, n.cores)).collect::<Vec<_>>(), vec![(1, 1), (2, 1)]);
    let single = resolve_args(&["--id=1", "--data-dir=/d", "--listen=h:1", "--cores=1", "--initial-cluster=1=h:1"]);
    assert_eq!(single.unwrap().replicas, 1);
}

#[test]
fn a_missing_required_setting_names_flag_and_key() {
    let text = message(resolve_args(&["--id", "1"]));
    assert_eq!(text, "missing --data-dir (or `data_dir` in the config file)");
}

#[test]
fn bad_initial_cluster_entries_are_named() {
    let text = message(resolve_with(&["--initial-cluster", "1=127.0.0.1:7100,two=127.0.0.1:7200"]));
    assert!(text.contains("`two=127.0.0.1:7200`") && text.contains("node id `two`"), "{text}");
    let text = message(resolve_with(&["--initial-cluster", "1=127.0.0.1:7100,2=127.0.0.1"]));
    assert!(text.contains("`2=127.0.0.1`") && text.contains("no port"), "{text}");
    let text = message(resolve_with(&["--initial-cluster", "1=127.0.0.1:7100/x"]));
    assert!(text.contains("core count `x`"), "{text}");
    let text = message(resolve_with(&["--initial-cluster", "1=127.0.0.1:7100,,2=h:1"]));
    assert!(text.contains("entry ``"), "{text}");
    let text = message(resolve_with(&["--initial-cluster", "1=127.0.0.1:7100,1=127.0.0.1:7200"]));
    assert_eq!(text, "node id 1 appears twice in --initial-cluster");
}

#[test]
fn this_node_must_be_in_the_cluster_with_its_address_and_cores() {
    let text = message(resolve_with(&["--id", "4"]));
    assert_eq!(text, "this node's --id 4 is not in --initial-cluster (it names nodes 1, 2, 3)");
    let text = message(resolve_with(&["--listen", "127.0.0.1:7101"]));
    assert!(text.contains("--listen 127.0.0.1:7101 differs from node 1's address 127.0.0.1:7100"), "{text}");
    let text = message(resolve_with(&["--cores", "3"]));
    assert!(text.contains("--cores 3 differs from node 1's core count 2"), "{text}");
    assert!(message(resolve_with(&["--id", "0"])).contains("--id 0 is out of range"));
}

#[test]
fn ports_must_fit_and_must_not_collide_on_one_host() {
    let text = message(resolve_with(&["--initial-cluster", "1=127.0.0.1:7100/2,2=127.0.0.1:7101/2"]));
    assert_eq!(text, "nodes 1 and 2 would both listen on 127.0.0.1:7101 (core i listens on base port + i)");
    // Another host may use the same ports.
    assert!(resolve_with(&["--initial-cluster", "1=127.0.0.1:7100/2,2=127.0.0.2:7100/2"]).is_ok());
    let text = message(resolve_with(&["--listen", "h:65535", "--initial-cluster", "1=h:65535/2"]));
    assert!(text.contains("node 1 at h:65535 with 2 cores needs ports past 65535"), "{text}");
    let text = message(resolve_with(&["--listen", "127.0.0.1"]));
    assert!(text.contains("--listen `127.0.0.1` is not HOST:PORT"), "{text}");
}

#[test]
fn placement_and_tunables_are_checked() {
    let text = message(resolve_with(&["--replicas", "4"]));
    assert!(text.contains("replicas must be 1 to 7 and at most the node count 3, got 4"), "{text}");
    assert!(message(resolve_with(&["--shards", "0"])).contains("shard count must be 1"));
    let text = message(resolve_with(&["--election-timeout-ticks", "5"]));
    assert!(text.contains("election_timeout_ticks must exceed heartbeat_interval_ticks"), "{text}");
    assert!(message(resolve_with(&["--tick-ms", "0"])).contains("--tick-ms 0 is out of range"));
    assert!(message(resolve_with(&["--wal-segment-bytes", "5000"])).contains("invalid --wal-segment-bytes"));
    assert!(message(resolve_with(&["--history-versions-max", "0"])).contains("--history-versions-max 0"));
    assert!(message(resolve_with(&["--value-bytes-max", "0"])).contains("--value-bytes-max 0"));
    assert!(message(resolve_with(&["--log", "foo=nonsense"])).contains("invalid --log filter `foo=nonsense`"));
    let c = resolve_with(&["--replicas", "1", "--io", "buffered", "--spin", "--lease-reads=true"]).unwrap();
    assert_eq!((c.replicas, c.io_mode, c.spin, c.lease_reads), (1, IoMode::Buffered, true, true));
    assert!(c.raft_config().lease_read);
    assert_eq!(resolve_with(&[]).unwrap().txn_policy, corekv_rpc::txn::Policy::WoundWait);
    let c = resolve_with(&["--txn-policy", "wait-die"]).unwrap();
    assert_eq!(c.txn_policy, corekv_rpc::txn::Policy::WaitDie);
    assert!(c.to_toml().contains("txn_policy = \"wait-die\""), "{}", c.to_toml());
    assert!(Cli::try_parse_from(["corekv-server", "--txn-policy", "wound_wait"]).is_err());
}

#[test]
fn the_cluster_id_changes_with_the_founding_configuration() {
    let base = resolve_with(&[]).unwrap().cluster_id;
    assert_ne!(base, resolve_with(&["--cluster-name", "prod"]).unwrap().cluster_id);
    assert_ne!(base, resolve_with(&["--shards", "32"]).unwrap().cluster_id);
    // Every founding node computes the same id, whatever the entry order and the
    // node's own defaults.
    let same = resolve_args(&[
        "--id=3",
        "--data-dir=/d",
        "--listen=127.0.0.1:7300",
        "--cores=2",
        "--initial-cluster=3=127.0.0.1:7300,2=127.0.0.1:7200/2,1=127.0.0.1:7100",
    ]);
    assert_eq!(same.unwrap().cluster_id, base);
}

#[test]
fn the_file_fills_what_flags_leave_out_and_flags_win() {
    let text = format!(
        "id = 1\ndata_dir = \"/data\"\nlisten = \"127.0.0.1:7100\"\ncores = 2\ninitial_cluster = \"{THREE}\"\n\
         shards = 16\nio = \"buffered\"\nlog = \"debug\"\n"
    );
    let file = FileConfig::parse(Path::new("node.toml"), &text).unwrap();
    let c = ServerConfig::resolve(&cli(&["--shards", "8"]), &file, None).unwrap();
    assert_eq!((c.shards, c.io_mode, c.log.as_str()), (8, IoMode::Buffered, "debug"));
    assert_eq!(c.data_dir, PathBuf::from("/data"));
    // RUST_LOG beats the file; the flag beats RUST_LOG.
    assert_eq!(ServerConfig::resolve(&cli(&[]), &file, Some("warn")).unwrap().log, "warn");
    assert_eq!(ServerConfig::resolve(&cli(&["--log", "trace"]), &file, Some("warn")).unwrap().log, "trace");
}

#[test]
fn an_unknown_key_in_the_file_is_named_with_its_line() {
    let e = FileConfig::parse(Path::new("node.toml"), "id = 1\nshard = 8\n").unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("config file node.toml, line 2: unknown field `shard`"), "{text}");
    assert!(!text.contains('\n'));
    let e = FileConfig::parse(Path::new("n.toml"), "cores = \"two\"\n").unwrap_err();
    assert!(e.to_string().starts_with("config file n.toml, line 1: invalid type"), "{e}");
    // The WAL's error message names the old key; it still works.
    let file = FileConfig::parse(Path::new("n.toml"), "wal_io_mode = \"buffered\"\n").unwrap();
    assert_eq!(file.io, Some(IoModeName::Buffered));
}

#[test]
fn the_printed_config_reads_back_as_the_same_config() {
    let c =
        resolve_with(&["--cluster-name", "x", "--io", "buffered", "--tick-ms", "5", "--txn-policy", "occ"]).unwrap();
    let text = c.to_toml();
    assert!(text.starts_with(&format!("# corekv-server configuration; cluster_id = {:#018x}\n", c.cluster_id)));
    let file = FileConfig::parse(Path::new("dump.toml"), &text).unwrap();
    assert_eq!(ServerConfig::resolve(&Cli::default(), &file, None).unwrap(), c);
}

#[test]
fn a_fresh_data_dir_gets_its_identity_and_core_dirs() {
    let dir = temp_dir("fresh");
    let mut args = base_args(dir.to_str().unwrap());
    args.push("--replicas=1".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let c = resolve_args(&args).unwrap();
    assert_eq!(prepare_data_dir(&c).unwrap(), DataDirState::Fresh);
    let text = std::fs::read_to_string(dir.join(CLUSTER_ID_FILE)).unwrap();
    assert_eq!(text, format!("cluster_id={:#018x}\nnode_id=1\ncores=2\n", c.cluster_id));
    for core in 0..2 {
        assert!(core_dir(&dir, core).join("wal").is_dir() && core_dir(&dir, core).join("snap").is_dir());
    }
    assert!(!dir.join("cluster.id.tmp").exists());
    assert_eq!(prepare_data_dir(&c).unwrap(), DataDirState::Existing);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_data_dir_of_another_cluster_node_or_core_count_is_refused() {
    let dir = temp_dir("foreign");
    let path = dir.to_str().unwrap().to_string();
    let mut args = base_args(&path);
    args.extend(["--cluster-name".to_string(), "a".to_string()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let mine = resolve_args(&a).unwrap();
    prepare_data_dir(&mine).unwrap();

    let other = resolve_with(&["--data-dir", &path, "--cluster-name", "b"]).unwrap();
    let text = prepare_data_dir(&other).unwrap_err().to_string();
    let expected = format!(
        "data dir {path} belongs to cluster {:#018x} node 1 with 2 cores, not cluster {:#018x} node 1 with 2 cores",
        mine.cluster_id, other.cluster_id
    );
    assert_eq!(text, expected);

    let other_node = ServerConfig { id: 2, ..mine.clone() };
    let text = prepare_data_dir(&other_node).unwrap_err().to_string();
    assert!(text.contains("node 1 with 2 cores, not cluster") && text.contains("node 2 with 2 cores"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_garbled_identity_file_is_named() {
    let dir = temp_dir("garbled");
    std::fs::create_dir_all(&dir).unwrap();
    let c = resolve_with(&["--data-dir", dir.to_str().unwrap()]).unwrap();
    for (content, reason) in [
        ("cluster_id=12\nnode_id=1\ncores=2\n", "cluster_id `12` is not a hex number"),
        ("cluster_id=0x1\nnode=1\ncores=2\n", "expected `node_id=…`, found `node=1`"),
        ("cluster_id=0x1\nnode_id=1\n", "no `cores=` line"),
        ("cluster_id=0x1\nnode_id=1\ncores=2\nmore\n", "unexpected line `more`"),
    ] {
        std::fs::write(dir.join(CLUSTER_ID_FILE), content).unwrap();
        let text = prepare_data_dir(&c).unwrap_err().to_string();
        let file = dir.join(CLUSTER_ID_FILE);
        assert!(text.starts_with(&format!("{} is garbled: {reason}", file.display())), "{text}");
        assert!(!text.contains('\n'));
    }
    std::fs::write(dir.join(CLUSTER_ID_FILE), [0xff, 0xfe]).unwrap();
    assert!(prepare_data_dir(&c).unwrap_err().to_string().contains("not UTF-8"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn data_without_an_identity_file_is_not_claimed() {
    let dir = temp_dir("orphan");
    let c = resolve_with(&["--data-dir", dir.to_str().unwrap()]).unwrap();
    let wal = core_dir(&dir, 1).join("wal");
    std::fs::create_dir_all(&wal).unwrap();
    std::fs::write(wal.join("00000000000000000001.wal"), b"x").unwrap();
    let text = prepare_data_dir(&c).unwrap_err().to_string();
    assert!(text.starts_with(&format!("{} holds files but the data dir has no cluster.id", wal.display())), "{text}");
    assert!(!dir.join(CLUSTER_ID_FILE).exists());
    // Empty core dirs (a first start cut short) are fine.
    std::fs::remove_file(wal.join("00000000000000000001.wal")).unwrap();
    assert_eq!(prepare_data_dir(&c).unwrap(), DataDirState::Fresh);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_identity_file_round_trips() {
    let id = DataDirIdentity { cluster_id: u64::MAX, node_id: 9, cores: 256 };
    assert_eq!(DataDirIdentity::parse(&id.to_file_text()), Ok(id));
}
