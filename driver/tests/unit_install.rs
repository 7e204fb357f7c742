//! Installs as a driver runs them (PROTOCOL.md §8a.3–8a.4): a core whose history is gone
//! everywhere asked gets a checkpoint certificate; when the core refuses the install, the driver
//! asks it where it stands before anything else.

mod support;

use sleepyseal_core::checkpoint::{checkpoint_message, CheckpointState, SignedCheckpoint};
use sleepyseal_core::protocol::{RequestBody, Response, Status, Summary};
use sleepyseal_core::testkit::instance;
use sleepyseal_core::tusk::ConsensusState;
use sleepyseal_core::{AuthorityIndex, CoreError, Digest, KeyPair, Millis, Round};
use sleepyseal_driver::state::{DriverConfig, DriverState, Outgoing};
use support::Cores;

const AWAY: AuthorityIndex = AuthorityIndex(3);

/// A core's summary as the driver would get it: committed up to `round`.
fn summary_at(template: &Summary, core: AuthorityIndex, round: u64) -> Summary {
    let mut s = template.clone();
    s.core = core;
    s.round = Round(round + 2);
    s.own_header = None;
    s.certificates = Vec::new();
    s.votes = Vec::new();
    s.author_high = vec![Round(round + 1); 4];
    s.gc_round = Round(round.saturating_sub(4));
    s.last_committed_round = Round(round);
    s.consensus_index = round * 3;
    s.status = Status::Ready;
    s
}

/// The boundary state at `round`, signed by `signer`.
fn signed(round: u64, signer: u16) -> SignedCheckpoint {
    let mut consensus = ConsensusState::new(4);
    consensus.consensus_index = round * 3;
    consensus.last_committed_round = Round(round);
    consensus.commit_hash = Digest([7; 32]);
    let state = CheckpointState::of(instance(), &consensus);
    SignedCheckpoint {
        signature: KeyPair::deterministic(0, signer)
            .sign(&checkpoint_message(&instance(), &state.digest())),
        signer: AuthorityIndex(signer),
        state,
    }
}

/// Answers what the driver sends until it sends an install to the away core: every fetch is
/// refused as history gone, every `GetCheckpoint` served with the boundary state at round 96.
fn until_install(driver: &mut DriverState, t: &mut u64) -> Outgoing {
    for _ in 0..200 {
        *t += 50;
        let out = driver.poll(Millis(*t));
        for o in out {
            let reply = match &o.request.body {
                RequestBody::InstallCheckpoint { .. } => return o,
                RequestBody::Fetch { .. } => Response::Error(CoreError::NeedStateSync),
                RequestBody::GetCheckpoint => Response::Checkpoints(vec![signed(96, o.core.0)]),
                _ => continue,
            };
            driver.on_response(Millis(*t + 1), o.id, o.core, reply);
        }
    }
    panic!(
        "no install after 200 polls; counts {:?}",
        driver.checkpoint_counts()
    )
}

/// Another driver installed first: the core refuses this driver's install. The driver asks the
/// core where it stands before anything else (before the fix it went on from its old summary:
/// catch-up from the old floor, refused as history gone, the same install again, without end).
#[test]
fn a_refused_install_makes_the_driver_ask_the_core_before_anything_else() {
    let mut cores = Cores::new(4);
    let Response::Summary(template) = cores.handle(
        Millis(1),
        AuthorityIndex(0),
        RequestBody::GetState {
            with_payload: false,
        },
    ) else {
        panic!("a summary")
    };
    let mut driver = DriverState::new(cores.committee.clone(), DriverConfig::default(), 0);
    for i in 0..3 {
        let s = summary_at(&template, AuthorityIndex(i), 100);
        driver.on_response(
            Millis(1),
            u64::MAX,
            AuthorityIndex(i),
            Response::Summary(Box::new(s)),
        );
    }
    let away = summary_at(&template, AWAY, 10);
    driver.on_response(Millis(1), u64::MAX, AWAY, Response::Summary(Box::new(away)));
    let mut t = 1;
    let install = until_install(&mut driver, &mut t);
    assert_eq!(install.core, AWAY);
    assert_eq!(driver.cores_needing_checkpoint(), vec![AWAY]);
    driver.on_response(
        Millis(t + 1),
        install.id,
        AWAY,
        Response::Error(CoreError::StaleCheckpoint {
            index: 288,
            own_index: 290,
        }),
    );
    assert_eq!(driver.checkpoint_counts().installs_refused, 1);
    assert_eq!(driver.cores_needing_checkpoint(), Vec::new());
    // The next request to (or for) the away core is `GetState`, however long the back-off.
    let ask = loop {
        t += 50;
        assert!(t < 60_000, "the driver never asked the core");
        let out = driver.poll(Millis(t));
        let mine: Vec<_> = out
            .into_iter()
            .filter(|o| o.core == AWAY || matches!(o.request.body, RequestBody::Fetch { .. }))
            .collect();
        if let Some(first) = mine.into_iter().next() {
            break first;
        }
    };
    assert!(
        matches!(ask.request.body, RequestBody::GetState { .. }) && ask.core == AWAY,
        "{:?} to {:?}",
        ask.request.body,
        ask.core
    );
    // The core is where the other driver's install put it: no install, no catch-up from the old
    // floor.
    let installed = summary_at(&template, AWAY, 96);
    driver.on_response(
        Millis(t + 1),
        ask.id,
        AWAY,
        Response::Summary(Box::new(installed)),
    );
    for _ in 0..20 {
        t += 50;
        for o in driver.poll(Millis(t)) {
            assert!(
                !matches!(o.request.body, RequestBody::InstallCheckpoint { .. }),
                "install again at {t} ms"
            );
        }
    }
    assert_eq!(driver.checkpoint_counts().installs_sent, 1);
}
