//! Tables (mnesia-like) as guests reach them: the requests of
//! [`crate::imports::TABLE_CALL`], their replies, and the events a
//! subscribed process gets (tag [`crate::tag::TABLE`]). All travel encoded
//! with the codec ([`crate::codec`]).
//!
//! Keys, values and index values are bytes: the host compares keys as
//! bytes (so an ordered set is in byte order) and never looks inside a
//! value. The SDK types them with serde and derives index values.
//!
//! A write is a [`Batch`]: conditions and operations applied together at
//! one index of the table's log, all of them or none. A transaction is one
//! batch whose conditions are the versions it read; a dirty write is a
//! batch without conditions.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

/// How a table keeps its keys (mnesia's table types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// One record per key.
    Set,
    /// One record per key, kept in key order (byte order): ranges,
    /// `first`, `next`.
    OrderedSet,
    /// Several records per key, each value at most once.
    Bag,
    /// Conflict-free (AP): one record per key, kept in key order, as in an
    /// ordered set; every replica takes writes, on either side of a
    /// partition, and the replicas converge once they hear from each
    /// other. Of two concurrent writes of a key the one with the later
    /// hybrid-clock timestamp stays (last writer wins); subscribers of a
    /// replica that discards one are told ([`Change::Conflict`]). No
    /// conditions, no linearizable reads.
    Lww,
    /// Conflict-free (AP): a counter per key that any replica changes
    /// ([`Op::Add`]; a PN-counter: concurrent adds all count). A read gives
    /// one record whose value is the total, an `i64` as the codec encodes
    /// it. No indexes; a key is never deleted.
    Counter,
    /// Conflict-free (AP): a set of values per key (an observed-remove
    /// set): `Put` adds a value, `DeleteValue` removes it, `Delete` removes
    /// every value this replica has seen; when an add and a remove of a
    /// value are concurrent, the add wins. Read as a bag.
    OrSet,
}

impl Kind {
    /// Whether tables of this kind are conflict-free (AP): replicas take
    /// writes apart and merge.
    pub fn conflict_free(self) -> bool {
        matches!(self, Kind::Lww | Kind::Counter | Kind::OrSet)
    }

    /// Whether a key holds one record (else several, as in a bag).
    pub fn one_per_key(self) -> bool {
        !matches!(self, Kind::Bag | Kind::OrSet)
    }

    /// Whether keys are kept in key order (ranges, `first`, `next`).
    pub fn ordered(self) -> bool {
        matches!(self, Kind::OrderedSet | Kind::Lww)
    }
}

/// How a replica keeps the table (mnesia's copy types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Copy {
    /// In memory only: empty after its node restarts.
    Ram,
    /// In memory, with a durable log and snapshots: intact after a restart.
    Disc,
    /// On disc only (redb), read from there: for tables larger than memory.
    DiscOnly,
}

impl Kind {
    /// Its name, as the CLI and the HTTP API show it (`ordered_set`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Set => "set",
            Kind::OrderedSet => "ordered_set",
            Kind::Bag => "bag",
            Kind::Lww => "lww",
            Kind::Counter => "counter",
            Kind::OrSet => "or_set",
        }
    }
}

impl Copy {
    /// Its name, as the CLI and the HTTP API show it (`disc_only`).
    pub fn name(self) -> &'static str {
        match self {
            Copy::Ram => "ram",
            Copy::Disc => "disc",
            Copy::DiscOnly => "disc_only",
        }
    }
}

/// One replica of a table: where, and how it keeps the table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// The node, `name@host`; empty for the node that creates the table.
    pub node: String,
    /// How it keeps the table.
    pub copy: Copy,
}

/// What a table is: its name, kind, indexes and replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// The table's name (1 to 255 bytes).
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// Its secondary indexes, by name; every write supplies one value per
    /// index, in this order.
    pub indexes: Vec<String>,
    /// Where it is kept. Empty: one `Ram` replica on the creating node.
    pub replicas: Vec<Replica>,
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// From this node's replica at once; it may lag the table's leader,
    /// and says so ([`Rows::stale`]).
    #[default]
    Dirty,
    /// As of a moment during the call: every write committed before the
    /// call began is seen. Fails with [`Error::NoQuorum`] on a minority.
    Linearizable,
}

/// What must hold for a batch to apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// The key has no record.
    Absent {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
    },
    /// The key's version is this one: it was read at this version and not
    /// written since.
    Version {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
        /// The version read.
        version: u64,
    },
    /// The writer still holds cluster lock `lock` under fencing `token`:
    /// no batch with a larger token for this lock has applied to this
    /// table, so a stale holder's write is refused. Applying records the
    /// token.
    Fence {
        /// The lock's id.
        lock: String,
        /// The writer's fencing token.
        token: u64,
    },
}

/// A change a batch makes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Write a record: in a set, the key's record; in a bag, one more
    /// value for the key (a value already there is rewritten).
    Put {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
        /// The value.
        #[serde(with = "crate::bytes")]
        value: Vec<u8>,
        /// One value per index of the table, in the table's order.
        index_values: Vec<Vec<u8>>,
    },
    /// Remove every record of the key.
    Delete {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
    },
    /// Remove one value of a bag's key (in a set: the record, if it has
    /// this value).
    DeleteValue {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
        /// The value.
        #[serde(with = "crate::bytes")]
        value: Vec<u8>,
    },
    /// Add `delta` to a counter's key ([`Kind::Counter`] only).
    Add {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
        /// What to add (negative: subtract).
        delta: i64,
    },
}

/// Conditions and changes for one table, applied at one log index, all or
/// nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// What must hold.
    pub conditions: Vec<Condition>,
    /// What changes, in order.
    pub ops: Vec<Op>,
}

/// Why a batch changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Abort {
    /// An `Absent` condition failed.
    Exists {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
    },
    /// A `Version` condition failed: the key's version now (`None`: no
    /// record).
    Changed {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
        /// Its version now.
        now: Option<u64>,
    },
    /// A `Fence` condition failed: a newer holder of the lock has written.
    StaleFence {
        /// The lock.
        lock: String,
        /// The writer's token.
        token: u64,
        /// The newest token used with this table.
        newest: u64,
    },
    /// A limit of the table would be crossed.
    Limit {
        /// The limit's name.
        limit: String,
        /// Its value.
        max: u64,
    },
    /// A `Put` gave a number of index values other than the table's
    /// number of indexes.
    IndexValues {
        /// Given.
        given: usize,
        /// The table's number of indexes.
        wanted: usize,
    },
    /// An operation the table's kind does not take (an `Add` to a table
    /// that is not a counter, a `Delete` of a counter's key).
    BadOp {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
        /// Why.
        why: String,
    },
    /// A transaction over several replicated tables that is committing
    /// holds the key: try again (a transaction runs again by itself).
    Locked {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
    },
    /// A transaction over several replicated tables took longer than its
    /// tables wait for one, and was rolled back: try again (a
    /// transaction runs again by itself).
    Expired,
}

impl Abort {
    /// Whether the batch may commit if tried again as it is: it met
    /// another transaction in flight, not a condition that failed.
    pub fn transient(&self) -> bool {
        matches!(self, Abort::Locked { .. } | Abort::Expired)
    }
}

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Abort::Exists { .. } => write!(f, "the key exists"),
            Abort::Changed { now, .. } => {
                write!(f, "the key was written since it was read (version now ")?;
                match now {
                    Some(v) => write!(f, "{v})"),
                    None => write!(f, "none)"),
                }
            }
            Abort::StaleFence {
                lock,
                token,
                newest,
            } => write!(
                f,
                "lock {lock}: token {token} is older than {newest}, already used here"
            ),
            Abort::Limit { limit, max } => write!(f, "{limit} ({max}) would be crossed"),
            Abort::IndexValues { given, wanted } => {
                write!(f, "{given} index values for a table with {wanted} indexes")
            }
            Abort::BadOp { why, .. } => f.write_str(why),
            Abort::Locked { .. } => write!(
                f,
                "the key is held by a transaction over several tables that is committing"
            ),
            Abort::Expired => write!(
                f,
                "the transaction over several tables took too long and was rolled back"
            ),
        }
    }
}

/// One stored record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The value.
    #[serde(with = "crate::bytes")]
    pub value: Vec<u8>,
    /// The log index of the batch that wrote it.
    pub version: u64,
    /// Its value for each of the table's indexes, in the table's order.
    pub index_values: Vec<Vec<u8>>,
}

/// A key and its records, as a read returns them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// The key.
    #[serde(with = "crate::bytes")]
    pub key: Vec<u8>,
    /// The key's version: the log index of the last batch that changed it;
    /// `0` if the key has no record (a transaction that read it conditions
    /// its write on the key's absence).
    pub version: u64,
    /// Its records: one in a set; in a bag, in write order.
    pub records: Vec<Record>,
}

/// What a read found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rows {
    /// The rows, in key order for ranges and prefixes.
    pub rows: Vec<Row>,
    /// The read stopped at its `limit` (or the host's reply limit) with
    /// more to come: read on from the last key.
    pub more: bool,
    /// The replica may lag the table's leader: a dirty read on a replica
    /// that has not heard from a leader lately, or on a minority.
    pub stale: bool,
    /// The table's log index the read saw.
    pub index: u64,
}

/// A table as `Info` describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// What it is.
    pub spec: Spec,
    /// Records in it (a bag's records all count).
    pub records: u64,
    /// Its log index: the last batch applied.
    pub index: u64,
    /// Its subscribers on this node.
    pub subscribers: u64,
}

/// A request to `table_call`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Create a table. Reply: `Done`.
    Create(Spec),
    /// Delete a table and everything in it. Reply: `Done`.
    Delete {
        /// The table.
        table: String,
    },
    /// Describe a table. Reply: `Info`.
    Info {
        /// The table.
        table: String,
    },
    /// The tables' names, sorted. Reply: `Tables`.
    List,
    /// A key's records. Reply: `Rows` (one row, with no records if the key
    /// has none).
    Get {
        /// The table.
        table: String,
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
        /// How fresh.
        consistency: Consistency,
    },
    /// The rows with this value in a secondary index, in key order. Reply:
    /// `Rows`.
    IndexGet {
        /// The table.
        table: String,
        /// The index.
        index: String,
        /// The index value.
        #[serde(with = "crate::bytes")]
        value: Vec<u8>,
        /// Most rows.
        limit: u32,
        /// How fresh.
        consistency: Consistency,
    },
    /// Rows with keys from `from` (included) up to `to` (excluded; `None`:
    /// to the end), in key (byte) order, for any kind of table: a set or
    /// bag is read in pages this way (mnesia's `select` with a
    /// continuation). `first` is a range from the empty key with limit 1.
    /// Reply: `Rows`.
    Range {
        /// The table.
        table: String,
        /// The first key.
        #[serde(with = "crate::bytes")]
        from: Vec<u8>,
        /// The key after the last.
        to: Option<Vec<u8>>,
        /// Most rows.
        limit: u32,
        /// How fresh.
        consistency: Consistency,
    },
    /// The row of the smallest key above `key`; ordered sets only. Reply:
    /// `Rows` (empty at the end).
    Next {
        /// The table.
        table: String,
        /// The key before.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
        /// How fresh.
        consistency: Consistency,
    },
    /// Rows whose keys begin with `prefix`, in key order. Reply: `Rows`.
    Prefix {
        /// The table.
        table: String,
        /// The prefix.
        #[serde(with = "crate::bytes")]
        prefix: Vec<u8>,
        /// Most rows.
        limit: u32,
        /// How fresh.
        consistency: Consistency,
    },
    /// Apply batches, all of them or none; each names its table. Reply:
    /// `Committed`, or `Error(Aborted)`.
    Commit(Vec<(String, Batch)>),
    /// Send the caller an [`Event`] for each batch committed to the table
    /// from now on. Reply: `Done`.
    Subscribe {
        /// The table.
        table: String,
    },
    /// Stop the caller's subscription. Reply: `Done`, or
    /// `Error(NotSubscribed)`.
    Unsubscribe {
        /// The table.
        table: String,
    },
    /// Keep a replicated table on one more node too, or change the copy
    /// type of the replica a node keeps. The new replica catches up while
    /// the table stays in use. Reply: `Done`.
    AddReplica {
        /// The table.
        table: String,
        /// The node and how it keeps the table.
        replica: Replica,
    },
    /// Stop keeping a replicated table on a node (a table keeps at least
    /// one replica: delete it instead). Reply: `Done`.
    RemoveReplica {
        /// The table.
        table: String,
        /// The node.
        node: String,
    },
    /// Create a fragmented (hash-partitioned) replicated table: `spec`'s
    /// replicas are the pool of nodes (and copy types) its fragments are
    /// placed on. Each key lives in one fragment, and each fragment is a
    /// replicated table of its own (`NAME#I/N`) on `copies` nodes of the
    /// pool. Reads and commits name the table as usual; a commit over
    /// keys of several fragments commits in all of them or none. Reply:
    /// `Done`.
    CreateFragmented {
        /// The table, and the pool its fragments are placed on.
        spec: Spec,
        /// How it is split.
        fragments: Fragments,
    },
}

/// How a fragmented table is split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fragments {
    /// Fragments (1 to 1024).
    pub count: u32,
    /// Replicas of each fragment (1 to the pool's size).
    pub copies: u32,
}

/// Why a table request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Error {
    /// No table by that name.
    NoTable(String),
    /// `Create` of a name in use.
    Exists(String),
    /// A table definition that cannot be: why.
    BadSpec(String),
    /// A request that does not fit its table (a range on a set, an unknown
    /// index): why.
    BadRequest(String),
    /// A limit would be crossed: its name and value.
    Limit {
        /// The limit's name.
        limit: String,
        /// Its value.
        max: u64,
    },
    /// The batches changed nothing: the table and why.
    Aborted {
        /// The table whose batch failed.
        table: String,
        /// Why.
        abort: Abort,
    },
    /// The table's replicas that answer are not a majority (this node is
    /// on a minority side, or its group is electing a leader). A commit
    /// that got this may still take effect.
    NoQuorum,
    /// `Unsubscribe` without a subscription.
    NotSubscribed(String),
    /// Something this node does not offer (yet): what.
    Unsupported(String),
    /// The table cannot serve now: its disc file failed, say (why, with
    /// the file's path). The node's other tables go on.
    Unavailable {
        /// The table.
        table: String,
        /// Why.
        why: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoTable(t) => write!(f, "no table {t}"),
            Error::Exists(t) => write!(f, "table {t} exists"),
            Error::BadSpec(why) => write!(f, "bad table definition: {why}"),
            Error::BadRequest(why) => write!(f, "bad table request: {why}"),
            Error::Limit { limit, max } => write!(f, "{limit} ({max}) would be crossed"),
            Error::Aborted { table, abort } => write!(f, "aborted on table {table}: {abort}"),
            Error::NoQuorum => write!(f, "no quorum: the table's replicas did not commit"),
            Error::NotSubscribed(t) => write!(f, "not subscribed to table {t}"),
            Error::Unsupported(what) => write!(f, "not supported: {what}"),
            Error::Unavailable { table, why } => write!(f, "table {table} is unavailable: {why}"),
        }
    }
}

/// The reply to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Done, nothing to say.
    Done,
    /// To `Info`.
    Info(Info),
    /// To `List`.
    Tables(Vec<String>),
    /// To a read.
    Rows(Rows),
    /// To `Commit`: the log index the batches applied at (per table; a
    /// commit over several local tables gives each its next index).
    Committed(Vec<u64>),
    /// The request failed.
    Error(Error),
}

impl Reply {
    /// Which reply this is, in a word (for messages about a reply that
    /// was not the one expected: naming it, not printing it, keeps a
    /// guest free of the formatting code printing would bring in).
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::Done => "done",
            Reply::Info(_) => "info",
            Reply::Tables(_) => "tables",
            Reply::Rows(_) => "rows",
            Reply::Committed(_) => "committed",
            Reply::Error(_) => "error",
        }
    }
}

/// A committed change, as subscribers see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A record written.
    Put {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
        /// The value.
        #[serde(with = "crate::bytes")]
        value: Vec<u8>,
    },
    /// Every record of a key removed.
    Delete {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
    },
    /// One value of a key removed.
    DeleteValue {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
        /// The value.
        #[serde(with = "crate::bytes")]
        value: Vec<u8>,
    },
    /// A conflict-free ([`Kind::Lww`]) table's replica merged two
    /// concurrent writes of a key and kept one: the other is gone. Told
    /// by the replica that merged them (each replica that does).
    Conflict {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
        /// The value kept (`None`: the key's delete won).
        kept: Option<Vec<u8>>,
        /// The value discarded (`None`: a delete was discarded).
        lost: Option<Vec<u8>>,
    },
}

/// What a subscribed process gets (tag [`crate::tag::TABLE`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A batch committed: its table, log index and changes, in commit
    /// order, at least once.
    Committed {
        /// The table.
        table: String,
        /// The batch's log index.
        index: u64,
        /// What it changed, in order.
        changes: Vec<Change>,
    },
    /// The subscription ended, and no event after `index` will come: the
    /// subscriber's mailbox was full (it fell behind), or the table was
    /// deleted. Subscribe again to go on (and read the table to catch
    /// up).
    Ended {
        /// The table.
        table: String,
        /// The last index told.
        index: u64,
        /// Why: `mailbox_full` or `deleted`.
        reason: String,
    },
}
