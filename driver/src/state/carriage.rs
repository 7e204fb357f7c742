//! Who carries which payload (PROTOCOL.md §7, "Who carries payloads").
//!
//! A payload is the bulk of every request. Without a home core the driver carries every payload
//! eagerly to every core that lacks it, as it always did. With one driver per validator that
//! moves each byte n·(n−1) times, so a driver may be given a **home core** H:
//! - **eager**: H's payloads. The driver pulls them through H's summaries
//!   (`GetState{with_payload}`) and carries them with its bundles to every core that lacks them.
//! - **on demand**: a payload a core lists as missing (it inserted a certificate without it) is
//!   carried if the driver holds it, else fetched from another core (`FetchPayloads`) and carried.
//! - **grace**: a header of another author A that a core T has not voted on within
//!   [`DriverConfig::payload_grace_ms`](super::DriverConfig::payload_grace_ms) of this driver
//!   first seeing it is carried to T, with its payload (pulled from A's summary).
//! - **cover**: when headers of A, fresh when first seen (no older than the round before the
//!   newest), passed the grace period with no vote from any other core and no core reports a
//!   certificate of A at their round or later, nobody carries A's payloads (A's home driver is
//!   dead, or there is none). The driver then carries A's payloads eagerly, like its home
//!   core's, for [`COVER_GRACES`] grace periods; after that it waits for A's home driver again,
//!   and covers again if A's headers first seen since still go uncarried. Grace alone would not
//!   keep A live: A advances a round every few tens of ms on a LAN, so by the time a header of A
//!   passed the grace period the other cores built on a quorum without it, and its late
//!   certificate is an orphan. Covering drivers fall out of step (each covers from its own first
//!   sight), so one usually still covers while another waits: a dead home driver costs a few
//!   orphaned headers per cover period, whose transactions are proposed again, never lost. A
//!   cover runs out only while its author proposes payloads (an idle author keeps its cover).
//! - **certificates** follow their payloads: a certificate bundle carries at once the
//!   certificates of the authors whose payloads the driver carries eagerly, and any other once
//!   the driver has held it for the grace period and the core still seems to lack it (its own
//!   home driver brings it first). Each home driver spreads its core's certificates; n drivers
//!   all sending every certificate they learn made each core handle twice the requests. The
//!   parents of a header bundle all go: a core needs them to vote.
//! - **catch-up**: a lagging core lacks every payload of the history it is sent (`Sync`), so
//!   catch-up carries every payload the driver holds, whatever its author.
//!
//! **Headers of other authors.** The vote rule refuses a header whose payload the core lacks
//! (`MissingPayload`), so a driver never offers a core a header whose payload it would not carry:
//! before the grace period (and outside a cover), a header of an author other than H and the
//! target is left to its own home driver, which brings header and payload together. A header
//! with an empty payload, or the target's own, is offered as before. The driver still learns
//! every header and every vote from summaries, so it assembles certificates and carries them
//! (certificates are small) whoever carried the payloads.

use sleepyseal_core::{AuthorityIndex, Certificate, Digest, Header, Millis, Round};

use super::{DriverState, Seen};

/// How long a cover lasts, in grace periods (16 × 300 ms ≈ 5 s by default): long enough that the
/// headers orphaned at each cover's start are few, short enough that a home driver that came
/// back takes over within seconds.
pub const COVER_GRACES: u64 = 16;

/// Uncarried headers of one author, first seen within the last cover period, that start a cover.
/// One is enough: a header built late (its author lagged) goes uncertified and unvoted while its
/// home driver is alive, but it is no evidence (it was not fresh when first seen), and a live
/// home driver carries a fresh header within a round trip. Waiting for a second one cost a
/// dead home driver's core its last transactions: once the load stops, its requeued
/// transactions travel in a single header with a payload, the others being empty.
pub const UNCARRIED_HEADERS: usize = 1;

/// Which payloads a request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Carry {
    /// As the home-core policy says (module doc).
    AsPolicy,
    /// Every payload the driver holds that the core lacks: catch-up of a lagging core, which
    /// lacks them all.
    Everything,
}

impl DriverState {
    /// Whether the driver carries `header`'s payload eagerly: it has no home core, or the header
    /// is its home core's, or of an author it covers.
    pub(super) fn eager(&self, header: &Header) -> bool {
        self.carries_eagerly(header.author())
    }

    /// Whether the driver covers `author` now (module doc).
    pub(super) fn covers(&self, author: AuthorityIndex) -> bool {
        self.covered_until
            .get(author.as_usize())
            .is_some_and(|until| self.now < *until)
    }

    /// Whether `header` is still uncertified a grace period after the driver first saw it.
    pub(super) fn overdue(&self, header: &Header) -> bool {
        !self.certified(header.round(), header.author())
            && self
                .header_seen
                .get(&header.digest())
                .is_some_and(|seen| self.now.since(seen.at) >= self.config.payload_grace_ms)
    }

    /// Whether a certificate bundle may carry `c` now (module doc).
    pub(super) fn bundles_certificate(&self, c: &Certificate) -> bool {
        self.eager(&c.header)
            || self
                .cert_seen
                .get(&c.digest())
                .is_none_or(|seen| self.now.since(*seen) >= self.config.payload_grace_ms)
    }

    /// Whether a request to `core` may carry `header`'s payload under `carry` (whether the
    /// driver holds it and the core lacks it is checked by the caller).
    pub(super) fn carries_to(&self, core: AuthorityIndex, header: &Header, carry: Carry) -> bool {
        if carry == Carry::Everything || self.eager(header) {
            return true;
        }
        let view = &self.cores[core.as_usize()];
        let digest = header.payload().digest;
        let listed = view
            .summary
            .as_ref()
            .is_some_and(|s| s.missing_payloads.contains(&digest));
        listed || (self.overdue(header) && !view.done.contains(&header.digest()))
    }

    /// Whether a header bundle to `core` may offer `header`: its own, one with an empty payload,
    /// or one whose payload the driver holds and carries (eagerly, or past the grace period).
    pub(super) fn offers(&self, core: AuthorityIndex, header: &Header) -> bool {
        let payload = header.payload();
        header.author() == core
            || payload.len == 0
            || (self.payloads.contains(&payload.digest)
                && (self.eager(header) || self.overdue(header)))
    }

    /// Whether the driver should pull the (non-empty) payload of `core`'s newest own header,
    /// which it lacks: it carries that core's payloads eagerly, or the header is overdue.
    pub(super) fn wants_own_payload(&self, core: AuthorityIndex) -> bool {
        self.own_header_of(core).is_some_and(|h| {
            let header = &h.header;
            header.payload().len > 0
                && !self.payloads.contains(&header.payload().digest)
                && (self.eager(header) || self.overdue(header))
        })
    }

    /// Starts covering every author [`UNCARRIED_HEADERS`] of whose headers, fresh when first
    /// seen since its last cover ended and within the last cover period, passed the grace period
    /// with no vote of any other core and no certificate (nobody carries its payloads). A header
    /// built after the others moved on is no evidence: no driver offers it, and it is an orphan
    /// whoever carries payloads.
    /// Runs at most once per poll interval: it looks at every header kept.
    pub(super) fn update_covering(&mut self) {
        let Some(home) = self.config.home_core else {
            return;
        };
        if self.now < self.next_cover_check {
            return;
        }
        self.next_cover_check = Millis(self.now.0 + self.config.poll_interval_ms.max(1));
        self.extend_idle_covers();
        let grace = self.config.payload_grace_ms;
        let period = COVER_GRACES.saturating_mul(grace);
        let mut uncarried = vec![0usize; self.cores.len()];
        for (digest, seen) in &self.header_seen {
            let author = seen.author;
            let age = self.now.since(seen.at);
            let evidence = seen.fresh
                && seen.payload
                && author != home
                && !self.covers(author)
                && seen.at >= self.covered_until[author.as_usize()]
                && (grace..period).contains(&age)
                && !self.certified_somewhere(seen)
                && !self.voted_by_others(digest, seen);
            uncarried[author.as_usize()] += usize::from(evidence);
        }
        for (index, _) in uncarried
            .iter()
            .enumerate()
            .filter(|(_, n)| **n >= UNCARRIED_HEADERS)
        {
            let author = AuthorityIndex(index as u16);
            tracing::debug!(%author, "covering the payloads of an author nobody carries");
            self.covered_until[index] = Millis(self.now.0.saturating_add(period));
        }
    }

    /// Keeps covering an author whose newest header has no payload: a cover runs out only while
    /// its author proposes payloads, when a home driver that came back shows by carrying them.
    /// Otherwise a cover ran out while a dead home driver's core idled, and the one header that
    /// then carried its requeued transactions waited the grace period, was certified too late to
    /// be referenced, and was requeued again, gc depth rounds later, over and over.
    fn extend_idle_covers(&mut self) {
        let until = Millis(self.now.0 + 2 * self.config.poll_interval_ms.max(1));
        for index in 0..self.cores.len() {
            let author = AuthorityIndex(index as u16);
            let idle = self
                .own_header_of(author)
                .is_none_or(|h| h.header.payload().len == 0);
            if self.covers(author) && idle && self.covered_until[index] < until {
                self.covered_until[index] = until;
            }
        }
    }

    /// Whether the driver holds a certificate of `author` at `round`.
    fn certified(&self, round: Round, author: AuthorityIndex) -> bool {
        self.certificates
            .get(&round)
            .is_some_and(|m| m.contains_key(&author))
    }

    /// Whether a certificate of the header's author at its round or later is known: held by the
    /// driver, or reported by a core (`author_high`). A driver does not see every vote (a
    /// summary shows only the votes of its core's last two rounds), so the certificates that
    /// cores report are what tells it that someone carries an author's payloads.
    fn certified_somewhere(&self, seen: &Seen) -> bool {
        self.certified(seen.round, seen.author)
            || self.cores.iter().any(|v| {
                v.summary.as_ref().is_some_and(|s| {
                    s.author_high
                        .get(seen.author.as_usize())
                        .is_some_and(|high| *high >= seen.round)
                })
            })
    }

    /// Whether a core other than the header's author voted on it (or refused it for good).
    fn voted_by_others(&self, digest: &Digest, seen: &Seen) -> bool {
        self.cores
            .iter()
            .enumerate()
            .any(|(i, v)| i != seen.author.as_usize() && v.done.contains(digest))
    }
}
