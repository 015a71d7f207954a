//! The per-core write-ahead log (DESIGN §5): Raft entries, hard states,
//! truncations and snapshot markers of every group on one core, and the drops of
//! groups whose replica left the core, written in group-commit batches to
//! fixed-size, block-aligned segment files.
//!
//! Owns: the on-disk format ([`format`](mod@format)), recovery ([`recovery`]), the group-commit
//! writer state machine ([`writer`]) and the synchronous [`SegmentStore`] seam with
//! its simulated disk ([`sim_disk`]). Everything here is sans-I/O or synchronous:
//! the glommio DMA executor of the same commands lives in `crate::runtime`.
//! One WAL per core, used only by that core's executor (nothing here is `Send`-
//! shared across cores).
//!
//! Invariants: a batch is acknowledged (reported by [`WalWriter::complete`]) only
//! after its write and its fdatasync completed; no block holding an acknowledged
//! batch is rewritten; recovery never drops an acknowledged batch silently (it cuts
//! a torn tail or refuses with file and offset).
//!
//! How a driver runs it: [`WalWriter::append`] records, [`WalWriter::start_batch`]
//! gives an [`IoBatch`] of [`IoCommand`]s, the driver performs them in order, then
//! [`WalWriter::complete`] says which entries are durable. [`SyncWal`] does exactly
//! that over any [`SegmentStore`].

pub mod dir;
pub mod format;
pub mod fuzzing;
pub mod recovery;
pub mod sim_disk;
pub mod writer;

use std::io;

pub use dir::{list_segment_files, recover_dir};
pub use format::{Record, SnapshotMarker, WalIdentity};
pub use recovery::{GroupLog, Recovered, ResumePoint, SegmentFile, SegmentSummary, recover};
pub use sim_disk::{CrashMode, SimDisk};
pub use writer::{DurableBatch, IoBatch, IoCommand, WalConfig, WalWriter};

/// How segment files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoMode {
    /// O_DIRECT (glommio DMA files), 4 KiB aligned, plus fdatasync. The default.
    #[default]
    Direct,
    /// Buffered writes plus fdatasync, for file systems without O_DIRECT (tmpfs).
    /// As durable, slower, and it uses the page cache.
    Buffered,
}

/// The configuration option (`wal_io_mode = "buffered"`, flag `--wal-io-mode
/// buffered`) named when O_DIRECT is refused.
pub const BUFFERED_IO_OPTION: &str = "--wal-io-mode buffered (config: wal_io_mode = \"buffered\")";

/// Errors of the WAL.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// Bytes on disk that recovery cannot accept: an acknowledged batch may be lost.
    #[error("WAL corruption in {file} at byte {offset_bytes}: {reason}")]
    Corrupt {
        /// The segment file.
        file: String,
        /// Byte offset in it.
        offset_bytes: u64,
        /// What is wrong.
        reason: String,
    },
    /// A segment of another cluster, node or core.
    #[error("{file} belongs to cluster {} node {} core {}, expected cluster {} node {} core {}",
        found.cluster_id, found.node_id, found.core_id, expected.cluster_id, expected.node_id, expected.core_id)]
    ForeignSegment {
        /// The segment file.
        file: String,
        /// The identity this WAL has.
        expected: WalIdentity,
        /// The identity in the file.
        found: WalIdentity,
    },
    /// A gap in the segment sequence.
    #[error("WAL segment {missing_seq} missing (after {after_file})")]
    MissingSegment {
        /// The last file before the gap.
        after_file: String,
        /// The missing sequence number.
        missing_seq: u64,
    },
    /// A segment written by another format version.
    #[error(
        "{file}: unsupported WAL format version {found} (this build reads {} to {})",
        format::FORMAT_VERSION_OLDEST_READ,
        format::FORMAT_VERSION
    )]
    UnsupportedVersion {
        /// The segment file.
        file: String,
        /// Version found.
        found: u32,
    },
    /// The file system refused O_DIRECT.
    #[error(
        "the file system of {path} does not support O_DIRECT; use {BUFFERED_IO_OPTION} to write with buffered I/O + fdatasync"
    )]
    DirectIoUnsupported {
        /// The directory.
        path: String,
    },
    /// An I/O operation failed. The WAL is unusable afterwards (fail-stop).
    #[error("WAL I/O error: {op} {path}: {source}")]
    Io {
        /// What was done.
        op: &'static str,
        /// On what.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// The caller's record is malformed.
    #[error("invalid WAL record: {0}")]
    Record(#[from] format::RecordError),
    /// A record larger than any batch may be.
    #[error("record of {record_bytes} bytes exceeds the batch limit of {limit_bytes} bytes")]
    RecordTooLarge {
        /// Its size.
        record_bytes: u64,
        /// The limit.
        limit_bytes: u64,
    },
    /// The next batch is full: wait for the batch in flight, then flush.
    #[error("WAL busy: {pending_bytes} bytes pending, limit {limit_bytes}")]
    Busy {
        /// Bytes pending.
        pending_bytes: u64,
        /// The limit.
        limit_bytes: u64,
    },
    /// Invalid configuration.
    #[error("invalid WAL configuration: {0}")]
    Config(String),
    /// An earlier I/O error stopped this WAL (fail-stop): what it holds is only
    /// known again after a restart recovers it.
    #[error("the WAL stopped after an I/O error; restart the node to recover")]
    Stopped,
}

/// The file name of segment `segment_seq`: zero-padded so names sort like numbers.
pub fn segment_file_name(segment_seq: u64) -> String {
    format!("{segment_seq:020}.wal")
}

/// The sequence number in a segment file name, `None` for other files.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Synchronous storage of one WAL's segments: the seam between the WAL logic and
/// a disk. The simulator's [`SimDisk`] implements it; production uses the async
/// glommio executor in `crate::runtime`, which runs the same commands.
pub trait SegmentStore {
    /// Sequence numbers of the segment files present, ascending.
    fn list_segments(&mut self) -> io::Result<Vec<u64>>;
    /// The whole content of a segment file, as a reader would see it now.
    fn read_segment(&mut self, segment_seq: u64) -> io::Result<Vec<u8>>;
    /// Performs one command; returns once it completed (for `Sync`: durably).
    fn execute(&mut self, command: &IoCommand) -> io::Result<()>;
}

/// Reads and recovers every segment of `store`, one at a time.
pub fn recover_store<S: SegmentStore>(store: &mut S, expected: Option<WalIdentity>) -> Result<Recovered, WalError> {
    let list = store.list_segments().map_err(|source| io_error("list", "segments", source))?;
    let mut recovery = recovery::Recovery::new(expected);
    for segment_seq in list {
        let file_name = segment_file_name(segment_seq);
        let bytes = store.read_segment(segment_seq).map_err(|source| io_error("read", &file_name, source))?;
        recovery.add_segment(&SegmentFile { file_name: &file_name, segment_seq, bytes: &bytes })?;
    }
    recovery.finish()
}

/// A WAL driven synchronously over a [`SegmentStore`]: each flush performs the
/// batch's commands in order and completes it. The simulator may instead drive the
/// [`WalWriter`] itself (through [`SyncWal::writer_mut`] and the store) to crash
/// between a batch's write and its sync.
#[derive(Debug)]
pub struct SyncWal<S: SegmentStore> {
    store: S,
    writer: WalWriter,
}

impl<S: SegmentStore> SyncWal<S> {
    /// Recovers the WAL in `store` and opens it for writing.
    pub fn open(mut store: S, config: WalConfig) -> Result<(Self, Recovered), WalError> {
        config.validate()?;
        let recovered = recover_store(&mut store, Some(config.identity))?;
        let writer = WalWriter::new(config, &recovered)?;
        Ok((SyncWal { store, writer }, recovered))
    }

    /// Queues a record for the next batch.
    pub fn append(&mut self, record: &Record) -> Result<(), WalError> {
        self.writer.append(record)
    }

    /// Writes and syncs the pending records as one batch; `None` if none pending.
    pub fn flush(&mut self) -> Result<Option<DurableBatch>, WalError> {
        self.writer.check_running()?;
        let Some(batch) = self.writer.start_batch() else {
            return Ok(None);
        };
        for command in &batch.commands {
            if let Err(source) = self.store.execute(command) {
                self.writer.stop();
                return Err(io_error("execute", &describe(command), source));
            }
        }
        Ok(Some(self.writer.complete(batch.batch_seq)))
    }

    /// The writer (to drive batches step by step).
    pub fn writer_mut(&mut self) -> &mut WalWriter {
        &mut self.writer
    }

    /// The writer, read-only.
    pub fn writer_ref(&self) -> &WalWriter {
        &self.writer
    }

    /// The store, read-only (to inspect or copy it).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store (to crash or inspect it).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Gives the store back (e.g. to crash it and reopen).
    pub fn into_store(self) -> S {
        self.store
    }
}

/// A short description of a command for error messages.
pub fn describe(command: &IoCommand) -> String {
    match command {
        IoCommand::CreateSegment { segment_seq, .. } => {
            format!("create {}", segment_file_name(*segment_seq))
        }
        IoCommand::Write { segment_seq, offset_bytes, bytes } => {
            format!("write {} bytes at {offset_bytes} of {}", bytes.len(), segment_file_name(*segment_seq))
        }
        IoCommand::Sync { segment_seq } => format!("fdatasync {}", segment_file_name(*segment_seq)),
        IoCommand::DeleteSegment { segment_seq } => {
            format!("delete {}", segment_file_name(*segment_seq))
        }
    }
}

/// Wraps an I/O error.
pub fn io_error(op: &'static str, path: &str, source: io::Error) -> WalError {
    WalError::Io { op, path: path.to_string(), source }
}

#[cfg(test)]
mod tests;
