//! Outbound peer links: one per destination (node, core), a bounded queue, one
//! frame per flush, lazy connect and reconnect with backoff. Runs inside the
//! core's glommio executor.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future::or;
use glommio::task::JoinHandle;
use thiserror::Error;

use super::{
    FramedReader, FramedWriter, PEER_LINK_QUEUE_MESSAGES_MAX, RECONNECT_BACKOFF_MAX, RECONNECT_BACKOFF_MIN, Signal,
    TransportError, connect, encode_batches,
};
use crate::frame::FRAME_PAYLOAD_BYTES_MAX;
use crate::map::CoreIndex;
use crate::node::{Hello, PeerBatch, PeerMessage, Role};

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
    /// The highest sender clock given with queued messages: every frame carries it.
    clock: Cell<u64>,
    /// The highest map epoch given likewise.
    epoch: Cell<u64>,
    /// The sending core (from the link's hello).
    from_core: CoreIndex,
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
        let from_core = match hello.role {
            Role::Peer { core, .. } => core,
            _ => 0,
        };
        let shared = Rc::new(LinkShared {
            queue: RefCell::new(VecDeque::new()),
            clock: Cell::new(0),
            epoch: Cell::new(0),
            from_core,
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

    /// The sender's clock as of the messages it queues next: frames carry the
    /// highest clock given (it never goes back).
    pub fn note_clock(&self, clock: u64) {
        self.shared.clock.set(self.shared.clock.get().max(clock));
    }

    /// The sender's map epoch as of the messages it queues next (never goes back).
    pub fn note_epoch(&self, epoch: u64) {
        self.shared.epoch.set(self.shared.epoch.get().max(epoch));
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
        let (clock, epoch, from_core) = (shared.clock.get(), shared.epoch.get(), shared.from_core);
        let (payloads, oversized) = encode_batches(
            messages,
            |messages| PeerBatch { clock, epoch, from_core, messages },
            |batch| batch.messages,
        );
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
