//! Disc copies of this node's tables: each table in its own redb file
//! under `<data dir>/tables/`, so a damaged file takes down its table
//! only. Every commit's changed rows are written through by one writer
//! thread per file, with group commit (what is queued when a commit
//! starts goes into it: one redb transaction, one fsync), and the commit
//! is answered once durable.
//!
//! A `disc` copy is served from memory and loaded whole at start. A
//! `disc_only` copy ([`DiscRows`]) is served from its file: memory holds
//! only the rows committed but not yet written (its *overlay*, bounded by
//! the commits in flight), and the file also keeps the table's record
//! count and its secondary indexes, so nothing is loaded at start and the
//! table may be larger than memory.
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
/// `disc_only`: one entry per (index, index value, key) some record of
/// the key has: [`INDEX`], the index's number and the value's length
/// (`u32`, big-endian each), the value, the key.
const INDEX: u8 = 3;
/// `disc_only`: the table's record count.
const RECORDS: &[u8] = &[4];
/// The `meta` record that marks a `disc_only` file.
const COPY: &str = "copy";
const DISC_ONLY: &[u8] = b"disc_only";

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

/// The prefix of index `i`'s entries for `value`.
fn index_prefix(i: usize, value: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + value.len());
    key.push(INDEX);
    key.extend_from_slice(&(i as u32).to_be_bytes());
    key.extend_from_slice(&(value.len() as u32).to_be_bytes());
    key.extend_from_slice(value);
    key
}

/// The (index, value) pairs some record of a row has.
fn index_pairs(row: &StoredRow) -> Vec<(usize, Vec<u8>)> {
    let mut pairs: Vec<(usize, Vec<u8>)> = row
        .iter()
        .flat_map(|(_, records)| records)
        .flat_map(|r| r.index_values.iter().cloned().enumerate())
        .collect();
    pairs.sort();
    pairs.dedup();
    pairs
}

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
    /// The table's record count after the commit (a `disc_only` file
    /// keeps it).
    pub records: u64,
    /// A `disc_only` table: the overlay's generation its rows were staged
    /// in ([`DiscRows::generation`]).
    pub generation: u64,
    /// Told once the commit is durable, or why it could not be.
    pub done: oneshot::Sender<Result<(), String>>,
}

enum Job {
    Persist(Persist),
    /// Stop, deleting the file (the table was deleted).
    Remove(oneshot::Sender<()>),
    /// Stop, closing the file (the node stops).
    Close(oneshot::Sender<()>),
    /// Wait until told (tests).
    #[cfg(test)]
    Hold(oneshot::Receiver<()>),
}

/// The disc file of one table; clones share it. Dropping the last stops
/// its writer once the queue is written.
#[derive(Clone)]
pub struct DiscFile {
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

/// What a file's writer and its readers share.
struct Shared {
    /// The open file; `None` once closed or removed.
    db: std::sync::RwLock<Option<Database>>,
    /// Why the file can no longer be written or read, once that happened.
    failed: Mutex<Option<String>>,
    path: PathBuf,
    /// A `disc_only` file: the rows committed and not yet written.
    overlay: Option<Mutex<Overlay>>,
}

impl Shared {
    /// Why the file can no longer be read or written, once that happened.
    fn failed(&self) -> Option<String> {
        self.failed.lock().expect("disc failure poisoned").clone()
    }

    /// Record why the file failed (the first reason stays), and log it.
    fn fail(&self, why: String) -> String {
        let mut failed = self.failed.lock().expect("disc failure poisoned");
        if failed.is_none() {
            tracing::error!(file = %self.path.display(), "a table's disc file failed: {why}; the table stops serving");
            *failed = Some(why.clone());
        }
        failed.clone().unwrap_or(why)
    }
}

/// A `disc_only` table's rows committed but not yet in its file, each
/// with the index of the commit that staged it; reads look here first.
/// A row leaves it once written, unless staged again since: an entry is
/// known by its generation (one per restore, whose log indexes may repeat
/// ones already used) and the log index of the commit.
#[derive(Default)]
struct Overlay {
    rows: BTreeMap<Vec<u8>, ((u64, u64), StoredRow)>,
    /// A restore replaced the whole table: until it is written, a key
    /// absent here is absent. Its generation and log index.
    replaced: Option<(u64, u64)>,
    generation: u64,
}

/// A `disc_only` table's rows, read from its file (and the rows staged
/// for it). Reads that fail mark the file failed: the table then refuses
/// everything ([`DiscRows::failed`]), and reads answer nothing.
#[derive(Clone)]
pub struct DiscRows {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DiscRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DiscRows({})", self.shared.path.display())
    }
}

impl DiscRows {
    fn overlay(&self) -> std::sync::MutexGuard<'_, Overlay> {
        self.shared
            .overlay
            .as_ref()
            .expect("a disc_only file has an overlay")
            .lock()
            .expect("overlay poisoned")
    }

    /// Why the file cannot be read or written, if it cannot.
    pub fn failed(&self) -> Option<String> {
        self.shared.failed()
    }

    /// Run `read` on the file's data tree; `None` (the file marked
    /// failed) if it cannot be read.
    fn with_data<T>(
        &self,
        read: impl FnOnce(&redb::ReadOnlyTable<&[u8], &[u8]>) -> Result<T, String>,
    ) -> Option<T> {
        let e = err(&self.shared.path);
        let db = self.shared.db.read().expect("disc file poisoned");
        let result = match db.as_ref() {
            None => Err(format!(
                "{}: the table's file is closed",
                self.shared.path.display()
            )),
            Some(db) => db
                .begin_read()
                .map_err(|x| e(&x))
                .and_then(|txn| txn.open_table(DATA).map_err(|x| e(&x)))
                .and_then(|data| read(&data)),
        };
        result.map_err(|why| self.shared.fail(why)).ok()
    }

    /// A key's version and records, if it has any.
    pub fn get(&self, key: &[u8]) -> StoredRow {
        {
            let overlay = self.overlay();
            if let Some((_, row)) = overlay.rows.get(key) {
                return row.clone();
            }
            if overlay.replaced.is_some() {
                return None;
            }
        }
        let path = &self.shared.path;
        self.with_data(|data| {
            let found = data
                .get(tagged(ROW, key).as_slice())
                .map_err(|x| err(path)(&x))?;
            found.map(|v| decode_row(path, key, v.value())).transpose()
        })
        .flatten()
    }

    /// Up to `limit` rows in key order from `from` on, below `to`
    /// (`None`: to the end), each with its version and records.
    pub fn range(
        &self,
        from: std::ops::Bound<&[u8]>,
        to: Option<&[u8]>,
        limit: usize,
    ) -> Vec<(Vec<u8>, u64, Vec<Record>)> {
        use std::ops::Bound;
        let upper = to.map_or(Bound::Unbounded, Bound::Excluded);
        // The overlay first, then the file: a row written (and dropped
        // from the overlay) in between is in the file by then.
        let (staged, replaced): (Vec<(Vec<u8>, StoredRow)>, bool) = {
            let overlay = self.overlay();
            let staged = overlay
                .rows
                .range::<[u8], _>((from, upper))
                .map(|(k, (_, row))| (k.clone(), row.clone()))
                .collect();
            (staged, overlay.replaced.is_some())
        };
        let path = &self.shared.path;
        let stored: Vec<(Vec<u8>, u64, Vec<Record>)> = match replaced {
            true => Vec::new(),
            false => self
                .with_data(|data| {
                    let start = match from {
                        Bound::Included(k) => Bound::Included(tagged(ROW, k)),
                        Bound::Excluded(k) => Bound::Excluded(tagged(ROW, k)),
                        Bound::Unbounded => Bound::Included(vec![ROW]),
                    };
                    let end = match to {
                        Some(k) => Bound::Excluded(tagged(ROW, k)),
                        None => Bound::Excluded(vec![ROW + 1]),
                    };
                    let bounds = (
                        start.as_ref().map(Vec::as_slice),
                        end.as_ref().map(Vec::as_slice),
                    );
                    let mut rows = Vec::new();
                    // Enough from the file that, with the overlay's
                    // deletions taken out, `limit` remain.
                    let want = limit.saturating_add(staged.len());
                    for item in data.range::<&[u8]>(bounds).map_err(|x| err(path)(&x))? {
                        if rows.len() >= want {
                            break;
                        }
                        let (k, v) = item.map_err(|x| err(path)(&x))?;
                        let key = &k.value()[1..];
                        let (version, records) = decode_row(path, key, v.value())?;
                        rows.push((key.to_vec(), version, records));
                    }
                    Ok(rows)
                })
                .unwrap_or_default(),
        };
        merge(staged, stored, limit)
    }

    /// The keys some record of which has `value` for index `i`, in key
    /// order (a caller reads each and checks its records).
    pub fn index_keys(&self, i: usize, value: &[u8]) -> Vec<Vec<u8>> {
        let (mut keys, replaced): (Vec<Vec<u8>>, bool) = {
            let overlay = self.overlay();
            let keys = overlay
                .rows
                .iter()
                .filter(|(_, (_, row))| {
                    row.iter()
                        .flat_map(|(_, records)| records)
                        .any(|r| r.index_values.get(i).is_some_and(|v| v == value))
                })
                .map(|(k, _)| k.clone())
                .collect();
            (keys, overlay.replaced.is_some())
        };
        if !replaced {
            let prefix = index_prefix(i, value);
            let path = &self.shared.path;
            let stored = self
                .with_data(|data| {
                    let mut keys = Vec::new();
                    for item in data
                        .range::<&[u8]>(prefix.as_slice()..)
                        .map_err(|x| err(path)(&x))?
                    {
                        let (k, _) = item.map_err(|x| err(path)(&x))?;
                        match k.value().strip_prefix(prefix.as_slice()) {
                            Some(key) => keys.push(key.to_vec()),
                            None => break,
                        }
                    }
                    Ok(keys)
                })
                .unwrap_or_default();
            keys.extend(stored);
        }
        keys.sort();
        keys.dedup();
        keys
    }

    /// Stage a committed row at log `index` (the file gets it with the
    /// commit's [`Persist`]).
    pub fn stage(&self, index: u64, key: Vec<u8>, row: StoredRow) {
        let mut overlay = self.overlay();
        let at = (overlay.generation, index);
        overlay.rows.insert(key, (at, row));
    }

    /// Stage a whole table (a restore) at log `index`, in a new
    /// generation: until it is written, reads see these rows and nothing
    /// of the file.
    pub fn stage_all(&self, index: u64, rows: impl IntoIterator<Item = (Vec<u8>, StoredRow)>) {
        let mut overlay = self.overlay();
        overlay.generation += 1;
        let at = (overlay.generation, index);
        overlay.rows = rows.into_iter().map(|(k, r)| (k, (at, r))).collect();
        overlay.replaced = Some(at);
    }

    /// The generation rows are staged in now (what a [`Persist`] of
    /// them carries).
    pub fn generation(&self) -> u64 {
        self.overlay().generation
    }

    /// Rows staged and not yet written (for tests and status).
    pub fn staged(&self) -> usize {
        self.overlay().rows.len()
    }
}

/// The overlay's rows over the file's, in key order, deleted ones left
/// out, at most `limit`.
fn merge(
    staged: Vec<(Vec<u8>, StoredRow)>,
    stored: Vec<(Vec<u8>, u64, Vec<Record>)>,
    limit: usize,
) -> Vec<(Vec<u8>, u64, Vec<Record>)> {
    let mut out = Vec::new();
    let mut staged = staged.into_iter().peekable();
    let mut stored = stored.into_iter().peekable();
    while out.len() < limit {
        let take_staged = match (staged.peek(), stored.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((a, _)), Some((b, _, _))) => a <= b,
        };
        if take_staged {
            let (key, row) = staged.next().expect("peeked");
            if stored.peek().is_some_and(|(k, _, _)| *k == key) {
                stored.next();
            }
            if let Some((version, records)) = row {
                out.push((key, version, records));
            }
        } else {
            out.push(stored.next().expect("peeked"));
        }
    }
    out
}

/// A stored row of `key`, decoded.
fn decode_row(path: &Path, key: &[u8], bytes: &[u8]) -> Result<(u64, Vec<Record>), String> {
    molt_abi::codec::decode(bytes).map_err(|x| {
        format!(
            "{}: the row of key {key:?} does not decode ({x})",
            path.display()
        )
    })
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
        DiscFile::create_copy(dir, schema, false)
    }

    /// Make the file of a new, empty table, `disc_only` or not.
    pub fn create_copy(dir: &Path, schema: &Schema, disc_only: bool) -> Result<DiscFile, String> {
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
            if disc_only {
                meta.insert(COPY, DISC_ONLY).map_err(|x| e(&x))?;
            }
            let mut data = txn.open_table(DATA).map_err(|x| e(&x))?;
            data.insert(APPLIED, 0u64.to_le_bytes().as_slice())
                .map_err(|x| e(&x))?;
            if disc_only {
                data.insert(RECORDS, 0u64.to_le_bytes().as_slice())
                    .map_err(|x| e(&x))?;
            }
        }
        txn.commit().map_err(|x| e(&x))?;
        Ok(DiscFile::start(db, path.clone(), disc_only))
    }

    /// The rows of a `disc_only` file, as its table reads them.
    pub fn rows(&self) -> Option<DiscRows> {
        self.shared.overlay.as_ref().map(|_| DiscRows {
            shared: self.shared.clone(),
        })
    }

    /// Open a table's file and load the table (a `disc_only` table: its
    /// count, fences and log index; its rows stay in the file).
    pub fn open(path: &Path) -> Result<(Table, DiscFile), String> {
        let e = err(path);
        let corrupt = |what: &str, why: &dyn std::fmt::Display| {
            format!("{}: {what} does not decode ({why})", path.display())
        };
        let u64_of = |what: &str, bytes: &[u8]| -> Result<u64, String> {
            bytes
                .try_into()
                .map(u64::from_le_bytes)
                .map_err(|_| corrupt(what, &"not 8 bytes"))
        };
        let db = Database::create(path).map_err(|x| e(&x))?;
        let (schema, disc_only) = {
            let txn = db.begin_read().map_err(|x| e(&x))?;
            let meta = txn.open_table(META).map_err(|x| e(&x))?;
            let get = |key: &str| -> Result<Option<Vec<u8>>, String> {
                Ok(meta
                    .get(key)
                    .map_err(|x| e(&x))?
                    .map(|v| v.value().to_vec()))
            };
            let schema =
                get("schema")?.ok_or_else(|| format!("{}: no schema record", path.display()))?;
            let schema: Schema =
                molt_abi::codec::decode(&schema).map_err(|x| corrupt("the schema", &x))?;
            let disc_only = match get(COPY)? {
                None => false,
                Some(copy) if copy == DISC_ONLY => true,
                Some(copy) => {
                    return Err(corrupt(
                        "the copy type",
                        &format!("unknown: {:?}", String::from_utf8_lossy(&copy)),
                    ));
                }
            };
            (schema, disc_only)
        };
        let txn = db.begin_read().map_err(|x| e(&x))?;
        let data = txn.open_table(DATA).map_err(|x| e(&x))?;
        let applied = data
            .get(APPLIED)
            .map_err(|x| e(&x))?
            .ok_or_else(|| format!("{}: no applied index", path.display()))
            .and_then(|v| u64_of("the applied index", v.value()))?;
        let mut fences = BTreeMap::new();
        let mut fence = |key: &[u8], value: &[u8]| -> Result<(), String> {
            let lock = std::str::from_utf8(key).map_err(|x| corrupt("a fence's lock name", &x))?;
            let token = u64_of(&format!("the fence of {lock}"), value)?;
            fences.insert(lock.to_string(), token);
            Ok(())
        };
        if disc_only {
            let records = data
                .get(RECORDS)
                .map_err(|x| e(&x))?
                .ok_or_else(|| format!("{}: no record count", path.display()))
                .and_then(|v| u64_of("the record count", v.value()))?;
            let (from, to) = ([FENCE], [FENCE + 1]);
            for item in data
                .range::<&[u8]>(from.as_slice()..to.as_slice())
                .map_err(|x| e(&x))?
            {
                let (k, v) = item.map_err(|x| e(&x))?;
                fence(&k.value()[1..], v.value())?;
            }
            drop((data, txn));
            let file = DiscFile::start(db, path.to_path_buf(), true);
            let rows = file.rows().expect("a disc_only file");
            return Ok((Table::on_disc(schema, rows, fences, records, applied), file));
        }
        let mut rows = Vec::new();
        for item in data.iter().map_err(|x| e(&x))? {
            let (k, v) = item.map_err(|x| e(&x))?;
            let (key, value) = (k.value(), v.value());
            match key.split_first() {
                Some((&ROW, key)) => {
                    let (version, records) = decode_row(path, key, value)?;
                    rows.push((key.to_vec(), version, records));
                }
                Some((&FENCE, lock)) => fence(lock, value)?,
                Some((0, [])) => {}
                other => {
                    let tag = other.map(|(t, _)| *t);
                    return Err(corrupt("a record", &format!("unknown tag {tag:?}")));
                }
            }
        }
        drop((data, txn));
        let table = Table::from_stored(schema, rows, fences, applied);
        Ok((table, DiscFile::start(db, path.to_path_buf(), false)))
    }

    fn start(db: Database, path: PathBuf, disc_only: bool) -> DiscFile {
        let (jobs, queue) = mpsc::channel();
        let shared = Arc::new(Shared {
            db: std::sync::RwLock::new(Some(db)),
            failed: Mutex::new(None),
            path,
            overlay: disc_only.then(Mutex::default),
        });
        let writes = shared.clone();
        std::thread::Builder::new()
            .name("molt-table-disc".into())
            .spawn(move || writer(writes, queue))
            .expect("the OS could not start a thread");
        DiscFile { jobs, shared }
    }

    /// Why the file can no longer be written, if it cannot.
    pub fn failed(&self) -> Option<String> {
        self.shared.failed()
    }

    /// Whether this is a `disc_only` file (the table is read from it).
    pub fn disc_only(&self) -> bool {
        self.shared.overlay.is_some()
    }

    /// Queue a commit's changes; `persist.done` is told when durable.
    pub fn persist(&self, persist: Persist) {
        if let Err(mpsc::SendError(Job::Persist(p))) = self.jobs.send(Job::Persist(persist)) {
            let _ = p.done.send(Err(format!(
                "{}: the table's writer has stopped",
                self.shared.path.display()
            )));
        }
    }

    /// Hold the writer (after what is queued) until the returned sender
    /// is dropped: commits after stay in the overlay. For tests.
    #[cfg(test)]
    pub fn hold(&self) -> oneshot::Sender<()> {
        let (release, held) = oneshot::channel();
        let _ = self.jobs.send(Job::Hold(held));
        release
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
fn writer(shared: Arc<Shared>, queue: mpsc::Receiver<Job>) {
    let path = shared.path.clone();
    let e = err(&path);
    while let Ok(first) = queue.recv() {
        let mut group = Vec::new();
        let mut stop = None;
        // Only a test's `Hold` sets it.
        #[allow(unused_mut)]
        let mut hold: Option<oneshot::Receiver<()>> = None;
        match first {
            Job::Persist(p) => group.push(p),
            Job::Remove(done) => stop = Some((done, true)),
            Job::Close(done) => stop = Some((done, false)),
            #[cfg(test)]
            Job::Hold(held) => hold = Some(held),
        }
        while stop.is_none() && hold.is_none() && group.len() < GROUP_MAX {
            match queue.try_recv() {
                Ok(Job::Persist(p)) => group.push(p),
                Ok(Job::Remove(done)) => stop = Some((done, true)),
                Ok(Job::Close(done)) => stop = Some((done, false)),
                #[cfg(test)]
                Ok(Job::Hold(held)) => hold = Some(held),
                Err(_) => break,
            }
        }
        if !group.is_empty() {
            let known = shared.failed();
            let result = match known {
                Some(why) => Err(why),
                None => {
                    let db = shared.db.read().expect("disc file poisoned");
                    let written = match db.as_ref() {
                        Some(db) => {
                            write_group(db, &group, shared.overlay.is_some()).map_err(|x| e(&x))
                        }
                        None => Err(format!("{}: the table's file is closed", path.display())),
                    };
                    // Said once, when it happens; later commits are
                    // refused with the same reason.
                    written.map_err(|why| shared.fail(why))
                }
            };
            // Written rows leave the overlay (unless staged again since);
            // a failed file keeps them, and refuses every read.
            if result.is_ok()
                && let Some(overlay) = &shared.overlay
            {
                let mut overlay = overlay.lock().expect("overlay poisoned");
                for p in &group {
                    let written = (p.generation, p.applied);
                    for (key, _) in &p.rows {
                        if overlay.rows.get(key).is_some_and(|(at, _)| *at == written) {
                            overlay.rows.remove(key);
                        }
                    }
                    if p.replace && overlay.replaced == Some(written) {
                        overlay.replaced = None;
                    }
                }
            }
            for p in group {
                let _ = p.done.send(result.clone());
            }
        }
        if let Some(held) = hold {
            let _ = held.blocking_recv();
        }
        if let Some((done, remove)) = stop {
            shared.db.write().expect("disc file poisoned").take();
            if remove && let Err(x) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), "a deleted table's file could not be removed: {x}");
            }
            // Later commits fail rather than wait for ever.
            let why = if remove {
                "the table was deleted"
            } else {
                "the node is stopping"
            };
            *shared.failed.lock().expect("disc failure poisoned") = Some(format!(
                "{}: the table's file is closed ({why})",
                path.display()
            ));
            let _ = done.send(());
            return;
        }
    }
}

fn write_group(db: &Database, group: &[Persist], disc_only: bool) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut data = txn.open_table(DATA)?;
        for p in group {
            if p.replace {
                data.retain(|key, _| key == APPLIED)?;
            }
            for (key, row) in &p.rows {
                let stored = tagged(ROW, key);
                // A disc_only file keeps its indexes: the row's old entries
                // out, its new ones in.
                if disc_only {
                    let old: StoredRow = match data.get(stored.as_slice())? {
                        Some(v) => molt_abi::codec::decode(v.value()).ok(),
                        None => None,
                    };
                    let (before, after) = (index_pairs(&old), index_pairs(row));
                    for (i, value) in &before {
                        if !after.contains(&(*i, value.clone())) {
                            let mut entry = index_prefix(*i, value);
                            entry.extend_from_slice(key);
                            data.remove(entry.as_slice())?;
                        }
                    }
                    for (i, value) in &after {
                        if !before.contains(&(*i, value.clone())) {
                            let mut entry = index_prefix(*i, value);
                            entry.extend_from_slice(key);
                            data.insert(entry.as_slice(), [].as_slice())?;
                        }
                    }
                }
                match row {
                    Some(row) => {
                        data.insert(stored.as_slice(), molt_abi::codec::encode(row).as_slice())?;
                    }
                    None => {
                        data.remove(stored.as_slice())?;
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
            if disc_only {
                data.insert(RECORDS, last.records.to_le_bytes().as_slice())?;
            }
        }
    }
    txn.commit()?;
    Ok(())
}
