//! The Raft log, vote and snapshot of one node: kept in memory for reads,
//! and in `Disc` mode written through to redb by one writer thread with
//! group commit (every write waiting when a commit starts goes into it:
//! one transaction, one fsync, then every waiting append is acknowledged).
//!
//! Invariant: an append is acknowledged to Raft only after the commit that
//! holds it is durable; a vote is saved durably before `save_vote`
//! returns. A failed write is fatal for the coordination group: it is
//! logged, reported through [`Storage::failure`], and every later write
//! fails too, so the group stops rather than run on a broken log.

#![allow(clippy::result_large_err)] // openraft's StorageError is what the traits return.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, OptionalSend, RaftLogId, RaftLogReader, StorageError, StorageIOError,
    Vote,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use super::types::{Coord, Member};

/// The Raft groups whose logs a [`Storage`] keeps: the coordination group
/// ([`Coord`]), and any group of the same shape (node ids `u64`, members
/// [`Member`], openraft's entries, encodable with the codec).
pub trait LogTypes:
    openraft::RaftTypeConfig<
        NodeId = u64,
        Node = Member,
        Entry = Entry<Self>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        D: Clone + Serialize + serde::de::DeserializeOwned,
    >
{
}

impl<C> LogTypes for C where
    C: openraft::RaftTypeConfig<
            NodeId = u64,
            Node = Member,
            Entry = Entry<C>,
            SnapshotData = std::io::Cursor<Vec<u8>>,
            D: Clone + Serialize + serde::de::DeserializeOwned,
        >
{
}

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Most writes in one commit.
const BATCH_MAX: usize = 4096;

/// Who this data directory belongs to: written when it is created, checked
/// at every start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The node's Raft id.
    pub member: u64,
    /// The node's name.
    pub node: String,
}

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory could not be made.
    #[error("cannot create the data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// redb refused the file.
    #[error("cannot open the coordination log {path}: {why}")]
    Database {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// A record in the file does not decode.
    #[error("the coordination log {path} is corrupt: {what} does not decode ({why})")]
    Corrupt {
        /// The file.
        path: String,
        /// Which record.
        what: String,
        /// Why.
        why: String,
    },
    /// The directory holds another node's log.
    #[error(
        "the data directory {path} belongs to node {owner}, not {node}: choose another --data-dir"
    )]
    OtherNode {
        /// The directory.
        path: String,
        /// The node it belongs to.
        owner: String,
        /// This node.
        node: String,
    },
}

/// A persisted snapshot: its metadata and its bytes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredSnapshot {
    /// openraft's metadata.
    pub meta: openraft::SnapshotMeta<u64, Member>,
    /// The encoded state.
    pub data: Vec<u8>,
}

enum Write<C: LogTypes> {
    Append(Vec<(u64, Vec<u8>)>, Option<LogFlushed<C>>),
    Meta(
        &'static str,
        Vec<u8>,
        Option<oneshot::Sender<io::Result<()>>>,
    ),
    /// Remove entries from this index on.
    Truncate(u64),
    /// Remove entries up to this index, inclusive, and record the purge.
    Purge(u64, Vec<u8>),
    /// Read a meta record (after the writes before).
    Read(
        &'static str,
        oneshot::Sender<Result<Option<Vec<u8>>, String>>,
    ),
    /// Close the database (after the writes before) and stop.
    Close(oneshot::Sender<()>),
}

impl<C: LogTypes> Write<C> {
    /// Tell whoever waits for this write how it went.
    fn complete(self, result: io::Result<()>) {
        match self {
            Write::Append(_, Some(cb)) => cb.log_io_completed(result),
            Write::Meta(_, _, Some(done)) => {
                let _ = done.send(result);
            }
            Write::Read(key, done) => {
                let _ = done.send(Err(match result {
                    Ok(()) => format!("{key} is not kept in a file"),
                    Err(e) => e.to_string(),
                }));
            }
            _ => {}
        }
    }
}

struct Mem<C: LogTypes> {
    entries: BTreeMap<u64, Entry<C>>,
    last_purged: Option<LogId<u64>>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
}

impl<C: LogTypes> Default for Mem<C> {
    fn default() -> Self {
        Mem {
            entries: BTreeMap::new(),
            last_purged: None,
            vote: None,
            committed: None,
        }
    }
}

/// The node's Raft storage of one group. Clones share it.
pub struct Storage<C: LogTypes = Coord> {
    mem: Arc<Mutex<Mem<C>>>,
    writer: Option<mpsc::Sender<Write<C>>>,
    failed: watch::Receiver<Option<String>>,
    /// Kept so that `failed` never reports a closed channel.
    _failed_tx: Arc<watch::Sender<Option<String>>>,
    /// What was found at open: the identity, and the snapshot.
    pub identity: Identity,
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
    /// The snapshot's bytes are in the file only (see [`Storage::lean`]).
    lean: Arc<std::sync::atomic::AtomicBool>,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn write_error(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_logs(&io_err(e)).into()
}

impl<C: LogTypes> Clone for Storage<C> {
    fn clone(&self) -> Self {
        Storage {
            mem: self.mem.clone(),
            writer: self.writer.clone(),
            failed: self.failed.clone(),
            _failed_tx: self._failed_tx.clone(),
            identity: self.identity.clone(),
            snapshot: self.snapshot.clone(),
            lean: self.lean.clone(),
        }
    }
}

impl<C: LogTypes> Storage<C> {
    /// Storage in memory only (`LogMode::Ram`), for node `identity`.
    pub fn in_memory(identity: Identity) -> Storage<C> {
        let (failed_tx, failed) = watch::channel(None);
        Storage {
            mem: Arc::default(),
            writer: None,
            failed,
            _failed_tx: Arc::new(failed_tx),
            identity,
            snapshot: Arc::default(),
            lean: Arc::default(),
        }
    }

    /// Open (or create) the log in `dir` for node `node`; a new log gets
    /// `new_member` as its Raft id.
    pub fn open(dir: &Path, node: &str, new_member: u64) -> Result<Storage<C>, OpenError> {
        Storage::open_file(dir, "coord.redb", node, new_member)
    }

    /// Open (or create) the log in file `file` of `dir` for node `node`; a
    /// new log gets `new_member` as its Raft id.
    pub fn open_file(
        dir: &Path,
        file: &str,
        node: &str,
        new_member: u64,
    ) -> Result<Storage<C>, OpenError> {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join(file);
        let shown = path.display().to_string();
        let db_err = |e: &dyn std::fmt::Display| OpenError::Database {
            path: shown.clone(),
            why: e.to_string(),
        };
        let corrupt = |what: &str, e: &dyn std::fmt::Display| OpenError::Corrupt {
            path: shown.clone(),
            what: what.to_string(),
            why: e.to_string(),
        };
        let db = Database::create(&path).map_err(|e| db_err(&e))?;
        // Make sure both tables exist, and the identity is recorded.
        let mut identity = Identity {
            member: new_member,
            node: node.to_string(),
        };
        {
            let txn = db.begin_write().map_err(|e| db_err(&e))?;
            {
                let _ = txn.open_table(LOG).map_err(|e| db_err(&e))?;
                let mut meta = txn.open_table(META).map_err(|e| db_err(&e))?;
                let found = meta
                    .get("identity")
                    .map_err(|e| db_err(&e))?
                    .map(|v| v.value().to_vec());
                match found {
                    Some(bytes) => {
                        identity = molt_abi::codec::decode(&bytes)
                            .map_err(|e| corrupt("the identity record", &e))?;
                    }
                    None => {
                        meta.insert("identity", molt_abi::codec::encode(&identity).as_slice())
                            .map_err(|e| db_err(&e))?;
                    }
                }
            }
            txn.commit().map_err(|e| db_err(&e))?;
        }
        if identity.node != node {
            return Err(OpenError::OtherNode {
                path: dir.display().to_string(),
                owner: identity.node,
                node: node.to_string(),
            });
        }
        let mut mem = Mem::default();
        let mut snapshot = None;
        {
            let txn = db.begin_read().map_err(|e| db_err(&e))?;
            let log = txn.open_table(LOG).map_err(|e| db_err(&e))?;
            for row in log.iter().map_err(|e| db_err(&e))? {
                let (k, v) = row.map_err(|e| db_err(&e))?;
                let entry: Entry<C> = molt_abi::codec::decode(v.value())
                    .map_err(|e| corrupt(&format!("log entry {}", k.value()), &e))?;
                mem.entries.insert(k.value(), entry);
            }
            let meta = txn.open_table(META).map_err(|e| db_err(&e))?;
            let get = |key: &str| -> Result<Option<Vec<u8>>, OpenError> {
                Ok(meta
                    .get(key)
                    .map_err(|e| db_err(&e))?
                    .map(|v| v.value().to_vec()))
            };
            if let Some(b) = get("vote")? {
                mem.vote = Some(molt_abi::codec::decode(&b).map_err(|e| corrupt("the vote", &e))?);
            }
            if let Some(b) = get("committed")? {
                mem.committed =
                    molt_abi::codec::decode(&b).map_err(|e| corrupt("the commit index", &e))?;
            }
            if let Some(b) = get("purged")? {
                mem.last_purged =
                    molt_abi::codec::decode(&b).map_err(|e| corrupt("the purge record", &e))?;
            }
            if let Some(b) = get("snapshot")? {
                snapshot = Some(
                    molt_abi::codec::decode::<StoredSnapshot>(&b)
                        .map_err(|e| corrupt("the snapshot", &e))?,
                );
            }
        }
        let (failed_tx, failed) = watch::channel(None);
        let failed_tx = Arc::new(failed_tx);
        let (tx, rx) = mpsc::channel();
        let db = Arc::new(db);
        let report = failed_tx.clone();
        let mem = Arc::new(Mutex::new(mem));
        let read = mem.clone();
        std::thread::Builder::new()
            .name("molt-coord-log".into())
            .spawn(move || writer(db, rx, report, shown, read))
            .map_err(|source| OpenError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        Ok(Storage {
            mem,
            writer: Some(tx),
            failed,
            _failed_tx: failed_tx,
            identity,
            snapshot: Arc::new(Mutex::new(snapshot)),
            lean: Arc::default(),
        })
    }

    /// The same log, vote, commit index and snapshot under the same
    /// identity, moved to a new file `file` of `dir` (written durably
    /// before this returns; a file there before is replaced), or with
    /// `None` to memory. How a replica changes its copy type without
    /// becoming another member: nothing it promised is forgotten. Stop
    /// its Raft first; close this storage after.
    pub async fn moved_to(&self, dir: Option<(&Path, &str)>) -> Result<Storage<C>, OpenError> {
        let mem = {
            let mem = self.mem();
            Mem {
                entries: mem.entries.clone(),
                last_purged: mem.last_purged,
                vote: mem.vote,
                committed: mem.committed,
            }
        };
        let snapshot = self
            .snapshot_whole()
            .await
            .map_err(|e| OpenError::Database {
                path: "the snapshot to move".into(),
                why: e.to_string(),
            })?;
        let Some((dir, file)) = dir else {
            let moved = Storage::in_memory(self.identity.clone());
            *moved.mem() = mem;
            *moved.snapshot.lock().expect("snapshot poisoned") = snapshot;
            return Ok(moved);
        };
        let path = dir.join(file);
        if let Err(source) = std::fs::remove_file(&path)
            && source.kind() != io::ErrorKind::NotFound
        {
            return Err(OpenError::Dir {
                path: path.display().to_string(),
                source,
            });
        }
        let moved = Storage::open_file(dir, file, &self.identity.node, self.identity.member)?;
        let failed = |why: String| OpenError::Database {
            path: path.display().to_string(),
            why,
        };
        let rows = mem
            .entries
            .iter()
            .map(|(index, entry)| (*index, molt_abi::codec::encode(entry)))
            .collect();
        let _ = moved.send(Write::Append(rows, None));
        if let Some(purged) = mem.last_purged {
            let _ = moved.send(Write::Purge(
                purged.index,
                molt_abi::codec::encode(&Some(purged)),
            ));
        }
        if let Some(snapshot) = &snapshot {
            let _ = moved.send(Write::Meta(
                "snapshot",
                molt_abi::codec::encode(snapshot),
                None,
            ));
        }
        *moved.mem() = mem;
        *moved.snapshot.lock().expect("snapshot poisoned") = snapshot;
        // The vote last, waited for: everything before is in its commit or
        // an earlier one.
        let vote = moved.mem().vote;
        let record = match vote {
            Some(vote) => ("vote", molt_abi::codec::encode(&vote)),
            None => ("moved", Vec::new()),
        };
        moved
            .durable(record.0, record.1)
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(moved)
    }

    /// Resolves when a write failed, with what failed.
    pub fn failure(&self) -> watch::Receiver<Option<String>> {
        self.failed.clone()
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, Mem<C>> {
        self.mem.lock().expect("coordination log poisoned")
    }

    fn send(&self, write: Write<C>) -> Result<(), StorageError<u64>> {
        if let Some(why) = self.failed.borrow().clone() {
            return Err(write_error(why));
        }
        match &self.writer {
            None => {
                write.complete(Ok(()));
                Ok(())
            }
            Some(tx) => tx
                .send(write)
                .map_err(|_| write_error("the log writer has stopped")),
        }
    }

    async fn durable(&self, key: &'static str, bytes: Vec<u8>) -> Result<(), StorageError<u64>> {
        let (tx, rx) = oneshot::channel();
        self.send(Write::Meta(key, bytes, Some(tx)))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(write_error(e)),
            Err(_) => Err(write_error("the log writer has stopped")),
        }
    }

    /// Write what is queued, close the database file and stop writing:
    /// later writes fail.
    pub async fn close(&self) {
        let Some(tx) = &self.writer else {
            return;
        };
        let (done, closed) = oneshot::channel();
        if tx.send(Write::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }

    /// The current snapshot, if one was taken or installed (its bytes
    /// left out once the storage is [lean](Storage::lean): read them with
    /// [`Storage::snapshot_whole`]).
    pub fn snapshot(&self) -> Option<StoredSnapshot> {
        self.snapshot.lock().expect("snapshot poisoned").clone()
    }

    /// Keep the snapshot's bytes in the file only, reading them from there
    /// when they are asked for (a replica whose state is larger than
    /// memory should not hold a copy of it there too). For a storage in
    /// memory this does nothing.
    pub fn lean(&self) {
        if self.writer.is_none() {
            return;
        }
        self.lean.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(s) = self.snapshot.lock().expect("snapshot poisoned").as_mut() {
            s.data = Vec::new();
        }
    }

    fn is_lean(&self) -> bool {
        self.lean.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The current snapshot with its bytes (read from the file if the
    /// storage is lean).
    pub async fn snapshot_whole(&self) -> Result<Option<StoredSnapshot>, StorageError<u64>> {
        if !self.is_lean() {
            return Ok(self.snapshot());
        }
        let (tx, rx) = oneshot::channel();
        self.send(Write::Read("snapshot", tx))
            .map_err(|e| snapshot_error(e.to_string()))?;
        let bytes = rx
            .await
            .map_err(|_| snapshot_error("the log writer has stopped"))?
            .map_err(snapshot_error)?;
        bytes
            .map(|b| molt_abi::codec::decode::<StoredSnapshot>(&b).map_err(snapshot_error))
            .transpose()
    }

    /// Keep `data`, the state as applied up to `last` with `membership`,
    /// as the current snapshot (durably), and hand it to openraft.
    pub async fn keep_snapshot(
        &self,
        data: Vec<u8>,
        last: Option<LogId<u64>>,
        membership: openraft::StoredMembership<u64, Member>,
    ) -> Result<openraft::Snapshot<C>, StorageError<u64>> {
        let id = match last {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, data.len()),
            None => format!("empty-{}", data.len()),
        };
        let meta = openraft::SnapshotMeta {
            last_log_id: last,
            last_membership: membership,
            snapshot_id: id,
        };
        self.save_snapshot(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        })
        .await?;
        Ok(openraft::Snapshot {
            meta,
            snapshot: Box::new(std::io::Cursor::new(data)),
        })
    }

    /// The current snapshot, as openraft takes it.
    pub async fn current_snapshot(
        &self,
    ) -> Result<Option<openraft::Snapshot<C>>, StorageError<u64>> {
        Ok(self.snapshot_whole().await?.map(|s| openraft::Snapshot {
            meta: s.meta,
            snapshot: Box::new(std::io::Cursor::new(s.data)),
        }))
    }

    /// Keep `snapshot` as the current one, durably.
    pub async fn save_snapshot(
        &self,
        mut snapshot: StoredSnapshot,
    ) -> Result<(), StorageError<u64>> {
        self.durable("snapshot", molt_abi::codec::encode(&snapshot))
            .await?;
        if self.is_lean() {
            snapshot.data = Vec::new();
        }
        *self.snapshot.lock().expect("snapshot poisoned") = Some(snapshot);
        Ok(())
    }
}

/// The writer thread: one commit per batch of waiting writes.
fn writer<C: LogTypes>(
    db: Arc<Database>,
    rx: mpsc::Receiver<Write<C>>,
    failed: Arc<watch::Sender<Option<String>>>,
    path: String,
    mem: Arc<Mutex<Mem<C>>>,
) {
    let mut closed = None;
    // The last log index on disc (written by this batch or an earlier one,
    // or covered by a purge).
    let mut appended: Option<u64> = {
        let mem = mem.lock().expect("log poisoned");
        let last = mem.entries.keys().next_back().copied();
        last.max(mem.last_purged.map(|l| l.index))
    };
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        if let Some(pos) = batch.iter().position(|w| matches!(w, Write::Close(_))) {
            // Writes after the close are dropped: their senders see the log
            // closed.
            if let Some(Write::Close(done)) = batch.split_off(pos).into_iter().next() {
                closed = Some(done);
            }
        }
        // The commit index goes with the batch if the entry it names is on
        // disc by then: never one ahead of the log that would carry it.
        for write in &batch {
            let last = match write {
                Write::Append(rows, _) => rows.last().map(|(index, _)| *index),
                Write::Purge(upto, _) => Some(*upto),
                _ => None,
            };
            appended = appended.max(last);
        }
        let committed = mem.lock().expect("log poisoned").committed;
        let committed = committed.filter(|c| Some(c.index) <= appended);
        let result = commit(&db, &batch, committed);
        if let Err(why) = &result {
            tracing::error!(log = %path, error = %why, "coordination log write failed; the coordination group stops");
            failed.send_replace(Some(format!("{path}: {why}")));
        }
        for write in batch {
            match write {
                Write::Read(key, done) if result.is_ok() => {
                    let _ = done.send(read_meta(&db, key));
                }
                write => write.complete(result.as_ref().map(|_| ()).map_err(io_err)),
            }
        }
        if closed.is_some() {
            break;
        }
        if result.is_err() {
            // Every later write fails: the log is not to be trusted.
            while let Ok(write) = rx.recv() {
                write.complete(Err(io_err("log failed")));
            }
            return;
        }
    }
    drop(db);
    if let Some(done) = closed {
        let _ = done.send(());
    }
}

/// Write `batch` in one transaction, with the commit index as it is now
/// (kept in memory by `save_committed` and written only along with other
/// writes: a commit index that lags on disc is recomputed by Raft, and a
/// transaction of its own per entry doubled the log's commits).
fn commit<C: LogTypes>(
    db: &Database,
    batch: &[Write<C>],
    committed: Option<LogId<u64>>,
) -> Result<(), String> {
    let mut txn = db.begin_write().map_err(|e| e.to_string())?;
    // Only appends and waited-for records need an fsync now; the rest
    // (truncations and purges) become durable with the next durable
    // commit, which is soon enough for Raft: a truncation is always
    // followed by an append.
    let durable = batch
        .iter()
        .any(|w| matches!(w, Write::Append(..) | Write::Meta(_, _, Some(_))));
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    })
    .map_err(|e| e.to_string())?;
    {
        let mut log = txn.open_table(LOG).map_err(|e| e.to_string())?;
        let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
        if committed.is_some() {
            let record = molt_abi::codec::encode(&committed);
            meta.insert("committed", record.as_slice())
                .map_err(|e| e.to_string())?;
        }
        for write in batch {
            match write {
                Write::Append(rows, _) => {
                    for (index, bytes) in rows {
                        log.insert(*index, bytes.as_slice())
                            .map_err(|e| e.to_string())?;
                    }
                }
                Write::Meta(key, bytes, _) => {
                    meta.insert(*key, bytes.as_slice())
                        .map_err(|e| e.to_string())?;
                }
                Write::Truncate(from) => {
                    log.retain_in(*from.., |_, _| false)
                        .map_err(|e| e.to_string())?;
                }
                Write::Purge(upto, record) => {
                    log.retain_in(..=*upto, |_, _| false)
                        .map_err(|e| e.to_string())?;
                    meta.insert("purged", record.as_slice())
                        .map_err(|e| e.to_string())?;
                }
                Write::Read(..) | Write::Close(_) => {}
            }
        }
    }
    txn.commit().map_err(|e| e.to_string())
}

/// Meta record `key`, as the file holds it.
fn read_meta(db: &Database, key: &str) -> Result<Option<Vec<u8>>, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let meta = txn.open_table(META).map_err(|e| e.to_string())?;
    Ok(meta
        .get(key)
        .map_err(|e| e.to_string())?
        .map(|v| v.value().to_vec()))
}

impl<C: LogTypes> RaftLogReader<C> for Storage<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError<u64>> {
        let mem = self.mem();
        Ok(mem.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl<C: LogTypes> RaftLogStorage<C> for Storage<C> {
    type LogReader = Storage<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<u64>> {
        let mem = self.mem();
        let last = mem
            .entries
            .values()
            .next_back()
            .map(|e| *e.get_log_id())
            .or(mem.last_purged);
        Ok(LogState {
            last_purged_log_id: mem.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.durable("vote", molt_abi::codec::encode(vote)).await?;
        self.mem().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(self.mem().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        // Written with the log's next transaction (see `commit`).
        self.mem().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.mem().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        {
            let mut mem = self.mem();
            for entry in entries {
                let index = entry.get_log_id().index;
                if self.writer.is_some() {
                    rows.push((index, molt_abi::codec::encode(&entry)));
                }
                mem.entries.insert(index, entry);
            }
        }
        self.send(Write::Append(rows, Some(callback)))
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.mem().entries.split_off(&log_id.index);
        self.send(Write::Truncate(log_id.index))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        {
            let mut mem = self.mem();
            let keep = mem.entries.split_off(&(log_id.index + 1));
            mem.entries = keep;
            mem.last_purged = Some(log_id);
        }
        self.send(Write::Purge(
            log_id.index,
            molt_abi::codec::encode(&Some(log_id)),
        ))
    }
}

/// Report a failed read of the snapshot.
pub fn snapshot_error(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::read_logs(&io_err(e)).into()
}
