//! Distribution: named nodes over QUIC, an authenticated handshake, and
//! signals between processes of different nodes.
//!
//! Invariant: the runtime knows nothing of this module. It routes signals
//! for pids of other nodes through [`Router`], which [`Distribution`]
//! implements; incoming frames are handed back to the runtime as signals.
//!
//! Layout: [`frame`] and [`handshake`] are I/O-free (bytes in, events out);
//! [`tls`] makes the TLS configuration; [`lane`] is one outgoing stream;
//! this file owns the node table, the connections and frame dispatch.

pub mod cookie;
pub mod frame;
pub mod handshake;
mod lane;
mod peer;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use molt_abi::{Pid, Ref, reason};
use tokio::sync::oneshot;

use self::frame::{Frame, FrameDecoder, ProcessRow, SpawnFailure};
use self::handshake::{Handshake, LocalInfo, PeerInfo, Role, Status};
use self::lane::{Lane, Pushed};
use self::peer::Peer;
use crate::runtime::{
    BoxFuture, HostMailbox, Message, Node, NodeInner, Router, Signal, SpawnError, Undelivered,
};

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
    /// How long a request (spawn, ping, load) waits for its reply.
    pub request_timeout: Duration,
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
            tls: tls::TlsMode::SelfSigned,
        }
    }
}

/// Why the distribution layer could not start, connect or answer.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
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
    /// The node name has no `@host` or the address is not `host:port`.
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
    #[error("handshake with {node} refused: {reason}")]
    Refused {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
    /// `connections_max` nodes are connected.
    #[error("connections_max ({0}) nodes are connected")]
    TooManyConnections(usize),
    /// No reply in `request_timeout`, or the connection was lost first.
    #[error("no reply from {0}")]
    NoReply(String),
}

/// Hash of a node name: the node part of its pids.
pub fn node_id(name: &str) -> u64 {
    crate::runtime::node_id(name)
}

/// Split `name@host:port` into the node name `name@host` and its address.
pub fn parse_node_address(text: &str) -> Result<(String, SocketAddr), DistError> {
    let bad = || DistError::BadAddress(text.to_string());
    let (name, hostport) = text.split_once('@').ok_or_else(bad)?;
    let addr: SocketAddr = hostport.parse().map_err(|_| bad())?;
    Ok((format!("{name}@{}", addr.ip()), addr))
}

/// The distribution layer of one node. Cheap to clone.
#[derive(Clone)]
pub struct Distribution {
    inner: Arc<DistInner>,
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
    next_request: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<Frame>>>,
    /// Local processes watching node connections: node name → watchers.
    node_monitors: Mutex<HashMap<String, Vec<Pid>>>,
    /// Serialises connection setup per node, so one connection per pair.
    connecting: tokio::sync::Mutex<()>,
}

impl Distribution {
    /// Start listening and make `node` route signals for other nodes
    /// through this layer. The node's name (`NodeConfig::name`) must be
    /// `name@host`.
    pub async fn start(node: &Node, config: DistConfig) -> Result<Distribution, DistError> {
        let inner_node = node.inner();
        let name = inner_node.config.name.clone();
        if !name.contains('@') {
            return Err(DistError::BadAddress(name));
        }
        let (server_crypto, client_crypto) = tls::quic_configs(&config.tls, &name)?;
        let transport = Arc::new(transport_config(&config));
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(transport.clone());
        let mut client_config = quinn::ClientConfig::new(Arc::new(client_crypto));
        client_config.transport_config(transport);
        let endpoint =
            quinn::Endpoint::server(server, config.listen).map_err(|source| DistError::Listen {
                addr: config.listen,
                source,
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
            next_request: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            node_monitors: Mutex::new(HashMap::new()),
            connecting: tokio::sync::Mutex::new(()),
        });
        inner_node.set_router(Arc::new(RouterHandle(Arc::downgrade(&inner))));
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
    pub async fn join(&self, address: &str) -> Result<(), DistError> {
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

    /// Erlang's `net_adm:ping`: connect if needed and exchange a ping.
    pub async fn ping(&self, node: &str) -> Result<Duration, DistError> {
        let start = Instant::now();
        let peer = self.inner.connect(node).await?;
        let id = self.inner.request_id();
        self.inner.request(&peer, id, Frame::Ping { id }).await?;
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

    /// Load module bytes on `node` unless it has them; returns its name and
    /// version there.
    pub async fn load_on(&self, node: &str, bytes: Vec<u8>) -> Result<(String, String), DistError> {
        let peer = self.inner.connect(node).await?;
        let id = self.inner.request_id();
        match self
            .inner
            .request(&peer, id, Frame::LoadModule { id, bytes })
            .await?
        {
            Frame::LoadReply { result: Ok(nv), .. } => Ok(nv),
            Frame::LoadReply {
                result: Err(why), ..
            } => Err(DistError::Refused {
                node: node.to_string(),
                reason: why,
            }),
            other => Err(DistError::NoReply(format!("{node} (answered {other:?})"))),
        }
    }

    /// The visible nodes `node` is connected to (`molt nodes`).
    pub async fn nodes_of(&self, node: &str) -> Result<Vec<String>, DistError> {
        let peer = self.inner.connect(node).await?;
        let id = self.inner.request_id();
        match self
            .inner
            .request(&peer, id, Frame::NodesRequest { id })
            .await?
        {
            Frame::NodesReply { nodes, .. } => Ok(nodes),
            other => Err(DistError::NoReply(format!("{node} (answered {other:?})"))),
        }
    }

    /// The processes of `node` (`molt ps`).
    pub async fn processes_of(&self, node: &str) -> Result<Vec<ProcessRow>, DistError> {
        let peer = self.inner.connect(node).await?;
        let id = self.inner.request_id();
        match self
            .inner
            .request(&peer, id, Frame::ProcessesRequest { id })
            .await?
        {
            Frame::ProcessesReply { processes, .. } => Ok(processes),
            other => Err(DistError::NoReply(format!("{node} (answered {other:?})"))),
        }
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
    ) -> Result<(), DistError> {
        let peer = self.inner.connect(node).await?;
        let frame = Frame::MessageNamed {
            from,
            name: name.to_string(),
            tag,
            reference: Ref::NONE,
            payload,
        };
        peer.control.push(frame::encode(&frame));
        Ok(())
    }

    /// Watch `node`: `watcher` gets a `NODEDOWN` message when its
    /// connection is lost (at once if it is not connected).
    pub fn monitor_node(&self, node: &str, watcher: Pid) {
        self.inner.monitor_node(node, watcher, true);
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

fn transport_config(config: &DistConfig) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(config.tick / 4));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(config.tick).expect("tick fits QUIC's idle timeout"),
    ));
    t.max_concurrent_uni_streams((config.lanes as u32 + 4).into());
    t.max_concurrent_bidi_streams(2u32.into());
    t
}

/// The router the runtime holds: a weak handle, so the node does not keep
/// the distribution layer alive in a cycle.
struct RouterHandle(Weak<DistInner>);

impl Router for RouterHandle {
    fn route(&self, from: Pid, to: Pid, signal: Signal) -> Result<(), Undelivered> {
        match self.0.upgrade() {
            Some(dist) => dist.route(from, to, signal),
            None => Err(Undelivered::NoConnection),
        }
    }

    fn node_name(&self) -> String {
        self.0.upgrade().map(|d| d.name.clone()).unwrap_or_default()
    }

    fn nodes(&self) -> Vec<String> {
        self.0
            .upgrade()
            .map(|d| d.visible_nodes())
            .unwrap_or_default()
    }

    fn send_named(
        &self,
        from: Pid,
        node: &str,
        name: &str,
        message: Message,
    ) -> BoxFuture<Result<(), Undelivered>> {
        let (dist, node, name) = (self.0.upgrade(), node.to_string(), name.to_string());
        Box::pin(async move {
            let Some(dist) = dist else {
                return Err(Undelivered::NoConnection);
            };
            let peer = dist
                .connect(&node)
                .await
                .map_err(|_| Undelivered::NoConnection)?;
            let frame = Frame::MessageNamed {
                from,
                name,
                tag: message.tag,
                reference: message.reference,
                payload: message.payload.into_vec(),
            };
            // Named sends from one process share one lane per node, so
            // they stay in order.
            let to = Pid {
                node: peer.node_id,
                incarnation: peer.incarnation,
                serial: 0,
            };
            // This send is async already: wait here for room, as the
            // runtime would for a send to a pid.
            if peer.lane(from, to).push(frame::encode(&frame)) == Pushed::Congested {
                peer.lane(from, to).wait_for_room().await;
            }
            Ok(())
        })
    }

    fn spawn_on(
        &self,
        parent: Pid,
        node: &str,
        module: &str,
        args: Vec<u8>,
        link: bool,
        monitor: Option<Ref>,
    ) -> BoxFuture<Result<Pid, SpawnError>> {
        let (dist, node, module) = (self.0.upgrade(), node.to_string(), module.to_string());
        Box::pin(async move {
            match dist {
                Some(dist) => {
                    dist.spawn_on(&node, &module, args, parent, link, monitor)
                        .await
                }
                None => Err(SpawnError::NoConnection("the node is stopping".into())),
            }
        })
    }

    fn ping(&self, node: &str) -> BoxFuture<bool> {
        let (dist, node) = (self.0.upgrade(), node.to_string());
        Box::pin(async move {
            let Some(dist) = dist else { return false };
            let Ok(peer) = dist.connect(&node).await else {
                return false;
            };
            let id = dist.request_id();
            dist.request(&peer, id, Frame::Ping { id }).await.is_ok()
        })
    }

    fn monitor_node(&self, node: &str, watcher: Pid, on: bool) {
        if let Some(dist) = self.0.upgrade() {
            dist.monitor_node(node, watcher, on);
        }
    }
}

impl DistInner {
    fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().unwrap_or(self.config.listen)
    }

    fn node(&self) -> Option<Arc<NodeInner>> {
        self.node.upgrade()
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

    /// Send a request on the control lane and wait for its reply.
    async fn request(&self, peer: &Peer, id: u64, frame: Frame) -> Result<Frame, DistError> {
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending poisoned")
            .insert(id, tx);
        peer.control.push(frame::encode(&frame));
        let reply = tokio::time::timeout(self.config.request_timeout, rx).await;
        self.pending.lock().expect("pending poisoned").remove(&id);
        match reply {
            Ok(Ok(frame)) => Ok(frame),
            _ => Err(DistError::NoReply(peer.name.clone())),
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
        let peer = self
            .connect(node)
            .await
            .map_err(|e| SpawnError::NoConnection(e.to_string()))?;
        let id = self.request_id();
        let request = Frame::SpawnRequest {
            id,
            from: parent,
            module: module.to_string(),
            args,
            link,
            monitor,
        };
        let reply = self
            .request(&peer, id, request)
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
            } => Err(match failure {
                SpawnFailure::NoModule(m) => SpawnError::NoModule(m),
                SpawnFailure::ProcessLimit(max) => SpawnError::ProcessLimit(max),
                SpawnFailure::ArgsTooLarge { size, max } => SpawnError::ArgsTooLarge {
                    size: size as usize,
                    max: max as usize,
                },
            }),
            other => Err(SpawnError::NoConnection(format!(
                "unexpected reply {other:?}"
            ))),
        }
    }

    /// The connected peer `name`, connecting first if needed.
    async fn connect(self: &Arc<Self>, name: &str) -> Result<Arc<Peer>, DistError> {
        let id = node_id(name);
        if let Some(peer) = self.peer(id) {
            return Ok(peer);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(peer) = self.peer(id) {
            return Ok(peer);
        }
        let addr = self
            .addresses
            .lock()
            .expect("addresses poisoned")
            .get(name)
            .copied()
            .ok_or_else(|| DistError::UnknownNode(name.to_string()))?;
        let fail = |reason: String| DistError::Connect {
            node: name.to_string(),
            reason,
        };
        // In CA mode TLS checks that the target's certificate names it.
        let server_name = tls::server_name_for(&self.config.tls, name)?;
        let connecting = self
            .endpoint
            .connect_with(self.client_config.clone(), addr, &server_name)
            .map_err(|e| fail(e.to_string()))?;
        let connection = tokio::time::timeout(self.config.handshake_timeout, connecting)
            .await
            .map_err(|_| fail("timed out".to_string()))?
            .map_err(|e| fail(e.to_string()))?;
        let (send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let peer = self
            .handshake(connection, send, recv, Role::Initiator)
            .await?;
        if peer.name != name {
            let reason = format!("the node at {addr} is {}, not {name}", peer.name);
            peer.connection.close(1u32.into(), reason.as_bytes());
            self.forget(&peer);
            return Err(DistError::Refused {
                node: name.to_string(),
                reason,
            });
        }
        Ok(peer)
    }

    /// Run the handshake on a fresh connection; on success the peer is in
    /// the table and its tasks run.
    async fn handshake(
        self: &Arc<Self>,
        connection: quinn::Connection,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        role: Role,
    ) -> Result<Arc<Peer>, DistError> {
        let remote = connection.remote_address();
        let refused = |reason: String| DistError::Refused {
            node: remote.to_string(),
            reason,
        };
        // Why a stream broke: the connection's close reason if it has one
        // (a CA-mode acceptor that rejects our certificate closes the
        // connection with a TLS alert only after QUIC's handshake is done).
        let lost = |e: &dyn std::fmt::Display| {
            let why = connection
                .close_reason()
                .map_or_else(|| e.to_string(), |c| c.to_string());
            refused(format!("the peer closed the handshake: {why}"))
        };
        let mut exporter = [0u8; 32];
        connection
            .export_keying_material(&mut exporter, b"molt-dist-1", b"")
            .map_err(|_| refused("cannot export TLS keying material".to_string()))?;
        let local = LocalInfo {
            name: self.name.clone(),
            incarnation: self.incarnation,
            hidden: self.config.hidden,
            listen: Some(self.local_addr().to_string()),
        };
        let deadline = Instant::now() + self.config.handshake_timeout;
        let mut hs = Handshake::new(
            role,
            local,
            &self.config.cookie,
            exporter,
            handshake::random_challenge(),
            deadline,
        );
        // In CA mode the peer must be the node its certificate names.
        let presented = self
            .config
            .tls
            .is_ca()
            .then(|| tls::presented_leaf(connection.peer_identity()));
        let mut admit = |info: &PeerInfo| {
            if let Some(leaf) = &presented {
                tls::check_peer_names(leaf.as_ref(), &info.name)?;
            }
            self.admit(info)
        };
        let mut buf = vec![0u8; 4096];
        let info = loop {
            let out = hs.take_output();
            if !out.is_empty() {
                send.write_all(&out).await.map_err(|e| lost(&e))?;
            }
            let read = tokio::time::timeout_at(deadline.into(), recv.read(&mut buf)).await;
            let status = match read {
                Err(_) => hs.poll_timeout(Instant::now()),
                Ok(Ok(Some(n))) => hs.receive(&buf[..n], &mut admit),
                Ok(Ok(None)) => {
                    return Err(refused("the peer closed the handshake".to_string()));
                }
                Ok(Err(e)) => return Err(lost(&e)),
            };
            match status {
                Status::InProgress => continue,
                Status::Done(info) => break info,
                Status::Refused(why) => {
                    // The peer gets the refusal, and nothing else.
                    let out = hs.take_output();
                    if !out.is_empty() {
                        let _ = send.write_all(&out).await;
                        let _ = send.finish();
                    }
                    let _ =
                        tokio::time::timeout(Duration::from_millis(200), connection.closed()).await;
                    connection.close(2u32.into(), b"handshake refused");
                    if role == Role::Initiator {
                        // The acceptor's refusals are logged by accept_loop.
                        tracing::warn!(peer = %remote, "node handshake refused: {why}");
                    }
                    return Err(refused(why.to_string()));
                }
            }
        };
        let out = hs.take_output();
        if !out.is_empty() {
            send.write_all(&out).await.map_err(|e| lost(&e))?;
        }
        Ok(self.enter(info, connection, send, recv))
    }

    /// Whether a node that completed the first half of the handshake may
    /// join: allowlist, duplicate names, connection limit.
    fn admit(&self, info: &PeerInfo) -> Result<(), String> {
        if info.name == self.name {
            return Err(format!("the peer has this node's own name {}", info.name));
        }
        if let Some(allow) = &self.config.allow
            && !allow.iter().any(|n| n == &info.name)
        {
            return Err(format!("{} is not in the allowlist", info.name));
        }
        let peers = self.peers.read().expect("peers poisoned");
        if let Some(existing) = peers.get(&node_id(&info.name)) {
            return Err(format!(
                "a node named {} is already connected (incarnation {:x})",
                existing.name, existing.incarnation
            ));
        }
        if peers.len() >= self.config.connections_max {
            return Err(format!(
                "connections_max ({}) reached",
                self.config.connections_max
            ));
        }
        Ok(())
    }

    /// Put an authenticated peer in the table and start its tasks.
    fn enter(
        self: &Arc<Self>,
        info: PeerInfo,
        connection: quinn::Connection,
        control_send: quinn::SendStream,
        control_recv: quinn::RecvStream,
    ) -> Arc<Peer> {
        let lanes = (0..self.config.lanes.max(1))
            .map(|_| Lane::new(self.config.lane_bytes_max))
            .collect();
        let peer = Arc::new(Peer {
            node_id: node_id(&info.name),
            name: info.name.clone(),
            incarnation: info.incarnation,
            hidden: info.hidden,
            listen: info.listen.clone(),
            connection: connection.clone(),
            control: Lane::new(self.config.lane_bytes_max),
            lanes,
            stakes: Mutex::new(Default::default()),
        });
        if let Some(addr) = info.listen.as_deref().and_then(|a| a.parse().ok()) {
            self.addresses
                .lock()
                .expect("addresses poisoned")
                .insert(info.name.clone(), addr);
        }
        self.peers
            .write()
            .expect("peers poisoned")
            .insert(peer.node_id, peer.clone());
        tracing::info!(node = %peer.name, hidden = peer.hidden, "node up");

        tokio::spawn(write_control(peer.clone(), control_send));
        for index in 0..peer.lanes.len() {
            tokio::spawn(write_lane(peer.clone(), index));
        }
        tokio::spawn(read_stream(self.clone(), peer.clone(), control_recv));
        tokio::spawn(accept_lanes(self.clone(), peer.clone()));
        tokio::spawn(watch(self.clone(), peer.clone()));
        // Full mesh: tell a visible peer which visible nodes we know.
        if !self.config.hidden && !peer.hidden {
            self.announce_peers();
        }
        peer
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
            p.control.push(frame.clone());
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
        if !self.forget(peer) {
            return;
        }
        peer.close_lanes();
        if peer.hidden || orderly {
            tracing::info!(node = %peer.name, reason = %why, "disconnected");
        } else {
            tracing::warn!(node = %peer.name, reason = %why, "node down");
        }
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

    /// Encode a signal for a remote pid and queue it on its lane, keeping
    /// the link and monitor bookkeeping.
    fn route(&self, from: Pid, to: Pid, signal: Signal) -> Result<(), Undelivered> {
        let Some(peer) = self.peer(to.node) else {
            return Err(Undelivered::NoConnection);
        };
        if to.incarnation != peer.incarnation {
            // A pid of an earlier incarnation of that node.
            return Err(Undelivered::NoProc);
        }
        let frame = {
            let mut stakes = peer.stakes.lock().expect("stakes poisoned");
            match signal {
                Signal::Message { from, message } => Frame::Message {
                    from,
                    to,
                    tag: message.tag,
                    reference: message.reference,
                    payload: message.payload.into_vec(),
                },
                Signal::Exit {
                    from,
                    reason,
                    linked,
                } => {
                    if linked {
                        stakes.links.remove(&(from, to));
                    }
                    Frame::Exit {
                        from,
                        to,
                        reason: reason.to_string(),
                        linked,
                    }
                }
                Signal::Link { from } => {
                    stakes.links.insert((from, to));
                    Frame::Link { from, to }
                }
                Signal::Unlink { from } => {
                    stakes.links.remove(&(from, to));
                    Frame::Unlink { from, to }
                }
                Signal::Monitor { from, reference } => {
                    stakes.monitors.insert(reference, (from, to));
                    Frame::Monitor {
                        from,
                        to,
                        reference,
                    }
                }
                Signal::Demonitor { from, reference } => {
                    stakes.monitors.remove(&reference);
                    Frame::Demonitor {
                        from,
                        to,
                        reference,
                    }
                }
                Signal::Down {
                    pid,
                    reference,
                    reason,
                } => {
                    stakes.monitored_by.remove(&reference);
                    Frame::Down {
                        watcher: to,
                        pid,
                        reference,
                        reason: reason.to_string(),
                    }
                }
            }
        };
        if peer.lane(from, to).push(frame::encode(&frame)) == Pushed::Congested {
            let peer = peer.clone();
            crate::runtime::backpressure::suspend_sender(Box::pin(async move {
                peer.lane(from, to).wait_for_room().await;
            }));
        }
        Ok(())
    }

    /// Act on a frame from `peer`.
    fn dispatch(self: &Arc<Self>, peer: &Arc<Peer>, frame: Frame) {
        let Some(node) = self.node() else { return };
        match frame {
            Frame::Message {
                from,
                to,
                tag,
                reference,
                payload,
            } => {
                let message = Message {
                    tag,
                    reference,
                    payload: payload.into_boxed_slice(),
                };
                if let Err(e) = node.deliver_message(from, to, message) {
                    tracing::warn!(%from, %to, node = %peer.name, "remote message not delivered: {e}");
                }
            }
            Frame::MessageNamed {
                from,
                name,
                tag,
                reference,
                payload,
            } => {
                let to = node
                    .registry
                    .lock()
                    .expect("registry poisoned")
                    .whereis(&name);
                let message = Message {
                    tag,
                    reference,
                    payload: payload.into_boxed_slice(),
                };
                match to {
                    Some(to) => {
                        if let Err(e) = node.deliver_message(from, to, message) {
                            tracing::warn!(%from, %to, node = %peer.name, "remote message not delivered: {e}");
                        }
                    }
                    None => {
                        tracing::debug!(%from, name, "remote message to an unregistered name dropped")
                    }
                }
            }
            Frame::Exit {
                from,
                to,
                reason,
                linked,
            } => {
                if linked {
                    peer.stakes
                        .lock()
                        .expect("stakes poisoned")
                        .links
                        .remove(&(to, from));
                }
                let _ = node.route(
                    from,
                    to,
                    Signal::Exit {
                        from,
                        reason: reason.into(),
                        linked,
                    },
                );
            }
            Frame::Link { from, to } => {
                peer.stakes
                    .lock()
                    .expect("stakes poisoned")
                    .links
                    .insert((to, from));
                if node.route(from, to, Signal::Link { from }).is_err() {
                    // As for a local link: the linker learns `noproc`.
                    peer.stakes
                        .lock()
                        .expect("stakes poisoned")
                        .links
                        .remove(&(to, from));
                    let _ = self.route(
                        to,
                        from,
                        Signal::Exit {
                            from: to,
                            reason: reason::NOPROC.into(),
                            linked: true,
                        },
                    );
                }
            }
            Frame::Unlink { from, to } => {
                peer.stakes
                    .lock()
                    .expect("stakes poisoned")
                    .links
                    .remove(&(to, from));
                let _ = node.route(from, to, Signal::Unlink { from });
            }
            Frame::Monitor {
                from,
                to,
                reference,
            } => {
                peer.stakes
                    .lock()
                    .expect("stakes poisoned")
                    .monitored_by
                    .insert(reference, (to, from));
                if node
                    .route(from, to, Signal::Monitor { from, reference })
                    .is_err()
                {
                    let _ = self.route(
                        to,
                        from,
                        Signal::Down {
                            pid: to,
                            reference,
                            reason: reason::NOPROC.into(),
                        },
                    );
                }
            }
            Frame::Demonitor {
                from,
                to,
                reference,
            } => {
                peer.stakes
                    .lock()
                    .expect("stakes poisoned")
                    .monitored_by
                    .remove(&reference);
                let _ = node.route(from, to, Signal::Demonitor { from, reference });
            }
            Frame::Down {
                watcher,
                pid,
                reference,
                reason,
            } => {
                peer.stakes
                    .lock()
                    .expect("stakes poisoned")
                    .monitors
                    .remove(&reference);
                let _ = node.route(
                    pid,
                    watcher,
                    Signal::Down {
                        pid,
                        reference,
                        reason: reason.into(),
                    },
                );
            }
            Frame::SpawnRequest {
                id,
                from,
                module,
                args,
                link,
                monitor,
            } => {
                let result = node
                    .spawn(
                        &module,
                        args,
                        link.then_some(from),
                        monitor.map(|r| (r, from)),
                    )
                    .map_err(|e| match e {
                        SpawnError::NoModule(m) => SpawnFailure::NoModule(m),
                        SpawnError::ProcessLimit(max) => SpawnFailure::ProcessLimit(max),
                        SpawnError::ArgsTooLarge { size, max } => SpawnFailure::ArgsTooLarge {
                            size: size as u64,
                            max: max as u64,
                        },
                        // A local spawn does not reach other nodes.
                        SpawnError::NoConnection(_) => unreachable!("local spawn"),
                    });
                if let Ok(child) = result {
                    let mut stakes = peer.stakes.lock().expect("stakes poisoned");
                    if link {
                        stakes.links.insert((child, from));
                    }
                    if let Some(r) = monitor {
                        stakes.monitored_by.insert(r, (child, from));
                    }
                }
                peer.control
                    .push(frame::encode(&Frame::SpawnReply { id, result }));
            }
            Frame::Ping { id } => {
                peer.control.push(frame::encode(&Frame::Pong { id }));
            }
            Frame::LoadModule { id, bytes } => {
                let result = node
                    .code
                    .load(&bytes, "module")
                    .map(|v| (v.identity.name.clone(), v.identity.version.clone()))
                    .map_err(|e| e.to_string());
                peer.control
                    .push(frame::encode(&Frame::LoadReply { id, result }));
            }
            Frame::NodesRequest { id } => {
                let nodes = self.visible_nodes();
                peer.control
                    .push(frame::encode(&Frame::NodesReply { id, nodes }));
            }
            Frame::ProcessesRequest { id } => {
                let processes = Node::from_inner(node.clone())
                    .processes()
                    .into_iter()
                    .map(|p| ProcessRow {
                        pid: p.pid,
                        module: p.module,
                        name: p.name,
                        mailbox_len: p.mailbox_len as u64,
                        memory_bytes: p.memory_bytes as u64,
                    })
                    .collect();
                peer.control
                    .push(frame::encode(&Frame::ProcessesReply { id, processes }));
            }
            reply @ (Frame::SpawnReply { id, .. }
            | Frame::Pong { id }
            | Frame::LoadReply { id, .. }
            | Frame::NodesReply { id, .. }
            | Frame::ProcessesReply { id, .. }) => {
                if let Some(tx) = self.pending.lock().expect("pending poisoned").remove(&id) {
                    let _ = tx.send(reply);
                }
            }
            Frame::Peers { nodes } => {
                if self.config.hidden || peer.hidden {
                    return;
                }
                for (name, addr) in nodes {
                    if name == self.name || self.peer(node_id(&name)).is_some() {
                        continue;
                    }
                    let Ok(addr) = addr.parse::<SocketAddr>() else {
                        continue;
                    };
                    self.addresses
                        .lock()
                        .expect("addresses poisoned")
                        .insert(name.clone(), addr);
                    let dist = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = dist.connect(&name).await {
                            tracing::debug!(node = %name, "mesh connection failed: {e}");
                        }
                    });
                }
            }
        }
    }
}

async fn accept_loop(dist: Arc<DistInner>) {
    while let Some(incoming) = dist.endpoint.accept().await {
        let dist = dist.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let connection =
                match tokio::time::timeout(dist.config.handshake_timeout, incoming).await {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        tracing::warn!(peer = %remote, "incoming node connection failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(peer = %remote, "incoming node connection timed out in TLS");
                        return;
                    }
                };
            let streams =
                tokio::time::timeout(dist.config.handshake_timeout, connection.accept_bi()).await;
            let Ok(Ok((send, recv))) = streams else {
                tracing::warn!(peer = %remote, "node connection opened no handshake stream");
                connection.close(2u32.into(), b"no handshake");
                return;
            };
            if let Err(e) = dist.handshake(connection, send, recv, Role::Acceptor).await {
                tracing::warn!(peer = %remote, "{e}");
            }
        });
    }
}

async fn write_control(peer: Arc<Peer>, mut send: quinn::SendStream) {
    let mut batch = Vec::new();
    while peer.control.take_batch(&mut batch).await {
        if send.write_all(&batch).await.is_err() {
            break;
        }
    }
}

async fn write_lane(peer: Arc<Peer>, index: usize) {
    let Ok(mut send) = peer.connection.open_uni().await else {
        return;
    };
    // The first byte names the lane, for the reader's logs.
    if send.write_all(&[index as u8]).await.is_err() {
        return;
    }
    let mut batch = Vec::new();
    while peer.lanes[index].take_batch(&mut batch).await {
        if send.write_all(&batch).await.is_err() {
            break;
        }
    }
}

async fn accept_lanes(dist: Arc<DistInner>, peer: Arc<Peer>) {
    let mut lanes = 0usize;
    while let Ok(mut recv) = peer.connection.accept_uni().await {
        lanes += 1;
        if lanes > dist.config.lanes {
            tracing::warn!(node = %peer.name, "peer opened more lanes than lanes ({}); closing", dist.config.lanes);
            peer.connection.close(3u32.into(), b"too many lanes");
            return;
        }
        let mut first = [0u8; 1];
        if recv.read_exact(&mut first).await.is_err() {
            continue;
        }
        tokio::spawn(read_stream(dist.clone(), peer.clone(), recv));
    }
}

/// Read frames from one stream and dispatch them; a malformed or oversize
/// frame closes the connection with the reason, logged.
async fn read_stream(dist: Arc<DistInner>, peer: Arc<Peer>, mut recv: quinn::RecvStream) {
    let mut decoder = FrameDecoder::new(dist.config.frame_bytes_max);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match recv.read(&mut buf).await {
            Ok(Some(n)) => decoder.push(&buf[..n]),
            Ok(None) | Err(_) => return,
        }
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => dist.dispatch(&peer, frame),
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(node = %peer.name, "bad frame from peer, closing the connection: {e}");
                    peer.connection.close(4u32.into(), b"bad frame");
                    return;
                }
            }
        }
    }
}

/// Wait for the connection to end, then run node-down.
async fn watch(dist: Arc<DistInner>, peer: Arc<Peer>) {
    let why = peer.connection.closed().await;
    // Closed by us, or by a peer stopping in order: not a failure.
    let orderly = matches!(
        why,
        quinn::ConnectionError::LocallyClosed | quinn::ConnectionError::ApplicationClosed(_)
    );
    dist.node_down(&peer, &why.to_string(), orderly);
}
