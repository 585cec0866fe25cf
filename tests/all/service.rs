//! The network layer's service seam, as a subsystem sees it: a service
//! registered on two nodes answers typed requests, its errors cross nodes
//! typed, requests in flight are bounded per peer, calls end in a bounded
//! time, and notices arrive in order, after what `peer_up` sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use molt_host::net::{
    CallError, Distribution, PeerId, PeerLink, RegisterError, RequestError, Service, ServiceFault,
    ServiceId,
};
use molt_tests::{WAIT, address_of, dist_node, dist_node_with};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// What a peer may ask the test service.
#[derive(Debug, Serialize, Deserialize)]
enum Ask {
    /// Answer `n + 1`.
    Next(u64),
    /// Fail with `Refused(n)`.
    Refuse(u64),
    /// Answer only after `ms` milliseconds.
    Slow(u64),
}

/// The test service's own error, as the answering node returns it.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
enum Refused {
    #[error("refused {0}")]
    Refused(u64),
}

/// Notices: `Hello` from `peer_up`, then numbered ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Note {
    Hello(String),
    N(u64),
}

/// A service that answers `Ask`s and records the notices it gets.
#[derive(Default)]
struct Echo {
    notes: Mutex<Vec<(String, Note)>>,
    noted: Notify,
    downs: Mutex<Vec<String>>,
    /// `Slow` requests being answered now.
    slow_running: std::sync::atomic::AtomicUsize,
}

impl Service for Echo {
    const ID: ServiceId = 900;
    const NAME: &'static str = "echo-test";
    type Request = Ask;
    type Reply = u64;
    type Error = Refused;
    type Notice = Note;

    async fn request(self: Arc<Self>, _: PeerId, ask: Ask) -> Result<u64, Refused> {
        match ask {
            Ask::Next(n) => Ok(n + 1),
            Ask::Refuse(n) => Err(Refused::Refused(n)),
            Ask::Slow(ms) => {
                use std::sync::atomic::Ordering::SeqCst;
                self.slow_running.fetch_add(1, SeqCst);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                self.slow_running.fetch_sub(1, SeqCst);
                Ok(ms)
            }
        }
    }

    fn notice(&self, peer: &PeerId, note: Note) {
        self.notes.lock().unwrap().push((peer.name.clone(), note));
        self.noted.notify_waiters();
    }

    fn peer_up(&self, link: &PeerLink<'_, Self>) {
        link.notify(&Note::Hello(link.peer().name.clone()));
    }

    fn peer_down(&self, peer: &PeerId) {
        self.downs.lock().unwrap().push(peer.name.clone());
    }
}

impl Echo {
    /// Wait (bounded) until `n` notices are in; returns them.
    async fn wait_notes(&self, n: usize) -> Vec<(String, Note)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.noted.notified();
            {
                let notes = self.notes.lock().unwrap();
                if notes.len() >= n {
                    return notes.clone();
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(!left.is_zero(), "only {:?}", self.notes.lock().unwrap());
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), notified).await;
        }
    }
}

fn register(dist: &Distribution) -> (Arc<Echo>, molt_host::net::ServiceClient<Echo>) {
    dist.service_or_register(Echo::default).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_answers_typed_requests_and_its_errors_cross_typed() {
    let (_a, da) = dist_node("svc-a").await;
    let (_b, db) = dist_node("svc-b").await;
    let (_, on_a) = register(&da);
    register(&db);
    da.join(&address_of(&db)).await.unwrap();

    assert_eq!(on_a.call(db.name(), &Ask::Next(41)).await.unwrap(), 42);
    match on_a.call(db.name(), &Ask::Refuse(7)).await {
        Err(CallError::Remote(e)) => assert_eq!(e, Refused::Refused(7)),
        other => panic!("expected the remote error, got {other:?}"),
    }
    // The same instance for a second registration through
    // `service_or_register`; another instance under the same id is refused.
    let (first, _) = register(&da);
    let (again, _) = register(&da);
    assert!(Arc::ptr_eq(&first, &again));
    assert!(matches!(
        da.register(Arc::new(Echo::default())),
        Err(RegisterError::Taken { id: 900, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_service_says_so() {
    let (_a, da) = dist_node("svc-none-a").await;
    let (_b, db) = dist_node("svc-none-b").await;
    let (_, on_a) = register(&da);
    da.join(&address_of(&db)).await.unwrap();
    match on_a.call(db.name(), &Ask::Next(1)).await {
        Err(CallError::Request(RequestError::Fault {
            fault: ServiceFault::UnknownService(900),
            node,
        })) => assert_eq!(node, db.name()),
        other => panic!("expected UnknownService, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_bounded_per_peer_and_calls_time_out() {
    let (_a, da) = dist_node_with("svc-busy-a", molt_tests::COOKIE, |c| {
        c.requests_in_flight_max = 2
    })
    .await;
    let (_b, db) = dist_node("svc-busy-b").await;
    let (_, on_a) = register(&da);
    let (on_b, _) = register(&db);
    da.join(&address_of(&db)).await.unwrap();

    let b = db.name().to_string();
    let slow = |ms| {
        let (client, b) = (on_a.clone(), b.clone());
        tokio::spawn(async move { client.call(&b, &Ask::Slow(ms)).await })
    };
    let (one, two) = (slow(2_000), slow(2_000));
    // Once b runs both, a holds both permits: a third call fails at once.
    let deadline = tokio::time::Instant::now() + WAIT;
    while on_b.slow_running.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "b never ran both");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    match on_a.call(&b, &Ask::Next(0)).await {
        Err(CallError::Request(RequestError::TooManyInFlight { max: 2, node })) => {
            assert_eq!(node, b)
        }
        other => panic!("expected TooManyInFlight, got {other:?}"),
    }
    assert_eq!(one.await.unwrap().unwrap(), 2_000);
    assert_eq!(two.await.unwrap().unwrap(), 2_000);
    // Room again.
    assert_eq!(on_a.call(&b, &Ask::Next(1)).await.unwrap(), 2);

    // A reply that does not come in time ends the call.
    match on_a
        .call_within(&b, Duration::from_millis(100), &Ask::Slow(2_000))
        .await
    {
        Err(CallError::Request(RequestError::NoReply { node, timeout })) => {
            assert_eq!(
                (node.as_str(), timeout),
                (b.as_str(), Duration::from_millis(100))
            );
        }
        other => panic!("expected NoReply, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_arrive_in_order_after_peer_up_and_peer_down_is_told() {
    let (_a, da) = dist_node("svc-note-a").await;
    let (_b, db) = dist_node("svc-note-b").await;
    let (_, on_a) = register(&da);
    let (seen_by_b, _) = register(&db);
    da.join(&address_of(&db)).await.unwrap();

    let b_id = molt_host::net::node_id(db.name());
    for n in 0..500 {
        assert!(on_a.notify(b_id, &Note::N(n)));
    }
    on_a.broadcast(&Note::N(500));
    let notes = seen_by_b.wait_notes(502).await;
    // peer_up's notice first, then every one in the order sent.
    let mut expected = vec![(da.name().to_string(), Note::Hello(db.name().to_string()))];
    expected.extend((0..=500).map(|n| (da.name().to_string(), Note::N(n))));
    assert_eq!(notes, expected);

    // a goes away: b's service hears of it.
    da.stop().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !seen_by_b
        .downs
        .lock()
        .unwrap()
        .contains(&da.name().to_string())
    {
        assert!(tokio::time::Instant::now() < deadline, "no peer_down");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_garbage_service_bodies_is_refused_and_others_go_on() {
    use molt_host::net::frame::{self, Frame};
    let (_a, da) = dist_node("svc-bad-a").await;
    let (_b, db) = dist_node("svc-bad-b").await;
    let (_, on_b) = register(&db);
    register(&da);
    db.join(&address_of(&da)).await.unwrap();
    let mut rogue = molt_tests::RawPeer::connect("svc-rogue", &da).await;

    // A request whose body is no request of the service: a says so, and
    // keeps the connection.
    let bad_request = Frame::Request {
        service: 900,
        id: 77,
        body: vec![0xff; 3],
    };
    rogue
        .send
        .write_all(&frame::encode(&bad_request))
        .await
        .unwrap();
    loop {
        match rogue.next_frame().await {
            Frame::Reply { id: 77, result } => {
                assert!(
                    matches!(result, Err(ServiceFault::Malformed(_))),
                    "{result:?}"
                );
                break;
            }
            Frame::Peers { .. } | Frame::Notice { .. } => continue,
            other => panic!("expected the Reply, got {other:?}"),
        }
    }
    // A notice whose body does not decode closes the rogue's connection.
    let bad_notice = Frame::Notice {
        service: 900,
        body: vec![0xff; 3],
    };
    rogue
        .send
        .write_all(&frame::encode(&bad_notice))
        .await
        .unwrap();
    let why = tokio::time::timeout(WAIT, rogue.connection.closed())
        .await
        .expect("a closes the connection");
    assert!(
        matches!(&why, quinn::ConnectionError::ApplicationClosed(c) if &*c.reason == b"bad frame"),
        "{why}"
    );
    // b's calls to a still work.
    assert_eq!(on_b.call(da.name(), &Ask::Next(1)).await.unwrap(), 2);
}
