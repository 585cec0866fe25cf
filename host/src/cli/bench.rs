//! `molt bench`: spawn cost, idle memory per process, local ping-pong and
//! one-way message throughput, two-node figures, and code figures (load,
//! eager upgrade, purge, throughput during an upgrade), each the median of
//! several runs. Guests come from `examples/bench-guest`, built from source;
//! its other versions are the same code under another version string.
//!
//! Every message figure is between processes, as Erlang's are: the
//! two-node round trips and remote spawns are timed by a process on one
//! node (`TimedPinger`, `RemoteSpawner`) on the node's clock, not by the
//! bench's own thread, which would add a thread hop each way.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use molt_abi::{Pid, codec, reason, tag};

pub use crate::bench_wire::{BenchArgs, BenchMsg};
use crate::guest_build;
use molt_host::NodeConfig;
use molt_host::code::{LoadOptions, UpgradeMode};
use molt_host::net::{DistConfig, Distribution};
use molt_host::{HostMailbox, Node};

/// What to measure.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgsCli {
    /// Processes for the spawn and memory figures.
    #[arg(long, default_value_t = 100_000)]
    pub processes: u32,
    /// Processes of the `million` figure.
    #[arg(long, default_value_t = 1_000_000)]
    pub million: u32,
    /// Runs per figure; the median is printed.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Round trips per ping-pong run.
    #[arg(long, default_value_t = 200_000)]
    pub rounds: u64,
    /// Messages per one-way run.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Only this figure: spawn (with memory), pingpong, oneway, ring
    /// (Armstrong's ring of 1,000 and of 100,000 behaviours), the
    /// two-node figures remote-pingpong, remote-oneway, remote-4k,
    /// remote-spawn, or the code figures load, upgrade, purge,
    /// upgrade-stream; or `coordination` (names and locks on three nodes,
    /// disc and ram, contention and failover), `tables` (mnesia's
    /// workloads), `tables-replicated` (only its two-node part),
    /// `metrics` (one-way with the process counters on and off) or
    /// `dashboard` (a node of --processes idle processes serving the
    /// dashboard): these are not in the default run. Several of the
    /// node figures, comma-separated (`spawn,upgrade`), run in that
    /// run's order on one node.
    #[arg(long)]
    pub only: Option<String>,
    /// Seconds of the coordination bench's contention run.
    #[arg(long, default_value_t = 10)]
    pub contention_secs: u64,
    /// Where the coordination and tables benches keep their files
    /// (default: the temp directory); its disk's fsync is what `disc`
    /// figures depend on.
    #[arg(long, value_name = "DIR")]
    pub coord_dir: Option<PathBuf>,
    /// Live processes for the upgrade and purge figures.
    #[arg(long, default_value_t = 10_000)]
    pub upgrade_processes: u32,
    /// Messages per remote one-way run.
    #[arg(long, default_value_t = 300_000)]
    pub remote_messages: u64,
    /// Round trips per remote latency run.
    #[arg(long, default_value_t = 20_000)]
    pub remote_rounds: u64,
    /// Spawns per remote spawn run.
    #[arg(long, default_value_t = 2_000)]
    pub remote_spawns: u64,
    /// A prebuilt bench-guest module (default: build it from source).
    #[arg(long)]
    pub guest: Option<PathBuf>,
    /// Hops of the token around each ring (`ring`).
    #[arg(long, default_value_t = 1_000_000)]
    pub ring_hops: u64,
    /// With the ring figures: run the same ring in Erlang right after
    /// (needs `erlc` and `erl`), and print each figure beside Erlang's.
    #[arg(long)]
    pub erlang: bool,
    /// With `--only tables`: mnesia's bench script (`run_store.sh`), run
    /// right after molt's figures with as many runs (needs `erl`); each
    /// molt figure is then printed beside mnesia's, with the ratio.
    #[arg(long, value_name = "RUN_STORE_SH")]
    pub mnesia: Option<PathBuf>,
    /// Profile only what is timed: write `enable` to this FIFO when a
    /// timed section of the spawn, ping-pong, one-way, ring, upgrade,
    /// purge and two-node one-way figures starts and `disable` when it
    /// ends, for `perf record -D -1 --control fifo:FIFO` (set-up,
    /// compiles and teardown then stay out of the profile).
    #[arg(long, value_name = "FIFO")]
    pub perf_control: Option<PathBuf>,
}

pub use BenchArgsCli as BenchCli;

/// `--perf-control`'s FIFO, opened once the bench starts.
static PERF_CONTROL: std::sync::OnceLock<std::sync::Mutex<std::fs::File>> =
    std::sync::OnceLock::new();

/// Open `--perf-control`'s FIFO (it blocks until perf has it open too).
fn open_perf_control(path: &std::path::Path) -> Result<()> {
    let fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening the perf control FIFO {}", path.display()))?;
    // Set once per OS process; a second bench in one process keeps the first.
    let _ = PERF_CONTROL.set(std::sync::Mutex::new(fifo));
    Ok(())
}

/// A timed section, profiled while it lives when `--perf-control` is set.
pub(crate) struct Profiled(());

impl Profiled {
    /// Start profiling (a no-op without `--perf-control`).
    pub(crate) fn start() -> Profiled {
        perf_command("enable");
        Profiled(())
    }
}

impl Drop for Profiled {
    fn drop(&mut self) {
        perf_command("disable");
    }
}

fn perf_command(command: &str) {
    use std::io::Write;
    if let Some(fifo) = PERF_CONTROL.get() {
        let mut fifo = fifo.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = writeln!(fifo, "{command}") {
            eprintln!("molt bench: writing {command} to the perf control FIFO: {e}");
        }
    }
}

/// One benchmark figure: every run, and the median.
#[derive(Clone, Debug)]
pub struct Figure {
    /// What it measures.
    pub name: &'static str,
    /// Unit of the values.
    pub unit: &'static str,
    /// Every run.
    pub runs: Vec<f64>,
}

impl Figure {
    /// Median of the runs.
    pub fn median(&self) -> f64 {
        let mut v = self.runs.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    }
}

pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// This OS process's proportional set size in bytes (`Pss` of
/// `/proc/self/smaps_rollup`: each resident page divided by the number of
/// mappings that share it); 0 where it cannot be read.
fn pss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|line| line.strip_prefix("Pss:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Bytes the host's allocator (mimalloc, see `main.rs`) has taken from
/// the kernel and not given back.
pub(crate) fn heap_committed() -> u64 {
    let mut committed = 0usize;
    // SAFETY: `mi_process_info` writes only through the pointers that are
    // not null; the one here points at a live `usize`.
    unsafe {
        libmimalloc_sys::mi_process_info(
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut committed,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
    }
    committed as u64
}

fn map_count() -> u64 {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |s| s.lines().count() as u64)
}

/// The module name of `examples/bench-guest`, the behaviour the benches spawn.
pub(crate) const MODULE: &str = "bench-guest";

async fn wait_for_exit(
    mailbox: &mut HostMailbox,
    watch: molt_abi::Ref,
    limit: Duration,
) -> Result<()> {
    let why = mailbox
        .recv_down(watch, limit)
        .await
        .context("benchmark process did not finish in time")?;
    if why != reason::NORMAL {
        bail!("benchmark process crashed: {why}");
    }
    Ok(())
}

/// What one spawn run measured, per process.
struct SpawnRun {
    /// µs per spawn, `init` included.
    us: f64,
    /// Bytes of RSS and pool pages taken.
    rss: f64,
    /// The same proportionally (PSS): a page mapped by many processes
    /// (a copy-on-write image's) counted once, not once per mapping.
    pss: f64,
    /// Kernel memory mappings.
    maps: f64,
    /// Bytes of host heap taken from the kernel.
    heap: f64,
}

/// Spawn `n` idle behaviours and kill them.
async fn spawn_run(node: &Node, n: u32) -> Result<SpawnRun> {
    // Pages that freed pool slots kept resident are memory too: what the
    // new processes took of them counts as theirs.
    let held_before = node.pool_resident_bytes() as i64;
    let rss_before = rss_bytes() as i64;
    let pss_before = pss_bytes() as i64;
    let heap_before = heap_committed() as i64;
    let maps_before = map_count();
    let profiled = Profiled::start();
    let start = Instant::now();
    let pids = idle_processes(node, n).await?;
    let elapsed = start.elapsed();
    drop(profiled);
    let rss_after = rss_bytes() as i64;
    let pss_after = pss_bytes() as i64;
    let heap_after = heap_committed() as i64;
    let held_after = node.pool_resident_bytes() as i64;
    let maps_after = map_count();
    kill_all(node, &pids).await?;
    let per_process = |bytes: i64| bytes.max(0) as f64 / n as f64;
    Ok(SpawnRun {
        us: elapsed.as_secs_f64() * 1e6 / n as f64,
        rss: per_process((rss_after - rss_before) + (held_before - held_after)),
        pss: per_process((pss_after - pss_before) + (held_before - held_after)),
        maps: maps_after.saturating_sub(maps_before) as f64 / n as f64,
        heap: per_process(heap_after - heap_before),
    })
}

async fn pingpong_run(node: &Node, rounds: u64) -> Result<f64> {
    let mut mailbox = node.mailbox()?;
    let (ponger, _) = mailbox.spawn(MODULE, codec::encode(&BenchArgs::Ponger), true, false)?;
    let profiled = Profiled::start();
    let start = Instant::now();
    let (_, watch) = mailbox.spawn(
        MODULE,
        codec::encode(&BenchArgs::Pinger { ponger, rounds }),
        false,
        true,
    )?;
    wait_for_exit(
        &mut mailbox,
        watch.expect("monitored"),
        Duration::from_secs(300),
    )
    .await?;
    let elapsed = start.elapsed();
    drop(profiled);
    mailbox.exit(ponger, reason::KILL);
    Ok(rounds as f64 / elapsed.as_secs_f64())
}

pub(crate) async fn oneway_run(node: &Node, messages: u64) -> Result<f64> {
    let mut mailbox = node.mailbox()?;
    let sink_args = BenchArgs::Sink {
        expect: messages,
        ack_every: 1_000,
    };
    let (sink, watch) = mailbox.spawn(MODULE, codec::encode(&sink_args), false, true)?;
    let sender_args = BenchArgs::Sender {
        sink,
        count: messages,
        window: 20_000,
        payload_bytes: 64,
    };
    let _profiled = Profiled::start();
    let start = Instant::now();
    mailbox.spawn(MODULE, codec::encode(&sender_args), true, false)?;
    wait_for_exit(
        &mut mailbox,
        watch.expect("monitored"),
        Duration::from_secs(300),
    )
    .await?;
    Ok(messages as f64 / start.elapsed().as_secs_f64())
}

/// Versions for the code figures: each call a new one.
struct Versions {
    bytes: Vec<u8>,
    next: u32,
}

impl Versions {
    fn next(&mut self) -> Vec<u8> {
        self.next += 1;
        let version = format!("0.1.0-bench.{}", self.next);
        molt_host::code::analyze::restamp(&self.bytes, MODULE, &version)
            .expect("bench-guest is a well-formed module")
    }
}

/// One load (compile, check, switch), no processes on it: until the new
/// version serves spawns (ms), until its optimised code is ready (ms; the
/// same with `--no-baseline-compile`), and loading it again from the
/// compiled cache (µs).
async fn load_run(node: &Node, versions: &mut Versions) -> Result<(f64, f64, f64)> {
    let fresh = versions.next();
    let start = Instant::now();
    let loaded = node
        .load_with(fresh.clone(), MODULE, LoadOptions::default())
        .await?;
    let fresh_ms = start.elapsed().as_secs_f64() * 1e3;
    optimised(&loaded.version).await?;
    let optimised_ms = start.elapsed().as_secs_f64() * 1e3;
    // Another version, then this one again: a cache hit.
    let other = node
        .load_with(versions.next(), MODULE, LoadOptions::default())
        .await?;
    optimised(&other.version).await?;
    let start = Instant::now();
    let loaded = node.load(&fresh, MODULE)?;
    let cached_us = start.elapsed().as_secs_f64() * 1e6;
    debug_assert!(loaded.identity.version.starts_with("0.1.0-bench"));
    Ok((fresh_ms, optimised_ms, cached_us))
}

/// Load the module file `path` and wait until its optimised code is
/// ready: every figure is of optimised code.
pub(crate) async fn load_optimised(node: &Node, path: &std::path::Path) -> Result<()> {
    let version = node.load_file(path)?;
    optimised(&version).await
}

/// Wait (at most 60 s) until `version`'s optimised code is ready, so that
/// no compile runs behind the next figure.
async fn optimised(version: &molt_host::ModuleVersion) -> Result<()> {
    let start = Instant::now();
    while !version.optimised() {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("the optimised code was not ready within 60 s");
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Ok(())
}

/// Spawn `n` idle behaviours and wait until all have run `init`
/// (bounded by 120 s).
pub(crate) async fn idle_processes(node: &Node, n: u32) -> Result<Vec<Pid>> {
    let args = codec::encode(&BenchArgs::Idle);
    let target = node.stats().initialized + n as u64;
    let mut pids = Vec::with_capacity(n as usize);
    for _ in 0..n {
        pids.push(node.spawn(MODULE, args.clone())?);
    }
    initialized(node, target).await?;
    Ok(pids)
}

/// Wait until the node has initialised `target` processes in all (at
/// most 120 s).
pub(crate) async fn initialized(node: &Node, target: u64) -> Result<()> {
    let start = Instant::now();
    while node.stats().initialized < target {
        if start.elapsed() > Duration::from_secs(120) {
            bail!("spawned processes did not all initialise within 120 s");
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Ok(())
}

/// Kill `pids` (processes of `node`) and wait until they have all ended:
/// at most 120 s per 100,000 of them, and at least 120 s.
pub(crate) async fn kill_all(node: &Node, pids: &[Pid]) -> Result<()> {
    let before = node.stats().alive as usize - pids.len();
    for pid in pids {
        node.exit(*pid, reason::KILL);
    }
    let patience = Duration::from_secs(120 * (pids.len() as u64 / 100_000).max(1));
    if !alive_at_most(node, before, patience).await {
        bail!(
            "{} of {} killed processes had not ended after {patience:?}",
            node.stats().alive as usize - before,
            pids.len()
        );
    }
    Ok(())
}

/// Wait until `node` has at most `alive` processes, at most `patience`:
/// whether it got there.
async fn alive_at_most(node: &Node, alive: usize, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    while node.stats().alive as usize > alive {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}

/// Milliseconds from an eager load until `n` idle behaviours all run the
/// new version, state migrated (`molt_state_save`, a new instance,
/// `molt_code_change`).
async fn upgrade_run(node: &Node, versions: &mut Versions, n: u32) -> Result<(f64, f64)> {
    let pids = idle_processes(node, n).await?;
    // Compiled untimed, both tiers (as Erlang's compile is untimed).
    let (next, _) = node.code().prepare(&versions.next(), MODULE)?;
    optimised(&next).await?;
    let faults = super::bench_ring::minor_faults();
    let profiled = Profiled::start();
    let start = Instant::now();
    let loaded = node.install(next, LoadOptions::default()).await?;
    let old = loaded.previous.context("an old version")?;
    tokio::time::timeout(Duration::from_secs(120), old.drained())
        .await
        .context("processes did not all move within 120 s")?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    drop(profiled);
    let faults = super::bench_ring::minor_faults().saturating_sub(faults);
    let moved = loaded.version.processes();
    if moved < n as usize {
        bail!("only {moved} of {n} processes moved to the new version");
    }
    kill_all(node, &pids).await?;
    Ok((ms, faults as f64 / n as f64))
}

/// Runs of (milliseconds, page faults per process) as a time figure and
/// the faults figure beneath it.
fn ms_and_faults(name: &'static str, faults: &'static str, each: Vec<(f64, f64)>) -> [Figure; 2] {
    let (ms, per_process) = each.into_iter().unzip();
    [
        Figure {
            name,
            unit: "ms",
            runs: ms,
        },
        Figure {
            name: faults,
            unit: "faults",
            runs: per_process,
        },
    ]
}

/// Milliseconds to purge an old version that `n` idle behaviours still run
/// (a lazy load leaves them there), until all have ended.
async fn purge_run(node: &Node, versions: &mut Versions, n: u32) -> Result<(f64, f64)> {
    let _pids = idle_processes(node, n).await?;
    let lazy = LoadOptions {
        mode: UpgradeMode::Lazy,
        ..LoadOptions::default()
    };
    let loaded = node.load_with(versions.next(), MODULE, lazy).await?;
    optimised(&loaded.version).await?;
    let old = loaded.previous.context("an old version")?;
    if old.processes() != n as usize {
        bail!("{} processes on the old version, not {n}", old.processes());
    }
    let faults = super::bench_ring::minor_faults();
    let profiled = Profiled::start();
    let start = Instant::now();
    let killed = node.purge(MODULE).await?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    drop(profiled);
    let faults = super::bench_ring::minor_faults().saturating_sub(faults);
    if killed != n as usize {
        bail!("purge killed {killed} processes, not {n}");
    }
    Ok((ms, faults as f64 / n as f64))
}

/// One-way throughput (msgs/s) of a sender/sink pair while `n` idle
/// processes exist; with `upgrade`, an eager load moves all of them (the
/// pair included) while the stream runs.
async fn upgrade_stream_run(
    node: &Node,
    versions: &mut Versions,
    n: u32,
    messages: u64,
    upgrade: bool,
) -> Result<f64> {
    let pids = idle_processes(node, n).await?;
    let (next, _) = node.code().prepare(&versions.next(), MODULE)?;
    optimised(&next).await?;
    let mut mailbox = node.mailbox()?;
    let sink_args = BenchArgs::Sink {
        expect: messages,
        ack_every: 1_000,
    };
    let (sink, watch) = mailbox.spawn(MODULE, codec::encode(&sink_args), false, true)?;
    let sender_args = BenchArgs::Sender {
        sink,
        count: messages,
        window: 20_000,
        payload_bytes: 64,
    };
    let _profiled = Profiled::start();
    let start = Instant::now();
    mailbox.spawn(MODULE, codec::encode(&sender_args), true, false)?;
    if upgrade {
        tokio::time::sleep(Duration::from_millis(50)).await;
        node.install(next, LoadOptions::default()).await?;
    }
    wait_for_exit(
        &mut mailbox,
        watch.expect("monitored"),
        Duration::from_secs(300),
    )
    .await?;
    let rate = messages as f64 / start.elapsed().as_secs_f64();
    kill_all(node, &pids).await?;
    Ok(rate)
}

/// Two nodes on loopback in this process, each with bench-guest loaded,
/// scheduled as `like` is.
async fn two_nodes(
    guest: &std::path::Path,
    like: &NodeConfig,
) -> Result<(Node, Distribution, Node, Distribution)> {
    let mut cookie = vec![0u8; 32];
    getrandom::fill(&mut cookie).expect("the OS random generator failed");
    let start = |name: &str| {
        let config = NodeConfig {
            name: format!("{name}@127.0.0.1"),
            processes_max: 20_000,
            process_threads: like.process_threads,
            spin_before_park: like.spin_before_park,
            ..NodeConfig::default()
        };
        Node::start(config)
    };
    let (a, b) = (start("bench-a")?, start("bench-b")?);
    load_optimised(&a, guest).await?;
    load_optimised(&b, guest).await?;
    let listen = "127.0.0.1:0".parse().expect("an address");
    let da = Distribution::start(&a, DistConfig::new(listen, cookie.clone())).await?;
    let db = Distribution::start(&b, DistConfig::new(listen, cookie)).await?;
    da.join(&format!("{}:{}", db.name(), db.local_addr().port()))
        .await?;
    Ok((a, da, b, db))
}

/// A pinger on A ⇄ a ponger on B, two processes as in Erlang's figure:
/// (p50, p99) round trip in µs, as the pinger timed them on A's clock.
async fn remote_pingpong_run(a: &Node, da: &Distribution, rounds: u64) -> Result<(f64, f64)> {
    let mut mailbox = a.mailbox()?;
    let (ponger, _) = da
        .spawn_from(
            &mut mailbox,
            "bench-b@127.0.0.1",
            MODULE,
            codec::encode(&BenchArgs::Ponger),
            true,
            false,
        )
        .await?;
    let timed = BenchArgs::TimedPinger {
        ponger,
        rounds,
        // As Erlang's figure: 1,000 round trips before the timed ones.
        warmup: 1_000,
        report: mailbox.pid(),
    };
    let latency = reported(&mut mailbox, &timed, "the timed pinger").await;
    mailbox.exit(ponger, reason::KILL);
    match latency? {
        BenchMsg::Latency { p50_ns, p99_ns } => Ok((p50_ns as f64 / 1e3, p99_ns as f64 / 1e3)),
        other => bail!("the pinger reported something else than its latency: {other:?}"),
    }
}

/// Spawn a bench process with `args` on `mailbox`'s node, monitored, and
/// wait (at most 300 s) for the one message it reports to `mailbox` and
/// for its normal end: that message.
async fn reported(mailbox: &mut HostMailbox, args: &BenchArgs, who: &str) -> Result<BenchMsg> {
    let (_, watch) = mailbox.spawn(MODULE, codec::encode(args), false, true)?;
    let limit = Duration::from_secs(300);
    let report = mailbox
        .recv(limit)
        .await
        .with_context(|| format!("no report from {who} within {limit:?}"))?;
    if report.tag != tag::DATA {
        // Its DOWN: it stopped before it reported.
        bail!("{who} ended before it reported");
    }
    let decoded = codec::decode::<BenchMsg>(&report.payload)
        .map_err(|e| anyhow::anyhow!("{who} reported something undecodable: {e}"));
    wait_for_exit(mailbox, watch.expect("monitored"), limit).await?;
    decoded
}

/// Sender on A → sink on B: messages per second.
async fn remote_oneway_run(
    a: &Node,
    da: &Distribution,
    messages: u64,
    payload_bytes: u32,
) -> Result<f64> {
    let mut mailbox = a.mailbox()?;
    let sink_args = BenchArgs::Sink {
        expect: messages,
        ack_every: 500,
    };
    let (sink, watch) = da
        .spawn_from(
            &mut mailbox,
            "bench-b@127.0.0.1",
            MODULE,
            codec::encode(&sink_args),
            false,
            true,
        )
        .await?;
    let sender_args = BenchArgs::Sender {
        sink,
        count: messages,
        window: 4_000,
        payload_bytes,
    };
    let _profiled = Profiled::start();
    let start = Instant::now();
    mailbox.spawn(MODULE, codec::encode(&sender_args), true, false)?;
    wait_for_exit(
        &mut mailbox,
        watch.expect("monitored"),
        Duration::from_secs(300),
    )
    .await?;
    let _ = a;
    Ok(messages as f64 / start.elapsed().as_secs_f64())
}

/// Remote spawns by a process on A on B, each awaited (its spawn reply and
/// the child's hello, as in Erlang's figure): µs per spawn, as the spawner
/// timed them. The children end after their hello; the run ends when B
/// has ended them all, so that the next run (or figure) does not share
/// the machine with their teardown.
async fn remote_spawn_run(a: &Node, b: &Node, spawns: u64) -> Result<f64> {
    let mut mailbox = a.mailbox()?;
    let alive_before = b.stats().alive;
    let spawner = BenchArgs::RemoteSpawner {
        node: "bench-b@127.0.0.1".into(),
        count: spawns,
        report: mailbox.pid(),
    };
    let (count, ns) = match reported(&mut mailbox, &spawner, "the remote spawner").await? {
        BenchMsg::Spawned { count, ns } => (count, ns),
        other => bail!("the remote spawner reported something else: {other:?}"),
    };
    if count != spawns {
        bail!("the remote spawner spawned {count} of {spawns}");
    }
    let limit = Duration::from_secs(300);
    if !alive_at_most(b, alive_before as usize, limit).await {
        bail!("the remote spawner's children had not all ended after {limit:?}");
    }
    Ok(ns as f64 / 1e3 / spawns as f64)
}

/// The numeric fields of /proc/self/stat after the process's name
/// (`state` reads as 0): index `n` is field `n + 3` of the whole line.
pub(crate) fn proc_stat() -> Vec<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after_name
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect()
}

/// Page faults this process has taken (minor and major).
fn page_faults() -> u64 {
    // minflt and majflt: fields 10 and 12.
    let stat = proc_stat();
    stat.get(7).copied().unwrap_or(0) + stat.get(9).copied().unwrap_or(0)
}

/// [`measure`], also counting the page faults of each run per operation
/// (`ops` operations a run).
async fn measure_with_faults<F, Fut>(
    runs: usize,
    ops: u64,
    mut one: F,
) -> Result<(Vec<f64>, Vec<f64>)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<f64>>,
{
    let (mut values, mut faults) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        let before = page_faults();
        values.push(one().await?);
        faults.push((page_faults() - before) as f64 / ops.max(1) as f64);
    }
    Ok((values, faults))
}

/// Run `one` `runs` times and collect its figures.
async fn measure<F, Fut>(runs: usize, mut one: F) -> Result<Vec<f64>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<f64>>,
{
    let mut values = Vec::with_capacity(runs);
    for _ in 0..runs {
        values.push(one().await?);
    }
    Ok(values)
}

/// Run the benchmarks and print each figure.
pub async fn run(mut config: NodeConfig, args: BenchCli) -> Result<Vec<Figure>> {
    if let Some(fifo) = &args.perf_control {
        open_perf_control(fifo)?;
    }
    let guest = match &args.guest {
        Some(path) => path.clone(),
        None => {
            eprintln!("building bench-guest...");
            guest_build::build_workspace_guests(&[MODULE])?.join("bench_guest.wasm")
        }
    };
    let tables = match args.only.as_deref() {
        Some("tables") => Some(super::bench_tables::Sections::All),
        Some("tables-replicated") => Some(super::bench_tables::Sections::Replicated),
        _ => None,
    };
    if let Some(sections) = tables {
        let base = args.coord_dir.clone().unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("molt-bench-tables-{}", std::process::id()));
        let figures = super::bench_tables::run(args.runs.max(1), &guest, &dir, sections).await;
        let _ = std::fs::remove_dir_all(&dir);
        let figures = figures?;
        print(
            &figures,
            "molt bench: tables on one node and replicated on two (the workloads of mnesia's local_ram, local_disc and cluster benches), median shown"
                .into(),
        );
        if let Some(script) = &args.mnesia {
            let mnesia = super::bench_tables::mnesia(script, args.runs.max(1), sections)?;
            super::bench_tables::print_beside(&figures, &mnesia);
        }
        return Ok(figures);
    }
    if args.only.as_deref() == Some("metrics") {
        let runs = args.runs.max(1);
        let figures = super::bench_observe::metrics(config, &guest, runs, args.messages).await?;
        print(
            &figures,
            "molt bench: what counting costs (local one-way, counters on and scraped vs off, alternating), median shown".into(),
        );
        return Ok(figures);
    }
    if args.only.as_deref() == Some("dashboard") {
        let runs = args.runs.max(1);
        let figures = super::bench_observe::dashboard(config, &guest, runs, args.processes).await?;
        print(
            &figures,
            format!(
                "molt bench: a node of {} idle processes serving the dashboard (10 s windows), median shown",
                args.processes
            ),
        );
        return Ok(figures);
    }
    if args.only.as_deref() == Some("million") {
        let runs = args.runs.max(1);
        let figures = super::bench_million::figures(config, &guest, runs, args.million).await?;
        print(
            &figures,
            format!(
                "molt bench: {} idle behaviours on one node, hibernated, then each sent one message (a ring's lap), median shown",
                args.million
            ),
        );
        return Ok(figures);
    }
    if args.only.as_deref() == Some("coordination") {
        let figures = super::bench_coord::run(
            args.runs.max(1),
            args.contention_secs,
            args.coord_dir,
            &guest,
        )
        .await?;
        print(
            &figures,
            "molt bench: coordination on three nodes (loopback), median shown".into(),
        );
        return Ok(figures);
    }
    let ring = args.only.as_deref().is_none_or(|o| o == "ring");
    let most = match ring {
        true => args.processes.max(super::bench_ring::SIZES[1]),
        false => args.processes,
    };
    config.processes_max = config.processes_max.max(most + 64);
    let node = Node::start(config)?;
    if node.config().processes_max < most + 64 {
        bail!(
            "the node can run only {} processes (see the warning about vm.max_map_count); \
             lower --processes or raise the limit",
            node.config().processes_max
        );
    }
    load_optimised(&node, &guest).await?;
    let runs = args.runs.max(1);
    let want = |name: &str| {
        args.only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|o| o == name))
    };
    let mut figures = Vec::new();

    if want("spawn") {
        let (mut spawn, mut memory, mut maps) = (Vec::new(), Vec::new(), Vec::new());
        let (mut faults, mut heap, mut proportional) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let before = page_faults();
            let run = spawn_run(&node, args.processes).await?;
            faults.push((page_faults() - before) as f64 / args.processes.max(1) as f64);
            spawn.push(run.us);
            memory.push(run.rss / 1024.0);
            proportional.push(run.pss / 1024.0);
            maps.push(run.maps);
            heap.push(run.heap / 1024.0);
        }
        figures.push(Figure {
            name: "spawn (behaviour, incl. init)",
            unit: "µs/process",
            runs: spawn,
        });
        figures.push(Figure {
            name: "  page faults per spawn (and its kill)",
            unit: "faults",
            runs: faults,
        });
        figures.push(Figure {
            name: "idle memory per process (RSS delta + pool pages taken) / N",
            unit: "KiB",
            runs: memory,
        });
        figures.push(Figure {
            // RSS counts a shared page once per mapping of it.
            name: "  same, proportional (PSS: a shared page counted once)",
            unit: "KiB",
            runs: proportional,
        });
        figures.push(Figure {
            // The host heap the processes took from the kernel: on a fresh
            // node all of theirs; on a warm one what the run before freed
            // and the allocator still held is reused and not counted, here
            // or in the RSS delta above (freed memory goes back after 60 s).
            name: "  host heap taken from the kernel per process",
            unit: "KiB",
            runs: heap,
        });
        figures.push(Figure {
            name: "kernel memory mappings per process",
            unit: "maps",
            runs: maps,
        });
    }
    if want("pingpong") {
        let (v, faults) =
            measure_with_faults(runs, args.rounds, || pingpong_run(&node, args.rounds)).await?;
        figures.push(Figure {
            name: "local ping-pong",
            unit: "round trips/s",
            runs: v,
        });
        figures.push(Figure {
            name: "  page faults per round trip",
            unit: "faults",
            runs: faults,
        });
    }
    if want("oneway") {
        let (v, faults) =
            measure_with_faults(runs, args.messages, || oneway_run(&node, args.messages)).await?;
        figures.push(Figure {
            name: "local one-way, 64-byte messages",
            unit: "msgs/s",
            runs: v,
        });
        figures.push(Figure {
            name: "  page faults per message",
            unit: "faults",
            runs: faults,
        });
    }
    if want("ring") {
        figures.extend(super::bench_ring::figures(&node, runs, args.ring_hops).await?);
    }
    let guest_bytes =
        std::fs::read(&guest).with_context(|| format!("reading {}", guest.display()))?;
    let mut versions = Versions {
        bytes: guest_bytes,
        next: 0,
    };
    let n = args.upgrade_processes;
    if want("load") {
        let (mut fresh, mut optimised, mut cached) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let (f, o, c) = load_run(&node, &mut versions).await?;
            fresh.push(f);
            optimised.push(o);
            cached.push(c);
        }
        figures.push(Figure {
            name: "load a version, compiled fresh (serves spawns)",
            unit: "ms",
            runs: fresh,
        });
        figures.push(Figure {
            name: "  same, until its optimised code is ready",
            unit: "ms",
            runs: optimised,
        });
        figures.push(Figure {
            name: "load a version, from the compiled cache",
            unit: "µs",
            runs: cached,
        });
    }
    if want("upgrade") {
        let mut each = Vec::new();
        for _ in 0..runs {
            each.push(upgrade_run(&node, &mut versions, n).await?);
        }
        figures.extend(ms_and_faults(
            "eager upgrade of live behaviours, all moved",
            "  page faults per process moved",
            each,
        ));
    }
    if want("purge") {
        let mut each = Vec::new();
        for _ in 0..runs {
            each.push(purge_run(&node, &mut versions, n).await?);
        }
        figures.extend(ms_and_faults(
            "purge of lingering processes, all ended",
            "  page faults per process purged",
            each,
        ));
    }
    if want("upgrade-stream") {
        let (mut plain, mut upgraded) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            plain.push(upgrade_stream_run(&node, &mut versions, n, args.messages, false).await?);
            upgraded.push(upgrade_stream_run(&node, &mut versions, n, args.messages, true).await?);
        }
        figures.push(Figure {
            name: "one-way beside idle processes, no upgrade",
            unit: "msgs/s",
            runs: plain,
        });
        figures.push(Figure {
            name: "same, all upgraded while it runs",
            unit: "msgs/s",
            runs: upgraded,
        });
    }
    let remote = [
        "remote-pingpong",
        "remote-oneway",
        "remote-4k",
        "remote-spawn",
    ];
    if remote.iter().any(|r| want(r)) {
        let (_a, da, _b, _db) = two_nodes(&guest, node.config()).await?;
        let (a, b) = (&_a, &_b);
        if want("remote-pingpong") {
            let (mut p50, mut p99) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                let (x, y) = remote_pingpong_run(a, &da, args.remote_rounds).await?;
                p50.push(x);
                p99.push(y);
            }
            figures.push(Figure {
                name: "remote ping-pong p50 (two nodes, loopback)",
                unit: "µs",
                runs: p50,
            });
            figures.push(Figure {
                name: "remote ping-pong p99",
                unit: "µs",
                runs: p99,
            });
        }
        if want("remote-oneway") {
            let v = measure(runs, || remote_oneway_run(a, &da, args.remote_messages, 64)).await?;
            figures.push(Figure {
                name: "remote one-way, 64-byte messages",
                unit: "msgs/s",
                runs: v,
            });
        }
        if want("remote-4k") {
            let v = measure(runs, || async {
                let rate = remote_oneway_run(a, &da, args.remote_messages / 4, 4096).await?;
                Ok(rate * 4096.0 / 1e6)
            })
            .await?;
            figures.push(Figure {
                name: "remote one-way, 4 KiB messages",
                unit: "MB/s",
                runs: v,
            });
        }
        if want("remote-spawn") {
            let v = measure(runs, || remote_spawn_run(a, b, args.remote_spawns)).await?;
            figures.push(Figure {
                name: "remote spawn, waiting for each",
                unit: "µs/spawn",
                runs: v,
            });
        }
        da.shutdown();
    }
    print(
        &figures,
        format!(
            "molt bench: {} processes for spawn/memory, {n} for upgrade/purge, {runs} runs each, median shown",
            args.processes
        ),
    );
    if args.erlang && want("ring") {
        let dir = std::env::temp_dir().join(format!("molt-bench-ring-{}", std::process::id()));
        let erlang = super::bench_ring::erlang(runs, args.ring_hops, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        super::bench_ring::print_beside(&figures, &erlang?);
    }
    Ok(figures)
}

fn print(figures: &[Figure], title: String) {
    out!("{title}");
    for f in figures {
        // Small figures (page faults per operation) need more digits.
        let digits = if f.median().abs() < 1.0 { 4 } else { 1 };
        let runs: Vec<String> = f.runs.iter().map(|v| format!("{v:.digits$}")).collect();
        out!(
            "{:<50} {:>14.digits$} {:<14} runs: [{}]",
            f.name,
            f.median(),
            f.unit,
            runs.join(", ")
        );
    }
}
