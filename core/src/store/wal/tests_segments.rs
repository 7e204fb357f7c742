//! Tests of the segment layout: data values written once and read back, the crash rule for
//! segment bytes (torn, missing, damaged; last group or not), segment deletion, compaction of
//! metadata only, the refusal of the old layout, and a random model test across reopens.

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use bytes::Bytes;

use super::format::{file_header, VERSION_INLINE_PAYLOADS};
use super::test_support::*;
use super::{WalOptions, WalStore};
use crate::store::{Corruption, DataDamage, MemStore, SliceProblem, Store, StoreError, WriteBatch};

/// Small segments, so that a few values fill one; compaction off. Written through the page
/// cache, byte after byte: the offsets these tests damage are those of that layout (the direct
/// layout, each commit padded to a block, has its own tests below).
fn small_segments(segment_bytes: u64) -> WalOptions {
    WalOptions {
        compact_min_bytes: u64::MAX,
        segment_bytes,
        direct_io: false,
        ..WalOptions::default()
    }
}

/// As [`small_segments`], with direct I/O.
fn small_direct_segments(segment_bytes: u64) -> WalOptions {
    WalOptions {
        direct_io: true,
        ..small_segments(segment_bytes)
    }
}

/// A change to a store's files on disk, standing for what a crash or a failing disk leaves.
type Damage = fn(&TestDir) -> std::io::Result<()>;

fn overwrite(path: &Path, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(bytes)
}

fn cut(path: &Path, len: u64) -> std::io::Result<()> {
    OpenOptions::new().write(true).open(path)?.set_len(len)
}

/// Commits `group` to the store and the model alike.
fn both(s: &mut WalStore, model: &mut MemStore, group: &[WriteBatch]) -> TestResult {
    s.commit(group)?;
    model.commit(group)?;
    Ok(())
}

#[test]
fn data_values_round_trip_and_load_as_the_memory_store_does() -> TestResult {
    let dir = TestDir::new("seg-roundtrip");
    let mut model = MemStore::new();
    {
        let mut s = WalStore::open_with(dir.path(), small_segments(4096))?;
        let (a, b) = (bytes_of(1, 3000), bytes_of(2, 2500));
        both(&mut s, &mut model, &[data("a", &a, 7), put("m", "meta")])?;
        // Slices of a value put in the same commit and of one put before; then the source goes.
        let mut group = data("b", &b, 100);
        group.extend(slices("s", &[("b", 10, 90), ("a", 2990, 10), ("a", 0, 5)]));
        group.extend(del("a"));
        both(&mut s, &mut model, &[group, data("empty", &[], 1)])?;
        both(
            &mut s,
            &mut model,
            &[slices("t", &[("s", 95, 10)]), data("m", b"now data", 3)],
        )?;
        assert_eq!(s.load()?, model.load()?);
        let io = s.stats();
        assert_eq!(
            io.segment_bytes_appended,
            3000 + 2500 + 8,
            "each data put once"
        );
        assert_eq!(
            io.segments_created, 2,
            "b did not fit after a in 4096 bytes"
        );
    }
    let mut s = WalStore::open_with(dir.path(), small_segments(4096))?;
    assert_eq!(s.load()?, model.load()?);
    Ok(())
}

/// The last group wrote its log record but not (all of) its segment bytes: it is dropped.
#[test]
fn a_torn_segment_write_drops_the_last_group() -> TestResult {
    let damages: [(&str, Damage); 4] = [
        ("zeros", |d| overwrite(&d.segment(1), 2000, &[0; 100])),
        ("flipped byte", |d| overwrite(&d.segment(1), 3999, &[0x55])),
        ("cut short", |d| cut(&d.segment(1), 2500)),
        ("segment file lost", |d| fs::remove_file(d.segment(2))),
    ];
    for (what, damage) in damages {
        let dir = TestDir::new("seg-torn");
        // Default-sized segments put b after a in segment 1; for "lost", b gets segment 2.
        let segment_bytes = if what == "segment file lost" {
            2000
        } else {
            1 << 16
        };
        let options = small_segments(segment_bytes);
        let (before, log_len) = {
            let mut s = WalStore::open_with(dir.path(), options)?;
            s.commit(&[data("a", &bytes_of(1, 1000), 64), put("m", "1")])?;
            let state = (s.load()?, dir.log_len());
            // (No delete of a: a commit that completed may have deleted a segment a torn one
            // would need, which no crash can produce.)
            s.commit(&[data("b", &bytes_of(2, 3000), 64), put("m", "2")])?;
            state
        };
        damage(&dir)?;
        {
            let mut s = WalStore::open_with(dir.path(), options)?;
            assert_eq!(s.load()?, before, "{what}");
            assert_eq!(dir.log_len(), log_len, "{what}: the torn record is cut off");
            s.commit(&[data("c", b"after", 2)])?;
        }
        let mut s = WalStore::open_with(dir.path(), options)?;
        let mut expected = before;
        expected.push((b"c".to_vec(), Bytes::from_static(b"after")));
        expected.sort();
        assert_eq!(s.load()?, expected, "{what}");
    }
    Ok(())
}

/// Damaged bytes of a live value written before the last group: corruption, and no file is
/// touched.
#[test]
fn damaged_segment_bytes_before_the_last_group_are_corrupt() -> TestResult {
    let damages: [(&str, Damage, DataDamage); 3] = [
        (
            "checksum",
            |d| overwrite(&d.segment(1), 10, &[0xff]),
            DataDamage::Checksum,
        ),
        (
            "cut short",
            |d| cut(&d.segment(1), 500),
            DataDamage::CutShort { file_len: 500 },
        ),
        (
            "missing",
            |d| fs::remove_file(d.segment(1)),
            DataDamage::MissingFile,
        ),
    ];
    for (what, damage, expected) in damages {
        let dir = TestDir::new("seg-corrupt");
        {
            // b does not fit after a: it opens segment 2, and a stays alone in segment 1.
            let mut s = WalStore::open_with(dir.path(), small_segments(1500))?;
            s.commit(&[data("a", &bytes_of(1, 1000), 64)])?;
            s.commit(&[data("b", &bytes_of(2, 1000), 64)])?;
            s.commit(&[put("m", "last")])?;
        }
        damage(&dir)?;
        let log = fs::read(dir.log())?;
        match WalStore::open(dir.path()) {
            Err(StoreError::Corrupt(Corruption::SegmentData {
                path,
                offset,
                len,
                damage,
            })) => {
                assert_eq!((path, offset, len), (dir.segment(1), 0, 1000), "{what}");
                assert_eq!(damage, expected, "{what}");
            }
            other => panic!("{what}: expected SegmentData, got {other:?}"),
        }
        assert_eq!(fs::read(dir.log())?, log, "{what}: the log is not modified");
        assert!(dir.segments().contains(&2), "{what}: no segment is deleted");
    }
    Ok(())
}

/// A data write whose log record never made it: its bytes are dead, and a segment holding
/// nothing else is deleted on open.
#[test]
fn segment_bytes_without_their_log_record_are_dead() -> TestResult {
    let dir = TestDir::new("seg-no-record");
    let options = small_segments(1500);
    let (before, log_len) = {
        let mut s = WalStore::open_with(dir.path(), options)?;
        s.commit(&[data("a", &bytes_of(1, 1000), 64)])?;
        let state = (s.load()?, dir.log_len());
        s.commit(&[data("b", &bytes_of(2, 1000), 64)])?;
        state
    };
    assert_eq!(dir.segments(), vec![1, 2]);
    cut(&dir.log(), log_len)?;
    {
        let mut s = WalStore::open_with(dir.path(), options)?;
        assert_eq!(s.load()?, before);
        assert_eq!(
            dir.segments(),
            vec![1],
            "segment 2 held only the lost write"
        );
        assert_eq!(s.stats().segments_deleted, 1);
        s.commit(&[data("c", &bytes_of(3, 100), 64)])?;
        assert_eq!(dir.segments(), vec![1, 3], "numbers are never reused");
    }
    let mut s = WalStore::open_with(dir.path(), options)?;
    assert_eq!(s.load()?.len(), 2);
    Ok(())
}

#[test]
fn segments_go_when_nothing_live_is_in_them_and_stay_gone() -> TestResult {
    let dir = TestDir::new("seg-delete");
    let options = small_segments(2500);
    let mut model = MemStore::new();
    {
        let mut s = WalStore::open_with(dir.path(), options)?;
        for i in 0..6u8 {
            both(
                &mut s,
                &mut model,
                &[data(&format!("v{i}"), &bytes_of(i, 1200), 500)],
            )?;
        }
        assert_eq!(dir.segments(), vec![1, 2, 3], "two values per segment");
        // A slice keeps segment 1 alive after both of its values are gone.
        both(
            &mut s,
            &mut model,
            &[slices("keep", &[("v0", 100, 10)]), del("v0")],
        )?;
        both(&mut s, &mut model, &[del("v1"), del("v2"), del("v3")])?;
        assert_eq!(
            dir.segments(),
            vec![1, 3],
            "segment 2 had nothing live left"
        );
        both(&mut s, &mut model, &[del("keep")])?;
        assert_eq!(dir.segments(), vec![3]);
        assert_eq!(s.stats().segments_deleted, 2);
        both(&mut s, &mut model, &[del("v4"), del("v5")])?;
        assert_eq!(dir.segments(), vec![3], "the active segment stays");
        assert_eq!(s.load()?, model.load()?);
    }
    let mut s = WalStore::open_with(dir.path(), options)?;
    assert!(dir.segments().is_empty(), "a dead segment goes on open");
    assert_eq!(s.load()?, model.load()?);
    Ok(())
}

#[test]
fn compaction_rewrites_metadata_and_no_segment_byte() -> TestResult {
    let dir = TestDir::new("seg-compact");
    let options = WalOptions {
        segment_bytes: 1 << 14,
        ..tiny_compaction(2048)
    };
    let mut model = MemStore::new();
    let mut data_bytes = 0u64;
    {
        let mut s = WalStore::open_with(dir.path(), options)?;
        for round in 0..120u32 {
            let key = format!("d{}", round % 10);
            let value = bytes_of(round as u8, 300 + (round as usize % 7) * 50);
            data_bytes += value.len() as u64;
            let mut group = data(&key, &value, 128);
            group.extend(slices(&format!("s{}", round % 3), &[(&key, 20, 200)]));
            group.extend(put(&format!("m{}", round % 5), &format!("{round}")));
            both(&mut s, &mut model, &[group])?;
        }
        let (io, wal) = (s.stats(), s.wal_stats());
        assert!(wal.compactions > 0, "{wal:?}");
        assert!(io.compaction_bytes_written > 0, "{io:?}");
        assert_eq!(
            io.segment_bytes_appended, data_bytes,
            "compaction wrote no data"
        );
        assert!(
            wal.log_bytes < data_bytes / 4,
            "the log holds metadata: {wal:?}"
        );
        assert_eq!(s.load()?, model.load()?);
    }
    let mut s = WalStore::open_with(dir.path(), options)?;
    assert_eq!(s.load()?, model.load()?);
    Ok(())
}

/// Every prefix of a log with data values opens as a prefix of the commits (the segments keep
/// the bytes of every commit, as after a crash that lost only the log's tail).
#[test]
fn every_prefix_of_a_log_with_data_opens_as_a_prefix_of_the_commits() -> TestResult {
    let dir = TestDir::new("seg-prefixes");
    let options = small_segments(1024);
    let mut states: Vec<(u64, Entries)> = Vec::new();
    {
        let mut s = WalStore::open_with(dir.path(), options)?;
        states.push((s.wal_stats().log_bytes, Vec::new()));
        let groups = [
            vec![data("a", &bytes_of(1, 700), 100)],
            vec![
                data("b", &bytes_of(2, 700), 100),
                slices("s", &[("a", 5, 50)]),
            ],
            vec![
                del("a"),
                put("m", "x"),
                slices("t", &[("s", 0, 10), ("b", 0, 10)]),
            ],
            vec![data("b", &bytes_of(3, 10), 4), del("s")],
        ];
        for group in groups {
            s.commit(&group)?;
            states.push((s.wal_stats().log_bytes, s.load()?));
        }
    }
    let log = fs::read(dir.log())?;
    let segments: Vec<(u64, Vec<u8>)> = dir
        .segments()
        .into_iter()
        .map(|id| Ok((id, fs::read(dir.segment(id))?)))
        .collect::<std::io::Result<_>>()?;
    for len in file_header().len()..=log.len() {
        fs::write(dir.log(), &log[..len])?;
        for (id, bytes) in &segments {
            fs::write(dir.segment(*id), bytes)?;
        }
        let mut s = WalStore::open_with(dir.path(), options)?;
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
fn a_store_of_the_inline_layout_is_refused_with_what_to_do() -> TestResult {
    let dir = TestDir::new("seg-old-layout");
    fs::create_dir_all(dir.path())?;
    let mut old = file_header().to_vec();
    old[8..12].copy_from_slice(&VERSION_INLINE_PAYLOADS.to_le_bytes());
    old.extend_from_slice(&[9, 0, 0, 0, 1, 2, 3, 4, 1, 0, 0, 0, 2]); // a record (not checked)
    fs::write(dir.log(), &old)?;
    match WalStore::open(dir.path()) {
        Err(e @ StoreError::OldLayout { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains(&dir.path().display().to_string()),
                "{message}"
            );
            assert!(message.contains("version 1"), "{message}");
            assert!(message.contains("fresh genesis"), "{message}");
        }
        other => panic!("expected OldLayout, got {other:?}"),
    }
    assert_eq!(fs::read(dir.log())?, old, "the old store is not modified");
    Ok(())
}

#[test]
fn slices_that_do_not_resolve_are_refused_as_by_the_memory_store() -> TestResult {
    let dir = TestDir::new("seg-bad-slice");
    let mut s = WalStore::open(dir.path())?;
    let mut model = MemStore::new();
    both(
        &mut s,
        &mut model,
        &[put("m", "meta"), data("d", b"data", 2)],
    )?;
    let (io, log_len) = (s.stats(), dir.log_len());
    let cases = [
        (("x", 0, 1), SliceProblem::Missing),
        (("m", 0, 1), SliceProblem::NotData),
        (("d", 2, 3), SliceProblem::OutOfRange { source_len: 4 }),
    ];
    for ((source, start, len), problem) in cases {
        let mut group = data("new", b"bytes", 5);
        group.extend(slices("s", &[(source, start, len)]));
        for result in [s.commit(&[group.clone()]), model.commit(&[group])] {
            match result {
                Err(StoreError::BadSlice(e)) => assert_eq!(e.problem, problem),
                other => panic!("expected BadSlice, got {other:?}"),
            }
        }
    }
    assert_eq!(
        (s.stats(), dir.log_len()),
        (io, log_len),
        "nothing was written"
    );
    assert_eq!(s.load()?, model.load()?);
    Ok(())
}

/// A small deterministic generator.
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

/// A random op on keys `k0`..`k15`: metadata put, data put, slices of a live data value, delete.
fn random_op(rng: &mut Lcg, model: &MemStore) -> WriteBatch {
    let key = format!("k{}", rng.below(16));
    match rng.below(5) {
        0 => put(&key, &"v".repeat(rng.below(50) as usize)),
        1 | 2 => {
            let len = rng.below(900) as usize;
            data(
                &key,
                &bytes_of(rng.below(256) as u8, len),
                1 + rng.below(200) as usize,
            )
        }
        3 => {
            let sources: Vec<(Vec<u8>, usize)> = model
                .clone()
                .load()
                .expect("memory store loads")
                .into_iter()
                .map(|(k, v)| (k, v.len()))
                .filter(|(_, len)| *len > 0)
                .collect();
            let Some((source, source_len)) = sources
                .get(rng.below(sources.len().max(1) as u64) as usize)
                .cloned()
            else {
                return del(&key);
            };
            let start = rng.below(source_len as u64) as usize;
            let len = 1 + rng.below((source_len - start) as u64) as usize;
            let source = String::from_utf8(source).expect("ascii keys");
            slices(&key, &[(&source, start, len)])
        }
        _ => del(&key),
    }
}

#[test]
fn random_data_commits_match_a_model_across_reopens_compactions_and_segments() -> TestResult {
    for direct_io in [false, true] {
        random_commits_match_a_model(direct_io)?;
    }
    Ok(())
}

fn random_commits_match_a_model(direct_io: bool) -> TestResult {
    let dir = TestDir::new("seg-model");
    let options = WalOptions {
        segment_bytes: 4096,
        direct_io,
        ..tiny_compaction(8192)
    };
    let mut rng = Lcg(11);
    let mut model = MemStore::new();
    let mut s = WalStore::open_with(dir.path(), options)?;
    let (mut compactions, mut deleted) = (0, 0);
    for round in 0..400 {
        // Slices pick any live value: a metadata source, or one deleted earlier in the group, is
        // refused by both stores alike.
        let group: Vec<WriteBatch> = (0..1 + rng.below(3))
            .map(|_| random_op(&mut rng, &model))
            .collect();
        match (s.commit(&group), model.commit(&group)) {
            (Ok(()), Ok(())) => {}
            (Err(StoreError::BadSlice(a)), Err(StoreError::BadSlice(b))) => assert_eq!(a, b),
            (a, b) => panic!("round {round}: the stores disagree: {a:?} / {b:?}"),
        }
        if round % 40 == 39 {
            compactions += s.wal_stats().compactions;
            deleted += s.stats().segments_deleted;
            drop(s);
            s = WalStore::open_with(dir.path(), options)?;
        }
        assert_eq!(s.load()?, model.load()?, "round {round}");
    }
    assert!(
        compactions > 0 && deleted > 0,
        "{compactions} compactions, {deleted} segments deleted"
    );
    Ok(())
}

/// With direct I/O (the test directory's file system takes it: ext4 or tmpfs), each commit's data
/// starts at a block boundary and is padded to the next one; the values load back, and the
/// padding is counted apart from the data.
#[test]
fn direct_writes_start_each_commit_on_a_block_and_load_back() -> TestResult {
    let dir = TestDir::new("seg-direct");
    let options = small_direct_segments(64 << 10);
    let mut model = MemStore::new();
    {
        let mut s = WalStore::open_with(dir.path(), options)?;
        if !s.wal_stats().direct_io {
            // A temp dir on a file system without direct I/O (tmpfs before Linux 6.6): the
            // store fell back to the page cache, which the tests above cover.
            eprintln!("skipped: {} refuses direct I/O", dir.path().display());
            return Ok(());
        }
        both(&mut s, &mut model, &[data("a", &bytes_of(1, 5000), 7)])?;
        // Two values in one commit lie back to back; the commit is padded once.
        both(
            &mut s,
            &mut model,
            &[
                data("b", &bytes_of(2, 100), 1000),
                data("c", &bytes_of(3, 4096), 4096),
            ],
        )?;
        both(
            &mut s,
            &mut model,
            &[slices("s", &[("a", 4990, 10), ("c", 0, 5)])],
        )?;
        let io = s.stats();
        assert_eq!(io.segment_bytes_appended, 5000 + 100 + 4096);
        assert_eq!(io.segment_padding_bytes, (8192 - 5000) + (8192 - 4196));
        let segment = fs::read(dir.segment(1))?;
        assert_eq!(&segment[..5000], &bytes_of(1, 5000)[..]);
        assert!(segment[5000..8192].iter().all(|b| *b == 0), "padding");
        assert_eq!(&segment[8192..8292], &bytes_of(2, 100)[..]);
        assert_eq!(&segment[8292..12388], &bytes_of(3, 4096)[..]);
        assert_eq!(s.load()?, model.load()?);
    }
    let mut s = WalStore::open_with(dir.path(), options)?;
    assert_eq!(s.load()?, model.load()?);
    // After a reopen, appends go to a new segment, aligned from its start.
    both(&mut s, &mut model, &[data("d", &bytes_of(4, 10), 1)])?;
    assert_eq!(dir.segments(), vec![1, 2]);
    assert_eq!(fs::read(dir.segment(2))?[..10], bytes_of(4, 10)[..]);
    drop(s);
    let mut s = WalStore::open_with(dir.path(), options)?;
    assert_eq!(s.load()?, model.load()?);
    Ok(())
}

/// The crash rule holds for the direct layout: a last group whose segment block is torn is
/// dropped whole, and a store written with direct I/O opens without it (and the other way).
#[test]
fn a_torn_direct_write_drops_the_last_group_and_layouts_open_each_other() -> TestResult {
    let damages: [(&str, Damage); 3] = [
        ("zeros", |d| overwrite(&d.segment(1), 4096 + 100, &[0; 100])),
        ("cut at the block", |d| cut(&d.segment(1), 4096)),
        ("cut inside the value", |d| cut(&d.segment(1), 4096 + 2000)),
    ];
    for (what, damage) in damages {
        let dir = TestDir::new("seg-direct-torn");
        let (before, log_len) = {
            let mut s = WalStore::open_with(dir.path(), small_direct_segments(1 << 16))?;
            if !s.wal_stats().direct_io {
                eprintln!("skipped: {} refuses direct I/O", dir.path().display());
                return Ok(());
            }
            s.commit(&[data("a", &bytes_of(1, 1000), 64), put("m", "1")])?;
            let state = (s.load()?, dir.log_len());
            s.commit(&[data("b", &bytes_of(2, 3000), 64), put("m", "2")])?;
            state
        };
        damage(&dir)?;
        // Opened through the page cache: the layouts differ only in where values lie, which
        // the log records.
        let mut s = WalStore::open_with(dir.path(), small_segments(1 << 16))?;
        assert_eq!(s.load()?, before, "{what}");
        assert_eq!(dir.log_len(), log_len, "{what}: the torn record is cut off");
        s.commit(&[data("c", b"after", 2)])?;
        drop(s);
        let mut s = WalStore::open_with(dir.path(), small_direct_segments(1 << 16))?;
        let mut expected = before;
        expected.push((b"c".to_vec(), Bytes::from_static(b"after")));
        expected.sort();
        assert_eq!(s.load()?, expected, "{what}");
    }
    Ok(())
}
