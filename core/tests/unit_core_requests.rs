//! Unit tier: request-level behaviour of `Core` that a driver depends on.

use std::sync::Arc;

use bytes::Bytes;
use sleepyseal_core::committee::default_schedule;
use sleepyseal_core::messages::{Header, ParentRef};
use sleepyseal_core::protocol::{CommittedEntry, CommittedView, Request, RequestBody, Response};
use sleepyseal_core::store::MemStore;
use sleepyseal_core::testkit::{
    committee, committee_with_gc_depth, instance, keys, sign_header, DagBuilder,
};
use sleepyseal_core::verify::VerifierConfig;
use sleepyseal_core::{
    AuthorityIndex, Committee, Core, CoreConfig, CoreError, KeyPair, Millis, Payload, Round,
    Status, Store, Verifier,
};

fn fresh_core(me: u16) -> (Core, MemStore) {
    core_with(me, CoreConfig::default())
}

/// Core `me` of `committee(4)` with `config`, on an empty store.
fn core_with(me: u16, config: CoreConfig) -> (Core, MemStore) {
    core_in(&committee(4), me, config)
}

/// Core `me` of `c` with `config`, on an empty store.
fn core_in(c: &Arc<Committee>, me: u16, config: CoreConfig) -> (Core, MemStore) {
    let mut store = MemStore::new();
    let core = Core::recover(
        c.clone(),
        default_schedule(c),
        KeyPair::deterministic(0, me),
        config,
        store.load().unwrap(),
    )
    .unwrap();
    (core, store)
}

/// Syncs every certificate `b` built (with payloads) into `core` at time `at`, stores the writes
/// and returns the reply.
fn sync_built(
    core: &mut Core,
    store: &mut MemStore,
    verifier: &Verifier,
    b: &DagBuilder,
    at: u64,
) -> Response {
    let certificates = b.all();
    let payloads = certificates
        .iter()
        .map(|c| DagBuilder::payload(c.round(), c.author()))
        .collect();
    let sync = Request {
        instance: instance(),
        body: RequestBody::Sync {
            certificates,
            payloads,
        },
    };
    let (response, batch) = core.handle(Millis(at), verifier.verify(sync).unwrap());
    store.commit(&[batch]).unwrap();
    response
}

/// Core 3 of a 4-core committee (gc depth 4) with `config` that synced 30 full rounds: the
/// core, its store, the committee and a verifier.
fn synced_core(config: CoreConfig) -> (Core, MemStore, Arc<Committee>, Verifier) {
    let c = committee_with_gc_depth(4, 2);
    let (mut core, mut store) = core_in(&c, 3, config);
    let verifier = Verifier::new(c.clone(), VerifierConfig::default());
    let mut b = DagBuilder::new(c.clone());
    b.full_rounds(30);
    sync_built(&mut core, &mut store, &verifier, &b, 1);
    (core, store, c, verifier)
}

/// Core 3 of `c` again, from what `store` holds.
fn restarted(c: &Arc<Committee>, config: CoreConfig, store: &mut MemStore) -> Core {
    Core::recover(
        c.clone(),
        default_schedule(c),
        KeyPair::deterministic(0, 3),
        config,
        store.load().unwrap(),
    )
    .unwrap()
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

/// Batching across requests changes nothing: `verify_many` gives, request by request, what
/// `verify` gives, including for bad header signatures (dropped and reported), bad certificate
/// signatures (whole request refused, even when a copy with valid signatures was verified just
/// before: the cache is keyed by digest and signatures) and a wrong instance.
#[test]
fn verify_many_agrees_with_verify() {
    let c = committee(4);
    let k = keys(4);
    let mut b = DagBuilder::new(c.clone());
    b.full_rounds(2);
    let payload = Payload::from_transactions([&b"x"[..]]);
    let parents: Vec<ParentRef> = b.rounds[2]
        .iter()
        .map(|p| ParentRef {
            author: p.author(),
            digest: p.digest(),
        })
        .collect();
    let header = |author: u16| {
        sign_header(
            &k[author as usize],
            Header::new(
                instance(),
                Round(3),
                AuthorityIndex(author),
                parents.clone(),
                payload.reference(),
                3,
            ),
        )
    };
    let mut forged = header(2);
    forged.signature = k[3].sign(b"something else");
    let mut bad_certificate = b.rounds[2][1].clone();
    bad_certificate.signatures[0] = k[0].sign(b"not this");
    let bundle = |headers, parents| Request {
        instance: instance(),
        body: RequestBody::HeaderBundle {
            round: Round(3),
            headers,
            parents,
            payloads: vec![payload.clone()],
        },
    };
    let requests = vec![
        bundle(vec![header(0), header(1)], b.rounds[2].clone()),
        bundle(vec![header(1), forged], vec![]),
        Request {
            instance: instance(),
            body: RequestBody::Sync {
                certificates: vec![b.rounds[1][0].clone(), bad_certificate],
                payloads: vec![],
            },
        },
        Request {
            instance: sleepyseal_core::Digest([9; 32]),
            body: RequestBody::GetState {
                with_payload: false,
            },
        },
        Request {
            instance: instance(),
            body: RequestBody::Sync {
                certificates: b.all(),
                payloads: vec![],
            },
        },
    ];
    // Fresh verifiers on both sides, so neither benefits from the other's certificate cache.
    let one_by_one: Vec<String> = {
        let v = Verifier::new(c.clone(), VerifierConfig::default());
        requests
            .iter()
            .map(|r| format!("{:?}", v.verify(r.clone())))
            .collect()
    };
    let batched: Vec<String> = Verifier::new(c.clone(), VerifierConfig::default())
        .verify_many(requests)
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
    assert_eq!(one_by_one, batched);
    assert!(batched[1].contains("BadSignature"), "{}", batched[1]);
    assert!(batched[2].starts_with("Err(BadSignature"), "{}", batched[2]);
    assert!(
        batched[3].starts_with("Err(WrongInstance"),
        "{}",
        batched[3]
    );
    assert!(batched[4].starts_with("Ok("), "{}", batched[4]);
}

/// The committed sequence served to clients is a bounded window: older entries are evicted with
/// their payloads and reading them is a typed error, while every retained entry still has its
/// payload (even far below the GC floor). A restart rebuilds the same window.
#[test]
fn committed_window_is_bounded_and_keeps_payloads() {
    let config = CoreConfig {
        retention_rounds: 0,
        committed_window_entries: 40,
        ..CoreConfig::default()
    };
    let (mut core, mut store, c, verifier) = synced_core(config.clone());
    let total = core.consensus().consensus_index;
    let base = core.committed_base();
    assert!(total > 40, "committed {total}");
    assert!(base > 0 && total - base <= 40, "window {base}..{total}");
    let read_as = |core: &mut Core, from: u64, view: CommittedView| {
        let request = Request {
            instance: instance(),
            body: RequestBody::ReadCommitted {
                from_index: from,
                max: 100,
                view,
                wait_ms: 0,
            },
        };
        core.handle(Millis(2), verifier.verify(request).unwrap()).0
    };
    let read = |core: &mut Core, from: u64| read_as(core, from, CommittedView::Payloads);
    assert_eq!(
        read(&mut core, 0),
        Response::Error(CoreError::CommittedEvicted { first_index: base })
    );
    let retained = read(&mut core, base);
    let Response::Committed {
        entries, payloads, ..
    } = &retained
    else {
        panic!("{retained:?}")
    };
    assert_eq!(entries.len() as u64, total - base);
    assert!(
        entries[0].round.0 + 5 < core.gc_round().0,
        "entries far below the GC floor are retained"
    );
    for e in entries {
        assert!(
            payloads.iter().any(|p| p.digest() == e.payload.digest),
            "payload of entry {} missing",
            e.index
        );
    }
    // The prefix view: each transaction's length and first bytes, no payload bytes beyond them.
    let prefixed = read_as(&mut core, base, CommittedView::Prefixes { bytes: 4 });
    let Response::Committed {
        entries: same,
        payloads: none,
        prefixes,
    } = &prefixed
    else {
        panic!("{prefixed:?}")
    };
    assert_eq!((same, none.len()), (entries, 0));
    for p in payloads {
        let txs = p.transactions().unwrap();
        let got = prefixes.iter().find(|q| q.digest == p.digest()).unwrap();
        let got = got.transactions.as_ref().unwrap();
        assert_eq!(got.len(), txs.len());
        for (tx, prefix) in txs.iter().zip(got) {
            assert_eq!(prefix.len as usize, tx.len());
            assert_eq!(&prefix.prefix[..], &tx[..tx.len().min(4)]);
        }
    }
    // A restart serves the same window.
    let mut again = restarted(&c, config, &mut store);
    assert_eq!(again.committed_base(), base);
    assert_eq!(read(&mut again, base), retained);
}

/// A core holding a quorum of a round waits (up to `straggler_wait_ms`) for the certificate of an
/// author that was live in the round before, so its next header references it: a certificate no
/// later header references never commits. A silent (crashed) author is not waited for.
#[test]
fn straggler_wait_is_bounded_and_skips_silent_authors() {
    let c = committee(4);
    let config = CoreConfig {
        leader_timeout_ms: 0,
        vote_timeout_ms: 0,
        straggler_wait_ms: 20,
        ..CoreConfig::default()
    };
    let verifier = Verifier::new(c.clone(), VerifierConfig::default());
    let run = |round_one: &[u16]| {
        let (mut core, mut store) = core_with(3, config.clone());
        let mut b = DagBuilder::new(c.clone());
        b.round(round_one, None).round(&[0, 1, 2], None);
        let response = sync_built(&mut core, &mut store, &verifier, &b, 100);
        let status = |r: &Response| match r {
            Response::Summary(s) => s.status.clone(),
            other => panic!("{other:?}"),
        };
        let first = (status(&response), core.round());
        let poll = |core: &mut Core, at: u64| {
            let request = Request {
                instance: instance(),
                body: RequestBody::GetState {
                    with_payload: false,
                },
            };
            let (response, _) = core.handle(Millis(at), verifier.verify(request).unwrap());
            (status(&response), core.round())
        };
        let early = poll(&mut core, 110);
        let late = poll(&mut core, 120);
        (first, early, late)
    };
    // Author 3 certified round 1 but its round-2 certificate is missing: wait 20 ms, then go.
    let (first, early, late) = run(&[0, 1, 2, 3]);
    assert_eq!(
        first,
        (Status::NotReady { retry_after_ms: 20 }, Round(0)),
        "waits for the live straggler"
    );
    assert_eq!(early, (Status::NotReady { retry_after_ms: 10 }, Round(0)));
    assert_eq!(late, (Status::Ready, Round(3)), "the wait is bounded");
    // Author 3 was silent in round 1 as well: no wait.
    let (first, _, _) = run(&[0, 1, 2]);
    assert_eq!(first, (Status::Ready, Round(3)));
}

/// Regression (CI, `e2e::a_core_killed_with_sigkill_...`): a core that catches up after a restart
/// can raise gc_round by more than `retention_rounds` in one commit. Payloads below the retention
/// window were dropped before the own headers below gc_round were re-queued, so the payload of an
/// own header that never committed was gone when its transactions had to go back to the mempool:
/// the core stopped on an assertion (and would have lost acknowledged transactions). The payload
/// of every own header is kept as long as the header is, whatever the jump.
#[test]
fn own_payload_survives_a_gc_jump_beyond_retention() {
    let c = committee_with_gc_depth(4, 2);
    let config = CoreConfig {
        retention_rounds: 0,
        leader_timeout_ms: 0,
        vote_timeout_ms: 0,
        straggler_wait_ms: 0,
        ..CoreConfig::default()
    };
    let (mut core, mut store) = core_in(&c, 3, config.clone());
    let verifier = Verifier::new(c.clone(), VerifierConfig::default());
    let submitted: Vec<Bytes> = (0..5u8).map(|i| Bytes::from(vec![i; 40])).collect();
    let submit = Request {
        instance: instance(),
        body: RequestBody::Submit {
            transactions: submitted.clone(),
        },
    };
    let (_, batch) = core.handle(Millis(1), verifier.verify(submit).unwrap());
    store.commit(&[batch]).unwrap();

    // Round 1 by everyone else: core 3 proposes its round-2 header with the transactions.
    let mut b = DagBuilder::new(c.clone());
    b.round(&[0, 1, 2], None);
    sync_built(&mut core, &mut store, &verifier, &b, 2);
    assert_eq!(core.round(), Round(2));
    assert_eq!(
        core.mempool_len(),
        0,
        "the transactions went into the own header"
    );

    // The others go on without core 3's header for 30 rounds; core 3 learns them in one sync:
    // gc_round jumps from 0 to ~28 while retention is 0. Then it proposes again, and once more
    // rounds commit, its round-2 header falls below gc_round and must be re-queued.
    b.round(&[0, 1, 2], Some(&[0, 1, 2]));
    for _ in 0..30 {
        b.round(&[0, 1, 2], None);
    }
    sync_built(&mut core, &mut store, &verifier, &b, 3);
    for _ in 0..4 {
        b.round(&[0, 1, 2], None);
    }
    sync_built(&mut core, &mut store, &verifier, &b, 4);
    assert!(core.gc_round() > Round(2), "gc {:?}", core.gc_round());

    let mut pending = core.pending_transactions();
    pending.sort();
    assert_eq!(
        pending, submitted,
        "every acknowledged transaction is pending again"
    );
    assert_eq!(core.counters().transactions_requeued, 5);
    // And the re-queue is durable: a restart holds the same pending transactions.
    let restarted = Core::recover(
        c.clone(),
        default_schedule(&c),
        KeyPair::deterministic(0, 3),
        config,
        store.load().unwrap(),
    )
    .unwrap();
    let mut pending = restarted.pending_transactions();
    pending.sort();
    assert_eq!(pending, submitted);
}

/// With a backlog, the own header's batch grows past the batch size (to the backlog's share of
/// two headers, up to the largest batch); a backlog beyond four largest batches is refused
/// with `Busy`, never queued.
#[test]
fn the_batch_grows_with_the_backlog_and_admission_is_bounded() {
    let config = CoreConfig {
        batch_size_bytes: 1_000,
        max_batch_size_bytes: 4_000,
        ..CoreConfig::default()
    };
    let verifier = Verifier::new(committee(4), VerifierConfig::default());
    let handle = |core: &mut Core, store: &mut MemStore, body: RequestBody| {
        let request = Request {
            instance: instance(),
            body,
        };
        let (response, batch) = core.handle(Millis(1), verifier.verify(request).unwrap());
        store.commit(&[batch]).unwrap();
        response
    };
    let submit = |n: usize| RequestBody::Submit {
        transactions: (0..n).map(|i| Bytes::from(vec![i as u8; 96])).collect(),
    };
    // Transactions of 96 bytes: the backlog counts their bytes, a batch also their 4-byte
    // length prefixes (100 B each).
    let own_payload_len = |backlog: usize| {
        let (mut core, mut store) = core_with(1, config.clone());
        let accepted = handle(&mut core, &mut store, submit(backlog));
        assert_eq!(
            accepted,
            Response::Submitted {
                accepted: backlog as u32
            }
        );
        let Response::Summary(s) = handle(
            &mut core,
            &mut store,
            RequestBody::GetState {
                with_payload: false,
            },
        ) else {
            panic!("no summary")
        };
        s.own_header.expect("round 1 built").header.payload().len as usize
    };
    assert_eq!(own_payload_len(5), 500, "a small backlog goes whole");
    assert_eq!(
        own_payload_len(30),
        1_400,
        "2,880 B: half of it, above the batch size"
    );
    assert_eq!(own_payload_len(150), 4_000, "14,400 B: the largest batch");
    // Admission: at most 4 largest batches (16,000 B) queued.
    let (mut core, mut store) = core_with(1, config.clone());
    let busy = handle(&mut core, &mut store, submit(167));
    assert_eq!(busy, Response::Error(CoreError::Busy));
    assert_eq!(
        handle(&mut core, &mut store, submit(166)),
        Response::Submitted { accepted: 166 }
    );
    let more = handle(&mut core, &mut store, submit(1));
    assert_eq!(more, Response::Error(CoreError::Busy));
}

/// Committed entries are retained by count, apart from their payloads (PROTOCOL.md §8a.6): a
/// payload byte budget far smaller than the entries' payloads evicts payloads, never the
/// entries a gap fill or a reader needs. A restart keeps both.
#[test]
fn committed_entries_outlive_their_payloads() {
    let config = CoreConfig {
        retention_rounds: 0,
        committed_window_bytes: 1,
        ..CoreConfig::default()
    };
    let (core, mut store, c, _) = synced_core(config.clone());
    let total = core.consensus().consensus_index;
    assert!(total > 40, "committed {total}");
    assert_eq!(core.committed_base(), 0, "every entry retained");
    let entries = core.committed_from(0, usize::MAX).unwrap();
    assert_eq!(entries.len() as u64, total);
    let gc = core.gc_round();
    let (old, recent): (Vec<&CommittedEntry>, Vec<_>) = entries.iter().partition(|e| e.round < gc);
    assert!(!old.is_empty() && !recent.is_empty());
    assert!(
        old.iter()
            .all(|e| core.payload(&e.payload.digest).is_none()),
        "payloads beyond the byte budget are dropped"
    );
    assert!(
        recent
            .iter()
            .all(|e| core.payload(&e.payload.digest).is_some()),
        "payloads of entries at or above gc_round stay"
    );
    let again = restarted(&c, config, &mut store);
    assert_eq!(again.committed_from(0, usize::MAX).unwrap(), entries);
}
