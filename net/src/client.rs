//! The typed client of a core, used by drivers, load clients and the harness.
//!
//! One QUIC connection per core, (re)established on demand; one bidirectional stream per request,
//! any number in flight. A request is written as the chunks of its encoding (a vectored write), so
//! a payload forwarded from one core's reply to another core is never copied or re-encoded.
//!
//! [`Clients::follow_committed`] ([`follow`]) is the one reader of a core's committed sequence
//! (the `watch` command, the benchmark harness, the chaos run): it long-polls `ReadCommitted` and
//! handles evicted entries and payloads the core does not hold yet in one place.

mod follow;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sleepyseal_core::codec::{Decode, DecodeError, Encode};
use sleepyseal_core::protocol::{Request, Response};
use sleepyseal_core::{AuthorityIndex, Digest};
use tokio::sync::Mutex;

pub use follow::{
    CommittedFollower, EntryPayload, FollowError, FollowOptions, Followed, FollowedEntry,
    MissingPayload,
};

use crate::config::{server_name, Testbed};
use crate::limits::NetLimits;
use crate::message::{read_message, ReadError};
use crate::tls::{client_config, TlsError, CONNECT_TIMEOUT};
use crate::wan::Wan;

/// Why a request got no decodable response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection could not be established.
    #[error("connect to core {core} at {address}: {reason}")]
    Connect {
        /// Which core.
        core: AuthorityIndex,
        /// Its address.
        address: SocketAddr,
        /// Why.
        reason: String,
    },
    /// No response in time.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The connection or stream failed.
    #[error("stream: {0}")]
    Stream(String),
    /// The response exceeded the limit.
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    /// The response did not decode.
    #[error("undecodable response: {0}")]
    Decode(#[from] DecodeError),
}

/// A client endpoint with one connection slot per core of a testbed.
pub struct Clients {
    endpoint: quinn::Endpoint,
    cores: Vec<Arc<CoreClient>>,
    /// The committee's instance digest (every request names it).
    instance: Digest,
}

/// How a client endpoint is set up; the default is a plain socket on every local address.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// The local IP to bind (on an ephemeral port). None: the unspecified address (`0.0.0.0`,
    /// or `[::]` when a core has an IPv6 address). A host with several addresses (or a WAN
    /// emulation that tells hosts apart by address) binds the one its peers know it by.
    pub bind_ip: Option<IpAddr>,
    /// WAN emulation of the endpoint's outgoing datagrams (none: plain sends).
    pub wan: Option<Wan>,
}

impl Clients {
    /// A client endpoint on an ephemeral local port for the cores of `testbed`, with default
    /// [`ClientOptions`]. Must be called inside a tokio runtime.
    pub fn new(testbed: &Testbed, limits: NetLimits) -> Result<Clients, ClientSetupError> {
        Clients::with_options(testbed, limits, ClientOptions::default())
    }

    /// A client endpoint set up by `options` for the cores of `testbed`. Must be called inside a
    /// tokio runtime.
    pub fn with_options(
        testbed: &Testbed,
        limits: NetLimits,
        options: ClientOptions,
    ) -> Result<Clients, ClientSetupError> {
        let ip = options.bind_ip.unwrap_or_else(|| {
            if testbed.addresses.iter().all(|a| a.is_ipv4()) {
                IpAddr::from([0, 0, 0, 0])
            } else {
                IpAddr::from([0u16; 8])
            }
        });
        let mut endpoint =
            crate::limits::endpoint(SocketAddr::new(ip, 0), &limits, None, options.wan.as_ref())
                .map_err(ClientSetupError::Bind)?;
        endpoint.set_default_client_config(client_config(testbed, &limits)?);
        let cores = testbed
            .committee
            .indices()
            .zip(&testbed.addresses)
            .map(|(index, address)| {
                Arc::new(CoreClient {
                    endpoint: endpoint.clone(),
                    index,
                    address: *address,
                    server_name: server_name(index),
                    limits: limits.clone(),
                    connection: Mutex::new(None),
                    connects: AtomicU64::new(0),
                })
            })
            .collect();
        Ok(Clients {
            endpoint,
            cores,
            instance: testbed.committee.instance(),
        })
    }

    /// The client of core `index`.
    pub fn core(&self, index: AuthorityIndex) -> &Arc<CoreClient> {
        &self.cores[index.as_usize()]
    }

    /// All cores' clients, in index order.
    pub fn all(&self) -> &[Arc<CoreClient>] {
        &self.cores
    }

    /// A reader of core `core`'s committed sequence from index `from_index` on; see
    /// [`CommittedFollower::next`].
    pub fn follow_committed(
        &self,
        core: AuthorityIndex,
        from_index: u64,
        options: FollowOptions,
    ) -> CommittedFollower {
        let peers = self
            .cores
            .iter()
            .filter(|c| c.index != core)
            .cloned()
            .collect();
        CommittedFollower::new(
            self.core(core).clone(),
            peers,
            self.instance,
            from_index,
            options,
        )
    }

    /// Closes every connection and waits for the peers to be told.
    pub async fn close(&self) {
        self.endpoint.close(quinn::VarInt::from_u32(0), b"bye");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

/// A client endpoint that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    /// Binding the local UDP socket.
    #[error("bind client socket: {0}")]
    Bind(std::io::Error),
    /// The TLS configuration.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The client of one core.
pub struct CoreClient {
    endpoint: quinn::Endpoint,
    index: AuthorityIndex,
    address: SocketAddr,
    server_name: String,
    limits: NetLimits,
    connection: Mutex<Option<quinn::Connection>>,
    /// Connections opened so far.
    connects: AtomicU64,
}

impl CoreClient {
    /// Which core.
    pub fn index(&self) -> AuthorityIndex {
        self.index
    }

    /// How many connections this client opened to its core (handshakes started): one for as
    /// long as the connection serves, one more after each it gave up.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Sends `request` and waits at most `timeout` for the response.
    pub async fn request(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        self.request_chunks(request.to_chunks(), timeout).await
    }

    /// Sends an encoded request given as chunks (see [`Encode::to_chunks`]).
    pub async fn request_chunks(
        &self,
        chunks: Vec<Bytes>,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let connection = match tokio::time::timeout_at(deadline, self.connection()).await {
            Ok(connection) => connection?,
            Err(_) => return Err(ClientError::Timeout(timeout)),
        };
        let heard = connection.stats().udp_rx.datagrams;
        match tokio::time::timeout_at(deadline, self.exchange(&connection, chunks)).await {
            Ok(result) => result,
            Err(_) => {
                // A core killed without closing its connection looks alive until the idle
                // timeout: if nothing at all came from it during the request, the next request
                // gets a fresh connection (requests in flight keep the old one). A connection
                // that is merely slow (a large request across a long path) is kept: a new one
                // would start again from a small congestion window, and time out again.
                if connection.stats().udp_rx.datagrams == heard {
                    self.forget(&connection).await;
                }
                Err(ClientError::Timeout(timeout))
            }
        }
    }

    async fn exchange(
        &self,
        connection: &quinn::Connection,
        mut chunks: Vec<Bytes>,
    ) -> Result<Response, ClientError> {
        let stream = |e: &dyn std::fmt::Display| ClientError::Stream(e.to_string());
        let (mut send, mut recv) = match connection.open_bi().await {
            Ok(pair) => pair,
            Err(e) => {
                self.forget(connection).await;
                return Err(stream(&e));
            }
        };
        send.write_all_chunks(&mut chunks)
            .await
            .map_err(|e| stream(&e))?;
        send.finish().map_err(|e| stream(&e))?;
        let bytes = read_message(&mut recv, self.limits.max_response_bytes)
            .await
            .map_err(|e| match e {
                ReadError::TooLong(max) => ClientError::TooLarge(max),
                ReadError::Stream(e) => stream(&e),
            })?;
        Ok(Response::from_bytes(bytes)?)
    }

    /// The live connection, connecting first if there is none.
    async fn connection(&self) -> Result<quinn::Connection, ClientError> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        *slot = None;
        let error = |reason: String| ClientError::Connect {
            core: self.index,
            address: self.address,
            reason,
        };
        self.connects.fetch_add(1, Ordering::Relaxed);
        let connecting = self
            .endpoint
            .connect(self.address, &self.server_name)
            .map_err(|e| error(e.to_string()))?;
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| error(format!("no handshake within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| error(e.to_string()))?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    async fn forget(&self, broken: &quinn::Connection) {
        let mut slot = self.connection.lock().await;
        if slot
            .as_ref()
            .is_some_and(|c| c.stable_id() == broken.stable_id())
        {
            *slot = None;
        }
    }
}
