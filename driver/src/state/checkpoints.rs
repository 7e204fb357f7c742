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

use sleepyseal_core::Millis;

use super::{DriverState, Purpose};

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

/// What a driver did about cores that need a checkpoint (monotonic counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointCounts {
    /// Times a core was found to need a checkpoint (its history is gone everywhere asked).
    pub cores_needing: u64,
    /// `InstallCheckpoint` requests sent.
    pub installs_sent: u64,
    /// Installs a core accepted.
    pub installs_done: u64,
    /// Installs refused (`Stale`, `NotNeeded`, invalid): catch-up goes on without one.
    pub installs_refused: u64,
}

impl DriverState {
    /// What this driver did about cores that need a checkpoint.
    pub fn checkpoint_counts(&self) -> CheckpointCounts {
        self.checkpoint_counts
    }

    /// The cores waiting for a checkpoint.
    pub fn cores_needing_checkpoint(&self) -> Vec<AuthorityIndex> {
        (0..self.cores.len())
            .filter(|i| self.cores[*i].needs_checkpoint.is_some())
            .map(|i| AuthorityIndex(i as u16))
            .collect()
    }

    /// Whether `core` is waiting for a checkpoint, and since when.
    pub fn needs_checkpoint(&self, core: AuthorityIndex) -> Option<Millis> {
        self.cores
            .get(core.as_usize())?
            .needs_checkpoint
            .map(|(at, _)| at)
    }

    /// A fetch on `core`'s behalf was refused with `NeedStateSync`. If catch-up had already
    /// started at the core's floor (checked before the refusal moves it), nobody asked holds its
    /// history any more: it needs a checkpoint.
    pub(super) fn history_gone_for(&mut self, core: usize, now: Millis) {
        let view = &mut self.cores[core];
        let Some(s) = &view.summary else {
            return;
        };
        if view.catch_up.at_floor() && view.needs_checkpoint.is_none() {
            view.needs_checkpoint = Some((now, s.last_committed_round));
            self.checkpoint_counts.cores_needing += 1;
        }
    }

    /// A new summary of `core`: if it committed beyond where it stood when found to need a
    /// checkpoint (another driver installed one, or history reached it after all), it no
    /// longer needs one.
    pub(super) fn checkpoint_summary(
        &mut self,
        core: usize,
        s: &sleepyseal_core::protocol::Summary,
    ) {
        let view = &mut self.cores[core];
        if view
            .needs_checkpoint
            .is_some_and(|(_, lcr)| s.last_committed_round > lcr)
        {
            view.needs_checkpoint = None;
        }
    }

    /// The request that moves a core needing a checkpoint forward: the install, once a
    /// certificate far enough ahead of it is held (else the core refuses it as not needed),
    /// otherwise `GetCheckpoint` to the next other core.
    pub(super) fn checkpoint_request(
        &self,
        core: AuthorityIndex,
        s: &sleepyseal_core::protocol::Summary,
    ) -> Option<(
        AuthorityIndex,
        sleepyseal_core::protocol::RequestBody,
        Purpose,
    )> {
        use sleepyseal_core::protocol::RequestBody;
        let view = &self.cores[core.as_usize()];
        view.needs_checkpoint?;
        let ahead_enough = |cert: &CheckpointCert| {
            cert.state.last_committed_round.0 > s.last_committed_round.0 + self.committee.gc_depth()
        };
        if let Some(cert) = self.checkpoint_certificate().filter(ahead_enough) {
            return Some((
                core,
                RequestBody::InstallCheckpoint { certificate: cert },
                Purpose::Install,
            ));
        }
        if self.now.since(view.checkpoint_asked_at) < self.config.poll_interval_ms {
            return None;
        }
        let n = self.committee.size();
        let source = (0..n)
            .map(|k| (view.checkpoint_source + k) % n)
            .find(|i| *i != core.as_usize())?;
        Some((
            AuthorityIndex(source as u16),
            RequestBody::GetCheckpoint,
            Purpose::CheckpointFor(core),
        ))
    }

    /// Records a checkpoint request sent: an install, or a `GetCheckpoint` to `target` on behalf
    /// of `core` (the next one goes to the core after it).
    pub(super) fn checkpoint_sent(&mut self, purpose: Purpose, target: AuthorityIndex) {
        match purpose {
            Purpose::Install => self.checkpoint_counts.installs_sent += 1,
            Purpose::CheckpointFor(core) => {
                let view = &mut self.cores[core.as_usize()];
                view.checkpoint_source = target.as_usize() + 1;
                view.checkpoint_asked_at = self.now;
            }
            _ => {}
        }
    }

    /// `core` answered an install: accepted (a summary at the certified state) or refused.
    pub(super) fn install_answered(&mut self, core: usize, accepted: bool) {
        let view = &mut self.cores[core];
        if view.needs_checkpoint.take().is_none() {
            return;
        }
        if accepted {
            self.checkpoint_counts.installs_done += 1;
            // Catch up from the new floor.
            view.catch_up = super::catch_up::CatchUp::FetchFromFloor;
        } else {
            self.checkpoint_counts.installs_refused += 1;
            // The core is not where this driver's summary says (most often another driver
            // installed that checkpoint first): ask it before anything else. On the old summary
            // catch-up would start again below what the others retain, be refused, and offer
            // the same install again, without end.
            view.summary = None;
        }
    }
}
