//! Code upgrade, the runtime's half: loading a version with an optional
//! hard purge, prompting idle processes to migrate, purging, and the
//! system requests (suspend, change code, resume) for coordinated upgrades.
//!
//! The migration itself runs inside each process, at a message boundary
//! (see `guest::migrate`): nothing here touches an instance.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use molt_abi::{Pid, reason};
use tokio::sync::oneshot;

use super::cell::{ProcessCell, Signal};
use super::{Node, NodeInner};
use crate::code::{
    CodeEvent, LoadError, LoadOptions, Loaded, ModuleInfo, ModuleVersion, Purge, PurgeError,
    UpgradeMode,
};

/// What a system request asks of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysOp {
    /// Stop handling messages (they queue); signals still apply.
    Suspend,
    /// Handle messages again.
    Resume,
    /// Move to the current version of its module now, even if suspended.
    ChangeCode,
}

/// What a process did with a system request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SysOutcome {
    /// Done (suspend, resume).
    Done,
    /// Already on the current version, or there is none: nothing to do.
    Unchanged {
        /// The version it runs.
        version: String,
    },
    /// Moved to a new version, state migrated.
    Upgraded {
        /// The version it ran.
        from: String,
        /// The version it runs now.
        to: String,
    },
}

/// Why a system request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SysError {
    /// No such process (or it ended before answering).
    #[error("noproc")]
    NoProc,
    /// Raw processes and host mailboxes have no message loop to suspend
    /// and no state to migrate.
    #[error("not a behaviour: only behaviour processes can be suspended or upgraded")]
    NotBehaviour,
    /// The migration failed; the process stays on its version.
    #[error("upgrade failed: {0}")]
    Failed(String),
    /// No answer in time (a handler that runs long).
    #[error("no answer within {0} ms")]
    Timeout(u64),
}

/// A system request in flight; the process answers it at a message
/// boundary.
#[derive(Debug)]
pub(crate) struct SysRequest {
    pub op: SysOp,
    reply: oneshot::Sender<Result<SysOutcome, SysError>>,
}

impl SysRequest {
    pub fn answer(self, outcome: Result<SysOutcome, SysError>) {
        let _ = self.reply.send(outcome);
    }

    pub fn refuse(self, why: SysError) {
        self.answer(Err(why));
    }
}

impl Node {
    /// Load module bytes with the default options: soft purge (fails with
    /// `not_purged` if the old version still has processes) and eager
    /// upgrade. Loading the current bytes again changes nothing.
    pub fn load(&self, bytes: &[u8], fallback_name: &str) -> Result<Arc<ModuleVersion>, LoadError> {
        let (version, _) = self.inner.code.prepare(bytes, fallback_name)?;
        let loaded = self.inner.code.install(version, UpgradeMode::Eager)?;
        self.inner.after_install(&loaded, UpgradeMode::Eager);
        Ok(loaded.version)
    }

    /// Load a module file with the default options (see [`Node::load`]); a
    /// module without a `molt.module` section is named after the file.
    pub fn load_file(
        &self,
        path: impl AsRef<std::path::Path>,
    ) -> Result<Arc<ModuleVersion>, LoadError> {
        let (bytes, stem) = crate::code::CodeServer::read_file(path.as_ref())?;
        self.load(&bytes, &stem)
    }

    /// Load module bytes (compiling on a blocking thread unless cached)
    /// and make them current, as `options` say.
    pub async fn load_with(
        &self,
        bytes: Vec<u8>,
        fallback_name: &str,
        options: LoadOptions,
    ) -> Result<Loaded, LoadError> {
        let inner = self.inner.clone();
        let name = fallback_name.to_string();
        let (version, _) = tokio::task::spawn_blocking(move || inner.code.prepare(&bytes, &name))
            .await
            .map_err(|e| LoadError::Invalid(format!("compile task failed: {e}")))??;
        self.install(version, options).await
    }

    /// Make a prepared version (see [`crate::code::CodeServer::prepare`])
    /// current: with [`Purge::Hard`] the processes on the old version are
    /// killed first; behaviour processes on the version that becomes old
    /// migrate as `options.mode` says.
    pub async fn install(
        &self,
        version: Arc<ModuleVersion>,
        options: LoadOptions,
    ) -> Result<Loaded, LoadError> {
        let name = version.identity.name.clone();
        let unchanged = self
            .inner
            .code
            .current(&name)
            .is_some_and(|c| c.identity == version.identity);
        let mut purged = 0;
        if options.purge == Purge::Hard && !unchanged {
            purged = self.purge(&name).await?;
        }
        let mut loaded = self.inner.code.install(version, options.mode)?;
        loaded.purged = purged;
        self.inner.after_install(&loaded, options.mode);
        Ok(loaded)
    }

    /// Whether [`Node::install`] of `version` would go through now, by the
    /// same checks: the bytes are current already, or it is of the current
    /// version's kind, within `modules_max`, and the old version has no
    /// processes or `purge` is hard. Phase one of a cluster-wide load
    /// checks it.
    pub fn can_install(&self, version: &ModuleVersion, purge: Purge) -> Result<(), LoadError> {
        self.inner.code.can_install(version, purge)
    }

    /// Erlang's `purge`: kill the processes still on the old version of
    /// `name` (reason `purged: <name> <version>`, which cannot be trapped),
    /// wait for them to end, and drop it. Returns how many were killed;
    /// 0 if there is no old version.
    pub async fn purge(&self, name: &str) -> Result<usize, PurgeError> {
        let Some(old) = self.inner.code.old(name) else {
            return Ok(0);
        };
        let why: super::Reason =
            format!("{}{name} {}", reason::PURGED_PREFIX, old.identity.version).into();
        let mut killed = 0;
        for cell in self.inner.cells_on(&old) {
            let signal = Signal::Kill {
                reason: why.clone(),
                only_on: Some(old.clone()),
            };
            if cell.push(signal).is_ok() {
                killed += 1;
            }
        }
        let timeout = self.inner.config.purge_timeout;
        if tokio::time::timeout(timeout, old.drained()).await.is_err() {
            return Err(PurgeError::Stuck {
                name: name.to_string(),
                version: old.identity.version.clone(),
                processes: old.processes(),
            });
        }
        if self.inner.code.drop_old(name, &old) {
            self.inner.counters.purges.fetch_add(1, Ordering::Relaxed);
            let what = format!(
                "purged old version {}: {killed} process(es) killed",
                old.identity.version
            );
            tracing::info!(module = %name, "{what}");
            self.inner.code.record(name, what, false);
        }
        Ok(killed)
    }

    /// Erlang's `soft_purge`: drop the old version of `name` unless a
    /// process still runs it. `Ok(false)` if there was none.
    pub fn soft_purge(&self, name: &str) -> Result<bool, PurgeError> {
        let Some(old) = self.inner.code.old(name) else {
            return Ok(false);
        };
        let processes = old.processes();
        if processes > 0 {
            return Err(PurgeError::InUse {
                name: name.to_string(),
                version: old.identity.version.clone(),
                processes,
            });
        }
        let dropped = self.inner.code.drop_old(name, &old);
        if dropped {
            self.inner.counters.purges.fetch_add(1, Ordering::Relaxed);
            let what = format!("purged old version {}", old.identity.version);
            tracing::info!(module = %name, "{what}");
            self.inner.code.record(name, what, false);
        }
        Ok(dropped)
    }

    /// Erlang's `delete`: the current version of `name` becomes old, so
    /// nothing new spawns on it; its processes run on until purged.
    pub fn delete(&self, name: &str) -> Result<(), LoadError> {
        self.inner.code.delete(name).map(|_| ())
    }

    /// Every module with its current and old versions and how many
    /// processes run each (`molt modules`).
    pub fn modules(&self) -> Vec<ModuleInfo> {
        self.inner.code.modules()
    }

    /// Recent loads, purges, refusals and failed upgrades, oldest first.
    pub fn code_events(&self) -> Vec<CodeEvent> {
        self.inner.code.events()
    }

    /// Suspend behaviour processes (Erlang's `sys:suspend`): they stop
    /// taking messages, which queue, until resumed. Signals still apply,
    /// so a suspended process can be killed. One result per pid.
    pub async fn suspend(
        &self,
        pids: &[Pid],
        timeout: Duration,
    ) -> Vec<Result<SysOutcome, SysError>> {
        self.inner.system(pids, SysOp::Suspend, timeout).await
    }

    /// Resume suspended processes (Erlang's `sys:resume`).
    pub async fn resume(
        &self,
        pids: &[Pid],
        timeout: Duration,
    ) -> Vec<Result<SysOutcome, SysError>> {
        self.inner.system(pids, SysOp::Resume, timeout).await
    }

    /// Move processes to the current version of their module now, suspended
    /// or not (Erlang's `sys:change_code`); the state migrates through
    /// `code_change`. One result per pid; a failure leaves that process on
    /// its version.
    pub async fn change_code(
        &self,
        pids: &[Pid],
        timeout: Duration,
    ) -> Vec<Result<SysOutcome, SysError>> {
        self.inner.system(pids, SysOp::ChangeCode, timeout).await
    }
}

impl NodeInner {
    /// Live processes running `version`.
    pub(crate) fn cells_on(&self, version: &Arc<ModuleVersion>) -> Vec<Arc<ProcessCell>> {
        self.table
            .all()
            .into_iter()
            .filter(|cell| cell.version().is_some_and(|v| Arc::ptr_eq(&v, version)))
            .collect()
    }

    /// After a switch: prompt the idle processes of the version that became
    /// old to migrate now (eager mode). Lazy ones move at their next message.
    pub(crate) fn after_install(&self, loaded: &Loaded, mode: UpgradeMode) {
        let Some(previous) = &loaded.previous else {
            return;
        };
        if mode != UpgradeMode::Eager || loaded.unchanged {
            return;
        }
        for cell in self.cells_on(previous) {
            cell.wake.ring();
        }
    }

    async fn system(
        &self,
        pids: &[Pid],
        op: SysOp,
        timeout: Duration,
    ) -> Vec<Result<SysOutcome, SysError>> {
        let mut waits = Vec::with_capacity(pids.len());
        for pid in pids {
            let (reply, answer) = oneshot::channel();
            let sent = match self.lookup(*pid) {
                Some(cell) => cell.push(Signal::System(SysRequest { op, reply })).is_ok(),
                None => false,
            };
            waits.push(sent.then_some(answer));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut results = Vec::with_capacity(waits.len());
        for wait in waits {
            let Some(answer) = wait else {
                results.push(Err(SysError::NoProc));
                continue;
            };
            results.push(match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => Err(SysError::NoProc),
                Err(_) => Err(SysError::Timeout(timeout.as_millis() as u64)),
            });
        }
        results
    }
}
