//! End-to-end: real `sleepyseal` processes on 127.0.0.1 (genesis, four cores, drivers, load), each
//! test bounded in time. What is checked is what a user depends on: every acknowledged
//! transaction commits exactly once at every core, all cores agree on `commit_hash` at every
//! common index, a core killed with SIGKILL comes back from its store, catches up and never signs
//! two headers for one round, and progress survives the loss of a driver.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sleepyseal_core::protocol::{CommittedEntry, CommittedView, Request, RequestBody, Response};
use sleepyseal_core::{AuthorityIndex, CoreError, Digest, Round};
use sleepyseal_net::{Clients, NetLimits, Testbed};

const BIN: &str = env!("CARGO_BIN_EXE_sleepyseal");

/// A core's committed sequence, each entry with its transactions as (client id, sequence number).
type Sequence = Vec<(CommittedEntry, Vec<(u64, u64)>)>;

/// One read of a core's committed sequence: its entries, and the transactions of the payloads
/// it returned. A core may hold a committed certificate before its payload, so an entry's
/// transactions may have to come from another core (the digest binds the content).
struct CoreRead {
    /// Index of the first entry read: 0, or the base of a core that installed a checkpoint
    /// (its reads below it skip forward).
    first: u64,
    entries: Vec<CommittedEntry>,
    transactions: HashMap<Digest, Vec<(u64, u64)>>,
}

impl CoreRead {
    /// The sequence with every entry's transactions, taken from `known` (every payload any core
    /// returned), or `None` while some payload is held by no core that answered.
    fn sequence(&self, known: &HashMap<Digest, Vec<(u64, u64)>>) -> Option<Sequence> {
        self.entries
            .iter()
            .map(|e| {
                let txs = if e.payload.len == 0 {
                    Vec::new()
                } else {
                    known.get(&e.payload.digest)?.clone()
                };
                Some((*e, txs))
            })
            .collect()
    }

    /// Entries whose payload this core did not return.
    fn without_payload(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.payload.len > 0 && !self.transactions.contains_key(&e.payload.digest))
            .count()
    }
}
const CORES: usize = 4;

/// The processes of one testbed; all are killed when it is dropped.
struct Cluster {
    dir: PathBuf,
    testbed: Testbed,
    cores: Vec<Option<Child>>,
    drivers: Vec<Option<Child>>,
    runtime: tokio::runtime::Runtime,
    clients: Clients,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.cores.iter_mut().chain(&mut self.drivers).flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("logs kept in {}", self.dir.display());
        }
    }
}

/// A base port with `CORES` consecutive free UDP ports after it.
fn free_ports() -> u16 {
    let seed = std::process::id() as u64 * 7919
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    for attempt in 0..1_000u64 {
        let base = 20_000 + ((seed + attempt * 131) % 30_000) as u16;
        let all_free = (0..CORES as u16).all(|i| UdpSocket::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free ports");
}

impl Cluster {
    fn new(name: &str) -> Cluster {
        let dir =
            std::env::temp_dir().join(format!("sleepyseal-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_ports();
        let status = Command::new(BIN)
            .args([
                "genesis",
                "--cores",
                "4",
                "--base-port",
                &port.to_string(),
                "--dir",
            ])
            .arg(dir.join("testbed"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "genesis failed");
        let testbed = sleepyseal_net::load_testbed(&dir.join("testbed/committee.json")).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let clients = runtime
            .block_on(async { Clients::new(&testbed, NetLimits::default()) })
            .unwrap();
        let mut cluster = Cluster {
            dir,
            testbed,
            cores: (0..CORES).map(|_| None).collect(),
            drivers: Vec::new(),
            runtime,
            clients,
        };
        for i in 0..CORES {
            cluster.start_core(i);
        }
        wait_until("every core answers", Duration::from_secs(30), || {
            (0..CORES).all(|i| cluster.summary(i).is_some())
        });
        cluster
    }

    fn committee_path(&self) -> PathBuf {
        self.dir.join("testbed/committee.json")
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .unwrap()
    }

    fn start_core(&mut self, i: usize) {
        let child = Command::new(BIN)
            .arg("core")
            .arg("--committee")
            .arg(self.committee_path())
            .arg("--key")
            .arg(self.dir.join(format!("testbed/core-{i}.key")))
            .arg("--store")
            .arg(self.dir.join(format!("store-{i}")))
            .args(["--log-every-s", "1"])
            .stdout(Stdio::null())
            .stderr(self.log(&format!("core-{i}")))
            .spawn()
            .unwrap();
        self.cores[i] = Some(child);
    }

    /// SIGKILL: no chance to flush anything.
    fn kill_core(&mut self, i: usize) {
        let mut child = self.cores[i].take().expect("core running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn start_driver(&mut self) -> usize {
        let n = self.drivers.len();
        let child = Command::new(BIN)
            .arg("driver")
            .arg("--committee")
            .arg(self.committee_path())
            .args(["--log-every-s", "1"])
            .stdout(Stdio::null())
            .stderr(self.log(&format!("driver-{n}")))
            .spawn()
            .unwrap();
        self.drivers.push(Some(child));
        n
    }

    fn kill_driver(&mut self, n: usize) {
        let mut child = self.drivers[n].take().expect("driver running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Runs `sleepyseal load` in the background; the handle yields the acknowledged transactions
    /// as (client id, sequence number).
    fn load(
        &self,
        client_id: u64,
        rate: u64,
        seconds: u64,
    ) -> std::thread::JoinHandle<Vec<(u64, u64)>> {
        let acked = self.dir.join(format!("acked-{client_id}.txt"));
        let mut command = Command::new(BIN);
        command
            .arg("load")
            .arg("--committee")
            .arg(self.committee_path())
            .args(["--rate", &rate.to_string()])
            .args(["--duration", &seconds.to_string()])
            .args(["--tx-size", "64", "--json"])
            .args(["--client-id", &client_id.to_string()])
            .arg("--acked-out")
            .arg(&acked)
            .stderr(self.log(&format!("load-{client_id}")));
        std::thread::spawn(move || {
            let out = command.output().unwrap();
            assert!(out.status.success(), "load failed");
            let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let ranges = std::fs::read_to_string(&acked).unwrap();
            let ids: Vec<(u64, u64)> = ranges
                .lines()
                .flat_map(|line| {
                    let mut parts = line.split(' ').map(|x| x.parse::<u64>().unwrap());
                    let (a, b) = (parts.next().unwrap(), parts.next().unwrap());
                    (a..=b).map(move |k| (client_id, k))
                })
                .collect();
            assert_eq!(ids.len() as u64, summary["accepted"].as_u64().unwrap());
            ids
        })
    }

    /// The whole committed sequence of core `i`, and the transactions (client id, sequence) of
    /// every payload it returned, by digest; `None` if the core does not answer.
    fn committed(&self, i: usize) -> Option<CoreRead> {
        let instance = self.testbed.committee.instance();
        let client = self.clients.core(AuthorityIndex(i as u16)).clone();
        self.runtime.block_on(async move {
            let mut entries = Vec::new();
            let mut transactions = HashMap::new();
            let mut first = 0;
            loop {
                let request = Request {
                    instance,
                    body: RequestBody::ReadCommitted {
                        from_index: first + entries.len() as u64,
                        max: 1_024,
                        view: CommittedView::Payloads,
                        wait_ms: 0,
                    },
                };
                let reply = client
                    .request(&request, Duration::from_secs(5))
                    .await
                    .ok()?;
                if let Response::Error(CoreError::CommittedEvicted { first_index }) = reply {
                    if entries.is_empty() && first_index > first {
                        first = first_index;
                        continue;
                    }
                    return None;
                }
                let Response::Committed {
                    entries: read,
                    payloads,
                    ..
                } = reply
                else {
                    return None;
                };
                if read.is_empty() {
                    return Some(CoreRead {
                        first,
                        entries,
                        transactions,
                    });
                }
                for p in payloads {
                    let ids = p
                        .transactions()
                        .unwrap()
                        .iter()
                        .map(|t| {
                            (
                                u64::from_le_bytes(t[..8].try_into().unwrap()),
                                u64::from_le_bytes(t[8..16].try_into().unwrap()),
                            )
                        })
                        .collect();
                    transactions.insert(p.digest(), ids);
                }
                entries.extend(read);
            }
        })
    }

    fn summary(&self, i: usize) -> Option<sleepyseal_core::Summary> {
        let request = Request {
            instance: self.testbed.committee.instance(),
            body: RequestBody::GetState {
                with_payload: false,
            },
        };
        let client = self.clients.core(AuthorityIndex(i as u16)).clone();
        match self
            .runtime
            .block_on(async move { client.request(&request, Duration::from_secs(2)).await })
        {
            Ok(Response::Summary(s)) => Some(*s),
            _ => None,
        }
    }

    fn last_committed_round(&self, i: usize) -> Option<Round> {
        self.summary(i).map(|s| s.last_committed_round)
    }

    /// Waits until every running core committed every acknowledged transaction, then checks
    /// exactly-once and `commit_hash` agreement.
    fn check_all_committed(&self, acknowledged: &[(u64, u64)], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let reads: Vec<(usize, Option<CoreRead>)> = (0..CORES)
                .filter(|i| self.cores[*i].is_some())
                .map(|i| (i, self.committed(i)))
                .collect();
            let known: HashMap<Digest, Vec<(u64, u64)>> = reads
                .iter()
                .filter_map(|(_, r)| r.as_ref())
                .flat_map(|r| r.transactions.iter().map(|(d, t)| (*d, t.clone())))
                .collect();
            let sequences: Vec<(usize, Option<Sequence>)> = reads
                .iter()
                .map(|(i, r)| (*i, r.as_ref().and_then(|r| r.sequence(&known))))
                .collect();
            let complete = sequences.iter().all(|(_, s)| {
                s.as_ref().is_some_and(|s| {
                    let seen: HashSet<(u64, u64)> =
                        s.iter().flat_map(|(_, t)| t.iter().copied()).collect();
                    acknowledged.iter().all(|id| seen.contains(id))
                })
            });
            if complete {
                let sequences: Vec<(usize, Vec<_>)> = sequences
                    .into_iter()
                    .map(|(i, s)| (i, s.unwrap()))
                    .collect();
                assert_agreement(&sequences);
                for (i, s) in &sequences {
                    assert_exactly_once(*i, s, acknowledged);
                }
                return;
            }
            if Instant::now() >= deadline {
                for ((i, s), (_, read)) in sequences.iter().zip(&reads) {
                    match read {
                        None => eprintln!("core {i}: no answer"),
                        Some(r) => eprintln!(
                            "core {i}: {} entries, {} without their payload at this core",
                            r.entries.len(),
                            r.without_payload()
                        ),
                    }
                    let Some(s) = s else {
                        continue;
                    };
                    let seen: HashSet<(u64, u64)> =
                        s.iter().flat_map(|(_, t)| t.iter().copied()).collect();
                    let missing: Vec<&(u64, u64)> = acknowledged
                        .iter()
                        .filter(|id| !seen.contains(id))
                        .take(30)
                        .collect();
                    eprintln!("core {i}: {} entries, missing {missing:?}", s.len());
                }
                panic!(
                    "not every acknowledged transaction committed at every core within {within:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn assert_clean_shutdown(&mut self) {
        for (i, child) in self.cores.iter_mut().enumerate() {
            if let Some(mut c) = child.take() {
                let pid = c.id().to_string();
                Command::new("kill").args(["-TERM", &pid]).status().unwrap();
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    if let Some(status) = c.try_wait().unwrap() {
                        assert!(status.success(), "core {i} exited with {status}");
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "core {i} did not stop on SIGTERM"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

/// All cores hold the same entry and `commit_hash` at every common index.
fn assert_agreement(sequences: &[(usize, Sequence)]) {
    let (first, reference) = &sequences[0];
    for (i, s) in &sequences[1..] {
        let common = reference.len().min(s.len());
        for k in 0..common {
            assert_eq!(
                (reference[k].0.digest, reference[k].0.commit_hash),
                (s[k].0.digest, s[k].0.commit_hash),
                "cores {first} and {i} disagree at index {k}"
            );
        }
    }
}

/// No transaction appears twice; each acknowledged one appears.
fn assert_exactly_once(
    core: usize,
    sequence: &[(CommittedEntry, Vec<(u64, u64)>)],
    acknowledged: &[(u64, u64)],
) {
    let mut seen = HashSet::new();
    for (client, sequence_number) in sequence.iter().flat_map(|(_, t)| t) {
        assert!(
            seen.insert((*client, *sequence_number)),
            "core {core}: transaction ({client}, {sequence_number}) committed twice"
        );
    }
    for id in acknowledged {
        assert!(
            seen.contains(id),
            "core {core}: acknowledged {id:?} not committed"
        );
    }
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

fn min_committed(c: &Cluster) -> u64 {
    (0..CORES)
        .filter(|i| c.cores[*i].is_some())
        .map(|i| c.last_committed_round(i).map_or(0, |r| r.0))
        .min()
        .unwrap_or(0)
}

#[test]
fn four_cores_one_driver_every_transaction_commits_everywhere() {
    let mut c = Cluster::new("basic");
    c.start_driver();
    let load = c.load(1, 2_000, 5);
    let acknowledged = load.join().unwrap();
    assert!(acknowledged.len() >= 9_000, "{}", acknowledged.len());
    c.check_all_committed(&acknowledged, Duration::from_secs(30));
    c.assert_clean_shutdown();
}

#[test]
fn a_core_killed_with_sigkill_restarts_from_its_store_and_catches_up() {
    let mut c = Cluster::new("restart");
    c.start_driver();
    wait_until("first commits", Duration::from_secs(20), || {
        min_committed(&c) >= 4
    });
    // Record every own header core 2 reports, before and after its crash.
    let own: Arc<Mutex<BTreeMap<Round, Digest>>> = Arc::default();
    let conflict = Arc::new(AtomicBool::new(false));
    let load = c.load(7, 1_000, 8);
    std::thread::sleep(Duration::from_secs(2));
    record_own_headers(&c, 2, &own, &conflict);
    c.kill_core(2);
    let others_at_kill = min_committed(&c);
    std::thread::sleep(Duration::from_secs(2));
    c.start_core(2);
    // Caught up: within 2 rounds of the others.
    let catch_up = wait_until("restarted core caught up", Duration::from_secs(30), || {
        record_own_headers(&c, 2, &own, &conflict);
        let others = [0, 1, 3]
            .iter()
            .filter_map(|i| c.last_committed_round(*i))
            .min()
            .unwrap_or_default();
        c.last_committed_round(2)
            .is_some_and(|r| r.0 + 2 >= others.0 && others.0 > others_at_kill)
    });
    eprintln!(
        "restarted core caught up {:.2} s after its restart",
        catch_up.as_secs_f64()
    );
    let acknowledged = load.join().unwrap();
    c.check_all_committed(&acknowledged, Duration::from_secs(30));
    record_own_headers(&c, 2, &own, &conflict);
    assert!(
        !conflict.load(Ordering::SeqCst),
        "core 2 signed two headers for one round"
    );
    assert!(own.lock().unwrap().len() >= 2);
    c.assert_clean_shutdown();
}

/// Polls core `i` and records its own header per round; flags a second digest for a round.
fn record_own_headers(
    c: &Cluster,
    i: usize,
    own: &Mutex<BTreeMap<Round, Digest>>,
    conflict: &AtomicBool,
) {
    if let Some(s) = c.summary(i) {
        if let Some(h) = s.own_header {
            let digest = h.header.digest();
            let mut own = own.lock().unwrap();
            if *own.entry(h.header.round()).or_insert(digest) != digest {
                conflict.store(true, Ordering::SeqCst);
            }
        }
    }
}

#[test]
fn progress_survives_a_killed_driver_and_two_drivers_are_safe() {
    let mut c = Cluster::new("drivers");
    let first = c.start_driver();
    wait_until("first commits", Duration::from_secs(20), || {
        min_committed(&c) >= 4
    });
    let load = c.load(3, 1_000, 10);
    std::thread::sleep(Duration::from_secs(1));
    c.kill_driver(first);
    // Without a driver nothing moves.
    let stalled = min_committed(&c);
    std::thread::sleep(Duration::from_millis(800));
    assert!(min_committed(&c) <= stalled + 2);
    // A new driver resumes; a second one joins.
    c.start_driver();
    let resumed = wait_until("progress resumed", Duration::from_secs(20), || {
        min_committed(&c) >= stalled + 6
    });
    eprintln!(
        "progress resumed {:.2} s after the new driver started",
        resumed.as_secs_f64()
    );
    c.start_driver();
    let with_two = min_committed(&c);
    wait_until("progress with two drivers", Duration::from_secs(20), || {
        min_committed(&c) >= with_two + 10
    });
    let acknowledged = load.join().unwrap();
    c.check_all_committed(&acknowledged, Duration::from_secs(30));
    c.assert_clean_shutdown();
}

/// Runs `sleepyseal` with `args` to its exit (at most 30 s): whether it succeeded, and its
/// standard error.
fn run_to_exit(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("sleepyseal {args:?} still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.success(), stderr)
}

/// GC_DEPTH and CHECKPOINT_INTERVAL are the committee's (PROTOCOL.md §4.6): a core refuses a
/// command-line value other than the committee's, and a committee file whose depth was edited
/// after genesis, with errors that say what to do; nothing is written to its store.
#[test]
fn a_core_refuses_protocol_constants_other_than_the_committees() {
    let dir = std::env::temp_dir().join(format!("sleepyseal-e2e-constants-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let testbed = dir.join("testbed");
    let os = |s: &str| std::ffi::OsString::from(s);
    let (ok, err) = run_to_exit(&[
        &os("genesis"),
        &os("--dir"),
        testbed.as_os_str(),
        &os("--gc-depth"),
        &os("20"),
        &os("--checkpoint-interval"),
        &os("40"),
    ]);
    assert!(ok, "genesis failed: {err}");
    let committee = testbed.join("committee.json");
    let key = testbed.join("core-0.key");
    let store = dir.join("store-0");
    let core = |extra: &[&str]| {
        let mut args = vec![
            os("core"),
            os("--committee"),
            committee.clone().into_os_string(),
            os("--key"),
            key.clone().into_os_string(),
            os("--store"),
            store.clone().into_os_string(),
            // Bounded, should the refusal ever be missing.
            os("--stop-at-us"),
            os(&(std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros()
                + 10_000_000)
                .to_string()),
        ];
        args.extend(extra.iter().map(|s| os(s)));
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        run_to_exit(&refs)
    };
    let (ok, err) = core(&["--gc-depth", "50"]);
    assert!(!ok, "a core started with another --gc-depth");
    assert!(
        err.contains("--gc-depth 50 differs from the committee's 20"),
        "{err}"
    );
    let (ok, err) = core(&["--checkpoint-interval", "100"]);
    assert!(!ok, "a core started with another --checkpoint-interval");
    assert!(err.contains("differs from the committee's 40"), "{err}");
    assert!(!store.exists(), "a refused core touched its store");

    let text = std::fs::read_to_string(&committee).unwrap();
    std::fs::write(
        &committee,
        text.replace("\"gc_depth\": 20", "\"gc_depth\": 50"),
    )
    .unwrap();
    let (ok, err) = core(&[]);
    assert!(!ok, "a core started from an edited committee file");
    assert!(err.contains("does not match"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// PROTOCOL.md §8a, with real processes: a core killed with SIGKILL under load and started
/// again 30 s later, far beyond what the others retain (GC_DEPTH + retention rounds, about a
/// second here) and the driver's cache, comes back through a certified checkpoint: within 2
/// rounds of the others within 20 s, the same entry and `commit_hash` as the others at every
/// index both hold, and every acknowledged transaction committed exactly once in the sequence.
#[test]
fn a_core_away_30_s_under_load_rejoins_through_a_checkpoint() {
    let mut c = Cluster::new("rejoin");
    c.start_driver();
    let load = c.load(1, 2_000, 45);
    wait_until("first commits", Duration::from_secs(20), || {
        min_committed(&c) >= 10
    });
    c.kill_core(3);
    let away_from = c.last_committed_round(0).map_or(0, |r| r.0);
    std::thread::sleep(Duration::from_secs(30));
    let others = c.last_committed_round(0).map_or(0, |r| r.0);
    assert!(
        others > away_from + 500,
        "the others moved on by {} rounds only: the outage tests nothing",
        others - away_from
    );
    c.start_core(3);
    let top = |c: &Cluster| (0..3).filter_map(|i| c.summary(i)).map(|s| s.round.0).max();
    let took = wait_until(
        "core 3 back within 2 rounds",
        Duration::from_secs(20),
        || match (c.summary(3), top(&c)) {
            (Some(s), Some(top)) => s.round.0 + 2 >= top,
            _ => false,
        },
    );
    eprintln!("core 3 back within 2 rounds of the others {took:?} after its restart");
    // The gap its install left is filled in the background, verified down the commit chain.
    let filled = wait_until("core 3's gap filled", Duration::from_secs(20), || {
        c.summary(3).is_some_and(|s| s.gap.is_none())
    });
    eprintln!("core 3's gap filled {filled:?} after it was back");
    let log = std::fs::read_to_string(c.dir.join("core-3.log")).unwrap();
    assert!(
        log.contains("installed a certified checkpoint") && log.contains("gap filled"),
        "core 3 rejoined without a checkpoint, or did not say so"
    );
    let acknowledged = load.join().unwrap();
    assert!(acknowledged.len() > 40_000, "{}", acknowledged.len());
    // Agreement at every index, the filled gap of the rejoined core included: it serves its
    // whole sequence again.
    std::thread::sleep(Duration::from_secs(3));
    let reads: Vec<(usize, CoreRead)> = (0..CORES)
        .map(|i| (i, c.committed(i).expect("every core answers")))
        .collect();
    assert_eq!(reads[3].1.first, 0, "core 3 serves its whole sequence");
    for (i, r) in &reads[1..] {
        let reference = &reads[0].1;
        let from = r.first.max(reference.first);
        let to = (r.first + r.entries.len() as u64).min(reference.entries.len() as u64);
        assert!(to > from + 100, "core {i}: too few common entries");
        for k in from..to {
            let (a, b) = (
                &reference.entries[(k - reference.first) as usize],
                &r.entries[(k - r.first) as usize],
            );
            assert_eq!(
                (a.digest, a.commit_hash),
                (b.digest, b.commit_hash),
                "cores 0 and {i} disagree at index {k}"
            );
        }
    }
    // Exactly once in the one committed sequence (core 0's holds the gap).
    let known: HashMap<Digest, Vec<(u64, u64)>> = reads
        .iter()
        .flat_map(|(_, r)| r.transactions.iter().map(|(d, t)| (*d, t.clone())))
        .collect();
    wait_until(
        "every acknowledged transaction committed",
        Duration::from_secs(30),
        || {
            let Some(sequence) = c.committed(0).and_then(|r| r.sequence(&known)) else {
                return false;
            };
            let seen: HashSet<(u64, u64)> = sequence
                .iter()
                .flat_map(|(_, t)| t.iter().copied())
                .collect();
            acknowledged.iter().all(|id| seen.contains(id))
        },
    );
    let reference = c.committed(0).unwrap();
    let known: HashMap<Digest, Vec<(u64, u64)>> = known
        .into_iter()
        .chain(reference.transactions.clone())
        .collect();
    assert_exactly_once(0, &reference.sequence(&known).unwrap(), &acknowledged);
    let rejoined = c.committed(3).unwrap();
    assert_exactly_once(3, &rejoined.sequence(&known).unwrap(), &acknowledged);
    c.assert_clean_shutdown();
}
