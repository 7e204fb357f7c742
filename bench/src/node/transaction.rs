//! The load transaction: client id, sequence number and send time, then filler. Written by
//! `sleepyseal load`, read back from the commit stream by the harness (every committed load
//! transaction is a latency sample) and by the chaos run's workload check.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use sleepyseal_core::protocol::CommittedView;
use sleepyseal_net::client::EntryPayload;

/// Bytes of a load transaction before its filler: client id, sequence number, send time.
pub const TX_HEADER_BYTES: usize = 24;

/// A unique load transaction: client id, sequence number, send time (µs since the Unix epoch),
/// then filler up to `size` bytes. The harness reads the send time back from the commit stream:
/// every transaction is a latency sample.
pub fn transaction(client: u64, sequence: u64, sent_us: u64, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(TX_HEADER_BYTES));
    b.put_u64_le(client);
    b.put_u64_le(sequence);
    b.put_u64_le(sent_us);
    b.resize(size.max(TX_HEADER_BYTES), 0xa5);
    b.freeze()
}

/// The fields of a load transaction: (client id, sequence number, send time in µs), or `None`
/// for a transaction too short to be one.
pub fn parse_transaction(tx: &[u8]) -> Option<(u64, u64, u64)> {
    let field = |i: usize| {
        tx.get(i * 8..(i + 1) * 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    Some((field(0)?, field(1)?, field(2)?))
}

/// The transactions of a followed entry's payload, whole or as the prefixes the reader asked for:
/// empty for an empty payload; `None` when the payload did not come, was not asked for, or is not
/// a batch of transactions.
pub fn entry_transactions(payload: &EntryPayload) -> Option<Vec<Bytes>> {
    match payload {
        EntryPayload::Empty => Some(Vec::new()),
        EntryPayload::Held(p) => p.transactions().ok(),
        EntryPayload::Prefixes(p) => p
            .transactions
            .as_ref()
            .map(|txs| txs.iter().map(|t| t.prefix.clone()).collect()),
        EntryPayload::Missing | EntryPayload::NotAsked => None,
    }
}

/// The view a reader of load transactions asks for: the fields of [`parse_transaction`], not the
/// filler.
pub const LOAD_VIEW: CommittedView = CommittedView::Prefixes {
    bytes: TX_HEADER_BYTES as u16,
};

/// Microseconds since the Unix epoch (send times and commit times of load transactions).
pub fn unix_micros() -> u64 {
    unix_micros_at(SystemTime::now())
}

/// Microseconds from the Unix epoch to `time` (0 before it).
pub fn unix_micros_at(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}
