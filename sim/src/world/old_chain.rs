//! The old-chain adversary ([`crate::Behaviour::OldChains`]): a Byzantine authority stays silent until
//! the honest cores' GC floor reaches the round after its newest certificate, then signs one
//! header for every round from just above the floor up to the present, each on its previous
//! one, and has each certified by honest votes (honest cores vote: every round is above their
//! floor, and above the last round they saw the author sign). The newest joins the honest DAG,
//! so the next committed leader's history reaches down the whole chain, into rounds that are
//! old by then: where the commit rule cuts it (gc_round, PROTOCOL.md §4.6) decides which of its
//! certificates commit, so honest cores agree only if they all cut at the same depth.
//!
//! The authority's core never runs (a header it built itself could clash with one signed here);
//! its key signs through this actor, which uses a driver slot, as the forger does, and reads the
//! honest DAG as an adversary that sees all traffic would.

use std::collections::BTreeMap;

use sleepyseal_core::messages::ParentRef;
use sleepyseal_core::protocol::{RequestBody, Response};
use sleepyseal_core::testkit::sign_header;
use sleepyseal_core::{
    AuthorityIndex, Certificate, Header, KeyPair, Payload, Request, Round, Signature, SignedHeader,
};

use super::World;

/// A header still uncertified after this long is sent again (requests and replies get lost).
const RESEND_MS: u64 = 150;

/// The state of one old-chain adversary.
pub(super) struct OldChain {
    /// The Byzantine authority whose key signs the chains.
    author: AuthorityIndex,
    key: KeyPair,
    /// The header being certified, if any.
    pending: Option<Pending>,
    /// The chain's newest certificate.
    last: Option<Certificate>,
    /// Whether the chain is being extended (else silent, waiting for the floor).
    building: bool,
    /// Chains that reached the present and were referenced by an honest certificate.
    pub(super) joined: u64,
    /// Certificates formed.
    pub(super) certified: u64,
}

/// A header out for votes.
struct Pending {
    signed: SignedHeader,
    payload: Payload,
    parents: Vec<Certificate>,
    votes: BTreeMap<AuthorityIndex, Signature>,
    sent_at: u64,
}

impl OldChain {
    /// The adversary of Byzantine authority `author` (its core's key: seed 0, as every core's).
    pub(super) fn new(author: AuthorityIndex) -> OldChain {
        OldChain {
            author,
            key: KeyPair::deterministic(0, author.0),
            pending: None,
            last: None,
            building: false,
            joined: 0,
            certified: 0,
        }
    }
}

impl World {
    /// The adversary's move at a driver tick: resend, wait, or sign the next header of the chain.
    pub(super) fn old_chain_step(&mut self, driver: usize) {
        let Some(reference) = self.old_chain_reference() else {
            return;
        };
        let now = self.now;
        let (floor, top) = {
            let core = self.instances[reference]
                .core
                .as_ref()
                .expect("a live reference");
            (core.gc_round(), core.dag().highest_round())
        };
        let chain = self.drivers[driver]
            .old_chain
            .as_mut()
            .expect("a chain driver");
        if let Some(p) = &chain.pending {
            if now.saturating_sub(p.sent_at) >= RESEND_MS {
                self.old_chain_send(driver);
            }
            return;
        }
        let next = chain.last.as_ref().map_or(Round(1), |c| c.round().next());
        if !chain.building {
            // Silent until the floor reaches the round it would sign next: then its chain
            // starts just above the floor, as old as honest cores still vote on.
            if floor.0 == 0 || floor.next() < next {
                return;
            }
            chain.building = true;
        }
        let next = next.max(floor.next());
        if let Some(last) = chain.last.clone() {
            if last.round() >= top.prev() && last.round().next() >= next {
                // At the present: wait for an honest certificate to reference it, or extend it
                // if the honest DAG moved on without it.
                let joined = self.instances[reference]
                    .core
                    .as_ref()
                    .expect("a live reference")
                    .dag()
                    .round(last.round().next())
                    .any(|c| c.header.parents().iter().any(|p| p.digest == last.digest()));
                if joined {
                    let chain = self.drivers[driver].old_chain.as_mut().expect("a chain");
                    chain.joined += 1;
                    chain.building = false;
                    return;
                }
                if top <= last.round().next() {
                    return;
                }
            }
        }
        self.old_chain_sign(driver, reference, next);
    }

    /// Signs the author's header for `round` on the reference core's certificates of the round
    /// before (the chain's newest among them) and sends it out for votes.
    fn old_chain_sign(&mut self, driver: usize, reference: usize, round: Round) {
        let chain = self.drivers[driver].old_chain.as_ref().expect("a chain");
        let author = chain.author;
        let own = chain.last.clone().filter(|c| c.round().next() == round);
        let core = self.instances[reference]
            .core
            .as_ref()
            .expect("a live reference");
        let mut parents: Vec<Certificate> = core
            .dag()
            .round(round.prev())
            .filter(|c| c.author() != author)
            .map(|c| Certificate::clone(c))
            .collect();
        parents.extend(own);
        if !self
            .committee
            .reaches_quorum(parents.iter().map(Certificate::author))
        {
            return;
        }
        let payload = Payload::from_transactions([&round.0.to_le_bytes()[..]]);
        let header = Header::new(
            self.committee.instance(),
            round,
            author,
            parents
                .iter()
                .map(|c| ParentRef {
                    author: c.author(),
                    digest: c.digest(),
                })
                .collect(),
            payload.reference(),
            self.now,
        );
        let chain = self.drivers[driver].old_chain.as_mut().expect("a chain");
        let signed = sign_header(&chain.key, header);
        chain.pending = Some(Pending {
            signed,
            payload,
            parents,
            votes: BTreeMap::new(),
            sent_at: self.now,
        });
        self.old_chain_send(driver);
    }

    /// Sends the pending header, its parents and payload to every honest core.
    fn old_chain_send(&mut self, driver: usize) {
        let chain = self.drivers[driver].old_chain.as_mut().expect("a chain");
        let Some(p) = chain.pending.as_mut() else {
            return;
        };
        p.sent_at = self.now;
        let body = RequestBody::HeaderBundle {
            round: p.signed.header.round(),
            headers: vec![p.signed.clone()],
            parents: p.parents.clone(),
            payloads: vec![p.payload.clone()],
        };
        self.old_chain_broadcast(driver, body);
    }

    /// Sends `body` to the primary instance of every authority but the chain's own.
    fn old_chain_broadcast(&mut self, driver: usize, body: RequestBody) {
        let author = self.drivers[driver]
            .old_chain
            .as_ref()
            .expect("a chain")
            .author;
        for instance in 0..self.committee.size() {
            if instance == author.as_usize() {
                continue;
            }
            let id = self.rng.next_u64() | (1 << 63);
            let request = Request {
                instance: self.committee.instance(),
                body: body.clone(),
            };
            self.send_bytes(
                driver,
                instance,
                id,
                sleepyseal_core::codec::Encode::to_bytes(&request),
            );
        }
    }

    /// A reply to the adversary: votes on its pending header, until they certify it.
    pub(super) fn old_chain_reply(&mut self, driver: usize, response: Response) {
        let Response::Votes { votes, .. } = response else {
            return;
        };
        let chain = self.drivers[driver].old_chain.as_mut().expect("a chain");
        let author = chain.author;
        let Some(p) = chain.pending.as_mut() else {
            return;
        };
        let digest = p.signed.header.digest();
        for v in votes.into_iter().filter(|v| v.header_digest == digest) {
            p.votes.insert(v.voter, v.signature);
        }
        p.votes.insert(author, p.signed.signature);
        if !self.committee.reaches_quorum(p.votes.keys().copied()) {
            return;
        }
        let p = chain.pending.take().expect("checked above");
        let certificate = Certificate {
            header: p.signed.header,
            signers: p.votes.keys().copied().collect(),
            signatures: p.votes.values().copied().collect(),
        };
        chain.certified += 1;
        chain.last = Some(certificate.clone());
        // Delivered at once: the newest must reach the honest DAG before it moves on.
        self.old_chain_broadcast(
            driver,
            RequestBody::Sync {
                certificates: vec![certificate],
                payloads: vec![p.payload],
            },
        );
        self.old_chain_step(driver);
    }

    /// The live honest instance with the highest DAG round: what the adversary reads the
    /// present, the floor and the parents from.
    fn old_chain_reference(&self) -> Option<usize> {
        self.honest_instances()
            .into_iter()
            .filter_map(|i| self.instances[i].core.as_ref().map(|c| (i, c)))
            .max_by_key(|(i, c)| (c.dag().highest_round(), std::cmp::Reverse(*i)))
            .map(|(i, _)| i)
    }

    /// The chain drivers' figures: chains joined, certificates formed, and how many of them the
    /// live honest core furthest ahead committed (the others fell below the floor uncommitted).
    pub(super) fn old_chain_figures(&self) -> (u64, u64, u64) {
        let authors: Vec<AuthorityIndex> = self
            .drivers
            .iter()
            .filter_map(|d| d.old_chain.as_ref().map(|c| c.author))
            .collect();
        let committed = self
            .honest_instances()
            .into_iter()
            .filter_map(|i| self.instances[i].core.as_ref())
            .max_by_key(|c| c.consensus().consensus_index)
            .map_or(0, |core| {
                core.committed_entries()
                    .filter(|e| authors.contains(&e.author))
                    .count() as u64
            });
        let (joined, certified) = self
            .drivers
            .iter()
            .filter_map(|d| d.old_chain.as_ref())
            .fold((0, 0), |(j, c), chain| {
                (j + chain.joined, c + chain.certified)
            });
        (joined, certified, committed)
    }
}
