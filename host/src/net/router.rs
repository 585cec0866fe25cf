//! How the runtime reaches other nodes: the `Router` the node holds, and
//! the encoding of outgoing signals into frames on their lanes.

use std::sync::Weak;

use molt_abi::{Pid, Ref};

use super::DistInner;
use super::frame::Frame;
use super::lane::Pushed;
use crate::runtime::{BoxFuture, Message, Router, Signal, SpawnError, Undelivered, Wait};

/// The router the runtime holds: a weak handle, so the node does not keep
/// the distribution layer alive in a cycle.
pub(super) struct RouterHandle(pub(super) Weak<DistInner>);

impl Router for RouterHandle {
    fn route(&self, from: Pid, to: Pid, signal: Signal) -> Result<Option<Wait>, Undelivered> {
        match self.0.upgrade() {
            Some(dist) => dist.route(from, to, signal),
            None => Err(Undelivered::NoConnection),
        }
    }

    fn congested(&self, from: Pid, to: Pid) -> Option<Wait> {
        let peer = self.0.upgrade()?.peer(to.node)?;
        if !peer.lane(from, to).over_bound() {
            return None;
        }
        Some(Box::pin(async move {
            peer.lane(from, to).wait_for_room().await;
        }))
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
            if peer.lane(from, to).push_frame(&frame) == Pushed::Congested {
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
            dist.ask(&node, |id| Frame::Ping { id }).await.is_ok()
        })
    }

    fn monitor_node(&self, node: &str, watcher: Pid, on: bool) {
        if let Some(dist) = self.0.upgrade() {
            dist.monitor_node(node, watcher, on);
        }
    }
}

impl DistInner {
    /// Encode a signal for a remote pid and queue it on its lane, keeping
    /// the link and monitor bookkeeping.
    pub(super) fn route(
        &self,
        from: Pid,
        to: Pid,
        signal: Signal,
    ) -> Result<Option<Wait>, Undelivered> {
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
                    payload: message.payload,
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
                // Purge kills and system requests go to processes of this
                // node only; they never name a remote pid.
                Signal::Kill { .. } | Signal::System(_) | Signal::Inspect { .. } => {
                    return Err(Undelivered::NoProc);
                }
            }
        };
        if peer.lane(from, to).push_frame(&frame) == Pushed::Congested {
            let peer = peer.clone();
            return Ok(Some(Box::pin(async move {
                peer.lane(from, to).wait_for_room().await;
            })));
        }
        Ok(None)
    }
}
