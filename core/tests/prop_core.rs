//! Property tier: properties. Codec round trips and typed rejection of malformed input; the vote rule across
//! restarts; commit sequences of one DAG inserted in different orders are prefix-related.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use sleepyseal_core::codec::{Decode, Encode};
use sleepyseal_core::committee::default_schedule;
use sleepyseal_core::dag::Dag;
use sleepyseal_core::messages::Header;
use sleepyseal_core::protocol::{CommittedView, Request, RequestBody, Response};
use sleepyseal_core::store::MemStore;
use sleepyseal_core::testkit::{committee, instance, keys, sign_header, DagBuilder};
use sleepyseal_core::tusk::{try_commit, ConsensusState};
use sleepyseal_core::verify::VerifierConfig;
use sleepyseal_core::{
    AuthorityIndex, Core, CoreConfig, Digest, KeyPair, Millis, Payload, Round, Store, Verifier,
};

fn sample_requests() -> Vec<Request> {
    let c = committee(4);
    let mut b = DagBuilder::new(c.clone());
    b.full_rounds(2);
    let k = keys(4);
    let payload = Payload::from_transactions([&b"tx-one"[..], b"tx-two"]);
    let parents = b.rounds[1]
        .iter()
        .map(|c| sleepyseal_core::messages::ParentRef {
            author: c.author(),
            digest: c.digest(),
        })
        .collect();
    let header = Header::new(
        instance(),
        Round(2),
        AuthorityIndex(1),
        parents,
        payload.reference(),
        99,
    );
    let signed = sign_header(&k[1], header);
    let body = vec![
        RequestBody::GetState { with_payload: true },
        RequestBody::HeaderBundle {
            round: Round(2),
            headers: vec![signed],
            parents: b.rounds[1].clone(),
            payloads: vec![payload.clone()],
        },
        RequestBody::CertBundle {
            round: Round(2),
            certificates: b.rounds[2].clone(),
            parents: b.rounds[1].clone(),
            payloads: vec![payload],
        },
        RequestBody::Sync {
            certificates: b.all(),
            payloads: vec![],
        },
        RequestBody::Fetch {
            after: vec![Round(1); 4],
            max_items: 10,
            with_payloads: true,
        },
        RequestBody::Submit {
            transactions: vec![Bytes::from_static(b"a"), Bytes::new()],
        },
        RequestBody::ReadCommitted {
            from_index: 3,
            max: 9,
            view: CommittedView::Prefixes { bytes: 24 },
            wait_ms: 0,
        },
    ];
    body.into_iter()
        .map(|body| Request {
            instance: instance(),
            body,
        })
        .collect()
}

#[test]
fn every_request_kind_round_trips() {
    for request in sample_requests() {
        let bytes = request.to_bytes();
        assert_eq!(Request::from_bytes(bytes.clone()).as_ref(), Ok(&request));
        // Canonical: re-encoding gives the same bytes.
        assert_eq!(
            Request::from_bytes(bytes.clone()).unwrap().to_bytes(),
            bytes
        );
    }
}

#[test]
fn every_truncation_is_a_typed_error() {
    for request in sample_requests() {
        let bytes = request.to_bytes();
        for cut in 0..bytes.len() {
            assert!(
                Request::from_bytes(bytes.slice(..cut)).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
        let mut extended = bytes.to_vec();
        extended.push(0);
        assert!(
            Request::from_bytes(Bytes::from(extended)).is_err(),
            "trailing byte accepted"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Arbitrary bytes never panic the decoders.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Request::from_bytes(Bytes::from(bytes.clone()));
        let _ = Response::from_bytes(Bytes::from(bytes));
    }

    /// Flipping any byte of a valid request gives an error or a different valid request, never a
    /// panic, and a successful decode re-encodes to the flipped bytes (canonical encoding).
    #[test]
    fn mutated_requests_are_rejected_or_canonical(which in 0usize..7, position in any::<usize>(), xor in 1u8..=255) {
        let request = &sample_requests()[which];
        let mut bytes = request.to_bytes().to_vec();
        let i = position % bytes.len();
        bytes[i] ^= xor;
        if let Ok(decoded) = Request::from_bytes(Bytes::from(bytes.clone())) {
            prop_assert_eq!(decoded.to_bytes().to_vec(), bytes);
        }
    }
}

/// One offer to the core in the vote-rule property.
#[derive(Clone, Debug)]
enum Op {
    /// Offer a header by `author` (1..=3) at `round` (1..=2), variant `v`.
    Offer {
        author: u16,
        round: u64,
        variant: u64,
    },
    /// Crash and recover from the store.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u16..=3, 1u64..=2, 0u64..3).prop_map(|(author, round, variant)| Op::Offer { author, round, variant }),
        1 => Just(Op::Restart),
    ]
}

fn new_core(store: &mut MemStore) -> Core {
    let c = committee(4);
    Core::recover(
        c.clone(),
        default_schedule(&c),
        KeyPair::deterministic(0, 0),
        CoreConfig::default(),
        store.load().unwrap(),
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// S3 at unit level: whatever headers arrive, with restarts interleaved, the core never signs
    /// two digests for one (author, round).
    #[test]
    fn vote_rule_survives_restarts(ops in proptest::collection::vec(op(), 1..40)) {
        let c = committee(4);
        let k = keys(4);
        let mut b = DagBuilder::new(c.clone());
        b.full_rounds(1);
        let verifier = Verifier::new(c.clone(), VerifierConfig::default());
        let mut store = MemStore::new();
        let mut core = new_core(&mut store);
        let mut signed: HashMap<(u16, u64), Digest> = HashMap::new();
        for (step, op) in ops.into_iter().enumerate() {
            let Op::Offer { author, round, variant } = op else {
                core = new_core(&mut store);
                continue;
            };
            let parents_certs = &b.rounds[round as usize - 1];
            let parents = parents_certs.iter().map(|p| sleepyseal_core::messages::ParentRef { author: p.author(), digest: p.digest() }).collect();
            let payload = Payload::from_transactions([&variant.to_le_bytes()[..]]);
            let header = Header::new(instance(), Round(round), AuthorityIndex(author), parents, payload.reference(), variant);
            let digest = header.digest();
            let request = Request { instance: instance(), body: RequestBody::HeaderBundle {
                round: Round(round),
                headers: vec![sign_header(&k[author as usize], header)],
                parents: if round == 2 { b.rounds[1].clone() } else { vec![] },
                payloads: vec![payload],
            }};
            let (response, batch) = core.handle(Millis(step as u64), verifier.verify(request).unwrap());
            store.commit(&[batch]).unwrap();
            if let Response::Votes { votes, .. } = response {
                for v in votes {
                    prop_assert_eq!(v.header_digest, digest);
                    let first = *signed.entry((author, round)).or_insert(digest);
                    prop_assert_eq!(first, digest, "two digests signed for ({}, {})", author, round);
                }
            }
        }
    }

    /// Two cores given the same DAG in different (causal) orders, one seeing only a prefix, commit
    /// prefix-related sequences.
    #[test]
    fn insertion_order_gives_prefix_related_commits(seed in any::<u64>(), cut in 0usize..100) {
        let c = committee(4);
        let mut b = DagBuilder::new(c.clone());
        let mut x = seed | 1;
        let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
        for _ in 0..8 {
            // Each round: a random author set of ≥ 3, each on a random quorum of parents.
            let skip = (next() % 5) as u16; // 4 = nobody skipped
            let authors: Vec<u16> = (0..4).filter(|a| *a != skip).collect();
            let previous: Vec<u16> = b.rounds.last().unwrap().iter().map(|c| c.author().0).collect();
            let drop = previous[(next() % previous.len() as u64) as usize];
            let parents: Vec<u16> = if previous.len() == 4 { previous.iter().copied().filter(|a| *a != drop).collect() } else { previous };
            b.round(&authors, Some(&parents));
        }
        let all = b.all();
        let run = |certs: &[sleepyseal_core::Certificate]| {
            let schedule = default_schedule(&c);
            let mut dag = Dag::new(&c);
            let mut state = ConsensusState::new(4);
            let mut out = Vec::new();
            for cert in certs {
                dag.insert(Arc::new(cert.clone())).unwrap();
                let (commits, next_state) = try_commit(&dag, &state, &c, schedule.as_ref());
                out.extend(commits.entries.iter().map(|e| (e.digest, e.commit_hash)));
                state = next_state;
            }
            out
        };
        // View A: round by round, authors descending. View B: a causal prefix, authors ascending.
        let mut a_order = all.clone();
        a_order.sort_by_key(|c| (c.round(), std::cmp::Reverse(c.author())));
        let prefix = all.len() * cut / 100;
        let b_order: Vec<_> = all[..prefix].to_vec();
        let (a, bseq) = (run(&a_order), run(&b_order));
        let common = a.len().min(bseq.len());
        prop_assert_eq!(&a[..common], &bseq[..common]);
    }
}
