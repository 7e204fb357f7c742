//! `sleepyseal flood`: hostile traffic against the cores of a loopback testbed, for
//! `sleepyseal local --flood KIND`. Anyone may open connections to a core, so the harness checks
//! that what a flood can do does not cut the honest driver off.
//!
//! The flood comes from `--sources` distinct /24 prefixes of 127.0.0.0/8 (127.100.0.1,
//! 127.100.1.1, ...), each bound by its own endpoint, with `--connections` connections per
//! source to every core. What each connection does is its kind:
//! - `connections`: completes the handshake and sits idle; reconnects at once when closed;
//! - `streams`: keeps `--streams` request streams busy with `GetState` polls (consensus lane);
//! - `half-open`: opens `--streams` streams, sends 16 bytes on each and never finishes them;
//! - `oversized`: sends a request one byte past the core's limit, again and again;
//! - `submit`: keeps `--streams` `Submit`s of 64 junk transactions in flight (client lane;
//!   16-byte transactions, which the harness counts as foreign, not as load);
//! - `slow-readers`: asks for replies (`GetState` with the payload, `ReadCommitted` from the
//!   start) on `--streams` streams and never reads them;
//! - `all`: each connection one of the above, in turn.
//!
//! Bounded: only loopback cores, at most [`MAX_SOURCES`] sources, [`MAX_CONNECTIONS`]
//! connections per source and core, [`MAX_STREAMS`] streams per connection, [`MAX_SECONDS`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use sleepyseal_core::codec::{Decode, Encode};
use sleepyseal_core::protocol::{CommittedView, Request, RequestBody, Response};
use sleepyseal_core::{AuthorityIndex, CoreError, Digest};
use sleepyseal_net::{config::server_name, tls, NetLimits, Testbed};
use tokio::task::JoinSet;

use super::lifetime::{sleep_until, Lifetime};
use super::{runtime, DEFAULT_COMMITTEE};

/// Most source prefixes.
pub const MAX_SOURCES: usize = 1_024;
/// Most connections per source and core.
pub const MAX_CONNECTIONS: usize = 64;
/// Most streams per connection.
pub const MAX_STREAMS: usize = 256;
/// Longest flood.
pub const MAX_SECONDS: u64 = 600;

/// What a flood does (module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FloodKind {
    /// Idle connections, reopened as soon as they close.
    Connections,
    /// Streams busy with `GetState` polls.
    Streams,
    /// Streams that never finish their request.
    HalfOpen,
    /// Requests one byte past the core's limit.
    Oversized,
    /// `Submit`s of junk transactions.
    Submit,
    /// Replies asked for and never read.
    SlowReaders,
    /// Each connection one of the others, in turn.
    All,
}

impl FloodKind {
    /// The kinds `all` cycles through.
    const EACH: [FloodKind; 6] = [
        FloodKind::Connections,
        FloodKind::Streams,
        FloodKind::HalfOpen,
        FloodKind::Oversized,
        FloodKind::Submit,
        FloodKind::SlowReaders,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FloodKind::Connections => "connections",
            FloodKind::Streams => "streams",
            FloodKind::HalfOpen => "half-open",
            FloodKind::Oversized => "oversized",
            FloodKind::Submit => "submit",
            FloodKind::SlowReaders => "slow-readers",
            FloodKind::All => "all",
        }
    }
}

/// Flags of `sleepyseal flood`.
#[derive(Args, Debug, Clone)]
pub struct FloodArgs {
    /// The committee file (its cores must be on loopback).
    #[arg(long, default_value = DEFAULT_COMMITTEE)]
    pub committee: PathBuf,
    /// What the flood does.
    #[arg(long, value_enum)]
    pub kind: FloodKind,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Distinct /24 source prefixes (127.100.0.1, 127.100.1.1, ...).
    #[arg(long, default_value_t = 64)]
    pub sources: usize,
    /// Connections per source to every core.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Streams per connection (streams, half-open, submit, slow-readers).
    #[arg(long, default_value_t = 16)]
    pub streams: usize,
    /// Start at this time (µs since the Unix epoch) rather than at once.
    #[arg(long)]
    pub start_at_us: Option<u64>,
    /// Write the summary here as JSON (else print it).
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    #[command(flatten)]
    pub lifetime: Lifetime,
}

/// What a flood achieved, per second of its run where a rate.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FloodSummary {
    /// Its kind.
    pub kind: String,
    /// Seconds it ran.
    pub seconds: f64,
    /// Source prefixes and connections per source and core asked for.
    pub sources: usize,
    pub connections_per_source: usize,
    /// Connection attempts, and those that completed the handshake, per second.
    pub connects_per_s: f64,
    pub connected_per_s: f64,
    /// Attempts refused or failed, per second.
    pub refused_per_s: f64,
    /// Most connections open at once (all cores).
    pub peak_connections: u64,
    /// Connections the cores closed (evicted, idle, or on a protocol error).
    pub closed_by_cores: u64,
    /// Streams opened per second.
    pub streams_per_s: f64,
    /// Bytes sent per second.
    pub bytes_per_s: f64,
    /// Replies read, and those that were `Busy`, per second.
    pub replies_per_s: f64,
    pub busy_per_s: f64,
}

#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    connected: AtomicU64,
    refused: AtomicU64,
    open: AtomicU64,
    peak: AtomicU64,
    closed_by_cores: AtomicU64,
    streams: AtomicU64,
    bytes: AtomicU64,
    replies: AtomicU64,
    busy: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The source address of flood source `s`: 127.100.0.1, 127.100.1.1, ..., one /24 each.
pub fn source_ip(s: usize) -> IpAddr {
    IpAddr::from([127, 100 + (s / 256) as u8, (s % 256) as u8, 1])
}

/// Runs `sleepyseal flood`.
pub fn flood(args: FloodArgs) -> anyhow::Result<()> {
    if args.sources == 0 || args.sources > MAX_SOURCES {
        bail!("--sources must be in 1..={MAX_SOURCES}");
    }
    if args.connections == 0 || args.connections > MAX_CONNECTIONS {
        bail!("--connections must be in 1..={MAX_CONNECTIONS}");
    }
    if args.streams == 0 || args.streams > MAX_STREAMS {
        bail!("--streams must be in 1..={MAX_STREAMS}");
    }
    if args.duration == 0 || args.duration > MAX_SECONDS {
        bail!("--duration must be in 1..={MAX_SECONDS}");
    }
    let testbed = sleepyseal_net::load_testbed(&args.committee)?;
    if let Some(a) = testbed.addresses.iter().find(|a| !a.ip().is_loopback()) {
        bail!("the flood only targets loopback cores; the committee lists {a}");
    }
    let lifetime = args.lifetime.clone();
    let summary = lifetime.recorded(|| runtime("flood")?.block_on(run(&args, &testbed)))?;
    let json = serde_json::to_string(&summary)?;
    match &args.json_out {
        Some(path) => {
            std::fs::write(path, json).with_context(|| format!("write {}", path.display()))?
        }
        None => println!("{json}"),
    }
    Ok(())
}

async fn run(args: &FloodArgs, testbed: &Testbed) -> anyhow::Result<FloodSummary> {
    if let Some(at) = args.start_at_us {
        sleep_until(at, Duration::from_secs(2), "--start-at-us").await?;
    }
    let limits = NetLimits::default();
    let config = tls::client_config(testbed, &limits)?;
    let started = Instant::now();
    let until = started + Duration::from_secs(args.duration);
    let counters = Arc::new(Counters::default());
    let instance = testbed.committee.instance();
    let mut tasks = JoinSet::new();
    let mut n = 0usize;
    for s in 0..args.sources {
        let bind = SocketAddr::new(source_ip(s), 0);
        let mut endpoint = sleepyseal_net::limits::endpoint(bind, &limits, None, None)
            .with_context(|| format!("bind {bind} (a loopback address)"))?;
        endpoint.set_default_client_config(config.clone());
        for (core, address) in testbed.addresses.iter().enumerate() {
            for _ in 0..args.connections {
                let kind = match args.kind {
                    FloodKind::All => FloodKind::EACH[n % FloodKind::EACH.len()],
                    kind => kind,
                };
                n += 1;
                let worker = Worker {
                    endpoint: endpoint.clone(),
                    address: *address,
                    name: server_name(AuthorityIndex(core as u16)),
                    kind,
                    streams: args.streams,
                    instance,
                    max_request: limits.max_request_bytes,
                    until,
                    counters: counters.clone(),
                };
                tasks.spawn(worker.run());
            }
        }
    }
    let stop = tokio::time::sleep_until(until.into());
    tokio::select! {
        _ = stop => {}
        _ = super::shutdown_signal() => {}
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let seconds = started.elapsed().as_secs_f64();
    let c = &counters;
    let per_s = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / seconds;
    Ok(FloodSummary {
        kind: args.kind.name().to_string(),
        seconds,
        sources: args.sources,
        connections_per_source: args.connections,
        connects_per_s: per_s(&c.connects),
        connected_per_s: per_s(&c.connected),
        refused_per_s: per_s(&c.refused),
        peak_connections: c.peak.load(Ordering::Relaxed),
        closed_by_cores: c.closed_by_cores.load(Ordering::Relaxed),
        streams_per_s: per_s(&c.streams),
        bytes_per_s: per_s(&c.bytes),
        replies_per_s: per_s(&c.replies),
        busy_per_s: per_s(&c.busy),
    })
}

/// One hostile connection to one core, reopened whenever it closes.
struct Worker {
    endpoint: quinn::Endpoint,
    address: SocketAddr,
    name: String,
    kind: FloodKind,
    streams: usize,
    instance: Digest,
    max_request: usize,
    until: Instant,
    counters: Arc<Counters>,
}

impl Worker {
    async fn run(self) {
        let c = self.counters.clone();
        while Instant::now() < self.until {
            Counters::add(&c.connects, 1);
            let connecting = match self.endpoint.connect(self.address, &self.name) {
                Ok(connecting) => connecting,
                Err(_) => {
                    Counters::add(&c.refused, 1);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let connection = match connecting.await {
                Ok(connection) => connection,
                Err(_) => {
                    Counters::add(&c.refused, 1);
                    // A refused source tries again soon: the strongest a flood can be.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            Counters::add(&c.connected, 1);
            let open = c.open.fetch_add(1, Ordering::Relaxed) + 1;
            c.peak.fetch_max(open, Ordering::Relaxed);
            self.use_connection(&connection).await;
            c.open.fetch_sub(1, Ordering::Relaxed);
            if matches!(
                connection.close_reason(),
                Some(
                    quinn::ConnectionError::ApplicationClosed(_) | quinn::ConnectionError::TimedOut
                )
            ) {
                Counters::add(&c.closed_by_cores, 1);
            }
        }
    }

    /// Does this worker's kind on `connection` until it closes.
    async fn use_connection(&self, connection: &quinn::Connection) {
        if self.kind == FloodKind::Connections {
            let _ = tokio::time::timeout_at(self.until.into(), connection.closed()).await;
            return;
        }
        let lanes = if self.kind == FloodKind::Oversized {
            1
        } else {
            self.streams
        };
        let mut streams = JoinSet::new();
        for lane in 0..lanes {
            let connection = connection.clone();
            let job = Stream {
                kind: self.kind,
                instance: self.instance,
                max_request: self.max_request,
                counters: self.counters.clone(),
                lane: lane as u64,
            };
            streams.spawn(async move { while job.once(&connection).await {} });
        }
        let _ = tokio::time::timeout_at(self.until.into(), connection.closed()).await;
        streams.abort_all();
    }
}

/// One stream lane of a connection: what its kind does, over and over.
struct Stream {
    kind: FloodKind,
    instance: Digest,
    max_request: usize,
    counters: Arc<Counters>,
    lane: u64,
}

impl Stream {
    /// One stream; `false` once the connection is gone.
    async fn once(&self, connection: &quinn::Connection) -> bool {
        let c = &self.counters;
        let Ok((mut send, mut recv)) = connection.open_bi().await else {
            return false;
        };
        Counters::add(&c.streams, 1);
        match self.kind {
            FloodKind::Streams | FloodKind::Submit => {
                let body = if self.kind == FloodKind::Submit {
                    let tx =
                        Bytes::from([self.lane.to_le_bytes(), rand_u64().to_le_bytes()].concat());
                    RequestBody::Submit {
                        transactions: vec![tx; 64],
                    }
                } else {
                    RequestBody::GetState {
                        with_payload: false,
                    }
                };
                let bytes = self.request(body);
                Counters::add(&c.bytes, bytes.len() as u64);
                if send.write_all(&bytes).await.is_err() || send.finish().is_err() {
                    return true;
                }
                if let Ok(reply) = recv.read_to_end(64 << 20).await {
                    Counters::add(&c.replies, 1);
                    if matches!(
                        Response::from_bytes(Bytes::from(reply)),
                        Ok(Response::Error(CoreError::Busy))
                    ) {
                        Counters::add(&c.busy, 1);
                    }
                }
            }
            FloodKind::HalfOpen => {
                if send.write_all(&[0u8; 16]).await.is_ok() {
                    Counters::add(&c.bytes, 16);
                }
                // Held until the core gives up on it.
                let _ = send.stopped().await;
            }
            FloodKind::Oversized => {
                let chunk = Bytes::from(vec![0u8; 1 << 20]);
                let mut sent = 0usize;
                while sent <= self.max_request {
                    if send.write_chunk(chunk.clone()).await.is_err() {
                        break;
                    }
                    sent += chunk.len();
                    Counters::add(&c.bytes, chunk.len() as u64);
                }
                let _ = send.finish();
                let _ = send.stopped().await;
            }
            FloodKind::SlowReaders => {
                let body = if self.lane % 2 == 0 {
                    RequestBody::GetState { with_payload: true }
                } else {
                    RequestBody::ReadCommitted {
                        from_index: 0,
                        max: u32::MAX,
                        view: CommittedView::Payloads,
                        wait_ms: 0,
                    }
                };
                let bytes = self.request(body);
                Counters::add(&c.bytes, bytes.len() as u64);
                if send.write_all(&bytes).await.is_ok() && send.finish().is_ok() {
                    // Never read: the reply waits in the core until it gives up on the stream.
                    let _ = send.stopped().await;
                }
                drop(recv);
            }
            FloodKind::Connections | FloodKind::All => {}
        }
        true
    }

    fn request(&self, body: RequestBody) -> Bytes {
        Request {
            instance: self.instance,
            body,
        }
        .to_bytes()
    }
}

/// A cheap distinct number per transaction (junk transactions must not repeat).
fn rand_u64() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed) ^ (std::process::id() as u64).rotate_left(40)
}
