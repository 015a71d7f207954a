//! WAL append + fdatasync: the glommio DMA WAL against the same bytes written with
//! std::fs buffered writes + fdatasync, and the raw rate of one 4 KiB write +
//! fdatasync on this disk. Batches of 1, 16 and 256 records of 128 B and 4 KiB.
//!
//! Files live under Cargo's target temp dir (the build disk). Under
//! `cargo test --benches` criterion runs each benchmark once (smoke run).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use corekv_engine::runtime::{DmaWal, LocalRuntime, dma_write_fdatasync_probe};
use corekv_engine::wal::{Record, SnapshotMarker, WalConfig, WalIdentity};
use corekv_rpc::raft::{Entry, EntryKind};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const RECORDS: [usize; 3] = [1, 16, 256];
const RECORD_BYTES: [usize; 2] = [128, 4096];
const GROUPS: u64 = 64;
/// The std baseline starts its file over past this size.
const BASELINE_FILE_BYTES_MAX: u64 = 256 << 20;

fn bench_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("wal-bench").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

/// Appends `records` one-entry records spread over the groups, advancing each
/// group's next index; every 32 batches a snapshot marker per group lets old
/// segments be recycled, as in steady state.
struct Workload {
    next_index: Vec<u64>,
    batches: u64,
}

impl Workload {
    fn new() -> Self {
        Workload { next_index: vec![1; GROUPS as usize], batches: 0 }
    }

    fn append(&mut self, wal: &DmaWal, records: usize, record_bytes: usize) {
        for r in 0..records {
            let group_id = r as u64 % GROUPS;
            let index = self.next_index[group_id as usize];
            self.next_index[group_id as usize] += 1;
            let entry = Entry { term: 1, index, kind: EntryKind::Normal, data: vec![0x5A; record_bytes] };
            wal.append_entries(group_id, std::slice::from_ref(&entry)).expect("append");
        }
        self.batches += 1;
        if self.batches.is_multiple_of(32) {
            for group_id in 0..GROUPS {
                let index = self.next_index[group_id as usize] - 1;
                let marker = SnapshotMarker { index, term: 1 };
                wal.append(&Record::SnapshotMarker { group_id, marker }).expect("append");
            }
        }
    }
}

fn dma_wal(c: &mut Criterion, rt: &LocalRuntime) {
    let mut group = c.benchmark_group("wal_append_fdatasync/glommio_dma");
    for record_bytes in RECORD_BYTES {
        for records in RECORDS {
            let dir = bench_dir(&format!("dma-{records}x{record_bytes}"));
            let identity = WalIdentity { cluster_id: 1, node_id: 1, core_id: 0 };
            let config = WalConfig { segment_bytes: 64 << 20, pending_bytes_max: 16 << 20, ..WalConfig::new(identity) };
            let (wal, _) = rt.block_on(DmaWal::open(&dir, config)).expect("open WAL");
            let mut workload = Workload::new();
            group.throughput(Throughput::Bytes((records * record_bytes) as u64));
            group.bench_function(BenchmarkId::new(format!("{record_bytes}B"), records), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            workload.append(&wal, records, record_bytes);
                            wal.flush().await.expect("flush").expect("a batch");
                        }
                        start.elapsed()
                    })
                })
            });
            let stats = wal.stats();
            eprintln!(
                "  dma {records}x{record_bytes}B: {} batches, {} fdatasyncs, {} segments created, {} recycled",
                stats.batches, stats.fdatasyncs, stats.segments_created, stats.segments_recycled
            );
            rt.block_on(wal.close()).expect("close");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    group.finish();
}

fn std_baseline(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_append_fdatasync/std_buffered");
    for record_bytes in RECORD_BYTES {
        for records in RECORDS {
            let dir = bench_dir(&format!("std-{records}x{record_bytes}"));
            let mut file =
                OpenOptions::new().create(true).truncate(true).read(true).write(true).open(dir.join("log")).unwrap();
            let bytes = vec![0x5A; records * record_bytes];
            group.throughput(Throughput::Bytes(bytes.len() as u64));
            group.bench_function(BenchmarkId::new(format!("{record_bytes}B"), records), |b| {
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iters {
                        if file.stream_position().unwrap() > BASELINE_FILE_BYTES_MAX {
                            file.set_len(0).unwrap();
                            file.seek(SeekFrom::Start(0)).unwrap();
                        }
                        let start = Instant::now();
                        file.write_all(&bytes).unwrap();
                        file.sync_data().unwrap();
                        elapsed += start.elapsed();
                    }
                    elapsed
                })
            });
            drop(file);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    group.finish();
}

/// The same through the page cache: overwrite one 4 KiB block of a written file
/// with a buffered pwrite, fdatasync.
fn raw_fdatasync(c: &mut Criterion) {
    let dir = bench_dir("raw");
    let file = File::create(dir.join("raw")).unwrap();
    file.write_all_at(&vec![0u8; 1 << 20], 0).unwrap();
    file.sync_all().unwrap();
    let block = vec![0xA5u8; 4096];
    let mut group = c.benchmark_group("raw");
    group.bench_function("buffered_pwrite_4KiB_fdatasync", |b| {
        let mut offset = 0;
        b.iter(|| {
            file.write_all_at(&block, offset).unwrap();
            file.sync_data().unwrap();
            offset = (offset + 4096) % (1 << 20);
        })
    });
    group.finish();
    drop(file);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The floor the WAL works against: one 4 KiB O_DIRECT overwrite + fdatasync.
fn raw_dma_fdatasync(c: &mut Criterion, rt: &LocalRuntime) {
    let dir = bench_dir("raw-dma");
    let mut group = c.benchmark_group("raw");
    group.bench_function("dma_write_4KiB_fdatasync", |b| {
        b.iter_custom(|iters| rt.block_on(dma_write_fdatasync_probe(&dir, iters)).expect("probe"))
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn benches(c: &mut Criterion) {
    let rt = LocalRuntime::new("wal-bench").expect("glommio executor");
    raw_dma_fdatasync(c, &rt);
    raw_fdatasync(c);
    dma_wal(c, &rt);
    std_baseline(c);
}

criterion_group! {
    name = wal;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    targets = benches
}
criterion_main!(wal);
