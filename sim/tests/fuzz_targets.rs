//! Fuzz tier in CI: the fuzz targets of `sleepyseal_sim::fuzz` on seeded inputs (a few seconds; the
//! coverage-guided campaign runs with `scripts/fuzz.sh`), and every input a campaign ever found
//! (`fuzz/regressions/<target>/`), under the counting allocator.

use sleepyseal_sim::fuzz::{self, CountingAlloc};
use sleepyseal_sim::SimRng;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Inputs: random bytes, and (for `decode`) prefixes of real encodings with bytes damaged.
fn inputs(seed: u64, count: usize, max_len: usize, mut seeds: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut rng = SimRng::new(seed);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let mut input = if !seeds.is_empty() && i % 2 == 0 {
            seeds[rng.index(seeds.len())].clone()
        } else {
            let len = rng.index(max_len + 1);
            (0..len).map(|_| rng.next_u64() as u8).collect()
        };
        for _ in 0..rng.index(4) {
            if input.is_empty() {
                break;
            }
            let at = rng.index(input.len());
            match rng.index(3) {
                0 => input[at] ^= 1 << rng.index(8),
                1 => input.truncate(at),
                _ => input[at] = 0xff,
            }
        }
        out.push(input);
    }
    seeds.clear();
    out
}

fn regressions(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| std::fs::read(f).expect("regression input readable"))
        .collect()
}

#[test]
fn the_counting_allocator_is_installed_and_sees_a_lying_reservation() {
    assert!(fuzz::installed());
    let (_, stats) = fuzz::measure(|| Vec::<u64>::with_capacity(1 << 20));
    assert!(stats.largest >= 8 << 20, "{stats:?}");
    // What the decode bound refuses: 8 MiB reserved for a 100-byte input.
    assert!(stats.largest > fuzz::DECODE_ALLOC_FACTOR * 100 + fuzz::ALLOC_SLACK);
}

#[test]
fn decode_target_on_seeded_inputs() {
    use sleepyseal_core::codec::Encode;
    use sleepyseal_core::protocol::RequestBody;
    assert!(fuzz::installed());
    let instance = sleepyseal_core::testkit::instance();
    let mut b = sleepyseal_core::testkit::DagBuilder::new(sleepyseal_core::testkit::committee(4));
    b.full_rounds(3);
    let real = vec![
        sleepyseal_core::Request {
            instance,
            body: RequestBody::Sync {
                certificates: b.all(),
                payloads: vec![sleepyseal_core::testkit::DagBuilder::payload(
                    sleepyseal_core::Round(1),
                    sleepyseal_core::AuthorityIndex(0),
                )],
            },
        }
        .to_bytes()
        .to_vec(),
        sleepyseal_core::Request {
            instance,
            body: RequestBody::Submit {
                transactions: vec![bytes::Bytes::from_static(b"tx")],
            },
        }
        .to_bytes()
        .to_vec(),
        // A reply as a core serves its checkpoint states (decoded as a response too).
        sleepyseal_core::Response::Checkpoints(vec![
            sleepyseal_core::checkpoint::SignedCheckpoint {
                state: sleepyseal_core::checkpoint::CheckpointState::of(
                    instance,
                    &sleepyseal_core::tusk::ConsensusState::new(4),
                ),
                signer: sleepyseal_core::AuthorityIndex(1),
                signature: sleepyseal_core::Signature([3; 64]),
            };
            2
        ])
        .to_bytes()
        .to_vec(),
    ];
    for input in regressions("decode")
        .into_iter()
        .chain(inputs(1, 20_000, 512, real))
    {
        fuzz::decode(&input);
    }
}

#[test]
fn core_handle_target_on_seeded_inputs() {
    assert!(fuzz::installed());
    for input in regressions("core_handle")
        .into_iter()
        .chain(inputs(2, 300, 2_048, Vec::new()))
    {
        fuzz::core_handle(&input);
    }
}
