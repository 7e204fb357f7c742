//! Tusk's commit rule (`tusk::try_commit`) on synthetic DAGs of fully signed certificates built
//! with `testkit::DagBuilder`, for committees of 4, 10 and 50:
//! - `sub_dag`: the steady state. Leaders up to round 8 are committed; the DAG holds full rounds
//!   up to 11, so one call commits the leader of round 10 with its sub-DAG (2n certificates);
//! - `skipped_leader`: the leader of round 10 gets only f supporters at round 11, so it is
//!   skipped; the leader of round 12 then commits and pulls it in through the leader chain
//!   (`Dag::linked`), committing two sub-DAGs (4n certificates) in one call;
//! - `full_dag`: 20 full rounds (plus the support round) committed from the initial state in one
//!   call, ten leaders; divide by 20 for the cost per round.
//!
//! Why it matters: the core runs the commit rule after every request that inserts certificates,
//! on its single thread, so its cost per round must stay small next to signature checks even for
//! large committees; the sizes show how it grows with n.
//!
//! Throughput is in elements: certificates committed by the call.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use sleepyseal_core::committee::{default_schedule, LeaderSchedule};
use sleepyseal_core::dag::Dag;
use sleepyseal_core::testkit::{committee, DagBuilder};
use sleepyseal_core::tusk::{try_commit, ConsensusState};
use sleepyseal_core::{Certificate, Committee, Round};

/// Committee sizes.
const SIZES: [usize; 3] = [4, 10, 50];
/// Full rounds of the `full_dag` case (even: its last leader gets support from one more round).
const FULL_ROUNDS: usize = 20;

/// The DAG of every certificate of `rounds` (genesis included by `Dag::new`).
fn dag_of(committee: &Committee, rounds: &[Vec<Certificate>]) -> Dag {
    let mut dag = Dag::new(committee);
    for c in rounds.iter().skip(1).flatten() {
        dag.insert(Arc::new(c.clone()))
            .expect("parents inserted first");
    }
    dag
}

/// The state after committing everything `rounds` allows.
fn committed_state(
    committee: &Committee,
    schedule: &dyn LeaderSchedule,
    rounds: &[Vec<Certificate>],
) -> ConsensusState {
    let dag = dag_of(committee, rounds);
    let initial = ConsensusState::new(committee.size());
    try_commit(&dag, &initial, committee, schedule).1
}

/// One benchmark input: a DAG, the state before the call, and how many certificates it commits.
struct Case {
    dag: Dag,
    state: ConsensusState,
    committed: u64,
}

impl Case {
    fn new(
        committee: &Committee,
        schedule: &dyn LeaderSchedule,
        dag: Dag,
        state: ConsensusState,
    ) -> Case {
        let (commits, _) = try_commit(&dag, &state, committee, schedule);
        Case {
            committed: commits.entries.len() as u64,
            dag,
            state,
        }
    }
}

/// Rounds 0..=12 where the leader of round 10 has only f supporters at round 11.
fn skipped_leader_rounds(
    committee: &Arc<Committee>,
    schedule: &dyn LeaderSchedule,
    full: &[Vec<Certificate>],
) -> Vec<Vec<Certificate>> {
    let mut builder = DagBuilder::new(committee.clone());
    builder.rounds = full[..=10].to_vec();
    let leader = schedule.leader(Round(10));
    let f = (committee.size() - 1) / 3;
    let with_leader: Vec<&Certificate> = builder.rounds[10].iter().collect();
    let without_leader: Vec<&Certificate> = builder.rounds[10]
        .iter()
        .filter(|c| c.author() != leader)
        .collect();
    let round_11 = committee
        .indices()
        .map(|a| {
            // f authors other than the leader support it; the rest do not.
            let supports = a != leader && (a.0 as usize) < f + usize::from(leader.0 < f as u16);
            let parents = if supports {
                &with_leader
            } else {
                &without_leader
            };
            builder.certificate(Round(11), a, parents)
        })
        .collect();
    builder.rounds.push(round_11);
    builder.full_rounds(2);
    builder.rounds
}

fn bench_tusk(c: &mut Criterion) {
    let mut group = c.benchmark_group("tusk_commit");
    for n in SIZES {
        let committee = committee(n);
        let schedule = default_schedule(&committee);
        let mut builder = DagBuilder::new(committee.clone());
        builder.full_rounds(FULL_ROUNDS + 1);
        let full = &builder.rounds;

        let sub_dag = Case::new(
            &committee,
            schedule.as_ref(),
            dag_of(&committee, &full[..=11]),
            committed_state(&committee, schedule.as_ref(), &full[..=9]),
        );
        assert_eq!(sub_dag.state.last_committed_round, Round(8));
        assert_eq!(sub_dag.committed, 2 * n as u64, "leader 10 and its sub-DAG");

        let skipped = skipped_leader_rounds(&committee, schedule.as_ref(), full);
        let skipped_leader = Case::new(
            &committee,
            schedule.as_ref(),
            dag_of(&committee, &skipped),
            committed_state(&committee, schedule.as_ref(), &full[..=9]),
        );
        assert_eq!(
            skipped_leader.committed,
            4 * n as u64,
            "leaders 10 and 12 with their sub-DAGs"
        );

        let full_dag = Case::new(
            &committee,
            schedule.as_ref(),
            dag_of(&committee, full),
            ConsensusState::new(n),
        );

        for (name, case) in [
            ("sub_dag", &sub_dag),
            ("skipped_leader", &skipped_leader),
            ("full_dag", &full_dag),
        ] {
            group.throughput(Throughput::Elements(case.committed));
            group.bench_with_input(BenchmarkId::new(name, n), case, |b, case| {
                b.iter(|| {
                    try_commit(
                        black_box(&case.dag),
                        black_box(&case.state),
                        &committee,
                        schedule.as_ref(),
                    )
                })
            });
        }
    }
    group.finish();
}

/// The generated `benches` function is public and undocumented; a private module keeps it out
/// of the `missing_docs` lint.
mod harness {
    criterion::criterion_group!(benches, super::bench_tusk);
}

criterion_main!(harness::benches);
