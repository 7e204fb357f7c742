//! Catch-up of a core that lags or misses history (PROTOCOL.md §8): `Sync` from the driver's
//! cache, `Fetch` from a core that holds the history, and the escalation between them.

use foldhash::HashSet;

use sleepyseal_core::limits::MAX_CERTS_PER_REQUEST;
use sleepyseal_core::protocol::{RequestBody, Summary};
use sleepyseal_core::{AuthorityIndex, Certificate, Digest, Payload, Round};

use super::carriage::Carry;
use super::payloads::unsigned_by;
use super::payloads::PayloadBudget;
use super::{DriverState, Purpose};

/// Where a core stands in catch-up, escalated step by step while it keeps missing history.
///
/// A *sync* step sends certificates from the driver's own cache (and, when the cache has none
/// to send, fetches); a *fetch* step first fetches history from a core that holds it, and the
/// fetch's reply moves on to the next sync step. The first steps start above the core's
/// `author_high`; the floor steps start at its gc floor, for when the core lacks certificates
/// below what it reports (or the fetch target no longer holds that history).
///
/// | step \ event     | `Missing` status | fetch answered  | unknown parents  | `NeedStateSync` error | `Ready` status   |
/// |------------------|------------------|-----------------|------------------|-----------------------|------------------|
/// | `Idle`           | `Sync`           | `Sync`          | `Fetch`          | `FetchFromFloor`      | `Idle`           |
/// | `Sync`           | `Fetch`          | `SyncAgain`     | `Fetch`          | `FetchFromFloor`      | `Idle`           |
/// | `Fetch`          | `SyncAgain`      | `SyncAgain`     | `FetchFromFloor` | `FetchFromFloor`      | `Fetch`          |
/// | `SyncAgain`      | `FetchFromFloor` | `SyncFromFloor` | `FetchFromFloor` | `FetchFromFloor`      | `Idle`           |
/// | `FetchFromFloor` | `SyncFromFloor`  | `SyncFromFloor` | `FetchFromFloor` | `FetchFromFloor`      | `FetchFromFloor` |
/// | `SyncFromFloor`  | `FetchFromFloor` | `SyncFromFloor` | `FetchFromFloor` | `SyncFromFloor`       | `Idle`           |
///
/// A `Missing` status moves one step up the ladder `Idle`, `Sync`, `Fetch`, `SyncAgain`, then
/// alternates between the two floor steps; a fetch answered moves to the next sync step,
/// unknown parents to the next fetch step. `Ready` ends a sync step (what was synced went in)
/// but not a fetch step, whose history the core still needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum CatchUp {
    /// Not catching up. A core that lags (by `lag_rounds`) still gets a `Sync` from the cache
    /// above its `author_high` first, then a `Fetch`.
    #[default]
    Idle,
    /// Sync above `author_high` from the cache: the core reported missing history, or the
    /// history fetched for a lagging core arrived.
    Sync,
    /// Fetch above `author_high` from a core that holds it: the driver lacks the parents the
    /// core is missing, or a sync did not fill the gap.
    Fetch,
    /// Sync above `author_high` again, with what was fetched.
    SyncAgain,
    /// Fetch everything above the core's gc floor: syncing above `author_high` did not help.
    FetchFromFloor,
    /// Sync everything the driver holds above the core's gc floor.
    SyncFromFloor,
}

impl CatchUp {
    /// Whether catch-up is under way (no pipelining then: one request at a time).
    pub(super) fn active(self) -> bool {
        self != CatchUp::Idle
    }

    /// Whether sync and fetch start at the core's gc floor rather than its `author_high`.
    pub(super) fn at_floor(self) -> bool {
        matches!(self, CatchUp::FetchFromFloor | CatchUp::SyncFromFloor)
    }

    /// Whether a `Sync` from the cache is tried before a `Fetch` (`Idle`: when the core lags).
    fn sync_first(self, lagging: bool) -> bool {
        match self {
            CatchUp::Idle => lagging,
            CatchUp::Sync | CatchUp::SyncAgain | CatchUp::SyncFromFloor => true,
            CatchUp::Fetch | CatchUp::FetchFromFloor => false,
        }
    }

    /// The core's summary says `Missing`: what was sent did not all go in, one step further.
    pub(super) fn missing(self) -> CatchUp {
        match self {
            CatchUp::Idle => CatchUp::Sync,
            CatchUp::Sync => CatchUp::Fetch,
            CatchUp::Fetch => CatchUp::SyncAgain,
            CatchUp::SyncAgain | CatchUp::SyncFromFloor => CatchUp::FetchFromFloor,
            CatchUp::FetchFromFloor => CatchUp::SyncFromFloor,
        }
    }

    /// A fetch on the core's behalf was answered: sync what it brought.
    pub(super) fn fetched(self) -> CatchUp {
        match self {
            CatchUp::Idle => CatchUp::Sync,
            CatchUp::Sync | CatchUp::Fetch => CatchUp::SyncAgain,
            CatchUp::SyncAgain | CatchUp::FetchFromFloor | CatchUp::SyncFromFloor => {
                CatchUp::SyncFromFloor
            }
        }
    }

    /// The core misses parents the driver does not hold either: fetch them.
    fn parents_unknown(self) -> CatchUp {
        match self {
            CatchUp::Idle | CatchUp::Sync => CatchUp::Fetch,
            CatchUp::Fetch
            | CatchUp::SyncAgain
            | CatchUp::FetchFromFloor
            | CatchUp::SyncFromFloor => CatchUp::FetchFromFloor,
        }
    }

    /// A request for the core was refused with `NeedStateSync` (the fetch target no longer
    /// holds that history): start from the floor.
    pub(super) fn history_gone(self) -> CatchUp {
        match self {
            CatchUp::SyncFromFloor => CatchUp::SyncFromFloor,
            _ => CatchUp::FetchFromFloor,
        }
    }

    /// The core's summary says `Ready`: a sync step is over, a fetch step still waits.
    pub(super) fn ready(self) -> CatchUp {
        match self {
            CatchUp::Sync | CatchUp::SyncAgain | CatchUp::SyncFromFloor => CatchUp::Idle,
            CatchUp::Idle | CatchUp::Fetch | CatchUp::FetchFromFloor => self,
        }
    }
}

impl DriverState {
    /// Whether the core is more than `lag_rounds` behind [`DriverState::top_round`].
    pub(super) fn lags(&self, s: &Summary) -> bool {
        s.round.0.saturating_add(self.config.lag_rounds) < self.top_round().0
    }

    /// The catch-up request for `core` (nothing in flight), if it lags or is catching up: a
    /// `Sync` from the cache at a sync step, else a `Fetch` from the hinted or best other core.
    pub(super) fn catch_up_request(
        &self,
        core: AuthorityIndex,
        s: &Summary,
        pending: &HashSet<Digest>,
    ) -> Option<(AuthorityIndex, RequestBody, Purpose)> {
        let view = &self.cores[core.as_usize()];
        let lagging = self.lags(s);
        if !lagging && !view.catch_up.active() {
            return None;
        }
        let from_floor = view.catch_up.at_floor();
        if view.catch_up.sync_first(lagging) {
            if let Some(body) = self.sync_for(core, s, from_floor, pending) {
                return Some((core, body, Purpose::Own));
            }
        }
        let best = view.fetch_hint.or_else(|| self.best_core(core))?;
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
        Some((best, body, Purpose::FetchFor(core)))
    }

    /// A core cannot vote on `header` for lack of `parents`. If the driver lacks them too, fetch
    /// history for that core, first from the header's author, which built on them.
    pub(super) fn on_missing_parents(
        &mut self,
        core: AuthorityIndex,
        header: &Digest,
        parents: &[Digest],
    ) {
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
        view.catch_up = view.catch_up.parents_unknown();
        view.fetch_hint = author.filter(|a| *a != core);
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
                unsigned_by(core, std::iter::once(c))
                    .find_map(|h| self.carried_payload(core, h, pending, Carry::Everything))
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
        let payloads = self.payloads_of(
            core,
            unsigned_by(core, certificates.iter()),
            pending,
            Carry::Everything,
        );
        Some(RequestBody::Sync {
            certificates,
            payloads,
        })
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
}

#[cfg(test)]
mod tests {
    use super::CatchUp::{self, *};

    #[test]
    fn missing_statuses_climb_the_ladder_then_alternate_at_the_floor() {
        let mut step = Idle;
        let mut seen = Vec::new();
        for _ in 0..7 {
            step = step.missing();
            seen.push(step);
        }
        let expected = [
            Sync,
            Fetch,
            SyncAgain,
            FetchFromFloor,
            SyncFromFloor,
            FetchFromFloor,
            SyncFromFloor,
        ];
        assert_eq!(seen, expected);
    }

    #[test]
    fn ready_ends_sync_steps_only() {
        let all = [Idle, Sync, Fetch, SyncAgain, FetchFromFloor, SyncFromFloor];
        let after: Vec<CatchUp> = all.iter().map(|s| s.ready()).collect();
        assert_eq!(after, [Idle, Idle, Fetch, Idle, FetchFromFloor, Idle]);
    }

    #[test]
    fn a_fetch_leads_to_a_sync_and_unknown_parents_to_a_fetch() {
        let all = [Idle, Sync, Fetch, SyncAgain, FetchFromFloor, SyncFromFloor];
        for step in all {
            assert!(step.fetched().sync_first(false), "{step:?}");
            assert!(!step.parents_unknown().sync_first(true), "{step:?}");
            assert!(step.history_gone().at_floor(), "{step:?}");
        }
    }
}
