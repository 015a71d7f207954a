//! A simulated disk for the WAL: segment files in memory, with written-but-unsynced
//! bytes kept apart so a crash can lose them or tear the last write.
//!
//! Owns: the bytes of one WAL's segment files. Single-threaded and synchronous, no
//! clock, no global RNG: a tear is chosen by the caller or derived from a seed the
//! caller passes in, so a simulation run reproduces exactly. Used by the
//! deterministic simulator and the WAL tests.
//!
//! Model: `Write` goes to an unsynced list (readers see it, as the page cache
//! would); `Sync` of a segment makes its unsynced writes durable. Creating,
//! renaming and deleting segments are durable at once (the production executor
//! syncs the file and the directory inside `CreateSegment`). A crash keeps only
//! durable bytes, optionally plus a prefix of the last unsynced write, optionally
//! followed by garbage up to that write's end.

use std::collections::BTreeMap;
use std::io;

use super::SegmentStore;
use super::writer::IoCommand;

/// What a crash does to unsynced writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced write is lost.
    LoseUnsynced,
    /// The first `keep_bytes` of the last unsynced write reached the disk; the rest
    /// of it and every other unsynced write is lost.
    TearLastWrite {
        /// Bytes of the write that survive.
        keep_bytes: u64,
    },
    /// Like `TearLastWrite`, and the rest of that write's range holds garbage
    /// (derived from `seed`).
    TearLastWriteGarbage {
        /// Bytes of the write that survive.
        keep_bytes: u64,
        /// Seed of the garbage.
        seed: u64,
    },
    /// One of the above, with the tear offset, chosen from `seed`.
    Seeded {
        /// The seed.
        seed: u64,
    },
}

#[derive(Debug, Clone, Default)]
struct SimFile {
    durable: Vec<u8>,
    /// (global write order, offset, bytes)
    unsynced: Vec<(u64, u64, Vec<u8>)>,
}

impl SimFile {
    fn visible(&self) -> Vec<u8> {
        let mut bytes = self.durable.clone();
        for (_, offset, data) in &self.unsynced {
            write_into(&mut bytes, *offset, data);
        }
        bytes
    }
}

/// The simulated disk of one WAL directory.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    files: BTreeMap<u64, SimFile>,
    write_order: u64,
    /// Write commands executed.
    pub writes: u64,
    /// Sync commands executed (fdatasyncs).
    pub syncs: u64,
    /// Segments created or recycled.
    pub segments_created: u64,
    /// Segments deleted.
    pub segments_deleted: u64,
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Self {
        SimDisk::default()
    }

    /// The machine crashes: only durable bytes (and what `mode` lets survive) stay.
    pub fn crash(&mut self, mode: CrashMode) {
        let mode = match mode {
            CrashMode::Seeded { seed } => self.pick_mode(seed),
            other => other,
        };
        let last = self.files.iter().flat_map(|(seq, f)| f.unsynced.iter().map(move |w| (w.0, *seq))).max();
        let mut torn = None;
        if let Some((order, seq)) = last {
            let file = self.files.get(&seq).expect("listed");
            let (_, offset, data) = file.unsynced.iter().find(|w| w.0 == order).expect("listed").clone();
            torn = match mode {
                CrashMode::LoseUnsynced | CrashMode::Seeded { .. } => None,
                CrashMode::TearLastWrite { keep_bytes } => {
                    let keep = keep_bytes.min(data.len() as u64) as usize;
                    Some((seq, offset, data[..keep].to_vec()))
                }
                CrashMode::TearLastWriteGarbage { keep_bytes, seed } => {
                    let keep = keep_bytes.min(data.len() as u64) as usize;
                    let mut bytes = data[..keep].to_vec();
                    let mut state = seed;
                    bytes.extend((keep..data.len()).map(|_| splitmix64(&mut state) as u8));
                    Some((seq, offset, bytes))
                }
            };
        }
        for file in self.files.values_mut() {
            file.unsynced.clear();
        }
        if let Some((seq, offset, bytes)) = torn {
            write_into(&mut self.files.get_mut(&seq).expect("listed").durable, offset, &bytes);
        }
    }

    fn pick_mode(&self, seed: u64) -> CrashMode {
        let mut state = seed;
        let len = self.last_unsynced_write_bytes().unwrap_or(0);
        let keep_bytes = splitmix64(&mut state) % (len + 1);
        match splitmix64(&mut state) % 3 {
            0 => CrashMode::LoseUnsynced,
            1 => CrashMode::TearLastWrite { keep_bytes },
            _ => CrashMode::TearLastWriteGarbage { keep_bytes, seed: splitmix64(&mut state) },
        }
    }

    /// Length of the last unsynced write, if any.
    pub fn last_unsynced_write_bytes(&self) -> Option<u64> {
        self.files.values().flat_map(|f| f.unsynced.iter()).max_by_key(|w| w.0).map(|w| w.2.len() as u64)
    }

    /// Number of unsynced writes.
    pub fn unsynced_writes(&self) -> usize {
        self.files.values().map(|f| f.unsynced.len()).sum()
    }

    /// Flips bits of one durable byte (a media error). Returns false if absent.
    pub fn corrupt_byte(&mut self, segment_seq: u64, offset_bytes: u64, xor: u8) -> bool {
        match self.files.get_mut(&segment_seq).and_then(|f| f.durable.get_mut(offset_bytes as usize)) {
            Some(byte) => {
                *byte ^= xor;
                true
            }
            None => false,
        }
    }

    /// The durable bytes of a segment.
    pub fn durable_bytes(&self, segment_seq: u64) -> Option<&[u8]> {
        self.files.get(&segment_seq).map(|f| f.durable.as_slice())
    }

    /// Replaces a segment's bytes (tests: plant a file).
    pub fn put_segment(&mut self, segment_seq: u64, bytes: Vec<u8>) {
        self.files.insert(segment_seq, SimFile { durable: bytes, unsynced: Vec::new() });
    }

    /// Removes a segment file.
    pub fn remove_segment(&mut self, segment_seq: u64) {
        self.files.remove(&segment_seq);
    }
}

impl SegmentStore for SimDisk {
    fn list_segments(&mut self) -> io::Result<Vec<u64>> {
        Ok(self.files.keys().copied().collect())
    }

    fn read_segment(&mut self, segment_seq: u64) -> io::Result<Vec<u8>> {
        self.files
            .get(&segment_seq)
            .map(SimFile::visible)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("segment {segment_seq}")))
    }

    fn execute(&mut self, command: &IoCommand) -> io::Result<()> {
        match command {
            IoCommand::CreateSegment { segment_seq, recycle_from, segment_bytes, header } => {
                let mut file = match recycle_from.and_then(|old| self.files.remove(&old)) {
                    Some(mut old) => {
                        old.durable = old.visible();
                        old.unsynced.clear();
                        old
                    }
                    None => SimFile::default(),
                };
                file.durable.resize(*segment_bytes as usize, 0);
                write_into(&mut file.durable, 0, header);
                self.files.insert(*segment_seq, file);
                self.segments_created += 1;
            }
            IoCommand::Write { segment_seq, offset_bytes, bytes } => {
                let file = self
                    .files
                    .get_mut(segment_seq)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("segment {segment_seq}")))?;
                self.write_order += 1;
                file.unsynced.push((self.write_order, *offset_bytes, bytes.clone()));
                self.writes += 1;
            }
            IoCommand::Sync { segment_seq } => {
                let file = self
                    .files
                    .get_mut(segment_seq)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("segment {segment_seq}")))?;
                file.durable = file.visible();
                file.unsynced.clear();
                self.syncs += 1;
            }
            IoCommand::DeleteSegment { segment_seq } => {
                self.files.remove(segment_seq);
                self.segments_deleted += 1;
            }
        }
        Ok(())
    }
}

fn write_into(target: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if target.len() < end {
        target.resize(end, 0);
    }
    target[offset as usize..end].copy_from_slice(data);
}

/// A tiny deterministic generator (SplitMix64): the disk's only source of
/// "randomness", always seeded by the caller.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
