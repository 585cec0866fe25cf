//! Tables whose one replica is this node, kept in memory: the fast local
//! store (mnesia's `ram_copies` on one node). No log and no consensus: a
//! batch applies under the table's lock at the table's next index, with
//! the same rules as a replicated table (`Table::apply`), and each
//! subscriber is told of every committed change in commit order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::oneshot;

use super::disc::{DiscFile, Persist};
use super::state::{Abort, Batch, Change, Condition, Record, Schema, Table, TableLimits, op_key};

/// Limits on the node's tables (each refused by name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TablesLimits {
    /// Most tables (`tables_max`).
    pub tables_max: usize,
    /// Most subscribers per table (`subscribers_per_table_max`).
    pub subscribers_per_table_max: usize,
    /// Longest table name, in bytes (`name_bytes_max`).
    pub name_bytes_max: usize,
    /// Longest encoded request a guest may pass to `table_call`
    /// (`request_bytes_max`): a batch at `batch_bytes_max` fits.
    pub request_bytes_max: usize,
    /// Most bytes of rows in one read's reply (`reply_bytes_max`): a read
    /// past it stops early and says there is more.
    pub reply_bytes_max: usize,
    /// Most entries a conflict-free table's replica holds to push, and,
    /// per other replica, holds that a push missed
    /// (`conflict_free_pending_max`); past it, anti-entropy brings them.
    pub conflict_free_pending_max: usize,
    /// Most fragments of a fragmented table (`fragments_max`).
    pub fragments_max: u32,
    /// Each table's own limits.
    pub table: TableLimits,
}

impl Default for TablesLimits {
    fn default() -> TablesLimits {
        let table = TableLimits::default();
        TablesLimits {
            tables_max: 1_000,
            subscribers_per_table_max: 1_000,
            name_bytes_max: 255,
            request_bytes_max: table.batch_bytes_max + (1 << 20),
            reply_bytes_max: 4 << 20,
            conflict_free_pending_max: 100_000,
            fragments_max: super::fragments::FRAGMENTS_MAX,
            table,
        }
    }
}

/// Why a table call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// `create` of a name in use.
    #[error("table {0} exists")]
    Exists(String),
    /// No table by that name.
    #[error("no table {0}")]
    NoTable(String),
    /// A table name empty or too long, or an index named twice.
    #[error("bad table definition: {0}")]
    BadSchema(String),
    /// A limit of the node's tables would be crossed.
    #[error("{limit} ({max}) would be crossed")]
    Limit {
        /// The limit's name.
        limit: String,
        /// Its value.
        max: u64,
    },
    /// The batch changed nothing: why.
    #[error("aborted: {0}")]
    Aborted(Abort),
    /// A request that does not fit the table: why.
    #[error("{0}")]
    BadRequest(String),
    /// The table cannot serve: its disc file failed (why, with the path).
    #[error("table {table} is unavailable: {why}")]
    Unavailable {
        /// The table.
        table: String,
        /// Why.
        why: String,
    },
}

/// What a committed batch did.
#[derive(Debug)]
pub struct Committed {
    /// The table's index of the batch.
    pub index: u64,
    /// Its changes, in order (only if the table has subscribers).
    pub changes: Vec<Change>,
    /// For a disc table: told once the batch is durable, or why it could
    /// not be (the table then refuses everything).
    pub durable: Option<oneshot::Receiver<Result<(), String>>>,
}

/// Where a subscriber's events go: called with each committed batch's
/// index and changes, in commit order; returns `false` once the
/// subscriber is gone (it is then dropped).
pub type Sink = Box<dyn Fn(u64, &[Change]) -> bool + Send + Sync>;

struct Local {
    table: Mutex<Table>,
    /// By subscription id.
    subscribers: Mutex<Vec<(u64, Sink)>>,
    /// Where a disc table is kept; `None` for a ram table.
    disc: Option<DiscFile>,
    /// This is a replica of a replicated table: it changes only as its
    /// group applies committed entries ([`ReplicaHandle`]).
    replicated: bool,
}

impl Local {
    fn new(table: Table, disc: Option<DiscFile>) -> Local {
        Local {
            table: Mutex::new(table),
            subscribers: Mutex::default(),
            disc,
            replicated: false,
        }
    }

    /// Refuse a write to a table whose disc file failed, or to a replica
    /// (written through its group only).
    fn writable(&self, name: &str) -> Result<(), TableError> {
        if self.replicated {
            return Err(TableError::BadRequest(format!(
                "table {name} is replicated: it is written through its group"
            )));
        }
        match self.disc.as_ref().and_then(DiscFile::failed) {
            Some(why) => Err(TableError::Unavailable {
                table: name.to_string(),
                why,
            }),
            None => Ok(()),
        }
    }
}

/// Commit a checked batch at the table's next index, tell its
/// subscribers (under the table's lock, so they see commit order), and
/// queue it for the table's disc file.
fn commit(local: &Local, table: &mut Table, batch: Batch, index: u64) -> Committed {
    commit_telling(local, table, batch, index, Vec::new())
}

/// [`commit`], telling subscribers `extra` changes after the batch's own.
fn commit_telling(
    local: &Local,
    table: &mut Table,
    batch: Batch,
    index: u64,
    extra: Vec<Change>,
) -> Committed {
    commit_each(local, table, index, vec![batch], |_, _| Ok(()), extra).1
}

/// Commit `batches` in order at log `index`, each checked by `check`
/// against the table as the ones before it left it (a batch that fails
/// changes nothing). Subscribers are told every change as one event,
/// after them `extra`; a disc table's file gets every key they touched
/// as one write. The table's lock is held throughout, so no reader sees
/// a state between two of them (they share one version, `index`).
fn commit_each(
    local: &Local,
    table: &mut Table,
    index: u64,
    batches: Vec<Batch>,
    mut check: impl FnMut(&Table, &Batch) -> Result<(), Abort>,
    extra: Vec<Change>,
) -> (Vec<Result<(), Abort>>, Committed) {
    let mut subscribers = local.subscribers.lock().expect("subscribers poisoned");
    let told = !subscribers.is_empty();
    let mut changes = Vec::new();
    let mut outcomes = Vec::with_capacity(batches.len());
    // What the disc file needs, read off each batch before it is consumed.
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut fences: Vec<String> = Vec::new();
    for batch in batches {
        if let Err(abort) = check(table, &batch) {
            table.note_applied(index);
            outcomes.push(Err(abort));
            continue;
        }
        if local.disc.is_some() {
            keys.extend(batch.ops.iter().map(|op| op_key(op).to_vec()));
            fences.extend(batch.conditions.iter().filter_map(|c| match c {
                Condition::Fence { lock, .. } => Some(lock.clone()),
                _ => None,
            }));
        }
        changes.extend(table.commit(index, batch, told));
        outcomes.push(Ok(()));
    }
    changes.extend(extra);
    // A batch that changed nothing (a transaction's reads, checked) is
    // not an event.
    if told && !changes.is_empty() {
        subscribers.retain(|(_, sink)| sink(index, &changes));
    }
    let durable = match &local.disc {
        Some(disc) if outcomes.iter().any(Result::is_ok) => {
            keys.sort();
            keys.dedup();
            fences.sort();
            fences.dedup();
            let rows = keys
                .into_iter()
                .map(|k| {
                    let row = table.row(&k).map(|(v, r)| (v, r.into_owned()));
                    (k, row)
                })
                .collect();
            let fences = fences
                .into_iter()
                .filter_map(|l| table.fence(&l).map(|t| (l, t)))
                .collect();
            let (done, durable) = oneshot::channel();
            disc.persist(Persist {
                applied: index,
                rows,
                fences,
                replace: false,
                records: table.len(),
                generation: disc.rows().map_or(0, |r| r.generation()),
                done,
            });
            Some(durable)
        }
        _ => None,
    };
    (
        outcomes,
        Committed {
            index,
            changes,
            durable,
        },
    )
}

/// Told once a disc table's file holds a change, or why it could not.
type Durable = oneshot::Receiver<Result<(), String>>;

/// A replica's empty table: in memory, or (`rows_in`) `disc_only` in a
/// new file there (one left from before is deleted first).
fn replica_local(schema: Schema, rows_in: Option<&Path>) -> Result<Local, TableError> {
    let Some(dir) = rows_in else {
        return Ok(Local::new(Table::new(schema), None));
    };
    let path = super::disc::path_for(dir, &schema.name);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(TableError::Unavailable {
                table: schema.name.clone(),
                why: format!("cannot remove {} to make it anew: {e}", path.display()),
            });
        }
    }
    let file =
        DiscFile::create_copy(dir, &schema, true).map_err(|why| TableError::Unavailable {
            table: schema.name.clone(),
            why,
        })?;
    let rows = file.rows().expect("a disc_only file");
    let table = Table::on_disc(schema, rows, Default::default(), 0, 0);
    Ok(Local::new(table, Some(file)))
}

/// Put `table` in place of `current` (a restore, or a replica's
/// snapshot): a disc table's whole file is rewritten, and a receiver
/// told once it holds the table is returned.
fn put_whole(local: &Local, current: &mut Table, table: Table) -> Option<Durable> {
    let Some(disc) = local.disc.as_ref() else {
        *current = table;
        return None;
    };
    let rows: Vec<(Vec<u8>, super::disc::StoredRow)> = table
        .range(&[], None, usize::MAX)
        .into_iter()
        .map(|f| {
            (
                f.key.into_owned(),
                Some((f.version, f.records.into_owned())),
            )
        })
        .collect();
    // A disc_only table reads the new rows from its overlay until they
    // are written.
    let on_disc = disc.rows();
    let generation = on_disc.as_ref().map_or(0, |on_disc| {
        on_disc.stage_all(table.applied(), rows.clone());
        on_disc.generation()
    });
    let (done, durable) = oneshot::channel();
    disc.persist(Persist {
        applied: table.applied(),
        rows,
        fences: table.fences(),
        replace: true,
        records: table.len(),
        generation,
        done,
    });
    *current = match on_disc {
        Some(on_disc) => {
            let fences = table.fences().into_iter().collect();
            Table::on_disc(
                table.schema().clone(),
                on_disc,
                fences,
                table.len(),
                table.applied(),
            )
        }
        None => table,
    };
    Some(durable)
}

/// Refuse a table whose `disc_only` file failed: what was read from it
/// (a batch's check) is not to be trusted.
fn unreadable(name: &str, table: &Table) -> Result<(), TableError> {
    match table.unreadable() {
        Some(why) => Err(TableError::Unavailable {
            table: name.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    /// A table of that name was there, and its contents were replaced.
    pub replaced: bool,
    /// For a disc table: told once its file holds the restored table, or
    /// why it could not (the table then refuses everything).
    pub durable: Option<oneshot::Receiver<Result<(), String>>>,
}

/// A table as `info` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    /// Its definition.
    pub schema: Schema,
    /// Records in it.
    pub records: u64,
    /// The index of its last batch.
    pub applied: u64,
    /// Its subscribers.
    pub subscribers: usize,
    /// How this node keeps it: `Ram`, `Disc` (in memory and on disc) or
    /// `DiscOnly` (read from disc).
    pub copy: molt_abi::table::Copy,
    /// It is this node's replica of a replicated table.
    pub replicated: bool,
}

/// The node's local tables. Clones share them.
#[derive(Clone, Default)]
pub struct LocalTables {
    tables: Arc<RwLock<HashMap<String, Arc<Local>>>>,
    limits: TablesLimits,
    next_subscription: Arc<std::sync::atomic::AtomicU64>,
}

impl LocalTables {
    /// No tables yet, with `limits`.
    pub fn new(limits: TablesLimits) -> LocalTables {
        LocalTables {
            limits,
            ..LocalTables::default()
        }
    }

    fn table(&self, name: &str) -> Result<Arc<Local>, TableError> {
        let tables = self.tables.read().expect("tables poisoned");
        tables
            .get(name)
            .cloned()
            .ok_or_else(|| TableError::NoTable(name.to_string()))
    }

    /// Create an empty table in memory.
    pub fn create(&self, schema: Schema) -> Result<(), TableError> {
        self.create_in(schema, None)
    }

    /// Whether `schema` is a table definition these limits take: a name of
    /// 1 to `name_bytes_max` bytes, no index named twice.
    pub fn check_schema(&self, schema: &Schema) -> Result<(), TableError> {
        if schema.name.is_empty() || schema.name.len() > self.limits.name_bytes_max {
            return Err(TableError::BadSchema(format!(
                "a table name has 1 to {} bytes",
                self.limits.name_bytes_max
            )));
        }
        for (i, index) in schema.indexes.iter().enumerate() {
            if schema.indexes[..i].contains(index) {
                return Err(TableError::BadSchema(format!("index {index} named twice")));
            }
        }
        Ok(())
    }

    /// Room in `tables` for one more table: none of that name, and fewer
    /// than `tables_max`.
    fn room(&self, tables: &HashMap<String, Arc<Local>>, name: &str) -> Result<(), TableError> {
        if tables.contains_key(name) {
            return Err(TableError::Exists(name.to_string()));
        }
        self.below_tables_max(tables)
    }

    fn below_tables_max(&self, tables: &HashMap<String, Arc<Local>>) -> Result<(), TableError> {
        if tables.len() >= self.limits.tables_max {
            return Err(TableError::Limit {
                limit: "tables_max".into(),
                max: self.limits.tables_max as u64,
            });
        }
        Ok(())
    }

    /// Create an empty table, in memory, or also on disc in `disc_dir`
    /// (its file made before the table is served).
    pub fn create_in(&self, schema: Schema, disc_dir: Option<&Path>) -> Result<(), TableError> {
        self.create_copy(schema, disc_dir, false)
    }

    /// Create an empty table: in memory (no `disc_dir`), in memory and on
    /// disc, or, if `disc_only`, read from its file in `disc_dir` (made
    /// before the table is served).
    pub fn create_copy(
        &self,
        schema: Schema,
        disc_dir: Option<&Path>,
        disc_only: bool,
    ) -> Result<(), TableError> {
        self.check_schema(&schema)?;
        let mut tables = self.tables.write().expect("tables poisoned");
        self.room(&tables, &schema.name)?;
        let disc =
            match disc_dir {
                Some(dir) => Some(DiscFile::create_copy(dir, &schema, disc_only).map_err(
                    |why| TableError::Unavailable {
                        table: schema.name.clone(),
                        why,
                    },
                )?),
                None => None,
            };
        let table = match disc.as_ref().and_then(DiscFile::rows) {
            Some(rows) => Table::on_disc(schema.clone(), rows, Default::default(), 0, 0),
            None => Table::new(schema.clone()),
        };
        let local = Local::new(table, disc);
        tables.insert(schema.name, Arc::new(local));
        Ok(())
    }

    /// Load the disc tables kept in `dir`: each file that opens becomes a
    /// table; each that does not is returned with why, and the others
    /// load regardless.
    pub fn load(&self, dir: &Path) -> Vec<(PathBuf, String)> {
        let mut failed = Vec::new();
        for path in super::disc::list(dir) {
            match DiscFile::open(&path) {
                Ok((table, disc)) => {
                    let name = table.schema().name.clone();
                    let mut tables = self.tables.write().expect("tables poisoned");
                    if tables.contains_key(&name) {
                        failed.push((path, format!("a second file for table {name}")));
                        continue;
                    }
                    tables.insert(name, Arc::new(Local::new(table, Some(disc))));
                }
                Err(why) => failed.push((path, why)),
            }
        }
        failed
    }

    /// Hold the writer of table `name`'s disc file until the returned
    /// sender is dropped. For tests.
    #[cfg(test)]
    pub(crate) fn hold_writer(&self, name: &str) -> oneshot::Sender<()> {
        let local = self.table(name).expect("the table");
        local.disc.as_ref().expect("a disc table").hold()
    }

    /// Write what is queued for every disc table and close their files.
    pub async fn close(&self) {
        let discs: Vec<Arc<Local>> = {
            let tables = self.tables.read().expect("tables poisoned");
            tables
                .values()
                .filter(|l| l.disc.is_some())
                .cloned()
                .collect()
        };
        for local in discs {
            if let Some(disc) = &local.disc {
                disc.close().await;
            }
        }
    }

    /// Put `table` (a restored backup) in place: a new table (kept in
    /// memory), or the contents of the table of its name, which must have
    /// the same kind and indexes. Whether a table was replaced, and for a
    /// disc table a receiver told once its file holds the restored table.
    pub fn restore(&self, table: Table) -> Result<Restored, TableError> {
        let name = table.schema().name.clone();
        if table.len() > self.limits.table.records_max {
            return Err(TableError::Limit {
                limit: "records_max".into(),
                max: self.limits.table.records_max,
            });
        }
        let mut tables = self.tables.write().expect("tables poisoned");
        if let Some(local) = tables.get(&name) {
            let mut current = local.table.lock().expect("table poisoned");
            if current.schema() != table.schema() {
                return Err(TableError::BadSchema(format!(
                    "table {name} exists with another kind or other indexes: delete it first"
                )));
            }
            local.writable(&name)?;
            let durable = put_whole(local, &mut current, table);
            return Ok(Restored {
                replaced: true,
                durable,
            });
        }
        self.below_tables_max(&tables)?;
        tables.insert(name, Arc::new(Local::new(table, None)));
        Ok(Restored {
            replaced: false,
            durable: None,
        })
    }

    /// Delete a table and everything in it; its subscribers are dropped.
    ///
    /// A disc table's file is returned, for the caller to remove (with
    /// [`DiscFile::remove`], which waits for what is queued).
    pub fn delete(&self, name: &str) -> Result<Option<DiscFile>, TableError> {
        let mut tables = self.tables.write().expect("tables poisoned");
        let local = tables
            .remove(name)
            .ok_or_else(|| TableError::NoTable(name.to_string()))?;
        drop(tables);
        Ok(local.disc.clone())
    }

    /// Whether this node keeps table `name` (its own, or a replica).
    pub fn has(&self, name: &str) -> bool {
        self.tables
            .read()
            .expect("tables poisoned")
            .contains_key(name)
    }

    /// The tables' names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tables
            .read()
            .expect("tables poisoned")
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// What a table is and holds.
    pub fn info(&self, name: &str) -> Result<TableInfo, TableError> {
        let local = self.table(name)?;
        let table = local.table.lock().expect("table poisoned");
        let subscribers = local
            .subscribers
            .lock()
            .expect("subscribers poisoned")
            .len();
        Ok(TableInfo {
            schema: table.schema().clone(),
            records: table.len(),
            applied: table.applied(),
            subscribers,
            copy: match &local.disc {
                None => molt_abi::table::Copy::Ram,
                Some(disc) if disc.disc_only() => molt_abi::table::Copy::DiscOnly,
                Some(_) => molt_abi::table::Copy::Disc,
            },
            replicated: local.replicated,
        })
    }

    /// Apply `batch` to table `name`, all or nothing, and tell its
    /// subscribers. The changes are in the answer only if it has
    /// subscribers (they are not copied otherwise).
    pub fn transact(&self, name: &str, batch: Batch) -> Result<Committed, TableError> {
        let local = self.table(name)?;
        local.writable(name)?;
        let mut table = local.table.lock().expect("table poisoned");
        let checked = table.check(&batch, &self.limits.table);
        unreadable(name, &table)?;
        checked.map_err(TableError::Aborted)?;
        let index = table.applied() + 1;
        Ok(commit(&local, &mut table, batch, index))
    }

    /// Apply one batch per table, all of them or none: each table's
    /// batch applies at that table's next index, and its subscribers are
    /// told. On failure, the table that refused and why.
    pub fn transact_many(
        &self,
        mut batches: Vec<(String, Batch)>,
    ) -> Result<Vec<(String, Committed)>, (String, TableError)> {
        if batches.len() == 1 {
            let (name, batch) = batches.pop().expect("one batch");
            return match self.transact(&name, batch) {
                Ok(committed) => Ok(vec![(name, committed)]),
                Err(e) => Err((name, e)),
            };
        }
        let mut order: Vec<usize> = (0..batches.len()).collect();
        order.sort_by(|a, b| batches[*a].0.cmp(&batches[*b].0));
        let mut locals = Vec::with_capacity(batches.len());
        for (i, &at) in order.iter().enumerate() {
            let name = &batches[at].0;
            if i > 0 && batches[order[i - 1]].0 == *name {
                return Err((
                    name.clone(),
                    TableError::BadRequest(format!("table {name} has two batches in one commit")),
                ));
            }
            let local = self.table(name).map_err(|e| (name.clone(), e))?;
            local.writable(name).map_err(|e| (name.clone(), e))?;
            locals.push(local);
        }
        // Locked in name order, so two commits never wait on each other.
        let mut guards: Vec<_> = locals
            .iter()
            .map(|l| l.table.lock().expect("table poisoned"))
            .collect();
        for (guard, &at) in guards.iter().zip(&order) {
            let (name, batch) = &batches[at];
            let checked = guard.check(batch, &self.limits.table);
            unreadable(name, guard).map_err(|e| (name.clone(), e))?;
            checked.map_err(|a| (name.clone(), TableError::Aborted(a)))?;
        }
        let mut batches: Vec<Option<(String, Batch)>> = batches.into_iter().map(Some).collect();
        let mut committed: Vec<Option<(String, Committed)>> =
            batches.iter().map(|_| None).collect();
        for ((guard, local), &at) in guards.iter_mut().zip(&locals).zip(&order) {
            let (name, batch) = batches[at].take().expect("each batch once");
            let index = guard.applied() + 1;
            committed[at] = Some((name, commit(local, guard, batch, index)));
        }
        Ok(committed
            .into_iter()
            .map(|c| c.expect("every batch committed"))
            .collect())
    }

    /// Add this node's replica of a replicated table, empty: it changes
    /// only through the returned handle, as its group applies entries.
    /// With `rows_in`, a `disc_only` replica: its rows are kept in a file
    /// there, made anew (the group's snapshot and log rebuild it).
    pub(crate) fn insert_replica(
        &self,
        schema: Schema,
        rows_in: Option<&Path>,
    ) -> Result<ReplicaHandle, TableError> {
        let mut tables = self.tables.write().expect("tables poisoned");
        self.room(&tables, &schema.name)?;
        let mut local = replica_local(schema.clone(), rows_in)?;
        local.replicated = true;
        let local = Arc::new(local);
        tables.insert(schema.name, local.clone());
        Ok(ReplicaHandle {
            local,
            limits: self.limits.table.clone(),
            written: Arc::default(),
        })
    }

    /// Keep replica `replica` in a file in `rows_in` (`disc_only`) or in
    /// memory (`None`) from now on, with the same rows and subscribers:
    /// the handle to apply entries through from now on, and the file it
    /// was kept in before, for the caller to remove.
    pub(crate) fn rekeep_replica(
        &self,
        replica: &ReplicaHandle,
        rows_in: Option<&Path>,
    ) -> Result<(ReplicaHandle, Option<DiscFile>), TableError> {
        let mut tables = self.tables.write().expect("tables poisoned");
        let old = &replica.local;
        let current = old.table.lock().expect("table poisoned");
        if let Some(why) = current.unreadable() {
            return Err(TableError::Unavailable {
                table: current.schema().name.clone(),
                why,
            });
        }
        let mut local = replica_local(current.schema().clone(), rows_in)?;
        local.replicated = true;
        let durable = {
            let mut table = local.table.lock().expect("table poisoned");
            put_whole(&local, &mut table, current.in_memory())
        };
        // The subscribers move with the rows (under the old table's lock,
        // so no commit falls between).
        *local.subscribers.lock().expect("subscribers poisoned") =
            std::mem::take(&mut *old.subscribers.lock().expect("subscribers poisoned"));
        let local = Arc::new(local);
        tables.insert(current.schema().name.clone(), local.clone());
        let handle = ReplicaHandle {
            local,
            limits: self.limits.table.clone(),
            written: Arc::new(Mutex::new(durable)),
        };
        Ok((handle, old.disc.clone()))
    }

    /// Drop this node's replica of a replicated table (not a local
    /// table of the same name). A `disc_only` replica's file is returned,
    /// for the caller to remove ([`DiscFile::remove`]).
    #[must_use = "a disc_only replica's file is to be removed"]
    pub(crate) fn remove_replica(&self, name: &str) -> Option<DiscFile> {
        let mut tables = self.tables.write().expect("tables poisoned");
        if tables.get(name).is_some_and(|l| l.replicated) {
            tables.remove(name).and_then(|l| l.disc.clone())
        } else {
            None
        }
    }

    /// Whether subscription `id` to table `name` is still on.
    pub fn subscribed(&self, name: &str, id: u64) -> bool {
        self.table(name).is_ok_and(|local| {
            let subscribers = local.subscribers.lock().expect("subscribers poisoned");
            subscribers.iter().any(|(s, _)| *s == id)
        })
    }

    /// Run `read` on table `name` as it is now.
    pub fn read<T>(&self, name: &str, read: impl FnOnce(&Table) -> T) -> Result<T, TableError> {
        self.read_marked(name, |table, _| read(table))
    }

    /// Run `read` on table `name` as it is now, telling it whether the
    /// table is a replica of a replicated table.
    pub(crate) fn read_marked<T>(
        &self,
        name: &str,
        read: impl FnOnce(&Table, bool) -> T,
    ) -> Result<T, TableError> {
        let local = self.table(name)?;
        let table = local.table.lock().expect("table poisoned");
        let answer = read(&table, local.replicated);
        // A disc_only table whose file failed answers nothing it read.
        unreadable(name, &table)?;
        Ok(answer)
    }

    /// The records of `key` in table `name`, with the key's version (what
    /// a transaction that read it conditions its write on).
    pub fn get(&self, name: &str, key: &[u8]) -> Result<(Vec<Record>, Option<u64>), TableError> {
        self.read(name, |t| (t.read(key).to_vec(), t.version(key)))
    }

    /// Tell `sink` of every batch committed to table `name` from now on;
    /// returns the subscription's id.
    pub fn subscribe(&self, name: &str, sink: Sink) -> Result<u64, TableError> {
        let local = self.table(name)?;
        let mut subscribers = local.subscribers.lock().expect("subscribers poisoned");
        if subscribers.len() >= self.limits.subscribers_per_table_max {
            return Err(TableError::Limit {
                limit: "subscribers_per_table_max".into(),
                max: self.limits.subscribers_per_table_max as u64,
            });
        }
        let id = self
            .next_subscription
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        subscribers.push((id, sink));
        Ok(id)
    }

    /// End subscription `id` to table `name`; whether it was there.
    pub fn unsubscribe(&self, name: &str, id: u64) -> Result<bool, TableError> {
        let local = self.table(name)?;
        let mut subscribers = local.subscribers.lock().expect("subscribers poisoned");
        let before = subscribers.len();
        subscribers.retain(|(s, _)| *s != id);
        Ok(subscribers.len() < before)
    }
}

/// This node's replica of a replicated table, as its group's state
/// machine changes it: the only way such a table changes.
#[derive(Clone)]
pub(crate) struct ReplicaHandle {
    local: Arc<Local>,
    limits: TableLimits,
    /// A `disc_only` replica: told once its file holds the last change
    /// applied (its writer writes in order).
    written: Arc<Mutex<Option<Durable>>>,
}

impl ReplicaHandle {
    /// Apply a committed batch at log `index`: its changes (subscribers
    /// are told, in commit order), or why it changed nothing.
    pub(crate) fn apply(&self, index: u64, batch: Batch) -> Result<(), Abort> {
        let mut table = self.local.table.lock().expect("table poisoned");
        if let Err(abort) = table.check(&batch, &self.limits) {
            table.note_applied(index);
            return Err(abort);
        }
        let committed = commit(&self.local, &mut table, batch, index);
        self.note_written(committed.durable);
        Ok(())
    }

    /// Apply `batches` in order at log `index` (the commits one entry of
    /// the group's log carries), each checked against the table as the
    /// ones before it left it: what each did.
    pub(crate) fn apply_each(&self, index: u64, batches: Vec<Batch>) -> Vec<Result<(), Abort>> {
        let mut table = self.local.table.lock().expect("table poisoned");
        let limits = &self.limits;
        let (outcomes, committed) = commit_each(
            &self.local,
            &mut table,
            index,
            batches,
            |table, batch| table.check(batch, limits),
            Vec::new(),
        );
        self.note_written(committed.durable);
        outcomes
    }

    /// Apply a prepared batch at log `index`, unchecked: it was checked
    /// when prepared, and its keys were held since.
    pub(crate) fn apply_prepared(&self, index: u64, batch: Batch) {
        let mut table = self.local.table.lock().expect("table poisoned");
        let committed = commit(&self.local, &mut table, batch, index);
        self.note_written(committed.durable);
    }

    fn note_written(&self, durable: Option<Durable>) {
        if durable.is_some() {
            *self.written.lock().expect("written poisoned") = durable;
        }
    }

    /// Wait until a `disc_only` replica's file holds every change applied
    /// so far (at once for a replica in memory). Its group waits for this
    /// after each batch of entries, so the rows waiting in memory stay
    /// bounded by one batch. A file that failed was marked so: the
    /// replica then refuses reads, and this returns.
    pub(crate) async fn flushed(&self) {
        let pending = self.written.lock().expect("written poisoned").take();
        if let Some(done) = pending
            && let Ok(Err(why)) = done.await
        {
            tracing::error!(table = %self.schema().name, "this replica's file failed: {why}");
        }
    }

    /// Why `batch` would change nothing if applied now (limits, shapes,
    /// conditions), if it would not.
    pub(crate) fn check(&self, batch: &Batch) -> Result<(), Abort> {
        let table = self.local.table.lock().expect("table poisoned");
        table.check(batch, &self.limits)
    }

    /// Apply `ops` (a conflict-free table's merge made them; no limit
    /// refuses them, as every replica must take them) at the table's next
    /// index, telling subscribers the changes and then `extra`; the index,
    /// or `None` if there was nothing to apply or tell.
    pub(crate) fn apply_merged(
        &self,
        ops: Vec<super::state::Op>,
        extra: Vec<Change>,
    ) -> Option<u64> {
        if ops.is_empty() && extra.is_empty() {
            return None;
        }
        let mut table = self.local.table.lock().expect("table poisoned");
        let index = table.applied() + 1;
        let batch = Batch {
            conditions: Vec::new(),
            ops,
        };
        commit_telling(&self.local, &mut table, batch, index, extra);
        Some(index)
    }

    /// The table's limits.
    pub(crate) fn limits(&self) -> &TableLimits {
        &self.limits
    }

    /// The table's index: the last batch applied.
    pub(crate) fn applied(&self) -> u64 {
        self.local.table.lock().expect("table poisoned").applied()
    }

    /// The table encoded, as a snapshot holds it.
    pub(crate) fn encode(&self) -> Vec<u8> {
        molt_abi::codec::encode(&*self.local.table.lock().expect("table poisoned"))
    }

    /// Replace the table with `table` (a snapshot from the leader, or a
    /// restore): a `disc_only` replica's file is rewritten.
    pub(crate) fn replace(&self, table: Table) {
        let mut current = self.local.table.lock().expect("table poisoned");
        let durable = put_whole(&self.local, &mut current, table);
        self.note_written(durable);
    }

    /// Whether the replica's rows are kept in a file (`disc_only`).
    pub(crate) fn on_disc(&self) -> bool {
        self.local.disc.is_some()
    }

    /// The table's definition.
    pub(crate) fn schema(&self) -> Schema {
        self.local
            .table
            .lock()
            .expect("table poisoned")
            .schema()
            .clone()
    }
}
