//! The in-process link to a core server (`CoreServer::local_link`): the same verify queue,
//! verification, core thread and group commit as a QUIC request, without the network hop; `Busy`
//! on a full queue; a link held after shutdown neither keeps the server alive nor hangs.

use std::sync::Arc;

mod support;

use bytes::Bytes;
use sleepyseal_core::messages::{Header, ParentRef};
use sleepyseal_core::protocol::{Request, RequestBody, Response};
use sleepyseal_core::testkit::sign_header;
use sleepyseal_core::{AuthorityIndex, Certificate, Committee, CoreError, KeyPair, Payload, Round};
use sleepyseal_net::server::{LocalLinkError, ServerOptions};
use sleepyseal_net::{CoreServer, NetLimits};

/// Core 0 of a fresh 4-core testbed (written to a temporary directory, removed at once),
/// served on an ephemeral loopback port.
fn serve_core_0(name: &str, options: ServerOptions) -> (CoreServer, Arc<Committee>) {
    let served = support::serve_core_0(
        &format!("link-{name}"),
        "127.0.0.1:0".parse().unwrap(),
        options,
    );
    let _ = std::fs::remove_dir_all(&served.dir);
    (served.server, served.testbed.committee)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_the_link_are_verified_handled_and_answered_typed() {
    let (server, committee) = serve_core_0("typed", ServerOptions::default());
    let link = server.local_link();
    let instance = committee.instance();
    let mut headers = link.own_headers();
    let request = |body| Request { instance, body };
    let submit = RequestBody::Submit {
        transactions: vec![Bytes::from_static(b"tx on the link")],
    };
    let reply = link.request(request(submit)).await.unwrap();
    assert_eq!(reply, Response::Submitted { accepted: 1 });
    let reply = link
        .request(request(RequestBody::GetState { with_payload: true }))
        .await
        .unwrap();
    let Response::Summary(summary) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(
        summary.round,
        Round(1),
        "round 1 proposed on the first poll"
    );
    let payload = summary.own_payload.clone().expect("the payload, as asked");
    assert_eq!(payload.transactions().unwrap().len(), 1);
    // The core built its round-1 header, and the link hands it over with its payload.
    headers.changed().await.unwrap();
    let own = headers.borrow_and_update().clone().expect("an own header");
    assert_eq!(own.header.header.round(), Round(1));
    assert_eq!(own.payload, Some(payload.clone()));
    // The same verification as a QUIC request: a header signed by the wrong key is refused.
    let genesis: Vec<ParentRef> = committee
        .indices()
        .map(|a| ParentRef {
            author: a,
            digest: Certificate::genesis(instance, a).digest(),
        })
        .collect();
    let foreign = Payload::from_transactions([&b"p"[..]]);
    let header = Header::new(
        instance,
        Round(1),
        AuthorityIndex(2),
        genesis,
        foreign.reference(),
        1,
    );
    let key1 = KeyPair::deterministic(7, 1);
    let mut forged = sign_header(&key1, header);
    forged.signature = key1.sign(b"anything");
    let bundle = RequestBody::HeaderBundle {
        round: Round(1),
        headers: vec![forged],
        parents: vec![],
        payloads: vec![foreign],
    };
    let reply = link.request(request(bundle)).await.unwrap();
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
    // What a decoder would refuse is refused on the link too.
    let too_many = RequestBody::FetchPayloads {
        digests: vec![instance; sleepyseal_core::limits::MAX_DIGESTS_PER_MESSAGE + 1],
    };
    let refused = link.request(request(too_many)).await;
    assert!(
        matches!(refused, Err(LocalLinkError::OverLimit(_))),
        "{refused:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_busy_and_shutdown_does_not_wait_for_the_link() {
    let options = ServerOptions {
        limits: NetLimits {
            verify_queue: 1,
            core_queue: 1,
            ..NetLimits::default()
        },
        ..ServerOptions::default()
    };
    let (server, committee) = serve_core_0("busy", options);
    let link = server.local_link();
    let instance = committee.instance();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let link = link.clone();
        tasks.spawn(async move {
            let transactions = vec![Bytes::from(i.to_le_bytes().to_vec())];
            let body = RequestBody::Submit { transactions };
            link.request(Request { instance, body }).await.unwrap()
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
    assert!(busy > 0, "queues of 1 never overflowed under 200 requests");
    assert!(accepted > 0);
    let stats = server.stats().clone();
    assert_eq!(
        stats.busy.load(std::sync::atomic::Ordering::SeqCst),
        busy,
        "counted like QUIC's Busy replies"
    );
    // The link outlives the server: shutdown completes, later requests fail typed.
    let held = link.clone();
    tokio::time::timeout(std::time::Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown does not wait for the link")
        .unwrap();
    let body = RequestBody::GetState {
        with_payload: false,
    };
    let after = held.request(Request { instance, body }).await;
    assert!(matches!(after, Err(LocalLinkError::Stopped)), "{after:?}");
}
