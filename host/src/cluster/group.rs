//! One node's part in the coordination group: proposing commands (to the
//! local Raft if it leads, else forwarded to the leader), matching applied
//! entries to the calls waiting for them, the node's session and its
//! self-fencing, and the leader's duties (expiring sessions, choosing
//! voters).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use molt_abi::{Pid, sysmsg, tag};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Raft, ServerState};
use tokio::sync::oneshot;

use super::command::{Command, Grant, NameOutcome, Outcome, Proposal, ReqId, SessionId};
use super::config::CoordConfig;
use super::machine::{ApplyObserver, Replica};
use super::network::{CoordError, CoordReply, CoordRequest, CoordService};
use super::state::{ClusterId, Event};
use super::store::Storage;
use super::types::{Coord, Member};
use crate::net::service::{CallError, PeerId, RequestError, ServiceClient};
use crate::runtime::{ExitObserver, WeakNode};

/// Why a proposal did not get an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Unavailable {
    /// No quorum answered within the quorum timeout.
    NoQuorum(Duration),
    /// The coordination group has stopped (shut down, or its log failed).
    Stopped(String),
}

/// Whether a proposal reached the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Submitted {
    /// The leader committed it.
    Yes,
    /// An attempt may have been taken.
    Maybe,
    /// No attempt was taken.
    No,
}

/// Where an `Acquire` waiting in lock queues hears of its grant, and the
/// session it was made under.
type Waiting = (oneshot::Sender<Vec<Grant>>, SessionId);

/// Which leader may commit a proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// Whichever leads: this node, or the one it hands the proposal to.
    AnyLeader,
    /// This node, and only while it leads.
    ThisLeader,
}

enum Pending {
    /// A proposal waiting for its outcome on this replica.
    Outcome(oneshot::Sender<Outcome>),
    /// The caller gave up: a late outcome is undone.
    Abandoned,
}

/// The node's session, as the node sees it.
struct SessionView {
    id: Option<SessionId>,
    /// When the last renewal the leader acknowledged was sent.
    acked: Instant,
    /// The last session this node lost, and what its processes were told
    /// then: the entry that ends it may name more (a replica that had run
    /// ahead of the fence), and only the rest is told then.
    told: Option<(SessionId, Vec<(Pid, sysmsg::Coord)>)>,
    /// Candidacies of this node's processes that a lost session freed, as
    /// (election, pid): stood again under the next session. A candidate
    /// stays one until it resigns or ends.
    restand: Vec<(String, Pid)>,
}

/// What only the leader keeps: when each session was last renewed.
#[derive(Default)]
struct LeaderView {
    term: u64,
    renewed: HashMap<SessionId, Instant>,
    expiring: HashSet<SessionId>,
    /// When each member was last seen with a live session.
    seen: HashMap<u64, Instant>,
}

pub(crate) struct Inner {
    pub(super) raft: Raft<Coord>,
    pub(super) me: u64,
    pub(super) member: Member,
    pub(super) incarnation: u64,
    pub(super) node: WeakNode,
    pub(super) client: ServiceClient<CoordService>,
    replica: Replica,
    pub(super) storage: Storage,
    pub(super) config: CoordConfig,
    seq: AtomicU64,
    pending: Mutex<HashMap<ReqId, Pending>>,
    /// Acquire requests waiting in lock queues, by request, with the
    /// session they were made under.
    waiting: Mutex<HashMap<ReqId, Waiting>>,
    session: Mutex<SessionView>,
    session_changed: tokio::sync::Notify,
    leader: Mutex<LeaderView>,
    /// Local processes that hold or wait for something, so that their end
    /// is proposed.
    involved: Mutex<HashSet<Pid>>,
    membership_change: tokio::sync::Mutex<()>,
    /// Bumped when the replicated tables' definitions change (their
    /// entries applied, or the state replaced by a snapshot).
    pub(super) tables_changed: tokio::sync::watch::Sender<u64>,
    /// The node's replicated tables, once started.
    pub(super) replication: std::sync::OnceLock<Arc<crate::table::replication::Replication>>,
    pub(super) stopped: AtomicBool,
    pub(super) stop: tokio::sync::Notify,
}

impl Inner {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        raft: Raft<Coord>,
        me: u64,
        member: Member,
        incarnation: u64,
        node: WeakNode,
        client: ServiceClient<CoordService>,
        replica: Replica,
        storage: Storage,
        config: CoordConfig,
    ) -> Inner {
        Inner {
            raft,
            me,
            member,
            incarnation,
            node,
            client,
            replica,
            storage,
            config,
            seq: AtomicU64::new(0),
            pending: Mutex::default(),
            waiting: Mutex::default(),
            session: Mutex::new(SessionView {
                id: None,
                acked: Instant::now(),
                told: None,
                restand: Vec::new(),
            }),
            session_changed: tokio::sync::Notify::new(),
            leader: Mutex::default(),
            // A new incarnation's processes hold nothing yet.
            involved: Mutex::default(),
            membership_change: tokio::sync::Mutex::new(()),
            tables_changed: tokio::sync::watch::Sender::new(0),
            replication: std::sync::OnceLock::new(),
            stopped: AtomicBool::new(false),
            stop: tokio::sync::Notify::new(),
        }
    }

    pub(super) fn next_req(&self) -> ReqId {
        ReqId {
            origin: self.incarnation,
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    /// The applied state on this node's replica, for reading.
    /// The last log index applied here, as openraft last reported it.
    pub(super) fn applied_index(&self) -> u64 {
        self.raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index)
    }

    /// Wait up to `within` until this replica applied `index`; whether it
    /// did.
    pub(super) async fn applied_at_least(&self, index: u64, within: Duration) -> bool {
        self.raft
            .wait(Some(within))
            .applied_index_at_least(Some(index), "a read index")
            .await
            .is_ok()
    }

    pub(super) fn state(&self) -> std::sync::RwLockReadGuard<'_, super::machine::Applied> {
        self.replica.read().expect("replica poisoned")
    }

    fn is_local(&self, pid: Pid) -> bool {
        self.node.upgrade().is_some_and(|n| n.is_local(pid))
    }

    /// The leader's id and name, as this node last heard.
    pub(super) fn leader(&self) -> Option<(u64, Member)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let id = m.current_leader?;
        let member = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, member))
    }

    pub(super) fn cluster_id(&self) -> Option<ClusterId> {
        self.state().state.cluster.clone()
    }

    fn failure(&self) -> Option<Unavailable> {
        if let Some(why) = self.storage.failure().borrow().clone() {
            return Some(Unavailable::Stopped(format!(
                "the coordination log failed: {why}"
            )));
        }
        if self.stopped.load(Ordering::Acquire) {
            return Some(Unavailable::Stopped("coordination has stopped".into()));
        }
        None
    }

    /// Commit `command` and wait until this replica has applied it; its
    /// outcome. On `NoQuorum` the command may still be applied later: then
    /// what it did is undone (a late registration unregistered, a late
    /// grant released).
    pub(super) async fn propose(&self, command: Command) -> Result<Outcome, Unavailable> {
        self.propose_as(self.next_req(), command).await
    }

    pub(super) async fn propose_as(
        &self,
        req: ReqId,
        command: Command,
    ) -> Result<Outcome, Unavailable> {
        self.propose_via(req, command, Via::AnyLeader).await
    }

    /// Propose what this node decided as the leader, from its own view (a
    /// session's expiry): committed only while it leads, never handed on
    /// to a successor, whose view may differ (the node may have renewed
    /// its session with the successor meanwhile).
    async fn propose_leading(&self, command: Command) -> Result<Outcome, Unavailable> {
        self.propose_via(self.next_req(), command, Via::ThisLeader)
            .await
    }

    async fn propose_via(
        &self,
        req: ReqId,
        command: Command,
        via: Via,
    ) -> Result<Outcome, Unavailable> {
        if let Some(why) = self.failure() {
            return Err(why);
        }
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.config.quorum_timeout;
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending poisoned")
            .insert(req, Pending::Outcome(tx));
        let proposal = Proposal { req, command };
        let submitted = self.submit(&proposal, deadline, via).await;
        let outcome = if submitted == Submitted::No {
            None
        } else {
            tokio::time::timeout_at(deadline, rx)
                .await
                .ok()
                .and_then(Result::ok)
        };
        match outcome {
            Some(outcome) => Ok(outcome),
            None => {
                let mut pending = self.pending.lock().expect("pending poisoned");
                if submitted == Submitted::No {
                    pending.remove(&req);
                } else {
                    pending.insert(req, Pending::Abandoned);
                }
                drop(pending);
                Err(self
                    .failure()
                    .unwrap_or(Unavailable::NoQuorum(started.elapsed())))
            }
        }
    }

    /// Hand `proposal` to the leader until one takes it or the deadline
    /// passes. A retry after an attempt that may have been taken is safe:
    /// the state machine applies a request once (`Outcome::Repeated`).
    async fn submit(
        &self,
        proposal: &Proposal,
        deadline: tokio::time::Instant,
        via: Via,
    ) -> Submitted {
        let mut pause = Duration::from_millis(5);
        let mut maybe = false;
        let give_up = |maybe: bool| {
            if maybe {
                Submitted::Maybe
            } else {
                Submitted::No
            }
        };
        loop {
            if self.failure().is_some() {
                return give_up(maybe);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            // One attempt gets a share of the time, so that a dead leader
            // does not take it all.
            let attempt = left.min(self.config.election_timeout_max * 2);
            match self.leader() {
                ref leader
                    if via == Via::ThisLeader
                        && leader.as_ref().is_none_or(|(id, _)| *id != self.me) =>
                {
                    return give_up(maybe);
                }
                Some((id, _)) if id == self.me => {
                    let write = self.raft.client_write(proposal.clone());
                    match tokio::time::timeout(attempt, write).await {
                        Ok(Ok(_)) => return Submitted::Yes,
                        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {}
                        Ok(Err(_)) => return give_up(maybe),
                        Err(_) => maybe = true,
                    }
                }
                Some((_, leader)) => {
                    let request = CoordRequest::Propose(proposal.clone());
                    let call = self.client.call_within(&leader.name, attempt, &request);
                    match call.await {
                        Ok(_) => return Submitted::Yes,
                        Err(CallError::Remote(CoordError::NotLeader { .. })) => {}
                        Err(CallError::Remote(_)) => return give_up(maybe),
                        Err(CallError::Request(RequestError::NoReply { .. })) => maybe = true,
                        Err(CallError::Request(_)) => {}
                    }
                }
                None => {}
            }
            if tokio::time::Instant::now() + pause >= deadline {
                return give_up(maybe);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// This node's session, opening one if there is none (waiting up to
    /// the quorum timeout).
    pub(super) async fn session(&self) -> Result<SessionId, Unavailable> {
        let deadline = tokio::time::Instant::now() + self.config.quorum_timeout;
        let started = Instant::now();
        loop {
            let changed = self.session_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(id) = self.session.lock().expect("session poisoned").id {
                return Ok(id);
            }
            if let Some(why) = self.failure() {
                return Err(why);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(Unavailable::NoQuorum(started.elapsed()));
            }
        }
    }

    /// Start waiting for a grant of the `Acquire` that will be proposed as
    /// `req` under `session`.
    pub(super) fn wait_grant(
        &self,
        req: ReqId,
        session: SessionId,
    ) -> oneshot::Receiver<Vec<Grant>> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .expect("waiting poisoned")
            .insert(req, (tx, session));
        rx
    }

    /// Whether `grants` to `pid`, made under `session`, may be handed to
    /// their caller: the session is still this node's (a node that fenced
    /// itself told its holders they lost their locks, and a grant its
    /// lagging replica applies later was revoked with the session), and
    /// the replica, which may have applied later entries already, still
    /// has every grant.
    pub(super) fn grants_live(&self, session: SessionId, pid: Pid, grants: &[Grant]) -> bool {
        if self.current_session() != Some(session) {
            return false;
        }
        let state = &self.state().state;
        grants.iter().all(|g| {
            state
                .locks
                .get(&g.lock)
                .is_some_and(|l| l.holders.iter().any(|h| h.pid == pid && h.token == g.token))
        })
    }

    /// Whether `leader`, told it leads `group` for `term`, still does on
    /// this replica under this node's live session (see
    /// [`Self::grants_live`]).
    pub(super) fn leads(&self, group: &str, leader: Pid, term: u64) -> bool {
        let Some(session) = self.current_session() else {
            return false;
        };
        self.state().state.elections.get(group).is_some_and(|e| {
            e.leader == Some((leader, term)) && e.candidates.contains(&(leader, session))
        })
    }

    pub(super) fn stop_waiting(&self, req: ReqId) {
        self.waiting.lock().expect("waiting poisoned").remove(&req);
    }

    pub(super) fn involve(&self, pid: Pid) {
        self.involved.lock().expect("involved poisoned").insert(pid);
    }

    /// Propose in the background; failures are logged.
    fn propose_later(self: &Arc<Self>, command: Command, why: &'static str) {
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            // A few tries: the quorum may be back soon.
            for _ in 0..5 {
                match inner.propose(command.clone()).await {
                    Ok(_) => return,
                    Err(Unavailable::Stopped(_)) => return,
                    Err(Unavailable::NoQuorum(_)) => {}
                }
            }
            tracing::warn!(
                ?command,
                why,
                "could not commit a clean-up; the session's end frees it"
            );
        });
    }

    // -- The service: what other nodes ask of this one. ---------------

    pub(super) async fn serve(
        self: Arc<Self>,
        peer: PeerId,
        request: CoordRequest,
    ) -> Result<CoordReply, CoordError> {
        match request {
            CoordRequest::Append(rpc) => {
                Ok(CoordReply::Append(self.raft.append_entries(rpc).await))
            }
            CoordRequest::Vote(rpc) => Ok(CoordReply::Vote(self.raft.vote(rpc).await)),
            CoordRequest::Snapshot(rpc) => {
                Ok(CoordReply::Snapshot(self.raft.install_snapshot(rpc).await))
            }
            CoordRequest::Propose(proposal) => {
                if peer.hidden {
                    return Err(CoordError::Raft("a hidden node cannot propose".into()));
                }
                // Another node's proposal gets the checks a local caller's
                // got, so no node can put past-limit names in the log.
                if let Err(why) = self.admissible(&proposal.command) {
                    tracing::warn!(node = %peer.name, %why, "refused a proposal");
                    return Err(CoordError::Raft(format!("refused: {why}")));
                }
                match self.raft.client_write(proposal).await {
                    Ok(response) => Ok(CoordReply::Proposed(response.data)),
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                        Err(CoordError::NotLeader {
                            leader: f.leader_node.map(|n| n.name),
                        })
                    }
                    Err(e) => Err(CoordError::Raft(e.to_string())),
                }
            }
            CoordRequest::Join {
                member,
                node,
                cluster,
            } => self.serve_join(member, node, cluster).await,
            CoordRequest::KeepAlive(session) => self.serve_keep_alive(session).await,
            CoordRequest::Status => Ok(CoordReply::Status(Box::new(self.status()))),
            CoordRequest::Names => Ok(CoordReply::Names(self.coordination().names())),
            CoordRequest::Locks => Ok(CoordReply::Locks(self.coordination().locks())),
            CoordRequest::Elections => Ok(CoordReply::Elections(self.coordination().elections())),
            CoordRequest::Remove(name) => self.serve_remove(&name).await,
            CoordRequest::AddVoter(name) => self.serve_add_voter(&name).await,
            CoordRequest::Whereis(name) => {
                self.ensure_linearizable().await?;
                let state = &self.state().state;
                Ok(CoordReply::Whereis(state.whereis(&name)))
            }
            // What this node, leading, has applied: every change answered
            // before it was asked (a node that no longer leads and does
            // not know it yet may answer less; those asking use it only
            // to catch up).
            CoordRequest::ReadIndex => match self.leader() {
                Some((id, _)) if id == self.me => Ok(CoordReply::ReadIndex(self.applied_index())),
                _ => Err(self.not_leader()),
            },
        }
    }

    fn coordination(self: &Arc<Self>) -> super::Coordination {
        super::Coordination {
            inner: Arc::clone(self),
        }
    }

    async fn serve_remove(&self, name: &str) -> Result<CoordReply, CoordError> {
        self.require_leader()?;
        let _serial = self.membership_change.lock().await;
        let ids = self.members_named(name, None);
        if ids.is_empty() {
            return Err(CoordError::Raft(format!(
                "{name} is not a member of the group"
            )));
        }
        if ids.contains(&self.me) {
            return Err(CoordError::Raft(format!(
                "{name} leads the group; remove it from another node after it stepped down"
            )));
        }
        let voters = self.voters();
        if !voters.is_disjoint(&ids) {
            let rest: BTreeSet<u64> = voters.difference(&ids).copied().collect();
            self.change_members(ChangeMembers::ReplaceAllVoters(rest), false)
                .await?;
        }
        self.change_members(ChangeMembers::RemoveNodes(ids.clone()), false)
            .await?;
        tracing::info!(node = %name, "removed from the coordination group");
        Ok(CoordReply::Removed(ids.into_iter().collect()))
    }

    /// Make the member named `name`, a learner with an open session, a
    /// voter now (the automatic management adds voters only
    /// up to `voters`; this adds one beyond, and never takes it away).
    async fn serve_add_voter(&self, name: &str) -> Result<CoordReply, CoordError> {
        self.require_leader()?;
        let _serial = self.membership_change.lock().await;
        let ids = self.members_named(name, None);
        if ids.is_empty() {
            return Err(CoordError::Raft(format!(
                "{name} is not a member of the group (a node joins with --join)"
            )));
        }
        let voters = self.voters();
        if !voters.is_disjoint(&ids) {
            return Err(CoordError::Raft(format!("{name} is a voter already")));
        }
        // Up: it holds an open session (one not renewed in time is expired
        // by the leader).
        let open = {
            let state = &self.state().state;
            state
                .sessions
                .values()
                .find(|session| ids.contains(&session.member))
                .map(|session| session.member)
        };
        let Some(id) = open else {
            return Err(CoordError::Raft(format!(
                "{name} has no open session: only a learner that is up can become a voter"
            )));
        };
        self.change_members(ChangeMembers::AddVoterIds([id].into()), true)
            .await?;
        tracing::info!(node = %name, "made a voter of the coordination group");
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let names = membership
            .voter_ids()
            .filter_map(|v| membership.membership().get_node(&v).map(|m| m.name.clone()))
            .collect();
        Ok(CoordReply::Voters(names))
    }

    /// The Raft ids of the members named `name`, but `except`.
    fn members_named(&self, name: &str, except: Option<u64>) -> BTreeSet<u64> {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        membership
            .membership()
            .nodes()
            .filter(|(id, m)| m.name == name && Some(**id) != except)
            .map(|(id, _)| *id)
            .collect()
    }

    fn voters(&self) -> BTreeSet<u64> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .voter_ids()
            .collect()
    }

    async fn change_members(
        &self,
        changes: ChangeMembers<u64, Member>,
        retain: bool,
    ) -> Result<(), CoordError> {
        self.raft
            .change_membership(changes, retain)
            .await
            .map(drop)
            .map_err(|e| CoordError::Raft(e.to_string()))
    }

    /// Whether a command keeps to the group's limits on names and sets.
    fn admissible(&self, command: &Command) -> Result<(), String> {
        let limits = &self.config.limits;
        let name_ok = |n: &str| !n.is_empty() && n.len() <= limits.name_bytes_max;
        let ok = match command {
            Command::Register { name, .. }
            | Command::Unregister { name, .. }
            | Command::UnregisterToken { name, .. } => name_ok(name),
            Command::Release { lock, .. } | Command::ReleaseGrant { lock, .. } => name_ok(lock),
            Command::Stand { group, .. } | Command::Resign { group, .. } => name_ok(group),
            Command::CreateTable { spec } => name_ok(&spec.name),
            Command::Acquire { locks, .. } => {
                !locks.is_empty()
                    && locks.len() <= limits.locks_per_request_max
                    && locks.iter().all(|l| name_ok(&l.lock))
            }
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "a name past name_bytes_max ({}) or a lock set past locks_per_request_max ({})",
                limits.name_bytes_max, limits.locks_per_request_max
            ))
        }
    }

    /// `Ok` if this node leads the group, else who does.
    fn require_leader(&self) -> Result<(), CoordError> {
        if self.raft.metrics().borrow().current_leader == Some(self.me) {
            Ok(())
        } else {
            Err(self.not_leader())
        }
    }

    fn not_leader(&self) -> CoordError {
        CoordError::NotLeader {
            leader: self.leader().map(|(_, m)| m.name),
        }
    }

    pub(super) async fn ensure_linearizable(&self) -> Result<(), CoordError> {
        let check = self.raft.ensure_linearizable();
        match tokio::time::timeout(self.config.quorum_timeout, check).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(_))) => Err(self.not_leader()),
            Ok(Err(e)) => Err(CoordError::Raft(e.to_string())),
            Err(_) => Err(CoordError::Raft(format!(
                "no quorum confirmed the leader within {:?}",
                self.config.quorum_timeout
            ))),
        }
    }

    /// Renew `session` as of now. Acknowledged only once a quorum has
    /// confirmed, after the renewal arrived, that this node still leads: a
    /// deposed leader that has not heard of its successor yet must not
    /// tell a node its session lives while the successor's clock for it
    /// runs (the node would trust a lock the successor hands on). A
    /// successor is elected after that confirmation, so it counts the
    /// session's time from later than the renewal.
    async fn serve_keep_alive(&self, session: SessionId) -> Result<CoordReply, CoordError> {
        let received = Instant::now();
        self.require_leader()?;
        if !self.state().state.sessions.contains_key(&session) {
            return Err(CoordError::UnknownSession(session));
        }
        self.ensure_linearizable().await?;
        let mut leader = self.leader.lock().expect("leader poisoned");
        let renewed = leader.renewed.entry(session).or_insert(received);
        *renewed = (*renewed).max(received);
        Ok(CoordReply::Alive)
    }

    async fn serve_join(
        &self,
        member: u64,
        node: Member,
        cluster: Option<ClusterId>,
    ) -> Result<CoordReply, CoordError> {
        self.require_leader()?;
        let Some(ours) = self.cluster_id() else {
            return Err(CoordError::Raft("this cluster is still starting".into()));
        };
        if let Some(theirs) = cluster
            && theirs != ours
        {
            return Err(CoordError::OtherCluster {
                node: node.name,
                theirs,
                ours,
            });
        }
        let _serial = self.membership_change.lock().await;
        let known = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&member)
            .is_some();
        // The same name under another id is that node's earlier life (a
        // `ram` log, or a wiped data directory): it is gone.
        let earlier = self.members_named(&node.name, Some(member));
        if !known {
            let name = node.name.clone();
            self.raft
                .add_learner(member, node, true)
                .await
                .map_err(|e| CoordError::Raft(e.to_string()))?;
            tracing::info!(node = %name, member, "joined the coordination group as a learner");
        }
        if !earlier.is_empty() {
            let voters = self.voters();
            if !voters.is_disjoint(&earlier) {
                let mut new: BTreeSet<u64> = voters.difference(&earlier).copied().collect();
                new.insert(member);
                self.change_members(ChangeMembers::ReplaceAllVoters(new), false)
                    .await?;
            } else {
                self.change_members(ChangeMembers::RemoveNodes(earlier), false)
                    .await?;
            }
        }
        Ok(CoordReply::Joined(ours))
    }

    // -- Background duties. -------------------------------------------

    /// Keep this node's session: open one, renew it, and fence the node's
    /// holders when it cannot be renewed in time.
    pub(super) async fn keep_session(self: Arc<Self>) {
        let ttl = self.config.session_ttl;
        let renew_every = ttl / 5;
        // The node stops trusting its session well before the leader can
        // expire it (which is `ttl` after the last renewal *reached* it).
        let fence_after = ttl * 3 / 5;
        const SAY_EVERY: Duration = Duration::from_secs(10);
        let mut failing_since: Option<Instant> = None;
        let mut last_said: Option<Instant> = None;
        while !self.stopped.load(Ordering::Acquire) {
            let current = self.session.lock().expect("session poisoned").id;
            match current {
                None => {
                    let open = Command::OpenSession {
                        node: self.member.name.clone(),
                        incarnation: self.incarnation,
                        member: self.me,
                    };
                    let sent = Instant::now();
                    match self.propose(open).await {
                        Ok(Outcome::Session(id)) => {
                            if self.adopt_session(id, sent) {
                                tracing::debug!(%id, "coordination session opened");
                                self.restand_later(id);
                            } else {
                                // A late one was adopted meanwhile.
                                self.propose_later(
                                    Command::CloseSession { session: id },
                                    "close a session opened twice",
                                );
                            }
                            failing_since = None;
                            last_said = None;
                        }
                        other => {
                            // Said once when it starts failing, then every
                            // ten seconds while it does.
                            let since = *failing_since.get_or_insert_with(Instant::now);
                            if last_said.is_none_or(|t: Instant| t.elapsed() >= SAY_EVERY) {
                                last_said = Some(Instant::now());
                                tracing::warn!(
                                    answer = ?other,
                                    leader = ?self.leader().map(|(_, m)| m.name),
                                    failing_for = ?since.elapsed(),
                                    "could not open a coordination session; trying again"
                                );
                            }
                        }
                    }
                }
                Some(id) => {
                    let sent = Instant::now();
                    match self.renew(id).await {
                        Ok(()) => {
                            let mut s = self.session.lock().expect("session poisoned");
                            if s.id == Some(id) {
                                s.acked = sent;
                            }
                        }
                        Err(CoordError::UnknownSession(_)) => self.session_lost(id, "it expired"),
                        Err(_) => {}
                    }
                    self.restand_later(id);
                    let stale = {
                        let s = self.session.lock().expect("session poisoned");
                        s.id == Some(id) && s.acked.elapsed() > fence_after
                    };
                    if stale {
                        self.session_lost(id, "it could not be renewed in time");
                        self.propose_later(
                            Command::CloseSession { session: id },
                            "close a fenced session",
                        );
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(renew_every) => {}
                _ = self.stop.notified() => {}
            }
        }
    }

    /// Stand again, under session `id`, the candidates whose candidacy a
    /// lost session freed (in the background: a slow quorum must not
    /// delay renewals). A candidate that leads then is told `Elected` by
    /// the entry; one that does not is told who leads.
    fn restand_later(self: &Arc<Self>, id: SessionId) {
        let candidacies = {
            let mut s = self.session.lock().expect("session poisoned");
            if s.id != Some(id) || s.restand.is_empty() {
                return;
            }
            std::mem::take(&mut s.restand)
        };
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            let mut again = Vec::new();
            for (group, pid) in candidacies {
                let Some(node) = inner.node.upgrade() else {
                    return;
                };
                let standing = |inner: &Inner| {
                    inner
                        .state()
                        .state
                        .elections
                        .get(&group)
                        .is_some_and(|e| e.candidates.contains(&(pid, id)))
                };
                if !node.is_alive(pid) || standing(&inner) {
                    continue;
                }
                let command = Command::Stand {
                    group: group.clone(),
                    pid,
                    session: id,
                };
                match inner.propose(command).await {
                    Ok(Outcome::Stand(s)) => {
                        tracing::info!(%pid, group, "a candidate stands again under the node's new session");
                        let current = inner
                            .state()
                            .state
                            .elections
                            .get(&group)
                            .and_then(|e| e.leader);
                        if s.leader != pid && current == Some((s.leader, s.term)) {
                            let notice = sysmsg::Coord::LeaderChanged {
                                group,
                                leader: s.leader,
                                term: s.term,
                            };
                            tell(&node, pid, &notice);
                        }
                    }
                    Ok(Outcome::Limit(limit)) => {
                        tracing::warn!(%pid, group, %limit, "a candidate could not stand again");
                    }
                    // The new session ended too (its end frees nothing of
                    // this candidate's), or no quorum: the next session's
                    // renewal tries again.
                    Ok(_) | Err(Unavailable::NoQuorum(_)) => again.push((group, pid)),
                    Err(Unavailable::Stopped(_)) => return,
                }
            }
            if !again.is_empty() {
                let mut s = inner.session.lock().expect("session poisoned");
                for candidacy in again {
                    if !s.restand.contains(&candidacy) {
                        s.restand.push(candidacy);
                    }
                }
            }
        });
    }

    /// `pid` resigns from `group`: it is not stood again either. Whether
    /// it was waiting to be.
    pub(super) fn resigning(&self, group: &str, pid: Pid) -> bool {
        let mut s = self.session.lock().expect("session poisoned");
        let before = s.restand.len();
        s.restand.retain(|(g, p)| !(g == group && *p == pid));
        s.restand.len() != before
    }

    /// Make `id` this node's session, renewed as of `acked`, unless it
    /// has one; whether it did.
    fn adopt_session(&self, id: SessionId, acked: Instant) -> bool {
        let mut s = self.session.lock().expect("session poisoned");
        if s.id.is_some() {
            return false;
        }
        s.id = Some(id);
        s.acked = acked;
        drop(s);
        self.session_changed.notify_waiters();
        true
    }

    async fn renew(&self, id: SessionId) -> Result<(), CoordError> {
        let Some((leader, member)) = self.leader() else {
            return Err(CoordError::NotLeader { leader: None });
        };
        let timeout = self.config.session_ttl / 5;
        if leader == self.me {
            // A leader cut off from its followers cannot renew its own
            // session either: the quorum's confirmation never comes.
            let renewal = self.serve_keep_alive(id);
            return match tokio::time::timeout(timeout, renewal).await {
                Ok(result) => result.map(|_| ()),
                Err(_) => Err(CoordError::Raft(
                    "no quorum confirmed this leader in time".into(),
                )),
            };
        }
        self.call(&member.name, timeout, &CoordRequest::KeepAlive(id))
            .await
            .map(|_| ())
    }

    /// Ask `node`'s coordination service `request`, within `within`: its
    /// reply, or its refusal (a failed call as `Raft`).
    pub(super) async fn call(
        &self,
        node: &str,
        within: Duration,
        request: &CoordRequest,
    ) -> Result<CoordReply, CoordError> {
        match self.client.call_within(node, within, request).await {
            Ok(reply) => Ok(reply),
            Err(CallError::Remote(e)) => Err(e),
            Err(CallError::Request(e)) => Err(CoordError::Raft(e.to_string())),
        }
    }

    /// Run `attempt` until it answers, again every 20 ms while it fails
    /// (no leader known, or the leader did not answer) and the quorum
    /// timeout has not passed since the call: the answer, or how long it
    /// was tried for.
    pub(super) async fn until_answered<T, F>(
        &self,
        mut attempt: impl FnMut(Duration) -> F,
    ) -> Result<T, Duration>
    where
        F: std::future::Future<Output = Result<T, CoordError>>,
    {
        let started = Instant::now();
        let deadline = started + self.config.quorum_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match attempt(left).await {
                Ok(answer) => return Ok(answer),
                Err(_) if Instant::now() + Duration::from_millis(20) < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => return Err(started.elapsed()),
            }
        }
    }

    /// The node's session `id` is gone (or no longer to be trusted): tell
    /// the node's holders, then open a new one.
    fn session_lost(&self, id: SessionId, why: &str) {
        self.session_ended(id, why, |state| {
            (state.held_under(id), state.stood_under(id))
        });
    }

    /// The node's session `id` is gone: unless it was already, tell the
    /// processes what they held and led under it (`lost`, from the
    /// replica, with the candidacies it freed), then let a new one be
    /// opened, under which those candidates stand again.
    fn session_ended(
        &self,
        id: SessionId,
        why: &str,
        lost: impl FnOnce(&super::state::State) -> (Vec<(Pid, sysmsg::Coord)>, Vec<(String, Pid)>),
    ) {
        let Some(node) = self.node.upgrade() else {
            return;
        };
        // Read before the session lock is taken: `status` takes the two
        // the other way round.
        let (lost, stood) = lost(&self.state().state);
        let mut s = self.session.lock().expect("session poisoned");
        if s.id == Some(id) {
            s.id = None;
            s.told = Some((id, Vec::new()));
            tracing::warn!(%id, why, "coordination session lost; telling this node's lock holders and leaders");
        }
        let Some((_, told)) = s.told.as_mut().filter(|(lost, _)| *lost == id) else {
            return;
        };
        let notices: Vec<_> = lost.into_iter().filter(|n| !told.contains(n)).collect();
        told.extend(notices.iter().cloned());
        for candidacy in stood {
            if node.is_local(candidacy.1) && !s.restand.contains(&candidacy) {
                s.restand.push(candidacy);
            }
        }
        drop(s);
        for (pid, notice) in notices {
            tell(&node, pid, &notice);
        }
    }

    /// The leader's duties, while this node leads: expire sessions that
    /// were not renewed in time, and keep the voter set at its size.
    pub(super) async fn lead(self: Arc<Self>) {
        let tick = (self.config.session_ttl / 20)
            .clamp(Duration::from_millis(20), Duration::from_millis(250));
        let mut last_voter_check = Instant::now();
        while !self.stopped.load(Ordering::Acquire) {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = self.stop.notified() => return,
            }
            let (leading, term) = {
                let m = self.raft.metrics();
                let m = m.borrow();
                (
                    m.current_leader == Some(self.me) && m.state == ServerState::Leader,
                    m.current_term,
                )
            };
            if !leading {
                let mut view = self.leader.lock().expect("leader poisoned");
                if view.term != 0 {
                    *view = LeaderView::default();
                }
                continue;
            }
            let expired = self.sessions_to_expire(term);
            for session in expired {
                self.propose_later_expire(session);
            }
            if last_voter_check.elapsed() >= Duration::from_millis(500) {
                last_voter_check = Instant::now();
                if let Err(e) = self.manage_voters().await {
                    tracing::warn!(error = %e, "could not change the coordination voters");
                }
            }
        }
    }

    fn propose_later_expire(self: &Arc<Self>, session: SessionId) {
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            let result = inner
                .propose_leading(Command::ExpireSession { session })
                .await;
            let mut view = inner.leader.lock().expect("leader poisoned");
            view.expiring.remove(&session);
            if result.is_ok() {
                tracing::info!(%session, "coordination session expired; what its node held is free");
            }
        });
    }

    fn sessions_to_expire(&self, term: u64) -> Vec<SessionId> {
        let now = Instant::now();
        let state = self.state();
        let mut view = self.leader.lock().expect("leader poisoned");
        if view.term != term {
            // A new leader cannot know when sessions were last renewed:
            // each gets a full TTL from now.
            *view = LeaderView {
                term,
                ..LeaderView::default()
            };
        }
        let sessions = &state.state.sessions;
        view.renewed.retain(|id, _| sessions.contains_key(id));
        let mut expired = Vec::new();
        for (id, session) in sessions {
            let renewed = *view.renewed.entry(*id).or_insert(now);
            if now.duration_since(renewed) < self.config.session_ttl {
                view.seen.insert(session.member, now);
            } else if view.expiring.insert(*id) {
                expired.push(*id);
            }
        }
        view.seen.insert(self.me, now);
        expired
    }

    /// Promote live learners to voters up to the wanted number (odd), and
    /// replace voters gone longer than `voter_replace_after` by live
    /// learners.
    async fn manage_voters(&self) -> Result<(), String> {
        let _serial = self.membership_change.lock().await;
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let m = membership.membership();
        if m.get_joint_config().len() > 1 {
            return Ok(());
        }
        let voters: BTreeSet<u64> = m.voter_ids().collect();
        let learners: Vec<u64> = m.learner_ids().collect();
        let now = Instant::now();
        let (live, gone): (HashSet<u64>, HashSet<u64>) = {
            let view = self.leader.lock().expect("leader poisoned");
            let live = m
                .nodes()
                .map(|(id, _)| *id)
                .filter(|id| {
                    view.seen
                        .get(id)
                        .is_some_and(|t| now.duration_since(*t) < self.config.session_ttl)
                })
                .collect();
            let gone = m
                .nodes()
                .map(|(id, _)| *id)
                .filter(|id| {
                    view.seen
                        .get(id)
                        .is_none_or(|t| now.duration_since(*t) >= self.config.voter_replace_after)
                })
                .collect();
            (live, gone)
        };
        // A new leader has seen nobody for long: wait before judging.
        if self.leader.lock().expect("leader poisoned").seen.len() <= 1 && voters.len() > 1 {
            return Ok(());
        }
        let mut spare: Vec<u64> = learners
            .iter()
            .copied()
            .filter(|l| live.contains(l))
            .collect();
        spare.sort_unstable();
        let mut new = voters.clone();
        // Replace gone voters one for one.
        for dead in voters.iter().filter(|v| gone.contains(v) && **v != self.me) {
            if let Some(replacement) = spare.pop() {
                new.remove(dead);
                new.insert(replacement);
            }
        }
        let wanted = self.config.voters_for(live.len());
        while new.len() + 2 <= wanted && spare.len() >= 2 {
            new.insert(spare.pop().expect("two spare"));
            new.insert(spare.pop().expect("two spare"));
        }
        drop(membership);
        if new == voters {
            return Ok(());
        }
        tracing::info!(?voters, ?new, "changing the coordination voters");
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(new), true)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// What undoes a registration whose caller gave up, if anything. Only a
/// registration the entry made is undone, and only while it is the one
/// held: the process may have registered again since (a new token), or
/// may have held the name before (then the entry changed nothing to undo).
pub(super) fn undo_registration(command: &Command, outcome: &Outcome) -> Option<Command> {
    match (command, outcome) {
        (Command::Register { name, pid, .. }, Outcome::Name(NameOutcome::Registered { token })) => {
            Some(Command::UnregisterToken {
                name: name.clone(),
                pid: *pid,
                token: *token,
            })
        }
        _ => None,
    }
}

/// Deliver a coordination notice to a local process. It cannot be
/// forged: its tag is reserved, and guests cannot send those.
fn tell(node: &crate::runtime::Node, pid: Pid, notice: &sysmsg::Coord) {
    let message = crate::runtime::Message {
        tag: tag::COORD,
        reference: molt_abi::Ref::NONE,
        payload: molt_abi::codec::encode(notice).into(),
    };
    if let Err(e) = node.inner().deliver_message(Pid::default(), pid, message) {
        tracing::warn!(%pid, ?notice, error = %e, "a coordination notice was not delivered");
    }
}

/// The node id part of a node's pids, for a node that may have stopped.
fn incarnation_node(node: &WeakNode) -> (u64, u64) {
    node.upgrade().map(|n| n.identity()).unwrap_or((0, 0))
}

impl Inner {
    fn applied(
        self: &Arc<Self>,
        req: ReqId,
        command: &Command,
        outcome: &Outcome,
        events: &[Event],
    ) {
        if req.origin == self.incarnation {
            let pending = self.pending.lock().expect("pending poisoned").remove(&req);
            let abandoned = match pending {
                Some(Pending::Outcome(tx)) => tx.send(outcome.clone()).is_err(),
                Some(Pending::Abandoned) => true,
                None => false,
            };
            if abandoned {
                self.undo(req, command, outcome);
            } else {
                self.note_holder(command, outcome);
            }
        }
        for event in events {
            self.deliver(event);
        }
        if let Command::CreateTable { .. }
        | Command::DeleteTable { .. }
        | Command::FoundTable { .. }
        | Command::SetReplicas { .. }
        | Command::RefoundTable { .. } = command
        {
            self.tables_changed.send_modify(|v| *v += 1);
        }
    }

    fn replaced(&self) {
        self.tables_changed.send_modify(|v| *v += 1);
        let identity = incarnation_node(&self.node);
        let state = &self.state().state;
        *self.involved.lock().expect("involved poisoned") = state.pids_of_node(identity);
        // Requests no longer queued (granted or dropped in entries this node
        // missed) stop waiting: their callers' cancel finds them gone.
        let mut waiting = self.waiting.lock().expect("waiting poisoned");
        waiting.retain(|req, _| state.waiters.contains_key(req));
    }
}

impl Inner {
    /// A local process got something: remember it, and if it has already
    /// ended, free it at once.
    fn note_holder(self: &Arc<Self>, command: &Command, outcome: &Outcome) {
        let pid = match (command, outcome) {
            (
                Command::Register { pid, .. },
                Outcome::Name(NameOutcome::Registered { .. } | NameOutcome::Reregistered { .. }),
            )
            | (Command::Acquire { pid, .. }, Outcome::Granted(_) | Outcome::Queued)
            | (Command::Stand { pid, .. }, Outcome::Stand(_)) => *pid,
            _ => return,
        };
        self.involve_or_free(pid);
    }

    fn involve_or_free(self: &Arc<Self>, pid: Pid) {
        if !self.is_local(pid) {
            return;
        }
        self.involve(pid);
        if !self.node.upgrade().is_some_and(|n| n.is_alive(pid)) {
            self.propose_later(Command::Exited { pid }, "free what an ended process got");
        }
    }

    /// Give back grants nobody waits for.
    pub(super) fn release_all(self: &Arc<Self>, pid: Pid, grants: &[Grant]) {
        for g in grants {
            let release = Command::ReleaseGrant {
                lock: g.lock.clone(),
                pid,
                token: g.token,
            };
            self.propose_later(release, "release a grant nobody waits for");
        }
    }

    /// Undo what a proposal nobody waits for any more did.
    fn undo(self: &Arc<Self>, req: ReqId, command: &Command, outcome: &Outcome) {
        let undo = match (command, outcome) {
            (Command::Register { .. }, _) => undo_registration(command, outcome),
            (Command::Acquire { pid, .. }, Outcome::Granted(grants)) => {
                self.release_all(*pid, grants);
                None
            }
            (Command::Acquire { .. }, Outcome::Queued) => Some(Command::Cancel { req }),
            (Command::Stand { group, pid, .. }, Outcome::Stand(_)) => Some(Command::Resign {
                group: group.clone(),
                pid: *pid,
            }),
            (Command::OpenSession { .. }, Outcome::Session(session)) => {
                // A session opened late is simply adopted if there is none.
                (!self.adopt_session(*session, Instant::now()))
                    .then_some(Command::CloseSession { session: *session })
            }
            _ => None,
        };
        if let Some(command) = undo {
            self.propose_later(command, "undo a late outcome");
        }
    }

    /// Tell this node's processes what an entry did for them.
    fn deliver(self: &Arc<Self>, event: &Event) {
        match event {
            Event::Granted { req, pid, grants } => {
                let waiter = self.waiting.lock().expect("waiting poisoned").remove(req);
                let taken = match waiter {
                    Some((tx, session)) if self.grants_live(session, *pid, grants) => {
                        tx.send(grants.clone()).is_ok()
                    }
                    // Revoked before its caller could hear of it: the
                    // caller's wait ends without it.
                    Some(_) => false,
                    None => req.origin != self.incarnation,
                };
                if !taken && self.is_local(*pid) {
                    self.release_all(*pid, grants);
                } else {
                    self.involve_or_free(*pid);
                }
            }
            Event::LeaderChanged {
                group,
                leader,
                candidates,
            } => {
                let Some((leader, term)) = *leader else {
                    return;
                };
                let Some(node) = self.node.upgrade() else {
                    return;
                };
                for pid in candidates.iter().filter(|p| node.is_local(**p)) {
                    if *pid == leader && !self.leads(group, leader, term) {
                        // Ended already (a later entry, or this node's
                        // session): the change that ended it tells.
                        continue;
                    }
                    let notice = if *pid == leader {
                        sysmsg::Coord::Elected {
                            group: group.clone(),
                            term,
                        }
                    } else {
                        sysmsg::Coord::LeaderChanged {
                            group: group.clone(),
                            leader,
                            term,
                        }
                    };
                    tell(&node, *pid, &notice);
                }
            }
            Event::SessionEnded {
                session,
                lost,
                stood,
                ..
            } => {
                // What the entry freed, not what the replica (which may
                // have applied later entries) has now.
                self.session_ended(*session, "it ended", |_| (lost.clone(), stood.clone()));
            }
        }
    }
}

/// How the state machine and the runtime reach the node's coordinator
/// without keeping it alive.
pub(super) struct Hook(pub(super) std::sync::Weak<Inner>);

impl ApplyObserver for Hook {
    fn applied(
        &self,
        _index: u64,
        req: ReqId,
        command: &Command,
        outcome: &Outcome,
        events: &[Event],
    ) {
        if let Some(inner) = self.0.upgrade() {
            inner.applied(req, command, outcome, events);
        }
    }

    fn replaced(&self) {
        if let Some(inner) = self.0.upgrade() {
            inner.replaced();
        }
    }
}

impl ExitObserver for Hook {
    fn exited(&self, pid: Pid) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        if inner
            .involved
            .lock()
            .expect("involved poisoned")
            .remove(&pid)
        {
            inner.propose_later(Command::Exited { pid }, "free what an ended process held");
        }
    }
}

impl Inner {
    pub(super) fn current_session(&self) -> Option<SessionId> {
        self.session.lock().expect("session poisoned").id
    }

    pub(super) fn status(&self) -> super::ClusterStatus {
        use super::{ClusterStatus, MemberStatus, SessionStatus};
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let matched = |id: &u64| {
            m.replication
                .as_ref()
                .and_then(|r| r.get(id).copied().flatten())
                .map(|l| l.index)
        };
        let row = |id: u64| {
            let node = membership.get_node(&id).cloned().unwrap_or_default();
            MemberStatus {
                id,
                name: node.name,
                addr: node.addr,
                matched: matched(&id),
            }
        };
        let voters: Vec<MemberStatus> = membership.voter_ids().map(row).collect();
        let learners: Vec<MemberStatus> = membership.learner_ids().map(row).collect();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Candidate => "candidate",
            ServerState::Follower if voters.iter().any(|v| v.id == self.me) => "follower",
            ServerState::Follower | ServerState::Learner => "learner",
            ServerState::Shutdown => "stopped",
        };
        let leader = m
            .current_leader
            .and_then(|id| membership.get_node(&id))
            .map(|n| n.name.clone());
        let session = self.current_session().map(|s| s.0);
        let applied = self.state();
        ClusterStatus {
            cluster: applied.state.cluster.clone(),
            node: self.member.name.clone(),
            member: self.me,
            role: role.to_string(),
            term: m.current_term,
            leader,
            voters,
            learners,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            sessions: applied
                .state
                .sessions
                .iter()
                .map(|(id, s)| SessionStatus {
                    id: id.0,
                    node: s.node.clone(),
                })
                .collect(),
            log_mode: match self.config.log_mode {
                super::LogMode::Disc => "disc",
                super::LogMode::Ram => "ram",
            }
            .to_string(),
            session,
            quorum_ack_ms: m.millis_since_quorum_ack,
            changing: membership.get_joint_config().len() > 1,
        }
    }
}
