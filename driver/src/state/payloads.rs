//! Payloads: which ones a request carries, within one byte budget, and fetching from other
//! cores those a core misses that the driver does not hold.

use foldhash::{HashSet, HashSetExt};

use sleepyseal_core::limits::MAX_PAYLOADS_PER_REQUEST;
use sleepyseal_core::protocol::{RequestBody, Summary};
use sleepyseal_core::{AuthorityIndex, Certificate, Digest, Header, Millis, Payload};

use super::carriage::Carry;
use super::DriverState;

impl DriverState {
    /// Payloads the core listed as missing that the driver has.
    pub(super) fn payloads_for(&self, core: AuthorityIndex, s: &Summary) -> Option<RequestBody> {
        let sent = &self.cores[core.as_usize()].sent;
        let payloads = self.within_budget(
            s.missing_payloads
                .iter()
                .filter(|d| self.listed_missing(core, d))
                .filter(|d| !sent.contains(d) || self.listed_long(core, d))
                .filter_map(|d| self.payloads.get(d)),
        );
        (!payloads.is_empty()).then_some(RequestBody::Sync {
            certificates: Vec::new(),
            payloads,
        })
    }

    /// Payloads of `headers` not authored by `core`, where the driver has them and `carry` lets
    /// it carry them.
    pub(super) fn payloads_of<'a, I: Iterator<Item = &'a Header>>(
        &self,
        core: AuthorityIndex,
        headers: I,
        pending: &HashSet<Digest>,
        carry: Carry,
    ) -> Vec<Payload> {
        let mut seen = HashSet::new();
        self.within_budget(
            headers
                .filter_map(|h| self.carried_payload(core, h, pending, carry))
                .filter(|p| seen.insert(p.digest())),
        )
    }

    /// The payload of `header` a request to `core` would carry: one the driver holds, not empty,
    /// not the core's own, not already delivered or on its way, and one `carry` lets it carry
    /// (see `carriage`).
    pub(super) fn carried_payload(
        &self,
        core: AuthorityIndex,
        header: &Header,
        pending: &HashSet<Digest>,
        carry: Carry,
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
            .filter(|p| !p.is_empty())
            .filter(|_| self.carries_to(core, header, carry))
    }

    /// The leading `payloads` that fit one request: at most [`MAX_PAYLOADS_PER_REQUEST`] and,
    /// beyond the first, [`DriverConfig::max_payload_bytes`](super::DriverConfig::max_payload_bytes) in all.
    pub(super) fn within_budget<'a, I: Iterator<Item = &'a Payload>>(
        &self,
        payloads: I,
    ) -> Vec<Payload> {
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

    /// Payloads `core` lists as missing that the driver does not hold (say, it pruned them or
    /// never saw them): ask another core for them, each digest at most once per request timeout,
    /// rotating over the other cores.
    pub(super) fn payload_fetch(
        &mut self,
        now: Millis,
        core: AuthorityIndex,
    ) -> Option<(AuthorityIndex, RequestBody)> {
        let s = self.cores[core.as_usize()].summary.as_ref()?;
        let timeout = self.config.request_timeout_ms;
        let wanted: Vec<Digest> = s
            .missing_payloads
            .iter()
            .filter(|d| !self.payloads.contains(d) && self.listed_missing(core, d))
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
}

/// The headers of `certificates` that `core` did not sign. A signer stored the payload durably
/// before it voted (PROTOCOL.md §4.2) and keeps it above its gc round, so carrying it there is a
/// wasted transfer; should it lack it anyway, it lists it missing and gets it on demand.
pub(super) fn unsigned_by<'a, I: Iterator<Item = &'a Certificate>>(
    core: AuthorityIndex,
    certificates: I,
) -> impl Iterator<Item = &'a Header> {
    certificates
        .filter(move |c| !c.signers.contains(&core))
        .map(|c| &c.header)
}

/// Payload bytes taken into one request, against [`DriverConfig::max_payload_bytes`](super::DriverConfig::max_payload_bytes).
pub(super) struct PayloadBudget {
    max: usize,
    taken: Option<usize>,
}

impl PayloadBudget {
    pub(super) fn new(max: usize) -> PayloadBudget {
        PayloadBudget { max, taken: None }
    }

    /// Takes `len` more bytes if they fit; the first take always fits (one payload is at most
    /// 8 MiB, below any core's request limit), so a request always makes progress.
    pub(super) fn take(&mut self, len: usize) -> bool {
        let total = self.taken.map_or(len, |t| t + len);
        if self.taken.is_some() && total > self.max {
            return false;
        }
        self.taken = Some(total);
        true
    }
}
