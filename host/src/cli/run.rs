//! `molt run` (one node, one entry process, its exit status) and `molt
//! demo` (the same, then two nodes on loopback, then a live upgrade).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use molt_abi::reason;
use molt_host::net::{DistConfig, Distribution};
use molt_host::{Node, NodeConfig};

use crate::demo_upgrade;

pub async fn run(
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
pub async fn demo(config: NodeConfig, guests: PathBuf) -> Result<ExitCode> {
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
    demo_upgrade::run(config.clone(), &guests).await?;
    super::demo_coord::run(config, &guests).await?;
    Ok(ExitCode::SUCCESS)
}
