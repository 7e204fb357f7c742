//! The mempool: acknowledged transactions waiting for an own header. Bounded in count and bytes;
//! a `Submit` that does not fit is refused whole with `Busy` (back-pressure), never dropped after
//! acknowledgement. Every queued transaction is also in the store under its sequence number.

use std::collections::VecDeque;

use bytes::Bytes;

/// A queued transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedTransaction {
    /// Its key in the store.
    pub sequence: u64,
    /// Its bytes.
    pub bytes: Bytes,
}

/// Bounded FIFO of transactions.
#[derive(Clone, Debug)]
pub struct Mempool {
    queue: VecDeque<QueuedTransaction>,
    queued_bytes: usize,
    max_bytes: usize,
    max_transactions: usize,
    next_sequence: u64,
}

impl Mempool {
    /// An empty mempool holding at most `max_transactions` of `max_bytes` in total.
    pub fn new(max_bytes: usize, max_transactions: usize) -> Mempool {
        Mempool {
            queue: VecDeque::new(),
            queued_bytes: 0,
            max_bytes,
            max_transactions,
            next_sequence: 0,
        }
    }

    /// Whether `transactions` all fit.
    pub fn has_room_for(&self, transactions: &[Bytes]) -> bool {
        let bytes: usize = transactions.iter().map(Bytes::len).sum();
        self.queue.len() + transactions.len() <= self.max_transactions
            && self.queued_bytes + bytes <= self.max_bytes
    }

    /// Appends a transaction and returns its sequence number. Capacity is the caller's check
    /// ([`Mempool::has_room_for`]); re-queued transactions of dropped own headers may exceed it,
    /// because they were acknowledged already.
    pub fn push(&mut self, bytes: Bytes) -> u64 {
        let sequence = self.next_sequence;
        self.restore(QueuedTransaction { sequence, bytes });
        sequence
    }

    /// Re-inserts a transaction with a known sequence number (recovery).
    pub fn restore(&mut self, tx: QueuedTransaction) {
        self.next_sequence = self.next_sequence.max(tx.sequence + 1);
        self.queued_bytes += tx.bytes.len();
        self.queue.push_back(tx);
    }

    /// Takes transactions from the front while their total stays within `batch_size_bytes`
    /// (counting each one's 4-byte length prefix). Always takes at least one if any is queued, so
    /// a transaction larger than the batch size still leaves.
    pub fn take_batch(&mut self, batch_size_bytes: usize) -> Vec<QueuedTransaction> {
        let mut taken = Vec::new();
        let mut size = 0;
        while let Some(front) = self.queue.front() {
            let cost = front.bytes.len() + 4;
            if !taken.is_empty() && size + cost > batch_size_bytes {
                break;
            }
            size += cost;
            let tx = self.queue.pop_front().expect("front exists");
            self.queued_bytes -= tx.bytes.len();
            taken.push(tx);
        }
        taken
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_fifo() {
        let mut m = Mempool::new(10, 3);
        let tx = |n: usize| Bytes::from(vec![7u8; n]);
        assert!(m.has_room_for(&[tx(4), tx(4)]));
        m.push(tx(4));
        m.push(tx(4));
        assert!(!m.has_room_for(&[tx(4)]), "bytes bound");
        assert!(m.has_room_for(&[tx(2)]));
        m.push(tx(2));
        assert!(!m.has_room_for(&[tx(0)]), "count bound");
        let batch = m.take_batch(9);
        assert_eq!(batch.len(), 1, "4+4 and 4+4 exceed 9");
        assert_eq!(batch[0].sequence, 0);
        assert_eq!(
            m.take_batch(1).len(),
            1,
            "one oversized transaction still leaves"
        );
        assert_eq!(m.queued_bytes(), 2);
    }
}
