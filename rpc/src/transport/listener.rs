//! The listener of one core's port: handshakes, peer frames handed over in
//! place, client calls with bounded in-flight budgets and reply queues. Runs
//! inside the core's glommio executor.

use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future::or;
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::{CancellationToken, Gate};
use rkyv::rancor;
use thiserror::Error;

use super::{
    ACCEPT_ERROR_PAUSE, CLIENT_REPLY_QUEUE_MAX, FramedReader, FramedWriter, HANDSHAKE_TIMEOUT, Signal, TransportError,
    encode_batches, framed, server_handshake,
};
use crate::frame::{self, FRAME_PAYLOAD_BYTES_MAX, FrameError};
use crate::kv::{NodeId, Outcome, Response};
use crate::map::CoreIndex;
use crate::node::{
    ArchivedPeerBatch, CLIENT_CALLS_INFLIGHT_MAX, ClientBatch, Hello, PeerBatch, Reply, Role, ServerBatch, TaggedCall,
    TaggedReply, Welcome,
};

/// A peer core, as it introduced itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerId {
    /// The peer node.
    pub node: NodeId,
    /// The core of that node that opened the connection.
    pub core: CoreIndex,
}

/// What a [`Listener`] hands its owner. Called inside the listener's executor;
/// implementations must not block.
pub trait Inbound {
    /// Accepts (with this core's identity) or refuses (with a reason naming both
    /// values of a mismatch) a connection's handshake.
    fn hello(&self, hello: &Hello, from: SocketAddr) -> Result<Welcome, String>;

    /// One validated frame from a peer core, read in place.
    fn peer_batch(&self, from: PeerId, batch: &ArchivedPeerBatch);

    /// One call from a client. Answer now or later, in any order, through
    /// `replies` (which may be cloned and kept): every call handed here must be
    /// answered exactly once, or the client's in-flight budget shrinks until it
    /// disconnects.
    fn client_call(&self, call: TaggedCall, replies: &ReplySender);
}

/// Counters of one [`Listener`], monotonic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed for bad input: garbage, oversized or bad-CRC frames,
    /// invalid archives, refused or missing handshakes.
    pub bad_connections: u64,
    /// Frames from peers.
    pub peer_frames_received: u64,
    /// Messages inside those frames.
    pub peer_messages_received: u64,
    /// Frames from clients.
    pub client_frames_received: u64,
    /// Calls inside those frames.
    pub client_calls_received: u64,
    /// Frames to clients (one per flush of a connection's reply queue).
    pub client_frames_sent: u64,
    /// Replies inside those frames.
    pub client_replies_sent: u64,
    /// Calls answered Busy because the client had too many unanswered.
    pub busy: u64,
}

type SharedStats = Rc<Cell<ListenerStats>>;

fn bump(stats: &SharedStats, f: impl FnOnce(&mut ListenerStats)) {
    let mut s = stats.get();
    f(&mut s);
    stats.set(s);
}

/// Settings of a [`Listener`].
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Largest frame payload accepted after the handshake.
    pub payload_bytes_max: u32,
    /// Most unanswered calls per client connection; the excess is answered Busy.
    pub client_calls_inflight_max: usize,
    /// Answered replies held per client connection before it stops reading.
    pub client_reply_queue_max: usize,
    /// How long a new connection may take to send its [`Hello`].
    pub handshake_timeout: Duration,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            payload_bytes_max: FRAME_PAYLOAD_BYTES_MAX,
            client_calls_inflight_max: CLIENT_CALLS_INFLIGHT_MAX,
            client_reply_queue_max: CLIENT_REPLY_QUEUE_MAX,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

/// Accepts connections on one core's port and serves them until stopped.
pub struct Listener {
    local_addr: SocketAddr,
    stop: CancellationToken,
    gate: Gate,
    stats: SharedStats,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").field("local_addr", &self.local_addr).field("stats", &self.stats()).finish()
    }
}

impl Listener {
    /// Binds `addr` (`HOST:PORT`; port 0 picks a free one) and starts accepting.
    /// No retry: an address in use is the caller's to handle (its error kind is
    /// `AddrInUse`). Must be called inside a glommio executor.
    ///
    /// glommio binds with SO_REUSEPORT, which would let two servers share a port
    /// silently. A plain bind cannot tell: without SO_REUSEPORT it also trips on
    /// the TIME_WAIT leftovers of our own previous run, so a restarted node could
    /// not reuse its port for a minute. Instead, after binding, the kernel's table
    /// of listening sockets is read, and a second listener on the same address
    /// turns into `AddrInUse` (two processes racing both refuse; the launcher
    /// retries with other ports).
    pub fn bind(addr: &str, inbound: Rc<dyn Inbound>, config: ListenerConfig) -> io::Result<Listener> {
        let listener = TcpListener::bind(addr).map_err(io::Error::from)?;
        let local_addr = listener.local_addr().map_err(io::Error::from)?;
        let listeners = listening_sockets(local_addr)?;
        if listeners > 1 {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{local_addr} is already in use ({} other listener(s))", listeners - 1),
            ));
        }
        let stop = CancellationToken::new();
        let gate = Gate::new();
        let stats = SharedStats::default();
        let accept = accept_loop(listener, inbound, Rc::new(config), stop.clone(), gate.clone(), stats.clone());
        gate.spawn(accept).map_err(io::Error::from)?.detach();
        Ok(Listener { local_addr, stop, gate, stats })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The listener's counters.
    pub fn stats(&self) -> ListenerStats {
        self.stats.get()
    }

    /// Stops accepting, closes every connection, and returns once all of them
    /// are closed.
    pub async fn stop(self) {
        self.stop.cancel();
        // Closing fails only when already closed.
        let _ = self.gate.close().await;
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// How many listening TCP sockets the kernel has on `addr`'s port (and address,
/// or a wildcard address), from /proc/net/tcp and /proc/net/tcp6.
fn listening_sockets(addr: SocketAddr) -> io::Result<usize> {
    const TCP_LISTEN: &str = "0A";
    let own_ipv4 = match addr.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
        _ => None,
    };
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match std::fs::read_to_string(table) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in text.lines().skip(1) {
            let mut fields = line.split_whitespace();
            let (Some(local), Some(state)) = (fields.nth(1), fields.nth(1)) else { continue };
            let Some((ip_hex, port_hex)) = local.split_once(':') else { continue };
            if state != TCP_LISTEN || u16::from_str_radix(port_hex, 16).ok() != Some(addr.port()) {
                continue;
            }
            // IPv4 addresses are printed as one host-order u32; a listener on
            // another specific IPv4 address does not conflict with ours.
            if let (Some(own), Ok(theirs)) = (own_ipv4, u32::from_str_radix(ip_hex, 16)) {
                let theirs = std::net::Ipv4Addr::from(theirs.to_le_bytes());
                if ip_hex.len() == 8 && !theirs.is_unspecified() && theirs != own {
                    continue;
                }
            }
            count += 1;
        }
    }
    Ok(count)
}

async fn accept_loop(
    listener: TcpListener,
    inbound: Rc<dyn Inbound>,
    config: Rc<ListenerConfig>,
    stop: CancellationToken,
    gate: Gate,
    stats: SharedStats,
) {
    loop {
        let accepted = or(
            async {
                stop.cancelled().await;
                None
            },
            async { Some(listener.accept().await) },
        )
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        bump(&stats, |s| s.accepted += 1);
        let conn = serve_connection(stream, inbound.clone(), config.clone(), stats.clone());
        let stop = stop.clone();
        let guarded = async move {
            or(stop.cancelled(), conn).await;
        };
        if gate.spawn(guarded).map(|task| task.detach()).is_err() {
            return;
        }
    }
}

async fn serve_connection(stream: TcpStream, inbound: Rc<dyn Inbound>, config: Rc<ListenerConfig>, stats: SharedStats) {
    let peer = stream.peer_addr().ok();
    let result = async {
        let (mut reader, mut writer) = framed(stream, config.payload_bytes_max)?;
        let from = reader.peer_addr();
        let hello =
            server_handshake(&mut reader, &mut writer, config.handshake_timeout, |hello| inbound.hello(hello, from))
                .await?;
        match hello.role {
            Role::Peer { node, core, .. } => serve_peer(reader, PeerId { node, core }, &*inbound, &stats).await,
            Role::Client => serve_client(reader, writer, inbound.clone(), &config, &stats).await,
        }
    }
    .await;
    let Err(e) = result else { return };
    let peer = peer.map_or_else(|| "?".to_string(), |p| p.to_string());
    if e.is_bad_input() {
        bump(&stats, |s| s.bad_connections += 1);
        tracing::warn!(peer = %peer, error = %e, "closing connection: bad input");
    } else {
        tracing::debug!(peer = %peer, error = %e, "connection ended");
    }
}

async fn serve_peer(
    mut reader: FramedReader,
    from: PeerId,
    inbound: &dyn Inbound,
    stats: &SharedStats,
) -> Result<(), TransportError> {
    loop {
        let payload = reader.next_frame().await?;
        let batch = frame::access::<PeerBatch>(&payload)?;
        bump(stats, |s| {
            s.peer_frames_received += 1;
            s.peer_messages_received += batch.messages.len() as u64;
        });
        inbound.peer_batch(from, batch);
    }
}

/// Why a reply was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReplyError {
    /// The client's connection is gone; nobody will read the reply.
    #[error("the client connection is closed")]
    Closed,
    /// No unanswered call has this id (answered already, or never handed out).
    #[error("no unanswered call {0} on this connection")]
    UnknownCall(u64),
}

struct ClientConn {
    replies: RefCell<VecDeque<TaggedReply>>,
    /// Ids handed to the [`Inbound`] and not yet answered.
    unanswered: RefCell<HashSet<u64>>,
    /// Wakes the writer: replies queued.
    work: Signal,
    /// Wakes the reader: room in the reply queue.
    room: Signal,
    closed: Cell<bool>,
}

impl ClientConn {
    fn push(&self, id: u64, reply: Reply) {
        self.replies.borrow_mut().push_back(TaggedReply { id, reply });
        self.work.notify();
    }
}

/// Sends replies to one client connection, by call id, in any order. Cheap to
/// clone; keep it as long as a call is pending.
#[derive(Clone)]
pub struct ReplySender {
    conn: Rc<ClientConn>,
}

impl std::fmt::Debug for ReplySender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplySender").field("closed", &self.conn.closed.get()).finish_non_exhaustive()
    }
}

impl ReplySender {
    /// Queues the reply to call `id`; the connection's writer sends it with the
    /// others queued by then, in one frame.
    pub fn reply(&self, id: u64, reply: Reply) -> Result<(), ReplyError> {
        if self.conn.closed.get() {
            return Err(ReplyError::Closed);
        }
        if !self.conn.unanswered.borrow_mut().remove(&id) {
            return Err(ReplyError::UnknownCall(id));
        }
        self.conn.push(id, reply);
        Ok(())
    }

    /// Whether the client is gone (a pending call's work may be abandoned).
    pub fn is_closed(&self) -> bool {
        self.conn.closed.get()
    }
}

async fn serve_client(
    reader: FramedReader,
    writer: FramedWriter,
    inbound: Rc<dyn Inbound>,
    config: &ListenerConfig,
    stats: &SharedStats,
) -> Result<(), TransportError> {
    let conn = Rc::new(ClientConn {
        replies: RefCell::new(VecDeque::new()),
        unanswered: RefCell::new(HashSet::new()),
        work: Signal::default(),
        room: Signal::default(),
        closed: Cell::new(false),
    });
    let result =
        or(read_client_calls(reader, &conn, &*inbound, config, stats), write_client_replies(writer, &conn, stats))
            .await;
    conn.closed.set(true);
    conn.replies.borrow_mut().clear();
    conn.unanswered.borrow_mut().clear();
    result
}

async fn read_client_calls(
    mut reader: FramedReader,
    conn: &Rc<ClientConn>,
    inbound: &dyn Inbound,
    config: &ListenerConfig,
    stats: &SharedStats,
) -> Result<(), TransportError> {
    let sender = ReplySender { conn: conn.clone() };
    loop {
        let payload = match reader.next_frame().await {
            Ok(payload) => payload,
            Err(TransportError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        let batch = frame::access::<ClientBatch>(&payload)?;
        bump(stats, |s| {
            s.client_frames_received += 1;
            s.client_calls_received += batch.calls.len() as u64;
        });
        for archived in batch.calls.iter() {
            // Back-pressure: a client that does not read its replies stops being read.
            conn.room.wait_until(|| conn.replies.borrow().len() < config.client_reply_queue_max).await;
            let id = archived.id.to_native();
            if conn.unanswered.borrow().len() >= config.client_calls_inflight_max {
                bump(stats, |s| s.busy += 1);
                conn.push(id, Reply::Kv(Response::Busy));
                continue;
            }
            if !conn.unanswered.borrow_mut().insert(id) {
                let message = format!("call id {id} is already in flight on this connection");
                conn.push(id, Reply::Kv(Response::Outcome(Outcome::invalid(message))));
                continue;
            }
            let call = rkyv::deserialize::<TaggedCall, rancor::Error>(archived)
                .map_err(|e| FrameError::Invalid(e.to_string()))?;
            inbound.client_call(call, &sender);
        }
    }
}

async fn write_client_replies(
    mut writer: FramedWriter,
    conn: &ClientConn,
    stats: &SharedStats,
) -> Result<(), TransportError> {
    loop {
        conn.work.wait_until(|| !conn.replies.borrow().is_empty()).await;
        let replies: Vec<TaggedReply> = conn.replies.borrow_mut().drain(..).collect();
        conn.room.notify();
        let (payloads, oversized) = encode_batches(replies, |replies| ServerBatch { replies }, |batch| batch.replies);
        if oversized > 0 {
            // A reply larger than a frame is a server bug (scan replies are capped
            // far below it); the client would wait forever, so end the connection.
            return Err(TransportError::Protocol("a reply does not fit in one frame"));
        }
        for (payload, count) in payloads {
            writer.write_frame(&payload).await?;
            bump(stats, |s| {
                s.client_frames_sent += 1;
                s.client_replies_sent += count as u64;
            });
        }
    }
}
