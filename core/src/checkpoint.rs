//! Checkpoints (PROTOCOL.md §8a.1–8a.2): the commit rule's whole state at a boundary of the
//! committed sequence, signed by the cores that reached it themselves, and certified by
//! signatures of stake ≥ V. A core further behind than the others retain installs one instead of
//! replaying history it can no longer get.
//!
//! A boundary is the state right after the sub-DAG of the first committed leader whose round
//! reaches a new multiple of CHECKPOINT_INTERVAL. It is detected leader by leader, also inside a
//! chain of leaders committed at once ([`crate::tusk::try_commit`]), so it is a function of the
//! committed sequence and every honest core meets the same boundaries.

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::committee::{Committee, StakeError};
use crate::crypto::Signature;
use crate::hash::{Hasher, TAG_CHECKPOINT};
use crate::limits::MAX_COMMITTEE_SIZE;
use crate::messages::{decode_signed_by, encode_signed_by};
use crate::tusk::ConsensusState;
use crate::types::{AuthorityIndex, Digest, Round, Stake};

/// The commit rule's state at a boundary, bound to its instance.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CheckpointState {
    /// The instance it belongs to.
    pub instance: Digest,
    /// Committed certificates up to the boundary.
    pub consensus_index: u64,
    /// The commit chain's hash at the boundary.
    pub commit_hash: Digest,
    /// The boundary leader's round.
    pub last_committed_round: Round,
    /// Per author, its highest committed round.
    pub last_committed: Vec<Round>,
}

impl CheckpointState {
    /// The state of `consensus` in `instance`.
    pub fn of(instance: Digest, consensus: &ConsensusState) -> CheckpointState {
        CheckpointState {
            instance,
            consensus_index: consensus.consensus_index,
            commit_hash: consensus.commit_hash,
            last_committed_round: consensus.last_committed_round,
            last_committed: consensus.last_committed.clone(),
        }
    }

    /// `H(SEAL/CKPT/v1 ‖ enc(state))`: what checkpoint signatures sign (with the instance).
    pub fn digest(&self) -> Digest {
        Hasher::new(TAG_CHECKPOINT)
            .update(&self.to_bytes())
            .finish()
    }

    /// The consensus state it stands for.
    pub fn consensus(&self) -> ConsensusState {
        ConsensusState {
            last_committed: self.last_committed.clone(),
            last_committed_round: self.last_committed_round,
            consensus_index: self.consensus_index,
            commit_hash: self.commit_hash,
        }
    }
}

impl Encode for CheckpointState {
    fn encode(&self, w: &mut Writer) {
        w.digest(&self.instance);
        w.u64(self.consensus_index);
        w.digest(&self.commit_hash);
        w.round(self.last_committed_round);
        w.seq(&self.last_committed);
    }
}

impl Decode for CheckpointState {
    const MIN_ENCODED_BYTES: usize = 32 + 8 + 32 + 8 + 4;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(CheckpointState {
            instance: r.digest()?,
            consensus_index: r.u64()?,
            commit_hash: r.digest()?,
            last_committed_round: r.round()?,
            last_committed: r.seq("last_committed", MAX_COMMITTEE_SIZE)?,
        })
    }
}

/// The message a checkpoint signature signs: `SEAL/CKPT/v1 ‖ instance ‖ digest`, with the tag in
/// a fixed 12-byte field (as a vote's), so it can never be read as a vote message.
pub fn checkpoint_message(instance: &Digest, digest: &Digest) -> [u8; 76] {
    let mut m = [0u8; 76];
    m[..TAG_CHECKPOINT.len()].copy_from_slice(TAG_CHECKPOINT);
    m[12..44].copy_from_slice(&instance.0);
    m[44..76].copy_from_slice(&digest.0);
    m
}

/// One core's signature on a checkpoint state, as it serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The state.
    pub state: CheckpointState,
    /// Who signed.
    pub signer: AuthorityIndex,
    /// Its signature over [`checkpoint_message`] of the state's digest.
    pub signature: Signature,
}

impl Encode for SignedCheckpoint {
    fn encode(&self, w: &mut Writer) {
        self.state.encode(w);
        w.authority(self.signer);
        w.raw(&self.signature.0);
    }
}

impl Decode for SignedCheckpoint {
    const MIN_ENCODED_BYTES: usize = CheckpointState::MIN_ENCODED_BYTES + 2 + 64;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(SignedCheckpoint {
            state: CheckpointState::decode(r)?,
            signer: r.authority()?,
            signature: Signature(r.fixed()?),
        })
    }
}

/// A checkpoint state with signatures of stake ≥ V. `signers` ascending and unique, one
/// signature per signer in the same order. Valid ⇔ the shape holds ([`CheckpointCert::check`])
/// ∧ every signature verifies (the verifier's job, with the same rules as votes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointCert {
    /// The certified state.
    pub state: CheckpointState,
    /// Who signed, ascending.
    pub signers: Vec<AuthorityIndex>,
    /// One signature per signer, in `signers` order.
    pub signatures: Vec<Signature>,
}

/// Why a checkpoint certificate's shape is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Another instance's state.
    #[error("checkpoint of another instance")]
    WrongInstance,
    /// A per-author vector of the wrong length.
    #[error("checkpoint lists {got} authors, the committee has {expected}")]
    Authors {
        /// Authors listed.
        got: usize,
        /// Committee size.
        expected: usize,
    },
    /// `signers` and `signatures` differ in length, or signers are not ascending.
    #[error("checkpoint signers malformed")]
    Signers,
    /// A signer outside the committee, or counted twice.
    #[error("checkpoint signer: {0}")]
    Stake(#[from] StakeError),
    /// Signers below the validity threshold.
    #[error("checkpoint signed by stake {got}, below V = {needed}")]
    BelowValidity {
        /// Stake of the signers.
        got: u64,
        /// V.
        needed: u64,
    },
}

impl CheckpointCert {
    /// Everything but the signatures themselves: the instance, one round per author, signers
    /// ascending, unique and known, one signature each, and stake ≥ V (PROTOCOL.md §8a.2: V
    /// holds an honest signer, and honest cores only sign states they reached).
    pub fn check(&self, committee: &Committee) -> Result<Stake, CheckpointError> {
        if self.state.instance != committee.instance() {
            return Err(CheckpointError::WrongInstance);
        }
        if self.state.last_committed.len() != committee.size() {
            return Err(CheckpointError::Authors {
                got: self.state.last_committed.len(),
                expected: committee.size(),
            });
        }
        if self.signers.len() != self.signatures.len()
            || self.signers.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(CheckpointError::Signers);
        }
        let stake = committee.stake_of(self.signers.iter().copied())?;
        if stake < committee.validity_threshold() {
            return Err(CheckpointError::BelowValidity {
                got: stake.0,
                needed: committee.validity_threshold().0,
            });
        }
        Ok(stake)
    }
}

impl Encode for CheckpointCert {
    fn encode(&self, w: &mut Writer) {
        self.state.encode(w);
        encode_signed_by(w, &self.signers, &self.signatures);
    }
}

impl Decode for CheckpointCert {
    const MIN_ENCODED_BYTES: usize = CheckpointState::MIN_ENCODED_BYTES + 4;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let state = CheckpointState::decode(r)?;
        let (signers, signatures) = decode_signed_by(r)?;
        Ok(CheckpointCert {
            state,
            signers,
            signatures,
        })
    }
}

/// Whether committing a leader of round `leader` right after `previous` (the last committed
/// leader's round) crosses a boundary: the leader's round reaches a new multiple of `interval`.
pub fn crosses_boundary(previous: Round, leader: Round, interval: u64) -> bool {
    let interval = interval.max(1);
    leader.0 / interval > previous.0 / interval
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{committee, instance};

    #[test]
    fn boundaries_fall_on_new_multiples_of_the_interval() {
        let at = |p, l| crosses_boundary(Round(p), Round(l), 10);
        assert!(!at(0, 8));
        assert!(at(8, 10));
        assert!(at(8, 12));
        assert!(!at(10, 12));
        assert!(!at(12, 18));
        assert!(at(18, 20));
        // A jump over several multiples is one boundary.
        assert!(at(2, 44));
    }

    #[test]
    fn a_certificate_needs_validity_stake_of_distinct_known_signers() {
        let c = committee(4);
        let state = CheckpointState::of(instance(), &ConsensusState::new(4));
        let cert = |signers: Vec<u16>| CheckpointCert {
            state: state.clone(),
            signatures: vec![Signature([0; 64]); signers.len()],
            signers: signers.into_iter().map(AuthorityIndex).collect(),
        };
        // n = 4: f = 1, V = 2.
        assert_eq!(cert(vec![0, 3]).check(&c), Ok(Stake(2)));
        assert!(matches!(
            cert(vec![2]).check(&c),
            Err(CheckpointError::BelowValidity { got: 1, needed: 2 })
        ));
        assert!(matches!(
            cert(vec![1, 1]).check(&c),
            Err(CheckpointError::Signers)
        ));
        assert_eq!(cert(vec![3, 1]).check(&c), Err(CheckpointError::Signers));
        assert!(matches!(
            cert(vec![1, 9]).check(&c),
            Err(CheckpointError::Stake(StakeError::UnknownAuthority(_)))
        ));
        let mut short = cert(vec![0, 1]);
        short.signatures.pop();
        assert_eq!(short.check(&c), Err(CheckpointError::Signers));
        let mut other = cert(vec![0, 1]);
        other.state.instance = Digest([9; 32]);
        assert_eq!(other.check(&c), Err(CheckpointError::WrongInstance));
    }

    #[test]
    fn encodings_round_trip_and_digests_bind_every_field() {
        let mut consensus = ConsensusState::new(4);
        consensus.consensus_index = 17;
        consensus.last_committed_round = Round(20);
        consensus.last_committed[2] = Round(19);
        let state = CheckpointState::of(instance(), &consensus);
        assert_eq!(
            CheckpointState::from_bytes(state.to_bytes()).unwrap(),
            state
        );
        let mut moved = state.clone();
        moved.last_committed[2] = Round(18);
        assert_ne!(moved.digest(), state.digest());
        let cert = CheckpointCert {
            state: state.clone(),
            signers: vec![AuthorityIndex(0), AuthorityIndex(2)],
            signatures: vec![Signature([1; 64]), Signature([2; 64])],
        };
        assert_eq!(CheckpointCert::from_bytes(cert.to_bytes()).unwrap(), cert);
        assert_ne!(
            checkpoint_message(&instance(), &state.digest()),
            crate::messages::vote_message(&instance(), &state.digest())
        );
    }
}
