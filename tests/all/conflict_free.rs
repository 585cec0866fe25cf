//! Conflict-free (AP) tables on three coordinated nodes over loopback: a
//! last-writer-wins table, a counter and an OR-set, written on both sides
//! of a partition; after the heal every replica holds the same table, a
//! concurrent write that lost is told to subscribers, every add counts,
//! and an add wins over a remove it did not see.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use molt_abi::table::{
    Abort, Batch, Change, Condition, Consistency, Copy, Error, Kind, Op, Replica, Reply, Request,
    Rows, Spec,
};
use molt_host::Node;
use molt_host::cluster::LogMode;
use molt_host::net::nemesis::LinkFaults;
use molt_tests::{TempDir, checker};

use crate::coord::{Member, three, wait_for};
use crate::replicated_faults::Rng;

pub(crate) fn ap_spec(name: &str, kind: Kind, nodes: &[&Member]) -> Spec {
    Spec {
        name: name.to_string(),
        kind,
        indexes: Vec::new(),
        replicas: nodes
            .iter()
            .map(|m| Replica {
                node: m.dist.name().to_string(),
                copy: Copy::Ram,
            })
            .collect(),
    }
}

pub(crate) fn write(table: &str, op: Op) -> Request {
    Request::Commit(vec![(
        table.to_string(),
        Batch {
            conditions: Vec::new(),
            ops: vec![op],
        },
    )])
}

pub(crate) fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.into(),
        index_values: Vec::new(),
    }
}

pub(crate) fn add(key: &str, delta: i64) -> Op {
    Op::Add {
        key: key.into(),
        delta,
    }
}

/// Every row of `table` on `m`'s replica: (key, values), and the stale
/// mark.
pub(crate) async fn dump(m: &Member, table: &str) -> (Vec<(Vec<u8>, Vec<Vec<u8>>)>, bool) {
    let request = Request::Prefix {
        table: table.to_string(),
        prefix: Vec::new(),
        limit: 0,
        consistency: Consistency::Dirty,
    };
    match m.node.table(request).await {
        Reply::Rows(Rows { rows, stale, .. }) => (
            rows.into_iter()
                .map(|r| {
                    let mut values: Vec<Vec<u8>> = r.records.into_iter().map(|r| r.value).collect();
                    values.sort();
                    (r.key, values)
                })
                .collect(),
            stale,
        ),
        other => panic!("{}: a dump of {table}: {other:?}", m.dist.name()),
    }
}

pub(crate) fn committed(reply: Reply, what: &str) -> u64 {
    match reply {
        Reply::Committed(indexes) => indexes[0],
        other => panic!("{what}: {other:?}"),
    }
}

pub(crate) fn cut(nodes: &[Member], i: usize, j: usize, faults: LinkFaults) {
    nodes[i].dist.nemesis().set(nodes[j].dist.name(), faults);
    nodes[j].dist.nemesis().set(nodes[i].dist.name(), faults);
}

/// Every change each node's replica of `table` told, with its index.
pub(crate) type Told = Arc<Mutex<Vec<(u64, Change)>>>;

pub(crate) fn listen(m: &Member, table: &str) -> Told {
    let told: Told = Arc::default();
    let sink = told.clone();
    m.node
        .tables()
        .local()
        .subscribe(
            table,
            Box::new(move |index, changes| {
                let mut told = sink.lock().unwrap();
                told.extend(changes.iter().map(|c| (index, c.clone())));
                true
            }),
        )
        .expect("a subscription");
    told
}

/// Wait until every node's replica of `table` holds the same rows, and
/// none says stale; those rows.
pub(crate) async fn converged(nodes: &[&Member], table: &str) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
    let deadline = std::time::Instant::now() + molt_tests::WAIT;
    loop {
        let mut dumps = Vec::new();
        let mut stale = false;
        for n in nodes {
            let (rows, s) = dump(n, table).await;
            dumps.push(rows);
            stale |= s;
        }
        if !stale && dumps.windows(2).all(|w| w[0] == w[1]) {
            return dumps.swap_remove(0);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{table}: replicas still differ (or stale: {stale}): {dumps:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rows(pairs: &[(&str, &[&[u8]])]) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
    pairs
        .iter()
        .map(|(k, vs)| {
            let mut values: Vec<Vec<u8>> = vs.iter().map(|v| v.to_vec()).collect();
            values.sort();
            (k.as_bytes().to_vec(), values)
        })
        .collect()
}

fn count(n: i64) -> Vec<u8> {
    molt_abi::codec::encode(&n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_free_tables_take_writes_on_both_sides_of_a_partition_and_converge() {
    let dir = TempDir::new("conflict-free");
    let nodes = three(&dir, LogMode::Ram).await;
    let all: Vec<&Member> = nodes.iter().collect();
    for (table, kind) in [
        ("presence", Kind::Lww),
        ("hits", Kind::Counter),
        ("tags", Kind::OrSet),
    ] {
        assert_eq!(
            nodes[0]
                .node
                .table(Request::Create(ap_spec(table, kind, &all)))
                .await,
            Reply::Done,
            "create {table}"
        );
    }
    wait_for(
        "a conflict-free replica of each table on every node",
        || {
            nodes.iter().all(|m| {
                ["presence", "hits", "tags"].iter().all(|t| {
                    m.node
                        .tables()
                        .replica_status(t)
                        .is_some_and(|s| s.role == "conflict_free")
                })
            })
        },
    )
    .await;
    let told: Vec<Told> = nodes.iter().map(|m| listen(m, "presence")).collect();
    // Connected: a write on one node reaches the others.
    committed(
        nodes[0]
            .node
            .table(write("presence", put("ann", "a")))
            .await,
        "a write",
    );
    committed(
        nodes[1].node.table(write("tags", put("s", "p"))).await,
        "an add",
    );
    committed(
        nodes[1].node.table(write("tags", put("s", "z"))).await,
        "an add",
    );
    committed(
        nodes[2].node.table(write("hits", add("h", 3))).await,
        "an add",
    );
    assert_eq!(converged(&all, "presence").await, rows(&[("ann", &[b"a"])]));
    assert_eq!(converged(&all, "tags").await, rows(&[("s", &[b"p", b"z"])]));
    assert_eq!(converged(&all, "hits").await, rows(&[("h", &[&count(3)])]));

    // Node c cut off: both sides take writes at once.
    for other in [0, 1] {
        cut(&nodes, 2, other, LinkFaults::CUT);
    }
    let c = &nodes[2];
    committed(
        nodes[0]
            .node
            .table(write("presence", put("bob", "a")))
            .await,
        "a write on the majority",
    );
    committed(
        c.node.table(write("presence", put("bob", "c"))).await,
        "a write on the cut-off node",
    );
    committed(
        c.node.table(write("presence", put("cid", "c"))).await,
        "a write on the cut-off node",
    );
    committed(nodes[0].node.table(write("hits", add("h", 5))).await, "add");
    committed(
        nodes[1].node.table(write("hits", add("h", -2))).await,
        "add",
    );
    committed(c.node.table(write("hits", add("h", 7))).await, "add");
    // c removes p and z; a adds p again (it saw the first add): that add
    // wins; z stays removed.
    let remove = |v: &str| Op::DeleteValue {
        key: "s".into(),
        value: v.into(),
    };
    committed(c.node.table(write("tags", remove("p"))).await, "remove");
    committed(c.node.table(write("tags", remove("z"))).await, "remove");
    committed(
        nodes[0].node.table(write("tags", put("s", "p"))).await,
        "add",
    );
    committed(c.node.table(write("tags", put("s", "y"))).await, "add");
    // The cut-off node reads its own writes, marked stale once it has not
    // heard from the others for a while.
    wait_for("c's reads say stale", || {
        c.node
            .tables()
            .replica_status("presence")
            .is_some_and(|s| s.stale)
    })
    .await;
    let (on_c, stale) = dump(c, "presence").await;
    assert!(stale, "a dirty read on the cut-off node is marked stale");
    assert_eq!(
        on_c,
        rows(&[("ann", &[b"a"]), ("bob", &[b"c"]), ("cid", &[b"c"])])
    );

    for n in &nodes {
        n.dist.nemesis().heal_all();
    }
    let presence = converged(&all, "presence").await;
    let bob = presence
        .iter()
        .find(|(k, _)| k == b"bob")
        .map(|(_, v)| v.clone())
        .expect("bob is there");
    assert!(bob == vec![b"a".to_vec()] || bob == vec![b"c".to_vec()]);
    assert_eq!(presence.len(), 3, "{presence:?}");
    let (kept, lost) = match bob[0].as_slice() {
        b"a" => (b"a".to_vec(), b"c".to_vec()),
        _ => (b"c".to_vec(), b"a".to_vec()),
    };
    // The write that lost is told, as a conflict, by a replica that
    // merged the two.
    wait_for("a conflict told for bob", || {
        told.iter().any(|t| {
            t.lock().unwrap().iter().any(|(_, c)| {
                *c == Change::Conflict {
                    key: b"bob".to_vec(),
                    kept: Some(kept.clone()),
                    lost: Some(lost.clone()),
                }
            })
        })
    })
    .await;
    // No conflict for keys written on one side only.
    for t in &told {
        assert!(
            t.lock()
                .unwrap()
                .iter()
                .all(|(_, c)| !matches!(c, Change::Conflict { key, .. } if key != b"bob")),
            "a conflict for a key written on one side"
        );
    }
    assert_eq!(
        converged(&all, "hits").await,
        rows(&[("h", &[&count(3 + 5 - 2 + 7)])])
    );
    assert_eq!(converged(&all, "tags").await, rows(&[("s", &[b"p", b"y"])]));
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_free_tables_refuse_what_they_cannot_do_and_serve_nodes_without_a_replica() {
    let dir = TempDir::new("conflict-free-refusals");
    let nodes = three(&dir, LogMode::Ram).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // Kept on a and b; c keeps none.
    assert_eq!(
        c.node
            .table(Request::Create(ap_spec("seen", Kind::Lww, &[a, b])))
            .await,
        Reply::Done
    );
    assert_eq!(
        a.node
            .table(Request::Create(ap_spec("n", Kind::Counter, &[a, b])))
            .await,
        Reply::Done
    );
    // c writes and reads through a replica.
    committed(c.node.table(write("seen", put("k", "v"))).await, "a write");
    committed(c.node.table(write("n", add("k", 2))).await, "an add");
    wait_for("the write on both replicas", || {
        [a, b].iter().all(|m| {
            m.node
                .tables()
                .local()
                .get("seen", b"k")
                .is_ok_and(|(records, _)| records.len() == 1)
        })
    })
    .await;
    let get = |table: &str, consistency| Request::Get {
        table: table.into(),
        key: "k".into(),
        consistency,
    };
    match c.node.table(get("n", Consistency::Dirty)).await {
        Reply::Rows(rows) => assert_eq!(rows.rows[0].records[0].value, count(2)),
        other => panic!("a read on c: {other:?}"),
    }
    // A backup of a replica, restored later: the writes that take the
    // table back to it, made on every replica.
    let backup = dir.path().join("n.bak");
    a.node.tables().backup("n", &backup).expect("a backup");
    committed(b.node.table(write("n", add("k", 10))).await, "an add");
    committed(b.node.table(write("n", add("other", 4))).await, "an add");
    wait_for("the adds on a", || {
        a.node
            .tables()
            .local()
            .get("n", b"other")
            .is_ok_and(|(records, _)| records.len() == 1)
    })
    .await;
    a.node
        .table_restore("n", &backup, false)
        .await
        .expect("a restore");
    assert_eq!(
        converged(&[a, b], "n").await,
        rows(&[("k", &[&count(2)]), ("other", &[&count(0)])])
    );
    // What they refuse, each with a clear error.
    assert!(matches!(
        a.node.table(get("seen", Consistency::Linearizable)).await,
        Reply::Error(Error::Unsupported(why)) if why.contains("conflict-free")
    ));
    let conditional = Request::Commit(vec![(
        "seen".into(),
        Batch {
            conditions: vec![Condition::Absent { key: "k".into() }],
            ops: vec![put("k", "w")],
        },
    )]);
    assert!(matches!(
        a.node.table(conditional).await,
        Reply::Error(Error::BadRequest(why)) if why.contains("no conditions")
    ));
    assert!(matches!(
        a.node.table(write("seen", add("k", 1))).await,
        Reply::Error(Error::Aborted {
            abort: Abort::BadOp { .. },
            ..
        })
    ));
    assert!(matches!(
        a.node.table(write("n", put("k", "1"))).await,
        Reply::Error(Error::Aborted {
            abort: Abort::BadOp { .. },
            ..
        })
    ));
    let mut disc = ap_spec("d", Kind::OrSet, &[a]);
    disc.replicas[0].copy = Copy::DiscOnly;
    assert!(matches!(
        a.node.table(Request::Create(disc)).await,
        Reply::Error(Error::Unsupported(_))
    ));
    let mut indexed = ap_spec("i", Kind::Counter, &[a]);
    indexed.indexes = vec!["x".into()];
    assert!(matches!(
        a.node.table(Request::Create(indexed)).await,
        Reply::Error(Error::BadSpec(_))
    ));
    // A replica added later is filled by the others; one removed goes.
    assert_eq!(
        a.node
            .table(Request::AddReplica {
                table: "seen".into(),
                replica: Replica {
                    node: c.dist.name().to_string(),
                    copy: Copy::Ram,
                },
            })
            .await,
        Reply::Done
    );
    assert_eq!(converged(&[a, b, c], "seen").await, rows(&[("k", &[b"v"])]));
    assert_eq!(
        a.node
            .table(Request::RemoveReplica {
                table: "seen".into(),
                node: b.dist.name().to_string(),
            })
            .await,
        Reply::Done
    );
    wait_for("b's replica gone", || {
        b.node.tables().replica_status("seen").is_none()
    })
    .await;
    committed(
        b.node.table(write("seen", put("k2", "v2"))).await,
        "a write",
    );
    assert_eq!(
        converged(&[a, c], "seen").await,
        rows(&[("k", &[b"v"]), ("k2", &[b"v2"])])
    );
    // Delete: gone everywhere.
    assert_eq!(
        b.node
            .table(Request::Delete {
                table: "seen".into()
            })
            .await,
        Reply::Done
    );
    wait_for("the table gone on every node", || {
        nodes
            .iter()
            .all(|m| m.node.tables().replica_status("seen").is_none())
    })
    .await;
    for n in nodes {
        n.stop().await;
    }
}

const LWW: &str = "lww";
const COUNTER: &str = "counter";
const OR_SET: &str = "or_set";

/// What the clients had acknowledged.
#[derive(Default)]
struct Acked {
    lww: Vec<checker::LwwWrite>,
    /// Per counter key, the sum of acknowledged adds.
    counts: BTreeMap<String, i64>,
    /// Values added to the set, and those removed after (by the replica
    /// that added them, which had seen the add).
    added: BTreeSet<String>,
    removed: BTreeSet<String>,
    /// Writes refused (none should be: every replica takes writes).
    refused: Vec<String>,
}

async fn ap_client(
    m: Node,
    me: usize,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
) {
    let mut seq = 0u64;
    let mut mine: Vec<String> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let value = format!("n{me}-{seq}");
        match rng.below(3) {
            0 => {
                let key = format!("k{}", rng.below(4));
                match m.table(write(LWW, put(&key, &value))).await {
                    Reply::Committed(i) => acked.lock().unwrap().lww.push(checker::LwwWrite {
                        key: key.into_bytes(),
                        value: value.into_bytes(),
                        replica: me,
                        index: i[0],
                    }),
                    other => acked.lock().unwrap().refused.push(format!("{other:?}")),
                }
            }
            1 => {
                let key = format!("c{}", rng.below(2));
                let delta = rng.below(16) as i64 - 5;
                match m.table(write(COUNTER, add(&key, delta))).await {
                    Reply::Committed(_) => {
                        *acked.lock().unwrap().counts.entry(key).or_default() += delta
                    }
                    other => acked.lock().unwrap().refused.push(format!("{other:?}")),
                }
            }
            _ => {
                let remove = !mine.is_empty() && rng.below(3) == 0;
                let (op, gone) = match remove {
                    true => {
                        let v = mine.swap_remove(rng.below(mine.len() as u64) as usize);
                        let op = Op::DeleteValue {
                            key: "s".into(),
                            value: v.clone().into_bytes(),
                        };
                        (op, Some(v))
                    }
                    false => (put("s", &value), None),
                };
                match m.table(write(OR_SET, op)).await {
                    Reply::Committed(_) => {
                        let mut acked = acked.lock().unwrap();
                        match gone {
                            Some(v) => {
                                acked.removed.insert(v);
                            }
                            None => {
                                acked.added.insert(value.clone());
                                mine.push(value);
                            }
                        }
                    }
                    other => acked.lock().unwrap().refused.push(format!("{other:?}")),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2 + rng.below(12))).await;
    }
}

/// Partitions (every other one checked: both sides take writes, the
/// lone node marks its reads stale), paused links, loss and delay.
async fn ap_nemesis(nodes: &[Member], seed: u64, rounds: usize) -> Vec<String> {
    let mut rng = Rng(seed);
    let mut log = Vec::new();
    for node in nodes {
        node.dist.nemesis().seed(rng.next());
    }
    for round in 0..rounds {
        let lone = rng.below(3) as usize;
        let others = [(lone + 1) % 3, (lone + 2) % 3];
        let hold = Duration::from_millis(800 + rng.below(1500));
        let what = match if round == 0 { 0 } else { rng.below(4) } {
            0 => {
                for o in others {
                    cut(nodes, lone, o, LinkFaults::CUT);
                }
                let lone_node = &nodes[lone];
                wait_for("the cut-off node marks its reads stale", || {
                    lone_node
                        .node
                        .tables()
                        .replica_status(LWW)
                        .is_some_and(|s| s.stale)
                })
                .await;
                let reply = lone_node.node.table(write(LWW, put("lone", "yes"))).await;
                assert!(
                    matches!(reply, Reply::Committed(_)),
                    "a write on the cut-off node: {reply:?}"
                );
                format!("partition {} | others, checked", lone_node.dist.name())
            }
            1 => {
                let paused = LinkFaults {
                    paused: true,
                    ..LinkFaults::default()
                };
                for o in others {
                    cut(nodes, lone, o, paused);
                }
                format!("pause {}'s links", nodes[lone].dist.name())
            }
            2 => {
                let lossy = LinkFaults {
                    drop_per_mille: 100 + rng.below(400) as u16,
                    ..LinkFaults::default()
                };
                for (i, j) in [(0, 1), (1, 2), (0, 2)] {
                    cut(nodes, i, j, lossy);
                }
                format!("drop {}‰ everywhere", lossy.drop_per_mille)
            }
            _ => {
                let slow = LinkFaults {
                    delay: Duration::from_millis(10 + rng.below(60)),
                    ..LinkFaults::default()
                };
                for (i, j) in [(0, 1), (1, 2), (0, 2)] {
                    cut(nodes, i, j, slow);
                }
                format!("delay {:?} everywhere", slow.delay)
            }
        };
        log.push(format!("{what} for {hold:?}"));
        tokio::time::sleep(hold).await;
        for n in nodes {
            n.dist.nemesis().heal_all();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_free_tables_converge_under_a_seeded_nemesis_and_lose_no_acknowledged_write() {
    let seed = std::env::var("MOLT_NEMESIS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(23);
    println!("nemesis seed {seed}");
    let dir = TempDir::new("conflict-free-faults");
    let nodes = three(&dir, LogMode::Ram).await;
    let all: Vec<&Member> = nodes.iter().collect();
    for (table, kind) in [
        (LWW, Kind::Lww),
        (COUNTER, Kind::Counter),
        (OR_SET, Kind::OrSet),
    ] {
        assert_eq!(
            nodes[0]
                .node
                .table(Request::Create(ap_spec(table, kind, &all)))
                .await,
            Reply::Done
        );
    }
    wait_for("every replica started", || {
        nodes.iter().all(|m| {
            [LWW, COUNTER, OR_SET]
                .iter()
                .all(|t| m.node.tables().replica_status(t).is_some())
        })
    })
    .await;
    let told: Vec<Told> = nodes.iter().map(|m| listen(m, LWW)).collect();
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut rng = Rng(seed ^ 0xa9);
    let tasks: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            tokio::spawn(ap_client(
                m.node.clone(),
                i,
                acked.clone(),
                stop.clone(),
                Rng(rng.next() | 1),
            ))
        })
        .collect();
    let schedule = ap_nemesis(&nodes, seed, 5).await;
    for line in &schedule {
        println!("nemesis: {line}");
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        tokio::time::timeout(molt_tests::WAIT, t)
            .await
            .expect("clients end")
            .unwrap();
    }
    for n in &nodes {
        n.dist.nemesis().heal_all();
    }
    let lww = converged(&all, LWW).await;
    let counter = converged(&all, COUNTER).await;
    let or_set = converged(&all, OR_SET).await;
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(
        acked.refused.is_empty(),
        "writes refused: {:?}",
        acked.refused
    );
    assert!(acked.lww.len() >= 30, "too few writes: {}", acked.lww.len());
    // Every add counted once.
    let counts: BTreeMap<String, i64> = counter
        .iter()
        .map(|(k, v)| {
            let total: i64 = molt_abi::codec::decode(&v[0]).expect("a count");
            (String::from_utf8(k.clone()).unwrap(), total)
        })
        .collect();
    let expected: BTreeMap<String, i64> = acked.counts.clone();
    assert_eq!(counts, expected, "counter totals");
    // The set holds every value added and not removed after.
    let set: BTreeSet<String> = or_set
        .iter()
        .flat_map(|(_, vs)| vs.iter().map(|v| String::from_utf8(v.clone()).unwrap()))
        .collect();
    let wanted: BTreeSet<String> = acked.added.difference(&acked.removed).cloned().collect();
    assert_eq!(set, wanted, "the OR-set");
    // Last writer wins: nothing lost without a conflict told.
    let finals: BTreeMap<Vec<u8>, Vec<u8>> = lww
        .into_iter()
        .filter(|(k, _)| k != b"lone")
        .map(|(k, mut v)| (k, v.remove(0)))
        .collect();
    let told: Vec<Vec<(u64, checker::LwwTold)>> = told
        .iter()
        .map(|t| {
            t.lock()
                .unwrap()
                .iter()
                .filter_map(|(i, c)| match c {
                    Change::Put { key, value } if key != b"lone" => Some((
                        *i,
                        checker::LwwTold::Put {
                            key: key.clone(),
                            value: value.clone(),
                        },
                    )),
                    Change::Conflict { key, lost, .. } if key != b"lone" => Some((
                        *i,
                        checker::LwwTold::Conflict {
                            key: key.clone(),
                            lost: lost.clone(),
                        },
                    )),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let conflicts = told
        .iter()
        .flatten()
        .filter(|(_, t)| matches!(t, checker::LwwTold::Conflict { .. }))
        .count();
    println!(
        "{} writes, {} conflicts told, {} counter keys",
        acked.lww.len(),
        conflicts,
        acked.counts.len()
    );
    if let Err(v) = checker::check_lww(&acked.lww, &told, &finals) {
        panic!("{v:?}\nschedule: {schedule:#?}");
    }
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_a_counter_and_adds_to_it_on_two_nodes() {
    use crate::tables::table_cli;

    let cookie = std::str::from_utf8(molt_tests::COOKIE).unwrap();
    let dir = TempDir::new("conflict-free-cli");
    let nodes = three(&dir, LogMode::Ram).await;
    let [a, b] = [0, 1].map(|i| molt_tests::address_of(&nodes[i].dist));
    let run = async |target: &str, words: &[&str]| table_cli(target, words, cookie).await;
    let (ok, _, err) = run(
        &a,
        &["create", "hits", "--kind", "counter", "--replica", "all"],
    )
    .await;
    assert!(ok, "{err}");
    let (ok, out, err) = run(&a, &["info", "hits"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("kind        counter"), "{out}");
    assert!(out.contains("conflict-free"), "{out}");
    let (ok, out, err) = run(&a, &["add", "hits", "home", "5"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("\"home\": 5"), "{out}");
    // The other node's replica takes its own add; both counts meet.
    let (ok, _, err) = run(&b, &["add", "hits", "home", "-2"]).await;
    assert!(ok, "{err}");
    let all: Vec<&Member> = nodes.iter().collect();
    assert_eq!(
        converged(&all, "hits").await,
        rows(&[("home", &[&count(3)])])
    );
    let (ok, _, err) = run(&a, &["put", "hits", "home", "x"]).await;
    assert!(!ok && err.contains("takes add only"), "{err}");
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_presence_example_marks_users_online_on_both_sides_of_a_partition() {
    use molt_tests::demo_wire::cart_key as string_key;

    let dir = TempDir::new("conflict-free-presence");
    let nodes = three(&dir, LogMode::Ram).await;
    let all: Vec<&Member> = nodes.iter().collect();
    let run = async |m: &Member, words: &[&str]| {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        let mut me = m.node.mailbox().unwrap();
        molt_tests::run_to_exit(&mut me, "presence", molt_abi::codec::encode(&words)).await
    };
    assert_eq!(run(&nodes[0], &["setup"]).await, "normal");
    // Any node may run it again.
    assert_eq!(run(&nodes[1], &["setup"]).await, "normal");
    wait_for("presence on every node", || {
        nodes
            .iter()
            .all(|m| m.node.tables().replica_status("presence").is_some())
    })
    .await;
    let told: Vec<Told> = nodes.iter().map(|m| listen(m, "presence")).collect();
    for other in [0, 1] {
        cut(&nodes, 2, other, LinkFaults::CUT);
    }
    // Both sides take their marks at once.
    assert_eq!(run(&nodes[0], &["online", "ann"]).await, "normal");
    assert_eq!(run(&nodes[2], &["online", "ann"]).await, "normal");
    assert_eq!(run(&nodes[2], &["online", "bob"]).await, "normal");
    assert_eq!(run(&nodes[2], &["who"]).await, "normal");
    for n in &nodes {
        n.dist.nemesis().heal_all();
    }
    let presence = converged(&all, "presence").await;
    let users: Vec<Vec<u8>> = presence.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(users, vec![string_key("ann"), string_key("bob")]);
    let visits = converged(&all, "visits").await;
    assert_eq!(visits[0].1, vec![count(3)], "every visit counted once");
    // ann was marked on both sides at once: a replica that merged the
    // two marks tells its subscribers which one it kept.
    wait_for("ann's conflict told", || {
        told.iter().any(|t| {
            t.lock().unwrap().iter().any(
                |(_, c)| matches!(c, Change::Conflict { key, .. } if *key == string_key("ann")),
            )
        })
    })
    .await;
    assert_eq!(run(&nodes[1], &["offline", "bob"]).await, "normal");
    let presence = converged(&all, "presence").await;
    assert_eq!(presence.len(), 1);
    for n in nodes {
        n.stop().await;
    }
}

/// Counters `kept` (disc copies) and `cache` (ram) on every node.
async fn kept_and_cache(nodes: &[Member]) {
    let all: Vec<&Member> = nodes.iter().collect();
    let mut kept = ap_spec("kept", Kind::Counter, &all);
    for r in &mut kept.replicas {
        r.copy = Copy::Disc;
    }
    for spec in [kept, ap_spec("cache", Kind::Counter, &all)] {
        assert_eq!(
            nodes[0].node.table(Request::Create(spec)).await,
            Reply::Done
        );
    }
    wait_for("both tables on every node", || {
        nodes.iter().all(|m| {
            ["kept", "cache"]
                .iter()
                .all(|t| m.node.tables().replica_status(t).is_some())
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disc_replicas_of_a_conflict_free_table_are_intact_after_a_full_restart() {
    let dir = TempDir::new("conflict-free-restart");
    let nodes = three(&dir, LogMode::Disc).await;
    kept_and_cache(&nodes).await;
    let all: Vec<&Member> = nodes.iter().collect();
    assert!(
        nodes[1]
            .node
            .tables()
            .replica_status("kept")
            .is_some_and(|s| s.disc)
    );
    for table in ["kept", "cache"] {
        committed(nodes[0].node.table(write(table, add("n", 5))).await, "add");
        committed(nodes[1].node.table(write(table, add("n", 7))).await, "add");
        assert_eq!(converged(&all, table).await, rows(&[("n", &[&count(12)])]));
    }
    drop(all);
    for m in nodes {
        m.stop().await;
    }
    // The whole cluster restarts (its coordination log is on disc, so the
    // tables are still defined).
    let nodes = crate::coord::restart_three(&dir, LogMode::Disc).await;
    wait_for("both tables on every node again", || {
        nodes.iter().all(|m| {
            ["kept", "cache"]
                .iter()
                .all(|t| m.node.tables().replica_status(t).is_some())
        })
    })
    .await;
    let all: Vec<&Member> = nodes.iter().collect();
    // disc: every replica loaded its count; ram: empty, and usable.
    for m in &all {
        let (rows_here, _) = dump(m, "kept").await;
        assert_eq!(
            rows_here,
            rows(&[("n", &[&count(12)])]),
            "{}",
            m.dist.name()
        );
    }
    assert_eq!(converged(&all, "cache").await, Vec::new());
    committed(nodes[2].node.table(write("kept", add("n", 1))).await, "add");
    committed(
        nodes[2].node.table(write("cache", add("n", 1))).await,
        "add",
    );
    assert_eq!(converged(&all, "kept").await, rows(&[("n", &[&count(13)])]));
    assert_eq!(converged(&all, "cache").await, rows(&[("n", &[&count(1)])]));
    drop(all);
    for m in nodes {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_conflict_free_replica_file_stops_only_that_replica_until_it_is_moved_aside() {
    let dir = TempDir::new("conflict-free-damaged");
    let nodes = three(&dir, LogMode::Disc).await;
    kept_and_cache(&nodes).await;
    let all: Vec<&Member> = nodes.iter().collect();
    committed(nodes[0].node.table(write("kept", add("n", 5))).await, "add");
    assert_eq!(converged(&all, "kept").await, rows(&[("n", &[&count(5)])]));
    drop(all);
    for m in nodes {
        m.stop().await;
    }
    // c's file of `kept` is overwritten with garbage while the cluster is
    // down.
    let ap_dir = dir.path().join("c").join("tables").join("ap");
    let mut damaged = Vec::new();
    for table_dir in std::fs::read_dir(&ap_dir).expect("c's conflict-free files") {
        for file in std::fs::read_dir(table_dir.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            std::fs::write(&path, b"not a redb file at all").unwrap();
            damaged.push(path);
        }
    }
    assert_eq!(damaged.len(), 1, "one disc replica file on c: {damaged:?}");
    let nodes = crate::coord::restart_three(&dir, LogMode::Disc).await;
    let all: Vec<&Member> = nodes.iter().collect();
    wait_for("kept on a and b, cache everywhere", || {
        all[..2]
            .iter()
            .all(|m| m.node.tables().replica_status("kept").is_some())
            && all
                .iter()
                .all(|m| m.node.tables().replica_status("cache").is_some())
    })
    .await;
    // c keeps running: its other table takes writes, and it reads and
    // writes `kept` through a replica that started.
    committed(
        nodes[2].node.table(write("cache", add("n", 1))).await,
        "add",
    );
    assert_eq!(converged(&all, "cache").await, rows(&[("n", &[&count(1)])]));
    assert!(nodes[2].node.tables().replica_status("kept").is_none());
    committed(
        nodes[2].node.table(write("kept", add("n", 2))).await,
        "add through a replica",
    );
    let (through, _) = dump(&nodes[2], "kept").await;
    assert_eq!(through, rows(&[("n", &[&count(7)])]));
    // Still not started, saying why, and the file is left as it was for
    // inspection.
    assert!(nodes[2].node.tables().replica_status("kept").is_none());
    let why = nodes[2]
        .node
        .tables()
        .replica_failure("kept")
        .expect("c says why its replica of kept cannot start");
    assert!(why.contains(&damaged[0].display().to_string()), "{why}");
    assert_eq!(nodes[2].node.tables().replica_failure("cache"), None);
    assert_eq!(
        std::fs::read(&damaged[0]).unwrap(),
        b"not a redb file at all"
    );
    // Moved aside: the replica starts again by itself, empty, and is
    // filled by the others.
    std::fs::rename(&damaged[0], damaged[0].with_extension("damaged")).unwrap();
    wait_for("c's replica of kept starts again", || {
        nodes[2].node.tables().replica_status("kept").is_some()
    })
    .await;
    assert_eq!(nodes[2].node.tables().replica_failure("kept"), None);
    assert_eq!(converged(&all, "kept").await, rows(&[("n", &[&count(7)])]));
    drop(all);
    for m in nodes {
        m.stop().await;
    }
}
