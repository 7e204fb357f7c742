//! A run's parameters ([`SimConfig`], with the defaults every test and the CLI start from) and
//! what it showed ([`SimReport`]).

use sleepyseal_core::committee::ProtocolConstants;
use sleepyseal_core::{CoreConfig, Digest, Round};
use sleepyseal_driver::state::DriverConfig;

use crate::Mutant;

/// One simulation's parameters.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Validators.
    pub cores: usize,
    /// Stake per validator (default: 1 each).
    pub stakes: Option<Vec<u64>>,
    /// Drivers without a home core (all honest).
    pub drivers: usize,
    /// Home-core drivers (PROTOCOL.md §7): one per core besides the `drivers` above, some of
    /// them dead. `None`: none.
    pub home_drivers: Option<HomeDrivers>,
    /// The seed.
    pub seed: u64,
    /// Stop once every live honest core committed a leader at or above this round.
    pub rounds: u64,
    /// Give up (liveness failure) after this much virtual time.
    pub max_time_ms: u64,
    /// Cores crashed for good, early in the run.
    pub crash: usize,
    /// Cores crashed and restarted from their store, one after another.
    pub restart: usize,
    /// How long a restarted core stays down, in ms of virtual time (a range).
    pub outage_ms: (u64, u64),
    /// Crash each core once when it installs a checkpoint: half the time at once (the install's
    /// write not yet synced is lost), half the time just after the write synced (it restarts
    /// installed, its gap maybe half filled); back 50–500 ms later.
    pub install_crashes: bool,
    /// Kill and restart a driver during the run.
    pub driver_crash: bool,
    /// One-way latency range.
    pub latency_ms: (u64, u64),
    /// Message loss, per mille.
    pub drop_per_mille: u32,
    /// Message duplication, per mille.
    pub duplicate_per_mille: u32,
    /// Cut random driver–core links for a while.
    pub partitions: bool,
    /// Disk sync latency range.
    pub sync_ms: (u64, u64),
    /// Equivocating twins: the first `twins` authorities run two cores with one key.
    pub twins: usize,
    /// Byzantine cores: the `byzantine` authorities after the twins misbehave as `behaviour`.
    pub byzantine: usize,
    /// How the Byzantine cores misbehave.
    pub behaviour: crate::Behaviour,
    /// Negative control: the checkers are not told that the `byzantine` cores are Byzantine, so
    /// whatever they break is charged to honest cores and must show as a violation.
    pub undeclared_byzantine: bool,
    /// Add a driver that injects certificates with forged signatures.
    pub forger: bool,
    /// Transactions per second submitted by the load client.
    pub load_tx_per_s: u64,
    /// Negative control to plant.
    pub mutant: Mutant,
    /// Two seeds in three run with a small gc depth and retention window (see `World::new`).
    pub vary_storage: bool,
    /// GC_DEPTH and CHECKPOINT_INTERVAL, set through the committee (genesis), as in a testbed.
    pub constants: ProtocolConstants,
    /// Core settings.
    pub core: CoreConfig,
    /// Driver settings.
    pub driver: DriverConfig,
    /// Debugging output on stderr (off by default; the trace does not depend on it).
    pub debug: SimDebug,
}

/// The home-core drivers of a run: one per core, its home core that core. Which are dead, and
/// whether each never started or crashed for good mid-run, is drawn from the seed. The payloads
/// of a core whose home driver is dead travel only by the other drivers' on-demand carriage
/// (after the grace period, or when a core lists them missing).
#[derive(Clone, Copy, Debug, Default)]
pub struct HomeDrivers {
    /// Home drivers that are dead (never started or crashed for good).
    pub dead: usize,
}

/// The grace period of the simulator's home drivers: the simulated network has 1–15 ms one-way
/// latency and drivers poll every [`SIM_POLL_INTERVAL_MS`], so a live home driver's delivery
/// shows within about 70 ms; the ratio to [`SIM_TIMEOUT_MS`] is about that of the defaults.
pub const SIM_PAYLOAD_GRACE_MS: u64 = 100;

/// Debugging output of one run, chosen on the command line (`--debug-dump`,
/// `--trace-instance`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SimDebug {
    /// At the end, print each core's and driver's state.
    pub dump: bool,
    /// Print every reply this instance sends a driver.
    pub trace_instance: Option<usize>,
}

/// The simulator compresses the protocol's timers: its network has 1–15 ms one-way latency, so
/// leader, vote and request timeouts of 300 ms and a driver poll every 30 ms keep roughly the
/// ratios of the defaults on a real network while a seed needs fewer virtual seconds. These are
/// scenario settings of the simulator, not defaults of the core or driver.
pub const SIM_TIMEOUT_MS: u64 = 300;
/// See [`SIM_TIMEOUT_MS`].
pub const SIM_POLL_INTERVAL_MS: u64 = 30;
impl SimConfig {
    /// The long-outage scenario (PROTOCOL.md §8a): gc depth 4, retention 16 and checkpoints
    /// every 8 rounds, `restart` cores each down for `outage_ms` of virtual time (hundreds of
    /// rounds: far beyond gc depth + retention, and mostly beyond the drivers' cache), until
    /// every live core committed `rounds`. A core back must install a checkpoint and fill.
    pub fn long_outage(
        cores: usize,
        restart: usize,
        outage_ms: (u64, u64),
        rounds: u64,
        seed: u64,
    ) -> SimConfig {
        let mut config = SimConfig {
            cores,
            restart,
            outage_ms,
            partitions: false,
            seed,
            rounds,
            vary_storage: false,
            constants: ProtocolConstants {
                gc_depth: 4,
                checkpoint_interval: 8,
            },
            ..SimConfig::default()
        };
        config.core.retention_rounds = 16;
        config.install_crashes = true;
        config
    }
}

/// Small headers, so that a seed's light load still spans many payloads.
pub const SIM_BATCH_SIZE_BYTES: usize = 4_096;

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            cores: 4,
            stakes: None,
            drivers: 2,
            home_drivers: None,
            seed: 0,
            rounds: 30,
            max_time_ms: 120_000,
            crash: 0,
            restart: 0,
            outage_ms: (100, 1_200),
            install_crashes: false,
            driver_crash: true,
            latency_ms: (1, 15),
            drop_per_mille: 10,
            duplicate_per_mille: 10,
            partitions: true,
            sync_ms: (1, 4),
            twins: 0,
            byzantine: 0,
            behaviour: crate::Behaviour::Honest,
            undeclared_byzantine: false,
            forger: false,
            load_tx_per_s: 100,
            mutant: Mutant::None,
            vary_storage: true,
            constants: ProtocolConstants::default(),
            core: CoreConfig {
                leader_timeout_ms: SIM_TIMEOUT_MS,
                vote_timeout_ms: SIM_TIMEOUT_MS,
                batch_size_bytes: SIM_BATCH_SIZE_BYTES,
                // Beyond any run: undecided own headers stay pending after an install (the
                // checkers would count a transaction proposed again, and committed in the gap
                // too, as committed twice; the core counts it as a possible duplicate).
                fill_timeout_ms: 10 * 60 * 1_000,
                ..CoreConfig::default()
            },
            driver: DriverConfig {
                request_timeout_ms: SIM_TIMEOUT_MS,
                poll_interval_ms: SIM_POLL_INTERVAL_MS,
                payload_grace_ms: SIM_PAYLOAD_GRACE_MS,
                ..DriverConfig::default()
            },
            debug: SimDebug::default(),
        }
    }
}

/// What one seed showed.
#[derive(Clone, Debug)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Broken invariants (empty when safe).
    pub violations: Vec<crate::Violation>,
    /// Every live honest core reached the target round.
    pub live: bool,
    /// Fewest committed leaders at any live honest core.
    pub min_commits: u64,
    /// Largest gap, in rounds, between successive committed leaders at a live honest core.
    pub max_commit_gap_rounds: u64,
    /// Core restarts performed.
    pub restarts: u64,
    /// Restarted cores that reached the target round with the common commit hash.
    pub restarted_caught_up: u64,
    /// Highest round reached.
    pub top_round: Round,
    /// Events processed.
    pub events: u64,
    /// Virtual time at the end.
    pub time_ms: u64,
    /// Hash over the processed events (S7: same seed, same trace).
    pub trace: Digest,
    /// Transactions acknowledged to the load client.
    pub acked_transactions: u64,
    /// Acknowledged transactions still uncommitted at their core at the end although that core
    /// advanced more than gc depth + 20 rounds since (since it was back, if it restarted later:
    /// the rounds it was down are the outage's). Their header was not certified, possibly more
    /// than once: a latency tail, not a loss.
    pub slow_transactions: u64,
    /// Checkpoint states honest cores signed (distinct indices), each checked (S10).
    pub checkpoints: u64,
    /// Checkpoints honest cores installed.
    pub installs: u64,
    /// Gap entries honest cores verified through fills (§8a.5).
    pub gap_entries_filled: u64,
    /// Honest cores whose gap was still open at the end.
    pub gaps_open: u64,
    /// Transactions honest cores proposed again after FILL_TIMEOUT (possible duplicates).
    pub possibly_duplicated: u64,
    /// Forged checkpoint certificates offered to the honest cores (`forged-checkpoints`).
    pub forged_checkpoints: u64,
    /// Damaged fills handed to honest cores (`forged-fills`).
    pub forged_fills: u64,
    /// Real checkpoint certificates offered to honest cores as early as the rules allow
    /// (`eager-installs`).
    pub eager_installs: u64,
    /// Crashes injected at installs (`install_crashes`).
    pub install_crashes: u64,
    /// Per restart: rounds the others advanced until the restarted core was back within 2
    /// rounds of them.
    pub rejoin_rounds: Vec<u64>,
    /// Restarted cores not back within 2 rounds of the others by the end.
    pub not_rejoined: u64,
    /// Old chains (`old-chains`) that reached the present and joined the honest DAG.
    pub old_chains_joined: u64,
    /// Certificates the old-chain adversary formed.
    pub old_chain_certificates: u64,
    /// Of those, how many the live honest core furthest ahead committed (the rest fell below
    /// the floor uncommitted, cut by the commit rule).
    pub old_chain_committed: u64,
}
