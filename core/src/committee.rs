//! The committee, its thresholds and instance id (PROTOCOL.md §1), the committee-wide protocol
//! constants (§4.6) and the leader schedule (§5).

use std::sync::Arc;

use crate::crypto::PublicKey;
use crate::hash::{Hasher, TAG_INSTANCE, TAG_LEADER};
use crate::limits::{MAX_COMMITTEE_SIZE, MAX_GENESIS_NONCE_BYTES, MAX_PROTOCOL_CONSTANT};
use crate::types::{AuthorityIndex, Digest, Round, Stake};

/// One validator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authority {
    /// Its position in committee order.
    pub index: AuthorityIndex,
    /// Its ed25519 verification key.
    pub public_key: PublicKey,
    /// Its voting power; always > 0.
    pub stake: Stake,
    /// Where its core listens (informational for the core itself; used by drivers).
    pub address: String,
}

/// Default GC_DEPTH: rounds kept for consensus below the last committed leader (§4.6).
pub const DEFAULT_GC_DEPTH: u64 = 50;
/// Default CHECKPOINT_INTERVAL: rounds between checkpoint boundaries (§8a.1). Half the
/// default retention (GC_DEPTH rounds), as the configuration rule of §8a.6 asks: the others
/// still hold the floor of the newest certified checkpoint while the next is assembled. A
/// boundary costs each core one signature and a small write; at 70 rounds a second that is
/// about three a second.
pub const DEFAULT_CHECKPOINT_INTERVAL: u64 = 25;

/// The protocol constants every core of a committee must share (PROTOCOL.md §4.6). The committed
/// sub-DAG is cut at gc_round, so two honest cores with different depths can commit different
/// sequences; both constants are therefore fixed at genesis and hashed into the instance id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtocolConstants {
    /// GC_DEPTH: gc_round = last_committed_round − GC_DEPTH.
    pub gc_depth: u64,
    /// CHECKPOINT_INTERVAL: a checkpoint boundary each time a committed leader's round reaches a
    /// new multiple of it.
    pub checkpoint_interval: u64,
}

impl Default for ProtocolConstants {
    fn default() -> ProtocolConstants {
        ProtocolConstants {
            gc_depth: DEFAULT_GC_DEPTH,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
        }
    }
}

impl ProtocolConstants {
    /// The least retention (rounds kept below gc_round) a core may run with: twice the
    /// checkpoint interval (PROTOCOL.md §8a.6), so that every honest core still holds the floor
    /// of the newest certified checkpoint while the next one is assembled.
    pub fn min_retention_rounds(&self) -> u64 {
        self.checkpoint_interval.saturating_mul(2)
    }

    /// The retention a core runs with unless told otherwise: GC_DEPTH, or the least the
    /// configuration rule allows if that is more.
    pub fn default_retention_rounds(&self) -> u64 {
        self.gc_depth.max(self.min_retention_rounds())
    }

    /// Checks both constants: each at least 1 and at most [`MAX_PROTOCOL_CONSTANT`].
    pub fn check(&self) -> Result<(), CommitteeError> {
        for (name, value) in [
            ("gc_depth", self.gc_depth),
            ("checkpoint_interval", self.checkpoint_interval),
        ] {
            if !(1..=MAX_PROTOCOL_CONSTANT).contains(&value) {
                return Err(CommitteeError::BadConstant { name, value });
            }
        }
        Ok(())
    }
}

/// The instance id of a committee (PROTOCOL.md §1): `H(SEAL/INSTANCE/v1 ‖ genesis nonce ‖ every
/// (index, key, stake) ‖ the constants)`, every field length-prefixed or fixed-size. Addresses are
/// left out: a validator may move without starting another instance.
pub fn instance_id(
    nonce: &[u8],
    authorities: &[Authority],
    constants: ProtocolConstants,
) -> Digest {
    let nonce_len = u32::try_from(nonce.len()).expect("nonce length is checked");
    let count = u32::try_from(authorities.len()).expect("committee size is checked");
    let mut h = Hasher::new(TAG_INSTANCE);
    h.update(&nonce_len.to_le_bytes())
        .update(nonce)
        .update(&count.to_le_bytes());
    for a in authorities {
        h.update(&a.index.0.to_le_bytes())
            .update(&a.public_key.0)
            .update(&a.stake.0.to_le_bytes());
    }
    h.update(&constants.gc_depth.to_le_bytes())
        .update(&constants.checkpoint_interval.to_le_bytes())
        .finish()
}

/// Why a committee description is not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommitteeError {
    /// No validators.
    #[error("empty committee")]
    Empty,
    /// More validators than the protocol's bitmaps and limits allow.
    #[error("{size} validators exceed the limit of {max}")]
    TooLarge {
        /// The size given.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Indices must be 0, 1, 2, ... in order.
    #[error("authority at position {position} has index {index}")]
    BadIndex {
        /// Where in the list.
        position: usize,
        /// The index it claimed.
        index: u16,
    },
    /// Stake 0 would make an authority's votes meaningless and break leader sampling.
    #[error("authority {0} has zero stake")]
    ZeroStake(AuthorityIndex),
    /// The total stake does not fit a u64.
    #[error("total stake overflows")]
    StakeOverflow,
    /// A public key that is not a valid ed25519 point, or a small-order one (anyone can sign for it).
    #[error("authority {0} has an invalid or small-order public key")]
    BadPublicKey(AuthorityIndex),
    /// A protocol constant out of range.
    #[error("protocol constant {name} = {value} is out of range (1..={max})", max = MAX_PROTOCOL_CONSTANT)]
    BadConstant {
        /// Which constant.
        name: &'static str,
        /// Its value.
        value: u64,
    },
    /// A genesis nonce longer than the limit.
    #[error("genesis nonce of {0} bytes exceeds the limit of {max}", max = MAX_GENESIS_NONCE_BYTES)]
    NonceTooLong(usize),
    /// The instance id given does not follow from the nonce, the authorities and the constants:
    /// the file was edited (another depth, another stake, another key) or belongs to another
    /// instance.
    #[error("instance id {claimed} does not match {computed}, the id of its nonce, authorities and protocol constants (edited, or of another version)")]
    InstanceMismatch {
        /// The id written down.
        claimed: Digest,
        /// The id recomputed.
        computed: Digest,
    },
}

/// Why a set of signers does not count.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StakeError {
    /// An index outside the committee.
    #[error("unknown authority {0}")]
    UnknownAuthority(AuthorityIndex),
    /// The same authority twice.
    #[error("authority {0} counted twice")]
    Duplicate(AuthorityIndex),
}

/// `(f_s, Q, V)` for total stake `S`: f_s = ⌊(S−1)/3⌋, Q = S − f_s, V = f_s + 1.
pub fn thresholds(total: Stake) -> (Stake, Stake, Stake) {
    assert!(total.0 > 0, "total stake must be positive");
    let f = (total.0 - 1) / 3;
    (Stake(f), Stake(total.0 - f), Stake(f + 1))
}

/// How `(f_s, Q, V)` follow from the total stake. The protocol's rule is [`thresholds`]; the seam
/// exists so that the negative controls of `sleepyseal-sim` can run cores on a wrong rule (the
/// 2021 prototype's quorum) and show that the simulator's checkers catch it. Nothing in the node
/// binary installs another rule.
pub type ThresholdRule = fn(total: Stake) -> (Stake, Stake, Stake);

/// The committee of one consensus instance.
#[derive(Clone, Debug)]
pub struct Committee {
    instance: Digest,
    constants: ProtocolConstants,
    authorities: Vec<Authority>,
    total: Stake,
    quorum: Stake,
    validity: Stake,
}

impl PartialEq for Committee {
    fn eq(&self, other: &Committee) -> bool {
        self.instance == other.instance
            && self.constants == other.constants
            && self.authorities == other.authorities
    }
}

impl Committee {
    /// The committee of a new instance: its id computed by [`instance_id`].
    pub fn genesis(
        nonce: &[u8],
        authorities: Vec<Authority>,
        constants: ProtocolConstants,
    ) -> Result<Committee, CommitteeError> {
        if nonce.len() > MAX_GENESIS_NONCE_BYTES {
            return Err(CommitteeError::NonceTooLong(nonce.len()));
        }
        let committee = Committee::new(Digest::default(), authorities, constants)?;
        let instance = instance_id(nonce, &committee.authorities, constants);
        Ok(Committee {
            instance,
            ..committee
        })
    }

    /// A committee as written down (a committee file): its id recomputed from the nonce, the
    /// authorities and the constants, and refused unless it equals `claimed`. So cores given
    /// different constants, or a file edited after genesis, never form one instance.
    pub fn load(
        claimed: Digest,
        nonce: &[u8],
        authorities: Vec<Authority>,
        constants: ProtocolConstants,
    ) -> Result<Committee, CommitteeError> {
        let committee = Committee::genesis(nonce, authorities, constants)?;
        if committee.instance != claimed {
            return Err(CommitteeError::InstanceMismatch {
                claimed,
                computed: committee.instance,
            });
        }
        Ok(committee)
    }

    /// Validates and builds a committee with the instance id given as is. Tests and simulations
    /// name their instances this way; a committee file goes through [`Committee::load`].
    pub fn new(
        instance: Digest,
        authorities: Vec<Authority>,
        constants: ProtocolConstants,
    ) -> Result<Committee, CommitteeError> {
        constants.check()?;
        if authorities.is_empty() {
            return Err(CommitteeError::Empty);
        }
        if authorities.len() > MAX_COMMITTEE_SIZE {
            return Err(CommitteeError::TooLarge {
                size: authorities.len(),
                max: MAX_COMMITTEE_SIZE,
            });
        }
        let mut total = 0u64;
        for (position, a) in authorities.iter().enumerate() {
            if a.index.as_usize() != position {
                return Err(CommitteeError::BadIndex {
                    position,
                    index: a.index.0,
                });
            }
            if a.stake.0 == 0 {
                return Err(CommitteeError::ZeroStake(a.index));
            }
            if !a.public_key.is_committee_key() {
                return Err(CommitteeError::BadPublicKey(a.index));
            }
            total = total
                .checked_add(a.stake.0)
                .ok_or(CommitteeError::StakeOverflow)?;
        }
        let (_, quorum, validity) = thresholds(Stake(total));
        Ok(Committee {
            instance,
            constants,
            authorities,
            total: Stake(total),
            quorum,
            validity,
        })
    }

    /// The same committee with its quorum and validity thresholds taken from `rule` instead of
    /// [`thresholds`] (negative controls only; see [`ThresholdRule`]).
    pub fn with_threshold_rule(mut self, rule: ThresholdRule) -> Committee {
        let (_, quorum, validity) = rule(self.total);
        self.quorum = quorum;
        self.validity = validity;
        self
    }

    /// The same committee, instance id unchanged, with other protocol constants: what a core
    /// started with a local `--gc-depth` did before the constants moved into the committee.
    /// Negative controls only (one honest core on another depth must be caught by the
    /// checkers); nothing in the node binary calls it.
    pub fn with_constants_unbound(mut self, constants: ProtocolConstants) -> Committee {
        self.constants = constants;
        self
    }

    /// The committee-wide protocol constants.
    pub fn constants(&self) -> ProtocolConstants {
        self.constants
    }
    /// GC_DEPTH.
    pub fn gc_depth(&self) -> u64 {
        self.constants.gc_depth
    }

    /// The instance id every message carries.
    pub fn instance(&self) -> Digest {
        self.instance
    }
    /// Number of validators.
    pub fn size(&self) -> usize {
        self.authorities.len()
    }
    /// All validators in index order.
    pub fn authorities(&self) -> &[Authority] {
        &self.authorities
    }
    /// All indices in order.
    pub fn indices(&self) -> impl Iterator<Item = AuthorityIndex> + '_ {
        self.authorities.iter().map(|a| a.index)
    }
    /// The validator at `index`, if any.
    pub fn authority(&self, index: AuthorityIndex) -> Option<&Authority> {
        self.authorities.get(index.as_usize())
    }
    /// Whether `index` names a validator.
    pub fn contains(&self, index: AuthorityIndex) -> bool {
        index.as_usize() < self.authorities.len()
    }
    /// Stake of one validator (0 if unknown).
    pub fn stake(&self, index: AuthorityIndex) -> Stake {
        self.authority(index).map_or(Stake(0), |a| a.stake)
    }
    /// S.
    pub fn total_stake(&self) -> Stake {
        self.total
    }
    /// Q = S − f_s.
    pub fn quorum_threshold(&self) -> Stake {
        self.quorum
    }
    /// V = f_s + 1.
    pub fn validity_threshold(&self) -> Stake {
        self.validity
    }
    /// Stake of a set of distinct, known indices.
    pub fn stake_of<I: IntoIterator<Item = AuthorityIndex>>(
        &self,
        indices: I,
    ) -> Result<Stake, StakeError> {
        let mut seen = vec![false; self.size()];
        let mut total = Stake(0);
        for i in indices {
            let slot = seen
                .get_mut(i.as_usize())
                .ok_or(StakeError::UnknownAuthority(i))?;
            if *slot {
                return Err(StakeError::Duplicate(i));
            }
            *slot = true;
            total += self.stake(i);
        }
        Ok(total)
    }
    /// Whether the stake of distinct known `indices` reaches Q.
    pub fn reaches_quorum<I: IntoIterator<Item = AuthorityIndex>>(&self, indices: I) -> bool {
        self.stake_of(indices).is_ok_and(|s| s >= self.quorum)
    }
}

/// Who leads each even round. Behind a trait so a random coin can replace it later.
pub trait LeaderSchedule: Send + Sync + std::fmt::Debug {
    /// The leader of `round` (meaningful for even rounds).
    fn leader(&self, round: Round) -> AuthorityIndex;
}

/// A portable stake-weighted pick: `H(SEAL/LEADER/v1 ‖ instance ‖ round) mod S`, walked over the
/// committee in index order. Depends on nothing but the committee, so every core, every platform
/// and every version agree.
#[derive(Clone, Debug)]
pub struct StakeWeightedLeaders {
    instance: Digest,
    /// Cumulative stake boundaries in index order: authority i owns `[cumulative[i-1], cumulative[i])`.
    cumulative: Vec<u64>,
}

impl StakeWeightedLeaders {
    /// The schedule of `committee`.
    pub fn new(committee: &Committee) -> StakeWeightedLeaders {
        let mut acc = 0u64;
        let cumulative = committee
            .authorities()
            .iter()
            .map(|a| {
                acc += a.stake.0;
                acc
            })
            .collect();
        StakeWeightedLeaders {
            instance: committee.instance(),
            cumulative,
        }
    }
}

impl LeaderSchedule for StakeWeightedLeaders {
    fn leader(&self, round: Round) -> AuthorityIndex {
        let total = *self.cumulative.last().expect("committee is not empty");
        let digest = Hasher::new(TAG_LEADER)
            .update(&self.instance.0)
            .update(&round.0.to_le_bytes())
            .finish();
        let mut word = [0u8; 8];
        word.copy_from_slice(&digest.0[..8]);
        let ticket = u64::from_le_bytes(word) % total;
        let position = self.cumulative.partition_point(|&bound| bound <= ticket);
        AuthorityIndex(u16::try_from(position).expect("committee size fits u16"))
    }
}

/// The default schedule of a committee, shared.
pub fn default_schedule(committee: &Committee) -> Arc<dyn LeaderSchedule> {
    Arc::new(StakeWeightedLeaders::new(committee))
}
