//! Unit tier: thresholds, quorum intersection, leader vectors, and Tusk commit scenarios on hand-built
//! DAGs.

use std::sync::Arc;

use sleepyseal_core::committee::{default_schedule, thresholds};
use sleepyseal_core::dag::Dag;
use sleepyseal_core::testkit::{committee, committee_with_stakes, DagBuilder};
use sleepyseal_core::tusk::{try_commit, ConsensusState};
use sleepyseal_core::{AuthorityIndex, Certificate, Committee, Round, Stake};

#[test]
fn thresholds_for_every_total_up_to_200() {
    for s in 1..=200u64 {
        let (f, q, v) = thresholds(Stake(s));
        assert_eq!(f.0, (s - 1) / 3, "S={s}");
        assert_eq!(q.0 + v.0, s + 1, "Q + V = S + 1 at S={s}");
        // Two quorums share more than f; a validity set exceeds f.
        assert!(2 * q.0 > s + f.0, "quorum intersection at S={s}");
        assert!(v.0 > f.0);
        // The prototype formula is too small exactly when S ≡ 2 (mod 3).
        let prototype = 2 * (s / 3) + 1;
        assert_eq!(prototype < q.0, s % 3 == 2, "prototype vs correct at S={s}");
    }
    assert_eq!(
        thresholds(Stake(5)).1,
        Stake(4),
        "the 2021 trap: S=5 needs 4"
    );
}

/// Every pair of quorums of every stake vector with entries 1..=3 and total ≤ 12 intersects in
/// more than f stake.
#[test]
fn exhaustive_quorum_intersection_up_to_total_12() {
    fn check(stakes: &[u64]) {
        let total: u64 = stakes.iter().sum();
        let (f, q, _) = thresholds(Stake(total));
        let n = stakes.len();
        let stake = |mask: u32| -> u64 {
            (0..n)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| stakes[i])
                .sum()
        };
        let quorums: Vec<u32> = (0..1u32 << n).filter(|m| stake(*m) >= q.0).collect();
        for a in &quorums {
            for b in &quorums {
                assert!(stake(a & b) > f.0, "stakes {stakes:?}: {a:b} ∩ {b:b}");
            }
        }
    }
    fn walk(prefix: &mut Vec<u64>, total: u64, checked: &mut usize) {
        if !prefix.is_empty() {
            check(prefix);
            *checked += 1;
        }
        for s in 1..=3u64 {
            if total + s <= 12 {
                prefix.push(s);
                walk(prefix, total + s, checked);
                prefix.pop();
            }
        }
    }
    let mut checked = 0;
    walk(&mut Vec::new(), 0, &mut checked);
    assert!(checked > 1_000, "covered {checked} stake vectors");
}

#[test]
fn stake_counts_distinct_known_indices_only() {
    let c = committee(4);
    assert!(
        c.stake_of([AuthorityIndex(0), AuthorityIndex(0)]).is_err(),
        "duplicates refused"
    );
    assert!(c.stake_of([AuthorityIndex(9)]).is_err(), "unknown refused");
    assert_eq!(
        c.stake_of([AuthorityIndex(1), AuthorityIndex(3)]),
        Ok(Stake(2))
    );
}

/// Pinned outputs of the stake-weighted schedule: a change here changes every deployment's
/// leaders, so it must be deliberate.
#[test]
fn leader_schedule_test_vectors() {
    let equal = default_schedule(&committee(4));
    let got: Vec<u16> = (1..=8u64).map(|i| equal.leader(Round(2 * i)).0).collect();
    assert_eq!(got, LEADERS_EQUAL_4, "equal stakes, n = 4");
    let skewed = default_schedule(&committee_with_stakes(&[10, 1, 1, 1]));
    let got: Vec<u16> = (1..=8u64).map(|i| skewed.leader(Round(2 * i)).0).collect();
    assert_eq!(got, LEADERS_SKEWED_4, "stakes 10,1,1,1");
}

const LEADERS_EQUAL_4: [u16; 8] = [1, 3, 1, 2, 1, 3, 2, 1];
const LEADERS_SKEWED_4: [u16; 8] = [1, 0, 2, 0, 0, 1, 0, 0];

#[test]
fn leader_frequency_follows_stake() {
    let schedule = default_schedule(&committee_with_stakes(&[6, 2, 1, 1]));
    let mut counts = [0u32; 4];
    for r in 1..=5_000u64 {
        counts[schedule.leader(Round(2 * r)).as_usize()] += 1;
    }
    // Expected shares 60/20/10/10 %, within a few percent.
    assert!((2_800..3_200).contains(&counts[0]), "{counts:?}");
    assert!((850..1_150).contains(&counts[1]), "{counts:?}");
    assert!((380..620).contains(&counts[2]), "{counts:?}");
}

fn dag_of(committee: &Committee, certificates: &[Certificate]) -> Dag {
    let mut dag = Dag::new(committee);
    for c in certificates {
        dag.insert(Arc::new(c.clone()))
            .expect("parents inserted first");
    }
    dag
}

fn commit(committee: &Arc<Committee>, certificates: &[Certificate]) -> Vec<(u64, u16, bool)> {
    let schedule = default_schedule(committee);
    let dag = dag_of(committee, certificates);
    let (commits, _) = try_commit(
        &dag,
        &ConsensusState::new(committee.size()),
        committee,
        schedule.as_ref(),
    );
    commits
        .entries
        .iter()
        .map(|e| (e.round.0, e.author.0, e.is_leader))
        .collect()
}

fn leader(committee: &Arc<Committee>, round: u64) -> u16 {
    default_schedule(committee).leader(Round(round)).0
}

#[test]
fn commit_one_leader() {
    let c = committee(4);
    let mut b = DagBuilder::new(c.clone());
    b.full_rounds(3);
    let out = commit(&c, &b.all());
    // Round-1 history then the leader of round 2, last.
    assert_eq!(out.len(), 5, "{out:?}");
    assert_eq!(out.last(), Some(&(2, leader(&c, 2), true)));
    assert!(out[..4].iter().all(|(r, _, l)| *r == 1 && !l));
}

#[test]
fn dead_node_does_not_stop_commits() {
    let c = committee(4);
    let dead = (0..4u16)
        .find(|a| *a != leader(&c, 2) && *a != leader(&c, 4))
        .expect("a non-leader");
    let alive: Vec<u16> = (0..4).filter(|a| *a != dead).collect();
    let mut b = DagBuilder::new(c.clone());
    for _ in 0..5 {
        b.round(&alive, None);
    }
    let out = commit(&c, &b.all());
    let leaders: Vec<u64> = out.iter().filter(|e| e.2).map(|e| e.0).collect();
    assert_eq!(leaders, vec![2, 4], "{out:?}");
    assert!(out.iter().all(|e| e.1 != dead));
}

#[test]
fn not_enough_support_means_no_commit() {
    let c = committee(4);
    let l2 = leader(&c, 2);
    let others: Vec<u16> = (0..4).filter(|a| *a != l2).collect();
    let mut b = DagBuilder::new(c.clone());
    b.full_rounds(2);
    // Round 3: only the leader's own certificate references it (support 1 < V = 2).
    b.round(&others, Some(&others));
    let own = b.certificate(
        Round(3),
        AuthorityIndex(l2),
        &b.rounds[2].iter().collect::<Vec<_>>(),
    );
    b.rounds[3].push(own);
    let out = commit(&c, &b.all());
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn missing_leader_is_skipped_and_later_leader_commits() {
    let c = committee(4);
    let l2 = leader(&c, 2);
    let others: Vec<u16> = (0..4).filter(|a| *a != l2).collect();
    let mut b = DagBuilder::new(c.clone());
    b.full_rounds(1);
    b.round(&others, None); // round 2 without its leader
    b.full_rounds(3); // rounds 3..5
    let out = commit(&c, &b.all());
    let leaders: Vec<u64> = out.iter().filter(|e| e.2).map(|e| e.0).collect();
    assert_eq!(leaders, vec![4], "{out:?}");
}

#[test]
fn earlier_linked_leader_is_committed_first_in_order() {
    let c = committee(4);
    let l2 = leader(&c, 2);
    let others: Vec<u16> = (0..4).filter(|a| *a != l2).collect();
    let mut b = DagBuilder::new(c.clone());
    b.full_rounds(2);
    // Round 3: a single supporter of L2 (not enough alone), the others skip it.
    let supporter = others[0];
    let skip: Vec<u16> = others[1..].to_vec();
    b.round(&skip, Some(&others));
    let all2: Vec<&Certificate> = b.rounds[2].iter().collect();
    let support = b.certificate(Round(3), AuthorityIndex(supporter), &all2);
    b.rounds[3].push(support);
    b.full_rounds(2); // rounds 4, 5: everyone references all of round 3, so L4 links to L2
    let out = commit(&c, &b.all());
    let leaders: Vec<u64> = out.iter().filter(|e| e.2).map(|e| e.0).collect();
    assert_eq!(leaders, vec![2, 4], "{out:?}");
    // L2's sub-DAG comes first, entirely before anything of round ≥ 3.
    let l2_pos = out.iter().position(|e| e.2 && e.0 == 2).expect("L2");
    assert!(out[..l2_pos].iter().all(|e| e.0 < 2));
}
