//! CPU and memory of the run's processes, per kind, from what `/proc` said of them.

use serde::Serialize;

use super::CoreFlow;
use crate::harness::testbed::Kind;
use crate::node::procstat::ProcStats;

/// CPU and memory of one kind of process.
#[derive(Clone, Debug, Serialize)]
pub struct KindUsage {
    /// The kind.
    pub kind: String,
    /// Processes of this kind.
    pub processes: usize,
    /// CPU seconds used during the measurement window (all processes of the kind).
    pub cpu_s: f64,
    /// Average cores busy during the window (cpu_s / window seconds).
    pub cores_busy: f64,
    /// Largest peak RSS of one process of the kind (MiB).
    pub peak_rss_mib: f64,
}

/// What `/proc` said of the run's processes.
#[derive(Clone, Debug, Default)]
pub struct ProcessSamples {
    /// CPU seconds per kind at the start of the window.
    pub cpu_start: Vec<(Kind, f64)>,
    /// CPU seconds per kind at the end of the window.
    pub cpu_end: Vec<(Kind, f64)>,
    /// Peak RSS (KiB) of each process.
    pub peak_rss_kib: Vec<(Kind, u64)>,
    /// `/proc` counters per kind at the start of the window (empty if not sampled).
    pub detail_start: Vec<(Kind, ProcStats)>,
    /// See `detail_start`.
    pub detail_end: Vec<(Kind, ProcStats)>,
    /// The cores' metrics at the start of the window.
    pub flow_start: Option<CoreFlow>,
    /// See `flow_start`.
    pub flow_end: Option<CoreFlow>,
}

/// CPU and memory per process kind over a window of `window_s` seconds, and the CPU seconds of
/// cores and drivers together (load clients are not the system).
pub fn usage(samples: &ProcessSamples, window_s: f64) -> (Vec<KindUsage>, f64) {
    let mut usage = Vec::new();
    let mut system_cpu = 0.0;
    for kind in [
        Kind::Core,
        Kind::Driver,
        Kind::Load,
        Kind::Flood,
        Kind::Observer,
        Kind::Harness,
    ] {
        let at = |v: &[(Kind, f64)]| v.iter().find(|(k, _)| *k == kind).map(|(_, c)| *c);
        let (Some(end), start) = (at(&samples.cpu_end), at(&samples.cpu_start).unwrap_or(0.0))
        else {
            continue;
        };
        let cpu = (end - start).max(0.0);
        if matches!(kind, Kind::Core | Kind::Driver) {
            system_cpu += cpu;
        }
        let rss: Vec<u64> = samples
            .peak_rss_kib
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, r)| *r)
            .collect();
        usage.push(KindUsage {
            kind: kind.name().into(),
            processes: rss.len(),
            cpu_s: cpu,
            cores_busy: cpu / window_s,
            peak_rss_mib: rss.iter().copied().max().unwrap_or(0) as f64 / 1024.0,
        });
    }
    (usage, system_cpu)
}
