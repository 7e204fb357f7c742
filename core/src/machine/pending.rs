//! The durable mempool and the own payloads made of it (PROTOCOL.md §3, DESIGN.md "Inside a core
//! process"): each payload byte is written once.
//!
//! - `Submit`: the transactions are acknowledged once stored as one mempool entry, a data value
//!   in the layout of a payload (each transaction prefixed by its `u32` length).
//! - Own header: its payload is built in memory (to hash and serve it) and stored as slices of
//!   the entries its transactions came from; entries taken whole are deleted, an entry cut in two
//!   is stored again as the slice still queued. The sliced bytes stay in the store as long as the
//!   payload references them, that is until the header commits and leaves the committed window,
//!   or its transactions are proposed again.
//! - Own header that can no longer commit: its transactions are queued again as one entry, a
//!   slice of its stored payload (its bytes are not written again either).
//!
//! All of it goes in the request's one batch, so a crash keeps the mempool and the own headers
//! consistent: every acknowledged transaction is in exactly one entry or own payload until its
//! header commits.

use bytes::Bytes;

use super::{Core, StoredPayload, Tx, PACING_ROUNDS};
use crate::error::CoreError;
use crate::mempool::EntryRange;
use crate::messages::Payload;
use crate::protocol::Response;
use crate::store::{keys, Slice, WriteBatch};
use crate::types::{Digest, Round};

impl Core {
    /// Queues transactions durably, or refuses them all with `Busy` when the mempool is full
    /// (bounded by [`CoreConfig::mempool_bytes`](super::CoreConfig::mempool_bytes)).
    pub(super) fn on_submit(&mut self, transactions: Vec<Bytes>, tx: &mut Tx) -> Response {
        if !self.mempool.has_room_for(&transactions) {
            return Response::Error(CoreError::Busy);
        }
        let accepted = u32::try_from(transactions.len()).expect("bounded by the decoder");
        if transactions.is_empty() {
            return Response::Submitted { accepted };
        }
        let chunks = length_prefixed(&transactions);
        let entry = self.mempool.push_entry(transactions);
        tx.batch.put_data(keys::pending(entry), chunks);
        Response::Submitted { accepted }
    }

    /// Takes the next batch of the mempool as the payload of the own header of `round`; stores
    /// it (as slices of its entries) and what is left of those entries in `tx`.
    pub(super) fn take_own_payload(&mut self, round: Round, tx: &mut Tx) -> Payload {
        let batch = self.mempool.take_batch(self.next_batch_bytes());
        let payload = Payload::from_transactions(batch.transactions.iter().map(|t| &t.bytes[..]));
        let slices = batch.ranges.iter().map(entry_slice).collect();
        // The payload first: its slices resolve against the entries before they change.
        self.keep_payload(&payload, round, tx, |key, b| b.put_slices(key, slices));
        for entry in batch.emptied {
            tx.batch.delete(keys::pending(entry));
        }
        if let Some(rest) = batch.remainder {
            tx.batch
                .put_slices(keys::pending(rest.entry), vec![entry_slice(&rest)]);
        }
        payload
    }

    /// Payload bytes the next own header takes at most: the batch size, or with a backlog of more
    /// than [`PACING_ROUNDS`] batches the backlog's share of that many headers, up to the
    /// largest batch.
    pub(super) fn next_batch_bytes(&self) -> usize {
        let base = self.config.batch_size_bytes.max(1);
        (self.mempool.queued_bytes() / PACING_ROUNDS).clamp(base, self.config.max_batch_bytes())
    }

    /// Queues the transactions of an own header that can no longer commit again, as one entry
    /// made of its stored payload `digest`; returns how many.
    pub(super) fn requeue_payload(&mut self, digest: Digest, tx: &mut Tx) -> usize {
        let payload = self
            .stored_payload(&digest)
            .expect("an own header's payload is kept while the header is")
            .clone();
        let transactions = payload
            .transactions()
            .expect("an own payload is made of transactions");
        let count = transactions.len();
        if count == 0 {
            return 0;
        }
        let entry = self.mempool.push_entry(transactions);
        let whole = Slice {
            source: keys::payload(&digest),
            start: 0,
            len: payload.len(),
        };
        tx.batch.put_slices(keys::pending(entry), vec![whole]);
        count
    }

    /// Stores a payload (idempotent), raising its retention round: `write` stores its bytes
    /// under the given key if the core does not hold it yet; the round is stored beside them, so
    /// raising it writes no payload byte.
    pub(super) fn keep_payload(
        &mut self,
        payload: &Payload,
        round: Round,
        tx: &mut Tx,
        write: impl FnOnce(Vec<u8>, &mut WriteBatch),
    ) {
        let digest = payload.digest();
        if payload.is_empty() {
            return; // held by every core without storing
        }
        if let Some(stored) = self.payloads.get_mut(&digest) {
            if stored.round >= round {
                return;
            }
            stored.round = round;
        } else {
            let stored = StoredPayload {
                payload: payload.clone(),
                round,
            };
            self.payloads.insert(digest, stored);
            write(keys::payload(&digest), &mut tx.batch);
        }
        self.missing_payloads.remove(&digest);
        self.missing_filled.remove(&digest);
        let round = Bytes::copy_from_slice(&round.0.to_le_bytes());
        tx.batch.put(keys::payload_round(&digest), round);
    }

    /// Forgets a stored payload, in memory and in the store.
    pub(super) fn forget_payload(&mut self, digest: &Digest, tx: &mut Tx) {
        self.payloads.remove(digest);
        tx.batch.delete(keys::payload(digest));
        tx.batch.delete(keys::payload_round(digest));
    }
}

/// The slice of the stored mempool entry that `range` is.
fn entry_slice(range: &EntryRange) -> Slice {
    Slice {
        source: keys::pending(range.entry),
        start: range.start,
        len: range.len,
    }
}

/// `transactions`, each after its `u32` length, as chunks to write straight from their buffers
/// (the prefixes share one small buffer).
fn length_prefixed(transactions: &[Bytes]) -> Vec<Bytes> {
    let mut prefixes = Vec::with_capacity(4 * transactions.len());
    for t in transactions {
        let len = u32::try_from(t.len()).expect("bounded by the decoder");
        prefixes.extend_from_slice(&len.to_le_bytes());
    }
    let prefixes = Bytes::from(prefixes);
    let mut chunks = Vec::with_capacity(2 * transactions.len());
    for (i, t) in transactions.iter().enumerate() {
        chunks.push(prefixes.slice(4 * i..4 * i + 4));
        chunks.push(t.clone());
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submitted_bytes_are_the_payload_layout() {
        let txs = vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from_static(b"z"),
        ];
        let chunks = length_prefixed(&txs);
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let payload = Payload::from_transactions(txs.iter().map(|t| &t[..]));
        assert_eq!(&joined[..], &payload.bytes()[..]);
    }
}
