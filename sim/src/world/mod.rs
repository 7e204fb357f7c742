//! The simulated world: core instances and drivers exchanging encoded requests over a seeded
//! network, with simulated disks, faults and a load client, run as one discrete-event loop.
//!
//! Layout:
//! - `config`: a run's parameters ([`SimConfig`]) and what it showed ([`SimReport`]);
//! - here: the world's state, [`run`] and the report;
//! - `setup`: building the world from its config (Byzantine roles, committee, cores, drivers);
//! - `events`: the event loop, the network, delivery to cores and drivers, disk syncs, the trace;
//! - `faults`: crash, restart and link-cut schedules, and the Twins scenario's phases and routing;
//! - `hostile`: hostile drivers and the forger;
//! - `old_chain`: the adversary that extends old chains into the present (`old-chains`);
//! - `forged_checkpoints`: forged checkpoint certificates offered to honest cores;
//! - `eager_installs`: real checkpoint certificates installed as early as the rules allow;
//! - `load`: the load client and S9 (acknowledged transactions never lost);
//! - `debug`: `--debug-dump` and `--trace-instance` output.
//!
//! Every random choice comes from one generator seeded by the run (the Twins scenario and
//! Byzantine cores have their own), drawn in a fixed order: the trace hash of a seed depends on
//! that order, so a change that reorders draws or scheduled events changes every trace.

mod config;
mod debug;
mod eager_installs;
mod events;
mod faults;
mod forged_checkpoints;
mod forged_fills;
mod hostile;
mod load;
mod old_chain;
mod setup;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use sleepyseal_core::committee::LeaderSchedule;
use sleepyseal_core::hash::Hasher;
use sleepyseal_core::protocol::RequestBody;
use sleepyseal_core::{AuthorityIndex, Committee, Request};
use sleepyseal_driver::state::{DriverConfig, DriverState};

use crate::check::Checker;
use crate::node::SimCore;
use crate::rng::SimRng;
use crate::Behaviour;
pub use config::{HomeDrivers, SimConfig, SimDebug, SimReport, SIM_PAYLOAD_GRACE_MS};
use events::Event;
use faults::Phase;

/// A restarted core has rejoined once its round is within this many rounds of the others'
/// highest (PROTOCOL.md §9, liveness).
const REJOINED_WITHIN: u64 = 2;

/// The actor id of the load client.
const CLIENT: usize = usize::MAX;

/// A simulated driver process.
struct SimDriver {
    /// The driver's state, `None` while crashed (or never started).
    state: Option<DriverState>,
    /// Its settings (a restart starts from them again).
    config: DriverConfig,
    /// Restarts so far (part of its request ids, so a restarted driver's ids are new).
    incarnation: u64,
    /// Requests sent and not answered, by id (what a reply is marked delivered against).
    in_flight: HashMap<u64, RequestBody>,
    /// Whether it injects forged certificates.
    forger: bool,
    /// `Honest`, or the driver behaviour of a hostile driver.
    behaviour: Behaviour,
    /// A hostile driver's earlier requests (replayed, mixed).
    history: VecDeque<Request>,
    /// A reordering driver's requests held back: (instance, id, bytes).
    held: Vec<(usize, u64, Bytes)>,
    /// The old-chain adversary using this driver slot (no driver state then).
    old_chain: Option<old_chain::OldChain>,
    /// The Byzantine authority whose forged checkpoints this (otherwise honest) driver offers.
    checkpoint_forger: Option<AuthorityIndex>,
}

/// Everything one run simulates.
struct World {
    /// The run's parameters (after `setup` adjusted the Byzantine roles and storage).
    config: SimConfig,
    /// The committee every instance and driver uses.
    committee: Arc<Committee>,
    /// The leader schedule every honest instance runs (generated in Twins scenarios).
    schedule: Arc<dyn LeaderSchedule>,
    /// Twins-scenario phases (empty otherwise).
    phases: Vec<Phase>,
    /// The run's generator: network, faults, load and hostile drivers.
    rng: SimRng,
    /// Virtual time, in ms.
    now: u64,
    /// Events scheduled so far (orders events of one time).
    seq: u64,
    /// Pending events by (time, sequence).
    queue: BTreeMap<(u64, u64), Event>,
    /// Core instances: one per authority, then the twins.
    instances: Vec<SimCore>,
    /// Authority of each instance.
    authority_of: Vec<AuthorityIndex>,
    /// Honest drivers, then hostile ones, then the forger, then the old-chain adversaries (one
    /// per `old-chains` authority), then the home drivers (one per
    /// authority, in authority order).
    drivers: Vec<SimDriver>,
    /// Cut (driver, instance) links.
    cut: HashSet<(usize, usize)>,
    /// Instances crashed for good (not judged on liveness).
    down_for_good: HashSet<usize>,
    /// Instances restarted at least once.
    restarted: HashSet<usize>,
    /// Instances crashed at an install already (`install_crashes`: once each).
    install_crashed: HashSet<usize>,
    /// Restarted instances not yet back within [`REJOINED_WITHIN`] rounds of the others, with
    /// the others' highest round when they restarted.
    rejoining: HashMap<usize, u64>,
    /// Per restarted instance, the others' highest round at its latest restart (from there on
    /// its acknowledged transactions are judged slow or not).
    back_at: HashMap<usize, u64>,
    /// Per rejoin: rounds the others advanced from the restart until the restarted core was
    /// within [`REJOINED_WITHIN`] rounds of them.
    rejoin_rounds: Vec<u64>,
    /// The invariant checkers.
    checker: Checker,
    /// Hash over the processed events.
    trace: Hasher,
    /// Events processed.
    events: u64,
    /// Core restarts performed.
    restarts: u64,
    /// Restarts scheduled; a run is not done before all happened.
    scheduled_restarts: u64,
    /// Transactions acknowledged to the load client.
    acked: u64,
    /// Transactions submitted (also the client's request ids).
    tx_counter: u64,
    /// Client transactions in flight, by request id: the transaction and its home instance.
    submitted: HashMap<u64, (Bytes, usize)>,
    /// Acknowledged client transactions, their home instance and its round when acknowledged.
    acked_transactions: Vec<(Bytes, usize, u64)>,
    /// Forged checkpoint certificates offered to the honest cores.
    forged_checkpoints: u64,
    /// Damaged fills handed to honest cores (`forged-fills`).
    forged_fills: u64,
    /// Real certificates offered early (`eager-installs`).
    eager_installs: u64,
    /// Acknowledged transactions not committed at their home core by the end although
    /// acknowledged long before it (a liveness failure).
    slow_transactions: u64,
}

/// Runs one seed to completion.
pub fn run(config: SimConfig) -> SimReport {
    let mut world = World::new(config);
    world.schedule_faults();
    world.start();
    world.run_loop();
    world.check_transactions();
    if world.config.debug.dump {
        world.debug_dump();
    }
    world.report()
}

impl World {
    /// Index of the first home driver in `drivers` (its length if there are none).
    fn first_home_driver(&self) -> usize {
        let homes = if self.config.home_drivers.is_some() {
            self.committee.size()
        } else {
            0
        };
        self.drivers.len() - homes
    }

    /// Honest authorities' primary instances, the ones liveness is judged on.
    fn honest_instances(&self) -> Vec<usize> {
        (self.config.twins + self.config.byzantine..self.committee.size()).collect()
    }

    /// What the run showed.
    fn report(self) -> SimReport {
        let live_instances: Vec<usize> = self
            .honest_instances()
            .into_iter()
            .filter(|i| !self.down_for_good.contains(i))
            .collect();
        let (min_commits, max_gap) = self.checker.liveness(&live_instances);
        let reached = |i: &usize| {
            self.instances[*i]
                .core
                .as_ref()
                .is_some_and(|c| c.consensus().last_committed_round.0 >= self.config.rounds)
        };
        let live = live_instances.iter().all(reached);
        let restarted_caught_up = self.restarted.iter().filter(|i| reached(i)).count() as u64;
        let top_round = self
            .instances
            .iter()
            .filter_map(|n| n.core.as_ref().map(|c| c.round()))
            .max()
            .unwrap_or_default();
        let (old_chains_joined, old_chain_certificates, old_chain_committed) =
            self.old_chain_figures();
        let honest: Vec<&sleepyseal_core::Core> = self
            .honest_instances()
            .into_iter()
            .filter_map(|i| self.instances[i].core.as_ref())
            .collect();
        // Over every incarnation: a core's counters start again at a restart.
        let counted = |f: fn(&sleepyseal_core::CoreCounters) -> u64| -> u64 {
            self.honest_instances()
                .into_iter()
                .map(|i| self.instances[i].counters_total(f))
                .sum()
        };
        let installs = counted(|c| c.checkpoints_installed);
        let gap_entries_filled = counted(|c| c.gap_entries_filled);
        let gaps_open = honest
            .iter()
            .filter(|c| {
                c.install_record()
                    .is_some_and(|r| r.fill_next > r.old_index)
            })
            .count() as u64;
        let possibly_duplicated = counted(|c| c.transactions_possibly_duplicated);
        SimReport {
            seed: self.config.seed,
            violations: self.checker.violations.clone(),
            live,
            min_commits,
            max_commit_gap_rounds: max_gap,
            restarts: self.restarts,
            restarted_caught_up,
            top_round,
            events: self.events,
            time_ms: self.now,
            trace: self.trace.finish(),
            acked_transactions: self.acked,
            slow_transactions: self.slow_transactions,
            old_chains_joined,
            old_chain_certificates,
            old_chain_committed,
            checkpoints: self.checker.checkpoints_seen(),
            forged_checkpoints: self.forged_checkpoints,
            forged_fills: self.forged_fills,
            eager_installs: self.eager_installs,
            install_crashes: self.install_crashed.len() as u64,
            installs,
            gap_entries_filled,
            gaps_open,
            possibly_duplicated,
            rejoin_rounds: self.rejoin_rounds.clone(),
            not_rejoined: self.rejoining.len() as u64,
        }
    }
}

/// A driver's settings: the omit-leader driver is the fast one, polling five times as often as
/// the honest drivers.
fn driver_config(honest: &DriverConfig, behaviour: Behaviour) -> DriverConfig {
    let mut config = honest.clone();
    if behaviour == Behaviour::OmitLeader {
        config.poll_interval_ms = (config.poll_interval_ms / 5).max(1);
    }
    config
}
