//! Durable state (PROTOCOL.md §3).
//!
//! The core never writes to a store itself: [`crate::Core::handle`] returns a [`WriteBatch`] next
//! to its reply, and the caller makes that batch durable *before* releasing the reply. Several
//! queued requests' batches can be committed with one sync (group commit) through
//! [`Store::commit`]. On restart, [`Store::load`] returns every live entry and
//! [`crate::Core::recover`] rebuilds the state from them.
//!
//! A store is a plain ordered key-value map; [`keys`] gives the core's key layout.

use std::collections::BTreeMap;

use bytes::Bytes;

mod error;
pub mod keys;
pub mod wal;

pub use error::{Corruption, RecordDamage, StoreError, TooLarge};

/// One change to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value (a shared slice: payloads are not copied on their way to the store).
        value: Bytes,
    },
    /// Remove `key` (no effect if absent).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
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
    /// Adds a put.
    pub fn put(&mut self, key: Vec<u8>, value: Bytes) {
        self.ops.push(WriteOp::Put { key, value });
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
    /// Bytes of keys and values, for metrics and group-commit sizing.
    pub fn size_bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                WriteOp::Put { key, value } => key.len() + value.len(),
                WriteOp::Delete { key } => key.len(),
            })
            .sum()
    }
}

/// A durable ordered key-value map.
pub trait Store: Send {
    /// Applies `batches` in order, each atomically, and returns only once all are durable
    /// (synced to stable storage). One call is one group commit.
    fn commit(&mut self, batches: &[WriteBatch]) -> Result<(), StoreError>;

    /// Every live entry in ascending key order, as left by the last successful `commit`.
    fn load(&mut self) -> Result<Vec<(Vec<u8>, Bytes)>, StoreError>;
}

/// A store in memory: for tests and the simulator, which models crashes itself.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    map: BTreeMap<Vec<u8>, Bytes>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }
    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// Applies one batch.
    pub fn apply(&mut self, batch: &WriteBatch) {
        apply_to_map(&mut self.map, batch);
    }
}

/// Applies a batch to an ordered map (shared by the in-memory and the durable store).
pub fn apply_to_map(map: &mut BTreeMap<Vec<u8>, Bytes>, batch: &WriteBatch) {
    for op in &batch.ops {
        match op {
            WriteOp::Put { key, value } => {
                map.insert(key.clone(), value.clone());
            }
            WriteOp::Delete { key } => {
                map.remove(key);
            }
        }
    }
}

impl Store for MemStore {
    fn commit(&mut self, batches: &[WriteBatch]) -> Result<(), StoreError> {
        for batch in batches {
            self.apply(batch);
        }
        Ok(())
    }

    fn load(&mut self) -> Result<Vec<(Vec<u8>, Bytes)>, StoreError> {
        Ok(self
            .map
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
