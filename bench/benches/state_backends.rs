//! The state backends side by side: the cost of a keyed-state access and of a snapshot, on the
//! memory backend and (with the `rocksdb` feature) on RocksDB, at a small and a large number of
//! distinct keys.
//!
//! Each access is what a counting process function does per record: read the key's value and
//! write it back. The keys are drawn in a fixed pseudo-random order over the key space, so
//! RocksDB serves most reads from its block cache and memtable at the small size and not at
//! the large one. A snapshot is taken on the slot's thread and encoded (on RocksDB: a RocksDB
//! checkpoint, then the canonical encoding read back from it).
//!
//! Run: `cargo bench -p weir-bench --bench state_backends --features rocksdb` (RocksDB's C++
//! builds from source first: minutes, and libclang-dev).
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use weir_core::keygroup::mix64;
use weir_dataflow::state::{KeyedState, MemoryBackend, StateBackend};
use weir_dataflow::ValueState;

const ACCESSES: u64 = 100_000;

/// The `i`-th key of a run over `keys` distinct keys.
fn key(i: u64, keys: u64) -> u64 {
    mix64(i) % keys
}

/// Reads and writes back a counter per key, `ACCESSES` times.
fn count<B: StateBackend<u64>>(backend: &mut B, keys: u64, offset: u64) -> u64 {
    let counter = ValueState::<u64>::new("count");
    let mut total = 0;
    for i in offset..offset + ACCESSES {
        let key = key(i, keys);
        let mut state = KeyedState::new(&mut *backend, &key, 0);
        let count = counter.get(&mut state).unwrap_or(0) + 1;
        counter.set(&mut state, count);
        total += count;
    }
    total
}

/// A backend holding one counter for each of `keys` keys.
fn filled<B: StateBackend<u64>>(mut backend: B, keys: u64) -> B {
    let counter = ValueState::<u64>::new("count");
    for key in 0..keys {
        counter.set(&mut KeyedState::new(&mut backend, &key, 0), 1);
    }
    backend
}

fn accesses(c: &mut Criterion) {
    let mut group = c.benchmark_group("state_access");
    group.throughput(Throughput::Elements(ACCESSES));
    group.sample_size(10);
    for keys in [10_000u64, 1_000_000] {
        let mut memory = filled(MemoryBackend::<u64>::default(), keys);
        let mut offset = 0;
        group.bench_function(format!("memory_value_read_write_{keys}_keys"), |b| {
            b.iter(|| {
                offset += ACCESSES;
                black_box(count(&mut memory, keys, offset))
            })
        });
        #[cfg(feature = "rocksdb")]
        {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let rocksdb = weir_dataflow::state::rocksdb::RocksDbBackend::<u64>::open(&dir.path().join("db"))
                .expect("RocksDB opens");
            let mut rocksdb = filled(rocksdb, keys);
            let mut offset = 0;
            group.bench_function(format!("rocksdb_value_read_write_{keys}_keys"), |b| {
                b.iter(|| {
                    offset += ACCESSES;
                    black_box(count(&mut rocksdb, keys, offset))
                })
            });
        }
    }
    group.finish();
}

fn snapshots(c: &mut Criterion) {
    let mut group = c.benchmark_group("state_snapshot");
    group.sample_size(10);
    let keys = 1_000_000u64;
    group.throughput(Throughput::Elements(keys));
    let memory = filled(MemoryBackend::<u64>::default(), keys);
    group.bench_function(format!("memory_snapshot_{keys}_keys"), |b| {
        b.iter_batched(|| (), |()| black_box(memory.snapshot().encode().len()), BatchSize::PerIteration)
    });
    #[cfg(feature = "rocksdb")]
    {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let rocksdb =
            weir_dataflow::state::rocksdb::RocksDbBackend::<u64>::open(&dir.path().join("db")).expect("RocksDB opens");
        let rocksdb = filled(rocksdb, keys);
        group.bench_function(format!("rocksdb_snapshot_{keys}_keys"), |b| {
            b.iter_batched(|| (), |()| black_box(rocksdb.snapshot().encode().len()), BatchSize::PerIteration)
        });
    }
    group.finish();
}

criterion_group!(benches, accesses, snapshots);
criterion_main!(benches);
