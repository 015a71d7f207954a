//! The shard snapshot: everything a replica needs to stand in for the log up to
//! `applied_index` (store, exactly-once table, transaction state, last applied
//! version, log clock).
//!
//! Runs on the core that owns the shard; the bytes become the Raft snapshot's
//! `Arc<[u8]>` (and, later, the shard's snapshot file). The bytes come back from disk
//! and from the network: [`Shard::restore`] checks every one, sizes before anything
//! is allocated for them, and answers an error naming what is wrong, never a panic.
//!
//! Format, version [`SNAPSHOT_FORMAT_V2`], little endian:
//!
//! ```text
//! offset  size  field
//!  0       8    magic  "CKVSHARD"
//!  8       4    format version (u32)
//! 12       4    CRC32 of bytes 16..end
//! 16       8    meta_len  (u64)
//! 24       8    store_len (u64)
//! 32       8    dedup_len (u64)
//! 40       8    txn_len   (u64)
//! 48    meta_len   rkyv archive of ShardMeta
//!  ..   store_len  rkyv archive of StoreData (key -> version chain, floor,
//!                   sweep cursor)
//!  ..   dedup_len  rkyv archive of DedupData (client -> session)
//!  ..   txn_len    rkyv archive of TxnData (intents, records, resolved memory)
//! ```
//!
//! The lengths must add up to the rest of the bytes exactly. Maps are ordered, so
//! the same state always gives the same bytes. Version 1 (no `txn_len`, no
//! transaction part, a 40-byte header) is still read: its shard holds no
//! transaction state.

use corekv_rpc::kv::KEY_BYTES_MAX;
use rkyv::{Archive, Deserialize, rancor, util::AlignedVec};
use thiserror::Error;

use super::dedup::{Dedup, DedupData};
use super::hlc::TS_MAX;
use super::shard::{Shard, ShardConfig, ShardMeta};
use super::store::{Store, StoreData};
use super::txn::{TxnData, TxnState};

/// Magic at the start of every shard snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"CKVSHARD";
/// Version 1: header + meta, store and dedup parts.
pub const SNAPSHOT_FORMAT_V1: u32 = 1;
/// Version 2: version 1 plus the transaction part, as drawn in the module header.
pub const SNAPSHOT_FORMAT_V2: u32 = 2;
/// Bytes of the fixed header of version 1.
pub const SNAPSHOT_HEADER_BYTES_V1: usize = 40;
/// Bytes of the fixed header.
pub const SNAPSHOT_HEADER_BYTES: usize = 48;

/// A snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SnapshotError {
    /// Fewer bytes than the header.
    #[error("snapshot is {len} bytes, shorter than its {SNAPSHOT_HEADER_BYTES}-byte header")]
    TooShort {
        /// Bytes given.
        len: usize,
    },
    /// The magic is wrong: not a shard snapshot.
    #[error("not a shard snapshot (bad magic)")]
    BadMagic,
    /// A format version this build does not read.
    #[error("unknown snapshot format version {0} (this build reads {SNAPSHOT_FORMAT_V1} and {SNAPSHOT_FORMAT_V2})")]
    UnknownFormat(u32),
    /// The part lengths do not add up to the bytes given.
    #[error("part lengths meta {meta} + store {store} + dedup {dedup} + txn {txn} do not match the {body} body bytes")]
    Lengths {
        /// meta_len.
        meta: u64,
        /// store_len.
        store: u64,
        /// dedup_len.
        dedup: u64,
        /// txn_len (0 in version 1).
        txn: u64,
        /// Bytes after the header.
        body: usize,
    },
    /// The checksum does not match.
    #[error("snapshot CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A part failed rkyv validation.
    #[error("snapshot {part} part is malformed: {reason}")]
    Malformed {
        /// "meta", "store", "dedup" or "txn".
        part: &'static str,
        /// What validation said.
        reason: String,
    },
    /// The parts decode but contradict the state machine's invariants.
    #[error("snapshot {part} part is inconsistent: {reason}")]
    Inconsistent {
        /// "meta", "store", "dedup" or "txn".
        part: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn archive<T>(value: &T) -> AlignedVec
where
    T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<AlignedVec, rkyv::ser::allocator::ArenaHandle<'a>, rancor::Error>,
        >,
{
    rkyv::to_bytes::<rancor::Error>(value).expect("shard state always serializes")
}

fn unarchive<T>(part: &'static str, bytes: &[u8]) -> Result<T, SnapshotError>
where
    T: Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
        + Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    // The part's offset in the snapshot is arbitrary: the helper aligns it.
    corekv_rpc::archive::from_unaligned(bytes).map_err(|reason| SnapshotError::Malformed { part, reason })
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn check_meta(meta: &ShardMeta) -> Result<(), SnapshotError> {
    let bad = |reason: String| Err(SnapshotError::Inconsistent { part: "meta", reason });
    if meta.log_clock_ts > TS_MAX {
        return bad(format!("log clock {} beyond the clock's range", meta.log_clock_ts));
    }
    if meta.last_applied_version > TS_MAX {
        return bad(format!("last applied version {} beyond the clock's range", meta.last_applied_version));
    }
    if meta.last_applied_version > 0 && meta.applied_index == 0 {
        return bad("versions written but nothing applied".into());
    }
    Ok(())
}

fn check_store(data: &StoreData, config: &ShardConfig, meta: &ShardMeta) -> Result<(), SnapshotError> {
    let bad = |reason: String| Err(SnapshotError::Inconsistent { part: "store", reason });
    if data.floor_version > meta.last_applied_version {
        return bad(format!("floor {} above the last applied version", data.floor_version));
    }
    if data.sweep_cursor.len() > KEY_BYTES_MAX {
        return bad(format!("sweep cursor of {} bytes", data.sweep_cursor.len()));
    }
    for (key, chain) in &data.keys {
        if key.is_empty() || key.len() > KEY_BYTES_MAX {
            return bad(format!("key of {} bytes", key.len()));
        }
        let Some(first) = chain.versions.first() else { return bad(format!("key {key:02x?}: empty chain")) };
        if chain.versions.len() > config.retention.versions_per_key_max {
            return bad(format!("key {key:02x?}: {} versions, above the retention limit", chain.versions.len()));
        }
        if chain.history_from > first.version || first.version == 0 {
            return bad(format!(
                "key {key:02x?}: history starts at {} after version {}",
                chain.history_from, first.version
            ));
        }
        if chain.versions.windows(2).any(|w| w[0].version >= w[1].version) {
            return bad(format!("key {key:02x?}: versions not strictly increasing"));
        }
        let newest = chain.versions.last().expect("non-empty").version;
        if newest > meta.last_applied_version {
            return bad(format!("key {key:02x?}: version {newest} above the last applied version"));
        }
    }
    Ok(())
}

impl Shard {
    /// The whole replicated state as bytes (format in the module header). Same
    /// state, same bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        let meta = archive(&self.meta);
        let store = archive(self.store.data());
        let dedup = archive(self.dedup.data());
        let txn = archive(self.txns.data());
        let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + meta.len() + store.len() + dedup.len() + txn.len());
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_FORMAT_V2.to_le_bytes());
        out.extend_from_slice(&[0; 4]); // CRC, filled below
        for part in [&meta, &store, &dedup, &txn] {
            out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        }
        for part in [&meta, &store, &dedup, &txn] {
            out.extend_from_slice(part);
        }
        let crc = crc32fast::hash(&out[16..]);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Rebuilds a shard from [`Shard::snapshot`]'s bytes, checking every byte.
    /// `config` must be the shard's settings (the same on every replica).
    pub fn restore(config: ShardConfig, bytes: &[u8]) -> Result<Shard, SnapshotError> {
        if bytes.len() < SNAPSHOT_HEADER_BYTES_V1 {
            return Err(SnapshotError::TooShort { len: bytes.len() });
        }
        if bytes[..8] != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let header = match format {
            SNAPSHOT_FORMAT_V1 => SNAPSHOT_HEADER_BYTES_V1,
            SNAPSHOT_FORMAT_V2 => SNAPSHOT_HEADER_BYTES,
            other => return Err(SnapshotError::UnknownFormat(other)),
        };
        if bytes.len() < header {
            return Err(SnapshotError::TooShort { len: bytes.len() });
        }
        let (meta_len, store_len, dedup_len) = (u64_at(bytes, 16), u64_at(bytes, 24), u64_at(bytes, 32));
        let txn_len = if format == SNAPSHOT_FORMAT_V1 { 0 } else { u64_at(bytes, 40) };
        let body = &bytes[header..];
        let total =
            meta_len.checked_add(store_len).and_then(|n| n.checked_add(dedup_len)).and_then(|n| n.checked_add(txn_len));
        if total != Some(body.len() as u64) {
            return Err(SnapshotError::Lengths {
                meta: meta_len,
                store: store_len,
                dedup: dedup_len,
                txn: txn_len,
                body: body.len(),
            });
        }
        let stored = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
        let computed = crc32fast::hash(&bytes[16..]);
        if stored != computed {
            return Err(SnapshotError::Crc { stored, computed });
        }
        // The lengths sum to body.len(), so each fits in usize.
        let (meta_bytes, rest) = body.split_at(meta_len as usize);
        let (store_bytes, rest) = rest.split_at(store_len as usize);
        let (dedup_bytes, txn_bytes) = rest.split_at(dedup_len as usize);

        let meta: ShardMeta = unarchive("meta", meta_bytes)?;
        check_meta(&meta)?;
        let store_data: StoreData = unarchive("store", store_bytes)?;
        check_store(&store_data, &config, &meta)?;
        let dedup_data: DedupData = unarchive("dedup", dedup_bytes)?;
        let dedup = Dedup::from_data(dedup_data, config.dedup, meta.log_clock_ts)
            .map_err(|reason| SnapshotError::Inconsistent { part: "dedup", reason })?;
        let txn_data: TxnData = if txn_bytes.is_empty() { TxnData::default() } else { unarchive("txn", txn_bytes)? };
        let txns = TxnState::from_data(txn_data, config.txn)
            .map_err(|reason| SnapshotError::Inconsistent { part: "txn", reason })?;
        Ok(Shard { meta, store: Store::from_data(store_data, config.retention), dedup, txns, config })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::command::{self, Command, CommandBody, WriteCommand};
    use crate::kv::dedup::DedupLimits;
    use crate::kv::store::Retention;
    use corekv_rpc::kv::{ClientId, Outcome, WriteOp, WriteTag};

    fn entry(client: u128, seq: u64, acked: u64, stamp_ts: u64, op: WriteOp) -> Vec<u8> {
        command::encode(&Command {
            stamp_ts,
            body: CommandBody::Write(WriteCommand {
                tag: WriteTag { client: ClientId::from_u128(client), seq, acked },
                op,
            }),
        })
    }

    fn sample() -> Shard {
        let mut s = Shard::new(ShardConfig::default());
        let mut index = 0;
        let mut apply = |s: &mut Shard, e: Vec<u8>| {
            index += 1;
            s.apply_reply(index, &e).unwrap()
        };
        for i in 0..20u64 {
            let key = format!("key{}", i % 7).into_bytes();
            apply(
                &mut s,
                entry(
                    1 + (i % 3) as u128,
                    i / 3 + 1,
                    (i / 3).saturating_sub(1),
                    100 + i,
                    WriteOp::Put { key, value: vec![i as u8; 3] },
                ),
            );
        }
        apply(&mut s, entry(9, 1, 0, 50, WriteOp::Delete { key: b"key3".to_vec() }));
        s
    }

    /// Recomputes the CRC so a mutation reaches the decoders behind it.
    fn reseal(bytes: &mut [u8]) {
        let crc = crc32fast::hash(&bytes[16..]);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn round_trip_restores_everything_including_dedup() {
        let s = sample();
        let bytes = s.snapshot();
        let back = Shard::restore(ShardConfig::default(), &bytes).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.snapshot(), bytes);
        // A retry after restore is still answered from the table, not applied again.
        let mut a = s.clone();
        let mut b = back;
        let retry = entry(9, 1, 0, 60, WriteOp::Delete { key: b"key3".to_vec() });
        let ra = a.apply_reply(100, &retry).unwrap();
        assert_eq!(b.apply_reply(100, &retry).unwrap(), ra);
        assert!(matches!(ra, Outcome::Ok(_)), "the kept reply, not a second not_found");
        assert_eq!(a, b);
    }

    #[test]
    fn header_errors_name_what_is_wrong() {
        let bytes = sample().snapshot();
        let config = ShardConfig::default();
        assert_eq!(Shard::restore(config, &bytes[..10]), Err(SnapshotError::TooShort { len: 10 }));
        let mut b = bytes.clone();
        b[0] = b'X';
        assert_eq!(Shard::restore(config, &b), Err(SnapshotError::BadMagic));
        let mut b = bytes.clone();
        b[8] = 9;
        assert_eq!(Shard::restore(config, &b), Err(SnapshotError::UnknownFormat(9)));
        assert!(matches!(Shard::restore(config, &bytes[..bytes.len() - 1]), Err(SnapshotError::Lengths { .. })));
        let mut b = bytes.clone();
        b[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(Shard::restore(config, &b), Err(SnapshotError::Lengths { .. })));
        let mut b = bytes.clone();
        *b.last_mut().unwrap() ^= 1;
        assert!(matches!(Shard::restore(config, &b), Err(SnapshotError::Crc { .. })));
    }

    #[test]
    fn inconsistent_state_is_refused() {
        let s = sample();
        let mut bad = s.clone();
        bad.meta.last_applied_version = 1;
        let err = Shard::restore(ShardConfig::default(), &bad.snapshot()).unwrap_err();
        assert!(matches!(err, SnapshotError::Inconsistent { part: "store", .. }), "{err}");
        let tight = ShardConfig {
            retention: Retention { versions_per_key_max: 1, ..Retention::default() },
            ..ShardConfig::default()
        };
        assert!(matches!(Shard::restore(tight, &s.snapshot()), Err(SnapshotError::Inconsistent { part: "store", .. })));
        let few =
            ShardConfig { dedup: DedupLimits { clients_max: 1, ..DedupLimits::default() }, ..ShardConfig::default() };
        assert!(matches!(Shard::restore(few, &s.snapshot()), Err(SnapshotError::Inconsistent { part: "dedup", .. })));
    }

    #[test]
    fn every_single_byte_flip_is_refused_or_harmless() {
        let bytes = sample().snapshot();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x5a;
            assert!(Shard::restore(ShardConfig::default(), &b).is_err(), "flip at {i} passed the CRC");
            if i >= 16 {
                reseal(&mut b);
                let _ = Shard::restore(ShardConfig::default(), &b);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = Shard::restore(ShardConfig::default(), &bytes);
            let mut with_header = SNAPSHOT_MAGIC.to_vec();
            with_header.extend_from_slice(&SNAPSHOT_FORMAT_V1.to_le_bytes());
            with_header.extend_from_slice(&bytes);
            if with_header.len() >= SNAPSHOT_HEADER_BYTES {
                reseal(&mut with_header);
            }
            let _ = Shard::restore(ShardConfig::default(), &with_header);
        }

        #[test]
        fn mutated_snapshots_never_panic(
            flips in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..8)
        ) {
            let mut bytes = sample().snapshot();
            for (at, x) in flips {
                let at = SNAPSHOT_HEADER_BYTES + at % (bytes.len() - SNAPSHOT_HEADER_BYTES);
                bytes[at] ^= x;
            }
            reseal(&mut bytes);
            let _ = Shard::restore(ShardConfig::default(), &bytes);
        }
    }
}
