//! `sleepyseal cluster`: the benchmark on hosts reached over SSH, through Ansible.
//!
//! One run: read the inventory ([`inventory`]), write the stage (committee with one address per
//! core host, keys, the WAN profile with every host's region), run `deploy/prepare.yml`
//! (preflight: socket buffers and a clock report; deploy: the binary built once here, the
//! committee, each core's key to its own host only), fix the schedule and the plan ([`plan`]:
//! every process with absolute start and stop times), run `deploy/start.yml` (cores, readiness,
//! drivers, observers, load), wait for the run's end, run `deploy/finish.yml` (collect, stop,
//! fetch, clean up), and build the same report as `local` from the files that came back
//! ([`results`]), with a `cluster` section (hosts, regions, WAN profile, clock bound
//! ([`clock`]), agreement of the observed cores' commit hashes).
//!
//! On Ctrl-C, SIGTERM or a failed playbook (an unreachable host, a process that did not start),
//! the harness ends the playbook in progress, runs `deploy/stop.yml` on every host (by pid file)
//! and says which host failed and why ([`ansible`]). Every process also stops by itself at its
//! absolute stop time, so none outlives the run even if the controller is gone.

pub mod ansible;
pub mod clock;
mod flamegraph;
pub mod inventory;
pub mod plan;
pub mod results;
mod run;

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use super::args::LocalArgs;
use super::interrupt_flag;
use super::output::each_run;
use crate::node::runtime;
use crate::node::transaction::unix_micros;

/// Flags of `sleepyseal cluster`: every flag of `local`, and where the hosts are.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Ansible inventory (YAML or INI) with groups `cores` (each core runs its home driver in its
    /// process), `drivers` (hosts that also run a standalone driver, with the home core of the
    /// core on the same host; default: none) and `loads`; optional host variables `region`,
    /// `listen`, `advertise`.
    #[arg(long)]
    pub inventory: PathBuf,
    /// The IP cores listen on when their host names none (`listen` host variable): e.g.
    /// 0.0.0.0 for hosts behind NAT. Default: the address the committee advertises.
    #[arg(long)]
    pub listen: Option<String>,
    /// Seconds from the start of `deploy/start.yml` to the load's start: enough for every core,
    /// driver, observer and load client to be started over SSH (on 4 busy test hosts it takes
    /// 13–26 s; the run fails, naming this flag, if it took longer).
    #[arg(long, default_value_t = 30)]
    pub start_budget_s: u64,
    /// Record every core with perf and write a flamegraph SVG per core beside the report.
    #[arg(long)]
    pub flamegraph: bool,
    /// Directory on every host for the run's files (`<root>/<run>/<host>`; removed afterwards
    /// unless --keep-testbed).
    #[arg(long, default_value = "/tmp/sleepyseal")]
    pub remote_root: String,
    /// The deployment's playbooks.
    #[arg(long, default_value = "deploy")]
    pub deploy_dir: PathBuf,
    /// The project's Ansible launcher (installs ansible-core into a virtual environment on first
    /// use).
    #[arg(long, default_value = "scripts/ansible.sh")]
    pub ansible: PathBuf,
    #[command(flatten)]
    pub local: LocalArgs,
}

/// Which of `--cores`, `--drivers`, `--clients` were given on the command line (the cluster's
/// defaults for them come from the inventory).
#[derive(Clone, Copy, Debug, Default)]
pub struct Given {
    /// `--cores`.
    pub cores: bool,
    /// `--drivers`.
    pub drivers: bool,
    /// `--clients`.
    pub clients: bool,
}

/// Runs the benchmark (or a sweep) on the inventory's hosts and prints its report.
pub fn main(mut args: ClusterArgs, given: Given) -> anyhow::Result<()> {
    let local = &args.local;
    if local.chaos {
        bail!("--chaos runs with `sleepyseal local` only");
    }
    if local.crash > 0 {
        bail!("--crash runs with `sleepyseal local` only");
    }
    if local.flood.is_some() {
        bail!("--flood runs with `sleepyseal local` only (it floods loopback cores)");
    }
    let ansible = ansible::Ansible {
        script: args.ansible.clone(),
        deploy: args.deploy_dir.clone(),
        inventory: args.inventory.clone(),
    };
    for (what, path) in [
        ("inventory", &args.inventory),
        ("deploy dir", &args.deploy_dir),
    ] {
        if !path.exists() {
            bail!("{what} {} does not exist", path.display());
        }
    }
    eprintln!(
        "== ansible (installed on first use by {})",
        args.ansible.display()
    );
    ansible.install()?;
    if args.flamegraph {
        flamegraph::install()?;
    }
    let inventory = inventory::Inventory::from_list_json(&ansible.list_inventory()?)
        .with_context(|| format!("inventory {}", args.inventory.display()))?;
    if args.local.sweep.is_some() {
        bail!("--sweep runs with `local`; for a cluster, run once per value");
    }
    resolve_counts(&mut args, given, &inventory)?;
    args.local.validate()?;
    let out = args.local.out.clone().unwrap_or_else(|| {
        PathBuf::from("results").join(format!("cluster-{}", unix_micros() / 1_000_000))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let out = out.canonicalize()?;
    let rt = runtime("harness")?;
    let interrupted = interrupt_flag(&rt);
    let runs = [(None, args.local.clone())];
    each_run(&runs, &out, &interrupted, |_, rate, dir| {
        run::run_once(&args, &ansible, &inventory, rate, dir, &interrupted)
    })
}

/// Cores from the inventory; by default a standalone driver per host of group `drivers` (none
/// if it is empty: each core's home driver runs in its process) and a load client per load host.
fn resolve_counts(
    args: &mut ClusterArgs,
    given: Given,
    inventory: &inventory::Inventory,
) -> anyhow::Result<()> {
    let hosts = inventory.cores.len();
    if given.cores && args.local.cores != hosts {
        bail!(
            "--cores {} but the inventory's group `cores` has {hosts} hosts (one core each)",
            args.local.cores
        );
    }
    args.local.cores = hosts;
    if !given.drivers {
        args.local.drivers = inventory.drivers.len();
    }
    if !given.clients {
        args.local.clients = inventory.loads.len();
    }
    if args.local.clients < inventory.loads.len() {
        bail!(
            "--clients {} is fewer than the {} load hosts (each runs at least one)",
            args.local.clients,
            inventory.loads.len()
        );
    }
    Ok(())
}
