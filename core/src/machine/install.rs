//! Installing a checkpoint (PROTOCOL.md §8a.3): a core further behind than the others retain
//! takes a certified commit state instead of the history it can no longer get, in one atomic,
//! synced write, and resumes from the new floor through ordinary catch-up (§8a.4).
//!
//! What it must never do: go back (`Stale`), take a checkpoint that catch-up would reach anyway
//! (`NotNeeded`: a hostile driver cannot push a slightly late core into a gap), touch
//! `last_voted`, or drop an acknowledged transaction. Own headers that the committed sequence
//! may hold in the gap are *undecided*: their payloads stay pinned, their transactions are
//! neither proposed nor dropped until the gap is filled or FILL_TIMEOUT passes; then they are
//! proposed again and counted as possible duplicates.

use bytes::Bytes;

use super::{Core, Tx};
use crate::checkpoint::CheckpointCert;
use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::error::CoreError;
use crate::protocol::{Response, Status};
use crate::store::keys;
use crate::types::{Digest, Millis, Round};

/// Most own headers an install record lists (own headers above the old floor, a bounded set).
const MAX_RECORDED_OWN: usize = 1 << 16;

/// What an own header kept across an install is known to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnVerdict {
    /// Its certificate is committed (at or below the certified state).
    Committed,
    /// The gap may hold it: decided by the fill, or proposed again after FILL_TIMEOUT.
    Undecided,
}

/// The durable trace of the latest install (PROTOCOL.md §8a.3 step 3): the committed sequence's
/// new base, the gap below it down to the core's old state, and the verdicts of the own headers
/// kept across it, so a restart reloads the same shape and the fill has its anchor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallRecord {
    /// The certified consensus index: the committed sequence restarts here.
    pub base_index: u64,
    /// The certified commit hash (the fill links down from it).
    pub base_hash: Digest,
    /// The core's consensus index before the install: the gap is `old_index..base_index`.
    pub old_index: u64,
    /// The core's commit hash before the install: the fill must end on it.
    pub old_hash: Digest,
    /// The lowest index the fill verified so far: the gap still open is `old_index..fill_next`.
    pub fill_next: u64,
    /// The commit hash after the entries below `fill_next` (the chain's value at
    /// `fill_next − 1`), verified: the next fill entry must end on it.
    pub fill_hash: Digest,
    /// Own headers kept across the install with what is known of them: (round, digest, verdict).
    pub own: Vec<(Round, Digest, OwnVerdict)>,
}

impl Encode for InstallRecord {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.base_index);
        w.digest(&self.base_hash);
        w.u64(self.old_index);
        w.digest(&self.old_hash);
        w.u64(self.fill_next);
        w.digest(&self.fill_hash);
        w.u32(u32::try_from(self.own.len()).expect("bounded"));
        for (round, digest, verdict) in &self.own {
            w.round(*round);
            w.digest(digest);
            w.u8(match verdict {
                OwnVerdict::Committed => 0,
                OwnVerdict::Undecided => 1,
            });
        }
    }
}

impl Decode for InstallRecord {
    const MIN_ENCODED_BYTES: usize = 8 + 32 + 8 + 32 + 8 + 32 + 4;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let base_index = r.u64()?;
        let base_hash = r.digest()?;
        let old_index = r.u64()?;
        let old_hash = r.digest()?;
        let fill_next = r.u64()?;
        let fill_hash = r.digest()?;
        if fill_next < old_index || fill_next > base_index {
            return Err(DecodeError::NonCanonical {
                what: "install record fill progress",
            });
        }
        let n = r.len_prefix("own verdicts", MAX_RECORDED_OWN, 8 + 32 + 1)?;
        let mut own = Vec::with_capacity(n);
        for _ in 0..n {
            let round = r.round()?;
            let digest = r.digest()?;
            let verdict = match r.u8()? {
                0 => OwnVerdict::Committed,
                1 => OwnVerdict::Undecided,
                tag => {
                    return Err(DecodeError::UnknownTag {
                        what: "own verdict",
                        tag,
                    })
                }
            };
            own.push((round, digest, verdict));
        }
        Ok(InstallRecord {
            base_index,
            base_hash,
            old_index,
            old_hash,
            fill_next,
            fill_hash,
            own,
        })
    }
}

impl Core {
    /// `InstallCheckpoint` (§8a.3), the certificate verified already.
    pub(super) fn on_install(
        &mut self,
        now: Millis,
        cert: CheckpointCert,
        tx: &mut Tx,
    ) -> Response {
        let state = &cert.state;
        let own = &self.consensus;
        if state.last_committed.len() != own.last_committed.len() {
            return Response::Error(CoreError::InvalidCheckpoint);
        }
        let ahead = state.consensus_index > own.consensus_index
            && state.last_committed_round > own.last_committed_round
            && state
                .last_committed
                .iter()
                .zip(&own.last_committed)
                .all(|(certified, mine)| certified >= mine);
        if !ahead {
            return Response::Error(CoreError::StaleCheckpoint {
                index: state.consensus_index,
                own_index: own.consensus_index,
            });
        }
        let behind = state.last_committed_round.0 - own.last_committed_round.0;
        if behind <= self.committee.gc_depth() {
            return Response::Error(CoreError::CheckpointNotNeeded { behind });
        }
        let lc = state.last_committed[self.me.as_usize()];
        let voted = self.last_voted[self.me.as_usize()]
            .as_ref()
            .map_or(Round::GENESIS, |s| s.header.round());
        if lc > voted {
            let reason = format!(
                "a certified checkpoint (index {}) shows this core's header of round {lc} \
                 committed, but its store last recorded signing round {voted}: the store is \
                 older than what this key signed (restored from a backup, or lost); this key \
                 must not sign again from this store",
                state.consensus_index
            );
            return self.halt(reason, tx);
        }
        self.install(now, &cert, lc, tx);
        Response::Summary(Box::new(self.summary(Status::Ready, false)))
    }

    /// The install itself: one write (the caller's `tx`).
    fn install(&mut self, now: Millis, cert: &CheckpointCert, lc: Round, tx: &mut Tx) {
        let state = &cert.state;
        // A gap an earlier install left open stays part of this one: the fill runs from the new
        // base down to the oldest anchor, through the entries this core holds in between.
        let (old_index, old_hash) = match self.open_gap() {
            Some(earlier) => (earlier.old_index, earlier.old_hash),
            None => (self.consensus.consensus_index, self.consensus.commit_hash),
        };
        // 1. The certified commit state; the floor follows from it: exactly gc′.
        self.consensus = state.consensus();
        tx.batch.put(
            keys::consensus(),
            super::recover::encode_consensus(&self.consensus),
        );
        // 3. The committed sequence goes on at the certified index. What this core holds
        //    stays below the gap `old_index..base`; reads in the gap skip forward past it until
        //    the fill brings it (`fill`).
        // 5. Own headers: round lc committed, below it undecided, above it as usual.
        for (round, own) in self.own.iter_mut() {
            if own.committed {
                continue;
            }
            if *round == lc {
                own.committed = true;
            } else if *round < lc {
                own.undecided = true;
            }
        }
        // 2. Below gc′: certificates and unpinned payloads go; own headers above lc that can no
        //    longer commit give their transactions back (§4.4).
        self.collect_garbage(tx);
        // Undecided headers of an earlier install stay undecided (their gap is still open).
        let record = InstallRecord {
            base_index: state.consensus_index,
            base_hash: state.commit_hash,
            old_index,
            old_hash,
            fill_next: state.consensus_index,
            fill_hash: state.commit_hash,
            own: self.own_verdicts(),
        };
        tx.batch.put(keys::install(), record.to_bytes());
        self.install = Some(record);
        self.awaiting_fill = self.own.values().any(|o| o.undecided);
        self.gap_moved_at = Some(now);
        self.counters.checkpoints_installed += 1;
        // 4. `last_voted` is untouched; the core's round stays its latest own header's, and
        //    `advance` never builds a header at or below it.
    }

    /// FILL_TIMEOUT (§8a.5): undecided own headers whose gap saw no fill progress for that long
    /// are proposed again, counted as possible duplicates; acknowledged transactions are never
    /// dropped.
    pub(super) fn expire_undecided(&mut self, now: Millis, tx: &mut Tx) {
        if !self.awaiting_fill {
            return;
        }
        let since = *self.gap_moved_at.get_or_insert(now);
        if now.since(since) < self.config.fill_timeout_ms {
            return;
        }
        self.awaiting_fill = false;
        self.release_undecided(true, tx);
    }

    /// Gives the transactions of every undecided own header back to the mempool, once: the
    /// completed fill lacks them (they were skipped), or FILL_TIMEOUT passed (`possibly_in_gap`:
    /// counted as possible duplicates). The record's verdicts are rewritten in the same write.
    pub(super) fn release_undecided(&mut self, possibly_in_gap: bool, tx: &mut Tx) {
        let latest = self.round();
        let undecided: Vec<Round> = self
            .own
            .iter()
            .filter(|(_, o)| o.undecided)
            .map(|(r, _)| *r)
            .collect();
        for round in undecided {
            let Some(mut own) = self.own.remove(&round) else {
                continue;
            };
            let requeued = self.requeue_payload(own.signed.header.payload().digest, tx) as u64;
            if possibly_in_gap {
                self.counters.transactions_possibly_duplicated += requeued;
            } else {
                self.counters.transactions_requeued += requeued;
            }
            if round == latest {
                // The latest own header defines the core's round: it stays, decided (its
                // transactions are back in the mempool; it is never proposed again).
                own.undecided = false;
                own.committed = true;
                self.own.insert(round, own);
            } else {
                tx.batch.delete(keys::own(round));
            }
        }
        self.write_install_record(tx);
    }

    /// Writes the install record with the own headers' current verdicts.
    pub(super) fn write_install_record(&mut self, tx: &mut Tx) {
        let own = self.own_verdicts();
        if let Some(record) = self.install.as_mut() {
            record.own = own;
            tx.batch.put(keys::install(), record.to_bytes());
        }
    }

    /// The latest install's record if its gap is still open.
    pub(super) fn open_gap(&self) -> Option<&InstallRecord> {
        self.install.as_ref().filter(|r| r.fill_next > r.old_index)
    }

    /// What is known of each own header kept (the record's list): undecided, or committed.
    fn own_verdicts(&self) -> Vec<(Round, Digest, OwnVerdict)> {
        self.own
            .iter()
            .filter_map(|(round, o)| {
                let verdict = if o.undecided {
                    OwnVerdict::Undecided
                } else if o.committed {
                    OwnVerdict::Committed
                } else {
                    return None;
                };
                Some((*round, o.signed.header.digest(), verdict))
            })
            .collect()
    }

    /// Stops the core for good: answering further would be unsafe. Durable, so a restart on
    /// this store refuses to start instead of going on.
    pub(super) fn halt(&mut self, reason: String, tx: &mut Tx) -> Response {
        tx.batch
            .put(keys::halt(), Bytes::from(reason.clone().into_bytes()));
        self.halted = Some(reason.clone());
        Response::Error(CoreError::Halted(reason))
    }

    /// The reason this core stopped, if it did: it answers nothing else.
    pub fn halted(&self) -> Option<&str> {
        self.halted.as_deref()
    }

    /// The latest install's record, if this core ever installed a checkpoint.
    pub fn install_record(&self) -> Option<&InstallRecord> {
        self.install.as_ref()
    }
}
