//! `corekv-ctl wal|snapshot dump|verify` against a real data directory: exit 0 when
//! sound, 1 with file and offset when damaged, 2 on usage errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use corekv_engine::runtime::{DmaWal, run_local};
use corekv_engine::snap::{SnapshotHeader, SnapshotWriter};
use corekv_engine::wal::{Record, WalConfig, WalIdentity};
use corekv_rpc::raft::{ConfState, Entry, EntryKind, HardState, SnapshotMeta};

fn ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corekv-ctl")).args(args).output().unwrap()
}

/// DATA/core-1/wal with 30 batches (several segments) and DATA/core-1/snap with one snapshot.
fn make_data_dir(name: &str) -> PathBuf {
    let data = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&data);
    let identity = WalIdentity { cluster_id: 5, node_id: 1, core_id: 1 };
    let config = WalConfig { segment_bytes: 32 * 1024, pending_bytes_max: 16 * 1024, ..WalConfig::new(identity) };
    let wal_dir = data.join("core-1/wal");
    run_local("ctl-test", async move {
        let (wal, _) = DmaWal::open(&wal_dir, config).await.unwrap();
        for index in 1..=30 {
            let entry = Entry { term: 2, index, kind: EntryKind::Normal, data: vec![index as u8; 2000] };
            wal.append_entries(3, &[entry]).unwrap();
            wal.append(&Record::HardState { group_id: 3, hard_state: HardState { term: 2, vote: 1, commit: index } })
                .unwrap();
            wal.flush().await.unwrap().unwrap();
        }
        wal.close().await.unwrap();
    })
    .unwrap();
    let header = SnapshotHeader {
        cluster_id: 5,
        group_id: 3,
        meta: SnapshotMeta { index: 10, term: 2, conf: ConfState { voters: vec![1, 2, 3], learners: vec![] } },
    };
    let mut writer = SnapshotWriter::create(&data.join("core-1/snap"), &header).unwrap();
    writer.write_chunk(&[7; 1000]).unwrap();
    writer.write_chunk(&[8; 500]).unwrap();
    writer.finish().unwrap();
    data
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn wal_verify_and_dump_accept_a_sound_data_dir_from_any_level() {
    let data = make_data_dir("ctl_sound");
    for path in [data.clone(), data.join("core-1"), data.join("core-1/wal")] {
        let out = ctl(&["wal", "verify", path.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("30 batches"), "{}", text(&out.stdout));
    }
    let dump = ctl(&["wal", "dump", data.to_str().unwrap()]);
    assert!(dump.status.success(), "{}", text(&dump.stderr));
    let stdout = text(&dump.stdout);
    assert!(stdout.contains("group 3 entries 30..=30 terms 2..=2 (2000 data bytes)"), "{stdout}");
    assert!(stdout.contains("group 3 hard_state term 2 vote 1 commit 30"), "{stdout}");
    let snap = ctl(&["snapshot", "verify", data.to_str().unwrap()]);
    assert!(snap.status.success(), "{}", text(&snap.stderr));
    assert!(text(&snap.stdout).contains("group 3 index 10 term 2, 2 chunks, 1500 bytes"), "{}", text(&snap.stdout));
    let snap_dump = ctl(&["snapshot", "dump", data.join("core-1").to_str().unwrap()]);
    assert!(text(&snap_dump.stdout).contains("chunk at data offset 1000: 500 bytes"), "{}", text(&snap_dump.stdout));
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn wal_verify_reports_the_damaged_file_and_offset_and_exits_1() {
    let data = make_data_dir("ctl_damaged");
    let first = data.join("core-1/wal/00000000000000000001.wal");
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[4096 + 100] ^= 0xFF; // inside the first batch of the first segment
    std::fs::write(&first, &bytes).unwrap();
    let out = ctl(&["wal", "verify", data.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("00000000000000000001.wal at byte 4096"), "{stderr}");
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn snapshot_verify_reports_a_bad_chunk_and_exits_1() {
    let data = make_data_dir("ctl_bad_snap");
    let file = data.join("core-1/snap/group-00000000000000000003.snap");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 40;
    bytes[last] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let out = ctl(&["snapshot", "verify", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("group-00000000000000000003.snap at byte"), "{}", text(&out.stderr));
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(ctl(&["wal"]).status.code(), Some(2));
    assert_eq!(ctl(&["wal", "verify"]).status.code(), Some(2));
    assert_eq!(ctl(&["frobnicate"]).status.code(), Some(2));
}
