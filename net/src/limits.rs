//! Transport limits: what one peer can make a core hold.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sleepyseal_core::limits::MAX_MESSAGE_BYTES;

use crate::wan::Wan;

/// Hard limits of the transport. Everything a peer can open or send is bounded by one of these.
#[derive(Clone, Debug)]
pub struct NetLimits {
    /// Largest request a core reads (bytes); a longer stream is reset.
    pub max_request_bytes: usize,
    /// Largest response a client reads (bytes).
    pub max_response_bytes: usize,
    /// Concurrent request streams per connection.
    pub max_streams_per_connection: u32,
    /// Concurrent connections per core. When all are taken, a connection from a source prefix
    /// that holds none gets the slot of the idlest connection of the prefix holding the most
    /// (`server::admission`); any other is refused.
    pub max_connections: usize,
    /// Concurrent connections from one source address (listed drivers excepted).
    pub max_connections_per_address: usize,
    /// Concurrent connections from one source prefix, the /24 of an IPv4 address or the /64 of
    /// an IPv6 one (listed drivers excepted).
    pub max_connections_per_prefix: usize,
    /// New connections per second from one source prefix (a bucket holding four seconds'
    /// worth; listed drivers excepted): a source reconnecting in a loop is refused before any
    /// handshake work.
    pub max_connects_per_prefix_per_second: u32,
    /// Addresses of drivers an operator lists: always admitted, never closed to make room, and
    /// not counted against the per-source limits. A core still trusts nothing they send.
    pub known_drivers: Vec<std::net::IpAddr>,
    /// Answer a connection attempt from an address that has not proven it receives what is sent
    /// to it with a QUIC retry (address validation, one round trip): a spoofed source then
    /// costs no connection state.
    pub validate_addresses: bool,
    /// Longest a handshake may take before the attempt is dropped. A connection holds its slot
    /// from the moment it is admitted, handshake included, so handshakes in progress count
    /// against every limit above.
    pub handshake_timeout: Duration,
    /// Requests one connection may open per second (a token bucket holding a second's worth):
    /// beyond it the connection's next stream waits, and QUIC flow control holds the sender.
    pub max_requests_per_second: u32,
    /// A stream must deliver its whole request within this time, or it is reset (half-open
    /// streams cannot pin memory).
    pub request_read_timeout: Duration,
    /// A stream must take its whole reply within this time, or it is reset: a peer that asks
    /// and never reads cannot hold a reply (and the payloads it shares) for longer.
    pub reply_write_timeout: Duration,
    /// Reply bytes a core sends on one connection ahead of the peer's acknowledgements (QUIC's
    /// send window): with `reply_write_timeout`, what a peer that never reads can pin.
    pub reply_bytes_in_flight: u64,
    /// A connection idle this long is closed.
    pub idle_timeout: Duration,
    /// Requests queued for verification; beyond it a core answers `Busy`.
    pub verify_queue: usize,
    /// Verified consensus requests (what drivers send) queued for the core thread; beyond it a
    /// core answers `Busy` to the connection holding the most of them.
    pub core_queue: usize,
    /// Client requests (`Submit`, `ReadCommitted`) queued for the core thread, apart from the
    /// consensus requests; beyond it a core answers `Busy` to the connection holding the most.
    pub client_queue: usize,
    /// Largest UDP payload an endpoint accepts, and the bound path-MTU discovery probes up to.
    /// QUIC starts at 1,200 bytes and probes upward; on loopback or jumbo-frame networks the
    /// path then carries datagrams this large, fewer per payload. Probes that get no answer are
    /// harmless: the path stays at the largest size that worked. Values above
    /// [`MAX_UDP_PAYLOAD`] are lowered to it (see there). quinn sizes each endpoint's receive
    /// buffer by it (this × 64 GRO segments × 32).
    pub max_udp_payload: u16,
    /// Socket send and receive buffer asked of the kernel (bytes; Linux caps it at
    /// `net.core.rmem_max` / `wmem_max`). A burst of payloads larger than the receive buffer is
    /// dropped and retransmitted after a loss timeout: a stall of the whole round.
    pub udp_buffer_bytes: usize,
    /// The congestion window a new connection starts with (bytes; Cubic). QUIC's default,
    /// 14,720 bytes, is sized for the open Internet: a 2 MB payload then needs about eight round
    /// trips of slow start, 1.7 s across the widest WAN profile's 216 ms, longer than a driver
    /// waits for a reply. Validators talk over a handful of long-lived, provisioned paths, where
    /// starting at a round's worth of payload is safe (loss still cuts the window as usual).
    pub initial_window_bytes: u64,
}

impl Default for NetLimits {
    fn default() -> NetLimits {
        NetLimits {
            max_request_bytes: 32 << 20,
            max_response_bytes: MAX_MESSAGE_BYTES,
            max_streams_per_connection: 256,
            max_connections: 256,
            max_connections_per_address: 32,
            max_connections_per_prefix: 64,
            max_connects_per_prefix_per_second: 2,
            known_drivers: Vec::new(),
            validate_addresses: true,
            handshake_timeout: Duration::from_secs(3),
            max_requests_per_second: 20_000,
            request_read_timeout: Duration::from_secs(10),
            reply_write_timeout: Duration::from_secs(10),
            reply_bytes_in_flight: 16 << 20,
            idle_timeout: Duration::from_secs(10),
            verify_queue: 1_024,
            core_queue: 1_024,
            client_queue: 1_024,
            max_udp_payload: MAX_UDP_PAYLOAD,
            udp_buffer_bytes: 8 << 20,
            initial_window_bytes: 2 << 20,
        }
    }
}

/// The largest UDP payload this transport uses. quinn hands the kernel up to 10 datagrams of the
/// path MTU in one segmentation-offload (GSO) send, and Linux refuses a UDP send above 64 KiB
/// with `EMSGSIZE`, which quinn-udp drops silently (it expects that error of MTU probes). With
/// 8,952-byte datagrams every burst of 8 or more was lost whole: retransmissions, a collapsed
/// congestion window, and requests timing out for a second. 10 × 6,500 bytes fit.
pub const MAX_UDP_PAYLOAD: u16 = 6_500;

/// `limits.max_udp_payload` within what QUIC allows (1,200) and [`MAX_UDP_PAYLOAD`].
pub fn udp_payload_bound(limits: &NetLimits) -> u16 {
    limits.max_udp_payload.clamp(1_200, MAX_UDP_PAYLOAD)
}

/// A QUIC endpoint on `address` (a server when `server` is given) over [`udp_socket`], accepting
/// datagrams of up to [`udp_payload_bound`] bytes. quinn's default endpoint configuration accepts
/// 1,472, and a peer never sends more than the other side accepts, so without this path-MTU
/// discovery stops at 1,472 whatever its upper bound. With `wan`, the socket's outgoing datagrams
/// go through the WAN emulator ([`Wan::wrap`]); path-MTU discovery then finds the profile's path
/// MTU. Must be called inside a tokio runtime.
pub fn endpoint(
    address: SocketAddr,
    limits: &NetLimits,
    server: Option<quinn::ServerConfig>,
    wan: Option<&Wan>,
) -> std::io::Result<quinn::Endpoint> {
    use quinn::Runtime;
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(udp_payload_bound(limits))
        .expect("between 1,200 and MAX_UDP_PAYLOAD bytes");
    let runtime = Arc::new(quinn::TokioRuntime);
    let mut socket = runtime.wrap_udp_socket(udp_socket(address, limits)?)?;
    if let Some(wan) = wan {
        socket = wan.wrap(socket);
    }
    quinn::Endpoint::new_with_abstract_socket(config, server, socket, runtime)
}

/// A UDP socket bound to `address` with send and receive buffers of `limits.udp_buffer_bytes`
/// (as much of it as the kernel grants), for a QUIC endpoint.
fn udp_socket(address: SocketAddr, limits: &NetLimits) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if address.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    // Best effort: a smaller buffer still works, only with more loss under bursts.
    let _ = socket.set_recv_buffer_size(limits.udp_buffer_bytes);
    let _ = socket.set_send_buffer_size(limits.udp_buffer_bytes);
    socket.bind(&address.into())?;
    Ok(socket.into())
}
