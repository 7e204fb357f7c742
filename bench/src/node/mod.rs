//! The processes of a testbed, one command each: `sleepyseal genesis` ([`genesis`]), `core`
//! ([`core`], with its in-process [`home_driver`]), `driver` ([`driver`]), `load` ([`load`]) and `watch` ([`watch`]). [`transaction`]
//! is the format of load transactions, which the harness reads back from the commit stream.
//!
//! Every default a flag shares with a library comes from that library (`CoreConfig`,
//! `DriverConfig`, `VerifierConfig`, `ServerOptions`, `NetLimits`); those shared between commands
//! are the constants below and in [`load`].

pub mod core;
pub mod driver;
pub mod flood;
pub mod genesis;
pub mod home_driver;
pub mod lifetime;
pub mod load;
pub mod network;
pub mod observe;
pub mod procstat;
pub mod ready;
pub mod transaction;
pub mod usage;
pub mod watch;

use std::time::Duration;

use anyhow::Context;
use sleepyseal_net::metrics;

/// Default of `genesis --dir`.
pub const DEFAULT_TESTBED_DIR: &str = "testbed";
/// Default of `--committee`: where `genesis` writes it by default (in [`DEFAULT_TESTBED_DIR`]).
pub const DEFAULT_COMMITTEE: &str = "testbed/committee.json";
/// Default number of cores of `genesis` and `local`.
pub const DEFAULT_CORES: usize = 4;
/// Default of `core --log-every-s` and `driver --log-every-s`.
pub const DEFAULT_LOG_EVERY_S: u64 = 5;

/// Serves `render` as Prometheus text on `addr` and logs where.
async fn serve_metrics(addr: std::net::SocketAddr, render: metrics::Render) -> anyhow::Result<()> {
    let bound = metrics::serve(addr, render)
        .await
        .with_context(|| format!("serve metrics on {addr}"))?;
    tracing::info!("metrics on http://{bound}/metrics");
    Ok(())
}

/// The tokio runtime of a process; its threads are named `<name>-net` (profiles tell the
/// processes of a local run apart by thread name).
pub fn runtime(name: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(format!("{name}-net"))
        .enable_all()
        .build()
        .context("start the tokio runtime")
}

/// A progress ticker; never fires when `every_s` is 0.
pub fn interval(every_s: u64) -> tokio::time::Interval {
    let period = if every_s == 0 {
        Duration::from_secs(u64::MAX / 4)
    } else {
        Duration::from_secs(every_s)
    };
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

/// Calls `tick` every `every_s` seconds (never with 0) until Ctrl-C or SIGTERM, until `deadline`
/// has passed (if any), or until `tick` answers `false`.
pub async fn tick_until_stopped(
    every_s: u64,
    deadline: Option<Duration>,
    mut tick: impl FnMut() -> bool,
) {
    let deadline = async {
        match deadline {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(deadline);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut progress = interval(every_s);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = &mut deadline => break,
            _ = progress.tick() => if !tick() { break },
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called (not when first
/// polled), so create it once, before the work starts, and keep polling the same future: a signal
/// that arrives in between is not lost.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        let mut interrupt = signal(SignalKind::interrupt()).expect("install SIGINT handler");
        async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = term.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A flag raised on Ctrl-C or SIGTERM (the work in progress winds down and reports).
pub fn signal_flag(rt: &tokio::runtime::Runtime) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signal = {
        let _context = rt.enter();
        shutdown_signal()
    };
    let raised = flag.clone();
    rt.spawn(async move {
        signal.await;
        raised.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    flag
}

/// Writes `bytes` to `path` through a temporary file, so a reader (the harness, an observer
/// waiting for a summary) never sees half of it.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
}
