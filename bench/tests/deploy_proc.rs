//! `deploy/files/proc.sh`, the host side of the cluster playbooks, on this machine: the process
//! identity its `stop` relies on. A cluster run must leave no process of its own behind and must
//! never signal anyone else's.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn proc_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/files/proc.sh")
}

/// A run directory whose `sleepyseal` is the given bash script.
struct RunDir(PathBuf);

impl RunDir {
    fn new(test: &str, script: &str) -> RunDir {
        let dir =
            std::env::temp_dir().join(format!("sleepyseal-proc-sh-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["pids", "logs", "results"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let program = dir.join("sleepyseal");
        std::fs::write(&program, format!("#!/bin/bash\n{script}\n")).unwrap();
        Command::new("chmod")
            .arg("+x")
            .arg(&program)
            .status()
            .unwrap();
        RunDir(dir)
    }

    /// Runs `proc.sh SUBCOMMAND <dir> ARGS...` as the roles do (the script on stdin).
    fn proc(&self, subcommand: &str, args: &[&str]) -> (bool, String) {
        let output = Command::new("timeout")
            .args(["60", "bash", "-s", "--", subcommand])
            .arg(&self.0)
            .args(args)
            .stdin(std::fs::File::open(proc_sh()).unwrap())
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.success(), stdout)
    }

    fn pid(&self, name: &str) -> u32 {
        let text = std::fs::read_to_string(self.0.join(format!("pids/{name}.pid"))).unwrap();
        text.trim().parse().unwrap()
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        // Whatever a failed assertion left running is ours: stop it before removing the dir.
        let _ = self.proc("stop", &["0"]);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The process has no thread left (gone, or a zombie its new parent has not reaped).
fn gone(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
    matches!(state, Some("Z" | "X")) && threads <= 1
}

/// The program the process runs now.
fn exe(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Launches `name` with `proc.sh launch` (alive check after `alive_s`) and waits until the
/// process runs `sleep`, the program its script execs last; returns its pid.
fn launch_until_sleep(run: &RunDir, name: &str, alive_s: &str) -> u32 {
    let (ok, out) = run.proc("launch", &[alive_s, name, "", "0"]);
    assert!(ok, "launch: {out}");
    let pid = run.pid(name);
    wait_for("the script execs sleep", Duration::from_secs(20), || {
        exe(pid).file_name().is_some_and(|n| n == "sleep")
    });
    pid
}

/// On a loaded host, nohup and setsid may not have exec'd the run's binary yet when `launch`
/// checks that it runs; a wrapper may exec the real program later still. The process is ours all
/// along and `stop` must stop it (CI once left a core running this way).
#[test]
fn a_process_that_execs_after_the_alive_check_is_still_stopped() {
    let run = RunDir::new("late-exec", "sleep 1\nexec sleep 60");
    let pid = launch_until_sleep(&run, "core-0", "0.1");
    let (ok, out) = run.proc("stop", &["5"]);
    assert!(ok, "stop: {out}");
    assert!(
        out.contains(&format!("core-0: pid {pid} stopped (SIGTERM)")),
        "{out}"
    );
    assert!(gone(pid), "pid {pid} still runs after stop: {out}");
}

/// A process that ignores SIGTERM is killed once the grace period is over.
#[test]
fn a_process_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let run = RunDir::new("ignores-term", "trap '' TERM\nexec sleep 60");
    // SIGTERM is ignored from the trap on, and the exec to sleep comes after the trap. On a loaded
    // host the launch check can pass before bash has read the trap (CI once stopped it there).
    let pid = launch_until_sleep(&run, "driver-0", "0.2");
    let start = Instant::now();
    let (ok, out) = run.proc("stop", &["1"]);
    assert!(ok, "stop: {out}");
    assert!(
        out.contains(&format!("driver-0: pid {pid} killed (SIGKILL after 1s)")),
        "{out}"
    );
    assert!(start.elapsed() >= Duration::from_secs(1), "{out}");
    assert!(gone(pid), "pid {pid} still runs after stop: {out}");
}

/// A pid file whose start time does not match names another process (the pid was reused), and
/// one without a start time names nothing sure: neither is signalled.
#[test]
fn a_process_that_is_not_our_fork_is_never_signalled() {
    let run = RunDir::new("not-ours", "exec sleep 60");
    let mut other = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = other.id();
    std::fs::write(run.0.join("pids/reused.pid"), format!("{pid}\n")).unwrap();
    std::fs::write(run.0.join("pids/reused.start"), "1\n").unwrap();
    std::fs::write(run.0.join("pids/unrecorded.pid"), format!("{pid}\n")).unwrap();
    let (ok, out) = run.proc("stop", &["1"]);
    assert!(ok, "stop: {out}");
    assert!(
        out.contains(&format!("reused: pid {pid} had already exited")),
        "{out}"
    );
    assert!(
        out.contains(&format!("unrecorded: pid {pid} had already exited")),
        "{out}"
    );
    assert_eq!(other.try_wait().unwrap(), None, "{out}");
    other.kill().unwrap();
    other.wait().unwrap();
}
