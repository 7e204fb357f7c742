//! The core under test and what the checks remember about it: every request goes through
//! decode, verify and handle as in the server, under the allocation bound; every reply is checked
//! (it decodes, no double vote, no second own header for a round, progress only grows); a restart
//! must recover the core that stopped, from its durable store reopened from disk.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use sleepyseal_core::codec::{Decode, Encode};
use sleepyseal_core::committee::{default_schedule, ProtocolConstants};
use sleepyseal_core::limits::MAX_MESSAGE_BYTES;
use sleepyseal_core::messages::SignedHeader;
use sleepyseal_core::protocol::{CommittedEntry, RequestBody, Response};
use sleepyseal_core::store::MemStore;
use sleepyseal_core::testkit;
use sleepyseal_core::verify::VerifierConfig;
use sleepyseal_core::{
    AuthorityIndex, Committee, Core, CoreConfig, Digest, KeyPair, Millis, Request, Round, Store,
    Verifier,
};

use super::durable::Durable;
use super::pool::pool;
use super::{check_alloc, measure, ALLOC_SLACK, DECODE_ALLOC_FACTOR, HANDLE_ALLOC_BUDGET, ME};

/// The running core and what the checks remember about it.
pub(super) struct Harness {
    /// The core under test.
    pub(super) core: Core,
    /// Its store in memory (the model).
    store: MemStore,
    /// Its durable store (what a restart recovers from).
    durable: Durable,
    /// The verifier in front of it, as in the server.
    verifier: Verifier,
    /// Its committee: the pool's, with the GC_DEPTH and CHECKPOINT_INTERVAL of the input.
    committee: Arc<Committee>,
    /// Its settings.
    config: CoreConfig,
    /// Virtual time, in ms.
    pub(super) now: u64,
    /// Digest → (author, round) of every header sent to the core.
    headers_sent: HashMap<Digest, (AuthorityIndex, Round)>,
    /// (author, round) → the header digest the core voted for.
    voted: HashMap<(AuthorityIndex, Round), Digest>,
    /// Round → digest of the core's own header.
    own: HashMap<Round, Digest>,
    /// The core's latest own header.
    pub(super) last_own: Option<SignedHeader>,
    /// The committed sequence seen so far, by index.
    committed: BTreeMap<u64, CommittedEntry>,
    /// The core's round seen last.
    round: Round,
    /// The core's commit index seen last.
    consensus_index: u64,
    /// The entries of the gap the latest fabricated install left, ascending (the fill steps
    /// draw from them).
    pub(super) gap_source: Vec<CommittedEntry>,
}

impl Harness {
    /// A fresh core of the pool's committee with the input's protocol constants, on an empty
    /// store.
    pub(super) fn new(config: CoreConfig, constants: ProtocolConstants) -> Harness {
        let p = pool();
        // The pool's committee (same instance and keys), with the input's constants.
        let committee = testkit::committee_with(
            p.committee.instance(),
            &vec![1; p.committee.size()],
            constants,
        );
        assert_eq!(committee.instance(), p.committee.instance());
        let mut store = MemStore::new();
        let core = Core::recover(
            committee.clone(),
            default_schedule(&committee),
            KeyPair::deterministic(0, ME),
            config.clone(),
            store.load().expect("memory store loads"),
        )
        .expect("an empty store recovers");
        Harness {
            core,
            store,
            durable: Durable::new(),
            verifier: Verifier::new(committee.clone(), VerifierConfig::default()),
            committee,
            config,
            now: 1,
            headers_sent: HashMap::new(),
            voted: HashMap::new(),
            own: HashMap::new(),
            last_own: None,
            committed: BTreeMap::new(),
            round: Round(0),
            consensus_index: 0,
            gap_source: Vec::new(),
        }
    }

    /// Sends encoded bytes through decode, verify and handle, as the server does.
    pub(super) fn send_bytes(&mut self, bytes: Bytes) {
        let limit = DECODE_ALLOC_FACTOR * bytes.len() + ALLOC_SLACK + HANDLE_ALLOC_BUDGET;
        assert!(limit < MAX_MESSAGE_BYTES, "requests here are small");
        let now = Millis(self.now);
        let verifier = &self.verifier;
        let core = &mut self.core;
        // The (author, round) of each header offered, read from the one decoding (a few bytes
        // per header, inside the allowance).
        let (outcome, stats) = measure(|| {
            let request = Request::from_bytes(bytes.clone()).ok()?;
            let offered: Vec<(Digest, (AuthorityIndex, Round))> = match &request.body {
                RequestBody::HeaderBundle { headers, .. } => headers
                    .iter()
                    .map(|h| (h.header.digest(), (h.header.author(), h.header.round())))
                    .collect(),
                _ => Vec::new(),
            };
            let handled = match verifier.verify(request) {
                Ok(v) => core.handle(now, v),
                Err(e) => (Response::Error(e), Default::default()),
            };
            Some((offered, handled))
        });
        check_alloc("decode + verify + handle", stats, limit);
        let Some((offered, (response, batch))) = outcome else {
            return;
        };
        self.headers_sent.extend(offered);
        self.durable.commit(&batch);
        self.store.commit(&[batch]).expect("memory store commits");
        // What the driver gets: the reply decodes, to a value with the same encoding (an
        // error's free-text `what` travels as a generic label, so compare encodings).
        let wire = response.to_bytes();
        match Response::from_bytes(wire.clone()) {
            Ok(decoded) => assert_eq!(decoded.to_bytes(), wire, "a reply decodes to another"),
            Err(e) => panic!("a reply its driver cannot decode: {e}"),
        }
        self.observe(&response);
        self.check_progress();
    }

    /// Sends a request of the committee's instance.
    pub(super) fn send(&mut self, body: RequestBody) {
        let request = Request {
            instance: pool().committee.instance(),
            body,
        };
        self.send_bytes(request.to_bytes());
    }

    /// The checkpoint states served: the core's own, oldest first, each one it reached (at an
    /// index it committed through, with the commit hash it had there).
    fn check_checkpoints(&self, states: &[sleepyseal_core::checkpoint::SignedCheckpoint]) {
        assert!(
            states.len() <= sleepyseal_core::machine::KEPT_CHECKPOINTS,
            "more checkpoint states than kept"
        );
        for pair in states.windows(2) {
            assert!(pair[0].state.consensus_index < pair[1].state.consensus_index);
        }
        for s in states {
            assert_eq!(
                s.signer,
                AuthorityIndex(ME),
                "a checkpoint signed by another"
            );
            let index = s.state.consensus_index;
            assert!(
                index <= self.core.consensus().consensus_index,
                "a checkpoint beyond its commits"
            );
            if let Some(e) = index.checked_sub(1).and_then(|i| self.committed.get(&i)) {
                assert_eq!(
                    e.commit_hash, s.state.commit_hash,
                    "a checkpoint off the committed sequence"
                );
            }
        }
    }

    /// The one-vote and one-own-header checks on a reply.
    fn observe(&mut self, response: &Response) {
        let (votes, summary) = match response {
            Response::Votes {
                votes,
                summary,
                rejected,
            } => {
                for (_, error) in rejected {
                    assert!(!error.to_string().is_empty(), "a rejection without a name");
                }
                (votes.as_slice(), Some(summary))
            }
            Response::Summary(s) => (&[][..], Some(s)),
            Response::Checkpoints(states) => {
                self.check_checkpoints(states);
                (&[][..], None)
            }
            Response::Error(e) => {
                assert!(!e.to_string().is_empty(), "an error without a name");
                (&[][..], None)
            }
            _ => (&[][..], None),
        };
        let summary_votes = summary.map(|s| s.votes.as_slice()).unwrap_or_default();
        for vote in votes.iter().chain(summary_votes) {
            assert_eq!(vote.voter, AuthorityIndex(ME), "a vote by another");
            let Some(&key) = self.headers_sent.get(&vote.header_digest) else {
                continue;
            };
            let earlier = *self.voted.entry(key).or_insert(vote.header_digest);
            assert_eq!(
                earlier, vote.header_digest,
                "voted for two headers of author {} round {}",
                key.0, key.1
            );
        }
        if let Some(own) = summary.and_then(|s| s.own_header.as_ref()) {
            let round = own.header.round();
            let earlier = *self.own.entry(round).or_insert(own.header.digest());
            assert_eq!(
                earlier,
                own.header.digest(),
                "signed two own headers for {round}"
            );
            self.last_own = Some(own.clone());
        }
    }

    /// Round, commit index and the committed window only grow; seen entries never change.
    fn check_progress(&mut self) {
        let round = self.core.round();
        let index = self.core.consensus().consensus_index;
        assert!(
            round >= self.round,
            "round went back {} -> {round}",
            self.round
        );
        assert!(index >= self.consensus_index, "commit index went back");
        self.round = round;
        self.consensus_index = index;
        // The whole retained window, every step: entries seen before must not change, indices
        // ascend, every entry links to the one below it where both are held, and the window
        // ends at the commit index.
        let mut below: Option<CommittedEntry> = None;
        for e in self.core.committed_entries() {
            if let Some(b) = below {
                assert!(b.index < e.index, "committed indices not ascending");
                assert!(
                    b.index + 1 != e.index || e.links_to(&b.commit_hash),
                    "committed entry {} does not link to the one below",
                    e.index
                );
            }
            if let Some(earlier) = self.committed.insert(e.index, *e) {
                assert_eq!(earlier, *e, "committed entry {} changed", e.index);
            }
            below = Some(*e);
        }
        // Entries from the latest install's base up end at the commit index; below it, the
        // core holds what it committed before and what fills verified.
        let base = self.core.install_record().map_or(0, |r| r.base_index);
        if let Some(top) = below.filter(|e| e.index >= base) {
            assert_eq!(
                top.index + 1,
                index,
                "the committed window does not end at the commit index"
            );
        }
    }

    /// Stops the core and starts it again from its durable store, reopened from disk (and
    /// loading what the memory store holds): nothing it showed may change.
    pub(super) fn restart(&mut self) {
        let before = visible_state(&self.core);
        let entries = self.durable.reopen(&mut self.store);
        let recovered = Core::recover(
            self.committee.clone(),
            default_schedule(&self.committee),
            KeyPair::deterministic(0, ME),
            self.config.clone(),
            entries,
        );
        if let Some(reason) = self.core.halted() {
            // A core that stopped for good refuses to start on that store, saying why; the
            // stopped one stays (it answers `Halted` to everything).
            assert!(
                matches!(&recovered, Err(sleepyseal_core::machine::RecoverError::Halted(why)) if why == reason),
                "a halted core's store started again"
            );
            return;
        }
        self.core = recovered.expect("a core recovers from its own store");
        let after = visible_state(&self.core);
        assert!(
            before == after,
            "the recovered core differs from the one that stopped"
        );
    }
}

/// What a core shows that a restart must preserve: its round, consensus state, committed window
/// and pending transactions.
type VisibleState = (
    Round,
    sleepyseal_core::tusk::ConsensusState,
    u64,
    Vec<CommittedEntry>,
    Vec<Bytes>,
);

fn visible_state(core: &Core) -> VisibleState {
    let mut pending = core.pending_transactions();
    pending.sort();
    (
        core.round(),
        core.consensus().clone(),
        core.committed_base(),
        core.committed_entries().copied().collect(),
        pending,
    )
}
