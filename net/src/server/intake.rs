//! The network side of the core server: connections admitted, each request read (bounded in size
//! and time), decoded, and handed to the pipeline through the [`Intake`]; the reply written back
//! as the chunks of its encoding, with its payload bytes counted where they leave.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;

use bytes::Bytes;
use sleepyseal_core::codec::{Decode, Encode};
use sleepyseal_core::protocol::{Request, RequestBody, Response};
use sleepyseal_core::{CoreError, Verifier};
use tokio::sync::oneshot;

use super::local::ReplyTo;
use super::{CoreJob, ServerStats, VerifyJob};
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
    pub(super) verify_tx: SyncSender<VerifyJob>,
    pub(super) core_tx: SyncSender<CoreJob>,
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

pub(super) async fn accept_loop(
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
    let mut kind = "undecoded";
    let answer = match Request::from_bytes(bytes) {
        Err(e) => {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            Answer::of(&Response::Error(CoreError::Decode(e)))
        }
        Ok(request) => {
            kind = request.body.kind();
            stats.payload_received(kind, request.body.payload_bytes());
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
        stats.payload_sent(kind, payload_bytes);
        let _ = send.finish();
    }
}
