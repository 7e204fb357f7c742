//! Watching a core's commit stream: [`watcher`] follows it (with payloads) and records into
//! [`observed`]; `sleepyseal observe` ([`observe`]) is that watcher as a process of a cluster run.
//!
//! An observer runs on a load host and takes as latency samples only the transactions of that
//! host's own load clients: their send times and its commit times come from one clock, so the
//! end-to-end latency it reports carries no clock skew. It stops when every transaction its
//! clients had acknowledged has committed, or at `--stop-at-us`, and writes what it saw as JSON.

pub mod observed;
pub mod split;
pub mod watcher;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use sleepyseal_core::AuthorityIndex;
use sleepyseal_net::{Clients, NetLimits};

pub use observed::Observed;
pub use watcher::Watcher;

use super::lifetime::Lifetime;
use super::network::ClientFlags;
use super::transaction::unix_micros;
use super::{runtime, signal_flag, write_atomic, DEFAULT_COMMITTEE};

/// Flags of `sleepyseal observe`.
#[derive(Args, Debug)]
pub struct ObserveArgs {
    /// The committee file.
    #[arg(long, default_value = DEFAULT_COMMITTEE)]
    committee: PathBuf,
    /// The core whose committed sequence to follow.
    #[arg(long, default_value_t = 0)]
    core: u16,
    /// Client ids of this host's load clients: their transactions are the latency samples.
    #[arg(long, value_delimiter = ',', required = true)]
    clients: Vec<u64>,
    /// When the load starts (µs since the Unix epoch): second 0 of the timeline.
    #[arg(long)]
    load_start_us: u64,
    /// The measurement window: START,END in µs since the Unix epoch.
    #[arg(long, value_delimiter = ',', required = true)]
    window_us: Vec<u64>,
    /// The summaries (`load --json` output) of this host's load clients: once all exist and every
    /// transaction they had acknowledged committed, the observer stops.
    #[arg(long, value_delimiter = ',')]
    loads: Vec<PathBuf>,
    /// Where to write what it saw (JSON).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    lifetime: Lifetime,
    #[command(flatten)]
    net: ClientFlags,
}

/// Follows the core until its clients' transactions committed, `--stop-at-us` or a signal, then
/// writes what it saw.
pub fn observe(args: ObserveArgs) -> anyhow::Result<()> {
    let window = match args.window_us.as_slice() {
        [start, end] if start <= end => (*start, *end),
        _ => bail!("--window-us must be START,END with START <= END"),
    };
    let testbed = sleepyseal_net::load_testbed(&args.committee)?;
    let core = AuthorityIndex(args.core);
    if !testbed.committee.contains(core) {
        bail!("--core {}: no such core", args.core);
    }
    let client_options = args.net.options()?;
    args.lifetime.recorded(|| {
        let rt = runtime("observe")?;
        let clients = rt.block_on(async {
            Clients::with_options(&testbed, NetLimits::default(), client_options)
        })?;
        let observed =
            Observed::new(args.load_start_us, window).with_own_clients(args.clients.clone());
        let mut watcher = Watcher::start(&rt, &clients, core, observed);
        let stopped = signal_flag(&rt);
        let complete = wait(&args, &watcher, &stopped);
        watcher.stop(&rt);
        rt.block_on(clients.close());
        let observed = watcher.into_observed();
        tracing::info!(
            "observer of core {}: {} own transactions committed{}",
            args.core,
            observed.load_committed,
            if complete {
                ", all acknowledged ones"
            } else {
                ""
            }
        );
        write_atomic(&args.out, &serde_json::to_vec(&observed)?)?;
        Ok(())
    })
}

/// Waits until every acknowledged transaction of the host's clients committed (`true`), or the
/// deadline or a signal (`false`).
fn wait(args: &ObserveArgs, watcher: &Watcher, stopped: &AtomicBool) -> bool {
    let deadline = args.lifetime.stop_at_us.unwrap_or(u64::MAX);
    while unix_micros() < deadline && !stopped.load(Ordering::SeqCst) {
        if let Some(accepted) = accepted_by(&args.loads) {
            if watcher.observed().load_committed >= accepted {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The transactions the load clients acknowledged, once every one of them wrote its summary.
fn accepted_by(loads: &[PathBuf]) -> Option<u64> {
    if loads.is_empty() {
        return None;
    }
    loads.iter().map(|p| accepted_in(p)).sum()
}

/// `accepted` of the JSON summary on the last line of `path`, if it is there yet.
fn accepted_in(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    serde_json::from_str::<serde_json::Value>(line)
        .ok()?
        .get("accepted")?
        .as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_counts_only_once_every_summary_is_there() {
        let dir = std::env::temp_dir().join(format!("ss-observe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.out"), dir.join("b.out"));
        std::fs::write(&a, "{\"sent\":10,\"accepted\":7}\n").unwrap();
        assert_eq!(accepted_by(&[a.clone(), b.clone()]), None);
        std::fs::write(&b, "noise\n{\"accepted\":5}\n\n").unwrap();
        assert_eq!(accepted_by(&[a, b]), Some(12));
        assert_eq!(accepted_by(&[]), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
