//! The network side of the core server: connections admitted, each request read (bounded in size
//! and time), decoded, and handed to the pipeline through the [`Intake`]; the reply written back
//! as the chunks of its encoding, with its payload bytes counted where they leave.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use sleepyseal_core::codec::{Decode, Encode};
use sleepyseal_core::protocol::{Request, RequestBody, Response};
use sleepyseal_core::{CoreError, Verifier};
use tokio::sync::oneshot;

use super::admission::{Activity, Admission, Refusal, Rules};
use super::local::ReplyTo;
use super::queue::{FairSender, Lane, Pushed, Refused, Source};
use super::{queue_for_core, CoreJob, ServerStats, VerifyJob};
use crate::limits::NetLimits;
use crate::message::{read_message, ReadError};

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

/// Where a decoded request enters the pipeline: requests with signatures queue for the verify
/// thread; the others (polls, submissions, reads) need no signature check, so the verifier's
/// checks of them run at once and they queue straight for the core thread, one hand-off fewer.
#[derive(Clone)]
pub(super) struct Intake {
    pub(super) verify_tx: FairSender<VerifyJob>,
    pub(super) core_tx: FairSender<CoreJob>,
    pub(super) verifier: Arc<Verifier>,
    pub(super) stats: Arc<ServerStats>,
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
    /// Queues `request`, which arrived from `source` at `arrived`, where it goes next.
    fn enter(&self, request: Request, source: Source, arrived: Instant) -> Entered {
        let (reply, answer) = oneshot::channel();
        let reply = ReplyTo::Stream(reply);
        let stats = &self.stats;
        if carries_signatures(&request.body) {
            let job = VerifyJob {
                request,
                reply,
                source,
                arrived,
            };
            return match queue_for_verify(&self.verify_tx, source, job, stats) {
                true => Entered::Queued(answer),
                false => Entered::Stopped,
            };
        }
        let request = match self.verifier.verify(request) {
            Ok(request) => request,
            Err(error) => return Entered::Answered(Answer::of(&Response::Error(error))),
        };
        let job = CoreJob {
            request,
            reply,
            arrived,
        };
        match queue_for_core(&self.core_tx, source, job, stats) {
            true => Entered::Queued(answer),
            false => Entered::Stopped,
        }
    }
}

/// Queues `job` for the verify stage; a job refused or displaced by the full queue is answered
/// `Busy`. `false` once the verify thread is gone.
pub(super) fn queue_for_verify(
    verify_tx: &FairSender<VerifyJob>,
    source: Source,
    job: VerifyJob,
    stats: &ServerStats,
) -> bool {
    match verify_tx.push(Lane::Consensus, source, job) {
        Ok(Pushed::Queued) => {
            stats.verify_queue.fetch_add(1, Ordering::Relaxed);
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

/// Whether a request carries signatures for the verify stage (headers or certificates).
fn carries_signatures(body: &RequestBody) -> bool {
    matches!(
        body,
        RequestBody::HeaderBundle { .. }
            | RequestBody::CertBundle { .. }
            | RequestBody::Sync { .. }
    )
}

/// Closes an admitted connection when it is evicted to make room: at once if its handshake is
/// done, else when the handshake would complete (the task waiting for it gives up).
#[derive(Default)]
pub(super) struct Closer {
    connection: OnceLock<quinn::Connection>,
    evicted: AtomicBool,
    wake: tokio::sync::Notify,
}

/// Application close codes a core uses.
const CLOSE_EVICTED: u32 = 6;

impl Closer {
    fn evict(&self) {
        self.evicted.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        if let Some(connection) = self.connection.get() {
            connection.close(CLOSE_EVICTED.into(), b"evicted to make room");
        }
    }

    /// Records the connection once its handshake is done; `false` if it was evicted meanwhile.
    fn set(&self, connection: quinn::Connection) -> bool {
        let _ = self.connection.set(connection);
        !self.evicted.load(Ordering::SeqCst)
    }
}

/// Accepts connections by the rules of [`admission`](super::admission): address validation,
/// listed drivers, per-source limits, room made for a newcomer.
pub(super) async fn accept_loop(
    endpoint: quinn::Endpoint,
    intake: Intake,
    limits: NetLimits,
    stopping: Arc<AtomicBool>,
) {
    let stats = intake.stats.clone();
    let admission = Arc::new(Admission::<Arc<Closer>>::new(Rules {
        max_connections: limits.max_connections,
        per_address: limits.max_connections_per_address,
        per_prefix: limits.max_connections_per_prefix,
        connects_per_s: limits.max_connects_per_prefix_per_second,
        known: limits.known_drivers.clone(),
    }));
    while let Some(incoming) = endpoint.accept().await {
        if stopping.load(Ordering::SeqCst) {
            stats.refused_connection(Refusal::Stopping.label());
            incoming.refuse();
            continue;
        }
        if limits.validate_addresses && !incoming.remote_address_validated() {
            if incoming.may_retry() {
                stats.retries_sent.fetch_add(1, Ordering::Relaxed);
                let _ = incoming.retry();
                continue;
            }
            // A second retry is not allowed: the token it came back with was bad.
            incoming.ignore();
            continue;
        }
        let closer = Arc::new(Closer::default());
        let admitted = match admission.admit(incoming.remote_address().ip(), closer.clone()) {
            Ok((admitted, evicted)) => {
                if let Some(victim) = evicted {
                    stats.refused_connection(Refusal::Evicted.label());
                    victim.evict();
                }
                admitted
            }
            Err(reason) => {
                stats.refused_connection(reason.label());
                incoming.refuse();
                continue;
            }
        };
        stats
            .connections
            .store(admission.len() as u64, Ordering::SeqCst);
        let (intake, limits, stats, admission) = (
            intake.clone(),
            limits.clone(),
            stats.clone(),
            admission.clone(),
        );
        tokio::spawn(async move {
            if let Some(connection) = handshake(incoming, &closer, &limits, &stats).await {
                let clock = Clock(admission.clone());
                serve_connection(connection, admitted.activity, clock, intake, limits).await;
            }
            admission.leave(admitted.id);
            stats
                .connections
                .store(admission.len() as u64, Ordering::SeqCst);
        });
    }
}

/// The connection once its handshake is done, within the handshake timeout and unless evicted
/// meanwhile.
async fn handshake(
    incoming: quinn::Incoming,
    closer: &Closer,
    limits: &NetLimits,
    stats: &ServerStats,
) -> Option<quinn::Connection> {
    let connecting = incoming.accept().ok()?;
    let connection = tokio::select! {
        done = tokio::time::timeout(limits.handshake_timeout, connecting) => match done {
            Ok(Ok(connection)) => connection,
            Ok(Err(_)) => return None,
            Err(_) => {
                stats.refused_connection(Refusal::HandshakeTimeout.label());
                return None;
            }
        },
        _ = closer.wake.notified() => return None,
    };
    if !closer.set(connection.clone()) {
        connection.close(CLOSE_EVICTED.into(), b"evicted to make room");
        return None;
    }
    Some(connection)
}

/// The admission table's clock, for a connection's [`Activity`].
#[derive(Clone)]
struct Clock(Arc<Admission<Arc<Closer>>>);

/// A token bucket of request streams: `rate` per second, holding at most a second's worth.
struct RequestRate {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl RequestRate {
    fn new(rate: u32) -> RequestRate {
        let rate = f64::from(rate.max(1));
        RequestRate {
            rate,
            tokens: rate,
            at: Instant::now(),
        }
    }

    /// Takes a token: `None` if one was there, else how long until one is.
    fn take(&mut self) -> Option<std::time::Duration> {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return None;
        }
        Some(std::time::Duration::from_secs_f64(
            (1.0 - self.tokens) / self.rate,
        ))
    }
}

async fn serve_connection(
    connection: quinn::Connection,
    activity: Arc<Activity>,
    clock: Clock,
    intake: Intake,
    limits: NetLimits,
) {
    let source = Source(connection.stable_id() as u64);
    let mut rate = RequestRate::new(limits.max_requests_per_second);
    // Streams beyond `max_streams_per_connection` are held back by QUIC flow control itself.
    loop {
        if let Some(wait) = rate.take() {
            // Not accepting holds the peer's next streams in QUIC flow control.
            intake
                .stats
                .rate_limited_streams
                .fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
            rate.take();
        }
        let Ok((send, recv)) = connection.accept_bi().await else {
            break;
        };
        let (intake, limits, activity) = (intake.clone(), limits.clone(), activity.clone());
        let clock = clock.clone();
        tokio::spawn(async move {
            if serve_stream(send, recv, source, intake, limits).await {
                activity.answered(clock.0.now_ms());
            }
        });
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    source: Source,
    intake: Intake,
    limits: NetLimits,
) -> bool {
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
            return false;
        }
        // Reset, connection lost, or too slow (half-open): drop the stream.
        Ok(Err(_)) | Err(_) => {
            let _ = recv.stop(quinn::VarInt::from_u32(3));
            let _ = send.reset(quinn::VarInt::from_u32(3));
            return false;
        }
    };
    let mut kind = "undecoded";
    let answer = match Request::from_bytes(bytes) {
        Err(e) => {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            Answer::of(&Response::Error(CoreError::Decode(e)))
        }
        Ok(request) => {
            kind = request.body.kind();
            stats.payload_received(kind, request.body.payload_bytes());
            match intake.enter(request, source, Instant::now()) {
                Entered::Queued(answer) => match answer.await {
                    Ok(answer) => answer,
                    // The core stopped before answering (shutdown or store failure).
                    Err(_) => {
                        let _ = send.reset(quinn::VarInt::from_u32(4));
                        return false;
                    }
                },
                Entered::Answered(answer) => answer,
                Entered::Stopped => {
                    let _ = send.reset(quinn::VarInt::from_u32(4));
                    return false;
                }
            }
        }
    };
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let Answer {
        mut chunks,
        payload_bytes,
    } = answer;
    match tokio::time::timeout(
        limits.reply_write_timeout,
        send.write_all_chunks(&mut chunks),
    )
    .await
    {
        Ok(Ok(_)) => {
            stats.payload_sent(kind, payload_bytes);
            send.finish().is_ok()
        }
        Ok(Err(_)) => false,
        // A reader too slow (or never reading): the reply is dropped.
        Err(_) => {
            let _ = send.reset(quinn::VarInt::from_u32(5));
            false
        }
    }
}
