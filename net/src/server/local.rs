//! The in-process link to a core server (PROTOCOL.md §7, "Who carries payloads"): a driver
//! beside its home core, in the same process, reaches it without a network hop.
//!
//! A request on the link goes where a QUIC request goes once decoded: into the same bounded
//! verify queue (a full queue answers `Busy` at once), through the same verification (the
//! driver holds no key), to the core thread and its group commit. Only the transport is
//! skipped, and with it two encodings: the request is handed over as the driver built it, and
//! the reply comes back as the core thread made it, never encoded (the QUIC path encodes it
//! into chunks for the stream). The decoder's count and size limits, which a request on the
//! link never meets, are checked here instead.
//!
//! The link never keeps the server alive: it reaches the verify queue through a slot that
//! [`CoreServer::shutdown`](super::CoreServer::shutdown) empties, after which every request
//! fails with [`LocalLinkError::Stopped`].

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use sleepyseal_core::limits::{
    MAX_CERTS_PER_REQUEST, MAX_COMMITTED_PER_READ, MAX_COMMITTEE_SIZE, MAX_DIGESTS_PER_MESSAGE,
    MAX_HEADERS_PER_REQUEST, MAX_PAYLOADS_PER_REQUEST, MAX_TRANSACTIONS_PER_SUBMIT,
    MAX_TRANSACTION_BYTES,
};
use sleepyseal_core::protocol::{Request, RequestBody, Response};
use sleepyseal_core::{Core, Payload, SignedHeader};
use tokio::sync::{oneshot, watch};

use super::intake::queue_for_verify;
use super::queue::{FairSender, Source};
use super::{Answer, ServerStats, VerifyJob};

/// Where the reply to a request goes: encoded for a QUIC stream, or as is over the link.
pub(super) enum ReplyTo {
    /// A QUIC stream: the chunks of the encoded response, with its payload bytes counted.
    Stream(oneshot::Sender<Answer>),
    /// The in-process link: the response itself.
    Local(oneshot::Sender<Response>),
}

impl ReplyTo {
    /// Sends `response` (a requester that went away is no error).
    pub(super) fn send(self, response: Response) {
        match self {
            ReplyTo::Stream(tx) => {
                let _ = tx.send(Answer::of(&response));
            }
            ReplyTo::Local(tx) => {
                let _ = tx.send(response);
            }
        }
    }
}

/// The verify queue as the link sees it: emptied when the server shuts down.
pub(super) type QueueSlot = Arc<Mutex<Option<FairSender<VerifyJob>>>>;

/// Why a request on the link got no response.
#[derive(Debug, thiserror::Error)]
pub enum LocalLinkError {
    /// The server shut down or its core stopped (before or while the request was handled).
    #[error("the core server stopped")]
    Stopped,
    /// The request exceeds a limit the decoder of a QUIC request enforces.
    #[error("request over the limit: {0}")]
    OverLimit(String),
}

/// A handle that feeds requests into a running core server without a network hop; see the
/// module doc. Cheap to clone.
#[derive(Clone)]
pub struct LocalLink {
    queue: QueueSlot,
    stats: Arc<ServerStats>,
    max_request_bytes: usize,
}

impl std::fmt::Debug for LocalLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLink").finish_non_exhaustive()
    }
}

impl LocalLink {
    pub(super) fn new(
        queue: QueueSlot,
        stats: Arc<ServerStats>,
        max_request_bytes: usize,
    ) -> LocalLink {
        LocalLink {
            queue,
            stats,
            max_request_bytes,
        }
    }

    /// Sends `request` through the server's verify queue and core thread; the response, or
    /// `Busy` at once when the verify queue is full.
    pub async fn request(&self, request: Request) -> Result<Response, LocalLinkError> {
        check_limits(&request.body, self.max_request_bytes)?;
        let (reply, answer) = oneshot::channel();
        let job = VerifyJob {
            request,
            reply: ReplyTo::Local(reply),
            source: Source::LOCAL,
            arrived: Instant::now(),
        };
        // A holder that panicked cannot have left the slot half-written: ignore the poison, so
        // that a panicking driver never stops the core.
        let queued = match self
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            // A full queue answers `Busy` through the reply channel, at once.
            Some(queue) => queue_for_verify(queue, Source::LOCAL, job, &self.stats),
            None => false,
        };
        if !queued {
            return Err(LocalLinkError::Stopped);
        }
        let response = answer.await.map_err(|_| LocalLinkError::Stopped)?;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        Ok(response)
    }

    /// The newest own header the core built, with its payload, as soon as the group commit
    /// that built it is durable, whichever request built it: a driver in the same process
    /// carries it at once instead of polling for it (a request from another driver that makes
    /// the core advance gets the new header in its reply, and only that driver).
    pub fn own_headers(&self) -> watch::Receiver<Option<OwnHeader>> {
        self.stats.own_headers.subscribe()
    }
}

/// A core's own header as it built it, with its payload (none if empty).
#[derive(Clone, Debug)]
pub struct OwnHeader {
    /// The header, signed by the core.
    pub header: SignedHeader,
    /// Its payload (`None` for an empty payload, which no core stores).
    pub payload: Option<Payload>,
}

/// Publishes the own header a reply shows if it is newer than the one published, with its
/// payload (from the reply if it carries it, else as `core` stores it): the driver in the
/// process then has each new header of its core as soon as it is durable, whichever request
/// made the core build it.
pub(super) fn publish_own_header(stats: &ServerStats, response: &Response, core: &Core) {
    let summary = match response {
        Response::Summary(s) => s,
        Response::Votes { summary, .. } => summary,
        _ => return,
    };
    let Some(header) = &summary.own_header else {
        return;
    };
    let round = header.header.round();
    let newer = |published: &Option<OwnHeader>| {
        published
            .as_ref()
            .is_none_or(|p| p.header.header.round() < round)
    };
    if !newer(&stats.own_headers.borrow()) {
        return;
    }
    let wanted = header.header.payload();
    let payload = match &summary.own_payload {
        Some(p) => Some(p.clone()),
        None if wanted.len > 0 => match core.payload(&wanted.digest) {
            Some(p) => Some(p.clone()),
            None => return,
        },
        None => None,
    };
    stats.own_headers.send_if_modified(|published| {
        let newer = newer(published);
        if newer {
            *published = Some(OwnHeader {
                header: header.clone(),
                payload,
            });
        }
        newer
    });
}

/// The limits a decoder enforces on a request from the network: item counts and, for the
/// bytes a request can carry in bulk (payloads, transactions), the request size limit.
fn check_limits(body: &RequestBody, max_request_bytes: usize) -> Result<(), LocalLinkError> {
    let over = |what: &str, n: usize, max: usize| {
        if n > max {
            Err(LocalLinkError::OverLimit(format!(
                "{n} {what}, at most {max}"
            )))
        } else {
            Ok(())
        }
    };
    let payload_bytes = |p: &[Payload]| p.iter().map(Payload::len).sum::<usize>();
    let bulk = match body {
        RequestBody::HeaderBundle {
            headers,
            parents,
            payloads,
            ..
        } => {
            over("headers", headers.len(), MAX_HEADERS_PER_REQUEST)?;
            over("parents", parents.len(), MAX_CERTS_PER_REQUEST)?;
            over("payloads", payloads.len(), MAX_PAYLOADS_PER_REQUEST)?;
            payload_bytes(payloads)
        }
        RequestBody::CertBundle {
            certificates,
            parents,
            payloads,
            ..
        } => {
            over("certificates", certificates.len(), MAX_CERTS_PER_REQUEST)?;
            over("parents", parents.len(), MAX_CERTS_PER_REQUEST)?;
            over("payloads", payloads.len(), MAX_PAYLOADS_PER_REQUEST)?;
            payload_bytes(payloads)
        }
        RequestBody::Sync {
            certificates,
            payloads,
        } => {
            over("certificates", certificates.len(), MAX_CERTS_PER_REQUEST)?;
            over("payloads", payloads.len(), MAX_PAYLOADS_PER_REQUEST)?;
            payload_bytes(payloads)
        }
        RequestBody::Fetch { after, .. } => {
            over("fetch bounds", after.len(), MAX_COMMITTEE_SIZE)?;
            0
        }
        RequestBody::Submit { transactions } => {
            over(
                "transactions",
                transactions.len(),
                MAX_TRANSACTIONS_PER_SUBMIT,
            )?;
            let longest = transactions.iter().map(Bytes::len).max().unwrap_or(0);
            over("bytes in a transaction", longest, MAX_TRANSACTION_BYTES)?;
            transactions.iter().map(Bytes::len).sum()
        }
        RequestBody::FetchPayloads { digests } => {
            over("digests", digests.len(), MAX_DIGESTS_PER_MESSAGE)?;
            0
        }
        RequestBody::GetState { .. }
        | RequestBody::ReadCommitted { .. }
        | RequestBody::GetCheckpoint => 0,
        RequestBody::InstallCheckpoint { certificate } => {
            over(
                "checkpoint signers",
                certificate.signers.len(),
                MAX_COMMITTEE_SIZE,
            )?;
            0
        }
        RequestBody::FillLog { entries } => {
            over("fill entries", entries.len(), MAX_COMMITTED_PER_READ)?;
            0
        }
    };
    over("bytes carried", bulk, max_request_bytes)
}
