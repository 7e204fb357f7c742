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
//!    one prefix (/24 for IPv4, /64 for IPv6), so a host or a subnet cannot take every slot.
//! 4. **A full table makes room.** When all `max_connections` slots are taken:
//!    - a connection idle for [`RECLAIM_IDLE_MS`] (no request in progress or opened since, a
//!      handshake that has not finished) gives its slot to anyone: of the prefix holding the
//!      most, the longest idle first. A driver that restarts takes back the slots its old
//!      connections held, without waiting for their idle timeout.
//!    - with none idle, a connection from a prefix that holds no slot gets the slot of an active
//!      one, again of the prefix holding the most, the longest since its latest request first:
//!      a new source always finds room;
//!    - anyone else is refused, so a source that holds slots cannot churn the table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
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
#[derive(Debug)]
pub(crate) struct Activity {
    /// Milliseconds after the table's epoch of the latest stream opened (or of admission).
    last_ms: AtomicU64,
    /// Requests being read or answered now.
    in_progress: AtomicU32,
}

impl Activity {
    /// A request stream opened at `now_ms` (see [`Admission::now_ms`]); call [`Activity::done`]
    /// when it is answered or dropped.
    pub(crate) fn started(&self, now_ms: u64) {
        self.last_ms.fetch_max(now_ms, Ordering::Relaxed);
        self.in_progress.fetch_add(1, Ordering::Relaxed);
    }

    /// A request stream ended.
    pub(crate) fn done(&self) {
        self.in_progress.fetch_sub(1, Ordering::Relaxed);
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
    next_id: u64,
}

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
            if table.entries.len() >= self.rules.max_connections {
                evicted = Some(
                    self.make_room(&mut table, in_prefix == 0)
                        .ok_or(Refusal::Full)?,
                );
            }
        } else if table.entries.len() >= self.rules.max_connections {
            // A listed driver is never refused; it may take a slot beyond the table's size
            // only when nobody else can be closed (every slot is a listed driver's).
            evicted = self.make_room(&mut table, true);
        }
        let id = table.next_id;
        table.next_id += 1;
        let activity = Arc::new(Activity {
            last_ms: AtomicU64::new(self.now_ms()),
            in_progress: AtomicU32::new(0),
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

    /// Frees slot `id` (the connection ended, or was evicted). Freeing twice does nothing.
    pub(crate) fn leave(&self, id: u64) {
        let mut table = self.lock();
        if let Some(entry) = table.entries.remove(&id) {
            forget(&mut table, &entry);
        }
    }

    /// Takes the slot of the connection to close to make room (see the module doc), never a
    /// listed driver's: an idle one if any, else an active one if `newcomer` (its prefix holds
    /// no slot); of the prefix holding the most, then one without a request in progress, then
    /// the longest since its latest request.
    fn make_room(&self, table: &mut Table<C>, newcomer: bool) -> Option<C> {
        let now = self.now_ms();
        let victim = table
            .entries
            .iter()
            .filter(|(_, e)| !e.known)
            .map(|(id, e)| {
                let last = e.activity.last_ms.load(Ordering::Relaxed);
                let waiting = e.activity.in_progress.load(Ordering::Relaxed) == 0;
                let idle = waiting && now.saturating_sub(last) >= RECLAIM_IDLE_MS;
                let held = table.by_prefix[&Prefix::of(e.address)];
                // The oldest slot first among equals.
                (idle, held, waiting, u64::MAX - last, u64::MAX - *id, *id)
            })
            .filter(|(idle, ..)| *idle || newcomer)
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
    fn a_full_table_gives_an_idle_slot_to_anyone_and_an_active_one_only_to_a_new_prefix() {
        let mut a = Admission::new(rules(4, 8, 8));
        let (busy, _) = a.admit(ip("127.1.0.1"), "busy").unwrap();
        a.admit(ip("127.1.0.2"), "quiet").unwrap();
        a.admit(ip("127.2.0.1"), "other prefix").unwrap();
        a.admit(ip("127.9.9.9"), "listed").unwrap();
        busy.activity.started(a.now_ms());
        // Nobody idle long enough: a source whose prefix holds slots is refused rather than
        // churn the table; a new prefix takes the slot of the prefix holding the most, the one
        // without a request in progress.
        assert_eq!(a.admit(ip("127.1.0.3"), "more").err(), Some(Refusal::Full));
        let (_, evicted) = a.admit(ip("127.3.0.1"), "newcomer").unwrap();
        assert_eq!(evicted, Some("quiet"));
        assert_eq!(a.len(), 4);
        // Once connections sit idle, anyone (a driver back from a restart on a host that holds
        // slots) takes theirs; the busy one keeps its slot, and so does the listed driver.
        later(&mut a, RECLAIM_IDLE_MS);
        let (_, evicted) = a.admit(ip("127.1.0.3"), "restarted").unwrap();
        assert!(
            evicted == Some("other prefix") || evicted == Some("newcomer"),
            "{evicted:?}"
        );
        for i in 0..3 {
            let (_, evicted) = a.admit(ip(&format!("127.5.{i}.1")), "again").unwrap();
            assert_ne!(evicted, Some("listed"), "step {i}");
        }
    }

    #[test]
    fn among_equals_the_longest_idle_goes_first_and_a_request_in_progress_protects() {
        let mut a = Admission::new(rules(3, 8, 8));
        let (first, _) = a.admit(ip("127.1.0.1"), "first").unwrap();
        let (second, _) = a.admit(ip("127.2.0.1"), "second").unwrap();
        let (third, _) = a.admit(ip("127.3.0.1"), "third").unwrap();
        later(&mut a, 5 * RECLAIM_IDLE_MS);
        // `first` is slow: a request of it in progress. `second` asked later than `third`.
        first
            .activity
            .started(a.now_ms().saturating_sub(4 * RECLAIM_IDLE_MS));
        third
            .activity
            .started(a.now_ms().saturating_sub(3 * RECLAIM_IDLE_MS));
        third.activity.done();
        second
            .activity
            .started(a.now_ms().saturating_sub(2 * RECLAIM_IDLE_MS));
        second.activity.done();
        let (_, evicted) = a.admit(ip("127.1.0.9"), "new").unwrap();
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
