//! What the cores' transport did over the window: how long requests waited for the core thread,
//! by lane (consensus requests apart from client requests), the connections refused by reason,
//! `Busy` replies; and, in a run with `--flood`, how strong the flood was and how soon a new
//! driver got its first answer.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::node::flood::FloodSummary;

const WAIT_BUCKET: &str = "sleepyseal_core_queue_wait_seconds_bucket{";
const REFUSED: &str = "sleepyseal_core_refused_connections_total{";

/// Request kinds of the client lane (every other kind is a consensus request).
const CLIENT_KINDS: [&str; 2] = ["submit", "read_committed"];

/// The transport's counters summed over the cores at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TransportFlow {
    /// Cumulative queue-wait bucket counts: (lane, upper bound in µs, `u64::MAX` for +Inf).
    waits: BTreeMap<(Lane, u64), f64>,
    /// Connections refused (or closed to make room) by reason.
    refused: BTreeMap<String, f64>,
    /// `Busy` replies.
    busy: f64,
    /// QUIC retries sent (address validation).
    retries: f64,
}

/// A lane of the core's queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Lane {
    Consensus,
    Client,
}

impl TransportFlow {
    /// Sums the figures of the cores' metrics texts.
    pub fn from_metrics(texts: &[String]) -> TransportFlow {
        let mut flow = TransportFlow::default();
        let sum = |name: &str| -> f64 {
            texts
                .iter()
                .filter_map(|t| sleepyseal_net::metrics::sample(t, name))
                .sum()
        };
        flow.busy = sum("sleepyseal_core_busy_replies_total");
        flow.retries = sum("sleepyseal_core_retries_sent_total");
        for line in texts.iter().flat_map(|t| t.lines()) {
            if let Some((labels, value)) = labelled(line, WAIT_BUCKET) {
                let (Some(kind), Some(le)) = (label(labels, "request"), label(labels, "le")) else {
                    continue;
                };
                let lane = if CLIENT_KINDS.contains(&kind) {
                    Lane::Client
                } else {
                    Lane::Consensus
                };
                let bound = match le {
                    "+Inf" => u64::MAX,
                    s => match s.parse::<f64>() {
                        Ok(seconds) => (seconds * 1e6).round() as u64,
                        Err(_) => continue,
                    },
                };
                *flow.waits.entry((lane, bound)).or_insert(0.0) += value;
            } else if let Some((labels, value)) = labelled(line, REFUSED) {
                if let Some(reason) = label(labels, "reason") {
                    *flow.refused.entry(reason.to_string()).or_insert(0.0) += value;
                }
            }
        }
        flow
    }

    /// The growth since `earlier`.
    pub fn since(&self, earlier: &TransportFlow) -> TransportFlow {
        let grown = |now: f64, before: Option<&f64>| now - before.copied().unwrap_or(0.0);
        TransportFlow {
            waits: self
                .waits
                .iter()
                .map(|(k, v)| (*k, grown(*v, earlier.waits.get(k))))
                .collect(),
            refused: self
                .refused
                .iter()
                .map(|(k, v)| (k.clone(), grown(*v, earlier.refused.get(k))))
                .collect(),
            busy: self.busy - earlier.busy,
            retries: self.retries - earlier.retries,
        }
    }

    /// The `q` quantile of `lane`'s waits (ms): the upper bound of the bucket it falls in,
    /// `None` with no request or beyond the last finite bound.
    fn wait_quantile(&self, lane: Lane, q: f64) -> Option<f64> {
        let buckets: Vec<(u64, f64)> = self
            .waits
            .iter()
            .filter(|((l, _), _)| *l == lane)
            .map(|((_, bound), count)| (*bound, *count))
            .collect();
        let total = buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let (bound, _) = buckets.into_iter().find(|(_, count)| *count >= q * total)?;
        (bound != u64::MAX).then(|| bound as f64 / 1e3)
    }

    fn requests(&self, lane: Lane) -> f64 {
        self.waits
            .iter()
            .filter(|((l, _), _)| *l == lane)
            .map(|(_, count)| *count)
            .fold(0.0, f64::max)
    }
}

fn labelled<'a>(line: &'a str, prefix: &str) -> Option<(&'a str, f64)> {
    let (labels, value) = line.strip_prefix(prefix)?.split_once("} ")?;
    Some((labels, value.trim().parse().ok()?))
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|kv| {
        kv.strip_prefix(name)?
            .strip_prefix("=\"")?
            .strip_suffix('"')
    })
}

/// How long the requests of one lane waited for the core thread over the window: from arrival
/// (decoded) to the core thread taking them, verify stage included. Quantiles are bucket upper
/// bounds (the buckets of `sleepyseal_core_queue_wait_seconds`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Waits {
    /// Requests taken in the window.
    pub requests: f64,
    /// At most this long for half of them (ms).
    pub p50_ms: Option<f64>,
    /// At most this long for 99% of them (ms).
    pub p99_ms: Option<f64>,
}

/// The transport over the window, summed over the live cores.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Transport {
    /// Consensus requests (what drivers send).
    pub consensus_wait: Waits,
    /// Client requests (`Submit`, `ReadCommitted`).
    pub client_wait: Waits,
    /// Connections refused, or closed to make room, by reason.
    pub refused_connections: BTreeMap<String, f64>,
    /// Requests answered `Busy`.
    pub busy_replies: f64,
    /// QUIC retries sent to validate source addresses.
    pub retries_sent: f64,
    /// The flood of a `--flood` run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flood: Option<FloodSection>,
}

/// A flood's strength and what it did to a new driver.
#[derive(Clone, Debug, Serialize)]
pub struct FloodSection {
    /// What the flood process achieved.
    #[serde(flatten)]
    pub summary: FloodSummary,
    /// A new driver's first poll answered by every live core, mid-flood (ms, the slowest core),
    /// from a source prefix that held no connection; `None` if a core never answered.
    pub new_driver_first_reply_ms: Option<f64>,
    /// The same from 127.0.0.1, where the other drivers, the load and the harness connect
    /// from.
    pub same_host_driver_first_reply_ms: Option<f64>,
}

/// The transport figures of the window (`end` grown from `start`).
pub fn transport(start: &TransportFlow, end: &TransportFlow) -> Transport {
    let grown = end.since(start);
    let waits = |lane| Waits {
        requests: grown.requests(lane),
        p50_ms: grown.wait_quantile(lane, 0.5),
        p99_ms: grown.wait_quantile(lane, 0.99),
    };
    Transport {
        consensus_wait: waits(Lane::Consensus),
        client_wait: waits(Lane::Client),
        refused_connections: grown
            .refused
            .into_iter()
            .filter(|(_, v)| *v > 0.0)
            .collect(),
        busy_replies: grown.busy,
        retries_sent: grown.retries,
        flood: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(get_state: [u64; 3], submit: [u64; 3], refused: u64) -> String {
        let mut t = String::new();
        for (kind, counts) in [("get_state", get_state), ("submit", submit)] {
            for (le, n) in ["0.001", "0.05", "+Inf"].iter().zip(counts) {
                t.push_str(&format!(
                    "sleepyseal_core_queue_wait_seconds_bucket{{request=\"{kind}\",le=\"{le}\"}} {n}\n"
                ));
            }
        }
        t.push_str(&format!(
            "sleepyseal_core_refused_connections_total{{reason=\"evicted\"}} {refused}\n"
        ));
        t.push_str("sleepyseal_core_busy_replies_total 7\n");
        t
    }

    #[test]
    fn waits_by_lane_over_the_window_and_refusals_by_reason() {
        let start = TransportFlow::from_metrics(&[text([10, 10, 10], [0, 0, 0], 1)]);
        // Two cores at the end: their buckets add up.
        let end = TransportFlow::from_metrics(&[
            text([108, 109, 110], [0, 50, 100], 4),
            text([0, 0, 0], [0, 0, 0], 0),
        ]);
        let t = transport(&start, &end);
        // 100 polls in the window, 98 within 1 ms, 99 within 50 ms.
        assert_eq!(t.consensus_wait.requests, 100.0);
        assert_eq!(t.consensus_wait.p50_ms, Some(1.0));
        assert_eq!(t.consensus_wait.p99_ms, Some(50.0));
        // Half the submissions waited up to 50 ms; the slowest beyond the last finite bound.
        assert_eq!(t.client_wait.p50_ms, Some(50.0));
        assert_eq!(t.client_wait.p99_ms, None);
        assert_eq!(t.refused_connections.get("evicted"), Some(&3.0));
        // Each text counts 7 `Busy`: the second core's 7 are new in the window.
        assert_eq!(t.busy_replies, 7.0);
    }
}
