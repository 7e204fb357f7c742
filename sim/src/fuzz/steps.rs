//! One step of the `core_handle` target: the input picks a request (or a restart, or a time
//! jump) and every choice inside it, in a fixed order.

use arbitrary::Unstructured;
use bytes::Bytes;
use sleepyseal_core::codec::Encode;
use sleepyseal_core::limits::MAX_TRANSACTION_BYTES;
use sleepyseal_core::protocol::{CommittedEntry, CommittedView, RequestBody};
use sleepyseal_core::{Certificate, Digest, Request, Round};

use super::bundles::{cert_bundle, header_bundle, payloads_of};
use super::harness::Harness;
use super::pool::pool;
use super::POOL_ROUNDS;

/// Drives one request, restart or time jump from the input.
pub(super) fn step(h: &mut Harness, u: &mut Unstructured) -> arbitrary::Result<()> {
    match u.int_in_range(0..=11u8)? {
        0 => {
            let body = if u.ratio(1, 4)? {
                match u.int_in_range(0..=2u8)? {
                    0 => RequestBody::GetCheckpoint,
                    1 => install(h, u)?,
                    _ => fill(h, u)?,
                }
            } else {
                RequestBody::GetState {
                    with_payload: u.arbitrary()?,
                }
            };
            h.send(body);
        }
        1 | 2 => {
            let body = header_bundle(h, u)?;
            h.send(body);
        }
        3 | 4 => {
            let body = cert_bundle(h, u)?;
            h.send(body);
        }
        5 => h.send(sync(u)?),
        6 => h.send(fetch(u)?),
        7 => h.send(fetch_payloads(u)?),
        8 => h.send(submit(u)?),
        9 => h.send(RequestBody::ReadCommitted {
            from_index: u.int_in_range(0..=200)?,
            max: u.arbitrary()?,
            view: match u.int_in_range(0..=2)? {
                0 => CommittedView::Digests,
                1 => CommittedView::Prefixes {
                    bytes: u.arbitrary()?,
                },
                _ => CommittedView::Payloads,
            },
            wait_ms: u.arbitrary()?,
        }),
        10 => {
            let bytes = damaged_bundle(h, u)?;
            h.send_bytes(bytes);
        }
        _ => {
            if u.ratio(1, 3)? {
                h.restart();
            } else {
                h.now += u64::from(u.int_in_range(1..=400u16)?);
            }
        }
    }
    Ok(())
}

/// A checkpoint certificate around the core's own state: behind, within GC_DEPTH or far ahead,
/// each author's round moved either way; signed by a subset of the committee (maybe below V),
/// now and then with a damaged signature.
fn install(h: &mut Harness, u: &mut Unstructured) -> arbitrary::Result<RequestBody> {
    use sleepyseal_core::checkpoint::{checkpoint_message, CheckpointCert, CheckpointState};
    let p = pool();
    let consensus = h.core.consensus();
    let mut state = CheckpointState::of(p.committee.instance(), consensus);
    let ahead: u64 = u.int_in_range(0..=40)?;
    state.consensus_index =
        state.consensus_index + ahead * 4 - u.int_in_range(0..=2)?.min(state.consensus_index);
    state.last_committed_round = Round(state.last_committed_round.0 + ahead);
    for r in state.last_committed.iter_mut() {
        *r = Round((r.0 + u.int_in_range(0..=ahead)?).saturating_sub(u.int_in_range(0..=1)?));
    }
    state.commit_hash = Digest(u.arbitrary()?);
    if u.arbitrary()? {
        // A gap the fill steps can bring: entries chained from the core's own state up to the
        // certified index (or, now and then, from another hash: the fill must then stop the
        // core at the old index).
        let old = (consensus.consensus_index, consensus.commit_hash);
        let diverged = u.ratio(1, 8)?;
        let (gap, top) = fabricated_gap(u, old, state.consensus_index, diverged)?;
        state.commit_hash = top;
        h.gap_source = gap;
    }
    let message = checkpoint_message(&state.instance, &state.digest());
    let mut signers = Vec::new();
    let mut signatures = Vec::new();
    for (i, key) in p.keys.iter().enumerate() {
        if u.arbitrary()? {
            signers.push(sleepyseal_core::AuthorityIndex(i as u16));
            let mut signature = key.sign(&message);
            if u.ratio(1, 16)? {
                signature.0[0] ^= 1;
            }
            signatures.push(signature);
        }
    }
    Ok(RequestBody::InstallCheckpoint {
        certificate: CheckpointCert {
            state,
            signers,
            signatures,
        },
    })
}

/// Entries `old.0 − 1 .. index` (the one below the gap first, when there is one), chained from
/// `old.1` (or from another hash if `diverged`, the entry below the gap carrying it), with
/// fields from the input; and the hash after the last.
fn fabricated_gap(
    u: &mut Unstructured,
    old: (u64, Digest),
    index: u64,
    diverged: bool,
) -> arbitrary::Result<(Vec<CommittedEntry>, Digest)> {
    let (old_index, old_hash) = old;
    let start = if diverged {
        Digest(u.arbitrary()?)
    } else {
        old_hash
    };
    let mut entries = Vec::new();
    let entry = |u: &mut Unstructured, index: u64| -> arbitrary::Result<CommittedEntry> {
        Ok(CommittedEntry {
            index,
            round: Round(u.int_in_range(1..=POOL_ROUNDS)?),
            author: sleepyseal_core::AuthorityIndex(u.int_in_range(0..=3)?),
            digest: Digest(u.arbitrary()?),
            payload: sleepyseal_core::messages::PayloadRef {
                digest: Digest(u.arbitrary()?),
                len: u.int_in_range(0..=64)?,
            },
            commit_hash: Digest::ZERO,
            leader_round: Round(u.int_in_range(0..=POOL_ROUNDS)?),
            is_leader: u.arbitrary()?,
            created_at_ms: u.arbitrary()?,
        })
    };
    if let Some(below) = old_index.checked_sub(1) {
        let mut witness = entry(u, below)?;
        witness.commit_hash = start;
        entries.push(witness);
    }
    let mut hash = start;
    for i in old_index..index {
        let mut e = entry(u, i)?;
        e.commit_hash = e.chain(&hash);
        hash = e.commit_hash;
        entries.push(e);
    }
    Ok((entries, hash))
}

/// A `FillLog` for the core's gap from the entries the latest fabricated install chained: a
/// few just below the verified part, newest first, now and then damaged (an entry dropped or
/// two swapped, the top one missing, a field changed).
fn fill(h: &Harness, u: &mut Unstructured) -> arbitrary::Result<RequestBody> {
    let next = h.core.install_record().map_or(0, |r| r.fill_next);
    let count = u.int_in_range(1..=6u64)?;
    let mut entries: Vec<CommittedEntry> = h
        .gap_source
        .iter()
        .rev()
        .filter(|e| e.index < next && e.index + count + 1 >= next)
        .copied()
        .collect();
    if entries.len() > 2 && u.ratio(1, 4)? {
        match u.int_in_range(0..=3u8)? {
            0 => {
                entries.remove(1);
            }
            1 => entries.swap(0, 1),
            2 => {
                entries.remove(0);
            }
            _ => entries[0].created_at_ms ^= 1,
        }
    }
    Ok(RequestBody::FillLog { entries })
}

/// Most certificates of the first rounds, maybe shuffled, with most of their payloads.
fn sync(u: &mut Unstructured) -> arbitrary::Result<RequestBody> {
    let upto = u.int_in_range(1..=POOL_ROUNDS)? as usize;
    let mut certificates: Vec<Certificate> = pool().certificates[1..=upto]
        .iter()
        .flatten()
        .filter(|_| u.ratio(7, 8).unwrap_or(true))
        .cloned()
        .collect();
    if u.arbitrary()? {
        shuffle(u, &mut certificates)?;
    }
    let payloads = payloads_of(u, certificates.iter().map(|c| &c.header))?;
    Ok(RequestBody::Sync {
        certificates,
        payloads,
    })
}

/// A fetch after some rounds per authority (now and then the wrong number of them).
fn fetch(u: &mut Unstructured) -> arbitrary::Result<RequestBody> {
    let n = if u.ratio(1, 8)? {
        u.int_in_range(0..=6)?
    } else {
        4
    };
    let mut after = Vec::new();
    for _ in 0..n {
        after.push(Round(u.int_in_range(0..=POOL_ROUNDS + 2)?));
    }
    Ok(RequestBody::Fetch {
        after,
        max_items: u.arbitrary()?,
        with_payloads: u.arbitrary()?,
    })
}

/// Some pool payloads and one unknown digest.
fn fetch_payloads(u: &mut Unstructured) -> arbitrary::Result<RequestBody> {
    let mut digests: Vec<Digest> = pool()
        .payloads
        .keys()
        .filter(|_| u.ratio(1, 4).unwrap_or(false))
        .copied()
        .collect();
    digests.push(Digest(u.arbitrary()?));
    Ok(RequestBody::FetchPayloads { digests })
}

/// Up to eight transactions, now and then empty or oversized.
fn submit(u: &mut Unstructured) -> arbitrary::Result<RequestBody> {
    let count = u.int_in_range(0..=8)?;
    let mut transactions = Vec::new();
    for _ in 0..count {
        let len = match u.int_in_range(0..=9u8)? {
            0 => MAX_TRANSACTION_BYTES + 1,
            1 => 0,
            _ => u.int_in_range(1..=300usize)?,
        };
        let fill: u8 = u.arbitrary()?;
        transactions.push(Bytes::from(vec![fill; len]));
    }
    Ok(RequestBody::Submit { transactions })
}

/// Byte-level: a structured bundle, encoded, then damaged.
fn damaged_bundle(h: &Harness, u: &mut Unstructured) -> arbitrary::Result<Bytes> {
    let body = if u.arbitrary()? {
        header_bundle(h, u)?
    } else {
        cert_bundle(h, u)?
    };
    let request = Request {
        instance: pool().committee.instance(),
        body,
    };
    let mut bytes = request.to_bytes().to_vec();
    mutate(u, &mut bytes)?;
    Ok(Bytes::from(bytes))
}

/// Fisher–Yates, from the input.
fn shuffle<T>(u: &mut Unstructured, v: &mut [T]) -> arbitrary::Result<()> {
    for i in (1..v.len()).rev() {
        let j = u.int_in_range(0..=i)?;
        v.swap(i, j);
    }
    Ok(())
}

/// Damages an encoding: flipped bits, overwritten length-like words, truncation, insertion.
fn mutate(u: &mut Unstructured, bytes: &mut Vec<u8>) -> arbitrary::Result<()> {
    for _ in 0..u.int_in_range(1..=4)? {
        if bytes.is_empty() {
            break;
        }
        let at = u.choose_index(bytes.len())?;
        match u.int_in_range(0..=4u8)? {
            0 => bytes[at] ^= 1 << u.int_in_range(0..=7u8)?,
            1 => {
                let word: u32 = u.arbitrary()?;
                for (k, b) in word.to_le_bytes().iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + k) {
                        *slot = *b;
                    }
                }
            }
            2 => bytes.truncate(at),
            3 => {
                let extra: Vec<u8> = u.arbitrary()?;
                bytes.splice(at..at, extra.into_iter().take(64));
            }
            _ => {
                let end = (at + u.int_in_range(1..=64usize)?).min(bytes.len());
                bytes.drain(at..end);
            }
        }
    }
    Ok(())
}
