//! The `quinn::AsyncUdpSocket` wrapper: delays, drops and rate-limits outgoing datagrams.
//!
//! ```text
//! quinn ─ try_send ─► WanSocket ─ destination not among the hosts ─► real socket
//!                        │ else, per GSO segment: Link::admit (MTU, queue, wire, loss, delay)
//!                        ▼
//!                    SendQueue (by due time, bounded)
//!                        └─► sender task ─ at the due time, regrouped ─► real socket
//! ```
//! `try_send` never blocks and never returns `WouldBlock` for an emulated destination: a
//! datagram the queue cannot hold is dropped, as a full router queue would. Receiving is the
//! real socket's. The sender task wakes on tokio's timer (1 ms resolution), so a datagram leaves
//! up to about a millisecond after its due time, never before; it ends when quinn drops the
//! socket.

use std::fmt;
use std::io;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::Notify;

use super::link::Fate;
use super::queue::{batches, Datagram, SendQueue, MAX_BATCH_BYTES};
use super::{Counter, Wan};

/// Most bytes held in one socket's queue (payloads waiting out their delay or their turn on
/// the wire). Beyond it datagrams are dropped and counted as queue overflow: the link queues
/// are bounded in time, this bounds the memory whatever the profile says.
pub const MAX_HELD_BYTES: usize = 64 << 20;
/// Most datagrams the sender takes from the queue per look, so it holds the lock briefly.
const MAX_SEND_PER_WAKE: usize = 1_024;

/// What the socket and its sender task share.
#[derive(Debug)]
struct Sender {
    queue: Mutex<SendQueue>,
    /// Wakes the sender when a datagram is due earlier than it planned, or on close.
    wake: Notify,
    /// Set when quinn drops the socket: the sender ends.
    closed: AtomicBool,
}

/// A UDP socket whose datagrams to the profile's hosts go through the emulated links.
pub(super) struct WanSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    wan: Wan,
    sender: Arc<Sender>,
}

impl WanSocket {
    /// Wraps `inner` and starts its sender task. Must be called inside a tokio runtime.
    pub(super) fn start(inner: Arc<dyn AsyncUdpSocket>, wan: Wan) -> Arc<WanSocket> {
        let sender = Arc::new(Sender {
            queue: Mutex::new(SendQueue::new(MAX_HELD_BYTES)),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(send_loop(sender.clone(), inner.clone(), wan.clone()));
        Arc::new(WanSocket { inner, wan, sender })
    }

    /// Runs each GSO segment of `transmit` through the link to `ip` and queues the survivors.
    fn schedule(&self, ip: IpAddr, transmit: &Transmit) {
        let now = Instant::now();
        let contents = Bytes::copy_from_slice(transmit.contents);
        let segment = transmit
            .segment_size
            .filter(|&s| s > 0)
            .unwrap_or(contents.len());
        let mut queue = self.sender.queue.lock().expect("no panic while holding it");
        let mut wake = false;
        self.wan.with_link(ip, |link| {
            for start in (0..contents.len()).step_by(segment) {
                let payload = contents.slice(start..(start + segment).min(contents.len()));
                if !queue.has_room(payload.len()) {
                    self.wan.count(Counter::DroppedQueue, 1);
                    continue;
                }
                match link.admit(now, payload.len()) {
                    Fate::Due(due) => {
                        let datagram = Datagram {
                            destination: transmit.destination,
                            ecn: transmit.ecn,
                            src_ip: transmit.src_ip,
                            contents: payload,
                        };
                        wake |= queue.push(due, datagram);
                    }
                    Fate::Lost => self.wan.count(Counter::DroppedLoss, 1),
                    Fate::TooLarge => self.wan.count(Counter::DroppedMtu, 1),
                    Fate::QueueFull => self.wan.count(Counter::DroppedQueue, 1),
                }
            }
        });
        drop(queue);
        if wake {
            self.sender.wake.notify_one();
        }
    }
}

impl Drop for WanSocket {
    fn drop(&mut self) {
        self.sender.closed.store(true, Ordering::Release);
        self.sender.wake.notify_one();
    }
}

impl fmt::Debug for WanSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WanSocket")
            .field("inner", &self.inner)
            .field("wan", &self.wan)
            .finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for WanSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let ip = transmit.destination.ip().to_canonical();
        if transmit.contents.is_empty() || !self.wan.emulates(ip) {
            let segments = transmit
                .segment_size
                .filter(|&s| s > 0)
                .map_or(1, |s| transmit.contents.len().div_ceil(s));
            let result = self.inner.try_send(transmit);
            if result.is_ok() {
                // After the send: on `WouldBlock` quinn offers the same datagrams again.
                self.wan.count(Counter::Unemulated, segments as u64);
            }
            return result;
        }
        self.schedule(ip, transmit);
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Sends each queued datagram at its due time, until the socket is dropped.
async fn send_loop(sender: Arc<Sender>, inner: Arc<dyn AsyncUdpSocket>, wan: Wan) {
    let mut poller = inner.clone().create_io_poller();
    let max_segments = inner.max_transmit_segments();
    let mut due = Vec::with_capacity(MAX_SEND_PER_WAKE);
    let mut buffer = Vec::with_capacity(MAX_BATCH_BYTES);
    while !sender.closed.load(Ordering::Acquire) {
        let next = {
            let mut queue = sender.queue.lock().expect("no panic while holding it");
            queue.pop_due(Instant::now(), MAX_SEND_PER_WAKE, &mut due);
            queue.next_due()
        };
        if !due.is_empty() {
            for run in batches(&due, max_segments) {
                let group = &due[run];
                send_group(&*inner, &mut poller, group, &mut buffer, &wan).await;
            }
            if due.len() == MAX_SEND_PER_WAKE {
                // A backlog: let the runtime's other tasks (quinn's among them) run in between.
                tokio::task::yield_now().await;
            }
            due.clear();
            // Sending took time: look for newly due datagrams before sleeping.
            continue;
        }
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = sender.wake.notified() => {}
                }
            }
            None => sender.wake.notified().await,
        }
    }
}

/// Sends `group` (one route, one segment size but a shorter last) as one GSO send, waiting
/// while the real socket's buffer is full. A send error drops the group, as quinn does.
async fn send_group(
    inner: &dyn AsyncUdpSocket,
    poller: &mut Pin<Box<dyn UdpPoller>>,
    group: &[Datagram],
    buffer: &mut Vec<u8>,
    wan: &Wan,
) {
    let first = &group[0];
    let contents: &[u8] = if group.len() == 1 {
        &first.contents
    } else {
        buffer.clear();
        group
            .iter()
            .for_each(|d| buffer.extend_from_slice(&d.contents));
        buffer
    };
    let transmit = Transmit {
        destination: first.destination,
        ecn: first.ecn,
        contents,
        segment_size: (group.len() > 1).then_some(first.contents.len()),
        src_ip: first.src_ip,
    };
    let result = loop {
        match inner.try_send(&transmit) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(e) = std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx)).await {
                    break Err(e);
                }
            }
            other => break other,
        }
    };
    match result {
        Ok(()) => wan.count(Counter::Sent, group.len() as u64),
        Err(error) => {
            wan.count(Counter::SendErrors, group.len() as u64);
            tracing::debug!(destination = %first.destination, "emulated send failed: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use quinn::udp::EcnCodepoint;

    use super::*;
    use crate::wan::WanProfile;

    /// One send the recorder saw: when, where, segment size, contents, ECN.
    type Sent = (
        Instant,
        SocketAddr,
        Option<usize>,
        Vec<u8>,
        Option<EcnCodepoint>,
    );

    /// A socket that records what it is asked to send.
    #[derive(Debug, Default)]
    struct Recorder {
        sent: Mutex<Vec<Sent>>,
    }

    #[derive(Debug)]
    struct AlwaysWritable;

    impl UdpPoller for AlwaysWritable {
        fn poll_writable(self: Pin<&mut Self>, _: &mut Context) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncUdpSocket for Recorder {
        fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
            Box::pin(AlwaysWritable)
        }
        fn try_send(&self, t: &Transmit) -> io::Result<()> {
            let record = (
                Instant::now(),
                t.destination,
                t.segment_size,
                t.contents.to_vec(),
                t.ecn,
            );
            self.sent.lock().unwrap().push(record);
            Ok(())
        }
        fn poll_recv(
            &self,
            _: &mut Context,
            _: &mut [IoSliceMut<'_>],
            _: &mut [RecvMeta],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
        fn local_addr(&self) -> io::Result<SocketAddr> {
            Ok(SocketAddr::from(([127, 0, 0, 1], 9)))
        }
        fn max_transmit_segments(&self) -> usize {
            10
        }
    }

    /// 10 ms one way to 127.0.0.2, nothing to 127.0.0.3.
    fn wan(loss: f64) -> Wan {
        let profile = WanProfile::from_toml_str(&format!(
            r#"
            regions = ["a", "b"]
            [defaults]
            delay_ms = 10
            jitter_ms = 0
            loss = {loss}
            bandwidth_mbps = 10000
            [[links]]
            between = ["a", "a"]
            [[links]]
            between = ["a", "b"]
            [[links]]
            between = ["b", "b"]
            [hosts]
            "127.0.0.2" = "b"
            "#
        ))
        .unwrap();
        Wan::new(profile, "a", 1).unwrap()
    }

    fn transmit(port_ip: [u8; 4], contents: &[u8], segment_size: Option<usize>) -> Transmit<'_> {
        Transmit {
            destination: SocketAddr::from((port_ip, 4433)),
            ecn: Some(EcnCodepoint::Ect0),
            contents,
            segment_size,
            src_ip: None,
        }
    }

    #[tokio::test]
    async fn gso_segments_above_the_path_mtu_are_dropped_one_by_one() {
        let (recorder, wan) = (Arc::new(Recorder::default()), wan(0.0));
        let socket = wan.wrap(recorder.clone());
        // Four 1,500-byte segments (above the default 1,472) and a 700-byte last one.
        let mut contents = vec![1u8; 4 * 1_500];
        contents.extend([2u8; 700]);
        let sent_at = Instant::now();
        socket
            .try_send(&transmit([127, 0, 0, 2], &contents, Some(1_500)))
            .unwrap();
        assert!(
            recorder.sent.lock().unwrap().is_empty(),
            "held for its delay"
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
        let sent = recorder.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 1, "{sent:?}");
        let (at, destination, segment_size, bytes, ecn) = &sent[0];
        assert!(*at - sent_at >= Duration::from_millis(10));
        assert_eq!(destination.ip(), IpAddr::from([127, 0, 0, 2]));
        assert_eq!((*segment_size, bytes.as_slice()), (None, &[2u8; 700][..]));
        assert_eq!(*ecn, Some(EcnCodepoint::Ect0), "ECN passes through");
        let stats = wan.stats();
        assert_eq!((stats.sent, stats.dropped_mtu), (1, 4));
    }

    #[tokio::test]
    async fn due_segments_leave_regrouped_in_order_and_others_pass_through() {
        let (recorder, wan) = (Arc::new(Recorder::default()), wan(0.0));
        let socket = wan.wrap(recorder.clone());
        let contents: Vec<u8> = (0..12 * 1_200).map(|i| (i / 1_200) as u8).collect();
        socket
            .try_send(&transmit([127, 0, 0, 2], &contents, Some(1_200)))
            .unwrap();
        socket
            .try_send(&transmit([127, 0, 0, 3], &contents, Some(1_200)))
            .unwrap();
        {
            let sent = recorder.sent.lock().unwrap();
            assert_eq!(sent.len(), 1, "the unemulated host at once, as given");
            assert_eq!(sent[0].2, Some(1_200));
            assert_eq!(sent[0].3, contents);
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
        let sent = recorder.sent.lock().unwrap().clone();
        let delayed: Vec<u8> = sent[1..].iter().flat_map(|s| s.3.clone()).collect();
        assert_eq!(delayed, contents, "every segment, in order");
        assert!(
            sent[1..].len() < 12,
            "regrouped into GSO sends: {}",
            sent.len() - 1
        );
        assert!(sent[1..].iter().all(|s| s.3.len() <= 10 * 1_200));
        let stats = wan.stats();
        assert_eq!((stats.sent, stats.unemulated), (12, 12));
    }

    #[tokio::test]
    async fn loss_applies_per_segment_and_the_sender_ends_with_the_socket() {
        let (recorder, wan) = (Arc::new(Recorder::default()), wan(0.5));
        let socket = wan.wrap(recorder.clone());
        let contents = vec![0u8; 10 * 1_000];
        for _ in 0..100 {
            socket
                .try_send(&transmit([127, 0, 0, 2], &contents, Some(1_000)))
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
        let stats = wan.stats();
        assert_eq!(stats.sent + stats.dropped_loss, 1_000);
        assert!((400..=600).contains(&stats.sent), "{stats:?}");
        assert_eq!(Arc::strong_count(&recorder), 3, "test, socket, sender");
        drop(socket);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(Arc::strong_count(&recorder), 1, "the sender task ended");
    }
}
