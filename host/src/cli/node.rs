//! `molt node`: a long-running node that other nodes can join.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
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
    #[command(flatten)]
    tls: TlsArgs,
}

pub async fn node(mut config: NodeConfig, args: NodeArgs) -> Result<ExitCode> {
    config.name = if args.name.contains('@') {
        args.name.clone()
    } else {
        format!("{}@{}", args.name, args.listen.ip())
    };
    let cookie = molt_host::net::cookie::load_or_create(args.cookie_file.as_deref())?;
    let tls = args.tls.mode()?;
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
    for peer in &args.join {
        match control.join(peer).await {
            Ok(()) => say(format!("joined {peer}")),
            Err(e) => eprintln!("molt: cannot join {peer}: {e}"),
        }
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    drop(watchers);
    dist.shutdown();
    node.shutdown(Duration::from_secs(5)).await;
    Ok(ExitCode::SUCCESS)
}
