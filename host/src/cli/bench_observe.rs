//! What watching a node costs: local one-way throughput with the process
//! counters on (and `/metrics` scraped each second) against a node with
//! them off (`--only metrics`), and a node of many idle processes serving
//! the dashboard's traffic (`--only dashboard`): an event stream plus a
//! process list each second.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use molt_host::http::{HttpConfig, HttpServer};
use molt_host::{Control, Node, NodeConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use super::bench::{Figure, idle_processes, kill_all, oneway_run};

/// Local one-way runs alternating between a node that counts (and is
/// scraped each second) and one that does not.
pub async fn metrics(
    config: NodeConfig,
    guest: &Path,
    runs: usize,
    messages: u64,
) -> Result<Vec<Figure>> {
    let counting = Node::start(NodeConfig {
        process_counters: true,
        ..config.clone()
    })?;
    let silent = Node::start(NodeConfig {
        process_counters: false,
        ..config
    })?;
    crate::bench::load_optimised(&counting, guest).await?;
    crate::bench::load_optimised(&silent, guest).await?;
    let server = serve(&counting).await?;
    let addr = server.local_addr();
    let scraper = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            let _ = get(addr, "/metrics").await;
        }
    });
    let (mut on, mut off) = (Vec::new(), Vec::new());
    // Warm both, then alternate so that drift hits both alike.
    oneway_run(&counting, messages / 10).await?;
    oneway_run(&silent, messages / 10).await?;
    for _ in 0..runs {
        on.push(oneway_run(&counting, messages).await?);
        off.push(oneway_run(&silent, messages).await?);
    }
    scraper.abort();
    server.stop().await;
    let ratio: Vec<f64> = on.iter().zip(&off).map(|(a, b)| a / b * 100.0).collect();
    Ok(vec![
        Figure {
            name: "local one-way, counters on, /metrics each second",
            unit: "msgs/s",
            runs: on,
        },
        Figure {
            name: "local one-way, counters off",
            unit: "msgs/s",
            runs: off,
        },
        Figure {
            name: "counters on / off (same run)",
            unit: "%",
            runs: ratio,
        },
    ])
}

/// A node with `processes` idle behaviours: its CPU with nobody watching,
/// then while serving an event stream and a process list each second,
/// alternating windows of `WINDOW`.
pub async fn dashboard(
    mut config: NodeConfig,
    guest: &Path,
    runs: usize,
    processes: u32,
) -> Result<Vec<Figure>> {
    const WINDOW: Duration = Duration::from_secs(10);
    config.processes_max = config.processes_max.max(processes + 64);
    let node = Node::start(config)?;
    if node.config().processes_max < processes + 64 {
        bail!(
            "the node can run only {} processes; lower --processes",
            node.config().processes_max
        );
    }
    crate::bench::load_optimised(&node, guest).await?;
    let pids = idle_processes(&node, processes).await?;
    let server = serve(&node).await?;
    let addr = server.local_addr();
    let (mut idle, mut serving, mut list_ms, mut sorted_ms) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let start = (cpu_seconds(), Instant::now());
        tokio::time::sleep(WINDOW).await;
        idle.push(cpu_share(start));

        let stream = tokio::spawn(read_events(addr));
        let start = (cpu_seconds(), Instant::now());
        let mut every = tokio::time::interval(Duration::from_secs(1));
        let mut latencies = Vec::new();
        while start.1.elapsed() < WINDOW {
            every.tick().await;
            let asked = Instant::now();
            get(addr, "/api/processes?limit=100").await?;
            latencies.push(asked.elapsed().as_secs_f64() * 1e3);
        }
        serving.push(cpu_share(start));
        stream.abort();
        list_ms.push(median(&mut latencies));
        let asked = Instant::now();
        get(addr, "/api/processes?sort=memory&limit=100").await?;
        sorted_ms.push(asked.elapsed().as_secs_f64() * 1e3);
    }
    server.stop().await;
    kill_all(&node, &pids).await?;
    let extra: Vec<f64> = serving.iter().zip(&idle).map(|(s, i)| s - i).collect();
    Ok(vec![
        Figure {
            name: "node CPU, idle processes, nobody watching",
            unit: "% of a core",
            runs: idle,
        },
        Figure {
            name: "node CPU, event stream + list each second",
            unit: "% of a core",
            runs: serving,
        },
        Figure {
            name: "node CPU for serving the dashboard",
            unit: "% of a core",
            runs: extra,
        },
        Figure {
            name: "process list (100 by pid), response",
            unit: "ms",
            runs: list_ms,
        },
        Figure {
            name: "process list (100 by memory), response",
            unit: "ms",
            runs: sorted_ms,
        },
    ])
}

async fn serve(node: &Node) -> Result<HttpServer> {
    HttpServer::start(
        Control::local(node.clone()),
        None,
        HttpConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))),
    )
    .await
    .context("serving HTTP on 127.0.0.1")
}

/// One GET, the whole answer read; an error unless it is a 200.
async fn get(addr: SocketAddr, path: &str) -> Result<Vec<u8>> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    if !answer.starts_with(b"HTTP/1.1 200") {
        bail!(
            "GET {path}: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
    }
    Ok(answer)
}

/// Read `/api/events` until it ends or the task is aborted.
async fn read_events(addr: SocketAddr) -> Result<()> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut lines = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    while lines.read_line(&mut line).await? > 0 {
        line.clear();
    }
    Ok(())
}

/// CPU time this process used (user and system), in seconds.
fn cpu_seconds() -> f64 {
    // utime and stime: fields 14 and 15, in clock ticks (100 a second).
    let stat = super::bench::proc_stat();
    (stat.get(11).copied().unwrap_or(0) + stat.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

/// The share of one core used since `start`, in percent.
fn cpu_share(start: (f64, Instant)) -> f64 {
    (cpu_seconds() - start.0) / start.1.elapsed().as_secs_f64() * 100.0
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}
