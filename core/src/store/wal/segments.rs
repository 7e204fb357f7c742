//! Segment files: append-only files holding the bytes of data values, each named by its number
//! (`{number:016x}.seg`). Created on demand (preallocated and made durable before the first
//! write), appended to, never rewritten, and deleted as a whole once no live value has a piece in
//! them.
//!
//! Segments are only read when the store opens, so by default they are written with direct I/O
//! (`O_DIRECT`), past the page cache: each commit's data is copied once into a reused aligned
//! buffer, padded to [`DIRECT_ALIGN`] and written at an aligned offset. A page cache would only
//! hold bytes nobody reads, and writing through it costs more: on the reference VM (a virtio disk,
//! four cores writing every payload) four writers each syncing 1 MB writes reached 444 MB/s
//! together through the page cache and 666 MB/s with direct I/O, and fresh page-cache pages cost
//! the kernel several times the CPU per byte of reused ones (the "slow mode" of the README's
//! overload figures). On a file system that refuses direct I/O (the store probes it on open) or
//! with [`super::WalOptions::direct_io`] off, segments are appended with vectored writes straight
//! from the callers' buffers, and what each sync made durable is dropped from the page cache.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{IoSlice, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::files::{remove_if_exists, sync_dir};
use super::plan::{Cursor, DataWrite};
use crate::store::error::IoContext;
use crate::store::{StoreError, StoreStats};

/// Target size of a segment file, in bytes. Segments are the unit of reclamation: one live value
/// keeps its whole segment on disk, so smaller segments waste less space behind a long-lived
/// value; larger ones mean fewer files to create, preallocate and sync. Payloads live about
/// `gc_depth` rounds (seconds), so at the 100 MB/s a core writes at peak a 64 MiB segment fills in
/// under a second and is deleted a few seconds later, and creating one (three syncs) is rare.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// Most buffers handed to one `writev` (Linux's `IOV_MAX`).
const MAX_IOVECS: usize = 1024;

/// Alignment of direct writes (buffer address, file offset and length): 4 KiB covers the logical
/// block size of every disk Linux does direct I/O on (512 or 4,096 bytes).
pub(super) const DIRECT_ALIGN: u64 = 4096;

/// The aligned buffer of direct writes is kept for the next commit up to this size (a warm
/// buffer costs nothing to reuse; a fresh one is zeroed page by page by the kernel); a larger
/// one, left by an exceptionally large commit (catch-up), is freed.
const KEEP_BUFFER_BYTES: usize = 8 << 20;

/// Name of the file written once on open to learn whether the file system takes direct I/O.
const PROBE_NAME: &str = "direct.probe";

/// File name of segment `id`.
pub(super) fn segment_name(id: u64) -> String {
    format!("{id:016x}.seg")
}

/// The number of a segment file's name, or `None` for any other file.
fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The segment being appended to.
struct Active {
    id: u64,
    file: File,
    /// Bytes written to it.
    len: u64,
    /// Bytes of it known durable (synced), and dropped from the page cache.
    synced: u64,
    /// Whether bytes were written since its last sync.
    dirty: bool,
}

/// The segment files of a store.
pub(super) struct Segments {
    dir: PathBuf,
    /// Size of a segment (see [`SEGMENT_BYTES`]).
    segment_bytes: u64,
    active: Option<Active>,
    /// The number the next new segment gets: above every segment ever seen in the directory or
    /// named by the log.
    next_id: u64,
    /// The segment files present.
    files: BTreeSet<u64>,
    /// With direct I/O, the buffer each commit's data is copied into (aligned there).
    direct: Option<AlignedBuf>,
}

impl Segments {
    /// The segments of the store in `dir` on open: files that no live piece references (`refs`)
    /// are deleted (left by a torn write, or dead before a crash deleted them). Appends go to a
    /// new segment: the tail of the last one may hold the bytes of a dropped torn write. With
    /// `direct_io`, new segments are written with direct I/O if the file system takes it.
    pub(super) fn open(
        dir: &Path,
        segment_bytes: u64,
        direct_io: bool,
        refs: &BTreeMap<u64, u64>,
        stats: &mut StoreStats,
    ) -> Result<Segments, StoreError> {
        let mut files = BTreeSet::new();
        for entry in fs::read_dir(dir).at(dir)? {
            let name = entry.at(dir)?.file_name();
            if let Some(id) = name.to_str().and_then(parse_segment_name) {
                files.insert(id);
            }
        }
        let highest = files.iter().chain(refs.keys()).max().copied();
        let mut segments = Segments {
            dir: dir.to_path_buf(),
            segment_bytes,
            active: None,
            next_id: highest.map_or(1, |h| h + 1),
            files,
            direct: (direct_io && takes_direct_io(dir)?).then(AlignedBuf::default),
        };
        segments.remove_dead(refs, stats)?;
        Ok(segments)
    }

    /// Whether segments are written with direct I/O.
    pub(super) fn direct_io(&self) -> bool {
        self.direct.is_some()
    }

    /// Where the next data goes.
    pub(super) fn cursor(&self) -> Cursor {
        Cursor {
            active: self.active.as_ref().map(|a| (a.id, a.len)),
            next_id: self.next_id,
            segment_bytes: self.segment_bytes,
            align: if self.direct.is_some() {
                DIRECT_ALIGN
            } else {
                1
            },
        }
    }

    /// Path of segment `id`.
    pub(super) fn path(&self, id: u64) -> PathBuf {
        self.dir.join(segment_name(id))
    }

    /// Segment files present.
    pub(super) fn count(&self) -> u64 {
        self.files.len() as u64
    }

    /// Appends the planned `writes` (in segment order, each at the offset planned from
    /// [`Segments::cursor`]), creating segments as planned. A segment left for a new one is
    /// synced at once; the active one is synced by [`Segments::sync`]. With direct I/O, each
    /// segment's run is written from the aligned buffer, zero-padded to [`DIRECT_ALIGN`].
    pub(super) fn append(
        &mut self,
        writes: &[DataWrite<'_>],
        stats: &mut StoreStats,
    ) -> Result<(), StoreError> {
        let mut rest = writes;
        while let Some(first) = rest.first() {
            let segment = first.extent.segment;
            let run = rest
                .iter()
                .take_while(|w| w.extent.segment == segment)
                .count();
            let (now, later) = rest.split_at(run);
            rest = later;
            self.switch_to(segment, stats)?;
            let path = self.path(segment);
            let active = self.active.as_mut().expect("switched to it");
            assert_eq!(active.len, first.extent.offset, "writes follow the cursor");
            if let Some(buffer) = &mut self.direct {
                let data = now.iter().flat_map(|w| w.chunks.iter()).map(|c| &c[..]);
                let (written, padding) =
                    buffer.write_at(&active.file, active.len, data).at(&path)?;
                active.len += written + padding;
                active.dirty = true;
                stats.segment_bytes_appended += written;
                stats.segment_padding_bytes += padding;
                continue;
            }
            let mut slices: Vec<IoSlice<'_>> = now
                .iter()
                .flat_map(|w| w.chunks.iter())
                .filter(|c| !c.is_empty())
                .map(|c| IoSlice::new(c))
                .collect();
            let written = write_all_vectored(&mut active.file, &mut slices).at(&path)?;
            active.len += written;
            active.dirty = true;
            stats.segment_bytes_appended += written;
        }
        Ok(())
    }

    /// Makes `id` the active segment, creating it if it is new (syncing the one it replaces).
    fn switch_to(&mut self, id: u64, stats: &mut StoreStats) -> Result<(), StoreError> {
        if self.active.as_ref().is_some_and(|a| a.id == id) {
            return Ok(());
        }
        assert_eq!(id, self.next_id, "a new segment takes the next number");
        self.sync(stats)?;
        let path = self.path(id);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        if self.direct.is_some() {
            options.custom_flags(direct_flag());
        }
        let file = options.open(&path).at(&path)?;
        // Preallocated (sparse): appends then never grow the file, so a sync has no file size
        // to update. Measured on ext4 here: about 10% less CPU per commit than growing appends.
        file.set_len(self.segment_bytes).at(&path)?;
        file.sync_all().at(&path)?;
        // The file must not vanish with its directory entry once a log record names it.
        sync_dir(&self.dir)?;
        stats.syncs += 2;
        stats.segments_created += 1;
        self.files.insert(id);
        self.next_id = id + 1;
        self.active = Some(Active {
            id,
            file,
            len: 0,
            synced: 0,
            dirty: false,
        });
        Ok(())
    }

    /// Syncs the active segment if it was written to since its last sync (with direct I/O the
    /// data is on the device already; the sync flushes its cache and the block allocation).
    /// Written through the page cache, what the sync made durable is then dropped from it:
    /// nothing reads it, and dropped at once the same pages come back warm for the next writes
    /// instead of piling up until the kernel reclaims them. Dropping is advice: a failure
    /// changes no durability and is ignored.
    pub(super) fn sync(&mut self, stats: &mut StoreStats) -> Result<(), StoreError> {
        let Some(active) = self.active.as_mut().filter(|a| a.dirty) else {
            return Ok(());
        };
        let path = self.dir.join(segment_name(active.id));
        active.file.sync_data().at(&path)?;
        active.dirty = false;
        stats.syncs += 1;
        if self.direct.is_none() {
            drop_cached(&active.file, active.synced, active.len);
        }
        active.synced = active.len;
        Ok(())
    }

    /// Deletes the segment files, other than the active one, in which no live piece lies.
    /// Nothing is synced: a deletion lost in a crash leaves a dead segment, deleted again on
    /// the next open.
    pub(super) fn remove_dead(
        &mut self,
        refs: &BTreeMap<u64, u64>,
        stats: &mut StoreStats,
    ) -> Result<(), StoreError> {
        let active = self.active.as_ref().map(|a| a.id);
        let dead: Vec<u64> = self
            .files
            .iter()
            .copied()
            .filter(|id| Some(*id) != active && !refs.contains_key(id))
            .collect();
        for id in dead {
            remove_if_exists(&self.path(id))?;
            self.files.remove(&id);
            stats.segments_deleted += 1;
        }
        Ok(())
    }
}

/// `O_DIRECT`, as `open(2)` takes it.
fn direct_flag() -> i32 {
    i32::try_from(rustix::fs::OFlags::DIRECT.bits()).expect("open flags fit a C int")
}

/// Whether the file system of `dir` takes direct writes: writes one aligned block to a probe
/// file and removes it. Only "invalid argument" (no direct I/O there) answers no; any other
/// failure is the store's error.
fn takes_direct_io(dir: &Path) -> Result<bool, StoreError> {
    let path = dir.join(PROBE_NAME);
    let opened = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(direct_flag())
        .open(&path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => return Ok(false),
        Err(e) => return Err(e).at(&path),
    };
    let written = AlignedBuf::default().write_at(&file, 0, std::iter::once(&[0u8; 1][..]));
    drop(file);
    remove_if_exists(&path)?;
    match written {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Ok(false),
        Err(e) => Err(e).at(&path),
    }
}

/// A buffer whose window starts at a [`DIRECT_ALIGN`]ed address (made of a plain vector a block
/// longer than needed, so no unsafe allocation).
#[derive(Default)]
struct AlignedBuf {
    bytes: Vec<u8>,
}

impl AlignedBuf {
    /// Copies `data` into the aligned window, pads it with zeros to [`DIRECT_ALIGN`] and writes
    /// it all to `file` at `offset` (aligned); the bytes of data and of padding written.
    fn write_at<'a>(
        &mut self,
        file: &File,
        offset: u64,
        data: impl Iterator<Item = &'a [u8]> + Clone,
    ) -> std::io::Result<(u64, u64)> {
        assert_eq!(offset % DIRECT_ALIGN, 0, "direct writes start aligned");
        let align = DIRECT_ALIGN as usize;
        let len: usize = data.clone().map(<[u8]>::len).sum();
        let padded = len.next_multiple_of(align);
        if self.bytes.len() < padded + align {
            self.bytes = vec![0; padded + align];
        }
        let start = (align - self.bytes.as_ptr() as usize % align) % align;
        let window = &mut self.bytes[start..start + padded];
        let mut at = 0;
        for piece in data {
            window[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        }
        window[at..].fill(0);
        let written = file.write_all_at(window, offset);
        if self.bytes.len() > KEEP_BUFFER_BYTES {
            self.bytes = Vec::new();
        }
        written.map(|()| (len as u64, (padded - len) as u64))
    }
}

/// Drops the clean cached pages of `file` in `[from, to)` (after a sync they are all clean).
/// Whole pages only: the page holding `from` may also hold bytes written after the sync, and
/// the kernel leaves a partly covered page cached.
fn drop_cached(file: &File, from: u64, to: u64) {
    if let Some(len) = std::num::NonZeroU64::new(to.saturating_sub(from)) {
        let _ = rustix::fs::fadvise(file, from, Some(len), rustix::fs::Advice::DontNeed);
    }
}

/// Writes all of `slices` with as few `writev` calls as the kernel allows; returns the bytes
/// written.
fn write_all_vectored(file: &mut File, mut slices: &mut [IoSlice<'_>]) -> std::io::Result<u64> {
    let mut total = 0u64;
    while !slices.is_empty() {
        let n = slices.len().min(MAX_IOVECS);
        match file.write_vectored(&slices[..n]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => {
                total += written as u64;
                IoSlice::advance_slices(&mut slices, written);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_other_files_are_ignored() {
        assert_eq!(segment_name(0x2a), "000000000000002a.seg");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        for other in [
            "wal.log",
            "LOCK",
            "2a.seg",
            "000000000000002a.tmp",
            "zzzzzzzzzzzzzzzz.seg",
        ] {
            assert_eq!(parse_segment_name(other), None, "{other}");
        }
    }
}
