//! Fixtures shared by the write-ahead log's tests: scratch directories and small batches.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::segments::segment_name;
use super::{WalOptions, WalStore, LOG_NAME};
use crate::store::{Slice, Store, WriteBatch};

/// Live entries as [`Store::load`] returns them.
pub(super) type Entries = Vec<(Vec<u8>, Bytes)>;

/// What a test returns: store errors and the I/O errors of the test's own file edits.
pub(super) type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A unique directory under the system temp dir, removed on drop.
pub(super) struct TestDir(PathBuf);

impl TestDir {
    pub(super) fn new(name: &str) -> TestDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        // pid + counter is unique among live test processes; a stale leftover is removed.
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("sleepyseal-wal-{name}-{pid}-{n}"));
        let _ = fs::remove_dir_all(&dir);
        TestDir(dir)
    }
    pub(super) fn path(&self) -> &Path {
        &self.0
    }
    pub(super) fn log(&self) -> PathBuf {
        self.0.join(LOG_NAME)
    }
    pub(super) fn log_len(&self) -> u64 {
        fs::metadata(self.log()).map_or(0, |m| m.len())
    }
    /// Path of segment `id`.
    pub(super) fn segment(&self, id: u64) -> PathBuf {
        self.0.join(segment_name(id))
    }
    /// The numbers of the segment files present, ascending.
    pub(super) fn segments(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = fs::read_dir(&self.0)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter_map(|n| u64::from_str_radix(n.strip_suffix(".seg")?, 16).ok())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub(super) fn put(key: &str, value: &str) -> WriteBatch {
    let mut b = WriteBatch::new();
    b.put(
        key.as_bytes().to_vec(),
        Bytes::copy_from_slice(value.as_bytes()),
    );
    b
}

pub(super) fn del(key: &str) -> WriteBatch {
    let mut b = WriteBatch::new();
    b.delete(key.as_bytes().to_vec());
    b
}

pub(super) fn kv(pairs: &[(&str, &str)]) -> Entries {
    pairs
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), Bytes::copy_from_slice(v.as_bytes())))
        .collect()
}

/// Compaction in the committing thread once the log exceeds `min` bytes and twice its live size.
pub(super) fn tiny_compaction(min: u64) -> WalOptions {
    WalOptions {
        compact_min_bytes: min,
        compact_ratio: 2,
        background_compaction: false,
        ..WalOptions::default()
    }
}

/// A data put of `value`, written from chunks of at most `chunk` bytes.
pub(super) fn data(key: &str, value: &[u8], chunk: usize) -> WriteBatch {
    let mut b = WriteBatch::new();
    let chunks = value
        .chunks(chunk.max(1))
        .map(Bytes::copy_from_slice)
        .collect();
    b.put_data(key.as_bytes().to_vec(), chunks);
    b
}

/// A put of the concatenation of `(source, start, len)` ranges of data values.
pub(super) fn slices(key: &str, ranges: &[(&str, usize, usize)]) -> WriteBatch {
    let mut b = WriteBatch::new();
    let slices = ranges
        .iter()
        .map(|(source, start, len)| Slice {
            source: source.as_bytes().to_vec(),
            start: *start,
            len: *len,
        })
        .collect();
    b.put_slices(key.as_bytes().to_vec(), slices);
    b
}

/// `n` bytes that differ from one key to the next.
pub(super) fn bytes_of(seed: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| seed.wrapping_add((i % 251) as u8)).collect()
}

/// Commits `key{i}` = `value{i}` for each `i` in `range`; returns the log length after each.
pub(super) fn commit_numbered(store: &mut WalStore, range: std::ops::Range<u32>) -> Vec<u64> {
    range
        .map(|i| {
            store
                .commit(&[put(&format!("key{i}"), &format!("value{i}"))])
                .expect("commit");
            store.wal_stats().log_bytes
        })
        .collect()
}

/// The entries [`commit_numbered`] writes for `range`, in key order.
pub(super) fn numbered(range: std::ops::Range<u32>) -> Entries {
    let mut out: Entries = range
        .map(|i| {
            (
                format!("key{i}").into_bytes(),
                Bytes::from(format!("value{i}")),
            )
        })
        .collect();
    out.sort();
    out
}

pub(super) fn append_to_log(dir: &TestDir, bytes: &[u8]) -> io::Result<()> {
    OpenOptions::new()
        .append(true)
        .open(dir.log())?
        .write_all(bytes)
}
