//! Disc copies of this node's tables: each table in its own redb file
//! under `<data dir>/tables/`, so a damaged file takes down its table
//! only. The table is served from memory; every commit's changed rows are
//! written through by one writer thread per file, with group commit
//! (what is queued when a commit starts goes into it: one redb
//! transaction, one fsync), and the commit is answered once durable.
//!
//! Invariant: the file holds the table as of its `applied` index: every
//! commit up to it, none after. A failed write is fatal for the table:
//! it is reported with its path, and the table refuses everything after
//! (a restart reloads the file: the failed commit, never acknowledged, is
//! not there).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::state::{Record, Schema, Table};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Everything a commit changes, in one tree so a commit updates one:
/// the applied index at [`APPLIED`], each row at [`ROW`] + key, each
/// fence at [`FENCE`] + lock.
const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("data");
const APPLIED: &[u8] = &[0];
const ROW: u8 = 1;
const FENCE: u8 = 2;

fn tagged(tag: u8, bytes: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + bytes.len());
    key.push(tag);
    key.extend_from_slice(bytes);
    key
}

/// Most commits in one redb transaction.
const GROUP_MAX: usize = 1024;

/// A key's stored state: its version and records (`None`: deleted).
pub type StoredRow = Option<(u64, Vec<Record>)>;

/// One commit's changes, for the file.
pub struct Persist {
    /// The table's index after the commit.
    pub applied: u64,
    /// Each key the commit touched, as it is after it.
    pub rows: Vec<(Vec<u8>, StoredRow)>,
    /// Fences the commit advanced.
    pub fences: Vec<(String, u64)>,
    /// The rows and fences are the whole table (a restore): what the file
    /// held goes first.
    pub replace: bool,
    /// Told once the commit is durable, or why it could not be.
    pub done: oneshot::Sender<Result<(), String>>,
}

enum Job {
    Persist(Persist),
    /// Stop, deleting the file (the table was deleted).
    Remove(oneshot::Sender<()>),
    /// Stop, closing the file (the node stops).
    Close(oneshot::Sender<()>),
}

/// The disc file of one table; clones share it. Dropping the last stops
/// its writer once the queue is written.
#[derive(Clone)]
pub struct DiscFile {
    jobs: mpsc::Sender<Job>,
    /// Why the file can no longer be written, once that happened.
    failed: Arc<Mutex<Option<String>>>,
    path: PathBuf,
}

/// The file table `name` is kept in, under `dir`: the name hashed (any
/// UTF-8 name makes a short, safe file name; the file records the name).
pub fn path_for(dir: &Path, name: &str) -> PathBuf {
    let digest = Sha256::digest(name.as_bytes());
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{hex}.redb"))
}

/// The table files under `dir`.
pub fn list(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "redb"))
        .collect();
    files.sort();
    files
}

fn err(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

impl DiscFile {
    /// Make the file of a new, empty table.
    pub fn create(dir: &Path, schema: &Schema) -> Result<DiscFile, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the tables directory {}: {e}", dir.display()))?;
        let path = path_for(dir, &schema.name);
        if path.exists() {
            return Err(format!(
                "{} exists already: a table of that name was kept here",
                path.display()
            ));
        }
        let e = err(&path);
        let db = Database::create(&path).map_err(|x| e(&x))?;
        let txn = db.begin_write().map_err(|x| e(&x))?;
        {
            let mut meta = txn.open_table(META).map_err(|x| e(&x))?;
            let schema_bytes = molt_abi::codec::encode(schema);
            meta.insert("schema", schema_bytes.as_slice())
                .map_err(|x| e(&x))?;
            let mut data = txn.open_table(DATA).map_err(|x| e(&x))?;
            data.insert(APPLIED, 0u64.to_le_bytes().as_slice())
                .map_err(|x| e(&x))?;
        }
        txn.commit().map_err(|x| e(&x))?;
        Ok(DiscFile::start(db, path.clone()))
    }

    /// Open a table's file and load the table.
    pub fn open(path: &Path) -> Result<(Table, DiscFile), String> {
        let e = err(path);
        let corrupt = |what: &str, why: &dyn std::fmt::Display| {
            format!("{}: {what} does not decode ({why})", path.display())
        };
        let db = Database::create(path).map_err(|x| e(&x))?;
        let table = {
            let txn = db.begin_read().map_err(|x| e(&x))?;
            let meta = txn.open_table(META).map_err(|x| e(&x))?;
            let get = |key: &str| -> Result<Vec<u8>, String> {
                meta.get(key)
                    .map_err(|x| e(&x))?
                    .map(|v| v.value().to_vec())
                    .ok_or_else(|| format!("{}: no {key} record", path.display()))
            };
            let schema: Schema =
                molt_abi::codec::decode(&get("schema")?).map_err(|x| corrupt("the schema", &x))?;
            let mut applied = None;
            let mut rows = Vec::new();
            let mut fences = BTreeMap::new();
            for item in txn
                .open_table(DATA)
                .map_err(|x| e(&x))?
                .iter()
                .map_err(|x| e(&x))?
            {
                let (k, v) = item.map_err(|x| e(&x))?;
                let (key, value) = (k.value(), v.value());
                match key.split_first() {
                    Some((&ROW, key)) => {
                        let (version, records): (u64, Vec<Record>) = molt_abi::codec::decode(value)
                            .map_err(|x| corrupt(&format!("the row of key {key:?}"), &x))?;
                        rows.push((key.to_vec(), version, records));
                    }
                    Some((&FENCE, lock)) => {
                        let lock = std::str::from_utf8(lock)
                            .map_err(|x| corrupt("a fence's lock name", &x))?;
                        let token = value.try_into().map(u64::from_le_bytes).map_err(|_| {
                            corrupt(&format!("the fence of {lock}"), &"not 8 bytes")
                        })?;
                        fences.insert(lock.to_string(), token);
                    }
                    Some((0, [])) => {
                        let index = value
                            .try_into()
                            .map(u64::from_le_bytes)
                            .map_err(|_| corrupt("the applied index", &"not 8 bytes"))?;
                        applied = Some(index);
                    }
                    other => {
                        let tag = other.map(|(t, _)| *t);
                        return Err(corrupt("a record", &format!("unknown tag {tag:?}")));
                    }
                }
            }
            let applied = applied.ok_or_else(|| format!("{}: no applied index", path.display()))?;
            Table::from_stored(schema, rows, fences, applied)
        };
        Ok((table, DiscFile::start(db, path.to_path_buf())))
    }

    fn start(db: Database, path: PathBuf) -> DiscFile {
        let (jobs, queue) = mpsc::channel();
        let failed = Arc::new(Mutex::new(None));
        let (report, shown) = (failed.clone(), path.clone());
        std::thread::Builder::new()
            .name("molt-table-disc".into())
            .spawn(move || writer(db, queue, report, shown))
            .expect("the OS could not start a thread");
        DiscFile { jobs, failed, path }
    }

    /// Why the file can no longer be written, if it cannot.
    pub fn failed(&self) -> Option<String> {
        self.failed.lock().expect("disc failure poisoned").clone()
    }

    /// Queue a commit's changes; `persist.done` is told when durable.
    pub fn persist(&self, persist: Persist) {
        if let Err(mpsc::SendError(Job::Persist(p))) = self.jobs.send(Job::Persist(persist)) {
            let _ = p.done.send(Err(format!(
                "{}: the table's writer has stopped",
                self.path.display()
            )));
        }
    }

    /// Stop writing and delete the file (after what is queued).
    pub async fn remove(&self) {
        let (done, removed) = oneshot::channel();
        if self.jobs.send(Job::Remove(done)).is_ok() {
            let _ = removed.await;
        }
    }

    /// Write what is queued and close the file: later commits fail.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.jobs.send(Job::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }
}

/// Write commits as they come, each group in one durable transaction.
fn writer(
    db: Database,
    queue: mpsc::Receiver<Job>,
    failed: Arc<Mutex<Option<String>>>,
    path: PathBuf,
) {
    let e = err(&path);
    while let Ok(first) = queue.recv() {
        let mut group = Vec::new();
        let mut stop = None;
        match first {
            Job::Persist(p) => group.push(p),
            Job::Remove(done) => stop = Some((done, true)),
            Job::Close(done) => stop = Some((done, false)),
        }
        while stop.is_none() && group.len() < GROUP_MAX {
            match queue.try_recv() {
                Ok(Job::Persist(p)) => group.push(p),
                Ok(Job::Remove(done)) => stop = Some((done, true)),
                Ok(Job::Close(done)) => stop = Some((done, false)),
                Err(_) => break,
            }
        }
        if !group.is_empty() {
            let known = failed.lock().expect("disc failure poisoned").clone();
            let result = match known {
                Some(why) => Err(why),
                None => write_group(&db, &group).map_err(|x| {
                    // Said once, when it happens; later commits are
                    // refused with the same reason.
                    let why = e(&x);
                    tracing::error!(file = %path.display(), "a table's disc file cannot be written: {why}; the table stops taking writes");
                    *failed.lock().expect("disc failure poisoned") = Some(why.clone());
                    why
                }),
            };
            for p in group {
                let _ = p.done.send(result.clone());
            }
        }
        if let Some((done, remove)) = stop {
            drop(db);
            if remove && let Err(x) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), "a deleted table's file could not be removed: {x}");
            }
            // Later commits fail rather than wait for ever.
            let why = if remove {
                "the table was deleted"
            } else {
                "the node is stopping"
            };
            *failed.lock().expect("disc failure poisoned") = Some(format!(
                "{}: the table's file is closed ({why})",
                path.display()
            ));
            let _ = done.send(());
            return;
        }
    }
}

fn write_group(db: &Database, group: &[Persist]) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut data = txn.open_table(DATA)?;
        for p in group {
            if p.replace {
                data.retain(|key, _| key == APPLIED)?;
            }
            for (key, row) in &p.rows {
                let key = tagged(ROW, key);
                match row {
                    Some(row) => {
                        data.insert(key.as_slice(), molt_abi::codec::encode(row).as_slice())?;
                    }
                    None => {
                        data.remove(key.as_slice())?;
                    }
                }
            }
            for (lock, token) in &p.fences {
                let key = tagged(FENCE, lock.as_bytes());
                data.insert(key.as_slice(), token.to_le_bytes().as_slice())?;
            }
        }
        if let Some(last) = group.last() {
            data.insert(APPLIED, last.applied.to_le_bytes().as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}
