//! Requests a core answers and the replies it gives (PROTOCOL.md §6), with their encodings.

use bytes::Bytes;

use crate::checkpoint::{CheckpointCert, SignedCheckpoint};
use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::error::CoreError;
use crate::limits::{
    MAX_CERTS_PER_REQUEST, MAX_CHECKPOINTS_PER_REPLY, MAX_COMMITTED_PER_READ, MAX_COMMITTEE_SIZE,
    MAX_DIGESTS_PER_MESSAGE, MAX_HEADERS_PER_REQUEST, MAX_PAYLOADS_PER_REQUEST,
    MAX_TRANSACTIONS_PER_SUBMIT, MAX_TRANSACTION_BYTES,
};
use crate::messages::{Certificate, Payload, SignedHeader, Vote};
use crate::types::{AuthorityIndex, Digest, Round};

mod committed;

pub use committed::{
    CommittedEntry, CommittedView, PayloadPrefixes, TransactionPrefix, MAX_PREFIX_BYTES,
};

/// A request to a core. Every request names the instance it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The consensus instance.
    pub instance: Digest,
    /// What is asked.
    pub body: RequestBody,
}

/// The kinds of request (all idempotent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestBody {
    /// Poll the core's state; the core may advance.
    GetState {
        /// Attach the own header's payload to the summary.
        with_payload: bool,
    },
    /// Headers of one round to vote on, with the parents and payloads the core may lack.
    HeaderBundle {
        /// The round of every header.
        round: Round,
        /// Signed headers (by their authors).
        headers: Vec<SignedHeader>,
        /// Round − 1 certificates the core may lack (inserted first).
        parents: Vec<Certificate>,
        /// Payloads of the headers the core may lack.
        payloads: Vec<Payload>,
    },
    /// Certificates of one round, with missing parents and payloads.
    CertBundle {
        /// The round of every certificate.
        round: Round,
        /// Round-r certificates.
        certificates: Vec<Certificate>,
        /// Earlier certificates the core may lack, in ascending round.
        parents: Vec<Certificate>,
        /// Payloads the core may lack.
        payloads: Vec<Payload>,
    },
    /// Catch-up: certificates in ascending round, with payloads.
    Sync {
        /// Certificates, ascending round.
        certificates: Vec<Certificate>,
        /// Their payloads (any subset).
        payloads: Vec<Payload>,
    },
    /// Read certificates above a lower bound per author.
    Fetch {
        /// For each author (index order), return only its certificates of round > this.
        after: Vec<Round>,
        /// At most this many certificates.
        max_items: u32,
        /// Attach payloads.
        with_payloads: bool,
    },
    /// Payloads by digest, from those this core stores (read only). Drivers use it to bring a
    /// core the payloads it lists as missing when they no longer hold them.
    FetchPayloads {
        /// The digests wanted.
        digests: Vec<Digest>,
    },
    /// A client's transactions for the mempool.
    Submit {
        /// The transactions.
        transactions: Vec<Bytes>,
    },
    /// Read the committed sequence.
    ReadCommitted {
        /// First consensus index wanted.
        from_index: u64,
        /// At most this many entries.
        max: u32,
        /// What comes with the entries.
        view: CommittedView,
        /// Long poll: if nothing is committed at `from_index` yet, the server may hold the
        /// request up to this many milliseconds for new entries (the core itself ignores it).
        wait_ms: u32,
    },
    /// The core's latest checkpoint states with its signature on each (read only; §8a.1).
    GetCheckpoint,
    /// Install a certified checkpoint (§8a.3): for a core further behind than others retain.
    InstallCheckpoint {
        /// The certificate.
        certificate: CheckpointCert,
    },
    /// Committed entries for the gap an install left (§8a.5), newest first: the first must be
    /// the entry just below the core's lowest verified one ([`Gap::next`]) and end on the hash
    /// it holds for it; each further entry vouches, by its commit hash, for the one before it.
    /// The last entry only vouches, unless it is the gap's lowest (at [`Gap::old_index`]).
    FillLog {
        /// Consecutive entries, descending index.
        entries: Vec<CommittedEntry>,
    },
}

/// The reply to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Reply to `GetState`, `CertBundle` and `Sync`.
    Summary(Box<Summary>),
    /// Reply to `HeaderBundle`: the votes cast (or re-sent) and the refusals.
    Votes {
        /// Votes for headers of the bundle.
        votes: Vec<Vote>,
        /// Headers not voted for, and why.
        rejected: Vec<(Digest, CoreError)>,
        /// The core's state after the bundle.
        summary: Box<Summary>,
    },
    /// Reply to `Fetch`.
    Certificates {
        /// Certificates in (round, author) order.
        certificates: Vec<Certificate>,
        /// Their payloads, where stored and asked for.
        payloads: Vec<Payload>,
    },
    /// Reply to `Submit`: all transactions are durably in the mempool.
    Submitted {
        /// How many.
        accepted: u32,
    },
    /// Reply to `ReadCommitted`.
    Committed {
        /// Entries from `from_index`, consecutive.
        entries: Vec<CommittedEntry>,
        /// Payloads of those entries, where stored and asked for (`CommittedView::Payloads`).
        payloads: Vec<Payload>,
        /// Transaction prefixes of those entries' payloads, where stored and asked for
        /// (`CommittedView::Prefixes`).
        prefixes: Vec<PayloadPrefixes>,
    },
    /// Reply to `GetCheckpoint`: the core's latest boundary states, oldest first, each signed
    /// by the core (none before its first boundary).
    Checkpoints(Vec<SignedCheckpoint>),
    /// The whole request was refused; nothing changed.
    Error(CoreError),
}

/// Whether a core can make progress, and what it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Nothing blocks it.
    Ready,
    /// Holds a quorum but waits for the leader or its support (PROTOCOL.md §4.5).
    NotReady {
        /// When asking again makes sense.
        retry_after_ms: u64,
    },
    /// Lacks these payloads of inserted certificates.
    Missing {
        /// Payload digests.
        digests: Vec<Digest>,
    },
    /// Too far behind for drivers to catch it up.
    NeedStateSync,
}

/// A certificate a core holds, by reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CertRef {
    /// Its round.
    pub round: Round,
    /// Its author.
    pub author: AuthorityIndex,
    /// Its digest.
    pub digest: Digest,
}

/// A core's state as drivers see it. A driver that just started rebuilds all it needs from these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The instance.
    pub instance: Digest,
    /// Which core.
    pub core: AuthorityIndex,
    /// The core's round: that of its latest own header.
    pub round: Round,
    /// Its latest own header (none before the first).
    pub own_header: Option<SignedHeader>,
    /// The own header's payload, when asked for.
    pub own_payload: Option<Payload>,
    /// Certificates held at rounds r − 1 and r.
    pub certificates: Vec<CertRef>,
    /// Votes this core cast for headers of rounds r − 1 and r.
    pub votes: Vec<Vote>,
    /// Highest stored certificate round per author, in index order.
    pub author_high: Vec<Round>,
    /// Below this round nothing is voted or inserted.
    pub gc_round: Round,
    /// Round of the latest committed leader.
    pub last_committed_round: Round,
    /// Number of committed certificates.
    pub consensus_index: u64,
    /// Hash chain over the committed sequence.
    pub commit_hash: Digest,
    /// Payload digests of inserted certificates this core lacks (drivers carry them).
    pub missing_payloads: Vec<Digest>,
    /// The committed entries an install skipped and the fill has not yet brought (§8a.5).
    pub gap: Option<Gap>,
    /// What the core needs.
    pub status: Status,
}

/// The part of the committed sequence an install skipped that the core has not verified yet:
/// indices `old_index..next`. Entries from `next` up are verified (or the core's own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The core's consensus index before the install: the gap's lowest index.
    pub old_index: u64,
    /// The lowest index verified by the fill so far (the certified index before any fill).
    pub next: u64,
}

// ---- encodings -------------------------------------------------------------------------------

impl Encode for CertRef {
    fn encode(&self, w: &mut Writer) {
        w.round(self.round);
        w.authority(self.author);
        w.digest(&self.digest);
    }
}

impl Decode for CertRef {
    const MIN_ENCODED_BYTES: usize = 42;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(CertRef {
            round: r.round()?,
            author: r.authority()?,
            digest: r.digest()?,
        })
    }
}

fn encode_option<T: Encode>(w: &mut Writer, value: &Option<T>) {
    match value {
        None => w.u8(0),
        Some(v) => {
            w.u8(1);
            v.encode(w);
        }
    }
}

fn decode_option<T: Decode>(r: &mut Reader) -> Result<Option<T>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(T::decode(r)?)),
        tag => Err(DecodeError::UnknownTag {
            what: "option",
            tag,
        }),
    }
}

impl Encode for Gap {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.old_index);
        w.u64(self.next);
    }
}

impl Decode for Gap {
    const MIN_ENCODED_BYTES: usize = 16;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let old_index = r.u64()?;
        let next = r.u64()?;
        if next < old_index {
            return Err(DecodeError::NonCanonical { what: "gap" });
        }
        Ok(Gap { old_index, next })
    }
}

impl Encode for Status {
    fn encode(&self, w: &mut Writer) {
        match self {
            Status::Ready => w.u8(0),
            Status::NotReady { retry_after_ms } => {
                w.u8(1);
                w.u64(*retry_after_ms);
            }
            Status::Missing { digests } => {
                w.u8(2);
                w.seq(digests);
            }
            Status::NeedStateSync => w.u8(3),
        }
    }
}

impl Decode for Status {
    const MIN_ENCODED_BYTES: usize = 1;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(match r.u8()? {
            0 => Status::Ready,
            1 => Status::NotReady {
                retry_after_ms: r.u64()?,
            },
            2 => Status::Missing {
                digests: r.seq("missing payloads", MAX_DIGESTS_PER_MESSAGE)?,
            },
            3 => Status::NeedStateSync,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "status",
                    tag,
                })
            }
        })
    }
}

impl Encode for Summary {
    fn encode(&self, w: &mut Writer) {
        w.digest(&self.instance);
        w.authority(self.core);
        w.round(self.round);
        encode_option(w, &self.own_header);
        encode_option(w, &self.own_payload);
        w.seq(&self.certificates);
        w.seq(&self.votes);
        w.seq(&self.author_high);
        w.round(self.gc_round);
        w.round(self.last_committed_round);
        w.u64(self.consensus_index);
        w.digest(&self.commit_hash);
        w.seq(&self.missing_payloads);
        encode_option(w, &self.gap);
        self.status.encode(w);
    }
}

impl Decode for Summary {
    const MIN_ENCODED_BYTES: usize = 32 + 2 + 8 + 2 + 12 + 24 + 32 + 4 + 1 + 1;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Summary {
            instance: r.digest()?,
            core: r.authority()?,
            round: r.round()?,
            own_header: decode_option(r)?,
            own_payload: decode_option(r)?,
            certificates: r.seq("summary certificates", 2 * MAX_COMMITTEE_SIZE)?,
            votes: r.seq("summary votes", 2 * MAX_COMMITTEE_SIZE)?,
            author_high: r.seq("author_high", MAX_COMMITTEE_SIZE)?,
            gc_round: r.round()?,
            last_committed_round: r.round()?,
            consensus_index: r.u64()?,
            commit_hash: r.digest()?,
            missing_payloads: r.seq("missing payloads", MAX_DIGESTS_PER_MESSAGE)?,
            gap: decode_option(r)?,
            status: Status::decode(r)?,
        })
    }
}

impl Encode for Request {
    fn encode(&self, w: &mut Writer) {
        w.digest(&self.instance);
        self.body.encode(w);
    }
}

impl RequestBody {
    /// Payload bytes the request carries: transactions of a `Submit`, payloads of bundles and
    /// `Sync` (the bytes a data-path budget counts, PROTOCOL.md §7).
    pub fn payload_bytes(&self) -> usize {
        match self {
            RequestBody::Submit { transactions } => transactions.iter().map(Bytes::len).sum(),
            RequestBody::HeaderBundle { payloads, .. }
            | RequestBody::CertBundle { payloads, .. }
            | RequestBody::Sync { payloads, .. } => payloads.iter().map(Payload::len).sum(),
            RequestBody::GetState { .. }
            | RequestBody::Fetch { .. }
            | RequestBody::FetchPayloads { .. }
            | RequestBody::ReadCommitted { .. }
            | RequestBody::GetCheckpoint
            | RequestBody::InstallCheckpoint { .. }
            | RequestBody::FillLog { .. } => 0,
        }
    }

    /// The request's kind in snake case, as metrics label it (`header_bundle`, `submit`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            RequestBody::GetState { .. } => "get_state",
            RequestBody::HeaderBundle { .. } => "header_bundle",
            RequestBody::CertBundle { .. } => "cert_bundle",
            RequestBody::Sync { .. } => "sync",
            RequestBody::Fetch { .. } => "fetch",
            RequestBody::FetchPayloads { .. } => "fetch_payloads",
            RequestBody::Submit { .. } => "submit",
            RequestBody::ReadCommitted { .. } => "read_committed",
            RequestBody::GetCheckpoint => "get_checkpoint",
            RequestBody::InstallCheckpoint { .. } => "install_checkpoint",
            RequestBody::FillLog { .. } => "fill_log",
        }
    }
}

impl Response {
    /// Payload bytes the reply carries: an own payload in a summary, fetched or committed
    /// payloads, and transaction prefixes (as encoded).
    pub fn payload_bytes(&self) -> usize {
        let own = |s: &Summary| s.own_payload.as_ref().map_or(0, Payload::len);
        match self {
            Response::Summary(s) | Response::Votes { summary: s, .. } => own(s),
            Response::Certificates { payloads, .. } => payloads.iter().map(Payload::len).sum(),
            Response::Committed {
                payloads, prefixes, ..
            } => {
                payloads.iter().map(Payload::len).sum::<usize>()
                    + prefixes
                        .iter()
                        .map(PayloadPrefixes::encoded_len)
                        .sum::<usize>()
            }
            Response::Submitted { .. } | Response::Checkpoints(_) | Response::Error(_) => 0,
        }
    }
}

impl Encode for RequestBody {
    fn encode(&self, w: &mut Writer) {
        match self {
            RequestBody::GetState { with_payload } => {
                w.u8(0);
                w.bool(*with_payload);
            }
            RequestBody::HeaderBundle {
                round,
                headers,
                parents,
                payloads,
            } => {
                w.u8(1);
                w.round(*round);
                w.seq(headers);
                w.seq(parents);
                w.seq(payloads);
            }
            RequestBody::CertBundle {
                round,
                certificates,
                parents,
                payloads,
            } => {
                w.u8(2);
                w.round(*round);
                w.seq(certificates);
                w.seq(parents);
                w.seq(payloads);
            }
            RequestBody::Sync {
                certificates,
                payloads,
            } => {
                w.u8(3);
                w.seq(certificates);
                w.seq(payloads);
            }
            RequestBody::Fetch {
                after,
                max_items,
                with_payloads,
            } => {
                w.u8(4);
                w.seq(after);
                w.u32(*max_items);
                w.bool(*with_payloads);
            }
            RequestBody::Submit { transactions } => {
                w.u8(5);
                w.seq(transactions);
            }
            RequestBody::ReadCommitted {
                from_index,
                max,
                view,
                wait_ms,
            } => {
                w.u8(6);
                w.u64(*from_index);
                w.u32(*max);
                view.encode(w);
                w.u32(*wait_ms);
            }
            RequestBody::FetchPayloads { digests } => {
                w.u8(7);
                w.seq(digests);
            }
            RequestBody::GetCheckpoint => w.u8(8),
            RequestBody::InstallCheckpoint { certificate } => {
                w.u8(9);
                certificate.encode(w);
            }
            RequestBody::FillLog { entries } => {
                w.u8(10);
                w.seq(entries);
            }
        }
    }
}

impl Decode for Request {
    const MIN_ENCODED_BYTES: usize = 33;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let instance = r.digest()?;
        let body = match r.u8()? {
            0 => RequestBody::GetState {
                with_payload: r.bool()?,
            },
            1 => RequestBody::HeaderBundle {
                round: r.round()?,
                headers: r.seq("headers", MAX_HEADERS_PER_REQUEST)?,
                parents: r.seq("parents", MAX_CERTS_PER_REQUEST)?,
                payloads: r.seq("payloads", MAX_PAYLOADS_PER_REQUEST)?,
            },
            2 => RequestBody::CertBundle {
                round: r.round()?,
                certificates: r.seq("certificates", MAX_CERTS_PER_REQUEST)?,
                parents: r.seq("parents", MAX_CERTS_PER_REQUEST)?,
                payloads: r.seq("payloads", MAX_PAYLOADS_PER_REQUEST)?,
            },
            3 => RequestBody::Sync {
                certificates: r.seq("certificates", MAX_CERTS_PER_REQUEST)?,
                payloads: r.seq("payloads", MAX_PAYLOADS_PER_REQUEST)?,
            },
            4 => RequestBody::Fetch {
                after: r.seq("fetch bounds", MAX_COMMITTEE_SIZE)?,
                max_items: r.u32()?,
                with_payloads: r.bool()?,
            },
            5 => {
                let n = r.len_prefix("transactions", MAX_TRANSACTIONS_PER_SUBMIT, 4)?;
                let mut transactions = Vec::with_capacity(n);
                for _ in 0..n {
                    transactions.push(r.bytes("transaction", MAX_TRANSACTION_BYTES)?);
                }
                RequestBody::Submit { transactions }
            }
            6 => RequestBody::ReadCommitted {
                from_index: r.u64()?,
                max: r.u32()?,
                view: CommittedView::decode(r)?,
                wait_ms: r.u32()?,
            },
            7 => RequestBody::FetchPayloads {
                digests: r.seq("digests", MAX_DIGESTS_PER_MESSAGE)?,
            },
            8 => RequestBody::GetCheckpoint,
            9 => RequestBody::InstallCheckpoint {
                certificate: CheckpointCert::decode(r)?,
            },
            10 => RequestBody::FillLog {
                entries: r.seq("fill entries", MAX_COMMITTED_PER_READ)?,
            },
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "request",
                    tag,
                })
            }
        };
        Ok(Request { instance, body })
    }
}

impl Encode for (Digest, CoreError) {
    fn encode(&self, w: &mut Writer) {
        w.digest(&self.0);
        self.1.encode(w);
    }
}

impl Decode for (Digest, CoreError) {
    const MIN_ENCODED_BYTES: usize = 33;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok((r.digest()?, CoreError::decode(r)?))
    }
}

impl Encode for Response {
    fn encode(&self, w: &mut Writer) {
        match self {
            Response::Summary(s) => {
                w.u8(0);
                s.encode(w);
            }
            Response::Votes {
                votes,
                rejected,
                summary,
            } => {
                w.u8(1);
                w.seq(votes);
                w.seq(rejected);
                summary.encode(w);
            }
            Response::Certificates {
                certificates,
                payloads,
            } => {
                w.u8(2);
                w.seq(certificates);
                w.seq(payloads);
            }
            Response::Submitted { accepted } => {
                w.u8(3);
                w.u32(*accepted);
            }
            Response::Committed {
                entries,
                payloads,
                prefixes,
            } => {
                w.u8(4);
                w.seq(entries);
                w.seq(payloads);
                w.seq(prefixes);
            }
            Response::Error(e) => {
                w.u8(5);
                e.encode(w);
            }
            Response::Checkpoints(states) => {
                w.u8(6);
                w.seq(states);
            }
        }
    }
}

impl Decode for Response {
    const MIN_ENCODED_BYTES: usize = 1;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(match r.u8()? {
            0 => Response::Summary(Box::new(Summary::decode(r)?)),
            1 => Response::Votes {
                votes: r.seq("votes", MAX_HEADERS_PER_REQUEST)?,
                rejected: r.seq("rejections", MAX_HEADERS_PER_REQUEST)?,
                summary: Box::new(Summary::decode(r)?),
            },
            2 => Response::Certificates {
                certificates: r.seq("certificates", MAX_CERTS_PER_REQUEST)?,
                payloads: r.seq("payloads", MAX_PAYLOADS_PER_REQUEST)?,
            },
            3 => Response::Submitted { accepted: r.u32()? },
            4 => Response::Committed {
                entries: r.seq("committed", MAX_COMMITTED_PER_READ)?,
                payloads: r.seq("payloads", MAX_PAYLOADS_PER_REQUEST)?,
                prefixes: r.seq("payload prefixes", MAX_COMMITTED_PER_READ)?,
            },
            5 => Response::Error(CoreError::decode(r)?),
            6 => Response::Checkpoints(r.seq("checkpoints", MAX_CHECKPOINTS_PER_REPLY)?),
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "response",
                    tag,
                })
            }
        })
    }
}
