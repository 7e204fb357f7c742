//! `sleepyseal genesis`: writes a testbed's committee file and key files.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use sleepyseal_core::committee::{
    ProtocolConstants, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_GC_DEPTH,
};
use sleepyseal_net::GenesisOptions;

use super::{DEFAULT_CORES, DEFAULT_TESTBED_DIR};

/// Flags of `sleepyseal genesis`.
#[derive(Args, Debug)]
pub struct GenesisArgs {
    /// Number of cores (validators).
    #[arg(long, default_value_t = DEFAULT_CORES)]
    cores: usize,
    /// Stake per core, comma separated (default: 1 each).
    #[arg(long, value_delimiter = ',')]
    stakes: Option<Vec<u64>>,
    /// Directory to write committee.json and core-<i>.key into.
    #[arg(long, default_value = DEFAULT_TESTBED_DIR)]
    dir: PathBuf,
    /// Host every core listens on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port of core 0; core i listens on base-port + i.
    #[arg(long, default_value_t = 7100)]
    base_port: u16,
    /// Derive the ed25519 keys from this seed (reproducible local testbeds only; default: random).
    #[arg(long)]
    seed: Option<u64>,
    /// GC_DEPTH: rounds of the DAG kept for consensus below the last committed leader. A
    /// protocol constant of the instance: every core reads it from the committee file.
    #[arg(long, default_value_t = DEFAULT_GC_DEPTH)]
    gc_depth: u64,
    /// CHECKPOINT_INTERVAL: rounds between checkpoint boundaries, a protocol constant too.
    #[arg(long, default_value_t = DEFAULT_CHECKPOINT_INTERVAL)]
    checkpoint_interval: u64,
}

/// Writes a testbed's committee file and key files.
pub fn genesis(args: GenesisArgs) -> anyhow::Result<()> {
    let stakes = args.stakes.unwrap_or_else(|| vec![1; args.cores]);
    if stakes.len() != args.cores {
        bail!(
            "--stakes lists {} stakes for {} cores",
            stakes.len(),
            args.cores
        );
    }
    let path = sleepyseal_net::genesis(
        &args.dir,
        &GenesisOptions {
            stakes,
            host: args.host,
            base_port: args.base_port,
            seed: args.seed,
            addresses: None,
            constants: ProtocolConstants {
                gc_depth: args.gc_depth,
                checkpoint_interval: args.checkpoint_interval,
            },
        },
    )?;
    println!(
        "wrote {} and {} key files in {}",
        path.display(),
        args.cores,
        args.dir.display()
    );
    Ok(())
}
