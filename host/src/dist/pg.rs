//! Process groups across nodes: this node announces its own processes'
//! joins, leaves and ends to every visible peer, sends a peer all its
//! memberships when the connection is made, and applies what peers
//! announce. Eventually consistent, as Erlang's `pg`: a node's view of a
//! remote group lags by the time its frames take.
//!
//! Every pg frame travels on the control lane, so a peer applies one
//! node's changes in the order they were made. Announcements are pushed
//! with the runtime's groups locked (see `Router::pg_changed`), and the
//! sync to a new peer is built and pushed under the same lock after the
//! peer is in the table: a change is either in the sync or announced
//! after it, never lost nor applied twice (the first sync chunk replaces).

use std::sync::Arc;

use super::DistInner;
use super::frame::{self, Frame, PG_SYNC_CHUNK_MAX};
use super::peer::Peer;
use crate::runtime::PgChange;

impl DistInner {
    /// Announce a change to this node's memberships to every visible peer.
    pub(super) fn pg_changed(&self, change: PgChange<'_>) {
        if self.config.hidden {
            return;
        }
        let frame = match change {
            PgChange::Join { scope, group, pid } | PgChange::Leave { scope, group, pid } => {
                Frame::PgUpdate {
                    scope: scope.to_string(),
                    group: group.to_string(),
                    pid,
                    joined: matches!(change, PgChange::Join { .. }),
                }
            }
            PgChange::Gone { pid } => Frame::PgGone { pid },
        };
        let bytes = frame::encode(&frame);
        let peers = self.peers.read().expect("peers poisoned");
        for peer in peers.values().filter(|p| !p.hidden) {
            peer.control.push(bytes.clone());
        }
    }

    /// Send a new visible peer every membership of this node's processes.
    /// Called once the peer is in the table.
    pub(super) fn pg_sync_to(&self, peer: &Peer) {
        if self.config.hidden || peer.hidden {
            return;
        }
        let Some(node) = self.node() else { return };
        node.pg_with_local(|mine| {
            let mut chunks = mine.chunks(PG_SYNC_CHUNK_MAX);
            let first = chunks.next().unwrap_or(&[]);
            let send = |first: bool, part: &[crate::runtime::Membership]| {
                let frame = Frame::PgSync {
                    first,
                    memberships: part.to_vec(),
                };
                peer.control.push(frame::encode(&frame));
            };
            // Always one frame, even empty: it clears what the peer held
            // for an earlier incarnation of this node.
            send(true, first);
            for part in chunks {
                send(false, part);
            }
        });
    }

    /// Apply a pg frame from `peer`.
    pub(super) fn pg_dispatch(&self, peer: &Arc<Peer>, frame: Frame) {
        if self.config.hidden || peer.hidden {
            return;
        }
        let Some(node) = self.node() else { return };
        let from = (peer.node_id, peer.incarnation);
        match frame {
            Frame::PgUpdate {
                scope,
                group,
                pid,
                joined,
            } => {
                if let Err(e) = node.pg_remote_change(from, &scope, &group, pid, joined) {
                    tracing::warn!(node = %peer.name, %pid, scope, group, "remote pg join dropped: {e}");
                }
            }
            Frame::PgGone { pid } => node.pg_remote_gone(from, pid),
            Frame::PgSync { first, memberships } => {
                let dropped = node.pg_remote_sync(from, first, memberships);
                if dropped > 0 {
                    tracing::warn!(node = %peer.name, dropped, "remote pg memberships dropped at a limit");
                }
            }
            _ => debug_assert!(false, "not a pg frame"),
        }
    }

    /// `peer` is gone: its processes leave every group here.
    pub(super) fn pg_node_down(&self, peer: &Peer) {
        if let Some(node) = self.node() {
            node.pg_node_down((peer.node_id, peer.incarnation));
        }
    }
}
