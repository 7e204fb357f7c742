//! The negative controls (TESTING.md): planted bugs, or more Byzantine stake than the protocol
//! tolerates, that the invariant checkers must catch. `sleepyseal-sim --self-check` runs them
//! all; the `controls_*` tests run each one. One definition serves both.

use sleepyseal_core::committee::ProtocolConstants;

use crate::{Behaviour, Mutant, SimConfig};

/// One negative control.
pub struct Control {
    /// Its name.
    pub name: &'static str,
    /// What is planted.
    pub what: &'static str,
    /// Seeds tried before giving up.
    pub limit: u64,
    /// The scenario with the bug.
    pub make: fn(u64) -> SimConfig,
    /// The same scenario without it, if there is one (more than f Byzantine stake has none).
    pub baseline: Option<fn(u64) -> SimConfig>,
}

fn prototype_quorum(seed: u64) -> SimConfig {
    // S = 5 ≡ 2 (mod 3): the prototype quorum is 3 instead of 4; an equivocating twin exploits it.
    SimConfig {
        cores: 5,
        twins: 1,
        seed,
        rounds: 20,
        mutant: Mutant::PrototypeQuorum,
        ..SimConfig::default()
    }
}

fn no_signature_check(seed: u64) -> SimConfig {
    SimConfig {
        cores: 4,
        forger: true,
        seed,
        rounds: 20,
        mutant: Mutant::NoSignatureCheck,
        ..SimConfig::default()
    }
}

fn reply_before_write(seed: u64) -> SimConfig {
    SimConfig {
        cores: 4,
        restart: 3,
        sync_ms: (5, 25),
        seed,
        rounds: 20,
        mutant: Mutant::ReplyBeforeWrite,
        ..SimConfig::default()
    }
}

fn hash_ordered_leader(seed: u64) -> SimConfig {
    SimConfig {
        cores: 4,
        seed,
        rounds: 20,
        mutant: Mutant::HashMapOrderedLeader,
        ..SimConfig::default()
    }
}

fn byzantine_above_f(seed: u64) -> SimConfig {
    // n = 4 tolerates f = 1: two equivocating twins are more than the protocol promises to survive.
    SimConfig {
        cores: 4,
        twins: 2,
        seed,
        rounds: 20,
        ..SimConfig::default()
    }
}

fn twins_scenario_above_f(seed: u64) -> SimConfig {
    // Twins-style scenarios (generated leaders and per-phase reachability) with two twins at
    // n = 4: the same generator that finds nothing with one twin must find the violation.
    SimConfig {
        cores: 4,
        byzantine: 2,
        behaviour: Behaviour::TwinsScenario,
        seed,
        rounds: 20,
        ..SimConfig::default()
    }
}

fn amnesia_undeclared(seed: u64) -> SimConfig {
    // A core that forgets its store signs a second header for a round it already signed; told
    // it is honest, the checkers must see the equivocation.
    SimConfig {
        cores: 4,
        byzantine: 1,
        behaviour: Behaviour::Amnesia,
        undeclared_byzantine: true,
        seed,
        rounds: 20,
        ..SimConfig::default()
    }
}

fn local_gc_depth(seed: u64) -> SimConfig {
    // One honest core cuts the committed sub-DAG at another depth; an author extending old
    // chains into the present puts certificates between the two floors into leaders' histories.
    SimConfig {
        cores: 4,
        byzantine: 1,
        behaviour: Behaviour::OldChains,
        seed,
        rounds: 60,
        vary_storage: false,
        constants: ProtocolConstants {
            gc_depth: 8,
            ..ProtocolConstants::default()
        },
        mutant: Mutant::LocalGcDepth,
        ..SimConfig::default()
    }
}

fn checkpoint_below_validity(seed: u64) -> SimConfig {
    // A Byzantine key signs a fabricated checkpoint far ahead; cores that count a lone signer
    // as enough install it.
    SimConfig {
        cores: 4,
        byzantine: 1,
        behaviour: Behaviour::ForgedCheckpoints,
        seed,
        rounds: 20,
        mutant: Mutant::CheckpointBelowValidity,
        ..SimConfig::default()
    }
}

fn fill_without_chain_check(seed: u64) -> SimConfig {
    // A core away for hundreds of rounds installs a checkpoint and fills its gap; a hostile
    // driver hands it fills with fields changed under honest hashes. Cores that do not check
    // the chain hold them.
    SimConfig {
        byzantine: 1,
        behaviour: Behaviour::ForgedFills,
        mutant: Mutant::FillWithoutChainCheck,
        ..SimConfig::long_outage(4, 1, (10_000, 15_000), 200, seed)
    }
}

fn install_resets_last_voted(seed: u64) -> SimConfig {
    // A core restarted after a short outage lags more than GC_DEPTH commit rounds; the eager
    // installer gives it the oldest real checkpoint it must take, whose floor lies among the
    // core's latest own headers. Cores whose install forgets what they signed above the
    // checkpoint sign a second header for a round they had signed.
    SimConfig {
        cores: 4,
        restart: 1,
        byzantine: 1,
        behaviour: Behaviour::EagerInstalls,
        seed,
        rounds: 60,
        mutant: Mutant::InstallResetsLastVoted,
        ..SimConfig::default()
    }
}

fn torn_install(seed: u64) -> SimConfig {
    // A core away for hundreds of rounds installs a checkpoint and crashes at once or just after
    // the install's write is durable. Cores whose install write loses the consensus state come
    // back with the install recorded and the old state.
    SimConfig {
        mutant: Mutant::TornInstall,
        ..SimConfig::long_outage(4, 1, (10_000, 15_000), 200, seed)
    }
}

fn without_mutant(make: fn(u64) -> SimConfig, seed: u64) -> SimConfig {
    SimConfig {
        mutant: Mutant::None,
        ..make(seed)
    }
}

/// Every negative control.
pub fn all() -> Vec<Control> {
    vec![
        Control {
            name: "prototype_quorum",
            what: "quorum 2⌊S/3⌋+1 (too small for S = 5) with one equivocating twin",
            limit: 100,
            make: prototype_quorum,
            baseline: Some(|s| without_mutant(prototype_quorum, s)),
        },
        Control {
            name: "no_signature_check",
            what: "cores accept every signature, with a forging driver",
            limit: 100,
            make: no_signature_check,
            baseline: Some(|s| without_mutant(no_signature_check, s)),
        },
        Control {
            name: "reply_before_write",
            what: "replies released before the write is durable, with restarts",
            limit: 150,
            make: reply_before_write,
            baseline: Some(|s| without_mutant(reply_before_write, s)),
        },
        Control {
            name: "hashmap_ordered_leader",
            what: "each core orders leaders by its own hash map",
            limit: 100,
            make: hash_ordered_leader,
            baseline: Some(|s| without_mutant(hash_ordered_leader, s)),
        },
        Control {
            name: "local_gc_depth",
            what: "one honest core on half the committee's gc depth, with an old-chain author",
            limit: 50,
            make: local_gc_depth,
            baseline: Some(|s| without_mutant(local_gc_depth, s)),
        },
        Control {
            name: "checkpoint_below_validity",
            what: "cores install checkpoint certificates below V, with a checkpoint forger",
            limit: 50,
            make: checkpoint_below_validity,
            baseline: Some(|s| without_mutant(checkpoint_below_validity, s)),
        },
        Control {
            name: "fill_without_chain_check",
            what: "cores take gap fills without the commit chain check, with a fill forger",
            limit: 30,
            make: fill_without_chain_check,
            baseline: Some(|s| without_mutant(fill_without_chain_check, s)),
        },
        Control {
            name: "install_resets_last_voted",
            what: "an install forgets the core's votes and own headers above the checkpoint, \
                   with an eager installer and restarts",
            limit: 100,
            make: install_resets_last_voted,
            baseline: Some(|s| without_mutant(install_resets_last_voted, s)),
        },
        Control {
            name: "torn_install",
            what: "an install's write loses the consensus state, with long outages and crashes \
                   at installs",
            limit: 100,
            make: torn_install,
            baseline: Some(|s| without_mutant(torn_install, s)),
        },
        Control {
            name: "amnesia_undeclared",
            what: "a core restarting on an empty store, not declared Byzantine to the checkers",
            limit: 100,
            make: amnesia_undeclared,
            baseline: Some(|s| SimConfig {
                undeclared_byzantine: false,
                ..amnesia_undeclared(s)
            }),
        },
        Control {
            name: "twins_scenario_above_f",
            what: "Twins-style scenarios with two twins at n = 4 (f = 1)",
            limit: 200,
            make: twins_scenario_above_f,
            baseline: Some(|s| SimConfig {
                byzantine: 1,
                ..twins_scenario_above_f(s)
            }),
        },
        Control {
            name: "byzantine_above_f",
            what: "two equivocating twins at n = 4 (f = 1)",
            limit: 200,
            make: byzantine_above_f,
            baseline: None,
        },
    ]
}

/// The control called `name`.
pub fn named(name: &str) -> Control {
    all()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no control {name}"))
}
