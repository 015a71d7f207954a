//! Lock table cost per transaction: one transaction locking 2 keys shared and 2
//! exclusive, then releasing, beside 10 000 other transactions' locks; the same
//! with 100 range locks held elsewhere (every exclusive request walks the ranges
//! that start at or below its key); and the hand-off of one hot key through `w`
//! waiters (each release re-evaluates the queue, the table's worst case).

use std::hint::black_box;

use corekv_engine::txn::lock::{Acquire, LockConfig, LockMode, LockTable, Target, TxnInfo};
use corekv_rpc::kv::ClientId;
use corekv_rpc::txn::{Age, Policy, TxnId};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Other transactions' locks in the table while one is measured.
const BACKGROUND_TXNS: u64 = 10_000;

fn txn(n: u64) -> TxnInfo {
    let id = TxnId { client: ClientId::from_u128(u128::from(n)), attempt: 1 };
    TxnInfo { id, age: Age { start: n, id }, policy: Policy::WoundWait, begun_ms: 0 }
}

fn key(i: u64) -> Vec<u8> {
    format!("user{i:012}").into_bytes()
}

/// A table where transaction `i` holds `key(2 * i)` shared, and the first `ranges`
/// of them also a short range between two held keys.
fn background(ranges: u64) -> LockTable {
    let mut table = LockTable::new(LockConfig::default());
    for i in 0..BACKGROUND_TXNS {
        let owner = txn(1_000_000 + i);
        let held = table.acquire(&owner, Target::Key(key(2 * i)), LockMode::Shared, 0, 0);
        assert_eq!(held, Acquire::Granted);
        if i < ranges {
            let range = Target::Range { start: key(2 * i), end: key(2 * i + 1) };
            assert_eq!(table.acquire(&owner, range, LockMode::Shared, 0, 0), Acquire::Granted);
        }
    }
    table
}

/// One transaction's locks and release; keys are odd, so they never conflict.
fn one_txn(table: &mut LockTable, n: u64) {
    let me = txn(n);
    let base = 2 * (n % BACKGROUND_TXNS) + 1;
    for (offset, mode) in
        [(0, LockMode::Shared), (2, LockMode::Shared), (4, LockMode::Exclusive), (6, LockMode::Exclusive)]
    {
        let answer = table.acquire(&me, Target::Key(key(base + offset)), mode, 0, 0);
        debug_assert_eq!(answer, Acquire::Granted);
        black_box(answer);
    }
    table.release(me.id, 0);
}

fn lock_table(c: &mut Criterion) {
    let mut group = c.benchmark_group("lock_table");
    group.throughput(Throughput::Elements(1));
    for ranges in [0u64, 100] {
        let mut table = background(ranges);
        let mut n = 0;
        group.bench_function(BenchmarkId::new("txn_2s_2x_then_release", format!("{ranges}_ranges")), |b| {
            b.iter(|| {
                n += 1;
                one_txn(&mut table, n);
            })
        });
    }
    for waiters in [4u64, 64] {
        group.throughput(Throughput::Elements(waiters));
        group.bench_function(BenchmarkId::new("hot_key_handoff", waiters), |b| {
            b.iter_batched(
                || {
                    let mut table = LockTable::new(LockConfig::default());
                    for n in 0..=waiters {
                        table.acquire(&txn(n), Target::Key(key(0)), LockMode::Exclusive, n, 0);
                    }
                    table
                },
                |mut table| {
                    for n in 0..=waiters {
                        table.release(txn(n).id, 1);
                        black_box(table.take_events());
                    }
                    table
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, lock_table);
criterion_main!(benches);
