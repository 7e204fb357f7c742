//! Faults: core crashes (for good, or restarted from the store), a driver crash, dead home
//! drivers (never started, or crashed for good), link cuts, all drawn from the run's generator
//! before the run starts; and the Twins scenario, whose phases
//! decide which instance of each authority every driver reaches.

use sleepyseal_core::AuthorityIndex;
use sleepyseal_driver::state::DriverState;

use super::events::Event;
use super::World;
use crate::rng::SimRng;

/// Length of the generated part of a Twins scenario; after it every link heals (liveness is
/// judged after this global stabilisation time, safety throughout).
const SCENARIO_MS: u64 = 6_000;

/// Faults are scheduled within the first this many ms of a run (or its whole length if shorter).
const FAULT_SPAN_MS: u64 = 8_000;

/// One phase of a Twins scenario: until `until` ms, `view[driver][authority]` is the instance of
/// that authority the driver reaches (`None`: cut off).
pub(super) struct Phase {
    /// End of the phase, in ms of virtual time.
    until: u64,
    /// Per driver, per authority: the instance reached.
    view: Vec<Vec<Option<usize>>>,
}

/// Twins-scenario phases over the first [`SCENARIO_MS`]: each phase lasts 200–1,200 ms and
/// gives every driver, per authority, the instance it reaches: for a twinned authority the
/// original or the twin (nine times in ten), for the others the one instance (six times in
/// seven); otherwise none.
pub(super) fn generate_phases(
    rng: &mut SimRng,
    n: usize,
    twins: usize,
    drivers: usize,
) -> Vec<Phase> {
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

impl World {
    /// Which instance of `authority` a driver talks to, if any: the current Twins-scenario
    /// phase decides; otherwise twins are split between drivers by parity.
    pub(super) fn route(&self, driver: usize, authority: AuthorityIndex) -> Option<usize> {
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

    /// Draws the run's faults and schedules them.
    pub(super) fn schedule_faults(&mut self) {
        let span = self.config.max_time_ms.min(FAULT_SPAN_MS);
        // Crash for good, then restart others: never the same core twice.
        let mut candidates = self.honest_instances();
        self.schedule_crashes(span, &mut candidates);
        self.schedule_restarts(span, &mut candidates);
        let dead_homes = self.schedule_dead_home_drivers(span);
        if self.config.driver_crash {
            self.schedule_driver_crash(span, &dead_homes);
        }
        if self.config.partitions {
            self.schedule_cuts(span);
        }
    }

    /// Cores crashed for good, in the first quarter of the span.
    fn schedule_crashes(&mut self, span: u64, candidates: &mut Vec<usize>) {
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
    }

    /// Cores crashed and restarted, one per slot of the span.
    fn schedule_restarts(&mut self, span: u64, candidates: &mut Vec<usize>) {
        for k in 0..self.config.restart.min(candidates.len()) as u64 {
            let instance = candidates.remove(self.rng.index(candidates.len()));
            let slot = span / (self.config.restart as u64 + 1);
            let when = slot * k + self.rng.range(slot / 4, slot);
            let (low, high) = self.config.outage_ms;
            let down = self.rng.range(low, high);
            self.scheduled_restarts += 1;
            self.at(
                when,
                Event::Crash {
                    instance,
                    restart_after_ms: Some(down),
                },
            );
        }
    }

    /// One honest driver killed and restarted (it loses its whole state): one without a home
    /// core if there is any, else a live home driver.
    fn schedule_driver_crash(&mut self, span: u64, dead_homes: &[usize]) {
        let candidates: Vec<usize> = if self.config.drivers > 0 {
            (0..self.config.drivers).collect()
        } else {
            (self.first_home_driver()..self.drivers.len())
                .filter(|d| !dead_homes.contains(d))
                .collect()
        };
        if candidates.is_empty() {
            return;
        }
        let driver = candidates[self.rng.index(candidates.len())];
        let when = self.rng.range(span / 8, span / 2);
        let down = self.rng.range(20, 400);
        self.at(
            when,
            Event::DriverCrash {
                driver,
                restart_after_ms: Some(down),
            },
        );
    }

    /// The dead home drivers of the run (`HomeDrivers::dead` of them, at most all but one):
    /// each either never starts or crashes for good within the span. Returns their indices.
    fn schedule_dead_home_drivers(&mut self, span: u64) -> Vec<usize> {
        let Some(homes) = self.config.home_drivers else {
            return Vec::new();
        };
        let mut alive: Vec<usize> = (self.first_home_driver()..self.drivers.len()).collect();
        let mut dead = Vec::new();
        for _ in 0..homes.dead.min(alive.len().saturating_sub(1)) {
            let driver = alive.remove(self.rng.index(alive.len()));
            dead.push(driver);
            if self.rng.chance(500) {
                self.drivers[driver].state = None;
            } else {
                let when = self.rng.range(0, span);
                let event = Event::DriverCrash {
                    driver,
                    restart_after_ms: None,
                };
                self.at(when, event);
            }
        }
        dead
    }

    /// Random driver–instance links cut for a while, one every 300–1,500 ms.
    fn schedule_cuts(&mut self, span: u64) {
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

    /// A core process stops (unsynced writes lost); it restarts later if `restart_after_ms`.
    pub(super) fn crash(&mut self, instance: usize, restart_after_ms: Option<u64>) {
        self.trace(4, instance, 0, &[]);
        self.instances[instance].crash();
        if let Some(down) = restart_after_ms {
            self.at(down, Event::Restart { instance });
        }
    }

    /// `install_crashes`: the core just installed a checkpoint; the first time, it crashes at
    /// once (the install's write, not synced yet, is lost: it restarts in its old state) or just
    /// after the write synced (it restarts installed), and is back 50–500 ms later. S11: either
    /// way it restarts in one of the two states, and S3 and S6 hold across.
    pub(super) fn crash_at_install(&mut self, instance: usize) {
        if !self.config.install_crashes || !self.install_crashed.insert(instance) {
            return;
        }
        let back = self.rng.range(50, 500);
        let when = if self.rng.chance(500) {
            0
        } else {
            self.config.sync_ms.1 + self.rng.range(1, 300)
        };
        self.at(
            when,
            Event::Crash {
                instance,
                restart_after_ms: Some(back),
            },
        );
    }

    /// A crashed core starts again from its store.
    pub(super) fn restart(&mut self, instance: usize) {
        self.trace(5, instance, 0, &[]);
        self.instances[instance].restart();
        self.checker.restarted(instance);
        if let Some(why) = self.instances[instance].unrecoverable.take() {
            self.checker.fail(
                "S11",
                format!("core {instance} cannot start from what a crash left of its store: {why}"),
            );
        }
        self.restarts += 1;
        self.restarted.insert(instance);
        let top = self.others_top(instance);
        self.rejoining.insert(instance, top);
        self.back_at.insert(instance, top);
        self.check_instance(instance);
    }

    /// A driver process stops: its state and requests in flight are lost. It restarts after
    /// `restart_after_ms`, or never.
    pub(super) fn crash_driver(&mut self, driver: usize, restart_after_ms: Option<u64>) {
        self.drivers[driver].state = None;
        self.drivers[driver].in_flight.clear();
        if let Some(down) = restart_after_ms {
            self.at(down, Event::DriverRestart { driver });
        }
    }

    /// A crashed driver starts again, empty, with request ids of a new incarnation.
    pub(super) fn restart_driver(&mut self, driver: usize) {
        let d = &mut self.drivers[driver];
        d.incarnation += 1;
        let base = ((driver as u64) << 48) | (d.incarnation << 40);
        d.state = Some(DriverState::new(
            self.committee.clone(),
            d.config.clone(),
            base,
        ));
    }

    /// Cuts a driver–instance link until it heals.
    pub(super) fn cut_link(&mut self, driver: usize, instance: usize, heal_after_ms: u64) {
        self.cut.insert((driver, instance));
        self.at(heal_after_ms, Event::Heal { driver, instance });
    }

    /// Restores a cut link.
    pub(super) fn heal_link(&mut self, driver: usize, instance: usize) {
        self.cut.remove(&(driver, instance));
    }
}
