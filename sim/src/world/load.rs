//! The load client: transactions submitted at a steady rate to random honest cores, their
//! acknowledgements, and S9 at the end of a run (no acknowledged transaction lost or committed
//! twice).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use sleepyseal_core::codec::{Decode, Encode};
use sleepyseal_core::protocol::{RequestBody, Response};
use sleepyseal_core::Request;

use super::events::Event;
use super::{World, CLIENT};

/// An acknowledged transaction still uncommitted at its home core when that core has advanced
/// this many rounds past gc depth since the acknowledgement is counted as slow (a header that was
/// never certified gives its transactions back only after gc depth rounds).
const SLOW_AFTER_EXTRA_ROUNDS: u64 = 20;

impl World {
    /// Submits the next transaction to a random honest core and schedules the one after.
    pub(super) fn submit(&mut self) {
        let honest = self.honest_instances();
        let instance = honest[self.rng.index(honest.len())];
        self.tx_counter += 1;
        let mut tx = self.config.seed.to_le_bytes().to_vec();
        tx.extend_from_slice(&self.tx_counter.to_le_bytes());
        let tx = Bytes::from(tx);
        self.submitted
            .insert(self.tx_counter, (tx.clone(), instance));
        let request = Request {
            instance: self.committee.instance(),
            body: RequestBody::Submit {
                transactions: vec![tx],
            },
        };
        let bytes = request.to_bytes();
        let id = self.tx_counter;
        self.transmit(None, instance, || Event::Request {
            from: CLIENT,
            instance,
            id,
            bytes: bytes.clone(),
        });
        let interval = (1_000 / self.config.load_tx_per_s.max(1)).max(1);
        self.at(interval, Event::Submit);
    }

    /// A reply to the load client: an acknowledgement counts, and its transaction is remembered
    /// with its home core's round at that time (for S9 at the end).
    pub(super) fn deliver_client_reply(&mut self, id: u64, bytes: Bytes) {
        if let Ok(Response::Submitted { accepted }) = Response::from_bytes(bytes) {
            self.acked += u64::from(accepted);
            if let Some((tx, home)) = self.submitted.remove(&id) {
                let round = self.instances[home]
                    .core
                    .as_ref()
                    .map_or(0, |c| c.round().0);
                self.acked_transactions.push((tx, home, round));
            }
        }
    }

    /// S9, at the end of a run: at every live honest core, no acknowledged transaction is
    /// committed twice, and each one submitted to that core is committed or still pending there
    /// (mempool or an own header that has not committed yet). Never lost.
    pub(super) fn check_transactions(&mut self) {
        // A core that installed a checkpoint does not hold the committed entries of its gap
        // (until the fill brings them): a transaction committed there is committed, not lost.
        let mut anywhere: HashSet<Bytes> = HashSet::new();
        for instance in self.honest_instances() {
            if self.down_for_good.contains(&instance) {
                continue;
            }
            let Some(core) = self.instances[instance].core.as_ref() else {
                continue;
            };
            for e in core.committed_entries() {
                if let Some(p) = core.payload(&e.payload.digest) {
                    anywhere.extend(p.transactions().unwrap_or_default());
                }
            }
        }
        for instance in self.honest_instances() {
            if self.down_for_good.contains(&instance) {
                continue;
            }
            let Some(core) = self.instances[instance].core.as_ref() else {
                continue;
            };
            let mut committed: HashMap<Bytes, u32> = HashMap::new();
            let entries: Vec<_> = core.committed_entries().copied().collect();
            let mut unreadable = 0;
            for e in &entries {
                match core.payload(&e.payload.digest) {
                    Some(p) => {
                        for t in p.transactions().unwrap_or_default() {
                            *committed.entry(t).or_default() += 1;
                        }
                    }
                    None => unreadable += 1,
                }
            }
            let pending: HashSet<Bytes> = core.pending_transactions().into_iter().collect();
            let mut violations = Vec::new();
            for (tx, home, acked_at) in &self.acked_transactions {
                match committed.get(tx).copied().unwrap_or(0) {
                    0 if *home == instance
                        && unreadable == 0
                        && !pending.contains(tx)
                        && !anywhere.contains(tx) =>
                    {
                        violations.push(format!("instance {instance}: acknowledged {tx:?} lost"));
                    }
                    // Counted from when the core was back if it restarted since: the rounds
                    // it was down are the outage's, not a carriage tail. A transaction another
                    // honest core committed is committed here too (S1), maybe in a filled gap
                    // entry whose payload the core fetches last: not slow.
                    0 if *home == instance
                        && !anywhere.contains(tx)
                        && (*acked_at).max(self.back_at.get(&instance).copied().unwrap_or(0))
                            + self.committee.gc_depth()
                            + SLOW_AFTER_EXTRA_ROUNDS
                            < core.round().0 =>
                    {
                        self.slow_transactions += 1;
                    }
                    n if n > 1 => violations.push(format!(
                        "instance {instance}: acknowledged {tx:?} committed {n} times"
                    )),
                    _ => {}
                }
            }
            for v in violations.into_iter().take(5) {
                self.checker.fail("S9", v);
            }
        }
    }
}
