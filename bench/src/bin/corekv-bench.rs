//! `corekv-bench`: the load generator. See `corekv-bench --help`.
//!
//! Exit codes: 0 the run completed (and with `--check`, the history is
//! linearizable); 1 `--check` found a non-linearizable history; 2 usage or invalid
//! input; 3 the target could not be reached or `--check` ran out of budget.
//! `compare` exits 0 when every driver check held, 1 when one failed, 2 on bad
//! input, 3 when a system could not be started or reached.

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use corekv_bench::compare::{self, System};
use corekv_bench::corekv::{CorekvDriver, Glommio};
use corekv_bench::report::{Report, ServerFigures};
use corekv_bench::runner::{self, Pacing, Shared, Window};
use corekv_bench::txn_loop::TxnHistory;
use corekv_bench::workload::{Kind, Spec};
use corekv_rpc::client::{Client, ClientConfig, ClusterStatus, parse_cluster};
use corekv_rpc::node::CoreStats;
use corekv_tools::history::Verdict;
use corekv_tools::launcher::{LaunchOptions, LocalCluster};

/// Concurrency of the load phase.
const LOAD_CONCURRENCY: usize = 64;

#[derive(Debug, Parser)]
#[command(
    name = "corekv-bench",
    version,
    about = "corekv load generator: YCSB A-F and etcd's op-guide put/get, closed or open loop",
    long_about = "corekv load generator. `corekv-bench --local 3` starts a 3-node cluster on loopback, \
                  loads it, runs YCSB-A for 10 s after a 2 s warm-up, prints a table and stops the cluster.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// A peer system instead of corekv: etcd://HOST:PORT[,HOST:PORT...] or
    /// redis://HOST:PORT (built with `--features peers`).
    #[arg(long, value_name = "URL", conflicts_with = "local")]
    target: Option<String>,
    /// Connections to a --target (default: etcd one per 10 clients, as etcd's
    /// benchmark tool; redis one per client).
    #[arg(long, value_name = "N", requires = "target")]
    conns: Option<usize>,
    /// A running cluster: HOST:PORT[,HOST:PORT...] (any node's core-0 address).
    #[arg(long, env = "COREKV_CLUSTER", value_name = "ADDRS", conflicts_with = "local")]
    cluster: Option<String>,
    /// Start N corekv-server processes on loopback for the run, and stop them after.
    #[arg(long, value_name = "N")]
    local: Option<usize>,
    /// Cores per node of a --local cluster.
    #[arg(long, default_value_t = 2, requires = "local")]
    cores: u16,
    /// Replicas per shard of a --local cluster (default: min(3, N)).
    #[arg(long, requires = "local")]
    replicas: Option<usize>,
    /// Where a --local cluster keeps its data and logs (default: a fresh temp dir).
    #[arg(long, value_name = "DIR", requires = "local")]
    dir: Option<PathBuf>,
    /// Keep a --local cluster's data dir after the run.
    #[arg(long, requires = "local")]
    keep: bool,
    /// The workload: ycsb-a ... ycsb-f, put, get.
    #[arg(long, short = 'w', default_value = "ycsb-a")]
    workload: Kind,
    #[command(flatten)]
    sizes: SizeArgs,
    /// Closed-loop clients (each its own client id and connections).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Requests in flight per client.
    #[arg(long, default_value_t = 1)]
    inflight: usize,
    /// Open loop: offered operations per second, all clients together (latency
    /// counts from the intended send time).
    #[arg(long, value_name = "OPS")]
    rate: Option<f64>,
    /// Length of the measured run (e.g. 10s, 500ms, 2m; a bare number is seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Warm-up before the measured run (run but not counted).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Seed of the workload's random choices (same seed, same operations).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Per-request deadline of the client.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Skip the load phase (the records are already there).
    #[arg(long)]
    no_load: bool,
    /// Write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Record every operation (load phase included) as one JSON line in FILE
    /// (schema: docs/HISTORY.md).
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// Check the recorded history for linearizability after the run (records to a
    /// temp file when --history is not given).
    #[arg(long)]
    check: bool,
    /// A scenario instead of a workload run. `join`: a --local cluster (default 3
    /// nodes) under a 50/50 read/write load; a node joins at --join-at and the
    /// cluster rebalances onto it; prints ops/s per second, the time to balance
    /// and bytes moved against the minimal bytes (--plot draws ops/s).
    #[arg(long, value_enum, value_name = "NAME")]
    scenario: Option<Scenario>,
    /// With --scenario join: when the node joins [default: a third of --duration].
    #[arg(long, value_parser = parse_duration, requires = "scenario")]
    join_at: Option<Duration>,
    /// With --scenario join: the servers' --move-rate, bytes per second per core.
    #[arg(long, default_value_t = 64 << 20, requires = "scenario")]
    move_rate: u64,
    /// With --scenario join: shards of the cluster.
    #[arg(long, default_value_t = 16, requires = "scenario")]
    shards: u32,
    /// With --scenario join: draw ops/s per second into this SVG file.
    #[arg(long, value_name = "FILE.svg", requires = "scenario")]
    plot: Option<PathBuf>,
}

/// The scenarios of `--scenario`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// A node joins mid-run.
    Join,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compare corekv with etcd and Redis on this machine: starts each system on
    /// free loopback ports (installing etcd-server and redis-server with apt-get
    /// when missing), runs the same workload against each, one at a time, and
    /// prints a markdown table (built with `--features peers`).
    Compare(CompareCli),
    /// Transactions under contention: each reads K accounts picked by a zipfian
    /// and moves money from the first to the others, under one policy, from
    /// closed-loop clients; prints committed txns/s, aborts by reason, retries
    /// per commit and latency (retries included), and checks the bank's total.
    Bank(BankCli),
    /// The contention sweep: θ in {0, 0.6, 0.8, 0.9, 0.99} × keys per transaction
    /// {4, 16} × policy {no-wait, wait-die, wound-wait, occ}, one table.
    SweepContention(SweepCli),
    /// YCSB operations grouped --ops-per-txn to a transaction (reads and updates
    /// or read-modify-writes on zipfian keys), retried while aborted; prints the
    /// same figures as `bank`. `--plain` runs the same operations without
    /// transactions.
    #[command(name = "ycsb-t")]
    YcsbT(YcsbTCli),
}

/// Where and how hard a contention run goes.
#[derive(Debug, clap::Args)]
struct ContentionArgs {
    /// Start a local cluster of N nodes for the run.
    #[arg(long, value_name = "N", conflicts_with = "cluster")]
    local: Option<usize>,
    /// A running corekv cluster: HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "COREKV_CLUSTER", value_name = "ADDRS")]
    cluster: Option<String>,
    /// Cores per local node.
    #[arg(long, default_value_t = 2)]
    cores: u16,
    /// Closed-loop clients (threads), one transaction in flight each.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Measured length of each run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Warm-up of each run.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Deadline of each transaction, retries included.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Seed of the account choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, clap::Args)]
struct BankCli {
    #[command(flatten)]
    target: ContentionArgs,
    /// Accounts.
    #[arg(long, default_value_t = 1000)]
    accounts: u64,
    /// A read-only audit of every account this often while the clients run (0:
    /// only the one at the end).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    audit_every: Duration,
    /// Record every transaction attempt (the audits' included) as one JSON line
    /// in FILE (schema: docs/HISTORY.md).
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// Check the recorded history for serializability after the run (records
    /// to a temp file when --history is not given).
    #[arg(long)]
    check: bool,
    /// The conflict policy: wound-wait, wait-die, no-wait or occ.
    #[arg(long, value_enum, default_value = "wound-wait")]
    policy: corekv_engine::config::TxnPolicyName,
    /// The zipfian constant of the account choice (0: uniform).
    #[arg(long, default_value_t = 0.99)]
    theta: f64,
    /// Accounts each transaction reads and writes (2: a transfer).
    #[arg(long, default_value_t = 2)]
    keys_per_txn: usize,
}

#[derive(Debug, clap::Args)]
struct SweepCli {
    #[command(flatten)]
    target: ContentionArgs,
    /// Accounts.
    #[arg(long, default_value_t = 1000)]
    accounts: u64,
    /// Also draw committed txns/s against θ, one curve per policy and keys per
    /// transaction, into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct YcsbTCli {
    #[command(flatten)]
    target: ContentionArgs,
    #[command(flatten)]
    sizes: SizeArgs,
    /// The conflict policy: wound-wait, wait-die, no-wait or occ.
    #[arg(long, value_enum, default_value = "wound-wait")]
    policy: corekv_engine::config::TxnPolicyName,
    /// YCSB operations per transaction.
    #[arg(long, default_value_t = corekv_bench::ycsb_t::OPS_PER_TXN_DEFAULT)]
    ops_per_txn: usize,
    /// The fraction of operations that read; the others update.
    #[arg(long, default_value_t = corekv_bench::ycsb_t::READ_PROPORTION_DEFAULT)]
    read_proportion: f64,
    /// The operations that do not only read are read-modify-writes (read for
    /// update, then write, as YCSB-F) instead of blind updates.
    #[arg(long)]
    rmw: bool,
    /// Run the same operations without transactions, each its own request (the
    /// baseline a transaction's cost is measured against).
    #[arg(long, conflicts_with = "history")]
    plain: bool,
    /// Skip the load phase (the records are already there).
    #[arg(long)]
    no_load: bool,
    /// Record every transaction attempt as one JSON line in FILE (schema:
    /// docs/HISTORY.md).
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// Check the recorded history for serializability after the run (records
    /// to a temp file when --history is not given).
    #[arg(long, conflicts_with = "plain")]
    check: bool,
}

#[derive(Debug, clap::Args)]
struct CompareCli {
    /// The workload: put (etcd's op guide, the default), get, ycsb-a ... ycsb-f,
    /// or bank (transfers between two zipfian-picked accounts: corekv
    /// transactions, etcd Txn on mod revisions, Redis WATCH/MULTI/EXEC).
    #[arg(long, short = 'w', default_value = "put")]
    workload: String,
    /// bank: accounts.
    #[arg(long, default_value_t = 1000)]
    accounts: u64,
    /// bank: corekv's conflict policy.
    #[arg(long, value_enum, default_value = "wound-wait")]
    policy: corekv_engine::config::TxnPolicyName,
    #[command(flatten)]
    sizes: SizeArgs,
    /// Closed-loop clients, one request in flight each, for every system.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// etcd connections (default: one per 10 clients).
    #[arg(long, value_name = "N")]
    conns: Option<usize>,
    /// Measured length of each run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Warm-up of each run.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Repetitions per system (medians with min–max).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Seed of the workload's random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Per-request deadline.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Cores per corekv node.
    #[arg(long, default_value_t = 2)]
    cores: u16,
    /// Systems to run, comma-separated: etcd-3, corekv-3, corekv-1, redis-fsync, redis-memory.
    #[arg(long, value_delimiter = ',', default_value = "etcd-3,corekv-3,corekv-1,redis-fsync,redis-memory")]
    systems: Vec<System>,
    /// Where data dirs and logs go (default: a fresh temp dir, removed afterwards).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep the data dirs and logs.
    #[arg(long)]
    keep: bool,
    /// Also sweep open-loop offered rates per system (a quarter of its closed-loop
    /// throughput to past saturation) and draw throughput against p99 into this
    /// SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

/// The key space and value sizes, the same for a run and a comparison.
#[derive(Debug, clap::Args)]
struct SizeArgs {
    /// Records loaded before the run (YCSB), or the key space of put/get
    /// (default: 10000 for YCSB, 100000 for put/get).
    #[arg(long, value_name = "N")]
    keys: Option<u64>,
    /// Bytes per value (default: 1000 for YCSB's records, 256 for put/get).
    #[arg(long, value_name = "BYTES")]
    value_size: Option<usize>,
    /// The zipfian constant of YCSB's key choice.
    #[arg(long, default_value_t = corekv_bench::workload::ZIPFIAN_THETA_DEFAULT)]
    theta: f64,
}

impl SizeArgs {
    /// The workload `kind` at these sizes, checked.
    fn spec(&self, kind: Kind) -> Result<Spec, String> {
        let records = self.keys.unwrap_or_else(|| runner::default_records(kind));
        let spec = Spec {
            value_bytes: self.value_size.unwrap_or_else(|| kind.default_value_bytes()),
            theta: self.theta,
            ..Spec::new(kind, records)
        };
        spec.validate().map(|()| spec)
    }
}

/// `10s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    corekv_rpc::duration::parse_duration(text)
}

/// `--scenario join`: see `corekv_bench::join`.
fn join_main(cli: &Cli) -> ExitCode {
    if cli.cluster.is_some() || cli.target.is_some() {
        return usage(
            "--scenario join starts its own cluster: give --local N (or nothing for 3), not --cluster/--target",
        );
    }
    let opts = corekv_bench::join::JoinOptions {
        nodes: cli.local.unwrap_or(3),
        cores: cli.cores,
        shards: cli.shards,
        records: cli.sizes.keys.unwrap_or(50_000),
        value_size: cli.sizes.value_size.unwrap_or(1000),
        clients: cli.clients,
        duration: cli.duration,
        join_at: cli.join_at.unwrap_or(cli.duration / 3),
        move_rate: cli.move_rate,
        timeout: cli.timeout,
        seed: cli.seed,
        plot: cli.plot.clone(),
        dir: cli.dir.clone(),
        keep: cli.keep,
    };
    if opts.join_at >= opts.duration {
        return usage("--join-at must fall inside --duration");
    }
    eprintln!(
        "corekv-bench: {} nodes, {} records of {} bytes, {} clients; node {} joins at {:?} of {:?}",
        opts.nodes,
        opts.records,
        opts.value_size,
        opts.clients,
        opts.nodes + 1,
        opts.join_at,
        opts.duration
    );
    match corekv_bench::join::run(&opts) {
        Ok(report) => {
            for line in report.lines(opts.move_rate) {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("corekv-bench: {e}");
            ExitCode::from(3)
        }
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("corekv-bench: {message}");
    ExitCode::from(2)
}

/// The one line a build without the peer drivers answers.
#[cfg(not(feature = "peers"))]
const NO_PEERS: &str = "the peer drivers are not in this build: rebuild with \
                        `cargo build --release -p corekv-bench --features peers`";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Compare(compare)) => return compare_main(compare),
        Some(Command::Bank(bank)) => {
            let cell = (bank.policy.into(), bank.theta, bank.keys_per_txn);
            let audit_every = (!bank.audit_every.is_zero()).then_some(bank.audit_every);
            let history = HistoryFile::new(bank.history.as_deref(), bank.check);
            return contention_main(&bank.target, bank.accounts, audit_every, &[cell], &history, None);
        }
        Some(Command::YcsbT(ycsb)) => return ycsb_t_main(ycsb),
        Some(Command::SweepContention(sweep)) => {
            let mut cells = Vec::new();
            for theta in [0.0, 0.6, 0.8, 0.9, 0.99] {
                for keys in [4, 16] {
                    for policy in corekv_rpc::txn::Policy::ALL {
                        cells.push((policy, theta, keys));
                    }
                }
            }
            let plot = sweep.plot.as_deref();
            return contention_main(&sweep.target, sweep.accounts, None, &cells, &HistoryFile::none(), plot);
        }
        None => {}
    }
    if cli.scenario == Some(Scenario::Join) {
        return join_main(&cli);
    }
    let spec = match cli.sizes.spec(cli.workload) {
        Ok(spec) => spec,
        Err(e) => return usage(&e),
    };
    if cli.clients == 0 || cli.inflight == 0 {
        return usage("--clients and --inflight must be at least 1");
    }
    if cli.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return usage("--rate must be a positive number of operations per second");
    }
    if cli.duration.is_zero() {
        return usage("--duration must be above zero");
    }
    if let Some(url) = &cli.target {
        return target_main(&cli, spec, url);
    }
    let (addrs, cluster, target) = match (&cli.cluster, cli.local) {
        (Some(list), None) => match parse_cluster(list) {
            Ok(addrs) => (addrs, None, format!("corekv at {list}")),
            Err(e) => return usage(&e),
        },
        (None, Some(nodes)) => {
            let options = LaunchOptions {
                nodes,
                cores: cli.cores,
                replicas: cli.replicas,
                data_dir: cli.dir.clone(),
                keep: cli.keep,
                build_if_missing: true,
                ..LaunchOptions::default()
            };
            let replicas = options.replicas();
            eprintln!("corekv-bench: starting {nodes} corekv-server processes ({} cores each) ...", cli.cores);
            match LocalCluster::start(options) {
                Ok(cluster) => {
                    let target = format!("corekv {nodes} nodes × {} cores, {replicas} replicas", cli.cores);
                    (cluster.addrs(), Some(cluster), target)
                }
                Err(e) => {
                    eprintln!("corekv-bench: cannot start the local cluster: {e}");
                    return ExitCode::from(3);
                }
            }
        }
        _ => {
            return usage(
                "give a target: --local N (start a cluster), --cluster ADDRS (a running one) or --target URL (etcd, redis)",
            );
        }
    };
    let history_path = history_path(&cli);
    let history_file = match history_path.as_ref().map(File::create).transpose() {
        Ok(file) => file,
        Err(e) => return usage(&format!("cannot create the history file: {e}")),
    };
    let outcome = corekv_engine::runtime::run_local("corekv-bench", run(&cli, spec, addrs, target, history_file));
    drop(cluster);
    let report = match outcome {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => {
            eprintln!("corekv-bench: {e}");
            return ExitCode::from(3);
        }
        Err(e) => {
            eprintln!("corekv-bench: {e}");
            return ExitCode::from(3);
        }
    };
    finish(&cli, &report, history_path)
}

/// The cluster a transaction workload runs against: a running one, or a local
/// one started now (stopped when the second value is dropped); the exit code
/// when neither can be had.
fn contention_cluster(args: &ContentionArgs) -> Result<(ClientConfig, Option<LocalCluster>), ExitCode> {
    let (addrs, cluster) = match (&args.cluster, args.local) {
        (Some(list), None) => match parse_cluster(list) {
            Ok(addrs) => (addrs, None),
            Err(e) => return Err(usage(&e)),
        },
        (None, Some(nodes)) => {
            let options =
                LaunchOptions { nodes, cores: args.cores, build_if_missing: true, ..LaunchOptions::default() };
            eprintln!("corekv-bench: starting {nodes} corekv-server processes ({} cores each) ...", args.cores);
            match LocalCluster::start(options) {
                Ok(cluster) => (cluster.addrs(), Some(cluster)),
                Err(e) => {
                    eprintln!("corekv-bench: cannot start the local cluster: {e}");
                    return Err(ExitCode::from(3));
                }
            }
        }
        _ => return Err(usage("give a target: --local N (start a cluster) or --cluster ADDRS (a running one)")),
    };
    let mut config = ClientConfig::new(addrs);
    config.deadline = args.timeout;
    Ok((config, cluster))
}

/// The `--history` file of a transaction workload, its clock started now.
fn txn_history(path: Option<&std::path::Path>) -> Result<Option<Arc<TxnHistory>>, ExitCode> {
    path.map(TxnHistory::create).transpose().map_err(|e| usage(&e))
}

/// Runs every (policy, θ, keys per transaction) cell on one cluster and prints
/// the table; exit 1 when an audit found the bank's total changed.
fn contention_main(
    args: &ContentionArgs,
    accounts: u64,
    audit_every: Option<Duration>,
    cells: &[(corekv_rpc::txn::Policy, f64, usize)],
    history_file: &HistoryFile,
    plot: Option<&std::path::Path>,
) -> ExitCode {
    use corekv_bench::bank::{BankSpec, run_bank, table};
    let (config, _cluster) = match contention_cluster(args) {
        Ok(target) => target,
        Err(code) => return code,
    };
    let history = match txn_history(history_file.path()) {
        Ok(history) => history,
        Err(code) => return code,
    };
    let mut reports = Vec::new();
    for &(policy, theta, keys_per_txn) in cells {
        let spec = BankSpec {
            accounts,
            keys_per_txn,
            theta,
            policy,
            clients: args.clients,
            duration: args.duration,
            warmup: args.warmup,
            seed: args.seed,
            audit_every,
        };
        if let Err(e) = spec.validate() {
            return usage(&e);
        }
        eprintln!("corekv-bench: {policy}, θ {theta}, {keys_per_txn} keys per transaction ...");
        match run_bank(&config, &spec, history.as_ref()) {
            Ok(report) => {
                if !report.audits.is_empty() || report.audit_errors > 0 {
                    eprintln!(
                        "corekv-bench: {} audits while the clients ran, totals {:?}, {} unanswered",
                        report.audits.len(),
                        report.audits.iter().collect::<std::collections::BTreeSet<_>>(),
                        report.audit_errors
                    );
                }
                if !report.balanced() {
                    eprintln!("corekv-bench: the bank's total changed (final audit {})", report.audit_total);
                    print!("{}", table(&[report]));
                    return ExitCode::from(1);
                }
                reports.push(report);
            }
            Err(e) => {
                eprintln!("corekv-bench: {e}");
                return ExitCode::from(3);
            }
        }
    }
    print!("{}", table(&reports));
    if let Some(path) = plot {
        let axes = corekv_bench::plot::Axes {
            title: "bank under contention: committed txns/s against θ",
            x: "zipfian θ of the account choice",
            y: "committed txns/s (log)",
            x_min: 0.0,
        };
        if let Err(e) = corekv_bench::plot::draw_log_y(path, axes, &corekv_bench::bank::curves_by_theta(&reports)) {
            eprintln!("corekv-bench: {e}");
            return ExitCode::from(3);
        }
        eprintln!("corekv-bench: drew {}", path.display());
    }
    finish_txn_history(history.as_deref(), history_file)
}

/// Where a transaction workload records its history: the `--history` file, a
/// temp file when only `--check` asks for one, or nowhere.
struct HistoryFile {
    path: Option<PathBuf>,
    check: bool,
    temporary: bool,
}

impl HistoryFile {
    fn new(history: Option<&std::path::Path>, check: bool) -> HistoryFile {
        match (history, check) {
            (Some(path), _) => HistoryFile { path: Some(path.to_path_buf()), check, temporary: false },
            (None, true) => HistoryFile {
                path: Some(std::env::temp_dir().join(format!("corekv-bench-txns-{}.jsonl", std::process::id()))),
                check,
                temporary: true,
            },
            (None, false) => HistoryFile::none(),
        }
    }

    fn none() -> HistoryFile {
        HistoryFile { path: None, check: false, temporary: false }
    }

    fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }
}

/// Flushes a transaction history (exit 3 when it could not be written), then
/// runs `--check` on it.
fn finish_txn_history(history: Option<&TxnHistory>, file: &HistoryFile) -> ExitCode {
    if let Err(e) = history.map(TxnHistory::finish).transpose() {
        eprintln!("corekv-bench: {e}");
        return ExitCode::from(3);
    }
    let Some(path) = file.path() else { return ExitCode::SUCCESS };
    if !file.check {
        return ExitCode::SUCCESS;
    }
    let code = check(path);
    if file.temporary {
        let _ = std::fs::remove_file(path);
    }
    code
}

/// `corekv-bench ycsb-t`: load, run, print the table.
fn ycsb_t_main(c: &YcsbTCli) -> ExitCode {
    use corekv_bench::txn_loop::LoopSpec;
    use corekv_bench::ycsb_t::{YcsbTSpec, load, run_ycsb_t, table};
    let spec = YcsbTSpec {
        records: c.sizes.keys.unwrap_or_else(|| runner::default_records(Kind::A)),
        value_bytes: c.sizes.value_size.unwrap_or_else(|| Kind::A.default_value_bytes()),
        theta: c.sizes.theta,
        ops_per_txn: c.ops_per_txn,
        read_proportion: c.read_proportion,
        rmw: c.rmw,
        plain: c.plain,
        run: LoopSpec {
            clients: c.target.clients,
            policy: c.policy.into(),
            duration: c.target.duration,
            warmup: c.target.warmup,
            seed: c.target.seed,
        },
    };
    if let Err(e) = spec.validate() {
        return usage(&e);
    }
    let (config, _cluster) = match contention_cluster(&c.target) {
        Ok(target) => target,
        Err(code) => return code,
    };
    if !c.no_load {
        let started = Instant::now();
        match load(&config, &spec) {
            Ok(failed) => eprintln!(
                "corekv-bench: loaded {} records of {} bytes in {:.1} s ({failed} errors)",
                spec.records,
                spec.value_bytes,
                started.elapsed().as_secs_f64()
            ),
            Err(e) => {
                eprintln!("corekv-bench: {e}");
                return ExitCode::from(3);
            }
        }
    }
    let history_file = HistoryFile::new(c.history.as_deref(), c.check);
    let history = match txn_history(history_file.path()) {
        Ok(history) => history,
        Err(code) => return code,
    };
    eprintln!("corekv-bench: ycsb-t, {}, θ {}, {} ...", spec.mix(), spec.theta, spec.run.policy);
    match run_ycsb_t(&config, &spec, history.as_ref()) {
        Ok(report) => print!("{}", table(&[report])),
        Err(e) => {
            eprintln!("corekv-bench: {e}");
            return ExitCode::from(3);
        }
    }
    finish_txn_history(history.as_deref(), &history_file)
}

/// Prints `report`, writes its JSON, and runs `--check` on the history.
fn finish(cli: &Cli, report: &Report, history_path: Option<PathBuf>) -> ExitCode {
    print!("{}", report.table());
    if let Some(path) = &cli.json {
        let json = serde_json::to_string_pretty(report).expect("a report serializes");
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("corekv-bench: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    match (cli.check, history_path) {
        (true, Some(path)) => {
            let code = check(&path);
            if cli.history.is_none() {
                let _ = std::fs::remove_file(&path);
            }
            code
        }
        _ => ExitCode::SUCCESS,
    }
}

fn history_path(cli: &Cli) -> Option<PathBuf> {
    match (&cli.history, cli.check) {
        (Some(path), _) => Some(path.clone()),
        (None, true) => Some(std::env::temp_dir().join(format!("corekv-bench-history-{}.jsonl", std::process::id()))),
        (None, false) => None,
    }
}

/// `--target etcd://… | redis://…`: the same run against a peer system.
fn target_main(cli: &Cli, spec: Spec, url: &str) -> ExitCode {
    let target: corekv_bench::peers::Target = match url.parse() {
        Ok(target) => target,
        Err(e) => return usage(&e),
    };
    if cli.conns == Some(0) {
        return usage("--conns must be at least 1");
    }
    if let Err(e) = target.supports(spec.kind) {
        return usage(&e);
    }
    if matches!(target, corekv_bench::peers::Target::Redis(_)) && (cli.history.is_some() || cli.check) {
        return usage("--history and --check need versions, and Redis keeps none (etcd's revisions serve)");
    }
    #[cfg(not(feature = "peers"))]
    {
        usage(&format!("--target {target}: {NO_PEERS}"))
    }
    #[cfg(feature = "peers")]
    {
        use corekv_bench::peers::{Connect, Plan};
        let history_path = history_path(cli);
        let history = match history_path.as_ref().map(File::create).transpose() {
            Ok(file) => file,
            Err(e) => return usage(&format!("cannot create the history file: {e}")),
        };
        let plan = Plan {
            spec,
            pacing: Pacing { clients: cli.clients, inflight: cli.inflight, rate: cli.rate },
            warmup: cli.warmup,
            duration: cli.duration,
            seed: cli.seed,
            load: !cli.no_load,
        };
        match corekv_bench::peers::run(&target, &plan, Connect { conns: cli.conns, timeout: cli.timeout }, history) {
            Ok(run) => finish(cli, &run.report, history_path),
            Err(e) => {
                eprintln!("corekv-bench: {e}");
                ExitCode::from(3)
            }
        }
    }
}

/// `corekv-bench compare`.
fn compare_main(c: &CompareCli) -> ExitCode {
    let bank = c.workload.trim().eq_ignore_ascii_case("bank");
    let kind = if bank {
        Kind::Put
    } else {
        match c.workload.parse::<Kind>() {
            Ok(kind) => kind,
            Err(e) => return usage(&format!("{e}, or bank")),
        }
    };
    let spec = match c.sizes.spec(kind) {
        Ok(spec) => spec,
        Err(e) => return usage(&e),
    };
    if c.clients == 0 || c.reps == 0 || c.conns == Some(0) || c.duration.is_zero() || c.systems.is_empty() {
        return usage("--clients, --reps, --conns, --duration and --systems must not be zero or empty");
    }
    let options = compare::Options {
        spec,
        clients: c.clients,
        conns: c.conns,
        warmup: c.warmup,
        duration: c.duration,
        reps: c.reps,
        seed: c.seed,
        timeout: c.timeout,
        cores: c.cores,
        systems: c.systems.clone(),
        dir: c.dir.clone(),
        keep: c.keep,
        sweep: c.plot.is_some(),
    };
    if bank {
        if c.plot.is_some() {
            return usage("--plot sweeps open-loop rates of a key-value workload; bank runs closed loop only");
        }
        let spec = corekv_bench::bank::BankSpec {
            accounts: c.accounts,
            keys_per_txn: 2,
            theta: c.sizes.theta,
            policy: c.policy.into(),
            clients: c.clients,
            duration: c.duration,
            warmup: c.warmup,
            seed: c.seed,
            // The peers' bank audits once, at the end; so does corekv's here.
            audit_every: None,
        };
        if let Err(e) = spec.validate() {
            return usage(&e);
        }
        return compare_bank_main(&options, &spec);
    }
    #[cfg(not(feature = "peers"))]
    {
        let _ = options;
        usage(&format!("compare: {NO_PEERS}"))
    }
    #[cfg(feature = "peers")]
    match compare::run(&options) {
        Ok(results) => {
            print!("{}", results.markdown());
            if let Some(path) = &c.plot {
                let curves: Vec<corekv_bench::plot::Curve> = results
                    .sweeps
                    .iter()
                    .map(|(system, points)| corekv_bench::plot::Curve {
                        label: system.label().to_string(),
                        points: points.iter().map(|p| (p.achieved, p.p99_ms)).collect(),
                    })
                    .collect();
                let title = format!("{}: throughput against p99, open loop", options.spec.kind);
                match corekv_bench::plot::draw(path, &title, &curves) {
                    Ok(()) => eprintln!("corekv-bench compare: plot written to {}", path.display()),
                    Err(e) => {
                        eprintln!("corekv-bench compare: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            if results.checks_passed() {
                ExitCode::SUCCESS
            } else {
                eprintln!("corekv-bench compare: a driver check FAILED: the peer numbers above are not to be trusted");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("corekv-bench compare: {e}");
            ExitCode::from(3)
        }
    }
}

/// `corekv-bench compare --workload bank`.
fn compare_bank_main(options: &compare::Options, spec: &corekv_bench::bank::BankSpec) -> ExitCode {
    #[cfg(not(feature = "peers"))]
    {
        let _ = (options, spec);
        usage(&format!("compare: {NO_PEERS}"))
    }
    #[cfg(feature = "peers")]
    match corekv_bench::compare_bank::run(options, spec) {
        Ok(results) => {
            print!("{}", results.markdown());
            if results.checks_passed() {
                ExitCode::SUCCESS
            } else {
                eprintln!("corekv-bench compare: an audit found the bank's total changed");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("corekv-bench compare: {e}");
            ExitCode::from(3)
        }
    }
}

async fn run(
    cli: &Cli,
    spec: Spec,
    addrs: Vec<String>,
    target: String,
    history: Option<File>,
) -> Result<Report, String> {
    let mut config = ClientConfig::new(addrs);
    config.deadline = cli.timeout;
    let mut drivers = Vec::with_capacity(cli.clients);
    for _ in 0..cli.clients {
        let client = Client::connect(config.clone()).await.map_err(|e| format!("cannot reach the cluster: {e}"))?;
        drivers.push(CorekvDriver::new(client));
    }
    let probe = Client::connect(config.clone()).await.map_err(|e| format!("cannot reach the cluster: {e}"))?;
    let shared = Shared::new(history);
    let rt = Glommio;
    if spec.kind.needs_load() && !cli.no_load {
        let started = Instant::now();
        let loaded = runner::load(&drivers, &rt, &spec, LOAD_CONCURRENCY, cli.seed, &shared).await;
        eprintln!(
            "corekv-bench: loaded {} records of {} bytes in {:.1} s ({} errors)",
            loaded.ok(),
            spec.value_bytes,
            started.elapsed().as_secs_f64(),
            loaded.errors()
        );
    }
    let pacing = Pacing { clients: cli.clients, inflight: cli.inflight, rate: cli.rate };
    let start = Instant::now();
    let window = Window { start, warm_until: start + cli.warmup, end: start + cli.warmup + cli.duration };
    // The server counters at the start and the end of the measured window.
    let before_probe = probe.clone();
    let before = corekv_engine::runtime::spawn_local(async move {
        corekv_engine::runtime::sleep(cli_warmup(window)).await;
        counters(&before_probe.status().await)
    });
    runner::run(&drivers, &rt, &spec, pacing, window, cli.seed, &shared).await;
    let before = before.await;
    let after = counters(&probe.status().await);
    shared.finish_history()?;
    let recorder = shared.recorder();
    let server = Some(ServerFigures::from_counters(&before, &after, recorder.ok(), shared.writes_ok()));
    Ok(Report::new(
        target,
        spec.kind.name().to_string(),
        (cli.clients, cli.inflight, cli.rate),
        &recorder,
        cli.duration,
        server,
    ))
}

fn cli_warmup(window: Window) -> Duration {
    window.warm_until.saturating_duration_since(Instant::now())
}

fn counters(status: &ClusterStatus) -> Vec<CoreStats> {
    status.nodes.iter().flat_map(|n| &n.cores).filter_map(|c| c.stats).collect()
}

/// `--check`: both checkers' verdicts on the history at `path` (the same
/// checks as `corekv-ctl check-history`): linearizability of the register
/// lines, serializability of the transaction lines. Exit 0 when both pass, 1
/// on a violation, 3 when one could not decide, 2 when the file is unreadable.
fn check(path: &std::path::Path) -> ExitCode {
    let verdict = match corekv_tools::history::check_history_file(path) {
        Ok(verdict) => verdict,
        Err(e) => {
            eprintln!("corekv-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match &verdict.registers {
        Verdict::Linearizable { operations: 0, .. } => {}
        Verdict::Linearizable { operations, skipped } => {
            println!("check: linearizable ({operations} operations, {skipped} scans not checked)");
        }
        Verdict::NotLinearizable { key, history } => {
            println!("check: NOT linearizable: key {}; smallest failing history found:", String::from_utf8_lossy(key));
            for line in history {
                println!("  {line}");
            }
        }
        Verdict::Unknown { key, states_explored } => println!(
            "check: unknown: key {} still undecided after {states_explored} states (the search budget ran out: not a pass)",
            String::from_utf8_lossy(key)
        ),
    }
    if !matches!(&verdict.txns, corekv_tools::history::TxnVerdict::Serializable { transactions: 0, plain: 0, .. }) {
        for line in corekv_tools::history::describe_txns(&verdict.txns) {
            println!("check: transactions: {line}");
        }
    }
    ExitCode::from(verdict.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
