//! `molt bench --only million`: a million idle behaviours on one node.
//! They are spawned as one ring (each knows the next), left idle until
//! every one has hibernated (`hibernate_after`), then a token goes round
//! once: each is sent one message, wakes, and passes it on. The figures
//! are the spawn time, the memory per process while they sleep (RSS and
//! page tables), and the time and page faults per hop of the lap.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use molt_host::{Node, NodeConfig};

use super::bench::{Figure, rss_bytes};
use super::bench_ring::{Ring, minor_faults};

/// How long a link idles before it hibernates.
const HIBERNATE_AFTER: Duration = Duration::from_millis(100);
/// Spawned links not yet through `init`, at most.
const SPAWN_WINDOW: u32 = 4_096;
/// The longest wait for every link to hibernate.
const ASLEEP_WITHIN: Duration = Duration::from_secs(600);

/// Resident bytes and page-table bytes of this process now.
fn rss_and_page_tables() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let page_tables = status
        .lines()
        .find_map(|l| l.strip_prefix("VmPTE:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024);
    (rss_bytes(), page_tables)
}

/// One run on a node of its own: (µs per spawn, KiB RSS per sleeping
/// process, KiB page tables per sleeping process, s until all slept, ns
/// per hop of the lap, faults per hop).
async fn run_once(config: &NodeConfig, guest: &Path, n: u32) -> Result<[f64; 6]> {
    let node = Node::start(config.clone())?;
    if node.config().processes_max < n + 64 {
        bail!(
            "the node can run only {} processes (see the warning about vm.max_map_count)",
            node.config().processes_max
        );
    }
    crate::bench::load_optimised(&node, guest).await?;
    let (rss0, pte0) = rss_and_page_tables();
    let start = Instant::now();
    // At most `SPAWN_WINDOW` links wait for their `init`: links that go
    // idle meanwhile hibernate on time instead of waiting behind a million
    // queued spawns, all awake.
    let mut ring = Ring::spawn_paced(&node, n, Some(SPAWN_WINDOW)).await?;
    let spawn_us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    let deadline = Instant::now() + ASLEEP_WITHIN;
    while node.stats().hibernated < n as u64 {
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} processes hibernated within {ASLEEP_WITHIN:?}",
                node.stats().hibernated
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let asleep_s = start.elapsed().as_secs_f64();
    let (rss1, pte1) = rss_and_page_tables();
    let faults = minor_faults();
    let lap = ring.pass(n as u64).await?;
    let faults = minor_faults().saturating_sub(faults);
    ring.kill(&node).await?;
    node.shutdown(Duration::from_secs(60)).await;
    let per = |after: u64, before: u64| after.saturating_sub(before) as f64 / 1024.0 / n as f64;
    Ok([
        spawn_us,
        per(rss1, rss0),
        per(pte1, pte0),
        asleep_s,
        lap.as_secs_f64() * 1e9 / n as f64,
        faults as f64 / n as f64,
    ])
}

/// The million figures, `runs` times.
pub async fn figures(
    mut config: NodeConfig,
    guest: &Path,
    runs: usize,
    n: u32,
) -> Result<Vec<Figure>> {
    config.processes_max = config.processes_max.max(n + 64);
    config.hibernate_after = Some(HIBERNATE_AFTER);
    let mut all: [Vec<f64>; 6] = Default::default();
    for _ in 0..runs {
        let got = run_once(&config, guest, n).await?;
        for (runs, v) in all.iter_mut().zip(got) {
            runs.push(v);
        }
    }
    let [spawn, rss, pte, asleep, hop, faults] = all;
    Ok(vec![
        Figure {
            name: "spawn a ring link (behaviour, incl. init), fresh node",
            unit: "µs/process",
            runs: spawn,
        },
        Figure {
            name: "memory per hibernated process: RSS",
            unit: "KiB",
            runs: rss,
        },
        Figure {
            name: "memory per hibernated process: page tables",
            unit: "KiB",
            runs: pte,
        },
        Figure {
            name: "from the first spawn until all hibernated",
            unit: "s",
            runs: asleep,
        },
        Figure {
            name: "one lap of the token: per hop (each wakes)",
            unit: "ns/hop",
            runs: hop,
        },
        Figure {
            name: "  minor page faults per hop",
            unit: "faults/hop",
            runs: faults,
        },
    ])
}
