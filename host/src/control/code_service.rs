//! The code service: what a node can be asked to do with its code (the
//! two phases of a cluster-wide load, a one-node load, purge, delete, the
//! module list, system requests to processes), the versions staged between
//! the two phases, and running a request on the node that gets it.
//!
//! Invariant: a request runs here exactly as the node's own API would run
//! it (`Node::install`, `Node::purge`, ...); this file adds staging and
//! turns results into wire types, nothing else. The local node runs
//! requests through the same [`CodeService::run`] as remote ones.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::code::{Compiled, LoadError, ModuleVersion, Purge};
use crate::net::wire::{CodeAnswer, CodeOp, Prepared, Purged, Switched, WireCodeError};
use crate::net::{PeerId, Service, ServiceId};
use crate::runtime::{Node, SysOp, WeakNode};

/// Most prepared versions a node keeps staged between the two phases of
/// cluster-wide loads; staging one more drops the oldest, whose commit
/// then fails on this node with "not staged".
pub const STAGED_MAX: usize = 8;

/// Most code requests from other nodes running at once on a node; past it
/// a request is refused at once ("busy") rather than queued.
pub const CODE_REQUESTS_MAX: usize = 16;

/// Most pids in one system request.
pub const SYS_PIDS_MAX: usize = 4_096;

/// Longest a system request may wait for processes to answer, in ms.
pub const SYS_TIMEOUT_MS_MAX: u64 = 60_000;

/// Versions prepared by phase one and waiting for their commit, newest
/// last, at most [`STAGED_MAX`].
#[derive(Default)]
pub(crate) struct Staging {
    versions: Mutex<VecDeque<Arc<ModuleVersion>>>,
}

impl Staging {
    /// Stage `version`; a version with the same hash moves to the back,
    /// and the oldest goes past [`STAGED_MAX`].
    fn put(&self, version: Arc<ModuleVersion>) {
        let mut versions = self.versions.lock().expect("staging poisoned");
        versions.retain(|v| v.identity.hash != version.identity.hash);
        versions.push_back(version);
        while versions.len() > STAGED_MAX {
            versions.pop_front();
        }
        debug_assert!(versions.len() <= STAGED_MAX);
    }

    /// Take the staged version with `hash` out.
    fn take(&self, hash: &str) -> Option<Arc<ModuleVersion>> {
        let mut versions = self.versions.lock().expect("staging poisoned");
        let at = versions.iter().position(|v| v.identity.hash == hash)?;
        versions.remove(at)
    }
}

/// The code service of one node.
pub(crate) struct CodeService {
    /// Weak: the distribution layer holds this service, and must not keep
    /// the node alive.
    node: WeakNode,
    staging: Staging,
    /// Room for code requests from other nodes (`CODE_REQUESTS_MAX`).
    running: Arc<Semaphore>,
}

impl Service for CodeService {
    const ID: ServiceId = 2;
    const NAME: &'static str = "code";
    type Request = CodeOp;
    type Reply = CodeAnswer;
    type Error = WireCodeError;
    type Notice = crate::net::Never;

    async fn request(
        self: Arc<Self>,
        peer: PeerId,
        op: CodeOp,
    ) -> Result<CodeAnswer, WireCodeError> {
        // Compiling, purging and waiting for processes take a while; past
        // the limit a request is refused at once rather than queued.
        let Ok(_permit) = self.running.clone().try_acquire_owned() else {
            tracing::warn!(node = %peer.name, "code request refused: CODE_REQUESTS_MAX running");
            return Err(WireCodeError::Busy(CODE_REQUESTS_MAX as u64));
        };
        let result = self.run(op).await;
        if let Err(why) = &result {
            tracing::warn!(node = %peer.name, "code request refused: {why:?}");
        }
        result
    }
}

impl CodeService {
    pub(crate) fn new(node: &Node) -> Self {
        CodeService {
            node: node.downgrade(),
            staging: Staging::default(),
            running: Arc::new(Semaphore::new(CODE_REQUESTS_MAX)),
        }
    }

    /// Run a code request on this node. Refusals of new code are kept in
    /// the node's code events, so `molt modules` there shows them.
    pub(crate) async fn run(&self, op: CodeOp) -> Result<CodeAnswer, WireCodeError> {
        let Some(node) = self.node.upgrade() else {
            return Err(WireCodeError::Failed("the node is stopping".into()));
        };
        let (node, staging) = (&node, &self.staging);
        match op {
            CodeOp::Prepare { name, bytes, purge } => {
                prepare(node, staging, name, bytes, purge.into())
                    .await
                    .map(CodeAnswer::Prepared)
            }
            CodeOp::Commit { hash, options } => {
                let Some(version) = staging.take(&hash) else {
                    return Err(WireCodeError::NotStaged(hash));
                };
                switch(node, version, options.into()).await
            }
            CodeOp::Abort { hash } => Ok(CodeAnswer::Aborted(staging.take(&hash).is_some())),
            CodeOp::Load {
                name,
                bytes,
                options,
            } => {
                let (version, _, _) = compile(node, name, bytes).await?;
                switch(node, version, options.into()).await
            }
            CodeOp::Purge { module, soft } => {
                let old = node.code().old(&module).map(|v| v.identity.version.clone());
                let purge_error = |e: &crate::code::PurgeError| WireCodeError::Purge(e.into());
                let killed = if soft {
                    let dropped = node.soft_purge(&module).map_err(|e| purge_error(&e))?;
                    return Ok(CodeAnswer::Purged(Purged {
                        module,
                        old: old.filter(|_| dropped),
                        killed: 0,
                    }));
                } else {
                    node.purge(&module).await.map_err(|e| purge_error(&e))?
                };
                Ok(CodeAnswer::Purged(Purged {
                    module,
                    old,
                    killed: killed as u64,
                }))
            }
            CodeOp::Delete { module } => {
                let version = node
                    .code()
                    .current(&module)
                    .map(|v| v.identity.version.clone());
                node.delete(&module)
                    .map_err(|e| WireCodeError::Load((&e).into()))?;
                Ok(CodeAnswer::Deleted(version))
            }
            CodeOp::Modules => Ok(CodeAnswer::Modules(
                node.modules().into_iter().map(Into::into).collect(),
                node.code_events().into_iter().map(Into::into).collect(),
            )),
            CodeOp::Sys {
                op,
                pids,
                timeout_ms,
            } => {
                if pids.len() > SYS_PIDS_MAX {
                    return Err(WireCodeError::TooManyPids(
                        pids.len() as u64,
                        SYS_PIDS_MAX as u64,
                    ));
                }
                let timeout = Duration::from_millis(timeout_ms.min(SYS_TIMEOUT_MS_MAX));
                let results = match SysOp::from(op) {
                    SysOp::Suspend => node.suspend(&pids, timeout).await,
                    SysOp::Resume => node.resume(&pids, timeout).await,
                    SysOp::ChangeCode => node.change_code(&pids, timeout).await,
                };
                debug_assert_eq!(results.len(), pids.len(), "one result per pid");
                Ok(CodeAnswer::Sys(
                    results.into_iter().map(Into::into).collect(),
                ))
            }
        }
    }
}

/// Phase one: compile off the async threads, check that the version could
/// switch now, and stage it.
async fn prepare(
    node: &Node,
    staging: &Staging,
    name: String,
    bytes: Vec<u8>,
    purge: Purge,
) -> Result<Prepared, WireCodeError> {
    let (version, compiled, compile_ms) = compile(node, name, bytes).await?;
    let module = version.identity.name.clone();
    let new = version.identity.version.clone();
    node.can_install(&version, purge)
        .map_err(|e| refused(node, &module, Some(&new), e))?;
    let current = node
        .code()
        .current(&module)
        .map(|c| c.identity.version.clone());
    let prepared = Prepared {
        module,
        version: new,
        hash: version.identity.hash.clone(),
        compiled: compiled == Compiled::Fresh,
        compile_ms,
        current,
    };
    staging.put(version);
    Ok(prepared)
}

/// Compile and check `bytes` on a blocking thread (a connection's reader
/// must not wait for a compiler), or find them compiled; with the time it
/// took in ms.
async fn compile(
    node: &Node,
    name: String,
    bytes: Vec<u8>,
) -> Result<(Arc<ModuleVersion>, Compiled, u64), WireCodeError> {
    let started = Instant::now();
    let compiler = node.clone();
    let fallback = name.clone();
    let (version, compiled) =
        tokio::task::spawn_blocking(move || compiler.code().prepare(&bytes, &fallback))
            .await
            .map_err(|e| WireCodeError::Failed(format!("compile task failed: {e}")))?
            .map_err(|e| refused(node, &name, None, e))?;
    Ok((version, compiled, started.elapsed().as_millis() as u64))
}

/// Make `version` current (phase two, or a one-node load); a refusal is
/// kept in the node's code events.
async fn switch(
    node: &Node,
    version: Arc<ModuleVersion>,
    options: crate::code::LoadOptions,
) -> Result<CodeAnswer, WireCodeError> {
    let module = version.identity.name.clone();
    let new = version.identity.version.clone();
    let loaded = node
        .install(version, options)
        .await
        .map_err(|e| refused(node, &module, Some(&new), e))?;
    Ok(CodeAnswer::Switched(switched(&loaded)))
}

fn switched(loaded: &crate::code::Loaded) -> Switched {
    Switched {
        module: loaded.version.identity.name.clone(),
        version: loaded.version.identity.version.clone(),
        previous: loaded.previous.as_ref().map(|p| p.identity.version.clone()),
        unchanged: loaded.unchanged,
        purged: loaded.purged as u64,
    }
}

/// Keep a refused load in the node's code events and return it for the
/// wire.
fn refused(node: &Node, module: &str, version: Option<&str>, error: LoadError) -> WireCodeError {
    let why = error.to_string();
    let what = match version {
        Some(version) => format!("refused version {version}: {why}"),
        None => format!("refused: {why}"),
    };
    node.code().record(module, what, true);
    WireCodeError::Load((&error).into())
}
