//! The text forms of benchmark reports: the summary table of one run (`summary.txt`, stdout) and
//! one row per rate of a sweep (`sweep.txt`).

use super::report::transport::Transport;
use super::report::{thousands, ClusterSection, DataPath, Report};

/// One `key  value` line of the summary table.
fn line(t: &mut String, k: &str, v: String) {
    t.push_str(&format!(" {k:<22}{v}\n"));
}

/// The summary table of one run.
pub fn table(r: &Report) -> String {
    let mut t = String::new();
    header(&mut t, r);
    throughput_and_latency(&mut t, r);
    resources(&mut t, r);
    if let Some(d) = &r.data_path {
        data_path(&mut t, d);
    }
    if let Some(s) = &r.store {
        store(&mut t, s);
    }
    if let Some(x) = &r.transport {
        transport(&mut t, x);
    }
    outcome(&mut t, r);
    if let Some(c) = &r.cluster {
        cluster(&mut t, c);
    }
    t
}

/// The run's parameters.
fn header(t: &mut String, r: &Report) {
    let c = &r.config;
    t.push_str(&format!(
        "\n sleepyseal {}: {} cores ({} crashed), {}, {} tx/s × {} B, {} s after {} s warm-up\n",
        if r.cluster.is_some() {
            "cluster"
        } else {
            "local"
        },
        c.cores,
        c.crash,
        c.drivers_label(),
        thousands(c.rate as f64),
        c.tx_size,
        c.duration_s,
        c.warmup_s
    ));
    t.push_str(&format!(
        " batch {} B (up to {} B), max batch delay {} ms, straggler wait {} ms, verify batch {} × {} threads, pipeline {}, gc depth {}, leader timeout {} ms\n",
        c.batch_size, c.max_batch_size, c.max_batch_delay_ms, c.straggler_wait_ms, c.verify_batch, c.verify_threads, c.pipeline_depth, c.gc_depth, c.leader_timeout_ms
    ));
    if let Some(wan) = &c.wan {
        t.push_str(&format!(" WAN emulated: {wan}\n"));
    }
    t.push_str(" ----------------------------------------------------------------\n");
}

/// Consensus and end-to-end figures, rounds per second.
fn throughput_and_latency(t: &mut String, r: &Report) {
    let l = &r.e2e_latency_ms;
    line(
        t,
        "consensus TPS",
        format!(
            "{} tx/s ({:.1} MB/s)",
            thousands(r.consensus_tps),
            r.consensus_bps / 1e6
        ),
    );
    let bound = match r.cluster.as_ref().map(|c| c.clock_bound_ms) {
        None => String::new(),
        Some(Some(b)) => format!(" (± {b:.1} ms of clock bound)"),
        Some(None) => " (clock bound unknown)".to_string(),
    };
    line(
        t,
        "consensus latency",
        format!("{:.0} ms{bound}", r.consensus_latency_ms),
    );
    line(
        t,
        "end-to-end TPS",
        format!(
            "{} tx/s ({:.1} MB/s)",
            thousands(r.e2e_tps),
            r.e2e_bps / 1e6
        ),
    );
    line(
        t,
        "end-to-end latency",
        format!(
            "mean {:.0} ms, p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            l.mean, l.p50, l.p90, l.p99, l.max
        ),
    );
    if let Some(s) = &r.latency_split {
        line(
            t,
            "  where it went",
            format!(
                "{:.0}% queued before proposal; slowest 1%: {:.0} ms queued + {:.0} ms proposal → commit",
                100.0 * s.queued_share,
                s.tail_queued_ms,
                s.tail_consensus_ms
            ),
        );
    }
    line(t, "rounds per second", format!("{:.1}", r.rounds_per_s));
}

/// CPU per transaction, CPU and memory per process kind.
fn resources(t: &mut String, r: &Report) {
    line(
        t,
        "CPU per tx",
        format!(
            "{:.2} µs (cores + drivers; = CPU s per million tx)",
            r.cpu_us_per_tx
        ),
    );
    for u in &r.usage {
        line(
            t,
            &format!("  {} ×{}", u.kind, u.processes),
            format!(
                "{:.2} cores busy, peak RSS {:.0} MiB",
                u.cores_busy, u.peak_rss_mib
            ),
        );
    }
}

/// What moving one transaction cost, and the busiest threads.
/// Each core's store at half the load and at its end, against its configured bound.
fn store(t: &mut String, s: &crate::harness::local::store::StoreGrowth) {
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    line(
        t,
        "store size",
        format!(
            "MiB at {:.0} s / {:.0} s of load (bound {:.0} MiB)",
            s.seconds / 2.0,
            s.seconds,
            mib(s.bound_bytes)
        ),
    );
    for c in &s.cores {
        line(
            t,
            &format!("  core {}", c.core),
            format!(
                "{:.0} / {:.0}, {:+.1}% over the second half, largest {:.0}",
                mib(c.half_bytes),
                mib(c.end_bytes),
                c.growth_pct,
                mib(c.max_bytes)
            ),
        );
    }
}

fn data_path(t: &mut String, d: &DataPath) {
    let or_na =
        |v: Option<f64>, unit: &str| v.map_or("n/a".to_string(), |v| format!("{v:.2}{unit}"));
    line(
        t,
        "payload transfers",
        format!(
            "{} per tx (network, counted at the cores)",
            or_na(d.payload_transfers_per_tx, "")
        ),
    );
    if !d.payload_transfers_by_request.is_empty() {
        let parts: Vec<String> = d
            .payload_transfers_by_request
            .iter()
            .filter(|(_, v)| **v >= 0.005)
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        line(t, "  by request", parts.join(", "));
    }
    if let Some(foreign) = d.payload_transfers_foreign_carriage {
        line(
            t,
            "  carried by others",
            format!("{foreign:.2} per tx (home drivers covering another core, or after the grace period)"),
        );
    }
    line(
        t,
        "storage writes",
        format!(
            "payload written {} × per core; {:.0} B on disk per tx per core; {} fsyncs/s per core",
            or_na(d.payload_writes_per_core, ""),
            d.disk_bytes_per_tx_per_core,
            or_na(d.fsyncs_per_s_per_core, "")
        ),
    );
    line(
        t,
        "per tx",
        format!(
            "{:.2} context switches, {:.2} read/write syscalls (cores + drivers)",
            d.context_switches_per_tx, d.rw_syscalls_per_tx
        ),
    );
    for u in d.threads.iter().filter(|u| u.cores_busy >= 0.01).take(10) {
        line(
            t,
            &format!("  {}/{}", u.process, u.thread),
            format!(
                "{:.2} cores busy, {:.2} µs per tx",
                u.cores_busy, u.us_per_tx
            ),
        );
    }
}

/// Queue waits by lane, refusals, and the flood of a `--flood` run.
fn transport(t: &mut String, x: &Transport) {
    let ms = |v: Option<f64>| v.map_or("beyond 10 s".to_string(), |v| format!("≤ {v} ms"));
    for (name, w) in [("consensus", &x.consensus_wait), ("client", &x.client_wait)] {
        if w.requests > 0.0 {
            line(
                t,
                &format!("queue wait, {name}"),
                format!(
                    "p50 {}, p99 {} ({} requests)",
                    ms(w.p50_ms),
                    ms(w.p99_ms),
                    thousands(w.requests)
                ),
            );
        }
    }
    let refused: Vec<String> = x
        .refused_connections
        .iter()
        .map(|(k, v)| format!("{k} {}", thousands(*v)))
        .collect();
    line(
        t,
        "connections",
        format!(
            "refused or closed: {}; {} retries (address validation); {} Busy replies",
            if refused.is_empty() {
                "none".to_string()
            } else {
                refused.join(", ")
            },
            thousands(x.retries_sent),
            thousands(x.busy_replies)
        ),
    );
    if let Some(f) = &x.flood {
        let s = &f.summary;
        line(
            t,
            "flood",
            format!(
                "{} from {} prefixes × {} connections per core: {} connects/s ({} completed, {} refused), peak {} open, {} closed by the cores",
                s.kind,
                s.sources,
                s.connections_per_source,
                thousands(s.connects_per_s),
                thousands(s.connected_per_s),
                thousands(s.refused_per_s),
                s.peak_connections,
                thousands(s.closed_by_cores as f64)
            ),
        );
        line(
            t,
            "",
            format!(
                "{} streams/s, {:.1} MB/s sent, {} replies/s ({} Busy)",
                thousands(s.streams_per_s),
                s.bytes_per_s / 1e6,
                thousands(s.replies_per_s),
                thousands(s.busy_per_s)
            ),
        );
        let first = |v: Option<f64>| v.map_or("never (5 s)".to_string(), |v| format!("{v:.0} ms"));
        line(
            t,
            "new driver mid-flood",
            format!(
                "first poll answered by every core in {} from an unseen prefix, {} from 127.0.0.1",
                first(f.new_driver_first_reply_ms),
                first(f.same_host_driver_first_reply_ms)
            ),
        );
    }
}

/// What became of the load, and whether the system kept up.
fn outcome(t: &mut String, r: &Report) {
    line(
        t,
        "load",
        format!(
            "offered {} tx/s: sent {}, accepted {}, busy {}, failed {}, missed {}, held {}",
            thousands(r.offered_tps),
            thousands(r.load.sent as f64),
            thousands(r.load.accepted as f64),
            r.load.busy,
            r.load.failed,
            r.load.missed,
            r.load.held
        ),
    );
    line(t, "not committed", thousands(r.not_committed as f64));
    line(
        t,
        "orphaned headers",
        format!(
            "{} ({} transactions proposed again after gc depth)",
            r.cores.own_headers_orphaned,
            thousands(r.cores.requeued_transactions as f64)
        ),
    );
    line(
        t,
        "saturated",
        if r.saturated {
            format!("yes: {}", r.saturation.join("; "))
        } else {
            "no".into()
        },
    );
}

/// One row per run of a sweep (of the rate, or with `--sweep` of another flag: its value first).
pub fn sweep_table(reports: &[Report]) -> String {
    let swept = reports.iter().find_map(|r| r.config.sweep.as_ref());
    let mut t = String::from("\n");
    if let Some(p) = swept {
        t.push_str(&format!("{:>14}", p.flag));
    }
    t.push_str(
        "    rate  consensus TPS   e2e TPS  e2e mean   p50   p90   p99 (ms)  rounds/s  µs CPU/tx  saturated\n",
    );
    for r in reports {
        let l = &r.e2e_latency_ms;
        if swept.is_some() {
            let value = r.config.sweep.as_ref().map_or("", |p| p.value.as_str());
            t.push_str(&format!("{value:>14}"));
        }
        t.push_str(&format!(
            "{:>8}  {:>13}  {:>8}  {:>8.0}  {:>4.0}  {:>4.0}  {:>4.0}       {:>8.1}  {:>9.2}  {}\n",
            r.config.rate,
            thousands(r.consensus_tps),
            thousands(r.e2e_tps),
            l.mean,
            l.p50,
            l.p90,
            l.p99,
            r.rounds_per_s,
            r.cpu_us_per_tx,
            if r.saturated { "yes" } else { "no" }
        ));
    }
    t
}

/// The hosts of a cluster run: region, clock, what each ran and its own latency.
fn cluster(t: &mut String, c: &ClusterSection) {
    let wan = c.wan_profile.as_deref().map_or("none".to_string(), |w| {
        format!("{w} ({})", c.regions.join(", "))
    });
    line(t, "WAN", wan);
    let a = &c.agreement;
    line(
        t,
        "agreement",
        format!(
            "cores {:?}: {} common indices, {} mismatches",
            a.cores, a.common_indices, a.mismatches
        ),
    );
    for h in &c.hosts {
        let own = h
            .e2e_latency_ms
            .as_ref()
            .map_or(String::new(), |l| format!(", own e2e p50 {:.0} ms", l.p50));
        let clock = match (&h.clock_method, h.clock_bound_ms) {
            (Some(m), Some(b)) => format!("clock {m} ±{b:.2} ms"),
            _ => "clock unknown".to_string(),
        };
        let cpu: Vec<String> = h
            .usage
            .iter()
            .map(|u| format!("{} {:.2}", u.kind, u.cores_busy))
            .collect();
        line(
            t,
            &format!("  {}", h.name),
            format!(
                "{} {}, {clock}{own}; cores busy: {}",
                h.address,
                h.region.as_deref().unwrap_or("-"),
                cpu.join(", ")
            ),
        );
    }
    if !c.flamegraphs.is_empty() {
        line(t, "flamegraphs", c.flamegraphs.join(", "));
    }
}
