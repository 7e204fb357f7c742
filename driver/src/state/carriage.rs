//! Who carries which payload (PROTOCOL.md §7, "Who carries payloads").
//!
//! A payload is the bulk of every request. Without a home core the driver carries every payload
//! eagerly to every core that lacks it, as it always did. With one driver per validator that
//! moves each byte n·(n−1) times, so a driver may be given a **home core** H:
//! - **eager**: H's payloads. The driver pulls them through H's summaries
//!   (`GetState{with_payload}`) and carries them with its bundles to every core that lacks them.
//! - **on demand**: a payload a core lists as missing (it inserted a certificate without it) is
//!   carried if the driver holds it, else fetched from another core (`FetchPayloads`) and carried,
//!   once the core has listed it for [`MISSING_ROUNDS`] rounds at the DAG's pace: its own home
//!   driver, which carries it with the certificate, goes first. With n home drivers answering
//!   every listing at once, each payload a core missed was fetched and carried by n − 1 of them.
//! - **grace**: a header of another author A that a core T has not voted on within the grace
//!   period of this driver first seeing it is carried to T, with its payload (pulled from A's
//!   summary). The grace period is [`DriverConfig::payload_grace_ms`](super::DriverConfig::payload_grace_ms),
//!   or [`GRACE_ROUNDS`] rounds at the pace the DAG keeps, whichever is longer, up to
//!   [`MAX_GRACE_FACTOR`] times the setting: a fixed grace shorter than a round turned every
//!   driver into a carrier of every payload as soon as the cores fell behind, which slowed the
//!   rounds further (10 cores at 50,000 tx/s: 42 payload transfers per transaction, a round a
//!   second).
//! - **cover**: when a header of A, fresh when first seen (no older than the round before the
//!   newest), went uncarried (no vote from any other core, no core reports a certificate of A at
//!   its round or later), nobody carries A's payloads (A's home driver is dead, or there is
//!   none). The driver then carries A's payloads eagerly, like its home core's, for
//!   [`COVER_GRACES`] grace periods, renewed while no core but A votes on a header of A before
//!   the driver delivered it there (nobody else carries them; a home driver that came back gets
//!   A's headers in process and delivers them first); after that it waits for A's home driver
//!   again, and covers again if A's headers first seen since still go uncarried. Uncarried
//!   means: for A's **successor** (the driver whose home core is next after A), for half the
//!   grace period; for every other driver, for the grace period ([`DriverState::cover_wait`]),
//!   so they cover only if the successor's driver is dead too. Grace alone would not keep A
//!   live: A advances a round every few tens of ms on a LAN, so by the time a header of A passed
//!   the grace period the other cores built on a quorum without it, and its late certificate is
//!   an orphan (its transactions are proposed again gc depth rounds later, never lost). So a
//!   dead home driver costs the orphaned headers of half a grace period when it dies, and its
//!   payloads are pulled and carried once. A cover runs out only while its author proposes
//!   payloads (an idle author keeps its cover).
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

/// The grace period in rounds at the DAG's pace: a live home driver delivers its core's header
/// and payload within a round trip, and a round takes at least one.
pub const GRACE_ROUNDS: f64 = 3.0;

/// How many grace periods a header that drew votes of other cores, but no certificate, waits
/// before other drivers carry it (see [`DriverState::overdue`]).
pub const VOTED_GRACES: u64 = 4;

/// How long, in rounds at the DAG's pace, a payload a core lists as missing is left to its own
/// home driver (which carries it with its certificate) before other drivers carry it.
pub const MISSING_ROUNDS: f64 = 2.0;

/// The grace period grows with the pace up to this many times
/// [`DriverConfig::payload_grace_ms`](super::DriverConfig::payload_grace_ms): a stalled DAG still
/// gets a dead home driver's payloads carried, and a cover is still detected within its period
/// ([`COVER_GRACES`] times the setting).
pub const MAX_GRACE_FACTOR: u64 = 8;

/// The DAG's pace as this driver sees it: the top round, when it was reached, and a moving
/// average of the time per round.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Pace {
    round: Round,
    at: Millis,
    ms_per_round: f64,
}

impl Pace {
    /// The top round is `round` at `now`. The first sighting only starts the clock (rounds
    /// before it passed while the driver was away).
    pub(super) fn observe(&mut self, round: Round, now: Millis) {
        if round <= self.round {
            return;
        }
        if self.round > Round(0) {
            let per = now.since(self.at) as f64 / (round.0 - self.round.0) as f64;
            self.ms_per_round = if self.ms_per_round == 0.0 {
                per
            } else {
                0.8 * self.ms_per_round + 0.2 * per
            };
        }
        self.round = round;
        self.at = now;
    }
}

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

    /// The grace period now (module doc): the setting, or [`GRACE_ROUNDS`] at the DAG's pace.
    pub(super) fn grace(&self) -> u64 {
        let base = self.config.payload_grace_ms;
        let paced = (GRACE_ROUNDS * self.pace.ms_per_round) as u64;
        paced.clamp(base, base.saturating_mul(MAX_GRACE_FACTOR))
    }

    /// Whether `header` is still uncertified a grace period after the driver first saw it with
    /// no vote of another core (nobody carries it), or [`VOTED_GRACES`] grace periods with some:
    /// its home driver carries it, but not to a quorum. A header that drew votes and is merely
    /// slow (a core stalled on a sync) is left to its home driver: when every driver carried
    /// such headers after one grace period, one stall of a few hundred ms cost a fifth of a
    /// transfer per transaction.
    pub(super) fn overdue(&self, header: &Header) -> bool {
        if self.certified(header.round(), header.author()) {
            return false;
        }
        let digest = header.digest();
        let Some(seen) = self.header_seen.get(&digest) else {
            return false;
        };
        let waited = self.now.since(seen.at);
        let grace = self.grace();
        waited >= grace.saturating_mul(VOTED_GRACES)
            || (waited >= grace && !self.voted_by_others(&digest, seen))
    }

    /// How long a driver with home core `home` waits on `author`'s uncarried headers before it
    /// covers them: the author's **successor** (the driver whose home core is next after it)
    /// half the grace period, every other driver all of it. So one driver, not every one, pulls
    /// and carries a dead home driver's payloads (1 dead home driver on loopback at 10,000
    /// tx/s, all three other drivers covering: 5.5 payload transfers per transaction), its
    /// cover is renewed (several coverers see each other's deliveries and none renews), and
    /// the others step in soon after when the successor's driver is dead too. The bounds are
    /// measured: a successor waiting a few rounds (40–60 ms here) covered healthy authors during
    /// their stalls (at 50,000 tx/s 4.5–5.2 transfers per transaction instead of 4.2), and the
    /// others waiting longer than the grace period left authors whose successor was cut off
    /// from some cores uncovered too long (the simulator's transactions waiting past gc depth
    /// went up).
    fn cover_wait(&self, author: AuthorityIndex, home: AuthorityIndex) -> u64 {
        let grace = self.grace();
        if (author.as_usize() + 1) % self.cores.len() == usize::from(home.0) {
            grace / 2
        } else {
            grace
        }
    }

    /// How long a core must have listed a payload as missing before a driver with a home core
    /// carries it there: [`MISSING_ROUNDS`] rounds at the DAG's pace, at least a poll interval,
    /// at most the grace period.
    fn missing_wait(&self) -> u64 {
        let paced = (MISSING_ROUNDS * self.pace.ms_per_round) as u64;
        paced.clamp(self.config.poll_interval_ms, self.grace().max(1))
    }

    /// Whether `core` lists the payload `digest` as missing and this driver may carry it there
    /// now: at once if it carries the payload's author eagerly (its home core, one it covers,
    /// or every author without a home core), else once the listing is
    /// [`DriverState::missing_wait`] old (module doc).
    pub(super) fn listed_missing(&self, core: AuthorityIndex, digest: &Digest) -> bool {
        if !self.cores[core.as_usize()]
            .missing_since
            .contains_key(digest)
        {
            return false;
        }
        let eager = self
            .payload_authors
            .get(digest)
            .is_some_and(|author| self.carries_eagerly(*author));
        eager || self.config.home_core.is_none() || self.listed_long(core, digest)
    }

    /// Whether `core` has listed the payload `digest` as missing for [`DriverState::missing_wait`]
    /// or longer: then it lacks it whatever was delivered before (it may have come with a header
    /// the core refused), and it may be carried again. A fresh listing may come from a reply
    /// older than the delivery (replies of pipelined requests arrive in any order).
    pub(super) fn listed_long(&self, core: AuthorityIndex, digest: &Digest) -> bool {
        self.cores[core.as_usize()]
            .missing_since
            .get(digest)
            .is_some_and(|since| self.now.since(*since) >= self.missing_wait())
    }

    /// Whether a certificate bundle may carry `c` now (module doc).
    pub(super) fn bundles_certificate(&self, c: &Certificate) -> bool {
        self.eager(&c.header)
            || self
                .cert_seen
                .get(&c.digest())
                .is_none_or(|seen| self.now.since(*seen) >= self.grace())
    }

    /// Whether a request to `core` may carry `header`'s payload under `carry` (whether the
    /// driver holds it and the core lacks it is checked by the caller).
    pub(super) fn carries_to(&self, core: AuthorityIndex, header: &Header, carry: Carry) -> bool {
        if carry == Carry::Everything || self.eager(header) {
            return true;
        }
        let view = &self.cores[core.as_usize()];
        self.listed_missing(core, &header.payload().digest)
            || (self.overdue(header) && !view.done.contains(&header.digest()))
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
        let floor = self.cores[core.as_usize()]
            .summary
            .as_ref()
            .map_or(Round::GENESIS, |s| s.gc_round);
        self.own_header_of(core).is_some_and(|h| {
            let header = &h.header;
            // A header below its own core's floor is never voted on (a core that installed a
            // checkpoint keeps its old latest header, whose payload it may no longer hold).
            header.round() >= floor
                && header.payload().len > 0
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
        self.renew_needed_covers();
        let period = COVER_GRACES.saturating_mul(self.config.payload_grace_ms);
        let n = self.cores.len();
        let waits: Vec<u64> = (0..n)
            .map(|a| self.cover_wait(AuthorityIndex(a as u16), home))
            .collect();
        let mut uncarried = vec![0usize; n];
        for (digest, seen) in &self.header_seen {
            let author = seen.author;
            let age = self.now.since(seen.at);
            let wait = waits[author.as_usize()];
            let evidence = seen.fresh
                && seen.payload
                && author != home
                && !self.covers(author)
                && seen.at >= self.covered_until[author.as_usize()]
                && (wait..period).contains(&age)
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
            self.carried_by_others[index] = false;
        }
    }

    /// Renews, for another cover period, a cover about to run out (before the next check)
    /// during which no core other than its author voted on a header of that author before this
    /// driver delivered it there: nobody else carries its payloads, and letting the cover run
    /// out would leave its next headers uncarried until the cover starts again, each an orphan.
    /// A home driver that came back delivers its core's headers before this driver does (it
    /// gets them in process, this driver a round trip later), so the cover then runs out.
    fn renew_needed_covers(&mut self) {
        let soon = Millis(self.now.0 + self.config.poll_interval_ms.max(1));
        let period = COVER_GRACES.saturating_mul(self.config.payload_grace_ms);
        for index in 0..self.cores.len() {
            let author = AuthorityIndex(index as u16);
            if self.covers(author) && self.covered_until[index] <= soon {
                if !self.carried_by_others[index] {
                    self.covered_until[index] = Millis(self.now.0.saturating_add(period));
                }
                self.carried_by_others[index] = false;
            }
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
