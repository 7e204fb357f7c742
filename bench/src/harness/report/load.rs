//! What the load clients said, added up, and whether the run kept up with its input rate.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What a load client printed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoadSummary {
    /// Transactions sent.
    pub sent: u64,
    /// Acknowledged by a core.
    pub accepted: u64,
    /// Refused with Busy.
    pub busy: u64,
    /// Lost in transport.
    pub failed: u64,
    /// Not sent because too many submission bytes were in flight to the core (the client could
    /// not keep its schedule).
    pub missed: u64,
    /// Not sent because the core had refused (`Busy`, or no reply) and the client was backing
    /// off from it.
    #[serde(default)]
    pub held: u64,
}

impl LoadSummary {
    /// The summary `load --json` printed: the last non-empty line of its output.
    pub fn parse(output: &str) -> Option<LoadSummary> {
        let line = output.lines().rev().find(|l| !l.trim().is_empty())?;
        serde_json::from_str(line).ok()
    }
}

/// Reads the load clients' JSON summaries (a missing one counts as nothing sent).
pub fn read_loads(paths: &[PathBuf]) -> Vec<LoadSummary> {
    paths
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|t| LoadSummary::parse(&t))
                .unwrap_or_else(|| {
                    eprintln!("no summary from load client {}", p.display());
                    LoadSummary::default()
                })
        })
        .collect()
}

/// The load clients' counts added up.
pub(super) fn total_load(loads: &[LoadSummary]) -> LoadSummary {
    loads
        .iter()
        .fold(LoadSummary::default(), |a, l| LoadSummary {
            sent: a.sent + l.sent,
            accepted: a.accepted + l.accepted,
            busy: a.busy + l.busy,
            failed: a.failed + l.failed,
            missed: a.missed + l.missed,
            held: a.held + l.held,
        })
}

/// Why the system did not keep up with an input of `rate` tx/s (empty if it did).
pub(super) fn saturation(
    load: &LoadSummary,
    rate: u64,
    consensus_tps: f64,
    e2e_tps: f64,
    not_committed: u64,
) -> Vec<String> {
    let mut saturation = Vec::new();
    if load.missed > 0 {
        saturation.push(format!(
            "the load clients could not keep the rate ({} transactions not sent)",
            load.missed
        ));
    }
    if load.held > 0 {
        saturation.push(format!(
            "the load clients backed off from refusing cores ({} transactions not sent)",
            load.held
        ));
    }
    if load.busy * 1_000 > load.sent {
        saturation.push(format!(
            "cores refused {} transactions with Busy",
            load.busy
        ));
    }
    if consensus_tps < 0.95 * rate as f64 {
        saturation.push(format!(
            "consensus TPS {consensus_tps:.0} is below 95% of the input rate"
        ));
    }
    if e2e_tps < 0.95 * rate as f64 {
        saturation.push(format!(
            "end-to-end TPS {e2e_tps:.0} is below 95% of the input rate"
        ));
    }
    if not_committed > 0 {
        saturation.push(format!(
            "{not_committed} acknowledged transactions had not committed after the drain"
        ));
    }
    saturation
}
