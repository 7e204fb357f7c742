//! Simulation: rejoining after outages far longer than anyone retains (PROTOCOL.md §8a). The
//! restarted core's history is gone everywhere (cores keep GC_DEPTH + retention rounds, drivers
//! their soft cache), so it must install a certified checkpoint and catch up from its floor:
//! every seed safe (S1–S12 as checked), live, and the core back within 2 rounds of the others.

mod support;

use sleepyseal_sim::{run, SimConfig};
use support::{assert_clean, assert_rejoined, ci_seeds};

fn rejoins(cores: usize, restart: usize, outage_ms: (u64, u64), rounds: u64, seeds: u64) {
    let (mut installs, mut worst) = (0, 0);
    for seed in 0..ci_seeds(seeds) {
        let r = run(SimConfig::long_outage(
            cores, restart, outage_ms, rounds, seed,
        ));
        assert_clean(&r);
        assert_eq!(
            r.restarts,
            restart as u64 + r.install_crashes,
            "seed {seed}"
        );
        assert_rejoined(&r);
        assert!(r.rejoin_rounds.len() >= restart, "seed {seed}");
        assert!(
            r.installs == 0 || r.gap_entries_filled > 0,
            "seed {seed}: installs without a fill"
        );
        installs += r.installs;
        worst = worst.max(r.rejoin_rounds.iter().copied().max().unwrap_or(0));
    }
    println!("n = {cores}: {installs} installs, rejoined within {worst} rounds of the others");
    // Most outages outlast every cache: rejoining through checkpoints is what is tested.
    assert!(
        installs * 2 >= ci_seeds(seeds) * restart as u64,
        "{installs} installs"
    );
    assert!(worst <= 20, "a rejoin took {worst} rounds");
}

#[test]
fn n4_a_core_away_for_hundreds_of_rounds_rejoins_through_a_checkpoint() {
    rejoins(4, 1, (15_000, 25_000), 600, 8);
}

#[test]
fn n7_two_cores_away_at_once_rejoin_through_checkpoints() {
    rejoins(7, 2, (30_000, 45_000), 400, 3);
}
