//! `HeaderBundle` and the vote rule (PROTOCOL.md §4.2). Each honest core signs at most one digest
//! per (author, round) over its whole life: `last_voted[author]` is written in the same batch as
//! the vote, and the reply carrying the vote is released only once that batch is durable.

use std::collections::HashMap;

use super::{index_payloads, Core, Tx};
use crate::codec::Encode;
use crate::error::{CoreError, Malformation};
use crate::messages::{vote_message, Certificate, Payload, SignedHeader, Vote};
use crate::protocol::Response;
use crate::store::keys;
use crate::types::{Digest, Millis};

impl Core {
    /// Inserts the carried parents, votes header by header, and may advance.
    pub(super) fn on_header_bundle(
        &mut self,
        now: Millis,
        headers: Vec<SignedHeader>,
        parents: Vec<Certificate>,
        payloads: Vec<Payload>,
        mut rejected: Vec<(Digest, CoreError)>,
        tx: &mut Tx,
    ) -> Response {
        let carried = index_payloads(payloads);
        if let Err(e) = self.insert_all(now, parents, &carried, tx) {
            return Response::Error(e);
        }
        let mut votes = Vec::with_capacity(headers.len());
        for signed in headers {
            match self.try_vote(&signed, &carried, tx) {
                Ok(vote) => votes.push(vote),
                Err(e) => rejected.push((signed.header.digest(), e)),
            }
        }
        // A header certified here before its bundle arrived is not voted on, but its payload,
        // listed missing since the certificate went in, is kept (PROTOCOL.md §6): dropping it
        // cost a second transfer.
        self.store_missing_payloads(&carried, tx);
        let status = self.advance(now, tx);
        Response::Votes {
            votes,
            rejected,
            summary: Box::new(self.summary(status, false)),
        }
    }

    /// The vote rule for one header whose shape and author signature were verified.
    fn try_vote(
        &mut self,
        signed: &SignedHeader,
        carried: &HashMap<Digest, Payload>,
        tx: &mut Tx,
    ) -> Result<Vote, CoreError> {
        let header = &signed.header;
        let (author, round, digest) = (header.author(), header.round(), header.digest());
        if round < self.gc_round() {
            return Err(CoreError::TooOld {
                round,
                gc_round: self.gc_round(),
            });
        }
        // Rule 5 first for the cheap answers that need no parents: a re-sent header gets the
        // same vote again, an older or conflicting one never gets a new one.
        if let Some(previous) = &self.last_voted[author.as_usize()] {
            let voted = previous.header.round();
            if round < voted {
                return Err(CoreError::AlreadyVotedNewer {
                    author,
                    round,
                    voted,
                });
            }
            if round == voted {
                return if previous.header.digest() == digest {
                    Ok(self.sign_vote(digest))
                } else {
                    Err(CoreError::Equivocation {
                        first: Box::new(previous.clone()),
                        second: Box::new(signed.clone()),
                    })
                };
            }
        }
        self.check_parents(signed)?;
        let payload = self.header_payload(signed, carried)?;
        // Persist the payload and last_voted in this request's batch, then sign.
        self.store_payload(&payload, round, tx);
        tx.batch.put(keys::last_voted(author), signed.to_bytes());
        self.last_voted[author.as_usize()] = Some(signed.clone());
        let vote = self.sign_vote(digest);
        self.votes_cast.entry(round).or_default().push(vote);
        self.counters.votes_cast += 1;
        Ok(vote)
    }

    /// Rule 2: every parent is a round − 1 certificate in the DAG.
    fn check_parents(&self, signed: &SignedHeader) -> Result<(), CoreError> {
        let header = &signed.header;
        if header.round().prev() < self.dag.floor() {
            // Parents below the floor are garbage collected; like insertion, do not require them.
            return Ok(());
        }
        let mut missing = Vec::new();
        for parent in header.parents() {
            match self.dag.get(&parent.digest) {
                None => missing.push(parent.digest),
                Some(c) if c.round() != header.round().prev() || c.author() != parent.author => {
                    return Err(CoreError::Malformed {
                        digest: header.digest(),
                        reason: Malformation::ParentRound,
                    });
                }
                Some(_) => {}
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(CoreError::MissingParents { digests: missing })
        }
    }

    /// Rule 3: the payload is carried or stored, and matches digest and length.
    fn header_payload(
        &self,
        signed: &SignedHeader,
        carried: &HashMap<Digest, Payload>,
    ) -> Result<Payload, CoreError> {
        let reference = signed.header.payload();
        let payload = carried
            .get(&reference.digest)
            .or_else(|| self.stored_payload(&reference.digest))
            .ok_or(CoreError::MissingPayload {
                digest: reference.digest,
            })?;
        if payload.len() != reference.len as usize {
            return Err(CoreError::Malformed {
                digest: signed.header.digest(),
                reason: Malformation::PayloadLength,
            });
        }
        Ok(payload.clone())
    }

    /// This core's vote on `digest` (deterministic: the same digest gives the same signature).
    pub(super) fn sign_vote(&self, digest: Digest) -> Vote {
        Vote {
            header_digest: digest,
            voter: self.me,
            signature: self
                .key
                .sign(&vote_message(&self.committee.instance(), &digest)),
        }
    }
}
