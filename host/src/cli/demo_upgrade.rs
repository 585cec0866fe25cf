//! The live-upgrade part of `molt demo`: counters on `counter` 0.1.0 take
//! a steady stream of `Add` messages while `counter` 0.2.0 is loaded; they
//! move to it at a message boundary with their counts, lose nothing, and
//! answer the message only 0.2.0 knows (`Stats`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use molt_abi::{Pid, Ref, codec, tag};
use molt_host::code::LoadOptions;
use molt_host::{HostMailbox, Node, NodeConfig, SendError};
use serde::{Deserialize, Serialize};

/// Counters in the demo.
const COUNTERS: usize = 3;
/// `Add(1)` messages sent to each counter per stream tick.
const ADDS_PER_TICK: u64 = 10;
/// Time between stream ticks.
const TICK: Duration = Duration::from_millis(1);
/// How long the stream runs before the load, and again after every
/// counter has moved.
const STREAM_PHASE: Duration = Duration::from_millis(200);
/// Longest wait for an answer or for the counters to move.
const WAIT: Duration = Duration::from_secs(10);

/// `counter`'s messages, the same wire shape as `CounterMsg` of
/// examples/counter-v2 (0.1.0 knows every variant but `Stats`).
#[derive(Serialize)]
#[allow(
    dead_code,
    reason = "variants are encoded by position; the demo sends some"
)]
enum CounterMsg {
    Add(u64),
    Get { from: Pid },
    Crash(String),
    Stop,
    Stats { from: Pid },
}

/// `counter`'s replies (examples/counter-v2's `CounterReply`).
#[derive(Debug, Deserialize)]
enum CounterReply {
    Count(u64),
    Stats { count: u64, adds: u64 },
}

/// Run the live-upgrade demo on a node of its own; fails if a counter
/// lost an `Add` or did not move to 0.2.0.
pub async fn run(config: NodeConfig, guests: &Path) -> Result<()> {
    out!("\n== live upgrade: counter 0.1.0 -> 0.2.0 while Add messages stream in");
    let node = Node::start(NodeConfig {
        name: "demo-upgrade@127.0.0.1".into(),
        processes_max: 100,
        ..config
    })?;
    let v1 = node.load_file(guests.join("counter.wasm"))?;
    let v2_bytes =
        std::fs::read(guests.join("counter_v2.wasm")).context("reading counter_v2.wasm")?;
    let mut me = node.mailbox()?;
    let mut counters = Vec::with_capacity(COUNTERS);
    for _ in 0..COUNTERS {
        counters.push(me.spawn("counter", codec::encode(&0u64), false, false)?.0);
    }
    let before = versions_of(&node, &counters);
    out!(
        "{COUNTERS} counters on {} {}: {}",
        v1.identity.name,
        v1.identity.version,
        list(&counters)
    );

    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let stream = tokio::spawn(stream_adds(
        node.mailbox()?,
        counters.clone(),
        sent.clone(),
        stop.clone(),
    ));
    out!("streaming Add(1) to each counter, {ADDS_PER_TICK} per ms");
    tokio::time::sleep(STREAM_PHASE).await;

    let per = |total: u64| total / COUNTERS as u64;
    out!(
        "loading counter_v2.wasm after about {} Adds to each counter...",
        per(sent.load(Ordering::Relaxed))
    );
    let started = Instant::now();
    let loaded = node
        .load_with(v2_bytes, "counter", LoadOptions::default())
        .await
        .context("loading counter_v2.wasm")?;
    let loaded_at = Instant::now();
    out!(
        "loaded counter {} in {} ms, compiled while the stream went on; {} is old now",
        loaded.version.identity.version,
        (loaded_at - started).as_millis(),
        loaded
            .previous
            .as_ref()
            .map_or("nothing", |p| p.identity.version.as_str()),
    );
    let to = loaded.version.identity.version.clone();
    wait_until_all_run(&node, &counters, &to).await?;
    out!(
        "every counter runs {to} {} ms later, each moved between two of its messages",
        loaded_at.elapsed().as_millis()
    );
    tokio::time::sleep(STREAM_PHASE).await;
    stop.store(true, Ordering::Relaxed);
    let (mut stream_mailbox, per_counter) = stream.await.context("the Add stream failed")??;
    out!(
        "stream stopped after about {} Adds to each counter",
        per(sent.load(Ordering::Relaxed))
    );

    // Asked from the stream's own mailbox: the question queues behind
    // every Add it sent.
    let after = versions_of(&node, &counters);
    let mut lost = false;
    for (i, &pid) in counters.iter().enumerate() {
        let count = match ask(&mut stream_mailbox, pid, |from| CounterMsg::Get { from }).await? {
            CounterReply::Count(n) => n,
            other => bail!("{pid} answered Get with {other:?}"),
        };
        let (stats_count, adds) =
            match ask(&mut stream_mailbox, pid, |from| CounterMsg::Stats { from }).await? {
                CounterReply::Stats { count, adds } => (count, adds),
                other => bail!("{pid} answered Stats with {other:?}"),
            };
        let ok = count == per_counter[i] && stats_count == count;
        lost |= !ok;
        out!(
            "  {pid}  {} -> {}  count {count} {} {} sent; Stats: {adds} adds since the upgrade",
            before[i],
            after[i],
            if ok { "=" } else { "!=" },
            per_counter[i],
        );
    }
    drop(me);
    if lost {
        bail!("a counter's count differs from the Adds sent to it");
    }
    match node.soft_purge("counter") {
        Ok(true) => out!(
            "nothing lost; old version {} purged (no process left on it)",
            v1.identity.version
        ),
        Ok(false) => out!("nothing lost"),
        Err(e) => bail!("soft purge after the upgrade: {e}"),
    }
    node.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// Send `Add(1)` to every counter, [`ADDS_PER_TICK`] each per [`TICK`],
/// until `stop`; a full mailbox makes it wait and retry, so every Add
/// counted in `sent` is delivered. Returns the mailbox and the Adds sent
/// to each counter.
async fn stream_adds(
    mut me: HostMailbox,
    counters: Vec<Pid>,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Result<(HostMailbox, Vec<u64>)> {
    let add = codec::encode(&CounterMsg::Add(1));
    let mut per_counter = vec![0u64; counters.len()];
    let mut tick = tokio::time::interval(TICK);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        for _ in 0..ADDS_PER_TICK {
            for (i, &pid) in counters.iter().enumerate() {
                loop {
                    match me.send(pid, tag::DATA, Ref::NONE, add.clone()) {
                        Ok(()) => break,
                        Err(SendError::MailboxFull(_)) => {
                            tokio::time::sleep(TICK).await;
                        }
                        Err(e) => return Err(e).context("sending Add"),
                    }
                }
                per_counter[i] += 1;
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok((me, per_counter))
}

/// Send the message `make(me)` to `pid` and wait for its reply.
async fn ask(
    me: &mut HostMailbox,
    pid: Pid,
    make: impl FnOnce(Pid) -> CounterMsg,
) -> Result<CounterReply> {
    let from = me.pid();
    me.send(pid, tag::DATA, Ref::NONE, codec::encode(&make(from)))?;
    let m = me
        .recv(WAIT)
        .await
        .with_context(|| format!("{pid} did not answer in {WAIT:?}"))?;
    Ok(codec::decode(&m.payload)?)
}

/// The version each process runs (`?` if it is gone).
fn versions_of(node: &Node, pids: &[Pid]) -> Vec<String> {
    let all = node.processes();
    pids.iter()
        .map(|pid| {
            all.iter()
                .find(|p| p.pid == *pid)
                .and_then(|p| p.module.as_ref().map(|(_, v)| v.clone()))
                .unwrap_or_else(|| "?".into())
        })
        .collect()
}

/// Wait (bounded) until every process in `pids` runs `version`.
async fn wait_until_all_run(node: &Node, pids: &[Pid], version: &str) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let versions = versions_of(node, pids);
        if versions.iter().all(|v| v == version) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("counters still on {versions:?} {WAIT:?} after loading {version}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn list(pids: &[Pid]) -> String {
    pids.iter()
        .map(Pid::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}
