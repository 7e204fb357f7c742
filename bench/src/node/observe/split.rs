//! Where end-to-end latency goes: each committed load transaction's wait split at its header's
//! creation into **queued** (send → the author proposes it: mempool backlog, a batch delay, or an
//! orphaned header whose transactions wait gc depth before they are proposed again) and
//! **consensus** (proposal → commit: rounds, votes, certificates, the commit rule, and the
//! reader's lag).
//!
//! To say which stage makes the tail, samples are bucketed by their end-to-end latency (a
//! quarter of an octave each) with the sums of both stages per bucket: compact, mergeable across
//! observers, and enough to tell the share of the slowest 1%'s wait spent before proposal.

use serde::{Deserialize, Serialize};

/// Buckets: a quarter octave each, from 1 ms up to about 18 hours.
const BUCKETS: usize = 4 * 26;

/// Sums of the two stages of the samples of one end-to-end latency bucket.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
struct Bucket {
    count: u64,
    queued_us: u64,
    consensus_us: u64,
}

/// The two stages of the window's samples, bucketed by end-to-end latency.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LatencySplit {
    buckets: Vec<Bucket>,
}

impl Default for LatencySplit {
    fn default() -> LatencySplit {
        LatencySplit {
            buckets: vec![Bucket::default(); BUCKETS],
        }
    }
}

/// What the slowest samples waited for.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct TailSplit {
    /// Share of all samples' wait spent before proposal.
    pub queued_share: f64,
    /// The same share among the slowest 1% of samples.
    pub tail_queued_share: f64,
    /// Mean wait before proposal of the slowest 1% (ms).
    pub tail_queued_ms: f64,
    /// Mean wait from proposal to commit of the slowest 1% (ms).
    pub tail_consensus_ms: f64,
}

/// The bucket of an end-to-end latency of `us` microseconds.
fn bucket(us: u64) -> usize {
    let ms = (us / 1_000).max(1) as f64;
    ((ms.log2() * 4.0) as usize).min(BUCKETS - 1)
}

impl LatencySplit {
    /// Records one sample: sent at `sent_us`, proposed at `proposed_us`, committed at
    /// `committed_us` (µs since the epoch; a proposal time outside the span is clamped to it).
    pub fn record(&mut self, sent_us: u64, proposed_us: u64, committed_us: u64) {
        let proposed = proposed_us.clamp(sent_us, committed_us.max(sent_us));
        let b = &mut self.buckets[bucket(committed_us.saturating_sub(sent_us))];
        b.count += 1;
        b.queued_us += proposed - sent_us;
        b.consensus_us += committed_us.saturating_sub(proposed);
    }

    /// Adds another observer's samples.
    pub fn merge(&mut self, other: &LatencySplit) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            mine.count += theirs.count;
            mine.queued_us += theirs.queued_us;
            mine.consensus_us += theirs.consensus_us;
        }
    }

    /// The shares of the whole and of the slowest 1% (the highest buckets holding at least 1% of
    /// the samples), or `None` without samples.
    pub fn tail(&self) -> Option<TailSplit> {
        let total: u64 = self.buckets.iter().map(|b| b.count).sum();
        if total == 0 {
            return None;
        }
        let share = |q: u64, c: u64| {
            if q + c == 0 {
                0.0
            } else {
                q as f64 / (q + c) as f64
            }
        };
        let all = self.buckets.iter().fold(Bucket::default(), add);
        let wanted = total.div_ceil(100);
        let mut tail = Bucket::default();
        for b in self.buckets.iter().rev() {
            if tail.count >= wanted {
                break;
            }
            tail = add(tail, b);
        }
        let mean_ms = |us: u64| us as f64 / tail.count.max(1) as f64 / 1_000.0;
        Some(TailSplit {
            queued_share: share(all.queued_us, all.consensus_us),
            tail_queued_share: share(tail.queued_us, tail.consensus_us),
            tail_queued_ms: mean_ms(tail.queued_us),
            tail_consensus_ms: mean_ms(tail.consensus_us),
        })
    }
}

fn add(a: Bucket, b: &Bucket) -> Bucket {
    Bucket {
        count: a.count + b.count,
        queued_us: a.queued_us + b.queued_us,
        consensus_us: a.consensus_us + b.consensus_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_told_apart_from_the_bulk() {
        let mut s = LatencySplit::default();
        // 990 samples of 100 ms, 90 of them queued; 10 of 2 s, 1.8 s of it queued (an orphan).
        for _ in 0..990 {
            s.record(0, 10_000, 100_000);
        }
        for _ in 0..10 {
            s.record(0, 1_800_000, 2_000_000);
        }
        let t = s.tail().unwrap();
        assert!((t.tail_queued_share - 0.9).abs() < 1e-9, "{t:?}");
        assert!((t.tail_queued_ms - 1_800.0).abs() < 1e-9);
        assert!((t.tail_consensus_ms - 200.0).abs() < 1e-9);
        let all = (990.0 * 10.0 + 10.0 * 1_800.0) / (990.0 * 100.0 + 10.0 * 2_000.0);
        assert!((t.queued_share - all).abs() < 1e-9);
        let mut merged = LatencySplit::default();
        merged.merge(&s);
        assert_eq!(merged, s);
        assert!(LatencySplit::default().tail().is_none());
    }

    #[test]
    fn a_proposal_time_outside_the_span_is_clamped() {
        let mut s = LatencySplit::default();
        // Clocks of the author and the observer apart: proposed "before" sent, "after" commit.
        s.record(50_000, 10_000, 100_000);
        s.record(0, 500_000, 100_000);
        let t = s.tail().unwrap();
        assert!((0.0..=1.0).contains(&t.queued_share));
        assert_eq!(s.buckets.iter().map(|b| b.count).sum::<u64>(), 2);
    }
}
