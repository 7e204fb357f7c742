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
//! write or the sync fails, the store is *poisoned*: every later call returns an error (fail-stop),
//! since the file's state is then unknown. A commit with no operations writes and syncs nothing.
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

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::{Store, StoreError, WriteBatch, WriteOp};

/// Longest key accepted by [`WalStore::commit`] and by replay, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Largest record body (one commit's encoded operations), in bytes.
pub const MAX_RECORD_BODY: usize = 1 << 30;

/// Largest record body written by compaction, in bytes (a single larger entry gets its own record).
pub const COMPACT_CHUNK_BYTES: usize = 64 << 20;

/// A background compaction hands over to the committing thread once fewer than this many bytes of
/// the log remain to be copied (the committing thread then copies at most this much, plus what one
/// commit adds).
pub const TAIL_CATCH_UP_BYTES: u64 = 1 << 20;

const LOG_NAME: &str = "wal.log";
const TMP_NAME: &str = "wal.log.tmp";
const LOCK_NAME: &str = "LOCK";
const MAGIC: [u8; 8] = *b"SSEALWAL";
const VERSION: u32 = 1;
const FILE_HEADER_LEN: usize = 12;
const RECORD_HEADER_LEN: usize = 8;
const COUNT_LEN: usize = 4;
const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;
/// Encoding overhead of a put beyond its key and value: tag, key length, value length.
const PUT_OVERHEAD: usize = 9;
/// Encoding overhead of a delete beyond its key: tag, key length.
const DELETE_OVERHEAD: usize = 5;

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

/// A compaction running on its own thread.
struct Background {
    /// Length of the old log whose records are complete and synced (the thread copies up to it).
    synced: Arc<AtomicU64>,
    /// Returns the temporary file (snapshot and copied records) and the old-log offset copied up
    /// to.
    thread: std::thread::JoinHandle<io::Result<(File, u64)>>,
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
    dir: PathBuf,
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
    /// [`StoreError::Locked`] if another running process has the store open,
    /// [`StoreError::Corrupt`] if the log is damaged other than by a torn tail or has a wrong magic
    /// or version, [`StoreError::Io`] if a file operation fails.
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
        let file = open_log(dir, &mut stats)?;
        let replayed = replay(&file)?;
        if replayed.torn {
            file.set_len(replayed.valid_len)?;
            file.sync_all()?;
            stats.syncs += 1;
        }
        stats.log_bytes = replayed.valid_len;
        Ok(WalStore {
            file,
            dir: dir.to_path_buf(),
            options,
            live: replayed.live,
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
            return Err(StoreError::Io(io::Error::other(
                "write-ahead log is stopped after an earlier write, sync or compaction failure",
            )));
        }
        Ok(())
    }

    /// Appends one encoded record and syncs it.
    fn append(&mut self, record: &[u8]) -> Result<(), StoreError> {
        self.file.write_all(record)?;
        self.file.sync_data()?;
        self.stats.syncs += 1;
        self.stats.log_bytes += record.len() as u64;
        if let Some(b) = &self.background {
            b.synced.store(self.stats.log_bytes, Ordering::Release);
        }
        Ok(())
    }

    /// Starts a background compaction of the log as it is now.
    fn start_background(&mut self) {
        let synced = Arc::new(AtomicU64::new(self.stats.log_bytes));
        let snapshot = self.live.map.clone();
        let from = self.stats.log_bytes;
        let (dir, shared) = (self.dir.clone(), synced.clone());
        let thread = std::thread::Builder::new()
            .name("wal-compact".into())
            .spawn(move || compact_in_background(&dir, &snapshot, from, &shared));
        match thread {
            Ok(thread) => self.background = Some(Background { synced, thread }),
            Err(_) => self.stats.compaction_failures += 1,
        }
    }

    /// Finishes the background compaction if its thread is done (or `wait`): copies the last
    /// records, syncs, renames. A failed thread leaves the old log in place.
    fn finish_background(&mut self, wait: bool) -> Result<(), StoreError> {
        let done = self
            .background
            .as_ref()
            .is_some_and(|b| b.thread.is_finished());
        if !done && !wait {
            return Ok(());
        }
        let Some(b) = self.background.take() else {
            return Ok(());
        };
        let tmp = self.dir.join(TMP_NAME);
        let (mut out, copied) = match b.thread.join() {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => {
                self.stats.compaction_failures += 1;
                let _ = fs::remove_file(&tmp);
                return Ok(());
            }
        };
        let log = self.dir.join(LOG_NAME);
        copy_range(&log, copied, self.stats.log_bytes, &mut out)?;
        out.sync_all()?;
        self.stats.syncs += 1;
        self.install_compacted(&tmp, &log)
    }

    /// Renames the synced compacted log `tmp` over `log`, syncs the directory and appends to it
    /// from now on.
    fn install_compacted(&mut self, tmp: &Path, log: &Path) -> Result<(), StoreError> {
        fs::rename(tmp, log)?;
        sync_dir(&self.dir)?;
        self.stats.syncs += 1;
        self.file = OpenOptions::new().read(true).append(true).open(log)?;
        self.stats.log_bytes = self.file.metadata()?.len();
        self.stats.compactions += 1;
        Ok(())
    }

    /// Waits for a background compaction to finish and completes it (for tests and shutdown).
    pub fn finish_compaction(&mut self) -> Result<(), StoreError> {
        self.check_alive()?;
        let result = self.finish_background(true);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    fn should_compact(&self) -> bool {
        let log = self.stats.log_bytes;
        let ratio_limit = self
            .options
            .compact_ratio
            .saturating_mul(self.live.compacted_len());
        log > self.options.compact_min_bytes && log > ratio_limit
    }

    /// Rewrites the log as the live map (see the module documentation).
    fn compact(&mut self) -> Result<(), StoreError> {
        let tmp = self.dir.join(TMP_NAME);
        let log = self.dir.join(LOG_NAME);
        write_snapshot(&tmp, &self.live.map)?;
        self.stats.syncs += 1;
        self.install_compacted(&tmp, &log)
    }
}

impl Drop for WalStore {
    /// A background compaction still running is waited for and discarded: the old log is
    /// complete, and its temporary file is removed.
    fn drop(&mut self) {
        if let Some(b) = self.background.take() {
            let _ = b.thread.join();
            let _ = fs::remove_file(self.dir.join(TMP_NAME));
        }
    }
}

impl Store for WalStore {
    fn commit(&mut self, batches: &[WriteBatch]) -> Result<(), StoreError> {
        self.check_alive()?;
        let Some(record) = encode_commit(batches)? else {
            return Ok(());
        };
        if let Err(e) = self.append(&record) {
            self.poisoned = true;
            return Err(e);
        }
        for op in batches.iter().flat_map(|b| &b.ops) {
            match op {
                WriteOp::Put { key, value } => self.live.put(key.clone(), value.clone()),
                WriteOp::Delete { key } => self.live.delete(key),
            }
        }
        self.stats.commits += 1;
        if self.background.is_some() {
            if let Err(e) = self.finish_background(false) {
                self.poisoned = true;
                return Err(e);
            }
        } else if self.should_compact() {
            if self.options.background_compaction {
                self.start_background();
            } else if let Err(e) = self.compact() {
                self.poisoned = true;
                return Err(e);
            }
        }
        Ok(())
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

/// The live entries and the bytes of their keys and values.
#[derive(Default)]
struct LiveMap {
    map: BTreeMap<Vec<u8>, Bytes>,
    bytes: u64,
}

impl LiveMap {
    fn put(&mut self, key: Vec<u8>, value: Bytes) {
        let added = (key.len() + value.len()) as u64;
        let key_len = key.len() as u64;
        if let Some(old) = self.map.insert(key, value) {
            self.bytes -= key_len + old.len() as u64;
        }
        self.bytes += added;
    }

    fn delete(&mut self, key: &[u8]) {
        if let Some(old) = self.map.remove(key) {
            self.bytes -= (key.len() + old.len()) as u64;
        }
    }

    /// Size of the log a compaction would write now (one record's overhead; chunking adds a few
    /// bytes per [`COMPACT_CHUNK_BYTES`]).
    fn compacted_len(&self) -> u64 {
        let entries = self.map.len() as u64;
        let records = if entries == 0 {
            0
        } else {
            RECORD_HEADER_LEN + COUNT_LEN
        } as u64;
        FILE_HEADER_LEN as u64 + records + entries * PUT_OVERHEAD as u64 + self.bytes
    }
}

/// A record being encoded: header placeholder, op count placeholder, then ops.
struct RecordBuf {
    buf: Vec<u8>,
    count: u32,
}

impl RecordBuf {
    fn with_body_capacity(body_len: usize) -> RecordBuf {
        let mut buf = Vec::with_capacity(RECORD_HEADER_LEN + body_len);
        buf.resize(RECORD_HEADER_LEN + COUNT_LEN, 0);
        RecordBuf { buf, count: 0 }
    }

    fn body_len(&self) -> usize {
        self.buf.len() - RECORD_HEADER_LEN
    }

    fn push_put(&mut self, key: &[u8], value: &[u8]) {
        self.push_key(TAG_PUT, key);
        self.push_len(value.len());
        self.buf.extend_from_slice(value);
    }

    fn push_delete(&mut self, key: &[u8]) {
        self.push_key(TAG_DELETE, key);
    }

    fn push_key(&mut self, tag: u8, key: &[u8]) {
        self.count += 1;
        self.buf.push(tag);
        self.push_len(key.len());
        self.buf.extend_from_slice(key);
    }

    fn push_len(&mut self, len: usize) {
        let len = u32::try_from(len).expect("lengths are checked against MAX_RECORD_BODY");
        self.buf.extend_from_slice(&len.to_le_bytes());
    }

    /// Fills in the op count, length and checksum; returns the record's bytes.
    fn finish(mut self) -> Vec<u8> {
        assert!(self.count > 0, "a record holds at least one op");
        let body_len = self.body_len();
        assert!(body_len <= MAX_RECORD_BODY, "record body over the limit");
        let count_at = RECORD_HEADER_LEN..RECORD_HEADER_LEN + COUNT_LEN;
        self.buf[count_at].copy_from_slice(&self.count.to_le_bytes());
        let crc = crc32fast::hash(&self.buf[RECORD_HEADER_LEN..]);
        self.buf[0..4].copy_from_slice(&(body_len as u32).to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

/// Encodes all ops of `batches` as one record, or `None` if there are no ops.
fn encode_commit(batches: &[WriteBatch]) -> Result<Option<Vec<u8>>, StoreError> {
    let mut body_len = COUNT_LEN;
    let mut ops = 0usize;
    for op in batches.iter().flat_map(|b| &b.ops) {
        let (key, extra) = match op {
            WriteOp::Put { key, value } => (key, PUT_OVERHEAD.saturating_add(value.len())),
            WriteOp::Delete { key } => (key, DELETE_OVERHEAD),
        };
        if key.len() > MAX_KEY_LEN {
            return Err(StoreError::TooLarge(format!(
                "key of {} bytes (limit {MAX_KEY_LEN})",
                key.len()
            )));
        }
        body_len = body_len.saturating_add(key.len()).saturating_add(extra);
        ops += 1;
    }
    if ops == 0 {
        return Ok(None);
    }
    if body_len > MAX_RECORD_BODY {
        return Err(StoreError::TooLarge(format!(
            "commit of {body_len} encoded bytes (limit {MAX_RECORD_BODY})"
        )));
    }
    let mut record = RecordBuf::with_body_capacity(body_len);
    for op in batches.iter().flat_map(|b| &b.ops) {
        match op {
            WriteOp::Put { key, value } => record.push_put(key, value),
            WriteOp::Delete { key } => record.push_delete(key),
        }
    }
    assert_eq!(
        record.body_len(),
        body_len,
        "size computation matches encoding"
    );
    Ok(Some(record.finish()))
}

/// Reads fields out of a record body.
struct BodyReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> BodyReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "field of {n} bytes at body offset {} runs past the body",
                    self.pos
                )
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Decodes a record body (already checksummed) into its ops.
fn decode_body(body: &[u8]) -> Result<Vec<WriteOp>, String> {
    let mut r = BodyReader { buf: body, pos: 0 };
    let count = r.u32()? as usize;
    if count == 0 || count > body.len() / DELETE_OVERHEAD {
        return Err(format!("implausible op count {count}"));
    }
    let mut ops = Vec::with_capacity(count);
    for _ in 0..count {
        let tag = r.take(1)?[0];
        let key_len = r.u32()? as usize;
        if key_len > MAX_KEY_LEN {
            return Err(format!("key of {key_len} bytes (limit {MAX_KEY_LEN})"));
        }
        let key = r.take(key_len)?.to_vec();
        match tag {
            TAG_PUT => {
                let value_len = r.u32()? as usize;
                let value = Bytes::copy_from_slice(r.take(value_len)?);
                ops.push(WriteOp::Put { key, value });
            }
            TAG_DELETE => ops.push(WriteOp::Delete { key }),
            other => return Err(format!("unknown op tag {other}")),
        }
    }
    if r.pos != body.len() {
        return Err(format!("{} trailing bytes", body.len() - r.pos));
    }
    Ok(ops)
}

/// What [`read_record`] found at one offset.
enum Scan {
    /// An intact record: its ops, and where the next record starts.
    Good { ops: Vec<WriteOp>, end: u64 },
    /// A record failing its checks; `next` is its declared end if that lies inside the file.
    Bad { why: String, next: Option<u64> },
    /// A length field above [`MAX_RECORD_BODY`].
    Oversized { len: u64 },
}

/// Reads the record at `off` (where `reader` is positioned), within a file of `file_len` bytes.
fn read_record(reader: &mut impl Read, off: u64, file_len: u64) -> Result<Scan, StoreError> {
    let bad = |why: &str, next| {
        Ok(Scan::Bad {
            why: why.to_string(),
            next,
        })
    };
    if file_len - off < RECORD_HEADER_LEN as u64 {
        return bad("record header cut short", None);
    }
    let mut header = [0u8; RECORD_HEADER_LEN];
    reader.read_exact(&mut header)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD_BODY as u64 {
        return Ok(Scan::Oversized { len });
    }
    let end = off + RECORD_HEADER_LEN as u64 + len;
    if end > file_len {
        return bad("record body cut short", None);
    }
    let mut body = vec![0u8; len as usize];
    reader.read_exact(&mut body)?;
    if crc32fast::hash(&body) != crc {
        return bad("checksum mismatch", Some(end));
    }
    match decode_body(&body) {
        Ok(ops) => Ok(Scan::Good { ops, end }),
        Err(why) => bad(&why, Some(end)),
    }
}

/// The result of replaying a log.
struct Replayed {
    live: LiveMap,
    /// Length of the intact prefix of the log.
    valid_len: u64,
    /// Whether a torn tail follows `valid_len` and must be cut off.
    torn: bool,
}

/// Replays `file` (whose header has been checked) from the first record on, applying the crash
/// rule of the module documentation.
fn replay(file: &File) -> Result<Replayed, StoreError> {
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    reader.seek(SeekFrom::Start(FILE_HEADER_LEN as u64))?;
    let mut live = LiveMap::default();
    let mut off = FILE_HEADER_LEN as u64;
    while off < file_len {
        match read_record(&mut reader, off, file_len)? {
            Scan::Good { ops, end } => {
                for op in ops {
                    match op {
                        WriteOp::Put { key, value } => live.put(key, value),
                        WriteOp::Delete { key } => live.delete(&key),
                    }
                }
                off = end;
            }
            Scan::Oversized { len } => {
                return Err(StoreError::Corrupt(format!(
                    "record at offset {off} declares a body of {len} bytes (limit {MAX_RECORD_BODY})"
                )));
            }
            Scan::Bad { why, next } => {
                if let Some(next) = next.filter(|&n| n < file_len) {
                    if let Scan::Good { .. } = read_record(&mut reader, next, file_len)? {
                        return Err(StoreError::Corrupt(format!(
                            "record at offset {off} is damaged ({why}) but an intact record \
                             follows at offset {next}"
                        )));
                    }
                }
                return Ok(Replayed {
                    live,
                    valid_len: off,
                    torn: true,
                });
            }
        }
    }
    Ok(Replayed {
        live,
        valid_len: off,
        torn: false,
    })
}

/// Opens `dir/wal.log` for reading and appending, creating it (or rewriting one shorter than its
/// header) with a synced header, and checks the header.
fn open_log(dir: &Path, stats: &mut WalStats) -> Result<File, StoreError> {
    let path = dir.join(LOG_NAME);
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)?;
    let len = file.metadata()?.len();
    if len < FILE_HEADER_LEN as u64 {
        file.set_len(0)?;
        file.write_all(&file_header())?;
        file.sync_all()?;
        sync_dir(dir)?;
        stats.syncs += 2;
        return Ok(file);
    }
    let mut header = [0u8; FILE_HEADER_LEN];
    (&file).read_exact(&mut header)?;
    if header[..8] != MAGIC {
        return Err(StoreError::Corrupt(format!(
            "{} does not start with the log magic (found {:02x?})",
            path.display(),
            &header[..8]
        )));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != VERSION {
        return Err(StoreError::Corrupt(format!(
            "{} has format version {version}, this build reads version {VERSION}",
            path.display()
        )));
    }
    Ok(file)
}

fn file_header() -> [u8; FILE_HEADER_LEN] {
    let mut header = [0u8; FILE_HEADER_LEN];
    header[..8].copy_from_slice(&MAGIC);
    header[8..].copy_from_slice(&VERSION.to_le_bytes());
    header
}

/// Writes a fresh log holding `map` as puts to `path`, and syncs it.
/// The body of a background compaction: writes the snapshot to `wal.log.tmp`, then copies the
/// old log's records from `from` on while more than [`TAIL_CATCH_UP_BYTES`] remain.
fn compact_in_background(
    dir: &Path,
    snapshot: &BTreeMap<Vec<u8>, Bytes>,
    from: u64,
    synced: &AtomicU64,
) -> io::Result<(File, u64)> {
    let tmp = dir.join(TMP_NAME);
    write_snapshot(&tmp, snapshot).map_err(|e| match e {
        StoreError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    })?;
    let mut out = OpenOptions::new().append(true).open(&tmp)?;
    let log = dir.join(LOG_NAME);
    let mut copied = from;
    loop {
        let end = synced.load(Ordering::Acquire);
        if end.saturating_sub(copied) < TAIL_CATCH_UP_BYTES {
            return Ok((out, copied));
        }
        copy_range(&log, copied, end, &mut out)?;
        copied = end;
    }
}

/// Appends bytes `from..to` of the file at `path` to `out`.
fn copy_range(path: &Path, from: u64, to: u64, out: &mut File) -> io::Result<()> {
    if to <= from {
        return Ok(());
    }
    let mut src = File::open(path)?;
    src.seek(SeekFrom::Start(from))?;
    let copied = io::copy(&mut src.take(to - from), out)?;
    if copied != to - from {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the log is shorter than its synced length",
        ));
    }
    Ok(())
}

fn write_snapshot(path: &Path, map: &BTreeMap<Vec<u8>, Bytes>) -> Result<(), StoreError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&file_header())?;
    let mut record = RecordBuf::with_body_capacity(0);
    for (key, value) in map {
        let op_len = PUT_OVERHEAD + key.len() + value.len();
        if record.count > 0 && record.body_len() + op_len > COMPACT_CHUNK_BYTES {
            out.write_all(&record.finish())?;
            record = RecordBuf::with_body_capacity(0);
        }
        record.push_put(key, value);
    }
    if record.count > 0 {
        out.write_all(&record.finish())?;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(())
}

/// Creates `dir` and its missing ancestors, syncing the parent of each one created so that the
/// store does not vanish with its directory entry after a power loss.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .collect();
    fs::create_dir_all(dir)?;
    for created in missing {
        match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent)?,
            _ => sync_dir(Path::new("."))?,
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The `LOCK` file of an open store, removed on drop.
///
/// It holds `"<pid> <start time>"` (the start time from `/proc/<pid>/stat`, so that a reused pid,
/// common in containers, is not mistaken for the holder). A lock whose holder is no longer running
/// is taken over. Where `/proc` is unavailable liveness cannot be checked and every existing lock
/// is taken over. The check-then-take-over is not atomic: the lock guards against starting a
/// second node on the same directory, not against two starting in the same instant.
struct DirLock {
    path: PathBuf,
    contents: String,
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        let path = dir.join(LOCK_NAME);
        let pid = std::process::id();
        let contents = format!("{pid} {}\n", process_start_time(pid).unwrap_or_default());
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(contents.as_bytes())?;
                    return Ok(DirLock { path, contents });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&path).unwrap_or_default();
                    if holder_alive(&holder) {
                        return Err(StoreError::Locked(format!(
                            "{} is held by process {}",
                            path.display(),
                            holder.trim()
                        )));
                    }
                    remove_if_exists(&path)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Locked(format!(
            "{} was taken by another process while opening",
            path.display()
        )))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Only remove the lock if it is still ours; errors cannot be reported from drop.
        if fs::read_to_string(&self.path).is_ok_and(|c| c == self.contents) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Whether the process recorded in a lock file's `contents` still runs.
fn holder_alive(contents: &str) -> bool {
    let mut fields = contents.split_whitespace();
    let Some(pid) = fields.next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    match process_start_time(pid) {
        None => false,
        Some(start) => fields.next().is_none_or(|recorded| recorded == start),
    }
}

/// The start time (field 22 of `/proc/<pid>/stat`) of a running process, or `None` if it is not
/// running or `/proc` is unavailable.
fn process_start_time(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: skip past it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    type Entries = Vec<(Vec<u8>, Bytes)>;

    /// A unique directory under the system temp dir, removed on drop.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(name: &str) -> TestDir {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            // pid + counter is unique among live test processes; a stale leftover is removed.
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let pid = std::process::id();
            let dir = std::env::temp_dir().join(format!("sleepyseal-wal-{name}-{pid}-{n}"));
            let _ = fs::remove_dir_all(&dir);
            TestDir(dir)
        }
        fn path(&self) -> &Path {
            &self.0
        }
        fn log(&self) -> PathBuf {
            self.0.join(LOG_NAME)
        }
        fn log_len(&self) -> u64 {
            fs::metadata(self.log()).map_or(0, |m| m.len())
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn put(key: &str, value: &str) -> WriteBatch {
        let mut b = WriteBatch::new();
        b.put(
            key.as_bytes().to_vec(),
            Bytes::copy_from_slice(value.as_bytes()),
        );
        b
    }

    fn del(key: &str) -> WriteBatch {
        let mut b = WriteBatch::new();
        b.delete(key.as_bytes().to_vec());
        b
    }

    fn kv(pairs: &[(&str, &str)]) -> Entries {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), Bytes::copy_from_slice(v.as_bytes())))
            .collect()
    }

    fn tiny_compaction(min: u64) -> WalOptions {
        WalOptions {
            compact_min_bytes: min,
            compact_ratio: 2,
            background_compaction: false,
        }
    }

    /// Commits `key{i}` = `value{i}` for each `i` in `range`; returns the log length after each.
    fn commit_numbered(store: &mut WalStore, range: std::ops::Range<u32>) -> Vec<u64> {
        range
            .map(|i| {
                store
                    .commit(&[put(&format!("key{i}"), &format!("value{i}"))])
                    .expect("commit");
                store.stats().log_bytes
            })
            .collect()
    }

    fn numbered(range: std::ops::Range<u32>) -> Entries {
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

    fn append_to_log(dir: &TestDir, bytes: &[u8]) -> io::Result<()> {
        OpenOptions::new()
            .append(true)
            .open(dir.log())?
            .write_all(bytes)
    }

    #[test]
    fn put_delete_round_trip_across_reopen_in_key_order() -> Result<(), StoreError> {
        let dir = TestDir::new("roundtrip");
        {
            let mut s = WalStore::open(dir.path())?;
            s.commit(&[put("b", "2")])?;
            s.commit(&[put("c", "3")])?;
            s.commit(&[put("a", "1")])?;
            s.commit(&[put("d", "4")])?;
            s.commit(&[del("d"), del("missing")])?;
            s.commit(&[put("b", "22")])?;
            assert_eq!(s.load()?, kv(&[("a", "1"), ("b", "22"), ("c", "3")]));
        }
        let mut s = WalStore::open(dir.path())?;
        assert_eq!(s.load()?, kv(&[("a", "1"), ("b", "22"), ("c", "3")]));
        let stats = s.stats();
        assert_eq!((stats.live_entries, stats.live_bytes), (3, 7));
        assert_eq!(stats.log_bytes, dir.log_len());
        Ok(())
    }

    #[test]
    fn group_commit_is_one_sync_and_later_batches_win() -> Result<(), StoreError> {
        let dir = TestDir::new("group");
        {
            let mut s = WalStore::open(dir.path())?;
            let before = s.stats();
            let mut first = put("x", "1");
            first.extend(put("y", "1"));
            let mut second = put("x", "2");
            second.extend(del("y"));
            s.commit(&[first, second, put("z", "3")])?;
            let after = s.stats();
            assert_eq!(after.commits, before.commits + 1);
            assert_eq!(after.syncs, before.syncs + 1);
        }
        let mut s = WalStore::open(dir.path())?;
        assert_eq!(s.load()?, kv(&[("x", "2"), ("z", "3")]));
        Ok(())
    }

    #[test]
    fn torn_group_commit_is_all_or_nothing() -> Result<(), StoreError> {
        let dir = TestDir::new("group-torn");
        {
            let mut s = WalStore::open(dir.path())?;
            s.commit(&[put("before", "0")])?;
            s.commit(&[put("a", "1"), put("b", "2"), del("before")])?;
        }
        let len = dir.log_len();
        OpenOptions::new()
            .write(true)
            .open(dir.log())?
            .set_len(len - 1)?;
        let mut s = WalStore::open(dir.path())?;
        assert_eq!(s.load()?, kv(&[("before", "0")]));
        Ok(())
    }

    #[test]
    fn torn_tail_cut_short_is_dropped_and_truncated() -> Result<(), StoreError> {
        let dir = TestDir::new("torn-short");
        let sizes = {
            let mut s = WalStore::open(dir.path())?;
            commit_numbered(&mut s, 0..3)
        };
        OpenOptions::new()
            .write(true)
            .open(dir.log())?
            .set_len(sizes[2] - 3)?;
        {
            let mut s = WalStore::open(dir.path())?;
            assert_eq!(s.load()?, numbered(0..2));
            assert_eq!(dir.log_len(), sizes[1], "the torn record is cut off");
            assert_eq!(s.stats().log_bytes, sizes[1]);
            s.commit(&[put("key9", "value9")])?;
        }
        let mut s = WalStore::open(dir.path())?;
        let mut expected = numbered(0..2);
        expected.extend(numbered(9..10));
        assert_eq!(s.load()?, expected);
        Ok(())
    }

    #[test]
    fn torn_tail_garbage_is_dropped_and_truncated() -> Result<(), StoreError> {
        let mut bad_crc = Vec::new();
        bad_crc.extend_from_slice(&10u32.to_le_bytes());
        bad_crc.extend_from_slice(&0xdead_beefu32.to_le_bytes());
        bad_crc.extend_from_slice(&[7u8; 10]);
        let tails: [(&str, Vec<u8>); 4] = [
            ("short header", vec![1, 2, 3]),
            ("zeros", vec![0; 40]),
            ("bad crc", bad_crc),
            ("body past end", vec![200, 0, 0, 0, 1, 2, 3, 4, 5]),
        ];
        for (name, tail) in tails {
            let dir = TestDir::new("torn-garbage");
            let sizes = {
                let mut s = WalStore::open(dir.path())?;
                commit_numbered(&mut s, 0..2)
            };
            append_to_log(&dir, &tail)?;
            {
                let mut s = WalStore::open(dir.path())?;
                assert_eq!(s.load()?, numbered(0..2), "{name}");
                assert_eq!(dir.log_len(), sizes[1], "{name}");
                s.commit(&[put("key2", "value2")])?;
            }
            let mut s = WalStore::open(dir.path())?;
            assert_eq!(s.load()?, numbered(0..3), "{name}");
        }
        Ok(())
    }

    #[test]
    fn every_prefix_of_the_log_opens_as_a_prefix_of_the_commits() -> Result<(), StoreError> {
        let dir = TestDir::new("prefixes");
        let mut states: Vec<(u64, Entries)> = Vec::new();
        {
            let mut s = WalStore::open(dir.path())?;
            states.push((s.stats().log_bytes, Vec::new()));
            let groups = [
                vec![put("a", "1")],
                vec![put("b", "two"), put("c", "three")],
                vec![del("a"), put("b", "TWO")],
                vec![put("d", "")],
            ];
            for group in groups {
                s.commit(&group)?;
                states.push((s.stats().log_bytes, s.load()?));
            }
        }
        let full = fs::read(dir.log())?;
        for len in FILE_HEADER_LEN..=full.len() {
            fs::write(dir.log(), &full[..len])?;
            let mut s = WalStore::open(dir.path())?;
            let (end, expected) = states
                .iter()
                .rev()
                .find(|(end, _)| *end <= len as u64)
                .expect("the header-only state is always a prefix");
            assert_eq!(&s.load()?, expected, "prefix of {len} bytes");
            assert_eq!(dir.log_len(), *end, "prefix of {len} bytes");
        }
        Ok(())
    }

    #[test]
    fn mid_file_damage_is_corrupt_and_left_untouched() -> Result<(), StoreError> {
        let header = FILE_HEADER_LEN;
        // (what, byte offset to change, new byte): a body byte and a checksum byte of record 1.
        let damages = [
            ("body", header + RECORD_HEADER_LEN + 6, None),
            ("crc", header + 5, None),
        ];
        let oversized = [("length", header + 3, Some(0xffu8))];
        for (what, at, value) in damages.into_iter().chain(oversized) {
            let dir = TestDir::new("midfile");
            {
                let mut s = WalStore::open(dir.path())?;
                commit_numbered(&mut s, 0..3);
            }
            let mut bytes = fs::read(dir.log())?;
            bytes[at] = value.unwrap_or(bytes[at] ^ 0x10);
            fs::write(dir.log(), &bytes)?;
            match WalStore::open(dir.path()) {
                Err(StoreError::Corrupt(msg)) => {
                    assert!(msg.contains(&format!("offset {header}")), "{what}: {msg}")
                }
                other => panic!("{what}: expected Corrupt, got {other:?}"),
            }
            assert_eq!(
                fs::read(dir.log())?,
                bytes,
                "{what}: a corrupt log is not modified"
            );
        }
        Ok(())
    }

    #[test]
    fn wrong_magic_or_version_is_corrupt() -> Result<(), StoreError> {
        let mut wrong_version = file_header();
        wrong_version[8] = 2;
        for (what, header) in [
            ("magic", *b"NOTAWAL!\x01\0\0\0"),
            ("version", wrong_version),
        ] {
            let dir = TestDir::new("magic");
            fs::create_dir_all(dir.path())?;
            fs::write(dir.log(), header)?;
            match WalStore::open(dir.path()) {
                Err(StoreError::Corrupt(_)) => {}
                other => panic!("{what}: expected Corrupt, got {other:?}"),
            }
        }
        Ok(())
    }

    #[test]
    fn log_shorter_than_its_header_is_reinitialized() -> Result<(), StoreError> {
        let dir = TestDir::new("short-header");
        fs::create_dir_all(dir.path())?;
        fs::write(dir.log(), &MAGIC[..5])?;
        {
            let mut s = WalStore::open(dir.path())?;
            assert_eq!(s.load()?, Vec::new());
            s.commit(&[put("k", "v")])?;
        }
        let mut s = WalStore::open(dir.path())?;
        assert_eq!(s.load()?, kv(&[("k", "v")]));
        Ok(())
    }

    #[test]
    fn compaction_bounds_the_log_and_keeps_content() -> Result<(), StoreError> {
        let dir = TestDir::new("compact");
        let options = tiny_compaction(4096);
        let mut model = BTreeMap::new();
        let mut written = 0u64;
        {
            let mut s = WalStore::open_with(dir.path(), options)?;
            for round in 0..200u32 {
                let mut group = WriteBatch::new();
                for k in 0..8u32 {
                    let (key, value) = (format!("key{k}"), format!("{round:05}-{k}-").repeat(6));
                    model.insert(key.clone().into_bytes(), Bytes::from(value.clone()));
                    group.extend(put(&key, &value));
                }
                written += group.size_bytes() as u64;
                s.commit(&[group])?;
            }
            s.commit(&[del("key7")])?;
            model.remove(b"key7".as_slice());
            let stats = s.stats();
            assert!(stats.compactions > 0, "{stats:?}");
            assert_eq!(stats.log_bytes, dir.log_len());
            let bound = options.compact_min_bytes.max(2 * s.live.compacted_len());
            assert!(stats.log_bytes <= bound, "{stats:?} above {bound}");
            assert!(
                stats.log_bytes * 10 < written,
                "the log is much smaller than all writes"
            );
        }
        let mut s = WalStore::open_with(dir.path(), options)?;
        let expected: Entries = model.into_iter().collect();
        assert_eq!(s.load()?, expected);
        assert_eq!(s.stats().log_bytes, dir.log_len());
        Ok(())
    }

    /// Background compaction: commits go on while the snapshot is written, the records they add
    /// are carried into the new log, and every reopen (after a finished compaction, or with one
    /// still running when the store is dropped) replays to the model.
    #[test]
    fn background_compaction_keeps_every_commit() -> Result<(), StoreError> {
        let dir = TestDir::new("compact-background");
        let options = WalOptions {
            background_compaction: true,
            ..tiny_compaction(4096)
        };
        let mut model = BTreeMap::new();
        for session in 0..3u32 {
            let mut s = WalStore::open_with(dir.path(), options)?;
            assert_eq!(s.load()?, model.clone().into_iter().collect::<Entries>());
            for round in 0..300u32 {
                let mut group = WriteBatch::new();
                for k in 0..6u32 {
                    let key = format!("key{}", (round * 7 + k) % 40);
                    let value = format!("{session}-{round:05}-{k}-").repeat(8);
                    model.insert(key.clone().into_bytes(), Bytes::from(value.clone()));
                    group.extend(put(&key, &value));
                }
                s.commit(&[group])?;
            }
            if session < 2 {
                s.finish_compaction()?;
                let stats = s.stats();
                assert!(stats.compactions > 0, "{stats:?}");
                assert_eq!(stats.compaction_failures, 0, "{stats:?}");
                assert_eq!(stats.log_bytes, dir.log_len());
            }
            // Session 2 drops the store with a compaction possibly still running.
        }
        let mut s = WalStore::open_with(dir.path(), options)?;
        assert_eq!(s.load()?, model.into_iter().collect::<Entries>());
        assert!(!dir.path().join(TMP_NAME).exists());
        Ok(())
    }

    #[test]
    fn compaction_of_an_empty_map_leaves_a_bare_header() -> Result<(), StoreError> {
        let dir = TestDir::new("compact-empty");
        {
            let mut s = WalStore::open_with(dir.path(), tiny_compaction(64))?;
            while s.stats().compactions == 0 {
                s.commit(&[put("k", "a value long enough"), del("k")])?;
            }
            assert_eq!(dir.log_len(), FILE_HEADER_LEN as u64);
            s.commit(&[put("after", "compaction")])?;
        }
        let mut s = WalStore::open(dir.path())?;
        assert_eq!(s.load()?, kv(&[("after", "compaction")]));
        Ok(())
    }

    #[test]
    fn leftover_compaction_file_is_removed_on_open() -> Result<(), StoreError> {
        let dir = TestDir::new("leftover-tmp");
        {
            let mut s = WalStore::open(dir.path())?;
            s.commit(&[put("k", "v")])?;
        }
        let tmp = dir.path().join(TMP_NAME);
        fs::write(&tmp, b"half-written compaction")?;
        let mut s = WalStore::open(dir.path())?;
        assert!(!tmp.exists());
        assert_eq!(s.load()?, kv(&[("k", "v")]));
        Ok(())
    }

    #[test]
    fn empty_commit_writes_and_syncs_nothing() -> Result<(), StoreError> {
        let dir = TestDir::new("empty");
        let mut s = WalStore::open(dir.path())?;
        s.commit(&[put("k", "v")])?;
        let (before, len) = (s.stats(), dir.log_len());
        s.commit(&[])?;
        s.commit(&[WriteBatch::new(), WriteBatch::new()])?;
        assert_eq!(s.stats(), before);
        assert_eq!(dir.log_len(), len);
        Ok(())
    }

    #[test]
    fn failed_write_poisons_the_store() -> Result<(), StoreError> {
        let dir = TestDir::new("poison");
        {
            let mut s = WalStore::open(dir.path())?;
            s.commit(&[put("k", "v")])?;
            // A read-only handle makes the next append fail like a failing disk would.
            s.file = File::open(dir.log())?;
            assert!(matches!(
                s.commit(&[put("lost", "x")]),
                Err(StoreError::Io(_))
            ));
            assert!(s.commit(&[]).is_err(), "even an empty commit is refused");
            assert!(s.load().is_err());
        }
        let mut s = WalStore::open(dir.path())?;
        assert_eq!(s.load()?, kv(&[("k", "v")]));
        Ok(())
    }

    #[test]
    fn oversized_commits_are_refused_without_writing() -> Result<(), StoreError> {
        let dir = TestDir::new("too-large");
        let mut s = WalStore::open(dir.path())?;
        let before = s.stats();
        let mut long_key = WriteBatch::new();
        long_key.put(vec![b'k'; MAX_KEY_LEN + 1], Bytes::new());
        assert!(matches!(
            s.commit(&[long_key]),
            Err(StoreError::TooLarge(_))
        ));
        // Shared values: the size check runs before anything is allocated.
        let value = Bytes::from(vec![0u8; 1 << 20]);
        let mut huge = WriteBatch::new();
        for i in 0..(MAX_RECORD_BODY >> 20) + 1 {
            huge.put(i.to_le_bytes().to_vec(), value.clone());
        }
        assert!(matches!(s.commit(&[huge]), Err(StoreError::TooLarge(_))));
        assert_eq!(s.stats(), before);
        let mut max_key = WriteBatch::new();
        max_key.put(vec![b'k'; MAX_KEY_LEN], Bytes::from_static(b"v"));
        s.commit(&[max_key.clone()])?;
        drop(s);
        let mut s = WalStore::open(dir.path())?;
        assert_eq!(
            s.load()?,
            vec![(vec![b'k'; MAX_KEY_LEN], Bytes::from_static(b"v"))]
        );
        Ok(())
    }

    #[test]
    fn second_open_is_locked_and_stale_locks_are_taken_over() -> Result<(), StoreError> {
        let dir = TestDir::new("lock");
        let lock = dir.path().join(LOCK_NAME);
        let first = WalStore::open(dir.path())?;
        match WalStore::open(dir.path()) {
            Err(StoreError::Locked(_)) => {}
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        assert!(!lock.exists(), "the lock is released on drop");
        // A pid that cannot exist (above Linux's pid_max).
        fs::write(&lock, format!("{} 1\n", u32::MAX))?;
        drop(WalStore::open(dir.path())?);
        if let Some(start) = process_start_time(std::process::id()) {
            // Our own pid with another start time: a reused pid after a restart.
            fs::write(&lock, format!("{} {start}9\n", std::process::id()))?;
            drop(WalStore::open(dir.path())?);
        }
        fs::write(&lock, "")?;
        drop(WalStore::open(dir.path())?);
        Ok(())
    }

    /// A small deterministic generator for the model test.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    #[test]
    fn random_commits_match_a_model_across_reopens_and_compactions() -> Result<(), StoreError> {
        let dir = TestDir::new("model");
        let options = tiny_compaction(2048);
        let mut rng = Lcg(7);
        let mut model = MemStoreModel::default();
        let mut s = WalStore::open_with(dir.path(), options)?;
        let mut compactions = 0;
        for round in 0..300 {
            let batches: Vec<WriteBatch> = (0..rng.below(4))
                .map(|_| {
                    let mut b = WriteBatch::new();
                    for _ in 0..rng.below(5) {
                        let key = format!("k{}", rng.below(24)).into_bytes();
                        if rng.below(4) == 0 {
                            b.delete(key);
                        } else {
                            b.put(key, Bytes::from(vec![b'v'; rng.below(120) as usize]));
                        }
                    }
                    b
                })
                .collect();
            s.commit(&batches)?;
            model.commit(&batches)?;
            if round % 25 == 24 {
                compactions += s.stats().compactions;
                drop(s);
                s = WalStore::open_with(dir.path(), options)?;
            }
            assert_eq!(s.load()?, model.load()?, "round {round}");
            let live: usize = model.load()?.iter().map(|(k, v)| k.len() + v.len()).sum();
            assert_eq!(s.stats().live_bytes, live as u64);
        }
        assert!(compactions > 0);
        Ok(())
    }

    type MemStoreModel = super::super::MemStore;
}
