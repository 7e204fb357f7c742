//! The transport against bad input, in-process over loopback QUIC: every bad request gets a typed
//! error or a closed stream, the core keeps serving honest requests, and resources stay bounded.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod support;

use bytes::Bytes;
use sleepyseal_core::codec::{Decode, Encode};
use sleepyseal_core::messages::{Header, ParentRef};
use sleepyseal_core::protocol::{CommittedView, Request, RequestBody, Response};
use sleepyseal_core::testkit::sign_header;
use sleepyseal_core::{AuthorityIndex, Certificate, CoreError, Digest, Payload, Round};
use sleepyseal_net::server::ServerOptions;
use sleepyseal_net::{ClientError, Clients, CoreServer, NetLimits, Testbed};

struct Fixture {
    dir: PathBuf,
    testbed: Testbed,
    server: Option<CoreServer>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A 4-core testbed whose core 0 is served in-process on an ephemeral loopback port.
async fn serve_core_0(name: &str, options: ServerOptions) -> Fixture {
    let served = support::serve_core_0(
        &format!("net-{name}"),
        "127.0.0.1:0".parse().unwrap(),
        options,
    );
    Fixture {
        dir: served.dir,
        testbed: served.testbed,
        server: Some(served.server),
    }
}

const T: Duration = Duration::from_secs(5);

fn get_state(f: &Fixture) -> Request {
    Request {
        instance: f.testbed.committee.instance(),
        body: RequestBody::GetState { with_payload: true },
    }
}

async fn assert_serves(clients: &Clients, f: &Fixture) {
    let reply = clients
        .core(AuthorityIndex(0))
        .request(&get_state(f), T)
        .await
        .expect("honest request served");
    assert!(matches!(reply, Response::Summary(_)), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_requests_are_answered() {
    let f = serve_core_0("honest", ServerOptions::default()).await;
    let clients = Clients::new(&f.testbed, NetLimits::default()).unwrap();
    let core = clients.core(AuthorityIndex(0));
    let reply = core.request(&get_state(&f), T).await.unwrap();
    let Response::Summary(summary) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(summary.core, AuthorityIndex(0));
    assert_eq!(
        summary.round,
        Round(1),
        "round 1 proposed on the first poll"
    );
    let submit = Request {
        instance: f.testbed.committee.instance(),
        body: RequestBody::Submit {
            transactions: vec![Bytes::from(vec![1u8; 600]), Bytes::from_static(b"tx")],
        },
    };
    assert_eq!(
        core.request(&submit, T).await.unwrap(),
        Response::Submitted { accepted: 2 }
    );
    shutdown(f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_truncated_and_foreign_requests_get_typed_errors() {
    let f = serve_core_0("malformed", ServerOptions::default()).await;
    let clients = Clients::new(&f.testbed, NetLimits::default()).unwrap();
    let core = clients.core(AuthorityIndex(0));
    let valid = get_state(&f).to_bytes();
    let cases: Vec<(&str, Bytes)> = vec![
        ("empty", Bytes::new()),
        (
            "garbage",
            Bytes::from_static(b"\xff\xfe not a request at all"),
        ),
        ("truncated", valid.slice(..valid.len() - 1)),
        ("trailing", Bytes::from([&valid[..], b"x"].concat())),
    ];
    for (name, bytes) in cases {
        let reply = core.request_chunks(vec![bytes], T).await.unwrap();
        assert!(
            matches!(reply, Response::Error(CoreError::Decode(_))),
            "{name}: {reply:?}"
        );
    }
    let foreign = Request {
        instance: Digest([3; 32]),
        body: RequestBody::GetState {
            with_payload: false,
        },
    };
    let reply = core.request(&foreign, T).await.unwrap();
    assert!(
        matches!(reply, Response::Error(CoreError::WrongInstance { .. })),
        "{reply:?}"
    );
    assert_serves(&clients, &f).await;
    shutdown(f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_unknown_authors_and_stale_or_future_rounds_are_refused() {
    let f = serve_core_0("badsig", ServerOptions::default()).await;
    let clients = Clients::new(&f.testbed, NetLimits::default()).unwrap();
    let core = clients.core(AuthorityIndex(0));
    let committee = f.testbed.committee.clone();
    let instance = committee.instance();
    let genesis: Vec<ParentRef> = committee
        .indices()
        .map(|a| ParentRef {
            author: a,
            digest: Certificate::genesis(instance, a).digest(),
        })
        .collect();
    let key1 = sleepyseal_core::KeyPair::deterministic(7, 1);
    let payload = Payload::from_transactions([&b"p"[..]]);
    let header = |round: u64, author: u16| {
        Header::new(
            instance,
            Round(round),
            AuthorityIndex(author),
            genesis.clone(),
            payload.reference(),
            1,
        )
    };
    let bundle = |round: u64, headers| Request {
        instance,
        body: RequestBody::HeaderBundle {
            round: Round(round),
            headers,
            parents: vec![],
            payloads: vec![payload.clone()],
        },
    };
    // Signed by the wrong key.
    let mut forged = sign_header(&key1, header(1, 2));
    forged.signature = key1.sign(b"anything");
    let reply = core.request(&bundle(1, vec![forged]), T).await.unwrap();
    let Response::Votes {
        votes, rejected, ..
    } = reply
    else {
        panic!("{reply:?}")
    };
    assert!(votes.is_empty());
    assert!(
        matches!(rejected[0].1, CoreError::BadSignature { .. }),
        "{rejected:?}"
    );
    // An author outside the committee.
    let reply = core
        .request(&bundle(1, vec![sign_header(&key1, header(1, 9))]), T)
        .await
        .unwrap();
    let Response::Votes { rejected, .. } = reply else {
        panic!("{reply:?}")
    };
    assert!(
        matches!(
            rejected[0].1,
            CoreError::UnknownAuthority(AuthorityIndex(9))
        ),
        "{rejected:?}"
    );
    // A far-future round: its parents are unknown, so no vote.
    let reply = core
        .request(&bundle(500, vec![sign_header(&key1, header(500, 1))]), T)
        .await
        .unwrap();
    let Response::Votes {
        votes, rejected, ..
    } = reply
    else {
        panic!("{reply:?}")
    };
    assert!(votes.is_empty() && !rejected.is_empty(), "{rejected:?}");
    // A valid header, then its replay: the same vote, never a second one.
    let honest = sign_header(&key1, header(1, 1));
    let first = core
        .request(&bundle(1, vec![honest.clone()]), T)
        .await
        .unwrap();
    let replay = core.request(&bundle(1, vec![honest]), T).await.unwrap();
    let (Response::Votes { votes: v1, .. }, Response::Votes { votes: v2, .. }) = (first, replay)
    else {
        panic!("votes expected")
    };
    assert_eq!(v1.len(), 1);
    assert_eq!(v1, v2, "a replayed bundle gets the same vote back");
    assert_serves(&clients, &f).await;
    shutdown(f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_half_open_streams_are_closed_and_the_core_keeps_serving() {
    let options = ServerOptions {
        limits: NetLimits {
            max_request_bytes: 64 << 10,
            request_read_timeout: Duration::from_millis(300),
            ..NetLimits::default()
        },
        ..ServerOptions::default()
    };
    let f = serve_core_0("oversized", options).await;
    let clients = Clients::new(&f.testbed, NetLimits::default()).unwrap();
    let core = clients.core(AuthorityIndex(0));
    // Oversized: the stream is reset, no reply.
    let big = Bytes::from(vec![0u8; (64 << 10) + 1]);
    let reply = core.request_chunks(vec![big], T).await;
    assert!(matches!(reply, Err(ClientError::Stream(_))), "{reply:?}");
    // Half-open: 50 streams that never finish their request are reset after the read timeout.
    let raw = raw_connection(&f).await;
    let mut open = Vec::new();
    for _ in 0..50 {
        let (mut send, recv) = raw.open_bi().await.unwrap();
        send.write_all(b"\x00\x01partial").await.unwrap();
        open.push((send, recv));
    }
    assert_serves(&clients, &f).await;
    for (_send, mut recv) in open {
        let read = tokio::time::timeout(T, recv.read_to_end(1 << 10)).await;
        assert!(
            matches!(read, Ok(Err(_))),
            "half-open stream not closed: {read:?}"
        );
    }
    assert_serves(&clients, &f).await;
    shutdown(f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused() {
    let options = ServerOptions {
        limits: NetLimits {
            max_connections: 3,
            ..NetLimits::default()
        },
        ..ServerOptions::default()
    };
    let f = serve_core_0("flood", options).await;
    // Three connections from 127.0.0.2, then one from 127.0.0.1: the same /24, which holds
    // every slot, so it is refused however long the others have been idle (an idle slot goes
    // only to its own address or to a prefix holding two fewer).
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(raw_connection_from(&f, "127.0.0.2").await);
    }
    let clients = Clients::new(&f.testbed, NetLimits::default()).unwrap();
    let refused = clients
        .core(AuthorityIndex(0))
        .request(&get_state(&f), T)
        .await;
    assert!(
        matches!(refused, Err(ClientError::Connect { .. })),
        "{refused:?}"
    );
    let stats = f.server.as_ref().unwrap().stats().clone();
    assert_eq!(
        stats.connections.load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    assert_eq!(stats.refused_connections("full"), 1);
    // Every source proved its address first (a QUIC retry each).
    assert!(stats.retries_sent.load(std::sync::atomic::Ordering::SeqCst) >= 4);
    // A source from a prefix that holds no slot is never refused: the idlest connection of the
    // prefix holding the most is closed for it.
    let newcomer = raw_connection_from(&f, "127.7.0.1").await;
    let reply = raw_request(&newcomer, &get_state(&f)).await;
    assert!(matches!(reply, Response::Summary(_)), "{reply:?}");
    assert_eq!(stats.refused_connections("evicted"), 1);
    // The oldest of the prefix holding the most slots was closed for it.
    let closed = idle.remove(0);
    let started = std::time::Instant::now();
    let reason = loop {
        match closed.close_reason() {
            Some(reason) => break reason,
            None if started.elapsed() < T => tokio::time::sleep(Duration::from_millis(20)).await,
            None => panic!("the oldest connection was not closed"),
        }
    };
    assert!(
        matches!(&reason, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == 6u32.into()),
        "{reason:?}"
    );
    newcomer.close(0u32.into(), b"done");
    for c in idle.drain(..) {
        c.close(0u32.into(), b"done");
    }
    // Slots free up once the idle connections are gone.
    let mut served = false;
    for _ in 0..50 {
        if clients
            .core(AuthorityIndex(0))
            .request(&get_state(&f), T)
            .await
            .is_ok()
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "never served after the flood ended");
    shutdown(f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_busy_and_never_loses_an_acknowledged_transaction() {
    let options = ServerOptions {
        limits: NetLimits {
            verify_queue: 2,
            core_queue: 2,
            client_queue: 2,
            ..NetLimits::default()
        },
        ..ServerOptions::default()
    };
    let f = serve_core_0("busy", options).await;
    let clients = Arc::new(Clients::new(&f.testbed, NetLimits::default()).unwrap());
    let instance = f.testbed.committee.instance();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let clients = clients.clone();
        tasks.spawn(async move {
            let request = Request {
                instance,
                body: RequestBody::Submit {
                    transactions: (0..50u32)
                        .map(|j| Bytes::from([i.to_le_bytes(), j.to_le_bytes()].concat()))
                        .collect(),
                },
            };
            clients
                .core(AuthorityIndex(0))
                .request(&request, T)
                .await
                .unwrap()
        });
    }
    let (mut accepted, mut busy) = (0u64, 0u64);
    while let Some(reply) = tasks.join_next().await {
        match reply.unwrap() {
            Response::Submitted { accepted: n } => accepted += u64::from(n),
            Response::Error(CoreError::Busy) => busy += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(busy > 0, "queues of 2 never overflowed under 200 requests");
    assert!(accepted > 0);
    // Every acknowledged transaction is in the mempool (nothing proposed yet: no GetState).
    let stats = f.server.as_ref().unwrap().stats().clone();
    assert_serves(&clients, &f).await;
    let in_mempool = stats.mempool.load(std::sync::atomic::Ordering::SeqCst) as u64;
    // The GetState above may have moved up to one batch into the round-1 header.
    let Response::Summary(summary) = clients
        .core(AuthorityIndex(0))
        .request(&get_state(&f), T)
        .await
        .unwrap()
    else {
        panic!()
    };
    let proposed = summary
        .own_payload
        .map(|p| p.transactions().unwrap().len() as u64)
        .unwrap_or(0);
    assert_eq!(in_mempool + proposed, accepted);
    shutdown(f).await;
}

/// A flood that fills the core's queues, from clients (`Submit`) or from one connection sending
/// consensus requests, never takes the place of another connection's consensus request: the
/// flood is answered `Busy`, the other connection's polls never are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_connection_never_takes_the_place_of_anothers_consensus_requests() {
    let options = ServerOptions {
        limits: NetLimits {
            verify_queue: 4,
            core_queue: 4,
            client_queue: 4,
            ..NetLimits::default()
        },
        ..ServerOptions::default()
    };
    let f = serve_core_0("fair", options).await;
    let instance = f.testbed.committee.instance();
    let flooder = Arc::new(Clients::new(&f.testbed, NetLimits::default()).unwrap());
    let driver = Clients::new(&f.testbed, NetLimits::default()).unwrap();
    for client_flood in [true, false] {
        // 64 requests of the flooder in flight at all times, until the driver is done.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..64u32 {
            let (flooder, stop) = (flooder.clone(), stop.clone());
            tasks.spawn(async move {
                let mut busy = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let body = if client_flood {
                        RequestBody::Submit {
                            transactions: vec![Bytes::from(i.to_le_bytes().to_vec()); 20],
                        }
                    } else {
                        RequestBody::GetState {
                            with_payload: false,
                        }
                    };
                    let request = Request { instance, body };
                    let reply = flooder.core(AuthorityIndex(0)).request(&request, T).await;
                    if matches!(reply, Ok(Response::Error(CoreError::Busy))) {
                        busy += 1;
                    }
                }
                busy
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        for _ in 0..50 {
            let reply = driver
                .core(AuthorityIndex(0))
                .request(&get_state(&f), T)
                .await
                .expect("the driver's poll is answered");
            assert!(
                matches!(reply, Response::Summary(_)),
                "client flood {client_flood}: the driver's poll got {reply:?}"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut busy = 0;
        while let Some(n) = tasks.join_next().await {
            busy += n.unwrap();
        }
        assert!(
            busy > 0,
            "client flood {client_flood}: the queues never filled"
        );
    }
    shutdown(f).await;
}

/// A connection that opens requests faster than its rate waits for its tokens (QUIC flow
/// control holds its streams); its requests are still all answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_its_request_rate_is_held_back() {
    let options = ServerOptions {
        limits: NetLimits {
            max_requests_per_second: 20,
            ..NetLimits::default()
        },
        ..ServerOptions::default()
    };
    let f = serve_core_0("rate", options).await;
    let connection = raw_connection(&f).await;
    let started = std::time::Instant::now();
    for _ in 0..40 {
        let reply = raw_request(&connection, &get_state(&f)).await;
        assert!(matches!(reply, Response::Summary(_)), "{reply:?}");
    }
    // A second's worth at once, then 20 more at 20 per second.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let stats = f.server.as_ref().unwrap().stats().clone();
    assert!(
        stats
            .rate_limited_streams
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 15
    );
    connection.close(0u32.into(), b"done");
    shutdown(f).await;
}

/// Payloads received from one core are forwarded to another without a copy: the outgoing request's
/// chunks point into the buffer the reply arrived in.
#[test]
fn forwarded_payloads_are_slices_of_the_received_buffer() {
    let payload = Payload::from_transactions([&[5u8; 4_000][..], &[6u8; 300][..]]);
    let received: Bytes = Response::Committed {
        entries: vec![],
        payloads: vec![payload],
        prefixes: vec![],
    }
    .to_bytes();
    let Response::Committed { payloads, .. } = Response::from_bytes(received.clone()).unwrap()
    else {
        panic!()
    };
    let range = received.as_ptr() as usize..received.as_ptr() as usize + received.len();
    assert!(range.contains(&(payloads[0].bytes().as_ptr() as usize)));
    let forward = Request {
        instance: Digest([1; 32]),
        body: RequestBody::Sync {
            certificates: vec![],
            payloads: payloads.clone(),
        },
    };
    let chunks = forward.to_chunks();
    let carried = chunks
        .iter()
        .find(|c| c.len() == payloads[0].len())
        .expect("the payload is a chunk of its own");
    assert_eq!(carried.as_ptr(), payloads[0].bytes().as_ptr());
    assert!(range.contains(&(carried.as_ptr() as usize)));
    assert_eq!(chunks.concat(), forward.to_bytes().to_vec());
}

async fn raw_connection(f: &Fixture) -> quinn::Connection {
    raw_connection_from(f, "127.0.0.1").await
}

/// A connection to core 0 from a client endpoint bound to `ip` (any address of 127.0.0.0/8).
async fn raw_connection_from(f: &Fixture, ip: &str) -> quinn::Connection {
    let bind = std::net::SocketAddr::new(ip.parse().unwrap(), 0);
    let mut endpoint = quinn::Endpoint::client(bind).unwrap();
    endpoint.set_default_client_config(
        sleepyseal_net::tls::client_config(&f.testbed, &NetLimits::default()).unwrap(),
    );
    endpoint
        .connect(f.testbed.addresses[0], "core-0.sleepyseal")
        .unwrap()
        .await
        .unwrap()
}

/// One request on a connection of its own making, read to the end.
async fn raw_request(connection: &quinn::Connection, request: &Request) -> Response {
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&request.to_bytes()).await.unwrap();
    send.finish().unwrap();
    let bytes = recv.read_to_end(64 << 20).await.unwrap();
    Response::from_bytes(Bytes::from(bytes)).unwrap()
}

async fn shutdown(mut f: Fixture) {
    f.server
        .take()
        .expect("running")
        .shutdown()
        .await
        .expect("clean shutdown");
}

/// A `ReadCommitted` with `wait_ms` and nothing new to read is held by the server (long poll)
/// until its time is up, while the core keeps answering everything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_is_held_without_blocking_the_core() {
    let f = serve_core_0("longpoll", ServerOptions::default()).await;
    let clients = Arc::new(Clients::new(&f.testbed, NetLimits::default()).unwrap());
    let read = |wait_ms| Request {
        instance: f.testbed.committee.instance(),
        body: RequestBody::ReadCommitted {
            from_index: 0,
            max: 10,
            view: CommittedView::Digests,
            wait_ms,
        },
    };
    let start = std::time::Instant::now();
    let reply = clients
        .core(AuthorityIndex(0))
        .request(&read(0), T)
        .await
        .unwrap();
    assert!(matches!(reply, Response::Committed { ref entries, .. } if entries.is_empty()));
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "no wait asked"
    );
    let poll = {
        let (clients, request) = (clients.clone(), read(600));
        tokio::spawn(async move {
            let start = std::time::Instant::now();
            let reply = clients
                .core(AuthorityIndex(0))
                .request(&request, T)
                .await
                .unwrap();
            (reply, start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The core answers other requests while the poll is held.
    let served = std::time::Instant::now();
    assert_serves(&clients, &f).await;
    assert!(served.elapsed() < Duration::from_millis(400));
    let (reply, waited) = poll.await.unwrap();
    assert!(matches!(reply, Response::Committed { ref entries, .. } if entries.is_empty()));
    assert!(
        waited >= Duration::from_millis(550) && waited < Duration::from_secs(3),
        "held {waited:?}"
    );
    shutdown(f).await;
}

/// Path-MTU discovery goes beyond 1,472 bytes on loopback: each endpoint must accept datagrams
/// that large (quinn's default accepts 1,472 bytes, and a peer never sends more than the other side
/// accepts, so the 8,952-byte bound used to be dead). And at that MTU bulk requests lose nothing:
/// with 8,952-byte datagrams, quinn's 10-datagram GSO sends exceeded 64 KiB, the kernel refused
/// them, and whole bursts were lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_mtu_grows_on_loopback_and_bulk_requests_lose_no_datagram() {
    let f = serve_core_0("mtu", ServerOptions::default()).await;
    let limits = NetLimits::default();
    let mut endpoint =
        sleepyseal_net::limits::endpoint("127.0.0.1:0".parse().unwrap(), &limits, None, None)
            .unwrap();
    endpoint.set_default_client_config(
        sleepyseal_net::tls::client_config(&f.testbed, &limits).unwrap(),
    );
    let connection = endpoint
        .connect(f.testbed.addresses[0], "core-0.sleepyseal")
        .unwrap()
        .await
        .unwrap();
    let request = get_state(&f).to_bytes();
    let deadline = tokio::time::Instant::now() + T;
    let mut mtu = 0;
    while tokio::time::Instant::now() < deadline {
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        send.write_all(&request).await.unwrap();
        send.finish().unwrap();
        let reply = recv.read_to_end(1 << 20).await.unwrap();
        assert!(matches!(
            Response::from_bytes(Bytes::from(reply)),
            Ok(Response::Summary(_))
        ));
        mtu = connection.stats().path.current_mtu;
        if mtu > 1_472 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        mtu > 1_472 && mtu <= limits.max_udp_payload,
        "path MTU {mtu} after {T:?} (bound {})",
        limits.max_udp_payload
    );
    // Bulk: three 1 MiB submissions, one after the other (loopback loses nothing by itself); a
    // core admits a backlog of four maximal batches (4 MB by default), so all are accepted.
    let lost_before = connection.stats().path.lost_packets;
    for i in 0..3u8 {
        let request = Request {
            instance: f.testbed.committee.instance(),
            body: RequestBody::Submit {
                transactions: vec![Bytes::from(vec![i; 512]); 2_048],
            },
        }
        .to_bytes();
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        send.write_all(&request).await.unwrap();
        send.finish().unwrap();
        let reply = tokio::time::timeout(T, recv.read_to_end(1 << 20))
            .await
            .expect("answered in time")
            .unwrap();
        assert_eq!(
            Response::from_bytes(Bytes::from(reply)).unwrap(),
            Response::Submitted { accepted: 2_048 }
        );
    }
    let stats = connection.stats();
    assert_eq!(
        stats.path.lost_packets - lost_before,
        0,
        "datagrams lost on loopback at MTU {}: {:?}",
        stats.path.current_mtu,
        stats.path
    );
    connection.close(0u32.into(), b"done");
    shutdown(f).await;
}
