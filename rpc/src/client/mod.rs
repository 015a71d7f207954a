//! The client library (DESIGN §6): bootstraps from any node address, caches the
//! cluster map, routes each request to the owning core of its shard's leader,
//! follows `NotLeader` / `WrongShard` hints, retries with backoff under a
//! per-request deadline (default 5 s), and writes exactly once: every client object
//! has a random 128-bit id, every write a sequence number and the client's acked
//! prefix, and a retry reuses the write's tag.
//!
//! Two drivers of one set of decisions ([`core`], sans I/O):
//! - [`Client`]: async, for a glommio executor; many requests in flight on one
//!   connection per core, each flush of them one frame (the bench uses it);
//! - [`blocking::Client`]: the caller's thread, `std::net` (tools and tests).
//!
//! Results speak DESIGN §6's outcome words ([`KvError::word`]): a write that may or
//! may not have been applied is `indeterminate`, never "failed"; `unavailable`
//! means certainly not applied.

use std::fmt;
use std::time::Duration;

use crate::kv::{ClientId, NodeId, OkReply, Outcome, ReadOp, ScanItem, ShardId, Version};
use crate::map::CoreIndex;
use crate::node::{CoreStats, ShardStatus};
use crate::txn::AbortReason;

mod async_client;
pub mod blocking;
pub mod core;
pub mod txn;

pub use async_client::Client;

/// Default per-request deadline.
pub const DEADLINE_DEFAULT: Duration = Duration::from_secs(5);
/// Default wait for one attempt's answer before the request tries another replica:
/// well above a loaded leader's latency, below the deadline, so a hung node costs
/// one attempt, not the request.
pub const ATTEMPT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(1);
/// Default bound on making a connection (and its handshake).
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(1);
/// Default most requests one async client has in flight; beyond it a request waits
/// for a slot. Below the server's per-client reply table (1024 per shard), so the
/// replies a retry may need are kept.
pub const INFLIGHT_MAX_DEFAULT: usize = 1000;

/// How a client reaches the cluster and how long it tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Addresses (`HOST:PORT`, a node's core 0) to learn the cluster map from; any
    /// one that answers will do.
    pub cluster: Vec<String>,
    /// How long one request (retries included) may take.
    pub deadline: Duration,
    /// How long one attempt waits for its answer before another replica is tried.
    pub attempt_timeout: Duration,
    /// Bound on making a connection and its handshake.
    pub connect_timeout: Duration,
    /// Most requests in flight (async client).
    pub inflight_max: usize,
}

impl ClientConfig {
    /// The defaults, for `cluster`.
    pub fn new(cluster: Vec<String>) -> ClientConfig {
        ClientConfig {
            cluster,
            deadline: DEADLINE_DEFAULT,
            attempt_timeout: ATTEMPT_TIMEOUT_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            inflight_max: INFLIGHT_MAX_DEFAULT,
        }
    }
}

/// Parses `HOST:PORT[,HOST:PORT…]`; the error names the bad part.
pub fn parse_cluster(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!("empty address in cluster list {s:?}"));
        }
        let Some((host, port)) = part.rsplit_once(':') else {
            return Err(format!("address {part:?} has no port (expected HOST:PORT)"));
        };
        if host.is_empty() {
            return Err(format!("address {part:?} has no host (expected HOST:PORT)"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(format!("address {part:?} has a bad port {port:?} (expected 1-65535)")),
        }
        out.push(part.to_string());
    }
    Ok(out)
}

/// Why a request did not succeed, in DESIGN §6's outcome words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The key is absent or deleted (at the version asked); a delete wrote nothing.
    NotFound,
    /// A compare-and-set found another version: `current` (0 when absent or deleted).
    VersionMismatch {
        /// The key's version when the cas was applied.
        current: Version,
    },
    /// The version asked for is older than the retained history.
    Compacted,
    /// Certainly not applied: no leader reached before the deadline, busy until the
    /// deadline, or refused before proposal.
    Unavailable {
        /// What the client saw last.
        reason: String,
    },
    /// A write that may or may not have been applied.
    Indeterminate {
        /// What the client saw last.
        reason: String,
    },
    /// Bad input; the message says what is wrong.
    Invalid {
        /// What is wrong.
        message: String,
    },
    /// A transaction was aborted: certainly not committed.
    Aborted {
        /// Why.
        reason: AbortReason,
    },
}

impl KvError {
    /// DESIGN §6's word: `not_found`, `version_mismatch`, `compacted`,
    /// `unavailable`, `indeterminate`, `invalid` or `aborted`.
    pub fn word(&self) -> &'static str {
        match self {
            KvError::NotFound => "not_found",
            KvError::VersionMismatch { .. } => "version_mismatch",
            KvError::Compacted => "compacted",
            KvError::Unavailable { .. } => "unavailable",
            KvError::Indeterminate { .. } => "indeterminate",
            KvError::Invalid { .. } => "invalid",
            KvError::Aborted { .. } => "aborted",
        }
    }

    /// A definite answer (the operation certainly did or did not happen, and the
    /// client knows which).
    pub fn is_definite(&self) -> bool {
        !matches!(self, KvError::Unavailable { .. } | KvError::Indeterminate { .. })
    }
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::NotFound => f.write_str("not found"),
            KvError::VersionMismatch { current: 0 } => f.write_str("version mismatch: the key is absent"),
            KvError::VersionMismatch { current } => write!(f, "version mismatch: current version {current}"),
            KvError::Compacted => f.write_str("compacted: that version is older than the retained history"),
            KvError::Unavailable { reason } => write!(f, "unavailable (certainly not applied): {reason}"),
            KvError::Indeterminate { reason } => {
                write!(f, "indeterminate (may or may not have been applied): {reason}")
            }
            KvError::Invalid { message } => write!(f, "invalid: {message}"),
            KvError::Aborted { reason } => write!(f, "aborted ({reason}): the transaction did not commit"),
        }
    }
}

impl std::error::Error for KvError {}

/// A value read, with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    /// The version read.
    pub version: Version,
    /// Its value.
    pub value: Vec<u8>,
}

/// One entry of a key's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionEntry {
    /// The version written.
    pub version: Version,
    /// A tombstone (a delete).
    pub deleted: bool,
    /// The value written (empty for a tombstone).
    pub value: Vec<u8>,
}

/// Live keys of a range, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    /// At most the limit asked for.
    pub items: Vec<ScanItem>,
    /// More live keys of the range follow the last item.
    pub more: bool,
}

/// The whole cluster as its cores report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The cluster's id.
    pub cluster_id: u64,
    /// The client's cluster-map epoch.
    pub epoch: u64,
    /// Every node of the map, in id order.
    pub nodes: Vec<NodeStatus>,
}

/// One node's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node's id.
    pub id: NodeId,
    /// Core 0's address.
    pub addr: String,
    /// Every core of the node.
    pub cores: Vec<CoreStatus>,
}

/// One core's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreStatus {
    /// The core's index.
    pub core: CoreIndex,
    /// Its address.
    pub addr: String,
    /// Why it did not answer (`None` when it did).
    pub error: Option<String>,
    /// Its counters.
    pub stats: Option<CoreStats>,
    /// The shard replicas it holds.
    pub shards: Vec<ShardStatus>,
}

/// A fresh random client id (DESIGN §6: 128 random bits per client object).
pub fn random_client_id() -> ClientId {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: time, pid and a process-wide counter still make ids
        // that do not collide between the clients of one machine.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mixed = nanos ^ (u128::from(std::process::id()) << 96) ^ (u128::from(count) << 64);
        bytes = mixed.to_be_bytes();
    }
    ClientId(bytes)
}

/// A write's answer as a version.
pub(crate) fn written(outcome: Outcome) -> Result<Version, KvError> {
    match outcome {
        Outcome::Ok(OkReply::Written { version }) => Ok(version),
        Outcome::Ok(other) => {
            Err(KvError::Indeterminate { reason: format!("the server answered a write with {other:?}") })
        }
        other => Err(definite_error(other)),
    }
}

/// A get's answer.
pub(crate) fn got(outcome: Outcome) -> Result<Got, KvError> {
    match outcome {
        Outcome::Ok(OkReply::Value { version, value }) => Ok(Got { version, value }),
        other => Err(unexpected_read(other)),
    }
}

/// A versions answer.
pub(crate) fn version_list(outcome: Outcome) -> Result<Vec<VersionEntry>, KvError> {
    match outcome {
        Outcome::Ok(OkReply::Versions { versions, .. }) => Ok(versions
            .into_iter()
            .map(|v| VersionEntry { version: v.version, deleted: v.deleted, value: v.value })
            .collect()),
        other => Err(unexpected_read(other)),
    }
}

fn unexpected_read(outcome: Outcome) -> KvError {
    match outcome {
        Outcome::Ok(other) => KvError::Unavailable { reason: format!("the server answered a read with {other:?}") },
        other => definite_error(other),
    }
}

pub(crate) fn definite_error(outcome: Outcome) -> KvError {
    match outcome {
        Outcome::NotFound => KvError::NotFound,
        Outcome::VersionMismatch { current } => KvError::VersionMismatch { current },
        Outcome::Compacted => KvError::Compacted,
        Outcome::Unavailable => {
            KvError::Unavailable { reason: "the shard refused the request before proposing it".into() }
        }
        Outcome::Indeterminate => {
            KvError::Indeterminate { reason: "the shard no longer knows this write's outcome".into() }
        }
        Outcome::Invalid { message } => KvError::Invalid { message },
        Outcome::Aborted { reason } => KvError::Aborted { reason },
        Outcome::Ok(other) => KvError::Unavailable { reason: format!("unexpected answer {other:?}") },
    }
}

/// A scan across every shard (DESIGN §6: scatter-gather, merged in order), sans
/// I/O. Each shard is asked until it has given `limit` live keys of the range or
/// has none left; then the answers are merged and cut to `limit`.
#[derive(Debug, Clone)]
pub struct ScanPlan {
    end: Vec<u8>,
    limit: u32,
    shards: Vec<ShardScan>,
}

#[derive(Debug, Clone)]
struct ShardScan {
    shard: ShardId,
    from: Vec<u8>,
    items: Vec<ScanItem>,
    done: bool,
    more: bool,
}

impl ScanPlan {
    /// A scan of `[start, end)` (empty `end`: no bound), at most `limit` keys, over
    /// `shard_count` shards.
    pub fn new(shard_count: u32, start: &[u8], end: &[u8], limit: u32) -> ScanPlan {
        let shards = (0..shard_count)
            .map(|shard| ShardScan { shard, from: start.to_vec(), items: Vec::new(), done: false, more: false })
            .collect();
        ScanPlan { end: end.to_vec(), limit, shards }
    }

    /// The requests still to make: one per shard not yet done.
    pub fn pending(&self) -> Vec<(ShardId, ReadOp)> {
        self.pending_from()
            .into_iter()
            .map(|(shard, start, limit)| (shard, ReadOp::Scan { start, end: self.end.clone(), limit, at: None }))
            .collect()
    }

    /// [`ScanPlan::pending`] as (shard, first key, limit); the end is
    /// [`ScanPlan::end`].
    pub fn pending_from(&self) -> Vec<(ShardId, Vec<u8>, u32)> {
        self.shards
            .iter()
            .filter(|s| !s.done)
            .map(|s| (s.shard, s.from.clone(), self.limit.saturating_sub(s.items.len() as u32).max(1)))
            .collect()
    }

    /// `shard`'s answer to its pending request.
    pub fn on_outcome(&mut self, shard: ShardId, outcome: Outcome) -> Result<(), KvError> {
        let limit = self.limit as usize;
        let Some(s) = self.shards.iter_mut().find(|s| s.shard == shard && !s.done) else {
            return Ok(());
        };
        match outcome {
            Outcome::Ok(OkReply::Scan { items, resume } | OkReply::TxnScan { items, resume, .. }) => {
                s.items.extend(items);
                match resume {
                    Some(next) if s.items.len() < limit => {
                        if next <= s.from {
                            return Err(KvError::Unavailable {
                                reason: format!("shard {shard} answered a scan without progress"),
                            });
                        }
                        s.from = next;
                    }
                    Some(_) => {
                        s.done = true;
                        s.more = true;
                    }
                    None => s.done = true,
                }
                Ok(())
            }
            other => Err(unexpected_read(other)),
        }
    }

    /// Every shard has answered.
    pub fn is_done(&self) -> bool {
        self.shards.iter().all(|s| s.done)
    }

    /// The range asked for ends here (empty: unbounded).
    pub fn end(&self) -> &[u8] {
        &self.end
    }

    /// The merged page.
    pub fn finish(self) -> ScanPage {
        let mut more = self.shards.iter().any(|s| s.more);
        let mut items: Vec<ScanItem> = self.shards.into_iter().flat_map(|s| s.items).collect();
        items.sort_by(|a, b| a.key.cmp(&b.key));
        if items.len() > self.limit as usize {
            items.truncate(self.limit as usize);
            more = true;
        }
        ScanPage { items, more }
    }
}

/// A read-write transaction's scan page with its own writes laid over it:
/// within the part of `[start, end)` the page covers (up to its last key when
/// more follow), a put of the transaction shows with version 0 and a delete hides
/// the key; then the page is cut to `limit`.
pub fn overlay_own_writes<'a>(
    page: ScanPage,
    own: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    limit: u32,
) -> ScanPage {
    let covered_to = if page.more { page.items.last().map(|i| i.key.clone()) } else { None };
    let mut merged: std::collections::BTreeMap<Vec<u8>, ScanItem> =
        page.items.into_iter().map(|i| (i.key.clone(), i)).collect();
    for (key, value) in own {
        if page.more && covered_to.as_deref().is_none_or(|last| key > last) {
            break;
        }
        match value {
            Some(value) => {
                merged.insert(key.to_vec(), ScanItem { key: key.to_vec(), version: 0, value: value.to_vec() });
            }
            None => {
                merged.remove(key);
            }
        }
    }
    let mut items: Vec<ScanItem> = merged.into_values().collect();
    let mut more = page.more;
    if items.len() > limit as usize {
        items.truncate(limit as usize);
        more = true;
    }
    ScanPage { items, more }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_lists_parse_and_bad_parts_are_named() {
        assert_eq!(parse_cluster("127.0.0.1:7100, 10.0.0.2:7200").unwrap(), ["127.0.0.1:7100", "10.0.0.2:7200"]);
        assert!(parse_cluster("127.0.0.1").unwrap_err().contains("no port"));
        assert!(parse_cluster("a:1,,b:2").unwrap_err().contains("empty"));
        assert!(parse_cluster("h:0").unwrap_err().contains("bad port"));
        assert!(parse_cluster(":80").unwrap_err().contains("no host"));
        assert!(parse_cluster("[::1]:7100").is_ok());
    }

    #[test]
    fn client_ids_differ() {
        assert_ne!(random_client_id(), random_client_id());
    }

    fn item(key: &str) -> ScanItem {
        ScanItem { key: key.as_bytes().to_vec(), version: 1, value: vec![] }
    }

    #[test]
    fn scan_merges_shards_in_key_order_and_cuts_to_the_limit() {
        let mut plan = ScanPlan::new(3, b"a", b"z", 3);
        assert_eq!(plan.pending().len(), 3);
        plan.on_outcome(0, Outcome::Ok(OkReply::Scan { items: vec![item("b"), item("e")], resume: None })).unwrap();
        // Shard 1 stopped early (keys examined) with one item: asked again.
        plan.on_outcome(1, Outcome::Ok(OkReply::Scan { items: vec![item("c")], resume: Some(b"d".to_vec()) })).unwrap();
        plan.on_outcome(2, Outcome::Ok(OkReply::Scan { items: vec![], resume: None })).unwrap();
        let pending = plan.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0], (1, ReadOp::Scan { start: b"d".to_vec(), end: b"z".to_vec(), limit: 2, at: None }));
        assert!(!plan.is_done());
        plan.on_outcome(1, Outcome::Ok(OkReply::Scan { items: vec![item("d")], resume: None })).unwrap();
        assert!(plan.is_done());
        let page = plan.finish();
        let keys: Vec<_> = page.items.iter().map(|i| i.key.clone()).collect();
        assert_eq!(keys, [b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]);
        assert!(page.more, "e is left over");
    }

    #[test]
    fn scan_reports_more_when_a_shard_filled_the_limit_with_keys_left() {
        let mut plan = ScanPlan::new(1, b"", b"", 2);
        plan.on_outcome(
            0,
            Outcome::Ok(OkReply::Scan { items: vec![item("a"), item("b")], resume: Some(b"c".to_vec()) }),
        )
        .unwrap();
        assert!(plan.is_done());
        let page = plan.finish();
        assert_eq!(page.items.len(), 2);
        assert!(page.more);
        let mut exact = ScanPlan::new(1, b"", b"", 2);
        exact.on_outcome(0, Outcome::Ok(OkReply::Scan { items: vec![item("a")], resume: None })).unwrap();
        assert!(!exact.finish().more);
    }

    #[test]
    fn own_writes_lie_over_the_covered_part_of_a_page_only() {
        let page = |keys: &[&str], more| ScanPage { items: keys.iter().map(|k| item(k)).collect(), more };
        let keys = |p: &ScanPage| p.items.iter().map(|i| String::from_utf8(i.key.clone()).unwrap()).collect::<Vec<_>>();
        let own: Vec<(&[u8], Option<&[u8]>)> =
            vec![(b"a", Some(b"1")), (b"c", None), (b"d", Some(b"4")), (b"q", Some(b"9"))];
        // The whole range was read: every own write shows, the delete hides c.
        let all = overlay_own_writes(page(&["b", "c", "e"], false), own.clone().into_iter(), 10);
        assert_eq!(keys(&all), ["a", "b", "d", "e", "q"]);
        assert_eq!(all.items[0].version, 0);
        assert_eq!(all.items[1].version, 1);
        assert!(!all.more);
        // More follow e: q belongs to a later page, and the cut to the limit says more.
        let part = overlay_own_writes(page(&["b", "c", "e"], true), own.clone().into_iter(), 3);
        assert_eq!(keys(&part), ["a", "b", "d"]);
        assert!(part.more);
        let part = overlay_own_writes(page(&["b", "c", "e"], true), own.into_iter(), 10);
        assert_eq!(keys(&part), ["a", "b", "d", "e"]);
        assert!(part.more);
    }

    #[test]
    fn scan_without_progress_is_an_error_not_a_loop() {
        let mut plan = ScanPlan::new(1, b"m", b"", 5);
        let err = plan.on_outcome(0, Outcome::Ok(OkReply::Scan { items: vec![], resume: Some(b"a".to_vec()) }));
        assert_eq!(err.unwrap_err().word(), "unavailable");
    }

    #[test]
    fn outcomes_map_to_words() {
        assert_eq!(written(Outcome::Ok(OkReply::Written { version: 3 })), Ok(3));
        assert_eq!(written(Outcome::VersionMismatch { current: 0 }), Err(KvError::VersionMismatch { current: 0 }));
        assert_eq!(written(Outcome::Indeterminate).unwrap_err().word(), "indeterminate");
        assert_eq!(got(Outcome::NotFound), Err(KvError::NotFound));
        assert_eq!(got(Outcome::Compacted), Err(KvError::Compacted));
        assert_eq!(got(Outcome::invalid("x")), Err(KvError::Invalid { message: "x".into() }));
        assert!(KvError::NotFound.is_definite());
        assert!(!KvError::Indeterminate { reason: String::new() }.is_definite());
        assert_eq!(KvError::VersionMismatch { current: 7 }.to_string(), "version mismatch: current version 7");
    }
}
