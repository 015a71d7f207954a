//! A minimal blocking client over `std::net` (no runtime): one connection to one
//! core, the handshake as [`Role::Client`], calls pipelined in one frame. Used by
//! the tests, the cluster launcher and the tools; applications use the async
//! client library.
//!
//! Runs on the caller's thread. Every read and write has the connection's timeout,
//! so no call blocks forever; inbound frames are size- and CRC-checked and
//! validated like everywhere else.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::frame::{self, FRAME_PAYLOAD_BYTES_MAX, FrameDecoder, FrameError};
use crate::node::{
    self, Call, ClientBatch, Hello, HelloReply, Reply, Role, ServerBatch, TaggedCall, WIRE_VERSION, Welcome,
};

/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// Why a blocking call failed. After any error but [`ClientError::Refused`] the
/// connection is in an unknown state: drop it and connect again.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The address did not resolve or the connection could not be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address asked for.
        addr: String,
        /// The OS error.
        source: io::Error,
    },
    /// The socket failed after connecting.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// No answer within the connection's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// The server refused the handshake.
    #[error("handshake refused: {0}")]
    Refused(String),
    /// The server sent bytes that are not valid frames or messages.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// A blocking connection to one core of one node.
#[derive(Debug)]
pub struct BlockingConn {
    stream: TcpStream,
    decoder: FrameDecoder,
    welcome: Welcome,
    timeout: Duration,
    next_id: u64,
}

impl BlockingConn {
    /// Connects to `addr` (`HOST:PORT`) and says hello as a client of cluster
    /// `cluster_id` (0 = any: learn it from the answer). `timeout` bounds the
    /// connect and every later read and write.
    pub fn connect(addr: &str, cluster_id: u64, timeout: Duration) -> Result<BlockingConn, ClientError> {
        let connect_error = |source| ClientError::Connect { addr: addr.to_string(), source };
        let sockaddr = addr
            .to_socket_addrs()
            .map_err(connect_error)?
            .next()
            .ok_or_else(|| connect_error(io::Error::new(io::ErrorKind::InvalidInput, "no address")))?;
        let stream = TcpStream::connect_timeout(&sockaddr, timeout).map_err(connect_error)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut conn = BlockingConn {
            stream,
            decoder: FrameDecoder::new(FRAME_PAYLOAD_BYTES_MAX),
            welcome: Welcome { cluster_id: 0, node: 0, core: 0, cores: 0 },
            timeout,
            next_id: 1,
        };
        let hello = Hello { wire_version: WIRE_VERSION, cluster_id, to_node: 0, role: Role::Client };
        conn.write_payload(&node::to_bytes(&hello))?;
        let deadline = Instant::now() + timeout;
        let reply: HelloReply =
            node::from_bytes(&conn.read_frame(deadline)?).map_err(|e| ClientError::Frame(FrameError::Invalid(e.0)))?;
        conn.welcome = reply.into_welcome().map_err(ClientError::Refused)?;
        Ok(conn)
    }

    /// Changes the timeout of every later read and write.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Who answered the handshake.
    pub fn welcome(&self) -> Welcome {
        self.welcome
    }

    /// One call, one frame; waits for its reply.
    pub fn call(&mut self, call: Call) -> Result<Reply, ClientError> {
        let mut replies = self.call_many(vec![call])?;
        Ok(replies.pop().expect("call_many answers every call"))
    }

    /// Every call in one frame (pipelined); the replies in the calls' order.
    pub fn call_many(&mut self, calls: Vec<Call>) -> Result<Vec<Reply>, ClientError> {
        let ids = self.send(calls)?;
        let deadline = Instant::now() + self.timeout;
        let mut got: HashMap<u64, Reply> = HashMap::with_capacity(ids.len());
        while got.len() < ids.len() {
            for tagged in self.recv(deadline)? {
                // Replies to earlier calls that timed out are skipped.
                if ids.contains(&tagged.id) {
                    got.insert(tagged.id, tagged.reply);
                }
            }
        }
        Ok(ids.iter().map(|id| got.remove(id).expect("every id answered")).collect())
    }

    /// Sends `calls` in one frame without waiting; returns their ids, in order.
    pub fn send(&mut self, calls: Vec<Call>) -> Result<Vec<u64>, ClientError> {
        let first = self.next_id;
        self.next_id += calls.len() as u64;
        let calls: Vec<TaggedCall> = (first..).zip(calls).map(|(id, call)| TaggedCall { id, call }).collect();
        let ids = calls.iter().map(|c| c.id).collect();
        self.write_payload(&node::to_bytes(&ClientBatch { calls }))?;
        Ok(ids)
    }

    /// The replies of the next frame the server sends (waits up to the timeout).
    pub fn recv_frame(&mut self) -> Result<ServerBatch, ClientError> {
        let deadline = Instant::now() + self.timeout;
        Ok(ServerBatch { replies: self.recv(deadline)? })
    }

    fn recv(&mut self, deadline: Instant) -> Result<Vec<node::TaggedReply>, ClientError> {
        let payload = self.read_frame(deadline)?;
        let archived = frame::access::<ServerBatch>(&payload)?;
        let batch = rkyv::deserialize::<ServerBatch, rkyv::rancor::Error>(archived)
            .map_err(|e| FrameError::Invalid(e.to_string()))?;
        Ok(batch.replies)
    }

    fn write_payload(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&len| len <= FRAME_PAYLOAD_BYTES_MAX)
            .ok_or(FrameError::TooLarge { len: u32::MAX, max: FRAME_PAYLOAD_BYTES_MAX })?;
        let mut bytes = Vec::with_capacity(frame::FRAME_HEADER_BYTES + payload.len());
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        bytes.extend_from_slice(payload);
        self.stream.write_all(&bytes).map_err(|e| self.io_error(e))
    }

    fn read_frame(&mut self, deadline: Instant) -> Result<frame::Payload, ClientError> {
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
        loop {
            if let Some(payload) = self.decoder.next_frame()? {
                return Ok(payload);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout(self.timeout));
            }
            self.stream.set_read_timeout(Some(left))?;
            let n = match self.stream.read(&mut chunk) {
                Ok(n) => n,
                // A signal, or io_uring task work of an executor that ran on this
                // thread, interrupted the read: nothing was lost, read again.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_error(e)),
            };
            if n == 0 {
                return Err(ClientError::Closed);
            }
            self.decoder.feed(&chunk[..n]);
        }
    }

    fn io_error(&self, e: io::Error) -> ClientError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout(self.timeout),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => {
                ClientError::Closed
            }
            _ => ClientError::Io(e),
        }
    }
}
