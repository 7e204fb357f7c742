//! Gap fills as a driver runs them (PROTOCOL.md §8a.5): for a core whose summary shows a gap,
//! a read of the entries just below its verified part from another core, then those entries,
//! newest first, to the core; a refused step makes the driver ask the core where its gap stands,
//! then try another source.

mod support;

use sleepyseal_core::messages::PayloadRef;
use sleepyseal_core::protocol::{
    CommittedEntry, CommittedView, Gap, RequestBody, Response, Summary,
};
use sleepyseal_core::{AuthorityIndex, CoreError, Digest, Millis, Round};
use sleepyseal_driver::state::{fill_range, DriverConfig, DriverState, Outgoing, FILL_BATCH};
use support::Cores;

const GAPPED: AuthorityIndex = AuthorityIndex(3);

fn entries(from: u64, to: u64) -> Vec<CommittedEntry> {
    (from..to)
        .map(|index| CommittedEntry {
            index,
            round: Round(index),
            author: AuthorityIndex((index % 4) as u16),
            digest: Digest([index as u8; 32]),
            payload: PayloadRef {
                digest: Digest([1; 32]),
                len: 0,
            },
            commit_hash: Digest([(index >> 8) as u8; 32]),
            leader_round: Round(index),
            is_leader: false,
            created_at_ms: index,
        })
        .collect()
}

/// The request the driver sends for the gapped core (on its behalf or to it).
fn for_gapped(out: &[Outgoing]) -> Option<&Outgoing> {
    out.iter().find(|o| {
        matches!(
            o.request.body,
            RequestBody::ReadCommitted { .. } | RequestBody::FillLog { .. }
        )
    })
}

/// A driver of 4 real cores, and the gapped core's summary as it really is (no gap).
fn driver_and_summary() -> (DriverState, Box<Summary>) {
    let mut cores = Cores::new(4);
    let driver = DriverState::new(cores.committee.clone(), DriverConfig::default(), 0);
    let Response::Summary(summary) = cores.handle(
        Millis(1),
        GAPPED,
        RequestBody::GetState {
            with_payload: false,
        },
    ) else {
        panic!("a summary")
    };
    (driver, summary)
}

/// The driver's `GetState` to the gapped core.
fn state_request(out: &[Outgoing]) -> Option<&Outgoing> {
    out.iter()
        .find(|o| o.core == GAPPED && matches!(o.request.body, RequestBody::GetState { .. }))
}

#[test]
fn fill_steps_end_below_the_gap_and_stay_within_a_read() {
    // Far from the bottom: a batch, its lowest entry only vouching for the one above it.
    let gap = Gap {
        old_index: 10,
        next: 5_000,
    };
    assert_eq!(fill_range(gap), (5_000 - FILL_BATCH, FILL_BATCH));
    // At the bottom: down to the entry below the gap, which anchors the chain at the core's
    // own old state.
    let gap = Gap {
        old_index: 10,
        next: 300,
    };
    assert_eq!(fill_range(gap), (9, 291));
    // A gap from the very start has no entry below it.
    let gap = Gap {
        old_index: 0,
        next: 5,
    };
    assert_eq!(fill_range(gap), (0, 5));
    assert!(FILL_BATCH as usize <= sleepyseal_core::limits::MAX_COMMITTED_PER_READ);
}

#[test]
fn a_driver_reads_the_gap_elsewhere_and_hands_it_over_newest_first() {
    let (mut driver, closed) = driver_and_summary();
    let mut summary = closed;
    summary.gap = Some(Gap {
        old_index: 10,
        next: 5_000,
    });
    driver.on_response(
        Millis(1),
        u64::MAX,
        GAPPED,
        Response::Summary(summary.clone()),
    );
    let out = driver.poll(Millis(100));
    let read = for_gapped(&out).expect("a read for the gap");
    assert_ne!(read.core, GAPPED, "read from another core");
    let (from, count) = fill_range(Gap {
        old_index: 10,
        next: 5_000,
    });
    assert_eq!(
        read.request.body,
        RequestBody::ReadCommitted {
            from_index: from,
            max: count as u32,
            view: CommittedView::Digests,
            wait_ms: 0,
        }
    );
    let source = read.core;
    let served = entries(from, 5_000);
    driver.on_response(
        Millis(101),
        read.id,
        source,
        Response::Committed {
            entries: served.clone(),
            payloads: Vec::new(),
            prefixes: Vec::new(),
        },
    );
    let out = driver.poll(Millis(102));
    let fill = for_gapped(&out).expect("the fill");
    assert_eq!(fill.core, GAPPED);
    let RequestBody::FillLog { entries: sent } = &fill.request.body else {
        panic!("{:?}", fill.request.body)
    };
    let mut newest_first = served;
    newest_first.reverse();
    assert_eq!(sent, &newest_first);
    // Refused (the source served entries that do not link): the driver asks the core where its
    // gap stands before anything else, and the next read goes elsewhere.
    driver.on_response(
        Millis(103),
        fill.id,
        GAPPED,
        Response::Error(CoreError::InvalidFill { next: 5_000 }),
    );
    assert_eq!(driver.fill_counts().steps_refused, 1);
    let out = driver.poll(Millis(200));
    assert!(for_gapped(&out).is_none(), "{out:?}");
    let ask = state_request(&out).expect("the core asked where it stands");
    driver.on_response(Millis(201), ask.id, GAPPED, Response::Summary(summary));
    let out = driver.poll(Millis(300));
    let again = for_gapped(&out).expect("another read");
    assert!(matches!(
        again.request.body,
        RequestBody::ReadCommitted { .. }
    ));
    assert_ne!(again.core, source, "another source");
    assert_ne!(again.core, GAPPED);
}

/// Another driver's fills closed the gap while this driver's summary still showed it: the step
/// is refused as not needed, the driver asks the core, and with the gap gone it sends no more
/// fill steps (before the fix it read and offered the same range for good, and the core's
/// catch-up never had a turn).
#[test]
fn a_step_refused_as_not_needed_ends_the_fill_once_the_core_says_so() {
    let (mut driver, closed) = driver_and_summary();
    assert_eq!(closed.gap, None);
    let mut gapped = closed.clone();
    gapped.gap = Some(Gap {
        old_index: 10,
        next: 300,
    });
    driver.on_response(Millis(1), u64::MAX, GAPPED, Response::Summary(gapped));
    let out = driver.poll(Millis(100));
    let read = for_gapped(&out).expect("a read for the gap");
    let (from, _) = fill_range(Gap {
        old_index: 10,
        next: 300,
    });
    driver.on_response(
        Millis(101),
        read.id,
        read.core,
        Response::Committed {
            entries: entries(from, 300),
            payloads: Vec::new(),
            prefixes: Vec::new(),
        },
    );
    let out = driver.poll(Millis(102));
    let fill = for_gapped(&out).expect("the fill");
    driver.on_response(
        Millis(103),
        fill.id,
        GAPPED,
        Response::Error(CoreError::FillNotNeeded),
    );
    let out = driver.poll(Millis(200));
    let ask = state_request(&out).expect("the core asked where it stands");
    driver.on_response(Millis(201), ask.id, GAPPED, Response::Summary(closed));
    for t in [300, 400, 1_000, 5_000] {
        let out = driver.poll(Millis(t));
        assert!(for_gapped(&out).is_none(), "at {t} ms: {out:?}");
    }
}
