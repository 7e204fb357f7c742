//! What the chaos run collects while it goes: one follower per core records that core's
//! committed sequence (entries and load transactions), and a poller records every own header and
//! vote each core reports; at the end, every certificate each core still holds adds the votes
//! its signers cast.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sleepyseal_core::protocol::{Request, RequestBody, Response};
use sleepyseal_core::{AuthorityIndex, Certificate, Digest, Round};
use sleepyseal_net::client::{
    CommittedFollower, EntryPayload, FollowOptions, Followed, MissingPayload,
};
use sleepyseal_net::Clients;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::node::transaction::{entry_transactions, parse_transaction, LOAD_VIEW};

/// One committed entry as a follower saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `commit_hash` after the entry.
    pub commit_hash: Digest,
    /// (client id, sequence) of its transactions.
    pub transactions: Vec<(u64, u64)>,
}

/// What the followers and the poller collected.
#[derive(Default)]
pub struct Collected {
    /// Per core: index → entry.
    pub sequences: Vec<BTreeMap<u64, Seen>>,
    /// Per core: entries skipped because the core had evicted them.
    pub evicted: Vec<u64>,
    /// (author, round) → digests of own headers reported.
    pub own_headers: HashMap<(u16, u64), Vec<Digest>>,
    /// Header digest → (author, round), from polled own headers and fetched certificates.
    pub slots: HashMap<Digest, (u16, u64)>,
    /// (voter, header digest) of every vote seen: in polled summaries, and as a signer of a
    /// certificate fetched from any core at the end.
    pub votes: HashSet<(u16, Digest)>,
}

/// How each core's committed sequence is read: every entry with its transactions, so an entry
/// whose payload the core does not hold yet is read again until it does (a frozen or restarted
/// core catches up).
fn follow_options() -> FollowOptions {
    FollowOptions {
        max_entries: 1_024,
        view: LOAD_VIEW,
        wait_ms: 200,
        timeout: Duration::from_secs(3),
        retry_after: Duration::from_millis(100),
        missing_payload: MissingPayload::Wait {
            ask_peers: false,
            retry: Duration::ZERO,
            give_up: None,
        },
    }
}

/// The collecting tasks of a chaos run.
pub struct Collectors {
    collected: Arc<Mutex<Collected>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    instance: Digest,
    cores: usize,
}

impl Collectors {
    /// Starts a follower per core and the poller of own headers on `rt`.
    pub fn start(
        rt: &Runtime,
        clients: &Arc<Clients>,
        instance: Digest,
        cores: usize,
    ) -> Collectors {
        let collected = Arc::new(Mutex::new(Collected {
            sequences: vec![BTreeMap::new(); cores],
            evicted: vec![0; cores],
            ..Collected::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for i in 0..cores {
            let follower = clients.follow_committed(AuthorityIndex(i as u16), 0, follow_options());
            tasks.push(rt.spawn(follow(follower, i, collected.clone(), stop.clone())));
        }
        tasks.push(rt.spawn(poll_own_headers(
            clients.clone(),
            instance,
            cores,
            collected.clone(),
            stop.clone(),
        )));
        Collectors {
            collected,
            stop,
            tasks,
            instance,
            cores,
        }
    }

    /// Whether every core has committed every transaction of `acked`. (A count was not
    /// enough: transactions committed but never acknowledged, say sent to a core killed before
    /// it answered, made up for acknowledged ones still on their way, and the drain ended
    /// before them.)
    pub fn all_committed(&self, acked: &[(u64, u64)]) -> bool {
        let c = self.collected.lock().expect("not poisoned");
        c.sequences.iter().all(|s| {
            let committed: HashSet<(u64, u64)> = s
                .values()
                .flat_map(|e| e.transactions.iter().copied())
                .collect();
            acked.iter().all(|t| committed.contains(t))
        })
    }

    /// Stops the tasks, then adds the votes of every certificate each core still holds.
    pub fn finish(self, rt: &Runtime, clients: &Clients) -> Collected {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = rt.block_on(t);
        }
        let mut c = self.collected.lock().expect("not poisoned");
        for i in 0..self.cores {
            let fetched = rt.block_on(fetch_certificates(clients, self.instance, i, self.cores));
            for cert in fetched {
                let digest = cert.digest();
                c.slots.insert(digest, (cert.author().0, cert.round().0));
                for signer in &cert.signers {
                    c.votes.insert((signer.0, digest));
                }
            }
        }
        std::mem::take(&mut *c)
    }
}

/// Follows core `i`'s committed sequence until `stop`, recording each entry.
async fn follow(
    mut follower: CommittedFollower,
    i: usize,
    collected: Arc<Mutex<Collected>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        match follower.next().await {
            Followed::Entries(entries) => {
                let mut c = collected.lock().expect("not poisoned");
                for e in &entries {
                    // Never `None` here: the follower waits for every payload.
                    let Some(transactions) = transactions(&e.payload) else {
                        continue;
                    };
                    let seen = Seen {
                        commit_hash: e.entry.commit_hash,
                        transactions,
                    };
                    c.sequences[i].insert(e.entry.index, seen);
                }
            }
            Followed::Evicted {
                from_index,
                first_index,
            } => {
                let mut c = collected.lock().expect("not poisoned");
                c.evicted[i] += first_index.saturating_sub(from_index);
            }
            // Down, frozen, restarting or filling a gap: the follower tries again shortly.
            Followed::Filling { .. } | Followed::Failed(_) => {}
        }
    }
}

/// (client id, sequence) of the load transactions of a payload (none if it does not parse).
fn transactions(payload: &EntryPayload) -> Option<Vec<(u64, u64)>> {
    if matches!(payload, EntryPayload::Missing | EntryPayload::NotAsked) {
        return None;
    }
    Some(
        entry_transactions(payload)
            .unwrap_or_default()
            .iter()
            .filter_map(|t| parse_transaction(t).map(|(c, s, _)| (c, s)))
            .collect(),
    )
}

/// Every certificate core `i` still holds (its DAG and retention window), page by page.
async fn fetch_certificates(
    clients: &Clients,
    instance: Digest,
    i: usize,
    n: usize,
) -> Vec<Certificate> {
    let mut after = vec![Round(0); n];
    let mut out = Vec::new();
    let client = clients.core(AuthorityIndex(i as u16)).clone();
    // Each page raises some author's bound; the cap only guards against a core that ignores it.
    for _ in 0..10_000 {
        let request = Request {
            instance,
            body: RequestBody::Fetch {
                after: after.clone(),
                max_items: 2_000,
                with_payloads: false,
            },
        };
        let Ok(Response::Certificates { certificates, .. }) =
            client.request(&request, Duration::from_secs(5)).await
        else {
            return out;
        };
        if certificates.is_empty() {
            return out;
        }
        for cert in &certificates {
            let a = cert.author().as_usize();
            after[a] = after[a].max(cert.round());
        }
        out.extend(certificates);
    }
    out
}

/// Records every own header and every vote each core reports (polled every 100 ms).
async fn poll_own_headers(
    clients: Arc<Clients>,
    instance: Digest,
    n: usize,
    collected: Arc<Mutex<Collected>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        for i in 0..n {
            let request = Request {
                instance,
                body: RequestBody::GetState {
                    with_payload: false,
                },
            };
            let client = clients.core(AuthorityIndex(i as u16)).clone();
            if let Ok(Ok(Response::Summary(s))) = tokio::time::timeout(
                Duration::from_millis(300),
                client.request(&request, Duration::from_millis(300)),
            )
            .await
            {
                let mut c = collected.lock().expect("not poisoned");
                for v in &s.votes {
                    c.votes.insert((v.voter.0, v.header_digest));
                }
                if let Some(own) = &s.own_header {
                    let key = (own.header.author().0, own.header.round().0);
                    let digest = own.header.digest();
                    c.slots.insert(digest, key);
                    let seen = c.own_headers.entry(key).or_default();
                    if !seen.contains(&digest) {
                        seen.push(digest);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
