//! Unit tier: the core's writes over the durable store (`WalStore`) beside the memory store the
//! simulator uses. Each payload byte is written once: a `Submit`'s transactions when they are
//! acknowledged, never again when the own header carries them, when they are proposed again, or
//! when the log is compacted. Both stores load the same entries, and a restart rebuilds the
//! mempool and the own payloads exactly.

use std::collections::HashSet;
use std::path::PathBuf;

use bytes::Bytes;
use sleepyseal_core::committee::default_schedule;
use sleepyseal_core::protocol::{Request, RequestBody, Response};
use sleepyseal_core::store::wal::{WalOptions, WalStore};
use sleepyseal_core::store::MemStore;
use sleepyseal_core::testkit::{committee_with_gc_depth, instance, DagBuilder};
use sleepyseal_core::verify::VerifierConfig;
use sleepyseal_core::{Core, CoreConfig, KeyPair, Millis, Round, Store, Verifier};

const ME: u16 = 3;

/// Four cores with GC_DEPTH 2: garbage collection and compaction within a few rounds.
fn committee() -> std::sync::Arc<sleepyseal_core::Committee> {
    committee_with_gc_depth(4, 2)
}

/// A scratch directory, removed on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> TestDir {
        let dir =
            std::env::temp_dir().join(format!("sleepyseal-layout-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TestDir(dir)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One core on a durable store and its twin on a memory store, fed the same requests.
struct Twin {
    config: CoreConfig,
    options: WalOptions,
    dir: TestDir,
    verifier: Verifier,
    /// The core on the durable store, and the store (taken out while it is reopened: the old
    /// one must release the directory's lock first).
    durable: (Core, Option<WalStore>),
    memory: (Core, MemStore),
    /// Segment bytes appended by the durable store's earlier openings.
    appended_before: u64,
}

fn recover(config: &CoreConfig, store: &mut dyn Store) -> Core {
    let c = committee();
    Core::recover(
        c.clone(),
        default_schedule(&c),
        KeyPair::deterministic(0, ME),
        config.clone(),
        store.load().expect("the store loads"),
    )
    .expect("a core recovers from its own store")
}

impl Twin {
    fn new(name: &str, config: CoreConfig, options: WalOptions) -> Twin {
        let dir = TestDir::new(name);
        let mut wal = WalStore::open_with(&dir.0, options).expect("store opens");
        let mut mem = MemStore::new();
        Twin {
            durable: (recover(&config, &mut wal), Some(wal)),
            memory: (recover(&config, &mut mem), mem),
            verifier: Verifier::new(committee(), VerifierConfig::default()),
            config,
            options,
            dir,
            appended_before: 0,
        }
    }

    /// Handles `body` on both cores and commits the writes; the replies must agree.
    fn send(&mut self, at: u64, body: RequestBody) -> Response {
        let request = Request {
            instance: instance(),
            body,
        };
        let verified = self.verifier.verify(request.clone()).unwrap();
        let (response, batch) = self.durable.0.handle(Millis(at), verified);
        self.wal().commit(&[batch]).unwrap();
        let verified = self.verifier.verify(request).unwrap();
        let (twin_response, batch) = self.memory.0.handle(Millis(at), verified);
        self.memory.1.commit(&[batch]).unwrap();
        assert_eq!(response, twin_response, "the twins answer alike");
        response
    }

    /// Syncs every certificate `b` built, with its payload.
    fn sync(&mut self, at: u64, b: &DagBuilder) {
        let certificates = b.all();
        let payloads = certificates
            .iter()
            .map(|c| DagBuilder::payload(c.round(), c.author()))
            .collect();
        self.send(
            at,
            RequestBody::Sync {
                certificates,
                payloads,
            },
        );
    }

    /// Both stores hold the same entries.
    fn assert_stores_agree(&mut self) {
        let durable = self.wal().load().unwrap();
        assert!(
            durable == self.memory.1.load().unwrap(),
            "the durable store loads what the memory store holds"
        );
    }

    /// Restarts the durable core from its reopened store: it must show what it showed before.
    fn restart(&mut self) {
        let before = visible(&self.durable.0);
        self.appended_before = self.segment_bytes();
        drop(self.durable.1.take());
        let mut wal = WalStore::open_with(&self.dir.0, self.options).unwrap();
        self.durable.0 = recover(&self.config, &mut wal);
        self.durable.1 = Some(wal);
        assert_eq!(
            visible(&self.durable.0),
            before,
            "a restart changes nothing"
        );
    }

    fn wal(&mut self) -> &mut WalStore {
        self.durable.1.as_mut().expect("open")
    }

    /// Segment bytes the durable store appended, over all its openings.
    fn segment_bytes(&mut self) -> u64 {
        self.appended_before + self.wal().stats().segment_bytes_appended
    }
}

/// What a restart must preserve: round, pending transactions in their order, own payloads.
fn visible(core: &Core) -> (Round, Vec<Bytes>, usize) {
    (
        core.round(),
        core.pending_transactions(),
        core.mempool_len(),
    )
}

/// Payload bytes `b`'s certificates carry (each distinct non-empty payload once).
fn carried_bytes(b: &DagBuilder, seen: &mut HashSet<sleepyseal_core::Digest>) -> u64 {
    b.all()
        .iter()
        .map(|c| DagBuilder::payload(c.round(), c.author()))
        .filter(|p| !p.is_empty() && seen.insert(p.digest()))
        .map(|p| p.len() as u64)
        .sum()
}

#[test]
fn each_payload_byte_is_written_once_and_restarts_rebuild_the_mempool() {
    let config = CoreConfig {
        retention_rounds: 0,
        leader_timeout_ms: 0,
        vote_timeout_ms: 0,
        straggler_wait_ms: 0,
        // Cuts the second Submit in two: its rest stays queued as a slice of it.
        batch_size_bytes: 60 * 516,
        ..CoreConfig::default()
    };
    // Compaction after nearly every commit, in the committing thread.
    let options = WalOptions {
        compact_min_bytes: 0,
        compact_ratio: 1,
        background_compaction: false,
        segment_bytes: 1 << 20,
        direct_io: true,
    };
    let mut t = Twin::new("once", config, options);
    let mut submitted = Vec::new();
    for s in 0..3u8 {
        let transactions: Vec<Bytes> = (0..40u8).map(|i| Bytes::from(vec![s ^ i; 512])).collect();
        submitted.extend(transactions.clone());
        let reply = t.send(1, RequestBody::Submit { transactions });
        assert_eq!(reply, Response::Submitted { accepted: 40 });
    }
    let submit_bytes = 120 * (4 + 512);
    assert_eq!(t.segment_bytes(), submit_bytes, "each Submit written once");
    t.restart();

    // Round 1 by the others: core 3 proposes round 2 with the first 60 transactions.
    let c = committee();
    let mut b = DagBuilder::new(c.clone());
    b.round(&[0, 1, 2], None);
    let mut seen = HashSet::new();
    let mut expected = submit_bytes + carried_bytes(&b, &mut seen);
    t.sync(2, &b);
    assert_eq!(t.durable.0.round(), Round(2));
    assert_eq!(t.durable.0.mempool_len(), 60);
    assert_eq!(
        t.segment_bytes(),
        expected,
        "the own payload is not written again"
    );
    t.assert_stores_agree();
    t.restart();

    // The others go on without core 3's header; it proposes again and its round-2 header falls
    // below gc_round uncommitted: its transactions are queued again, as a slice of its payload.
    b.round(&[0, 1, 2], Some(&[0, 1, 2]));
    for _ in 0..30 {
        b.round(&[0, 1, 2], None);
    }
    expected += carried_bytes(&b, &mut seen);
    t.sync(3, &b);
    for _ in 0..4 {
        b.round(&[0, 1, 2], None);
    }
    expected += carried_bytes(&b, &mut seen);
    t.sync(4, &b);
    assert!(t.durable.0.counters().transactions_requeued > 0);
    let mut pending = t.durable.0.pending_transactions();
    pending.sort();
    submitted.sort();
    assert_eq!(
        pending, submitted,
        "every acknowledged transaction is pending"
    );
    assert_eq!(
        t.segment_bytes(),
        expected,
        "a requeue writes no payload byte"
    );
    let io = t.wal().stats();
    assert!(io.compaction_bytes_written > 0, "compactions ran: {io:?}");
    t.assert_stores_agree();
    t.restart();
    t.assert_stores_agree();
}
