//! The figures of a benchmark run, defined as in the Narwhal benchmark (see DESIGN.md):
//!
//! - **consensus TPS / BPS**: transactions (bytes) committed in the measurement window, divided
//!   by the time from the first to the last commit in the window;
//! - **consensus latency**: header creation → commit of that header, over entries committed in
//!   the window;
//! - **end-to-end TPS**: transactions *sent* in the window that committed, per second of window;
//! - **end-to-end latency**: send → commit of those transactions (every load transaction carries
//!   its send time, so all of them are samples), mean / p50 / p90 / p99 from an hdrhistogram;
//! - rounds per second (committed leader rounds), CPU per committed transaction and peak RSS per
//!   process kind (from `/proc`), and the load clients' own counts.
//!
//! Commit times are when the harness received the entry from the watched core (long poll: within
//! milliseconds of the commit).

use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::node::observe::Observed;

mod cluster;
mod data_path;
mod load;
pub mod transport;
mod usage;

pub use cluster::{Agreement, ClusterSection, HostReport};
pub use data_path::{CoreFlow, DataPath};
pub use load::{read_loads, LoadSummary};
use load::{saturation, total_load};
pub use usage::{usage, KindUsage, ProcessSamples};

/// The parameters of a run, as reported.
#[derive(Clone, Debug, Serialize)]
pub struct RunConfig {
    /// Cores.
    pub cores: usize,
    /// Standalone driver processes (beside the home drivers, if any).
    pub drivers: usize,
    /// Whether each core ran its home driver in its own process (`core --home-driver`).
    pub home_drivers: bool,
    /// The first K cores ran without their home driver (`local --dead-home-drivers`).
    #[serde(default)]
    pub dead_home_drivers: usize,
    /// Load client processes.
    pub clients: usize,
    /// Input rate (tx/s).
    pub rate: u64,
    /// Transaction size (bytes).
    pub tx_size: usize,
    /// Measured seconds.
    pub duration_s: u64,
    /// Warm-up seconds.
    pub warmup_s: u64,
    /// Payload bytes per header.
    pub batch_size: usize,
    /// `--max-batch-size`.
    #[serde(default)]
    pub max_batch_size: usize,
    /// Most wait for a full batch (ms).
    pub max_batch_delay_ms: u64,
    /// Most wait for a live straggler's certificate (ms).
    pub straggler_wait_ms: u64,
    /// Signatures per verification batch.
    pub verify_batch: usize,
    /// Verification threads per core.
    pub verify_threads: usize,
    /// Driver pipeline depth.
    pub pipeline_depth: usize,
    /// GC depth (rounds).
    pub gc_depth: u64,
    /// Leader timeout (ms).
    pub leader_timeout_ms: u64,
    /// Crashed cores.
    pub crash: usize,
    /// When they crashed (s after the load started; 0: never started).
    pub crash_at_s: u64,
    /// The core whose commit stream was followed.
    pub watched_core: u16,
    /// The WAN profile emulated (`--wan`), if any.
    pub wan: Option<String>,
    /// The value of the swept flag, in a run of a `--sweep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<crate::harness::sweep::SweepPoint>,
}

impl RunConfig {
    /// The drivers of the run in words, for summaries and plot captions.
    pub fn drivers_label(&self) -> String {
        let standalone = match self.drivers {
            1 => "1 standalone driver".to_string(),
            n => format!("{n} standalone drivers"),
        };
        if self.home_drivers && self.dead_home_drivers > 0 {
            format!(
                "home drivers ({} dead) + {standalone}",
                self.dead_home_drivers
            )
        } else if self.home_drivers {
            format!("home drivers + {standalone}")
        } else {
            standalone
        }
    }
}

/// Totals over the cores' final metrics (the whole run, warm-up included).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CoreTotals {
    /// Own headers that fell below gc_round uncommitted (their transactions were proposed again
    /// gc-depth rounds later: the end-to-end latency tail).
    pub own_headers_orphaned: u64,
    /// Transactions of those headers.
    pub requeued_transactions: u64,
    /// Requests answered `Busy`.
    pub busy_replies: u64,
}

/// Latency percentiles (ms).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Latency {
    /// Percentiles of a histogram of microseconds.
    pub fn of_micros(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1_000.0;
        Latency {
            mean: h.mean() / 1_000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

/// The report of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Parameters.
    pub config: RunConfig,
    /// Committed tx/s, first to last commit in the window.
    pub consensus_tps: f64,
    /// Committed payload bytes/s.
    pub consensus_bps: f64,
    /// Mean header creation → commit (ms).
    pub consensus_latency_ms: f64,
    /// Transactions sent in the window and committed, per second of window.
    pub e2e_tps: f64,
    /// The same in bytes/s.
    pub e2e_bps: f64,
    /// Send → commit of those transactions.
    pub e2e_latency_ms: Latency,
    /// Committed leader rounds per second in the window.
    pub rounds_per_s: f64,
    /// CPU of cores and drivers per committed transaction (µs), i.e. CPU seconds per million
    /// committed transactions. Load clients and the harness are not counted.
    pub cpu_us_per_tx: f64,
    /// Per process kind.
    pub usage: Vec<KindUsage>,
    /// Sum over load clients.
    pub load: LoadSummary,
    /// The rate the load clients actually offered (sent over warm-up and window, per second):
    /// under overload it can fall short of the configured rate.
    #[serde(default)]
    pub offered_tps: f64,
    /// From the cores' metrics.
    pub cores: CoreTotals,
    /// Where end-to-end latency went: before the transaction's header was created (queued) or
    /// after (consensus), on the whole and among the slowest 1%.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_split: Option<crate::node::observe::split::TailSplit>,
    /// Acknowledged transactions that had not committed when the harness stopped waiting.
    pub not_committed: u64,
    /// Entries committed without the watched core returning their payload (not counted).
    pub entries_without_payload: u64,
    /// Whether the system could not keep up with the input.
    pub saturated: bool,
    /// Why it is marked saturated.
    pub saturation: Vec<String>,
    /// Per second since the load started: committed tx/s and end-to-end p50 / p99 (ms).
    pub timeline: Vec<(u64, u64, f64, f64)>,
    /// Hosts, regions, WAN and clocks of a `sleepyseal cluster` run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterSection>,
    /// What moving one transaction cost (absent when `/proc` was not sampled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_path: Option<DataPath>,
    /// The cores' store sizes over the load, against their configured bound (`local` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<crate::harness::local::store::StoreGrowth>,
    /// Queue waits by lane, refused connections, `Busy` replies over the window; the flood of a
    /// `--flood` run (absent without the cores' metrics at both edges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<transport::Transport>,
}

/// Computes the report of a run.
pub fn build(
    config: RunConfig,
    cores: CoreTotals,
    o: &Observed,
    loads: &[LoadSummary],
    accepted: u64,
    samples: &ProcessSamples,
) -> Report {
    let window_s = (o.window.1 - o.window.0) as f64 / 1e6;
    let commit_span_s = o
        .first_commit_us
        .map(|f| (o.last_commit_us.saturating_sub(f)) as f64 / 1e6)
        .unwrap_or(0.0);
    let per_s = |x: u64| {
        if commit_span_s > 0.0 {
            x as f64 / commit_span_s
        } else {
            0.0
        }
    };
    let (usage, system_cpu) = usage(samples, window_s);
    let load = total_load(loads);
    let load_s = (config.warmup_s + config.duration_s) as f64;
    let offered_tps = if load_s > 0.0 {
        load.sent as f64 / load_s
    } else {
        0.0
    };
    let consensus_tps = per_s(o.window_transactions);
    let e2e_tps = o.e2e_latency.len() as f64 / window_s;
    let not_committed = accepted.saturating_sub(o.load_committed);
    let saturation = saturation(&load, config.rate, consensus_tps, e2e_tps, not_committed);
    let rounds_per_s = match o.rounds_in_window {
        Some((a, b)) if commit_span_s > 0.0 => (b - a) as f64 / commit_span_s,
        _ => 0.0,
    };
    let committed_in_window = o.window_transactions;
    Report {
        consensus_tps,
        consensus_bps: per_s(o.window_bytes),
        consensus_latency_ms: if o.consensus_latency.is_empty() {
            0.0
        } else {
            o.consensus_latency.mean()
        },
        e2e_tps,
        e2e_bps: e2e_tps * config.tx_size as f64,
        e2e_latency_ms: Latency::of_micros(&o.e2e_latency),
        rounds_per_s,
        cpu_us_per_tx: if committed_in_window > 0 {
            system_cpu * 1e6 / committed_in_window as f64
        } else {
            0.0
        },
        usage,
        load,
        offered_tps,
        cores,
        latency_split: o.split.tail(),
        not_committed,
        entries_without_payload: o.entries_without_payload,
        saturated: !saturation.is_empty(),
        saturation,
        timeline: timeline(o),
        data_path: data_path::data_path(samples, o, config.cores - config.crash, window_s),
        transport: match (&samples.flow_start, &samples.flow_end) {
            (Some(a), Some(b)) => Some(transport::transport(&a.transport, &b.transport)),
            _ => None,
        },
        config,
        cluster: None,
        store: None,
    }
}

/// Per second since the load started: committed transactions, end-to-end p50 and p99 (ms).
fn timeline(o: &Observed) -> Vec<(u64, u64, f64, f64)> {
    o.seconds
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let q = |q: f64| {
                if s.latency.is_empty() {
                    0.0
                } else {
                    s.latency.value_at_quantile(q) as f64 / 1_000.0
                }
            };
            (i as u64, s.transactions, q(0.5), q(0.99))
        })
        .collect()
}

/// Thousands separators.
pub fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Writes `report.json` of one run.
pub fn write_json(dir: &Path, report: &Report) -> anyhow::Result<()> {
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    Ok(())
}

/// Writes `sweep.json`: the reports of a sweep.
pub fn write_sweep_json(dir: &Path, reports: &[Report]) -> anyhow::Result<()> {
    std::fs::write(
        dir.join("sweep.json"),
        serde_json::to_string_pretty(reports)?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::testbed::Kind;
    use crate::node::procstat::ProcStats;
    use crate::node::transaction::{parse_transaction, transaction};
    use sleepyseal_core::messages::PayloadRef;
    use sleepyseal_core::protocol::CommittedEntry;
    use sleepyseal_core::{AuthorityIndex, Digest, Round};

    fn entry(index: u64, round: u64, created_at_ms: u64, bytes: u32) -> CommittedEntry {
        CommittedEntry {
            index,
            round: Round(round),
            author: AuthorityIndex(0),
            digest: Digest::default(),
            payload: PayloadRef {
                digest: Digest::default(),
                len: bytes,
            },
            commit_hash: Digest::default(),
            leader_round: Round(round),
            is_leader: false,
            created_at_ms,
        }
    }

    fn tx(sent_us: u64) -> bytes::Bytes {
        transaction(0, 1, sent_us, 64)
    }

    const S: u64 = 1_000_000;

    #[test]
    fn figures_follow_the_narwhal_definitions() {
        // Load starts at 100 s; window 102..112 s.
        let mut o = Observed::new(100 * S, (102 * S, 112 * S));
        let parse = parse_transaction;
        // Committed during warm-up: counts for the drain only.
        o.record_entry(
            101 * S,
            &entry(0, 2, 100_990, 128),
            Some(&[tx(100 * S)]),
            parse,
        );
        // Committed in the window: 2 tx at 103 s (sent 102.9 s: 100 ms), 2 at 111 s (one sent
        // in warm-up, one sent at 110.95 s: 50 ms).
        o.record_entry(
            103 * S,
            &entry(1, 10, 102_980, 128),
            Some(&[tx(102_900_000), tx(102_900_000)]),
            parse,
        );
        o.record_entry(
            111 * S,
            &entry(2, 30, 110_960, 128),
            Some(&[tx(101 * S), tx(110_950_000)]),
            parse,
        );
        // After the window: a transaction sent in the window still counts end to end.
        o.record_entry(
            113 * S,
            &entry(3, 34, 112_900, 64),
            Some(&[tx(111_500_000)]),
            parse,
        );
        // An entry without its payload is counted apart.
        o.record_entry(113 * S, &entry(4, 34, 112_900, 64), None, parse);
        let config = RunConfig {
            cores: 4,
            drivers: 1,
            home_drivers: true,
            dead_home_drivers: 0,
            clients: 1,
            rate: 1,
            tx_size: 64,
            duration_s: 10,
            warmup_s: 2,
            batch_size: 1,
            max_batch_size: 1,
            max_batch_delay_ms: 0,
            straggler_wait_ms: 0,
            verify_batch: 1,
            verify_threads: 1,
            pipeline_depth: 1,
            gc_depth: 1,
            leader_timeout_ms: 1,
            crash: 0,
            crash_at_s: 0,
            watched_core: 0,
            wan: None,
            sweep: None,
        };
        let load = LoadSummary {
            sent: 7,
            accepted: 7,
            ..LoadSummary::default()
        };
        let r = build(
            config,
            CoreTotals::default(),
            &o,
            &[load],
            7,
            &ProcessSamples {
                cpu_start: vec![(Kind::Core, 1.0)],
                cpu_end: vec![(Kind::Core, 1.4)],
                peak_rss_kib: vec![(Kind::Core, 2048)],
                detail_start: vec![(Kind::Core, proc_stats(1.0, 0.0, 0, 0, 0))],
                detail_end: vec![(Kind::Core, proc_stats(1.2, 0.1, 1_024, 40, 8))],
                flow_start: Some(CoreFlow::from_metrics(&[flow_text(1_000, 0, 10, 100, 20)])),
                flow_end: Some(CoreFlow::from_metrics(&[flow_text(
                    1_768, 256, 90, 1_124, 180,
                )])),
            },
        );
        // 256 payload bytes committed in the window (4 transactions, 10 s, 4 cores): 1,024
        // payload bytes moved is 4 transfers; 1,024 segment bytes is 256 per core, once the
        // payload; 1,024 bytes on disk is 64 per transaction per core; 80 commits and 160
        // syncs in 10 s over 4 cores.
        let d = r.data_path.as_ref().expect("sampled");
        assert_eq!(d.payload_transfers_per_tx, Some(4.0));
        // 768 bytes received with submissions (3 transfers), 256 sent fetched back (1).
        let by_request: Vec<(&str, f64)> = d
            .payload_transfers_by_request
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(
            by_request,
            [("received submit", 3.0), ("sent fetch_payloads", 1.0)]
        );
        assert_eq!(d.payload_writes_per_core, Some(1.0));
        assert_eq!(d.disk_bytes_per_tx_per_core, 64.0);
        assert_eq!(d.store_commits_per_s_per_core, Some(2.0));
        assert_eq!(d.fsyncs_per_s_per_core, Some(4.0));
        assert_eq!(
            (d.context_switches_per_tx, d.rw_syscalls_per_tx),
            (10.0, 2.0)
        );
        let threads: Vec<(&str, f64)> = d
            .threads
            .iter()
            .map(|u| (u.thread.as_str(), (u.us_per_tx * 1e3).round() / 1e3))
            .collect();
        assert_eq!(threads, [("core", 50_000.0), ("verify", 25_000.0)]);
        // Consensus: 4 tx between the first (103 s) and the last (111 s) commit in the window.
        assert!((r.consensus_tps - 0.5).abs() < 1e-9, "{}", r.consensus_tps);
        assert!((r.consensus_bps - 32.0).abs() < 1e-9, "{}", r.consensus_bps);
        // Consensus latency: mean of 20 ms and 40 ms.
        assert!(
            (r.consensus_latency_ms - 30.0).abs() < 0.1,
            "{}",
            r.consensus_latency_ms
        );
        // End to end: the 4 transactions sent in the window, over 10 s.
        assert!((r.e2e_tps - 0.4).abs() < 1e-9, "{}", r.e2e_tps);
        // Samples 50, 100, 100 and 1500 ms.
        assert!(
            (r.e2e_latency_ms.p50 - 100.0).abs() < 0.1,
            "{:?}",
            r.e2e_latency_ms
        );
        assert!(
            (r.e2e_latency_ms.max - 1_500.0).abs() < 1.0,
            "{:?}",
            r.e2e_latency_ms
        );
        // The slowest sample (1.5 s) waited 1.4 s for its header, created at 112.9 s.
        let split = r.latency_split.as_ref().expect("samples");
        assert!((split.tail_queued_ms - 1_400.0).abs() < 1e-6, "{split:?}");
        assert!((split.tail_consensus_ms - 100.0).abs() < 1e-6, "{split:?}");
        // Rounds 10 → 30 in 8 s.
        assert!((r.rounds_per_s - 2.5).abs() < 1e-9, "{}", r.rounds_per_s);
        // 0.4 CPU s over 4 committed transactions.
        assert!(
            (r.cpu_us_per_tx - 100_000.0).abs() < 1e-6,
            "{}",
            r.cpu_us_per_tx
        );
        assert_eq!(r.usage[0].peak_rss_mib, 2.0);
        // 6 load transactions seen (one entry lacked its payload): 1 of 7 acknowledged missing.
        assert_eq!(r.not_committed, 1);
        assert_eq!(r.entries_without_payload, 1);
        assert!(r.saturated);
        // 7 sent over 2 s of warm-up and 10 s of window.
        assert!((r.offered_tps - 7.0 / 12.0).abs() < 1e-9);
    }

    /// A core's metrics text with the data-path counters; every byte received came with
    /// submissions, every byte sent in reply to payload fetches.
    fn flow_text(received: u64, sent: u64, commits: u64, segment: u64, syncs: u64) -> String {
        let by = "sleepyseal_core_payload_bytes_by_request_total";
        format!(
            "sleepyseal_core_payload_bytes_received_total {received}\n\
             sleepyseal_core_payload_bytes_sent_total {sent}\n\
             {by}{{direction=\"received\",request=\"submit\"}} {received}\n\
             {by}{{direction=\"sent\",request=\"fetch_payloads\"}} {sent}\n\
             sleepyseal_core_store_commit_seconds_count {commits}\n\
             sleepyseal_core_store_segment_bytes_total {segment}\n\
             sleepyseal_core_store_syncs_total {syncs}\n"
        )
    }

    fn proc_stats(core: f64, verify: f64, disk: u64, switches: u64, syscalls: u64) -> ProcStats {
        let mut thread_cpu_s = std::collections::BTreeMap::new();
        thread_cpu_s.insert("core".to_string(), core);
        if verify > 0.0 {
            thread_cpu_s.insert("verify".to_string(), verify);
        }
        ProcStats {
            thread_cpu_s,
            context_switches: switches,
            read_syscalls: syscalls / 2,
            write_syscalls: syscalls - syscalls / 2,
            disk_write_bytes: disk,
        }
    }
}
