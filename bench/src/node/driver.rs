//! `sleepyseal driver`: one driver, polling every core and carrying headers, votes and
//! certificates between them, until Ctrl-C, SIGTERM, `--duration-s` or `--stop-at-us`; and the
//! driver's tuning flags, which `sleepyseal core --home-driver` takes too (prefixed).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use sleepyseal_core::AuthorityIndex;
use sleepyseal_driver::link::Links;
use sleepyseal_driver::runner::{self, RunnerOptions, RunnerStats};
use sleepyseal_driver::DriverConfig;
use sleepyseal_net::{Clients, NetLimits};
use tokio::sync::watch;

use super::lifetime::Lifetime;
use super::network::ClientFlags;
use super::{runtime, serve_metrics, tick_until_stopped, DEFAULT_COMMITTEE, DEFAULT_LOG_EVERY_S};

/// Declares a struct of the driver's tuning flags, every long name prefixed with `$prefix`:
/// `sleepyseal driver` takes them bare, `sleepyseal core` for its home driver with
/// `home-driver-`. Their help and defaults (from [`DriverConfig`]) are written once, here.
macro_rules! driver_tuning_flags {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Args, Debug, Clone)]
        pub struct $name {
            /// A request without a reply after this long (ms) is given up; the core is retried
            /// with capped back-off.
            #[arg(
                long = concat!($prefix, "request-timeout-ms"),
                default_value_t = DriverConfig::default().request_timeout_ms
            )]
            pub request_timeout_ms: u64,
            /// How often (ms) an idle core is polled.
            #[arg(
                long = concat!($prefix, "poll-interval-ms"),
                default_value_t = DriverConfig::default().poll_interval_ms
            )]
            pub poll_interval_ms: u64,
            /// A core this many rounds behind the most advanced is caught up with Sync.
            #[arg(
                long = concat!($prefix, "lag-rounds"),
                default_value_t = DriverConfig::default().lag_rounds
            )]
            pub lag_rounds: u64,
            /// Requests in flight per core: beyond the first, only header and certificate
            /// bundles carrying nothing already on its way to that core.
            #[arg(
                long = concat!($prefix, "pipeline-depth"),
                default_value_t = DriverConfig::default().pipeline_depth
            )]
            pub pipeline_depth: usize,
            /// Certificates per Fetch/Sync batch.
            #[arg(
                long = concat!($prefix, "sync-batch"),
                default_value_t = DriverConfig::default().sync_batch
            )]
            pub sync_batch: u32,
            /// Payload bytes one request carries at most (the first payload always goes). Keep
            /// it well below the cores' request limit (32 MiB): a larger request is refused
            /// whole.
            #[arg(
                long = concat!($prefix, "max-payload-bytes"),
                default_value_t = DriverConfig::default().max_payload_bytes
            )]
            pub max_payload_bytes: usize,
            /// With a home core: how long (ms) another author's header may wait for its
            /// payload to reach a core before this driver carries it there itself.
            #[arg(
                long = concat!($prefix, "payload-grace-ms"),
                default_value_t = DriverConfig::default().payload_grace_ms
            )]
            pub payload_grace_ms: u64,
            /// Hard bound on the bytes of payloads the driver keeps (at least 16 MiB, twice the
            /// largest payload); beyond it the oldest are dropped and fetched again if needed.
            #[arg(
                long = concat!($prefix, "payload-cache-bytes"),
                default_value_t = DriverConfig::default().payload_cache_bytes
            )]
            pub payload_cache_bytes: usize,
        }

        impl $name {
            /// The driver settings these flags give, for home core `home_core`.
            pub fn config(&self, home_core: Option<AuthorityIndex>) -> DriverConfig {
                DriverConfig {
                    request_timeout_ms: self.request_timeout_ms,
                    poll_interval_ms: self.poll_interval_ms,
                    lag_rounds: self.lag_rounds,
                    sync_batch: self.sync_batch,
                    max_payload_bytes: self.max_payload_bytes,
                    pipeline_depth: self.pipeline_depth.max(1),
                    home_core,
                    payload_grace_ms: self.payload_grace_ms,
                    payload_cache_bytes: self.payload_cache_bytes,
                    ..DriverConfig::default()
                }
            }
        }
    };
}

driver_tuning_flags!(
    /// The tuning flags of `sleepyseal driver`.
    DriverFlags,
    ""
);
driver_tuning_flags!(
    /// The tuning flags of the driver `sleepyseal core --home-driver` runs.
    HomeDriverFlags,
    "home-driver-"
);

/// Flags of `sleepyseal driver`.
#[derive(Args, Debug)]
pub struct DriverArgs {
    /// The committee file.
    #[arg(long, default_value = DEFAULT_COMMITTEE)]
    committee: PathBuf,
    /// This driver's home core: it pulls and carries that core's payloads eagerly, any other
    /// only when a core lists it missing or after --payload-grace-ms (PROTOCOL.md §7). Default:
    /// none, every payload eagerly.
    #[arg(long)]
    home_core: Option<u16>,
    #[command(flatten)]
    tuning: DriverFlags,
    /// Seconds between progress lines in the log (0: none).
    #[arg(long, default_value_t = DEFAULT_LOG_EVERY_S)]
    log_every_s: u64,
    /// Stop after this many seconds (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    duration_s: u64,
    /// Serve Prometheus metrics (`GET /metrics`) on this TCP address.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    lifetime: Lifetime,
    #[command(flatten)]
    net: ClientFlags,
}

impl DriverArgs {
    fn options(&self) -> RunnerOptions {
        RunnerOptions {
            driver: self.tuning.config(self.home_core.map(AuthorityIndex)),
            ..RunnerOptions::default()
        }
    }
}

/// Runs one driver until Ctrl-C, SIGTERM or `--duration-s`.
pub fn driver(args: DriverArgs) -> anyhow::Result<()> {
    let testbed = sleepyseal_net::load_testbed(&args.committee)?;
    if let Some(home) = args.home_core {
        if usize::from(home) >= testbed.committee.size() {
            bail!(
                "--home-core {home}: the committee has {} cores",
                testbed.committee.size()
            );
        }
    }
    let options = args.options();
    tracing::info!(
        "driver of {} cores: {:?}",
        testbed.committee.size(),
        options
    );
    let client_options = args.net.options()?;
    let lifetime = args.lifetime.clone();
    lifetime.recorded(|| {
        runtime("driver")?.block_on(async move {
            let clients = Arc::new(Clients::with_options(
                &testbed,
                NetLimits::default(),
                client_options,
            )?);
            let stats = Arc::new(RunnerStats::default());
            if let Some(addr) = args.metrics_addr {
                let stats = stats.clone();
                serve_metrics(addr, Arc::new(move || stats.exposition())).await?;
            }
            let (stop_tx, stop_rx) = watch::channel(false);
            let links = Arc::new(Links::quic(&clients));
            let task = tokio::spawn(runner::run(
                testbed.committee.clone(),
                links,
                options,
                stats.clone(),
                stop_rx,
            ));
            run_until_stopped(&args, &stats).await;
            let _ = stop_tx.send(true);
            let _ = task.await;
            clients.close().await;
            tracing::info!("driver stopped");
            anyhow::Ok(())
        })
    })
}

/// Logs progress until a signal or `--duration-s`.
async fn run_until_stopped(args: &DriverArgs, stats: &RunnerStats) {
    let deadline = args
        .lifetime
        .deadline_or((args.duration_s > 0).then(|| Duration::from_secs(args.duration_s)));
    tick_until_stopped(args.log_every_s, deadline, || {
        tracing::info!(
            "top round {} certificates {} requests {} failures {} busy {}",
            stats.top_round.load(Ordering::Relaxed),
            stats.certificates.load(Ordering::Relaxed),
            stats.requests.load(Ordering::Relaxed),
            stats.failures.load(Ordering::Relaxed),
            stats.busy.load(Ordering::Relaxed),
        );
        true
    })
    .await;
}
