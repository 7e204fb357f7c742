//! Simulation: every Byzantine core and hostile driver behaviour at n = 4, each over many seeds.

mod support;

use sleepyseal_sim::{run, SimConfig};
use support::ci_seeds;

/// Seeds per Byzantine behaviour in CI (`SLEEPYSEAL_CI_SEEDS` overrides). The long campaign
/// runs from the CLI: `sleepyseal-sim --byzantine 1 --behaviour all --seeds N`.
const CI_SEEDS: u64 = 200;

/// One Byzantine behaviour (one Byzantine core, twin or hostile driver at n = 4, beside two
/// honest drivers), over [`CI_SEEDS`] seeds: the honest cores stay safe and live, and nothing
/// panics.
fn behaviour_is_survived(name: &str) {
    use sleepyseal_sim::Behaviour;
    let behaviour = Behaviour::from_name(name).expect("a behaviour");
    let mut worst_gap = 0;
    for seed in 0..ci_seeds(CI_SEEDS) {
        let r = run(SimConfig {
            cores: 4,
            byzantine: 1,
            behaviour,
            seed,
            rounds: 20,
            ..SimConfig::default()
        });
        assert!(
            r.violations.is_empty(),
            "{name} seed {seed}: {:?}",
            r.violations
        );
        assert!(r.live, "{name} seed {seed}: not live");
        worst_gap = worst_gap.max(r.max_commit_gap_rounds);
    }
    println!(
        "{name}: {} seeds, largest commit gap {worst_gap} rounds",
        ci_seeds(CI_SEEDS)
    );
}

macro_rules! behaviour_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                behaviour_is_survived($name);
            }
        )*
        /// Every behaviour the CLI knows has its test above.
        #[test]
        fn every_behaviour_has_a_ci_test() {
            let tested = [$($name),*];
            for b in sleepyseal_sim::Behaviour::ALL {
                assert!(tested.contains(&b.name()), "{} has no CI test", b.name());
            }
        }
    };
}

behaviour_tests! {
    byzantine_withhold_votes => "withhold-votes",
    byzantine_withhold_headers => "withhold-headers",
    byzantine_invalid_signatures => "invalid-signatures",
    byzantine_stale_replies => "stale-replies",
    byzantine_amnesia => "amnesia",
    byzantine_far_future_rounds => "far-future-rounds",
    byzantine_bad_parents => "bad-parents",
    byzantine_bad_payloads => "bad-payloads",
    byzantine_twin => "twin",
    byzantine_twins_scenario => "twins-scenario",
    hostile_driver_omit_leader => "omit-leader",
    hostile_driver_replay_bundles => "replay-bundles",
    hostile_driver_reorder_bundles => "reorder-bundles",
    hostile_driver_truncate_bundles => "truncate-bundles",
    hostile_driver_mix_rounds => "mix-rounds",
    hostile_driver_garbage => "garbage",
    mixed_cores_and_driver => "mixed",
}
