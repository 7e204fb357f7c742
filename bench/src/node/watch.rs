//! `sleepyseal watch`: prints one core's committed sequence as it grows.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use sleepyseal_core::protocol::CommittedView;
use sleepyseal_core::AuthorityIndex;
use sleepyseal_net::client::{FollowError, FollowOptions, Followed, FollowedEntry, MissingPayload};
use sleepyseal_net::{Clients, NetLimits};

use super::transaction::entry_transactions;
use super::{runtime, shutdown_signal, DEFAULT_COMMITTEE};

/// Flags of `sleepyseal watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The committee file.
    #[arg(long, default_value = DEFAULT_COMMITTEE)]
    committee: PathBuf,
    /// Which core's committed sequence to follow.
    #[arg(long, default_value_t = 0)]
    core: u16,
    /// First committed index to print.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Also fetch payloads and print the number of transactions of each entry.
    #[arg(long)]
    transactions: bool,
    /// Stop once this many entries were printed (0: follow until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Long poll: how long (ms) the core may hold a read until new entries are committed.
    #[arg(long, default_value_t = 1_000)]
    wait_ms: u32,
    /// Print entries as JSON lines.
    #[arg(long)]
    json: bool,
}

impl WatchArgs {
    /// A watcher prints what the core returns: an entry whose payload the core does not hold yet
    /// is printed without its transaction count.
    fn follow_options(&self) -> FollowOptions {
        FollowOptions {
            max_entries: 1_024,
            // The count needs each transaction's length prefix only.
            view: if self.transactions {
                CommittedView::Prefixes { bytes: 0 }
            } else {
                CommittedView::Digests
            },
            wait_ms: self.wait_ms,
            timeout: Duration::from_millis(u64::from(self.wait_ms) + 5_000),
            retry_after: Duration::from_millis(200),
            missing_payload: MissingPayload::Deliver,
        }
    }
}

/// Follows a core's committed sequence.
pub fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let testbed = sleepyseal_net::load_testbed(&args.committee)?;
    let core = AuthorityIndex(args.core);
    if !testbed.committee.contains(core) {
        bail!("--core {}: no such core", args.core);
    }
    runtime("watch")?.block_on(async move {
        let clients = Clients::new(&testbed, NetLimits::default())?;
        let mut follower = clients.follow_committed(core, args.from, args.follow_options());
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        let mut printed = 0u64;
        // The last gap reported (said once, not at every read while it fills).
        let mut filling_reported = None;
        'follow: loop {
            let followed = tokio::select! {
                _ = &mut shutdown => break,
                followed = follower.next() => followed,
            };
            match followed {
                Followed::Entries(entries) => {
                    for e in &entries {
                        print_entry(e, args.json);
                        printed += 1;
                        if args.count > 0 && printed >= args.count {
                            break 'follow;
                        }
                    }
                }
                Followed::Evicted {
                    from_index,
                    first_index,
                } => tracing::warn!(
                    "entries {from_index}..{first_index} are not served by core {core} (evicted, or a \
                     gap a checkpoint install left that no fill brought); skipping ahead"
                ),
                Followed::Filling {
                    from_index,
                    filled_from,
                } => {
                    if filling_reported != Some(from_index) {
                        filling_reported = Some(from_index);
                        tracing::warn!(
                            "core {core} is filling entries {from_index}..{filled_from} (a gap a \
                             checkpoint install left); waiting for them"
                        );
                    }
                }
                Followed::Failed(FollowError::Unexpected(reply)) => {
                    tracing::warn!("unexpected reply: {reply:?}")
                }
                Followed::Failed(FollowError::Client(e)) => tracing::warn!("core {core}: {e}"),
            }
        }
        clients.close().await;
        Ok(())
    })
}

/// Prints one entry: a JSON line, or a table row.
fn print_entry(followed: &FollowedEntry, json: bool) {
    let e = &followed.entry;
    let txs = entry_transactions(&followed.payload).map(|t| t.len());
    if json {
        println!(
            "{}",
            serde_json::json!({
                "index": e.index, "round": e.round.0, "author": e.author.0,
                "digest": e.digest.to_hex(), "commit_hash": e.commit_hash.to_hex(),
                "leader": e.is_leader, "payload_bytes": e.payload.len,
                "transactions": txs,
            })
        );
    } else {
        println!(
            "{:>8} r{:<6} {} {} {}{}{}",
            e.index,
            e.round.0,
            e.author,
            &e.digest.to_hex()[..16],
            &e.commit_hash.to_hex()[..16],
            if e.is_leader { " leader" } else { "" },
            txs.map(|t| format!(" {t} tx")).unwrap_or_default()
        );
    }
}
