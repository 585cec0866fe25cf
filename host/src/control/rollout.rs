//! The two-phase cluster-wide load, on the one-node operations of
//! [`Control`].
//!
//! A cluster-wide load first prepares the version on every node at once
//! (compile, check, stage); only if every node prepared does any switch.
//! One failure aborts the rollout everywhere, so the cluster never runs two
//! current versions of a module because one node could not take the new
//! one.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::JoinSet;

use super::{CodeError, Control, Prepared, Switched};
use crate::code::LoadOptions;

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
#[derive(Debug)]
pub struct NodeFailure {
    /// The node.
    pub node: String,
    /// Why, as the node (or the connection to it) said.
    pub error: CodeError,
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

impl Control {
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
        let prepare = |control: Control, node: String| {
            let (name, bytes) = (name.to_string(), bytes.clone());
            async move { control.prepare_on(&node, &name, bytes, options.purge).await }
        };
        self.on_each(&order, prepare, |node, answer| match answer {
            Ok(p) => {
                progress(RolloutEvent::Prepared {
                    node: node.clone(),
                    prepared: p.clone(),
                });
                prepared.push((node, p));
            }
            Err(error) => {
                progress(RolloutEvent::PrepareFailed {
                    node: node.clone(),
                    error: error.to_string(),
                });
                failures.push(NodeFailure { node, error });
            }
        })
        .await;
        let hashes: HashMap<String, String> = prepared
            .into_iter()
            .map(|(node, p)| (node, p.hash))
            .collect();
        if !failures.is_empty() {
            let nodes: Vec<String> = hashes.keys().cloned().collect();
            let abort = |control: Control, node: String| {
                let hash = hashes[&node].clone();
                async move { control.abort_on(&node, &hash).await }
            };
            self.on_each(&nodes, abort, |node, answer| {
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
        let commit = |control: Control, node: String| {
            let hash = hashes[&node].clone();
            async move { control.commit_on(&node, &hash, options).await }
        };
        let mut switched = Vec::new();
        self.on_each(&order, commit, |node, answer| match answer {
            Ok(s) => {
                progress(RolloutEvent::Switched {
                    node: node.clone(),
                    switched: s.clone(),
                });
                switched.push((node, s));
            }
            Err(error) => {
                progress(RolloutEvent::CommitFailed {
                    node: node.clone(),
                    error: error.to_string(),
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

    /// Run the request `ask` makes for each node of `nodes`, all at once,
    /// and hand each answer to `each` as it arrives.
    async fn on_each<T, F>(
        &self,
        nodes: &[String],
        ask: impl Fn(Control, String) -> F,
        mut each: impl FnMut(String, Result<T, CodeError>),
    ) where
        T: Send + 'static,
        F: Future<Output = Result<T, CodeError>> + Send + 'static,
    {
        let mut tasks = JoinSet::new();
        let mut names = HashMap::new();
        for node in nodes {
            let task = tasks.spawn(ask(self.clone(), node.clone()));
            names.insert(task.id(), node.clone());
        }
        while let Some(joined) = tasks.join_next_with_id().await {
            let (id, answer) = match joined {
                Ok((id, answer)) => (id, answer),
                Err(e) => (
                    e.id(),
                    Err(CodeError::Failed(format!("request task failed: {e}"))),
                ),
            };
            let node = names.remove(&id).expect("every task is named");
            each(node, answer);
        }
    }
}
