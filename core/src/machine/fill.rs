//! Filling the gap an install left (PROTOCOL.md §8a.5), from the certified state down.
//!
//! The commit chain binds every field an entry serves, so an entry is verified by the entry
//! below it: `entry.commit_hash = chain(below.commit_hash, entry)`, and the top of the gap ends
//! on the certified hash. A core accepts a `FillLog` entry only when it links to the lowest hash
//! it has verified, stores the new lowest verified hash in the same write, and uses nothing of
//! a fill before that (neither serving it nor deciding an own header by it). When the fill
//! reaches the core's old state, the hash there must be the one the core itself committed: if
//! the chain down from a certified state passes elsewhere, more than f faults happened, and the
//! core stops and says why.

use super::{Core, Tx};
use crate::error::CoreError;
use crate::protocol::{CommittedEntry, Response, Status};
use crate::types::{Digest, Millis};

impl Core {
    /// `FillLog` (§8a.5): entries newest first, from just below the lowest verified one.
    pub(super) fn on_fill(
        &mut self,
        now: Millis,
        entries: Vec<CommittedEntry>,
        tx: &mut Tx,
    ) -> Response {
        let Some(record) = self.open_gap() else {
            return Response::Error(CoreError::FillNotNeeded);
        };
        let (old_index, old_hash) = (record.old_index, record.old_hash);
        let rule = self.fill_rule;
        let Some((verified, hash)) = rule(
            record.fill_next,
            record.fill_hash,
            old_index,
            old_hash,
            &entries,
        ) else {
            return Response::Error(CoreError::InvalidFill {
                next: record.fill_next,
            });
        };
        let next = verified.last().map_or(record.fill_next, |e| e.index);
        for entry in &verified {
            if let Some(held) = self.committed.get(&entry.index) {
                if held.commit_hash != entry.commit_hash {
                    let reason = format!(
                        "the committed sequence verified down from a certified checkpoint has \
                         commit hash {:?} at index {}, where this core committed {:?}: more than \
                         f validators are faulty",
                        entry.commit_hash, entry.index, held.commit_hash
                    );
                    return self.halt(reason, tx);
                }
                continue;
            }
            self.retain_filled(*entry, tx);
            self.decide_own(entry);
        }
        if next == old_index && hash != old_hash {
            let reason = format!(
                "the committed sequence verified down from a certified checkpoint reaches index \
                 {old_index} with commit hash {hash:?}, where this core committed {old_hash:?}: \
                 more than f validators are faulty"
            );
            return self.halt(reason, tx);
        }
        self.counters.gap_entries_filled += verified.len() as u64;
        let record = self.install.as_mut().expect("an open gap has a record");
        record.fill_next = next;
        record.fill_hash = hash;
        self.gap_moved_at = Some(now);
        if next == old_index {
            // The gap is whole: an undecided own header it lacks was never committed.
            self.awaiting_fill = false;
            self.release_undecided(false, tx);
        } else {
            self.write_install_record(tx);
        }
        self.pin_down();
        self.trim_committed(tx);
        Response::Summary(Box::new(self.summary(Status::Ready, false)))
    }

    /// An own header left undecided by an install whose certificate a verified fill entry
    /// holds is committed.
    fn decide_own(&mut self, entry: &CommittedEntry) {
        if entry.author != self.me {
            return;
        }
        if let Some(own) = self.own.get_mut(&entry.round) {
            if own.undecided && own.signed.header.digest() == entry.digest {
                own.undecided = false;
                own.committed = true;
            }
        }
    }
}

/// How a `FillLog` is checked: [`link_down`], unless a test installs another
/// ([`Core::with_fill_rule`]); its arguments are `link_down`'s.
pub type FillRule =
    fn(u64, Digest, u64, Digest, &[CommittedEntry]) -> Option<(Vec<CommittedEntry>, Digest)>;

impl Core {
    /// This core with another fill rule (negative controls: a fill taken without the chain
    /// check must be caught by the checkers).
    pub fn with_fill_rule(mut self, rule: FillRule) -> Core {
        self.fill_rule = rule;
        self
    }
}

/// The entries of `entries` (newest first) that link down from `next` and `hash`: the first
/// must be at index `next − 1` and end on `hash`; each is verified by the commit hash of the
/// entry after it in the list, or by `old_hash` if it is the gap's lowest (`old_index`). The
/// verified entries and the hash below the lowest of them; `None` if an entry is out of place
/// or does not link, or none could be verified.
pub fn link_down(
    next: u64,
    hash: Digest,
    old_index: u64,
    old_hash: Digest,
    entries: &[CommittedEntry],
) -> Option<(Vec<CommittedEntry>, Digest)> {
    let mut verified = Vec::new();
    let (mut next, mut hash) = (next, hash);
    for (k, entry) in entries.iter().enumerate() {
        if next == old_index {
            break;
        }
        if entry.index.checked_add(1) != Some(next) || entry.commit_hash != hash {
            return None;
        }
        let below = match entries.get(k + 1) {
            Some(below) if below.index.checked_add(1) == Some(entry.index) => below.commit_hash,
            Some(_) => return None,
            None if entry.index == old_index => old_hash,
            None => break,
        };
        if !entry.links_to(&below) {
            return None;
        }
        verified.push(*entry);
        next = entry.index;
        hash = below;
    }
    (!verified.is_empty()).then_some((verified, hash))
}
