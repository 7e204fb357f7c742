//! Durable state (PROTOCOL.md §3).
//!
//! The core never writes to a store itself: [`crate::Core::handle`] returns a [`WriteBatch`] next
//! to its reply, and the caller makes that batch durable *before* releasing the reply. Several
//! queued requests' batches can be committed with one sync (group commit) through
//! [`Store::commit`]. On restart, [`Store::load`] returns every live entry and
//! [`crate::Core::recover`] rebuilds the state from them.
//!
//! A store is an ordered key-value map with two kinds of values:
//! - small **metadata** values ([`WriteOp::Put`]): headers, certificates, the consensus state;
//! - **data** values, the bytes of payloads and of submitted transactions
//!   ([`WriteOp::PutData`]), written once, and values made of byte ranges of data values already
//!   stored ([`WriteOp::PutSlices`]): an own header's payload is the bytes its clients' `Submit`s
//!   made durable, referenced, not written again.
//!
//! [`keys`] gives the core's key layout; [`MemStore`] keeps everything in memory (tests and the
//! simulator), [`wal::WalStore`] on disk.

use bytes::Bytes;

mod error;
pub mod keys;
mod mem;
pub mod wal;

pub use error::{
    Corruption, DataDamage, RecordDamage, SliceError, SliceProblem, StoreError, TooLarge,
};
pub use mem::MemStore;

/// A byte range of a data value already in the store (or put earlier in the same commit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    /// The key of the data value.
    pub source: Vec<u8>,
    /// Where the range starts in that value.
    pub start: usize,
    /// Its length.
    pub len: usize,
}

/// One change to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Set `key` to the metadata value `value` (kept whole in the store's log).
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value (a shared slice: values are not copied on their way to the store).
        value: Bytes,
    },
    /// Set `key` to the data value made of `chunks` concatenated, written once where the store
    /// keeps bulk bytes (straight from these buffers: no copy in between).
    PutData {
        /// The key.
        key: Vec<u8>,
        /// The value's bytes, in order (typically slices of received frames).
        chunks: Vec<Bytes>,
    },
    /// Set `key` to the data value made of `slices` of data values concatenated. Writes no bytes,
    /// only where they are: the sliced bytes stay stored while any value references them, even
    /// after their source key is deleted or replaced.
    PutSlices {
        /// The key.
        key: Vec<u8>,
        /// The ranges, in order. Each source must be a data value at that point of the commit.
        slices: Vec<Slice>,
    },
    /// Remove `key` (no effect if absent).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl WriteOp {
    /// The key the op changes.
    pub fn key(&self) -> &[u8] {
        match self {
            WriteOp::Put { key, .. }
            | WriteOp::PutData { key, .. }
            | WriteOp::PutSlices { key, .. }
            | WriteOp::Delete { key } => key,
        }
    }
}

/// The writes of one request, applied atomically: all or none survive a crash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// The changes, applied in order.
    pub ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }
    /// Adds a metadata put.
    pub fn put(&mut self, key: Vec<u8>, value: Bytes) {
        self.ops.push(WriteOp::Put { key, value });
    }
    /// Adds a data put: `chunks` concatenated.
    pub fn put_data(&mut self, key: Vec<u8>, chunks: Vec<Bytes>) {
        self.ops.push(WriteOp::PutData { key, chunks });
    }
    /// Adds a put of a value made of ranges of stored data values.
    pub fn put_slices(&mut self, key: Vec<u8>, slices: Vec<Slice>) {
        self.ops.push(WriteOp::PutSlices { key, slices });
    }
    /// Adds a delete.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push(WriteOp::Delete { key });
    }
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    /// Appends another batch's changes.
    pub fn extend(&mut self, other: WriteBatch) {
        self.ops.extend(other.ops);
    }
    /// Bytes of keys and values as [`Store::load`] would return them (a sliced value counts its
    /// length, though no byte of it is written again).
    pub fn size_bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                WriteOp::Put { key, value } => key.len() + value.len(),
                WriteOp::PutData { key, chunks } => key.len() + chunks_len(chunks),
                WriteOp::PutSlices { key, slices } => {
                    key.len() + slices.iter().map(|s| s.len).sum::<usize>()
                }
                WriteOp::Delete { key } => key.len(),
            })
            .sum()
    }
}

/// Total length of `chunks`.
pub(crate) fn chunks_len(chunks: &[Bytes]) -> usize {
    chunks.iter().map(Bytes::len).sum()
}

/// What a store wrote since it was opened: counters for metrics and reports. A store in memory
/// writes nothing and reports zeros.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Bytes appended to the log by commits (metadata and framing; compaction not included).
    pub log_bytes_appended: u64,
    /// Bytes appended to payload segments (each data value once).
    pub segment_bytes_appended: u64,
    /// Zero bytes written after a commit's data so that the next one starts aligned (direct
    /// I/O only; less than one block per commit that writes data).
    pub segment_padding_bytes: u64,
    /// `fsync`/`fdatasync` calls on files and directories.
    pub syncs: u64,
    /// Segment files created.
    pub segments_created: u64,
    /// Segment files deleted (nothing live in them).
    pub segments_deleted: u64,
    /// Bytes written by compactions (the new log: snapshot and copied records).
    pub compaction_bytes_written: u64,
}

/// A durable ordered key-value map.
pub trait Store: Send {
    /// Applies `batches` in order, each atomically, and returns only once all are durable
    /// (synced to stable storage). One call is one group commit: on error nothing of it was
    /// applied (a store that cannot tell stops; see [`StoreError::Stopped`]).
    fn commit(&mut self, batches: &[WriteBatch]) -> Result<(), StoreError>;

    /// Every live entry in ascending key order, as left by the last successful `commit`; a data
    /// value is returned as one buffer.
    fn load(&mut self) -> Result<Vec<(Vec<u8>, Bytes)>, StoreError>;

    /// What the store wrote since it was opened.
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}
