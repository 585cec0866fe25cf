//! Replicated tables on this node: their definitions live in the
//! coordination group; each table runs its own Raft group ([`Group`]) on
//! the nodes that keep a replica of it. This module keeps this node's
//! groups in line with the definitions (start a group for each table this
//! node replicates, stop the others), founds or joins each group, keeps
//! its membership to the table's replicas while this node leads it, and
//! answers the table service (service id 5): Raft's messages, joins,
//! commits handed to the leader, and reads asked of a replica or the
//! leader.
//!
//! How a group starts: the first replica to start proposes itself as the
//! table's founder through the coordination group (recorded once); the
//! founder initialises a group of one, and every other replica asks the
//! group's leader to let it in (as a learner, caught up by log or
//! snapshot, then a voter). A replica that comes back with a new Raft id
//! (a `ram` copy after a restart) replaces its node's old id the same way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use molt_abi::table::{Consistency, Copy, Error, Reply, Request, Spec};
use openraft::Raft;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use super::ap::{ApReplica, Keyed};
use super::group::{
    Group, GroupCommand, GroupError, GroupMachine, GroupNetwork, GroupOutcome, TableRaft,
};

mod conflict_free;
mod fragmented;
mod several;
use super::state::Schema;
use crate::cluster::store::{Identity, Storage};
use crate::cluster::{Command, Coordination, GlobalError, Member, TableEntry, TableOutcome};
use crate::net::service::{PeerId, Service, ServiceClient, ServiceId};
use crate::net::{Distribution, WeakDistribution};
use crate::runtime::{Node, WeakNode};

/// What a node asks another's table service.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum TableRequest {
    /// Raft: replicate entries of a table's group.
    Append {
        /// The table.
        table: String,
        /// Its id.
        id: u64,
        /// The member it is for (a node's replica that restarted as a
        /// new member must not take its predecessor's messages).
        to: u64,
        /// openraft's request.
        rpc: AppendEntriesRequest<TableRaft>,
    },
    /// Raft: ask for a vote.
    Vote {
        /// The table.
        table: String,
        /// Its id.
        id: u64,
        /// The member it is for.
        to: u64,
        /// openraft's request.
        rpc: VoteRequest<u64>,
    },
    /// Raft: a snapshot chunk.
    Snapshot {
        /// The table.
        table: String,
        /// Its id.
        id: u64,
        /// The member it is for.
        to: u64,
        /// openraft's request.
        rpc: InstallSnapshotRequest<TableRaft>,
    },
    /// To the group's leader: let this replica in.
    Join {
        /// The table.
        table: String,
        /// Its id.
        id: u64,
        /// The replica's Raft id.
        member: u64,
        /// Its node.
        node: Member,
    },
    /// To the group's leader: commit this entry (a batch, a restore).
    Commit {
        /// The table.
        table: String,
        /// Its id.
        id: u64,
        /// The entry.
        command: GroupCommand,
    },
    /// To a replica (or the leader, for a linearizable read): answer this
    /// read.
    Read(Request),
    /// To a replica's node: whether it is a member of the table's group.
    Probe {
        /// The table.
        table: String,
        /// Its id.
        id: u64,
    },
    /// A conflict-free table: entries just written on another replica.
    ApPush {
        /// The table.
        table: String,
        /// Its id.
        id: u64,
        /// The keys and their states.
        entries: Vec<Keyed>,
    },
    /// A conflict-free table: anti-entropy's first step, the sender's
    /// digest total.
    ApSync {
        /// The table.
        table: String,
        /// Its id.
        id: u64,
        /// The sender's digest total.
        total: u64,
    },
    /// A conflict-free table: the sender's keys and entry hashes of the
    /// buckets that differ; the answer is what differs.
    ApKeys {
        /// The table.
        table: String,
        /// Its id.
        id: u64,
        /// Whole buckets.
        buckets: Vec<u32>,
        /// The sender's keys in them, with their entries' hashes.
        hashes: Vec<(Vec<u8>, u64)>,
    },
    /// A conflict-free table, from a node without a replica: write this
    /// batch here.
    ApWrite {
        /// The table.
        table: String,
        /// The batch.
        batch: molt_abi::table::Batch,
    },
    /// To a replica, from a node without one: answer this read once the
    /// replica has applied `index` (the asker's last commit to the
    /// table: it reads its own writes).
    ReadAfter {
        /// The read.
        request: Request,
        /// The log index to wait for (at most the quorum timeout).
        index: u64,
    },
}

/// The answer to a [`TableRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum TableReply {
    /// To `Append`.
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    /// To `Vote`.
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    /// To `Snapshot`.
    Snapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// To `Join`: the replica is a member.
    Joined,
    /// To `Commit`.
    Committed(GroupOutcome),
    /// To `Read`.
    Read(Reply),
    /// To `Probe`.
    Probed {
        /// This node's replica is a member of the group.
        member: bool,
        /// Its Raft id, if this node runs the table's group.
        id: Option<u64>,
    },
    /// To `ApPush`: merged.
    ApMerged,
    /// To `ApSync`: the digests are equal.
    ApSynced,
    /// To `ApSync`: they differ; this replica's buckets.
    ApBuckets(Vec<u64>),
    /// To `ApKeys`: this replica's entries the sender lacks or holds
    /// otherwise, and the keys it wants the sender's entries of.
    ApDiff {
        /// This replica's entries.
        entries: Vec<Keyed>,
        /// The keys whose entries it wants.
        wanted: Vec<Vec<u8>>,
    },
    /// To `ApWrite`.
    Written(Reply),
}

/// Why the table service refused a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TableServiceError {
    /// This node runs no group for that table.
    #[error("no group for table {0} here")]
    NoGroup(String),
    /// This node does not lead the table's group.
    #[error("not the table group's leader")]
    NotLeader,
    /// No quorum answered in time.
    #[error("no quorum")]
    NoQuorum,
    /// Replicated tables do not run on this node.
    #[error("replicated tables are not running on this node")]
    NotRunning,
    /// The group refused: why.
    #[error("{0}")]
    Raft(String),
}

/// The table service of one node.
#[derive(Default)]
pub struct TableService {
    inner: OnceLock<Weak<Replication>>,
}

impl Service for TableService {
    const ID: ServiceId = 5;
    const NAME: &'static str = "tables";
    type Request = TableRequest;
    type Reply = TableReply;
    type Error = TableServiceError;
    type Notice = crate::net::service::Never;

    async fn request(
        self: Arc<Self>,
        _peer: PeerId,
        request: TableRequest,
    ) -> Result<TableReply, TableServiceError> {
        let replication = self
            .inner
            .get()
            .and_then(Weak::upgrade)
            .ok_or(TableServiceError::NotRunning)?;
        replication.serve(request).await
    }
}

/// A future the table service hands back.
pub(crate) type Pending<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// What the node's [`super::Tables`] asks of replication.
pub(crate) trait Replicated: Send + Sync {
    /// Whether `request` is for replication to answer: it creates a table
    /// with replicas elsewhere, or reaches a replicated table in a way the
    /// local replica cannot answer alone.
    fn takes(&self, request: &Request) -> bool;
    /// Answer such a request.
    fn answer(self: Arc<Self>, request: Request) -> Pending<Reply>;
    /// Resolves once this node knows every table defined before it was
    /// called (its coordination replica caught up with a read index), or
    /// that could not be learnt within the quorum timeout: a table just
    /// created through another node is not answered `NoTable` here.
    fn caught_up(&self) -> Pending<()>;
    /// Whether this node's replica of `table` may be stale.
    fn stale(&self, table: &str) -> bool;
    /// The replicated tables' names.
    fn names(&self) -> Vec<String>;
    /// A replicated table's definition.
    fn spec(&self, table: &str) -> Option<Spec>;
    /// This node's replica of `table` and its group, if it keeps one.
    fn status(&self, table: &str) -> Option<ReplicaStatus>;
    /// Why this node's replica of `table` cannot start, while it cannot.
    fn failure(&self, table: &str) -> Option<String>;
    /// Put `table` (a restored backup, renamed as asked) in place of the
    /// replicated table of its name, through its group: the table's log
    /// index of the restore, or why not.
    fn restore(self: Arc<Self>, table: super::state::Table) -> Pending<Result<u64, Error>>;
}

/// Replication on one node.
pub(crate) struct Replication {
    here: String,
    addr: String,
    node: WeakNode,
    dist: WeakDistribution,
    coord: crate::cluster::WeakCoordination,
    client: ServiceClient<TableService>,
    groups: Mutex<HashMap<String, Arc<Group>>>,
    /// Per table this node keeps no replica of: the log index of its last
    /// commit there, so that its reads through a replica see it.
    /// (By table name: the table's id and the index.)
    written: Mutex<HashMap<String, (u64, u64)>>,
    /// This node's replicas of conflict-free tables.
    aps: Mutex<HashMap<String, Arc<ApReplica>>>,
    /// How often a conflict-free replica compares digests with each other
    /// replica.
    sync_every: Duration,
    /// How long a deleted key's tombstone is kept (`ap_tombstone_keep`).
    tombstone_keep: Duration,
    /// Where `disc` copies keep their group's log.
    raft_dir: PathBuf,
    raft_config: Arc<openraft::Config>,
    quorum_timeout: Duration,
    stale_after: Duration,
    /// How long a transaction over several tables may keep keys before
    /// the leader of a table it holds rolls it back (or finishes it).
    tx_resolve_after: Duration,
    /// The cluster's limit on replicated tables.
    tables_max: usize,
    /// Replicas of this node that cannot start, and why (each logged once
    /// per reason; tried again at every reconciliation).
    failures: Mutex<HashMap<String, String>>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// The table a read names, and how fresh it must be (a description is a
/// dirty read of the table's size and index).
fn read_of(request: &Request) -> Option<(&str, Consistency)> {
    match request {
        Request::Info { table } => Some((table, Consistency::Dirty)),
        Request::Get {
            table, consistency, ..
        }
        | Request::IndexGet {
            table, consistency, ..
        }
        | Request::Range {
            table, consistency, ..
        }
        | Request::Next {
            table, consistency, ..
        }
        | Request::Prefix {
            table, consistency, ..
        } => Some((table, *consistency)),
        _ => None,
    }
}

/// The same read, answered from a replica as it is.
fn dirty(mut request: Request) -> Request {
    match &mut request {
        Request::Get { consistency, .. }
        | Request::IndexGet { consistency, .. }
        | Request::Range { consistency, .. }
        | Request::Next { consistency, .. }
        | Request::Prefix { consistency, .. } => *consistency = Consistency::Dirty,
        _ => {}
    }
    request
}

fn random_id() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the system's random source");
    u64::from_le_bytes(bytes).max(1)
}

/// The file of a `disc` copy's group log: by the table's name and id.
/// Under the tables' directory: a conflict-free `disc` replica's file,
/// in `ap/<table id>/`.
const AP_DIR: &str = "ap";

/// Under the tables' directory: a `disc_only` replica's rows, in
/// `rows/<table id>/`.
const ROWS_DIR: &str = "rows";

fn raft_file(table: &str, id: u64) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(table.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}-{id}.redb")
}

impl Replication {
    /// Start replication on `node`, beside its coordination.
    pub(crate) fn start(
        node: &Node,
        dist: &Distribution,
        coord: &Coordination,
    ) -> Result<Arc<Replication>, crate::net::service::RegisterError> {
        let (service, client) = dist.service_or_register(TableService::default)?;
        let config = coord.config();
        // Coordination started with the same settings: they are valid.
        let raft_config = config
            .raft("molt-table")
            .expect("the coordination group's timings suit a table group");
        let replication = Arc::new(Replication {
            here: dist.name().to_string(),
            addr: dist.local_addr().to_string(),
            node: node.downgrade(),
            dist: dist.downgrade(),
            coord: coord.downgrade(),
            client,
            groups: Mutex::default(),
            written: Mutex::default(),
            aps: Mutex::default(),
            sync_every: config.ap_sync_interval,
            tombstone_keep: config.ap_tombstone_keep,
            raft_dir: config.data_dir.join("tables").join("raft"),
            raft_config: Arc::new(raft_config),
            quorum_timeout: config.quorum_timeout,
            tx_resolve_after: config.tx_resolve_after,
            tables_max: config.limits.tables_max,
            failures: Mutex::default(),
            stale_after: config.election_timeout_max * 2,
            stop: tokio::sync::watch::Sender::new(false),
        });
        let _ = service.inner.set(Arc::downgrade(&replication));
        node.inner()
            .tables
            .set_replication(replication.clone() as Arc<dyn Replicated>);
        tokio::spawn(replication.clone().keep(coord.tables_changed()));
        tokio::spawn(replication.clone().anti_entropy());
        tokio::spawn(replication.clone().resolve_left());
        Ok(replication)
    }

    /// Stop every group of this node.
    pub(crate) async fn shutdown(&self) {
        self.stop.send_replace(true);
        let groups: Vec<Arc<Group>> = {
            let mut groups = self.groups.lock().expect("groups poisoned");
            groups.drain().map(|(_, g)| g).collect()
        };
        for group in groups {
            group.stop().await;
        }
        self.close_ap().await;
    }

    /// Record how starting this node's replica of `table` went: a
    /// failure is logged when its reason is new, and a start after one
    /// says so.
    fn started(&self, table: &str, outcome: Result<(), String>) {
        let mut failures = self.failures.lock().expect("failures poisoned");
        match outcome {
            Ok(()) => {
                if failures.remove(table).is_some() {
                    tracing::info!(
                        table,
                        "this node's replica started after an earlier failure"
                    );
                }
            }
            Err(why) => {
                if failures.get(table) != Some(&why) {
                    tracing::error!(
                        table,
                        "cannot start this node's replica (tried again every reconciliation): {why}"
                    );
                    failures.insert(table.to_string(), why);
                }
            }
        }
    }

    fn coordination(&self) -> Option<Coordination> {
        self.coord.upgrade()
    }

    fn group(&self, table: &str) -> Option<Arc<Group>> {
        self.groups
            .lock()
            .expect("groups poisoned")
            .get(table)
            .cloned()
    }

    fn group_with(&self, table: &str, id: u64) -> Result<Arc<Group>, TableServiceError> {
        self.group(table)
            .filter(|g| g.id == id)
            .ok_or_else(|| TableServiceError::NoGroup(table.to_string()))
    }

    /// The group of `table` (as created at `id`) whose member here is
    /// `to`: Raft's messages for an earlier member of this node (before a
    /// restart) are refused, as if that member were unreachable.
    fn member(&self, table: &str, id: u64, to: u64) -> Result<Arc<Group>, TableServiceError> {
        self.group_with(table, id)?;
        self.group(table)
            .filter(|g| g.id == id && g.me == to)
            .ok_or_else(|| TableServiceError::NoGroup(table.to_string()))
    }

    fn entry(&self, table: &str) -> Option<TableEntry> {
        self.coordination()?.table_entry(table)
    }

    /// Whether `table` is conflict-free (this node keeps a replica of
    /// it, or its definition says so).
    fn conflict_free(&self, table: &str) -> bool {
        self.ap(table).is_some()
            || self
                .entry(table)
                .is_some_and(|e| e.spec.kind.conflict_free())
    }

    /// Whether `table` is a replicated table (cheap: asked of every
    /// request the node's tables get).
    fn defined(&self, table: &str) -> bool {
        self.group(table).is_some()
            || self.ap(table).is_some()
            || self.coordination().is_some_and(|c| c.has_table(table))
    }

    /// Keep this node's groups in line with the definitions: at each
    /// change, and every second (joins and membership).
    async fn keep(self: Arc<Self>, mut changed: tokio::sync::watch::Receiver<u64>) {
        let mut stop = self.stop.subscribe();
        loop {
            if *stop.borrow() || self.coordination().is_none() {
                return;
            }
            self.reconcile().await;
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn reconcile(self: &Arc<Self>) {
        let Some(coord) = self.coordination() else {
            return;
        };
        // Read before the definitions: every table created up to it is
        // among them unless deleted.
        let applied = coord.applied_index();
        let entries = coord.table_entries();
        self.sweep(&entries, applied);
        self.reconcile_ap(&entries);
        // Groups no longer wanted here. A replica removed from a table
        // that goes on runs until its group no longer counts it (its
        // leader, this one perhaps, takes it out of the membership):
        // the group may need it for that change (two voters need both).
        let within = self.quorum_timeout * 10;
        let (gone, leaving): (Vec<Arc<Group>>, Vec<Arc<Group>>) = {
            let mut groups = self.groups.lock().expect("groups poisoned");
            let mut leaving = Vec::new();
            let gone: Vec<String> = groups
                .iter()
                .filter(|(name, g)| match entries.get(*name) {
                    None => true,
                    Some(e) if e.id != g.id || e.spec.kind.conflict_free() => true,
                    Some(e) if !self.replicates(e) => {
                        // A replica that holds the group's only copy runs
                        // on until a replica that stays has joined (and
                        // its leader then takes it out): ending it would
                        // lose the table's contents.
                        let wanted = |node: &str| e.spec.replicas.iter().any(|r| r.node == node);
                        let needed = g.still_needed(within) || g.holds_the_only_copy(wanted);
                        if needed {
                            leaving.push((*g).clone());
                        }
                        !needed
                    }
                    // Removed, and named again before it was gone: its
                    // group may no longer count it while it still sees
                    // itself a member (it is sent nothing, so it never
                    // learns), and it would never ask to join again. It
                    // starts afresh as a new member, which joins.
                    Some(_) => g.has_left(),
                })
                .map(|(name, _)| name.clone())
                .collect();
            (
                gone.iter().filter_map(|n| groups.remove(n)).collect(),
                leaving,
            )
        };
        for group in gone {
            self.end(&group, entries.get(&group.table)).await;
        }
        for group in leaving {
            if group.leader().is_some_and(|(id, _)| id == group.me)
                && let Some(entry) = entries.get(&group.table)
            {
                self.trim(entry, &group).await;
            }
        }
        for entry in entries
            .values()
            .filter(|e| self.replicates(e) && !e.spec.kind.conflict_free())
        {
            let copy = self.copy_of(entry).unwrap_or(Copy::Ram);
            let group = match self.group(&entry.spec.name) {
                Some(group)
                    if (copy != Copy::Ram) != group.disc
                        || (copy == Copy::DiscOnly) != group.machine.rows_on_disc() =>
                {
                    match self.recopy(group.clone(), copy).await {
                        Ok(group) => group,
                        Err(why) => {
                            // Out of the map already: stopped here, and
                            // started again at the next reconciliation.
                            tracing::error!(table = %entry.spec.name, "cannot change this node's copy type: {why}");
                            self.end(&group, Some(entry)).await;
                            continue;
                        }
                    }
                }
                Some(group) => group,
                None => match self.begin(entry).await {
                    Ok(group) => {
                        self.started(&entry.spec.name, Ok(()));
                        group
                    }
                    Err(why) => {
                        self.started(&entry.spec.name, Err(why));
                        continue;
                    }
                },
            };
            if !group.is_member() {
                // On a task of its own, one at a time per group: a join
                // waits for the leader to catch the replica up, and the
                // other tables are kept meanwhile.
                if !group
                    .joining
                    .swap(true, std::sync::atomic::Ordering::AcqRel)
                {
                    let (me, coord, entry) = (self.clone(), coord.clone(), entry.clone());
                    tokio::spawn(async move {
                        me.found_or_join(&coord, &entry, &group).await;
                        group
                            .joining
                            .store(false, std::sync::atomic::Ordering::Release);
                    });
                }
            } else if group.leader().is_some_and(|(id, _)| id == group.me) {
                self.trim(entry, &group).await;
            }
        }
    }

    /// Remove the files of replicas this node no longer keeps: their
    /// table was deleted, or this replica removed or made `ram`, while
    /// the node was down (a running node removes them as it stops the
    /// replica). Only files of tables created at or before `applied`
    /// (the coordination index `entries` are at least as recent as) are
    /// judged, so a node still catching up removes nothing it may keep.
    fn sweep(&self, entries: &BTreeMap<String, TableEntry>, applied: u64) {
        let kept: BTreeSet<u64> = entries
            .values()
            .filter(|e| self.copy_of(e).is_some_and(|c| c != Copy::Ram))
            .map(|e| e.id)
            .chain(
                self.groups
                    .lock()
                    .expect("groups poisoned")
                    .values()
                    .filter(|g| g.disc)
                    .map(|g| g.id),
            )
            .chain(
                self.aps
                    .lock()
                    .expect("replicas poisoned")
                    .values()
                    .filter(|a| a.is_disc())
                    .map(|a| a.id),
            )
            .collect();
        let orphan = |id: u64| id <= applied && !kept.contains(&id);
        let remove = |path: &std::path::Path, removed: std::io::Result<()>| match removed {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed the files of a replica this node no longer keeps")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot remove the files of a replica this node no longer keeps: {e}")
            }
        };
        // Group logs: `<hash>-<id>.redb`.
        for path in std::fs::read_dir(&self.raft_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|f| f.path())
        {
            let id = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".redb"))
                .and_then(|n| n.rsplit_once('-'))
                .and_then(|(_, id)| id.parse().ok());
            if id.is_some_and(orphan) {
                remove(&path, std::fs::remove_file(&path));
            }
        }
        // Conflict-free replicas' files: `ap/<id>/`; disc_only replicas'
        // rows: `rows/<id>/`.
        for path in [AP_DIR, ROWS_DIR]
            .into_iter()
            .flat_map(|sub| {
                std::fs::read_dir(self.tables_dir().join(sub))
                    .into_iter()
                    .flatten()
            })
            .flatten()
            .map(|d| d.path())
        {
            let id = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok());
            if id.is_some_and(orphan) {
                remove(&path, std::fs::remove_dir_all(&path));
            }
        }
    }

    fn replicates(&self, entry: &TableEntry) -> bool {
        self.copy_of(entry).is_some()
    }

    /// How this node keeps `entry`'s table, if it keeps a replica.
    fn copy_of(&self, entry: &TableEntry) -> Option<Copy> {
        entry
            .spec
            .replicas
            .iter()
            .find(|r| r.node == self.here)
            .map(|r| r.copy)
    }

    /// Start this node's group of `entry`'s table, with an empty replica.
    async fn begin(self: &Arc<Self>, entry: &TableEntry) -> Result<Arc<Group>, String> {
        let node = self.node.upgrade().ok_or("the node stopped")?;
        let spec = &entry.spec;
        let copy = self.copy_of(entry).unwrap_or(Copy::Ram);
        let schema = Schema {
            name: spec.name.clone(),
            kind: spec.kind,
            indexes: spec.indexes.clone(),
        };
        let rows_in = (copy == Copy::DiscOnly).then(|| self.rows_dir(entry.id));
        let replica = node
            .inner()
            .tables
            .local()
            .insert_replica(schema, rows_in.as_deref())
            .map_err(|e| e.to_string())?;
        let disc = copy != Copy::Ram;
        let storage = if disc {
            Storage::<TableRaft>::open_file(
                &self.raft_dir,
                &raft_file(&spec.name, entry.id),
                &self.here,
                random_id(),
            )
            .map_err(|e| e.to_string())
        } else {
            Ok(Storage::in_memory(Identity {
                member: random_id(),
                node: self.here.clone(),
            }))
        };
        let storage = match storage {
            Ok(storage) => storage,
            Err(why) => {
                self.drop_replica(&spec.name, entry.id).await;
                return Err(why);
            }
        };
        let me = storage.identity.member;
        let weak = Arc::downgrade(self);
        let table = spec.name.clone();
        let on_replaced = Arc::new(move |index: u64| {
            if let Some(replication) = weak.upgrade()
                && let Some(node) = replication.node.upgrade()
            {
                node.inner()
                    .tables
                    .ended(&node.inner(), &table, index, "restored");
            }
        });
        let started = match GroupMachine::new(replica, storage.clone(), on_replaced) {
            Ok(machine) => {
                if copy == Copy::DiscOnly {
                    // The snapshot's bytes stay in the log's file only.
                    storage.lean();
                }
                self.run(&spec.name, entry.id, disc, storage, machine).await
            }
            Err(why) => Err(why),
        };
        match started {
            Ok(group) => {
                tracing::info!(table = %spec.name, member = me, ?copy, "this node's replica started");
                Ok(group)
            }
            Err(why) => {
                self.drop_replica(&spec.name, entry.id).await;
                Err(why)
            }
        }
    }

    /// Where a `disc_only` replica of the group `id` keeps its rows.
    fn rows_dir(&self, id: u64) -> std::path::PathBuf {
        self.replica_dir(ROWS_DIR, id)
    }

    /// The tables' directory (`<coordination data dir>/tables/`).
    fn tables_dir(&self) -> &std::path::Path {
        self.raft_dir.parent().unwrap_or(&self.raft_dir)
    }

    /// The directory of a replica of table `id` kept under `sub`
    /// ([`AP_DIR`], [`ROWS_DIR`]) of the tables' directory.
    fn replica_dir(&self, sub: &str, id: u64) -> std::path::PathBuf {
        self.tables_dir().join(sub).join(id.to_string())
    }

    /// Drop this node's replica of `table` (group `id`), removing a
    /// `disc_only` replica's file.
    async fn drop_replica(&self, table: &str, id: u64) {
        let Some(node) = self.node.upgrade() else {
            return;
        };
        let file = node.inner().tables.local().remove_replica(table);
        if let Some(file) = file {
            file.remove().await;
            let dir = self.rows_dir(id);
            if let Err(e) = std::fs::remove_dir(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), "cannot remove a dropped replica's directory: {e}");
            }
        }
    }

    /// Run a group of `table` over `storage` and `machine`, as this node's.
    async fn run(
        &self,
        table: &str,
        id: u64,
        disc: bool,
        storage: Storage<TableRaft>,
        machine: GroupMachine,
    ) -> Result<Arc<Group>, String> {
        let network = GroupNetwork {
            client: self.client.clone(),
            dist: self.dist.clone(),
            table: table.to_string(),
            id,
        };
        let raft = Raft::new(
            storage.identity.member,
            self.raft_config.clone(),
            network,
            storage.clone(),
            machine.clone(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let group = Arc::new(Group::new(
            table.to_string(),
            id,
            disc,
            raft,
            storage,
            machine,
            self.client.clone(),
            self.stale_after,
        ));
        self.groups
            .lock()
            .expect("groups poisoned")
            .insert(table.to_string(), group.clone());
        Ok(group)
    }

    /// Change how this node keeps its replica (`ram`, `disc` or
    /// `disc_only`): the same member, its log, vote and state moved to the
    /// new storage (and its rows to a file, or from one, to memory), so
    /// the group goes on with it as before (its subscribers too).
    async fn recopy(&self, group: Arc<Group>, copy: Copy) -> Result<Arc<Group>, String> {
        let disc = copy != Copy::Ram;
        let rows_on_disc = copy == Copy::DiscOnly;
        // Out of the map first: requests meanwhile find no group here and
        // go elsewhere, or ask again.
        self.groups
            .lock()
            .expect("groups poisoned")
            .remove(&group.table);
        let _ = group.raft.shutdown().await;
        let file = raft_file(&group.table, group.id);
        let storage = if disc == group.disc {
            group.storage.clone()
        } else {
            let target = disc.then_some((self.raft_dir.as_path(), file.as_str()));
            let moved = group.storage.moved_to(target).await;
            group.storage.close().await;
            let storage = moved.map_err(|e| e.to_string())?;
            if group.disc {
                let path = self.raft_dir.join(&file);
                if let Err(e) = std::fs::remove_file(&path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(file = %path.display(), "cannot remove a replica's old log: {e}");
                }
            }
            storage
        };
        let mut machine = group.machine.with_storage(storage.clone());
        if rows_on_disc != group.machine.rows_on_disc() {
            let node = self.node.upgrade().ok_or("the node stopped")?;
            let rows_in = rows_on_disc.then(|| self.rows_dir(group.id));
            let (replica, old) = node
                .inner()
                .tables
                .local()
                .rekeep_replica(group.machine.replica(), rows_in.as_deref())
                .map_err(|e| e.to_string())?;
            if let Some(old) = old {
                old.remove().await;
            }
            replica.flushed().await;
            machine = machine.with_replica(replica);
        }
        if rows_on_disc {
            storage.lean();
        }
        let table = group.table.clone();
        let again = self.run(&table, group.id, disc, storage, machine).await?;
        tracing::info!(table = %table, ?copy, "this node's replica changed its copy type");
        Ok(again)
    }

    /// Stop this node's group of a table it no longer replicates (or that
    /// was deleted): its subscribers are told, and a disc copy's log goes.
    async fn end(&self, group: &Group, entry: Option<&TableEntry>) {
        group.stop().await;
        if let Some(node) = self.node.upgrade() {
            let inner = node.inner();
            let reason = if entry.is_some_and(|e| e.id == group.id) {
                "moved"
            } else {
                "deleted"
            };
            let last = inner
                .tables
                .local()
                .info(&group.table)
                .map_or(0, |i| i.applied);
            inner.tables.ended(&inner, &group.table, last, reason);
        }
        self.drop_replica(&group.table, group.id).await;
        if group.disc {
            let path = self.raft_dir.join(raft_file(&group.table, group.id));
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = %path.display(), "cannot remove a dropped replica's log: {e}");
            }
        }
        tracing::info!(table = %group.table, "this node's replica stopped");
    }

    /// Found the table's group (if nobody has) or ask its leader to let
    /// this replica in.
    async fn found_or_join(
        self: Arc<Self>,
        coord: &Coordination,
        entry: &TableEntry,
        group: &Group,
    ) {
        let founder = match &entry.founder {
            // Every replica came back as a new member (all `ram` copies
            // restarted): the group is gone; found it again.
            Some((_, was)) if *was != group.me && self.group_lost(entry).await => {
                let command = Command::RefoundTable {
                    name: entry.spec.name.clone(),
                    id: entry.id,
                    was: *was,
                    node: self.here.clone(),
                    member: group.me,
                };
                match coord.propose_table(command).await {
                    Ok(TableOutcome::Founded { node, member }) => {
                        if member == group.me {
                            tracing::warn!(table = %entry.spec.name, "no replica held the table's group any more (all restarted): founded again, empty");
                        }
                        Some((node, member))
                    }
                    _ => None,
                }
            }
            Some(founder) => Some(founder.clone()),
            None => {
                let command = Command::FoundTable {
                    name: entry.spec.name.clone(),
                    id: entry.id,
                    node: self.here.clone(),
                    member: group.me,
                };
                match coord.propose_table(command).await {
                    Ok(TableOutcome::Founded { node, member }) => Some((node, member)),
                    Ok(_) => None,
                    Err(e) => {
                        tracing::debug!(table = %entry.spec.name, "cannot found the group yet: {e}");
                        None
                    }
                }
            }
        };
        let Some((_, founder)) = founder else {
            return;
        };
        if founder != group.me {
            self.join(entry, group).await;
        } else if !group.raft.is_initialized().await.unwrap_or(true) {
            let me = Member {
                name: self.here.clone(),
                addr: self.addr.clone(),
            };
            let members = BTreeMap::from([(group.me, me)]);
            if let Err(e) = group.raft.initialize(members).await {
                tracing::warn!(table = %group.table, "cannot found the group: {e}");
            }
        }
    }

    /// Whether no replica holds the table's group any more: the member
    /// that founded it is gone (its node runs the group as another member,
    /// or keeps no replica), and every other replica's node answers that it
    /// is not a member. A node that does not answer may hold the group;
    /// a founder still running as itself may be about to initialise it:
    /// then it is not lost.
    async fn group_lost(&self, entry: &TableEntry) -> bool {
        let Some((founder, was)) = &entry.founder else {
            return false;
        };
        let request = TableRequest::Probe {
            table: entry.spec.name.clone(),
            id: entry.id,
        };
        // The founder's node is asked too when the definition no longer
        // names it: a replica removed before the others had joined still
        // holds the group (and the only copy of what was written to it).
        let mut nodes: Vec<&str> = entry
            .spec
            .replicas
            .iter()
            .map(|r| r.node.as_str())
            .collect();
        if !nodes.contains(&founder.as_str()) {
            nodes.push(founder.as_str());
        }
        for node in nodes.into_iter().filter(|n| *n != self.here) {
            match self
                .client
                .call_within(node, self.quorum_timeout, &request)
                .await
            {
                Ok(TableReply::Probed { member: false, id })
                    if !(node == founder.as_str() && id == Some(*was)) => {}
                _ => return false,
            }
        }
        true
    }

    /// Ask the other replicas' nodes, in turn, to let this replica in, and
    /// the founder's node last (a replica removed before the others had
    /// joined may still hold the group).
    async fn join(&self, entry: &TableEntry, group: &Group) {
        let request = TableRequest::Join {
            table: entry.spec.name.clone(),
            id: entry.id,
            member: group.me,
            node: Member {
                name: self.here.clone(),
                addr: self.addr.clone(),
            },
        };
        let founder = entry.founder.as_ref().map(|(node, _)| node);
        let nodes = entry
            .spec
            .replicas
            .iter()
            .map(|r| &r.node)
            .chain(founder.filter(|f| !entry.spec.replicas.iter().any(|r| r.node == **f)))
            .filter(|n| **n != self.here);
        for node in nodes {
            let call = self
                .client
                .call_within(node, self.quorum_timeout * 5, &request);
            match call.await {
                Ok(_) => {
                    tracing::info!(table = %entry.spec.name, "this node's replica joined the group");
                    return;
                }
                Err(e) => {
                    tracing::debug!(table = %entry.spec.name, via = %node, "join: {e}")
                }
            }
        }
    }

    /// As the leader: let `member` of `node` in, replacing any other id
    /// of the same node.
    async fn admit(
        &self,
        group: &Group,
        member: u64,
        node: Member,
    ) -> Result<(), TableServiceError> {
        let _one = group.membership.lock().await;
        if group.leader().is_none_or(|(id, _)| id != group.me) {
            return Err(TableServiceError::NotLeader);
        }
        let entry = self
            .entry(&group.table)
            .filter(|e| e.id == group.id)
            .ok_or_else(|| TableServiceError::NoGroup(group.table.clone()))?;
        if !entry.spec.replicas.iter().any(|r| r.node == node.name) {
            return Err(TableServiceError::Raft(format!(
                "{} keeps no replica of table {}",
                node.name, group.table
            )));
        }
        let raft_err = |e: &dyn std::fmt::Display| TableServiceError::Raft(e.to_string());
        let metrics = group.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        if voters.contains(&member) {
            return Ok(());
        }
        let old: BTreeSet<u64> = membership
            .nodes()
            .filter(|(id, m)| m.name == node.name && **id != member)
            .map(|(id, _)| *id)
            .collect();
        let keep: BTreeSet<u64> = voters.difference(&old).copied().collect();
        if !old.is_empty() && !keep.is_empty() {
            group
                .raft
                .change_membership(keep.clone(), false)
                .await
                .map_err(|e| raft_err(&e))?;
        }
        // Caught up within a bound: a joiner that went away meanwhile does
        // not hold the group's membership changes for ever.
        let catch_up = self.quorum_timeout * 10;
        tokio::time::timeout(catch_up, group.raft.add_learner(member, node, true))
            .await
            .map_err(|_| TableServiceError::Raft(format!("not caught up within {catch_up:?}")))?
            .map_err(|e| raft_err(&e))?;
        let mut voters = keep;
        voters.insert(member);
        group
            .raft
            .change_membership(voters, false)
            .await
            .map_err(|e| raft_err(&e))?;
        Ok(())
    }

    /// As the leader: drop members whose node keeps no replica any more.
    async fn trim(&self, entry: &TableEntry, group: &Group) {
        let Ok(_one) = group.membership.try_lock() else {
            return;
        };
        let metrics = group.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let wanted: BTreeSet<&str> = entry
            .spec
            .replicas
            .iter()
            .map(|r| r.node.as_str())
            .collect();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let keep: BTreeSet<u64> = membership
            .nodes()
            .filter(|(id, m)| voters.contains(id) && wanted.contains(m.name.as_str()))
            .map(|(id, _)| *id)
            .collect();
        let all: BTreeSet<u64> = membership.nodes().map(|(id, _)| *id).collect();
        let learners_out = all.len() > voters.len()
            && membership
                .nodes()
                .any(|(id, m)| !voters.contains(id) && !wanted.contains(m.name.as_str()));
        if keep.is_empty() || (keep == voters && !learners_out) {
            return;
        }
        // Bounded: the reconciliation of every table waits for it.
        let change = group.raft.change_membership(keep, false);
        match tokio::time::timeout(self.quorum_timeout, change).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(table = %group.table, "cannot drop a removed replica yet: {e}")
            }
            Err(_) => tracing::info!(
                table = %group.table,
                "dropping a removed replica did not commit within the quorum timeout; trying again"
            ),
        }
    }

    async fn serve(
        self: Arc<Self>,
        request: TableRequest,
    ) -> Result<TableReply, TableServiceError> {
        match request {
            TableRequest::Append { table, id, to, rpc } => {
                let group = self.member(&table, id, to)?;
                group.heard();
                Ok(TableReply::Append(group.raft.append_entries(rpc).await))
            }
            TableRequest::Vote { table, id, to, rpc } => {
                let group = self.member(&table, id, to)?;
                Ok(TableReply::Vote(group.raft.vote(rpc).await))
            }
            TableRequest::Snapshot { table, id, to, rpc } => {
                let group = self.member(&table, id, to)?;
                group.heard();
                Ok(TableReply::Snapshot(group.raft.install_snapshot(rpc).await))
            }
            TableRequest::Join {
                table,
                id,
                member,
                node,
            } => {
                let group = self.group_with(&table, id)?;
                match group.leader() {
                    Some((leader, _)) if leader == group.me => {
                        self.admit(&group, member, node).await?;
                        Ok(TableReply::Joined)
                    }
                    Some((_, leader)) => {
                        // Handed to the leader.
                        let request = TableRequest::Join {
                            table,
                            id,
                            member,
                            node,
                        };
                        self.client
                            .call_within(&leader.name, self.quorum_timeout * 4, &request)
                            .await
                            .map_err(|e| TableServiceError::Raft(e.to_string()))
                    }
                    None => Err(TableServiceError::NotLeader),
                }
            }
            TableRequest::Commit { table, id, command } => {
                let group = self.group_with(&table, id)?;
                if group.leader().is_none_or(|(l, _)| l != group.me) {
                    return Err(TableServiceError::NotLeader);
                }
                let deadline = tokio::time::Instant::now() + self.quorum_timeout;
                match group.commit(command, deadline).await {
                    Ok(outcome) => Ok(TableReply::Committed(outcome)),
                    Err(GroupError::NoQuorum) => Err(TableServiceError::NoQuorum),
                    // The replica stopped meanwhile (its copy type changes,
                    // or it was removed): not taken here, ask again.
                    Err(GroupError::Failed(_))
                        if !self.group(&table).is_some_and(|g| Arc::ptr_eq(&g, &group)) =>
                    {
                        Err(TableServiceError::NotRunning)
                    }
                    Err(GroupError::Failed(why)) => Err(TableServiceError::Raft(why)),
                }
            }
            TableRequest::Read(request) => Ok(TableReply::Read(self.read(request, false).await)),
            TableRequest::ReadAfter { request, index } => {
                if let Some(group) = read_of(&request).and_then(|(t, _)| self.group(t)) {
                    group.caught_up(index, self.quorum_timeout).await;
                }
                Ok(TableReply::Read(self.read(request, false).await))
            }
            request @ (TableRequest::ApPush { .. }
            | TableRequest::ApSync { .. }
            | TableRequest::ApKeys { .. }
            | TableRequest::ApWrite { .. }) => self.serve_ap(request).await,
            TableRequest::Probe { table, id } => {
                let group = self.group_with(&table, id).ok();
                Ok(TableReply::Probed {
                    member: group.as_ref().is_some_and(|g| g.is_member()),
                    id: group.map(|g| g.me),
                })
            }
        }
    }

    /// Answer a read of a replicated table: from this node's replica (a
    /// linearizable one once this node confirmed it leads), else from the
    /// leader or a replica elsewhere. `handed` reads came from another
    /// node, and are handed on once at most.
    async fn read(&self, request: Request, handed: bool) -> Reply {
        let Some((table, consistency)) = read_of(&request) else {
            return Reply::Error(Error::BadRequest("not a read".into()));
        };
        let table = table.to_string();
        let Some(node) = self.node.upgrade() else {
            return Reply::Error(Error::Unavailable {
                table,
                why: "the node stopped".into(),
            });
        };
        let deadline = tokio::time::Instant::now() + self.quorum_timeout;
        let local = |request: Request| node.inner().tables.answer_here(&node.inner(), request);
        if self.conflict_free(&table) {
            if consistency == Consistency::Linearizable {
                return Reply::Error(Error::Unsupported(format!(
                    "linearizable reads of table {table}: it is conflict-free, its replicas take writes apart (read a replica; a stale mark says it may lag)"
                )));
            }
            if self.ap(&table).is_some() {
                return local(request);
            }
        }
        match (self.group(&table), consistency) {
            (Some(_), Consistency::Dirty) => local(request),
            (Some(group), Consistency::Linearizable) => match group.leader_by(deadline).await {
                Some((id, _)) if id == group.me => match group.confirm_lead(deadline).await {
                    Ok(()) => {
                        let mut reply = local(dirty(request));
                        if let Reply::Rows(rows) = &mut reply {
                            rows.stale = false;
                        }
                        reply
                    }
                    Err(GroupError::NoQuorum) => Reply::Error(Error::NoQuorum),
                    Err(GroupError::Failed(why)) => Reply::Error(Error::Unavailable { table, why }),
                },
                Some((_, leader)) if !handed => self.ask(&leader.name, request, &table, 0).await,
                _ => Reply::Error(Error::NoQuorum),
            },
            (None, _) if !handed => {
                let Some(entry) = self.entry(&table) else {
                    return Reply::Error(Error::NoTable(table));
                };
                let mut last = Reply::Error(Error::NoQuorum);
                let after = self.written(&table, entry.id);
                for replica in &entry.spec.replicas {
                    last = self
                        .ask(&replica.node, request.clone(), &table, after)
                        .await;
                    if !matches!(last, Reply::Error(Error::Unavailable { .. })) {
                        return last;
                    }
                }
                last
            }
            (None, _) => Reply::Error(Error::Unavailable {
                table,
                why: "this node keeps no replica of it".into(),
            }),
        }
    }

    /// This node's last commit to `table` (kept only while it keeps no
    /// replica of it), or 0.
    fn written(&self, table: &str, id: u64) -> u64 {
        let written = self.written.lock().expect("written poisoned");
        match written.get(table) {
            Some(&(of, index)) if of == id => index,
            _ => 0,
        }
    }

    /// Note a commit to `table` at `index` made through another node's
    /// replica.
    pub(super) fn wrote(&self, table: &str, index: u64) {
        let Some(id) = self.entry(table).map(|e| e.id) else {
            return;
        };
        if self.group(table).is_some() || index == 0 {
            return;
        }
        let mut written = self.written.lock().expect("written poisoned");
        if written.len() >= self.tables_max && !written.contains_key(table) {
            // Bounded: a table forgotten here only loses this wait.
            written.clear();
        }
        let at = written.entry(table.to_string()).or_insert((id, 0));
        // A table created again under the name starts over.
        *at = (id, if at.0 == id { at.1.max(index) } else { index });
    }

    async fn ask(&self, node: &str, request: Request, table: &str, after: u64) -> Reply {
        let request = match after {
            0 => TableRequest::Read(request),
            index => TableRequest::ReadAfter { request, index },
        };
        let call = self.client.call_within(node, self.quorum_timeout, &request);
        match call.await {
            Ok(TableReply::Read(reply)) => reply,
            Ok(_) => Reply::Error(Error::Unavailable {
                table: table.to_string(),
                why: format!("{node} answered a read with the wrong reply"),
            }),
            Err(e) => Reply::Error(Error::Unavailable {
                table: table.to_string(),
                why: format!("{node}: {e}"),
            }),
        }
    }

    async fn commit(&self, table: String, command: GroupCommand) -> Reply {
        let deadline = tokio::time::Instant::now() + self.quorum_timeout;
        let group = self.group(&table);
        if group.is_none() && self.entry(&table).is_none() {
            return Reply::Error(Error::NoTable(table));
        }
        // A key held by a transaction over several tables is free again
        // within a few rounds: try again until the deadline.
        let mut pause = Duration::from_millis(1);
        let outcome = loop {
            let outcome = self.outcome(&table, command.clone(), deadline).await;
            match &outcome {
                Ok(GroupOutcome::Aborted(abort))
                    if abort.transient() && tokio::time::Instant::now() + pause < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                _ => break outcome,
            }
        };
        match outcome {
            Ok(GroupOutcome::Committed(index)) => {
                // Read your writes: this replica has the batch too (or
                // this node's reads through another wait for it).
                match group {
                    Some(group) => group.caught_up(index, self.quorum_timeout).await,
                    None => self.wrote(&table, index),
                }
                Reply::Committed(vec![index])
            }
            Ok(GroupOutcome::Aborted(abort)) => Reply::Error(Error::Aborted { table, abort }),
            Ok(GroupOutcome::Refused(why)) => Reply::Error(Error::BadRequest(why)),
            Ok(other) => Reply::Error(Error::Unavailable {
                table,
                why: format!("the group answered a commit with {other:?}"),
            }),
            Err(GroupError::NoQuorum) => Reply::Error(Error::NoQuorum),
            Err(GroupError::Failed(why)) => Reply::Error(Error::Unavailable { table, why }),
        }
    }

    /// Commit through a replica's node (this node keeps none): it hands
    /// the batch to the leader.
    async fn commit_elsewhere(
        &self,
        entry: &TableEntry,
        command: GroupCommand,
        deadline: tokio::time::Instant,
    ) -> Result<GroupOutcome, GroupError> {
        use crate::net::service::{CallError, RequestError};
        let request = TableRequest::Commit {
            table: entry.spec.name.clone(),
            id: entry.id,
            command,
        };
        let mut pause = Duration::from_millis(5);
        loop {
            for replica in &entry.spec.replicas {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.client.call_within(&replica.node, left, &request).await {
                    Ok(TableReply::Committed(outcome)) => return Ok(outcome),
                    Ok(_) => return Err(GroupError::Failed("a wrong reply to a commit".into())),
                    Err(CallError::Remote(TableServiceError::NoQuorum)) => {
                        return Err(GroupError::NoQuorum);
                    }
                    Err(CallError::Remote(TableServiceError::Raft(why))) => {
                        return Err(GroupError::Failed(why));
                    }
                    // Not taken there: try another.
                    Err(CallError::Remote(_))
                    | Err(CallError::Request(RequestError::Connect(_))) => {}
                    Err(_) => return Err(GroupError::NoQuorum),
                }
            }
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(GroupError::NoQuorum);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    async fn create(&self, spec: Spec) -> Result<(), Error> {
        let spec = self.checked(spec)?;
        self.propose_create(spec).await
    }

    /// `spec` as it is to be created: its replicas named (this node's, and
    /// "all" as every member), checked against the cluster's members, the
    /// node's limits and the tables that exist.
    fn checked(&self, mut spec: Spec) -> Result<Spec, Error> {
        let coord = self.coordination().ok_or_else(|| {
            Error::Unsupported("replicated tables need coordination (molt node runs it)".into())
        })?;
        if spec.name.contains(super::fragments::MARK) {
            return Err(Error::BadSpec(format!(
                "a table name may not hold {:?}: it marks a fragmented table's fragments",
                super::fragments::MARK
            )));
        }
        if self.fragmented(&spec.name).is_some() {
            return Err(Error::Exists(spec.name));
        }
        let members: BTreeSet<String> = coord.members().into_iter().map(|m| m.name).collect();
        for replica in &mut spec.replicas {
            if replica.node.is_empty() {
                replica.node = self.here.clone();
            }
            if spec.kind.conflict_free() {
                Self::ap_copy(replica.copy)?;
            }
        }
        if spec.replicas.is_empty() {
            spec.replicas.push(molt_abi::table::Replica {
                node: self.here.clone(),
                copy: Copy::Ram,
            });
        }
        if spec.kind == molt_abi::table::Kind::Counter && !spec.indexes.is_empty() {
            return Err(Error::BadSpec("a counter table has no indexes".into()));
        }
        if spec.replicas.iter().any(|r| r.node == "all") {
            let copy = spec.replicas[0].copy;
            spec.replicas = members
                .iter()
                .map(|node| molt_abi::table::Replica {
                    node: node.clone(),
                    copy,
                })
                .collect();
        }
        for (i, replica) in spec.replicas.iter().enumerate() {
            if !members.contains(&replica.node) {
                return Err(Error::BadSpec(format!(
                    "{} is not a node of this cluster (molt cluster lists them)",
                    replica.node
                )));
            }
            if spec.replicas[..i].iter().any(|r| r.node == replica.node) {
                return Err(Error::BadSpec(format!(
                    "{} is named twice as a replica",
                    replica.node
                )));
            }
        }
        if let Some(node) = self.node.upgrade() {
            let inner = node.inner();
            let local = inner.tables.local();
            let schema = Schema {
                name: spec.name.clone(),
                kind: spec.kind,
                indexes: spec.indexes.clone(),
            };
            local
                .check_schema(&schema)
                .map_err(|e| super::service::error(&spec.name, e))?;
            // A table kept on this node alone has the name.
            if local.info(&spec.name).is_ok_and(|i| !i.replicated) {
                return Err(Error::Exists(spec.name));
            }
        }
        Ok(spec)
    }

    /// Define the table `spec` (checked) in the coordination group, and
    /// wait until its group has a leader.
    async fn propose_create(&self, spec: Spec) -> Result<(), Error> {
        let coord = self.coordination().ok_or_else(|| {
            Error::Unsupported("replicated tables need coordination (molt node runs it)".into())
        })?;
        let name = spec.name.clone();
        match coord.propose_table(Command::CreateTable { spec }).await {
            Ok(TableOutcome::Created(id)) => {
                self.wait_started(&name, id).await;
                Ok(())
            }
            Ok(TableOutcome::Exists) => Err(Error::Exists(name)),
            Ok(other) => Err(Error::Unavailable {
                table: name,
                why: format!("the coordination group answered {other:?}"),
            }),
            Err(e) => Err(global_error(&name, e, self.tables_max)),
        }
    }

    /// After a create: wait (up to the quorum timeout) until the table's
    /// group has a leader, as seen from here.
    async fn wait_started(&self, table: &str, id: u64) {
        let deadline = tokio::time::Instant::now() + self.quorum_timeout * 2;
        while tokio::time::Instant::now() < deadline {
            let ready = match self.group(table) {
                _ if self.ap(table).is_some_and(|a| a.id == id) => true,
                Some(group) => group.id == id && group.leader().is_some() && group.is_member(),
                None => !self
                    .entry(table)
                    .is_some_and(|e| self.replicates(&e) && e.id == id),
            };
            if ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn delete(&self, table: String) -> Result<(), Error> {
        let coord = self
            .coordination()
            .ok_or_else(|| Error::NoTable(table.clone()))?;
        match coord
            .propose_table(Command::DeleteTable {
                name: table.clone(),
            })
            .await
        {
            Ok(TableOutcome::Deleted) => {
                // This node's replica goes at once.
                self.reconcile_soon().await;
                Ok(())
            }
            Ok(TableOutcome::NoTable) => Err(Error::NoTable(table)),
            Ok(other) => Err(Error::Unavailable {
                table,
                why: format!("the coordination group answered {other:?}"),
            }),
            Err(e) => Err(global_error(&table, e, self.tables_max)),
        }
    }

    /// Add a replica (or change a node's copy type), or remove one.
    async fn change_replicas(&self, table: &str, change: Change) -> Result<(), Error> {
        let coord = self.coordination().ok_or_else(|| {
            Error::Unsupported("replicated tables need coordination (molt node runs it)".into())
        })?;
        let Some(entry) = self.entry(table) else {
            let local = self
                .node
                .upgrade()
                .is_some_and(|n| n.inner().tables.local().info(table).is_ok());
            return Err(if local {
                Error::Unsupported(format!(
                    "table {table} is kept on this node alone; replicas are given when a table is created"
                ))
            } else {
                Error::NoTable(table.to_string())
            });
        };
        let mut replicas = entry.spec.replicas.clone();
        match change {
            Change::Add(mut replica) => {
                if replica.node.is_empty() {
                    replica.node = self.here.clone();
                }
                if entry.spec.kind.conflict_free() {
                    Self::ap_copy(replica.copy)?;
                }
                if !coord.members().iter().any(|m| m.name == replica.node) {
                    return Err(Error::BadSpec(format!(
                        "{} is not a node of this cluster (molt cluster lists them)",
                        replica.node
                    )));
                }
                match replicas.iter_mut().find(|r| r.node == replica.node) {
                    Some(r) if r.copy == replica.copy => return Ok(()),
                    Some(r) => r.copy = replica.copy,
                    None => replicas.push(replica),
                }
            }
            Change::Remove(node) => {
                if !replicas.iter().any(|r| r.node == node) {
                    return Err(Error::BadSpec(format!(
                        "{node} keeps no replica of table {table}"
                    )));
                }
                if replicas.len() == 1 {
                    return Err(Error::BadSpec(format!(
                        "{node} keeps the last replica of table {table}: delete the table instead"
                    )));
                }
                replicas.retain(|r| r.node != node);
            }
        }
        let command = Command::SetReplicas {
            name: table.to_string(),
            replicas,
        };
        match coord.propose_table(command).await {
            Ok(TableOutcome::Changed) => Ok(()),
            Ok(TableOutcome::NoTable) => Err(Error::NoTable(table.to_string())),
            Ok(other) => Err(Error::Unavailable {
                table: table.to_string(),
                why: format!("the coordination group answered {other:?}"),
            }),
            Err(e) => Err(global_error(table, e, self.tables_max)),
        }
    }

    async fn reconcile_soon(&self) {
        let deadline = tokio::time::Instant::now() + self.quorum_timeout;
        loop {
            let gone = {
                let groups = self.groups.lock().expect("groups poisoned");
                let entries = self.coordination().map(|c| c.table_entries());
                groups.iter().all(|(name, g)| {
                    entries
                        .as_ref()
                        .and_then(|e| e.get(name))
                        .is_some_and(|e| e.id == g.id)
                })
            };
            if gone || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A change of a table's replicas.
enum Change {
    Add(molt_abi::table::Replica),
    Remove(String),
}

fn global_error(table: &str, e: GlobalError, tables_max: usize) -> Error {
    match e {
        GlobalError::NoQuorum(_) => Error::NoQuorum,
        GlobalError::Limit(limit) => Error::Limit {
            limit: limit.to_string(),
            max: tables_max as u64,
        },
        other => Error::Unavailable {
            table: table.to_string(),
            why: other.to_string(),
        },
    }
}

/// The requests on tables that are not fragmented.
impl Replication {
    /// Whether `request` is this layer's (see [`Replicated::takes`]).
    fn takes_plain(&self, request: &Request) -> bool {
        let replicated = |table: &str| self.defined(table);
        match request {
            Request::Create(spec) => {
                spec.kind.conflict_free()
                    || spec.replicas.len() > 1
                    || spec
                        .replicas
                        .iter()
                        .any(|r| !r.node.is_empty() && r.node != self.here)
            }
            Request::Delete { table } => replicated(table),
            Request::AddReplica { .. } | Request::RemoveReplica { .. } => true,
            Request::Commit(batches) => batches.iter().any(|(t, _)| replicated(t)),
            _ => match read_of(request) {
                Some((table, Consistency::Dirty)) => {
                    self.group(table).is_none()
                        && self.ap(table).is_none()
                        && self.coordination().is_some_and(|c| c.has_table(table))
                }
                Some((table, Consistency::Linearizable)) => replicated(table),
                None => false,
            },
        }
    }

    /// Answer a request on a table that is not fragmented.
    fn answer_plain(self: Arc<Self>, request: Request) -> Pending<Reply> {
        Box::pin(async move {
            match request {
                Request::Create(spec) => match self.create(spec).await {
                    Ok(()) => Reply::Done,
                    Err(e) => Reply::Error(e),
                },
                Request::Delete { table } => match self.delete(table).await {
                    Ok(()) => Reply::Done,
                    Err(e) => Reply::Error(e),
                },
                Request::AddReplica { table, replica } => {
                    match self.change_replicas(&table, Change::Add(replica)).await {
                        Ok(()) => Reply::Done,
                        Err(e) => Reply::Error(e),
                    }
                }
                Request::RemoveReplica { table, node } => {
                    match self.change_replicas(&table, Change::Remove(node)).await {
                        Ok(()) => Reply::Done,
                        Err(e) => Reply::Error(e),
                    }
                }
                Request::Commit(mut batches) => {
                    if batches.len() != 1 {
                        return self.commit_across(batches).await;
                    }
                    let (table, batch) = batches.pop().expect("one batch");
                    match self.conflict_free(&table) {
                        true => self.ap_write(table, batch).await,
                        false => self.commit(table, GroupCommand::Commit(batch)).await,
                    }
                }
                request => self.read(request, false).await,
            }
        })
    }
}

impl Replicated for Replication {
    fn caught_up(&self) -> Pending<()> {
        let coord = self.coordination();
        Box::pin(async move {
            if let Some(coord) = coord {
                coord.caught_up().await;
            }
        })
    }

    fn takes(&self, request: &Request) -> bool {
        self.takes_plain(request) || self.names_fragmented(request)
    }

    fn answer(self: Arc<Self>, request: Request) -> Pending<Reply> {
        Box::pin(async move {
            match self.clone().answer_fragmented(request).await {
                Ok(reply) => reply,
                Err(request) => self.answer_plain(request).await,
            }
        })
    }

    fn stale(&self, table: &str) -> bool {
        match self.ap(table) {
            Some(ap) => self.ap_stale(&ap),
            None => self.group(table).is_some_and(|g| g.stale()),
        }
    }

    fn names(&self) -> Vec<String> {
        self.coordination()
            .map(|c| c.table_entries().into_keys().collect())
            .unwrap_or_default()
    }

    fn spec(&self, table: &str) -> Option<Spec> {
        self.entry(table).map(|e| e.spec)
    }

    fn restore(self: Arc<Self>, table: super::state::Table) -> Pending<Result<u64, Error>> {
        Box::pin(async move {
            let name = table.schema().name.clone();
            let Some(entry) = self.entry(&name) else {
                return Err(Error::NoTable(name));
            };
            let spec = &entry.spec;
            if table.schema().kind != spec.kind || table.schema().indexes != spec.indexes {
                return Err(Error::BadSpec(format!(
                    "table {name} exists with another kind or other indexes: delete it first"
                )));
            }
            if spec.kind.conflict_free() {
                return self.ap_restore(table).await;
            }
            let bytes = molt_abi::codec::encode(&table);
            let max = self
                .dist
                .upgrade()
                .map_or(16 << 20, |d| d.config().frame_bytes_max as usize)
                / 2;
            if bytes.len() > max {
                return Err(Error::Limit {
                    limit: "frame_bytes_max / 2 (a replicated restore is one log entry)".into(),
                    max: max as u64,
                });
            }
            match self
                .commit(name.clone(), GroupCommand::Restore(bytes))
                .await
            {
                Reply::Committed(indexes) => Ok(indexes[0]),
                Reply::Error(e) => Err(e),
                other => Err(Error::Unavailable {
                    table: name,
                    why: format!("a restore was answered {other:?}"),
                }),
            }
        })
    }

    fn failure(&self, table: &str) -> Option<String> {
        let why = self
            .failures
            .lock()
            .expect("failures poisoned")
            .get(table)
            .cloned()?;
        // Only while the table is defined and replicated here.
        self.entry(table)
            .is_some_and(|e| self.replicates(&e))
            .then_some(why)
    }

    fn status(&self, table: &str) -> Option<ReplicaStatus> {
        if let Some(ap) = self.ap(table) {
            return Some(self.ap_status(&ap));
        }
        let group = self.group(table)?;
        let metrics = group.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let name_of = |id: &u64| membership.get_node(id).map(|m| m.name.clone());
        let (prepared, decisions) = group.machine.pending_len();
        Some(ReplicaStatus {
            member: group.me,
            role: format!("{:?}", metrics.state).to_lowercase(),
            term: metrics.current_term,
            leader: metrics.current_leader.as_ref().and_then(name_of),
            voters: membership
                .voter_ids()
                .filter_map(|id| name_of(&id))
                .collect(),
            learners: membership
                .learner_ids()
                .filter_map(|id| name_of(&id))
                .collect(),
            applied: metrics.last_applied.map_or(0, |l| l.index),
            stale: group.stale(),
            disc: group.disc,
            prepared,
            decisions,
        })
    }
}

/// This node's replica of a replicated table, and its group as this node
/// sees it (`molt table info`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// This replica's Raft id in the group.
    pub member: u64,
    /// Its role: leader, follower, candidate or learner.
    pub role: String,
    /// The group's term.
    pub term: u64,
    /// The leader's node, if known.
    pub leader: Option<String>,
    /// The voters' nodes.
    pub voters: Vec<String>,
    /// The learners' nodes (replicas catching up).
    pub learners: Vec<String>,
    /// The last log index applied here.
    pub applied: u64,
    /// Whether this replica may lag.
    pub stale: bool,
    /// Whether its log is on disc.
    pub disc: bool,
    /// Transactions over several tables prepared here and not yet
    /// resolved (their keys are held).
    pub prepared: usize,
    /// Decisions of transactions over several tables kept here (the
    /// home table) until every other table has taken them.
    pub decisions: usize,
}
