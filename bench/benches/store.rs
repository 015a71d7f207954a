//! Versioned-store cost per operation: `get` (latest) and `put` (a new version of an
//! existing key, so chains fill up to the retention limit and trim) at 10 000 and
//! 1 000 000 keys, beside a plain `BTreeMap<Vec<u8>, Vec<u8>>` doing the same work
//! (the floor: an ordered map with no history). Keys are 16 bytes, values 64 bytes,
//! picked in a fixed pseudo-random order. `versioned_put` runs with the default
//! retention (64 versions per key), `versioned_put_keep1` with one.

use std::collections::BTreeMap;
use std::hint::black_box;

use corekv_engine::kv::{Retention, Store};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const VALUE_BYTES: usize = 64;
/// Keys touched per measured batch, in a fixed shuffled order.
const PICKS: usize = 4096;

fn key(i: u64) -> Vec<u8> {
    format!("user{i:012}").into_bytes()
}

/// A fixed pseudo-random sequence (xorshift64*), so every run touches the same keys.
fn picks(key_count: u64) -> Vec<Vec<u8>> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..PICKS)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            key(x.wrapping_mul(0x2545_f491_4f6c_dd1d) % key_count)
        })
        .collect()
}

fn filled(key_count: u64, retention: Retention) -> (Store, BTreeMap<Vec<u8>, Vec<u8>>, u64) {
    let mut store = Store::new(retention);
    let mut map = BTreeMap::new();
    let value = vec![7u8; VALUE_BYTES];
    for i in 0..key_count {
        store.put(&key(i), value.clone(), i + 1);
        map.insert(key(i), value.clone());
    }
    (store, map, key_count + 1)
}

fn store(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    let value = vec![9u8; VALUE_BYTES];
    for key_count in [10_000u64, 1_000_000] {
        let (mut store, mut map, mut next_version) = filled(key_count, Retention::default());
        let keys = picks(key_count);
        let mut at = 0;
        let mut next_key = move || {
            at = (at + 1) % PICKS;
            at
        };

        group.bench_function(BenchmarkId::new("versioned_get", key_count), |b| {
            b.iter(|| black_box(store.get(black_box(&keys[next_key()]), None)))
        });
        group.bench_function(BenchmarkId::new("btreemap_get", key_count), |b| {
            b.iter(|| black_box(map.get(black_box(&keys[next_key()])).cloned()))
        });
        group.bench_function(BenchmarkId::new("versioned_put", key_count), |b| {
            b.iter(|| {
                let out = store.put(black_box(&keys[next_key()]), value.clone(), next_version);
                next_version += 1;
                black_box(out)
            })
        });
        group.bench_function(BenchmarkId::new("btreemap_put", key_count), |b| {
            b.iter(|| black_box(map.insert(keys[next_key()].clone(), value.clone())))
        });
        drop((store, map));
        // The same put keeping one version per key: the structure's own cost, without
        // the cache footprint of 64 retained versions per hot key.
        let one = Retention { versions_per_key_max: 1, ..Retention::default() };
        let (mut store, _, mut next_version) = filled(key_count, one);
        group.bench_function(BenchmarkId::new("versioned_put_keep1", key_count), |b| {
            b.iter(|| {
                let out = store.put(black_box(&keys[next_key()]), value.clone(), next_version);
                next_version += 1;
                black_box(out)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
