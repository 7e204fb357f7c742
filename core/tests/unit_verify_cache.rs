//! The verify stage's verdict cache: a signature that verified once is not checked again (a
//! header's author signature when its certificate arrives, a core's own vote in a certificate it
//! helped form), and a certificate carrying any other signature is still checked.

use std::cell::Cell;

use sleepyseal_core::crypto::{verify_batch, SignatureItem};
use sleepyseal_core::protocol::{Request, RequestBody};
use sleepyseal_core::testkit::{committee, instance, keys, sign_header, vote, DagBuilder};
use sleepyseal_core::verify::VerifierConfig;
use sleepyseal_core::{AuthorityIndex, CoreError, Round, Verifier};

thread_local! {
    /// Signatures the check below was asked to decide on this thread.
    static CHECKED: Cell<usize> = const { Cell::new(0) };
}

/// The protocol's check, counting what it decides (small batches run on the calling thread).
fn counting_check(items: &[SignatureItem<'_>], chunk_size: usize) -> Vec<bool> {
    CHECKED.with(|c| c.set(c.get() + items.len()));
    verify_batch(items, chunk_size)
}

fn checked() -> usize {
    CHECKED.with(Cell::get)
}

fn request(body: RequestBody) -> Request {
    Request {
        instance: instance(),
        body,
    }
}

#[test]
fn author_signatures_and_own_votes_are_not_checked_again() {
    let c = committee(4);
    let keys = keys(4);
    let mut b = DagBuilder::new(c.clone());
    b.full_rounds(1);
    let certificate = b.rounds[1][0].clone();
    assert_eq!(certificate.signers.len(), 4);
    let header = sign_header(&keys[0], certificate.header.clone());
    // This verifier is core 1's.
    let verifier = Verifier::new(c, VerifierConfig::default()).with_signature_check(counting_check);
    let bundle = request(RequestBody::HeaderBundle {
        round: Round(1),
        headers: vec![header],
        parents: Vec::new(),
        payloads: Vec::new(),
    });
    assert!(verifier.verify(bundle).unwrap().rejected.is_empty());
    assert_eq!(checked(), 1, "the author's signature");
    let digest = certificate.digest();
    verifier.remember_own_votes(&[vote(&keys[1], AuthorityIndex(1), digest)], Round(1));
    // The certificate: the author's signature and core 1's vote are known; 2 and 3 are checked.
    let mut forged = certificate.clone();
    let bundle = |certificate| {
        request(RequestBody::CertBundle {
            round: Round(1),
            certificates: vec![certificate],
            parents: Vec::new(),
            payloads: Vec::new(),
        })
    };
    assert!(verifier.verify(bundle(certificate)).is_ok());
    assert_eq!(checked(), 3);
    // The same header with signer 2's signature replaced by signer 3's: checked, and refused.
    forged.signatures[2] = forged.signatures[3];
    let refused = verifier.verify(bundle(forged)).unwrap_err();
    assert!(
        matches!(refused, CoreError::BadSignature { signer, .. } if signer == AuthorityIndex(2))
    );
    assert_eq!(checked(), 4, "only the replaced signature was checked");
}

#[test]
fn pruning_below_a_round_forgets_its_verdicts() {
    let c = committee(4);
    let keys = keys(4);
    let mut b = DagBuilder::new(c.clone());
    b.full_rounds(1);
    let header = sign_header(&keys[0], b.rounds[1][0].header.clone());
    let verifier = Verifier::new(c, VerifierConfig::default()).with_signature_check(counting_check);
    let bundle = || {
        request(RequestBody::HeaderBundle {
            round: Round(1),
            headers: vec![header.clone()],
            parents: Vec::new(),
            payloads: Vec::new(),
        })
    };
    verifier.verify(bundle()).unwrap();
    verifier.verify(bundle()).unwrap();
    assert_eq!(checked(), 1, "the second bundle's signature was known");
    verifier.cache().prune_below(Round(2));
    verifier.verify(bundle()).unwrap();
    assert_eq!(checked(), 2, "checked again once pruned");
}
