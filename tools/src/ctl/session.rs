//! One `corekv-ctl` session: runs commands and renders their results. A single
//! command is a session of one; `shell` runs every line in the same session, so
//! they share one client object (one client id, DESIGN §6), connected at the
//! first command that needs the cluster.
//!
//! Input is checked before the cluster is asked: a key that is empty or over
//! [`KEY_BYTES_MAX`] is `invalid` without a connection.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use corekv_rpc::txn::Policy;

use corekv_rpc::kv::{KEY_BYTES_MAX, Version};

use super::args::{Command, GlobalArgs, LocalCommand, SnapshotCommand, WalCommand, arg_bytes};
use super::local;
use super::render::{self, EXIT_NEGATIVE, Failure, Rendered};
use super::status::render_status;
use crate::offline::{self, OfflineError};
use corekv_rpc::client::blocking::Client;
use corekv_rpc::client::{ClientConfig, ClusterStatus, Got, KvError, ScanPage, VersionEntry, parse_cluster};

/// What `corekv-ctl` needs of a cluster: the blocking client's calls. A trait so
/// the session and the shell are tested against an in-memory stand-in.
pub trait Kv {
    /// Writes `value` as a new version of `key`.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<Version, KvError>;
    /// Deletes `key`.
    fn delete(&mut self, key: &[u8]) -> Result<Version, KvError>;
    /// Writes `value` if `key`'s current version is `expected` (0: absent).
    fn cas(&mut self, key: &[u8], expected: Version, value: &[u8]) -> Result<Version, KvError>;
    /// Reads `key` (its newest version ≤ `at`, when given).
    fn get(&mut self, key: &[u8], at: Option<Version>) -> Result<Got, KvError>;
    /// `key`'s retained history, newest first.
    fn versions(&mut self, key: &[u8]) -> Result<Vec<VersionEntry>, KvError>;
    /// Live keys in `[start, end)`, at most `limit`.
    fn scan(&mut self, start: &[u8], end: &[u8], limit: u32) -> Result<ScanPage, KvError>;
    /// Every node's and core's report.
    fn status(&mut self) -> ClusterStatus;
    /// Runs `ops` as one transaction under `policy`, again while it is aborted.
    fn txn(&mut self, policy: Policy, ops: &[TxnOp]) -> Result<TxnDone, KvError>;
}

/// One operation of a one-shot transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Read a key.
    Get(Vec<u8>),
    /// Write a key.
    Put(Vec<u8>, Vec<u8>),
    /// Delete a key (nothing is written when it is absent).
    Delete(Vec<u8>),
}

/// A committed one-shot transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnDone {
    /// The commit version.
    pub version: Version,
    /// The start version (kept across wait-die retries).
    pub start_version: Version,
    /// Attempts made.
    pub attempts: u32,
    /// Every get's key and answer, in order (of the committed attempt).
    pub reads: Vec<(Vec<u8>, Result<Got, KvError>)>,
}

impl Kv for Client {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<Version, KvError> {
        Client::put(self, key, value)
    }
    fn delete(&mut self, key: &[u8]) -> Result<Version, KvError> {
        Client::delete(self, key)
    }
    fn cas(&mut self, key: &[u8], expected: Version, value: &[u8]) -> Result<Version, KvError> {
        Client::cas(self, key, expected, value)
    }
    fn get(&mut self, key: &[u8], at: Option<Version>) -> Result<Got, KvError> {
        Client::get(self, key, at)
    }
    fn versions(&mut self, key: &[u8]) -> Result<Vec<VersionEntry>, KvError> {
        Client::versions(self, key)
    }
    fn scan(&mut self, start: &[u8], end: &[u8], limit: u32) -> Result<ScanPage, KvError> {
        Client::scan(self, start, end, limit)
    }
    fn status(&mut self) -> ClusterStatus {
        Client::status(self)
    }
    fn txn(&mut self, policy: Policy, ops: &[TxnOp]) -> Result<TxnDone, KvError> {
        let run = self.run_txn(policy, |t| {
            let mut reads = Vec::new();
            for op in ops {
                match op {
                    TxnOp::Get(key) => match t.get(key) {
                        Err(e @ KvError::NotFound) => reads.push((key.clone(), Err(e))),
                        other => reads.push((key.clone(), Ok(other?))),
                    },
                    TxnOp::Put(key, value) => t.put(key, value)?,
                    TxnOp::Delete(key) => t.delete(key)?,
                }
            }
            Ok(reads)
        })?;
        Ok(TxnDone { version: run.version, start_version: run.start_version, attempts: run.attempts, reads: run.value })
    }
}

/// Parses one operation of `corekv-ctl txn`: `get KEY`, `put KEY VALUE`, `delete KEY`.
pub fn parse_txn_op(text: &OsString) -> Result<TxnOp, Failure> {
    let text = text.to_string_lossy();
    let words = shell_words::split(&text).map_err(|e| Failure::invalid(format!("`{text}`: {e}")))?;
    let bytes = |w: &String| w.as_bytes().to_vec();
    match words.as_slice() {
        [op, key] if op == "get" => Ok(TxnOp::Get(checked_key(bytes(key))?)),
        [op, key, value] if op == "put" => Ok(TxnOp::Put(checked_key(bytes(key))?, bytes(value))),
        [op, key] if op == "delete" => Ok(TxnOp::Delete(checked_key(bytes(key))?)),
        _ => Err(Failure::invalid(format!("`{text}` is not `get KEY`, `put KEY VALUE` or `delete KEY`"))),
    }
}

/// Makes the session's client when a command first needs one.
pub type Connector = Box<dyn FnMut() -> Result<Box<dyn Kv>, Failure>>;

/// The connector of the real client: `--cluster` (or `COREKV_CLUSTER`) with
/// `--timeout` as the deadline of each request.
pub fn client_connector(cluster: Option<String>, timeout: Duration) -> Connector {
    Box::new(move || {
        let Some(cluster) = cluster.as_deref() else {
            return Err(Failure::invalid(
                "no cluster given: pass --cluster HOST:PORT[,HOST:PORT...] or set COREKV_CLUSTER",
            ));
        };
        let addrs = parse_cluster(cluster).map_err(|e| Failure::invalid(format!("--cluster: {e}")))?;
        let mut config = ClientConfig::new(addrs);
        config.deadline = timeout;
        config.attempt_timeout = config.attempt_timeout.min(timeout);
        config.connect_timeout = config.connect_timeout.min(timeout);
        let client = Client::connect(config).map_err(Failure::from)?;
        Ok(Box::new(client) as Box<dyn Kv>)
    })
}

/// A session: the output mode, and the client once connected.
pub struct Session {
    json: bool,
    connector: Connector,
    kv: Option<Box<dyn Kv>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("json", &self.json).field("connected", &self.kv.is_some()).finish()
    }
}

impl Session {
    /// A session of the real client, as the global options say.
    pub fn new(global: &GlobalArgs) -> Session {
        Session::with_connector(global.json, client_connector(global.cluster.clone(), global.timeout))
    }

    /// A session whose client comes from `connector`.
    pub fn with_connector(json: bool, connector: Connector) -> Session {
        Session { json, connector, kv: None }
    }

    /// Whether results are printed as JSON.
    pub fn json(&self) -> bool {
        self.json
    }

    /// Runs one command (not `shell`, and not the dumps: they stream) and renders
    /// its result.
    pub fn run(&mut self, command: Command) -> Rendered {
        let json = self.json;
        match self.execute(command) {
            Ok(rendered) => rendered,
            Err(failure) => failure.render(json),
        }
    }

    fn kv(&mut self) -> Result<&mut dyn Kv, Failure> {
        if self.kv.is_none() {
            // A failed connect is not kept: the next command tries again.
            self.kv = Some((self.connector)()?);
        }
        Ok(self.kv.as_deref_mut().expect("connected just above"))
    }

    fn execute(&mut self, command: Command) -> Result<Rendered, Failure> {
        let json = self.json;
        Ok(match command {
            Command::Put { key, value } => {
                let key = checked_key(arg_bytes(&key))?;
                render::render_written(self.kv()?.put(&key, &arg_bytes(&value))?, json)
            }
            Command::Get { key, at, verbose } => {
                let key = checked_key(arg_bytes(&key))?;
                render::render_got(&self.kv()?.get(&key, at)?, verbose, json)
            }
            Command::Delete { key } => {
                let key = checked_key(arg_bytes(&key))?;
                render::render_written(self.kv()?.delete(&key)?, json)
            }
            Command::Cas { key, expected_version, value } => {
                let key = checked_key(arg_bytes(&key))?;
                render::render_written(self.kv()?.cas(&key, expected_version, &arg_bytes(&value))?, json)
            }
            Command::Versions { key } => {
                let key = checked_key(arg_bytes(&key))?;
                render::render_versions(&self.kv()?.versions(&key)?, json)
            }
            Command::Scan { start, end, limit } => {
                let start = checked_bound("scan start", arg_bytes(&start))?;
                let end = checked_bound("scan end", arg_bytes(&end))?;
                render::render_scan(&self.kv()?.scan(&start, &end, limit)?, json)
            }
            Command::Status => render_status(&self.kv()?.status(), json),
            Command::Shell => return Err(Failure::invalid("`shell` cannot run inside the shell")),
            Command::Wal(WalCommand::Verify { path }) => render_wal_verify(&path, json)?,
            Command::Snapshot(SnapshotCommand::Verify { path }) => render_snapshot_verify(&path, json)?,
            Command::Wal(WalCommand::Dump { .. }) | Command::Snapshot(SnapshotCommand::Dump { .. }) => {
                return Err(dump_refused(json));
            }
            Command::Local(LocalCommand::Up(args)) => local::run_up(&args, json)?,
            Command::Local(LocalCommand::Down { dir, purge }) => local::run_down(&dir, purge, json)?,
            Command::Local(LocalCommand::Status { dir }) => local::run_status(&dir, json)?,
            Command::CheckHistory { file } => render::render_check(&file, json)?,
            Command::Txn { policy, ops } => {
                let ops = ops.iter().map(parse_txn_op).collect::<Result<Vec<_>, _>>()?;
                let policy = policy.map_or(Policy::WoundWait, Policy::from);
                render::render_txn(&self.kv()?.txn(policy, &ops)?, json)
            }
        })
    }
}

/// Why a dump is not run here: in JSON mode there is no JSON form; in the shell,
/// its many lines would break the one line per command.
pub fn dump_refused(json: bool) -> Failure {
    Failure::invalid(if json {
        "a dump is a listing for people and has no JSON form; `verify --json` reports as JSON"
    } else {
        "a dump prints many lines: run it as a command of its own, not in the shell"
    })
}

/// A key the cluster would accept: not empty, at most [`KEY_BYTES_MAX`] bytes.
pub fn checked_key(key: Vec<u8>) -> Result<Vec<u8>, Failure> {
    if key.is_empty() {
        return Err(Failure::invalid("the key is empty"));
    }
    checked_bound("key", key)
}

/// A scan bound: empty (no bound) or a key of at most [`KEY_BYTES_MAX`] bytes.
fn checked_bound(what: &str, key: Vec<u8>) -> Result<Vec<u8>, Failure> {
    if key.len() > KEY_BYTES_MAX {
        return Err(Failure::invalid(format!("{what} is {} bytes, above the {KEY_BYTES_MAX}-byte limit", key.len())));
    }
    Ok(key)
}

/// An offline failure: a problem found (exit 1) or a path that holds nothing
/// to check (invalid, exit 2).
pub fn offline_failure(error: OfflineError) -> Failure {
    match error {
        OfflineError::Path { .. } => Failure::invalid(error.to_string()),
        other => Failure::new("verify_failed", other.to_string(), Some(other.to_string()), EXIT_NEGATIVE),
    }
}

#[derive(serde::Serialize)]
struct WalVerifyJson {
    ok: bool,
    wals: Vec<WalJson>,
}

#[derive(serde::Serialize)]
struct WalJson {
    dir: String,
    segments: usize,
    batches: u64,
    groups: usize,
    live_entries: usize,
    next_batch_seq: u64,
}

fn render_wal_verify(path: &Path, json: bool) -> Result<Rendered, Failure> {
    let reports = offline::wal_verify_report(path).map_err(offline_failure)?;
    let lines: Vec<String> = reports.iter().map(offline::describe_wal_verified).collect();
    let wals = reports
        .iter()
        .map(|r| WalJson {
            dir: r.dir.display().to_string(),
            segments: r.segments,
            batches: r.batches,
            groups: r.groups,
            live_entries: r.live_entries,
            next_batch_seq: r.next_batch_seq,
        })
        .collect();
    let line = lines.join("; ");
    Ok(Rendered::ok(json, &WalVerifyJson { ok: true, wals }, lines, line))
}

#[derive(serde::Serialize)]
struct SnapshotVerifyJson {
    ok: bool,
    snapshots: Vec<SnapshotJson>,
}

#[derive(serde::Serialize)]
struct SnapshotJson {
    file: String,
    cluster_id: u64,
    group_id: u64,
    index: u64,
    term: u64,
    chunks: u64,
    data_bytes: u64,
}

fn render_snapshot_verify(path: &Path, json: bool) -> Result<Rendered, Failure> {
    let reports = offline::snapshot_verify_report(path).map_err(offline_failure)?;
    let mut lines: Vec<String> = reports.iter().map(offline::describe_snapshot_verified).collect();
    if lines.is_empty() {
        lines.push(format!("{}: no snapshot files", path.display()));
    }
    let snapshots = reports
        .iter()
        .map(|r| SnapshotJson {
            file: r.file.display().to_string(),
            cluster_id: r.cluster_id,
            group_id: r.group_id,
            index: r.index,
            term: r.term,
            chunks: r.chunks,
            data_bytes: r.data_bytes,
        })
        .collect();
    let line = lines.join("; ");
    Ok(Rendered::ok(json, &SnapshotVerifyJson { ok: true, snapshots }, lines, line))
}

/// An in-memory [`Kv`] for tests: versioned keys, deletes as tombstones, a
/// counter of connections made.
#[cfg(test)]
pub(crate) mod memory {
    use std::cell::Cell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    use corekv_rpc::kv::ScanItem;

    use super::*;

    /// A key's versions, oldest first; `None` is a tombstone.
    type History = Vec<(Version, Option<Vec<u8>>)>;

    /// Every key's history.
    #[derive(Debug, Default)]
    pub struct MemoryKv {
        keys: BTreeMap<Vec<u8>, History>,
        next_version: Version,
    }

    impl MemoryKv {
        fn current(&self, key: &[u8]) -> Option<(Version, &Vec<u8>)> {
            let (version, value) = self.keys.get(key)?.last()?;
            value.as_ref().map(|v| (*version, v))
        }

        fn write(&mut self, key: &[u8], value: Option<Vec<u8>>) -> Version {
            self.next_version += 1;
            self.keys.entry(key.to_vec()).or_default().push((self.next_version, value));
            self.next_version
        }
    }

    impl Kv for MemoryKv {
        fn put(&mut self, key: &[u8], value: &[u8]) -> Result<Version, KvError> {
            Ok(self.write(key, Some(value.to_vec())))
        }
        fn delete(&mut self, key: &[u8]) -> Result<Version, KvError> {
            self.current(key).ok_or(KvError::NotFound)?;
            Ok(self.write(key, None))
        }
        fn cas(&mut self, key: &[u8], expected: Version, value: &[u8]) -> Result<Version, KvError> {
            let current = self.current(key).map_or(0, |(v, _)| v);
            if current != expected {
                return Err(KvError::VersionMismatch { current });
            }
            Ok(self.write(key, Some(value.to_vec())))
        }
        fn get(&mut self, key: &[u8], at: Option<Version>) -> Result<Got, KvError> {
            let versions = self.keys.get(key).ok_or(KvError::NotFound)?;
            let found = versions.iter().rev().find(|(v, _)| at.is_none_or(|at| *v <= at));
            match found {
                Some((version, Some(value))) => Ok(Got { version: *version, value: value.clone() }),
                _ => Err(KvError::NotFound),
            }
        }
        fn versions(&mut self, key: &[u8]) -> Result<Vec<VersionEntry>, KvError> {
            let versions = self.keys.get(key).map_or(&[][..], Vec::as_slice);
            Ok(versions
                .iter()
                .rev()
                .map(|(version, value)| VersionEntry {
                    version: *version,
                    deleted: value.is_none(),
                    value: value.clone().unwrap_or_default(),
                })
                .collect())
        }
        fn txn(&mut self, _policy: Policy, ops: &[TxnOp]) -> Result<TxnDone, KvError> {
            // Alone in memory, a transaction never conflicts: apply in order.
            let start_version = self.next_version + 1;
            let mut reads = Vec::new();
            let mut writes: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
            for op in ops {
                match op {
                    TxnOp::Get(key) => {
                        let got = match writes.get(key) {
                            Some(Some(value)) => Ok(Got { version: 0, value: value.clone() }),
                            Some(None) => Err(KvError::NotFound),
                            None => self.get(key, None),
                        };
                        reads.push((key.clone(), got));
                    }
                    TxnOp::Put(key, value) => {
                        writes.insert(key.clone(), Some(value.clone()));
                    }
                    TxnOp::Delete(key) => {
                        writes.insert(key.clone(), None);
                    }
                }
            }
            self.next_version += 1;
            let version = self.next_version;
            for (key, value) in writes {
                if value.is_some() || self.current(&key).is_some() {
                    self.keys.entry(key).or_default().push((version, value));
                }
            }
            Ok(TxnDone { version, start_version, attempts: 1, reads })
        }
        fn scan(&mut self, start: &[u8], end: &[u8], limit: u32) -> Result<ScanPage, KvError> {
            let live: Vec<ScanItem> = self
                .keys
                .keys()
                .filter(|k| k.as_slice() >= start && (end.is_empty() || k.as_slice() < end))
                .filter_map(|k| {
                    self.current(k).map(|(version, value)| ScanItem { key: k.clone(), version, value: value.clone() })
                })
                .collect();
            let more = live.len() > limit as usize;
            Ok(ScanPage { items: live.into_iter().take(limit as usize).collect(), more })
        }
        fn status(&mut self) -> ClusterStatus {
            ClusterStatus { cluster_id: 1, epoch: 1, nodes: Vec::new() }
        }
    }

    /// A session over a fresh [`MemoryKv`], and the count of connections it made.
    pub fn session(json: bool) -> (Session, Rc<Cell<u32>>) {
        let connects = Rc::new(Cell::new(0));
        let counter = connects.clone();
        let connector: Connector = Box::new(move || {
            counter.set(counter.get() + 1);
            Ok(Box::new(MemoryKv::default()) as Box<dyn Kv>)
        });
        (Session::with_connector(json, connector), connects)
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    use super::memory::session;
    use super::*;
    use crate::ctl::args::Cli;
    use clap::Parser;

    fn command(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("corekv-ctl").chain(args.iter().copied())).unwrap().command
    }

    #[test]
    fn data_commands_run_and_render_with_exit_codes() {
        let (mut s, connects) = session(true);
        let run = |s: &mut Session, args: &[&str]| {
            let r = s.run(command(args));
            (r.line, r.exit)
        };
        assert_eq!(run(&mut s, &["put", "k", "v1"]), (r#"{"ok":true,"version":1}"#.into(), 0));
        assert_eq!(run(&mut s, &["get", "k"]), (r#"{"ok":true,"value":"v1","version":1}"#.into(), 0));
        assert_eq!(
            run(&mut s, &["cas", "k", "7", "v2"]),
            (r#"{"ok":false,"error":"version_mismatch","version":1}"#.into(), 1)
        );
        assert_eq!(run(&mut s, &["cas", "k", "1", "v2"]), (r#"{"ok":true,"version":2}"#.into(), 0));
        assert_eq!(run(&mut s, &["get", "k", "--at", "1"]), (r#"{"ok":true,"value":"v1","version":1}"#.into(), 0));
        assert_eq!(run(&mut s, &["delete", "k"]), (r#"{"ok":true,"version":3}"#.into(), 0));
        assert_eq!(run(&mut s, &["get", "k"]), (r#"{"ok":false,"error":"not_found"}"#.into(), 1));
        assert_eq!(run(&mut s, &["delete", "k"]), (r#"{"ok":false,"error":"not_found"}"#.into(), 1));
        assert_eq!(
            run(&mut s, &["versions", "k"]),
            (r#"{"ok":true,"versions":[{"version":3,"deleted":true},{"version":2,"value":"v2"},{"version":1,"value":"v1"}]}"#.into(), 0)
        );
        assert_eq!(run(&mut s, &["put", "a", "1"]).1, 0);
        assert_eq!(run(&mut s, &["put", "b", "2"]).1, 0);
        assert_eq!(
            run(&mut s, &["scan", "", "", "--limit", "1"]),
            (r#"{"ok":true,"items":[{"key":"a","value":"1","version":4}],"more":true}"#.into(), 0)
        );
        assert_eq!(connects.get(), 1, "one client for the whole session");
    }

    #[test]
    fn a_one_shot_transaction_prints_its_versions_and_every_get() {
        let (mut s, _) = session(true);
        let run = |s: &mut Session, args: &[&str]| {
            let r = s.run(command(args));
            (r.line, r.exit)
        };
        assert_eq!(run(&mut s, &["put", "a", "1"]).1, 0);
        assert_eq!(
            run(&mut s, &["txn", "--policy", "wait-die", "--", "get a", "put b 2", "get b", "delete c", "get c"]),
            (
                r#"{"ok":true,"version":2,"start_version":2,"attempts":1,"reads":[{"key":"a","ok":true,"value":"1","version":1},{"key":"b","ok":true,"value":"2","version":0},{"key":"c","ok":false,"error":"not_found"}]}"#.into(),
                0
            )
        );
        assert_eq!(run(&mut s, &["get", "b"]), (r#"{"ok":true,"value":"2","version":2}"#.into(), 0));
        let bad = run(&mut s, &["txn", "--", "frob a"]);
        assert_eq!(bad.1, 2);
        assert!(bad.0.contains("is not `get KEY`"), "{}", bad.0);
        assert!(Cli::try_parse_from(["corekv-ctl", "txn"]).is_err(), "ops are required");
        let (mut human, _) = session(false);
        let r = human.run(command(&["txn", "--", "put k v", "get k"]));
        assert_eq!(r.lines, vec!["committed at version 1 (start version 1, 1 attempt)", "k = v (version 0)"]);
    }

    #[test]
    fn bad_keys_are_invalid_without_a_connection() {
        let (mut s, connects) = session(true);
        let huge = "k".repeat(KEY_BYTES_MAX + 1);
        let r = s.run(command(&["get", &huge]));
        assert_eq!(r.exit, 2);
        assert_eq!(
            r.line,
            r#"{"ok":false,"error":"invalid","message":"key is 4097 bytes, above the 4096-byte limit"}"#
        );
        let r = s.run(command(&["put", "", "v"]));
        assert_eq!(r.line, r#"{"ok":false,"error":"invalid","message":"the key is empty"}"#);
        let r = s.run(command(&["scan", &huge, ""]));
        assert_eq!(r.exit, 2);
        assert_eq!(connects.get(), 0, "nothing was sent");
        let ok = "k".repeat(KEY_BYTES_MAX);
        assert_eq!(s.run(command(&["put", &ok, "v"])).exit, 0);
    }

    #[test]
    fn non_utf8_arguments_are_raw_bytes() {
        let (mut s, _) = session(true);
        let key = OsString::from_vec(vec![b'k', 0xff]);
        let value = OsString::from_vec(vec![0xfe, 0x00]);
        assert_eq!(s.run(Command::Put { key: key.clone(), value }).exit, 0);
        let r = s.run(Command::Get { key, at: None, verbose: false });
        assert_eq!(r.line, r#"{"ok":true,"value_b64":"/gA=","version":1}"#);
        let r = s.run(command(&["scan", "", ""]));
        assert_eq!(r.line, r#"{"ok":true,"items":[{"key_b64":"a/8=","value_b64":"/gA=","version":1}],"more":false}"#);
    }

    #[test]
    fn a_missing_or_bad_cluster_is_invalid_and_no_node_answering_is_unavailable() {
        let mut s = Session::with_connector(true, client_connector(None, Duration::from_secs(1)));
        let r = s.run(command(&["get", "k"]));
        assert_eq!(r.exit, 2);
        assert!(r.line.contains("COREKV_CLUSTER"), "{}", r.line);
        let mut s = Session::with_connector(false, client_connector(Some("nonsense".into()), Duration::from_secs(1)));
        let r = s.run(command(&["get", "k"]));
        assert_eq!(r.exit, 2);
        assert!(r.line.starts_with("error: invalid: --cluster: "), "{}", r.line);
    }

    #[test]
    fn a_failed_connect_is_retried_by_the_next_command() {
        let attempts = std::rc::Rc::new(std::cell::Cell::new(0));
        let counter = attempts.clone();
        let connector: Connector = Box::new(move || {
            counter.set(counter.get() + 1);
            if counter.get() == 1 {
                Err(Failure::from(KvError::Unavailable { reason: "no node of h:1 answered: refused".into() }))
            } else {
                Ok(Box::new(memory::MemoryKv::default()) as Box<dyn Kv>)
            }
        });
        let mut s = Session::with_connector(false, connector);
        let first = s.run(command(&["put", "k", "v"]));
        assert_eq!(
            (first.line.as_str(), first.exit),
            ("error: unavailable (certainly not applied): no node of h:1 answered: refused", 3)
        );
        assert_eq!(s.run(command(&["put", "k", "v"])).exit, 0);
        assert_eq!(attempts.get(), 2);
    }

    #[test]
    fn dumps_and_nested_shells_are_refused_here() {
        let (mut s, _) = session(false);
        assert_eq!(s.run(command(&["shell"])).exit, 2);
        assert_eq!(s.run(command(&["wal", "dump", "/nonexistent"])).exit, 2);
        let r = s.run(command(&["wal", "verify", "/nonexistent/corekv"]));
        assert_eq!(r.exit, 2, "a path with nothing to check is invalid input");
        assert!(r.line.starts_with("error: invalid: /nonexistent/corekv: "), "{}", r.line);
    }
}
