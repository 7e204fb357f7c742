//! Bundles to send the core: header bundles (real, equivocating, own, crafted and damaged
//! headers) and certificate bundles (real, own-certified and damaged certificates), with parents
//! and payloads. Every choice is read from the fuzz input, in a fixed order.

use bytes::Bytes;
use sleepyseal_core::limits::MAX_PAYLOAD_BYTES;
use sleepyseal_core::messages::{Header, ParentRef, PayloadRef, SignedHeader};
use sleepyseal_core::protocol::RequestBody;
use sleepyseal_core::testkit;
use sleepyseal_core::{AuthorityIndex, Certificate, Digest, Payload, Round, Signature};

use arbitrary::Unstructured;

use super::harness::Harness;
use super::pool::{certify, pool};
use super::POOL_ROUNDS;

/// Signed headers of one round to vote on: real ones, equivocations, the core's own, and headers
/// crafted (and validly signed) by authorities 0..=2.
pub(super) fn header_bundle(h: &Harness, u: &mut Unstructured) -> arbitrary::Result<RequestBody> {
    let p = pool();
    let r = u.int_in_range(1..=POOL_ROUNDS)?;
    let mut headers = Vec::new();
    for c in &p.certificates[r as usize] {
        if u.ratio(3, 4)? {
            // The author's own signature is not in a certificate: re-sign (authors 0..=2).
            headers.push(testkit::sign_header(
                &p.keys[c.author().as_usize()],
                c.header.clone(),
            ));
        }
    }
    for twin in &p.equivocations[r as usize] {
        if u.ratio(1, 6)? {
            headers.push(twin.clone());
        }
    }
    if let Some(own) = &h.last_own {
        if u.ratio(1, 2)? {
            headers.push(own.clone());
        }
    }
    if u.ratio(1, 3)? {
        headers.push(crafted_header(h, u, Round(r))?);
    }
    if u.ratio(1, 8)? && !headers.is_empty() {
        let i = u.choose_index(headers.len())?;
        headers[i].signature.0[u.int_in_range(0..=63usize)?] ^= 1 << u.int_in_range(0..=7u8)?;
    }
    if u.ratio(1, 8)? && !headers.is_empty() {
        let i = u.choose_index(headers.len())?;
        headers.push(headers[i].clone());
    }
    let round = if u.ratio(1, 10)? {
        Round(u.int_in_range(0..=POOL_ROUNDS + 3)?)
    } else {
        headers.first().map_or(Round(r), |s| s.header.round())
    };
    let parents = p.certificates[r as usize - 1]
        .iter()
        .filter(|_| u.ratio(1, 2).unwrap_or(false))
        .cloned()
        .collect();
    let mut payloads = payloads_of(u, headers.iter().map(|s| &s.header))?;
    if let Some(own) = &h.last_own {
        if let Some(payload) = h.core.payload(&own.header.payload().digest) {
            payloads.push(payload.clone());
        }
    }
    if u.ratio(1, 10)? {
        payloads.push(Payload::new(Bytes::from(vec![
            0xab;
            u.int_in_range(0..=64)?
        ])));
    }
    payloads.sort_by_key(|p| p.digest());
    payloads.dedup_by_key(|p| p.digest());
    Ok(RequestBody::HeaderBundle {
        round,
        headers,
        parents,
        payloads,
    })
}

/// A header by one of authorities 0..=2, validly signed, wrong in one way.
fn crafted_header(h: &Harness, u: &mut Unstructured, r: Round) -> arbitrary::Result<SignedHeader> {
    let p = pool();
    let author = AuthorityIndex(u.int_in_range(0..=2)?);
    let previous = &p.certificates[r.0 as usize - 1];
    let mut parents: Vec<ParentRef> = previous
        .iter()
        .map(|c| ParentRef {
            author: c.author(),
            digest: c.digest(),
        })
        .collect();
    let payload = Payload::from_transactions([&[0xee, author.0 as u8][..]]);
    let mut payload_ref = payload.reference();
    let mut round = r;
    let mut instance = p.committee.instance();
    match u.int_in_range(0..=9u8)? {
        0 => round = Round(r.0 + u.int_in_range(2..=1_000_000u64)?),
        1 => round = Round(u64::MAX - u.int_in_range(0..=2u64)?),
        2 => round = Round(r.0.saturating_sub(u.int_in_range(1..=3)?)),
        3 => {
            parents.truncate(u.int_in_range(0..=2)?);
        }
        4 => {
            let i = u.choose_index(parents.len())?;
            parents[i].digest = Digest(u.arbitrary()?);
        }
        5 => {
            let i = u.choose_index(parents.len())?;
            parents.push(parents[i]);
        }
        6 => {
            parents.push(ParentRef {
                author: AuthorityIndex(u.int_in_range(4..=u16::MAX)?),
                digest: Digest(u.arbitrary()?),
            });
        }
        7 => {
            payload_ref.len =
                (MAX_PAYLOAD_BYTES as u32).saturating_add(u.arbitrary::<u16>()?.into())
        }
        8 => {
            payload_ref = PayloadRef {
                digest: Digest(u.arbitrary()?),
                len: u.arbitrary::<u16>()?.into(),
            }
        }
        _ => instance = Digest(u.arbitrary()?),
    }
    // Parents of the core's own latest header, so a crafted header can sit on its DAG too.
    if u.ratio(1, 6)? {
        if let Some(own) = &h.last_own {
            parents = own.header.parents().to_vec();
            round = own.header.round();
        }
    }
    let header = Header::new(
        instance,
        round,
        author,
        parents,
        payload_ref,
        u.arbitrary()?,
    );
    Ok(testkit::sign_header(&p.keys[author.as_usize()], header))
}

/// Certificates of one round, with parents and payloads; sometimes the core's own header
/// certified, sometimes a damaged certificate.
pub(super) fn cert_bundle(h: &Harness, u: &mut Unstructured) -> arbitrary::Result<RequestBody> {
    let p = pool();
    let r = u.int_in_range(1..=POOL_ROUNDS)?;
    let mut certificates: Vec<Certificate> = p.certificates[r as usize]
        .iter()
        .filter(|_| u.ratio(3, 4).unwrap_or(true))
        .cloned()
        .collect();
    if let Some(own) = &h.last_own {
        if u.ratio(1, 2)? {
            certificates.push(certify(&p.committee, &p.keys, own.header.clone()));
        }
    }
    if u.ratio(1, 6)? && !certificates.is_empty() {
        let i = u.choose_index(certificates.len())?;
        damage(u, &mut certificates[i])?;
    }
    if u.ratio(1, 8)? && !certificates.is_empty() {
        let i = u.choose_index(certificates.len())?;
        certificates.push(certificates[i].clone());
    }
    let round = if u.ratio(1, 10)? {
        Round(u.int_in_range(0..=POOL_ROUNDS + 3)?)
    } else {
        certificates.first().map_or(Round(r), |c| c.round())
    };
    let parents = if u.arbitrary()? {
        earlier_certificates(u, r)?
    } else {
        Vec::new()
    };
    let mut payloads = payloads_of(
        u,
        certificates
            .iter()
            .chain(&parents)
            .map(|c: &Certificate| &c.header),
    )?;
    payloads.sort_by_key(|p| p.digest());
    payloads.dedup_by_key(|p| p.digest());
    Ok(RequestBody::CertBundle {
        round,
        certificates,
        parents,
        payloads,
    })
}

/// Damages a certificate: a signer short, a signer twice, a wrong signature, a signer outside the
/// committee, or one signature missing.
fn damage(u: &mut Unstructured, c: &mut Certificate) -> arbitrary::Result<()> {
    match u.int_in_range(0..=4u8)? {
        0 => {
            c.signers.pop();
            c.signatures.pop();
        }
        1 => {
            c.signers.push(c.signers[0]);
            c.signatures.push(c.signatures[0]);
        }
        2 => c.signatures[0] = Signature([u.arbitrary::<u8>()?; 64]),
        3 => {
            c.signers.push(AuthorityIndex(u.int_in_range(4..=9)?));
            c.signatures.push(c.signatures[0]);
        }
        _ => {
            c.signatures.pop();
        }
    }
    Ok(())
}

/// Most certificates of the rounds from a chosen one up to, not including, `r`.
fn earlier_certificates(u: &mut Unstructured, r: u64) -> arbitrary::Result<Vec<Certificate>> {
    let from = u.int_in_range(1..=r)? as usize;
    Ok(pool().certificates[from..r as usize]
        .iter()
        .flatten()
        .filter(|_| u.ratio(3, 4).unwrap_or(true))
        .cloned()
        .collect())
}

/// Most of the pool payloads of `headers` (four in five).
pub(super) fn payloads_of<'a>(
    u: &mut Unstructured,
    headers: impl Iterator<Item = &'a Header>,
) -> arbitrary::Result<Vec<Payload>> {
    let p = pool();
    let mut out = Vec::new();
    for header in headers {
        if let Some(payload) = p.payloads.get(&header.payload().digest) {
            if u.ratio(4, 5)? {
                out.push(payload.clone());
            }
        }
    }
    Ok(out)
}
