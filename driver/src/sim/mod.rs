//! The deterministic simulator: n real cores and m real drivers exchanging real encoded requests
//! through a seeded network with latency, loss, duplication, reordering and link cuts; core
//! crash/restart with loss of unsynced writes; driver crash/restart. The invariant checkers of
//! PROTOCOL.md §9 run after every step. Everything is a function of the seed: a failing seed
//! replays exactly (`sleepyseal sim --seed N`).

mod check;
pub mod controls;
mod node;
mod rng;
mod world;

pub use check::{Checker, Violation};
pub use rng::SimRng;
pub use world::{run, SimConfig, SimReport};

/// How a Byzantine core (one of the first `byzantine` authorities after the twins) misbehaves.
/// Its key is counted as Byzantine by the checkers; the honest cores must stay safe and live.
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
    /// Answers with an older reply of the same kind instead of the current one.
    StaleReplies,
    /// Every 150 requests forgets everything (restarts on an empty store) and signs again.
    Amnesia,
}

impl Behaviour {
    /// Every misbehaviour, for `--behaviour all`.
    pub const ALL: [Behaviour; 5] = [
        Behaviour::WithholdVotes,
        Behaviour::WithholdHeaders,
        Behaviour::InvalidSignatures,
        Behaviour::StaleReplies,
        Behaviour::Amnesia,
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
        }
    }

    /// The behaviour with CLI name `name`.
    pub fn from_name(name: &str) -> Option<Behaviour> {
        Behaviour::ALL
            .into_iter()
            .chain([Behaviour::Honest])
            .find(|b| b.name() == name)
    }
}

/// Negative controls: known bugs the checkers must catch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mutant {
    /// The real protocol.
    #[default]
    None,
    /// The 2021 prototype's quorum 2⌊S/3⌋+1 (needs S ≡ 2 mod 3 and an equivocating twin).
    PrototypeQuorum,
    /// Cores accept every signature (needs a forging driver).
    NoSignatureCheck,
    /// Cores release replies before their writes are durable (needs restarts).
    ReplyBeforeWrite,
    /// Each core picks leaders from the iteration order of its own hash map (what a
    /// `HashMap`-ordered leader schedule does across processes): cores disagree on leaders.
    HashMapOrderedLeader,
}

/// The leader schedule of the [`Mutant::HashMapOrderedLeader`] control: authorities ordered by a
/// hash keyed with the core's own instance number, as a `HashMap` with a per-process random state
/// would order them. Deterministic per instance (so seeds replay), different across instances.
#[derive(Debug)]
pub struct HashOrderedLeaders {
    order: Vec<sleepyseal_core::AuthorityIndex>,
}

impl HashOrderedLeaders {
    /// The order seen by instance `instance` of `committee`.
    pub fn new(committee: &sleepyseal_core::Committee, instance: usize) -> HashOrderedLeaders {
        use std::hash::{Hash, Hasher};
        let mut order: Vec<_> = committee.indices().collect();
        order.sort_by_key(|a| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (instance, a.0).hash(&mut h);
            h.finish()
        });
        HashOrderedLeaders { order }
    }
}

impl sleepyseal_core::LeaderSchedule for HashOrderedLeaders {
    fn leader(&self, round: sleepyseal_core::Round) -> sleepyseal_core::AuthorityIndex {
        self.order[(round.0 / 2) as usize % self.order.len()]
    }
}
