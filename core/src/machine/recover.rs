//! Building a core, fresh or from its store (PROTOCOL.md §8): reload, rebuild the DAG above
//! gc_round, re-serve the latest own header (never re-create it), and read `last_voted` back so
//! the vote rule holds across restarts.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use super::install::{InstallRecord, OwnVerdict};
use super::{Core, CoreConfig, CoreCounters, OwnHeader, StoredPayload};
use crate::checkpoint::SignedCheckpoint;
use crate::codec::{Decode, DecodeError, Reader, Writer};
use crate::committee::{Committee, LeaderSchedule};
use crate::crypto::KeyPair;
use crate::dag::Dag;
use crate::limits::MAX_COMMITTEE_SIZE;
use crate::mempool::Mempool;
use crate::messages::{Certificate, Payload, SignedHeader};
use crate::protocol::CommittedEntry;
use crate::store::keys::{self, Table};
use crate::tusk::ConsensusState;
use crate::types::{Digest, Round};

/// Why a core could not be built from its store.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The key is not a committee member's.
    #[error("the signing key belongs to no committee member")]
    NotAMember,
    /// A stored value does not decode.
    #[error("stored {table:?} entry does not decode: {error}")]
    Decode {
        /// Which table.
        table: Table,
        /// Why.
        error: DecodeError,
    },
    /// The stored data contradicts itself.
    #[error("store inconsistent: {0}")]
    Inconsistent(String),
    /// The core stopped for good on this store earlier, and says why.
    #[error("this store is not to be used again under this key: {0}")]
    Halted(String),
}

/// Encodes the consensus state for the store.
pub(super) fn encode_consensus(state: &ConsensusState) -> Bytes {
    let mut w = Writer::new();
    w.seq(&state.last_committed);
    w.round(state.last_committed_round);
    w.u64(state.consensus_index);
    w.digest(&state.commit_hash);
    Bytes::from(w.finish())
}

fn decode_consensus(bytes: Bytes) -> Result<ConsensusState, DecodeError> {
    let mut r = Reader::new(bytes);
    let state = ConsensusState {
        last_committed: r.seq("last_committed", MAX_COMMITTEE_SIZE)?,
        last_committed_round: r.round()?,
        consensus_index: r.u64()?,
        commit_hash: r.digest()?,
    };
    r.finish()?;
    Ok(state)
}

/// Stored entries sorted into tables.
#[derive(Default)]
struct Tables {
    last_voted: Vec<SignedHeader>,
    own: Vec<SignedHeader>,
    certificates: Vec<Certificate>,
    /// Payload bytes by the digest in their key.
    payloads: Vec<(Digest, Bytes)>,
    payload_rounds: HashMap<Digest, Round>,
    consensus: Option<ConsensusState>,
    committed: Vec<CommittedEntry>,
    /// Mempool entries in entry order.
    pending: Vec<(u64, Bytes)>,
    /// Checkpoint states this core signed, in index order.
    checkpoints: Vec<SignedCheckpoint>,
    /// The latest install's record.
    install: Option<InstallRecord>,
}

/// The digest of a payload or payload round key.
fn key_digest(key: &[u8]) -> Result<Digest, RecoverError> {
    keys::digest_field(key).ok_or_else(|| RecoverError::Inconsistent("short payload key".into()))
}

fn decoded<T>(table: Table, result: Result<T, DecodeError>) -> Result<T, RecoverError> {
    result.map_err(|error| RecoverError::Decode { table, error })
}

impl Tables {
    fn read(entries: Vec<(Vec<u8>, Bytes)>) -> Result<Tables, RecoverError> {
        let mut t = Tables::default();
        for (key, value) in entries {
            let table = Table::of(&key)
                .ok_or_else(|| RecoverError::Inconsistent(format!("unknown key {key:?}")))?;
            match table {
                Table::LastVoted => t
                    .last_voted
                    .push(decoded(table, SignedHeader::from_bytes(value))?),
                Table::Own => t.own.push(decoded(table, SignedHeader::from_bytes(value))?),
                Table::Certificate => t
                    .certificates
                    .push(decoded(table, Certificate::from_bytes(value))?),
                Table::Payload => t.payloads.push((key_digest(&key)?, value)),
                Table::PayloadRound => {
                    let mut r = Reader::new(value);
                    let round = decoded(
                        table,
                        r.round().and_then(|round| r.finish().map(|()| round)),
                    )?;
                    t.payload_rounds.insert(key_digest(&key)?, round);
                }
                Table::Consensus => t.consensus = Some(decoded(table, decode_consensus(value))?),
                Table::Committed => t
                    .committed
                    .push(decoded(table, CommittedEntry::from_bytes(value))?),
                Table::Halt => {
                    return Err(RecoverError::Halted(
                        String::from_utf8_lossy(&value).into_owned(),
                    ))
                }
                Table::Install => {
                    t.install = Some(decoded(table, InstallRecord::from_bytes(value))?)
                }
                Table::Checkpoint => t
                    .checkpoints
                    .push(decoded(table, SignedCheckpoint::from_bytes(value))?),
                Table::Pending => t.pending.push((
                    keys::u64_field(&key)
                        .ok_or_else(|| RecoverError::Inconsistent("short entry key".into()))?,
                    value,
                )),
            }
        }
        Ok(t)
    }
}

impl Core {
    /// A core with an empty store.
    pub fn new(
        committee: Arc<Committee>,
        schedule: Arc<dyn LeaderSchedule>,
        key: KeyPair,
        config: CoreConfig,
    ) -> Result<Core, RecoverError> {
        Core::recover(committee, schedule, key, config, Vec::new())
    }

    /// Rebuilds a core from every live store entry (as [`crate::Store::load`] returns them).
    pub fn recover(
        committee: Arc<Committee>,
        schedule: Arc<dyn LeaderSchedule>,
        key: KeyPair,
        config: CoreConfig,
        entries: Vec<(Vec<u8>, Bytes)>,
    ) -> Result<Core, RecoverError> {
        let me = committee
            .authorities()
            .iter()
            .find(|a| a.public_key == key.public())
            .map(|a| a.index)
            .ok_or(RecoverError::NotAMember)?;
        let tables = Tables::read(entries)?;
        let size = committee.size();
        let consensus = tables
            .consensus
            .clone()
            .unwrap_or_else(|| ConsensusState::new(size));
        if consensus.last_committed.len() != size {
            return Err(RecoverError::Inconsistent("committee size changed".into()));
        }
        let mut core = Core {
            dag: Dag::new(&committee),
            committee,
            schedule,
            key,
            me,
            mempool: Mempool::new(config.mempool_bytes(), config.mempool_max_transactions),
            config,
            archive: BTreeMap::new(),
            payloads: HashMap::new(),
            empty_payload: Payload::new(Bytes::new()),
            missing_payloads: BTreeSet::new(),
            missing_filled: BTreeSet::new(),
            last_voted: vec![None; size],
            votes_cast: BTreeMap::new(),
            own: BTreeMap::new(),
            consensus,
            checkpoints: VecDeque::new(),
            committed: BTreeMap::new(),
            pinned_from: 0,
            committed_pins: HashMap::new(),
            committed_bytes: 0,
            quorum_since: BTreeMap::new(),
            counters: CoreCounters::default(),
            install: None,
            awaiting_fill: false,
            gap_moved_at: None,
            halted: None,
            fill_rule: super::fill::link_down,
        };
        core.restore(tables)?;
        Ok(core)
    }

    fn restore(&mut self, mut t: Tables) -> Result<(), RecoverError> {
        self.restore_payloads(std::mem::take(&mut t.payloads), &mut t.payload_rounds)?;
        let gc_round = self.gc_round();
        self.dag.prune_below(gc_round);
        // Keys sort by (round, author): parents come before children.
        for c in t.certificates {
            let c = Arc::new(c);
            if c.round() < gc_round {
                self.archive.entry(c.round()).or_default().push(c);
                continue;
            }
            self.dag
                .insert(c.clone())
                .map_err(|e| RecoverError::Inconsistent(format!("certificate {c:?}: {e:?}")))?;
            if !self.holds_payload(&c.header.payload().digest) {
                self.missing_payloads.insert(c.header.payload().digest);
            }
        }
        for signed in t.last_voted {
            let author = signed.header.author();
            let slot = self
                .last_voted
                .get_mut(author.as_usize())
                .ok_or(RecoverError::Inconsistent(format!("vote for {author}")))?;
            *slot = Some(signed.clone());
            let vote = self.sign_vote(signed.header.digest());
            self.votes_cast
                .entry(signed.header.round())
                .or_default()
                .push(vote);
        }
        self.install = t.install;
        self.restore_committed(t.committed)?;
        self.restore_own(t.own, self.install.clone().as_ref())?;
        // The fill's wait starts again at the first request.
        self.awaiting_fill = self.own.values().any(|o| o.undecided);
        self.restore_checkpoints(t.checkpoints)?;
        for (entry, value) in t.pending {
            self.mempool
                .restore_entry(entry, value)
                .map_err(|error| RecoverError::Decode {
                    table: Table::Pending,
                    error,
                })?;
        }
        Ok(())
    }

    /// The committed entries (in key order: ascending index). Those from the install's base up
    /// are one run ending at the consensus index; below it, holes are the gap still open or
    /// entries evicted. The newest pin their payloads within the byte budget, as before.
    fn restore_committed(&mut self, entries: Vec<CommittedEntry>) -> Result<(), RecoverError> {
        let end = self.consensus.consensus_index;
        let base = self.install.as_ref().map_or(0, |i| i.base_index);
        let top_from = entries
            .iter()
            .find(|e| e.index >= base)
            .map_or(end, |e| e.index);
        let top = entries.iter().filter(|e| e.index >= base);
        for (k, entry) in top.enumerate() {
            if entry.index != top_from + k as u64 {
                return Err(RecoverError::Inconsistent(
                    "committed sequence has a hole above the installed base".into(),
                ));
            }
        }
        // The run from the base (if any entry was committed since the install) ends at the
        // consensus index; entries below the base are older than it.
        let ends_wrong = |e: &CommittedEntry| {
            if e.index >= base {
                e.index.checked_add(1) != Some(end)
            } else {
                e.index >= end
            }
        };
        if entries.last().is_some_and(ends_wrong) {
            return Err(RecoverError::Inconsistent(
                "committed entries do not end at the consensus index".into(),
            ));
        }
        for entry in entries {
            self.committed.insert(entry.index, entry);
        }
        self.pinned_from = end;
        // At least what was pinned at the top before the restart: entries of rounds at or above
        // gc_round are never unpinned.
        let gc_round = self.gc_round();
        while let Some(below) = self.pinned_from.checked_sub(1) {
            match self.committed.get(&below).copied() {
                Some(e) if e.round >= gc_round => {
                    self.pinned_from = below;
                    self.pin(&e);
                }
                _ => break,
            }
        }
        self.pin_down();
        Ok(())
    }

    /// Payloads with their rounds; each must hash to the digest it is stored under.
    fn restore_payloads(
        &mut self,
        payloads: Vec<(Digest, Bytes)>,
        rounds: &mut HashMap<Digest, Round>,
    ) -> Result<(), RecoverError> {
        for (digest, bytes) in payloads {
            let payload = Payload::new(bytes);
            if payload.digest() != digest {
                return Err(RecoverError::Inconsistent(format!(
                    "payload stored as {digest:?} hashes to {:?}",
                    payload.digest()
                )));
            }
            let round = rounds.remove(&digest).ok_or_else(|| {
                RecoverError::Inconsistent(format!("payload {digest:?} without its round"))
            })?;
            self.payloads
                .insert(digest, StoredPayload { payload, round });
        }
        match rounds.keys().next() {
            Some(digest) => Err(RecoverError::Inconsistent(format!(
                "round of payload {digest:?}, which is not stored"
            ))),
            None => Ok(()),
        }
    }

    fn restore_own(
        &mut self,
        own: Vec<SignedHeader>,
        install: Option<&InstallRecord>,
    ) -> Result<(), RecoverError> {
        let committed: BTreeSet<_> = self
            .committed
            .values()
            .filter(|e| e.author == self.me)
            .map(|e| e.digest)
            .collect();
        for signed in own {
            if signed.header.author() != self.me {
                return Err(RecoverError::Inconsistent("own header by another".into()));
            }
            let voted = self.last_voted[self.me.as_usize()]
                .as_ref()
                .map_or(Round::GENESIS, |s| s.header.round());
            if signed.header.round() > voted {
                return Err(RecoverError::Inconsistent(
                    "own header newer than last_voted".into(),
                ));
            }
            let digest = signed.header.digest();
            // Verdicts an install left for headers whose committed entries it dropped.
            let verdict = install.and_then(|i| {
                i.own
                    .iter()
                    .find(|(r, d, _)| *r == signed.header.round() && *d == digest)
                    .map(|(_, _, v)| *v)
            });
            let committed = committed.contains(&digest) || verdict == Some(OwnVerdict::Committed);
            let undecided = verdict == Some(OwnVerdict::Undecided);
            self.own.insert(
                signed.header.round(),
                OwnHeader {
                    signed,
                    committed,
                    undecided,
                },
            );
        }
        Ok(())
    }
}
