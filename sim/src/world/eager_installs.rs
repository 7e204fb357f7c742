//! The eager installer ([`Behaviour::EagerInstalls`]): a hostile driver that assembles real
//! checkpoint certificates from what the honest cores signed and installs them as early as the
//! rules let it. For every honest core it picks the oldest certified state more than GC_DEPTH
//! of commit rounds ahead of the core (which the core must take, PROTOCOL.md §8a.3), or, when
//! there is none, one exactly GC_DEPTH ahead (which it must refuse with `NotNeeded`). Honest
//! drivers install only at cores beyond what the others retain, so the new floor lies far above
//! everything such a core signed; here it lies among the core's latest votes and own headers,
//! where `last_voted` and the own headers' verdicts are all that keeps the core from signing
//! twice (the `install_resets_last_voted` control).

use std::collections::BTreeMap;

use sleepyseal_core::checkpoint::{CheckpointCert, CheckpointState};
use sleepyseal_core::protocol::RequestBody;
use sleepyseal_core::{AuthorityIndex, Digest, Request, Signature};

use super::World;

/// One round of offers every this many driver ticks, on average (per mille per tick).
const OFFER_PER_MILLE: u32 = 50;

impl World {
    /// Maybe offers each honest core this driver reaches the earliest real certificate it must
    /// take, or one exactly GC_DEPTH ahead, which it must refuse.
    pub(super) fn install_eagerly(&mut self, driver: usize) {
        if !self.rng.chance(OFFER_PER_MILLE) {
            return;
        }
        let certificates = self.certified_states();
        if certificates.is_empty() {
            return;
        }
        let gc_depth = self.committee.gc_depth();
        let instance = self.committee.instance();
        for core in self.honest_instances() {
            let Some(own) = self.instances[core].core.as_ref().map(|c| c.consensus()) else {
                continue;
            };
            let ahead = |cert: &&CheckpointCert| {
                cert.state.consensus_index > own.consensus_index
                    && cert.state.last_committed_round.0 >= own.last_committed_round.0 + gc_depth
            };
            let oldest_taken = certificates
                .iter()
                .filter(ahead)
                .filter(|c| c.state.last_committed_round.0 > own.last_committed_round.0 + gc_depth)
                .min_by_key(|c| c.state.consensus_index);
            let Some(certificate) = oldest_taken.or_else(|| certificates.iter().find(ahead)) else {
                continue;
            };
            let request = Request {
                instance,
                body: RequestBody::InstallCheckpoint {
                    certificate: certificate.clone(),
                },
            };
            self.eager_installs += 1;
            let id = self.rng.next_u64() | (1 << 63);
            self.send_request(driver, id, AuthorityIndex(core as u16), request);
        }
    }

    /// Every checkpoint state the running honest cores signed with stake ≥ V among them, as a
    /// certificate of all its signers (ascending, one signature each).
    fn certified_states(&self) -> Vec<CheckpointCert> {
        let mut signed: BTreeMap<Digest, (CheckpointState, BTreeMap<AuthorityIndex, Signature>)> =
            BTreeMap::new();
        for core in self.honest_instances() {
            let Some(core) = self.instances[core].core.as_ref() else {
                continue;
            };
            for c in core.checkpoints() {
                signed
                    .entry(c.state.digest())
                    .or_insert_with(|| (c.state.clone(), BTreeMap::new()))
                    .1
                    .insert(c.signer, c.signature);
            }
        }
        signed
            .into_values()
            .filter(|(_, by)| {
                self.committee
                    .stake_of(by.keys().copied())
                    .is_ok_and(|s| s >= self.committee.validity_threshold())
            })
            .map(|(state, by)| CheckpointCert {
                state,
                signers: by.keys().copied().collect(),
                signatures: by.into_values().collect(),
            })
            .collect()
    }
}
