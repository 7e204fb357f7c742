//! Checkpoint states (PROTOCOL.md §8a.1): a core signs the boundaries its own commit rule
//! reaches (the state right after the first committed leader whose round reaches a new multiple
//! of CHECKPOINT_INTERVAL), keeps its latest few across restarts, and serves them; cores given
//! the same history in different pieces sign the same states.

use std::sync::Arc;

use sleepyseal_core::checkpoint::{checkpoint_message, crosses_boundary, SignedCheckpoint};
use sleepyseal_core::committee::{default_schedule, ProtocolConstants};
use sleepyseal_core::crypto::{verify_one, SignatureItem};
use sleepyseal_core::machine::KEPT_CHECKPOINTS;
use sleepyseal_core::protocol::{CommittedEntry, Request, RequestBody, Response};
use sleepyseal_core::store::MemStore;
use sleepyseal_core::testkit::{committee_with, instance, DagBuilder};
use sleepyseal_core::verify::VerifierConfig;
use sleepyseal_core::{Certificate, Committee, Core, CoreConfig, KeyPair, Millis, Store, Verifier};

const INTERVAL: u64 = 4;

fn committee() -> Arc<Committee> {
    committee_with(
        instance(),
        &[1; 4],
        ProtocolConstants {
            checkpoint_interval: INTERVAL,
            ..ProtocolConstants::default()
        },
    )
}

fn recover(c: &Arc<Committee>, me: u16, store: &mut MemStore) -> Core {
    Core::recover(
        c.clone(),
        default_schedule(c),
        KeyPair::deterministic(0, me),
        CoreConfig::default(),
        store.load().unwrap(),
    )
    .unwrap()
}

/// Hands `certificates` (with their payloads) to the core in one `Sync`, storing its writes.
fn sync(core: &mut Core, store: &mut MemStore, c: &Arc<Committee>, certificates: &[Certificate]) {
    let verifier = Verifier::new(c.clone(), VerifierConfig::default());
    let request = Request {
        instance: instance(),
        body: RequestBody::Sync {
            certificates: certificates.to_vec(),
            payloads: certificates
                .iter()
                .map(|c| DagBuilder::payload(c.round(), c.author()))
                .collect(),
        },
    };
    let (response, batch) = core.handle(Millis(1), verifier.verify(request).unwrap());
    assert!(!matches!(response, Response::Error(_)), "{response:?}");
    store.commit(&[batch]).unwrap();
}

fn served(core: &mut Core, c: &Arc<Committee>) -> Vec<SignedCheckpoint> {
    let verifier = Verifier::new(c.clone(), VerifierConfig::default());
    let request = Request {
        instance: instance(),
        body: RequestBody::GetCheckpoint,
    };
    let (response, batch) = core.handle(Millis(1), verifier.verify(request).unwrap());
    assert!(batch.is_empty(), "GetCheckpoint writes nothing");
    match response {
        Response::Checkpoints(states) => states,
        other => panic!("{other:?}"),
    }
}

/// The boundaries of a committed sequence, computed from it alone: (index after, hash, round)
/// right after each leader whose round reaches a new multiple of the interval.
fn boundaries_of(entries: &[CommittedEntry]) -> Vec<(u64, sleepyseal_core::Digest, u64)> {
    let mut previous = sleepyseal_core::Round(0);
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| e.is_leader) {
        if crosses_boundary(previous, e.round, INTERVAL) {
            out.push((e.index + 1, e.commit_hash, e.round.0));
        }
        previous = e.round;
    }
    out
}

#[test]
fn a_core_signs_the_boundaries_it_commits_and_keeps_its_latest_few_across_restarts() {
    let c = committee();
    let mut store = MemStore::new();
    let mut core = recover(&c, 3, &mut store);
    assert!(served(&mut core, &c).is_empty(), "no boundary reached yet");
    let mut b = DagBuilder::new(c.clone());
    b.full_rounds(41);
    sync(&mut core, &mut store, &c, &b.all());
    let entries = core.committed_from(0, usize::MAX).expect("nothing evicted");
    let expected = boundaries_of(&entries);
    assert!(expected.len() > KEPT_CHECKPOINTS, "{expected:?}");
    assert_eq!(core.counters().checkpoints_signed, expected.len() as u64);
    let states = served(&mut core, &c);
    assert_eq!(states.len(), KEPT_CHECKPOINTS);
    let newest = &expected[expected.len() - KEPT_CHECKPOINTS..];
    let key = KeyPair::deterministic(0, 3).public();
    for (signed, (index, hash, round)) in states.iter().zip(newest) {
        assert_eq!(signed.signer.0, 3);
        assert_eq!(signed.state.instance, instance());
        assert_eq!(signed.state.consensus_index, *index);
        assert_eq!(signed.state.commit_hash, *hash);
        assert_eq!(signed.state.last_committed_round.0, *round);
        let message = checkpoint_message(&instance(), &signed.state.digest());
        assert!(verify_one(&SignatureItem {
            public_key: key,
            message: &message,
            signature: signed.signature,
        }));
    }
    // The state is the commit rule's whole state at the boundary: each author's highest
    // committed round among the entries before it.
    let last = states.last().unwrap();
    for (a, round) in last.state.last_committed.iter().enumerate() {
        let highest = entries[..last.state.consensus_index as usize]
            .iter()
            .filter(|e| e.author.as_usize() == a)
            .map(|e| e.round)
            .max()
            .unwrap_or_default();
        assert_eq!(*round, highest, "author {a}");
    }
    let restarted = recover(&c, 3, &mut store);
    let again: Vec<SignedCheckpoint> = restarted.checkpoints().cloned().collect();
    assert_eq!(again, states, "a restart serves the same states");
}

#[test]
fn cores_given_one_history_in_different_pieces_sign_the_same_states() {
    let c = committee();
    let mut b = DagBuilder::new(c.clone());
    b.full_rounds(30);
    let all = b.all();
    let (mut store_a, mut store_b) = (MemStore::new(), MemStore::new());
    let mut a = recover(&c, 1, &mut store_a);
    let mut z = recover(&c, 2, &mut store_b);
    sync(&mut a, &mut store_a, &c, &all);
    // Core 2 gets the history seven certificates at a time: its leaders commit one request at
    // a time, core 1's all in one.
    for piece in all.chunks(7) {
        sync(&mut z, &mut store_b, &c, piece);
    }
    let digests = |core: &Core| -> Vec<(u64, sleepyseal_core::Digest)> {
        core.checkpoints()
            .map(|s| (s.state.consensus_index, s.state.digest()))
            .collect()
    };
    assert!(!digests(&a).is_empty());
    assert_eq!(digests(&a), digests(&z));
    assert_eq!(
        a.counters().checkpoints_signed,
        z.counters().checkpoints_signed
    );
}

/// A leader committed inside a chain (its own support came short, a later leader links to it)
/// still marks the boundary it reaches: the state right after its sub-DAG, not after the chain.
#[test]
fn a_boundary_inside_a_chain_of_leaders_is_the_state_after_its_own_leader() {
    use sleepyseal_core::dag::Dag;
    use sleepyseal_core::tusk::{try_commit, ConsensusState};
    use sleepyseal_core::{AuthorityIndex, Round};
    let c = committee();
    let schedule = default_schedule(&c);
    let mut b = DagBuilder::new(c.clone());
    b.full_rounds(4);
    // Round 5: only one certificate references leader(4) (support 1 < V = 2).
    let leader4 = schedule.leader(Round(4));
    let round4 = b.rounds[4].clone();
    let layer: Vec<Certificate> = (0..4u16)
        .map(|a| {
            let parents: Vec<&Certificate> = round4
                .iter()
                .filter(|p| a == 0 || p.author() != leader4)
                .collect();
            b.certificate(Round(5), AuthorityIndex(a), &parents)
        })
        .collect();
    b.rounds.push(layer);
    let mut dag = Dag::new(&c);
    let state = ConsensusState::new(4);
    for cert in b.all() {
        dag.insert(Arc::new(cert)).unwrap();
    }
    let (first, state) = try_commit(&dag, &state, &c, schedule.as_ref());
    assert_eq!(
        state.last_committed_round,
        Round(2),
        "leader 4 lacks support"
    );
    assert!(first.boundaries.is_empty());
    b.full_rounds(2);
    for cert in b.rounds[6..].iter().flatten() {
        dag.insert(Arc::new(cert.clone())).unwrap();
    }
    let (commits, after) = try_commit(&dag, &state, &c, schedule.as_ref());
    let leaders: Vec<u64> = commits
        .entries
        .iter()
        .filter(|e| e.is_leader)
        .map(|e| e.round.0)
        .collect();
    assert_eq!(leaders, [4, 6], "leader 4 committed in leader 6's chain");
    assert_eq!(after.last_committed_round, Round(6));
    assert_eq!(commits.boundaries.len(), 1);
    let boundary = &commits.boundaries[0];
    let leader_entry = commits
        .entries
        .iter()
        .find(|e| e.round == Round(4) && e.is_leader)
        .unwrap();
    assert_eq!(boundary.last_committed_round, Round(4));
    assert_eq!(boundary.consensus_index, leader_entry.index + 1);
    assert_eq!(boundary.commit_hash, leader_entry.commit_hash);
}
