//! Making connections: the QUIC transport settings, connecting and
//! accepting, driving the handshake, admitting a peer, and the tasks that
//! read and write its streams and notice when it goes away.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::frame::{Frame, FrameDecoder, PREFIX_BYTES};
use super::handshake::{self, Handshake, LocalInfo, NotAdmitted, PeerInfo, Role, Status};
use super::lane::Lane;
use super::nemesis::Fate;
use super::peer::Peer;
use super::{ConnectError, DistConfig, DistInner, node_id, tls};

pub(super) fn transport_config(config: &DistConfig) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(config.tick / 4));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(config.tick).expect("tick fits QUIC's idle timeout"),
    ));
    t.max_concurrent_uni_streams((config.lanes as u32 + 4).into());
    t.max_concurrent_bidi_streams(2u32.into());
    t
}

impl DistInner {
    /// The connected peer `name`, connecting first if needed.
    pub(super) async fn connect(self: &Arc<Self>, name: &str) -> Result<Arc<Peer>, ConnectError> {
        let id = node_id(name);
        if let Some(peer) = self.peer(id) {
            return Ok(peer);
        }
        // One attempt at a time per node (one connection per pair); a node
        // that never answers holds up only those waiting for it.
        let gate = self
            .connecting
            .lock()
            .expect("connecting poisoned")
            .entry(id)
            .or_default()
            .clone();
        let result = {
            let _one_at_a_time = gate.lock().await;
            match self.peer(id) {
                Some(peer) => Ok(peer),
                None => self.connect_now(name).await,
            }
        };
        drop(gate);
        let mut gates = self.connecting.lock().expect("connecting poisoned");
        if gates.get(&id).is_some_and(|g| Arc::strong_count(g) == 1) {
            gates.remove(&id);
        }
        result
    }

    /// Connect to `name`, known not to be connected, with its gate held.
    async fn connect_now(self: &Arc<Self>, name: &str) -> Result<Arc<Peer>, ConnectError> {
        let addr = self
            .addresses
            .lock()
            .expect("addresses poisoned")
            .get(name)
            .copied()
            .ok_or_else(|| ConnectError::UnknownNode(name.to_string()))?;
        let fail = |reason: String| ConnectError::Connect {
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
        let peer = match self
            .handshake(connection.clone(), send, recv, Role::Initiator)
            .await
        {
            Ok(peer) => peer,
            // The node connected to this one at the same moment, and the
            // pair keeps that connection: it is in the table, or soon is.
            Err(e) if closed_as_duplicate(&connection) || refused_as_connected(&e) => {
                match self.await_entry(node_id(name), |p| p.is_some()).await {
                    Some(peer) => peer,
                    None => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        if peer.name != name {
            let reason = format!("the node at {addr} is {}, not {name}", peer.name);
            peer.connection.close(1u32.into(), reason.as_bytes());
            self.forget(&peer);
            return Err(ConnectError::WrongNode {
                node: name.to_string(),
                addr,
                found: peer.name.clone(),
            });
        }
        Ok(peer)
    }

    /// Run the handshake on a fresh connection; on success the peer is in
    /// the table and its tasks run.
    pub(super) async fn handshake(
        self: &Arc<Self>,
        connection: quinn::Connection,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        role: Role,
    ) -> Result<Arc<Peer>, ConnectError> {
        let remote = connection.remote_address();
        let broken = |reason: String| ConnectError::Handshake {
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
            broken(format!("the peer closed the handshake: {why}"))
        };
        let mut exporter = [0u8; 32];
        connection
            .export_keying_material(&mut exporter, b"molt-dist-1", b"")
            .map_err(|_| broken("cannot export TLS keying material".to_string()))?;
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
                tls::check_peer_names(leaf.as_ref(), &info.name)
                    .map_err(NotAdmitted::Certificate)?;
            }
            self.admit(info)
        };
        let info = loop {
            let out = hs.take_output();
            if !out.is_empty() {
                send.write_all(&out).await.map_err(|e| lost(&e))?;
            }
            // One message at a time: the peer's first frames may follow
            // its last handshake message at once, and belong to
            // `read_stream`, so read nothing past that message.
            let read =
                tokio::time::timeout_at(deadline.into(), read_handshake_message(&mut recv)).await;
            let status = match read {
                Err(_) => hs.poll_timeout(Instant::now()),
                Ok(Ok(Some(message))) => hs.receive(&message, &mut admit),
                Ok(Ok(None)) => {
                    return Err(broken("the peer closed the handshake".to_string()));
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
                    let e = ConnectError::Refused {
                        node: remote.to_string(),
                        refusal: why,
                    };
                    if role == Role::Initiator {
                        // The acceptor's refusals are logged by accept_loop.
                        // Refused because the pair is connected already:
                        // both connected at once, not a failure.
                        if refused_as_connected(&e) {
                            tracing::info!(peer = %remote, "{e} (connected the other way)");
                        } else {
                            tracing::warn!(peer = %remote, "{e}");
                        }
                    }
                    return Err(e);
                }
            }
        };
        // The last handshake message (the acceptor's `Welcome`) leaves as
        // the control stream's first bytes, written only once the peer is
        // in the table: when the joining side's handshake ends, this side
        // already knows it.
        Ok(self.enter(info, connection, send, recv, hs.take_output(), role))
    }

    /// Whether a node that completed the first half of the handshake may
    /// join: allowlist, duplicate names, connection limit.
    pub(super) fn admit(&self, info: &PeerInfo) -> Result<(), NotAdmitted> {
        if info.name == self.name {
            return Err(NotAdmitted::OwnName(info.name.clone()));
        }
        if let Some(allow) = &self.config.allow
            && !allow.iter().any(|n| n == &info.name)
        {
            return Err(NotAdmitted::NotAllowed(info.name.clone()));
        }
        let peers = self.peers.read().expect("peers poisoned");
        if let Some(existing) = peers.get(&node_id(&info.name)) {
            return Err(NotAdmitted::AlreadyConnected {
                name: existing.name.clone(),
                incarnation: existing.incarnation,
            });
        }
        if peers.len() >= self.config.connections_max {
            return Err(NotAdmitted::ConnectionsMax(self.config.connections_max));
        }
        Ok(())
    }

    /// Put an authenticated peer in the table and start its tasks; `first`
    /// (the handshake's last bytes, if any) goes out on the control stream
    /// before anything else.
    pub(super) fn enter(
        self: &Arc<Self>,
        info: PeerInfo,
        connection: quinn::Connection,
        control_send: quinn::SendStream,
        control_recv: quinn::RecvStream,
        first: Vec<u8>,
        role: Role,
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
            requests_out: Arc::new(Semaphore::new(self.config.requests_in_flight_max)),
            requests_in: Arc::new(Semaphore::new(self.config.requests_in_flight_max)),
            connected_at: std::time::Instant::now(),
            heard_at_ms: Default::default(),
            opened_here: role == Role::Initiator,
        });
        // Two nodes that connect to each other at once (each learning of
        // the other from a third) both admit both connections. Both ends
        // keep the same one, the connection the node with the smaller
        // name opened, and close the other: a connection one end kept
        // and the other forgot would stay open, unused by one end and
        // refusing every new connection at the other, for good.
        let replaced = {
            let mut peers = self.peers.write().expect("peers poisoned");
            match peers.get(&peer.node_id) {
                Some(existing) if !self.keeps_new(existing, &peer) => {
                    let existing = existing.clone();
                    drop(peers);
                    tracing::debug!(node = %peer.name, "closed a second connection to a connected node");
                    connection.close(DUPLICATE_CODE.into(), b"duplicate connection");
                    return existing;
                }
                existing => {
                    let existing = existing.cloned();
                    peers.insert(peer.node_id, peer.clone());
                    existing
                }
            }
        };
        if let Some(addr) = info.listen.as_deref().and_then(|a| a.parse().ok()) {
            self.addresses
                .lock()
                .expect("addresses poisoned")
                .insert(info.name.clone(), addr);
        }
        match &replaced {
            // The node started again while this end still had its earlier
            // life connected: that one is down (its links and monitors
            // fire), this one is up.
            Some(old) if old.incarnation != peer.incarnation => {
                old.connection
                    .close(DUPLICATE_CODE.into(), b"a newer incarnation connected");
                self.peer_gone(old, "a newer incarnation connected", false);
                self.connection_made(&peer.name);
                tracing::info!(node = %peer.name, hidden = peer.hidden, "node up");
            }
            // What was queued for it, and its links and monitors, move to
            // the connection kept: no node down, nothing queued lost.
            Some(old) => {
                *peer.stakes.lock().expect("stakes poisoned") =
                    std::mem::take(&mut *old.stakes.lock().expect("stakes poisoned"));
                old.hand_queued_to(&peer);
                old.close_lanes();
                old.connection
                    .close(DUPLICATE_CODE.into(), b"duplicate connection");
                tracing::debug!(node = %peer.name, "replaced a second connection to a connected node");
            }
            None => {
                self.connection_made(&peer.name);
                tracing::info!(node = %peer.name, hidden = peer.hidden, "node up");
            }
        }

        // The handshake's last bytes go first, written before the control
        // lane's frames (never queued among them: they belong to this
        // connection, the frames to the pair).
        tokio::spawn(write_control(peer.clone(), control_send, first));
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
        // The peer is in the table: every service's notices from now on
        // reach it after what the service sends it here (see `net::pg`).
        self.services_peer_up(&peer);
        peer
    }

    /// Wait, up to the handshake timeout, until `done` holds of the
    /// table's entry for `node_id`; that entry then. Polled: it is for the
    /// moments after two connections between one pair, not a hot path.
    async fn await_entry(
        &self,
        node_id: u64,
        done: impl Fn(Option<&Arc<Peer>>) -> bool,
    ) -> Option<Arc<Peer>> {
        let deadline = Instant::now() + self.config.handshake_timeout;
        loop {
            let entry = self.peer(node_id);
            if done(entry.as_ref()) || Instant::now() >= deadline {
                return entry;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Of two connections to one node, whether `new` is the one to keep
    /// rather than `existing`: the one the node with the smaller name
    /// opened (both ends decide alike); the newer if that does not tell
    /// them apart, or if the node has started again since.
    fn keeps_new(&self, existing: &Peer, new: &Peer) -> bool {
        if existing.incarnation != new.incarnation {
            return true;
        }
        let opened_by_smaller = |p: &Peer| p.opened_here == (self.name < p.name);
        !opened_by_smaller(existing) || opened_by_smaller(new)
    }
}

/// The application close code of a connection closed because the pair
/// has another (both nodes connected at once).
pub(super) const DUPLICATE_CODE: u32 = 7;

/// One length-prefixed handshake message, prefix included; `None` if the
/// stream ended first. A prefix over `HANDSHAKE_BYTES_MAX` (or zero) is
/// returned alone, for the handshake to refuse.
async fn read_handshake_message(
    recv: &mut quinn::RecvStream,
) -> Result<Option<Vec<u8>>, quinn::ReadExactError> {
    let mut prefix = [0u8; PREFIX_BYTES];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(_)) => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(prefix);
    let mut message = prefix.to_vec();
    if len == 0 || len > handshake::HANDSHAKE_BYTES_MAX {
        return Ok(Some(message));
    }
    message.resize(PREFIX_BYTES + len as usize, 0);
    match recv.read_exact(&mut message[PREFIX_BYTES..]).await {
        Ok(()) => Ok(Some(message)),
        Err(quinn::ReadExactError::FinishedEarly(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(super) async fn accept_loop(dist: Arc<DistInner>) {
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
            match dist.handshake(connection, send, recv, Role::Acceptor).await {
                Ok(_) => {}
                // A second connection from a connected node: both
                // connected at once (or this end has not yet seen the
                // first one end, which it will).
                Err(e) if refused_as_connected(&e) => tracing::info!(peer = %remote, "{e}"),
                Err(e) => tracing::warn!(peer = %remote, "{e}"),
            }
        });
    }
}

async fn write_control(peer: Arc<Peer>, mut send: quinn::SendStream, first: Vec<u8>) {
    if !first.is_empty() && send.write_all(&first).await.is_err() {
        return;
    }
    write_batches(&peer.control, &mut send).await;
}

async fn write_lane(peer: Arc<Peer>, index: usize) {
    let Ok(mut send) = peer.connection.open_uni().await else {
        return;
    };
    // The first byte names the lane, for the reader's logs.
    if send.write_all(&[index as u8]).await.is_err() {
        return;
    }
    write_batches(&peer.lanes[index], &mut send).await;
}

/// Write what `lane` queues to `send` until the lane closes or the stream
/// fails. Each batch's chunks are handed to quinn as they are, not copied:
/// quinn keeps them until the peer has acknowledged them.
async fn write_batches(lane: &Lane, send: &mut quinn::SendStream) {
    let mut batch = Vec::new();
    let mut chunks = Vec::new();
    while lane.take_batch(&mut batch).await {
        chunks.extend(batch.drain(..).map(bytes::Bytes::from));
        if send.write_all_chunks(&mut chunks).await.is_err() {
            break;
        }
        chunks.clear();
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

/// How many frames of one stream the nemesis may hold at once before the
/// stream's reader waits (and the sender's flow control holds the rest).
const HELD_FRAMES_MAX: usize = 1024;

/// The most bytes one read of a stream takes.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// Read frames from one stream and dispatch them; a malformed or oversize
/// frame closes the connection with the reason, logged.
///
/// While the nemesis is active (or still holds frames of this stream),
/// frames go through a task of their own that waits out each one's fate
/// from its arrival: the reader goes on reading, so a delay is added to
/// each frame once rather than to the frames behind it too.
async fn read_stream(dist: Arc<DistInner>, peer: Arc<Peer>, mut recv: quinn::RecvStream) {
    let mut decoder = FrameDecoder::new(dist.config.frame_bytes_max);
    let mut held: Option<Held> = None;
    loop {
        // The bytes as quinn holds them: whole frames are decoded there.
        match recv.read_chunk(READ_CHUNK_BYTES, true).await {
            Ok(Some(chunk)) => decoder.push_chunk(chunk.bytes),
            Ok(None) | Err(_) => return,
        }
        let arrived = tokio::time::Instant::now();
        peer.heard(arrived.into_std());
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let behind = held.as_ref().is_some_and(Held::holds);
                    if dist.nemesis.is_active() || behind {
                        let held = held.get_or_insert_with(|| Held::start(&dist, &peer));
                        if !held.hold(arrived, frame).await {
                            return;
                        }
                        continue;
                    }
                    crate::runtime::run_woken_here(|| dist.dispatch(&peer, frame));
                }
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

/// The frames of one stream the nemesis holds, in arrival order, and the
/// task that hands them on as their fates say.
struct Held {
    frames: tokio::sync::mpsc::Sender<(tokio::time::Instant, Frame)>,
    /// Frames sent to the task and not yet handed on or dropped.
    pending: Arc<std::sync::atomic::AtomicUsize>,
}

impl Held {
    fn start(dist: &Arc<DistInner>, peer: &Arc<Peer>) -> Held {
        let (frames, mut queue) =
            tokio::sync::mpsc::channel::<(tokio::time::Instant, Frame)>(HELD_FRAMES_MAX);
        let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (dist, peer, left) = (dist.clone(), peer.clone(), pending.clone());
        tokio::spawn(async move {
            while let Some((arrived, frame)) = queue.recv().await {
                if dist.nemesis.fate_of(&peer.name, arrived).await == Fate::Deliver {
                    dist.dispatch(&peer, frame);
                }
                left.fetch_sub(1, std::sync::atomic::Ordering::Release);
            }
        });
        Held { frames, pending }
    }

    /// Whether frames are still held: later ones must queue behind them.
    fn holds(&self) -> bool {
        self.pending.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    /// Queue `frame`, which arrived at `arrived`; false if the task ended.
    async fn hold(&self, arrived: tokio::time::Instant, frame: Frame) -> bool {
        self.pending
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        self.frames.send((arrived, frame)).await.is_ok()
    }
}

/// Whether the other end closed `connection` as the second one between
/// the pair.
fn closed_as_duplicate(connection: &quinn::Connection) -> bool {
    matches!(
        connection.close_reason(),
        Some(quinn::ConnectionError::ApplicationClosed(c)) if c.error_code == DUPLICATE_CODE.into()
    )
}

/// Whether a handshake was refused because the pair is connected
/// already (by this end, or by the other: the text is the other's).
fn refused_as_connected(e: &ConnectError) -> bool {
    match e {
        ConnectError::Refused { refusal, .. } => match refusal {
            handshake::Refusal::NotAdmitted(NotAdmitted::AlreadyConnected { .. }) => true,
            handshake::Refusal::PeerRefused(why) => {
                why.starts_with("not admitted: a node named")
                    && why.contains("is already connected")
            }
            _ => false,
        },
        _ => false,
    }
}

/// Wait for the connection to end, then run node-down.
async fn watch(dist: Arc<DistInner>, peer: Arc<Peer>) {
    let why = peer.connection.closed().await;
    // The other end closed this as the second connection between the
    // pair: the one kept replaces it here too once its handshake ends
    // (the link's state moves to it then), so wait for that a while
    // before calling the node down.
    if closed_as_duplicate(&peer.connection) {
        dist.await_entry(peer.node_id, |p| !p.is_some_and(|p| Arc::ptr_eq(p, &peer)))
            .await;
    }
    // Closed by us, or by a peer stopping in order: not a failure.
    let orderly = matches!(
        why,
        quinn::ConnectionError::LocallyClosed | quinn::ConnectionError::ApplicationClosed(_)
    );
    dist.node_down(&peer, &why.to_string(), orderly);
}
