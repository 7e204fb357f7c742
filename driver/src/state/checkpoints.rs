//! Checkpoint certificates (PROTOCOL.md §8a.2). Cores serve their latest boundary states, each
//! signed, with `GetCheckpoint`; the driver checks each signature as it learns it (a Byzantine
//! core cannot poison a certificate) and keeps, per core, the states of its latest reply. A
//! state whose valid signers reach V stake is certified, with every valid signature the driver
//! holds for it (up to all, so more cores serve the floor after an install).

use std::collections::BTreeMap;

use sleepyseal_core::checkpoint::{
    checkpoint_message, CheckpointCert, CheckpointState, SignedCheckpoint,
};
use sleepyseal_core::crypto::{verify_batch, SignatureItem};
use sleepyseal_core::limits::MAX_CHECKPOINTS_PER_REPLY;
use sleepyseal_core::{AuthorityIndex, Digest, Signature};

use super::DriverState;

/// A checkpoint state and the valid signatures held for it.
type Signed<'a> = (&'a CheckpointState, Vec<(AuthorityIndex, Signature)>);

impl DriverState {
    /// `from`'s reply to `GetCheckpoint`: the states it signed itself, with valid signatures,
    /// replace those it served before.
    pub(super) fn learn_checkpoints(
        &mut self,
        from: AuthorityIndex,
        states: Vec<SignedCheckpoint>,
    ) {
        let Some(authority) = self.committee.authority(from) else {
            return;
        };
        let instance = self.committee.instance();
        let states: Vec<SignedCheckpoint> = states
            .into_iter()
            .filter(|s| {
                s.signer == from
                    && s.state.instance == instance
                    && s.state.last_committed.len() == self.committee.size()
            })
            .take(MAX_CHECKPOINTS_PER_REPLY)
            .collect();
        let messages: Vec<[u8; 76]> = states
            .iter()
            .map(|s| checkpoint_message(&instance, &s.state.digest()))
            .collect();
        let items: Vec<SignatureItem<'_>> = states
            .iter()
            .zip(&messages)
            .map(|(s, message)| SignatureItem {
                public_key: authority.public_key,
                message,
                signature: s.signature,
            })
            .collect();
        let verdicts = verify_batch(&items, items.len().max(1));
        self.checkpoint_signatures[from.as_usize()] = states
            .into_iter()
            .zip(verdicts)
            .filter_map(|(s, valid)| valid.then_some(s))
            .collect();
    }

    /// The newest checkpoint state signed by validity stake (V) among the states the cores last
    /// served, with every valid signature held for it; `None` if no state reaches V.
    pub fn checkpoint_certificate(&self) -> Option<CheckpointCert> {
        let mut by_digest: BTreeMap<(u64, Digest), Signed<'_>> = BTreeMap::new();
        for signed in self.checkpoint_signatures.iter().flatten() {
            let entry = by_digest
                .entry((signed.state.consensus_index, signed.state.digest()))
                .or_insert_with(|| (&signed.state, Vec::new()));
            entry.1.push((signed.signer, signed.signature));
        }
        by_digest
            .into_values()
            .rev()
            .find_map(|(state, mut signed)| {
                signed.sort_by_key(|(signer, _)| *signer);
                signed.dedup_by_key(|(signer, _)| *signer);
                let stake = self
                    .committee
                    .stake_of(signed.iter().map(|(signer, _)| *signer))
                    .ok()?;
                (stake >= self.committee.validity_threshold()).then(|| CheckpointCert {
                    state: state.clone(),
                    signers: signed.iter().map(|(signer, _)| *signer).collect(),
                    signatures: signed.iter().map(|(_, signature)| *signature).collect(),
                })
            })
    }
}
