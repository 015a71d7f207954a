//! corekv-rpc: the wire crate.
//!
//! It holds the message types every corekv process exchanges, as rkyv types so a
//! receiver can validate a frame and read it in place. The types and the frame
//! codec use no runtime at all; the glommio transport and the clients live in their
//! own modules (DESIGN §2). The crate knows nothing of the engine.
//!
//! - [`raft`]: Raft messages; [`kv`]: client requests and outcomes;
//! - [`map`]: the cluster map and the stable key -> shard hash;
//! - [`txn`]: transaction ids, ages, conflict policies and abort reasons;
//! - [`node`]: handshake, peer batches, client batches and admin calls;
//! - [`frame`]: the length + CRC32 frame codec;
//! - [`transport`]: the glommio TCP transport (peer links, listener, handshake);
//! - [`blocking`]: one blocking connection to one core over `std::net`;
//! - [`client`]: the client library (async for glommio, and a blocking facade):
//!   routing, retries, exactly-once writes, DESIGN §6's outcome words.

pub mod archive;
pub mod blocking;
pub mod client;
pub mod duration;
pub mod frame;
pub mod kv;
pub mod map;
pub mod node;
pub mod raft;
pub mod transport;
pub mod txn;
