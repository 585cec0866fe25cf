//! The cluster-wide pages' data: supervision trees, the coordination
//! group (its status, names, locks, elections) and tables, each as JSON
//! views with pids as printed.

use std::collections::{BTreeMap, HashSet};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use molt_abi::Pid;
use molt_abi::table::{Reply, Request};
use serde::{Deserialize, Serialize};

use super::Served;
use super::api::{Answer, ApiError, OnNode};
use crate::cluster::{ClusterStatus, ElectionStatus, LockStatus, NameStatus};
use crate::control::CoordQueryError;
use crate::runtime::ProcessInfo;

/// Most processes one supervision-tree answer shows.
pub const TREE_PROCESSES_MAX: usize = 10_000;

/// A process in a supervision tree, with its children.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeNode {
    /// Its pid.
    pub pid: String,
    /// Its module.
    pub module: Option<String>,
    /// Its registered name.
    pub name: Option<String>,
    /// The processes it spawned linked that are still linked to it.
    pub children: Vec<TreeNode>,
}

/// The supervision trees of `processes`: each process under the live
/// process that spawned it linked. Roots are processes with children and
/// no such parent here; processes in no tree are left out.
pub fn trees(processes: &[ProcessInfo]) -> Vec<TreeNode> {
    let alive: HashSet<Pid> = processes.iter().map(|p| p.pid).collect();
    let mut children: BTreeMap<Pid, Vec<&ProcessInfo>> = BTreeMap::new();
    for p in processes {
        if let Some(parent) = p.parent.filter(|parent| alive.contains(parent)) {
            children.entry(parent).or_default().push(p);
        }
    }
    let mut budget = TREE_PROCESSES_MAX;
    processes
        .iter()
        .filter(|p| children.contains_key(&p.pid))
        .filter(|p| !p.parent.is_some_and(|parent| alive.contains(&parent)))
        .filter_map(|root| grow(root, &children, &mut budget))
        .collect()
}

fn grow(
    p: &ProcessInfo,
    children: &BTreeMap<Pid, Vec<&ProcessInfo>>,
    budget: &mut usize,
) -> Option<TreeNode> {
    if *budget == 0 {
        return None;
    }
    *budget -= 1;
    Some(TreeNode {
        pid: p.pid.to_string(),
        module: p.module.as_ref().map(|(m, _)| m.clone()),
        name: p.name.clone(),
        children: children
            .get(&p.pid)
            .into_iter()
            .flatten()
            .filter_map(|c| grow(c, children, budget))
            .collect(),
    })
}

pub(crate) async fn tree(
    State(s): State<Served>,
    Query(on): Query<OnNode>,
) -> Answer<Vec<TreeNode>> {
    let node = s.node_of(on.node);
    let all = s.within(&node, s.control.processes(&node)).await?;
    Ok(Json(trees(&all)))
}

/// A globally registered name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameView {
    /// The name.
    pub name: String,
    /// Its holder.
    pub pid: String,
    /// The registration's token.
    pub token: u64,
}

/// A lock: holders `(pid, mode, token)` and waiters `(pid, mode)` in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockView {
    /// The lock.
    pub lock: String,
    /// Its holders.
    pub holders: Vec<(String, String, u64)>,
    /// Its waiters, first in line first.
    pub queue: Vec<(String, String)>,
}

/// An election: its leader `(pid, term)` and candidates in line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionView {
    /// The election.
    pub group: String,
    /// Its leader and term.
    pub leader: Option<(String, u64)>,
    /// Candidates in line.
    pub candidates: Vec<String>,
}

impl From<NameStatus> for NameView {
    fn from(n: NameStatus) -> NameView {
        NameView {
            name: n.name,
            pid: n.pid.to_string(),
            token: n.token,
        }
    }
}

impl From<LockStatus> for LockView {
    fn from(l: LockStatus) -> LockView {
        LockView {
            lock: l.lock,
            holders: l
                .holders
                .into_iter()
                .map(|(p, m, t)| (p.to_string(), m.to_string(), t))
                .collect(),
            queue: l
                .queue
                .into_iter()
                .map(|(p, m)| (p.to_string(), m.to_string()))
                .collect(),
        }
    }
}

impl From<ElectionStatus> for ElectionView {
    fn from(e: ElectionStatus) -> ElectionView {
        ElectionView {
            group: e.group,
            leader: e.leader.map(|(p, t)| (p.to_string(), t)),
            candidates: e.candidates.iter().map(Pid::to_string).collect(),
        }
    }
}

impl Served {
    /// A coordination answer, or `503` for a node that runs none.
    async fn coord<T>(
        &self,
        node: &str,
        ask: impl std::future::Future<Output = Result<T, CoordQueryError>>,
    ) -> Result<T, ApiError> {
        self.within_as(node, ask, |e| match e {
            CoordQueryError::NotRunning(_) => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{node} runs no coordination group"),
            ),
            e => ApiError(StatusCode::BAD_GATEWAY, e.to_string()),
        })
        .await
    }
}

pub(crate) async fn cluster(
    State(s): State<Served>,
    Query(on): Query<OnNode>,
) -> Answer<ClusterStatus> {
    let node = s.node_of(on.node);
    Ok(Json(s.coord(&node, s.control.cluster_status(&node)).await?))
}

pub(crate) async fn names(
    State(s): State<Served>,
    Query(on): Query<OnNode>,
) -> Answer<Vec<NameView>> {
    let node = s.node_of(on.node);
    let names = s.coord(&node, s.control.global_names(&node)).await?;
    Ok(Json(names.into_iter().map(NameView::from).collect()))
}

pub(crate) async fn locks(
    State(s): State<Served>,
    Query(on): Query<OnNode>,
) -> Answer<Vec<LockView>> {
    let node = s.node_of(on.node);
    let locks = s.coord(&node, s.control.global_locks(&node)).await?;
    Ok(Json(locks.into_iter().map(LockView::from).collect()))
}

pub(crate) async fn elections(
    State(s): State<Served>,
    Query(on): Query<OnNode>,
) -> Answer<Vec<ElectionView>> {
    let node = s.node_of(on.node);
    let elections = s.coord(&node, s.control.elections(&node)).await?;
    Ok(Json(
        elections.into_iter().map(ElectionView::from).collect(),
    ))
}

/// A table, as `molt tables` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableView {
    /// Its name.
    pub name: String,
    /// `set`, `ordered_set`, `bag`, `lww`, `counter` or `or_set`.
    pub kind: String,
    /// Records in it, on this node's replica.
    pub records: u64,
    /// The last batch applied here.
    pub index: u64,
    /// Its secondary indexes.
    pub indexes: Vec<String>,
    /// Its replicas: `NODE (copy)`.
    pub replicas: Vec<String>,
    /// Subscribers on this node.
    pub subscribers: u64,
}

/// Most tables one answer describes.
pub const TABLES_LIST_MAX: usize = 1_000;

pub(crate) async fn tables(
    State(s): State<Served>,
    Query(on): Query<OnNode>,
) -> Answer<Vec<TableView>> {
    let node = s.node_of(on.node);
    let views = s
        .within_as(&node, table_views(&s.control, &node), |e| {
            ApiError(StatusCode::BAD_GATEWAY, e)
        })
        .await?;
    Ok(Json(views))
}

/// `node`'s tables (the first [`TABLES_LIST_MAX`]), described as `molt
/// tables` lists them; an error says what went wrong, on which node.
pub async fn table_views(control: &crate::Control, node: &str) -> Result<Vec<TableView>, String> {
    let failed = |e: &dyn std::fmt::Display| format!("{node}: {e}");
    let names = match control
        .table(node, Request::List)
        .await
        .map_err(|e| failed(&e))?
    {
        Reply::Tables(names) => names,
        Reply::Error(e) => return Err(failed(&e)),
        other => return Err(format!("{node} answered a table list with {other:?}")),
    };
    let mut views = Vec::new();
    for table in names.into_iter().take(TABLES_LIST_MAX) {
        let asked = control.table(node, Request::Info { table });
        // A table deleted since the list is left out.
        if let Reply::Info(i) = asked.await.map_err(|e| failed(&e))? {
            views.push(TableView {
                name: i.spec.name.clone(),
                kind: i.spec.kind.name().to_string(),
                records: i.records,
                index: i.index,
                indexes: i.spec.indexes.clone(),
                replicas: i
                    .spec
                    .replicas
                    .iter()
                    .map(|r| format!("{} ({})", r.node, r.copy.name()))
                    .collect(),
                subscribers: i.subscribers,
            });
        }
    }
    Ok(views)
}
