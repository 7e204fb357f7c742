//! Simulation: home-core drivers (PROTOCOL.md §7, "Who carries payloads"), one per core and no
//! other driver, some of them dead (never started, or crashed for good mid-run). A core whose
//! home driver is dead stays live through the other drivers' on-demand carriage: its headers are
//! certified and every transaction it acknowledged commits. The long campaign runs from the CLI:
//! `sleepyseal-sim --home-drivers --drivers 0 --dead-home-drivers K --seeds N`.

mod support;

use sleepyseal_sim::{run, HomeDrivers, SimConfig, SimReport};
use support::ci_seeds;

/// Only home drivers, `dead` of them dead.
fn homes_only(cores: usize, dead: usize, seed: u64) -> SimConfig {
    SimConfig {
        cores,
        drivers: 0,
        home_drivers: Some(HomeDrivers { dead }),
        seed,
        rounds: 24,
        ..SimConfig::default()
    }
}

fn assert_clean(r: &SimReport) {
    support::assert_clean(r);
    // Every acknowledged transaction commits at its core, the cores without a live home
    // driver included.
    assert_eq!(r.slow_transactions, 0, "seed {}", r.seed);
    assert!(r.acked_transactions > 0, "seed {}: no load", r.seed);
}

/// n = 4, one home driver dead, message faults and link cuts, a live home driver killed and
/// restarted.
#[test]
fn n4_one_dead_home_driver() {
    for seed in 0..ci_seeds(30) {
        assert_clean(&run(homes_only(4, 1, seed)));
    }
}

/// n = 4, two home drivers dead and a core crashed for good: two live home drivers carry the
/// payloads of all three live cores.
#[test]
fn n4_two_dead_home_drivers_and_a_crashed_core() {
    for seed in 0..ci_seeds(12) {
        let r = run(SimConfig {
            crash: 1,
            ..homes_only(4, 2, seed)
        });
        assert_clean(&r);
    }
}

/// n = 7, two home drivers dead, a core restarted from its store: it catches up through drivers
/// that are not its home driver.
#[test]
fn n7_two_dead_home_drivers_and_a_restart() {
    for seed in 0..ci_seeds(3) {
        let r = run(SimConfig {
            restart: 1,
            ..homes_only(7, 2, seed)
        });
        assert_clean(&r);
        assert_eq!(r.restarted_caught_up, 1, "seed {seed}");
    }
}

/// S7 holds with home drivers: the same seed gives the same trace.
#[test]
fn home_drivers_same_seed_same_trace() {
    let (a, b) = (run(homes_only(4, 1, 5)), run(homes_only(4, 1, 5)));
    assert_eq!(a.trace, b.trace);
    assert_ne!(a.trace, run(homes_only(4, 1, 6)).trace);
}
