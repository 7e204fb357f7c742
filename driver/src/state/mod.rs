//! The sans-IO driver (PROTOCOL.md §7–§8): summaries and replies in, requests out.
//!
//! A driver holds no keys and nothing durable. From what cores tell it, it keeps a soft cache of
//! headers, payloads, votes and certificates, and for each core decides the one request that
//! moves it forward most: catch-up (`Sync`, fed by `Fetch` from an up-to-date core) when it lags,
//! otherwise the newest certificates it lacks (`CertBundle`), otherwise the headers it has not
//! voted on (`HeaderBundle`), otherwise a `GetState` poll. Votes are checked before they are
//! aggregated, so a Byzantine core cannot poison a certificate. Killing a driver loses nothing: a
//! new one rebuilds all it needs from summaries.
//!
//! Layout: this file holds the settings, the state and its queries; `learn` (replies and
//! summaries into the soft cache, votes into certificates, pruning), `choose` (the requests per
//! core: polls, pipelining, certificate and header bundles), `catch_up` (lag, the escalation of
//! `Sync` and `Fetch` for a core that misses history), `payloads` (which payloads a request
//! carries, within one budget, and fetching those the driver lacks), `carriage` (who carries which
//! payload: the home-core policy of PROTOCOL.md §7), `cache` (the payload cache and its byte
//! bound), `checkpoints` (checkpoint signatures into checkpoint certificates, §8a.2).

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt, HashSet};
use std::sync::Arc;

use sleepyseal_core::protocol::{CommittedEntry, Request, RequestBody, Summary};
use sleepyseal_core::{
    AuthorityIndex, Certificate, Committee, Digest, Millis, Round, SignedHeader, Vote,
};

mod cache;
mod carriage;
mod catch_up;
mod checkpoints;
mod fill;

pub use checkpoints::CheckpointCounts;
pub use fill::{fill_range, FillCounts, FILL_BATCH};
mod choose;
mod learn;
mod payloads;

use cache::PayloadCache;
use carriage::Pace;
pub use carriage::{COVER_GRACES, UNCARRIED_HEADERS};
use catch_up::CatchUp;
pub use choose::FOREIGN_POLL_FACTOR;

/// Default of [`DriverConfig::request_timeout_ms`].
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 1_000;
/// Default of [`DriverConfig::poll_interval_ms`].
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 20;
/// Default of [`DriverConfig::lag_rounds`].
pub const DEFAULT_LAG_ROUNDS: u64 = 3;
/// Default of [`DriverConfig::sync_batch`].
pub const DEFAULT_SYNC_BATCH: u32 = 256;
/// Default of [`DriverConfig::keep_rounds`].
pub const DEFAULT_KEEP_ROUNDS: u64 = 120;
/// Default of [`DriverConfig::pipeline_depth`].
pub const DEFAULT_PIPELINE_DEPTH: usize = 2;
/// Default of [`DriverConfig::max_payload_bytes`]: half the cores' default request limit.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 16 << 20;
/// Default of [`DriverConfig::payload_grace_ms`]: 300 ms. A home driver sends its core's header
/// the moment it sees it; another driver sees that header one poll later and the votes it drew
/// one request to each voter later. On the widest WAN profile (`deploy/wan/multi-region.toml`:
/// 108 ms one way, 216 ms round trip) with a 20 ms poll interval and a few ms of group commit,
/// a home driver's delivery shows within about 250 ms of the header's first sight, so 300 ms is
/// just beyond what a live home driver needs and short against the cores' leader timeout
/// (200 ms) plus a round or two: a core whose home driver is dead gets its headers certified
/// within about half a second. On loopback it only matters when a home driver is dead.
pub const DEFAULT_PAYLOAD_GRACE_MS: u64 = 300;
/// Default of [`DriverConfig::payload_cache_bytes`]: 256 MiB, about ten seconds of one home
/// core's payloads at 25 MB/s (200,000 tx/s of 512 bytes over 4 cores).
pub const DEFAULT_PAYLOAD_CACHE_BYTES: usize = 256 << 20;

/// Settings of a driver.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// A request without reply after this long is given up (the core may be down).
    pub request_timeout_ms: u64,
    /// How often an idle core is polled.
    pub poll_interval_ms: u64,
    /// A core this many rounds behind the most advanced one is caught up with `Sync`.
    pub lag_rounds: u64,
    /// Certificates per `Fetch`/`Sync`.
    pub sync_batch: u32,
    /// Rounds of soft state kept below the newest round.
    pub keep_rounds: u64,
    /// Requests in flight per core. Beyond the first, only header and certificate bundles that
    /// carry nothing already in flight to that core are sent (catch-up, polls and fetches go one
    /// at a time).
    pub pipeline_depth: usize,
    /// Payload bytes one request carries at most (beyond its first payload, which always goes).
    /// It must stay below the cores' request limit (`NetLimits::max_request_bytes`, 32 MiB by
    /// default) with room for the certificates: a larger request is refused whole, so a lagging
    /// core whose catch-up exceeded it would never catch up. What is left out rides with later
    /// requests, or the core lists it as missing and it is carried then.
    pub max_payload_bytes: usize,
    /// The driver's home core (PROTOCOL.md §7, "Who carries payloads"): it pulls and carries
    /// this core's payloads eagerly, and any other payload only on demand (a core lists it as
    /// missing) or after [`DriverConfig::payload_grace_ms`]. `None`: every payload eagerly.
    pub home_core: Option<AuthorityIndex>,
    /// The home core is reached without a network hop (in the same process): every poll of it
    /// asks for its newest payload, which then costs a shared buffer, not a transfer.
    pub home_is_local: bool,
    /// How long a header of another author may wait, after this driver first saw it, for its
    /// payload to reach a core (the core votes on it) before this driver carries it there
    /// itself. Only used with a home core.
    pub payload_grace_ms: u64,
    /// Hard bound on the bytes of payloads the driver keeps (at least twice the largest
    /// payload): beyond it the oldest learned are dropped, and pulled again if a core still
    /// needs them. It bounds the memory of a driver inside a core process.
    pub payload_cache_bytes: usize,
}

impl Default for DriverConfig {
    fn default() -> DriverConfig {
        DriverConfig {
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            poll_interval_ms: DEFAULT_POLL_INTERVAL_MS,
            lag_rounds: DEFAULT_LAG_ROUNDS,
            sync_batch: DEFAULT_SYNC_BATCH,
            keep_rounds: DEFAULT_KEEP_ROUNDS,
            pipeline_depth: DEFAULT_PIPELINE_DEPTH,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            home_core: None,
            home_is_local: false,
            payload_grace_ms: DEFAULT_PAYLOAD_GRACE_MS,
            payload_cache_bytes: DEFAULT_PAYLOAD_CACHE_BYTES,
        }
    }
}

/// A request the driver wants sent.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// Identifies the reply.
    pub id: u64,
    /// Which core.
    pub core: AuthorityIndex,
    /// The request.
    pub request: Request,
}

/// What a request in flight was for.
#[derive(Clone, Copy, Debug)]
enum Purpose {
    /// Moves `core` itself.
    Own,
    /// Fetches history on behalf of `for_core`.
    FetchFor(AuthorityIndex),
    /// Fetches payloads that `for_core` misses and the driver does not hold.
    PayloadsFor(AuthorityIndex),
    /// Installs a checkpoint in `core` itself (§8a.3).
    Install,
    /// Asks another core for its checkpoint states on behalf of `for_core` (§8a.2).
    CheckpointFor(AuthorityIndex),
    /// Hands `core` itself entries of its gap (§8a.5).
    Fill,
    /// Reads committed entries from another core for the gap of `for_core` (§8a.5).
    FillFor(AuthorityIndex),
}

/// A request sent and not yet answered, failed or timed out.
#[derive(Clone, Debug)]
struct InFlight {
    /// The id its reply carries.
    id: u64,
    /// When it was sent (it times out `request_timeout_ms` later).
    sent_at: Millis,
    /// What it was for.
    purpose: Purpose,
    /// Digests of the headers, certificates and payloads it carries.
    items: Vec<Digest>,
}

/// A header the driver keeps, as the home-core policy looks at it (see `carriage`).
#[derive(Clone, Copy, Debug)]
struct Seen {
    /// When the driver first saw it.
    at: Millis,
    /// Its author.
    author: AuthorityIndex,
    /// Its round.
    round: Round,
    /// Whether its payload is not empty.
    payload: bool,
    /// Whether it was of the newest round or the one before ([`DriverState::top_round`]) when
    /// first seen: a header any driver would still offer.
    fresh: bool,
}

/// What the driver knows of one core.
#[derive(Clone, Debug, Default)]
struct CoreView {
    /// The core's latest summary (none before its first reply).
    summary: Option<Summary>,
    /// Requests in flight for this core (at most `pipeline_depth`).
    in_flight: Vec<InFlight>,
    /// No request at all before this time (back-off after failures).
    backoff_until: Millis,
    /// No idle `GetState` poll before this time (poll interval, `NotReady` hints).
    next_poll: Millis,
    /// Header digests this core voted for or refused for good.
    done: HashSet<Digest>,
    /// Certificate and payload digests delivered to this core (it holds them unless it said
    /// something was missing).
    sent: HashSet<Digest>,
    /// Digests of the headers delivered to this core (a certificate's digest is its header's,
    /// so they are kept apart from `sent`).
    headers_sent: HashSet<Digest>,
    /// Payload digests the core lists as missing, with when this driver first saw each listed.
    missing_since: HashMap<Digest, Millis>,
    /// Where this core stands in catch-up after it reported missing history (see [`CatchUp`]).
    catch_up: CatchUp,
    /// A core known to hold the history this core misses (the author of a header it could not
    /// vote on for missing parents): fetch from it first.
    fetch_hint: Option<AuthorityIndex>,
    /// Consecutive failures (timeouts, errors), for back-off.
    failures: u32,
    /// The core needs a checkpoint (§8a): even its floor is older than the history the core
    /// asked for it retains. Since when, and its last committed round then, if so.
    needs_checkpoint: Option<(Millis, Round)>,
    /// The next core asked for its checkpoint states on this core's behalf (round robin).
    checkpoint_source: usize,
    /// When checkpoint states were last asked for on this core's behalf.
    checkpoint_asked_at: Millis,
    /// Entries read for this core's gap, newest first, not yet handed to it (see `fill`).
    fill_entries: Option<Vec<CommittedEntry>>,
    /// The next core read for this core's gap (round robin).
    fill_source: usize,
    /// When entries were last read for this core's gap.
    fill_asked_at: Millis,
}

/// Whether a vote's signature was checked, and its verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Checked {
    /// Not yet: it is checked once it would complete a quorum.
    No,
    /// It verified.
    Valid,
    /// It did not: it never counts, and its voter's next vote for that header is ignored.
    Invalid,
}

/// The driver's soft state.
#[derive(Debug)]
pub struct DriverState {
    committee: Arc<Committee>,
    config: DriverConfig,
    cores: Vec<CoreView>,
    /// Headers by round and author (several per slot if an author equivocates).
    headers: BTreeMap<Round, BTreeMap<AuthorityIndex, Vec<SignedHeader>>>,
    /// Votes by header digest, each with whether its signature was checked.
    votes: HashMap<Digest, BTreeMap<AuthorityIndex, (Vote, Checked)>>,
    /// Certificates by round and author.
    certificates: BTreeMap<Round, BTreeMap<AuthorityIndex, Certificate>>,
    /// Payloads by digest, with the round that last referenced them, within a byte bound.
    payloads: PayloadCache,
    /// The author of each non-empty payload of the headers it keeps, by payload digest: a
    /// payload a core lists as missing is carried at once by a driver that carries its
    /// author's payloads eagerly.
    payload_authors: HashMap<Digest, AuthorityIndex>,
    /// When the driver first saw each header it keeps (the grace period runs from then).
    header_seen: HashMap<Digest, Seen>,
    /// When the driver assembled or learned each certificate it keeps.
    cert_seen: HashMap<Digest, Millis>,
    /// Per author: until when this driver carries its payloads eagerly although it is not its
    /// home core, because its headers went uncarried (see `carriage`); 0 if never.
    covered_until: Vec<Millis>,
    /// Per covered author: whether a core other than the author voted on one of its headers
    /// before this driver had delivered that header there, since the cover began: someone else
    /// carries its payloads, and the cover is not renewed (see `carriage`).
    carried_by_others: Vec<bool>,
    /// No look for uncarried authors before this time (see `carriage`).
    next_cover_check: Millis,
    /// How fast the DAG advances (the grace period follows it, see `carriage`).
    pace: Pace,
    /// The latest time the driver was told (by `poll` or a reply).
    now: Millis,
    /// Payloads asked of other cores with `FetchPayloads`: when, and how many times.
    payloads_asked: HashMap<Digest, (Millis, u32)>,
    /// The floor of the last full prune: soft state is only swept again once it rises.
    pruned_floor: Option<Round>,
    /// [`DriverState::top_round`], recomputed whenever a summary is stored.
    top: Round,
    /// The id of the next request.
    next_id: u64,
    /// Checkpoint work done, for the runner's log and metrics (see `checkpoints`).
    checkpoint_counts: CheckpointCounts,
    /// Per core, the checkpoint states of its latest `GetCheckpoint` reply whose signatures
    /// verified (see `checkpoints`).
    checkpoint_signatures: Vec<Vec<sleepyseal_core::checkpoint::SignedCheckpoint>>,
    /// Gap-fill work done (see `fill`).
    fill_counts: FillCounts,
    /// Payload bytes cores accepted from this driver in header and certificate bundles for
    /// authors other than its home core (see [`DriverState::foreign_payload_bytes`]).
    foreign_payload_bytes: u64,
}

impl DriverState {
    /// A driver with empty soft state. `id_base` separates the ids of successive incarnations.
    pub fn new(committee: Arc<Committee>, config: DriverConfig, id_base: u64) -> DriverState {
        DriverState {
            cores: vec![CoreView::default(); committee.size()],
            payloads: PayloadCache::new(config.payload_cache_bytes),
            covered_until: vec![Millis::default(); committee.size()],
            carried_by_others: vec![false; committee.size()],
            checkpoint_signatures: vec![Vec::new(); committee.size()],
            checkpoint_counts: CheckpointCounts::default(),
            fill_counts: FillCounts::default(),
            foreign_payload_bytes: 0,
            committee,
            config,
            headers: BTreeMap::new(),
            votes: HashMap::new(),
            certificates: BTreeMap::new(),
            header_seen: HashMap::new(),
            payload_authors: HashMap::new(),
            cert_seen: HashMap::new(),
            next_cover_check: Millis::default(),
            pace: Pace::default(),
            now: Millis::default(),
            payloads_asked: HashMap::new(),
            pruned_floor: None,
            top: Round::default(),
            next_id: id_base,
        }
    }

    /// The newest round reported by cores holding at least the validity threshold of stake
    /// (f + 1): one of them is honest, so Byzantine cores claiming a far-future round cannot
    /// raise it (a single liar used to move the prune floor of every honest driver and mark
    /// every honest core as lagging).
    pub fn top_round(&self) -> Round {
        self.top
    }

    fn compute_top_round(&self) -> Round {
        let mut reported: Vec<(Round, u64)> = self
            .cores
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let stake = self.committee.stake(AuthorityIndex(i as u16)).0;
                c.summary.as_ref().map(|s| (s.round, stake))
            })
            .collect();
        reported.sort_unstable_by_key(|r| std::cmp::Reverse(r.0));
        let needed = self.committee.validity_threshold().0;
        let mut stake = 0;
        for (round, s) in reported {
            stake += s;
            if stake >= needed {
                return round;
            }
        }
        Round::default()
    }

    /// The latest own header `core` reported.
    pub fn own_header_of(&self, core: AuthorityIndex) -> Option<&SignedHeader> {
        self.cores
            .get(core.as_usize())?
            .summary
            .as_ref()?
            .own_header
            .as_ref()
    }

    /// A one-line description of what the driver believes about `core` (for debugging).
    pub fn describe(&self, core: AuthorityIndex) -> String {
        let v = &self.cores[core.as_usize()];
        let s = v.summary.as_ref();
        format!(
            "round {:?} lcr {:?} gc {:?} status {:?} certs {:?} in_flight {:?} next {:?} done {} sent {} catch_up {:?} checkpoint {:?} failures {} next_req {:?}",
            s.map(|s| s.round),
            s.map(|s| s.last_committed_round),
            s.map(|s| s.gc_round),
            s.map(|s| &s.status),
            s.map(|s| s.certificates.iter().map(|c| (c.round.0, c.author.0)).collect::<Vec<_>>()),
            v.in_flight.iter().map(|f| (f.purpose, f.sent_at)).collect::<Vec<_>>(),
            v.next_poll,
            v.done.len(),
            v.sent.len(),
            v.catch_up,
            v.needs_checkpoint,
            v.failures,
            self.next_request(core).map(|(t, b, _)| (t, kind(&b))),
        )
    }

    /// Certificates the driver has assembled or learned.
    pub fn certificate_count(&self) -> usize {
        self.certificates.values().map(BTreeMap::len).sum()
    }

    /// Bytes of the payloads the driver holds (at most [`DriverConfig::payload_cache_bytes`]).
    pub fn cached_payload_bytes(&self) -> usize {
        self.payloads.bytes()
    }

    /// Payload bytes cores accepted from this driver in header and certificate bundles whose
    /// author is not its home core: covers of an author whose home driver seems dead, and
    /// carriage after the grace period, beyond the one carriage of each payload by its author's
    /// home driver. `Sync` (catch-up, and the payloads a core lists as missing) is not counted.
    /// A driver without a home core counts every payload it carries in bundles; deliveries to a
    /// home core in the same process are not counted (no network transfer).
    pub fn foreign_payload_bytes(&self) -> u64 {
        self.foreign_payload_bytes
    }

    /// Whether the driver carries `author`'s payloads eagerly now: it has no home core, `author`
    /// is its home core, or nobody else carries them (see the `carriage` module).
    pub fn carries_eagerly(&self, author: AuthorityIndex) -> bool {
        self.config.home_core.is_none_or(|h| h == author) || self.covers(author)
    }
}

/// The name of a request kind (for debugging).
pub fn kind(body: &RequestBody) -> String {
    match body {
        RequestBody::GetState { .. } => "GetState".into(),
        RequestBody::HeaderBundle {
            round,
            headers,
            parents,
            ..
        } => format!(
            "HeaderBundle({round}, {} headers, {} parents)",
            headers.len(),
            parents.len()
        ),
        RequestBody::CertBundle {
            round,
            certificates,
            parents,
            ..
        } => format!(
            "CertBundle({round}, {} certs, {} parents)",
            certificates.len(),
            parents.len()
        ),
        RequestBody::Sync {
            certificates,
            payloads,
        } => format!(
            "Sync({} certs r{}..r{}, {} payloads)",
            certificates.len(),
            certificates.first().map_or(0, |c| c.round().0),
            certificates.last().map_or(0, |c| c.round().0),
            payloads.len()
        ),
        RequestBody::Fetch { .. } => "Fetch".into(),
        RequestBody::Submit { .. } => "Submit".into(),
        RequestBody::ReadCommitted { .. } => "ReadCommitted".into(),
        RequestBody::FetchPayloads { digests } => format!("FetchPayloads({})", digests.len()),
        RequestBody::GetCheckpoint => "GetCheckpoint".into(),
        RequestBody::InstallCheckpoint { certificate } => format!(
            "InstallCheckpoint(index {}, round {})",
            certificate.state.consensus_index, certificate.state.last_committed_round
        ),
        RequestBody::FillLog { entries } => format!(
            "FillLog({} entries from index {})",
            entries.len(),
            entries.first().map_or(0, |e| e.index)
        ),
    }
}
