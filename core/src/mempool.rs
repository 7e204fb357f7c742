//! The mempool: acknowledged transactions waiting for an own header. Bounded in count and bytes;
//! a `Submit` that does not fit is refused whole with `Busy` (back-pressure), never dropped after
//! acknowledgement.
//!
//! Transactions are queued in *entries*: one per `Submit`, or per own header whose transactions
//! are proposed again. The store holds each entry once, as its transactions each prefixed by its
//! `u32` length (the layout of a payload), so the transactions of a batch form byte ranges of
//! entries ([`Batch::ranges`]) and an own payload is stored as slices of them, never written
//! again. A queued transaction knows its entry and where its length prefix lies in the entry's
//! stored value.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::codec::{DecodeError, Reader};
use crate::limits::MAX_TRANSACTION_BYTES;

/// Bytes of a transaction's length prefix in an entry.
const PREFIX_BYTES: usize = 4;

/// A queued transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedTransaction {
    /// The entry holding it.
    pub entry: u64,
    /// Offset of its length prefix in the entry's stored value.
    pub offset: usize,
    /// Its bytes.
    pub bytes: Bytes,
}

impl QueuedTransaction {
    /// Where the next transaction of the entry would start.
    fn end(&self) -> usize {
        self.offset + PREFIX_BYTES + self.bytes.len()
    }
}

/// A byte range of an entry's stored value: consecutive transactions with their prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRange {
    /// The entry.
    pub entry: u64,
    /// Where the range starts in its stored value.
    pub start: usize,
    /// Its length.
    pub len: usize,
}

/// What [`Mempool::take_batch`] took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// The transactions, oldest first.
    pub transactions: Vec<QueuedTransaction>,
    /// The ranges of entries they form, in order: their concatenation is the payload of the
    /// transactions.
    pub ranges: Vec<EntryRange>,
    /// Entries taken whole: the mempool no longer needs their stored values.
    pub emptied: Vec<u64>,
    /// The entry the batch cut in two, if any: what stays queued of it, as a range of its stored
    /// value before the cut. The entry is to be stored again as that range; the offsets of its
    /// queued transactions now count from the range's start.
    pub remainder: Option<EntryRange>,
}

/// Bounded FIFO of transactions.
#[derive(Clone, Debug)]
pub struct Mempool {
    queue: VecDeque<QueuedTransaction>,
    queued_bytes: usize,
    max_bytes: usize,
    max_transactions: usize,
    next_entry: u64,
}

impl Mempool {
    /// An empty mempool holding at most `max_transactions` of `max_bytes` in total.
    pub fn new(max_bytes: usize, max_transactions: usize) -> Mempool {
        Mempool {
            queue: VecDeque::new(),
            queued_bytes: 0,
            max_bytes,
            max_transactions,
            next_entry: 0,
        }
    }

    /// Whether `transactions` all fit.
    pub fn has_room_for(&self, transactions: &[Bytes]) -> bool {
        let bytes: usize = transactions.iter().map(Bytes::len).sum();
        self.queue.len() + transactions.len() <= self.max_transactions
            && self.queued_bytes + bytes <= self.max_bytes
    }

    /// Queues `transactions` as a new entry and returns its number; the entry is to be stored as
    /// the transactions, each prefixed by its `u32` length. Capacity is the caller's check
    /// ([`Mempool::has_room_for`]); re-queued transactions of dropped own headers may exceed it,
    /// because they were acknowledged already.
    pub fn push_entry(&mut self, transactions: Vec<Bytes>) -> u64 {
        let entry = self.next_entry;
        self.next_entry += 1;
        let mut offset = 0;
        for bytes in transactions {
            let tx = QueuedTransaction {
                entry,
                offset,
                bytes,
            };
            offset = tx.end();
            self.queued_bytes += tx.bytes.len();
            self.queue.push_back(tx);
        }
        entry
    }

    /// Queues an entry read back from the store (recovery, in entry order).
    pub fn restore_entry(&mut self, entry: u64, value: Bytes) -> Result<(), DecodeError> {
        let total = value.len();
        let mut r = Reader::new(value);
        let mut transactions = Vec::new();
        while r.remaining() > 0 {
            let offset = total - r.remaining();
            let bytes = r.bytes("transaction", MAX_TRANSACTION_BYTES)?;
            transactions.push(QueuedTransaction {
                entry,
                offset,
                bytes,
            });
        }
        self.next_entry = self.next_entry.max(entry + 1);
        for tx in transactions {
            self.queued_bytes += tx.bytes.len();
            self.queue.push_back(tx);
        }
        Ok(())
    }

    /// Takes transactions from the front while their total stays within `batch_size_bytes`
    /// (counting each one's 4-byte length prefix). Always takes at least one if any is queued, so
    /// a transaction larger than the batch size still leaves.
    pub fn take_batch(&mut self, batch_size_bytes: usize) -> Batch {
        let mut transactions: Vec<QueuedTransaction> = Vec::new();
        let mut size = 0;
        while let Some(front) = self.queue.front() {
            let cost = front.bytes.len() + PREFIX_BYTES;
            if !transactions.is_empty() && size + cost > batch_size_bytes {
                break;
            }
            size += cost;
            let tx = self.queue.pop_front().expect("front exists");
            self.queued_bytes -= tx.bytes.len();
            transactions.push(tx);
        }
        let ranges = ranges(&transactions);
        let remainder = self.cut(transactions.last().map(|t| t.entry));
        let mut emptied: Vec<u64> = ranges.iter().map(|r| r.entry).collect();
        emptied.dedup();
        emptied.retain(|e| remainder.is_none_or(|r| r.entry != *e));
        Batch {
            transactions,
            ranges,
            emptied,
            remainder,
        }
    }

    /// If the front of the queue continues `entry` (the batch cut it in two), the range of what
    /// stays queued of it, and its queued transactions' offsets rebased onto that range.
    fn cut(&mut self, entry: Option<u64>) -> Option<EntryRange> {
        let entry = entry?;
        let start = self.queue.front().filter(|t| t.entry == entry)?.offset;
        let mut len = 0;
        for tx in self.queue.iter_mut().take_while(|t| t.entry == entry) {
            len += PREFIX_BYTES + tx.bytes.len();
            tx.offset -= start;
        }
        Some(EntryRange { entry, start, len })
    }

    /// The queued transactions, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.queue.iter().map(|t| &t.bytes)
    }
    /// Bytes queued.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }
    /// Transactions queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }
    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// The entry ranges `transactions` form: consecutive transactions of one entry make one range.
fn ranges(transactions: &[QueuedTransaction]) -> Vec<EntryRange> {
    let mut out: Vec<EntryRange> = Vec::new();
    for tx in transactions {
        match out.last_mut() {
            Some(r) if r.entry == tx.entry && r.start + r.len == tx.offset => {
                r.len += PREFIX_BYTES + tx.bytes.len();
            }
            _ => out.push(EntryRange {
                entry: tx.entry,
                start: tx.offset,
                len: PREFIX_BYTES + tx.bytes.len(),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::Payload;

    fn tx(n: usize) -> Bytes {
        Bytes::from(vec![n as u8; n])
    }

    #[test]
    fn bounded_and_fifo() {
        let mut m = Mempool::new(10, 3);
        assert!(m.has_room_for(&[tx(4), tx(4)]));
        m.push_entry(vec![tx(4), tx(4)]);
        assert!(!m.has_room_for(&[tx(4)]), "bytes bound");
        assert!(m.has_room_for(&[tx(2)]));
        m.push_entry(vec![tx(2)]);
        assert!(!m.has_room_for(&[tx(0)]), "count bound");
        let batch = m.take_batch(9);
        assert_eq!(batch.transactions.len(), 1, "4+4 and 4+4 exceed 9");
        assert_eq!(batch.transactions[0].entry, 0);
        assert_eq!(
            m.take_batch(1).transactions.len(),
            1,
            "one oversized transaction still leaves"
        );
        assert_eq!(m.queued_bytes(), 2);
    }

    /// The ranges of a batch are the payload's bytes in the entries' layout; the remainder, once
    /// the entry is stored again as that range, restores to the transactions still queued.
    #[test]
    fn batches_are_ranges_of_entries_and_remainders_rebase() {
        let mut m = Mempool::new(1 << 20, 100);
        let first = vec![tx(5), tx(6)];
        let second = vec![tx(7), tx(8), tx(9)];
        let stored = |txs: &[Bytes]| Payload::from_transactions(txs.iter().map(|t| &t[..]));
        let (e0, e1) = (m.push_entry(first.clone()), m.push_entry(second.clone()));
        let batch = m.take_batch(9 + 10 + 11 + 4);
        assert_eq!(batch.transactions.len(), 3);
        let e0_len = stored(&first).len();
        assert_eq!(
            batch.ranges,
            vec![
                EntryRange {
                    entry: e0,
                    start: 0,
                    len: e0_len
                },
                EntryRange {
                    entry: e1,
                    start: 0,
                    len: 11
                },
            ]
        );
        assert_eq!(batch.emptied, vec![e0]);
        let second_bytes = stored(&second).bytes().clone();
        let rest = batch.remainder.expect("entry 1 was cut");
        assert_eq!((rest.entry, rest.start, rest.len), (e1, 11, 12 + 13));
        let value = second_bytes.slice(rest.start..rest.start + rest.len);
        let mut restored = Mempool::new(1 << 20, 100);
        restored.restore_entry(e1, value).unwrap();
        assert_eq!(
            restored.queue, m.queue,
            "same transactions at the same offsets"
        );
        let next = m.take_batch(1 << 20);
        assert_eq!(
            next.ranges,
            vec![EntryRange {
                entry: e1,
                start: 0,
                len: 25
            }]
        );
        assert_eq!((next.emptied, next.remainder), (vec![e1], None));
        assert!(m.push_entry(vec![]) > e1, "entry numbers only grow");
        assert!(restored.push_entry(vec![]) > e1);
    }
}
