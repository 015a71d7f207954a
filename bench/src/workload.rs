//! What the load generator asks: YCSB's core workloads A–F as YCSB defines them,
//! and etcd's op-guide `put` / `get`. Pure: a seeded RNG in, operations out, so
//! the same seed asks the same questions of every system compared.
//!
//! YCSB's definitions (its `workloads/workload[a-f]` files):
//! - A: 50% read, 50% update, zipfian;       B: 95% read, 5% update, zipfian;
//! - C: 100% read, zipfian;                  D: 95% read, 5% insert, latest;
//! - E: 95% scan (length uniform 1..=100), 5% insert, zipfian;
//! - F: 50% read, 50% read-modify-write, zipfian.
//!
//! Keys are YCSB's hashed `user…` keys: `"user"` followed by the FNV-1a 64 hash of
//! the record number, so neighbouring records are not neighbouring keys. Records are
//! 1 KB by default; a corekv value has no fields, so an update writes the whole
//! record, as YCSB's bindings for plain key-value stores do. The zipfian choice is
//! scrambled (the popular records spread over the key space) with θ = 0.99 by
//! default; `latest` favours the most recently inserted records.
//!
//! `put` and `get` follow etcd's op guide: 8-byte keys, 256-byte values by default,
//! over an explicit key space, keys chosen uniformly.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;
use std::str::FromStr;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::zipf::{Zipfian, fnv1a64};

/// YCSB's default record size (10 fields of 100 bytes, stored as one value).
pub const YCSB_RECORD_BYTES: usize = 1000;
/// etcd's op-guide value size.
pub const ETCD_VALUE_BYTES: usize = 256;
/// YCSB's default zipfian constant.
pub const ZIPFIAN_THETA_DEFAULT: f64 = 0.99;
/// YCSB workload E's longest scan.
pub const SCAN_LENGTH_MAX: u32 = 100;

/// Which workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// YCSB A: update heavy.
    A,
    /// YCSB B: read mostly.
    B,
    /// YCSB C: read only.
    C,
    /// YCSB D: read latest.
    D,
    /// YCSB E: short ranges.
    E,
    /// YCSB F: read-modify-write.
    F,
    /// etcd's op guide: writes only.
    Put,
    /// etcd's op guide: reads only.
    Get,
}

impl Kind {
    /// Every workload.
    pub const ALL: [Kind; 8] = [Kind::A, Kind::B, Kind::C, Kind::D, Kind::E, Kind::F, Kind::Put, Kind::Get];

    /// The name users type.
    pub fn name(self) -> &'static str {
        match self {
            Kind::A => "ycsb-a",
            Kind::B => "ycsb-b",
            Kind::C => "ycsb-c",
            Kind::D => "ycsb-d",
            Kind::E => "ycsb-e",
            Kind::F => "ycsb-f",
            Kind::Put => "put",
            Kind::Get => "get",
        }
    }

    /// A YCSB workload (hashed `user…` keys, 1 KB records), not etcd's op guide.
    pub fn is_ycsb(self) -> bool {
        !matches!(self, Kind::Put | Kind::Get)
    }

    /// The value size when none is given.
    pub fn default_value_bytes(self) -> usize {
        if self.is_ycsb() { YCSB_RECORD_BYTES } else { ETCD_VALUE_BYTES }
    }

    /// Whether the run phase needs the records loaded first.
    pub fn needs_load(self) -> bool {
        self != Kind::Put
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Kind, String> {
        let s = s.to_ascii_lowercase();
        let s = s.strip_prefix("ycsb-").or_else(|| s.strip_prefix("ycsb")).unwrap_or(&s);
        Ok(match s {
            "a" => Kind::A,
            "b" => Kind::B,
            "c" => Kind::C,
            "d" => Kind::D,
            "e" => Kind::E,
            "f" => Kind::F,
            "put" => Kind::Put,
            "get" => Kind::Get,
            other => {
                return Err(format!("unknown workload {other:?} (ycsb-a … ycsb-f, put, get)"));
            }
        })
    }
}

/// The shape of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Which workload.
    pub kind: Kind,
    /// Records (keys) loaded before the run; the key space of `put` / `get`.
    pub records: u64,
    /// Bytes per value.
    pub value_bytes: usize,
    /// The zipfian constant θ.
    pub theta: f64,
}

impl Spec {
    /// `kind` with its defaults over `records` keys.
    pub fn new(kind: Kind, records: u64) -> Spec {
        Spec { kind, records, value_bytes: kind.default_value_bytes(), theta: ZIPFIAN_THETA_DEFAULT }
    }

    /// Checks the numbers; the error says which is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.records == 0 {
            return Err("the key space is empty (--keys must be at least 1)".into());
        }
        if !(self.theta > 0.0 && self.theta < 1.0) {
            return Err(format!("zipfian theta {} is outside (0, 1)", self.theta));
        }
        Ok(())
    }
}

/// The operation kinds a report counts separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// A read of one key.
    Read,
    /// A write of an existing record (or any `put`).
    Update,
    /// A write of a new record.
    Insert,
    /// A range read.
    Scan,
    /// A read, then a write of the same key.
    ReadModifyWrite,
}

impl OpKind {
    /// Every kind, in report order.
    pub const ALL: [OpKind; 5] = [OpKind::Read, OpKind::Update, OpKind::Insert, OpKind::Scan, OpKind::ReadModifyWrite];

    /// The name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Insert => "insert",
            OpKind::Scan => "scan",
            OpKind::ReadModifyWrite => "rmw",
        }
    }

    /// Index into per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One operation to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Read `key`.
    Read {
        /// The key.
        key: Vec<u8>,
    },
    /// Write `value` at an existing record's `key`.
    Update {
        /// The key.
        key: Vec<u8>,
        /// The whole record.
        value: Vec<u8>,
    },
    /// Write a new record.
    Insert {
        /// The key.
        key: Vec<u8>,
        /// The record.
        value: Vec<u8>,
    },
    /// Read up to `count` records from `start` on, in key order.
    Scan {
        /// The first key.
        start: Vec<u8>,
        /// How many records.
        count: u32,
    },
    /// Read `key`, then write `value` there.
    ReadModifyWrite {
        /// The key.
        key: Vec<u8>,
        /// The new record.
        value: Vec<u8>,
    },
}

impl Op {
    /// The kind counted in reports.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Read { .. } => OpKind::Read,
            Op::Update { .. } => OpKind::Update,
            Op::Insert { .. } => OpKind::Insert,
            Op::Scan { .. } => OpKind::Scan,
            Op::ReadModifyWrite { .. } => OpKind::ReadModifyWrite,
        }
    }
}

/// The key of record `n`: YCSB's `user` + FNV-1a 64 of `n` (hashed keys), or for
/// etcd's op guide, `n` as 8 big-endian bytes.
pub fn key_of(kind: Kind, n: u64) -> Vec<u8> {
    if kind.is_ycsb() { format!("user{}", fnv1a64(&n.to_le_bytes())).into_bytes() } else { n.to_be_bytes().to_vec() }
}

/// Records inserted so far, shared by the generators of one process so that D's
/// `latest` favours what anyone inserted last and no two inserts take one number.
#[derive(Debug, Clone)]
pub struct Inserted(Rc<Cell<u64>>);

impl Inserted {
    /// `records` are loaded.
    pub fn new(records: u64) -> Inserted {
        Inserted(Rc::new(Cell::new(records)))
    }

    /// How many records exist.
    pub fn count(&self) -> u64 {
        self.0.get()
    }

    fn take_next(&self) -> u64 {
        let n = self.0.get();
        self.0.set(n + 1);
        n
    }
}

/// Generates one client's operations.
#[derive(Debug, Clone)]
pub struct Generator {
    spec: Spec,
    rng: ChaCha8Rng,
    zipf: Zipfian,
    inserted: Inserted,
    value_seq: u64,
}

impl Generator {
    /// A generator of `spec` drawing from `rng`, counting inserts in `inserted`.
    pub fn new(spec: Spec, rng: ChaCha8Rng, inserted: Inserted) -> Generator {
        // Scrambled zipfian draws over a large fixed item count and hashes into the
        // key space (YCSB's ScrambledZipfianGenerator); `latest` draws over what
        // exists at each call.
        let zipf = Zipfian::new(spec.records.max(1), spec.theta);
        Generator { spec, rng, zipf, inserted, value_seq: 0 }
    }

    /// The workload's next operation.
    pub fn next_op(&mut self) -> Op {
        let roll: f64 = self.rng.random();
        match self.spec.kind {
            Kind::A => {
                if roll < 0.5 {
                    Op::Read { key: self.zipfian_key() }
                } else {
                    let key = self.zipfian_key();
                    Op::Update { key, value: self.value() }
                }
            }
            Kind::B => {
                if roll < 0.95 {
                    Op::Read { key: self.zipfian_key() }
                } else {
                    let key = self.zipfian_key();
                    Op::Update { key, value: self.value() }
                }
            }
            Kind::C => Op::Read { key: self.zipfian_key() },
            Kind::D => {
                if roll < 0.95 {
                    Op::Read { key: self.latest_key() }
                } else {
                    self.insert()
                }
            }
            Kind::E => {
                if roll < 0.95 {
                    let count = self.rng.random_range(1..=SCAN_LENGTH_MAX);
                    Op::Scan { start: self.zipfian_key(), count }
                } else {
                    self.insert()
                }
            }
            Kind::F => {
                if roll < 0.5 {
                    Op::Read { key: self.zipfian_key() }
                } else {
                    let key = self.zipfian_key();
                    Op::ReadModifyWrite { key, value: self.value() }
                }
            }
            Kind::Put => {
                let n = self.rng.random_range(0..self.spec.records);
                Op::Update { key: key_of(self.spec.kind, n), value: self.value() }
            }
            Kind::Get => {
                let n = self.rng.random_range(0..self.spec.records);
                Op::Read { key: key_of(self.spec.kind, n) }
            }
        }
    }

    /// The value of a write: its size, and distinct per write (a history can tell
    /// writes apart by value).
    pub fn value(&mut self) -> Vec<u8> {
        self.value_seq += 1;
        let mut value = vec![0u8; self.spec.value_bytes];
        let stamp: u64 = self.rng.random();
        let tag = format!("{stamp:016x}{:08x}", self.value_seq);
        let n = tag.len().min(value.len());
        value[..n].copy_from_slice(&tag.as_bytes()[..n]);
        for (i, byte) in value.iter_mut().enumerate().skip(n) {
            *byte = b'a' + (i % 26) as u8;
        }
        value
    }

    fn zipfian_key(&mut self) -> Vec<u8> {
        let n = self.zipf.next(&mut self.rng);
        // Scramble: popular ranks land anywhere in the key space.
        let record = fnv1a64(&n.to_le_bytes()) % self.inserted.count().max(1);
        key_of(self.spec.kind, record)
    }

    fn latest_key(&mut self) -> Vec<u8> {
        let count = self.inserted.count().max(1);
        let back = self.zipf.next_below(&mut self.rng, count);
        key_of(self.spec.kind, count - 1 - back)
    }

    fn insert(&mut self) -> Op {
        let n = self.inserted.take_next();
        Op::Insert { key: key_of(self.spec.kind, n), value: self.value() }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::SeedableRng;

    use super::*;

    fn generator(kind: Kind, records: u64, seed: u64) -> Generator {
        Generator::new(Spec::new(kind, records), ChaCha8Rng::seed_from_u64(seed), Inserted::new(records))
    }

    fn mix(kind: Kind) -> HashMap<OpKind, usize> {
        let mut g = generator(kind, 1000, 1);
        let mut counts = HashMap::new();
        for _ in 0..20_000 {
            *counts.entry(g.next_op().kind()).or_insert(0) += 1;
        }
        counts
    }

    fn share(counts: &HashMap<OpKind, usize>, kind: OpKind) -> f64 {
        counts.get(&kind).copied().unwrap_or(0) as f64 / counts.values().sum::<usize>() as f64
    }

    #[test]
    fn mixes_follow_ycsb() {
        let near = |a: f64, b: f64| (a - b).abs() < 0.02;
        let a = mix(Kind::A);
        assert!(near(share(&a, OpKind::Read), 0.5) && near(share(&a, OpKind::Update), 0.5));
        let b = mix(Kind::B);
        assert!(near(share(&b, OpKind::Read), 0.95) && near(share(&b, OpKind::Update), 0.05));
        assert_eq!(share(&mix(Kind::C), OpKind::Read), 1.0);
        let d = mix(Kind::D);
        assert!(near(share(&d, OpKind::Read), 0.95) && near(share(&d, OpKind::Insert), 0.05));
        let e = mix(Kind::E);
        assert!(near(share(&e, OpKind::Scan), 0.95) && near(share(&e, OpKind::Insert), 0.05));
        let f = mix(Kind::F);
        assert!(near(share(&f, OpKind::Read), 0.5) && near(share(&f, OpKind::ReadModifyWrite), 0.5));
        assert_eq!(share(&mix(Kind::Put), OpKind::Update), 1.0);
        assert_eq!(share(&mix(Kind::Get), OpKind::Read), 1.0);
    }

    #[test]
    fn same_seed_same_operations() {
        let mut a = generator(Kind::A, 100, 7);
        let mut b = generator(Kind::A, 100, 7);
        let mut c = generator(Kind::A, 100, 8);
        let ops_a: Vec<_> = (0..50).map(|_| a.next_op()).collect();
        let ops_b: Vec<_> = (0..50).map(|_| b.next_op()).collect();
        let ops_c: Vec<_> = (0..50).map(|_| c.next_op()).collect();
        assert_eq!(ops_a, ops_b);
        assert_ne!(ops_a, ops_c);
    }

    #[test]
    fn ycsb_keys_are_hashed_user_keys_inside_the_loaded_set() {
        let loaded: std::collections::HashSet<Vec<u8>> = (0..500).map(|n| key_of(Kind::A, n)).collect();
        assert_eq!(loaded.len(), 500, "no two records share a key");
        assert!(loaded.iter().all(|k| k.starts_with(b"user")));
        let mut g = generator(Kind::C, 500, 3);
        for _ in 0..2000 {
            match g.next_op() {
                Op::Read { key } => assert!(loaded.contains(&key)),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(key_of(Kind::Put, 5), 5u64.to_be_bytes().to_vec(), "etcd's op guide: 8-byte keys");
    }

    #[test]
    fn zipfian_choice_is_skewed_and_scrambled() {
        let mut g = generator(Kind::C, 10_000, 11);
        let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
        for _ in 0..50_000 {
            if let Op::Read { key } = g.next_op() {
                *counts.entry(key).or_insert(0) += 1;
            }
        }
        let mut by_count: Vec<usize> = counts.values().copied().collect();
        by_count.sort_unstable_by(|a, b| b.cmp(a));
        let top_10: usize = by_count.iter().take(10).sum();
        assert!(top_10 > 50_000 / 10, "θ = 0.99: the ten hottest keys take a large share ({top_10})");
        // Scrambled: the hottest key is not record 0.
        let hottest = counts.iter().max_by_key(|(_, c)| **c).map(|(k, _)| k.clone()).unwrap();
        assert_ne!(hottest, key_of(Kind::C, 0));
    }

    #[test]
    fn latest_favours_recent_inserts_and_inserts_take_fresh_numbers() {
        let inserted = Inserted::new(1000);
        let spec = Spec::new(Kind::D, 1000);
        let mut a = Generator::new(spec.clone(), ChaCha8Rng::seed_from_u64(1), inserted.clone());
        let mut b = Generator::new(spec, ChaCha8Rng::seed_from_u64(2), inserted.clone());
        let mut inserted_keys = std::collections::HashSet::new();
        let mut recent = 0;
        let mut reads = 0;
        for _ in 0..10_000 {
            for g in [&mut a, &mut b] {
                match g.next_op() {
                    Op::Insert { key, .. } => assert!(inserted_keys.insert(key), "two inserts took one record"),
                    Op::Read { key } => {
                        reads += 1;
                        let newest: std::collections::HashSet<_> = (inserted.count().saturating_sub(100)
                            ..inserted.count())
                            .map(|n| key_of(Kind::D, n))
                            .collect();
                        recent += usize::from(newest.contains(&key));
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        assert!(recent * 2 > reads, "most reads hit the newest 100 records ({recent} of {reads})");
    }

    #[test]
    fn values_have_the_size_and_differ() {
        let mut g = generator(Kind::A, 10, 1);
        let a = g.value();
        let b = g.value();
        assert_eq!(a.len(), YCSB_RECORD_BYTES);
        assert_ne!(a, b);
        let mut small = Generator::new(
            Spec { value_bytes: 4, ..Spec::new(Kind::Put, 10) },
            ChaCha8Rng::seed_from_u64(1),
            Inserted::new(10),
        );
        assert_eq!(small.value().len(), 4);
    }

    #[test]
    fn names_parse() {
        for kind in Kind::ALL {
            assert_eq!(kind.name().parse::<Kind>(), Ok(kind));
        }
        assert_eq!("A".parse::<Kind>(), Ok(Kind::A));
        assert!("z".parse::<Kind>().unwrap_err().contains("unknown workload"));
        assert!(Spec { theta: 1.0, ..Spec::new(Kind::A, 1) }.validate().is_err());
        assert!(Spec::new(Kind::A, 0).validate().is_err());
    }
}
