//! The report of a cluster run, from the files the `collect` role brought back into
//! `<run>/hosts/<host>/`: each observer's `results/observer.json`, each load client's summary
//! (`results/load-<c>.out`), each process's `results/<name>.usage.json`, and the cores' final
//! metrics (`metrics/core-<i>.prom`). Nothing is read from a log.

use std::path::{Path, PathBuf};

use anyhow::bail;

use super::clock::HostClock;
use super::inventory::Inventory;
use super::plan::{usage_file, Plan};
use crate::harness::report::{
    self, Agreement, CoreTotals, HostReport, Latency, LoadSummary, ProcessSamples, Report,
    RunConfig,
};
use crate::harness::testbed::Kind;
use crate::node::observe::Observed;
use crate::node::usage::Usage;

/// What came back from one host.
pub struct HostResults {
    /// Inventory name.
    pub name: String,
    /// Its observer's record, if it ran one and it was written.
    pub observer: Option<(usize, Observed)>,
    /// Its load clients' summaries.
    pub loads: Vec<LoadSummary>,
    /// Each process's usage.
    pub usage: Vec<(Kind, String, Usage)>,
    /// Its cores' final metrics text.
    pub core_metrics: Vec<String>,
    /// Its observer's own figures: end-to-end latency and committed transactions.
    pub own: Option<(Latency, u64)>,
    /// Files that should have come back and did not.
    pub missing: Vec<String>,
}

fn kind_of(kind: &str) -> Option<Kind> {
    match kind {
        "core" => Some(Kind::Core),
        "driver" => Some(Kind::Driver),
        "load" => Some(Kind::Load),
        "observer" => Some(Kind::Observer),
        _ => None,
    }
}

/// Reads what every host of `plan` brought back into `hosts_dir`.
pub fn read(hosts_dir: &Path, plan: &Plan) -> Vec<HostResults> {
    plan.iter()
        .map(|(name, host)| {
            let dir = hosts_dir.join(name);
            let mut r = HostResults {
                name: name.clone(),
                observer: None,
                loads: Vec::new(),
                usage: Vec::new(),
                core_metrics: Vec::new(),
                own: None,
                missing: Vec::new(),
            };
            for p in &host.processes {
                let Some(kind) = kind_of(p.kind) else {
                    continue;
                };
                read_process(&dir, &p.name, kind, &p.argv, &mut r);
            }
            r
        })
        .collect()
}

fn read_process(dir: &Path, name: &str, kind: Kind, argv: &[String], r: &mut HostResults) {
    let want = |path: PathBuf, r: &mut HostResults| -> Option<String> {
        let text = std::fs::read_to_string(&path).ok();
        if text.is_none() {
            r.missing.push(path.display().to_string());
        }
        text
    };
    if let Some(text) = want(dir.join(usage_file(name)), r) {
        if let Ok(u) = serde_json::from_str::<Usage>(&text) {
            r.usage.push((kind, name.to_string(), u));
        }
    }
    match kind {
        Kind::Observer => {
            let core = flag(argv, "--core")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            if let Some(text) = want(dir.join("results/observer.json"), r) {
                match serde_json::from_str::<Observed>(&text) {
                    Ok(o) => {
                        r.own = Some((Latency::of_micros(&o.e2e_latency), o.load_committed));
                        r.observer = Some((core, o));
                    }
                    Err(e) => r
                        .missing
                        .push(format!("{name}: unreadable observer file: {e}")),
                }
            }
        }
        Kind::Load => {
            let path = dir.join(format!("results/{name}.out"));
            let summary = want(path, r).and_then(|t| LoadSummary::parse(&t));
            r.loads.push(summary.unwrap_or_default());
        }
        Kind::Core => {
            if let Some(text) = want(dir.join(format!("metrics/{name}.prom")), r) {
                r.core_metrics.push(text);
            }
        }
        // A cluster's harness runs on the controller, not on a host.
        Kind::Driver | Kind::Harness | Kind::Flood => {}
    }
}

/// The value of `--name=value` in `argv`.
fn flag<'a>(argv: &'a [String], name: &str) -> Option<&'a str> {
    argv.iter()
        .find_map(|a| a.strip_prefix(name)?.strip_prefix('='))
}

/// The report of the run: consensus figures from the first observer, end-to-end figures from
/// all of them, CPU and memory from every process's own usage file.
pub fn build(
    config: RunConfig,
    results: &mut [HostResults],
) -> anyhow::Result<(Report, Agreement)> {
    let mut observers: Vec<(usize, Observed)> = results
        .iter_mut()
        .filter_map(|r| r.observer.take())
        .collect();
    if observers.is_empty() {
        bail!("no observer's results came back: see the hosts' logs");
    }
    let agreement = agreement(&observers);
    let (_, mut merged) = observers.remove(0);
    for (_, o) in &observers {
        merged.merge_load(o);
    }
    let loads: Vec<LoadSummary> = results.iter().flat_map(|r| r.loads.clone()).collect();
    let accepted = loads.iter().map(|l| l.accepted).sum();
    let samples = samples(results.iter().flat_map(|r| r.usage.iter()));
    let core_texts: Vec<&String> = results.iter().flat_map(|r| &r.core_metrics).collect();
    let from_cores = |name: &str| -> u64 {
        core_texts
            .iter()
            .filter_map(|t| sleepyseal_net::metrics::sample(t, name))
            .sum::<f64>() as u64
    };
    let totals = CoreTotals {
        own_headers_orphaned: from_cores("sleepyseal_core_own_headers_orphaned_total"),
        requeued_transactions: from_cores("sleepyseal_core_requeued_transactions_total"),
        busy_replies: from_cores("sleepyseal_core_busy_replies_total"),
    };
    Ok((
        report::build(config, totals, &merged, &loads, accepted, &samples),
        agreement,
    ))
}

/// CPU at the window's edges summed per kind, and each process's peak RSS.
fn samples<'a>(usage: impl Iterator<Item = &'a (Kind, String, Usage)>) -> ProcessSamples {
    let mut s = ProcessSamples::default();
    let add =
        |v: &mut Vec<(Kind, f64)>, kind: Kind, x: f64| match v.iter_mut().find(|(k, _)| *k == kind)
        {
            Some((_, total)) => *total += x,
            None => v.push((kind, x)),
        };
    for (kind, _, u) in usage {
        // A process that had not reached the window's end (it died) counts what it had used.
        if let Some(end) = u.cpu_end_s {
            add(&mut s.cpu_end, *kind, end);
            add(&mut s.cpu_start, *kind, u.cpu_start_s.unwrap_or(0.0));
        }
        s.peak_rss_kib.push((*kind, u.peak_rss_kib));
    }
    s
}

/// Compares the observers' commit hashes at every index two of them saw.
pub fn agreement(observers: &[(usize, Observed)]) -> Agreement {
    let mut by_index: std::collections::BTreeMap<u64, Vec<&str>> = Default::default();
    for (_, o) in observers {
        for (index, hash) in &o.commit_hashes {
            by_index.entry(*index).or_default().push(hash);
        }
    }
    let mut a = Agreement {
        cores: observers.iter().map(|(c, _)| *c as u16).collect(),
        ..Agreement::default()
    };
    a.cores.sort_unstable();
    a.cores.dedup();
    for (index, hashes) in by_index.iter().filter(|(_, h)| h.len() > 1) {
        a.common_indices += 1;
        if hashes.iter().any(|h| *h != hashes[0]) {
            a.mismatches += 1;
            a.first_mismatch.get_or_insert(*index);
        }
    }
    a
}

/// Per host: what it ran, its clock, its processes' usage and its observer's own latency.
pub fn hosts(
    inventory: &Inventory,
    plan: &Plan,
    results: &[HostResults],
    clocks: &[Option<HostClock>],
    regions: Option<&[String]>,
    window_s: f64,
) -> Vec<HostReport> {
    inventory
        .hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| plan.contains_key(&h.name))
        .map(|(i, h)| {
            let r = results.iter().position(|r| r.name == h.name);
            let usage = r
                .map(|r| {
                    let s = samples(results[r].usage.iter());
                    report::usage(&s, window_s).0
                })
                .unwrap_or_default();
            let accepted = r.map_or(0, |r| results[r].loads.iter().map(|l| l.accepted).sum());
            let own = r.and_then(|r| results[r].own.clone());
            HostReport {
                name: h.name.clone(),
                address: h.address.clone(),
                region: regions.map(|rs| rs[i].clone()).or(h.region.clone()),
                processes: plan[&h.name]
                    .processes
                    .iter()
                    .map(|p| p.name.clone())
                    .collect(),
                clock_method: clocks[i].as_ref().map(|c| c.method.clone()),
                clock_bound_ms: clocks[i].as_ref().map(|c| c.bound_ms),
                usage,
                e2e_latency_ms: own.as_ref().map(|(l, _)| l.clone()),
                accepted,
                committed: own.map_or(0, |(_, c)| c),
            }
        })
        .collect()
}
