//! `molt`: run, inspect, build and benchmark molt modules.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use molt_abi::reason;
use molt_host::dist::tls::TlsMode;
use molt_host::dist::{DistConfig, Distribution};
use molt_host::{Node, NodeConfig, bench, code, guest_build};
use tracing_subscriber::EnvFilter;

mod cli_code;
mod demo_upgrade;

/// An Erlang-style process host for WebAssembly.
#[derive(Parser)]
#[command(name = "molt", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    limits: Limits,
}

/// Node limits, each with the default of `NodeConfig`.
#[derive(clap::Args)]
struct Limits {
    /// Most processes alive at once.
    #[arg(long, global = true)]
    processes_max: Option<u32>,
    /// Most linear memory per process, in bytes.
    #[arg(long, global = true)]
    memory_bytes_max: Option<u64>,
    /// Most messages waiting in one mailbox.
    #[arg(long, global = true)]
    mailbox_len_max: Option<usize>,
    /// Largest message, in bytes.
    #[arg(long, global = true)]
    message_bytes_max: Option<usize>,
    /// Largest module file, in bytes.
    #[arg(long, global = true)]
    module_bytes_max: Option<usize>,
    /// Map instance memory copy-on-write from a shared image instead of
    /// copying data segments (better for guests with large data).
    #[arg(long, global = true)]
    memory_images_cow: bool,
}

impl Limits {
    fn apply(&self, mut config: NodeConfig) -> NodeConfig {
        if let Some(v) = self.processes_max {
            config.processes_max = v;
        }
        if let Some(v) = self.memory_bytes_max {
            config.memory_bytes_max = v;
        }
        if let Some(v) = self.mailbox_len_max {
            config.mailbox_len_max = v;
        }
        if let Some(v) = self.message_bytes_max {
            config.message_bytes_max = v;
        }
        if let Some(v) = self.module_bytes_max {
            config.module_bytes_max = v;
        }
        config.memory_images_cow |= self.memory_images_cow;
        config
    }
}

#[derive(Subcommand)]
enum Command {
    /// Start a node, spawn the module's entry process, and exit when it
    /// exits (0 on a normal exit, 1 otherwise). Modules it spawns by name
    /// are loaded from the module's directory and `--path` directories.
    Run {
        /// The module file.
        module: PathBuf,
        /// Arguments, passed to the entry process as its init arguments: a
        /// `Vec<String>` (empty if none), like `std::env::args`.
        args: Vec<String>,
        /// More directories to load modules from.
        #[arg(long)]
        path: Vec<PathBuf>,
    },
    /// Start a long-running node that other nodes can join.
    Node(NodeArgs),
    /// List the nodes a running node is connected to.
    Nodes {
        #[command(flatten)]
        remote: Remote,
    },
    /// List the processes of a running node.
    Ps {
        #[command(flatten)]
        remote: Remote,
    },
    /// Check that a running node answers (`pong`) or not (`pang`).
    Ping {
        #[command(flatten)]
        remote: Remote,
    },
    /// Spawn a process of a loaded module on a running node; its init
    /// arguments are ARGS as a `Vec<String>`.
    Spawn {
        #[command(flatten)]
        remote: Remote,
        /// The module.
        module: String,
        /// Arguments for the entry process.
        args: Vec<String>,
    },
    /// Load, modules, purge, delete, suspend, resume, upgrade.
    #[command(flatten)]
    Code(cli_code::CodeCommand),
    /// Send a text message (a `String`, tag DATA unless --tag) to a
    /// registered process of a running node.
    Send {
        #[command(flatten)]
        remote: Remote,
        /// The registered name.
        name: String,
        /// The text.
        text: String,
        /// The message tag.
        #[arg(long, default_value_t = molt_abi::tag::DATA)]
        tag: u32,
    },
    /// Print a module's name, version, kind, exports and imports, and
    /// whether it satisfies the ABI.
    Inspect {
        /// The module file.
        module: PathBuf,
    },
    /// Build a guest crate for wasm32 (`cargo build --release --target
    /// wasm32-unknown-unknown`) and print the module files.
    Build {
        /// The crate's directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Build the example guests and run the demo: spawn, messages, a crash
    /// caught by a link, a monitor, the same across two nodes, and a live
    /// upgrade of running counters to a new version.
    Demo,
    /// Measure spawn, memory per process and message passing.
    Bench(bench::BenchCli),
}

/// How the CLI reaches a running node: it joins as a hidden node,
/// authenticated with the cookie like any node; with the --tls flags also
/// with a CA certificate, and then its node name is the one the
/// certificate names (so two CLIs with one certificate cannot be connected
/// to one node at once).
#[derive(clap::Args)]
struct Remote {
    /// The node: `name@host:port`.
    #[arg(long)]
    node: String,
    /// Cookie file (default: $HOME/.molt.cookie; MOLT_COOKIE wins).
    #[arg(long)]
    cookie_file: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
}

/// Mutual TLS against a CA (all three flags or none). Without them nodes
/// use self-made certificates and the cookie alone says who they are.
#[derive(clap::Args)]
struct TlsArgs {
    /// CA certificate (PEM) that peers' certificates must chain to.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// This node's certificate chain (PEM), signed by the CA, naming the
    /// node as the DNS name `NAME.at.HOST.molt` (`a@127.0.0.1` →
    /// `a.at.127-0-0-1.molt`).
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The TLS mode the flags ask for.
    fn mode(&self) -> Result<TlsMode> {
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (Some(ca), Some(cert), Some(key)) => Ok(TlsMode::from_files(ca, cert, key)?),
            (None, None, None) => Ok(TlsMode::SelfSigned),
            _ => anyhow::bail!("--tls-ca, --tls-cert and --tls-key go together"),
        }
    }
}

impl Remote {
    /// Start a small hidden node and connect it to the target; returns
    /// the node, its distribution layer and the target's node name.
    async fn connect(&self) -> Result<(Node, Distribution, String)> {
        let (target, _) = molt_host::dist::parse_node_address(&self.node)?;
        let cookie = molt_host::dist::cookie::load_or_create(self.cookie_file.as_deref())?;
        let tls = self.tls.mode()?;
        // In CA mode the CLI is the node its certificate names.
        let name = match tls.certificate_node_names()?.into_iter().next() {
            Some(name) => name,
            None if tls.is_ca() => anyhow::bail!(
                "the --tls-cert certificate names no molt node \
                 (a DNS name like cli.at.127-0-0-1.molt)"
            ),
            None => format!("molt-cli-{}@127.0.0.1", std::process::id()),
        };
        let config = NodeConfig {
            name,
            processes_max: 64,
            ..NodeConfig::default()
        };
        let node = Node::start(config)?;
        let mut dist_config = DistConfig::new("127.0.0.1:0".parse()?, cookie.as_bytes().to_vec());
        dist_config.hidden = true;
        dist_config.tls = tls;
        let dist = Distribution::start(&node, dist_config).await?;
        dist.join(&self.node)
            .await
            .with_context(|| format!("connecting to {}", self.node))?;
        Ok((node, dist, target))
    }
}

async fn remote_command(command: Command) -> Result<ExitCode> {
    match command {
        Command::Nodes { remote } => {
            let (_node, dist, target) = remote.connect().await?;
            println!("{target}");
            for n in dist.nodes_of(&target).await? {
                println!("{n}");
            }
            dist.stop().await;
        }
        Command::Ps { remote } => {
            let (_node, dist, target) = remote.connect().await?;
            println!(
                "{:<24} {:<24} {:<14} {:>8} {:>10}  {:<9}  name",
                "pid", "module", "version", "mailbox", "memory", "state"
            );
            for p in dist.processes_of(&target).await? {
                let (module, version) = p.module.unwrap_or_else(|| ("(host)".into(), "-".into()));
                let state = if p.suspended { "suspended" } else { "running" };
                let failure = p
                    .upgrade_failure
                    .map(|why| format!("  (upgrade failed: {why})"))
                    .unwrap_or_default();
                println!(
                    "{:<24} {:<24} {:<14} {:>8} {:>10}  {:<9}  {}{failure}",
                    p.pid.to_string(),
                    module,
                    version,
                    p.mailbox_len,
                    p.memory_bytes,
                    state,
                    p.name.unwrap_or_default()
                );
            }
            dist.stop().await;
        }
        Command::Ping { remote } => {
            // Unusable TLS files are an error, not a `pang`.
            remote.tls.mode()?;
            let Ok((_node, dist, target)) = remote.connect().await else {
                println!("pang");
                return Ok(ExitCode::FAILURE);
            };
            let answer = dist.ping(&target).await;
            dist.stop().await;
            match answer {
                Ok(rtt) => println!("pong from {target} in {} µs", rtt.as_micros()),
                Err(_) => {
                    println!("pang");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Spawn {
            remote,
            module,
            args,
        } => {
            let (node, dist, target) = remote.connect().await?;
            let mut mailbox = node.mailbox()?;
            let args = molt_abi::codec::encode(&args);
            let (pid, _) = dist
                .spawn_from(&mut mailbox, &target, &module, args, false, false)
                .await?;
            println!("{pid}");
            dist.stop().await;
        }
        Command::Send {
            remote,
            name,
            text,
            tag,
        } => {
            let (node, dist, target) = remote.connect().await?;
            let mailbox = node.mailbox()?;
            dist.send_named(
                mailbox.pid(),
                &target,
                &name,
                tag,
                molt_abi::codec::encode(&text),
            )
            .await?;
            // The ping follows the message on the control stream: when it
            // is answered, the message has been delivered.
            dist.ping(&target).await?;
            dist.stop().await;
        }
        _ => unreachable!("only remote commands come here"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `molt node`.
#[derive(clap::Args)]
struct NodeArgs {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Commands that talk to a running node print results, not the life of
    // their own short-lived node.
    let quiet = matches!(
        cli.command,
        Command::Nodes { .. }
            | Command::Ps { .. }
            | Command::Ping { .. }
            | Command::Spawn { .. }
            | Command::Send { .. }
            | Command::Code(_)
    );
    let default_level = if quiet { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_target(false)
        .init();
    let config = cli.limits.apply(NodeConfig::default());
    match dispatch(cli.command, config) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("molt: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the scheduler")
}

fn dispatch(command: Command, config: NodeConfig) -> Result<ExitCode> {
    match command {
        Command::Run { module, args, path } => {
            let args = molt_abi::codec::encode(&args);
            runtime()?.block_on(run(config, module, args, path))
        }
        Command::Node(args) => runtime()?.block_on(node(config, args)),
        remote @ (Command::Nodes { .. }
        | Command::Ps { .. }
        | Command::Ping { .. }
        | Command::Spawn { .. }
        | Command::Send { .. }) => runtime()?.block_on(remote_command(remote)),
        Command::Code(command) => runtime()?.block_on(cli_code::run(command)),
        Command::Inspect { module } => inspect(module),
        Command::Build { dir } => {
            for file in guest_build::build_crate(&dir)? {
                println!("{}", file.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => {
            eprintln!("building the example guests...");
            let dir = guest_build::build_workspace_guests(&[
                "counter",
                "counter-v2",
                "crash-demo",
                "ping-pong",
            ])?;
            runtime()?.block_on(demo(config, dir))
        }
        Command::Bench(args) => {
            runtime()?.block_on(bench::run(config, args))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run(
    config: NodeConfig,
    module: PathBuf,
    args: Vec<u8>,
    path: Vec<PathBuf>,
) -> Result<ExitCode> {
    let node = Node::start(config)?;
    let version = node
        .load_file(&module)
        .with_context(|| format!("loading {}", module.display()))?;
    if let Some(dir) = module.parent() {
        node.code().add_path(if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir.to_path_buf()
        });
    }
    for dir in path {
        node.code().add_path(dir);
    }
    let mut mailbox = node.mailbox()?;
    let (pid, monitor) = mailbox.spawn(&version.identity.name, args, false, true)?;
    let monitor = monitor.expect("spawned with a monitor");
    let why = loop {
        if let Some(why) = mailbox.recv_down(monitor, Duration::from_secs(3600)).await {
            break why;
        }
    };
    // The node stops with its entry process, taking the others along.
    node.shutdown(Duration::from_secs(5)).await;
    if why == reason::NORMAL {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "molt: process {pid} ({}) exited: {why}",
        version.identity.name
    );
    Ok(ExitCode::FAILURE)
}

/// The demo: crash-demo on one node, then across two nodes on loopback,
/// then a live upgrade of counters under a stream of messages.
async fn demo(config: NodeConfig, guests: PathBuf) -> Result<ExitCode> {
    let no_args = molt_abi::codec::encode::<[String]>(&[]);
    let code = run(
        config.clone(),
        guests.join("crash_demo.wasm"),
        no_args,
        vec![],
    )
    .await?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    eprintln!("\n== two nodes on loopback: demo-a runs crash-demo, demo-b hosts its counter");
    let mut cookie = vec![0u8; 32];
    getrandom::fill(&mut cookie).map_err(|e| anyhow::anyhow!("random cookie: {e}"))?;
    let start = |name: &str| {
        let config = NodeConfig {
            name: format!("{name}@127.0.0.1"),
            processes_max: 1_000,
            ..config.clone()
        };
        let node = Node::start(config)?;
        node.code().add_path(&guests);
        anyhow::Ok(node)
    };
    let (a, b) = (start("demo-a")?, start("demo-b")?);
    let listen = "127.0.0.1:0".parse()?;
    let da = Distribution::start(&a, DistConfig::new(listen, cookie.clone())).await?;
    let db = Distribution::start(&b, DistConfig::new(listen, cookie)).await?;
    b.load_file(guests.join("counter.wasm"))?;
    da.join(&format!("{}:{}", db.name(), db.local_addr().port()))
        .await?;
    let entry = a.load_file(guests.join("crash_demo.wasm"))?;
    let mut mailbox = a.mailbox()?;
    let args = molt_abi::codec::encode(&vec![db.name().to_string()]);
    let (_, watch) = mailbox.spawn(&entry.identity.name, args, false, true)?;
    let why = mailbox
        .recv_down(watch.expect("monitored"), Duration::from_secs(30))
        .await
        .context("the two-node demo did not finish in 30 s")?;
    da.stop().await;
    db.stop().await;
    if why != reason::NORMAL {
        eprintln!("molt: crash-demo exited: {why}");
        return Ok(ExitCode::FAILURE);
    }
    demo_upgrade::run(config, &guests).await?;
    Ok(ExitCode::SUCCESS)
}

async fn node(mut config: NodeConfig, args: NodeArgs) -> Result<ExitCode> {
    config.name = if args.name.contains('@') {
        args.name.clone()
    } else {
        format!("{}@{}", args.name, args.listen.ip())
    };
    let cookie = molt_host::dist::cookie::load_or_create(args.cookie_file.as_deref())?;
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
        watchers.push(code::watch::watch(node.clone(), dir)?);
    }
    let mut dist_config = DistConfig::new(args.listen, cookie.as_bytes().to_vec());
    dist_config.hidden = args.hidden;
    dist_config.tick = Duration::from_millis(args.tick_ms);
    dist_config.tls = tls;
    if !args.allow.is_empty() {
        dist_config.allow = Some(args.allow);
    }
    let dist = Distribution::start(&node, dist_config).await?;
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
        match dist.join(peer).await {
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

fn inspect(path: PathBuf) -> Result<ExitCode> {
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("module")
        .replace('_', "-");
    let report = code::inspect(&bytes, &stem)?;
    let id = &report.identity;
    println!("module:   {}", id.name);
    println!(
        "version:  {}{}",
        id.version,
        if id.declared {
            ""
        } else {
            " (no molt.module section: content hash)"
        }
    );
    println!("sha256:   {}", id.hash);
    println!("size:     {} bytes", bytes.len());
    println!(
        "kind:     {}",
        report.kind.map_or("none".to_string(), |k| k.to_string())
    );
    println!("exports:");
    for e in &report.exports {
        println!("  {e}");
    }
    println!("imports:");
    for i in &report.imports {
        println!("  {i}");
    }
    if report.problems.is_empty() {
        println!("abi:      ok (molt ABI {})", molt_abi::ABI_VERSION);
        Ok(ExitCode::SUCCESS)
    } else {
        println!("abi:      NOT satisfied");
        for p in &report.problems {
            println!("  - {p}");
        }
        bail!("{} does not satisfy the molt ABI", path.display())
    }
}
