//! One replicated table's Raft group on this node (openraft, the log kept
//! by the coordination group's [`Storage`]: in memory for `ram` copies, in
//! redb for `disc` copies): its entries are conditional batches, applied to
//! this node's replica of the table ([`ReplicaHandle`]) in log order, each
//! at its log index. Commits go to the group's leader (handed on from a
//! follower); a linearizable read asks the leader, which confirms it still
//! leads. Raft's messages travel on the table service ([`TableService`]).
//!
//! Invariant: a replica changes only here, on committed entries.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    ClientWriteError, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, Raft, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::local::ReplicaHandle;
use super::state::{Abort, Batch, Table};
use super::tx::{Intent, Pending, Prepared, TxId};
use crate::cluster::Member;
use crate::cluster::store::{Storage, StoredSnapshot, snapshot_error};
use crate::net::service::{CallError, RequestError, ServiceClient};

use super::replication::{TableReply, TableRequest, TableService, TableServiceError};

openraft::declare_raft_types!(
    /// A replicated table's group types for openraft.
    pub TableRaft:
        D = GroupCommand,
        R = GroupOutcome,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TableRaft>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        Responder = openraft::impls::OneshotResponder<TableRaft>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A table group's log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupCommand {
    /// Apply a batch, all of it or none.
    Commit(Batch),
    /// Replace the table's contents with a restored backup (the table
    /// encoded; every row gets this entry's index as its version).
    Restore(#[serde(with = "molt_abi::codec::bytes")] Vec<u8>),
    /// A transaction over several tables: check this table's batch and
    /// hold its keys until the transaction is resolved.
    Prepare {
        /// The transaction.
        tx: TxId,
        /// Its part here, and where its decision is kept.
        intent: Intent,
    },
    /// In the transaction's home table: decide it (the first decision
    /// stands; a later one learns it).
    Decide {
        /// The transaction.
        tx: TxId,
        /// Commit, or roll back.
        commit: bool,
        /// Every table of the transaction.
        tables: Vec<String>,
    },
    /// In another table of the transaction: apply its intent, or drop it.
    Resolve {
        /// The transaction.
        tx: TxId,
        /// As decided.
        commit: bool,
    },
    /// In the transaction's home table: these tables have resolved.
    Forget {
        /// The transaction.
        tx: TxId,
        /// The tables.
        tables: Vec<String>,
    },
    /// (Last: entries are known by their place.) Apply each batch in order, each all of it or none, as if each were
    /// an entry of its own at this index (commits that waited for the
    /// same entry, from several writers).
    Commits(Vec<Batch>),
}

/// What applying an entry did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupOutcome {
    /// The batch applied at this log index.
    Committed(u64),
    /// The batch changed nothing: why.
    Aborted(Abort),
    /// Nothing to report.
    Done,
    /// A restore was refused: why (nothing changed).
    Refused(String),
    /// The transaction's part here is prepared: its keys are held.
    Prepared,
    /// The transaction's decision, made at this log index.
    Decided {
        /// Commit, or roll back.
        commit: bool,
        /// The entry that decided.
        index: u64,
    },
    /// What each batch of a [`GroupCommand::Commits`] did, in order.
    Each(Vec<GroupOutcome>),
}

/// A snapshot's contents: the table, the transactions in flight, and
/// where in the log it stands.
#[derive(Serialize, Deserialize)]
struct Image {
    table: Table,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, Member>,
    pending: Pending,
}

/// A snapshot as kept before transactions over several tables.
#[derive(Deserialize)]
struct ImageBefore {
    table: Table,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, Member>,
}

impl Image {
    fn decode(data: &[u8]) -> Result<Image, molt_abi::codec::DecodeError> {
        molt_abi::codec::decode::<Image>(data).or_else(|e| {
            molt_abi::codec::decode::<ImageBefore>(data)
                .map(|i| Image {
                    table: i.table,
                    last_applied: i.last_applied,
                    membership: i.membership,
                    pending: Pending::default(),
                })
                .map_err(|_| e)
        })
    }
}

/// The applied position and membership, beside the replica.
#[derive(Clone, Default)]
struct Position {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, Member>,
}

/// The state machine of one table group on this node.
#[derive(Clone)]
pub(crate) struct GroupMachine {
    replica: ReplicaHandle,
    storage: Storage<TableRaft>,
    position: Arc<Mutex<Position>>,
    /// Transactions over several tables in flight here.
    pending: Arc<Mutex<Pending>>,
    /// The last log index applied.
    applied: Arc<watch::Sender<u64>>,
    /// Called when a snapshot replaced the replica (its subscribers missed
    /// changes).
    on_replaced: Arc<dyn Fn(u64) + Send + Sync>,
}

impl GroupMachine {
    /// A machine over `replica`, starting from `storage`'s snapshot.
    pub(crate) fn new(
        replica: ReplicaHandle,
        storage: Storage<TableRaft>,
        on_replaced: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<GroupMachine, String> {
        let mut position = Position::default();
        let mut pending = Pending::default();
        if let Some(snapshot) = storage.snapshot() {
            let image = Image::decode(&snapshot.data)
                .map_err(|e| format!("the stored snapshot does not decode: {e}"))?;
            replica.replace(image.table);
            position.last_applied = image.last_applied;
            position.membership = image.membership;
            pending = image.pending;
        }
        let index = position.last_applied.map_or(0, |l| l.index);
        Ok(GroupMachine {
            replica,
            storage,
            position: Arc::new(Mutex::new(position)),
            pending: Arc::new(Mutex::new(pending)),
            applied: Arc::new(watch::Sender::new(index)),
            on_replaced,
        })
    }

    /// The same machine, keeping its snapshots in `storage` from now on.
    pub(crate) fn with_storage(&self, storage: Storage<TableRaft>) -> GroupMachine {
        GroupMachine {
            storage,
            ..self.clone()
        }
    }

    /// The same machine, applying to `replica` from now on (its rows kept
    /// elsewhere: see `LocalTables::rekeep_replica`).
    pub(crate) fn with_replica(&self, replica: ReplicaHandle) -> GroupMachine {
        GroupMachine {
            replica,
            ..self.clone()
        }
    }

    /// Whether the replica's rows are kept in a file (`disc_only`).
    pub(crate) fn rows_on_disc(&self) -> bool {
        self.replica.on_disc()
    }

    /// The replica this machine applies to.
    pub(crate) fn replica(&self) -> &ReplicaHandle {
        &self.replica
    }

    /// The last log index applied, as it changes.
    pub(crate) fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// The intents of transactions over several tables kept here.
    pub(crate) fn intents(&self) -> Vec<(TxId, Intent)> {
        let pending = self.pending.lock().expect("pending poisoned");
        pending
            .intents()
            .map(|(tx, intent)| (tx.clone(), intent.clone()))
            .collect()
    }

    /// The decisions kept here (the home table): each transaction,
    /// whether it commits, and the tables that have not resolved.
    pub(crate) fn decisions(&self) -> Vec<(TxId, bool, Vec<String>)> {
        let pending = self.pending.lock().expect("pending poisoned");
        pending
            .decisions()
            .map(|(tx, commit, tables)| (tx.clone(), commit, tables))
            .collect()
    }

    /// How many intents and decisions are kept here.
    pub(crate) fn pending_len(&self) -> (usize, usize) {
        self.pending.lock().expect("pending poisoned").len()
    }

    /// Apply one transaction entry at `index`.
    fn apply_tx(&self, index: u64, command: GroupCommand) -> GroupOutcome {
        let here = self.replica.schema().name;
        let mut pending = self.pending.lock().expect("pending poisoned");
        match command {
            GroupCommand::Prepare { tx, intent } => {
                let max = self.replica.limits().prepared_max;
                match pending.prepare(&here, tx, intent, max, |b| self.replica.check(b)) {
                    Prepared::Kept => GroupOutcome::Prepared,
                    Prepared::Refused(abort) => GroupOutcome::Aborted(abort),
                }
            }
            GroupCommand::Decide { tx, commit, tables } => {
                let decided = pending.decide(&here, tx, commit, &tables, index);
                if let Some(batch) = decided.apply {
                    self.replica.apply_prepared(index, batch);
                }
                GroupOutcome::Decided {
                    commit: decided.commit,
                    index: decided.index,
                }
            }
            GroupCommand::Resolve { tx, commit } => match pending.resolve(&tx, commit) {
                Some(batch) => {
                    self.replica.apply_prepared(index, batch);
                    GroupOutcome::Committed(index)
                }
                None => GroupOutcome::Done,
            },
            GroupCommand::Forget { tx, tables } => {
                pending.forget(&tx, &tables);
                GroupOutcome::Done
            }
            GroupCommand::Commit(_) | GroupCommand::Commits(_) | GroupCommand::Restore(_) => {
                unreachable!("not a transaction entry")
            }
        }
    }

    fn image(&self) -> (Vec<u8>, Position) {
        let position = self.position.lock().expect("position poisoned").clone();
        let table: Table = molt_abi::codec::decode(&self.replica.encode())
            .expect("a table decodes as it was encoded");
        let image = Image {
            table,
            last_applied: position.last_applied,
            membership: position.membership.clone(),
            pending: self.pending.lock().expect("pending poisoned").clone(),
        };
        (molt_abi::codec::encode(&image), position)
    }
}

impl RaftSnapshotBuilder<TableRaft> for GroupMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TableRaft>, StorageError<u64>> {
        let (data, position) = self.image();
        self.storage
            .keep_snapshot(data, position.last_applied, position.membership)
            .await
    }
}

impl RaftStateMachine<TableRaft> for GroupMachine {
    type SnapshotBuilder = GroupMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, Member>), StorageError<u64>> {
        let position = self.position.lock().expect("position poisoned");
        Ok((position.last_applied, position.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<GroupOutcome>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TableRaft>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut done = Vec::new();
        let mut last = None;
        let mut restored = None;
        for entry in entries {
            let index = entry.log_id.index;
            let outcome = match entry.payload {
                EntryPayload::Blank => GroupOutcome::Done,
                EntryPayload::Normal(GroupCommand::Commit(batch)) => {
                    let held = self
                        .pending
                        .lock()
                        .expect("pending poisoned")
                        .held(&batch, None);
                    match held {
                        Some(abort) => GroupOutcome::Aborted(abort),
                        None => match self.replica.apply(index, batch) {
                            Ok(()) => GroupOutcome::Committed(index),
                            Err(abort) => GroupOutcome::Aborted(abort),
                        },
                    }
                }
                EntryPayload::Normal(GroupCommand::Commits(batches)) => {
                    let held: Vec<Option<Abort>> = {
                        let pending = self.pending.lock().expect("pending poisoned");
                        batches.iter().map(|b| pending.held(b, None)).collect()
                    };
                    let mut applied = self
                        .replica
                        .apply_each(
                            index,
                            batches
                                .into_iter()
                                .zip(&held)
                                .filter(|(_, h)| h.is_none())
                                .map(|(b, _)| b)
                                .collect(),
                        )
                        .into_iter();
                    GroupOutcome::Each(
                        held.into_iter()
                            .map(|h| match h {
                                Some(abort) => GroupOutcome::Aborted(abort),
                                None => match applied.next() {
                                    Some(Ok(())) => GroupOutcome::Committed(index),
                                    Some(Err(abort)) => GroupOutcome::Aborted(abort),
                                    None => unreachable!("one outcome per batch applied"),
                                },
                            })
                            .collect(),
                    )
                }
                EntryPayload::Normal(GroupCommand::Restore(bytes)) => {
                    match molt_abi::codec::decode::<Table>(&bytes) {
                        Ok(table) if table.schema() == &self.replica.schema() => {
                            self.replica.replace(table.restamped(index));
                            restored = Some(index);
                            GroupOutcome::Committed(index)
                        }
                        Ok(_) => GroupOutcome::Refused(
                            "the backup's table has another kind or other indexes".into(),
                        ),
                        Err(e) => GroupOutcome::Refused(format!("the backup does not decode: {e}")),
                    }
                }
                EntryPayload::Normal(command) => self.apply_tx(index, command),
                EntryPayload::Membership(m) => {
                    let mut position = self.position.lock().expect("position poisoned");
                    position.membership = StoredMembership::new(Some(entry.log_id), m);
                    GroupOutcome::Done
                }
            };
            self.position
                .lock()
                .expect("position poisoned")
                .last_applied = Some(entry.log_id);
            last = Some(index);
            done.push(outcome);
        }
        // A disc_only replica's rows of this batch are in its file before
        // the next batch: the rows waiting in memory stay bounded.
        self.replica.flushed().await;
        if let Some(index) = last {
            self.applied.send_replace(index);
        }
        if let Some(index) = restored {
            // Its subscribers missed what the restore replaced.
            (self.on_replaced)(index);
        }
        Ok(done)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let image = Image::decode(&data).map_err(snapshot_error)?;
        if image.table.schema() != &self.replica.schema() {
            return Err(snapshot_error(
                "the snapshot is of a table with another definition",
            ));
        }
        self.storage
            .save_snapshot(StoredSnapshot {
                meta: meta.clone(),
                data,
            })
            .await?;
        self.replica.replace(image.table);
        self.replica.flushed().await;
        *self.pending.lock().expect("pending poisoned") = image.pending;
        {
            let mut position = self.position.lock().expect("position poisoned");
            position.last_applied = meta.last_log_id;
            position.membership = meta.last_membership.clone();
        }
        let index = meta.last_log_id.map_or(0, |l| l.index);
        self.applied.send_replace(index);
        (self.on_replaced)(index);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TableRaft>>, StorageError<u64>> {
        self.storage.current_snapshot().await
    }
}

/// openraft's way to reach a table group's other members: through the
/// table service, naming the group.
pub(crate) struct GroupNetwork {
    pub(crate) client: ServiceClient<TableService>,
    pub(crate) dist: crate::net::WeakDistribution,
    pub(crate) table: String,
    pub(crate) id: u64,
}

impl RaftNetworkFactory<TableRaft> for GroupNetwork {
    type Network = GroupLink;

    async fn new_client(&mut self, target: u64, node: &Member) -> GroupLink {
        if let (Some(dist), Ok(addr)) = (self.dist.upgrade(), node.addr.parse()) {
            dist.learn_address(&node.name, addr);
        }
        let frame = self
            .dist
            .upgrade()
            .map_or(16 << 20, |d| d.config().frame_bytes_max as usize);
        GroupLink {
            client: self.client.clone(),
            target,
            name: node.name.clone(),
            table: self.table.clone(),
            id: self.id,
            budget: frame / 2,
            budget_max: frame / 2,
            unanswered: false,
        }
    }
}

/// A connection to one member of a table group.
pub(crate) struct GroupLink {
    client: ServiceClient<TableService>,
    target: u64,
    name: String,
    table: String,
    id: u64,
    /// About the most bytes of entries the next message carries (at least
    /// one entry, whatever its size): halved after a message that was not
    /// answered in time (openraft gives each message one heartbeat
    /// interval; a replica far behind, on a loaded machine, would
    /// otherwise be sent the same too-big message for ever), doubled
    /// after one that was, up to `budget_max`.
    budget: usize,
    /// Half the connection's `frame_bytes_max`: openraft sends up to
    /// `max_payload_entries` at once, each batch up to `batch_bytes_max`.
    budget_max: usize,
    /// A message carrying entries was sent and its answer not seen: its
    /// call was dropped when openraft's timeout ran out.
    unanswered: bool,
}

/// The least a [`GroupLink`]'s budget is halved to.
const BUDGET_MIN: usize = 64 << 10;

/// About the bytes an entry takes on the wire.
fn entry_bytes(entry: &Entry<TableRaft>) -> usize {
    let batch = match &entry.payload {
        EntryPayload::Normal(GroupCommand::Commit(batch)) => batch,
        EntryPayload::Normal(GroupCommand::Commits(batches)) => {
            return batches.iter().map(batch_bytes).sum::<usize>() + 64;
        }
        EntryPayload::Normal(GroupCommand::Prepare { intent, .. }) => &intent.batch,
        EntryPayload::Normal(GroupCommand::Restore(bytes)) => return 64 + bytes.len(),
        _ => return 64,
    };
    64 + batch_bytes(batch)
}

/// About the bytes a batch takes on the wire.
fn batch_bytes(batch: &Batch) -> usize {
    use super::state::{Condition, Op};
    let conditions: usize = batch
        .conditions
        .iter()
        .map(|c| match c {
            Condition::Absent { key } | Condition::Version { key, .. } => key.len() + 16,
            Condition::Fence { lock, .. } => lock.len() + 16,
        })
        .sum();
    let ops: usize = batch
        .ops
        .iter()
        .map(|op| match op {
            Op::Put {
                key,
                value,
                index_values,
            } => {
                key.len()
                    + value.len()
                    + index_values.iter().map(|v| v.len() + 8).sum::<usize>()
                    + 16
            }
            Op::Delete { key } => key.len() + 8,
            Op::DeleteValue { key, value } => key.len() + value.len() + 16,
            Op::Add { key, .. } => key.len() + 16,
        })
        .sum();
    conditions + ops
}

impl GroupLink {
    async fn call<E: std::error::Error>(
        &self,
        request: TableRequest,
        ttl: Duration,
    ) -> Result<TableReply, RPCError<u64, Member, E>> {
        self.client
            .call_within(&self.name, ttl, &request)
            .await
            .map_err(crate::cluster::network::rpc_error)
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<u64, Member, E> {
        RPCError::Network(NetworkError::new(&TableServiceError::Raft(format!(
            "{} answered a Raft request of table {} with the wrong reply",
            self.name, self.table
        ))))
    }
}

impl RaftNetwork<TableRaft> for GroupLink {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TableRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        let carries = !rpc.entries.is_empty();
        if carries && self.unanswered {
            self.budget = (self.budget / 2).max(BUDGET_MIN);
        }
        // Entries past the budget wait for the next message: what this one
        // carries is reported as a partial success.
        let mut partial = None;
        let mut total = 0;
        for (i, entry) in rpc.entries.iter().enumerate() {
            total += entry_bytes(entry);
            if i > 0 && total > self.budget {
                rpc.entries.truncate(i);
                partial = rpc.entries.last().map(|e| e.log_id);
                break;
            }
        }
        let request = TableRequest::Append {
            table: self.table.clone(),
            id: self.id,
            to: self.target,
            rpc,
        };
        self.unanswered = carries;
        let reply = self.call(request, option.hard_ttl()).await;
        self.unanswered = false;
        if carries && reply.is_ok() {
            self.budget = (self.budget * 2).min(self.budget_max);
        }
        match reply? {
            TableReply::Append(Ok(AppendEntriesResponse::Success)) if partial.is_some() => {
                Ok(AppendEntriesResponse::PartialSuccess(partial))
            }
            TableReply::Append(Ok(r)) => Ok(r),
            TableReply::Append(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TableRaft>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, Member, RaftError<u64, InstallSnapshotError>>,
    > {
        let request = TableRequest::Snapshot {
            table: self.table.clone(),
            id: self.id,
            to: self.target,
            rpc,
        };
        match self.call(request, option.hard_ttl()).await? {
            TableReply::Snapshot(Ok(r)) => Ok(r),
            TableReply::Snapshot(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        let request = TableRequest::Vote {
            table: self.table.clone(),
            id: self.id,
            to: self.target,
            rpc,
        };
        match self.call(request, option.hard_ttl()).await? {
            TableReply::Vote(Ok(r)) => Ok(r),
            TableReply::Vote(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }
}

/// Why a group could not commit or confirm a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum GroupError {
    /// No quorum within the deadline; a commit may still apply.
    NoQuorum,
    /// The group stopped, or refused: why.
    Failed(String),
}

/// One table group on this node.
pub(crate) struct Group {
    /// The table.
    pub(crate) table: String,
    /// Its id (the coordination index that created it).
    pub(crate) id: u64,
    /// This node's Raft id in the group.
    pub(crate) me: u64,
    /// Whether this node keeps the group's log on disc.
    pub(crate) disc: bool,
    pub(crate) raft: Raft<TableRaft>,
    pub(crate) storage: Storage<TableRaft>,
    /// Its state machine (kept to run the group again over another
    /// storage).
    pub(crate) machine: GroupMachine,
    pub(crate) client: ServiceClient<TableService>,
    applied: watch::Receiver<u64>,
    /// When this node last heard from the group's leader (ms since
    /// `born`), as a follower.
    heard: AtomicU64,
    born: Instant,
    /// Longest a follower goes without hearing from its leader before its
    /// reads are marked stale.
    pub(crate) stale_after: Duration,
    /// Membership changes, one at a time.
    pub(crate) membership: tokio::sync::Mutex<()>,
    /// This replica is founding the group or asking to join it.
    pub(crate) joining: std::sync::atomic::AtomicBool,
    /// When the table's definition stopped naming this node (the replica
    /// runs on until the group no longer counts it, so that the group
    /// never needs a replica that is gone to change its membership).
    pub(crate) leaving: std::sync::Mutex<Option<Instant>>,
    /// Commits waiting for this node, as the group's leader, to put them
    /// into its log (its combiner starts with the first).
    combiner: std::sync::OnceLock<mpsc::UnboundedSender<Waiting>>,
}

/// Most commits one entry of a group's log carries (from writers that
/// waited for the same entry).
pub(crate) const COMBINED_MAX: usize = 64;

/// Most entries of combined commits a leader has in its log unanswered
/// at once: commits arriving meanwhile wait, and go in together.
const COMBINED_IN_FLIGHT: usize = 2;

/// A commit waiting for the leader's combiner.
struct Waiting {
    batch: Batch,
    /// When its caller stops waiting.
    deadline: tokio::time::Instant,
    answer: tokio::sync::oneshot::Sender<Written>,
}

/// What became of a commit given to the combiner.
enum Written {
    /// Applied: what it did.
    Done(GroupOutcome),
    /// This node no longer leads: not taken.
    NotLeader,
    /// The group refused or stopped: why.
    Failed(String),
    /// Not answered by the last caller's deadline (the entry may still
    /// apply).
    Unanswered,
}

/// Put the commits `waiting` into `raft`'s log as one entry (a single
/// commit as an entry of its own) and answer each.
async fn write_combined(raft: Raft<TableRaft>, waiting: Vec<Waiting>) {
    // Its slot is free again once no caller waits for it.
    let deadline = waiting
        .iter()
        .map(|w| w.deadline)
        .max()
        .expect("one at least");
    let (command, answers): (GroupCommand, Vec<_>) = if waiting.len() == 1 {
        let Waiting { batch, answer, .. } = waiting.into_iter().next().expect("one");
        (GroupCommand::Commit(batch), vec![answer])
    } else {
        let (batches, answers) = waiting.into_iter().map(|w| (w.batch, w.answer)).unzip();
        (GroupCommand::Commits(batches), answers)
    };
    let n = answers.len();
    let written = tokio::time::timeout_at(deadline, raft.client_write(command)).await;
    let mut outcomes: Vec<Written> = match written {
        Err(_) => (0..n).map(|_| Written::Unanswered).collect(),
        Ok(Ok(response)) => match response.data {
            GroupOutcome::Each(each) if each.len() == n => {
                each.into_iter().map(Written::Done).collect()
            }
            outcome if n == 1 => vec![Written::Done(outcome)],
            other => (0..n)
                .map(|_| Written::Failed(format!("a combined entry applied as {other:?}")))
                .collect(),
        },
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
            (0..n).map(|_| Written::NotLeader).collect()
        }
        Ok(Err(e)) => (0..n).map(|_| Written::Failed(e.to_string())).collect(),
    };
    for answer in answers.into_iter().rev() {
        let _ = answer.send(outcomes.pop().expect("one outcome per commit"));
    }
}

/// The leader's combiner: takes the commits waiting, up to
/// [`COMBINED_MAX`] and `bytes_max` bytes, into one entry, with at most
/// [`COMBINED_IN_FLIGHT`] entries unanswered; ends with its group.
async fn combine(
    raft: Raft<TableRaft>,
    mut waiting: mpsc::UnboundedReceiver<Waiting>,
    bytes_max: usize,
) {
    let mut in_flight = tokio::task::JoinSet::new();
    let mut carried: Option<Waiting> = None;
    loop {
        let first = if in_flight.len() >= COMBINED_IN_FLIGHT {
            let _ = in_flight.join_next().await;
            continue;
        } else if let Some(w) = carried.take() {
            w
        } else {
            tokio::select! {
                w = waiting.recv() => match w {
                    Some(w) => w,
                    None => break,
                },
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => continue,
            }
        };
        let mut bytes = batch_bytes(&first.batch);
        let mut taken = vec![first];
        while taken.len() < COMBINED_MAX {
            let Ok(next) = waiting.try_recv() else {
                break;
            };
            // A caller that gave up is not written for.
            if next.answer.is_closed() {
                continue;
            }
            let more = batch_bytes(&next.batch);
            if bytes + more > bytes_max {
                carried = Some(next);
                break;
            }
            bytes += more;
            taken.push(next);
        }
        taken.retain(|w| !w.answer.is_closed());
        if !taken.is_empty() {
            in_flight.spawn(write_combined(raft.clone(), taken));
        }
    }
    while in_flight.join_next().await.is_some() {}
}

impl Group {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        table: String,
        id: u64,
        disc: bool,
        raft: Raft<TableRaft>,
        storage: Storage<TableRaft>,
        machine: GroupMachine,
        client: ServiceClient<TableService>,
        stale_after: Duration,
    ) -> Group {
        Group {
            table,
            id,
            me: storage.identity.member,
            disc,
            raft,
            storage,
            applied: machine.applied(),
            machine,
            client,
            heard: AtomicU64::new(0),
            born: Instant::now(),
            stale_after,
            membership: tokio::sync::Mutex::new(()),
            joining: std::sync::atomic::AtomicBool::new(false),
            leaving: std::sync::Mutex::new(None),
            combiner: std::sync::OnceLock::new(),
        }
    }

    /// Give `batch` to this node's combiner (it leads the group) to be
    /// written with the commits waiting beside it.
    fn write(
        &self,
        batch: Batch,
        deadline: tokio::time::Instant,
    ) -> tokio::sync::oneshot::Receiver<Written> {
        let combiner = self.combiner.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let bytes_max = self.machine.replica().limits().batch_bytes_max;
            tokio::spawn(combine(self.raft.clone(), rx, bytes_max));
            tx
        });
        let (answer, written) = tokio::sync::oneshot::channel();
        // The combiner ends only with its group.
        let _ = combiner.send(Waiting {
            batch,
            deadline,
            answer,
        });
        written
    }

    /// Whether a replica the definition no longer names must run on: the
    /// group still counts it and still speaks to it (it leads, or its
    /// leader was heard lately: a removed follower is no longer sent
    /// anything, so it never learns of its own removal), for at most
    /// `within` since it was first asked. A leader runs on even without a
    /// recent quorum: while it adds the replica that stays, the new voter
    /// has not answered yet, and ending it then would leave that voter in
    /// a membership it cannot reach a quorum of.
    pub(crate) fn still_needed(&self, within: Duration) -> bool {
        let mut leaving = self.leaving.lock().expect("leaving poisoned");
        let since = *leaving.get_or_insert_with(Instant::now);
        let leads = self.raft.metrics().borrow().current_leader == Some(self.me);
        self.is_member() && (leads || !self.stale()) && since.elapsed() < within
    }

    /// Whether this replica is a voter and no voter of its group is on a
    /// node `wanted` names: the group's only copy of the data among the
    /// replicas that stay (the ones that stay have not joined yet).
    pub(crate) fn holds_the_only_copy(&self, wanted: impl Fn(&str) -> bool) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        voters.contains(&self.me)
            && !membership
                .nodes()
                .any(|(id, m)| voters.contains(id) && wanted(&m.name))
    }

    /// Whether the definition stopped naming this replica at some point
    /// ([`Group::still_needed`] was asked).
    pub(crate) fn has_left(&self) -> bool {
        self.leaving.lock().expect("leaving poisoned").is_some()
    }

    /// A message from the leader arrived.
    pub(crate) fn heard(&self) {
        self.heard
            .store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// The leader's id and node, if known.
    pub(crate) fn leader(&self) -> Option<(u64, Member)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let id = metrics.current_leader?;
        let member = metrics
            .membership_config
            .membership()
            .get_node(&id)?
            .clone();
        Some((id, member))
    }

    /// The leader, waiting for one to be known up to `deadline` (a group
    /// just started, or electing).
    pub(crate) async fn leader_by(&self, deadline: tokio::time::Instant) -> Option<(u64, Member)> {
        if let Some(leader) = self.leader() {
            return Some(leader);
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let _ = self
            .raft
            .wait(Some(left))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await;
        self.leader()
    }

    /// Whether this node's replica may lag the group's committed state by
    /// more than the time an entry takes to arrive: it leads without a
    /// recent quorum, or follows without hearing from a leader lately.
    pub(crate) fn stale(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let limit = self.stale_after.as_millis() as u64;
        if metrics.current_leader == Some(self.me) {
            return metrics.millis_since_quorum_ack.is_none_or(|ms| ms > limit);
        }
        if metrics.current_leader.is_none() {
            return true;
        }
        let now = self.born.elapsed().as_millis() as u64;
        now.saturating_sub(self.heard.load(Ordering::Relaxed)) > limit
    }

    /// Whether this node is a member (voter or learner) of the group.
    pub(crate) fn is_member(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&self.me)
            .is_some()
    }

    /// Wait until this replica has applied `index` (or `within` passed).
    pub(crate) async fn caught_up(&self, index: u64, within: Duration) {
        let mut applied = self.applied.clone();
        let _ = tokio::time::timeout(within, applied.wait_for(|a| *a >= index)).await;
    }

    /// Commit `command` through the group's leader, by `deadline`.
    pub(crate) async fn commit(
        &self,
        command: GroupCommand,
        deadline: tokio::time::Instant,
    ) -> Result<GroupOutcome, GroupError> {
        let mut pause = Duration::from_millis(5);
        loop {
            match self.leader() {
                Some((id, _))
                    if id == self.me
                        && let GroupCommand::Commit(batch) = &command =>
                {
                    match tokio::time::timeout_at(deadline, self.write(batch.clone(), deadline))
                        .await
                    {
                        Ok(Ok(Written::Done(outcome))) => return Ok(outcome),
                        Ok(Ok(Written::NotLeader)) => {}
                        Ok(Ok(Written::Failed(why))) => return Err(GroupError::Failed(why)),
                        Ok(Ok(Written::Unanswered)) => return Err(GroupError::NoQuorum),
                        Ok(Err(_)) => return Err(GroupError::Failed("the group stopped".into())),
                        Err(_) => return Err(GroupError::NoQuorum),
                    }
                }
                Some((id, _)) if id == self.me => {
                    let write = self.raft.client_write(command.clone());
                    match tokio::time::timeout_at(deadline, write).await {
                        Ok(Ok(response)) => return Ok(response.data),
                        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {}
                        Ok(Err(e)) => return Err(GroupError::Failed(e.to_string())),
                        Err(_) => return Err(GroupError::NoQuorum),
                    }
                }
                Some((_, leader)) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let request = TableRequest::Commit {
                        table: self.table.clone(),
                        id: self.id,
                        command: command.clone(),
                    };
                    match self.client.call_within(&leader.name, left, &request).await {
                        Ok(TableReply::Committed(outcome)) => return Ok(outcome),
                        Ok(_) => {
                            return Err(GroupError::Failed(format!(
                                "{} answered a commit with the wrong reply",
                                leader.name
                            )));
                        }
                        // Not taken: try the leader it names, or again (a
                        // node that no longer runs the group, or not yet,
                        // was named by a leader view that is out of date).
                        Err(CallError::Remote(TableServiceError::NotLeader))
                        | Err(CallError::Remote(TableServiceError::NoGroup(_)))
                        | Err(CallError::Remote(TableServiceError::NotRunning))
                        | Err(CallError::Request(RequestError::Connect(_))) => {}
                        Err(CallError::Remote(TableServiceError::NoQuorum)) => {
                            return Err(GroupError::NoQuorum);
                        }
                        Err(CallError::Remote(e)) => return Err(GroupError::Failed(e.to_string())),
                        // Perhaps taken: the caller cannot know.
                        Err(_) => return Err(GroupError::NoQuorum),
                    }
                }
                None => {}
            }
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(GroupError::NoQuorum);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Confirm that this node leads the group (a quorum still follows it),
    /// so that its replica holds every committed write.
    pub(crate) async fn confirm_lead(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(), GroupError> {
        match tokio::time::timeout_at(deadline, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(_))) => Err(GroupError::Failed("not the leader".into())),
            Ok(Err(e)) => Err(GroupError::Failed(e.to_string())),
            Err(_) => Err(GroupError::NoQuorum),
        }
    }

    /// Stop the group on this node.
    pub(crate) async fn stop(&self) {
        let _ = self.raft.shutdown().await;
        self.storage.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::state::{Op, Schema, TableKind};

    fn table() -> Table {
        let mut table = Table::new(Schema {
            name: "t".into(),
            kind: TableKind::Set,
            indexes: Vec::new(),
        });
        let batch = Batch {
            conditions: Vec::new(),
            ops: vec![Op::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                index_values: Vec::new(),
            }],
        };
        table.commit(3, batch, false);
        table
    }

    #[test]
    fn a_snapshot_from_before_transactions_over_several_tables_still_loads() {
        #[derive(Serialize)]
        struct Before {
            table: Table,
            last_applied: Option<LogId<u64>>,
            membership: StoredMembership<u64, Member>,
        }
        let before = Before {
            table: table(),
            last_applied: None,
            membership: StoredMembership::default(),
        };
        let image = Image::decode(&molt_abi::codec::encode(&before)).expect("decodes");
        assert_eq!(image.table, table());
        assert_eq!(image.pending, Pending::default());
        // And one written now keeps what is in flight.
        let mut pending = Pending::default();
        pending.decide(
            "t",
            TxId {
                node: "a".into(),
                n: 1,
            },
            false,
            &["t".into(), "u".into()],
            4,
        );
        let now = Image {
            table: table(),
            last_applied: None,
            membership: StoredMembership::default(),
            pending: pending.clone(),
        };
        let image = Image::decode(&molt_abi::codec::encode(&now)).expect("decodes");
        assert_eq!(image.pending, pending);
        assert!(Image::decode(b"garbage").is_err());
    }
}
