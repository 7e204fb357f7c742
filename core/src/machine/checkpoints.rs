//! Checkpoint states (PROTOCOL.md §8a.1): the core signs each boundary its own commit rule
//! reaches, keeps its latest few with the commit that reached them, and serves them with
//! `GetCheckpoint`.

use super::{Core, Tx, KEPT_CHECKPOINTS};
use crate::checkpoint::{checkpoint_message, CheckpointState, SignedCheckpoint};
use crate::codec::Encode;
use crate::machine::recover::RecoverError;
use crate::store::keys;
use crate::tusk::ConsensusState;

impl Core {
    /// Signs `boundary`, a state this core's commit rule just reached, and keeps it (written
    /// with the commit that reached it); the oldest kept beyond [`KEPT_CHECKPOINTS`] is dropped.
    pub(super) fn sign_checkpoint(&mut self, boundary: &ConsensusState, tx: &mut Tx) {
        let state = CheckpointState::of(self.committee.instance(), boundary);
        assert!(
            self.checkpoints
                .back()
                .is_none_or(|c| c.state.consensus_index < state.consensus_index),
            "checkpoint boundaries only move forward"
        );
        let signed = SignedCheckpoint {
            signature: self
                .key
                .sign(&checkpoint_message(&state.instance, &state.digest())),
            signer: self.me,
            state,
        };
        tx.batch.put(
            keys::checkpoint(signed.state.consensus_index),
            signed.to_bytes(),
        );
        self.checkpoints.push_back(signed);
        self.counters.checkpoints_signed += 1;
        while self.checkpoints.len() > KEPT_CHECKPOINTS {
            let old = self.checkpoints.pop_front().expect("more than kept");
            tx.batch.delete(keys::checkpoint(old.state.consensus_index));
        }
    }

    /// The checkpoint states this core signed, from its store: its own, of this instance, not
    /// beyond what it committed.
    pub(super) fn restore_checkpoints(
        &mut self,
        stored: Vec<SignedCheckpoint>,
    ) -> Result<(), RecoverError> {
        for signed in stored {
            if signed.signer != self.me
                || signed.state.instance != self.committee.instance()
                || signed.state.consensus_index > self.consensus.consensus_index
            {
                return Err(RecoverError::Inconsistent(format!(
                    "checkpoint at index {} is not one this core reached",
                    signed.state.consensus_index
                )));
            }
            self.checkpoints.push_back(signed);
        }
        Ok(())
    }

    /// The checkpoint states this core keeps, oldest first.
    pub fn checkpoints(&self) -> impl Iterator<Item = &SignedCheckpoint> {
        self.checkpoints.iter()
    }
}
