//! The flags of `sleepyseal local` (benchmark and chaos run alike).

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use sleepyseal_core::committee::{ProtocolConstants, DEFAULT_CHECKPOINT_INTERVAL};
use sleepyseal_core::machine::{
    DEFAULT_BATCH_SIZE_BYTES, DEFAULT_GC_DEPTH, DEFAULT_LEADER_TIMEOUT_MS,
    DEFAULT_STRAGGLER_WAIT_MS,
};
use sleepyseal_core::verify::VerifierConfig;
use sleepyseal_core::CoreConfig;
use sleepyseal_driver::DriverConfig;
use sleepyseal_net::ServerOptions;

use super::testbed::NodeFlags;
use crate::node::flood::FloodKind;
use crate::node::load::{DEFAULT_RATE, DEFAULT_TX_SIZE};
use crate::node::transaction::TX_HEADER_BYTES;
use crate::node::DEFAULT_CORES;

/// Flags of `sleepyseal local`.
#[derive(Args, Debug, Clone)]
pub struct LocalArgs {
    /// Number of cores (validators).
    #[arg(long, default_value_t = DEFAULT_CORES)]
    pub cores: usize,
    /// Standalone driver processes, beside the driver each core runs in its own process (its
    /// home driver, DESIGN.md "Deployment shape"). A standalone driver has no home core: it
    /// carries every payload eagerly.
    #[arg(long, default_value_t = 0)]
    pub drivers: usize,
    /// Run the cores without their in-process home drivers (then --drivers must be at least 1):
    /// the shape before home drivers, for comparisons.
    #[arg(long)]
    pub no_home_drivers: bool,
    /// The first K cores run without their home driver, as if it had died: their payloads reach
    /// the other cores only by on-demand and grace-period carriage (DESIGN.md "Who carries
    /// payloads"), which this exercises, on loopback or under --wan.
    #[arg(long, default_value_t = 0)]
    pub dead_home_drivers: usize,
    /// Stake per core, comma separated (default: 1 each).
    #[arg(long, value_delimiter = ',')]
    pub stakes: Option<Vec<u64>>,
    /// Input rate, transactions per second (open loop).
    #[arg(long, default_value_t = DEFAULT_RATE)]
    pub rate: u64,
    /// A sweep: one fresh run per rate, comma separated (overrides --rate).
    #[arg(long, value_delimiter = ',')]
    pub rates: Option<Vec<u64>>,
    /// A sweep of any other flag: one fresh run per value, e.g. `batch-size=100000,500000,1000000`
    /// (with --rate, not --rates). The table and plot show each value side by side.
    #[arg(long, value_name = "FLAG=V1,V2,...")]
    pub sweep: Option<String>,
    /// Bytes per transaction (at least 24).
    #[arg(long, default_value_t = DEFAULT_TX_SIZE)]
    pub tx_size: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// Most seconds to wait, after the load stops, for acknowledged transactions to commit.
    #[arg(long, default_value_t = 10)]
    pub drain: u64,
    /// Payload bytes per header (`sleepyseal core --batch-size`; 2000000 under --wan).
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE_BYTES)]
    pub batch_size: usize,
    /// Largest payload bytes per header, reached with a backlog (`sleepyseal core
    /// --max-batch-size`; at least --batch-size; 6000000 under --wan).
    #[arg(long, default_value_t = CoreConfig::default().max_batch_size_bytes)]
    pub max_batch_size: usize,
    /// How long (ms) a core may wait for a full batch (`sleepyseal core --max-batch-delay-ms`).
    #[arg(long, default_value_t = CoreConfig::default().max_batch_delay_ms)]
    pub max_batch_delay_ms: u64,
    /// How long (ms) a core with a quorum waits for a live straggler's certificate
    /// (`sleepyseal core --straggler-wait-ms`).
    #[arg(long, default_value_t = DEFAULT_STRAGGLER_WAIT_MS)]
    pub straggler_wait_ms: u64,
    /// Signatures per verification batch (`sleepyseal core --verify-batch`).
    #[arg(long, default_value_t = VerifierConfig::default().batch_size)]
    pub verify_batch: usize,
    /// Signature verification threads per core.
    #[arg(long, default_value_t = ServerOptions::default().verify_threads)]
    pub verify_threads: usize,
    /// Requests in flight per core per driver (`sleepyseal driver --pipeline-depth`, `sleepyseal
    /// core --home-driver-pipeline-depth`).
    #[arg(long, default_value_t = DriverConfig::default().pipeline_depth)]
    pub pipeline_depth: usize,
    /// GC_DEPTH: rounds of the DAG kept for consensus below the last committed leader. A
    /// protocol constant: written into the testbed's committee at genesis, so every core has it.
    #[arg(long, default_value_t = DEFAULT_GC_DEPTH)]
    pub gc_depth: u64,
    /// CHECKPOINT_INTERVAL: rounds between checkpoint boundaries. A protocol constant, written
    /// into the committee at genesis like --gc-depth.
    #[arg(long, default_value_t = DEFAULT_CHECKPOINT_INTERVAL)]
    pub checkpoint_interval: u64,
    /// How long (ms) a core waits for the leader, and for votes on it, before advancing without
    /// them (`sleepyseal core --leader-timeout-ms` and `--vote-timeout-ms`).
    #[arg(long, default_value_t = DEFAULT_LEADER_TIMEOUT_MS)]
    pub leader_timeout: u64,
    /// Cores that fail: the last K cores are never started (or killed at --crash-at).
    #[arg(long, default_value_t = 0)]
    pub crash: usize,
    /// Seconds after the load starts at which the --crash cores are killed (0: never started).
    #[arg(long, default_value_t = 0)]
    pub crash_at: u64,
    /// Load client processes (the rate is split between them).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// QUIC port of core 0; core i uses base-port + i, metrics use base-port + 1000 + i (cores)
    /// and base-port + 1100 + j (drivers).
    #[arg(long, default_value_t = 7300)]
    pub base_port: u16,
    /// Directory for the report, plots, logs and metrics (default: results/local-<unix time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep the testbed (keys, stores) in the output directory instead of deleting it.
    #[arg(long)]
    pub keep_testbed: bool,
    /// Print the report as one JSON object on stdout (an array for a sweep).
    #[arg(long)]
    pub json: bool,
    /// Instead of a benchmark, a chaos run with a workload check: kill -9 and restart each core,
    /// keep one core away for --chaos-away-s under load (it rejoins through a checkpoint and
    /// fills its gap), SIGSTOP a core for 10 s, kill a standalone driver, restart every core in
    /// turn; then compare every core's committed sequence and check each acknowledged
    /// transaction committed exactly once. Every core runs its home driver (unless
    /// --no-home-drivers); the standalone drivers (--drivers, at least 2) have home cores. Uses
    /// --cores (≥ 4), --rate and --tx-size (e.g. --rate 2000 --tx-size 64).
    #[arg(long)]
    pub chaos: bool,
    /// With --chaos: how long one core stays killed under load before it restarts (0: skip
    /// that step). Anything beyond about a second outlasts what the others retain, so the core
    /// comes back through a certified checkpoint and a gap fill (PROTOCOL.md §8a).
    #[arg(long, default_value_t = 60)]
    pub chaos_away_s: u64,
    /// Emulate a wide-area network: a profile file, or the name of one in deploy/wan/
    /// (one-region, two-region, multi-region). Every process delays, jitters, drops and
    /// rate-limits its outgoing datagrams by the destination's region; in `local` each process
    /// gets its own 127.x address so it can be placed in a region.
    #[arg(long)]
    pub wan: Option<PathBuf>,
    /// Hostile traffic against every core through the measured window (`sleepyseal flood`, its
    /// own process): `connections` (idle, reopened), `streams` (GetState polls), `half-open`,
    /// `oversized`, `submit` (junk transactions), `slow-readers`, or `all`; from
    /// --flood-sources /24 prefixes of 127.100.0.0/14. Mid-window the harness polls every core
    /// as a new driver would, from an unseen prefix and from 127.0.0.1, and reports how soon
    /// each answered. Loopback only.
    #[arg(long, value_enum)]
    pub flood: Option<FloodKind>,
    /// With --flood: distinct source prefixes.
    #[arg(long, default_value_t = 64)]
    pub flood_sources: usize,
    /// With --flood: connections per source to every core.
    #[arg(long, default_value_t = 4)]
    pub flood_connections: usize,
    /// With --flood: streams per connection.
    #[arg(long, default_value_t = 16)]
    pub flood_streams: usize,
}

/// `--batch-size` under `--wan` unless given: across regions a round takes a few round trips, so
/// a header carries more (README, tuning guide: multi-region at 50,000 tx/s is saturated at
/// 36,968 with the loopback sizes and keeps up with these).
pub const WAN_BATCH_SIZE_BYTES: usize = 2_000_000;
/// `--max-batch-size` under `--wan` unless given.
pub const WAN_MAX_BATCH_SIZE_BYTES: usize = 6_000_000;

impl LocalArgs {
    /// Under `--wan`, the batch sizes not given on the command line (`given` says which were)
    /// become the WAN ones.
    pub fn wan_batch_defaults(&mut self, given: impl Fn(&str) -> bool) {
        if self.wan.is_none() {
            return;
        }
        if !given("batch_size") {
            let cap = if given("max_batch_size") {
                self.max_batch_size
            } else {
                usize::MAX
            };
            self.batch_size = WAN_BATCH_SIZE_BYTES.min(cap);
        }
        if !given("max_batch_size") {
            self.max_batch_size = WAN_MAX_BATCH_SIZE_BYTES.max(self.batch_size);
        }
    }

    /// The input rate of each run: `--rates`, else `--rate`.
    pub fn run_rates(&self) -> Vec<u64> {
        self.rates.clone().unwrap_or_else(|| vec![self.rate])
    }

    /// The protocol constants the testbed's committee is made with.
    pub fn constants(&self) -> ProtocolConstants {
        ProtocolConstants {
            gc_depth: self.gc_depth,
            checkpoint_interval: self.checkpoint_interval,
        }
    }

    /// The flags every core and driver of the run is started with.
    pub fn node_flags(&self) -> NodeFlags {
        NodeFlags {
            batch_size: self.batch_size,
            max_batch_size: self.max_batch_size.max(self.batch_size),
            max_batch_delay_ms: self.max_batch_delay_ms,
            straggler_wait_ms: self.straggler_wait_ms,
            verify_batch: self.verify_batch,
            verify_threads: self.verify_threads,
            leader_timeout_ms: self.leader_timeout,
            pipeline_depth: self.pipeline_depth,
            home_drivers: !self.no_home_drivers,
            dead_home_drivers: self.dead_home_drivers,
        }
    }

    /// Fails on flags that cannot make a run.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.cores == 0 || self.cores > 100 {
            bail!("--cores must be in 1..=100");
        }
        self.constants()
            .check()
            .map_err(|e| anyhow::anyhow!("--gc-depth / --checkpoint-interval: {e}"))?;
        if self.drivers == 0 && self.no_home_drivers {
            bail!("--no-home-drivers needs --drivers 1 or more (liveness needs a driver)");
        }
        if let Some(stakes) = &self.stakes {
            if stakes.len() != self.cores {
                bail!(
                    "--stakes lists {} stakes for {} cores",
                    stakes.len(),
                    self.cores
                );
            }
        }
        if self.dead_home_drivers > 0 && self.no_home_drivers {
            bail!("--dead-home-drivers and --no-home-drivers exclude each other");
        }
        if self.dead_home_drivers >= self.cores - self.crash.min(self.cores) && self.drivers == 0 {
            bail!(
                "--dead-home-drivers {} leaves no live driver (liveness needs one): \
                 fewer, or --drivers 1",
                self.dead_home_drivers
            );
        }
        if self.crash >= self.cores {
            bail!("--crash must leave at least one core running");
        }
        if self.crash_at > 0 && self.crash == 0 {
            bail!("--crash-at needs --crash K");
        }
        if self.tx_size < TX_HEADER_BYTES {
            bail!("--tx-size must be at least {TX_HEADER_BYTES} (client id, sequence, send time)");
        }
        if self.duration == 0 {
            bail!("--duration must be positive");
        }
        if self.clients == 0 {
            bail!("--clients must be at least 1");
        }
        if self.flood.is_some() {
            if self.chaos || self.wan.is_some() {
                bail!("--flood runs with a plain benchmark (no --chaos, no --wan)");
            }
            use crate::node::flood::{MAX_CONNECTIONS, MAX_SOURCES, MAX_STREAMS};
            if !(1..=MAX_SOURCES).contains(&self.flood_sources)
                || !(1..=MAX_CONNECTIONS).contains(&self.flood_connections)
                || !(1..=MAX_STREAMS).contains(&self.flood_streams)
            {
                bail!(
                    "--flood-sources must be in 1..={MAX_SOURCES}, --flood-connections in \
                     1..={MAX_CONNECTIONS}, --flood-streams in 1..={MAX_STREAMS}"
                );
            }
        }
        self.validate_rates_and_ports()
    }

    fn validate_rates_and_ports(&self) -> anyhow::Result<()> {
        let rates = self.run_rates();
        if rates.is_empty() || rates.contains(&0) {
            bail!("rates must be positive");
        }
        if rates.iter().any(|r| *r < self.clients as u64) {
            bail!("every rate must be at least one transaction per second per client");
        }
        let top = usize::from(self.base_port) + 1_100 + self.drivers;
        if top > usize::from(u16::MAX) || self.cores > 1_000 {
            bail!(
                "--base-port {} leaves no room for the metrics ports",
                self.base_port
            );
        }
        Ok(())
    }
}

/// The flags of `sleepyseal local` alone, for tests that parse a command line.
#[cfg(test)]
#[derive(clap::Parser)]
pub(crate) struct LocalCli {
    #[command(flatten)]
    pub(crate) local: LocalArgs,
}

#[cfg(test)]
mod tests {
    use clap::parser::ValueSource;
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    /// `sleepyseal local ARGS` as `main` parses it.
    fn parse(args: &[&str]) -> LocalArgs {
        let argv = std::iter::once("local").chain(args.iter().copied());
        let matches = LocalCli::command().get_matches_from(argv);
        let mut cli = LocalCli::from_arg_matches(&matches).expect("valid flags");
        cli.local
            .wan_batch_defaults(|id| matches.value_source(id) == Some(ValueSource::CommandLine));
        cli.local
    }

    #[test]
    fn batch_sizes_under_wan_default_larger_and_given_ones_stand() {
        let loopback = parse(&[]);
        let core = CoreConfig::default();
        assert_eq!(
            (loopback.batch_size, loopback.max_batch_size),
            (core.batch_size_bytes, core.max_batch_size_bytes)
        );
        let wan = parse(&["--wan", "multi-region"]);
        assert_eq!(
            (wan.batch_size, wan.max_batch_size),
            (WAN_BATCH_SIZE_BYTES, WAN_MAX_BATCH_SIZE_BYTES)
        );
        let given = parse(&["--wan", "multi-region", "--batch-size", "300000"]);
        assert_eq!(
            (given.batch_size, given.max_batch_size),
            (300_000, WAN_MAX_BATCH_SIZE_BYTES)
        );
        let small_max = parse(&["--wan", "multi-region", "--max-batch-size", "1000000"]);
        assert_eq!(
            (small_max.batch_size, small_max.max_batch_size),
            (1_000_000, 1_000_000),
            "the batch stays within a given maximum"
        );
    }
}
