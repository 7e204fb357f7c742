//! Checkpoint certificates (PROTOCOL.md §8a.2) as a driver assembles them from `GetCheckpoint`
//! replies: signatures checked as they come, a state certified once its valid signers reach V,
//! every valid signature it holds included, the newest certified state preferred.

use sleepyseal_core::checkpoint::{checkpoint_message, CheckpointState, SignedCheckpoint};
use sleepyseal_core::crypto::{verify_one, SignatureItem};
use sleepyseal_core::protocol::Response;
use sleepyseal_core::testkit::{committee, instance};
use sleepyseal_core::tusk::ConsensusState;
use sleepyseal_core::{AuthorityIndex, KeyPair, Millis, Round};
use sleepyseal_driver::state::{DriverConfig, DriverState};

fn state(index: u64) -> CheckpointState {
    let mut consensus = ConsensusState::new(4);
    consensus.consensus_index = index;
    consensus.last_committed_round = Round(index);
    consensus.commit_hash = sleepyseal_core::Digest([index as u8; 32]);
    CheckpointState::of(instance(), &consensus)
}

fn signed(state: &CheckpointState, signer: u16) -> SignedCheckpoint {
    SignedCheckpoint {
        signature: KeyPair::deterministic(0, signer)
            .sign(&checkpoint_message(&instance(), &state.digest())),
        signer: AuthorityIndex(signer),
        state: state.clone(),
    }
}

fn serve(driver: &mut DriverState, from: u16, states: Vec<SignedCheckpoint>) {
    driver.on_response(
        Millis(1),
        u64::MAX,
        AuthorityIndex(from),
        Response::Checkpoints(states),
    );
}

fn signers(driver: &DriverState) -> Option<(u64, Vec<u16>)> {
    let cert = driver.checkpoint_certificate()?;
    let c = committee(4);
    cert.check(&c)
        .expect("a certificate the driver builds has a valid shape");
    let message = checkpoint_message(&instance(), &cert.state.digest());
    for (signer, signature) in cert.signers.iter().zip(&cert.signatures) {
        assert!(verify_one(&SignatureItem {
            public_key: c.authority(*signer).unwrap().public_key,
            message: &message,
            signature: *signature,
        }));
    }
    Some((
        cert.state.consensus_index,
        cert.signers.iter().map(|a| a.0).collect(),
    ))
}

#[test]
fn a_driver_certifies_the_newest_state_signed_by_validity_stake_and_only_valid_signatures() {
    let mut driver = DriverState::new(committee(4), DriverConfig::default(), 0);
    let (a, b) = (state(10), state(20));
    serve(&mut driver, 0, vec![signed(&a, 0)]);
    assert_eq!(signers(&driver), None, "one signer is below V = 2");
    // A corrupted signature, and a state served in another core's name, do not count.
    let mut bad = signed(&a, 2);
    bad.signature.0[0] ^= 1;
    serve(&mut driver, 2, vec![bad]);
    serve(&mut driver, 3, vec![signed(&a, 1)]);
    assert_eq!(signers(&driver), None);
    // A Byzantine core signing another state at the same index adds nothing to the honest one.
    let mut forked = state(10);
    forked.commit_hash.0[0] ^= 1;
    serve(&mut driver, 3, vec![signed(&forked, 3)]);
    assert_eq!(signers(&driver), None);
    serve(&mut driver, 1, vec![signed(&a, 1)]);
    assert_eq!(signers(&driver), Some((10, vec![0, 1])));
    // More signers are added as they come (more cores serve the floor after an install).
    serve(&mut driver, 2, vec![signed(&a, 2)]);
    assert_eq!(signers(&driver), Some((10, vec![0, 1, 2])));
    // A newer state certified only once it reaches V; then it is preferred.
    serve(&mut driver, 3, vec![signed(&b, 3)]);
    assert_eq!(signers(&driver), Some((10, vec![0, 1, 2])));
    serve(&mut driver, 0, vec![signed(&a, 0), signed(&b, 0)]);
    assert_eq!(signers(&driver), Some((20, vec![0, 3])));
    // A core's latest reply replaces its earlier one.
    serve(&mut driver, 0, vec![]);
    assert_eq!(signers(&driver), Some((10, vec![1, 2])));
}
