//! What runs where in a cluster run: every process of every host with its full command line, as
//! the playbooks receive it (`sleepyseal_plan` in the vars file; see deploy/README.md). The
//! playbooks start what the plan says in role order and never compute anything themselves: all
//! times here are absolute (µs since the Unix epoch), so a process stops by itself even if the
//! controller is gone.

use std::collections::BTreeMap;

use serde::Serialize;

use super::inventory::Inventory;
use crate::harness::args::LocalArgs;

/// When things happen (µs since the Unix epoch).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Schedule {
    /// The load clients start sending.
    pub load_start_us: u64,
    /// The measurement window.
    pub window: (u64, u64),
    /// The load clients stop sending.
    pub load_end_us: u64,
    /// Observers stop waiting for commits.
    pub drain_end_us: u64,
    /// Cores and drivers stop by themselves (the harness stops them earlier).
    pub hard_stop_us: u64,
}

impl Schedule {
    /// A run whose load starts `budget_s` seconds after `now_us`.
    pub fn new(args: &LocalArgs, now_us: u64, budget_s: u64) -> Schedule {
        let s = 1_000_000;
        let load_start_us = now_us + budget_s * s;
        let load_end_us = load_start_us + (args.warmup + args.duration) * s;
        let drain_end_us = load_end_us + args.drain * s;
        Schedule {
            load_start_us,
            window: (load_start_us + args.warmup * s, load_end_us),
            load_end_us,
            drain_end_us,
            hard_stop_us: drain_end_us + 60 * s,
        }
    }
}

/// One process as the playbook starts it.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Process {
    /// Unique on its host: names its log, pid and result files.
    pub name: String,
    /// core, driver, observer, load or perf: the start order.
    pub kind: &'static str,
    /// Arguments of the sleepyseal binary (or of `exec`).
    pub argv: Vec<String>,
    /// A program from PATH to run instead of the sleepyseal binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<String>,
    /// Readiness check (sleepyseal arguments), run after every core started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<Vec<String>>,
    /// Where its metrics are served on the host (scraped at collect).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// Collect waits until it exited by itself.
    pub wait_exit: bool,
    /// A command run on the host at collect, its stdout to `after_stdout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<String>>,
    /// See `after`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_stdout: Option<String>,
}

/// What one host does.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HostPlan {
    /// Key files (in the stage's `keys/`) copied to this host only.
    pub keys: Vec<String>,
    /// Its processes.
    pub processes: Vec<Process>,
}

/// Everything the playbooks need besides paths: per host (inventory name), its plan.
pub type Plan = BTreeMap<String, HostPlan>;

/// How the plan is made.
pub struct PlanInput<'a> {
    /// Flags of the run.
    pub args: &'a LocalArgs,
    /// Hosts.
    pub inventory: &'a Inventory,
    /// The region of each host (by index into `inventory.hosts`) when a WAN is emulated.
    pub regions: Option<&'a [String]>,
    /// When things happen.
    pub schedule: Schedule,
    /// Standalone drivers to run (spread over the `drivers` hosts, or the core hosts if the
    /// inventory names none), beside the home driver each core runs in its own process.
    pub drivers: usize,
    /// Load clients to run (spread over the load hosts, at least one each).
    pub clients: usize,
    /// Input rate of this run.
    pub rate: u64,
    /// Record a profile of every core.
    pub flamegraph: bool,
    /// The IP cores listen on when the host names none (`--listen`).
    pub listen: Option<&'a str>,
    /// Seconds from now to the end of the window (a perf recording's length).
    pub perf_seconds: u64,
}

/// The file names of process `name`'s results, relative to its run directory.
pub fn usage_file(name: &str) -> String {
    format!("results/{name}.usage.json")
}

/// Builds the plan.
pub fn build(input: &PlanInput<'_>) -> Plan {
    let inv = input.inventory;
    let mut plan = Plan::new();
    for (i, h) in inv.cores.iter().enumerate() {
        let p = plan.entry(inv.hosts[*h].name.clone()).or_default();
        p.keys.push(format!("core-{i}.key"));
        p.processes.push(core(input, i, *h));
        if input.flamegraph {
            p.processes.push(perf(input, i));
        }
    }
    let driver_hosts = if inv.drivers.is_empty() {
        &inv.cores
    } else {
        &inv.drivers
    };
    for j in 0..input.drivers {
        let h = driver_hosts[j % driver_hosts.len()];
        let on_host = j / driver_hosts.len();
        let p = plan.entry(inv.hosts[h].name.clone()).or_default();
        p.processes.push(driver(input, j, h, on_host));
    }
    let loads = input.clients.max(inv.loads.len());
    for (k, h) in inv.loads.iter().enumerate() {
        let mine: Vec<usize> = (0..loads).filter(|c| c % inv.loads.len() == k).collect();
        let target = inv.core_on(*h);
        let p = plan.entry(inv.hosts[*h].name.clone()).or_default();
        for c in &mine {
            p.processes.push(load(input, *c, loads, target, *h));
        }
        p.processes
            .push(observer(input, &mine, target.unwrap_or(0), *h));
    }
    plan
}

/// Flags every long-running process of host `h` gets: its stop time, its usage file, its WAN.
fn common(input: &PlanInput<'_>, name: &str, h: usize, stop_at_us: u64) -> Vec<String> {
    let (a, b) = input.schedule.window;
    let mut argv = vec![
        "--committee=committee.json".to_string(),
        format!("--stop-at-us={stop_at_us}"),
        format!("--usage-file={}", usage_file(name)),
        format!("--usage-window-us={a},{b}"),
    ];
    if let Some(regions) = input.regions {
        argv.push("--wan=wan.toml".to_string());
        argv.push(format!("--region={}", regions[h]));
    }
    argv
}

fn core(input: &PlanInput<'_>, i: usize, h: usize) -> Process {
    let args = input.args;
    let name = format!("core-{i}");
    let port = args.base_port;
    let metrics = format!("127.0.0.1:{}", port + 1_000);
    let mut argv = vec!["core".to_string()];
    argv.extend(common(input, &name, h, input.schedule.hard_stop_us));
    argv.extend([
        format!("--key=keys/core-{i}.key"),
        format!("--store=store-{i}"),
        format!("--metrics-addr={metrics}"),
    ]);
    argv.extend(args.node_flags().core_flags_of(i));
    let host = &input.inventory.hosts[h];
    let listen = host.listen_on(port).or_else(|| {
        input
            .listen
            .map(|ip| super::inventory::with_port(ip, host.core_port(port)))
    });
    if let Some(address) = listen {
        argv.push(format!("--listen={address}"));
    }
    Process {
        ready: Some(vec![
            "ready".to_string(),
            "--committee=committee.json".to_string(),
            format!("--core={i}"),
            "--timeout-s=30".to_string(),
        ]),
        metrics: Some(metrics),
        ..process(name, "core", argv, false)
    }
}

fn driver(input: &PlanInput<'_>, j: usize, h: usize, on_host: usize) -> Process {
    let name = format!("driver-{j}");
    let metrics = format!(
        "127.0.0.1:{}",
        input.args.base_port + 1_100 + on_host as u16
    );
    let mut argv = vec!["driver".to_string()];
    argv.extend(common(input, &name, h, input.schedule.hard_stop_us));
    // Beside a core, a standalone driver takes it as its home core.
    let home = input.inventory.core_on(h);
    argv.extend(input.args.node_flags().driver_flags(home));
    argv.push(format!("--metrics-addr={metrics}"));
    Process {
        metrics: Some(metrics),
        ..process(name, "driver", argv, false)
    }
}

fn load(
    input: &PlanInput<'_>,
    c: usize,
    clients: usize,
    target: Option<usize>,
    h: usize,
) -> Process {
    let s = input.schedule;
    let name = format!("load-{c}");
    let share = input.rate / clients as u64 + u64::from((c as u64) < input.rate % clients as u64);
    let mut argv = vec!["load".to_string()];
    argv.extend(common(input, &name, h, s.drain_end_us));
    argv.extend([
        format!("--rate={}", share.max(1)),
        format!("--tx-size={}", input.args.tx_size),
        format!("--duration={}", input.args.warmup + input.args.duration),
        format!("--start-at-us={}", s.load_start_us),
        format!(
            "--core={}",
            target.map_or_else(|| "all".to_string(), |i| i.to_string())
        ),
        format!("--client-id={c}"),
        "--json".to_string(),
    ]);
    process(name, "load", argv, true)
}

fn observer(input: &PlanInput<'_>, clients: &[usize], core: usize, h: usize) -> Process {
    let s = input.schedule;
    let name = "observer".to_string();
    let mut argv = vec!["observe".to_string()];
    argv.extend(common(input, &name, h, s.drain_end_us));
    let ids: Vec<String> = clients.iter().map(usize::to_string).collect();
    let loads: Vec<String> = clients
        .iter()
        .map(|c| format!("results/load-{c}.out"))
        .collect();
    argv.extend([
        format!("--core={core}"),
        format!("--clients={}", ids.join(",")),
        format!("--load-start-us={}", s.load_start_us),
        format!("--window-us={},{}", s.window.0, s.window.1),
        format!("--loads={}", loads.join(",")),
        "--out=results/observer.json".to_string(),
    ]);
    process(name, "observer", argv, true)
}

/// perf on core `i` from its start to the end of the window, rendered to text at collect.
fn perf(input: &PlanInput<'_>, i: usize) -> Process {
    let data = format!("results/perf-core-{i}.data");
    let argv = [
        "record",
        "-e",
        "cpu-clock",
        "-F",
        "199",
        "--call-graph",
        "dwarf,16384",
        "-p",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("@PID:core-{i}@"),
        "-o".to_string(),
        data.clone(),
        "--".to_string(),
        "sleep".to_string(),
        input.perf_seconds.to_string(),
    ])
    .collect();
    Process {
        exec: Some("perf".to_string()),
        after: Some(
            ["perf", "script", "-i", &data]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ),
        after_stdout: Some(format!("results/perf-core-{i}.txt")),
        ..process(format!("perf-core-{i}"), "perf", argv, true)
    }
}

fn process(name: String, kind: &'static str, argv: Vec<String>, wait_exit: bool) -> Process {
    Process {
        name,
        kind,
        argv,
        wait_exit,
        ..Process::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::args::LocalCli as Cli;
    use clap::Parser;

    fn inventory() -> Inventory {
        Inventory::from_list_json(
            r#"{"_meta": {"hostvars": {
                   "h1": {"ansible_host": "198.18.0.11"}, "h2": {"ansible_host": "198.18.0.12"},
                   "h3": {"ansible_host": "198.18.0.13", "listen": "0.0.0.0"},
                   "l1": {"ansible_host": "198.18.0.21"}}},
               "cores": {"hosts": ["h1", "h2", "h3"]}, "loads": {"hosts": ["h1", "l1"]}}"#,
        )
        .unwrap()
    }

    fn plan_of(args: &LocalArgs, clients: usize, flamegraph: bool) -> Plan {
        plan_with(&inventory(), args, clients, 3, flamegraph)
    }

    fn plan_with(
        inv: &Inventory,
        args: &LocalArgs,
        clients: usize,
        drivers: usize,
        flamegraph: bool,
    ) -> Plan {
        let schedule = Schedule::new(args, 1_000_000_000, 20);
        build(&PlanInput {
            args,
            inventory: inv,
            regions: None,
            schedule,
            drivers,
            clients,
            rate: 1_001,
            flamegraph,
            listen: None,
            perf_seconds: 40,
        })
    }

    fn flag<'a>(p: &'a Process, name: &str) -> Option<&'a str> {
        p.argv
            .iter()
            .find_map(|a| a.strip_prefix(name)?.strip_prefix('='))
    }

    #[test]
    fn each_core_host_gets_its_core_with_its_home_driver_and_its_key() {
        let args = Cli::parse_from(["x", "--warmup=2", "--duration=10"]).local;
        let plan = plan_with(&inventory(), &args, 2, 0, false);
        assert_eq!(plan.len(), 4);
        for (i, host) in ["h1", "h2", "h3"].iter().enumerate() {
            let p = &plan[*host];
            assert_eq!(p.keys, vec![format!("core-{i}.key")], "only its own key");
            let kinds: Vec<&str> = p.processes.iter().map(|p| p.kind).collect();
            assert!(
                !kinds.contains(&"driver"),
                "no standalone driver by default"
            );
            let core = &p.processes[0];
            assert_eq!(core.kind, "core");
            assert!(core.ready.is_some() && core.metrics.is_some());
            assert!(core.argv.iter().any(|a| a == "--home-driver"), "{core:?}");
            assert_eq!(flag(core, "--home-driver-pipeline-depth"), Some("2"));
        }
        let no_home = Cli::parse_from(["x", "--no-home-drivers", "--drivers=1"]).local;
        let plan = plan_with(&inventory(), &no_home, 2, 1, false);
        assert!(!plan["h1"].processes[0]
            .argv
            .iter()
            .any(|a| a == "--home-driver"));
        assert!(plan["l1"].keys.is_empty());
        let listen = |h: &str| flag(&plan[h].processes[0], "--listen").map(str::to_string);
        assert_eq!(listen("h3").as_deref(), Some("0.0.0.0:7300"));
        assert_eq!(listen("h1"), None, "no listen: the advertised address");
    }

    #[test]
    fn load_is_split_over_load_hosts_and_observed_on_each() {
        let args = Cli::parse_from(["x", "--warmup=2", "--duration=10"]).local;
        let plan = plan_of(&args, 3, false);
        let loads: Vec<&Process> = plan
            .values()
            .flat_map(|h| &h.processes)
            .filter(|p| p.kind == "load")
            .collect();
        assert_eq!(loads.len(), 3);
        let rates: u64 = loads
            .iter()
            .map(|p| flag(p, "--rate").unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(rates, 1_001, "the shares add up to the rate");
        // h1 runs core 0: its load targets that core and its observer follows it.
        let h1 = &plan["h1"].processes;
        let load = h1.iter().find(|p| p.kind == "load").unwrap();
        assert_eq!(flag(load, "--core"), Some("0"));
        let observer = h1.iter().find(|p| p.kind == "observer").unwrap();
        assert_eq!(flag(observer, "--core"), Some("0"));
        assert_eq!(flag(observer, "--clients"), Some("0,2"));
        let l1 = &plan["l1"].processes;
        assert_eq!(
            flag(l1.iter().find(|p| p.kind == "load").unwrap(), "--core"),
            Some("all")
        );
        assert!(loads.iter().all(|p| p.wait_exit));
    }

    #[test]
    fn every_process_stops_by_itself_after_the_load_and_before_the_hard_stop() {
        let args = Cli::parse_from(["x", "--warmup=2", "--duration=10", "--drain=5"]).local;
        let s = Schedule::new(&args, 1_000_000_000, 20);
        assert_eq!(s.load_start_us, 1_020_000_000);
        assert_eq!(s.window, (1_022_000_000, 1_032_000_000));
        let plan = plan_of(&args, 2, true);
        for p in plan.values().flat_map(|h| &h.processes) {
            if p.kind == "perf" {
                assert_eq!(p.exec.as_deref(), Some("perf"));
                assert!(p.argv.iter().any(|a| a.starts_with("@PID:core-")));
                continue;
            }
            let stop: u64 = flag(p, "--stop-at-us").unwrap().parse().unwrap();
            assert!(stop >= s.load_end_us && stop <= s.hard_stop_us, "{p:?}");
            assert_eq!(flag(p, "--usage-window-us"), Some("1022000000,1032000000"));
        }
    }

    #[test]
    fn standalone_drivers_go_to_the_drivers_group_with_the_home_core_beside_them() {
        let inv = Inventory::from_list_json(
            r#"{"_meta": {"hostvars": {}},
               "cores": {"hosts": ["h1", "h2"]}, "drivers": {"hosts": ["h2", "d1"]},
               "loads": {"hosts": ["h1"]}}"#,
        )
        .unwrap();
        let args = Cli::parse_from(["x"]).local;
        let plan = plan_with(&inv, &args, 1, 3, false);
        let drivers = |h: &str| -> Vec<&Process> {
            plan.get(h)
                .map(|p| p.processes.iter().filter(|p| p.kind == "driver").collect())
                .unwrap_or_default()
        };
        assert!(drivers("h1").is_empty(), "h1 is not in group drivers");
        let (on_h2, on_d1) = (drivers("h2"), drivers("d1"));
        assert_eq!((on_h2.len(), on_d1.len()), (2, 1), "spread over the group");
        for d in &on_h2 {
            assert_eq!(flag(d, "--home-core"), Some("1"), "the core on its host");
            assert_eq!(flag(d, "--pipeline-depth"), Some("2"));
        }
        assert_eq!(flag(on_d1[0], "--home-core"), None, "no core on its host");
        let metrics: Vec<_> = on_h2.iter().map(|d| d.metrics.clone()).collect();
        assert_ne!(metrics[0], metrics[1], "two drivers on one host, two ports");
    }
}
