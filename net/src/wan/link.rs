//! One emulated link: the schedule of the datagrams one host sends to one destination.
//!
//! Pure: no socket, no clock of its own (every call is given `now`), no tokio. A datagram goes
//! through, in order:
//! 1. the path MTU: larger than the path carries → dropped ([`Fate::TooLarge`]);
//! 2. the queue: if the datagrams ahead of it still need more than the queue bound to leave the
//!    wire, it is dropped at the tail ([`Fate::QueueFull`]);
//! 3. the serializer: it starts leaving when the link is free and takes `size / bandwidth`;
//! 4. loss: lost with probability `loss` after taking its share of the wire ([`Fate::Lost`]), as
//!    a datagram dropped further along the path did;
//! 5. propagation: it arrives `delay ± jitter` after it left, but never before a datagram sent
//!    earlier on the same link (jitter without reordering; a clamped datagram arrives with the
//!    one before it).

use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// IPv4 and UDP headers: the wire carries them with every payload.
pub const HEADER_BYTES: usize = 28;

/// Settings of one directed link (own region → destination region).
#[derive(Clone, Debug, PartialEq)]
pub struct LinkParams {
    /// One-way propagation delay.
    pub delay: Duration,
    /// Each datagram's delay is drawn uniformly from `delay ± jitter` (at least zero).
    pub jitter: Duration,
    /// Probability that a datagram is lost (0..=1).
    pub loss: f64,
    /// Serialization rate of the link (bit/s, > 0).
    pub bandwidth_bit_s: f64,
}

/// What happens to one datagram offered to a [`Link`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// It reaches the destination at this time: send it then.
    Due(Instant),
    /// Lost on the way (drawn from the link's loss rate).
    Lost,
    /// Larger than the path MTU (UDP payload bytes): a real path drops it.
    TooLarge,
    /// The link's backlog exceeds the queue bound: dropped at the tail.
    QueueFull,
}

/// The state of one directed link.
#[derive(Debug)]
pub struct Link {
    params: LinkParams,
    /// Largest UDP payload the path carries.
    max_payload_bytes: usize,
    /// Most serialization time that may wait ahead of a new datagram.
    queue: Duration,
    /// Loss and jitter draws; seeded, so a run replays.
    rng: ChaCha8Rng,
    /// When the last admitted datagram has left the wire (the serializer is busy until then).
    wire_free_at: Option<Instant>,
    /// When the last admitted datagram arrives; later ones never arrive before it.
    last_due: Option<Instant>,
}

impl Link {
    /// A link with these settings, path MTU `max_payload_bytes`, queue bound `queue`, and its
    /// random draws seeded by `seed`.
    pub fn new(
        params: LinkParams,
        max_payload_bytes: usize,
        queue: Duration,
        seed: [u8; 32],
    ) -> Link {
        assert!(
            params.bandwidth_bit_s > 0.0 && params.bandwidth_bit_s.is_finite(),
            "validated by the profile: {params:?}"
        );
        assert!((0.0..=1.0).contains(&params.loss), "validated: {params:?}");
        Link {
            params,
            max_payload_bytes,
            queue,
            rng: ChaCha8Rng::from_seed(seed),
            wire_free_at: None,
            last_due: None,
        }
    }

    /// Offers a datagram of `payload_bytes` (UDP payload) at `now`, and says what becomes of it.
    pub fn admit(&mut self, now: Instant, payload_bytes: usize) -> Fate {
        if payload_bytes > self.max_payload_bytes {
            return Fate::TooLarge;
        }
        let start = self.wire_free_at.map_or(now, |free| free.max(now));
        if start - now > self.queue {
            return Fate::QueueFull;
        }
        let left = start + self.serialization(payload_bytes);
        self.wire_free_at = Some(left);
        // Both draws are made for every admitted datagram, so the jitter of one does not depend
        // on whether the one before it was lost.
        let lost = self.uniform() < self.params.loss;
        let propagation = self.propagation();
        if lost {
            return Fate::Lost;
        }
        let due = self
            .last_due
            .map_or(left + propagation, |last| last.max(left + propagation));
        self.last_due = Some(due);
        Fate::Due(due)
    }

    /// Time the datagram takes to leave the wire, headers included.
    fn serialization(&self, payload_bytes: usize) -> Duration {
        let bits = ((payload_bytes + HEADER_BYTES) * 8) as f64;
        Duration::from_secs_f64(bits / self.params.bandwidth_bit_s)
    }

    /// `delay` plus a uniform draw from `-jitter..jitter`, never below zero.
    fn propagation(&mut self) -> Duration {
        let jitter = self.params.jitter.as_secs_f64();
        let offset = (2.0 * self.uniform() - 1.0) * jitter;
        Duration::from_secs_f64((self.params.delay.as_secs_f64() + offset).max(0.0))
    }

    /// A uniform draw from `0..1` (53 random bits).
    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(delay_ms: u64, jitter_ms: u64, loss: f64, bandwidth_mbit_s: f64) -> LinkParams {
        LinkParams {
            delay: Duration::from_millis(delay_ms),
            jitter: Duration::from_millis(jitter_ms),
            loss,
            bandwidth_bit_s: bandwidth_mbit_s * 1e6,
        }
    }

    fn link(params: LinkParams) -> Link {
        Link::new(params, 1_472, Duration::from_secs(1), [7; 32])
    }

    #[test]
    fn jitter_never_reorders_and_stays_within_bounds() {
        // 10 ms ± 8 ms, one datagram every 100 µs: without the clamp, about every other
        // datagram would overtake the one before it.
        let mut link = link(params(10, 8, 0.0, 10_000.0));
        let t0 = Instant::now();
        let mut last = t0;
        let mut clamped = 0;
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_micros(100 * i);
            let Fate::Due(due) = link.admit(now, 1_200) else {
                panic!("no loss configured")
            };
            assert!(
                due >= last,
                "datagram {i} arrives before the one sent before it"
            );
            assert!(due - now <= Duration::from_millis(19), "{:?}", due - now);
            clamped += usize::from(due == last);
            last = due;
        }
        assert!(
            clamped > 1_000,
            "the jitter was exercised: {clamped} clamped"
        );
        // Sent 20 ms apart, datagrams never catch up with each other: their delays spread over
        // the whole 2..18 ms.
        let t1 = last + Duration::from_secs(1);
        let latencies: Vec<Duration> = (0..1_000u64)
            .map(|i| {
                let now = t1 + Duration::from_millis(20 * i);
                match link.admit(now, 1_200) {
                    Fate::Due(due) => due - now,
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        let (min, max) = (latencies.iter().min(), latencies.iter().max());
        assert!(min < Some(&Duration::from_millis(3)), "{min:?}");
        assert!(max > Some(&Duration::from_millis(17)), "{max:?}");
        assert!(max <= Some(&Duration::from_millis(19)), "{max:?}");
    }

    #[test]
    fn bandwidth_spaces_datagrams_by_their_serialization_time() {
        // 1,472 + 28 bytes at 12 Mbit/s: 1 ms each.
        let mut link = link(params(5, 0, 0.0, 12.0));
        let t0 = Instant::now();
        for i in 0..10u64 {
            let expected = t0 + Duration::from_millis(5 + i + 1);
            assert_eq!(link.admit(t0, 1_472), Fate::Due(expected), "datagram {i}");
        }
        // Once the wire is idle again, a datagram leaves at once.
        let later = t0 + Duration::from_millis(100);
        assert_eq!(
            link.admit(later, 1_472),
            Fate::Due(later + Duration::from_millis(6))
        );
    }

    #[test]
    fn loss_rate_matches_the_profile_and_replays_from_the_seed() {
        let run = |seed: u8| {
            let mut link = Link::new(
                params(1, 1, 0.05, 10_000.0),
                1_472,
                Duration::from_secs(1),
                [seed; 32],
            );
            let t0 = Instant::now();
            (0..100_000u64)
                .map(|i| link.admit(t0 + Duration::from_micros(10 * i), 1_000) == Fate::Lost)
                .collect::<Vec<bool>>()
        };
        let lost = run(1);
        let rate = lost.iter().filter(|&&l| l).count() as f64 / lost.len() as f64;
        // σ of the rate over 100,000 draws at p = 0.05 is 0.0007.
        assert!((rate - 0.05).abs() < 0.003, "loss rate {rate}");
        assert_eq!(lost, run(1), "same seed, same losses");
        assert_ne!(lost, run(2), "another seed, other losses");
    }

    #[test]
    fn datagrams_above_the_path_mtu_are_dropped_and_take_no_wire_time() {
        let mut link = link(params(5, 0, 0.0, 12.0));
        let t0 = Instant::now();
        assert_eq!(link.admit(t0, 1_473), Fate::TooLarge);
        assert_eq!(link.admit(t0, 6_500), Fate::TooLarge);
        assert_eq!(
            link.admit(t0, 1_472),
            Fate::Due(t0 + Duration::from_millis(6))
        );
    }

    #[test]
    fn a_backlog_beyond_the_queue_bound_drops_the_tail() {
        // 1 ms per datagram, 20 ms of queue: 21 fit at once (the first leaves at once, 20 wait
        // behind it, the last of them 20 ms), the 22nd is dropped.
        let mut link = Link::new(
            params(5, 0, 0.0, 12.0),
            1_472,
            Duration::from_millis(20),
            [0; 32],
        );
        let t0 = Instant::now();
        let fates: Vec<Fate> = (0..25).map(|_| link.admit(t0, 1_472)).collect();
        assert!(fates[..21].iter().all(|f| matches!(f, Fate::Due(_))));
        assert!(fates[21..].iter().all(|f| *f == Fate::QueueFull));
        // The queue drains with time: 2 ms later, two more fit.
        let t2 = t0 + Duration::from_millis(2);
        assert!(matches!(link.admit(t2, 1_472), Fate::Due(_)));
        assert!(matches!(link.admit(t2, 1_472), Fate::Due(_)));
        assert_eq!(link.admit(t2, 1_472), Fate::QueueFull);
    }

    #[test]
    fn loss_one_drops_everything_and_loss_zero_nothing() {
        let t0 = Instant::now();
        let mut all = link(params(1, 0, 1.0, 1_000.0));
        assert!((0..1_000).all(|_| all.admit(t0, 100) == Fate::Lost));
        let mut none = link(params(1, 0, 0.0, 1_000.0));
        assert!((0..1_000).all(|_| matches!(none.admit(t0, 100), Fate::Due(_))));
    }
}
