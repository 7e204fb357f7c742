//! Batch signature verification (`crypto::verify_one` / `crypto::verify_batch`) on
//! committee-shaped batches: 4, 10, 50 and 256 ed25519 signatures over vote messages, each by a
//! different committee member on a different header digest (the shape of a header bundle, or of
//! the signatures of several certificates checked together).
//!
//! Why it matters: every header and certificate a core accepts goes through the verify stage
//! first, so signature checking bounds how many certificates per second a validator can take in.
//! The variants show what batching buys over one-by-one checks, and what spreading chunks over
//! the rayon pool buys (or costs) at each size:
//! - `one_by_one`: `verify_one` per signature, the baseline;
//! - `batch_1_thread`: `verify_batch` with the verifier's default chunk size (64), the timing
//!   loop running inside a 1-thread rayon pool: batching alone;
//! - `batch_global_pool`: the same call on the global pool, which is what the verify stage does;
//!   batches of at most 64 items stay in one chunk, so only 256 runs in parallel;
//! - `batch_split_global_pool_<T>t`: chunks of `len / T` on the global pool of `T` threads, so
//!   every size is spread over every thread.
//!
//! Throughput is in elements: signatures checked per second.

use std::hint::black_box;

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use sleepyseal_core::crypto::{verify_batch, verify_one, PublicKey, Signature, SignatureItem};
use sleepyseal_core::hash::hash;
use sleepyseal_core::messages::vote_message;
use sleepyseal_core::testkit::{instance, keys};
use sleepyseal_core::verify::VerifierConfig;

/// Batch sizes: committees of 4, 10 and 50, and a large multi-certificate batch.
const SIZES: [usize; 4] = [4, 10, 50, 256];

/// `count` signatures by distinct signers over vote messages on distinct header digests.
fn signed_votes(count: usize) -> Vec<(PublicKey, [u8; 76], Signature)> {
    keys(count)
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let digest = hash(b"SEAL/BENCH/v1", &(i as u64).to_le_bytes());
            let message = vote_message(&instance(), &digest);
            (key.public(), message, key.sign(&message))
        })
        .collect()
}

fn items(votes: &[(PublicKey, [u8; 76], Signature)]) -> Vec<SignatureItem<'_>> {
    votes
        .iter()
        .map(|(public_key, message, signature)| SignatureItem {
            public_key: *public_key,
            message,
            signature: *signature,
        })
        .collect()
}

fn bench_verify(c: &mut Criterion) {
    let single = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .thread_name(|i| format!("verify-bench-{i}"))
        .build()
        .expect("1-thread pool");
    let threads = rayon::current_num_threads();
    let chunk_size = VerifierConfig::default().batch_size;
    let mut group = c.benchmark_group("verify_signatures");
    for size in SIZES {
        let votes = signed_votes(size);
        let items = items(&votes);
        assert!(
            verify_batch(&items, chunk_size).iter().all(|ok| *ok),
            "fixture signatures verify"
        );
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::new("one_by_one", size), &items, |b, items| {
            b.iter(|| items.iter().filter(|i| verify_one(black_box(i))).count())
        });
        group.bench_with_input(
            BenchmarkId::new("batch_1_thread", size),
            &items,
            // The whole timing loop runs on the pool's thread: no hand-off per iteration.
            |b, items| single.install(|| b.iter(|| verify_batch(black_box(items), chunk_size))),
        );
        group.bench_with_input(
            BenchmarkId::new("batch_global_pool", size),
            &items,
            |b, items| b.iter(|| verify_batch(black_box(items), chunk_size)),
        );
        let split = size.div_ceil(threads);
        group.bench_with_input(
            BenchmarkId::new(format!("batch_split_global_pool_{threads}t"), size),
            &items,
            |b, items| b.iter(|| verify_batch(black_box(items), split)),
        );
    }
    group.finish();
}

/// The generated `benches` function is public and undocumented; a private module keeps it out
/// of the `missing_docs` lint.
mod harness {
    criterion::criterion_group!(benches, super::bench_verify);
}

criterion_main!(harness::benches);
