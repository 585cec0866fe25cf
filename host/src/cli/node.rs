//! `molt node`: a long-running node that other nodes can join.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use molt_host::cluster::{CoordConfig, Coordination, LogMode};
use molt_host::http::{HttpConfig, HttpServer};
use molt_host::net::{DistConfig, Distribution};
use molt_host::{Control, Node, NodeConfig, control};

use crate::remote::TlsArgs;

/// `molt node`.
#[derive(clap::Args)]
pub struct NodeArgs {
    /// Node name: `name` (the host part comes from --listen) or `name@host`.
    #[arg(long)]
    name: String,
    /// Address to listen on for other nodes.
    #[arg(long, default_value = "127.0.0.1:4370")]
    listen: std::net::SocketAddr,
    /// Join the cluster of this node: `name@host:port`. Repeatable.
    #[arg(long)]
    join: Vec<String>,
    /// Cookie file (default: $HOME/.molt.cookie, created if absent;
    /// MOLT_COOKIE in the environment wins).
    #[arg(long)]
    cookie_file: Option<PathBuf>,
    /// Do not join the full mesh or show up in others' node lists.
    #[arg(long)]
    hidden: bool,
    /// Keep-alive tick in milliseconds: a silent peer is down after this.
    #[arg(long, default_value_t = 15_000)]
    tick_ms: u64,
    /// Only these node names may connect. Repeatable.
    #[arg(long)]
    allow: Vec<String>,
    /// Modules to load at start. Repeatable.
    #[arg(long)]
    load: Vec<PathBuf>,
    /// Directories to load modules from on first spawn. Repeatable.
    #[arg(long)]
    path: Vec<PathBuf>,
    /// Load the `.wasm` files in DIR now, and each again as the next
    /// version of its module when it is created or rewritten (after 300 ms
    /// without writes); a file that does not load is refused and logged,
    /// and the running version stays. Repeatable.
    #[arg(long, value_name = "DIR")]
    watch: Vec<PathBuf>,
    /// Where the coordination log and the disc tables (in `tables/`) live
    /// (default: $MOLT_DATA_DIR/NAME, else $XDG_DATA_HOME/molt/NAME, else
    /// ~/.local/share/molt/NAME).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The coordination log: `disc` (durable, a restarted node keeps its
    /// membership) or `ram` (faster, a restarted node joins anew).
    #[arg(long, default_value = "disc")]
    log_mode: LogMode,
    /// How many voters the coordination group wants (made odd).
    #[arg(long, default_value_t = 3)]
    voters: usize,
    /// A node's coordination session lives this long after its last
    /// renewal; then what it held is freed.
    #[arg(long, default_value_t = 5_000)]
    session_ttl_ms: u64,
    /// Run no coordination group (no cluster names, locks or elections).
    #[arg(long)]
    no_coordination: bool,
    /// Serve HTTP (`/metrics`, the JSON API under `/api/`, `/alive`,
    /// `/ready`) on this address, or `off`. Default: 127.0.0.1:4380, and
    /// if that port is taken the node runs without it (said in the log).
    #[arg(long, value_name = "ADDR|off")]
    http: Option<String>,
    /// A file holding the token HTTP actions (killing a process) need as
    /// `Authorization: Bearer TOKEN`; without it every action is refused.
    #[arg(long, value_name = "FILE")]
    http_admin_token_file: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
}

/// Start the node's HTTP endpoint as `args` ask (`None`: off, or the
/// default port was taken).
async fn start_http(
    http: Option<&str>,
    token_file: Option<&std::path::Path>,
    control: &Control,
    coordination: Option<Coordination>,
) -> Result<Option<HttpServer>> {
    let default = std::net::SocketAddr::from(([127, 0, 0, 1], molt_host::http::DEFAULT_PORT));
    let (addr, asked) = match http {
        Some("off") => return Ok(None),
        Some(text) => (
            text.parse()
                .with_context(|| format!("--http {text}: not an address (HOST:PORT) or off"))?,
            true,
        ),
        None => (default, false),
    };
    let mut config = HttpConfig::new(addr);
    if let Some(file) = token_file {
        let token = std::fs::read_to_string(file)
            .with_context(|| format!("reading --http-admin-token-file {}", file.display()))?;
        let token = token.trim();
        if token.len() < 16 {
            anyhow::bail!(
                "the admin token in {} is shorter than 16 characters",
                file.display()
            );
        }
        config.admin_token = Some(token.to_string());
    }
    match HttpServer::start(control.clone(), coordination, config).await {
        Ok(server) => Ok(Some(server)),
        Err(e) if !asked && e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::warn!(%addr, "HTTP is off: the default port is taken (give --http ADDR)");
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("serving HTTP on {addr}")),
    }
}

pub async fn node(mut config: NodeConfig, args: NodeArgs) -> Result<ExitCode> {
    config.name = if args.name.contains('@') {
        args.name.clone()
    } else {
        format!("{}@{}", args.name, args.listen.ip())
    };
    let cookie = molt_host::net::cookie::load_or_create(args.cookie_file.as_deref())?;
    let tls = args.tls.mode()?;
    // One data directory: the coordination log and the disc tables.
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| CoordConfig::default_data_dir(&config.name));
    config.data_dir = Some(data_dir.clone());
    let node = Node::start(config)?;
    for file in &args.load {
        node.load_file(file)
            .with_context(|| format!("loading {}", file.display()))?;
    }
    for dir in args.path {
        node.code().add_path(dir);
    }
    let mut watchers = Vec::with_capacity(args.watch.len());
    for dir in &args.watch {
        watchers.push(control::watch::watch(node.clone(), dir)?);
    }
    let mut dist_config = DistConfig::new(args.listen, cookie.as_bytes().to_vec());
    dist_config.hidden = args.hidden;
    dist_config.tick = Duration::from_millis(args.tick_ms);
    dist_config.tls = tls;
    if !args.allow.is_empty() {
        dist_config.allow = Some(args.allow);
    }
    let dist = Distribution::start(&node, dist_config).await?;
    // Other nodes and CLIs ask this one through the control services.
    let control = Control::new(node.clone(), dist.clone())?;
    // The first line says where the node listens (scripts read it); a
    // closed stdout must not take the node down, so write errors are ignored.
    let say = |line: String| {
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "{line}");
    };
    say(format!(
        "node {} listening on {}",
        dist.name(),
        dist.local_addr()
    ));
    for dir in &args.watch {
        say(format!("watching {} for .wasm files", dir.display()));
    }
    let mut joins = args.join.iter();
    let coordination = if args.no_coordination || args.hidden {
        None
    } else {
        let mut coord = CoordConfig::new(data_dir.clone());
        coord.log_mode = args.log_mode;
        coord.voters = args.voters;
        coord.session_ttl = Duration::from_millis(args.session_ttl_ms);
        let data_dir = coord.data_dir.clone();
        // The first --join names the cluster to join; without one the node
        // bootstraps its own (or goes on with the one in its log).
        let first = joins.next();
        let started = Coordination::start(&node, &dist, coord, first.map(String::as_str))
            .await
            .context("starting coordination")?;
        if let Some(peer) = first {
            say(format!("joined {peer}"));
        }
        let cluster = started
            .cluster()
            .map_or("(joining)".to_string(), |c| c.to_string());
        say(format!(
            "coordination: cluster {cluster}, log {} in {}",
            match args.log_mode {
                LogMode::Disc => "disc",
                LogMode::Ram => "ram",
            },
            data_dir.display()
        ));
        Some(started)
    };
    for peer in joins {
        match control.join(peer).await {
            Ok(()) => say(format!("joined {peer}")),
            Err(e) => eprintln!("molt: cannot join {peer}: {e}"),
        }
    }
    let http = start_http(
        args.http.as_deref(),
        args.http_admin_token_file.as_deref(),
        &control,
        coordination.clone(),
    )
    .await?;
    if let Some(http) = &http {
        say(format!("http on http://{}/", http.local_addr()));
    }
    let failed = async {
        match &coordination {
            Some(c) => c.failed().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        signal = tokio::signal::ctrl_c() => signal.context("waiting for Ctrl-C")?,
        why = failed => {
            eprintln!("molt: the coordination log failed, the node stops: {why}");
            dist.shutdown();
            node.shutdown(Duration::from_secs(5)).await;
            return Ok(ExitCode::from(70));
        }
    }
    if let Some(http) = http {
        http.stop().await;
    }
    if let Some(c) = &coordination {
        c.shutdown().await;
    }
    drop(watchers);
    dist.shutdown();
    node.shutdown(Duration::from_secs(5)).await;
    Ok(ExitCode::SUCCESS)
}
