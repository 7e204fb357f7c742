//! The pre-signed material every input draws from: a small DAG of certified headers by
//! authorities 0..=2, a second (equivocating) header of each, and their payloads. Built once per
//! process (signing is the slow part).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use sleepyseal_core::messages::{vote_message, Header, ParentRef, SignedHeader, Vote};
use sleepyseal_core::testkit;
use sleepyseal_core::{AuthorityIndex, Certificate, Committee, Digest, KeyPair, Payload, Round};

use super::POOL_ROUNDS;

/// Signed material shared by every input (signing is the slow part).
pub(super) struct Pool {
    /// The committee of 4 (the core under test is the fourth).
    pub(super) committee: Arc<Committee>,
    /// Every authority's key (only 0..=2 sign here).
    pub(super) keys: Vec<KeyPair>,
    /// Certified headers by round (round 0 = genesis), authors 0..=2.
    pub(super) certificates: Vec<Vec<Certificate>>,
    /// Per round, a second signed header by each of authors 0..=2 (equivocations).
    pub(super) equivocations: Vec<Vec<SignedHeader>>,
    /// Every payload referenced above, by digest.
    pub(super) payloads: BTreeMap<Digest, Payload>,
}

/// The pool, built on first use.
pub(super) fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let committee = testkit::committee(4);
        let keys = testkit::keys(4);
        let instance = committee.instance();
        let mut certificates = vec![committee
            .indices()
            .map(|a| Certificate::genesis(instance, a))
            .collect::<Vec<_>>()];
        let mut equivocations = vec![Vec::new()];
        let mut payloads = BTreeMap::new();
        for r in 1..=POOL_ROUNDS {
            let parents: Vec<ParentRef> = certificates[r as usize - 1]
                .iter()
                .map(|c| ParentRef {
                    author: c.author(),
                    digest: c.digest(),
                })
                .collect();
            let mut layer = Vec::new();
            let mut twins = Vec::new();
            for a in 0..3u16 {
                for variant in 0..2u8 {
                    let payload = Payload::from_transactions([&[r as u8, a as u8, variant][..]]);
                    let header = Header::new(
                        instance,
                        Round(r),
                        AuthorityIndex(a),
                        parents.clone(),
                        payload.reference(),
                        r * 10,
                    );
                    payloads.insert(payload.digest(), payload);
                    if variant == 0 {
                        layer.push(certify(&committee, &keys, header));
                    } else {
                        twins.push(testkit::sign_header(&keys[a as usize], header));
                    }
                }
            }
            certificates.push(layer);
            equivocations.push(twins);
        }
        Pool {
            committee,
            keys,
            certificates,
            equivocations,
            payloads,
        }
    })
}

/// A certificate on `header` with the votes of authorities 0..=2 (a quorum of 4; never the core
/// under test, whose key only it uses).
pub(super) fn certify(committee: &Committee, keys: &[KeyPair], header: Header) -> Certificate {
    let votes: Vec<Vote> = (0..3u16)
        .map(|v| Vote {
            header_digest: header.digest(),
            voter: AuthorityIndex(v),
            signature: keys[v as usize]
                .sign(&vote_message(&committee.instance(), &header.digest())),
        })
        .collect();
    Certificate::from_votes(header, &votes)
}
