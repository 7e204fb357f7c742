//! `sleepyseal cluster` end to end, over SSH, on four test hosts made of network namespaces
//! (`scripts/testhosts.sh`), with the two-region WAN profile: the playbooks deploy, start, collect
//! and stop real processes on real (namespace) hosts, exactly as on cloud hosts.
//!
//! What is checked is what a user of a cluster run relies on: the report is complete (every host,
//! its clock, its CPU and memory per process kind, its observer's latency); end-to-end latency is
//! at least the emulated round trip between the regions (the WAN is really in the path); every
//! core has the same commit hash at every index two observers saw; every acknowledged transaction
//! committed; and afterwards no process of the run, no remote run directory and no namespace is
//! left. The test fails, never skips, when the test hosts cannot be made: it needs root (CI runs
//! as root) and Debian's openssh-server (the script installs it).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sleepyseal_net::wan::WanProfile;

const BIN: &str = env!("CARGO_BIN_EXE_sleepyseal");
const HOSTS: usize = 4;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs a command in the workspace, bounded in time; panics with its output if it fails.
fn run(what: &str, command: &mut Command, limit: Duration) -> String {
    let child = command
        .current_dir(workspace())
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let pid = child.id();
    let (done, waited) = std::sync::mpsc::channel::<()>();
    // Bounded even if the command hangs: its process group is killed at the limit (the run's own
    // processes stop by themselves at their absolute stop times).
    let watchdog = std::thread::spawn(move || {
        if waited.recv_timeout(limit).is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    });
    let started = Instant::now();
    let output = child.wait_with_output().unwrap();
    let _ = done.send(());
    let _ = watchdog.join();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} failed ({}) after {:?}:\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status,
        started.elapsed()
    );
    eprintln!("{what}: {:.1} s", started.elapsed().as_secs_f64());
    stdout
}

fn testhosts(args: &[&str]) -> Command {
    let mut c = Command::new("bash");
    c.arg("scripts/testhosts.sh").args(args);
    c
}

/// Takes the test hosts down when dropped, so a failed assertion leaves nothing behind either.
struct Hosts;

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = testhosts(&["down"]).current_dir(workspace()).status();
    }
}

/// The processes whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(cmdline);
            }
        }
    }
    found
}

/// The stop role's report in Ansible's log of the run: what each host stopped, and how.
fn stop_report(log: &Path) -> String {
    let log = std::fs::read_to_string(log).unwrap_or_else(|e| format!("no {}: {e}", log.display()));
    let report: Vec<&str> = log
        .split("TASK [")
        .filter(|task| task.starts_with("stop : Report what was stopped"))
        .collect();
    report.join("\n")
}

/// The round trip between the two regions of the profile (ms).
fn emulated_rtt_ms(profile: &Path) -> f64 {
    let p = WanProfile::load(profile).unwrap();
    let r = p.regions();
    assert_eq!(r.len(), 2, "the CI profile has two regions");
    let one_way = |a: &str, b: &str| p.link(a, b).unwrap().delay.as_secs_f64() * 1e3;
    one_way(&r[0], &r[1]) + one_way(&r[1], &r[0])
}

#[test]
fn cluster_on_four_namespace_hosts_with_two_regions() {
    let root = workspace();
    let remote_root = format!("/tmp/sleepyseal-e2e-{}", std::process::id());
    let out = std::env::temp_dir().join(format!("sleepyseal-e2e-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    run(
        "ansible install",
        Command::new("bash").args(["scripts/ansible.sh", "--install"]),
        Duration::from_secs(600),
    );
    let hosts = Hosts;
    run(
        "testhosts up",
        &mut testhosts(&["up", &HOSTS.to_string()]),
        Duration::from_secs(600),
    );
    let inventory = root.join("target/testhosts/inventory.yml");
    let stdout = run(
        "sleepyseal cluster",
        testhosts(&["exec", BIN, "cluster", "--inventory"])
            .arg(&inventory)
            .args([
                "--rate=2000",
                "--tx-size=256",
                "--warmup=2",
                "--duration=10",
                "--drain=10",
                "--start-budget-s=30",
                "--wan=two-region",
                "--json",
                "--remote-root",
                &remote_root,
                "--out",
            ])
            .arg(&out),
        Duration::from_secs(600),
    );
    let report: Value = serde_json::from_str(stdout.lines().last().expect("a JSON line"))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    check_report(
        &report,
        emulated_rtt_ms(&root.join("deploy/wan/two-region.toml")),
    );
    for file in ["report.json", "summary.txt", "timeline.svg", "vars.json"] {
        assert!(out.join(file).is_file(), "{file} written");
    }
    // Nothing of the run is left on the hosts: no process, no run directory (keys included).
    assert_eq!(
        processes_with(&remote_root),
        Vec::<String>::new(),
        "processes left; what the stop role reported:\n{}",
        stop_report(&out.join("ansible.log"))
    );
    let left: Vec<_> = std::fs::read_dir(&remote_root)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "remote run directories left: {left:?}");
    drop(hosts);
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    assert!(!namespaces.contains("ss-"), "namespaces left: {namespaces}");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&remote_root);
}

fn check_report(r: &Value, rtt_ms: f64) {
    let f = |p: &str| {
        r.pointer(p)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("{p} in {r}"))
    };
    assert_eq!(f("/config/cores"), HOSTS as f64);
    assert!(f("/consensus_tps") > 0.0 && f("/e2e_tps") > 0.0, "{r}");
    assert_eq!(
        f("/not_committed"),
        0.0,
        "every acknowledged transaction committed: {r}"
    );
    assert!(f("/load/accepted") > 10_000.0, "the load ran: {r}");
    let p50 = f("/e2e_latency_ms/p50");
    assert!(
        p50 >= rtt_ms,
        "e2e p50 {p50} ms is below the emulated round trip {rtt_ms} ms"
    );
    let c = r.get("cluster").expect("a cluster section");
    assert_eq!(c["wan_profile"], "two-region");
    assert_eq!(c["regions"].as_array().unwrap().len(), 2);
    assert_eq!(
        f("/cluster/clock_bound_ms"),
        0.0,
        "test hosts share the kernel's clock"
    );
    let agreement = &c["agreement"];
    assert_eq!(
        agreement["cores"].as_array().unwrap().len(),
        HOSTS,
        "{agreement}"
    );
    assert!(
        agreement["common_indices"].as_u64().unwrap() > 10,
        "{agreement}"
    );
    assert_eq!(agreement["mismatches"], 0, "{agreement}");
    let hosts = c["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), HOSTS);
    for h in hosts {
        assert_eq!(h["clock_method"], "same-kernel", "{h}");
        assert!(h["region"].is_string(), "{h}");
        let kinds: Vec<&str> = h["usage"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["core", "driver", "load", "observer"], "{h}");
        for u in h["usage"].as_array().unwrap() {
            assert!(u["peak_rss_mib"].as_f64().unwrap() > 1.0, "{h}");
        }
        let own = h["e2e_latency_ms"]["p50"]
            .as_f64()
            .expect("each host's own latency");
        assert!(own >= rtt_ms, "{h}");
        assert_eq!(h["accepted"], h["committed"], "{h}");
    }
}
