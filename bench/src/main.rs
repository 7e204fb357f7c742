//! `sleepyseal`: the command line of the project.
//!
//! `sleepyseal sim` runs the deterministic simulator over many seeds and reports safety
//! violations and liveness figures. (Process commands — genesis, core, driver, load, local —
//! arrive with the network layer.)

mod sim;

use clap::{Parser, Subcommand};

/// sleepyseal: a BFT consensus with passive cores and stateless drivers.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the deterministic simulator over many seeds and check every invariant.
    Sim(sim::SimArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim(args) => sim::main(args),
    }
}
