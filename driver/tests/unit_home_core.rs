//! Unit tier: home-core drivers (PROTOCOL.md §7, "Who carries payloads") against real cores,
//! request by request. A driver with a home core pulls and carries its home core's payloads
//! eagerly; any other payload only when a core lists it as missing, or once a header waited
//! longer than the grace period; and a core whose home driver is dead stays live.

mod support;

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use sleepyseal_core::protocol::{RequestBody, Response, Summary};
use sleepyseal_core::{AuthorityIndex, Digest, Millis, Payload};
use sleepyseal_driver::state::{DriverConfig, DriverState, COVER_GRACES};
use support::Cores;

/// Milliseconds per step of a [`Net`].
const STEP_MS: u64 = 10;

/// One request a driver sent, as the tests judge it.
#[derive(Debug)]
struct Sent {
    at: Millis,
    driver: usize,
    core: AuthorityIndex,
    /// `GetState{with_payload: true}`.
    pulls_payload: bool,
    /// Digests of the payloads it carried.
    payloads: Vec<Digest>,
    /// The payloads the core listed as missing in the last summary this driver got from it.
    listed_missing: Vec<Digest>,
    /// Authors of the certificates (and parents) of a certificate bundle.
    cert_authors: Vec<AuthorityIndex>,
}

/// Real cores and drivers (some dead), every request handled at once, time in steps.
struct Net {
    cores: Cores,
    drivers: Vec<Option<DriverState>>,
    homes: Vec<Option<AuthorityIndex>>,
    /// (driver, core) links whose requests fail.
    cut: HashSet<(usize, usize)>,
    now: Millis,
    sent: Vec<Sent>,
    /// The author of every payload seen in a summary.
    author_of: HashMap<Digest, AuthorityIndex>,
    /// Per (driver, core): the missing payloads of the last summary that driver got.
    missing: HashMap<(usize, usize), Vec<Digest>>,
    /// Per driver: bytes of the payloads of other authors than its home core (by `author_of`)
    /// that cores accepted from it in bundles, tallied here to check the driver's own count.
    foreign_bytes: Vec<u64>,
}

impl Net {
    /// `n` cores; one driver per entry of `homes` (its home core), `None` in `alive` for dead.
    fn new(n: usize, homes: &[Option<u16>], alive: &[bool], grace_ms: u64) -> Net {
        let cores = Cores::new(n);
        let drivers = homes
            .iter()
            .zip(alive)
            .enumerate()
            .map(|(d, (home, alive))| {
                let config = DriverConfig {
                    home_core: home.map(AuthorityIndex),
                    payload_grace_ms: grace_ms,
                    ..DriverConfig::default()
                };
                alive.then(|| DriverState::new(cores.committee.clone(), config, (d as u64) << 40))
            })
            .collect();
        Net {
            cores,
            drivers,
            homes: homes.iter().map(|h| h.map(AuthorityIndex)).collect(),
            cut: HashSet::new(),
            now: Millis(0),
            sent: Vec::new(),
            author_of: HashMap::new(),
            missing: HashMap::new(),
            foreign_bytes: vec![0; homes.len()],
        }
    }

    /// One step: a transaction for every core, then every live driver's requests, answered.
    fn step(&mut self) {
        self.now = Millis(self.now.0 + STEP_MS);
        for i in 0..self.cores.cores.len() {
            let tx = Bytes::from(format!("tx {} at {}", i, self.now.0).repeat(8));
            let body = RequestBody::Submit {
                transactions: vec![tx],
            };
            self.cores.handle(self.now, AuthorityIndex(i as u16), body);
        }
        for d in 0..self.drivers.len() {
            let Some(driver) = self.drivers[d].as_mut() else {
                continue;
            };
            let outgoing = driver.poll(self.now);
            for out in outgoing {
                let core = out.core.as_usize();
                self.sent.push(Sent {
                    at: self.now,
                    driver: d,
                    core: out.core,
                    pulls_payload: matches!(
                        out.request.body,
                        RequestBody::GetState { with_payload: true }
                    ),
                    payloads: carried(&out.request.body),
                    listed_missing: self.missing.get(&(d, core)).cloned().unwrap_or_default(),
                    cert_authors: cert_authors(&out.request.body),
                });
                let driver = self.drivers[d].as_mut().expect("alive");
                if self.cut.contains(&(d, core)) {
                    driver.on_failure(self.now, out.id);
                    continue;
                }
                let response = self
                    .cores
                    .handle(self.now, out.core, out.request.body.clone());
                if let Some(s) = summary_of(&response) {
                    if let Some(h) = &s.own_header {
                        self.author_of.insert(h.header.payload().digest, s.core);
                    }
                    self.missing.insert((d, core), s.missing_payloads.clone());
                }
                if !matches!(response, Response::Error(_)) {
                    if let RequestBody::HeaderBundle { payloads, .. }
                    | RequestBody::CertBundle { payloads, .. } = &out.request.body
                    {
                        self.foreign_bytes[d] += payloads
                            .iter()
                            .filter(|p| self.author_of.get(&p.digest()) != self.homes[d].as_ref())
                            .map(|p| p.len() as u64)
                            .sum::<u64>();
                    }
                    driver.mark_delivered(out.core, &out.request.body);
                }
                driver.on_response(self.now, out.id, out.core, response);
            }
        }
    }

    /// Starts driver `d` (again), with fresh state.
    fn start_driver(&mut self, d: usize, grace_ms: u64) {
        let config = DriverConfig {
            home_core: self.homes[d],
            payload_grace_ms: grace_ms,
            ..DriverConfig::default()
        };
        let base = ((d as u64) << 40) | (1 << 32);
        self.drivers[d] = Some(DriverState::new(self.cores.committee.clone(), config, base));
        self.foreign_bytes[d] = 0;
    }

    /// Every live driver counted, as carried for other authors, exactly the bytes this net saw
    /// it deliver of other authors' payloads in bundles; those counts.
    fn foreign_counted(&self) -> Vec<u64> {
        for (d, driver) in self.drivers.iter().enumerate() {
            if let Some(driver) = driver {
                assert_eq!(
                    driver.foreign_payload_bytes(),
                    self.foreign_bytes[d],
                    "driver {d}'s count of payload bytes carried for other authors"
                );
            }
        }
        self.foreign_bytes.clone()
    }

    /// Steps until every core reached `round` (at most `max_steps`); whether they did.
    fn run_until_round(&mut self, round: u64, max_steps: usize) -> bool {
        for _ in 0..max_steps {
            self.step();
            if self.cores.cores.iter().all(|(c, _)| c.round().0 >= round) {
                return true;
            }
        }
        false
    }

    /// Payload transfers before `until` that are neither the driver's home core's payloads nor
    /// listed missing by their target: what the policy forbids before the grace period.
    fn unasked_transfers(&self, until: Millis) -> Vec<String> {
        self.unasked_between(Millis(0), until)
    }

    /// [`Net::unasked_transfers`] from `from` to `until`.
    fn unasked_between(&self, from: Millis, until: Millis) -> Vec<String> {
        let mut out = Vec::new();
        for s in self.sent.iter().filter(|s| s.at >= from && s.at < until) {
            for p in &s.payloads {
                let author = self.author_of.get(p).copied();
                if author != self.homes[s.driver] && !s.listed_missing.contains(p) {
                    out.push(format!(
                        "at {:?} driver {} carried a payload of {author:?} to core {}",
                        s.at, s.driver, s.core
                    ));
                }
            }
        }
        out
    }

    /// `GetState{with_payload}` sent to a core other than the driver's home core, before `until`.
    fn foreign_pulls(&self, until: Millis) -> Vec<&Sent> {
        self.sent
            .iter()
            .filter(|s| s.at < until && s.pulls_payload && Some(s.core) != self.homes[s.driver])
            .collect()
    }

    /// Payload transfers per distinct payload carried.
    fn transfers_per_payload(&self) -> f64 {
        let all: Vec<&Digest> = self.sent.iter().flat_map(|s| &s.payloads).collect();
        let distinct: HashSet<&Digest> = all.iter().copied().collect();
        all.len() as f64 / distinct.len().max(1) as f64
    }

    /// Committed entries of core `at` authored by `author` with a non-empty payload.
    fn committed_of(&self, at: usize, author: u16) -> usize {
        let core = &self.cores.cores[at].0;
        core.committed_from(0, 1 << 20)
            .unwrap_or_default()
            .iter()
            .filter(|e| e.author == AuthorityIndex(author) && e.payload.len > 0)
            .count()
    }
}

fn summary_of(response: &Response) -> Option<&Summary> {
    match response {
        Response::Summary(s) => Some(s),
        Response::Votes { summary, .. } => Some(summary),
        _ => None,
    }
}

fn cert_authors(body: &RequestBody) -> Vec<AuthorityIndex> {
    match body {
        RequestBody::CertBundle {
            certificates,
            parents,
            ..
        } => certificates
            .iter()
            .chain(parents)
            .map(|c| c.author())
            .collect(),
        _ => Vec::new(),
    }
}

fn carried(body: &RequestBody) -> Vec<Digest> {
    match body {
        RequestBody::HeaderBundle { payloads, .. }
        | RequestBody::CertBundle { payloads, .. }
        | RequestBody::Sync { payloads, .. } => payloads.iter().map(Payload::digest).collect(),
        _ => Vec::new(),
    }
}

/// One home driver per core, all alive: no driver ever pulls another core's payload, every
/// payload it carries is its home core's or one the target listed missing, and each payload is
/// carried about n − 1 times in all, against several times that for drivers without a home.
#[test]
fn home_drivers_carry_each_payload_about_n_minus_1_times() {
    let homes = [Some(0), Some(1), Some(2), Some(3)];
    let mut net = Net::new(4, &homes, &[true; 4], 300);
    assert!(net.run_until_round(60, 4_000), "no progress");
    let end = Millis(u64::MAX);
    assert_eq!(net.unasked_transfers(end), Vec::<String>::new());
    assert!(
        net.foreign_pulls(end).is_empty(),
        "{:?}",
        net.foreign_pulls(end)
    );
    net.foreign_counted();
    let home = net.transfers_per_payload();
    println!("transfers per payload: home {home:.2}");
    let mut legacy = Net::new(4, &[None; 4], &[true; 4], 300);
    assert!(
        legacy.run_until_round(20, 2_000),
        "no progress without home cores"
    );
    let eager = legacy.transfers_per_payload();
    println!("transfers per payload: eager {eager:.2}");
    assert!(
        home <= 3.3,
        "{home:.2} transfers per payload with home cores"
    );
    assert!(
        eager >= 1.5 * home,
        "without home cores {eager:.2}, with {home:.2} transfers per payload"
    );
}

/// One driver with home core 0 and no other driver: before the grace period it never asks
/// another core for its payload, nor carries one, except core 3's: core 0 is next after core 3,
/// so its driver is core 3's successor and covers it after half the grace period. After the grace
/// period it carries every core's payloads (nobody else does), and every core's transactions
/// commit.
#[test]
fn a_home_driver_asks_for_other_payloads_only_after_the_grace_period() {
    const GRACE_MS: u64 = 300;
    let mut net = Net::new(4, &[Some(0)], &[true], GRACE_MS);
    // The first poll is at the first step: the headers of round 1 are first seen then.
    let grace_ends = Millis(STEP_MS + GRACE_MS);
    for _ in 0..(GRACE_MS / STEP_MS + 5) {
        net.step();
    }
    let core_3 = AuthorityIndex(3);
    assert!(net
        .foreign_pulls(grace_ends)
        .iter()
        .all(|s| s.core == core_3));
    let early = net.unasked_transfers(grace_ends);
    let not_core_3: Vec<&String> = early.iter().filter(|s| !s.contains("(3)")).collect();
    assert!(not_core_3.is_empty(), "{not_core_3:?}");
    assert!(
        !early.is_empty(),
        "the successor of core 3 did not cover it before the grace period"
    );
    assert!(
        net.run_until_round(20, 3_000),
        "no progress after the grace period"
    );
    let end = Millis(u64::MAX);
    assert!(net.foreign_pulls(end).iter().all(|s| s.at >= grace_ends));
    let late = net.unasked_transfers(end);
    assert!(!late.is_empty(), "never carried another core's payload");
    for author in 1..4 {
        assert!(
            net.committed_of(0, author) > 0,
            "core {author} never committed"
        );
    }
}

/// The home drivers of cores 0, 1 and 2 run, core 3's is dead: core 3's successor (the driver
/// of core 0) covers it once its headers go uncarried, so its headers are certified and its
/// transactions commit (liveness never depends on a home driver), and nobody else pulls its
/// payloads.
#[test]
fn a_core_whose_home_driver_is_dead_still_commits() {
    let homes = [Some(0), Some(1), Some(2), Some(3)];
    let mut net = Net::new(4, &homes, &[true, true, true, false], 300);
    assert!(net.run_until_round(40, 4_000), "no progress");
    let pullers: HashSet<usize> = net
        .foreign_pulls(Millis(u64::MAX))
        .iter()
        .filter(|s| s.core == AuthorityIndex(3))
        .map(|s| s.driver)
        .collect();
    assert_eq!(pullers, HashSet::from([0]), "who pulled core 3's payloads");
    let foreign = net.foreign_counted();
    assert!(
        foreign[0] > 0,
        "core 3's cover was not counted: {foreign:?}"
    );
    let of_3 = net.committed_of(0, 3);
    let of_0 = net.committed_of(0, 0);
    println!("committed payloads: core 3 {of_3}, core 0 {of_0}");
    assert!(of_3 > 0, "core 3's transactions never committed");
    // Covering costs a few orphaned headers per cover period, not most of them.
    assert!(
        2 * of_3 >= of_0,
        "core 3 committed {of_3} payloads, core 0 {of_0}"
    );
}

/// The home drivers of cores 3 and 0 are dead, so core 3's successor is dead too: the other
/// drivers cover core 3 after the grace period, and both cores' transactions commit.
#[test]
fn a_core_whose_successor_is_dead_too_is_covered_by_the_others() {
    let homes = [Some(0), Some(1), Some(2), Some(3)];
    let mut net = Net::new(4, &homes, &[false, true, true, false], 100);
    assert!(net.run_until_round(40, 6_000), "no progress");
    for author in [0, 3] {
        assert!(
            net.committed_of(1, author) > 0,
            "core {author}'s transactions never committed"
        );
    }
}

/// Driver 1 cannot reach core 3, and the grace period never ends: core 3 inserts core 1's
/// certificates without their payloads and lists them as missing; the other home drivers carry
/// them on demand (and to nobody else), so core 3 holds them and keeps up.
#[test]
fn a_payload_listed_missing_is_carried_on_demand_before_the_grace_period() {
    let homes = [Some(0), Some(1), Some(2), Some(3)];
    let mut net = Net::new(4, &homes, &[true; 4], u64::MAX / 4);
    net.cut.insert((1, 3));
    assert!(net.run_until_round(15, 2_000), "no progress");
    let of_1: Vec<&Sent> = net
        .sent
        .iter()
        .filter(|s| s.driver != 1)
        .filter(|s| {
            s.payloads
                .iter()
                .any(|p| net.author_of.get(p) == Some(&AuthorityIndex(1)))
        })
        .collect();
    assert!(
        !of_1.is_empty(),
        "nobody carried core 1's payloads to core 3"
    );
    assert!(
        of_1.iter().all(|s| s.core == AuthorityIndex(3)),
        "core 1's payloads carried where its home driver reaches"
    );
    // Payloads a core lists as missing go as `Sync` (counted with catch-up), not in bundles.
    assert_eq!(net.foreign_counted(), vec![0; 4]);
    assert_eq!(
        net.unasked_transfers(Millis(u64::MAX)),
        Vec::<String>::new()
    );
    assert!(net.foreign_pulls(Millis(u64::MAX)).is_empty());
    let core3 = &net.cores.cores[3].0;
    let committed = core3.committed_from(0, 1 << 20).unwrap_or_default();
    let held = committed
        .iter()
        .filter(|e| e.author == AuthorityIndex(1) && e.payload.len > 0)
        .filter(|e| core3.payload(&e.payload.digest).is_some())
        .count();
    assert!(held > 0, "core 3 holds none of core 1's committed payloads");
}

/// Core 3's home driver starts late: until then the others cover core 3; once it runs, their
/// covers run out and are not renewed, so core 3's payloads are carried by its home driver
/// alone again.
#[test]
fn covers_end_once_the_home_driver_is_back() {
    const GRACE_MS: u64 = 100;
    let homes = [Some(0), Some(1), Some(2), Some(3)];
    let mut net = Net::new(4, &homes, &[true, true, true, false], GRACE_MS);
    assert!(net.run_until_round(15, 2_000), "no progress");
    let covering = |net: &Net| {
        (0..3)
            .filter(|d| {
                let driver = net.drivers[*d].as_ref().expect("alive");
                driver.carries_eagerly(AuthorityIndex(3))
            })
            .count()
    };
    assert!(covering(&net) > 0, "nobody covers core 3");
    assert!(!net.unasked_transfers(net.now).is_empty());
    net.start_driver(3, GRACE_MS);
    let back = net.now;
    let period = COVER_GRACES * GRACE_MS;
    for _ in 0..(3 * period / STEP_MS) {
        net.step();
    }
    let settled = Millis(back.0 + period + GRACE_MS);
    assert_eq!(
        net.unasked_between(settled, Millis(u64::MAX)),
        Vec::<String>::new(),
        "covers went on after core 3's home driver came back"
    );
    assert_eq!(covering(&net), 0);
    assert!(net.committed_of(0, 3) > 0);
}

/// Certificates follow their payloads: with a grace period that never ends, every certificate
/// bundle a home driver sends carries only its home core's certificates, and each core still
/// gets every certificate it needs from that certificate's home driver.
#[test]
fn certificate_bundles_carry_the_home_cores_certificates() {
    let homes = [Some(0), Some(1), Some(2), Some(3)];
    let mut net = Net::new(4, &homes, &[true; 4], u64::MAX / 4);
    let mut foreign = Vec::new();
    for _ in 0..2_000 {
        let before = net.sent.len();
        net.step();
        foreign.extend(net.sent[before..].iter().filter_map(|s| {
            let authors = &s.cert_authors;
            let home = net.homes[s.driver];
            authors
                .iter()
                .any(|a| Some(*a) != home)
                .then(|| format!("driver {} sent certificates of {authors:?}", s.driver))
        }));
        if net.cores.cores.iter().all(|(c, _)| c.round().0 >= 20) {
            break;
        }
    }
    assert!(net.cores.top_round() >= 20, "no progress");
    assert_eq!(foreign, Vec::<String>::new());
}

/// A home core in the same process hands over each header it builds: the driver offers it to
/// the other cores with its payload at its next poll, without asking its core first.
#[test]
fn an_own_header_handed_over_is_carried_at_once() {
    let mut cores = Cores::new(4);
    let now = Millis(10);
    let tx = RequestBody::Submit {
        transactions: vec![Bytes::from_static(b"handed over")],
    };
    cores.handle(now, AuthorityIndex(0), tx);
    let config = DriverConfig {
        home_core: Some(AuthorityIndex(0)),
        home_is_local: true,
        ..DriverConfig::default()
    };
    let mut driver = DriverState::new(cores.committee.clone(), config, 0);
    for i in 1..4u16 {
        let body = RequestBody::GetState {
            with_payload: false,
        };
        let summary = cores.handle(now, AuthorityIndex(i), body);
        driver.on_response(now, u64::MAX, AuthorityIndex(i), summary);
    }
    let body = RequestBody::GetState { with_payload: true };
    let Response::Summary(own) = cores.handle(now, AuthorityIndex(0), body) else {
        panic!("a summary")
    };
    let header = own.own_header.clone().expect("core 0 proposed");
    let payload = own.own_payload.clone().expect("with its payload");
    driver.on_own_header(
        now,
        AuthorityIndex(0),
        header.clone(),
        Some(payload.clone()),
    );
    let sent = driver.poll(now);
    for i in 1..4u16 {
        let bundle = sent
            .iter()
            .find(|o| o.core == AuthorityIndex(i))
            .map(|o| &o.request.body);
        let Some(RequestBody::HeaderBundle {
            headers, payloads, ..
        }) = bundle
        else {
            panic!("no header bundle for core {i}: {bundle:?}")
        };
        assert!(headers.contains(&header), "core {i}: {headers:?}");
        assert_eq!(payloads, &vec![payload.clone()], "core {i}");
    }
}

/// Core 3's home driver is dead for good: its successor's cover is renewed as long as nobody
/// else carries core 3's payloads, so core 3 keeps up over many cover periods instead of
/// losing a few headers (orphans) at the end of each.
#[test]
fn a_cover_is_renewed_while_nobody_else_carries() {
    const GRACE_MS: u64 = 50;
    let homes = [Some(0), Some(1), Some(2), Some(3)];
    let mut net = Net::new(4, &homes, &[true, true, true, false], GRACE_MS);
    let period = COVER_GRACES * GRACE_MS;
    for _ in 0..(20 * period / STEP_MS) {
        net.step();
    }
    let (of_3, of_0) = (net.committed_of(0, 3), net.committed_of(0, 0));
    println!("over 20 cover periods: committed payloads of core 3 {of_3}, core 0 {of_0}");
    assert!(of_0 > 100, "too few rounds to tell: {of_0}");
    assert!(10 * of_3 >= 9 * of_0, "core 3 {of_3}, core 0 {of_0}");
}
