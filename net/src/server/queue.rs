//! The bounded queues between the pipeline's stages, fair between the parties that fill them.
//!
//! Anyone may run a driver or a client, so a queue shared first come, first served lets a flood
//! of requests from one party push out the requests of the honest driver that liveness rests on
//! (PROTOCOL.md §0). Here a queue has two **lanes**: consensus requests (what drivers send) and
//! client requests (`Submit`, `ReadCommitted`). Each lane is bounded and holds one FIFO per
//! **source** (a connection, or the in-process link):
//! - a taker takes from each lane up to its own quota, so a lane of client requests delays a
//!   consensus request by at most one group's worth of client work, however long it is;
//! - within a lane, sources take turns (round robin), so a request waits behind at most one
//!   request of each other source before its own source's turn comes;
//! - a full lane makes room by refusing the newest request of its longest source, unless that is
//!   the source asking: a source with few requests queued always gets in, and only a source that
//!   holds more than its share is answered `Busy`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Which lane a request waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    /// What drivers send: polls, bundles, catch-up, checkpoints, fills, fetches.
    Consensus = 0,
    /// What clients send: transactions and reads of the committed sequence.
    Client = 1,
}

/// Who put a request in the queue: a connection's id, or [`Source::LOCAL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Source(pub(crate) u64);

impl Source {
    /// The in-process link of a driver beside its home core.
    pub(crate) const LOCAL: Source = Source(u64::MAX);
}

/// A push that did not go in, with the item handed back.
#[derive(Debug)]
pub(crate) enum Refused<T> {
    /// The lane is full and the pusher holds the most of it.
    Full(T),
    /// Every taker is gone (the server stopped).
    Closed(T),
}

/// What a push did.
#[derive(Debug)]
pub(crate) enum Pushed<T> {
    /// Queued, nothing else moved.
    Queued,
    /// Queued in place of this item, the newest of the longest source, which is to be answered
    /// `Busy`.
    Displaced(T),
}

struct LaneQueue<T> {
    by_source: HashMap<Source, VecDeque<T>>,
    /// Sources with something queued, in the order of their turns.
    turns: VecDeque<Source>,
    len: usize,
    capacity: usize,
}

impl<T> LaneQueue<T> {
    fn new(capacity: usize) -> LaneQueue<T> {
        LaneQueue {
            by_source: HashMap::new(),
            turns: VecDeque::new(),
            len: 0,
            capacity: capacity.max(1),
        }
    }

    fn push(&mut self, source: Source, item: T) -> Result<Pushed<T>, Refused<T>> {
        let mut displaced = None;
        if self.len >= self.capacity {
            let (longest, held) = self
                .by_source
                .iter()
                .map(|(s, q)| (*s, q.len()))
                .max_by_key(|(_, len)| *len)
                .expect("a full lane holds something");
            let own = self.by_source.get(&source).map_or(0, VecDeque::len);
            if longest == source || own + 1 >= held {
                return Err(Refused::Full(item));
            }
            displaced = self.remove_newest(longest);
        }
        let queue = self.by_source.entry(source).or_default();
        if queue.is_empty() {
            self.turns.push_back(source);
        }
        queue.push_back(item);
        self.len += 1;
        Ok(displaced.map_or(Pushed::Queued, Pushed::Displaced))
    }

    fn remove_newest(&mut self, source: Source) -> Option<T> {
        let queue = self.by_source.get_mut(&source)?;
        let item = queue.pop_back()?;
        if queue.is_empty() {
            self.by_source.remove(&source);
            self.turns.retain(|s| *s != source);
        }
        self.len -= 1;
        Some(item)
    }

    /// The next item in turn order: the front of the source whose turn it is.
    fn pop(&mut self) -> Option<T> {
        let source = self.turns.pop_front()?;
        let queue = self
            .by_source
            .get_mut(&source)
            .expect("a source in turn has a queue");
        let item = queue.pop_front().expect("a source in turn has an item");
        if queue.is_empty() {
            self.by_source.remove(&source);
        } else {
            self.turns.push_back(source);
        }
        self.len -= 1;
        Some(item)
    }
}

struct State<T> {
    lanes: [LaneQueue<T>; 2],
    senders: usize,
    receiver: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

impl<T> Shared<T> {
    /// The state; a holder that panicked cannot have left it half-changed (every change is
    /// made whole under the lock), so a poisoned lock is taken as is.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A fair queue with `capacity[lane]` places per lane: its sending and taking ends.
pub(crate) fn fair_queue<T>(capacity: [usize; 2]) -> (FairSender<T>, FairReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            lanes: [LaneQueue::new(capacity[0]), LaneQueue::new(capacity[1])],
            senders: 1,
            receiver: true,
        }),
        ready: Condvar::new(),
    });
    (
        FairSender {
            shared: shared.clone(),
        },
        FairReceiver { shared },
    )
}

/// The sending end; the queue closes for the taker once every sender is gone.
pub(crate) struct FairSender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for FairSender<T> {
    fn clone(&self) -> FairSender<T> {
        self.shared.lock().senders += 1;
        FairSender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for FairSender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.senders -= 1;
        if state.senders == 0 {
            self.shared.ready.notify_all();
        }
    }
}

impl<T> FairSender<T> {
    /// Queues `item` from `source` in `lane` (see the module doc for what a full lane does).
    pub(crate) fn push(
        &self,
        lane: Lane,
        source: Source,
        item: T,
    ) -> Result<Pushed<T>, Refused<T>> {
        let mut state = self.shared.lock();
        if !state.receiver {
            return Err(Refused::Closed(item));
        }
        let pushed = state.lanes[lane as usize].push(source, item)?;
        drop(state);
        self.shared.ready.notify_one();
        Ok(pushed)
    }
}

/// The taking end (one taker).
pub(crate) struct FairReceiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Drop for FairReceiver<T> {
    fn drop(&mut self) {
        self.shared.lock().receiver = false;
    }
}

impl<T> FairReceiver<T> {
    /// The next item of `lane` in turn order, if any, without waiting.
    pub(crate) fn try_take(&self, lane: Lane) -> Option<T> {
        self.shared.lock().lanes[lane as usize].pop()
    }

    /// Waits until something is queued, then takes up to `quota[lane]` items of each lane in
    /// turn order, consensus first. With a `deadline`, an empty group once it passes with
    /// nothing queued. `None` once every sender is gone and nothing is left.
    pub(crate) fn take(
        &self,
        quota: [usize; 2],
        deadline: Option<Instant>,
    ) -> Option<Vec<(Lane, T)>> {
        let mut state = self.shared.lock();
        loop {
            let queued = state.lanes[0].len + state.lanes[1].len;
            if queued > 0 {
                let mut taken = Vec::with_capacity(queued.min(quota[0] + quota[1]));
                for (lane, at_most) in [(Lane::Consensus, quota[0]), (Lane::Client, quota[1])] {
                    let queue = &mut state.lanes[lane as usize];
                    for _ in 0..at_most {
                        match queue.pop() {
                            Some(item) => taken.push((lane, item)),
                            None => break,
                        }
                    }
                }
                if !taken.is_empty() {
                    return Some(taken);
                }
            }
            if state.senders == 0 {
                return None;
            }
            state = match deadline {
                None => self
                    .shared
                    .ready
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Some(Vec::new());
                    }
                    self.shared
                        .ready
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn items(group: Vec<(Lane, (u64, u32))>) -> Vec<(u64, u32)> {
        group.into_iter().map(|(_, item)| item).collect()
    }

    #[test]
    fn sources_take_turns_within_a_lane() {
        let (tx, rx) = fair_queue([100, 100]);
        for i in 0..5 {
            tx.push(Lane::Consensus, Source(1), (1, i)).unwrap();
        }
        tx.push(Lane::Consensus, Source(2), (2, 0)).unwrap();
        tx.push(Lane::Consensus, Source(2), (2, 1)).unwrap();
        let group = items(rx.take([4, 4], None).unwrap());
        // The flooder's first, then the other source's, alternately: the second source waited
        // behind one request of the first, not five.
        assert_eq!(group, vec![(1, 0), (2, 0), (1, 1), (2, 1)]);
        assert_eq!(
            items(rx.take([4, 4], None).unwrap()),
            vec![(1, 2), (1, 3), (1, 4)]
        );
    }

    #[test]
    fn each_lane_is_taken_up_to_its_own_quota_consensus_first() {
        let (tx, rx) = fair_queue([100, 100]);
        for i in 0..50 {
            tx.push(Lane::Client, Source(i), (i, 0)).unwrap();
        }
        tx.push(Lane::Consensus, Source(99), (99, 0)).unwrap();
        let group = rx.take([8, 3], None).unwrap();
        let lanes: Vec<Lane> = group.iter().map(|(l, _)| *l).collect();
        assert_eq!(
            lanes,
            vec![Lane::Consensus, Lane::Client, Lane::Client, Lane::Client]
        );
        // The consensus request did not wait behind fifty client requests.
        assert_eq!(group[0].1, (99, 0));
    }

    #[test]
    fn a_full_lane_refuses_its_largest_holder_and_admits_a_newcomer() {
        let (tx, rx) = fair_queue([4, 4]);
        for i in 0..4 {
            assert!(matches!(
                tx.push(Lane::Consensus, Source(1), (1, i)),
                Ok(Pushed::Queued)
            ));
        }
        // The flooder holds the whole lane: its fifth is refused.
        assert!(matches!(
            tx.push(Lane::Consensus, Source(1), (1, 4)),
            Err(Refused::Full((1, 4)))
        ));
        // A newcomer gets in, in place of the flooder's newest, which is handed back for `Busy`.
        assert!(matches!(
            tx.push(Lane::Consensus, Source(2), (2, 0)),
            Ok(Pushed::Displaced((1, 3)))
        ));
        // The other lane is its own: client requests do not take consensus places.
        for i in 0..4 {
            tx.push(Lane::Client, Source(3), (3, i)).unwrap();
        }
        let group = items(rx.take([10, 0], None).unwrap());
        assert_eq!(group, vec![(1, 0), (2, 0), (1, 1), (1, 2)]);
    }

    #[test]
    fn two_sources_with_equal_shares_are_both_refused_at_a_full_lane() {
        let (tx, _rx) = fair_queue([4, 4]);
        for i in 0..2 {
            tx.push(Lane::Client, Source(1), (1, i)).unwrap();
            tx.push(Lane::Client, Source(2), (2, i)).unwrap();
        }
        // Neither holds more than its share: displacing the other would only trade places.
        assert!(matches!(
            tx.push(Lane::Client, Source(2), (2, 2)),
            Err(Refused::Full(_))
        ));
        // A third source with nothing queued still gets in.
        assert!(matches!(
            tx.push(Lane::Client, Source(3), (3, 0)),
            Ok(Pushed::Displaced(_))
        ));
    }

    #[test]
    fn the_taker_wakes_for_a_push_times_out_empty_and_ends_when_senders_are_gone() {
        let (tx, rx) = fair_queue::<(u64, u32)>([4, 4]);
        let started = Instant::now();
        let group = rx.take([4, 4], Some(started + Duration::from_millis(30)));
        assert_eq!(group.map(|g| g.len()), Some(0));
        assert!(started.elapsed() >= Duration::from_millis(30));
        let pusher = {
            let tx = tx.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                tx.push(Lane::Client, Source(7), (7, 0)).unwrap();
            })
        };
        assert_eq!(items(rx.take([4, 4], None).unwrap()), vec![(7, 0)]);
        pusher.join().unwrap();
        tx.push(Lane::Consensus, Source(7), (7, 1)).unwrap();
        drop(tx);
        // What was queued before the last sender left is still taken, then the end.
        assert_eq!(items(rx.take([4, 4], None).unwrap()), vec![(7, 1)]);
        assert!(rx.take([4, 4], None).is_none());
    }

    #[test]
    fn a_push_after_the_taker_is_gone_is_refused_closed() {
        let (tx, rx) = fair_queue([4, 4]);
        drop(rx);
        assert!(matches!(
            tx.push(Lane::Consensus, Source(1), (1, 0)),
            Err(Refused::Closed((1, 0)))
        ));
    }
}
