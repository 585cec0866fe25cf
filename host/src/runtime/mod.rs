//! The local process runtime: processes, mailboxes, signals, links,
//! monitors, names, timers and limits.
//!
//! Invariant: the runtime knows nothing about the network. A pid of another
//! node (or of an earlier incarnation of this one) names no live process
//! here: signals to it are handled as signals to a dead process.

pub(crate) mod backpressure;
mod cell;
mod core;
pub mod counters;
mod guest;
mod guest_mem;
mod host_fns;
mod host_fns_dist;
mod host_fns_global;
mod host_fns_pg;
mod host_fns_table;
mod mailbox;
mod payload;
mod pg;
mod registry;
mod sched;
pub(crate) use sched::{run_woken_here, start_elsewhere};
mod table;
mod timers;
mod upgrade;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use molt_abi::{Pid, Ref, reason};
use sha2::{Digest, Sha256};
use wasmtime::{Engine, Linker};

pub use self::cell::{Message, Reason};
pub use self::payload::{PAYLOAD_INLINE_MAX, Payload};

pub use self::core::Filter;
pub(crate) use self::guest::ProcState;
pub use self::mailbox::HostMailbox;
pub use self::pg::PgError;
pub(crate) use self::pg::{Membership, PgChange};
pub use self::registry::RegisterError;
pub use self::upgrade::{SysError, SysOp, SysOutcome};

pub(crate) use self::backpressure::Wait;
use self::cell::ProcessCell;
pub(crate) use self::cell::Signal;
use self::pg::ProcessGroups;
use self::registry::Registry;
use self::table::ProcessTable;
use self::timers::Timers;
use crate::code::{CodeServer, Linked, PreLink};
use crate::config::NodeConfig;
use crate::engine::{self, EngineError};

/// A boxed future, for the router's requests.
pub(crate) type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Reaches other nodes. The distribution layer implements it; a node
/// without one treats every non-local pid and node name as unreachable.
/// Nothing in it names a transport.
pub(crate) trait Router: Send + Sync {
    /// Deliver `signal` from `from` to `to`, a pid of another node.
    /// `Ok(Some(wait))` when the signal left its connection over its
    /// bound: a guest sender is suspended on `wait` (the others drop it).
    fn route(&self, from: Pid, to: Pid, signal: Signal) -> Result<Option<Wait>, Undelivered>;
    /// If the lane of (`from`, `to`), a pid of another node, is past its
    /// bound now, what to wait on for room; senders that cannot be
    /// suspended (host code) refuse to queue more there.
    fn congested(&self, from: Pid, to: Pid) -> Option<Wait>;
    /// This node's name as the cluster knows it.
    fn node_name(&self) -> String;
    /// Names of the connected visible nodes, sorted.
    fn nodes(&self) -> Vec<String>;
    /// Send to the process registered as `name` on `node`, connecting
    /// first if needed.
    fn send_named(
        &self,
        from: Pid,
        node: &str,
        name: &str,
        message: Message,
    ) -> BoxFuture<Result<(), Undelivered>>;
    /// Spawn on `node`, optionally linked to and/or monitored (with the
    /// reference) by `parent`. The caller records its own half of the
    /// link or monitor.
    fn spawn_on(
        &self,
        parent: Pid,
        node: &str,
        module: &str,
        args: Vec<u8>,
        link: bool,
        monitor: Option<Ref>,
    ) -> BoxFuture<Result<Pid, SpawnError>>;
    /// Connect if needed and exchange a ping: whether `node` answered.
    fn ping(&self, node: &str) -> BoxFuture<bool>;
    /// Start (`on`) or stop delivering `NODEDOWN` for `node` to `watcher`.
    fn monitor_node(&self, node: &str, watcher: Pid, on: bool);
}

/// Who hears of changes to this node's own process-group memberships (the
/// network layer, to tell other nodes). Like [`Router`], it names no
/// transport.
pub(crate) trait PgObserver: Send + Sync {
    /// A local process joined or left a process group, or ended with
    /// memberships. Called with the node's process groups locked, so
    /// changes are observed in the order they happen and none slips
    /// between a change and [`NodeInner::pg_with_local`].
    fn changed(&self, change: PgChange<'_>);
}

/// Who hears that a local process ended (the coordination group, which
/// frees what the process held cluster-wide). Called after the process is
/// gone from the process table, so a check of liveness made after
/// recording a holder cannot miss an end.
pub(crate) trait ExitObserver: Send + Sync {
    /// `pid`, a process of this node, ended.
    fn exited(&self, pid: Pid);
}

/// The cluster's coordination group as the guests' host functions reach
/// it (cluster names, locks, elections). Like [`Router`], it names no
/// transport, and errors arrive as ABI status codes.
pub(crate) trait Coordinator: Send + Sync {
    /// Run a call that needs the group.
    fn call(&self, call: GlobalCall) -> BoxFuture<Result<GlobalAnswer, GlobalRefusal>>;
    /// The holder of a cluster name on this node's replica.
    fn whereis(&self, name: &str) -> Option<Pid>;
    /// The leader of an election and its term on this node's replica.
    fn leader(&self, group: &str) -> Option<(Pid, u64)>;
}

/// A guest's call to the coordination group.
#[derive(Debug)]
pub(crate) enum GlobalCall {
    Register {
        name: String,
        pid: Pid,
    },
    Unregister {
        name: String,
        pid: Pid,
    },
    Whereis {
        name: String,
    },
    /// Locks: (id, shared).
    Lock {
        pid: Pid,
        locks: Vec<(String, bool)>,
        timeout: std::time::Duration,
    },
    Unlock {
        lock: String,
        pid: Pid,
    },
    Elect {
        group: String,
        pid: Pid,
    },
    Resign {
        group: String,
        pid: Pid,
    },
}

/// What a [`GlobalCall`] gave.
#[derive(Debug)]
pub(crate) enum GlobalAnswer {
    Done,
    Pid(Option<Pid>),
    Tokens(Vec<u64>),
    Leader(Pid, u64),
}

/// Why a [`GlobalCall`] failed: an ABI status, and the holder for
/// `ALREADY_REGISTERED`.
#[derive(Debug)]
pub(crate) struct GlobalRefusal {
    pub status: i32,
    pub holder: Option<Pid>,
}

/// Why a signal could not be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Undelivered {
    /// The target process does not exist.
    NoProc,
    /// The target's node cannot be reached.
    NoConnection,
}

impl Undelivered {
    /// The exit reason that stands for it (`noproc`, `noconnection`).
    pub fn reason(&self) -> &'static str {
        match self {
            Undelivered::NoProc => reason::NOPROC,
            Undelivered::NoConnection => reason::NOCONNECTION,
        }
    }
}

/// Why a spawn failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SpawnError {
    /// No module of that name is loaded (Erlang's `undef`).
    #[error("undef: no module named `{0}` is loaded")]
    NoModule(String),
    /// The target node cannot be reached, refused us, or did not answer.
    #[error("noconnection: {0}")]
    NoConnection(String),
    /// `processes_max` processes are alive.
    #[error("node runs processes_max ({0}) processes already")]
    ProcessLimit(u32),
    /// Init arguments larger than `message_bytes_max`.
    #[error("init arguments are {size} bytes, larger than message_bytes_max ({max})")]
    ArgsTooLarge {
        /// Their size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// Why a send failed. Sending to a dead process is not an error.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Payload larger than `message_bytes_max`.
    #[error("message is {size} bytes, larger than message_bytes_max ({max})")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The receiver has `mailbox_len_max` messages waiting.
    #[error("receiver's mailbox holds mailbox_len_max ({0}) messages")]
    MailboxFull(usize),
    /// A tag reserved for the host.
    #[error("tag {0:#x} is reserved for the host")]
    ReservedTag(u32),
    /// No process is registered under the name.
    #[error("no process is registered as `{0}`")]
    NotRegistered(String),
    /// The connection to the receiver's node holds `lane_bytes_max` bytes
    /// already: a sender outside any process is refused rather than
    /// queueing without bound (wait with `HostMailbox::send_when_room`).
    /// Guests never see it: they are suspended until there is room.
    #[error("the connection to the receiver's node is full (lane_bytes_max); not sent")]
    Congested,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The engine could not be built.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A host function could not be linked (a bug).
    #[error("linking host functions: {0:#}")]
    Link(wasmtime::Error),
    /// Not called from within a tokio runtime.
    #[error("a node must be started from within a tokio runtime")]
    NoRuntime,
    /// The process scheduler's threads could not be started.
    #[error("cannot start the process scheduler's threads: {0}")]
    Threads(std::io::Error),
}

/// Counters a node keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Processes alive now (guests and host mailboxes).
    pub alive: u32,
    /// Processes spawned since start.
    pub spawned: u64,
    /// Behaviour processes whose `molt_init` returned.
    pub initialized: u64,
    /// Processes that ended.
    pub exited: u64,
    /// Behaviours hibernating now (see `NodeConfig::hibernate_after`).
    pub hibernated: u64,
}

/// One live process, as `ps` shows it.
#[derive(Clone, Debug)]
pub struct ProcessInfo {
    /// Its pid.
    pub pid: Pid,
    /// Module name and version (`None` for host mailboxes).
    pub module: Option<(String, String)>,
    /// Messages waiting.
    pub mailbox_len: usize,
    /// Registered name.
    pub name: Option<String>,
    /// Linear memory, in bytes.
    pub memory_bytes: usize,
    /// Suspended (see [`Node::suspend`]).
    pub suspended: bool,
    /// Hibernating (see `NodeConfig::hibernate_after`): it holds no
    /// instance until its next message.
    pub hibernated: bool,
    /// Why its last move to a new version failed (it stays on the one
    /// shown), if it did.
    pub upgrade_failure: Option<String>,
    /// Messages it took from its mailbox.
    pub messages_in: u64,
    /// Messages it sent.
    pub messages_out: u64,
    /// Time its guest ran, in ns.
    pub cpu_ns: u64,
    /// The process that spawned it linked, if one did.
    pub parent: Option<Pid>,
    /// Its instance runs the baseline compiler's code (until its next
    /// message after the optimised code is ready; see
    /// `NodeConfig::baseline_compile`).
    pub baseline_code: bool,
}

impl ProcessInfo {
    /// `suspended`, `hibernated` or `running`, as `ps` and the API show it.
    pub fn status(&self) -> &'static str {
        match (self.suspended, self.hibernated) {
            (true, _) => "suspended",
            (false, true) => "hibernated",
            (false, false) => "running",
        }
    }

    fn of(cell: &ProcessCell, registry: &Registry) -> ProcessInfo {
        let c = &cell.counters;
        ProcessInfo {
            pid: cell.pid,
            module: cell
                .version()
                .map(|m| (m.identity.name.clone(), m.identity.version.clone())),
            mailbox_len: cell.mailbox_messages(),
            name: registry.name_of(cell.pid).map(str::to_string),
            memory_bytes: cell.memory_bytes.load(Ordering::Relaxed),
            suspended: cell.suspended.load(Ordering::Relaxed),
            hibernated: cell.hibernated.load(Ordering::Relaxed),
            upgrade_failure: cell
                .upgrade_failure
                .lock()
                .expect("upgrade failure poisoned")
                .clone(),
            messages_in: c.messages_in.load(Ordering::Relaxed),
            messages_out: c.sent_total(),
            cpu_ns: c.cpu_ns.load(Ordering::Relaxed),
            parent: cell.parent,
            baseline_code: cell.baseline_code.load(Ordering::Relaxed),
        }
    }
}

/// The order of a process listing ([`Node::top_processes`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessOrder {
    /// By pid (spawn order on a node).
    #[default]
    Pid,
    /// Most memory first.
    Memory,
    /// Longest mailbox first.
    Mailbox,
    /// Most messages (in and out) first.
    Messages,
    /// Most time run first.
    Cpu,
}

/// The processes of one module version ([`Node::by_version`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionTotals {
    /// The module.
    pub module: String,
    /// The version.
    pub version: String,
    /// Processes running it.
    pub processes: u64,
    /// Their linear memory, in bytes.
    pub memory_bytes: u64,
    /// Messages waiting in their mailboxes.
    pub mailbox_messages: u64,
}

/// The first processes of a node in some order ([`Node::top_processes`]).
#[derive(Clone, Debug, Default)]
pub struct TopProcesses {
    /// Processes alive.
    pub total: u64,
    /// Of those, the ones the search matched.
    pub matched: u64,
    /// The first of them, in the order asked.
    pub processes: Vec<ProcessInfo>,
}

/// Most mailbox messages an inspection describes.
pub const MAILBOX_PREVIEW_MAX: usize = 100;

/// Bytes of a message's payload an inspection shows.
pub const MESSAGE_PREVIEW_BYTES: usize = 64;

/// How long an inspection waits for the process to answer (it answers
/// where it applies signals: at its next receive, or at its next
/// timeslice if it is running).
pub const INSPECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One live process in detail (`/api/processes/PID`).
#[derive(Clone, Debug)]
pub struct ProcessDetail {
    /// What `ps` shows of it.
    pub info: ProcessInfo,
    /// What it holds, as it answered; `None` if it did not answer within
    /// [`INSPECT_TIMEOUT`] (a host mailbox nobody reads, say).
    pub inspected: Option<Inspected>,
}

/// What a process holds, as it answers an inspection.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Inspected {
    /// Its links.
    pub links: Vec<Pid>,
    /// Monitors it holds: reference and the process watched.
    pub monitors: Vec<(Ref, Pid)>,
    /// Processes monitoring it.
    pub monitored_by: Vec<Pid>,
    /// It traps exits.
    pub trap_exit: bool,
    /// The head of its mailbox, as asked.
    pub messages: Vec<MessagePreview>,
}

/// A mailbox message, described.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessagePreview {
    /// Its tag.
    pub tag: u32,
    /// Its payload's size.
    pub bytes: u64,
    /// The first [`MESSAGE_PREVIEW_BYTES`] of the payload: as text if they
    /// are printable UTF-8, else in hex; `…` marks a cut.
    pub preview: String,
}

impl MessagePreview {
    fn of(m: &Message) -> MessagePreview {
        let head = &m.payload[..m.payload.len().min(MESSAGE_PREVIEW_BYTES)];
        let mut preview = match std::str::from_utf8(head) {
            Ok(text) if text.chars().all(|c| !c.is_control() || c == '\n') => text.to_string(),
            _ => head.iter().map(|b| format!("{b:02x}")).collect(),
        };
        if head.len() < m.payload.len() {
            preview.push('…');
        }
        MessagePreview {
            tag: m.tag,
            bytes: m.payload.len() as u64,
            preview,
        }
    }
}

pub(crate) struct NodeInner {
    pub config: NodeConfig,
    pub engine: Engine,
    /// Freed pool slots keep their processes' touched pages
    /// ([`engine::keeps_pages`], decided once at start).
    keeps_pages: bool,
    pub code: CodeServer,
    /// This node's half of every pid: name hash.
    pub node_id: u64,
    pub incarnation: u64,
    next_serial: AtomicU64,
    next_ref: AtomicU64,
    alive: AtomicU32,
    /// Woken whenever a process ends (shutdown waits on it).
    ended: tokio::sync::Notify,
    spawned: AtomicU64,
    pub initialized: AtomicU64,
    /// Behaviours hibernating now.
    pub hibernated: AtomicU64,
    exited: AtomicU64,
    table: ProcessTable,
    pub registry: Mutex<Registry>,
    /// Process groups, local and remote members.
    pg: Mutex<ProcessGroups>,
    pub timers: Timers,
    pub started: Instant,
    pub runtime: tokio::runtime::Handle,
    /// The node's own process scheduler (`process_threads` > 0); `None`:
    /// processes are tokio tasks.
    sched: Option<sched::Scheduler>,
    ticker_stop: Arc<AtomicBool>,
    /// Set once, when the node joins a cluster.
    router: std::sync::OnceLock<Arc<dyn Router>>,
    /// Set once, when the node joins a cluster.
    pg_observer: std::sync::OnceLock<Arc<dyn PgObserver>>,
    /// Set once, when the node joins a coordination group.
    exit_observer: std::sync::OnceLock<Arc<dyn ExitObserver>>,
    /// Set once, when the node joins a coordination group.
    coordinator: std::sync::OnceLock<Arc<dyn Coordinator>>,
    /// The node's tables (`table_call`).
    pub tables: crate::table::Tables,
    /// What its processes did (see [`counters`]).
    pub counters: counters::NodeCounters,
}

/// A running node. Cheap to clone; the node stops when the last clone is
/// dropped and its processes have ended.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

/// The host functions, as the code server links new modules against them.
struct HostLinker(Linker<ProcState>);

impl PreLink for HostLinker {
    fn pre_link(&self, module: &wasmtime::Module) -> Result<Linked, wasmtime::Error> {
        Ok(Arc::new(self.0.instantiate_pre(module)?))
    }
}

/// A [`Node`] that may have stopped.
#[derive(Clone)]
pub(crate) struct WeakNode(std::sync::Weak<NodeInner>);

impl WeakNode {
    /// The node, if it still runs.
    pub fn upgrade(&self) -> Option<Node> {
        self.0.upgrade().map(Node::from_inner)
    }
}

/// The node part of the pids of a node named `name`.
pub fn node_id(name: &str) -> u64 {
    let digest = Sha256::digest(name.as_bytes());
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

impl Node {
    /// Start a node on the current tokio runtime. `processes_max` may be
    /// lowered to fit the kernel's `vm.max_map_count` (see
    /// [`engine::fit_map_count`]); [`Node::config`] shows what was used.
    pub fn start(mut config: NodeConfig) -> Result<Node, StartError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        let map_count = engine::fit_map_count(&mut config);
        map_count.log();
        let keeps_pages = engine::keeps_pages(&config);
        let engine = engine::build(&config, keeps_pages)?;
        if config.pool_keep_resident_bytes > 0 && !keeps_pages {
            tracing::info!(
                "freed pool slots give every page back: this kernel has no PAGEMAP_SCAN (Linux 6.7)"
            );
        }
        let mut linker = Linker::new(&engine);
        host_fns::register(&mut linker).map_err(StartError::Link)?;
        let baseline = match engine::build_baseline(&config)? {
            Some(quick) => {
                let mut linker = Linker::new(&quick);
                host_fns::register(&mut linker).map_err(StartError::Link)?;
                let linker: Arc<dyn PreLink> = Arc::new(HostLinker(linker));
                Some((quick, linker))
            }
            None => None,
        };
        let mut engines = vec![engine.clone()];
        engines.extend(baseline.as_ref().map(|(quick, _)| quick.clone()));
        let code = CodeServer::new(
            engine.clone(),
            Arc::new(HostLinker(linker)),
            baseline,
            config.optimise_queue_max,
            config.module_bytes_max,
            config.modules_max,
            config.compiled_cache_max,
        );
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).expect("the OS random generator failed");
        let sched = match config.process_threads {
            0 => None,
            n => Some(
                sched::Scheduler::start(n, config.spin_before_park, &runtime)
                    .map_err(StartError::Threads)?,
            ),
        };
        let ticker_stop = engine::start_ticker(&engines, config.timeslice);
        if config.process_counters {
            guest::calibrate_cpu_clock();
        }
        let pg = ProcessGroups::new(config.pg_groups_max, config.pg_memberships_max);
        let tables = crate::table::Tables::new(config.tables.clone(), config.data_dir.as_deref());
        let inner = NodeInner {
            node_id: node_id(&config.name),
            incarnation: u64::from_le_bytes(random) | 1,
            timers: Timers::new(config.timers_max),
            config,
            engine,
            keeps_pages,
            code,
            next_serial: AtomicU64::new(1),
            next_ref: AtomicU64::new(1),
            alive: AtomicU32::new(0),
            ended: tokio::sync::Notify::new(),
            spawned: AtomicU64::new(0),
            initialized: AtomicU64::new(0),
            hibernated: AtomicU64::new(0),
            exited: AtomicU64::new(0),
            table: ProcessTable::new(),
            registry: Mutex::new(Registry::default()),
            pg: Mutex::new(pg),
            started: Instant::now(),
            runtime,
            sched,
            ticker_stop,
            router: std::sync::OnceLock::new(),
            pg_observer: std::sync::OnceLock::new(),
            exit_observer: std::sync::OnceLock::new(),
            coordinator: std::sync::OnceLock::new(),
            tables,
            counters: counters::NodeCounters::default(),
        };
        Ok(Node {
            inner: Arc::new(inner),
        })
    }

    pub(crate) fn inner(&self) -> Arc<NodeInner> {
        self.inner.clone()
    }

    pub(crate) fn from_inner(inner: Arc<NodeInner>) -> Node {
        Node { inner }
    }

    /// A handle that does not keep the node alive (for what the node's own
    /// parts hold, so no cycle keeps it running).
    pub(crate) fn downgrade(&self) -> WeakNode {
        WeakNode(Arc::downgrade(&self.inner))
    }

    /// What the node was started with (after fitting to the kernel).
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// The node's modules.
    pub fn code(&self) -> &CodeServer {
        &self.inner.code
    }

    /// Spawn a process running the current version of `module` with init
    /// argument bytes `args`.
    pub fn spawn(&self, module: &str, args: Vec<u8>) -> Result<Pid, SpawnError> {
        self.inner.spawn(module, args, None, None)
    }

    /// Bytes that freed pool slots keep resident for the next process
    /// (`NodeConfig::pool_keep_resident_bytes`): memory no live process
    /// uses, held so that the next ones take no page faults.
    pub fn pool_resident_bytes(&self) -> u64 {
        self.inner
            .engine
            .pooling_allocator_metrics()
            .map_or(0, |m| {
                (m.unused_memory_bytes_resident() + m.unused_table_bytes_resident()) as u64
            })
    }

    /// Whether freed pool slots keep the pages their processes touched
    /// (`NodeConfig::pool_keep_resident_bytes` above 0 and a kernel with
    /// `PAGEMAP_SCAN`).
    pub fn pool_keeps_pages(&self) -> bool {
        self.inner.keeps_pages
    }

    /// The node's tables: what guests reach through `molt_sdk::table`,
    /// for Rust embedders.
    pub fn tables(&self) -> &crate::table::Tables {
        &self.inner.tables
    }

    /// Run a table request as the node itself (the control layer, an
    /// embedder): as a guest's `table_call`, except that subscriptions
    /// are for processes and are refused.
    pub async fn table(&self, request: molt_abi::table::Request) -> molt_abi::table::Reply {
        use molt_abi::table::{Error, Reply, Request};
        if let Request::Subscribe { .. } | Request::Unsubscribe { .. } = request {
            return Reply::Error(Error::BadRequest(
                "subscriptions are for processes".to_string(),
            ));
        }
        let answer = self.inner.tables.call(&self.inner, Pid::default(), request);
        answer.reply().await
    }

    /// Load the backup file `path` into table `name` (see
    /// [`crate::table::Tables::backup`] for writing one): created if
    /// absent, its contents replaced if present; the file must be a backup
    /// of `name` unless `rename`.
    pub async fn table_restore(
        &self,
        name: &str,
        path: &std::path::Path,
        rename: bool,
    ) -> Result<crate::table::Covered, crate::table::BackupError> {
        self.inner
            .tables
            .restore(&self.inner, name, path, rename)
            .await
    }

    /// Load every backup file (`*.moltbak`) in directory `dir` into the
    /// table it is a backup of, as [`table_restore`](Self::table_restore)
    /// does for one; per table, what it covered or why it failed (a file
    /// that is no backup: under its file name).
    pub async fn table_restore_all(
        &self,
        dir: &std::path::Path,
    ) -> Vec<(
        String,
        Result<crate::table::Covered, crate::table::BackupError>,
    )> {
        self.inner.tables.restore_all(&self.inner, dir).await
    }

    /// Open a mailbox: a process driven by host code rather than by a
    /// guest. It can send, receive, link and monitor like any process, and
    /// traps exits. It ends when dropped.
    pub fn mailbox(&self) -> Result<HostMailbox, SpawnError> {
        HostMailbox::open(self.inner.clone())
    }

    /// Deliver a message that `from` (a process of another node) sent,
    /// with the checks and limits of any send.
    pub(crate) fn deliver_from(
        &self,
        from: Pid,
        to: Pid,
        tag: u32,
        payload: Vec<u8>,
    ) -> Result<(), SendError> {
        let message = Message {
            tag,
            reference: Ref::NONE,
            payload: payload.into(),
        };
        self.inner.send_user(from, to, message)
    }

    /// Send a message from outside any process.
    pub fn send(&self, to: Pid, tag: u32, payload: Vec<u8>) -> Result<(), SendError> {
        self.inner.send_user(
            Pid::default(),
            to,
            Message {
                tag,
                reference: Ref::NONE,
                payload: payload.into(),
            },
        )
    }

    /// Send an exit signal from outside any process (`kill` cannot be
    /// trapped).
    pub fn exit(&self, to: Pid, why: &str) {
        let signal = Signal::Exit {
            from: Pid::default(),
            reason: reason::truncate(why).into(),
            linked: false,
        };
        let _ = self.inner.route(Pid::default(), to, signal);
    }

    /// Kill every guest process (reason `killed`; `kill` cannot be trapped)
    /// and wait up to `timeout` for them to end; then write what is queued
    /// for the disc tables and close their files (later commits to them
    /// fail). Returns how many processes are still alive (0 on success).
    /// Host mailboxes stay open until dropped.
    pub async fn shutdown(&self, timeout: std::time::Duration) -> usize {
        let guests: Vec<Pid> = self
            .inner
            .table
            .all()
            .into_iter()
            .filter(|cell| cell.is_guest())
            .map(|cell| cell.pid)
            .collect();
        for pid in &guests {
            self.exit(*pid, reason::KILL);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let alive = loop {
            let ended = self.inner.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let alive = guests.iter().filter(|p| self.is_alive(**p)).count();
            if alive == 0 || tokio::time::Instant::now() >= deadline {
                break alive;
            }
            let _ = tokio::time::timeout_at(deadline, ended).await;
        };
        // Disc tables: what is queued is written, and the files closed.
        self.inner.tables.local().close().await;
        alive
    }

    /// The pid registered under `name`.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.inner
            .registry
            .lock()
            .expect("registry poisoned")
            .whereis(name)
    }

    /// Whether `pid` names a process of this node (this incarnation),
    /// alive or not.
    pub fn is_local(&self, pid: Pid) -> bool {
        self.inner.is_local(pid)
    }

    /// Whether `pid` is a live process of this node.
    pub fn is_alive(&self, pid: Pid) -> bool {
        self.inner.lookup(pid).is_some()
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        self.inner.stats()
    }

    /// How long since the node started.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Every live process.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        let registry = self.inner.registry.lock().expect("registry poisoned");
        let mut all: Vec<_> = self
            .inner
            .table
            .all()
            .into_iter()
            .map(|cell| ProcessInfo::of(&cell, &registry))
            .collect();
        all.sort_by_key(|p| p.pid.serial);
        all
    }

    /// The first `limit` processes in `order`, of those whose pid, module
    /// or registered name contains `search` (all without one). Only the
    /// ones returned are described: a listing of a node of many
    /// processes reads a few numbers of each and sorts those.
    pub fn top_processes(
        &self,
        order: ProcessOrder,
        limit: usize,
        search: Option<&str>,
    ) -> TopProcesses {
        let registry = self.inner.registry.lock().expect("registry poisoned");
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // (key, serial): ascending key is the order asked.
        let mut keys: Vec<(u64, u64)> = Vec::new();
        let mut total = 0u64;
        self.inner.table.for_each(|cell| {
            total += 1;
            if let Some(q) = search
                && !Self::matches(cell, &registry, q)
            {
                return;
            }
            let c = &cell.counters;
            let key = match order {
                ProcessOrder::Pid => 0,
                ProcessOrder::Memory => u64::MAX - cell.memory_bytes.load(Ordering::Relaxed) as u64,
                ProcessOrder::Mailbox => u64::MAX - cell.mailbox_messages() as u64,
                ProcessOrder::Messages => u64::MAX - (load(&c.messages_in) + c.sent_total()),
                ProcessOrder::Cpu => u64::MAX - load(&c.cpu_ns),
            };
            keys.push((key, cell.pid.serial));
        });
        let matched = keys.len() as u64;
        if limit < keys.len() {
            keys.select_nth_unstable(limit);
            keys.truncate(limit);
        }
        keys.sort_unstable();
        let processes = keys
            .into_iter()
            .filter_map(|(_, serial)| self.inner.table.get(serial))
            .map(|cell| ProcessInfo::of(&cell, &registry))
            .collect();
        TopProcesses {
            total,
            matched,
            processes,
        }
    }

    /// Per module version with processes: module, version, processes,
    /// their linear memory and their waiting messages; sorted. One pass
    /// over the process table, nothing per process allocated.
    pub fn by_version(&self) -> Vec<VersionTotals> {
        let mut groups: std::collections::HashMap<
            usize,
            (Arc<crate::code::ModuleVersion>, [u64; 3]),
        > = std::collections::HashMap::new();
        self.inner.table.for_each(|cell| {
            let module = cell.module.lock().expect("cell module poisoned");
            if let Some(v) = module.as_ref() {
                let row = groups
                    .entry(Arc::as_ptr(v) as usize)
                    .or_insert_with(|| (v.clone(), [0; 3]));
                row.1[0] += 1;
                row.1[1] += cell.memory_bytes.load(Ordering::Relaxed) as u64;
                row.1[2] += cell.mailbox_messages() as u64;
            }
        });
        let mut totals: Vec<VersionTotals> = groups
            .into_values()
            .map(
                |(v, [processes, memory_bytes, mailbox_messages])| VersionTotals {
                    module: v.identity.name.clone(),
                    version: v.identity.version.clone(),
                    processes,
                    memory_bytes,
                    mailbox_messages,
                },
            )
            .collect();
        totals.sort_by(|a, b| (&a.module, &a.version).cmp(&(&b.module, &b.version)));
        totals
    }

    fn matches(cell: &ProcessCell, registry: &Registry, q: &str) -> bool {
        let module = cell.module.lock().expect("cell module poisoned");
        module.as_ref().is_some_and(|m| m.identity.name.contains(q))
            || registry.name_of(cell.pid).is_some_and(|n| n.contains(q))
            || cell.pid.to_string().contains(q)
    }

    /// The node's counters: what its processes did since it started
    /// (see [`NodeConfig::process_counters`](crate::NodeConfig)).
    pub fn counted(&self) -> counters::Counted {
        let mut counted = self.inner.counters.snapshot();
        self.inner.table.for_each(|cell| {
            counted.add_live(&cell.counters);
            counted.memory_bytes += cell.memory_bytes.load(Ordering::Relaxed) as u64;
            counted.mailbox_messages += cell.mailbox_messages() as u64;
        });
        counted
    }

    /// A live process of this node in detail, with what it holds (asked
    /// of the process itself, as Erlang's `process_info`) and the first
    /// `messages` messages of its mailbox (at most
    /// [`MAILBOX_PREVIEW_MAX`]). `None` if there is no such process.
    pub async fn inspect(&self, pid: Pid, messages: usize) -> Option<ProcessDetail> {
        let cell = self.inner.lookup(pid)?;
        let info = {
            let registry = self.inner.registry.lock().expect("registry poisoned");
            ProcessInfo::of(&cell, &registry)
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        if cell.push(Signal::Inspect { messages, reply }).is_err() {
            return None;
        }
        drop(cell);
        let inspected = match tokio::time::timeout(INSPECT_TIMEOUT, answer).await {
            Ok(Ok(inspected)) => Some(inspected),
            // It ended meanwhile.
            Ok(Err(_)) => return None,
            Err(_) => None,
        };
        Some(ProcessDetail { info, inspected })
    }

    /// This node's identity: name hash and incarnation, as in its pids.
    pub fn identity(&self) -> (u64, u64) {
        (self.inner.node_id, self.inner.incarnation)
    }

    /// Erlang's `pg:get_members(Scope, Group)`: the members of a process
    /// group on this node and on every connected node, sorted by pid, a
    /// pid once per membership.
    pub fn pg_members(&self, scope: &str, group: &str) -> Vec<Pid> {
        self.inner.pg_members(scope, group, false)
    }

    /// Erlang's `pg:get_local_members(Scope, Group)`: as
    /// [`pg_members`](Self::pg_members), this node's processes only.
    pub fn pg_local_members(&self, scope: &str, group: &str) -> Vec<Pid> {
        self.inner.pg_members(scope, group, true)
    }

    /// Erlang's `pg:which_groups(Scope)`: the groups of `scope` that have
    /// members, sorted.
    pub fn pg_which_groups(&self, scope: &str) -> Vec<String> {
        self.inner.pg_which_groups(scope)
    }
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl NodeInner {
    pub fn make_ref(&self) -> Ref {
        Ref {
            node: self.node_id,
            incarnation: self.incarnation,
            serial: self.next_ref.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn stats(&self) -> NodeStats {
        NodeStats {
            alive: self.alive.load(Ordering::Relaxed),
            spawned: self.spawned.load(Ordering::Relaxed),
            initialized: self.initialized.load(Ordering::Relaxed),
            exited: self.exited.load(Ordering::Relaxed),
            hibernated: self.hibernated.load(Ordering::Relaxed),
        }
    }

    pub fn is_local(&self, pid: Pid) -> bool {
        pid.node == self.node_id && pid.incarnation == self.incarnation
    }

    pub fn lookup(&self, pid: Pid) -> Option<Arc<ProcessCell>> {
        if !self.is_local(pid) {
            return None;
        }
        self.table.get(pid.serial)
    }

    /// The router, if the node is distributed.
    pub fn router(&self) -> Option<&Arc<dyn Router>> {
        self.router.get()
    }

    /// Install the router of the distribution layer; once per node.
    pub fn set_router(&self, router: Arc<dyn Router>) {
        if self.router.set(router).is_err() {
            panic!("a node joins the distribution layer once");
        }
    }

    /// Let guests reach the coordination group; once per node.
    pub fn set_coordinator(&self, coordinator: Arc<dyn Coordinator>) {
        if self.coordinator.set(coordinator).is_err() {
            tracing::warn!("a coordinator is already set; the new one is ignored");
        }
    }

    /// The coordination group, if the node runs one.
    pub fn coordinator(&self) -> Option<&Arc<dyn Coordinator>> {
        self.coordinator.get()
    }

    /// Tell `observer` of every local process's end from now on; once per
    /// node.
    pub fn set_exit_observer(&self, observer: Arc<dyn ExitObserver>) {
        if self.exit_observer.set(observer).is_err() {
            tracing::warn!("an exit observer is already set; the new one is ignored");
        }
    }

    pub fn set_pg_observer(&self, observer: Arc<dyn PgObserver>) {
        if self.pg_observer.set(observer).is_err() {
            panic!("a node joins the distribution layer once");
        }
    }

    /// Deliver a signal from `from` to `to`, on this node or another; with
    /// the wait a congested connection asks of the sender, if any.
    pub fn route(&self, from: Pid, to: Pid, signal: Signal) -> Result<Option<Wait>, Undelivered> {
        if to.node == self.node_id {
            // This node, possibly an earlier incarnation of it: such pids
            // name no live process.
            let Some(cell) = self.lookup(to) else {
                return Err(Undelivered::NoProc);
            };
            // A message routed here (a host-made one such as NODEDOWN) is
            // counted like any other, so that taking it out of the mailbox
            // balances the count. No mailbox limit: it is not a user send.
            let counted = matches!(signal, Signal::Message { .. });
            if counted {
                cell.mailbox_len.fetch_add(1, Ordering::Relaxed);
            }
            return cell.push(signal).map(|()| None).map_err(|_| {
                if counted {
                    cell.mailbox_len.fetch_sub(1, Ordering::Relaxed);
                }
                Undelivered::NoProc
            });
        }
        match self.router.get() {
            Some(router) => router.route(from, to, signal),
            None => Err(Undelivered::NoConnection),
        }
    }

    /// A user message, with the size and mailbox limits. Dropped silently
    /// if the receiver is dead, as in Erlang.
    pub fn send_user(&self, from: Pid, to: Pid, message: Message) -> Result<(), SendError> {
        // A sender that cannot be suspended must not queue past a full
        // connection.
        if self.congested(from, to).is_some() {
            return Err(SendError::Congested);
        }
        self.send_user_waiting(from, to, message).map(|_| ())
    }

    /// What a send from `from` to `to` must wait on before its connection
    /// has room; `None` for a pid of this node or a lane with room.
    pub fn congested(&self, from: Pid, to: Pid) -> Option<Wait> {
        if to.node == self.node_id {
            return None;
        }
        self.router.get()?.congested(from, to)
    }

    /// [`send_user`](Self::send_user), with the wait a congested
    /// connection asks of the sender (a guest is suspended on it).
    pub fn send_user_waiting(
        &self,
        from: Pid,
        to: Pid,
        message: Message,
    ) -> Result<Option<Wait>, SendError> {
        self.check_user(&message)?;
        if to.node != self.node_id {
            // The receiving node applies its own mailbox limit; a message
            // to a node that cannot be reached is dropped, as in Erlang.
            return Ok(self
                .route(from, to, Signal::Message { from, message })
                .unwrap_or(None));
        }
        self.deliver_message(from, to, message).map(|()| None)
    }

    /// What any user message must be: of a user tag, within
    /// `message_bytes_max`.
    fn check_user(&self, message: &Message) -> Result<(), SendError> {
        if !molt_abi::tag::is_user(message.tag) {
            return Err(SendError::ReservedTag(message.tag));
        }
        let max = self.config.message_bytes_max;
        if message.payload.len() > max {
            return Err(SendError::TooLarge {
                size: message.payload.len(),
                max,
            });
        }
        Ok(())
    }

    /// [`send_user_waiting`](Self::send_user_waiting) from a process that
    /// keeps the cell of the local process it last sent to in `last`, so
    /// that a run of sends to one process looks it up in the table once
    /// (a lookup locks a shard and counts a reference on the cell, two
    /// writes to memory other threads share, per message). A cell whose
    /// process has ended refuses the message, as the table would have:
    /// pid serials are never reused, and `last` lets go of such a cell.
    pub(crate) fn send_user_via(
        &self,
        last: &mut Option<Arc<ProcessCell>>,
        from: Pid,
        to: Pid,
        message: Message,
    ) -> Result<Option<Wait>, SendError> {
        if to.node != self.node_id {
            return self.send_user_waiting(from, to, message);
        }
        self.check_user(&message)?;
        if last.as_ref().is_none_or(|cell| cell.pid != to) {
            *last = self.lookup(to);
        }
        let Some(cell) = last.as_ref() else {
            return Ok(None);
        };
        if !self.deliver_to(cell, from, message)? {
            *last = None;
        }
        Ok(None)
    }

    /// A message for a process of this node, with the mailbox limit.
    pub fn deliver_message(&self, from: Pid, to: Pid, message: Message) -> Result<(), SendError> {
        let Some(cell) = self.lookup(to) else {
            return Ok(());
        };
        self.deliver_to(&cell, from, message).map(|_| ())
    }

    /// A message for the process of `cell`, with the mailbox limit; whether
    /// the process was still there (a message to an ended one is dropped).
    fn deliver_to(
        &self,
        cell: &ProcessCell,
        from: Pid,
        message: Message,
    ) -> Result<bool, SendError> {
        let max = self.config.mailbox_len_max;
        if !cell.count_in(max) {
            return Err(SendError::MailboxFull(max));
        }
        if cell.push(Signal::Message { from, message }).is_err() {
            cell.mailbox_len.fetch_sub(1, Ordering::Relaxed);
            return Ok(false);
        }
        Ok(true)
    }

    /// A host message for a process of this node past its mailbox limit
    /// (one last notice, such as a subscription's end); whether the
    /// process was there.
    pub fn deliver_over_limit(&self, to: Pid, message: Message) -> bool {
        let Some(cell) = self.lookup(to) else {
            return false;
        };
        cell.mailbox_len.fetch_add(1, Ordering::Relaxed);
        let from = Pid::default();
        if cell.push(Signal::Message { from, message }).is_err() {
            cell.mailbox_len.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn pg(&self) -> std::sync::MutexGuard<'_, ProcessGroups> {
        self.pg.lock().expect("process groups poisoned")
    }

    /// `pid`, a local process, joins a group once more; announced to the
    /// other nodes.
    pub fn pg_join(&self, scope: &str, group: &str, pid: Pid) -> Result<(), PgError> {
        let mut pg = self.pg();
        pg.join(scope, group, pid, 1)?;
        if let Some(observer) = self.pg_observer.get() {
            observer.changed(PgChange::Join { scope, group, pid });
        }
        Ok(())
    }

    /// `pid`, a local process, leaves a group once; announced.
    pub fn pg_leave(&self, scope: &str, group: &str, pid: Pid) -> Result<(), PgError> {
        let mut pg = self.pg();
        pg.leave(scope, group, pid)?;
        if let Some(observer) = self.pg_observer.get() {
            observer.changed(PgChange::Leave { scope, group, pid });
        }
        Ok(())
    }

    /// A local process that joined groups ended: drop it everywhere.
    pub fn pg_gone(&self, pid: Pid) {
        let mut pg = self.pg();
        if pg.remove_pid(pid)
            && let Some(observer) = self.pg_observer.get()
        {
            observer.changed(PgChange::Gone { pid });
        }
    }

    /// Members of a group, this node's only if `local`.
    pub fn pg_members(&self, scope: &str, group: &str, local: bool) -> Vec<Pid> {
        self.pg()
            .members(scope, group, |p| !local || self.is_local(*p))
    }

    /// The groups of a scope that have members.
    pub fn pg_which_groups(&self, scope: &str) -> Vec<String> {
        self.pg().which_groups(scope)
    }

    /// Run `f` on this node's own memberships with the groups locked, so
    /// no change is announced while `f` sends them (a sync to a new peer).
    pub fn pg_with_local<T>(&self, f: impl FnOnce(Vec<Membership>) -> T) -> T {
        let pg = self.pg();
        let mine = pg.memberships(|p| self.is_local(*p));
        f(mine)
    }

    /// A remote process of the node `(node_id, incarnation)` joined
    /// (`joined`) or left a group. Pids of other nodes are ignored: a node
    /// speaks for its own processes only. A join past a limit is dropped.
    pub fn pg_remote_change(
        &self,
        from: (u64, u64),
        scope: &str,
        group: &str,
        pid: Pid,
        joined: bool,
    ) -> Result<(), PgError> {
        if (pid.node, pid.incarnation) != from {
            return Ok(());
        }
        let mut pg = self.pg();
        if joined {
            pg.join(scope, group, pid, 1)
        } else {
            // A leave for a membership dropped at a limit.
            pg.leave(scope, group, pid).or(Ok(()))
        }
    }

    /// A remote process ended: drop its memberships.
    pub fn pg_remote_gone(&self, from: (u64, u64), pid: Pid) {
        if (pid.node, pid.incarnation) == from {
            self.pg().remove_pid(pid);
        }
    }

    /// The node `(node_id, incarnation)` sent its memberships: the first
    /// chunk replaces what this node knew of it (any incarnation), later
    /// ones add. Returns how many were dropped at
    /// a limit.
    pub fn pg_remote_sync(
        &self,
        from: (u64, u64),
        first: bool,
        memberships: Vec<Membership>,
    ) -> usize {
        let mut pg = self.pg();
        if first {
            pg.remove_where(|p| p.node == from.0);
        }
        let mut dropped = 0;
        for (scope, group, pid, times) in memberships {
            if (pid.node, pid.incarnation) != from || pg.join(&scope, &group, pid, times).is_err() {
                dropped += 1;
            }
        }
        dropped
    }

    /// The node `(node_id, incarnation)` went away: drop its members.
    pub fn pg_node_down(&self, node: (u64, u64)) {
        self.pg().remove_where(|p| (p.node, p.incarnation) == node);
    }

    /// Reserve a process slot and a pid.
    fn reserve(&self) -> Result<Pid, SpawnError> {
        let max = self.config.processes_max;
        self.alive
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| SpawnError::ProcessLimit(max))?;
        self.spawned.fetch_add(1, Ordering::Relaxed);
        Ok(Pid {
            node: self.node_id,
            incarnation: self.incarnation,
            serial: self.next_serial.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Register a new process cell in the table.
    fn enter(&self, cell: Arc<ProcessCell>) {
        self.table.insert(cell);
    }

    /// Remove an ended process: table, name, slot.
    fn forget(&self, pid: Pid) {
        self.table.remove(pid.serial);
        self.registry
            .lock()
            .expect("registry poisoned")
            .remove_pid(pid);
        self.alive.fetch_sub(1, Ordering::AcqRel);
        self.exited.fetch_add(1, Ordering::Relaxed);
        if let Some(observer) = self.exit_observer.get() {
            observer.exited(pid);
        }
        self.tables.exited(pid);
        self.ended.notify_waiters();
    }

    /// Spawn with an optional link to and monitor by `parent`. Returns the
    /// pid; the monitor reference is `monitor`'s.
    pub fn spawn(
        self: &Arc<Self>,
        module: &str,
        args: Vec<u8>,
        link: Option<Pid>,
        monitor: Option<(Ref, Pid)>,
    ) -> Result<Pid, SpawnError> {
        let max = self.config.message_bytes_max;
        if args.len() > max {
            return Err(SpawnError::ArgsTooLarge {
                size: args.len(),
                max,
            });
        }
        let version = self
            .code
            .enter_current_or_load(module)
            .ok_or_else(|| SpawnError::NoModule(module.to_string()))?;
        let pid = match self.reserve() {
            Ok(pid) => pid,
            Err(e) => {
                version.leave();
                return Err(e);
            }
        };
        let cell = Arc::new(ProcessCell::new(pid, Some(version.clone()), link));
        let mut core = core::ProcessCore::new(self.clone(), cell.clone());
        core.links.extend(link);
        core.monitors_in.extend(monitor);
        let process = guest::run(core, version, args.into_boxed_slice());
        match &self.sched {
            Some(sched) => {
                // Its doorbell keeps the task's waker before anyone can
                // find the process to ring it.
                let task = sched.prepare(process);
                cell.wake.keep(task.waker());
                self.enter(cell);
                task.start();
            }
            None => {
                self.enter(cell);
                drop(self.runtime.spawn(process));
            }
        }
        Ok(pid)
    }
}
