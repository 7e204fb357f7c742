//! The watcher of `local` and of `observe`: follows one live core's committed sequence, with the
//! prefix of every transaction (its client, sequence and send time, not its filler), for the whole
//! run, and records every entry and every load transaction into [`Observed`].
//!
//! A committed entry whose payload the watched core does not hold yet (it inserted the
//! certificate before the payload arrived) is completed from the other cores, or read again a
//! little later; only after 5 s is it counted as without payload. Its commit time stays when it
//! was first seen committed: what it took to get its payload is the harness's business, not the
//! system's latency.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sleepyseal_core::AuthorityIndex;
use sleepyseal_net::client::{
    CommittedFollower, FollowOptions, Followed, FollowedEntry, MissingPayload,
};
use sleepyseal_net::Clients;
use tokio::task::JoinHandle;

use super::observed::Observed;
use crate::node::transaction::{entry_transactions, parse_transaction, unix_micros_at, LOAD_VIEW};

/// How the watcher reads: large pages, a short long poll (so it stops promptly), and patience
/// for payloads.
fn follow_options() -> FollowOptions {
    FollowOptions {
        max_entries: 4_096,
        view: LOAD_VIEW,
        wait_ms: 200,
        timeout: Duration::from_secs(5),
        retry_after: Duration::from_millis(50),
        missing_payload: MissingPayload::Wait {
            ask_peers: true,
            retry: Duration::from_millis(20),
            give_up: Some(Duration::from_secs(5)),
        },
    }
}

/// The watcher task; dropping it tells the task to stop.
pub struct Watcher {
    observed: Arc<Mutex<Observed>>,
    stop: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Starts following `core` from index 0 on `rt`, recording into `observed`.
    pub fn start(
        rt: &tokio::runtime::Runtime,
        clients: &Clients,
        core: AuthorityIndex,
        observed: Observed,
    ) -> Watcher {
        let observed = Arc::new(Mutex::new(observed));
        let stop = Arc::new(AtomicBool::new(false));
        let follower = clients.follow_committed(core, 0, follow_options());
        let task = rt.spawn(follow(follower, observed.clone(), stop.clone()));
        Watcher {
            observed,
            stop,
            task: Some(task),
        }
    }

    /// What it has seen so far.
    pub fn observed(&self) -> MutexGuard<'_, Observed> {
        self.observed.lock().expect("not poisoned")
    }

    /// What it saw, once stopped.
    pub fn into_observed(self) -> Observed {
        let observed = self.observed.clone();
        drop(self);
        match Arc::try_unwrap(observed) {
            Ok(m) => m.into_inner().expect("not poisoned"),
            Err(shared) => {
                let mut o = shared.lock().expect("not poisoned");
                std::mem::replace(&mut *o, Observed::new(0, (0, 0)))
            }
        }
    }

    /// Stops the task and waits for it to end (it finishes its current read first).
    pub fn stop(&mut self, rt: &tokio::runtime::Runtime) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.take() {
            let _ = rt.block_on(task);
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Reads until `stop`, recording what comes.
async fn follow(
    mut follower: CommittedFollower,
    observed: Arc<Mutex<Observed>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        match follower.next().await {
            Followed::Entries(entries) => record(&observed, &entries),
            Followed::Evicted {
                from_index,
                first_index,
            } => {
                let mut o = observed.lock().expect("not poisoned");
                o.evicted += first_index.saturating_sub(from_index);
            }
            // Read again after the follower's pause; a dead core shows in the processes, a
            // filling one in its gap gauge.
            Followed::Filling { .. } | Followed::Failed(_) => {}
        }
    }
}

fn record(observed: &Mutex<Observed>, entries: &[FollowedEntry]) {
    let mut o = observed.lock().expect("not poisoned");
    for e in entries {
        let transactions = entry_transactions(&e.payload);
        let committed_at = unix_micros_at(e.first_seen);
        o.record_entry(
            committed_at,
            &e.entry,
            transactions.as_deref(),
            parse_transaction,
        );
    }
}
