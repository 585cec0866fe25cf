//! `/alive`, `/ready` and the JSON API: the views (stable fields, the
//! ones `--format json` prints) and their handlers.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{PROCESSES_LIST_MAX, REQUEST_TIMEOUT, Served};
use crate::control::NodeReport;
use crate::runtime::{ProcessInfo, ProcessOrder};

/// A process, as `molt ps` and `/api/processes` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessView {
    /// Its pid, as printed (`<node.incarnation.serial>`).
    pub pid: String,
    /// Its module (`None` for a host mailbox).
    pub module: Option<String>,
    /// The version it runs.
    pub version: Option<String>,
    /// Its registered name.
    pub name: Option<String>,
    /// Messages waiting.
    pub mailbox: u64,
    /// Linear memory, in bytes.
    pub memory_bytes: u64,
    /// `running`, `suspended` or `hibernated`.
    pub status: String,
    /// Why its last move to a new version failed, if it did.
    pub upgrade_failure: Option<String>,
    /// Messages it took from its mailbox.
    pub messages_in: u64,
    /// Messages it sent.
    pub messages_out: u64,
    /// Time its guest ran, in µs.
    pub cpu_us: u64,
    /// The code its instance runs: `optimised`, or `baseline` until its
    /// next message after the optimised code is ready.
    pub code: String,
}

impl From<&ProcessInfo> for ProcessView {
    fn from(p: &ProcessInfo) -> ProcessView {
        ProcessView {
            pid: p.pid.to_string(),
            module: p.module.as_ref().map(|(m, _)| m.clone()),
            version: p.module.as_ref().map(|(_, v)| v.clone()),
            name: p.name.clone(),
            mailbox: p.mailbox_len as u64,
            memory_bytes: p.memory_bytes as u64,
            status: p.status().to_string(),
            upgrade_failure: p.upgrade_failure.clone(),
            messages_in: p.messages_in,
            messages_out: p.messages_out,
            cpu_us: p.cpu_ns / 1_000,
            code: if p.baseline_code {
                "baseline"
            } else {
                "optimised"
            }
            .to_string(),
        }
    }
}

/// A process in detail (`/api/processes/PID`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessDetailView {
    /// What the list shows of it.
    pub process: ProcessView,
    /// The process that spawned it linked, if one did.
    pub parent: Option<String>,
    /// It answered the inspection in time (else links, monitors and
    /// messages are empty: unknown).
    pub answered: bool,
    /// It traps exits.
    pub trap_exit: bool,
    /// Its links.
    pub links: Vec<String>,
    /// Monitors it holds.
    pub monitors: Vec<MonitorView>,
    /// Processes monitoring it.
    pub monitored_by: Vec<String>,
    /// The head of its mailbox, if asked (`?messages=N`).
    pub messages: Vec<crate::MessagePreview>,
}

/// A monitor a process holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorView {
    /// Its reference.
    pub reference: String,
    /// The process watched.
    pub pid: String,
}

impl From<crate::ProcessDetail> for ProcessDetailView {
    fn from(d: crate::ProcessDetail) -> ProcessDetailView {
        let pids = |v: &[molt_abi::Pid]| v.iter().map(|p| p.to_string()).collect();
        let inspected = d.inspected.clone().unwrap_or_default();
        ProcessDetailView {
            process: ProcessView::from(&d.info),
            parent: d.info.parent.map(|p| p.to_string()),
            answered: d.inspected.is_some(),
            trap_exit: inspected.trap_exit,
            links: pids(&inspected.links),
            monitors: inspected
                .monitors
                .iter()
                .map(|(r, p)| MonitorView {
                    reference: r.to_string(),
                    pid: p.to_string(),
                })
                .collect(),
            monitored_by: pids(&inspected.monitored_by),
            messages: inspected.messages,
        }
    }
}

/// How `/api/processes` orders its list (`?sort=pid`, `memory`,
/// `mailbox`, `messages` or `cpu`).
pub type Sort = ProcessOrder;

/// A page of a node's processes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessList {
    /// The node.
    pub node: String,
    /// Its processes alive.
    pub total: u64,
    /// Of those, the ones the search matched.
    pub matched: u64,
    /// The first `limit` of them in the order asked.
    pub processes: Vec<ProcessView>,
}

/// A module's version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionView {
    /// The version string.
    pub version: String,
    /// `behaviour` or `raw`.
    pub kind: String,
    /// SHA-256 of the module's bytes, hex.
    pub hash: String,
    /// Processes running it.
    pub processes: u64,
}

/// A module: its current and old versions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleView {
    /// The module's name.
    pub name: String,
    /// The current version.
    pub current: Option<VersionView>,
    /// The old version, not purged yet.
    pub old: Option<VersionView>,
}

/// Something the code server did or refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeEventView {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The module (or file).
    pub module: String,
    /// What happened.
    pub what: String,
    /// It failed.
    pub failure: bool,
}

/// A node's modules and recent code events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModulesView {
    /// The node.
    pub node: String,
    /// Its modules, by name.
    pub modules: Vec<ModuleView>,
    /// Recent code events, oldest first.
    pub events: Vec<CodeEventView>,
}

impl ModulesView {
    /// The view of `report`, from `node`.
    pub fn of(node: &str, report: crate::control::ModuleReport) -> ModulesView {
        let version = |v: crate::code::VersionInfo| VersionView {
            version: v.version,
            kind: v.kind,
            hash: v.hash,
            processes: v.processes,
        };
        ModulesView {
            node: node.to_string(),
            modules: report
                .modules
                .into_iter()
                .map(|m| ModuleView {
                    name: m.name,
                    current: m.current.map(version),
                    old: m.old.map(version),
                })
                .collect(),
            events: report
                .events
                .into_iter()
                .map(|e| CodeEventView {
                    at_ms: e.at_ms,
                    module: e.module,
                    what: e.what,
                    failure: e.failure,
                })
                .collect(),
        }
    }
}

/// An error, as the API answers it: `{"error": "..."}` with a status.
pub(crate) struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (self.0, Json(Body { error: self.1 })).into_response()
    }
}

pub(crate) type Answer<T> = Result<Json<T>, ApiError>;

/// Which node a request views (`?node=`; this one by default).
#[derive(Deserialize)]
pub(crate) struct OnNode {
    pub node: Option<String>,
}

impl Served {
    pub(crate) fn node_of(&self, asked: Option<String>) -> String {
        asked.unwrap_or_else(|| self.control.name().to_string())
    }

    /// Run `ask` (which may reach another node) within the request
    /// timeout: past it `504`, its error `502` naming the node.
    pub(crate) async fn within<T, E: std::fmt::Display>(
        &self,
        node: &str,
        ask: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, ApiError> {
        self.within_as(node, ask, |e| {
            ApiError(StatusCode::BAD_GATEWAY, format!("{node}: {e}"))
        })
        .await
    }

    /// Run `ask` within the request timeout (past it `504`); its error as
    /// `failed` answers it.
    pub(crate) async fn within_as<T, E>(
        &self,
        node: &str,
        ask: impl std::future::Future<Output = Result<T, E>>,
        failed: impl FnOnce(E) -> ApiError,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, ask).await {
            Ok(answer) => answer.map_err(failed),
            Err(_) => Err(ApiError(
                StatusCode::GATEWAY_TIMEOUT,
                format!("{node} did not answer within {REQUEST_TIMEOUT:?}"),
            )),
        }
    }
}

pub(crate) async fn alive() -> &'static str {
    "alive\n"
}

pub(crate) async fn ready(State(s): State<Served>) -> (StatusCode, String) {
    match &s.coordination {
        Some(c) if c.cluster().is_none() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: coordination has not joined a cluster yet\n".into(),
        ),
        _ => (StatusCode::OK, "ready\n".into()),
    }
}

pub(crate) async fn node(State(s): State<Served>, Query(on): Query<OnNode>) -> Answer<NodeReport> {
    let node = s.node_of(on.node);
    Ok(Json(s.within(&node, s.control.node_report(&node)).await?))
}

/// The cluster's nodes as `node` sees them, itself first.
pub(crate) async fn nodes(
    State(s): State<Served>,
    Query(on): Query<OnNode>,
) -> Answer<Vec<String>> {
    let node = s.node_of(on.node);
    let mut nodes = s.within(&node, s.control.nodes(&node)).await?;
    nodes.retain(|n| *n != node);
    nodes.insert(0, node);
    Ok(Json(nodes))
}

/// `/api/processes`' query.
#[derive(Deserialize)]
pub(crate) struct ListQuery {
    node: Option<String>,
    #[serde(default)]
    sort: Sort,
    limit: Option<usize>,
    /// Keep processes whose pid, module or registered name contains it.
    q: Option<String>,
}

/// Processes listed by default.
const LIST_DEFAULT: usize = 100;

pub(crate) async fn processes(
    State(s): State<Served>,
    Query(query): Query<ListQuery>,
) -> Answer<ProcessList> {
    let node = s.node_of(query.node);
    let limit = query.limit.unwrap_or(LIST_DEFAULT).min(PROCESSES_LIST_MAX);
    let order = query.sort;
    let search = query.q.as_deref().filter(|q| !q.is_empty());
    let top = s
        .within(&node, s.control.top_processes(&node, order, limit, search))
        .await?;
    Ok(Json(ProcessList {
        node,
        total: top.total,
        matched: top.matched,
        processes: top.processes.iter().map(ProcessView::from).collect(),
    }))
}

/// A pid as the API takes it: `<a.b.c>` or `a.b.c`.
fn pid_text(pid: &str) -> String {
    let bare = pid.trim_start_matches('<').trim_end_matches('>');
    format!("<{bare}>")
}

/// `/api/processes/{pid}`'s query.
#[derive(Deserialize)]
pub(crate) struct DetailQuery {
    node: Option<String>,
    /// Mailbox messages to describe.
    #[serde(default)]
    messages: usize,
}

pub(crate) async fn process(
    State(s): State<Served>,
    Path(pid): Path<String>,
    Query(query): Query<DetailQuery>,
) -> Answer<ProcessDetailView> {
    let node = s.node_of(query.node);
    let want = pid_text(&pid);
    let missing = || {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no process {want} on {node}"),
        )
    };
    // The pid as printed shortens node and incarnation: find it among the
    // node's processes (the brackets make the search match it alone).
    let top = s
        .within(
            &node,
            s.control
                .top_processes(&node, ProcessOrder::Pid, 1, Some(&want)),
        )
        .await?;
    let found = top
        .processes
        .iter()
        .find(|p| p.pid.to_string() == want)
        .ok_or_else(missing)?;
    let messages = query.messages.min(crate::runtime::MAILBOX_PREVIEW_MAX);
    let detail = s
        .within(&node, s.control.inspect(&node, found.pid, messages))
        .await?
        .ok_or_else(missing)?;
    Ok(Json(ProcessDetailView::from(detail)))
}

/// What an action answers.
#[derive(Serialize)]
pub(crate) struct Done {
    done: String,
}

/// An action: kill a process of this node (an exit signal `killed`, which
/// cannot be trapped). Needs the admin token.
pub(crate) async fn kill(
    State(s): State<Served>,
    headers: HeaderMap,
    Path(pid): Path<String>,
) -> Result<Json<Done>, ApiError> {
    admitted(&s, &headers)?;
    let want = pid_text(&pid);
    let node = s.control.name().to_string();
    let found = s
        .control
        .node()
        .processes()
        .into_iter()
        .find(|p| p.pid.to_string() == want)
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no process {want} on {node}"),
            )
        })?;
    s.control.node().exit(found.pid, "kill");
    tracing::info!(pid = %found.pid, "killed through the HTTP API");
    Ok(Json(Done {
        done: format!("sent kill to {want}"),
    }))
}

/// Refuse an action unless it carries the admin token.
fn admitted(s: &Served, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &s.admin_token else {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "actions are off: the node was started without --http-admin-token-file".into(),
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError(StatusCode::FORBIDDEN, "wrong admin token".into())),
        None => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "an action needs the admin token (Authorization: Bearer TOKEN)".into(),
        )),
    }
}

/// Compare without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

pub(crate) async fn modules(
    State(s): State<Served>,
    Query(on): Query<OnNode>,
) -> Answer<ModulesView> {
    let node = s.node_of(on.node);
    let report = s.within(&node, s.control.modules_of(&node)).await?;
    Ok(Json(ModulesView::of(&node, report)))
}

/// `/api/modules/{name}/purge`'s query.
#[derive(Deserialize)]
pub(crate) struct PurgeQuery {
    node: Option<String>,
    /// Only if no process runs the old version (Erlang's `soft_purge`).
    #[serde(default)]
    soft: bool,
}

/// An action: purge the old version of a module (hard: its processes are
/// killed; `?soft=true`: only if none runs it). Needs the admin token.
pub(crate) async fn purge(
    State(s): State<Served>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Query<PurgeQuery>,
) -> Result<Json<Done>, ApiError> {
    admitted(&s, &headers)?;
    let node = s.node_of(query.node);
    let purged = s
        .within_as(
            &node,
            s.control.purge_on(&node, &name, query.soft),
            refused(&node),
        )
        .await?;
    let done = match purged.old {
        Some(old) => format!(
            "purged {name} {old} on {node}: {} process(es) killed",
            purged.killed
        ),
        None => format!("{name} has no old version on {node}"),
    };
    tracing::info!(module = %name, %node, "purge through the HTTP API: {done}");
    Ok(Json(Done { done }))
}

/// An action: load the module in the request's body as `name` (a new
/// version, current at once; the old one stays until purged). Needs the
/// admin token; the body is at most `module_bytes_max`.
pub(crate) async fn load(
    State(s): State<Served>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(on): Query<OnNode>,
    body: axum::body::Bytes,
) -> Result<Json<Done>, ApiError> {
    admitted(&s, &headers)?;
    let node = s.node_of(on.node);
    let (module, version) = s
        .within_as(
            &node,
            s.control.load_on(&node, &name, body.to_vec()),
            refused(&node),
        )
        .await?;
    let done = format!("loaded {module} {version} on {node}");
    tracing::info!(%module, %version, %node, "load through the HTTP API");
    Ok(Json(Done { done }))
}

/// A code action's refusal: `422` with why.
fn refused(node: &str) -> impl FnOnce(crate::control::CodeError) -> ApiError + '_ {
    move |e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("{node}: {e}"))
}
