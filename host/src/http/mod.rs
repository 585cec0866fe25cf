//! The HTTP endpoint every `molt node` serves (on a loopback address by
//! default): the dashboard at `/`, `/alive`, `/ready`, `/metrics`
//! (OpenMetrics text), a JSON API under `/api/` with the same data the
//! CLI shows and a server-sent events stream `/api/events`, read through
//! [`Control`], so that any node of the cluster can be viewed through the
//! one serving (`?node=NAME`).
//!
//! Everything is read-only except actions, which need the admin token
//! given at start (`Authorization: Bearer TOKEN`); without a token set,
//! every action is refused.

mod api;
mod cluster;
mod dashboard;
mod events;
mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tokio::sync::oneshot;

use crate::Control;
use crate::cluster::Coordination;

pub use api::{
    CodeEventView, ModuleView, ModulesView, MonitorView, ProcessDetailView, ProcessList,
    ProcessView, Sort, VersionView,
};
pub use cluster::{
    ElectionView, LockView, NameView, TABLES_LIST_MAX, TREE_PROCESSES_MAX, TableView, TreeNode,
    table_views, trees,
};
pub use events::{STREAMS_MAX, TICK};
pub use metrics::render as render_metrics;

pub use crate::control::{NodeReport, PeerReport};

/// The port `molt node` serves HTTP on unless told otherwise (on
/// 127.0.0.1).
pub const DEFAULT_PORT: u16 = 4380;

/// Most processes one `/api/processes` answer lists (`?limit=` is capped
/// to it).
pub const PROCESSES_LIST_MAX: usize = 10_000;

/// How long one API request may take (a node asked through this one
/// included) before it answers `504`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How a node serves HTTP.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Where to listen.
    pub addr: SocketAddr,
    /// The token actions need; `None`: every action is refused.
    pub admin_token: Option<String>,
}

impl HttpConfig {
    /// Serve on `addr`, read-only.
    pub fn new(addr: SocketAddr) -> HttpConfig {
        HttpConfig {
            addr,
            admin_token: None,
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct Served {
    control: Control,
    coordination: Option<Coordination>,
    admin_token: Option<Arc<str>>,
    /// Event streams open now.
    streams: Arc<std::sync::atomic::AtomicUsize>,
}

/// A running HTTP endpoint; it stops when [`HttpServer::stop`] is called
/// or when it is dropped.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl HttpServer {
    /// Listen on `config.addr` and serve `control`'s node (and, through it,
    /// the cluster's); `coordination`, if the node runs it, is what
    /// `/ready` waits for.
    pub async fn start(
        control: Control,
        coordination: Option<Coordination>,
        config: HttpConfig,
    ) -> std::io::Result<HttpServer> {
        let listener = tokio::net::TcpListener::bind(config.addr).await?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "the HTTP endpoint listens beyond this host: anyone who reaches it can read the node's processes, modules and tables");
        }
        let served = Served {
            control,
            coordination,
            admin_token: config.admin_token.map(Arc::from),
            streams: Arc::default(),
        };
        let app = router(served);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = serving.await {
                tracing::error!(%addr, "the HTTP endpoint stopped: {e}");
            }
        });
        Ok(HttpServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop serving, and wait (up to 5 s) for requests in flight.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn router(served: Served) -> Router {
    let module_bytes_max = served.control.node().config().module_bytes_max;
    Router::new()
        .route("/", get(dashboard::index))
        .route("/app.js", get(dashboard::app))
        .route("/style.css", get(dashboard::style))
        .route("/alive", get(api::alive))
        .route("/ready", get(api::ready))
        .route("/metrics", get(metrics::metrics))
        .route("/api/node", get(api::node))
        .route("/api/nodes", get(api::nodes))
        .route("/api/processes", get(api::processes))
        .route("/api/processes/{pid}", get(api::process))
        .route("/api/processes/{pid}/kill", post(api::kill))
        .route(
            "/api/modules/{name}/load",
            post(api::load).layer(axum::extract::DefaultBodyLimit::max(module_bytes_max)),
        )
        .route("/api/modules/{name}/purge", post(api::purge))
        .route("/api/modules", get(api::modules))
        .route("/api/tree", get(cluster::tree))
        .route("/api/cluster", get(cluster::cluster))
        .route("/api/names", get(cluster::names))
        .route("/api/locks", get(cluster::locks))
        .route("/api/elections", get(cluster::elections))
        .route("/api/tables", get(cluster::tables))
        .route("/api/events", get(events::events))
        .with_state(served)
}
