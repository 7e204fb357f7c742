//! Reading the committed sequence (`ReadCommitted`, PROTOCOL.md §6): the entries, and what comes
//! with them per [`CommittedView`].
//!
//! A benchmark needs each transaction's id and send time, not its bytes: the `Prefixes` view
//! returns the first K bytes of every transaction and its length, so measuring a run no longer
//! moves every payload across the network once more.

use bytes::Bytes;

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::hash::{Hasher, TAG_COMMIT};
use crate::limits::{MAX_PAYLOAD_BYTES, MAX_TRANSACTION_BYTES};
use crate::messages::{Payload, PayloadRef};
use crate::types::{AuthorityIndex, Digest, Round};

/// Most bytes of each transaction the `Prefixes` view returns; a larger request is served with
/// this many.
pub const MAX_PREFIX_BYTES: u16 = 64;

/// What a `ReadCommitted` returns beside each committed entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommittedView {
    /// The entries only (each names its payload by digest and length).
    Digests,
    /// The first `bytes` bytes (at most [`MAX_PREFIX_BYTES`]) and the length of every
    /// transaction of each payload.
    Prefixes {
        /// Bytes of each transaction wanted.
        bytes: u16,
    },
    /// Whole payloads.
    Payloads,
}

/// The first bytes of one committed transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionPrefix {
    /// The transaction's whole length.
    pub len: u32,
    /// Its first bytes (a shared slice of the payload).
    pub prefix: Bytes,
}

/// The transaction prefixes of one committed payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadPrefixes {
    /// The payload's digest.
    pub digest: Digest,
    /// Every transaction of the payload, in order; `None` when the payload is not a well-formed
    /// batch of length-prefixed transactions (a Byzantine author can get any bytes committed).
    pub transactions: Option<Vec<TransactionPrefix>>,
}

impl PayloadPrefixes {
    /// The first `bytes` bytes (at most [`MAX_PREFIX_BYTES`]) of each transaction of `payload`,
    /// shared with it (no copy).
    pub fn of(payload: &Payload, bytes: u16) -> PayloadPrefixes {
        let keep = usize::from(bytes.min(MAX_PREFIX_BYTES));
        let transactions = payload.transactions().ok().map(|txs| {
            txs.into_iter()
                .map(|tx| TransactionPrefix {
                    len: u32::try_from(tx.len()).expect("bounded by MAX_TRANSACTION_BYTES"),
                    prefix: tx.slice(..keep.min(tx.len())),
                })
                .collect()
        });
        PayloadPrefixes {
            digest: payload.digest(),
            transactions,
        }
    }

    /// Bytes of its encoding (for reply budgets): digest, tag, and per transaction its length
    /// and its length-prefixed first bytes.
    pub fn encoded_len(&self) -> usize {
        33 + self.transactions.as_ref().map_or(0, |txs| {
            4 + txs.iter().map(|t| 8 + t.prefix.len()).sum::<usize>()
        })
    }
}

/// One entry of a core's committed sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommittedEntry {
    /// Position in the sequence (0-based).
    pub index: u64,
    /// The certificate's round.
    pub round: Round,
    /// Its author.
    pub author: AuthorityIndex,
    /// Its digest.
    pub digest: Digest,
    /// Its payload.
    pub payload: PayloadRef,
    /// `commit_hash` after this entry.
    pub commit_hash: Digest,
    /// The round of the leader whose commit emitted this entry.
    pub leader_round: Round,
    /// Whether this entry is that leader itself (the last of its sub-DAG).
    pub is_leader: bool,
    /// The certificate header's creation time (for latency figures).
    pub created_at_ms: u64,
}

impl CommittedEntry {
    /// The commit chain's link (PROTOCOL.md §8a.5): `h_i = H(SEAL/COMMIT/v2 ‖ h_{i−1} ‖ index ‖
    /// digest ‖ round ‖ author ‖ payload reference ‖ leader round ‖ is_leader ‖ created_at)`,
    /// every field the entry serves but its own hash, so an entry verified by the chain can be
    /// served without the certificate behind it.
    pub fn chain(&self, previous: &Digest) -> Digest {
        Hasher::new(TAG_COMMIT)
            .update(&previous.0)
            .update(&self.index.to_le_bytes())
            .update(&self.digest.0)
            .update(&self.round.0.to_le_bytes())
            .update(&self.author.0.to_le_bytes())
            .update(&self.payload.digest.0)
            .update(&self.payload.len.to_le_bytes())
            .update(&self.leader_round.0.to_le_bytes())
            .update(&[u8::from(self.is_leader)])
            .update(&self.created_at_ms.to_le_bytes())
            .finish()
    }

    /// Whether this entry links to `previous` (the hash after the entry before it).
    pub fn links_to(&self, previous: &Digest) -> bool {
        self.chain(previous) == self.commit_hash
    }
}

// ---- encodings -------------------------------------------------------------------------------

impl Encode for CommittedView {
    fn encode(&self, w: &mut Writer) {
        match self {
            CommittedView::Digests => w.u8(0),
            CommittedView::Prefixes { bytes } => {
                w.u8(1);
                w.u16(*bytes);
            }
            CommittedView::Payloads => w.u8(2),
        }
    }
}

impl Decode for CommittedView {
    const MIN_ENCODED_BYTES: usize = 1;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(match r.u8()? {
            0 => CommittedView::Digests,
            1 => CommittedView::Prefixes { bytes: r.u16()? },
            2 => CommittedView::Payloads,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "committed view",
                    tag,
                })
            }
        })
    }
}

impl Encode for TransactionPrefix {
    fn encode(&self, w: &mut Writer) {
        w.u32(self.len);
        w.shared(&self.prefix);
    }
}

impl Decode for TransactionPrefix {
    const MIN_ENCODED_BYTES: usize = 8;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let len = r.u32()?;
        if len as usize > MAX_TRANSACTION_BYTES {
            return Err(DecodeError::TooLong {
                what: "transaction length",
                len: len as usize,
                max: MAX_TRANSACTION_BYTES,
            });
        }
        let prefix = r.bytes("transaction prefix", usize::from(MAX_PREFIX_BYTES))?;
        Ok(TransactionPrefix { len, prefix })
    }
}

impl Encode for PayloadPrefixes {
    fn encode(&self, w: &mut Writer) {
        w.digest(&self.digest);
        match &self.transactions {
            None => w.u8(0),
            Some(txs) => {
                w.u8(1);
                w.seq(txs);
            }
        }
    }
}

impl Decode for PayloadPrefixes {
    const MIN_ENCODED_BYTES: usize = 33;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let digest = r.digest()?;
        let transactions = match r.u8()? {
            0 => None,
            // Every transaction takes at least its 4-byte length prefix in the payload.
            1 => Some(r.seq("transaction prefixes", MAX_PAYLOAD_BYTES / 4)?),
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "payload prefixes",
                    tag,
                })
            }
        };
        Ok(PayloadPrefixes {
            digest,
            transactions,
        })
    }
}

impl Encode for CommittedEntry {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.index);
        w.round(self.round);
        w.authority(self.author);
        w.digest(&self.digest);
        w.digest(&self.payload.digest);
        w.u32(self.payload.len);
        w.digest(&self.commit_hash);
        w.round(self.leader_round);
        w.bool(self.is_leader);
        w.u64(self.created_at_ms);
    }
}

impl Decode for CommittedEntry {
    const MIN_ENCODED_BYTES: usize = 8 + 8 + 2 + 32 + 32 + 4 + 32 + 8 + 1 + 8;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(CommittedEntry {
            index: r.u64()?,
            round: r.round()?,
            author: r.authority()?,
            digest: r.digest()?,
            payload: PayloadRef {
                digest: r.digest()?,
                len: r.u32()?,
            },
            commit_hash: r.digest()?,
            leader_round: r.round()?,
            is_leader: r.bool()?,
            created_at_ms: r.u64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(p: &PayloadPrefixes) -> Result<PayloadPrefixes, DecodeError> {
        PayloadPrefixes::from_bytes(p.to_bytes())
    }

    #[test]
    fn prefixes_keep_lengths_and_first_bytes_and_round_trip() {
        let long = [7u8; 100];
        let payload = Payload::from_transactions([&long[..], &b"abc"[..], &[][..]]);
        let p = PayloadPrefixes::of(&payload, 24);
        let txs = p.transactions.as_ref().unwrap();
        let got: Vec<(u32, usize)> = txs.iter().map(|t| (t.len, t.prefix.len())).collect();
        assert_eq!(got, [(100, 24), (3, 3), (0, 0)]);
        assert_eq!(&txs[1].prefix[..], b"abc");
        assert_eq!(round_trip(&p).unwrap(), p);
        assert_eq!(p.encoded_len(), p.to_bytes().len());
        // More than the limit is served with the limit.
        let wide = PayloadPrefixes::of(&payload, u16::MAX);
        assert_eq!(
            wide.transactions.unwrap()[0].prefix.len(),
            usize::from(MAX_PREFIX_BYTES)
        );
    }

    #[test]
    fn a_payload_that_is_not_a_transaction_batch_has_no_prefixes() {
        // A length prefix of 1,000 with 2 bytes behind it.
        let payload = Payload::new(Bytes::from_static(&[0xe8, 0x03, 0, 0, 1, 2]));
        let p = PayloadPrefixes::of(&payload, 24);
        assert_eq!(p.transactions, None);
        assert_eq!(round_trip(&p).unwrap(), p);
        assert_eq!(p.encoded_len(), p.to_bytes().len());
    }

    #[test]
    fn oversized_prefixes_and_lengths_are_refused_by_the_decoder() {
        let mut p = PayloadPrefixes::of(&Payload::from_transactions([&[1u8; 200][..]]), 24);
        let txs = p.transactions.as_mut().unwrap();
        txs[0].prefix = Bytes::from(vec![0u8; usize::from(MAX_PREFIX_BYTES) + 1]);
        assert!(matches!(round_trip(&p), Err(DecodeError::TooLong { .. })));
        let txs = p.transactions.as_mut().unwrap();
        txs[0].prefix = Bytes::new();
        txs[0].len = MAX_TRANSACTION_BYTES as u32 + 1;
        assert!(matches!(round_trip(&p), Err(DecodeError::TooLong { .. })));
    }
}
