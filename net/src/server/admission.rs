//! Which connections a core admits (issue: cores on an open network).
//!
//! A core's network face is open to anyone, and the transport is where a flood can cut the
//! honest driver off without breaking a signature. The rules, in order, for a new connection:
//! 1. **Address validation.** A source address that has not proven it receives what is sent to
//!    it gets a QUIC retry (a token bound to its address, one round trip) and nothing else: a
//!    spoofed source costs the core no state. (`NetLimits::validate_addresses`.)
//! 2. **Listed drivers** (`NetLimits::known_drivers`) are always admitted and never closed to
//!    make room. The core still trusts nothing they send.
//! 3. **Per source**: at most `per_address` connections from one address and `per_prefix` from
//!    one prefix (/24 for IPv4, /64 for IPv6), so a host or a subnet cannot take every slot;
//!    and at most `connects_per_s` new connections per second from one prefix (a bucket holding
//!    [`CONNECT_BURST_SECONDS`] seconds' worth), refused before any handshake work, so a source
//!    that reconnects in a loop costs the core little.
//! 4. **A full table makes room.** When all `max_connections` slots are taken:
//!    - a connection from a prefix that holds no slot gets one: the slot of the connection
//!      longest without an answered request: a new source always finds room;
//!    - a connection idle for [`RECLAIM_IDLE_MS`] (no request answered: half-open streams,
//!      oversized requests and replies never read do not count, nor does an unfinished
//!      handshake) gives its slot to a connection from its own address (a driver
//!      back from a restart takes back its old connections' slots without waiting for their
//!      idle timeout), or from a prefix holding at least two fewer slots than its own;
//!    - anyone else is refused: sources with even shares do not close each other's
//!      connections in a loop, which would cost the core a handshake each time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How long a connection must have been without a request (none in progress, none opened) for
/// its slot to go to anyone when the table is full. A driver polls each core every few tens of
/// milliseconds and a client waits on its requests, so only a dead or hostile peer sits this
/// long on a slot.
pub(crate) const RECLAIM_IDLE_MS: u64 = 1_000;

/// A source prefix: the /24 of an IPv4 address, the /64 of an IPv6 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Prefix {
    V4([u8; 3]),
    V6([u8; 8]),
}

impl Prefix {
    pub(crate) fn of(address: IpAddr) -> Prefix {
        match address.to_canonical() {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                Prefix::V4([a, b, c])
            }
            IpAddr::V6(v6) => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&v6.octets()[..8]);
                Prefix::V6(bytes)
            }
        }
    }
}

/// What a connection has been doing, updated by its task and read when room is needed.
///
/// Only requests **answered** count (read whole, handled, the reply written to the end): a
/// stream left half sent, a request past the size limit or a reply never read keeps a
/// connection busy without making it useful, so such a connection counts as idle.
#[derive(Debug)]
pub(crate) struct Activity {
    /// Milliseconds after the table's epoch of the latest request answered (or of admission).
    last_ms: AtomicU64,
}

impl Activity {
    /// A request was answered at `now_ms` (see [`Admission::now_ms`]).
    pub(crate) fn answered(&self, now_ms: u64) {
        self.last_ms.fetch_max(now_ms, Ordering::Relaxed);
    }
}

/// Why a connection was turned away or closed: the label of
/// `sleepyseal_core_connections_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The server is shutting down.
    Stopping,
    /// Its address holds `per_address` connections already.
    PerAddress,
    /// Its prefix holds `per_prefix` connections already.
    PerPrefix,
    /// Its prefix opened `connects_per_s` connections per second already.
    ConnectRate,
    /// Every slot is taken and its prefix already holds some.
    Full,
    /// Closed to make room for a connection from a prefix that held none.
    Evicted,
    /// Its handshake took longer than `handshake_timeout`.
    HandshakeTimeout,
}

impl Refusal {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Stopping => "stopping",
            Refusal::PerAddress => "per_address",
            Refusal::PerPrefix => "per_prefix",
            Refusal::ConnectRate => "connect_rate",
            Refusal::Full => "full",
            Refusal::Evicted => "evicted",
            Refusal::HandshakeTimeout => "handshake_timeout",
        }
    }
}

/// The limits [`Admission`] applies (from [`NetLimits`](crate::NetLimits)).
#[derive(Clone, Debug)]
pub(crate) struct Rules {
    pub(crate) max_connections: usize,
    pub(crate) per_address: usize,
    pub(crate) per_prefix: usize,
    pub(crate) connects_per_s: u32,
    pub(crate) known: Vec<IpAddr>,
}

struct Entry<C> {
    address: IpAddr,
    known: bool,
    activity: Arc<Activity>,
    /// What closes the connection when it is evicted.
    handle: C,
}

struct Table<C> {
    entries: HashMap<u64, Entry<C>>,
    by_address: HashMap<IpAddr, usize>,
    by_prefix: HashMap<Prefix, usize>,
    /// Connect tokens per prefix: (tokens, when counted, ms).
    connects: HashMap<Prefix, (f64, u64)>,
    next_id: u64,
}

/// A prefix's connect bucket holds this many seconds' worth of `connects_per_s`.
pub(crate) const CONNECT_BURST_SECONDS: f64 = 4.0;

/// Most prefixes whose connect buckets are remembered; beyond it the full buckets (prefixes
/// that have not connected for a burst's time) are forgotten first.
const MAX_CONNECT_BUCKETS: usize = 65_536;

/// A connection admitted: its slot id (to [`Admission::leave`]) and its activity record.
pub(crate) struct Admitted {
    pub(crate) id: u64,
    pub(crate) activity: Arc<Activity>,
}

/// The connection table of one core. `C` is what closes a connection (a `quinn::Connection`
/// in the server, anything in tests).
pub(crate) struct Admission<C> {
    rules: Rules,
    epoch: Instant,
    table: Mutex<Table<C>>,
}

impl<C> Admission<C> {
    pub(crate) fn new(rules: Rules) -> Admission<C> {
        Admission {
            rules,
            epoch: Instant::now(),
            table: Mutex::new(Table {
                entries: HashMap::new(),
                by_address: HashMap::new(),
                by_prefix: HashMap::new(),
                connects: HashMap::new(),
                next_id: 0,
            }),
        }
    }

    /// Milliseconds since the table was made: the clock of [`Activity`].
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether `address` is a listed driver's.
    pub(crate) fn is_known(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.rules.known.iter().any(|k| k.to_canonical() == address)
    }

    /// Connections held now.
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table<C>> {
        // Every change to the table is made whole under the lock: a poisoned lock is taken as is.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides on a connection from `address` (validated, and completing its handshake): a
    /// slot, with the handle of the connection evicted to make room if any, or the reason it is
    /// refused. `handle` is kept to close this connection should it be evicted later.
    pub(crate) fn admit(
        &self,
        address: IpAddr,
        handle: C,
    ) -> Result<(Admitted, Option<C>), Refusal> {
        let address = address.to_canonical();
        let prefix = Prefix::of(address);
        let known = self.is_known(address);
        let mut table = self.lock();
        let mut evicted = None;
        if !known {
            if table.by_address.get(&address).copied().unwrap_or(0) >= self.rules.per_address {
                return Err(Refusal::PerAddress);
            }
            let in_prefix = table.by_prefix.get(&prefix).copied().unwrap_or(0);
            if in_prefix >= self.rules.per_prefix {
                return Err(Refusal::PerPrefix);
            }
            if !self.take_connect_token(&mut table, prefix) {
                return Err(Refusal::ConnectRate);
            }
            if table.entries.len() >= self.rules.max_connections {
                evicted = Some(
                    self.make_room(&mut table, Some((address, in_prefix)))
                        .ok_or(Refusal::Full)?,
                );
            }
        } else if table.entries.len() >= self.rules.max_connections {
            // A listed driver is never refused; it may take a slot beyond the table's size
            // only when nobody else can be closed (every slot is a listed driver's).
            evicted = self.make_room(&mut table, None);
        }
        let id = table.next_id;
        table.next_id += 1;
        let activity = Arc::new(Activity {
            last_ms: AtomicU64::new(self.now_ms()),
        });
        *table.by_address.entry(address).or_default() += 1;
        *table.by_prefix.entry(prefix).or_default() += 1;
        table.entries.insert(
            id,
            Entry {
                address,
                known,
                activity: activity.clone(),
                handle,
            },
        );
        Ok((Admitted { id, activity }, evicted))
    }

    /// Takes one of `prefix`'s connect tokens, if it has one.
    fn take_connect_token(&self, table: &mut Table<C>, prefix: Prefix) -> bool {
        let now = self.now_ms();
        let rate = f64::from(self.rules.connects_per_s.max(1));
        let capacity = rate * CONNECT_BURST_SECONDS;
        if table.connects.len() >= MAX_CONNECT_BUCKETS && !table.connects.contains_key(&prefix) {
            let full_since = (CONNECT_BURST_SECONDS * 1e3) as u64;
            table
                .connects
                .retain(|_, (_, at)| now.saturating_sub(*at) < full_since);
            if table.connects.len() >= MAX_CONNECT_BUCKETS {
                // Every remembered prefix connected within a burst's time: a flood from that
                // many prefixes gets no new slot until some go quiet.
                return false;
            }
        }
        let (tokens, at) = table.connects.entry(prefix).or_insert((capacity, now));
        *tokens = (*tokens + now.saturating_sub(*at) as f64 / 1e3 * rate).min(capacity);
        *at = now;
        if *tokens < 1.0 {
            return false;
        }
        *tokens -= 1.0;
        true
    }

    /// Frees slot `id` (the connection ended, or was evicted). Freeing twice does nothing.
    pub(crate) fn leave(&self, id: u64) {
        let mut table = self.lock();
        if let Some(entry) = table.entries.remove(&id) {
            forget(&mut table, &entry);
        }
    }

    /// Takes the slot of the connection to close to make room for a connection from `asking`
    /// (its address and the slots its prefix holds; `None` for a listed driver), never a listed
    /// driver's (module doc). May go:
    /// - any slot, to a listed driver or a prefix holding none;
    /// - an idle slot of the same address (a driver back from a restart), or of a prefix
    ///   holding at least two more than the asker's: slots move towards an even share, and
    ///   sources with even shares do not close each other's connections in a loop.
    ///
    /// Chosen: the longest since its latest answered request (idle ones first), then of the
    /// prefix holding the most, then the oldest.
    fn make_room(&self, table: &mut Table<C>, asking: Option<(IpAddr, usize)>) -> Option<C> {
        let now = self.now_ms();
        let victim = table
            .entries
            .iter()
            .filter(|(_, e)| !e.known)
            .filter_map(|(id, e)| {
                let last = e.activity.last_ms.load(Ordering::Relaxed);
                let idle = now.saturating_sub(last) >= RECLAIM_IDLE_MS;
                let held = table.by_prefix[&Prefix::of(e.address)];
                let may = match asking {
                    None | Some((_, 0)) => true,
                    Some((address, own)) => idle && (e.address == address || held > own + 1),
                };
                may.then_some((idle, u64::MAX - last, held, u64::MAX - *id, *id))
            })
            .max()
            .map(|(.., id)| id)?;
        let entry = table
            .entries
            .remove(&victim)
            .expect("chosen from the table");
        forget(table, &entry);
        Some(entry.handle)
    }
}

fn forget<C>(table: &mut Table<C>, entry: &Entry<C>) {
    let prefix = Prefix::of(entry.address);
    if let Some(n) = table.by_address.get_mut(&entry.address) {
        *n -= 1;
        if *n == 0 {
            table.by_address.remove(&entry.address);
        }
    }
    if let Some(n) = table.by_prefix.get_mut(&prefix) {
        *n -= 1;
        if *n == 0 {
            table.by_prefix.remove(&prefix);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(max: usize, per_address: usize, per_prefix: usize) -> Rules {
        Rules {
            max_connections: max,
            per_address,
            per_prefix,
            connects_per_s: 1_000,
            known: vec!["127.9.9.9".parse().unwrap()],
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_are_the_24_of_ipv4_and_the_64_of_ipv6() {
        assert_eq!(Prefix::of(ip("10.1.2.3")), Prefix::of(ip("10.1.2.200")));
        assert_ne!(Prefix::of(ip("10.1.2.3")), Prefix::of(ip("10.1.3.3")));
        // An IPv4-mapped IPv6 address is the IPv4 address (a dual-stack socket sees those).
        assert_eq!(
            Prefix::of(ip("::ffff:10.1.2.3")),
            Prefix::of(ip("10.1.2.9"))
        );
        assert_eq!(
            Prefix::of(ip("2001:db8:1:2::1")),
            Prefix::of(ip("2001:db8:1:2:ff::9"))
        );
        assert_ne!(
            Prefix::of(ip("2001:db8:1:2::1")),
            Prefix::of(ip("2001:db8:1:3::1"))
        );
        assert_ne!(Prefix::of(ip("::")), Prefix::of(ip("0.0.0.0")));
    }

    #[test]
    fn an_address_and_a_prefix_hold_at_most_their_share() {
        let a = Admission::new(rules(100, 2, 3));
        assert!(a.admit(ip("127.1.0.1"), 1).is_ok());
        assert!(a.admit(ip("127.1.0.1"), 2).is_ok());
        assert_eq!(a.admit(ip("127.1.0.1"), 3).err(), Some(Refusal::PerAddress));
        assert!(a.admit(ip("127.1.0.2"), 4).is_ok());
        assert_eq!(a.admit(ip("127.1.0.3"), 5).err(), Some(Refusal::PerPrefix));
        // Another prefix is not affected.
        assert!(a.admit(ip("127.1.1.1"), 6).is_ok());
        assert_eq!(a.len(), 4);
    }

    /// Moves the table's clock `ms` ahead: every connection has gone that much longer without
    /// a request.
    fn later<C>(a: &mut Admission<C>, ms: u64) {
        a.epoch -= std::time::Duration::from_millis(ms);
    }

    #[test]
    fn a_full_table_makes_room_for_a_new_prefix_a_restart_and_an_uneven_share_only() {
        let mut a = Admission::new(rules(5, 8, 8));
        let (busy, _) = a.admit(ip("127.1.0.1"), "busy").unwrap();
        a.admit(ip("127.1.0.2"), "quiet").unwrap();
        a.admit(ip("127.1.0.3"), "quiet too").unwrap();
        a.admit(ip("127.2.0.1"), "other prefix").unwrap();
        a.admit(ip("127.9.9.9"), "listed").unwrap();
        busy.activity.answered(a.now_ms() + 1);
        // Nobody idle long enough: a source whose prefix holds slots is refused; a new prefix
        // takes the slot longest without an answer, of the prefix holding the most.
        assert_eq!(a.admit(ip("127.2.0.2"), "more").err(), Some(Refusal::Full));
        let (_, evicted) = a.admit(ip("127.3.0.1"), "newcomer").unwrap();
        assert_eq!(evicted, Some("quiet"));
        assert_eq!(a.len(), 5);
        later(&mut a, RECLAIM_IDLE_MS);
        // Idle now: a prefix holding one slot takes one from the prefix holding two more... but
        // 127.1 holds two (busy, quiet too) and 127.2 one: even enough, refused.
        assert_eq!(
            a.admit(ip("127.2.0.2"), "uneven?").err(),
            Some(Refusal::Full)
        );
        // A driver back from a restart on the address of an idle connection takes its slot.
        let (_, evicted) = a.admit(ip("127.1.0.3"), "restarted").unwrap();
        assert_eq!(evicted, Some("quiet too"));
        // The listed driver and the busy connection keep theirs whatever comes.
        for i in 0..4 {
            let (_, evicted) = a.admit(ip(&format!("127.5.{i}.1")), "again").unwrap();
            assert_ne!(evicted, Some("listed"), "step {i}");
        }
    }

    #[test]
    fn an_uneven_share_gives_an_idle_slot_to_the_smaller_prefix() {
        let mut a = Admission::new(rules(4, 8, 8));
        for i in 0..3 {
            a.admit(ip(&format!("127.1.0.{i}")), "big").unwrap();
        }
        a.admit(ip("127.2.0.1"), "small").unwrap();
        later(&mut a, RECLAIM_IDLE_MS);
        // 127.2 holds one, 127.1 three: two more, so an idle one of 127.1 goes.
        let (_, evicted) = a.admit(ip("127.2.0.2"), "small 2").unwrap();
        assert_eq!(evicted, Some("big"));
        // Now two against two: even, refused.
        assert_eq!(
            a.admit(ip("127.2.0.3"), "small 3").err(),
            Some(Refusal::Full)
        );
    }

    #[test]
    fn among_equals_the_longest_without_an_answer_goes_first() {
        let mut a = Admission::new(rules(3, 8, 8));
        let (first, _) = a.admit(ip("127.1.0.1"), "first").unwrap();
        let (second, _) = a.admit(ip("127.2.0.1"), "second").unwrap();
        let (third, _) = a.admit(ip("127.3.0.1"), "third").unwrap();
        later(&mut a, 5 * RECLAIM_IDLE_MS);
        // `third` was answered longest ago (a half-open or slow-reading connection is never
        // answered at all, like `first` until now).
        third.activity.answered(a.now_ms() - 3 * RECLAIM_IDLE_MS);
        second.activity.answered(a.now_ms() - 2 * RECLAIM_IDLE_MS);
        first.activity.answered(a.now_ms());
        let (_, evicted) = a.admit(ip("127.4.0.1"), "new").unwrap();
        assert_eq!(evicted, Some("third"));
    }

    #[test]
    fn listed_drivers_bypass_the_per_source_limits_and_are_never_evicted() {
        let a = Admission::new(rules(2, 1, 1));
        a.admit(ip("127.9.9.9"), "listed-1").unwrap();
        a.admit(ip("127.9.9.9"), "listed-2").unwrap();
        // The table is full of listed drivers: nobody can be closed for a newcomer.
        assert_eq!(a.admit(ip("127.1.0.1"), "new").err(), Some(Refusal::Full));
        // A third listed connection still gets in, beyond the table's size.
        let (_, evicted) = a.admit(ip("::ffff:127.9.9.9"), "listed-3").unwrap();
        assert_eq!(evicted, None);
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn a_prefix_that_reconnects_in_a_loop_is_refused_beyond_its_connect_rate() {
        let mut a = Admission::new(Rules {
            connects_per_s: 2,
            ..rules(100, 100, 100)
        });
        let burst = (2.0 * CONNECT_BURST_SECONDS) as usize;
        for i in 0..burst {
            let (x, _) = a.admit(ip("127.1.0.1"), i).unwrap();
            a.leave(x.id);
        }
        assert_eq!(
            a.admit(ip("127.1.0.2"), 99).err(),
            Some(Refusal::ConnectRate)
        );
        // Another prefix has its own bucket; listed drivers are not counted.
        assert!(a.admit(ip("127.2.0.1"), 1).is_ok());
        assert!(a.admit(ip("127.9.9.9"), 2).is_ok());
        // Half a second later, one more.
        later(&mut a, 500);
        assert!(a.admit(ip("127.1.0.3"), 3).is_ok());
        assert_eq!(
            a.admit(ip("127.1.0.3"), 4).err(),
            Some(Refusal::ConnectRate)
        );
    }

    #[test]
    fn leaving_frees_the_slot_and_the_source_counts() {
        let a = Admission::new(rules(1, 1, 1));
        let (x, _) = a.admit(ip("127.1.0.1"), 1).unwrap();
        assert_eq!(a.admit(ip("127.1.0.1"), 2).err(), Some(Refusal::PerAddress));
        a.leave(x.id);
        a.leave(x.id);
        assert_eq!(a.len(), 0);
        assert!(a.admit(ip("127.1.0.1"), 3).is_ok());
    }
}
