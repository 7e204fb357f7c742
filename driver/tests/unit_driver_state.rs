//! Unit tier: `DriverState` against real cores, request by request: what a driver sends after what a
//! core answers.

mod support;

use bytes::Bytes;
use sleepyseal_core::protocol::{RequestBody, Response};
use sleepyseal_core::{AuthorityIndex, CoreError, Millis, Payload};
use sleepyseal_driver::state::{DriverConfig, DriverState, Outgoing};
use support::Cores;

fn header_bundle_payloads(out: &Outgoing) -> Option<Vec<Payload>> {
    match &out.request.body {
        RequestBody::HeaderBundle { payloads, .. } => Some(payloads.clone()),
        _ => None,
    }
}

/// Regression (sim n = 7, two restarts, seed 42): the driver believed it had delivered a payload
/// (it rode along with a header the core could not vote on yet) and never carried it again, while
/// the core kept answering `MissingPayload`. Round 10 stalled. A `MissingPayload` refusal must
/// make the driver carry that payload with the next bundle.
#[test]
fn missing_payload_refusal_makes_the_driver_carry_it_again() {
    let mut cores = Cores::new(4);
    let a1 = AuthorityIndex(1);
    let a0 = AuthorityIndex(0);
    // Core 1 has a transaction, so its round-1 header carries a non-empty payload.
    let submitted = cores.handle(
        Millis(0),
        a1,
        RequestBody::Submit {
            transactions: vec![Bytes::from_static(b"tx")],
        },
    );
    assert_eq!(submitted, Response::Submitted { accepted: 1 });
    let mut driver = DriverState::new(cores.committee.clone(), DriverConfig::default(), 0);
    // Let the driver learn every core's state, until core 1 has proposed its header.
    let mut now = Millis(0);
    for _ in 0..20 {
        now = Millis(now.0 + 100);
        for out in driver.poll(now) {
            if !matches!(out.request.body, RequestBody::GetState { .. }) {
                continue;
            }
            let response = cores.handle(now, out.core, out.request.body.clone());
            driver.on_response(now, out.id, out.core, response);
        }
        if driver
            .own_header_of(a1)
            .is_some_and(|h| h.header.payload().len > 0)
        {
            break;
        }
    }
    let own = driver.own_header_of(a1).expect("core 1 proposed").clone();
    let payload_digest = own.header.payload().digest;
    // The driver offers core 1's header to core 0 with its payload.
    let first = driver
        .poll(now)
        .into_iter()
        .find(|o| o.core == a0 && header_bundle_payloads(o).is_some())
        .expect("a header bundle for core 0");
    assert!(header_bundle_payloads(&first)
        .unwrap()
        .iter()
        .any(|p| p.digest() == payload_digest));
    driver.mark_delivered(a0, &first.request.body);
    // Core 0 answers as one that lost the payload (say it restarted before syncing it).
    let Response::Summary(summary) = cores.handle(
        now,
        a0,
        RequestBody::GetState {
            with_payload: false,
        },
    ) else {
        panic!("summary expected");
    };
    driver.on_response(
        now,
        first.id,
        a0,
        Response::Votes {
            votes: vec![],
            rejected: vec![(
                own.header.digest(),
                CoreError::MissingPayload {
                    digest: payload_digest,
                },
            )],
            summary,
        },
    );
    // The next bundle to core 0 carries the payload again.
    let again = driver
        .poll(Millis(now.0 + 1))
        .into_iter()
        .find(|o| o.core == a0)
        .expect("a request for core 0");
    let payloads = header_bundle_payloads(&again).expect("a header bundle again");
    assert!(
        payloads.iter().any(|p| p.digest() == payload_digest),
        "payload not carried again: {:?}",
        again.request.body
    );
}

/// With a pipeline depth of 2, a driver keeps a second request in flight to a core only when it
/// carries something the first does not; with depth 1 it never does.
#[test]
fn pipelined_requests_never_carry_the_same_thing_twice() {
    for depth in [1usize, 2] {
        let mut cores = Cores::new(4);
        let config = DriverConfig {
            pipeline_depth: depth,
            ..DriverConfig::default()
        };
        let mut driver = DriverState::new(cores.committee.clone(), config, 0);
        let mut now = Millis(0);
        let mut in_flight: Vec<Vec<Outgoing>> = vec![Vec::new(); 4];
        let mut max_seen = 0;
        // Cores answer slower than the driver polls, so requests can overlap.
        for step in 0..400 {
            now = Millis(now.0 + 7);
            let sent = driver.poll(now);
            for out in sent {
                in_flight[out.core.as_usize()].push(out);
            }
            for (core, flights) in in_flight.iter_mut().enumerate() {
                max_seen = max_seen.max(flights.len());
                let items: Vec<String> = flights.iter().map(|o| carried(&o.request.body)).collect();
                for (i, a) in items.iter().enumerate() {
                    for b in &items[i + 1..] {
                        assert!(
                            a.is_empty() || b.is_empty() || disjoint(a, b),
                            "core {core}: overlapping requests {a} / {b}"
                        );
                    }
                }
                // Each core answers its oldest request every third step, the cores out of phase:
                // what one core answers reaches the driver while others still work.
                if (step + core) % 3 == 0 && !flights.is_empty() {
                    let out = flights.remove(0);
                    let response = cores.handle(now, out.core, out.request.body.clone());
                    if !matches!(response, Response::Error(_)) {
                        driver.mark_delivered(out.core, &out.request.body);
                    }
                    driver.on_response(now, out.id, out.core, response);
                }
            }
        }
        assert!(max_seen <= depth, "depth {depth}: {max_seen} in flight");
        assert!(
            driver.top_round().0 > 10,
            "depth {depth}: no progress ({})",
            driver.top_round()
        );
        if depth == 2 {
            assert_eq!(max_seen, 2, "pipelining never happened");
        }
    }
}

/// The digests of headers and certificates a request carries, comma separated.
fn carried(body: &RequestBody) -> String {
    let digests: Vec<String> = match body {
        RequestBody::HeaderBundle { headers, .. } => {
            headers.iter().map(|h| h.header.digest().to_hex()).collect()
        }
        RequestBody::CertBundle { certificates, .. } => {
            certificates.iter().map(|c| c.digest().to_hex()).collect()
        }
        _ => Vec::new(),
    };
    digests.join(",")
}

fn disjoint(a: &str, b: &str) -> bool {
    a.split(',').all(|x| !b.split(',').any(|y| y == x))
}

/// Regression (sim `--behaviour far-future-rounds`, which claims a far-future round in its
/// summaries): the driver took the highest round any core reported as the top round, so one
/// Byzantine core marked every honest core as lagging (the driver sent them catch-up requests
/// instead of bundles) and moved the prune floor of every honest driver past all real rounds.
/// Runs to round 40 took 2–2.5× the virtual time. The top round now needs f + 1 stake behind it.
/// Also (CI, debug build): a claimed round near `u64::MAX` overflowed the lag computation.
#[test]
fn one_core_claiming_a_far_future_round_moves_nothing() {
    for claimed in [1_000_000, u64::MAX - 1] {
        claim_round(claimed);
    }
}

fn claim_round(claimed: u64) {
    let mut cores = Cores::new(4);
    let mut driver = DriverState::new(cores.committee.clone(), DriverConfig::default(), 0);
    let liar = AuthorityIndex(3);
    let lie = |response: Response| match response {
        Response::Summary(mut s) => {
            s.round = sleepyseal_core::Round(claimed);
            Response::Summary(s)
        }
        Response::Votes {
            votes,
            rejected,
            mut summary,
        } => {
            summary.round = sleepyseal_core::Round(claimed);
            Response::Votes {
                votes,
                rejected,
                summary,
            }
        }
        other => other,
    };
    let mut kinds_to_honest = Vec::new();
    let mut now = Millis(0);
    for _ in 0..30 {
        now = Millis(now.0 + 50);
        for out in driver.poll(now) {
            if out.core != liar {
                kinds_to_honest.push(sleepyseal_driver::state::kind(&out.request.body));
            }
            let mut response = cores.handle(now, out.core, out.request.body.clone());
            if out.core == liar {
                response = lie(response);
            }
            driver.mark_delivered(out.core, &out.request.body);
            driver.on_response(now, out.id, out.core, response);
        }
    }
    let honest_top = (0..3)
        .map(|i| cores.cores[i].0.round())
        .max()
        .expect("three honest cores");
    assert!(honest_top.0 >= 3, "the honest cores advanced: {honest_top}");
    assert_eq!(driver.top_round(), honest_top);
    assert!(
        !kinds_to_honest
            .iter()
            .any(|k| k.contains("Fetch") || k.contains("Sync")),
        "honest cores treated as lagging: {kinds_to_honest:?}"
    );
}

/// Payloads a request carries, in bytes, and how many.
fn carried_payloads(body: &RequestBody) -> (usize, usize) {
    match body {
        RequestBody::HeaderBundle { payloads, .. }
        | RequestBody::CertBundle { payloads, .. }
        | RequestBody::Sync { payloads, .. } => {
            (payloads.iter().map(Payload::len).sum(), payloads.len())
        }
        _ => (0, 0),
    }
}

/// Regression (`sleepyseal local`, 50,000 tx/s): a core that fell a few dozen rounds behind was
/// sent a catch-up `Sync` carrying every payload of those rounds, over the cores' 32 MiB request
/// limit. The core refused it whole, the driver sent it again, and the core never caught up. Every
/// request must stay within the driver's payload budget (beyond its first payload), and a lagging
/// core must catch up through requests that do.
#[test]
fn a_lagging_core_catches_up_with_requests_within_the_payload_budget() {
    const BUDGET: usize = 64 << 10;
    let mut cores = Cores::new(4);
    let config = DriverConfig {
        max_payload_bytes: BUDGET,
        ..DriverConfig::default()
    };
    let mut driver = DriverState::new(cores.committee.clone(), config, 0);
    let late = AuthorityIndex(3);
    let mut now = Millis(0);
    let mut syncs_with_payloads = 0;
    let mut caught_up_at = None;
    for step in 0..2_000u64 {
        now = Millis(now.0 + 20);
        // Cores 0..3 receive transactions all along: 8 KiB each, so every header's payload is
        // tens of KiB and thirty rounds of them are far above the budget.
        if step % 2 == 0 {
            for i in 0..3u16 {
                let transactions = vec![Bytes::from(vec![step as u8 ^ i as u8; 8 << 10]); 2];
                let r = cores.handle(now, AuthorityIndex(i), RequestBody::Submit { transactions });
                assert_eq!(r, Response::Submitted { accepted: 2 });
            }
        }
        // Core 3 is unreachable until the others pass round 30.
        let others_top = (0..3).map(|i| cores.cores[i].0.round().0).max().unwrap();
        let down = others_top < 30 && caught_up_at.is_none() && step < 1_000;
        for out in driver.poll(now) {
            let (bytes, count) = carried_payloads(&out.request.body);
            assert!(
                bytes <= BUDGET || count == 1,
                "{} carries {count} payloads of {bytes} bytes (budget {BUDGET})",
                sleepyseal_driver::state::kind(&out.request.body)
            );
            if out.core == late && down {
                driver.on_failure(now, out.id);
                continue;
            }
            if out.core == late && matches!(out.request.body, RequestBody::Sync { .. }) && count > 0
            {
                syncs_with_payloads += 1;
            }
            let response = cores.handle(now, out.core, out.request.body.clone());
            driver.mark_delivered(out.core, &out.request.body);
            driver.on_response(now, out.id, out.core, response);
        }
        if !down && caught_up_at.is_none() {
            let late_round = cores.cores[3].0.round().0;
            let top = (0..3).map(|i| cores.cores[i].0.round().0).max().unwrap();
            if top >= 30
                && late_round + 2 >= top
                && cores.cores[3].0.consensus().consensus_index > 0
            {
                caught_up_at = Some(step);
                break;
            }
        }
    }
    assert!(
        caught_up_at.is_some(),
        "core 3 never caught up: round {} against {}; driver: {}",
        cores.cores[3].0.round(),
        (0..3).map(|i| cores.cores[i].0.round().0).max().unwrap(),
        driver.describe(late)
    );
    assert!(
        syncs_with_payloads >= 2,
        "the catch-up took {syncs_with_payloads} Sync with payloads: the budget was never exercised"
    );
}

/// Votes are checked in one batch once they would make a certificate. Core 3 forges every vote
/// it returns (a Byzantine core): the driver never lets one count, so no certificate of another
/// author it sends names core 3 as a signer, and the other three cores' votes still certify
/// every round.
#[test]
fn forged_votes_never_count_and_the_valid_ones_still_certify() {
    let mut cores = Cores::new(4);
    let forger = AuthorityIndex(3);
    let mut driver = DriverState::new(cores.committee.clone(), DriverConfig::default(), 0);
    let forge = |votes: &mut Vec<sleepyseal_core::Vote>| {
        for v in votes.iter_mut().filter(|v| v.voter == forger) {
            v.signature.0[0] ^= 1;
        }
    };
    let mut now = Millis(0);
    let mut certificates_sent = 0;
    while cores.top_round() < 8 && now.0 < 20_000 {
        now = Millis(now.0 + 10);
        for out in driver.poll(now) {
            let certificates: Vec<&sleepyseal_core::Certificate> = match &out.request.body {
                RequestBody::CertBundle {
                    certificates,
                    parents,
                    ..
                } => certificates.iter().chain(parents).collect(),
                RequestBody::HeaderBundle { parents, .. } => parents.iter().collect(),
                RequestBody::Sync { certificates, .. } => certificates.iter().collect(),
                _ => Vec::new(),
            };
            // Core 3's own headers carry its signature as their author, which it cannot forge
            // away: only its votes on the others' headers are checked here.
            let others = certificates
                .iter()
                .filter(|c| c.round().0 > 0 && c.author() != forger);
            for c in others {
                assert!(
                    !c.signers.contains(&forger),
                    "a certificate counts core 3's forged vote: {c:?}"
                );
                certificates_sent += 1;
            }
            let mut response = cores.handle(now, out.core, out.request.body.clone());
            match &mut response {
                Response::Votes { votes, summary, .. } => {
                    forge(votes);
                    forge(&mut summary.votes);
                }
                Response::Summary(summary) => forge(&mut summary.votes),
                _ => {}
            }
            driver.on_response(now, out.id, out.core, response);
        }
    }
    assert!(
        cores.top_round() >= 8,
        "stuck at round {} by forged votes",
        cores.top_round()
    );
    assert!(certificates_sent > 0);
}
