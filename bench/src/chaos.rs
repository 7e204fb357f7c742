//! `sleepyseal local --chaos`: real-process perturbation with a workload check.
//!
//! Four cores (or `--cores`), at least two drivers and a load client run on 127.0.0.1 while the
//! harness, in turn: kills each core with SIGKILL and restarts it from its store; freezes a core
//! with SIGSTOP for 10 s and thaws it; kills a driver mid-run and starts a new one; restarts every
//! core one after another (SIGTERM, then start again). After each perturbation of a core it times
//! how long that core takes to get back within 2 rounds of the others.
//!
//! Throughout, one watcher per core follows its committed sequence (entries and transactions) and
//! a poller records every own header each core reports. At the end the harness checks:
//! - equal `commit_hash` at every index committed by more than one core;
//! - every transaction a core acknowledged is committed exactly once (workload check);
//! - no core signed two different headers for one round.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use sleepyseal_core::protocol::{Request, RequestBody, Response};
use sleepyseal_core::{AuthorityIndex, CoreError, Digest, Round};
use sleepyseal_net::{Clients, GenesisOptions, NetLimits};

use crate::client::parse_transaction;
use crate::local::{claim_ports, spawn_core, spawn_driver, wait_ready, LocalArgs};
use crate::procs::{Kind, Proc};

/// How far behind the others (in rounds) a perturbed core may be and count as recovered.
const RECOVERED_WITHIN_ROUNDS: u64 = 2;
/// Rounds the cores of a chaos run retain below gc_round for lagging cores (~30 s at 100 rounds/s).
const CHAOS_RETENTION_ROUNDS: u64 = 3_000;
/// Longest wait for a perturbed core to recover before the step is marked failed.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);

/// One committed entry as a watcher saw it.
#[derive(Clone, Debug)]
struct Seen {
    commit_hash: Digest,
    /// (client id, sequence) of its transactions.
    transactions: Vec<(u64, u64)>,
}

/// What the watchers and the poller collected.
#[derive(Default)]
struct Collected {
    /// Per core: index → entry.
    sequences: Vec<BTreeMap<u64, Seen>>,
    /// Per core: entries skipped because the core had evicted them.
    evicted: Vec<u64>,
    /// (author, round) → digests of own headers reported.
    own_headers: HashMap<(u16, u64), Vec<Digest>>,
    /// Header digest → (author, round), from polled own headers and fetched certificates.
    slots: HashMap<Digest, (u16, u64)>,
    /// (voter, header digest) of every vote seen: in polled summaries, and as a signer of a
    /// certificate fetched from any core at the end.
    votes: HashSet<(u16, Digest)>,
}

/// One perturbation and how the system took it.
#[derive(Serialize, Debug)]
struct Step {
    what: String,
    /// Seconds until the perturbed core was within 2 rounds of the others (or, for a driver,
    /// until commits resumed).
    recovery_s: Option<f64>,
}

/// The chaos report.
#[derive(Serialize, Debug)]
struct ChaosReport {
    cores: usize,
    drivers: usize,
    rate: u64,
    steps: Vec<Step>,
    max_recovery_s: f64,
    steps_not_recovered: usize,
    common_indices_checked: u64,
    commit_hash_mismatches: u64,
    acknowledged: u64,
    acknowledged_committed_once: u64,
    acknowledged_lost: u64,
    duplicated: u64,
    double_signed_rounds: u64,
    /// Votes seen whose header's (author, round) is known.
    votes_checked: u64,
    /// (voter, author, round) with votes for two different headers.
    double_votes: u64,
    evicted_entries: u64,
    wall_s: f64,
}

/// Runs the chaos scenario; fails if any check fails.
pub fn main(args: LocalArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let n = args.cores;
    if n < 4 {
        bail!("--chaos needs at least 4 cores (one may be down at a time)");
    }
    let drivers = args.drivers.max(2);
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("results").join(format!(
            "chaos-{}",
            crate::client::unix_micros() / 1_000_000
        ))
    });
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs)?;
    let testbed_dir = out.join("testbed");
    if testbed_dir.exists() {
        std::fs::remove_dir_all(&testbed_dir)?;
    }
    let (core_metrics, driver_metrics) = claim_ports(args.base_port, n, drivers)?;
    let committee_path = sleepyseal_net::genesis(
        &testbed_dir,
        &GenesisOptions {
            stakes: args.stakes.clone().unwrap_or_else(|| vec![1; n]),
            host: "127.0.0.1".into(),
            base_port: args.base_port,
            seed: Some(7),
        },
    )?;
    let committee = committee_path.display().to_string();
    let testbed = sleepyseal_net::load_testbed(&committee_path)?;
    let instance = testbed.committee.instance();
    let rt = crate::node::runtime("harness")?;
    // A window large enough that no committed entry is evicted before the watchers read it, and
    // a retention long enough to serve a core frozen for 10 s (there are no checkpoints yet: a
    // core further behind than the others retain cannot catch up).
    let extra = vec![
        "--committed-window-bytes=1073741824".to_string(),
        format!("--retention-rounds={CHAOS_RETENTION_ROUNDS}"),
    ];
    let start_core = |i: usize| {
        spawn_core(
            &args,
            &committee,
            &testbed_dir,
            &logs,
            i,
            core_metrics[i],
            &extra,
        )
    };
    let mut cores: Vec<Proc> = (0..n).map(start_core).collect::<Result<_, _>>()?;
    let clients = Arc::new(rt.block_on(async { Clients::new(&testbed, NetLimits::default()) })?);
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..n {
        wait_ready(&rt, &clients, instance, i, deadline, || None)?;
    }
    let mut driver_procs: Vec<Proc> = (0..drivers)
        .map(|j| spawn_driver(&args, &committee, &logs, j, driver_metrics[j]))
        .collect::<Result<_, _>>()?;

    let collected = Arc::new(Mutex::new(Collected {
        sequences: vec![BTreeMap::new(); n],
        evicted: vec![0; n],
        ..Collected::default()
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..n {
        tasks.push(rt.spawn(follow(
            clients.clone(),
            instance,
            i,
            collected.clone(),
            stop.clone(),
        )));
    }
    tasks.push(rt.spawn(poll_own_headers(
        clients.clone(),
        instance,
        n,
        collected.clone(),
        stop.clone(),
    )));

    // The load runs through the whole scenario; it is stopped with SIGTERM at the end, which
    // makes it write the acknowledged ranges.
    let acked_path = out.join("acked.txt");
    let load_argv: Vec<String> = vec![
        "load".to_string(),
        format!("--committee={committee}"),
        format!("--rate={}", args.rate),
        format!("--tx-size={}", args.tx_size),
        "--duration=100000".to_string(),
        "--core=all".to_string(),
        "--json".to_string(),
        format!("--acked-out={}", acked_path.display()),
    ];
    let mut load = Proc::spawn(
        Kind::Load,
        0,
        &load_argv,
        &logs.join("load-0.log"),
        Some(&out.join("load-0.json")),
    )?;
    std::thread::sleep(Duration::from_secs(5));

    let mut steps = Vec::new();
    let recover = |i: usize| -> Option<f64> {
        let since = Instant::now();
        while since.elapsed() < RECOVERY_LIMIT {
            let rounds: Vec<Option<u64>> = core_metrics
                .iter()
                .map(|port| core_round(&rt, *port))
                .collect();
            if let Some(mine) = rounds[i] {
                let others = rounds
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .filter_map(|(_, r)| *r)
                    .max()
                    .unwrap_or(0);
                if mine + RECOVERED_WITHIN_ROUNDS >= others && mine > 0 {
                    return Some(since.elapsed().as_secs_f64());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    };

    // 1. kill -9 and restart each core.
    for (i, core) in cores.iter_mut().enumerate() {
        core.kill();
        std::thread::sleep(Duration::from_secs(2));
        *core = start_core(i)?;
        let r = recover(i);
        let what = format!("core {i}: SIGKILL, restart from its store after 2 s");
        record(&mut steps, what, r);
        std::thread::sleep(Duration::from_secs(2));
    }
    // 2. SIGSTOP a core for 10 s.
    cores[0].signal("STOP")?;
    std::thread::sleep(Duration::from_secs(10));
    cores[0].signal("CONT")?;
    let r = recover(0);
    let what = "core 0: SIGSTOP for 10 s, then SIGCONT".to_string();
    record(&mut steps, what, r);
    std::thread::sleep(Duration::from_secs(2));
    // 3. Kill a driver mid-run; commits must go on (the other driver) and a new one joins.
    let before = max_committed_round(&rt, &core_metrics);
    driver_procs[0].kill();
    let since = Instant::now();
    let mut resumed = None;
    while since.elapsed() < RECOVERY_LIMIT {
        if max_committed_round(&rt, &core_metrics) >= before + 4 {
            resumed = Some(since.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let what = "driver 0: SIGKILL (commits advance 4 rounds on the other driver)".to_string();
    record(&mut steps, what, resumed);
    std::thread::sleep(Duration::from_secs(2));
    driver_procs[0] = spawn_driver(&args, &committee, &logs, 0, driver_metrics[0])?;
    // 4. Restart every core, one after another.
    for (i, core) in cores.iter_mut().enumerate() {
        core.stop(Duration::from_secs(10));
        *core = start_core(i)?;
        let r = recover(i);
        let what = format!("core {i}: rolling restart (SIGTERM, start)");
        record(&mut steps, what, r);
    }

    // Stop the load, then let everything acknowledged commit.
    load.stop(Duration::from_secs(15));
    let acked = read_acked(&acked_path)?;
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_secs(30) {
        let c = collected.lock().expect("not poisoned");
        let all_in = c.sequences.iter().all(|s| {
            let committed: u64 = s.values().map(|e| e.transactions.len() as u64).sum();
            committed >= acked.len() as u64
        });
        drop(c);
        if all_in {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = rt.block_on(t);
    }
    for i in 0..n {
        let fetched = rt.block_on(fetch_certificates(&clients, instance, i, n));
        let mut c = collected.lock().expect("not poisoned");
        for cert in fetched {
            let digest = cert.digest();
            c.slots.insert(digest, (cert.author().0, cert.round().0));
            for signer in &cert.signers {
                c.votes.insert((signer.0, digest));
            }
        }
    }
    for p in driver_procs.iter_mut() {
        p.stop(Duration::from_secs(5));
    }
    for p in cores.iter_mut() {
        p.stop(Duration::from_secs(10));
    }
    rt.block_on(clients.close());
    if !args.keep_testbed {
        let _ = std::fs::remove_dir_all(&testbed_dir);
    }

    let c = collected.lock().expect("not poisoned");
    let report = check(&args, drivers, steps, &c, &acked, started);
    std::fs::write(
        out.join("chaos.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    eprintln!("results in {}", out.display());
    let failed = report.steps_not_recovered > 0
        || report.commit_hash_mismatches > 0
        || report.acknowledged_lost > 0
        || report.duplicated > 0
        || report.double_signed_rounds > 0
        || report.double_votes > 0;
    if failed {
        bail!("chaos run failed its checks (see {})", out.display());
    }
    Ok(())
}

fn check(
    args: &LocalArgs,
    drivers: usize,
    steps: Vec<Step>,
    c: &Collected,
    acked: &[(u64, u64)],
    started: Instant,
) -> ChaosReport {
    // Agreement at every index seen at more than one core.
    let mut common = 0u64;
    let mut mismatches = 0u64;
    let longest = c
        .sequences
        .iter()
        .max_by_key(|s| s.len())
        .cloned()
        .unwrap_or_default();
    for (index, entry) in &longest {
        let others: Vec<&Seen> = c.sequences.iter().filter_map(|s| s.get(index)).collect();
        if others.len() > 1 {
            common += 1;
            if others.iter().any(|o| o.commit_hash != entry.commit_hash) {
                mismatches += 1;
            }
        }
    }
    // Workload: each acknowledged (client, sequence) exactly once in the longest sequence.
    let mut count: HashMap<(u64, u64), u32> = HashMap::new();
    for entry in longest.values() {
        for t in &entry.transactions {
            *count.entry(*t).or_default() += 1;
        }
    }
    let once = acked
        .iter()
        .filter(|t| count.get(t).copied() == Some(1))
        .count() as u64;
    let lost = acked.iter().filter(|t| !count.contains_key(t)).count() as u64;
    let duplicated = count.values().filter(|n| **n > 1).count() as u64;
    let double_signed = c
        .own_headers
        .values()
        .filter(|digests| digests.len() > 1)
        .count() as u64;
    let mut voted: HashMap<(u16, u16, u64), HashSet<Digest>> = HashMap::new();
    let mut votes_checked = 0u64;
    for (voter, digest) in &c.votes {
        if let Some(&(author, round)) = c.slots.get(digest) {
            votes_checked += 1;
            voted
                .entry((*voter, author, round))
                .or_default()
                .insert(*digest);
        }
    }
    let double_votes = voted.values().filter(|d| d.len() > 1).count() as u64;
    let recoveries: Vec<f64> = steps.iter().filter_map(|s| s.recovery_s).collect();
    ChaosReport {
        cores: args.cores,
        drivers,
        rate: args.rate,
        max_recovery_s: recoveries.iter().copied().fold(0.0, f64::max),
        steps_not_recovered: steps.iter().filter(|s| s.recovery_s.is_none()).count(),
        steps,
        common_indices_checked: common,
        commit_hash_mismatches: mismatches,
        acknowledged: acked.len() as u64,
        acknowledged_committed_once: once,
        acknowledged_lost: lost,
        duplicated,
        double_signed_rounds: double_signed,
        votes_checked,
        double_votes,
        evicted_entries: c.evicted.iter().sum(),
        wall_s: started.elapsed().as_secs_f64(),
    }
}

/// The acknowledged (client 0) sequence numbers the load client wrote.
fn read_acked(path: &Path) -> anyhow::Result<Vec<(u64, u64)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read the acknowledged ranges {}", path.display()))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(a), Some(b)) = (parts.next(), parts.next()) else {
            bail!("bad line in {}: {line:?}", path.display());
        };
        let (a, b): (u64, u64) = (a.parse()?, b.parse()?);
        out.extend((a..=b).map(|s| (0, s)));
    }
    Ok(out)
}

/// `sleepyseal_core_round` of the core whose metrics are on `port`, if it answers.
fn core_round(rt: &tokio::runtime::Runtime, port: u16) -> Option<u64> {
    metric(rt, port, "sleepyseal_core_round")
}

fn max_committed_round(rt: &tokio::runtime::Runtime, ports: &[u16]) -> u64 {
    ports
        .iter()
        .filter_map(|p| metric(rt, *p, "sleepyseal_core_last_committed_round"))
        .max()
        .unwrap_or(0)
}

fn metric(rt: &tokio::runtime::Runtime, port: u16, name: &str) -> Option<u64> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let text = rt
        .block_on(async {
            tokio::time::timeout(
                Duration::from_millis(500),
                sleepyseal_net::metrics::scrape(address),
            )
            .await
        })
        .ok()?
        .ok()?;
    sleepyseal_net::metrics::sample(&text, name).map(|v| v as u64)
}

/// Follows core `i`'s committed sequence with payloads, recording each entry.
async fn follow(
    clients: Arc<Clients>,
    instance: Digest,
    i: usize,
    collected: Arc<Mutex<Collected>>,
    stop: Arc<AtomicBool>,
) {
    let client = clients.core(AuthorityIndex(i as u16)).clone();
    let mut next = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let request = Request {
            instance,
            body: RequestBody::ReadCommitted {
                from_index: next,
                max: 1_024,
                with_payloads: true,
                wait_ms: 200,
            },
        };
        match client.request(&request, Duration::from_secs(3)).await {
            Ok(Response::Committed { entries, payloads }) => {
                let mut c = collected.lock().expect("not poisoned");
                for e in &entries {
                    let transactions = if e.payload.len == 0 {
                        Vec::new()
                    } else {
                        match payloads.iter().find(|p| p.digest() == e.payload.digest) {
                            Some(p) => p
                                .transactions()
                                .unwrap_or_default()
                                .iter()
                                .filter_map(|t| parse_transaction(t).map(|(c, s, _)| (c, s)))
                                .collect(),
                            // Not held yet: read this entry again later.
                            None => break,
                        }
                    };
                    c.sequences[i].insert(
                        e.index,
                        Seen {
                            commit_hash: e.commit_hash,
                            transactions,
                        },
                    );
                    next = e.index + 1;
                }
            }
            Ok(Response::Error(CoreError::CommittedEvicted { first_index })) => {
                collected.lock().expect("not poisoned").evicted[i] += first_index - next;
                next = first_index;
            }
            // Down, frozen or restarting: try again shortly.
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Prints a step's outcome and records it.
fn record(steps: &mut Vec<Step>, what: String, recovery_s: Option<f64>) {
    eprintln!(
        "chaos: {what}: {}",
        recovery_s
            .map(|s| format!("recovered in {s:.2} s"))
            .unwrap_or_else(|| "NOT recovered".into())
    );
    steps.push(Step { what, recovery_s });
}

/// Every certificate core `i` still holds (its DAG and retention window), page by page.
async fn fetch_certificates(
    clients: &Clients,
    instance: Digest,
    i: usize,
    n: usize,
) -> Vec<sleepyseal_core::Certificate> {
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
