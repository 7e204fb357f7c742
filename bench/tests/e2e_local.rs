//! The benchmark harness end to end: `sleepyseal local` on a short, light run starts real
//! processes, measures, writes its report, plots and metrics, and leaves no process behind. What
//! is checked is what its users read: the JSON keys, that every acknowledged transaction was
//! counted as committed, that the figures agree with the load, and that a crashed core does not
//! stop the run. `local --chaos` perturbs real processes and checks agreement and the workload.

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sleepyseal");

/// The light run measures the data path alone on the machine: the other runs of this file hold
/// it shared, the light run exclusively. Four runs at once on two CPUs starved the cores enough
/// that payloads went the on-demand way, which the figure is meant to show is the exception.
static MACHINE: RwLock<()> = RwLock::new(());

/// A base port with the harness's QUIC ports (base + i) and metrics ports (base + 1000 + i,
/// base + 1100 + j) free.
fn free_base_port(cores: u16, drivers: u16) -> u16 {
    let seed = u64::from(std::process::id()) * 7_919
        + u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
        );
    for attempt in 0..1_000u64 {
        let base = 21_000 + ((seed + attempt * 211) % 30_000) as u16;
        let udp = (0..cores).all(|i| UdpSocket::bind(("127.0.0.1", base + i)).is_ok());
        let tcp = (0..cores).all(|i| TcpListener::bind(("127.0.0.1", base + 1_000 + i)).is_ok())
            && (0..drivers).all(|j| TcpListener::bind(("127.0.0.1", base + 1_100 + j)).is_ok());
        if udp && tcp {
            return base;
        }
    }
    panic!("no free ports");
}

/// Runs `sleepyseal local` with `flags`, bounded in time, and returns its JSON report.
fn local(out: &Path, flags: &[&str]) -> serde_json::Value {
    let base = free_base_port(4, 2).to_string();
    let started = Instant::now();
    let child = Command::new(BIN)
        .arg("local")
        .args(flags)
        .args(["--json", "--base-port", &base, "--out"])
        .arg(out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sleepyseal local");
    let pid = child.id();
    // A watchdog: the run is bounded even if the harness hangs. It is called off as soon as the
    // harness exits, so it never signals a pid the system has since given to another process.
    let (done, waited) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if waited.recv_timeout(Duration::from_secs(240)).is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    let output = child.wait_with_output().expect("wait for sleepyseal local");
    let _ = done.send(());
    let _ = watchdog.join();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "sleepyseal local failed after {:?}: {stderr}",
        started.elapsed()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().expect("a JSON line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// No process of this test's runs is left: none has `out` on its command line.
fn assert_no_process_left(out: &Path) {
    let needle = out.display().to_string();
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) && !cmdline.contains(" local ") {
                left.push(cmdline);
            }
        }
    }
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key} in {v}"))
}

#[test]
fn default_figures_at_a_light_load() {
    let _alone = MACHINE.write().unwrap_or_else(PoisonError::into_inner);
    let dir = tempdir("light");
    let r = local(
        &dir,
        &["--rate", "2000", "--duration", "4", "--warmup", "1"],
    );
    // Every key a user's scripts read.
    for key in [
        "consensus_tps",
        "e2e_tps",
        "consensus_latency_ms",
        "rounds_per_s",
        "cpu_us_per_tx",
    ] {
        assert!(f(&r, key) > 0.0, "{key} should be positive: {r}");
    }
    for key in ["mean", "p50", "p90", "p99"] {
        assert!(r["e2e_latency_ms"][key].as_f64().unwrap() > 0.0, "{r}");
    }
    // At 2,000 tx/s every acknowledged transaction commits, and the run is not saturated.
    assert_eq!(r["not_committed"], 0, "{r}");
    assert_eq!(r["saturated"], false, "{r}");
    assert!(r["load"]["accepted"].as_u64().unwrap() >= 9_000, "{r}");
    let e2e = f(&r, "e2e_tps");
    assert!(
        (1_800.0..=2_200.0).contains(&e2e),
        "e2e TPS {e2e} at 2,000 tx/s"
    );
    // Latency percentiles are ordered.
    let l = &r["e2e_latency_ms"];
    assert!(l["p50"].as_f64() <= l["p90"].as_f64() && l["p90"].as_f64() <= l["p99"].as_f64());
    // The data path. Each payload is written once per core (the store's segment bytes per
    // committed payload byte). With a home driver beside each core, it crosses the network
    // n = 4 times: client → core, then home driver → 3 cores. The harness's prefix reads add
    // about 0.07. That much does not depend on the machine's noise. Four drivers each carrying
    // every payload to every core, the policy before home cores, would be about 13; own payloads
    // attached to the replies other cores' drivers got, about 4.9. What a lagging core's
    // catch-up, on-demand carriage and grace pulls add (`sent fetch`, `sent fetch_payloads`,
    // `received sync`, `sent get_state`) does depend on it: 0.02-0.1 in a release build, up
    // to 0.4 in this debug build when a core falls a few rounds behind. It is bounded apart.
    // A stall long enough for a successor to cover a live author also adds header-bundle
    // deliveries: one run of the test suite (session 11) measured 4.32 without catch-up (3.19
    // carried, 0.25 pulled), so the bound on all but catch-up is 4.4 and on the carried share
    // 3.4, still below any other policy; release runs measure 4.06-4.26 in all. The home drivers
    // count what they carry in bundles for other authors (`payload_transfers_foreign_carriage`:
    // covers, carriage after the grace period): without it and catch-up, the policy itself moves each payload at
    // most 4.2 times (the bound), each carried about once to each of the 3 other cores
    // (a certificate bundle carries the payload again to a core that did not vote: debug runs
    // with a busy loop on one CPU measured 4.08-4.14 and 3.03-3.08).
    let d = &r["data_path"];
    let writes = d["payload_writes_per_core"]
        .as_f64()
        .expect("payload writes");
    assert!(
        (0.9..=1.1).contains(&writes),
        "payload written {writes} times per core: {d}"
    );
    let transfers = d["payload_transfers_per_tx"].as_f64().expect("transfers");
    let by_request = d["payload_transfers_by_request"]
        .as_object()
        .expect("transfers by request");
    let share = |key: &str| by_request.get(key).and_then(|v| v.as_f64()).unwrap_or(0.0);
    let catch_up = share("sent fetch")
        + share("sent fetch_payloads")
        + share("received sync")
        + share("sent get_state");
    assert!(
        (3.9..=4.4).contains(&(transfers - catch_up)),
        "{transfers} payload transfers per tx, {catch_up} of them catch-up: {d}"
    );
    assert!(catch_up <= 0.8, "{catch_up} catch-up transfers per tx: {d}");
    let carried = share("received header_bundle") + share("received cert_bundle");
    assert!(
        (2.9..=3.4).contains(&carried),
        "each payload carried {carried} times, not once to each of 3 cores: {d}"
    );
    let foreign = d["payload_transfers_foreign_carriage"]
        .as_f64()
        .expect("carriage for other authors");
    assert!(
        (3.9..=4.2).contains(&(transfers - catch_up - foreign)),
        "{transfers} payload transfers per tx, {catch_up} catch-up and {foreign} carried for \
         other authors: {d}"
    );
    assert!(
        (2.9..=3.15).contains(&(carried - foreign)),
        "home drivers carried each payload {} times, not once to each of 3 cores: {d}",
        carried - foreign
    );
    // Report, plot and metrics files.
    for file in ["report.json", "summary.txt", "timeline.svg", "load-0.json"] {
        assert!(dir.join(file).exists(), "{file} missing");
    }
    for plot in ["timeline.svg", "store-sizes.svg"] {
        let svg = std::fs::read_to_string(dir.join(plot)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("polyline"),
            "{plot} has no line"
        );
    }
    for i in 0..4 {
        let metrics = std::fs::read_to_string(dir.join(format!("metrics/core-{i}.prom"))).unwrap();
        let committed = metrics
            .lines()
            .find_map(|l| l.strip_prefix("sleepyseal_core_committed_certificates_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .expect("committed certificates metric");
        assert!(committed > 0, "core {i} committed nothing");
    }
    // Each core's home driver runs in its process and is served with its metrics; no standalone
    // driver runs by default.
    let core0 = std::fs::read_to_string(dir.join("metrics/core-0.prom")).unwrap();
    let requests = core0
        .lines()
        .find_map(|l| l.strip_prefix("sleepyseal_driver_requests_total "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the home driver's request count");
    assert!(requests > 0.0, "the home driver sent nothing");
    assert!(!dir.join("metrics/driver-0.prom").exists());
    assert_eq!(r["config"]["drivers"], 0, "{r}");
    assert_eq!(r["config"]["home_drivers"], true, "{r}");
    // The testbed (keys, stores) is removed; no process is left.
    assert!(!dir.join("testbed").exists());
    assert_no_process_left(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sweep_with_a_crashed_core_reports_every_rate() {
    let _shared = MACHINE.read().unwrap_or_else(PoisonError::into_inner);
    let dir = tempdir("sweep");
    let r = local(
        &dir,
        &[
            "--rates",
            "500,1500",
            "--duration",
            "3",
            "--warmup",
            "1",
            "--crash",
            "1",
            "--drivers",
            "2",
        ],
    );
    let runs = r.as_array().expect("a sweep reports an array");
    assert_eq!(runs.len(), 2);
    for (run, rate) in runs.iter().zip([500.0, 1_500.0]) {
        assert_eq!(run["config"]["rate"].as_f64(), Some(rate));
        assert_eq!(run["config"]["crash"], 1);
        assert_eq!(run["not_committed"], 0, "{run}");
        assert!(f(run, "e2e_tps") > 0.8 * rate, "{run}");
    }
    for file in [
        "sweep.json",
        "sweep.svg",
        "rate-500/report.json",
        "rate-1500/timeline.svg",
    ] {
        assert!(dir.join(file).exists(), "{file} missing");
    }
    // The crashed core was never started: no metrics from it.
    assert!(!dir.join("rate-500/metrics/core-3.prom").exists());
    assert_no_process_left(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--flood connections` from more sources than a core has slots, end to end: the cores keep
/// committing every acknowledged transaction and turn away what does not fit, a new driver
/// polling mid-flood from an unseen prefix gets its answer, the report and summary carry the
/// flood's figures, and the flood process is gone afterwards. (Which connection makes room is
/// checked in `net`: the admission unit tests and `connections_beyond_the_limit_are_refused`.)
#[test]
fn a_connection_flood_leaves_room_for_a_new_driver_and_loses_nothing() {
    let _alone = MACHINE.write().unwrap_or_else(PoisonError::into_inner);
    let dir = tempdir("flood");
    let r = local(
        &dir,
        &[
            "--rate",
            "1000",
            "--duration",
            "4",
            "--warmup",
            "1",
            "--flood",
            "connections",
            "--flood-sources",
            "70",
            "--flood-connections",
            "4",
        ],
    );
    assert_eq!(r["not_committed"], 0, "{r}");
    assert!(f(&r, "e2e_tps") > 800.0, "{r}");
    let t = &r["transport"];
    let flood = &t["flood"];
    assert_eq!(flood["kind"], "connections", "{t}");
    // 280 connections asked of each core, 256 slots: some were turned away or made room.
    assert!(
        flood["peak_connections"].as_u64().unwrap() >= 4 * 200,
        "{t}"
    );
    let refused: f64 = t["refused_connections"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|v| v.as_f64())
        .sum();
    assert!(refused > 0.0, "{t}");
    assert!(t["retries_sent"].as_f64().unwrap() > 0.0, "{t}");
    let first = flood["new_driver_first_reply_ms"].as_f64();
    assert!(first.is_some_and(|ms| ms < 5_000.0), "{t}");
    assert!(
        t["consensus_wait"]["requests"].as_f64().unwrap() > 0.0,
        "{t}"
    );
    let summary = std::fs::read_to_string(dir.join("summary.txt")).unwrap();
    assert!(summary.contains("new driver mid-flood"), "{summary}");
    assert!(dir.join("flood.json").exists());
    assert_no_process_left(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--wan` puts each process on its own 127.x address in a region: the emulated delay is in the
/// path (end-to-end p50 is at least the round trip between the two regions) and nothing is lost.
#[test]
fn local_with_a_two_region_wan() {
    let _shared = MACHINE.read().unwrap_or_else(PoisonError::into_inner);
    let out = std::env::temp_dir().join(format!("sleepyseal-e2e-wan-{}", std::process::id()));
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/wan/two-region.toml");
    let p = sleepyseal_net::wan::WanProfile::load(&profile).unwrap();
    let r = p.regions();
    let rtt_ms = (p.link(&r[0], &r[1]).unwrap().delay + p.link(&r[1], &r[0]).unwrap().delay)
        .as_secs_f64()
        * 1e3;
    let profile = profile.display().to_string();
    let report = local(
        &out,
        &[
            "--rate=1000",
            "--tx-size=128",
            "--duration=4",
            "--warmup=1",
            "--wan",
            &profile,
        ],
    );
    assert_eq!(report["config"]["wan"], profile.as_str());
    assert_eq!(f(&report, "not_committed"), 0.0, "{report}");
    let p50 = report["e2e_latency_ms"]["p50"].as_f64().unwrap();
    assert!(
        p50 >= rtt_ms,
        "e2e p50 {p50} ms below the emulated round trip {rtt_ms} ms"
    );
    assert_no_process_left(&out);
    let _ = std::fs::remove_dir_all(&out);
}

/// The chaos run: every core killed and restarted, one kept away 15 s under load (far past what
/// the others retain: it rejoins through a checkpoint and its gap is filled), one frozen for
/// 10 s, a driver killed, a rolling restart; every perturbed core recovers, all cores agree at
/// every common index, and every acknowledged transaction is committed exactly once. Nothing is
/// skipped: a reader of the rejoined core waits while its gap is filled.
#[test]
fn chaos_run_loses_nothing_and_every_core_recovers() {
    let _shared = MACHINE.read().unwrap_or_else(PoisonError::into_inner);
    let dir = tempdir("chaos");
    let r = local(
        &dir,
        &[
            "--chaos",
            "--rate",
            "1000",
            "--tx-size",
            "64",
            "--drivers",
            "2",
            "--chaos-away-s",
            "15",
        ],
    );
    assert_eq!(r["steps_not_recovered"], 0, "{r}");
    assert_eq!(r["commit_hash_mismatches"], 0, "{r}");
    assert_eq!(r["acknowledged_lost"], 0, "{r}");
    assert_eq!(r["duplicated"], 0, "{r}");
    assert_eq!(r["double_signed_rounds"], 0, "{r}");
    assert_eq!(r["double_votes"], 0, "{r}");
    assert!(
        r["votes_checked"].as_u64().unwrap() > 1_000,
        "the double-vote check saw votes: {r}"
    );
    assert_eq!(r["evicted_entries"], 0, "{r}");
    assert!(r["acknowledged"].as_u64().unwrap() > 10_000, "{r}");
    assert_eq!(r["acknowledged"], r["acknowledged_committed_once"], "{r}");
    assert!(r["common_indices_checked"].as_u64().unwrap() > 1_000, "{r}");
    assert_eq!(r["steps"].as_array().map(Vec::len), Some(12), "{r}");
    assert!(f(&r, "max_recovery_s") <= 20.0, "{r}");
    assert_no_process_left(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sleepyseal-local-test-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
