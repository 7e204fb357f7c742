//! `sleepyseal compare A/report.json B/report.json ...`: the figures of several runs side by
//! side, each with its ratio to the first. Reads the JSON reports that `local` and `cluster`
//! write (a sweep's `sweep.json` is compared run by run).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::Value;

/// Flags of `sleepyseal compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Reports to compare (`report.json` of a run, or a run's directory); the first is the base.
    #[arg(required = true, num_args = 2..)]
    reports: Vec<PathBuf>,
}

/// A figure of the report: its label, its JSON pointer, and whether higher is better.
const FIGURES: &[(&str, &str, Option<bool>)] = &[
    ("input rate (tx/s)", "/config/rate", None),
    ("offered (tx/s)", "/offered_tps", None),
    ("cores", "/config/cores", None),
    ("standalone drivers", "/config/drivers", None),
    ("consensus TPS", "/consensus_tps", Some(true)),
    (
        "consensus latency (ms)",
        "/consensus_latency_ms",
        Some(false),
    ),
    ("end-to-end TPS", "/e2e_tps", Some(true)),
    ("e2e latency p50 (ms)", "/e2e_latency_ms/p50", Some(false)),
    ("e2e latency p90 (ms)", "/e2e_latency_ms/p90", Some(false)),
    ("e2e latency p99 (ms)", "/e2e_latency_ms/p99", Some(false)),
    (
        "slowest 1%: queued (ms)",
        "/latency_split/tail_queued_ms",
        Some(false),
    ),
    (
        "slowest 1%: consensus (ms)",
        "/latency_split/tail_consensus_ms",
        Some(false),
    ),
    ("rounds per second", "/rounds_per_s", None),
    ("CPU per tx (µs)", "/cpu_us_per_tx", Some(false)),
    (
        "payload transfers per tx",
        "/data_path/payload_transfers_per_tx",
        Some(false),
    ),
    (
        "  carried by others per tx",
        "/data_path/payload_transfers_foreign_carriage",
        Some(false),
    ),
    (
        "disk bytes per tx per core",
        "/data_path/disk_bytes_per_tx_per_core",
        Some(false),
    ),
    (
        "payload writes per core",
        "/data_path/payload_writes_per_core",
        Some(false),
    ),
    (
        "store commits/s per core",
        "/data_path/store_commits_per_s_per_core",
        None,
    ),
    (
        "fsyncs/s per core",
        "/data_path/fsyncs_per_s_per_core",
        None,
    ),
    (
        "context switches per tx",
        "/data_path/context_switches_per_tx",
        Some(false),
    ),
    (
        "r/w syscalls per tx",
        "/data_path/rw_syscalls_per_tx",
        Some(false),
    ),
    ("not committed", "/not_committed", Some(false)),
    ("clock bound (ms)", "/cluster/clock_bound_ms", None),
];

/// Prints the comparison.
pub fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let reports = args
        .reports
        .iter()
        .map(|p| read(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    print!("{}", table(&args.reports, &reports));
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<Value> {
    let file = if path.is_dir() {
        path.join("report.json")
    } else {
        path.to_path_buf()
    };
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("parse {}", file.display()))?;
    if value.get("consensus_tps").is_none() {
        bail!("{} is not a sleepyseal report", file.display());
    }
    Ok(value)
}

/// What kind of run a report is: `local` or `cluster`, with its WAN profile.
fn kind(r: &Value) -> String {
    let harness = if r.get("cluster").is_some() {
        "cluster"
    } else {
        "local"
    };
    match r.pointer("/config/wan").and_then(Value::as_str) {
        Some(w) => format!("{harness}, wan {w}"),
        None => harness.to_string(),
    }
}

/// The comparison table: one row per figure, one column per report (the base's value, then each
/// other's value and its ratio to the base).
pub fn table(paths: &[PathBuf], reports: &[Value]) -> String {
    let mut t = String::new();
    for (i, (p, r)) in paths.iter().zip(reports).enumerate() {
        t.push_str(&format!(
            " [{}] {} ({})\n",
            (b'A' + i as u8) as char,
            p.display(),
            kind(r)
        ));
    }
    t.push_str(&format!("\n {:<24}", "figure"));
    for i in 0..reports.len() {
        let label = (b'A' + i as u8) as char;
        t.push_str(&format!("{:>12}", label.to_string()));
        if i > 0 {
            t.push_str(&format!("{:>10}", format!("{label}/A")));
        }
    }
    t.push('\n');
    for (label, pointer, _) in FIGURES {
        let values: Vec<Option<f64>> = reports
            .iter()
            .map(|r| r.pointer(pointer).and_then(Value::as_f64))
            .collect();
        row(&mut t, label, &values);
    }
    for thread in thread_kinds(reports) {
        let values: Vec<Option<f64>> = reports.iter().map(|r| thread_cpu(r, &thread)).collect();
        row(&mut t, &format!("µs/tx {thread}"), &values);
    }
    t
}

/// A `process/thread` label of one entry of a report's CPU per thread.
fn thread_label(u: &Value) -> String {
    format!(
        "{}/{}",
        u["process"].as_str().unwrap_or("?"),
        u["thread"].as_str().unwrap_or("?")
    )
}

/// Every `process/thread` kind of the reports' CPU per thread, in the first report's order.
fn thread_kinds(reports: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = Vec::new();
    for r in reports {
        let threads = r.pointer("/data_path/threads").and_then(Value::as_array);
        for u in threads.into_iter().flatten() {
            let name = thread_label(u);
            if !kinds.contains(&name) {
                kinds.push(name);
            }
        }
    }
    kinds
}

/// CPU µs per transaction of one `process/thread` kind in a report.
fn thread_cpu(r: &Value, kind: &str) -> Option<f64> {
    let threads = r.pointer("/data_path/threads")?.as_array()?;
    threads
        .iter()
        .find(|u| thread_label(u) == kind)
        .and_then(|u| u["us_per_tx"].as_f64())
}

/// One row: the figure's value in each report, with its ratio to the first (nothing if no report
/// has it).
fn row(t: &mut String, label: &str, values: &[Option<f64>]) {
    if values.iter().all(Option::is_none) {
        return;
    }
    {
        t.push_str(&format!(" {label:<24}"));
        for (i, v) in values.iter().enumerate() {
            t.push_str(&format!("{:>12}", v.map_or("-".to_string(), number)));
            if i > 0 {
                let ratio = match (values[0], v) {
                    (Some(a), Some(b)) if a != 0.0 => format!("{:.2}×", b / a),
                    _ => "-".to_string(),
                };
                t.push_str(&format!("{ratio:>10}"));
            }
        }
        t.push('\n');
    }
}

fn number(v: f64) -> String {
    if v.abs() >= 100.0 {
        crate::harness::report::thousands(v)
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ratios_are_against_the_first_report() {
        let a = json!({"config": {"rate": 1000, "cores": 4}, "consensus_tps": 1000.0,
                       "e2e_latency_ms": {"p50": 10.0}, "not_committed": 0});
        let b = json!({"config": {"rate": 1000, "cores": 4, "wan": "two-region"},
                       "consensus_tps": 500.0, "e2e_latency_ms": {"p50": 45.0}, "not_committed": 0,
                       "cluster": {"wan_profile": "two-region", "clock_bound_ms": 0.0}});
        let t = table(&["a.json".into(), "b.json".into()], &[a, b]);
        assert!(
            t.contains("(local)") && t.contains("(cluster, wan two-region)"),
            "{t}"
        );
        let row = |name: &str| t.lines().find(|l| l.contains(name)).unwrap().to_string();
        assert!(row("consensus TPS").ends_with("0.50×"), "{t}");
        assert!(row("e2e latency p50").ends_with("4.50×"), "{t}");
        assert!(
            row("not committed").trim_end().ends_with('-'),
            "a zero base has no ratio: {t}"
        );
        assert!(
            !t.contains("CPU per tx"),
            "figures neither report has are left out: {t}"
        );
    }
}
