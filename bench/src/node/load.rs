//! `sleepyseal load`: submits transactions at a fixed rate (open loop: sent on schedule whatever
//! the replies), spread over the target cores, and prints what became of them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use sleepyseal_core::limits::{MAX_TRANSACTIONS_PER_SUBMIT, MAX_TRANSACTION_BYTES};
use sleepyseal_core::protocol::{Request, RequestBody, Response};
use sleepyseal_core::{AuthorityIndex, CoreError, Digest};
use sleepyseal_net::{Clients, NetLimits, Testbed};
use tokio::task::JoinSet;

use super::lifetime::{sleep_until, Lifetime};
use super::network::ClientFlags;
use super::transaction::{transaction, unix_micros, TX_HEADER_BYTES};
use super::{runtime, shutdown_signal, DEFAULT_COMMITTEE};

/// Default input rate (transactions per second) of `load` and `local`.
pub const DEFAULT_RATE: u64 = 50_000;
/// Default transaction size (bytes) of `load` and `local`.
pub const DEFAULT_TX_SIZE: usize = 512;
/// A submission without a reply after this long counts as failed.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Flags of `sleepyseal load`.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// The committee file.
    #[arg(long, default_value = DEFAULT_COMMITTEE)]
    committee: PathBuf,
    /// Transactions per second (open loop: sent on schedule whatever the replies).
    #[arg(long, default_value_t = DEFAULT_RATE)]
    rate: u64,
    /// Bytes per transaction (at least 24: client id, sequence number, send time).
    #[arg(long, default_value_t = DEFAULT_TX_SIZE)]
    tx_size: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Target cores: "all", or core indices separated by commas (the load is spread over them).
    #[arg(long, default_value = "all")]
    core: String,
    /// Milliseconds between bursts.
    #[arg(long, default_value_t = 20)]
    burst_ms: u64,
    /// Submissions in flight beyond which a burst is skipped and counted as missed.
    #[arg(long, default_value_t = 512)]
    max_in_flight: u64,
    /// Id of this client (makes transactions unique across clients).
    #[arg(long, default_value_t = 0)]
    client_id: u64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// Write the sequence numbers of every acknowledged transaction to this file, one range
    /// `first last` per line (for checking that each one committed).
    #[arg(long)]
    acked_out: Option<PathBuf>,
    /// Start sending at this time (µs since the Unix epoch) rather than at once; fails if
    /// started more than a second after it.
    #[arg(long)]
    start_at_us: Option<u64>,
    #[command(flatten)]
    lifetime: Lifetime,
    #[command(flatten)]
    net: ClientFlags,
}

#[derive(Debug, Default)]
struct LoadStats {
    sent: AtomicU64,
    accepted: AtomicU64,
    busy: AtomicU64,
    failed: AtomicU64,
    missed: AtomicU64,
    in_flight: AtomicU64,
    /// Acknowledged sequence ranges (first, last), when asked for.
    acked_ranges: Mutex<Vec<(u64, u64)>>,
}

/// Runs an open-loop load.
pub fn load(args: LoadArgs) -> anyhow::Result<()> {
    if args.tx_size < TX_HEADER_BYTES || args.tx_size > MAX_TRANSACTION_BYTES {
        bail!("--tx-size must be in {TX_HEADER_BYTES}..={MAX_TRANSACTION_BYTES}");
    }
    if args.rate == 0 || args.burst_ms == 0 {
        bail!("--rate and --burst-ms must be positive");
    }
    let testbed = sleepyseal_net::load_testbed(&args.committee)?;
    let targets = targets(&args.core, &testbed)?;
    tracing::info!("load: {args:?}");
    let instance = testbed.committee.instance();
    let client_options = args.net.options()?;
    let lifetime = args.lifetime.clone();
    lifetime.recorded(|| {
        runtime("load")?.block_on(async move {
            let clients = Arc::new(Clients::with_options(
                &testbed,
                NetLimits::default(),
                client_options,
            )?);
            if let Some(at) = args.start_at_us {
                sleep_until(at, Duration::from_secs(1), "--start-at-us").await?;
            }
            let start = Instant::now();
            let mut submitter = Submitter {
                clients: clients.clone(),
                instance,
                targets,
                client_id: args.client_id,
                tx_size: args.tx_size,
                stats: Arc::new(LoadStats::default()),
                sequence: 0,
                next_target: 0,
                tasks: JoinSet::new(),
            };
            run_schedule(&args, &mut submitter, start).await;
            // Wait for outstanding submissions (bounded by their own timeout).
            while submitter.tasks.join_next().await.is_some() {}
            let elapsed = start.elapsed().as_secs_f64();
            clients.close().await;
            if let Some(path) = &args.acked_out {
                write_acked(path, &submitter.stats)?;
            }
            print_summary(&args, &submitter.stats, elapsed);
            anyhow::Ok(())
        })
    })
}

/// The target cores named by `--core`.
fn targets(core: &str, testbed: &Testbed) -> anyhow::Result<Vec<AuthorityIndex>> {
    if core == "all" {
        return Ok(testbed.committee.indices().collect());
    }
    let mut targets = Vec::new();
    for part in core.split(',') {
        let i: u16 = part.trim().parse().map_err(|_| {
            anyhow::anyhow!(
                "--core must be \"all\" or core indices separated by commas, not {core:?}"
            )
        })?;
        if !testbed.committee.contains(AuthorityIndex(i)) {
            bail!("--core {i}: no such core");
        }
        targets.push(AuthorityIndex(i));
    }
    Ok(targets)
}

/// Sends the transactions due at every tick until `--duration` or a signal.
async fn run_schedule(args: &LoadArgs, submitter: &mut Submitter, start: Instant) {
    let run = Duration::from_secs(args.duration);
    let end = start + args.lifetime.deadline_or(Some(run)).unwrap_or(run);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(Duration::from_millis(args.burst_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut due = 0u64;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        if now >= end {
            break;
        }
        // Transactions due by now (open loop: the schedule does not wait for replies).
        let target_total = (now - start).as_micros() as u64 * args.rate / 1_000_000;
        let burst = target_total.saturating_sub(due);
        due = target_total;
        if burst == 0 {
            continue;
        }
        let stats = &submitter.stats;
        if stats.in_flight.load(Ordering::Relaxed) >= args.max_in_flight {
            stats.missed.fetch_add(burst, Ordering::Relaxed);
            continue;
        }
        submitter.burst(burst);
        while submitter.tasks.try_join_next().is_some() {}
    }
}

/// Builds and sends submissions, each in its own task.
struct Submitter {
    clients: Arc<Clients>,
    instance: Digest,
    targets: Vec<AuthorityIndex>,
    client_id: u64,
    tx_size: usize,
    stats: Arc<LoadStats>,
    /// The last sequence number used.
    sequence: u64,
    /// Round robin over `targets`.
    next_target: usize,
    tasks: JoinSet<()>,
}

impl Submitter {
    /// Sends `burst` transactions, spread evenly over the targets.
    fn burst(&mut self, burst: u64) {
        let per_core = burst.div_ceil(self.targets.len() as u64);
        let mut left = burst;
        for _ in 0..self.targets.len() {
            if left == 0 {
                break;
            }
            let n = per_core.min(left);
            left -= n;
            let core = self.targets[self.next_target % self.targets.len()];
            self.next_target += 1;
            let mut remaining = n;
            while remaining > 0 {
                let chunk = remaining.min(MAX_TRANSACTIONS_PER_SUBMIT as u64);
                remaining -= chunk;
                self.submit(core, chunk);
            }
        }
    }

    /// Sends `count` new transactions to `core` in one submission.
    fn submit(&mut self, core: AuthorityIndex, count: u64) {
        let first_sequence = self.sequence + 1;
        let sent_us = unix_micros();
        let transactions = (0..count)
            .map(|_| {
                self.sequence += 1;
                transaction(self.client_id, self.sequence, sent_us, self.tx_size)
            })
            .collect();
        let request = Request {
            instance: self.instance,
            body: RequestBody::Submit { transactions },
        };
        let (client, stats) = (self.clients.core(core).clone(), self.stats.clone());
        stats.sent.fetch_add(count, Ordering::Relaxed);
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        self.tasks.spawn(async move {
            let last_sequence = first_sequence + count - 1;
            match client.request(&request, SUBMIT_TIMEOUT).await {
                Ok(Response::Submitted { accepted }) => {
                    stats
                        .accepted
                        .fetch_add(u64::from(accepted), Ordering::Relaxed);
                    let mut acked = stats.acked_ranges.lock().expect("not poisoned");
                    acked.push((first_sequence, last_sequence));
                }
                Ok(Response::Error(CoreError::Busy)) => {
                    stats.busy.fetch_add(count, Ordering::Relaxed);
                }
                _ => {
                    stats.failed.fetch_add(count, Ordering::Relaxed);
                }
            }
            stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Writes the acknowledged ranges, sorted, one `first last` per line.
fn write_acked(path: &Path, stats: &LoadStats) -> anyhow::Result<()> {
    let mut ranges = stats.acked_ranges.lock().expect("not poisoned").clone();
    ranges.sort_unstable();
    let text: String = ranges.iter().map(|(a, b)| format!("{a} {b}\n")).collect();
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("write {}: {e}", path.display()))
}

/// Prints what became of the transactions: one JSON object with `--json`, else one line.
fn print_summary(args: &LoadArgs, stats: &LoadStats, elapsed: f64) {
    let s = |a: &AtomicU64| a.load(Ordering::Relaxed);
    if args.json {
        let summary = serde_json::json!({
            "rate": args.rate,
            "tx_size": args.tx_size,
            "seconds": elapsed,
            "sent": s(&stats.sent),
            "accepted": s(&stats.accepted),
            "busy": s(&stats.busy),
            "failed": s(&stats.failed),
            "missed": s(&stats.missed),
            "accepted_per_s": s(&stats.accepted) as f64 / elapsed,
            "saturated": s(&stats.missed) > 0,
        });
        println!("{summary}");
    } else {
        println!(
            "load: {:.1} s, sent {}, accepted {} ({:.0} tx/s), busy {}, failed {}, missed {}",
            elapsed,
            s(&stats.sent),
            s(&stats.accepted),
            s(&stats.accepted) as f64 / elapsed,
            s(&stats.busy),
            s(&stats.failed),
            s(&stats.missed)
        );
    }
}
