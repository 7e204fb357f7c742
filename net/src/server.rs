//! The core server: a QUIC endpoint that only answers.
//!
//! ```text
//! stream task (tokio)   read the request (bounded size, bounded time), decode zero-copy
//!   └─► verify thread   drains every queued request, verifies all their signatures as one batch
//!                       on a rayon pool (skipping cached certificates)
//!         └─► core thread  the only owner of `Core`: handles every queued request, writes all
//!                          their changes with one synced store commit (group commit), then
//!                          releases the replies
//! ```
//! Every queue is bounded; a full queue answers `Busy` at once. A store failure stops the core
//! (crash-stop): replies of the failed group are never sent, and a restart recovers from disk.
//!
//! A driver in the same process reaches the core through [`CoreServer::local_link`] ([`local`]):
//! the same verify queue, verification, core thread and group commit, without the network hop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sleepyseal_core::codec::{Decode, Encode};
use sleepyseal_core::protocol::{Request, RequestBody, Response};
use sleepyseal_core::store::StoreError;
use sleepyseal_core::verify::CheckedRequest;
use sleepyseal_core::{Core, CoreError, Millis, Store, Verified, Verifier};
use tokio::sync::oneshot;

use crate::limits::NetLimits;
use crate::message::{read_message, ReadError};
use crate::wan::Wan;

mod local;
mod stats;
pub use local::{LocalLink, LocalLinkError, OwnHeader};
pub use stats::ServerStats;

use local::{publish_own_header, QueueSlot, ReplyTo};

/// Settings of the pipeline behind the endpoint.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Transport limits.
    pub limits: NetLimits,
    /// Threads of the verify pool.
    pub verify_threads: usize,
    /// Most requests verified together in one batch.
    pub verify_max_requests: usize,
    /// Most requests handled in one group commit.
    pub group_commit_max: usize,
    /// WAN emulation of the endpoint's outgoing datagrams (none: plain sends).
    pub wan: Option<Wan>,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            limits: NetLimits::default(),
            verify_threads: 2,
            verify_max_requests: 256,
            group_commit_max: 512,
            wan: None,
        }
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The UDP socket could not be bound.
    #[error("bind {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The verify pool could not be built.
    #[error("verify pool: {0}")]
    Pool(String),
    /// The store failed; the core stopped.
    #[error("store failed, core stopped: {0}")]
    Store(#[from] StoreError),
    /// An internal invariant of the core broke (a bug): the core stopped without writing
    /// anything more. Its store holds only completed writes; a restart recovers from it.
    #[error("core stopped on a broken invariant (a bug; restarting recovers from the store): {0}")]
    CorePanicked(String),
}

/// A reply on its way back to the stream that asked: its encoding as chunks, and the payload
/// bytes in it (counted where they go out to the network).
pub(super) struct Answer {
    chunks: Vec<Bytes>,
    payload_bytes: usize,
}

impl Answer {
    pub(super) fn of(response: &Response) -> Answer {
        Answer {
            chunks: response.to_chunks(),
            payload_bytes: response.payload_bytes(),
        }
    }
}

struct VerifyJob {
    request: Request,
    reply: ReplyTo,
}

struct CoreJob {
    request: Verified<CheckedRequest>,
    reply: ReplyTo,
}

/// A running core server.
pub struct CoreServer {
    endpoint: quinn::Endpoint,
    stats: Arc<ServerStats>,
    verify_tx: Option<SyncSender<VerifyJob>>,
    /// The verify queue as [`LocalLink`]s reach it (emptied at shutdown).
    local: QueueSlot,
    /// Transport limits (the link checks the request size against them).
    limits: crate::limits::NetLimits,
    verify_thread: Option<JoinHandle<()>>,
    core_thread: Option<JoinHandle<Result<(), ServerError>>>,
    stopping: Arc<AtomicBool>,
}

impl CoreServer {
    /// Starts serving `core` (recovered from `store`) on `address`. Must be called inside a tokio
    /// runtime.
    pub fn start(
        address: SocketAddr,
        quic: quinn::ServerConfig,
        core: Core,
        store: Box<dyn Store>,
        verifier: Verifier,
        options: ServerOptions,
    ) -> Result<CoreServer, ServerError> {
        let endpoint =
            crate::limits::endpoint(address, &options.limits, Some(quic), options.wan.as_ref())
                .map_err(|source| ServerError::Bind { address, source })?;
        let stats = Arc::new(ServerStats::default());
        let verifier = Arc::new(verifier);
        let (verify_tx, verify_rx) = mpsc::sync_channel::<VerifyJob>(options.limits.verify_queue);
        let (core_tx, core_rx) = mpsc::sync_channel::<CoreJob>(options.limits.core_queue);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.verify_threads.max(1))
            .thread_name(|i| format!("verify-{i}"))
            .build()
            .map_err(|e| ServerError::Pool(e.to_string()))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let intake = Intake {
            verify_tx: verify_tx.clone(),
            core_tx: core_tx.clone(),
            verifier: verifier.clone(),
            stats: stats.clone(),
        };
        let verify_thread = {
            let (stats, verifier, max) =
                (stats.clone(), verifier.clone(), options.verify_max_requests);
            std::thread::Builder::new()
                .name("verify".into())
                .spawn(move || verify_loop(verify_rx, core_tx, &verifier, &pool, max, &stats))
                .expect("spawn verify thread")
        };
        let core_thread = spawn_core_thread(
            core_rx,
            core,
            store,
            options.group_commit_max,
            stats.clone(),
            verifier.clone(),
            endpoint.clone(),
        );
        tokio::spawn(accept_loop(
            endpoint.clone(),
            intake,
            options.limits.clone(),
            stopping.clone(),
        ));
        Ok(CoreServer {
            endpoint,
            stats,
            local: Arc::new(std::sync::Mutex::new(Some(verify_tx.clone()))),
            limits: options.limits.clone(),
            verify_tx: Some(verify_tx),
            verify_thread: Some(verify_thread),
            core_thread: Some(core_thread),
            stopping,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Live counters.
    pub fn stats(&self) -> &Arc<ServerStats> {
        &self.stats
    }

    /// A link that feeds requests into this server's verify queue without a network hop, for a
    /// driver in the same process (see [`LocalLink`]).
    pub fn local_link(&self) -> LocalLink {
        LocalLink::new(
            self.local.clone(),
            self.stats.clone(),
            self.limits.max_request_bytes,
        )
    }

    /// Whether the core thread stopped (store failure).
    pub fn core_stopped(&self) -> bool {
        self.core_thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops accepting, lets queued requests finish and their writes reach the store, and waits
    /// for the core thread. The store is consistent afterwards.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        self.stopping.store(true, Ordering::SeqCst);
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"shutting down");
        self.verify_tx = None;
        *self.local.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let verify = self.verify_thread.take();
        let core = self.core_thread.take();
        tokio::task::spawn_blocking(move || {
            if let Some(v) = verify {
                let _ = v.join();
            }
            match core {
                Some(c) => c.join().unwrap_or(Ok(())),
                None => Ok(()),
            }
        })
        .await
        .unwrap_or(Ok(()))?;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        Ok(())
    }
}

/// Where a decoded request enters the pipeline: requests with signatures queue for the verify
/// thread; the others (polls, submissions, reads) need no signature check, so the verifier's
/// checks of them run at once and they queue straight for the core thread, one hand-off fewer.
#[derive(Clone)]
struct Intake {
    verify_tx: SyncSender<VerifyJob>,
    core_tx: SyncSender<CoreJob>,
    verifier: Arc<Verifier>,
    stats: Arc<ServerStats>,
}

/// What became of a request handed to the [`Intake`].
enum Entered {
    /// Queued: the answer comes on this channel.
    Queued(oneshot::Receiver<Answer>),
    /// Answered at once (refused, or `Busy`).
    Answered(Answer),
    /// The pipeline stopped (shutdown or store failure).
    Stopped,
}

impl Intake {
    fn enter(&self, request: Request) -> Entered {
        let (reply, answer) = oneshot::channel();
        let stats = &self.stats;
        if carries_signatures(&request.body) {
            stats.verify_queue.fetch_add(1, Ordering::Relaxed);
            let job = VerifyJob {
                request,
                reply: ReplyTo::Stream(reply),
            };
            return match self.verify_tx.try_send(job) {
                Ok(()) => Entered::Queued(answer),
                Err(e) => {
                    stats.verify_queue.fetch_sub(1, Ordering::Relaxed);
                    refused(e, stats)
                }
            };
        }
        let request = match self.verifier.verify(request) {
            Ok(request) => request,
            Err(error) => return Entered::Answered(Answer::of(&Response::Error(error))),
        };
        stats.core_queue.fetch_add(1, Ordering::Relaxed);
        let job = CoreJob {
            request,
            reply: ReplyTo::Stream(reply),
        };
        match self.core_tx.try_send(job) {
            Ok(()) => Entered::Queued(answer),
            Err(e) => {
                stats.core_queue.fetch_sub(1, Ordering::Relaxed);
                refused(e, stats)
            }
        }
    }
}

/// A request a full queue refuses gets `Busy`; a stopped pipeline, nothing.
fn refused<T>(error: TrySendError<T>, stats: &ServerStats) -> Entered {
    match error {
        TrySendError::Full(_) => {
            stats.busy.fetch_add(1, Ordering::Relaxed);
            Entered::Answered(Answer::of(&Response::Error(CoreError::Busy)))
        }
        TrySendError::Disconnected(_) => Entered::Stopped,
    }
}

/// Whether a request carries signatures for the verify stage (headers or certificates).
fn carries_signatures(body: &RequestBody) -> bool {
    matches!(
        body,
        RequestBody::HeaderBundle { .. }
            | RequestBody::CertBundle { .. }
            | RequestBody::Sync { .. }
    )
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    intake: Intake,
    limits: NetLimits,
    stopping: Arc<AtomicBool>,
) {
    let stats = intake.stats.clone();
    while let Some(incoming) = endpoint.accept().await {
        if stopping.load(Ordering::SeqCst) {
            incoming.refuse();
            continue;
        }
        if stats.connections.load(Ordering::SeqCst) >= limits.max_connections as u64 {
            stats.refused_connections.fetch_add(1, Ordering::Relaxed);
            incoming.refuse();
            continue;
        }
        stats.connections.fetch_add(1, Ordering::SeqCst);
        let (intake, limits, stats) = (intake.clone(), limits.clone(), stats.clone());
        tokio::spawn(async move {
            if let Ok(connection) = incoming.await {
                serve_connection(connection, intake, limits).await;
            }
            stats.connections.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

async fn serve_connection(connection: quinn::Connection, intake: Intake, limits: NetLimits) {
    // Streams beyond `max_streams_per_connection` are held back by QUIC flow control itself.
    while let Ok((send, recv)) = connection.accept_bi().await {
        let (intake, limits) = (intake.clone(), limits.clone());
        tokio::spawn(serve_stream(send, recv, intake, limits));
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    intake: Intake,
    limits: NetLimits,
) {
    let stats = &intake.stats;
    let read = tokio::time::timeout(
        limits.request_read_timeout,
        read_message(&mut recv, limits.max_request_bytes),
    )
    .await;
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(ReadError::TooLong(_))) => {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            let _ = recv.stop(quinn::VarInt::from_u32(2));
            let _ = send.reset(quinn::VarInt::from_u32(2));
            return;
        }
        // Reset, connection lost, or too slow (half-open): drop the stream.
        Ok(Err(_)) | Err(_) => {
            let _ = recv.stop(quinn::VarInt::from_u32(3));
            let _ = send.reset(quinn::VarInt::from_u32(3));
            return;
        }
    };
    let answer = match Request::from_bytes(bytes) {
        Err(e) => {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            Answer::of(&Response::Error(CoreError::Decode(e)))
        }
        Ok(request) => {
            stats
                .payload_bytes_received
                .fetch_add(request.body.payload_bytes() as u64, Ordering::Relaxed);
            match intake.enter(request) {
                Entered::Queued(answer) => match answer.await {
                    Ok(answer) => answer,
                    // The core stopped before answering (shutdown or store failure).
                    Err(_) => {
                        let _ = send.reset(quinn::VarInt::from_u32(4));
                        return;
                    }
                },
                Entered::Answered(answer) => answer,
                Entered::Stopped => {
                    let _ = send.reset(quinn::VarInt::from_u32(4));
                    return;
                }
            }
        }
    };
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let Answer {
        mut chunks,
        payload_bytes,
    } = answer;
    if send.write_all_chunks(&mut chunks).await.is_ok() {
        stats
            .payload_bytes_sent
            .fetch_add(payload_bytes as u64, Ordering::Relaxed);
        let _ = send.finish();
    }
}

/// Blocks for one job, then takes every job already queued, up to `max` in all. `None` once every
/// sender is gone.
fn next_batch<T>(rx: &Receiver<T>, max: usize) -> Option<Vec<T>> {
    let first = rx.recv().ok()?;
    let mut jobs = vec![first];
    while jobs.len() < max {
        match rx.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    Some(jobs)
}

fn verify_loop(
    rx: Receiver<VerifyJob>,
    core_tx: SyncSender<CoreJob>,
    verifier: &Verifier,
    pool: &rayon::ThreadPool,
    max_requests: usize,
    stats: &ServerStats,
) {
    while let Some(jobs) = next_batch(&rx, max_requests) {
        stats.verify_batches.fetch_add(1, Ordering::Relaxed);
        stats
            .verify_queue
            .fetch_sub(jobs.len() as u64, Ordering::Relaxed);
        stats.verify_batch_requests.observe(jobs.len() as f64);
        let (requests, replies): (Vec<Request>, Vec<ReplyTo>) =
            jobs.into_iter().map(|j| (j.request, j.reply)).unzip();
        let started = Instant::now();
        // A batch that fits one chunk is checked on this thread: handing it to the pool costs a
        // wake-up and a switch for nothing to split.
        let signatures: usize = requests.iter().map(|r| verifier.signatures_in(r)).sum();
        let results = if signatures <= verifier.config().batch_size {
            verifier.verify_many(requests)
        } else {
            pool.install(|| verifier.verify_many(requests))
        };
        stats
            .verify_seconds
            .observe(started.elapsed().as_secs_f64());
        for (result, reply) in results.into_iter().zip(replies) {
            match result {
                Ok(request) => match core_tx.try_send(CoreJob { request, reply }) {
                    Ok(()) => {
                        stats.core_queue.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TrySendError::Full(job)) => {
                        stats.busy.fetch_add(1, Ordering::Relaxed);
                        job.reply.send(Response::Error(CoreError::Busy));
                    }
                    Err(TrySendError::Disconnected(_)) => return,
                },
                Err(error) => reply.send(Response::Error(error)),
            }
        }
    }
}

/// Starts the `core` thread running [`core_loop`]. A store failure or a panic on it closes the
/// endpoint (clients see the core stop instead of hanging) and is its result.
fn spawn_core_thread(
    rx: Receiver<CoreJob>,
    core: Core,
    store: Box<dyn Store>,
    max_group: usize,
    stats: Arc<ServerStats>,
    verifier: Arc<Verifier>,
    endpoint: quinn::Endpoint,
) -> std::thread::JoinHandle<Result<(), ServerError>> {
    std::thread::Builder::new()
        .name("core".into())
        .spawn(move || {
            let run = std::panic::AssertUnwindSafe(|| {
                core_loop(rx, core, store, max_group, &stats, &verifier).map_err(ServerError::from)
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

/// The core thread: takes the queued jobs, handles them as one group commit, releases their
/// replies once the group is durable, then answers the long polls that became due.
fn core_loop(
    rx: Receiver<CoreJob>,
    mut core: Core,
    mut store: Box<dyn Store>,
    max_group: usize,
    stats: &ServerStats,
    verifier: &Verifier,
) -> Result<(), StoreError> {
    let mut pruned_at = core.gc_round();
    let mut parked = Parked::default();
    while let Some(jobs) = next_jobs(&rx, max_group, parked.next_deadline()) {
        stats
            .core_queue
            .fetch_sub(jobs.len() as u64, Ordering::Relaxed);
        let now = wall_clock();
        let committed = core.consensus().consensus_index;
        let jobs: Vec<CoreJob> = jobs
            .into_iter()
            .filter_map(|job| parked.park_or_keep(job, committed))
            .collect();
        group_commit(&mut core, store.as_mut(), jobs, now, stats, verifier)?;
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

/// The next group of jobs: waits for at least one, or until `deadline` (the next held long poll
/// due) with none. `None` once every sender is gone.
fn next_jobs(
    rx: &Receiver<CoreJob>,
    max_group: usize,
    deadline: Option<Instant>,
) -> Option<Vec<CoreJob>> {
    let Some(deadline) = deadline else {
        return next_batch(rx, max_group);
    };
    let wait = deadline.saturating_duration_since(Instant::now());
    match rx.recv_timeout(wait) {
        Ok(first) => {
            let mut jobs = vec![first];
            jobs.extend(rx.try_iter().take(max_group.saturating_sub(1)));
            Some(jobs)
        }
        Err(RecvTimeoutError::Timeout) => Some(Vec::new()),
        Err(RecvTimeoutError::Disconnected) => None,
    }
}

/// Handles `jobs` in order, writes their batches in one synced commit, then releases the replies
/// (never before: an acknowledgement means durable).
fn group_commit(
    core: &mut Core,
    store: &mut dyn Store,
    jobs: Vec<CoreJob>,
    now: Millis,
    stats: &ServerStats,
    verifier: &Verifier,
) -> Result<(), StoreError> {
    let mut batches = Vec::with_capacity(jobs.len());
    let mut replies = Vec::with_capacity(jobs.len());
    for job in jobs {
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
        publish_own_header(stats, &response);
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

/// Milliseconds since the Unix epoch: the core's clock (timers and header timestamps).
pub fn wall_clock() -> Millis {
    Millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default(),
    )
}
