//! The TCP transport (DESIGN §9): framed connections over glommio sockets, the
//! handshake, outbound peer links and the listener that serves peers and clients.
//!
//! Core affinity: everything here runs inside ONE glommio executor (one core) and
//! is single-threaded: `Rc`, `RefCell` and `Cell`, no `Send`, no locks. A server
//! runs one [`Listener`] and one [`PeerLink`] per destination (node, core) on each
//! of its cores.
//!
//! Invariants:
//! - every queue is bounded: a [`PeerLink`] holds at most `queue_messages_max`
//!   messages and drops (counting) what does not fit or arrives while the link is
//!   down; a client connection holds at most [`CLIENT_CALLS_INFLIGHT_MAX`] calls the
//!   server has not answered (the excess is answered `Busy`) and stops reading while
//!   its reply queue is full;
//! - every inbound frame is size-checked before allocation, CRC-checked, and
//!   validated (bytecheck) before it is read; bad input closes that connection only;
//! - a writer task sends everything queued as one frame per flush;
//! - nothing busy-polls: idle tasks wait on wakers, sockets or timers.

use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_lite::future::{or, poll_fn};
use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::{CancellationToken, Gate};
use glommio::task::JoinHandle;
use rkyv::rancor;
use thiserror::Error;

use crate::frame::{self, FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX, FrameDecoder, FrameError, Payload};
use crate::kv::{NodeId, Outcome, Response};
use crate::map::CoreIndex;
use crate::node::{
    self, ArchivedPeerBatch, CLIENT_CALLS_INFLIGHT_MAX, ClientBatch, Hello, HelloReply, PeerBatch, PeerMessage, Reply,
    Role, ServerBatch, TaggedCall, TaggedReply, WIRE_VERSION, Welcome,
};

/// How long either side waits for the other's handshake frame.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest handshake frame a server reads (a Hello is tens of bytes).
pub const HELLO_BYTES_MAX: u32 = 64 << 10;
/// Default bound on the messages a [`PeerLink`] holds while its writer is busy.
pub const PEER_LINK_QUEUE_MESSAGES_MAX: usize = 4096;
/// Default first reconnect delay of a [`PeerLink`]; it doubles per failure.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(20);
/// Default ceiling of the reconnect delay.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Answered replies a client connection holds before it stops reading calls.
pub const CLIENT_REPLY_QUEUE_MAX: usize = CLIENT_CALLS_INFLIGHT_MAX;
/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 64 << 10;
/// Pause after a failed accept (out of descriptors, say) so the loop cannot spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Why a connection ended or could not be made.
#[derive(Debug, Error)]
pub enum TransportError {
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The byte stream is not a valid sequence of frames (oversized, bad CRC, or
    /// not a valid archive).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The other side closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// The other side closed the connection in the middle of a frame.
    #[error("connection closed inside a frame ({buffered} bytes of it received)")]
    Truncated {
        /// Bytes of the unfinished frame received.
        buffered: usize,
    },
    /// No handshake frame in time ([`HANDSHAKE_TIMEOUT`] by default).
    #[error("no handshake within {0:?}")]
    HandshakeTimeout(Duration),
    /// The handshake was refused (by us or by the other side).
    #[error("handshake refused: {0}")]
    Refused(String),
    /// A frame arrived that this side of the protocol never expects.
    #[error("unexpected frame: {0}")]
    Protocol(&'static str),
}

impl TransportError {
    /// Whether the other side sent something invalid (as opposed to the network
    /// failing or the connection ending normally): such connections are counted
    /// in `bad_connections`.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            TransportError::Frame(_)
                | TransportError::Truncated { .. }
                | TransportError::HandshakeTimeout(_)
                | TransportError::Refused(_)
                | TransportError::Protocol(_)
        )
    }
}

/// One socket shared by its reading and writing halves. glommio keeps separate
/// readiness sources for reads and writes, and a borrow lasts one `poll` call, so
/// both halves may wait at the same time.
type SharedStream = Rc<RefCell<TcpStream>>;

/// The reading half of a framed connection.
pub struct FramedReader {
    stream: SharedStream,
    decoder: FrameDecoder,
    chunk: Vec<u8>,
    peer: SocketAddr,
}

impl std::fmt::Debug for FramedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramedReader").field("peer", &self.peer).finish_non_exhaustive()
    }
}

impl FramedReader {
    /// The next frame's payload: size-checked before allocation, CRC-checked,
    /// 16-byte aligned. Cancel-safe: bytes already read stay in the decoder.
    pub async fn next_frame(&mut self) -> Result<Payload, TransportError> {
        loop {
            if let Some(payload) = self.decoder.next_frame()? {
                return Ok(payload);
            }
            let (stream, chunk) = (&self.stream, &mut self.chunk);
            let n = poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_read(cx, chunk)).await?;
            if n == 0 {
                let buffered = self.decoder.buffered_bytes();
                return Err(if buffered == 0 {
                    TransportError::Closed
                } else {
                    TransportError::Truncated { buffered }
                });
            }
            self.decoder.feed(&self.chunk[..n]);
        }
    }

    /// The largest payload accepted.
    pub fn payload_bytes_max(&self) -> u32 {
        self.decoder.payload_bytes_max()
    }

    /// Changes the largest payload accepted from the next frame on.
    pub fn set_payload_bytes_max(&mut self, payload_bytes_max: u32) {
        self.decoder.set_payload_bytes_max(payload_bytes_max);
    }

    /// The other side's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
}

/// The writing half of a framed connection.
pub struct FramedWriter {
    stream: SharedStream,
    buf: Vec<u8>,
}

impl std::fmt::Debug for FramedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramedWriter").finish_non_exhaustive()
    }
}

impl FramedWriter {
    /// Writes one frame (header, then `payload`) in one write.
    pub async fn write_frame(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&len| len <= FRAME_PAYLOAD_BYTES_MAX)
            .ok_or(FrameError::TooLarge { len: u32::MAX, max: FRAME_PAYLOAD_BYTES_MAX })?;
        self.buf.clear();
        self.buf.reserve(FRAME_HEADER_BYTES + payload.len());
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        self.buf.extend_from_slice(payload);
        let mut rest = &self.buf[..];
        while !rest.is_empty() {
            let stream = &self.stream;
            let n = poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_write(cx, rest)).await?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero).into());
            }
            rest = &rest[n..];
        }
        // Large frames should not pin their buffer for the connection's lifetime.
        if self.buf.capacity() > READ_CHUNK_BYTES * 16 {
            self.buf = Vec::new();
        }
        Ok(())
    }
}

/// Splits a connected stream into framed halves, setting TCP_NODELAY (frames are
/// already batched; Nagle would only add latency).
pub fn framed(stream: TcpStream, payload_bytes_max: u32) -> Result<(FramedReader, FramedWriter), TransportError> {
    stream.set_nodelay(true).map_err(io::Error::from)?;
    let peer = stream.peer_addr().map_err(io::Error::from)?;
    let stream = Rc::new(RefCell::new(stream));
    let reader = FramedReader {
        stream: stream.clone(),
        decoder: FrameDecoder::new(payload_bytes_max),
        chunk: vec![0; READ_CHUNK_BYTES],
        peer,
    };
    Ok((reader, FramedWriter { stream, buf: Vec::new() }))
}

/// Client side of the handshake: sends `hello`, waits (bounded) for the answer.
pub async fn client_handshake(
    reader: &mut FramedReader,
    writer: &mut FramedWriter,
    hello: &Hello,
) -> Result<Welcome, TransportError> {
    let exchange = async {
        writer.write_frame(&node::to_bytes(hello)).await?;
        let payload = reader.next_frame().await?;
        let reply: HelloReply = decode(&payload)?;
        reply.into_welcome().map_err(TransportError::Refused)
    };
    glommio::future::timeout(HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| TransportError::HandshakeTimeout(HANDSHAKE_TIMEOUT))?
}

/// Server side of the handshake: reads the first frame as a [`Hello`] (within
/// `timeout`, e.g. [`HANDSHAKE_TIMEOUT`], and [`HELLO_BYTES_MAX`]), lets `decide` accept or refuse
/// it, and answers. A refusal is sent as [`HelloReply::Refused`] and returned as
/// [`TransportError::Refused`]: the caller closes the connection.
pub async fn server_handshake<F>(
    reader: &mut FramedReader,
    writer: &mut FramedWriter,
    timeout: Duration,
    decide: F,
) -> Result<Hello, TransportError>
where
    F: FnOnce(&Hello) -> Result<Welcome, String>,
{
    let payload_bytes_max = reader.payload_bytes_max();
    reader.set_payload_bytes_max(HELLO_BYTES_MAX.min(payload_bytes_max));
    let payload = glommio::future::timeout(timeout, reader.next_frame())
        .await
        .map_err(|_| TransportError::HandshakeTimeout(timeout))??;
    reader.set_payload_bytes_max(payload_bytes_max);
    let hello: Hello = decode(&payload)?;
    let verdict = if hello.wire_version != WIRE_VERSION {
        Err(format!("wire version {} is not ours ({WIRE_VERSION})", hello.wire_version))
    } else {
        decide(&hello)
    };
    match verdict {
        Ok(welcome) => {
            writer.write_frame(&node::to_bytes(&HelloReply::from(welcome))).await?;
            Ok(hello)
        }
        Err(reason) => {
            // Best effort: the connection closes whether or not the refusal arrives.
            let refusal = HelloReply::Refused { reason: reason.clone() };
            let _ = writer.write_frame(&node::to_bytes(&refusal)).await;
            Err(TransportError::Refused(reason))
        }
    }
}

/// Connects to `addr`, splits the stream and runs the client handshake.
pub async fn connect(
    addr: &str,
    hello: &Hello,
    payload_bytes_max: u32,
) -> Result<(FramedReader, FramedWriter, Welcome), TransportError> {
    let stream = TcpStream::connect_timeout(addr, HANDSHAKE_TIMEOUT).await.map_err(io::Error::from)?;
    let (mut reader, mut writer) = framed(stream, payload_bytes_max)?;
    let welcome = client_handshake(&mut reader, &mut writer, hello).await?;
    Ok((reader, writer, welcome))
}

/// Validates (bytecheck) and deserializes a small payload.
fn decode<T>(payload: &Payload) -> Result<T, TransportError>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    let archived = frame::access::<T>(payload)?;
    rkyv::deserialize::<T, rancor::Error>(archived).map_err(|e| FrameError::Invalid(e.to_string()).into())
}

/// Serializes `items`, wrapped into a batch by `wrap`, into payloads of at most
/// [`FRAME_PAYLOAD_BYTES_MAX`] bytes: the whole queue is one frame unless it does
/// not fit, in which case it is halved (`unwrap` takes the items back). Returns
/// the payloads with their item counts, and how many items were too large to send
/// even alone.
fn encode_batches<T, B>(
    items: Vec<T>,
    wrap: impl Fn(Vec<T>) -> B,
    unwrap: impl Fn(B) -> Vec<T>,
) -> (Vec<(Vec<u8>, usize)>, usize)
where
    B: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rancor::Error,
            >,
        >,
{
    let mut out = Vec::new();
    let mut oversized = 0;
    let mut pending = vec![items];
    while let Some(items) = pending.pop() {
        let count = items.len();
        let batch = wrap(items);
        let bytes = node::to_bytes(&batch);
        if bytes.len() <= FRAME_PAYLOAD_BYTES_MAX as usize {
            out.push((bytes, count));
        } else if count <= 1 {
            oversized += count;
        } else {
            let mut first = unwrap(batch);
            let second = first.split_off(count / 2);
            pending.push(second);
            pending.push(first);
        }
    }
    (out, oversized)
}

/// A one-waiter wake-up: a task waits until a condition holds; whoever changes
/// the condition calls `notify`.
#[derive(Default)]
struct Signal {
    waker: RefCell<Option<Waker>>,
}

impl Signal {
    fn notify(&self) {
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    async fn wait_until(&self, ready: impl Fn() -> bool) {
        poll_fn(|cx| {
            if ready() {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Counters of one [`PeerLink`], monotonic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerLinkStats {
    /// Frames written (one per flush of the queue, unless it had to be split).
    pub frames_sent: u64,
    /// Messages written inside those frames.
    pub messages_sent: u64,
    /// Messages dropped: queue full, link down, lost with a failed connection, or
    /// too large for a frame. Raft retransmits what matters.
    pub messages_dropped: u64,
    /// Successful connects (handshake included).
    pub connects: u64,
    /// Connect or handshake attempts that failed.
    pub connect_failures: u64,
}

/// Where a [`PeerLink`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Connecting (or about to): messages queue up, within the bound.
    Connecting,
    /// Connected: the writer drains the queue.
    Up,
    /// Waiting out the backoff after a failure: messages are dropped.
    Down,
}

/// Why [`PeerLink::try_send`] did not take a message (it is counted as dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SendRefused {
    /// The bounded queue is full.
    #[error("peer link queue is full")]
    QueueFull,
    /// The link is down, waiting to reconnect.
    #[error("peer link is down")]
    Down,
}

/// Settings of a [`PeerLink`].
#[derive(Debug, Clone)]
pub struct PeerLinkConfig {
    /// Most messages queued while the writer is busy or connecting.
    pub queue_messages_max: usize,
    /// First reconnect delay; doubles per consecutive failure.
    pub backoff_min: Duration,
    /// Ceiling of the reconnect delay.
    pub backoff_max: Duration,
}

impl Default for PeerLinkConfig {
    fn default() -> Self {
        PeerLinkConfig {
            queue_messages_max: PEER_LINK_QUEUE_MESSAGES_MAX,
            backoff_min: RECONNECT_BACKOFF_MIN,
            backoff_max: RECONNECT_BACKOFF_MAX,
        }
    }
}

struct LinkShared {
    queue: RefCell<VecDeque<PeerMessage>>,
    queue_messages_max: usize,
    state: Cell<LinkState>,
    stats: Cell<PeerLinkStats>,
    work: Signal,
    closed: Cell<bool>,
}

impl LinkShared {
    fn bump(&self, f: impl FnOnce(&mut PeerLinkStats)) {
        let mut stats = self.stats.get();
        f(&mut stats);
        self.stats.set(stats);
    }

    fn drop_queued(&self) {
        let dropped = self.queue.borrow_mut().drain(..).count() as u64;
        self.bump(|s| s.messages_dropped += dropped);
    }
}

/// The outbound side of one connection to one core of one peer node. Messages go
/// into a bounded queue without blocking; a writer task connects lazily (as
/// [`Role::Peer`]), sends each flush of the queue as one [`PeerBatch`] frame, and
/// reconnects with exponential backoff after a failure. Dropping the link stops
/// the task and closes the connection.
pub struct PeerLink {
    shared: Rc<LinkShared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for PeerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLink").field("state", &self.state()).field("stats", &self.stats()).finish()
    }
}

impl PeerLink {
    /// Starts a link to `addr` (`HOST:PORT` of the destination core) that
    /// introduces itself with `hello` (whose role should be [`Role::Peer`]). Must
    /// be called inside a glommio executor.
    pub fn spawn(addr: String, hello: Hello, config: PeerLinkConfig) -> PeerLink {
        let shared = Rc::new(LinkShared {
            queue: RefCell::new(VecDeque::new()),
            queue_messages_max: config.queue_messages_max.max(1),
            state: Cell::new(LinkState::Connecting),
            stats: Cell::new(PeerLinkStats::default()),
            work: Signal::default(),
            closed: Cell::new(false),
        });
        let task = glommio::spawn_local(run_link(shared.clone(), addr, hello, config)).detach();
        PeerLink { shared, task }
    }

    /// Queues `message` for the next frame; never blocks.
    pub fn try_send(&self, message: PeerMessage) -> Result<(), SendRefused> {
        let refused = match self.shared.state.get() {
            LinkState::Down => Some(SendRefused::Down),
            _ if self.shared.queue.borrow().len() >= self.shared.queue_messages_max => Some(SendRefused::QueueFull),
            _ => None,
        };
        if let Some(refused) = refused {
            self.shared.bump(|s| s.messages_dropped += 1);
            return Err(refused);
        }
        self.shared.queue.borrow_mut().push_back(message);
        self.shared.work.notify();
        Ok(())
    }

    /// The link's counters.
    pub fn stats(&self) -> PeerLinkStats {
        self.shared.stats.get()
    }

    /// Where the link stands.
    pub fn state(&self) -> LinkState {
        self.shared.state.get()
    }

    /// Messages waiting for the writer.
    pub fn queued(&self) -> usize {
        self.shared.queue.borrow().len()
    }
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        self.shared.closed.set(true);
        self.shared.work.notify();
        self.task.cancel();
    }
}

async fn run_link(shared: Rc<LinkShared>, addr: String, hello: Hello, config: PeerLinkConfig) {
    let mut backoff = config.backoff_min;
    while !shared.closed.get() {
        shared.state.set(LinkState::Connecting);
        match connect(&addr, &hello, FRAME_PAYLOAD_BYTES_MAX).await {
            Ok((reader, writer, _welcome)) => {
                backoff = config.backoff_min;
                shared.bump(|s| s.connects += 1);
                shared.state.set(LinkState::Up);
                let why = pump_link(&shared, reader, writer).await;
                if shared.closed.get() {
                    return;
                }
                tracing::warn!(peer = %addr, error = %why, "peer link lost; reconnecting");
            }
            Err(e) => {
                shared.bump(|s| s.connect_failures += 1);
                tracing::debug!(peer = %addr, error = %e, retry_in = ?backoff, "peer link cannot connect");
            }
        }
        shared.state.set(LinkState::Down);
        shared.drop_queued();
        glommio::timer::sleep(backoff).await;
        backoff = (backoff * 2).min(config.backoff_max);
    }
}

/// Sends the queue, one frame per flush, until the connection fails. Also watches
/// the (otherwise silent) read side, so a peer that closes is noticed at once.
async fn pump_link(shared: &LinkShared, mut reader: FramedReader, mut writer: FramedWriter) -> TransportError {
    loop {
        let work = async {
            shared.work.wait_until(|| shared.closed.get() || !shared.queue.borrow().is_empty()).await;
            None
        };
        let hangup = async {
            Some(match reader.next_frame().await {
                Ok(_) => TransportError::Protocol("a peer connection carries no frames back"),
                Err(e) => e,
            })
        };
        if let Some(why) = or(work, hangup).await {
            return why;
        }
        if shared.closed.get() {
            return TransportError::Closed;
        }
        let messages: Vec<PeerMessage> = shared.queue.borrow_mut().drain(..).collect();
        let (payloads, oversized) = encode_batches(messages, |messages| PeerBatch { messages }, |batch| batch.messages);
        if oversized > 0 {
            tracing::warn!(peer = %reader.peer_addr(), oversized, "peer messages too large for one frame dropped");
            shared.bump(|s| s.messages_dropped += oversized as u64);
        }
        let mut unsent: u64 = payloads.iter().map(|(_, n)| *n as u64).sum();
        for (payload, count) in payloads {
            if let Err(e) = writer.write_frame(&payload).await {
                shared.bump(|s| s.messages_dropped += unsent);
                return e;
            }
            unsent -= count as u64;
            shared.bump(|s| {
                s.frames_sent += 1;
                s.messages_sent += count as u64;
            });
        }
    }
}

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
