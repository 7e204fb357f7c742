//! T0: request-level behaviour of `Core` that a driver depends on.

use bytes::Bytes;
use sleepyseal_core::committee::default_schedule;
use sleepyseal_core::messages::{Header, ParentRef};
use sleepyseal_core::protocol::{Request, RequestBody, Response};
use sleepyseal_core::store::MemStore;
use sleepyseal_core::testkit::{committee, instance, keys, sign_header, DagBuilder};
use sleepyseal_core::verify::VerifierConfig;
use sleepyseal_core::{
    AuthorityIndex, Core, CoreConfig, CoreError, KeyPair, Millis, Payload, Round, Store, Verifier,
};

fn fresh_core(me: u16) -> (Core, MemStore) {
    let c = committee(4);
    let mut store = MemStore::new();
    let core = Core::recover(
        c.clone(),
        default_schedule(&c),
        KeyPair::deterministic(0, me),
        CoreConfig::default(),
        store.load().unwrap(),
    )
    .unwrap();
    (core, store)
}

fn round_one_header(author: u16, payload: &Payload) -> sleepyseal_core::SignedHeader {
    let c = committee(4);
    let mut b = DagBuilder::new(c);
    b.full_rounds(0);
    let parents = b.rounds[0]
        .iter()
        .map(|p| ParentRef {
            author: p.author(),
            digest: p.digest(),
        })
        .collect();
    let header = Header::new(
        instance(),
        Round(1),
        AuthorityIndex(author),
        parents,
        payload.reference(),
        1,
    );
    sign_header(&keys(4)[author as usize], header)
}

/// Regression (sim seed 441, n = 4, one crash): a header with an empty payload was refused with
/// `MissingPayload` by a core that had never stored the empty payload, while drivers never carry
/// empty payloads. Round 1 stalled for good. Every core holds the empty payload by definition.
#[test]
fn empty_payload_needs_no_carrying() {
    let (mut core, mut store) = fresh_core(0);
    let verifier = Verifier::new(committee(4), VerifierConfig::default());
    let empty = Payload::new(Bytes::new());
    let header = round_one_header(1, &empty);
    let digest = header.header.digest();
    let request = Request {
        instance: instance(),
        body: RequestBody::HeaderBundle {
            round: Round(1),
            headers: vec![header],
            parents: vec![],
            payloads: vec![],
        },
    };
    let (response, batch) = core.handle(Millis(5), verifier.verify(request).unwrap());
    store.commit(&[batch]).unwrap();
    let Response::Votes {
        votes, rejected, ..
    } = response
    else {
        panic!("expected votes, got {response:?}");
    };
    assert!(rejected.is_empty(), "refused: {rejected:?}");
    assert_eq!(votes.len(), 1);
    assert_eq!(votes[0].header_digest, digest);
}

/// A non-empty payload that is neither carried nor stored is still refused, with its digest, so
/// the driver knows what to carry next time.
#[test]
fn missing_payload_is_named() {
    let (mut core, _store) = fresh_core(0);
    let verifier = Verifier::new(committee(4), VerifierConfig::default());
    let payload = Payload::from_transactions([&b"not carried"[..]]);
    let header = round_one_header(2, &payload);
    let request = Request {
        instance: instance(),
        body: RequestBody::HeaderBundle {
            round: Round(1),
            headers: vec![header.clone()],
            parents: vec![],
            payloads: vec![],
        },
    };
    let (response, _) = core.handle(Millis(5), verifier.verify(request).unwrap());
    let Response::Votes {
        votes, rejected, ..
    } = response
    else {
        panic!("expected votes, got {response:?}");
    };
    assert!(votes.is_empty());
    assert_eq!(
        rejected,
        vec![(
            header.header.digest(),
            CoreError::MissingPayload {
                digest: payload.digest()
            }
        )]
    );
}
