//! `corekv-ctl`'s command line: the clap types shared by a single command and by
//! each line of `shell`, the duration syntax of `--timeout`, and the one-line form
//! of a usage error.
//!
//! Keys and values arrive as `OsString`s and are taken as raw bytes (a non-UTF-8
//! argument is a valid key); shell lines are UTF-8 text split as a POSIX shell does.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Parser, Subcommand};
use corekv_rpc::kv::{SCAN_ITEMS_MAX, Version};

/// The environment variable `--cluster` falls back to.
pub const CLUSTER_ENV: &str = "COREKV_CLUSTER";
/// `--timeout` when none is given (DESIGN §6's default deadline).
pub const TIMEOUT_DEFAULT: &str = "5s";
/// Longest `--timeout` accepted: a request deadline, not a schedule (and an
/// `Instant` plus a huge duration would overflow).
pub const TIMEOUT_MAX: Duration = Duration::from_secs(24 * 3600);
/// The parsed [`TIMEOUT_DEFAULT`].
pub fn default_timeout() -> Duration {
    parse_duration(TIMEOUT_DEFAULT).expect("the default parses")
}

/// `scan --limit` when none is given.
pub const SCAN_LIMIT_DEFAULT: u32 = 100;
/// `local up --dir` and `local down|status --dir` when none is given: relative to
/// the working directory, on the disk the user works on (a tmpfs `/tmp` would
/// refuse the servers' direct I/O).
pub const LOCAL_DIR_DEFAULT: &str = "corekv-local";

/// The command line of `corekv-ctl`.
#[derive(Debug, Parser)]
#[command(
    name = "corekv-ctl",
    version,
    about = "corekv admin and data CLI",
    after_help = "Exit codes: 0 ok; 1 a definite negative (not found, version mismatch, compacted, a failed \
                  verify); 2 usage or invalid input; 3 unavailable or indeterminate (the outcome of a write is \
                  unknown). `shell` exits 0 when its input ends."
)]
pub struct Cli {
    /// Options that hold for every command (and every line of `shell`).
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The options accepted before or after the command.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// The cluster to talk to: core 0 address of one or more nodes, HOST:PORT[,HOST:PORT...].
    #[arg(long, global = true, env = CLUSTER_ENV, value_name = "ADDRS")]
    pub cluster: Option<String>,
    /// Print every result as one JSON object on one line.
    #[arg(long, global = true)]
    pub json: bool,
    /// Deadline of each request: 500ms, 5s, 2m, 1h (a bare number is seconds).
    #[arg(long, global = true, value_name = "DURATION", default_value = TIMEOUT_DEFAULT, value_parser = parse_duration)]
    pub timeout: Duration,
}

/// One command: what a `corekv-ctl` invocation or a `shell` line asks for.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Write VALUE as a new version of KEY; prints the new version.
    Put {
        /// The key (any bytes but empty; at most 4096 of them).
        key: OsString,
        /// The value.
        value: OsString,
    },
    /// Print KEY's newest value, or its newest at or below --at.
    Get {
        /// The key.
        key: OsString,
        /// Read the newest version at or below this one.
        #[arg(long, value_name = "VERSION")]
        at: Option<Version>,
        /// Print the version too.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Delete KEY (a tombstone with its own version); prints that version.
    Delete {
        /// The key.
        key: OsString,
    },
    /// Write VALUE only if KEY's current version is EXPECTED_VERSION (0: only if absent).
    Cas {
        /// The key.
        key: OsString,
        /// The version KEY must have now; 0 means absent or deleted.
        expected_version: Version,
        /// The value.
        value: OsString,
    },
    /// Print KEY's retained history, newest first (deletes marked).
    Versions {
        /// The key.
        key: OsString,
    },
    /// Print the live keys in [START, END) in order, with values and versions.
    Scan {
        /// First key (inclusive); "" starts at the beginning.
        start: OsString,
        /// End key (exclusive); "" means no end.
        end: OsString,
        /// Most keys to print.
        #[arg(long, value_name = "N", default_value_t = SCAN_LIMIT_DEFAULT,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(SCAN_ITEMS_MAX)))]
        limit: u32,
    },
    /// Nodes, cores and their counters, and every shard with its leader, term, commit and applied index and lag.
    Status,
    /// Shard placement: list every shard's replicas, move one.
    #[command(subcommand)]
    Shard(ShardCommand),
    /// The cluster's nodes: list them, drain one, remove one.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Ask the meta group to balance the placement now (also with automatic
    /// rebalancing off); with --dry-run, print the plan instead.
    Rebalance {
        /// Print the moves the planner would make, their bytes and the minimal
        /// bytes; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Answer once the placement is balanced and no move is under way.
        #[arg(long, conflicts_with = "dry_run")]
        wait: bool,
    },
    /// Read commands from standard input, one per line; one result line each.
    Shell,
    /// Offline write-ahead log tools (no cluster needed).
    #[command(subcommand)]
    Wal(WalCommand),
    /// Offline shard snapshot tools (no cluster needed).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// A cluster of background corekv-server processes on this machine (loopback).
    #[command(subcommand)]
    Local(LocalCommand),
    /// Check an operation history (corekv-bench --history FILE): register lines for
    /// linearizability (on failure, the smallest failing history of one key),
    /// transaction lines for serializability (strict among read-write ones; on
    /// failure, the anomaly and its transactions). Exit 0 both pass, 1 a violation,
    /// 3 unknown or undecided (not a pass).
    CheckHistory {
        /// The history file (JSON lines, docs/HISTORY.md).
        file: PathBuf,
    },
    /// Run OPS as one transaction, retried while aborted: `txn -- 'get a' 'put b 1' 'delete c'`.
    /// Prints the commit version, the start version, the attempts and every get's answer.
    Txn {
        /// How conflicts are settled [default: wound-wait].
        #[arg(long, value_enum, value_name = "POLICY")]
        policy: Option<PolicyArg>,
        /// The operations, each one argument: `get KEY`, `put KEY VALUE`, `delete KEY`.
        #[arg(last = true, required = true, value_name = "OPS")]
        ops: Vec<OsString>,
    },
    /// Shell only: open the shell's one transaction; get, scan, put and delete run
    /// in it until `commit` or `abort`. Prints its id and start version.
    Begin {
        /// How conflicts are settled [default: wound-wait].
        #[arg(long, value_enum, value_name = "POLICY", conflicts_with = "read_only")]
        policy: Option<PolicyArg>,
        /// Read one snapshot without locks; never aborts, cannot write.
        #[arg(long)]
        read_only: bool,
        /// With --read-only: the snapshot's version [default: at or above every version this shell has seen].
        #[arg(long, value_name = "VERSION", requires = "read_only")]
        at: Option<Version>,
    },
    /// Shell only: commit the open transaction; prints the version of every key it wrote.
    Commit,
    /// Shell only: abort the open transaction; its locks are released.
    Abort,
}

impl Command {
    /// The name of `begin`, `commit` or `abort`, which act on the shell's open
    /// transaction (so a single command has nothing to act on); `None` for the
    /// other commands.
    pub fn txn_control_name(&self) -> Option<&'static str> {
        match self {
            Command::Begin { .. } => Some("begin"),
            Command::Commit => Some("commit"),
            Command::Abort => Some("abort"),
            _ => None,
        }
    }
}

/// A transaction conflict policy on the command line: the server's own flag
/// spelling (`wound-wait`, `wait-die`, `no-wait`, `occ`), one enum for both.
pub use corekv_engine::config::TxnPolicyName as PolicyArg;

/// `corekv-ctl wal ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum WalCommand {
    /// Print segment headers, batches and records (a listing for people; no --json).
    Dump {
        /// A data dir, a core dir (`core-<i>`) or a wal dir.
        path: PathBuf,
    },
    /// Recover every WAL as a starting node would; report the first problem with file and offset.
    Verify {
        /// A data dir, a core dir (`core-<i>`) or a wal dir.
        path: PathBuf,
    },
}

/// `corekv-ctl snapshot ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum SnapshotCommand {
    /// Print snapshot headers and chunk lists (a listing for people; no --json).
    Dump {
        /// A data dir, a core dir, a snap dir or a snapshot file.
        path: PathBuf,
    },
    /// Check every chunk CRC and the end frame; report the first problem.
    Verify {
        /// A data dir, a core dir, a snap dir or a snapshot file.
        path: PathBuf,
    },
}

/// `corekv-ctl shard ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum ShardCommand {
    /// The map's epoch, and every shard's voters, learners and leader as its replicas
    /// report them (the meta group apart).
    List,
    /// Move shard SHARD's replica off node FROM onto node TO: TO joins as a learner,
    /// is sent a snapshot and the log, votes, and FROM leaves and deletes its copy;
    /// the shard serves throughout. With TO = FROM and --core, the replica moves
    /// to that core of its node (a hand-off: the old core stops and gives the new
    /// one its whole state). Answers once the map shows the move (with --wait:
    /// once it is done); past --timeout it answers `unavailable` and the move goes
    /// on.
    Move {
        /// The shard (`meta` for the meta group).
        shard: String,
        /// The node giving its replica up.
        #[arg(long, value_name = "NODE")]
        from: u64,
        /// The node taking it (FROM itself with --core: another core of FROM).
        #[arg(long, value_name = "NODE")]
        to: u64,
        /// TO's core that takes it [default: the one holding the fewest replicas; 0 for the meta group].
        #[arg(long, value_name = "CORE")]
        core: Option<u16>,
        /// Answer once the move is done (the source removed), not once it is accepted.
        #[arg(long)]
        wait: bool,
    },
}

/// `corekv-ctl node ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum NodeCommand {
    /// Every node of the map: address, cores, state (up, down, draining, dead,
    /// removed), and the shard replicas and leaderships it holds.
    List,
    /// Move every replica off NODE (it stays a member, holding nothing, until
    /// removed). Refused when too few up nodes would be left.
    Drain {
        /// The node.
        node: u64,
        /// Answer once the node holds no replica, not once the drain is accepted.
        #[arg(long)]
        wait: bool,
    },
    /// Remove NODE for good (its id is never reused): only after a drain, or with
    /// --force for a dead or unreachable node, whose replicas are re-created from
    /// the survivors.
    Remove {
        /// The node.
        node: u64,
        /// Remove it though it was not drained.
        #[arg(long)]
        force: bool,
        /// Answer once its replicas are re-created elsewhere too.
        #[arg(long)]
        wait: bool,
    },
}

/// `corekv-ctl local ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum LocalCommand {
    /// Start (or restart) a cluster in DIR and wait until every shard has a leader.
    Up(LocalUpArgs),
    /// Stop the cluster in DIR (SIGTERM, then SIGKILL after a grace period); data kept unless --purge.
    Down {
        /// The cluster's directory.
        #[arg(long, value_name = "DIR", default_value = LOCAL_DIR_DEFAULT)]
        dir: PathBuf,
        /// Also delete the cluster's data, logs and pid files.
        #[arg(long)]
        purge: bool,
    },
    /// Which nodes of the cluster in DIR run, with their addresses and pids.
    Status {
        /// The cluster's directory.
        #[arg(long, value_name = "DIR", default_value = LOCAL_DIR_DEFAULT)]
        dir: PathBuf,
    },
}

/// `corekv-ctl local up`'s options. Left out, they take the defaults for a new
/// cluster and the recorded values when DIR holds a stopped one.
#[derive(Debug, Clone, Args)]
pub struct LocalUpArgs {
    /// Nodes to start [default: 3].
    #[arg(long, value_name = "N")]
    pub nodes: Option<usize>,
    /// Where the nodes keep their data, logs and pid files.
    #[arg(long, value_name = "DIR", default_value = LOCAL_DIR_DEFAULT)]
    pub dir: PathBuf,
    /// Cores (executors) per node [default: 2].
    #[arg(long, value_name = "N")]
    pub cores: Option<u16>,
    /// Shards of the cluster [default: 64].
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
    /// Replicas per shard [default: min(3, nodes)].
    #[arg(long, value_name = "N")]
    pub replicas: Option<usize>,
    /// Extra arguments for every corekv-server, after `--` (e.g. `-- --io buffered`).
    #[arg(last = true, value_name = "SERVER_ARGS")]
    pub server_args: Vec<String>,
}

/// The parser of one `shell` line: a command without the global options, which
/// the shell's own command line set for the whole session.
#[derive(Debug, Parser)]
#[command(name = "corekv-ctl", no_binary_name = true, disable_version_flag = true)]
pub struct LineCli {
    /// What the line asks for.
    #[command(subcommand)]
    pub command: Command,
}

/// Parses `--timeout`: a number (decimals allowed) with an optional unit `ms`,
/// `s`, `m` or `h`; no unit means seconds. Above zero, at most [`TIMEOUT_MAX`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = corekv_rpc::duration::parse_duration(text)?;
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return Err(format!("{text:?} is zero: a timeout must be above zero"));
    }
    if nanos > TIMEOUT_MAX.as_nanos() {
        return Err(format!("{text:?} is above the {}h limit", TIMEOUT_MAX.as_secs() / 3600));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// The bytes of a command-line argument (not UTF-8 is fine: keys are bytes).
pub fn arg_bytes(arg: &OsString) -> Vec<u8> {
    arg.clone().into_vec()
}

/// One plain line for a clap error (no "error:" prefix, no tips, no colours):
/// `unknown command "frob"`, or clap's message with the usage in brackets.
pub fn usage_error_line(error: &clap::Error) -> String {
    if error.kind() == ErrorKind::InvalidSubcommand {
        let string = |kind| match error.get(kind) {
            Some(ContextValue::String(s)) => Some(s.clone()),
            Some(ContextValue::Strings(s)) => s.first().cloned(),
            _ => None,
        };
        let name = string(ContextKind::InvalidSubcommand).unwrap_or_default();
        return match string(ContextKind::SuggestedSubcommand) {
            Some(similar) => format!("unknown command {name:?} (did you mean {similar:?}?)"),
            None => format!("unknown command {name:?}"),
        };
    }
    let rendered = error.to_string();
    let mut message = Vec::new();
    let mut usage = None;
    for line in rendered.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("Usage:") {
            usage = Some(rest.trim().to_string());
        } else if !(line.starts_with("tip:") || line.starts_with("For more information")) {
            message.push(line.strip_prefix("error:").unwrap_or(line).trim().to_string());
        }
    }
    let mut line = message.join(" ");
    if let Some(usage) = usage {
        line.push_str(&format!(" (usage: {usage})"));
    }
    line
}

/// Whether raw arguments ask for `--json` (before `--`): a usage error is then
/// reported as a JSON line too.
pub fn args_ask_for_json(args: &[OsString]) -> bool {
    args.iter().take_while(|a| *a != "--").any(|a| a == "--json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("corekv-ctl").chain(args.iter().copied()))
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
        LineCli::command().debug_assert();
    }

    #[test]
    fn durations_take_units_and_bare_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.25s"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(".5m"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5ms"), Ok(Duration::from_micros(1500)));
        for bad in ["", "0", "0s", "0.0", "-1", "5x", "s", "1.2.3", "ms5", "25h", "99999999999999999999999999h", "."] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(parse_duration("5 parsecs").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn global_options_go_before_or_after_the_command() {
        let before = parse(&["--json", "--cluster", "h:1", "--timeout", "2s", "get", "k"]).unwrap();
        let after = parse(&["get", "k", "--timeout=2s", "--json", "--cluster", "h:1"]).unwrap();
        for cli in [before, after] {
            assert!(cli.global.json);
            assert_eq!(cli.global.cluster.as_deref(), Some("h:1"));
            assert_eq!(cli.global.timeout, Duration::from_secs(2));
        }
        let defaults = parse(&["status"]).unwrap();
        assert_eq!(defaults.global.timeout, Duration::from_secs(5));
        assert!(!defaults.global.json);
    }

    #[test]
    fn data_commands_parse_their_arguments() {
        let cli = parse(&["get", "k", "--at", "18446744073709551615", "-v"]).unwrap();
        match cli.command {
            Command::Get { key, at, verbose } => {
                assert_eq!(arg_bytes(&key), b"k");
                assert_eq!(at, Some(u64::MAX), "versions are exact u64");
                assert!(verbose);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["cas", "k", "0", "v"]).unwrap().command {
            Command::Cas { expected_version, .. } => assert_eq!(expected_version, 0),
            other => panic!("{other:?}"),
        }
        match parse(&["scan", "", ""]).unwrap().command {
            Command::Scan { limit, .. } => assert_eq!(limit, SCAN_LIMIT_DEFAULT),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["scan", "a", "b", "--limit", "0"]).is_err());
        assert!(parse(&["scan", "a", "b", "--limit", &(SCAN_ITEMS_MAX + 1).to_string()]).is_err());
        assert!(parse(&["scan", "a", "b", "--limit", &SCAN_ITEMS_MAX.to_string()]).is_ok());
        assert!(parse(&["cas", "k", "-1", "v"]).is_err());
    }

    #[test]
    fn begin_takes_a_policy_or_read_only_with_an_optional_version() {
        match parse(&["begin", "--policy", "wait-die"]).unwrap().command {
            Command::Begin { policy, read_only, at } => {
                assert_eq!((policy, read_only, at), (Some(PolicyArg::WaitDie), false, None));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["begin", "--read-only", "--at", "42"]).unwrap().command {
            Command::Begin { policy, read_only, at } => assert_eq!((policy, read_only, at), (None, true, Some(42))),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["begin", "--at", "42"]).is_err(), "--at needs --read-only");
        assert!(parse(&["begin", "--read-only", "--policy", "occ"]).is_err(), "a read-only one takes no locks");
        assert!(parse(&["begin", "--policy", "naive"]).is_err());
        assert_eq!(parse(&["commit"]).unwrap().command.txn_control_name(), Some("commit"));
        assert_eq!(parse(&["abort"]).unwrap().command.txn_control_name(), Some("abort"));
        assert_eq!(parse(&["txn", "--", "get a"]).unwrap().command.txn_control_name(), None);
    }

    #[test]
    fn local_up_takes_server_arguments_after_a_double_dash() {
        match parse(&["local", "up", "--nodes", "3", "--cores", "2", "--", "--io", "buffered"]).unwrap().command {
            Command::Local(LocalCommand::Up(up)) => {
                assert_eq!(up.nodes, Some(3));
                assert_eq!(up.cores, Some(2));
                assert_eq!(up.shards, None);
                assert_eq!(up.dir, PathBuf::from(LOCAL_DIR_DEFAULT));
                assert_eq!(up.server_args, ["--io", "buffered"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn usage_errors_become_one_plain_line() {
        let unknown = parse(&["xyzzy"]).unwrap_err();
        assert_eq!(unknown.exit_code(), 2);
        assert_eq!(usage_error_line(&unknown), "unknown command \"xyzzy\"");
        let typo = parse(&["puts", "k", "v"]).unwrap_err();
        assert_eq!(usage_error_line(&typo), "unknown command \"puts\" (did you mean \"put\"?)");
        let missing = usage_error_line(&parse(&["put", "k"]).unwrap_err());
        assert!(!missing.contains('\n'), "{missing}");
        assert!(missing.contains("<VALUE>") && missing.contains("(usage: corekv-ctl put <KEY> <VALUE>)"), "{missing}");
        let bad_timeout = usage_error_line(&parse(&["--timeout", "soon", "status"]).unwrap_err());
        assert!(bad_timeout.contains("not a duration"), "{bad_timeout}");
    }

    #[test]
    fn a_shell_line_takes_no_global_options() {
        assert!(LineCli::try_parse_from(["get", "k"]).is_ok());
        assert!(LineCli::try_parse_from(["get", "k", "--json"]).is_err());
    }

    #[test]
    fn json_is_spotted_in_raw_arguments_before_a_double_dash() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(args_ask_for_json(&args(&["frob", "--json"])));
        assert!(!args_ask_for_json(&args(&["local", "up", "--", "--json"])));
    }
}
