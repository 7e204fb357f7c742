//! Choosing requests: for each core, the one request that moves it forward most, pipelined
//! bundles while earlier requests are in flight, and idle polls.

use foldhash::HashSet;

use sleepyseal_core::protocol::{Request, RequestBody, Summary};
use sleepyseal_core::{AuthorityIndex, Certificate, Digest, Millis, Payload, Round, SignedHeader};

use super::carriage::Carry;
use super::payloads::unsigned_by;
use super::{DriverState, InFlight, Outgoing, Purpose};

/// How many poll intervals a driver with a home core waits between idle polls of another core
/// (the replies to its bundles bring most of what that core's summary would tell).
pub const FOREIGN_POLL_FACTOR: u64 = 4;

impl DriverState {
    /// Requests to send now: up to `pipeline_depth` in flight per core.
    pub fn poll(&mut self, now: Millis) -> Vec<Outgoing> {
        self.now = self.now.max(now);
        self.update_covering();
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

    /// How often `core` is polled when idle: every poll interval, but with a home core, another
    /// core only every [`FOREIGN_POLL_FACTOR`] of them. A home driver needs another core's
    /// summary for its missing payloads, its round and the certificates it lacks, which the
    /// replies to its bundles bring anyway; and with one home driver per core, polling every
    /// core as often as one driver did made each core answer n times the polls.
    pub(super) fn poll_interval_of(&self, core: AuthorityIndex) -> u64 {
        match self.config.home_core {
            Some(home) if home != core => self
                .config
                .poll_interval_ms
                .saturating_mul(FOREIGN_POLL_FACTOR),
            _ => self.config.poll_interval_ms,
        }
    }

    /// Polls `core` at the next [`DriverState::poll`] if nothing is in flight to it, whatever
    /// its poll interval or hint: the runner calls it when it learns that the core's state
    /// changed (a home core in the same process tells when its round moves).
    pub fn poll_soon(&mut self, core: AuthorityIndex) {
        if let Some(view) = self.cores.get_mut(core.as_usize()) {
            view.next_poll = Millis::default();
        }
    }

    /// The one request for a core with nothing in flight, if any.
    fn poll_idle(&mut self, now: Millis, core: AuthorityIndex, out: &mut Vec<Outgoing>) {
        let index = core.as_usize();
        if let Some((target, body)) = self.payload_fetch(now, core) {
            out.push(self.send(now, target, body, Purpose::PayloadsFor(core)));
        } else if let Some((target, body, purpose)) = self.next_request(core) {
            out.push(self.send(now, target, body, purpose));
        } else if now >= self.cores[index].next_poll {
            self.cores[index].next_poll = Millis(now.0 + self.poll_interval_of(core));
            // `next_request` already asked for an own payload it wants, so none is wanted here;
            // but a home core reached without a network hop hands its next payload over as a
            // shared buffer, which saves a second request for each new header.
            let with_payload = self.config.home_is_local && self.config.home_core == Some(core);
            out.push(self.send(
                now,
                core,
                RequestBody::GetState { with_payload },
                Purpose::Own,
            ));
        }
    }

    /// Records `body` as in flight for the core it serves and wraps it for sending.
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
            Purpose::Own | Purpose::Install | Purpose::Fill => target,
            Purpose::FetchFor(c)
            | Purpose::PayloadsFor(c)
            | Purpose::CheckpointFor(c)
            | Purpose::FillFor(c) => c,
        };
        self.checkpoint_sent(purpose, target);
        self.fill_sent(purpose, target);
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

    /// The most useful request for `core`, or `None` when it has nothing to do.
    pub(super) fn next_request(
        &self,
        core: AuthorityIndex,
    ) -> Option<(AuthorityIndex, RequestBody, Purpose)> {
        let view = &self.cores[core.as_usize()];
        let pending: HashSet<Digest> = view
            .in_flight
            .iter()
            .flat_map(|f| f.items.iter().copied())
            .collect();
        if !view.in_flight.is_empty() {
            return self.pipelined_request(core, &pending);
        }
        let Some(s) = &view.summary else {
            let with_payload = self.carries_eagerly(core);
            return Some((core, RequestBody::GetState { with_payload }, Purpose::Own));
        };
        // Without the payload of the core's newest header, no other core can vote on it.
        if self.wants_own_payload(core) {
            return Some((
                core,
                RequestBody::GetState { with_payload: true },
                Purpose::Own,
            ));
        }
        if view.needs_checkpoint.is_some() {
            // Nothing else helps such a core: no history catch-up, no bundles.
            return self.checkpoint_request(core, s);
        }
        // The gap an install left, in the background: a step (a read elsewhere, then the fill)
        // per poll interval, between catch-up and bundles. It goes on while the core catches
        // up: a fill held back for FILL_TIMEOUT makes the core propose undecided transactions
        // again, which may then commit twice.
        if let Some(request) = self.fill_request(core, s) {
            return Some(request);
        }
        if let Some(request) = self.catch_up_request(core, s, &pending) {
            return Some(request);
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

    /// A further request for `core` while others are in flight: only bundles with something not
    /// already on its way (`pending`); none while it lags or catches up, as catch-up goes one
    /// request at a time.
    fn pipelined_request(
        &self,
        core: AuthorityIndex,
        pending: &HashSet<Digest>,
    ) -> Option<(AuthorityIndex, RequestBody, Purpose)> {
        let view = &self.cores[core.as_usize()];
        let s = view.summary.as_ref()?;
        if self.lags(s) || view.catch_up.active() || view.needs_checkpoint.is_some() {
            return None;
        }
        let body = self
            .cert_bundle_for(core, s, pending)
            .or_else(|| self.header_bundle_for(core, s, pending))?;
        Some((core, body, Purpose::Own))
    }

    /// Whether `core` holds (or was just sent, or has on its way) the certificate.
    pub(super) fn core_holds(
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

    /// Certificates of `round` the core lacks; with `Carry::AsPolicy`, only those the policy
    /// lets a certificate bundle carry now (see `carriage`).
    fn lacking(
        &self,
        core: AuthorityIndex,
        s: &Summary,
        round: Round,
        pending: &HashSet<Digest>,
        carry: Carry,
    ) -> Vec<Certificate> {
        self.certificates
            .get(&round)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|c| !self.core_holds(core, s, c, pending))
            .filter(|c| carry == Carry::Everything || self.bundles_certificate(c))
            .cloned()
            .collect()
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
            .map(|(r, _)| (*r, self.lacking(core, s, *r, pending, Carry::AsPolicy)))
            .find(|(_, lacking)| !lacking.is_empty())?;
        let parents = if round > Round(1) {
            self.lacking(core, s, round.prev(), pending, Carry::AsPolicy)
        } else {
            Vec::new()
        };
        let payloads = self.payloads_of(
            core,
            unsigned_by(core, certificates.iter().chain(&parents)),
            pending,
            Carry::AsPolicy,
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
                    .filter(|h| self.offers(core, &h.header))
                    .cloned()
                    .collect();
                (!headers.is_empty()).then_some((*round, headers))
            })?;
        // The parents a vote needs, all of them: a header refused for a missing parent costs
        // more than a certificate sent twice.
        let parents = if round > Round(1) {
            self.lacking(core, s, round.prev(), pending, Carry::Everything)
        } else {
            Vec::new()
        };
        let payloads = self.payloads_of(
            core,
            headers.iter().map(|h| &h.header),
            pending,
            Carry::AsPolicy,
        );
        Some(RequestBody::HeaderBundle {
            round,
            headers,
            parents,
            payloads,
        })
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
