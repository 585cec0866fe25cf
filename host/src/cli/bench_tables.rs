//! `molt bench --only tables`: the workloads of mnesia's bench in
//! `run_store.sh` (section `local_ram`), run by bench-guest processes on
//! one node against a table `kv` of 16-byte values by integer key: write
//! transactions from 1 and from 8 writers, dirty writes, dirty reads; and
//! (section `local_disc`) durable write transactions on a disc table,
//! beside the raw fsync of the same disk; and (section `cluster`) write
//! transactions from 1 and 8 writers on a table replicated on two nodes
//! of a local three-node cluster, issued on the node that leads the
//! table's group; and a conflict-free (`lww`) table kept on all three:
//! dirty writes per second by bench guests on one node, and how long the
//! replicas take to agree after a 2|1 partition, during which each side
//! wrote its own keys, heals.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use molt_abi::table::{Copy, Kind, Replica, Reply, Request, Spec};
use molt_abi::{codec, reason};
use molt_host::{Node, NodeConfig};

use super::bench::{Figure, MODULE};
use super::bench_wire::{BenchArgs, TableOp};

/// Write transactions per transaction figure (mnesia's `TX_N`).
const TX_N: i64 = 100_000;
/// Writers of the multi-writer figure (mnesia's `WRITERS`).
const WRITERS: i64 = 8;
/// Dirty writes, then dirty reads (mnesia's `DIRTY_N`).
const DIRTY_N: i64 = 1_000_000;
/// Warm-up transactions before each transaction figure, on keys below 0.
const WARMUP_N: i64 = 1_000;

/// A fresh, empty `kv` (deleted first if there), kept as `copy` says.
async fn fresh_kv(node: &Node, copy: Copy) -> Result<()> {
    let _ = node.table(Request::Delete { table: "kv".into() }).await;
    let spec = Spec {
        name: "kv".into(),
        kind: Kind::Set,
        indexes: Vec::new(),
        replicas: vec![Replica {
            node: String::new(),
            copy,
        }],
    };
    match node.table(Request::Create(spec)).await {
        Reply::Done => Ok(()),
        other => bail!("creating kv: {other:?}"),
    }
}

/// Run one bench-guest per key range at once, each doing `op` on its
/// range; seconds from the first spawn to the last exit.
async fn guests(node: &Node, op: TableOp, ranges: &[(i64, i64)]) -> Result<f64> {
    let mut mailbox = node.mailbox()?;
    let start = Instant::now();
    let mut watches = Vec::with_capacity(ranges.len());
    for &(from, to) in ranges {
        let args = BenchArgs::Table { op, from, to };
        let (_, watch) = mailbox.spawn(MODULE, codec::encode(&args), false, true)?;
        watches.push(watch.expect("monitored"));
    }
    for watch in watches {
        let why = mailbox
            .recv_down(watch, Duration::from_secs(300))
            .await
            .ok_or_else(|| anyhow::anyhow!("a table bench guest did not finish in time"))?;
        if why != reason::NORMAL {
            bail!("a table bench guest stopped: {why}");
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Split `1..=n` into `parts` ranges.
fn split(n: i64, parts: i64) -> Vec<(i64, i64)> {
    let per = n / parts;
    (0..parts)
        .map(|i| (i * per + 1, (i + 1) * per + 1))
        .collect()
}

/// Durable write transactions per disc figure (mnesia's `SYNC_N`).
const SYNC_N: i64 = 10_000;

/// Create `kv` of `kind`, kept as ram copies on `on`, from the first of
/// them.
async fn create_kv_on(on: &[super::local_cluster::Member], kind: Kind) -> Result<()> {
    create_on(on, "kv", kind).await
}

/// Create `name` of `kind`, a ram copy on each of `on`.
async fn create_on(on: &[super::local_cluster::Member], name: &str, kind: Kind) -> Result<()> {
    let replicas = on
        .iter()
        .map(|m| Replica {
            node: m.dist.name().to_string(),
            copy: Copy::Ram,
        })
        .collect();
    let spec = Spec {
        name: name.into(),
        kind,
        indexes: Vec::new(),
        replicas,
    };
    match on[0].node.table(Request::Create(spec)).await {
        Reply::Done => Ok(()),
        other => bail!(
            "creating {name} ({kind:?}) on {} nodes: {other:?}",
            on.len()
        ),
    }
}

/// Wait (20 s at most) until `table`'s group has both `on` as voters and
/// every one of them knows a leader: the leader's node.
async fn led_on_two(on: &[super::local_cluster::Member], table: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let statuses: Vec<_> = on
            .iter()
            .map(|m| m.node.tables().replica_status(table))
            .collect();
        if statuses.iter().all(|s| {
            s.as_ref()
                .is_some_and(|s| s.voters.len() == 2 && s.leader.is_some())
        }) && let Some(Some(s)) = statuses.first()
            && let Some(leader) = &s.leader
        {
            return Ok(leader.clone());
        }
        if Instant::now() > deadline {
            bail!("the replicated {table} got no leader in 20 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Write transactions per replicated-table figure.
const RTX_N: i64 = 20_000;

/// Single-key write transactions, one at a time from the node itself, to
/// time each: (p50, p99) in µs.
const LATENCY_N: usize = 2_000;

/// What the replicated section measures.
struct ReplicatedRun {
    one: f64,
    eight: f64,
    p50: f64,
    p99: f64,
    /// A transaction over two tables (two groups): (p50, p99) in µs.
    two_p50: f64,
    two_p99: f64,
}

/// A batch that puts `key` if it is absent.
fn put_absent(key: Vec<u8>) -> molt_abi::table::Batch {
    molt_abi::table::Batch {
        conditions: vec![molt_abi::table::Condition::Absent { key: key.clone() }],
        ops: vec![molt_abi::table::Op::Put {
            key,
            value: vec![0; 16],
            index_values: Vec::new(),
        }],
    }
}

/// Time `n` commits of `batches(i)` one at a time on `node`: (p50, p99)
/// in µs.
async fn timed_commits(
    node: &Node,
    n: usize,
    batches: impl Fn(usize) -> Vec<(String, molt_abi::table::Batch)>,
) -> Result<(f64, f64)> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        match node.table(Request::Commit(batches(i))).await {
            Reply::Committed(_) => {}
            other => bail!("a timed commit: {other:?}"),
        }
        times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    Ok(super::bench_coord::percentiles(times))
}

/// Replicated write transactions (1 writer, 8 writers) per second, and
/// one transaction's latency, on `kv` kept as ram copies on two of three
/// local nodes.
async fn replicated(guest: &Path, dir: &Path) -> Result<ReplicatedRun> {
    use molt_host::cluster::LogMode;
    let members = super::local_cluster::three(
        &NodeConfig::default(),
        "tables",
        dir,
        LogMode::Ram,
        Some(guest),
    )
    .await?;
    let result = async {
        create_kv_on(&members[..2], Kind::Set).await?;
        // The writers run where the group's leader is, once both
        // replicas are voters.
        let leader = led_on_two(&members[..2], "kv").await?;
        let at = members
            .iter()
            .find(|m| m.dist.name() == leader)
            .ok_or_else(|| anyhow::anyhow!("the leader {leader} is not a local node"))?;
        guests(&at.node, TableOp::Transaction, &[(-WARMUP_N, 0)]).await?;
        let one = RTX_N as f64 / guests(&at.node, TableOp::Transaction, &split(RTX_N, 1)).await?;
        let eight =
            RTX_N as f64 / guests(&at.node, TableOp::Transaction, &split(RTX_N, WRITERS)).await?;
        // Latency: one conditional batch at a time, as a transaction
        // commits, timed from the node itself.
        let key = |i: usize| (i as u64 + 1_000_000).to_be_bytes().to_vec();
        let (p50, p99) = timed_commits(&at.node, LATENCY_N, |i| {
            vec![("kv".into(), put_absent(key(i)))]
        })
        .await?;
        // Over two tables, each its own group (two phases).
        create_on(&members[..2], "kv2", Kind::Set).await?;
        led_on_two(&members[..2], "kv2").await?;
        let (two_p50, two_p99) = timed_commits(&at.node, LATENCY_N, |i| {
            let key = key(i + LATENCY_N);
            vec![
                ("kv".into(), put_absent(key.clone())),
                ("kv2".into(), put_absent(key)),
            ]
        })
        .await?;
        Ok(ReplicatedRun {
            one,
            eight,
            p50,
            p99,
            two_p50,
            two_p99,
        })
    }
    .await;
    super::local_cluster::stop(members).await;
    result
}

/// Dirty writes per conflict-free figure.
const AP_N: i64 = 200_000;
/// Writes on each side of the partition before the heal.
const AP_SIDE_N: usize = 10_000;

/// What the conflict-free section measures.
struct ApRun {
    writes: f64,
    converge_ms: f64,
}

/// Dirty writes to a conflict-free table kept on three local nodes, by
/// guests on one; then a 2|1 partition, writes on both sides, the heal,
/// and the time until every replica holds every write.
async fn conflict_free(guest: &Path, dir: &Path) -> Result<ApRun> {
    use molt_host::cluster::LogMode;
    use molt_host::net::nemesis::LinkFaults;
    let members = super::local_cluster::three(
        &NodeConfig::default(),
        "tables-ap",
        dir,
        LogMode::Ram,
        Some(guest),
    )
    .await?;
    let result = async {
        create_kv_on(&members, Kind::Lww).await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !members
            .iter()
            .all(|m| m.node.tables().replica_status("kv").is_some())
        {
            if Instant::now() > deadline {
                bail!("the conflict-free kv did not start on every node in 20 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let at = &members[0].node;
        guests(at, TableOp::DirtyWrite, &[(-WARMUP_N, 0)]).await?;
        let writes = AP_N as f64 / guests(at, TableOp::DirtyWrite, &split(AP_N, 1)).await?;
        // Everyone agrees before the partition.
        let records = |m: &super::local_cluster::Member| {
            m.node.tables().local().info("kv").map_or(0, |i| i.records)
        };
        let before = records(&members[0]);
        let agreed = async |want: u64, limit: Duration| -> Result<Duration> {
            let started = Instant::now();
            while !members.iter().all(|m| records(m) == want) {
                if started.elapsed() > limit {
                    bail!("the replicas did not agree on {want} records in {limit:?}");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok(started.elapsed())
        };
        agreed(before, Duration::from_secs(60)).await?;
        let (lone, others) = (&members[2], &members[..2]);
        for o in others {
            lone.dist.nemesis().set(o.dist.name(), LinkFaults::CUT);
            o.dist.nemesis().set(lone.dist.name(), LinkFaults::CUT);
        }
        for (side, m) in [(0u8, &members[0]), (1u8, lone)] {
            for i in 0..AP_SIDE_N {
                let mut key = vec![b'p', side];
                key.extend_from_slice(&(i as u64).to_be_bytes());
                let batch = molt_abi::table::Batch {
                    conditions: Vec::new(),
                    ops: vec![molt_abi::table::Op::Put {
                        key,
                        value: vec![0; 16],
                        index_values: Vec::new(),
                    }],
                };
                match m
                    .node
                    .table(Request::Commit(vec![("kv".into(), batch)]))
                    .await
                {
                    Reply::Committed(_) => {}
                    other => bail!("a write during the partition: {other:?}"),
                }
            }
        }
        for m in &members {
            m.dist.nemesis().heal_all();
        }
        let took = agreed(before + 2 * AP_SIDE_N as u64, Duration::from_secs(60)).await?;
        Ok(ApRun {
            writes,
            converge_ms: took.as_secs_f64() * 1e3,
        })
    }
    .await;
    super::local_cluster::stop(members).await;
    result
}

/// Which figures of this bench to measure.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Sections {
    /// Every figure: local, replicated and conflict-free.
    All,
    /// Only the replicated table on two nodes (mnesia's `cluster`).
    Replicated,
}

impl Sections {
    /// The sections of `run_store.sh` measured against these figures.
    fn mnesia(self) -> &'static str {
        match self {
            Sections::All => "local_ram local_disc cluster",
            Sections::Replicated => "cluster",
        }
    }
}

/// The figures of `sections`, `runs` times each; disc tables are kept
/// under `dir`.
pub async fn run(runs: usize, guest: &Path, dir: &Path, sections: Sections) -> Result<Vec<Figure>> {
    std::fs::create_dir_all(dir)?;
    let config = NodeConfig {
        data_dir: Some(dir.to_path_buf()),
        ..NodeConfig::default()
    };
    let node = Node::start(config)?;
    crate::bench::load_optimised(&node, guest).await?;
    let (mut tx1, mut tx8, mut dw, mut dr) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut disc1, mut disc8, mut fsync) = (Vec::new(), Vec::new(), Vec::new());
    let (mut only1, mut only8, mut only_read) = (Vec::new(), Vec::new(), Vec::new());
    let local_runs = if sections == Sections::All { runs } else { 0 };
    for _ in 0..local_runs {
        fresh_kv(&node, Copy::Ram).await?;
        guests(&node, TableOp::Transaction, &[(-WARMUP_N, 0)]).await?;
        let secs = guests(&node, TableOp::Transaction, &split(TX_N, 1)).await?;
        tx1.push(TX_N as f64 / secs);

        fresh_kv(&node, Copy::Ram).await?;
        guests(&node, TableOp::Transaction, &[(-WARMUP_N, 0)]).await?;
        let secs = guests(&node, TableOp::Transaction, &split(TX_N, WRITERS)).await?;
        tx8.push(TX_N as f64 / secs);

        fresh_kv(&node, Copy::Ram).await?;
        let secs = guests(&node, TableOp::DirtyWrite, &split(DIRTY_N, 1)).await?;
        dw.push(DIRTY_N as f64 / secs);
        let secs = guests(&node, TableOp::DirtyRead, &split(DIRTY_N, 1)).await?;
        dr.push(DIRTY_N as f64 / secs);

        // Disc: each transaction answered once durable (mnesia's
        // `sync_log` after each); several writers share fsyncs.
        fsync.push(super::bench_coord::fsync_p50(dir)?);
        fresh_kv(&node, Copy::Disc).await?;
        let secs = guests(&node, TableOp::Transaction, &split(SYNC_N, 1)).await?;
        disc1.push(SYNC_N as f64 / secs);
        fresh_kv(&node, Copy::Disc).await?;
        let secs = guests(&node, TableOp::Transaction, &split(SYNC_N, WRITERS)).await?;
        disc8.push(SYNC_N as f64 / secs);

        // Disc only: the same, each read from the file (or its overlay),
        // then a dirty read of every key written, from the file.
        fresh_kv(&node, Copy::DiscOnly).await?;
        let secs = guests(&node, TableOp::Transaction, &split(SYNC_N, 1)).await?;
        only1.push(SYNC_N as f64 / secs);
        fresh_kv(&node, Copy::DiscOnly).await?;
        let secs = guests(&node, TableOp::Transaction, &split(SYNC_N, WRITERS)).await?;
        only8.push(SYNC_N as f64 / secs);
        let secs = guests(&node, TableOp::DirtyRead, &split(SYNC_N, 1)).await?;
        only_read.push(SYNC_N as f64 / secs);
    }
    let _ = node.table(Request::Delete { table: "kv".into() }).await;
    node.shutdown(Duration::from_secs(5)).await;
    let (mut rep1, mut rep8, mut p50, mut p99) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut two_p50, mut two_p99) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let run = replicated(guest, &dir.join("cluster")).await?;
        rep1.push(run.one);
        rep8.push(run.eight);
        p50.push(run.p50);
        p99.push(run.p99);
        two_p50.push(run.two_p50);
        two_p99.push(run.two_p99);
    }
    let (mut ap_writes, mut ap_converge) = (Vec::new(), Vec::new());
    for _ in 0..local_runs {
        let run = conflict_free(guest, &dir.join("cluster-ap")).await?;
        ap_writes.push(run.writes);
        ap_converge.push(run.converge_ms);
    }
    Ok(vec![
        Figure {
            name: "ram table, write transaction, 1 writer",
            unit: "tx/s",
            runs: tx1,
        },
        Figure {
            name: "ram table, write transaction, 8 writers",
            unit: "tx/s",
            runs: tx8,
        },
        Figure {
            name: "ram table, dirty write",
            unit: "ops/s",
            runs: dw,
        },
        Figure {
            name: "ram table, dirty read",
            unit: "ops/s",
            runs: dr,
        },
        Figure {
            name: "disc table, durable write transaction, 1 writer",
            unit: "tx/s",
            runs: disc1,
        },
        Figure {
            name: "disc table, durable write transaction, 8 writers",
            unit: "tx/s",
            runs: disc8,
        },
        Figure {
            name: "disc_only table, durable write transaction, 1 writer",
            unit: "tx/s",
            runs: only1,
        },
        Figure {
            name: "disc_only table, durable write transaction, 8 writers",
            unit: "tx/s",
            runs: only8,
        },
        Figure {
            name: "disc_only table, dirty read (from its file)",
            unit: "ops/s",
            runs: only_read,
        },
        Figure {
            name: "raw fsync of the data directory's disk, p50",
            unit: "µs",
            runs: fsync,
        },
        Figure {
            name: "replicated ram table (2 of 3 nodes), write transaction, 1 writer",
            unit: "tx/s",
            runs: rep1,
        },
        Figure {
            name: "replicated ram table (2 of 3 nodes), write transaction, 8 writers",
            unit: "tx/s",
            runs: rep8,
        },
        Figure {
            name: "replicated ram table, one commit's latency, p50",
            unit: "µs",
            runs: p50,
        },
        Figure {
            name: "replicated ram table, one commit's latency, p99",
            unit: "µs",
            runs: p99,
        },
        Figure {
            name: "replicated ram tables, a transaction over two tables (two groups), p50",
            unit: "µs",
            runs: two_p50,
        },
        Figure {
            name: "replicated ram tables, a transaction over two tables (two groups), p99",
            unit: "µs",
            runs: two_p99,
        },
        Figure {
            name: "conflict-free table (lww, on 3 nodes), dirty write on one node",
            unit: "ops/s",
            runs: ap_writes,
        },
        Figure {
            name: "conflict-free table, replicas agree after a 2|1 partition heals (10k writes a side)",
            unit: "ms",
            runs: ap_converge,
        },
    ]
    .into_iter()
    .filter(|f| !f.runs.is_empty())
    .collect())
}

/// Each molt figure of this bench and the mnesia figure it is measured
/// against (`run_store.sh`'s names), and whether more is better.
const BESIDE: &[(&str, &str, bool)] = &[
    (
        "ram table, write transaction, 1 writer",
        "mnesia_ram_tx_1w_rate",
        true,
    ),
    (
        "ram table, write transaction, 8 writers",
        "mnesia_ram_tx_8w_rate",
        true,
    ),
    (
        "ram table, dirty write",
        "mnesia_ram_dirty_write_rate",
        true,
    ),
    ("ram table, dirty read", "mnesia_ram_dirty_read_rate", true),
    (
        "disc table, durable write transaction, 1 writer",
        "mnesia_disc_tx_synclog_rate",
        true,
    ),
    (
        "disc_only table, durable write transaction, 1 writer",
        "mnesia_disc_tx_synclog_rate",
        true,
    ),
    (
        "replicated ram table (2 of 3 nodes), write transaction, 1 writer",
        "mnesia_2n_tx_1w_rate",
        true,
    ),
    (
        "replicated ram table (2 of 3 nodes), write transaction, 8 writers",
        "mnesia_2n_tx_8w_rate",
        true,
    ),
    (
        "replicated ram table, one commit's latency, p50",
        "mnesia_2n_tx_1w_p50",
        false,
    ),
    (
        "replicated ram table, one commit's latency, p99",
        "mnesia_2n_tx_1w_p99",
        false,
    ),
];

/// Run mnesia's bench `script` (sections `local_ram local_disc cluster`,
/// `runs` times) and read its medians: figure name to value.
pub fn mnesia(
    script: &Path,
    runs: usize,
    sections: Sections,
) -> Result<std::collections::BTreeMap<String, f64>> {
    eprintln!("running mnesia's bench ({}) beside...", script.display());
    let results = std::env::temp_dir().join(format!("molt-mnesia-{}.txt", std::process::id()));
    let output = std::process::Command::new("bash")
        .arg(script)
        .current_dir(script.parent().unwrap_or(Path::new(".")))
        .env("SECTIONS", sections.mnesia())
        .env("RUNS", runs.to_string())
        .env("RESULTS", &results)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", script.display()))?;
    let _ = std::fs::remove_file(&results);
    if !output.status.success() {
        bail!("{} ended with {}", script.display(), output.status);
    }
    Ok(medians(&String::from_utf8_lossy(&output.stdout)))
}

/// The figures of the `=== summary: median ...` part of a `run_store.sh`
/// output: `name: value unit` lines.
fn medians(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .skip_while(|l| !l.starts_with("=== summary: median"))
        .skip(1)
        .take_while(|l| !l.starts_with("==="))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let value = rest.split_whitespace().next()?.parse().ok()?;
            Some((name.trim().to_string(), value))
        })
        .collect()
}

/// Print each molt figure that has a mnesia counterpart beside it, with
/// the ratio (above 1: molt is better).
pub fn print_beside(figures: &[Figure], mnesia: &std::collections::BTreeMap<String, f64>) {
    out!("molt beside mnesia, the same session (median of each; ratio above 1: molt is better)");
    for (name, theirs, more_is_better) in BESIDE {
        let Some(ours) = figures.iter().find(|f| f.name == *name) else {
            continue;
        };
        let Some(&theirs_value) = mnesia.get(*theirs) else {
            out!(
                "{name:<66} {:>12.1} {:<6} mnesia: no {theirs}",
                ours.median(),
                ours.unit
            );
            continue;
        };
        let ratio = match more_is_better {
            true => ours.median() / theirs_value,
            false => theirs_value / ours.median(),
        };
        out!(
            "{name:<66} {:>12.1} {:<6} mnesia {:>12.1}  ratio {ratio:.2}",
            ours.median(),
            ours.unit,
            theirs_value
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mnesia_medians_are_read_from_the_summary_only() {
        let text = "mnesia_2n_tx_1w_rate: 1956 tx/s\n\
                    === summary: median of 3 runs ===\n\
                    mnesia_2n_tx_1w_rate: 1695 tx/s\n\
                    mnesia_2n_tx_1w_p50: 339.37 us\n\
                    \n\
                    === summary table (median, min, max across runs) ===\n\
                    mnesia_2n_tx_1w_rate                     1695         1671         1956  tx/s\n";
        let medians = super::medians(text);
        assert_eq!(medians.len(), 2, "{medians:?}");
        assert_eq!(medians["mnesia_2n_tx_1w_rate"], 1695.0);
        assert_eq!(medians["mnesia_2n_tx_1w_p50"], 339.37);
    }
}
