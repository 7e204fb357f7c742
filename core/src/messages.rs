//! Protocol data types (PROTOCOL.md §2) and their canonical encodings.
//!
//! Digests are computed once, when a value is built or decoded, and kept beside it: a header's
//! digest is a function of its fields, which are private so the two cannot drift apart.

use bytes::Bytes;

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::crypto::Signature;
use crate::hash::{hash, TAG_HEADER, TAG_PAYLOAD, TAG_VOTE};
use crate::limits::{MAX_COMMITTEE_SIZE, MAX_PAYLOAD_BYTES, MAX_TRANSACTION_BYTES};
use crate::types::{AuthorityIndex, Digest, Round};

/// A reference to a payload: its digest and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PayloadRef {
    /// `H(SEAL/PAY/v1 ‖ bytes)`.
    pub digest: Digest,
    /// Length in bytes, ≤ MAX_PAYLOAD_BYTES.
    pub len: u32,
}

impl PayloadRef {
    /// The reference of the empty payload (genesis).
    pub fn empty() -> PayloadRef {
        Payload::new(Bytes::new()).reference()
    }
}

/// A block payload: a batch of length-prefixed transactions. The bytes are a shared slice
/// (of a received frame or of the store), never copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    digest: Digest,
    bytes: Bytes,
}

impl Payload {
    /// Hashes `bytes` once.
    pub fn new(bytes: Bytes) -> Payload {
        Payload {
            digest: hash(TAG_PAYLOAD, &bytes),
            bytes,
        }
    }

    /// Builds a payload from transactions (each prefixed by its `u32` length).
    pub fn from_transactions<'a, I: IntoIterator<Item = &'a [u8]>>(txs: I) -> Payload {
        let mut w = Writer::new();
        for tx in txs {
            w.bytes(tx);
        }
        Payload::new(Bytes::from(w.finish()))
    }

    /// Its digest.
    pub fn digest(&self) -> Digest {
        self.digest
    }
    /// Its bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    /// Whether it carries nothing.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// Its reference.
    pub fn reference(&self) -> PayloadRef {
        PayloadRef {
            digest: self.digest,
            len: u32::try_from(self.bytes.len()).expect("payload length fits u32"),
        }
    }
    /// The transactions, as zero-copy slices. A payload from a Byzantine author may not parse:
    /// that is an error for the reader, never a panic.
    pub fn transactions(&self) -> Result<Vec<Bytes>, DecodeError> {
        let mut r = Reader::new(self.bytes.clone());
        let mut out = Vec::new();
        while r.remaining() > 0 {
            out.push(r.bytes("transaction", MAX_TRANSACTION_BYTES)?);
        }
        Ok(out)
    }
}

impl Encode for Payload {
    fn encode(&self, w: &mut Writer) {
        w.shared(&self.bytes);
    }
}

impl Decode for Payload {
    const MIN_ENCODED_BYTES: usize = 4;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Payload::new(r.bytes("payload", MAX_PAYLOAD_BYTES)?))
    }
}

/// A parent reference: a certificate of the previous round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParentRef {
    /// The parent's author.
    pub author: AuthorityIndex,
    /// The parent certificate's id (its header digest).
    pub digest: Digest,
}

/// A block header (PROTOCOL.md §2). Fields are private so the cached digest stays correct.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    instance: Digest,
    round: Round,
    author: AuthorityIndex,
    parents: Vec<ParentRef>,
    payload: PayloadRef,
    created_at_ms: u64,
    digest: Digest,
}

impl Header {
    /// Builds a header and computes its digest. `parents` is sorted here; whether it is a valid
    /// parent set (unique authors, round − 1, stake ≥ Q) is the verifier's question.
    pub fn new(
        instance: Digest,
        round: Round,
        author: AuthorityIndex,
        mut parents: Vec<ParentRef>,
        payload: PayloadRef,
        created_at_ms: u64,
    ) -> Header {
        parents.sort();
        let mut header = Header {
            instance,
            round,
            author,
            parents,
            payload,
            created_at_ms,
            digest: Digest::ZERO,
        };
        header.digest = header.compute_digest();
        header
    }

    /// The round-0 header of `author`: no parents, empty payload, time 0.
    pub fn genesis(instance: Digest, author: AuthorityIndex) -> Header {
        Header::new(
            instance,
            Round::GENESIS,
            author,
            Vec::new(),
            PayloadRef::empty(),
            0,
        )
    }

    fn encode_fields(&self, w: &mut Writer) {
        w.digest(&self.instance);
        w.round(self.round);
        w.authority(self.author);
        w.len_prefix(self.parents.len());
        for p in &self.parents {
            w.authority(p.author);
            w.digest(&p.digest);
        }
        w.digest(&self.payload.digest);
        w.u32(self.payload.len);
        w.u64(self.created_at_ms);
    }

    fn compute_digest(&self) -> Digest {
        let mut w = Writer::with_capacity(128 + 34 * self.parents.len());
        self.encode_fields(&mut w);
        hash(TAG_HEADER, &w.finish())
    }

    /// The instance it belongs to.
    pub fn instance(&self) -> Digest {
        self.instance
    }
    /// Its round.
    pub fn round(&self) -> Round {
        self.round
    }
    /// Its author.
    pub fn author(&self) -> AuthorityIndex {
        self.author
    }
    /// Its parents, sorted by (author, digest).
    pub fn parents(&self) -> &[ParentRef] {
        &self.parents
    }
    /// Its payload reference.
    pub fn payload(&self) -> PayloadRef {
        self.payload
    }
    /// When its author built it (informational only).
    pub fn created_at_ms(&self) -> u64 {
        self.created_at_ms
    }
    /// `H(SEAL/HDR/v1 ‖ enc(header))`, also the id of its certificate.
    pub fn digest(&self) -> Digest {
        self.digest
    }
    /// Whether `digest` is among its parents.
    pub fn has_parent(&self, digest: &Digest) -> bool {
        self.parents.iter().any(|p| p.digest == *digest)
    }
}

impl Encode for Header {
    fn encode(&self, w: &mut Writer) {
        self.encode_fields(w);
    }
}

impl Decode for Header {
    const MIN_ENCODED_BYTES: usize = 32 + 8 + 2 + 4 + 32 + 4 + 8;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let instance = r.digest()?;
        let round = r.round()?;
        let author = r.authority()?;
        let n = r.len_prefix("parents", MAX_COMMITTEE_SIZE, 34)?;
        let mut parents = Vec::with_capacity(n);
        for _ in 0..n {
            parents.push(ParentRef {
                author: r.authority()?,
                digest: r.digest()?,
            });
        }
        // Canonical: strictly increasing authors, so sorted and one parent per author.
        if parents.windows(2).any(|w| w[0].author >= w[1].author) {
            return Err(DecodeError::NonCanonical { what: "parents" });
        }
        let payload = PayloadRef {
            digest: r.digest()?,
            len: r.u32()?,
        };
        let created_at_ms = r.u64()?;
        Ok(Header::new(
            instance,
            round,
            author,
            parents,
            payload,
            created_at_ms,
        ))
    }
}

/// The message a vote on `header_digest` signs: `SEAL/VOTE/v1 ‖ instance ‖ header_digest`.
pub fn vote_message(instance: &Digest, header_digest: &Digest) -> [u8; 76] {
    let mut m = [0u8; 76];
    m[..TAG_VOTE.len()].copy_from_slice(TAG_VOTE);
    // Bytes 11 and 12 stay zero: fixed-width tag field.
    m[12..44].copy_from_slice(&instance.0);
    m[44..76].copy_from_slice(&header_digest.0);
    m
}

/// A header with its author's signature (the author's own vote).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHeader {
    /// The header.
    pub header: Header,
    /// The author's vote signature over the header digest.
    pub signature: Signature,
}

impl SignedHeader {
    /// The author's signature as a [`Vote`].
    pub fn author_vote(&self) -> Vote {
        Vote {
            header_digest: self.header.digest(),
            voter: self.header.author(),
            signature: self.signature,
        }
    }
}

impl Encode for SignedHeader {
    fn encode(&self, w: &mut Writer) {
        self.header.encode(w);
        w.raw(&self.signature.0);
    }
}

impl Decode for SignedHeader {
    const MIN_ENCODED_BYTES: usize = Header::MIN_ENCODED_BYTES + 64;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(SignedHeader {
            header: Header::decode(r)?,
            signature: Signature(r.fixed()?),
        })
    }
}

/// A vote: `voter` signs `header_digest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vote {
    /// The header voted for.
    pub header_digest: Digest,
    /// Who voted.
    pub voter: AuthorityIndex,
    /// Signature over [`vote_message`].
    pub signature: Signature,
}

impl Encode for Vote {
    fn encode(&self, w: &mut Writer) {
        w.digest(&self.header_digest);
        w.authority(self.voter);
        w.raw(&self.signature.0);
    }
}

impl Decode for Vote {
    const MIN_ENCODED_BYTES: usize = 32 + 2 + 64;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Vote {
            header_digest: r.digest()?,
            voter: r.authority()?,
            signature: Signature(r.fixed()?),
        })
    }
}

/// A header with a quorum of votes (PROTOCOL.md §2). `signers` is sorted and unique, one
/// signature per signer in the same order. Valid ⇔ header well formed ∧ author ∈ signers ∧
/// stake(signers) ≥ Q ∧ all signatures verify; checking that is the verifier's job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// The certified header.
    pub header: Header,
    /// Who signed, ascending.
    pub signers: Vec<AuthorityIndex>,
    /// One signature per signer, in `signers` order.
    pub signatures: Vec<Signature>,
}

impl Certificate {
    /// The round-0 certificate of `author`: valid without signatures.
    pub fn genesis(instance: Digest, author: AuthorityIndex) -> Certificate {
        Certificate {
            header: Header::genesis(instance, author),
            signers: Vec::new(),
            signatures: Vec::new(),
        }
    }

    /// Assembles a certificate from votes on one header (any order, duplicates dropped).
    pub fn from_votes(header: Header, votes: &[Vote]) -> Certificate {
        let mut sorted: Vec<&Vote> = votes
            .iter()
            .filter(|v| v.header_digest == header.digest())
            .collect();
        sorted.sort_by_key(|v| v.voter);
        sorted.dedup_by_key(|v| v.voter);
        Certificate {
            header,
            signers: sorted.iter().map(|v| v.voter).collect(),
            signatures: sorted.iter().map(|v| v.signature).collect(),
        }
    }

    /// The certificate's id: its header's digest.
    pub fn digest(&self) -> Digest {
        self.header.digest()
    }
    /// Its round.
    pub fn round(&self) -> Round {
        self.header.round()
    }
    /// Its author.
    pub fn author(&self) -> AuthorityIndex {
        self.header.author()
    }
}

impl Encode for Certificate {
    fn encode(&self, w: &mut Writer) {
        self.header.encode(w);
        encode_signed_by(w, &self.signers, &self.signatures);
    }
}

/// Ascending signers as a bitmap without trailing zero bytes (canonical), then one signature
/// per signer in order (certificates and checkpoint certificates).
pub(crate) fn encode_signed_by(
    w: &mut Writer,
    signers: &[AuthorityIndex],
    signatures: &[Signature],
) {
    let bytes = signers.last().map_or(0, |last| last.as_usize() / 8 + 1);
    let mut bitmap = vec![0u8; bytes];
    for s in signers {
        bitmap[s.as_usize() / 8] |= 1 << (s.0 % 8);
    }
    w.bytes(&bitmap);
    for s in signatures {
        w.raw(&s.0);
    }
}

impl Decode for Certificate {
    const MIN_ENCODED_BYTES: usize = Header::MIN_ENCODED_BYTES + 4;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let header = Header::decode(r)?;
        let (signers, signatures) = decode_signed_by(r)?;
        Ok(Certificate {
            header,
            signers,
            signatures,
        })
    }
}

/// Reads what [`encode_signed_by`] wrote.
pub(crate) fn decode_signed_by(
    r: &mut Reader,
) -> Result<(Vec<AuthorityIndex>, Vec<Signature>), DecodeError> {
    {
        let bitmap = r.bytes("signer bitmap", MAX_COMMITTEE_SIZE.div_ceil(8))?;
        if bitmap.last() == Some(&0) {
            return Err(DecodeError::NonCanonical {
                what: "signer bitmap",
            });
        }
        let mut signers = Vec::new();
        for (byte_index, byte) in bitmap.iter().enumerate() {
            for bit in 0..8u16 {
                if byte & (1 << bit) != 0 {
                    let index = u16::try_from(byte_index * 8).expect("bounded bitmap") + bit;
                    signers.push(AuthorityIndex(index));
                }
            }
        }
        let needed = signers.len() * 64;
        if r.remaining() < needed {
            return Err(DecodeError::Truncated {
                offset: 0,
                needed: needed - r.remaining(),
            });
        }
        let mut signatures = Vec::with_capacity(signers.len());
        for _ in 0..signers.len() {
            signatures.push(Signature(r.fixed()?));
        }
        Ok((signers, signatures))
    }
}
