//! corekv-rpc: the wire crate.
//!
//! It holds the message types every corekv process exchanges, as rkyv types so a
//! receiver can validate a frame and read it in place. The types and the (future)
//! frame codec use no runtime at all; the glommio transport and the client library
//! will live in their own modules (DESIGN §2). The crate knows nothing of the engine.
//!
//! Today it holds the Raft messages ([`raft`]); client requests, admin calls and the
//! frame codec arrive with the node.

pub mod archive;
pub mod frame;
pub mod kv;
pub mod raft;
