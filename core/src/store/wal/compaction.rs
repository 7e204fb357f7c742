//! Compaction: rewriting the log as the live map (metadata only: data values are written as the
//! pieces they are made of, segments are never touched), in the committing thread or on a
//! background thread that hands over to the committing thread for the last records (see
//! "Compaction" in the module documentation of [`super`]).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::files::sync_dir;
use super::format::{file_header, put_encoded_len, RecordBuf};
use super::value::Value;
use super::{WalStore, LOG_NAME, TMP_NAME};
use crate::store::error::IoContext;
use crate::store::StoreError;

/// Largest record body written by compaction, in bytes (a single larger entry gets its own record).
pub const COMPACT_CHUNK_BYTES: usize = 64 << 20;

/// A background compaction hands over to the committing thread once fewer than this many bytes of
/// the log remain to be copied (the committing thread then copies at most this much, plus what one
/// commit adds).
pub const TAIL_CATCH_UP_BYTES: u64 = 1 << 20;

/// A compaction running on its own thread.
pub(super) struct Background {
    /// Length of the old log whose records are complete and synced (the thread copies up to it).
    synced: Arc<AtomicU64>,
    /// Returns the temporary file (snapshot and copied records), the old-log offset copied up
    /// to, and the bytes written to the file.
    thread: std::thread::JoinHandle<Result<(File, u64, u64), StoreError>>,
}

impl Background {
    /// Tells the thread that the old log is complete and synced up to `len` bytes.
    pub(super) fn synced_up_to(&self, len: u64) {
        self.synced.store(len, Ordering::Release);
    }
}

impl WalStore {
    /// Waits for a background compaction to finish and completes it (for tests and shutdown).
    ///
    /// # Errors
    ///
    /// [`StoreError::Stopped`] if the store failed before; [`StoreError::Io`] if completing the
    /// compaction fails, which stops the store.
    pub fn finish_compaction(&mut self) -> Result<(), StoreError> {
        self.check_alive()?;
        self.poison_on_error(|s| s.finish_background(true))
    }

    /// After a commit: completes a background compaction whose thread is done, or starts a
    /// compaction if the log has grown past its limits. An error leaves the store's files in an
    /// unknown state (the caller poisons the store).
    pub(super) fn compact_if_due(&mut self) -> Result<(), StoreError> {
        if self.background.is_some() {
            self.finish_background(false)
        } else if !self.should_compact() {
            Ok(())
        } else if self.options.background_compaction {
            self.start_background();
            Ok(())
        } else {
            self.compact()
        }
    }

    /// Waits for a background compaction still running and discards it: the old log is complete,
    /// and the temporary file is removed.
    pub(super) fn abandon_background(&mut self) {
        if let Some(b) = self.background.take() {
            let _ = b.thread.join();
            let _ = fs::remove_file(self.dir.join(TMP_NAME));
        }
    }

    fn should_compact(&self) -> bool {
        let log = self.log_bytes;
        let ratio_limit = self
            .options
            .compact_ratio
            .saturating_mul(self.live.compacted_len());
        log > self.options.compact_min_bytes && log > ratio_limit
    }

    /// Rewrites the log as the live map, in the committing thread.
    fn compact(&mut self) -> Result<(), StoreError> {
        let tmp = self.dir.join(TMP_NAME);
        let written = write_snapshot(&tmp, &self.live.map)?;
        self.io.compaction_bytes_written += written;
        self.io.syncs += 1;
        self.install_compacted(&tmp)
    }

    /// Starts a background compaction of the log as it is now.
    fn start_background(&mut self) {
        let synced = Arc::new(AtomicU64::new(self.log_bytes));
        let snapshot = self.live.map.clone();
        let from = self.log_bytes;
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
        let (mut out, copied, written) = match b.thread.join() {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => {
                self.stats.compaction_failures += 1;
                let _ = fs::remove_file(&tmp);
                return Ok(());
            }
        };
        copy_range(&self.log, copied, self.log_bytes, &mut out, &tmp)?;
        out.sync_all().at(&tmp)?;
        self.io.compaction_bytes_written += written + (self.log_bytes - copied);
        self.io.syncs += 2; // the snapshot's sync on the thread, and this one
        self.install_compacted(&tmp)
    }

    /// Renames the synced compacted log `tmp` over the log, syncs the directory and appends to
    /// it from now on.
    fn install_compacted(&mut self, tmp: &Path) -> Result<(), StoreError> {
        fs::rename(tmp, &self.log).at(tmp)?;
        sync_dir(&self.dir)?;
        self.io.syncs += 1;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.log)
            .at(&self.log)?;
        self.log_bytes = self.file.metadata().at(&self.log)?.len();
        self.stats.compactions += 1;
        Ok(())
    }
}

/// The body of a background compaction: writes the snapshot to `wal.log.tmp`, then copies the
/// old log's records from `from` on while more than [`TAIL_CATCH_UP_BYTES`] remain.
fn compact_in_background(
    dir: &Path,
    snapshot: &BTreeMap<Vec<u8>, Value>,
    from: u64,
    synced: &AtomicU64,
) -> Result<(File, u64, u64), StoreError> {
    let tmp = dir.join(TMP_NAME);
    let mut written = write_snapshot(&tmp, snapshot)?;
    let mut out = OpenOptions::new().append(true).open(&tmp).at(&tmp)?;
    let log = dir.join(LOG_NAME);
    let mut copied = from;
    loop {
        let end = synced.load(Ordering::Acquire);
        if end.saturating_sub(copied) < TAIL_CATCH_UP_BYTES {
            return Ok((out, copied, written));
        }
        copy_range(&log, copied, end, &mut out, &tmp)?;
        written += end - copied;
        copied = end;
    }
}

/// Appends bytes `from..to` of the log at `log` to `out`, the compaction file at `out_path`.
fn copy_range(
    log: &Path,
    from: u64,
    to: u64,
    out: &mut File,
    out_path: &Path,
) -> Result<(), StoreError> {
    if to <= from {
        return Ok(());
    }
    let mut src = File::open(log).at(log)?;
    src.seek(SeekFrom::Start(from)).at(log)?;
    let copied = io::copy(&mut src.take(to - from), out).at(out_path)?;
    if copied != to - from {
        let short = io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the log is shorter than its synced length",
        );
        return Err(short).at(log);
    }
    Ok(())
}

/// Writes a fresh log holding `map` to `path`, in records of at most [`COMPACT_CHUNK_BYTES`] of
/// body, and syncs it; returns the bytes written.
fn write_snapshot(path: &Path, map: &BTreeMap<Vec<u8>, Value>) -> Result<u64, StoreError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .at(path)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&file_header()).at(path)?;
    let mut written = file_header().len() as u64;
    let mut record = RecordBuf::with_body_capacity(0);
    for (key, value) in map {
        let op_len = put_encoded_len(key.len(), value);
        if !record.is_empty() && record.body_len() + op_len > COMPACT_CHUNK_BYTES {
            let bytes = record.finish();
            out.write_all(&bytes).at(path)?;
            written += bytes.len() as u64;
            record = RecordBuf::with_body_capacity(0);
        }
        record.push_value(key, value);
    }
    if !record.is_empty() {
        let bytes = record.finish();
        out.write_all(&bytes).at(path)?;
        written += bytes.len() as u64;
    }
    let file = out.into_inner().map_err(|e| e.into_error()).at(path)?;
    file.sync_all().at(path)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::super::format::FILE_HEADER_LEN;
    use super::super::test_support::*;
    use super::super::WalOptions;
    use super::*;
    use crate::store::{Store, WriteBatch};

    #[test]
    fn compaction_bounds_the_log_and_keeps_content() -> TestResult {
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
            let stats = s.wal_stats();
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
        assert_eq!(s.wal_stats().log_bytes, dir.log_len());
        Ok(())
    }

    /// Background compaction: commits go on while the snapshot is written, the records they add
    /// are carried into the new log, and every reopen (after a finished compaction, or with one
    /// still running when the store is dropped) replays to the model.
    #[test]
    fn background_compaction_keeps_every_commit() -> TestResult {
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
                let stats = s.wal_stats();
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
    fn compaction_of_an_empty_map_leaves_a_bare_header() -> TestResult {
        let dir = TestDir::new("compact-empty");
        {
            let mut s = WalStore::open_with(dir.path(), tiny_compaction(64))?;
            while s.wal_stats().compactions == 0 {
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
    fn leftover_compaction_file_is_removed_on_open() -> TestResult {
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
}
