//! The fill forger ([`Behaviour::ForgedFills`]): a hostile driver that otherwise drives like an
//! honest one hands every honest core with an open gap `FillLog`s built from the honest sequence
//! and then damaged: truncated, reordered, wrongly anchored, or with an entry's fields changed
//! under its honest hash. Its own fill steps are damaged the same way. Honest cores must refuse
//! them all (PROTOCOL.md §8a.5), and the checkers must catch a core that takes one (the
//! `fill_without_chain_check` control, S12).

use sleepyseal_core::codec::Encode;
use sleepyseal_core::protocol::{CommittedEntry, RequestBody};
use sleepyseal_core::{AuthorityIndex, Digest, Request, Round};

use super::World;
use crate::rng::SimRng;

/// One forged offer every this many driver ticks, on average (per mille per tick).
const FORGE_PER_MILLE: u32 = 100;

/// Entries a forged fill carries at most.
const FORGED_LEN: u64 = 8;

impl World {
    /// Maybe offers each honest core with an open gap a damaged fill of it.
    pub(super) fn forge_fills(&mut self, driver: usize) {
        if !self.rng.chance(FORGE_PER_MILLE) {
            return;
        }
        let honest = self.honest_instances();
        let Some(source) = honest
            .iter()
            .filter_map(|i| self.instances[*i].core.as_ref())
            .max_by_key(|c| c.consensus().consensus_index)
        else {
            return;
        };
        let mut offers = Vec::new();
        for instance in &honest {
            let Some(core) = self.instances[*instance].core.as_ref() else {
                continue;
            };
            let Some(record) = core.install_record() else {
                continue;
            };
            if record.fill_next <= record.old_index {
                continue;
            }
            let from = record
                .fill_next
                .saturating_sub(FORGED_LEN)
                .max(record.old_index.saturating_sub(1));
            let Ok(mut entries) = source.committed_from(from, (record.fill_next - from) as usize)
            else {
                continue;
            };
            entries.reverse();
            offers.push((core.index(), entries));
        }
        let instance_id = self.committee.instance();
        for (core, mut entries) in offers {
            damage(&mut self.rng, &mut entries);
            self.forged_fills += 1;
            let request = Request {
                instance: instance_id,
                body: RequestBody::FillLog { entries },
            };
            let id = self.rng.next_u64() | (1 << 63);
            if let Some(instance) = self.route(driver, core) {
                self.send_bytes(driver, instance, id, request.to_bytes());
            }
        }
    }

    /// A forging driver's own fill step: damaged like the offers.
    pub(super) fn forge_fill_step(
        &mut self,
        driver: usize,
        id: u64,
        instance: usize,
        mut request: Request,
    ) {
        if let RequestBody::FillLog { entries } = &mut request.body {
            damage(&mut self.rng, entries);
            self.forged_fills += 1;
        }
        self.send_bytes(driver, instance, id, request.to_bytes());
    }
}

/// Damages a fill (newest first) in one of the ways an honest core must refuse: an entry cut
/// from the middle, two entries swapped, the top entry dropped (the fill then starts too low),
/// or an entry's fields changed under its honest commit hash.
fn damage(rng: &mut SimRng, entries: &mut Vec<CommittedEntry>) {
    if entries.len() < 3 {
        if let Some(top) = entries.first_mut() {
            top.created_at_ms ^= 1;
        }
        return;
    }
    let k = 1 + rng.index(entries.len() - 2);
    match rng.index(4) {
        0 => {
            entries.remove(k);
        }
        1 => entries.swap(k - 1, k),
        2 => {
            entries.remove(0);
        }
        _ => {
            let e = &mut entries[k - 1];
            match rng.index(4) {
                0 => e.payload.digest = Digest([rng.next_u64() as u8; 32]),
                1 => e.author = AuthorityIndex(e.author.0 ^ 1),
                2 => e.round = Round(e.round.0 + 1),
                _ => e.is_leader = !e.is_leader,
            }
        }
    }
}
