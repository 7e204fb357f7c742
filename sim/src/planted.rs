//! Planted faults: known bugs that the negative controls ([`crate::controls`]) run, so that the
//! simulator's checkers are shown to catch them. They exist only in this crate and reach the core
//! through the seams it exposes for the purpose: the threshold rule of a [`Committee`], the
//! [`SignatureCheck`](sleepyseal_core::verify::SignatureCheck) of a
//! [`Verifier`](sleepyseal_core::Verifier) and the [`LeaderSchedule`] of a core. The reply-before-
//! write fault is the simulator's own (`node.rs` releases the reply before the simulated sync),
//! and so is the install that forgets what the core signed (`node.rs` adds
//! [`forget_signed_at_install`]'s writes to the install's and reloads the core, and the torn
//! install: `node.rs` passes an accepted install's write through [`tear_install`]).
//!
//! Every fault here names [`MARKER`], so a binary that links any of them contains that string:
//! `scripts/check.sh` searches the `sleepyseal` node binary for it and fails if it is there.

use sleepyseal_core::crypto::SignatureItem;
use sleepyseal_core::{AuthorityIndex, Committee, LeaderSchedule, Round, Stake};

/// A string that only planted-fault code carries (see the module documentation).
pub const MARKER: &str = "sleepyseal-planted-fault: never in a node binary";

/// Names [`MARKER`] in a way the optimiser cannot drop while the calling fault is linked.
fn mark() {
    std::hint::black_box(MARKER);
}

/// The 2021 prototype's thresholds: quorum `2⌊S/3⌋+1`, too small when S ≡ 2 (mod 3); f and V as
/// the protocol's. Installed with [`Committee::with_threshold_rule`].
pub fn prototype_thresholds(total: Stake) -> (Stake, Stake, Stake) {
    mark();
    let (f, _, validity) = sleepyseal_core::committee::thresholds(total);
    (f, Stake(2 * (total.0 / 3) + 1), validity)
}

/// The committee of one honest core started with its own GC_DEPTH, half the committee's, as a
/// core with a local `--gc-depth` flag ran before the constant moved into the committee: the
/// instance id stays, so it still talks to the others. Installed with
/// [`Committee::with_constants_unbound`].
pub fn local_gc_depth(committee: &Committee) -> Committee {
    mark();
    let constants = committee.constants();
    committee
        .clone()
        .with_constants_unbound(sleepyseal_core::committee::ProtocolConstants {
            gc_depth: (constants.gc_depth / 2).max(1),
            ..constants
        })
}

/// A checkpoint rule that takes any certificate with a known signer, whatever its stake (below
/// V). Installed with
/// [`Verifier::with_checkpoint_rule`](sleepyseal_core::Verifier::with_checkpoint_rule).
pub fn any_checkpoint_signer(
    cert: &sleepyseal_core::checkpoint::CheckpointCert,
    committee: &Committee,
) -> bool {
    mark();
    cert.state.instance == committee.instance()
        && cert.state.last_committed.len() == committee.size()
        && cert.signers.len() == cert.signatures.len()
        && !cert.signers.is_empty()
        && cert.signers.iter().all(|s| committee.contains(*s))
}

/// A fill rule that takes entries at the indices just below the verified part as they are,
/// checking neither that the top one ends on the verified hash nor that any links to the one
/// below it. Installed with [`Core::with_fill_rule`](sleepyseal_core::Core::with_fill_rule).
pub fn fill_without_chain_check(
    next: u64,
    _hash: sleepyseal_core::Digest,
    old_index: u64,
    old_hash: sleepyseal_core::Digest,
    entries: &[sleepyseal_core::CommittedEntry],
) -> Option<(
    Vec<sleepyseal_core::CommittedEntry>,
    sleepyseal_core::Digest,
)> {
    mark();
    let (mut next, mut hash) = (next, old_hash);
    let mut taken = Vec::new();
    for (k, entry) in entries.iter().enumerate() {
        if next == old_index || entry.index.checked_add(1) != Some(next) {
            break;
        }
        let below = match entries.get(k + 1) {
            Some(below) => below.commit_hash,
            None if entry.index == old_index => old_hash,
            None => break,
        };
        taken.push(*entry);
        next = entry.index;
        hash = below;
    }
    (!taken.is_empty()).then_some((taken, hash))
}

/// A signature check that accepts every signature. Installed with
/// [`Verifier::with_signature_check`](sleepyseal_core::Verifier::with_signature_check).
pub fn accept_every_signature(items: &[SignatureItem<'_>], _chunk_size: usize) -> Vec<bool> {
    mark();
    vec![true; items.len()]
}

/// The writes of an install that rebuilds what the core signed from the certified state, given
/// the core's whole store (`entries`, the install's write included): `last_voted` of every
/// author cleared, own headers above the certified `last_committed[me]` (`certified_own`)
/// forgotten, and the latest own header left, if any, made `last_voted[me]` again (the store
/// stays loadable). To the reloaded core it never signed anything above the checkpoint.
pub fn forget_signed_at_install(
    me: AuthorityIndex,
    certified_own: Round,
    entries: &[(Vec<u8>, bytes::Bytes)],
) -> sleepyseal_core::WriteBatch {
    use sleepyseal_core::codec::Decode;
    use sleepyseal_core::store::keys::{self, Table};
    mark();
    let mut batch = sleepyseal_core::WriteBatch::new();
    let mut latest_kept: Option<(Round, bytes::Bytes)> = None;
    for (key, value) in entries {
        match Table::of(key) {
            Some(Table::LastVoted) => batch.delete(key.clone()),
            Some(Table::Own) => {
                let Ok(signed) = sleepyseal_core::SignedHeader::from_bytes(value.clone()) else {
                    continue;
                };
                let round = signed.header.round();
                if round > certified_own {
                    batch.delete(key.clone());
                } else if latest_kept.as_ref().is_none_or(|(r, _)| *r < round) {
                    latest_kept = Some((round, value.clone()));
                }
            }
            _ => {}
        }
    }
    if let Some((_, value)) = latest_kept {
        batch.put(keys::last_voted(me), value);
    }
    batch
}

/// The [`Mutant::TornInstall`] control: an install's write without its consensus-state record,
/// as a write split in two leaves the store when the process stops between the halves. The
/// install record and the new floor are durable; the consensus state is the old one until the
/// next commit writes it again.
pub fn tear_install(batch: &mut sleepyseal_core::WriteBatch) {
    use sleepyseal_core::store::keys::Table;
    mark();
    batch
        .ops
        .retain(|op| Table::of(op.key()) != Some(Table::Consensus));
}

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
    /// Each core picks leaders from the iteration order of its own hash map (what a
    /// `HashMap`-ordered leader schedule does across processes): cores disagree on leaders.
    HashMapOrderedLeader,
    /// The last core runs half the committee's GC_DEPTH (needs an author extending old chains:
    /// `old-chains`).
    LocalGcDepth,
    /// Cores take checkpoint certificates signed by less than V stake (needs a forger of
    /// checkpoints: `forged-checkpoints`).
    CheckpointBelowValidity,
    /// Cores take gap fills at the right indices without checking the commit chain (needs a
    /// fill forger, `forged-fills`, and a core away long enough to install a checkpoint).
    FillWithoutChainCheck,
    /// An install resets what the core signed to the certified state: `last_voted` cleared and
    /// own headers above the certified `last_committed[self]` forgotten (needs installs at cores
    /// whose latest headers lie above the new floor: `eager-installs`).
    InstallResetsLastVoted,
    /// An install's write loses its consensus-state record (a torn write): a crash just after
    /// it leaves the install without its state (needs crashes at installs).
    TornInstall,
}

/// The leader schedule of the [`Mutant::HashMapOrderedLeader`] control: authorities ordered by a
/// hash keyed with the core's own instance number, as a `HashMap` with a per-process random state
/// would order them. Deterministic per instance (so seeds replay), different across instances.
#[derive(Debug)]
pub struct HashOrderedLeaders {
    order: Vec<AuthorityIndex>,
}

impl HashOrderedLeaders {
    /// The order seen by instance `instance` of `committee`.
    pub fn new(committee: &Committee, instance: usize) -> HashOrderedLeaders {
        use std::hash::{Hash, Hasher};
        mark();
        let mut order: Vec<_> = committee.indices().collect();
        order.sort_by_key(|a| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (instance, a.0).hash(&mut h);
            h.finish()
        });
        HashOrderedLeaders { order }
    }
}

impl LeaderSchedule for HashOrderedLeaders {
    fn leader(&self, round: Round) -> AuthorityIndex {
        self.order[(round.0 / 2) as usize % self.order.len()]
    }
}
