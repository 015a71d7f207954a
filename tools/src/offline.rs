//! Offline tools over a node's data directory (no server, no cluster address):
//! dump and verify write-ahead logs and shard snapshots (DESIGN §5, §10).
//!
//! Owns: mapping a PATH (a data dir, a core dir, or a wal/snap dir) to the
//! directories to read, and the human-readable output. Runs in the `corekv-ctl`
//! process; reads files with blocking std I/O.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use corekv_engine::snap::{self, SnapError, SnapshotReader};
use corekv_engine::wal::format::{self, BLOCK_BYTES, Record};
use corekv_engine::wal::{WalError, list_segment_files, recover_dir};

/// Errors of the offline tools. Each one is "the first problem" a verify reports.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// A WAL problem (corruption names file and offset).
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A snapshot problem (corruption names file and offset).
    #[error(transparent)]
    Snapshot(#[from] SnapError),
    /// The path holds nothing of the expected kind.
    #[error("{path}: {reason}")]
    Path {
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A WAL found under `core-<i>` whose segments name another core.
    #[error("{dir}: directory of core {dir_core} holds a WAL of core {wal_core}")]
    WrongCore {
        /// The WAL directory.
        dir: String,
        /// Core index in the directory name.
        dir_core: u32,
        /// Core id in the segment headers.
        wal_core: u32,
    },
    /// Writing the report failed.
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
}

/// The sub-directories named `kind` ("wal" or "snap") that `path` designates: a
/// data dir (`core-*/kind`), a core dir (`kind`), or the directory itself.
pub fn resolve_dirs(path: &Path, kind: &str) -> Result<Vec<PathBuf>, OfflineError> {
    let not_found = |reason: &str| OfflineError::Path { path: path.display().to_string(), reason: reason.to_string() };
    if !path.is_dir() {
        return Err(not_found("not a directory"));
    }
    let mut cores: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| not_found(&e.to_string()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && core_index(p).is_some())
        .map(|p| p.join(kind))
        .filter(|p| p.is_dir())
        .collect();
    if !cores.is_empty() {
        cores.sort_by_key(|p| p.parent().and_then(core_index));
        return Ok(cores);
    }
    if path.join(kind).is_dir() {
        return Ok(vec![path.join(kind)]);
    }
    Ok(vec![path.to_path_buf()])
}

/// `i` for a directory named `core-<i>`.
fn core_index(path: &Path) -> Option<u32> {
    path.file_name()?.to_str()?.strip_prefix("core-")?.parse().ok()
}

/// One WAL directory that recovered cleanly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalVerified {
    /// The wal directory.
    pub dir: PathBuf,
    /// Its segment files (0: the directory holds none).
    pub segments: usize,
    /// Batches recovery read.
    pub batches: u64,
    /// Raft groups with records.
    pub groups: usize,
    /// Entries in the groups' logs after truncations and snapshots.
    pub live_entries: usize,
    /// The sequence number the next batch would get.
    pub next_batch_seq: u64,
}

/// Recovers every WAL under `path`, as a starting node does: the report of each
/// directory, or the first problem.
pub fn wal_verify_report(path: &Path) -> Result<Vec<WalVerified>, OfflineError> {
    let mut reports = Vec::new();
    for dir in resolve_dirs(path, "wal")? {
        let segments = list_segment_files(&dir)?;
        if segments.is_empty() {
            reports.push(WalVerified { dir, segments: 0, batches: 0, groups: 0, live_entries: 0, next_batch_seq: 0 });
            continue;
        }
        let recovered = recover_dir(&dir, None)?;
        if let (Some(dir_core), Some(identity)) = (dir.parent().and_then(core_index), recovered.identity)
            && dir_core != identity.core_id
        {
            return Err(OfflineError::WrongCore {
                dir: dir.display().to_string(),
                dir_core,
                wal_core: identity.core_id,
            });
        }
        reports.push(WalVerified {
            segments: segments.len(),
            batches: recovered.batches_recovered,
            groups: recovered.groups.len(),
            live_entries: recovered.groups.values().map(|g| g.entries.len()).sum(),
            next_batch_seq: recovered.next_batch_seq,
            dir,
        });
    }
    Ok(reports)
}

/// One line for a verified WAL directory.
pub fn describe_wal_verified(r: &WalVerified) -> String {
    if r.segments == 0 {
        return format!("{}: no WAL segments", r.dir.display());
    }
    format!(
        "ok {}: {} segments, {} batches, {} groups, {} live entries, next batch {}",
        r.dir.display(),
        r.segments,
        r.batches,
        r.groups,
        r.live_entries,
        r.next_batch_seq
    )
}

/// Verifies every WAL under `path`: recovery from scratch, as a starting node does.
pub fn wal_verify(path: &Path, out: &mut dyn Write) -> Result<(), OfflineError> {
    for report in wal_verify_report(path)? {
        writeln!(out, "{}", describe_wal_verified(&report))?;
    }
    Ok(())
}

/// Prints every segment header and every batch and record the scan finds, then
/// the verdict of a full recovery (which is the error, if any).
pub fn wal_dump(path: &Path, out: &mut dyn Write) -> Result<(), OfflineError> {
    for dir in resolve_dirs(path, "wal")? {
        writeln!(out, "wal {}", dir.display())?;
        for (segment_seq, file) in list_segment_files(&dir)? {
            let bytes = std::fs::read(&file)
                .map_err(|e| corekv_engine::wal::io_error("read", &file.display().to_string(), e))?;
            dump_segment(segment_seq, &file, &bytes, out)?;
        }
        wal_verify(&dir, out)?;
    }
    Ok(())
}

fn dump_segment(segment_seq: u64, file: &Path, bytes: &[u8], out: &mut dyn Write) -> Result<(), OfflineError> {
    match format::decode_segment_header(bytes) {
        Ok(h) => writeln!(
            out,
            "segment {} (seq {segment_seq}): format v{} cluster {} node {} core {} seq {} first batch {} size {}",
            file.display(),
            h.format_version,
            h.identity.cluster_id,
            h.identity.node_id,
            h.identity.core_id,
            h.segment_seq,
            h.first_batch_seq,
            h.segment_bytes
        )?,
        Err(e) => {
            writeln!(out, "segment {} (seq {segment_seq}): bad header: {e}", file.display())?;
            return Ok(());
        }
    }
    let mut offset = BLOCK_BYTES;
    while offset < bytes.len() as u64 {
        match format::decode_batch(&bytes[offset as usize..]) {
            Ok(batch) => {
                writeln!(
                    out,
                    "  batch {} at {offset}: {} records, {} bytes",
                    batch.batch_seq,
                    batch.records.len(),
                    batch.padded_bytes
                )?;
                for record in &batch.records {
                    writeln!(out, "    {}", describe_record(record))?;
                }
                offset += batch.padded_bytes;
            }
            Err(e) => {
                writeln!(out, "  end of batches at {offset}: {e}")?;
                break;
            }
        }
    }
    Ok(())
}

/// One line for a record (the WAL format's own rendering).
pub fn describe_record(record: &Record) -> String {
    record.to_string()
}

/// Snapshot files `path` designates: a file, or the snap dirs of a data, core or
/// snap directory.
fn snapshot_files(path: &Path) -> Result<Vec<PathBuf>, OfflineError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for dir in resolve_dirs(path, "snap")? {
        files.extend(snap::list_snapshots(&dir)?);
    }
    Ok(files)
}

/// One snapshot file that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotVerified {
    /// The file.
    pub file: PathBuf,
    /// The cluster it belongs to.
    pub cluster_id: u64,
    /// Its shard (Raft group).
    pub group_id: u64,
    /// The log index it covers.
    pub index: u64,
    /// The term of that index.
    pub term: u64,
    /// Its chunks.
    pub chunks: u64,
    /// Its data bytes.
    pub data_bytes: u64,
}

/// Verifies every snapshot file under `path` (every chunk's CRC, the end frame):
/// the report of each file, or the first problem.
pub fn snapshot_verify_report(path: &Path) -> Result<Vec<SnapshotVerified>, OfflineError> {
    let mut reports = Vec::new();
    for file in snapshot_files(path)? {
        let summary = snap::verify_file(&file)?;
        reports.push(SnapshotVerified {
            file,
            cluster_id: summary.header.cluster_id,
            group_id: summary.header.group_id,
            index: summary.header.meta.index,
            term: summary.header.meta.term,
            chunks: summary.chunks,
            data_bytes: summary.data_bytes,
        });
    }
    Ok(reports)
}

/// One line for a verified snapshot file.
pub fn describe_snapshot_verified(r: &SnapshotVerified) -> String {
    format!(
        "ok {}: cluster {} group {} index {} term {}, {} chunks, {} bytes",
        r.file.display(),
        r.cluster_id,
        r.group_id,
        r.index,
        r.term,
        r.chunks,
        r.data_bytes
    )
}

/// Verifies every snapshot file under `path` (every chunk's CRC, the end frame).
pub fn snapshot_verify(path: &Path, out: &mut dyn Write) -> Result<(), OfflineError> {
    let reports = snapshot_verify_report(path)?;
    if reports.is_empty() {
        writeln!(out, "{}: no snapshot files", path.display())?;
    }
    for report in reports {
        writeln!(out, "{}", describe_snapshot_verified(&report))?;
    }
    Ok(())
}

/// Prints each snapshot's header and chunk list.
pub fn snapshot_dump(path: &Path, out: &mut dyn Write) -> Result<(), OfflineError> {
    for file in snapshot_files(path)? {
        let mut reader = SnapshotReader::open(&file)?;
        let h = reader.header().clone();
        let mut line = format!(
            "snapshot {}: cluster {} group {} index {} term {} voters {:?} learners {:?}",
            file.display(),
            h.cluster_id,
            h.group_id,
            h.meta.index,
            h.meta.term,
            h.meta.conf.voters,
            h.meta.conf.learners
        );
        line.push('\n');
        out.write_all(line.as_bytes())?;
        while let Some(chunk) = reader.next_chunk()? {
            let mut line = String::new();
            let _ = writeln!(
                line,
                "  chunk at data offset {}: {} bytes, crc {:#010x}",
                chunk.data_offset,
                chunk.data.len(),
                chunk.crc
            );
            out.write_all(line.as_bytes())?;
        }
        writeln!(out, "  end: {} chunks, {} bytes", reader.chunks(), reader.data_bytes())?;
    }
    Ok(())
}
