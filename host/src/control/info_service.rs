//! The node-information service: what another node (a CLI, say) may ask
//! about this one, read-only: its connected nodes and its processes.

use std::sync::Arc;

use crate::net::wire::{InfoError, InfoReply, InfoRequest};
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

impl InfoService {
    /// The node, unless it is stopping.
    fn node(&self) -> Result<Node, InfoError> {
        self.node
            .upgrade()
            .ok_or_else(|| InfoError::NotDelivered("the node is stopping".into()))
    }
}

impl Service for InfoService {
    const ID: ServiceId = 3;
    const NAME: &'static str = "info";
    type Request = InfoRequest;
    type Reply = InfoReply;
    type Error = InfoError;
    type Notice = Never;

    async fn request(
        self: Arc<Self>,
        peer: PeerId,
        request: InfoRequest,
    ) -> Result<InfoReply, InfoError> {
        Ok(match request {
            InfoRequest::SendNamed {
                from,
                name,
                tag,
                payload,
            } => {
                let node = self.node()?;
                let to = node
                    .whereis(&name)
                    .ok_or_else(|| InfoError::NotRegistered(name.clone()))?;
                // As a message frame from the peer would be: only user
                // tags, and the sender must be one of its processes.
                if from.node != peer.node_id || !molt_abi::tag::is_user(tag) {
                    return Err(InfoError::NotDelivered(format!(
                        "a message from {from} with tag {tag:#x} is not the asker's to send"
                    )));
                }
                node.deliver_from(from, to, tag, payload)
                    .map_err(|e| InfoError::NotDelivered(e.to_string()))?;
                InfoReply::Sent
            }
            InfoRequest::Table(request) => {
                let node = self.node()?;
                InfoReply::Table(node.table(request).await)
            }
            InfoRequest::TableBackup { table, path } => {
                let node = self.node()?;
                let done = node.tables().backup(&table, std::path::Path::new(&path));
                InfoReply::Backup(crate::table::Covered::summary(done))
            }
            InfoRequest::TableReplica(table) => {
                let node = self.node()?;
                InfoReply::TableReplica(node.tables().replica_status(&table))
            }
            InfoRequest::ReplicaFailure(table) => {
                let node = self.node()?;
                InfoReply::ReplicaFailure(node.tables().replica_failure(&table))
            }
            InfoRequest::TableFailures => {
                let node = self.node()?;
                InfoReply::TableFailures(crate::control::table_failures(&node))
            }
            InfoRequest::TableRestore {
                table,
                path,
                rename,
            } => {
                let node = self.node()?;
                let done = node
                    .table_restore(&table, std::path::Path::new(&path), rename)
                    .await;
                InfoReply::Backup(crate::table::Covered::summary(done))
            }
            InfoRequest::TableBackupAll { path } => {
                let node = self.node()?;
                let done = node.tables().backup_all(std::path::Path::new(&path));
                InfoReply::BackupAll(crate::table::Covered::summaries(done))
            }
            InfoRequest::TableRestoreAll { path } => {
                let node = self.node()?;
                let done = node.table_restore_all(std::path::Path::new(&path)).await;
                InfoReply::BackupAll(crate::table::Covered::summaries(done))
            }
            InfoRequest::Nodes => InfoReply::Nodes(
                self.dist
                    .upgrade()
                    .map(|d| d.nodes_with_addresses())
                    .unwrap_or_default(),
            ),
            InfoRequest::Node => {
                let node = self.node()?;
                let dist = self.dist.upgrade();
                InfoReply::Node(crate::control::NodeReport::of(&node, dist.as_ref()))
            }
            InfoRequest::Process { pid, messages } => {
                let node = self.node()?;
                let detail = node.inspect(pid, messages as usize).await;
                InfoReply::Process(detail.map(|d| (d.info.into(), d.inspected)))
            }
            InfoRequest::TopProcesses {
                order,
                limit,
                search,
            } => {
                let node = self.node()?;
                let top = node.top_processes(order, limit as usize, search.as_deref());
                InfoReply::TopProcesses {
                    total: top.total,
                    matched: top.matched,
                    rows: top.processes.into_iter().map(Into::into).collect(),
                }
            }
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
