//! The core server: a QUIC endpoint that only answers.
//!
//! ```text
//! stream task (tokio)   read the request (bounded size, bounded time), decode zero-copy
//!   ├─► verify thread   requests with signatures: drains every queued one, verifies their
//!   │                   signatures as one batch (inline when small, else on a rayon pool),
//!   │                   skipping verdicts already cached
//!   └───► core thread   the only owner of `Core` (requests without signatures come straight
//!                       here): handles every queued request, writes all their changes with one
//!                       synced store commit (group commit), then releases the replies
//! ```
//! Every queue is bounded and fair ([`queue`]): consensus requests and client requests wait in
//! separate lanes, each taken up to its own quota per group, and within a lane the connections
//! (and the in-process link) take turns; a full lane answers `Busy` at once to whichever source
//! holds the most of it. A store failure stops the core
//! (crash-stop): replies of the failed group are never sent, and a restart recovers from disk.
//!
//! A driver in the same process reaches the core through [`CoreServer::local_link`] ([`local`]):
//! the same verify queue, verification, core thread and group commit, without the network hop.
//!
//! Layout: this file holds the settings, the server's life cycle and the verify stage;
//! `intake` the network side (connections, streams, reading and answering requests),
//! `core_thread` the core thread and its group commit, `local` the in-process link, `stats` the
//! counters and their metrics.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sleepyseal_core::protocol::{Request, RequestBody, Response};
use sleepyseal_core::store::StoreError;
use sleepyseal_core::verify::CheckedRequest;
use sleepyseal_core::{Core, CoreError, Millis, Store, Verified, Verifier};

use crate::limits::NetLimits;
use crate::wan::Wan;

mod admission;
mod core_thread;
mod intake;
mod local;
mod queue;
mod stats;
pub use local::{LocalLink, LocalLinkError, OwnHeader};
pub use stats::ServerStats;

use core_thread::spawn_core_thread;
use intake::{accept_loop, Answer, Intake};
use local::{QueueSlot, ReplyTo};
use queue::{fair_queue, FairReceiver, FairSender, Lane, Pushed, Refused, Source};

/// Settings of the pipeline behind the endpoint.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Transport limits.
    pub limits: NetLimits,
    /// Threads of the verify pool.
    pub verify_threads: usize,
    /// Most requests verified together in one batch.
    pub verify_max_requests: usize,
    /// Most consensus requests (what drivers send) handled in one group commit.
    pub group_commit_max: usize,
    /// Most client requests (`Submit`, `ReadCommitted`) handled in one group commit, on top of
    /// the consensus requests.
    pub group_client_max: usize,
    /// Client requests join a group only while this long has not passed since its consensus
    /// requests were handled (at least one joins each group): however many clients queue, and
    /// however costly their reads, a consensus request waits for at most about this much
    /// client work.
    pub group_client_budget: Duration,
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
            group_client_max: 128,
            group_client_budget: Duration::from_millis(5),
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
    /// The core found it must not go on (its store is older than what its key signed): it
    /// stopped, and answers nothing more.
    #[error("core stopped: {0}")]
    Halted(String),
}

struct VerifyJob {
    request: Request,
    reply: ReplyTo,
    /// Where it came from: the source whose turn it takes in the core queue too.
    source: Source,
    /// When it arrived, for [`ServerStats::queue_waited`].
    arrived: Instant,
}

struct CoreJob {
    request: Verified<CheckedRequest>,
    reply: ReplyTo,
    arrived: Instant,
}

/// The lane of a request: client requests apart from what drivers send.
fn lane_of(body: &RequestBody) -> Lane {
    match body {
        RequestBody::Submit { .. } | RequestBody::ReadCommitted { .. } => Lane::Client,
        _ => Lane::Consensus,
    }
}

/// Queues `job` for the core thread in its lane; a job refused or displaced by a full lane is
/// answered `Busy`. `false` once the core thread is gone.
fn queue_for_core(
    core_tx: &FairSender<CoreJob>,
    source: Source,
    job: CoreJob,
    stats: &ServerStats,
) -> bool {
    let lane = lane_of(&job.request.request.body);
    match core_tx.push(lane, source, job) {
        Ok(Pushed::Queued) => {
            stats.core_queue.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Pushed::Displaced(other)) => {
            stats.busy.fetch_add(1, Ordering::Relaxed);
            other.reply.send(Response::Error(CoreError::Busy));
        }
        Err(Refused::Full(job)) => {
            stats.busy.fetch_add(1, Ordering::Relaxed);
            job.reply.send(Response::Error(CoreError::Busy));
        }
        Err(Refused::Closed(_)) => return false,
    }
    true
}

/// A running core server.
pub struct CoreServer {
    endpoint: quinn::Endpoint,
    stats: Arc<ServerStats>,
    verify_tx: Option<FairSender<VerifyJob>>,
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
        // The verify queue holds only requests with signatures, all of them from drivers.
        let (verify_tx, verify_rx) = fair_queue::<VerifyJob>([options.limits.verify_queue, 1]);
        let (core_tx, core_rx) =
            fair_queue::<CoreJob>([options.limits.core_queue, options.limits.client_queue]);
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
            core_thread::GroupLimits {
                consensus: options.group_commit_max,
                clients: options.group_client_max,
                client_budget: options.group_client_budget,
            },
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

fn verify_loop(
    rx: FairReceiver<VerifyJob>,
    core_tx: FairSender<CoreJob>,
    verifier: &Verifier,
    pool: &rayon::ThreadPool,
    max_requests: usize,
    stats: &ServerStats,
) {
    while let Some(jobs) = rx.take([max_requests, 0], None) {
        let jobs: Vec<VerifyJob> = jobs.into_iter().map(|(_, job)| job).collect();
        stats.verify_batches.fetch_add(1, Ordering::Relaxed);
        stats
            .verify_queue
            .fetch_sub(jobs.len() as u64, Ordering::Relaxed);
        stats.verify_batch_requests.observe(jobs.len() as f64);
        let (requests, replies): (Vec<Request>, Vec<_>) = jobs
            .into_iter()
            .map(|j| (j.request, (j.reply, j.source, j.arrived)))
            .unzip();
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
        for (result, (reply, source, arrived)) in results.into_iter().zip(replies) {
            match result {
                Ok(request) => {
                    let job = CoreJob {
                        request,
                        reply,
                        arrived,
                    };
                    if !queue_for_core(&core_tx, source, job, stats) {
                        return;
                    }
                }
                Err(error) => reply.send(Response::Error(error)),
            }
        }
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
