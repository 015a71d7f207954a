//! Decoding rkyv archives from bytes that may sit at any address (a field of a
//! larger buffer, a slice of a snapshot file): one copy into an aligned buffer,
//! then validation (bytecheck) before anything is read. Used wherever bytes from
//! the network or a disk become values.

use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize};

/// Validates `bytes` as an archive of `T` and deserializes it. Errors name what
/// the validator found; nothing panics on bad input.
pub fn from_unaligned<T>(bytes: &[u8]) -> Result<T, String>
where
    T: Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
        + Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rancor::Error>(&aligned).map_err(|e| e.to_string())
}
