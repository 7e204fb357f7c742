//! One cluster run, phase by phase (see the module above for the order and the teardown).

use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sleepyseal_core::AuthorityIndex;
use sleepyseal_net::GenesisOptions;

use super::ansible::Ansible;
use super::clock::{self, HostClock};
use super::inventory::Inventory;
use super::plan::{self, Plan, PlanInput, Schedule};
use super::{results, ClusterArgs};
use crate::harness::local::run_config;
use crate::harness::report::{ClusterSection, Report};
use crate::harness::wan;
use crate::node::transaction::unix_micros;

/// The vars file every playbook of a run is given (see deploy/README.md).
#[derive(Serialize)]
struct Vars<'a> {
    sleepyseal_binary: String,
    sleepyseal_stage: String,
    sleepyseal_remote_root: &'a str,
    sleepyseal_run_id: &'a str,
    sleepyseal_collect_dir: String,
    sleepyseal_keep_remote: bool,
    sleepyseal_wait_exit_timeout_s: u64,
    sleepyseal_plan: &'a Plan,
}

/// What the run's stage holds besides files: the WAN's regions per host.
struct Stage {
    /// Per host (index into the inventory), its region, when a WAN profile is emulated.
    regions: Option<Vec<String>>,
    /// The profile's name and its regions.
    wan: Option<(String, Vec<String>)>,
}

/// A run in progress.
struct Run<'a> {
    args: &'a ClusterArgs,
    ansible: &'a Ansible,
    inventory: &'a Inventory,
    rate: u64,
    dir: &'a Path,
    run_id: String,
    stage: Stage,
}

/// Runs once at `rate` with its files in `dir`; tears everything down on failure.
pub fn run_once(
    args: &ClusterArgs,
    ansible: &Ansible,
    inventory: &Inventory,
    rate: u64,
    dir: &Path,
    interrupted: &AtomicBool,
) -> anyhow::Result<Report> {
    for sub in ["stage", "hosts"] {
        let _ = std::fs::remove_dir_all(dir.join(sub));
    }
    let _ = std::fs::remove_file(dir.join("ansible.log"));
    let stage = write_stage(args, inventory, &dir.join("stage"))?;
    let run = Run {
        args,
        ansible,
        inventory,
        rate,
        dir,
        run_id: format!("run-{}-{rate}", unix_micros() / 1_000_000),
        stage,
    };
    match run.phases(interrupted) {
        Ok(report) => Ok(report),
        Err(e) => {
            eprintln!("== teardown after: {e:#}");
            let started = Instant::now();
            match run.teardown() {
                Ok(()) => eprintln!(
                    "== teardown done in {:.1} s: every process of the run stopped on every host",
                    started.elapsed().as_secs_f64()
                ),
                Err(t) => eprintln!(
                    "== teardown in {:.1} s: {t:#}; the other hosts were stopped, and the \
                     processes of a host it could not reach stop by themselves at their stop time",
                    started.elapsed().as_secs_f64()
                ),
            }
            Err(e)
        }
    }
}

impl Run<'_> {
    fn phases(&self, interrupted: &AtomicBool) -> anyhow::Result<Report> {
        let hosts = self.inventory.hosts.len();
        let provisional = self.plan(Schedule::new(&self.args.local, unix_micros(), 0));
        let vars = self.write_vars(&provisional)?;
        eprintln!("== prepare: preflight and deploy on {hosts} hosts");
        self.playbook("prepare.yml", &vars, Duration::from_secs(900), interrupted)?;
        let clocks = self.clocks();
        let budget = self.args.start_budget_s;
        let schedule = Schedule::new(&self.args.local, unix_micros(), budget);
        let plan = self.plan(schedule);
        let vars = self.write_vars(&plan)?;
        eprintln!("== start: cores, readiness, drivers, observers, load (budget {budget} s)");
        let limit = Duration::from_secs(budget + 60);
        self.playbook("start.yml", &vars, limit, interrupted)?;
        let late_ms = unix_micros().saturating_sub(schedule.load_start_us) / 1_000;
        if late_ms > 0 {
            bail!("starting took {late_ms} ms more than --start-budget-s {budget}: raise it");
        }
        self.wait_for_load(&schedule, interrupted)?;
        eprintln!("== finish: collect, stop, fetch");
        let limit = Duration::from_secs(self.args.local.drain + 360);
        self.playbook("finish.yml", &vars, limit, interrupted)?;
        self.report(&plan, &schedule, &clocks)
    }

    fn plan(&self, schedule: Schedule) -> Plan {
        let window_end = schedule.window.1;
        plan::build(&PlanInput {
            args: &self.args.local,
            inventory: self.inventory,
            regions: self.stage.regions.as_deref(),
            schedule,
            drivers: self.args.local.drivers,
            clients: self.args.local.clients,
            rate: self.rate,
            flamegraph: self.args.flamegraph,
            listen: self.args.listen.as_deref(),
            perf_seconds: window_end.saturating_sub(unix_micros()) / 1_000_000 + 1,
        })
    }

    fn write_vars(&self, plan: &Plan) -> anyhow::Result<PathBuf> {
        let binary = std::env::current_exe().context("find the sleepyseal executable")?;
        let vars = Vars {
            sleepyseal_binary: binary.display().to_string(),
            sleepyseal_stage: self.dir.join("stage").display().to_string(),
            sleepyseal_remote_root: &self.args.remote_root,
            sleepyseal_run_id: &self.run_id,
            sleepyseal_collect_dir: self.dir.join("hosts").display().to_string(),
            sleepyseal_keep_remote: self.args.local.keep_testbed,
            sleepyseal_wait_exit_timeout_s: self.args.local.drain + 60,
            sleepyseal_plan: plan,
        };
        let path = self.dir.join("vars.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&vars)?)?;
        Ok(path)
    }

    fn playbook(
        &self,
        name: &str,
        vars: &Path,
        limit: Duration,
        interrupted: &AtomicBool,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        self.ansible
            .playbook(name, vars, self.dir, limit, interrupted)
            .map_err(|e| anyhow!(e))?;
        eprintln!("   {name} took {:.1} s", started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Stops every process of the run on every host (by pid file), fetches logs, cleans up.
    fn teardown(&self) -> anyhow::Result<()> {
        let vars = self.dir.join("vars.json");
        let never = AtomicBool::new(false);
        self.ansible
            .playbook(
                "stop.yml",
                &vars,
                self.dir,
                Duration::from_secs(300),
                &never,
            )
            .map_err(|e| anyhow!(e))
    }

    /// A progress bar until the load has ended; fails on an interrupt.
    fn wait_for_load(&self, schedule: &Schedule, interrupted: &AtomicBool) -> anyhow::Result<()> {
        let total_s = (schedule.load_end_us - schedule.load_start_us) / 1_000_000;
        let bar = ProgressBar::new(total_s);
        bar.set_style(
            ProgressStyle::with_template("[{bar:30}] {pos:>3}/{len} s {msg}")
                .expect("a valid template")
                .progress_chars("#."),
        );
        loop {
            if interrupted.load(Ordering::SeqCst) {
                bar.abandon_with_message("interrupted");
                return Err(crate::harness::Interrupted.into());
            }
            let now = unix_micros();
            if now >= schedule.load_end_us {
                break;
            }
            let elapsed = now.saturating_sub(schedule.load_start_us) / 1_000_000;
            bar.set_position(elapsed.min(total_s));
            bar.set_message(if now < schedule.window.0 {
                "warm-up"
            } else {
                "measuring"
            });
            std::thread::sleep(Duration::from_millis(200));
        }
        bar.finish_and_clear();
        Ok(())
    }

    /// Each host's clock bound, from its preflight record.
    fn clocks(&self) -> Vec<Option<HostClock>> {
        let hosts_dir = self.dir.join("hosts");
        let controller: Option<String> = std::fs::read_to_string(hosts_dir.join("controller.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("boot_id")?.as_str().map(str::to_string));
        self.inventory
            .hosts
            .iter()
            .map(|h| {
                let file = hosts_dir.join(&h.name).join("preflight.json");
                clock::host_clock(&file, controller.as_deref())
            })
            .collect()
    }

    fn report(
        &self,
        plan: &Plan,
        schedule: &Schedule,
        clocks: &[Option<HostClock>],
    ) -> anyhow::Result<Report> {
        let mut collected = results::read(&self.dir.join("hosts"), plan);
        for r in &collected {
            for m in &r.missing {
                eprintln!("warning: {}: missing {m}", r.name);
            }
        }
        let config = run_config(&self.args.local, self.rate, AuthorityIndex(0));
        let (mut report, agreement) = results::build(config, &mut collected)?;
        let window_s = (schedule.window.1 - schedule.window.0) as f64 / 1e6;
        let involved: Vec<Option<HostClock>> = self
            .inventory
            .hosts
            .iter()
            .zip(clocks)
            .filter(|(h, _)| plan.contains_key(&h.name))
            .map(|(_, c)| c.clone())
            .collect();
        let hosts = results::hosts(
            self.inventory,
            plan,
            &collected,
            clocks,
            self.stage.regions.as_deref(),
            window_s,
        );
        let flamegraphs = if self.args.flamegraph {
            super::flamegraph::render_all(self.dir, plan)
        } else {
            Vec::new()
        };
        report.config.watched_core = agreement.cores.first().copied().unwrap_or(0);
        report.cluster = Some(ClusterSection {
            inventory: self.args.inventory.display().to_string(),
            hosts,
            wan_profile: self.stage.wan.as_ref().map(|(n, _)| n.clone()),
            regions: self
                .stage
                .wan
                .as_ref()
                .map(|(_, r)| r.clone())
                .unwrap_or_default(),
            clock_bound_ms: clock::pairwise_bound_ms(&involved),
            agreement,
            flamegraphs,
        });
        Ok(report)
    }
}

/// Writes the committee (one address per core host), the keys and the WAN profile into `stage`.
fn write_stage(args: &ClusterArgs, inventory: &Inventory, stage: &Path) -> anyhow::Result<Stage> {
    let keys = stage.join("keys");
    let port = args.local.base_port;
    let addresses = inventory
        .cores
        .iter()
        .map(|h| resolve(&inventory.hosts[*h].advertised(port)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let committee = sleepyseal_net::genesis(
        &keys,
        &GenesisOptions {
            stakes: args
                .local
                .stakes
                .clone()
                .unwrap_or_else(|| vec![1; inventory.cores.len()]),
            host: String::new(),
            base_port: port,
            seed: None,
            addresses: Some(addresses),
            constants: args.local.constants(),
        },
    )?;
    std::fs::rename(&committee, stage.join("committee.json"))?;
    let Some(profile) = &args.local.wan else {
        return Ok(Stage {
            regions: None,
            wan: None,
        });
    };
    let assigned = wan::assign(
        profile,
        &inventory
            .hosts
            .iter()
            .map(|h| (resolve(&h.advertised(port)), h.region.clone()))
            .map(|(a, r)| Ok((a?.parse::<std::net::SocketAddr>()?.ip(), r)))
            .collect::<anyhow::Result<Vec<_>>>()?,
    )?;
    std::fs::write(stage.join("wan.toml"), assigned.toml)?;
    Ok(Stage {
        regions: Some(assigned.host_regions),
        wan: Some((assigned.name, assigned.regions)),
    })
}

/// `host:port` with `host` resolved to an IP address (the committee holds addresses).
fn resolve(host_port: &str) -> anyhow::Result<String> {
    let address = host_port
        .to_socket_addrs()
        .with_context(|| format!("resolve {host_port}"))?
        .min_by_key(|a| a.is_ipv6())
        .ok_or_else(|| anyhow!("{host_port} resolves to no address"))?;
    Ok(address.to_string())
}
