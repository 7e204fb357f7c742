//! Read-only requests (`Fetch`, `ReadCommitted`, `FetchPayloads`) and the `Summary`.

use std::sync::Arc;

use super::Core;
use crate::error::CoreError;
use crate::limits::{
    MAX_CERTS_PER_REQUEST, MAX_COMMITTED_PER_READ, MAX_DIGESTS_PER_MESSAGE, MAX_MESSAGE_BYTES,
};
use crate::messages::{Certificate, Payload};
use crate::protocol::{
    CertRef, CommittedEntry, CommittedView, Gap, PayloadPrefixes, Response, Status, Summary,
};
use crate::types::{Digest, Millis, Round};

/// Payloads of filled entries a summary lists as missing at most (see `missing_listed`).
const MAX_FILLED_MISSING_LISTED: usize = 16;

/// Payload bytes one reply may carry: half the message limit leaves room for everything else.
const MAX_REPLY_PAYLOAD_BYTES: usize = MAX_MESSAGE_BYTES / 2;

impl Core {
    /// Certificates of round > `after[author]`, in (round, author) order, from the archive and
    /// the DAG.
    pub(super) fn on_fetch(
        &self,
        after: &[Round],
        max_items: u32,
        with_payloads: bool,
    ) -> Response {
        let retained_from = self
            .archive
            .keys()
            .next()
            .copied()
            .unwrap_or(self.dag.floor());
        let newest_known = after.iter().copied().max().unwrap_or_default();
        if retained_from > Round(1) && newest_known.next() < retained_from {
            return Response::Error(CoreError::NeedStateSync);
        }
        let limit = (max_items as usize).min(MAX_CERTS_PER_REQUEST);
        let wanted = |c: &&Arc<Certificate>| c.round() > after[c.author().as_usize()];
        let certificates: Vec<Certificate> = self
            .archive
            .values()
            .flatten()
            .chain(self.dag.above(Round::GENESIS))
            .filter(wanted)
            .take(limit)
            .map(|c| Certificate::clone(c))
            .collect();
        let payloads = if with_payloads {
            self.payloads_for(certificates.iter().map(|c| c.header.payload().digest))
        } else {
            Vec::new()
        };
        Response::Certificates {
            certificates,
            payloads,
        }
    }

    /// Stored payloads among `digests`, without duplicates, within the reply budget.
    pub(super) fn payloads_for<I: IntoIterator<Item = Digest>>(&self, digests: I) -> Vec<Payload> {
        let mut out: Vec<Payload> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut bytes = 0;
        for digest in digests {
            let Some(stored) = self.payloads.get(&digest) else {
                continue;
            };
            if !seen.insert(digest) || stored.payload.is_empty() {
                continue;
            }
            bytes += stored.payload.len();
            if bytes > MAX_REPLY_PAYLOAD_BYTES {
                break;
            }
            out.push(stored.payload.clone());
        }
        out
    }

    /// Committed entries from `from_index`, with what `view` asks for.
    pub(super) fn on_read_committed(
        &self,
        now: Millis,
        from_index: u64,
        max: u32,
        view: CommittedView,
    ) -> Response {
        let limit = (max as usize).min(MAX_COMMITTED_PER_READ);
        let mut entries = match self.committed_from(from_index, limit) {
            Ok(entries) => entries,
            Err(first_index) => {
                return Response::Error(self.not_held(now, from_index, first_index))
            }
        };
        let (payloads, prefixes) = match view {
            CommittedView::Digests => (Vec::new(), Vec::new()),
            CommittedView::Payloads => (self.committed_payloads(&mut entries), Vec::new()),
            CommittedView::Prefixes { bytes } => {
                (Vec::new(), self.committed_prefixes(&mut entries, bytes))
            }
        };
        Response::Committed {
            entries,
            payloads,
            prefixes,
        }
    }

    /// Why a read from `from_index` finds no entry there, `first_index` being the next held
    /// one: an open gap that still moves holds the entries to come (the reader waits, at most
    /// FILL_TIMEOUT past the gap's last step); anything else is gone for good (the reader skips,
    /// though never past the bottom of a gap it may wait for).
    fn not_held(&self, now: Millis, from_index: u64, first_index: u64) -> CoreError {
        let moving = self.open_gap().filter(|_| {
            self.gap_moved_at
                .is_some_and(|at| now.since(at) < self.config.fill_timeout_ms)
        });
        match moving {
            Some(gap) if from_index >= gap.old_index && from_index < gap.fill_next => {
                CoreError::CommittedGapOpen {
                    filled_from: gap.fill_next,
                }
            }
            Some(gap) if from_index < gap.old_index => CoreError::CommittedEvicted {
                first_index: first_index.min(gap.old_index),
            },
            _ => CoreError::CommittedEvicted { first_index },
        }
    }

    /// The stored payloads of the leading `entries` whose payloads fit one reply (at least one
    /// entry); `entries` is cut after them, so every entry returned comes with its payload when
    /// the core holds it.
    fn committed_payloads(&self, entries: &mut Vec<CommittedEntry>) -> Vec<Payload> {
        let mut bytes = 0;
        let fitting = entries
            .iter()
            .position(|e| {
                bytes += e.payload.len as usize;
                bytes > MAX_REPLY_PAYLOAD_BYTES
            })
            .unwrap_or(entries.len())
            .max(1);
        entries.truncate(fitting);
        self.payloads_for(entries.iter().map(|e| e.payload.digest))
    }

    /// The transaction prefixes of the leading `entries` whose prefixes fit one reply (at least
    /// one entry); `entries` is cut after them, as in [`Core::committed_payloads`].
    fn committed_prefixes(
        &self,
        entries: &mut Vec<CommittedEntry>,
        bytes: u16,
    ) -> Vec<PayloadPrefixes> {
        let mut out: Vec<PayloadPrefixes> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut size = 0;
        for (i, entry) in entries.iter().enumerate() {
            let Some(stored) = self.payloads.get(&entry.payload.digest) else {
                continue;
            };
            if stored.payload.is_empty() || !seen.insert(entry.payload.digest) {
                continue;
            }
            let prefixes = PayloadPrefixes::of(&stored.payload, bytes);
            size += prefixes.encoded_len();
            if size > MAX_REPLY_PAYLOAD_BYTES && i > 0 {
                entries.truncate(i);
                break;
            }
            out.push(prefixes);
        }
        out
    }

    /// The payloads a summary lists as missing: those needed to vote and commit first; those of
    /// entries a fill brought only when none of those is missing, and a few at a time, so that
    /// bringing them never crowds out consensus (a gap of minutes holds gigabytes).
    fn missing_listed(&self) -> Vec<Digest> {
        if self.missing_payloads.is_empty() {
            return self
                .missing_filled
                .iter()
                .take(MAX_FILLED_MISSING_LISTED)
                .copied()
                .collect();
        }
        self.missing_payloads
            .iter()
            .take(MAX_DIGESTS_PER_MESSAGE)
            .copied()
            .collect()
    }

    /// The core's state for drivers.
    pub(super) fn summary(&self, status: Status, with_payload: bool) -> Summary {
        let round = self.round();
        let own_header = self.own.get(&round).map(|o| o.signed.clone());
        let own_payload = match (&own_header, with_payload) {
            (Some(h), true) => self.stored_payload(&h.header.payload().digest).cloned(),
            _ => None,
        };
        let low = round.prev();
        let certificates = [low, round]
            .into_iter()
            .filter(|r| *r != round || low != round)
            .flat_map(|r| self.dag.round(r))
            .map(|c| CertRef {
                round: c.round(),
                author: c.author(),
                digest: c.digest(),
            })
            .collect();
        let votes = self
            .votes_cast
            .range(low..)
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        let status = match status {
            Status::Missing { mut digests } => {
                digests.truncate(MAX_DIGESTS_PER_MESSAGE);
                Status::Missing { digests }
            }
            other => other,
        };
        Summary {
            instance: self.committee.instance(),
            core: self.me,
            round,
            own_header,
            own_payload,
            certificates,
            votes,
            author_high: self.dag.author_high(self.committee.size()),
            gc_round: self.gc_round(),
            last_committed_round: self.consensus.last_committed_round,
            consensus_index: self.consensus.consensus_index,
            commit_hash: self.consensus.commit_hash,
            missing_payloads: self.missing_listed(),
            gap: self.open_gap().map(|r| Gap {
                old_index: r.old_index,
                next: r.fill_next,
            }),
            status,
        }
    }
}
