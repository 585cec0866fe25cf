//! Code across nodes: a load, purge, delete, module list or system request
//! on any node (the local one run directly, not over the network), and the
//! two-phase cluster-wide load.
//!
//! A cluster-wide load first prepares the version on every node at once
//! (compile, check, stage); only if every node prepared does any switch.
//! One failure aborts the rollout everywhere, so the cluster never runs two
//! current versions of a module because one node could not take the new
//! one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use molt_abi::Pid;
use tokio::task::JoinSet;

use super::code_control::{
    self, CodeAnswer, CodeOp, ModuleReport, Prepared, Purged, SYS_TIMEOUT_MS_MAX, Switched,
};
use super::frame::Frame;
use super::{DistError, DistInner, Distribution};
use crate::code::LoadOptions;
use crate::runtime::{Node, SysError, SysOp, SysOutcome};

/// What a cluster-wide load did on one node, as it happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutEvent {
    /// Phase one succeeded: the node compiled, checked and staged the
    /// version.
    Prepared {
        /// The node.
        node: String,
        /// What it prepared.
        prepared: Prepared,
    },
    /// Phase one failed: the rollout aborts.
    PrepareFailed {
        /// The node.
        node: String,
        /// Why.
        error: String,
    },
    /// The node dropped the version it staged (another node failed).
    Aborted {
        /// The node.
        node: String,
    },
    /// Phase two: the node switched (or had the version current already).
    Switched {
        /// The node.
        node: String,
        /// What changed.
        switched: Switched,
    },
    /// Phase two failed on the node (it changed since phase one, or was
    /// lost); the others switched.
    CommitFailed {
        /// The node.
        node: String,
        /// Why.
        error: String,
    },
}

/// One node's failure in a cluster-wide load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFailure {
    /// The node.
    pub node: String,
    /// Why, as the node (or the connection to it) said.
    pub error: String,
}

impl std::fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.node, self.error)
    }
}

/// Why a cluster-wide load did not switch every node.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// No node was named.
    #[error("no nodes to load on")]
    NoNodes,
    /// Phase one failed on these nodes; the others dropped what they
    /// staged. No node switched.
    #[error("load aborted, no node switched: {}", list(.failures))]
    Prepare {
        /// Each node that failed, and why, in the order named.
        failures: Vec<NodeFailure>,
    },
    /// Every node prepared, but the switch failed on these (a node changed
    /// between the phases, or was lost); the others switched.
    #[error(
        "switched on {} node(s) but failed on: {}",
        .switched.len(),
        list(.failures)
    )]
    Commit {
        /// The nodes that switched, in the order named.
        switched: Vec<(String, Switched)>,
        /// Each node that failed, and why, in the order named.
        failures: Vec<NodeFailure>,
    },
}

fn list(failures: &[NodeFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Distribution {
    /// Run a code request on `node` (this node's own name runs it here).
    pub async fn code_on(&self, node: &str, op: CodeOp) -> Result<CodeAnswer, DistError> {
        self.inner.code(node, op).await
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
    ) -> Result<(String, String), DistError> {
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
    ) -> Result<Switched, DistError> {
        let op = CodeOp::Load {
            name: name.to_string(),
            bytes,
            options,
        };
        match self.inner.code(node, op).await? {
            CodeAnswer::Switched(s) => Ok(s),
            other => Err(unexpected(node, other)),
        }
    }

    /// The modules of `node` and its recent code events (`molt modules`).
    pub async fn modules_of(&self, node: &str) -> Result<ModuleReport, DistError> {
        match self.inner.code(node, CodeOp::Modules).await? {
            CodeAnswer::Modules(report) => Ok(report),
            other => Err(unexpected(node, other)),
        }
    }

    /// Purge the old version of `module` on `node`: kill its processes, or
    /// with `soft` refuse if it has any.
    pub async fn purge_on(
        &self,
        node: &str,
        module: &str,
        soft: bool,
    ) -> Result<Purged, DistError> {
        let op = CodeOp::Purge {
            module: module.to_string(),
            soft,
        };
        match self.inner.code(node, op).await? {
            CodeAnswer::Purged(p) => Ok(p),
            other => Err(unexpected(node, other)),
        }
    }

    /// Make the current version of `module` on `node` old (Erlang's
    /// `delete`); returns that version, `None` if there was no current.
    pub async fn delete_on(&self, node: &str, module: &str) -> Result<Option<String>, DistError> {
        let op = CodeOp::Delete {
            module: module.to_string(),
        };
        match self.inner.code(node, op).await? {
            CodeAnswer::Deleted { version } => Ok(version),
            other => Err(unexpected(node, other)),
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
    ) -> Result<Vec<Result<SysOutcome, SysError>>, DistError> {
        let request = CodeOp::Sys {
            op,
            pids,
            timeout_ms: timeout.as_millis() as u64,
        };
        match self.inner.code(node, request).await? {
            CodeAnswer::Sys(results) => Ok(results),
            other => Err(unexpected(node, other)),
        }
    }

    /// Load module bytes on every node of `nodes` (this node's own name
    /// included, if it is there), all or none: phase one prepares the
    /// version on every node at once; if any fails, the others drop it and
    /// no node switches; otherwise every node switches (phase two, also at
    /// once). `progress` hears about each node as it answers. Returns what
    /// each node did, in the order named.
    pub async fn load_cluster(
        &self,
        nodes: &[String],
        name: &str,
        bytes: Vec<u8>,
        options: LoadOptions,
        mut progress: impl FnMut(RolloutEvent),
    ) -> Result<Vec<(String, Switched)>, RolloutError> {
        let mut order: Vec<String> = Vec::with_capacity(nodes.len());
        for node in nodes {
            if !order.contains(node) {
                order.push(node.clone());
            }
        }
        if order.is_empty() {
            return Err(RolloutError::NoNodes);
        }
        let rank = |node: &str| order.iter().position(|n| n == node);

        // Phase one: prepare everywhere.
        let mut prepared: Vec<(String, Prepared)> = Vec::new();
        let mut failures = Vec::new();
        let prepare = |_: &str| CodeOp::Prepare {
            name: name.to_string(),
            bytes: bytes.clone(),
            purge: options.purge,
        };
        self.inner
            .on_each(&order, prepare, |node, answer| match answer {
                Ok(CodeAnswer::Prepared(p)) => {
                    progress(RolloutEvent::Prepared {
                        node: node.clone(),
                        prepared: p.clone(),
                    });
                    prepared.push((node, p));
                }
                other => {
                    let error = failure_text(&node, other);
                    progress(RolloutEvent::PrepareFailed {
                        node: node.clone(),
                        error: error.clone(),
                    });
                    failures.push(NodeFailure { node, error });
                }
            })
            .await;
        if !failures.is_empty() {
            let hashes: HashMap<String, String> = prepared
                .into_iter()
                .map(|(node, p)| (node, p.hash))
                .collect();
            let nodes: Vec<String> = hashes.keys().cloned().collect();
            let abort = |node: &str| CodeOp::Abort {
                hash: hashes[node].clone(),
            };
            self.inner
                .on_each(&nodes, abort, |node, answer| {
                    if let Err(e) = answer {
                        // Its staged version goes anyway past STAGED_MAX.
                        tracing::warn!(%node, "abort not acknowledged: {e}");
                    }
                    progress(RolloutEvent::Aborted { node });
                })
                .await;
            failures.sort_by_key(|f| rank(&f.node));
            return Err(RolloutError::Prepare { failures });
        }

        // Phase two: every node can switch; switch them all.
        let hashes: HashMap<String, String> = prepared
            .into_iter()
            .map(|(node, p)| (node, p.hash))
            .collect();
        let commit = |node: &str| CodeOp::Commit {
            hash: hashes[node].clone(),
            options,
        };
        let mut switched = Vec::new();
        self.inner
            .on_each(&order, commit, |node, answer| match answer {
                Ok(CodeAnswer::Switched(s)) => {
                    progress(RolloutEvent::Switched {
                        node: node.clone(),
                        switched: s.clone(),
                    });
                    switched.push((node, s));
                }
                other => {
                    let error = failure_text(&node, other);
                    progress(RolloutEvent::CommitFailed {
                        node: node.clone(),
                        error: error.clone(),
                    });
                    failures.push(NodeFailure { node, error });
                }
            })
            .await;
        switched.sort_by_key(|(node, _)| rank(node));
        if !failures.is_empty() {
            failures.sort_by_key(|f| rank(&f.node));
            return Err(RolloutError::Commit { switched, failures });
        }
        Ok(switched)
    }
}

impl DistInner {
    /// Run a code request on `node`: here if it is this node, else over
    /// its connection.
    async fn code(self: &Arc<Self>, node: &str, op: CodeOp) -> Result<CodeAnswer, DistError> {
        let timeout = match &op {
            CodeOp::Sys { timeout_ms, .. } => {
                Duration::from_millis((*timeout_ms).min(SYS_TIMEOUT_MS_MAX))
                    + self.config.request_timeout
            }
            _ => self.config.code_request_timeout,
        };
        let result = if node == self.name {
            let Some(local) = self.node() else {
                return Err(DistError::NoReply(format!("{node} (stopped)")));
            };
            code_control::run(&Node::from_inner(local), &self.staging, op).await
        } else {
            match self
                .ask_within(node, timeout, |id| Frame::Code { id, op })
                .await?
                .1
            {
                Frame::CodeReply { result, .. } => result,
                other => return Err(DistError::NoReply(format!("{node} (answered {other:?})"))),
            }
        };
        result.map_err(|reason| DistError::Code {
            node: node.to_string(),
            reason,
        })
    }

    /// Run the request `make` builds on every node of `nodes` at once and
    /// hand each answer to `each` as it arrives.
    async fn on_each(
        self: &Arc<Self>,
        nodes: &[String],
        make: impl Fn(&str) -> CodeOp,
        mut each: impl FnMut(String, Result<CodeAnswer, DistError>),
    ) {
        let mut tasks = JoinSet::new();
        let mut names = HashMap::new();
        for node in nodes {
            let dist = self.clone();
            let op = make(node);
            let target = node.clone();
            let task = tasks.spawn(async move { dist.code(&target, op).await });
            names.insert(task.id(), node.clone());
        }
        while let Some(joined) = tasks.join_next_with_id().await {
            let (id, answer) = match joined {
                Ok((id, answer)) => (id, answer),
                Err(e) => (
                    e.id(),
                    Err(DistError::NoReply(format!("request task failed: {e}"))),
                ),
            };
            let node = names.remove(&id).expect("every task is named");
            each(node, answer);
        }
    }
}

/// Why a node's answer is not the one wanted, without repeating its name.
fn failure_text(node: &str, answer: Result<CodeAnswer, DistError>) -> String {
    match answer {
        Err(DistError::Code { reason, .. }) => reason,
        Err(e) => e.to_string(),
        Ok(other) => unexpected(node, other).to_string(),
    }
}

fn unexpected(node: &str, answer: CodeAnswer) -> DistError {
    DistError::NoReply(format!("{node} (answered {answer:?})"))
}
