//! WAN emulation over real QUIC on loopback: a core server and a client, each emulating its
//! outgoing direction 20 ms one way, measure a 40–50 ms round trip and discover a path MTU of at
//! most 1,472 bytes; the same pair without emulation measures well under that and discovers more
//! than 1,472 (so both checks can fail).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

mod support;

use bytes::Bytes;
use sleepyseal_core::codec::{Decode, Encode};
use sleepyseal_core::protocol::{Request, RequestBody, Response};
use sleepyseal_core::AuthorityIndex;
use sleepyseal_net::wan::{Wan, WanProfile};
use sleepyseal_net::{ClientOptions, Clients, NetLimits};
use support::Served;

const LOOPBACK: [u8; 4] = [127, 0, 0, 1];
const T: Duration = Duration::from_secs(5);

/// Regions `a` and `b`, 20 ms apart one way, no jitter, no loss, links of `mbps` Mbit/s.
fn profile(mbps: u32) -> String {
    format!(
        r#"
regions = ["a", "b"]
[defaults]
jitter_ms = 0
loss = 0
bandwidth_mbps = {mbps}
[[links]]
between = ["a", "b"]
delay_ms = 20
[[links]]
between = ["a", "a"]
delay_ms = 0.1
[[links]]
between = ["b", "b"]
delay_ms = 0.1
"#
    )
}

/// The emulator of a process in `own` region that sees 127.0.0.1 in region `peer`, on
/// 1 Gbit/s links: both ends of a loopback pair live on one address, so each places the other
/// by its own hosts table.
fn wan(own: &str, peer: &str) -> Wan {
    wan_at(1_000, own, peer)
}

/// [`wan`] on links of `mbps` Mbit/s.
fn wan_at(mbps: u32, own: &str, peer: &str) -> Wan {
    let hosts = BTreeMap::from([(IpAddr::from(LOOPBACK), peer.to_string())]);
    let profile = WanProfile::from_toml_str(&profile(mbps))
        .unwrap()
        .with_hosts(hosts)
        .unwrap();
    Wan::new(profile, own, 42).unwrap()
}

/// A 4-core testbed whose core 0 is served on loopback, emulated by `wan` if given.
async fn serve(name: &str, wan: Option<Wan>) -> Served {
    let options = sleepyseal_net::ServerOptions {
        wan,
        ..Default::default()
    };
    support::serve_core_0(&format!("wan-{name}"), (LOOPBACK, 0).into(), options)
}

impl Served {
    async fn stop(self) {
        self.server.shutdown().await.unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn request(&self, body: RequestBody) -> Bytes {
        let instance = self.testbed.committee.instance();
        Request { instance, body }.to_bytes()
    }
}

/// What one client measured.
#[derive(Debug)]
struct Figures {
    /// Smallest time of a request/response on a fresh stream, over several.
    request_rtt: Duration,
    /// quinn's smoothed RTT estimate at the end.
    quinn_rtt: Duration,
    /// The discovered path MTU (UDP payload bytes).
    mtu: u16,
    /// MTU probes sent and lost.
    probes: (u64, u64),
}

/// One request on a fresh stream; the time to its response.
async fn exchange(connection: &quinn::Connection, request: &[u8]) -> Duration {
    let start = std::time::Instant::now();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(request).await.unwrap();
    send.finish().unwrap();
    let reply = tokio::time::timeout(T, recv.read_to_end(1 << 20))
        .await
        .expect("answered in time")
        .unwrap();
    let elapsed = start.elapsed();
    assert!(Response::from_bytes(Bytes::from(reply)).is_ok());
    elapsed
}

/// Connects to `served` (emulated by `wan` if given), times round trips, sends ~1 MiB, and keeps
/// polling for `settle` so path-MTU discovery runs its course.
async fn measure(served: &Served, wan: Option<&Wan>, settle: Duration) -> Figures {
    let limits = NetLimits::default();
    let bind = (LOOPBACK, 0).into();
    let mut endpoint = sleepyseal_net::limits::endpoint(bind, &limits, None, wan).unwrap();
    let config = sleepyseal_net::tls::client_config(&served.testbed, &limits).unwrap();
    endpoint.set_default_client_config(config);
    let connecting = endpoint
        .connect(served.testbed.addresses[0], "core-0.sleepyseal")
        .unwrap();
    let connection = tokio::time::timeout(T, connecting).await.unwrap().unwrap();
    let ping = served.request(RequestBody::GetState {
        with_payload: false,
    });
    let mut request_rtt = Duration::MAX;
    for _ in 0..5 {
        request_rtt = request_rtt.min(exchange(&connection, &ping).await);
    }
    let bulk = served.request(RequestBody::Submit {
        transactions: vec![Bytes::from(vec![7u8; 512]); 2_048],
    });
    exchange(&connection, &bulk).await;
    let deadline = tokio::time::Instant::now() + settle;
    while tokio::time::Instant::now() < deadline {
        exchange(&connection, &ping).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let path = connection.stats().path;
    let figures = Figures {
        request_rtt,
        quinn_rtt: connection.rtt(),
        mtu: path.current_mtu,
        probes: (path.sent_plpmtud_probes, path.lost_plpmtud_probes),
    };
    connection.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    figures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulated_pair_measures_the_profile_rtt_and_path_mtu() {
    let (server_wan, client_wan) = (wan("a", "b"), wan("b", "a"));
    let served = serve("pair", Some(server_wan.clone())).await;
    let figures = measure(&served, Some(&client_wan), Duration::from_secs(2)).await;
    println!("emulated: {figures:?}");
    println!("server {:?}", server_wan.stats());
    println!("client {:?}", client_wan.stats());
    let rtt = Duration::from_millis(40)..=Duration::from_millis(50);
    assert!(rtt.contains(&figures.request_rtt), "{figures:?}");
    assert!(rtt.contains(&figures.quinn_rtt), "{figures:?}");
    assert!((1_200..=1_472).contains(&figures.mtu), "{figures:?}");
    assert!(
        figures.probes.1 > 0,
        "probes above the path MTU were lost: {figures:?}"
    );
    for stats in [server_wan.stats(), client_wan.stats()] {
        assert!(stats.sent > 0 && stats.dropped_mtu > 0, "{stats:?}");
        assert_eq!(stats.unemulated, 0, "{stats:?}");
        assert_eq!(stats.dropped_loss + stats.dropped_queue, 0, "{stats:?}");
    }

    // The same through the typed client with a bind IP: a request takes one emulated round trip.
    let options = ClientOptions {
        bind_ip: Some(IpAddr::from(LOOPBACK)),
        wan: Some(client_wan.clone()),
    };
    let clients = Clients::with_options(&served.testbed, NetLimits::default(), options).unwrap();
    let core = clients.core(AuthorityIndex(0));
    let get_state = Request {
        instance: served.testbed.committee.instance(),
        body: RequestBody::GetState {
            with_payload: false,
        },
    };
    core.request(&get_state, T).await.unwrap(); // connects
    let start = std::time::Instant::now();
    core.request(&get_state, T).await.unwrap();
    let elapsed = start.elapsed();
    assert!(
        rtt.contains(&elapsed),
        "typed client round trip {elapsed:?}"
    );
    clients.close().await;
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_pair_without_emulation_is_fast_and_finds_a_larger_mtu() {
    let served = serve("control", None).await;
    let figures = measure(&served, None, Duration::from_secs(2)).await;
    println!("control: {figures:?}");
    assert!(
        figures.request_rtt < Duration::from_millis(10),
        "{figures:?}"
    );
    assert!(figures.mtu > 1_472, "{figures:?}");
    served.stop().await;
}

/// A request that outlasts its timeout because the path is slow, not because the core is gone,
/// keeps its connection: the core was heard from meanwhile (acknowledgements), and a fresh
/// connection would start over from a small congestion window and time out again. The next
/// request goes over the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_that_times_out_keeps_its_connection() {
    // 50 Mbit/s: the 4 MB request takes 0.7 s to send.
    let served = serve("slow", Some(wan_at(50, "a", "b"))).await;
    let options = ClientOptions {
        bind_ip: Some(IpAddr::from(LOOPBACK)),
        wan: Some(wan_at(50, "b", "a")),
    };
    let clients = Clients::with_options(&served.testbed, NetLimits::default(), options).unwrap();
    let core = clients.core(AuthorityIndex(0));
    let instance = served.testbed.committee.instance();
    let get_state = Request {
        instance,
        body: RequestBody::GetState {
            with_payload: false,
        },
    };
    core.request(&get_state, T).await.unwrap();
    assert_eq!(core.connects(), 1);
    let bulk = Request {
        instance,
        body: RequestBody::Submit {
            transactions: vec![Bytes::from(vec![7u8; 512]); 8_192],
        },
    };
    let slow = core.request(&bulk, Duration::from_millis(300)).await;
    assert!(
        matches!(slow, Err(sleepyseal_net::ClientError::Timeout(_))),
        "{slow:?}"
    );
    core.request(&get_state, T).await.unwrap();
    assert_eq!(core.connects(), 1, "the slow connection was given up");
    clients.close().await;
    served.stop().await;
}
