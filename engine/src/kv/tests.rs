//! Whole-state-machine properties: determinism across replicas, versions that only
//! rise, exactly-once under retries, snapshots that stand in for the log.

use std::collections::BTreeSet;

use corekv_rpc::kv::{ClientId, OkReply, Outcome, WriteOp, WriteTag};
use proptest::prelude::*;

use super::command::{self, Command, CommandBody, WriteCommand};
use super::dedup::DedupLimits;
use super::hlc::TS_MAX;
use super::shard::{Shard, ShardConfig};
use super::store::Retention;

/// A small, tight configuration so retention, eviction, expiry and the client limit
/// all happen within a short random run.
fn tight() -> ShardConfig {
    ShardConfig {
        retention: Retention { versions_per_key_max: 3, history_ts_span: 400 },
        dedup: DedupLimits { clients_max: 3, replies_per_client_max: 4, replies_max: 10, reply_age_ts_max: 300 },
        ..ShardConfig::default()
    }
}

#[derive(Debug, Clone)]
struct Step {
    client: u8,
    seq: u64,
    acked_back: u64,
    stamp_ts: u64,
    kind: u8,
    key: u8,
    expected: u64,
}

fn step() -> impl Strategy<Value = Step> {
    (0u8..5, 1u64..12, 0u64..6, 0u64..2_000, 0u8..4, 0u8..5, 0u64..3).prop_map(
        |(client, seq, acked_back, stamp_ts, kind, key, expected)| Step {
            client,
            seq,
            acked_back,
            stamp_ts,
            kind,
            key,
            expected,
        },
    )
}

fn encode(s: &Step, current: u64) -> Vec<u8> {
    let key = vec![b'k', s.key];
    let op = match s.kind {
        0 | 1 => WriteOp::Put { key, value: vec![s.client, s.seq as u8] },
        2 => WriteOp::Delete { key },
        // expected: 0 (only if absent), the current version, or a wrong one.
        _ => WriteOp::Cas { key, expected: [0, current, current + 1][s.expected as usize], value: vec![s.key] },
    };
    let tag = WriteTag {
        client: ClientId::from_u128(s.client as u128 * 0x1_0000_0001),
        seq: s.seq,
        acked: s.seq.saturating_sub(1 + s.acked_back),
    };
    command::encode(&Command { stamp_ts: s.stamp_ts, body: CommandBody::Write(WriteCommand { tag, op }) })
}

/// Applies the steps to `shard` from log index `first_index`; returns the replies.
fn run(shard: &mut Shard, steps: &[Step], first_index: u64) -> Vec<Outcome> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let current = shard.store().current_version(&[b'k', s.key]);
            shard.apply_reply(first_index + i as u64, &encode(s, current)).expect("well-formed entry")
        })
        .collect()
}

proptest! {
    #[test]
    fn two_replicas_apply_the_same_entries_to_the_same_state_and_replies(
        steps in proptest::collection::vec(step(), 1..150)
    ) {
        let mut a = Shard::new(tight());
        let mut b = Shard::new(tight());
        let ra = run(&mut a, &steps, 1);
        let rb = run(&mut b, &steps, 1);
        prop_assert_eq!(&ra, &rb);
        prop_assert_eq!(a.snapshot(), b.snapshot());
        prop_assert_eq!(&a, &b);
    }

    #[test]
    fn versions_only_rise_whatever_the_stamps(steps in proptest::collection::vec(step(), 1..150)) {
        let mut shard = Shard::new(tight());
        for (i, s) in steps.iter().enumerate() {
            let before = shard.last_applied_version();
            let reply = run(&mut shard, std::slice::from_ref(s), i as u64 + 1).remove(0);
            let after = shard.last_applied_version();
            prop_assert!(after >= before);
            if after > before {
                // A fresh write: exactly max(last + 1, stamp) (DESIGN §6).
                prop_assert_eq!(after, (before + 1).max(s.stamp_ts));
                prop_assert_eq!(reply, Outcome::Ok(OkReply::Written { version: after }));
            } else if let Outcome::Ok(OkReply::Written { version }) = reply {
                // A replayed reply names an old version.
                prop_assert!(version <= before);
            }
        }
    }

    #[test]
    fn a_restored_snapshot_continues_exactly_like_the_original(
        before in proptest::collection::vec(step(), 0..100),
        after in proptest::collection::vec(step(), 1..60),
    ) {
        let mut original = Shard::new(tight());
        run(&mut original, &before, 1);
        let bytes = original.snapshot();
        let mut restored = Shard::restore(tight(), &bytes).expect("own snapshot restores");
        prop_assert_eq!(&restored, &original);
        prop_assert_eq!(restored.snapshot(), bytes);
        let next = before.len() as u64 + 1;
        prop_assert_eq!(run(&mut original, &after, next), run(&mut restored, &after, next));
        prop_assert_eq!(original.snapshot(), restored.snapshot());
    }

    #[test]
    fn no_client_seq_is_ever_applied_twice(steps in proptest::collection::vec(step(), 1..250)) {
        // Puts only, so every applied write raises the version. Nothing expires by age
        // (the age is far above any retry, DESIGN §6); the count limits are tight, so
        // eviction, the total bound and the client limit all happen.
        let config = ShardConfig { dedup: DedupLimits { reply_age_ts_max: TS_MAX, ..tight().dedup }, ..tight() };
        let mut shard = Shard::new(config);
        let mut applied = BTreeSet::new();
        for (i, s) in steps.iter().enumerate() {
            let s = Step { kind: 0, ..s.clone() };
            let before = shard.last_applied_version();
            let reply = run(&mut shard, std::slice::from_ref(&s), i as u64 + 1).remove(0);
            if shard.last_applied_version() > before {
                prop_assert!(applied.insert((s.client, s.seq)), "client {} seq {} applied twice", s.client, s.seq);
            } else {
                prop_assert!(
                    matches!(reply, Outcome::Ok(_) | Outcome::Indeterminate | Outcome::Unavailable),
                    "unexpected {:?}", reply
                );
            }
        }
    }

    #[test]
    fn a_duplicated_entry_never_writes_twice(steps in proptest::collection::vec(step(), 1..80)) {
        // Every entry proposed twice in a row (a retry): the second answer equals the
        // first (or is indeterminate / unavailable), and the store equals a run where
        // the retries were never proposed.
        let mut once = Shard::new(ShardConfig { dedup: DedupLimits::default(), ..tight() });
        let mut twice = once.clone();
        let mut index = 0;
        for s in &steps {
            let current = once.store().current_version(&[b'k', s.key]);
            let e = encode(s, current);
            index += 1;
            let r1 = once.apply_reply(index, &e).expect("well-formed");
            let t1 = twice.apply_reply(2 * index - 1, &e).expect("well-formed");
            let t2 = twice.apply_reply(2 * index, &e).expect("well-formed");
            prop_assert_eq!(&r1, &t1);
            match t1 {
                Outcome::Invalid { .. } | Outcome::Indeterminate | Outcome::Unavailable => {}
                _ => prop_assert_eq!(&t2, &t1),
            }
            prop_assert_eq!(once.store(), twice.store());
        }
    }
}

#[test]
fn expiry_by_hlc_age_is_identical_on_two_replicas() {
    let config = tight();
    let mut a = Shard::new(config);
    let put = |seq, stamp_ts| {
        command::encode(&Command {
            stamp_ts,
            body: CommandBody::Write(WriteCommand {
                tag: WriteTag { client: ClientId::from_u128(1), seq, acked: 0 },
                op: WriteOp::Put { key: b"k".to_vec(), value: vec![seq as u8] },
            }),
        })
    };
    let other = |stamp_ts| {
        command::encode(&Command {
            stamp_ts,
            body: CommandBody::Write(WriteCommand {
                tag: WriteTag { client: ClientId::from_u128(2), seq: stamp_ts, acked: stamp_ts - 1 },
                op: WriteOp::Put { key: b"j".to_vec(), value: vec![] },
            }),
        })
    };
    let entries = [put(1, 100), other(200), put(1, 250), other(401), put(1, 402)];
    let mut b = a.clone();
    let ra: Vec<_> = entries.iter().enumerate().map(|(i, e)| a.apply_reply(i as u64 + 1, e).unwrap()).collect();
    let rb: Vec<_> = entries.iter().enumerate().map(|(i, e)| b.apply_reply(i as u64 + 1, e).unwrap()).collect();
    assert_eq!(ra, rb);
    assert_eq!(ra[2], ra[0], "a retry within the age gets the kept reply");
    assert_eq!(ra[4], Outcome::Indeterminate, "log time 402 is past 100 + 300: the reply expired");
    assert_eq!(a, b);
    assert_eq!(a.snapshot(), b.snapshot());
}

proptest! {
    #[test]
    fn apply_of_random_or_mutated_bytes_never_panics_and_changes_nothing_on_error(
        bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        flips in proptest::collection::vec((proptest::num::usize::ANY, 1u8..=255), 1..4),
        s in step(),
    ) {
        let mut shard = Shard::new(tight());
        let before = shard.clone();
        if shard.apply_reply(1, &bytes).is_err() {
            prop_assert_eq!(&shard, &before);
        }
        let mut entry = encode(&s, 0);
        for (at, x) in flips {
            let at = at % entry.len();
            entry[at] ^= x;
        }
        let mut shard = Shard::new(tight());
        if shard.apply_reply(1, &entry).is_err() {
            prop_assert_eq!(&shard, &before);
        }
    }
}

// ----- regressions found by review ------------------------------------------

fn put_cmd(client: u128, seq: u64, acked: u64, stamp_ts: u64, key: &[u8]) -> Vec<u8> {
    command::encode(&Command {
        stamp_ts,
        body: CommandBody::Write(WriteCommand {
            tag: WriteTag { client: ClientId::from_u128(client), seq, acked },
            op: WriteOp::Put { key: key.to_vec(), value: vec![seq as u8] },
        }),
    })
}

/// `check_meta` bounds the log clock but not `last_applied_version`: a CRC-valid
/// snapshot (from a buggy or hostile peer) with last_applied_version = u64::MAX
/// restores fine, and the first write then panics (`last_applied_version + 1`
/// overflows in debug; in release it wraps to 0 and `Store::write`'s
/// "not above the key's newest" assertion aborts the process).
#[test]
fn restore_refuses_a_last_applied_version_the_next_write_cannot_exceed() {
    let mut s = Shard::new(ShardConfig::default());
    s.apply_reply(1, &put_cmd(1, 1, 0, 100, b"k")).unwrap();
    let mut bad = s.clone();
    bad.meta.last_applied_version = u64::MAX;
    let restored = Shard::restore(ShardConfig::default(), &bad.snapshot());
    if let Ok(mut shard) = restored {
        let applied = std::panic::catch_unwind(move || shard.apply_reply(2, &put_cmd(1, 2, 1, 200, b"k")));
        assert!(applied.is_ok(), "restore accepted a state whose next write panics");
    }
}

/// The HLC accepts `observe(TS_MAX)` and then `now()` returns TS_MAX + 1, a stamp
/// every replica's `apply` refuses (StampOutOfRange): the committed entry stops
/// every replica of the shard.
#[test]
fn hlc_never_produces_a_stamp_apply_refuses() {
    assert!(super::hlc::Hlc::starting_at(TS_MAX).is_err(), "no room above TS_MAX");
    let mut clock = super::hlc::Hlc::starting_at(super::hlc::OBSERVE_TS_MAX).expect("the largest observable");
    let stamp = clock.now(u64::MAX);
    let mut s = Shard::new(ShardConfig::default());
    let applied = s.apply_reply(1, &put_cmd(1, 1, 0, stamp, b"k"));
    assert!(applied.is_ok(), "stamp {stamp} from the HLC is refused by apply: {applied:?}");
}
