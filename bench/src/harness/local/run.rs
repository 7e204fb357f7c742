//! One run of the benchmark, phase by phase: start the cores and wait until they answer, start
//! the drivers, follow the watched core's commit stream, start the load clients, measure
//! (crashing cores on schedule, sampling `/proc` at the edges of the window), drain, collect the
//! metrics, stop everything, and compute the report.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use sleepyseal_core::AuthorityIndex;
use sleepyseal_net::{Clients, NetLimits};
use tokio::runtime::Runtime;

use super::progress::Progress;
use super::store::StoreSampler;
use crate::harness::args::LocalArgs;
use crate::harness::report::transport::FloodSection;
use crate::harness::report::{
    self, CoreFlow, CoreTotals, LoadSummary, ProcessSamples, Report, RunConfig,
};
use crate::harness::testbed::{self, wait_ready, Kind, Proc, Spec, Testbed};
use crate::node::observe::Observed;
use crate::node::observe::Watcher;
use crate::node::procstat::ProcStats;
use crate::node::transaction::unix_micros;
use crate::node::usage::{cpu_seconds, peak_rss_kib};

/// Runs the benchmark once at `rate` with its files in `dir`, and computes the report.
pub fn run_once(
    rt: &Runtime,
    args: &LocalArgs,
    rate: u64,
    dir: &Path,
    interrupted: &AtomicBool,
) -> anyhow::Result<Report> {
    let metrics_dir = dir.join("metrics");
    std::fs::create_dir_all(&metrics_dir)?;
    flush_dirty_pages();
    let mut run = Run::start(rt, args, rate, dir)?;
    let schedule = Schedule::new(args);
    let watched = AuthorityIndex(run.live[0] as u16);
    let mut watcher = Watcher::start(rt, &run.clients, watched, schedule.observed());
    let load_outputs = run.start_loads(rate, dir, &schedule)?;
    let flood_output = run.start_flood(dir, &schedule)?;
    let mut progress = Progress::new(schedule.load_seconds);
    let mut stores = StoreSampler::new(
        (0..args.cores)
            .map(|i| run.bed.dir.join(format!("store-{i}")))
            .collect(),
    );
    let (window, probe) =
        run.measure(&schedule, &watcher, &mut progress, &mut stores, interrupted)?;
    let store_bound = run.store_bound();
    let loads = run.wait_for_loads(&load_outputs);
    let accepted: u64 = loads.iter().map(|l| l.accepted).sum();
    drain(args, &watcher, &mut progress, accepted, interrupted);
    progress.finish();
    watcher.stop(rt);
    let core_totals = run.scrape_metrics(&metrics_dir);
    let peak_rss_kib = run.stop();
    let start = window.start.unwrap_or_default();
    let samples = ProcessSamples {
        cpu_start: start.cpu,
        cpu_end: window.end.cpu,
        peak_rss_kib,
        detail_start: start.detail,
        detail_end: window.end.detail,
        flow_start: start.flow,
        flow_end: window.end.flow,
    };
    let observed = watcher.observed();
    let mut report = report::build(
        run_config(args, rate, watched),
        core_totals,
        &observed,
        &loads,
        accepted,
        &samples,
    );
    stores.write_csv(&dir.join("store-sizes.csv"))?;
    let bound = store_bound.unwrap_or(0);
    if stores.samples().len() >= 2 {
        crate::harness::plot::store_sizes(&dir.join("store-sizes.svg"), stores.samples(), bound)?;
    }
    report.store = stores.growth(bound);
    if let (Some(output), Some(transport)) = (flood_output, report.transport.as_mut()) {
        let summary = std::fs::read_to_string(&output)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        match summary {
            Some(summary) => {
                transport.flood = Some(FloodSection {
                    summary,
                    new_driver_first_reply_ms: probe.and_then(|p| p.new_prefix_ms),
                    same_host_driver_first_reply_ms: probe.and_then(|p| p.same_host_ms),
                });
            }
            None => eprintln!(
                "warning: the flood left no summary in {} (see logs/flood.log)",
                output.display()
            ),
        }
    }
    Ok(report)
}

/// Writes back the page cache before a run starts. Every core fsyncs each group commit, so
/// gigabytes left dirty by a build or by the previous run of a sweep (written back while the run
/// goes on) slowed the first seconds of a run: its rounds fell to a third and the backlog took
/// twenty seconds to drain.
fn flush_dirty_pages() {
    match std::process::Command::new("sync").status() {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("warning: `sync` before the run failed: {status}"),
        Err(e) => eprintln!("warning: `sync` before the run could not start: {e}"),
    }
}

/// When the load runs and what is measured (µs since the Unix epoch).
struct Schedule {
    /// Warm-up and measured seconds.
    load_seconds: u64,
    load_start_us: u64,
    /// The measurement window.
    window: (u64, u64),
}

impl Schedule {
    /// The load starts shortly after now (the watcher follows the commit stream from before).
    fn new(args: &LocalArgs) -> Schedule {
        let load_seconds = args.warmup + args.duration;
        let load_start_us = unix_micros() + 200_000;
        Schedule {
            load_seconds,
            load_start_us,
            window: (
                load_start_us + args.warmup * 1_000_000,
                load_start_us + load_seconds * 1_000_000,
            ),
        }
    }

    fn observed(&self) -> Observed {
        Observed::new(self.load_start_us, self.window)
    }
}

/// The processes of one run; dropping it kills whatever still runs.
struct Processes {
    cores: Vec<Option<Proc>>,
    drivers: Vec<Proc>,
    loads: Vec<Proc>,
    /// The `--flood` process.
    flood: Option<Proc>,
}

impl Processes {
    fn all(&self) -> impl Iterator<Item = &Proc> {
        self.cores
            .iter()
            .flatten()
            .chain(self.drivers.iter())
            .chain(self.loads.iter())
            .chain(self.flood.iter())
    }

    fn stop_all(&mut self) {
        for p in self
            .flood
            .iter_mut()
            .chain(self.loads.iter_mut())
            .chain(self.drivers.iter_mut())
        {
            p.stop(Duration::from_secs(5));
        }
        for p in self.cores.iter_mut().flatten() {
            p.stop(Duration::from_secs(10));
        }
    }

    /// A process that died on its own, other than a crashed core or a finished load client.
    fn failed(&mut self) -> Option<String> {
        for p in self
            .cores
            .iter_mut()
            .flatten()
            .chain(self.drivers.iter_mut())
        {
            if let Some(status) = p.exited() {
                return Some(format!(
                    "{} {} exited ({status}); its log ends with:\n{}",
                    p.kind.name(),
                    p.index,
                    p.log_tail(15)
                ));
            }
        }
        None
    }

    /// CPU seconds and `/proc` counters per process kind (no metrics).
    fn by_kind(&self) -> Edge {
        let mut cpu: Vec<(Kind, f64)> = Vec::new();
        let mut detail: Vec<(Kind, ProcStats)> = Vec::new();
        for p in self.all() {
            let seconds = p.cpu_seconds().unwrap_or(0.0);
            match cpu.iter_mut().find(|(k, _)| *k == p.kind) {
                Some((_, total)) => *total += seconds,
                None => cpu.push((p.kind, seconds)),
            }
            let stats = ProcStats::read(p.pid()).unwrap_or_default();
            match detail.iter_mut().find(|(k, _)| *k == p.kind) {
                Some((_, total)) => total.add(&stats),
                None => detail.push((p.kind, stats)),
            }
        }
        // The harness itself (this process), reported beside the system.
        let me = std::process::id();
        if let (Some(seconds), Some(stats)) = (cpu_seconds(me), ProcStats::read(me)) {
            cpu.push((Kind::Harness, seconds));
            detail.push((Kind::Harness, stats));
        }
        Edge {
            cpu,
            detail,
            flow: None,
        }
    }
}

/// What the processes and the cores' metrics said at one edge of the measurement window.
#[derive(Default)]
struct Edge {
    /// CPU seconds per kind.
    cpu: Vec<(Kind, f64)>,
    /// `/proc` counters per kind.
    detail: Vec<(Kind, ProcStats)>,
    /// The cores' metrics (none if a core did not answer).
    flow: Option<CoreFlow>,
}

/// The edges of the measurement window (the start missing if the run ended before it).
struct Window {
    start: Option<Edge>,
    end: Edge,
}

/// A run in progress: its testbed, its processes and the harness's clients.
struct Run<'a> {
    rt: &'a Runtime,
    args: &'a LocalArgs,
    bed: Testbed,
    procs: Processes,
    clients: Arc<Clients>,
    /// The cores that fail (the last `--crash`).
    crashed: Vec<usize>,
    /// The cores that stay up (the load goes to them; the first is watched).
    live: Vec<usize>,
}

impl<'a> Run<'a> {
    /// Writes the testbed, starts the cores (all but those crashed from the start; each with its
    /// home driver unless `--no-home-drivers`), waits until every started core answers, then
    /// starts the standalone drivers.
    fn start(
        rt: &'a Runtime,
        args: &'a LocalArgs,
        rate: u64,
        dir: &Path,
    ) -> anyhow::Result<Run<'a>> {
        let n = args.cores;
        let spec = Spec {
            cores: n,
            drivers: args.drivers,
            stakes: args.stakes.clone(),
            base_port: args.base_port,
            seed: rate,
            constants: args.constants(),
            flags: args.node_flags(),
            core_extra: Vec::new(),
            loads: args.clients,
            wan: args.wan.clone(),
        };
        let bed = Testbed::create(dir, spec)?;
        let crashed: Vec<usize> = (n - args.crash..n).collect();
        let never_started = |i: &usize| crashed.contains(i) && args.crash_at == 0;
        let cores = (0..n)
            .map(|i| (!never_started(&i)).then(|| bed.start_core(i)).transpose())
            .collect::<anyhow::Result<_>>()?;
        let options = bed.client_options()?;
        let clients =
            rt.block_on(async { Clients::with_options(&bed.net, NetLimits::default(), options) })?;
        let mut run = Run {
            rt,
            args,
            procs: Processes {
                cores,
                drivers: Vec::new(),
                loads: Vec::new(),
                flood: None,
            },
            clients: Arc::new(clients),
            live: (0..n - args.crash).collect(),
            crashed,
            bed,
        };
        run.wait_until_cores_answer()?;
        for j in 0..args.drivers {
            run.procs.drivers.push(run.bed.start_driver(j, None)?);
        }
        Ok(run)
    }

    fn wait_until_cores_answer(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let instance = self.bed.net.committee.instance();
        let started: Vec<usize> = (0..self.args.cores)
            .filter(|i| self.procs.cores[*i].is_some())
            .collect();
        for i in started {
            let procs = &mut self.procs;
            wait_ready(self.rt, &self.clients, instance, i, deadline, || {
                procs.failed()
            })?;
        }
        Ok(())
    }

    /// Waits for the load's start, then starts the load clients on the cores that stay up, the
    /// rate split between them. Returns where each writes its summary.
    fn start_loads(
        &mut self,
        rate: u64,
        dir: &Path,
        schedule: &Schedule,
    ) -> anyhow::Result<Vec<PathBuf>> {
        std::thread::sleep(Duration::from_micros(
            schedule.load_start_us.saturating_sub(unix_micros()),
        ));
        let targets = self
            .live
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let clients = self.args.clients as u64;
        let outputs: Vec<PathBuf> = (0..self.args.clients)
            .map(|c| dir.join(format!("load-{c}.json")))
            .collect();
        for (c, output) in outputs.iter().enumerate() {
            let share = rate / clients + u64::from((c as u64) < rate % clients);
            let flags = [
                format!("--rate={share}"),
                format!("--tx-size={}", self.args.tx_size),
                format!("--duration={}", schedule.load_seconds),
                format!("--core={targets}"),
                format!("--client-id={c}"),
                "--json".to_string(),
            ];
            self.procs
                .loads
                .push(self.bed.start_load(c, &flags, output)?);
        }
        Ok(outputs)
    }

    /// With `--flood`, starts the flood process: it waits for the window's start and runs
    /// through it. Returns where it writes its summary.
    fn start_flood(&mut self, dir: &Path, schedule: &Schedule) -> anyhow::Result<Option<PathBuf>> {
        let Some(kind) = self.args.flood else {
            return Ok(None);
        };
        let output = dir.join("flood.json");
        let flags = [
            format!("--kind={}", kind.name()),
            format!("--duration={}", self.args.duration),
            format!("--sources={}", self.args.flood_sources),
            format!("--connections={}", self.args.flood_connections),
            format!("--streams={}", self.args.flood_streams),
            format!("--start-at-us={}", schedule.window.0),
            format!("--json-out={}", output.display()),
        ];
        self.procs.flood = Some(self.bed.start_flood(&flags)?);
        Ok(Some(output))
    }

    /// The load phase: until the load ends (or an interrupt), crashes the `--crash` cores at
    /// `--crash-at`, samples CPU at the edges of the window (the end at the latest when the phase
    /// ends) and shows progress; with `--flood`, polls every core as a new driver would in the
    /// middle of the window. Fails if a core or a driver dies on its own.
    fn measure(
        &mut self,
        schedule: &Schedule,
        watcher: &Watcher,
        progress: &mut Progress,
        stores: &mut StoreSampler,
        interrupted: &AtomicBool,
    ) -> anyhow::Result<(Window, Option<NewDriverProbe>)> {
        let started = Instant::now();
        let load_end = Duration::from_secs(schedule.load_seconds) + Duration::from_millis(500);
        let args = self.args;
        let mut crash_at =
            (args.crash_at > 0 && args.crash > 0).then(|| Duration::from_secs(args.crash_at));
        let (mut start, mut end) = (None, None);
        let probe_at = (schedule.window.0 + schedule.window.1) / 2;
        let mut probe = None;
        let mut probe_result = None;
        while started.elapsed() < load_end {
            if interrupted.load(Ordering::SeqCst) {
                break;
            }
            if let Some(why) = self.procs.failed() {
                bail!("{why}");
            }
            let now = unix_micros();
            if crash_at.is_some_and(|at| started.elapsed() >= at) {
                self.crash();
                crash_at = None;
            }
            if start.is_none() && now >= schedule.window.0 {
                start = Some(self.edge());
            }
            if end.is_none() && now >= schedule.window.1 {
                end = Some(self.edge());
            }
            if self.args.flood.is_some() && probe.is_none() && now >= probe_at {
                probe = Some(self.start_probe());
            }
            if let Some(handle) = probe.as_mut() {
                if let Some(result) = handle.take(self.rt) {
                    probe_result = Some(result);
                }
            }
            progress.show(&watcher.observed(), now);
            stores.maybe_sample();
            for p in self
                .procs
                .loads
                .iter_mut()
                .chain(self.procs.flood.iter_mut())
            {
                p.sample_rss();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let (None, Some(handle)) = (&probe_result, probe.as_mut()) {
            probe_result = handle.wait(self.rt);
        }
        let window = Window {
            end: end.unwrap_or_else(|| self.edge()),
            start,
        };
        Ok((window, probe_result))
    }

    /// Starts polling every live core as a new driver would, in the background (see
    /// [`NewDriverProbe`]).
    fn start_probe(&self) -> ProbeHandle {
        let (net, live, instance) = (
            self.bed.net.clone(),
            self.live.clone(),
            self.bed.net.committee.instance(),
        );
        let handle = self.rt.spawn(async move {
            let first_reply = |bind: std::net::IpAddr| {
                let (net, live) = (net.clone(), live.clone());
                async move {
                    let options = sleepyseal_net::client::ClientOptions {
                        bind_ip: Some(bind),
                        wan: None,
                    };
                    let clients =
                        Clients::with_options(&net, NetLimits::default(), options).ok()?;
                    let mut slowest: f64 = 0.0;
                    for i in &live {
                        let answered = first_poll(&clients, instance, *i, PROBE_PATIENCE).await?;
                        slowest = slowest.max(answered.as_secs_f64() * 1e3);
                    }
                    clients.close().await;
                    Some(slowest)
                }
            };
            let (new_prefix_ms, same_host_ms) = tokio::join!(
                first_reply(std::net::IpAddr::from([127, 250, 0, 1])),
                first_reply(std::net::IpAddr::from([127, 0, 0, 1])),
            );
            NewDriverProbe {
                new_prefix_ms,
                same_host_ms,
            }
        });
        ProbeHandle(Some(handle))
    }

    /// Samples the processes and the live cores' metrics now.
    fn edge(&self) -> Edge {
        let edge = self.procs.by_kind();
        let texts: Option<Vec<String>> = self
            .bed
            .core_metrics
            .iter()
            .enumerate()
            .filter(|(i, _)| self.procs.cores[*i].is_some())
            .map(|(_, port)| testbed::scrape(self.rt, *port, Duration::from_secs(1)))
            .collect();
        Edge {
            flow: texts.map(|t| CoreFlow::from_metrics(&t)),
            ..edge
        }
    }

    /// The sum of a live core's configured storage bounds, from its metrics.
    fn store_bound(&self) -> Option<u64> {
        let i = (0..self.procs.cores.len()).find(|i| self.procs.cores[*i].is_some())?;
        let text = testbed::scrape(self.rt, self.bed.core_metrics[i], Duration::from_secs(1))?;
        sleepyseal_net::metrics::sample(&text, "sleepyseal_core_store_bound_bytes")
            .map(|v| v as u64)
    }

    /// Kills the `--crash` cores (SIGKILL).
    fn crash(&mut self) {
        for i in &self.crashed {
            if let Some(p) = self.procs.cores[*i].as_mut() {
                p.kill();
            }
            self.procs.cores[*i] = None;
        }
    }

    /// Waits (up to 15 s) for the load clients to exit, then reads their summaries.
    fn wait_for_loads(&mut self, outputs: &[PathBuf]) -> Vec<LoadSummary> {
        let deadline = Instant::now() + Duration::from_secs(15);
        for p in self.procs.loads.iter_mut() {
            while p.exited().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        report::read_loads(outputs)
    }

    /// Saves every live process's metrics in `dir` and sums the cores' totals.
    fn scrape_metrics(&self, dir: &Path) -> CoreTotals {
        let mut core_texts = Vec::new();
        for (i, port) in self.bed.core_metrics.iter().enumerate() {
            if self.procs.cores[i].is_some() {
                core_texts.extend(scrape_to(
                    self.rt,
                    *port,
                    &dir.join(format!("core-{i}.prom")),
                ));
            }
        }
        for (j, port) in self.bed.driver_metrics.iter().enumerate() {
            scrape_to(self.rt, *port, &dir.join(format!("driver-{j}.prom")));
        }
        let from_cores = |name: &str| -> u64 {
            core_texts
                .iter()
                .filter_map(|t| sleepyseal_net::metrics::sample(t, name))
                .sum::<f64>() as u64
        };
        CoreTotals {
            own_headers_orphaned: from_cores("sleepyseal_core_own_headers_orphaned_total"),
            requeued_transactions: from_cores("sleepyseal_core_requeued_transactions_total"),
            busy_replies: from_cores("sleepyseal_core_busy_replies_total"),
        }
    }

    /// Stops every process and the clients, deletes the testbed unless kept; returns each
    /// process's peak RSS (KiB).
    fn stop(&mut self) -> Vec<(Kind, u64)> {
        let mut peak_rss: Vec<(Kind, u64)> = self
            .procs
            .all()
            .map(|p| (p.kind, p.peak_rss_kib().unwrap_or(0)))
            .collect();
        let harness = peak_rss_kib(std::process::id()).unwrap_or(0);
        peak_rss.push((Kind::Harness, harness));
        self.procs.stop_all();
        self.rt.block_on(self.clients.close());
        self.bed.remove(self.args.keep_testbed);
        peak_rss
    }
}

/// After the load: waits up to `--drain` seconds until every acknowledged transaction has
/// committed.
fn drain(
    args: &LocalArgs,
    watcher: &Watcher,
    progress: &mut Progress,
    accepted: u64,
    interrupted: &AtomicBool,
) {
    let deadline = Instant::now() + Duration::from_secs(args.drain);
    while Instant::now() < deadline && !interrupted.load(Ordering::SeqCst) {
        if watcher.observed().load_committed >= accepted {
            break;
        }
        progress.show(&watcher.observed(), unix_micros());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Saves one process's metrics text and returns it (best effort: a failure is reported, not
/// fatal).
fn scrape_to(rt: &Runtime, port: u16, path: &Path) -> Option<String> {
    let Some(text) = testbed::scrape(rt, port, Duration::from_secs(2)) else {
        eprintln!("could not scrape metrics from 127.0.0.1:{port}");
        return None;
    };
    if let Err(e) = std::fs::write(path, &text) {
        eprintln!("write {}: {e}", path.display());
    }
    Some(text)
}

/// The parameters of the run, as reported.
pub fn run_config(args: &LocalArgs, rate: u64, watched: AuthorityIndex) -> RunConfig {
    RunConfig {
        cores: args.cores,
        drivers: args.drivers,
        home_drivers: !args.no_home_drivers,
        dead_home_drivers: args.dead_home_drivers,
        clients: args.clients,
        rate,
        tx_size: args.tx_size,
        duration_s: args.duration,
        warmup_s: args.warmup,
        batch_size: args.batch_size,
        max_batch_size: args.max_batch_size.max(args.batch_size),
        max_batch_delay_ms: args.max_batch_delay_ms,
        straggler_wait_ms: args.straggler_wait_ms,
        verify_batch: args.verify_batch,
        verify_threads: args.verify_threads,
        pipeline_depth: args.pipeline_depth,
        gc_depth: args.gc_depth,
        leader_timeout_ms: args.leader_timeout,
        crash: args.crash,
        crash_at_s: args.crash_at,
        watched_core: watched.0,
        wan: args.wan.as_ref().map(|w| w.display().to_string()),
        sweep: None,
    }
}

/// How long the new-driver probe keeps asking a core before it reports it as never answering.
const PROBE_PATIENCE: Duration = Duration::from_secs(5);

/// A new driver's first poll of every live core, mid-flood: the slowest core's time to answer
/// (ms) from an unseen source prefix and from 127.0.0.1; `None` if a core never answered within
/// [`PROBE_PATIENCE`].
#[derive(Clone, Copy, Debug)]
pub struct NewDriverProbe {
    pub new_prefix_ms: Option<f64>,
    pub same_host_ms: Option<f64>,
}

/// The probe running in the background.
struct ProbeHandle(Option<tokio::task::JoinHandle<NewDriverProbe>>);

impl ProbeHandle {
    /// The result if the probe finished.
    fn take(&mut self, rt: &Runtime) -> Option<NewDriverProbe> {
        if !self.0.as_ref()?.is_finished() {
            return None;
        }
        self.wait(rt)
    }

    /// Waits for the result (the probe is bounded by its patience per core).
    fn wait(&mut self, rt: &Runtime) -> Option<NewDriverProbe> {
        rt.block_on(self.0.take()?).ok()
    }
}

/// How long core `i` took to answer a first `GetState` from `clients` (a fresh connection:
/// handshake, address validation and admission included), asking again after each failure for
/// up to `patience`.
async fn first_poll(
    clients: &Clients,
    instance: sleepyseal_core::Digest,
    i: usize,
    patience: Duration,
) -> Option<Duration> {
    use sleepyseal_core::protocol::{Request, RequestBody, Response};
    let started = Instant::now();
    let request = Request {
        instance,
        body: RequestBody::GetState {
            with_payload: false,
        },
    };
    while started.elapsed() < patience {
        let reply = clients
            .core(AuthorityIndex(i as u16))
            .request(&request, Duration::from_secs(1))
            .await;
        if matches!(reply, Ok(Response::Summary(_))) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
