//! One `corekv-ctl` session: runs commands and renders their results. A single
//! command is a session of one; `shell` runs every line in the same session, so
//! they share one client object (one client id, DESIGN §6), connected at the
//! first command that needs the cluster.
//!
//! Input is checked before the cluster is asked: a key that is empty or over
//! [`KEY_BYTES_MAX`] is `invalid` without a connection.
//!
//! A shell session holds at most one open transaction (`begin` … `commit` or
//! `abort`), kept by its [`Kv`] beside the client. While it is open, get, scan,
//! put and delete run in it, and the commands it cannot serve answer `invalid`.
//! An `aborted`, `indeterminate` or `unavailable` answer ends it, and so does the
//! end of the session ([`Session::end`]). A single command has no transaction to
//! act on: `begin`, `commit` and `abort` are `invalid` outside the shell.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use corekv_rpc::kv::{KEY_BYTES_MAX, Version};
use corekv_rpc::txn::{Policy, TxnId};

use super::args::{
    Command, GlobalArgs, LocalCommand, NodeCommand, ShardCommand, SnapshotCommand, WalCommand, arg_bytes,
};
use super::local;
use super::placement::{self, MoveCluster};
use super::render::{self, EXIT_NEGATIVE, Failure, Rendered};
use super::status::render_status;
use crate::offline::{self, OfflineError};
use corekv_rpc::client::blocking::{Client, TxnHandle};
use corekv_rpc::client::{ClientConfig, ClusterStatus, Got, KvError, ScanPage, VersionEntry, parse_cluster};
use corekv_rpc::map::ClusterMap;
use corekv_rpc::node::MetaEdit;

/// What `corekv-ctl` needs of a cluster: the blocking client's calls, and the
/// shell's one open transaction, which the `Kv` keeps. A trait so the session and
/// the shell are tested against an in-memory stand-in.
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
    /// The transaction [`Kv::begin`] opened, while it may go on: `commit`,
    /// `abort`, and an answer that leaves it unable to go on close it.
    fn open_txn(&self) -> Option<OpenTxn>;
    /// Opens a transaction; `invalid` while one is open.
    fn begin(&mut self, mode: TxnMode) -> Result<OpenTxn, KvError>;
    /// Reads `key` in the open transaction (its own write at version 0).
    fn txn_get(&mut self, key: &[u8]) -> Result<Got, KvError>;
    /// Live keys in `[start, end)`, at most `limit`, at the open read-only
    /// transaction's snapshot (`invalid` in a read-write one).
    fn txn_scan(&mut self, start: &[u8], end: &[u8], limit: u32) -> Result<ScanPage, KvError>;
    /// Writes `value` at `key` when the open transaction commits.
    fn txn_put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError>;
    /// Deletes `key` when the open transaction commits (nothing if it is absent).
    fn txn_delete(&mut self, key: &[u8]) -> Result<(), KvError>;
    /// Commits the open transaction: the version of every key it wrote (the
    /// snapshot version of a read-only one). It is closed whatever the answer.
    fn commit(&mut self) -> Result<Version, KvError>;
    /// Aborts the open transaction: its locks released.
    fn abort(&mut self) -> Result<(), KvError>;
    /// The cluster's newest map, asked for now.
    fn fresh_map(&mut self) -> Result<ClusterMap, KvError>;
    /// Hands a change of the map to the meta group.
    fn submit_meta(&mut self, edit: MetaEdit) -> Result<(), KvError>;
}

impl MoveCluster for dyn Kv + '_ {
    fn fresh_map(&mut self) -> Result<ClusterMap, KvError> {
        Kv::fresh_map(self)
    }
    fn submit(&mut self, edit: MetaEdit) -> Result<(), KvError> {
        self.submit_meta(edit)
    }
    fn status(&mut self) -> ClusterStatus {
        Kv::status(self)
    }
}

/// How `begin` opens a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnMode {
    /// Reads and writes under this conflict policy.
    ReadWrite(Policy),
    /// Reads one snapshot: at this version, or at or above every version the
    /// client has seen.
    ReadOnly {
        /// The snapshot's version.
        at: Option<Version>,
    },
}

/// The open transaction, as `begin` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenTxn {
    /// The attempt's id.
    pub id: TxnId,
    /// Its start version; a read-only transaction's snapshot version.
    pub start_version: Version,
    /// Begun read-only: it cannot write.
    pub read_only: bool,
}

/// The answer to a transaction call with none open.
pub(crate) fn no_open_txn() -> KvError {
    KvError::Invalid { message: "no transaction is open: `begin` starts one".into() }
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

/// The real cluster: the blocking client, and the shell's open transaction
/// beside it (an owned [`TxnHandle`], so the session can keep both).
#[derive(Debug)]
pub struct ClusterKv {
    client: Client,
    txn: Option<TxnHandle>,
}

impl ClusterKv {
    /// `client`, with no transaction open.
    pub fn new(client: Client) -> ClusterKv {
        ClusterKv { client, txn: None }
    }

    /// `call` on the client and the open transaction's handle.
    fn with_txn<T>(
        &mut self,
        call: impl FnOnce(&mut Client, &mut TxnHandle) -> Result<T, KvError>,
    ) -> Result<T, KvError> {
        let txn = self.txn.as_mut().ok_or_else(no_open_txn)?;
        call(&mut self.client, txn)
    }
}

impl Kv for ClusterKv {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<Version, KvError> {
        self.client.put(key, value)
    }
    fn delete(&mut self, key: &[u8]) -> Result<Version, KvError> {
        self.client.delete(key)
    }
    fn cas(&mut self, key: &[u8], expected: Version, value: &[u8]) -> Result<Version, KvError> {
        self.client.cas(key, expected, value)
    }
    fn get(&mut self, key: &[u8], at: Option<Version>) -> Result<Got, KvError> {
        self.client.get(key, at)
    }
    fn versions(&mut self, key: &[u8]) -> Result<Vec<VersionEntry>, KvError> {
        self.client.versions(key)
    }
    fn scan(&mut self, start: &[u8], end: &[u8], limit: u32) -> Result<ScanPage, KvError> {
        self.client.scan(start, end, limit)
    }
    fn status(&mut self) -> ClusterStatus {
        self.client.status()
    }
    fn fresh_map(&mut self) -> Result<ClusterMap, KvError> {
        self.client.refresh_map()?;
        Ok(self.client.map().clone())
    }
    fn submit_meta(&mut self, edit: MetaEdit) -> Result<(), KvError> {
        self.client.submit_meta(edit)
    }
    fn txn(&mut self, policy: Policy, ops: &[TxnOp]) -> Result<TxnDone, KvError> {
        let run = self.client.run_txn(policy, |t| {
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
    fn open_txn(&self) -> Option<OpenTxn> {
        let txn = self.txn.as_ref().filter(|t| t.is_open())?;
        Some(OpenTxn { id: txn.id(), start_version: txn.start_version(), read_only: txn.is_read_only() })
    }
    fn begin(&mut self, mode: TxnMode) -> Result<OpenTxn, KvError> {
        if let Some(open) = self.open_txn() {
            return Err(KvError::Invalid { message: format!("transaction {} is open", open.id) });
        }
        self.txn = Some(match mode {
            TxnMode::ReadWrite(policy) => self.client.txn_begin(policy),
            TxnMode::ReadOnly { at } => self.client.txn_begin_read_only(at),
        });
        Ok(self.open_txn().expect("begun just above"))
    }
    fn txn_get(&mut self, key: &[u8]) -> Result<Got, KvError> {
        self.with_txn(|client, txn| client.txn_get(txn, key))
    }
    fn txn_scan(&mut self, start: &[u8], end: &[u8], limit: u32) -> Result<ScanPage, KvError> {
        self.with_txn(|client, txn| client.txn_scan(txn, start, end, limit))
    }
    fn txn_put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.with_txn(|client, txn| client.txn_put(txn, key, value))
    }
    fn txn_delete(&mut self, key: &[u8]) -> Result<(), KvError> {
        self.with_txn(|client, txn| client.txn_delete(txn, key))
    }
    fn commit(&mut self) -> Result<Version, KvError> {
        let txn = self.txn.take().ok_or_else(no_open_txn)?;
        self.client.txn_commit(txn)
    }
    fn abort(&mut self) -> Result<(), KvError> {
        let txn = self.txn.take().ok_or_else(no_open_txn)?;
        self.client.txn_abort(txn)
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
        Ok(Box::new(ClusterKv::new(client)) as Box<dyn Kv>)
    })
}

/// A session: the output mode, and the client once connected.
pub struct Session {
    json: bool,
    connector: Connector,
    kv: Option<Box<dyn Kv>>,
    /// `--timeout`: how long a command that waits for the cluster (`shard move`) waits.
    timeout: Duration,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("json", &self.json).field("connected", &self.kv.is_some()).finish()
    }
}

impl Session {
    /// A session of the real client, as the global options say.
    pub fn new(global: &GlobalArgs) -> Session {
        let mut session =
            Session::with_connector(global.json, client_connector(global.cluster.clone(), global.timeout));
        session.timeout = global.timeout;
        session
    }

    /// A session whose client comes from `connector`.
    pub fn with_connector(json: bool, connector: Connector) -> Session {
        Session { json, connector, kv: None, timeout: super::args::default_timeout() }
    }

    /// Whether results are printed as JSON.
    pub fn json(&self) -> bool {
        self.json
    }

    /// Runs one command given on the command line (not `shell`, and not the
    /// dumps: they stream) and renders its result. `begin`, `commit` and `abort`
    /// are `invalid` here: a single command has no open transaction to act on.
    pub fn run(&mut self, command: Command) -> Rendered {
        if let Some(name) = command.txn_control_name() {
            return Failure::invalid(format!(
                "`{name}` acts on the open transaction of `corekv-ctl shell`; a single command runs a whole \
                 transaction with `corekv-ctl txn -- 'get a' 'put b 1'`"
            ))
            .render(self.json);
        }
        self.run_line(command)
    }

    /// Runs one line of `shell` and renders its result: any command, inside the
    /// open transaction when there is one.
    pub fn run_line(&mut self, command: Command) -> Rendered {
        let json = self.json;
        let result = match self.open_txn() {
            Some(open) => self.execute_in_txn(open, command),
            None => self.execute(command),
        };
        result.unwrap_or_else(|failure| failure.render(json))
    }

    /// The open transaction, if any.
    pub fn open_txn(&self) -> Option<OpenTxn> {
        self.kv.as_deref()?.open_txn()
    }

    /// Ends the session: aborts the open transaction, if any, so its locks are
    /// released now rather than at the leaders' lifetime limit. Its id, to tell.
    pub fn end(&mut self) -> Option<TxnId> {
        let open = self.open_txn()?;
        // Best effort, as every release is: the lifetime limit is the backstop.
        let _ = self.kv.as_deref_mut()?.abort();
        Some(open.id)
    }

    fn kv(&mut self) -> Result<&mut dyn Kv, Failure> {
        if self.kv.is_none() {
            // A failed connect is not kept: the next command tries again.
            self.kv = Some((self.connector)()?);
        }
        Ok(self.kv.as_deref_mut().expect("connected just above"))
    }

    /// A command while `open` is: data commands run in the transaction, or answer
    /// `invalid` when it cannot serve them; the others run as without one.
    fn execute_in_txn(&mut self, open: OpenTxn, command: Command) -> Result<Rendered, Failure> {
        let json = self.json;
        let refused = |what: &str, why: &str| Err(Failure::invalid(format!("{what} inside a transaction {why}")));
        match command {
            Command::Get { at: Some(_), .. } => {
                refused("get --at", "is not supported: the transaction reads at its own version")
            }
            Command::Get { key, at: None, verbose } => {
                let key = checked_key(arg_bytes(&key))?;
                Ok(render::render_got(&self.in_txn(|kv| kv.txn_get(&key))?, verbose, json))
            }
            Command::Scan { start, end, limit } => {
                let start = checked_bound("scan start", arg_bytes(&start))?;
                let end = checked_bound("scan end", arg_bytes(&end))?;
                Ok(render::render_scan(&self.in_txn(|kv| kv.txn_scan(&start, &end, limit))?, json))
            }
            Command::Put { .. } | Command::Delete { .. } if open.read_only => {
                Err(Failure::invalid("a read-only transaction cannot write"))
            }
            Command::Put { key, value } => {
                let key = checked_key(arg_bytes(&key))?;
                self.in_txn(|kv| kv.txn_put(&key, &arg_bytes(&value)))?;
                Ok(render::render_done("ok", json))
            }
            Command::Delete { key } => {
                let key = checked_key(arg_bytes(&key))?;
                self.in_txn(|kv| kv.txn_delete(&key))?;
                Ok(render::render_done("ok", json))
            }
            Command::Cas { .. } => refused("cas", "is not supported: a get then a put does it under the transaction"),
            Command::Versions { .. } => {
                refused("versions", "is not supported: it lists history outside the transaction")
            }
            Command::Txn { .. } => refused("txn", "is not run: commit or abort the open one first"),
            Command::Begin { .. } => {
                Err(Failure::invalid(format!("transaction {} is open: commit or abort it first", open.id)))
            }
            Command::Commit => Ok(render::render_committed(self.in_txn(|kv| kv.commit())?, json)),
            Command::Abort => {
                self.in_txn(|kv| kv.abort())?;
                Ok(render::render_done("aborted", json))
            }
            other => self.execute(other),
        }
    }

    /// `call` on the open transaction. An `aborted`, `indeterminate` or
    /// `unavailable` answer ends it (the issue's rule), whatever the [`Kv`] did.
    fn in_txn<T>(&mut self, call: impl FnOnce(&mut dyn Kv) -> Result<T, KvError>) -> Result<T, Failure> {
        let kv = self.kv()?;
        let result = call(&mut *kv);
        if let Err(KvError::Aborted { .. } | KvError::Indeterminate { .. } | KvError::Unavailable { .. }) = &result
            && kv.open_txn().is_some()
        {
            // Best effort: the leaders' lifetime limit is the backstop.
            let _ = kv.abort();
        }
        result.map_err(Failure::from)
    }

    /// A command with no transaction open.
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
            Command::Shard(ShardCommand::List) => {
                let kv = self.kv()?;
                let map = kv.fresh_map()?;
                placement::render_shard_list(&map, &kv.status(), json)
            }
            Command::Shard(ShardCommand::Move { shard, from, to, core, wait }) => {
                let shard = placement::parse_group(&shard)?;
                let timeout = self.timeout;
                placement::run_shard_move(self.kv()?, shard, from, to, core, wait, timeout, json)?
            }
            Command::Node(NodeCommand::List) => {
                let kv = self.kv()?;
                let map = kv.fresh_map()?;
                super::nodes::render_node_list(&map, &kv.status(), json)
            }
            Command::Node(NodeCommand::Drain { node, wait }) => {
                let timeout = self.timeout;
                super::nodes::run_drain(self.kv()?, node, wait, timeout, json)?
            }
            Command::Node(NodeCommand::Remove { node, force, wait }) => {
                let timeout = self.timeout;
                super::nodes::run_remove(self.kv()?, node, force, wait, timeout, json)?
            }
            Command::Rebalance { dry_run: true, .. } => {
                let kv = self.kv()?;
                let map = kv.fresh_map()?;
                super::nodes::render_plan(&map, &kv.status(), json)?
            }
            Command::Rebalance { dry_run: false, wait } => {
                let timeout = self.timeout;
                super::nodes::run_rebalance(self.kv()?, wait, timeout, json)?
            }
            Command::Shell => return Err(Failure::invalid("`shell` cannot run inside the shell")),
            Command::Wal(WalCommand::Verify { path }) => render_wal_verify(&path, json)?,
            Command::Snapshot(SnapshotCommand::Verify { path }) => render_snapshot_verify(&path, json)?,
            Command::Wal(WalCommand::Dump { .. }) | Command::Snapshot(SnapshotCommand::Dump { .. }) => {
                return Err(dump_refused(json));
            }
            Command::Local(LocalCommand::Up(args)) => local::run_up(&args, json)?,
            Command::Local(LocalCommand::Down { dir, purge }) => local::run_down(&dir, purge, json)?,
            Command::Local(LocalCommand::Status { dir }) => local::run_status(&dir, json)?,
            Command::CheckHistory { file } => super::check::render_check(&file, json)?,
            Command::Txn { policy, ops } => {
                let ops = ops.iter().map(parse_txn_op).collect::<Result<Vec<_>, _>>()?;
                let policy = policy.map_or(Policy::WoundWait, Policy::from);
                render::render_txn(&self.kv()?.txn(policy, &ops)?, json)
            }
            Command::Begin { policy, read_only, at } => {
                let mode = if read_only {
                    TxnMode::ReadOnly { at }
                } else {
                    TxnMode::ReadWrite(policy.map_or(Policy::WoundWait, Policy::from))
                };
                let open = self.kv()?.begin(mode)?;
                render::render_begun(open.id, open.start_version, open.read_only, json)
            }
            Command::Commit | Command::Abort => return Err(Failure::from(no_open_txn())),
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

/// An in-memory [`Kv`] for tests: versioned keys, deletes as tombstones, one
/// transaction at a time (alone, it never conflicts: its writes are buffered and
/// applied at commit with one new version), and a [`Probe`] for the test.
#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    use super::*;
    use crate::ctl::args::Cli;
    use crate::ctl::memory::{probed_session, session};
    use clap::Parser;
    use corekv_rpc::txn::AbortReason;

    fn command(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("corekv-ctl").chain(args.iter().copied())).unwrap().command
    }

    /// Runs each shell line in `s` and checks its answer, string for string, and
    /// its exit code.
    fn script(s: &mut Session, steps: &[(&str, &str, u8)]) {
        for &(line, answer, exit) in steps {
            let words = shell_words::split(line).unwrap();
            let r = s.run_line(crate::ctl::args::LineCli::try_parse_from(&words).unwrap().command);
            assert_eq!((r.line.as_str(), r.exit), (answer, exit), "`{line}`");
        }
    }

    const TXN_1: &str = "00000000000000000000000000000001-1";
    const NONE_OPEN: &str = r#"{"ok":false,"error":"invalid","message":"no transaction is open: `begin` starts one"}"#;
    const NOT_FOUND: &str = r#"{"ok":false,"error":"not_found"}"#;
    const OK: &str = r#"{"ok":true}"#;

    #[test]
    fn a_transaction_reads_its_own_writes_at_version_0_and_commits_them_at_one_version() {
        let (mut s, _) = session(true);
        script(
            &mut s,
            &[
                ("put a 1", r#"{"ok":true,"version":1}"#, 0),
                ("begin --policy wait-die", &format!(r#"{{"ok":true,"txn":"{TXN_1}","start_version":2}}"#), 0),
                ("put x 1", OK, 0),
                ("put y 2", OK, 0),
                ("delete a", OK, 0),
                ("delete never-written", OK, 0),
                ("get x", r#"{"ok":true,"value":"1","version":0}"#, 0),
                ("get a", NOT_FOUND, 1),
                ("get missing", NOT_FOUND, 1),
                (
                    "scan a z",
                    r#"{"ok":true,"items":[{"key":"x","value":"1","version":0},{"key":"y","value":"2","version":0}],"more":false}"#,
                    0,
                ),
                ("scan a z --limit 1", r#"{"ok":true,"items":[{"key":"x","value":"1","version":0}],"more":true}"#, 0),
                ("commit", r#"{"ok":true,"version":2}"#, 0),
                ("get x", r#"{"ok":true,"value":"1","version":2}"#, 0),
                ("get y", r#"{"ok":true,"value":"2","version":2}"#, 0),
                ("versions a", r#"{"ok":true,"versions":[{"version":2,"deleted":true},{"version":1,"value":"1"}]}"#, 0),
                ("versions never-written", r#"{"ok":true,"versions":[]}"#, 0),
            ],
        );
        assert_eq!(s.open_txn(), None);
    }

    #[test]
    fn begin_with_one_open_and_commit_or_abort_with_none_open_are_invalid() {
        let (mut s, connects) = session(true);
        script(&mut s, &[("commit", NONE_OPEN, 2), ("abort", NONE_OPEN, 2)]);
        assert_eq!(connects.get(), 0, "nothing to ask the cluster");
        let open = format!(
            r#"{{"ok":false,"error":"invalid","message":"transaction {TXN_1} is open: commit or abort it first"}}"#
        );
        script(
            &mut s,
            &[
                ("begin", &format!(r#"{{"ok":true,"txn":"{TXN_1}","start_version":1}}"#), 0),
                ("begin --read-only", &open, 2),
                ("abort", OK, 0),
                ("abort", NONE_OPEN, 2),
                ("commit", NONE_OPEN, 2),
            ],
        );
    }

    #[test]
    fn abort_discards_the_writes_and_releases_the_locks() {
        let (mut s, probe) = probed_session(true);
        script(&mut s, &[("begin", &format!(r#"{{"ok":true,"txn":"{TXN_1}","start_version":1}}"#), 0)]);
        script(&mut s, &[("put x 1", OK, 0), ("abort", OK, 0), ("get x", NOT_FOUND, 1)]);
        assert_eq!(probe.aborts.get(), 1);
    }

    #[test]
    fn an_aborted_answer_ends_the_transaction_whatever_the_kv_left_open() {
        let (mut s, probe) = probed_session(true);
        script(&mut s, &[("begin", &format!(r#"{{"ok":true,"txn":"{TXN_1}","start_version":1}}"#), 0)]);
        script(&mut s, &[("put x 1", OK, 0)]);
        probe.doom.set(Some(AbortReason::Wounded));
        script(
            &mut s,
            &[
                ("put y 2", r#"{"ok":false,"error":"aborted","reason":"wounded"}"#, 1),
                ("commit", NONE_OPEN, 2),
                ("get x", NOT_FOUND, 1),
            ],
        );
        assert_eq!(probe.aborts.get(), 1, "its locks are released");
    }

    #[test]
    fn a_read_only_transaction_reads_one_snapshot_and_cannot_write() {
        let (mut s, _) = session(true);
        let cannot_write = r#"{"ok":false,"error":"invalid","message":"a read-only transaction cannot write"}"#;
        script(
            &mut s,
            &[
                ("put k v1", r#"{"ok":true,"version":1}"#, 0),
                ("put k v2", r#"{"ok":true,"version":2}"#, 0),
                ("begin --read-only --at 1", &format!(r#"{{"ok":true,"txn":"{TXN_1}","start_version":1}}"#), 0),
                ("get k", r#"{"ok":true,"value":"v1","version":1}"#, 0),
                ("scan '' ''", r#"{"ok":true,"items":[{"key":"k","value":"v1","version":1}],"more":false}"#, 0),
                ("put k v3", cannot_write, 2),
                ("delete k", cannot_write, 2),
                ("commit", r#"{"ok":true,"version":1}"#, 0),
                ("begin --read-only", r#"{"ok":true,"txn":"00000000000000000000000000000001-2","start_version":2}"#, 0),
                ("get k", r#"{"ok":true,"value":"v2","version":2}"#, 0),
            ],
        );
    }

    #[test]
    fn what_a_read_write_transaction_cannot_serve_is_invalid_and_leaves_it_open() {
        let (mut s, _) = session(true);
        let invalid = |m: &str| format!(r#"{{"ok":false,"error":"invalid","message":"{m}"}}"#);
        script(
            &mut s,
            &[
                ("begin", &format!(r#"{{"ok":true,"txn":"{TXN_1}","start_version":1}}"#), 0),
                (
                    "get k --at 1",
                    &invalid(
                        "get --at inside a transaction is not supported: the transaction reads at its own version",
                    ),
                    2,
                ),
                (
                    "cas k 0 v",
                    &invalid(
                        "cas inside a transaction is not supported: a get then a put does it under the transaction",
                    ),
                    2,
                ),
                (
                    "versions k",
                    &invalid(
                        "versions inside a transaction is not supported: it lists history outside the transaction",
                    ),
                    2,
                ),
                (
                    "txn -- 'put k v'",
                    &invalid("txn inside a transaction is not run: commit or abort the open one first"),
                    2,
                ),
                ("put k v", OK, 0),
                ("commit", r#"{"ok":true,"version":1}"#, 0),
            ],
        );
    }

    #[test]
    fn a_single_command_cannot_begin_commit_or_abort() {
        let (mut s, connects) = session(true);
        for name in ["begin", "commit", "abort"] {
            let r = s.run(command(&[name]));
            let message = format!(
                "`{name}` acts on the open transaction of `corekv-ctl shell`; a single command runs a whole \
                 transaction with `corekv-ctl txn -- 'get a' 'put b 1'`"
            );
            assert_eq!((r.line, r.exit), (Failure::invalid(message).render(true).line, 2));
        }
        assert_eq!(connects.get(), 0);
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
                Ok(Box::new(crate::ctl::memory::MemoryKv::default()) as Box<dyn Kv>)
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
