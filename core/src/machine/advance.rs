//! Readiness (§4.5) and advancing to a new own header (§4.4).

use super::{Core, OwnHeader, Tx};
use crate::codec::Encode;
use crate::messages::{vote_message, Header, ParentRef, SignedHeader};
use crate::protocol::Status;
use crate::store::keys;
use crate::types::{Millis, Round, Stake};

/// How soon to ask again when waiting on a timer that has no deadline yet.
const MIN_RETRY_MS: u64 = 1;

impl Core {
    /// If the core holds a quorum at a round ≥ its own and that round is ready, builds the next
    /// own header (persisted in `tx`). Returns the core's status.
    pub(super) fn advance(&mut self, now: Millis, tx: &mut Tx) -> Status {
        let Some(target) = self.highest_quorum_round() else {
            return Status::Ready;
        };
        if target < self.round() {
            return Status::Ready;
        }
        if let Some(wait_ms) = self.wait_ms(now, target) {
            return Status::NotReady {
                retry_after_ms: wait_ms.max(MIN_RETRY_MS),
            };
        }
        let next = target.next();
        if self.own.contains_key(&next) {
            return Status::Ready; // never a second header for a round
        }
        self.build_own_header(now, target, tx);
        tx.built_own = true;
        Status::Ready
    }

    /// The highest round ≥ the core's own round holding certificates of stake ≥ Q.
    fn highest_quorum_round(&self) -> Option<Round> {
        let own = self.round();
        let mut r = self.dag.highest_round();
        loop {
            if r < own {
                return None;
            }
            if self.dag.stake_at(r, &self.committee) >= self.committee.quorum_threshold() {
                return Some(r);
            }
            if r == Round::GENESIS {
                return None;
            }
            r = r.prev();
        }
    }

    /// `None` when `round` is ready (§4.5), otherwise how long to wait before asking again.
    fn wait_ms(&mut self, now: Millis, round: Round) -> Option<u64> {
        let since = *self.quorum_since.entry(round).or_insert(now);
        let elapsed = now.since(since);
        let timer = |timeout: u64| (elapsed < timeout).then(|| timeout - elapsed);
        if round.is_leader_round() {
            let leader = self.schedule.leader(round);
            if self.dag.at(round, leader).is_some() {
                return self.batch_wait_ms(round, elapsed);
            }
            return timer(self.config.leader_timeout_ms)
                .or_else(|| self.batch_wait_ms(round, elapsed));
        }
        let leader_round = round.prev();
        if leader_round.is_leader_round() {
            if let Some(ld) = self
                .dag
                .at(leader_round, self.schedule.leader(leader_round))
            {
                let digest = ld.digest();
                let (mut support, mut against) = (Stake(0), Stake(0));
                for c in self.dag.round(round) {
                    if c.header.has_parent(&digest) {
                        support += self.committee.stake(c.author());
                    } else {
                        against += self.committee.stake(c.author());
                    }
                }
                let decided = support >= self.committee.validity_threshold()
                    || against >= self.committee.quorum_threshold();
                if !decided {
                    return timer(self.config.vote_timeout_ms);
                }
            }
        }
        self.batch_wait_ms(round, elapsed)
    }

    /// With a partial batch, wait up to `max_batch_delay_ms` for more transactions; with a live
    /// straggler's certificate of `round` missing, wait up to `straggler_wait_ms` for it.
    fn batch_wait_ms(&self, round: Round, elapsed: u64) -> Option<u64> {
        let full = self.mempool.queued_bytes() >= self.config.batch_size_bytes;
        let batch = self.config.max_batch_delay_ms;
        let batch_wait = (!full && elapsed < batch).then(|| batch - elapsed);
        let straggler = self.config.straggler_wait_ms;
        let straggler_wait =
            (elapsed < straggler && self.live_straggler(round)).then(|| straggler - elapsed);
        batch_wait.max(straggler_wait)
    }

    /// Whether an author with a certificate in the round before `round` has none in `round` yet.
    fn live_straggler(&self, round: Round) -> bool {
        let before = round.prev();
        self.committee.indices().any(|a| {
            self.dag.at(round, a).is_none()
                && (before == Round::GENESIS || self.dag.at(before, a).is_some())
        })
    }

    /// Builds, persists and signs the header of `target + 1` on all held `target` certificates.
    fn build_own_header(&mut self, now: Millis, target: Round, tx: &mut Tx) {
        let round = target.next();
        if let Some(previous) = &self.last_voted[self.me.as_usize()] {
            assert!(
                previous.header.round() < round,
                "own header for {round} after signing {}",
                previous.header.round()
            );
        }
        let parents: Vec<ParentRef> = self
            .dag
            .round(target)
            .map(|c| ParentRef {
                author: c.author(),
                digest: c.digest(),
            })
            .collect();
        let payload = self.take_own_payload(round, tx);
        let header = Header::new(
            self.committee.instance(),
            round,
            self.me,
            parents,
            payload.reference(),
            now.0,
        );
        let signature = self
            .key
            .sign(&vote_message(&self.committee.instance(), &header.digest()));
        let signed = SignedHeader { header, signature };
        self.counters.headers_built += 1;
        self.counters.payload_bytes_proposed += payload.len() as u64;
        tx.batch.put(keys::own(round), signed.to_bytes());
        tx.batch.put(keys::last_voted(self.me), signed.to_bytes());
        self.last_voted[self.me.as_usize()] = Some(signed.clone());
        self.votes_cast
            .entry(round)
            .or_default()
            .push(signed.author_vote());
        self.own.insert(
            round,
            OwnHeader {
                undecided: false,
                signed,
                committed: false,
            },
        );
    }
}
