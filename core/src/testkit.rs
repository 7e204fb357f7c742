//! Shared fixtures for tests and benches: seeded keys, `committee(n)`, and a `DagBuilder` that
//! makes fully signed certificates.

use std::sync::Arc;

use crate::committee::{Authority, Committee, ProtocolConstants};
use crate::crypto::KeyPair;
use crate::hash::hash;
use crate::messages::{vote_message, Certificate, Header, ParentRef, Payload, SignedHeader, Vote};
use crate::types::{AuthorityIndex, Digest, Round, Stake};

/// The instance id used by fixtures.
pub fn instance() -> Digest {
    hash(b"SEAL/TEST/v1", b"instance")
}

/// Deterministic keys of a test committee.
pub fn keys(n: usize) -> Vec<KeyPair> {
    (0..n)
        .map(|i| KeyPair::deterministic(0, i as u16))
        .collect()
}

/// A committee with the given stakes and deterministic keys.
pub fn committee_with_stakes(stakes: &[u64]) -> Arc<Committee> {
    committee_for(instance(), stakes)
}

/// A committee of instance `instance` with the given stakes and deterministic keys.
pub fn committee_for(instance: Digest, stakes: &[u64]) -> Arc<Committee> {
    committee_with(instance, stakes, ProtocolConstants::default())
}

/// A committee of `n` equal-stake validators with GC_DEPTH `gc_depth`.
pub fn committee_with_gc_depth(n: usize, gc_depth: u64) -> Arc<Committee> {
    let constants = ProtocolConstants {
        gc_depth,
        ..ProtocolConstants::default()
    };
    committee_with(instance(), &vec![1; n], constants)
}

/// A committee of instance `instance` with the given stakes, constants and deterministic keys.
pub fn committee_with(
    instance: Digest,
    stakes: &[u64],
    constants: ProtocolConstants,
) -> Arc<Committee> {
    let authorities = stakes
        .iter()
        .enumerate()
        .map(|(i, s)| Authority {
            index: AuthorityIndex(i as u16),
            public_key: KeyPair::deterministic(0, i as u16).public(),
            stake: Stake(*s),
            address: format!("127.0.0.1:{}", 7000 + i),
        })
        .collect();
    Arc::new(Committee::new(instance, authorities, constants).expect("valid test committee"))
}

/// A committee of `n` equal-stake validators.
pub fn committee(n: usize) -> Arc<Committee> {
    committee_with_stakes(&vec![1; n])
}

/// Signs `header` as its author.
pub fn sign_header(key: &KeyPair, header: Header) -> SignedHeader {
    let signature = key.sign(&vote_message(&header.instance(), &header.digest()));
    SignedHeader { header, signature }
}

/// `voter`'s vote on `digest`.
pub fn vote(key: &KeyPair, voter: AuthorityIndex, digest: Digest) -> Vote {
    Vote {
        header_digest: digest,
        voter,
        signature: key.sign(&vote_message(&instance(), &digest)),
    }
}

/// Builds DAGs of real, fully signed certificates round by round.
pub struct DagBuilder {
    committee: Arc<Committee>,
    keys: Vec<KeyPair>,
    /// Certificates built so far, by round (round 0 = genesis).
    pub rounds: Vec<Vec<Certificate>>,
}

impl DagBuilder {
    /// Starts from genesis.
    pub fn new(committee: Arc<Committee>) -> DagBuilder {
        let genesis = committee
            .indices()
            .map(|a| Certificate::genesis(committee.instance(), a))
            .collect();
        DagBuilder {
            keys: keys(committee.size()),
            committee,
            rounds: vec![genesis],
        }
    }

    /// The payload of the certificate by `author` at `round` (two small transactions).
    pub fn payload(round: Round, author: AuthorityIndex) -> Payload {
        Payload::from_transactions([&round.0.to_le_bytes()[..], &[author.0 as u8]])
    }

    /// A certificate by `author` at `round` on `parents`, signed by every validator.
    pub fn certificate(
        &self,
        round: Round,
        author: AuthorityIndex,
        parents: &[&Certificate],
    ) -> Certificate {
        let refs = parents
            .iter()
            .map(|p| ParentRef {
                author: p.author(),
                digest: p.digest(),
            })
            .collect();
        let payload = DagBuilder::payload(round, author);
        let header = Header::new(
            self.committee.instance(),
            round,
            author,
            refs,
            payload.reference(),
            round.0,
        );
        let votes: Vec<Vote> = self
            .committee
            .indices()
            .map(|v| vote(&self.keys[v.as_usize()], v, header.digest()))
            .collect();
        Certificate::from_votes(header, &votes)
    }

    /// Adds a round in which each of `authors` certifies a header whose parents are the
    /// previous round's certificates by `parent_authors` (all of them if `None`).
    pub fn round(&mut self, authors: &[u16], parent_authors: Option<&[u16]>) -> &mut DagBuilder {
        let round = Round(self.rounds.len() as u64);
        let previous = self.rounds.last().expect("genesis").clone();
        let parents: Vec<&Certificate> = previous
            .iter()
            .filter(|c| parent_authors.is_none_or(|p| p.contains(&c.author().0)))
            .collect();
        let layer = authors
            .iter()
            .map(|a| self.certificate(round, AuthorityIndex(*a), &parents))
            .collect();
        self.rounds.push(layer);
        self
    }

    /// Adds `count` full rounds by every validator.
    pub fn full_rounds(&mut self, count: usize) -> &mut DagBuilder {
        let all: Vec<u16> = self.committee.indices().map(|a| a.0).collect();
        for _ in 0..count {
            self.round(&all, None);
        }
        self
    }

    /// Every certificate above genesis, in (round, author) order.
    pub fn all(&self) -> Vec<Certificate> {
        self.rounds.iter().skip(1).flatten().cloned().collect()
    }
}
