//! Certificate insertion (§4.3), the commit rule's application (§5) and garbage collection (§4.6).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::{Core, OwnHeader, Tx};
use crate::codec::Encode;
use crate::dag::{InsertError, Inserted};
use crate::error::CoreError;
use crate::messages::{Certificate, Payload};
use crate::store::keys;
use crate::tusk;
use crate::types::{Digest, Millis, Round};

impl Core {
    /// Inserts certificates in (round, author) order, then runs the commit rule once.
    /// Certificates whose parents are missing are skipped and their parents listed in `tx.missing`.
    pub(super) fn insert_all(
        &mut self,
        now: Millis,
        mut certificates: Vec<Certificate>,
        carried: &HashMap<Digest, Payload>,
        tx: &mut Tx,
    ) -> Result<(), CoreError> {
        certificates.sort_by_key(|c| (c.round(), c.author()));
        certificates.dedup_by_key(|c| c.digest());
        let offered: Vec<Digest> = certificates.iter().map(Certificate::digest).collect();
        for c in certificates {
            self.insert_one(now, c, carried, tx)?;
        }
        if tx.inserted > 0 {
            // S5 for what this request added (the whole DAG is checked when gc prunes it): the
            // check over every certificate after every request was a fifth of the core thread.
            self.dag.assert_parents_held(&offered);
            self.commit(tx);
        }
        Ok(())
    }

    /// Inserts one verified certificate. Genesis and below-gc certificates are ignored.
    fn insert_one(
        &mut self,
        now: Millis,
        c: Certificate,
        carried: &HashMap<Digest, Payload>,
        tx: &mut Tx,
    ) -> Result<(), CoreError> {
        if c.round() == Round::GENESIS || c.round() < self.dag.floor() {
            return Ok(());
        }
        let c = Arc::new(c);
        match self.dag.insert(c.clone()) {
            Ok(Inserted::AlreadyPresent) => Ok(()),
            Ok(Inserted::New) => {
                tx.inserted += 1;
                self.counters.certificates_inserted += 1;
                tx.batch
                    .put(keys::certificate(c.round(), c.author()), c.to_bytes());
                let payload = c.header.payload();
                if let Some(p) = carried.get(&payload.digest) {
                    if p.len() == payload.len as usize {
                        self.store_payload(p, c.round(), tx);
                    }
                }
                if !self.holds_payload(&payload.digest) {
                    self.missing_payloads.insert(payload.digest);
                }
                self.note_quorum(now, c.round());
                Ok(())
            }
            Err(InsertError::MissingParents(digests)) => {
                tx.missing.extend(digests);
                Ok(())
            }
            Err(InsertError::BelowFloor) => Ok(()),
            Err(InsertError::Conflict) => Err(CoreError::ConflictingCertificate {
                author: c.author(),
                round: c.round(),
            }),
        }
    }

    /// Stores carried payloads of certificates inserted earlier without them. The digest binds
    /// the content, so a payload whose digest is listed as missing is the right one.
    pub(super) fn store_missing_payloads(
        &mut self,
        carried: &HashMap<Digest, Payload>,
        tx: &mut Tx,
    ) {
        let round = self.dag.highest_round();
        for (digest, payload) in carried {
            if self.missing_payloads.contains(digest) || self.missing_filled.contains(digest) {
                self.store_payload(payload, round, tx);
            }
        }
    }

    /// Records when the core first held a quorum of `round`.
    pub(super) fn note_quorum(&mut self, now: Millis, round: Round) {
        if !self.quorum_since.contains_key(&round)
            && self.dag.stake_at(round, &self.committee) >= self.committee.quorum_threshold()
        {
            self.quorum_since.insert(round, now);
        }
    }

    /// Stores a payload carried by a request (idempotent), raising its retention round. Its
    /// bytes are written from the received buffer.
    pub(super) fn store_payload(&mut self, payload: &Payload, round: Round, tx: &mut Tx) {
        let bytes = payload.bytes().clone();
        self.keep_payload(payload, round, tx, |key, b| b.put_data(key, vec![bytes]));
    }

    /// Runs the commit rule and applies its result: entries, state, own headers, gc.
    fn commit(&mut self, tx: &mut Tx) {
        let (commits, state) = tusk::try_commit(
            &self.dag,
            &self.consensus,
            &self.committee,
            self.schedule.as_ref(),
        );
        if commits.entries.is_empty() {
            return;
        }
        for (k, entry) in commits.entries.iter().enumerate() {
            assert_eq!(
                entry.index,
                self.consensus.consensus_index + k as u64,
                "indices are dense"
            );
            tx.batch.put(keys::committed(entry.index), entry.to_bytes());
            self.counters.committed_entries += 1;
            self.counters.committed_payload_bytes += u64::from(entry.payload.len);
            self.counters.leaders_committed += u64::from(entry.is_leader);
            if entry.author == self.me {
                if let Some(own) = self.own.get_mut(&entry.round) {
                    if own.signed.header.digest() == entry.digest {
                        own.committed = true;
                    }
                }
            }
            self.retain_committed(*entry);
        }
        assert!(
            state.last_committed_round > self.consensus.last_committed_round,
            "the committed leader round only grows ({:?} -> {:?})",
            self.consensus.last_committed_round,
            state.last_committed_round
        );
        assert_eq!(
            state.consensus_index,
            self.consensus.consensus_index + commits.entries.len() as u64,
            "the commit index grows by the entries committed"
        );
        self.consensus = state;
        tx.batch.put(
            keys::consensus(),
            super::recover::encode_consensus(&self.consensus),
        );
        for boundary in &commits.boundaries {
            self.sign_checkpoint(boundary, tx);
        }
        self.collect_garbage(tx);
    }

    /// Raises the DAG floor to gc_round, archives what falls below, drops what falls below the
    /// retention window, and re-queues transactions of own headers that can no longer commit.
    pub(super) fn collect_garbage(&mut self, tx: &mut Tx) {
        let gc_round = self.gc_round();
        if gc_round <= self.dag.floor() {
            return;
        }
        let below: Vec<Arc<Certificate>> = (self.dag.floor().0..gc_round.0)
            .flat_map(|r| self.dag.round(Round(r)).cloned().collect::<Vec<_>>())
            .collect();
        self.dag.prune_below(gc_round);
        self.dag.assert_backward_closed();
        for c in below {
            self.archive.entry(c.round()).or_default().push(c);
        }
        let keep_from = gc_round.saturating_sub(self.config.retention_rounds);
        let expired: Vec<Round> = self.archive.range(..keep_from).map(|(r, _)| *r).collect();
        for round in expired {
            for c in self.archive.remove(&round).unwrap_or_default() {
                tx.batch.delete(keys::certificate(c.round(), c.author()));
            }
        }
        // Own headers first: their transactions are read back from payloads that the
        // retention window may be about to drop (gc_round can jump by more than
        // `retention_rounds` when a core catches up).
        self.requeue_own_below(gc_round, tx);
        let own = self.uncommitted_own_payloads();
        self.evict_committed(gc_round, keep_from, &own, tx);
        self.drop_payloads_below(keep_from, &own, tx);
        self.votes_cast = self.votes_cast.split_off(&gc_round);
        self.quorum_since = self.quorum_since.split_off(&gc_round);
    }

    /// Digests of the payloads of own headers not known to have committed: kept whatever
    /// their round, until the header commits or its transactions are re-queued.
    pub(super) fn uncommitted_own_payloads(&self) -> BTreeSet<Digest> {
        self.own
            .values()
            .filter(|o| !o.committed)
            .map(|o| o.signed.header.payload().digest)
            .collect()
    }

    /// Drops payloads below `round` that no retained committed entry and no own header needs.
    fn drop_payloads_below(&mut self, round: Round, own: &BTreeSet<Digest>, tx: &mut Tx) {
        let mut expired: Vec<Digest> = self
            .payloads
            .iter()
            .filter(|(d, p)| {
                p.round < round && !self.committed_pins.contains_key(*d) && !own.contains(*d)
            })
            .map(|(d, _)| *d)
            .collect();
        expired.sort_unstable(); // deterministic write order
        for digest in expired {
            self.forget_payload(&digest, tx);
        }
        // Worth asking for: payloads of certificates still in the DAG, and of retained committed
        // entries (clients read their transactions); those of filled entries after the others.
        let mut missing: BTreeSet<Digest> = self
            .dag
            .above(self.dag.floor().prev())
            .map(|c| c.header.payload().digest)
            .filter(|d| !self.holds_payload(d))
            .collect();
        missing.extend(
            self.missing_payloads
                .iter()
                .filter(|d| self.committed_pins.contains_key(*d)),
        );
        self.missing_payloads = missing;
        let pins = &self.committed_pins;
        self.missing_filled.retain(|d| pins.contains_key(d));
    }

    /// Own headers below gc_round: committed ones are final; the transactions of the others go
    /// back to the mempool (PROTOCOL.md §4.4), in the same write that forgets the header.
    fn requeue_own_below(&mut self, gc_round: Round, tx: &mut Tx) {
        let kept = self.own.split_off(&gc_round);
        let mut dropped: Vec<(Round, OwnHeader)> =
            std::mem::replace(&mut self.own, kept).into_iter().collect();
        // The latest own header always stays: it defines the core's round.
        if self.own.is_empty() {
            if let Some((round, own)) = dropped.pop() {
                self.own.insert(round, own);
            }
        }
        // Undecided ones stay too, until the gap's fill or FILL_TIMEOUT decides them.
        let (undecided, dropped): (Vec<_>, Vec<_>) =
            dropped.into_iter().partition(|(_, own)| own.undecided);
        self.own.extend(undecided);
        for (round, own) in dropped {
            tx.batch.delete(keys::own(round));
            if own.committed {
                continue;
            }
            let digest = own.signed.header.payload().digest;
            let requeued = self.requeue_payload(digest, tx);
            self.counters.own_headers_orphaned += 1;
            self.counters.transactions_requeued += requeued as u64;
        }
    }
}
