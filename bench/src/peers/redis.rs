//! The Redis driver: `GET` / `SET` over RESP ([`super::resp`]) on plain tokio
//! TCP, one thread.
//!
//! A connection is a write buffer, a queue of waiting requests and a reader
//! task. A caller appends its request to the buffer and writes the buffer out
//! at once when the socket takes it (a writer task finishes the rest when it
//! does not); the reader parses replies and hands each to the oldest waiter
//! (Redis answers in order). So a client with several requests in flight
//! pipelines them, and one with a single request costs one write and one read,
//! as `redis-benchmark` does. One watchdog per connection, not a timer per
//! request, fails the connection when its oldest request waits past the
//! deadline: every waiter then gets an error.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, oneshot};

use super::WriteCounts;
use super::resp::{Reply, encode, parse};
use crate::runner::{Answer, Driver};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read buffer of a connection (grows for a larger reply).
const READ_BUFFER_BYTES: usize = 64 << 10;

/// Why a request got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The connection was already gone: the request was never sent.
    NotSent,
    /// The connection broke, or the reply did not come in time, after sending.
    Lost,
}

/// A request waiting for its reply.
struct Waiter {
    reply: oneshot::Sender<Reply>,
    sent_at: Instant,
}

struct Connection {
    socket: OwnedWriteHalf,
    /// Requests not yet written, in order: whoever writes, writes from the front.
    out: RefCell<Vec<u8>>,
    waiters: RefCell<VecDeque<Waiter>>,
    wake_writer: Notify,
    broken: RefCell<Option<String>>,
}

impl Connection {
    fn fail(&self, why: String) {
        self.broken.borrow_mut().get_or_insert(why);
        // Dropping the senders answers every waiter with an error.
        self.waiters.borrow_mut().clear();
    }

    /// Writes as much of `out` as the socket takes without waiting; whether
    /// everything went.
    fn flush_now(&self) -> bool {
        let mut out = self.out.borrow_mut();
        while !out.is_empty() {
            match self.socket.try_write(&out) {
                Ok(n) => drop(out.drain(..n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    drop(out);
                    self.fail(format!("write: {e}"));
                    return true;
                }
            }
        }
        true
    }
}

/// Finishes the writes the callers could not (a full socket buffer).
async fn write_loop(conn: Rc<Connection>) {
    loop {
        conn.wake_writer.notified().await;
        while conn.broken.borrow().is_none() && !conn.flush_now() {
            if let Err(e) = conn.socket.writable().await {
                return conn.fail(format!("write: {e}"));
            }
        }
    }
}

/// Fails the connection when its oldest request waits longer than `timeout`
/// (one timer per connection instead of one per request).
async fn watchdog(conn: std::rc::Weak<Connection>, timeout: Duration) {
    loop {
        tokio::time::sleep(timeout / 4).await;
        let Some(conn) = conn.upgrade() else { return };
        if conn.broken.borrow().is_some() {
            return;
        }
        let oldest = conn.waiters.borrow().front().map(|w| w.sent_at.elapsed());
        if oldest.is_some_and(|waited| waited > timeout) {
            return conn.fail(format!("no reply within {timeout:?}"));
        }
    }
}

async fn read_loop(conn: Rc<Connection>, mut socket: OwnedReadHalf) {
    let mut buf = Vec::with_capacity(READ_BUFFER_BYTES);
    loop {
        match socket.read_buf(&mut buf).await {
            Ok(0) => return conn.fail("the server closed the connection".into()),
            Ok(_) => {}
            Err(e) => return conn.fail(format!("read: {e}")),
        }
        let mut at = 0;
        loop {
            match parse(&buf[at..]) {
                Ok(Some((reply, used))) => {
                    at += used;
                    match conn.waiters.borrow_mut().pop_front() {
                        Some(waiter) => drop(waiter.reply.send(reply)),
                        None => return conn.fail("a reply nobody asked for".into()),
                    }
                }
                Ok(None) => break,
                Err(e) => return conn.fail(e.to_string()),
            }
        }
        buf.drain(..at);
        if buf.capacity() - buf.len() < READ_BUFFER_BYTES / 4 {
            buf.reserve(READ_BUFFER_BYTES);
        }
        if conn.broken.borrow().is_some() {
            return;
        }
    }
}

/// One Redis client: a share of one connection.
#[derive(Clone)]
pub struct RedisDriver {
    conn: Rc<Connection>,
    timeout: Duration,
    counts: Rc<WriteCounts>,
}

impl std::fmt::Debug for RedisDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDriver").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl RedisDriver {
    /// `clients` drivers over `conns` connections to `addr`, each checked with a
    /// `PING`; writes are counted in `counts`. Must run inside a `LocalSet`.
    pub async fn connect_all(
        addr: &str,
        clients: usize,
        conns: usize,
        timeout: Duration,
        counts: &Rc<WriteCounts>,
    ) -> Result<Vec<RedisDriver>, String> {
        let mut connections = Vec::with_capacity(conns);
        for _ in 0..conns {
            let driver = RedisDriver::connect(addr, timeout, counts.clone()).await?;
            match driver.call(&[b"PING"]).await {
                Ok(Reply::Simple(pong)) if pong == b"PONG" => {}
                Ok(other) => return Err(format!("redis at {addr} answered PING with {other:?}")),
                Err(_) => return Err(format!("redis at {addr} did not answer PING: {}", driver.broken_reason())),
            }
            connections.push(driver);
        }
        Ok((0..clients).map(|i| connections[i % connections.len()].clone()).collect())
    }

    async fn connect(addr: &str, timeout: Duration, counts: Rc<WriteCounts>) -> Result<RedisDriver, String> {
        let fail = |e: String| format!("cannot reach redis at {addr}: {e}");
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| fail("timed out".into()))?
            .map_err(|e| fail(e.to_string()))?;
        stream.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
        let (read, write) = stream.into_split();
        let conn = Rc::new(Connection {
            socket: write,
            out: RefCell::new(Vec::new()),
            waiters: RefCell::new(VecDeque::new()),
            wake_writer: Notify::new(),
            broken: RefCell::new(None),
        });
        tokio::task::spawn_local(write_loop(conn.clone()));
        tokio::task::spawn_local(read_loop(conn.clone(), read));
        tokio::task::spawn_local(watchdog(Rc::downgrade(&conn), timeout));
        Ok(RedisDriver { conn, timeout, counts })
    }

    fn broken_reason(&self) -> String {
        self.conn.broken.borrow().clone().unwrap_or_else(|| "timed out".into())
    }

    async fn call(&self, args: &[&[u8]]) -> Result<Reply, Failure> {
        if self.conn.broken.borrow().is_some() {
            return Err(Failure::NotSent);
        }
        let (tx, rx) = oneshot::channel();
        encode(&mut self.conn.out.borrow_mut(), args);
        self.conn.waiters.borrow_mut().push_back(Waiter { reply: tx, sent_at: Instant::now() });
        if !self.conn.flush_now() {
            self.conn.wake_writer.notify_one();
        }
        rx.await.map_err(|_| Failure::Lost)
    }
}

impl Driver for RedisDriver {
    async fn read(&self, key: &[u8]) -> Answer {
        match self.call(&[b"GET", key]).await {
            Ok(Reply::Bulk(Some(value))) => Answer::value(None, value),
            Ok(Reply::Bulk(None)) => Answer::err("not_found"),
            _ => Answer::err("unavailable"),
        }
    }

    async fn write(&self, key: &[u8], value: &[u8]) -> Answer {
        self.counts.sent();
        match self.call(&[b"SET", key, value]).await {
            Ok(Reply::Simple(ok)) if ok == b"OK" => {
                self.counts.ok();
                Answer::ok(None)
            }
            // An error reply (MISCONF, OOM …): Redis did not apply it.
            Ok(_) | Err(Failure::NotSent) => Answer::err("unavailable"),
            Err(Failure::Lost) => Answer::err("indeterminate"),
        }
    }

    async fn scan(&self, _start: &[u8], _count: u32) -> Answer {
        // Plain Redis keys have no order (see `Target::supports`, which refuses
        // ycsb-e before a run starts).
        Answer::err("unsupported")
    }
}
