//! The code server: loads, validates and keeps modules, at most a current
//! and an old version per name (Erlang's code server); hands the runtime
//! the current version of a module to spawn; caches compiled modules by
//! content hash.
//!
//! Invariant: the code server never touches a running instance. A process
//! holds the [`ModuleVersion`] it runs and moves to another only itself, at
//! a message boundary (see `runtime::upgrade`); every version counts the
//! processes on it.

pub mod analyze;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use std::any::Any;

use wasmtime::{Engine, Module};

pub use analyze::{Identity, ModuleKind, Problem, Report};

/// A compiled module linked for fast instantiation, as the runtime made it
/// (wasmtime's `InstancePre` of the runtime's store type). Opaque here: the
/// code server keeps it and hands it back, and never names the runtime.
pub(crate) type Linked = Arc<dyn Any + Send + Sync>;

/// How compiled modules are linked against the host functions: given by
/// the runtime, which owns the store type and the linker.
pub(crate) trait PreLink: Send + Sync {
    /// Link `module`; an error means it cannot be instantiated here.
    fn pre_link(&self, module: &Module) -> Result<Linked, wasmtime::Error>;
}

/// A version's machine code, linked: the baseline tier's, if the version
/// was compiled so first, and the optimised tier's once it is ready (set
/// once, by the background compile). Shared by every version of the same
/// bytes.
pub(crate) struct Code {
    baseline: Option<Linked>,
    optimised: std::sync::OnceLock<Linked>,
    /// The pages of zero-initialised statics a new instance writes first
    /// ([`analyze::statics_pages`]).
    pub(crate) statics_pages: Option<std::ops::Range<u32>>,
}

impl Code {
    fn optimised(linked: Linked, statics_pages: Option<std::ops::Range<u32>>) -> Arc<Code> {
        Arc::new(Code {
            baseline: None,
            optimised: std::sync::OnceLock::from(linked),
            statics_pages,
        })
    }

    /// The code a new instance takes now: the optimised code once ready.
    pub(crate) fn now(&self) -> &Linked {
        self.optimised
            .get()
            .or(self.baseline.as_ref())
            .expect("a version has code of one tier at least")
    }

    /// The optimised code, if ready.
    pub(crate) fn optimised_code(&self) -> Option<&Linked> {
        self.optimised.get()
    }

    /// The baseline code, if the version was compiled so.
    pub(crate) fn baseline_code(&self) -> Option<&Linked> {
        self.baseline.as_ref()
    }
}

/// Counts an optimising compile out of the queue when it is done (or
/// dropped unrun).
struct Dequeued(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Dequeued {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An optimising compile, as the compile thread runs it.
type Compile = Box<dyn FnOnce() + Send>;

/// A hold on a node's optimising compiles ([`CodeServer::hold_optimising`]):
/// they go on when it is dropped.
pub struct OptimisingHold(Arc<(Mutex<usize>, std::sync::Condvar)>);

impl Drop for OptimisingHold {
    fn drop(&mut self) {
        let (count, released) = &*self.0;
        *count.lock().expect("holds poisoned") -= 1;
        released.notify_all();
    }
}

/// One compiled, linked version of a module.
pub struct ModuleVersion {
    /// Name and version.
    pub identity: Identity,
    /// Behaviour or raw.
    pub kind: ModuleKind,
    /// Size of the module file.
    pub size_bytes: usize,
    pub(crate) code: Arc<Code>,
    /// Processes running this version (spawned on it or migrated to it).
    processes: AtomicUsize,
    /// Woken when `processes` drops to zero (a purge waits for it).
    drained: tokio::sync::Notify,
    /// [`Upgrade::NONE`] while current; how its processes should move on
    /// once it is not.
    upgrade: AtomicU8,
}

/// How behaviour processes move from a version that stopped being current
/// to the new current one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpgradeMode {
    /// At their next message: an idle process stays on the old version
    /// until a message arrives.
    Lazy,
    /// Now: idle processes are prompted to migrate at once; busy ones
    /// migrate when the message they handle is done.
    #[default]
    Eager,
}

/// What `load` does with an old version that still has processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Purge {
    /// Refuse the load with `not_purged` (Erlang's default).
    #[default]
    Soft,
    /// Kill them (reason `purged: <module> <version>`), then load.
    Hard,
}

/// How to load a new version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// What to do with an old version that still has processes.
    pub purge: Purge,
    /// How behaviour processes move to the new version.
    pub mode: UpgradeMode,
}

/// Values of [`ModuleVersion::upgrade`].
pub(crate) struct Upgrade;

impl Upgrade {
    pub const NONE: u8 = 0;
    pub const LAZY: u8 = 1;
    pub const EAGER: u8 = 2;
}

impl ModuleVersion {
    /// Processes running this version now.
    pub fn processes(&self) -> usize {
        self.processes.load(Ordering::Acquire)
    }

    /// A process starts running this version.
    pub(crate) fn enter(&self) {
        self.processes.fetch_add(1, Ordering::AcqRel);
    }

    /// A process stops running this version (it ended or migrated).
    pub(crate) fn leave(&self) {
        if self.processes.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_waiters();
        }
    }

    /// Wait until no process runs this version.
    pub async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.processes() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// How its processes should move on: [`Upgrade::NONE`] while current.
    pub(crate) fn upgrade(&self) -> u8 {
        self.upgrade.load(Ordering::Acquire)
    }

    /// Whether its optimised code is ready (new instances take it, and
    /// behaviours on baseline code move onto it at their next message).
    pub fn optimised(&self) -> bool {
        self.code.optimised_code().is_some()
    }

    fn same_code(&self, other: &ModuleVersion) -> bool {
        self.identity == other.identity
    }
}

impl std::fmt::Debug for ModuleVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleVersion")
            .field("identity", &self.identity)
            .field("kind", &self.kind)
            .finish()
    }
}

/// Why a module was refused, or a load could not switch versions. The node
/// keeps running what it ran.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Larger than `module_bytes_max`.
    #[error("module is {size} bytes, larger than module_bytes_max ({max} bytes)")]
    TooLarge {
        /// Size of the module.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not valid WebAssembly, or beyond what this node's pool allows.
    #[error("invalid module: {0}")]
    Invalid(String),
    /// Valid WebAssembly that does not satisfy the ABI.
    #[error("module `{name}` does not satisfy the molt ABI: {}", join(.problems))]
    Abi {
        /// Module name.
        name: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// The node holds `modules_max` modules already.
    #[error("node holds modules_max ({max}) modules already")]
    TooManyModules {
        /// The limit.
        max: usize,
    },
    /// The old version still has processes and the load did not ask to
    /// purge them (Erlang's `not_purged`).
    #[error(
        "not_purged: old version {version} of `{name}` still runs {processes} process(es); purge it first or load with a hard purge"
    )]
    NotPurged {
        /// Module name.
        name: String,
        /// The old version.
        version: String,
        /// Processes still on it.
        processes: usize,
    },
    /// A behaviour cannot be replaced by a raw module or the other way
    /// round: its processes could not migrate.
    #[error("module `{name}` is a {current} now; version {version} is a {new}")]
    KindChanged {
        /// Module name.
        name: String,
        /// The new version.
        version: String,
        /// Kind of the current version.
        current: ModuleKind,
        /// Kind of the new one.
        new: ModuleKind,
    },
    /// A hard purge could not finish.
    #[error(transparent)]
    Purge(#[from] PurgeError),
}

/// Why a purge failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PurgeError {
    /// `soft_purge` found processes on the old version.
    #[error("old version {version} of `{name}` still runs {processes} process(es); not purged")]
    InUse {
        /// Module name.
        name: String,
        /// The old version.
        version: String,
        /// Processes still on it.
        processes: usize,
    },
    /// Killed processes did not end in time (a bug, or a stuck host call).
    #[error(
        "old version {version} of `{name}`: {processes} process(es) still alive after being killed"
    )]
    Stuck {
        /// Module name.
        name: String,
        /// The old version.
        version: String,
        /// Processes still on it.
        processes: usize,
    },
    /// No module of that name is loaded.
    #[error("no module named `{0}` is loaded")]
    NoModule(String),
}

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a load did.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The version now current.
    pub version: Arc<ModuleVersion>,
    /// The version that became old, if any.
    pub previous: Option<Arc<ModuleVersion>>,
    /// The bytes were the current version already: nothing changed.
    pub unchanged: bool,
    /// Processes a hard purge killed first.
    pub purged: usize,
}

/// A version as `molt modules` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// Version string.
    pub version: String,
    /// Behaviour or raw.
    pub kind: String,
    /// Full SHA-256 of the module bytes, hex.
    pub hash: String,
    /// Processes running it.
    pub processes: u64,
}

/// A module as `molt modules` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Module name.
    pub name: String,
    /// The current version (`None` after `delete`).
    pub current: Option<VersionInfo>,
    /// The old version, if not purged.
    pub old: Option<VersionInfo>,
}

impl VersionInfo {
    fn of(v: &ModuleVersion) -> Self {
        VersionInfo {
            version: v.identity.version.clone(),
            kind: v.kind.to_string(),
            hash: v.identity.hash.clone(),
            processes: v.processes() as u64,
        }
    }
}

/// Something the code server did or refused, kept for `molt modules`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeEvent {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Module name (or the file, for a refused file).
    pub module: String,
    /// What happened, in words.
    pub what: String,
    /// Whether it is a failure.
    pub failure: bool,
}

/// Most events kept for `molt modules`; older ones are dropped.
pub const CODE_EVENTS_MAX: usize = 64;

/// Per name: at most a current and an old version.
#[derive(Default)]
struct Slot {
    current: Option<Arc<ModuleVersion>>,
    old: Option<Arc<ModuleVersion>>,
}

/// Compiled modules by content hash, so loading the same bytes again (a
/// downgrade, a node pushed the version it has) does not compile again.
/// One engine per node, so every entry fits it. Least recently used
/// entries go first; current and old versions stay alive through their
/// slots whatever the cache drops.
struct Cache {
    entries: HashMap<String, Arc<ModuleVersion>>,
    order: VecDeque<String>,
    max: usize,
}

impl Cache {
    fn get(&mut self, hash: &str) -> Option<Arc<ModuleVersion>> {
        let found = self.entries.get(hash).cloned()?;
        self.order.retain(|h| h != hash);
        self.order.push_back(hash.to_string());
        Some(found)
    }

    fn put(&mut self, version: Arc<ModuleVersion>) {
        if self.max == 0 {
            return;
        }
        let hash = version.identity.hash.clone();
        if self.entries.insert(hash.clone(), version).is_none() {
            self.order.push_back(hash);
        }
        while self.entries.len() > self.max {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }
}

/// Modules loaded on a node, by name.
pub struct CodeServer {
    engine: Engine,
    linker: Arc<dyn PreLink>,
    /// The baseline compiler's engine and linker, if the node compiles in
    /// two tiers.
    baseline: Option<(Engine, Arc<dyn PreLink>)>,
    /// The optimising compiles waiting for the compile thread.
    optimiser: Mutex<Option<std::sync::mpsc::Sender<Compile>>>,
    /// Optimising compiles queued or running, and the most queued
    /// (`optimise_queue_max`).
    optimise_queued: Arc<std::sync::atomic::AtomicUsize>,
    optimise_queue_max: usize,
    /// Holds on the optimising compiles (see [`CodeServer::hold_optimising`]).
    holds: Arc<(Mutex<usize>, std::sync::Condvar)>,
    module_bytes_max: usize,
    modules_max: usize,
    modules: RwLock<HashMap<String, Slot>>,
    cache: Mutex<Cache>,
    events: Mutex<VecDeque<CodeEvent>>,
    /// Directories searched for `<name>.wasm` when a module that is not
    /// loaded is spawned (Erlang's code path, interactive mode).
    code_path: RwLock<Vec<PathBuf>>,
}

/// Whether a prepared version came from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compiled {
    /// Compiled now.
    Fresh,
    /// Found compiled in the cache.
    Cached,
}

impl CodeServer {
    pub(crate) fn new(
        engine: Engine,
        linker: Arc<dyn PreLink>,
        baseline: Option<(Engine, Arc<dyn PreLink>)>,
        optimise_queue_max: usize,
        module_bytes_max: usize,
        modules_max: usize,
        compiled_cache_max: usize,
    ) -> Self {
        CodeServer {
            engine,
            linker,
            baseline,
            optimiser: Mutex::new(None),
            optimise_queued: Arc::default(),
            optimise_queue_max,
            holds: Arc::default(),
            module_bytes_max,
            modules_max,
            modules: RwLock::new(HashMap::new()),
            cache: Mutex::new(Cache {
                entries: HashMap::new(),
                order: VecDeque::new(),
                max: compiled_cache_max,
            }),
            events: Mutex::new(VecDeque::new()),
            code_path: RwLock::new(Vec::new()),
        }
    }

    /// Read a module file; a module without a `molt.module` section is
    /// named after the file.
    pub fn read_file(path: &Path) -> Result<(Vec<u8>, String), LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("module");
        Ok((bytes, stem.replace('_', "-")))
    }

    /// Validate, compile and link `bytes` (or find them compiled in the
    /// cache) without making them current.
    pub fn prepare(
        &self,
        bytes: &[u8],
        fallback_name: &str,
    ) -> Result<(Arc<ModuleVersion>, Compiled), LoadError> {
        if bytes.len() > self.module_bytes_max {
            return Err(LoadError::TooLarge {
                size: bytes.len(),
                max: self.module_bytes_max,
            });
        }
        let binary = analyze::to_binary(bytes).map_err(LoadError::Invalid)?;
        let bytes = &*binary;
        if let Some(why) = analyze::data_out_of_bounds(bytes) {
            return Err(LoadError::Invalid(why));
        }
        let (identity, section_problem) = analyze::identify(bytes, fallback_name);
        let cached = self
            .cache
            .lock()
            .expect("module cache poisoned")
            .get(&identity.hash);
        if let Some(cached) = cached {
            if cached.identity == identity {
                return Ok((cached, Compiled::Cached));
            }
            // The same bytes under another file name: same code, own identity.
            return Ok((
                Arc::new(ModuleVersion::new(
                    identity,
                    cached.kind,
                    bytes.len(),
                    cached.code.clone(),
                )),
                Compiled::Cached,
            ));
        }
        // The baseline compile, if any; a module it cannot take (a feature
        // Winch lacks) is compiled optimised at once.
        let room = self.optimise_queued.load(Ordering::Acquire) < self.optimise_queue_max;
        let baseline = self.baseline.as_ref().filter(|_| room).and_then(|(engine, linker)| {
            Module::new(engine, bytes)
                .inspect_err(|e| {
                    tracing::debug!(name = %identity.name, error = %format!("{e:#}"), "no baseline compile")
                })
                .ok()
                .map(|module| (module, linker))
        });
        let (module, linker) = match baseline {
            Some((module, linker)) => (module, linker),
            None => (
                Module::new(&self.engine, bytes)
                    .map_err(|e| LoadError::Invalid(format!("{e:#}")))?,
                &self.linker,
            ),
        };
        let report = analyze::check(&module, identity, section_problem);
        let kind = match (report.kind, report.problems.is_empty()) {
            (Some(kind), true) => kind,
            _ => {
                return Err(LoadError::Abi {
                    name: report.identity.name,
                    problems: report.problems,
                });
            }
        };
        let pre = linker
            .pre_link(&module)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let statics_pages = analyze::statics_pages(bytes);
        let code = if Arc::ptr_eq(linker, &self.linker) {
            Code::optimised(pre, statics_pages)
        } else {
            let code = Arc::new(Code {
                baseline: Some(pre),
                optimised: std::sync::OnceLock::new(),
                statics_pages,
            });
            self.optimise_later(&code, bytes, &report.identity);
            code
        };
        let version = Arc::new(ModuleVersion::new(report.identity, kind, bytes.len(), code));
        self.cache
            .lock()
            .expect("module cache poisoned")
            .put(version.clone());
        Ok((version, Compiled::Fresh))
    }

    /// Compile `bytes` with the optimising compiler on a thread of its own
    /// and hand the code to `code` when done. A failure (which the
    /// baseline compile of the same bytes did not have) is logged, and the
    /// version goes on with its baseline code.
    fn optimise_later(&self, code: &Arc<Code>, bytes: &[u8], identity: &Identity) {
        let (engine, linker) = (self.engine.clone(), self.linker.clone());
        let (code, bytes) = (code.clone(), bytes.to_vec());
        let (name, version) = (identity.name.clone(), identity.version.clone());
        let holds = self.holds.clone();
        self.optimise_queued.fetch_add(1, Ordering::AcqRel);
        let done = Dequeued(self.optimise_queued.clone());
        let compile = move || {
            let _done = done;
            let (count, released) = &*holds;
            let held = count.lock().expect("holds poisoned");
            drop(
                released
                    .wait_while(held, |n| *n > 0)
                    .expect("holds poisoned"),
            );
            let started = std::time::Instant::now();
            match Module::new(&engine, &bytes).and_then(|m| linker.pre_link(&m)) {
                Ok(pre) => {
                    let _ = code.optimised.set(pre);
                    tracing::debug!(module = %name, %version, ms = started.elapsed().as_millis() as u64, "optimised code ready");
                }
                Err(e) => tracing::warn!(
                    module = %name,
                    %version,
                    error = %format!("{e:#}"),
                    "the optimising compile failed; the version runs on baseline code"
                ),
            }
        };
        // One compile at a time, in load order, on one thread (started
        // with the first; it ends with the code server).
        let mut worker = self.optimiser.lock().expect("optimiser poisoned");
        let compile: Compile = Box::new(compile);
        let compile = match worker.as_ref() {
            Some(tx) => match tx.send(compile) {
                Ok(()) => return,
                Err(std::sync::mpsc::SendError(compile)) => compile,
            },
            None => compile,
        };
        let (tx, rx) = std::sync::mpsc::channel::<Compile>();
        let started = std::thread::Builder::new()
            .name("molt-compile".into())
            .spawn(move || rx.into_iter().for_each(|compile| compile()));
        match started {
            Ok(_) => {
                tx.send(compile).expect("the compile thread just started");
                *worker = Some(tx);
            }
            Err(e) => tracing::warn!(
                module = %identity.name,
                error = %e,
                "cannot start the optimising compile; the version runs on baseline code"
            ),
        }
    }

    /// Hold the optimising compiles back until the returned guard is
    /// dropped: versions loaded meanwhile serve on their baseline code, and
    /// none is compiled again behind them (for a window in which the node
    /// should spend no CPU time on compiling, and for tests).
    pub fn hold_optimising(&self) -> OptimisingHold {
        *self.holds.0.lock().expect("holds poisoned") += 1;
        OptimisingHold(self.holds.clone())
    }

    /// Make a prepared version current (Erlang's `load`): current becomes
    /// old. An old version without processes is dropped first; one with
    /// processes makes this fail with `not_purged` (the runtime purges
    /// before calling this when asked to). Loading the current bytes again
    /// changes nothing.
    pub(crate) fn install(
        &self,
        version: Arc<ModuleVersion>,
        mode: UpgradeMode,
    ) -> Result<Loaded, LoadError> {
        let name = version.identity.name.clone();
        let mut modules = self.modules.write().expect("module table poisoned");
        let unchanged = self.check(&modules, &version, Purge::Soft)?;
        let slot = modules.entry(name.clone()).or_default();
        if unchanged {
            let current = slot
                .current
                .clone()
                .expect("an unchanged module is current");
            return Ok(Loaded {
                version: current,
                previous: None,
                unchanged: true,
                purged: 0,
            });
        }
        // `check` found no process on it.
        slot.old = None;
        version.upgrade.store(Upgrade::NONE, Ordering::Release);
        let previous = slot.current.replace(version.clone());
        if let Some(previous) = &previous {
            let flag = match mode {
                UpgradeMode::Lazy => Upgrade::LAZY,
                UpgradeMode::Eager => Upgrade::EAGER,
            };
            previous.upgrade.store(flag, Ordering::Release);
            slot.old = Some(previous.clone());
        }
        drop(modules);
        let what = match &previous {
            Some(p) => format!(
                "loaded version {} ({}); {} is old",
                version.identity.version, version.kind, p.identity.version
            ),
            None => format!(
                "loaded version {} ({})",
                version.identity.version, version.kind
            ),
        };
        tracing::info!(module = %name, "{what}");
        self.record(&name, what, false);
        Ok(Loaded {
            version,
            previous,
            unchanged: false,
            purged: 0,
        })
    }

    /// Whether `install` of `version` would go through now: `Ok(true)` if
    /// it is current already (nothing to do), `Ok(false)` if it would
    /// switch, else why it would be refused. With [`Purge::Hard`] the old
    /// version's processes do not refuse it (they are killed first).
    fn check(
        &self,
        modules: &HashMap<String, Slot>,
        version: &ModuleVersion,
        purge: Purge,
    ) -> Result<bool, LoadError> {
        let name = &version.identity.name;
        let Some(slot) = modules.get(name) else {
            if modules.len() >= self.modules_max {
                return Err(LoadError::TooManyModules {
                    max: self.modules_max,
                });
            }
            return Ok(false);
        };
        if let Some(current) = &slot.current {
            if current.same_code(version) {
                return Ok(true);
            }
            if current.kind != version.kind {
                return Err(LoadError::KindChanged {
                    name: name.clone(),
                    version: version.identity.version.clone(),
                    current: current.kind,
                    new: version.kind,
                });
            }
        }
        match &slot.old {
            Some(old) if old.processes() > 0 && purge == Purge::Soft => Err(LoadError::NotPurged {
                name: name.clone(),
                version: old.identity.version.clone(),
                processes: old.processes(),
            }),
            _ => Ok(false),
        }
    }

    /// Phase one of a cluster-wide load: whether `install` of `version`
    /// would go through now (see [`CodeServer::check`]).
    pub(crate) fn can_install(
        &self,
        version: &ModuleVersion,
        purge: Purge,
    ) -> Result<(), LoadError> {
        let modules = self.modules.read().expect("module table poisoned");
        self.check(&modules, version, purge).map(|_| ())
    }

    /// Erlang's `delete`: current becomes old, so nothing new spawns on it.
    /// Fails with `not_purged` if an old version still has processes.
    pub(crate) fn delete(&self, name: &str) -> Result<Option<Arc<ModuleVersion>>, LoadError> {
        let mut modules = self.modules.write().expect("module table poisoned");
        let Some(slot) = modules.get_mut(name) else {
            return Err(PurgeError::NoModule(name.to_string()).into());
        };
        let Some(current) = slot.current.clone() else {
            return Ok(None);
        };
        if let Some(old) = &slot.old {
            let processes = old.processes();
            if processes > 0 {
                return Err(LoadError::NotPurged {
                    name: name.to_string(),
                    version: old.identity.version.clone(),
                    processes,
                });
            }
        }
        current.upgrade.store(Upgrade::LAZY, Ordering::Release);
        slot.old = slot.current.take();
        drop(modules);
        let what = format!("deleted: version {} is old", current.identity.version);
        tracing::info!(module = %name, "{what}");
        self.record(name, what, false);
        Ok(Some(current))
    }

    /// The old version of `name`, if any.
    pub fn old(&self, name: &str) -> Option<Arc<ModuleVersion>> {
        self.modules
            .read()
            .expect("module table poisoned")
            .get(name)
            .and_then(|s| s.old.clone())
    }

    /// Drop the old version of `name` if it is still `old` (a purge found
    /// it without processes). A module with neither version is forgotten.
    pub(crate) fn drop_old(&self, name: &str, old: &Arc<ModuleVersion>) -> bool {
        let mut modules = self.modules.write().expect("module table poisoned");
        let Some(slot) = modules.get_mut(name) else {
            return false;
        };
        if !slot.old.as_ref().is_some_and(|o| Arc::ptr_eq(o, old)) {
            return false;
        }
        slot.old = None;
        if slot.current.is_none() {
            modules.remove(name);
        }
        true
    }

    /// The current version of a module.
    pub fn current(&self, name: &str) -> Option<Arc<ModuleVersion>> {
        self.modules
            .read()
            .expect("module table poisoned")
            .get(name)
            .and_then(|s| s.current.clone())
    }

    /// The current version of a module, counted as running one more
    /// process (under the same lock, so a load cannot drop it in between).
    fn enter_current(&self, name: &str) -> Option<Arc<ModuleVersion>> {
        let modules = self.modules.read().expect("module table poisoned");
        let current = modules.get(name)?.current.clone()?;
        current.enter();
        Some(current)
    }

    /// Add a directory to the code path.
    pub fn add_path(&self, dir: impl Into<PathBuf>) {
        let dir = dir.into();
        let mut path = self.code_path.write().expect("code path poisoned");
        if !path.contains(&dir) {
            path.push(dir);
        }
    }

    /// The current version of a module, counted as running one more process
    /// (the caller spawns it, or calls [`ModuleVersion::leave`]). A module
    /// that was never loaded is loaded from `<name>.wasm` (or with `-`
    /// spelled `_`, as cargo names files) on the code path. A file that
    /// fails to load is logged and skipped.
    pub(crate) fn enter_current_or_load(&self, name: &str) -> Option<Arc<ModuleVersion>> {
        if let Some(v) = self.enter_current(name) {
            return Some(v);
        }
        // The one rule for names from file names: `_` is spelled `-`, so
        // `foo_bar` is `foo-bar` unless a module declares `foo_bar`.
        let canonical = name.replace('_', "-");
        if canonical != name
            && let Some(v) = self.enter_current(&canonical)
        {
            return Some(v);
        }
        if !molt_abi::section::valid_module_name(name) {
            return None;
        }
        // Erlang's interactive mode loads a module that is not loaded; a
        // deleted one (old, no current) stays deleted.
        if self
            .modules
            .read()
            .expect("module table poisoned")
            .contains_key(name)
        {
            return None;
        }
        let dirs = self.code_path.read().expect("code path poisoned").clone();
        let files = [
            format!("{name}.wasm"),
            format!("{}.wasm", name.replace('-', "_")),
        ];
        for dir in dirs {
            for file in &files {
                let path = dir.join(file);
                if !path.is_file() {
                    continue;
                }
                let loaded = Self::read_file(&path)
                    .and_then(|(bytes, stem)| self.prepare(&bytes, &stem))
                    .and_then(|(v, _)| {
                        if v.identity.name != name && v.identity.name != canonical {
                            if v.identity.declared {
                                tracing::warn!(
                                    file = %path.display(),
                                    declared = %v.identity.name,
                                    "module file declares another name; not used for `{name}`"
                                );
                            } else {
                                tracing::warn!(
                                    file = %path.display(),
                                    named = %v.identity.name,
                                    "module file has no molt.module section and its file name \
                                     names another module; not used for `{name}`"
                                );
                            }
                            return Ok(None);
                        }
                        let found = v.identity.name.clone();
                        self.install(v, UpgradeMode::Eager).map(|_| Some(found))
                    });
                match loaded {
                    Ok(Some(found)) => return self.enter_current(&found),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(file = %path.display(), "cannot load module: {e}"),
                }
            }
        }
        None
    }

    /// Every module, sorted by name.
    pub fn modules(&self) -> Vec<ModuleInfo> {
        let modules = self.modules.read().expect("module table poisoned");
        let mut all: Vec<_> = modules
            .iter()
            .map(|(name, slot)| ModuleInfo {
                name: name.clone(),
                current: slot.current.as_deref().map(VersionInfo::of),
                old: slot.old.as_deref().map(VersionInfo::of),
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Every current version, sorted by name.
    pub fn list(&self) -> Vec<Arc<ModuleVersion>> {
        let mut all: Vec<_> = self
            .modules
            .read()
            .expect("module table poisoned")
            .values()
            .filter_map(|s| s.current.clone())
            .collect();
        all.sort_by(|a, b| a.identity.name.cmp(&b.identity.name));
        all
    }

    /// Keep an event for `molt modules` (the last [`CODE_EVENTS_MAX`]).
    pub(crate) fn record(&self, module: &str, what: String, failure: bool) {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut events = self.events.lock().expect("code events poisoned");
        if events.len() == CODE_EVENTS_MAX {
            events.pop_front();
        }
        events.push_back(CodeEvent {
            at_ms,
            module: module.to_string(),
            what,
            failure,
        });
    }

    /// The last [`CODE_EVENTS_MAX`] loads, purges, refusals and failed
    /// upgrades, oldest first.
    pub fn events(&self) -> Vec<CodeEvent> {
        self.events
            .lock()
            .expect("code events poisoned")
            .iter()
            .cloned()
            .collect()
    }
}

impl ModuleVersion {
    fn new(identity: Identity, kind: ModuleKind, size_bytes: usize, code: Arc<Code>) -> Self {
        ModuleVersion {
            identity,
            kind,
            size_bytes,
            code,
            processes: AtomicUsize::new(0),
            drained: tokio::sync::Notify::new(),
            upgrade: AtomicU8::new(Upgrade::NONE),
        }
    }
}

/// Inspect a module without loading it into a node: identity, kind,
/// imports, exports and ABI problems. Errors only if the bytes are not
/// valid WebAssembly.
pub fn inspect(bytes: &[u8], fallback_name: &str) -> Result<Report, LoadError> {
    let binary = analyze::to_binary(bytes).map_err(LoadError::Invalid)?;
    let bytes = &*binary;
    let (identity, section_problem) = analyze::identify(bytes, fallback_name);
    let module =
        Module::new(&Engine::default(), bytes).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
    Ok(analyze::check(&module, identity, section_problem))
}
