//! `sleepyseal ready`: waits until a core answers a read, so a deployment can tell "started" from
//! "serving" (the cluster playbook's readiness step; the local harness probes the same way).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use sleepyseal_core::protocol::{CommittedView, Request, RequestBody};
use sleepyseal_core::{AuthorityIndex, Digest};
use sleepyseal_net::{Clients, NetLimits};

use super::{runtime, DEFAULT_COMMITTEE};

/// Flags of `sleepyseal ready`.
#[derive(Args, Debug)]
pub struct ReadyArgs {
    /// The committee file.
    #[arg(long, default_value = DEFAULT_COMMITTEE)]
    committee: PathBuf,
    /// The core to probe.
    #[arg(long, default_value_t = 0)]
    core: u16,
    /// Give up (exit 1) after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
}

/// Probes the core until it answers or the timeout passes.
pub fn ready(args: ReadyArgs) -> anyhow::Result<()> {
    let testbed = sleepyseal_net::load_testbed(&args.committee)?;
    let core = AuthorityIndex(args.core);
    if !testbed.committee.contains(core) {
        bail!("--core {}: no such core", args.core);
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    runtime("ready")?.block_on(async move {
        let clients = Clients::new(&testbed, NetLimits::default())?;
        let instance = testbed.committee.instance();
        let address = testbed.addresses[core.as_usize()];
        while !answers(&clients, instance, core).await {
            if Instant::now() > deadline {
                clients.close().await;
                bail!(
                    "core {} at {address} did not answer within {} s",
                    args.core,
                    args.timeout_s
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        clients.close().await;
        tracing::info!("core {} at {address} answers", args.core);
        Ok(())
    })
}

/// Whether `core` answers a one-entry read within half a second.
pub async fn answers(clients: &Clients, instance: Digest, core: AuthorityIndex) -> bool {
    let probe = Request {
        instance,
        body: RequestBody::ReadCommitted {
            from_index: 0,
            max: 1,
            view: CommittedView::Digests,
            wait_ms: 0,
        },
    };
    clients
        .core(core)
        .request(&probe, Duration::from_millis(500))
        .await
        .is_ok()
}
