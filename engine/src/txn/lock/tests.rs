//! The lock table's scenarios, property tests and a brute-force reference.

use super::*;
use corekv_rpc::kv::ClientId;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use AbortReason::{Conflict, Died, Requested, Timeout, Wounded};
use LockMode::{Exclusive as X, Shared as S};
use Policy::{NoWait, Occ, WaitDie, WoundWait};

fn txn_id(client: u128, attempt: u64) -> TxnId {
    TxnId { client: ClientId::from_u128(client), attempt }
}

/// Transaction `n`, with start version `start` (smaller = older).
fn info(n: u128, start: u64, policy: Policy) -> TxnInfo {
    let id = txn_id(n, 1);
    TxnInfo { id, age: Age { start, id }, policy, begun_ms: 0 }
}

fn key(k: &str) -> Target {
    Target::Key(k.as_bytes().to_vec())
}

fn range(start: &str, end: &str) -> Target {
    Target::Range { start: start.as_bytes().to_vec(), end: end.as_bytes().to_vec() }
}

fn keys(ks: &[&str]) -> Vec<Vec<u8>> {
    ks.iter().map(|k| k.as_bytes().to_vec()).collect()
}

fn granted(txn: &TxnInfo, token: Token) -> LockEvent {
    LockEvent::Granted { id: txn.id, token }
}

fn aborted(txn: &TxnInfo, reason: AbortReason, token: Option<Token>) -> LockEvent {
    LockEvent::Aborted { id: txn.id, reason, token }
}

fn config() -> LockConfig {
    LockConfig { wait_ms_max: 100, lifetime_ms: 1_000, locks_per_txn_max: 4, txns_max: 8 }
}

fn table() -> LockTable {
    LockTable::new(config())
}

/// True when lock (or request) `a` of one transaction and `b` of another conflict,
/// computed from the rules alone (the checker's own reference, not the table's).
fn reference_conflict(a: (&Target, LockMode), b: (&Target, LockMode)) -> bool {
    match (a, b) {
        ((Target::Key(x), a_mode), (Target::Key(y), b_mode)) => x == y && (a_mode == X || b_mode == X),
        ((Target::Key(k), mode), (Target::Range { start, end }, _))
        | ((Target::Range { start, end }, _), (Target::Key(k), mode)) => {
            mode == X && k >= start && (end.is_empty() || k < end)
        }
        ((Target::Range { .. }, _), (Target::Range { .. }, _)) => false,
    }
}

/// The granted locks of `txn`, from its own lists.
fn granted_locks(txn: &Txn) -> Vec<(Target, LockMode)> {
    let keys = txn.keys.iter().map(|(k, mode)| (Target::Key(k.clone()), *mode));
    let ranges = txn.ranges.iter().map(|(start, end)| (range_target(start, end), S));
    keys.chain(ranges).collect()
}

fn range_target(start: &[u8], end: &[u8]) -> Target {
    Target::Range { start: start.to_vec(), end: end.to_vec() }
}

/// The conflict set of every waiting request, by transaction, computed by brute
/// force over every transaction: holders with a conflicting granted lock, and
/// older transactions with a conflicting waiting request.
fn waits_for(t: &LockTable) -> BTreeMap<TxnId, Vec<Member>> {
    let mut graph = BTreeMap::new();
    for me in t.txns.values() {
        let Some(wait) = &me.waiting else { continue };
        let request = (&wait.target, wait.mode);
        let mut members = Vec::new();
        for other in t.txns.values().filter(|other| other.age != me.age) {
            let member = |holder| Member { age: other.age, policy: other.policy, prepared: other.prepared, holder };
            if granted_locks(other).iter().any(|(target, mode)| reference_conflict(request, (target, *mode))) {
                members.push(member(true));
            }
            let older_wait = other.waiting.as_ref().filter(|_| other.age < me.age);
            if older_wait.is_some_and(|theirs| reference_conflict(request, (&theirs.target, theirs.mode))) {
                members.push(member(false));
            }
        }
        graph.insert(me.age.id, members);
    }
    graph
}

/// Incompatible granted locks of two transactions, by brute force.
fn check_granted_compatible(t: &LockTable) -> Result<(), String> {
    let locks: Vec<(TxnId, Vec<(Target, LockMode)>)> =
        t.txns.values().map(|txn| (txn.age.id, granted_locks(txn))).collect();
    for (i, (a, a_locks)) in locks.iter().enumerate() {
        for (b, b_locks) in &locks[i + 1..] {
            for (x, x_mode) in a_locks {
                if let Some((y, _)) = b_locks.iter().find(|(y, y_mode)| reference_conflict((x, *x_mode), (y, *y_mode)))
                {
                    return Err(format!("{a} holds {x:?} and {b} holds {y:?}"));
                }
            }
        }
    }
    Ok(())
}

/// Every invariant of the module header, and the indexes' agreement.
fn check(t: &LockTable) -> Result<(), String> {
    check_indexes(t)?;
    check_granted_compatible(t)?;
    check_waiters(t)?;
    check_acyclic(t)
}

fn check_indexes(t: &LockTable) -> Result<(), String> {
    for (k, locks) in &t.keys {
        if locks.is_empty() {
            return Err(format!("empty entry for key {k:?}"));
        }
        for (id, mode) in &locks.holders {
            if t.txns.get(id).and_then(|txn| txn.keys.get(k)) != Some(mode) {
                return Err(format!("holder {id} of {k:?} not in its txn's index"));
            }
        }
        for (age, mode) in &locks.waiters {
            let wait = t.txns.get(&age.id).and_then(|txn| txn.waiting.as_ref());
            if !wait.is_some_and(|w| w.target == Target::Key(k.clone()) && w.mode == *mode) {
                return Err(format!("waiter {} of {k:?} not its txn's wait", age.id));
            }
        }
    }
    let (mut ranges, mut waiting, mut unprepared) = (0, 0, 0);
    for (id, txn) in &t.txns {
        if txn.age.id != *id {
            return Err(format!("{id} has the age of {}", txn.age.id));
        }
        for (k, mode) in &txn.keys {
            if t.keys.get(k).and_then(|locks| locks.holders.get(id)) != Some(mode) {
                return Err(format!("{id}'s key {k:?} not in the key index"));
            }
        }
        for (start, end) in &txn.ranges {
            if !t.ranges_granted.contains(&RangeLock { start: start.clone(), end: end.clone(), age: txn.age }) {
                return Err(format!("{id}'s range not in the range index"));
            }
        }
        ranges += txn.ranges.len();
        if let Some(wait) = &txn.waiting {
            waiting += 1;
            if txn.prepared {
                return Err(format!("prepared {id} waits"));
            }
            if !t.wait_since.contains(&(wait.since_ms, *id)) {
                return Err(format!("{id}'s wait not in the timeout index"));
            }
            let queued = match &wait.target {
                Target::Key(k) => t.keys.get(k).and_then(|locks| locks.waiters.get(&txn.age)) == Some(&wait.mode),
                Target::Range { start, end } => {
                    t.ranges_waiting.contains(&RangeLock { start: start.clone(), end: end.clone(), age: txn.age })
                }
            };
            if !queued {
                return Err(format!("{id}'s wait not queued"));
            }
        }
        if !txn.prepared {
            unprepared += 1;
            if !t.lifetimes.contains(&(txn.begun_ms, *id)) {
                return Err(format!("unprepared {id} not in the lifetime index"));
            }
        }
        if t.tombstones.contains_key(id) {
            return Err(format!("{id} both active and tombstoned"));
        }
    }
    let counts = (t.ranges_granted.len(), t.wait_since.len(), t.lifetimes.len());
    if counts != (ranges, waiting, unprepared) {
        return Err(format!("index sizes {counts:?}, expected {:?}", (ranges, waiting, unprepared)));
    }
    let waiting_ranges =
        t.txns.values().filter(|txn| matches!(txn.waiting, Some(Wait { target: Target::Range { .. }, .. }))).count();
    if t.ranges_waiting.len() != waiting_ranges {
        return Err("waiting range index out of step".into());
    }
    if t.tombstones.len() > t.cfg.txns_max || t.tombstones.len() != t.tombstone_order.len() {
        return Err("tombstones unbounded or out of step".into());
    }
    Ok(())
}

fn check_waiters(t: &LockTable) -> Result<(), String> {
    for (id, members) in waits_for(t) {
        let me = t.txn(id);
        if members.is_empty() {
            return Err(format!("{id} waits for nothing"));
        }
        let wait = me.waiting.as_ref().expect("a waiter");
        let ids = |members: &[Member]| members.iter().map(|m| (m.age.id, m.holder)).collect::<BTreeSet<_>>();
        let table_view = t.conflicts(me.age, wait.target.item(), wait.mode);
        if ids(&table_view) != ids(&members) {
            return Err(format!("{id}: the table's conflict set differs from the rules'"));
        }
        for m in &members {
            let ok = m.policy == me.policy
                && match me.policy {
                    WoundWait => m.age < me.age || m.prepared,
                    WaitDie => me.age < m.age,
                    NoWait | Occ => false,
                };
            if !ok {
                return Err(format!(
                    "{id} ({}) waits for {} ({}, prepared {})",
                    me.policy, m.age.id, m.policy, m.prepared
                ));
            }
        }
    }
    Ok(())
}

fn check_acyclic(t: &LockTable) -> Result<(), String> {
    let graph: BTreeMap<TxnId, BTreeSet<TxnId>> =
        waits_for(t).into_iter().map(|(id, members)| (id, members.iter().map(|m| m.age.id).collect())).collect();
    // Kahn: peel off transactions nobody waits for until none is left.
    let mut indegree: BTreeMap<TxnId, usize> = graph.keys().map(|id| (*id, 0)).collect();
    for to in graph.values().flatten() {
        *indegree.entry(*to).or_default() += 1;
    }
    let mut free: Vec<TxnId> = indegree.iter().filter(|(_, d)| **d == 0).map(|(id, _)| *id).collect();
    let mut peeled = 0;
    while let Some(id) = free.pop() {
        peeled += 1;
        for to in graph.get(&id).into_iter().flatten() {
            let d = indegree.get_mut(to).expect("counted");
            *d -= 1;
            if *d == 0 {
                free.push(*to);
            }
        }
    }
    if peeled != indegree.len() {
        return Err(format!("waits-for cycle: {graph:?}"));
    }
    Ok(())
}

#[track_caller]
fn ok(t: &LockTable) {
    if let Err(e) = check(t) {
        panic!("invariant broken: {e}");
    }
}

#[test]
fn a_younger_writer_after_an_older_reader_aborts_waits_or_dies_by_policy() {
    for (policy, answer) in [
        (NoWait, Acquire::Aborted(Conflict)),
        (Occ, Acquire::Aborted(Conflict)),
        (WoundWait, Acquire::Waiting),
        (WaitDie, Acquire::Aborted(Died)),
    ] {
        let mut t = table();
        let (old, young) = (info(1, 10, policy), info(2, 20, policy));
        assert_eq!(t.acquire(&old, key("a"), S, 1, 0), Acquire::Granted);
        assert_eq!(t.acquire(&young, key("b"), X, 2, 0), Acquire::Granted);
        assert_eq!(t.acquire(&young, key("a"), X, 3, 0), answer, "{policy}");
        ok(&t);
        assert!(t.holds(old.id, &keys(&["a"]), &[], &[]), "the older reader keeps its lock");
        match answer {
            Acquire::Aborted(reason) => {
                assert_eq!(t.state(young.id), Some(TxnState::Aborted(reason)));
                assert_eq!(t.acquire(&young, key("c"), S, 4, 0), Acquire::Aborted(reason), "tombstone");
                assert_eq!(t.acquire(&info(3, 30, policy), key("b"), X, 5, 0), Acquire::Granted, "b was freed");
            }
            _ => {
                assert!(t.take_events().is_empty());
                t.release(old.id, 5);
                assert_eq!(t.take_events(), vec![granted(&young, 3)]);
                assert!(t.holds(young.id, &[], &[], &keys(&["a", "b"])));
                assert_eq!((t.stats().waits, t.stats().grants_after_wait, t.stats().wait_ms_total), (1, 1, 5));
            }
        }
        ok(&t);
    }
}

#[test]
fn an_older_writer_wounds_a_younger_reader_under_wound_wait() {
    let mut t = table();
    let (old, young) = (info(1, 10, WoundWait), info(2, 20, WoundWait));
    assert_eq!(t.acquire(&young, key("a"), S, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&young, key("b"), X, 2, 0), Acquire::Granted);
    assert_eq!(t.acquire(&old, key("a"), X, 3, 0), Acquire::Granted);
    assert_eq!(t.take_events(), vec![aborted(&young, Wounded, None)]);
    assert_eq!(t.state(young.id), Some(TxnState::Aborted(Wounded)));
    assert!(!t.prepare(young.id));
    assert_eq!(t.acquire(&young, key("c"), S, 4, 0), Acquire::Aborted(Wounded));
    assert_eq!(t.txn_count(), 1);
    assert!(!t.keys.contains_key(b"b".as_slice()), "all the victim's locks went");
    assert_eq!(t.stats().wounds, 1);
    ok(&t);
}

#[test]
fn a_wounded_victim_that_waits_has_its_request_answered() {
    let mut t = table();
    let (oldest, old, young) = (info(1, 10, WoundWait), info(2, 20, WoundWait), info(3, 30, WoundWait));
    assert_eq!(t.acquire(&oldest, key("c"), X, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&young, key("a"), X, 2, 0), Acquire::Granted);
    assert_eq!(t.acquire(&young, key("c"), S, 3, 0), Acquire::Waiting);
    assert_eq!(t.acquire(&old, key("a"), S, 4, 0), Acquire::Granted);
    assert_eq!(t.take_events(), vec![aborted(&young, Wounded, Some(3))]);
    assert!(t.keys.get(b"c".as_slice()).is_some_and(|locks| locks.waiters.is_empty()));
    ok(&t);
}

#[test]
fn an_older_writer_waits_for_a_younger_reader_under_wait_die_then_is_granted() {
    let mut t = table();
    let (old, young) = (info(1, 10, WaitDie), info(2, 20, WaitDie));
    assert_eq!(t.acquire(&young, key("a"), S, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&old, key("a"), X, 2, 10), Acquire::Waiting);
    ok(&t);
    assert!(!t.holds(old.id, &[], &[], &keys(&["a"])), "a waiting request is not a held lock");
    t.release(young.id, 30);
    assert_eq!(t.take_events(), vec![granted(&old, 2)]);
    assert!(t.holds(old.id, &[], &[], &keys(&["a"])));
    assert_eq!(t.state(young.id), None, "released, forgotten");
    assert_eq!(t.stats().wait_ms_total, 20);
    ok(&t);
}

/// T1, T2, T3 hold a, b, c; then each asks the next one's key.
fn cycle(policy: Policy) -> (LockTable, [TxnInfo; 3], Vec<Acquire>) {
    let mut t = table();
    let txns = [info(1, 10, policy), info(2, 20, policy), info(3, 30, policy)];
    for (n, (txn, k)) in txns.iter().zip(["a", "b", "c"]).enumerate() {
        assert_eq!(t.acquire(txn, key(k), X, n as Token, 0), Acquire::Granted);
    }
    let mut answers = Vec::new();
    for (n, (txn, k)) in txns.iter().zip(["b", "c", "a"]).enumerate() {
        answers.push(t.acquire(txn, key(k), X, 10 + n as Token, 0));
        ok(&t);
    }
    (t, txns, answers)
}

/// Releases every transaction still here, oldest first, checking as it goes;
/// nothing may be left waiting.
fn drain(t: &mut LockTable, txns: &[TxnInfo]) {
    for txn in txns {
        t.release(txn.id, 0);
        ok(t);
    }
    assert!(t.is_empty());
}

#[test]
fn a_write_cycle_of_three_never_deadlocks_under_wound_wait() {
    let (mut t, [t1, t2, t3], answers) = cycle(WoundWait);
    assert_eq!(answers, vec![Acquire::Granted, Acquire::Aborted(Wounded), Acquire::Waiting]);
    assert_eq!(t.take_events(), vec![aborted(&t2, Wounded, None)]);
    t.release(t1.id, 0);
    assert_eq!(t.take_events(), vec![granted(&t3, 12)]);
    drain(&mut t, &[t3]);
}

#[test]
fn a_write_cycle_of_three_never_deadlocks_under_wait_die() {
    let (mut t, [t1, t2, t3], answers) = cycle(WaitDie);
    assert_eq!(answers, vec![Acquire::Waiting, Acquire::Waiting, Acquire::Aborted(Died)]);
    assert_eq!(t.take_events(), vec![granted(&t2, 11)], "t3's death frees c for t2");
    t.release(t2.id, 0);
    assert_eq!(t.take_events(), vec![granted(&t1, 10)]);
    drain(&mut t, &[t1, t3]);
}

#[test]
fn a_write_cycle_of_three_never_deadlocks_under_no_wait() {
    let (mut t, [t1, t2, t3], answers) = cycle(NoWait);
    assert_eq!(answers, vec![Acquire::Aborted(Conflict), Acquire::Aborted(Conflict), Acquire::Granted]);
    assert!(t.take_events().is_empty());
    assert_eq!(t.stats().conflicts, 2);
    drain(&mut t, &[t1, t2, t3]);
}

#[test]
fn waiters_are_granted_oldest_first() {
    let mut t = table();
    let (holder, w2, w3) = (info(1, 10, WoundWait), info(2, 20, WoundWait), info(3, 30, WoundWait));
    assert_eq!(t.acquire(&holder, key("a"), X, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&w3, key("a"), X, 3, 0), Acquire::Waiting);
    assert_eq!(t.acquire(&w2, key("a"), X, 2, 0), Acquire::Waiting);
    ok(&t);
    t.release(holder.id, 0);
    assert_eq!(t.take_events(), vec![granted(&w2, 2)]);
    t.release(w2.id, 0);
    assert_eq!(t.take_events(), vec![granted(&w3, 3)]);
    ok(&t);
}

#[test]
fn compatible_shared_waiters_are_granted_together_and_a_writer_behind_them_waits() {
    let mut t = table();
    let txns: Vec<TxnInfo> = (1..=4).map(|n| info(n, n as u64 * 10, WoundWait)).collect();
    assert_eq!(t.acquire(&txns[0], key("a"), X, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&txns[1], key("a"), S, 2, 0), Acquire::Waiting);
    assert_eq!(t.acquire(&txns[2], key("a"), S, 3, 0), Acquire::Waiting);
    assert_eq!(t.acquire(&txns[3], key("a"), X, 4, 0), Acquire::Waiting);
    t.release(txns[0].id, 0);
    assert_eq!(t.take_events(), vec![granted(&txns[1], 2), granted(&txns[2], 3)]);
    assert_eq!(t.keys[b"a".as_slice()].waiters.len(), 1);
    ok(&t);
}

#[test]
fn a_younger_shared_request_does_not_jump_an_older_exclusive_waiter() {
    let mut t = table();
    let (reader, writer, late) = (info(1, 10, WoundWait), info(2, 20, WoundWait), info(3, 30, WoundWait));
    assert_eq!(t.acquire(&reader, key("a"), S, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&writer, key("a"), X, 2, 0), Acquire::Waiting);
    assert_eq!(t.acquire(&late, key("a"), S, 3, 0), Acquire::Waiting, "behind the older writer");
    t.release(reader.id, 0);
    assert_eq!(t.take_events(), vec![granted(&writer, 2)]);
    ok(&t);
}

#[test]
fn wait_die_kills_a_waiter_when_an_older_one_queues_ahead() {
    let mut t = table();
    let (w2, w3, holder) = (info(2, 20, WaitDie), info(3, 30, WaitDie), info(9, 90, WaitDie));
    assert_eq!(t.acquire(&holder, key("a"), X, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&w3, key("a"), X, 3, 0), Acquire::Waiting);
    assert_eq!(t.acquire(&w2, key("a"), X, 2, 0), Acquire::Waiting);
    assert_eq!(t.take_events(), vec![aborted(&w3, Died, Some(3))]);
    ok(&t);
}

#[test]
fn the_policy_is_applied_again_when_an_older_holder_is_granted_past_a_waiter() {
    // Wait-die: the waiter now waits for an older holder, so it dies.
    let mut t = table();
    let (oldest, waiter, holder) = (info(1, 10, WaitDie), info(5, 50, WaitDie), info(9, 90, WaitDie));
    assert_eq!(t.acquire(&holder, key("a"), S, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&waiter, key("a"), X, 2, 0), Acquire::Waiting);
    assert_eq!(t.acquire(&oldest, key("a"), S, 3, 0), Acquire::Granted, "shared with the holder");
    assert_eq!(t.take_events(), vec![aborted(&waiter, Died, Some(2))]);
    ok(&t);
    // Mixed: the waiter now waits for a holder of another policy, so it aborts.
    let mut t = table();
    let (oldest, waiter, holder) = (info(1, 10, WoundWait), info(5, 50, WaitDie), info(9, 90, WaitDie));
    assert_eq!(t.acquire(&holder, key("a"), S, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&waiter, key("a"), X, 2, 0), Acquire::Waiting);
    assert_eq!(t.acquire(&oldest, key("a"), S, 3, 0), Acquire::Granted);
    assert_eq!(t.take_events(), vec![aborted(&waiter, Conflict, Some(2))]);
    ok(&t);
}

#[test]
fn a_shared_holder_upgrades_to_exclusive() {
    let mut t = table();
    let (t1, t2) = (info(1, 10, WoundWait), info(2, 20, WoundWait));
    assert_eq!(t.acquire(&t1, key("a"), S, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&t1, key("a"), X, 2, 0), Acquire::Granted, "alone: upgraded at once");
    assert_eq!(t.acquire(&t1, key("a"), S, 3, 0), Acquire::Granted, "exclusive covers shared");
    assert!(t.holds(t1.id, &keys(&["a"]), &[], &keys(&["a"])));
    assert_eq!(t.acquire(&t2, key("a"), S, 4, 0), Acquire::Waiting);
    ok(&t);

    // Two readers both upgrading: the policy breaks the classic upgrade deadlock.
    for policy in [WoundWait, WaitDie] {
        let mut t = table();
        let (t1, t2) = (info(1, 10, policy), info(2, 20, policy));
        assert_eq!(t.acquire(&t1, key("a"), S, 1, 0), Acquire::Granted);
        assert_eq!(t.acquire(&t2, key("a"), S, 2, 0), Acquire::Granted);
        match policy {
            WoundWait => {
                assert_eq!(t.acquire(&t1, key("a"), X, 3, 0), Acquire::Granted);
                assert_eq!(t.take_events(), vec![aborted(&t2, Wounded, None)]);
            }
            _ => {
                assert_eq!(t.acquire(&t1, key("a"), X, 3, 0), Acquire::Waiting);
                assert_eq!(t.acquire(&t2, key("a"), X, 4, 0), Acquire::Aborted(Died));
                assert_eq!(t.take_events(), vec![granted(&t1, 3)]);
            }
        }
        assert!(t.holds(t1.id, &[], &[], &keys(&["a"])));
        ok(&t);
    }
}

#[test]
fn a_range_lock_blocks_an_exclusive_write_inside_it_and_not_outside() {
    let mut t = table();
    let scanner = info(1, 10, WoundWait);
    let writers: Vec<TxnInfo> = (2..=6).map(|n| info(n, n as u64 * 10, WoundWait)).collect();
    assert_eq!(t.acquire(&scanner, range("b", "d"), S, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&scanner, range("x", ""), S, 2, 0), Acquire::Granted);
    assert_eq!(t.acquire(&writers[0], key("c"), X, 3, 0), Acquire::Waiting, "inside [b, d)");
    assert_eq!(t.acquire(&writers[1], key("d"), X, 4, 0), Acquire::Granted, "end excluded");
    assert_eq!(t.acquire(&writers[2], key("a"), X, 5, 0), Acquire::Granted, "before the start");
    assert_eq!(t.acquire(&writers[3], key("zzz"), X, 6, 0), Acquire::Waiting, "unbounded end");
    assert_eq!(t.acquire(&writers[4], key("b"), S, 7, 0), Acquire::Granted, "a read inside is compatible");
    assert!(t.holds(scanner.id, &[], &[(b"b".to_vec(), b"d".to_vec())], &[]));
    ok(&t);
    t.release(scanner.id, 0);
    assert_eq!(t.take_events(), vec![granted(&writers[0], 3), granted(&writers[3], 6)]);
    ok(&t);
}

#[test]
fn an_exclusive_holder_inside_a_range_is_wounded_or_waited_for() {
    let mut t = table();
    let (old, writer, young) = (info(1, 10, WoundWait), info(2, 20, WoundWait), info(3, 30, WoundWait));
    assert_eq!(t.acquire(&writer, key("c"), X, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&young, range("a", "z"), S, 2, 0), Acquire::Waiting);
    assert_eq!(t.acquire(&old, range("b", ""), S, 3, 0), Acquire::Granted);
    assert_eq!(t.take_events(), vec![aborted(&writer, Wounded, None), granted(&young, 2)]);
    ok(&t);
    // No-wait: a conflicting range request aborts.
    let mut t = table();
    assert_eq!(t.acquire(&info(1, 10, NoWait), key("c"), X, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&info(2, 5, NoWait), range("a", "d"), S, 2, 0), Acquire::Aborted(Conflict));
}

#[test]
fn an_empty_or_inverted_range_conflicts_with_nothing() {
    let mut t = table();
    let (t1, t2) = (info(1, 10, NoWait), info(2, 20, NoWait));
    assert_eq!(t.acquire(&t1, key("c"), X, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&t2, range("d", "b"), S, 2, 0), Acquire::Granted);
    assert_eq!(t.acquire(&t2, range("c", "c"), S, 3, 0), Acquire::Granted);
    assert_eq!(t.acquire(&t2, range("c", "b"), X, 4, 0), Acquire::Invalid, "ranges are shared only");
    t.release(t1.id, 0);
    assert_eq!(t.acquire(&t1, key("c"), X, 5, 0), Acquire::Granted);
    ok(&t);
}

#[test]
fn a_prepared_holder_is_never_wounded_so_the_older_waits() {
    let mut t = table();
    let (old, young) = (info(1, 10, WoundWait), info(2, 20, WoundWait));
    assert_eq!(t.acquire(&young, key("a"), X, 1, 0), Acquire::Granted);
    assert!(t.prepare(young.id));
    assert_eq!(t.state(young.id), Some(TxnState::Prepared));
    assert_eq!(t.acquire(&old, key("a"), X, 2, 0), Acquire::Waiting);
    assert_eq!(t.stats().wounds, 0);
    assert!(t.take_events().is_empty());
    ok(&t);
    t.release(young.id, 0);
    assert_eq!(t.take_events(), vec![granted(&old, 2)]);
    ok(&t);
}

#[test]
fn a_prepared_transaction_takes_no_new_lock_and_a_waiting_one_cannot_prepare() {
    let mut t = table();
    let (t1, t2) = (info(1, 10, WoundWait), info(2, 20, WoundWait));
    assert_eq!(t.acquire(&t1, key("a"), X, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&t2, key("a"), X, 2, 0), Acquire::Waiting);
    assert!(!t.prepare(t2.id), "waiting");
    assert!(t.prepare(t1.id));
    assert!(t.prepare(t1.id), "idempotent");
    assert_eq!(t.acquire(&t1, key("a"), S, 3, 0), Acquire::Granted, "already held");
    assert_eq!(t.acquire(&t1, key("b"), S, 4, 0), Acquire::Invalid);
    assert!(!t.prepare(txn_id(7, 1)), "unknown");
    ok(&t);
}

#[test]
fn a_second_request_while_waiting_is_invalid_and_the_first_stays() {
    let mut t = table();
    let (t1, t2) = (info(1, 10, WoundWait), info(2, 20, WoundWait));
    assert_eq!(t.acquire(&t1, key("a"), X, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&t2, key("a"), X, 2, 0), Acquire::Waiting);
    assert_eq!(t.acquire(&t2, key("b"), X, 3, 0), Acquire::Invalid);
    assert_eq!(t.state(t2.id), Some(TxnState::Active));
    t.release(t1.id, 0);
    assert_eq!(t.take_events(), vec![granted(&t2, 2)]);
    assert!(t.holds(t2.id, &[], &[], &keys(&["a"])) && !t.holds(t2.id, &keys(&["b"]), &[], &[]));
    ok(&t);
}

#[test]
fn release_and_abort_answer_a_waiting_request() {
    let mut t = table();
    let (t1, t2, t3) = (info(1, 10, WoundWait), info(2, 20, WoundWait), info(3, 30, WoundWait));
    assert_eq!(t.acquire(&t1, key("a"), X, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&t2, key("a"), X, 2, 0), Acquire::Waiting);
    assert_eq!(t.acquire(&t3, key("b"), X, 3, 0), Acquire::Granted);
    assert_eq!(t.acquire(&t3, key("a"), S, 4, 0), Acquire::Waiting);
    t.release(t2.id, 0);
    assert_eq!(t.take_events(), vec![aborted(&t2, Conflict, Some(2))]);
    t.abort(t3.id, Requested, 0);
    assert_eq!(t.take_events(), vec![aborted(&t3, Requested, Some(4))]);
    assert_eq!(t.state(t3.id), Some(TxnState::Aborted(Requested)));
    t.abort(t1.id, Requested, 0);
    assert!(t.take_events().is_empty(), "nothing waited");
    assert!(t.is_empty());
    ok(&t);
}

#[test]
fn a_wait_longer_than_the_maximum_aborts_the_waiter_with_its_token() {
    let mut t = table();
    let (t1, t2) = (info(1, 10, WoundWait), info(2, 20, WoundWait));
    assert_eq!(t.acquire(&t1, key("a"), X, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&t2, key("a"), X, 2, 10), Acquire::Waiting);
    t.tick(110);
    assert!(t.take_events().is_empty(), "exactly wait_ms_max is not yet too long");
    t.tick(111);
    assert_eq!(t.take_events(), vec![aborted(&t2, Timeout, Some(2))]);
    assert_eq!(t.stats().timeouts, 1);
    assert_eq!(t.state(t1.id), Some(TxnState::Active));
    ok(&t);
}

#[test]
fn an_unprepared_transaction_expires_after_its_lifetime_and_a_prepared_one_never() {
    let mut t = table();
    let (t1, t2) = (info(1, 10, WoundWait), info(2, 20, WoundWait));
    assert_eq!(t.acquire(&t1, key("a"), X, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&t2, key("b"), X, 2, 0), Acquire::Granted);
    assert!(t.prepare(t2.id));
    t.tick(1_000);
    assert!(t.take_events().is_empty());
    t.tick(1_001);
    assert_eq!(t.take_events(), vec![aborted(&t1, Timeout, None)]);
    t.tick(1_000_000);
    assert!(t.holds(t2.id, &[], &[], &keys(&["b"])));
    assert_eq!(t.stats().lifetime_expiries, 1);
    // A request of an expired transaction is answered at once, before any tick.
    let t3 = TxnInfo { begun_ms: 5, ..info(3, 30, WoundWait) };
    assert_eq!(t.acquire(&t3, key("c"), X, 3, 1_000), Acquire::Granted);
    assert_eq!(t.acquire(&t3, key("d"), X, 4, 1_006), Acquire::Aborted(Timeout));
    assert!(t.take_events().is_empty(), "the answer says it");
    assert!(!t.keys.contains_key(b"c".as_slice()));
    // ...and a request that waited meanwhile is answered by an event.
    let t4 = TxnInfo { begun_ms: 1_000, ..info(4, 40, WoundWait) };
    assert_eq!(t.acquire(&t4, key("b"), X, 5, 1_000), Acquire::Waiting, "behind the prepared t2");
    assert_eq!(t.acquire(&t4, key("e"), X, 6, 2_001), Acquire::Aborted(Timeout));
    assert_eq!(t.take_events(), vec![aborted(&t4, Timeout, Some(5))]);
    ok(&t);
}

#[test]
fn different_policies_abort_the_requester() {
    let mut t = table();
    let (old, young) = (info(1, 10, WoundWait), info(2, 20, WaitDie));
    assert_eq!(t.acquire(&old, key("a"), S, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&young, key("a"), X, 2, 0), Acquire::Aborted(Conflict));
    let mut t = table();
    assert_eq!(t.acquire(&young, key("a"), S, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&old, key("a"), X, 2, 0), Acquire::Aborted(Conflict), "no wound across policies");
    assert_eq!(t.state(young.id), Some(TxnState::Active));
    assert_eq!(t.stats().conflicts, 1);
    ok(&t);
}

#[test]
fn install_prepared_grants_at_once_and_holds_answers() {
    let mut t = table();
    let prepared = info(1, 50, WoundWait);
    let (reads, ranges, writes) = (keys(&["a"]), vec![(b"m".to_vec(), b"p".to_vec())], keys(&["b"]));
    t.install_prepared(&prepared, &reads, &ranges, &writes, 0);
    assert_eq!(t.state(prepared.id), Some(TxnState::Prepared));
    assert!(t.holds(prepared.id, &reads, &ranges, &writes));
    assert!(t.holds(prepared.id, &keys(&["a", "b"]), &[], &[]), "an exclusive lock serves a read");
    assert!(!t.holds(prepared.id, &[], &[], &keys(&["a"])), "a is only shared");
    assert!(!t.holds(prepared.id, &[], &[(b"m".to_vec(), b"q".to_vec())], &[]));
    assert!(!t.holds(txn_id(9, 9), &[], &[], &[]), "unknown");
    let older = info(2, 10, WoundWait);
    assert_eq!(t.acquire(&older, key("n"), X, 1, 0), Acquire::Waiting, "the prepared range is not wounded");
    t.tick(1_000_000);
    assert_eq!(t.take_events(), vec![aborted(&older, Timeout, Some(1))]);
    assert!(t.holds(prepared.id, &reads, &ranges, &writes), "prepared: never expires");
    ok(&t);
}

#[test]
fn install_prepared_aborts_an_unprepared_holder_it_conflicts_with() {
    let mut t = table();
    let (holder, waiter, prepared) = (info(1, 10, WoundWait), info(2, 20, WoundWait), info(3, 30, WoundWait));
    assert_eq!(t.acquire(&holder, key("a"), S, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&waiter, key("a"), X, 2, 0), Acquire::Waiting);
    t.abort(prepared.id, Requested, 0);
    t.install_prepared(&prepared, &[], &[], &keys(&["a"]), 0);
    assert_eq!(t.state(prepared.id), Some(TxnState::Prepared), "the replicated record beats a tombstone");
    assert_eq!(t.take_events(), vec![aborted(&holder, Conflict, None)]);
    assert_eq!(t.state(waiter.id), Some(TxnState::Active), "waits for the prepared holder");
    ok(&t);
}

#[test]
fn install_prepared_applies_the_policy_again_to_a_waiter_it_frees_and_hits() {
    // The record aborts the waiter's only blocker and takes the key itself: the
    // wait-die waiter now waits for an older transaction, so it dies.
    let mut t = table();
    let (prepared, waiter, loser) = (info(1, 10, WaitDie), info(2, 20, WaitDie), info(3, 30, WaitDie));
    assert_eq!(t.acquire(&loser, key("a"), S, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&waiter, key("a"), X, 2, 0), Acquire::Waiting);
    t.install_prepared(&prepared, &[], &[], &keys(&["a"]), 0);
    assert_eq!(t.take_events(), vec![aborted(&loser, Conflict, None), aborted(&waiter, Died, Some(2))]);
    ok(&t);
}

#[test]
fn clear_drops_every_lock_and_returns_the_waiting_requests() {
    let mut t = table();
    let (t1, t2, t3) = (info(1, 10, WoundWait), info(2, 20, WoundWait), info(3, 30, WoundWait));
    assert_eq!(t.acquire(&t1, key("a"), X, 1, 0), Acquire::Granted);
    assert_eq!(t.acquire(&t3, key("a"), S, 3, 0), Acquire::Waiting);
    assert_eq!(t.acquire(&t2, range("", ""), S, 2, 0), Acquire::Waiting);
    assert!(t.prepare(t1.id));
    t.abort(txn_id(8, 1), Requested, 0);
    assert_eq!(t.clear(), vec![(t2.id, 2), (t3.id, 3)]);
    assert!(t.is_empty());
    assert_eq!(t.txn_count(), 0);
    assert_eq!(t.state(t1.id), None);
    assert_eq!(t.state(txn_id(8, 1)), Some(TxnState::Aborted(Requested)), "tombstones stay");
    assert_eq!(t.acquire(&t3, key("a"), X, 4, 0), Acquire::Granted);
    ok(&t);
}

#[test]
fn bounds_refuse_one_lock_too_many_and_one_transaction_too_many() {
    let mut t = table();
    let t1 = info(1, 10, WoundWait);
    for k in ["a", "b", "c"] {
        assert_eq!(t.acquire(&t1, key(k), S, 1, 0), Acquire::Granted);
    }
    assert_eq!(t.acquire(&t1, range("x", "y"), S, 2, 0), Acquire::Granted);
    assert_eq!(t.acquire(&t1, key("d"), S, 3, 0), Acquire::TooManyLocks);
    assert_eq!(t.acquire(&t1, range("x", "z"), S, 3, 0), Acquire::TooManyLocks);
    assert_eq!(t.acquire(&t1, key("a"), X, 4, 0), Acquire::Granted, "an upgrade adds no lock");
    assert_eq!(t.acquire(&t1, range("x", "y"), S, 5, 0), Acquire::Granted, "re-entrant");
    assert_eq!(t.state(t1.id), Some(TxnState::Active), "nothing changed");
    for n in 2..=8 {
        assert_eq!(t.acquire(&info(n, 10 * n as u64, WoundWait), key("q"), S, 6, 0), Acquire::Granted);
    }
    assert_eq!(t.acquire(&info(9, 90, WoundWait), key("q"), S, 7, 0), Acquire::Full);
    assert_eq!(t.state(txn_id(9, 1)), None);
    assert_eq!(t.acquire(&info(8, 80, WoundWait), key("r"), S, 8, 0), Acquire::Granted, "known txns go on");
    ok(&t);
}

#[test]
fn tombstones_answer_aborted_and_the_oldest_are_forgotten() {
    let mut t = table();
    t.abort(txn_id(1, 1), Requested, 0);
    assert_eq!(t.acquire(&info(1, 10, WoundWait), key("a"), S, 1, 0), Acquire::Aborted(Requested));
    assert!(!t.prepare(txn_id(1, 1)));
    t.abort(txn_id(1, 1), Timeout, 0);
    assert_eq!(t.state(txn_id(1, 1)), Some(TxnState::Aborted(Requested)), "the first reason stays");
    for n in 2..=9 {
        t.abort(txn_id(n, 1), Conflict, 0);
    }
    assert_eq!(t.tombstones.len(), config().txns_max);
    assert_eq!(t.state(txn_id(1, 1)), None, "oldest forgotten");
    assert_eq!(t.state(txn_id(2, 1)), Some(TxnState::Aborted(Conflict)));
    ok(&t);
}

// ---- property test: no deadlock, and every invariant after every step ----

/// How the generated transactions pick their policies.
#[derive(Debug, Clone, Copy)]
enum Mix {
    AllWoundWait,
    AllWaitDie,
    Mixed,
}

#[derive(Debug, Clone)]
enum Op {
    Acquire {
        slot: usize,
        target: usize,
        exclusive: bool,
    },
    Prepare(usize),
    Release(usize),
    Abort(usize),
    Tick(u64),
    /// A prepare record installed for the slot's next attempt, as a new leader does.
    Install {
        slot: usize,
        target: usize,
        exclusive: bool,
    },
}

const SLOTS: usize = 6;

fn targets() -> Vec<Target> {
    vec![key("a"), key("b"), key("c"), key("d"), range("a", "c"), range("c", ""), range("b", "b")]
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    prop_oneof![
        8 => (slot.clone(), 0..targets().len(), any::<bool>())
            .prop_map(|(slot, target, exclusive)| Op::Acquire { slot, target, exclusive }),
        2 => slot.clone().prop_map(Op::Prepare),
        2 => slot.clone().prop_map(Op::Release),
        1 => slot.prop_map(Op::Abort),
        2 => (0u64..400).prop_map(Op::Tick),
        1 => (0..SLOTS, 0..targets().len(), any::<bool>())
            .prop_map(|(slot, target, exclusive)| Op::Install { slot, target, exclusive }),
    ]
}

fn lock_config() -> ProptestConfig {
    let mut config = ProptestConfig { failure_persistence: None, ..ProptestConfig::default() };
    if matches!(config.rng_seed, RngSeed::Random) {
        config.rng_seed = RngSeed::Fixed(0x6c6f_636b);
    }
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 256;
    }
    config
}

/// What a prepared transaction held when it prepared: reads, ranges, writes.
type HeldSets = (Vec<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>, Vec<Vec<u8>>);

/// The test's own view of a slot's current transaction attempt.
struct Slot {
    info: TxnInfo,
    /// Its attempt ended (aborted or released): the next request starts a new one.
    ended: bool,
    started: bool,
}

impl Slot {
    /// Makes the slot's attempt current: a new one after an end (a retry keeps
    /// its start version and takes a new id), begun now if it had not begun.
    fn start(&mut self, now_ms: u64) {
        if self.ended {
            let id = TxnId { attempt: self.info.id.attempt + 1, ..self.info.id };
            self.info.id = id;
            self.info.age.id = id;
            self.ended = false;
            self.started = false;
        }
        if !self.started {
            self.info.begun_ms = now_ms;
            self.started = true;
        }
    }
}

/// Drives a table through `ops`, checking every invariant after every step, that
/// every waiting request is answered exactly once, and that prepared locks stay.
fn run(mix: Mix, policies: &[Policy], starts: &[u64], ops: &[Op]) -> Result<(), TestCaseError> {
    let cfg = LockConfig { wait_ms_max: 500, lifetime_ms: 1_500, locks_per_txn_max: 3, txns_max: 5 };
    let mut t = LockTable::new(cfg);
    let targets = targets();
    let mut slots: Vec<Slot> = (0..SLOTS)
        .map(|n| {
            let policy = match mix {
                Mix::AllWoundWait => WoundWait,
                Mix::AllWaitDie => WaitDie,
                Mix::Mixed => policies[n],
            };
            Slot { info: info(n as u128, starts[n], policy), ended: false, started: false }
        })
        .collect();
    let mut pending: BTreeMap<TxnId, Token> = BTreeMap::new();
    let mut prepared: BTreeMap<TxnId, HeldSets> = BTreeMap::new();
    let (mut now_ms, mut next_token) = (0u64, 0 as Token);
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Acquire { slot, target, exclusive } => {
                let s = &mut slots[slot];
                s.start(now_ms);
                next_token += 1;
                let mode = if exclusive { X } else { S };
                let was_waiting = pending.contains_key(&s.info.id);
                match t.acquire(&s.info, targets[target].clone(), mode, next_token, now_ms) {
                    Acquire::Waiting => {
                        prop_assert!(pending.insert(s.info.id, next_token).is_none(), "step {}: two waits", step);
                    }
                    Acquire::Aborted(_) => s.ended = true,
                    Acquire::Invalid => prop_assert!(
                        was_waiting || prepared.contains_key(&s.info.id) || exclusive,
                        "step {}: invalid without a reason",
                        step
                    ),
                    Acquire::Granted | Acquire::TooManyLocks | Acquire::Full => {}
                }
            }
            Op::Prepare(slot) => {
                let id = slots[slot].info.id;
                if t.prepare(id) {
                    let txn = t.txn(id);
                    let reads = txn.keys.iter().filter(|(_, m)| **m == S).map(|(k, _)| k.clone()).collect();
                    let writes = txn.keys.iter().filter(|(_, m)| **m == X).map(|(k, _)| k.clone()).collect();
                    prepared.insert(id, (reads, txn.ranges.iter().cloned().collect(), writes));
                }
            }
            Op::Release(slot) | Op::Abort(slot) => {
                let id = slots[slot].info.id;
                if matches!(op, Op::Release(_)) {
                    t.release(id, now_ms);
                } else {
                    t.abort(id, Requested, now_ms);
                }
                slots[slot].ended = true;
                prepared.remove(&id);
            }
            Op::Tick(ms) => {
                now_ms += ms;
                t.tick(now_ms);
            }
            Op::Install { slot, target, exclusive } => {
                let s = &mut slots[slot];
                let target = &targets[target];
                let mode = if exclusive && matches!(target, Target::Key(_)) { X } else { S };
                // Replicated prepare records never conflict with each other, and a
                // new leader installs them for transactions it is not running.
                let clash = t.txns.values().filter(|txn| txn.prepared).any(|txn| {
                    granted_locks(txn)
                        .iter()
                        .any(|(held, held_mode)| reference_conflict((target, mode), (held, *held_mode)))
                });
                let live = s.started && !s.ended;
                if !live && !clash {
                    s.start(now_ms);
                    let id = s.info.id;
                    let one = |want: LockMode| match target {
                        Target::Key(k) if mode == want => vec![k.clone()],
                        _ => vec![],
                    };
                    let ranges = match target {
                        Target::Range { start, end } => vec![(start.clone(), end.clone())],
                        Target::Key(_) => vec![],
                    };
                    let (reads, writes) = (one(S), one(X));
                    t.install_prepared(&s.info, &reads, &ranges, &writes, now_ms);
                    prepared.insert(id, (reads, ranges, writes));
                }
            }
        }
        for event in t.take_events() {
            match event {
                LockEvent::Granted { id, token } => {
                    prop_assert_eq!(pending.remove(&id), Some(token), "step {}: grant of no wait", step);
                }
                LockEvent::Aborted { id, token, .. } => {
                    prop_assert_eq!(pending.remove(&id), token, "step {}: abort answers the wait", step);
                    prop_assert!(!prepared.contains_key(&id), "step {}: prepared {} aborted", step, id);
                    let active = matches!(t.state(id), Some(TxnState::Active | TxnState::Prepared));
                    prop_assert!(!active, "step {}: {} aborted but still here", step, id);
                    if let Some(slot) = slots.iter_mut().find(|s| s.info.id == id) {
                        slot.ended = true;
                    }
                }
            }
        }
        let waiting: BTreeMap<TxnId, Token> =
            t.txns.values().filter_map(|txn| txn.waiting.as_ref().map(|w| (txn.age.id, w.token))).collect();
        prop_assert_eq!(&waiting, &pending, "step {}: waits and unanswered requests differ", step);
        for (id, (reads, ranges, writes)) in &prepared {
            prop_assert!(t.holds(*id, reads, ranges, writes), "step {}: prepared {} lost a lock", step, id);
            prop_assert_eq!(t.state(*id), Some(TxnState::Prepared));
        }
        if let Err(e) = check(&t) {
            return Err(TestCaseError::fail(format!("step {step} ({op:?}): {e}")));
        }
    }
    // Releasing everyone leaves nothing, and answers every request that waited.
    for slot in &slots {
        t.release(slot.info.id, now_ms);
        for event in t.take_events() {
            let (LockEvent::Granted { id, .. } | LockEvent::Aborted { id, .. }) = event;
            pending.remove(&id);
        }
        if let Err(e) = check(&t) {
            return Err(TestCaseError::fail(format!("drain: {e}")));
        }
    }
    prop_assert!(t.is_empty() && pending.is_empty() && t.keys.is_empty() && t.ranges_granted.is_empty());
    Ok(())
}

fn policy() -> impl Strategy<Value = Policy> {
    prop::sample::select(Policy::ALL.to_vec())
}

proptest! {
    #![proptest_config(lock_config())]

    #[test]
    fn no_deadlock_and_every_invariant_under_wound_wait(
        starts in prop::collection::vec(0u64..4, SLOTS),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run(Mix::AllWoundWait, &[], &starts, &ops)?;
    }

    #[test]
    fn no_deadlock_and_every_invariant_under_wait_die(
        starts in prop::collection::vec(0u64..4, SLOTS),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run(Mix::AllWaitDie, &[], &starts, &ops)?;
    }

    #[test]
    fn no_deadlock_and_every_invariant_under_mixed_policies(
        policies in prop::collection::vec(policy(), SLOTS),
        starts in prop::collection::vec(0u64..4, SLOTS),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run(Mix::Mixed, &policies, &starts, &ops)?;
    }
}
