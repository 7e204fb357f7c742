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

/// Every restarted core came back within 2 rounds of the others, every gap an install opened
/// was filled, and no transaction was proposed again for want of a fill (possible duplicates).
pub fn assert_rejoined(r: &SimReport) {
    let seed = r.seed;
    assert_eq!(
        r.not_rejoined, 0,
        "seed {seed}: a restarted core never came back"
    );
    assert_eq!(r.gaps_open, 0, "seed {seed}: a gap was never filled");
    assert_eq!(
        r.possibly_duplicated, 0,
        "seed {seed}: undecided transactions released without the fill"
    );
}

/// Seeds per test in CI: `default`, or `SLEEPYSEAL_CI_SEEDS`.
pub fn ci_seeds(default: u64) -> u64 {
    std::env::var("SLEEPYSEAL_CI_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
