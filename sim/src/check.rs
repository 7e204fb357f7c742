//! The invariant checkers of PROTOCOL.md §9, run after every simulated step.
//!
//! They judge with an independent reference [`Verifier`] built with the *correct* rules, so a core
//! running a mutant (wrong quorum, no signature check) is judged by the protocol, not by itself.

mod installs;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sleepyseal_core::committee::LeaderSchedule;
use sleepyseal_core::protocol::{CommittedEntry, RequestBody, Response};
use sleepyseal_core::verify::VerifierConfig;
use sleepyseal_core::{
    AuthorityIndex, Certificate, Committee, Core, Digest, Request, Round, Verifier,
};

/// A broken invariant, with what shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant (S1..S12).
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
}

/// Per-core progress seen so far (S4, S6).
#[derive(Default)]
struct CoreTrack {
    checked_len: u64,
    committed: HashSet<Digest>,
    /// Parents that were not committed before a child: they must never be committed later.
    forbidden: HashSet<Digest>,
    round: Round,
    last_committed_round: Round,
    consensus_index: u64,
    committed_leaders: u64,
    last_leader_round: Round,
    max_gap_rounds: u64,
    /// Index of the newest checkpoint state of this core already checked (S10).
    checkpoint_checked: Option<u64>,
    /// S12: the base of the latest install and the lowest index of its gap checked so far.
    gap_checked: Option<(u64, u64)>,
    /// S11: the consensus index of the state last checked, and its per-author committed rounds,
    /// in this incarnation (a restart may fall back to an older durable state).
    state: Option<(u64, Vec<Round>)>,
}

/// The checkers' state for one simulation.
pub struct Checker {
    schedule: Arc<dyn LeaderSchedule>,
    reference: Verifier,
    /// Authors whose cores are Byzantine (twins): not held to honest-core invariants.
    byzantine: HashSet<AuthorityIndex>,
    /// S1: the first sequence seen, by index.
    log: Vec<(Digest, Digest)>,
    /// S2: certified digest per (author, round).
    certified: HashMap<(AuthorityIndex, Round), Digest>,
    /// Reference verdicts by hash of the certificate's encoding.
    valid: HashMap<Digest, bool>,
    /// Per instance, a valid copy of every certificate carried to it: S4 judges a committed
    /// certificate that garbage collection dropped from the core's DAG and its retention window
    /// in the same step by it (the core's own copy is judged whenever it still has one).
    carried: Vec<HashMap<Digest, Certificate>>,
    /// S3: digest signed per (voter, author, round) by honest cores.
    signed: HashMap<(AuthorityIndex, AuthorityIndex, Round), Digest>,
    /// Header (author, round) by digest, from everything seen.
    headers: HashMap<Digest, (AuthorityIndex, Round)>,
    /// S1: committed leaders by round.
    leaders: HashMap<Round, Digest>,
    /// S8: committed leaders seen with support ≥ V at L + 1, by round.
    supported_leaders: HashMap<Round, Digest>,
    /// S10: the digest of the checkpoint state honest cores signed, by consensus index.
    checkpoints: HashMap<u64, Digest>,
    /// S11: the digest of the whole consensus state (per-author committed rounds included)
    /// honest cores held, by consensus index.
    states: HashMap<u64, Digest>,
    tracks: Vec<CoreTrack>,
    /// Everything found.
    pub violations: Vec<Violation>,
}

impl Checker {
    /// Checkers for `committee`; `byzantine` authors are exempt from honest-core invariants.
    pub fn new(
        committee: Arc<Committee>,
        schedule: Arc<dyn LeaderSchedule>,
        byzantine: HashSet<AuthorityIndex>,
        instances: usize,
    ) -> Checker {
        Checker {
            reference: Verifier::new(committee, VerifierConfig::default()),
            schedule,
            byzantine,
            log: Vec::new(),
            certified: HashMap::new(),
            valid: HashMap::new(),
            carried: vec![HashMap::new(); instances],
            signed: HashMap::new(),
            headers: HashMap::new(),
            leaders: HashMap::new(),
            supported_leaders: HashMap::new(),
            checkpoints: HashMap::new(),
            states: HashMap::new(),
            tracks: (0..instances).map(|_| CoreTrack::default()).collect(),
            violations: Vec::new(),
        }
    }

    pub(crate) fn fail(&mut self, invariant: &'static str, detail: String) {
        if self.violations.len() < 32 {
            self.violations.push(Violation { invariant, detail });
        }
    }

    /// Checkpoint states signed by honest cores, counted once per index.
    pub fn checkpoints_seen(&self) -> u64 {
        self.checkpoints.len() as u64
    }

    /// Fewest committed leaders and largest gap between successive committed leader rounds
    /// over the given instances.
    pub fn liveness(&self, instances: &[usize]) -> (u64, u64) {
        let min = instances
            .iter()
            .map(|i| self.tracks[*i].committed_leaders)
            .min()
            .unwrap_or(0);
        let gap = instances
            .iter()
            .map(|i| self.tracks[*i].max_gap_rounds)
            .max()
            .unwrap_or(0);
        (min, gap)
    }

    /// Learns header digests from a request before it is delivered.
    pub fn observe_request(&mut self, request: &Request) {
        if let RequestBody::HeaderBundle { headers, .. } = &request.body {
            for h in headers {
                self.headers
                    .insert(h.header.digest(), (h.header.author(), h.header.round()));
            }
        }
    }

    /// S3 and S6 on every reply leaving an honest core instance. S6 is judged on released
    /// replies: state a core held only in memory before a crash was never exposed.
    pub fn observe_reply(&mut self, instance: usize, core: AuthorityIndex, response: &Response) {
        if self.byzantine.contains(&core) {
            return;
        }
        if let Response::Summary(s) | Response::Votes { summary: s, .. } = response {
            self.check_monotonic(instance, s);
        }
        let (votes, summary) = match response {
            Response::Votes { votes, summary, .. } => (votes.as_slice(), Some(summary)),
            Response::Summary(summary) => (&[][..], Some(summary)),
            _ => return,
        };
        let mut signatures: Vec<(Digest, AuthorityIndex, Round)> = Vec::new();
        if let Some(s) = summary {
            if let Some(own) = &s.own_header {
                let (d, a, r) = (own.header.digest(), own.header.author(), own.header.round());
                self.headers.insert(d, (a, r));
                signatures.push((d, a, r));
            }
            for v in &s.votes {
                if let Some((a, r)) = self.headers.get(&v.header_digest) {
                    signatures.push((v.header_digest, *a, *r));
                }
            }
        }
        for v in votes {
            if let Some((a, r)) = self.headers.get(&v.header_digest) {
                signatures.push((v.header_digest, *a, *r));
            }
        }
        for (digest, author, round) in signatures {
            let previous = *self.signed.entry((core, author, round)).or_insert(digest);
            if previous != digest {
                self.fail(
                    "S3",
                    format!("{core} signed {previous:?} and {digest:?} for ({author}, {round})"),
                );
            }
        }
    }

    /// S6: round, last committed round and consensus index never decrease.
    fn check_monotonic(&mut self, instance: usize, s: &sleepyseal_core::Summary) {
        let t = &self.tracks[instance];
        if s.round < t.round
            || s.last_committed_round < t.last_committed_round
            || s.consensus_index < t.consensus_index
        {
            let detail = format!(
                "core {instance}: round {}→{}, committed {}→{}, index {}→{}",
                t.round,
                s.round,
                t.last_committed_round,
                s.last_committed_round,
                t.consensus_index,
                s.consensus_index
            );
            self.fail("S6", detail);
        }
        let t = &mut self.tracks[instance];
        t.round = t.round.max(s.round);
        t.last_committed_round = t.last_committed_round.max(s.last_committed_round);
        t.consensus_index = t.consensus_index.max(s.consensus_index);
    }

    /// Reference validity of a certificate (cached).
    fn is_valid(&mut self, c: &Certificate) -> bool {
        // Keyed by the whole encoding: a copy with other signatures has the same digest.
        let key = sleepyseal_core::hash::Hasher::new(b"SEAL/SIM/VALID/v1")
            .update(&sleepyseal_core::codec::Encode::to_bytes(c))
            .finish();
        if let Some(v) = self.valid.get(&key) {
            return *v;
        }
        let ok = self
            .reference
            .check_certificates(std::slice::from_ref(c), None)
            .is_ok();
        self.valid.insert(key, ok);
        ok
    }

    /// Checks the certificates a request carried that are now in the core's DAG (S2, S5, S8).
    pub fn after_insert(&mut self, instance: usize, core: &Core, request: &Request) {
        let carried: Vec<&Certificate> = match &request.body {
            RequestBody::HeaderBundle { parents, .. } => parents.iter().collect(),
            RequestBody::CertBundle {
                certificates,
                parents,
                ..
            } => certificates.iter().chain(parents).collect(),
            RequestBody::Sync { certificates, .. } => certificates.iter().collect(),
            _ => return,
        };
        let honest = !self.byzantine.contains(&core.index());
        for c in &carried {
            if c.round() != Round::GENESIS
                && !self.carried[instance].contains_key(&c.digest())
                && self.is_valid(c)
            {
                self.carried[instance].insert(c.digest(), Certificate::clone(c));
            }
        }
        for c in carried {
            if c.round() == Round::GENESIS {
                continue;
            }
            // In the DAG, or (inserted and garbage-collected in the same step) in the archive.
            let (stored, in_dag) = match core.dag().get(&c.digest()) {
                Some(stored) => (Certificate::clone(stored), true),
                None => match core.archived(c.round(), &c.digest()) {
                    Some(stored) => (stored.clone(), false),
                    None => continue,
                },
            };
            if honest && !self.is_valid(&stored) {
                self.fail(
                    "S2",
                    format!(
                        "core {instance} inserted invalid certificate {:?}",
                        c.digest()
                    ),
                );
            }
            let slot = (c.author(), c.round());
            let first = *self.certified.entry(slot).or_insert(c.digest());
            if first != c.digest() && self.is_valid(&stored) {
                self.fail(
                    "S2",
                    format!("two certificates for {slot:?}: {first:?}, {:?}", c.digest()),
                );
            }
            if honest && in_dag {
                self.check_parents_stored(instance, core, &stored);
                self.check_links_to_leader(instance, core, &stored);
            }
        }
    }

    /// S5: parents above the floor are stored.
    fn check_parents_stored(&mut self, instance: usize, core: &Core, c: &Certificate) {
        if c.round().prev() < core.dag().floor() {
            return;
        }
        if let Some(p) = c
            .header
            .parents()
            .iter()
            .find(|p| !core.dag().contains(&p.digest))
        {
            self.fail(
                "S5",
                format!(
                    "core {instance}: {:?} lacks parent {:?}",
                    c.digest(),
                    p.digest
                ),
            );
        }
    }

    /// S8: a certificate of round r links to the newest committed leader of round ≤ r − 2 that
    /// has support ≥ V at its round + 1 (that leader links to all earlier such ones, so one path
    /// suffices).
    fn check_links_to_leader(&mut self, instance: usize, core: &Core, c: &Certificate) {
        let Some((&round, &digest)) = self
            .supported_leaders
            .iter()
            .filter(|(r, _)| r.0 + 2 <= c.round().0 && **r >= core.dag().floor())
            .max_by_key(|(r, _)| **r)
        else {
            return;
        };
        let linked = core
            .dag()
            .get(&digest)
            .is_some_and(|leader| core.dag().linked(c, leader));
        if !linked {
            self.fail(
                "S8",
                format!(
                    "core {instance}: {:?} at {} has no path to leader {digest:?} at {round}",
                    c.digest(),
                    c.round()
                ),
            );
        }
    }

    /// The instance restarted from its store: its next state is judged against what honest
    /// cores held, not against its state before the crash (unsynced writes are lost).
    pub fn restarted(&mut self, instance: usize) {
        self.tracks[instance].state = None;
    }

    /// S1, S4, S6, S10–S12 on an honest instance's committed sequence and counters.
    pub fn after_step(&mut self, instance: usize, core: &Core) {
        if self.byzantine.contains(&core.index()) {
            return;
        }
        self.check_state(instance, core);
        let mut from = self.tracks[instance].checked_len;
        if let Some(record) = core.install_record() {
            if record.base_index > from {
                self.check_install(instance, core, record.base_index, record.base_hash);
                from = record.base_index;
                self.tracks[instance].checked_len = from;
            }
        }
        let entries = match core.committed_from(from, usize::MAX) {
            Ok(entries) => entries,
            Err(first) => {
                let detail =
                    format!("instance {instance}: entries {from}..{first} evicted unchecked");
                self.fail("S1", detail);
                return;
            }
        };
        for e in entries {
            self.check_entry(instance, core, &e);
        }
        self.check_checkpoints(instance, core);
        self.check_filled(instance, core);
    }

    /// S1, S4 (and S8 for a leader) on one newly committed entry of an honest instance.
    fn check_entry(&mut self, instance: usize, core: &Core, e: &CommittedEntry) {
        self.check_prefix(instance, e);
        self.check_certificate(instance, core, e);
        self.check_once_in_order(instance, e);
        if e.is_leader {
            self.check_leader(instance, core, e);
        }
    }

    /// S1: prefix agreement with the first sequence seen.
    fn check_prefix(&mut self, instance: usize, e: &CommittedEntry) {
        let index = e.index as usize;
        if index < self.log.len() {
            if self.log[index] != (e.digest, e.commit_hash) {
                self.fail(
                    "S1",
                    format!(
                        "core {instance} index {index}: {:?} vs {:?}",
                        e.digest, self.log[index].0
                    ),
                );
            }
        } else {
            assert_eq!(index, self.log.len(), "entries arrive in order");
            self.log.push((e.digest, e.commit_hash));
        }
    }

    /// S4: the committed certificate is valid, and its uncommitted parents may never be
    /// committed after it.
    fn check_certificate(&mut self, instance: usize, core: &Core, e: &CommittedEntry) {
        // The core's own copy (DAG, or archive below the floor); failing that, once garbage
        // collection dropped it, the valid copy this instance was carried.
        let own = core
            .dag()
            .get(&e.digest)
            .map(|c| Certificate::clone(c))
            .or_else(|| core.archived(e.round, &e.digest).cloned());
        let dropped = own.is_none() && e.round < core.gc_round();
        let certificate = own.or_else(|| {
            dropped
                .then(|| self.carried[instance].get(&e.digest).cloned())
                .flatten()
        });
        let Some(c) = certificate else {
            self.fail(
                "S4",
                format!("core {instance} committed {:?} not in its DAG", e.digest),
            );
            return;
        };
        if !dropped && !self.is_valid(&c) {
            self.fail(
                "S4",
                format!("core {instance} committed invalid {:?}", e.digest),
            );
        }
        let t = &mut self.tracks[instance];
        for p in c.header.parents() {
            if !t.committed.contains(&p.digest) {
                t.forbidden.insert(p.digest);
            }
        }
    }

    /// S4: committed once, not after a child; and the instance's progress (S6, liveness).
    fn check_once_in_order(&mut self, instance: usize, e: &CommittedEntry) {
        let t = &mut self.tracks[instance];
        let once = t.committed.insert(e.digest);
        let order_ok = !t.forbidden.contains(&e.digest);
        t.checked_len += 1;
        if e.is_leader {
            t.committed_leaders += 1;
            t.max_gap_rounds = t
                .max_gap_rounds
                .max(e.round.0.saturating_sub(t.last_leader_round.0));
            t.last_leader_round = e.round;
        }
        if !once {
            self.fail(
                "S4",
                format!("core {instance} committed {:?} twice", e.digest),
            );
        }
        if !order_ok {
            self.fail(
                "S4",
                format!("core {instance} committed {:?} after a child", e.digest),
            );
        }
    }

    /// S4: a committed leader is leader(L); S1: one leader per round across instances; S8.
    fn check_leader(&mut self, instance: usize, core: &Core, e: &CommittedEntry) {
        if !e.round.is_leader_round() || self.schedule.leader(e.round) != e.author {
            self.fail(
                "S4",
                format!("core {instance}: {:?} is not leader({})", e.digest, e.round),
            );
        }
        let known = *self.leaders.entry(e.round).or_insert(e.digest);
        if known != e.digest {
            self.fail("S1", format!("two leaders committed at {}", e.round));
        }
        self.check_dag_links(instance, core, e.round, e.digest);
    }

    /// S8 at commit time: if the leader has support ≥ V at L + 1 (what a direct commit needs),
    /// everything already in the DAG at ≥ L + 2 links to it. A leader committed only through a
    /// later leader's path may lack that support; certificates need not link to it.
    fn check_dag_links(&mut self, instance: usize, core: &Core, round: Round, digest: Digest) {
        let Some(leader) = core.dag().get(&digest).cloned() else {
            return;
        };
        let committee = core.committee();
        let support = committee
            .stake_of(
                core.dag()
                    .round(round.next())
                    .filter(|c| c.header.has_parent(&digest))
                    .map(|c| c.author()),
            )
            .unwrap_or_default();
        if support < committee.validity_threshold() {
            return;
        }
        self.supported_leaders.insert(round, digest);
        let later: Vec<_> = core.dag().above(Round(round.0 + 1)).cloned().collect();
        if let Some(c) = later.iter().find(|c| !core.dag().linked(c, &leader)) {
            self.fail(
                "S8",
                format!(
                    "core {instance}: {:?} has no path to committed leader at {round}",
                    c.digest()
                ),
            );
        }
    }
}
