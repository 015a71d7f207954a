//! The replicated transaction state, entry by entry: votes, decisions,
//! resolution, blocking, exactly-once, snapshots and bounds.

use corekv_rpc::kv::{ClientId, OkReply, Outcome, Version, WriteOp, WriteTag};
use corekv_rpc::txn::{AbortReason, Age, Policy, TxnId};

use super::command::{self, Command, CommandBody, WriteCommand};
use super::shard::{ApplyError, Shard, ShardConfig};
use super::txn::{
    Applied, DecideCommand, Decision, OnePhaseCommand, PrepareCommand, RangeItem, ReadItem, ResolveItem, TxnLimits,
    TxnMeta, TxnSets, Vote, WriteItem,
};

/// A shard and the next log index.
struct Replica {
    shard: Shard,
    index: u64,
}

impl Replica {
    fn new() -> Self {
        Replica { shard: Shard::new(ShardConfig::default()), index: 0 }
    }

    fn with(config: ShardConfig) -> Self {
        Replica { shard: Shard::new(config), index: 0 }
    }

    fn apply(&mut self, stamp_ts: u64, body: CommandBody) -> Result<Applied, ApplyError> {
        self.index += 1;
        self.shard.apply(self.index, &command::encode(&Command { stamp_ts, body }))
    }

    fn ok(&mut self, stamp_ts: u64, body: CommandBody) -> Applied {
        self.apply(stamp_ts, body).expect("applies")
    }

    fn put(&mut self, stamp_ts: u64, client: u128, seq: u64, key: &str, value: &str) -> Applied {
        let tag = WriteTag { client: ClientId::from_u128(client), seq, acked: seq - 1 };
        let op = WriteOp::Put { key: key.into(), value: value.into() };
        self.ok(stamp_ts, CommandBody::Write(WriteCommand { tag, op }))
    }

    fn prepare(&mut self, stamp_ts: u64, txn: TxnMeta, bound: Version, sets: TxnSets) -> Vote {
        match self.ok(stamp_ts, CommandBody::Prepare(PrepareCommand { txn, anchor: 0, bound, sets })) {
            Applied::Vote { vote, .. } => vote,
            other => panic!("{other:?}"),
        }
    }

    fn decide(&mut self, stamp_ts: u64, txn: TxnId, decision: Decision, tag: Option<WriteTag>) -> Applied {
        self.ok(
            stamp_ts,
            CommandBody::Decide(DecideCommand { txn, decision, participants: vec![], tag, attempt_ts: 0 }),
        )
    }

    fn get(&self, key: &str, at: Option<Version>) -> Outcome {
        self.shard.get(key.as_bytes(), at)
    }
}

fn id(n: u64) -> TxnId {
    TxnId { client: ClientId::from_u128(1000 + u128::from(n)), attempt: n }
}

fn meta(n: u64, policy: Policy, attempt_ts: u64) -> TxnMeta {
    TxnMeta { id: id(n), age: Age { start: attempt_ts, id: id(n) }, policy, attempt_ts }
}

fn writes(pairs: &[(&str, Option<&str>)]) -> TxnSets {
    TxnSets {
        writes: pairs.iter().map(|(k, v)| WriteItem { key: k.as_bytes().to_vec(), value: v.map(Into::into) }).collect(),
        ..TxnSets::default()
    }
}

fn read(key: &str, version: Version) -> ReadItem {
    ReadItem { key: key.into(), version }
}

fn value(version: Version, v: &str) -> Outcome {
    Outcome::Ok(OkReply::Value { version, value: v.into() })
}

fn tag(client: u128, seq: u64) -> WriteTag {
    WriteTag { client: ClientId::from_u128(client), seq, acked: seq - 1 }
}

fn yes_bound(vote: Vote) -> Version {
    match vote {
        Vote::Yes { bound } => bound,
        other => panic!("expected yes, got {other:?}"),
    }
}

#[test]
fn a_commit_writes_every_key_at_exactly_the_commit_version() {
    let mut r = Replica::new();
    r.put(100, 1, 1, "a", "old");
    let t = meta(1, Policy::WoundWait, 150);
    let bound = yes_bound(r.prepare(200, t, 180, writes(&[("a", Some("A")), ("b", Some("B"))])));
    assert_eq!(bound, 180, "the leader's bound is above the key's version 100");
    // Prepared, not decided: nothing visible yet.
    assert_eq!(r.get("a", None), value(100, "old"));
    assert_eq!(r.get("b", None), Outcome::NotFound);
    let v = bound + 1000;
    let applied = r.decide(210, t.id, Decision::Commit(v), Some(tag(7, 1)));
    assert!(
        matches!(applied, Applied::Decided { reply: Some(Outcome::Ok(OkReply::Written { version })), .. } if version == v)
    );
    assert_eq!(r.get("a", None), value(v, "A"));
    assert_eq!(r.get("b", None), value(v, "B"));
    assert_eq!(r.get("a", Some(v - 1)), value(100, "old"));
    assert_eq!(r.get("b", Some(v - 1)), Outcome::NotFound);
    assert_eq!(r.shard.last_applied_version(), v);
    assert!(r.shard.txns().intent(&t.id).is_none());
    assert_eq!(r.shard.txns().resolved(&t.id), Some(Decision::Commit(v)));
}

#[test]
fn an_abort_discards_every_write() {
    let mut r = Replica::new();
    let t = meta(1, Policy::WaitDie, 50);
    yes_bound(r.prepare(100, t, 100, writes(&[("a", Some("A")), ("b", None)])));
    let applied = r.decide(110, t.id, Decision::Abort(AbortReason::Requested), Some(tag(7, 1)));
    assert!(matches!(
        applied,
        Applied::Decided { reply: Some(Outcome::Aborted { reason: AbortReason::Requested }), .. }
    ));
    assert_eq!(r.get("a", None), Outcome::NotFound);
    assert_eq!(r.shard.store().key_count(), 0);
    assert_eq!(r.shard.last_applied_version(), 0);
}

#[test]
fn the_bound_is_above_everything_read_or_written_here() {
    let mut r = Replica::new();
    r.put(500, 1, 1, "w", "x"); // version 500
    r.put(900, 1, 2, "other", "x"); // last applied 900
    let t = meta(1, Policy::WoundWait, 10);
    let sets =
        TxnSets { reads: vec![read("w", 500)], writes: writes(&[("w", Some("y"))]).writes, ..TxnSets::default() };
    assert_eq!(yes_bound(r.prepare(950, t, 20, sets)), 901);
    let t2 = meta(2, Policy::WoundWait, 10);
    assert_eq!(yes_bound(r.prepare(960, t2, 5000, writes(&[("z", Some("1"))]))), 5000);
}

#[test]
fn prepared_intents_block_conflicting_prepares_and_plain_writes_until_resolved() {
    let mut r = Replica::new();
    r.put(100, 1, 1, "k", "v0");
    let t1 = meta(1, Policy::WoundWait, 150);
    let b1 = yes_bound(r.prepare(200, t1, 200, writes(&[("k", Some("v1"))])));
    // Another transaction reading or writing k votes no.
    let t2 = meta(2, Policy::WoundWait, 160);
    let reads_k = TxnSets { reads: vec![read("k", 100)], ..TxnSets::default() };
    assert_eq!(r.prepare(210, t2, 210, reads_k.clone()), Vote::No { reason: AbortReason::Conflict });
    assert!(r.shard.txns().intent(&t2.id).is_none());
    // A plain write of k is not applied and not recorded: the same tag applies later.
    assert_eq!(r.put(220, 9, 1, "k", "plain"), Applied::Blocked { txn: t1.id });
    assert_eq!(r.get("k", None), value(100, "v0"));
    // Reads of the newest wait; reads below the bound do not.
    assert_eq!(r.shard.intent_blocking(b"k", None, None), Some(t1.id));
    assert_eq!(r.shard.intent_blocking(b"k", Some(b1), None), Some(t1.id));
    assert_eq!(r.shard.intent_blocking(b"k", Some(b1 - 1), None), None);
    assert_eq!(r.shard.intent_blocking(b"k", None, Some(t1.id)), None, "its own writes never block it");
    r.ok(230, CommandBody::Resolve(vec![ResolveItem { txn: t1.id, decision: Decision::Commit(b1), attempt_ts: 0 }]));
    assert_eq!(r.get("k", None), value(b1, "v1"));
    match r.put(240, 9, 1, "k", "plain") {
        Applied::Reply(Outcome::Ok(OkReply::Written { version })) => assert!(version > b1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_prepared_read_blocks_writers_and_a_prepared_range_blocks_inserts() {
    let mut r = Replica::new();
    let t1 = meta(1, Policy::WoundWait, 10);
    let sets = TxnSets {
        reads: vec![read("r", 0)],
        ranges: vec![RangeItem { start: "m".into(), end: "p".into(), read_ts: 50 }],
        ..TxnSets::default()
    };
    yes_bound(r.prepare(100, t1, 100, sets));
    assert_eq!(r.put(110, 9, 1, "r", "x"), Applied::Blocked { txn: t1.id });
    assert_eq!(r.put(111, 9, 1, "n", "x"), Applied::Blocked { txn: t1.id });
    assert!(matches!(r.put(112, 9, 1, "p", "x"), Applied::Reply(Outcome::Ok(_))), "the range's end is exclusive");
    // Shared with shared: another reader of r prepares.
    let t2 = meta(2, Policy::WoundWait, 11);
    yes_bound(r.prepare(120, t2, 120, TxnSets { reads: vec![read("r", 0)], ..TxnSets::default() }));
    // A writer inside the range does not.
    let t3 = meta(3, Policy::WoundWait, 12);
    assert_eq!(r.prepare(130, t3, 130, writes(&[("o", Some("x"))])), Vote::No { reason: AbortReason::Conflict });
}

#[test]
fn a_stale_read_fails_validation_under_occ_and_is_a_conflict_under_locking() {
    let mut r = Replica::new();
    r.put(100, 1, 1, "k", "v0");
    r.put(200, 1, 2, "k", "v1"); // someone wrote after our read of version 100
    let stale =
        TxnSets { reads: vec![read("k", 100)], writes: writes(&[("j", Some("x"))]).writes, ..TxnSets::default() };
    assert_eq!(
        r.prepare(300, meta(1, Policy::Occ, 50), 300, stale.clone()),
        Vote::No { reason: AbortReason::Validation }
    );
    assert_eq!(r.prepare(301, meta(2, Policy::WoundWait, 50), 301, stale), Vote::No { reason: AbortReason::Conflict });
    // A range read at 150 sees the write at 200 appear in it.
    let range =
        TxnSets { ranges: vec![RangeItem { start: "a".into(), end: Vec::new(), read_ts: 150 }], ..TxnSets::default() };
    assert_eq!(r.prepare(302, meta(3, Policy::Occ, 50), 302, range), Vote::No { reason: AbortReason::Validation });
    let fresh = TxnSets { reads: vec![read("k", 200)], ..TxnSets::default() };
    assert!(yes_bound(r.prepare(303, meta(4, Policy::Occ, 50), 303, fresh)) > 200);
    assert_eq!(r.shard.store().key_count(), 1);
}

#[test]
fn prepares_repeat_their_vote_and_never_revive_a_resolved_transaction() {
    let mut r = Replica::new();
    let t = meta(1, Policy::WoundWait, 10);
    let sets = writes(&[("k", Some("v"))]);
    let b = yes_bound(r.prepare(100, t, 100, sets.clone()));
    assert_eq!(r.prepare(200, t, 200, sets.clone()), Vote::Yes { bound: b }, "a retried prepare keeps its bound");
    r.ok(
        300,
        CommandBody::Resolve(vec![ResolveItem {
            txn: t.id,
            decision: Decision::Abort(AbortReason::Wounded),
            attempt_ts: 0,
        }]),
    );
    // A duplicate prepare delayed past the decision creates nothing.
    assert_eq!(r.prepare(400, t, 400, sets), Vote::Decided(Decision::Abort(AbortReason::Wounded)));
    assert!(r.shard.txns().intent(&t.id).is_none());
    assert_eq!(r.put(500, 9, 1, "k", "x"), Applied::Reply(Outcome::Ok(OkReply::Written { version: 500 })));
    // Resolving a transaction never prepared here remembers it, so its late prepare
    // is refused too.
    let u = meta(2, Policy::WoundWait, 10);
    r.ok(600, CommandBody::Resolve(vec![ResolveItem { txn: u.id, decision: Decision::Commit(700), attempt_ts: 0 }]));
    assert_eq!(r.prepare(800, u, 800, writes(&[("q", Some("v"))])), Vote::Decided(Decision::Commit(700)));
    assert_eq!(r.get("q", None), Outcome::NotFound);
}

#[test]
fn the_first_decision_stands() {
    let mut r = Replica::new();
    let t = meta(1, Policy::WoundWait, 10);
    let b = yes_bound(r.prepare(100, t, 100, writes(&[("k", Some("v"))])));
    // The anchor timed out and wrote an abort before the client's commit arrived.
    let first = r.decide(200, t.id, Decision::Abort(AbortReason::Timeout), None);
    assert!(matches!(first, Applied::Decided { decision: Decision::Abort(AbortReason::Timeout), reply: None, .. }));
    let late = r.decide(300, t.id, Decision::Commit(b), Some(tag(5, 1)));
    assert_eq!(
        late,
        Applied::Decided {
            txn: t.id,
            decision: Decision::Abort(AbortReason::Timeout),
            participants: vec![],
            reply: Some(Outcome::Aborted { reason: AbortReason::Timeout }),
        }
    );
    assert_eq!(r.get("k", None), Outcome::NotFound);
    // And an abort after a commit changes nothing either.
    let u = meta(2, Policy::WoundWait, 10);
    let b = yes_bound(r.prepare(400, u, 400, writes(&[("j", Some("v"))])));
    r.decide(410, u.id, Decision::Commit(b), Some(tag(5, 2)));
    let after = r.decide(420, u.id, Decision::Abort(AbortReason::Timeout), None);
    assert!(matches!(after, Applied::Decided { decision: Decision::Commit(v), .. } if v == b));
    assert_eq!(r.get("j", None), value(b, "v"));
}

#[test]
fn a_commit_is_exactly_once_and_records_are_forgotten_into_the_resolved_memory() {
    let mut r = Replica::new();
    let t = meta(1, Policy::WoundWait, 10);
    let b = yes_bound(r.prepare(100, t, 100, writes(&[("k", Some("v"))])));
    let commit = DecideCommand {
        txn: t.id,
        decision: Decision::Commit(b),
        participants: vec![3, 5],
        tag: Some(tag(5, 1)),
        attempt_ts: 10,
    };
    let first = r.ok(200, CommandBody::Decide(commit.clone()));
    assert!(matches!(&first, Applied::Decided { participants, .. } if participants == &vec![3, 5]));
    assert!(r.shard.txns().record(&t.id).is_some());
    // The client retries the same commit: the kept reply, not a second write.
    let again = r.ok(300, CommandBody::Decide(commit.clone()));
    assert_eq!(again, first);
    r.ok(400, CommandBody::Forget(vec![t.id]));
    assert!(r.shard.txns().record(&t.id).is_none());
    assert_eq!(r.shard.txns().decision(&t.id), Some(Decision::Commit(b)));
    // The client acknowledged it (acked prefix 1): a retry now is indeterminate.
    let acked = DecideCommand { tag: Some(WriteTag { client: ClientId::from_u128(5), seq: 1, acked: 0 }), ..commit };
    let later_tag = WriteTag { client: ClientId::from_u128(5), seq: 2, acked: 1 };
    r.ok(
        500,
        CommandBody::Decide(DecideCommand {
            txn: id(9),
            decision: Decision::Abort(AbortReason::Requested),
            participants: vec![],
            tag: Some(later_tag),
            attempt_ts: 0,
        }),
    );
    assert!(matches!(
        r.ok(600, CommandBody::Decide(acked)),
        Applied::Decided { reply: Some(Outcome::Indeterminate), .. }
    ));
}

#[test]
fn one_phase_commits_atomically_or_aborts_and_is_exactly_once() {
    let mut r = Replica::new();
    r.put(100, 1, 1, "a", "0");
    let t = meta(1, Policy::WoundWait, 50);
    let sets = TxnSets {
        reads: vec![read("a", 100)],
        writes: writes(&[("a", Some("1")), ("b", Some("1"))]).writes,
        ..TxnSets::default()
    };
    let cmd = OnePhaseCommand { txn: t, tag: tag(3, 1), bound: 150, sets };
    let reply = r.ok(200, CommandBody::OnePhase(cmd.clone()));
    assert_eq!(reply, Applied::Reply(Outcome::Ok(OkReply::Written { version: 150 })));
    assert_eq!(r.get("a", None), value(150, "1"));
    assert_eq!(r.get("b", None), value(150, "1"));
    assert_eq!(r.ok(300, CommandBody::OnePhase(cmd)), reply, "a retry answers the kept reply");
    assert_eq!(r.get("a", None), value(150, "1"));
    // A stale read aborts the whole transaction.
    let u = meta(2, Policy::Occ, 60);
    let stale =
        TxnSets { reads: vec![read("a", 100)], writes: writes(&[("c", Some("1"))]).writes, ..TxnSets::default() };
    let reply = r.ok(400, CommandBody::OnePhase(OnePhaseCommand { txn: u, tag: tag(3, 2), bound: 400, sets: stale }));
    assert_eq!(reply, Applied::Reply(Outcome::Aborted { reason: AbortReason::Validation }));
    assert_eq!(r.get("c", None), Outcome::NotFound);
}

#[test]
fn a_delete_of_an_absent_key_writes_nothing_at_commit() {
    let mut r = Replica::new();
    r.put(100, 1, 1, "live", "x");
    let t = meta(1, Policy::WoundWait, 10);
    let b = yes_bound(r.prepare(200, t, 200, writes(&[("live", None), ("absent", None)])));
    r.decide(300, t.id, Decision::Commit(b), None);
    assert_eq!(r.get("live", None), Outcome::NotFound);
    assert_eq!(r.shard.store().newest_version(b"live"), b, "a tombstone at the commit version");
    assert_eq!(r.shard.store().newest_version(b"absent"), 0, "nothing written");
}

#[test]
fn a_commit_that_breaks_the_protocol_stops_the_replica() {
    let mut r = Replica::new();
    let t = meta(1, Policy::WoundWait, 10);
    let b = yes_bound(r.prepare(100, t, 100, writes(&[("k", Some("v"))])));
    let before = r.shard.clone();
    let err = r
        .apply(
            200,
            CommandBody::Resolve(vec![ResolveItem { txn: t.id, decision: Decision::Commit(b - 1), attempt_ts: 0 }]),
        )
        .unwrap_err();
    assert!(matches!(err, ApplyError::Txn(_)), "{err}");
    assert_eq!(r.shard.store(), before.store(), "nothing written");
}

#[test]
fn snapshots_carry_intents_records_and_the_resolved_memory() {
    let mut r = Replica::new();
    let t1 = meta(1, Policy::WoundWait, 10);
    yes_bound(r.prepare(100, t1, 100, writes(&[("k", Some("v"))])));
    let t2 = meta(2, Policy::Occ, 11);
    let b2 = yes_bound(r.prepare(
        110,
        t2,
        110,
        TxnSets { ranges: vec![RangeItem { start: "m".into(), end: "p".into(), read_ts: 100 }], ..TxnSets::default() },
    ));
    let t3 = meta(3, Policy::WaitDie, 12);
    let b3 = yes_bound(r.prepare(120, t3, 120, writes(&[("x", Some("1"))])));
    r.ok(
        130,
        CommandBody::Decide(DecideCommand {
            txn: t3.id,
            decision: Decision::Commit(b3),
            participants: vec![4],
            tag: Some(tag(1, 1)),
            attempt_ts: 12,
        }),
    );
    r.ok(
        140,
        CommandBody::Resolve(vec![ResolveItem {
            txn: id(4),
            decision: Decision::Abort(AbortReason::Died),
            attempt_ts: 0,
        }]),
    );
    let bytes = r.shard.snapshot();
    let mut back = Replica { shard: Shard::restore(ShardConfig::default(), &bytes).unwrap(), index: r.index };
    assert_eq!(back.shard, r.shard);
    assert_eq!(back.shard.snapshot(), bytes);
    // The rebuilt indexes block exactly what the originals did.
    assert_eq!(back.put(200, 9, 1, "k", "x"), Applied::Blocked { txn: t1.id });
    assert_eq!(back.put(201, 9, 1, "n", "x"), Applied::Blocked { txn: t2.id });
    assert_eq!(back.shard.txns().record(&t3.id).map(|r| r.participants.clone()), Some(vec![4]));
    assert_eq!(
        back.prepare(202, meta(4, Policy::WaitDie, 13), 202, TxnSets::default()),
        Vote::Decided(Decision::Abort(AbortReason::Died))
    );
    back.ok(210, CommandBody::Resolve(vec![ResolveItem { txn: t2.id, decision: Decision::Commit(b2), attempt_ts: 0 }]));
    assert!(matches!(back.put(211, 9, 1, "n", "x"), Applied::Reply(Outcome::Ok(_))));
}

#[test]
fn a_version_1_snapshot_restores_with_no_transaction_state() {
    let mut r = Replica::new();
    r.put(100, 1, 1, "k", "v");
    let v2 = r.shard.snapshot();
    // Rebuild the version 1 layout: a 40-byte header without txn_len, no txn part.
    let txn_len = u64::from_le_bytes(v2[40..48].try_into().unwrap()) as usize;
    let mut v1 = v2[..40].to_vec();
    v1[8..12].copy_from_slice(&super::SNAPSHOT_FORMAT_V1.to_le_bytes());
    v1.extend_from_slice(&v2[48..v2.len() - txn_len]);
    let crc = crc32fast::hash(&v1[16..]);
    v1[12..16].copy_from_slice(&crc.to_le_bytes());
    let back = Shard::restore(ShardConfig::default(), &v1).unwrap();
    assert_eq!(back, r.shard);
}

#[test]
fn a_forgotten_resolution_raises_the_prepare_floor() {
    let limits = TxnLimits { resolved_max: 2, resolved_age_ts: 1_000, ..TxnLimits::default() };
    let mut r = Replica::with(ShardConfig { txn: limits, ..ShardConfig::default() });
    for n in 1..=3 {
        r.ok(
            100 + n,
            CommandBody::Resolve(vec![ResolveItem {
                txn: id(n),
                decision: Decision::Abort(AbortReason::Requested),
                attempt_ts: 100 + n,
            }]),
        );
    }
    // The oldest of three was forgotten: attempts that began at or before it may no
    // longer prepare, so its own late prepare cannot bring an intent back.
    assert_eq!(r.shard.txns().resolved(&id(1)), None);
    assert_eq!(
        r.prepare(200, meta(1, Policy::WoundWait, 101), 200, writes(&[("k", Some("v"))])),
        Vote::No { reason: AbortReason::Timeout }
    );
    yes_bound(r.prepare(201, meta(7, Policy::WoundWait, 150), 201, writes(&[("k", Some("v"))])));
    // Age: past resolved_age_ts of log time everything is forgotten, and attempts
    // older than the window are refused.
    r.put(5_000, 1, 1, "other", "x");
    assert_eq!(r.shard.txns().resolved(&id(3)), None);
    assert_eq!(
        r.prepare(5_001, meta(8, Policy::WoundWait, 3_000), 5_001, TxnSets::default()),
        Vote::No { reason: AbortReason::Timeout }
    );
    yes_bound(r.prepare(5_002, meta(9, Policy::WoundWait, 4_500), 5_002, TxnSets::default()));
}

#[test]
fn intents_and_records_are_bounded() {
    let limits = TxnLimits { intents_max: 1, records_max: 1, ..TxnLimits::default() };
    let mut r = Replica::with(ShardConfig { txn: limits, ..ShardConfig::default() });
    yes_bound(r.prepare(100, meta(1, Policy::WoundWait, 10), 100, writes(&[("a", Some("v"))])));
    assert_eq!(
        r.prepare(110, meta(2, Policy::WoundWait, 11), 110, writes(&[("b", Some("v"))])),
        Vote::No { reason: AbortReason::Conflict }
    );
    let d = |txn, decision, seq| DecideCommand {
        txn,
        decision,
        participants: vec![2],
        tag: Some(tag(1, seq)),
        attempt_ts: 0,
    };
    assert!(matches!(r.ok(120, CommandBody::Decide(d(id(5), Decision::Commit(200), 1))), Applied::Decided { .. }));
    assert_eq!(
        r.ok(130, CommandBody::Decide(d(id(6), Decision::Commit(300), 2))),
        Applied::Reply(Outcome::Unavailable)
    );
    // An abort needs no room: with no record, abort is the answer anyway.
    assert!(matches!(
        r.ok(140, CommandBody::Decide(d(id(7), Decision::Abort(AbortReason::Requested), 3))),
        Applied::Decided { .. }
    ));
}

#[test]
fn replicas_applying_the_same_entries_agree() {
    let mut a = Replica::new();
    let mut b = Replica::new();
    let t = meta(1, Policy::WoundWait, 10);
    for r in [&mut a, &mut b] {
        r.put(100, 1, 1, "k", "v");
        let bound = yes_bound(r.prepare(200, t, 150, writes(&[("k", Some("w")), ("j", None)])));
        r.put(210, 2, 1, "k", "blocked");
        r.decide(300, t.id, Decision::Commit(bound + 5), Some(tag(3, 1)));
        r.put(310, 2, 1, "k", "after");
    }
    assert_eq!(a.shard, b.shard);
    assert_eq!(a.shard.snapshot(), b.shard.snapshot());
}
