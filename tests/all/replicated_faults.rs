//! A replicated table under a seeded nemesis (partitions, paused links,
//! loss, delay) on three nodes, with a recorded history: each key's
//! writes, compare-and-sets and linearizable reads are checked for
//! linearizability; bank transfers (two accounts changed in one
//! conditional batch) must keep the total in every read and at the end;
//! and list-append transactions (read two lists, append to one or both)
//! are checked for serializability (no lost or partial append, reads
//! that are prefixes, no dependency cycle). The lists are kept in two
//! tables, so about half of those transactions span two groups and
//! commit in two phases.
//! A node cut off from the others refuses writes with `no_quorum` and
//! marks its dirty reads stale; after the heal nothing needs a manual step.
//!
//! Replay a failure with `MOLT_NEMESIS_SEED=<seed>`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use molt_abi::table::{Batch, Condition, Consistency, Copy, Error, Op, Reply, Request};
use molt_host::Node;
use molt_host::cluster::LogMode;
use molt_host::net::nemesis::LinkFaults;
use molt_tests::checker::{self, Entry, ListTxn, Nanos, RegisterOp, RegisterRet};
use molt_tests::{TempDir, WAIT};

use super::coord::{Member, three, wait_for};
use super::replicated::spec;

const REGISTERS: &str = "registers";
const BANK: &str = "bank";
const LISTS: &str = "lists";
/// Odd list keys' table.
const LISTS_B: &str = "lists-b";
/// `LISTS_B`'s fragments.
const LISTS_B_FRAGMENTS: u32 = 2;

/// Every table's group: the registers, the bank, the lists, and each
/// fragment of the second list table.
fn groups() -> Vec<String> {
    let mut groups: Vec<String> = [REGISTERS, BANK, LISTS].map(String::from).to_vec();
    groups.extend(
        (0..LISTS_B_FRAGMENTS)
            .map(|i| molt_host::table::fragments::name(LISTS_B, i, LISTS_B_FRAGMENTS)),
    );
    groups
}
const LIST_KEYS: u64 = 4;
const KEYS: [&str; 3] = ["r0", "r1", "r2"];
const ACCOUNTS: [&str; 4] = ["a0", "a1", "a2", "a3"];
const BALANCE: u64 = 100;

/// A seeded random source (xorshift).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct History {
    base: Instant,
    registers: Mutex<Vec<(String, Entry<RegisterOp, RegisterRet>)>>,
    /// Totals seen by linearizable reads of every account.
    totals: Mutex<Vec<u64>>,
    transfers: AtomicU64,
    next_value: AtomicU64,
    /// List-append transactions committed or of unknown outcome.
    lists: Mutex<Vec<ListTxn>>,
    stop: AtomicBool,
}

impl History {
    fn now(&self) -> Nanos {
        self.base.elapsed().as_nanos() as Nanos
    }

    fn record(&self, key: &str, entry: Entry<RegisterOp, RegisterRet>) {
        self.registers
            .lock()
            .unwrap()
            .push((key.to_string(), entry));
    }
}

fn batch(table: &str, conditions: Vec<Condition>, puts: Vec<(&str, u64)>) -> Request {
    let ops = puts
        .into_iter()
        .map(|(key, value)| Op::Put {
            key: key.into(),
            value: value.to_string().into_bytes(),
            index_values: Vec::new(),
        })
        .collect();
    Request::Commit(vec![(table.to_string(), Batch { conditions, ops })])
}

/// A linearizable read of `key`: its value and version, or `None` if the
/// read failed.
pub(crate) async fn read(node: &Node, table: &str, key: &str) -> Option<(Option<u64>, u64)> {
    let request = Request::Get {
        table: table.to_string(),
        key: key.into(),
        consistency: Consistency::Linearizable,
    };
    match node.table(request).await {
        Reply::Rows(rows) => {
            let row = rows.rows.into_iter().next()?;
            let value = row
                .records
                .first()
                .map(|r| String::from_utf8_lossy(&r.value).parse().expect("a number"));
            Some((value, row.version))
        }
        _ => None,
    }
}

/// Writes, compare-and-sets and reads the registers from one node.
async fn register_client(node: Node, me: u64, history: Arc<History>, mut rng: Rng) {
    while !history.stop.load(Ordering::Relaxed) {
        let key = KEYS[rng.below(KEYS.len() as u64) as usize];
        let value = history.next_value.fetch_add(1, Ordering::Relaxed) + 1;
        match rng.below(3) {
            0 => {
                let invoke = history.now();
                let op = RegisterOp::Write(value);
                let entry = match node
                    .table(batch(REGISTERS, vec![], vec![(key, value)]))
                    .await
                {
                    Reply::Committed(_) => {
                        Entry::ok(me, op, invoke, history.now(), RegisterRet::Done)
                    }
                    _ => Entry::unknown(me, op, invoke),
                };
                history.record(key, entry);
            }
            1 => {
                let invoke = history.now();
                if let Some((value, _)) = read(&node, REGISTERS, key).await {
                    let ret = RegisterRet::Value(value);
                    history.record(
                        key,
                        Entry::ok(me, RegisterOp::Read, invoke, history.now(), ret),
                    );
                }
            }
            _ => {
                // Read, then put only if unchanged since (its version).
                let Some((from, version)) = read(&node, REGISTERS, key).await else {
                    continue;
                };
                let condition = match from {
                    None => Condition::Absent { key: key.into() },
                    Some(_) => Condition::Version {
                        key: key.into(),
                        version,
                    },
                };
                let invoke = history.now();
                let op = RegisterOp::Cas { from, to: value };
                let request = batch(REGISTERS, vec![condition], vec![(key, value)]);
                let entry = match node.table(request).await {
                    Reply::Committed(_) => {
                        Entry::ok(me, op, invoke, history.now(), RegisterRet::Done)
                    }
                    Reply::Error(Error::Aborted { .. }) => {
                        Entry::ok(me, op, invoke, history.now(), RegisterRet::Refused)
                    }
                    _ => Entry::unknown(me, op, invoke),
                };
                history.record(key, entry);
            }
        }
        tokio::time::sleep(Duration::from_millis(2 + rng.below(15))).await;
    }
}

/// Moves money between two accounts in one conditional batch, or reads
/// every account and records the total.
async fn bank_client(node: Node, history: Arc<History>, mut rng: Rng) {
    while !history.stop.load(Ordering::Relaxed) {
        if rng.below(4) == 0 {
            let request = Request::Prefix {
                table: BANK.to_string(),
                prefix: b"a".to_vec(),
                limit: 10,
                consistency: Consistency::Linearizable,
            };
            if let Reply::Rows(rows) = node.table(request).await {
                let total = rows
                    .rows
                    .iter()
                    .flat_map(|r| &r.records)
                    .map(|r| {
                        String::from_utf8_lossy(&r.value)
                            .parse::<u64>()
                            .expect("a number")
                    })
                    .sum();
                history.totals.lock().unwrap().push(total);
            }
        } else {
            let from = ACCOUNTS[rng.below(4) as usize];
            let to = ACCOUNTS[rng.below(4) as usize];
            if from != to
                && let (Some((Some(a), va)), Some((Some(b), vb))) =
                    (read(&node, BANK, from).await, read(&node, BANK, to).await)
            {
                let amount = rng.below(a + 1).min(a);
                let conditions = vec![
                    Condition::Version {
                        key: from.into(),
                        version: va,
                    },
                    Condition::Version {
                        key: to.into(),
                        version: vb,
                    },
                ];
                let request = batch(BANK, conditions, vec![(from, a - amount), (to, b + amount)]);
                if let Reply::Committed(_) = node.table(request).await {
                    history.transfers.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2 + rng.below(15))).await;
    }
}

/// A list key's name.
fn list_key(k: u64) -> String {
    format!("l{k}")
}

/// A list key's table: even keys in one, odd keys in the other.
fn list_table(k: u64) -> &'static str {
    match k % 2 {
        0 => LISTS,
        _ => LISTS_B,
    }
}

/// A key's list and version, as this node's replica has it (dirty: the
/// transaction's conditions make it exact at commit).
async fn read_list(
    node: &Node,
    k: u64,
    consistency: Consistency,
) -> Option<(Vec<u64>, Option<u64>)> {
    let request = Request::Get {
        table: list_table(k).to_string(),
        key: list_key(k).into_bytes(),
        consistency,
    };
    let Reply::Rows(rows) = node.table(request).await else {
        return None;
    };
    let row = rows.rows.into_iter().next()?;
    let Some(record) = row.records.first() else {
        return Some((Vec::new(), None));
    };
    let text = String::from_utf8_lossy(&record.value).into_owned();
    let list = text
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().expect("a number"))
        .collect();
    Some((list, Some(row.version)))
}

/// Transactions that read two lists and append one value to one or both,
/// conditioned on the versions read (Elle's list-append).
async fn list_client(node: Node, me: u64, history: Arc<History>, mut rng: Rng) {
    while !history.stop.load(Ordering::Relaxed) {
        let k1 = rng.below(LIST_KEYS);
        let k2 = (k1 + 1 + rng.below(LIST_KEYS - 1)) % LIST_KEYS;
        let (Some((l1, v1)), Some((l2, v2))) = (
            read_list(&node, k1, Consistency::Dirty).await,
            read_list(&node, k2, Consistency::Dirty).await,
        ) else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let value = history.next_value.fetch_add(1, Ordering::Relaxed) + 1;
        let both = rng.below(2) == 0;
        let condition = |k: u64, v: Option<u64>| match v {
            Some(version) => Condition::Version {
                key: list_key(k).into_bytes(),
                version,
            },
            None => Condition::Absent {
                key: list_key(k).into_bytes(),
            },
        };
        let put = |k: u64, list: &[u64]| Op::Put {
            key: list_key(k).into_bytes(),
            value: list
                .iter()
                .chain([&value])
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
                .into_bytes(),
            index_values: Vec::new(),
        };
        let mut appends = vec![(k1, value)];
        // One batch per table: both keys read are conditions, and one or
        // both get the value appended.
        let mut batches: Vec<(String, Batch)> = Vec::new();
        fn batch_of(batches: &mut Vec<(String, Batch)>, k: u64) -> &mut Batch {
            let table = list_table(k);
            let at = match batches.iter().position(|(t, _)| t == table) {
                Some(at) => at,
                None => {
                    batches.push((table.to_string(), Batch::default()));
                    batches.len() - 1
                }
            };
            &mut batches[at].1
        }
        batch_of(&mut batches, k1)
            .conditions
            .push(condition(k1, v1));
        batch_of(&mut batches, k1).ops.push(put(k1, &l1));
        batch_of(&mut batches, k2)
            .conditions
            .push(condition(k2, v2));
        if both {
            batch_of(&mut batches, k2).ops.push(put(k2, &l2));
            appends.push((k2, value));
        }
        let request = Request::Commit(batches);
        let acknowledged = match node.table(request).await {
            Reply::Committed(_) => Some(true),
            Reply::Error(Error::Aborted { .. }) => None,
            _ => Some(false),
        };
        if let Some(acknowledged) = acknowledged {
            history.lists.lock().unwrap().push(ListTxn {
                process: me,
                reads: vec![(k1, l1), (k2, l2)],
                appends,
                acknowledged,
            });
        }
        tokio::time::sleep(Duration::from_millis(2 + rng.below(15))).await;
    }
}

fn set_link(nodes: &[Member], i: usize, j: usize, faults: LinkFaults) {
    nodes[i].dist.nemesis().set(nodes[j].dist.name(), faults);
    nodes[j].dist.nemesis().set(nodes[i].dist.name(), faults);
}

/// While node `lone` is cut off: its writes are refused with `no_quorum`
/// within the quorum timeout (plus slack), and its dirty reads say stale.
async fn minority_refuses(lone: &Member) {
    let started = Instant::now();
    let reply = lone
        .node
        .table(batch(REGISTERS, vec![], vec![("minority", 1)]))
        .await;
    assert_eq!(
        reply,
        Reply::Error(Error::NoQuorum),
        "a write on the cut-off {}",
        lone.dist.name()
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "no_quorum took {:?}",
        started.elapsed()
    );
    let dirty = Request::Get {
        table: REGISTERS.to_string(),
        key: "r0".into(),
        consistency: Consistency::Dirty,
    };
    match lone.node.table(dirty).await {
        Reply::Rows(rows) => assert!(
            rows.stale,
            "a dirty read on the cut-off node is marked stale"
        ),
        other => panic!("a dirty read on the cut-off node: {other:?}"),
    }
}

async fn nemesis(nodes: &[Member], seed: u64, rounds: usize) -> Vec<String> {
    let mut rng = Rng(seed);
    let mut log = Vec::new();
    for node in nodes {
        node.dist.nemesis().seed(rng.next());
    }
    for round in 0..rounds {
        let lone = rng.below(3) as usize;
        let others = [(lone + 1) % 3, (lone + 2) % 3];
        let hold = Duration::from_millis(800 + rng.below(2000));
        // The first round is always a partition, to check the minority.
        let what = match if round == 0 { 0 } else { rng.below(4) } {
            0 => {
                for o in others {
                    set_link(nodes, lone, o, LinkFaults::CUT);
                }
                let minority = Duration::from_millis(2500);
                tokio::time::sleep(minority).await;
                minority_refuses(&nodes[lone]).await;
                format!("partition {} | others, checked", nodes[lone].dist.name())
            }
            1 => {
                let paused = LinkFaults {
                    paused: true,
                    ..LinkFaults::default()
                };
                for o in others {
                    set_link(nodes, lone, o, paused);
                }
                format!("pause {}'s links", nodes[lone].dist.name())
            }
            2 => {
                let lossy = LinkFaults {
                    drop_per_mille: 100 + rng.below(250) as u16,
                    ..LinkFaults::default()
                };
                for (i, j) in [(0, 1), (1, 2), (0, 2)] {
                    set_link(nodes, i, j, lossy);
                }
                format!("drop {}‰ everywhere", lossy.drop_per_mille)
            }
            _ => {
                let slow = LinkFaults {
                    delay: Duration::from_millis(10 + rng.below(60)),
                    ..LinkFaults::default()
                };
                for (i, j) in [(0, 1), (1, 2), (0, 2)] {
                    set_link(nodes, i, j, slow);
                }
                format!("delay {:?} everywhere", slow.delay)
            }
        };
        log.push(format!("{what} for {hold:?}"));
        tokio::time::sleep(hold).await;
        for n in nodes {
            n.dist.nemesis().heal_all();
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_tables_stay_linearizable_and_serializable_under_a_seeded_nemesis() {
    let seed = std::env::var("MOLT_NEMESIS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(17);
    println!("nemesis seed {seed}");
    let dir = TempDir::new("replicated-faults");
    let nodes = three(&dir, LogMode::Ram).await;
    let all: Vec<&Member> = nodes.iter().collect();
    for table in [REGISTERS, BANK, LISTS] {
        assert_eq!(
            nodes[0]
                .node
                .table(Request::Create(spec(table, &all, Copy::Ram)))
                .await,
            Reply::Done
        );
    }
    // The second list table is fragmented: its keys' transactions span
    // its fragments' groups too.
    let fragmented = Request::CreateFragmented {
        spec: spec(LISTS_B, &all, Copy::Ram),
        fragments: molt_abi::table::Fragments {
            count: LISTS_B_FRAGMENTS,
            copies: 3,
        },
    };
    assert_eq!(nodes[0].node.table(fragmented).await, Reply::Done);
    let groups = groups();
    wait_for("every group with three voters on every node", || {
        nodes.iter().all(|m| {
            groups.iter().all(|t| {
                m.node
                    .tables()
                    .replica_status(t)
                    .is_some_and(|s| s.voters.len() == 3)
            })
        })
    })
    .await;
    let opening = ACCOUNTS.iter().map(|a| (*a, BALANCE)).collect();
    assert!(matches!(
        nodes[0].node.table(batch(BANK, vec![], opening)).await,
        Reply::Committed(_)
    ));
    let history = Arc::new(History {
        base: Instant::now(),
        registers: Mutex::default(),
        totals: Mutex::default(),
        transfers: AtomicU64::new(0),
        next_value: AtomicU64::new(0),
        lists: Mutex::default(),
        stop: AtomicBool::new(false),
    });
    let mut rng = Rng(seed ^ 0x7ab1e);
    let mut tasks = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let node = n.node.clone();
        tasks.push(tokio::spawn(register_client(
            node.clone(),
            i as u64,
            history.clone(),
            Rng(rng.next() | 1),
        )));
        tasks.push(tokio::spawn(bank_client(
            node.clone(),
            history.clone(),
            Rng(rng.next() | 1),
        )));
        tasks.push(tokio::spawn(list_client(
            node,
            i as u64,
            history.clone(),
            Rng(rng.next() | 1),
        )));
    }
    let schedule = nemesis(&nodes, seed, 5).await;
    for line in &schedule {
        println!("nemesis: {line}");
    }
    history.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        tokio::time::timeout(WAIT, t)
            .await
            .expect("clients end")
            .unwrap();
    }
    // Healed: every node serves again, without a manual step, and all end
    // with the same registers.
    let mut finals = Vec::new();
    for n in &nodes {
        let deadline = Instant::now() + WAIT;
        let mut values = Vec::new();
        for key in KEYS {
            let value = loop {
                let invoke = history.now();
                if let Some((value, _)) = read(&n.node, REGISTERS, key).await {
                    let ret = RegisterRet::Value(value);
                    history.record(
                        key,
                        Entry::ok(9, RegisterOp::Read, invoke, history.now(), ret),
                    );
                    break value;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} reads again after the heal",
                    n.dist.name()
                );
            };
            values.push(value);
        }
        finals.push(values);
    }
    assert!(finals.windows(2).all(|w| w[0] == w[1]), "{finals:?}");
    let mut end_total = 0;
    for account in ACCOUNTS {
        let (value, _) = read(&nodes[1].node, BANK, account).await.expect("a read");
        end_total += value.expect("every account");
    }
    let registers = history.registers.lock().unwrap().clone();
    let totals = history.totals.lock().unwrap().clone();
    let answered = registers
        .iter()
        .filter(|(_, e)| matches!(e.outcome, checker::Outcome::Ok(_)))
        .count();
    println!(
        "history: {} register ops ({answered} answered), {} transfers, {} totals read",
        registers.len(),
        history.transfers.load(Ordering::Relaxed),
        totals.len()
    );
    checker::check_registers(&registers).unwrap_or_else(|v| panic!("registers (seed {seed}): {v}"));
    // A transaction over both list tables whose coordinator lost touch
    // is finished by the tables' leaders: wait for that before reading.
    wait_for("no list transaction in flight", || {
        nodes.iter().all(|n| {
            groups[2..].iter().all(|t| {
                n.node
                    .tables()
                    .replica_status(t)
                    .is_some_and(|s| s.prepared + s.decisions == 0)
            })
        })
    })
    .await;
    let mut finals = std::collections::BTreeMap::new();
    for k in 0..LIST_KEYS {
        let (list, _) = read_list(&nodes[2].node, k, Consistency::Linearizable)
            .await
            .expect("a final read");
        finals.insert(k, list);
    }
    let lists = history.lists.lock().unwrap().clone();
    let acked = lists.iter().filter(|t| t.acknowledged).count();
    println!(
        "list-append: {} transactions ({acked} acknowledged)",
        lists.len()
    );
    checker::check_list_append(&lists, &finals)
        .unwrap_or_else(|v| panic!("list-append (seed {seed}): {v}"));
    assert!(
        acked >= 50,
        "only {acked} list-append transactions acknowledged"
    );
    let expected = BALANCE * ACCOUNTS.len() as u64;
    assert!(
        totals.iter().all(|t| *t == expected),
        "a read saw another total than {expected} (seed {seed}): {totals:?}"
    );
    assert_eq!(end_total, expected, "the total at the end (seed {seed})");
    // The run did something worth checking.
    assert!(answered >= 50, "only {answered} register ops were answered");
    assert!(
        history.transfers.load(Ordering::Relaxed) >= 10,
        "too few transfers"
    );
    assert!(totals.len() >= 5, "too few totals");
    for n in nodes {
        n.stop().await;
    }
}
