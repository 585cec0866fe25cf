//! The coordination group's replicated state and its one transition
//! function, [`State::apply`]: sessions, cluster names, locks and
//! elections. Pure: no I/O, no clock, no randomness, so every replica that
//! applies the same log holds the same state, and the rules are tested
//! here without a cluster.
//!
//! Invariant: this is the only code that changes replicated state, and it
//! runs only on committed log entries (through `machine.rs`).

use std::collections::{BTreeMap, VecDeque};

use molt_abi::{Pid, sysmsg};
use serde::{Deserialize, Serialize};

use molt_abi::table::Spec;

use super::command::{
    Command, Grant, Limit, LockMode, LockRequest, NameOutcome, Outcome, ReqId, SessionId,
    StandOutcome, TableOutcome,
};
use super::config::CoordLimits;

/// One node's session: what it holds lives as long as the session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The node's name, `name@host`.
    pub node: String,
    /// The node's incarnation: a restarted node opens a new session and
    /// its earlier one ends.
    pub incarnation: u64,
    /// The node's Raft id.
    pub member: u64,
}

/// A name's holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameEntry {
    /// The registered process.
    pub pid: Pid,
    /// The session of the process's node.
    pub session: SessionId,
    /// The fencing token of the registration.
    pub token: u64,
}

/// A process holding a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The holding process.
    pub pid: Pid,
    /// Exclusive or shared.
    pub mode: LockMode,
    /// Its fencing token.
    pub token: u64,
    /// The session of the holder's node.
    pub session: SessionId,
}

/// A request waiting for a set of locks; it sits in the queue of each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    /// The request, as its node knows it.
    pub req: ReqId,
    /// The waiting process.
    pub pid: Pid,
    /// The locks it wants, all at once.
    pub locks: Vec<LockRequest>,
    /// The session of its node.
    pub session: SessionId,
}

/// One lock: its holders and its FIFO queue (waiters by request).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Who holds it now: one exclusive holder, or shared holders.
    pub holders: Vec<Holder>,
    /// Who waits, in arrival order.
    pub queue: VecDeque<ReqId>,
}

/// One election: its candidates in the order they stood, and the leader.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Election {
    /// Candidates in arrival order; the leader is one of them.
    pub candidates: Vec<(Pid, SessionId)>,
    /// The leader and its term (a fencing token).
    pub leader: Option<(Pid, u64)>,
}

/// Something a replica tells its own node's processes after an entry is
/// applied: each node delivers the events about its own pids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A waiting request was granted its locks.
    Granted {
        /// The request.
        req: ReqId,
        /// The process.
        pid: Pid,
        /// A token per lock, in the request's order.
        grants: Vec<Grant>,
    },
    /// An election has a new leader (or none).
    LeaderChanged {
        /// The election.
        group: String,
        /// The new leader and its term.
        leader: Option<(Pid, u64)>,
        /// Every candidate (the leader among them).
        candidates: Vec<Pid>,
    },
    /// A session ended; its node should open a new one if it still runs.
    SessionEnded {
        /// The session.
        session: SessionId,
        /// Its node.
        node: String,
        /// What its processes held and led until this entry, as the
        /// notices its node owes them (`LockLost`, `LeaderLost`): taken
        /// before the entry freed it, since a replica that applies later
        /// entries at once no longer has it.
        lost: Vec<(Pid, sysmsg::Coord)>,
        /// The candidacies it freed, as (election, pid): its node stands
        /// those processes again under its next session.
        stood: Vec<(String, Pid)>,
    },
}

/// The replicated state of the coordination group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The cluster's identity, set by the first entry.
    pub cluster: Option<ClusterId>,
    /// The next fencing token: one sequence for grants, registrations and
    /// terms, so every token is unique and later tokens are larger.
    pub next_token: u64,
    /// Open sessions by id (the log index that opened them).
    pub sessions: BTreeMap<SessionId, Session>,
    /// Cluster names.
    pub names: BTreeMap<String, NameEntry>,
    /// Locks with a holder or a waiter (an idle lock is dropped).
    pub locks: BTreeMap<String, Lock>,
    /// Waiting requests.
    pub waiters: BTreeMap<ReqId, Waiter>,
    /// Elections with at least one candidate.
    pub elections: BTreeMap<String, Election>,
    /// Requests applied lately, by proposing node incarnation: a proposer
    /// may hand an entry over again when it cannot know whether the first
    /// attempt was taken, and the entry is applied once.
    pub recent: BTreeMap<u64, std::collections::BTreeSet<u64>>,
    /// Replicated tables by name.
    pub tables: BTreeMap<String, TableEntry>,
}

/// A replicated table as the coordination group keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// Its definition; each replica names its node.
    pub spec: Spec,
    /// Its id: the log index that created it (a table deleted and created
    /// again is another table).
    pub id: u64,
    /// The node and Raft id that founded its group, once one has.
    pub founder: Option<(String, u64)>,
}

/// Most request ids remembered per proposing node: far more than it can
/// have in flight (`requests_in_flight_max`) while it retries one.
pub const RECENT_PER_ORIGIN: usize = 4096;

/// Who a cluster is: a random id chosen when it was bootstrapped, and the
/// node that did it, so that an error can name both clusters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClusterId {
    /// Random, chosen once.
    pub id: u64,
    /// The node that bootstrapped it.
    pub founder: String,
}

impl std::fmt::Display for ClusterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x} (founded by {})", self.id, self.founder)
    }
}

impl State {
    /// Apply one committed command at log `index`; returns what the
    /// proposer is told and what each node tells its processes.
    pub fn apply(
        &mut self,
        index: u64,
        req: ReqId,
        command: &Command,
        limits: &CoordLimits,
        events: &mut Vec<Event>,
    ) -> Outcome {
        let recent = self.recent.entry(req.origin).or_default();
        if !recent.insert(req.seq) {
            return Outcome::Repeated;
        }
        if recent.len() > RECENT_PER_ORIGIN {
            recent.pop_first();
        }
        match command {
            Command::Bootstrap { cluster } => {
                if self.cluster.is_none() {
                    self.cluster = Some(cluster.clone());
                }
                Outcome::Done
            }
            Command::OpenSession {
                node,
                incarnation,
                member,
            } => self.open_session(index, node, *incarnation, *member, limits, events),
            Command::CloseSession { session } | Command::ExpireSession { session } => {
                self.end_session(*session, events);
                Outcome::Done
            }
            Command::Register { name, pid, session } => self.register(name, *pid, *session, limits),
            Command::Unregister { name, pid } => self.unregister(name, *pid),
            Command::UnregisterToken { name, pid, token } => match self.names.get(name) {
                Some(held) if held.pid == *pid && held.token == *token => {
                    self.unregister(name, *pid)
                }
                _ => Outcome::Done,
            },
            Command::Exited { pid } => {
                self.forget_pid(*pid, events);
                Outcome::Done
            }
            Command::Acquire {
                pid,
                session,
                locks,
            } => self.acquire(req, *pid, *session, locks, limits),
            Command::Release { lock, pid } => self.release(lock, *pid, events),
            Command::Cancel { req } => self.cancel(*req, events),
            Command::Stand {
                group,
                pid,
                session,
            } => self.stand(group, *pid, *session, limits, events),
            Command::Resign { group, pid } => self.resign(group, *pid, events),
            Command::Noop => Outcome::Done,
            Command::ReleaseGrant { lock, pid, token } => {
                self.release_where(lock, |h| h.pid == *pid && h.token == *token, events)
            }
            Command::CreateTable { spec } => {
                if self.tables.contains_key(&spec.name) {
                    Outcome::Table(TableOutcome::Exists)
                } else if self.tables.len() >= limits.tables_max {
                    Outcome::Limit(Limit::Tables)
                } else {
                    let entry = TableEntry {
                        spec: spec.clone(),
                        id: index,
                        founder: None,
                    };
                    self.tables.insert(spec.name.clone(), entry);
                    Outcome::Table(TableOutcome::Created(index))
                }
            }
            Command::DeleteTable { name } => match self.tables.remove(name) {
                Some(_) => Outcome::Table(TableOutcome::Deleted),
                None => Outcome::Table(TableOutcome::NoTable),
            },
            Command::FoundTable {
                name,
                id,
                node,
                member,
            } => match self.tables.get_mut(name) {
                Some(entry) if entry.id == *id => {
                    let (node, member) = entry
                        .founder
                        .get_or_insert_with(|| (node.clone(), *member))
                        .clone();
                    Outcome::Table(TableOutcome::Founded { node, member })
                }
                _ => Outcome::Table(TableOutcome::NoTable),
            },
            Command::RefoundTable {
                name,
                id,
                was,
                node,
                member,
            } => match self.tables.get_mut(name) {
                Some(entry) if entry.id == *id => {
                    if entry.founder.as_ref().is_none_or(|(_, m)| m == was) {
                        entry.founder = Some((node.clone(), *member));
                    }
                    let (node, member) = entry.founder.clone().unwrap_or_default();
                    Outcome::Table(TableOutcome::Founded { node, member })
                }
                _ => Outcome::Table(TableOutcome::NoTable),
            },
            Command::SetReplicas { name, replicas } => match self.tables.get_mut(name) {
                Some(entry) => {
                    entry.spec.replicas = replicas.clone();
                    Outcome::Table(TableOutcome::Changed)
                }
                None => Outcome::Table(TableOutcome::NoTable),
            },
        }
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    fn session_ok(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    fn open_session(
        &mut self,
        index: u64,
        node: &str,
        incarnation: u64,
        member: u64,
        limits: &CoordLimits,
        events: &mut Vec<Event>,
    ) -> Outcome {
        // A node's earlier incarnations are gone: what they held is freed.
        let stale: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.node == node && s.incarnation != incarnation)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.end_session(id, events);
        }
        if self.sessions.len() >= limits.sessions_max {
            return Outcome::Limit(Limit::Sessions);
        }
        let id = SessionId(index);
        self.sessions.insert(
            id,
            Session {
                node: node.to_string(),
                incarnation,
                member,
            },
        );
        Outcome::Session(id)
    }

    /// End a session and free all it held, at this one index.
    fn end_session(&mut self, session: SessionId, events: &mut Vec<Event>) {
        let Some(ended) = self.sessions.remove(&session) else {
            return;
        };
        // That incarnation proposes nothing more under this session; a new
        // one (same node restarted) has another origin.
        if !self
            .sessions
            .values()
            .any(|s| s.incarnation == ended.incarnation)
        {
            self.recent.remove(&ended.incarnation);
        }
        let lost = self.held_under(session);
        let stood = self.stood_under(session);
        self.free(|_, s| s == session, events);
        events.push(Event::SessionEnded {
            session,
            node: ended.node,
            lost,
            stood,
        });
    }

    /// The locks held and elections led under `session`, as the notices
    /// its node gives their processes when the session ends or the node
    /// fences itself.
    pub fn held_under(&self, session: SessionId) -> Vec<(Pid, sysmsg::Coord)> {
        let mut out = Vec::new();
        for (lock, l) in &self.locks {
            for h in l.holders.iter().filter(|h| h.session == session) {
                let (lock, token) = (lock.clone(), h.token);
                out.push((h.pid, sysmsg::Coord::LockLost { lock, token }));
            }
        }
        for (group, e) in &self.elections {
            if let Some((leader, term)) = e.leader
                && e.candidates.contains(&(leader, session))
            {
                let group = group.clone();
                out.push((leader, sysmsg::Coord::LeaderLost { group, term }));
            }
        }
        out
    }

    /// The candidacies held under `session`, as (election, pid), in each
    /// election's order.
    pub fn stood_under(&self, session: SessionId) -> Vec<(String, Pid)> {
        let mut out = Vec::new();
        for (group, e) in &self.elections {
            for (pid, _) in e.candidates.iter().filter(|(_, s)| *s == session) {
                out.push((group.clone(), *pid));
            }
        }
        out
    }

    /// A process ended: free its names, locks, waits and candidacies.
    fn forget_pid(&mut self, pid: Pid, events: &mut Vec<Event>) {
        self.free(|p, _| p == pid, events);
    }

    /// Free every name, lock, wait and candidacy whose (pid, session)
    /// `gone` picks, granting and electing the next in line.
    fn free(&mut self, gone: impl Fn(Pid, SessionId) -> bool, events: &mut Vec<Event>) {
        self.names.retain(|_, e| !gone(e.pid, e.session));
        let waiting: Vec<ReqId> = self
            .waiters
            .iter()
            .filter(|(_, w)| gone(w.pid, w.session))
            .map(|(r, _)| *r)
            .collect();
        let mut touched: Vec<String> = Vec::new();
        for req in waiting {
            touched.extend(self.drop_waiter(req));
        }
        for (name, lock) in &mut self.locks {
            let before = lock.holders.len();
            lock.holders.retain(|h| !gone(h.pid, h.session));
            if lock.holders.len() != before {
                touched.push(name.clone());
            }
        }
        self.regrant(touched, events);
        let groups: Vec<String> = self.elections.keys().cloned().collect();
        for group in groups {
            self.drop_candidates(&group, &gone, events);
        }
    }

    fn register(
        &mut self,
        name: &str,
        pid: Pid,
        session: SessionId,
        limits: &CoordLimits,
    ) -> Outcome {
        if !self.session_ok(session) {
            return Outcome::SessionExpired;
        }
        if let Some(held) = self.names.get(name).copied() {
            if held.pid != pid {
                let holder = held.pid;
                return Outcome::Name(NameOutcome::AlreadyRegistered { holder });
            }
            // The holder registering again: kept under the newer of the two
            // sessions of its node, so that a registration confirmed under
            // the node's new session does not end with its old one; a new
            // token, so that undoing an earlier registration of the same
            // process by its token leaves this one alone.
            let token = self.token();
            let entry = self.names.get_mut(name).expect("held");
            entry.session = held.session.max(session);
            entry.token = token;
            return Outcome::Name(NameOutcome::Reregistered { token });
        }
        if self.names.len() >= limits.names_max {
            return Outcome::Limit(Limit::Names);
        }
        let token = self.token();
        self.names.insert(
            name.to_string(),
            NameEntry {
                pid,
                session,
                token,
            },
        );
        Outcome::Name(NameOutcome::Registered { token })
    }

    fn unregister(&mut self, name: &str, pid: Pid) -> Outcome {
        match self.names.get(name) {
            None => Outcome::Name(NameOutcome::NotRegistered),
            Some(held) if held.pid != pid => {
                Outcome::Name(NameOutcome::NotHolder { holder: held.pid })
            }
            Some(_) => {
                self.names.remove(name);
                Outcome::Name(NameOutcome::Unregistered)
            }
        }
    }

    fn acquire(
        &mut self,
        req: ReqId,
        pid: Pid,
        session: SessionId,
        locks: &[LockRequest],
        limits: &CoordLimits,
    ) -> Outcome {
        if !self.session_ok(session) {
            return Outcome::SessionExpired;
        }
        // A request that names a lock twice, or that this process already
        // holds, is refused: it would wait for itself.
        for (i, l) in locks.iter().enumerate() {
            if locks[..i].iter().any(|o| o.lock == l.lock) {
                return Outcome::Duplicate(l.lock.clone());
            }
            // Held, or already asked for by a request still waiting (a
            // retry after a timeout whose cancel has not landed yet).
            if let Some(lock) = self.locks.get(&l.lock)
                && (lock.holders.iter().any(|h| h.pid == pid)
                    || lock
                        .queue
                        .iter()
                        .any(|r| self.waiters.get(r).is_some_and(|w| w.pid == pid)))
            {
                return Outcome::AlreadyHeld(l.lock.clone());
            }
        }
        let new_locks = locks
            .iter()
            .filter(|l| !self.locks.contains_key(&l.lock))
            .count();
        if self.locks.len() + new_locks > limits.locks_max {
            return Outcome::Limit(Limit::Locks);
        }
        if self.grantable(locks, None) {
            let grants = self.grant(pid, session, locks);
            return Outcome::Granted(grants);
        }
        if locks.iter().any(|l| {
            self.locks
                .get(&l.lock)
                .is_some_and(|k| k.queue.len() >= limits.waiters_per_lock_max)
        }) {
            return Outcome::Limit(Limit::WaitersPerLock);
        }
        if self.waiters.len() >= limits.waiters_max {
            return Outcome::Limit(Limit::Waiters);
        }
        for l in locks {
            self.locks
                .entry(l.lock.clone())
                .or_default()
                .queue
                .push_back(req);
        }
        self.waiters.insert(
            req,
            Waiter {
                req,
                pid,
                locks: locks.to_vec(),
                session,
            },
        );
        Outcome::Queued
    }

    /// Whether `locks` can all be granted now: each compatible with its
    /// holders, and (strict FIFO) nobody ahead in any of the queues other
    /// than `me`.
    fn grantable(&self, locks: &[LockRequest], me: Option<ReqId>) -> bool {
        locks.iter().all(|l| match self.locks.get(&l.lock) {
            None => true,
            Some(lock) => {
                let first = lock.queue.front().copied();
                let ahead_ok = first.is_none() || first == me;
                let compatible = match l.mode {
                    LockMode::Exclusive => lock.holders.is_empty(),
                    LockMode::Shared => lock.holders.iter().all(|h| h.mode == LockMode::Shared),
                };
                ahead_ok && compatible
            }
        })
    }

    fn grant(&mut self, pid: Pid, session: SessionId, locks: &[LockRequest]) -> Vec<Grant> {
        let mut grants = Vec::with_capacity(locks.len());
        for l in locks {
            let token = self.token();
            self.locks
                .entry(l.lock.clone())
                .or_default()
                .holders
                .push(Holder {
                    pid,
                    mode: l.mode,
                    token,
                    session,
                });
            grants.push(Grant {
                lock: l.lock.clone(),
                token,
            });
        }
        grants
    }

    /// Remove a waiter from every queue; returns the locks it waited on.
    fn drop_waiter(&mut self, req: ReqId) -> Vec<String> {
        let Some(waiter) = self.waiters.remove(&req) else {
            return Vec::new();
        };
        let mut names = Vec::with_capacity(waiter.locks.len());
        for l in &waiter.locks {
            if let Some(lock) = self.locks.get_mut(&l.lock) {
                lock.queue.retain(|r| *r != req);
            }
            names.push(l.lock.clone());
        }
        names
    }

    /// After holders or waiters left `touched` locks: grant every waiter
    /// now at the head of all its queues, until none is, then drop idle
    /// locks.
    fn regrant(&mut self, mut touched: Vec<String>, events: &mut Vec<Event>) {
        while let Some(name) = touched.pop() {
            while let Some(head) = self.locks.get(&name).and_then(|l| l.queue.front().copied()) {
                let Some(waiter) = self.waiters.get(&head).cloned() else {
                    // Cannot happen: queues and waiters change together.
                    if let Some(lock) = self.locks.get_mut(&name) {
                        lock.queue.pop_front();
                    }
                    continue;
                };
                if !self.grantable(&waiter.locks, Some(head)) {
                    break;
                }
                self.drop_waiter(head);
                let grants = self.grant(waiter.pid, waiter.session, &waiter.locks);
                // Its other locks' queues moved too.
                for l in &waiter.locks {
                    if l.lock != name {
                        touched.push(l.lock.clone());
                    }
                }
                events.push(Event::Granted {
                    req: head,
                    pid: waiter.pid,
                    grants,
                });
            }
            if self
                .locks
                .get(&name)
                .is_some_and(|l| l.holders.is_empty() && l.queue.is_empty())
            {
                self.locks.remove(&name);
            }
        }
    }

    fn release(&mut self, name: &str, pid: Pid, events: &mut Vec<Event>) -> Outcome {
        self.release_where(name, |h| h.pid == pid, events)
    }

    /// Drop the holders of lock `name` that `gone` picks and grant the
    /// next in line.
    fn release_where(
        &mut self,
        name: &str,
        gone: impl Fn(&Holder) -> bool,
        events: &mut Vec<Event>,
    ) -> Outcome {
        let Some(lock) = self.locks.get_mut(name) else {
            return Outcome::NotHeld;
        };
        let before = lock.holders.len();
        lock.holders.retain(|h| !gone(h));
        if lock.holders.len() == before {
            return Outcome::NotHeld;
        }
        self.regrant(vec![name.to_string()], events);
        Outcome::Released
    }

    /// A waiter gave up (its timeout): drop it, unless it was granted
    /// first, in which case it holds the locks and is told their tokens.
    fn cancel(&mut self, req: ReqId, events: &mut Vec<Event>) -> Outcome {
        if self.waiters.contains_key(&req) {
            let touched = self.drop_waiter(req);
            self.regrant(touched, events);
            Outcome::Cancelled
        } else {
            Outcome::NotWaiting
        }
    }

    fn stand(
        &mut self,
        group: &str,
        pid: Pid,
        session: SessionId,
        limits: &CoordLimits,
        events: &mut Vec<Event>,
    ) -> Outcome {
        if !self.session_ok(session) {
            return Outcome::SessionExpired;
        }
        if !self.elections.contains_key(group) && self.elections.len() >= limits.elections_max {
            return Outcome::Limit(Limit::Elections);
        }
        let standing = self
            .elections
            .get(group)
            .is_some_and(|e| e.candidates.iter().any(|(p, _)| *p == pid));
        let candidates = self.elections.get(group).map_or(0, |e| e.candidates.len());
        if !standing && candidates >= limits.candidates_max {
            return Outcome::Limit(Limit::Candidates);
        }
        let election = self.elections.entry(group.to_string()).or_default();
        if !standing {
            election.candidates.push((pid, session));
        }
        if election.leader.is_none() {
            self.next_token += 1;
            let term = self.next_token;
            let election = self.elections.get_mut(group).expect("just inserted");
            election.leader = Some((pid, term));
            events.push(Event::LeaderChanged {
                group: group.to_string(),
                leader: election.leader,
                candidates: election.candidates.iter().map(|(p, _)| *p).collect(),
            });
        }
        let election = &self.elections[group];
        let (leader, term) = election.leader.expect("a leader was set");
        Outcome::Stand(StandOutcome { leader, term })
    }

    fn resign(&mut self, group: &str, pid: Pid, events: &mut Vec<Event>) -> Outcome {
        let was = self
            .elections
            .get(group)
            .is_some_and(|e| e.candidates.iter().any(|(p, _)| *p == pid));
        if !was {
            return Outcome::NotCandidate;
        }
        self.drop_candidates(group, |p, _| p == pid, events);
        Outcome::Done
    }

    /// Drop the candidates `gone` picks; if the leader was one, the next
    /// candidate in line leads with a new term.
    fn drop_candidates(
        &mut self,
        group: &str,
        gone: impl Fn(Pid, SessionId) -> bool,
        events: &mut Vec<Event>,
    ) {
        let Some(election) = self.elections.get_mut(group) else {
            return;
        };
        let before = election.candidates.len();
        election.candidates.retain(|(p, s)| !gone(*p, *s));
        if election.candidates.len() == before {
            return;
        }
        let leader_gone = election
            .leader
            .is_some_and(|(l, _)| !election.candidates.iter().any(|(p, _)| *p == l));
        if election.candidates.is_empty() {
            self.elections.remove(group);
            if leader_gone {
                events.push(Event::LeaderChanged {
                    group: group.to_string(),
                    leader: None,
                    candidates: Vec::new(),
                });
            }
            return;
        }
        if leader_gone {
            self.next_token += 1;
            let term = self.next_token;
            let election = self.elections.get_mut(group).expect("still there");
            election.leader = Some((election.candidates[0].0, term));
            events.push(Event::LeaderChanged {
                group: group.to_string(),
                leader: election.leader,
                candidates: election.candidates.iter().map(|(p, _)| *p).collect(),
            });
        }
    }

    /// The holder of a name.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.names.get(name).map(|e| e.pid)
    }

    /// The processes of node `(node, incarnation)` that hold or wait for
    /// anything.
    pub fn pids_of_node(&self, (node, incarnation): (u64, u64)) -> std::collections::HashSet<Pid> {
        let mine = |p: &Pid| p.node == node && p.incarnation == incarnation;
        let mut out = std::collections::HashSet::new();
        out.extend(self.names.values().map(|e| e.pid).filter(mine));
        out.extend(self.waiters.values().map(|w| w.pid).filter(mine));
        for lock in self.locks.values() {
            out.extend(lock.holders.iter().map(|h| h.pid).filter(mine));
        }
        for e in self.elections.values() {
            out.extend(e.candidates.iter().map(|(p, _)| *p).filter(mine));
        }
        out
    }
}
