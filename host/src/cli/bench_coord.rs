//! `molt bench --only coordination`: cluster names and locks on three
//! in-process nodes over loopback, in `disc` and `ram` log modes, with the
//! raw fsync latency of the data directory's disk measured in the same
//! run (every durable figure depends on it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use molt_host::NodeConfig;
use molt_host::cluster::{LockMode, LockRequest, LogMode};
use molt_host::control::Control;

use super::bench::Figure;
use super::bench_wire::BenchArgs;
use super::local_cluster::{Member, stop, stop_member};

/// Three nodes of the bench cluster, named `coord-*`, with `guest` (the
/// bench guest) loaded if given.
async fn three(dir: &Path, mode: LogMode, guest: Option<&Path>) -> Result<Vec<Member>> {
    super::local_cluster::three(&NodeConfig::default(), "coord", dir, mode, guest).await
}

/// Guest lookups of a cluster name held on `m`'s replica: a bench guest
/// calls `global::whereis` `reads` times; reads per second, spawn and
/// exit included.
async fn guest_whereis(m: &Member, reads: u64) -> Result<f64> {
    use molt_abi::{codec, reason};
    let mut mailbox = m.node.mailbox()?;
    let args = BenchArgs::WhereisGlobal {
        name: "read-me".into(),
        reads,
    };
    let start = Instant::now();
    let (_, watch) = mailbox.spawn(super::bench::MODULE, codec::encode(&args), false, true)?;
    let why = mailbox
        .recv_down(watch.expect("monitored"), Duration::from_secs(120))
        .await
        .context("the whereis_global guest did not finish in time")?;
    if why != reason::NORMAL {
        bail!("the whereis_global guest stopped: {why}");
    }
    Ok(reads as f64 / start.elapsed().as_secs_f64())
}

fn exclusive(lock: &str) -> Vec<LockRequest> {
    vec![LockRequest {
        lock: lock.to_string(),
        mode: LockMode::Exclusive,
    }]
}

pub(super) fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

/// Lock + unlock `n` times from `m`: (p50, p99) in µs.
async fn lock_cycle(m: &Member, lock: &str, n: usize) -> Result<(f64, f64)> {
    let me = m.node.mailbox()?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        m.coord
            .lock(me.pid(), &exclusive(lock), Duration::from_secs(5))
            .await?;
        m.coord.unlock(lock, me.pid()).await?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(percentiles(samples))
}

/// Register + unregister `n` times from `m`: p50 in µs.
async fn register_cycle(m: &Member, n: usize) -> Result<f64> {
    let me = m.node.mailbox()?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        m.coord.register("bench-name", me.pid()).await?;
        m.coord.unregister("bench-name", me.pid()).await?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(percentiles(samples).0)
}

/// Raw fsync of a small write in `dir`: p50 in µs.
pub(super) fn fsync_p50(dir: &Path) -> Result<f64> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let mut samples = Vec::with_capacity(200);
    for i in 0..200u32 {
        file.write_all(&i.to_le_bytes().repeat(128))?;
        let t = Instant::now();
        file.sync_data()?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let _ = std::fs::remove_file(&path);
    Ok(percentiles(samples).0)
}

/// 8 contenders, 4 on each of two nodes, for one lock, for `secs`: each
/// contender's completed lock + unlock cycles.
async fn contention(members: &[Member], secs: u64) -> Result<Vec<u64>> {
    let stop_at = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let m = &members[i % 2];
        let coord = m.coord.clone();
        let me = m.node.mailbox()?;
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < stop_at {
                let left = stop_at.saturating_duration_since(Instant::now());
                if coord
                    .lock(me.pid(), &exclusive("contended"), left)
                    .await
                    .is_ok()
                {
                    let _ = coord.unlock("contended", me.pid()).await;
                    done += 1;
                }
            }
            drop(me);
            done
        }));
    }
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await?);
    }
    Ok(counts)
}

/// Kill the leader's node (its connections drop; it answers nothing) and
/// time until a follower is granted a lock: ms.
async fn leader_failover(dir: &Path) -> Result<f64> {
    let mut members = three(dir, LogMode::Ram, None).await?;
    let leader = members.remove(0);
    let me = members[0].node.mailbox()?;
    let t = Instant::now();
    leader.dist.shutdown();
    loop {
        if members[0]
            .coord
            .lock(me.pid(), &exclusive("failover"), Duration::from_millis(200))
            .await
            .is_ok()
        {
            break;
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("no lock granted within 30 s of the leader's loss");
        }
    }
    let took = t.elapsed().as_secs_f64() * 1e3;
    drop(me);
    stop_member(leader).await;
    stop(members).await;
    Ok(took)
}

/// Kill the node of a lock's holder and time until the next waiter (on
/// another node) is granted it: ms.
async fn holder_failover(dir: &Path) -> Result<f64> {
    let mut members = three(dir, LogMode::Ram, None).await?;
    let holder_node = members.remove(2);
    let holder = holder_node.node.mailbox()?;
    holder_node
        .coord
        .lock(holder.pid(), &exclusive("held"), Duration::from_secs(5))
        .await?;
    let coord = members[1].coord.clone();
    let waiter = members[1].node.mailbox()?;
    let wpid = waiter.pid();
    let wait = tokio::spawn(async move {
        let r = coord
            .lock(wpid, &exclusive("held"), Duration::from_secs(60))
            .await;
        (r, Instant::now())
    });
    while members[0]
        .coord
        .locks()
        .first()
        .is_none_or(|l| l.queue.is_empty())
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = Instant::now();
    holder_node.dist.shutdown();
    let (granted, at) = wait.await?;
    granted?;
    let took = at.duration_since(t).as_secs_f64() * 1e3;
    drop((holder, waiter));
    stop_member(holder_node).await;
    stop(members).await;
    Ok(took)
}

/// A fresh directory for the bench's logs, removed at the end.
struct BenchDir(PathBuf);

impl Drop for BenchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The coordination figures.
pub async fn run(
    runs: usize,
    contention_secs: u64,
    data_dir: Option<PathBuf>,
    guest: &Path,
) -> Result<Vec<Figure>> {
    let base = data_dir.unwrap_or_else(std::env::temp_dir);
    let dir = BenchDir(base.join(format!("molt-bench-coord-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let mut figures = Vec::new();
    let fsync: Vec<f64> = (0..runs)
        .map(|_| fsync_p50(&dir.0))
        .collect::<Result<_>>()?;
    figures.push(Figure {
        name: "raw fsync p50 (data directory's disk)",
        unit: "µs",
        runs: fsync,
    });
    // Consensus without a network: the floor under every figure below.
    let alone = super::local_cluster::start(
        &NodeConfig::default(),
        "alone",
        &dir.0.join("alone"),
        LogMode::Ram,
        None,
        1,
    )
    .await?;
    let mut single = Vec::new();
    for _ in 0..runs {
        single.push(lock_cycle(&alone[0], "bench", 1_000).await?.0);
    }
    stop(alone).await;
    figures.push(Figure {
        name: "lock+unlock p50, one-node group (ram)",
        unit: "µs",
        runs: single,
    });
    for (mode, tag) in [(LogMode::Ram, "ram"), (LogMode::Disc, "disc")] {
        let guest = (mode == LogMode::Ram).then_some(guest);
        let members = three(&dir.0.join(tag), mode, guest).await?;
        let mut lock_leader = (Vec::new(), Vec::new());
        let mut lock_follower = (Vec::new(), Vec::new());
        let mut register = Vec::new();
        for _ in 0..runs {
            let (p50, p99) = lock_cycle(&members[0], "bench", 1_000).await?;
            lock_leader.0.push(p50);
            lock_leader.1.push(p99);
            let (p50, p99) = lock_cycle(&members[1], "bench", 1_000).await?;
            lock_follower.0.push(p50);
            lock_follower.1.push(p99);
            register.push(register_cycle(&members[0], 1_000).await?);
        }
        let name =
            |what: &str| -> &'static str { Box::leak(format!("{what} ({tag})").into_boxed_str()) };
        figures.push(Figure {
            name: name("lock+unlock p50, leader's node"),
            unit: "µs",
            runs: lock_leader.0,
        });
        figures.push(Figure {
            name: name("lock+unlock p99, leader's node"),
            unit: "µs",
            runs: lock_leader.1,
        });
        figures.push(Figure {
            name: name("lock+unlock p50, a follower"),
            unit: "µs",
            runs: lock_follower.0,
        });
        figures.push(Figure {
            name: name("lock+unlock p99, a follower"),
            unit: "µs",
            runs: lock_follower.1,
        });
        figures.push(Figure {
            name: name("register+unregister p50, leader's node"),
            unit: "µs",
            runs: register,
        });
        if mode == LogMode::Ram {
            // One request and its answer on the coordination service, which
            // carries Raft's replication: each commit costs one of these.
            let control = Control::new(members[0].node.clone(), members[0].dist.clone())?;
            let peer = members[1].dist.name().to_string();
            let mut rtt = Vec::new();
            for _ in 0..runs {
                let mut samples = Vec::with_capacity(2_000);
                for _ in 0..2_000 {
                    let t = Instant::now();
                    control.global_names(&peer).await?;
                    samples.push(t.elapsed().as_secs_f64() * 1e6);
                }
                rtt.push(percentiles(samples).0);
            }
            figures.push(Figure {
                name: "coordination service round trip p50 (ram)",
                unit: "µs",
                runs: rtt,
            });
            let me = members[1].node.mailbox()?;
            members[1].coord.register("read-me", me.pid()).await?;
            while members[1].coord.whereis("read-me").is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut reads = Vec::new();
            for _ in 0..runs {
                let n = 1_000_000u32;
                let t = Instant::now();
                let mut found = 0u32;
                for _ in 0..n {
                    found += u32::from(members[1].coord.whereis("read-me").is_some());
                }
                assert_eq!(found, n);
                reads.push(f64::from(n) / t.elapsed().as_secs_f64());
            }
            figures.push(Figure {
                name: "whereis_global, local replica (Rust API)",
                unit: "reads/s",
                runs: reads,
            });
            let mut reads = Vec::new();
            for _ in 0..runs {
                reads.push(guest_whereis(&members[1], 1_000_000).await?);
            }
            figures.push(Figure {
                name: "whereis_global, local replica (from a guest)",
                unit: "reads/s",
                runs: reads,
            });
            let counts = contention(&members, contention_secs).await?;
            let total: u64 = counts.iter().sum();
            let fair = total as f64 / counts.len() as f64;
            out!(
                "contention: 8 contenders on 2 nodes, one lock, {contention_secs} s: completions {counts:?} (fair share {fair:.0}; worst {:.2}× of it)",
                counts
                    .iter()
                    .map(|&c| c as f64 / fair)
                    .fold(f64::INFINITY, f64::min)
            );
        }
        stop(members).await;
    }
    let mut leader = Vec::new();
    let mut holder = Vec::new();
    for _ in 0..runs {
        leader.push(leader_failover(&dir.0.join("failover")).await?);
        holder.push(holder_failover(&dir.0.join("holder")).await?);
    }
    figures.push(Figure {
        name: "leader's node killed: lock granted again after",
        unit: "ms",
        runs: leader,
    });
    figures.push(Figure {
        name: "holder's node killed: next waiter granted after (TTL 5 s)",
        unit: "ms",
        runs: holder,
    });
    Ok(figures)
}
