//! What a watcher saw on the commit stream: every committed entry and load transaction, counted
//! into the measurement window, latency histograms and per-second figures. The harness's report
//! computes the figures from it; the progress bar reads it while the run goes. An observer of a
//! cluster run writes it to a file (histograms as value/count pairs) and the harness merges the
//! observers' files ([`Observed::merge_load`]).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use sleepyseal_core::protocol::CommittedEntry;

use super::split::LatencySplit;

/// Highest latency recorded (µs): one hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid hdrhistogram bounds")
}

/// A histogram as the value/count pairs it recorded (JSON-friendly, merges exactly).
mod pairs {
    use hdrhistogram::Histogram;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(u64, u64)> = h
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        pairs.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let pairs = Vec::<(u64, u64)>::deserialize(d)?;
        let mut h = super::latency_histogram();
        for (value, count) in pairs {
            h.record_n(value.clamp(1, super::MAX_LATENCY_US), count)
                .map_err(serde::de::Error::custom)?;
        }
        Ok(h)
    }
}

/// What one second of the run looked like (for the timeline plot and the progress bar).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Second {
    /// Load transactions committed in this second.
    pub transactions: u64,
    /// Their end-to-end latencies (µs).
    #[serde(with = "pairs")]
    pub latency: Histogram<u64>,
}

/// Everything the watcher saw on the commit stream.
#[derive(Debug, Serialize, Deserialize)]
pub struct Observed {
    /// When the load started (µs since the epoch).
    pub load_start_us: u64,
    /// The measurement window (µs since the epoch).
    pub window: (u64, u64),
    /// First and last commit inside the window.
    pub first_commit_us: Option<u64>,
    /// See `first_commit_us`.
    pub last_commit_us: u64,
    /// Transactions and payload bytes committed inside the window.
    pub window_transactions: u64,
    /// See `window_transactions`.
    pub window_bytes: u64,
    /// Header creation → commit (ms) of entries committed inside the window.
    #[serde(with = "pairs")]
    pub consensus_latency: Histogram<u64>,
    /// Send → commit (µs) of transactions sent inside the window.
    #[serde(with = "pairs")]
    pub e2e_latency: Histogram<u64>,
    /// The same samples split at their header's creation (queued, then consensus).
    #[serde(default)]
    pub split: LatencySplit,
    /// Highest committed round at the first and the last commit inside the window.
    pub rounds_in_window: Option<(u64, u64)>,
    /// Highest committed round so far.
    pub top_round: u64,
    /// Load transactions committed in all (for the drain).
    pub load_committed: u64,
    /// Transactions that are not load transactions (too short to carry a send time).
    pub foreign: u64,
    /// Committed entries whose payload the watched core did not return.
    pub entries_without_payload: u64,
    /// Committed entries skipped because the core evicted them before they were read.
    pub evicted: u64,
    /// Per second since the load started.
    pub seconds: Vec<Second>,
    /// The load clients whose transactions are this watcher's own (latency samples); `None`:
    /// every client's.
    pub own_clients: Option<Vec<u64>>,
    /// Load transactions of other clients (counted in throughput, not sampled).
    pub others: u64,
    /// An observer's record of the sequence: (index, commit hash in hex) of every entry, so the
    /// harness can check that the cores agree at every common index (at most
    /// [`MAX_RECORDED_HASHES`]).
    pub commit_hashes: Vec<(u64, String)>,
}

/// Most commit hashes an observer keeps (about 100 MB).
pub const MAX_RECORDED_HASHES: usize = 1_000_000;

impl Observed {
    /// Nothing seen yet.
    pub fn new(load_start_us: u64, window: (u64, u64)) -> Observed {
        Observed {
            load_start_us,
            window,
            first_commit_us: None,
            last_commit_us: 0,
            window_transactions: 0,
            window_bytes: 0,
            consensus_latency: latency_histogram(),
            e2e_latency: latency_histogram(),
            split: LatencySplit::default(),
            rounds_in_window: None,
            top_round: 0,
            load_committed: 0,
            foreign: 0,
            entries_without_payload: 0,
            evicted: 0,
            seconds: Vec::new(),
            own_clients: None,
            others: 0,
            commit_hashes: Vec::new(),
        }
    }

    /// Only the transactions of `clients` are latency samples (an observer on a load host samples
    /// that host's own clients, whose send times come from the same clock as its commit times).
    pub fn with_own_clients(mut self, clients: Vec<u64>) -> Observed {
        self.own_clients = Some(clients);
        self
    }

    /// Adds what another observer saw of its own load transactions (end-to-end latency, the
    /// per-second timeline, what committed); consensus figures stay this one's (each observer sees
    /// the same committed sequence).
    pub fn merge_load(&mut self, other: &Observed) {
        let _ = self.e2e_latency.add(&other.e2e_latency);
        self.split.merge(&other.split);
        self.load_committed += other.load_committed;
        if self.seconds.len() < other.seconds.len() {
            self.seconds.resize_with(other.seconds.len(), || Second {
                transactions: 0,
                latency: latency_histogram(),
            });
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(&other.seconds) {
            mine.transactions += theirs.transactions;
            let _ = mine.latency.add(&theirs.latency);
        }
    }

    fn in_window(&self, t: u64) -> bool {
        t >= self.window.0 && t <= self.window.1
    }

    /// Records one committed entry received at `now` (µs), with its transactions if the payload
    /// came along.
    pub fn record_entry(
        &mut self,
        now: u64,
        entry: &CommittedEntry,
        transactions: Option<&[bytes::Bytes]>,
        parse: impl Fn(&[u8]) -> Option<(u64, u64, u64)>,
    ) {
        self.top_round = self.top_round.max(entry.round.0);
        if self.own_clients.is_some() && self.commit_hashes.len() < MAX_RECORDED_HASHES {
            self.commit_hashes
                .push((entry.index, entry.commit_hash.to_hex()));
        }
        let Some(transactions) = transactions else {
            self.entries_without_payload += 1;
            return;
        };
        let in_window = self.in_window(now);
        if in_window {
            self.first_commit_us.get_or_insert(now);
            self.last_commit_us = now;
            self.window_transactions += transactions.len() as u64;
            self.window_bytes += u64::from(entry.payload.len);
            let ms = (now / 1_000).saturating_sub(entry.created_at_ms);
            let _ = self.consensus_latency.record(ms.max(1));
            let top = self.top_round;
            self.rounds_in_window = Some(match self.rounds_in_window {
                None => (top, top),
                Some((first, _)) => (first, top),
            });
        }
        let second = (now.saturating_sub(self.load_start_us) / 1_000_000) as usize;
        if self.seconds.len() <= second {
            self.seconds.resize_with(second + 1, || Second {
                transactions: 0,
                latency: latency_histogram(),
            });
        }
        for tx in transactions {
            let Some((client, _, sent_us)) = parse(tx) else {
                self.foreign += 1;
                continue;
            };
            if let Some(own) = &self.own_clients {
                if !own.contains(&client) {
                    self.others += 1;
                    continue;
                }
            }
            self.load_committed += 1;
            let latency = now.saturating_sub(sent_us).clamp(1, MAX_LATENCY_US);
            let s = &mut self.seconds[second];
            s.transactions += 1;
            let _ = s.latency.record(latency);
            if self.in_window(sent_us) {
                let _ = self.e2e_latency.record(latency);
                self.split
                    .record(sent_us, entry.created_at_ms.saturating_mul(1_000), now);
            }
        }
    }
}
