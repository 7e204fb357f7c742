//! The committed sequence a core retains (PROTOCOL.md §8a.6): compact entries by count, their
//! payloads by bytes, kept apart so the payload budget (a few seconds of load) never evicts the
//! entries a gap fill or a reader needs.
//!
//! Entries are held by index. Below an install's base they may have holes: the gap the install
//! skipped, until the fill brings it (`fill`). Every held entry from `pinned_from` up pins its
//! payload; pins go oldest first when the bytes exceed the budget, entries oldest first when
//! they exceed the count, never one of round ≥ gc_round (own headers above it must still learn
//! they committed).

use std::collections::BTreeSet;

use super::{Core, Tx};
use crate::codec::Encode;
use crate::protocol::CommittedEntry;
use crate::store::keys;
use crate::types::{Digest, Round};

impl Core {
    /// The retained committed entries from index `from` (up to `max`, consecutive), or the
    /// lowest index at or above `from` that this core can serve if it holds no entry at `from`
    /// (evicted, or in an unfilled gap): readers skip forward to it and never loop.
    pub fn committed_from(&self, from: u64, max: usize) -> Result<Vec<CommittedEntry>, u64> {
        let end = self.consensus.consensus_index;
        if from >= end {
            return Ok(Vec::new());
        }
        match self.committed.range(from..).next() {
            Some((&first, _)) if first == from => Ok(self
                .committed
                .range(from..)
                .take(max)
                .enumerate()
                .take_while(|(k, (index, _))| **index == from + *k as u64)
                .map(|(_, (_, e))| *e)
                .collect()),
            Some((&first, _)) => Err(first),
            None => Err(end),
        }
    }

    /// Index of the oldest committed entry retained (the consensus index if none is).
    pub fn committed_base(&self) -> u64 {
        self.committed
            .keys()
            .next()
            .copied()
            .unwrap_or(self.consensus.consensus_index)
    }

    /// Every retained committed entry, ascending index (holes where an install's gap is not
    /// filled yet, or was evicted; read only: for checkers and tools).
    pub fn committed_entries(&self) -> impl Iterator<Item = &CommittedEntry> {
        self.committed.values()
    }

    /// Holds a new entry at the top of the sequence and pins its payload.
    pub(super) fn retain_committed(&mut self, entry: CommittedEntry) {
        assert!(
            entry.index >= self.pinned_from,
            "entries at the top are always pinned"
        );
        self.committed.insert(entry.index, entry);
        self.pin(&entry);
    }

    /// Holds an entry the fill verified (below the install's base): pinned if it lies in the
    /// pinned range, else only if the byte budget has room ([`Core::pin_down`]).
    pub(super) fn retain_filled(&mut self, entry: CommittedEntry, tx: &mut Tx) {
        tx.batch.put(keys::committed(entry.index), entry.to_bytes());
        self.committed.insert(entry.index, entry);
        if entry.index >= self.pinned_from {
            self.pin(&entry);
        }
    }

    /// Pins the held entries just below the pinned range while their payloads fit the budget.
    pub(super) fn pin_down(&mut self) {
        while let Some(below) = self.pinned_from.checked_sub(1) {
            let Some(entry) = self.committed.get(&below).copied() else {
                break;
            };
            if self.committed_bytes + entry.payload.len as usize
                > self.config.committed_window_bytes
            {
                break;
            }
            self.pinned_from = below;
            self.pin(&entry);
        }
    }

    /// Pins `entry`'s payload; a payload the core lacks is asked for, those of entries below
    /// the latest install's base after the ones needed to vote and commit.
    pub(super) fn pin(&mut self, entry: &CommittedEntry) {
        let digest = entry.payload.digest;
        if !self.holds_payload(&digest) {
            let filled = self
                .install
                .as_ref()
                .is_some_and(|i| entry.index < i.base_index);
            if filled {
                self.missing_filled.insert(digest);
            } else {
                self.missing_payloads.insert(digest);
            }
        }
        *self.committed_pins.entry(digest).or_default() += 1;
        self.committed_bytes += entry.payload.len as usize;
    }

    /// Unpins `entry`'s payload; a payload no longer pinned, below `keep_from` and not an own
    /// header's goes.
    fn unpin(
        &mut self,
        entry: &CommittedEntry,
        keep_from: Round,
        own: &BTreeSet<Digest>,
        tx: &mut Tx,
    ) {
        self.committed_bytes -= entry.payload.len as usize;
        let digest = entry.payload.digest;
        let pins = self
            .committed_pins
            .get_mut(&digest)
            .expect("every pinned entry counts its payload");
        *pins -= 1;
        if *pins == 0 {
            self.committed_pins.remove(&digest);
            if !own.contains(&digest)
                && self
                    .payloads
                    .get(&digest)
                    .is_some_and(|p| p.round < keep_from)
            {
                self.forget_payload(&digest, tx);
            }
        }
    }

    /// Unpins the oldest payloads beyond the byte budget, then evicts the oldest entries beyond
    /// the count (never one of round ≥ `gc_round`), with their stored keys.
    pub(super) fn evict_committed(
        &mut self,
        gc_round: Round,
        keep_from: Round,
        own: &BTreeSet<Digest>,
        tx: &mut Tx,
    ) {
        while self.committed_bytes > self.config.committed_window_bytes {
            let Some(entry) = self
                .committed
                .range(self.pinned_from..)
                .next()
                .map(|(_, e)| *e)
            else {
                break;
            };
            if entry.round >= gc_round {
                break;
            }
            self.pinned_from = entry.index + 1;
            self.unpin(&entry, keep_from, own, tx);
        }
        while self.committed.len() > self.config.committed_window_entries {
            let Some((&index, &entry)) = self.committed.first_key_value() else {
                break;
            };
            if entry.round >= gc_round {
                break;
            }
            self.committed.remove(&index);
            tx.batch.delete(keys::committed(index));
            if index >= self.pinned_from {
                self.pinned_from = index + 1;
                self.unpin(&entry, keep_from, own, tx);
            }
        }
    }

    /// Evicts what the budgets no longer hold, outside garbage collection (after a fill).
    pub(super) fn trim_committed(&mut self, tx: &mut Tx) {
        let gc_round = self.gc_round();
        let keep_from = gc_round.saturating_sub(self.config.retention_rounds);
        let own = self.uncommitted_own_payloads();
        self.evict_committed(gc_round, keep_from, &own, tx);
    }
}
