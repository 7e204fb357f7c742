//! Prometheus text exposition without a metrics framework: lock-free histograms, a renderer for
//! counters, gauges and histograms, and a small HTTP endpoint serving `GET /metrics`.
//!
//! Names carry their unit (`_seconds`, `_bytes`, `_total`), as Prometheus recommends. The endpoint
//! is bounded like everything else: a request head of at most 4 KiB read within 2 s, at most 16
//! scrapes served at once.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Bucket bounds (seconds) for latencies from 50 µs to 10 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Bucket bounds for counts (batch sizes): powers of two up to 4096.
pub const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// A cumulative histogram with fixed bounds; `observe` is wait-free.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, then the overflow bucket (+Inf).
    buckets: Box<[AtomicU64]>,
    /// Sum of observations, in millionths of the unit.
    sum_micro: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        assert!(
            bounds.windows(2).all(|w| w[0] < w[1]),
            "histogram bounds must ascend"
        );
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        let slot = self.bounds.partition_point(|b| *b < value);
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let micro = (value.max(0.0) * 1e6).round() as u64;
        self.sum_micro.fetch_add(micro, Ordering::Relaxed);
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Sum of the observations.
    pub fn sum(&self) -> f64 {
        self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6
    }
}

/// Builds one exposition text.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    fn head(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// A monotonic counter (`name` ends in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        debug_assert!(
            name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        self.head(name, help, "counter");
        let _ = writeln!(self.text, "{name} {value}");
    }

    /// A value that goes up and down.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.head(name, help, "gauge");
        let _ = writeln!(self.text, "{name} {value}");
    }

    /// A histogram: cumulative buckets, sum and count.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.head(name, help, "histogram");
        let mut cumulative = 0u64;
        for (bound, bucket) in h.bounds.iter().zip(h.buckets.iter()) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(self.text, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += h.buckets[h.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(self.text, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(self.text, "{name}_sum {}", h.sum());
        let _ = writeln!(self.text, "{name}_count {cumulative}");
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.text
    }
}

/// Renders the current metrics of a process.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Largest request head read from a scraper.
const MAX_HEAD: usize = 4 * 1024;
/// Scrapes served at once.
const MAX_SCRAPES: usize = 16;
/// Time a scraper has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds `address` and serves `GET /metrics` (Prometheus text) until the runtime stops. Other
/// paths get 404; heads over 4 KiB or slower than 2 s are dropped.
pub async fn serve(address: SocketAddr, render: Render) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                continue;
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                continue; // Dropping the socket refuses the scrape.
            };
            let render = render.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut socket)).await;
                let reply = match head {
                    Ok(Some(path)) if path == "/metrics" || path == "/" => {
                        let body = render();
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    }
                    Ok(Some(_)) => {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_string()
                    }
                    _ => return,
                };
                let _ = socket.write_all(reply.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Ok(bound)
}

/// Reads a request head and returns the path of a `GET`, or `None` if it is not one.
async fn read_head(socket: &mut tokio::net::TcpStream) -> Option<String> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = std::str::from_utf8(&head).ok()?.lines().next()?;
    let mut parts = line.split(' ');
    (parts.next()? == "GET").then(|| parts.next().map(str::to_string))?
}

/// Fetches `http://address/metrics` (for the harness and tests).
pub async fn scrape(address: SocketAddr) -> std::io::Result<String> {
    let mut socket = tokio::net::TcpStream::connect(address).await?;
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: sleepyseal\r\nConnection: close\r\n\r\n")
        .await?;
    let mut reply = Vec::new();
    socket.read_to_end(&mut reply).await?;
    let text = String::from_utf8(reply)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))?;
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a 200 reply",
        )),
    }
}

/// The value of an unlabelled sample `name` in an exposition text.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_bounds_inclusive() {
        let h = Histogram::new(&[1.0, 2.0, 4.0]);
        for v in [0.5, 1.0, 1.5, 3.0, 9.0] {
            h.observe(v);
        }
        let mut e = Exposition::default();
        e.histogram("x_seconds", "help", &h);
        let text = e.finish();
        assert!(text.contains("x_seconds_bucket{le=\"1\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"2\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"4\"} 4\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"+Inf\"} 5\n"), "{text}");
        assert_eq!(sample(&text, "x_seconds_count"), Some(5.0));
        assert_eq!(sample(&text, "x_seconds_sum"), Some(15.0));
    }

    #[tokio::test]
    async fn endpoint_serves_metrics_and_refuses_other_paths() {
        let render: Render = Arc::new(|| {
            let mut e = Exposition::default();
            e.counter("demo_requests_total", "Requests.", 7);
            e.finish()
        });
        let address = serve("127.0.0.1:0".parse().unwrap(), render).await.unwrap();
        let text = scrape(address).await.unwrap();
        assert_eq!(sample(&text, "demo_requests_total"), Some(7.0));
        let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
        socket
            .write_all(b"GET /secret HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        socket.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    }
}
