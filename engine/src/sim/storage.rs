//! One simulated node's storage: the production WAL (format, group-commit writer
//! and recovery) on a [`SimDisk`], plus the node's snapshot file.
//!
//! The simulator hands each `Ready` here. Its records join the WAL's pending
//! batch; one batch is in flight at a time (group commit: Readys that arrive while
//! a batch is out share the next one). A batch's writes reach the disk when it
//! starts and its fdatasync completes when the simulator says so; only then do its
//! Readys count as persisted. A crash keeps what was synced and may tear the last
//! unsynced write (chosen from a seed), and a restart recovers through the same
//! code a real node runs.

use corekv_rpc::raft::{HardState, Index, Message, NodeId, Term};

use crate::raft::{DurableState, Snapshot};
use crate::wal::{
    CrashMode, IoCommand, Record, SegmentStore, SimDisk, SnapshotMarker, SyncWal, WalConfig, WalIdentity,
};

/// The WAL group id of the simulator's single Raft group.
const GROUP: u64 = 1;
/// A cluster id for the simulated WAL headers.
const SIM_CLUSTER_ID: u64 = 0x51_u64;
/// Small segments, so rollover, compaction and segment deletion all happen.
const SIM_SEGMENT_BYTES: u64 = 256 << 10;

/// A Ready waiting for its batch's fdatasync.
#[derive(Debug)]
pub struct PersistWait {
    /// The Ready's number, for `RawNode::on_persisted`.
    pub number: u64,
    /// Sent once durable.
    pub messages_after_persist: Vec<Message>,
}

#[derive(Debug)]
struct InFlightBatch {
    batch_seq: u64,
    /// The batch's commands from its first fdatasync on.
    rest: Vec<IoCommand>,
    waits: Vec<PersistWait>,
}

#[derive(Debug)]
enum Wal {
    Open(Box<SyncWal<SimDisk>>),
    Closed(SimDisk),
}

/// What happened to a Ready handed to [`NodeStorage::persist`].
#[derive(Debug)]
pub enum Persisted {
    /// Nothing to write and nothing before it in flight: durable now.
    Now(PersistWait),
    /// Waits for a batch.
    Later,
}

/// A node's disk: WAL segments and the snapshot file.
#[derive(Debug)]
pub struct NodeStorage {
    config: WalConfig,
    wal: Option<Wal>,
    snapshot_file: Snapshot,
    waiting: Vec<PersistWait>,
    in_flight: Option<InFlightBatch>,
    /// While crashed, what a restart will recover (the disk does not change).
    crashed_log: Option<Vec<(Index, Term)>>,
}

fn err(what: impl std::fmt::Display) -> String {
    format!("storage: {what}")
}

impl NodeStorage {
    /// A fresh disk holding `durable` (the bootstrap state), not yet opened.
    pub fn create(node: NodeId, durable: &DurableState) -> Result<NodeStorage, String> {
        let identity = WalIdentity { cluster_id: SIM_CLUSTER_ID, node_id: node, core_id: 0 };
        let config =
            WalConfig { segment_bytes: SIM_SEGMENT_BYTES, pending_bytes_max: 64 << 20, ..WalConfig::new(identity) };
        let (mut wal, _) = SyncWal::open(SimDisk::new(), config.clone()).map_err(err)?;
        if !durable.entries.is_empty() {
            wal.writer_mut().append_entries(GROUP, &durable.entries).map_err(err)?;
        }
        wal.append(&Record::HardState { group_id: GROUP, hard_state: durable.hard_state }).map_err(err)?;
        wal.flush().map_err(err)?;
        Ok(NodeStorage {
            config,
            wal: Some(Wal::Closed(wal.into_store())),
            snapshot_file: durable.snapshot.clone(),
            waiting: Vec::new(),
            in_flight: None,
            crashed_log: None,
        })
    }

    fn open_wal(&mut self) -> &mut SyncWal<SimDisk> {
        match self.wal.as_mut() {
            Some(Wal::Open(w)) => w,
            _ => panic!("the node's WAL is not open"),
        }
    }

    /// Recovers the WAL (the node starts): what the node restarts from.
    pub fn open(&mut self) -> Result<DurableState, String> {
        let disk = match self.wal.take() {
            Some(Wal::Closed(disk)) => disk,
            _ => panic!("opening a WAL that is open"),
        };
        let (wal, recovered) = SyncWal::open(disk, self.config.clone()).map_err(err)?;
        self.wal = Some(Wal::Open(Box::new(wal)));
        self.crashed_log = None;
        let group = recovered.groups.get(&GROUP).cloned().unwrap_or_default();
        let snapshot = self.snapshot_file.clone();
        let entries: Vec<_> = group.entries.into_iter().filter(|e| e.index > snapshot.meta.index).collect();
        if entries.first().is_some_and(|e| e.index != snapshot.meta.index + 1) {
            return Err(err(format!(
                "recovered log starts at {} after snapshot {}",
                entries[0].index, snapshot.meta.index
            )));
        }
        let hard_state = group.hard_state.unwrap_or_default();
        Ok(DurableState { hard_state, snapshot, entries })
    }

    /// Queues a Ready's durable part: snapshot (file now, marker in the WAL), entries
    /// and hard state into the WAL's next batch.
    pub fn persist(
        &mut self,
        number: u64,
        hard_state: Option<HardState>,
        snapshot: Option<&Snapshot>,
        entries: &[corekv_rpc::raft::Entry],
        messages_after_persist: Vec<Message>,
    ) -> Result<Persisted, String> {
        let mut wrote = false;
        if let Some(snap) = snapshot {
            // The file is written, fsynced and renamed before its marker is logged.
            self.snapshot_file = snap.clone();
            let (index, term) = (snap.meta.index, snap.meta.term);
            let wal = self.open_wal();
            let marker = SnapshotMarker { index, term };
            wal.append(&Record::SnapshotMarker { group_id: GROUP, marker }).map_err(err)?;
            // An installed snapshot replaces the whole log.
            wal.append(&Record::Truncate { group_id: GROUP, from_index: index + 1 }).map_err(err)?;
            wrote = true;
        }
        if !entries.is_empty() {
            self.open_wal().writer_mut().append_entries(GROUP, entries).map_err(err)?;
            wrote = true;
        }
        if let Some(hard_state) = hard_state {
            self.open_wal().append(&Record::HardState { group_id: GROUP, hard_state }).map_err(err)?;
            wrote = true;
        }
        let wait = PersistWait { number, messages_after_persist };
        if wrote || !self.waiting.is_empty() {
            self.waiting.push(wait);
        } else if let Some(batch) = self.in_flight.as_mut() {
            batch.waits.push(wait); // nothing to write, but must follow the batch out
        } else {
            return Ok(Persisted::Now(wait));
        }
        Ok(Persisted::Later)
    }

    /// The application saved a snapshot at its applied index: the file, then a marker
    /// so covered WAL segments can go.
    pub fn compacted(&mut self, snapshot: Snapshot) -> Result<(), String> {
        let marker = SnapshotMarker { index: snapshot.meta.index, term: snapshot.meta.term };
        self.snapshot_file = snapshot;
        self.open_wal().append(&Record::SnapshotMarker { group_id: GROUP, marker }).map_err(err)
    }

    /// Starts the next batch if none is in flight and records wait: its writes reach
    /// the disk now, unsynced. Returns true when a batch started.
    pub fn start_batch(&mut self) -> Result<bool, String> {
        if self.in_flight.is_some() {
            return Ok(false);
        }
        let Some(batch) = self.open_wal().writer_mut().start_batch() else { return Ok(false) };
        let first_sync = batch.commands.iter().position(|c| matches!(c, IoCommand::Sync { .. }));
        let split = first_sync.unwrap_or(batch.commands.len());
        let mut commands = batch.commands;
        let rest = commands.split_off(split);
        for command in &commands {
            self.open_wal().store_mut().execute(command).map_err(err)?;
        }
        let waits = std::mem::take(&mut self.waiting);
        self.in_flight = Some(InFlightBatch { batch_seq: batch.batch_seq, rest, waits });
        Ok(true)
    }

    /// The in-flight batch's fdatasync completed: its Readys are durable.
    pub fn finish_batch(&mut self) -> Result<Vec<PersistWait>, String> {
        let batch = self.in_flight.take().ok_or_else(|| err("no batch in flight"))?;
        let wal = self.open_wal();
        for command in &batch.rest {
            wal.store_mut().execute(command).map_err(err)?;
        }
        wal.writer_mut().complete(batch.batch_seq);
        for command in wal.writer_mut().take_housekeeping() {
            wal.store_mut().execute(&command).map_err(err)?;
        }
        Ok(batch.waits)
    }

    /// Power loss: unsynced writes are lost, the last one possibly torn (from `seed`).
    pub fn crash(&mut self, seed: u64) {
        self.waiting.clear();
        self.in_flight = None;
        let mut disk = match self.wal.take() {
            Some(Wal::Open(w)) => w.into_store(),
            Some(Wal::Closed(d)) => d,
            None => panic!("storage lost its disk"),
        };
        disk.crash(CrashMode::Seeded { seed });
        self.wal = Some(Wal::Closed(disk));
        self.crashed_log = self.durable_log().ok();
    }

    /// Index of the snapshot file.
    pub fn snapshot_index(&self) -> Index {
        self.snapshot_file.meta.index
    }

    /// What a crash now would leave: `(index, term)` of every synced entry after the
    /// snapshot file. Reads a copy of the disk, for checks and tests.
    pub fn durable_log(&self) -> Result<Vec<(Index, Term)>, String> {
        if let Some(log) = &self.crashed_log {
            return Ok(log.clone());
        }
        let mut disk = match self.wal.as_ref() {
            Some(Wal::Open(w)) => w.store().clone(),
            Some(Wal::Closed(d)) => d.clone(),
            None => return Err(err("no disk")),
        };
        disk.crash(CrashMode::LoseUnsynced);
        let recovered = crate::wal::recover_store(&mut disk, Some(self.config.identity)).map_err(err)?;
        let after = self.snapshot_file.meta.index;
        let group = recovered.groups.get(&GROUP);
        Ok(group.map_or_else(Vec::new, |g| {
            g.entries.iter().filter(|e| e.index > after).map(|e| (e.index, e.term)).collect()
        }))
    }

    /// WAL writes and fdatasyncs issued so far.
    pub fn io_counts(&self) -> (u64, u64) {
        match self.wal.as_ref() {
            Some(Wal::Open(w)) => (w.store().writes, w.store().syncs),
            Some(Wal::Closed(d)) => (d.writes, d.syncs),
            None => (0, 0),
        }
    }
}
