//! Datagrams waiting for their due time, and their regrouping into GSO batches when they leave.
//!
//! Pure: the sender task of [`socket`](super::socket) owns the clock and the real socket.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Instant;

use bytes::Bytes;
use quinn::udp::EcnCodepoint;

/// Most bytes one GSO send carries: Linux refuses a UDP send above 64 KiB (see
/// [`MAX_UDP_PAYLOAD`](crate::limits::MAX_UDP_PAYLOAD)).
pub const MAX_BATCH_BYTES: usize = 64_000;
/// Bookkeeping charged per datagram on top of its payload, so that a flood of tiny datagrams
/// is bounded too.
const OVERHEAD_BYTES: usize = 64;

/// One UDP datagram as quinn asked to send it.
#[derive(Clone, Debug, PartialEq)]
pub struct Datagram {
    /// Where it goes.
    pub destination: SocketAddr,
    /// Its ECN codepoint, passed through unchanged.
    pub ecn: Option<EcnCodepoint>,
    /// The source address quinn chose, passed through unchanged.
    pub src_ip: Option<IpAddr>,
    /// The UDP payload (one GSO segment).
    pub contents: Bytes,
}

impl Datagram {
    /// Whether `next` may follow `self` in one GSO send: same addresses and ECN (one `sendmsg`
    /// carries one of each).
    fn same_route(&self, next: &Datagram) -> bool {
        self.destination == next.destination && self.ecn == next.ecn && self.src_ip == next.src_ip
    }

    fn charge(&self) -> usize {
        self.contents.len() + OVERHEAD_BYTES
    }
}

/// A datagram and when it is due; ordered by due time, then by arrival in the queue (a link's
/// datagrams have non-decreasing due times, so this keeps each link's order).
#[derive(Debug)]
struct Pending {
    due: Instant,
    seq: u64,
    datagram: Datagram,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Pending) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Pending) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Pending) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// The datagrams of one socket waiting for their due time, bounded in bytes.
#[derive(Debug)]
pub struct SendQueue {
    heap: BinaryHeap<Reverse<Pending>>,
    next_seq: u64,
    /// Payload plus bookkeeping bytes held.
    held_bytes: usize,
    max_held_bytes: usize,
}

impl SendQueue {
    /// An empty queue holding at most `max_held_bytes` (payload plus a fixed charge per
    /// datagram).
    pub fn new(max_held_bytes: usize) -> SendQueue {
        SendQueue {
            heap: BinaryHeap::new(),
            next_seq: 0,
            held_bytes: 0,
            max_held_bytes,
        }
    }

    /// Whether a datagram of `payload_bytes` fits.
    pub fn has_room(&self, payload_bytes: usize) -> bool {
        self.held_bytes + payload_bytes + OVERHEAD_BYTES <= self.max_held_bytes
    }

    /// Queues `datagram` until `due`. Returns whether it is now the earliest, so that the sender
    /// must wake sooner than it planned. The caller checked [`SendQueue::has_room`].
    pub fn push(&mut self, due: Instant, datagram: Datagram) -> bool {
        assert!(
            self.has_room(datagram.contents.len()),
            "checked by the caller"
        );
        let earliest = self.next_due().is_none_or(|next| due < next);
        self.held_bytes += datagram.charge();
        self.heap.push(Reverse(Pending {
            due,
            seq: self.next_seq,
            datagram,
        }));
        self.next_seq += 1;
        earliest
    }

    /// When the earliest datagram is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(p)| p.due)
    }

    /// Moves up to `max` datagrams due at `now` or before into `out`, earliest first.
    pub fn pop_due(&mut self, now: Instant, max: usize, out: &mut Vec<Datagram>) {
        while out.len() < max && self.next_due().is_some_and(|due| due <= now) {
            let Reverse(pending) = self.heap.pop().expect("peeked");
            self.held_bytes -= pending.datagram.charge();
            out.push(pending.datagram);
        }
    }
}

/// Splits `datagrams` (in sending order) into runs that one GSO send can carry: consecutive,
/// same route, all of one size except a shorter last one, at most `max_segments` and
/// [`MAX_BATCH_BYTES`]. Order is kept, so no destination sees its datagrams reordered.
pub fn batches(datagrams: &[Datagram], max_segments: usize) -> Vec<Range<usize>> {
    let max_segments = max_segments.max(1);
    let mut runs = Vec::new();
    let mut start = 0;
    while start < datagrams.len() {
        let first = &datagrams[start];
        let size = first.contents.len();
        let mut end = start + 1;
        let mut bytes = size;
        while end < datagrams.len() && end - start < max_segments {
            let next = &datagrams[end];
            let len = next.contents.len();
            // A shorter segment can only end a batch; so can a previous shorter one.
            let fits = first.same_route(next)
                && len <= size
                && datagrams[end - 1].contents.len() == size
                && bytes + len <= MAX_BATCH_BYTES;
            if !fits {
                break;
            }
            bytes += len;
            end += 1;
        }
        runs.push(start..end);
        start = end;
    }
    runs
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn datagram(port: u16, len: usize) -> Datagram {
        Datagram {
            destination: SocketAddr::from(([127, 0, 0, 1], port)),
            ecn: Some(EcnCodepoint::Ect0),
            src_ip: None,
            contents: Bytes::from(vec![port as u8; len]),
        }
    }

    #[test]
    fn due_order_then_queue_order() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut queue = SendQueue::new(1 << 20);
        assert!(queue.push(ms(10), datagram(1, 100)), "first is earliest");
        assert!(
            !queue.push(ms(10), datagram(2, 100)),
            "a tie is not earlier"
        );
        assert!(queue.push(ms(5), datagram(3, 100)));
        assert!(!queue.push(ms(20), datagram(4, 100)));
        let mut out = Vec::new();
        queue.pop_due(ms(4), 100, &mut out);
        assert!(out.is_empty());
        queue.pop_due(ms(10), 100, &mut out);
        let ports: Vec<u16> = out.iter().map(|d| d.destination.port()).collect();
        assert_eq!(ports, [3, 1, 2]);
        assert_eq!(queue.next_due(), Some(ms(20)));
        out.clear();
        queue.pop_due(ms(30), 100, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(queue.next_due(), None);
    }

    #[test]
    fn held_bytes_are_bounded_and_freed_on_pop() {
        let t0 = Instant::now();
        let mut queue = SendQueue::new(3 * (1_000 + OVERHEAD_BYTES));
        for _ in 0..3 {
            assert!(queue.has_room(1_000));
            queue.push(t0, datagram(1, 1_000));
        }
        assert!(!queue.has_room(1_000));
        assert!(!queue.has_room(0), "the per-datagram charge counts");
        let mut out = Vec::new();
        queue.pop_due(t0, 1, &mut out);
        assert_eq!(out.len(), 1, "pops at most `max`");
        assert!(queue.has_room(1_000));
        queue.pop_due(t0, 100, &mut out);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn batches_group_runs_of_one_route_and_size() {
        let mut list = vec![datagram(1, 1_200); 12];
        list.push(datagram(1, 700)); // a shorter last segment joins the run
        list.push(datagram(1, 1_200)); // after a shorter one: a new batch
        list.push(datagram(2, 1_200)); // another destination
        list.push(datagram(2, 1_300)); // larger than the run's size
        let mut other_ecn = datagram(2, 1_300);
        other_ecn.ecn = None;
        list.push(other_ecn);
        let runs = batches(&list, 10);
        assert_eq!(runs, [0..10, 10..13, 13..14, 14..15, 15..16, 16..17]);
        assert_eq!(batches(&list, 1).len(), list.len());
        assert!(batches(&[], 10).is_empty());
    }

    #[test]
    fn batches_stay_under_the_kernel_limit() {
        let list = vec![datagram(1, 9_000); 10];
        let runs = batches(&list, 10);
        assert_eq!(runs, [0..7, 7..10]);
        assert!(runs.iter().all(|r| r.len() * 9_000 <= MAX_BATCH_BYTES));
    }
}
