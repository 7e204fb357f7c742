//! A run's testbed on 127.0.0.1: its ports, its genesis, and its processes (cores with their
//! home drivers, standalone drivers, load clients) started from this same binary, with their
//! readiness and their metrics. Every harness
//! (`local`, `chaos`, and later a cluster harness) builds on it; it knows none of them.
//!
//! Ports: core i serves QUIC on base + i and metrics on base + 1000 + i; driver j serves metrics
//! on base + 1100 + j.

mod process;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sleepyseal_core::committee::ProtocolConstants;
use sleepyseal_core::AuthorityIndex;
use sleepyseal_net::{Clients, GenesisOptions};

pub use process::{Kind, Proc};

use super::wan;

/// The flags the harness starts every core and driver with.
#[derive(Clone, Debug)]
pub struct NodeFlags {
    /// `core --batch-size`.
    pub batch_size: usize,
    /// `core --max-batch-size`.
    pub max_batch_size: usize,
    /// `core --max-batch-delay-ms`.
    pub max_batch_delay_ms: u64,
    /// `core --straggler-wait-ms`.
    pub straggler_wait_ms: u64,
    /// `core --verify-batch`.
    pub verify_batch: usize,
    /// `core --verify-threads`.
    pub verify_threads: usize,
    /// `core --leader-timeout-ms` and `--vote-timeout-ms`.
    pub leader_timeout_ms: u64,
    /// `driver --pipeline-depth` and `core --home-driver-pipeline-depth`.
    pub pipeline_depth: usize,
    /// `core --home-driver`.
    pub home_drivers: bool,
    /// The first K cores run without `--home-driver` even with `home_drivers`.
    pub dead_home_drivers: usize,
}

impl NodeFlags {
    /// The flags of core `i`: [`NodeFlags::core_flags`], without a home driver for the first
    /// `dead_home_drivers` cores.
    pub fn core_flags_of(&self, i: usize) -> Vec<String> {
        NodeFlags {
            home_drivers: self.home_drivers && i >= self.dead_home_drivers,
            ..self.clone()
        }
        .core_flags()
    }

    /// The flags of `sleepyseal core` these stand for (its home driver's included).
    pub fn core_flags(&self) -> Vec<String> {
        let mut flags = vec![
            format!("--batch-size={}", self.batch_size),
            format!("--max-batch-size={}", self.max_batch_size),
            format!("--max-batch-delay-ms={}", self.max_batch_delay_ms),
            format!("--straggler-wait-ms={}", self.straggler_wait_ms),
            format!("--verify-batch={}", self.verify_batch),
            format!("--verify-threads={}", self.verify_threads),
            format!("--leader-timeout-ms={}", self.leader_timeout_ms),
            format!("--vote-timeout-ms={}", self.leader_timeout_ms),
        ];
        if self.home_drivers {
            flags.push("--home-driver".to_string());
            flags.push(format!(
                "--home-driver-pipeline-depth={}",
                self.pipeline_depth
            ));
        }
        flags
    }

    /// The flags of `sleepyseal driver` these stand for, with home core `home` if any.
    pub fn driver_flags(&self, home: Option<usize>) -> Vec<String> {
        let mut flags = vec![format!("--pipeline-depth={}", self.pipeline_depth)];
        flags.extend(home.map(|h| format!("--home-core={h}")));
        flags
    }
}

/// What a testbed is made of.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Cores.
    pub cores: usize,
    /// Standalone drivers (their metrics ports are claimed up front).
    pub drivers: usize,
    /// Stake per core (default: 1 each).
    pub stakes: Option<Vec<u64>>,
    /// QUIC port of core 0.
    pub base_port: u16,
    /// Seed of the keys (reproducible runs).
    pub seed: u64,
    /// GC_DEPTH and CHECKPOINT_INTERVAL, written into the committee at genesis.
    pub constants: ProtocolConstants,
    /// Flags of every core and driver.
    pub flags: NodeFlags,
    /// Further flags of every core.
    pub core_extra: Vec<String>,
    /// Load clients (their addresses are placed when a WAN is emulated).
    pub loads: usize,
    /// The WAN profile to emulate (`--wan`).
    pub wan: Option<PathBuf>,
}

/// A local run's emulated WAN: the profile with every process placed, and where.
struct LocalWan {
    file: PathBuf,
    placement: wan::LocalPlacement,
}

/// A fresh testbed written under a run's directory, and the means to start its processes.
pub struct Testbed {
    /// Committee, addresses and certificates, as the harness's clients need them.
    pub net: sleepyseal_net::Testbed,
    /// The committee file, as every process is given it.
    pub committee: String,
    /// Keys and stores.
    pub dir: PathBuf,
    /// One log per process.
    pub logs: PathBuf,
    /// Metrics port of each core.
    pub core_metrics: Vec<u16>,
    /// Metrics port of each driver.
    pub driver_metrics: Vec<u16>,
    spec: Spec,
    wan: Option<LocalWan>,
}

impl Testbed {
    /// Writes a fresh testbed into `out/testbed` (replacing an old one) with logs in `out/logs`,
    /// after checking that all its ports are free.
    pub fn create(out: &Path, spec: Spec) -> anyhow::Result<Testbed> {
        let logs = out.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
        let dir = out.join("testbed");
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("remove the old {}", dir.display()))?;
        }
        let wan = match &spec.wan {
            None => None,
            Some(profile) => {
                let placement = wan::place_local(profile, spec.cores, spec.drivers, spec.loads)?;
                std::fs::create_dir_all(&dir)?;
                let file = dir.join("wan.toml");
                std::fs::write(&file, &placement.toml)?;
                Some(LocalWan { file, placement })
            }
        };
        let core_ip = |i: usize| match wan {
            Some(_) => wan::local_core_ip(i),
            None => IpAddr::from([127, 0, 0, 1]),
        };
        let quic: Vec<SocketAddr> = (0..spec.cores)
            .map(|i| SocketAddr::new(core_ip(i), spec.base_port + i as u16))
            .collect();
        let (core_metrics, driver_metrics) = claim_ports(&quic, spec.base_port, spec.drivers)?;
        let committee_path = sleepyseal_net::genesis(
            &dir,
            &GenesisOptions {
                stakes: spec.stakes.clone().unwrap_or_else(|| vec![1; spec.cores]),
                host: "127.0.0.1".into(),
                base_port: spec.base_port,
                seed: Some(spec.seed),
                addresses: Some(quic.iter().map(SocketAddr::to_string).collect()),
                constants: spec.constants,
            },
        )?;
        Ok(Testbed {
            net: sleepyseal_net::load_testbed(&committee_path)?,
            committee: committee_path.display().to_string(),
            dir,
            logs,
            core_metrics,
            driver_metrics,
            spec,
            wan,
        })
    }

    /// `--wan`, `--region` (and for a process that only connects, `--bind`) of a process in
    /// region `region` at `ip`, when a WAN is emulated.
    fn wan_flags(
        &self,
        region: impl Fn(&wan::LocalPlacement) -> &String,
        bind: Option<IpAddr>,
    ) -> Vec<String> {
        let Some(w) = &self.wan else {
            return Vec::new();
        };
        let mut flags = vec![
            format!("--wan={}", w.file.display()),
            format!("--region={}", region(&w.placement)),
        ];
        flags.extend(bind.map(|ip| format!("--bind={ip}")));
        flags
    }

    /// The options of the harness's own clients: at 127.0.0.1, beside core 0, when a WAN is
    /// emulated.
    pub fn client_options(&self) -> anyhow::Result<sleepyseal_net::ClientOptions> {
        let Some(w) = &self.wan else {
            return Ok(sleepyseal_net::ClientOptions::default());
        };
        let profile = sleepyseal_net::wan::WanProfile::load(&w.file)?;
        Ok(sleepyseal_net::ClientOptions {
            bind_ip: Some(IpAddr::from([127, 0, 0, 1])),
            wan: Some(sleepyseal_net::wan::Wan::new(
                profile,
                &w.placement.cores[0],
                u64::from(std::process::id()),
            )?),
        })
    }

    /// Starts core `i` (its log is appended to: a restart keeps earlier incarnations' lines).
    pub fn start_core(&self, i: usize) -> anyhow::Result<Proc> {
        let mut argv: Vec<String> = vec![
            "core".to_string(),
            format!("--committee={}", self.committee),
            format!("--key={}", self.dir.join(format!("core-{i}.key")).display()),
            format!("--store={}", self.dir.join(format!("store-{i}")).display()),
            format!("--metrics-addr=127.0.0.1:{}", self.core_metrics[i]),
        ];
        argv.extend(self.spec.flags.core_flags_of(i));
        argv.extend_from_slice(&self.spec.core_extra);
        argv.extend(self.wan_flags(|p| &p.cores[i], None));
        let log = self.logs.join(format!("core-{i}.log"));
        Proc::spawn(Kind::Core, i, &argv, &log, None)
    }

    /// Starts standalone driver `j`, with home core `home` if any.
    pub fn start_driver(&self, j: usize, home: Option<usize>) -> anyhow::Result<Proc> {
        let mut argv: Vec<String> = vec![
            "driver".to_string(),
            format!("--committee={}", self.committee),
            format!("--metrics-addr=127.0.0.1:{}", self.driver_metrics[j]),
        ];
        argv.extend(self.spec.flags.driver_flags(home));
        argv.extend(self.wan_flags(|p| &p.drivers[j], Some(wan::local_driver_ip(j))));
        let log = self.logs.join(format!("driver-{j}.log"));
        Proc::spawn(Kind::Driver, j, &argv, &log, None)
    }

    /// Starts the `--flood` process with `flags` (after the committee).
    pub fn start_flood(&self, flags: &[String]) -> anyhow::Result<Proc> {
        let mut argv = vec![
            "flood".to_string(),
            format!("--committee={}", self.committee),
        ];
        argv.extend_from_slice(flags);
        let log = self.logs.join("flood.log");
        Proc::spawn(Kind::Flood, 0, &argv, &log, None)
    }

    /// Starts load client `c` with `flags` (after the committee), its stdout (the summary) going
    /// to `output`.
    pub fn start_load(&self, c: usize, flags: &[String], output: &Path) -> anyhow::Result<Proc> {
        let mut argv = vec![
            "load".to_string(),
            format!("--committee={}", self.committee),
        ];
        argv.extend_from_slice(flags);
        argv.extend(self.wan_flags(|p| &p.loads[c % p.loads.len()], Some(wan::local_load_ip(c))));
        let log = self.logs.join(format!("load-{c}.log"));
        Proc::spawn(Kind::Load, c, &argv, &log, Some(output))
    }

    /// Deletes keys and stores, unless `keep`.
    pub fn remove(&self, keep: bool) {
        if !keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The metrics ports of the cores (QUIC on `quic`) and `drivers` drivers, after checking that all
/// of them and the cores' QUIC addresses are free.
fn claim_ports(
    quic: &[SocketAddr],
    base: u16,
    drivers: usize,
) -> anyhow::Result<(Vec<u16>, Vec<u16>)> {
    let cores = quic.len();
    let core_metrics: Vec<u16> = (0..cores).map(|i| base + 1_000 + i as u16).collect();
    let driver_metrics: Vec<u16> = (0..drivers).map(|j| base + 1_100 + j as u16).collect();
    let tcp: Vec<u16> = core_metrics
        .iter()
        .chain(&driver_metrics)
        .copied()
        .collect();
    check_ports_free(quic, &tcp)?;
    Ok((core_metrics, driver_metrics))
}

/// Fails unless every UDP address (QUIC) and TCP port (metrics, on 127.0.0.1) given is free.
pub fn check_ports_free(udp: &[SocketAddr], tcp: &[u16]) -> anyhow::Result<()> {
    for address in udp {
        if std::net::UdpSocket::bind(address).is_err() {
            bail!("UDP address {address} is in use: choose other ports with --base-port");
        }
    }
    for port in tcp {
        if std::net::TcpListener::bind(("127.0.0.1", *port)).is_err() {
            bail!("TCP port {port} on 127.0.0.1 is in use: choose other ports with --base-port");
        }
    }
    Ok(())
}

/// Waits until core `i` answers a read, failing on `deadline` or when `failed` reports a dead
/// process.
pub fn wait_ready(
    rt: &tokio::runtime::Runtime,
    clients: &Clients,
    instance: sleepyseal_core::Digest,
    i: usize,
    deadline: Instant,
    mut failed: impl FnMut() -> Option<String>,
) -> anyhow::Result<()> {
    loop {
        if let Some(why) = failed() {
            bail!("{why}");
        }
        let ok = rt.block_on(crate::node::ready::answers(
            clients,
            instance,
            AuthorityIndex(i as u16),
        ));
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("core {i} did not answer within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The metrics text of the process serving them on `port`, if it answers within `timeout`.
pub fn scrape(rt: &tokio::runtime::Runtime, port: u16, timeout: Duration) -> Option<String> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    rt.block_on(async {
        tokio::time::timeout(timeout, sleepyseal_net::metrics::scrape(address)).await
    })
    .ok()?
    .ok()
}
