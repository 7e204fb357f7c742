//! The processes of a local testbed: spawned from this same binary, logged to files, stopped
//! with SIGTERM (then SIGKILL), and measured from `/proc` (CPU time, peak resident memory).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::node::usage::{cpu_seconds, peak_rss_kib};

/// What a process is, for per-kind figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A core (validator).
    Core,
    /// A driver.
    Driver,
    /// A load client.
    Load,
    /// The hostile traffic of `local --flood` (reported beside, never counted).
    Flood,
    /// An observer of a cluster run's load host.
    Observer,
    /// The harness of a `local` run itself (it follows the commit stream): reported beside the
    /// system, never counted in its CPU per transaction.
    Harness,
}

impl Kind {
    /// The name used in file names and tables.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Core => "core",
            Kind::Driver => "driver",
            Kind::Load => "load",
            Kind::Flood => "flood",
            Kind::Observer => "observer",
            Kind::Harness => "harness",
        }
    }
}

/// One child process of the harness.
pub struct Proc {
    /// Its kind.
    pub kind: Kind,
    /// Its index among processes of its kind.
    pub index: usize,
    /// Its log file (stderr; stdout too unless redirected).
    pub log: PathBuf,
    child: Child,
    /// Peak RSS read before it was stopped (the kernel forgets it at exit).
    peak_rss_kib: Option<u64>,
}

impl Proc {
    /// Starts `sleepyseal <args>` (this executable), logging to `log`; stdout goes to `stdout` if
    /// given, else to the log too.
    pub fn spawn(
        kind: Kind,
        index: usize,
        args: &[String],
        log: &Path,
        stdout: Option<&Path>,
    ) -> anyhow::Result<Proc> {
        let exe = std::env::current_exe().context("find the sleepyseal executable")?;
        // Appended to, so a restarted process keeps its earlier incarnations' lines.
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let out = match stdout {
            Some(path) => {
                File::create(path).with_context(|| format!("create {}", path.display()))?
            }
            None => err.try_clone()?,
        };
        let child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .spawn()
            .with_context(|| format!("start {} {index}", kind.name()))?;
        Ok(Proc {
            kind,
            index,
            log: log.to_path_buf(),
            child,
            peak_rss_kib: None,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`, ...) with `kill(1)`.
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("run kill")?;
        if !status.success() {
            bail!("kill -{name} {} failed", self.pid());
        }
        Ok(())
    }

    /// Whether it has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// CPU seconds (user + system, all threads) used so far, from `/proc/<pid>/stat`.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid())
    }

    /// Peak resident set (KiB): read now if running, else the last value read (the kernel
    /// forgets it at exit, so call [`Proc::sample_rss`] while it runs).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(self.pid()).or(self.peak_rss_kib)
    }

    /// Reads the peak resident set now, if the process still runs.
    pub fn sample_rss(&mut self) {
        if let Some(kib) = peak_rss_kib(self.pid()) {
            self.peak_rss_kib = Some(kib);
        }
    }

    /// Sends SIGTERM, waits up to `grace` for a clean exit, then kills. Records the peak RSS
    /// first.
    pub fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        self.peak_rss_kib = peak_rss_kib(self.pid()).or(self.peak_rss_kib);
        let _ = self.signal("TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        self.child.wait().ok()
    }

    /// SIGKILL (a crash), recording the peak RSS first.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            self.peak_rss_kib = peak_rss_kib(self.pid()).or(self.peak_rss_kib);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The last `lines` lines of its log (for error messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    /// Never leaves a child behind, whatever happened to the harness.
    fn drop(&mut self) {
        self.kill();
    }
}
