//! The driver process: [`DriverState`] driven over QUIC, and for a home core in the same
//! process over its in-process link ([`Links`]).
//!
//! Every core is talked to concurrently and independently: a slow or dead core never holds up the
//! others (its request times out, the driver backs off and retries with a capped delay, and the
//! client reconnects when the core comes back). The runner holds nothing durable: kill it at any
//! time and start another; the new one rebuilds its soft state from the cores' summaries.
//!
//! Requests are written as the chunks of their encoding, so payloads taken from one core's reply
//! go to the other cores without being copied or re-encoded. A home core in the same process
//! hands over each own header it builds (with its payload) as soon as it is durable.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sleepyseal_core::protocol::{RequestBody, Response};
use sleepyseal_core::{AuthorityIndex, Committee, Millis};
use sleepyseal_net::client::ClientSetupError;
use sleepyseal_net::metrics::{self, histogram, AtomicCounter, AtomicGauge, SECONDS_BUCKETS};
use sleepyseal_net::server::OwnHeader;
use sleepyseal_net::{ClientOptions, Clients, NetLimits, Testbed};
use tokio::sync::{mpsc, watch};

use crate::link::{Link, LinkError, Links};
use crate::state::{DriverConfig, DriverState, Outgoing};

/// Settings of a driver process.
#[derive(Clone, Debug)]
pub struct RunnerOptions {
    /// The sans-IO driver's settings.
    pub driver: DriverConfig,
    /// How often the driver re-plans even without replies (timeouts, polls).
    pub tick: Duration,
    /// The driver's client endpoint: local IP to bind, WAN emulation (default: every local
    /// address, no emulation).
    pub client: ClientOptions,
}

impl Default for RunnerOptions {
    fn default() -> RunnerOptions {
        RunnerOptions {
            driver: DriverConfig::default(),
            tick: Duration::from_millis(5),
            client: ClientOptions::default(),
        }
    }
}

impl RunnerOptions {
    /// The client endpoint the driver reaches the cores of `testbed` through, set up by
    /// `self.client`. Must be called inside a tokio runtime.
    pub fn clients(
        &self,
        testbed: &Testbed,
        limits: NetLimits,
    ) -> Result<Clients, ClientSetupError> {
        Clients::with_options(testbed, limits, self.client.clone())
    }
}

/// Live counters of a driver, served by [`RunnerStats::exposition`].
#[derive(Debug)]
pub struct RunnerStats {
    /// Requests sent.
    pub requests: AtomicCounter,
    /// Requests that failed in transport (timeout, connection).
    pub failures: AtomicCounter,
    /// `Busy` replies.
    pub busy: AtomicCounter,
    /// Highest round any core reported.
    pub top_round: AtomicGauge,
    /// Certificates assembled or learned.
    pub certificates: AtomicGauge,
    /// Requests sent and not answered yet.
    pub in_flight: AtomicGauge,
    /// Bytes of the payloads the driver holds.
    pub payload_cache_bytes: AtomicGauge,
    /// Restarts after a panic (a driver inside a core process is restarted, fresh).
    pub restarts: AtomicCounter,
    /// Times a core was found to need a checkpoint (its history gone everywhere asked).
    pub cores_needing_checkpoint: AtomicGauge,
    /// Checkpoint installs a core accepted from this driver.
    pub checkpoint_installs: AtomicGauge,
    /// Gap entries in the fill steps cores took from this driver.
    pub fill_entries: AtomicGauge,
    /// Payload bytes carried in bundles for authors other than the home core (covers, and
    /// carriage after the grace period).
    pub foreign_payload_bytes: AtomicGauge,
    /// Round trip of each answered request.
    pub request_seconds: Histogram,
    /// Every served metric, registered once.
    registry: Registry,
}

impl Default for RunnerStats {
    fn default() -> RunnerStats {
        let mut stats = RunnerStats {
            requests: AtomicCounter::default(),
            failures: AtomicCounter::default(),
            busy: AtomicCounter::default(),
            top_round: AtomicGauge::default(),
            certificates: AtomicGauge::default(),
            in_flight: AtomicGauge::default(),
            payload_cache_bytes: AtomicGauge::default(),
            restarts: AtomicCounter::default(),
            cores_needing_checkpoint: AtomicGauge::default(),
            checkpoint_installs: AtomicGauge::default(),
            fill_entries: AtomicGauge::default(),
            foreign_payload_bytes: AtomicGauge::default(),
            request_seconds: histogram(SECONDS_BUCKETS),
            registry: Registry::with_prefix("sleepyseal_driver"),
        };
        stats.register();
        stats
    }
}

impl RunnerStats {
    /// The Prometheus exposition of these counters.
    pub fn exposition(&self) -> String {
        metrics::encode(&self.registry)
    }

    /// Registers every served metric. Help texts get their final period from the registry.
    fn register(&mut self) {
        let r = &mut self.registry;
        r.register("requests", "Requests sent to cores", self.requests.clone());
        r.register(
            "failed_requests",
            "Requests lost in transport (timeout, connection)",
            self.failures.clone(),
        );
        r.register("busy_replies", "Busy replies from cores", self.busy.clone());
        r.register(
            "top_round",
            "Highest round any core reported",
            self.top_round.clone(),
        );
        r.register(
            "certificates",
            "Certificates the driver holds (assembled or learned)",
            self.certificates.clone(),
        );
        r.register(
            "in_flight_requests",
            "Requests sent and not answered yet",
            self.in_flight.clone(),
        );
        r.register(
            "payload_cache_bytes",
            "Bytes of the payloads the driver holds",
            self.payload_cache_bytes.clone(),
        );
        r.register(
            "restarts",
            "Restarts after a panic, with fresh state",
            self.restarts.clone(),
        );
        r.register(
            "cores_needing_checkpoint",
            "Times a core was found to need a checkpoint (history gone everywhere asked)",
            self.cores_needing_checkpoint.clone(),
        );
        r.register(
            "checkpoint_installs",
            "Checkpoint installs a core accepted from this driver",
            self.checkpoint_installs.clone(),
        );
        r.register(
            "fill_entries",
            "Gap entries in the fill steps cores took from this driver",
            self.fill_entries.clone(),
        );
        r.register(
            "foreign_payload_bytes",
            "Payload bytes cores took from this driver in bundles for authors other than its \
             home core (covers, carriage after the grace period)",
            self.foreign_payload_bytes.clone(),
        );
        r.register(
            "request_seconds",
            "Round trip of one request to a core",
            self.request_seconds.clone(),
        );
    }
}

struct Done {
    id: u64,
    core: AuthorityIndex,
    body: RequestBody,
    result: Result<Response, LinkError>,
}

/// Drives the cores, reached through `links`, until `stop` turns true.
pub async fn run(
    committee: Arc<Committee>,
    links: Arc<Links>,
    options: RunnerOptions,
    stats: Arc<RunnerStats>,
    mut stop: watch::Receiver<bool>,
) {
    let start = Instant::now();
    let now = || Millis(start.elapsed().as_millis() as u64);
    // Ids of successive incarnations never collide: they start from the wall clock.
    let id_base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
        << 8;
    let mut state = DriverState::new(committee, options.driver.clone(), id_base);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let timeout = Duration::from_millis(options.driver.request_timeout_ms);
    let mut tick = tokio::time::interval(options.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut local_headers = links.local_headers();
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            Some(done) = done_rx.recv() => {
                apply(&mut state, now(), done, &stats);
                while let Ok(more) = done_rx.try_recv() {
                    apply(&mut state, now(), more, &stats);
                }
            }
            (core, own) = next_own_header(&mut local_headers) => {
                state.on_own_header(now(), core, own.header, own.payload);
            }
            _ = tick.tick() => {}
        }
        for Outgoing { id, core, request } in state.poll(now()) {
            stats.requests.fetch_add(1, Ordering::Relaxed);
            stats.in_flight.fetch_add(1, Ordering::Relaxed);
            let link = links.link(core).clone();
            let (done_tx, stats) = (done_tx.clone(), stats.clone());
            tokio::spawn(async move {
                let sent = Instant::now();
                let (body, result) = exchange(&link, request, timeout).await;
                if result.is_ok() {
                    stats.request_seconds.observe(sent.elapsed().as_secs_f64());
                }
                stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                let _ = done_tx.send(Done {
                    id,
                    core,
                    body,
                    result,
                });
            });
        }
        publish(&state, &stats);
    }
}

/// Sends `request` on `link`; its body (what it delivered, once answered) and the result.
async fn exchange(
    link: &Link,
    request: sleepyseal_core::Request,
    timeout: Duration,
) -> (RequestBody, Result<Response, LinkError>) {
    match link {
        Link::Quic(client) => {
            let result = client.request(&request, timeout).await;
            (request.body, result.map_err(LinkError::from))
        }
        // The in-process link takes the request itself (no encoding): keep a copy of the body,
        // whose payloads are shared buffers.
        Link::Local(_) => {
            let body = request.body.clone();
            (body, link.request(request, timeout).await)
        }
    }
}

/// The next own header of the core reached in process; never, without one.
async fn next_own_header(
    local: &mut Option<(AuthorityIndex, watch::Receiver<Option<OwnHeader>>)>,
) -> (AuthorityIndex, OwnHeader) {
    if let Some((core, headers)) = local {
        while headers.changed().await.is_ok() {
            if let Some(own) = headers.borrow_and_update().clone() {
                return (*core, own);
            }
        }
    }
    // No such core, or its server is gone: nothing more to wait for.
    *local = None;
    std::future::pending().await
}

/// Copies the driver's figures into `stats`.
fn publish(state: &DriverState, stats: &RunnerStats) {
    stats
        .top_round
        .store(state.top_round().0, Ordering::Relaxed);
    stats
        .certificates
        .store(state.certificate_count() as u64, Ordering::Relaxed);
    stats
        .payload_cache_bytes
        .store(state.cached_payload_bytes() as u64, Ordering::Relaxed);
    // Only this driver learns that a core needs a checkpoint (from `NeedStateSync`): say so.
    let counts = state.checkpoint_counts();
    let needing = stats
        .cores_needing_checkpoint
        .swap(counts.cores_needing, Ordering::Relaxed);
    if counts.cores_needing > needing {
        let cores: Vec<String> = state
            .cores_needing_checkpoint()
            .iter()
            .map(ToString::to_string)
            .collect();
        tracing::warn!(
            "core(s) {} need a checkpoint: the history they miss is gone from every core asked; \
             gathering checkpoint signatures to install one",
            cores.join(", ")
        );
    }
    let installs = stats
        .checkpoint_installs
        .swap(counts.installs_done, Ordering::Relaxed);
    if counts.installs_done > installs {
        tracing::warn!(
            "installed a certified checkpoint ({} so far, {} refused); catching up from its floor",
            counts.installs_done,
            counts.installs_refused
        );
    }
    let fills = state.fill_counts();
    stats
        .fill_entries
        .store(fills.entries_sent, Ordering::Relaxed);
    stats
        .foreign_payload_bytes
        .store(state.foreign_payload_bytes(), Ordering::Relaxed);
}

fn apply(state: &mut DriverState, now: Millis, done: Done, stats: &RunnerStats) {
    match done.result {
        Ok(response) => {
            if matches!(response, Response::Error(sleepyseal_core::CoreError::Busy)) {
                stats.busy.fetch_add(1, Ordering::Relaxed);
            }
            if !matches!(response, Response::Error(_)) {
                state.mark_delivered(done.core, &done.body);
            }
            state.on_response(now, done.id, done.core, response);
        }
        Err(error) => {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(core = %done.core, "request failed: {error}");
            state.on_failure(now, done.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sleepyseal_net::metrics::sample;

    #[test]
    fn exposition_keeps_every_name_and_help() {
        let stats = RunnerStats::default();
        stats.requests.fetch_add(9, Ordering::Relaxed);
        stats.top_round.store(12, Ordering::Relaxed);
        stats.checkpoint_installs.store(2, Ordering::Relaxed);
        stats.request_seconds.observe(0.02);
        let text = stats.exposition();
        let meta: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
        assert_eq!(
            meta,
            [
                "# HELP sleepyseal_driver_requests_total Requests sent to cores.",
                "# TYPE sleepyseal_driver_requests_total counter",
                "# HELP sleepyseal_driver_failed_requests_total Requests lost in transport (timeout, connection).",
                "# TYPE sleepyseal_driver_failed_requests_total counter",
                "# HELP sleepyseal_driver_busy_replies_total Busy replies from cores.",
                "# TYPE sleepyseal_driver_busy_replies_total counter",
                "# HELP sleepyseal_driver_top_round Highest round any core reported.",
                "# TYPE sleepyseal_driver_top_round gauge",
                "# HELP sleepyseal_driver_certificates Certificates the driver holds (assembled or learned).",
                "# TYPE sleepyseal_driver_certificates gauge",
                "# HELP sleepyseal_driver_in_flight_requests Requests sent and not answered yet.",
                "# TYPE sleepyseal_driver_in_flight_requests gauge",
                "# HELP sleepyseal_driver_payload_cache_bytes Bytes of the payloads the driver holds.",
                "# TYPE sleepyseal_driver_payload_cache_bytes gauge",
                "# HELP sleepyseal_driver_restarts_total Restarts after a panic, with fresh state.",
                "# TYPE sleepyseal_driver_restarts_total counter",
                "# HELP sleepyseal_driver_cores_needing_checkpoint Times a core was found to need a checkpoint (history gone everywhere asked).",
                "# TYPE sleepyseal_driver_cores_needing_checkpoint gauge",
                "# HELP sleepyseal_driver_checkpoint_installs Checkpoint installs a core accepted from this driver.",
                "# TYPE sleepyseal_driver_checkpoint_installs gauge",
                "# HELP sleepyseal_driver_fill_entries Gap entries in the fill steps cores took from this driver.",
                "# TYPE sleepyseal_driver_fill_entries gauge",
                "# HELP sleepyseal_driver_foreign_payload_bytes Payload bytes cores took from this driver in bundles for authors other than its home core (covers, carriage after the grace period).",
                "# TYPE sleepyseal_driver_foreign_payload_bytes gauge",
                "# HELP sleepyseal_driver_request_seconds Round trip of one request to a core.",
                "# TYPE sleepyseal_driver_request_seconds histogram",
            ]
        );
        assert_eq!(sample(&text, "sleepyseal_driver_requests_total"), Some(9.0));
        assert_eq!(sample(&text, "sleepyseal_driver_top_round"), Some(12.0));
        assert_eq!(
            sample(&text, "sleepyseal_driver_checkpoint_installs"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "sleepyseal_driver_request_seconds_count"),
            Some(1.0)
        );
        assert!(text.contains("sleepyseal_driver_request_seconds_bucket{le=\"0.025\"} 1\n"));
    }
}
