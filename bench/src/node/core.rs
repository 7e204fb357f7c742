//! `sleepyseal core`: one core, a QUIC server that only answers, until Ctrl-C or SIGTERM; with
//! `--home-driver`, the driver whose home core it is runs in the same process ([`HomeDriver`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use sleepyseal_core::committee::default_schedule;
use sleepyseal_core::limits::MAX_PAYLOAD_BYTES;
use sleepyseal_core::machine::{
    DEFAULT_BATCH_SIZE_BYTES, DEFAULT_COMMITTED_WINDOW_BYTES, DEFAULT_COMMITTED_WINDOW_ENTRIES,
    DEFAULT_FILL_TIMEOUT_MS, DEFAULT_LEADER_TIMEOUT_MS, DEFAULT_MEMPOOL_BYTES,
    DEFAULT_MEMPOOL_TRANSACTIONS, DEFAULT_STRAGGLER_WAIT_MS, DEFAULT_VOTE_TIMEOUT_MS,
};
use sleepyseal_core::store::wal::{WalOptions, WalStore};
use sleepyseal_core::store::{StoreError, StoreStats};
use sleepyseal_core::verify::VerifierConfig;
use sleepyseal_core::{Committee, Core, CoreConfig, KeyPair, Store, Verifier, WriteBatch};
use sleepyseal_driver::runner::{RunnerOptions, RunnerStats};
use sleepyseal_net::server::{ServerOptions, ServerStats};
use sleepyseal_net::{ClientOptions, CoreServer, NetLimits, Testbed};

use super::driver::HomeDriverFlags;
use super::home_driver::HomeDriver;
use super::lifetime::Lifetime;
use super::network::WanFlags;
use super::{runtime, serve_metrics, tick_until_stopped, DEFAULT_COMMITTEE, DEFAULT_LOG_EVERY_S};

/// Flags of `sleepyseal core`.
#[derive(Args, Debug)]
pub struct CoreArgs {
    /// The committee file.
    #[arg(long, default_value = DEFAULT_COMMITTEE)]
    committee: PathBuf,
    /// This core's key file.
    #[arg(long)]
    key: PathBuf,
    /// Directory of this core's durable store (created if missing; locked while running).
    #[arg(long)]
    store: PathBuf,
    /// Payload bytes per header at moderate load: the core proposes when its mempool holds this
    /// much (or what it holds when a round is ready).
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE_BYTES)]
    batch_size: usize,
    /// Largest payload per header: with a backlog, the batch grows up to this (half the backlog
    /// per header), and a backlog beyond four of these is refused with Busy.
    #[arg(long, default_value_t = CoreConfig::default().max_batch_size_bytes)]
    max_batch_size: usize,
    /// How long (ms) the core may wait for a full batch before proposing a smaller one.
    #[arg(long, default_value_t = CoreConfig::default().max_batch_delay_ms)]
    max_batch_delay_ms: u64,
    /// How long (ms) a core holding a quorum of a round waits for the certificate of a live
    /// author still missing from it (so the next header references it).
    #[arg(long, default_value_t = DEFAULT_STRAGGLER_WAIT_MS)]
    straggler_wait_ms: u64,
    /// GC_DEPTH is the committee's, fixed at genesis (`sleepyseal genesis --gc-depth`). Given
    /// here, it must equal the committee's, or the core refuses to start: honest cores on
    /// different depths can commit different sequences.
    #[arg(long)]
    gc_depth: Option<u64>,
    /// CHECKPOINT_INTERVAL is the committee's too; given here, it must equal it.
    #[arg(long)]
    checkpoint_interval: Option<u64>,
    /// Rounds below gc_round whose certificates and payloads are kept to serve lagging cores
    /// (default: the committee's GC_DEPTH, and at least twice its checkpoint interval, the
    /// least allowed). A core further behind than the others retain installs a certified
    /// checkpoint instead (PROTOCOL.md §8a).
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
    /// FILL_TIMEOUT (ms): after installing a checkpoint, how long own headers that the gap
    /// may hold wait for the gap's fill before their transactions are proposed again (each
    /// counted as a possible duplicate).
    #[arg(long, default_value_t = DEFAULT_FILL_TIMEOUT_MS)]
    fill_timeout_ms: u64,
    /// Signatures per verification batch (one rayon task each).
    #[arg(long, default_value_t = VerifierConfig::default().batch_size)]
    verify_batch: usize,
    /// Threads verifying signatures.
    #[arg(long, default_value_t = ServerOptions::default().verify_threads)]
    verify_threads: usize,
    /// Concurrent connections accepted (drivers and clients). When all are taken, a connection
    /// from a /24 (IPv6: /64) that holds none gets the slot of the idlest connection of the
    /// prefix holding the most; any other is refused.
    #[arg(long, default_value_t = NetLimits::default().max_connections)]
    max_connections: usize,
    /// Concurrent connections from one source address (listed drivers excepted).
    #[arg(long, default_value_t = NetLimits::default().max_connections_per_address)]
    max_connections_per_address: usize,
    /// Concurrent connections from one /24 (IPv6: /64) source prefix (listed drivers excepted).
    #[arg(long, default_value_t = NetLimits::default().max_connections_per_prefix)]
    max_connections_per_prefix: usize,
    /// New connections per second from one /24 (IPv6: /64) source prefix, a bucket holding four
    /// seconds' worth (listed drivers excepted).
    #[arg(long, default_value_t = NetLimits::default().max_connects_per_prefix_per_second)]
    max_connects_per_prefix_per_second: u32,
    /// The address of a driver that always gets a connection slot (repeat for several). The
    /// core still trusts nothing it sends; unlisted drivers work as before.
    #[arg(long = "known-driver", value_name = "IP")]
    known_drivers: Vec<std::net::IpAddr>,
    /// Requests one connection may open per second; beyond it its streams wait.
    #[arg(long, default_value_t = NetLimits::default().max_requests_per_second)]
    max_requests_per_second: u32,
    /// Seconds between progress lines in the log (0: none).
    #[arg(long, default_value_t = DEFAULT_LOG_EVERY_S)]
    log_every_s: u64,
    /// Serve Prometheus metrics (`GET /metrics`) on this TCP address.
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// The UDP address to listen on, if not the one the committee advertises (a host behind
    /// NAT listens on its private address, e.g. 0.0.0.0:PORT).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Run a driver whose home core is this core inside this process (DESIGN.md "Deployment
    /// shape"): thread `home-driver` with its own runtime, this core reached without a network
    /// hop, every other core over QUIC; restarted fresh if it panics. Its metrics are served
    /// with the core's.
    #[arg(long)]
    home_driver: bool,
    #[command(flatten)]
    home: HomeDriverFlags,
    #[command(flatten)]
    lifetime: Lifetime,
    #[command(flatten)]
    wan: WanFlags,
}

impl CoreArgs {
    /// Refuses a `--gc-depth` or `--checkpoint-interval` other than the committee's, and a
    /// `--retention-rounds` below twice the checkpoint interval (PROTOCOL.md §8a.6).
    fn check_constants(&self, committee: &Committee) -> anyhow::Result<()> {
        let constants = committee.constants();
        if let Some(given) = self
            .retention_rounds
            .filter(|r| *r < constants.min_retention_rounds())
        {
            bail!(
                "--retention-rounds {given} is below twice the committee's checkpoint interval \
                 ({} rounds): a core further behind than the others retain must find the floor of \
                 the newest certified checkpoint at the others (PROTOCOL.md 8a.6); give at least {} \
                 or leave the flag out",
                constants.checkpoint_interval,
                constants.min_retention_rounds()
            );
        }
        for (flag, given, theirs) in [
            ("--gc-depth", self.gc_depth, constants.gc_depth),
            (
                "--checkpoint-interval",
                self.checkpoint_interval,
                constants.checkpoint_interval,
            ),
        ] {
            if let Some(given) = given.filter(|g| *g != theirs) {
                bail!(
                    "{flag} {given} differs from the committee's {theirs} ({}): it is a protocol \
                     constant fixed at genesis, the same for every core; leave the flag out, or \
                     write a new committee with `sleepyseal genesis {flag} {given}`",
                    self.committee.display()
                );
            }
        }
        Ok(())
    }

    fn config(&self, committee: &Committee) -> CoreConfig {
        CoreConfig {
            retention_rounds: self
                .retention_rounds
                .unwrap_or(committee.constants().default_retention_rounds()),
            batch_size_bytes: self.batch_size,
            max_batch_size_bytes: self.max_batch_size,
            max_batch_delay_ms: self.max_batch_delay_ms,
            straggler_wait_ms: self.straggler_wait_ms,
            leader_timeout_ms: self.leader_timeout_ms,
            vote_timeout_ms: self.vote_timeout_ms,
            mempool_max_bytes: self.mempool_bytes,
            mempool_max_transactions: self.mempool_transactions,
            committed_window_entries: self.committed_window_entries,
            committed_window_bytes: self.committed_window_bytes,
            fill_timeout_ms: self.fill_timeout_ms,
        }
    }

    fn server_options(&self) -> ServerOptions {
        ServerOptions {
            limits: NetLimits {
                max_connections: self.max_connections,
                max_connections_per_address: self.max_connections_per_address,
                max_connections_per_prefix: self.max_connections_per_prefix,
                max_connects_per_prefix_per_second: self.max_connects_per_prefix_per_second,
                known_drivers: self.known_drivers.clone(),
                max_requests_per_second: self.max_requests_per_second,
                ..NetLimits::default()
            },
            verify_threads: self.verify_threads,
            ..ServerOptions::default()
        }
    }
}

/// Runs one core until Ctrl-C or SIGTERM.
pub fn core(args: CoreArgs) -> anyhow::Result<()> {
    if args.batch_size == 0 || args.batch_size > MAX_PAYLOAD_BYTES {
        bail!("--batch-size must be in 1..={MAX_PAYLOAD_BYTES}");
    }
    if args.max_batch_size < args.batch_size || args.max_batch_size > MAX_PAYLOAD_BYTES {
        bail!(
            "--max-batch-size must be in --batch-size ({})..={MAX_PAYLOAD_BYTES}",
            args.batch_size
        );
    }
    let testbed = sleepyseal_net::load_testbed(&args.committee)?;
    let keys = sleepyseal_net::load_keys(&args.key, &testbed)?;
    let index = keys.index;
    let address = args.listen.unwrap_or(testbed.addresses[index.as_usize()]);
    args.check_constants(&testbed.committee)?;
    let config = args.config(&testbed.committee);
    let mut options = args.server_options();
    options.wan = args.wan.load()?;
    let limits = options.limits.clone();
    tracing::info!(
        "core {index} at {address}: {:?}, {config:?}, verify batch {} on {} threads, {limits:?}, store {}",
        testbed.committee.constants(),
        args.verify_batch,
        args.verify_threads,
        args.store.display()
    );
    let bound = config.store_bound(&testbed.committee, &WalOptions::default());
    tracing::info!("store bound (PROTOCOL.md 8a.6): {bound}");
    let (core, store) = recover(&args, &testbed, keys.key, config)?;
    let verifier = Verifier::new(
        testbed.committee.clone(),
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
    let home = args
        .home_driver
        .then(|| home_options(&args, address))
        .transpose()?;
    let lifetime = args.lifetime.clone();
    lifetime.recorded(|| {
        runtime("core")?.block_on(async move {
            let store = Box::new(LoggedStore(store));
            let server = CoreServer::start(address, quic, core, store, verifier, options)?;
            server
                .stats()
                .store_bound_bytes
                .store(bound.total(), std::sync::atomic::Ordering::Relaxed);
            let home = home
                .map(|o| HomeDriver::start(testbed, index, server.local_link(), o))
                .transpose()?;
            serve(server, home, &args).await
        })
    })
}

/// The core's store, which logs what it wrote once, when the core thread closes it.
struct LoggedStore(WalStore);

impl Store for LoggedStore {
    fn commit(&mut self, batches: &[WriteBatch]) -> Result<(), StoreError> {
        self.0.commit(batches)
    }
    fn load(&mut self) -> Result<Vec<(Vec<u8>, bytes::Bytes)>, StoreError> {
        self.0.load()
    }
    fn stats(&self) -> StoreStats {
        self.0.stats()
    }
}

impl Drop for LoggedStore {
    fn drop(&mut self) {
        tracing::info!(
            "store closed: {:?}, {:?}",
            self.0.stats(),
            self.0.wal_stats()
        );
    }
}

/// The settings of the home driver: its tuning flags, and a QUIC endpoint beside the core's
/// (its address, its WAN region).
fn home_options(args: &CoreArgs, address: SocketAddr) -> anyhow::Result<RunnerOptions> {
    let ip = address.ip();
    Ok(RunnerOptions {
        driver: args.home.config(None),
        client: ClientOptions {
            bind_ip: (!ip.is_unspecified()).then_some(ip),
            wan: args.wan.load()?,
        },
        ..RunnerOptions::default()
    })
}

/// Opens the store and rebuilds the core from it.
fn recover(
    args: &CoreArgs,
    testbed: &Testbed,
    key: KeyPair,
    config: CoreConfig,
) -> anyhow::Result<(Core, WalStore)> {
    let mut store = WalStore::open(&args.store)
        .with_context(|| format!("open store {}", args.store.display()))?;
    if store.wal_stats().direct_io {
        tracing::info!("store: payload segments written with direct I/O");
    } else {
        tracing::warn!(
            "store: the file system of {} refuses direct I/O; payload segments are written \
             through the page cache (more CPU per byte written)",
            args.store.display()
        );
    }
    let entries = store.load()?;
    let committee = testbed.committee.clone();
    let core = Core::recover(
        committee.clone(),
        default_schedule(&committee),
        key,
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
    Ok((core, store))
}

/// Serves metrics (the home driver's with the core's) and logs progress until a signal or the
/// core thread stops, then stops the home driver and shuts the server down cleanly.
async fn serve(
    server: CoreServer,
    home: Option<HomeDriver>,
    args: &CoreArgs,
) -> anyhow::Result<()> {
    let stats = server.stats().clone();
    let driver = home.as_ref().map(|h| h.stats().clone());
    if let Some(addr) = args.metrics_addr {
        let (stats, driver) = (stats.clone(), driver.clone());
        let render = move || {
            let mut text = stats.exposition();
            if let Some(d) = &driver {
                text.push_str(&d.exposition());
            }
            text
        };
        serve_metrics(addr, Arc::new(render)).await?;
    }
    tick_until_stopped(args.log_every_s, args.lifetime.remaining(), || {
        let running = !server.core_stopped();
        if running {
            log_progress(&stats, driver.as_deref());
        }
        running
    })
    .await;
    let stopped = server.core_stopped();
    tracing::info!("shutting down");
    if let Some(home) = home {
        tokio::task::spawn_blocking(move || home.stop()).await?;
    }
    server.shutdown().await?;
    if stopped {
        bail!("the core thread stopped before shutdown");
    }
    tracing::info!("store closed cleanly");
    Ok(())
}

fn log_progress(stats: &ServerStats, driver: Option<&RunnerStats>) {
    if let Some(d) = driver {
        tracing::info!(
            "home driver: requests {} failures {} busy {} restarts {} payload cache {} B",
            d.requests.load(Ordering::Relaxed),
            d.failures.load(Ordering::Relaxed),
            d.busy.load(Ordering::Relaxed),
            d.restarts.load(Ordering::Relaxed),
            d.payload_cache_bytes.load(Ordering::Relaxed),
        );
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
