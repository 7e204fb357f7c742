//! The simulated world: actors, the event queue, fault schedules, and the run loop.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use sleepyseal_core::codec::{Decode, Encode};
use sleepyseal_core::committee::{default_schedule, LeaderSchedule};
use sleepyseal_core::crypto::Signature;
use sleepyseal_core::hash::Hasher;
use sleepyseal_core::messages::Header;
use sleepyseal_core::protocol::{RequestBody, Response};
use sleepyseal_core::testkit;
use sleepyseal_core::verify::VerifierConfig;
use sleepyseal_core::{
    AuthorityIndex, Certificate, Committee, CoreConfig, Digest, Millis, Request, Round, Verifier,
};

use crate::check::Checker;
use crate::node::{Handled, PendingReply, SimCore};
use crate::rng::SimRng;
use crate::{Behaviour, Mutant};
use sleepyseal_driver::state::{DriverConfig, DriverState, Outgoing};
use std::collections::VecDeque;

/// The actor id of the load client.
const CLIENT: usize = usize::MAX;
/// How often drivers look at timers.
const DRIVER_TICK_MS: u64 = 10;

/// One simulation's parameters.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Validators.
    pub cores: usize,
    /// Stake per validator (default: 1 each).
    pub stakes: Option<Vec<u64>>,
    /// Drivers (all honest).
    pub drivers: usize,
    /// The seed.
    pub seed: u64,
    /// Stop once every live honest core committed a leader at or above this round.
    pub rounds: u64,
    /// Give up (liveness failure) after this much virtual time.
    pub max_time_ms: u64,
    /// Cores crashed for good, early in the run.
    pub crash: usize,
    /// Cores crashed and restarted from their store, one after another.
    pub restart: usize,
    /// Kill and restart a driver during the run.
    pub driver_crash: bool,
    /// One-way latency range.
    pub latency_ms: (u64, u64),
    /// Message loss, per mille.
    pub drop_per_mille: u32,
    /// Message duplication, per mille.
    pub duplicate_per_mille: u32,
    /// Cut random driver–core links for a while.
    pub partitions: bool,
    /// Disk sync latency range.
    pub sync_ms: (u64, u64),
    /// Equivocating twins: the first `twins` authorities run two cores with one key.
    pub twins: usize,
    /// Byzantine cores: the `byzantine` authorities after the twins misbehave as `behaviour`.
    pub byzantine: usize,
    /// How the Byzantine cores misbehave.
    pub behaviour: crate::Behaviour,
    /// Negative control: the checkers are not told that the `byzantine` cores are Byzantine, so
    /// whatever they break is charged to honest cores and must show as a violation.
    pub undeclared_byzantine: bool,
    /// Add a driver that injects certificates with forged signatures.
    pub forger: bool,
    /// Transactions per second submitted by the load client.
    pub load_tx_per_s: u64,
    /// Negative control to plant.
    pub mutant: Mutant,
    /// Two seeds in three run with a small gc depth and retention window (see `World::new`).
    pub vary_storage: bool,
    /// Core settings.
    pub core: CoreConfig,
    /// Driver settings.
    pub driver: DriverConfig,
    /// Debugging output on stderr (off by default; the trace does not depend on it).
    pub debug: SimDebug,
}

/// Debugging output of one run, chosen on the command line (`--debug-dump`,
/// `--trace-instance`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SimDebug {
    /// At the end, print each core's and driver's state.
    pub dump: bool,
    /// Print every reply this instance sends a driver.
    pub trace_instance: Option<usize>,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            cores: 4,
            stakes: None,
            drivers: 2,
            seed: 0,
            rounds: 30,
            max_time_ms: 120_000,
            crash: 0,
            restart: 0,
            driver_crash: true,
            latency_ms: (1, 15),
            drop_per_mille: 10,
            duplicate_per_mille: 10,
            partitions: true,
            sync_ms: (1, 4),
            twins: 0,
            byzantine: 0,
            behaviour: crate::Behaviour::Honest,
            undeclared_byzantine: false,
            forger: false,
            load_tx_per_s: 100,
            mutant: Mutant::None,
            vary_storage: true,
            core: CoreConfig {
                leader_timeout_ms: 300,
                vote_timeout_ms: 300,
                batch_size_bytes: 4_096,
                ..CoreConfig::default()
            },
            driver: DriverConfig {
                request_timeout_ms: 300,
                poll_interval_ms: 30,
                ..DriverConfig::default()
            },
            debug: SimDebug::default(),
        }
    }
}

/// What one seed showed.
#[derive(Clone, Debug)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Broken invariants (empty when safe).
    pub violations: Vec<crate::Violation>,
    /// Every live honest core reached the target round.
    pub live: bool,
    /// Fewest committed leaders at any live honest core.
    pub min_commits: u64,
    /// Largest gap, in rounds, between successive committed leaders at a live honest core.
    pub max_commit_gap_rounds: u64,
    /// Core restarts performed.
    pub restarts: u64,
    /// Restarted cores that reached the target round with the common commit hash.
    pub restarted_caught_up: u64,
    /// Highest round reached.
    pub top_round: Round,
    /// Events processed.
    pub events: u64,
    /// Virtual time at the end.
    pub time_ms: u64,
    /// Hash over the processed events (S7: same seed, same trace).
    pub trace: Digest,
    /// Transactions acknowledged to the load client.
    pub acked_transactions: u64,
    /// Acknowledged transactions still uncommitted at their core at the end although that core
    /// advanced more than gc depth + 20 rounds since (their header was not certified, possibly
    /// more than once: a latency tail, not a loss).
    pub slow_transactions: u64,
}

enum Event {
    Request {
        from: usize,
        instance: usize,
        id: u64,
        bytes: Bytes,
    },
    Reply {
        to: usize,
        instance: usize,
        id: u64,
        bytes: Bytes,
    },
    SyncDone {
        instance: usize,
        epoch: u64,
    },
    DriverTick {
        driver: usize,
    },
    Crash {
        instance: usize,
        restart_after_ms: Option<u64>,
    },
    Restart {
        instance: usize,
    },
    DriverCrash {
        driver: usize,
        restart_after_ms: u64,
    },
    DriverRestart {
        driver: usize,
    },
    Cut {
        driver: usize,
        instance: usize,
        heal_after_ms: u64,
    },
    Heal {
        driver: usize,
        instance: usize,
    },
    Submit,
}

struct SimDriver {
    state: Option<DriverState>,
    incarnation: u64,
    in_flight: HashMap<u64, RequestBody>,
    forger: bool,
    /// `Honest`, or the driver behaviour of a hostile driver.
    behaviour: Behaviour,
    /// A hostile driver's earlier requests (replayed, mixed).
    history: VecDeque<Request>,
    /// A reordering driver's requests held back: (instance, id, bytes).
    held: Vec<(usize, u64, Bytes)>,
}

/// One phase of a Twins scenario: until `until` ms, `view[driver][authority]` is the instance of
/// that authority the driver reaches (`None`: cut off).
struct Phase {
    until: u64,
    view: Vec<Vec<Option<usize>>>,
}

/// Length of the generated part of a Twins scenario; after it every link heals (liveness is
/// judged after this global stabilisation time, safety throughout).
const SCENARIO_MS: u64 = 6_000;

struct World {
    config: SimConfig,
    committee: Arc<Committee>,
    /// The leader schedule every honest instance runs (generated in Twins scenarios).
    schedule: Arc<dyn LeaderSchedule>,
    /// Twins-scenario phases (empty otherwise).
    phases: Vec<Phase>,
    rng: SimRng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    instances: Vec<SimCore>,
    /// Authority of each instance.
    authority_of: Vec<AuthorityIndex>,
    drivers: Vec<SimDriver>,
    cut: HashSet<(usize, usize)>,
    down_for_good: HashSet<usize>,
    restarted: HashSet<usize>,
    checker: Checker,
    trace: Hasher,
    events: u64,
    restarts: u64,
    /// Restarts scheduled; a run is not done before all happened.
    scheduled_restarts: u64,
    acked: u64,
    tx_counter: u64,
    /// Client transactions in flight, by request id: the transaction and its home instance.
    submitted: HashMap<u64, (Bytes, usize)>,
    /// Acknowledged client transactions, their home instance and its round when acknowledged.
    acked_transactions: Vec<(Bytes, usize, u64)>,
    /// Acknowledged transactions not committed at their home core by the end although
    /// acknowledged long before it (a liveness failure).
    slow_transactions: u64,
}

/// An acknowledged transaction still uncommitted at its home core when that core has advanced
/// this many rounds past gc depth since the acknowledgement is counted as slow (a header that was
/// never certified gives its transactions back only after gc depth rounds).
const SLOW_AFTER_EXTRA_ROUNDS: u64 = 20;

/// Runs one seed to completion.
pub fn run(config: SimConfig) -> SimReport {
    let mut world = World::new(config);
    world.schedule_faults();
    world.run_loop();
    world.check_transactions();
    if world.config.debug.dump {
        world.debug_dump();
    }
    world.report()
}

fn build_committee(config: &SimConfig) -> Arc<Committee> {
    let stakes = config
        .stakes
        .clone()
        .unwrap_or_else(|| vec![1; config.cores]);
    assert_eq!(stakes.len(), config.cores, "one stake per core");
    let instance = Hasher::new(b"SEAL/SIM/v1").update(b"instance").finish();
    let committee = testkit::committee_for(instance, &stakes);
    if config.mutant == Mutant::PrototypeQuorum {
        return Arc::new(
            Committee::clone(&committee).with_threshold_rule(crate::planted::prototype_thresholds),
        );
    }
    committee
}

impl World {
    fn new(mut config: SimConfig) -> World {
        // Twins and hostile drivers use the Byzantine count their own way.
        let mut hostile_drivers = 0;
        let mut driver_behaviour = config.behaviour;
        if config.behaviour.is_driver() {
            hostile_drivers = config.byzantine;
            config.byzantine = 0;
        } else if config.behaviour == Behaviour::Mixed && config.byzantine > 0 {
            hostile_drivers = 1;
            // Independent of the core behaviours' rotation (seed / 3), so every pairing occurs.
            driver_behaviour =
                Behaviour::DRIVERS[(config.seed / 24) as usize % Behaviour::DRIVERS.len()];
        } else if config.behaviour.is_twin() {
            config.twins += config.byzantine;
            config.byzantine = 0;
        }
        if config.vary_storage {
            // Small gc depth and retention in two seeds out of three: garbage collection, the
            // retention window and catch-up across them run within a short simulation. The
            // window stays above the longest outage of the fault schedule (~20 rounds): a core
            // that falls behind by more than gc depth + retention cannot catch up (there is no
            // state sync yet), which would be a liveness failure of the configuration.
            let (gc_depth, retention) = match config.seed % 3 {
                0 => (config.core.gc_depth, config.core.retention_rounds),
                1 => (6, 24),
                _ => (3, 20),
            };
            config.core.gc_depth = gc_depth;
            config.core.retention_rounds = retention;
        }
        let committee = build_committee(&config);
        let scenario = config.behaviour == Behaviour::TwinsScenario && config.twins > 0;
        let mut scenario_rng = SimRng::new(config.seed ^ 0x7715_5CE7);
        let schedule: Arc<dyn LeaderSchedule> = if scenario {
            Arc::new(crate::GeneratedLeaders::new(
                &mut scenario_rng,
                committee.size(),
                256,
            ))
        } else {
            default_schedule(&committee)
        };
        let mut authority_of: Vec<AuthorityIndex> = committee.indices().collect();
        authority_of.extend((0..config.twins).map(|i| AuthorityIndex(i as u16)));
        let instances = authority_of
            .iter()
            .enumerate()
            .map(|(instance, a)| {
                let schedule: Arc<dyn LeaderSchedule> =
                    if config.mutant == Mutant::HashMapOrderedLeader {
                        Arc::new(crate::HashOrderedLeaders::new(&committee, instance))
                    } else {
                        schedule.clone()
                    };
                let mut verifier = Verifier::new(committee.clone(), VerifierConfig::default());
                if config.mutant == Mutant::NoSignatureCheck {
                    verifier =
                        verifier.with_signature_check(crate::planted::accept_every_signature);
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
                let a = a.as_usize();
                if a >= config.twins && a < config.twins + config.byzantine {
                    node.behaviour = if config.behaviour == Behaviour::Mixed {
                        let k = (config.seed as usize / 3) + a - config.twins;
                        Behaviour::CORES[k % Behaviour::CORES.len()]
                    } else {
                        config.behaviour
                    };
                    node.seed_misbehaviour(config.seed);
                }
                node
            })
            .collect();
        let declared = if config.undeclared_byzantine {
            config.twins
        } else {
            config.twins + config.byzantine
        };
        let byzantine = (0..declared).map(|i| AuthorityIndex(i as u16)).collect();
        let checker = Checker::new(
            committee.clone(),
            schedule.clone(),
            byzantine,
            authority_of.len(),
        );
        let total_drivers = config.drivers + hostile_drivers + usize::from(config.forger);
        let drivers: Vec<SimDriver> = (0..total_drivers)
            .map(|d| {
                let hostile = d >= config.drivers && d < config.drivers + hostile_drivers;
                let behaviour = if hostile {
                    driver_behaviour
                } else {
                    Behaviour::Honest
                };
                SimDriver {
                    state: Some(DriverState::new(
                        committee.clone(),
                        driver_config(&config.driver, behaviour),
                        (d as u64) << 48,
                    )),
                    incarnation: 0,
                    in_flight: HashMap::new(),
                    forger: d >= config.drivers + hostile_drivers,
                    behaviour,
                    history: VecDeque::new(),
                    held: Vec::new(),
                }
            })
            .collect();
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

    fn at(&mut self, delay_ms: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((self.now + delay_ms, self.seq), event);
    }

    /// Which instance of `authority` a driver talks to, if any: the current Twins-scenario
    /// phase decides; otherwise twins are split between drivers by parity.
    fn route(&self, driver: usize, authority: AuthorityIndex) -> Option<usize> {
        if let Some(phase) = self.phases.iter().find(|p| self.now < p.until) {
            return phase.view[driver][authority.as_usize()];
        }
        Some(
            if authority.as_usize() < self.config.twins && driver % 2 == 1 {
                self.committee.size() + authority.as_usize()
            } else {
                authority.as_usize()
            },
        )
    }

    /// Honest authorities' primary instances, the ones liveness is judged on.
    fn honest_instances(&self) -> Vec<usize> {
        (self.config.twins + self.config.byzantine..self.committee.size()).collect()
    }

    fn schedule_faults(&mut self) {
        let span = self.config.max_time_ms.min(8_000);
        let mut candidates = self.honest_instances();
        // Crash for good, then restart others: never the same core twice.
        for _ in 0..self.config.crash.min(candidates.len()) {
            let instance = candidates.remove(self.rng.index(candidates.len()));
            let when = self.rng.range(0, span / 4);
            self.down_for_good.insert(instance);
            self.at(
                when,
                Event::Crash {
                    instance,
                    restart_after_ms: None,
                },
            );
        }
        for k in 0..self.config.restart.min(candidates.len()) as u64 {
            let instance = candidates.remove(self.rng.index(candidates.len()));
            let slot = span / (self.config.restart as u64 + 1);
            let when = slot * k + self.rng.range(slot / 4, slot);
            let down = self.rng.range(100, 1_200);
            self.scheduled_restarts += 1;
            self.at(
                when,
                Event::Crash {
                    instance,
                    restart_after_ms: Some(down),
                },
            );
        }
        if self.config.driver_crash && self.config.drivers > 0 {
            let driver = self.rng.index(self.config.drivers);
            let when = self.rng.range(span / 8, span / 2);
            let down = self.rng.range(20, 400);
            self.at(
                when,
                Event::DriverCrash {
                    driver,
                    restart_after_ms: down,
                },
            );
        }
        if self.config.partitions {
            let mut t = 0;
            while t < span {
                t += self.rng.range(300, 1_500);
                let driver = self.rng.index(self.drivers.len());
                let instance = self.rng.index(self.instances.len());
                let heal = self.rng.range(50, 600);
                self.at(
                    t,
                    Event::Cut {
                        driver,
                        instance,
                        heal_after_ms: heal,
                    },
                );
            }
        }
        for d in 0..self.drivers.len() {
            self.at(0, Event::DriverTick { driver: d });
        }
        if self.config.load_tx_per_s > 0 {
            self.at(1, Event::Submit);
        }
    }

    fn run_loop(&mut self) {
        while let Some(((time, _), event)) = self.queue.pop_first() {
            if time > self.config.max_time_ms {
                break;
            }
            self.now = time;
            self.events += 1;
            self.process(event);
            if self.events % 64 == 0 && self.done() {
                break;
            }
        }
    }

    fn done(&self) -> bool {
        self.restarts >= self.scheduled_restarts
            && self
                .honest_instances()
                .iter()
                .filter(|i| !self.down_for_good.contains(i))
                .all(|i| {
                    self.instances[*i]
                        .core
                        .as_ref()
                        .is_some_and(|c| c.consensus().last_committed_round.0 >= self.config.rounds)
                })
    }

    fn trace(&mut self, tag: u8, a: usize, b: u64, bytes: &[u8]) {
        self.trace
            .update(&self.now.to_le_bytes())
            .update(&[tag])
            .update(&(a as u64).to_le_bytes())
            .update(&b.to_le_bytes())
            .update(&(bytes.len() as u64).to_le_bytes());
        if bytes.len() <= 256 {
            self.trace.update(bytes);
        }
    }

    fn process(&mut self, event: Event) {
        match event {
            Event::Request {
                from,
                instance,
                id,
                bytes,
            } => {
                self.trace(1, instance, id, &bytes);
                self.deliver_request(from, instance, id, bytes);
            }
            Event::Reply {
                to,
                instance,
                id,
                bytes,
            } => {
                self.trace(2, instance, id, &bytes);
                self.deliver_reply(to, instance, id, bytes);
            }
            Event::SyncDone { instance, epoch } => {
                self.trace(3, instance, epoch, &[]);
                let replies = self.instances[instance].finish_sync(epoch);
                for reply in replies {
                    self.send_reply(instance, reply);
                }
                self.maybe_start_sync(instance);
            }
            Event::DriverTick { driver } => {
                self.driver_poll(driver);
                let tick = if self.drivers[driver].behaviour == Behaviour::OmitLeader {
                    DRIVER_TICK_MS / 5
                } else {
                    DRIVER_TICK_MS
                };
                self.at(tick, Event::DriverTick { driver });
            }
            Event::Crash {
                instance,
                restart_after_ms,
            } => {
                self.trace(4, instance, 0, &[]);
                self.instances[instance].crash();
                if let Some(down) = restart_after_ms {
                    self.at(down, Event::Restart { instance });
                }
            }
            Event::Restart { instance } => {
                self.trace(5, instance, 0, &[]);
                self.instances[instance].restart();
                self.restarts += 1;
                self.restarted.insert(instance);
                self.check_instance(instance);
            }
            Event::DriverCrash {
                driver,
                restart_after_ms,
            } => {
                self.drivers[driver].state = None;
                self.drivers[driver].in_flight.clear();
                self.at(restart_after_ms, Event::DriverRestart { driver });
            }
            Event::DriverRestart { driver } => {
                let d = &mut self.drivers[driver];
                d.incarnation += 1;
                let base = ((driver as u64) << 48) | (d.incarnation << 40);
                d.state = Some(DriverState::new(
                    self.committee.clone(),
                    driver_config(&self.config.driver, d.behaviour),
                    base,
                ));
            }
            Event::Cut {
                driver,
                instance,
                heal_after_ms,
            } => {
                self.cut.insert((driver, instance));
                self.at(heal_after_ms, Event::Heal { driver, instance });
            }
            Event::Heal { driver, instance } => {
                self.cut.remove(&(driver, instance));
            }
            Event::Submit => self.submit(),
        }
    }

    /// Sends over the network: maybe dropped, maybe duplicated, random latency (so reordered).
    fn transmit(&mut self, driver: Option<usize>, instance: usize, make: impl Fn() -> Event) {
        if driver.is_some_and(|d| self.cut.contains(&(d, instance))) {
            return;
        }
        if self.rng.chance(self.config.drop_per_mille) {
            return;
        }
        // Client submissions travel over QUIC streams, which never duplicate a request: only
        // driver traffic (retried and replayed by design) is duplicated.
        let copies = if driver.is_some() && self.rng.chance(self.config.duplicate_per_mille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let (low, high) = self.config.latency_ms;
            let delay = self.rng.range(low, high);
            self.at(delay, make());
        }
    }

    fn deliver_request(&mut self, from: usize, instance: usize, id: u64, bytes: Bytes) {
        let decoded = Request::from_bytes(bytes.clone()).ok();
        if let Some(r) = &decoded {
            self.checker.observe_request(r);
        }
        let handled = self.instances[instance].handle(Millis(self.now), from, id, bytes);
        match handled {
            Handled::Down => return,
            Handled::ReplyNow(reply) => self.send_reply(instance, reply),
            Handled::Queued { start_sync, early } => {
                if let Some(reply) = early {
                    self.send_reply(instance, reply);
                }
                if start_sync {
                    self.maybe_start_sync(instance);
                }
            }
        }
        if let (Some(request), Some(core)) = (&decoded, self.instances[instance].core.as_ref()) {
            self.checker.after_insert(instance, core, request);
        }
        self.check_instance(instance);
    }

    fn maybe_start_sync(&mut self, instance: usize) {
        if self.instances[instance].start_sync() {
            let (low, high) = self.config.sync_ms;
            let delay = self.rng.range(low, high);
            let epoch = self.instances[instance].epoch;
            self.at(delay, Event::SyncDone { instance, epoch });
        }
    }

    fn check_instance(&mut self, instance: usize) {
        if let Some(core) = self.instances[instance].core.as_ref() {
            self.checker.after_step(instance, core);
        }
    }

    fn send_reply(&mut self, instance: usize, reply: PendingReply) {
        if let Ok(response) = Response::from_bytes(reply.reply.clone()) {
            self.checker
                .observe_reply(instance, self.authority_of[instance], &response);
        }
        let driver = (reply.to != CLIENT).then_some(reply.to);
        let PendingReply {
            to,
            id,
            reply: bytes,
        } = reply;
        self.transmit(driver, instance, || Event::Reply {
            to,
            instance,
            id,
            bytes: bytes.clone(),
        });
    }

    fn deliver_reply(&mut self, to: usize, instance: usize, id: u64, bytes: Bytes) {
        if to == CLIENT {
            if let Ok(Response::Submitted { accepted }) = Response::from_bytes(bytes) {
                self.acked += u64::from(accepted);
                if let Some((tx, home)) = self.submitted.remove(&id) {
                    let round = self.instances[home]
                        .core
                        .as_ref()
                        .map_or(0, |c| c.round().0);
                    self.acked_transactions.push((tx, home, round));
                }
            }
            return;
        }
        let authority = self.authority_of[instance];
        let now = Millis(self.now);
        let d = &mut self.drivers[to];
        let request = d.in_flight.remove(&id);
        let Some(state) = d.state.as_mut() else {
            return;
        };
        match Response::from_bytes(bytes) {
            Ok(response) => {
                if self.config.debug.trace_instance == Some(instance) {
                    eprintln!(
                        "t={} driver {to} -> {instance}: {} => {}",
                        self.now,
                        request
                            .as_ref()
                            .map_or("?".into(), sleepyseal_driver::state::kind),
                        describe_response(&response)
                    );
                }
                if let (Some(body), false) = (&request, matches!(response, Response::Error(_))) {
                    state.mark_delivered(authority, body);
                }
                state.on_response(now, id, authority, response);
            }
            Err(_) => state.on_failure(now, id),
        }
        self.driver_poll(to);
    }

    fn driver_poll(&mut self, driver: usize) {
        let now = Millis(self.now);
        let Some(state) = self.drivers[driver].state.as_mut() else {
            return;
        };
        let outgoing = state.poll(now);
        for Outgoing { id, core, request } in outgoing {
            self.send_request(driver, id, core, request);
        }
        if self.drivers[driver].forger && self.rng.chance(200) {
            self.forge(driver);
        }
    }

    fn send_request(&mut self, driver: usize, id: u64, core: AuthorityIndex, request: Request) {
        let Some(instance) = self.route(driver, core) else {
            return;
        };
        if self.drivers[driver].behaviour != Behaviour::Honest {
            self.send_hostile(driver, id, instance, request);
            return;
        }
        let bytes = request.to_bytes();
        self.drivers[driver].in_flight.insert(id, request.body);
        self.send_bytes(driver, instance, id, bytes);
    }

    fn send_bytes(&mut self, driver: usize, instance: usize, id: u64, bytes: Bytes) {
        self.transmit(Some(driver), instance, || Event::Request {
            from: driver,
            instance,
            id,
            bytes: bytes.clone(),
        });
    }

    /// A hostile driver's request: tampered with according to its behaviour.
    fn send_hostile(&mut self, driver: usize, id: u64, instance: usize, mut request: Request) {
        let behaviour = self.drivers[driver].behaviour;
        self.drivers[driver]
            .in_flight
            .insert(id, request.body.clone());
        match behaviour {
            Behaviour::OmitLeader => {
                let schedule = self.schedule.clone();
                let is_leader = |round: Round, author: AuthorityIndex| {
                    round.0 % 2 == 0 && schedule.leader(round) == author
                };
                match &mut request.body {
                    RequestBody::HeaderBundle {
                        headers, parents, ..
                    } => {
                        headers.retain(|h| !is_leader(h.header.round(), h.header.author()));
                        parents.retain(|c| !is_leader(c.round(), c.author()));
                    }
                    RequestBody::CertBundle {
                        certificates,
                        parents,
                        ..
                    } => {
                        certificates.retain(|c| !is_leader(c.round(), c.author()));
                        parents.retain(|c| !is_leader(c.round(), c.author()));
                    }
                    RequestBody::Sync { certificates, .. } => {
                        certificates.retain(|c| !is_leader(c.round(), c.author()))
                    }
                    _ => {}
                }
                self.send_bytes(driver, instance, id, request.to_bytes());
            }
            Behaviour::ReplayBundles => {
                self.send_bytes(driver, instance, id, request.to_bytes());
                let history = &self.drivers[driver].history;
                if !history.is_empty() && self.rng.chance(500) {
                    let old = history[self.rng.index(history.len())].clone();
                    let core = AuthorityIndex(self.rng.index(self.committee.size()) as u16);
                    if let Some(target) = self.route(driver, core) {
                        let replay_id = self.rng.next_u64() | (1 << 63);
                        self.send_bytes(driver, target, replay_id, old.to_bytes());
                    }
                }
                self.remember(driver, request);
            }
            Behaviour::ReorderBundles => {
                for mut list in bundle_lists(&mut request.body) {
                    list.shuffle(&mut self.rng);
                }
                let bytes = request.to_bytes();
                self.drivers[driver].held.push((instance, id, bytes));
                if self.drivers[driver].held.len() >= 4 || self.rng.chance(200) {
                    let mut held = std::mem::take(&mut self.drivers[driver].held);
                    shuffle(&mut self.rng, &mut held);
                    for (instance, id, bytes) in held {
                        self.send_bytes(driver, instance, id, bytes);
                    }
                }
            }
            Behaviour::TruncateBundles => {
                if self.rng.chance(500) {
                    let bytes = request.to_bytes();
                    let cut = self.rng.index(bytes.len().max(1));
                    self.send_bytes(driver, instance, id, bytes.slice(..cut));
                    return;
                }
                for mut list in bundle_lists(&mut request.body) {
                    let keep = self.rng.index(list.len() + 1);
                    list.truncate(keep);
                }
                self.send_bytes(driver, instance, id, request.to_bytes());
            }
            Behaviour::MixRounds => {
                let old = {
                    let history = &self.drivers[driver].history;
                    (!history.is_empty()).then(|| history[self.rng.index(history.len())].clone())
                };
                let mut mixed = request.clone();
                if let Some(old) = old {
                    match (&mut mixed.body, old.body) {
                        (
                            RequestBody::HeaderBundle {
                                headers, parents, ..
                            },
                            RequestBody::HeaderBundle {
                                headers: old_headers,
                                parents: old_parents,
                                ..
                            },
                        ) => {
                            headers.extend(old_headers);
                            parents.extend(old_parents);
                        }
                        (
                            RequestBody::CertBundle {
                                certificates,
                                parents,
                                ..
                            },
                            RequestBody::CertBundle {
                                certificates: old_certificates,
                                parents: old_parents,
                                ..
                            },
                        ) => {
                            certificates.extend(old_certificates);
                            parents.extend(old_parents);
                        }
                        (
                            RequestBody::HeaderBundle { parents, .. },
                            RequestBody::CertBundle { certificates, .. },
                        ) => parents.extend(certificates),
                        (
                            RequestBody::CertBundle { parents, .. },
                            RequestBody::Sync { certificates, .. },
                        ) => parents.extend(certificates),
                        _ => {}
                    }
                }
                self.send_bytes(driver, instance, id, mixed.to_bytes());
                self.remember(driver, request);
            }
            Behaviour::Garbage => {
                let bytes = if self.rng.chance(500) {
                    let len = self.rng.index(2_048);
                    Bytes::from(
                        (0..len)
                            .map(|_| self.rng.next_u64() as u8)
                            .collect::<Vec<_>>(),
                    )
                } else {
                    let mut bytes = request.to_bytes().to_vec();
                    for _ in 0..=self.rng.index(8) {
                        let at = self.rng.index(bytes.len().max(1));
                        if let Some(b) = bytes.get_mut(at) {
                            *b ^= 1 << self.rng.index(8);
                        }
                    }
                    Bytes::from(bytes)
                };
                self.send_bytes(driver, instance, id, bytes);
            }
            _ => self.send_bytes(driver, instance, id, request.to_bytes()),
        }
    }

    fn remember(&mut self, driver: usize, request: Request) {
        let history = &mut self.drivers[driver].history;
        if matches!(
            request.body,
            RequestBody::HeaderBundle { .. }
                | RequestBody::CertBundle { .. }
                | RequestBody::Sync { .. }
        ) {
            history.push_back(request);
            if history.len() > 64 {
                history.pop_front();
            }
        }
    }

    /// A Byzantine driver: a certificate for a real (author, round) over a different header, with
    /// garbage signatures from every validator. Honest cores must refuse it.
    fn forge(&mut self, driver: usize) {
        let Some(state) = self.drivers[driver].state.as_ref() else {
            return;
        };
        let author = AuthorityIndex(self.rng.index(self.committee.size()) as u16);
        let Some(real) = state.own_header_of(author).cloned() else {
            return;
        };
        let h = &real.header;
        let fake = Header::new(
            h.instance(),
            h.round(),
            h.author(),
            h.parents().to_vec(),
            h.payload(),
            h.created_at_ms() + 1,
        );
        let certificate = Certificate {
            header: fake,
            signers: self.committee.indices().collect(),
            signatures: vec![Signature([7; 64]); self.committee.size()],
        };
        let body = RequestBody::CertBundle {
            round: h.round(),
            certificates: vec![certificate],
            parents: Vec::new(),
            payloads: Vec::new(),
        };
        for core in self.committee.indices().collect::<Vec<_>>() {
            let id = self.rng.next_u64() | (1 << 63);
            let request = Request {
                instance: self.committee.instance(),
                body: body.clone(),
            };
            self.send_request(driver, id, core, request);
        }
    }

    fn submit(&mut self) {
        let honest = self.honest_instances();
        let instance = honest[self.rng.index(honest.len())];
        self.tx_counter += 1;
        let mut tx = self.config.seed.to_le_bytes().to_vec();
        tx.extend_from_slice(&self.tx_counter.to_le_bytes());
        let tx = Bytes::from(tx);
        self.submitted
            .insert(self.tx_counter, (tx.clone(), instance));
        let request = Request {
            instance: self.committee.instance(),
            body: RequestBody::Submit {
                transactions: vec![tx],
            },
        };
        let bytes = request.to_bytes();
        let id = self.tx_counter;
        self.transmit(None, instance, || Event::Request {
            from: CLIENT,
            instance,
            id,
            bytes: bytes.clone(),
        });
        let interval = (1_000 / self.config.load_tx_per_s.max(1)).max(1);
        self.at(interval, Event::Submit);
    }

    /// S9, at the end of a run: at every live honest core, no acknowledged transaction is
    /// committed twice, and each one submitted to that core is committed or still pending there
    /// (mempool or an own header that has not committed yet). Never lost.
    fn check_transactions(&mut self) {
        for instance in self.honest_instances() {
            if self.down_for_good.contains(&instance) {
                continue;
            }
            let Some(core) = self.instances[instance].core.as_ref() else {
                continue;
            };
            let mut committed: HashMap<Bytes, u32> = HashMap::new();
            let entries = core
                .committed_from(core.committed_base(), usize::MAX)
                .unwrap_or_default();
            let mut unreadable = 0;
            for e in &entries {
                match core.payload(&e.payload.digest) {
                    Some(p) => {
                        for t in p.transactions().unwrap_or_default() {
                            *committed.entry(t).or_default() += 1;
                        }
                    }
                    None => unreadable += 1,
                }
            }
            let pending: std::collections::HashSet<Bytes> =
                core.pending_transactions().into_iter().collect();
            let mut violations = Vec::new();
            for (tx, home, acked_at) in &self.acked_transactions {
                match committed.get(tx).copied().unwrap_or(0) {
                    0 if *home == instance && unreadable == 0 && !pending.contains(tx) => {
                        violations.push(format!("instance {instance}: acknowledged {tx:?} lost"));
                    }
                    0 if *home == instance
                        && acked_at + self.config.core.gc_depth + SLOW_AFTER_EXTRA_ROUNDS
                            < core.round().0 =>
                    {
                        self.slow_transactions += 1;
                    }
                    n if n > 1 => violations.push(format!(
                        "instance {instance}: acknowledged {tx:?} committed {n} times"
                    )),
                    _ => {}
                }
            }
            for v in violations.into_iter().take(5) {
                self.checker.fail("S9", v);
            }
        }
    }

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

/// Fisher–Yates, from the run's generator.
fn shuffle<T>(rng: &mut SimRng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = rng.index(i + 1);
        v.swap(i, j);
    }
}

/// One list of a bundle, whatever its item type (what hostile drivers shuffle and cut).
enum List<'a> {
    Headers(&'a mut Vec<sleepyseal_core::SignedHeader>),
    Certificates(&'a mut Vec<Certificate>),
    Payloads(&'a mut Vec<sleepyseal_core::Payload>),
}

impl List<'_> {
    fn len(&self) -> usize {
        match self {
            List::Headers(v) => v.len(),
            List::Certificates(v) => v.len(),
            List::Payloads(v) => v.len(),
        }
    }
    fn shuffle(&mut self, rng: &mut SimRng) {
        match self {
            List::Headers(v) => shuffle(rng, v),
            List::Certificates(v) => shuffle(rng, v),
            List::Payloads(v) => shuffle(rng, v),
        }
    }
    fn truncate(&mut self, len: usize) {
        match self {
            List::Headers(v) => v.truncate(len),
            List::Certificates(v) => v.truncate(len),
            List::Payloads(v) => v.truncate(len),
        }
    }
}

/// The lists of a header bundle, certificate bundle or sync request (none for other requests).
fn bundle_lists(body: &mut RequestBody) -> Vec<List<'_>> {
    match body {
        RequestBody::HeaderBundle {
            headers,
            parents,
            payloads,
            ..
        } => vec![
            List::Headers(headers),
            List::Certificates(parents),
            List::Payloads(payloads),
        ],
        RequestBody::CertBundle {
            certificates,
            parents,
            payloads,
            ..
        } => vec![
            List::Certificates(certificates),
            List::Certificates(parents),
            List::Payloads(payloads),
        ],
        RequestBody::Sync {
            certificates,
            payloads,
        } => vec![List::Certificates(certificates), List::Payloads(payloads)],
        _ => Vec::new(),
    }
}

/// Twins-scenario phases over the first [`SCENARIO_MS`]: each phase lasts 200–1,200 ms and
/// gives every driver, per authority, the instance it reaches: for a twinned authority the
/// original or the twin (nine times in ten), for the others the one instance (six times in
/// seven); otherwise none.
fn generate_phases(rng: &mut SimRng, n: usize, twins: usize, drivers: usize) -> Vec<Phase> {
    let mut phases = Vec::new();
    let mut t = 0;
    while t < SCENARIO_MS {
        t += rng.range(200, 1_200);
        let view = (0..drivers)
            .map(|_| {
                (0..n)
                    .map(|a| {
                        if a < twins {
                            rng.chance(900)
                                .then(|| if rng.chance(500) { a } else { n + a })
                        } else {
                            rng.chance(857).then_some(a)
                        }
                    })
                    .collect()
            })
            .collect();
        phases.push(Phase {
            until: t.min(SCENARIO_MS),
            view,
        });
    }
    phases
}

fn describe_response(response: &Response) -> String {
    match response {
        Response::Summary(s) => format!("Summary(r{} {:?})", s.round.0, s.status),
        Response::Votes {
            votes,
            rejected,
            summary,
        } => format!(
            "Votes({} votes, rejected {:?}, r{} {:?})",
            votes.len(),
            rejected
                .iter()
                .map(|(_, e)| e.to_string())
                .collect::<Vec<_>>(),
            summary.round.0,
            summary.status
        ),
        Response::Certificates {
            certificates,
            payloads,
        } => format!(
            "Certificates({} certs, {} payloads)",
            certificates.len(),
            payloads.len()
        ),
        Response::Error(e) => format!("Error({e})"),
        other => format!("{other:?}").chars().take(80).collect(),
    }
}

/// Debug view of a finished world (`--debug-dump`).
impl World {
    fn debug_dump(&self) {
        eprintln!("time {} ms, {} events", self.now, self.events);
        for (d, driver) in self.drivers.iter().enumerate() {
            if let Some(state) = &driver.state {
                eprintln!(
                    "driver {d}: certs {} top {}",
                    state.certificate_count(),
                    state.top_round()
                );
                for a in self.committee.indices() {
                    eprintln!("  core {a}: {}", state.describe(a));
                }
            }
        }
        for (i, n) in self.instances.iter().enumerate() {
            match n.core.as_ref() {
                None => eprintln!("instance {i}: down"),
                Some(c) => eprintln!(
                    "instance {i}: round {} committed {} index {} gc {} dag {} floor {} mempool {}",
                    c.round(),
                    c.consensus().last_committed_round,
                    c.consensus().consensus_index,
                    c.gc_round(),
                    c.dag().len(),
                    c.dag().floor(),
                    c.mempool_len()
                ),
            }
        }
    }
}
