//! The checkpoint forger ([`Behaviour::ForgedCheckpoints`]): a Byzantine authority signs
//! checkpoint states nobody reached and a hostile driver offers them to every honest core as
//! certificates: signed by the Byzantine key alone (below V), with garbage in the other signers'
//! places, or real but stale. Honest cores must refuse them all (PROTOCOL.md §8a.2–8a.3), and
//! the checkers must catch a core that installs one (the `checkpoint_below_validity` control).

use sleepyseal_core::checkpoint::{checkpoint_message, CheckpointCert, CheckpointState};
use sleepyseal_core::protocol::RequestBody;
use sleepyseal_core::{AuthorityIndex, Digest, KeyPair, Request, Round, Signature};

use super::World;

/// One forged offer every this many driver ticks, on average (per mille per tick).
const FORGE_PER_MILLE: u32 = 100;

impl World {
    /// Maybe offers a forged checkpoint certificate of Byzantine authority `author` to every
    /// honest core.
    pub(super) fn forge_checkpoint(&mut self, driver: usize, author: AuthorityIndex) {
        if !self.rng.chance(FORGE_PER_MILLE) {
            return;
        }
        let Some(reference) = self
            .honest_instances()
            .into_iter()
            .filter_map(|i| self.instances[i].core.as_ref())
            .max_by_key(|c| c.consensus().consensus_index)
        else {
            return;
        };
        let consensus = reference.consensus().clone();
        let real = reference.checkpoints().next().map(|c| c.state.clone());
        let instance = self.committee.instance();
        let key = KeyPair::deterministic(0, author.0);
        let sign =
            |state: &CheckpointState| key.sign(&checkpoint_message(&instance, &state.digest()));
        // A state nobody reached: far ahead of the most advanced honest core.
        let mut fabricated = CheckpointState::of(instance, &consensus);
        fabricated.consensus_index += 1_000;
        fabricated.last_committed_round = Round(fabricated.last_committed_round.0 + 1_000);
        let certificate = match self.rng.index(3) {
            // A fabricated state, signed by the Byzantine key alone: below V.
            0 => {
                let mut state = fabricated;
                state.consensus_index += self.rng.range(0, 1_000);
                state.commit_hash = Digest([self.rng.next_u64() as u8; 32]);
                CheckpointCert {
                    signatures: vec![sign(&state)],
                    signers: vec![author],
                    state,
                }
            }
            // The same, with every other authority listed and a garbage signature in its place.
            1 => {
                let state = fabricated;
                let signers: Vec<AuthorityIndex> = self.committee.indices().collect();
                let signatures = signers
                    .iter()
                    .map(|a| {
                        if *a == author {
                            sign(&state)
                        } else {
                            Signature([9; 64])
                        }
                    })
                    .collect();
                CheckpointCert {
                    state,
                    signers,
                    signatures,
                }
            }
            // A state an honest core did reach, signed by the Byzantine key: below V, and
            // stale for most cores.
            _ => {
                let Some(state) = real else {
                    return;
                };
                CheckpointCert {
                    signatures: vec![sign(&state)],
                    signers: vec![author],
                    state,
                }
            }
        };
        self.forged_checkpoints += 1;
        for core in self.honest_instances() {
            let id = self.rng.next_u64() | (1 << 63);
            let request = Request {
                instance,
                body: RequestBody::InstallCheckpoint {
                    certificate: certificate.clone(),
                },
            };
            self.send_request(driver, id, AuthorityIndex(core as u16), request);
        }
    }
}
