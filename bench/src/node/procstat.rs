//! What a process costs beyond its total CPU, from `/proc`: CPU per thread kind, context
//! switches, read/write system calls and bytes written to storage. The harness reads these for
//! its child processes at the edges of the measurement window, and the report divides their
//! growth by the transactions committed in it.
//!
//! `/proc` counts only part of the system calls: `syscr`/`syscw` are the read and write family
//! (`read`, `write`, `pread`, `writev`, ...), not `sendmsg`/`recvmsg`, which is how QUIC moves
//! datagrams. `write_bytes` is what the process caused to be written to storage (the page cache's
//! writeback of its files), so a store's fsynced writes show there, not in the socket traffic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `/proc` reports CPU time in USER_HZ ticks, which Linux fixes at 100 on every architecture.
pub const USER_HZ: f64 = 100.0;

/// Counters of one process (or the sum of several) at one moment.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcStats {
    /// CPU seconds per thread kind: the thread's name without a trailing index (`verify-1` is
    /// `verify`). Threads that already exited are not counted.
    pub thread_cpu_s: BTreeMap<String, f64>,
    /// Voluntary and involuntary context switches of all live threads.
    pub context_switches: u64,
    /// Read-family system calls (`syscr`).
    pub read_syscalls: u64,
    /// Write-family system calls (`syscw`).
    pub write_syscalls: u64,
    /// Bytes the process caused to be written to storage (`write_bytes`).
    pub disk_write_bytes: u64,
}

impl ProcStats {
    /// The counters of process `pid` now, or `None` if it is gone.
    pub fn read(pid: u32) -> Option<ProcStats> {
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
        let field = |name: &str| keyed(&io, name).unwrap_or(0);
        let mut stats = ProcStats {
            read_syscalls: field("syscr"),
            write_syscalls: field("syscw"),
            disk_write_bytes: field("write_bytes"),
            ..ProcStats::default()
        };
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        let main_task = pid.to_string();
        for task in tasks.flatten() {
            let dir = task.path();
            let (Ok(comm), Ok(stat), Ok(status)) = (
                std::fs::read_to_string(dir.join("comm")),
                std::fs::read_to_string(dir.join("stat")),
                std::fs::read_to_string(dir.join("status")),
            ) else {
                continue; // the thread ended meanwhile
            };
            let ticks = parse_cpu_ticks(&stat).unwrap_or(0);
            // The main thread carries the executable's file name, which differs between builds
            // (a renamed binary would make runs incomparable): it is `main` whatever the name.
            let kind = if task.file_name().to_str() == Some(main_task.as_str()) {
                MAIN_THREAD.to_string()
            } else {
                thread_kind(&comm)
            };
            *stats.thread_cpu_s.entry(kind).or_default() += ticks as f64 / USER_HZ;
            stats.context_switches += keyed(&status, "voluntary_ctxt_switches").unwrap_or(0)
                + keyed(&status, "nonvoluntary_ctxt_switches").unwrap_or(0);
        }
        Some(stats)
    }

    /// Adds another process's counters.
    pub fn add(&mut self, other: &ProcStats) {
        for (kind, cpu) in &other.thread_cpu_s {
            *self.thread_cpu_s.entry(kind.clone()).or_default() += cpu;
        }
        self.context_switches += other.context_switches;
        self.read_syscalls += other.read_syscalls;
        self.write_syscalls += other.write_syscalls;
        self.disk_write_bytes += other.disk_write_bytes;
    }

    /// The growth since `earlier` (a thread kind absent then counts whole; nothing goes
    /// below 0, as a thread that ended takes its counts with it).
    pub fn since(&self, earlier: &ProcStats) -> ProcStats {
        let thread_cpu_s = self
            .thread_cpu_s
            .iter()
            .map(|(kind, cpu)| {
                let before = earlier.thread_cpu_s.get(kind).copied().unwrap_or(0.0);
                (kind.clone(), (cpu - before).max(0.0))
            })
            .collect();
        ProcStats {
            thread_cpu_s,
            context_switches: self
                .context_switches
                .saturating_sub(earlier.context_switches),
            read_syscalls: self.read_syscalls.saturating_sub(earlier.read_syscalls),
            write_syscalls: self.write_syscalls.saturating_sub(earlier.write_syscalls),
            disk_write_bytes: self
                .disk_write_bytes
                .saturating_sub(earlier.disk_write_bytes),
        }
    }
}

/// utime + stime from the text of a `stat` file. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The number after `name:` on its own line of a `/proc` key-value file.
fn keyed(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key == name).then(|| value.split_whitespace().next()?.parse().ok())?
    })
}

/// The thread kind of a process's main thread.
pub const MAIN_THREAD: &str = "main";

/// A thread's kind: its name without a trailing index (`verify-1` → `verify`, `core-net` stays).
fn thread_kind(comm: &str) -> String {
    let name = comm.trim();
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let base = base.strip_suffix('-').unwrap_or(base);
    if base.is_empty() { name } else { base }.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_kinds_drop_their_index() {
        assert_eq!(thread_kind("verify-1\n"), "verify");
        assert_eq!(thread_kind("core-net"), "core-net");
        assert_eq!(thread_kind("core"), "core");
        assert_eq!(thread_kind("42"), "42");
    }

    #[test]
    fn keyed_fields_match_whole_names() {
        let status = "voluntary_ctxt_switches:\t7\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(keyed(status, "voluntary_ctxt_switches"), Some(7));
        assert_eq!(keyed(status, "nonvoluntary_ctxt_switches"), Some(3));
        assert_eq!(keyed("write_bytes: 4096\n", "write_bytes"), Some(4096));
        assert_eq!(keyed("syscr: 1\n", "syscw"), None);
    }

    #[test]
    fn own_process_counters_grow() {
        let pid = std::process::id();
        let before = ProcStats::read(pid).expect("own /proc entry");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let path = std::env::temp_dir().join(format!("ss-procstat-{pid}"));
        std::fs::write(&path, vec![1u8; 1 << 16]).unwrap();
        std::fs::remove_file(&path).unwrap();
        let after = ProcStats::read(pid).unwrap();
        let grown = after.since(&before);
        assert!(grown.write_syscalls >= 1, "{grown:?}");
        assert!(
            after.thread_cpu_s.contains_key(MAIN_THREAD),
            "the main thread is named `main`, not after the test binary: {:?}",
            after.thread_cpu_s.keys()
        );
        let mut sum = before.clone();
        sum.add(&before);
        assert_eq!(sum.read_syscalls, 2 * before.read_syscalls);
    }
}
