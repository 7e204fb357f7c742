//! `sleepyseal`: the command line of the project.
//!
//! - `sleepyseal genesis | core | driver | load | watch`: the processes of a testbed over QUIC;
//! - `sleepyseal local`: the benchmark harness, all of those processes on one machine;
//! - `sleepyseal cluster`: the same benchmark on an inventory's hosts, through Ansible;
//! - `sleepyseal compare`: reports side by side.
//!
//! Layout: [`node`] holds the commands that are processes of a testbed, [`harness`] the benchmark
//! and chaos harness that starts them; the harness depends on the node commands, never the other
//! way round.

mod harness;
mod node;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// sleepyseal: a BFT consensus with passive cores and stateless drivers.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Benchmark N cores and M drivers on this machine: throughput, latency, CPU, plots.
    Local(Box<harness::LocalArgs>),
    /// The same benchmark on the hosts of an Ansible inventory (every `local` flag applies).
    Cluster(Box<harness::cluster::ClusterArgs>),
    /// Compare reports side by side, with ratios to the first.
    Compare(harness::compare::CompareArgs),
    /// Write a testbed: committee file (public) and one key file per core (secret).
    Genesis(node::genesis::GenesisArgs),
    /// Run one core: a QUIC server that only answers.
    Core(Box<node::core::CoreArgs>),
    /// Run one driver: polls every core and carries headers, votes and certificates between them.
    Driver(node::driver::DriverArgs),
    /// Submit transactions at a fixed rate (open loop).
    Load(node::load::LoadArgs),
    /// Hostile traffic against loopback cores (what `local --flood KIND` runs).
    Flood(node::flood::FloodArgs),
    /// Follow one core's committed sequence.
    Watch(node::watch::WatchArgs),
    /// Wait until a core answers (exit 1 if it does not within the timeout).
    Ready(node::ready::ReadyArgs),
    /// Follow a core's commits and measure this host's own load transactions (cluster runs).
    Observe(node::observe::ObserveArgs),
}

fn main() -> anyhow::Result<()> {
    match run() {
        Err(e) if e.is::<harness::Interrupted>() => {
            eprintln!("interrupted: everything the run started was stopped");
            std::process::exit(130);
        }
        other => other,
    }
}

fn run() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if !matches!(
        cli.command,
        Command::Local(_) | Command::Cluster(_) | Command::Compare(_)
    ) {
        init_logging();
    }
    match cli.command {
        Command::Local(args) => harness::main(local_args(args, &matches), &with_flag),
        Command::Cluster(mut args) => {
            let sub = matches
                .subcommand_matches("cluster")
                .expect("parsed as cluster");
            args.local.wan_batch_defaults(given_in(sub));
            let given = given_in(sub);
            let given = harness::cluster::Given {
                cores: given("cores"),
                drivers: given("drivers"),
                clients: given("clients"),
            };
            harness::cluster::main(*args, given)
        }
        Command::Compare(args) => harness::compare::compare(args),
        Command::Genesis(args) => node::genesis::genesis(args),
        Command::Core(args) => node::core::core(*args),
        Command::Driver(args) => node::driver::driver(args),
        Command::Load(args) => node::load::load(args),
        Command::Flood(args) => node::flood::flood(args),
        Command::Watch(args) => node::watch::watch(args),
        Command::Ready(args) => node::ready::ready(args),
        Command::Observe(args) => node::observe::observe(args),
    }
}

/// The `local` flags of this command line with `flag` added last (it overrides the same flag given
/// before): one run of a `--sweep`.
fn with_flag(flag: &str) -> anyhow::Result<harness::LocalArgs> {
    let command = Cli::command().mut_subcommand("local", |c| c.args_override_self(true));
    let argv = std::env::args_os().chain([flag.into()]);
    let matches = command.try_get_matches_from(argv)?;
    match Cli::from_arg_matches(&matches)?.command {
        Command::Local(args) => Ok(local_args(args, &matches)),
        _ => anyhow::bail!("a sweep runs with `sleepyseal local`"),
    }
}

/// The flags of `local` parsed into `args`, with the WAN batch sizes where `matches` gave none.
fn local_args(mut args: Box<harness::LocalArgs>, matches: &clap::ArgMatches) -> harness::LocalArgs {
    let sub = matches
        .subcommand_matches("local")
        .expect("parsed as local");
    args.wan_batch_defaults(given_in(sub));
    *args
}

/// Whether a flag (by its argument id) was given on the command line of `sub`.
fn given_in(sub: &clap::ArgMatches) -> impl Fn(&str) -> bool + '_ {
    |id: &str| sub.value_source(id) == Some(ValueSource::CommandLine)
}

/// Logs to stderr at `info` unless `RUST_LOG` says otherwise.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
