//! What the simulation tests share: how many seeds a test runs in CI, and what every one checks
//! of a seed's report.

#![allow(dead_code)] // each test file uses its own part

use sleepyseal_sim::SimReport;

/// The seed ran without a safety violation, stayed live, and committed.
pub fn assert_clean(r: &SimReport) {
    assert!(
        r.violations.is_empty(),
        "seed {}: {:?}",
        r.seed,
        r.violations
    );
    assert!(
        r.live,
        "seed {} not live: top round {}",
        r.seed, r.top_round
    );
    assert!(r.min_commits > 0, "seed {} committed nothing", r.seed);
}

/// Seeds per test in CI: `default`, or `SLEEPYSEAL_CI_SEEDS`.
pub fn ci_seeds(default: u64) -> u64 {
    std::env::var("SLEEPYSEAL_CI_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
