//! A durable [`Store`]: a pure-Rust write-ahead log with an in-memory ordered map.
//!
//! # Files
//!
//! A store is a directory holding:
//! - `wal.log`: the log (format below);
//! - `wal.log.tmp`: a compaction in progress (removed on open if left over by a crash);
//! - `LOCK`: `"<pid> <start time>"` of the process that has the store open (see [`WalStore::open`]).
//!
//! # Log format
//!
//! All integers are little-endian.
//!
//! ```text
//! file   = magic "SSEALWAL" (8 bytes) ‖ version u32 (= 1) ‖ record*
//! record = body length u32 ‖ CRC-32 (IEEE, crc32fast) of body u32 ‖ body
//! body   = op count u32 (≥ 1) ‖ op*
//! op     = 1 u8 ‖ key length u32 ‖ key ‖ value length u32 ‖ value     (put)
//!        | 2 u8 ‖ key length u32 ‖ key                                (delete)
//! ```
//!
//! Keys are at most [`MAX_KEY_LEN`] bytes and a body at most [`MAX_RECORD_BODY`] bytes; a commit
//! over these limits is refused with [`StoreError::TooLarge`] before anything is written.
//!
//! # Atomicity and durability
//!
//! One [`Store::commit`] call (all of its batches) is encoded as one record, written with a single
//! `write_all` and then `fdatasync`ed before `commit` returns. The record's checksum makes the whole
//! group atomic: after a crash either every batch of the group is replayed or none is. If the
//! write or the sync fails, the store is *poisoned*: every later call returns
//! [`StoreError::Stopped`] (fail-stop), since the file's state is then unknown. A commit with no operations writes and syncs nothing.
//!
//! # Crash rule (torn tail)
//!
//! Every commit is synced before the next one starts, so a crash can damage only the last
//! record. On open the log is replayed from the start; at the first record that fails its checks
//! (header cut short, body running past the end of the file, checksum mismatch, or a body that
//! does not decode) the rule is:
//! - if the record's length field points at or beyond the end of the file, or the bytes at its
//!   declared end do not form an intact record, it is a **torn tail**: the file is truncated at the
//!   start of that record, the truncation is synced, and the store opens with everything before;
//! - if an intact record follows at its declared end, the damage is in the middle of the log:
//!   [`StoreError::Corrupt`] naming both offsets, and the file is left untouched;
//! - a length field above [`MAX_RECORD_BODY`] is never written by this code (nor by a torn write of
//!   it), so it is [`StoreError::Corrupt`] too.
//!
//! A damaged length field in the middle of the log can make the following record unfindable; it is
//! then indistinguishable from a torn tail in this format and is truncated as one.
//!
//! A log shorter than its header holds no record (creation syncs the header before the store is
//! used), so it is rewritten as a fresh log. A wrong magic or version is [`StoreError::Corrupt`].
//!
//! # Compaction
//!
//! After a commit, if the log is larger than [`WalOptions::compact_min_bytes`] and larger than
//! [`WalOptions::compact_ratio`] times the size a compacted log would have, the live map is written
//! as puts (in records of at most [`COMPACT_CHUNK_BYTES`] of body) to `wal.log.tmp`, which is synced,
//! renamed over `wal.log`, and the directory is synced. A crash at any point leaves either the old or
//! the new log complete, and the leftover temporary file is deleted on the next open.
//!
//! With [`WalOptions::background_compaction`] (the default) commits do not wait for it: a thread
//! writes a snapshot of the live map as of log offset `O` (the map is cloned; values are shared
//! `Bytes`), then copies the records the log gained after `O`, which are complete and synced, while
//! commits go on appending to the old log. When less than [`TAIL_CATCH_UP_BYTES`] remain, the next
//! commit finishes it: copies the last records, syncs, renames and syncs the directory. The new
//! log is the snapshot followed by exactly the records after `O`, so it replays to the same map.
//! The old log stays complete until the rename. A failed background compaction removes its file
//! and leaves the store working on the old log; a failure while finishing it poisons the store
//! like a failed commit.
//!
//! # Code layout
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | [`WalStore`]: opening, commits, loads, counters |
//! | `format.rs` | the byte layout: file header, record encoding and decoding, checksums |
//! | `replay.rs` | reading the log back on open and the crash rule |
//! | `compaction.rs` | compaction, in the committing thread or on a background thread |
//! | `lock.rs` | the `LOCK` file |
//! | `live.rs` | the in-memory map and the size a compacted log would have |
//! | `files.rs` | directory creation and syncs, file removal |
//! | `tests.rs`, `test_support.rs` | tests of the whole store and the fixtures all tests share |
//!
//! Each file's own tests sit at its end.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::error::IoContext;
use super::{Store, StoreError, WriteBatch, WriteOp};
use compaction::Background;
use files::{create_dir_durably, remove_if_exists};
use live::LiveMap;
use lock::DirLock;

mod compaction;
mod files;
mod format;
mod live;
mod lock;
mod replay;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

pub use compaction::{COMPACT_CHUNK_BYTES, TAIL_CATCH_UP_BYTES};
pub use format::{MAX_KEY_LEN, MAX_RECORD_BODY};

const LOG_NAME: &str = "wal.log";
const TMP_NAME: &str = "wal.log.tmp";

/// When [`WalStore`] compacts its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Never compact a log smaller than this many bytes (default 64 MiB).
    pub compact_min_bytes: u64,
    /// Compact when the log is larger than this multiple of the size a compacted log would have
    /// (default 4: every byte committed is written about 1.33 times, at the price of a log up to
    /// four times its live size). Values of 1 or less compact after nearly every commit once the
    /// log exceeds `compact_min_bytes`.
    pub compact_ratio: u64,
    /// Compact on a background thread (default): commits are not held up by the rewrite, only by
    /// the final copy of at most [`TAIL_CATCH_UP_BYTES`] and two syncs.
    pub background_compaction: bool,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions {
            compact_min_bytes: 64 << 20,
            compact_ratio: 4,
            background_compaction: true,
        }
    }
}

/// Counters of a [`WalStore`] since it was opened (sizes are current values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Current size of `wal.log` in bytes, header included.
    pub log_bytes: u64,
    /// Bytes of keys and values of the live entries (as [`WriteBatch::size_bytes`] counts them).
    pub live_bytes: u64,
    /// Number of live entries.
    pub live_entries: u64,
    /// Commits that wrote a record (empty commits are not counted).
    pub commits: u64,
    /// `fsync`/`fdatasync` calls issued on the log, the compaction file and the directory.
    pub syncs: u64,
    /// Compactions completed.
    pub compactions: u64,
    /// Background compactions that failed (the store kept its old log and went on).
    pub compaction_failures: u64,
}

/// A [`Store`] kept in a write-ahead log on disk and replayed into memory on open (see the module
/// documentation for the format and the crash rules).
pub struct WalStore {
    /// `wal.log`, opened for reading and appending.
    file: File,
    /// The store's directory.
    dir: PathBuf,
    /// `dir/wal.log`, the path of `file` (for error reports and compaction).
    log: PathBuf,
    options: WalOptions,
    live: LiveMap,
    stats: WalStats,
    /// Set when a write, sync or compaction failed: the store then refuses every call.
    poisoned: bool,
    /// A background compaction in progress.
    background: Option<Background>,
    /// Declared last so that the lock is released after the log is closed.
    _lock: DirLock,
}

impl fmt::Debug for WalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalStore")
            .field("dir", &self.dir)
            .field("stats", &self.stats())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl WalStore {
    /// Opens (creating if needed) the store in `dir` with default [`WalOptions`].
    ///
    /// Creates `dir` if missing, takes the `LOCK` file ([`StoreError::Locked`] if a live process
    /// holds it; a lock left by a dead process is taken over), deletes a leftover `wal.log.tmp`, and
    /// replays `wal.log`, truncating a torn tail (see the module documentation).
    ///
    /// # Errors
    ///
    /// [`StoreError::Locked`] (or [`StoreError::LockContended`]) if another running process has
    /// the store open, [`StoreError::Corrupt`] if the log is damaged other than by a torn tail or
    /// has a wrong magic or version, [`StoreError::Io`] if a file operation fails.
    pub fn open(dir: &Path) -> Result<WalStore, StoreError> {
        WalStore::open_with(dir, WalOptions::default())
    }

    /// Like [`WalStore::open`], with explicit options.
    ///
    /// # Errors
    ///
    /// As [`WalStore::open`].
    pub fn open_with(dir: &Path, options: WalOptions) -> Result<WalStore, StoreError> {
        create_dir_durably(dir)?;
        let lock = DirLock::acquire(dir)?;
        remove_if_exists(&dir.join(TMP_NAME))?;
        let mut stats = WalStats::default();
        let (file, live) = replay::recover_log(dir, &mut stats)?;
        Ok(WalStore {
            file,
            dir: dir.to_path_buf(),
            log: dir.join(LOG_NAME),
            options,
            live,
            stats,
            poisoned: false,
            background: None,
            _lock: lock,
        })
    }

    /// The store's counters.
    pub fn stats(&self) -> WalStats {
        WalStats {
            live_bytes: self.live.bytes,
            live_entries: self.live.map.len() as u64,
            ..self.stats
        }
    }

    fn check_alive(&self) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::Stopped);
        }
        Ok(())
    }

    /// Runs `step`; if it fails, the files' state is unknown and the store stops.
    fn poison_on_error<T>(
        &mut self,
        step: impl FnOnce(&mut WalStore) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = step(self);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    /// Appends one encoded record and syncs it.
    fn append(&mut self, record: &[u8]) -> Result<(), StoreError> {
        self.file.write_all(record).at(&self.log)?;
        self.file.sync_data().at(&self.log)?;
        self.stats.syncs += 1;
        self.stats.log_bytes += record.len() as u64;
        if let Some(b) = &self.background {
            b.synced_up_to(self.stats.log_bytes);
        }
        Ok(())
    }
}

impl Drop for WalStore {
    /// A background compaction still running is waited for and discarded: the old log is
    /// complete, and its temporary file is removed.
    fn drop(&mut self) {
        self.abandon_background();
    }
}

impl Store for WalStore {
    fn commit(&mut self, batches: &[WriteBatch]) -> Result<(), StoreError> {
        self.check_alive()?;
        let Some(record) = format::encode_commit(batches)? else {
            return Ok(());
        };
        self.poison_on_error(|s| s.append(&record))?;
        for op in batches.iter().flat_map(|b| &b.ops) {
            match op {
                WriteOp::Put { key, value } => self.live.put(key.clone(), value.clone()),
                WriteOp::Delete { key } => self.live.delete(key),
            }
        }
        self.stats.commits += 1;
        self.poison_on_error(WalStore::compact_if_due)
    }

    fn load(&mut self) -> Result<Vec<(Vec<u8>, Bytes)>, StoreError> {
        self.check_alive()?;
        Ok(self
            .live
            .map
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
