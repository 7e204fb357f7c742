//! The cores' store sizes over a `local` run (PROTOCOL.md §8a.6: storage is bounded): sampled
//! from their store directories every few seconds, written to `store-sizes.csv`, and summed up in
//! the report as each core's size at half the load and at its end, the growth between the two,
//! and the bound its settings give ([`sleepyseal_core::machine::StoreBound`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How often the store directories are measured.
const EVERY: Duration = Duration::from_secs(5);

/// The store sizes of a run.
pub struct StoreSampler {
    dirs: Vec<PathBuf>,
    started: Instant,
    next: Instant,
    /// Seconds since the load started, and each core's store bytes then.
    samples: Vec<(f64, Vec<u64>)>,
}

/// One core's store over the load.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CoreStore {
    /// The core.
    pub core: usize,
    /// Bytes at half the load.
    pub half_bytes: u64,
    /// Bytes at the end of the load.
    pub end_bytes: u64,
    /// The most seen.
    pub max_bytes: u64,
    /// Growth over the second half of the load, in percent of the size at half.
    pub growth_pct: f64,
}

/// The cores' stores over the load, against the bound of their settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoreGrowth {
    /// Seconds of load measured.
    pub seconds: f64,
    /// The sum of a core's configured bounds, in bytes.
    pub bound_bytes: u64,
    /// Per core.
    pub cores: Vec<CoreStore>,
}

impl StoreSampler {
    /// Measures the directories `dirs` from now on.
    pub fn new(dirs: Vec<PathBuf>) -> StoreSampler {
        let now = Instant::now();
        StoreSampler {
            dirs,
            started: now,
            next: now,
            samples: Vec::new(),
        }
    }

    /// Measures every store directory if the last measure is [`EVERY`] old.
    pub fn maybe_sample(&mut self) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + EVERY;
        let sizes = self.dirs.iter().map(|d| dir_bytes(d)).collect();
        self.samples
            .push((now.duration_since(self.started).as_secs_f64(), sizes));
    }

    /// Seconds since the load started, and each core's store bytes then.
    pub fn samples(&self) -> &[(f64, Vec<u64>)] {
        &self.samples
    }

    /// Writes `seconds,core0,core1,...` lines to `path`.
    pub fn write_csv(&self, path: &Path) -> std::io::Result<()> {
        let mut text = String::from("seconds");
        for i in 0..self.dirs.len() {
            text.push_str(&format!(",core{i}"));
        }
        text.push('\n');
        for (t, sizes) in &self.samples {
            text.push_str(&format!("{t:.1}"));
            for s in sizes {
                text.push_str(&format!(",{s}"));
            }
            text.push('\n');
        }
        std::fs::write(path, text)
    }

    /// The summary against `bound_bytes` (none before two samples).
    pub fn growth(&self, bound_bytes: u64) -> Option<StoreGrowth> {
        let (end_t, end) = self.samples.last()?;
        let half_t = end_t / 2.0;
        let (_, half) = self.samples.iter().find(|(t, _)| *t >= half_t)?;
        let cores = (0..self.dirs.len())
            .map(|i| {
                let (h, e) = (half[i], end[i]);
                CoreStore {
                    core: i,
                    half_bytes: h,
                    end_bytes: e,
                    max_bytes: self.samples.iter().map(|(_, s)| s[i]).max().unwrap_or(0),
                    growth_pct: if h == 0 {
                        0.0
                    } else {
                        (e as f64 - h as f64) / h as f64 * 100.0
                    },
                }
            })
            .collect();
        Some(StoreGrowth {
            seconds: *end_t,
            bound_bytes,
            cores,
        })
    }
}

/// Bytes of the files in `dir` and its subdirectories (0 if it cannot be read).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
