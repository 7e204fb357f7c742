//! Prometheus metrics on `prometheus-client`, served over HTTP/1.1 by `hyper`.
//!
//! - [`AtomicCounter`], [`AtomicGauge`]: metrics registered once in a `Registry` whose value the
//!   pipeline also uses as a plain atomic (admission control, progress logs).
//! - [`histogram`] with [`SECONDS_BUCKETS`] or [`COUNT_BUCKETS`]: the bucket bounds of every
//!   histogram, shared by cores and drivers so their latencies compare.
//! - [`encode`]: a registry as Prometheus text (version 0.0.4).
//! - [`serve`] answers `GET /metrics`; [`scrape`] fetches it; [`sample`] reads one value.
//!
//! Names carry their unit (`_seconds`, `_bytes`), as Prometheus recommends; counters are registered
//! without `_total`, which the encoder appends. The endpoint is bounded like everything else: a
//! request head of at most 8 KiB (hyper's least buffer) read within 2 s, one request per
//! connection, at most 16 scrapes served at once, each within 10 s. A scrape reads at most 16 MiB
//! within 10 s.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};

/// Bucket bounds (seconds) for latencies from 50 µs to 10 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Bucket bounds for counts (batch sizes): powers of two up to 4096.
pub const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// A histogram over `bounds` (ascending); the +Inf bucket is implicit.
pub fn histogram(bounds: &[f64]) -> Histogram {
    assert!(
        bounds.windows(2).all(|w| w[0] < w[1]),
        "histogram bounds must ascend"
    );
    Histogram::new(bounds.iter().copied())
}

/// A monotonic counter, registered under a name without `_total`. It dereferences to its atomic
/// because the pipeline reads it and, for counts it copies from the core (the committed sequence's
/// length), stores into it.
#[derive(Clone, Debug, Default)]
pub struct AtomicCounter(Counter<u64, AtomicU64>);

/// A value that goes up and down. It dereferences to its atomic because the pipeline acts on it
/// (connection admission) and the progress logs read it.
#[derive(Clone, Debug, Default)]
pub struct AtomicGauge(Gauge<u64, AtomicU64>);

impl Deref for AtomicCounter {
    type Target = AtomicU64;
    fn deref(&self) -> &AtomicU64 {
        self.0.inner()
    }
}

impl Deref for AtomicGauge {
    type Target = AtomicU64;
    fn deref(&self) -> &AtomicU64 {
        self.0.inner()
    }
}

impl EncodeMetric for AtomicCounter {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

impl EncodeMetric for AtomicGauge {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// The Prometheus text (version 0.0.4) of every metric in `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)
        .expect("writing to a String cannot fail");
    text
}

/// Renders the current metrics of a process.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Largest request head read from a scraper (hyper refuses a smaller buffer).
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Scrapes served at once.
const MAX_SCRAPES: usize = 16;
/// Time a scraper has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Time one scrape may hold its slot, reply included (a scraper that stops reading).
const SERVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest exposition [`scrape`] accepts.
const MAX_SCRAPE_BYTES: usize = 16 << 20;
/// Longest a [`scrape`] takes, connection included.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `address` and serves `GET /metrics` (and `GET /`) as Prometheus text until the runtime
/// stops. Other paths get 404, other methods 405; scrapes beyond 16 at once are refused.
pub async fn serve(address: SocketAddr, render: Render) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                continue; // Dropping the socket refuses the scrape.
            };
            let render = render.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |request| {
                    let reply = reply(&request, &render);
                    async move { Ok::<_, Infallible>(reply) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(READ_TIMEOUT)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(socket), service);
                let _ = tokio::time::timeout(SERVE_TIMEOUT, connection).await;
            });
        }
    });
    Ok(bound)
}

/// The reply to one request of a scraper.
fn reply(request: &Request<Incoming>, render: &Render) -> Response<Full<Bytes>> {
    let status = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics" | "/") => {
            return Response::builder()
                .header(
                    CONTENT_TYPE,
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                )
                .body(Full::new(Bytes::from(render())))
                .expect("a valid response");
        }
        (&Method::GET, _) => StatusCode::NOT_FOUND,
        _ => StatusCode::METHOD_NOT_ALLOWED,
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// Fetches `http://address/metrics` (for the harness and tests): at most 16 MiB within 10 s.
pub async fn scrape(address: SocketAddr) -> std::io::Result<String> {
    tokio::time::timeout(SCRAPE_TIMEOUT, fetch(address))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "scrape timed out"))?
}

async fn fetch(address: SocketAddr) -> std::io::Result<String> {
    let socket = TcpStream::connect(address).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(socket))
        .await
        .map_err(std::io::Error::other)?;
    let request = Request::get("/metrics")
        .header(HOST, address.to_string())
        .body(Empty::<Bytes>::new())
        .expect("a valid request");
    // The connection is driven here, not spawned, so a cancelled scrape leaves nothing behind.
    let exchange = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(std::io::Error::other)?;
        if response.status() != StatusCode::OK {
            return Err(invalid_data("not a 200 reply"));
        }
        let body = Limited::new(response.into_body(), MAX_SCRAPE_BYTES)
            .collect()
            .await
            .map_err(|e| invalid_data(&e.to_string()))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| invalid_data("not UTF-8"))
    };
    let (_, text) = tokio::join!(connection, exchange);
    text
}

fn invalid_data(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string())
}

/// The value of an unlabelled sample `name` in an exposition text.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Checks that `text` is well-formed Prometheus text: every family has a `# HELP` then a
    /// `# TYPE` line, once; every sample belongs to the family declared before it (`_total` for a
    /// counter, with or without labels; `_bucket` with a `le` label, `_sum` and `_count` for a histogram) and has a
    /// number. Returns the families as "name type help".
    pub(crate) fn families(text: &str) -> Vec<String> {
        let mut families: Vec<(String, String, String)> = Vec::new();
        let mut help = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                help = Some(rest.split_once(' ').unwrap());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                let (helped, help) = help.take().expect("# HELP before # TYPE");
                assert_eq!(helped, name, "{line}");
                assert!(families.iter().all(|(n, _, _)| n != name), "{name} twice");
                families.push((name.into(), kind.into(), help.into()));
            } else {
                let (name, kind, _) = families.last().expect("a sample before any # TYPE");
                let (series, value) = line.rsplit_once(' ').unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
                let suffix = series.strip_prefix(name.as_str()).unwrap_or("?");
                let fits = match kind.as_str() {
                    "counter" => {
                        (suffix.is_empty() || suffix.starts_with('{') && suffix.ends_with('}'))
                            && name.ends_with("_total")
                    }
                    "gauge" => suffix.is_empty(),
                    // Unlabelled, or labelled (a family): `_sum{request="x"}`, `_bucket{...,le="1"}`.
                    "histogram" => {
                        let (base, labels) = suffix.split_once('{').unwrap_or((suffix, ""));
                        (["_sum", "_count"].contains(&base)
                            && (labels.is_empty() || labels.ends_with('}')))
                            || base == "_bucket"
                                && labels.contains("le=\"")
                                && labels.ends_with('}')
                    }
                    _ => false,
                };
                assert!(fits, "{line} is not a sample of {kind} {name}");
            }
        }
        families
            .into_iter()
            .map(|(name, kind, help)| format!("{name} {kind} {help}"))
            .collect()
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_bounds_inclusive() {
        let h = histogram(&[1.0, 2.0, 4.0]);
        for v in [0.5, 1.0, 1.5, 3.0, 9.0] {
            h.observe(v);
        }
        let mut registry = Registry::default();
        registry.register("x_seconds", "Help", h);
        let text = encode(&registry);
        assert!(text.contains("x_seconds_bucket{le=\"1\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"2\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"4\"} 4\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"+Inf\"} 5\n"), "{text}");
        assert_eq!(sample(&text, "x_seconds_count"), Some(5.0));
        assert_eq!(sample(&text, "x_seconds_sum"), Some(15.0));
        assert_eq!(families(&text), ["x_seconds histogram Help."]);
    }

    #[test]
    fn counters_gain_total_and_help_its_period() {
        let (c, g) = (AtomicCounter::default(), AtomicGauge::default());
        let mut registry = Registry::default();
        registry.register("demo_requests", "Requests", c.clone());
        registry.register("demo_connections", "Connections open", g.clone());
        c.fetch_add(7, Ordering::Relaxed);
        g.store(3, Ordering::Relaxed);
        let text = encode(&registry);
        assert_eq!(
            text,
            "# HELP demo_requests_total Requests.\n# TYPE demo_requests_total counter\n\
             demo_requests_total 7\n# HELP demo_connections Connections open.\n\
             # TYPE demo_connections gauge\ndemo_connections 3\n"
        );
    }

    #[tokio::test]
    async fn endpoint_serves_metrics_and_refuses_other_paths() {
        let counter = AtomicCounter::default();
        counter.store(7, Ordering::Relaxed);
        let mut registry = Registry::default();
        registry.register("demo_requests", "Requests", counter);
        let render: Render = Arc::new(move || encode(&registry));
        let address = serve("127.0.0.1:0".parse().unwrap(), render).await.unwrap();
        let text = scrape(address).await.unwrap();
        assert_eq!(sample(&text, "demo_requests_total"), Some(7.0));
        for (request, status) in [
            ("GET /secret HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 404"),
            ("POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 405"),
        ] {
            let mut socket = TcpStream::connect(address).await.unwrap();
            socket.write_all(request.as_bytes()).await.unwrap();
            let mut reply = String::new();
            socket.read_to_string(&mut reply).await.unwrap();
            assert!(reply.starts_with(status), "{reply}");
        }
    }

    #[tokio::test]
    async fn endpoint_drops_oversized_heads_and_scrape_refuses_errors() {
        let render: Render = Arc::new(String::new);
        let address = serve("127.0.0.1:0".parse().unwrap(), render).await.unwrap();
        let mut socket = TcpStream::connect(address).await.unwrap();
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        let _ = socket.write_all(huge.as_bytes()).await;
        let mut reply = String::new();
        let _ = socket.read_to_string(&mut reply).await;
        assert!(!reply.starts_with("HTTP/1.1 200"), "{reply}");
        // Nothing listens on a freshly closed port.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_address = closed.local_addr().unwrap();
        drop(closed);
        assert!(scrape(closed_address).await.is_err());
    }
}
