//! The node core: the sans-I/O heart of one core of a corekv node (DESIGN §1–§4).
//!
//! Owns every shard replica placed on this core (each a Raft group with its shard
//! state machine), routes client requests to them, and turns all their work of one
//! loop iteration into:
//! - ONE write-ahead-log batch: every group's entries, hard states and snapshot
//!   markers go to the core's [`CoreStorage`], which the driver seals and makes
//!   durable with one write and one fdatasync ([`NodeCore::seal`],
//!   [`NodeCore::on_durable`]);
//! - ONE frame per destination core ([`NodeCore::take_frames`]), the leaders'
//!   appends leaving while their own log write is under way (DESIGN §3), and the
//!   heartbeats of every group this core leads coalesced into one message per
//!   destination core per interval ([`outbox`]);
//! - replies to clients ([`NodeCore::take_replies`]).
//!
//! Runs on its own core; no lock, clock, socket, file, thread or global RNG here.
//! The server's per-core driver and the simulator drive the same code.
//!
//! The driver's loop, in order:
//! 1. feed inputs: [`NodeCore::tick`], [`NodeCore::step_peer`],
//!    [`NodeCore::client_request`];
//! 2. [`NodeCore::process`] with the core's storage: every group's Ready is handled
//!    (records appended to the storage's open batch, committed entries applied);
//! 3. send [`NodeCore::take_frames`] and [`NodeCore::take_replies`];
//! 4. when no WAL batch is in flight: [`NodeCore::seal`], write and fdatasync the
//!    batch, then [`NodeCore::on_durable`] and go to 2 (messages that promise
//!    durability leave only then).
//!
//! Replies: `Outcome` once applied (or read); `NotLeader` when the request was never
//! proposed (certainly not applied) or its entry was overwritten; `Indeterminate`
//! for a proposed write whose fate this replica can no longer learn (it stepped
//! down): a retry with the same write tag is applied at most once (DESIGN §6).

pub mod group;
pub mod meta;
mod outbox;
#[cfg(test)]
mod tests;
mod twopc;
mod txn;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use corekv_rpc::kv::{
    ClientId, Epoch, OkReply, Outcome, ReadOp, Request, RequestBody, Response, ShardId, WriteOp, WriteTag,
};
use corekv_rpc::map::{ClusterMap, CoreIndex, FOUNDING_EPOCH, Replica};
use corekv_rpc::node::{CoreStats, PeerBatch, PeerMessage, ShardSize, ShardStatus};
use corekv_rpc::raft::{ConfChange, Entry, EntryKind, HardState, Message, MessageBody, NodeId, SnapshotMeta};
use corekv_rpc::txn::{Policy, TxnId};
use thiserror::Error;

use crate::kv::{
    Applied, ApplyError, Command, CommandBody, Hlc, Shard, ShardConfig, SnapshotError, WriteCommand, command,
};
use crate::raft::{Config, ConfigError, DurableState, ProposeError, RawNode, Ready, Role, Snapshot};
use crate::wal::{GroupLog, Record, SnapshotMarker};
pub use group::ClientRef;
use group::{Group, PendingRead, ReadKind};
use meta::{MAP_KEY, META_SHARD, MetaDriver, MetaEdit, MetaQueue, apply_edit, stored_map};
use outbox::Outbox;

/// What a log entry costs in the WAL beyond its data (index, term, kind, lengths).
const ENTRY_OVERHEAD_BYTES: u64 = 64;

/// Room one group's Ready may need in the open batch: a follower's appends are
/// bounded by the leader's in-flight window plus one append; a leader's own
/// entries by the write budget (`proposed_bytes`), which keeps this much aside.
/// A WAL segment must hold at least twice this and a value (the server's config
/// checks it).
pub fn ready_reserve_bytes(cfg: &NodeCoreConfig) -> u64 {
    cfg.raft.inflight_bytes_max + cfg.raft.append_bytes_max + (4 << 10)
}

/// The most log after its applied index a hand-off source stops with: half a
/// WAL segment, so that the target's batch (at most a segment) takes it whole.
fn handoff_tail_bytes_max(cfg: &NodeCoreConfig) -> u64 {
    cfg.wal_segment_bytes / 2
}

/// How far above the leader's clock a read at a version may ask: one second of
/// HLC time (above it: `invalid`).
const READ_AT_MARGIN_TS: u64 = 1000 << crate::kv::hlc::LOGICAL_BITS;

/// The fewest live WAL segments a core allows before it snapshots the groups
/// that keep the oldest ([`NodeCore::wal_segments_allowed`]).
pub const WAL_LIVE_SEGMENTS_MIN: usize = 4;
/// Most snapshots a core takes in one iteration for its WAL's sake (each is a
/// whole shard written to a file): the rest wait for the next iterations.
const FORCED_SNAPSHOTS_PER_ITERATION: usize = 2;

/// `--move-rate`'s default: 64 MiB/s of snapshot chunks per core.
pub const MOVE_RATE_DEFAULT: u64 = 64 << 20;

/// The move-rate bucket holds at most this many milliseconds of the rate (a
/// burst after an idle spell stays short).
const MOVE_BURST_MS: u64 = 100;

/// The client reference of the meta writes a meta leader proposes itself.
const META_WRITER: ClientRef = ClientRef { conn: u64::MAX, id: u64::MAX };

/// Ticks between two asks of one peer core for its newer map.
const MAP_ASK_INTERVAL_TICKS: u64 = 10;

/// Ticks between two polls of a meta replica for a newer map (one small message
/// a second per core; answered only when there is one).
const MAP_POLL_TICKS: u64 = 100;

/// A leader streaming a snapshot defers compaction until its log holds this many
/// times its compaction threshold (see [`compaction_threshold`]).
const COMPACT_DEFER_MAX: u64 = 16;

/// A leader about to stream a snapshot takes a fresh one first when its log
/// since the last one holds at least this many bytes, and 1/64 of the last
/// snapshot's size (see [`fresh_snapshot_log_min`]).
const FRESH_SNAPSHOT_LOG_MIN: u64 = 64 << 10;

/// Election timeouts a leader waits before it tries again to hand leadership to
/// the shard's preferred replica.
const TRANSFER_RETRY_TIMEOUTS: u64 = 5;

/// The durable side of a core, as the node core sees it: the WAL's open batch and
/// the snapshot files. Appends join the batch the driver seals next.
pub trait CoreStorage {
    /// Queues a record for the next batch.
    fn append(&mut self, record: &Record) -> Result<(), StorageError>;
    /// Queues the entries of a group for the next batch.
    fn append_entries(&mut self, group_id: u64, entries: &[Entry]) -> Result<(), StorageError>;
    /// Writes `snapshot` as the group's snapshot file, durably (temp file, fsync,
    /// rename, directory fsync), before returning.
    fn save_snapshot(&mut self, group_id: u64, snapshot: &Snapshot) -> Result<(), StorageError>;
    /// Bytes the open batch can still take: the core takes no Ready that might not
    /// fit, and refuses writes beyond it (a full batch must never stop a core).
    fn room_bytes(&self) -> u64;
    /// When the WAL holds more than `live_max` live segments, the groups whose
    /// unsnapshotted entries keep the oldest one, each with the index a snapshot
    /// must reach to let it go (`WalWriter::pinning_groups`): the core snapshots
    /// them early. Empty otherwise, and always for storage without segments.
    fn pinning_groups(&self, live_max: usize) -> Vec<(u64, u64)>;
}

/// The storage failed: the core must stop (fail-stop; nothing acknowledged is lost
/// because nothing after the failure is acknowledged).
#[derive(Debug, Error)]
#[error("{0}")]
pub struct StorageError(pub String);

/// Why a core stopped.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The storage failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// A committed entry could not be applied: continuing would diverge.
    #[error("shard {shard}: {source}")]
    Apply {
        /// The shard.
        shard: ShardId,
        /// Why.
        source: ApplyError,
    },
    /// A snapshot could not be read back.
    #[error("shard {shard}: snapshot: {source}")]
    Snapshot {
        /// The shard.
        shard: ShardId,
        /// Why.
        source: SnapshotError,
    },
    /// Recovered state that does not fit together.
    #[error("shard {shard}: {message}")]
    Recovery {
        /// The shard.
        shard: ShardId,
        /// What does not fit.
        message: String,
    },
    /// The Raft configuration is unusable.
    #[error("raft configuration: {0}")]
    Config(#[from] ConfigError),
}

/// A core's settings.
#[derive(Debug, Clone)]
pub struct NodeCoreConfig {
    /// This node.
    pub node: NodeId,
    /// This core.
    pub core: CoreIndex,
    /// Raft settings for every group (the id is set to `node`).
    pub raft: Config,
    /// Shard state machine settings (identical on every replica).
    pub shard: ShardConfig,
    /// A group's log is compacted into a snapshot past this many applied bytes,
    /// or past its last snapshot's size when that is larger.
    pub snapshot_log_bytes: u64,
    /// The WAL's segment size (what [`NodeCore::wal_segments_allowed`] counts in).
    pub wal_segment_bytes: u64,
    /// Client requests accepted and not yet answered, on this core; beyond it,
    /// `Busy`.
    pub requests_pending_max: usize,
    /// Leaders hand leadership back to the shard's preferred replica.
    pub leader_balance: bool,
    /// The conflict policy of plain writes (one-key transactions) and of
    /// transactions that name none.
    pub txn_policy: Policy,
    /// Seeds each group's election-timeout RNG (mixed with the shard id).
    pub seed: u64,
    /// Snapshot bytes this core's leaders may send per second, together (replica
    /// moves and lagging followers alike; `--move-rate`); 0: no limit.
    pub move_rate_bytes_per_sec: u64,
    /// As the meta leader, move replicas after a join, drain, removal or death
    /// without an operator's request (`--auto-rebalance`).
    pub auto_rebalance: bool,
    /// As the meta leader, declare a node dead after this many ticks without a
    /// frame from it (`--dead-after`).
    pub dead_after_ticks: u64,
    /// A bug planted on purpose, so the simulator's checkers prove they can fail
    /// (DESIGN §11). Always [`PlantedBug::None`] outside those tests.
    pub planted_bug: PlantedBug,
}

/// Bugs the simulator plants to show its checkers catch them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlantedBug {
    /// No bug.
    #[default]
    None,
    /// Any replica serves linearizable reads from its own state, without ReadIndex.
    ReadWithoutReadIndex,
    /// Writes lose their client id, so a retry is applied again.
    RetryAppliedTwice,
    /// Acknowledgements that promise durability leave before the fdatasync.
    AckBeforeFsync,
    /// Transactions' read versions are replaced by the current ones before they
    /// prepare: OCC's validation (and 2PL's backstop) can never fail.
    SkipTxnValidation,
    /// The anchor tells other participants to commit one version above its own:
    /// one transaction's keys get different versions.
    SplitCommitVersion,
    /// Reads ignore prepared intents (a snapshot read past an unresolved write).
    ReadPastIntent,
    /// A scan's range is validated against the newest version in it, not the
    /// version it was read at: OCC misses a write that slipped into the range.
    SkipRangeValidation,
    /// A participant's new leader drops the prepared transactions it inherits
    /// (resolves them as aborted) instead of waiting for their anchors' decisions.
    ForgetPreparedOnLeaderChange,
    /// A shard leader releases a transaction's locks when it proposes or hears of
    /// the decision, before the decision is durable and applied here.
    ReleaseLocksBeforeDecision,
    /// A replica that moved away is forgotten but its snapshot file is never
    /// deleted: the disk never gets its space back.
    KeepMovedReplicaData,
    /// The source of a hand-off gives the target its snapshot without the log
    /// after it: entries it acknowledged are gone from the node.
    HandoffWithoutLogTail,
}

impl NodeCoreConfig {
    /// Defaults for `node`'s core `core`.
    pub fn new(node: NodeId, core: CoreIndex) -> NodeCoreConfig {
        NodeCoreConfig {
            node,
            core,
            raft: Config::new(node),
            shard: ShardConfig::default(),
            snapshot_log_bytes: 64 << 20,
            wal_segment_bytes: 64 << 20,
            requests_pending_max: 65_536,
            leader_balance: true,
            txn_policy: Policy::WoundWait,
            seed: node.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(core),
            planted_bug: PlantedBug::None,
            move_rate_bytes_per_sec: MOVE_RATE_DEFAULT,
            auto_rebalance: true,
            dead_after_ticks: 30_000,
        }
    }
}

/// What a shard replica restarts from: the WAL's view of the group and its
/// snapshot file (if any).
#[derive(Debug, Default)]
pub struct GroupRecovery {
    /// The group's records in the WAL.
    pub log: Option<GroupLog>,
    /// The group's snapshot file.
    pub snapshot: Option<Snapshot>,
}

/// A stopped hand-off source's whole state, given to the target core of the
/// same node ([`NodeCore::take_handoffs`], [`NodeCore::receive_handoff`]; the
/// driver moves it in memory).
#[derive(Debug)]
pub struct Handoff {
    shard: ShardId,
    since: Epoch,
    state: DurableState,
}

impl Handoff {
    /// The shard handed over.
    pub fn shard(&self) -> ShardId {
        self.shard
    }
}

/// A Ready waiting for its WAL batch.
#[derive(Debug)]
struct Wait {
    shard: ShardId,
    number: u64,
    messages_after_persist: Vec<Message>,
}

/// The sans-I/O core of one core of a node.
#[derive(Debug)]
pub struct NodeCore {
    cfg: NodeCoreConfig,
    map: Arc<ClusterMap>,
    groups: BTreeMap<ShardId, Group>,
    hlc: Hlc,
    now_ms: u64,
    ticks: u64,
    outbox: Outbox,
    heartbeat_boundary: bool,
    replies: Vec<(ClientRef, Response)>,
    /// Readys whose records are in the storage's open batch.
    unsealed: Vec<Wait>,
    /// Sealed batches in flight, oldest first.
    sealed: VecDeque<(u64, Vec<Wait>)>,
    /// Replicas dropped since the last seal: their `DropGroup` records are in the
    /// open batch.
    drops_unsealed: Vec<ShardId>,
    /// Drops in sealed batches in flight, by seal token.
    drops_sealed: VecDeque<(u64, Vec<ShardId>)>,
    /// Drops that became durable: their snapshot files may be deleted now.
    drops_durable: Vec<ShardId>,
    /// Hand-offs to this core waiting for their source's state (nothing of
    /// them is durable here).
    handoff_waiting: BTreeSet<ShardId>,
    /// Sources' states handed to this core, installed by the next `process`.
    handoff_inbox: Vec<Handoff>,
    /// Hand-offs (shard, epoch) whose log tail was found too large for a WAL
    /// batch: logged once each, not at every iteration.
    handoff_too_large: BTreeSet<(ShardId, Epoch)>,
    /// States this core's stopped sources hand to other cores of this node.
    handoff_out: Vec<(CoreIndex, Handoff)>,
    /// Records appended outside a Ready (a hand-off's state) wait in the open
    /// batch: it must be sealed.
    records_unsealed: bool,
    /// The token of the last sealed batch that became durable.
    durable_seal: u64,
    /// The founding map (epoch 1), when this core started with it: the meta
    /// group's map until its first write.
    founding: Option<Arc<ClusterMap>>,
    /// A newer map (applied by the meta group here, or sent by a peer), installed
    /// at the end of `process`.
    map_inbox: Option<Arc<ClusterMap>>,
    /// The version of the meta group's map this core installed last.
    meta_map_version: u64,
    /// Cores that showed a newer epoch, to ask for their map, and the tick this
    /// core last asked each.
    map_asks: BTreeMap<Replica, u64>,
    /// Edits waiting at the meta leader.
    meta: MetaQueue,
    /// The meta leader's view of the nodes and its last plan.
    meta_driver: MetaDriver,
    /// The meta leader installed a newer map: it looks at the placement again at
    /// the next tick instead of the next [`meta::DRIVE_EVERY_TICKS`] boundary, so
    /// a finished move is followed by the next one at once.
    drive_due: bool,
    /// The tick of the meta leader's last look.
    drive_last: u64,
    /// The write tag client id of this core's meta writes.
    meta_client: ClientId,
    /// Snapshot bytes this core's leaders may still send (`--move-rate`'s bucket).
    move_credit: u64,
    /// When the bucket was last filled.
    move_credit_at_ms: u64,
    next_seal: u64,
    /// Groups that may have a Ready.
    dirty: BTreeSet<ShardId>,
    requests_pending: usize,
    /// Transaction messages this core sent to its own replicas.
    txn_inbox: Vec<(ShardId, ShardId, corekv_rpc::node::TxnPeerMessage)>,
    /// Entry bytes proposed since the last `process`, and the open batch's room
    /// then: client writes beyond the room are refused with Busy.
    proposed_bytes: u64,
    room_bytes: u64,
    stats: CoreStats,
}

impl NodeCore {
    /// Opens the core: every shard the map places on (`cfg.node`, `cfg.core`) is
    /// recovered from `recovered` (its WAL records and snapshot file) or, with no
    /// durable state at all, bootstrapped with the map's founding replicas when the
    /// map is the founding one, and started empty otherwise (a replica that joined
    /// later learns everything from its leader). The bootstrap records go to
    /// `storage` (they are durable with the first batch, before any vote of this
    /// core can be). `map` must be the newest map this node knows: recovered state
    /// of a shard it no longer places here is dropped.
    pub fn open(
        mut cfg: NodeCoreConfig,
        map: Arc<ClusterMap>,
        mut recovered: BTreeMap<ShardId, GroupRecovery>,
        storage: &mut dyn CoreStorage,
        now_ms: u64,
    ) -> Result<NodeCore, NodeError> {
        cfg.raft.id = cfg.node;
        cfg.raft.validate()?;
        let mut hlc = Hlc::new();
        let mut groups = BTreeMap::new();
        let founding = map.epoch == FOUNDING_EPOCH;
        let mut handoff_waiting = BTreeSet::new();
        let mut recovered_dropped = Vec::new();
        for shard in map.shards_on(cfg.node, cfg.core) {
            let voters: Vec<NodeId> =
                if founding { map.replicas(shard).iter().map(|r| r.node).collect() } else { Vec::new() };
            let rec = recovered.remove(&shard).unwrap_or_default();
            // The target of a hand-off still under way: the state it installed
            // for this hand-off (its WAL says so, in the install's own batch)
            // stays parked, ready, as the meta group may have ended the hand-off
            // already; anything else (an older copy whose drop was not durable,
            // a snapshot file whose install batch never was) goes, and it waits
            // for the source's state.
            let handoff = map.handoff(shard, cfg.node).filter(|&(from, to, _)| to == cfg.core && from != cfg.core);
            if let Some((_, _, since)) = handoff {
                let installed = rec.log.as_ref().is_some_and(|l| l.handoff_since == Some(since));
                if installed {
                    let durable = durable_state(shard, voters, rec, storage)?;
                    let mut group = new_group(&cfg, shard, durable)?;
                    group.parked = true;
                    group.installed_since = since;
                    let _ = hlc.observe(group.sm.last_applied_version().max(group.sm.log_clock_ts()));
                    groups.insert(shard, group);
                    continue;
                }
                if rec.log.is_some() || rec.snapshot.is_some() {
                    storage.append(&Record::DropGroup { group_id: u64::from(shard) })?;
                    recovered_dropped.push(shard);
                }
                handoff_waiting.insert(shard);
                continue;
            }
            let durable = durable_state(shard, voters, rec, storage)?;
            // The source of a hand-off stops again (and gives its state again)
            // in `sync_handoffs` below.
            let group = new_group(&cfg, shard, durable)?;
            let _ = hlc.observe(group.sm.last_applied_version().max(group.sm.log_clock_ts()));
            groups.insert(shard, group);
        }
        let mut drops_unsealed = recovered_dropped;
        for &shard in recovered.keys() {
            storage.append(&Record::DropGroup { group_id: u64::from(shard) })?;
            drops_unsealed.push(shard);
        }
        let stats = CoreStats {
            node: cfg.node,
            core: cfg.core,
            groups: groups.len() as u64,
            replicas_dropped: drops_unsealed.len() as u64,
            ..CoreStats::default()
        };
        let dirty = groups.keys().copied().collect();
        let founding = (map.epoch == FOUNDING_EPOCH).then(|| map.clone());
        let mut meta_client = [0u8; 16];
        meta_client[..8].copy_from_slice(&cfg.seed.to_le_bytes());
        meta_client[8..].copy_from_slice(&(cfg.node << 16 | u64::from(cfg.core)).to_le_bytes());
        let mut core = NodeCore {
            cfg,
            map,
            groups,
            hlc,
            now_ms,
            ticks: 0,
            outbox: Outbox::default(),
            heartbeat_boundary: false,
            replies: Vec::new(),
            unsealed: Vec::new(),
            sealed: VecDeque::new(),
            drops_unsealed,
            drops_sealed: VecDeque::new(),
            drops_durable: Vec::new(),
            handoff_waiting,
            handoff_inbox: Vec::new(),
            handoff_too_large: BTreeSet::new(),
            handoff_out: Vec::new(),
            records_unsealed: false,
            durable_seal: 0,
            founding,
            map_inbox: None,
            meta_map_version: 0,
            map_asks: BTreeMap::new(),
            meta: MetaQueue::default(),
            meta_driver: MetaDriver::default(),
            drive_due: false,
            drive_last: 0,
            meta_client: ClientId(meta_client),
            move_credit: 0,
            move_credit_at_ms: now_ms,
            next_seal: 1,
            dirty,
            requests_pending: 0,
            txn_inbox: Vec::new(),
            proposed_bytes: 0,
            room_bytes: storage.room_bytes(),
            stats,
        };
        // A meta replica may hold a newer map than the one it was given.
        core.meta_applied();
        core.sync_handoffs(storage)?;
        Ok(core)
    }

    /// This core's counters (the WAL and transport fields are the driver's to fill).
    pub fn stats(&self) -> CoreStats {
        let mut s = self.stats;
        s.groups = self.groups.len() as u64;
        s.leaders = self.groups.values().filter(|g| g.is_leader).count() as u64;
        s
    }

    /// The counters, for the driver's fields.
    pub fn stats_mut(&mut self) -> &mut CoreStats {
        &mut self.stats
    }

    /// The cluster map this core routes by.
    pub fn map(&self) -> &Arc<ClusterMap> {
        &self.map
    }

    /// A newer cluster map (a lower or equal epoch, or another cluster's map, is
    /// ignored: false). Shards it places on this core that the core does not hold
    /// start as empty replicas, which their leader adds as learners and feeds a
    /// snapshot; shards it no longer places here are dropped: their waiting
    /// requests are answered (writes `indeterminate`: they may still commit) and
    /// their durable state is deleted: a `DropGroup` record in the next batch
    /// (recovery forgets everything of the group before it, and the WAL stops
    /// keeping segments for it), then the snapshot file once that record is
    /// durable (see [`Self::take_dropped`]).
    ///
    /// A map only stops placing a replica on a core once its shard's
    /// configuration no longer names it, so a dropped replica is no longer needed
    /// for any majority.
    pub fn update_map(&mut self, map: Arc<ClusterMap>, storage: &mut dyn CoreStorage) -> Result<bool, NodeError> {
        if map.epoch <= self.map.epoch || map.cluster_id != self.map.cluster_id {
            return Ok(false);
        }
        let (node, core) = (self.cfg.node, self.cfg.core);
        let before: BTreeSet<ShardId> = self.map.shards_on(node, core).collect();
        let after: BTreeSet<ShardId> = map.shards_on(node, core).collect();
        tracing::debug!(epoch = map.epoch, "map installed");
        self.map = map;
        for &shard in before.difference(&after) {
            self.drop_group(shard, storage)?;
        }
        for &shard in after.difference(&before) {
            if self.handoff_target(shard) {
                self.handoff_waiting.insert(shard);
            } else {
                self.add_replica(shard);
            }
        }
        self.sync_handoffs(storage)?;
        Ok(true)
    }

    /// This core is the target of a hand-off of `shard` (see
    /// [`corekv_rpc::map::ShardReplicas::handoff`]).
    fn handoff_target(&self, shard: ShardId) -> bool {
        self.map.handoff(shard, self.cfg.node).is_some_and(|(from, to, _)| to == self.cfg.core && from != self.cfg.core)
    }

    /// This core is the source of a hand-off of `shard`: the target core and
    /// the epoch that began it.
    fn handoff_source(&self, shard: ShardId) -> Option<(CoreIndex, Epoch)> {
        self.map
            .handoff(shard, self.cfg.node)
            .filter(|&(from, to, _)| from == self.cfg.core && to != self.cfg.core)
            .map(|(_, to, since)| (to, since))
    }

    /// Brings this core's hand-offs in line with the map (after every new map):
    /// sources stop once they do not lead; a stopped source whose map skipped
    /// ahead to one that makes this core the target drops its stale copy and
    /// waits for the state like any target; a target the map lists starts
    /// acting; waits that ended go.
    fn sync_handoffs(&mut self, storage: &mut dyn CoreStorage) -> Result<(), NodeError> {
        // A parked install of an earlier hand-off to this core, now the target of
        // another one (its map skipped ahead): stale, like a stopped source.
        let stale: Vec<ShardId> = self
            .groups
            .iter()
            .filter(|&(&s, g)| {
                g.parked && self.map.handoff(s, self.cfg.node).is_some_and(|(_, _, since)| since != g.installed_since)
            })
            .map(|(&s, _)| s)
            .collect();
        for shard in stale {
            if self.handoff_target(shard) {
                self.drop_group(shard, storage)?;
                self.handoff_waiting.insert(shard);
            }
        }
        let frozen: Vec<ShardId> = self.groups.iter().filter(|(_, g)| g.frozen).map(|(&s, _)| s).collect();
        for shard in frozen {
            if self.handoff_target(shard) {
                self.drop_group(shard, storage)?;
                self.handoff_waiting.insert(shard);
            } else if self.handoff_source(shard).is_none() {
                // No map ends a hand-off with the source still placed here: a
                // stopped replica that ran again could vote twice in a term.
                tracing::error!(shard, "a stopped hand-off source is placed here again; it stays stopped");
            }
        }
        // A target whose hand-off the map ended by listing it here acts now.
        let done: Vec<ShardId> = self
            .groups
            .iter()
            .filter(|&(&s, g)| {
                g.parked && self.map.handoff(s, self.cfg.node).is_none() && self.durable_seal >= g.written_in
            })
            .map(|(&s, _)| s)
            .collect();
        for shard in done {
            if self.map.core_of(shard, self.cfg.node) == Some(self.cfg.core) {
                tracing::info!(shard, "hand-off done: this core serves the replica");
                g_mut(&mut self.groups, shard).parked = false;
                self.dirty.insert(shard);
            }
        }
        self.step_handoff_sources();
        let ended: Vec<ShardId> = self.handoff_waiting.iter().copied().filter(|&s| !self.handoff_target(s)).collect();
        for shard in ended {
            self.handoff_waiting.remove(&shard);
            if self.map.shards_on(self.cfg.node, self.cfg.core).any(|s| s == shard) {
                // Cannot happen (a target reports only a durable install, and keeps
                // it through restarts): no replica starts empty under the node's id.
                tracing::error!(shard, "a hand-off ended with nothing of it at its target; the replica stays out");
            }
        }
        Ok(())
    }

    /// Every hand-off source on this core that does not lead stops; one that
    /// leads hands leadership to another voter first (retried each election
    /// timeout), or, as the group's only voter, stops as it is.
    fn step_handoff_sources(&mut self) {
        let me = self.cfg.node;
        let sources: Vec<ShardId> = self
            .groups
            .iter()
            .filter(|&(&s, g)| !g.frozen && self.handoff_source(s).is_some())
            .map(|(&s, _)| s)
            .collect();
        for shard in sources {
            let g = g_mut(&mut self.groups, shard);
            let others: Vec<NodeId> = g.raft.conf().voters.iter().copied().filter(|&v| v != me).collect();
            if g.raft.status().role == Role::Leader && !others.is_empty() {
                let retry = u64::from(self.cfg.raft.election_timeout_ticks);
                let due = g.handoff_transfer_at == 0 || self.ticks >= g.handoff_transfer_at + retry;
                if g.raft.transferee().is_none() && due {
                    let to = others.iter().copied().find(|&v| caught_up(&g.raft, v)).unwrap_or(others[0]);
                    let _ = g.raft.transfer_leader(to);
                    g.handoff_transfer_at = self.ticks.max(1);
                    self.dirty.insert(shard);
                    tracing::debug!(shard, to, "hand-off: leadership handed over first");
                }
                continue;
            }
            // The target writes the log after the applied index in one WAL
            // batch: a source holding more (a stale leader's entries, which the
            // next leader's first append truncates, or entries its leader has
            // not committed yet) goes on as a follower until it holds less.
            let log = g.raft.log();
            let tail = log.bytes_after(log.applied(), ENTRY_OVERHEAD_BYTES);
            if tail > handoff_tail_bytes_max(&self.cfg) {
                if !g.handoff_tail_waits {
                    g.handoff_tail_waits = true;
                    tracing::info!(shard, tail, "hand-off: the source waits for its log tail to shrink");
                }
                continue;
            }
            self.freeze(shard);
        }
    }

    /// Stops the source replica of a hand-off for good: it never ticks, steps
    /// or serves again; its waiting requests are answered; its state goes to
    /// the target with the next `process`.
    fn freeze(&mut self, shard: ShardId) {
        let g = g_mut(&mut self.groups, shard);
        let was_leader = g.is_leader;
        g.is_leader = false;
        g.frozen = true;
        g.package_due = true;
        if was_leader {
            self.txn_stepped_down(shard);
        }
        self.stepped_down(shard);
        self.dirty.insert(shard);
        tracing::info!(shard, "hand-off: the source replica stops");
    }

    /// The stopped sources' states, for the targets: taken after each group's
    /// Readys (entries received before it stopped are in its log), right after
    /// a snapshot at the applied index, so that the target's first WAL batch
    /// carries only the unapplied tail of the log.
    fn give_handoff_states(&mut self, storage: &mut dyn CoreStorage) -> Result<(), NodeError> {
        let due: Vec<ShardId> =
            self.groups.iter().filter(|(_, g)| g.frozen && g.package_due).map(|(&s, _)| s).collect();
        for shard in due {
            let Some((to, since)) = self.handoff_source(shard) else { continue };
            // A snapshot at the applied index keeps the tail short; asked again
            // with nothing applied since, the last one serves.
            let st = self.groups[&shard].raft.status();
            if st.applied > st.snapshot_index {
                self.maybe_compact(shard, storage, true)?;
            }
            let g = g_mut(&mut self.groups, shard);
            g.package_due = false;
            let mut state = g.raft.durable_copy();
            if self.cfg.planted_bug == PlantedBug::HandoffWithoutLogTail {
                state.entries.clear();
                state.hard_state.commit = state.snapshot.meta.index;
            }
            tracing::info!(
                shard,
                to,
                index = state.snapshot.meta.index,
                tail = state.entries.len(),
                "hand-off: state given"
            );
            self.handoff_out.push((to, Handoff { shard, since, state }));
        }
        Ok(())
    }

    /// States this core's stopped hand-off sources give to other cores of this
    /// node: the driver hands each to [`Self::receive_handoff`] of its core.
    pub fn take_handoffs(&mut self) -> Vec<(CoreIndex, Handoff)> {
        std::mem::take(&mut self.handoff_out)
    }

    /// A hand-off source on another core of this node gave its state: installed
    /// by the next `process` if this core waits for it.
    pub fn receive_handoff(&mut self, handoff: Handoff) {
        if self.handoff_waiting.contains(&handoff.shard) {
            self.handoff_inbox.retain(|h| h.shard != handoff.shard);
            self.handoff_inbox.push(handoff);
        }
    }

    /// Installs the states sources gave: each whose hand-off this core still
    /// waits for (same epoch) becomes a replica here, its snapshot, log tail and
    /// hard state in the open batch; it acts only once that batch is durable.
    /// A state waits while an earlier replica's drop here is not durable (its
    /// snapshot file is about to be deleted) or while the batch is nearly full.
    fn install_handoffs(&mut self, storage: &mut dyn CoreStorage) -> Result<(), NodeError> {
        let reserve = ready_reserve_bytes(&self.cfg);
        // Forget the logged hand-offs whose wait ended (installed, or ended by the map).
        let waiting = &self.handoff_waiting;
        self.handoff_too_large.retain(|(s, _)| waiting.contains(s));
        for h in std::mem::take(&mut self.handoff_inbox) {
            let current = self
                .map
                .handoff(h.shard, self.cfg.node)
                .is_some_and(|(_, to, since)| to == self.cfg.core && since == h.since);
            if !current || !self.handoff_waiting.contains(&h.shard) {
                continue;
            }
            // The whole state goes in one batch (the target's WAL holds all of it
            // or none): it waits for a batch with room for it.
            let bytes =
                h.state.entries.iter().map(|e| e.data.len() as u64 + ENTRY_OVERHEAD_BYTES).sum::<u64>() + (4 << 10);
            let room = storage.room_bytes();
            let busy = !self.unsealed.is_empty() || self.records_unsealed;
            if self.dropping(h.shard) || room < bytes.max(reserve) && busy {
                self.handoff_inbox.push(h);
                continue;
            }
            if room < bytes {
                if self.handoff_too_large.insert((h.shard, h.since)) {
                    tracing::error!(
                        shard = h.shard,
                        bytes,
                        room,
                        "a hand-off's log tail does not fit a WAL batch: the hand-off waits"
                    );
                }
                self.handoff_inbox.push(h);
                continue;
            }
            let Handoff { shard, state, since } = h;
            let group_id = u64::from(shard);
            let snap = &state.snapshot;
            storage.save_snapshot(group_id, snap)?;
            let marker = SnapshotMarker { index: snap.meta.index, term: snap.meta.term };
            storage.append(&Record::SnapshotMarker { group_id, marker })?;
            if !state.entries.is_empty() {
                storage.append_entries(group_id, &state.entries)?;
            }
            storage.append(&Record::HardState { group_id, hard_state: state.hard_state })?;
            // Last: the install is whole (a restart keeps it only with this).
            storage.append(&Record::HandoffInstalled { group_id, since })?;
            self.records_unsealed = true;
            let mut group = new_group(&self.cfg, shard, state)?;
            group.marker_index = marker.index;
            group.written_in = self.next_seal;
            group.parked = true;
            group.installed_since = since;
            let _ = self.hlc.observe(group.sm.last_applied_version().max(group.sm.log_clock_ts()));
            tracing::info!(shard, index = marker.index, "hand-off: the target replica is written");
            self.handoff_waiting.remove(&shard);
            self.groups.insert(shard, group);
            self.stats.replicas_added += 1;
        }
        Ok(())
    }

    /// Starts an empty replica of `shard`, unless the drop of its previous replica
    /// here is not durable yet: then it starts once it is (a restart in between
    /// must not mix the two replicas' records or snapshot files).
    fn add_replica(&mut self, shard: ShardId) {
        // A hand-off target starts from its source's state, never empty.
        if self.groups.contains_key(&shard) || self.dropping(shard) || self.handoff_target(shard) {
            return;
        }
        // An empty state restores no snapshot, and open() validated the Raft
        // configuration: nothing can fail here.
        let group = new_group(&self.cfg, shard, DurableState::bootstrap(Vec::new()));
        let mut group = group.expect("an empty replica starts with the configuration open() validated");
        group.awaits_first_snapshot = true;
        self.groups.insert(shard, group);
        self.dirty.insert(shard);
        self.stats.replicas_added += 1;
    }

    /// A replica dropped here whose snapshot file is not deleted yet (its drop
    /// is not durable, or `take_dropped` has not been called since).
    pub fn drops_pending(&self) -> bool {
        !self.drops_unsealed.is_empty() || !self.drops_sealed.is_empty() || !self.drops_durable.is_empty()
    }

    fn dropping(&self, shard: ShardId) -> bool {
        self.drops_unsealed.contains(&shard) || self.drops_sealed.iter().any(|(_, d)| d.contains(&shard))
    }

    /// The connection to core `peer` broke: whatever this core's leaders had in
    /// flight to it is lost, so they probe it again, and a snapshot transfer to it
    /// pauses until it answers (then resumes from what it acknowledged).
    pub fn report_unreachable(&mut self, peer: Replica) {
        let shards: Vec<ShardId> =
            self.groups.keys().copied().filter(|&s| self.map.core_of(s, peer.node) == Some(peer.core)).collect();
        for shard in shards {
            g_mut(&mut self.groups, shard).raft.report_unreachable(peer.node);
            self.dirty.insert(shard);
        }
    }

    // ----- the meta group -----------------------------------------------------------

    /// Hands `edit` to the meta group's leader: queued here when this core leads
    /// it, sent to every meta replica otherwise (only the leader acts). Edits are
    /// safe to repeat: senders repeat until the map shows them.
    pub fn submit_meta(&mut self, edit: MetaEdit) {
        if self.groups.get(&META_SHARD).is_some_and(|g| g.is_leader) {
            self.meta.push(edit);
            return;
        }
        let me = Replica { node: self.cfg.node, core: self.cfg.core };
        let members: Vec<Replica> = self.map.members(META_SHARD).copied().filter(|&r| r != me).collect();
        for r in members {
            self.outbox.push_other(r, PeerMessage::MetaEdit { edit: edit.clone() });
        }
    }

    /// The meta group applied an entry here: a newer map in it is installed at
    /// the end of this iteration.
    fn meta_applied(&mut self) {
        let Some(g) = self.groups.get(&META_SHARD) else { return };
        let read = g.sm.get(MAP_KEY, None);
        let Outcome::Ok(OkReply::Value { version, .. }) = &read else { return };
        if *version <= self.meta_map_version {
            return;
        }
        self.meta_map_version = *version;
        match stored_map(read, self.founding.as_deref()) {
            Ok((map, _)) => self.offer_map(map),
            // Only this group's own leaders write there: a map that does not decode
            // is a bug, kept out of routing.
            Err(e) => tracing::error!(error = %e, "the meta group holds a map that does not decode"),
        }
    }

    /// A map from the meta group or a peer: kept when it is newer than every map
    /// this core has, for the same cluster and shard count.
    fn offer_map(&mut self, map: ClusterMap) {
        let newest = self.map_inbox.as_ref().map_or(self.map.epoch, |m| m.epoch.max(self.map.epoch));
        if map.epoch > newest && map.cluster_id == self.map.cluster_id && map.shard_count() == self.map.shard_count() {
            self.map_inbox = Some(Arc::new(map));
        }
    }

    /// At the meta leader: folds every queued edit that applies into one map and
    /// proposes it as one compare-and-set, one write at a time (a join's first
    /// moves begin together, not one meta commit after another).
    fn meta_step(&mut self) {
        let Some(g) = self.groups.get(&META_SHARD) else { return self.meta.clear() };
        if !g.is_leader {
            return self.meta.clear();
        }
        let st = g.raft.status();
        if st.applied < st.commit {
            return; // its state machine lags its log: edits would only lose the race
        }
        let waiting = self.meta.take_waiting();
        if waiting.is_empty() {
            return;
        }
        let (current, version) = match stored_map(g.sm.get(MAP_KEY, None), self.founding.as_deref()) {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(error = %e, "the meta group's map cannot be read");
                return self.meta.clear();
            }
        };
        let mut next = None;
        let mut batch = Vec::new();
        for edit in waiting {
            // An edit that changes nothing, or is refused, is dropped (the asker
            // sees the map unchanged).
            if let Ok(Some(map)) = apply_edit(&edit, next.as_ref().unwrap_or(&current)) {
                next = Some(map);
                batch.push(edit);
            }
        }
        let Some(next) = next else { return };
        self.meta.next_seq += 1;
        let seq = self.meta.next_seq;
        let tag = WriteTag { client: self.meta_client, seq, acked: seq - 1 };
        let op = WriteOp::Cas { key: MAP_KEY.to_vec(), expected: version, value: corekv_rpc::node::to_bytes(&next) };
        // Counted in edits, as before they shared a write.
        self.stats.meta_writes += batch.len() as u64;
        self.meta.inflight = batch;
        self.propose_write(META_WRITER, META_SHARD, tag, op, None);
    }

    /// At the meta leader, with no edit pending: the deaths, returns and moves the
    /// map needs next (see [`MetaDriver`]).
    fn drive_meta(&mut self) {
        let Some(g) = self.groups.get(&META_SHARD) else { return };
        if !g.is_leader {
            return self.meta_driver.stop();
        }
        if !self.meta.is_idle() {
            return;
        }
        let Ok((map, _)) = stored_map(g.sm.get(MAP_KEY, None), self.founding.as_deref()) else { return };
        let (me, now) = (self.cfg.node, self.ticks);
        for edit in self.meta_driver.next(&map, me, now, self.cfg.dead_after_ticks, self.cfg.auto_rebalance) {
            tracing::debug!(?edit, "meta leader: edit queued");
            self.meta.push(edit);
        }
    }

    /// The meta write in flight was answered: done, or tried again on the newer map.
    fn meta_answered(&mut self, response: &Response) {
        let done = matches!(response, Response::Outcome(Outcome::Ok(_)));
        self.meta.answered(!done);
    }

    /// Installs the newest map learned this iteration; the meta leader also sends
    /// it to every core of the cluster.
    fn install_map(&mut self, storage: &mut dyn CoreStorage) -> Result<(), NodeError> {
        let Some(map) = self.map_inbox.take() else { return Ok(()) };
        if !self.update_map(map, storage)? {
            return Ok(());
        }
        self.map_asks.clear();
        self.stats.maps_installed += 1;
        if self.groups.get(&META_SHARD).is_some_and(|g| g.is_leader) {
            self.drive_due = true;
            let me = Replica { node: self.cfg.node, core: self.cfg.core };
            let cores: Vec<Replica> = self
                .map
                .nodes
                .iter()
                .flat_map(|n| (0..n.cores).map(move |core| Replica { node: n.id, core }))
                .filter(|&r| r != me)
                .collect();
            for r in cores {
                self.outbox.push_other(r, PeerMessage::Map { map: (*self.map).clone() });
            }
        }
        Ok(())
    }

    /// Replicas whose drop is durable since the last call: the driver deletes
    /// their snapshot files (a crash before that leaves files that recovery
    /// reports as dropped, deleted then).
    pub fn take_dropped(&mut self) -> Vec<ShardId> {
        if self.cfg.planted_bug == PlantedBug::KeepMovedReplicaData {
            self.drops_durable.clear();
        }
        std::mem::take(&mut self.drops_durable)
    }

    /// Deletes this core's replica of `shard` (see [`Self::update_map`]).
    fn drop_group(&mut self, shard: ShardId, storage: &mut dyn CoreStorage) -> Result<(), NodeError> {
        let Some(g) = self.groups.get(&shard) else { return Ok(()) };
        if g.is_leader {
            self.txn_stepped_down(shard);
        }
        self.stepped_down(shard);
        self.groups.remove(&shard);
        self.dirty.remove(&shard);
        self.unsealed.retain(|w| w.shard != shard);
        for (_, waits) in &mut self.sealed {
            waits.retain(|w| w.shard != shard);
        }
        self.txn_inbox.retain(|(_, to, _)| *to != shard);
        storage.append(&Record::DropGroup { group_id: u64::from(shard) })?;
        self.drops_unsealed.push(shard);
        self.stats.replicas_dropped += 1;
        Ok(())
    }

    /// The shards on this core.
    pub fn shards(&self) -> Vec<ShardId> {
        self.groups.keys().copied().collect()
    }

    /// The status of every shard replica on this core.
    pub fn status(&self) -> Vec<ShardStatus> {
        self.groups
            .values()
            .map(|g| {
                let st = g.raft.status();
                let lag = if g.is_leader {
                    st.conf
                        .voters
                        .iter()
                        .filter(|&&v| v != self.cfg.node)
                        .filter_map(|&v| g.raft.progress(v))
                        .map(|p| st.last_index.saturating_sub(p.match_index))
                        .max()
                        .unwrap_or(0)
                } else {
                    0
                };
                ShardStatus {
                    shard: g.shard,
                    is_leader: g.is_leader,
                    leader: st.leader,
                    term: st.term,
                    raft_commit_index: st.commit,
                    applied_index: st.applied,
                    last_index: st.last_index,
                    lag,
                    voters: st.conf.voters.clone(),
                    learners: st.conf.learners.clone(),
                    bytes: g.sm.store().bytes(),
                }
            })
            .collect()
    }

    /// The state machine of `shard`, for tests and checks.
    pub fn shard_state(&self, shard: ShardId) -> Option<&Shard> {
        self.groups.get(&shard).map(|g| &g.sm)
    }

    /// The Raft status of `shard` on this core.
    pub fn raft_status(&self, shard: ShardId) -> Option<crate::raft::Status> {
        self.groups.get(&shard).map(|g| g.raft.status())
    }

    /// True when a Ready may be waiting (the driver should call [`Self::process`]).
    pub fn has_work(&self) -> bool {
        !self.dirty.is_empty()
            || self.outbox.has_due()
            || self.heartbeat_boundary
            || !self.replies.is_empty()
            || !self.txn_inbox.is_empty()
    }

    /// True when the storage's open batch holds Readys that wait for durability:
    /// the driver should make it durable. Records appended without a waiting Ready
    /// (commit-index-only hard states, compaction markers) ride with the next batch.
    pub fn has_unsealed(&self) -> bool {
        !self.unsealed.is_empty() || !self.drops_unsealed.is_empty() || self.records_unsealed
    }

    // ----- inputs ----------------------------------------------------------------

    /// One tick of logical time for every group; `now_ms` is the physical clock the
    /// leaders' HLC reads.
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        self.ticks += 1;
        let interval = u64::from(self.cfg.raft.heartbeat_interval_ticks.max(1));
        if self.ticks.is_multiple_of(interval) {
            self.heartbeat_boundary = true;
        }
        let balance_every = u64::from(self.cfg.raft.election_timeout_ticks);
        let mut reports = Vec::new();
        for g in self.groups.values_mut() {
            // A hand-off target whose state is durable asks the meta group to
            // end the hand-off (once an interval, until the map shows it); it
            // acts from that map on.
            if g.parked {
                let durable = self.durable_seal >= g.written_in;
                match self.map.handoff(g.shard, self.cfg.node) {
                    Some((_, to, since))
                        if to == self.cfg.core
                            && since == g.installed_since
                            && durable
                            && (g.relocated_reported_at == 0 || self.ticks >= g.relocated_reported_at + interval) =>
                    {
                        g.relocated_reported_at = self.ticks;
                        let to = Replica { node: self.cfg.node, core: self.cfg.core };
                        reports.push(MetaEdit::Relocated { shard: g.shard, to, since });
                    }
                    // Ended (the map lists this core) while the install was not
                    // durable yet: it acts now.
                    None if durable && self.map.core_of(g.shard, self.cfg.node) == Some(self.cfg.core) => {
                        tracing::info!(shard = g.shard, "hand-off done: this core serves the replica");
                        g.parked = false;
                        self.dirty.insert(g.shard);
                    }
                    _ => {}
                }
                continue;
            }
            if g.frozen {
                continue;
            }
            g.transfer_cooldown_ticks = g.transfer_cooldown_ticks.saturating_sub(1);
            // A leader steps its shard's configuration towards the map at every
            // heartbeat boundary, and while a move of the shard is under way at
            // every tick: each step of a move (learner, promotion, handover,
            // removal, settling) waits for the one before, so waiting for a
            // boundary at each would make a move last several intervals.
            let moving = !self.map.outgoing(g.shard).is_empty();
            if g.is_leader && (self.heartbeat_boundary || moving) {
                // A move whose configuration is done and applied (a removal still
                // in the uncommitted tail could be lost with this leader, and the
                // replica it removes deletes its copy once the move ends): the
                // meta group ends it (this repeats, once an interval, until the
                // map shows it).
                if moving
                    && !g.raft.conf_change_pending()
                    && self.ticks >= g.settle_reported_at + interval
                    && crate::placement::moves::settles(&self.map, g.shard, g.raft.conf())
                {
                    tracing::debug!(shard = g.shard, "move settled: reported to the meta group");
                    g.settle_reported_at = self.ticks;
                    reports.push(MetaEdit::Settle { shard: g.shard, conf: g.raft.conf().clone() });
                }
                match reconcile(&self.map, self.cfg.node, g) {
                    Reconciled::Nothing => {}
                    Reconciled::Proposed => self.stats.conf_changes_proposed += 1,
                    Reconciled::Transferring => {
                        g.transfer_cooldown_ticks = balance_every * TRANSFER_RETRY_TIMEOUTS;
                    }
                }
            }
            if self.cfg.leader_balance && g.is_leader && g.transfer_cooldown_ticks == 0 {
                g.transfer_cooldown_ticks = balance_every;
                let preferred = self.map.replicas(g.shard).first().map_or(0, |r| r.node);
                // Not to a node handing its replica over: nobody there would campaign.
                let handing = self.map.handoff(g.shard, preferred).is_some();
                if preferred != 0 && preferred != self.cfg.node && !handing && caught_up(&g.raft, preferred) {
                    let _ = g.raft.transfer_leader(preferred);
                    // A transfer that fails (the node died since) holds proposals for
                    // an election timeout: do not retry it soon.
                    g.transfer_cooldown_ticks = balance_every * TRANSFER_RETRY_TIMEOUTS;
                }
            }
            g.raft.tick();
            if g.raft.has_ready() || g.raft.snapshot_wanted() {
                self.dirty.insert(g.shard);
            }
        }
        for edit in reports {
            self.submit_meta(edit);
        }
        // A hand-off target still without its source's state asks for it; a
        // source that led tries again to hand leadership over and stop.
        if self.heartbeat_boundary {
            let asks: Vec<(ShardId, CoreIndex, Epoch)> = self
                .handoff_waiting
                .iter()
                .filter(|&&s| !self.handoff_inbox.iter().any(|h| h.shard == s))
                .filter_map(|&s| self.map.handoff(s, self.cfg.node).map(|(from, _, since)| (s, from, since)))
                .collect();
            for (shard, from, since) in asks {
                let source = Replica { node: self.cfg.node, core: from };
                self.outbox.push_other(source, PeerMessage::HandoffAsk { shard, since });
            }
            self.step_handoff_sources();
        }
        // Now and then, ask the meta replicas whether there is a newer map (which
        // also tells the meta leader this node is alive), and at once on the
        // first tick: the meta leader gives a node it has not heard from (one
        // that has just joined or come back) no replicas.
        // The poll carries the sizes of the shards this core leads, for the
        // meta leader's plans.
        if self.ticks == 1 || self.ticks.is_multiple_of(MAP_POLL_TICKS) {
            let me = Replica { node: self.cfg.node, core: self.cfg.core };
            let sizes: Vec<ShardSize> = self
                .groups
                .values()
                .filter(|g| g.is_leader && g.shard != META_SHARD)
                .map(|g| ShardSize { shard: g.shard, bytes: g.sm.store().bytes() })
                .collect();
            if self.groups.contains_key(&META_SHARD) {
                self.meta_driver.sized(&sizes);
            }
            let meta: Vec<Replica> = self.map.members(META_SHARD).copied().filter(|&r| r != me).collect();
            for r in meta {
                self.outbox.push_other(r, PeerMessage::MapRequest { epoch: self.map.epoch, sizes: sizes.clone() });
            }
        }
        // A look asked for while an edit is pending happens once the queue is
        // idle, not at the next boundary; looks are spaced by at least
        // `meta::drive_gap_ticks` (a plan's cost grows with the shard count).
        let gap = meta::drive_gap_ticks(self.map.shard_count());
        let due = self.drive_due && self.meta.is_idle() && self.ticks >= self.drive_last + gap;
        if due || self.ticks.is_multiple_of(meta::DRIVE_EVERY_TICKS) {
            self.drive_due &= !due;
            self.drive_last = self.ticks;
            self.drive_meta();
        }
        self.txn_tick();
        self.grant_move_credit();
    }

    /// Fills the `--move-rate` bucket for the time since the last tick and shares
    /// it among the leaders with snapshot chunks to send: each takes what it
    /// wants in turn, starting at a different group every tick.
    fn grant_move_credit(&mut self) {
        let rate = self.cfg.move_rate_bytes_per_sec;
        if rate == 0 {
            return;
        }
        let elapsed_ms = self.now_ms.saturating_sub(self.move_credit_at_ms);
        self.move_credit_at_ms = self.now_ms;
        // At least one chunk fits the bucket, or a slow rate would never send one.
        let cap = (rate.saturating_mul(MOVE_BURST_MS) / 1000).max(self.cfg.raft.snapshot_chunk_bytes);
        self.move_credit = self.move_credit.saturating_add(rate.saturating_mul(elapsed_ms) / 1000).min(cap);
        let wanting: Vec<ShardId> =
            self.groups.values().filter(|g| g.raft.snapshot_bytes_wanted() > 0).map(|g| g.shard).collect();
        if wanting.is_empty() {
            return;
        }
        let start = (self.ticks % wanting.len() as u64) as usize;
        for &shard in wanting[start..].iter().chain(&wanting[..start]) {
            if self.move_credit == 0 {
                break;
            }
            let g = g_mut(&mut self.groups, shard);
            let give = g.raft.snapshot_bytes_wanted().min(self.move_credit);
            g.raft.grant_snapshot_credit(give);
            self.move_credit -= give;
            self.dirty.insert(shard);
        }
    }

    /// Moves the physical clock the HLC reads (without a Raft tick).
    pub fn set_now_ms(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// A batch of peer messages arrived from node `from`'s core.
    pub fn step_peer(&mut self, from: NodeId, batch: PeerBatch) {
        self.stats.peer_frames_received += 1;
        // Only a core holding a meta replica may lead the meta group and need to
        // know who is alive.
        if self.groups.contains_key(&META_SHARD) && self.meta_driver.heard(from, self.ticks) {
            self.drive_due = true;
        }
        let sender = Replica { node: from, core: batch.from_core };
        if batch.epoch > self.map.epoch {
            self.map_asks.entry(sender).or_insert(0);
        }
        // Before any message: a vote, an append or a TimeoutNow from a core that
        // has read at or written a version makes this core's later versions larger
        // (an out-of-range clock is ignored; the versions it stamps are refused
        // anyway).
        let _ = self.hlc.observe(batch.clock);
        for message in batch.messages {
            self.stats.peer_messages_received += 1;
            match message {
                PeerMessage::Raft { shard, message } => {
                    if message.from == from {
                        self.step_group(shard, message);
                    }
                }
                PeerMessage::Heartbeats { from: sender, to, items } => {
                    if sender != from || to != self.cfg.node {
                        continue;
                    }
                    for item in items {
                        let body = MessageBody::Heartbeat { commit: item.commit, read_round: item.read_round };
                        self.step_group(item.shard, Message { from, to, term: item.term, body });
                    }
                }
                PeerMessage::HeartbeatResponses { from: sender, to, items } => {
                    if sender != from || to != self.cfg.node {
                        continue;
                    }
                    for item in items {
                        let body = MessageBody::HeartbeatResponse { read_round: item.read_round };
                        self.step_group(item.shard, Message { from, to, term: item.term, body });
                    }
                }
                PeerMessage::Txn { from_shard, to_shard, message } => {
                    self.on_txn_message(from_shard, to_shard, message);
                }
                PeerMessage::Map { map } => self.offer_map(map),
                PeerMessage::MapRequest { epoch, sizes } => {
                    if self.groups.contains_key(&META_SHARD) {
                        self.meta_driver.sized(&sizes);
                    }
                    if self.map.epoch > epoch {
                        self.outbox.push_other(sender, PeerMessage::Map { map: (*self.map).clone() });
                    }
                }
                PeerMessage::MetaEdit { edit } => {
                    if self.groups.get(&META_SHARD).is_some_and(|g| g.is_leader) {
                        self.meta.push(edit);
                    }
                }
                // Hand-offs are between two cores of this node, as the map has them.
                PeerMessage::HandoffAsk { shard, since } => {
                    let asked = self.handoff_source(shard) == Some((sender.core, since));
                    if let Some(g) = self.groups.get_mut(&shard)
                        && from == self.cfg.node
                        && asked
                        && g.frozen
                    {
                        g.package_due = true;
                        self.dirty.insert(shard);
                    }
                }
            }
        }
    }

    fn step_group(&mut self, shard: ShardId, message: Message) {
        let Some(g) = self.groups.get_mut(&shard) else { return };
        // A stopped hand-off source hears nothing, nor does a target before the
        // map lists it.
        if g.frozen || g.parked {
            return;
        }
        // A malformed or misaddressed message from a peer is dropped; Raft retries.
        if g.raft.step(message).is_ok() {
            self.dirty.insert(shard);
        }
    }

    /// A client request. Answers at once when it cannot be served here (wrong
    /// shard, not the leader, busy, invalid); otherwise later, from
    /// [`Self::take_replies`].
    pub fn client_request(&mut self, client: ClientRef, request: Request) {
        let shard = request.shard;
        if let Err(invalid) = request.validate(&self.cfg.shard.limits) {
            return self.answer(client, Response::Outcome(invalid));
        }
        // A parked hand-off target serves nothing, stale reads included, until
        // the map that ends its hand-off.
        let stopped = self.groups.get(&shard).is_none_or(|g| g.frozen || g.parked);
        if stopped || !key_in_shard(&self.map, &request) {
            self.stats.redirects += 1;
            // A stopped hand-off source (or a parked target) names the leader
            // it last knew.
            let known = self.groups.get(&shard).map_or(0, |g| g.leader);
            let hint = if known != 0 && known != self.cfg.node {
                known
            } else {
                self.map.replicas(shard).first().map_or(0, |r| r.node)
            };
            return self.answer(client, Response::WrongShard { hint, epoch: self.map.epoch });
        }
        if self.requests_pending >= self.cfg.requests_pending_max {
            self.stats.busy += 1;
            return self.answer(client, Response::Busy);
        }
        match request.body {
            RequestBody::StaleRead(op) => {
                self.stats.stale_reads += 1;
                let g = &self.groups[&shard];
                let outcome = g.sm.read(&op);
                self.answer(client, Response::Outcome(outcome));
            }
            RequestBody::Read(op) => self.read(client, shard, op),
            RequestBody::Write { tag, op } => self.write(client, shard, tag, op),
            RequestBody::TxnRead { txn, op } => {
                self.stats.txn_reads += 1;
                self.txn_read(client, shard, txn, op)
            }
            RequestBody::TxnLock { txn, key } => {
                self.stats.txn_locks += 1;
                self.txn_lock(client, shard, txn, key)
            }
            RequestBody::TxnCommit { txn, tag, shards } => {
                self.stats.txn_commits += 1;
                self.txn_commit(client, shard, txn, tag, shards)
            }
            RequestBody::TxnAbort { txn } => self.txn_abort(client, shard, txn),
        }
    }

    fn read(&mut self, client: ClientRef, shard: ShardId, op: ReadOp) {
        match &op {
            ReadOp::Get { .. } => self.stats.gets += 1,
            ReadOp::Versions { .. } => self.stats.versions += 1,
            ReadOp::Scan { .. } => self.stats.scans += 1,
        }
        if let ReadOp::Get { at: Some(at), .. } | ReadOp::Scan { at: Some(at), .. } = &op {
            // A later write must get a version above the one read at: the leader's
            // clock moves past it. A version beyond the clock and the drift margin
            // would drag every later version along: refused.
            let limit = self.hlc.last().max(crate::kv::hlc::ts_of_physical_ms(self.now_ms)) + READ_AT_MARGIN_TS;
            if *at > limit {
                let message = format!("version {at} is in the future (the leader's clock is below {limit})");
                return self.answer(client, Response::Outcome(Outcome::invalid(message)));
            }
            let _ = self.hlc.observe(*at);
        }
        let g = self.groups.get_mut(&shard).expect("checked by the caller");
        if self.cfg.planted_bug == PlantedBug::ReadWithoutReadIndex {
            let outcome = g.sm.read(&op);
            return self.answer(client, Response::Outcome(outcome));
        }
        if !g.is_leader {
            self.stats.redirects += 1;
            let hint = g.leader;
            return self.answer(client, Response::NotLeader { hint });
        }
        let after = match &op {
            ReadOp::Get { at: Some(_), .. } | ReadOp::Scan { at: Some(_), .. } => g.raft.status().last_index,
            _ => 0,
        };
        g.reads_queued.push(PendingRead { client, op: ReadKind::Plain(op), after });
        self.requests_pending += 1;
        self.dirty.insert(shard);
    }

    fn write(&mut self, client: ClientRef, shard: ShardId, tag: WriteTag, op: WriteOp) {
        match &op {
            WriteOp::Put { .. } => self.stats.puts += 1,
            WriteOp::Delete { .. } => self.stats.deletes += 1,
            WriteOp::Cas { .. } => self.stats.cas += 1,
        }
        let stamp_ts = self.hlc.now(self.now_ms);
        let mut tag = tag;
        if self.cfg.planted_bug == PlantedBug::RetryAppliedTwice {
            // Every attempt looks like a new client's first write.
            tag = WriteTag { client: corekv_rpc::kv::ClientId::from_u128(u128::from(stamp_ts)), seq: 1, acked: 0 };
        }
        let g = &self.groups[&shard];
        if !g.is_leader {
            self.stats.redirects += 1;
            let hint = g.leader;
            return self.answer(client, Response::NotLeader { hint });
        }
        self.plain_write(client, shard, tag, op, stamp_ts);
    }

    /// Proposes a plain write whose key's lock this transaction-like write holds
    /// (`lock`), or which takes no lock.
    fn propose_write(&mut self, client: ClientRef, shard: ShardId, tag: WriteTag, op: WriteOp, lock: Option<TxnId>) {
        let stamp_ts = self.hlc.now(self.now_ms);
        let now_ms = self.now_ms;
        let g = self.groups.get_mut(&shard).expect("checked by the caller");
        let data = command::encode(&Command { stamp_ts, body: CommandBody::Write(WriteCommand { tag, op }) });
        let bytes = data.len() as u64 + ENTRY_OVERHEAD_BYTES;
        if self.proposed_bytes + bytes + ready_reserve_bytes(&self.cfg) > self.room_bytes {
            // The WAL's open batch could not take it before the next flush.
            self.stats.busy += 1;
            if let Some(id) = lock {
                g.locks.release(id, now_ms);
                self.lock_events(shard);
            }
            return self.answer(client, Response::Busy);
        }
        match g.raft.propose(data) {
            Ok((index, term)) => {
                self.proposed_bytes += bytes;
                self.stats.raft_proposals += 1;
                g.writes.insert(index, (term, client));
                if let Some(id) = lock {
                    g.txns.proposed.insert(index, id);
                }
                self.requests_pending += 1;
                self.dirty.insert(shard);
            }
            Err(e) => {
                if let Some(id) = lock {
                    g.locks.release(id, now_ms);
                    self.lock_events(shard);
                }
                let response = refusal(&e);
                if matches!(response, Response::Busy) {
                    self.stats.busy += 1;
                } else {
                    self.stats.redirects += 1;
                }
                self.answer(client, response);
            }
        }
    }

    fn answer(&mut self, client: ClientRef, response: Response) {
        if client == META_WRITER {
            return self.meta_answered(&response);
        }
        self.replies.push((client, response));
    }

    /// Answers a request that was counted in `requests_pending`.
    fn answer_pending(&mut self, client: ClientRef, response: Response) {
        self.requests_pending -= 1;
        if client == META_WRITER {
            return self.meta_answered(&response);
        }
        self.replies.push((client, response));
    }

    // ----- the iteration ---------------------------------------------------------

    /// Handles every group's Ready: messages to the outbox, durable parts to
    /// `storage`'s open batch, committed entries applied, reads served.
    pub fn process(&mut self, storage: &mut dyn CoreStorage) -> Result<(), NodeError> {
        self.install_handoffs(storage)?;
        let dirty = std::mem::take(&mut self.dirty);
        let reserve = ready_reserve_bytes(&self.cfg);
        let mut worked = false;
        for shard in dirty {
            if storage.room_bytes() < reserve && (!self.unsealed.is_empty() || self.records_unsealed) {
                // The open batch is nearly full: this group's Ready waits for the
                // next iteration, after the batch in flight completes.
                self.dirty.insert(shard);
                continue;
            }
            self.drain_txn_inbox();
            self.propose_batched(shard);
            self.ask_reads(shard);
            loop {
                self.offer_fresh_snapshot(shard, storage)?;
                let g = self.groups.get_mut(&shard).expect("dirty groups exist");
                if !g.raft.has_ready() {
                    break;
                }
                let rd = g.raft.ready();
                worked = true;
                self.handle_ready(shard, rd, storage)?;
            }
            self.serve_reads(shard);
            self.maybe_compact(shard, storage, false)?;
        }
        self.give_handoff_states(storage)?;
        self.compact_pinning(storage)?;
        if worked {
            self.stats.iterations += 1;
        }
        self.install_map(storage)?;
        self.meta_step();
        self.proposed_bytes = 0;
        self.room_bytes = storage.room_bytes();
        Ok(())
    }

    fn ask_reads(&mut self, shard: ShardId) {
        let g = self.groups.get_mut(&shard).expect("dirty groups exist");
        if g.reads_queued.is_empty() {
            return;
        }
        let reads = std::mem::take(&mut g.reads_queued);
        let ctx = g.next_read_ctx;
        match g.raft.read_index(ctx) {
            Ok(()) => {
                g.next_read_ctx += 1;
                g.reads_confirming.insert(ctx, reads);
            }
            Err(e) => {
                let response = refusal(&e);
                for r in reads {
                    self.answer_pending(r.client, response.clone());
                }
            }
        }
    }

    fn handle_ready(&mut self, shard: ShardId, rd: Ready, storage: &mut dyn CoreStorage) -> Result<(), NodeError> {
        // A snapshot from the leader is decoded before it is made durable: one that
        // does not decode stops this core now, but is not saved to stop every
        // restart too.
        let installed = match &rd.snapshot {
            Some(snap) => Some((restore_shard(self.cfg.shard, shard, snap)?, snap.data.len() as u64)),
            None => None,
        };
        let g = self.groups.get_mut(&shard).expect("known group");
        // Reads waiting for confirmation make any heartbeat round urgent: the round
        // a read waits for may be sent by this Ready or a later one (a new leader's
        // reads wait for its first commit).
        let urgent = !g.reads_confirming.is_empty();
        if let Some(soft) = rd.soft_state {
            if soft.leader != g.leader {
                tracing::debug!(shard, leader = soft.leader, role = ?soft.role, "leader changed");
            }
            g.leader = soft.leader;
            let was_leader = g.is_leader;
            // A stopped hand-off source never serves again.
            g.is_leader = soft.role == Role::Leader && !g.frozen;
            if g.is_leader && !was_leader {
                let _ = self.hlc.observe(g.sm.last_applied_version().max(g.sm.log_clock_ts()));
                g.transfer_cooldown_ticks = u64::from(self.cfg.raft.election_timeout_ticks);
                self.txn_became_leader(shard);
            } else if was_leader && !g.is_leader {
                self.txn_stepped_down(shard);
            }
        }
        let g = self.groups.get_mut(&shard).expect("known group");
        let must_persist = rd.must_persist();
        for m in rd.messages {
            route(&self.map, &mut self.outbox, shard, m, urgent);
        }
        // A Ready with no entries, no snapshot and no new term or vote only moves
        // the commit index, and safety never rests on a persisted commit index: its
        // record rides with the next batch and costs no fdatasync of its own. Its
        // held-back messages (acknowledgements of entries an earlier Ready wrote)
        // still wait for the group's earlier Readys to be durable.
        let commit_only = must_persist
            && rd.snapshot.is_none()
            && rd.entries.is_empty()
            && rd.hard_state.is_none_or(|hs| hs.term == g.hard_state.term && hs.vote == g.hard_state.vote);
        if let Some(hs) = rd.hard_state {
            g.hard_state = hs;
        }
        if commit_only && self.cfg.planted_bug != PlantedBug::AckBeforeFsync {
            if let Some(hard_state) = rd.hard_state {
                storage.append(&Record::HardState { group_id: u64::from(shard), hard_state })?;
            }
            self.persisted_lazily(shard, rd.number, rd.messages_after_persist);
        } else if must_persist {
            if let Some(snap) = &rd.snapshot {
                storage.save_snapshot(u64::from(shard), snap)?;
                let marker = SnapshotMarker { index: snap.meta.index, term: snap.meta.term };
                storage.append(&Record::SnapshotMarker { group_id: u64::from(shard), marker })?;
                g_mut(&mut self.groups, shard).marker_index = marker.index;
                // An installed snapshot replaces the whole log.
                storage.append(&Record::Truncate { group_id: u64::from(shard), from_index: snap.meta.index + 1 })?;
            }
            if !rd.entries.is_empty() {
                storage.append_entries(u64::from(shard), &rd.entries)?;
                self.stats.raft_entries_persisted += rd.entries.len() as u64;
                // Entries a replica that does not vote yet appends come from its
                // leader: a move's catch-up after the snapshot.
                if !self.groups[&shard].raft.conf().voters.contains(&self.cfg.node) {
                    self.stats.move_log_bytes += rd.entries.iter().map(|e| e.data.len() as u64).sum::<u64>();
                }
            }
            if let Some(hard_state) = rd.hard_state {
                storage.append(&Record::HardState { group_id: u64::from(shard), hard_state })?;
            }
            let mut messages_after_persist = rd.messages_after_persist;
            if self.cfg.planted_bug == PlantedBug::AckBeforeFsync {
                for m in std::mem::take(&mut messages_after_persist) {
                    route(&self.map, &mut self.outbox, shard, m, false);
                }
            }
            self.unsealed.push(Wait { shard, number: rd.number, messages_after_persist });
            g_mut(&mut self.groups, shard).persists_pending += 1;
        } else {
            for m in rd.messages_after_persist {
                route(&self.map, &mut self.outbox, shard, m, false);
            }
        }
        if let Some((sm, bytes)) = installed {
            // A replica started empty for a move, or one that does not vote yet
            // (a move's target restarted in its learner stage), receives what
            // the move transfers. A voter that fell behind the leader's log is
            // not moving. (The snapshot's configuration alone cannot tell: one
            // taken before this node left the group and came back names it.)
            let g = g_mut(&mut self.groups, shard);
            let first = std::mem::take(&mut g.awaits_first_snapshot);
            let moving_in = first || !g.raft.status().conf.voters.contains(&self.cfg.node);
            self.install(shard, sm, bytes);
            self.stats.snapshot_bytes_installed += bytes;
            if moving_in {
                self.stats.move_snapshot_bytes += bytes;
                self.stats.move_snapshots += 1;
            }
            // The size of what moved, once per move: a second snapshot to the
            // same target adds bytes moved, not size.
            if first {
                self.stats.move_store_bytes += self.groups[&shard].sm.store().bytes();
            }
        }
        for e in &rd.committed_entries {
            self.apply(shard, e)?;
        }
        self.wake_intent_waiters(shard);
        let g = self.groups.get_mut(&shard).expect("known group");
        for rs in rd.read_states {
            if let Some(reads) = g.reads_confirming.remove(&rs.ctx) {
                g.reads_confirmed.push_back((rs.index, reads));
            }
        }
        let mut dropped = Vec::new();
        for ctx in rd.dropped_reads {
            if let Some(reads) = g.reads_confirming.remove(&ctx) {
                dropped.extend(reads);
            }
        }
        let hint = g.leader;
        for r in dropped {
            self.answer_pending(r.client, Response::NotLeader { hint });
        }
        let g = self.groups.get_mut(&shard).expect("known group");
        if !g.is_leader && (!g.writes.is_empty() || g.reads_pending() > 0) {
            self.stepped_down(shard);
        }
        Ok(())
    }

    /// Ready `number` of `shard` needs no fdatasync of its own: it counts as
    /// persisted, and its held-back messages leave, once every earlier Ready of the
    /// group is durable (Readys are reported in order).
    fn persisted_lazily(&mut self, shard: ShardId, number: u64, messages_after_persist: Vec<Message>) {
        let g = g_mut(&mut self.groups, shard);
        if g.persists_pending == 0 {
            g.raft.on_persisted(number);
            self.dirty.insert(shard);
            for m in messages_after_persist {
                route(&self.map, &mut self.outbox, shard, m, false);
            }
            return;
        }
        let wait = Wait { shard, number, messages_after_persist };
        g.persists_pending += 1;
        if self.unsealed.iter().any(|w| w.shard == shard) {
            self.unsealed.push(wait); // a batch is due for the earlier one anyway
        } else {
            let (_, last) = self.sealed.back_mut().expect("a pending Ready is in a sealed batch");
            last.push(wait); // follows the batch in flight out
        }
    }

    /// This replica no longer leads: proposed writes may still commit under the next
    /// leader (their fate is unknown here), reads are certainly not served.
    fn stepped_down(&mut self, shard: ShardId) {
        let g = self.groups.get_mut(&shard).expect("known group");
        let hint = g.leader;
        let writes = std::mem::take(&mut g.writes);
        let mut reads: Vec<PendingRead> = std::mem::take(&mut g.reads_queued);
        for (_, batch) in std::mem::take(&mut g.reads_confirming) {
            reads.extend(batch);
        }
        for (_, batch) in std::mem::take(&mut g.reads_confirmed) {
            reads.extend(batch);
        }
        reads.append(&mut g.reads_after);
        for (_, (_, client)) in writes {
            self.answer_pending(client, Response::Outcome(Outcome::Indeterminate));
        }
        for r in reads {
            self.answer_pending(r.client, Response::NotLeader { hint });
        }
    }

    fn install(&mut self, shard: ShardId, sm: Shard, bytes: u64) {
        let g = self.groups.get_mut(&shard).expect("known group");
        g.sm = sm;
        g.applied_bytes_since_snapshot = 0;
        g.snapshot_bytes = bytes;
        self.stats.snapshots_installed += 1;
        tracing::debug!(shard, bytes, "snapshot installed");
    }

    fn apply(&mut self, shard: ShardId, e: &Entry) -> Result<(), NodeError> {
        let g = self.groups.get_mut(&shard).expect("known group");
        g.applied_bytes_since_snapshot += e.data.len() as u64 + 24;
        self.stats.raft_entries_applied += 1;
        let applied = if e.kind == EntryKind::Normal && !e.data.is_empty() {
            Some(g.sm.apply(e.index, &e.data).map_err(|source| NodeError::Apply { shard, source })?)
        } else {
            None
        };
        if let Some(applied) = &applied {
            self.after_apply(shard, e.index, applied);
            if shard == META_SHARD {
                self.meta_applied();
            }
        }
        let g = self.groups.get_mut(&shard).expect("known group");
        let Some((term, client)) = g.writes.remove(&e.index) else { return Ok(()) };
        let response = match applied {
            Some(Applied::Reply(outcome)) if term == e.term => Response::Outcome(outcome),
            // A prepared transaction holds the key: certainly not applied; the
            // client retries.
            Some(Applied::Blocked { .. }) if term == e.term => Response::Busy,
            // A decision (of a commit this client asked for): its reply.
            Some(Applied::Decided { reply: Some(reply), .. }) if term == e.term => Response::Outcome(reply),
            // Another leader's entry took the index: ours is gone for good.
            _ => Response::NotLeader { hint: g.leader },
        };
        self.answer_pending(client, response);
        Ok(())
    }

    fn serve_reads(&mut self, shard: ShardId) {
        let g = self.groups.get_mut(&shard).expect("known group");
        let applied = g.raft.status().applied;
        let mut confirmed = Vec::new();
        while let Some((index, _)) = g.reads_confirmed.front() {
            if *index > applied {
                break;
            }
            let (_, reads) = g.reads_confirmed.pop_front().expect("front exists");
            confirmed.extend(reads);
        }
        if !g.reads_after.is_empty() {
            confirmed.append(&mut g.reads_after);
        }
        for r in confirmed {
            if r.after > applied {
                self.groups.get_mut(&shard).expect("known group").reads_after.push(r);
            } else {
                self.serve_read(shard, r);
            }
        }
    }

    /// Snapshots the groups whose entries keep the WAL's oldest segment while the
    /// WAL holds more live segments than [`Self::wal_segments_allowed`], so that
    /// disk use stays bounded: a
    /// group that wrote a few entries and went quiet (the meta group, a shard
    /// nobody writes, a replica that moved away and back) would never reach its
    /// size threshold, and the segments go from the front only.
    fn compact_pinning(&mut self, storage: &mut dyn CoreStorage) -> Result<(), NodeError> {
        let mut taken = 0;
        for (group_id, needed) in storage.pinning_groups(self.wal_segments_allowed()) {
            if taken == FORCED_SNAPSHOTS_PER_ITERATION {
                break;
            }
            let Some(shard) = ShardId::try_from(group_id).ok().filter(|s| self.groups.contains_key(s)) else {
                continue;
            };
            // Only a snapshot that reaches `needed` helps: none is taken while the
            // last marker appended already does (it is on its way to disk), nor
            // while the group has not applied that far (a follower waiting for
            // its leader's commit), so a busy group is not snapshotted at every
            // iteration. A snapshot file restored at startup counts for nothing
            // here: its marker may have been lost with an unsynced batch.
            let g = &self.groups[&shard];
            if g.marker_index < needed
                && g.raft.log().applied() >= needed
                && self.maybe_compact(shard, storage, true)?
            {
                self.stats.snapshots_for_wal += 1;
                taken += 1;
            }
        }
        Ok(())
    }

    /// Live WAL segments this core allows before it snapshots the groups that
    /// keep the oldest one: room for every group's log to reach its
    /// [`compaction_threshold`] twice over (batch padding and hard states take
    /// WAL bytes too), plus the segment being filled, and never fewer than
    /// [`WAL_LIVE_SEGMENTS_MIN`]. So the threshold decides when a busy group
    /// snapshots, and the WAL stays bounded (by twice the core's data plus the
    /// configured log sizes) whatever the quiet groups do.
    pub fn wal_segments_allowed(&self) -> usize {
        let threshold = |g: &Group| compaction_threshold(self.cfg.snapshot_log_bytes, g);
        let log = self.groups.values().fold(0u64, |sum, g| sum.saturating_add(threshold(g))).saturating_mul(2);
        let segments = log.div_ceil(self.cfg.wal_segment_bytes.max(1)).saturating_add(1);
        usize::try_from(segments).unwrap_or(usize::MAX).max(WAL_LIVE_SEGMENTS_MIN)
    }

    /// Snapshots group `shard` when its log since the last snapshot reached its
    /// [`compaction_threshold`], or when `force`d (it holds WAL segments back).
    /// True when it took one.
    fn maybe_compact(&mut self, shard: ShardId, storage: &mut dyn CoreStorage, force: bool) -> Result<bool, NodeError> {
        let g = self.groups.get_mut(&shard).expect("known group");
        let threshold = compaction_threshold(self.cfg.snapshot_log_bytes, g);
        if g.applied_bytes_since_snapshot < threshold && !force {
            return Ok(false);
        }
        // A leader streaming its snapshot to a replica keeps the log after it: a
        // compaction now would leave the replica, once it installed the snapshot,
        // short of entries it needs, and it would need a newer snapshot, again and
        // again under a steady write load (a new replica that never catches up).
        // Bounded: past COMPACT_DEFER_MAX times the threshold it compacts anyway.
        let streaming = g.is_leader && g.raft.snapshot_streaming();
        if streaming && g.applied_bytes_since_snapshot < threshold.saturating_mul(COMPACT_DEFER_MAX) {
            return Ok(false);
        }
        g.applied_bytes_since_snapshot = 0;
        let data: Arc<[u8]> = Arc::from(g.sm.snapshot());
        g.snapshot_bytes = data.len() as u64;
        g.raft.compact(data.clone());
        if g.raft.has_ready() {
            // Transfers that waited for this snapshot started: their chunks go
            // out with the group's next Ready.
            self.dirty.insert(shard);
        }
        let st = g.raft.status();
        let meta = SnapshotMeta { index: st.snapshot_index, term: g.raft.log().snapshot_term(), conf: st.conf };
        let marker = SnapshotMarker { index: meta.index, term: meta.term };
        storage.save_snapshot(u64::from(shard), &Snapshot { meta, data })?;
        storage.append(&Record::SnapshotMarker { group_id: u64::from(shard), marker })?;
        g.marker_index = marker.index;
        self.stats.snapshots_taken += 1;
        Ok(true)
    }

    /// Answers a leader waiting to stream a snapshot to a replica (a move's new
    /// replica, one back from a long absence): with a fresh snapshot when the log
    /// since the last one holds [`fresh_snapshot_log_min`] bytes or more, so the
    /// replica receives the state as it is instead of an old state and the log
    /// after it; with the latest one otherwise, or when the compaction would cut
    /// log another follower still needs (one streaming the latest snapshot, or
    /// replaying the log after its own).
    fn offer_fresh_snapshot(&mut self, shard: ShardId, storage: &mut dyn CoreStorage) -> Result<(), NodeError> {
        let g = self.groups.get_mut(&shard).expect("known group");
        if !g.raft.snapshot_wanted() {
            return Ok(());
        }
        tracing::debug!(shard, "a transfer asks for a snapshot");
        if !g.raft.compaction_harmless()
            || g.applied_bytes_since_snapshot < fresh_snapshot_log_min(g)
            || !self.maybe_compact(shard, storage, true)?
        {
            let g = self.groups.get_mut(&shard).expect("known group");
            g.raft.send_latest_snapshot();
        }
        Ok(())
    }

    /// One frame per destination core: everything queued since the last call.
    pub fn take_frames(&mut self) -> Vec<(Replica, PeerBatch)> {
        let ticks = self.ticks;
        let asks: Vec<Replica> = self
            .map_asks
            .iter_mut()
            .filter(|(_, asked)| **asked == 0 || ticks >= **asked + MAP_ASK_INTERVAL_TICKS)
            .map(|(r, asked)| {
                *asked = ticks.max(1);
                *r
            })
            .collect();
        let epoch = self.map.epoch;
        for r in asks {
            self.outbox.push_other(r, PeerMessage::MapRequest { epoch, sizes: Vec::new() });
        }
        let boundary = std::mem::take(&mut self.heartbeat_boundary);
        let (mut batches, taken) = self.outbox.take(self.cfg.node, self.hlc.last(), boundary);
        for (_, b) in &mut batches {
            b.epoch = self.map.epoch;
            b.from_core = self.cfg.core;
        }
        self.stats.peer_frames_sent += taken.frames;
        self.stats.peer_messages_sent += taken.messages;
        self.stats.heartbeat_messages_sent += taken.heartbeat_messages;
        batches
    }

    /// Replies to clients since the last call.
    pub fn take_replies(&mut self) -> Vec<(ClientRef, Response)> {
        std::mem::take(&mut self.replies)
    }

    /// The driver is about to make the storage's open batch durable: the Readys in it
    /// form sealed batch `token`, reported with [`Self::on_durable`]. Tokens are
    /// reported in the order they were sealed.
    pub fn seal(&mut self) -> u64 {
        let token = self.next_seal;
        self.next_seal += 1;
        self.records_unsealed = false;
        self.sealed.push_back((token, std::mem::take(&mut self.unsealed)));
        if !self.drops_unsealed.is_empty() {
            self.drops_sealed.push_back((token, std::mem::take(&mut self.drops_unsealed)));
        }
        token
    }

    /// Sealed batch `token` is durable (written and fdatasynced): its Readys are
    /// persisted, and their held-back messages may leave.
    pub fn on_durable(&mut self, token: u64) {
        let (sealed, waits) = self.sealed.pop_front().expect("on_durable without a sealed batch");
        assert_eq!(sealed, token, "WAL batches must become durable in the order they were sealed");
        self.durable_seal = token;
        if self.drops_sealed.front().is_some_and(|(t, _)| *t == token) {
            let (_, drops) = self.drops_sealed.pop_front().expect("front exists");
            for shard in drops {
                self.drops_durable.push(shard);
                // Placed here again meanwhile: the new replica starts now.
                if self.map.core_of(shard, self.cfg.node) == Some(self.cfg.core) {
                    self.add_replica(shard);
                }
            }
        }
        for w in waits {
            let g = self.groups.get_mut(&w.shard).expect("waits name known groups");
            g.persists_pending -= 1;
            g.raft.on_persisted(w.number);
            for m in w.messages_after_persist {
                route(&self.map, &mut self.outbox, w.shard, m, false);
            }
            self.dirty.insert(w.shard);
        }
    }
}

fn g_mut(groups: &mut BTreeMap<ShardId, Group>, shard: ShardId) -> &mut Group {
    groups.get_mut(&shard).expect("known group")
}

/// What [`reconcile`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reconciled {
    /// The configuration is what the map wants, or the next step must wait.
    Nothing,
    /// A membership change was proposed.
    Proposed,
    /// This leader is not wanted: it hands leadership to a wanted voter first.
    Transferring,
}

/// How far behind the leader's log a learner may be and still be promoted: it
/// catches up the rest as a voter, but a learner still far behind would leave the
/// group one failure from unavailability.
const PROMOTE_LAG_ENTRIES_MAX: u64 = 64;

/// A leader's step towards the configuration the map wants for its shard, one
/// single-server change at a time (DESIGN §7): add every wanted replica as a
/// learner; promote each one that caught up; remove learners that are not wanted;
/// then, once every wanted replica votes, remove the voters that are not wanted,
/// itself last and only after handing leadership to a wanted voter. The
/// configuration never has fewer wanted voters than before, and a replica leaves
/// only when its replacement votes. Raft refuses a change while one is pending or
/// before the leader committed in its term: the next heartbeat interval tries
/// again, and a new leader picks up wherever the last one stopped.
fn reconcile(map: &ClusterMap, me: NodeId, g: &mut Group) -> Reconciled {
    let wanted: Vec<NodeId> = map.replicas(g.shard).iter().map(|r| r.node).collect();
    if wanted.is_empty() {
        return Reconciled::Nothing;
    }
    let st = g.raft.status();
    let conf = &st.conf;
    let change = if let Some(&add) = wanted.iter().find(|&&n| !conf.contains(n)) {
        Some(ConfChange::AddLearner(add))
    } else if let Some(&ready) = conf.learners.iter().find(|&&l| {
        wanted.contains(&l)
            && g.raft.progress(l).is_some_and(|p| {
                p.active_lately()
                    && p.match_index >= st.snapshot_index
                    && p.match_index + PROMOTE_LAG_ENTRIES_MAX >= st.last_index
            })
    }) {
        Some(ConfChange::Promote(ready))
    } else if let Some(&stray) = conf.learners.iter().find(|&&l| !wanted.contains(&l)) {
        Some(ConfChange::Remove(stray))
    } else if wanted.iter().all(|n| conf.voters.contains(n)) {
        match conf.voters.iter().copied().find(|v| !wanted.contains(v) && *v != me) {
            Some(leaving) => Some(ConfChange::Remove(leaving)),
            // A handover under way is left to finish (or time out): a second one
            // to another voter could start two elections.
            None if !wanted.contains(&me) && g.raft.transferee().is_some() => return Reconciled::Transferring,
            None if !wanted.contains(&me) => {
                // Not to a node handing its replica over: nobody there would campaign.
                let ready = |n: NodeId| caught_up(&g.raft, n) && map.handoff(g.shard, n).is_none();
                let to = wanted.iter().copied().find(|&n| ready(n)).unwrap_or(wanted[0]);
                let _ = g.raft.transfer_leader(to);
                tracing::debug!(shard = g.shard, to, "move: leadership handed over before leaving");
                return Reconciled::Transferring;
            }
            None => None,
        }
    } else {
        None
    };
    match change {
        Some(cc) if g.raft.propose_conf_change(cc).is_ok() => {
            tracing::debug!(shard = g.shard, change = ?cc, "move: configuration change proposed");
            Reconciled::Proposed
        }
        _ => Reconciled::Nothing,
    }
}

/// A replica of `shard` on this core, from its durable state.
fn new_group(cfg: &NodeCoreConfig, shard: ShardId, durable: DurableState) -> Result<Group, NodeError> {
    let sm = restore_shard(cfg.shard, shard, &durable.snapshot)?;
    let snapshot_bytes = durable.snapshot.data.len() as u64;
    let seed = cfg.seed ^ u64::from(shard).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut raft = RawNode::new(cfg.raft.clone(), durable, seed)?;
    if cfg.move_rate_bytes_per_sec > 0 {
        raft.limit_snapshot_sending();
    }
    raft.want_fresh_snapshots();
    let mut group = Group::new(shard, raft, sm);
    group.snapshot_bytes = snapshot_bytes;
    let st = group.raft.status();
    group.hard_state = HardState { term: st.term, vote: st.vote, commit: st.commit };
    Ok(group)
}

/// The log bytes applied since group `g`'s last snapshot that make a fresh one
/// worth taking before a transfer: it rewrites the whole shard on this core (a
/// serialization and an fsync on the core's thread), so a large shard takes one
/// only to save at least 1/64 of its size in log, not a few KiB.
fn fresh_snapshot_log_min(g: &Group) -> u64 {
    FRESH_SNAPSHOT_LOG_MIN.max(g.snapshot_bytes / 64)
}

/// The applied log bytes past which group `g` snapshots on its own: the
/// configured `snapshot_log_bytes`, or the size of its last snapshot when that is
/// larger. A snapshot rewrites the whole state, so a large shard snapshotting at
/// a small log size would write many times the bytes its clients wrote; this way
/// the snapshots cost at most as many bytes as the log they replace.
fn compaction_threshold(snapshot_log_bytes: u64, g: &Group) -> u64 {
    snapshot_log_bytes.max(g.snapshot_bytes)
}

/// The replica `preferred` has everything the leader has: leadership can move there
/// without a wait.
fn caught_up(raft: &RawNode, preferred: NodeId) -> bool {
    let last = raft.status().last_index;
    raft.progress(preferred).is_some_and(|p| p.active_lately() && p.match_index == last)
}

/// The key(s) of a request belong to its shard.
fn key_in_shard(map: &ClusterMap, request: &Request) -> bool {
    let key = match &request.body {
        RequestBody::Read(op) | RequestBody::StaleRead(op) => match op {
            ReadOp::Get { key, .. } | ReadOp::Versions { key } => key,
            // A scan covers a key range; each shard answers for its own keys in it.
            ReadOp::Scan { .. } => return true,
        },
        RequestBody::Write { op, .. } => op.key(),
        RequestBody::TxnRead { op, .. } => match op {
            corekv_rpc::kv::TxnReadOp::Get { key } | corekv_rpc::kv::TxnReadOp::GetForUpdate { key } => key,
            corekv_rpc::kv::TxnReadOp::Scan { .. } => return true,
        },
        RequestBody::TxnLock { key, .. } => key,
        // Every key listed must belong to the shard it is listed under.
        RequestBody::TxnCommit { shards, .. } => {
            return shards.iter().all(|s| {
                let keys = s.sets.reads.iter().map(|r| &r.key).chain(s.sets.writes.iter().map(|w| &w.key));
                keys.into_iter().all(|k| map.shard_of(k) == s.shard)
            });
        }
        RequestBody::TxnAbort { .. } => return true,
    };
    map.shard_of(key) == request.shard
}

/// The answer to a request Raft refused before proposing it (certainly not applied).
fn refusal(e: &ProposeError) -> Response {
    match e {
        ProposeError::NotLeader { leader } => Response::NotLeader { hint: *leader },
        _ => Response::Busy,
    }
}

fn route(map: &ClusterMap, outbox: &mut Outbox, shard: ShardId, m: Message, urgent: bool) {
    // A peer the map does not place this shard on gets nothing (membership changes
    // keep the map in step, issue 12).
    if let Some(core) = map.core_of(shard, m.to) {
        outbox.push(Replica { node: m.to, core }, shard, m, urgent);
    }
}

/// The shard state machine a snapshot holds (an empty one for the founding
/// snapshot at index 0).
fn restore_shard(config: ShardConfig, shard: ShardId, snap: &Snapshot) -> Result<Shard, NodeError> {
    if snap.data.is_empty() {
        return Ok(Shard::new(config));
    }
    Shard::restore(config, &snap.data).map_err(|source| NodeError::Snapshot { shard, source })
}

/// The state a group restarts from, or bootstraps with (appending the bootstrap
/// records to `storage`).
fn durable_state(
    shard: ShardId,
    voters: Vec<NodeId>,
    rec: GroupRecovery,
    storage: &mut dyn CoreStorage,
) -> Result<DurableState, NodeError> {
    let fresh = DurableState::bootstrap(voters);
    let log = match rec.log {
        // A replica that joins later: nothing to write until its leader feeds it.
        None if rec.snapshot.is_none() && fresh.entries.is_empty() => return Ok(fresh),
        None if rec.snapshot.is_none() => {
            let group = u64::from(shard);
            storage.append_entries(group, &fresh.entries)?;
            storage.append(&Record::HardState { group_id: group, hard_state: fresh.hard_state })?;
            return Ok(fresh);
        }
        log => log.unwrap_or_default(),
    };
    let snapshot = match rec.snapshot {
        Some(file) => file,
        None => fresh.snapshot,
    };
    let marker_index = log.snapshot.map_or(0, |m| m.index);
    if marker_index > snapshot.meta.index {
        return Err(NodeError::Recovery {
            shard,
            message: format!(
                "the WAL marks a snapshot at index {marker_index} but the snapshot file covers only {}",
                snapshot.meta.index
            ),
        });
    }
    // The log holds the file's last entry (same index and term): a compaction's
    // file, or an installed one the log agreed with up to its index.
    let agrees = log.entries.iter().any(|e| e.index == snapshot.meta.index && e.term == snapshot.meta.term);
    let mut entries: Vec<Entry> = log.entries.into_iter().filter(|e| e.index > snapshot.meta.index).collect();
    if let Some(first) = entries.first()
        && first.index != snapshot.meta.index + 1
    {
        return Err(NodeError::Recovery {
            shard,
            message: format!("the log resumes at {} after a snapshot at {}", first.index, snapshot.meta.index),
        });
    }
    if snapshot.meta.index > marker_index {
        // The snapshot file is newer than the WAL's marker: the batch with the
        // marker (an installed snapshot's, or a compaction's) was lost in a crash,
        // while the file, durable at once, survived. The group resumes from the
        // file, so the entries it appends next follow the file's index: without
        // the marker again before them, the WAL would hold them after a gap (its
        // own log may end below the file's index) and refuse to recover.
        let marker = SnapshotMarker { index: snapshot.meta.index, term: snapshot.meta.term };
        storage.append(&Record::SnapshotMarker { group_id: u64::from(shard), marker })?;
        if !agrees && !entries.is_empty() {
            // An installed snapshot's file whose truncation was lost with its
            // marker, over a log that disagrees at its index: the entries after
            // it are a stale leader's (terms below the snapshot's can follow it),
            // and would make the replica's last log term look older than it is
            // (a vote for a candidate that lacks committed entries). The install
            // replaced the whole log: so does the restart, durably.
            entries.clear();
            storage.append(&Record::Truncate { group_id: u64::from(shard), from_index: snapshot.meta.index + 1 })?;
        }
    }
    let hard_state = log.hard_state.unwrap_or_default();
    Ok(DurableState { hard_state, snapshot, entries })
}
