//! What the coordination group's log holds: one [`Proposal`] per entry
//! (a [`Command`] and the id of the request that proposed it), and the
//! [`Outcome`] applying it gives. These are the log's storage format and
//! travel between nodes as they are, so a change to them is a change of
//! both: `cluster/log_golden.txt` records one encoded entry per command
//! kind, and `the_log_format_only_grows` in `cluster/tests.rs` keeps them.

use molt_abi::Pid;
use serde::{Deserialize, Serialize};

use molt_abi::table::{Replica, Spec};

use super::state::ClusterId;

/// A session: the log index of the entry that opened it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub u64);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "session {}", self.0)
    }
}

/// Who proposed an entry: the proposing node's incarnation (unique per
/// start) and its own counter. A node matches applied entries to the calls
/// waiting for them by this id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReqId {
    /// The proposing node's incarnation.
    pub origin: u64,
    /// Its counter.
    pub seq: u64,
}

/// Exclusive (one holder) or shared (any number of shared holders).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LockMode {
    /// One holder at a time.
    Exclusive,
    /// Any number of holders, none exclusive.
    Shared,
}

impl std::fmt::Display for LockMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LockMode::Exclusive => "exclusive",
            LockMode::Shared => "shared",
        })
    }
}

/// One lock of a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LockRequest {
    /// The lock's id.
    pub lock: String,
    /// How it is wanted.
    pub mode: LockMode,
}

/// One lock granted, with its fencing token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The lock.
    pub lock: String,
    /// Its fencing token: larger than every token granted before.
    pub token: u64,
}

/// A change to the coordination state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// The first entry of a cluster: who it is.
    Bootstrap {
        /// The cluster's identity.
        cluster: ClusterId,
    },
    /// A node opens a session (ending its earlier incarnations' ones).
    OpenSession {
        /// The node's name.
        node: String,
        /// Its incarnation.
        incarnation: u64,
        /// Its Raft id.
        member: u64,
    },
    /// A node ends its own session (it stops, or it fenced itself).
    CloseSession {
        /// The session.
        session: SessionId,
    },
    /// The leader ends a session that was not renewed in time.
    ExpireSession {
        /// The session.
        session: SessionId,
    },
    /// Register a cluster name if it is free.
    Register {
        /// The name.
        name: String,
        /// The process.
        pid: Pid,
        /// Its node's session.
        session: SessionId,
    },
    /// Free a name the process holds.
    Unregister {
        /// The name.
        name: String,
        /// The process.
        pid: Pid,
    },
    /// A process ended: free all it held or waited for.
    Exited {
        /// The process.
        pid: Pid,
    },
    /// Take a set of locks at once, or wait in their queues.
    Acquire {
        /// The process.
        pid: Pid,
        /// Its node's session.
        session: SessionId,
        /// The locks.
        locks: Vec<LockRequest>,
    },
    /// Give a lock back.
    Release {
        /// The lock.
        lock: String,
        /// The holder.
        pid: Pid,
    },
    /// A waiter gives up.
    Cancel {
        /// The `Acquire` it waits under.
        req: ReqId,
    },
    /// Stand in an election.
    Stand {
        /// The election.
        group: String,
        /// The candidate.
        pid: Pid,
        /// Its node's session.
        session: SessionId,
    },
    /// Leave an election.
    Resign {
        /// The election.
        group: String,
        /// The candidate.
        pid: Pid,
    },
    /// Nothing: a new leader's first entry, and a linearizable barrier.
    Noop,
    /// Give a lock back only if the process still holds it under `token`:
    /// how a node gives back a grant nobody waits for, so that a later
    /// grant of the same lock to the same process is left alone.
    ReleaseGrant {
        /// The lock.
        lock: String,
        /// The holder.
        pid: Pid,
        /// The grant's fencing token.
        token: u64,
    },
    /// Free a name only if the process still holds it under `token`: how
    /// a node undoes a registration whose caller had given up, so that a
    /// registration the same process made again since is left alone.
    UnregisterToken {
        /// The name.
        name: String,
        /// The holder.
        pid: Pid,
        /// The registration's fencing token.
        token: u64,
    },
    /// Create a replicated table: its definition and replicas (by node
    /// name). Its id is the entry's log index.
    CreateTable {
        /// The table.
        spec: Spec,
    },
    /// Delete a replicated table.
    DeleteTable {
        /// The table.
        name: String,
    },
    /// The first replica of table `name` (as created at index `id`) that
    /// starts its group: the others join it. Recorded once.
    FoundTable {
        /// The table.
        name: String,
        /// Its id.
        id: u64,
        /// The founding node.
        node: String,
        /// Its Raft id in the table's group.
        member: u64,
    },
    /// Change a replicated table's replicas: add or remove one, or change
    /// a copy type.
    SetReplicas {
        /// The table.
        name: String,
        /// Its replicas from now on.
        replicas: Vec<Replica>,
    },
    /// Found table `name`'s group again: its recorded founder is still
    /// Raft id `was`, and no replica holds the group any more (every
    /// replica was a `ram` copy and restarted).
    RefoundTable {
        /// The table.
        name: String,
        /// Its id.
        id: u64,
        /// The founder's Raft id on record.
        was: u64,
        /// The founding node.
        node: String,
        /// Its Raft id in the table's group.
        member: u64,
    },
}

/// One log entry's application data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Who proposed it.
    pub req: ReqId,
    /// What it does.
    pub command: Command,
}

/// Which limit a command ran into (the configuration key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    /// `names_max`.
    Names,
    /// `locks_max`.
    Locks,
    /// `waiters_per_lock_max`.
    WaitersPerLock,
    /// `waiters_max`.
    Waiters,
    /// `elections_max`.
    Elections,
    /// `candidates_max`.
    Candidates,
    /// `sessions_max`.
    Sessions,
    /// `tables_max`.
    Tables,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::Names => "names_max",
            Limit::Locks => "locks_max",
            Limit::WaitersPerLock => "waiters_per_lock_max",
            Limit::Waiters => "waiters_max",
            Limit::Elections => "elections_max",
            Limit::Candidates => "candidates_max",
            Limit::Sessions => "sessions_max",
            Limit::Tables => "tables_max",
        })
    }
}

/// What registering or unregistering a name did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NameOutcome {
    /// The name is the process's now: nobody held it.
    Registered {
        /// The registration's fencing token.
        token: u64,
    },
    /// Another process holds it.
    AlreadyRegistered {
        /// That process.
        holder: Pid,
    },
    /// The name is free now.
    Unregistered,
    /// Nobody holds the name.
    NotRegistered,
    /// Another process holds it.
    NotHolder {
        /// That process.
        holder: Pid,
    },
    /// The process held the name already: its registration is confirmed
    /// under a new fencing token (larger than the one before).
    Reregistered {
        /// The registration's new fencing token.
        token: u64,
    },
}

/// The leader of an election after standing in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandOutcome {
    /// The leader (the candidate itself, if it leads).
    pub leader: Pid,
    /// The leader's term, a fencing token.
    pub term: u64,
}

/// What applying a command did, as its proposer is told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied; nothing to report.
    Done,
    /// A session was opened.
    Session(SessionId),
    /// The command names a session that has ended.
    SessionExpired,
    /// A limit was reached; nothing changed.
    Limit(Limit),
    /// A name was registered or unregistered, or was not.
    Name(NameOutcome),
    /// The locks were granted at once.
    Granted(Vec<Grant>),
    /// The request waits in the locks' queues.
    Queued,
    /// The lock was released.
    Released,
    /// The process does not hold the lock.
    NotHeld,
    /// A lock request names a lock twice.
    Duplicate(String),
    /// The process already holds a lock it asked for.
    AlreadyHeld(String),
    /// The waiter left the queues.
    Cancelled,
    /// The request was no longer waiting (it was granted first).
    NotWaiting,
    /// The candidate stands; here is the leader.
    Stand(StandOutcome),
    /// The process was not a candidate.
    NotCandidate,
    /// The same request was applied before (its proposer handed it over
    /// again); nothing changed.
    Repeated,
    /// What a table command did.
    Table(TableOutcome),
}

/// What a table command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableOutcome {
    /// The table was created with this id.
    Created(u64),
    /// A table of that name exists.
    Exists,
    /// No table of that name (or not with that id).
    NoTable,
    /// The table was deleted.
    Deleted,
    /// The table's group was founded by this node and Raft id (now, or
    /// before).
    Founded {
        /// The founding node.
        node: String,
        /// Its Raft id.
        member: u64,
    },
    /// The replicas were changed.
    Changed,
}
