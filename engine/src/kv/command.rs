//! The log-entry encoding of a shard command: what a shard leader proposes into
//! Raft and every replica decodes in `apply`.
//!
//! Runs on the core that owns the shard (encode at the leader, decode at every
//! replica). The bytes come back from disk and from the network, so [`decode`]
//! validates everything and answers an error for bad bytes, never a panic.
//!
//! Format (all of a Raft entry's `data`):
//!
//! ```text
//! byte 0      COMMAND_FORMAT_V1 (= 1)
//! bytes 1..   rkyv archive of `Command` (validated with bytecheck on decode)
//! ```
//!
//! Extension point for transactions (DESIGN §8, issue 11): [`CommandBody`] is an
//! enum whose tags are append-only. Transaction records (a prepare record with its
//! locks and intended writes, a commit or abort decision with the commit version,
//! intent resolution) join as new variants after `Write`; the commit applies
//! exactly its version through `Store::write`. Appending variants keeps every old
//! entry decodable, so the format byte changes only if an existing variant changes.
//! A replica that meets a tag it does not know gets a decode error and stops rather
//! than skipping a committed entry.

use corekv_rpc::kv::{WriteOp, WriteTag};
use corekv_rpc::txn::TxnId;
use rkyv::{Archive, Deserialize, Serialize, rancor, util::AlignedVec};
use thiserror::Error;

use super::txn::{DecideCommand, OnePhaseCommand, PrepareCommand, ResolveItem};

/// The first byte of every command entry. Version 1: this module's layout.
pub const COMMAND_FORMAT_V1: u8 = 1;

/// The largest entry `decode` accepts, in bytes: a 4 KiB key and a value of the
/// largest configurable size (16 MiB) with room for the header.
pub const COMMAND_BYTES_MAX: usize = 16 * 1024 * 1024 + 64 * 1024;

/// A shard command as it travels in the log.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The leader's HLC reading when it proposed; replicas apply
    /// `max(last_applied_version + 1, stamp_ts)` and measure reply age with it.
    pub stamp_ts: u64,
    /// What to do.
    pub body: CommandBody,
}

/// What a command does. Tags are append-only (see the module header).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum CommandBody {
    /// A plain client write with its exactly-once header.
    Write(WriteCommand),
    /// A transaction's prepare record at a participant.
    Prepare(PrepareCommand),
    /// A transaction's decision at its anchor.
    Decide(DecideCommand),
    /// Decisions applied to intents at a participant, batched.
    Resolve(Vec<ResolveItem>),
    /// Records every participant has resolved, dropped at the anchor, batched.
    Forget(Vec<TxnId>),
    /// A single-shard transaction: prepare, decide and resolve in one entry.
    OnePhase(OnePhaseCommand),
}

/// A plain client write as it travels in the log.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WriteCommand {
    /// Client id, sequence number and acked prefix (DESIGN §6).
    pub tag: WriteTag,
    /// The write.
    pub op: WriteOp,
}

/// A command entry could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommandError {
    /// The entry has no bytes at all.
    #[error("empty command entry")]
    Empty,
    /// The entry is larger than [`COMMAND_BYTES_MAX`].
    #[error("command entry of {len} bytes exceeds the {max}-byte limit", max = COMMAND_BYTES_MAX)]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// The format byte is not one this build knows.
    #[error("unknown command format version {0} (this build reads {COMMAND_FORMAT_V1})")]
    UnknownFormat(u8),
    /// The payload failed rkyv validation.
    #[error("command payload is invalid: {0}")]
    Payload(String),
}

/// Encodes a command as Raft entry data.
pub fn encode(cmd: &Command) -> Vec<u8> {
    let payload = rkyv::to_bytes::<rancor::Error>(cmd).expect("a command always serializes");
    let mut out = Vec::with_capacity(1 + payload.len());
    out.push(COMMAND_FORMAT_V1);
    out.extend_from_slice(&payload);
    out
}

/// Decodes and validates Raft entry data written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Command, CommandError> {
    let (&format, payload) = bytes.split_first().ok_or(CommandError::Empty)?;
    if bytes.len() > COMMAND_BYTES_MAX {
        return Err(CommandError::TooLarge { len: bytes.len() });
    }
    if format != COMMAND_FORMAT_V1 {
        return Err(CommandError::UnknownFormat(format));
    }
    // The payload sits at offset 1: copy it to an aligned buffer before validation.
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<Command, rancor::Error>(&aligned).map_err(|e| CommandError::Payload(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use corekv_rpc::kv::ClientId;

    fn sample() -> Command {
        Command {
            stamp_ts: 77 << 16 | 3,
            body: CommandBody::Write(WriteCommand {
                tag: WriteTag { client: ClientId::from_u128(u128::MAX - 5), seq: 9, acked: 7 },
                op: WriteOp::Cas { key: b"key".to_vec(), expected: 0, value: vec![1, 2, 3] },
            }),
        }
    }

    #[test]
    fn round_trips_with_the_format_byte_first() {
        let bytes = encode(&sample());
        assert_eq!(bytes[0], COMMAND_FORMAT_V1);
        assert_eq!(decode(&bytes), Ok(sample()));
    }

    #[test]
    fn bad_bytes_are_errors() {
        assert_eq!(decode(&[]), Err(CommandError::Empty));
        let mut bytes = encode(&sample());
        bytes[0] = 2;
        assert_eq!(decode(&bytes), Err(CommandError::UnknownFormat(2)));
        assert!(matches!(decode(&[COMMAND_FORMAT_V1, 1, 2, 3]), Err(CommandError::Payload(_))));
        assert!(matches!(decode(&vec![COMMAND_FORMAT_V1; COMMAND_BYTES_MAX + 1]), Err(CommandError::TooLarge { .. })));
    }

    #[test]
    fn every_truncation_and_bit_flip_is_handled() {
        let bytes = encode(&sample());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "a truncated entry at {cut} must not decode");
        }
        for i in 1..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                let _ = decode(&b);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode(&bytes);
        }
    }
}
