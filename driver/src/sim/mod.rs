//! The deterministic simulator: n real cores and m real drivers exchanging real encoded requests
//! through a seeded network with latency, loss, duplication, reordering and link cuts; core
//! crash/restart with loss of unsynced writes; driver crash/restart. The invariant checkers of
//! PROTOCOL.md §9 run after every step. Everything is a function of the seed: a failing seed
//! replays exactly (`sleepyseal sim --seed N`).

mod check;
mod node;
mod rng;
mod world;

pub use check::{Checker, Violation};
pub use rng::SimRng;
pub use world::{run, SimConfig, SimReport};

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
}
