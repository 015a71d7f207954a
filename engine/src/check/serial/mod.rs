//! Serializability checker for recorded transaction histories (DESIGN §8,
//! §11), in the style of Elle: pure functions, no I/O, no clocks, no threads,
//! no randomness. It runs on the caller's thread (no core affinity, nothing
//! shared) and its answers depend only on its inputs.
//!
//! # What it decides
//!
//! Whether the committed transactions of a history ([`Txn`]) can be put in one
//! serial order in which every read sees exactly the version it recorded, with
//! each key's versions installed in increasing version order (DESIGN §6: the
//! version order *is* the order of a key's writes). With
//! [`SerialOptions::strict`], that order must also respect real time among
//! read-write transactions: one that returned committed before another was
//! invoked comes first (DESIGN §8 promises strict serializability among
//! read-write transactions and plain operations). Read-only transactions
//! serialize at their snapshot, not in real time, and must read exactly the
//! state at it.
//! Plain operations are fed as one-key transactions.
//!
//! Because every version names its writer (below), the version order of every
//! key is known, and the question reduces to Adya's: is the direct
//! serialization graph acyclic? No search over orders is needed, so the
//! checker never runs out of budget on a history it can resolve; the one thing
//! it may be unable to decide is *who* wrote a version (see "Undecided").
//!
//! # Version resolution
//!
//! Each (key, version > 0) read must have exactly one writer: a committed
//! transaction with that commit version that wrote the key, or a transaction of
//! unknown outcome whose write of that key (same value hash) was observed at
//! that version. An observed unknown transaction committed, at that version,
//! and all its writes carry it; its own reads then count too, and may reveal
//! further unknown writers (a worklist runs this to a fixpoint). Unknown
//! transactions never observed are dropped: they may or may not have
//! committed, and dropping one never hides a cycle among the others (every
//! dependency through it is implied by the version order without it). Aborted
//! transactions are dropped after the aborted-read check, and so are the reads
//! of dropped transactions: serializability speaks of committed transactions
//! only.
//!
//! Before any graph is built, these are anomalies of their own:
//! - **duplicate version**: two live transactions wrote one key at one version;
//! - **garbage read**: a version nobody could have written;
//! - **value mismatch**: the value read differs from the writer's (a tombstone
//!   read as a value or the other way round included; version 0 is the initial
//!   state, absent);
//! - **aborted read** (G1a): the value read was written by an aborted
//!   transaction (found by its value hash; a tombstone carries none);
//! - **future read**: a transaction read its own commit version of a key.
//!   Reads of a transaction's own writes are served by the client and never
//!   recorded, so a recorded one came from the store, which showed the
//!   transaction its own write as if installed before it: no serial order
//!   explains that;
//! - **unknown at two versions**: the only possible writer of a value, of
//!   unknown outcome, was observed at another version already.
//!
//! # Read-only snapshots
//!
//! A read-only transaction with snapshot S must read, for each key, the newest
//! version ≤ S among the known writers (committed and observed), 0 if none.
//! An older one is a **stale snapshot** (a fractured read when it saw another
//! write of the same transaction), one above S a **read above snapshot**. A
//! writer of unknown outcome that nobody observed is not known, and cannot make
//! a snapshot stale: it may never have committed.
//!
//! # The graph
//!
//! Nodes are the live transactions (read-only ones and read-write ones that
//! only read included). Edges, self-edges skipped (a read-modify-write's `rw`
//! edge leads back to itself):
//! - `ww`: the writer of a key's version → the writer of its next version;
//! - `wr`: the writer of a version → each reader of it;
//! - `rw`: each reader of a version → the writer of the key's next version;
//! - with `strict`, real time: T1 → T2 for read-write transactions with
//!   T1's return before T2's invocation, T1 committed (one of unknown
//!   outcome may have committed after its client gave up: like an
//!   indeterminate write in the linearizability checker, it has no deadline,
//!   though it still comes after what returned before it began). Quadratic
//!   if drawn directly, so each committed return is a barrier node: a chain
//!   of barriers in return-time order, an edge from each transaction to its
//!   return's barrier, and one from the last barrier before each invocation
//!   to that transaction. T1 reaches T2 through the barriers exactly when T1
//!   returned before T2 was invoked, with O(n) nodes and edges; cycles are
//!   reported with each barrier run collapsed to one `rt` edge.
//!
//! # Cycles
//!
//! An iterative Tarjan pass over the whole graph finds its strongly connected
//! components; none of more than one node means serializable. Otherwise the
//! checker reports the most specific anomaly it can, trying edge sets in turn,
//! data dependencies before real time: `ww` alone (G0), `ww`+`wr` (G1c), then
//! all three, where it first looks for a cycle with exactly one `rw` edge
//! (G-single: for each `rw` edge u → v inside a component, a breadth-first
//! search from v back to u over `ww`/`wr`, under a budget of
//! [`G_SINGLE_EDGE_VISITS_MAX`] edge visits) and otherwise takes a shortest
//! cycle (G2 when it has two or more `rw` edges). Only when the data
//! dependencies are acyclic are real-time edges added, and a cycle found then
//! is a strict-serializability violation ([`Anomaly::needs_real_time`]).
//! Shortest cycles are found by 0-1 breadth-first search (barrier hops cost
//! nothing) from a few nodes of the component ([`CYCLE_STARTS_MAX`]).
//!
//! G0 cannot arise from a well-formed history: a transaction writes all its
//! keys at its one commit version, so `ww` edges follow commit versions. The
//! classification is still tested on hand-built graphs.
//!
//! # Undecided
//!
//! When two or more unobserved transactions of unknown outcome wrote the value
//! read (two unknown deletes of one key, or a value hash written twice), the
//! writer of that version cannot be named. The checker then builds the graph
//! without that read's `wr` edge (its `rw` edge depends only on the version):
//! a cycle found is still a real anomaly, but if none is found the answer is
//! [`SerialVerdict::Undecided`], which callers must treat as a failure to
//! check, never as a pass. Recorders avoid it by writing distinct values.
//!
//! # Complexity
//!
//! With n transactions, r reads and w writes: resolution is O(r + w) expected
//! (hash maps; the unknown-writer worklist revisits an observation once per
//! candidate writer, one when values are distinct), sorting each key's versions
//! and the return times O((n + w) log(n + w)), and edge construction
//! O(r log w): e ≤ w + 2r + 3n edges over at most 2n nodes. The Tarjan pass is
//! O(n + e). A serializable history costs exactly that: O((n + r + w) log(n +
//! r + w)) time and O(n + r + w) memory. A history with a cycle costs up to
//! six more passes and a few breadth-first searches, plus the G-single search,
//! bounded by [`G_SINGLE_EDGE_VISITS_MAX`] (beyond it, the shortest cycle is
//! reported as it is classified).
//!
//! # Limits
//!
//! - Reads a transaction makes of its own writes are served by the client and
//!   must not be recorded: a recorded one reads the transaction's own commit
//!   version, a future read.
//! - A recorder must record only writes that created a version: a delete that
//!   found nothing writes no tombstone, and recording one would make readers
//!   of the older version look stale.
//! - One anomaly is reported, the first found, not all of them.

mod graph;
mod resolve;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_gen;
#[cfg(test)]
mod tests_oracle;
#[cfg(test)]
mod tests_prop;

use std::fmt;

pub use super::Version;

/// Shortest-cycle searches run from at most this many nodes of a component:
/// enough to find a short cycle in practice, while the cost stays a small
/// multiple of one pass over the graph.
pub const CYCLE_STARTS_MAX: usize = 4;

/// Edge visits the G-single search may spend over all `rw` edges of a
/// history with a cycle: a fraction of a second (a quarter in the test
/// profile, measured on 200k nodes); beyond it the checker reports the
/// shortest cycle it finds, classified by its own edges.
pub const G_SINGLE_EDGE_VISITS_MAX: u64 = 20_000_000;

/// A transaction's id as the recorder names it; unique in a history.
pub type TxnId = u64;

/// Read-write or read-only (DESIGN §8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnKind {
    /// Locks or validates; strictly serializable among its kind.
    ReadWrite,
    /// Reads the snapshot at `snapshot` without locks and writes nothing.
    ReadOnly {
        /// The version the transaction read at.
        snapshot: Version,
    },
}

/// One read a transaction made of a key (not of its own writes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Read {
    /// The key read.
    pub key: Vec<u8>,
    /// The version observed: 0 when the key was never written, a tombstone's
    /// version when it was deleted.
    pub version: Version,
    /// A hash of the value read; `None` when absent or deleted.
    pub value: Option<u64>,
}

/// One write of a transaction; it gets the transaction's commit version.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Write {
    /// The key written.
    pub key: Vec<u8>,
    /// A hash of the value written; `None` for a delete (a tombstone).
    pub value: Option<u64>,
}

/// What the client learned of the transaction's fate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnOutcome {
    /// Committed; every key written got `version`. Ignored (any value will
    /// do) for a transaction that wrote nothing.
    Committed {
        /// The commit version.
        version: Version,
    },
    /// Certainly did not commit.
    Aborted,
    /// Indeterminate or never returned: may have committed, at a version
    /// nobody was told.
    Unknown,
}

/// One recorded transaction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Txn {
    /// Unique in the history.
    pub id: TxnId,
    /// Read-write or read-only.
    pub kind: TxnKind,
    /// Reads, in any order.
    pub reads: Vec<Read>,
    /// Writes, at most one per key.
    pub writes: Vec<Write>,
    /// Its fate.
    pub outcome: TxnOutcome,
    /// When the client began it (any monotone unit; only compared).
    pub invoke_time: u64,
    /// When the client learned its outcome; `None` if it never did.
    pub return_time: Option<u64>,
}

/// What the checker demands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SerialOptions {
    /// Also require real-time order among read-write transactions (strict
    /// serializability).
    pub strict: bool,
}

impl Default for SerialOptions {
    /// Strict: what corekv promises for read-write transactions (DESIGN §8).
    fn default() -> SerialOptions {
        SerialOptions { strict: true }
    }
}

/// The kind of an [`Anomaly`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnomalyKind {
    /// A read of a version nobody could have written.
    GarbageRead,
    /// A read whose value differs from what the version's writer wrote.
    ValueMismatch,
    /// G1a: a read of a value written by an aborted transaction.
    AbortedRead,
    /// A read of the reader's own commit version of a key.
    FutureRead,
    /// Two transactions wrote one key at one version.
    DuplicateVersion,
    /// A transaction of unknown outcome observed at two versions.
    UnknownAtTwoVersions,
    /// A read-only transaction read a version above its snapshot.
    ReadAboveSnapshot,
    /// A read-only transaction read an older version than the newest at or
    /// below its snapshot (a fractured read when it saw the newer writer's
    /// other writes).
    StaleSnapshot,
    /// A cycle of `ww` edges only.
    G0,
    /// A cycle of `ww` and `wr` edges with at least one `wr`.
    G1c,
    /// A cycle with exactly one `rw` edge.
    GSingle,
    /// A cycle with two or more `rw` edges.
    G2,
}

impl AnomalyKind {
    /// True for the kinds reported with a cycle.
    pub fn is_cycle(self) -> bool {
        matches!(self, AnomalyKind::G0 | AnomalyKind::G1c | AnomalyKind::GSingle | AnomalyKind::G2)
    }

    fn name(self) -> &'static str {
        match self {
            AnomalyKind::GarbageRead => "garbage read",
            AnomalyKind::ValueMismatch => "value mismatch",
            AnomalyKind::AbortedRead => "G1a (aborted read)",
            AnomalyKind::FutureRead => "future read",
            AnomalyKind::DuplicateVersion => "duplicate version",
            AnomalyKind::UnknownAtTwoVersions => "unknown outcome at two versions",
            AnomalyKind::ReadAboveSnapshot => "read above snapshot",
            AnomalyKind::StaleSnapshot => "stale snapshot",
            AnomalyKind::G0 => "G0",
            AnomalyKind::G1c => "G1c",
            AnomalyKind::GSingle => "G-single",
            AnomalyKind::G2 => "G2",
        }
    }
}

/// Why one transaction must come before another.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EdgeKind {
    /// `from` wrote `key` at `overwritten`; `to` wrote its next version.
    Ww {
        /// The key.
        key: Vec<u8>,
        /// `from`'s version.
        overwritten: Version,
        /// `to`'s version, the next one.
        version: Version,
    },
    /// `to` read `from`'s write of `key` at `version`.
    Wr {
        /// The key.
        key: Vec<u8>,
        /// The version read.
        version: Version,
    },
    /// `from` read `key` at `read`; `to` wrote its next version.
    Rw {
        /// The key.
        key: Vec<u8>,
        /// The version `from` read.
        read: Version,
        /// `to`'s version, the next one after `read`.
        overwritten_by: Version,
    },
    /// `from` returned committed before `to` was invoked (strict mode only).
    RealTime,
}

/// One edge of a reported cycle.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Edge {
    /// The transaction that must come first.
    pub from: TxnId,
    /// Why.
    pub kind: EdgeKind,
    /// The transaction that must come after.
    pub to: TxnId,
}

/// Why a history is not (strictly) serializable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    /// What went wrong.
    pub kind: AnomalyKind,
    /// True when the cycle needs a real-time edge: the data dependencies alone
    /// are acyclic (serializable), but no serial order respects real time.
    pub needs_real_time: bool,
    /// The transactions involved: a cycle's in cycle order, otherwise the
    /// reader (or first writer) first.
    pub txns: Vec<TxnId>,
    /// For cycle kinds, the cycle: each edge's `to` is the next edge's `from`,
    /// and the last edge's `to` is the first edge's `from`. Empty otherwise.
    pub cycle: Vec<Edge>,
    /// What each edge (or the direct anomaly) means, in words.
    pub explanation: String,
}

/// Why the checker could not decide: a version's writer cannot be named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undecided {
    /// The transaction whose read it is.
    pub reader: TxnId,
    /// The key read.
    pub key: Vec<u8>,
    /// The version read.
    pub version: Version,
    /// The value hash read.
    pub value: Option<u64>,
    /// The unknown-outcome transactions that each could have written it.
    pub candidates: Vec<TxnId>,
}

/// The verdict for a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialVerdict {
    /// A serial order exists (respecting real time when strict).
    Serializable,
    /// None does.
    Anomaly(Anomaly),
    /// No anomaly was found, but a version's writer could not be named, so
    /// none may have been missed. Not a pass.
    Undecided(Undecided),
}

/// Why a history cannot be checked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxnHistoryError {
    /// Two transactions share an id.
    #[error("transaction id {id} appears twice")]
    DuplicateId {
        /// The id.
        id: TxnId,
    },
    /// The transaction returned before it was invoked.
    #[error("T{id}: returned at {return_time} before its invocation at {invoke_time}")]
    ReturnBeforeInvoke {
        /// The transaction.
        id: TxnId,
        /// Its invoke time.
        invoke_time: u64,
        /// Its return time.
        return_time: u64,
    },
    /// A committed or aborted transaction without a return time.
    #[error("T{id}: a definite outcome without a return time")]
    DefiniteOutcomeWithoutReturn {
        /// The transaction.
        id: TxnId,
    },
    /// A committed transaction with writes and commit version 0 (the initial
    /// state's).
    #[error("T{id}: committed writes at version 0")]
    CommitVersionZero {
        /// The transaction.
        id: TxnId,
    },
    /// A read-only transaction with writes.
    #[error("T{id}: a read-only transaction with writes")]
    ReadOnlyWithWrites {
        /// The transaction.
        id: TxnId,
    },
    /// Two writes of one key in one transaction (it has one version per key).
    #[error("T{id}: writes key {} twice", KeyText(key))]
    KeyWrittenTwice {
        /// The transaction.
        id: TxnId,
        /// The key.
        key: Vec<u8>,
    },
}

/// Checks the well-formedness rules of [`TxnHistoryError`]: a history read
/// from a file is untrusted input, so a bad one is an error value, never a
/// panic.
pub fn validate_txns(txns: &[Txn]) -> Result<(), TxnHistoryError> {
    let mut ids = std::collections::HashSet::with_capacity(txns.len());
    for txn in txns {
        let id = txn.id;
        if !ids.insert(id) {
            return Err(TxnHistoryError::DuplicateId { id });
        }
        match (txn.return_time, txn.outcome) {
            (Some(return_time), _) if return_time < txn.invoke_time => {
                return Err(TxnHistoryError::ReturnBeforeInvoke { id, invoke_time: txn.invoke_time, return_time });
            }
            (None, TxnOutcome::Committed { .. } | TxnOutcome::Aborted) => {
                return Err(TxnHistoryError::DefiniteOutcomeWithoutReturn { id });
            }
            _ => {}
        }
        if txn.writes.is_empty() {
            continue;
        }
        if matches!(txn.kind, TxnKind::ReadOnly { .. }) {
            return Err(TxnHistoryError::ReadOnlyWithWrites { id });
        }
        if txn.outcome == (TxnOutcome::Committed { version: 0 }) {
            return Err(TxnHistoryError::CommitVersionZero { id });
        }
        let mut keys: Vec<&[u8]> = txn.writes.iter().map(|write| write.key.as_slice()).collect();
        keys.sort_unstable();
        if let Some(pair) = keys.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(TxnHistoryError::KeyWrittenTwice { id, key: pair[0].to_vec() });
        }
    }
    Ok(())
}

/// Checks a transaction history for serializability (strict when
/// `options.strict`). See the module doc for what each verdict means.
pub fn check_serializable(txns: &[Txn], options: &SerialOptions) -> Result<SerialVerdict, TxnHistoryError> {
    validate_txns(txns)?;
    let resolution = match resolve::resolve(txns) {
        Ok(resolution) => resolution,
        Err(anomaly) => return Ok(SerialVerdict::Anomaly(anomaly)),
    };
    if let Some(anomaly) = resolve::check_snapshots(txns, &resolution) {
        return Ok(SerialVerdict::Anomaly(anomaly));
    }
    let graph = graph::Graph::build(txns, &resolution, options.strict);
    if let Some(anomaly) = graph.find_anomaly(txns, &resolution) {
        return Ok(SerialVerdict::Anomaly(anomaly));
    }
    Ok(match resolution.undecided {
        Some(undecided) => SerialVerdict::Undecided(undecided),
        None => SerialVerdict::Serializable,
    })
}

/// Shows a key as text, bytes outside printable ASCII escaped, unquoted (the
/// way Elle names keys in cycles).
pub(crate) struct KeyText<'a>(pub(crate) &'a [u8]);

impl fmt::Display for KeyText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &byte in self.0 {
            write!(f, "{}", std::ascii::escape_default(byte))?;
        }
        Ok(())
    }
}

/// Shows a value hash, `absent` for none.
pub(crate) struct ValueText(pub(crate) Option<u64>);

impl fmt::Display for ValueText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(hash) => write!(f, "#{hash:x}"),
            None => f.write_str("absent"),
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for EdgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EdgeKind::Ww { key, overwritten, version } => write!(f, "ww({}@{overwritten}..{version})", KeyText(key)),
            EdgeKind::Wr { key, version } => write!(f, "wr({}@{version})", KeyText(key)),
            EdgeKind::Rw { key, read, overwritten_by } => write!(f, "rw({}@{read}..{overwritten_by})", KeyText(key)),
            EdgeKind::RealTime => f.write_str("rt"),
        }
    }
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T{} -{}-> T{}", self.from, self.kind, self.to)
    }
}

/// A cycle the way Elle prints it: `T3 -wr(x@17)-> T5 -rw(y@9..12)-> T3`.
pub struct CycleText<'a>(pub &'a [Edge]);

impl fmt::Display for CycleText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(first) = self.0.first() else {
            return Ok(());
        };
        write!(f, "T{}", first.from)?;
        for edge in self.0 {
            write!(f, " -{}-> T{}", edge.kind, edge.to)?;
        }
        Ok(())
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if self.needs_real_time {
            f.write_str("-realtime (serializable, but not strictly)")?;
        }
        if !self.cycle.is_empty() {
            write!(f, ": {}", CycleText(&self.cycle))?;
        }
        write!(f, ": {}", self.explanation)
    }
}

impl fmt::Display for Undecided {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "undecided: T{} read {}@{} = {}, which any of ",
            self.reader,
            KeyText(&self.key),
            self.version,
            ValueText(self.value)
        )?;
        for (index, candidate) in self.candidates.iter().enumerate() {
            let separator = if index == 0 { "" } else { ", " };
            write!(f, "{separator}T{candidate}")?;
        }
        f.write_str(" (outcome unknown) could have written; no anomaly found without knowing which")
    }
}

impl fmt::Display for SerialVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SerialVerdict::Serializable => f.write_str("serializable"),
            SerialVerdict::Anomaly(anomaly) => write!(f, "{anomaly}"),
            SerialVerdict::Undecided(undecided) => write!(f, "{undecided}"),
        }
    }
}
