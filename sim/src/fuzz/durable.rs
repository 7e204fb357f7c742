//! The durable store under the fuzzed core: every batch the core returns is committed to a
//! [`WalStore`] in a scratch directory as well as to the memory store. A restart reopens the
//! durable store from its files (log replay, segment checks, segment deletion) and recovers the
//! core from what it loads, which must be exactly what the memory store holds. Small segments
//! and a small compaction threshold make a short input roll, delete and compact.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use sleepyseal_core::store::wal::{WalOptions, WalStore};
use sleepyseal_core::store::MemStore;
use sleepyseal_core::{Store, WriteBatch};

/// Store settings that exercise segments and compaction within a few requests.
const OPTIONS: WalOptions = WalOptions {
    compact_min_bytes: 4 << 10,
    compact_ratio: 2,
    background_compaction: false,
    segment_bytes: 4 << 10,
    // The layout cores write by default (each commit's data on its own blocks).
    direct_io: true,
};

/// A durable store in a scratch directory, removed on drop.
pub(super) struct Durable {
    dir: PathBuf,
    /// Taken out while the store is reopened (the old one must release the lock first).
    store: Option<WalStore>,
}

impl Durable {
    /// An empty store in a fresh directory: on tmpfs where there is one, so syncs cost nothing.
    pub(super) fn new() -> Durable {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("sleepyseal-fuzz-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = WalStore::open_with(&dir, OPTIONS).expect("a scratch store opens");
        Durable {
            dir,
            store: Some(store),
        }
    }

    /// Commits `batch` durably.
    pub(super) fn commit(&mut self, batch: &WriteBatch) {
        let store = self.store.as_mut().expect("open");
        store
            .commit(std::slice::from_ref(batch))
            .expect("the durable store commits what the core writes");
    }

    /// Reopens the store from its files and returns what it loads, which must be what `model`
    /// (the memory store fed the same batches) holds.
    pub(super) fn reopen(&mut self, model: &mut MemStore) -> Vec<(Vec<u8>, Bytes)> {
        drop(self.store.take());
        let mut store = WalStore::open_with(&self.dir, OPTIONS).expect("the store reopens");
        let entries = store.load().expect("the reopened store loads");
        assert!(
            entries == model.load().expect("memory store loads"),
            "the durable store loads other entries than the memory store holds"
        );
        self.store = Some(store);
        entries
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        drop(self.store.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
