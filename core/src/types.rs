//! Newtypes for the protocol's scalar quantities. They are distinct types so a round can never be
//! passed where a stake is expected.

use std::fmt;

/// A DAG round. Round 0 holds the genesis certificates; headers start at round 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Round(pub u64);

impl Round {
    /// The genesis round.
    pub const GENESIS: Round = Round(0);

    /// The next round.
    pub fn next(self) -> Round {
        Round(self.0.checked_add(1).expect("round overflow"))
    }

    /// The previous round, saturating at genesis.
    pub fn prev(self) -> Round {
        Round(self.0.saturating_sub(1))
    }

    /// Leaders sit at even rounds ≥ 2 (round 0 is genesis).
    pub fn is_leader_round(self) -> bool {
        self.0 >= 2 && self.0 % 2 == 0
    }

    /// `self - rounds`, saturating at genesis.
    pub fn saturating_sub(self, rounds: u64) -> Round {
        Round(self.0.saturating_sub(rounds))
    }
}

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// The index of a validator in the committee (its position in committee order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AuthorityIndex(pub u16);

impl AuthorityIndex {
    /// The index as a `usize`, for vector indexing.
    pub fn as_usize(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for AuthorityIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// Voting power. Thresholds are computed over the sum of distinct authorities' stake.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stake(pub u64);

impl std::ops::Add for Stake {
    type Output = Stake;
    fn add(self, rhs: Stake) -> Stake {
        Stake(self.0.checked_add(rhs.0).expect("stake overflow"))
    }
}

impl std::ops::AddAssign for Stake {
    fn add_assign(&mut self, rhs: Stake) {
        *self = *self + rhs;
    }
}

impl std::iter::Sum for Stake {
    fn sum<I: Iterator<Item = Stake>>(iter: I) -> Stake {
        iter.fold(Stake(0), |a, b| a + b)
    }
}

/// A 32-byte domain-separated hash (see [`crate::hash`]).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The all-zero digest, used as `commit_hash` before the first commit.
    pub const ZERO: Digest = Digest([0; 32]);

    /// Lower-case hex of all 32 bytes.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight hex digits identify a digest in logs and test output.
        write!(f, "{}", &self.to_hex()[..8])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

/// Milliseconds on the caller's clock. The core never reads a clock: every request handler takes
/// `now` as an argument, so the simulator can run on virtual time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

impl Millis {
    /// `self - earlier`, saturating at zero.
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}
