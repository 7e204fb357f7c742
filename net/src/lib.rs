//! sleepyseal-net: the QUIC transport (quinn + rustls with the ring provider).
//!
//! - [`config`]: the committee file (public: addresses, keys, stakes, pinned TLS certificates) and
//!   per-core key files, written by `genesis`;
//! - [`tls`]: TLS 1.3 configurations; clients pin each core's certificate;
//! - [`server`]: the core server, decode → batch verify → single core thread → group commit →
//!   reply, with bounded queues and `Busy` on overload;
//! - [`client`]: the typed async client used by drivers, load clients and the harness;
//! - [`wan`]: WAN emulation (delay, jitter, loss, bandwidth, path MTU per destination region)
//!   in a wrapper around quinn's UDP socket, configured by a TOML profile;
//! - [`message`]: reading one message from a stream, bounded, copied at most once;
//! - [`metrics`]: Prometheus metrics (prometheus-client) and their HTTP endpoint and scraper
//!   (hyper).
//!
//! One bidirectional QUIC stream carries one request and its response; the stream's end delimits
//! the message, whose size is bounded by [`limits::NetLimits`].

pub mod client;
pub mod config;
pub mod limits;
pub mod message;
pub mod metrics;
pub mod server;
pub mod tls;
pub mod wan;

pub use client::{ClientError, ClientOptions, Clients, CoreClient};
pub use config::{genesis, load_keys, load_testbed, GenesisOptions, Testbed};
pub use limits::NetLimits;
pub use server::{CoreServer, ServerOptions};
