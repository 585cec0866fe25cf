//! The control layer: one typed API over a node and its cluster, for the
//! CLI, embedders, and (later) the HTTP API and dashboard.
//!
//! [`Control`] answers the operator's questions about any node of the
//! cluster (its processes, its connected nodes, its modules and code
//! events) and runs code operations on one node or on all of them (a load,
//! the two phases of a cluster-wide load, purge, delete, system requests),
//! and it starts directory watchers. A question about this node is
//! answered here, directly; a question about another node travels to that
//! node's control services (`code_service`, `info_service`) over the
//! network layer's service seam, and its answer (or its typed error)
//! comes back as the same Rust values as a local one.
//!
//! Invariant: the control layer changes code only through the node's own
//! API (`Node::install`, `Node::purge`, ...), the same way for a local and
//! a remote request; it keeps no state of its own but the versions staged
//! between the two phases of a cluster-wide load.

mod code_service;
mod coord;
mod info_service;
mod report;
mod rollout;
pub mod watch;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use molt_abi::Pid;

use self::code_service::CodeService;
pub use self::code_service::{CODE_REQUESTS_MAX, STAGED_MAX, SYS_PIDS_MAX, SYS_TIMEOUT_MS_MAX};
pub use self::coord::CoordQueryError;
use self::info_service::InfoService;
pub use self::report::{NodeReport, PeerReport};
pub use self::rollout::{NodeFailure, RolloutError, RolloutEvent};
use crate::code::{CodeEvent, LoadError, LoadOptions, ModuleInfo, Purge, PurgeError};
use crate::net::wire::{CodeAnswer, CodeOp, InfoError, InfoReply, InfoRequest, WireCodeError};
pub use crate::net::wire::{Prepared, Purged, Switched};
use crate::net::{
    CallError, ConnectError, Distribution, RegisterError, RequestError, ServiceClient,
};
use crate::runtime::{
    Node, NodeStats, ProcessDetail, ProcessInfo, ProcessOrder, SendError, SpawnError, SysError,
    SysOp, SysOutcome, TopProcesses,
};

/// A node's modules and its recent code events (`molt modules`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleReport {
    /// Every module, sorted by name.
    pub modules: Vec<ModuleInfo>,
    /// Recent loads, purges, refusals and failed upgrades, oldest first.
    pub events: Vec<CodeEvent>,
}

/// Why a code operation failed, on the node that ran it or on the way
/// there. A refusal from another node arrives as the same variant it was
/// there: a remote `not_purged` is `CodeError::Load(LoadError::NotPurged
/// { .. })`.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// The module was refused (or its install failed).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A purge or delete failed.
    #[error(transparent)]
    Purge(#[from] PurgeError),
    /// No version with this hash waits for its commit there: dropped past
    /// [`STAGED_MAX`], aborted, or committed already.
    #[error(
        "not staged: no version with hash {} waits here (dropped past STAGED_MAX = {STAGED_MAX}, aborted, or committed already)",
        short(.0)
    )]
    NotStaged(String),
    /// The node runs [`CODE_REQUESTS_MAX`] code requests already.
    #[error("busy: {0} code requests are running (CODE_REQUESTS_MAX)")]
    Busy(usize),
    /// More pids than one system request may name.
    #[error("{pids} pids in one request; SYS_PIDS_MAX is {max}")]
    TooManyPids {
        /// Pids named.
        pids: usize,
        /// [`SYS_PIDS_MAX`].
        max: usize,
    },
    /// The request could not run there (its task failed).
    #[error("{0}")]
    Failed(String),
    /// The node did not answer.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The node answered with something else than the operation's answer.
    #[error("{node} answered {what} with {answer}")]
    Unexpected {
        /// The node.
        node: String,
        /// The operation.
        what: &'static str,
        /// What it answered.
        answer: String,
    },
}

/// The first 16 hex digits of a hash, as versions without a section show it.
fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

impl From<WireCodeError> for CodeError {
    fn from(e: WireCodeError) -> CodeError {
        match e {
            WireCodeError::Load(e) => CodeError::Load(e.into()),
            WireCodeError::Purge(e) => CodeError::Purge(e.into()),
            WireCodeError::NotStaged(hash) => CodeError::NotStaged(hash),
            WireCodeError::Busy(max) => CodeError::Busy(max as usize),
            WireCodeError::TooManyPids(pids, max) => CodeError::TooManyPids {
                pids: pids as usize,
                max: max as usize,
            },
            WireCodeError::Failed(why) => CodeError::Failed(why),
        }
    }
}

/// A code error as it travels says what the error it came from says.
impl std::fmt::Display for WireCodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        CodeError::from(self.clone()).fmt(f)
    }
}

impl std::error::Error for WireCodeError {}

impl From<CallError<WireCodeError>> for CodeError {
    fn from(e: CallError<WireCodeError>) -> CodeError {
        match e {
            CallError::Remote(e) => e.into(),
            CallError::Request(e) => CodeError::Request(e),
        }
    }
}

/// One typed API over a node and, if it has one, its distribution layer.
/// Cheap to clone.
#[derive(Clone)]
pub struct Control {
    node: Node,
    /// This node's code service: runs local requests, answers remote ones.
    code: Arc<CodeService>,
    /// This node's coordination service, if it is in a cluster: reaches
    /// its coordination group once that runs.
    coord: Option<Arc<crate::cluster::CoordService>>,
    /// The distribution layer and the clients of the control services on
    /// other nodes; `None` for a node alone.
    cluster: Option<Cluster>,
}

/// What [`Control`] reaches other nodes with.
#[derive(Clone)]
struct Cluster {
    dist: Distribution,
    code: ServiceClient<CodeService>,
    info: ServiceClient<InfoService>,
    coord: ServiceClient<crate::cluster::CoordService>,
}

impl Control {
    /// Control of a node that is not in a cluster: every operation names
    /// this node.
    pub fn local(node: Node) -> Control {
        Control {
            code: Arc::new(CodeService::new(&node)),
            node,
            coord: None,
            cluster: None,
        }
    }

    /// Control of a node in a cluster. The first call for a distribution
    /// registers the control services with it, so that other nodes can
    /// ask this one; later calls share them.
    pub fn new(node: Node, dist: Distribution) -> Result<Control, RegisterError> {
        let (code, code_client) = dist.service_or_register(|| CodeService::new(&node))?;
        let (_, info_client) = dist.service_or_register(|| InfoService::new(&node, &dist))?;
        let (coord, coord_client) = dist.service_or_register(crate::cluster::CoordService::new)?;
        Ok(Control {
            node,
            code,
            coord: Some(coord),
            cluster: Some(Cluster {
                dist,
                code: code_client,
                info: info_client,
                coord: coord_client,
            }),
        })
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Its distribution layer, if it is in a cluster.
    pub fn distribution(&self) -> Option<&Distribution> {
        self.cluster.as_ref().map(|c| &c.dist)
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.node.config().name
    }

    fn is_here(&self, node: &str) -> bool {
        node == self.name()
    }

    /// This node's counters.
    pub fn stats(&self) -> NodeStats {
        self.node.stats()
    }

    /// The live processes of `node`, sorted by pid.
    pub async fn processes(&self, node: &str) -> Result<Vec<ProcessInfo>, RequestError> {
        if self.is_here(node) {
            return Ok(self.node.processes());
        }
        match self.info(node, InfoRequest::Processes).await? {
            InfoReply::Processes(rows) => Ok(rows.into_iter().map(Into::into).collect()),
            other => Err(unexpected_info(node, other)),
        }
    }

    /// The first `limit` processes of `node` in `order`, of those whose
    /// pid, module or name contains `search` (see [`Node::top_processes`]).
    pub async fn top_processes(
        &self,
        node: &str,
        order: ProcessOrder,
        limit: usize,
        search: Option<&str>,
    ) -> Result<TopProcesses, RequestError> {
        if self.is_here(node) {
            return Ok(self.node.top_processes(order, limit, search));
        }
        let request = InfoRequest::TopProcesses {
            order,
            limit: limit.min(u32::MAX as usize) as u32,
            search: search.map(str::to_string),
        };
        match self.info(node, request).await? {
            InfoReply::TopProcesses {
                total,
                matched,
                rows,
            } => Ok(TopProcesses {
                total,
                matched,
                processes: rows.into_iter().map(Into::into).collect(),
            }),
            other => Err(unexpected_info(node, other)),
        }
    }

    /// `node`'s figures: counts, counters, peers.
    pub async fn node_report(&self, node: &str) -> Result<NodeReport, RequestError> {
        if self.is_here(node) {
            return Ok(NodeReport::of(&self.node, self.distribution()));
        }
        match self.info(node, InfoRequest::Node).await? {
            InfoReply::Node(report) => Ok(report),
            other => Err(unexpected_info(node, other)),
        }
    }

    /// A process of `node` in detail, with the first `messages` messages
    /// of its mailbox (see [`Node::inspect`]); `None` if there is no such
    /// process.
    pub async fn inspect(
        &self,
        node: &str,
        pid: Pid,
        messages: usize,
    ) -> Result<Option<ProcessDetail>, RequestError> {
        if self.is_here(node) {
            return Ok(self.node.inspect(pid, messages).await);
        }
        let request = InfoRequest::Process {
            pid,
            messages: messages.min(crate::runtime::MAILBOX_PREVIEW_MAX) as u32,
        };
        match self.info(node, request).await? {
            InfoReply::Process(found) => Ok(found.map(|(row, inspected)| ProcessDetail {
                info: row.into(),
                inspected,
            })),
            other => Err(unexpected_info(node, other)),
        }
    }

    /// Run a table request on `node` (`molt tables`, `molt table`): see
    /// [`Node::table`].
    pub async fn table(
        &self,
        node: &str,
        request: molt_abi::table::Request,
    ) -> Result<molt_abi::table::Reply, RequestError> {
        if self.is_here(node) {
            return Ok(self.node.table(request).await);
        }
        match self.info(node, InfoRequest::Table(request)).await? {
            InfoReply::Table(reply) => Ok(reply),
            other => Err(unexpected_info(node, other)),
        }
    }

    /// Write table `table` of `node` to the backup file `path` on that
    /// node's file system (`molt table backup`): (log index, records).
    pub async fn table_backup(
        &self,
        node: &str,
        table: &str,
        path: &Path,
    ) -> Result<Result<(u64, u64), String>, RequestError> {
        if self.is_here(node) {
            let done = self.node.tables().backup(table, path);
            return Ok(crate::table::Covered::summary(done));
        }
        let request = InfoRequest::TableBackup {
            table: table.to_string(),
            path: path.display().to_string(),
        };
        match self.info(node, request).await? {
            InfoReply::Backup(done) => Ok(done),
            other => Err(unexpected_info(node, other)),
        }
    }

    /// Write every table `node` keeps (local tables, and its replicas of
    /// replicated ones) to backup files in directory `path` on `node`'s
    /// file system, each consistent at its own log index; per table, the
    /// index and records, or why not (a replicated table `node` keeps no
    /// replica of included).
    pub async fn table_backup_all(
        &self,
        node: &str,
        path: &Path,
    ) -> Result<Vec<crate::table::backup::TableSummary>, RequestError> {
        if self.is_here(node) {
            let done = self.node.tables().backup_all(path);
            return Ok(crate::table::Covered::summaries(done));
        }
        let request = InfoRequest::TableBackupAll {
            path: path.display().to_string(),
        };
        match self.info(node, request).await? {
            InfoReply::BackupAll(done) => Ok(done),
            other => Err(unexpected_info(node, other)),
        }
    }

    /// Load every backup file in directory `path` on `node`'s file system
    /// into the table it is a backup of (created if absent); per table,
    /// the index and records, or why not.
    pub async fn table_restore_all(
        &self,
        node: &str,
        path: &Path,
    ) -> Result<Vec<crate::table::backup::TableSummary>, RequestError> {
        if self.is_here(node) {
            let done = self.node.table_restore_all(path).await;
            return Ok(crate::table::Covered::summaries(done));
        }
        let request = InfoRequest::TableRestoreAll {
            path: path.display().to_string(),
        };
        match self.info(node, request).await? {
            InfoReply::BackupAll(done) => Ok(done),
            other => Err(unexpected_info(node, other)),
        }
    }

    /// `node`'s replica of replicated table `table` and its group, as
    /// `node` sees them; none if it keeps no replica of it.
    pub async fn table_replica(
        &self,
        node: &str,
        table: &str,
    ) -> Result<Option<crate::table::ReplicaStatus>, RequestError> {
        if self.is_here(node) {
            return Ok(self.node.tables().replica_status(table));
        }
        match self
            .info(node, InfoRequest::TableReplica(table.to_string()))
            .await?
        {
            InfoReply::TableReplica(status) => Ok(status),
            other => Err(unexpected_info(node, other)),
        }
    }

    /// Why `node`'s replica of replicated table `table` cannot start, if
    /// it cannot (it is tried again by itself).
    pub async fn replica_failure(
        &self,
        node: &str,
        table: &str,
    ) -> Result<Option<String>, RequestError> {
        if self.is_here(node) {
            return Ok(self.node.tables().replica_failure(table));
        }
        match self
            .info(node, InfoRequest::ReplicaFailure(table.to_string()))
            .await?
        {
            InfoReply::ReplicaFailure(why) => Ok(why),
            other => Err(unexpected_info(node, other)),
        }
    }

    /// The disc table files of `node` that did not load at its start, with
    /// why (`molt tables` shows them).
    pub async fn table_failures(&self, node: &str) -> Result<Vec<(String, String)>, RequestError> {
        if self.is_here(node) {
            return Ok(table_failures(&self.node));
        }
        match self.info(node, InfoRequest::TableFailures).await? {
            InfoReply::TableFailures(failed) => Ok(failed),
            other => Err(unexpected_info(node, other)),
        }
    }

    /// Load the backup file `path` on `node`'s file system into its table
    /// `table` (`molt table restore`): (log index, records).
    pub async fn table_restore(
        &self,
        node: &str,
        table: &str,
        path: &Path,
        rename: bool,
    ) -> Result<Result<(u64, u64), String>, RequestError> {
        if self.is_here(node) {
            let done = self.node.table_restore(table, path, rename).await;
            return Ok(crate::table::Covered::summary(done));
        }
        let request = InfoRequest::TableRestore {
            table: table.to_string(),
            path: path.display().to_string(),
            rename,
        };
        match self.info(node, request).await? {
            InfoReply::Backup(done) => Ok(done),
            other => Err(unexpected_info(node, other)),
        }
    }

    /// The visible nodes `node` is connected to (`molt nodes`). Their
    /// addresses are learnt too, so this node (hidden, say) can reach them.
    pub async fn nodes(&self, node: &str) -> Result<Vec<String>, RequestError> {
        let nodes = if self.is_here(node) {
            match self.distribution() {
                Some(dist) => dist.nodes_with_addresses(),
                None => Vec::new(),
            }
        } else {
            match self.info(node, InfoRequest::Nodes).await? {
                InfoReply::Nodes(nodes) => nodes,
                other => return Err(unexpected_info(node, other)),
            }
        };
        if let Some(dist) = self.distribution() {
            for (name, addr) in &nodes {
                if let Ok(addr) = addr.parse() {
                    dist.learn_address(name, addr);
                }
            }
        }
        Ok(nodes.into_iter().map(|(name, _)| name).collect())
    }

    async fn info(&self, node: &str, request: InfoRequest) -> Result<InfoReply, RequestError> {
        let cluster = self.cluster(node)?;
        cluster
            .info
            .call(node, &request)
            .await
            .map_err(|e| match e {
                // Questions about nodes and processes do not fail there.
                CallError::Remote(e) => RequestError::MalformedReply {
                    node: node.to_string(),
                    service: "info",
                    why: format!("answered a question with {e}"),
                },
                CallError::Request(e) => e,
            })
    }

    /// Run a code request on `node`: here if it is this node, else on that
    /// node over its connection.
    async fn code(&self, node: &str, op: CodeOp) -> Result<CodeAnswer, CodeError> {
        if self.is_here(node) {
            return Ok(self.code.run(op).await?);
        }
        let cluster = self.cluster(node).map_err(RequestError::from)?;
        let config = cluster.dist.config();
        let timeout = match &op {
            CodeOp::Sys { timeout_ms, .. } => {
                Duration::from_millis((*timeout_ms).min(SYS_TIMEOUT_MS_MAX))
                    + config.request_timeout
            }
            _ => config.code_request_timeout,
        };
        Ok(cluster.code.call_within(node, timeout, &op).await?)
    }

    /// Load module bytes on `node` with the default options (soft purge,
    /// eager upgrade); loading the current bytes again changes nothing.
    /// Returns the module's name and version there. `name` names a module
    /// without a `molt.module` section.
    pub async fn load_on(
        &self,
        node: &str,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<(String, String), CodeError> {
        let switched = self
            .load_on_with(node, name, bytes, LoadOptions::default())
            .await?;
        Ok((switched.module, switched.version))
    }

    /// Load module bytes on `node` alone, as `options` say.
    pub async fn load_on_with(
        &self,
        node: &str,
        name: &str,
        bytes: Vec<u8>,
        options: LoadOptions,
    ) -> Result<Switched, CodeError> {
        let op = CodeOp::Load {
            name: name.to_string(),
            bytes,
            options: options.into(),
        };
        match self.code(node, op).await? {
            CodeAnswer::Switched(s) => Ok(s),
            other => Err(unexpected(node, "a load", other)),
        }
    }

    /// Phase one of a cluster-wide load, on one node: compile, check that
    /// installing with `purge` would switch now, and stage the version for
    /// [`commit_on`](Self::commit_on).
    pub async fn prepare_on(
        &self,
        node: &str,
        name: &str,
        bytes: Vec<u8>,
        purge: Purge,
    ) -> Result<Prepared, CodeError> {
        let op = CodeOp::Prepare {
            name: name.to_string(),
            bytes,
            purge: purge.into(),
        };
        match self.code(node, op).await? {
            CodeAnswer::Prepared(p) => Ok(p),
            other => Err(unexpected(node, "a prepare", other)),
        }
    }

    /// Phase two, on one node: make the staged version with `hash` current.
    pub async fn commit_on(
        &self,
        node: &str,
        hash: &str,
        options: LoadOptions,
    ) -> Result<Switched, CodeError> {
        let op = CodeOp::Commit {
            hash: hash.to_string(),
            options: options.into(),
        };
        match self.code(node, op).await? {
            CodeAnswer::Switched(s) => Ok(s),
            other => Err(unexpected(node, "a commit", other)),
        }
    }

    /// Drop the version staged on `node` with `hash`; whether there was
    /// one.
    pub async fn abort_on(&self, node: &str, hash: &str) -> Result<bool, CodeError> {
        let op = CodeOp::Abort {
            hash: hash.to_string(),
        };
        match self.code(node, op).await? {
            CodeAnswer::Aborted(staged) => Ok(staged),
            other => Err(unexpected(node, "an abort", other)),
        }
    }

    /// The modules of `node` and its recent code events (`molt modules`).
    pub async fn modules_of(&self, node: &str) -> Result<ModuleReport, CodeError> {
        match self.code(node, CodeOp::Modules).await? {
            CodeAnswer::Modules(modules, events) => Ok(ModuleReport {
                modules: modules.into_iter().map(Into::into).collect(),
                events: events.into_iter().map(Into::into).collect(),
            }),
            other => Err(unexpected(node, "a module list", other)),
        }
    }

    /// Purge the old version of `module` on `node`: kill its processes, or
    /// with `soft` refuse if it has any.
    pub async fn purge_on(
        &self,
        node: &str,
        module: &str,
        soft: bool,
    ) -> Result<Purged, CodeError> {
        let op = CodeOp::Purge {
            module: module.to_string(),
            soft,
        };
        match self.code(node, op).await? {
            CodeAnswer::Purged(p) => Ok(p),
            other => Err(unexpected(node, "a purge", other)),
        }
    }

    /// Make the current version of `module` on `node` old (Erlang's
    /// `delete`); returns that version, `None` if there was no current.
    pub async fn delete_on(&self, node: &str, module: &str) -> Result<Option<String>, CodeError> {
        let op = CodeOp::Delete {
            module: module.to_string(),
        };
        match self.code(node, op).await? {
            CodeAnswer::Deleted(version) => Ok(version),
            other => Err(unexpected(node, "a delete", other)),
        }
    }

    /// Suspend, resume or upgrade processes of `node`; one result per pid,
    /// each within `timeout` (at most [`SYS_TIMEOUT_MS_MAX`] ms).
    pub async fn sys_on(
        &self,
        node: &str,
        op: SysOp,
        pids: Vec<Pid>,
        timeout: Duration,
    ) -> Result<Vec<Result<SysOutcome, SysError>>, CodeError> {
        let request = CodeOp::Sys {
            op: op.into(),
            pids,
            timeout_ms: timeout.as_millis() as u64,
        };
        match self.code(node, request).await? {
            CodeAnswer::Sys(results) => Ok(results.into_iter().map(Into::into).collect()),
            other => Err(unexpected(node, "a system request", other)),
        }
    }

    /// Connect to `name@host:port` (and, through it, to the rest of its
    /// cluster).
    pub async fn join(&self, address: &str) -> Result<(), ConnectError> {
        self.cluster(address)?.dist.join(address).await
    }

    /// Erlang's `net_adm:ping`: whether `node` answers, and how fast.
    pub async fn ping(&self, node: &str) -> Result<Duration, RequestError> {
        if self.is_here(node) {
            return Ok(Duration::ZERO);
        }
        self.cluster(node)?.dist.ping(node).await
    }

    /// Spawn `module` on `node` with init arguments `args` (neither linked
    /// nor monitored).
    pub async fn spawn(&self, node: &str, module: &str, args: Vec<u8>) -> Result<Pid, SpawnError> {
        let mut mailbox = self.node.mailbox()?;
        if self.is_here(node) {
            return mailbox
                .spawn(module, args, false, false)
                .map(|(pid, _)| pid);
        }
        let cluster = self
            .cluster(node)
            .map_err(|e| SpawnError::NoConnection(e.to_string()))?;
        let (pid, _) = cluster
            .dist
            .spawn_from(&mut mailbox, node, module, args, false, false)
            .await?;
        Ok(pid)
    }

    /// Send `payload` with `tag` to the process registered as `name` on
    /// `node`, and wait until it has been delivered there; a name nobody
    /// holds is an error.
    pub async fn send_named(
        &self,
        node: &str,
        name: &str,
        tag: u32,
        payload: Vec<u8>,
    ) -> Result<(), SendNamedError> {
        let mut mailbox = self.node.mailbox()?;
        if self.is_here(node) {
            let to = self
                .node
                .whereis(name)
                .ok_or_else(|| SendNamedError::NotRegistered(name.to_string()))?;
            mailbox.send(to, tag, molt_abi::Ref::NONE, payload)?;
            return Ok(());
        }
        let cluster = self.cluster(node)?;
        let request = InfoRequest::SendNamed {
            from: mailbox.pid(),
            name: name.to_string(),
            tag,
            payload,
        };
        match cluster.info.call(node, &request).await {
            Ok(InfoReply::Sent) => {}
            Ok(other) => return Err(unexpected_info(node, other).into()),
            Err(CallError::Remote(InfoError::NotRegistered(name))) => {
                return Err(SendNamedError::NotRegistered(name));
            }
            Err(CallError::Remote(InfoError::NotDelivered(why))) => {
                return Err(SendNamedError::NotDelivered(why));
            }
            Err(CallError::Request(e)) => return Err(e.into()),
        }
        Ok(())
    }

    /// Close this node's connections and wait (briefly) until the peers
    /// know: the last step of a short-lived node such as the CLI's.
    pub async fn disconnect(&self) {
        if let Some(dist) = self.distribution() {
            dist.stop().await;
        }
    }

    /// How to reach `node`, another node: not at all for a node alone.
    fn cluster(&self, node: &str) -> Result<&Cluster, ConnectError> {
        self.cluster
            .as_ref()
            .ok_or_else(|| ConnectError::UnknownNode(node.to_string()))
    }

    /// Watch `dir` for `.wasm` files and load each on this node as it is
    /// created or rewritten (see [`watch`]).
    pub fn watch(&self, dir: &Path) -> Result<watch::Watcher, watch::WatchError> {
        watch::watch(self.node.clone(), dir)
    }
}

/// Why a named send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendNamedError {
    /// No process has the name.
    #[error("no process is registered as `{0}`")]
    NotRegistered(String),
    /// The message could not be sent.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The other node refused the message; the text says why.
    #[error("not delivered: {0}")]
    NotDelivered(String),
    /// The node could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The node did not confirm delivery.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// This node is stopping or at its process limit.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

fn unexpected(node: &str, what: &'static str, answer: CodeAnswer) -> CodeError {
    CodeError::Unexpected {
        node: node.to_string(),
        what,
        answer: format!("{answer:?}"),
    }
}

fn unexpected_info(node: &str, answer: InfoReply) -> RequestError {
    RequestError::MalformedReply {
        node: node.to_string(),
        service: "info",
        why: format!("answered {answer:?}"),
    }
}

/// `node`'s disc table files that did not load, as (file, why).
pub(crate) fn table_failures(node: &Node) -> Vec<(String, String)> {
    node.tables()
        .failed()
        .iter()
        .map(|(path, why)| (path.display().to_string(), why.clone()))
        .collect()
}
