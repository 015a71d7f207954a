//! Version resolution: who wrote each version read, which transactions are
//! live (committed, or of unknown outcome and observed), and the anomalies
//! found on the way (duplicate versions, garbage, aborted and future reads,
//! value mismatches, an unknown transaction at two versions) and in read-only
//! snapshots. See the module doc of `serial` for the rules.
//!
//! Invariants of a [`Resolution`]: every live transaction's read of a version
//! above 0 has a writer, except the ones recorded as undecided; each key's
//! writers are sorted by strictly increasing version.

use std::collections::{HashMap, VecDeque};

use super::{Anomaly, AnomalyKind, KeyText, Txn, TxnKind, TxnOutcome, Undecided, ValueText, Version};

/// A graph node: a live transaction's position in [`Resolution::live`].
pub(super) type Node = u32;

/// A key's position in [`Resolution::keys`].
pub(super) type KeyId = u32;

/// A live transaction's read, its writer named.
#[derive(Clone, Copy, Debug)]
pub(super) struct ResolvedRead {
    /// The reading transaction.
    pub(super) reader: Node,
    /// The key read.
    pub(super) key: KeyId,
    /// The version read.
    pub(super) version: Version,
    /// The writer of that version (never the reader): `None` for the initial
    /// state (version 0) and for an undecided writer.
    pub(super) writer: Option<Node>,
}

/// What resolution learned.
pub(super) struct Resolution<'a> {
    /// Every key read or written, by [`KeyId`].
    pub(super) keys: Vec<&'a [u8]>,
    /// Indices into the history of the live transactions, in input order; a
    /// [`Node`] indexes this.
    pub(super) live: Vec<usize>,
    /// Per key, its live writers: (version, node), strictly increasing versions.
    pub(super) writers: Vec<Vec<(Version, Node)>>,
    /// Every read of a live transaction, in input order.
    pub(super) reads: Vec<ResolvedRead>,
    /// The first read whose writer could not be named, if any.
    pub(super) undecided: Option<Undecided>,
}

impl Resolution<'_> {
    /// The transaction of a node.
    pub(super) fn txn<'t>(&self, txns: &'t [Txn], node: Node) -> &'t Txn {
        &txns[self.live[node as usize]]
    }
}

#[derive(Default)]
struct Keys<'a> {
    ids: HashMap<&'a [u8], KeyId>,
    names: Vec<&'a [u8]>,
}

impl<'a> Keys<'a> {
    fn id(&mut self, key: &'a [u8]) -> KeyId {
        let next = KeyId::try_from(self.names.len()).expect("fewer than 2^32 keys");
        *self.ids.entry(key).or_insert_with(|| {
            self.names.push(key);
            next
        })
    }
}

/// One read of one transaction, by position.
#[derive(Clone, Copy)]
struct Observation {
    txn: usize,
    read: usize,
}

/// The state of resolution while unknown transactions are being bound.
struct Resolver<'a> {
    txns: &'a [Txn],
    keys: Keys<'a>,
    /// (key, version) -> index of its writer.
    writer_at: HashMap<(KeyId, Version), usize>,
    /// Per transaction: its commit version once known live (0 when it wrote
    /// nothing); `None` while not (yet) live.
    commit: Vec<Option<Version>>,
    /// (key, value) -> transactions of unknown outcome that wrote it.
    unknown_writers: HashMap<(KeyId, Option<u64>), Vec<usize>>,
    /// (key, value) -> the first aborted transaction that wrote it.
    aborted_writers: HashMap<(KeyId, u64), usize>,
    /// Observations to (re)examine.
    queue: VecDeque<Observation>,
    /// Observations with several candidate writers, by candidate: examined
    /// again when that candidate is bound (to any version).
    waiting: HashMap<usize, Vec<Observation>>,
}

/// Resolves every version read, or returns the first anomaly found in doing
/// so.
pub(super) fn resolve(txns: &[Txn]) -> Result<Resolution<'_>, Anomaly> {
    let mut resolver = Resolver {
        txns,
        keys: Keys::default(),
        writer_at: HashMap::new(),
        commit: vec![None; txns.len()],
        unknown_writers: HashMap::new(),
        aborted_writers: HashMap::new(),
        queue: VecDeque::new(),
        waiting: HashMap::new(),
    };
    resolver.index_writers()?;
    resolver.bind_observed_unknowns()?;
    resolver.finish()
}

impl<'a> Resolver<'a> {
    /// Installs the committed writers, and indexes the unknown and aborted
    /// ones by what they wrote.
    fn index_writers(&mut self) -> Result<(), Anomaly> {
        let txns = self.txns;
        for (index, txn) in txns.iter().enumerate() {
            match txn.outcome {
                TxnOutcome::Committed { version } => self.make_live(index, version)?,
                TxnOutcome::Unknown => {
                    for write in &txn.writes {
                        let key = self.keys.id(&write.key);
                        self.unknown_writers.entry((key, write.value)).or_default().push(index);
                    }
                }
                TxnOutcome::Aborted => {
                    for write in &txn.writes {
                        let key = self.keys.id(&write.key);
                        if let Some(value) = write.value {
                            self.aborted_writers.entry((key, value)).or_insert(index);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Marks a transaction live at `version`, installs its writes, and queues
    /// its reads as observations.
    fn make_live(&mut self, index: usize, version: Version) -> Result<(), Anomaly> {
        let txns = self.txns;
        let txn = &txns[index];
        assert!(self.commit[index].is_none(), "T{} made live twice", txn.id);
        self.commit[index] = Some(if txn.writes.is_empty() { 0 } else { version });
        for write in &txn.writes {
            let key = self.keys.id(&write.key);
            if let Some(&other) = self.writer_at.get(&(key, version)) {
                return Err(duplicate_version(&txns[other], txn, &write.key, version));
            }
            self.writer_at.insert((key, version), index);
        }
        self.queue.extend((0..txn.reads.len()).map(|read| Observation { txn: index, read }));
        Ok(())
    }

    /// The worklist: an observation of a version with no writer yet, whose
    /// value exactly one unbound unknown transaction wrote, binds that
    /// transaction to that version; its own reads are then observations too.
    fn bind_observed_unknowns(&mut self) -> Result<(), Anomaly> {
        while let Some(observation) = self.queue.pop_front() {
            let read = &self.txns[observation.txn].reads[observation.read];
            if read.version == 0 {
                continue;
            }
            let key = self.keys.id(&read.key);
            if self.writer_at.contains_key(&(key, read.version)) {
                continue;
            }
            let unbound = self.unbound_candidates(key, read.value);
            match unbound.as_slice() {
                [] => {}
                [only] => {
                    let only = *only;
                    self.make_live(only, read.version)?;
                    let woken = self.waiting.remove(&only).unwrap_or_default();
                    self.queue.extend(woken);
                }
                several => {
                    for &candidate in several {
                        self.waiting.entry(candidate).or_default().push(observation);
                    }
                }
            }
        }
        Ok(())
    }

    fn unbound_candidates(&self, key: KeyId, value: Option<u64>) -> Vec<usize> {
        let Some(candidates) = self.unknown_writers.get(&(key, value)) else {
            return Vec::new();
        };
        candidates.iter().copied().filter(|&candidate| self.commit[candidate].is_none()).collect()
    }

    /// Names the writer of every live read (or finds the first read that has
    /// none) and lays out the result.
    fn finish(mut self) -> Result<Resolution<'a>, Anomaly> {
        let txns = self.txns;
        let live: Vec<usize> = (0..txns.len()).filter(|&index| self.commit[index].is_some()).collect();
        let mut node_of = vec![Node::MAX; txns.len()];
        for (node, &index) in live.iter().enumerate() {
            node_of[index] = Node::try_from(node).expect("fewer than 2^32 transactions");
        }
        let mut reads = Vec::new();
        let mut undecided = None;
        for &index in &live {
            for read in &txns[index].reads {
                let key = self.keys.id(&read.key);
                let writer = match self.writer_of(index, key, read)? {
                    Writer::Initial => None,
                    Writer::Txn(writer) => Some(node_of[writer]),
                    Writer::Undecided(candidates) => {
                        undecided.get_or_insert_with(|| Undecided {
                            reader: txns[index].id,
                            key: read.key.clone(),
                            version: read.version,
                            value: read.value,
                            candidates: candidates.iter().map(|&candidate| txns[candidate].id).collect(),
                        });
                        None
                    }
                };
                reads.push(ResolvedRead { reader: node_of[index], key, version: read.version, writer });
            }
        }
        let mut writers = vec![Vec::new(); self.keys.names.len()];
        for (&(key, version), &index) in &self.writer_at {
            writers[key as usize].push((version, node_of[index]));
        }
        for list in &mut writers {
            list.sort_unstable();
        }
        Ok(Resolution { keys: self.keys.names, live, writers, reads, undecided })
    }

    /// Who wrote what `reader` read, or the anomaly that nobody could have.
    fn writer_of(&self, reader: usize, key: KeyId, read: &super::Read) -> Result<Writer, Anomaly> {
        let txns = self.txns;
        let reader_txn = &txns[reader];
        if read.version == 0 {
            if read.value.is_some() {
                return Err(initial_value_mismatch(reader_txn, read));
            }
            return Ok(Writer::Initial);
        }
        if let Some(&writer) = self.writer_at.get(&(key, read.version)) {
            let written = txns[writer].writes.iter().find(|write| write.key == read.key).map(|write| write.value);
            let written = written.expect("a writer at (key, version) wrote the key");
            if written != read.value {
                return Err(value_mismatch(reader_txn, read, &txns[writer], written));
            }
            if writer == reader {
                return Err(future_read(reader_txn, read));
            }
            return Ok(Writer::Txn(writer));
        }
        let unbound = self.unbound_candidates(key, read.value);
        assert!(unbound.len() != 1, "T{}: a read with one unbound candidate survived the worklist", reader_txn.id);
        if unbound.len() >= 2 {
            return Ok(Writer::Undecided(unbound));
        }
        if let Some(&candidate) = self.unknown_writers.get(&(key, read.value)).and_then(|all| all.first()) {
            let bound = self.commit[candidate].expect("every candidate is bound");
            return Err(unknown_at_two_versions(reader_txn, read, &txns[candidate], bound));
        }
        if let Some(value) = read.value
            && let Some(&aborted) = self.aborted_writers.get(&(key, value))
        {
            return Err(aborted_read(reader_txn, read, &txns[aborted]));
        }
        Err(garbage_read(reader_txn, read))
    }
}

enum Writer {
    /// Version 0.
    Initial,
    /// Another transaction, by index.
    Txn(usize),
    /// Any of these unbound transactions of unknown outcome.
    Undecided(Vec<usize>),
}

/// Checks every live read-only transaction against the state at its
/// snapshot: the newest known version at or below it, per key read.
pub(super) fn check_snapshots(txns: &[Txn], resolution: &Resolution<'_>) -> Option<Anomaly> {
    for read in &resolution.reads {
        let reader = resolution.txn(txns, read.reader);
        let TxnKind::ReadOnly { snapshot } = reader.kind else {
            continue;
        };
        let key = resolution.keys[read.key as usize];
        if read.version > snapshot {
            return Some(direct(
                AnomalyKind::ReadAboveSnapshot,
                vec![reader.id],
                format!(
                    "T{} (read-only at snapshot {snapshot}) read {}@{}, above its snapshot",
                    reader.id,
                    KeyText(key),
                    read.version
                ),
            ));
        }
        let writers = &resolution.writers[read.key as usize];
        let at_or_below = writers.partition_point(|&(version, _)| version <= snapshot);
        let Some(&(newest, newest_writer)) = at_or_below.checked_sub(1).map(|position| &writers[position]) else {
            continue;
        };
        if newest > read.version {
            return Some(stale_snapshot(
                reader,
                snapshot,
                key,
                read.version,
                resolution.txn(txns, newest_writer),
                newest,
            ));
        }
    }
    None
}

fn direct(kind: AnomalyKind, txns: Vec<u64>, explanation: String) -> Anomaly {
    Anomaly { kind, needs_real_time: false, txns, cycle: Vec::new(), explanation }
}

fn stale_snapshot(
    reader: &Txn,
    snapshot: Version,
    key: &[u8],
    version: Version,
    newer: &Txn,
    newest: Version,
) -> Anomaly {
    let mut explanation = format!(
        "T{} (read-only at snapshot {snapshot}) read {}@{version}, but T{} wrote {}@{newest}, at or below the snapshot",
        reader.id,
        KeyText(key),
        newer.id,
        KeyText(key)
    );
    let seen = reader
        .reads
        .iter()
        .find(|other| other.version == newest && newer.writes.iter().any(|write| write.key == other.key));
    if let Some(seen) = seen {
        explanation.push_str(&format!(
            "; it saw T{}'s write of {} but not of {}: a fractured read",
            newer.id,
            KeyText(&seen.key),
            KeyText(key)
        ));
    }
    direct(AnomalyKind::StaleSnapshot, vec![reader.id, newer.id], explanation)
}

fn duplicate_version(first: &Txn, second: &Txn, key: &[u8], version: Version) -> Anomaly {
    direct(
        AnomalyKind::DuplicateVersion,
        vec![first.id, second.id],
        format!("T{} and T{} both wrote {}@{version}", first.id, second.id, KeyText(key)),
    )
}

fn initial_value_mismatch(reader: &Txn, read: &super::Read) -> Anomaly {
    direct(
        AnomalyKind::ValueMismatch,
        vec![reader.id],
        format!(
            "T{} read {}@0 = {}, but version 0 is the initial state: absent",
            reader.id,
            KeyText(&read.key),
            ValueText(read.value)
        ),
    )
}

fn value_mismatch(reader: &Txn, read: &super::Read, writer: &Txn, written: Option<u64>) -> Anomaly {
    direct(
        AnomalyKind::ValueMismatch,
        vec![reader.id, writer.id],
        format!(
            "T{} read {}@{} = {}, but T{} wrote {} = {} at that version",
            reader.id,
            KeyText(&read.key),
            read.version,
            ValueText(read.value),
            writer.id,
            KeyText(&read.key),
            ValueText(written)
        ),
    )
}

fn future_read(reader: &Txn, read: &super::Read) -> Anomaly {
    direct(
        AnomalyKind::FutureRead,
        vec![reader.id],
        format!(
            "T{} read {}@{} = {}, its own write at its own commit version, as if installed before it",
            reader.id,
            KeyText(&read.key),
            read.version,
            ValueText(read.value)
        ),
    )
}

fn unknown_at_two_versions(reader: &Txn, read: &super::Read, unknown: &Txn, bound: Version) -> Anomaly {
    direct(
        AnomalyKind::UnknownAtTwoVersions,
        vec![reader.id, unknown.id],
        format!(
            "T{} read {}@{} = {}, which only T{} (outcome unknown) wrote, but another read places T{} at version {bound}",
            reader.id,
            KeyText(&read.key),
            read.version,
            ValueText(read.value),
            unknown.id,
            unknown.id
        ),
    )
}

fn aborted_read(reader: &Txn, read: &super::Read, aborted: &Txn) -> Anomaly {
    direct(
        AnomalyKind::AbortedRead,
        vec![reader.id, aborted.id],
        format!(
            "T{} read {}@{} = {}, a value only T{} wrote, and T{} aborted",
            reader.id,
            KeyText(&read.key),
            read.version,
            ValueText(read.value),
            aborted.id,
            aborted.id
        ),
    )
}

fn garbage_read(reader: &Txn, read: &super::Read) -> Anomaly {
    direct(
        AnomalyKind::GarbageRead,
        vec![reader.id],
        format!(
            "T{} read {}@{} = {}, but no transaction could have written {} at version {}",
            reader.id,
            KeyText(&read.key),
            read.version,
            ValueText(read.value),
            KeyText(&read.key),
            read.version
        ),
    )
}
