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

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_lite::future::poll_fn;
use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rkyv::rancor;
use thiserror::Error;

use crate::frame::{self, FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX, FrameDecoder, FrameError, Payload};
use crate::node::{self, CLIENT_CALLS_INFLIGHT_MAX, Hello, HelloReply, WIRE_VERSION, Welcome};

mod link;
mod listener;

pub use link::{LinkState, PeerLink, PeerLinkConfig, PeerLinkStats, SendRefused};
pub use listener::{Inbound, Listener, ListenerConfig, ListenerStats, PeerId, ReplyError, ReplySender};

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
pub(crate) const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

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
pub(crate) fn encode_batches<T, B>(
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
pub(crate) struct Signal {
    waker: RefCell<Option<Waker>>,
}

impl Signal {
    pub(crate) fn notify(&self) {
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    pub(crate) async fn wait_until(&self, ready: impl Fn() -> bool) {
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
