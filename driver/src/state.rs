//! The sans-IO driver (PROTOCOL.md §7–§8): summaries and replies in, requests out.
//!
//! A driver holds no keys and nothing durable. From what cores tell it, it keeps a soft cache of
//! headers, payloads, votes and certificates, and for each core decides the one request that
//! moves it forward most: catch-up (`Sync`, fed by `Fetch` from an up-to-date core) when it lags,
//! otherwise the newest certificates it lacks (`CertBundle`), otherwise the headers it has not
//! voted on (`HeaderBundle`), otherwise a `GetState` poll. Votes are checked before they are
//! aggregated, so a Byzantine core cannot poison a certificate. Killing a driver loses nothing: a
//! new one rebuilds all it needs from summaries.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use sleepyseal_core::crypto::{verify_one, SignatureItem};
use sleepyseal_core::limits::{MAX_CERTS_PER_REQUEST, MAX_PAYLOADS_PER_REQUEST};
use sleepyseal_core::messages::vote_message;
use sleepyseal_core::protocol::{Request, RequestBody, Response, Status, Summary};
use sleepyseal_core::{
    AuthorityIndex, Certificate, Committee, CoreError, Digest, Millis, Payload, Round,
    SignedHeader, Vote,
};

/// Settings of a driver.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// A request without reply after this long is given up (the core may be down).
    pub request_timeout_ms: u64,
    /// How often an idle core is polled.
    pub poll_interval_ms: u64,
    /// A core this many rounds behind the most advanced one is caught up with `Sync`.
    pub lag_rounds: u64,
    /// Certificates per `Fetch`/`Sync`.
    pub sync_batch: u32,
    /// Rounds of soft state kept below the newest round.
    pub keep_rounds: u64,
    /// Requests in flight per core. Beyond the first, only header and certificate bundles that
    /// carry nothing already in flight to that core are sent (catch-up, polls and fetches go one
    /// at a time).
    pub pipeline_depth: usize,
    /// Payload bytes one request carries at most (beyond its first payload, which always goes).
    /// It must stay below the cores' request limit (`NetLimits::max_request_bytes`, 32 MiB by
    /// default) with room for the certificates: a larger request is refused whole, so a lagging
    /// core whose catch-up exceeded it would never catch up. What is left out rides with later
    /// requests, or the core lists it as missing and it is carried then.
    pub max_payload_bytes: usize,
}

impl Default for DriverConfig {
    fn default() -> DriverConfig {
        DriverConfig {
            request_timeout_ms: 1_000,
            poll_interval_ms: 50,
            lag_rounds: 3,
            sync_batch: 256,
            keep_rounds: 120,
            pipeline_depth: 2,
            max_payload_bytes: 16 << 20,
        }
    }
}

/// A request the driver wants sent.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// Identifies the reply.
    pub id: u64,
    /// Which core.
    pub core: AuthorityIndex,
    /// The request.
    pub request: Request,
}

/// What a request in flight was for.
#[derive(Clone, Copy, Debug)]
enum Purpose {
    /// Moves `core` itself.
    Own,
    /// Fetches history on behalf of `for_core`.
    FetchFor(AuthorityIndex),
    /// Fetches payloads that `for_core` misses and the driver does not hold.
    PayloadsFor(AuthorityIndex),
}

#[derive(Clone, Debug)]
struct InFlight {
    id: u64,
    sent_at: Millis,
    purpose: Purpose,
    /// Digests of the headers, certificates and payloads it carries.
    items: Vec<Digest>,
}

/// What the driver knows of one core.
#[derive(Clone, Debug, Default)]
struct CoreView {
    summary: Option<Summary>,
    /// Requests in flight for this core (at most `pipeline_depth`).
    in_flight: Vec<InFlight>,
    /// No request at all before this time (back-off after failures).
    backoff_until: Millis,
    /// No idle `GetState` poll before this time (poll interval, `NotReady` hints).
    next_poll: Millis,
    /// Header digests this core voted for or refused for good.
    done: HashSet<Digest>,
    /// Certificate and payload digests delivered to this core (it holds them unless it said
    /// something was missing).
    sent: HashSet<Digest>,
    /// Catch-up escalation after the core reported missing parents: odd steps send a `Sync` from
    /// the driver's cache, even steps `Fetch` history from an up-to-date core first; from step 4
    /// on, both start at the core's gc floor instead of its `author_high`. 0 = not catching up.
    catch_up: u32,
    /// A core known to hold the history this core misses (the author of a header it could not
    /// vote on for missing parents): fetch from it first.
    fetch_hint: Option<AuthorityIndex>,
    /// Consecutive failures (timeouts, errors), for back-off.
    failures: u32,
}

/// The driver's soft state.
#[derive(Debug)]
pub struct DriverState {
    committee: Arc<Committee>,
    config: DriverConfig,
    cores: Vec<CoreView>,
    /// Headers by round and author (several per slot if an author equivocates).
    headers: BTreeMap<Round, BTreeMap<AuthorityIndex, Vec<SignedHeader>>>,
    /// Checked votes by header digest.
    votes: HashMap<Digest, BTreeMap<AuthorityIndex, Vote>>,
    /// Certificates by round and author.
    certificates: BTreeMap<Round, BTreeMap<AuthorityIndex, Certificate>>,
    /// Payloads by digest, with the round that last referenced them.
    payloads: HashMap<Digest, (Payload, Round)>,
    /// Payloads asked of other cores with `FetchPayloads`: when, and how many times.
    payloads_asked: HashMap<Digest, (Millis, u32)>,
    /// The floor of the last full prune: soft state is only swept again once it rises.
    pruned_floor: Option<Round>,
    /// [`DriverState::top_round`], recomputed whenever a summary is stored.
    top: Round,
    next_id: u64,
}

impl DriverState {
    /// A driver with empty soft state. `id_base` separates the ids of successive incarnations.
    pub fn new(committee: Arc<Committee>, config: DriverConfig, id_base: u64) -> DriverState {
        DriverState {
            cores: vec![CoreView::default(); committee.size()],
            committee,
            config,
            headers: BTreeMap::new(),
            votes: HashMap::new(),
            certificates: BTreeMap::new(),
            payloads: HashMap::new(),
            payloads_asked: HashMap::new(),
            pruned_floor: None,
            top: Round::default(),
            next_id: id_base,
        }
    }

    /// The newest round reported by cores holding at least the validity threshold of stake
    /// (f + 1): one of them is honest, so Byzantine cores claiming a far-future round cannot
    /// raise it (a single liar used to move the prune floor of every honest driver and mark
    /// every honest core as lagging).
    pub fn top_round(&self) -> Round {
        self.top
    }

    fn compute_top_round(&self) -> Round {
        let mut reported: Vec<(Round, u64)> = self
            .cores
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let stake = self.committee.stake(AuthorityIndex(i as u16)).0;
                c.summary.as_ref().map(|s| (s.round, stake))
            })
            .collect();
        reported.sort_unstable_by_key(|r| std::cmp::Reverse(r.0));
        let needed = self.committee.validity_threshold().0;
        let mut stake = 0;
        for (round, s) in reported {
            stake += s;
            if stake >= needed {
                return round;
            }
        }
        Round::default()
    }

    /// The latest own header `core` reported.
    pub fn own_header_of(&self, core: AuthorityIndex) -> Option<&SignedHeader> {
        self.cores
            .get(core.as_usize())?
            .summary
            .as_ref()?
            .own_header
            .as_ref()
    }

    /// A one-line description of what the driver believes about `core` (for debugging).
    pub fn describe(&self, core: AuthorityIndex) -> String {
        let v = &self.cores[core.as_usize()];
        let s = v.summary.as_ref();
        format!(
            "round {:?} status {:?} certs {:?} in_flight {} next {:?} done {} sent {} catch_up {} failures {} next_req {:?}",
            s.map(|s| s.round),
            s.map(|s| &s.status),
            s.map(|s| s.certificates.iter().map(|c| (c.round.0, c.author.0)).collect::<Vec<_>>()),
            v.in_flight.len(),
            v.next_poll,
            v.done.len(),
            v.sent.len(),
            v.catch_up,
            v.failures,
            self.next_request(core).map(|(t, b, _)| (t, kind(&b))),
        )
    }

    /// Certificates the driver has assembled or learned.
    pub fn certificate_count(&self) -> usize {
        self.certificates.values().map(BTreeMap::len).sum()
    }

    /// Requests to send now: up to `pipeline_depth` in flight per core.
    pub fn poll(&mut self, now: Millis) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for index in 0..self.cores.len() {
            let core = AuthorityIndex(index as u16);
            let view = &mut self.cores[index];
            let timeout = self.config.request_timeout_ms;
            let before = view.in_flight.len();
            view.in_flight.retain(|f| now.since(f.sent_at) < timeout);
            view.failures += (before - view.in_flight.len()) as u32;
            if now < view.backoff_until {
                continue;
            }
            if view.in_flight.is_empty() {
                self.poll_idle(now, core, &mut out);
            }
            // Pipelined: more bundles while earlier requests are in flight.
            while !self.cores[index].in_flight.is_empty()
                && self.cores[index].in_flight.len() < self.config.pipeline_depth.max(1)
            {
                let Some((target, body, purpose)) = self.next_request(core) else {
                    break;
                };
                out.push(self.send(now, target, body, purpose));
            }
        }
        out
    }

    /// The one request for a core with nothing in flight, if any.
    fn poll_idle(&mut self, now: Millis, core: AuthorityIndex, out: &mut Vec<Outgoing>) {
        let index = core.as_usize();
        if let Some((target, body)) = self.payload_fetch(now, core) {
            out.push(self.send(now, target, body, Purpose::PayloadsFor(core)));
        } else if let Some((target, body, purpose)) = self.next_request(core) {
            out.push(self.send(now, target, body, purpose));
        } else if now >= self.cores[index].next_poll {
            self.cores[index].next_poll = Millis(now.0 + self.config.poll_interval_ms);
            // `next_request` already asked for a missing own payload, so none is missing here.
            out.push(self.send(
                now,
                core,
                RequestBody::GetState {
                    with_payload: false,
                },
                Purpose::Own,
            ));
        }
    }

    fn send(
        &mut self,
        now: Millis,
        target: AuthorityIndex,
        body: RequestBody,
        purpose: Purpose,
    ) -> Outgoing {
        let id = self.next_id;
        self.next_id += 1;
        // A fetch on behalf of another core occupies the slot of the core it is for.
        let slot = match purpose {
            Purpose::Own => target,
            Purpose::FetchFor(c) | Purpose::PayloadsFor(c) => c,
        };
        let items = carried_items(&body);
        self.cores[slot.as_usize()].in_flight.push(InFlight {
            id,
            sent_at: now,
            purpose,
            items,
        });
        Outgoing {
            id,
            core: target,
            request: Request {
                instance: self.committee.instance(),
                body,
            },
        }
    }

    /// A request failed in transport (connection lost, undecodable reply): forget it, back off.
    pub fn on_failure(&mut self, now: Millis, id: u64) {
        if let Some(view) = self
            .cores
            .iter_mut()
            .find(|v| v.in_flight.iter().any(|f| f.id == id))
        {
            view.in_flight.retain(|f| f.id != id);
            view.failures += 1;
            view.backoff_until = Millis(now.0 + backoff_ms(view.failures, &self.config));
        }
    }

    /// Takes in a reply from `from`. Replies to unknown ids (old incarnations, duplicates) only
    /// contribute what they carry.
    pub fn on_response(&mut self, now: Millis, id: u64, from: AuthorityIndex, response: Response) {
        let slot = self
            .cores
            .iter()
            .position(|v| v.in_flight.iter().any(|f| f.id == id));
        let purpose = slot.and_then(|s| {
            let flights = &mut self.cores[s].in_flight;
            let k = flights.iter().position(|f| f.id == id)?;
            Some(flights.remove(k).purpose)
        });
        if let Some(s) = slot {
            self.cores[s].failures = 0;
        }
        match response {
            Response::Summary(summary) => self.learn_summary(now, from, *summary),
            Response::Votes {
                votes,
                rejected,
                summary,
            } => {
                for vote in votes {
                    self.learn_vote(from, vote);
                }
                for (digest, error) in rejected {
                    if refusal_is_final(&error) {
                        self.cores[from.as_usize()].done.insert(digest);
                    }
                    match &error {
                        CoreError::MissingParents { digests } => {
                            self.on_missing_parents(from, &digest, digests);
                        }
                        // Whatever was believed delivered, the core lacks it: carry it again.
                        CoreError::MissingPayload { digest } => {
                            self.cores[from.as_usize()].sent.remove(digest);
                        }
                        _ => {}
                    }
                }
                self.learn_summary(now, from, *summary);
            }
            Response::Certificates {
                certificates,
                payloads,
            } => {
                for c in certificates {
                    self.learn_certificate(c);
                }
                for p in payloads {
                    self.learn_payload(p, Round::GENESIS);
                }
                if let Some(Purpose::FetchFor(c)) = purpose {
                    // Next: sync the fetched history into the core that needed it.
                    let view = &mut self.cores[c.as_usize()];
                    view.catch_up = (view.catch_up + 1) | 1;
                    view.fetch_hint = None;
                }
            }
            Response::Error(error) => {
                let view = &mut self.cores[slot.unwrap_or(from.as_usize())];
                if matches!(error, CoreError::NeedStateSync) {
                    // The fetch target no longer holds that history: start from the floor.
                    view.catch_up = view.catch_up.max(4);
                }
                view.failures += 1;
                view.sent.clear();
                view.backoff_until = Millis(now.0 + backoff_ms(view.failures, &self.config));
            }
            Response::Submitted { .. } | Response::Committed { .. } => {}
        }
    }
}

impl DriverState {
    /// A core cannot vote on `header` for lack of `parents`. If the driver lacks them too, fetch
    /// history for that core, first from the header's author, which built on them.
    fn on_missing_parents(&mut self, core: AuthorityIndex, header: &Digest, parents: &[Digest]) {
        let known: HashSet<Digest> = self
            .certificates
            .values()
            .flat_map(|m| m.values().map(Certificate::digest))
            .collect();
        if parents.iter().all(|d| known.contains(d)) {
            return; // the next bundle carries them
        }
        let author = self.header_by_digest(header).map(|h| h.header.author());
        let view = &mut self.cores[core.as_usize()];
        view.catch_up = if view.catch_up % 2 == 0 {
            view.catch_up + 2
        } else {
            view.catch_up + 1
        };
        view.fetch_hint = author.filter(|a| *a != core);
    }
}

/// Back-off after `failures` consecutive failures: 10 ms doubling, capped at the request timeout.
fn backoff_ms(failures: u32, config: &DriverConfig) -> u64 {
    (10u64 << failures.min(10)).min(config.request_timeout_ms)
}

/// Whether a refused header should never be offered to that core again.
fn refusal_is_final(error: &CoreError) -> bool {
    !matches!(
        error,
        CoreError::MissingParents { .. } | CoreError::MissingPayload { .. } | CoreError::Busy
    )
}

// ---- learning -------------------------------------------------------------------------------

impl DriverState {
    fn learn_summary(&mut self, now: Millis, from: AuthorityIndex, summary: Summary) {
        if summary.instance != self.committee.instance() || summary.core != from {
            self.cores[from.as_usize()].failures += 1;
            return;
        }
        if let Some(own) = &summary.own_header {
            if own.header.author() == from {
                let round = own.header.round();
                if let Some(p) = &summary.own_payload {
                    if p.digest() == own.header.payload().digest {
                        self.learn_payload(p.clone(), round);
                    }
                }
                self.learn_header(own.clone());
            }
        }
        for vote in &summary.votes {
            self.learn_vote(from, *vote);
        }
        let view = &mut self.cores[from.as_usize()];
        match summary.status {
            Status::NotReady { retry_after_ms } => {
                view.next_poll = Millis(now.0 + retry_after_ms.min(self.config.request_timeout_ms));
            }
            Status::Missing { .. } => {
                // What was sent did not all go in: stop assuming it did, and escalate catch-up.
                view.sent.clear();
                view.catch_up += 1;
            }
            Status::NeedStateSync => {
                view.next_poll = Millis(now.0 + 10 * self.config.poll_interval_ms);
            }
            Status::Ready => {
                if view.catch_up % 2 == 1 {
                    view.catch_up = 0;
                }
            }
        }
        view.summary = Some(summary);
        self.top = self.compute_top_round();
        self.prune();
    }

    fn learn_header(&mut self, signed: SignedHeader) {
        // A header far above what f + 1 cores report is no use yet, and keeping it would let a
        // Byzantine core fill this driver's memory with far-future rounds.
        if signed.header.round().0 > self.top_round().0.saturating_add(self.config.keep_rounds) {
            return;
        }
        let digest = signed.header.digest();
        let slot = self
            .headers
            .entry(signed.header.round())
            .or_default()
            .entry(signed.header.author())
            .or_default();
        if slot.iter().all(|h| h.header.digest() != digest) && slot.len() < 2 {
            let author_vote = signed.author_vote();
            slot.push(signed);
            self.learn_vote(author_vote.voter, author_vote);
        }
    }

    fn learn_payload(&mut self, payload: Payload, round: Round) {
        let entry = self
            .payloads
            .entry(payload.digest())
            .or_insert((payload, round));
        entry.1 = entry.1.max(round);
    }

    /// Keeps a vote if it verifies and its header is known; assembles a certificate at quorum.
    fn learn_vote(&mut self, from: AuthorityIndex, vote: Vote) {
        if vote.voter != from {
            return;
        }
        let Some(header) = self.header_by_digest(&vote.header_digest).cloned() else {
            return;
        };
        let (round, author) = (header.header.round(), header.header.author());
        if self
            .certificates
            .get(&round)
            .is_some_and(|m| m.contains_key(&author))
        {
            return;
        }
        self.cores[from.as_usize()].done.insert(vote.header_digest);
        let votes = self.votes.entry(vote.header_digest).or_default();
        if votes.contains_key(&vote.voter) {
            return;
        }
        let Some(voter) = self.committee.authority(vote.voter) else {
            return;
        };
        let message = vote_message(&self.committee.instance(), &vote.header_digest);
        let item = SignatureItem {
            public_key: voter.public_key,
            message: &message,
            signature: vote.signature,
        };
        if !verify_one(&item) {
            return;
        }
        votes.insert(vote.voter, vote);
        if self.committee.reaches_quorum(votes.keys().copied()) {
            let all: Vec<Vote> = votes.values().copied().collect();
            let certificate = Certificate::from_votes(header.header, &all);
            self.votes.remove(&vote.header_digest);
            self.learn_certificate(certificate);
        }
    }

    fn header_by_digest(&self, digest: &Digest) -> Option<&SignedHeader> {
        self.headers
            .values()
            .rev()
            .flat_map(|m| m.values().flatten())
            .find(|h| h.header.digest() == *digest)
    }

    fn learn_certificate(&mut self, c: Certificate) {
        if c.round() == Round::GENESIS || !self.committee.contains(c.author()) {
            return;
        }
        self.certificates
            .entry(c.round())
            .or_default()
            .entry(c.author())
            .or_insert(c);
    }

    /// Drops soft state far below the newest round.
    fn prune(&mut self) {
        let floor = self.top_round().saturating_sub(self.config.keep_rounds);
        let payload_cap = 4 * self.config.keep_rounds as usize * self.cores.len();
        // The sweep below costs a pass over everything kept; it only frees something once the
        // floor rose (or the payload cache overflowed), so it runs then and not on every reply.
        if self.pruned_floor != Some(floor) || self.payloads.len() > payload_cap {
            self.sweep_below(floor, payload_cap);
            self.pruned_floor = Some(floor);
        }
        let bound = 16 * self.cores.len() * self.config.keep_rounds as usize;
        for view in &mut self.cores {
            if view.done.len() > bound {
                view.done.clear();
            }
            if view.sent.len() > bound {
                view.sent.clear();
            }
        }
    }

    /// Drops headers, certificates, votes and payloads below `floor`.
    fn sweep_below(&mut self, floor: Round, payload_cap: usize) {
        self.headers = self.headers.split_off(&floor);
        self.certificates = self.certificates.split_off(&floor);
        let live: HashSet<Digest> = self
            .headers
            .values()
            .flat_map(|m| m.values().flatten())
            .map(|h| h.header.digest())
            .collect();
        self.votes.retain(|d, _| live.contains(d));
        self.payloads
            .retain(|_, (_, r)| *r >= floor || *r == Round::GENESIS);
        if self.payloads.len() > payload_cap {
            self.payloads.retain(|_, (_, r)| *r >= floor);
        }
    }
}

// ---- deciding ------------------------------------------------------------------------------

impl DriverState {
    /// The most useful request for `core`, or `None` when it has nothing to do.
    fn next_request(&self, core: AuthorityIndex) -> Option<(AuthorityIndex, RequestBody, Purpose)> {
        let view = &self.cores[core.as_usize()];
        let pending: HashSet<Digest> = view
            .in_flight
            .iter()
            .flat_map(|f| f.items.iter().copied())
            .collect();
        if !view.in_flight.is_empty() {
            // Pipelining: only bundles with something not already on its way; the core must not
            // be catching up (then it gets one request at a time).
            let s = view.summary.as_ref()?;
            let lagging = s.round.0.saturating_add(self.config.lag_rounds) < self.top_round().0;
            if lagging || view.catch_up > 0 {
                return None;
            }
            let body = self
                .cert_bundle_for(core, s, &pending)
                .or_else(|| self.header_bundle_for(core, s, &pending))?;
            return Some((core, body, Purpose::Own));
        }
        let Some(s) = &view.summary else {
            return Some((
                core,
                RequestBody::GetState { with_payload: true },
                Purpose::Own,
            ));
        };
        // Without the payload of the core's newest header, no other core can vote on it.
        if self.lacks_own_payload(core) {
            return Some((
                core,
                RequestBody::GetState { with_payload: true },
                Purpose::Own,
            ));
        }
        let lagging = s.round.0.saturating_add(self.config.lag_rounds) < self.top_round().0;
        if lagging || view.catch_up > 0 {
            let from_floor = view.catch_up >= 4;
            if view.catch_up % 2 == 1 || (lagging && view.catch_up == 0) {
                if let Some(body) = self.sync_for(core, s, from_floor, &pending) {
                    return Some((core, body, Purpose::Own));
                }
            }
            if let Some(best) = view.fetch_hint.or_else(|| self.best_core(core)) {
                let after = if from_floor {
                    vec![s.gc_round.prev(); self.committee.size()]
                } else {
                    s.author_high.clone()
                };
                let body = RequestBody::Fetch {
                    after,
                    max_items: self.batch_limit(from_floor) as u32,
                    with_payloads: true,
                };
                return Some((best, body, Purpose::FetchFor(core)));
            }
        }
        if let Some(body) = self.payloads_for(core, s) {
            return Some((core, body, Purpose::Own));
        }
        if let Some(body) = self.cert_bundle_for(core, s, &pending) {
            return Some((core, body, Purpose::Own));
        }
        self.header_bundle_for(core, s, &pending)
            .map(|body| (core, body, Purpose::Own))
    }

    /// Whether `core` holds (or was just sent, or has on its way) the certificate.
    fn core_holds(
        &self,
        core: AuthorityIndex,
        s: &Summary,
        c: &Certificate,
        pending: &HashSet<Digest>,
    ) -> bool {
        self.cores[core.as_usize()].sent.contains(&c.digest())
            || pending.contains(&c.digest())
            || c.round() < s.gc_round
            || c.round()
                <= s.author_high
                    .get(c.author().as_usize())
                    .copied()
                    .unwrap_or_default()
                && (c.round().0 + 1 < s.round.0
                    || s.certificates.iter().any(|r| r.digest == c.digest()))
    }

    /// Certificates of `round` the core lacks.
    fn lacking(
        &self,
        core: AuthorityIndex,
        s: &Summary,
        round: Round,
        pending: &HashSet<Digest>,
    ) -> Vec<Certificate> {
        self.certificates
            .get(&round)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|c| !self.core_holds(core, s, c, pending))
            .cloned()
            .collect()
    }

    /// Payloads the core listed as missing that the driver has.
    fn payloads_for(&self, core: AuthorityIndex, s: &Summary) -> Option<RequestBody> {
        let sent = &self.cores[core.as_usize()].sent;
        let payloads = self.within_budget(
            s.missing_payloads
                .iter()
                .filter(|d| !sent.contains(d))
                .filter_map(|d| self.payloads.get(d).map(|(p, _)| p)),
        );
        (!payloads.is_empty()).then_some(RequestBody::Sync {
            certificates: Vec::new(),
            payloads,
        })
    }

    /// The newest round of certificates the core lacks, with their lacking parents.
    fn cert_bundle_for(
        &self,
        core: AuthorityIndex,
        s: &Summary,
        pending: &HashSet<Digest>,
    ) -> Option<RequestBody> {
        let low = s.round.prev().max(s.gc_round);
        let (round, certificates) = self
            .certificates
            .range(low..)
            .rev()
            .map(|(r, _)| (*r, self.lacking(core, s, *r, pending)))
            .find(|(_, lacking)| !lacking.is_empty())?;
        let parents = if round > Round(1) {
            self.lacking(core, s, round.prev(), pending)
        } else {
            Vec::new()
        };
        let payloads = self.payloads_of(
            core,
            certificates.iter().chain(&parents).map(|c| &c.header),
            pending,
        );
        Some(RequestBody::CertBundle {
            round,
            certificates,
            parents,
            payloads,
        })
    }

    /// The newest round of uncertified headers the core has not voted on.
    fn header_bundle_for(
        &self,
        core: AuthorityIndex,
        s: &Summary,
        pending: &HashSet<Digest>,
    ) -> Option<RequestBody> {
        let done = &self.cores[core.as_usize()].done;
        let low = s.round.prev().max(s.gc_round).max(Round(1));
        let (round, headers) = self
            .headers
            .range(low..)
            .rev()
            .find_map(|(round, by_author)| {
                let headers: Vec<SignedHeader> = by_author
                    .iter()
                    .filter(|(a, _)| {
                        !self
                            .certificates
                            .get(round)
                            .is_some_and(|m| m.contains_key(a))
                    })
                    .flat_map(|(_, hs)| hs)
                    .filter(|h| {
                        let d = h.header.digest();
                        !done.contains(&d) && !pending.contains(&d)
                    })
                    .filter(|h| {
                        h.header.author() == core
                            || h.header.payload().len == 0
                            || self.payloads.contains_key(&h.header.payload().digest)
                    })
                    .cloned()
                    .collect();
                (!headers.is_empty()).then_some((*round, headers))
            })?;
        let parents = if round > Round(1) {
            self.lacking(core, s, round.prev(), pending)
        } else {
            Vec::new()
        };
        let payloads = self.payloads_of(core, headers.iter().map(|h| &h.header), pending);
        Some(RequestBody::HeaderBundle {
            round,
            headers,
            parents,
            payloads,
        })
    }

    /// Payloads of `headers` not authored by `core`, where the driver has them.
    fn payloads_of<'a, I: Iterator<Item = &'a sleepyseal_core::Header>>(
        &self,
        core: AuthorityIndex,
        headers: I,
        pending: &HashSet<Digest>,
    ) -> Vec<Payload> {
        let mut seen = HashSet::new();
        self.within_budget(
            headers
                .filter_map(|h| self.carried_payload(core, h, pending))
                .filter(|p| seen.insert(p.digest())),
        )
    }

    /// The payload of `header` a request to `core` would carry: one the driver holds, not empty,
    /// not the core's own, not already delivered or on its way.
    fn carried_payload(
        &self,
        core: AuthorityIndex,
        header: &sleepyseal_core::Header,
        pending: &HashSet<Digest>,
    ) -> Option<&Payload> {
        let d = header.payload().digest;
        if header.author() == core
            || self.cores[core.as_usize()].sent.contains(&d)
            || pending.contains(&d)
        {
            return None;
        }
        self.payloads
            .get(&d)
            .map(|(p, _)| p)
            .filter(|p| !p.is_empty())
    }

    /// The leading `payloads` that fit one request: at most [`MAX_PAYLOADS_PER_REQUEST`] and,
    /// beyond the first, [`DriverConfig::max_payload_bytes`] in all.
    fn within_budget<'a, I: Iterator<Item = &'a Payload>>(&self, payloads: I) -> Vec<Payload> {
        let mut budget = PayloadBudget::new(self.config.max_payload_bytes);
        let mut out: Vec<Payload> = Vec::new();
        for p in payloads {
            if out.len() == MAX_PAYLOADS_PER_REQUEST || !budget.take(p.len()) {
                break;
            }
            out.push(p.clone());
        }
        out
    }

    /// Catch-up from the driver's own cache, in ascending round: certificates above the core's
    /// `author_high`, or with `from_floor` every certificate above its gc floor.
    fn sync_for(
        &self,
        core: AuthorityIndex,
        s: &Summary,
        from_floor: bool,
        pending: &HashSet<Digest>,
    ) -> Option<RequestBody> {
        let above_high = |c: &Certificate| {
            c.round()
                > s.author_high
                    .get(c.author().as_usize())
                    .copied()
                    .unwrap_or_default()
        };
        // Certificates stop where their payloads would overflow one request, so the next
        // catch-up starts above them (from the floor, every certificate goes, and the payloads
        // that fit ride along: the core lists the rest as missing).
        let mut budget = PayloadBudget::new(self.config.max_payload_bytes);
        let mut certificates: Vec<Certificate> = Vec::new();
        for c in self
            .certificates
            .range(s.gc_round.max(Round(1))..)
            .flat_map(|(_, m)| m.values())
            .filter(|c| from_floor || (!self.core_holds(core, s, c, pending) && above_high(c)))
            .take(self.batch_limit(from_floor))
        {
            let cost = || {
                self.carried_payload(core, &c.header, pending)
                    .map_or(0, Payload::len)
            };
            if !from_floor && !budget.take(cost()) {
                break;
            }
            certificates.push(c.clone());
        }
        if certificates.is_empty() {
            return None;
        }
        let payloads = self.payloads_of(core, certificates.iter().map(|c| &c.header), pending);
        Some(RequestBody::Sync {
            certificates,
            payloads,
        })
    }

    /// Payloads `core` lists as missing that the driver does not hold (say, it pruned them or
    /// never saw them): ask another core for them, each digest at most once per request timeout,
    /// rotating over the other cores.
    fn payload_fetch(
        &mut self,
        now: Millis,
        core: AuthorityIndex,
    ) -> Option<(AuthorityIndex, RequestBody)> {
        let s = self.cores[core.as_usize()].summary.as_ref()?;
        let timeout = self.config.request_timeout_ms;
        let wanted: Vec<Digest> = s
            .missing_payloads
            .iter()
            .filter(|d| !self.payloads.contains_key(*d))
            .filter(|d| {
                self.payloads_asked
                    .get(*d)
                    .is_none_or(|(at, _)| now.since(*at) >= timeout)
            })
            .take(256)
            .copied()
            .collect();
        let first = *wanted.first()?;
        let attempt = self.payloads_asked.get(&first).map_or(0, |(_, n)| *n);
        let n = self.cores.len() as u32;
        if n < 2 {
            return None;
        }
        let target = AuthorityIndex(((u32::from(core.0) + 1 + attempt % (n - 1)) % n) as u16);
        for d in &wanted {
            let entry = self.payloads_asked.entry(*d).or_insert((now, 0));
            *entry = (now, entry.1 + 1);
        }
        if self.payloads_asked.len() > 64 * 1024 {
            self.payloads_asked
                .retain(|_, (at, _)| now.since(*at) < 10 * timeout);
        }
        Some((target, RequestBody::FetchPayloads { digests: wanted }))
    }

    /// Certificates per catch-up batch. From the floor, a batch must cover everything the driver
    /// holds (it cannot tell which of those the core lacks, and a capped batch would resend the
    /// same oldest certificates forever), up to the protocol's per-request limit.
    fn batch_limit(&self, from_floor: bool) -> usize {
        if from_floor {
            MAX_CERTS_PER_REQUEST
        } else {
            self.config.sync_batch as usize
        }
    }

    /// The most advanced other core with a known summary.
    fn best_core(&self, except: AuthorityIndex) -> Option<AuthorityIndex> {
        self.cores
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != except.as_usize())
            .filter_map(|(i, v)| {
                v.summary
                    .as_ref()
                    .map(|s| (s.last_committed_round, s.round, i))
            })
            .max()
            .map(|(_, _, i)| AuthorityIndex(i as u16))
    }

    /// Whether the driver lacks the (non-empty) payload of `core`'s latest own header.
    fn lacks_own_payload(&self, core: AuthorityIndex) -> bool {
        self.cores[core.as_usize()]
            .summary
            .as_ref()
            .and_then(|s| s.own_header.as_ref())
            .is_some_and(|h| {
                h.header.payload().len > 0
                    && !self.payloads.contains_key(&h.header.payload().digest)
            })
    }

    /// Records what a successful request delivered to `core`.
    pub fn mark_delivered(&mut self, core: AuthorityIndex, request: &RequestBody) {
        let sent = &mut self.cores[core.as_usize()].sent;
        let (certificates, payloads): (&[Certificate], &[Payload]) = match request {
            RequestBody::CertBundle {
                certificates,
                payloads,
                ..
            } => (certificates, payloads),
            RequestBody::Sync {
                certificates,
                payloads,
            } => (certificates, payloads),
            RequestBody::HeaderBundle {
                parents, payloads, ..
            } => (parents, payloads),
            _ => (&[], &[]),
        };
        sent.extend(certificates.iter().map(Certificate::digest));
        sent.extend(payloads.iter().map(Payload::digest));
        if let RequestBody::CertBundle { parents, .. } = request {
            sent.extend(parents.iter().map(Certificate::digest));
        }
    }
}

/// Payload bytes taken into one request, against [`DriverConfig::max_payload_bytes`].
struct PayloadBudget {
    max: usize,
    taken: Option<usize>,
}

impl PayloadBudget {
    fn new(max: usize) -> PayloadBudget {
        PayloadBudget { max, taken: None }
    }

    /// Takes `len` more bytes if they fit; the first take always fits (one payload is at most
    /// 8 MiB, below any core's request limit), so a request always makes progress.
    fn take(&mut self, len: usize) -> bool {
        let total = self.taken.map_or(len, |t| t + len);
        if self.taken.is_some() && total > self.max {
            return false;
        }
        self.taken = Some(total);
        true
    }
}

/// Digests of the headers, certificates and payloads a request carries.
fn carried_items(body: &RequestBody) -> Vec<Digest> {
    let (headers, certificates, more, payloads): (
        &[SignedHeader],
        &[Certificate],
        &[Certificate],
        &[Payload],
    ) = match body {
        RequestBody::HeaderBundle {
            headers,
            parents,
            payloads,
            ..
        } => (headers, parents, &[], payloads),
        RequestBody::CertBundle {
            certificates,
            parents,
            payloads,
            ..
        } => (&[], certificates, parents, payloads),
        RequestBody::Sync {
            certificates,
            payloads,
        } => (&[], certificates, &[], payloads),
        _ => (&[], &[], &[], &[]),
    };
    headers
        .iter()
        .map(|h| h.header.digest())
        .chain(certificates.iter().chain(more).map(Certificate::digest))
        .chain(payloads.iter().map(Payload::digest))
        .collect()
}

/// The name of a request kind (for debugging).
pub fn kind(body: &RequestBody) -> String {
    match body {
        RequestBody::GetState { .. } => "GetState".into(),
        RequestBody::HeaderBundle {
            round,
            headers,
            parents,
            ..
        } => format!(
            "HeaderBundle({round}, {} headers, {} parents)",
            headers.len(),
            parents.len()
        ),
        RequestBody::CertBundle {
            round,
            certificates,
            parents,
            ..
        } => format!(
            "CertBundle({round}, {} certs, {} parents)",
            certificates.len(),
            parents.len()
        ),
        RequestBody::Sync {
            certificates,
            payloads,
        } => format!(
            "Sync({} certs r{}..r{}, {} payloads)",
            certificates.len(),
            certificates.first().map_or(0, |c| c.round().0),
            certificates.last().map_or(0, |c| c.round().0),
            payloads.len()
        ),
        RequestBody::Fetch { .. } => "Fetch".into(),
        RequestBody::Submit { .. } => "Submit".into(),
        RequestBody::ReadCommitted { .. } => "ReadCommitted".into(),
        RequestBody::FetchPayloads { digests } => format!("FetchPayloads({})", digests.len()),
    }
}
