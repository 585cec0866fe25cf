//! Cluster coordination on consensus: one Raft group per cluster
//! (openraft, its log in redb) holding node sessions, cluster-wide names,
//! locks with FIFO queues and fencing tokens, and leader elections.
//!
//! What it guarantees, and how (see `COORDINATION.md` for the design):
//! - A name is registered compare-and-set: two registrars, one wins, the
//!   other is told who holds it. Nothing is ever killed to resolve a clash.
//! - A lock is granted in the order it was asked for, with a token larger
//!   than every token before it. `lock` takes a set at once, so sets never
//!   deadlock.
//! - An election has at most one leader per term; the term is a token.
//! - Every call that needs a quorum answers within `quorum_timeout`: with
//!   its outcome or with [`GlobalError::NoQuorum`]. A call that timed out
//!   may still take effect; if it does, this node undoes it (a late
//!   registration is unregistered, a late grant released), so nothing is
//!   held by a caller who was told it failed.
//! - What a process holds is freed when it ends, and everything a node
//!   held when its session expires (`session_ttl` after its last renewal
//!   reached the leader). A node that cannot renew tells its own holders
//!   first (`lock_lost`, `leader_lost`), at 3/5 of the TTL.
//! - `whereis` answers from this node's replica (it may lag the leader by
//!   the time an entry takes to reach it); `whereis_linearizable` asks the
//!   leader, which confirms it still leads before answering.
//!
//! Invariant: replicated state changes only in `state.rs`, on committed
//! entries; nothing here bypasses the log.

mod command;
mod config;
mod group;
mod machine;
pub(crate) mod network;
mod state;
pub(crate) mod store;
#[cfg(test)]
pub(crate) mod tests;
mod types;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use molt_abi::Pid;
use openraft::{Raft, ServerState};
use serde::{Deserialize, Serialize};

pub use self::command::{Grant, Limit, LockMode, LockRequest, SessionId};
pub use self::config::{CoordConfig, CoordLimits, LogMode};
pub use self::network::{CoordError, CoordReply, CoordRequest, CoordService};
pub use self::state::ClusterId;
pub use self::store::OpenError;
pub use self::types::Member;

pub(crate) use self::command::{Command, TableOutcome};
pub(crate) use self::state::TableEntry;

use self::command::{NameOutcome, Outcome};
use self::group::{Hook, Inner, Unavailable};
use self::machine::Machine;
use self::network::Network;
use self::store::{Identity, Storage};
use crate::net::service::{CallError, RegisterError};
use crate::net::{ConnectError, Distribution, parse_node_address};
use crate::runtime::Node;

/// Why the coordination group could not start.
#[derive(Debug, thiserror::Error)]
pub enum CoordStartError {
    /// The log could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The service id is taken.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// A setting is out of range.
    #[error("coordination settings: {0}")]
    Config(String),
    /// openraft refused to start.
    #[error("the coordination group did not start: {0}")]
    Raft(String),
    /// The node to join could not be reached.
    #[error("cannot reach {peer} to join its cluster: {source}")]
    Connect {
        /// The node.
        peer: String,
        /// Why.
        source: ConnectError,
    },
    /// The node to join refused.
    #[error("{peer} refused to let this node join: {source}")]
    Refused {
        /// The node.
        peer: String,
        /// Why.
        source: CoordError,
    },
    /// No answer in time.
    #[error("{peer} did not let this node join within {waited:?}: {last}")]
    JoinTimeout {
        /// The node.
        peer: String,
        /// How long this node tried.
        waited: Duration,
        /// The last error.
        last: String,
    },
}

/// Why a coordination call failed. Each is a clear status for a guest
/// and a clear message for the CLI; none disturbs anything else.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GlobalError {
    /// No quorum answered in time (this node is on a minority side, or the
    /// group is electing a leader). The call may still take effect; if it
    /// does, it is undone.
    #[error("no quorum: the coordination group did not commit within {0:?}")]
    NoQuorum(Duration),
    /// Coordination has stopped on this node (shut down, or its log
    /// failed).
    #[error("{0}")]
    Stopped(String),
    /// A name, lock or group that is empty or longer than
    /// `name_bytes_max`.
    #[error("bad name {name:?}: a name is 1 to {max} bytes")]
    BadName {
        /// The name, cut to 64 characters.
        name: String,
        /// The limit.
        max: usize,
    },
    /// Another process holds the name.
    #[error("already registered by {holder}")]
    AlreadyRegistered {
        /// The holder.
        holder: Pid,
    },
    /// Nobody holds the name.
    #[error("not registered")]
    NotRegistered,
    /// Another process holds the name.
    #[error("the name is held by {holder}, not by the caller")]
    NotHolder {
        /// The holder.
        holder: Pid,
    },
    /// A limit of the replicated state was reached; nothing changed.
    #[error("limit reached: {0}")]
    Limit(Limit),
    /// The locks were not granted within the caller's timeout.
    #[error("not granted within {0:?}")]
    Timeout(Duration),
    /// The process does not hold the lock.
    #[error("lock {0:?} is not held by the caller")]
    NotHeld(String),
    /// A lock request names a lock twice.
    #[error("lock {0:?} is asked for twice")]
    Duplicate(String),
    /// The process already holds a lock it asked for.
    #[error("the caller already holds lock {0:?}")]
    AlreadyHeld(String),
    /// Too many locks in one request.
    #[error("{count} locks in one request (locks_per_request_max is {max})")]
    TooManyLocks {
        /// How many were asked for.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// No lock asked for.
    #[error("a lock request names no lock")]
    NoLocks,
    /// The process is not a candidate in the election.
    #[error("not a candidate")]
    NotCandidate,
    /// The node's session ended while the call was made; try again.
    #[error("this node's coordination session ended; try again")]
    SessionLost,
    /// The process is not on this node.
    #[error("{0} is not a process of this node")]
    NotLocal(Pid),
}

impl From<Unavailable> for GlobalError {
    fn from(u: Unavailable) -> Self {
        match u {
            Unavailable::NoQuorum(d) => GlobalError::NoQuorum(d),
            Unavailable::Stopped(why) => GlobalError::Stopped(why),
        }
    }
}

/// The state of the coordination group as one node sees it (`molt
/// cluster`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The cluster, once bootstrapped.
    pub cluster: Option<ClusterId>,
    /// The node that answered.
    pub node: String,
    /// Its Raft id.
    pub member: u64,
    /// Its role: leader, follower, candidate or learner.
    pub role: String,
    /// The current Raft term.
    pub term: u64,
    /// The leader's name, if known.
    pub leader: Option<String>,
    /// Voters, by name.
    pub voters: Vec<MemberStatus>,
    /// Learners, by name.
    pub learners: Vec<MemberStatus>,
    /// The last index in this node's log.
    pub last_log_index: Option<u64>,
    /// The last index applied here.
    pub applied_index: Option<u64>,
    /// Open sessions.
    pub sessions: Vec<SessionStatus>,
    /// `disc` or `ram`.
    pub log_mode: String,
    /// This node's own session, if it holds one (none while it is fenced
    /// or has not opened one yet).
    pub session: Option<u64>,
    /// On a leader: milliseconds since a quorum last acknowledged it (a
    /// leader cut off from its followers still says `leader` until it
    /// hears of a successor; this says how long it has been alone).
    pub quorum_ack_ms: Option<u64>,
    /// The voters are being changed (Raft's joint consensus: both the old
    /// and the new set must agree until the new one is committed).
    pub changing: bool,
}

impl ClusterStatus {
    /// Whether the group has `count` voters as this node sees it, with no
    /// change of voters under way (while one is, the old set must agree
    /// too: a founder alone in it that stops leaves the others unable to
    /// elect).
    pub fn has_settled_voters(&self, count: usize) -> bool {
        self.voters.len() == count && !self.changing
    }
}

/// One member of the group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Its Raft id.
    pub id: u64,
    /// Its node name.
    pub name: String,
    /// Its address.
    pub addr: String,
    /// The last index the leader knows it holds (on the leader only).
    pub matched: Option<u64>,
}

/// One node session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStatus {
    /// Its id.
    pub id: u64,
    /// Its node.
    pub node: String,
}

/// One registered name (`molt names`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameStatus {
    /// The name.
    pub name: String,
    /// Its holder.
    pub pid: Pid,
    /// The registration's token.
    pub token: u64,
}

/// One lock (`molt locks`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockStatus {
    /// The lock.
    pub lock: String,
    /// Holders: pid, mode, token.
    pub holders: Vec<(Pid, LockMode, u64)>,
    /// Waiters in order: pid and mode.
    pub queue: Vec<(Pid, LockMode)>,
}

/// One election (`molt elections`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionStatus {
    /// The election.
    pub group: String,
    /// Its leader and term.
    pub leader: Option<(Pid, u64)>,
    /// Candidates in line.
    pub candidates: Vec<Pid>,
}

/// A handle on a node's coordination that does not keep it alive.
#[derive(Clone)]
pub(crate) struct WeakCoordination(std::sync::Weak<Inner>);

impl WeakCoordination {
    /// Coordination, if it still runs.
    pub(crate) fn upgrade(&self) -> Option<Coordination> {
        self.0.upgrade().map(|inner| Coordination { inner })
    }
}

/// One node's part in the cluster's coordination group. Cheap to clone.
#[derive(Clone)]
pub struct Coordination {
    inner: Arc<Inner>,
}

impl Coordination {
    /// Start coordination on `node`: with `join` (`name@host:port`), join
    /// that node's cluster as a learner; without, bootstrap a one-node
    /// cluster (or, with a log from an earlier run, go on with it).
    pub async fn start(
        node: &Node,
        dist: &Distribution,
        config: CoordConfig,
        join: Option<&str>,
    ) -> Result<Coordination, CoordStartError> {
        if config.session_ttl < Duration::from_millis(100) {
            return Err(CoordStartError::Config(
                "session_ttl is below 100 ms".into(),
            ));
        }
        let (service, client) = dist.service_or_register(CoordService::new)?;
        let name = dist.name().to_string();
        let fresh_id = random_u64();
        let storage = match config.log_mode {
            LogMode::Disc => Storage::open(&config.data_dir, &name, fresh_id)?,
            LogMode::Ram => Storage::in_memory(Identity {
                member: fresh_id,
                node: name.clone(),
            }),
        };
        let me = storage.identity.member;
        let machine = Machine::new(storage.clone(), config.limits.clone()).map_err(|why| {
            CoordStartError::Open(OpenError::Corrupt {
                path: config.data_dir.display().to_string(),
                what: "the snapshot".into(),
                why,
            })
        })?;
        let raft_config = config.raft("molt").map_err(CoordStartError::Config)?;
        let network = Network {
            client: client.clone(),
            dist: dist.downgrade(),
        };
        let raft = Raft::new(
            me,
            Arc::new(raft_config),
            network,
            storage.clone(),
            machine.clone(),
        )
        .await
        .map_err(|e| CoordStartError::Raft(e.to_string()))?;
        let member = Member {
            name: name.clone(),
            addr: dist.local_addr().to_string(),
        };
        let (_, incarnation) = node.identity();
        let inner = Arc::new(Inner::new(
            raft,
            me,
            member,
            incarnation,
            node.downgrade(),
            client,
            machine.replica(),
            storage,
            config,
        ));
        let _ = service.inner.set(Arc::downgrade(&inner));
        machine.observe(Arc::new(Hook(Arc::downgrade(&inner))));
        node.inner()
            .set_exit_observer(Arc::new(Hook(Arc::downgrade(&inner))));
        node.inner()
            .set_coordinator(Arc::new(GuestGate(Arc::downgrade(&inner))));
        let coordination = Coordination { inner };
        let started = match join {
            None => coordination.bootstrap().await,
            Some(peer) => coordination.join(dist, peer).await,
        };
        if let Err(e) = started {
            coordination.shutdown().await;
            return Err(e);
        }
        tokio::spawn(coordination.inner.clone().keep_session());
        tokio::spawn(coordination.inner.clone().lead());
        let replication = crate::table::replication::Replication::start(node, dist, &coordination)?;
        let _ = coordination.inner.replication.set(replication);
        Ok(coordination)
    }

    async fn bootstrap(&self) -> Result<(), CoordStartError> {
        let inner = &self.inner;
        let raft_err = |e: &dyn std::fmt::Display| CoordStartError::Raft(e.to_string());
        if !inner
            .raft
            .is_initialized()
            .await
            .map_err(|e| raft_err(&e))?
        {
            let mut members = BTreeMap::new();
            members.insert(inner.me, inner.member.clone());
            inner
                .raft
                .initialize(members)
                .await
                .map_err(|e| raft_err(&e))?;
            tracing::info!(node = %inner.member.name, "bootstrapped a one-node coordination group");
        }
        if inner.cluster_id().is_none() {
            // Only the founder's first entries can lack it: it leads alone.
            inner
                .raft
                .wait(Some(Duration::from_secs(10)))
                .state(ServerState::Leader, "bootstrap")
                .await
                .map_err(|e| raft_err(&e))?;
            let cluster = ClusterId {
                id: random_u64(),
                founder: inner.member.name.clone(),
            };
            inner
                .propose(Command::Bootstrap { cluster })
                .await
                .map_err(|e| raft_err(&GlobalError::from(e)))?;
        }
        Ok(())
    }

    async fn join(&self, dist: &Distribution, peer: &str) -> Result<(), CoordStartError> {
        let inner = &self.inner;
        let (given, _) = parse_node_address(peer).map_err(|source| CoordStartError::Connect {
            peer: peer.to_string(),
            source,
        })?;
        let mut target = given.clone();
        dist.join(peer)
            .await
            .map_err(|source| CoordStartError::Connect {
                peer: peer.to_string(),
                source,
            })?;
        let started = std::time::Instant::now();
        let patience = inner.config.quorum_timeout * 5;
        let mut last = String::new();
        while started.elapsed() < patience {
            let request = CoordRequest::Join {
                member: inner.me,
                node: inner.member.clone(),
                cluster: inner.cluster_id(),
            };
            // One request does not spend all the patience: a request or
            // reply lost while the group is starting (a whole cluster's
            // restart) is asked again. Joining again is harmless.
            let attempt =
                (inner.config.quorum_timeout * 2).min(patience.saturating_sub(started.elapsed()));
            match inner.client.call_within(&target, attempt, &request).await {
                Ok(_) => {
                    tracing::info!(via = %target, "joined the coordination group");
                    return Ok(());
                }
                // Follow the leader it names, once: a hint can be stale
                // (after a whole cluster's restart each node's vote may
                // still name the leader of before, even this node).
                Err(CallError::Remote(CoordError::NotLeader {
                    leader: Some(leader),
                })) if target == given && leader != inner.member.name => {
                    target = leader;
                    continue;
                }
                // A member restarted over its log may lead again at once
                // (the vote it kept was its own): if the node it joins
                // through names it and is of its cluster, it is in.
                Err(CallError::Remote(CoordError::NotLeader {
                    leader: Some(leader),
                })) if leader == inner.member.name
                    && inner.leader().is_some_and(|(id, _)| id == inner.me)
                    && self.same_cluster(&target).await =>
                {
                    tracing::info!(via = %target, "leads the coordination group again");
                    return Ok(());
                }
                Err(CallError::Remote(
                    e @ (CoordError::OtherCluster { .. } | CoordError::NotRunning),
                )) => {
                    return Err(CoordStartError::Refused {
                        peer: target,
                        source: e,
                    });
                }
                Err(e) => {
                    last = format!("{target}: {e}");
                    target = given.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(CoordStartError::JoinTimeout {
            peer: target,
            waited: started.elapsed(),
            last,
        })
    }

    /// Whether `peer` says it belongs to this node's cluster.
    async fn same_cluster(&self, peer: &str) -> bool {
        let ours = self.inner.cluster_id();
        matches!(
            self.inner.client.call(peer, &CoordRequest::Status).await,
            Ok(CoordReply::Status(status)) if ours.is_some() && status.cluster == ours
        )
    }

    /// Stop taking part: end this node's session (if a quorum answers in
    /// time) and stop Raft.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        if inner.stopped.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        if let Some(replication) = inner.replication.get() {
            replication.shutdown().await;
        }
        let session = self.session_id();
        if let Some(session) = session {
            let _ = tokio::time::timeout(
                inner.config.quorum_timeout,
                inner.propose(Command::CloseSession { session }),
            )
            .await;
        }
        inner
            .stopped
            .store(true, std::sync::atomic::Ordering::Release);
        inner.stop.notify_waiters();
        let _ = inner.raft.shutdown().await;
        inner.storage.close().await;
    }

    /// The replicated tables' definitions, on this node's replica.
    pub(crate) fn table_entries(&self) -> BTreeMap<String, TableEntry> {
        self.inner.state().state.tables.clone()
    }

    /// The last coordination log index applied on this node (the table
    /// definitions read after it are at least as recent).
    pub(crate) fn applied_index(&self) -> u64 {
        self.inner.applied_index()
    }

    /// One replicated table's definition, on this node's replica.
    pub(crate) fn table_entry(&self, name: &str) -> Option<TableEntry> {
        self.inner.state().state.tables.get(name).cloned()
    }

    /// The names of the replicated tables that start with `prefix`, in
    /// name order (a fragmented table's fragments).
    pub(crate) fn tables_starting(&self, prefix: &str) -> Vec<String> {
        self.inner
            .state()
            .state
            .tables
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Whether a replicated table of that name is defined (on this node's
    /// replica).
    pub(crate) fn has_table(&self, name: &str) -> bool {
        self.inner.state().state.tables.contains_key(name)
    }

    /// Wait (up to the quorum timeout) until this node's replica has
    /// applied what the leader had when asked. Then what the replica says
    /// of names and tables is as new as any change answered before this
    /// call (unless the leader was deposed and did not know it yet: this
    /// is for catching up, not a linearizable read). Whether it did.
    pub(crate) async fn caught_up(&self) -> bool {
        let inner = &self.inner;
        let started = std::time::Instant::now();
        // `None`: this node leads, and has applied what it answered.
        let index = inner
            .until_answered(|left| async move {
                match inner.leader() {
                    Some((id, _)) if id == inner.me => Ok(None),
                    Some((_, leader)) => match inner
                        .call(&leader.name, left, &CoordRequest::ReadIndex)
                        .await?
                    {
                        CoordReply::ReadIndex(index) => Ok(Some(index)),
                        _ => Err(CoordError::Raft("wrong reply".into())),
                    },
                    None => Err(CoordError::NotLeader { leader: None }),
                }
            })
            .await;
        match index {
            Ok(None) => true,
            Ok(Some(index)) => {
                let left = inner
                    .config
                    .quorum_timeout
                    .saturating_sub(started.elapsed());
                inner.applied_at_least(index, left).await
            }
            Err(_) => false,
        }
    }

    /// Changes whenever the replicated tables' definitions may have.
    pub(crate) fn tables_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.tables_changed.subscribe()
    }

    /// Commit a table command through the group.
    pub(crate) async fn propose_table(
        &self,
        command: Command,
    ) -> Result<TableOutcome, GlobalError> {
        match self.inner.propose(command).await? {
            Outcome::Table(outcome) => Ok(outcome),
            Outcome::Limit(limit) => Err(GlobalError::Limit(limit)),
            other => Err(GlobalError::Stopped(format!(
                "a table command was answered {other:?}"
            ))),
        }
    }

    /// The group's members (voters and learners), as this node knows
    /// them.
    pub(crate) fn members(&self) -> Vec<Member> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        metrics
            .membership_config
            .nodes()
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// The settings it runs with.
    pub(crate) fn config(&self) -> &CoordConfig {
        &self.inner.config
    }

    /// A handle that does not keep coordination alive.
    pub(crate) fn downgrade(&self) -> WeakCoordination {
        WeakCoordination(Arc::downgrade(&self.inner))
    }

    /// This node's Raft id.
    pub fn member_id(&self) -> u64 {
        self.inner.me
    }

    /// This node's session, if it has one now.
    pub fn session_id(&self) -> Option<SessionId> {
        self.inner.current_session()
    }

    /// Wait until this node has a session (it needs one to register,
    /// lock or stand).
    pub async fn ready(&self) -> Result<SessionId, GlobalError> {
        Ok(self.inner.session().await?)
    }

    /// The cluster this node belongs to (once its log says).
    pub fn cluster(&self) -> Option<ClusterId> {
        self.inner.cluster_id()
    }

    /// Resolves when the coordination log failed: the reason. A node
    /// should stop then; calls already fail with [`GlobalError::Stopped`].
    pub async fn failed(&self) -> String {
        let mut failure = self.inner.storage.failure();
        loop {
            if let Some(why) = failure.borrow().clone() {
                return why;
            }
            if failure.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    fn check_name(&self, name: &str) -> Result<(), GlobalError> {
        let max = self.inner.config.limits.name_bytes_max;
        if name.is_empty() || name.len() > max {
            return Err(GlobalError::BadName {
                name: name.chars().take(64).collect(),
                max,
            });
        }
        Ok(())
    }

    fn check_local(&self, pid: Pid) -> Result<(), GlobalError> {
        match self.inner.node.upgrade() {
            Some(node) if node.is_local(pid) => Ok(()),
            _ => Err(GlobalError::NotLocal(pid)),
        }
    }

    /// Erlang's `global:register_name`: register `name` for `pid` (a
    /// process of this node) if no process holds it. Returns the
    /// registration's token.
    pub async fn register(&self, name: &str, pid: Pid) -> Result<u64, GlobalError> {
        self.check_name(name)?;
        self.check_local(pid)?;
        let session = self.inner.session().await?;
        let command = Command::Register {
            name: name.to_string(),
            pid,
            session,
        };
        match self.inner.propose(command).await? {
            // Registered under a session this node has lost since: the
            // session's end frees it.
            Outcome::Name(NameOutcome::Registered { .. } | NameOutcome::Reregistered { .. })
                if self.inner.current_session() != Some(session) =>
            {
                Err(GlobalError::SessionLost)
            }
            Outcome::Name(
                NameOutcome::Registered { token } | NameOutcome::Reregistered { token },
            ) => Ok(token),
            Outcome::Name(NameOutcome::AlreadyRegistered { holder }) => {
                Err(GlobalError::AlreadyRegistered { holder })
            }
            other => Err(unexpected(other)),
        }
    }

    /// Free `name`, which `pid` holds.
    pub async fn unregister(&self, name: &str, pid: Pid) -> Result<(), GlobalError> {
        self.check_name(name)?;
        let command = Command::Unregister {
            name: name.to_string(),
            pid,
        };
        match self.inner.propose(command).await? {
            Outcome::Name(NameOutcome::Unregistered) => Ok(()),
            Outcome::Name(NameOutcome::NotRegistered) => Err(GlobalError::NotRegistered),
            Outcome::Name(NameOutcome::NotHolder { holder }) => {
                Err(GlobalError::NotHolder { holder })
            }
            other => Err(unexpected(other)),
        }
    }

    /// The holder of `name` on this node's replica: fast, and it may lag
    /// the leader by the time an entry takes to arrive here.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.inner.state().state.whereis(name)
    }

    /// The holder of `name` as the leader knows it once it has confirmed it
    /// still leads: never older than any registration completed before.
    pub async fn whereis_linearizable(&self, name: &str) -> Result<Option<Pid>, GlobalError> {
        let inner = &self.inner;
        let request = &CoordRequest::Whereis(name.to_string());
        inner
            .until_answered(|left| async move {
                match inner.leader() {
                    Some((id, _)) if id == inner.me => inner
                        .ensure_linearizable()
                        .await
                        .map(|()| self.whereis(name)),
                    Some((_, leader)) => match inner.call(&leader.name, left, request).await? {
                        CoordReply::Whereis(pid) => Ok(pid),
                        _ => Err(CoordError::Raft("wrong reply".into())),
                    },
                    None => Err(CoordError::NotLeader { leader: None }),
                }
            })
            .await
            .map_err(GlobalError::NoQuorum)
    }

    /// Take `locks` for `pid` (a process of this node), all at once, waiting
    /// in their FIFO queues up to `timeout`. Returns a grant per lock, in
    /// order, each with its fencing token.
    pub async fn lock(
        &self,
        pid: Pid,
        locks: &[LockRequest],
        timeout: Duration,
    ) -> Result<Vec<Grant>, GlobalError> {
        let limits = &self.inner.config.limits;
        if locks.is_empty() {
            return Err(GlobalError::NoLocks);
        }
        if locks.len() > limits.locks_per_request_max {
            return Err(GlobalError::TooManyLocks {
                count: locks.len(),
                max: limits.locks_per_request_max,
            });
        }
        for l in locks {
            self.check_name(&l.lock)?;
        }
        self.check_local(pid)?;
        let inner = &self.inner;
        let session = inner.session().await?;
        let req = inner.next_req();
        let mut granted = inner.wait_grant(req, session);
        let command = Command::Acquire {
            pid,
            session,
            locks: locks.to_vec(),
        };
        let outcome = match inner.propose_as(req, command).await {
            Ok(outcome) => outcome,
            Err(e) => {
                inner.stop_waiting(req);
                return Err(e.into());
            }
        };
        match outcome {
            Outcome::Granted(grants) => {
                inner.stop_waiting(req);
                hand_over(inner, session, pid, grants)
            }
            Outcome::Queued => {
                if let Ok(Ok(grants)) = tokio::time::timeout(timeout, &mut granted).await {
                    // Checked when it was handed on, and again now: the
                    // session may have been lost while this task waited
                    // to run (its holders were told; so is this caller).
                    return hand_over(inner, session, pid, grants);
                }
                // Give up the place in the queues; a grant that came first
                // is kept.
                let cancelled = inner.propose(Command::Cancel { req }).await;
                inner.stop_waiting(req);
                if let Ok(grants) = granted.try_recv() {
                    return Ok(grants);
                }
                match cancelled {
                    Ok(Outcome::Cancelled) => Err(GlobalError::Timeout(timeout)),
                    Ok(_) => Err(GlobalError::SessionLost),
                    Err(e) => Err(e.into()),
                }
            }
            other => {
                inner.stop_waiting(req);
                Err(unexpected(other))
            }
        }
    }

    /// Give back `lock`, which `pid` holds.
    pub async fn unlock(&self, lock: &str, pid: Pid) -> Result<(), GlobalError> {
        self.check_name(lock)?;
        let command = Command::Release {
            lock: lock.to_string(),
            pid,
        };
        match self.inner.propose(command).await? {
            Outcome::Released => Ok(()),
            Outcome::NotHeld => Err(GlobalError::NotHeld(lock.to_string())),
            other => Err(unexpected(other)),
        }
    }

    /// Stand `pid` (a process of this node) in election `group`: returns
    /// the leader and its term. The leader gets `elected(term)`, the other
    /// candidates `leader_changed(leader, term)`, now and at every change.
    pub async fn elect(&self, group: &str, pid: Pid) -> Result<(Pid, u64), GlobalError> {
        self.check_name(group)?;
        self.check_local(pid)?;
        let session = self.inner.session().await?;
        let command = Command::Stand {
            group: group.to_string(),
            pid,
            session,
        };
        match self.inner.propose(command).await? {
            Outcome::Stand(_) if self.inner.current_session() != Some(session) => {
                Err(GlobalError::SessionLost)
            }
            Outcome::Stand(s) => Ok((s.leader, s.term)),
            other => Err(unexpected(other)),
        }
    }

    /// Withdraw `pid` from election `group` (if it led, the next candidate
    /// does).
    pub async fn resign(&self, group: &str, pid: Pid) -> Result<(), GlobalError> {
        self.check_name(group)?;
        // A candidacy a lost session freed is still the caller's.
        let waiting = self.inner.resigning(group, pid);
        let command = Command::Resign {
            group: group.to_string(),
            pid,
        };
        match self.inner.propose(command).await? {
            Outcome::Done => Ok(()),
            Outcome::NotCandidate if waiting => Ok(()),
            Outcome::NotCandidate => Err(GlobalError::NotCandidate),
            other => Err(unexpected(other)),
        }
    }

    /// The leader of `group` and its term, on this node's replica.
    pub fn leader(&self, group: &str) -> Option<(Pid, u64)> {
        self.inner
            .state()
            .state
            .elections
            .get(group)
            .and_then(|e| e.leader)
    }

    /// The group as this node sees it.
    pub fn status(&self) -> ClusterStatus {
        self.inner.status()
    }

    /// Registered names, on this node's replica.
    pub fn names(&self) -> Vec<NameStatus> {
        let state = &self.inner.state().state;
        state
            .names
            .iter()
            .map(|(name, e)| NameStatus {
                name: name.clone(),
                pid: e.pid,
                token: e.token,
            })
            .collect()
    }

    /// Locks with holders or waiters, on this node's replica.
    pub fn locks(&self) -> Vec<LockStatus> {
        let state = &self.inner.state().state;
        state
            .locks
            .iter()
            .map(|(lock, l)| LockStatus {
                lock: lock.clone(),
                holders: l.holders.iter().map(|h| (h.pid, h.mode, h.token)).collect(),
                queue: l
                    .queue
                    .iter()
                    .filter_map(|r| state.waiters.get(r))
                    .map(|w| {
                        let mode = w
                            .locks
                            .iter()
                            .find(|x| x.lock == *lock)
                            .map_or(LockMode::Exclusive, |x| x.mode);
                        (w.pid, mode)
                    })
                    .collect(),
            })
            .collect()
    }

    /// Elections with candidates, on this node's replica.
    pub fn elections(&self) -> Vec<ElectionStatus> {
        let state = &self.inner.state().state;
        state
            .elections
            .iter()
            .map(|(group, e)| ElectionStatus {
                group: group.clone(),
                leader: e.leader,
                candidates: e.candidates.iter().map(|(p, _)| *p).collect(),
            })
            .collect()
    }
}

/// `grants` for their caller, unless they were made under a session this
/// node has lost since or were revoked already: then they are given back
/// and the caller is told `SessionLost`.
fn hand_over(
    inner: &Arc<Inner>,
    session: SessionId,
    pid: Pid,
    grants: Vec<Grant>,
) -> Result<Vec<Grant>, GlobalError> {
    if inner.grants_live(session, pid, &grants) {
        return Ok(grants);
    }
    inner.release_all(pid, &grants);
    Err(GlobalError::SessionLost)
}

fn unexpected(outcome: Outcome) -> GlobalError {
    match outcome {
        Outcome::SessionExpired => GlobalError::SessionLost,
        Outcome::Limit(limit) => GlobalError::Limit(limit),
        Outcome::Duplicate(lock) => GlobalError::Duplicate(lock),
        Outcome::AlreadyHeld(lock) => GlobalError::AlreadyHeld(lock),
        Outcome::NotCandidate => GlobalError::NotCandidate,
        other => GlobalError::Stopped(format!("unexpected outcome {other:?}")),
    }
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the system's random source");
    u64::from_le_bytes(bytes).max(1)
}

/// The guests' way in (the runtime's [`crate::runtime::Coordinator`]),
/// holding the group weakly.
struct GuestGate(std::sync::Weak<Inner>);

impl GuestGate {
    fn coordination(&self) -> Option<Coordination> {
        self.0.upgrade().map(|inner| Coordination { inner })
    }
}

/// The ABI status of an error, and the holder for `ALREADY_REGISTERED`.
fn refusal(e: GlobalError) -> crate::runtime::GlobalRefusal {
    use molt_abi::status;
    let (status, holder) = match e {
        GlobalError::NoQuorum(_) => (status::NO_QUORUM, None),
        GlobalError::Stopped(_) => (status::NO_COORDINATION, None),
        GlobalError::BadName { .. }
        | GlobalError::TooManyLocks { .. }
        | GlobalError::NoLocks
        | GlobalError::NotLocal(_) => (status::BAD_ARG, None),
        GlobalError::AlreadyRegistered { holder } => (status::ALREADY_REGISTERED, Some(holder)),
        GlobalError::NotRegistered => (status::NOT_REGISTERED, None),
        GlobalError::NotHolder { .. } | GlobalError::NotHeld(_) => (status::NOT_HOLDER, None),
        GlobalError::Limit(_) => (status::COORD_LIMIT, None),
        GlobalError::Timeout(_) => (status::TIMEOUT, None),
        GlobalError::Duplicate(_) | GlobalError::AlreadyHeld(_) => (status::ALREADY_HELD, None),
        GlobalError::NotCandidate => (status::NOT_CANDIDATE, None),
        GlobalError::SessionLost => (status::SESSION_LOST, None),
    };
    crate::runtime::GlobalRefusal { status, holder }
}

impl crate::runtime::Coordinator for GuestGate {
    fn call(
        &self,
        call: crate::runtime::GlobalCall,
    ) -> crate::runtime::BoxFuture<
        Result<crate::runtime::GlobalAnswer, crate::runtime::GlobalRefusal>,
    > {
        use crate::runtime::{GlobalAnswer, GlobalCall};
        let Some(c) = self.coordination() else {
            return Box::pin(async {
                Err(refusal(GlobalError::Stopped(
                    "coordination has stopped".into(),
                )))
            });
        };
        Box::pin(async move {
            let answer = match call {
                GlobalCall::Register { name, pid } => {
                    c.register(&name, pid).await.map(|_| GlobalAnswer::Done)
                }
                GlobalCall::Unregister { name, pid } => {
                    c.unregister(&name, pid).await.map(|()| GlobalAnswer::Done)
                }
                GlobalCall::Whereis { name } => {
                    c.whereis_linearizable(&name).await.map(GlobalAnswer::Pid)
                }
                GlobalCall::Lock {
                    pid,
                    locks,
                    timeout,
                } => {
                    let locks: Vec<LockRequest> = locks
                        .into_iter()
                        .map(|(lock, shared)| LockRequest {
                            lock,
                            mode: if shared {
                                LockMode::Shared
                            } else {
                                LockMode::Exclusive
                            },
                        })
                        .collect();
                    c.lock(pid, &locks, timeout).await.map(|grants| {
                        GlobalAnswer::Tokens(grants.iter().map(|g| g.token).collect())
                    })
                }
                GlobalCall::Unlock { lock, pid } => {
                    c.unlock(&lock, pid).await.map(|()| GlobalAnswer::Done)
                }
                GlobalCall::Elect { group, pid } => c
                    .elect(&group, pid)
                    .await
                    .map(|(leader, term)| GlobalAnswer::Leader(leader, term)),
                GlobalCall::Resign { group, pid } => {
                    c.resign(&group, pid).await.map(|()| GlobalAnswer::Done)
                }
            };
            answer.map_err(refusal)
        })
    }

    fn whereis(&self, name: &str) -> Option<Pid> {
        self.coordination()?.whereis(name)
    }

    fn leader(&self, group: &str) -> Option<(Pid, u64)> {
        self.coordination()?.leader(group)
    }
}
