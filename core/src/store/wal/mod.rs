//! A durable [`Store`]: a pure-Rust write-ahead log of metadata with an in-memory ordered map,
//! and append-only segment files holding the bytes of data values, each written once.
//!
//! # Files
//!
//! A store is a directory holding:
//! - `wal.log`: the log (format below): every metadata value, and where each data value's bytes
//!   lie in the segments;
//! - `{number:016x}.seg`: segment files, the bytes of data values ([`WriteOp::PutData`]) back to
//!   back, with no framing: what holds them together is the log;
//! - `wal.log.tmp`: a compaction in progress (removed on open if left over by a crash);
//! - `LOCK`: `"<pid> <start time>"` of the process that has the store open (see [`WalStore::open`]).
//!
//! # Log format
//!
//! All integers are little-endian.
//!
//! ```text
//! file   = magic "SSEALWAL" (8 bytes) ‖ version u32 (= 2) ‖ record*
//! record = body length u32 ‖ CRC-32 (IEEE, crc32fast) of body u32 ‖ body
//! body   = op count u32 (≥ 1) ‖ op*
//! op     = 1 u8 ‖ key length u32 ‖ key ‖ value length u32 ‖ value          (put: metadata)
//!        | 2 u8 ‖ key length u32 ‖ key                                     (delete)
//!        | 3 u8 ‖ key length u32 ‖ key ‖ piece count u32 ‖ piece*          (data put)
//!        | 4 u8 ‖ key length u32 ‖ key ‖ piece count u32 ‖ piece*          (slices)
//! piece  = segment u64 ‖ extent offset u64 ‖ extent length u32 ‖ extent CRC-32 u32
//!          ‖ start u32 ‖ length u32
//! ```
//!
//! A data value is its pieces concatenated. A piece is `length` bytes from `start` within an
//! **extent**: the bytes one data put appended to a segment (`extent length` bytes at `extent
//! offset` of segment `segment`), with their CRC-32; `start + length ≤ extent length`, `length >
//! 0`. A data put (op 3) has one piece, its whole extent, which the record *appended* (zero
//! pieces for an empty value). A slices op (op 4, [`WriteOp::PutSlices`], and every data value a
//! compaction writes) references extents appended before, by this record or an earlier one: an
//! own header's payload is the `Submit` bytes already in the segments, not a second copy.
//!
//! Keys are at most [`MAX_KEY_LEN`] bytes, a body at most [`MAX_RECORD_BODY`] bytes and a data
//! value at most [`MAX_DATA_VALUE`] bytes; a commit over these limits, or with a slice that does
//! not lie in a data value, is refused ([`StoreError::TooLarge`], [`StoreError::BadSlice`]) before
//! anything is written.
//!
//! A log of version 1 (every value inside the log) is refused on open with
//! [`StoreError::OldLayout`], which names the directory and what to do; it is not converted.
//!
//! # Segments
//!
//! Data goes to the *active* segment, created on the first data after open and replaced by a new
//! one (the next number) when a value would take it past [`WalOptions::segment_bytes`] (a value
//! longer than that gets a segment of its own). A new segment is preallocated to that size and it and
//! the directory are synced before anything is written to it, so a segment named by a synced
//! record never vanishes. Segments are never rewritten. How many live pieces each segment holds
//! is kept in memory (computed again on every open); after a commit, every segment other than the
//! active one with no live piece is deleted, without a sync (a deletion lost in a crash leaves a
//! dead segment, deleted again on the next open). On open, segment files no live piece
//! references are deleted and appends go to a new segment.
//!
//! # Atomicity and durability
//!
//! One [`Store::commit`] call (all of its batches) is one group: its data is appended to the
//! segments, by default with direct I/O (copied once into a reused aligned buffer, padded to a
//! 4 KiB block so that the next group starts on one, and written past the page cache; see
//! `segments.rs` for why), or where the file system refuses direct I/O with vectored writes
//! straight from the callers' buffers (`writev`), then its metadata is encoded as one log record
//! and written with a single `write_all`; the segments written are `fdatasync`ed, then the log, and
//! only then does `commit` return. Nothing is acknowledged before both files are synced. The
//! record's checksum makes the group atomic: after a crash either every batch of the group is
//! replayed or none is. If a write or a sync fails, the store is *poisoned*: every later call
//! returns [`StoreError::Stopped`] (fail-stop), since the files' state is then unknown. A commit
//! with no operations writes and syncs nothing.
//!
//! # Crash rule (torn tail)
//!
//! Every commit is synced (both files) before the next one starts, so a crash can damage only the
//! last group: its log record, or the segment bytes it appended. On open the log is replayed from
//! the start; at the first record that fails its checks (header cut short, body running past the
//! end of the file, checksum mismatch, or a body that does not decode) the rule is:
//! - if the record's length field points at or beyond the end of the file, or the bytes at its
//!   declared end do not form an intact record, it is a **torn tail**: the file is truncated at the
//!   start of that record, the truncation is synced, and the store opens with everything before;
//! - if an intact record follows at its declared end, the damage is in the middle of the log:
//!   [`StoreError::Corrupt`] naming both offsets, and the file is left untouched;
//! - a length field above [`MAX_RECORD_BODY`] is never written by this code (nor by a torn write of
//!   it), so it is [`StoreError::Corrupt`] too.
//!
//! Then every extent in which a live value has a piece is read and checked against its CRC-32
//! (a segment file missing, too short, or bytes not matching):
//! - if the damaged extent was appended by the **last** record, that record is a torn write (its
//!   log record reached the disk, its data did not; it was never acknowledged): the log is
//!   truncated at the record's start, the truncation is synced, and the shorter log is replayed
//!   and checked again;
//! - any other damaged extent is [`StoreError::Corrupt`] ([`Corruption::SegmentData`]), and no
//!   file is modified.
//!
//! Segment bytes that no record names (a data write whose log record did not survive, or the
//! preallocated tail) are never read: they are dead space, and their segment goes once nothing
//! in it is live.
//!
//! A damaged length field in the middle of the log can make the following record unfindable; it is
//! then indistinguishable from a torn tail in this format and is truncated as one.
//!
//! A log shorter than its header holds no record (creation syncs the header before the store is
//! used), so it is rewritten as a fresh log. A wrong magic or version is [`StoreError::Corrupt`].
//!
//! # Compaction
//!
//! Compaction rewrites the metadata only: data values become slices ops naming the pieces they
//! already have, and no segment byte is read or written. After a commit, if the log is larger
//! than [`WalOptions::compact_min_bytes`] and larger than [`WalOptions::compact_ratio`] times the
//! size a compacted log would have, the live map is written (in records of at most
//! [`COMPACT_CHUNK_BYTES`] of body) to `wal.log.tmp`, which is synced, renamed over `wal.log`, and
//! the directory is synced. A crash at any point leaves either the old or the new log complete,
//! and the leftover temporary file is deleted on the next open. Both logs name the same live
//! pieces, so segment deletion does not depend on which one survives.
//!
//! With [`WalOptions::background_compaction`] (the default) commits do not wait for it: a thread
//! writes a snapshot of the live map as of log offset `O` (the map is cloned; values are shared),
//! then copies the records the log gained after `O`, which are complete and synced, while
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
//! | `format.rs` | the log's byte layout: file header, record encoding and decoding, checksums |
//! | `value.rs` | extents, pieces and values, and slicing them |
//! | `plan.rs` | staging a commit: placing data, resolving slices, limits, its log record |
//! | `segments.rs` | segment files: creation, direct (or vectored) appends, syncs, deletion |
//! | `read.rs` | reading data back: checking live extents on open, assembling loaded values |
//! | `replay.rs` | reading the log back on open and the crash rule |
//! | `compaction.rs` | compaction, in the committing thread or on a background thread |
//! | `lock.rs` | the `LOCK` file |
//! | `live.rs` | the in-memory map, live pieces per segment, the size a compacted log would have |
//! | `files.rs` | directory creation and syncs, file removal |
//! | `tests.rs`, `tests_segments.rs`, `test_support.rs` | tests of the whole store and the fixtures all tests share |
//!
//! Each file's own tests sit at its end.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::error::IoContext;
#[cfg(doc)]
use super::{Corruption, WriteOp};
use super::{Store, StoreError, StoreStats, WriteBatch};
use compaction::Background;
use files::{create_dir_durably, remove_if_exists};
use live::LiveMap;
use lock::DirLock;
use plan::{Plan, Staged};
use segments::Segments;
use value::Value;

mod compaction;
mod files;
mod format;
mod live;
mod lock;
mod plan;
mod read;
mod replay;
mod segments;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_segments;
mod value;

pub use compaction::{COMPACT_CHUNK_BYTES, TAIL_CATCH_UP_BYTES};
pub use format::{MAX_KEY_LEN, MAX_RECORD_BODY};
pub use plan::MAX_DATA_VALUE;
pub use segments::SEGMENT_BYTES;

const LOG_NAME: &str = "wal.log";
const TMP_NAME: &str = "wal.log.tmp";

/// When [`WalStore`] compacts its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Never compact a log smaller than this many bytes (default 64 MiB).
    pub compact_min_bytes: u64,
    /// Compact when the log is larger than this multiple of the size a compacted log would have
    /// (default 4: every metadata byte committed is written about 1.33 times, at the price of a
    /// log up to four times its live size). Values of 1 or less compact after nearly every commit
    /// once the log exceeds `compact_min_bytes`.
    pub compact_ratio: u64,
    /// Compact on a background thread (default): commits are not held up by the rewrite, only by
    /// the final copy of at most [`TAIL_CATCH_UP_BYTES`] and two syncs.
    pub background_compaction: bool,
    /// Size of a segment file (default [`SEGMENT_BYTES`], which says why).
    pub segment_bytes: u64,
    /// Write segments with direct I/O, past the page cache (default), where the file system
    /// takes it; see [`WalStats::direct_io`] for what the store does.
    pub direct_io: bool,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions {
            compact_min_bytes: 64 << 20,
            compact_ratio: 4,
            background_compaction: true,
            segment_bytes: SEGMENT_BYTES,
            direct_io: true,
        }
    }
}

/// The state of a [`WalStore`] (sizes are current values, counts since it was opened); what it
/// wrote is in [`StoreStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Current size of `wal.log` in bytes, header included.
    pub log_bytes: u64,
    /// Bytes of keys and values of the live entries (as [`WriteBatch::size_bytes`] counts them).
    pub live_bytes: u64,
    /// Number of live entries.
    pub live_entries: u64,
    /// Segment files present.
    pub segments: u64,
    /// Commits that wrote a record (empty commits are not counted).
    pub commits: u64,
    /// Compactions completed.
    pub compactions: u64,
    /// Background compactions that failed (the store kept its old log and went on).
    pub compaction_failures: u64,
    /// Whether segments are written with direct I/O (asked for, and taken by the file system).
    pub direct_io: bool,
}

/// A [`Store`] kept in a write-ahead log and segment files on disk, replayed into memory on open
/// (see the module documentation for the format and the crash rules).
pub struct WalStore {
    /// `wal.log`, opened for reading and appending.
    file: File,
    /// The store's directory.
    dir: PathBuf,
    /// `dir/wal.log`, the path of `file` (for error reports and compaction).
    log: PathBuf,
    /// Length of `wal.log`: every byte below it is complete and synced.
    log_bytes: u64,
    options: WalOptions,
    live: LiveMap,
    segments: Segments,
    /// Counts of commits and compactions (sizes are filled in by [`WalStore::wal_stats`]).
    stats: WalStats,
    /// What the store wrote.
    io: StoreStats,
    /// Set when a write, sync or compaction failed: the store then refuses every call.
    poisoned: bool,
    /// A background compaction in progress.
    background: Option<Background>,
    /// Declared last so that the lock is released after the files are closed.
    _lock: DirLock,
}

impl fmt::Debug for WalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalStore")
            .field("dir", &self.dir)
            .field("stats", &self.wal_stats())
            .field("io", &self.io)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl WalStore {
    /// Opens (creating if needed) the store in `dir` with default [`WalOptions`].
    ///
    /// Creates `dir` if missing, takes the `LOCK` file ([`StoreError::Locked`] if a live process
    /// holds it; a lock left by a dead process is taken over), deletes a leftover `wal.log.tmp`,
    /// replays `wal.log` and checks the live segment data, cutting off a torn last write, and
    /// deletes segment files nothing live is in (see the module documentation).
    ///
    /// # Errors
    ///
    /// [`StoreError::Locked`] (or [`StoreError::LockContended`]) if another running process has
    /// the store open, [`StoreError::OldLayout`] for a store of the previous format,
    /// [`StoreError::Corrupt`] if the log or the live segment data is damaged other than by a
    /// torn last write or has a wrong magic or version, [`StoreError::Io`] if a file operation
    /// fails.
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
        let mut io = StoreStats::default();
        let (file, log_bytes, live) = replay::recover_log(dir, &mut io)?;
        let segments = Segments::open(
            dir,
            options.segment_bytes,
            options.direct_io,
            &live.refs,
            &mut io,
        )?;
        Ok(WalStore {
            file,
            dir: dir.to_path_buf(),
            log: dir.join(LOG_NAME),
            log_bytes,
            options,
            live,
            segments,
            stats: WalStats::default(),
            io,
            poisoned: false,
            background: None,
            _lock: lock,
        })
    }

    /// The store's sizes and counts.
    pub fn wal_stats(&self) -> WalStats {
        WalStats {
            log_bytes: self.log_bytes,
            live_bytes: self.live.bytes,
            live_entries: self.live.map.len() as u64,
            segments: self.segments.count(),
            direct_io: self.segments.direct_io(),
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

    /// Writes a staged commit: its data to the segments, its record to the log, then syncs the
    /// segments written and the log.
    fn write(&mut self, plan: &Plan<'_>) -> Result<(), StoreError> {
        self.segments.append(&plan.writes, &mut self.io)?;
        assert_eq!(
            self.segments.cursor(),
            plan.cursor,
            "the data went where planned"
        );
        self.file.write_all(&plan.record).at(&self.log)?;
        self.segments.sync(&mut self.io)?;
        self.file.sync_data().at(&self.log)?;
        self.io.syncs += 1;
        self.io.log_bytes_appended += plan.record.len() as u64;
        self.log_bytes += plan.record.len() as u64;
        if let Some(b) = &self.background {
            b.synced_up_to(self.log_bytes);
        }
        Ok(())
    }

    /// Applies a durable commit to the live map.
    fn apply(&mut self, plan: Plan<'_>) {
        for (key, staged) in plan.ops {
            match staged {
                Staged::Put(value) => self.live.put(key.to_vec(), Value::Inline(value)),
                Staged::Delete => self.live.delete(key),
                Staged::Data { pieces, .. } => self.live.put(key.to_vec(), Value::Data(pieces)),
            }
        }
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
        let Some(plan) = plan::plan(batches, &self.live, self.segments.cursor())? else {
            return Ok(());
        };
        self.poison_on_error(|s| s.write(&plan))?;
        self.apply(plan);
        self.stats.commits += 1;
        self.poison_on_error(|s| {
            s.segments.remove_dead(&s.live.refs, &mut s.io)?;
            s.compact_if_due()
        })
    }

    fn load(&mut self) -> Result<Vec<(Vec<u8>, Bytes)>, StoreError> {
        self.check_alive()?;
        read::load_values(&self.dir, &self.live)
    }

    fn stats(&self) -> StoreStats {
        self.io
    }
}
