//! The data-path figures of a run (DESIGN.md, "Data path budget"): what moving one transaction
//! costs in network transfers, storage writes, system calls, context switches and CPU per thread
//! kind, from the growth of the cores' metrics and of `/proc` over the measurement window.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ProcessSamples;
use crate::harness::testbed::Kind;
use crate::node::observe::Observed;
use crate::node::procstat::ProcStats;

/// The metric of the payload bytes by direction and request kind.
const BY_REQUEST: &str = "sleepyseal_core_payload_bytes_by_request_total{";

/// The cores' metrics the data-path figures need, summed over the cores at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CoreFlow {
    /// Payload bytes received over the network.
    pub payload_bytes_received: f64,
    /// Payload bytes sent over the network.
    pub payload_bytes_sent: f64,
    /// The same bytes by direction and request kind, keyed `received submit`,
    /// `sent fetch_payloads`, ...
    pub payload_bytes_by_request: BTreeMap<String, f64>,
    /// Store commits (each one synced write).
    pub store_commits: f64,
    /// Bytes the stores appended to their payload segments.
    pub segment_bytes: f64,
    /// The stores' fsync calls.
    pub syncs: f64,
    /// Payload bytes the home drivers carried for authors other than their home core (served
    /// with their core's metrics; standalone drivers' are not counted).
    pub foreign_payload_bytes: f64,
    /// Queue waits, refused connections and `Busy` replies.
    pub transport: super::transport::TransportFlow,
}

impl CoreFlow {
    /// Sums the figures of the cores' metrics texts.
    pub fn from_metrics(texts: &[String]) -> CoreFlow {
        let sum = |name: &str| -> f64 {
            texts
                .iter()
                .filter_map(|t| sleepyseal_net::metrics::sample(t, name))
                .sum()
        };
        let mut payload_bytes_by_request = BTreeMap::new();
        for line in texts.iter().flat_map(|t| t.lines()) {
            if let Some((key, value)) = by_request(line) {
                *payload_bytes_by_request.entry(key).or_insert(0.0) += value;
            }
        }
        CoreFlow {
            payload_bytes_received: sum("sleepyseal_core_payload_bytes_received_total"),
            payload_bytes_sent: sum("sleepyseal_core_payload_bytes_sent_total"),
            payload_bytes_by_request,
            store_commits: sum("sleepyseal_core_store_commit_seconds_count"),
            segment_bytes: sum("sleepyseal_core_store_segment_bytes_total"),
            syncs: sum("sleepyseal_core_store_syncs_total"),
            foreign_payload_bytes: sum("sleepyseal_driver_foreign_payload_bytes"),
            transport: super::transport::TransportFlow::from_metrics(texts),
        }
    }

    /// The growth since `earlier`.
    fn since(&self, earlier: &CoreFlow) -> CoreFlow {
        CoreFlow {
            payload_bytes_received: self.payload_bytes_received - earlier.payload_bytes_received,
            payload_bytes_sent: self.payload_bytes_sent - earlier.payload_bytes_sent,
            payload_bytes_by_request: self
                .payload_bytes_by_request
                .iter()
                .map(|(k, v)| {
                    let before = earlier.payload_bytes_by_request.get(k).unwrap_or(&0.0);
                    (k.clone(), v - before)
                })
                .collect(),
            store_commits: self.store_commits - earlier.store_commits,
            segment_bytes: self.segment_bytes - earlier.segment_bytes,
            syncs: self.syncs - earlier.syncs,
            foreign_payload_bytes: self.foreign_payload_bytes - earlier.foreign_payload_bytes,
            transport: self.transport.since(&earlier.transport),
        }
    }
}

/// One sample of the payload bytes by request: its key (`received submit`) and value.
fn by_request(line: &str) -> Option<(String, f64)> {
    let (labels, value) = line.strip_prefix(BY_REQUEST)?.split_once("} ")?;
    let label = |name: &str| {
        labels.split(',').find_map(|kv| {
            kv.strip_prefix(name)?
                .strip_prefix("=\"")?
                .strip_suffix('"')
        })
    };
    let key = format!("{} {}", label("direction")?, label("request")?);
    Some((key, value.trim().parse().ok()?))
}

/// What moving one committed transaction cost over the window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DataPath {
    /// Payload bytes the cores received and sent over the network per committed payload byte:
    /// how many times each payload crossed the network (client → core, driver → cores, core →
    /// driver, core → reader). `None` without the cores' metrics.
    pub payload_transfers_per_tx: Option<f64>,
    /// The same, by direction and kind of request (`received submit`: the clients' share;
    /// `received header_bundle`: the home drivers' carriage; `sent fetch_payloads`: on-demand
    /// carriage; `sent read_committed`: the readers'). Empty without the cores' metrics.
    pub payload_transfers_by_request: BTreeMap<String, f64>,
    /// Of the transfers, those the home drivers carried in bundles for authors other than their
    /// home core, per committed payload byte: covers of an author whose home driver seemed
    /// dead, and carriage after the grace period (payloads a core lists as missing go as
    /// `received sync`). 0 when every home driver kept up. `None` without the cores' metrics.
    pub payload_transfers_foreign_carriage: Option<f64>,
    /// Bytes each core caused to be written to storage per committed transaction (`/proc`'s
    /// `write_bytes`: payloads, log records, compaction, whole pages at each sync).
    pub disk_bytes_per_tx_per_core: f64,
    /// Payload segment bytes each core's store appended per committed payload byte: 1 when each
    /// payload is written once. `None` without the cores' metrics.
    pub payload_writes_per_core: Option<f64>,
    /// The stores' fsync calls per second, per core. `None` without the cores' metrics.
    pub fsyncs_per_s_per_core: Option<f64>,
    /// Group commits that wrote something, per second, per core. `None` without the cores'
    /// metrics.
    pub store_commits_per_s_per_core: Option<f64>,
    /// Read- and write-family system calls of cores and drivers per committed transaction
    /// (`/proc`'s `syscr` + `syscw`: not `sendmsg`/`recvmsg`).
    pub rw_syscalls_per_tx: f64,
    /// Context switches of cores and drivers per committed transaction.
    pub context_switches_per_tx: f64,
    /// CPU per thread kind of every process kind, busiest first.
    pub threads: Vec<ThreadUsage>,
}

/// The CPU of one kind of thread in one kind of process over the window.
#[derive(Clone, Debug, Serialize)]
pub struct ThreadUsage {
    /// Process kind (`core`, `driver`, `load`).
    pub process: String,
    /// Thread kind (`core`, `core-net`, `verify`, ...).
    pub thread: String,
    /// CPUs kept busy on average.
    pub cores_busy: f64,
    /// CPU µs per committed transaction.
    pub us_per_tx: f64,
}

/// The data-path figures of a window of `window_s` seconds with `cores` live cores, or `None`
/// when `/proc` was not sampled at both edges or nothing committed.
pub fn data_path(
    samples: &ProcessSamples,
    o: &Observed,
    cores: usize,
    window_s: f64,
) -> Option<DataPath> {
    let (txs, bytes) = (o.window_transactions as f64, o.window_bytes as f64);
    if samples.detail_end.is_empty() || txs == 0.0 || bytes == 0.0 || window_s <= 0.0 {
        return None;
    }
    let grown = |kind: Kind| -> ProcStats {
        let at = |v: &[(Kind, ProcStats)]| {
            v.iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, s)| s.clone())
                .unwrap_or_default()
        };
        at(&samples.detail_end).since(&at(&samples.detail_start))
    };
    let core = grown(Kind::Core);
    let mut system = core.clone();
    system.add(&grown(Kind::Driver));
    let cores = cores.max(1) as f64;
    let flow = match (&samples.flow_start, &samples.flow_end) {
        (Some(a), Some(b)) => Some(b.since(a)),
        _ => None,
    };
    let per_core_s = |x: f64| x / window_s / cores;
    Some(DataPath {
        payload_transfers_per_tx: flow
            .as_ref()
            .map(|f| (f.payload_bytes_received + f.payload_bytes_sent) / bytes),
        payload_transfers_by_request: flow
            .as_ref()
            .map(|f| {
                f.payload_bytes_by_request
                    .iter()
                    .filter(|(_, v)| **v > 0.0)
                    .map(|(k, v)| (k.clone(), v / bytes))
                    .collect()
            })
            .unwrap_or_default(),
        payload_transfers_foreign_carriage: flow.as_ref().map(|f| f.foreign_payload_bytes / bytes),
        disk_bytes_per_tx_per_core: core.disk_write_bytes as f64 / cores / txs,
        payload_writes_per_core: flow.as_ref().map(|f| f.segment_bytes / cores / bytes),
        fsyncs_per_s_per_core: flow.as_ref().map(|f| per_core_s(f.syncs)),
        store_commits_per_s_per_core: flow.as_ref().map(|f| per_core_s(f.store_commits)),
        rw_syscalls_per_tx: (system.read_syscalls + system.write_syscalls) as f64 / txs,
        context_switches_per_tx: system.context_switches as f64 / txs,
        threads: threads(samples, txs, window_s, &grown),
    })
}

/// CPU per (process kind, thread kind), busiest first.
fn threads(
    samples: &ProcessSamples,
    txs: f64,
    window_s: f64,
    grown: &dyn Fn(Kind) -> ProcStats,
) -> Vec<ThreadUsage> {
    let mut out: Vec<ThreadUsage> = Vec::new();
    for kind in samples.detail_end.iter().map(|(k, _)| *k) {
        for (thread, cpu) in grown(kind).thread_cpu_s {
            out.push(ThreadUsage {
                process: kind.name().into(),
                thread,
                cores_busy: cpu / window_s,
                us_per_tx: cpu * 1e6 / txs,
            });
        }
    }
    out.sort_by(|a, b| b.cores_busy.total_cmp(&a.cores_busy));
    out
}
