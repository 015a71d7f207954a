//! The glommio DMA WAL on the real disk: round trip, recycling, the tmpfs error,
//! and a child process killed with SIGKILL mid-stream whose every reported-synced
//! batch must come back.
//!
//! Directories live under Cargo's per-target temp dir (the build disk, not tmpfs).

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use corekv_engine::runtime::{DmaWal, run_local};
use corekv_engine::wal::{IoMode, Record, SnapshotMarker, WalConfig, WalError, WalIdentity};
use corekv_rpc::raft::{Entry, EntryKind, HardState};

const IDENTITY: WalIdentity = WalIdentity { cluster_id: 77, node_id: 1, core_id: 0 };
const CHILD_DIR_ENV: &str = "COREKV_WAL_KILL_CHILD_DIR";
const GROUPS: u64 = 4;

fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn config(segment_bytes: u64) -> WalConfig {
    WalConfig { segment_bytes, pending_bytes_max: segment_bytes / 2, ..WalConfig::new(IDENTITY) }
}

/// Batch `k` (from 0) appends one entry to group `k % GROUPS` at index `k / GROUPS + 1`.
fn entry_of_batch(k: u64) -> (u64, Entry) {
    let data = (0..(k % 700) as usize).map(|i| (i as u64 ^ k) as u8).collect();
    (k % GROUPS, Entry { term: 1 + k / 100, index: k / GROUPS + 1, kind: EntryKind::Normal, data })
}

fn append_batch(wal: &DmaWal, k: u64) {
    let (group_id, entry) = entry_of_batch(k);
    wal.append_entries(group_id, &[entry]).unwrap();
    let hard_state = HardState { term: 1 + k / 100, vote: 1, commit: k / GROUPS };
    wal.append(&Record::HardState { group_id, hard_state }).unwrap();
}

#[test]
fn dma_wal_round_trips_across_segments_and_reopens() {
    let dir = fresh_dir("dma_round_trip");
    run_local("wal-test", async {
        let (wal, recovered) = DmaWal::open(&dir, config(64 * 1024)).await.unwrap();
        assert!(recovered.groups.is_empty());
        for k in 0..200 {
            append_batch(&wal, k);
            let durable = wal.flush().await.unwrap().unwrap();
            assert_eq!(durable.batch_seq, k + 1);
        }
        let stats = wal.stats();
        assert_eq!(stats.batches, 200);
        assert!(stats.segments_created >= 3, "crossed segments: {stats:?}");
        wal.close().await.unwrap();

        let (wal, recovered) = DmaWal::open(&dir, config(64 * 1024)).await.unwrap();
        assert_eq!(recovered.next_batch_seq, 201);
        for k in 0..200 {
            let (group_id, entry) = entry_of_batch(k);
            assert_eq!(recovered.groups[&group_id].entries[(entry.index - 1) as usize], entry);
        }
        // The reopened WAL continues where it stopped.
        append_batch(&wal, 200);
        assert_eq!(wal.flush().await.unwrap().unwrap().batch_seq, 201);
        wal.close().await.unwrap();
    })
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn records_appended_during_a_flush_form_the_next_batch_on_the_real_disk() {
    let dir = fresh_dir("dma_group_commit");
    run_local("wal-test", async {
        let (wal, _) = DmaWal::open(&dir, config(64 * 1024)).await.unwrap();
        append_batch(&wal, 0);
        let first = {
            // Start the first flush and leave it waiting on its I/O (one poll).
            let mut first = std::pin::pin!(wal.flush());
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(first.as_mut().poll(&mut cx).is_pending(), "the write is in flight");
            append_batch(&wal, 1);
            append_batch(&wal, 2);
            assert_eq!(wal.flush().await.unwrap(), None, "one batch in flight at a time");
            first.await.unwrap().unwrap()
        };
        assert_eq!((first.batch_seq, first.record_count), (1, 2));
        let second = wal.flush().await.unwrap().unwrap();
        assert_eq!((second.batch_seq, second.record_count), (2, 4));
        assert_eq!(wal.stats().batches, 2);
        wal.close().await.unwrap();
    })
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dma_wal_recycles_covered_segments() {
    let dir = fresh_dir("dma_recycle");
    run_local("wal-test", async {
        let (wal, _) = DmaWal::open(&dir, config(16 * 1024)).await.unwrap();
        for index in 1..=300u64 {
            let entry = Entry { term: 1, index, kind: EntryKind::Normal, data: vec![3; 3000] };
            wal.append_entries(9, &[entry]).unwrap();
            if index % 5 == 0 {
                let marker = SnapshotMarker { index, term: 1 };
                wal.append(&Record::SnapshotMarker { group_id: 9, marker }).unwrap();
            }
            wal.flush().await.unwrap().unwrap();
        }
        let stats = wal.stats();
        assert!(stats.segments_recycled > 10, "{stats:?}");
        assert!(wal.live_segments().len() <= 3, "{:?}", wal.live_segments());
        wal.close().await.unwrap();
        let (_, recovered) = DmaWal::open(&dir, config(16 * 1024)).await.unwrap();
        assert_eq!(recovered.groups[&9].snapshot, Some(SnapshotMarker { index: 300, term: 1 }));
        assert!(recovered.groups[&9].entries.is_empty());
    })
    .unwrap();
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert!(files <= 6, "deleted or recycled, not accumulated: {files} files");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn covered_segments_are_deleted_while_the_wal_runs() {
    let dir = fresh_dir("dma_delete_running");
    run_local("wal-test", async {
        let config = WalConfig { recycle_segments_max: 0, ..config(16 * 1024) };
        let (wal, _) = DmaWal::open(&dir, config).await.unwrap();
        for index in 1..=100u64 {
            let entry = Entry { term: 1, index, kind: EntryKind::Normal, data: vec![3; 3000] };
            wal.append_entries(9, &[entry]).unwrap();
            let marker = SnapshotMarker { index, term: 1 };
            wal.append(&Record::SnapshotMarker { group_id: 9, marker }).unwrap();
            wal.flush().await.unwrap().unwrap();
        }
        let stats = wal.stats();
        assert!(stats.segments_deleted > 5, "deleted without a restart: {stats:?}");
        let files = std::fs::read_dir(&dir).unwrap().count();
        assert!(files <= 3, "{files} segment files left while running");
        wal.close().await.unwrap();
    })
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tmpfs_gives_o_direct_or_a_clear_error_and_buffered_mode_works() {
    let shm = Path::new("/dev/shm");
    assert!(shm.is_dir(), "/dev/shm (tmpfs) is expected on Linux");
    let dir = shm.join(format!("corekv-wal-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    run_local("wal-test", async {
        // tmpfs refuses O_DIRECT before Linux 6.6 and accepts it since; either the
        // WAL works or the error names the buffered option (the mapping of EINVAL
        // itself is unit-tested in runtime::dma_wal).
        match DmaWal::open(&dir, config(64 * 1024)).await {
            Err(e @ WalError::DirectIoUnsupported { .. }) => {
                assert!(e.to_string().contains("--wal-io-mode buffered"), "{e}");
            }
            Ok((wal, _)) => {
                append_batch(&wal, 0);
                wal.flush().await.unwrap().unwrap();
                wal.close().await.unwrap();
                std::fs::remove_dir_all(&dir).unwrap();
            }
            Err(other) => panic!("unexpected error on tmpfs: {other}"),
        }
        let buffered = WalConfig { io_mode: IoMode::Buffered, ..config(64 * 1024) };
        let (wal, _) = DmaWal::open(&dir, buffered.clone()).await.unwrap();
        for k in 0..20 {
            append_batch(&wal, k);
            wal.flush().await.unwrap().unwrap();
        }
        wal.close().await.unwrap();
        let (_, recovered) = DmaWal::open(&dir, buffered).await.unwrap();
        assert_eq!(recovered.next_batch_seq, 21);
    })
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Not a test on its own: the body of the child process of
/// `killed_writer_loses_nothing_it_reported_synced` (returns at once without the
/// env var).
#[test]
fn kill_child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    run_local("wal-child", async {
        let (wal, recovered) = DmaWal::open(&dir, config(64 * 1024)).await.unwrap();
        assert!(recovered.groups.is_empty());
        let mut k = 0;
        loop {
            append_batch(&wal, k);
            let durable = wal.flush().await.unwrap().unwrap();
            assert_eq!(durable.batch_seq, k + 1);
            // Reported only after the fdatasync returned.
            println!("synced {k}");
            k += 1;
        }
    })
    .unwrap();
}

#[test]
fn killed_writer_loses_nothing_it_reported_synced() {
    let dir = fresh_dir("dma_kill");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kill_child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut last_synced = None;
    for line in lines.by_ref() {
        if let Some(k) = line.unwrap().strip_prefix("synced ") {
            last_synced = Some(k.parse::<u64>().unwrap());
            if last_synced >= Some(500) {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL, mid-stream: the child is writing batch 501+
    child.wait().unwrap();
    for line in lines {
        if let Some(k) = line.unwrap().strip_prefix("synced ") {
            last_synced = Some(k.parse().unwrap());
        }
    }
    let last_synced = last_synced.expect("the child reported synced batches");
    assert!(last_synced >= 500);
    run_local("wal-test", async {
        let (_, recovered) = DmaWal::open(&dir, config(64 * 1024)).await.unwrap();
        assert!(recovered.next_batch_seq > last_synced + 1, "batch {last_synced} was reported synced");
        for k in 0..recovered.next_batch_seq - 1 {
            let (group_id, entry) = entry_of_batch(k);
            assert_eq!(recovered.groups[&group_id].entries[(entry.index - 1) as usize], entry, "batch {k}");
        }
    })
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
