//! # sleepyseal-sim
//!
//! The test infrastructure of sleepyseal, kept out of every binary that runs cores and drivers.
//!
//! The deterministic simulator: n real cores and m real drivers exchanging real encoded requests
//! through a seeded network with latency, loss, duplication, reordering and link cuts; core
//! crash/restart with loss of unsynced writes; driver crash/restart; home-core drivers, some of
//! them dead. The invariant checkers of
//! PROTOCOL.md §9 run after every step. Everything is a function of the seed: a failing seed
//! replays exactly (`sleepyseal-sim --seed N --seeds 1`).
//!
//! Layout:
//! - [`world`](run): the simulated network, clock and disks, and the event loop over them;
//! - `node`: a simulated core (real [`sleepyseal_core::Core`] over an in-memory store with
//!   unsynced-write loss) and its Byzantine behaviours;
//! - [`check`](Checker): the invariant checkers of PROTOCOL.md §9;
//! - [`controls`]: negative controls, and [`planted`]: the planted faults they run, implemented
//!   through the seams the core exposes (quorum rule, signature check, leader schedule). This
//!   crate is the only place planted faults exist: no cargo feature compiles them into the core;
//! - [`fuzz`]: the fuzz targets and the counting allocator they run under (`fuzz/` runs them under
//!   libFuzzer, `tests/fuzz_targets.rs` on stable in CI);
//! - the `sleepyseal-sim` binary: many seeds in parallel with a summary, and `--self-check`.

mod check;
pub mod controls;
pub mod fuzz;
mod node;
pub mod planted;
mod rng;
mod world;

pub use check::{Checker, Violation};
pub use planted::{HashOrderedLeaders, Mutant};
pub use rng::SimRng;
pub use world::{run, HomeDrivers, SimConfig, SimDebug, SimReport, SIM_PAYLOAD_GRACE_MS};

/// What the Byzantine part of a run does. Core behaviours apply to the first `byzantine`
/// authorities after the twins (their keys are counted as Byzantine by the checkers); `Twin` and
/// `TwinsScenario` make them equivocating twins; driver behaviours add `byzantine` hostile
/// drivers beside the honest ones (every core stays honest). Honest cores must stay safe, and
/// live with at least one honest driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Behaviour {
    /// Honest.
    #[default]
    Honest,
    /// Answers header bundles without its votes.
    WithholdVotes,
    /// Never shows its own header (summaries carry none).
    WithholdHeaders,
    /// Corrupts the signatures of the votes and headers it hands out.
    InvalidSignatures,
    /// Stale-round replays: answers with an older reply of the same kind (older rounds, older
    /// headers and votes) instead of the current one.
    StaleReplies,
    /// Every 150 requests forgets everything (restarts on an empty store) and signs again.
    Amnesia,
    /// Shows, often, a validly signed own header of a far-future round.
    FarFutureRounds,
    /// Shows, often, a validly signed own header with missing or fabricated parents.
    BadParents,
    /// Shows, often, a validly signed own header whose payload is wrong (digest or bytes do not
    /// match) or oversized.
    BadPayloads,
    /// Silent until the GC floor reaches its newest certificate, then signs a header for every
    /// round from the floor up to the present, each on the one before, and gets them certified:
    /// the next committed leader's history reaches down to the floor, where the commit rule
    /// cuts it (its core never runs; its key signs through an adversary, `world/old_chain.rs`).
    OldChains,
    /// Signs checkpoint states nobody reached, offered by a hostile driver to every honest core
    /// as certificates below V, with forged co-signers, or real but stale
    /// (`world/forged_checkpoints.rs`).
    ForgedCheckpoints,
    /// An equivocating twin: two instances with one key and separate stores, each reached by
    /// different drivers.
    Twin,
    /// Twins-style scenario: twins plus generated per-round leaders and, phase by phase, which
    /// instance of each authority every driver reaches (none, the original or the twin).
    TwinsScenario,
    /// A fast hostile driver that drops the leader's header and certificate from its bundles.
    OmitLeader,
    /// A hostile driver that also sends old requests again, to any core.
    ReplayBundles,
    /// A hostile driver that shuffles the items of its bundles and sends requests out of order.
    ReorderBundles,
    /// A hostile driver that cuts its bundles (items or encoded bytes) short.
    TruncateBundles,
    /// A hostile driver that mixes headers, certificates and parents of different rounds.
    MixRounds,
    /// A hostile driver that sends random bytes and damaged encodings.
    Garbage,
    /// A hostile driver that hands cores with an open gap damaged fills: truncated, reordered,
    /// wrongly anchored, or with fields changed under honest hashes (`world/forged_fills.rs`).
    ForgedFills,
    /// A hostile driver that installs, at every honest core more than GC_DEPTH behind the
    /// newest certified checkpoint, the oldest real certificate that core must take (or one
    /// exactly GC_DEPTH ahead, which it must refuse as `NotNeeded`): installs at cores barely
    /// behind, whose votes and own headers lie above the new floor (`world/eager_installs.rs`).
    EagerInstalls,
    /// Any mix: each of the K Byzantine cores runs a different core behaviour (rotating with the
    /// seed), beside one hostile driver of a driver behaviour (rotating too).
    Mixed,
}

impl Behaviour {
    /// Every misbehaviour, for `--behaviour all` (seed s runs the (s mod 21)-th): the core
    /// behaviours, the twins, the driver behaviours, then the mix.
    pub const ALL: [Behaviour; 21] = {
        let mut all = [Behaviour::Honest; 21];
        let mut i = 0;
        while i < Behaviour::CORES.len() {
            all[i] = Behaviour::CORES[i];
            i += 1;
        }
        all[10] = Behaviour::Twin;
        all[11] = Behaviour::TwinsScenario;
        let mut j = 0;
        while j < Behaviour::DRIVERS.len() {
            all[12 + j] = Behaviour::DRIVERS[j];
            j += 1;
        }
        all[20] = Behaviour::Mixed;
        all
    };

    /// The behaviours of single Byzantine cores (what `Mixed` draws from).
    pub const CORES: [Behaviour; 10] = [
        Behaviour::WithholdVotes,
        Behaviour::WithholdHeaders,
        Behaviour::InvalidSignatures,
        Behaviour::StaleReplies,
        Behaviour::Amnesia,
        Behaviour::FarFutureRounds,
        Behaviour::BadParents,
        Behaviour::BadPayloads,
        Behaviour::OldChains,
        Behaviour::ForgedCheckpoints,
    ];

    /// The behaviours of hostile drivers (what `Mixed` draws from).
    pub const DRIVERS: [Behaviour; 8] = [
        Behaviour::OmitLeader,
        Behaviour::ReplayBundles,
        Behaviour::ReorderBundles,
        Behaviour::TruncateBundles,
        Behaviour::MixRounds,
        Behaviour::Garbage,
        Behaviour::ForgedFills,
        Behaviour::EagerInstalls,
    ];

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Honest => "honest",
            Behaviour::WithholdVotes => "withhold-votes",
            Behaviour::WithholdHeaders => "withhold-headers",
            Behaviour::InvalidSignatures => "invalid-signatures",
            Behaviour::StaleReplies => "stale-replies",
            Behaviour::Amnesia => "amnesia",
            Behaviour::FarFutureRounds => "far-future-rounds",
            Behaviour::BadParents => "bad-parents",
            Behaviour::BadPayloads => "bad-payloads",
            Behaviour::OldChains => "old-chains",
            Behaviour::ForgedCheckpoints => "forged-checkpoints",
            Behaviour::Twin => "twin",
            Behaviour::TwinsScenario => "twins-scenario",
            Behaviour::OmitLeader => "omit-leader",
            Behaviour::ReplayBundles => "replay-bundles",
            Behaviour::ReorderBundles => "reorder-bundles",
            Behaviour::TruncateBundles => "truncate-bundles",
            Behaviour::MixRounds => "mix-rounds",
            Behaviour::Garbage => "garbage",
            Behaviour::ForgedFills => "forged-fills",
            Behaviour::EagerInstalls => "eager-installs",
            Behaviour::Mixed => "mixed",
        }
    }

    /// The behaviour with CLI name `name`.
    pub fn from_name(name: &str) -> Option<Behaviour> {
        Behaviour::ALL
            .into_iter()
            .chain([Behaviour::Honest])
            .find(|b| b.name() == name)
    }

    /// Whether it is a driver's (the cores all stay honest; Byzantine stake is not used).
    pub fn is_driver(self) -> bool {
        Behaviour::DRIVERS.contains(&self)
    }

    /// Whether the Byzantine authorities run as equivocating twins.
    pub fn is_twin(self) -> bool {
        matches!(self, Behaviour::Twin | Behaviour::TwinsScenario)
    }
}

/// The leader schedule of a Twins scenario: one generated leader per even round (the same for
/// every instance: the schedule is part of the protocol's configuration), round-robin after the
/// generated table.
#[derive(Debug)]
pub struct GeneratedLeaders {
    table: Vec<sleepyseal_core::AuthorityIndex>,
    n: usize,
}

impl GeneratedLeaders {
    /// `rounds` generated leader choices for a committee of `n`, from `rng`.
    pub fn new(rng: &mut SimRng, n: usize, rounds: usize) -> GeneratedLeaders {
        let table = (0..rounds)
            .map(|_| sleepyseal_core::AuthorityIndex(rng.index(n) as u16))
            .collect();
        GeneratedLeaders { table, n }
    }
}

impl sleepyseal_core::LeaderSchedule for GeneratedLeaders {
    fn leader(&self, round: sleepyseal_core::Round) -> sleepyseal_core::AuthorityIndex {
        let slot = (round.0 / 2) as usize;
        match self.table.get(slot) {
            Some(a) => *a,
            None => sleepyseal_core::AuthorityIndex((slot % self.n) as u16),
        }
    }
}
