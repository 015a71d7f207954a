//! One simulated core's durable state: the production WAL (`SyncWal<SimDisk>`)
//! driven one batch at a time, plus the core's snapshot files.
//!
//! The node core appends records through [`CoreStorage`]; they wait in the WAL
//! writer's open batch. [`CoreDisk::start_batch`] seals that batch: its writes
//! reach the disk at once, unsynced, and its fdatasync completes when the cluster
//! simulator says so ([`CoreDisk::finish_batch`]). Records appended meanwhile form
//! the next batch (group commit, one batch in flight). A crash keeps what was
//! synced and may tear the last unsynced write (from a seed); snapshot files are
//! durable when `save_snapshot` returns and survive every crash. Recovery runs
//! the same WAL recovery a real server runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use corekv_rpc::kv::ShardId;
use corekv_rpc::map::ClusterMap;
use corekv_rpc::raft::Entry;

use crate::node::{CoreStorage, GroupRecovery, NodeCore, StorageError};
use crate::raft::Snapshot;
use crate::wal::{CrashMode, IoCommand, Record, SegmentStore, SimDisk, SyncWal, WalConfig, WalIdentity};

/// Small segments, so rollover, checkpoints and segment deletion all happen.
pub(super) const SEGMENT_BYTES: u64 = 128 << 10;
/// Bytes that may wait for the next batch: far above what a simulated core
/// appends while one fdatasync is out, so back-pressure never stops a run.
const PENDING_BYTES_MAX: u64 = 64 << 20;

/// What [`CoreDisk::start_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStart {
    /// Nothing to seal, or a batch is already in flight.
    Idle,
    /// A batch was written; its fdatasync is pending.
    Started,
    /// Readys waited with nothing to write and nothing before them in flight: they
    /// were durable at once (the core has messages to send).
    DurableNow,
}

#[derive(Debug)]
enum Wal {
    Open(Box<SyncWal<SimDisk>>),
    Closed(SimDisk),
}

#[derive(Debug)]
struct InFlight {
    token: u64,
    batch_seq: u64,
    /// The batch's commands from its first fdatasync on.
    rest: Vec<IoCommand>,
}

/// The disk of one core: WAL segments and snapshot files.
#[derive(Debug)]
pub struct CoreDisk {
    config: WalConfig,
    wal: Option<Wal>,
    snapshots: BTreeMap<u64, Snapshot>,
    /// The newest cluster map the core installed (a file the driver writes,
    /// durable at once, surviving crashes).
    pub map: Option<Arc<ClusterMap>>,
    in_flight: Option<InFlight>,
}

fn storage_error(what: impl std::fmt::Display) -> StorageError {
    StorageError(format!("simulated WAL: {what}"))
}

impl CoreDisk {
    /// An empty disk of the core `identity` names; closed until [`Self::recover`].
    pub fn new(identity: WalIdentity) -> CoreDisk {
        let config = WalConfig {
            segment_bytes: SEGMENT_BYTES,
            pending_bytes_max: PENDING_BYTES_MAX,
            ..WalConfig::new(identity)
        };
        CoreDisk {
            config,
            wal: Some(Wal::Closed(SimDisk::new())),
            snapshots: BTreeMap::new(),
            map: None,
            in_flight: None,
        }
    }

    fn wal(&mut self) -> Result<&mut SyncWal<SimDisk>, StorageError> {
        match self.wal.as_mut() {
            Some(Wal::Open(w)) => Ok(w),
            _ => Err(storage_error("the WAL is not open")),
        }
    }

    /// Opens the WAL, recovering it, and returns what every group restarts from:
    /// its WAL records and its snapshot file.
    pub fn recover(&mut self) -> Result<BTreeMap<ShardId, GroupRecovery>, String> {
        let disk = match self.wal.take() {
            Some(Wal::Closed(disk)) => disk,
            other => {
                self.wal = other;
                return Err("recovering a WAL that is open".into());
            }
        };
        let (wal, recovered) = SyncWal::open(disk, self.config.clone()).map_err(|e| e.to_string())?;
        self.wal = Some(Wal::Open(Box::new(wal)));
        // Dropped before the crash, its snapshot file not yet deleted: delete it now.
        for group_id in &recovered.dropped {
            self.snapshots.remove(group_id);
        }
        let mut groups: BTreeMap<ShardId, GroupRecovery> = BTreeMap::new();
        for (group_id, log) in recovered.groups {
            let shard = ShardId::try_from(group_id).map_err(|_| format!("WAL group {group_id} is not a shard"))?;
            groups.entry(shard).or_default().log = Some(log);
        }
        for (&group_id, snapshot) in &self.snapshots {
            let shard = ShardId::try_from(group_id).map_err(|_| format!("snapshot {group_id} is not a shard"))?;
            groups.entry(shard).or_default().snapshot = Some(snapshot.clone());
        }
        Ok(groups)
    }

    /// Seals the open batch when no batch is in flight and something waits: its
    /// writes reach the disk now, unsynced.
    pub fn start_batch(&mut self, core: &mut NodeCore) -> Result<BatchStart, StorageError> {
        if self.in_flight.is_some() {
            return Ok(BatchStart::Idle);
        }
        // As the server's flusher does: only a waiting Ready asks for a batch;
        // records without one (commit indexes, markers) ride with the next.
        if !core.has_unsealed() {
            return Ok(BatchStart::Idle);
        }
        let wal = self.wal()?;
        let token = core.seal();
        let Some(batch) = wal.writer_mut().start_batch() else {
            core.on_durable(token);
            self.delete_dropped(core);
            return Ok(BatchStart::DurableNow);
        };
        let first_sync = batch.commands.iter().position(|c| matches!(c, IoCommand::Sync { .. }));
        let mut commands = batch.commands;
        let rest = commands.split_off(first_sync.unwrap_or(commands.len()));
        for command in &commands {
            wal.store_mut().execute(command).map_err(storage_error)?;
        }
        self.in_flight = Some(InFlight { token, batch_seq: batch.batch_seq, rest });
        Ok(BatchStart::Started)
    }

    /// The in-flight batch's fdatasync completed: the core learns its Readys are
    /// durable; covered segments are deleted.
    pub fn finish_batch(&mut self, core: &mut NodeCore) -> Result<(), StorageError> {
        let batch = self.in_flight.take().ok_or_else(|| storage_error("no batch in flight"))?;
        let wal = self.wal()?;
        for command in &batch.rest {
            wal.store_mut().execute(command).map_err(storage_error)?;
        }
        wal.writer_mut().complete(batch.batch_seq);
        for command in wal.writer_mut().take_housekeeping() {
            wal.store_mut().execute(&command).map_err(storage_error)?;
        }
        core.on_durable(batch.token);
        self.delete_dropped(core);
        Ok(())
    }

    /// Deletes the snapshot files of the replicas whose drop just became durable.
    fn delete_dropped(&mut self, core: &mut NodeCore) {
        for shard in core.take_dropped() {
            self.snapshots.remove(&u64::from(shard));
        }
    }

    /// The groups this disk keeps a snapshot file of.
    pub fn snapshot_groups(&self) -> impl Iterator<Item = u64> + '_ {
        self.snapshots.keys().copied()
    }

    /// Power loss: unsynced writes are lost, the last one possibly torn (chosen
    /// from `seed`). Returns whether unsynced writes were at stake.
    pub fn crash(&mut self, seed: u64) -> bool {
        self.in_flight = None;
        let mut disk = match self.wal.take() {
            Some(Wal::Open(w)) => w.into_store(),
            Some(Wal::Closed(d)) => d,
            None => SimDisk::new(),
        };
        let at_stake = disk.unsynced_writes() > 0;
        disk.crash(CrashMode::Seeded { seed });
        self.wal = Some(Wal::Closed(disk));
        at_stake
    }

    /// The WAL's live segments (None: not open).
    pub fn wal_segments(&self) -> Option<usize> {
        match self.wal.as_ref() {
            Some(Wal::Open(w)) => Some(w.writer_ref().live_segments().len()),
            _ => None,
        }
    }

    /// WAL writes and fdatasyncs issued on this disk so far.
    pub fn io_counts(&self) -> (u64, u64) {
        match self.wal.as_ref() {
            Some(Wal::Open(w)) => (w.store().writes, w.store().syncs),
            Some(Wal::Closed(d)) => (d.writes, d.syncs),
            None => (0, 0),
        }
    }
}

impl CoreStorage for CoreDisk {
    fn room_bytes(&self) -> u64 {
        match self.wal.as_ref() {
            Some(Wal::Open(w)) => w.writer_ref().room_bytes(),
            _ => 0,
        }
    }

    fn pinning_groups(&self, live_max: usize) -> Vec<(u64, u64)> {
        match self.wal.as_ref() {
            Some(Wal::Open(w)) => w.writer_ref().pinning_groups(live_max),
            _ => Vec::new(),
        }
    }

    fn append(&mut self, record: &Record) -> Result<(), StorageError> {
        self.wal()?.append(record).map_err(storage_error)
    }

    fn append_entries(&mut self, group_id: u64, entries: &[Entry]) -> Result<(), StorageError> {
        self.wal()?.writer_mut().append_entries(group_id, entries).map_err(storage_error)
    }

    fn save_snapshot(&mut self, group_id: u64, snapshot: &Snapshot) -> Result<(), StorageError> {
        // Temp file, fsync, rename, directory fsync: durable when this returns.
        self.snapshots.insert(group_id, snapshot.clone());
        Ok(())
    }
}
