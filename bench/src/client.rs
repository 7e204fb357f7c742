//! `sleepyseal load` (open-loop transaction load) and `sleepyseal watch` (follow a core's committed
//! sequence).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::{BufMut, Bytes, BytesMut};
use clap::Args;
use sleepyseal_core::limits::{MAX_TRANSACTIONS_PER_SUBMIT, MAX_TRANSACTION_BYTES};
use sleepyseal_core::protocol::{Request, RequestBody, Response};
use sleepyseal_core::{AuthorityIndex, CoreError};
use sleepyseal_net::{Clients, NetLimits};

use crate::node::{runtime, shutdown_signal};

/// Flags of `sleepyseal load`.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// The committee file.
    #[arg(long, default_value = "testbed/committee.json")]
    committee: PathBuf,
    /// Transactions per second (open loop: sent on schedule whatever the replies).
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    /// Bytes per transaction (at least 24: client id, sequence number, send time).
    #[arg(long, default_value_t = 512)]
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
    acked_ranges: std::sync::Mutex<Vec<(u64, u64)>>,
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
    let targets: Vec<AuthorityIndex> = if args.core == "all" {
        testbed.committee.indices().collect()
    } else {
        let mut targets = Vec::new();
        for part in args.core.split(',') {
            let i: u16 = part.trim().parse().map_err(|_| {
                anyhow::anyhow!(
                    "--core must be \"all\" or core indices separated by commas, not {:?}",
                    args.core
                )
            })?;
            if !testbed.committee.contains(AuthorityIndex(i)) {
                bail!("--core {i}: no such core");
            }
            targets.push(AuthorityIndex(i));
        }
        targets
    };
    tracing::info!("load: {args:?}");
    let instance = testbed.committee.instance();
    runtime("load")?.block_on(async move {
        let clients = Arc::new(Clients::new(&testbed, NetLimits::default())?);
        let stats = Arc::new(LoadStats::default());
        let start = Instant::now();
        let end = start + Duration::from_secs(args.duration);
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(Duration::from_millis(args.burst_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut sequence = 0u64;
        let mut due = 0u64;
        let mut next_target = 0usize;
        let mut tasks = tokio::task::JoinSet::new();
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
            if stats.in_flight.load(Ordering::Relaxed) >= args.max_in_flight {
                stats.missed.fetch_add(burst, Ordering::Relaxed);
                continue;
            }
            let per_core = burst.div_ceil(targets.len() as u64);
            let mut left = burst;
            for _ in 0..targets.len() {
                if left == 0 {
                    break;
                }
                let n = per_core.min(left);
                left -= n;
                let core = targets[next_target % targets.len()];
                next_target += 1;
                let mut remaining = n;
                while remaining > 0 {
                    let chunk = remaining.min(MAX_TRANSACTIONS_PER_SUBMIT as u64);
                    remaining -= chunk;
                    let first_sequence = sequence + 1;
                    let sent_us = unix_micros();
                    let transactions = (0..chunk)
                        .map(|_| {
                            sequence += 1;
                            transaction(args.client_id, sequence, sent_us, args.tx_size)
                        })
                        .collect();
                    let request = Request {
                        instance,
                        body: RequestBody::Submit { transactions },
                    };
                    let (client, stats) = (clients.core(core).clone(), stats.clone());
                    stats.sent.fetch_add(chunk, Ordering::Relaxed);
                    stats.in_flight.fetch_add(1, Ordering::Relaxed);
                    tasks.spawn(async move {
                        match client.request(&request, Duration::from_secs(5)).await {
                            Ok(Response::Submitted { accepted }) => {
                                stats
                                    .accepted
                                    .fetch_add(u64::from(accepted), Ordering::Relaxed);
                                stats
                                    .acked_ranges
                                    .lock()
                                    .expect("not poisoned")
                                    .push((first_sequence, first_sequence + chunk - 1));
                            }
                            Ok(Response::Error(CoreError::Busy)) => {
                                stats.busy.fetch_add(chunk, Ordering::Relaxed);
                            }
                            _ => {
                                stats.failed.fetch_add(chunk, Ordering::Relaxed);
                            }
                        }
                        stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                    });
                }
            }
            while tasks.try_join_next().is_some() {}
        }
        // Wait for outstanding submissions (bounded by their own timeout).
        while tasks.join_next().await.is_some() {}
        let elapsed = start.elapsed().as_secs_f64();
        clients.close().await;
        if let Some(path) = &args.acked_out {
            let mut ranges = stats.acked_ranges.lock().expect("not poisoned").clone();
            ranges.sort_unstable();
            let text: String = ranges.iter().map(|(a, b)| format!("{a} {b}\n")).collect();
            std::fs::write(path, text)
                .map_err(|e| anyhow::anyhow!("write {}: {e}", path.display()))?;
        }
        let s = |a: &AtomicU64| a.load(Ordering::Relaxed);
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
        if args.json {
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
        Ok(())
    })
}

/// Bytes of a load transaction before its filler: client id, sequence number, send time.
pub const TX_HEADER_BYTES: usize = 24;

/// A unique load transaction: client id, sequence number, send time (µs since the Unix epoch),
/// then filler up to `size` bytes. The harness reads the send time back from the commit stream:
/// every transaction is a latency sample.
pub fn transaction(client: u64, sequence: u64, sent_us: u64, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(TX_HEADER_BYTES));
    b.put_u64_le(client);
    b.put_u64_le(sequence);
    b.put_u64_le(sent_us);
    b.resize(size.max(TX_HEADER_BYTES), 0xa5);
    b.freeze()
}

/// The fields of a load transaction: (client id, sequence number, send time in µs), or `None`
/// for a transaction too short to be one.
pub fn parse_transaction(tx: &[u8]) -> Option<(u64, u64, u64)> {
    let field = |i: usize| {
        tx.get(i * 8..(i + 1) * 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    Some((field(0)?, field(1)?, field(2)?))
}

/// Microseconds since the Unix epoch (send times and commit times of load transactions).
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// Flags of `sleepyseal watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The committee file.
    #[arg(long, default_value = "testbed/committee.json")]
    committee: PathBuf,
    /// Which core's committed sequence to follow.
    #[arg(long, default_value_t = 0)]
    core: u16,
    /// First committed index to print.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Also fetch payloads and print the number of transactions of each entry.
    #[arg(long)]
    transactions: bool,
    /// Stop once this many entries were printed (0: follow until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Long poll: how long (ms) the core may hold a read until new entries are committed.
    #[arg(long, default_value_t = 1_000)]
    wait_ms: u32,
    /// Print entries as JSON lines.
    #[arg(long)]
    json: bool,
}

/// Follows a core's committed sequence.
pub fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let testbed = sleepyseal_net::load_testbed(&args.committee)?;
    let core = AuthorityIndex(args.core);
    if !testbed.committee.contains(core) {
        bail!("--core {}: no such core", args.core);
    }
    let instance = testbed.committee.instance();
    runtime("watch")?.block_on(async move {
        let clients = Clients::new(&testbed, NetLimits::default())?;
        let client = clients.core(core).clone();
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        let mut next = args.from;
        let mut printed = 0u64;
        loop {
            let request = Request {
                instance,
                body: RequestBody::ReadCommitted {
                    from_index: next,
                    max: 1_024,
                    with_payloads: args.transactions,
                    wait_ms: args.wait_ms,
                },
            };
            let reply = tokio::select! {
                _ = &mut shutdown => break,
                r = client.request(&request, Duration::from_millis(u64::from(args.wait_ms) + 5_000)) => r,
            };
            let (entries, payloads) = match reply {
                Ok(Response::Committed { entries, payloads }) => (entries, payloads),
                Ok(Response::Error(CoreError::CommittedEvicted { first_index })) => {
                    tracing::warn!(
                        "entries {next}..{first_index} are no longer retained by core {core}; skipping ahead"
                    );
                    next = first_index;
                    continue;
                }
                other => {
                    match other {
                        Ok(reply) => tracing::warn!("unexpected reply: {reply:?}"),
                        Err(e) => tracing::warn!("core {core}: {e}"),
                    }
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                    continue;
                }
            };
            let count_of = |digest| {
                payloads
                    .iter()
                    .find(|p| p.digest() == digest)
                    .and_then(|p| p.transactions().ok())
                    .map(|t| t.len())
            };
            for e in &entries {
                let txs = if args.transactions {
                    if e.payload.len == 0 {
                        Some(0)
                    } else {
                        count_of(e.payload.digest)
                    }
                } else {
                    None
                };
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "index": e.index, "round": e.round.0, "author": e.author.0,
                            "digest": e.digest.to_hex(), "commit_hash": e.commit_hash.to_hex(),
                            "leader": e.is_leader, "payload_bytes": e.payload.len,
                            "transactions": txs,
                        })
                    );
                } else {
                    println!(
                        "{:>8} r{:<6} {} {} {}{}{}",
                        e.index,
                        e.round.0,
                        e.author,
                        &e.digest.to_hex()[..16],
                        &e.commit_hash.to_hex()[..16],
                        if e.is_leader { " leader" } else { "" },
                        txs.map(|t| format!(" {t} tx")).unwrap_or_default()
                    );
                }
                next = e.index + 1;
                printed += 1;
                if args.count > 0 && printed >= args.count {
                    clients.close().await;
                    return Ok(());
                }
            }
        }
        clients.close().await;
        Ok(())
    })
}
