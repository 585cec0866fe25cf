//! The service seam: how a subsystem talks to its counterpart on other
//! nodes without the network layer knowing what it says.
//!
//! A subsystem implements [`Service`] (an id, typed request, reply, error
//! and notice messages, and its handlers) and registers it with
//! [`Distribution::register`](super::Distribution::register); it gets back
//! a [`ServiceClient`] to call or notify peers. On the wire every service
//! shares three frames (`Request`, `Reply`, `Notice`) on the control lane;
//! the body of each is the service's own message, encoded by
//! `molt_abi::codec`. So a new cluster feature is a new module with a
//! `Service` impl, not an edit to `Frame`, the dispatcher or the router.
//!
//! What the seam guarantees:
//! - At most `requests_in_flight_max` requests to one peer wait for their
//!   replies at once; one more fails at once with
//!   [`RequestError::TooManyInFlight`]. A peer that sends more than that
//!   many unanswered requests gets [`ServiceFault::Busy`] for the excess.
//! - Every call ends: with the reply, the service's typed error as the
//!   remote node returned it ([`CallError::Remote`]), or a
//!   [`RequestError`] (no reply in the timeout, connection lost, ...).
//! - Notices to one peer arrive in the order they were sent, and after
//!   those sent from [`Service::peer_up`] for that peer. They are applied
//!   on the connection's reader, one at a time.
//! - A body that does not decode as the service's message is a protocol
//!   violation: it is logged and, for a notice, closes the connection; for
//!   a request, the asker gets [`ServiceFault::Malformed`].

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::frame::{self, Frame};
use super::peer::Peer;
use super::{ConnectError, DistInner};
use crate::runtime::BoxFuture;

/// A service's number on the wire. Each service picks its own; registering
/// a second service with a taken id fails. Ids in use: 1 process groups
/// (`net::pg`), 2 code control, 3 node information (both `control`).
pub type ServiceId = u16;

/// A message type with no values: the request, reply, error or notice of a
/// service that has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Never {}

impl std::fmt::Display for Never {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl std::error::Error for Never {}

/// The node a service message came from or goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerId {
    /// Its name, `name@host`.
    pub name: String,
    /// The node part of its pids.
    pub node_id: u64,
    /// Its incarnation: the same name restarted is another peer.
    pub incarnation: u64,
    /// A hidden node (a CLI): not in the full mesh.
    pub hidden: bool,
}

impl PeerId {
    fn of(peer: &Peer) -> PeerId {
        PeerId {
            name: peer.name.clone(),
            node_id: peer.node_id,
            incarnation: peer.incarnation,
            hidden: peer.hidden,
        }
    }
}

/// A subsystem that talks to its counterparts on other nodes.
pub trait Service: Send + Sync + Sized + 'static {
    /// Its number on the wire.
    const ID: ServiceId;
    /// Its name, for logs and errors.
    const NAME: &'static str;
    /// What a peer can ask of it.
    type Request: Serialize + DeserializeOwned + Send + 'static;
    /// The answer to a request.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// Why a request failed on the node that ran it; arrives at the asker
    /// as the same value ([`CallError::Remote`]).
    type Error: Serialize + DeserializeOwned + std::error::Error + Send + 'static;
    /// One-way messages, applied in order per peer.
    type Notice: Serialize + DeserializeOwned + Send + 'static;

    /// Answer `request` from `peer`. Runs on a task of its own, so it may
    /// take its time (its asker waits up to its timeout).
    fn request(
        self: Arc<Self>,
        peer: PeerId,
        request: Self::Request,
    ) -> impl Future<Output = Result<Self::Reply, Self::Error>> + Send + 'static;

    /// Apply `notice` from `peer`, on the connection's reader: quick, and
    /// in the order the peer sent them.
    fn notice(&self, peer: &PeerId, notice: Self::Notice) {
        let _ = (peer, notice);
    }

    /// `peer` connected (or was connected when the service registered).
    /// Notices sent through `link` reach it before any sent later.
    fn peer_up(&self, link: &PeerLink<'_, Self>) {
        let _ = link;
    }

    /// The connection to `peer` is gone.
    fn peer_down(&self, peer: &PeerId) {
        let _ = peer;
    }
}

/// Why a request got no answer from the service it was meant for, as the
/// peer's network layer said. Travels on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ServiceFault {
    /// The peer has no service with this id (an older node, or the
    /// subsystem is off there).
    #[error("the node runs no service {0}")]
    UnknownService(ServiceId),
    /// The asker already has `requests_in_flight_max` requests running on
    /// the peer.
    #[error("busy: {0} requests from this node are running there (requests_in_flight_max)")]
    Busy(u32),
    /// The request's body is not a request of that service.
    #[error("malformed request: {0}")]
    Malformed(String),
}

/// Why a call failed before the service answered.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The peer could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// This node already waits for `requests_in_flight_max` replies from
    /// the peer.
    #[error("{node}: {max} requests are waiting for replies already (requests_in_flight_max)")]
    TooManyInFlight {
        /// The peer.
        node: String,
        /// The limit.
        max: usize,
    },
    /// No reply within the timeout, or the connection was lost first.
    #[error("no reply from {node} within {timeout:?}")]
    NoReply {
        /// The peer.
        node: String,
        /// How long the call waited.
        timeout: Duration,
    },
    /// The request does not fit in a frame (`frame_bytes_max`).
    #[error("a request of {size} bytes does not fit in a frame (frame_bytes_max is {max} bytes)")]
    FrameTooLarge {
        /// Encoded size of the request.
        size: usize,
        /// The limit.
        max: u32,
    },
    /// The peer's network layer refused the request.
    #[error("{node}: {fault}")]
    Fault {
        /// The peer.
        node: String,
        /// What it said.
        fault: ServiceFault,
    },
    /// The reply is not a reply of the service.
    #[error("{node} sent a malformed {service} reply: {why}")]
    MalformedReply {
        /// The peer.
        node: String,
        /// The service's name.
        service: &'static str,
        /// What did not decode.
        why: String,
    },
}

/// Why a call failed: the service's own error from the remote node, or the
/// request never got an answer from it.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E: std::error::Error + 'static> {
    /// The service on the other node returned this error.
    #[error(transparent)]
    Remote(E),
    /// The request got no answer from the service.
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// Why a service could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Another service has this id.
    #[error("service id {id} is taken by {taken}")]
    Taken {
        /// The id.
        id: ServiceId,
        /// The service holding it.
        taken: &'static str,
    },
}

/// A service, with its types erased, as the dispatcher holds it.
pub(super) trait Registered: Send + Sync {
    fn name(&self) -> &'static str;
    /// Decode and start answering a request; the future yields the reply
    /// body.
    fn request(&self, peer: PeerId, body: &[u8]) -> Result<BoxFuture<Vec<u8>>, String>;
    fn notice(&self, peer: &PeerId, body: &[u8]) -> Result<(), String>;
    fn peer_up(&self, peer: &Peer);
    fn peer_down(&self, peer: &PeerId);
}

struct Typed<S>(Arc<S>);

impl<S: Service> Registered for Typed<S> {
    fn name(&self) -> &'static str {
        S::NAME
    }

    fn request(&self, peer: PeerId, body: &[u8]) -> Result<BoxFuture<Vec<u8>>, String> {
        let request: S::Request = molt_abi::codec::decode(body).map_err(|e| e.to_string())?;
        let answer = self.0.clone().request(peer, request);
        Ok(Box::pin(async move {
            let result: Result<S::Reply, S::Error> = answer.await;
            molt_abi::codec::encode(&result)
        }))
    }

    fn notice(&self, peer: &PeerId, body: &[u8]) -> Result<(), String> {
        let notice: S::Notice = molt_abi::codec::decode(body).map_err(|e| e.to_string())?;
        self.0.notice(peer, notice);
        Ok(())
    }

    fn peer_up(&self, peer: &Peer) {
        self.0.peer_up(&PeerLink {
            peer,
            id: PeerId::of(peer),
            _service: PhantomData,
        });
    }

    fn peer_down(&self, peer: &PeerId) {
        self.0.peer_down(peer);
    }
}

/// A registered service: erased for the dispatcher, and as itself for
/// [`DistInner::service_or_register`].
struct Entry {
    erased: Arc<dyn Registered>,
    typed: Arc<dyn Any + Send + Sync>,
}

/// The services of one node, by id.
#[derive(Default)]
pub(super) struct Services {
    by_id: std::sync::RwLock<HashMap<ServiceId, Entry>>,
}

impl Services {
    fn get(&self, id: ServiceId) -> Option<Arc<dyn Registered>> {
        self.by_id
            .read()
            .expect("services poisoned")
            .get(&id)
            .map(|e| e.erased.clone())
    }

    fn all(&self) -> Vec<Arc<dyn Registered>> {
        self.by_id
            .read()
            .expect("services poisoned")
            .values()
            .map(|e| e.erased.clone())
            .collect()
    }
}

/// A new peer, as [`Service::peer_up`] sees it: who it is, and a way to
/// send it notices ahead of everything sent after.
pub struct PeerLink<'a, S> {
    peer: &'a Peer,
    id: PeerId,
    _service: PhantomData<fn() -> S>,
}

impl<S: Service> PeerLink<'_, S> {
    /// The peer.
    pub fn peer(&self) -> &PeerId {
        &self.id
    }

    /// Send the peer `notice`.
    pub fn notify(&self, notice: &S::Notice) {
        self.peer.control.push_frame(&notice_frame::<S>(notice));
    }
}

fn notice_frame<S: Service>(notice: &S::Notice) -> Frame {
    Frame::Notice {
        service: S::ID,
        body: molt_abi::codec::encode(notice),
    }
}

/// A registered service's way to reach its counterparts. Cheap to clone;
/// it does not keep the distribution layer alive.
pub struct ServiceClient<S> {
    dist: Weak<DistInner>,
    _service: PhantomData<fn() -> S>,
}

impl<S> Clone for ServiceClient<S> {
    fn clone(&self) -> Self {
        ServiceClient {
            dist: self.dist.clone(),
            _service: PhantomData,
        }
    }
}

impl<S: Service> ServiceClient<S> {
    /// Ask the service on `node` (connecting if needed), waiting up to the
    /// distribution's `request_timeout`.
    pub async fn call(
        &self,
        node: &str,
        request: &S::Request,
    ) -> Result<S::Reply, CallError<S::Error>> {
        let timeout = match self.dist.upgrade() {
            Some(dist) => dist.config.request_timeout,
            None => return Err(RequestError::Connect(ConnectError::Stopped).into()),
        };
        self.call_within(node, timeout, request).await
    }

    /// [`call`](Self::call), waiting up to `timeout` for the reply.
    pub async fn call_within(
        &self,
        node: &str,
        timeout: Duration,
        request: &S::Request,
    ) -> Result<S::Reply, CallError<S::Error>> {
        let dist = self
            .dist
            .upgrade()
            .ok_or(RequestError::Connect(ConnectError::Stopped))?;
        let body = molt_abi::codec::encode(request);
        let reply = dist.call_service(node, S::ID, body, timeout).await?;
        let result: Result<S::Reply, S::Error> =
            molt_abi::codec::decode(&reply).map_err(|e| RequestError::MalformedReply {
                node: node.to_string(),
                service: S::NAME,
                why: e.to_string(),
            })?;
        result.map_err(CallError::Remote)
    }

    /// Send `notice` to every connected visible node.
    pub fn broadcast(&self, notice: &S::Notice) {
        let Some(dist) = self.dist.upgrade() else {
            return;
        };
        let bytes = frame::encode(&notice_frame::<S>(notice));
        let peers = dist.peers.read().expect("peers poisoned");
        for peer in peers.values().filter(|p| !p.hidden) {
            peer.control.push(&bytes);
        }
    }

    /// Send `notice` to the connected node `node_id`; false if it is not
    /// connected.
    pub fn notify(&self, node_id: u64, notice: &S::Notice) -> bool {
        let Some(peer) = self.dist.upgrade().and_then(|d| d.peer(node_id)) else {
            return false;
        };
        peer.control.push_frame(&notice_frame::<S>(notice));
        true
    }
}

impl DistInner {
    /// Register `service`; it is told of the peers connected now.
    pub(super) fn register<S: Service>(
        self: &Arc<Self>,
        service: Arc<S>,
    ) -> Result<ServiceClient<S>, RegisterError> {
        self.service_or_register(|| service.clone())
            .and_then(|(registered, client)| {
                if Arc::ptr_eq(&registered, &service) {
                    Ok(client)
                } else {
                    Err(RegisterError::Taken {
                        id: S::ID,
                        taken: S::NAME,
                    })
                }
            })
    }

    /// The one instance of `S` here, registering what `make` builds on
    /// the first call.
    pub(super) fn service_or_register<S: Service>(
        self: &Arc<Self>,
        make: impl FnOnce() -> Arc<S>,
    ) -> Result<(Arc<S>, ServiceClient<S>), RegisterError> {
        let client = ServiceClient {
            dist: Arc::downgrade(self),
            _service: PhantomData,
        };
        let (service, erased) = {
            let mut by_id = self.services.by_id.write().expect("services poisoned");
            if let Some(entry) = by_id.get(&S::ID) {
                return match entry.typed.clone().downcast::<S>() {
                    Ok(service) => Ok((service, client)),
                    Err(_) => Err(RegisterError::Taken {
                        id: S::ID,
                        taken: entry.erased.name(),
                    }),
                };
            }
            let service = make();
            let erased: Arc<dyn Registered> = Arc::new(Typed(service.clone()));
            by_id.insert(
                S::ID,
                Entry {
                    erased: erased.clone(),
                    typed: service.clone(),
                },
            );
            (service, erased)
        };
        for peer in self.peers_now() {
            erased.peer_up(&peer);
        }
        Ok((service, client))
    }

    /// Tell every service of a new peer (it is in the table already).
    pub(super) fn services_peer_up(&self, peer: &Peer) {
        for service in self.services.all() {
            service.peer_up(peer);
        }
    }

    /// Tell every service a peer is gone.
    pub(super) fn services_peer_down(&self, peer: &Peer) {
        let id = PeerId::of(peer);
        for service in self.services.all() {
            service.peer_down(&id);
        }
    }

    /// Send a request body to `service` on `node` and wait for the reply
    /// body.
    async fn call_service(
        self: &Arc<Self>,
        node: &str,
        service: ServiceId,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, RequestError> {
        let peer = self.connect(node).await?;
        let max = self.config.requests_in_flight_max;
        let Ok(_permit) = peer.requests_out.clone().try_acquire_owned() else {
            return Err(RequestError::TooManyInFlight {
                node: peer.name.clone(),
                max,
            });
        };
        let id = self.request_id();
        let frame = Frame::Request { service, id, body };
        match self.request(&peer, id, frame, timeout).await {
            Ok(Frame::Reply { result, .. }) => result.map_err(|fault| RequestError::Fault {
                node: peer.name.clone(),
                fault,
            }),
            Ok(other) => Err(RequestError::MalformedReply {
                node: peer.name.clone(),
                service: "network",
                why: format!("answered with {}", other.kind()),
            }),
            Err(e) => Err(e),
        }
    }

    /// A `Request` frame from `peer`: run it on its own task and send the
    /// reply.
    pub(super) fn service_request(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        service: ServiceId,
        id: u64,
        body: Vec<u8>,
    ) {
        let reply = move |result: Result<Vec<u8>, ServiceFault>| Frame::Reply { id, result };
        let Some(registered) = self.services.get(service) else {
            tracing::warn!(node = %peer.name, service, "request for a service this node does not run");
            peer.control
                .push_frame(&reply(Err(ServiceFault::UnknownService(service))));
            return;
        };
        let Ok(permit) = peer.requests_in.clone().try_acquire_owned() else {
            let max = self.config.requests_in_flight_max as u32;
            tracing::warn!(node = %peer.name, service = registered.name(), "peer is past requests_in_flight_max ({max}); refused");
            peer.control
                .push_frame(&reply(Err(ServiceFault::Busy(max))));
            return;
        };
        let answer = match registered.request(PeerId::of(peer), &body) {
            Ok(answer) => answer,
            Err(why) => {
                tracing::warn!(node = %peer.name, service = registered.name(), "malformed request: {why}");
                peer.control
                    .push_frame(&reply(Err(ServiceFault::Malformed(why))));
                return;
            }
        };
        let peer = peer.clone();
        tokio::spawn(async move {
            let body = answer.await;
            drop(permit);
            peer.control.push_frame(&reply(Ok(body)));
        });
    }

    /// A `Notice` frame from `peer`: apply it here, in order. A notice
    /// that does not decode closes the connection.
    pub(super) fn service_notice(&self, peer: &Arc<Peer>, service: ServiceId, body: &[u8]) {
        let Some(registered) = self.services.get(service) else {
            tracing::debug!(node = %peer.name, service, "notice for a service this node does not run, dropped");
            return;
        };
        if let Err(why) = registered.notice(&PeerId::of(peer), body) {
            tracing::error!(node = %peer.name, service = registered.name(), "malformed notice, closing the connection: {why}");
            peer.connection.close(4u32.into(), b"bad frame");
        }
    }
}
