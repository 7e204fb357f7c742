//! What a process costs, from `/proc`: CPU seconds and peak resident memory. The harness reads
//! them for its child processes; a process of a cluster run reads its own (`--usage-file`) at the
//! edges of the measurement window and at exit, so no figure is ever parsed from a log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::procstat::{parse_cpu_ticks, USER_HZ};
use super::transaction::unix_micros;

/// CPU seconds (utime + stime, all threads) of process `pid`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / USER_HZ)
}

/// Peak resident set size (VmHWM, KiB) of process `pid`.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// What a process wrote of itself with `--usage-file`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    /// CPU seconds used when the measurement window opened (absent if the process had not
    /// reached it).
    pub cpu_start_s: Option<f64>,
    /// CPU seconds used when it closed (absent if the process ended before).
    pub cpu_end_s: Option<f64>,
    /// Peak resident set (KiB) at the last write.
    pub peak_rss_kib: u64,
    /// Whether the process wrote this on its way out (else at the end of the window).
    pub at_exit: bool,
}

/// Records this process's own usage into a file: CPU at the edges of a window (a background
/// thread wakes at each), and the peak RSS again at [`UsageRecorder::finish`].
pub struct UsageRecorder {
    path: PathBuf,
    state: std::sync::Arc<std::sync::Mutex<Usage>>,
}

impl UsageRecorder {
    /// Starts recording into `path` over `window` (µs since the epoch).
    pub fn start(path: PathBuf, window: (u64, u64)) -> UsageRecorder {
        let state = std::sync::Arc::new(std::sync::Mutex::new(Usage::default()));
        let (thread_state, thread_path) = (state.clone(), path.clone());
        // Detached: the thread only sleeps until the window's edges; it dies with the process.
        let spawned = std::thread::Builder::new()
            .name("usage".into())
            .spawn(move || {
                for (edge, end) in [(window.0, false), (window.1, true)] {
                    let wait = edge.saturating_sub(unix_micros());
                    std::thread::sleep(Duration::from_micros(wait));
                    let mut usage = thread_state.lock().expect("not poisoned");
                    let cpu = cpu_seconds(std::process::id());
                    if end {
                        usage.cpu_end_s = cpu;
                    } else {
                        usage.cpu_start_s = cpu;
                    }
                    usage.peak_rss_kib = peak_rss_kib(std::process::id()).unwrap_or(0);
                    write(&thread_path, &usage);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the usage thread: {e}");
        }
        UsageRecorder { path, state }
    }

    /// Writes the final peak RSS (the CPU figures of the window stay as sampled).
    pub fn finish(self) {
        let mut usage = self.state.lock().expect("not poisoned");
        usage.peak_rss_kib = peak_rss_kib(std::process::id()).unwrap_or(usage.peak_rss_kib);
        usage.at_exit = true;
        write(&self.path, &usage);
    }
}

/// Writes `usage` atomically; a failure is logged (the process's work goes on).
fn write(path: &Path, usage: &Usage) {
    let text = serde_json::to_vec(usage).expect("serializable");
    if let Err(e) = super::write_atomic(path, &text) {
        tracing::warn!("{e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat =
            "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 300 0 0 0 1234 56 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(1290));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn own_process_has_cpu_time_and_rss() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some());
        assert!(peak_rss_kib(pid).unwrap_or(0) > 0);
    }

    #[test]
    fn usage_is_written_at_both_edges_and_at_exit() {
        let dir = std::env::temp_dir().join(format!("ss-usage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("u.json");
        let now = unix_micros();
        let recorder = UsageRecorder::start(path.clone(), (now, now + 50_000));
        std::thread::sleep(Duration::from_millis(300));
        let read = |p: &Path| -> Usage {
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
        };
        let mid = read(&path);
        assert!(mid.cpu_start_s.is_some() && mid.cpu_end_s.is_some());
        assert!(mid.cpu_end_s >= mid.cpu_start_s);
        assert!(!mid.at_exit && mid.peak_rss_kib > 0);
        recorder.finish();
        assert!(read(&path).at_exit);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
