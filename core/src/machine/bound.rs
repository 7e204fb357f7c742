//! What a core's store holds at most under its settings (PROTOCOL.md §8a.6): the sum of its
//! configured bounds, so an operator can size a disk and a run can be checked against it.
//!
//! The model: the DAG spans at most `2 × GC_DEPTH + retention` rounds (GC_DEPTH below the
//! newest committed leader, retention below that, and at most GC_DEPTH above it: a core whose
//! commits stall longer than that orphans its own headers anyway), each round holding one
//! certificate and one payload of at most the largest batch per author. Committed payloads are
//! bounded by bytes, committed entries by count, the mempool by its admission bound. The
//! metadata log is compacted once it exceeds its minimum size and its ratio times the live
//! metadata (a compaction writes one more copy beside it), and payload segments are dropped
//! whole, so a few segments can hold dead bytes.

use super::{CoreConfig, KEPT_CHECKPOINTS};
use crate::committee::Committee;
use crate::store::wal::WalOptions;

/// Bytes of one stored committed entry: its encoding, key and log framing.
const ENTRY_BYTES: u64 = 192;
/// Bytes of one stored certificate besides its parents and signatures (header fields, key,
/// framing).
const CERTIFICATE_BASE_BYTES: u64 = 256;
/// Bytes per parent reference and per signer of a certificate.
const PER_AUTHOR_BYTES: u64 = 34 + 66;
/// Payload segments that may hold dead bytes at once (dropped only when wholly dead).
const SLACK_SEGMENTS: u64 = 4;

/// The sum of a core's configured storage bounds, by part (bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreBound {
    /// Payloads of the certificates in the DAG and its retention window.
    pub dag_payloads: u64,
    /// Payloads of committed entries (`committed_window_bytes`).
    pub committed_payloads: u64,
    /// The mempool (its admission bound).
    pub mempool: u64,
    /// Certificates in the DAG and its retention window.
    pub certificates: u64,
    /// Committed entries (`committed_window_entries`).
    pub committed_entries: u64,
    /// The metadata log beyond the live metadata (uncompacted records, a compaction's copy).
    pub log_slack: u64,
    /// Payload segments holding dead bytes.
    pub segment_slack: u64,
}

impl StoreBound {
    /// Everything.
    pub fn total(&self) -> u64 {
        self.dag_payloads
            + self.committed_payloads
            + self.mempool
            + self.certificates
            + self.committed_entries
            + self.log_slack
            + self.segment_slack
    }
}

impl std::fmt::Display for StoreBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
        write!(
            f,
            "{:.0} MiB: DAG payloads {:.0}, committed payloads {:.0}, mempool {:.0}, \
             certificates {:.0}, committed entries {:.0}, log slack {:.0}, segment slack {:.0}",
            mib(self.total()),
            mib(self.dag_payloads),
            mib(self.committed_payloads),
            mib(self.mempool),
            mib(self.certificates),
            mib(self.committed_entries),
            mib(self.log_slack),
            mib(self.segment_slack)
        )
    }
}

impl CoreConfig {
    /// The most a core of `committee` with these settings stores on a store with `wal`'s
    /// options (see the module documentation for the model).
    pub fn store_bound(&self, committee: &Committee, wal: &WalOptions) -> StoreBound {
        let n = committee.size() as u64;
        let rounds = 2 * committee.gc_depth() + self.retention_rounds;
        let per_certificate = CERTIFICATE_BASE_BYTES + n * PER_AUTHOR_BYTES;
        let certificates = rounds * n * per_certificate;
        let committed_entries = self.committed_window_entries as u64 * ENTRY_BYTES;
        let checkpoints = KEPT_CHECKPOINTS as u64 * (128 + 8 * n);
        let metadata = certificates + committed_entries + checkpoints;
        StoreBound {
            dag_payloads: rounds * n * self.max_batch_bytes() as u64,
            committed_payloads: self.committed_window_bytes as u64,
            mempool: self.mempool_bytes() as u64,
            certificates,
            committed_entries,
            log_slack: wal
                .compact_min_bytes
                .max(wal.compact_ratio.saturating_mul(metadata))
                .saturating_sub(metadata)
                + metadata,
            segment_slack: SLACK_SEGMENTS * wal.segment_bytes,
        }
    }
}
