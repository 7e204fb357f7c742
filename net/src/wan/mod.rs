//! WAN emulation in a wrapper around quinn's UDP socket (kernel netem is not available where
//! the benchmarks run).
//!
//! - `profile`: the TOML profile (regions, per-pair delay, jitter, loss, bandwidth, path MTU,
//!   hosts → region), validated strictly into a [`WanProfile`];
//! - `link`: one directed link's schedule (MTU, drop-tail queue, serializer, loss, delay with
//!   jitter but no reordering), pure and seeded;
//! - `queue`: datagrams waiting for their due time, regrouped into GSO sends when they leave;
//! - `socket`: the `quinn::AsyncUdpSocket` wrapper and its sender task.
//!
//! Contract: only OUTGOING datagrams are emulated, by the link from this process's region to the
//! destination's region (looked up by destination IP in the profile's hosts). The RTT between
//! regions A and B is therefore oneway(A→B) + oneway(B→A), each side emulating its own
//! direction. A destination not among the hosts is sent to at once, untouched. Each GSO segment
//! is a datagram of its own: loss and the MTU apply to each. ECN and the source address pass
//! through. Receiving is untouched.
//!
//! One link per destination IP (not per destination region): a profile's bandwidth is what one
//! host gets to one other host (what iperf between two VMs in two regions measures), so two
//! peers in one region do not share it; every process on a host shares its link to a peer, as
//! they share the host's network path. The no-reordering clamp is per link too: per host pair,
//! which covers every QUIC connection between the two.

mod error;
mod link;
mod profile;
mod queue;
mod socket;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use error::WanError;
pub use link::LinkParams;
pub use profile::{
    WanProfile, DEFAULT_MAX_UDP_PAYLOAD_BYTES, DEFAULT_QUEUE_MS, MAX_HOSTS, MAX_REGIONS,
};
pub use socket::MAX_HELD_BYTES;

use link::Link;

/// Datagram counters of a [`Wan`], over every socket it wraps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WanStats {
    /// Datagrams (GSO segments) sent to emulated destinations after their delay.
    pub sent: u64,
    /// Dropped by the link's loss rate.
    pub dropped_loss: u64,
    /// Dropped for exceeding the profile's path MTU.
    pub dropped_mtu: u64,
    /// Dropped because a link's backlog or the socket's queue ([`MAX_HELD_BYTES`]) was full.
    pub dropped_queue: u64,
    /// Sent at once to destinations the profile does not place in a region.
    pub unemulated: u64,
    /// Due datagrams the real socket refused (dropped, as quinn drops them).
    pub send_errors: u64,
}

/// Which counter of [`WanStats`] to bump.
#[derive(Clone, Copy, Debug)]
enum Counter {
    Sent,
    DroppedLoss,
    DroppedMtu,
    DroppedQueue,
    Unemulated,
    SendErrors,
}

/// How many [`Counter`]s there are.
const COUNTERS: usize = Counter::SendErrors as usize + 1;

/// The WAN emulator of one process: a profile, the process's own region, the links to every
/// host of the profile, and counters. Cheap to clone (shared); one `Wan` may wrap several
/// sockets, which then share the links.
#[derive(Clone)]
pub struct Wan {
    shared: Arc<Shared>,
}

struct Shared {
    profile: WanProfile,
    own_region: String,
    seed: u64,
    /// Destination IP (canonical form) → the link to it. The map is fixed at construction (the
    /// profile's hosts), so looking a destination up takes no lock.
    links: HashMap<IpAddr, Mutex<Link>>,
    /// Indexed by [`Counter`].
    counters: [AtomicU64; COUNTERS],
}

impl Wan {
    /// The emulator for a process in region `own_region` of `profile`, with loss and jitter drawn
    /// from `seed` (each link's draws depend on the seed and the destination only, so a run
    /// replays given the same sends).
    pub fn new(profile: WanProfile, own_region: &str, seed: u64) -> Result<Wan, WanError> {
        let own = profile
            .region_index(own_region)
            .ok_or_else(|| WanError::UnknownRegion {
                region: own_region.to_string(),
                at: "own region".into(),
            })?;
        let queue = profile.queue();
        let mtu = usize::from(profile.max_udp_payload_bytes());
        let links = profile
            .host_regions()
            .map(|(ip, region)| {
                let ip = ip.to_canonical();
                let params = profile.link_at(own, region).clone();
                let link = Link::new(params, mtu, queue, link_seed(seed, ip));
                (ip, Mutex::new(link))
            })
            .collect();
        Ok(Wan {
            shared: Arc::new(Shared {
                own_region: own_region.to_string(),
                profile,
                seed,
                links,
                counters: Default::default(),
            }),
        })
    }

    /// The profile.
    pub fn profile(&self) -> &WanProfile {
        &self.shared.profile
    }

    /// This process's region.
    pub fn own_region(&self) -> &str {
        &self.shared.own_region
    }

    /// The seed of the loss and jitter draws.
    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    /// The counters so far.
    pub fn stats(&self) -> WanStats {
        let c = |counter: Counter| self.shared.counters[counter as usize].load(Ordering::Relaxed);
        WanStats {
            sent: c(Counter::Sent),
            dropped_loss: c(Counter::DroppedLoss),
            dropped_mtu: c(Counter::DroppedMtu),
            dropped_queue: c(Counter::DroppedQueue),
            unemulated: c(Counter::Unemulated),
            send_errors: c(Counter::SendErrors),
        }
    }

    /// `socket` with its datagrams to the profile's hosts emulated. Starts the socket's sender
    /// task, so it must be called inside a tokio runtime; the task ends when the returned socket
    /// is dropped.
    pub fn wrap(&self, socket: Arc<dyn quinn::AsyncUdpSocket>) -> Arc<dyn quinn::AsyncUdpSocket> {
        socket::WanSocket::start(socket, self.clone())
    }

    /// Whether datagrams to `ip` (canonical form) are emulated.
    fn emulates(&self, ip: IpAddr) -> bool {
        self.shared.links.contains_key(&ip)
    }

    /// Runs `f` on the link to `ip` (canonical form), if there is one.
    fn with_link<R>(&self, ip: IpAddr, f: impl FnOnce(&mut Link) -> R) -> Option<R> {
        let link = self.shared.links.get(&ip)?;
        Some(f(&mut link.lock().expect("no panic while holding it")))
    }

    fn count(&self, counter: Counter, n: u64) {
        self.shared.counters[counter as usize].fetch_add(n, Ordering::Relaxed);
    }
}

impl fmt::Debug for Wan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wan")
            .field("own_region", &self.shared.own_region)
            .field("regions", &self.shared.profile.regions())
            .field("hosts", &self.shared.profile.hosts().count())
            .field("seed", &self.shared.seed)
            .finish()
    }
}

/// The seed of the link to `ip`: the process seed and the address, so links draw independently
/// of each other and of the order in which they are used.
fn link_seed(seed: u64, ip: IpAddr) -> [u8; 32] {
    let octets = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..24].copy_from_slice(&octets);
    bytes
}
