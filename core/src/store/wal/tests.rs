//! Tests of the whole store: round trips, group commits, empty and oversized commits, the
//! fail-stop rule, and a random model test across reopens and compactions.

use std::fs::File;

use bytes::Bytes;

use super::test_support::*;
use super::{WalStore, MAX_KEY_LEN, MAX_RECORD_BODY};
use crate::store::{MemStore, Store, StoreError, TooLarge, WriteBatch};

#[test]
fn put_delete_round_trip_across_reopen_in_key_order() -> TestResult {
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
    let stats = s.wal_stats();
    assert_eq!((stats.live_entries, stats.live_bytes), (3, 7));
    assert_eq!(stats.log_bytes, dir.log_len());
    Ok(())
}

#[test]
fn group_commit_is_one_sync_and_later_batches_win() -> TestResult {
    let dir = TestDir::new("group");
    {
        let mut s = WalStore::open(dir.path())?;
        let (before, io_before) = (s.wal_stats(), s.stats());
        let mut first = put("x", "1");
        first.extend(put("y", "1"));
        let mut second = put("x", "2");
        second.extend(del("y"));
        s.commit(&[first, second, put("z", "3")])?;
        let (after, io_after) = (s.wal_stats(), s.stats());
        assert_eq!(after.commits, before.commits + 1);
        assert_eq!(
            io_after.syncs,
            io_before.syncs + 1,
            "no data: the log alone"
        );
    }
    let mut s = WalStore::open(dir.path())?;
    assert_eq!(s.load()?, kv(&[("x", "2"), ("z", "3")]));
    Ok(())
}

#[test]
fn empty_commit_writes_and_syncs_nothing() -> TestResult {
    let dir = TestDir::new("empty");
    let mut s = WalStore::open(dir.path())?;
    s.commit(&[put("k", "v")])?;
    let (before, io, len) = (s.wal_stats(), s.stats(), dir.log_len());
    s.commit(&[])?;
    s.commit(&[WriteBatch::new(), WriteBatch::new()])?;
    assert_eq!((s.wal_stats(), s.stats()), (before, io));
    assert_eq!(dir.log_len(), len);
    Ok(())
}

#[test]
fn failed_write_poisons_the_store() -> TestResult {
    let dir = TestDir::new("poison");
    {
        let mut s = WalStore::open(dir.path())?;
        s.commit(&[put("k", "v")])?;
        // A read-only handle makes the next append fail like a failing disk would.
        s.file = File::open(dir.log())?;
        match s.commit(&[put("lost", "x")]) {
            Err(StoreError::Io { path, .. }) => assert_eq!(path, dir.log()),
            other => panic!("expected Io, got {other:?}"),
        }
        assert!(
            matches!(s.commit(&[]), Err(StoreError::Stopped)),
            "even an empty commit is refused"
        );
        assert!(matches!(s.load(), Err(StoreError::Stopped)));
    }
    let mut s = WalStore::open(dir.path())?;
    assert_eq!(s.load()?, kv(&[("k", "v")]));
    Ok(())
}

#[test]
fn oversized_commits_are_refused_without_writing() -> TestResult {
    let dir = TestDir::new("too-large");
    let mut s = WalStore::open(dir.path())?;
    let before = s.wal_stats();
    let mut long_key = WriteBatch::new();
    long_key.put(vec![b'k'; MAX_KEY_LEN + 1], Bytes::new());
    match s.commit(&[long_key]) {
        Err(StoreError::TooLarge(TooLarge::Key { len, limit })) => {
            assert_eq!((len, limit), (MAX_KEY_LEN + 1, MAX_KEY_LEN))
        }
        other => panic!("expected TooLarge::Key, got {other:?}"),
    }
    // Shared values: the size check runs before anything is allocated.
    let value = Bytes::from(vec![0u8; 1 << 20]);
    let mut huge = WriteBatch::new();
    for i in 0..(MAX_RECORD_BODY >> 20) + 1 {
        huge.put(i.to_le_bytes().to_vec(), value.clone());
    }
    assert!(matches!(
        s.commit(&[huge]),
        Err(StoreError::TooLarge(TooLarge::Commit {
            limit: MAX_RECORD_BODY,
            ..
        }))
    ));
    assert_eq!(s.wal_stats(), before);
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
fn random_commits_match_a_model_across_reopens_and_compactions() -> TestResult {
    let dir = TestDir::new("model");
    let options = tiny_compaction(2048);
    let mut rng = Lcg(7);
    let mut model = MemStore::default();
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
            compactions += s.wal_stats().compactions;
            drop(s);
            s = WalStore::open_with(dir.path(), options)?;
        }
        assert_eq!(s.load()?, model.load()?, "round {round}");
        let live: usize = model.load()?.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert_eq!(s.wal_stats().live_bytes, live as u64);
    }
    assert!(compactions > 0);
    Ok(())
}
