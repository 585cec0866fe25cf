//! Distribution: named nodes over QUIC, an authenticated handshake, and
//! signals between processes of different nodes.
//!
//! Invariant: the runtime knows nothing of this module. It routes signals
//! for pids of other nodes through `Router`, which [`Distribution`]
//! implements; incoming frames are handed back to the runtime as signals.
//!
//! Layout: [`frame`] and [`handshake`] are I/O-free (bytes in, events out);
//! [`tls`] makes the TLS configuration; `lane` is one outgoing stream;
//! `connect` sets connections up and reads them; `dispatch` acts on
//! incoming frames; `router` encodes outgoing signals; [`service`] is the
//! seam other subsystems talk to their peers through, and `pg` (process
//! groups across nodes) is one such service; [`nemesis`] injects faults
//! on incoming links for fault tests. This file owns the node table,
//! requests and node-down.

mod connect;
pub mod cookie;
mod dispatch;
pub mod frame;
pub mod handshake;
mod lane;
pub mod nemesis;
mod peer;
mod pg;
mod router;
pub mod service;
pub mod tls;
pub mod wire;

pub use self::service::{
    CallError, Never, PeerId, PeerLink, RegisterError, RequestError, Service, ServiceClient,
    ServiceFault, ServiceId,
};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use molt_abi::{Pid, Ref, reason};
use tokio::sync::oneshot;

use self::connect::{accept_loop, transport_config};
use self::frame::Frame;
use self::lane::Lane;
use self::peer::Peer;
use self::router::RouterHandle;
use crate::runtime::{HostMailbox, Message, Node, NodeInner, Signal, SpawnError};

/// How a node takes part in a cluster. Every bound is a named limit.
#[derive(Clone, Debug)]
pub struct DistConfig {
    /// Address to listen on for other nodes.
    pub listen: SocketAddr,
    /// The cluster secret both sides prove they hold.
    pub cookie: Vec<u8>,
    /// A hidden node (like the CLI) is not announced to the others and
    /// does not join the full mesh.
    pub hidden: bool,
    /// Keep-alive tick: a peer silent for this long is down.
    pub tick: Duration,
    /// Signal lanes (unidirectional streams) per connection.
    pub lanes: usize,
    /// Largest frame accepted, in bytes.
    pub frame_bytes_max: u32,
    /// Bytes queued on one lane before the sender is suspended.
    pub lane_bytes_max: usize,
    /// Most connected nodes.
    pub connections_max: usize,
    /// How long a handshake may take.
    pub handshake_timeout: Duration,
    /// If set, only these node names may connect.
    pub allow: Option<Vec<String>>,
    /// How long a request (spawn, ping, node list) waits for its reply.
    pub request_timeout: Duration,
    /// How long a code request (prepare, commit, load, purge, delete,
    /// module list) waits for its reply: compiling a large module or a hard
    /// purge takes longer than a ping. A system request waits its own
    /// timeout plus `request_timeout`.
    pub code_request_timeout: Duration,
    /// Most links and monitors between this node's processes and one
    /// peer's, both ways. A peer that links or monitors past it has its
    /// connection closed (reason `stakes_max`), which fires every stake it
    /// had with `noconnection`.
    pub stakes_max: usize,
    /// Most node addresses learnt from gossip and node lists; past it they
    /// are dropped with a warning. An address given to `join` and a
    /// connected peer's own are always kept (those are bounded by the
    /// caller and by `connections_max`).
    pub addresses_max: usize,
    /// Most requests to one peer waiting for their replies at once (and
    /// most from one peer answered here at once); one more fails at once
    /// with `too many in flight` (`busy` on the answering side).
    pub requests_in_flight_max: usize,
    /// How TLS authenticates peers: self-made certificates (the default,
    /// identity from the cookie alone) or mutual TLS against a CA, with
    /// the node name checked in the peer's certificate. The cookie
    /// handshake runs in both modes: in CA mode a peer needs both.
    pub tls: tls::TlsMode,
}

impl DistConfig {
    /// Defaults for a node listening on `listen` with `cookie`.
    pub fn new(listen: SocketAddr, cookie: Vec<u8>) -> Self {
        DistConfig {
            listen,
            cookie,
            hidden: false,
            tick: Duration::from_secs(15),
            lanes: 8,
            frame_bytes_max: 16 << 20,
            lane_bytes_max: 4 << 20,
            connections_max: 256,
            handshake_timeout: Duration::from_secs(5),
            allow: None,
            request_timeout: Duration::from_secs(10),
            code_request_timeout: Duration::from_secs(60),
            requests_in_flight_max: 256,
            addresses_max: 4_096,
            stakes_max: 1_000_000,
            tls: tls::TlsMode::SelfSigned,
        }
    }
}

/// Why the distribution layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The node's name has no `@host`.
    #[error("bad node name `{0}`: expected name@host")]
    BadName(String),
    /// The listen socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Why a node could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The address is not `name@host:port`.
    #[error("bad node address `{0}`: expected name@host:port")]
    BadAddress(String),
    /// The node is not connected and its address is unknown.
    #[error("node `{0}` is not connected and its address is unknown")]
    UnknownNode(String),
    /// The QUIC connection failed.
    #[error("cannot connect to {node}: {reason}")]
    Connect {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
    /// The handshake refused the peer, or the peer refused us.
    #[error("handshake with {node} refused: {refusal}")]
    Refused {
        /// The node (its address, before it said its name).
        node: String,
        /// Why.
        refusal: handshake::Refusal,
    },
    /// The handshake broke off: the stream or the connection failed.
    #[error("handshake with {node} failed: {reason}")]
    Handshake {
        /// The node's address.
        node: String,
        /// What failed.
        reason: String,
    },
    /// The node at the address is another node than the one asked for.
    #[error("the node at {addr} is {found}, not {node}")]
    WrongNode {
        /// The node asked for.
        node: String,
        /// Its address as known here.
        addr: SocketAddr,
        /// The node that answered there.
        found: String,
    },
    /// This node's distribution layer has stopped.
    #[error("the distribution layer has stopped")]
    Stopped,
    /// The node's name cannot be put in a certificate's server name (CA
    /// mode).
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// One connected peer's link, as [`Distribution::peer_stats`] reads it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PeerStats {
    /// The peer's node name.
    pub name: String,
    /// It is hidden (not in node lists, not meshed).
    pub hidden: bool,
    /// The connection's smoothed round-trip time.
    pub rtt: Duration,
    /// Bytes sent to it (UDP payloads, QUIC's own included).
    pub bytes_out: u64,
    /// Bytes received from it.
    pub bytes_in: u64,
    /// UDP datagrams sent to it.
    pub datagrams_out: u64,
    /// UDP datagrams received from it.
    pub datagrams_in: u64,
    /// QUIC stream frames sent (molt's frames ride in these).
    pub stream_frames_out: u64,
    /// QUIC stream frames received.
    pub stream_frames_in: u64,
    /// Times its congestion controller backed off.
    pub congestion_events: u64,
    /// Packets lost on the way to it.
    pub lost_packets: u64,
    /// Bytes queued in its lanes, not yet written.
    pub queued_bytes: usize,
    /// How long this connection has been up.
    pub connected_for: Duration,
    /// How long since a frame last came from it (none yet: `None`).
    pub last_heard: Option<Duration>,
    /// Connections to it made before this one since this node started.
    pub reconnects: u64,
}

/// Hash of a node name: the node part of its pids.
pub fn node_id(name: &str) -> u64 {
    crate::runtime::node_id(name)
}

/// Split `name@host:port` into the node name `name@host` and its address.
pub fn parse_node_address(text: &str) -> Result<(String, SocketAddr), ConnectError> {
    let bad = || ConnectError::BadAddress(text.to_string());
    let (name, hostport) = text.split_once('@').ok_or_else(bad)?;
    let addr: SocketAddr = hostport.parse().map_err(|_| bad())?;
    Ok((format!("{name}@{}", addr.ip()), addr))
}

/// The distribution layer of one node. Cheap to clone.
#[derive(Clone)]
pub struct Distribution {
    inner: Arc<DistInner>,
}

/// A [`Distribution`] that may have stopped: what services hold, so that
/// the distribution layer, which holds them, is not kept alive in a cycle.
#[derive(Clone)]
pub(crate) struct WeakDistribution(Weak<DistInner>);

impl WeakDistribution {
    /// The distribution layer, if it is still there.
    pub fn upgrade(&self) -> Option<Distribution> {
        self.0.upgrade().map(|inner| Distribution { inner })
    }
}

struct DistInner {
    node: Weak<NodeInner>,
    name: String,
    incarnation: u64,
    config: DistConfig,
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    peers: RwLock<HashMap<u64, Arc<Peer>>>,
    /// Listen addresses of nodes we know of, by name.
    addresses: Mutex<HashMap<String, SocketAddr>>,
    /// Connections made with each node since start, by name (at most
    /// `addresses_max` names): a peer's reconnects.
    connections_made: Mutex<HashMap<String, u64>>,
    next_request: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<Frame>>>,
    /// Local processes watching node connections: node name → watchers.
    node_monitors: Mutex<HashMap<String, Vec<Pid>>>,
    /// Serialises connection setup per node, so one connection per pair;
    /// an entry lives while someone connects to that node.
    connecting: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
    /// What other subsystems registered to talk to their peers.
    services: service::Services,
    /// Faults injected on incoming links (tests).
    nemesis: Arc<nemesis::Nemesis>,
}

impl Distribution {
    /// Start listening and make `node` route signals for other nodes
    /// through this layer. The node's name (`NodeConfig::name`) must be
    /// `name@host`.
    pub async fn start(node: &Node, config: DistConfig) -> Result<Distribution, StartError> {
        let inner_node = node.inner();
        let name = inner_node.config.name.clone();
        if !name.contains('@') {
            return Err(StartError::BadName(name));
        }
        let (server_crypto, client_crypto) = tls::quic_configs(&config.tls, &name)?;
        let transport = Arc::new(transport_config(&config));
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(transport.clone());
        let mut client_config = quinn::ClientConfig::new(Arc::new(client_crypto));
        client_config.transport_config(transport);
        let endpoint = quinn::Endpoint::server(server, config.listen).map_err(|source| {
            StartError::Listen {
                addr: config.listen,
                source,
            }
        })?;
        let inner = Arc::new(DistInner {
            node: Arc::downgrade(&inner_node),
            incarnation: inner_node.incarnation,
            name,
            config,
            endpoint,
            client_config,
            peers: RwLock::new(HashMap::new()),
            addresses: Mutex::new(HashMap::new()),
            connections_made: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            node_monitors: Mutex::new(HashMap::new()),
            connecting: Mutex::new(HashMap::new()),
            services: service::Services::default(),
            nemesis: Arc::default(),
        });
        inner_node.set_router(Arc::new(RouterHandle(Arc::downgrade(&inner))));
        let groups = Arc::new(pg::PgService::new(
            Arc::downgrade(&inner_node),
            inner.config.hidden,
        ));
        let client = inner
            .register(groups.clone())
            .expect("process groups are the first service");
        groups.started(client);
        inner_node.set_pg_observer(groups);
        tokio::spawn(accept_loop(inner.clone()));
        tracing::info!(node = %inner.name, listen = %inner.local_addr(), "distribution started");
        Ok(Distribution { inner })
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The address this node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    /// Connect to `name@host:port` (and, through it, to the rest of its
    /// cluster).
    pub async fn join(&self, address: &str) -> Result<(), ConnectError> {
        let (name, addr) = parse_node_address(address)?;
        self.inner
            .addresses
            .lock()
            .expect("addresses poisoned")
            .insert(name.clone(), addr);
        self.inner.connect(&name).await.map(|_| ())
    }

    /// Names of the connected visible nodes, sorted.
    pub fn nodes(&self) -> Vec<String> {
        self.inner.visible_nodes()
    }

    /// QUIC connections this node's endpoint holds open: one per
    /// connected peer, plus any still in their handshake or closing.
    pub fn open_connections(&self) -> usize {
        self.inner.endpoint.open_connections()
    }

    /// Each connected peer's link figures, read now from its connection
    /// (nothing is counted on the way for them), sorted by name.
    pub fn peer_stats(&self) -> Vec<PeerStats> {
        let mut stats: Vec<PeerStats> = self
            .inner
            .peers_now()
            .iter()
            .map(|p| {
                let s = p.connection.stats();
                PeerStats {
                    name: p.name.clone(),
                    hidden: p.hidden,
                    rtt: p.connection.rtt(),
                    bytes_out: s.udp_tx.bytes,
                    bytes_in: s.udp_rx.bytes,
                    datagrams_out: s.udp_tx.datagrams,
                    datagrams_in: s.udp_rx.datagrams,
                    stream_frames_out: s.frame_tx.stream,
                    stream_frames_in: s.frame_rx.stream,
                    congestion_events: s.path.congestion_events,
                    lost_packets: s.path.lost_packets,
                    queued_bytes: p.control.queued_bytes()
                        + p.lanes.iter().map(Lane::queued_bytes).sum::<usize>(),
                    connected_for: p.connected_at.elapsed(),
                    last_heard: p.last_heard(),
                    reconnects: self.inner.reconnects(&p.name),
                }
            })
            .collect();
        stats.sort_by(|a, b| a.name.cmp(&b.name));
        stats
    }

    /// Erlang's `net_adm:ping`: connect if needed and exchange a ping.
    pub async fn ping(&self, node: &str) -> Result<Duration, RequestError> {
        let start = Instant::now();
        self.inner.ask(node, |id| Frame::Ping { id }).await?;
        Ok(start.elapsed())
    }

    /// Spawn `module` on `node`, optionally linked to and/or monitored by
    /// `parent` (a local process).
    pub async fn spawn_on(
        &self,
        node: &str,
        module: &str,
        args: Vec<u8>,
        parent: Pid,
        link: bool,
        monitor: Option<Ref>,
    ) -> Result<Pid, SpawnError> {
        self.inner
            .spawn_on(node, module, args, parent, link, monitor)
            .await
    }

    /// Spawn `module` on `node` from a host mailbox, optionally linked to
    /// it and/or monitored by it (the reference is returned).
    pub async fn spawn_from(
        &self,
        mailbox: &mut HostMailbox,
        node: &str,
        module: &str,
        args: Vec<u8>,
        link: bool,
        monitor: bool,
    ) -> Result<(Pid, Option<Ref>), SpawnError> {
        let reference = monitor.then(|| mailbox.make_ref());
        let child = self
            .inner
            .spawn_on(node, module, args, mailbox.pid(), link, reference)
            .await?;
        mailbox.adopt(child, link, reference);
        Ok((child, reference))
    }

    /// Register a service: from now on this node answers its requests and
    /// applies its notices, and the returned client reaches its
    /// counterparts on other nodes. It is told of the peers connected now.
    pub fn register<S: Service>(&self, service: Arc<S>) -> Result<ServiceClient<S>, RegisterError> {
        self.inner.register(service)
    }

    /// The one instance of service `S` on this distribution: registered
    /// by `make` on the first call, the same one after. Errors if another
    /// service holds `S`'s id.
    pub fn service_or_register<S: Service>(
        &self,
        make: impl FnOnce() -> S,
    ) -> Result<(Arc<S>, ServiceClient<S>), RegisterError> {
        self.inner.service_or_register(|| Arc::new(make()))
    }

    pub(crate) fn downgrade(&self) -> WeakDistribution {
        WeakDistribution(Arc::downgrade(&self.inner))
    }

    /// The connected visible nodes with the addresses they listen on
    /// (empty if not known), sorted by name.
    pub fn nodes_with_addresses(&self) -> Vec<(String, String)> {
        self.inner.visible_nodes_with_addresses()
    }

    /// Remember where `name` listens, unless an address is known already,
    /// so a later connect can reach it.
    pub fn learn_address(&self, name: &str, addr: SocketAddr) {
        if name != self.inner.name {
            self.inner.learn_address(name, addr, false);
        }
    }

    /// How many node addresses this node knows (at most `addresses_max`).
    pub fn addresses_known(&self) -> usize {
        self.inner
            .addresses
            .lock()
            .expect("addresses poisoned")
            .len()
    }

    /// This distribution's settings.
    pub fn config(&self) -> &DistConfig {
        &self.inner.config
    }

    /// Send `payload` with `tag` to the process registered as `name` on
    /// `node`, from `from` (`molt send`).
    pub async fn send_named(
        &self,
        from: Pid,
        node: &str,
        name: &str,
        tag: u32,
        payload: Vec<u8>,
    ) -> Result<(), ConnectError> {
        let peer = self.inner.connect(node).await?;
        let frame = Frame::MessageNamed {
            from,
            name: name.to_string(),
            tag,
            reference: Ref::NONE,
            payload,
        };
        peer.control.push_frame(&frame);
        Ok(())
    }

    /// Watch `node`: `watcher` gets a `NODEDOWN` message when its
    /// connection is lost (at once if it is not connected).
    pub fn monitor_node(&self, node: &str, watcher: Pid) {
        self.inner.monitor_node(node, watcher, true);
    }

    /// The faults injected on this node's incoming links: for fault tests
    /// (see [`nemesis`]); none unless set.
    pub fn nemesis(&self) -> Arc<nemesis::Nemesis> {
        self.inner.nemesis.clone()
    }

    /// Close every connection and stop listening.
    pub fn shutdown(&self) {
        self.inner.endpoint.close(0u32.into(), b"node stopping");
    }

    /// Close every connection and wait (briefly) until the peers know.
    pub async fn stop(&self) {
        self.shutdown();
        let idle = self.inner.endpoint.wait_idle();
        let _ = tokio::time::timeout(Duration::from_secs(1), idle).await;
    }
}

impl DistInner {
    /// Count a connection made with `name`.
    fn connection_made(&self, name: &str) {
        let mut made = self.connections_made.lock().expect("connections poisoned");
        if let Some(n) = made.get_mut(name) {
            *n += 1;
        } else if made.len() < self.config.addresses_max {
            made.insert(name.to_string(), 1);
        }
    }

    /// Connections with `name` made before the current one.
    fn reconnects(&self, name: &str) -> u64 {
        let made = self.connections_made.lock().expect("connections poisoned");
        made.get(name).map_or(0, |n| n.saturating_sub(1))
    }
}

impl DistInner {
    /// Keep `addr` for `name` (replacing a known one if `replace`), unless
    /// `addresses_max` others are known; whether `name` has an address now.
    fn learn_address(&self, name: &str, addr: SocketAddr, replace: bool) -> bool {
        let mut addresses = self.addresses.lock().expect("addresses poisoned");
        if let Some(known) = addresses.get_mut(name) {
            if replace {
                *known = addr;
            }
            return true;
        }
        if addresses.len() >= self.config.addresses_max {
            return false;
        }
        addresses.insert(name.to_string(), addr);
        true
    }

    fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().unwrap_or(self.config.listen)
    }

    fn node(&self) -> Option<Arc<NodeInner>> {
        self.node.upgrade()
    }

    /// Connected visible nodes with their listen addresses (empty if not
    /// known), sorted by name.
    fn visible_nodes_with_addresses(&self) -> Vec<(String, String)> {
        let mut nodes: Vec<(String, String)> = self
            .peers
            .read()
            .expect("peers poisoned")
            .values()
            .filter(|p| !p.hidden)
            .map(|p| (p.name.clone(), p.listen.clone().unwrap_or_default()))
            .collect();
        nodes.sort();
        nodes
    }

    /// Every connected peer now (hidden ones included).
    fn peers_now(&self) -> Vec<Arc<Peer>> {
        self.peers
            .read()
            .expect("peers poisoned")
            .values()
            .cloned()
            .collect()
    }

    fn visible_nodes(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .peers
            .read()
            .expect("peers poisoned")
            .values()
            .filter(|p| !p.hidden)
            .map(|p| p.name.clone())
            .collect();
        names.sort();
        names
    }

    /// Erlang's `monitor_node(Node, Flag)`: monitoring a node that is not
    /// connected delivers `NODEDOWN` at once.
    fn monitor_node(&self, node: &str, watcher: Pid, on: bool) {
        let mut monitors = self.node_monitors.lock().expect("node monitors poisoned");
        if !on {
            if let Some(list) = monitors.get_mut(node)
                && let Some(i) = list.iter().position(|w| *w == watcher)
            {
                list.remove(i);
            }
            return;
        }
        if self.peer(node_id(node)).is_some() {
            monitors.entry(node.to_string()).or_default().push(watcher);
            return;
        }
        drop(monitors);
        self.nodedown_message(node, watcher);
    }

    fn nodedown_message(&self, node_name: &str, watcher: Pid) {
        let Some(node) = self.node() else { return };
        let message = Message {
            tag: molt_abi::tag::NODEDOWN,
            reference: Ref::NONE,
            payload: node_name.as_bytes().into(),
        };
        let signal = Signal::Message {
            from: Pid::default(),
            message,
        };
        let _ = node.route(Pid::default(), watcher, signal);
    }

    fn request_id(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }

    fn peer(&self, node_id: u64) -> Option<Arc<Peer>> {
        self.peers
            .read()
            .expect("peers poisoned")
            .get(&node_id)
            .cloned()
    }

    /// Connect to `node` if needed, send it the request `make` builds
    /// around a fresh id, and wait for the reply.
    pub(super) async fn ask(
        self: &Arc<Self>,
        node: &str,
        make: impl FnOnce(u64) -> Frame,
    ) -> Result<(Arc<Peer>, Frame), RequestError> {
        self.ask_within(node, self.config.request_timeout, make)
            .await
    }

    /// [`ask`](Self::ask), waiting up to `timeout` for the reply.
    pub(super) async fn ask_within(
        self: &Arc<Self>,
        node: &str,
        timeout: Duration,
        make: impl FnOnce(u64) -> Frame,
    ) -> Result<(Arc<Peer>, Frame), RequestError> {
        let peer = self.connect(node).await?;
        // Spawns and pings count against the same bound as service calls.
        let Ok(_permit) = peer.requests_out.clone().try_acquire_owned() else {
            return Err(RequestError::TooManyInFlight {
                node: peer.name.clone(),
                max: self.config.requests_in_flight_max,
            });
        };
        let id = self.request_id();
        let reply = self.request(&peer, id, make(id), timeout).await?;
        Ok((peer, reply))
    }

    /// Send a request on the control lane and wait up to `timeout` for its
    /// reply. A request larger than `frame_bytes_max` is not sent: the
    /// peer (with the same limit, usually) would drop the connection.
    async fn request(
        &self,
        peer: &Peer,
        id: u64,
        frame: Frame,
        timeout: Duration,
    ) -> Result<Frame, RequestError> {
        let bytes = frame::encode(&frame);
        let size = bytes.len() - frame::PREFIX_BYTES;
        if size > self.config.frame_bytes_max as usize {
            return Err(RequestError::FrameTooLarge {
                size,
                max: self.config.frame_bytes_max,
            });
        }
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending poisoned")
            .insert(id, tx);
        peer.control.push(bytes);
        let reply = tokio::time::timeout(timeout, rx).await;
        self.pending.lock().expect("pending poisoned").remove(&id);
        match reply {
            Ok(Ok(frame)) => Ok(frame),
            _ => Err(RequestError::NoReply {
                node: peer.name.clone(),
                timeout,
            }),
        }
    }

    async fn spawn_on(
        self: &Arc<Self>,
        node: &str,
        module: &str,
        args: Vec<u8>,
        parent: Pid,
        link: bool,
        monitor: Option<Ref>,
    ) -> Result<Pid, SpawnError> {
        let request = |id| Frame::SpawnRequest {
            id,
            from: parent,
            module: module.to_string(),
            args,
            link,
            monitor,
        };
        let (peer, reply) = self
            .ask(node, request)
            .await
            .map_err(|e| SpawnError::NoConnection(e.to_string()))?;
        match reply {
            Frame::SpawnReply {
                result: Ok(child), ..
            } => {
                let mut stakes = peer.stakes.lock().expect("stakes poisoned");
                if link {
                    stakes.links.insert((parent, child));
                }
                if let Some(r) = monitor {
                    stakes.monitors.insert(r, (parent, child));
                }
                Ok(child)
            }
            Frame::SpawnReply {
                result: Err(failure),
                ..
            } => Err(failure.into()),
            other => Err(SpawnError::NoConnection(format!(
                "{} answered a spawn with {}",
                peer.name,
                other.kind()
            ))),
        }
    }

    /// Send every visible peer the list of visible nodes we are connected
    /// to, so each connects to those it lacks.
    fn announce_peers(&self) {
        let peers = self.peers.read().expect("peers poisoned");
        let nodes: Vec<(String, String)> = peers
            .values()
            .filter(|p| !p.hidden)
            .filter_map(|p| Some((p.name.clone(), p.listen.clone()?)))
            .collect();
        let frame = frame::encode(&Frame::Peers { nodes });
        for p in peers.values().filter(|p| !p.hidden) {
            p.control.push(&frame);
        }
    }

    /// Remove a peer from the table (if it is still the one there).
    fn forget(&self, peer: &Arc<Peer>) -> bool {
        let mut peers = self.peers.write().expect("peers poisoned");
        match peers.get(&peer.node_id) {
            Some(current) if Arc::ptr_eq(current, peer) => {
                peers.remove(&peer.node_id);
                true
            }
            _ => false,
        }
    }

    /// The connection to `peer` is gone (`orderly`: closed on purpose by
    /// either side): fire links and monitors with `noconnection`, tell
    /// node monitors.
    fn node_down(&self, peer: &Arc<Peer>, why: &str, orderly: bool) {
        if self.forget(peer) {
            self.peer_gone(peer, why, orderly);
        }
    }

    /// [`DistInner::node_down`] for a peer already out of the table.
    fn peer_gone(&self, peer: &Arc<Peer>, why: &str, orderly: bool) {
        peer.close_lanes();
        if peer.hidden || orderly {
            tracing::info!(node = %peer.name, reason = %why, "disconnected");
        } else {
            tracing::warn!(node = %peer.name, reason = %why, "node down");
        }
        self.services_peer_down(peer);
        let Some(node) = self.node() else { return };
        let stakes = std::mem::take(&mut *peer.stakes.lock().expect("stakes poisoned"));
        let lost: std::sync::Arc<str> = reason::NOCONNECTION.into();
        for (local, remote) in stakes.links {
            let _ = node.route(
                remote,
                local,
                Signal::Exit {
                    from: remote,
                    reason: lost.clone(),
                    linked: true,
                },
            );
        }
        for (reference, (watcher, target)) in stakes.monitors {
            let _ = node.route(
                target,
                watcher,
                Signal::Down {
                    pid: target,
                    reference,
                    reason: lost.clone(),
                },
            );
        }
        for (reference, (target, watcher)) in stakes.monitored_by {
            let _ = node.route(
                watcher,
                target,
                Signal::Demonitor {
                    from: watcher,
                    reference,
                },
            );
        }
        let watchers = self
            .node_monitors
            .lock()
            .expect("node monitors poisoned")
            .remove(&peer.name)
            .unwrap_or_default();
        for watcher in watchers {
            self.nodedown_message(&peer.name, watcher);
        }
    }
}
