//! The driver inside a core process (`sleepyseal core --home-driver`, DESIGN.md "Deployment
//! shape"): its home core is this core, reached through the server's in-process link (the same
//! verify queue and group commit as any request, no network hop); every other core over QUIC.
//!
//! It runs on a thread of its own, `home-driver`, with a single-threaded tokio runtime of its
//! own: its CPU shows apart in profiles and in `/proc/<pid>/task`, and a busy driver cannot
//! starve the core's runtime. Neither its crash nor its memory can stop the core: a panic is
//! caught, logged and counted, and the driver restarts with fresh state after a capped back-off
//! (it holds nothing durable); its payload cache has a hard byte bound
//! (`--home-driver-payload-cache-bytes`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use sleepyseal_core::AuthorityIndex;
use sleepyseal_driver::link::Links;
use sleepyseal_driver::runner::{self, RunnerOptions, RunnerStats};
use sleepyseal_net::server::LocalLink;
use sleepyseal_net::{NetLimits, Testbed};
use tokio::sync::watch;

/// The first wait before a home driver that panicked starts again.
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait before a restart (the wait doubles after each panic in a row).
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A driver that ran this long before it panicked is restarted after the shortest wait again.
const RESTART_BACKOFF_RESET: Duration = Duration::from_secs(60);

/// A running home driver.
pub struct HomeDriver {
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<RunnerStats>,
}

/// What a home driver needs to (re)start.
struct Setup {
    testbed: Testbed,
    home: AuthorityIndex,
    link: LocalLink,
    options: RunnerOptions,
    stats: Arc<RunnerStats>,
}

impl HomeDriver {
    /// Starts the driver of home core `home` (reached through `link`) on thread `home-driver`.
    /// `options.driver.home_core` is set to `home` here.
    pub fn start(
        testbed: Testbed,
        home: AuthorityIndex,
        link: LocalLink,
        mut options: RunnerOptions,
    ) -> anyhow::Result<HomeDriver> {
        options.driver.home_core = Some(home);
        options.driver.home_is_local = true;
        tracing::info!("home driver of core {home}: {options:?}");
        let stats = Arc::new(RunnerStats::default());
        let (stop, stop_rx) = watch::channel(false);
        let setup = Setup {
            testbed,
            home,
            link,
            options,
            stats: stats.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("home-driver".into())
            .spawn(move || {
                let stats = setup.stats.clone();
                supervise(&stats, &stop_rx, |stop| incarnation(&setup, stop));
            })
            .context("spawn the home-driver thread")?;
        Ok(HomeDriver {
            stop,
            thread: Some(thread),
            stats,
        })
    }

    /// Its live counters (restarts after a panic included).
    pub fn stats(&self) -> &Arc<RunnerStats> {
        &self.stats
    }

    /// Stops the driver and waits for its thread.
    pub fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            // The supervisor catches every panic of the driver: a join error is impossible.
            let _ = thread.join();
        }
    }
}

/// Runs `incarnation` (one life of the driver) until `stop` turns true, again after a panic or
/// a failure to start (with a capped, doubling back-off), counting restarts in `stats`.
fn supervise(
    stats: &RunnerStats,
    stop: &watch::Receiver<bool>,
    mut incarnation: impl FnMut(watch::Receiver<bool>) -> anyhow::Result<()>,
) {
    let mut backoff = RESTART_BACKOFF_MIN;
    while !*stop.borrow() {
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| incarnation(stop.clone())));
        let why = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(error)) => format!("{error:#}"),
            Err(panic) => panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into()),
        };
        if started.elapsed() >= RESTART_BACKOFF_RESET {
            backoff = RESTART_BACKOFF_MIN;
        }
        stats.restarts.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            "home driver stopped ({why}); restarting it with fresh state in {backoff:?}"
        );
        sleep_unless_stopped(backoff, stop);
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
    }
}

/// One life of the driver, on a runtime of its own, until `stop` turns true.
fn incarnation(setup: &Setup, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the home driver's runtime")?;
    rt.block_on(async {
        let clients = setup
            .options
            .clients(&setup.testbed, NetLimits::default())
            .context("the home driver's QUIC endpoint")?;
        let links = Arc::new(Links::with_local(&clients, setup.home, setup.link.clone()));
        let committee = setup.testbed.committee.clone();
        let options = setup.options.clone();
        runner::run(committee, links, options, setup.stats.clone(), stop).await;
        clients.close().await;
        Ok(())
    })
}

/// Sleeps `wait`, or less if `stop` turns true meanwhile.
fn sleep_unless_stopped(wait: Duration, stop: &watch::Receiver<bool>) {
    let until = Instant::now() + wait;
    while !*stop.borrow() && Instant::now() < until {
        std::thread::sleep(
            Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A driver that panics (or fails to start) is restarted with a fresh incarnation, each
    /// counted; one that returns (it was stopped) is not.
    #[test]
    fn panics_are_caught_and_the_driver_restarted() {
        let stats = RunnerStats::default();
        let (_stop_tx, stop) = watch::channel(false);
        let mut lives = 0;
        let started = Instant::now();
        supervise(&stats, &stop, |_| {
            lives += 1;
            match lives {
                1 => panic!("a broken invariant"),
                2 => anyhow::bail!("no endpoint"),
                _ => Ok(()),
            }
        });
        assert_eq!(lives, 3);
        assert_eq!(stats.restarts.load(Ordering::Relaxed), 2);
        let waited = started.elapsed();
        assert!(
            waited >= RESTART_BACKOFF_MIN * 3,
            "backed off {waited:?} (100 ms, then 200 ms)"
        );
    }

    /// A stop during the back-off ends the supervisor without another life.
    #[test]
    fn a_stop_during_the_backoff_ends_it() {
        let stats = RunnerStats::default();
        let (stop_tx, stop) = watch::channel(false);
        let mut lives = 0;
        supervise(&stats, &stop, |_| {
            lives += 1;
            let _ = stop_tx.send(true);
            panic!("and stopped meanwhile");
        });
        assert_eq!(lives, 1);
    }
}
