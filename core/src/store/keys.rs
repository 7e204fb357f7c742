//! The core's key layout. Keys are a one-byte table tag followed by big-endian fields, so the
//! store's key order is (table, round, author) order and recovery reads each table in order.

use crate::types::{AuthorityIndex, Digest, Round};

/// Tables of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Table {
    /// `last_voted[author]` → the latest header by `author` this core signed (a `SignedHeader`).
    LastVoted = 1,
    /// `own[round]` → this core's signed header for `round`.
    Own = 2,
    /// `(round, author)` → certificate.
    Certificate = 3,
    /// payload digest → the payload's bytes (a data value, written once).
    Payload = 4,
    /// The single consensus-state record.
    Consensus = 5,
    /// consensus index → committed entry.
    Committed = 6,
    /// mempool entry number → acknowledged transactions not yet in an own header, each prefixed
    /// by its `u32` length (the layout of a payload): one `Submit`'s, or those of an own header
    /// proposed again. A data value; an own payload slices it.
    Pending = 7,
    /// payload digest → `round: u64 LE`, the round of the latest header referencing the payload
    /// (for pruning; raised without writing the payload again).
    PayloadRound = 8,
    /// consensus index → a checkpoint state this core reached and signed (a `SignedCheckpoint`),
    /// its latest few (PROTOCOL.md §8a.1).
    Checkpoint = 9,
    /// The single record of the latest checkpoint install (an `InstallRecord`, §8a.3).
    Install = 10,
    /// Why the core stopped for good (UTF-8): a store older than what its key signed. A core
    /// that finds it refuses to start.
    Halt = 11,
}

impl Table {
    /// The table of a key's first byte.
    pub fn of(key: &[u8]) -> Option<Table> {
        Some(match key.first()? {
            1 => Table::LastVoted,
            2 => Table::Own,
            3 => Table::Certificate,
            4 => Table::Payload,
            5 => Table::Consensus,
            6 => Table::Committed,
            7 => Table::Pending,
            8 => Table::PayloadRound,
            9 => Table::Checkpoint,
            10 => Table::Install,
            11 => Table::Halt,
            _ => return None,
        })
    }
}

fn key(table: Table, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(table as u8);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// Key of `last_voted[author]`.
pub fn last_voted(author: AuthorityIndex) -> Vec<u8> {
    key(Table::LastVoted, &[&author.0.to_be_bytes()])
}
/// Key of `own[round]`.
pub fn own(round: Round) -> Vec<u8> {
    key(Table::Own, &[&round.0.to_be_bytes()])
}
/// Key of the certificate at `(round, author)`.
pub fn certificate(round: Round, author: AuthorityIndex) -> Vec<u8> {
    key(
        Table::Certificate,
        &[&round.0.to_be_bytes(), &author.0.to_be_bytes()],
    )
}
/// Key of a payload.
pub fn payload(digest: &Digest) -> Vec<u8> {
    key(Table::Payload, &[&digest.0])
}
/// Key of a payload's round.
pub fn payload_round(digest: &Digest) -> Vec<u8> {
    key(Table::PayloadRound, &[&digest.0])
}
/// Key of the consensus state.
pub fn consensus() -> Vec<u8> {
    key(Table::Consensus, &[])
}
/// Key of a committed entry.
pub fn committed(index: u64) -> Vec<u8> {
    key(Table::Committed, &[&index.to_be_bytes()])
}
/// Key of a checkpoint state, by its consensus index.
pub fn checkpoint(index: u64) -> Vec<u8> {
    key(Table::Checkpoint, &[&index.to_be_bytes()])
}
/// Key of the install record.
pub fn install() -> Vec<u8> {
    key(Table::Install, &[])
}
/// Key of the halt record.
pub fn halt() -> Vec<u8> {
    key(Table::Halt, &[])
}
/// Key of a mempool entry.
pub fn pending(entry: u64) -> Vec<u8> {
    key(Table::Pending, &[&entry.to_be_bytes()])
}

/// Reads the big-endian `u64` after the tag (own, committed, pending keys).
pub fn u64_field(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Reads the digest after the tag (payload and payload round keys).
pub fn digest_field(key: &[u8]) -> Option<Digest> {
    let bytes: [u8; 32] = key.get(1..33)?.try_into().ok()?;
    Some(Digest(bytes))
}
