//! The core thread: the only owner of `Core`. It takes the verified requests queued for it,
//! handles them as one group commit (one synced store write, then the replies), publishes the
//! core's and the store's counters, and holds long-poll reads until entries commit.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sleepyseal_core::protocol::{RequestBody, Response};
use sleepyseal_core::store::StoreError;
use sleepyseal_core::{Core, Millis, Store, Verifier};

use super::local::publish_own_header;
use super::queue::{FairReceiver, Lane};
use super::{wall_clock, CoreJob, ServerError, ServerStats};

/// Starts the `core` thread running [`core_loop`]. A store failure or a panic on it closes the
/// endpoint (clients see the core stop instead of hanging) and is its result.
pub(super) fn spawn_core_thread(
    rx: FairReceiver<CoreJob>,
    core: Core,
    store: Box<dyn Store>,
    max_group: GroupLimits,
    stats: Arc<ServerStats>,
    verifier: Arc<Verifier>,
    endpoint: quinn::Endpoint,
) -> std::thread::JoinHandle<Result<(), ServerError>> {
    std::thread::Builder::new()
        .name("core".into())
        .spawn(move || {
            let run = std::panic::AssertUnwindSafe(|| {
                core_loop(rx, core, store, max_group, &stats, &verifier)
            });
            let result = std::panic::catch_unwind(run).unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(ServerError::CorePanicked(message))
            });
            if let Err(e) = &result {
                tracing::error!("stopping the core: {e}");
                endpoint.close(quinn::VarInt::from_u32(1), b"core stopped");
            }
            result
        })
        .expect("spawn core thread")
}

/// The core thread: takes the queued jobs (up to `max_group[lane]` of each lane), handles them as
/// one group commit, releases their replies once the group is durable, then answers the long
/// polls that became due.
fn core_loop(
    rx: FairReceiver<CoreJob>,
    mut core: Core,
    mut store: Box<dyn Store>,
    limits: GroupLimits,
    stats: &ServerStats,
    verifier: &Verifier,
) -> Result<(), ServerError> {
    let mut pruned_at = core.gc_round();
    let mut parked = Parked::default();
    // Every queued consensus request, and at least one client request so that the client lane
    // never waits on the consensus lane's quota; more client requests below, within budget.
    while let Some(jobs) = rx.take([limits.consensus, 1], parked.next_deadline()) {
        let now = wall_clock();
        let committed = core.consensus().consensus_index;
        let take = |job: CoreJob, parked: &mut Parked| {
            stats.core_queue.fetch_sub(1, Ordering::Relaxed);
            let kind = job.request.request.body.kind();
            stats.queue_waited(kind, job.arrived.elapsed());
            parked.park_or_keep(job, committed)
        };
        let jobs: Vec<CoreJob> = jobs
            .into_iter()
            .filter_map(|(_, job)| take(job, &mut parked))
            .collect();
        let installs = core.counters().checkpoints_installed;
        let filled = core.counters().gap_entries_filled;
        // The budget runs from when the consensus requests are done (the first call).
        let mut clients_until = None;
        let mut clients = 1;
        let mut more_clients = || {
            let until = *clients_until.get_or_insert_with(|| Instant::now() + limits.client_budget);
            while clients < limits.clients && Instant::now() < until {
                let job = rx.try_take(Lane::Client)?;
                clients += 1;
                if let Some(job) = take(job, &mut parked) {
                    return Some(job);
                }
            }
            None
        };
        group_commit(
            &mut core,
            store.as_mut(),
            jobs,
            &mut more_clients,
            now,
            stats,
            verifier,
        )?;
        if let Some(reason) = core.halted() {
            return Err(ServerError::Halted(reason.to_string()));
        }
        if core.counters().checkpoints_installed > installs {
            if let Some(r) = core.install_record() {
                tracing::warn!(
                    "installed a certified checkpoint: resumed at index {} (round {}), the \
                     committed sequence {}..{} is a gap to fill; undecided own headers: {}",
                    r.base_index,
                    core.consensus().last_committed_round,
                    r.old_index,
                    r.base_index,
                    r.own
                        .iter()
                        .filter(|(_, _, v)| *v == sleepyseal_core::machine::OwnVerdict::Undecided)
                        .count()
                );
            }
        }
        if core.counters().gap_entries_filled > filled {
            log_fill(&core);
        }
        publish(stats, &core, committed, now);
        publish_store(stats, &store.stats());
        let gc = core.gc_round();
        if gc > pruned_at {
            verifier.cache().prune_below(gc);
            pruned_at = gc;
        }
        // Entries committed by this group release the long polls waiting for them.
        let committed = core.consensus().consensus_index;
        for job in parked.take_due(committed) {
            // Released outside any group commit: a held read must write nothing, or its reply
            // would leave before its write is durable.
            let (response, batch) = core.handle(now, job.request);
            assert!(batch.is_empty(), "a held long-poll read wrote to the store");
            job.reply.send(response);
        }
        stats
            .parked
            .store(parked.waiting.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// Says how far the fill of the latest install's gap went: done, or what is left (at most a
/// line per group commit that filled something; a fill step moves up to a thousand entries).
fn log_fill(core: &Core) {
    let Some(r) = core.install_record() else {
        return;
    };
    let filled = r.base_index - r.fill_next;
    if r.fill_next <= r.old_index {
        tracing::info!(
            "gap filled: committed entries {}..{} verified down the commit chain to this core's \
             own state ({filled} entries)",
            r.old_index,
            r.base_index
        );
    } else {
        tracing::debug!(
            "gap fill: {filled} of {} entries verified, {} to go",
            r.base_index - r.old_index,
            r.fill_next - r.old_index
        );
    }
}

/// How much one group commit takes in.
#[derive(Clone, Copy, Debug)]
pub(super) struct GroupLimits {
    /// Most consensus requests.
    pub(super) consensus: usize,
    /// Most client requests.
    pub(super) clients: usize,
    /// Client requests are taken into a group only while this much time has not passed since
    /// its consensus requests were handled: what client work can add to a consensus request's
    /// wait.
    pub(super) client_budget: Duration,
}

/// Handles `jobs` in order, then the client jobs `more_clients` hands over, writes their
/// batches in one synced commit, then releases the replies (never before: an acknowledgement
/// means durable).
fn group_commit(
    core: &mut Core,
    store: &mut dyn Store,
    jobs: Vec<CoreJob>,
    more_clients: &mut dyn FnMut() -> Option<CoreJob>,
    now: Millis,
    stats: &ServerStats,
    verifier: &Verifier,
) -> Result<(), StoreError> {
    let mut batches = Vec::with_capacity(jobs.len());
    let mut replies = Vec::with_capacity(jobs.len());
    let mut given = jobs.into_iter();
    while let Some(job) = given.next().or_else(&mut *more_clients) {
        let bundle_round = match &job.request.request.body {
            RequestBody::HeaderBundle { round, .. } => Some(*round),
            _ => None,
        };
        let (response, batch) = core.handle(now, job.request);
        // This core's votes are signatures of the certificates their headers become: verified
        // by construction, they need no check when those certificates come back.
        if let (Some(round), Response::Votes { votes, .. }) = (bundle_round, &response) {
            verifier.remember_own_votes(votes, round);
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        replies.push((job.reply, response));
    }
    if !batches.is_empty() {
        let started = Instant::now();
        store.commit(&batches)?;
        stats
            .store_commit_seconds
            .observe(started.elapsed().as_secs_f64());
    }
    stats.group_commits.fetch_add(1, Ordering::Relaxed);
    stats.group_requests.observe(replies.len() as f64);
    stats
        .grouped_requests
        .fetch_add(replies.len(), Ordering::Relaxed);
    for (reply, response) in replies {
        // Published once the group is durable, like the replies: the header is signed.
        publish_own_header(stats, &response, core);
        reply.send(response);
    }
    Ok(())
}

/// Copies the core's round, commit state, mempool and counters into `stats` after a group.
fn publish(stats: &ServerStats, core: &Core, committed_before: u64, now: Millis) {
    stats.round.store(core.round().0, Ordering::Relaxed);
    let consensus = core.consensus();
    stats
        .last_committed_round
        .store(consensus.last_committed_round.0, Ordering::Relaxed);
    stats
        .consensus_index
        .store(consensus.consensus_index, Ordering::Relaxed);
    stats
        .mempool
        .store(core.mempool_len() as u64, Ordering::Relaxed);
    let gap = core
        .install_record()
        .map_or(0, |r| r.fill_next.saturating_sub(r.old_index));
    stats.gap_entries.store(gap, Ordering::Relaxed);
    record_counters(stats, core, committed_before, now);
}

/// Copies the store's counters into `stats`.
fn publish_store(stats: &ServerStats, s: &sleepyseal_core::store::StoreStats) {
    stats
        .store_log_bytes
        .store(s.log_bytes_appended, Ordering::Relaxed);
    stats
        .store_segment_bytes
        .store(s.segment_bytes_appended, Ordering::Relaxed);
    stats
        .store_segment_padding_bytes
        .store(s.segment_padding_bytes, Ordering::Relaxed);
    stats.store_syncs.store(s.syncs, Ordering::Relaxed);
    stats
        .store_compaction_bytes
        .store(s.compaction_bytes_written, Ordering::Relaxed);
}

/// Copies the core's counters into `stats` and records the consensus latency of the entries
/// committed since index `before`.
fn record_counters(stats: &ServerStats, core: &Core, before: u64, now: Millis) {
    *stats.core_counters.lock().expect("not poisoned") = *core.counters();
    let after = core.consensus().consensus_index;
    if after > before {
        let new = core
            .committed_from(before, (after - before) as usize)
            .unwrap_or_default();
        for entry in new {
            let ms = now.0.saturating_sub(entry.created_at_ms);
            stats.consensus_latency_seconds.observe(ms as f64 / 1e3);
        }
    }
}

/// Most long polls (`ReadCommitted` with `wait_ms`) held at once; more are answered at once.
const MAX_PARKED: usize = 4_096;
/// Longest a long poll is held.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Long polls waiting for committed entries.
#[derive(Default)]
struct Parked {
    /// (deadline, from_index, job).
    waiting: Vec<(Instant, u64, CoreJob)>,
}

impl Parked {
    fn next_deadline(&self) -> Option<Instant> {
        self.waiting.iter().map(|(d, _, _)| *d).min()
    }

    /// Holds a `ReadCommitted` that would find nothing new yet and asked to wait; hands back
    /// every other job.
    fn park_or_keep(&mut self, job: CoreJob, committed: u64) -> Option<CoreJob> {
        if let RequestBody::ReadCommitted {
            from_index,
            wait_ms,
            ..
        } = &job.request.request.body
        {
            if *wait_ms > 0 && *from_index >= committed && self.waiting.len() < MAX_PARKED {
                let wait = Duration::from_millis(u64::from(*wait_ms)).min(MAX_WAIT);
                self.waiting.push((Instant::now() + wait, *from_index, job));
                return None;
            }
        }
        Some(job)
    }

    /// The held polls that can be answered: new entries exist, or their time is up.
    fn take_due(&mut self, committed: u64) -> Vec<CoreJob> {
        let now = Instant::now();
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(deadline, from, _)| *from < committed || *deadline <= now);
        self.waiting = waiting;
        due.into_iter().map(|(_, _, job)| job).collect()
    }
}
