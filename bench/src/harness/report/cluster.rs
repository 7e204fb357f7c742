//! The `cluster` section of a report: what `sleepyseal cluster` adds to the figures of a run.

use serde::Serialize;

use super::{KindUsage, Latency};

/// What `sleepyseal cluster` adds to a report.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterSection {
    /// The inventory file.
    pub inventory: String,
    /// Every host of the run.
    pub hosts: Vec<HostReport>,
    /// The WAN profile emulated, if any.
    pub wan_profile: Option<String>,
    /// The regions of that profile.
    pub regions: Vec<String>,
    /// Most milliseconds two hosts' clocks may differ: consensus latency (header time on the
    /// author's host, commit time on the observer's) is exact to within this. `None`: unknown.
    pub clock_bound_ms: Option<f64>,
    /// Whether the observed cores agree on the committed sequence.
    pub agreement: Agreement,
    /// Flamegraph SVGs (with `--flamegraph`), relative to the report.
    pub flamegraphs: Vec<String>,
}

/// One host of a cluster run.
#[derive(Clone, Debug, Serialize)]
pub struct HostReport {
    /// Inventory name.
    pub name: String,
    /// The address others reach it at.
    pub address: String,
    /// Its WAN region.
    pub region: Option<String>,
    /// What it ran: core i, driver j, load c, observer.
    pub processes: Vec<String>,
    /// How its clock was bounded (`same-kernel`, `chrony`, `bracket`).
    pub clock_method: Option<String>,
    /// Most milliseconds its clock may be off.
    pub clock_bound_ms: Option<f64>,
    /// CPU and peak memory per process kind on this host.
    pub usage: Vec<KindUsage>,
    /// End-to-end latency of this host's own transactions, as its observer measured it.
    pub e2e_latency_ms: Option<Latency>,
    /// This host's load transactions acknowledged and committed.
    pub accepted: u64,
    /// See `accepted`.
    pub committed: u64,
}

/// Commit-hash agreement between the cores the observers followed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Agreement {
    /// The cores compared.
    pub cores: Vec<u16>,
    /// Indices seen by at least two of them.
    pub common_indices: u64,
    /// Indices where two of them differ.
    pub mismatches: u64,
    /// The first such index.
    pub first_mismatch: Option<u64>,
}
