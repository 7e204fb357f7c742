//! Installing a checkpoint (PROTOCOL.md §8a.3): refusals that change nothing (`Stale`,
//! `NotNeeded`, invalid certificates), a store older than what its key signed stops the core,
//! and an install that resumes the committed sequence at the certified state, keeps `last_voted`,
//! gives own headers their verdicts, and reloads the same after a restart.

use std::sync::Arc;

use bytes::Bytes;
use sleepyseal_core::checkpoint::{checkpoint_message, CheckpointCert, SignedCheckpoint};
use sleepyseal_core::committee::{default_schedule, ProtocolConstants};
use sleepyseal_core::machine::{OwnVerdict, RecoverError};
use sleepyseal_core::messages::Vote;
use sleepyseal_core::protocol::{CommittedEntry, Gap, Request, RequestBody, Response};
use sleepyseal_core::store::MemStore;
use sleepyseal_core::testkit::{committee_with, instance, keys, vote, DagBuilder};
use sleepyseal_core::verify::VerifierConfig;
use sleepyseal_core::{
    AuthorityIndex, Certificate, Committee, Core, CoreConfig, CoreError, KeyPair, Millis, Round,
    Store, Verifier,
};

const GC_DEPTH: u64 = 4;
const INTERVAL: u64 = 4;
/// The core that falls behind.
const LATE: u16 = 3;

fn committee() -> Arc<Committee> {
    committee_with(
        instance(),
        &[1; 4],
        ProtocolConstants {
            gc_depth: GC_DEPTH,
            checkpoint_interval: INTERVAL,
        },
    )
}

fn config() -> CoreConfig {
    CoreConfig {
        retention_rounds: 2 * INTERVAL,
        leader_timeout_ms: 0,
        vote_timeout_ms: 0,
        straggler_wait_ms: 0,
        fill_timeout_ms: 1_000,
        batch_size_bytes: 1,
        ..CoreConfig::default()
    }
}

/// A core and its store.
struct Node {
    core: Core,
    store: MemStore,
    me: u16,
}

impl Node {
    fn new(c: &Arc<Committee>, me: u16) -> Node {
        let mut store = MemStore::new();
        let core = recover(c, me, &mut store);
        Node { core, store, me }
    }

    fn restart(&mut self, c: &Arc<Committee>) {
        self.core = recover(c, self.me, &mut self.store);
    }

    fn ask(&mut self, c: &Arc<Committee>, at: u64, body: RequestBody) -> Response {
        let verifier = Verifier::new(c.clone(), VerifierConfig::default());
        let request = Request {
            instance: instance(),
            body,
        };
        let verified = match verifier.verify(request) {
            Ok(v) => v,
            Err(e) => return Response::Error(e),
        };
        let (response, batch) = self.core.handle(Millis(at), verified);
        self.store.commit(&[batch]).unwrap();
        response
    }

    fn sync(&mut self, c: &Arc<Committee>, certificates: &[Certificate]) {
        let payloads = certificates
            .iter()
            .filter(|c| c.author().0 != LATE)
            .map(|c| DagBuilder::payload(c.round(), c.author()))
            .collect();
        let response = self.ask(
            c,
            1,
            RequestBody::Sync {
                certificates: certificates.to_vec(),
                payloads,
            },
        );
        assert!(!matches!(response, Response::Error(_)), "{response:?}");
    }
}

fn recover(c: &Arc<Committee>, me: u16, store: &mut MemStore) -> Core {
    Core::recover(
        c.clone(),
        default_schedule(c),
        KeyPair::deterministic(0, me),
        config(),
        store.load().unwrap(),
    )
    .unwrap()
}

/// The history: the late core takes part (its own headers, certified by everyone) for
/// `with_late` rounds, then rounds by cores 0..3 only up to `rounds`. Returns the builder and the
/// late core, which saw the history up to `seen` rounds (at least `with_late` − 1: it proposes
/// each round on the one before).
fn history(c: &Arc<Committee>, with_late: u64, seen: u64, rounds: u64) -> (DagBuilder, Node) {
    let mut b = DagBuilder::new(c.clone());
    let mut late = Node::new(c, LATE);
    let all_keys = keys(4);
    for r in 1..=rounds {
        if r <= with_late {
            // Two transactions per own header, so undecided headers have something to requeue.
            let submitted = late.ask(
                c,
                1,
                RequestBody::Submit {
                    transactions: vec![
                        Bytes::from(vec![r as u8; 8]),
                        Bytes::from(vec![r as u8 + 100; 8]),
                    ],
                },
            );
            assert_eq!(submitted, Response::Submitted { accepted: 2 });
            let Response::Summary(s) = late.ask(c, 1, RequestBody::GetState { with_payload: true })
            else {
                panic!("a summary");
            };
            let own = s.own_header.expect("the late core proposes");
            assert_eq!(own.header.round(), Round(r));
            let votes: Vec<Vote> = (0..4u16)
                .map(|v| {
                    vote(
                        &all_keys[v as usize],
                        AuthorityIndex(v),
                        own.header.digest(),
                    )
                })
                .collect();
            let mine = Certificate::from_votes(own.header.clone(), &votes);
            b.round(&[0, 1, 2], None);
            b.rounds.last_mut().unwrap().push(mine);
        } else {
            b.round(&[0, 1, 2], None);
        }
        if r <= seen {
            let layer = b.rounds[r as usize].clone();
            late.sync(c, &layer);
        }
    }
    (b, late)
}

/// The newest checkpoint state cores 0 and 1 signed, certified by both (stake 2 = V).
fn certificate(c: &Arc<Committee>, b: &DagBuilder) -> (CheckpointCert, Vec<Node>) {
    certificate_of(c, b, |n| n.core.checkpoints().last().unwrap().clone())
}

/// The state `pick` chooses among those cores 0 and 1 keep, certified by both.
fn certificate_of(
    c: &Arc<Committee>,
    b: &DagBuilder,
    pick: impl Fn(&Node) -> SignedCheckpoint,
) -> (CheckpointCert, Vec<Node>) {
    let mut nodes: Vec<Node> = (0..3).map(|i| Node::new(c, i)).collect();
    let all = b.all();
    for n in &mut nodes {
        n.sync(c, &all);
    }
    let (a, z) = (pick(&nodes[0]), pick(&nodes[1]));
    assert_eq!(a.state, z.state, "honest cores sign one state per boundary");
    let cert = CheckpointCert {
        state: a.state.clone(),
        signers: vec![a.signer, z.signer],
        signatures: vec![a.signature, z.signature],
    };
    (cert, nodes)
}

fn install(node: &mut Node, c: &Arc<Committee>, at: u64, cert: &CheckpointCert) -> Response {
    node.ask(
        c,
        at,
        RequestBody::InstallCheckpoint {
            certificate: cert.clone(),
        },
    )
}

#[test]
fn invalid_certificates_are_refused_before_the_core() {
    let c = committee();
    let (b, mut late) = history(&c, 0, 2, 24);
    let (cert, _) = certificate(&c, &b);
    let before = late.core.consensus().clone();
    let mut one = cert.clone();
    one.signers.truncate(1);
    one.signatures.truncate(1);
    let mut twice = cert.clone();
    twice.signers[1] = twice.signers[0];
    let mut forged = cert.clone();
    forged.signatures[1].0[5] ^= 1;
    let mut altered = cert.clone();
    altered.state.consensus_index += 1;
    for (what, bad, refusal) in [
        ("below V", one, "invalid"),
        ("a signer twice", twice, "invalid"),
        ("a forged signature", forged, "bad signature"),
        ("an altered state", altered, "bad signature"),
    ] {
        let r = install(&mut late, &c, 5, &bad);
        let Response::Error(e) = &r else {
            panic!("{what}: {r:?}")
        };
        assert!(e.to_string().contains(refusal), "{what}: {e}");
    }
    assert_eq!(late.core.consensus(), &before, "nothing changed");
}

#[test]
fn stale_and_unneeded_checkpoints_change_nothing() {
    let c = committee();
    let (b, _) = history(&c, 0, 0, 24);
    let (cert, mut nodes) = certificate(&c, &b);
    // A core that reached it: not ahead of it.
    let r = install(&mut nodes[2], &c, 5, &cert);
    assert!(
        matches!(r, Response::Error(CoreError::StaleCheckpoint { .. })),
        "{r:?}"
    );
    // A core within GC_DEPTH of it: ordinary catch-up reaches it.
    let mut near = Node::new(&c, LATE);
    let upto = (cert.state.last_committed_round.0 - GC_DEPTH + 2) as usize;
    let history: Vec<Certificate> = b.rounds[1..=upto].iter().flatten().cloned().collect();
    near.sync(&c, &history);
    let before = near.core.consensus().clone();
    assert!(cert.state.last_committed_round.0 - before.last_committed_round.0 <= GC_DEPTH);
    let r = install(&mut near, &c, 5, &cert);
    assert!(
        matches!(r, Response::Error(CoreError::CheckpointNotNeeded { .. })),
        "{r:?}"
    );
    assert_eq!(near.core.consensus(), &before);
    assert!(near.core.install_record().is_none());
}

#[test]
fn a_store_older_than_what_its_key_signed_stops_the_core() {
    let c = committee();
    // The late core signed headers 1..=3, then its store is lost: an empty one remains.
    let (b, _) = history(&c, 3, 3, 24);
    let (cert, _) = certificate(&c, &b);
    assert!(cert.state.last_committed[LATE as usize] >= Round(1));
    let mut amnesiac = Node::new(&c, LATE);
    let r = install(&mut amnesiac, &c, 5, &cert);
    let Response::Error(CoreError::Halted(reason)) = &r else {
        panic!("{r:?}")
    };
    assert!(
        reason.contains("older than what this key signed"),
        "{reason}"
    );
    assert_eq!(amnesiac.core.halted(), Some(reason.as_str()));
    let r = amnesiac.ask(
        &c,
        6,
        RequestBody::GetState {
            with_payload: false,
        },
    );
    assert!(matches!(r, Response::Error(CoreError::Halted(_))), "{r:?}");
    // The stop is durable: a restart on this store refuses to start, and says why.
    let refused = Core::recover(
        c.clone(),
        default_schedule(&c),
        KeyPair::deterministic(0, LATE),
        config(),
        amnesiac.store.load().unwrap(),
    );
    assert!(
        matches!(&refused, Err(RecoverError::Halted(why)) if why.contains("older than what this key signed")),
        "{refused:?}"
    );
}

#[test]
fn an_install_resumes_at_the_certified_state_and_survives_a_restart() {
    let c = committee();
    // The late core proposed rounds 1..=6 and saw rounds up to 5: it knows some of its headers
    // committed, not the later ones, which the others committed while it was away.
    let (b, mut late) = history(&c, 6, 5, 40);
    // The oldest state the others keep: they committed further since.
    let (cert, nodes) = certificate_of(&c, &b, |n| n.core.checkpoints().next().unwrap().clone());
    let state = cert.state.clone();
    let lc = state.last_committed[LATE as usize];
    assert_eq!(lc, Round(6), "its last header committed at the others");
    let voted_before = late.core.round();
    let old = late.core.consensus().clone();
    let pending_before = late.core.mempool_len();
    let r = install(&mut late, &c, 100, &cert);
    let Response::Summary(s) = &r else {
        panic!("{r:?}")
    };
    assert_eq!(s.last_committed_round, state.last_committed_round);
    assert_eq!(s.consensus_index, state.consensus_index);
    assert_eq!(s.commit_hash, state.commit_hash);
    assert_eq!(
        s.gc_round,
        Round(state.last_committed_round.0 - GC_DEPTH),
        "the floor is exactly gc′"
    );
    assert_eq!(
        late.core.round(),
        voted_before,
        "last_voted and the round untouched"
    );
    let record = late.core.install_record().unwrap().clone();
    assert_eq!(
        (record.base_index, record.base_hash),
        (state.consensus_index, state.commit_hash)
    );
    assert_eq!(
        (record.old_index, record.old_hash),
        (old.consensus_index, old.commit_hash)
    );
    // Own headers the core did not know committed, below lc, are undecided; lc is committed.
    let verdicts: Vec<(u64, OwnVerdict)> = record.own.iter().map(|(r, _, v)| (r.0, *v)).collect();
    assert!(
        verdicts.contains(&(6, OwnVerdict::Committed)),
        "{verdicts:?}"
    );
    assert!(
        verdicts.contains(&(5, OwnVerdict::Undecided)),
        "{verdicts:?}"
    );
    assert!(verdicts.iter().all(|(r, _)| *r <= 6));
    // A read in the gap waits while the gap moves (the fill brings it from the base down);
    // what the core committed before stays.
    assert!(late.core.committed_from(0, 1).is_ok_and(|e| e.len() == 1));
    let read_gap = RequestBody::ReadCommitted {
        from_index: old.consensus_index,
        max: 10,
        view: sleepyseal_core::protocol::CommittedView::Digests,
        wait_ms: 0,
    };
    let r = late.ask(&c, 101, read_gap.clone());
    assert!(
        matches!(r, Response::Error(CoreError::CommittedGapOpen { filled_from }) if filled_from == state.consensus_index),
        "{r:?}"
    );
    // A restart reloads the same shape.
    let held: Vec<CommittedEntry> = late.core.committed_entries().copied().collect();
    late.restart(&c);
    assert_eq!(late.core.consensus(), &state.consensus());
    assert_eq!(late.core.install_record(), Some(&record));
    assert_eq!(
        late.core.committed_entries().copied().collect::<Vec<_>>(),
        held
    );
    // Catch-up from the floor: the same commits as the others at the same indices.
    let floor = state.last_committed_round.0 - GC_DEPTH;
    let rest: Vec<Certificate> = b.rounds[floor as usize..]
        .iter()
        .flatten()
        .cloned()
        .collect();
    late.sync(&c, &rest);
    let mine = late
        .core
        .committed_from(state.consensus_index, usize::MAX)
        .unwrap();
    assert!(!mine.is_empty(), "commits resume");
    let theirs = nodes[0]
        .core
        .committed_from(state.consensus_index, mine.len())
        .unwrap();
    assert_eq!(mine, theirs);
    // FILL_TIMEOUT without a fill: undecided transactions are proposed again, counted as
    // possible duplicates, never dropped (one transaction per own header here: batches of 1 B).
    let undecided = record
        .own
        .iter()
        .filter(|(_, _, v)| *v == OwnVerdict::Undecided)
        .count() as u64;
    late.ask(
        &c,
        100 + 900,
        RequestBody::GetState {
            with_payload: false,
        },
    );
    assert_eq!(late.core.counters().transactions_possibly_duplicated, 0);
    late.ask(
        &c,
        100 + 1_000,
        RequestBody::GetState {
            with_payload: false,
        },
    );
    assert_eq!(
        late.core.counters().transactions_possibly_duplicated,
        undecided
    );
    let record = late.core.install_record().unwrap();
    assert!(
        record
            .own
            .iter()
            .all(|(_, _, v)| *v == OwnVerdict::Committed),
        "{:?}",
        record.own
    );
    assert!(pending_before > 0);
    // A gap that did not move for FILL_TIMEOUT (counted from the first request after the
    // restart, at 1) is given up: a reader in it skips to the base instead of waiting forever.
    let r = late.ask(&c, 1 + 1_000, read_gap);
    assert!(
        matches!(r, Response::Error(CoreError::CommittedEvicted { first_index }) if first_index == state.consensus_index),
        "{r:?}"
    );
}

#[test]
fn the_checkpoint_message_is_not_a_vote_message() {
    // A checkpoint signature can never be replayed as a vote, nor a vote as one.
    let d = sleepyseal_core::Digest([7; 32]);
    assert_ne!(
        checkpoint_message(&instance(), &d),
        sleepyseal_core::messages::vote_message(&instance(), &d)
    );
}

/// Entries `from..to` of `node`'s committed sequence, newest first, as a `FillLog`.
fn fill_of(node: &Node, from: u64, to: u64) -> Vec<CommittedEntry> {
    let mut entries = node
        .core
        .committed_from(from, (to - from) as usize)
        .expect("the source holds the gap");
    assert_eq!(entries.len() as u64, to - from);
    entries.reverse();
    entries
}

fn fill(node: &mut Node, c: &Arc<Committee>, at: u64, entries: Vec<CommittedEntry>) -> Response {
    node.ask(c, at, RequestBody::FillLog { entries })
}

/// A late core installs the newest checkpoint, and the gap between its old state and the
/// certified one is what it must fill.
fn installed_with_gap() -> (Arc<Committee>, Node, Vec<Node>, Gap) {
    let c = committee();
    let (b, mut late) = history(&c, 6, 5, 40);
    let (cert, nodes) = certificate(&c, &b);
    let Response::Summary(s) = install(&mut late, &c, 100, &cert) else {
        panic!("installed")
    };
    let gap = s.gap.expect("an install leaves a gap");
    assert_eq!(gap.next, cert.state.consensus_index);
    assert_eq!(gap.old_index, late.core.install_record().unwrap().old_index);
    assert!(gap.next - gap.old_index > 8, "{gap:?}");
    (c, late, nodes, gap)
}

#[test]
fn fills_that_do_not_link_from_the_verified_hash_are_refused_whole() {
    let (c, mut late, nodes, gap) = installed_with_gap();
    let source = &nodes[0];
    let good = fill_of(source, gap.next - 5, gap.next);
    let refused = |r: &Response| matches!(r, Response::Error(CoreError::InvalidFill { next }) if *next == gap.next);
    let before = late.core.install_record().cloned();
    // Wrongly anchored: not starting just below the verified part.
    let low = fill_of(source, gap.next - 6, gap.next - 1);
    assert!(refused(&fill(&mut late, &c, 101, low)));
    // Reordered.
    let mut swapped = good.clone();
    swapped.swap(1, 2);
    assert!(refused(&fill(&mut late, &c, 102, swapped)));
    // A field changed under a hash copied from the honest entry.
    let mut forged = good.clone();
    forged[1].created_at_ms += 1;
    assert!(refused(&fill(&mut late, &c, 103, forged)));
    let mut forged = good.clone();
    forged[2].payload.len += 1;
    assert!(refused(&fill(&mut late, &c, 104, forged)));
    // Truncated to one entry that nothing below vouches for.
    assert!(refused(&fill(&mut late, &c, 105, good[..1].to_vec())));
    assert_eq!(
        late.core.install_record().cloned(),
        before,
        "nothing changed"
    );
    assert_eq!(late.core.counters().gap_entries_filled, 0);
    // A gap entry is not served before it is verified.
    assert!(late.core.committed_from(gap.next - 1, 1).is_err());
}

#[test]
fn the_fill_brings_the_honest_gap_and_decides_undecided_own_headers() {
    let (c, mut late, nodes, gap) = installed_with_gap();
    let undecided: Vec<Round> = late
        .core
        .install_record()
        .unwrap()
        .own
        .iter()
        .filter(|(_, _, v)| *v == OwnVerdict::Undecided)
        .map(|(r, _, _)| *r)
        .collect();
    assert!(!undecided.is_empty(), "the install left undecided headers");
    let requeued_before = late.core.counters().transactions_requeued;
    // Steps of 4 entries: each step's lowest entry vouches for the one above it and is sent
    // again, verified, as the next step's top; the last step reaches one entry below the gap.
    let mut next = gap.next;
    let mut at = 200;
    while next > gap.old_index {
        let from = next.saturating_sub(4).max(gap.old_index.saturating_sub(1));
        let r = fill(&mut late, &c, at, fill_of(&nodes[0], from, next));
        let Response::Summary(s) = r else {
            panic!("{r:?}")
        };
        let now = s.gap.map_or(gap.old_index, |g| g.next);
        assert!(now < next, "every step verifies something");
        next = now;
        at += 1;
    }
    assert_eq!(
        late.core.counters().gap_entries_filled,
        gap.next - gap.old_index
    );
    // The whole sequence is the others', entry for entry, the gap included.
    let end = late.core.consensus().consensus_index;
    let mine = late.core.committed_from(0, end as usize).unwrap();
    assert_eq!(mine.len() as u64, end);
    assert_eq!(mine, nodes[0].core.committed_from(0, end as usize).unwrap());
    // Undecided own headers found in the gap are committed; none was proposed again.
    let record = late.core.install_record().unwrap().clone();
    assert_eq!(record.fill_next, record.old_index);
    for round in &undecided {
        assert!(
            record
                .own
                .iter()
                .any(|(r, _, v)| r == round && *v == OwnVerdict::Committed),
            "{round}: {:?}",
            record.own
        );
    }
    assert_eq!(late.core.counters().transactions_requeued, requeued_before);
    assert_eq!(late.core.counters().transactions_possibly_duplicated, 0);
    // FILL_TIMEOUT has nothing left to release.
    late.ask(
        &c,
        100_000,
        RequestBody::GetState {
            with_payload: false,
        },
    );
    assert_eq!(late.core.counters().transactions_possibly_duplicated, 0);
    // Nothing more to fill; a restart keeps it all.
    let r = fill(&mut late, &c, at, fill_of(&nodes[0], 0, 2));
    assert_eq!(r, Response::Error(CoreError::FillNotNeeded));
    late.restart(&c);
    assert_eq!(late.core.install_record(), Some(&record));
    assert_eq!(late.core.committed_from(0, end as usize).unwrap(), mine);
}

#[test]
fn a_gap_that_ends_elsewhere_than_the_old_state_stops_the_core() {
    let (c, mut late, nodes, gap) = installed_with_gap();
    // The core's record of its old state says another hash: the certified chain, verified down
    // to the old index, does not reach what this core committed there.
    let mut record = late.core.install_record().unwrap().clone();
    record.old_hash = sleepyseal_core::Digest([9; 32]);
    let mut batch = sleepyseal_core::WriteBatch::default();
    batch.put(
        sleepyseal_core::store::keys::install(),
        sleepyseal_core::codec::Encode::to_bytes(&record),
    );
    late.store.commit(&[batch]).unwrap();
    late.restart(&c);
    let from = gap.old_index.saturating_sub(1);
    let r = fill(&mut late, &c, 300, fill_of(&nodes[0], from, gap.next));
    let Response::Error(CoreError::Halted(reason)) = &r else {
        panic!("{r:?}")
    };
    assert!(
        reason.contains("more than f validators are faulty"),
        "{reason}"
    );
    late.store.commit(&[]).unwrap();
    let refused = Core::recover(
        c.clone(),
        default_schedule(&c),
        KeyPair::deterministic(0, LATE),
        config(),
        late.store.load().unwrap(),
    );
    assert!(matches!(refused, Err(RecoverError::Halted(_))));
}
