//! The coordination group through the control layer: its status, names,
//! locks and elections as any node of the cluster sees them, and taking a
//! node out of it. A question about this node is answered by its own
//! coordination; one about another node goes to that node's coordination
//! service.

use super::Control;
use crate::cluster::{
    ClusterStatus, CoordError, CoordReply, CoordRequest, Coordination, ElectionStatus, LockStatus,
    NameStatus,
};
use crate::net::{CallError, RequestError};

/// Why a coordination question got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CoordQueryError {
    /// The node runs no coordination group.
    #[error("{0} runs no coordination group")]
    NotRunning(String),
    /// The node refused.
    #[error("{node}: {error}")]
    Refused {
        /// The node.
        node: String,
        /// What it said.
        error: CoordError,
    },
    /// No answer from the node.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// An answer of the wrong kind.
    #[error("{0} answered with the wrong reply")]
    Unexpected(String),
}

impl Control {
    /// This node's coordination, if it runs one.
    pub fn coordination(&self) -> Option<Coordination> {
        self.coord.as_ref().and_then(|s| s.local())
    }

    async fn ask_coord(
        &self,
        node: &str,
        request: CoordRequest,
    ) -> Result<CoordReply, CoordQueryError> {
        let cluster = self
            .cluster(node)
            .map_err(|e| CoordQueryError::Request(RequestError::Connect(e)))?;
        match cluster.coord.call(node, &request).await {
            Ok(reply) => Ok(reply),
            Err(CallError::Remote(CoordError::NotRunning)) => {
                Err(CoordQueryError::NotRunning(node.to_string()))
            }
            Err(CallError::Remote(error)) => Err(CoordQueryError::Refused {
                node: node.to_string(),
                error,
            }),
            Err(CallError::Request(e)) => Err(e.into()),
        }
    }

    fn local_coord(&self) -> Result<Coordination, CoordQueryError> {
        self.coordination()
            .ok_or_else(|| CoordQueryError::NotRunning(self.name().to_string()))
    }

    /// The coordination group as `node` sees it.
    pub async fn cluster_status(&self, node: &str) -> Result<ClusterStatus, CoordQueryError> {
        if self.is_here(node) {
            return Ok(self.local_coord()?.status());
        }
        match self.ask_coord(node, CoordRequest::Status).await? {
            CoordReply::Status(status) => Ok(*status),
            _ => Err(CoordQueryError::Unexpected(node.to_string())),
        }
    }

    /// The cluster names on `node`'s replica.
    pub async fn global_names(&self, node: &str) -> Result<Vec<NameStatus>, CoordQueryError> {
        if self.is_here(node) {
            return Ok(self.local_coord()?.names());
        }
        match self.ask_coord(node, CoordRequest::Names).await? {
            CoordReply::Names(names) => Ok(names),
            _ => Err(CoordQueryError::Unexpected(node.to_string())),
        }
    }

    /// The cluster locks on `node`'s replica.
    pub async fn global_locks(&self, node: &str) -> Result<Vec<LockStatus>, CoordQueryError> {
        if self.is_here(node) {
            return Ok(self.local_coord()?.locks());
        }
        match self.ask_coord(node, CoordRequest::Locks).await? {
            CoordReply::Locks(locks) => Ok(locks),
            _ => Err(CoordQueryError::Unexpected(node.to_string())),
        }
    }

    /// The elections on `node`'s replica.
    pub async fn elections(&self, node: &str) -> Result<Vec<ElectionStatus>, CoordQueryError> {
        if self.is_here(node) {
            return Ok(self.local_coord()?.elections());
        }
        match self.ask_coord(node, CoordRequest::Elections).await? {
            CoordReply::Elections(e) => Ok(e),
            _ => Err(CoordQueryError::Unexpected(node.to_string())),
        }
    }

    /// Take `member` out of the coordination group, asking `node` (or the
    /// leader it names). Returns the Raft ids removed.
    pub async fn remove_member(
        &self,
        node: &str,
        member: &str,
    ) -> Result<Vec<u64>, CoordQueryError> {
        match self
            .ask_leader(node, CoordRequest::Remove(member.to_string()))
            .await?
        {
            (CoordReply::Removed(ids), _) => Ok(ids),
            (_, leader) => Err(CoordQueryError::Unexpected(leader)),
        }
    }

    /// Make `member`, a learner that is up, a voter of the coordination
    /// group, asking `node` (or the leader it names). Returns the voters'
    /// names after the change.
    pub async fn add_voter(
        &self,
        node: &str,
        member: &str,
    ) -> Result<Vec<String>, CoordQueryError> {
        match self
            .ask_leader(node, CoordRequest::AddVoter(member.to_string()))
            .await?
        {
            (CoordReply::Voters(names), _) => Ok(names),
            (_, leader) => Err(CoordQueryError::Unexpected(leader)),
        }
    }

    /// Ask `node` a leader's question, following it to the leader it names
    /// (up to three hops): the answer and who gave it.
    async fn ask_leader(
        &self,
        node: &str,
        request: CoordRequest,
    ) -> Result<(CoordReply, String), CoordQueryError> {
        let mut target = node.to_string();
        for _ in 0..3 {
            match self.ask_coord(&target, request.clone()).await {
                Ok(reply) => return Ok((reply, target)),
                Err(CoordQueryError::Refused {
                    error:
                        CoordError::NotLeader {
                            leader: Some(leader),
                        },
                    ..
                }) if leader != target => target = leader,
                Err(e) => return Err(e),
            }
        }
        Err(CoordQueryError::Unexpected(target))
    }
}
