//! Unit tier: ZIP-215 agreement. Single and batch verification must give the same verdict on every
//! signature, including the edge cases where ed25519 libraries historically disagree: small-order
//! points and non-canonical point encodings (the 14 × 14 = 196 vectors of ZIP-215, built here
//! from the curve's 8-torsion subgroup rather than copied). If batch and single verification
//! disagreed, a Byzantine signer could make one honest core accept a certificate that another
//! rejects forever.

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::CompressedEdwardsY;
use sleepyseal_core::committee::{Authority, CommitteeError, ProtocolConstants};
use sleepyseal_core::crypto::{verify_batch, verify_one, SignatureItem};
use sleepyseal_core::testkit::instance;
use sleepyseal_core::{AuthorityIndex, Committee, KeyPair, PublicKey, Signature, Stake};

/// p = 2^255 − 19, little-endian.
fn field_prime() -> [u8; 32] {
    let mut p = [0xffu8; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    p
}

/// `y` (a small value) plus p: a non-canonical encoding of the same y coordinate.
fn y_plus_p(y: u8, sign: bool) -> [u8; 32] {
    let mut bytes = field_prime();
    bytes[0] += y;
    if sign {
        bytes[31] |= 0x80;
    }
    bytes
}

/// The 8 canonical encodings of the small-order points, and the 6 non-canonical encodings of
/// small-order points that still decode (y ≥ p, or x = 0 with the sign bit set).
fn small_order_encodings() -> Vec<[u8; 32]> {
    let mut out: Vec<[u8; 32]> = EIGHT_TORSION.iter().map(|p| p.compress().0).collect();
    let mut minus_one_negative = field_prime();
    minus_one_negative[0] -= 1; // y = p − 1 = −1
    minus_one_negative[31] |= 0x80; // x = 0 with sign bit set
    let mut one_negative = [0u8; 32];
    one_negative[0] = 1; // y = 1
    one_negative[31] = 0x80; // x = 0 with sign bit set
    out.extend([
        one_negative,
        minus_one_negative,
        y_plus_p(0, false),
        y_plus_p(0, true),
        y_plus_p(1, false),
        y_plus_p(1, true),
    ]);
    out
}

#[test]
fn the_encodings_are_small_order_and_distinct() {
    let encodings = small_order_encodings();
    assert_eq!(encodings.len(), 14);
    let distinct: std::collections::HashSet<_> = encodings.iter().collect();
    assert_eq!(distinct.len(), 14);
    for e in &encodings {
        let point = CompressedEdwardsY(*e)
            .decompress()
            .expect("every vector decodes");
        assert!(point.is_small_order(), "{e:02x?}");
    }
    // The last six are not canonical: re-encoding changes the bytes.
    for e in &encodings[8..] {
        let point = CompressedEdwardsY(*e).decompress().unwrap();
        assert_ne!(point.compress().0, *e, "{e:02x?} is non-canonical");
    }
}

/// ZIP-215: for A and R small-order (any encoding that decodes) and s = 0, the cofactored
/// equation [8][s]B = [8]R + [8][k]A holds, so every one of the 196 signatures is valid, alone and
/// in every batch.
#[test]
fn all_196_vectors_verify_alone_and_in_batches() {
    let encodings = small_order_encodings();
    let message = b"Zcash";
    let mut items = Vec::new();
    for a in &encodings {
        for r in &encodings {
            let mut signature = [0u8; 64];
            signature[..32].copy_from_slice(r);
            items.push(SignatureItem {
                public_key: PublicKey(*a),
                message,
                signature: Signature(signature),
            });
        }
    }
    assert_eq!(items.len(), 196);
    for (i, item) in items.iter().enumerate() {
        assert!(verify_one(item), "vector {i} rejected alone");
    }
    for chunk in [1, 2, 7, 64, 196] {
        assert_eq!(
            verify_batch(&items, chunk),
            vec![true; 196],
            "chunk size {chunk}"
        );
    }
}

/// Batches that mix edge-case vectors with honest signatures and corrupted ones give, item by
/// item, the verdicts of single verification, whatever the chunking.
#[test]
fn mixed_batches_agree_with_single_verification() {
    let encodings = small_order_encodings();
    let key = KeyPair::deterministic(9, 0);
    let messages: Vec<Vec<u8>> = (0..40u32).map(|i| i.to_le_bytes().to_vec()).collect();
    let mut items = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let mut signature = key.sign(m);
        match i % 5 {
            0 => signature.0[10] ^= 1, // corrupted R
            1 => {
                // s ≥ ℓ (non-canonical scalar): ZIP-215 rejects it.
                signature.0[32..].copy_from_slice(&[0xff; 32]);
            }
            2 => {
                let mut s = [0u8; 64];
                s[..32].copy_from_slice(&encodings[i % 14]);
                items.push(SignatureItem {
                    public_key: PublicKey(encodings[(i * 3) % 14]),
                    message: m,
                    signature: Signature(s),
                });
                continue;
            }
            _ => {}
        }
        items.push(SignatureItem {
            public_key: key.public(),
            message: m,
            signature,
        });
    }
    let single: Vec<bool> = items.iter().map(verify_one).collect();
    assert!(single.iter().any(|v| *v) && single.iter().any(|v| !*v));
    for chunk in [1, 3, 8, 40] {
        assert_eq!(verify_batch(&items, chunk), single, "chunk size {chunk}");
    }
}

/// A small-order key signs for everyone (see above), so it can never join a committee.
#[test]
fn committees_refuse_small_order_keys() {
    let honest = |i: u16| Authority {
        index: AuthorityIndex(i),
        public_key: KeyPair::deterministic(0, i).public(),
        stake: Stake(1),
        address: String::new(),
    };
    for (n, encoding) in small_order_encodings().into_iter().enumerate() {
        let mut authorities: Vec<Authority> = (0..4).map(honest).collect();
        authorities[2].public_key = PublicKey(encoding);
        assert!(
            matches!(
                Committee::new(instance(), authorities, ProtocolConstants::default()),
                Err(CommitteeError::BadPublicKey(AuthorityIndex(2)))
            ),
            "vector {n} accepted as a committee key"
        );
    }
    assert!(Committee::new(
        instance(),
        (0..4).map(honest).collect(),
        ProtocolConstants::default()
    )
    .is_ok());
}
