//! `Core::handle` on the two requests that carry a round forward, for committees of 4, 10 and 50,
//! with the core backed by the in-memory store (`MemStore`):
//! - `header_bundle`: the headers of one round by every author (the core's own among them, as a
//!   driver re-sends it), with their payloads carried: the core checks parents and payloads,
//!   persists `last_voted` and the payloads, and signs one vote per header. Run with payloads of
//!   ~500 KB of 512-byte transactions (`header_bundle_500KB`) and of two tiny transactions
//!   (`header_bundle_tiny`);
//! - `cert_bundle`: the certificates of one round by every author, which the core inserts before
//!   building and signing its header of the next round. At an odd round (`cert_bundle_commit`)
//!   this also commits the leader of the round before it with its sub-DAG (2n certificates in
//!   steady state); at an even round (`cert_bundle_no_commit`) it only inserts and advances.
//!
//! Why it matters: the core is owned by one thread, and every request of every driver passes
//! through `handle`, so its cost per round bounds the rounds per second a validator can follow.
//! Signature checks are not part of it: the verify stage does them before the core (see the
//! `verify_signatures` bench). The reply's `WriteBatch` is returned but not made durable here.
//!
//! Throughput is in elements: headers or certificates of the bundle (n per request).
//!
//! Setup (not measured, through `iter_batched`): a core of validator 0 is driven round by round
//! (header bundle, then certificate bundle, as drivers do) to just before the measured request;
//! each iteration rebuilds that core with `Core::recover` from a copy of its store.

use std::sync::Arc;

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{criterion_main, BatchSize, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use sleepyseal_core::committee::{default_schedule, LeaderSchedule};
use sleepyseal_core::messages::{Header, ParentRef};
use sleepyseal_core::protocol::{Request, RequestBody, Response};
use sleepyseal_core::testkit::{committee, instance, keys, sign_header, vote, DagBuilder};
use sleepyseal_core::verify::{CheckedRequest, VerifierConfig};
use sleepyseal_core::{
    AuthorityIndex, Certificate, Committee, Core, CoreConfig, KeyPair, MemStore, Millis, Payload,
    Round, SignedHeader, Store, Verified, Verifier,
};

/// Committee sizes.
const SIZES: [usize; 3] = [4, 10, 50];
/// The benchmarked core's validator index.
const ME: u16 = 0;
/// Rounds completed before the measured header bundle (even, so the next round is odd).
const WARM_ROUNDS: u64 = 8;
/// Size of one transaction in the large payloads.
const TRANSACTION_BYTES: usize = 512;
/// Target size of a large payload (the default `batch_size_bytes`).
const PAYLOAD_BYTES: usize = 500_000;

/// Payload sizes of the measured header bundle.
#[derive(Clone, Copy)]
enum PayloadSize {
    /// Two tiny transactions.
    Tiny,
    /// ~`PAYLOAD_BYTES` of `TRANSACTION_BYTES`-byte transactions.
    Large,
}

fn payload(round: Round, author: AuthorityIndex, size: PayloadSize) -> Payload {
    match size {
        PayloadSize::Tiny => DagBuilder::payload(round, author),
        PayloadSize::Large => {
            let count = PAYLOAD_BYTES / (TRANSACTION_BYTES + 4);
            let transactions: Vec<Vec<u8>> = (0..count)
                .map(|i| {
                    let mut tx = vec![author.0 as u8; TRANSACTION_BYTES];
                    tx[..8].copy_from_slice(&(i as u64).to_le_bytes());
                    tx[8..16].copy_from_slice(&round.0.to_le_bytes());
                    tx
                })
                .collect();
            Payload::from_transactions(transactions.iter().map(Vec::as_slice))
        }
    }
}

/// One core driven as drivers would, with every other validator simulated by its keys.
struct Scenario {
    committee: Arc<Committee>,
    schedule: Arc<dyn LeaderSchedule>,
    keys: Vec<KeyPair>,
    verifier: Verifier,
    core: Core,
    store: MemStore,
    /// The core's latest own header, as its last reply showed it.
    own_header: Option<SignedHeader>,
    /// The certificates of the latest completed round (genesis at first).
    previous: Vec<Certificate>,
}

impl Scenario {
    /// A fresh core of validator `ME` in a committee of `n`, which has built its round-1 header.
    fn new(n: usize) -> Scenario {
        let committee = committee(n);
        let schedule = default_schedule(&committee);
        let mut store = MemStore::new();
        let core = Core::recover(
            committee.clone(),
            schedule.clone(),
            KeyPair::deterministic(0, ME),
            CoreConfig::default(),
            store.load().expect("memory store loads"),
        )
        .expect("fresh core");
        let previous = committee
            .indices()
            .map(|a| Certificate::genesis(committee.instance(), a))
            .collect();
        let mut scenario = Scenario {
            verifier: Verifier::new(committee.clone(), VerifierConfig::default()),
            keys: keys(n),
            committee,
            schedule,
            core,
            store,
            own_header: None,
            previous,
        };
        scenario.handle(Request {
            instance: instance(),
            body: RequestBody::GetState {
                with_payload: false,
            },
        });
        scenario
    }

    fn now(round: Round) -> Millis {
        Millis(10 * round.0)
    }

    /// Verifies and handles `request`, makes its writes durable, and returns the reply.
    fn handle(&mut self, request: Request) -> Response {
        let verified = self.verifier.verify(request).expect("request verifies");
        let (response, batch) = self.core.handle(Scenario::now(self.core.round()), verified);
        self.store.commit(&[batch]).expect("memory store commits");
        let summary = match &response {
            Response::Summary(summary) | Response::Votes { summary, .. } => summary,
            other => panic!("unexpected reply {other:?}"),
        };
        self.own_header = summary.own_header.clone();
        response
    }

    /// The headers of `round` by every author on all certificates of the previous round (the
    /// core's own header as it built it), with the payloads of the others.
    fn header_bundle(&self, round: Round, size: PayloadSize) -> Request {
        let parents: Vec<ParentRef> = self
            .previous
            .iter()
            .map(|c| ParentRef {
                author: c.author(),
                digest: c.digest(),
            })
            .collect();
        let mut headers = Vec::new();
        let mut payloads = Vec::new();
        for author in self.committee.indices() {
            if author == AuthorityIndex(ME) {
                let own = self.own_header.clone().expect("own header built");
                assert_eq!(own.header.round(), round, "the core is at {round}");
                headers.push(own);
                continue;
            }
            let payload = payload(round, author, size);
            let header = Header::new(
                instance(),
                round,
                author,
                parents.clone(),
                payload.reference(),
                Scenario::now(round).0,
            );
            headers.push(sign_header(&self.keys[author.as_usize()], header));
            payloads.push(payload);
        }
        Request {
            instance: instance(),
            body: RequestBody::HeaderBundle {
                round,
                headers,
                parents: Vec::new(),
                payloads,
            },
        }
    }

    /// The certificates of the headers of `bundle`, signed by every validator.
    fn certificates(&self, bundle: &Request) -> Vec<Certificate> {
        let RequestBody::HeaderBundle { headers, .. } = &bundle.body else {
            panic!("not a header bundle");
        };
        headers
            .iter()
            .map(|h| {
                let digest = h.header.digest();
                let votes: Vec<_> = self
                    .committee
                    .indices()
                    .map(|v| vote(&self.keys[v.as_usize()], v, digest))
                    .collect();
                Certificate::from_votes(h.header.clone(), &votes)
            })
            .collect()
    }

    fn cert_bundle(round: Round, certificates: Vec<Certificate>) -> Request {
        Request {
            instance: instance(),
            body: RequestBody::CertBundle {
                round,
                certificates,
                parents: Vec::new(),
                payloads: Vec::new(),
            },
        }
    }

    /// Drives one round: header bundle (tiny payloads), then its certificates.
    fn full_round(&mut self) {
        let round = self.core.round();
        let bundle = self.header_bundle(round, PayloadSize::Tiny);
        let certificates = self.certificates(&bundle);
        self.handle(bundle);
        self.handle(Scenario::cert_bundle(round, certificates.clone()));
        self.previous = certificates;
    }

    /// What a fresh copy of the core needs: its store's contents.
    fn snapshot(&mut self) -> Snapshot {
        Snapshot {
            committee: self.committee.clone(),
            schedule: self.schedule.clone(),
            entries: self.store.load().expect("memory store loads"),
        }
    }
}

/// A core's store contents, from which each iteration recovers a fresh core.
struct Snapshot {
    committee: Arc<Committee>,
    schedule: Arc<dyn LeaderSchedule>,
    entries: Vec<(Vec<u8>, Bytes)>,
}

impl Snapshot {
    fn core(&self) -> Core {
        Core::recover(
            self.committee.clone(),
            self.schedule.clone(),
            KeyPair::deterministic(0, ME),
            CoreConfig::default(),
            self.entries.clone(),
        )
        .expect("core recovers")
    }
}

/// A measured request: the state before it, the verified request, and when it arrives.
struct Case {
    before: Snapshot,
    request: Verified<CheckedRequest>,
    now: Millis,
}

impl Case {
    fn new(scenario: &mut Scenario, request: Request) -> Case {
        Case {
            before: scenario.snapshot(),
            now: Scenario::now(scenario.core.round()),
            request: scenario.verifier.verify(request).expect("request verifies"),
        }
    }

    /// Handles the request once on a fresh core, for the sanity checks of the setup.
    fn run_once(&self) -> (Core, Response) {
        let mut core = self.before.core();
        let (response, _) = core.handle(self.now, self.request.clone());
        (core, response)
    }
}

/// The cases of a committee of `n`: header bundles of round `WARM_ROUNDS + 1` (large and tiny
/// payloads), then the certificate bundles of that round (commit) and of the next (no commit).
struct Cases {
    header_bundle_large: Case,
    header_bundle_tiny: Case,
    cert_bundle_commit: Case,
    cert_bundle_no_commit: Case,
}

fn cases(n: usize) -> Cases {
    let mut scenario = Scenario::new(n);
    for _ in 0..WARM_ROUNDS {
        scenario.full_round();
    }
    let round = scenario.core.round();
    assert_eq!(round, Round(WARM_ROUNDS + 1));
    let large = scenario.header_bundle(round, PayloadSize::Large);
    let header_bundle_large = Case::new(&mut scenario, large);
    let tiny = scenario.header_bundle(round, PayloadSize::Tiny);
    let header_bundle_tiny = Case::new(&mut scenario, tiny.clone());
    for case in [&header_bundle_large, &header_bundle_tiny] {
        let (_, response) = case.run_once();
        let Response::Votes {
            votes, rejected, ..
        } = response
        else {
            panic!("expected votes, got {response:?}");
        };
        assert!(rejected.is_empty(), "rejected: {rejected:?}");
        assert_eq!(votes.len(), n);
    }

    // Continue with the tiny bundle, so later snapshots stay cheap to recover.
    let certificates = scenario.certificates(&tiny);
    scenario.handle(tiny);
    let cert_bundle_commit = Case::new(
        &mut scenario,
        Scenario::cert_bundle(round, certificates.clone()),
    );
    let committed_before = scenario.core.consensus().consensus_index;
    let (core, _) = cert_bundle_commit.run_once();
    assert!(
        core.consensus().consensus_index > committed_before,
        "round {round} commits"
    );
    assert_eq!(core.round(), round.next(), "the core advances");

    scenario.handle(Scenario::cert_bundle(round, certificates.clone()));
    scenario.previous = certificates;
    let round = round.next();
    let bundle = scenario.header_bundle(round, PayloadSize::Tiny);
    let certificates = scenario.certificates(&bundle);
    scenario.handle(bundle);
    let cert_bundle_no_commit =
        Case::new(&mut scenario, Scenario::cert_bundle(round, certificates));
    let committed_before = scenario.core.consensus().consensus_index;
    let (core, _) = cert_bundle_no_commit.run_once();
    assert_eq!(core.consensus().consensus_index, committed_before);
    assert_eq!(core.round(), round.next(), "the core advances");

    Cases {
        header_bundle_large,
        header_bundle_tiny,
        cert_bundle_commit,
        cert_bundle_no_commit,
    }
}

/// Measures `handle` alone: recovering the core and cloning the request happen in setup, and the
/// core and the reply are dropped after the clock stops.
fn bench_case(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, n: usize, case: &Case) {
    group.bench_function(BenchmarkId::new(name, n), |b| {
        b.iter_batched(
            || (case.before.core(), case.request.clone()),
            |(mut core, request)| {
                let out = core.handle(case.now, request);
                (core, out)
            },
            BatchSize::LargeInput,
        )
    });
}

fn bench_core(c: &mut Criterion) {
    let mut group = c.benchmark_group("core_handle");
    group.sample_size(30);
    for n in SIZES {
        let cases = cases(n);
        group.throughput(Throughput::Elements(n as u64));
        bench_case(
            &mut group,
            "header_bundle_500KB",
            n,
            &cases.header_bundle_large,
        );
        bench_case(
            &mut group,
            "header_bundle_tiny",
            n,
            &cases.header_bundle_tiny,
        );
        bench_case(
            &mut group,
            "cert_bundle_commit",
            n,
            &cases.cert_bundle_commit,
        );
        bench_case(
            &mut group,
            "cert_bundle_no_commit",
            n,
            &cases.cert_bundle_no_commit,
        );
    }
    group.finish();
}

/// The generated `benches` function is public and undocumented; a private module keeps it out
/// of the `missing_docs` lint.
mod harness {
    criterion::criterion_group!(benches, super::bench_core);
}

criterion_main!(harness::benches);
