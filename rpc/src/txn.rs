//! Transaction wire types shared by clients and servers (DESIGN §8).
//!
//! A transaction attempt is named by a [`TxnId`] (its client and the attempt's
//! number on that client); its age is an [`Age`]: the start version, then the id,
//! smaller = older, so no two attempts are equal. A wait-die retry keeps the
//! start version of the first attempt and takes a new id, so it ages and
//! eventually wins.
//!
//! These are rkyv types like the rest of the crate; receivers validate before
//! reading a field.

// rkyv's derive emits resolver types whose fields carry no docs.
#![allow(missing_docs)]

use rkyv::{Archive, Deserialize, Serialize};

use crate::kv::{ClientId, OkReply, Outcome, Version};

/// One transaction attempt's identity.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash))]
pub struct TxnId {
    /// The client that runs it.
    pub client: ClientId,
    /// The attempt's number on that client, unique per client (starts at 1).
    pub attempt: u64,
}

impl std::fmt::Display for TxnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}-{}", self.client.as_u128(), self.attempt)
    }
}

/// A transaction's age: older (smaller) wins under wound-wait and waits under
/// wait-die. Ordered by start version, then id.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[rkyv(derive(Debug))]
pub struct Age {
    /// The start version (an HLC reading), kept across wait-die retries.
    pub start: Version,
    /// The attempt's id, which breaks ties.
    pub id: TxnId,
}

impl Age {
    /// True when `self` is older than `other` (it would win under wound-wait).
    pub fn older_than(&self, other: &Age) -> bool {
        self < other
    }
}

/// How a transaction's lock conflicts are settled (DESIGN §8).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum Policy {
    /// An older requester wounds (aborts) a younger holder that has not prepared; a
    /// younger requester waits.
    #[default]
    WoundWait,
    /// An older requester waits; a younger requester dies (aborts) and is retried
    /// with its original start version.
    WaitDie,
    /// Any conflict aborts the requester at once: the naive baseline.
    NoWait,
    /// Optimistic: reads take no locks; prepare locks the read and write sets and
    /// validates that every read version is still the latest.
    Occ,
}

impl Policy {
    /// Every policy, in the order the bench's tables list them.
    pub const ALL: [Policy; 4] = [Policy::NoWait, Policy::WaitDie, Policy::WoundWait, Policy::Occ];

    /// The policy's name on the command line and in JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::WoundWait => "wound-wait",
            Policy::WaitDie => "wait-die",
            Policy::NoWait => "no-wait",
            Policy::Occ => "occ",
        }
    }

    /// The policy named `name` (see [`Policy::name`]).
    pub fn parse(name: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.name() == name)
    }

    /// True for policies that take locks as the transaction runs (two-phase
    /// locking); OCC locks only at prepare.
    pub fn locks_early(&self) -> bool {
        !matches!(self, Policy::Occ)
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a transaction was aborted: the `reason` of an `aborted` answer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum AbortReason {
    /// An older transaction wounded it (wound-wait).
    Wounded,
    /// It was younger than a holder it conflicted with (wait-die).
    Died,
    /// A conflict under no-wait or between different policies, a participant voting
    /// no, or locks lost with a leader change.
    Conflict,
    /// OCC validation failed: a version read is no longer the latest.
    Validation,
    /// A lock wait or the transaction's lifetime ran out.
    Timeout,
    /// The client asked for it.
    Requested,
}

impl AbortReason {
    /// The reason's word in JSON and the bench's tables.
    pub fn word(&self) -> &'static str {
        match self {
            AbortReason::Wounded => "wounded",
            AbortReason::Died => "died",
            AbortReason::Conflict => "conflict",
            AbortReason::Validation => "validation",
            AbortReason::Timeout => "timeout",
            AbortReason::Requested => "requested",
        }
    }
}

impl std::fmt::Display for AbortReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.word())
    }
}

/// A transaction attempt as requests and prepare records carry it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TxnMeta {
    /// The attempt's id.
    pub id: TxnId,
    /// Its age (start version, id).
    pub age: Age,
    /// Its conflict policy.
    pub policy: Policy,
    /// The HLC reading when this attempt began (its lifetime runs from here).
    pub attempt_ts: u64,
}

/// A key read, with the version read: the newest version, tombstones included (0
/// when the key was never written or nothing is retained).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ReadItem {
    /// The key.
    pub key: Vec<u8>,
    /// The version read.
    pub version: Version,
}

/// A range read `[start, end)` (empty `end`: unbounded), served at `read_ts`: no
/// key in it may have a version above `read_ts` when the transaction prepares.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RangeItem {
    /// First key.
    pub start: Vec<u8>,
    /// End, exclusive; empty: unbounded.
    pub end: Vec<u8>,
    /// The version the range was read at.
    pub read_ts: Version,
}

impl RangeItem {
    /// True when `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && (self.end.is_empty() || key < self.end.as_slice())
    }
}

/// A write: `value` `None` is a delete (a tombstone, written only if the key is
/// live at commit).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct WriteItem {
    /// The key.
    pub key: Vec<u8>,
    /// The value; `None`: delete.
    pub value: Option<Vec<u8>>,
}

/// What a transaction does on one shard.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct TxnSets {
    /// Keys read, with versions.
    pub reads: Vec<ReadItem>,
    /// Ranges read.
    pub ranges: Vec<RangeItem>,
    /// Writes.
    pub writes: Vec<WriteItem>,
}

impl TxnSets {
    /// Number of keys and ranges.
    pub fn len(&self) -> usize {
        self.reads.len() + self.ranges.len() + self.writes.len()
    }

    /// True when nothing is read or written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A transaction's outcome.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Decision {
    /// Committed: every key written got exactly this version.
    Commit(Version),
    /// Aborted, for this reason: nothing written.
    Abort(AbortReason),
}

impl Decision {
    /// The client's reply for this decision.
    pub fn reply(&self) -> Outcome {
        match *self {
            Decision::Commit(version) => Outcome::Ok(OkReply::Written { version }),
            Decision::Abort(reason) => Outcome::Aborted { reason },
        }
    }
}

/// A participant's vote.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Vote {
    /// Prepared: the commit version must be at least `bound`.
    Yes {
        /// The lower bound.
        bound: Version,
    },
    /// Cannot commit.
    No {
        /// Why.
        reason: AbortReason,
    },
    /// The transaction is already resolved here.
    Decided(Decision),
}

/// A decision for one participant to apply.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ResolveItem {
    /// The transaction.
    pub txn: TxnId,
    /// Its decision.
    pub decision: Decision,
    /// When its attempt began (0 when unknown).
    pub attempt_ts: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(client: u128, attempt: u64) -> TxnId {
        TxnId { client: ClientId::from_u128(client), attempt }
    }

    #[test]
    fn age_orders_by_start_then_id() {
        let a = Age { start: 5, id: id(9, 1) };
        let b = Age { start: 6, id: id(1, 1) };
        let c = Age { start: 6, id: id(1, 2) };
        assert!(a.older_than(&b));
        assert!(b.older_than(&c));
        assert!(!c.older_than(&c));
    }

    #[test]
    fn policy_names_round_trip() {
        for p in Policy::ALL {
            assert_eq!(Policy::parse(p.name()), Some(p));
        }
        assert_eq!(Policy::parse("wound_wait"), None);
        assert_eq!(Policy::default(), Policy::WoundWait);
    }
}
