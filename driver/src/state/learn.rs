//! Learning: replies and summaries into the soft cache, checked votes into certificates, and
//! pruning what fell far below the newest round.

use foldhash::HashSet;

use sleepyseal_core::crypto::{verify_batch, SignatureItem};
use sleepyseal_core::messages::vote_message;
use sleepyseal_core::protocol::{RequestBody, Response, Status, Summary};
use sleepyseal_core::{
    AuthorityIndex, Certificate, CoreError, Digest, Millis, Payload, Round, SignedHeader, Vote,
};

use super::{Checked, DriverConfig, DriverState, Purpose, Seen};

impl DriverState {
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
        self.now = self.now.max(now);
        let (slot, purpose) = self.answered(id);
        let taken = matches!(response, Response::Summary(_));
        match (purpose, slot) {
            (Some(Purpose::Install), Some(slot)) => self.install_answered(slot, taken),
            (Some(Purpose::Fill), Some(slot)) => self.fill_answered(slot, taken),
            (Some(Purpose::FillFor(core)), _) => {
                // Entries for a gap, or a source that does not hold them: the next read goes
                // to another core; the core asked for is not to blame.
                if let Response::Committed { entries, .. } = response {
                    self.learn_fill_entries(core, entries);
                }
                return;
            }
            _ => {}
        }
        match response {
            Response::Summary(summary) => self.learn_summary(now, from, *summary),
            Response::Votes {
                votes,
                rejected,
                summary,
            } => {
                self.learn_votes(from, votes, rejected);
                self.learn_summary(now, from, *summary);
            }
            Response::Certificates {
                certificates,
                payloads,
            } => self.learn_fetched(certificates, payloads, purpose),
            // A fill step that did not link: spent (`fill_answered`), not a failure of the core;
            // nor is a fill source that does not hold the range (the next read asks another).
            Response::Error(
                CoreError::InvalidFill { .. }
                | CoreError::FillNotNeeded
                | CoreError::CommittedEvicted { .. }
                | CoreError::CommittedGapOpen { .. },
            ) => {}
            Response::Error(error) => {
                self.on_refused(now, slot.unwrap_or(from.as_usize()), &error);
            }
            Response::Checkpoints(states) => self.learn_checkpoints(from, states),
            Response::Submitted { .. } | Response::Committed { .. } => {}
        }
    }

    /// `core`'s newest own header and its payload (`None` if empty), learned other than from a
    /// reply: a home core in the same process hands over each header it builds, so that its
    /// driver carries it at once (the reply that carried it went to whichever driver made the
    /// core advance).
    pub fn on_own_header(
        &mut self,
        now: Millis,
        core: AuthorityIndex,
        header: SignedHeader,
        payload: Option<Payload>,
    ) {
        self.now = self.now.max(now);
        if header.header.author() != core || !self.committee.contains(core) {
            return;
        }
        if let Some(p) = payload {
            if p.digest() == header.header.payload().digest {
                self.learn_payload(p, header.header.round());
            }
        }
        self.learn_header(header);
    }

    /// Takes request `id` out of flight: the index of the core whose slot it held and what it
    /// was for (none for an unknown id). That core's failure count restarts.
    fn answered(&mut self, id: u64) -> (Option<usize>, Option<Purpose>) {
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
        (slot, purpose)
    }

    /// The votes `from` cast on a header bundle, and its refusals.
    fn learn_votes(
        &mut self,
        from: AuthorityIndex,
        votes: Vec<Vote>,
        rejected: Vec<(Digest, CoreError)>,
    ) {
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
    }

    /// The reply to a `Fetch`: history for the cache, and for the core it was fetched for, the
    /// next catch-up step.
    fn learn_fetched(
        &mut self,
        certificates: Vec<Certificate>,
        payloads: Vec<Payload>,
        purpose: Option<Purpose>,
    ) {
        for c in certificates {
            self.learn_certificate(c);
        }
        for p in payloads {
            self.learn_payload(p, Round::GENESIS);
        }
        if let Some(Purpose::FetchFor(c)) = purpose {
            // Next: sync the fetched history into the core that needed it.
            let view = &mut self.cores[c.as_usize()];
            view.catch_up = view.catch_up.fetched();
            view.fetch_hint = None;
        }
    }

    /// A request held in the slot of core `index` was refused whole: assume nothing delivered
    /// there, back off.
    fn on_refused(&mut self, now: Millis, index: usize, error: &CoreError) {
        if matches!(error, CoreError::NeedStateSync) {
            self.history_gone_for(index, now);
        }
        let view = &mut self.cores[index];
        if matches!(error, CoreError::NeedStateSync) {
            // The fetch target no longer holds that history: start from the floor.
            view.catch_up = view.catch_up.history_gone();
        }
        view.failures += 1;
        view.sent.clear();
        view.backoff_until = Millis(now.0 + backoff_ms(view.failures, &self.config));
    }

    /// Records what a successful request delivered to `core`.
    pub fn mark_delivered(&mut self, core: AuthorityIndex, request: &RequestBody) {
        let view = &mut self.cores[core.as_usize()];
        let sent = &mut view.sent;
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
        // A home core in the same process is reached without a network transfer.
        let local = self.config.home_is_local && self.config.home_core == Some(core);
        // Bundles only: `Sync` is catch-up (and the payloads a core lists as missing).
        if !local && !matches!(request, RequestBody::Sync { .. }) {
            let home = self.config.home_core;
            let authors = &self.payload_authors;
            self.foreign_payload_bytes += payloads
                .iter()
                .filter(|p| home.is_none() || authors.get(&p.digest()).copied() != home)
                .map(|p| p.len() as u64)
                .sum::<u64>();
        }
        if let RequestBody::CertBundle { parents, .. } = request {
            sent.extend(parents.iter().map(Certificate::digest));
        }
        if let RequestBody::HeaderBundle { headers, .. } = request {
            view.headers_sent
                .extend(headers.iter().map(|h| h.header.digest()));
        }
    }

    /// A summary `from` sent: its own header, payload and votes into the cache, and what its
    /// status says about polling and catch-up.
    fn learn_summary(&mut self, now: Millis, from: AuthorityIndex, summary: Summary) {
        if summary.instance != self.committee.instance() || summary.core != from {
            self.cores[from.as_usize()].failures += 1;
            return;
        }
        self.checkpoint_summary(from.as_usize(), &summary);
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
        // The home core's new header waits for nobody else (other drivers leave it to this
        // one): its hint is capped at the poll interval.
        let cap = if self.config.home_core == Some(from) {
            self.config.poll_interval_ms
        } else {
            self.config.request_timeout_ms
        };
        let interval = self.poll_interval_of(from);
        let view = &mut self.cores[from.as_usize()];
        if self.config.home_core.is_some() {
            // A fresh summary is as good as a poll: n home drivers polling every core would
            // double what each core handles.
            view.next_poll = view.next_poll.max(Millis(now.0 + interval));
        }
        match summary.status {
            Status::NotReady { retry_after_ms } => {
                view.next_poll = Millis(now.0 + retry_after_ms.min(cap));
            }
            Status::Missing { .. } => {
                // What was sent did not all go in: stop assuming it did, and escalate catch-up.
                view.sent.clear();
                view.catch_up = view.catch_up.missing();
            }
            Status::NeedStateSync => {
                view.next_poll = Millis(now.0 + 10 * self.config.poll_interval_ms);
            }
            Status::Ready => view.catch_up = view.catch_up.ready(),
        }
        let listed: HashSet<&Digest> = summary.missing_payloads.iter().collect();
        view.missing_since.retain(|d, _| listed.contains(d));
        for d in &summary.missing_payloads {
            view.missing_since.entry(*d).or_insert(now);
        }
        view.summary = Some(summary);
        self.top = self.compute_top_round();
        self.pace.observe(self.top, now);
        self.prune();
    }

    /// Keeps a signed header with its author's own vote: at most two per slot, so an
    /// equivocating author cannot fill the driver's memory.
    fn learn_header(&mut self, signed: SignedHeader) {
        // A header far above what f + 1 cores report is no use yet, and keeping it would let a
        // Byzantine core fill this driver's memory with far-future rounds.
        if signed.header.round().0 > self.top_round().0.saturating_add(self.config.keep_rounds) {
            return;
        }
        let digest = signed.header.digest();
        let now = self.now;
        let slot = self
            .headers
            .entry(signed.header.round())
            .or_default()
            .entry(signed.header.author())
            .or_default();
        if slot.iter().all(|h| h.header.digest() != digest) && slot.len() < 2 {
            let author_vote = signed.author_vote();
            let seen = Seen {
                at: now,
                author: signed.header.author(),
                round: signed.header.round(),
                payload: signed.header.payload().len > 0,
                fresh: signed.header.round().next() >= self.top,
            };
            let payload = signed.header.payload();
            if payload.len > 0 {
                self.payload_authors
                    .insert(payload.digest, signed.header.author());
            }
            slot.push(signed);
            self.header_seen.insert(digest, seen);
            self.learn_vote(author_vote.voter, author_vote);
        }
    }

    /// Keeps a payload, remembering the newest round that referenced it (pruning goes by it).
    fn learn_payload(&mut self, payload: Payload, round: Round) {
        self.payloads.insert(payload, round);
    }

    /// Keeps a vote of a known header, unchecked; assembles a certificate once the votes reach
    /// a quorum and the unchecked ones among them verify (see [`DriverState::check_votes`]).
    fn learn_vote(&mut self, from: AuthorityIndex, vote: Vote) {
        if vote.voter != from || self.committee.authority(vote.voter).is_none() {
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
        // A delivery is recorded before its reply is learned: a vote of a core this driver had
        // not delivered the header to came from someone else's delivery.
        if from != author
            && self.covers(author)
            && !self.cores[from.as_usize()]
                .headers_sent
                .contains(&vote.header_digest)
        {
            self.carried_by_others[author.as_usize()] = true;
        }
        let votes = self.votes.entry(vote.header_digest).or_default();
        if votes.contains_key(&vote.voter) {
            return;
        }
        votes.insert(vote.voter, (vote, Checked::No));
        if !self.quorum_of(&vote.header_digest, Checked::No) {
            return;
        }
        self.check_votes(&vote.header_digest);
        if self.quorum_of(&vote.header_digest, Checked::Valid) {
            let votes = &self.votes[&vote.header_digest];
            let all: Vec<Vote> = votes
                .values()
                .filter(|(_, c)| *c == Checked::Valid)
                .map(|(v, _)| *v)
                .collect();
            let certificate = Certificate::from_votes(header.header, &all);
            self.votes.remove(&vote.header_digest);
            self.learn_certificate(certificate);
        }
    }

    /// Whether the votes kept for header `digest` that are `Checked::Valid`, or with
    /// `Checked::No` also those not checked yet, reach a quorum.
    fn quorum_of(&self, digest: &Digest, at_least: Checked) -> bool {
        let Some(votes) = self.votes.get(digest) else {
            return false;
        };
        let counted = votes
            .iter()
            .filter(|(_, (_, c))| *c == Checked::Valid || *c == at_least)
            .map(|(a, _)| *a);
        self.committee.reaches_quorum(counted)
    }

    /// Checks the unchecked votes of header `digest` in one batch (one verdict each; a failed
    /// batch falls back to checking them one by one, with the same verdicts under ZIP-215). Votes
    /// are checked only once they would make a certificate: a reply's votes and those of the
    /// summaries that follow go together, and the votes beyond a quorum are never checked. An
    /// invalid vote stays, marked, so its voter cannot make the driver check again for that
    /// header (only a core's own vote is taken from it).
    fn check_votes(&mut self, digest: &Digest) {
        let message = vote_message(&self.committee.instance(), digest);
        let Some(votes) = self.votes.get_mut(digest) else {
            return;
        };
        let unchecked: Vec<AuthorityIndex> = votes
            .iter()
            .filter(|(_, (_, c))| *c == Checked::No)
            .map(|(a, _)| *a)
            .collect();
        let items: Vec<SignatureItem<'_>> = unchecked
            .iter()
            .filter_map(|a| {
                let (vote, _) = votes.get(a)?;
                Some(SignatureItem {
                    public_key: self.committee.authority(*a)?.public_key,
                    message: &message,
                    signature: vote.signature,
                })
            })
            .collect();
        let verdicts = verify_batch(&items, items.len());
        for (voter, valid) in unchecked.iter().zip(verdicts) {
            if let Some((_, checked)) = votes.get_mut(voter) {
                *checked = if valid {
                    Checked::Valid
                } else {
                    Checked::Invalid
                };
            }
        }
    }

    pub(super) fn header_by_digest(&self, digest: &Digest) -> Option<&SignedHeader> {
        self.headers
            .values()
            .rev()
            .flat_map(|m| m.values().flatten())
            .find(|h| h.header.digest() == *digest)
    }

    /// Keeps a certificate of the committee (the first one per slot).
    fn learn_certificate(&mut self, c: Certificate) {
        if c.round() == Round::GENESIS || !self.committee.contains(c.author()) {
            return;
        }
        let digest = c.digest();
        let slot = self.certificates.entry(c.round()).or_default();
        if let std::collections::btree_map::Entry::Vacant(e) = slot.entry(c.author()) {
            e.insert(c);
            self.cert_seen.insert(digest, self.now);
        }
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
            if view.headers_sent.len() > bound {
                view.headers_sent.clear();
            }
        }
    }

    /// Drops headers (and when they were seen), certificates, votes and payloads below `floor`.
    fn sweep_below(&mut self, floor: Round, payload_cap: usize) {
        self.headers = self.headers.split_off(&floor);
        self.certificates = self.certificates.split_off(&floor);
        let (live, live_payloads): (HashSet<Digest>, HashSet<Digest>) = self
            .headers
            .values()
            .flat_map(|m| m.values().flatten())
            .map(|h| (h.header.digest(), h.header.payload().digest))
            .unzip();
        self.votes.retain(|d, _| live.contains(d));
        self.header_seen.retain(|d, _| live.contains(d));
        self.payload_authors
            .retain(|d, _| live_payloads.contains(d));
        let kept: HashSet<Digest> = self
            .certificates
            .values()
            .flat_map(|m| m.values().map(Certificate::digest))
            .collect();
        self.cert_seen.retain(|d, _| kept.contains(d));
        self.payloads.retain(|r| r >= floor || r == Round::GENESIS);
        if self.payloads.len() > payload_cap {
            self.payloads.retain(|r| r >= floor);
        }
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
