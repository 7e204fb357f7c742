//! S10–S12: the checkers of checkpoints, installs and gap fills (PROTOCOL.md §8a), run from
//! [`Checker::after_step`].

use sleepyseal_core::checkpoint::checkpoint_message;
use sleepyseal_core::crypto::{verify_one, SignatureItem};
use sleepyseal_core::protocol::CommittedEntry;
use sleepyseal_core::{Core, Digest};

use super::Checker;

impl Checker {
    /// S12: every entry a fill brought into an install's gap is the honest sequence's entry at
    /// its index, down to every field the chain binds (the fields must link to the honest hash
    /// below it), so nothing is fabricated into a gap.
    pub(super) fn check_filled(&mut self, instance: usize, core: &Core) {
        let Some(record) = core.install_record() else {
            return;
        };
        let lowest = match self.tracks[instance].gap_checked {
            Some((base, lowest)) if base == record.base_index => lowest,
            _ => record.base_index,
        };
        if record.fill_next >= lowest {
            return;
        }
        self.tracks[instance].gap_checked = Some((record.base_index, record.fill_next));
        let filled: Vec<CommittedEntry> = core
            .committed_entries()
            .filter(|e| (record.fill_next..lowest).contains(&e.index))
            .copied()
            .collect();
        for e in filled {
            let at = |i: u64| self.log.get(i as usize).copied();
            let below = match e.index.checked_sub(1) {
                Some(i) => at(i).map(|(_, hash)| hash),
                None => Some(Digest::ZERO),
            };
            let honest = at(e.index) == Some((e.digest, e.commit_hash))
                && below.is_some_and(|b| e.links_to(&b));
            if !honest {
                self.fail(
                    "S12",
                    format!(
                        "core {instance} holds a filled entry at index {} that is not the \
                         honest sequence's",
                        e.index
                    ),
                );
            }
        }
    }

    /// S11 on the consensus state whenever its index moves, and at every restart: the install
    /// the core records is not ahead of its consensus state (a crash left the old state or the
    /// new one, never the install without its state); the whole state, per-author committed
    /// rounds included, is the one every honest core held at that index; and within an
    /// incarnation no author's committed round goes back.
    pub(super) fn check_state(&mut self, instance: usize, core: &Core) {
        let consensus = core.consensus();
        let index = consensus.consensus_index;
        if self.tracks[instance]
            .state
            .as_ref()
            .is_some_and(|(i, _)| *i == index)
        {
            return;
        }
        if let Some(record) = core.install_record() {
            if record.base_index > index {
                self.fail(
                    "S11",
                    format!(
                        "core {instance} records an install at index {} but its consensus state \
                         is at index {index}",
                        record.base_index
                    ),
                );
            }
        }
        let digest = sleepyseal_core::checkpoint::CheckpointState::of(
            self.reference.committee().instance(),
            consensus,
        )
        .digest();
        if let Some(held) = self.states.insert(index, digest) {
            if held != digest {
                self.fail(
                    "S11",
                    format!(
                        "core {instance} holds another consensus state at index {index} than \
                         honest cores held there (committed rounds per author {:?})",
                        consensus.last_committed
                    ),
                );
            }
        }
        if let Some((before, rounds)) = &self.tracks[instance].state {
            let back = rounds
                .iter()
                .zip(&consensus.last_committed)
                .position(|(was, now)| now < was);
            if let Some(author) = back.filter(|_| index >= *before) {
                let detail = format!(
                    "core {instance}: author {author}'s committed round went from {} to {} \
                     (index {before}→{index})",
                    rounds[author], consensus.last_committed[author]
                );
                self.fail("S11", detail);
            }
        }
        self.tracks[instance].state = Some((index, consensus.last_committed.clone()));
    }

    /// S10: a core that installed a checkpoint resumed at the honest sequence's state at that
    /// index (its commit hash there; the rest of the state is bound to it by the certificate's
    /// honest signer, checked where it was signed).
    pub(super) fn check_install(&mut self, instance: usize, core: &Core, index: u64, hash: Digest) {
        let honest = index
            .checked_sub(1)
            .and_then(|i| self.log.get(i as usize))
            .map(|(_, h)| *h);
        let matches_signed = self.checkpoints.get(&index).is_none_or(|d| {
            *d == sleepyseal_core::checkpoint::CheckpointState::of(
                self.reference.committee().instance(),
                core.consensus(),
            )
            .digest()
                || core.consensus().consensus_index != index
        });
        // An honest signer reached the certified state before signing it, and the log holds
        // the first sequence any honest core committed: a state beyond it was fabricated.
        let beyond = index > self.log.len() as u64;
        if beyond || honest.is_some_and(|h| h != hash) || !matches_signed {
            self.fail(
                "S10",
                format!(
                    "core {instance} installed a state at index {index} no honest core reached"
                ),
            );
        }
    }

    /// S10 at its source: every checkpoint state an honest core signs is the state of the one
    /// committed sequence at its index (the commit hash there, the same state as every other
    /// honest core's at that index), bound to the instance, and validly signed by the core.
    pub(super) fn check_checkpoints(&mut self, instance: usize, core: &Core) {
        let checked = self.tracks[instance].checkpoint_checked;
        let new: Vec<_> = core
            .checkpoints()
            .filter(|c| checked.is_none_or(|i| c.state.consensus_index > i))
            .cloned()
            .collect();
        for signed in new {
            let state = &signed.state;
            let index = state.consensus_index;
            self.tracks[instance].checkpoint_checked = Some(index);
            let digest = state.digest();
            if let Some(other) = self.checkpoints.insert(index, digest) {
                if other != digest {
                    self.fail(
                        "S10",
                        format!("core {instance} signed another checkpoint state at index {index}"),
                    );
                }
            }
            let chained = index
                .checked_sub(1)
                .and_then(|i| self.log.get(i as usize))
                .is_none_or(|(_, hash)| *hash == state.commit_hash);
            let message = checkpoint_message(&self.reference.committee().instance(), &digest);
            let signed_validly = self
                .reference
                .committee()
                .authority(signed.signer)
                .is_some_and(|a| {
                    verify_one(&SignatureItem {
                        public_key: a.public_key,
                        message: &message,
                        signature: signed.signature,
                    })
                });
            if !chained
                || state.instance != self.reference.committee().instance()
                || signed.signer != core.index()
                || !signed_validly
            {
                self.fail(
                    "S10",
                    format!("core {instance} signed a checkpoint at index {index} that is not the committed state there"),
                );
            }
        }
    }
}
