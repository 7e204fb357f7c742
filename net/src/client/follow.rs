//! Following a core's committed sequence: [`CommittedFollower`], built by
//! [`Clients::follow_committed`](super::Clients::follow_committed).
//!
//! A follower long-polls `ReadCommitted` from where it stopped and delivers entries in order.
//! Two things a reader meets are handled here once: the core may have evicted entries not read
//! yet (`CommittedEvicted`: the follower says so and skips ahead) or be filling them after a
//! checkpoint install (`CommittedGapOpen`: the follower waits and reads again), and a core may
//! hold a committed certificate before its payload (the follower delivers the entry without it,
//! or holds it back, asks the other cores and reads it again, as [`MissingPayload`] says).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sleepyseal_core::protocol::{
    CommittedEntry, CommittedView, PayloadPrefixes, Request, RequestBody, Response,
};
use sleepyseal_core::{CoreError, Digest, Payload};

use super::{ClientError, CoreClient};

/// How long a follower waits for each other core when asking it for a missing payload.
const PEER_PAYLOAD_TIMEOUT: Duration = Duration::from_secs(2);

/// How a [`CommittedFollower`] reads a core's committed sequence.
#[derive(Clone, Debug)]
pub struct FollowOptions {
    /// Entries asked for per read.
    pub max_entries: u32,
    /// What comes along with the entries: nothing, transaction prefixes or whole payloads.
    pub view: CommittedView,
    /// Long poll: how long (ms) the core may hold a read until new entries are committed.
    pub wait_ms: u32,
    /// A read without a reply after this long is given up.
    pub timeout: Duration,
    /// Pause after a failed read before the next one (the core may be down or restarting).
    pub retry_after: Duration,
    /// What to do with an entry whose payload the core does not return.
    pub missing_payload: MissingPayload,
}

/// What a follower does with a committed entry whose payload the followed core does not hold yet
/// (a core may insert a certificate before its payload arrives). Only asked when the view brings
/// payloads or prefixes.
#[derive(Clone, Debug)]
pub enum MissingPayload {
    /// Deliver the entry at once, as [`EntryPayload::Missing`].
    Deliver,
    /// Hold the entry (and every later one) back and read it again after `retry`, keeping the
    /// time it was first seen committed; with `ask_peers`, ask the other cores for the payload
    /// first. After `give_up` (never if `None`) deliver it as [`EntryPayload::Missing`].
    Wait {
        /// Ask every other core (`FetchPayloads`) before holding the entry back.
        ask_peers: bool,
        /// Pause before reading a held entry again.
        retry: Duration,
        /// How long an entry may be held back.
        give_up: Option<Duration>,
    },
}

/// What one [`CommittedFollower::next`] brought.
#[derive(Debug)]
pub enum Followed {
    /// Entries in index order, consecutive and following those delivered before. Empty when the
    /// long poll ended without news or the first entry is held back for its payload.
    Entries(Vec<FollowedEntry>),
    /// The core no longer retains `from_index..first_index`: the follower skipped them.
    Evicted {
        /// The first index skipped.
        from_index: u64,
        /// The core's oldest retained index, where the follower goes on.
        first_index: u64,
    },
    /// The core is filling the entries from `from_index` (a gap a checkpoint install left): the
    /// follower reads them again after [`FollowOptions::retry_after`], skipping nothing.
    Filling {
        /// The next index to deliver.
        from_index: u64,
        /// The lowest index the core holds above the part still open.
        filled_from: u64,
    },
    /// The read failed; the next one comes after [`FollowOptions::retry_after`].
    Failed(FollowError),
}

/// A committed entry as a follower delivers it.
#[derive(Debug)]
pub struct FollowedEntry {
    /// The entry.
    pub entry: CommittedEntry,
    /// Its payload.
    pub payload: EntryPayload,
    /// When the follower first saw it committed (its commit time as a reader sees it; fetching a
    /// missing payload afterwards does not move it).
    pub first_seen: SystemTime,
}

/// The payload of a delivered entry.
#[derive(Debug)]
pub enum EntryPayload {
    /// Neither payloads nor prefixes were asked for.
    NotAsked,
    /// The entry carries no payload.
    Empty,
    /// The payload.
    Held(Payload),
    /// The payload's transaction prefixes (`CommittedView::Prefixes`).
    Prefixes(PayloadPrefixes),
    /// Neither the core nor (if asked) its peers returned it in time.
    Missing,
}

/// Why a read of the committed sequence failed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The request got no decodable response.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The core answered something other than committed entries.
    #[error("unexpected reply: {0:?}")]
    Unexpected(Box<Response>),
}

/// Reads one core's committed sequence, in order; built by
/// [`Clients::follow_committed`](super::Clients::follow_committed).
pub struct CommittedFollower {
    core: Arc<CoreClient>,
    peers: Vec<Arc<CoreClient>>,
    instance: Digest,
    state: FollowState,
}

impl CommittedFollower {
    pub(super) fn new(
        core: Arc<CoreClient>,
        peers: Vec<Arc<CoreClient>>,
        instance: Digest,
        from_index: u64,
        options: FollowOptions,
    ) -> CommittedFollower {
        CommittedFollower {
            core,
            peers,
            instance,
            state: FollowState::new(from_index, options),
        }
    }

    /// The next index to be delivered.
    pub fn next_index(&self) -> u64 {
        self.state.next_index
    }

    /// Reads once (after the pause a failure or a held entry asks for) and says what came.
    /// Cancel-safe: dropped while waiting, it reads the same entries again next time.
    pub async fn next(&mut self) -> Followed {
        if let Some(pause) = self.state.pause.take() {
            tokio::time::sleep(pause).await;
        }
        let options = &self.state.options;
        let request = Request {
            instance: self.instance,
            body: RequestBody::ReadCommitted {
                from_index: self.state.next_index,
                max: options.max_entries,
                view: options.view,
                wait_ms: options.wait_ms,
            },
        };
        let reply = self.core.request(&request, options.timeout).await;
        let seen = SystemTime::now();
        match reply {
            Ok(Response::Committed {
                entries,
                payloads,
                prefixes,
            }) => {
                let mut got = Got {
                    payloads: payloads.into_iter().map(|p| (p.digest(), p)).collect(),
                    prefixes: prefixes.into_iter().map(|p| (p.digest, p)).collect(),
                };
                if self.state.asks_peers() {
                    let missing = self.state.missing(&entries, &got);
                    got.payloads.extend(self.fetch_from_peers(missing).await);
                }
                Followed::Entries(self.state.take(entries, &got, seen, Instant::now()))
            }
            Ok(Response::Error(CoreError::CommittedEvicted { first_index })) => {
                self.state.evicted(first_index)
            }
            Ok(Response::Error(CoreError::CommittedGapOpen { filled_from })) => {
                self.state.filling(filled_from)
            }
            Ok(other) => self.state.failed(FollowError::Unexpected(Box::new(other))),
            Err(e) => self.state.failed(FollowError::Client(e)),
        }
    }

    /// Asks every other core in turn for the payloads with `digests`; returns those found.
    async fn fetch_from_peers(&self, mut digests: Vec<Digest>) -> HashMap<Digest, Payload> {
        let mut found = HashMap::new();
        for peer in &self.peers {
            if digests.is_empty() {
                break;
            }
            let request = Request {
                instance: self.instance,
                body: RequestBody::FetchPayloads {
                    digests: digests.clone(),
                },
            };
            if let Ok(Response::Certificates { payloads, .. }) =
                peer.request(&request, PEER_PAYLOAD_TIMEOUT).await
            {
                found.extend(payloads.into_iter().map(|p| (p.digest(), p)));
                digests.retain(|d| !found.contains_key(d));
            }
        }
        found
    }
}

/// What a read brought beside the entries, by payload digest: whole payloads (of the followed
/// core, or fetched from its peers) and transaction prefixes.
#[derive(Debug, Default)]
struct Got {
    payloads: HashMap<Digest, Payload>,
    prefixes: HashMap<Digest, PayloadPrefixes>,
}

impl Got {
    fn has(&self, digest: &Digest) -> bool {
        self.payloads.contains_key(digest) || self.prefixes.contains_key(digest)
    }

    /// The entry's payload as `view` asks for it, if it came (prefixes are cut from a whole
    /// payload a peer returned).
    fn payload(&self, digest: &Digest, view: CommittedView) -> Option<EntryPayload> {
        match view {
            CommittedView::Digests => Some(EntryPayload::NotAsked),
            CommittedView::Payloads => self.payloads.get(digest).cloned().map(EntryPayload::Held),
            CommittedView::Prefixes { bytes } => self
                .prefixes
                .get(digest)
                .cloned()
                .or_else(|| {
                    let p = self.payloads.get(digest)?;
                    Some(PayloadPrefixes::of(p, bytes))
                })
                .map(EntryPayload::Prefixes),
        }
    }
}

/// The entry held back for its payload.
#[derive(Clone, Copy, Debug)]
struct Held {
    index: u64,
    first_seen: SystemTime,
    since: Instant,
}

/// A follower's position and policy, apart from the network (tested without a core).
#[derive(Debug)]
struct FollowState {
    options: FollowOptions,
    next_index: u64,
    /// Wait this long before the next read.
    pause: Option<Duration>,
    held: Option<Held>,
}

impl FollowState {
    fn new(from_index: u64, options: FollowOptions) -> FollowState {
        FollowState {
            options,
            next_index: from_index,
            pause: None,
            held: None,
        }
    }

    fn asks_peers(&self) -> bool {
        self.options.view != CommittedView::Digests
            && matches!(
                self.options.missing_payload,
                MissingPayload::Wait {
                    ask_peers: true,
                    ..
                }
            )
    }

    /// Digests of the payloads of `entries` that did not come.
    fn missing(&self, entries: &[CommittedEntry], got: &Got) -> Vec<Digest> {
        entries
            .iter()
            .filter(|e| e.payload.len > 0 && !got.has(&e.payload.digest))
            .map(|e| e.payload.digest)
            .collect()
    }

    /// The entries of a read at `seen` to deliver now, in order, up to the first one held back.
    fn take(
        &mut self,
        entries: Vec<CommittedEntry>,
        got: &Got,
        seen: SystemTime,
        now: Instant,
    ) -> Vec<FollowedEntry> {
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let first_seen = match self.held {
                Some(held) if held.index == entry.index => held.first_seen,
                _ => seen,
            };
            let view = self.options.view;
            let payload = if view == CommittedView::Digests {
                EntryPayload::NotAsked
            } else if entry.payload.len == 0 {
                EntryPayload::Empty
            } else if let Some(p) = got.payload(&entry.payload.digest, view) {
                p
            } else if self.hold_back(entry.index, first_seen, now) {
                break;
            } else {
                EntryPayload::Missing
            };
            self.held = None;
            self.next_index = entry.index + 1;
            out.push(FollowedEntry {
                entry,
                payload,
                first_seen,
            });
        }
        if self.held.is_some() {
            if let MissingPayload::Wait { retry, .. } = self.options.missing_payload {
                self.pause = Some(retry);
            }
        }
        out
    }

    /// Whether the entry at `index`, without its payload, waits for another read.
    fn hold_back(&mut self, index: u64, first_seen: SystemTime, now: Instant) -> bool {
        let MissingPayload::Wait { give_up, .. } = self.options.missing_payload else {
            return false;
        };
        let held = *self.held.get_or_insert(Held {
            index,
            first_seen,
            since: now,
        });
        give_up.is_none_or(|limit| now.saturating_duration_since(held.since) < limit)
    }

    /// The core evicted everything below `first_index`: go on from there.
    fn evicted(&mut self, first_index: u64) -> Followed {
        let from_index = self.next_index;
        self.next_index = self.next_index.max(first_index);
        // A held entry may be among those skipped.
        self.held = None;
        Followed::Evicted {
            from_index,
            first_index,
        }
    }

    /// The entries to read next are being filled: nothing now, read again after a pause.
    fn filling(&mut self, filled_from: u64) -> Followed {
        self.pause = Some(self.options.retry_after);
        Followed::Filling {
            from_index: self.next_index,
            filled_from,
        }
    }

    fn failed(&mut self, error: FollowError) -> Followed {
        self.pause = Some(self.options.retry_after);
        Followed::Failed(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sleepyseal_core::messages::PayloadRef;
    use sleepyseal_core::{AuthorityIndex, Round};

    fn options(missing_payload: MissingPayload) -> FollowOptions {
        FollowOptions {
            max_entries: 16,
            view: CommittedView::Payloads,
            wait_ms: 0,
            timeout: Duration::from_secs(1),
            retry_after: Duration::from_millis(100),
            missing_payload,
        }
    }

    fn entry(index: u64, payload: Option<&Payload>) -> CommittedEntry {
        CommittedEntry {
            index,
            round: Round(index),
            author: AuthorityIndex(0),
            digest: Digest::default(),
            payload: payload.map(Payload::reference).unwrap_or(PayloadRef {
                digest: Digest::default(),
                len: 0,
            }),
            commit_hash: Digest::default(),
            leader_round: Round(index),
            is_leader: false,
            created_at_ms: 0,
        }
    }

    fn indices(delivered: &[FollowedEntry]) -> Vec<u64> {
        delivered.iter().map(|d| d.entry.index).collect()
    }

    #[test]
    fn a_missing_payload_holds_back_its_entry_until_give_up_keeping_its_first_sight() {
        let p = Payload::from_transactions([&b"tx"[..]]);
        let wait = MissingPayload::Wait {
            ask_peers: false,
            retry: Duration::from_millis(20),
            give_up: Some(Duration::from_secs(5)),
        };
        let mut s = FollowState::new(0, options(wait));
        let entries = || vec![entry(0, None), entry(1, Some(&p)), entry(2, None)];
        let (t0, t1) = (SystemTime::UNIX_EPOCH, SystemTime::now());
        let start = Instant::now();
        let out = s.take(entries(), &Got::default(), t0, start);
        assert_eq!(indices(&out), [0]);
        assert!(matches!(out[0].payload, EntryPayload::Empty));
        assert_eq!(
            (s.next_index, s.pause),
            (1, Some(Duration::from_millis(20)))
        );
        // Read again later, still missing: held.
        let out = s.take(entries()[1..].to_vec(), &Got::default(), t1, start);
        assert!(out.is_empty());
        // Given up after 5 s: delivered as missing, with the time it was first seen.
        let later = start + Duration::from_secs(5);
        let out = s.take(entries()[1..].to_vec(), &Got::default(), t1, later);
        assert_eq!(indices(&out), [1, 2]);
        assert!(matches!(out[0].payload, EntryPayload::Missing));
        assert_eq!((out[0].first_seen, out[1].first_seen), (t0, t1));
        assert!(s.held.is_none());
    }

    #[test]
    fn a_gap_being_filled_is_waited_for_and_an_evicted_range_skipped() {
        let mut s = FollowState::new(10, options(MissingPayload::Deliver));
        // The core fills 10..40: the follower stays at 10, pauses and reads again.
        let f = s.filling(40);
        assert!(matches!(
            f,
            Followed::Filling {
                from_index: 10,
                filled_from: 40
            }
        ));
        assert_eq!(
            (s.next_index, s.pause),
            (10, Some(Duration::from_millis(100)))
        );
        // Filled: the entries come in order from 10, none skipped.
        let out = s.take(
            vec![entry(10, None), entry(11, None)],
            &Got::default(),
            SystemTime::now(),
            Instant::now(),
        );
        assert_eq!(indices(&out), [10, 11]);
        // Gone for good: skipped, once.
        let e = s.evicted(50);
        assert!(matches!(
            e,
            Followed::Evicted {
                from_index: 12,
                first_index: 50
            }
        ));
        assert_eq!(s.next_index, 50);
    }

    #[test]
    fn a_payload_that_arrives_is_delivered_and_deliver_mode_never_holds_back() {
        let p = Payload::from_transactions([&b"tx"[..]]);
        let held = Got {
            payloads: [(p.digest(), p.clone())].into(),
            ..Got::default()
        };
        let wait = MissingPayload::Wait {
            ask_peers: true,
            retry: Duration::ZERO,
            give_up: None,
        };
        let mut s = FollowState::new(7, options(wait));
        assert!(s.asks_peers());
        assert_eq!(
            s.missing(&[entry(7, Some(&p))], &Got::default()),
            [p.digest()]
        );
        let out = s.take(
            vec![entry(7, Some(&p))],
            &held,
            SystemTime::now(),
            Instant::now(),
        );
        assert!(matches!(out[0].payload, EntryPayload::Held(ref q) if q.digest() == p.digest()));
        let mut s = FollowState::new(7, options(MissingPayload::Deliver));
        let out = s.take(
            vec![entry(7, Some(&p))],
            &Got::default(),
            SystemTime::now(),
            Instant::now(),
        );
        assert!(matches!(out[0].payload, EntryPayload::Missing));
        assert_eq!((s.next_index, s.pause), (8, None));
    }

    #[test]
    fn eviction_skips_ahead_and_a_failure_pauses_the_next_read() {
        let mut s = FollowState::new(3, options(MissingPayload::Deliver));
        let Followed::Evicted {
            from_index,
            first_index,
        } = s.evicted(10)
        else {
            panic!("not an eviction");
        };
        assert_eq!((from_index, first_index, s.next_index), (3, 10, 10));
        let error = FollowError::Client(ClientError::Timeout(Duration::from_secs(1)));
        assert!(matches!(s.failed(error), Followed::Failed(_)));
        assert_eq!(s.pause, Some(Duration::from_millis(100)));
    }

    #[test]
    fn without_payloads_nothing_is_held_back() {
        let mut o = options(MissingPayload::Wait {
            ask_peers: true,
            retry: Duration::ZERO,
            give_up: None,
        });
        o.view = CommittedView::Digests;
        let mut s = FollowState::new(0, o);
        assert!(!s.asks_peers());
        let p = Payload::from_transactions([&b"tx"[..]]);
        let out = s.take(
            vec![entry(0, Some(&p))],
            &Got::default(),
            SystemTime::now(),
            Instant::now(),
        );
        assert!(matches!(out[0].payload, EntryPayload::NotAsked));
    }

    #[test]
    fn the_prefix_view_delivers_prefixes_from_the_core_or_cut_from_a_peers_payload() {
        let p = Payload::from_transactions([&[9u8; 40][..]]);
        let q = Payload::from_transactions([&b"short"[..], &[1u8; 30][..]]);
        let mut o = options(MissingPayload::Deliver);
        o.view = CommittedView::Prefixes { bytes: 8 };
        let mut s = FollowState::new(0, o);
        let got = Got {
            // q came whole from a peer; p's prefixes from the core.
            payloads: [(q.digest(), q.clone())].into(),
            prefixes: [(p.digest(), PayloadPrefixes::of(&p, 8))].into(),
        };
        let r = Payload::from_transactions([&b"never came"[..]]);
        let entries = vec![entry(0, Some(&p)), entry(1, Some(&q)), entry(2, Some(&r))];
        assert_eq!(s.missing(&entries, &got), [r.digest()]);
        let out = s.take(entries, &got, SystemTime::now(), Instant::now());
        let lens = |e: &FollowedEntry| match &e.payload {
            EntryPayload::Prefixes(x) => x
                .transactions
                .as_ref()
                .unwrap()
                .iter()
                .map(|t| (t.len, t.prefix.len()))
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(lens(&out[0]), [(40, 8)]);
        assert_eq!(lens(&out[1]), [(5, 5), (30, 8)]);
        assert!(matches!(out[2].payload, EntryPayload::Missing));
    }
}
