//! Building a world from its config: who is Byzantine and how, the storage settings of the seed,
//! the committee and leader schedule (planted faults installed through the core's seams), the
//! core instances (twins included), the checkers and the drivers.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use sleepyseal_core::committee::{default_schedule, LeaderSchedule};
use sleepyseal_core::hash::Hasher;
use sleepyseal_core::testkit;
use sleepyseal_core::verify::VerifierConfig;
use sleepyseal_core::{AuthorityIndex, Committee, Verifier};
use sleepyseal_driver::state::DriverState;

use super::faults::generate_phases;
use super::{driver_config, old_chain, SimConfig, SimDriver, World};
use crate::check::Checker;
use crate::node::SimCore;
use crate::rng::SimRng;
use crate::{Behaviour, Mutant};

/// Rounds of generated leaders in a Twins scenario (round-robin after them).
const GENERATED_LEADER_ROUNDS: usize = 256;

/// The hostile drivers of a run: how many, and how they misbehave.
struct HostileDrivers {
    count: usize,
    behaviour: Behaviour,
}

impl World {
    /// The world of `config` at time 0, nothing scheduled yet.
    pub(super) fn new(mut config: SimConfig) -> World {
        let hostile = assign_byzantine(&mut config);
        vary_storage(&mut config);
        let committee = build_committee(&config);
        let scenario = config.behaviour == Behaviour::TwinsScenario && config.twins > 0;
        // The scenario's own generator: leaders first, phases once the drivers are counted.
        let mut scenario_rng = SimRng::new(config.seed ^ 0x7715_5CE7);
        let schedule = leader_schedule(&committee, scenario.then_some(&mut scenario_rng));
        let mut authority_of: Vec<AuthorityIndex> = committee.indices().collect();
        authority_of.extend((0..config.twins).map(|i| AuthorityIndex(i as u16)));
        let instances = authority_of
            .iter()
            .enumerate()
            .map(|(instance, a)| build_core(&config, &committee, &schedule, instance, *a))
            .collect();
        let checker = build_checker(&config, &committee, &schedule, authority_of.len());
        let drivers = build_drivers(&config, &committee, &hostile);
        let phases = if scenario {
            generate_phases(
                &mut scenario_rng,
                committee.size(),
                config.twins,
                drivers.len(),
            )
        } else {
            Vec::new()
        };
        World {
            rng: SimRng::new(config.seed),
            config,
            committee,
            schedule,
            phases,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            instances,
            authority_of,
            drivers,
            cut: HashSet::new(),
            down_for_good: HashSet::new(),
            restarted: HashSet::new(),
            install_crashed: HashSet::new(),
            rejoining: HashMap::new(),
            back_at: HashMap::new(),
            forged_checkpoints: 0,
            forged_fills: 0,
            eager_installs: 0,
            rejoin_rounds: Vec::new(),
            checker,
            trace: Hasher::new(b"SEAL/TRACE/v1"),
            events: 0,
            restarts: 0,
            scheduled_restarts: 0,
            acked: 0,
            tx_counter: 0,
            submitted: HashMap::new(),
            acked_transactions: Vec::new(),
            slow_transactions: 0,
        }
    }
}

/// Twins and hostile drivers use the Byzantine count their own way: driver behaviours turn it
/// into hostile drivers, `Mixed` adds one hostile driver, twin behaviours into twins. What is
/// left in `config.byzantine` counts Byzantine cores.
fn assign_byzantine(config: &mut SimConfig) -> HostileDrivers {
    let mut hostile = HostileDrivers {
        count: 0,
        behaviour: config.behaviour,
    };
    if config.behaviour.is_driver() {
        hostile.count = config.byzantine;
        config.byzantine = 0;
    } else if config.behaviour == Behaviour::Mixed && config.byzantine > 0 {
        hostile.count = 1;
        // Independent of the core behaviours' rotation (seed / 3), so every pairing occurs.
        hostile.behaviour =
            Behaviour::DRIVERS[(config.seed / 24) as usize % Behaviour::DRIVERS.len()];
    } else if config.behaviour.is_twin() {
        config.twins += config.byzantine;
        config.byzantine = 0;
    }
    hostile
}

/// Small gc depth, checkpoint interval and retention in two seeds out of three: garbage
/// collection, checkpoint boundaries, the retention window and catch-up across them run within
/// a short simulation. The window stays above the longest outage of the default fault schedule
/// (~20 rounds), so ordinary catch-up serves those cores; a core further behind rejoins through
/// a checkpoint (PROTOCOL.md §8a), which `--outage-ms` exercises.
fn vary_storage(config: &mut SimConfig) {
    if !config.vary_storage {
        return;
    }
    let (gc_depth, interval, retention) = match config.seed % 3 {
        0 => (
            config.constants.gc_depth,
            config.constants.checkpoint_interval,
            config.core.retention_rounds,
        ),
        1 => (6, 10, 24),
        _ => (3, 6, 20),
    };
    config.constants.gc_depth = gc_depth;
    config.constants.checkpoint_interval = interval;
    config.core.retention_rounds = retention;
}

/// The leader schedule of honest instances: generated from `scenario_rng` in a Twins scenario,
/// the default one otherwise.
fn leader_schedule(
    committee: &Arc<Committee>,
    scenario_rng: Option<&mut SimRng>,
) -> Arc<dyn LeaderSchedule> {
    match scenario_rng {
        Some(rng) => Arc::new(crate::GeneratedLeaders::new(
            rng,
            committee.size(),
            GENERATED_LEADER_ROUNDS,
        )),
        None => default_schedule(committee),
    }
}

/// The committee of the run, its instance id made at genesis from the constants as a testbed's
/// is (with the prototype's quorum rule under that planted fault).
fn build_committee(config: &SimConfig) -> Arc<Committee> {
    let stakes = config
        .stakes
        .clone()
        .unwrap_or_else(|| vec![1; config.cores]);
    assert_eq!(stakes.len(), config.cores, "one stake per core");
    let keys = testkit::committee_with_stakes(&stakes);
    let committee = Arc::new(
        Committee::genesis(
            b"sleepyseal-sim",
            keys.authorities().to_vec(),
            config.constants,
        )
        .expect("the simulation's committee is valid"),
    );
    if config.mutant == Mutant::PrototypeQuorum {
        return Arc::new(
            Committee::clone(&committee).with_threshold_rule(crate::planted::prototype_thresholds),
        );
    }
    committee
}

/// Core instance `instance`, of authority `a`: the planted faults of the config, and the
/// misbehaviour of a Byzantine authority (rotating with the seed under `Mixed`).
fn build_core(
    config: &SimConfig,
    committee: &Arc<Committee>,
    schedule: &Arc<dyn LeaderSchedule>,
    instance: usize,
    a: AuthorityIndex,
) -> SimCore {
    let schedule: Arc<dyn LeaderSchedule> = if config.mutant == Mutant::HashMapOrderedLeader {
        Arc::new(crate::HashOrderedLeaders::new(committee, instance))
    } else {
        schedule.clone()
    };
    // The planted faults: the last core on a depth of its own (the same instance id); every
    // core taking checkpoint certificates below V.
    let committee = if config.mutant == Mutant::LocalGcDepth && instance + 1 == committee.size() {
        Arc::new(crate::planted::local_gc_depth(committee))
    } else {
        committee.clone()
    };
    let committee = &committee;
    let mut verifier = Verifier::new(committee.clone(), VerifierConfig::default());
    if config.mutant == Mutant::CheckpointBelowValidity {
        verifier = verifier.with_checkpoint_rule(crate::planted::any_checkpoint_signer);
    }
    if config.mutant == Mutant::NoSignatureCheck {
        verifier = verifier.with_signature_check(crate::planted::accept_every_signature);
    }
    let mut node = SimCore::new(
        a.0,
        0,
        committee.clone(),
        schedule,
        config.core.clone(),
        verifier,
    );
    node.reply_before_write = config.mutant == Mutant::ReplyBeforeWrite;
    node.install_resets_last_voted = config.mutant == Mutant::InstallResetsLastVoted;
    node.torn_install = config.mutant == Mutant::TornInstall;
    if config.mutant == Mutant::FillWithoutChainCheck {
        node.fill_rule = Some(crate::planted::fill_without_chain_check);
        node.restart();
    }
    if let Some(behaviour) = core_behaviour(config, a) {
        node.behaviour = behaviour;
        node.seed_misbehaviour(config.seed);
        if behaviour == Behaviour::OldChains {
            // Its key signs through the old-chain adversary; the core itself never runs.
            node.crash();
        }
    }
    node
}

/// The misbehaviour of authority `a`, if it is one of the Byzantine cores (rotating with the
/// seed under `Mixed`).
fn core_behaviour(config: &SimConfig, a: AuthorityIndex) -> Option<Behaviour> {
    let a = a.as_usize();
    if a < config.twins || a >= config.twins + config.byzantine {
        return None;
    }
    Some(if config.behaviour == Behaviour::Mixed {
        let k = (config.seed as usize / 3) + a - config.twins;
        Behaviour::CORES[k % Behaviour::CORES.len()]
    } else {
        config.behaviour
    })
}

/// The checkers, told which authorities are Byzantine (not the undeclared ones of the negative
/// control).
fn build_checker(
    config: &SimConfig,
    committee: &Arc<Committee>,
    schedule: &Arc<dyn LeaderSchedule>,
    instances: usize,
) -> Checker {
    let declared = if config.undeclared_byzantine {
        config.twins
    } else {
        config.twins + config.byzantine
    };
    let byzantine = (0..declared).map(|i| AuthorityIndex(i as u16)).collect();
    Checker::new(committee.clone(), schedule.clone(), byzantine, instances)
}

/// The honest drivers, then the hostile ones, then the forger, then one old-chain adversary per
/// `old-chains` authority, then one home driver per authority (home core: that authority).
fn build_drivers(
    config: &SimConfig,
    committee: &Arc<Committee>,
    hostile: &HostileDrivers,
) -> Vec<SimDriver> {
    let chains: Vec<AuthorityIndex> = committee
        .indices()
        .filter(|a| core_behaviour(config, *a) == Some(Behaviour::OldChains))
        .collect();
    let forgers: Vec<AuthorityIndex> = committee
        .indices()
        .filter(|a| core_behaviour(config, *a) == Some(Behaviour::ForgedCheckpoints))
        .collect();
    let first_chain = config.drivers + hostile.count + usize::from(config.forger);
    let first_forger = first_chain + chains.len();
    let plain = first_forger + forgers.len();
    let homes = if config.home_drivers.is_some() {
        committee.size()
    } else {
        0
    };
    (0..plain + homes)
        .map(|d| {
            let is_hostile = d >= config.drivers && d < config.drivers + hostile.count;
            let behaviour = if is_hostile {
                hostile.behaviour
            } else {
                Behaviour::Honest
            };
            let mut driver = driver_config(&config.driver, behaviour);
            if d >= plain {
                driver.home_core = Some(AuthorityIndex((d - plain) as u16));
            }
            let old_chain = (first_chain..first_forger)
                .contains(&d)
                .then(|| old_chain::OldChain::new(chains[d - first_chain]));
            SimDriver {
                state: old_chain
                    .is_none()
                    .then(|| DriverState::new(committee.clone(), driver.clone(), (d as u64) << 48)),
                old_chain,
                checkpoint_forger: (first_forger..plain)
                    .contains(&d)
                    .then(|| forgers[d - first_forger]),
                config: driver,
                incarnation: 0,
                in_flight: HashMap::new(),
                forger: config.forger && d == config.drivers + hostile.count,
                behaviour,
                history: VecDeque::new(),
                held: Vec::new(),
            }
        })
        .collect()
}
