//! Fuzz targets: what an untrusted driver can send a core, and what an untrusted core can send a
//! driver. Run coverage-guided by cargo-fuzz (`scripts/fuzz.sh`, targets in `fuzz/`) and, for a
//! few seconds of seeded inputs, by the `fuzz_targets` test in CI. Both install [`CountingAlloc`].
//!
//! - [`decode`]: raw bytes as a request and as a response. Never a panic; a value that decodes
//!   re-encodes to the same bytes (one encoding per value); decoding allocates at most
//!   [`DECODE_ALLOC_FACTOR`] × the input (+ a small constant), so a lying length prefix cannot
//!   make a core reserve memory it was not sent.
//! - [`core_handle`]: the input drives a sequence of structured requests against one honest core
//!   (committee of 4, core 3): real signed headers and certificates of a small DAG, headers
//!   crafted and validly signed by the other authorities (far-future and stale rounds, missing,
//!   fabricated and duplicated parents, wrong, oversized and mismatched payloads, equivocations,
//!   wrong instance), corrupted signatures, arbitrary reads and submissions, byte-level mutations
//!   of encoded requests, time jumps and restarts from the store. After every request: no panic,
//!   the reply re-decodes, no allocation above the request limit, the core never votes twice for
//!   one (author, round) nor signs two own headers for one round, and its round, commit index and
//!   committed sequence only grow. After a restart the recovered core equals the one that stopped;
//!   it recovers from its durable store (`WalStore`: log, segments and all) reopened from disk,
//!   which must load what the memory store fed the same writes holds.
//!
//! Layout: `alloc` (the counting allocator), `pool` (the pre-signed material), `harness` (the core
//! under test and its checks), `durable` (its store on disk), `steps` and `bundles` (the requests
//! an input drives).

mod alloc;
mod bundles;
mod durable;
mod harness;
mod pool;
mod steps;

use arbitrary::Unstructured;
use bytes::Bytes;
use sleepyseal_core::codec::{Decode, Encode};
use sleepyseal_core::committee::ProtocolConstants;
use sleepyseal_core::protocol::Response;
use sleepyseal_core::{CoreConfig, Request};

pub use alloc::{installed, measure, AllocStats, CountingAlloc};
use harness::Harness;

/// Decoding may allocate at most this many bytes per input byte (plus [`ALLOC_SLACK`]): vectors
/// are reserved from length prefixes already checked against the bytes left, and a decoded item
/// is at most 16 times its smallest encoding: an empty payload is 4 bytes on the wire and 64 in
/// memory (its bytes handle and digest). The per-list limits (4,096 payloads) cap that at
/// 256 KiB whatever the request size. Found by the first campaign: a factor of 8 is exceeded.
pub const DECODE_ALLOC_FACTOR: usize = 16;
/// Fixed allowance for small allocations that do not scale with the input.
pub const ALLOC_SLACK: usize = 64 << 10;
/// What handling one request may allocate beyond its decoding: the reply (at most a window of
/// committed entries, a few rounds of certificates and payloads in this harness) and the core's
/// own bookkeeping. Far below the 64 MiB request limit, so a small request that makes the core
/// reserve memory from a number it carries (a `max`, a round) is caught.
pub const HANDLE_ALLOC_BUDGET: usize = 4 << 20;

/// The core under test.
const ME: u16 = 3;
/// Rounds of the pre-built DAG.
const POOL_ROUNDS: u64 = 10;
/// Most requests one input drives.
const MAX_STEPS: usize = 48;

/// Target 1: `data` as a request and as a response.
pub fn decode(data: &[u8]) {
    let input = Bytes::copy_from_slice(data);
    let bound = DECODE_ALLOC_FACTOR * data.len() + ALLOC_SLACK;
    let (request, stats) = measure(|| Request::from_bytes(input.clone()));
    check_alloc("request decoding", stats, bound);
    if let Ok(request) = request {
        assert_eq!(
            request.to_bytes(),
            input,
            "a decoded request re-encodes to other bytes"
        );
    }
    let (response, stats) = measure(|| Response::from_bytes(input.clone()));
    check_alloc("response decoding", stats, bound);
    if let Ok(response) = response {
        assert_eq!(
            response.to_bytes(),
            input,
            "a decoded response re-encodes to other bytes"
        );
    }
}

/// Panics if `stats` exceed `bound` (largest single allocation or peak).
fn check_alloc(what: &str, stats: AllocStats, bound: usize) {
    assert!(
        stats.largest <= bound && stats.peak <= bound,
        "{what} allocated {stats:?}, above the bound of {bound} bytes"
    );
}

/// Target 2: `data` drives a sequence of requests against one core (see the module docs).
pub fn core_handle(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let constants = ProtocolConstants {
        gc_depth: u.int_in_range(1..=6).unwrap_or(3),
        checkpoint_interval: u.int_in_range(2..=6).unwrap_or(4),
    };
    let config = CoreConfig {
        retention_rounds: u.int_in_range(0..=4).unwrap_or(0),
        leader_timeout_ms: 50,
        vote_timeout_ms: 50,
        straggler_wait_ms: 20,
        committed_window_entries: u.int_in_range(4..=64).unwrap_or(16),
        batch_size_bytes: 1 << 10,
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config, constants);
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        if steps::step(&mut h, &mut u).is_err() {
            break;
        }
    }
    h.restart();
}
