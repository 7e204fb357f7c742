//! Flags of a process's network side shared by every command: the emulated WAN (`--wan`,
//! `--region`) and, for processes that only connect, the local IP to bind (`--bind`), which the
//! local harness sets so that each process has its own 127.x address and a region.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use sleepyseal_net::wan::{Wan, WanProfile};
use sleepyseal_net::ClientOptions;

/// `--wan`, `--region`.
#[derive(Args, Debug, Clone, Default)]
pub struct WanFlags {
    /// Emulate a wide-area network on this process's outgoing datagrams: a WAN profile with a
    /// hosts table placing every address in a region (as `local` and `cluster` write it).
    #[arg(long, requires = "region")]
    pub wan: Option<PathBuf>,
    /// This process's region in the --wan profile.
    #[arg(long, requires = "wan")]
    pub region: Option<String>,
}

impl WanFlags {
    /// The emulation, if asked for.
    pub fn load(&self) -> anyhow::Result<Option<Wan>> {
        let (Some(path), Some(region)) = (&self.wan, &self.region) else {
            return Ok(None);
        };
        let profile =
            WanProfile::load(path).with_context(|| format!("WAN profile {}", path.display()))?;
        // Loss draws differ between processes; a run is reproducible in its figures, not in
        // which datagram each process dropped.
        let seed = u64::from(std::process::id());
        let wan = Wan::new(profile, region, seed)
            .with_context(|| format!("--region {region} in {}", path.display()))?;
        tracing::info!(
            "emulating the WAN of {} from region {region}",
            path.display()
        );
        Ok(Some(wan))
    }
}

/// `--bind` and the WAN flags of a process that only connects (driver, load, observer).
#[derive(Args, Debug, Clone, Default)]
pub struct ClientFlags {
    /// The local IP address to send from (default: any).
    #[arg(long)]
    pub bind: Option<IpAddr>,
    #[command(flatten)]
    pub wan: WanFlags,
}

impl ClientFlags {
    /// The options of this process's QUIC client endpoint.
    pub fn options(&self) -> anyhow::Result<ClientOptions> {
        Ok(ClientOptions {
            bind_ip: self.bind,
            wan: self.wan.load()?,
        })
    }
}
