//! Frames: how corekv messages travel on a byte stream (DESIGN §9).
//!
//! ```text
//! offset  size  field
//! 0       4     payload length, u32 little endian (≤ FRAME_PAYLOAD_BYTES_MAX)
//! 4       4     CRC32 (crc32fast) of the payload, u32 little endian
//! 8       len   payload: one rkyv archive (of a batch of messages for one core)
//! ```
//!
//! The receiver checks the length against the maximum before it allocates, reads
//! the payload into a 16-byte aligned buffer, checks the CRC, and only then lets
//! the caller validate the archive (bytecheck) and read it in place. No runtime
//! here: the transport feeds bytes in and takes frames out.

use rkyv::rancor;
use rkyv::util::AlignedVec;
use thiserror::Error;

/// Bytes before the payload: length and CRC.
pub const FRAME_HEADER_BYTES: usize = 8;
/// The largest payload a receiver accepts (a peer sending more is disconnected).
pub const FRAME_PAYLOAD_BYTES_MAX: u32 = 64 << 20;
/// Alignment of received payloads: rkyv archives are read in place.
pub const FRAME_PAYLOAD_ALIGN: usize = 16;

/// A payload buffer aligned for in-place reads of rkyv archives.
pub type Payload = AlignedVec<FRAME_PAYLOAD_ALIGN>;

/// Why a byte stream is not a valid sequence of frames. Every variant means the
/// connection must be closed: the stream cannot be resynchronised.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length field exceeds the receiver's maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Claimed payload length.
        len: u32,
        /// The receiver's maximum.
        max: u32,
    },
    /// The payload does not match its CRC.
    #[error("frame CRC mismatch: header says {expected:#010x}, payload has {actual:#010x}")]
    BadCrc {
        /// CRC from the header.
        expected: u32,
        /// CRC of the received payload.
        actual: u32,
    },
    /// The payload is not a valid archive of the expected type.
    #[error("frame payload is not a valid message: {0}")]
    Invalid(String),
}

/// Appends one frame carrying `message` to `out`.
pub fn encode<T>(message: &T, out: &mut Vec<u8>) -> Result<(), FrameError>
where
    T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<AlignedVec, rkyv::ser::allocator::ArenaHandle<'a>, rancor::Error>,
        >,
{
    let payload = rkyv::to_bytes::<rancor::Error>(message).map_err(|e| FrameError::Invalid(e.to_string()))?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&len| len <= FRAME_PAYLOAD_BYTES_MAX)
        .ok_or(FrameError::TooLarge { len: u32::MAX, max: FRAME_PAYLOAD_BYTES_MAX })?;
    out.reserve(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// Validates `payload` as an archive of `T` and returns a view of it in place.
pub fn access<T>(payload: &Payload) -> Result<&T::Archived, FrameError>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>,
{
    rkyv::access::<T::Archived, rancor::Error>(payload).map_err(|e| FrameError::Invalid(e.to_string()))
}

/// Cuts a byte stream into frames. Feed it whatever the socket returned; take
/// complete frames out. Memory is bounded by one frame (its payload maximum) plus
/// what the caller feeds between takes.
#[derive(Debug)]
pub struct FrameDecoder {
    payload_bytes_max: u32,
    /// Received bytes; those before `start` were already returned in frames.
    pending: Vec<u8>,
    start: usize,
    /// Set once the stream is known bad: nothing more is decoded.
    failed: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder accepting payloads of at most `payload_bytes_max` bytes (itself at
    /// most [`FRAME_PAYLOAD_BYTES_MAX`]).
    pub fn new(payload_bytes_max: u32) -> FrameDecoder {
        FrameDecoder {
            payload_bytes_max: payload_bytes_max.min(FRAME_PAYLOAD_BYTES_MAX),
            pending: Vec::new(),
            start: 0,
            failed: None,
        }
    }

    /// The largest payload this decoder accepts.
    pub fn payload_bytes_max(&self) -> u32 {
        self.payload_bytes_max
    }

    /// Changes the largest payload accepted from the next frame on (capped at
    /// [`FRAME_PAYLOAD_BYTES_MAX`]). A server reads the handshake under a small
    /// limit, then raises it without losing bytes the client already pipelined.
    pub fn set_payload_bytes_max(&mut self, payload_bytes_max: u32) {
        self.payload_bytes_max = payload_bytes_max.min(FRAME_PAYLOAD_BYTES_MAX);
    }

    /// Adds received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        // Compact only when the consumed prefix dominates: amortised O(1) per byte.
        if self.start > 0 && self.start * 2 >= self.pending.len() {
            self.pending.drain(..self.start);
            self.start = 0;
        }
        self.pending.extend_from_slice(bytes);
    }

    /// Bytes received that do not yet form a complete frame.
    pub fn buffered_bytes(&self) -> usize {
        self.pending.len() - self.start
    }

    /// The next complete frame's payload, CRC-checked and aligned; `Ok(None)` when
    /// more bytes are needed. After an error every call returns that error.
    pub fn next_frame(&mut self) -> Result<Option<Payload>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let unread = &self.pending[self.start..];
        let Some(header) = unread.get(..FRAME_HEADER_BYTES) else { return Ok(None) };
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let expected = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        if len > self.payload_bytes_max {
            return Err(self.fail(FrameError::TooLarge { len, max: self.payload_bytes_max }));
        }
        let end = FRAME_HEADER_BYTES + len as usize;
        let Some(body) = unread.get(FRAME_HEADER_BYTES..end) else { return Ok(None) };
        let actual = crc32fast::hash(body);
        if actual != expected {
            return Err(self.fail(FrameError::BadCrc { expected, actual }));
        }
        let mut payload = Payload::with_capacity(len as usize);
        payload.extend_from_slice(body);
        self.start += end;
        if self.start == self.pending.len() {
            self.pending.clear();
            self.start = 0;
        }
        Ok(Some(payload))
    }

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.pending = Vec::new();
        self.start = 0;
        self.failed = Some(e.clone());
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Entry, EntryKind, Message, MessageBody};
    use proptest::prelude::*;

    fn append(n: usize) -> Message {
        let entries =
            (0..n).map(|i| Entry { term: 2, index: i as u64 + 1, kind: EntryKind::Normal, data: vec![i as u8; 100] });
        Message {
            from: 1,
            to: 2,
            term: 2,
            body: MessageBody::Append { prev_index: 0, prev_term: 0, entries: entries.collect(), commit: 0 },
        }
    }

    #[test]
    fn frames_round_trip_even_when_fed_one_byte_at_a_time() {
        let mut stream = Vec::new();
        let messages: Vec<Message> = (0..5).map(append).collect();
        for m in &messages {
            encode(m, &mut stream).unwrap();
        }
        let mut d = FrameDecoder::new(FRAME_PAYLOAD_BYTES_MAX);
        let mut got = Vec::new();
        for b in &stream {
            d.feed(std::slice::from_ref(b));
            while let Some(payload) = d.next_frame().unwrap() {
                let view = access::<Message>(&payload).unwrap();
                got.push(rkyv::deserialize::<Message, rancor::Error>(view).unwrap());
            }
        }
        assert_eq!(got, messages);
        assert_eq!(d.buffered_bytes(), 0);
    }

    #[test]
    fn an_oversized_length_is_refused_before_any_allocation() {
        let mut d = FrameDecoder::new(1024);
        let mut header = (1025u32).to_le_bytes().to_vec();
        header.extend_from_slice(&0u32.to_le_bytes());
        d.feed(&header);
        assert_eq!(d.next_frame().err(), Some(FrameError::TooLarge { len: 1025, max: 1024 }));
        d.feed(&[0; 100]);
        assert!(d.next_frame().is_err(), "a failed stream stays failed");
        assert_eq!(d.buffered_bytes(), 0, "nothing is kept after the failure");
    }

    #[test]
    fn a_flipped_payload_bit_is_a_crc_error_and_garbage_with_a_good_crc_fails_validation() {
        let mut stream = Vec::new();
        encode(&append(3), &mut stream).unwrap();
        let mut bad = stream.clone();
        bad[FRAME_HEADER_BYTES + 10] ^= 0x40;
        let mut d = FrameDecoder::new(FRAME_PAYLOAD_BYTES_MAX);
        d.feed(&bad);
        assert!(matches!(d.next_frame(), Err(FrameError::BadCrc { .. })));

        let garbage = vec![0xFFu8; 64];
        let mut framed = (garbage.len() as u32).to_le_bytes().to_vec();
        framed.extend_from_slice(&crc32fast::hash(&garbage).to_le_bytes());
        framed.extend_from_slice(&garbage);
        let mut d = FrameDecoder::new(FRAME_PAYLOAD_BYTES_MAX);
        d.feed(&framed);
        let payload = d.next_frame().unwrap().expect("a complete frame");
        assert!(matches!(access::<Message>(&payload), Err(FrameError::Invalid(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096), cut in 0usize..4096) {
            let mut d = FrameDecoder::new(2048);
            let cut = cut.min(bytes.len());
            d.feed(&bytes[..cut]);
            d.feed(&bytes[cut..]);
            for _ in 0..8 {
                match d.next_frame() {
                    Ok(Some(payload)) => { let _ = access::<Message>(&payload); }
                    Ok(None) | Err(_) => break,
                }
            }
            prop_assert!(d.buffered_bytes() <= bytes.len());
        }
    }
}
