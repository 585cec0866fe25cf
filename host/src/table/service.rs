//! The node's table service: what a guest's `table_call` and the control
//! layer reach. It answers [`Request`]s with [`Reply`]s, keeps each
//! process's subscriptions (dropped when the process ends), and sends
//! subscribers their [`Event`]s.
//!
//! A table with one replica on this node is served here alone
//! ([`LocalTables`], in memory or also on disc). A replicated table's
//! replica here is read here too (dirty reads, marked stale when it may
//! lag); its writes, linearizable reads, and any use of a replicated table
//! this node keeps no replica of go through replication
//! ([`super::replication`]), once coordination runs. A `disc_only` copy is
//! answered `Unsupported`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use molt_abi::table::{Copy, Error, Event, Info, Replica, Reply, Request, Row, Rows, Spec};
use molt_abi::{Pid, Ref, codec, tag};
use tokio::sync::oneshot;

use super::backup::{self, BackupError, Covered};
use super::local::{LocalTables, TableError, TablesLimits};
use super::replication::{ReplicaStatus, Replicated};
use super::state::{Found, Schema, Table};
use crate::runtime::{Message, NodeInner};

/// A subscription: its table and its id there.
type Subscription = (String, u64);

/// The node's tables.
pub struct Tables {
    local: LocalTables,
    limits: TablesLimits,
    /// Each subscribed process's subscriptions.
    subscriptions: Mutex<HashMap<Pid, Vec<Subscription>>>,
    /// How many processes have subscriptions (a process's end looks at
    /// the map only if some do).
    subscribed: AtomicUsize,
    /// Where disc tables are kept: `<data dir>/tables`, if the node has a
    /// data directory.
    disc_dir: Option<PathBuf>,
    /// Disc files that did not load at start, and why.
    failed: Vec<(PathBuf, String)>,
    /// Replicated tables, once coordination runs.
    replication: std::sync::OnceLock<Arc<dyn Replicated>>,
}

/// A table request's answer: now, or later (once a disc table's commit
/// is durable, or its file is gone).
pub(crate) enum Answer {
    /// The reply.
    Now(Reply),
    /// The reply, when this resolves.
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send>>),
}

impl Answer {
    /// The reply, once it holds.
    pub(crate) async fn reply(self) -> Reply {
        match self {
            Answer::Now(reply) => reply,
            Answer::Later(reply) => reply.await,
        }
    }
}

/// `reply` once every receiver says its table's commit is durable; the
/// first failure replaces it.
async fn durable(
    reply: Reply,
    waits: Vec<(String, oneshot::Receiver<Result<(), String>>)>,
) -> Reply {
    for (table, durable) in waits {
        let why = match durable.await {
            Ok(Ok(())) => continue,
            Ok(Err(why)) => why,
            Err(_) => "its disc writer stopped".to_string(),
        };
        return Reply::Error(Error::Unavailable { table, why });
    }
    reply
}

impl Tables {
    /// The node's tables: the disc tables kept under `data_dir` (if
    /// given) are loaded; a file that does not load is logged and listed
    /// by [`failed`](Self::failed), and the others load regardless.
    pub fn new(limits: TablesLimits, data_dir: Option<&Path>) -> Tables {
        let local = LocalTables::new(limits.clone());
        let disc_dir = data_dir.map(|d| d.join("tables"));
        let failed = match &disc_dir {
            Some(dir) => local.load(dir),
            None => Vec::new(),
        };
        for (path, why) in &failed {
            tracing::error!(file = %path.display(), "a disc table did not load: {why}; the node's other tables are served");
        }
        Tables {
            local,
            limits,
            subscriptions: Mutex::default(),
            subscribed: AtomicUsize::new(0),
            disc_dir,
            failed,
            replication: std::sync::OnceLock::new(),
        }
    }

    /// This node's replica of replicated table `table` and its group, if
    /// it keeps one.
    pub fn replica_status(&self, table: &str) -> Option<ReplicaStatus> {
        self.replication.get().and_then(|r| r.status(table))
    }

    /// Why this node's replica of replicated `table` cannot start (a
    /// damaged file, say), while it cannot: it is tried again at every
    /// reconciliation, and the node reads and writes the table through
    /// another replica meanwhile.
    pub fn replica_failure(&self, table: &str) -> Option<String> {
        self.replication.get().and_then(|r| r.failure(table))
    }

    /// Serve replicated tables through `replication` from now on.
    pub(crate) fn set_replication(&self, replication: Arc<dyn Replicated>) {
        let _ = self.replication.set(replication);
    }

    /// Answer `request` from this node's own tables and replicas only (a
    /// replica's rows as they are here).
    pub(crate) fn answer_here(&self, node: &Arc<NodeInner>, request: Request) -> Reply {
        self.answer(node, Pid::default(), request)
            .unwrap_or_else(Reply::Error)
    }

    /// Disc table files that did not load at start, and why.
    pub fn failed(&self) -> &[(PathBuf, String)] {
        &self.failed
    }

    /// The limits it runs with.
    pub fn limits(&self) -> &TablesLimits {
        &self.limits
    }

    /// The tables whose one replica is this node.
    pub fn local(&self) -> &LocalTables {
        &self.local
    }

    /// Answer `request` from `caller`, a process of `node`.
    pub(crate) fn call(&self, node: &Arc<NodeInner>, caller: Pid, request: Request) -> Answer {
        if let Some(replication) = self.replication.get() {
            if replication.takes(&request) {
                return Answer::Later(replication.clone().answer(request));
            }
            if self.names_unknown(&request) {
                // Perhaps a table just created through another node, whose
                // definition this node has not applied yet: once caught
                // up, asked again (and answered `NoTable` if it still is).
                let caught_up = replication.caught_up();
                let (node, replication) = (node.clone(), replication.clone());
                return Answer::Later(Box::pin(async move {
                    caught_up.await;
                    if replication.takes(&request) {
                        return replication.answer(request).await;
                    }
                    match node.tables.call_here(&node, caller, request) {
                        Answer::Now(reply) => reply,
                        Answer::Later(reply) => reply.await,
                    }
                }));
            }
        }
        self.call_here(node, caller, request)
    }

    /// Whether `request` names a table neither this node nor replication
    /// knows of.
    fn names_unknown(&self, request: &Request) -> bool {
        let unknown = |table: &str| !self.local.has(table);
        match request {
            Request::Get { table, .. }
            | Request::IndexGet { table, .. }
            | Request::Range { table, .. }
            | Request::Next { table, .. }
            | Request::Prefix { table, .. }
            | Request::Info { table }
            | Request::Subscribe { table }
            | Request::Delete { table } => unknown(table),
            Request::Commit(batches) => batches.iter().any(|(table, _)| unknown(table)),
            _ => false,
        }
    }

    /// Answer `request` from this node's tables (replication does not
    /// take it).
    fn call_here(&self, node: &Arc<NodeInner>, caller: Pid, request: Request) -> Answer {
        match request {
            Request::Commit(batches) => return self.commit(batches),
            Request::Delete { table } => return self.delete(node, &table),
            _ => {}
        }
        Answer::Now(
            self.answer(node, caller, request)
                .unwrap_or_else(Reply::Error),
        )
    }

    /// Delete a table: answered once its disc file, if any, is gone (a
    /// table of the same name may be created at once after).
    fn delete(&self, node: &Arc<NodeInner>, table: &str) -> Answer {
        let last = self.local.info(table).map_or(0, |i| i.applied);
        match self.local.delete(table) {
            Err(e) => Answer::Now(Reply::Error(error(table, e))),
            Ok(disc) => {
                self.ended(node, table, last, "deleted");
                match disc {
                    None => Answer::Now(Reply::Done),
                    Some(disc) => Answer::Later(Box::pin(async move {
                        disc.remove().await;
                        Reply::Done
                    })),
                }
            }
        }
    }

    fn commit(&self, batches: Vec<(String, molt_abi::table::Batch)>) -> Answer {
        if batches.is_empty() {
            return Answer::Now(Reply::Committed(Vec::new()));
        }
        match self.local.transact_many(batches) {
            Err((table, e)) => Answer::Now(Reply::Error(error(&table, e))),
            Ok(committed) => {
                let indexes = committed.iter().map(|(_, c)| c.index).collect();
                let reply = Reply::Committed(indexes);
                // Each durable receiver, named by its table.
                let waits: Vec<_> = committed
                    .into_iter()
                    .filter_map(|(table, c)| c.durable.map(|d| (table, d)))
                    .collect();
                if waits.is_empty() {
                    Answer::Now(reply)
                } else {
                    Answer::Later(Box::pin(durable(reply, waits)))
                }
            }
        }
    }

    fn answer(&self, node: &Arc<NodeInner>, caller: Pid, request: Request) -> Result<Reply, Error> {
        match request {
            Request::Create(spec) => {
                self.create(&node.config.name, spec)?;
                Ok(Reply::Done)
            }
            Request::Delete { .. } => unreachable!("deletes are answered by Tables::delete"),
            Request::Info { table } => Ok(Reply::Info(self.info(&node.config.name, &table)?)),
            Request::List => {
                let mut names = self.local.names();
                if let Some(replication) = self.replication.get() {
                    let replicated = replication.names();
                    // A fragmented table by its name, beside its fragments.
                    let fragmented: Vec<String> = replicated
                        .iter()
                        .filter_map(|n| super::fragments::parse(n).map(|(t, _, _)| t.to_string()))
                        .collect();
                    names.extend(replicated);
                    names.extend(fragmented);
                    names.sort();
                    names.dedup();
                }
                Ok(Reply::Tables(names))
            }
            Request::Get { table, key, .. } => self.read(&table, |t, _| {
                let records = t.read(&key).to_vec();
                let version = t.version(&key).unwrap_or(0);
                let row = Row {
                    key,
                    version,
                    records,
                };
                Ok((vec![row], false))
            }),
            Request::IndexGet {
                table,
                index,
                value,
                limit,
                ..
            } => self.read(&table, |t, max_bytes| {
                let found = t.index_read(&index, &value).ok_or_else(|| {
                    Error::BadRequest(format!("table {table} has no index {index}"))
                })?;
                let mut rows: Vec<Row> = Vec::new();
                let mut bytes = 0;
                for (key, record) in found {
                    if rows.last().is_none_or(|r| *r.key != *key) {
                        if rows.len() == row_limit(limit) || bytes > max_bytes {
                            return Ok((rows, true));
                        }
                        rows.push(Row {
                            key: key.to_vec(),
                            version: t.version(&key).unwrap_or(0),
                            records: Vec::new(),
                        });
                    }
                    bytes += key.len() + record.value.len();
                    rows.last_mut()
                        .expect("a row for the key")
                        .records
                        .push(record.into_owned());
                }
                Ok((rows, false))
            }),
            Request::Range {
                table,
                from,
                to,
                limit,
                ..
            } => self.read(&table, |t, max_bytes| {
                let limit = row_limit(limit);
                // One more than asked, to know whether there is more.
                let found = t.range(&from, to.as_deref(), limit.saturating_add(1));
                Ok(rows_of(found, limit, max_bytes))
            }),
            Request::Next { table, key, .. } => self.read(&table, |t, _| {
                ordered(t, &table)?;
                let found = t.range_after(&key, 1);
                Ok(rows_of(found, 1, usize::MAX))
            }),
            Request::Prefix {
                table,
                prefix,
                limit,
                ..
            } => self.read(&table, |t, max_bytes| {
                let limit = row_limit(limit);
                let found = t.match_prefix(&prefix, limit.saturating_add(1));
                Ok(rows_of(found, limit, max_bytes))
            }),
            Request::Commit(_) => unreachable!("commits are answered by Tables::commit"),
            Request::Subscribe { table } => {
                self.subscribe(node, caller, &table)?;
                Ok(Reply::Done)
            }
            Request::Unsubscribe { table } => {
                self.unsubscribe(caller, &table)?;
                Ok(Reply::Done)
            }
            Request::CreateFragmented { .. } => Err(Error::Unsupported(
                "fragmented tables without coordination (a node started by molt node runs it; an embedder starts cluster::Coordination)"
                    .to_string(),
            )),
            Request::AddReplica { table, .. } | Request::RemoveReplica { table, .. } => {
                self.local.info(&table).map_err(|e| error(&table, e))?;
                Err(Error::Unsupported(format!(
                    "table {table} is kept on this node alone; replicas are given when a table is created, on a node that runs coordination"
                )))
            }
        }
    }

    /// A dirty read of `key` in table `table`, encoded into `out` as
    /// `table_get` gives it (see `molt_abi::imports::TABLE_GET`): the
    /// encoding's length, written only if it fits; `None` if there is no
    /// such table.
    pub(crate) fn get_into(&self, table: &str, key: &[u8], out: &mut [u8]) -> Option<usize> {
        self.local
            .read_marked(table, |t, replicated| {
                let records = t.read(key);
                let len = 24 + records.iter().map(|r| 4 + r.value.len()).sum::<usize>();
                if len <= out.len() {
                    let version = t.version(key).unwrap_or(0);
                    out[..8].copy_from_slice(&version.to_le_bytes());
                    out[8..16].copy_from_slice(&t.applied().to_le_bytes());
                    // Only a replica of a replicated table can lag.
                    let flags = u32::from(replicated && self.stale(table));
                    out[16..20].copy_from_slice(&flags.to_le_bytes());
                    out[20..24].copy_from_slice(&(records.len() as u32).to_le_bytes());
                    let mut at = 24;
                    for r in records.iter() {
                        out[at..at + 4].copy_from_slice(&(r.value.len() as u32).to_le_bytes());
                        out[at + 4..at + 4 + r.value.len()].copy_from_slice(&r.value);
                        at += 4 + r.value.len();
                    }
                }
                len
            })
            .ok()
    }

    /// Write table `name`, as it is at one log index, to the backup file
    /// `path` (on this node's file system).
    pub fn backup(&self, name: &str, path: &Path) -> Result<Covered, BackupError> {
        // Encoded under the table's lock: one index, whatever writes wait
        // (a disc_only table is read whole for it).
        self.local
            .read(name, |t| match t.disc_rows() {
                Some(_) => backup::write(&t.in_memory(), path),
                None => backup::write(t, path),
            })
            .map_err(|e| BackupError::Table(e.to_string()))?
    }

    /// Load the backup file `path` into table `name`: created if absent,
    /// its contents replaced if present (same kind and indexes). The file
    /// must be a backup of `name` unless `rename`. Subscribers of a
    /// replaced table get `Ended` (`restored`): re-read and subscribe
    /// again.
    ///
    /// A disc table's restore answers once its file holds the restored
    /// table.
    pub(crate) async fn restore(
        &self,
        node: &Arc<NodeInner>,
        name: &str,
        path: &Path,
        rename: bool,
    ) -> Result<Covered, BackupError> {
        let table = backup::read(path)?;
        self.restore_read(node, name, path, table, rename).await
    }

    /// Write every table this node keeps (its local tables and its
    /// replicas) to a backup file each in `dir` (made if absent; see
    /// [`backup::file_name`]), each consistent at its own log index. A
    /// replicated table kept only on other nodes is reported, not
    /// written: back it up on a node that keeps a replica.
    pub fn backup_all(&self, dir: &Path) -> Vec<(String, Result<Covered, BackupError>)> {
        if let Err(source) = std::fs::create_dir_all(dir) {
            return vec![(
                String::new(),
                Err(BackupError::Io {
                    path: dir.to_path_buf(),
                    source,
                }),
            )];
        }
        let here = self.local.names();
        let mut done: Vec<(String, Result<Covered, BackupError>)> = here
            .iter()
            .map(|name| {
                let path = dir.join(backup::file_name(name));
                (name.clone(), self.backup(name, &path))
            })
            .collect();
        if let Some(replication) = self.replication.get() {
            for name in replication.names() {
                if !here.contains(&name) {
                    let why = format!(
                        "table {name} is kept on other nodes only: back it up on one that keeps a replica"
                    );
                    done.push((name, Err(BackupError::Table(why))));
                }
            }
        }
        done.sort_by(|a, b| a.0.cmp(&b.0));
        done
    }

    /// Load every backup file (`*.moltbak`) in `dir` into the table it is
    /// a backup of, as [`restore`](Self::restore) does for one; per table,
    /// what it covered or why it failed (a file that does not read as a
    /// backup: under its file name). The others go on regardless.
    pub(crate) async fn restore_all(
        &self,
        node: &Arc<NodeInner>,
        dir: &Path,
    ) -> Vec<(String, Result<Covered, BackupError>)> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(source) => {
                let path = dir.to_path_buf();
                return vec![(String::new(), Err(BackupError::Io { path, source }))];
            }
        };
        let mut files: Vec<std::path::PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == backup::EXTENSION))
            .collect();
        files.sort();
        let mut done = Vec::with_capacity(files.len());
        for path in files {
            match backup::read(&path) {
                Ok(table) => {
                    let name = table.schema().name.clone();
                    let restored = self.restore_read(node, &name, &path, table, false).await;
                    done.push((name, restored));
                }
                Err(e) => {
                    let file = path
                        .file_name()
                        .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
                    done.push((file, Err(e)));
                }
            }
        }
        done
    }

    /// [`restore`](Self::restore) of a backup already read.
    async fn restore_read(
        &self,
        node: &Arc<NodeInner>,
        name: &str,
        path: &Path,
        table: Table,
        rename: bool,
    ) -> Result<Covered, BackupError> {
        let found = table.schema().name.clone();
        if found != name && !rename {
            return Err(BackupError::OtherTable {
                path: path.to_path_buf(),
                wanted: name.to_string(),
                found,
            });
        }
        let table = table.renamed(name.to_string());
        let covered = Covered {
            index: table.applied(),
            records: table.len(),
        };
        // A replicated table is restored through its group, at one index
        // on every replica.
        if let Some(replication) = self.replication.get()
            && replication.spec(name).is_some()
        {
            let index = replication
                .clone()
                .restore(table)
                .await
                .map_err(|e| match e {
                    Error::BadSpec(_) => BackupError::Incompatible(name.to_string()),
                    e => BackupError::Table(e.to_string()),
                })?;
            return Ok(Covered {
                index,
                records: covered.records,
            });
        }
        let restored = self.local.restore(table).map_err(|e| match e {
            TableError::BadSchema(_) => BackupError::Incompatible(name.to_string()),
            e => BackupError::Table(e.to_string()),
        })?;
        if restored.replaced {
            self.ended(node, name, covered.index, "restored");
        }
        if let Some(durable) = restored.durable {
            match durable.await {
                Ok(Ok(())) => {}
                Ok(Err(why)) => return Err(BackupError::Table(why)),
                Err(_) => return Err(BackupError::Table("its disc writer stopped".into())),
            }
        }
        Ok(covered)
    }

    /// Create a table from its spec: today one replica, on this node,
    /// `Ram` or `Disc`.
    pub fn create(&self, here: &str, spec: Spec) -> Result<(), Error> {
        if spec.kind.conflict_free() {
            return Err(Error::Unsupported(format!(
                "a {:?} table (conflict-free) without coordination (a node started by molt node runs it; an embedder starts cluster::Coordination)",
                spec.kind
            )));
        }
        let mut disc = None;
        match spec.replicas.as_slice() {
            [] => {}
            [Replica { node, copy }] if node.is_empty() || node == here => match copy {
                Copy::Ram => {}
                Copy::Disc | Copy::DiscOnly => match &self.disc_dir {
                    Some(dir) => disc = Some(dir.as_path()),
                    None => {
                        return Err(Error::Unsupported(format!(
                            "{} copies on a node without a data directory (molt node keeps one; see --data-dir)",
                            if *copy == Copy::Disc {
                                "disc"
                            } else {
                                "disc_only"
                            }
                        )));
                    }
                },
            },
            _ => {
                return Err(Error::Unsupported(
                    "replicas on other nodes without coordination (a node started by molt node runs it; an embedder starts cluster::Coordination)"
                        .to_string(),
                ));
            }
        }
        let schema = Schema {
            name: spec.name,
            kind: spec.kind,
            indexes: spec.indexes,
        };
        let name = schema.name.clone();
        let disc_only = spec
            .replicas
            .first()
            .is_some_and(|r| r.copy == Copy::DiscOnly);
        self.local
            .create_copy(schema, disc, disc_only)
            .map_err(|e| error(&name, e))
    }

    /// What table `name` is and holds.
    pub fn info(&self, here: &str, name: &str) -> Result<Info, Error> {
        let spec = self.replication.get().and_then(|r| r.spec(name));
        let info = match self.local.info(name) {
            Ok(info) => info,
            // A replicated table kept elsewhere: its definition only.
            Err(TableError::NoTable(_)) if spec.is_some() => {
                return Ok(Info {
                    spec: spec.expect("a definition"),
                    records: 0,
                    index: 0,
                    subscribers: 0,
                });
            }
            Err(e) => return Err(error(name, e)),
        };
        let spec = match spec {
            Some(spec) if info.replicated => spec,
            _ => Spec {
                name: info.schema.name,
                kind: info.schema.kind,
                indexes: info.schema.indexes,
                replicas: vec![Replica {
                    node: here.to_string(),
                    copy: info.copy,
                }],
            },
        };
        Ok(Info {
            spec,
            records: info.records,
            index: info.applied,
            subscribers: info.subscribers as u64,
        })
    }

    /// Run a read on table `name`: `read` gets the table and the reply's
    /// byte budget, and returns rows and whether there are more.
    fn read(
        &self,
        name: &str,
        read: impl FnOnce(&Table, usize) -> Result<(Vec<Row>, bool), Error>,
    ) -> Result<Reply, Error> {
        let max_bytes = self.limits.reply_bytes_max;
        let (result, index, replicated) = self
            .local
            .read_marked(name, |t, replicated| {
                (read(t, max_bytes), t.applied(), replicated)
            })
            .map_err(|e| error(name, e))?;
        let (rows, more) = result?;
        Ok(Reply::Rows(Rows {
            rows,
            more,
            // Only a replica of a replicated table can lag.
            stale: replicated && self.stale(name),
            index,
        }))
    }

    /// Whether this node's replica of `table` may lag its group.
    fn stale(&self, table: &str) -> bool {
        self.replication.get().is_some_and(|r| r.stale(table))
    }

    fn subscribe(&self, node: &Arc<NodeInner>, pid: Pid, table: &str) -> Result<(), Error> {
        if self.local.info(table).is_err()
            && self
                .replication
                .get()
                .is_some_and(|r| r.spec(table).is_some())
        {
            return Err(Error::Unsupported(format!(
                "subscribing to table {table} on a node that keeps no replica of it (subscribe on one that does)"
            )));
        }
        let mut subscriptions = self.subscriptions.lock().expect("subscriptions poisoned");
        let mine = subscriptions.entry(pid).or_default();
        // One subscription per process and table (an ended one is
        // replaced).
        if let Some(at) = mine.iter().position(|(t, _)| t == table) {
            if self.local.subscribed(table, mine[at].1) {
                return Ok(());
            }
            mine.remove(at);
        }
        let sink = event_sink(Arc::downgrade(node), pid, table.to_string());
        let id = self
            .local
            .subscribe(table, sink)
            .map_err(|e| error(table, e));
        let id = match id {
            Ok(id) => id,
            Err(e) => {
                if mine.is_empty() {
                    subscriptions.remove(&pid);
                }
                return Err(e);
            }
        };
        if mine.is_empty() {
            self.subscribed.fetch_add(1, Ordering::Relaxed);
        }
        mine.push((table.to_string(), id));
        Ok(())
    }

    fn unsubscribe(&self, pid: Pid, table: &str) -> Result<(), Error> {
        let mut subscriptions = self.subscriptions.lock().expect("subscriptions poisoned");
        let not_subscribed = || Error::NotSubscribed(table.to_string());
        let mine = subscriptions.get_mut(&pid).ok_or_else(not_subscribed)?;
        let at = mine
            .iter()
            .position(|(t, _)| t == table)
            .ok_or_else(not_subscribed)?;
        let (_, id) = mine.remove(at);
        if mine.is_empty() {
            subscriptions.remove(&pid);
            self.subscribed.fetch_sub(1, Ordering::Relaxed);
        }
        drop(subscriptions);
        match self.local.unsubscribe(table, id) {
            Ok(true) => Ok(()),
            // Ended already (its mailbox was full); it was told.
            Ok(false) | Err(_) => Err(not_subscribed()),
        }
    }

    /// A process of this node ended: its subscriptions go.
    pub(crate) fn exited(&self, pid: Pid) {
        if self.subscribed.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mine = {
            let mut subscriptions = self.subscriptions.lock().expect("subscriptions poisoned");
            let mine = subscriptions.remove(&pid);
            if mine.is_some() {
                self.subscribed.fetch_sub(1, Ordering::Relaxed);
            }
            mine
        };
        for (table, id) in mine.unwrap_or_default() {
            let _ = self.local.unsubscribe(&table, id);
        }
    }

    /// Table `table` is gone: tell its subscribers and forget them.
    pub(crate) fn ended(&self, node: &Arc<NodeInner>, table: &str, index: u64, reason: &str) {
        let mut told = Vec::new();
        {
            let mut subscriptions = self.subscriptions.lock().expect("subscriptions poisoned");
            subscriptions.retain(|pid, mine| {
                if let Some(at) = mine.iter().position(|(t, _)| t == table) {
                    let (_, id) = mine.remove(at);
                    told.push((*pid, id));
                }
                !mine.is_empty()
            });
            let left = subscriptions.len();
            self.subscribed.store(left, Ordering::Relaxed);
        }
        let event = Event::Ended {
            table: table.to_string(),
            index,
            reason: reason.to_string(),
        };
        for (pid, id) in told {
            // A deleted table took its subscribers along; a restored one
            // still has them.
            let _ = self.local.unsubscribe(table, id);
            node.deliver_over_limit(pid, event_message(&event));
        }
    }
}

/// The rows of a range or prefix read, cut at `limit` rows or about
/// `max_bytes`.
fn rows_of(found: Vec<Found<'_>>, limit: usize, max_bytes: usize) -> (Vec<Row>, bool) {
    let mut rows = Vec::with_capacity(found.len().min(limit));
    let mut bytes = 0;
    for found in found {
        if rows.len() == limit || bytes > max_bytes {
            return (rows, true);
        }
        bytes += found.key.len() + found.records.iter().map(|r| r.value.len()).sum::<usize>();
        rows.push(Row {
            key: found.key.into_owned(),
            version: found.version,
            records: found.records.into_owned(),
        });
    }
    (rows, false)
}

/// A read's row limit: `0` means as many as the reply holds.
fn row_limit(limit: u32) -> usize {
    match limit {
        0 => usize::MAX - 1,
        n => n as usize,
    }
}

fn ordered(t: &Table, name: &str) -> Result<(), Error> {
    match t.schema().kind {
        kind if kind.ordered() => Ok(()),
        kind => Err(Error::BadRequest(format!(
            "table {name} is a {kind:?}: next needs an ordered set"
        ))),
    }
}

/// A table error as a guest's reply says it.
pub(crate) fn error(table: &str, e: TableError) -> Error {
    match e {
        TableError::Exists(t) => Error::Exists(t),
        TableError::NoTable(t) => Error::NoTable(t),
        TableError::BadSchema(why) => Error::BadSpec(why),
        TableError::Limit { limit, max } => Error::Limit { limit, max },
        TableError::Aborted(abort) => Error::Aborted {
            table: table.to_string(),
            abort,
        },
        TableError::BadRequest(why) => Error::BadRequest(why),
        TableError::Unavailable { table, why } => Error::Unavailable { table, why },
    }
}

fn event_message(event: &Event) -> Message {
    Message {
        tag: tag::TABLE,
        reference: Ref::NONE,
        payload: codec::encode(event).into(),
    }
}

/// Where a subscriber's events go: its mailbox, in commit order. A full
/// mailbox ends the subscription with one last `Ended` event; a process
/// that has ended is dropped.
fn event_sink(node: Weak<NodeInner>, pid: Pid, table: String) -> super::local::Sink {
    Box::new(move |index, changes| {
        let Some(node) = node.upgrade() else {
            return false;
        };
        if node.lookup(pid).is_none() {
            return false;
        }
        let event = Event::Committed {
            table: table.clone(),
            index,
            changes: changes.to_vec(),
        };
        match node.deliver_message(Pid::default(), pid, event_message(&event)) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(%pid, table = %table, index, error = %e,
                    "a table subscriber fell behind: its subscription ends");
                let end = Event::Ended {
                    table: table.clone(),
                    index: index - 1,
                    reason: "mailbox_full".to_string(),
                };
                node.deliver_over_limit(pid, event_message(&end));
                false
            }
        }
    })
}
