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
use sleepyseal_core::limits::MAX_PAYLOAD_BYTES;
use sleepyseal_core::messages::{Header, ParentRef, PayloadRef};
use sleepyseal_core::protocol::RequestBody;
use sleepyseal_core::store::MemStore;
use sleepyseal_core::{
    AuthorityIndex, Committee, Core, CoreConfig, CoreError, Digest, KeyPair, Millis, Payload,
    Request, Response, Round, Signature, Store, Summary, Verifier, WriteBatch,
};

use crate::SimRng;

/// An amnesiac core forgets everything after this many requests.
const AMNESIA_EVERY: u64 = 150;
/// A stale-replies core answers with a reply this many replies old (of the same kind).
const STALE_REPLIES: usize = 8;

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
    /// The counters of the incarnations before the current one, added up.
    earlier: Vec<sleepyseal_core::CoreCounters>,
    /// Negative control: the core checks fills with this rule (see `planted`).
    pub fill_rule: Option<sleepyseal_core::machine::FillRule>,
    /// Negative control: an install forgets what the core signed above the checkpoint
    /// ([`crate::planted::forget_signed_at_install`]).
    pub install_resets_last_voted: bool,
    /// Negative control: an install's write loses its consensus-state record
    /// ([`crate::planted::tear_install`]).
    pub torn_install: bool,
    /// Why the core's store could not be loaded at its last start (it stays down): a store a
    /// crash left inconsistent, which atomic writes never do (S11).
    pub unrecoverable: Option<String>,
    /// Requests handled (Amnesia's clock).
    handled: u64,
    /// Earlier replies by kind (StaleReplies): the oldest is answered instead of the current.
    stale: std::collections::HashMap<u8, VecDeque<Response>>,
    /// Randomness of the misbehaviours that craft headers.
    rng: SimRng,
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
            fill_rule: None,
            install_resets_last_voted: false,
            torn_install: false,
            unrecoverable: None,
            earlier: Vec::new(),
            handled: 0,
            stale: std::collections::HashMap::new(),
            rng: SimRng::new(key_seed ^ (u64::from(index) << 40) ^ 0xB42),
        };
        node.restart();
        node
    }

    /// A count over every incarnation of this core (its counters start again at a restart).
    pub fn counters_total(&self, count: fn(&sleepyseal_core::CoreCounters) -> u64) -> u64 {
        self.earlier
            .iter()
            .chain(self.core.as_ref().map(|c| c.counters()))
            .map(count)
            .sum()
    }

    /// Stops the process: memory and unsynced writes are lost.
    pub fn crash(&mut self) {
        if let Some(core) = &self.core {
            self.earlier.push(*core.counters());
        }
        self.core = None;
        self.queued.clear();
        self.syncing = None;
        self.epoch += 1;
    }

    /// Starts the process from its durable store. A core that stopped for good (its store
    /// says why) refuses to start, as the real process does: it stays down.
    pub fn restart(&mut self) {
        let entries = self.durable.load().expect("memory store loads");
        self.recover(entries);
    }

    /// Builds the core from a store's entries (it stays down if the store says it halted).
    fn recover(&mut self, entries: Vec<(Vec<u8>, Bytes)>) {
        let key = KeyPair::deterministic(self.key_seed, self.index);
        let core = match Core::recover(
            self.committee.clone(),
            self.schedule.clone(),
            key,
            self.config.clone(),
            entries,
        ) {
            Err(sleepyseal_core::machine::RecoverError::Halted(_)) => return,
            Err(
                e @ (sleepyseal_core::machine::RecoverError::Inconsistent(_)
                | sleepyseal_core::machine::RecoverError::Decode { .. }),
            ) => {
                self.unrecoverable = Some(e.to_string());
                return;
            }
            recovered => recovered.expect("a core recovers from its own store"),
        };
        self.core = Some(match self.fill_rule {
            Some(rule) => core.with_fill_rule(rule),
            None => core,
        });
    }

    /// Decodes, verifies and handles a request.
    pub fn handle(&mut self, now: Millis, from: usize, id: u64, bytes: Bytes) -> Handled {
        let Some(core) = self.core.as_mut() else {
            return Handled::Down;
        };
        let mut certified_own = None;
        let mut install = false;
        let (response, mut batch) = match Request::from_bytes(bytes) {
            Err(e) => (Response::Error(CoreError::Decode(e)), WriteBatch::new()),
            Ok(request) => {
                install = matches!(request.body, RequestBody::InstallCheckpoint { .. });
                // Only the `install_resets_last_voted` control needs the certified round.
                if let (true, RequestBody::InstallCheckpoint { certificate }) =
                    (self.install_resets_last_voted, &request.body)
                {
                    certified_own = certificate
                        .state
                        .last_committed
                        .get(usize::from(self.index))
                        .copied();
                }
                match self.verifier.verify(request) {
                    Err(e) => (Response::Error(e), WriteBatch::new()),
                    Ok(verified) => core.handle(now, verified),
                }
            }
        };
        if let (Some(lc), Response::Summary(_)) = (certified_own, &response) {
            self.forget_signed(lc, &mut batch);
        }
        if self.torn_install && install && matches!(response, Response::Summary(_)) {
            crate::planted::tear_install(&mut batch);
        }
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

    /// The `install_resets_last_voted` control, after an install: its write also forgets what
    /// the core signed above the certified `last_committed[self]`, and the core reloads from
    /// its store with that write and every one still queued applied (its replies wait as usual).
    fn forget_signed(&mut self, certified_own: Round, batch: &mut WriteBatch) {
        let mut view = self.durable.clone();
        let pending: Vec<WriteBatch> = self
            .syncing
            .iter()
            .flatten()
            .chain(&self.queued)
            .map(|(b, _)| b.clone())
            .chain([batch.clone()])
            .collect();
        view.commit(&pending).expect("memory store commits");
        let entries = view.load().expect("memory store loads");
        let forget = crate::planted::forget_signed_at_install(
            AuthorityIndex(self.index),
            certified_own,
            &entries,
        );
        view.commit(std::slice::from_ref(&forget))
            .expect("memory store commits");
        batch.extend(forget);
        if let Some(core) = &self.core {
            self.earlier.push(*core.counters());
        }
        self.core = None;
        self.recover(view.load().expect("memory store loads"));
    }

    /// Seeds the randomness of the misbehaviours with the run's seed.
    pub fn seed_misbehaviour(&mut self, seed: u64) {
        self.rng = SimRng::new(seed ^ (u64::from(self.index) << 40) ^ 0xB42);
    }

    /// Applies this core's misbehaviour to a reply.
    fn misbehave(&mut self, response: Response) -> Response {
        use crate::Behaviour;
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
            (Behaviour::WithholdHeaders, r) => withhold_header(r),
            (Behaviour::InvalidSignatures, r) => corrupt_signatures(r),
            (Behaviour::StaleReplies, r) => self.stale_reply(r),
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

    /// Stale-round replays: keeps its latest summaries and votes by kind and answers with the
    /// oldest kept ([`STALE_REPLIES`] replies back once that many came).
    fn stale_reply(&mut self, r: Response) -> Response {
        let kind = match &r {
            Response::Summary(_) => 0,
            Response::Votes { .. } => 1,
            _ => return r,
        };
        let earlier = self.stale.entry(kind).or_default();
        earlier.push_back(r);
        if earlier.len() > STALE_REPLIES {
            earlier.pop_front().expect("not empty")
        } else {
            earlier.front().cloned().expect("not empty")
        }
    }

    /// Replaces the own header of `s` by one wrong in this core's way, validly signed with its
    /// key: honest cores must refuse it with a typed error and stay safe.
    fn craft(&mut self, s: &mut Summary) {
        let real = &s.own_header.as_ref().expect("checked by the caller").header;
        let mut round = real.round();
        let mut parents = real.parents().to_vec();
        let mut payload = real.payload();
        match self.behaviour {
            crate::Behaviour::FarFutureRounds => round = far_future(&mut self.rng, round),
            crate::Behaviour::BadParents => {
                bad_parents(&mut self.rng, self.committee.size(), &mut parents)
            }
            _ => bad_payload(&mut self.rng, &mut payload, &mut s.own_payload),
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

/// A reply without the core's own header (summaries and votes; other replies unchanged).
fn withhold_header(response: Response) -> Response {
    fn strip_header(s: &mut Summary) {
        s.own_header = None;
        s.own_payload = None;
    }
    match response {
        Response::Summary(mut s) => {
            strip_header(&mut s);
            Response::Summary(s)
        }
        Response::Votes {
            votes,
            rejected,
            mut summary,
        } => {
            strip_header(&mut summary);
            Response::Votes {
                votes,
                rejected,
                summary,
            }
        }
        r => r,
    }
}

/// A reply whose votes and own header carry corrupted signatures.
fn corrupt_signatures(mut r: Response) -> Response {
    fn corrupt(sig: &mut Signature) {
        sig.0[0] ^= 0x5a;
    }
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

/// A far-future round: now and then at the very end of the round space.
fn far_future(rng: &mut SimRng, round: Round) -> Round {
    if rng.chance(100) {
        Round(u64::MAX - rng.range(0, 2))
    } else {
        Round(round.0 + rng.range(2, 5_000))
    }
}

/// Parents cut short, one parent's digest fabricated, or a fabricated parent added.
fn bad_parents(rng: &mut SimRng, committee_size: usize, parents: &mut Vec<ParentRef>) {
    match rng.index(3) {
        0 => parents.truncate(rng.index(parents.len().max(1))),
        1 => {
            let i = rng.index(parents.len().max(1));
            if let Some(p) = parents.get_mut(i) {
                p.digest = random_digest(rng);
            }
        }
        _ => parents.push(ParentRef {
            author: AuthorityIndex(rng.index(committee_size) as u16),
            digest: random_digest(rng),
        }),
    }
}

/// A payload reference to bytes nobody has, one above the payload limit, or the real reference
/// with other bytes carried beside it (in `own_payload`).
fn bad_payload(rng: &mut SimRng, payload: &mut PayloadRef, own_payload: &mut Option<Payload>) {
    match rng.index(3) {
        0 => payload.digest = random_digest(rng),
        1 => {
            *payload = PayloadRef {
                digest: random_digest(rng),
                len: MAX_PAYLOAD_BYTES as u32 + 1 + rng.range(0, 1_000) as u32,
            }
        }
        _ => {
            let other = Payload::from_transactions([&rng.next_u64().to_le_bytes()[..]]);
            *own_payload = Some(other);
        }
    }
}

/// 32 random bytes, as a digest.
fn random_digest(rng: &mut SimRng) -> Digest {
    let mut d = [0u8; 32];
    for chunk in d.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    Digest(d)
}
