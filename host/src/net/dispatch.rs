//! Acting on frames from a peer: signals for local processes, spawn and
//! ping requests and their replies, service requests and notices (handed
//! to `net::service`), and full-mesh gossip.

use std::net::SocketAddr;
use std::sync::Arc;

use molt_abi::{Pid, reason, tag};

use super::frame::Frame;
use super::peer::Peer;
use super::wire::SpawnFailure;
use super::{DistInner, node_id};
use crate::runtime::{Message, Signal};

impl DistInner {
    /// Act on a frame from `peer`.
    pub(super) fn dispatch(self: &Arc<Self>, peer: &Arc<Peer>, frame: Frame) {
        let Some(node) = self.node() else { return };
        if let Err(violation) = check_origin(peer, node.node_id, &frame) {
            tracing::error!(node = %peer.name, frame = frame.kind(), "protocol violation, closing the connection: {violation}");
            peer.connection.close(5u32.into(), b"protocol violation");
            return;
        }
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
                    payload,
                };
                node.counters
                    .remote_in
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
                    payload: payload.into(),
                };
                node.counters
                    .remote_in
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
                if !self.room_for_stake(peer) {
                    return;
                }
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
                if !self.room_for_stake(peer) {
                    return;
                }
                peer.stakes
                    .lock()
                    .expect("stakes poisoned")
                    .monitored_by
                    .insert(reference, (to, from));
                if node
                    .route(from, to, Signal::Monitor { from, reference })
                    .is_err()
                {
                    // No such process: no monitor to remember.
                    peer.stakes
                        .lock()
                        .expect("stakes poisoned")
                        .monitored_by
                        .remove(&reference);
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
                let result = crate::runtime::start_elsewhere(|| {
                    node.spawn(
                        &module,
                        args,
                        link.then_some(from),
                        monitor.map(|r| (r, from)),
                    )
                })
                .map_err(|e| {
                    // A local spawn does not reach other nodes.
                    SpawnFailure::of(e).expect("a local spawn fails locally")
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
                peer.control.push_frame(&Frame::SpawnReply { id, result });
            }
            Frame::Ping { id } => {
                peer.control.push_frame(&Frame::Pong { id });
            }
            Frame::Request { service, id, body } => {
                self.service_request(peer, service, id, body);
            }
            Frame::Notice { service, body } => self.service_notice(peer, service, &body),
            reply @ (Frame::SpawnReply { id, .. }
            | Frame::Pong { id }
            | Frame::Reply { id, .. }) => {
                if let Some(tx) = self.pending.lock().expect("pending poisoned").remove(&id) {
                    let _ = tx.send(reply);
                }
            }
            Frame::Peers { nodes } => {
                if self.config.hidden || peer.hidden {
                    return;
                }
                // Gossip is bounded: no more new connections than
                // `connections_max` leaves room for, no more addresses than
                // `addresses_max`; the rest of a long list is dropped.
                let connected = self.peers.read().expect("peers poisoned").len();
                let mut room = self.config.connections_max.saturating_sub(connected);
                let mut dropped = 0usize;
                for (name, addr) in nodes {
                    if name == self.name || self.peer(node_id(&name)).is_some() {
                        continue;
                    }
                    let Ok(addr) = addr.parse::<SocketAddr>() else {
                        continue;
                    };
                    if room == 0 || !self.learn_address(&name, addr, true) {
                        dropped += 1;
                        continue;
                    }
                    room -= 1;
                    let dist = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = dist.connect(&name).await {
                            tracing::debug!(node = %name, "mesh connection failed: {e}");
                        }
                    });
                }
                if dropped > 0 {
                    tracing::warn!(node = %peer.name, dropped, "gossiped nodes past connections_max or addresses_max dropped");
                }
            }
        }
    }
}

impl DistInner {
    /// Whether `peer` may hold one more link or monitor on this node's
    /// processes (`stakes_max`); past it the connection is closed, logged:
    /// no legitimate peer floods links and monitors.
    fn room_for_stake(&self, peer: &Peer) -> bool {
        let held = peer.stakes.lock().expect("stakes poisoned").len();
        if held < self.config.stakes_max {
            return true;
        }
        tracing::error!(node = %peer.name, held, "peer holds stakes_max links and monitors here; closing the connection");
        peer.connection.close(6u32.into(), b"stakes_max");
        false
    }
}

/// What a peer may not send: a message with a reserved tag (system
/// messages travel only as their own frames, and only this node writes
/// their payloads), a signal on behalf of a process of another node, or a
/// signal for a process of another node (nodes do not relay).
fn check_origin(peer: &Peer, this_node: u64, frame: &Frame) -> Result<(), String> {
    let of_peer = |pid: &Pid| pid.node == peer.node_id && pid.incarnation == peer.incarnation;
    let sender = |pid: &Pid| {
        if of_peer(pid) {
            Ok(())
        } else {
            Err(format!(
                "a {} from {pid}, not a process of {}",
                frame.kind(),
                peer.name
            ))
        }
    };
    let receiver = |pid: &Pid| {
        if pid.node == this_node {
            Ok(())
        } else {
            Err(format!(
                "a {} for {pid}, not a process of this node",
                frame.kind()
            ))
        }
    };
    let user_tag = |tag: u32| {
        if tag::is_user(tag) {
            Ok(())
        } else {
            Err(format!("a message with the reserved tag {tag:#x}"))
        }
    };
    match frame {
        Frame::Message { from, to, tag, .. } => {
            user_tag(*tag)?;
            // Messages sent from outside any process carry no sender.
            if *from != Pid::default() {
                sender(from)?;
            }
            receiver(to)
        }
        Frame::MessageNamed { from, tag, .. } => {
            user_tag(*tag)?;
            if *from != Pid::default() {
                sender(from)?;
            }
            Ok(())
        }
        Frame::Exit { from, to, .. }
        | Frame::Link { from, to }
        | Frame::Unlink { from, to }
        | Frame::Monitor { from, to, .. }
        | Frame::Demonitor { from, to, .. } => {
            sender(from)?;
            receiver(to)
        }
        Frame::Down { watcher, pid, .. } => {
            sender(pid)?;
            receiver(watcher)
        }
        Frame::SpawnRequest { from, .. } => sender(from),
        _ => Ok(()),
    }
}
