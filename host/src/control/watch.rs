//! Watching a directory of module files (`molt node --watch DIR`): when a
//! `.wasm` file there is created or rewritten, load it as the next version
//! of its module, once the file has been quiet for a while.
//!
//! A build or an editor writes a file in several steps (create, writes, a
//! rename over the old file) and the OS reports each one; `Debounce`, a
//! state machine without I/O, turns those touches into one load per file
//! [`WatchConfig::quiet`] after the last one. Loads use the default options
//! ([`LoadOptions::default`]: soft purge, eager upgrade), so a file that
//! does not load (half written, not WebAssembly, not the ABI, old version
//! not purged) is refused, logged and recorded as a failed code event, and
//! the running version stays. A file holding the current version already
//! changes nothing.
//!
//! Removing a file unloads nothing: watching follows what is built, and
//! unloading stays an explicit `delete`/`purge`.
//!
//! Invariant: the watcher changes code only through [`Node::load_with`];
//! it knows nothing of versions, purges or processes beyond what a load
//! returns.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::{Notify, broadcast, oneshot};

use crate::code::{CodeServer, LoadError, LoadOptions};
use crate::runtime::Node;

/// How long a file must go without events before it is loaded, by
/// default. cargo and editors finish a file within milliseconds; a writer
/// that pauses longer mid-file gets the partial file refused and the whole
/// one loaded after its last write.
pub const QUIET_DEFAULT: Duration = Duration::from_millis(300);

/// Most files waiting for their quiet time at once; touches of further
/// files are dropped with a warning until some are loaded.
pub const PENDING_FILES_MAX: usize = 1_024;

/// Most watch events a subscriber that does not keep up is behind; it
/// loses the oldest ones past that (`broadcast` lag).
pub const EVENTS_CAPACITY: usize = 64;

/// How a directory is watched.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// How long a file must go without events before it is loaded.
    pub quiet: Duration,
    /// Load the `.wasm` files already in the directory when the watch
    /// starts (in name order), as if each had just been written. On by
    /// default: a node watching a build directory then runs what is
    /// built, not what was loaded before the watch started.
    pub load_existing: bool,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            quiet: QUIET_DEFAULT,
            load_existing: true,
        }
    }
}

/// What the watcher did with a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchOutcome {
    /// A new version became current.
    Loaded {
        /// Module name.
        module: String,
        /// The version now current.
        version: String,
        /// The version that became old, if any.
        previous: Option<String>,
    },
    /// The file holds the current version already: nothing changed.
    Unchanged {
        /// Module name.
        module: String,
        /// The current version.
        version: String,
    },
    /// The file was not loaded; the running version stays.
    Refused {
        /// Why, in words (a [`LoadError`]).
        reason: String,
    },
}

/// A file the watcher loaded or refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// The file.
    pub file: PathBuf,
    /// What came of it.
    pub outcome: WatchOutcome,
}

/// Why a directory cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The path is not a directory (or does not exist).
    #[error("cannot watch {0}: not a directory")]
    NotADirectory(PathBuf),
    /// The OS refused the watch (e.g. too many inotify watches).
    #[error("cannot watch {dir}: {source}")]
    Os {
        /// The directory.
        dir: PathBuf,
        /// What the OS said.
        source: notify::Error,
    },
    /// The directory could not be listed for its existing files.
    #[error("cannot list {dir}: {source}")]
    List {
        /// The directory.
        dir: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Called outside a tokio runtime: the loads run on one.
    #[error("watching needs a tokio runtime")]
    NoRuntime,
}

/// A running watch. Dropping it stops the watch; a load in progress
/// finishes first.
pub struct Watcher {
    dir: PathBuf,
    events: broadcast::Sender<WatchEvent>,
    /// Subscribed before the watch started, handed out by the first
    /// [`Watcher::events`] so that it misses nothing.
    first: Option<broadcast::Receiver<WatchEvent>>,
    // Dropping it ends the OS watch, so no more touches arrive.
    _os: notify::RecommendedWatcher,
    // Dropping it ends the load task at its next wake-up.
    _stop: oneshot::Sender<()>,
}

impl Watcher {
    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the watcher does from now on, one event per file loaded or
    /// refused. The first call also sees everything since the watch
    /// started (the files loaded at start). A receiver more than
    /// [`EVENTS_CAPACITY`] events behind loses the oldest.
    pub fn events(&mut self) -> broadcast::Receiver<WatchEvent> {
        self.first.take().unwrap_or_else(|| self.events.subscribe())
    }
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").field("dir", &self.dir).finish()
    }
}

/// Watch `dir` with the default [`WatchConfig`]: load each `.wasm` file in
/// it now, and again whenever it is created or rewritten.
pub fn watch(node: Node, dir: &Path) -> Result<Watcher, WatchError> {
    watch_with(node, dir, WatchConfig::default())
}

/// Watch `dir` as `config` says. Must be called inside a tokio runtime;
/// the loads run on it.
pub fn watch_with(node: Node, dir: &Path, config: WatchConfig) -> Result<Watcher, WatchError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| WatchError::NoRuntime)?;
    if !dir.is_dir() {
        return Err(WatchError::NotADirectory(dir.to_path_buf()));
    }
    let inbox = Arc::new(Inbox::default());
    let touched = inbox.clone();
    let watched = dir.to_path_buf();
    let mut os =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if touches_content(&event.kind) => {
                // The OS may name the directory its own way (absolute,
                // symlinks resolved); files are named under `dir` as given.
                let files = event.paths.iter().filter(|p| is_module_file(p));
                for name in files.filter_map(|p| p.file_name()) {
                    touched.put(watched.join(name));
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("watch: {e}"),
        })
        .map_err(|source| WatchError::Os {
            dir: dir.to_path_buf(),
            source,
        })?;
    os.watch(dir, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError::Os {
            dir: dir.to_path_buf(),
            source,
        })?;
    // Listed after the OS watch is on, so a file written in between is
    // seen by one or the other (at worst both: the second load is a no-op).
    let existing = if config.load_existing {
        module_files_in(dir).map_err(|source| WatchError::List {
            dir: dir.to_path_buf(),
            source,
        })?
    } else {
        Vec::new()
    };
    let (events, first) = broadcast::channel(EVENTS_CAPACITY);
    let (stop_tx, stop) = oneshot::channel();
    let task = LoadTask {
        node,
        events: events.clone(),
        debounce: Debounce::new(config.quiet, PENDING_FILES_MAX),
        inbox,
    };
    runtime.spawn(task.run(existing, stop));
    tracing::info!(dir = %dir.display(), "watching for .wasm files");
    Ok(Watcher {
        dir: dir.to_path_buf(),
        events,
        first: Some(first),
        _os: os,
        _stop: stop_tx,
    })
}

/// Whether an OS event may mean new content: created, written, renamed
/// into place, closed after writing. Removals and reads do not.
fn touches_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any | EventKind::Other => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Remove(_) => false,
    }
}

/// A `.wasm` file that is not hidden (editors' and tools' temporary files
/// are hidden or end otherwise: `.counter.wasm.swp`, `counter.wasm.tmp`).
fn is_module_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && path.extension().is_some_and(|e| e == "wasm")
}

/// The module files in `dir`, sorted by name.
fn module_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if is_module_file(&path) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Files the OS reported, handed from notify's thread to the load task.
/// Bounded by [`PENDING_FILES_MAX`] distinct files.
#[derive(Default)]
struct Inbox {
    files: Mutex<HashSet<PathBuf>>,
    wake: Notify,
}

impl Inbox {
    fn put(&self, file: PathBuf) {
        {
            let mut files = self.files.lock().expect("watch inbox poisoned");
            if files.len() >= PENDING_FILES_MAX && !files.contains(&file) {
                tracing::warn!(
                    file = %file.display(),
                    "watch: {PENDING_FILES_MAX} files wait already; change ignored"
                );
                return;
            }
            files.insert(file);
        }
        // A permit is kept if the task is busy, so no touch is missed.
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<PathBuf> {
        self.files
            .lock()
            .expect("watch inbox poisoned")
            .drain()
            .collect()
    }
}

/// Files waiting for their quiet time. Each touch restarts a file's
/// wait; a file is due `quiet` after its last touch. No I/O: the caller
/// passes the time.
#[derive(Debug)]
struct Debounce {
    quiet: Duration,
    files_max: usize,
    due: HashMap<PathBuf, Instant>,
}

impl Debounce {
    fn new(quiet: Duration, files_max: usize) -> Self {
        Debounce {
            quiet,
            files_max,
            due: HashMap::new(),
        }
    }

    /// `file` changed at `now`. False (and ignored) if `files_max` other
    /// files wait already.
    fn touch(&mut self, file: PathBuf, now: Instant) -> bool {
        if self.due.len() >= self.files_max && !self.due.contains_key(&file) {
            return false;
        }
        self.due.insert(file, now + self.quiet);
        true
    }

    /// When the next file is due, if any waits.
    fn next_due(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// The files due at `now`, sorted, no longer waiting.
    fn take_due(&mut self, now: Instant) -> Vec<PathBuf> {
        let mut ready: Vec<PathBuf> = self
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(file, _)| file.clone())
            .collect();
        for file in &ready {
            self.due.remove(file);
        }
        ready.sort();
        ready
    }
}

/// The task that loads due files, one at a time.
struct LoadTask {
    node: Node,
    events: broadcast::Sender<WatchEvent>,
    debounce: Debounce,
    inbox: Arc<Inbox>,
}

impl LoadTask {
    async fn run(mut self, existing: Vec<PathBuf>, mut stop: oneshot::Receiver<()>) {
        for file in existing {
            self.load(&file).await;
        }
        loop {
            let next = self.debounce.next_due();
            tokio::select! {
                _ = &mut stop => break,
                () = self.inbox.wake.notified() => {}
                () = sleep_until(next) => {}
            }
            let now = Instant::now();
            for file in self.inbox.take() {
                if !self.debounce.touch(file.clone(), now) {
                    tracing::warn!(
                        file = %file.display(),
                        "watch: {PENDING_FILES_MAX} files wait already; change ignored"
                    );
                }
            }
            for file in self.debounce.take_due(now) {
                self.load(&file).await;
            }
        }
    }

    /// Load `file` and report what came of it. A file gone since it was
    /// touched (renamed away, removed) is skipped silently.
    async fn load(&self, file: &Path) {
        let Some(outcome) = self.try_load(file).await else {
            tracing::debug!(file = %file.display(), "watch: file gone; nothing to load");
            return;
        };
        match &outcome {
            WatchOutcome::Loaded {
                module,
                version,
                previous,
            } => {
                let previous = previous
                    .as_ref()
                    .map(|p| format!(" ({p} is old)"))
                    .unwrap_or_default();
                tracing::info!(
                    "watch: loaded {module} {version} from {}{previous}",
                    file.display()
                );
            }
            WatchOutcome::Unchanged { module, version } => tracing::debug!(
                "watch: {} holds {module} {version}, current already",
                file.display()
            ),
            WatchOutcome::Refused { reason } => {
                tracing::warn!(
                    "watch: refused {}: {reason}; the running version stays",
                    file.display()
                );
                let name = file.file_name().map_or_else(
                    || file.display().to_string(),
                    |n| n.to_string_lossy().into(),
                );
                self.node.code().record(
                    &name,
                    format!("refused by --watch: {reason}; the running version stays"),
                    true,
                );
            }
        }
        // No subscriber is fine: the log line and the code event remain.
        let _ = self.events.send(WatchEvent {
            file: file.to_path_buf(),
            outcome,
        });
    }

    async fn try_load(&self, file: &Path) -> Option<WatchOutcome> {
        let refused = |e: LoadError| {
            Some(WatchOutcome::Refused {
                reason: e.to_string(),
            })
        };
        // Checked before reading, so a huge file is not read whole.
        let max = self.node.config().module_bytes_max;
        match std::fs::metadata(file) {
            Ok(m) if !m.is_file() => return None,
            Ok(m) if m.len() > max as u64 => {
                return refused(LoadError::TooLarge {
                    size: usize::try_from(m.len()).unwrap_or(usize::MAX),
                    max,
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(source) => {
                return refused(LoadError::Io {
                    path: file.display().to_string(),
                    source,
                });
            }
        }
        let path = file.to_path_buf();
        let read = tokio::task::spawn_blocking(move || CodeServer::read_file(&path)).await;
        let (bytes, stem) = match read {
            Ok(Ok(read)) => read,
            Ok(Err(LoadError::Io { source, .. }))
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return None;
            }
            Ok(Err(e)) => return refused(e),
            Err(e) => return refused(LoadError::Invalid(format!("read task failed: {e}"))),
        };
        match self
            .node
            .load_with(bytes, &stem, LoadOptions::default())
            .await
        {
            Ok(loaded) if loaded.unchanged => Some(WatchOutcome::Unchanged {
                module: loaded.version.identity.name.clone(),
                version: loaded.version.identity.version.clone(),
            }),
            Ok(loaded) => Some(WatchOutcome::Loaded {
                module: loaded.version.identity.name.clone(),
                version: loaded.version.identity.version.clone(),
                previous: loaded.previous.as_ref().map(|p| p.identity.version.clone()),
            }),
            Err(e) => refused(e),
        }
    }
}

/// Sleep until `at`, or forever if `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_millis(300);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_file_is_due_once_quiet_after_its_last_touch() {
        let t0 = Instant::now();
        let mut d = Debounce::new(QUIET, 8);
        let f = PathBuf::from("counter.wasm");
        assert!(d.touch(f.clone(), t0));
        assert!(d.touch(f.clone(), t0 + ms(200)));
        assert_eq!(d.next_due(), Some(t0 + ms(500)));
        assert!(d.take_due(t0 + ms(499)).is_empty());
        assert_eq!(d.take_due(t0 + ms(500)), vec![f]);
        assert_eq!(d.next_due(), None);
        assert!(d.take_due(t0 + ms(5_000)).is_empty());
    }

    #[test]
    fn files_wait_independently_and_come_out_sorted() {
        let t0 = Instant::now();
        let mut d = Debounce::new(QUIET, 8);
        d.touch("b.wasm".into(), t0);
        d.touch("a.wasm".into(), t0 + ms(10));
        d.touch("c.wasm".into(), t0 + ms(400));
        assert_eq!(d.next_due(), Some(t0 + ms(300)));
        assert_eq!(
            d.take_due(t0 + ms(310)),
            vec![PathBuf::from("a.wasm"), PathBuf::from("b.wasm")]
        );
        assert_eq!(d.next_due(), Some(t0 + ms(700)));
    }

    #[test]
    fn touches_past_the_limit_are_dropped_but_waiting_files_still_restart() {
        let t0 = Instant::now();
        let mut d = Debounce::new(QUIET, 2);
        assert!(d.touch("a.wasm".into(), t0));
        assert!(d.touch("b.wasm".into(), t0));
        assert!(!d.touch("c.wasm".into(), t0));
        assert!(d.touch("a.wasm".into(), t0 + ms(100)));
        assert_eq!(d.take_due(t0 + ms(300)), vec![PathBuf::from("b.wasm")]);
        assert!(d.touch("c.wasm".into(), t0 + ms(300)));
    }

    #[test]
    fn only_visible_wasm_files_count() {
        for (path, yes) in [
            ("dir/counter.wasm", true),
            ("counter_v2.wasm", true),
            ("dir/.counter.wasm", false),
            ("dir/.counter.wasm.swp", false),
            ("dir/counter.wasm.tmp", false),
            ("dir/counter.wat", false),
            ("dir/wasm", false),
        ] {
            assert_eq!(is_module_file(Path::new(path)), yes, "{path}");
        }
    }

    #[test]
    fn writes_and_renames_touch_but_reads_and_removals_do_not() {
        use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};
        assert!(touches_content(&EventKind::Create(CreateKind::File)));
        assert!(touches_content(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(touches_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(!touches_content(&EventKind::Access(AccessKind::Open(
            AccessMode::Read
        ))));
        assert!(!touches_content(&EventKind::Remove(RemoveKind::File)));
    }
}
