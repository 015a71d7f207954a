//! `bank` against etcd and Redis: the transfers of [`crate::bank`] (two
//! accounts picked by the same zipfian, one unit moved from the first to the
//! second), done the way a user of each system would do them, retried until they
//! succeed or the transaction's deadline passes:
//!
//! - etcd: read both accounts in one read-only `Txn` (one revision), then a `Txn`
//!   that puts both only if both accounts' mod revisions are still the ones read
//!   (0 for an account never written); a failed compare is an abort (`conflict`);
//! - Redis: `WATCH a b`, `MGET a b`, then `MULTI` / `SET a` / `SET b` / `EXEC`
//!   pipelined in one round trip; a nil `EXEC` (a watched key changed) is an
//!   abort (`conflict`). Each client has its own connection (WATCH state is per
//!   connection).
//!
//! Same clients, accounts, θ, warm-up, duration and backoff between attempts as
//! corekv's bank, and the same [`Figures`]. The run ends with an audit (one etcd
//! range over every account at one revision; one Redis `MGET`) that must sum to
//! zero. Everything runs on one tokio current-thread runtime, one task per client.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client as EtcdClient, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Target;
use super::resp::{Reply, encode, parse};
use crate::bank::{BankSpec, account, pick};
use crate::txn_loop::{BACKOFF_DOUBLINGS_MAX, BACKOFF_FIRST_US, Figures, TxnResult};
use crate::zipf::Zipfian;

/// How long connecting to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `acct`: the accounts' common prefix (every key of the bank has it).
const ACCOUNT_PREFIX_BYTES: usize = 4;
/// Pause after a transfer that failed other than by a conflict.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// What one peer bank run measured.
#[derive(Debug, Clone)]
pub struct PeerBankReport {
    /// Committed txns/s, aborts, retries and latency of the measured window.
    pub figures: Figures,
    /// The final audit's total (0 when the bank is right).
    pub audit_total: i64,
}

/// One attempt's end: committed, or the compare / WATCH failed.
enum Tried {
    Committed,
    Conflict,
}

/// A client's connection to the peer.
enum Conn {
    Etcd(Box<KvClient>),
    Redis(RespConn),
}

impl Conn {
    async fn transfer(&mut self, from: &[u8], to: &[u8]) -> Result<Tried, String> {
        match self {
            Conn::Etcd(kv) => etcd_transfer(kv, from, to).await,
            Conn::Redis(conn) => redis_transfer(conn, from, to).await,
        }
    }
}

/// Runs `spec`'s transfers (two accounts each) against `target` with `conns`
/// etcd connections (`None`: etcd's one per 10 clients; Redis always one per
/// client), then audits.
pub fn run_bank(
    target: &Target,
    spec: &BankSpec,
    conns: Option<usize>,
    timeout: Duration,
) -> Result<PeerBankReport, String> {
    spec.validate()?;
    if spec.keys_per_txn != 2 {
        return Err("the peers' bank moves money between two accounts (--keys-per-txn 2)".into());
    }
    let runtime = super::current_thread_runtime()?;
    tokio::task::LocalSet::new().block_on(&runtime, async {
        let conns =
            connect(target, spec.clients, conns.unwrap_or_else(|| target.default_conns(spec.clients)), timeout).await?;
        let figures = closed_loop(spec, conns, timeout).await?;
        let audit_total = audit(target, spec.accounts, timeout).await?;
        Ok(PeerBankReport { figures, audit_total })
    })
}

async fn connect(target: &Target, clients: usize, conns: usize, timeout: Duration) -> Result<Vec<Conn>, String> {
    match target {
        Target::Etcd(endpoints) => {
            let options = ConnectOptions::new().with_timeout(timeout).with_connect_timeout(CONNECT_TIMEOUT);
            let mut shared = Vec::with_capacity(conns.max(1));
            for j in 0..conns.max(1) {
                let endpoint = &endpoints[j % endpoints.len()];
                let client = EtcdClient::connect([format!("http://{endpoint}")], Some(options.clone()))
                    .await
                    .map_err(|e| format!("cannot reach etcd at {endpoint}: {e}"))?;
                shared.push(client.kv_client());
            }
            Ok((0..clients).map(|i| Conn::Etcd(Box::new(shared[i % shared.len()].clone()))).collect())
        }
        Target::Redis(addr) => {
            let mut all = Vec::with_capacity(clients);
            for _ in 0..clients {
                all.push(Conn::Redis(RespConn::connect(addr, timeout).await?));
            }
            Ok(all)
        }
    }
}

/// One task per client, transfers until the window ends; the window's figures.
async fn closed_loop(spec: &BankSpec, conns: Vec<Conn>, timeout: Duration) -> Result<Figures, String> {
    let stop = Rc::new(Cell::new(false));
    let measuring = Rc::new(Cell::new(false));
    let figures = Rc::new(RefCell::new(Figures::default()));
    let mut tasks = Vec::with_capacity(conns.len());
    for (w, mut conn) in conns.into_iter().enumerate() {
        let (stop, measuring, figures) = (stop.clone(), measuring.clone(), figures.clone());
        let (accounts, mut zipf) = (spec.accounts, Zipfian::new(spec.accounts, spec.theta));
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ (w as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        tasks.push(tokio::task::spawn_local(async move {
            while !stop.get() {
                let picked = pick(&mut zipf, &mut rng, accounts, 2);
                let result = transfer_with_retries(&mut conn, &mut rng, &picked, timeout).await;
                if measuring.get() {
                    figures.borrow_mut().add(&result);
                }
            }
        }));
    }
    tokio::time::sleep(spec.warmup).await;
    measuring.set(true);
    let started = Instant::now();
    tokio::time::sleep(spec.duration).await;
    measuring.set(false);
    let elapsed = started.elapsed();
    stop.set(true);
    for task in tasks {
        task.await.map_err(|e| format!("a bank task failed: {e}"))?;
    }
    let mut figures = figures.take();
    figures.elapsed = elapsed;
    Ok(figures)
}

/// One transfer, a new attempt after each conflict until `deadline`.
async fn transfer_with_retries(conn: &mut Conn, rng: &mut ChaCha8Rng, picked: &[u64], deadline: Duration) -> TxnResult {
    let (from, to) = (account(picked[0]), account(picked[1]));
    let began = Instant::now();
    let mut result = TxnResult::default();
    loop {
        result.attempts += 1;
        match conn.transfer(&from, &to).await {
            Ok(Tried::Committed) => {
                result.committed = true;
                break;
            }
            Ok(Tried::Conflict) => {
                result.aborts.push("conflict");
                if began.elapsed() >= deadline {
                    break;
                }
                let cap_us = BACKOFF_FIRST_US << (result.attempts as u32 - 1).min(BACKOFF_DOUBLINGS_MAX);
                tokio::time::sleep(Duration::from_micros(rng.random_range(0..=cap_us))).await;
            }
            Err(_) => {
                // Not a conflict: the transfer fails. A pause keeps a broken
                // connection from spinning.
                tokio::time::sleep(ERROR_PAUSE).await;
                break;
            }
        }
    }
    result.elapsed = began.elapsed();
    result
}

fn parse_balance(bytes: Option<&[u8]>) -> Result<i64, String> {
    match bytes {
        None => Ok(0),
        Some(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("an account holds {b:?}, not a balance")),
    }
}

/// etcd: both accounts read at one revision, then written only if neither
/// changed since.
async fn etcd_transfer(kv: &mut KvClient, from: &[u8], to: &[u8]) -> Result<Tried, String> {
    let read = Txn::new().and_then([TxnOp::get(from, None), TxnOp::get(to, None)]);
    let read = kv.txn(read).await.map_err(|e| format!("etcd: {e}"))?;
    let mut revisions = [0i64; 2];
    let mut balances = [0i64; 2];
    for (i, response) in read.op_responses().into_iter().take(2).enumerate() {
        if let TxnOpResponse::Get(got) = response
            && let Some(kv) = got.kvs().first()
        {
            revisions[i] = kv.mod_revision();
            balances[i] = parse_balance(Some(kv.value()))?;
        }
    }
    let write = Txn::new()
        .when([
            Compare::mod_revision(from, CompareOp::Equal, revisions[0]),
            Compare::mod_revision(to, CompareOp::Equal, revisions[1]),
        ])
        .and_then([
            TxnOp::put(from, (balances[0] - 1).to_string(), None),
            TxnOp::put(to, (balances[1] + 1).to_string(), None),
        ]);
    let written = kv.txn(write).await.map_err(|e| format!("etcd: {e}"))?;
    Ok(if written.succeeded() { Tried::Committed } else { Tried::Conflict })
}

/// Redis: WATCH, MGET, then MULTI / SET / SET / EXEC in one round trip.
async fn redis_transfer(conn: &mut RespConn, from: &[u8], to: &[u8]) -> Result<Tried, String> {
    expect_ok(&conn.call(&[&[b"WATCH", from, to]]).await?[0])?;
    let got = conn.call(&[&[b"MGET", from, to]]).await?;
    let balances = match &got[0] {
        Reply::Array(Some(items)) if items.len() == 2 => {
            let mut balances = [0i64; 2];
            for (i, item) in items.iter().enumerate() {
                balances[i] = match item {
                    Reply::Bulk(value) => parse_balance(value.as_deref())?,
                    other => return Err(format!("redis answered MGET with {other:?}")),
                };
            }
            balances
        }
        other => return Err(format!("redis answered MGET with {other:?}")),
    };
    let (a, b) = ((balances[0] - 1).to_string(), (balances[1] + 1).to_string());
    let replies =
        conn.call(&[&[b"MULTI"], &[b"SET", from, a.as_bytes()], &[b"SET", to, b.as_bytes()], &[b"EXEC"]]).await?;
    match &replies[3] {
        Reply::Array(None) => Ok(Tried::Conflict),
        Reply::Array(Some(done)) if done.len() == 2 => Ok(Tried::Committed),
        other => Err(format!("redis answered EXEC with {other:?}")),
    }
}

fn expect_ok(reply: &Reply) -> Result<(), String> {
    match reply {
        Reply::Simple(ok) if ok == b"OK" => Ok(()),
        other => Err(format!("redis answered {other:?}")),
    }
}

/// The total of every account, read at one point.
async fn audit(target: &Target, accounts: u64, timeout: Duration) -> Result<i64, String> {
    match target {
        Target::Etcd(endpoints) => {
            let options = ConnectOptions::new().with_timeout(timeout).with_connect_timeout(CONNECT_TIMEOUT);
            let client = EtcdClient::connect([format!("http://{}", endpoints[0])], Some(options))
                .await
                .map_err(|e| format!("cannot reach etcd: {e}"))?;
            let mut kv = client.kv_client();
            // One range over the accounts' prefix: every account at one
            // revision (a Txn of one get per account would pass etcd's limit of
            // operations per Txn).
            let prefix = account(0)[..ACCOUNT_PREFIX_BYTES].to_vec();
            let got =
                kv.get(prefix, Some(GetOptions::new().with_prefix())).await.map_err(|e| format!("etcd audit: {e}"))?;
            let mut total = 0;
            for kv in got.kvs() {
                total += parse_balance(Some(kv.value()))?;
            }
            Ok(total)
        }
        Target::Redis(addr) => {
            let mut conn = RespConn::connect(addr, timeout).await?;
            let keys: Vec<Vec<u8>> = (0..accounts).map(account).collect();
            let mut command: Vec<&[u8]> = vec![b"MGET"];
            command.extend(keys.iter().map(Vec::as_slice));
            let replies = conn.call(&[&command]).await?;
            let Reply::Array(Some(items)) = &replies[0] else {
                return Err(format!("redis answered the audit's MGET with {:?}", replies[0]));
            };
            let mut total = 0;
            for item in items {
                if let Reply::Bulk(value) = item {
                    total += parse_balance(value.as_deref())?;
                }
            }
            Ok(total)
        }
    }
}

/// One client's own Redis connection: commands written together, replies read
/// in order.
struct RespConn {
    stream: TcpStream,
    buf: Vec<u8>,
    timeout: Duration,
}

impl RespConn {
    async fn connect(addr: &str, timeout: Duration) -> Result<RespConn, String> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("cannot reach redis at {addr}: timed out"))?
            .map_err(|e| format!("cannot reach redis at {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| format!("cannot reach redis at {addr}: {e}"))?;
        Ok(RespConn { stream, buf: Vec::with_capacity(4096), timeout })
    }

    /// `commands` pipelined; one reply each, in order.
    async fn call(&mut self, commands: &[&[&[u8]]]) -> Result<Vec<Reply>, String> {
        let mut out = Vec::new();
        for command in commands {
            encode(&mut out, command);
        }
        tokio::time::timeout(self.timeout, self.exchange(&out, commands.len()))
            .await
            .map_err(|_| format!("redis: no reply within {:?}", self.timeout))?
    }

    async fn exchange(&mut self, out: &[u8], replies: usize) -> Result<Vec<Reply>, String> {
        self.stream.write_all(out).await.map_err(|e| format!("redis: {e}"))?;
        let mut got = Vec::with_capacity(replies);
        while got.len() < replies {
            match parse(&self.buf).map_err(|e| format!("redis: {e}"))? {
                Some((reply, used)) => {
                    self.buf.drain(..used);
                    got.push(reply);
                }
                None => {
                    if self.stream.read_buf(&mut self.buf).await.map_err(|e| format!("redis: {e}"))? == 0 {
                        return Err("redis closed the connection".into());
                    }
                }
            }
        }
        Ok(got)
    }
}
