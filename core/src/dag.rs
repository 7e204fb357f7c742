//! The certificate DAG: certificates by round and author, kept backward-closed above a floor.
//!
//! Insertion requires every parent at or above the floor to be present, so any certificate in
//! the DAG has its whole history above the floor in the DAG (invariant S5). Garbage collection
//! raises the floor and drops everything below it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::messages::Certificate;
use crate::types::{AuthorityIndex, Digest, Round, Stake};
use crate::Committee;

/// Why a certificate could not be inserted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// Parents at or above the floor are absent.
    MissingParents(Vec<Digest>),
    /// Another certificate holds this (author, round).
    Conflict,
    /// Below the floor.
    BelowFloor,
}

/// What an insertion did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// It is new.
    New,
    /// It was already there (idempotent).
    AlreadyPresent,
}

/// The DAG of certificates.
#[derive(Clone, Debug, Default)]
pub struct Dag {
    /// Certificates by round, then author.
    rounds: BTreeMap<Round, BTreeMap<AuthorityIndex, Arc<Certificate>>>,
    /// Where each digest sits.
    by_digest: HashMap<Digest, (Round, AuthorityIndex)>,
    /// Nothing below this round is kept; parents below it are not required.
    floor: Round,
}

impl Dag {
    /// A DAG holding the genesis certificates of `committee`.
    pub fn new(committee: &Committee) -> Dag {
        let mut dag = Dag::default();
        for author in committee.indices() {
            let genesis = Certificate::genesis(committee.instance(), author);
            let inserted = dag.insert(Arc::new(genesis));
            assert_eq!(inserted, Ok(Inserted::New), "genesis inserts");
        }
        dag
    }

    /// The floor: certificates below it were dropped.
    pub fn floor(&self) -> Round {
        self.floor
    }
    /// Whether the certificate `digest` is present.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.by_digest.contains_key(digest)
    }
    /// The certificate `digest`.
    pub fn get(&self, digest: &Digest) -> Option<&Arc<Certificate>> {
        let (round, author) = self.by_digest.get(digest)?;
        self.rounds.get(round)?.get(author)
    }
    /// The certificate of `author` at `round`.
    pub fn at(&self, round: Round, author: AuthorityIndex) -> Option<&Arc<Certificate>> {
        self.rounds.get(&round)?.get(&author)
    }
    /// All certificates of `round`, by author.
    pub fn round(&self, round: Round) -> impl Iterator<Item = &Arc<Certificate>> {
        self.rounds.get(&round).into_iter().flat_map(|m| m.values())
    }
    /// Every certificate of round > `after`, in (round, author) order.
    pub fn above(&self, after: Round) -> impl Iterator<Item = &Arc<Certificate>> {
        self.rounds
            .range(after.next()..)
            .flat_map(|(_, m)| m.values())
    }
    /// Stake of the certificates held at `round`.
    pub fn stake_at(&self, round: Round, committee: &Committee) -> Stake {
        self.round(round).map(|c| committee.stake(c.author())).sum()
    }
    /// The highest round holding any certificate.
    pub fn highest_round(&self) -> Round {
        self.rounds.keys().next_back().copied().unwrap_or_default()
    }
    /// Number of certificates held.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }
    /// Whether the DAG is empty.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Parents of `c` at or above the floor that are absent.
    pub fn missing_parents(&self, c: &Certificate) -> Vec<Digest> {
        if c.round().prev() < self.floor || c.round() == Round::GENESIS {
            return Vec::new();
        }
        c.header
            .parents()
            .iter()
            .filter(|p| !self.contains(&p.digest))
            .map(|p| p.digest)
            .collect()
    }

    /// Inserts a verified certificate whose parents are present.
    pub fn insert(&mut self, c: Arc<Certificate>) -> Result<Inserted, InsertError> {
        if c.round() < self.floor {
            return Err(InsertError::BelowFloor);
        }
        if let Some(existing) = self.at(c.round(), c.author()) {
            return if existing.digest() == c.digest() {
                Ok(Inserted::AlreadyPresent)
            } else {
                Err(InsertError::Conflict)
            };
        }
        let missing = self.missing_parents(&c);
        if !missing.is_empty() {
            return Err(InsertError::MissingParents(missing));
        }
        self.by_digest.insert(c.digest(), (c.round(), c.author()));
        self.rounds
            .entry(c.round())
            .or_default()
            .insert(c.author(), c);
        Ok(Inserted::New)
    }

    /// Asserts S5 for the certificates with these digests that the DAG holds: every parent at
    /// or above the floor is held. [`Dag::insert`] keeps this by construction; the core asserts
    /// it after each insertion batch (kept in release builds: a hole would let the commit rule
    /// order an incomplete history).
    pub fn assert_parents_held(&self, digests: &[Digest]) {
        for c in digests.iter().filter_map(|d| self.get(d)) {
            let missing = self.missing_parents(c);
            assert!(
                missing.is_empty(),
                "DAG not backward-closed above floor {}: certificate {:?} at {} lacks {} parents",
                self.floor.0,
                c.digest(),
                c.round().0,
                missing.len()
            );
        }
    }

    /// Asserts S5 over the whole DAG: every parent of every certificate above the floor is held.
    /// The core asserts it after each prune (kept in release builds).
    pub fn assert_backward_closed(&self) {
        let all: Vec<Digest> = self.above(self.floor).map(|c| c.digest()).collect();
        self.assert_parents_held(&all);
    }

    /// Drops every certificate below `floor` and raises the floor. Returns how many were dropped.
    pub fn prune_below(&mut self, floor: Round) -> usize {
        if floor <= self.floor {
            return 0;
        }
        let kept = self.rounds.split_off(&floor);
        let dropped = std::mem::replace(&mut self.rounds, kept);
        let mut count = 0;
        for certs in dropped.values() {
            for c in certs.values() {
                self.by_digest.remove(&c.digest());
                count += 1;
            }
        }
        self.floor = floor;
        count
    }

    /// Whether there is a path of parent links from `from` down to `to` (or they are the same).
    pub fn linked(&self, from: &Certificate, to: &Certificate) -> bool {
        if from.round() < to.round() {
            return false;
        }
        let mut frontier: HashSet<Digest> = HashSet::from([from.digest()]);
        let mut round = from.round();
        while round > to.round() {
            let mut next = HashSet::new();
            for digest in &frontier {
                if let Some(c) = self.get(digest) {
                    next.extend(c.header.parents().iter().map(|p| p.digest));
                }
            }
            frontier = next;
            round = round.prev();
            if frontier.is_empty() {
                return false;
            }
        }
        frontier.contains(&to.digest())
    }

    /// Highest certificate round per author (genesis counts as 0), in committee order.
    pub fn author_high(&self, committee_size: usize) -> Vec<Round> {
        let mut high = vec![Round::GENESIS; committee_size];
        for (round, certs) in &self.rounds {
            for author in certs.keys() {
                if let Some(slot) = high.get_mut(author.as_usize()) {
                    *slot = *round;
                }
            }
        }
        high
    }
}
