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
//! Every queue is bounded; a full queue answers `Busy` at once. A store failure stops the core
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
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sleepyseal_core::protocol::{Request, Response};
use sleepyseal_core::store::StoreError;
use sleepyseal_core::verify::CheckedRequest;
use sleepyseal_core::{Core, CoreError, Millis, Store, Verified, Verifier};

use crate::limits::NetLimits;
use crate::wan::Wan;

mod core_thread;
mod intake;
mod local;
mod stats;
pub use local::{LocalLink, LocalLinkError, OwnHeader};
pub use stats::ServerStats;

use core_thread::spawn_core_thread;
use intake::{accept_loop, Answer, Intake};
use local::{QueueSlot, ReplyTo};

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
    /// The core found it must not go on (its store is older than what its key signed): it
    /// stopped, and answers nothing more.
    #[error("core stopped: {0}")]
    Halted(String),
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

/// Blocks for one job, then takes every job already queued, up to `max` in all. `None` once every
/// sender is gone.
pub(super) fn next_batch<T>(rx: &Receiver<T>, max: usize) -> Option<Vec<T>> {
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

/// Milliseconds since the Unix epoch: the core's clock (timers and header timestamps).
pub fn wall_clock() -> Millis {
    Millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default(),
    )
}
