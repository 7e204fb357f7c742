//! Flags every long-running process shares for cluster runs: an absolute stop time (a process
//! outlives neither its run nor a controller that went away) and a file it writes its own CPU and
//! memory figures to.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use super::transaction::unix_micros;
use super::usage::UsageRecorder;

/// `--stop-at-us`, `--usage-file`, `--usage-window-us`.
#[derive(Args, Debug, Clone, Default)]
pub struct Lifetime {
    /// Stop by itself at this time (µs since the Unix epoch), cleanly, as on SIGTERM.
    #[arg(long)]
    pub stop_at_us: Option<u64>,
    /// Write this process's CPU seconds (at the edges of --usage-window-us) and peak resident
    /// memory (at the end of the window and at exit) to this file, as JSON.
    #[arg(long, requires = "usage_window_us")]
    pub usage_file: Option<PathBuf>,
    /// The measurement window of --usage-file: START,END in µs since the Unix epoch.
    #[arg(long, value_delimiter = ',')]
    pub usage_window_us: Option<Vec<u64>>,
}

impl Lifetime {
    /// Time left until `--stop-at-us` (zero once passed), if given.
    pub fn remaining(&self) -> Option<Duration> {
        self.stop_at_us
            .map(|at| Duration::from_micros(at.saturating_sub(unix_micros())))
    }

    /// The earlier of `--stop-at-us` and `other`.
    pub fn deadline_or(&self, other: Option<Duration>) -> Option<Duration> {
        match (self.remaining(), other) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs `work` with this process's usage recorded if `--usage-file` was given: the window's
    /// edges while it runs, the final peak memory when it ends, however it ends.
    pub fn recorded<T>(&self, work: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        let usage = self.usage()?;
        let result = work();
        if let Some(usage) = usage {
            usage.finish();
        }
        result
    }

    /// Starts recording usage if `--usage-file` was given.
    fn usage(&self) -> anyhow::Result<Option<UsageRecorder>> {
        let Some(path) = &self.usage_file else {
            return Ok(None);
        };
        let window = match self.usage_window_us.as_deref() {
            Some([start, end]) if start <= end => (*start, *end),
            _ => bail!("--usage-window-us must be START,END with START <= END"),
        };
        Ok(Some(UsageRecorder::start(path.clone(), window)))
    }
}

/// Sleeps until `at_us` (µs since the epoch). Fails if that time passed more than `late` ago: a
/// process started after its start time would measure a different window than its peers.
pub async fn sleep_until(at_us: u64, late: Duration, flag: &str) -> anyhow::Result<()> {
    let now = unix_micros();
    if now > at_us + late.as_micros() as u64 {
        bail!(
            "started {} ms after {flag}: the run's start budget was too short",
            (now - at_us) / 1_000
        );
    }
    tokio::time::sleep(Duration::from_micros(at_us.saturating_sub(now))).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earlier_deadline_wins() {
        let later = Lifetime {
            stop_at_us: Some(unix_micros() + 60_000_000),
            ..Lifetime::default()
        };
        let d = later.deadline_or(Some(Duration::from_secs(1))).unwrap();
        assert_eq!(d, Duration::from_secs(1));
        let d = later.deadline_or(Some(Duration::from_secs(600))).unwrap();
        assert!(d <= Duration::from_secs(60));
        let passed = Lifetime {
            stop_at_us: Some(1),
            ..Lifetime::default()
        };
        assert_eq!(passed.deadline_or(None), Some(Duration::ZERO));
        assert_eq!(Lifetime::default().deadline_or(None), None);
    }

    #[test]
    fn a_bad_window_is_refused() {
        let l = Lifetime {
            usage_file: Some("x".into()),
            usage_window_us: Some(vec![5, 1]),
            ..Lifetime::default()
        };
        assert!(l.usage().is_err());
    }
}
