//! The in-memory image of the log: the live entries, and the size a compacted log would have.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::format::{COUNT_LEN, FILE_HEADER_LEN, PUT_OVERHEAD, RECORD_HEADER_LEN};
use crate::store::WriteOp;

/// The live entries and the bytes of their keys and values.
#[derive(Default)]
pub(super) struct LiveMap {
    pub(super) map: BTreeMap<Vec<u8>, Bytes>,
    /// Bytes of keys and values of the entries in `map`.
    pub(super) bytes: u64,
}

impl LiveMap {
    /// Applies one op, as replay and commits do.
    pub(super) fn apply(&mut self, op: WriteOp) {
        match op {
            WriteOp::Put { key, value } => self.put(key, value),
            WriteOp::Delete { key } => self.delete(&key),
        }
    }

    pub(super) fn put(&mut self, key: Vec<u8>, value: Bytes) {
        let added = (key.len() + value.len()) as u64;
        let key_len = key.len() as u64;
        if let Some(old) = self.map.insert(key, value) {
            self.bytes -= key_len + old.len() as u64;
        }
        self.bytes += added;
    }

    pub(super) fn delete(&mut self, key: &[u8]) {
        if let Some(old) = self.map.remove(key) {
            self.bytes -= (key.len() + old.len()) as u64;
        }
    }

    /// Size of the log a compaction would write now (one record's overhead; chunking adds a few
    /// bytes per [`super::COMPACT_CHUNK_BYTES`]).
    pub(super) fn compacted_len(&self) -> u64 {
        let entries = self.map.len() as u64;
        let records = if entries == 0 {
            0
        } else {
            RECORD_HEADER_LEN + COUNT_LEN
        } as u64;
        FILE_HEADER_LEN as u64 + records + entries * PUT_OVERHEAD as u64 + self.bytes
    }
}
