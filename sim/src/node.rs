//! A simulated core process: a real [`Core`] behind a real [`Verifier`], with a simulated disk.
//!
//! Each request's writes join a group; a group is synced after a simulated disk delay, and the
//! replies of its requests are released only then, in order (group commit). A reply with no
//! writes still waits for every earlier write. A crash drops the in-memory core and every write
//! not yet synced; a restart rebuilds the core from what was synced.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use sleepyseal_core::codec::{Decode, Encode};
use sleepyseal_core::committee::LeaderSchedule;
use sleepyseal_core::store::MemStore;
use sleepyseal_core::{
    Committee, Core, CoreConfig, CoreError, KeyPair, Millis, Request, Response, Store, Verifier,
    WriteBatch,
};

/// An amnesiac core forgets everything after this many requests.
const AMNESIA_EVERY: u64 = 150;

/// A reply waiting for its writes to be durable.
#[derive(Debug)]
pub struct PendingReply {
    /// Who asked (driver or client actor id).
    pub to: usize,
    /// The request id.
    pub id: u64,
    /// The reply, encoded.
    pub reply: Bytes,
}

/// A simulated core process.
pub struct SimCore {
    /// Index in the committee.
    pub index: u16,
    /// Key seed, to rebuild the key on restart.
    key_seed: u64,
    committee: Arc<Committee>,
    schedule: Arc<dyn LeaderSchedule>,
    config: CoreConfig,
    verifier: Verifier,
    /// The running core, `None` while crashed.
    pub core: Option<Core>,
    /// What survived: synced writes only.
    pub durable: MemStore,
    /// Writes and replies of requests handled since the last sync started.
    queued: Vec<(WriteBatch, PendingReply)>,
    /// The group being synced, released when its sync completes.
    syncing: Option<Vec<(WriteBatch, PendingReply)>>,
    /// Bumped on every crash, so a sync that completes after a crash is ignored.
    pub epoch: u64,
    /// Negative control: release replies before their writes are durable.
    pub reply_before_write: bool,
    /// How this core misbehaves (honest by default).
    pub behaviour: crate::Behaviour,
    /// Requests handled (Amnesia's clock).
    handled: u64,
    /// Earlier replies by kind (StaleReplies): the oldest is answered instead of the current.
    stale: std::collections::HashMap<u8, VecDeque<Response>>,
    /// Randomness of the misbehaviours that craft headers.
    rng: crate::SimRng,
}

/// What handling a request produced.
pub enum Handled {
    /// Reply now (nothing pending).
    ReplyNow(PendingReply),
    /// Queued behind a sync; start one if `start_sync`.
    Queued {
        /// Whether no sync is running, so the caller must schedule one.
        start_sync: bool,
        /// With the reply-before-write mutant, the reply to release right away.
        early: Option<PendingReply>,
    },
    /// The core is down: the request is lost.
    Down,
}

impl SimCore {
    /// A fresh core.
    pub fn new(
        index: u16,
        key_seed: u64,
        committee: Arc<Committee>,
        schedule: Arc<dyn LeaderSchedule>,
        config: CoreConfig,
        verifier: Verifier,
    ) -> SimCore {
        let mut node = SimCore {
            index,
            key_seed,
            committee,
            schedule,
            config,
            verifier,
            core: None,
            durable: MemStore::new(),
            queued: Vec::new(),
            syncing: None,
            epoch: 0,
            reply_before_write: false,
            behaviour: crate::Behaviour::Honest,
            handled: 0,
            stale: std::collections::HashMap::new(),
            rng: crate::SimRng::new(key_seed ^ (u64::from(index) << 40) ^ 0xB42),
        };
        node.restart();
        node
    }

    /// Stops the process: memory and unsynced writes are lost.
    pub fn crash(&mut self) {
        self.core = None;
        self.queued.clear();
        self.syncing = None;
        self.epoch += 1;
    }

    /// Starts the process from its durable store.
    pub fn restart(&mut self) {
        let entries = self.durable.load().expect("memory store loads");
        let key = KeyPair::deterministic(self.key_seed, self.index);
        let core = Core::recover(
            self.committee.clone(),
            self.schedule.clone(),
            key,
            self.config.clone(),
            entries,
        )
        .expect("a core recovers from its own store");
        self.core = Some(core);
    }

    /// Decodes, verifies and handles a request.
    pub fn handle(&mut self, now: Millis, from: usize, id: u64, bytes: Bytes) -> Handled {
        let Some(core) = self.core.as_mut() else {
            return Handled::Down;
        };
        let (response, batch) = match Request::from_bytes(bytes) {
            Err(e) => (Response::Error(CoreError::Decode(e)), WriteBatch::new()),
            Ok(request) => match self.verifier.verify(request) {
                Err(e) => (Response::Error(e), WriteBatch::new()),
                Ok(verified) => core.handle(now, verified),
            },
        };
        let response = self.misbehave(response);
        if self.behaviour == crate::Behaviour::Amnesia {
            self.handled += 1;
            if self.handled % AMNESIA_EVERY == 0 {
                // Forget everything, durable state included, and start over.
                self.durable = MemStore::new();
                self.queued.clear();
                self.syncing = None;
                self.epoch += 1;
                self.restart();
            }
        }
        let reply = PendingReply {
            to: from,
            id,
            reply: response.to_bytes(),
        };
        if batch.is_empty() && self.queued.is_empty() && self.syncing.is_none() {
            return Handled::ReplyNow(reply);
        }
        if self.reply_before_write {
            let early = PendingReply {
                to: reply.to,
                id: reply.id,
                reply: reply.reply.clone(),
            };
            self.queued.push((
                batch,
                PendingReply {
                    reply: Bytes::new(),
                    ..reply
                },
            ));
            let start_sync = self.syncing.is_none();
            return Handled::Queued {
                start_sync,
                early: Some(early),
            };
        }
        self.queued.push((batch, reply));
        Handled::Queued {
            start_sync: self.syncing.is_none(),
            early: None,
        }
    }

    /// Seeds the randomness of the misbehaviours with the run's seed.
    pub fn seed_misbehaviour(&mut self, seed: u64) {
        self.rng = crate::SimRng::new(seed ^ (u64::from(self.index) << 40) ^ 0xB42);
    }

    /// Applies this core's misbehaviour to a reply.
    fn misbehave(&mut self, response: Response) -> Response {
        use crate::Behaviour;
        fn corrupt(sig: &mut sleepyseal_core::Signature) {
            sig.0[0] ^= 0x5a;
        }
        fn strip_header(s: &mut sleepyseal_core::Summary) {
            s.own_header = None;
            s.own_payload = None;
        }
        match (self.behaviour, response) {
            (
                Behaviour::WithholdVotes,
                Response::Votes {
                    rejected, summary, ..
                },
            ) => Response::Votes {
                votes: Vec::new(),
                rejected,
                summary,
            },
            (Behaviour::WithholdHeaders, Response::Summary(mut s)) => {
                strip_header(&mut s);
                Response::Summary(s)
            }
            (
                Behaviour::WithholdHeaders,
                Response::Votes {
                    votes,
                    rejected,
                    mut summary,
                },
            ) => {
                strip_header(&mut summary);
                Response::Votes {
                    votes,
                    rejected,
                    summary,
                }
            }
            (Behaviour::InvalidSignatures, mut r) => {
                let summary = match &mut r {
                    Response::Summary(s) => Some(s),
                    Response::Votes { votes, summary, .. } => {
                        votes.iter_mut().for_each(|v| corrupt(&mut v.signature));
                        Some(summary)
                    }
                    _ => None,
                };
                if let Some(s) = summary {
                    s.votes.iter_mut().for_each(|v| corrupt(&mut v.signature));
                    if let Some(h) = s.own_header.as_mut() {
                        corrupt(&mut h.signature);
                    }
                }
                r
            }
            (Behaviour::StaleReplies, r) => {
                let kind = match &r {
                    Response::Summary(_) => 0,
                    Response::Votes { .. } => 1,
                    _ => return r,
                };
                let earlier = self.stale.entry(kind).or_default();
                earlier.push_back(r);
                if earlier.len() > 8 {
                    earlier.pop_front().expect("not empty")
                } else {
                    earlier.front().cloned().expect("not empty")
                }
            }
            (
                Behaviour::FarFutureRounds | Behaviour::BadParents | Behaviour::BadPayloads,
                mut r,
            ) => {
                if let Response::Summary(s) | Response::Votes { summary: s, .. } = &mut r {
                    if s.own_header.is_some() && self.rng.chance(500) {
                        self.craft(s);
                    }
                }
                r
            }
            (_, r) => r,
        }
    }

    /// Replaces the own header of `s` by one wrong in this core's way, validly signed with its
    /// key: honest cores must refuse it with a typed error and stay safe.
    fn craft(&mut self, s: &mut sleepyseal_core::Summary) {
        use sleepyseal_core::messages::{Header, ParentRef, PayloadRef};
        use sleepyseal_core::{Digest, Payload, Round};
        let real = &s.own_header.as_ref().expect("checked by the caller").header;
        let mut round = real.round();
        let mut parents = real.parents().to_vec();
        let mut payload = real.payload();
        let random_digest = |rng: &mut crate::SimRng| {
            let mut d = [0u8; 32];
            for chunk in d.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            Digest(d)
        };
        match self.behaviour {
            crate::Behaviour::FarFutureRounds => {
                round = if self.rng.chance(100) {
                    Round(u64::MAX - self.rng.range(0, 2))
                } else {
                    Round(round.0 + self.rng.range(2, 5_000))
                };
            }
            crate::Behaviour::BadParents => match self.rng.index(3) {
                0 => parents.truncate(self.rng.index(parents.len().max(1))),
                1 => {
                    let i = self.rng.index(parents.len().max(1));
                    if let Some(p) = parents.get_mut(i) {
                        p.digest = random_digest(&mut self.rng);
                    }
                }
                _ => parents.push(ParentRef {
                    author: sleepyseal_core::AuthorityIndex(
                        self.rng.index(self.committee.size()) as u16
                    ),
                    digest: random_digest(&mut self.rng),
                }),
            },
            _ => match self.rng.index(3) {
                // A reference to bytes nobody has (the carried payload does not match).
                0 => payload.digest = random_digest(&mut self.rng),
                // Above the payload limit.
                1 => {
                    payload = PayloadRef {
                        digest: random_digest(&mut self.rng),
                        len: sleepyseal_core::limits::MAX_PAYLOAD_BYTES as u32
                            + 1
                            + self.rng.range(0, 1_000) as u32,
                    }
                }
                // A real reference with other bytes carried beside it.
                _ => {
                    let other =
                        Payload::from_transactions([&self.rng.next_u64().to_le_bytes()[..]]);
                    s.own_payload = Some(other);
                }
            },
        }
        let header = Header::new(
            real.instance(),
            round,
            real.author(),
            parents,
            payload,
            real.created_at_ms(),
        );
        if self.behaviour == crate::Behaviour::FarFutureRounds {
            // The summary's round is unsigned: claim the far-future round there too.
            s.round = round;
        }
        let key = KeyPair::deterministic(self.key_seed, self.index);
        s.own_header = Some(sleepyseal_core::testkit::sign_header(&key, header));
    }

    /// Starts syncing the queued group. Returns false if there is nothing to sync.
    pub fn start_sync(&mut self) -> bool {
        if self.syncing.is_some() || self.queued.is_empty() {
            return false;
        }
        self.syncing = Some(std::mem::take(&mut self.queued));
        true
    }

    /// The sync of the current group completed: apply it and release its replies.
    pub fn finish_sync(&mut self, epoch: u64) -> VecDeque<PendingReply> {
        if epoch != self.epoch {
            return VecDeque::new();
        }
        let group = self.syncing.take().unwrap_or_default();
        let batches: Vec<WriteBatch> = group.iter().map(|(b, _)| b.clone()).collect();
        self.durable.commit(&batches).expect("memory store commits");
        group
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| !r.reply.is_empty())
            .collect()
    }
}
