//! Filling the gap an install left in a core's committed sequence (PROTOCOL.md §8a.5), in the
//! background: a step per poll interval, the driver reads the entries just below the core's
//! lowest verified index from another core (`ReadCommitted`, digests only) and hands them to
//! the core, newest first (`FillLog`). The core checks every link itself; the driver only picks
//! the range and rotates sources when one does not hold it or served entries that do not link.

use sleepyseal_core::protocol::{CommittedEntry, CommittedView, Gap, RequestBody, Summary};
use sleepyseal_core::AuthorityIndex;

use super::{DriverState, Purpose};

/// Gap entries one fill step moves (about 170 bytes each): a few steps fill minutes of outage.
pub const FILL_BATCH: u64 = 1_024;

impl DriverState {
    /// The next fill step for `core`, if its summary shows an open gap: the entries read for it,
    /// if they still start where the gap does, else a read of them from the next other core (at
    /// most once per poll interval).
    pub(super) fn fill_request(
        &self,
        core: AuthorityIndex,
        s: &Summary,
    ) -> Option<(AuthorityIndex, RequestBody, Purpose)> {
        let gap = s.gap.filter(|g| g.next > g.old_index)?;
        let view = &self.cores[core.as_usize()];
        if let Some(entries) = view
            .fill_entries
            .as_ref()
            .filter(|e| e.first().is_some_and(|top| top.index + 1 == gap.next))
        {
            let body = RequestBody::FillLog {
                entries: entries.clone(),
            };
            return Some((core, body, Purpose::Fill));
        }
        if self.now.since(view.fill_asked_at) < self.config.poll_interval_ms {
            return None;
        }
        let n = self.committee.size();
        let source = (0..n)
            .map(|k| (view.fill_source + k) % n)
            .find(|i| *i != core.as_usize())?;
        let (from_index, count) = fill_range(gap);
        let body = RequestBody::ReadCommitted {
            from_index,
            max: count as u32,
            view: CommittedView::Digests,
            wait_ms: 0,
        };
        Some((AuthorityIndex(source as u16), body, Purpose::FillFor(core)))
    }

    /// Records a fill request sent: a read from `target` (the next goes to the core after it).
    pub(super) fn fill_sent(&mut self, purpose: Purpose, target: AuthorityIndex) {
        match purpose {
            Purpose::FillFor(core) => {
                let view = &mut self.cores[core.as_usize()];
                view.fill_source = target.as_usize() + 1;
                view.fill_asked_at = self.now;
            }
            Purpose::Fill => self.fill_counts.steps_sent += 1,
            _ => {}
        }
    }

    /// The entries another core served for `core`'s gap: kept newest first, to be sent as they
    /// are (the core checks them).
    pub(super) fn learn_fill_entries(
        &mut self,
        core: AuthorityIndex,
        entries: Vec<CommittedEntry>,
    ) {
        let view = &mut self.cores[core.as_usize()];
        let consecutive = entries.windows(2).all(|w| w[0].index + 1 == w[1].index);
        view.fill_entries = (consecutive && !entries.is_empty()).then(|| {
            let mut entries = entries;
            entries.reverse();
            entries
        });
    }

    /// `core` answered a fill step: taken (a summary) or refused; either way the entries sent
    /// are spent. A refusal tries another source next, after asking the core where its gap
    /// stands: the gap may have moved or closed under another driver's fills, and steps cut
    /// from this driver's old summary would be refused again and again, holding the core's
    /// requests from its catch-up.
    pub(super) fn fill_answered(&mut self, core: usize, taken: bool) {
        let view = &mut self.cores[core];
        if let Some(entries) = view.fill_entries.take() {
            if taken {
                self.fill_counts.steps_taken += 1;
                self.fill_counts.entries_sent += entries.len() as u64;
            } else {
                self.fill_counts.steps_refused += 1;
                view.fill_asked_at = Default::default();
                view.summary = None;
            }
        }
    }

    /// What this driver did to fill gaps.
    pub fn fill_counts(&self) -> FillCounts {
        self.fill_counts
    }
}

/// The read that serves the next fill step of `gap`: from `from_index`, `count` entries up to
/// the entry just below the verified part. Its lowest entry only vouches for the one above it,
/// except at the gap's bottom: there the entry below the gap comes too (when there is one), so
/// that a core whose own history differs from the certified chain learns it and stops.
pub fn fill_range(gap: Gap) -> (u64, u64) {
    let lowest = gap.old_index.max(gap.next.saturating_sub(FILL_BATCH));
    let from = if lowest == gap.old_index {
        gap.old_index.saturating_sub(1)
    } else {
        lowest
    };
    (from, gap.next - from)
}

/// Fill work done by a driver (monotonic counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FillCounts {
    /// `FillLog` requests sent.
    pub steps_sent: u64,
    /// Those the core took.
    pub steps_taken: u64,
    /// Those it refused (entries that did not link: a source served something else).
    pub steps_refused: u64,
    /// Entries in the steps taken (each step's lowest may only vouch for the one above it).
    pub entries_sent: u64,
}
