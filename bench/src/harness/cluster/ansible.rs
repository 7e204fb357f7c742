//! Running the deployment's playbooks (`deploy/`) through the project's Ansible
//! (`scripts/ansible.sh`, which installs a pinned ansible-core into a virtual environment on
//! first use).
//!
//! Each playbook runs in its own process group, so a Ctrl-C at the terminal reaches the harness
//! alone: the harness then ends the playbook in progress itself and runs the teardown. Ansible's
//! output goes to `ansible.log` in the run's directory. Which hosts failed is read from the
//! playbook's `PLAY RECAP` (its format is fixed by the pinned ansible-core), and why from the
//! `fatal: [HOST]` report above it. (The builtin `tree` callback, which would give per-host
//! results as files, is deprecated in that version.)

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Where Ansible and the playbooks are, and what every playbook of a run is given.
#[derive(Clone, Debug)]
pub struct Ansible {
    /// `scripts/ansible.sh`.
    pub script: PathBuf,
    /// `deploy/`.
    pub deploy: PathBuf,
    /// The inventory file.
    pub inventory: PathBuf,
}

/// How a playbook ended, when not well.
#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    /// Hosts were unreachable or a task failed on them.
    #[error("{playbook} failed on {}", describe(.hosts))]
    Hosts {
        /// The playbook.
        playbook: String,
        /// Each failed host and Ansible's message for it.
        hosts: Vec<(String, String)>,
    },
    /// It failed without naming a host (see the log).
    #[error("{playbook} failed (exit {code}); see {log}")]
    Other {
        /// The playbook.
        playbook: String,
        /// Its exit code.
        code: i32,
        /// Ansible's log.
        log: String,
    },
    /// It ran past its time limit and was ended.
    #[error("{playbook} did not finish within {0:?}", .limit)]
    TimedOut {
        /// The playbook.
        playbook: String,
        /// Its limit.
        limit: Duration,
    },
    /// Ctrl-C or SIGTERM arrived while it ran; it was ended.
    #[error("interrupted during {0}")]
    Interrupted(String),
    /// It could not be started.
    #[error("cannot run {0}: {1}")]
    Spawn(String, std::io::Error),
}

fn describe(hosts: &[(String, String)]) -> String {
    hosts
        .iter()
        .map(|(h, why)| format!("{h} ({why})"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Ansible {
    /// Installs Ansible if needed and prints nothing on success.
    pub fn install(&self) -> anyhow::Result<()> {
        let status = Command::new("bash")
            .arg(&self.script)
            .arg("--install")
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("run {}", self.script.display()))?;
        if !status.success() {
            bail!("{} --install failed ({status})", self.script.display());
        }
        Ok(())
    }

    /// The inventory as `ansible-inventory --list` prints it (JSON).
    pub fn list_inventory(&self) -> anyhow::Result<String> {
        let out = Command::new("bash")
            .arg(&self.script)
            .args(["ansible-inventory", "--list", "-i"])
            .arg(&self.inventory)
            .env("ANSIBLE_CONFIG", self.deploy.join("ansible.cfg"))
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {}", self.script.display()))?;
        if !out.status.success() {
            bail!(
                "ansible-inventory could not read {}:\n{}",
                self.inventory.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8(out.stdout).context("ansible-inventory printed no UTF-8")
    }

    /// Runs `deploy/<playbook>` with the run's vars file; its output is appended to
    /// `<run_dir>/ansible.log`.
    pub fn playbook(
        &self,
        playbook: &str,
        vars: &Path,
        run_dir: &Path,
        limit: Duration,
        interrupted: &AtomicBool,
    ) -> Result<(), PlaybookError> {
        let log_path = run_dir.join("ansible.log");
        let spawn_error = |e| PlaybookError::Spawn(playbook.to_string(), e);
        let log_from = std::fs::metadata(&log_path).map_or(0, |m| m.len());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(spawn_error)?;
        let mut child = Command::new("bash")
            .arg(&self.script)
            .args(["ansible-playbook", "-i"])
            .arg(&self.inventory)
            .arg("-e")
            .arg(format!("@{}", vars.display()))
            .arg(self.deploy.join(playbook))
            .env("ANSIBLE_CONFIG", self.deploy.join("ansible.cfg"))
            .env("ANSIBLE_NOCOLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(spawn_error)?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(spawn_error)?;
        let started = Instant::now();
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            let timed_out = started.elapsed() > limit;
            if interrupted.load(Ordering::SeqCst) || timed_out {
                end_group(&mut child);
                return Err(if timed_out {
                    PlaybookError::TimedOut {
                        playbook: playbook.to_string(),
                        limit,
                    }
                } else {
                    PlaybookError::Interrupted(playbook.to_string())
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if status.success() {
            return Ok(());
        }
        let output = std::fs::read(&log_path).unwrap_or_default();
        let output = String::from_utf8_lossy(&output[(log_from as usize).min(output.len())..]);
        let hosts = failed_hosts(&output);
        if hosts.is_empty() {
            return Err(PlaybookError::Other {
                playbook: playbook.to_string(),
                code: status.code().unwrap_or(-1),
                log: log_path.display().to_string(),
            });
        }
        Err(PlaybookError::Hosts {
            playbook: playbook.to_string(),
            hosts,
        })
    }
}

/// SIGTERM to the playbook's process group, then SIGKILL after 5 s.
fn end_group(child: &mut std::process::Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    let _ = child.wait();
}

/// The hosts the `PLAY RECAP` of `output` counts as unreachable or failed, each with the first
/// line of its `fatal: [HOST]` report.
pub fn failed_hosts(output: &str) -> Vec<(String, String)> {
    let Some(recap) = output.rfind("PLAY RECAP") else {
        return Vec::new();
    };
    let count = |fields: &str, key: &str| -> u64 {
        fields
            .split_whitespace()
            .find_map(|f| f.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            .unwrap_or(0)
    };
    let mut failed = Vec::new();
    for line in output[recap..].lines().skip(1) {
        let Some((host, fields)) = line.split_once(" : ") else {
            continue;
        };
        let host = host.trim();
        let (unreachable, failures) = (count(fields, "unreachable"), count(fields, "failed"));
        if unreachable == 0 && failures == 0 {
            continue;
        }
        let kind = if unreachable > 0 {
            "unreachable"
        } else {
            "failed"
        };
        let why = fatal_report(&output[..recap], host)
            .map_or_else(|| kind.to_string(), |m| format!("{kind}: {m}"));
        failed.push((host.to_string(), why));
    }
    failed
}

/// The message of the last `fatal: [host]: ...` report of `output`, shortened. The pinned
/// configuration prints results as YAML (`msg: ...` under the report line, possibly one per loop
/// item, possibly folded over several lines); the default callback prints JSON on one line.
fn fatal_report(output: &str, host: &str) -> Option<String> {
    let marker = format!("fatal: [{host}]");
    let at = output.rfind(&marker)?;
    let mut lines = output[at + marker.len()..].lines();
    let first = lines.next().unwrap_or("");
    if let Some(i) = first.find("\"msg\": \"") {
        let rest = &first[i + 8..];
        let end = rest
            .find("\", \"")
            .or(rest.rfind('"'))
            .unwrap_or(rest.len());
        return Some(shorten(&rest[..end]));
    }
    let block: Vec<&str> = lines
        .take_while(|l| l.starts_with(' ') || l.is_empty())
        .collect();
    let mut found = None;
    for (i, line) in block.iter().enumerate() {
        let body = line.trim_start();
        let Some(value) = body.strip_prefix("msg:") else {
            continue;
        };
        let indent = line.len() - body.len();
        let mut text = value.trim().to_string();
        for more in &block[i + 1..] {
            if more.len() - more.trim_start().len() <= indent {
                break;
            }
            text.push(' ');
            text.push_str(more.trim());
        }
        let text = text
            .trim_start_matches("|-")
            .trim()
            .trim_matches(['\'', '"'])
            .trim();
        if !text.is_empty() && text != "All items completed" {
            found = Some(shorten(text));
        }
    }
    found
}

fn shorten(text: &str) -> String {
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_and_unreachable_hosts_are_named_from_the_recap() {
        let output = r#"
TASK [start : start cores] *****************************************************
ok: [ss-h1]
fatal: [ss-h2]: UNREACHABLE! => {"changed": false, "msg": "Failed to connect to the host via ssh: ssh: connect to host 198.18.0.12 port 22: Connection refused", "unreachable": true}
fatal: [ss-h3]: FAILED! => 
    changed: false
    msg: All items completed
    results:
    -   item: 0
        msg: 'core-2 exited at once; its log ends with: error: unexpected
            argument'
        unreachable: false

PLAY RECAP *********************************************************************
localhost                  : ok=2    changed=0    unreachable=0    failed=0    skipped=0    rescued=0    ignored=0
ss-h1                      : ok=7    changed=3    unreachable=0    failed=0    skipped=0    rescued=0    ignored=1
ss-h2                      : ok=0    changed=0    unreachable=1    failed=0    skipped=0    rescued=0    ignored=0
ss-h3                      : ok=5    changed=2    unreachable=0    failed=1    skipped=0    rescued=0    ignored=0
"#;
        let failed = failed_hosts(output);
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert_eq!(failed[0].0, "ss-h2");
        assert_eq!(
            failed[0].1,
            "unreachable: Failed to connect to the host via ssh: ssh: connect to host 198.18.0.12 port 22: Connection refused"
        );
        assert_eq!(failed[1].0, "ss-h3");
        assert!(
            failed[1].1.starts_with("failed: core-2 exited at once"),
            "{failed:?}"
        );
        assert!(failed_hosts("no recap at all").is_empty());
    }
}
