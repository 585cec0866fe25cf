//! Code control over the wire: what a node can be asked to do with its code
//! (the two phases of a cluster-wide load, a one-node load, purge, delete,
//! the module list, system requests to processes), the answers, the
//! versions staged between the two phases, and running a request on the
//! node that gets it.
//!
//! Invariant: a request runs here exactly as the node's own API would run
//! it (`Node::install`, `Node::purge`, ...); this file adds staging and
//! turns errors into text for the wire, nothing else. The local node runs
//! requests through the same [`run`] as remote ones.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use molt_abi::Pid;
use serde::{Deserialize, Serialize};

use crate::code::{CodeEvent, Compiled, LoadError, LoadOptions, ModuleInfo, ModuleVersion, Purge};
use crate::runtime::{Node, SysError, SysOp, SysOutcome};

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

/// What a code-control request asks of the node that gets it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CodeOp {
    /// Phase one of a cluster-wide load: compile and check the module, and
    /// check that installing it with `purge` would switch now; keep it
    /// staged (by content hash) for [`CodeOp::Commit`]. Nothing changes
    /// for running code.
    Prepare {
        /// The name of a module without a `molt.module` section.
        name: String,
        /// The module file.
        #[serde(with = "molt_abi::codec::bytes")]
        bytes: Vec<u8>,
        /// The purge the commit will use.
        purge: Purge,
    },
    /// Phase two: make the staged version with this hash current.
    Commit {
        /// Content hash from [`Prepared::hash`].
        hash: String,
        /// How to switch.
        options: LoadOptions,
    },
    /// Drop the staged version with this hash (another node failed).
    Abort {
        /// Content hash from [`Prepared::hash`].
        hash: String,
    },
    /// Load on this node alone: prepare and install in one step.
    Load {
        /// The name of a module without a `molt.module` section.
        name: String,
        /// The module file.
        #[serde(with = "molt_abi::codec::bytes")]
        bytes: Vec<u8>,
        /// How to switch.
        options: LoadOptions,
    },
    /// Purge the old version of a module: kill its processes (hard), or
    /// drop it only if it has none (`soft`).
    Purge {
        /// Module name.
        module: String,
        /// Soft purge: refuse if processes still run it.
        soft: bool,
    },
    /// Make the current version of a module old (Erlang's `delete`).
    Delete {
        /// Module name.
        module: String,
    },
    /// The module list and recent code events (`molt modules`).
    Modules,
    /// A system request to processes of the node (suspend, resume, change
    /// code), answered per pid.
    Sys {
        /// What to ask.
        op: SysOp,
        /// The processes, at most [`SYS_PIDS_MAX`].
        pids: Vec<Pid>,
        /// How long to wait for them, in ms (at most
        /// [`SYS_TIMEOUT_MS_MAX`]).
        timeout_ms: u64,
    },
}

/// What phase one found on a node: the version compiled, checked, staged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepared {
    /// Module name.
    pub module: String,
    /// Its version.
    pub version: String,
    /// Full SHA-256 of the module bytes, hex: the staging key.
    pub hash: String,
    /// Compiled now; `false` if the node had it compiled already.
    pub compiled: bool,
    /// How long compiling (or finding it compiled) took, in ms.
    pub compile_ms: u64,
    /// The version current on the node now, if any.
    pub current: Option<String>,
}

/// What a commit or a one-node load did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switched {
    /// Module name.
    pub module: String,
    /// The version now current.
    pub version: String,
    /// The version that became old, if any.
    pub previous: Option<String>,
    /// The version was current already: nothing changed.
    pub unchanged: bool,
    /// Processes a hard purge killed first.
    pub purged: u64,
}

/// What a purge did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purged {
    /// Module name.
    pub module: String,
    /// The old version dropped; `None` if there was none.
    pub old: Option<String>,
    /// Processes killed (a hard purge).
    pub killed: u64,
}

/// A node's modules and its recent code events (`molt modules`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleReport {
    /// Every module, sorted by name.
    pub modules: Vec<ModuleInfo>,
    /// Recent loads, purges, refusals and failed upgrades, oldest first.
    pub events: Vec<CodeEvent>,
}

/// The answer to a [`CodeOp`] that succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CodeAnswer {
    /// To `Prepare`.
    Prepared(Prepared),
    /// To `Commit` and `Load`.
    Switched(Switched),
    /// To `Abort`: whether a version with that hash was staged.
    Aborted {
        /// It was staged (and is dropped now).
        staged: bool,
    },
    /// To `Purge`.
    Purged(Purged),
    /// To `Delete`: the version that became old, if there was a current.
    Deleted {
        /// That version.
        version: Option<String>,
    },
    /// To `Modules`.
    Modules(ModuleReport),
    /// To `Sys`: one result per pid, in order.
    Sys(Vec<Result<SysOutcome, SysError>>),
}

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

/// Run a code-control request on `node`. Errors come back as text, as the
/// wire carries them; refusals of new code are kept in the node's code
/// events, so `molt modules` there shows them.
pub(crate) async fn run(node: &Node, staging: &Staging, op: CodeOp) -> Result<CodeAnswer, String> {
    match op {
        CodeOp::Prepare { name, bytes, purge } => prepare(node, staging, name, bytes, purge)
            .await
            .map(CodeAnswer::Prepared),
        CodeOp::Commit { hash, options } => {
            let Some(version) = staging.take(&hash) else {
                return Err(format!(
                    "not staged: no version with hash {} waits here (dropped past STAGED_MAX = {STAGED_MAX}, aborted, or committed already)",
                    short(&hash)
                ));
            };
            let module = version.identity.name.clone();
            let new = version.identity.version.clone();
            let loaded = node
                .install(version, options)
                .await
                .map_err(|e| refused(node, &module, Some(&new), e))?;
            Ok(CodeAnswer::Switched(switched(&loaded)))
        }
        CodeOp::Abort { hash } => Ok(CodeAnswer::Aborted {
            staged: staging.take(&hash).is_some(),
        }),
        CodeOp::Load {
            name,
            bytes,
            options,
        } => {
            let (version, _, _) = compile(node, name, bytes).await?;
            let module = version.identity.name.clone();
            let new = version.identity.version.clone();
            let loaded = node
                .install(version, options)
                .await
                .map_err(|e| refused(node, &module, Some(&new), e))?;
            Ok(CodeAnswer::Switched(switched(&loaded)))
        }
        CodeOp::Purge { module, soft } => {
            let old = node.code().old(&module).map(|v| v.identity.version.clone());
            let killed = if soft {
                let dropped = node.soft_purge(&module).map_err(|e| e.to_string())?;
                return Ok(CodeAnswer::Purged(Purged {
                    module,
                    old: old.filter(|_| dropped),
                    killed: 0,
                }));
            } else {
                node.purge(&module).await.map_err(|e| e.to_string())?
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
            node.delete(&module).map_err(|e| e.to_string())?;
            Ok(CodeAnswer::Deleted { version })
        }
        CodeOp::Modules => Ok(CodeAnswer::Modules(ModuleReport {
            modules: node.modules(),
            events: node.code_events(),
        })),
        CodeOp::Sys {
            op,
            pids,
            timeout_ms,
        } => {
            if pids.len() > SYS_PIDS_MAX {
                return Err(format!(
                    "{} pids in one request; SYS_PIDS_MAX is {SYS_PIDS_MAX}",
                    pids.len()
                ));
            }
            let timeout = Duration::from_millis(timeout_ms.min(SYS_TIMEOUT_MS_MAX));
            let results = match op {
                SysOp::Suspend => node.suspend(&pids, timeout).await,
                SysOp::Resume => node.resume(&pids, timeout).await,
                SysOp::ChangeCode => node.change_code(&pids, timeout).await,
            };
            debug_assert_eq!(results.len(), pids.len(), "one result per pid");
            Ok(CodeAnswer::Sys(results))
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
) -> Result<Prepared, String> {
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
) -> Result<(Arc<ModuleVersion>, Compiled, u64), String> {
    let started = Instant::now();
    let compiler = node.clone();
    let fallback = name.clone();
    let (version, compiled) =
        tokio::task::spawn_blocking(move || compiler.code().prepare(&bytes, &fallback))
            .await
            .map_err(|e| format!("compile task failed: {e}"))?
            .map_err(|e| refused(node, &name, None, e))?;
    Ok((version, compiled, started.elapsed().as_millis() as u64))
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

/// Keep a refused load in the node's code events and return its text.
fn refused(node: &Node, module: &str, version: Option<&str>, error: LoadError) -> String {
    let why = error.to_string();
    let what = match version {
        Some(version) => format!("refused version {version}: {why}"),
        None => format!("refused: {why}"),
    };
    node.code().record(module, what, true);
    why
}

/// The first 16 hex digits of a hash, as versions without a section show it.
fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}
