//! The production WAL driver: executes the [`WalWriter`]'s I/O commands on glommio
//! DMA files (O_DIRECT, 4 KiB aligned, fdatasync), or on buffered files with
//! fdatasync for file systems without O_DIRECT ([`IoMode::Buffered`]).
//!
//! Owns: the open segment files of one core's WAL directory. Runs inside that
//! core's glommio executor; nothing is shared with other cores.
//!
//! Group commit: [`DmaWal::append`] only queues records; [`DmaWal::flush`] seals
//! them into one batch, writes and fdatasyncs it, and reports what became durable.
//! Records appended while a flush awaits its I/O form the next batch. A second
//! `flush` while one is in flight returns `Ok(None)` at once: one flusher task
//! per core drives the loop.
//!
//! Recovery reads segment files with plain blocking reads ([`recover_dir`]): it
//! runs once, before the core serves anything.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use corekv_rpc::raft::Entry;
use glommio::io::{BufferedFile, DmaFile, OpenOptions};

use crate::wal::format::BLOCK_BYTES;
use crate::wal::{
    DurableBatch, IoCommand, IoMode, Record, Recovered, WalConfig, WalError, WalWriter, describe, io_error,
    recover_dir, segment_file_name,
};

/// Bytes zero-filled per write when a fresh segment is created.
const ZERO_FILL_CHUNK_BYTES: u64 = 1 << 20;

/// Counters of one WAL (DESIGN §9 `stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Batches made durable.
    pub batches: u64,
    /// Bytes written in batches, padding included.
    pub batch_bytes: u64,
    /// fdatasync calls (batches and segment creations).
    pub fdatasyncs: u64,
    /// Segments created fresh.
    pub segments_created: u64,
    /// Segments reused.
    pub segments_recycled: u64,
    /// Segments deleted.
    pub segments_deleted: u64,
}

enum SegmentHandle {
    Direct(DmaFile),
    Buffered(BufferedFile),
}

impl SegmentHandle {
    async fn write_at(&self, bytes: &[u8], offset_bytes: u64) -> io::Result<()> {
        let written = match self {
            SegmentHandle::Direct(file) => {
                let mut buffer = file.alloc_dma_buffer(bytes.len());
                buffer.as_bytes_mut().copy_from_slice(bytes);
                file.write_at(buffer, offset_bytes).await?
            }
            SegmentHandle::Buffered(file) => file.write_at(bytes.to_vec(), offset_bytes).await?,
        };
        if written != bytes.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, format!("short write: {written} of {}", bytes.len())));
        }
        Ok(())
    }

    async fn fdatasync(&self) -> io::Result<()> {
        match self {
            SegmentHandle::Direct(file) => Ok(file.fdatasync().await?),
            SegmentHandle::Buffered(file) => Ok(file.fdatasync().await?),
        }
    }

    async fn pre_allocate(&self, bytes: u64) -> io::Result<()> {
        match self {
            SegmentHandle::Direct(file) => Ok(file.pre_allocate(bytes, false).await?),
            SegmentHandle::Buffered(file) => Ok(file.pre_allocate(bytes, false).await?),
        }
    }

    async fn close(self) -> io::Result<()> {
        match self {
            SegmentHandle::Direct(file) => Ok(file.close().await?),
            SegmentHandle::Buffered(file) => Ok(file.close().await?),
        }
    }
}

/// One core's WAL on real files.
pub struct DmaWal {
    dir: PathBuf,
    io_mode: IoMode,
    writer: RefCell<WalWriter>,
    files: RefCell<BTreeMap<u64, Rc<SegmentHandle>>>,
    stats: Cell<WalStats>,
}

impl std::fmt::Debug for DmaWal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaWal").field("dir", &self.dir).field("io_mode", &self.io_mode).finish_non_exhaustive()
    }
}

impl DmaWal {
    /// Recovers the WAL in `dir` (created if absent) and opens it for writing.
    /// With [`IoMode::Direct`], a file system without O_DIRECT is refused with
    /// [`WalError::DirectIoUnsupported`], which names the buffered option.
    pub async fn open(dir: impl AsRef<Path>, config: WalConfig) -> Result<(DmaWal, Recovered), WalError> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| io_error("create directory", &dir.display().to_string(), e))?;
        if config.io_mode == IoMode::Direct {
            probe_direct_io(&dir).await?;
        }
        let recovered = recover_dir(&dir, Some(config.identity))?;
        let wal = DmaWal {
            io_mode: config.io_mode,
            writer: RefCell::new(WalWriter::new(config, &recovered)?),
            files: RefCell::new(BTreeMap::new()),
            stats: Cell::new(WalStats::default()),
            dir,
        };
        let housekeeping = wal.writer.borrow_mut().take_housekeeping();
        for command in &housekeeping {
            wal.execute(command).await?;
        }
        Ok((wal, recovered))
    }

    /// Queues a record for the next batch.
    pub fn append(&self, record: &Record) -> Result<(), WalError> {
        self.writer.borrow_mut().append(record)
    }

    /// Queues entries of a group for the next batch.
    pub fn append_entries(&self, group_id: u64, entries: &[Entry]) -> Result<(), WalError> {
        self.writer.borrow_mut().append_entries(group_id, entries)
    }

    /// Writes and fdatasyncs the pending records as one batch. `Ok(None)`: nothing
    /// pending, or another flush is in flight (its completion covers earlier
    /// records; call again afterwards for the rest).
    ///
    /// An error leaves the WAL unusable (fail-stop): restart and recover.
    pub async fn flush(&self) -> Result<Option<DurableBatch>, WalError> {
        self.writer.borrow().check_running()?;
        let Some(batch) = self.writer.borrow_mut().start_batch() else {
            return Ok(None);
        };
        for command in &batch.commands {
            if let Err(e) = self.execute(command).await {
                self.writer.borrow_mut().stop(); // fail-stop: the batch's fate is unknown
                return Err(e);
            }
        }
        let durable = self.writer.borrow_mut().complete(batch.batch_seq);
        let mut stats = self.stats.get();
        stats.batches += 1;
        stats.batch_bytes += durable.written_bytes;
        self.stats.set(stats);
        Ok(Some(durable))
    }

    /// Bytes of records the open batch can still take.
    pub fn room_bytes(&self) -> u64 {
        self.writer.borrow().room_bytes()
    }

    /// See [`crate::wal::WalWriter::pinning_groups`].
    pub fn pinning_groups(&self, live_max: usize) -> Vec<(u64, u64)> {
        self.writer.borrow().pinning_groups(live_max)
    }

    /// Bytes of records waiting for the next batch.
    pub fn pending_bytes(&self) -> u64 {
        self.writer.borrow().pending_bytes()
    }

    /// The counters.
    pub fn stats(&self) -> WalStats {
        self.stats.get()
    }

    /// Live segment sequence numbers, oldest first.
    pub fn live_segments(&self) -> Vec<u64> {
        self.writer.borrow().live_segments()
    }

    /// Closes every open segment file.
    pub async fn close(self) -> Result<(), WalError> {
        let files = std::mem::take(&mut *self.files.borrow_mut());
        for (seq, handle) in files {
            if let Ok(handle) = Rc::try_unwrap(handle) {
                handle.close().await.map_err(|e| io_error("close", &segment_file_name(seq), e))?;
            }
        }
        Ok(())
    }

    fn path_of(&self, segment_seq: u64) -> PathBuf {
        self.dir.join(segment_file_name(segment_seq))
    }

    async fn execute(&self, command: &IoCommand) -> Result<(), WalError> {
        self.execute_io(command).await.map_err(|e| io_error("execute", &describe(command), e))
    }

    async fn execute_io(&self, command: &IoCommand) -> io::Result<()> {
        match command {
            IoCommand::CreateSegment { segment_seq, recycle_from, segment_bytes, header } => {
                self.create_segment(*segment_seq, *recycle_from, *segment_bytes, header).await
            }
            IoCommand::Write { segment_seq, offset_bytes, bytes } => {
                self.handle(*segment_seq).await?.write_at(bytes, *offset_bytes).await
            }
            IoCommand::Sync { segment_seq } => {
                self.handle(*segment_seq).await?.fdatasync().await?;
                self.count(|s| s.fdatasyncs += 1);
                Ok(())
            }
            IoCommand::DeleteSegment { segment_seq } => {
                self.forget(*segment_seq).await?;
                match std::fs::remove_file(self.path_of(*segment_seq)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                self.count(|s| s.segments_deleted += 1);
                Ok(())
            }
        }
    }

    async fn create_segment(
        &self,
        segment_seq: u64,
        recycle_from: Option<u64>,
        segment_bytes: u64,
        header: &[u8],
    ) -> io::Result<()> {
        let path = self.path_of(segment_seq);
        self.forget(segment_seq).await?;
        let handle = match recycle_from {
            Some(old) => {
                // Reusing a covered segment: overwriting written blocks syncs faster
                // than filling fresh extents (DESIGN §12). Its stale batches carry
                // lower sequence numbers, which recovery ignores.
                self.forget(old).await?;
                std::fs::rename(self.path_of(old), &path)?;
                self.count(|s| s.segments_recycled += 1);
                self.open_file(&path, false).await?
            }
            None => {
                let handle = self.open_file(&path, true).await?;
                handle.pre_allocate(segment_bytes).await?;
                // Pre-zero: fallocate alone leaves unwritten extents whose first
                // fdatasync costs about twice as much (DESIGN §12).
                let zeros = vec![0u8; ZERO_FILL_CHUNK_BYTES.min(segment_bytes) as usize];
                let mut offset = 0;
                while offset < segment_bytes {
                    let len = (segment_bytes - offset).min(zeros.len() as u64) as usize;
                    handle.write_at(&zeros[..len], offset).await?;
                    offset += len as u64;
                }
                self.count(|s| s.segments_created += 1);
                handle
            }
        };
        assert_eq!(header.len() as u64, BLOCK_BYTES, "segment header is one block");
        handle.write_at(header, 0).await?;
        handle.fdatasync().await?;
        self.count(|s| s.fdatasyncs += 1);
        sync_dir(&self.dir)?;
        self.files.borrow_mut().insert(segment_seq, Rc::new(handle));
        Ok(())
    }

    /// The open handle of a segment, opening an existing file on first use.
    async fn handle(&self, segment_seq: u64) -> io::Result<Rc<SegmentHandle>> {
        if let Some(handle) = self.files.borrow().get(&segment_seq) {
            return Ok(handle.clone());
        }
        let handle = Rc::new(self.open_file(&self.path_of(segment_seq), false).await?);
        self.files.borrow_mut().insert(segment_seq, handle.clone());
        Ok(handle)
    }

    async fn open_file(&self, path: &Path, create: bool) -> io::Result<SegmentHandle> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(create).truncate(create);
        Ok(match self.io_mode {
            IoMode::Direct => SegmentHandle::Direct(options.dma_open(path).await?),
            IoMode::Buffered => SegmentHandle::Buffered(options.buffered_open(path).await?),
        })
    }

    async fn forget(&self, segment_seq: u64) -> io::Result<()> {
        let removed = self.files.borrow_mut().remove(&segment_seq);
        if let Some(handle) = removed.and_then(|h| Rc::try_unwrap(h).ok()) {
            handle.close().await?;
        }
        Ok(())
    }

    fn count(&self, update: impl FnOnce(&mut WalStats)) {
        let mut stats = self.stats.get();
        update(&mut stats);
        self.stats.set(stats);
    }
}

/// Opens a scratch file with O_DIRECT and writes one block to it, to learn whether
/// the file system allows direct I/O (tmpfs before Linux 6.6 refuses the open
/// with EINVAL; some file systems refuse only the write).
async fn probe_direct_io(dir: &Path) -> Result<(), WalError> {
    let probe = dir.join(".odirect-probe");
    let result = async {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).dma_open(&probe).await?;
        let mut block = file.alloc_dma_buffer(BLOCK_BYTES as usize);
        block.as_bytes_mut().fill(0);
        file.write_at(block, 0).await?;
        file.close().await?;
        Ok::<(), glommio::GlommioError<()>>(())
    }
    .await;
    let _ = std::fs::remove_file(&probe);
    result.map_err(|e| classify_direct_io_error(dir, io::Error::from(e)))
}

/// Turns the error of a first O_DIRECT open or write into a [`WalError`]: EINVAL
/// means "no O_DIRECT here" and names the buffered option.
pub fn classify_direct_io_error(dir: &Path, error: io::Error) -> WalError {
    if error.kind() == io::ErrorKind::InvalidInput {
        WalError::DirectIoUnsupported { path: dir.display().to_string() }
    } else {
        io_error("open O_DIRECT", &dir.display().to_string(), error)
    }
}

/// Measures the disk's floor for one durable WAL write: `iterations` times one
/// 4 KiB O_DIRECT overwrite of a written 1 MiB file in `dir`, then fdatasync.
/// Returns the total time (benchmarks and a disk self-check; `dir` is left clean).
pub async fn dma_write_fdatasync_probe(dir: &Path, iterations: u64) -> io::Result<std::time::Duration> {
    const PROBE_FILE_BYTES: u64 = 1 << 20;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(".fdatasync-probe");
    let mut options = OpenOptions::new();
    let file = options.read(true).write(true).create(true).truncate(true).dma_open(&path).await?;
    let mut zeros = file.alloc_dma_buffer(PROBE_FILE_BYTES as usize);
    zeros.as_bytes_mut().fill(0);
    file.write_at(zeros, 0).await?;
    file.fdatasync().await?;
    let start = std::time::Instant::now();
    for i in 0..iterations {
        let mut block = file.alloc_dma_buffer(BLOCK_BYTES as usize);
        block.as_bytes_mut().fill(i as u8);
        file.write_at(block, (i * BLOCK_BYTES) % PROBE_FILE_BYTES).await?;
        file.fdatasync().await?;
    }
    let elapsed = start.elapsed();
    file.close().await?;
    std::fs::remove_file(&path)?;
    Ok(elapsed)
}

/// fsyncs a directory so created, renamed and deleted entries are durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn einval_from_o_direct_names_the_buffered_option() {
        let err = classify_direct_io_error(Path::new("/mnt/tmp"), io::Error::from_raw_os_error(22));
        assert!(matches!(err, WalError::DirectIoUnsupported { .. }));
        let text = err.to_string();
        assert!(
            text.contains("/mnt/tmp") && text.contains("O_DIRECT") && text.contains("--wal-io-mode buffered"),
            "{text}"
        );
        let other = classify_direct_io_error(Path::new("/x"), io::Error::from_raw_os_error(13));
        assert!(matches!(other, WalError::Io { .. }));
    }
}
