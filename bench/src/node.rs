//! `sleepyseal genesis`, `sleepyseal core` and `sleepyseal driver`: the processes of a testbed.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use sleepyseal_core::committee::default_schedule;
use sleepyseal_core::limits::MAX_PAYLOAD_BYTES;
use sleepyseal_core::machine::{
    DEFAULT_BATCH_SIZE_BYTES, DEFAULT_COMMITTED_WINDOW_BYTES, DEFAULT_COMMITTED_WINDOW_ENTRIES,
    DEFAULT_GC_DEPTH, DEFAULT_LEADER_TIMEOUT_MS, DEFAULT_MEMPOOL_BYTES,
    DEFAULT_MEMPOOL_TRANSACTIONS, DEFAULT_STRAGGLER_WAIT_MS, DEFAULT_VOTE_TIMEOUT_MS,
};
use sleepyseal_core::store::wal::WalStore;
use sleepyseal_core::verify::VerifierConfig;
use sleepyseal_core::{Core, CoreConfig, Store, Verifier};
use sleepyseal_driver::runner::{self, RunnerOptions, RunnerStats};
use sleepyseal_driver::DriverConfig;
use sleepyseal_net::metrics;
use sleepyseal_net::server::ServerOptions;
use sleepyseal_net::{Clients, CoreServer, GenesisOptions, NetLimits};
use tokio::sync::watch;

/// Flags of `sleepyseal genesis`.
#[derive(Args, Debug)]
pub struct GenesisArgs {
    /// Number of cores (validators).
    #[arg(long, default_value_t = 4)]
    cores: usize,
    /// Stake per core, comma separated (default: 1 each).
    #[arg(long, value_delimiter = ',')]
    stakes: Option<Vec<u64>>,
    /// Directory to write committee.json and core-<i>.key into.
    #[arg(long, default_value = "testbed")]
    dir: PathBuf,
    /// Host every core listens on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port of core 0; core i listens on base-port + i.
    #[arg(long, default_value_t = 7100)]
    base_port: u16,
    /// Derive the ed25519 keys from this seed (reproducible local testbeds only; default: random).
    #[arg(long)]
    seed: Option<u64>,
}

/// Writes a testbed's committee file and key files.
pub fn genesis(args: GenesisArgs) -> anyhow::Result<()> {
    let stakes = args.stakes.unwrap_or_else(|| vec![1; args.cores]);
    if stakes.len() != args.cores {
        bail!(
            "--stakes lists {} stakes for {} cores",
            stakes.len(),
            args.cores
        );
    }
    let path = sleepyseal_net::genesis(
        &args.dir,
        &GenesisOptions {
            stakes,
            host: args.host,
            base_port: args.base_port,
            seed: args.seed,
        },
    )?;
    println!(
        "wrote {} and {} key files in {}",
        path.display(),
        args.cores,
        args.dir.display()
    );
    Ok(())
}

/// Default of `--max-batch-delay-ms`.
pub const DEFAULT_MAX_BATCH_DELAY_MS: u64 = 0;

/// Flags of `sleepyseal core`.
#[derive(Args, Debug)]
pub struct CoreArgs {
    /// The committee file.
    #[arg(long, default_value = "testbed/committee.json")]
    committee: PathBuf,
    /// This core's key file.
    #[arg(long)]
    key: PathBuf,
    /// Directory of this core's durable store (created if missing; locked while running).
    #[arg(long)]
    store: PathBuf,
    /// Payload bytes per header: the core proposes when its mempool holds this much.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE_BYTES)]
    batch_size: usize,
    /// How long (ms) the core may wait for a full batch before proposing a smaller one.
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH_DELAY_MS)]
    max_batch_delay_ms: u64,
    /// How long (ms) a core holding a quorum of a round waits for the certificate of a live
    /// author still missing from it (so the next header references it).
    #[arg(long, default_value_t = DEFAULT_STRAGGLER_WAIT_MS)]
    straggler_wait_ms: u64,
    /// Rounds of the DAG kept below the last committed leader.
    #[arg(long, default_value_t = DEFAULT_GC_DEPTH)]
    gc_depth: u64,
    /// Rounds below gc_round whose certificates and payloads are kept to serve lagging cores
    /// (default: --gc-depth). A core further behind than every other core retains cannot catch
    /// up (checkpoints are future work): at ~100 rounds/s, 50 rounds is half a second of outage.
    #[arg(long)]
    retention_rounds: Option<u64>,
    /// How long (ms) a core waits for the leader before advancing without it.
    #[arg(long, default_value_t = DEFAULT_LEADER_TIMEOUT_MS)]
    leader_timeout_ms: u64,
    /// How long (ms) a core waits for votes for the leader before advancing without them.
    #[arg(long, default_value_t = DEFAULT_VOTE_TIMEOUT_MS)]
    vote_timeout_ms: u64,
    /// Mempool bound in bytes (clients get Busy beyond it).
    #[arg(long, default_value_t = DEFAULT_MEMPOOL_BYTES)]
    mempool_bytes: usize,
    /// Mempool bound in transactions.
    #[arg(long, default_value_t = DEFAULT_MEMPOOL_TRANSACTIONS)]
    mempool_transactions: usize,
    /// Committed entries kept for clients to read (older ones are evicted with their payloads).
    #[arg(long, default_value_t = DEFAULT_COMMITTED_WINDOW_ENTRIES)]
    committed_window_entries: usize,
    /// Payload bytes of committed entries kept for clients to read.
    #[arg(long, default_value_t = DEFAULT_COMMITTED_WINDOW_BYTES)]
    committed_window_bytes: usize,
    /// Signatures per verification batch (one rayon task each).
    #[arg(long, default_value_t = 64)]
    verify_batch: usize,
    /// Threads verifying signatures.
    #[arg(long, default_value_t = 2)]
    verify_threads: usize,
    /// Concurrent client connections accepted.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// Seconds between progress lines in the log (0: none).
    #[arg(long, default_value_t = 5)]
    log_every_s: u64,
    /// Serve Prometheus metrics (`GET /metrics`) on this TCP address.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
}

/// Runs one core until Ctrl-C or SIGTERM.
pub fn core(args: CoreArgs) -> anyhow::Result<()> {
    if args.batch_size == 0 || args.batch_size > MAX_PAYLOAD_BYTES {
        bail!("--batch-size must be in 1..={MAX_PAYLOAD_BYTES}");
    }
    let testbed = sleepyseal_net::load_testbed(&args.committee)?;
    let keys = sleepyseal_net::load_keys(&args.key, &testbed)?;
    let index = keys.index;
    let address = testbed.addresses[index.as_usize()];
    let config = CoreConfig {
        gc_depth: args.gc_depth,
        retention_rounds: args.retention_rounds.unwrap_or(args.gc_depth),
        batch_size_bytes: args.batch_size,
        max_batch_delay_ms: args.max_batch_delay_ms,
        straggler_wait_ms: args.straggler_wait_ms,
        leader_timeout_ms: args.leader_timeout_ms,
        vote_timeout_ms: args.vote_timeout_ms,
        mempool_max_bytes: args.mempool_bytes,
        mempool_max_transactions: args.mempool_transactions,
        committed_window_entries: args.committed_window_entries,
        committed_window_bytes: args.committed_window_bytes,
    };
    let limits = NetLimits {
        max_connections: args.max_connections,
        ..NetLimits::default()
    };
    let options = ServerOptions {
        limits: limits.clone(),
        verify_threads: args.verify_threads,
        ..ServerOptions::default()
    };
    tracing::info!(
        "core {index} at {address}: {config:?}, verify batch {} on {} threads, {limits:?}, store {}",
        args.verify_batch,
        args.verify_threads,
        args.store.display()
    );
    let mut store = WalStore::open(&args.store)
        .with_context(|| format!("open store {}", args.store.display()))?;
    let entries = store.load()?;
    let committee = testbed.committee.clone();
    let core = Core::recover(
        committee.clone(),
        default_schedule(&committee),
        keys.key,
        config,
        entries,
    )
    .context("recover the core from its store")?;
    tracing::info!(
        "recovered: round {}, committed index {}, last committed round {}",
        core.round(),
        core.consensus().consensus_index,
        core.consensus().last_committed_round
    );
    let verifier = Verifier::new(
        committee,
        VerifierConfig {
            batch_size: args.verify_batch.max(1),
            ..VerifierConfig::default()
        },
    );
    let quic = sleepyseal_net::tls::server_config(
        testbed.certificates[index.as_usize()].clone(),
        keys.tls_key,
        &limits,
    )?;
    let runtime = runtime("core")?;
    runtime.block_on(async move {
        let server = CoreServer::start(address, quic, core, Box::new(store), verifier, options)?;
        let stats = server.stats().clone();
        if let Some(addr) = args.metrics_addr {
            let stats = stats.clone();
            serve_metrics(addr, Arc::new(move || stats.exposition())).await?;
        }
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        let mut progress = interval(args.log_every_s);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = progress.tick() => {
                    if server.core_stopped() {
                        break;
                    }
                    tracing::info!(
                        "round {} committed round {} index {} mempool {} requests {} busy {} connections {} groups {}",
                        stats.round.load(Ordering::Relaxed),
                        stats.last_committed_round.load(Ordering::Relaxed),
                        stats.consensus_index.load(Ordering::Relaxed),
                        stats.mempool.load(Ordering::Relaxed),
                        stats.requests.load(Ordering::Relaxed),
                        stats.busy.load(Ordering::Relaxed),
                        stats.connections.load(Ordering::Relaxed),
                        stats.group_commits.load(Ordering::Relaxed),
                    );
                }
            }
        }
        let stopped = server.core_stopped();
        tracing::info!("shutting down");
        server.shutdown().await?;
        if stopped {
            bail!("the core thread stopped before shutdown");
        }
        tracing::info!("store closed cleanly");
        Ok(())
    })
}

/// Flags of `sleepyseal driver`.
#[derive(Args, Debug)]
pub struct DriverArgs {
    /// The committee file.
    #[arg(long, default_value = "testbed/committee.json")]
    committee: PathBuf,
    /// A request without a reply after this long (ms) is given up; the core is retried with
    /// capped back-off.
    #[arg(long, default_value_t = 1_000)]
    request_timeout_ms: u64,
    /// How often (ms) an idle core is polled.
    #[arg(long, default_value_t = 20)]
    poll_interval_ms: u64,
    /// A core this many rounds behind the most advanced is caught up with Sync.
    #[arg(long, default_value_t = 3)]
    lag_rounds: u64,
    /// Requests in flight per core: beyond the first, only header and certificate bundles
    /// carrying nothing already on its way to that core.
    #[arg(long, default_value_t = 2)]
    pipeline_depth: usize,
    /// Certificates per Fetch/Sync batch.
    #[arg(long, default_value_t = 256)]
    sync_batch: u32,
    /// Payload bytes one request carries at most (the first payload always goes). Keep it well
    /// below the cores' request limit (32 MiB): a larger request is refused whole.
    #[arg(long, default_value_t = 16 << 20)]
    max_payload_bytes: usize,
    /// Seconds between progress lines in the log (0: none).
    #[arg(long, default_value_t = 5)]
    log_every_s: u64,
    /// Stop after this many seconds (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    duration_s: u64,
    /// Serve Prometheus metrics (`GET /metrics`) on this TCP address.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
}

/// Runs one driver until Ctrl-C, SIGTERM or `--duration-s`.
pub fn driver(args: DriverArgs) -> anyhow::Result<()> {
    let testbed = sleepyseal_net::load_testbed(&args.committee)?;
    let options = RunnerOptions {
        driver: DriverConfig {
            request_timeout_ms: args.request_timeout_ms,
            poll_interval_ms: args.poll_interval_ms,
            lag_rounds: args.lag_rounds,
            sync_batch: args.sync_batch,
            max_payload_bytes: args.max_payload_bytes,
            pipeline_depth: args.pipeline_depth.max(1),
            ..DriverConfig::default()
        },
        ..RunnerOptions::default()
    };
    tracing::info!(
        "driver of {} cores: {:?}",
        testbed.committee.size(),
        options
    );
    let runtime = runtime("driver")?;
    runtime.block_on(async move {
        let clients = Arc::new(Clients::new(&testbed, NetLimits::default())?);
        let stats = Arc::new(RunnerStats::default());
        if let Some(addr) = args.metrics_addr {
            let stats = stats.clone();
            serve_metrics(addr, Arc::new(move || stats.exposition())).await?;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(runner::run(
            testbed.committee.clone(),
            clients.clone(),
            options,
            stats.clone(),
            stop_rx,
        ));
        let deadline = async {
            if args.duration_s == 0 {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_secs(args.duration_s)).await;
        };
        tokio::pin!(deadline);
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        let mut progress = interval(args.log_every_s);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = &mut deadline => break,
                _ = progress.tick() => tracing::info!(
                    "top round {} certificates {} requests {} failures {} busy {}",
                    stats.top_round.load(Ordering::Relaxed),
                    stats.certificates.load(Ordering::Relaxed),
                    stats.requests.load(Ordering::Relaxed),
                    stats.failures.load(Ordering::Relaxed),
                    stats.busy.load(Ordering::Relaxed),
                ),
            }
        }
        let _ = stop_tx.send(true);
        let _ = task.await;
        clients.close().await;
        tracing::info!("driver stopped");
        Ok(())
    })
}

/// Serves `render` as Prometheus text on `addr` and logs where.
async fn serve_metrics(addr: std::net::SocketAddr, render: metrics::Render) -> anyhow::Result<()> {
    let bound = metrics::serve(addr, render)
        .await
        .with_context(|| format!("serve metrics on {addr}"))?;
    tracing::info!("metrics on http://{bound}/metrics");
    Ok(())
}

/// The tokio runtime of a process; its threads are named `<name>-net` (profiles tell the
/// processes of a local run apart by thread name).
pub fn runtime(name: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(format!("{name}-net"))
        .enable_all()
        .build()
        .context("start the tokio runtime")
}

/// A progress ticker; never fires when `every_s` is 0.
pub fn interval(every_s: u64) -> tokio::time::Interval {
    let period = if every_s == 0 {
        Duration::from_secs(u64::MAX / 4)
    } else {
        Duration::from_secs(every_s)
    };
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called (not when first
/// polled), so create it once, before the work starts, and keep polling the same future: a signal
/// that arrives in between is not lost.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        let mut interrupt = signal(SignalKind::interrupt()).expect("install SIGINT handler");
        async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = term.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
