//! Hostile drivers: each tampers with the requests its honest driver state produces, in the way
//! of its [`Behaviour`], and the forger injects certificates with forged signatures. Honest cores
//! must stay safe whatever they receive, and live with at least one honest driver.

use bytes::Bytes;
use sleepyseal_core::codec::Encode;
use sleepyseal_core::crypto::Signature;
use sleepyseal_core::messages::Header;
use sleepyseal_core::protocol::RequestBody;
use sleepyseal_core::{AuthorityIndex, Certificate, Payload, Request, Round, SignedHeader};

use super::World;
use crate::rng::SimRng;
use crate::Behaviour;

/// Requests a replaying or mixing driver remembers.
const HISTORY_LEN: usize = 64;

impl World {
    /// A hostile driver's request: tampered with according to its behaviour.
    pub(super) fn send_hostile(
        &mut self,
        driver: usize,
        id: u64,
        instance: usize,
        request: Request,
    ) {
        let behaviour = self.drivers[driver].behaviour;
        self.drivers[driver]
            .in_flight
            .insert(id, request.body.clone());
        match behaviour {
            Behaviour::OmitLeader => self.omit_leader(driver, id, instance, request),
            Behaviour::ReplayBundles => self.replay(driver, id, instance, request),
            Behaviour::ReorderBundles => self.reorder(driver, id, instance, request),
            Behaviour::TruncateBundles => self.truncate(driver, id, instance, request),
            Behaviour::MixRounds => self.mix_rounds(driver, id, instance, request),
            Behaviour::Garbage => self.garbage(driver, id, instance, &request),
            Behaviour::ForgedFills => self.forge_fill_step(driver, id, instance, request),
            _ => self.send_bytes(driver, instance, id, request.to_bytes()),
        }
    }

    /// Drops the leader's header and certificates from the bundle.
    fn omit_leader(&mut self, driver: usize, id: u64, instance: usize, mut request: Request) {
        let schedule = self.schedule.clone();
        let is_leader = |round: Round, author: AuthorityIndex| {
            round.0 % 2 == 0 && schedule.leader(round) == author
        };
        match &mut request.body {
            RequestBody::HeaderBundle {
                headers, parents, ..
            } => {
                headers.retain(|h| !is_leader(h.header.round(), h.header.author()));
                parents.retain(|c| !is_leader(c.round(), c.author()));
            }
            RequestBody::CertBundle {
                certificates,
                parents,
                ..
            } => {
                certificates.retain(|c| !is_leader(c.round(), c.author()));
                parents.retain(|c| !is_leader(c.round(), c.author()));
            }
            RequestBody::Sync { certificates, .. } => {
                certificates.retain(|c| !is_leader(c.round(), c.author()))
            }
            _ => {}
        }
        self.send_bytes(driver, instance, id, request.to_bytes());
    }

    /// Sends the request, and half the time an old one again to a random core.
    fn replay(&mut self, driver: usize, id: u64, instance: usize, request: Request) {
        self.send_bytes(driver, instance, id, request.to_bytes());
        let history = &self.drivers[driver].history;
        if !history.is_empty() && self.rng.chance(500) {
            let old = history[self.rng.index(history.len())].clone();
            let core = AuthorityIndex(self.rng.index(self.committee.size()) as u16);
            if let Some(target) = self.route(driver, core) {
                let replay_id = self.rng.next_u64() | (1 << 63);
                self.send_bytes(driver, target, replay_id, old.to_bytes());
            }
        }
        self.remember(driver, request);
    }

    /// Shuffles the bundle's lists and holds the request back; releases the held ones, shuffled,
    /// once four are held (or now and then).
    fn reorder(&mut self, driver: usize, id: u64, instance: usize, mut request: Request) {
        for mut list in bundle_lists(&mut request.body) {
            list.shuffle(&mut self.rng);
        }
        let bytes = request.to_bytes();
        self.drivers[driver].held.push((instance, id, bytes));
        if self.drivers[driver].held.len() >= 4 || self.rng.chance(200) {
            let mut held = std::mem::take(&mut self.drivers[driver].held);
            shuffle(&mut self.rng, &mut held);
            for (instance, id, bytes) in held {
                self.send_bytes(driver, instance, id, bytes);
            }
        }
    }

    /// Half the time cuts the encoding short; otherwise cuts each list of the bundle.
    fn truncate(&mut self, driver: usize, id: u64, instance: usize, mut request: Request) {
        if self.rng.chance(500) {
            let bytes = request.to_bytes();
            let cut = self.rng.index(bytes.len().max(1));
            self.send_bytes(driver, instance, id, bytes.slice(..cut));
            return;
        }
        for mut list in bundle_lists(&mut request.body) {
            let keep = self.rng.index(list.len() + 1);
            list.truncate(keep);
        }
        self.send_bytes(driver, instance, id, request.to_bytes());
    }

    /// Adds to the request the items of an earlier one (other rounds).
    fn mix_rounds(&mut self, driver: usize, id: u64, instance: usize, request: Request) {
        let old = {
            let history = &self.drivers[driver].history;
            (!history.is_empty()).then(|| history[self.rng.index(history.len())].clone())
        };
        let mut mixed = request.clone();
        if let Some(old) = old {
            mix(&mut mixed.body, old.body);
        }
        self.send_bytes(driver, instance, id, mixed.to_bytes());
        self.remember(driver, request);
    }

    /// Half the time random bytes; otherwise the encoding with a few bits flipped.
    fn garbage(&mut self, driver: usize, id: u64, instance: usize, request: &Request) {
        let bytes = if self.rng.chance(500) {
            let len = self.rng.index(2_048);
            Bytes::from(
                (0..len)
                    .map(|_| self.rng.next_u64() as u8)
                    .collect::<Vec<_>>(),
            )
        } else {
            let mut bytes = request.to_bytes().to_vec();
            for _ in 0..=self.rng.index(8) {
                let at = self.rng.index(bytes.len().max(1));
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= 1 << self.rng.index(8);
                }
            }
            Bytes::from(bytes)
        };
        self.send_bytes(driver, instance, id, bytes);
    }

    /// Keeps the driver's latest bundles and syncs (what replaying and mixing draw from).
    pub(super) fn remember(&mut self, driver: usize, request: Request) {
        let history = &mut self.drivers[driver].history;
        if matches!(
            request.body,
            RequestBody::HeaderBundle { .. }
                | RequestBody::CertBundle { .. }
                | RequestBody::Sync { .. }
        ) {
            history.push_back(request);
            if history.len() > HISTORY_LEN {
                history.pop_front();
            }
        }
    }

    /// A Byzantine driver: a certificate for a real (author, round) over a different header, with
    /// garbage signatures from every validator. Honest cores must refuse it.
    pub(super) fn forge(&mut self, driver: usize) {
        let Some(state) = self.drivers[driver].state.as_ref() else {
            return;
        };
        let author = AuthorityIndex(self.rng.index(self.committee.size()) as u16);
        let Some(real) = state.own_header_of(author).cloned() else {
            return;
        };
        let h = &real.header;
        let fake = Header::new(
            h.instance(),
            h.round(),
            h.author(),
            h.parents().to_vec(),
            h.payload(),
            h.created_at_ms() + 1,
        );
        let certificate = Certificate {
            header: fake,
            signers: self.committee.indices().collect(),
            signatures: vec![Signature([7; 64]); self.committee.size()],
        };
        let body = RequestBody::CertBundle {
            round: h.round(),
            certificates: vec![certificate],
            parents: Vec::new(),
            payloads: Vec::new(),
        };
        for core in self.committee.indices().collect::<Vec<_>>() {
            let id = self.rng.next_u64() | (1 << 63);
            let request = Request {
                instance: self.committee.instance(),
                body: body.clone(),
            };
            self.send_request(driver, id, core, request);
        }
    }
}

/// Appends the items of `old` to the matching lists of `body`: headers and certificates of other
/// rounds, and an old bundle's certificates as parents.
fn mix(body: &mut RequestBody, old: RequestBody) {
    match (body, old) {
        (
            RequestBody::HeaderBundle {
                headers, parents, ..
            },
            RequestBody::HeaderBundle {
                headers: old_headers,
                parents: old_parents,
                ..
            },
        ) => {
            headers.extend(old_headers);
            parents.extend(old_parents);
        }
        (
            RequestBody::CertBundle {
                certificates,
                parents,
                ..
            },
            RequestBody::CertBundle {
                certificates: old_certificates,
                parents: old_parents,
                ..
            },
        ) => {
            certificates.extend(old_certificates);
            parents.extend(old_parents);
        }
        (
            RequestBody::HeaderBundle { parents, .. },
            RequestBody::CertBundle { certificates, .. },
        ) => parents.extend(certificates),
        (RequestBody::CertBundle { parents, .. }, RequestBody::Sync { certificates, .. }) => {
            parents.extend(certificates)
        }
        _ => {}
    }
}

/// Fisher–Yates, from the run's generator.
fn shuffle<T>(rng: &mut SimRng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = rng.index(i + 1);
        v.swap(i, j);
    }
}

/// One list of a bundle, whatever its item type (what hostile drivers shuffle and cut).
enum List<'a> {
    Headers(&'a mut Vec<SignedHeader>),
    Certificates(&'a mut Vec<Certificate>),
    Payloads(&'a mut Vec<Payload>),
}

impl List<'_> {
    fn len(&self) -> usize {
        match self {
            List::Headers(v) => v.len(),
            List::Certificates(v) => v.len(),
            List::Payloads(v) => v.len(),
        }
    }
    fn shuffle(&mut self, rng: &mut SimRng) {
        match self {
            List::Headers(v) => shuffle(rng, v),
            List::Certificates(v) => shuffle(rng, v),
            List::Payloads(v) => shuffle(rng, v),
        }
    }
    fn truncate(&mut self, len: usize) {
        match self {
            List::Headers(v) => v.truncate(len),
            List::Certificates(v) => v.truncate(len),
            List::Payloads(v) => v.truncate(len),
        }
    }
}

/// The lists of a header bundle, certificate bundle or sync request (none for other requests).
fn bundle_lists(body: &mut RequestBody) -> Vec<List<'_>> {
    match body {
        RequestBody::HeaderBundle {
            headers,
            parents,
            payloads,
            ..
        } => vec![
            List::Headers(headers),
            List::Certificates(parents),
            List::Payloads(payloads),
        ],
        RequestBody::CertBundle {
            certificates,
            parents,
            payloads,
            ..
        } => vec![
            List::Certificates(certificates),
            List::Certificates(parents),
            List::Payloads(payloads),
        ],
        RequestBody::Sync {
            certificates,
            payloads,
        } => vec![List::Certificates(certificates), List::Payloads(payloads)],
        _ => Vec::new(),
    }
}
