//! Running the deployment's playbooks (`deploy/`) through the project's Ansible
//! (`scripts/ansible.sh`, which installs a pinned ansible-core into a virtual environment on
//! first use).
//!
//! Each playbook runs in its own process group, so a Ctrl-C at the terminal reaches the harness
//! alone: the harness then ends the playbook in progress itself and runs the teardown. Ansible's
//! output goes to `ansible.log` in the run's directory; which hosts failed, and why, is read from
//! the per-host results of Ansible's `tree` callback, not from that log.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

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

    /// Runs `deploy/<playbook>` with the run's vars file; output appended to `log`, per-host
    /// results into `tree` (emptied first).
    pub fn playbook(
        &self,
        playbook: &str,
        vars: &Path,
        run_dir: &Path,
        limit: Duration,
        interrupted: &AtomicBool,
    ) -> Result<(), PlaybookError> {
        let log_path = run_dir.join("ansible.log");
        let tree = run_dir.join("ansible-tree").join(playbook);
        let _ = std::fs::remove_dir_all(&tree);
        let spawn_error = |e| PlaybookError::Spawn(playbook.to_string(), e);
        std::fs::create_dir_all(&tree).map_err(spawn_error)?;
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
            .env("ANSIBLE_CALLBACKS_ENABLED", "ansible.builtin.tree")
            .env("ANSIBLE_CALLBACK_TREE_DIR", &tree)
            .env("ANSIBLE_LOAD_CALLBACK_PLUGINS", "1")
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
        let hosts = failed_hosts(&tree);
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

/// The hosts whose last result in the `tree` directory says unreachable or failed, with
/// Ansible's message.
pub fn failed_hosts(tree: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(tree) else {
        return Vec::new();
    };
    let mut failed: Vec<(String, String)> = entries
        .flatten()
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            let result: Value = serde_json::from_str(&text).ok()?;
            let why = failure(&result)?;
            Some((e.file_name().to_string_lossy().into_owned(), why))
        })
        .collect();
    failed.sort();
    failed
}

/// Why a task result failed, if it did.
fn failure(result: &Value) -> Option<String> {
    let flag = |k: &str| result.get(k).and_then(Value::as_bool).unwrap_or(false);
    let kind = if flag("unreachable") {
        "unreachable"
    } else if flag("failed") {
        "failed"
    } else {
        return None;
    };
    let msg = result
        .get("msg")
        .and_then(Value::as_str)
        .or_else(|| result.get("stderr").and_then(Value::as_str))
        .unwrap_or("");
    let msg: String = msg.lines().take(3).collect::<Vec<_>>().join(" ");
    Some(if msg.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {}", msg.chars().take(300).collect::<String>())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_and_unreachable_hosts_are_named_with_their_message() {
        let dir = std::env::temp_dir().join(format!("ss-tree-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("h1"), r#"{"changed": false, "ping": "pong"}"#).unwrap();
        std::fs::write(
            dir.join("h2"),
            r#"{"unreachable": true, "msg": "Failed to connect to the host via ssh: timeout"}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("h3"),
            r#"{"failed": true, "rc": 1, "stderr": "no\nmore"}"#,
        )
        .unwrap();
        std::fs::write(dir.join("h4"), "not json").unwrap();
        let failed = failed_hosts(&dir);
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert_eq!(failed[0].0, "h2");
        assert!(failed[0].1.starts_with("unreachable: Failed to connect"));
        assert_eq!(failed[1], ("h3".to_string(), "failed: no more".to_string()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
