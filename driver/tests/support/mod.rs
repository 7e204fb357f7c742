//! Shared fixtures of the driver's tests: real cores over in-memory stores, handled synchronously.

#![allow(dead_code)] // each test file uses its own part

use std::sync::Arc;

use sleepyseal_core::committee::default_schedule;
use sleepyseal_core::protocol::{Request, RequestBody, Response};
use sleepyseal_core::testkit::committee;
use sleepyseal_core::verify::VerifierConfig;
use sleepyseal_core::{
    AuthorityIndex, Committee, Core, CoreConfig, KeyPair, MemStore, Millis, Store, Verifier,
};

/// `n` real cores, each with its store; a request is verified, handled and its write committed
/// before the reply is returned.
pub struct Cores {
    pub committee: Arc<Committee>,
    pub verifier: Verifier,
    pub cores: Vec<(Core, MemStore)>,
}

impl Cores {
    pub fn new(n: usize) -> Cores {
        let committee = committee(n);
        let cores = (0..n as u16)
            .map(|i| {
                let mut store = MemStore::new();
                let core = Core::recover(
                    committee.clone(),
                    default_schedule(&committee),
                    KeyPair::deterministic(0, i),
                    CoreConfig::default(),
                    store.load().unwrap(),
                )
                .unwrap();
                (core, store)
            })
            .collect();
        Cores {
            verifier: Verifier::new(committee.clone(), VerifierConfig::default()),
            committee,
            cores,
        }
    }

    pub fn handle(&mut self, now: Millis, core: AuthorityIndex, body: RequestBody) -> Response {
        let request = Request {
            instance: self.committee.instance(),
            body,
        };
        let verified = self.verifier.verify(request).expect("well-formed request");
        let (core, store) = &mut self.cores[core.as_usize()];
        let (response, batch) = core.handle(now, verified);
        store.commit(&[batch]).unwrap();
        response
    }

    /// The highest round any core reached.
    pub fn top_round(&self) -> u64 {
        self.cores.iter().map(|(c, _)| c.round().0).max().unwrap()
    }
}
