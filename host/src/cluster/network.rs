//! The coordination group on the wire: one service on the seam (id 4)
//! carries Raft's RPCs, proposals forwarded to the leader, joins, session
//! renewals and linearizable reads, over the nodes' existing
//! authenticated connections; and openraft's network factory sends
//! through it. Nothing new listens.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use molt_abi::Pid;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use super::Inner;
use super::command::{Outcome, Proposal, SessionId};
use super::state::ClusterId;
use super::types::{Coord, Member};
use crate::net::service::{CallError, PeerId, RequestError, Service, ServiceClient, ServiceId};

/// What a node asks another's coordination service.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum CoordRequest {
    /// Raft: replicate entries.
    Append(AppendEntriesRequest<Coord>),
    /// Raft: ask for a vote.
    Vote(VoteRequest<u64>),
    /// Raft: a snapshot chunk.
    Snapshot(InstallSnapshotRequest<Coord>),
    /// To the leader: commit this proposal.
    Propose(Proposal),
    /// To the leader: let this node in as a learner.
    Join {
        /// Its Raft id.
        member: u64,
        /// Its name and address.
        node: Member,
        /// The cluster its log belongs to, if it has one.
        cluster: Option<ClusterId>,
    },
    /// To the leader: this node's session is alive.
    KeepAlive(SessionId),
    /// To the leader: a linearizable `whereis`.
    Whereis(String),
    /// The group as the node sees it (`molt cluster`).
    Status,
    /// Registered names on the node's replica.
    Names,
    /// Locks on the node's replica.
    Locks,
    /// Elections on the node's replica.
    Elections,
    /// To the leader: take a node out of the group (voter or learner).
    Remove(String),
    /// To the leader: make a live learner a voter.
    AddVoter(String),
    /// To the leader: the log index it has applied, so that the asking
    /// node, once it applied that too, knows every change answered before
    /// it asked.
    ReadIndex,
}

/// The answer to a [`CoordRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum CoordReply {
    /// To `Append`.
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    /// To `Vote`.
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    /// To `Snapshot`.
    Snapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// To `Propose`: committed and applied on the leader.
    Proposed(Outcome),
    /// To `Join`: added as a learner of this cluster.
    Joined(ClusterId),
    /// To `KeepAlive`.
    Alive,
    /// To `Whereis`.
    Whereis(Option<Pid>),
    /// To `Status`.
    Status(Box<super::ClusterStatus>),
    /// To `Names`.
    Names(Vec<super::NameStatus>),
    /// To `Locks`.
    Locks(Vec<super::LockStatus>),
    /// To `Elections`.
    Elections(Vec<super::ElectionStatus>),
    /// To `Remove`: the ids removed.
    Removed(Vec<u64>),
    /// To `AddVoter`: the voters' names after the change.
    Voters(Vec<String>),
    /// To `ReadIndex`.
    ReadIndex(u64),
}

/// Why the coordination service refused a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CoordError {
    /// This node does not lead the group; `leader` does, if known.
    #[error("not the coordination leader (the leader is {})", leader.as_deref().unwrap_or("unknown"))]
    NotLeader {
        /// The leader's name.
        leader: Option<String>,
    },
    /// The node runs no coordination group.
    #[error("coordination is not running on this node")]
    NotRunning,
    /// The joining node's log belongs to another cluster.
    #[error(
        "{node} belongs to cluster {theirs}; this is cluster {ours}: start it with an empty --data-dir to join"
    )]
    OtherCluster {
        /// The joining node.
        node: String,
        /// Its cluster.
        theirs: ClusterId,
        /// This one.
        ours: ClusterId,
    },
    /// The group could not do it: the reason, as openraft gave it.
    #[error("{0}")]
    Raft(String),
    /// The session has ended.
    #[error("{0} has ended")]
    UnknownSession(SessionId),
}

/// The coordination service of one node.
#[derive(Default)]
pub struct CoordService {
    pub(super) inner: OnceLock<Weak<Inner>>,
}

impl CoordService {
    /// The service of a node whose coordination has not started (yet).
    pub fn new() -> CoordService {
        CoordService::default()
    }

    /// This node's coordination, if it runs.
    pub fn local(&self) -> Option<super::Coordination> {
        self.inner
            .get()
            .and_then(Weak::upgrade)
            .map(|inner| super::Coordination { inner })
    }

    fn inner(&self) -> Result<Arc<Inner>, CoordError> {
        self.local().map(|c| c.inner).ok_or(CoordError::NotRunning)
    }
}

impl Service for CoordService {
    const ID: ServiceId = 4;
    const NAME: &'static str = "coord";
    type Request = CoordRequest;
    type Reply = CoordReply;
    type Error = CoordError;
    type Notice = crate::net::service::Never;

    async fn request(
        self: Arc<Self>,
        peer: PeerId,
        request: CoordRequest,
    ) -> Result<CoordReply, CoordError> {
        let inner = self.inner()?;
        inner.serve(peer, request).await
    }
}

/// A failed call to another member, as openraft takes it: a member that
/// cannot be reached is `Unreachable` (openraft backs off), anything
/// else a network error.
pub(crate) fn rpc_error<X, E>(e: CallError<X>) -> RPCError<u64, Member, E>
where
    X: std::error::Error + 'static,
    E: std::error::Error,
{
    match e {
        CallError::Request(RequestError::Connect(e)) => RPCError::Unreachable(Unreachable::new(&e)),
        e => RPCError::Network(NetworkError::new(&e)),
    }
}

/// openraft's way to reach other members: through the service.
pub struct Network {
    pub(super) client: ServiceClient<CoordService>,
    pub(super) dist: crate::net::WeakDistribution,
}

impl RaftNetworkFactory<Coord> for Network {
    type Network = Link;

    async fn new_client(&mut self, target: u64, node: &Member) -> Link {
        if let (Some(dist), Ok(addr)) = (self.dist.upgrade(), node.addr.parse()) {
            dist.learn_address(&node.name, addr);
        }
        Link {
            client: self.client.clone(),
            target,
            name: node.name.clone(),
        }
    }
}

/// A connection to one member, as openraft sees it.
pub struct Link {
    client: ServiceClient<CoordService>,
    target: u64,
    name: String,
}

impl Link {
    async fn call<E: std::error::Error>(
        &self,
        request: CoordRequest,
        ttl: Duration,
    ) -> Result<CoordReply, RPCError<u64, Member, E>> {
        self.client
            .call_within(&self.name, ttl, &request)
            .await
            .map_err(rpc_error)
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<u64, Member, E> {
        RPCError::Network(NetworkError::new(&CoordError::Raft(format!(
            "{} answered a Raft request with the wrong reply",
            self.name
        ))))
    }
}

impl RaftNetwork<Coord> for Link {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Coord>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        match self
            .call(CoordRequest::Append(rpc), option.hard_ttl())
            .await?
        {
            CoordReply::Append(Ok(r)) => Ok(r),
            CoordReply::Append(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<Coord>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, Member, RaftError<u64, InstallSnapshotError>>,
    > {
        match self
            .call(CoordRequest::Snapshot(rpc), option.hard_ttl())
            .await?
        {
            CoordReply::Snapshot(Ok(r)) => Ok(r),
            CoordReply::Snapshot(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        match self
            .call(CoordRequest::Vote(rpc), option.hard_ttl())
            .await?
        {
            CoordReply::Vote(Ok(r)) => Ok(r),
            CoordReply::Vote(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }
}
