//! Fuzz targets: what an untrusted driver can send a core, and what an untrusted core can send a
//! driver. Run coverage-guided by cargo-fuzz (`scripts/fuzz.sh`, targets in `fuzz/`) and, for a
//! few seconds of seeded inputs, by the `fuzz_targets` test in CI. Both install [`CountingAlloc`].
//!
//! - [`decode`]: raw bytes as a request and as a response. Never a panic; a value that decodes
//!   re-encodes to the same bytes (one encoding per value); decoding allocates at most
//!   [`DECODE_ALLOC_FACTOR`] × the input (+ a small constant), so a lying length prefix cannot
//!   make a core reserve memory it was not sent.
//! - [`core_handle`]: the input drives a sequence of structured requests against one honest core
//!   (committee of 4, core 3): real signed headers and certificates of a small DAG, headers
//!   crafted and validly signed by the other authorities (far-future and stale rounds, missing,
//!   fabricated and duplicated parents, wrong, oversized and mismatched payloads, equivocations,
//!   wrong instance), corrupted signatures, arbitrary reads and submissions, byte-level mutations
//!   of encoded requests, time jumps and restarts from the store. After every request: no panic,
//!   the reply re-decodes, no allocation above the request limit, the core never votes twice for
//!   one (author, round) nor signs two own headers for one round, and its round, commit index and
//!   committed sequence only grow. After a restart the recovered core equals the one that stopped.

mod alloc;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use arbitrary::Unstructured;
use bytes::Bytes;
use sleepyseal_core::codec::{Decode, Encode};
use sleepyseal_core::committee::default_schedule;
use sleepyseal_core::limits::{MAX_MESSAGE_BYTES, MAX_PAYLOAD_BYTES, MAX_TRANSACTION_BYTES};
use sleepyseal_core::messages::{vote_message, Header, ParentRef, PayloadRef, SignedHeader, Vote};
use sleepyseal_core::protocol::{CommittedEntry, RequestBody, Response};
use sleepyseal_core::store::MemStore;
use sleepyseal_core::testkit;
use sleepyseal_core::verify::VerifierConfig;
use sleepyseal_core::{
    AuthorityIndex, Certificate, Committee, Core, CoreConfig, Digest, KeyPair, Millis, Payload,
    Request, Round, Signature, Store, Verifier,
};

pub use alloc::{installed, measure, AllocStats, CountingAlloc};

/// Decoding may allocate at most this many bytes per input byte (plus [`ALLOC_SLACK`]): vectors
/// are reserved from length prefixes already checked against the bytes left, and a decoded item
/// is at most 16 times its smallest encoding: an empty payload is 4 bytes on the wire and 64 in
/// memory (its bytes handle and digest). The per-list limits (4,096 payloads) cap that at
/// 256 KiB whatever the request size. Found by the first campaign: a factor of 8 is exceeded.
pub const DECODE_ALLOC_FACTOR: usize = 16;
/// Fixed allowance for small allocations that do not scale with the input.
pub const ALLOC_SLACK: usize = 64 << 10;
/// What handling one request may allocate beyond its decoding: the reply (at most a window of
/// committed entries, a few rounds of certificates and payloads in this harness) and the core's
/// own bookkeeping. Far below the 64 MiB request limit, so a small request that makes the core
/// reserve memory from a number it carries (a `max`, a round) is caught.
pub const HANDLE_ALLOC_BUDGET: usize = 4 << 20;

/// The core under test.
const ME: u16 = 3;
/// Rounds of the pre-built DAG.
const POOL_ROUNDS: u64 = 10;
/// Most requests one input drives.
const MAX_STEPS: usize = 48;

/// Target 1: `data` as a request and as a response.
pub fn decode(data: &[u8]) {
    let input = Bytes::copy_from_slice(data);
    let bound = DECODE_ALLOC_FACTOR * data.len() + ALLOC_SLACK;
    let (request, stats) = measure(|| Request::from_bytes(input.clone()));
    check_alloc("request decoding", stats, bound);
    if let Ok(request) = request {
        assert_eq!(
            request.to_bytes(),
            input,
            "a decoded request re-encodes to other bytes"
        );
    }
    let (response, stats) = measure(|| Response::from_bytes(input.clone()));
    check_alloc("response decoding", stats, bound);
    if let Ok(response) = response {
        assert_eq!(
            response.to_bytes(),
            input,
            "a decoded response re-encodes to other bytes"
        );
    }
}

fn check_alloc(what: &str, stats: AllocStats, bound: usize) {
    assert!(
        stats.largest <= bound && stats.peak <= bound,
        "{what} allocated {stats:?}, above the bound of {bound} bytes"
    );
}

/// Signed material shared by every input (signing is the slow part).
struct Pool {
    committee: Arc<Committee>,
    keys: Vec<KeyPair>,
    /// Certified headers by round (round 0 = genesis), authors 0..=2.
    certificates: Vec<Vec<Certificate>>,
    /// Per round, a second signed header by each of authors 0..=2 (equivocations).
    equivocations: Vec<Vec<SignedHeader>>,
    /// Every payload referenced above, by digest.
    payloads: BTreeMap<Digest, Payload>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let committee = testkit::committee(4);
        let keys = testkit::keys(4);
        let instance = committee.instance();
        let mut certificates = vec![committee
            .indices()
            .map(|a| Certificate::genesis(instance, a))
            .collect::<Vec<_>>()];
        let mut equivocations = vec![Vec::new()];
        let mut payloads = BTreeMap::new();
        for r in 1..=POOL_ROUNDS {
            let parents: Vec<ParentRef> = certificates[r as usize - 1]
                .iter()
                .map(|c| ParentRef {
                    author: c.author(),
                    digest: c.digest(),
                })
                .collect();
            let mut layer = Vec::new();
            let mut twins = Vec::new();
            for a in 0..3u16 {
                for variant in 0..2u8 {
                    let payload = Payload::from_transactions([&[r as u8, a as u8, variant][..]]);
                    let header = Header::new(
                        instance,
                        Round(r),
                        AuthorityIndex(a),
                        parents.clone(),
                        payload.reference(),
                        r * 10,
                    );
                    payloads.insert(payload.digest(), payload);
                    if variant == 0 {
                        layer.push(certify(&committee, &keys, header));
                    } else {
                        twins.push(testkit::sign_header(&keys[a as usize], header));
                    }
                }
            }
            certificates.push(layer);
            equivocations.push(twins);
        }
        Pool {
            committee,
            keys,
            certificates,
            equivocations,
            payloads,
        }
    })
}

/// A certificate on `header` with the votes of authorities 0..=2 (a quorum of 4; never the core
/// under test, whose key only it uses).
fn certify(committee: &Committee, keys: &[KeyPair], header: Header) -> Certificate {
    let votes: Vec<Vote> = (0..3u16)
        .map(|v| Vote {
            header_digest: header.digest(),
            voter: AuthorityIndex(v),
            signature: keys[v as usize]
                .sign(&vote_message(&committee.instance(), &header.digest())),
        })
        .collect();
    Certificate::from_votes(header, &votes)
}

/// The running core and what the checks remember about it.
struct Harness {
    core: Core,
    store: MemStore,
    verifier: Verifier,
    config: CoreConfig,
    now: u64,
    /// Digest → (author, round) of every header sent to the core.
    headers_sent: HashMap<Digest, (AuthorityIndex, Round)>,
    /// (author, round) → the header digest the core voted for.
    voted: HashMap<(AuthorityIndex, Round), Digest>,
    /// Round → digest of the core's own header.
    own: HashMap<Round, Digest>,
    /// The core's latest own header.
    last_own: Option<SignedHeader>,
    /// The committed sequence seen so far, by index.
    committed: BTreeMap<u64, CommittedEntry>,
    round: Round,
    consensus_index: u64,
}

impl Harness {
    fn new(config: CoreConfig) -> Harness {
        let p = pool();
        let mut store = MemStore::new();
        let core = Core::recover(
            p.committee.clone(),
            default_schedule(&p.committee),
            KeyPair::deterministic(0, ME),
            config.clone(),
            store.load().expect("memory store loads"),
        )
        .expect("an empty store recovers");
        Harness {
            core,
            store,
            verifier: Verifier::new(p.committee.clone(), VerifierConfig::default()),
            config,
            now: 1,
            headers_sent: HashMap::new(),
            voted: HashMap::new(),
            own: HashMap::new(),
            last_own: None,
            committed: BTreeMap::new(),
            round: Round(0),
            consensus_index: 0,
        }
    }

    /// Sends encoded bytes through decode, verify and handle, as the server does.
    fn send_bytes(&mut self, bytes: Bytes) {
        let limit = DECODE_ALLOC_FACTOR * bytes.len() + ALLOC_SLACK + HANDLE_ALLOC_BUDGET;
        assert!(limit < MAX_MESSAGE_BYTES, "requests here are small");
        let now = Millis(self.now);
        let verifier = &self.verifier;
        let core = &mut self.core;
        // The (author, round) of each header offered, read from the one decoding (a few bytes
        // per header, inside the allowance).
        let (outcome, stats) = measure(|| {
            let request = Request::from_bytes(bytes.clone()).ok()?;
            let offered: Vec<(Digest, (AuthorityIndex, Round))> = match &request.body {
                RequestBody::HeaderBundle { headers, .. } => headers
                    .iter()
                    .map(|h| (h.header.digest(), (h.header.author(), h.header.round())))
                    .collect(),
                _ => Vec::new(),
            };
            let handled = match verifier.verify(request) {
                Ok(v) => core.handle(now, v),
                Err(e) => (Response::Error(e), Default::default()),
            };
            Some((offered, handled))
        });
        check_alloc("decode + verify + handle", stats, limit);
        let Some((offered, (response, batch))) = outcome else {
            return;
        };
        self.headers_sent.extend(offered);
        self.store.commit(&[batch]).expect("memory store commits");
        // What the driver gets: the reply decodes, to a value with the same encoding (an
        // error's free-text `what` travels as a generic label, so compare encodings).
        let wire = response.to_bytes();
        match Response::from_bytes(wire.clone()) {
            Ok(decoded) => assert_eq!(decoded.to_bytes(), wire, "a reply decodes to another"),
            Err(e) => panic!("a reply its driver cannot decode: {e}"),
        }
        self.observe(&response);
        self.check_progress();
    }

    fn send(&mut self, body: RequestBody) {
        let request = Request {
            instance: pool().committee.instance(),
            body,
        };
        self.send_bytes(request.to_bytes());
    }

    fn observe(&mut self, response: &Response) {
        let (votes, summary) = match response {
            Response::Votes {
                votes,
                summary,
                rejected,
            } => {
                for (_, error) in rejected {
                    assert!(!error.to_string().is_empty(), "a rejection without a name");
                }
                (votes.as_slice(), Some(summary))
            }
            Response::Summary(s) => (&[][..], Some(s)),
            Response::Error(e) => {
                assert!(!e.to_string().is_empty(), "an error without a name");
                (&[][..], None)
            }
            _ => (&[][..], None),
        };
        let summary_votes = summary.map(|s| s.votes.as_slice()).unwrap_or_default();
        for vote in votes.iter().chain(summary_votes) {
            assert_eq!(vote.voter, AuthorityIndex(ME), "a vote by another");
            let Some(&key) = self.headers_sent.get(&vote.header_digest) else {
                continue;
            };
            let earlier = *self.voted.entry(key).or_insert(vote.header_digest);
            assert_eq!(
                earlier, vote.header_digest,
                "voted for two headers of author {} round {}",
                key.0, key.1
            );
        }
        if let Some(own) = summary.and_then(|s| s.own_header.as_ref()) {
            let round = own.header.round();
            let earlier = *self.own.entry(round).or_insert(own.header.digest());
            assert_eq!(
                earlier,
                own.header.digest(),
                "signed two own headers for {round}"
            );
            self.last_own = Some(own.clone());
        }
    }

    fn check_progress(&mut self) {
        let round = self.core.round();
        let index = self.core.consensus().consensus_index;
        assert!(
            round >= self.round,
            "round went back {} -> {round}",
            self.round
        );
        assert!(index >= self.consensus_index, "commit index went back");
        self.round = round;
        self.consensus_index = index;
        // The whole retained window, every step: entries seen before must not change, indices
        // are consecutive from the base, and the window ends at the commit index.
        let base = self.core.committed_base();
        let entries = self
            .core
            .committed_from(base, usize::MAX)
            .expect("the base is retained");
        for (k, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                base + k as u64,
                "committed indices not consecutive"
            );
            if let Some(earlier) = self.committed.insert(e.index, *e) {
                assert_eq!(earlier, *e, "committed entry {} changed", e.index);
            }
        }
        assert_eq!(
            base + entries.len() as u64,
            index,
            "the committed window does not end at the commit index"
        );
    }

    /// Stops the core and starts it again from its store: nothing it showed may change.
    fn restart(&mut self) {
        let p = pool();
        let before = visible_state(&self.core);
        self.core = Core::recover(
            p.committee.clone(),
            default_schedule(&p.committee),
            KeyPair::deterministic(0, ME),
            self.config.clone(),
            self.store.load().expect("memory store loads"),
        )
        .expect("a core recovers from its own store");
        let after = visible_state(&self.core);
        assert!(
            before == after,
            "the recovered core differs from the one that stopped"
        );
    }
}

/// What a core shows that a restart must preserve: its round, consensus state, committed window
/// and pending transactions.
type VisibleState = (
    Round,
    sleepyseal_core::tusk::ConsensusState,
    u64,
    Vec<CommittedEntry>,
    Vec<Bytes>,
);

fn visible_state(core: &Core) -> VisibleState {
    let mut pending = core.pending_transactions();
    pending.sort();
    (
        core.round(),
        core.consensus().clone(),
        core.committed_base(),
        core.committed_from(core.committed_base(), usize::MAX)
            .unwrap_or_default(),
        pending,
    )
}

/// Target 2: `data` drives a sequence of requests against one core (see the module docs).
pub fn core_handle(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let config = CoreConfig {
        gc_depth: u.int_in_range(1..=6).unwrap_or(3),
        retention_rounds: u.int_in_range(0..=4).unwrap_or(0),
        leader_timeout_ms: 50,
        vote_timeout_ms: 50,
        straggler_wait_ms: 20,
        committed_window_entries: u.int_in_range(4..=64).unwrap_or(16),
        batch_size_bytes: 1 << 10,
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        if step(&mut h, &mut u).is_err() {
            break;
        }
    }
    h.restart();
}

fn step(h: &mut Harness, u: &mut Unstructured) -> arbitrary::Result<()> {
    let p = pool();
    match u.int_in_range(0..=11u8)? {
        0 => h.send(RequestBody::GetState {
            with_payload: u.arbitrary()?,
        }),
        1 | 2 => {
            let body = header_bundle(h, u)?;
            h.send(body);
        }
        3 | 4 => {
            let body = cert_bundle(h, u)?;
            h.send(body);
        }
        5 => {
            let upto = u.int_in_range(1..=POOL_ROUNDS)? as usize;
            let mut certificates: Vec<Certificate> = p.certificates[1..=upto]
                .iter()
                .flatten()
                .filter(|_| u.ratio(7, 8).unwrap_or(true))
                .cloned()
                .collect();
            if u.arbitrary()? {
                shuffle(u, &mut certificates)?;
            }
            let payloads = payloads_of(u, certificates.iter().map(|c| &c.header))?;
            h.send(RequestBody::Sync {
                certificates,
                payloads,
            });
        }
        6 => {
            let n = if u.ratio(1, 8)? {
                u.int_in_range(0..=6)?
            } else {
                4
            };
            let mut after = Vec::new();
            for _ in 0..n {
                after.push(Round(u.int_in_range(0..=POOL_ROUNDS + 2)?));
            }
            h.send(RequestBody::Fetch {
                after,
                max_items: u.arbitrary()?,
                with_payloads: u.arbitrary()?,
            });
        }
        7 => {
            let mut digests: Vec<Digest> = p
                .payloads
                .keys()
                .filter(|_| u.ratio(1, 4).unwrap_or(false))
                .copied()
                .collect();
            digests.push(Digest(u.arbitrary()?));
            h.send(RequestBody::FetchPayloads { digests });
        }
        8 => {
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
            h.send(RequestBody::Submit { transactions });
        }
        9 => h.send(RequestBody::ReadCommitted {
            from_index: u.int_in_range(0..=200)?,
            max: u.arbitrary()?,
            with_payloads: u.arbitrary()?,
            wait_ms: u.arbitrary()?,
        }),
        10 => {
            // Byte-level: a structured request, encoded, then damaged.
            let body = if u.arbitrary()? {
                header_bundle(h, u)?
            } else {
                cert_bundle(h, u)?
            };
            let request = Request {
                instance: p.committee.instance(),
                body,
            };
            let mut bytes = request.to_bytes().to_vec();
            mutate(u, &mut bytes)?;
            h.send_bytes(Bytes::from(bytes));
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

/// Signed headers of one round to vote on: real ones, equivocations, the core's own, and headers
/// crafted (and validly signed) by authorities 0..=2.
fn header_bundle(h: &Harness, u: &mut Unstructured) -> arbitrary::Result<RequestBody> {
    let p = pool();
    let r = u.int_in_range(1..=POOL_ROUNDS)?;
    let mut headers = Vec::new();
    for c in &p.certificates[r as usize] {
        if u.ratio(3, 4)? {
            // The author's own signature is not in a certificate: re-sign (authors 0..=2).
            headers.push(testkit::sign_header(
                &p.keys[c.author().as_usize()],
                c.header.clone(),
            ));
        }
    }
    for twin in &p.equivocations[r as usize] {
        if u.ratio(1, 6)? {
            headers.push(twin.clone());
        }
    }
    if let Some(own) = &h.last_own {
        if u.ratio(1, 2)? {
            headers.push(own.clone());
        }
    }
    if u.ratio(1, 3)? {
        headers.push(crafted_header(h, u, Round(r))?);
    }
    if u.ratio(1, 8)? && !headers.is_empty() {
        let i = u.choose_index(headers.len())?;
        headers[i].signature.0[u.int_in_range(0..=63usize)?] ^= 1 << u.int_in_range(0..=7u8)?;
    }
    if u.ratio(1, 8)? && !headers.is_empty() {
        let i = u.choose_index(headers.len())?;
        headers.push(headers[i].clone());
    }
    let round = if u.ratio(1, 10)? {
        Round(u.int_in_range(0..=POOL_ROUNDS + 3)?)
    } else {
        headers.first().map_or(Round(r), |s| s.header.round())
    };
    let parents = p.certificates[r as usize - 1]
        .iter()
        .filter(|_| u.ratio(1, 2).unwrap_or(false))
        .cloned()
        .collect();
    let mut payloads = payloads_of(u, headers.iter().map(|s| &s.header))?;
    if let Some(own) = &h.last_own {
        if let Some(payload) = h.core.payload(&own.header.payload().digest) {
            payloads.push(payload.clone());
        }
    }
    if u.ratio(1, 10)? {
        payloads.push(Payload::new(Bytes::from(vec![
            0xab;
            u.int_in_range(0..=64)?
        ])));
    }
    payloads.sort_by_key(|p| p.digest());
    payloads.dedup_by_key(|p| p.digest());
    Ok(RequestBody::HeaderBundle {
        round,
        headers,
        parents,
        payloads,
    })
}

/// A header by one of authorities 0..=2, validly signed, wrong in one way.
fn crafted_header(h: &Harness, u: &mut Unstructured, r: Round) -> arbitrary::Result<SignedHeader> {
    let p = pool();
    let author = AuthorityIndex(u.int_in_range(0..=2)?);
    let previous = &p.certificates[r.0 as usize - 1];
    let mut parents: Vec<ParentRef> = previous
        .iter()
        .map(|c| ParentRef {
            author: c.author(),
            digest: c.digest(),
        })
        .collect();
    let payload = Payload::from_transactions([&[0xee, author.0 as u8][..]]);
    let mut payload_ref = payload.reference();
    let mut round = r;
    let mut instance = p.committee.instance();
    match u.int_in_range(0..=9u8)? {
        0 => round = Round(r.0 + u.int_in_range(2..=1_000_000u64)?),
        1 => round = Round(u64::MAX - u.int_in_range(0..=2u64)?),
        2 => round = Round(r.0.saturating_sub(u.int_in_range(1..=3)?)),
        3 => {
            parents.truncate(u.int_in_range(0..=2)?);
        }
        4 => {
            let i = u.choose_index(parents.len())?;
            parents[i].digest = Digest(u.arbitrary()?);
        }
        5 => {
            let i = u.choose_index(parents.len())?;
            parents.push(parents[i]);
        }
        6 => {
            parents.push(ParentRef {
                author: AuthorityIndex(u.int_in_range(4..=u16::MAX)?),
                digest: Digest(u.arbitrary()?),
            });
        }
        7 => {
            payload_ref.len =
                (MAX_PAYLOAD_BYTES as u32).saturating_add(u.arbitrary::<u16>()?.into())
        }
        8 => {
            payload_ref = PayloadRef {
                digest: Digest(u.arbitrary()?),
                len: u.arbitrary::<u16>()?.into(),
            }
        }
        _ => instance = Digest(u.arbitrary()?),
    }
    // Parents of the core's own latest header, so a crafted header can sit on its DAG too.
    if u.ratio(1, 6)? {
        if let Some(own) = &h.last_own {
            parents = own.header.parents().to_vec();
            round = own.header.round();
        }
    }
    let header = Header::new(
        instance,
        round,
        author,
        parents,
        payload_ref,
        u.arbitrary()?,
    );
    Ok(testkit::sign_header(&p.keys[author.as_usize()], header))
}

/// Certificates of one round, with parents and payloads; sometimes the core's own header
/// certified, sometimes a damaged certificate.
fn cert_bundle(h: &Harness, u: &mut Unstructured) -> arbitrary::Result<RequestBody> {
    let p = pool();
    let r = u.int_in_range(1..=POOL_ROUNDS)?;
    let mut certificates: Vec<Certificate> = p.certificates[r as usize]
        .iter()
        .filter(|_| u.ratio(3, 4).unwrap_or(true))
        .cloned()
        .collect();
    if let Some(own) = &h.last_own {
        if u.ratio(1, 2)? {
            certificates.push(certify(&p.committee, &p.keys, own.header.clone()));
        }
    }
    if u.ratio(1, 6)? && !certificates.is_empty() {
        let i = u.choose_index(certificates.len())?;
        let c = &mut certificates[i];
        match u.int_in_range(0..=4u8)? {
            0 => {
                c.signers.pop();
                c.signatures.pop();
            }
            1 => {
                c.signers.push(c.signers[0]);
                c.signatures.push(c.signatures[0]);
            }
            2 => c.signatures[0] = Signature([u.arbitrary::<u8>()?; 64]),
            3 => {
                c.signers.push(AuthorityIndex(u.int_in_range(4..=9)?));
                c.signatures.push(c.signatures[0]);
            }
            _ => {
                c.signatures.pop();
            }
        }
    }
    if u.ratio(1, 8)? && !certificates.is_empty() {
        let i = u.choose_index(certificates.len())?;
        certificates.push(certificates[i].clone());
    }
    let round = if u.ratio(1, 10)? {
        Round(u.int_in_range(0..=POOL_ROUNDS + 3)?)
    } else {
        certificates.first().map_or(Round(r), |c| c.round())
    };
    let parents = if u.arbitrary()? {
        let from = u.int_in_range(1..=r)? as usize;
        p.certificates[from..r as usize]
            .iter()
            .flatten()
            .filter(|_| u.ratio(3, 4).unwrap_or(true))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    let mut payloads = payloads_of(
        u,
        certificates
            .iter()
            .chain(&parents)
            .map(|c: &Certificate| &c.header),
    )?;
    payloads.sort_by_key(|p| p.digest());
    payloads.dedup_by_key(|p| p.digest());
    Ok(RequestBody::CertBundle {
        round,
        certificates,
        parents,
        payloads,
    })
}

/// Most of the pool payloads of `headers`; sometimes one whose bytes do not match its header.
fn payloads_of<'a>(
    u: &mut Unstructured,
    headers: impl Iterator<Item = &'a Header>,
) -> arbitrary::Result<Vec<Payload>> {
    let p = pool();
    let mut out = Vec::new();
    for header in headers {
        if let Some(payload) = p.payloads.get(&header.payload().digest) {
            if u.ratio(4, 5)? {
                out.push(payload.clone());
            }
        }
    }
    Ok(out)
}

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
