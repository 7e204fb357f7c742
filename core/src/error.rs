//! The closed set of reasons a core refuses a request or part of one. Every variant carries the
//! data a driver needs to act on it, and every variant has a wire encoding, so a rejection is
//! never a bare string.

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::limits::MAX_DIGESTS_PER_MESSAGE;
use crate::messages::SignedHeader;
use crate::types::{AuthorityIndex, Digest, Round};

/// What was wrong with a header or certificate's structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformation {
    /// Parents are not all of round − 1.
    #[error("parent of the wrong round")]
    ParentRound,
    /// Parents' stake is below Q.
    #[error("parents below quorum")]
    ParentsBelowQuorum,
    /// A parent's author is not in the committee.
    #[error("parent by unknown authority")]
    UnknownParentAuthor,
    /// A payload larger than the limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// A header claims round 0 (only genesis is at round 0).
    #[error("round 0 header")]
    GenesisRound,
    /// The author is not among the certificate's signers.
    #[error("author did not sign")]
    AuthorNotSigner,
    /// Signers' stake is below Q.
    #[error("signers below quorum")]
    SignersBelowQuorum,
    /// A signer outside the committee.
    #[error("unknown signer")]
    UnknownSigner,
    /// Signature count differs from signer count.
    #[error("signature count mismatch")]
    SignatureCount,
    /// A round-0 certificate that is not this instance's genesis.
    #[error("fake genesis")]
    FakeGenesis,
    /// A bundle for round r holding a header or certificate of another round.
    #[error("item of another round in bundle")]
    BundleRound,
    /// A payload carried without being referenced, or with a mismatched length.
    #[error("payload length mismatch")]
    PayloadLength,
}

impl Malformation {
    const ALL: [Malformation; 12] = [
        Malformation::ParentRound,
        Malformation::ParentsBelowQuorum,
        Malformation::UnknownParentAuthor,
        Malformation::PayloadTooLarge,
        Malformation::GenesisRound,
        Malformation::AuthorNotSigner,
        Malformation::SignersBelowQuorum,
        Malformation::UnknownSigner,
        Malformation::SignatureCount,
        Malformation::FakeGenesis,
        Malformation::BundleRound,
        Malformation::PayloadLength,
    ];

    fn tag(self) -> u8 {
        Malformation::ALL
            .iter()
            .position(|m| *m == self)
            .expect("listed") as u8
    }
}

/// Why a core refused a request, a header or a certificate. No state changed because of it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// The request could not be decoded (sent by the server, never by `Core`).
    #[error("malformed request: {0}")]
    Decode(DecodeError),
    /// The request is for another consensus instance.
    #[error("wrong instance {got}")]
    WrongInstance {
        /// The instance it named.
        got: Digest,
    },
    /// An authority index outside the committee.
    #[error("unknown authority {0}")]
    UnknownAuthority(AuthorityIndex),
    /// A count above a protocol limit.
    #[error("{what}: {len} exceeds limit {max}")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A header or certificate that is structurally invalid.
    #[error("malformed {digest:?}: {reason}")]
    Malformed {
        /// Its digest.
        digest: Digest,
        /// What is wrong.
        reason: Malformation,
    },
    /// A signature that does not verify.
    #[error("bad signature on {digest:?} by {signer}")]
    BadSignature {
        /// The header or certificate digest.
        digest: Digest,
        /// The claimed signer.
        signer: AuthorityIndex,
    },
    /// Parents (or a certificate's ancestors) are not stored yet.
    #[error("missing {} parents", digests.len())]
    MissingParents {
        /// The missing certificate digests.
        digests: Vec<Digest>,
    },
    /// The header's payload was neither carried nor stored.
    #[error("missing payload {digest:?}")]
    MissingPayload {
        /// The payload digest.
        digest: Digest,
    },
    /// Below the garbage-collection floor.
    #[error("round {round} below gc round {gc_round}")]
    TooOld {
        /// The round offered.
        round: Round,
        /// The core's gc round.
        gc_round: Round,
    },
    /// The core already signed a newer header of this author.
    #[error("already voted for {author} at {voted}, offered {round}")]
    AlreadyVotedNewer {
        /// The author.
        author: AuthorityIndex,
        /// The round offered.
        round: Round,
        /// The round already voted.
        voted: Round,
    },
    /// The author signed two headers for one round: evidence, never a vote.
    #[error("equivocation by {} at {}", first.header.author(), first.header.round())]
    Equivocation {
        /// The header this core voted for.
        first: Box<SignedHeader>,
        /// The conflicting header offered.
        second: Box<SignedHeader>,
    },
    /// A valid certificate for an (author, round) that already has another: more than f_s
    /// Byzantine stake, or a broken quorum rule.
    #[error("conflicting certificate for {author} at {round}")]
    ConflictingCertificate {
        /// The author.
        author: AuthorityIndex,
        /// The round.
        round: Round,
    },
    /// The request's data is older than this core retains.
    #[error("need state sync")]
    NeedStateSync,
    /// The mempool or a queue is full; retry later.
    #[error("busy")]
    Busy,
    /// Committed entries below `first_index` are no longer retained by this core.
    #[error("committed entries below index {first_index} are no longer retained")]
    CommittedEvicted {
        /// The oldest retained index.
        first_index: u64,
    },
    /// The entries asked for lie in the gap an install left (PROTOCOL.md §8a.5), which is being
    /// filled from the top down: read again shortly (the entries from `filled_from` up are
    /// held).
    #[error(
        "committed entries below index {filled_from} are being filled after a checkpoint install"
    )]
    CommittedGapOpen {
        /// The lowest index filled so far.
        filled_from: u64,
    },
    /// A checkpoint certificate whose shape is invalid (another instance, signers below V,
    /// unknown or repeated signers, a per-author list of the wrong length).
    #[error("invalid checkpoint certificate")]
    InvalidCheckpoint,
    /// A checkpoint not strictly ahead of this core's state (PROTOCOL.md §8a.3): nothing changed.
    #[error("checkpoint at index {index} is not ahead of this core (at index {own_index})")]
    StaleCheckpoint {
        /// The certified consensus index.
        index: u64,
        /// This core's.
        own_index: u64,
    },
    /// A checkpoint this core does not need: it is at most GC_DEPTH rounds behind it, so
    /// ordinary catch-up reaches it (PROTOCOL.md §8a.3). Nothing changed.
    #[error("checkpoint not needed: {behind} rounds behind it, within GC_DEPTH")]
    CheckpointNotNeeded {
        /// Certified last committed round minus this core's.
        behind: u64,
    },
    /// The core stopped: its store is older than what its key signed (a checkpoint shows a
    /// committed header of its own that its store never recorded signing), or another fault
    /// that makes answering unsafe. It answers nothing else until restarted with a sound store.
    #[error("core stopped: {0}")]
    Halted(String),
    /// A `FillLog` whose entries do not link, by the commit chain, down from the lowest entry
    /// this core verified (PROTOCOL.md §8a.5): nothing changed.
    #[error("fill entries do not link below index {next}")]
    InvalidFill {
        /// The core's lowest verified index: the fill must start just below it.
        next: u64,
    },
    /// A `FillLog` for a core with no open gap: nothing changed.
    #[error("no gap to fill")]
    FillNotNeeded,
}

/// Longest reason a `Halted` error carries.
const MAX_HALT_REASON_BYTES: usize = 1_024;

fn decode_digests(r: &mut Reader) -> Result<Vec<Digest>, DecodeError> {
    r.seq("digests", MAX_DIGESTS_PER_MESSAGE)
}

impl Encode for CoreError {
    fn encode(&self, w: &mut Writer) {
        match self {
            CoreError::Decode(_) => w.u8(0),
            CoreError::WrongInstance { got } => {
                w.u8(1);
                w.digest(got);
            }
            CoreError::UnknownAuthority(a) => {
                w.u8(2);
                w.authority(*a);
            }
            CoreError::TooMany { len, max, .. } => {
                w.u8(3);
                w.u64(*len);
                w.u64(*max);
            }
            CoreError::Malformed { digest, reason } => {
                w.u8(4);
                w.digest(digest);
                w.u8(reason.tag());
            }
            CoreError::BadSignature { digest, signer } => {
                w.u8(5);
                w.digest(digest);
                w.authority(*signer);
            }
            CoreError::MissingParents { digests } => {
                w.u8(6);
                w.seq(digests);
            }
            CoreError::MissingPayload { digest } => {
                w.u8(7);
                w.digest(digest);
            }
            CoreError::TooOld { round, gc_round } => {
                w.u8(8);
                w.round(*round);
                w.round(*gc_round);
            }
            CoreError::AlreadyVotedNewer {
                author,
                round,
                voted,
            } => {
                w.u8(9);
                w.authority(*author);
                w.round(*round);
                w.round(*voted);
            }
            CoreError::Equivocation { first, second } => {
                w.u8(10);
                first.encode(w);
                second.encode(w);
            }
            CoreError::ConflictingCertificate { author, round } => {
                w.u8(11);
                w.authority(*author);
                w.round(*round);
            }
            CoreError::NeedStateSync => w.u8(12),
            CoreError::Busy => w.u8(13),
            CoreError::CommittedEvicted { first_index } => {
                w.u8(14);
                w.u64(*first_index);
            }
            CoreError::InvalidCheckpoint => w.u8(15),
            CoreError::StaleCheckpoint { index, own_index } => {
                w.u8(16);
                w.u64(*index);
                w.u64(*own_index);
            }
            CoreError::CheckpointNotNeeded { behind } => {
                w.u8(17);
                w.u64(*behind);
            }
            CoreError::Halted(reason) => {
                w.u8(18);
                let mut end = reason.len().min(MAX_HALT_REASON_BYTES);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                w.bytes(&reason.as_bytes()[..end]);
            }
            CoreError::InvalidFill { next } => {
                w.u8(19);
                w.u64(*next);
            }
            CoreError::FillNotNeeded => w.u8(20),
            CoreError::CommittedGapOpen { filled_from } => {
                w.u8(21);
                w.u64(*filled_from);
            }
        }
    }
}

impl Decode for CoreError {
    const MIN_ENCODED_BYTES: usize = 1;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(match r.u8()? {
            // The decode error's detail stays with the server that saw it.
            0 => CoreError::Decode(DecodeError::NonCanonical { what: "request" }),
            1 => CoreError::WrongInstance { got: r.digest()? },
            2 => CoreError::UnknownAuthority(r.authority()?),
            3 => CoreError::TooMany {
                what: "list",
                len: r.u64()?,
                max: r.u64()?,
            },
            4 => {
                let digest = r.digest()?;
                let tag = r.u8()?;
                let reason =
                    *Malformation::ALL
                        .get(usize::from(tag))
                        .ok_or(DecodeError::UnknownTag {
                            what: "malformation",
                            tag,
                        })?;
                CoreError::Malformed { digest, reason }
            }
            5 => CoreError::BadSignature {
                digest: r.digest()?,
                signer: r.authority()?,
            },
            6 => CoreError::MissingParents {
                digests: decode_digests(r)?,
            },
            7 => CoreError::MissingPayload {
                digest: r.digest()?,
            },
            8 => CoreError::TooOld {
                round: r.round()?,
                gc_round: r.round()?,
            },
            9 => CoreError::AlreadyVotedNewer {
                author: r.authority()?,
                round: r.round()?,
                voted: r.round()?,
            },
            10 => CoreError::Equivocation {
                first: Box::new(SignedHeader::decode(r)?),
                second: Box::new(SignedHeader::decode(r)?),
            },
            11 => CoreError::ConflictingCertificate {
                author: r.authority()?,
                round: r.round()?,
            },
            12 => CoreError::NeedStateSync,
            13 => CoreError::Busy,
            14 => CoreError::CommittedEvicted {
                first_index: r.u64()?,
            },
            15 => CoreError::InvalidCheckpoint,
            16 => CoreError::StaleCheckpoint {
                index: r.u64()?,
                own_index: r.u64()?,
            },
            17 => CoreError::CheckpointNotNeeded { behind: r.u64()? },
            18 => {
                let bytes = r.bytes("reason", MAX_HALT_REASON_BYTES)?;
                let reason =
                    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::NonCanonical {
                        what: "halt reason",
                    })?;
                CoreError::Halted(reason)
            }
            19 => CoreError::InvalidFill { next: r.u64()? },
            20 => CoreError::FillNotNeeded,
            21 => CoreError::CommittedGapOpen {
                filled_from: r.u64()?,
            },
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "core error",
                    tag,
                })
            }
        })
    }
}
