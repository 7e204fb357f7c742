//! The `Core` state machine (PROTOCOL.md §3–§6): one per validator, owned by one thread.
//!
//! `Core::handle(now, request)` validates against the core's state, changes it, and returns the
//! reply together with the [`WriteBatch`] that must be durable before the reply leaves. The core
//! never does I/O and never reads a clock; `now` only feeds the liveness timers of §4.5.
//!
//! Layout: [`vote`] (header bundles, the vote rule), [`insert`] (certificates, commit, gc),
//! [`advance`] (readiness, own headers), [`pending`] (the durable mempool and own payloads made of
//! it), [`read`] (fetch, committed reads, summary), [`recover`] (rebuilding from the store).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use crate::checkpoint::SignedCheckpoint;
use crate::committee::{Committee, LeaderSchedule};
use crate::crypto::KeyPair;
use crate::dag::Dag;
use crate::error::CoreError;
use crate::mempool::Mempool;
use crate::messages::{Certificate, Payload, SignedHeader, Vote};
use crate::protocol::{CommittedEntry, Request, RequestBody, Response, Status};
use crate::store::WriteBatch;
use crate::tusk::ConsensusState;
use crate::types::{AuthorityIndex, Digest, Millis, Round};
use crate::verify::{CheckedRequest, Verified};

mod advance;
mod bound;
mod checkpoints;
mod committed;
mod fill;
mod insert;
mod install;
mod pending;
mod read;
mod recover;
mod vote;

pub use bound::StoreBound;
pub use fill::{link_down, FillRule};
pub use install::{InstallRecord, OwnVerdict};
pub use recover::RecoverError;

pub use crate::committee::DEFAULT_GC_DEPTH;

/// Default payload size a core aims for, in bytes.
pub const DEFAULT_BATCH_SIZE_BYTES: usize = 500_000;
/// Default T_LEADER: how long to wait for the leader's certificate.
pub const DEFAULT_LEADER_TIMEOUT_MS: u64 = 200;
/// Default T_VOTE: how long to wait for the leader's support at odd rounds.
pub const DEFAULT_VOTE_TIMEOUT_MS: u64 = 200;
/// Default of [`CoreConfig::straggler_wait_ms`].
pub const DEFAULT_STRAGGLER_WAIT_MS: u64 = 50;
/// Default mempool bound in bytes.
pub const DEFAULT_MEMPOOL_BYTES: usize = 256 << 20;
/// Default mempool bound in transactions.
pub const DEFAULT_MEMPOOL_TRANSACTIONS: usize = 1_000_000;
/// Default committed entries retained for clients.
pub const DEFAULT_COMMITTED_WINDOW_ENTRIES: usize = 200_000;
/// Default of [`CoreConfig::max_batch_size_bytes`]: two default batches. Larger maximal batches
/// measured worse at overload on loopback (2 MB: 96,000–166,000 tx/s committed at 200,000
/// offered; 1 MB: 138,000–200,000): rounds of bigger payloads run slower, and the memory each
/// round fills and frees makes every byte dearer. Across regions, where rounds are slow for
/// the round trips, raise it (README, tuning guide).
pub const DEFAULT_MAX_BATCH_SIZE_BYTES: usize = 2 * DEFAULT_BATCH_SIZE_BYTES;
/// A backlog is proposed within about this many own headers: the batch grows to the backlog
/// divided by it (up to [`CoreConfig::max_batch_size_bytes`]).
pub const PACING_ROUNDS: usize = 2;
/// A core admits transactions while its backlog stays within what it can propose in this many
/// own headers of the largest batch; beyond, a `Submit` gets `Busy` (overload sheds load at the
/// edge instead of growing a backlog that every round then drags along).
pub const ADMISSION_ROUNDS: usize = 4;
/// Checkpoint states a core keeps and serves: its latest few boundaries (PROTOCOL.md §8a.1),
/// so a driver assembling a certificate finds a state enough cores signed even while the newest
/// is still being reached.
pub const KEPT_CHECKPOINTS: usize = 4;
/// Default of [`CoreConfig::fill_timeout_ms`].
pub const DEFAULT_FILL_TIMEOUT_MS: u64 = 20_000;
/// Default payload bytes of committed entries retained for clients.
pub const DEFAULT_COMMITTED_WINDOW_BYTES: usize = 32 << 20;

/// Settings of a core. All are liveness or resource knobs; none affects safety. The constants
/// that do (GC_DEPTH, CHECKPOINT_INTERVAL) belong to the committee ([`Committee::constants`]).
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// Rounds below gc_round still served to lagging cores (≥ GC_DEPTH recommended).
    pub retention_rounds: u64,
    /// Payload bytes per own header at moderate load: a header takes what the mempool holds, up
    /// to this.
    pub batch_size_bytes: usize,
    /// Largest payload of an own header: with a backlog of more than [`PACING_ROUNDS`] batches,
    /// the batch grows up to this, so throughput at saturation does not depend on tuning
    /// `batch_size_bytes`. The backlog admitted is [`ADMISSION_ROUNDS`] of these.
    pub max_batch_size_bytes: usize,
    /// How long a core may answer `NotReady` while its mempool holds less than a batch.
    pub max_batch_delay_ms: u64,
    /// How long a core may answer `NotReady`, after it holds a quorum of a round, while a
    /// certificate of that round is missing from an author that has one in the round before
    /// (a live straggler). Waiting lets the next header reference it: a certificate that no later
    /// header references never commits, and its transactions wait gc_depth rounds to be
    /// proposed again. Authors silent in the round before (crashed) are not waited for.
    pub straggler_wait_ms: u64,
    /// T_LEADER of §4.5.
    pub leader_timeout_ms: u64,
    /// T_VOTE of §4.5.
    pub vote_timeout_ms: u64,
    /// Mempool bound in bytes.
    pub mempool_max_bytes: usize,
    /// Mempool bound in transactions.
    pub mempool_max_transactions: usize,
    /// Committed entries served to clients (older ones are evicted, with their payloads).
    pub committed_window_entries: usize,
    /// Payload bytes of the committed entries served to clients.
    pub committed_window_bytes: usize,
    /// FILL_TIMEOUT (PROTOCOL.md §8a.5): after an install, how long undecided own headers wait
    /// for the gap's fill before their transactions are proposed again.
    pub fill_timeout_ms: u64,
}

impl CoreConfig {
    /// The largest batch (never below the batch size).
    pub fn max_batch_bytes(&self) -> usize {
        self.max_batch_size_bytes.max(self.batch_size_bytes).max(1)
    }

    /// The mempool's bound in bytes: `mempool_max_bytes`, and no more than the core can propose
    /// in [`ADMISSION_ROUNDS`] own headers of the largest batch; a `Submit` beyond it gets `Busy`.
    pub fn mempool_bytes(&self) -> usize {
        self.mempool_max_bytes
            .min(ADMISSION_ROUNDS.saturating_mul(self.max_batch_bytes()))
    }
}

impl Default for CoreConfig {
    fn default() -> CoreConfig {
        CoreConfig {
            retention_rounds: DEFAULT_GC_DEPTH,
            batch_size_bytes: DEFAULT_BATCH_SIZE_BYTES,
            max_batch_size_bytes: DEFAULT_MAX_BATCH_SIZE_BYTES,
            max_batch_delay_ms: 0,
            straggler_wait_ms: DEFAULT_STRAGGLER_WAIT_MS,
            leader_timeout_ms: DEFAULT_LEADER_TIMEOUT_MS,
            vote_timeout_ms: DEFAULT_VOTE_TIMEOUT_MS,
            mempool_max_bytes: DEFAULT_MEMPOOL_BYTES,
            mempool_max_transactions: DEFAULT_MEMPOOL_TRANSACTIONS,
            committed_window_entries: DEFAULT_COMMITTED_WINDOW_ENTRIES,
            committed_window_bytes: DEFAULT_COMMITTED_WINDOW_BYTES,
            fill_timeout_ms: DEFAULT_FILL_TIMEOUT_MS,
        }
    }
}

/// This core's header of one round.
#[derive(Clone, Debug)]
struct OwnHeader {
    signed: SignedHeader,
    /// Whether its certificate was committed (its transactions are then final).
    committed: bool,
    /// Whether an install left its fate to the gap (PROTOCOL.md §8a.3): kept, payload pinned,
    /// transactions neither proposed nor dropped until the fill or FILL_TIMEOUT decides.
    undecided: bool,
}

/// A stored payload and the highest round of a header referencing it (for pruning).
#[derive(Clone, Debug)]
struct StoredPayload {
    payload: Payload,
    round: Round,
}

/// The passive core of one validator.
pub struct Core {
    /// The committee.
    committee: Arc<Committee>,
    /// Who leads each even round.
    schedule: Arc<dyn LeaderSchedule>,
    /// This validator's signing key.
    key: KeyPair,
    /// This validator's index.
    me: AuthorityIndex,
    /// Settings.
    config: CoreConfig,
    /// Certificates at or above gc_round.
    dag: Dag,
    /// Certificates below gc_round kept for lagging cores, by round.
    archive: BTreeMap<Round, Vec<Arc<Certificate>>>,
    /// Payloads this core stores, by digest.
    payloads: HashMap<Digest, StoredPayload>,
    /// The empty payload: every core holds it without storing it.
    empty_payload: Payload,
    /// Payload digests of inserted certificates this core lacks.
    missing_payloads: BTreeSet<Digest>,
    /// Payload digests of pinned entries the fill brought that this core lacks: asked for after
    /// `missing_payloads` (PROTOCOL.md §8a.5).
    missing_filled: BTreeSet<Digest>,
    /// Per author, the latest header this core signed.
    last_voted: Vec<Option<SignedHeader>>,
    /// Votes cast, by header round, for the summary.
    votes_cast: BTreeMap<Round, Vec<Vote>>,
    /// This core's own headers above gc_round.
    own: BTreeMap<Round, OwnHeader>,
    /// Commit progress.
    consensus: ConsensusState,
    /// The latest checkpoint states this core reached and signed, oldest first (at most
    /// [`KEPT_CHECKPOINTS`]).
    checkpoints: VecDeque<SignedCheckpoint>,
    /// The retained committed entries, by index (see `committed`).
    committed: BTreeMap<u64, CommittedEntry>,
    /// Every held entry from this index up pins its payload.
    pinned_from: u64,
    /// Payload digests of pinned committed entries (with multiplicity): GC keeps them.
    committed_pins: HashMap<Digest, u32>,
    /// Payload bytes of the pinned committed entries.
    committed_bytes: usize,
    /// Acknowledged transactions not yet in an own header.
    mempool: Mempool,
    /// When the core first held a quorum of each round (liveness timers only; not persisted).
    quorum_since: BTreeMap<Round, Millis>,
    /// Work done since this process started (for metrics; not persisted).
    counters: CoreCounters,
    /// The latest install's record (PROTOCOL.md §8a.3), if any.
    install: Option<InstallRecord>,
    /// Whether undecided own headers wait for the gap's fill.
    awaiting_fill: bool,
    /// When the open gap last moved (the install, a fill step; not persisted: after a restart,
    /// the first request). FILL_TIMEOUT past it, undecided own headers stop waiting and a read
    /// in the gap is told to skip instead of to wait.
    gap_moved_at: Option<Millis>,
    /// Why the core stopped, if it did: every request is then refused with `Halted`.
    halted: Option<String>,
    /// How fill entries are checked (see `fill`).
    fill_rule: FillRule,
}

/// What a core did since it started: monotonic counts for metrics. Not persisted, not part of
/// any protocol decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreCounters {
    /// Own headers built and signed.
    pub headers_built: u64,
    /// Own payload bytes proposed in those headers.
    pub payload_bytes_proposed: u64,
    /// Votes cast for other authors' headers (first time; re-sent votes are not counted).
    pub votes_cast: u64,
    /// Certificates newly inserted into the DAG.
    pub certificates_inserted: u64,
    /// Entries appended to the committed sequence.
    pub committed_entries: u64,
    /// Payload bytes of those entries.
    pub committed_payload_bytes: u64,
    /// Leaders committed.
    pub leaders_committed: u64,
    /// Own headers that fell below gc_round uncommitted (no later header referenced them).
    pub own_headers_orphaned: u64,
    /// Transactions of those headers put back into the mempool.
    pub transactions_requeued: u64,
    /// Checkpoint states signed (boundaries this core's commit rule reached).
    pub checkpoints_signed: u64,
    /// Checkpoints installed.
    pub checkpoints_installed: u64,
    /// Transactions of undecided own headers proposed again after FILL_TIMEOUT: each may
    /// commit twice (it may also be in the unfilled gap).
    pub transactions_possibly_duplicated: u64,
    /// Committed entries of an install's gap verified by the fill.
    pub gap_entries_filled: u64,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("me", &self.me)
            .field("round", &self.round())
            .field("consensus_index", &self.consensus.consensus_index)
            .finish_non_exhaustive()
    }
}

/// Accumulates the writes and findings of one request.
#[derive(Default)]
struct Tx {
    batch: WriteBatch,
    /// Certificates inserted by this request (the commit rule runs if any).
    inserted: usize,
    /// Parent digests that were missing.
    missing: BTreeSet<Digest>,
    /// Whether this request built a new own header. A `GetState` that did then carries the
    /// payload, so a driver polling the core can offer the header to the other cores without
    /// another round trip. Bundles and `Sync` do not (PROTOCOL.md §6, "payload when asked"):
    /// they come mostly from the home drivers of other cores, which carry this core's payloads
    /// only on demand, and attaching it there sent nearly every payload once more over the
    /// network (0.86 transfers per transaction with 4 cores). A driver that carries this core's
    /// payloads eagerly and sees a new header without one asks with `GetState{with_payload}`.
    built_own: bool,
}

impl Core {
    /// This validator's index.
    pub fn index(&self) -> AuthorityIndex {
        self.me
    }
    /// The committee.
    pub fn committee(&self) -> &Arc<Committee> {
        &self.committee
    }
    /// The round of the latest own header (0 before the first).
    pub fn round(&self) -> Round {
        self.own.keys().next_back().copied().unwrap_or_default()
    }
    /// gc_round.
    pub fn gc_round(&self) -> Round {
        self.consensus.gc_round(self.committee.gc_depth())
    }
    /// Commit progress.
    pub fn consensus(&self) -> &ConsensusState {
        &self.consensus
    }
    /// The payload with `digest`, if this core holds it. The empty payload is always held: it is
    /// never stored (nothing to lose) and never needs to be carried.
    fn stored_payload(&self, digest: &Digest) -> Option<&Payload> {
        if *digest == self.empty_payload.digest() {
            return Some(&self.empty_payload);
        }
        self.payloads.get(digest).map(|s| &s.payload)
    }
    /// The payload with `digest`, if this core holds it (read only: for checkers and tools).
    pub fn payload(&self, digest: &Digest) -> Option<&Payload> {
        self.stored_payload(digest)
    }
    /// Acknowledged transactions not committed yet, as this core holds them: its mempool and
    /// the payloads of its own headers that have not committed (they commit later or go back to
    /// the mempool when they fall below gc_round).
    pub fn pending_transactions(&self) -> Vec<bytes::Bytes> {
        let mut out: Vec<bytes::Bytes> = self.mempool.iter().cloned().collect();
        for own in self.own.values().filter(|o| !o.committed) {
            if let Some(p) = self.stored_payload(&own.signed.header.payload().digest) {
                out.extend(p.transactions().unwrap_or_default());
            }
        }
        out
    }
    /// Whether this core holds the payload with `digest`.
    fn holds_payload(&self, digest: &Digest) -> bool {
        self.stored_payload(digest).is_some()
    }
    /// The DAG (read only: for checkers and tests).
    pub fn dag(&self) -> &Dag {
        &self.dag
    }
    /// A certificate of `round` that garbage collection moved below the DAG floor and the
    /// retention window still keeps (read only: for checkers and tests).
    pub fn archived(&self, round: Round, digest: &Digest) -> Option<&Certificate> {
        self.archive
            .get(&round)?
            .iter()
            .find(|c| c.digest() == *digest)
            .map(|c| &**c)
    }
    /// Work done since this process started.
    pub fn counters(&self) -> &CoreCounters {
        &self.counters
    }
    /// Transactions waiting in the mempool.
    pub fn mempool_len(&self) -> usize {
        self.mempool.len()
    }

    /// Handles one verified request. The reply may be released only after `WriteBatch` is durable.
    pub fn handle(
        &mut self,
        now: Millis,
        request: Verified<CheckedRequest>,
    ) -> (Response, WriteBatch) {
        let CheckedRequest { request, rejected } = request.into_inner();
        let Request { body, .. } = request;
        let mut tx = Tx::default();
        if let Some(reason) = &self.halted {
            return (Response::Error(CoreError::Halted(reason.clone())), tx.batch);
        }
        if self.open_gap().is_some() {
            self.gap_moved_at.get_or_insert(now);
        }
        self.expire_undecided(now, &mut tx);
        let response = match body {
            RequestBody::GetState { with_payload } => {
                let status = self.advance(now, &mut tx);
                let with_payload = with_payload || tx.built_own;
                Response::Summary(Box::new(self.summary(status, with_payload)))
            }
            RequestBody::HeaderBundle {
                round: _,
                headers,
                parents,
                payloads,
            } => self.on_header_bundle(now, headers, parents, payloads, rejected, &mut tx),
            RequestBody::CertBundle {
                certificates,
                mut parents,
                payloads,
                ..
            } => {
                parents.extend(certificates);
                self.on_certificates(now, parents, payloads, &mut tx)
            }
            RequestBody::Sync {
                certificates,
                payloads,
            } => self.on_certificates(now, certificates, payloads, &mut tx),
            RequestBody::Fetch {
                after,
                max_items,
                with_payloads,
            } => self.on_fetch(&after, max_items, with_payloads),
            RequestBody::Submit { transactions } => self.on_submit(transactions, &mut tx),
            RequestBody::ReadCommitted {
                from_index,
                max,
                view,
                wait_ms: _,
            } => self.on_read_committed(now, from_index, max, view),
            RequestBody::FetchPayloads { digests } => Response::Certificates {
                certificates: Vec::new(),
                payloads: self.payloads_for(digests),
            },
            RequestBody::GetCheckpoint => {
                Response::Checkpoints(self.checkpoints.iter().cloned().collect())
            }
            RequestBody::InstallCheckpoint { certificate } => {
                self.on_install(now, certificate, &mut tx)
            }
            RequestBody::FillLog { entries } => self.on_fill(now, entries, &mut tx),
        };
        (response, tx.batch)
    }

    /// Inserts certificates (with payloads), commits, and may advance.
    fn on_certificates(
        &mut self,
        now: Millis,
        certificates: Vec<Certificate>,
        payloads: Vec<Payload>,
        tx: &mut Tx,
    ) -> Response {
        let carried = index_payloads(payloads);
        if let Err(e) = self.insert_all(now, certificates, &carried, tx) {
            return Response::Error(e);
        }
        self.store_missing_payloads(&carried, tx);
        let status = self.advance(now, tx);
        let status = match status {
            Status::Ready if !tx.missing.is_empty() => Status::Missing {
                digests: tx.missing.iter().copied().collect(),
            },
            other => other,
        };
        Response::Summary(Box::new(self.summary(status, false)))
    }
}

/// Payloads carried by a request, by digest.
fn index_payloads(payloads: Vec<Payload>) -> HashMap<Digest, Payload> {
    payloads.into_iter().map(|p| (p.digest(), p)).collect()
}
