//! The checks of a chaos run over what was collected, and its report:
//! - equal `commit_hash` at every index committed by more than one core;
//! - every transaction a core acknowledged is committed exactly once (workload check);
//! - no core signed two different headers for one round, nor voted for two in one slot.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Serialize;
use sleepyseal_core::Digest;

use super::collect::{Collected, Seen};

/// One perturbation and how the system took it.
#[derive(Serialize, Debug)]
pub struct Step {
    what: String,
    /// Seconds until the perturbed core was within 2 rounds of the others (or, for a driver,
    /// until commits resumed).
    recovery_s: Option<f64>,
}

/// Prints a step's outcome and records it.
pub fn record(steps: &mut Vec<Step>, what: String, recovery_s: Option<f64>) {
    eprintln!(
        "chaos: {what}: {}",
        recovery_s
            .map(|s| format!("recovered in {s:.2} s"))
            .unwrap_or_else(|| "NOT recovered".into())
    );
    steps.push(Step { what, recovery_s });
}

/// The chaos report.
#[derive(Serialize, Debug)]
pub struct ChaosReport {
    cores: usize,
    drivers: usize,
    rate: u64,
    steps: Vec<Step>,
    max_recovery_s: f64,
    steps_not_recovered: usize,
    common_indices_checked: u64,
    commit_hash_mismatches: u64,
    acknowledged: u64,
    acknowledged_committed_once: u64,
    acknowledged_lost: u64,
    duplicated: u64,
    double_signed_rounds: u64,
    /// Votes seen whose header's (author, round) is known.
    votes_checked: u64,
    /// (voter, author, round) with votes for two different headers.
    double_votes: u64,
    evicted_entries: u64,
    wall_s: f64,
}

impl ChaosReport {
    /// Whether any check failed or any step did not recover.
    pub fn failed(&self) -> bool {
        self.steps_not_recovered > 0
            || self.commit_hash_mismatches > 0
            || self.acknowledged_lost > 0
            || self.duplicated > 0
            || self.double_signed_rounds > 0
            || self.double_votes > 0
    }
}

/// The shape of the run, as reported.
pub struct RunShape {
    /// Cores.
    pub cores: usize,
    /// Drivers.
    pub drivers: usize,
    /// Input rate (tx/s).
    pub rate: u64,
    /// When the run started.
    pub started: Instant,
}

/// Runs every check over what was collected.
pub fn check(
    shape: RunShape,
    steps: Vec<Step>,
    c: &Collected,
    acked: &[(u64, u64)],
) -> ChaosReport {
    let longest = c
        .sequences
        .iter()
        .max_by_key(|s| s.len())
        .cloned()
        .unwrap_or_default();
    let (common, mismatches) = agreement(c, &longest);
    let workload = workload(&longest, acked);
    let (votes_checked, double_votes) = double_votes(c);
    let double_signed = c
        .own_headers
        .values()
        .filter(|digests| digests.len() > 1)
        .count() as u64;
    let recoveries: Vec<f64> = steps.iter().filter_map(|s| s.recovery_s).collect();
    ChaosReport {
        cores: shape.cores,
        drivers: shape.drivers,
        rate: shape.rate,
        max_recovery_s: recoveries.iter().copied().fold(0.0, f64::max),
        steps_not_recovered: steps.iter().filter(|s| s.recovery_s.is_none()).count(),
        steps,
        common_indices_checked: common,
        commit_hash_mismatches: mismatches,
        acknowledged: acked.len() as u64,
        acknowledged_committed_once: workload.once,
        acknowledged_lost: workload.lost,
        duplicated: workload.duplicated,
        double_signed_rounds: double_signed,
        votes_checked,
        double_votes,
        evicted_entries: c.evicted.iter().sum(),
        wall_s: shape.started.elapsed().as_secs_f64(),
    }
}

/// Indices of `longest` seen at more than one core, and those where the cores disagree.
fn agreement(c: &Collected, longest: &BTreeMap<u64, Seen>) -> (u64, u64) {
    let mut common = 0u64;
    let mut mismatches = 0u64;
    for (index, entry) in longest {
        let others: Vec<&Seen> = c.sequences.iter().filter_map(|s| s.get(index)).collect();
        if others.len() > 1 {
            common += 1;
            if others.iter().any(|o| o.commit_hash != entry.commit_hash) {
                mismatches += 1;
            }
        }
    }
    (common, mismatches)
}

/// Acknowledged transactions committed once, never, and transactions committed twice.
struct Workload {
    once: u64,
    lost: u64,
    duplicated: u64,
}

/// Each acknowledged (client, sequence) must be exactly once in the longest sequence.
fn workload(longest: &BTreeMap<u64, Seen>, acked: &[(u64, u64)]) -> Workload {
    let mut count: HashMap<(u64, u64), u32> = HashMap::new();
    for entry in longest.values() {
        for t in &entry.transactions {
            *count.entry(*t).or_default() += 1;
        }
    }
    Workload {
        once: acked
            .iter()
            .filter(|t| count.get(t).copied() == Some(1))
            .count() as u64,
        lost: acked.iter().filter(|t| !count.contains_key(t)).count() as u64,
        duplicated: count.values().filter(|n| **n > 1).count() as u64,
    }
}

/// Votes whose header's slot is known, and (voter, author, round) voted for two headers.
fn double_votes(c: &Collected) -> (u64, u64) {
    let mut voted: HashMap<(u16, u16, u64), HashSet<Digest>> = HashMap::new();
    let mut votes_checked = 0u64;
    for (voter, digest) in &c.votes {
        if let Some(&(author, round)) = c.slots.get(digest) {
            votes_checked += 1;
            voted
                .entry((*voter, author, round))
                .or_default()
                .insert(*digest);
        }
    }
    let double = voted.values().filter(|d| d.len() > 1).count() as u64;
    (votes_checked, double)
}

/// The acknowledged (client 0) sequence numbers the load client wrote.
pub fn read_acked(path: &Path) -> anyhow::Result<Vec<(u64, u64)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read the acknowledged ranges {}", path.display()))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(a), Some(b)) = (parts.next(), parts.next()) else {
            bail!("bad line in {}: {line:?}", path.display());
        };
        let (a, b): (u64, u64) = (a.parse()?, b.parse()?);
        out.extend((a..=b).map(|s| (0, s)));
    }
    Ok(out)
}
