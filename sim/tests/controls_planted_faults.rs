//! Negative controls: planted faults (`sleepyseal_sim::planted`) and more than f Byzantine
//! stake, each of which the checkers must catch within its stated number of seeds.

use sleepyseal_sim::{controls, run, SimConfig};

/// Runs seeds until the checkers report a violation; returns how many seeds it took and the
/// first violation.
fn seeds_to_catch(limit: u64, make: impl Fn(u64) -> SimConfig) -> Option<(u64, String)> {
    (0..limit).find_map(|seed| {
        let report = run(make(seed));
        let v = report.violations.first()?;
        Some((seed + 1, format!("{} {}", v.invariant, v.detail)))
    })
}

/// Runs negative control `name` (`sleepyseal_sim::controls`): the checkers must catch it
/// within its seed limit, and its scenario without the fault must be clean over 10 seeds.
fn control_is_caught(name: &str) {
    let c = controls::named(name);
    let needed = seeds_to_catch(c.limit, c.make);
    match &needed {
        Some((seeds, violation)) => println!("{name} caught after {seeds} seeds: {violation}"),
        None => println!("{name} not caught"),
    }
    assert!(needed.is_some(), "{name} not caught in {} seeds", c.limit);
    if let Some(baseline) = c.baseline {
        assert_eq!(
            seeds_to_catch(10, baseline).map(|(_, v)| v),
            None,
            "{name}: baseline not clean"
        );
    }
}

#[test]
fn negative_control_prototype_quorum_is_caught() {
    control_is_caught("prototype_quorum");
}

#[test]
fn negative_control_no_signature_check_is_caught() {
    control_is_caught("no_signature_check");
}

#[test]
fn negative_control_reply_before_write_is_caught() {
    control_is_caught("reply_before_write");
}

#[test]
fn negative_control_hash_ordered_leader_is_caught() {
    control_is_caught("hashmap_ordered_leader");
}

#[test]
fn negative_control_undeclared_amnesia_is_caught() {
    control_is_caught("amnesia_undeclared");
}

#[test]
fn negative_control_twins_scenario_above_f_is_caught() {
    control_is_caught("twins_scenario_above_f");
}

#[test]
fn more_than_f_byzantine_stake_is_caught() {
    control_is_caught("byzantine_above_f");
}

#[test]
fn negative_control_local_gc_depth_is_caught() {
    control_is_caught("local_gc_depth");
}

#[test]
fn negative_control_checkpoint_below_validity_is_caught() {
    control_is_caught("checkpoint_below_validity");
}

#[test]
fn negative_control_install_resets_last_voted_is_caught() {
    control_is_caught("install_resets_last_voted");
}

#[test]
fn negative_control_fill_without_chain_check_is_caught() {
    control_is_caught("fill_without_chain_check");
}

#[test]
fn negative_control_torn_install_is_caught() {
    control_is_caught("torn_install");
}
