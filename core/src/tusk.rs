//! Tusk's commit rule with deterministic leaders (PROTOCOL.md §5), as a pure function of the DAG
//! and the consensus state: no I/O, no clock, no randomness, so every core given the same DAG
//! history and state computes the same commits.

use std::collections::HashSet;
use std::sync::Arc;

use crate::checkpoint::crosses_boundary;
use crate::committee::{Committee, LeaderSchedule, ProtocolConstants};
use crate::dag::Dag;
use crate::messages::Certificate;
use crate::protocol::CommittedEntry;
use crate::types::{Digest, Round, Stake};

/// What a core has committed so far. Persisted with the certificates that changed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsensusState {
    /// Per author, the highest committed certificate round.
    pub last_committed: Vec<Round>,
    /// Round of the latest committed leader.
    pub last_committed_round: Round,
    /// Number of committed certificates.
    pub consensus_index: u64,
    /// Hash chain over the committed digests.
    pub commit_hash: Digest,
}

impl ConsensusState {
    /// The state before any commit.
    pub fn new(committee_size: usize) -> ConsensusState {
        ConsensusState {
            last_committed: vec![Round::GENESIS; committee_size],
            last_committed_round: Round::GENESIS,
            consensus_index: 0,
            commit_hash: Digest::ZERO,
        }
    }

    /// gc_round = last_committed_round − gc_depth (saturating).
    pub fn gc_round(&self, gc_depth: u64) -> Round {
        self.last_committed_round.saturating_sub(gc_depth)
    }
}

/// The result of one evaluation of the commit rule.
#[derive(Clone, Debug, Default)]
pub struct Commits {
    /// Newly committed entries, in order.
    pub entries: Vec<CommittedEntry>,
    /// The certificates behind `entries`, same order.
    pub certificates: Vec<Arc<Certificate>>,
    /// The checkpoint boundaries crossed (PROTOCOL.md §8a.1): the state right after the
    /// sub-DAG of each committed leader whose round reached a new multiple of
    /// CHECKPOINT_INTERVAL, oldest first.
    pub boundaries: Vec<ConsensusState>,
}

/// Support for leader `ld`: stake of round `L+1` certificates whose parents contain it.
pub fn support(dag: &Dag, committee: &Committee, ld: &Certificate) -> Stake {
    dag.round(ld.round().next())
        .filter(|c| c.header.has_parent(&ld.digest()))
        .map(|c| committee.stake(c.author()))
        .sum()
}

/// Evaluates every even round above the last committed one, in ascending order, commits each
/// leader with validity support at L+1 together with the uncommitted leaders it links to, and
/// returns the new entries, the checkpoint boundaries crossed and the new state. Sub-DAGs are
/// cut at the committee's GC_DEPTH. `state` is not modified.
pub fn try_commit(
    dag: &Dag,
    state: &ConsensusState,
    committee: &Committee,
    schedule: &dyn LeaderSchedule,
) -> (Commits, ConsensusState) {
    let ProtocolConstants {
        gc_depth,
        checkpoint_interval,
    } = committee.constants();
    let mut state = state.clone();
    let mut out = Commits::default();
    let mut leader_round = Round(state.last_committed_round.0 + 2);
    let top = dag.highest_round();
    while leader_round < top {
        if let Some(ld) = dag.at(leader_round, schedule.leader(leader_round)) {
            if support(dag, committee, ld) >= committee.validity_threshold() {
                for leader in leader_chain(dag, &state, schedule, ld) {
                    let previous = state.last_committed_round;
                    emit_sub_dag(dag, &mut state, &leader, gc_depth, &mut out);
                    if crosses_boundary(previous, leader.round(), checkpoint_interval) {
                        out.boundaries.push(state.clone());
                    }
                }
            }
        }
        leader_round = Round(leader_round.0 + 2);
    }
    (out, state)
}

/// `ld` and the uncommitted earlier leaders it links to, oldest first.
fn leader_chain(
    dag: &Dag,
    state: &ConsensusState,
    schedule: &dyn LeaderSchedule,
    ld: &Arc<Certificate>,
) -> Vec<Arc<Certificate>> {
    let mut leaders = vec![ld.clone()];
    let mut current = ld.clone();
    let mut r = ld.round().0;
    while r >= state.last_committed_round.0 + 4 {
        r -= 2;
        let round = Round(r);
        if let Some(p) = dag.at(round, schedule.leader(round)) {
            if dag.linked(&current, p) {
                leaders.push(p.clone());
                current = p.clone();
            }
        }
    }
    leaders.reverse();
    leaders
}

/// Emits the not-yet-committed causal history of `leader` in (round, author) order.
fn emit_sub_dag(
    dag: &Dag,
    state: &mut ConsensusState,
    leader: &Arc<Certificate>,
    gc_depth: u64,
    out: &mut Commits,
) {
    let floor = state.gc_round(gc_depth).max(Round(1));
    let committed = |state: &ConsensusState, c: &Certificate| {
        c.round() <= state.last_committed[c.author().as_usize()]
    };
    let mut seen: HashSet<Digest> = HashSet::from([leader.digest()]);
    let mut stack = vec![leader.clone()];
    let mut history = Vec::new();
    while let Some(c) = stack.pop() {
        for p in c.header.parents() {
            let Some(parent) = dag.get(&p.digest) else {
                continue; // below the DAG's floor
            };
            if parent.round() >= floor && !committed(state, parent) && seen.insert(p.digest) {
                stack.push(parent.clone());
            }
        }
        history.push(c);
    }
    history.sort_by_key(|c| (c.round(), c.author()));
    for c in history {
        let author = c.author().as_usize();
        state.last_committed[author] = state.last_committed[author].max(c.round());
        let mut entry = CommittedEntry {
            index: state.consensus_index,
            round: c.round(),
            author: c.author(),
            digest: c.digest(),
            payload: c.header.payload(),
            commit_hash: Digest::ZERO,
            leader_round: leader.round(),
            is_leader: c.digest() == leader.digest(),
            created_at_ms: c.header.created_at_ms(),
        };
        entry.commit_hash = entry.chain(&state.commit_hash);
        state.commit_hash = entry.commit_hash;
        out.entries.push(entry);
        state.consensus_index += 1;
        out.certificates.push(c);
    }
    state.last_committed_round = leader.round();
}
