//! The fixture the transport tests share: core 0 of a fresh 4-core testbed, over an in-memory
//! store, served in this process.

#![allow(dead_code)] // each test file uses its own part

use std::net::SocketAddr;
use std::path::PathBuf;

use sleepyseal_core::committee::default_schedule;
use sleepyseal_core::verify::VerifierConfig;
use sleepyseal_core::{Core, CoreConfig, MemStore, Store, Verifier};
use sleepyseal_net::server::ServerOptions;
use sleepyseal_net::{CoreServer, GenesisOptions, Testbed};

/// A served core 0 and its testbed (whose address of core 0 is where it listens).
pub struct Served {
    /// The testbed's directory (committee and key files); the caller removes it.
    pub dir: PathBuf,
    pub testbed: Testbed,
    pub server: CoreServer,
}

/// Writes a 4-core testbed to the temporary directory `sleepyseal-{name}-{pid}` and serves its
/// core 0 on `bind` (port 0: an ephemeral one) with `options`. Must run inside a tokio runtime.
pub fn serve_core_0(name: &str, bind: SocketAddr, options: ServerOptions) -> Served {
    let dir = std::env::temp_dir().join(format!("sleepyseal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let genesis = GenesisOptions {
        stakes: vec![1; 4],
        host: "127.0.0.1".into(),
        base_port: 1,
        seed: Some(7),
        addresses: None,
        constants: Default::default(),
    };
    let path = sleepyseal_net::genesis(&dir, &genesis).unwrap();
    let mut testbed = sleepyseal_net::load_testbed(&path).unwrap();
    let keys = sleepyseal_net::load_keys(&dir.join("core-0.key"), &testbed).unwrap();
    let committee = testbed.committee.clone();
    let mut store = MemStore::new();
    let core = Core::recover(
        committee.clone(),
        default_schedule(&committee),
        keys.key,
        CoreConfig::default(),
        store.load().unwrap(),
    )
    .unwrap();
    let quic = sleepyseal_net::tls::server_config(
        testbed.certificates[0].clone(),
        keys.tls_key,
        &options.limits,
    )
    .unwrap();
    let verifier = Verifier::new(committee, VerifierConfig::default());
    let server = CoreServer::start(bind, quic, core, Box::new(store), verifier, options).unwrap();
    testbed.addresses[0] = server.local_addr().unwrap();
    Served {
        dir,
        testbed,
        server,
    }
}
