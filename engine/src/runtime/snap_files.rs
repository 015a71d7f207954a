//! Snapshot files written off the core's thread.
//!
//! A snapshot file is the whole state of a shard: writing and fdatasyncing it
//! takes milliseconds per MiB, and while a core's thread waits on it nothing of
//! that core moves, not even the heartbeats of the groups it leads (a large
//! shard's compaction could stall every other shard on the core past an
//! election timeout). So [`SnapshotFiles::write`] only queues the file; one
//! task writes the queued files in order on glommio's blocking thread, and the
//! core's thread goes on.
//!
//! Durability order is kept the same as a synchronous write: the node core
//! appends the snapshot's marker (and, for an installed snapshot, the log
//! truncation) to the WAL's open batch right after asking for the file, and the
//! flusher calls [`SnapshotFiles::settled`] before it writes a batch: every file
//! queued before the batch starts is durable before any of the batch's records
//! can be. Files are written in the order they were queued, so two snapshots
//! of one group land in the order of their markers. A failed write stops the
//! core (fail-stop, as a failed WAL write does).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

use crate::snap::{SnapshotHeader, SnapshotWriter};

/// Bytes per chunk of a snapshot file.
const SNAPSHOT_FILE_CHUNK_BYTES: usize = 1 << 20;

/// A file to write.
struct Job {
    header: SnapshotHeader,
    data: Arc<[u8]>,
}

/// The queue of snapshot files of one core (see the module header).
pub(super) struct SnapshotFiles {
    dir: PathBuf,
    jobs: RefCell<VecDeque<Job>>,
    /// Files queued, and files written (or failed), since the core started.
    queued: Cell<u64>,
    written: Cell<u64>,
    failure: RefCell<Option<String>>,
    /// Wakes the writer task.
    work: LocalSender<()>,
    work_rx: RefCell<Option<LocalReceiver<()>>>,
    /// Wakes whoever waits in [`Self::settled`].
    done: LocalSender<()>,
    done_rx: RefCell<Option<LocalReceiver<()>>>,
    closing: Cell<bool>,
}

impl SnapshotFiles {
    /// A queue writing into `dir` (the core's `snap/`); [`Self::run`] writes.
    pub(super) fn new(dir: PathBuf) -> Rc<SnapshotFiles> {
        let (work, work_rx) = local_channel::new_bounded(1);
        let (done, done_rx) = local_channel::new_bounded(1);
        Rc::new(SnapshotFiles {
            dir,
            jobs: RefCell::new(VecDeque::new()),
            queued: Cell::new(0),
            written: Cell::new(0),
            failure: RefCell::new(None),
            work,
            work_rx: RefCell::new(Some(work_rx)),
            done,
            done_rx: RefCell::new(Some(done_rx)),
            closing: Cell::new(false),
        })
    }

    /// The directory the files go to.
    pub(super) fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Queues the file of a snapshot (its data is shared, not copied). A file of
    /// the same group still waiting its turn is replaced: it would be
    /// overwritten anyway, and a file newer than a marker is what recovery
    /// expects after a crash between the two. So the queue holds at most one
    /// file per group of the core, and a group compacting faster than its files
    /// are written keeps no stale snapshot alive in it.
    pub(super) fn write(&self, header: SnapshotHeader, data: Arc<[u8]>) {
        let mut jobs = self.jobs.borrow_mut();
        match jobs.iter_mut().find(|j| j.header.group_id == header.group_id) {
            Some(waiting) => *waiting = Job { header, data },
            None => {
                jobs.push_back(Job { header, data });
                self.queued.set(self.queued.get() + 1);
            }
        }
        let _ = self.work.try_send(()); // full: a wake-up is already pending
    }

    /// Waits until every file queued so far is durable; the error of a write
    /// that failed. Returns without yielding when nothing is queued, so a caller
    /// that starts a WAL batch right after knows no marker in it lacks its file.
    pub(super) async fn settled(&self) -> Result<(), String> {
        loop {
            if let Some(e) = self.failure.borrow().clone() {
                return Err(e);
            }
            if self.written.get() == self.queued.get() {
                return Ok(());
            }
            // One waiter at a time: the flusher, then the shutdown's last flush.
            let Some(rx) = self.done_rx.borrow_mut().take() else {
                return Err("snapshot files: two waiters".to_string());
            };
            let woken = rx.recv().await;
            *self.done_rx.borrow_mut() = Some(rx);
            if woken.is_none() {
                return Err("snapshot files: the writer is gone".to_string());
            }
        }
    }

    /// The writer task: writes queued files one at a time on the blocking
    /// thread, until [`Self::close`] and the queue is empty.
    pub(super) async fn run(self: Rc<Self>) {
        let Some(work_rx) = self.work_rx.borrow_mut().take() else { return };
        loop {
            let job = self.jobs.borrow_mut().pop_front();
            let Some(job) = job else {
                if self.closing.get() || work_rx.recv().await.is_none() {
                    return;
                }
                continue;
            };
            let dir = self.dir.clone();
            let result = glommio::executor().spawn_blocking(move || write_file(&dir, &job.header, &job.data)).await;
            if let Err(e) = result {
                self.failure.borrow_mut().get_or_insert(e);
            }
            self.written.set(self.written.get() + 1);
            let _ = self.done.try_send(());
        }
    }

    /// Lets the writer task end once the queue is empty.
    pub(super) fn close(&self) {
        self.closing.set(true);
        let _ = self.work.try_send(());
    }
}

/// Writes one snapshot file: a temp file, fdatasync, rename, directory sync.
fn write_file(dir: &std::path::Path, header: &SnapshotHeader, data: &[u8]) -> Result<(), String> {
    let err = |e: crate::snap::SnapError| format!("writing the snapshot of group {}: {e}", header.group_id);
    let mut writer = SnapshotWriter::create(dir, header).map_err(err)?;
    for chunk in data.chunks(SNAPSHOT_FILE_CHUNK_BYTES) {
        writer.write_chunk(chunk).map_err(err)?;
    }
    writer.finish().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snap::{SnapshotReader, snapshot_file_name};
    use corekv_rpc::raft::SnapshotMeta;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("corekv-snap-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn header(group_id: u64, index: u64) -> SnapshotHeader {
        SnapshotHeader { cluster_id: 7, group_id, meta: SnapshotMeta { index, term: 1, ..SnapshotMeta::default() } }
    }

    /// The file of `group_id` as it is on disk: its index and data.
    fn on_disk(dir: &std::path::Path, group_id: u64) -> (u64, Vec<u8>) {
        let mut reader = SnapshotReader::open(&dir.join(snapshot_file_name(group_id))).expect("a whole file");
        let index = reader.header().meta.index;
        let mut data = Vec::new();
        while let Some(chunk) = reader.next_chunk().expect("chunks check") {
            data.extend_from_slice(&chunk.data);
        }
        (index, data)
    }

    /// Once `settled` returns, every file queued before is whole on disk, and of
    /// two snapshots of one group the later one stays (the earlier, still
    /// waiting, was never written): what lets the flusher start a WAL batch
    /// holding their markers.
    #[test]
    fn settled_means_every_queued_file_is_on_disk_and_a_waiting_one_is_replaced() {
        let dir = temp_dir("order");
        let big: Arc<[u8]> = (0..3 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
        let result = crate::runtime::run_local("snap-files-test", {
            let dir = dir.clone();
            let big = big.clone();
            async move {
                let files = SnapshotFiles::new(dir.clone());
                let writer = glommio::spawn_local(files.clone().run());
                files.write(header(1, 10), big.clone());
                files.write(header(2, 5), Arc::from(&b"small"[..]));
                files.write(header(1, 20), Arc::from(&b"newer"[..]));
                files.settled().await.expect("the writes succeed");
                assert_eq!(files.written.get(), 2, "group 1's first file was replaced while it waited");
                let seen = (on_disk(&dir, 1), on_disk(&dir, 2));
                files.write(header(3, 1), big.clone());
                files.settled().await.expect("the write succeeds");
                let third = on_disk(&dir, 3);
                files.close();
                writer.await;
                (seen, third)
            }
        })
        .expect("an executor");
        let ((one, two), three) = result;
        assert_eq!(one, (20, b"newer".to_vec()), "the later snapshot of group 1 is the one left");
        assert_eq!(two, (5, b"small".to_vec()));
        assert_eq!(three, (1, big.to_vec()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A write that fails is reported by `settled` (the core then stops), not
    /// lost.
    #[test]
    fn a_failed_write_is_reported() {
        let dir = temp_dir("fail");
        std::fs::write(&dir, b"a file where the directory should be").expect("a temp file");
        let result = crate::runtime::run_local("snap-files-test", {
            let dir = dir.clone();
            async move {
                let files = SnapshotFiles::new(dir);
                let writer = glommio::spawn_local(files.clone().run());
                files.write(header(1, 1), Arc::from(&b"x"[..]));
                let settled = files.settled().await;
                files.close();
                writer.await;
                settled
            }
        })
        .expect("an executor");
        let err = result.expect_err("the write cannot succeed");
        assert!(err.contains("group 1"), "{err}");
        let _ = std::fs::remove_file(&dir);
    }
}
