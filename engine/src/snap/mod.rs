//! Shard snapshot files: one file per Raft group (shard) in `DATA/core-<i>/snap/`,
//! written to a temporary name, fdatasynced, renamed, and the directory fsynced;
//! read back chunk by chunk (to stream to a learner or lagging follower).
//!
//! Owns: the snapshot file format (drawn in `docs/WAL.md`) and its checks. Runs on
//! the core that owns the shard. Files are written and read with blocking std I/O:
//! a snapshot is taken rarely and its chunks are small.
//!
//! Invariants: a file with the final name is complete (it was synced before the
//! rename); a temporary file is never read, only removed on restart; every chunk
//! carries its own CRC and every length is checked against a named limit before
//! anything is allocated.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use corekv_rpc::raft::{ConfState, SnapshotMeta};

/// Format version of snapshot files. 1 = first version.
pub const SNAP_FORMAT_VERSION: u32 = 1;
/// Magic at byte 0 of a snapshot file.
pub const SNAP_MAGIC: [u8; 8] = *b"CKVSNAP\0";
/// Largest chunk a file may hold (refused before allocation when reading).
pub const SNAP_CHUNK_BYTES_MAX: u32 = 4 << 20;
/// Largest number of voters plus learners in a header.
pub const SNAP_MEMBERS_MAX: u32 = 1024;
/// Bytes of a frame header: kind, body length, CRC.
pub const FRAME_HEADER_BYTES: u64 = 12;

const FRAME_CHUNK: u32 = 1;
const FRAME_END: u32 = 2;
const TEMP_SUFFIX: &str = ".snap.tmp";
const FINAL_SUFFIX: &str = ".snap";

/// What a snapshot file says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The cluster it belongs to.
    pub cluster_id: u64,
    /// The Raft group (shard).
    pub group_id: u64,
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
}

/// One chunk read back, positioned in the snapshot's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// Offset of `data` within the snapshot data (what a `Snapshot` message carries).
    pub data_offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
    /// CRC32 of `data`.
    pub crc: u32,
}

/// Errors of snapshot files.
#[derive(Debug, thiserror::Error)]
pub enum SnapError {
    /// Bytes that are not a valid snapshot file.
    #[error("snapshot corruption in {file} at byte {offset_bytes}: {reason}")]
    Corrupt {
        /// The file.
        file: String,
        /// Byte offset in it.
        offset_bytes: u64,
        /// What is wrong.
        reason: String,
    },
    /// An I/O operation failed.
    #[error("snapshot I/O error: {op} {path}: {source}")]
    Io {
        /// What was done.
        op: &'static str,
        /// On what.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// The caller's chunk is larger than [`SNAP_CHUNK_BYTES_MAX`].
    #[error("chunk of {chunk_bytes} bytes exceeds {SNAP_CHUNK_BYTES_MAX}")]
    ChunkTooLarge {
        /// Its size.
        chunk_bytes: u64,
    },
    /// The caller's membership has more than [`SNAP_MEMBERS_MAX`] members.
    #[error("{members} members exceed {SNAP_MEMBERS_MAX}")]
    TooManyMembers {
        /// How many.
        members: u64,
    },
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> SnapError {
    SnapError::Io { op, path: path.display().to_string(), source }
}

/// The final file name of a group's snapshot.
pub fn snapshot_file_name(group_id: u64) -> String {
    format!("group-{group_id:020}{FINAL_SUFFIX}")
}

/// Encodes the header (with its CRC).
pub fn encode_header(header: &SnapshotHeader) -> Result<Vec<u8>, SnapError> {
    let conf = &header.meta.conf;
    let members = (conf.voters.len() + conf.learners.len()) as u64;
    if members > u64::from(SNAP_MEMBERS_MAX) {
        return Err(SnapError::TooManyMembers { members });
    }
    let header_bytes = 56 + 8 * members as usize + 4;
    let mut out = Vec::with_capacity(header_bytes);
    out.extend_from_slice(&SNAP_MAGIC);
    out.extend_from_slice(&SNAP_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(header_bytes as u32).to_le_bytes());
    out.extend_from_slice(&header.cluster_id.to_le_bytes());
    out.extend_from_slice(&header.group_id.to_le_bytes());
    out.extend_from_slice(&header.meta.index.to_le_bytes());
    out.extend_from_slice(&header.meta.term.to_le_bytes());
    out.extend_from_slice(&(conf.voters.len() as u32).to_le_bytes());
    out.extend_from_slice(&(conf.learners.len() as u32).to_le_bytes());
    for id in conf.voters.iter().chain(&conf.learners) {
        out.extend_from_slice(&id.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(out.len(), header_bytes);
    Ok(out)
}

fn encode_frame(kind: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES as usize + body.len());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&frame_crc(kind, body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn frame_crc(kind: u32, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&kind.to_le_bytes());
    hasher.update(&(body.len() as u32).to_le_bytes());
    hasher.update(body);
    hasher.finalize()
}

/// Writes one snapshot file. Dropped without [`SnapshotWriter::finish`], it leaves
/// only a temporary file, which [`remove_temp_files`] clears on restart.
#[derive(Debug)]
pub struct SnapshotWriter {
    file: io::BufWriter<File>,
    dir: PathBuf,
    temp_path: PathBuf,
    final_path: PathBuf,
    data_bytes: u64,
    chunks: u64,
}

impl SnapshotWriter {
    /// Starts the snapshot of `header.group_id` in `dir` (created if absent).
    pub fn create(dir: &Path, header: &SnapshotHeader) -> Result<Self, SnapError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err("create directory", dir, e))?;
        let name = snapshot_file_name(header.group_id);
        let temp_path = dir.join(format!("{}{TEMP_SUFFIX}", name.trim_end_matches(FINAL_SUFFIX)));
        let file = File::create(&temp_path).map_err(|e| io_err("create", &temp_path, e))?;
        let mut file = io::BufWriter::new(file);
        file.write_all(&encode_header(header)?).map_err(|e| io_err("write", &temp_path, e))?;
        Ok(SnapshotWriter {
            file,
            dir: dir.to_path_buf(),
            temp_path,
            final_path: dir.join(name),
            data_bytes: 0,
            chunks: 0,
        })
    }

    /// Appends one chunk (at most [`SNAP_CHUNK_BYTES_MAX`] bytes).
    pub fn write_chunk(&mut self, data: &[u8]) -> Result<(), SnapError> {
        if data.len() as u64 > u64::from(SNAP_CHUNK_BYTES_MAX) {
            return Err(SnapError::ChunkTooLarge { chunk_bytes: data.len() as u64 });
        }
        self.file.write_all(&encode_frame(FRAME_CHUNK, data)).map_err(|e| io_err("write", &self.temp_path, e))?;
        self.data_bytes += data.len() as u64;
        self.chunks += 1;
        Ok(())
    }

    /// Writes the end frame, fdatasyncs, renames to the final name and fsyncs the
    /// directory. Returns the final path; only now does the snapshot exist.
    pub fn finish(mut self) -> Result<PathBuf, SnapError> {
        let mut end = Vec::with_capacity(16);
        end.extend_from_slice(&self.data_bytes.to_le_bytes());
        end.extend_from_slice(&self.chunks.to_le_bytes());
        self.file.write_all(&encode_frame(FRAME_END, &end)).map_err(|e| io_err("write", &self.temp_path, e))?;
        let file = self.file.into_inner().map_err(|e| io_err("flush", &self.temp_path, e.into_error()))?;
        file.sync_data().map_err(|e| io_err("fdatasync", &self.temp_path, e))?;
        drop(file);
        std::fs::rename(&self.temp_path, &self.final_path).map_err(|e| io_err("rename", &self.temp_path, e))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| io_err("fsync directory", &self.dir, e))?;
        Ok(self.final_path)
    }
}

/// Deletes group `group_id`'s snapshot file from `dir`, durably (the directory is
/// fsynced); true when there was one.
pub fn remove_snapshot(dir: &Path, group_id: u64) -> Result<bool, SnapError> {
    let path = dir.join(snapshot_file_name(group_id));
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err("remove", &path, e)),
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err("fsync directory", dir, e))?;
    Ok(true)
}

/// Removes temporary files left by snapshots torn by a crash; returns them.
pub fn remove_temp_files(dir: &Path) -> Result<Vec<PathBuf>, SnapError> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        other => other.map_err(|e| io_err("read directory", dir, e))?,
    };
    for entry in entries {
        let path = entry.map_err(|e| io_err("read directory", dir, e))?.path();
        if path.to_str().is_some_and(|p| p.ends_with(TEMP_SUFFIX)) {
            std::fs::remove_file(&path).map_err(|e| io_err("remove", &path, e))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// The complete snapshot files of a directory (temporary files excluded), sorted.
pub fn list_snapshots(dir: &Path) -> Result<Vec<PathBuf>, SnapError> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_err("read directory", dir, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| io_err("read directory", dir, e))?.path();
        if path.to_str().is_some_and(|p| p.ends_with(FINAL_SUFFIX)) {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// Reads a snapshot chunk by chunk, checking every CRC and length.
#[derive(Debug)]
pub struct SnapshotReader<R: Read> {
    reader: R,
    file_name: String,
    header: SnapshotHeader,
    offset_bytes: u64,
    data_bytes: u64,
    chunks: u64,
    done: bool,
}

impl SnapshotReader<BufReader<File>> {
    /// Opens a snapshot file and checks its header.
    pub fn open(path: &Path) -> Result<Self, SnapError> {
        let file = File::open(path).map_err(|e| io_err("open", path, e))?;
        SnapshotReader::new(BufReader::new(file), &path.display().to_string())
    }
}

impl<R: Read> SnapshotReader<R> {
    /// Reads and checks the header from `reader`; `file_name` is for errors.
    pub fn new(mut reader: R, file_name: &str) -> Result<Self, SnapError> {
        let corrupt = |offset_bytes: u64, reason: String| SnapError::Corrupt {
            file: file_name.to_string(),
            offset_bytes,
            reason,
        };
        let mut fixed = [0u8; 56];
        read_exact(&mut reader, &mut fixed, file_name, 0)?;
        if fixed[..8] != SNAP_MAGIC {
            return Err(corrupt(0, "bad magic".into()));
        }
        let version = le_u32(&fixed[8..12]);
        if version != SNAP_FORMAT_VERSION {
            return Err(corrupt(
                8,
                format!("unsupported snapshot format version {version} (this build reads {SNAP_FORMAT_VERSION})"),
            ));
        }
        let header_bytes = le_u32(&fixed[12..16]);
        let (voters, learners) = (le_u32(&fixed[48..52]), le_u32(&fixed[52..56]));
        let members = u64::from(voters) + u64::from(learners);
        if members > u64::from(SNAP_MEMBERS_MAX) || u64::from(header_bytes) != 56 + 8 * members + 4 {
            return Err(corrupt(
                12,
                format!("header length {header_bytes} does not fit {voters} voters and {learners} learners"),
            ));
        }
        let mut rest = vec![0u8; header_bytes as usize - 56];
        read_exact(&mut reader, &mut rest, file_name, 56)?;
        let (ids, crc_bytes) = rest.split_at(rest.len() - 4);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&fixed);
        hasher.update(ids);
        if hasher.finalize() != le_u32(crc_bytes) {
            return Err(corrupt(0, "header CRC mismatch".into()));
        }
        let ids: Vec<u64> = ids.chunks_exact(8).map(le_u64).collect();
        let (voter_ids, learner_ids) = ids.split_at(voters as usize);
        let header = SnapshotHeader {
            cluster_id: le_u64(&fixed[16..24]),
            group_id: le_u64(&fixed[24..32]),
            meta: SnapshotMeta {
                index: le_u64(&fixed[32..40]),
                term: le_u64(&fixed[40..48]),
                conf: ConfState { voters: voter_ids.to_vec(), learners: learner_ids.to_vec() },
            },
        };
        Ok(SnapshotReader {
            reader,
            file_name: file_name.to_string(),
            header,
            offset_bytes: u64::from(header_bytes),
            data_bytes: 0,
            chunks: 0,
            done: false,
        })
    }

    /// The header.
    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// Data bytes read so far.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Chunks read so far.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    fn corrupt(&self, offset_bytes: u64, reason: String) -> SnapError {
        SnapError::Corrupt { file: self.file_name.clone(), offset_bytes, reason }
    }

    /// The next chunk; `None` after the end frame, which must agree with what was read.
    pub fn next_chunk(&mut self) -> Result<Option<SnapshotChunk>, SnapError> {
        if self.done {
            return Ok(None);
        }
        let frame_offset = self.offset_bytes;
        let mut head = [0u8; FRAME_HEADER_BYTES as usize];
        read_exact(&mut self.reader, &mut head, &self.file_name, frame_offset)?;
        let (kind, body_bytes, stored) = (le_u32(&head[0..4]), le_u32(&head[4..8]), le_u32(&head[8..12]));
        let limit = match kind {
            FRAME_CHUNK => SNAP_CHUNK_BYTES_MAX,
            FRAME_END => 16,
            other => return Err(self.corrupt(frame_offset, format!("unknown frame kind {other}"))),
        };
        if body_bytes > limit || (kind == FRAME_END && body_bytes != 16) {
            return Err(self.corrupt(frame_offset, format!("frame length {body_bytes} over its limit {limit}")));
        }
        let mut body = vec![0u8; body_bytes as usize];
        read_exact(&mut self.reader, &mut body, &self.file_name, frame_offset + FRAME_HEADER_BYTES)?;
        if frame_crc(kind, &body) != stored {
            return Err(self.corrupt(frame_offset, "frame CRC mismatch".into()));
        }
        self.offset_bytes += FRAME_HEADER_BYTES + u64::from(body_bytes);
        if kind == FRAME_END {
            let (data_bytes, chunks) = (le_u64(&body[0..8]), le_u64(&body[8..16]));
            if (data_bytes, chunks) != (self.data_bytes, self.chunks) {
                return Err(self.corrupt(
                    frame_offset,
                    format!(
                        "end frame says {data_bytes} bytes in {chunks} chunks, read {} in {}",
                        self.data_bytes, self.chunks
                    ),
                ));
            }
            self.done = true;
            return Ok(None);
        }
        let chunk = SnapshotChunk { data_offset: self.data_bytes, crc: crc32fast::hash(&body), data: body };
        self.data_bytes += chunk.data.len() as u64;
        self.chunks += 1;
        Ok(Some(chunk))
    }
}

/// What [`verify_file`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The header.
    pub header: SnapshotHeader,
    /// Number of chunks.
    pub chunks: u64,
    /// Bytes of data.
    pub data_bytes: u64,
}

/// Reads a whole snapshot from `reader`, checking everything; keeps no data.
pub fn verify_reader<R: Read>(reader: R, file_name: &str) -> Result<SnapshotSummary, SnapError> {
    let mut reader = SnapshotReader::new(reader, file_name)?;
    while reader.next_chunk()?.is_some() {}
    Ok(SnapshotSummary { header: reader.header().clone(), chunks: reader.chunks(), data_bytes: reader.data_bytes() })
}

/// Checks a whole snapshot file.
pub fn verify_file(path: &Path) -> Result<SnapshotSummary, SnapError> {
    let file = File::open(path).map_err(|e| io_err("open", path, e))?;
    verify_reader(BufReader::new(file), &path.display().to_string())
}

fn read_exact<R: Read>(reader: &mut R, buf: &mut [u8], file_name: &str, offset_bytes: u64) -> Result<(), SnapError> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => SnapError::Corrupt {
            file: file_name.to_string(),
            offset_bytes,
            reason: format!("file ends inside a {}-byte structure", buf.len()),
        },
        _ => SnapError::Io { op: "read", path: file_name.to_string(), source: e },
    })
}

fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"))
}

fn le_u64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests;
