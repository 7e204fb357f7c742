//! Transport limits: what one peer can make a core hold.

use std::time::Duration;

use sleepyseal_core::limits::MAX_MESSAGE_BYTES;

/// Hard limits of the transport. Everything a peer can open or send is bounded by one of these.
#[derive(Clone, Debug)]
pub struct NetLimits {
    /// Largest request a core reads (bytes); a longer stream is reset.
    pub max_request_bytes: usize,
    /// Largest response a client reads (bytes).
    pub max_response_bytes: usize,
    /// Concurrent request streams per connection.
    pub max_streams_per_connection: u32,
    /// Concurrent connections per core; more are refused.
    pub max_connections: usize,
    /// A stream must deliver its whole request within this time, or it is reset (half-open
    /// streams cannot pin memory).
    pub request_read_timeout: Duration,
    /// A connection idle this long is closed.
    pub idle_timeout: Duration,
    /// Requests queued for verification; beyond it a core answers `Busy`.
    pub verify_queue: usize,
    /// Verified requests queued for the core thread; beyond it a core answers `Busy`.
    pub core_queue: usize,
}

impl Default for NetLimits {
    fn default() -> NetLimits {
        NetLimits {
            max_request_bytes: 32 << 20,
            max_response_bytes: MAX_MESSAGE_BYTES,
            max_streams_per_connection: 256,
            max_connections: 256,
            request_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            verify_queue: 1_024,
            core_queue: 1_024,
        }
    }
}
