//! `sleepyseal load`: submits transactions at a fixed rate (open loop: sent on schedule whatever
//! the replies), spread over the target cores, and prints what became of them.
//!
//! The schedule stays open loop as long as the cores keep up. A client that floods a core past
//! what it can take only starves the machine (the core's network threads receive bytes it will
//! refuse, the client builds transactions that time out), so each target core has a gate:
//! - at most `--max-in-flight-bytes` of submissions in flight to it; transactions due beyond that
//!   are not sent and count as **missed** (the client could not keep its schedule);
//! - a `Busy` reply, or none within the timeout, cuts the share of the schedule sent to it, and
//!   each acceptance grows it back ([`Gate`]); transactions due beyond the share count as
//!   **held**.
//!
//! Both are reported, and the harness reports the rate actually offered (sent per second).

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
/// Default of `--max-in-flight-bytes`.
const DEFAULT_MAX_IN_FLIGHT_BYTES: u64 = 16 << 20;

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
    /// Transaction bytes in flight to one core beyond which the transactions due for it are not
    /// sent and count as missed.
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT_BYTES)]
    max_in_flight_bytes: u64,
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
    held: AtomicU64,
    /// Acknowledged sequence ranges (first, last), when asked for.
    acked_ranges: Mutex<Vec<(u64, u64)>>,
}

/// Runs an open-loop load.
pub fn load(args: LoadArgs) -> anyhow::Result<()> {
    if args.tx_size < TX_HEADER_BYTES || args.tx_size > MAX_TRANSACTION_BYTES {
        bail!("--tx-size must be in {TX_HEADER_BYTES}..={MAX_TRANSACTION_BYTES}");
    }
    if args.rate == 0 || args.burst_ms == 0 || args.max_in_flight_bytes == 0 {
        bail!("--rate, --burst-ms and --max-in-flight-bytes must be positive");
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
                gates: targets
                    .into_iter()
                    .map(|core| (core, Arc::new(Mutex::new(Gate::new()))))
                    .collect(),
                max_in_flight_bytes: args.max_in_flight_bytes,
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
        submitter.burst(burst);
        while submitter.tasks.try_join_next().is_some() {}
    }
}

/// Builds and sends submissions, each in its own task.
struct Submitter {
    clients: Arc<Clients>,
    instance: Digest,
    /// The target cores, each with its gate.
    gates: Vec<(AuthorityIndex, Arc<Mutex<Gate>>)>,
    max_in_flight_bytes: u64,
    client_id: u64,
    tx_size: usize,
    stats: Arc<LoadStats>,
    /// The last sequence number used.
    sequence: u64,
    /// Round robin over the targets.
    next_target: usize,
    tasks: JoinSet<()>,
}

impl Submitter {
    /// Sends the `burst` transactions due, spread evenly over the targets, as far as each
    /// core's gate lets them through; the rest are counted, not sent.
    fn burst(&mut self, burst: u64) {
        let targets = self.gates.len();
        let per_core = burst.div_ceil(targets as u64);
        let mut left = burst;
        for _ in 0..targets {
            if left == 0 {
                break;
            }
            let n = per_core.min(left);
            left -= n;
            let (core, gate) = self.gates[self.next_target % targets].clone();
            self.next_target += 1;
            let admission = gate.lock().expect("not poisoned").admit(
                n,
                self.tx_size as u64,
                self.max_in_flight_bytes,
            );
            self.stats.held.fetch_add(admission.held, Ordering::Relaxed);
            self.stats
                .missed
                .fetch_add(admission.missed, Ordering::Relaxed);
            let mut remaining = admission.send;
            while remaining > 0 {
                let chunk = remaining.min(MAX_TRANSACTIONS_PER_SUBMIT as u64);
                remaining -= chunk;
                self.submit(core, &gate, chunk);
            }
        }
    }

    /// Sends `count` new transactions to `core` in one submission (already admitted by `gate`,
    /// which hears how it went).
    fn submit(&mut self, core: AuthorityIndex, gate: &Arc<Mutex<Gate>>, count: u64) {
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
        let gate = gate.clone();
        let bytes = count * self.tx_size as u64;
        let sent = Instant::now();
        stats.sent.fetch_add(count, Ordering::Relaxed);
        self.tasks.spawn(async move {
            let last_sequence = first_sequence + count - 1;
            let outcome = match client.request(&request, SUBMIT_TIMEOUT).await {
                Ok(Response::Submitted { accepted }) => {
                    stats
                        .accepted
                        .fetch_add(u64::from(accepted), Ordering::Relaxed);
                    let mut acked = stats.acked_ranges.lock().expect("not poisoned");
                    acked.push((first_sequence, last_sequence));
                    Outcome::Accepted
                }
                Ok(Response::Error(CoreError::Busy)) => {
                    stats.busy.fetch_add(count, Ordering::Relaxed);
                    Outcome::Refused
                }
                _ => {
                    stats.failed.fetch_add(count, Ordering::Relaxed);
                    Outcome::Refused
                }
            };
            gate.lock()
                .expect("not poisoned")
                .settled(bytes, sent, outcome, Instant::now());
        });
    }
}

/// How a submission ended, as far as its core's gate is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Accepted,
    /// `Busy`, no reply within the timeout, or a transport error: back off.
    Refused,
}

/// What the client sends one core: bytes in flight, and the share of the schedule it sends
/// while the core refuses (additive increase, multiplicative decrease, as TCP does with its
/// window: the share settles near what the core can take, and a core that takes everything
/// gets the whole schedule).
#[derive(Debug)]
struct Gate {
    in_flight_bytes: u64,
    /// The share of the transactions due that is sent, in `MIN_SHARE..=1`.
    share: f64,
    /// Transactions owed to the core by the share and not yet sent (below one).
    credit: f64,
    /// When the last refusal that cut the share came.
    refused_at: Option<Instant>,
}

/// The share of the schedule is cut to this fraction on a refusal...
const DECREASE: f64 = 0.7;
/// ...and grows by this much of the whole schedule with each acceptance...
const INCREASE: f64 = 1.0 / 64.0;
/// ...and is never cut below this (the core is still probed).
const MIN_SHARE: f64 = 1.0 / 256.0;

impl Gate {
    fn new() -> Gate {
        Gate {
            in_flight_bytes: 0,
            share: 1.0,
            credit: 0.0,
            refused_at: None,
        }
    }

    /// Of `due` transactions of `tx_size` bytes due for the core at this burst, how many to send
    /// (counted in flight), how many are held back by the share and how many missed because
    /// `max` bytes would be in flight. One submission is always admitted when nothing is in
    /// flight, however large.
    fn admit(&mut self, due: u64, tx_size: u64, max: u64) -> Admission {
        self.credit += due as f64 * self.share;
        let send = (self.credit.floor() as u64).min(due);
        self.credit -= send as f64;
        let held = due - send;
        let bytes = send * tx_size;
        if send > 0 && self.in_flight_bytes > 0 && self.in_flight_bytes + bytes > max {
            return Admission {
                send: 0,
                held,
                missed: send,
            };
        }
        self.in_flight_bytes += bytes;
        Admission {
            send,
            held,
            missed: 0,
        }
    }

    /// A submission of `bytes`, sent at `sent`, ended at `now`. A refusal cuts the share, unless
    /// the submission was sent before the last cut: a core that refuses the submissions already
    /// in flight one after another is cut once, not once each.
    fn settled(&mut self, bytes: u64, sent: Instant, outcome: Outcome, now: Instant) {
        assert!(
            self.in_flight_bytes >= bytes,
            "settled more bytes than were admitted"
        );
        self.in_flight_bytes -= bytes;
        match outcome {
            Outcome::Accepted => self.share = (self.share + INCREASE).min(1.0),
            Outcome::Refused => {
                if self.refused_at.is_some_and(|at| sent < at) {
                    return;
                }
                self.refused_at = Some(now);
                self.share = (self.share * DECREASE).max(MIN_SHARE);
            }
        }
    }
}

/// What a gate lets through of the transactions due for its core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Admission {
    send: u64,
    /// Held back by the share (the core refused recently).
    held: u64,
    /// Not sent because too many bytes are in flight.
    missed: u64,
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
            "held": s(&stats.held),
            "accepted_per_s": s(&stats.accepted) as f64 / elapsed,
            "saturated": s(&stats.missed) > 0,
        });
        println!("{summary}");
    } else {
        println!(
            "load: {:.1} s, sent {}, accepted {} ({:.0} tx/s), busy {}, failed {}, missed {}, held {}",
            elapsed,
            s(&stats.sent),
            s(&stats.accepted),
            s(&stats.accepted) as f64 / elapsed,
            s(&stats.busy),
            s(&stats.failed),
            s(&stats.missed),
            s(&stats.held)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Sends what `gate` admits of `due` transactions of 1 byte; returns what was sent.
    fn send(gate: &mut Gate, due: u64) -> u64 {
        gate.admit(due, 1, u64::MAX).send
    }

    #[test]
    fn a_refusing_core_gets_a_smaller_share_of_the_schedule_until_it_accepts_again() {
        let t0 = Instant::now();
        let mut gate = Gate::new();
        assert_eq!(send(&mut gate, 100), 100, "the whole schedule at first");
        gate.settled(100, t0, Outcome::Refused, t0 + MS);
        let a = gate.admit(100, 1, u64::MAX);
        assert_eq!((a.send, a.held, a.missed), (70, 30, 0));
        gate.settled(70, t0 + MS, Outcome::Refused, t0 + 2 * MS);
        // 49 owed; a rounding shortfall is carried to the next burst.
        assert!((48..=49).contains(&send(&mut gate, 100)));
        // Each acceptance gives back a little; the whole schedule only after many.
        let in_flight = gate.in_flight_bytes;
        gate.settled(in_flight, t0 + 2 * MS, Outcome::Accepted, t0 + 3 * MS);
        assert!((gate.share - (0.49 + INCREASE)).abs() < 1e-9);
        for _ in 0..40 {
            let n = send(&mut gate, 64);
            gate.settled(n, t0 + 3 * MS, Outcome::Accepted, t0 + 4 * MS);
        }
        assert_eq!(send(&mut gate, 100), 100);
        assert_eq!(gate.in_flight_bytes, 100);
    }

    #[test]
    fn a_small_share_still_sends_now_and_then() {
        let t0 = Instant::now();
        let mut gate = Gate::new();
        for i in 0..100 {
            let n = send(&mut gate, 1);
            gate.settled(n, t0 + i * MS, Outcome::Refused, t0 + (i + 1) * MS);
        }
        assert_eq!(gate.share, MIN_SHARE);
        // Fractions of a transaction add up: about one in 256 goes.
        let sent: u64 = (0..1024).map(|_| send(&mut gate, 1)).sum();
        assert_eq!(sent, 4);
    }

    #[test]
    fn refusals_of_submissions_already_in_flight_cut_the_share_once() {
        let t0 = Instant::now();
        let mut gate = Gate::new();
        for _ in 0..5 {
            assert_eq!(send(&mut gate, 10), 10);
        }
        for i in 0..5 {
            gate.settled(10, t0, Outcome::Refused, t0 + (i + 1) * MS);
        }
        assert!((gate.share - DECREASE).abs() < 1e-9);
        assert_eq!(gate.in_flight_bytes, 0);
    }

    #[test]
    fn bytes_in_flight_are_bounded_per_core_but_one_submission_always_goes() {
        let t0 = Instant::now();
        let mut gate = Gate::new();
        // Larger than the window, but nothing is in flight.
        assert_eq!(gate.admit(50, 100, 1_000).send, 50);
        let full = gate.admit(1, 100, 1_000);
        assert_eq!((full.send, full.missed), (0, 1));
        gate.settled(5_000, t0, Outcome::Accepted, t0);
        assert_eq!(gate.admit(6, 100, 1_000).send, 6);
        assert_eq!(gate.admit(4, 100, 1_000).send, 4);
        assert_eq!(gate.admit(1, 100, 1_000).missed, 1);
        gate.settled(400, t0, Outcome::Accepted, t0);
        assert_eq!(gate.admit(4, 100, 1_000).send, 4);
    }
}
