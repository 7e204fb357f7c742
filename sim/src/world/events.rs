//! The event loop: the queue ordered by (time, sequence), the network between drivers and cores
//! (loss, duplication, latency), delivery to cores and drivers, simulated disk syncs, and the
//! trace hash over every processed event.

use bytes::Bytes;
use sleepyseal_core::codec::{Decode, Encode};
use sleepyseal_core::protocol::Response;
use sleepyseal_core::{AuthorityIndex, Millis, Request};
use sleepyseal_driver::state::Outgoing;

use super::debug::trace_reply;
use super::{World, CLIENT};
use crate::node::{Handled, PendingReply};
use crate::Behaviour;

/// How often drivers look at timers.
const DRIVER_TICK_MS: u64 = 10;

/// Something that happens at a point of virtual time.
pub(super) enum Event {
    /// A request arrives at a core instance.
    Request {
        from: usize,
        instance: usize,
        id: u64,
        bytes: Bytes,
    },
    /// A reply arrives at a driver or the load client.
    Reply {
        to: usize,
        instance: usize,
        id: u64,
        bytes: Bytes,
    },
    /// An instance's disk sync completes (ignored if it crashed since: another epoch).
    SyncDone { instance: usize, epoch: u64 },
    /// A driver looks at its timers.
    DriverTick { driver: usize },
    /// A core crashes.
    Crash {
        instance: usize,
        restart_after_ms: Option<u64>,
    },
    /// A crashed core restarts.
    Restart { instance: usize },
    /// A driver crashes (for good without a restart time).
    DriverCrash {
        driver: usize,
        restart_after_ms: Option<u64>,
    },
    /// A crashed driver restarts.
    DriverRestart { driver: usize },
    /// A driver–instance link is cut.
    Cut {
        driver: usize,
        instance: usize,
        heal_after_ms: u64,
    },
    /// A cut link heals.
    Heal { driver: usize, instance: usize },
    /// The load client submits a transaction.
    Submit,
}

impl World {
    /// Schedules `event` after `delay_ms`; events at one time run in the order scheduled.
    pub(super) fn at(&mut self, delay_ms: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((self.now + delay_ms, self.seq), event);
    }

    /// The first tick of every driver and the first submission of the load client.
    pub(super) fn start(&mut self) {
        for d in 0..self.drivers.len() {
            self.at(0, Event::DriverTick { driver: d });
        }
        if self.config.load_tx_per_s > 0 {
            self.at(1, Event::Submit);
        }
    }

    /// Processes events until the queue is empty, time is up or the run is done.
    pub(super) fn run_loop(&mut self) {
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

    /// Every scheduled restart happened and every live honest core reached the target round.
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

    /// Adds an event to the trace hash (S7: same seed, same trace).
    pub(super) fn trace(&mut self, tag: u8, a: usize, b: u64, bytes: &[u8]) {
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
            Event::SyncDone { instance, epoch } => self.sync_done(instance, epoch),
            Event::DriverTick { driver } => self.driver_tick(driver),
            Event::Crash {
                instance,
                restart_after_ms,
            } => self.crash(instance, restart_after_ms),
            Event::Restart { instance } => self.restart(instance),
            Event::DriverCrash {
                driver,
                restart_after_ms,
            } => self.crash_driver(driver, restart_after_ms),
            Event::DriverRestart { driver } => self.restart_driver(driver),
            Event::Cut {
                driver,
                instance,
                heal_after_ms,
            } => self.cut_link(driver, instance, heal_after_ms),
            Event::Heal { driver, instance } => self.heal_link(driver, instance),
            Event::Submit => self.submit(),
        }
    }

    /// Sends over the network: maybe dropped, maybe duplicated, random latency (so reordered).
    pub(super) fn transmit(
        &mut self,
        driver: Option<usize>,
        instance: usize,
        make: impl Fn() -> Event,
    ) {
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
        let installed = |w: &World| {
            w.instances[instance]
                .core
                .as_ref()
                .map_or(0, |c| c.counters().checkpoints_installed)
        };
        let installs_before = installed(self);
        let handled = self.instances[instance].handle(Millis(self.now), from, id, bytes);
        if installed(self) > installs_before {
            self.crash_at_install(instance);
        }
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

    /// A disk sync completed: release its replies and start syncing what queued meanwhile.
    fn sync_done(&mut self, instance: usize, epoch: u64) {
        self.trace(3, instance, epoch, &[]);
        let replies = self.instances[instance].finish_sync(epoch);
        for reply in replies {
            self.send_reply(instance, reply);
        }
        self.maybe_start_sync(instance);
    }

    fn maybe_start_sync(&mut self, instance: usize) {
        if self.instances[instance].start_sync() {
            let (low, high) = self.config.sync_ms;
            let delay = self.rng.range(low, high);
            let epoch = self.instances[instance].epoch;
            self.at(delay, Event::SyncDone { instance, epoch });
        }
    }

    /// Runs the per-step checkers on an instance (if it is up).
    pub(super) fn check_instance(&mut self, instance: usize) {
        if let Some(core) = self.instances[instance].core.as_ref() {
            self.checker.after_step(instance, core);
        }
        if let Some(&from) = self.rejoining.get(&instance) {
            let top = self.others_top(instance);
            let mine = self.instances[instance]
                .core
                .as_ref()
                .map_or(0, |c| c.round().0);
            if mine + super::REJOINED_WITHIN >= top {
                self.rejoining.remove(&instance);
                self.rejoin_rounds.push(top.saturating_sub(from));
            }
        }
    }

    /// The highest round of the live instances other than `instance`.
    pub(super) fn others_top(&self, instance: usize) -> u64 {
        self.instances
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != instance)
            .filter_map(|(_, n)| n.core.as_ref().map(|c| c.round().0))
            .max()
            .unwrap_or(0)
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
            self.deliver_client_reply(id, bytes);
            return;
        }
        if self.drivers[to].old_chain.is_some() {
            if let Ok(response) = Response::from_bytes(bytes) {
                self.old_chain_reply(to, response);
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
                    trace_reply(self.now, to, instance, request.as_ref(), &response);
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

    /// A driver's timers: poll it, and schedule its next tick (the omit-leader driver is fast).
    fn driver_tick(&mut self, driver: usize) {
        self.driver_poll(driver);
        let tick = if self.drivers[driver].behaviour == Behaviour::OmitLeader {
            DRIVER_TICK_MS / 5
        } else {
            DRIVER_TICK_MS
        };
        self.at(tick, Event::DriverTick { driver });
    }

    fn driver_poll(&mut self, driver: usize) {
        if self.drivers[driver].old_chain.is_some() {
            self.old_chain_step(driver);
            return;
        }
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
        if let Some(author) = self.drivers[driver].checkpoint_forger {
            self.forge_checkpoint(driver, author);
        }
        match self.drivers[driver].behaviour {
            Behaviour::ForgedFills => self.forge_fills(driver),
            Behaviour::EagerInstalls => self.install_eagerly(driver),
            _ => {}
        }
    }

    /// Sends a driver's request to the instance of `core` it reaches (hostile drivers tamper).
    pub(super) fn send_request(
        &mut self,
        driver: usize,
        id: u64,
        core: AuthorityIndex,
        request: Request,
    ) {
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

    /// Puts a driver's encoded request on the network.
    pub(super) fn send_bytes(&mut self, driver: usize, instance: usize, id: u64, bytes: Bytes) {
        self.transmit(Some(driver), instance, || Event::Request {
            from: driver,
            instance,
            id,
            bytes: bytes.clone(),
        });
    }
}
