//! Tables, as mnesia's: sets, ordered sets and bags of typed records,
//! with secondary indexes, transactions and change events.
//!
//! A [`Table`] names a table and types it: keys are [`Key`]s (encoded so
//! that bytes sort as keys do), values any serde type. Declare one as a
//! `static` and use it from any process of the node:
//!
//! ```no_run
//! use molt_sdk::table::{self, Kind, Table};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Cart { owner: String, items: Vec<String> }
//!
//! static CARTS: Table<u64, Cart> =
//!     Table::indexed("carts", &[("owner", |c: &Cart| table::index_key(&c.owner))]);
//!
//! CARTS.create(Kind::Set).unwrap();
//! // A transaction: read, decide, write; re-run if another write got in
//! // between, so the add is never lost.
//! table::transaction(|tx| {
//!     let mut cart = tx.read(&CARTS, &7)?.unwrap_or(Cart { owner: "ann".into(), items: vec![] });
//!     cart.items.push("tea".into());
//!     tx.write(&CARTS, &7, &cart)
//! })
//! .unwrap();
//! let anns = CARTS.index_read("owner", &"ann".to_string()).unwrap();
//! # let _ = anns;
//! ```
//!
//! - **Dirty** operations ([`Table::read`], [`Table::write`], ...) act at
//!   once on this node's replica. A dirty write is still one committed
//!   batch; a dirty read may lag the table's leader on a replicated table
//!   and says so ([`Rows::stale`], through [`Table::read_rows`]).
//! - **Transactions** ([`transaction`]) record the version of every key
//!   they read, buffer their writes, and commit them as one batch on the
//!   condition that no key read has changed. If one has, the closure runs
//!   again on fresh data (up to [`Options::attempts`] times, with jittered
//!   back-off). As in mnesia, the closure must have no other side
//!   effects. A transaction may span several tables.
//! - **Conditions** a transaction can state itself: a key is absent
//!   ([`Tx::require_absent`]), or the writer still holds a cluster lock
//!   ([`Tx::fence`], with the fencing token from [`crate::global::lock`]):
//!   a failed one aborts with [`Error::Table`] (`Aborted`), without a
//!   retry.
//! - A closure that returns `Ok` commits what it wrote; to give up and
//!   write nothing, it returns [`cancel`]'s error (mnesia's `abort`).
//! - **Events**: a subscribed process gets a [`crate::System::Table`]
//!   message for each committed batch, in commit order.
//! - **Conflict-free tables** ([`Kind::Lww`], [`Kind::Counter`],
//!   [`Kind::OrSet`]) take dirty writes on every replica, on both sides of
//!   a partition, and converge once the replicas hear from each other:
//!   for presence, caches and counters. An `Lww` key keeps the write with
//!   the later hybrid-clock time, and a replica that discards a
//!   concurrent write tells its subscribers ([`Change::Conflict`]); a
//!   counter counts every [`Table::add`]; an OR-set is read as a bag
//!   ([`Table::read_all`]; [`Table::write`] adds a value,
//!   [`Table::delete_value`] removes it), and an add wins over a remove it
//!   did not see. They take no transactions and no linearizable reads.

mod key;
mod wire;

use std::marker::PhantomData;
use std::time::Duration;

pub use molt_abi::table::{
    Abort, Change, Consistency, Copy, Error as TableError, Event, Info, Kind, Replica, Rows,
};
use molt_abi::table::{Batch, Condition, Op, Reply, Request, Spec};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::key::Key;
use crate::codec::{self, DecodeError};
use crate::sys;

/// Why a table operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The node refused it: no such table, a limit, an abort, no quorum...
    Table(TableError),
    /// A record, key or reply that does not decode as its type (the table
    /// was written with another type, or by another program).
    Decode(String),
    /// A transaction ran [`Options::attempts`] times and another write got
    /// in each time.
    Conflict {
        /// How many times it ran.
        attempts: u32,
    },
    /// The host refused the call itself (a status code, see
    /// [`crate::Error`]).
    Host(crate::Error),
    /// The transaction's closure gave up with [`cancel`]: nothing was
    /// written. Its reason.
    Cancelled(String),
}

/// Give up a transaction from inside its closure, as mnesia's `abort`:
/// return this, and nothing the closure wrote is committed; the
/// transaction returns [`Error::Cancelled`] with `reason`.
pub fn cancel<T>(reason: impl Into<String>) -> Result<T, Error> {
    Err(Error::Cancelled(reason.into()))
}

impl Error {
    /// Whether this is the abort of a failed condition, and which.
    pub fn abort(&self) -> Option<&Abort> {
        match self {
            Error::Table(TableError::Aborted { abort, .. }) => Some(abort),
            _ => None,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Table(e) => write!(f, "{e}"),
            Error::Decode(why) => write!(f, "table data does not decode: {why}"),
            Error::Conflict { attempts } => write!(
                f,
                "the transaction conflicted with other writes {attempts} times"
            ),
            Error::Host(e) => write!(f, "table call refused: {e}"),
            Error::Cancelled(reason) => write!(f, "cancelled: {reason}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Error {
        Error::Decode(e.to_string())
    }
}

/// Encode an index value (what an index function returns): index values
/// compare as bytes, and equal values give equal bytes.
pub fn index_key<I: Key>(value: &I) -> Vec<u8> {
    value.encode()
}

/// An index of a table of `V`s: its name and how to get a value's index
/// bytes (usually through [`index_key`]).
pub type Index<V> = (&'static str, fn(&V) -> Vec<u8>);

/// A table's name and types: keys `K`, values `V`, and its secondary
/// indexes. Cheap, `const`: declare it as a `static`.
pub struct Table<K, V: 'static> {
    name: &'static str,
    indexes: &'static [Index<V>],
    _types: PhantomData<fn(K, V)>,
}

/// The request buffer size that covers most replies: a longer reply is
/// fetched with a second call.
const REPLY_BUFFER_BYTES: usize = 16 * 1024;

std::thread_local! {
    /// The request and reply buffers, reused by every call.
    static BUFFERS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Send `request` and decode its reply.
fn call(request: &Request) -> Result<Reply, Error> {
    call_encoded(|buf| codec::encode_to_vec(request, buf))
}

/// Send the request `encode` writes and decode its reply.
fn call_encoded(encode: impl FnOnce(&mut Vec<u8>)) -> Result<Reply, Error> {
    BUFFERS.with_borrow_mut(|(encoded, out)| {
        encoded.clear();
        encode(encoded);
        if out.len() < REPLY_BUFFER_BYTES {
            out.resize(REPLY_BUFFER_BYTES, 0);
        }
        let code = sys::table_call(encoded, out);
        let len = crate::error::check(code).map_err(Error::Host)? as usize;
        if len > out.len() {
            out.resize(len, 0);
            crate::error::check(sys::table_reply(out)).map_err(Error::Host)?;
        }
        match codec::decode(&out[..len])? {
            Reply::Error(e) => Err(Error::Table(e)),
            reply => Ok(reply),
        }
    })
}

/// A dirty read as `table_get` returns it, borrowed from the reply
/// buffer.
/// (The table's index and the stale flag, at bytes 8 and 16, are not
/// needed by the reads that use it.)
struct Got<'a> {
    version: u64,
    count: u32,
    /// The records: each a `u32` length and the value.
    records: &'a [u8],
}

impl<'a> Got<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Got<'a>> {
        let u64_at = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
        let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
        Some(Got {
            version: u64_at(0)?,
            count: u32_at(20)?,
            records: bytes.get(24..)?,
        })
    }

    /// Each record's value, in order.
    fn values(&self) -> impl Iterator<Item = &'a [u8]> {
        let mut rest = self.records;
        (0..self.count).map_while(move |_| {
            let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let value = rest.get(4..4 + len)?;
            rest = &rest[4 + len..];
            Some(value)
        })
    }
}

/// A dirty read of the key whose bytes `encode` writes, through the fast
/// `table_get`; `f` sees it in the reply buffer.
fn get_with<T>(
    table: &str,
    encode: impl FnOnce(&mut Vec<u8>),
    f: impl FnOnce(Got<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    let mut f = Some(f);
    let fast = BUFFERS.with_borrow_mut(|(key, out)| {
        key.clear();
        encode(key);
        if out.len() < REPLY_BUFFER_BYTES {
            out.resize(REPLY_BUFFER_BYTES, 0);
        }
        let mut len = sys::table_get(table, key, out);
        if len >= 0 && len as usize > out.len() {
            out.resize(len as usize, 0);
            len = sys::table_get(table, key, out);
        }
        if len == molt_abi::status::TABLE_ERROR {
            return Err(key.clone());
        }
        let f = f.take().expect("called once");
        Ok(crate::error::check(len)
            .map_err(Error::Host)
            .and_then(|len| {
                out.get(..len as usize)
                    .and_then(Got::parse)
                    .ok_or_else(|| Error::Decode("a table_get reply that does not parse".into()))
            })
            .and_then(f))
    });
    let key = match fast {
        Ok(result) => return result,
        Err(key) => key,
    };
    // The general call says why; or, for a replicated table this node
    // keeps no replica of, a replica answers: its row laid out as
    // `table_get` lays it. (The buffers are free again: `call` uses them.)
    let request = Request::Get {
        table: table.to_string(),
        key,
        consistency: Consistency::Dirty,
    };
    let rows = match call(&request)? {
        Reply::Rows(rows) => rows,
        reply => return Err(unexpected(reply)),
    };
    let row = rows.rows.first();
    let records = row.map_or(&[][..], |r| &r.records[..]);
    let mut out = Vec::with_capacity(24 + records.iter().map(|r| 4 + r.value.len()).sum::<usize>());
    out.extend_from_slice(&row.map_or(0, |r| r.version).to_le_bytes());
    out.extend_from_slice(&rows.index.to_le_bytes());
    out.extend_from_slice(&u32::from(rows.stale).to_le_bytes());
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for record in records {
        out.extend_from_slice(&(record.value.len() as u32).to_le_bytes());
        out.extend_from_slice(&record.value);
    }
    let got =
        Got::parse(&out).ok_or_else(|| Error::Decode("a row that does not lay out".into()))?;
    (f.take().expect("called once"))(got)
}

fn unexpected(reply: Reply) -> Error {
    Error::Decode(format!("unexpected table reply: {}", reply.kind()))
}

/// The names of this node's tables, sorted.
pub fn tables() -> Result<Vec<String>, Error> {
    match call(&Request::List)? {
        Reply::Tables(names) => Ok(names),
        other => Err(unexpected(other)),
    }
}

/// How to create a table beyond its kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Where it is kept; empty: one `Ram` replica on this node. With
    /// `fragments`: the pool of nodes its fragments are placed on.
    pub replicas: Vec<Replica>,
    /// Split it by key over this many replicated fragments (see
    /// [`Placement::fragments`]).
    pub fragments: Option<molt_abi::table::Fragments>,
}

impl Placement {
    /// One replica, on this node, kept as `copy` says (`Disc`: intact
    /// after the node restarts).
    pub fn here(copy: Copy) -> Placement {
        Placement::on(&[""], copy)
    }

    /// A replicated table: one replica on each of `nodes` (`name@host`;
    /// `""` is this node), each kept as `copy` says. Its writes commit
    /// through the replicas' Raft group, so the table goes on while a
    /// majority of them is up.
    pub fn on(nodes: &[&str], copy: Copy) -> Placement {
        Placement {
            replicas: nodes
                .iter()
                .map(|node| Replica {
                    node: String::from(*node),
                    copy,
                })
                .collect(),
            fragments: None,
        }
    }

    /// Split the table by key into `count` fragments, each a replicated
    /// table of its own kept on `copies` nodes of this placement's (its
    /// pool: `Placement::everywhere(Copy::Ram).fragments(8, 2)`), placed
    /// so that every node keeps about as many. A key's fragment is fixed
    /// by a hash of its bytes. Reads and transactions name the table as
    /// usual; a transaction over keys of several fragments commits in all
    /// of them or none. Not for conflict-free kinds.
    pub fn fragments(self, count: u32, copies: u32) -> Placement {
        Placement {
            fragments: Some(molt_abi::table::Fragments { count, copies }),
            ..self
        }
    }

    /// A replicated table with a replica on every node of the cluster
    /// (as it is when the table is created).
    pub fn everywhere(copy: Copy) -> Placement {
        Placement::on(&["all"], copy)
    }
}

impl<K: Key, V: Serialize + DeserializeOwned + 'static> Table<K, V> {
    /// A table without secondary indexes.
    pub const fn new(name: &'static str) -> Table<K, V> {
        Table {
            name,
            indexes: &[],
            _types: PhantomData,
        }
    }

    /// A table with secondary indexes: each write supplies every index's
    /// value for the record, computed by its function.
    pub const fn indexed(name: &'static str, indexes: &'static [Index<V>]) -> Table<K, V> {
        Table {
            name,
            indexes,
            _types: PhantomData,
        }
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Create it, empty, with one `Ram` replica on this node. Errors:
    /// [`TableError::Exists`], a limit.
    pub fn create(&self, kind: Kind) -> Result<(), Error> {
        self.create_with(kind, Placement::default())
    }

    /// Create it with replicas as `placement` says.
    pub fn create_with(&self, kind: Kind, placement: Placement) -> Result<(), Error> {
        let spec = Spec {
            name: self.name.to_string(),
            kind,
            indexes: self.indexes.iter().map(|(n, _)| n.to_string()).collect(),
            replicas: placement.replicas,
        };
        let request = match placement.fragments {
            Some(fragments) => Request::CreateFragmented { spec, fragments },
            None => Request::Create(spec),
        };
        call(&request).map(drop)
    }

    /// Delete it and everything in it; subscribers get an `Ended` event.
    pub fn delete_table(&self) -> Result<(), Error> {
        call(&Request::Delete {
            table: self.name.to_string(),
        })
        .map(drop)
    }

    /// What it is and holds.
    pub fn info(&self) -> Result<Info, Error> {
        match call(&Request::Info {
            table: self.name.to_string(),
        })? {
            Reply::Info(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    fn rows(&self, request: Request) -> Result<Rows, Error> {
        match call(&request)? {
            Reply::Rows(rows) => Ok(rows),
            other => Err(unexpected(other)),
        }
    }

    /// The raw rows of `key`, read as `consistency` says: with its
    /// version, and whether the replica may be stale.
    pub fn read_rows(&self, key: &K, consistency: Consistency) -> Result<Rows, Error> {
        self.rows(Request::Get {
            table: self.name.to_string(),
            key: key.encode(),
            consistency,
        })
    }

    /// Keep this replicated table on `node` too (or change how `node`
    /// keeps it); the new replica catches up while the table is in use.
    pub fn add_replica(&self, node: &str, copy: Copy) -> Result<(), Error> {
        let request = Request::AddReplica {
            table: self.name.to_string(),
            replica: Replica {
                node: node.to_string(),
                copy,
            },
        };
        match call(&request)? {
            Reply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Stop keeping this replicated table on `node`.
    pub fn remove_replica(&self, node: &str) -> Result<(), Error> {
        let request = Request::RemoveReplica {
            table: self.name.to_string(),
            node: node.to_string(),
        };
        match call(&request)? {
            Reply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The value of `key` (in a bag, its first value) as of a moment
    /// during the call: every write committed before it is seen (the
    /// table's leader confirms it still leads). Fails with `NoQuorum` on
    /// a side without a majority of the table's replicas.
    pub fn read_linearizable(&self, key: &K) -> Result<Option<V>, Error> {
        let rows = self.read_rows(key, Consistency::Linearizable)?;
        match rows.rows.first().and_then(|r| r.records.first()) {
            Some(record) => Ok(Some(codec::decode(&record.value)?)),
            None => Ok(None),
        }
    }

    /// The value of `key` (in a bag, its first value), from this node's
    /// replica.
    pub fn read(&self, key: &K) -> Result<Option<V>, Error> {
        get_with(
            self.name,
            |buf| key.encode_into(buf),
            |got| match got.values().next() {
                Some(value) => Ok(Some(codec::decode(value)?)),
                None => Ok(None),
            },
        )
    }

    /// Every value of `key` (a bag's, in write order), from this node's
    /// replica.
    pub fn read_all(&self, key: &K) -> Result<Vec<V>, Error> {
        get_with(
            self.name,
            |buf| key.encode_into(buf),
            |got| {
                got.values()
                    .map(|v| codec::decode(v).map_err(Error::from))
                    .collect()
            },
        )
    }

    /// Write `key`'s record (in a bag, add `value` to the key's): a dirty
    /// write, one batch without conditions. Returns its log index.
    pub fn write(&self, key: &K, value: &V) -> Result<u64, Error> {
        if !self.indexes.is_empty() {
            return commit_one(self.name, vec![self.put(key, value)]);
        }
        // No index values: the request is encoded from borrowed bytes.
        WRITE_BUFFERS.with_borrow_mut(|(k, v)| {
            k.clear();
            key.encode_into(k);
            v.clear();
            codec::encode_to_vec(value, v);
            let op = wire::OpRef::Put {
                key: k,
                value: v,
                index_values: &[],
            };
            let batch = wire::BatchRef {
                conditions: &[],
                ops: std::slice::from_ref(&op),
            };
            committed_index(wire::CommitRef(&[(self.name, batch)]))
        })
    }

    /// Remove every record of `key`. Returns the batch's log index.
    pub fn delete(&self, key: &K) -> Result<u64, Error> {
        let op = Op::Delete { key: key.encode() };
        commit_one(self.name, vec![op])
    }

    /// Add `delta` to `key`'s count in a counter table ([`Kind::Counter`],
    /// a `Table<K, i64>`: [`read`](Self::read) gives the total). Returns
    /// this replica's index after it.
    pub fn add(&self, key: &K, delta: i64) -> Result<u64, Error> {
        let op = Op::Add {
            key: key.encode(),
            delta,
        };
        commit_one(self.name, vec![op])
    }

    /// Remove one value of a bag's key. Returns the batch's log index.
    pub fn delete_value(&self, key: &K, value: &V) -> Result<u64, Error> {
        let op = Op::DeleteValue {
            key: key.encode(),
            value: codec::encode(value),
        };
        commit_one(self.name, vec![op])
    }

    /// The records whose index `index` has the value that encodes to
    /// `value`'s [`index_key`], as (key, value) pairs in key order.
    pub fn index_read<I: Key>(&self, index: &str, value: &I) -> Result<Vec<(K, V)>, Error> {
        let rows = self.rows(Request::IndexGet {
            table: self.name.to_string(),
            index: index.to_string(),
            value: value.encode(),
            limit: 0,
            consistency: Consistency::Dirty,
        })?;
        pairs(rows)
    }

    /// Up to `limit` records with keys from `from` (included) to `to`
    /// (excluded; `None`: to the end), in key order (any kind of table;
    /// only an ordered set's order is its keys' order as well as their
    /// bytes'). `limit` 0 means as many as one reply holds.
    pub fn range(&self, from: &K, to: Option<&K>, limit: u32) -> Result<Vec<(K, V)>, Error> {
        let rows = self.rows(Request::Range {
            table: self.name.to_string(),
            from: from.encode(),
            to: to.map(Key::encode),
            limit,
            consistency: Consistency::Dirty,
        })?;
        pairs(rows)
    }

    /// The record with the smallest key.
    pub fn first(&self) -> Result<Option<(K, V)>, Error> {
        let rows = self.rows(Request::Range {
            table: self.name.to_string(),
            from: Vec::new(),
            to: None,
            limit: 1,
            consistency: Consistency::Dirty,
        })?;
        Ok(pairs(rows)?.into_iter().next())
    }

    /// The record with the smallest key above `key`; ordered sets only.
    pub fn next(&self, key: &K) -> Result<Option<(K, V)>, Error> {
        let rows = self.rows(Request::Next {
            table: self.name.to_string(),
            key: key.encode(),
            consistency: Consistency::Dirty,
        })?;
        Ok(pairs(rows)?.into_iter().next())
    }

    /// Up to `limit` records whose keys begin with `prefix`'s encoding (a
    /// key's leading components: `"ann"` for keys `("ann", n)`), in key
    /// order. `limit` 0 means as many as one reply holds.
    pub fn match_prefix<P: Key>(&self, prefix: &P, limit: u32) -> Result<Vec<(K, V)>, Error> {
        let rows = self.rows(Request::Prefix {
            table: self.name.to_string(),
            prefix: prefix.encode(),
            limit,
            consistency: Consistency::Dirty,
        })?;
        pairs(rows)
    }

    /// Send this process a [`crate::System::Table`] event for each batch
    /// committed to the table from now on, in commit order (subscribing
    /// twice keeps one subscription). It ends when the process ends or
    /// calls [`unsubscribe`](Self::unsubscribe), when the table is deleted,
    /// or if the process falls behind so far that its mailbox is full (an
    /// `Ended` event says which).
    pub fn subscribe(&self) -> Result<(), Error> {
        call(&Request::Subscribe {
            table: self.name.to_string(),
        })
        .map(drop)
    }

    /// End this process's subscription.
    pub fn unsubscribe(&self) -> Result<(), Error> {
        call(&Request::Unsubscribe {
            table: self.name.to_string(),
        })
        .map(drop)
    }

    fn put(&self, key: &K, value: &V) -> Op {
        Op::Put {
            key: key.encode(),
            value: codec::encode(value),
            index_values: self.indexes.iter().map(|(_, f)| f(value)).collect(),
        }
    }
}

fn pairs<K: Key, V: DeserializeOwned>(rows: Rows) -> Result<Vec<(K, V)>, Error> {
    let mut out = Vec::with_capacity(rows.rows.len());
    for row in rows.rows {
        for record in &row.records {
            out.push((event_key(&row.key)?, codec::decode(&record.value)?));
        }
    }
    Ok(out)
}

std::thread_local! {
    /// Tables' kinds, as a transaction learned them (a kind never
    /// changes while its table lives).
    static KINDS: std::cell::RefCell<Vec<(String, Kind)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Table `name`'s kind.
fn kind_of(name: &str) -> Result<Kind, Error> {
    if let Some(kind) = KINDS.with_borrow(|k| k.iter().find(|(n, _)| n == name).map(|(_, k)| *k)) {
        return Ok(kind);
    }
    let kind = match call(&Request::Info {
        table: name.to_string(),
    })? {
        Reply::Info(info) => info.spec.kind,
        other => return Err(unexpected(other)),
    };
    KINDS.with_borrow_mut(|k| k.push((name.to_string(), kind)));
    Ok(kind)
}

std::thread_local! {
    /// A dirty write's key and value bytes, reused.
    static WRITE_BUFFERS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Send a commit encoded from borrowed data; the first batch's index.
fn committed_index(commit: wire::CommitRef<'_>) -> Result<u64, Error> {
    first_index(call_encoded(|buf| codec::encode_to_vec(&commit, buf))?)
}

/// A dirty write: `ops` as one batch without conditions; its log index.
fn commit_one(table: &str, ops: Vec<Op>) -> Result<u64, Error> {
    let batch = Batch {
        conditions: Vec::new(),
        ops,
    };
    first_index(call(&Request::Commit(vec![(table.to_string(), batch)]))?)
}

/// The log index of a one-batch commit's reply.
fn first_index(reply: Reply) -> Result<u64, Error> {
    match reply {
        Reply::Committed(indexes) => indexes
            .first()
            .copied()
            .ok_or_else(|| unexpected(Reply::Committed(indexes))),
        other => Err(unexpected(other)),
    }
}

/// How a [`transaction_with`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Most runs of the closure before [`Error::Conflict`].
    pub attempts: u32,
    /// The first back-off after a conflict; each later one doubles, up to
    /// `backoff_max`, and each is jittered (a random part of it).
    pub backoff: Duration,
    /// The longest back-off.
    pub backoff_max: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            attempts: 10,
            backoff: Duration::from_micros(200),
            backoff_max: Duration::from_millis(50),
        }
    }
}

/// A key a transaction read: the version and values it saw.
struct Read {
    key: Vec<u8>,
    /// `0`: absent.
    version: u64,
    values: Vec<Vec<u8>>,
    /// The table is a bag (a put adds a value rather than replacing).
    bag: bool,
    /// The table is conflict-free: no version of it is checked.
    free: bool,
}

/// What a transaction read and will write, per table.
#[derive(Default)]
struct Part {
    table: String,
    /// Keys read, in the order first read.
    read: Vec<Read>,
    /// Conditions the closure stated itself.
    required: Vec<Condition>,
    ops: Vec<Op>,
}

/// A running transaction: reads are recorded, writes buffered until the
/// closure returns.
pub struct Tx {
    parts: Vec<Part>,
}

impl Tx {
    fn part(&mut self, table: &str) -> &mut Part {
        let at = match self.parts.iter().position(|p| p.table == table) {
            Some(at) => at,
            None => {
                self.parts.push(Part {
                    table: table.to_string(),
                    ..Part::default()
                });
                self.parts.len() - 1
            }
        };
        &mut self.parts[at]
    }

    /// The values of `key` as this transaction sees them: what it first
    /// read of the key, with its own writes since replayed over it.
    fn records<K: Key, V: Serialize + DeserializeOwned>(
        &mut self,
        table: &Table<K, V>,
        key: &K,
    ) -> Result<Vec<Vec<u8>>, Error> {
        let encoded = key.encode();
        if !self.part(table.name).read.iter().any(|r| r.key == encoded) {
            let (version, values) = get_with(
                table.name,
                |buf| buf.extend_from_slice(&encoded),
                |got| Ok((got.version, got.values().map(<[u8]>::to_vec).collect())),
            )?;
            let kind = kind_of(table.name)?;
            self.part(table.name).read.push(Read {
                key: encoded.clone(),
                version,
                values,
                bag: kind == Kind::Bag,
                free: kind.conflict_free(),
            });
        }
        let part = self.part(table.name);
        let read = part
            .read
            .iter()
            .find(|r| r.key == encoded)
            .expect("read above");
        let mut values = read.values.clone();
        for op in &part.ops {
            match op {
                Op::Put { key, value, .. } if *key == encoded => {
                    if !read.bag {
                        values.clear();
                    }
                    if !values.contains(value) {
                        values.push(value.clone());
                    }
                }
                Op::Delete { key } if *key == encoded => values.clear(),
                Op::DeleteValue { key, value } if *key == encoded => values.retain(|v| v != value),
                _ => {}
            }
        }
        Ok(values)
    }

    /// The value of `key` (a bag's first), as this transaction sees it;
    /// the key's version is recorded, so the commit fails (and the
    /// transaction re-runs) if another write changes it first.
    pub fn read<K: Key, V: Serialize + DeserializeOwned>(
        &mut self,
        table: &Table<K, V>,
        key: &K,
    ) -> Result<Option<V>, Error> {
        let values = self.records(table, key)?;
        match values.last() {
            Some(v) => Ok(Some(codec::decode(v)?)),
            None => Ok(None),
        }
    }

    /// Every value of `key` (a bag's), as this transaction sees it.
    pub fn read_all<K: Key, V: Serialize + DeserializeOwned>(
        &mut self,
        table: &Table<K, V>,
        key: &K,
    ) -> Result<Vec<V>, Error> {
        let values = self.records(table, key)?;
        values
            .iter()
            .map(|v| codec::decode(v).map_err(Error::from))
            .collect()
    }

    /// Write `key`'s record (in a bag, add the value) when the
    /// transaction commits.
    pub fn write<K: Key, V: Serialize + DeserializeOwned>(
        &mut self,
        table: &Table<K, V>,
        key: &K,
        value: &V,
    ) -> Result<(), Error> {
        let op = table.put(key, value);
        self.part(table.name).ops.push(op);
        Ok(())
    }

    /// Remove every record of `key` when the transaction commits.
    pub fn delete<K: Key, V: Serialize + DeserializeOwned>(
        &mut self,
        table: &Table<K, V>,
        key: &K,
    ) -> Result<(), Error> {
        let op = Op::Delete { key: key.encode() };
        self.part(table.name).ops.push(op);
        Ok(())
    }

    /// Remove one value of a bag's key when the transaction commits.
    pub fn delete_value<K: Key, V: Serialize + DeserializeOwned>(
        &mut self,
        table: &Table<K, V>,
        key: &K,
        value: &V,
    ) -> Result<(), Error> {
        let op = Op::DeleteValue {
            key: key.encode(),
            value: codec::encode(value),
        };
        self.part(table.name).ops.push(op);
        Ok(())
    }

    /// Commit only if `key` has no record then; otherwise the transaction
    /// aborts with [`Abort::Exists`] (no retry).
    pub fn require_absent<K: Key, V>(&mut self, table: &Table<K, V>, key: &K) {
        let condition = Condition::Absent { key: key.encode() };
        self.part(table.name).required.push(condition);
    }

    /// Commit only if no write fenced by a newer holder of cluster lock
    /// `lock` has reached `table`: pass the token [`crate::global::lock`]
    /// gave. A stale holder's transaction aborts with
    /// [`Abort::StaleFence`] (no retry).
    pub fn fence<K, V>(&mut self, table: &Table<K, V>, lock: &str, token: u64) {
        let condition = Condition::Fence {
            lock: lock.to_string(),
            token,
        };
        self.part(table.name).required.push(condition);
    }

    /// The batches to commit: the versions read as conditions, then the
    /// closure's own.
    ///
    /// A transaction that writes nothing and read one key has nothing to
    /// commit. Otherwise every version read is checked at commit, the
    /// reads of tables it does not write included: what it read is what
    /// was there when its writes took effect, and a transaction that
    /// only reads sees no write half done.
    fn batches(self) -> Vec<(String, Batch)> {
        let writes = self
            .parts
            .iter()
            .any(|p| !p.ops.is_empty() || !p.required.is_empty());
        let checks = |p: &Part| p.read.iter().filter(|r| !r.free).count();
        let reads: usize = self.parts.iter().map(checks).sum();
        let checked = writes || reads > 1;
        self.parts
            .into_iter()
            .filter(|p| !p.ops.is_empty() || !p.required.is_empty() || (checked && checks(p) > 0))
            .map(|p| {
                let mut conditions: Vec<Condition> = p
                    .read
                    .into_iter()
                    .filter(|r| !r.free)
                    .map(|r| match r.version {
                        0 => Condition::Absent { key: r.key },
                        version => Condition::Version {
                            key: r.key,
                            version,
                        },
                    })
                    .collect();
                conditions.extend(p.required);
                (
                    p.table,
                    Batch {
                        conditions,
                        ops: p.ops,
                    },
                )
            })
            .collect()
    }
}

/// Run `f` as a transaction with the default [`Options`]: see the module
/// docs.
pub fn transaction<T>(f: impl FnMut(&mut Tx) -> Result<T, Error>) -> Result<T, Error> {
    transaction_with(Options::default(), f)
}

/// Run `f` as a transaction: call it, then commit what it wrote on the
/// condition that nothing it read has changed; if something has, back
/// off and run it again, up to `options.attempts` times. An error from
/// `f`, or a failed condition `f` stated itself, ends it at once with
/// nothing written.
pub fn transaction_with<T>(
    options: Options,
    mut f: impl FnMut(&mut Tx) -> Result<T, Error>,
) -> Result<T, Error> {
    let mut backoff = options.backoff;
    for attempt in 1..=options.attempts.max(1) {
        let mut tx = Tx { parts: Vec::new() };
        let value = f(&mut tx)?;
        // Which (table, key) conditions come from reads: a failure there
        // is a conflict, anything else an abort.
        let read: Vec<(String, Vec<u8>)> = tx
            .parts
            .iter()
            .flat_map(|p| p.read.iter().map(|r| (p.table.clone(), r.key.clone())))
            .collect();
        let batches = tx.batches();
        if batches.is_empty() {
            return Ok(value);
        }
        match call(&Request::Commit(batches)) {
            Ok(_) => return Ok(value),
            Err(Error::Table(TableError::Aborted { table, abort })) => {
                let conflict = match &abort {
                    Abort::Changed { key, .. } | Abort::Exists { key } => {
                        read.iter().any(|(t, k)| *t == table && k == key)
                    }
                    abort => abort.transient(),
                };
                if !conflict {
                    return Err(Error::Table(TableError::Aborted { table, abort }));
                }
            }
            Err(e) => return Err(e),
        }
        if attempt < options.attempts {
            crate::sleep(jitter(backoff));
            backoff = (backoff * 2).min(options.backoff_max);
        }
    }
    Err(Error::Conflict {
        attempts: options.attempts.max(1),
    })
}

/// A random duration between half of `d` and `d`.
fn jitter(d: Duration) -> Duration {
    let mut random = [0u8; 4];
    crate::random_bytes(&mut random);
    let fraction = u32::from_le_bytes(random) as f64 / u32::MAX as f64;
    d.mul_f64(0.5 + fraction / 2.0)
}

/// Decode a subscription event's key as `K` (events carry key bytes).
pub fn event_key<K: Key>(key: &[u8]) -> Result<K, Error> {
    K::decode(key)
        .ok_or_else(|| Error::Decode(format!("key {key:?} is not of the table's key type")))
}

/// Decode a subscription event's value as `V`.
pub fn event_value<V: DeserializeOwned>(value: &[u8]) -> Result<V, Error> {
    Ok(codec::decode(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(key: &str, version: u64, free: bool) -> Read {
        Read {
            key: key.as_bytes().to_vec(),
            version,
            values: Vec::new(),
            bag: false,
            free,
        }
    }

    fn part(table: &str, read: Vec<Read>, ops: Vec<Op>) -> Part {
        Part {
            table: table.into(),
            read,
            required: Vec::new(),
            ops,
        }
    }

    fn put(key: &str) -> Op {
        Op::Put {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            index_values: Vec::new(),
        }
    }

    #[test]
    fn a_writing_transaction_checks_what_it_read_in_tables_it_does_not_write() {
        let tx = Tx {
            parts: vec![
                part("stock", vec![read("tea", 4, false)], Vec::new()),
                part("orders", Vec::new(), vec![put("ann")]),
            ],
        };
        let batches = tx.batches();
        assert_eq!(batches.len(), 2, "{batches:?}");
        assert_eq!(batches[0].0, "stock");
        assert_eq!(
            batches[0].1.conditions,
            vec![Condition::Version {
                key: b"tea".to_vec(),
                version: 4
            }]
        );
        assert!(batches[0].1.ops.is_empty());
    }

    #[test]
    fn a_reading_transaction_commits_only_when_it_read_several_keys() {
        let one = Tx {
            parts: vec![part("a", vec![read("x", 1, false)], Vec::new())],
        };
        assert!(one.batches().is_empty(), "one key read: nothing to check");
        let two = Tx {
            parts: vec![
                part("a", vec![read("x", 1, false)], Vec::new()),
                part("b", vec![read("y", 0, false)], Vec::new()),
            ],
        };
        let batches = two.batches();
        assert_eq!(batches.len(), 2);
        assert_eq!(
            batches[1].1.conditions,
            vec![Condition::Absent { key: b"y".to_vec() }]
        );
    }

    #[test]
    fn reads_of_conflict_free_tables_are_not_checked() {
        let tx = Tx {
            parts: vec![
                part("presence", vec![read("ann", 9, true)], Vec::new()),
                part("orders", Vec::new(), vec![put("ann")]),
            ],
        };
        let batches = tx.batches();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].0, "orders");
    }
}
