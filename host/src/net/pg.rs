//! Process groups across nodes, as a service on the seam: this node
//! announces its own processes' joins, leaves and ends to every visible
//! peer, sends a new peer all its memberships, and applies what peers
//! announce. Eventually consistent, as Erlang's `pg`: a node's view of a
//! remote group lags by the time its notices take.
//!
//! Notices to one peer arrive in order, so a peer applies one node's
//! changes in the order they were made. Announcements are sent with the
//! runtime's groups locked (the runtime calls [`PgObserver::changed`]
//! under its lock), and the sync to a new peer is built and sent under the
//! same lock once the peer is in the table: a change is either in the
//! sync or announced after it, never lost nor applied twice (the first
//! sync chunk replaces).

use std::sync::{OnceLock, Weak};

use super::service::{Never, PeerId, PeerLink, Service, ServiceClient, ServiceId};
use super::wire::PgNotice;
use crate::runtime::{Membership, NodeInner, PgChange, PgObserver};

/// Most memberships in one sync notice: about 550 KB at the longest
/// names, far below any sensible `frame_bytes_max`.
pub const PG_SYNC_CHUNK_MAX: usize = 1024;

/// The process-group service of one node.
pub(super) struct PgService {
    node: Weak<NodeInner>,
    /// A hidden node (a CLI) neither announces nor applies memberships.
    hidden: bool,
    client: OnceLock<ServiceClient<PgService>>,
}

impl PgService {
    pub(super) fn new(node: Weak<NodeInner>, hidden: bool) -> Self {
        PgService {
            node,
            hidden,
            client: OnceLock::new(),
        }
    }

    /// Start announcing: from now on local changes go to every peer.
    pub(super) fn started(&self, client: ServiceClient<PgService>) {
        let _ = self.client.set(client);
    }

    fn ignores(&self, peer: &PeerId) -> bool {
        self.hidden || peer.hidden
    }
}

impl PgObserver for PgService {
    fn changed(&self, change: PgChange<'_>) {
        if self.hidden {
            return;
        }
        let Some(client) = self.client.get() else {
            return;
        };
        let notice = match change {
            PgChange::Join { scope, group, pid } | PgChange::Leave { scope, group, pid } => {
                PgNotice::Update {
                    scope: scope.to_string(),
                    group: group.to_string(),
                    pid,
                    joined: matches!(change, PgChange::Join { .. }),
                }
            }
            PgChange::Gone { pid } => PgNotice::Gone(pid),
        };
        client.broadcast(&notice);
    }
}

impl Service for PgService {
    const ID: ServiceId = 1;
    const NAME: &'static str = "pg";
    type Request = Never;
    type Reply = Never;
    type Error = Never;
    type Notice = PgNotice;

    async fn request(
        self: std::sync::Arc<Self>,
        _: PeerId,
        request: Never,
    ) -> Result<Never, Never> {
        match request {}
    }

    fn notice(&self, peer: &PeerId, notice: PgNotice) {
        if self.ignores(peer) {
            return;
        }
        let Some(node) = self.node.upgrade() else {
            return;
        };
        let from = (peer.node_id, peer.incarnation);
        match notice {
            PgNotice::Update {
                scope,
                group,
                pid,
                joined,
            } => {
                if let Err(e) = node.pg_remote_change(from, &scope, &group, pid, joined) {
                    tracing::warn!(node = %peer.name, %pid, scope, group, "remote pg join dropped: {e}");
                }
            }
            PgNotice::Gone(pid) => node.pg_remote_gone(from, pid),
            PgNotice::Sync { first, memberships } => {
                let dropped = node.pg_remote_sync(from, first, memberships);
                if dropped > 0 {
                    tracing::warn!(node = %peer.name, dropped, "remote pg memberships dropped at a limit");
                }
            }
        }
    }

    /// Send a new visible peer every membership of this node's processes.
    fn peer_up(&self, link: &PeerLink<'_, Self>) {
        if self.ignores(link.peer()) {
            return;
        }
        let Some(node) = self.node.upgrade() else {
            return;
        };
        node.pg_with_local(|mine| {
            let mut chunks = mine.chunks(PG_SYNC_CHUNK_MAX);
            let first = chunks.next().unwrap_or(&[]);
            let send = |first: bool, part: &[Membership]| {
                link.notify(&PgNotice::Sync {
                    first,
                    memberships: part.to_vec(),
                });
            };
            // Always one notice, even empty: it clears what the peer held
            // for an earlier incarnation of this node.
            send(true, first);
            for part in chunks {
                send(false, part);
            }
        });
    }

    /// The peer is gone: its processes leave every group here.
    fn peer_down(&self, peer: &PeerId) {
        if let Some(node) = self.node.upgrade() {
            node.pg_node_down((peer.node_id, peer.incarnation));
        }
    }
}
