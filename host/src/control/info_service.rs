//! The node-information service: what another node (a CLI, say) may ask
//! about this one, read-only: its connected nodes and its processes.

use std::sync::Arc;

use crate::net::wire::{InfoReply, InfoRequest};
use crate::net::{Distribution, Never, PeerId, Service, ServiceId, WeakDistribution};
use crate::runtime::{Node, WeakNode};

/// The node-information service of one node.
pub(crate) struct InfoService {
    /// Weak, both: the distribution layer holds this service.
    node: WeakNode,
    dist: WeakDistribution,
}

impl InfoService {
    pub(crate) fn new(node: &Node, dist: &Distribution) -> Self {
        InfoService {
            node: node.downgrade(),
            dist: dist.downgrade(),
        }
    }
}

impl Service for InfoService {
    const ID: ServiceId = 3;
    const NAME: &'static str = "info";
    type Request = InfoRequest;
    type Reply = InfoReply;
    type Error = Never;
    type Notice = Never;

    async fn request(self: Arc<Self>, _: PeerId, request: InfoRequest) -> Result<InfoReply, Never> {
        Ok(match request {
            InfoRequest::Nodes => InfoReply::Nodes(
                self.dist
                    .upgrade()
                    .map(|d| d.nodes_with_addresses())
                    .unwrap_or_default(),
            ),
            InfoRequest::Processes => InfoReply::Processes(
                self.node
                    .upgrade()
                    .map(|n| n.processes())
                    .unwrap_or_default()
                    .into_iter()
                    .map(Into::into)
                    .collect(),
            ),
        })
    }
}
