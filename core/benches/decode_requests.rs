//! Decoding of protocol requests (`Request::from_bytes`, the canonical codec of `codec.rs`) as a
//! server receives them, for committees of 4, 10 and 50:
//! - `header_bundle`: the headers of one round by every author, each with its payload carried:
//!   ~500 KB of 512-byte transactions per header (the default `batch_size_bytes`);
//! - `header_bundle_headers_only`: the same headers without payloads, to separate the structural
//!   cost (parents, signatures, header digests) from hashing the payload bytes;
//! - `cert_bundle`: the certificates of one round, each signed by every validator.
//!
//! Why it matters: every request a core answers is decoded first, on the server's receive path,
//! and payload bytes dominate what crosses the wire. Decoding is zero-copy but hashes every
//! payload and header once, so this bounds the bytes per second one receive thread can accept.
//!
//! Throughput is in bytes of encoded request.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use sleepyseal_core::codec::{Decode, Encode};
use sleepyseal_core::messages::{Header, ParentRef};
use sleepyseal_core::testkit::{committee, instance, keys, sign_header, DagBuilder};
use sleepyseal_core::{AuthorityIndex, Payload, Request, RequestBody, Round};

/// Committee sizes.
const SIZES: [usize; 3] = [4, 10, 50];
/// Size of one transaction.
const TRANSACTION_BYTES: usize = 512;
/// Target payload size per header.
const PAYLOAD_BYTES: usize = 500_000;

/// A payload of ~`PAYLOAD_BYTES` of distinct `TRANSACTION_BYTES`-byte transactions by `author`.
fn payload(author: usize) -> Payload {
    let count = PAYLOAD_BYTES / (TRANSACTION_BYTES + 4);
    let transactions: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            let mut tx = vec![author as u8; TRANSACTION_BYTES];
            tx[..8].copy_from_slice(&(i as u64).to_le_bytes());
            tx
        })
        .collect();
    Payload::from_transactions(transactions.iter().map(Vec::as_slice))
}

/// Round-2 headers by every author of a committee of `n` (parents: all round-1 certificates),
/// with their payloads when `with_payloads`.
fn header_bundle(n: usize, with_payloads: bool) -> Request {
    let mut dag = DagBuilder::new(committee(n));
    dag.full_rounds(1);
    let parents: Vec<ParentRef> = dag.rounds[1]
        .iter()
        .map(|c| ParentRef {
            author: c.author(),
            digest: c.digest(),
        })
        .collect();
    let keys = keys(n);
    let payloads: Vec<Payload> = (0..n).map(payload).collect();
    let headers = keys
        .iter()
        .zip(&payloads)
        .enumerate()
        .map(|(author, (key, payload))| {
            let header = Header::new(
                instance(),
                Round(2),
                AuthorityIndex(author as u16),
                parents.clone(),
                payload.reference(),
                2,
            );
            sign_header(key, header)
        })
        .collect();
    Request {
        instance: instance(),
        body: RequestBody::HeaderBundle {
            round: Round(2),
            headers,
            parents: Vec::new(),
            payloads: if with_payloads { payloads } else { Vec::new() },
        },
    }
}

/// The round-2 certificates of a committee of `n`, each signed by all `n`.
fn cert_bundle(n: usize) -> Request {
    let mut dag = DagBuilder::new(committee(n));
    dag.full_rounds(2);
    Request {
        instance: instance(),
        body: RequestBody::CertBundle {
            round: Round(2),
            certificates: dag.rounds[2].clone(),
            parents: Vec::new(),
            payloads: Vec::new(),
        },
    }
}

/// Benchmarks decoding `make(n)` for each committee size `n`, in group `group_name`.
fn bench_decode(group_name: &str, c: &mut Criterion, make: impl Fn(usize) -> Request) {
    let mut group = c.benchmark_group(group_name);
    group.sample_size(20);
    for n in SIZES {
        let request = make(n);
        let encoded: Bytes = request.to_bytes();
        assert_eq!(
            Request::from_bytes(encoded.clone()).as_ref(),
            Ok(&request),
            "round trip"
        );
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &encoded, |b, encoded| {
            b.iter(|| Request::from_bytes(black_box(encoded.clone())).expect("decodes"))
        });
    }
    group.finish();
}

fn bench_requests(c: &mut Criterion) {
    bench_decode("decode_requests/header_bundle", c, |n| {
        header_bundle(n, true)
    });
    bench_decode("decode_requests/header_bundle_headers_only", c, |n| {
        header_bundle(n, false)
    });
    bench_decode("decode_requests/cert_bundle", c, cert_bundle);
}

/// The generated `benches` function is public and undocumented; a private module keeps it out
/// of the `missing_docs` lint.
mod harness {
    criterion::criterion_group!(benches, super::bench_requests);
}

criterion_main!(harness::benches);
