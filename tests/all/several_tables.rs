//! Transactions over several replicated tables (each its own group), on
//! three coordinated nodes over loopback: all of the batches commit or
//! none; concurrent transfers between two tables lose no update; a
//! coordinator cut off mid-transaction does not keep keys held, and every
//! transfer it started is whole once the tables have resolved it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use molt_abi::table::{
    Abort, Batch, Condition, Consistency, Copy, Error, Kind, Op, Replica, Reply, Request,
};
use molt_host::Node;
use molt_host::cluster::LogMode;
use molt_host::net::nemesis::LinkFaults;
use molt_tests::TempDir;

use crate::coord::{Member, three, wait_for};
use crate::replicated::spec;
use crate::replicated_faults::read;

/// A batch for `table`: `conditions`, then put each (key, number).
fn part(table: &str, conditions: Vec<Condition>, puts: &[(&str, u64)]) -> (String, Batch) {
    let ops = puts
        .iter()
        .map(|(key, value)| Op::Put {
            key: key.as_bytes().to_vec(),
            value: value.to_string().into_bytes(),
            index_values: Vec::new(),
        })
        .collect();
    (table.to_string(), Batch { conditions, ops })
}

/// A read that must answer: the number, if any.
async fn number(node: &Node, table: &str, key: &str) -> Option<u64> {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some((value, _)) = read(node, table, key).await {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("a read of {table}/{key} within 20 s"))
}

/// Move one unit from `left`/l to `right`/r in one transaction over both
/// tables, conditioned on the versions read. `Some(true)`: committed;
/// `Some(false)`: the outcome is unknown; `None`: refused (nothing
/// changed: a conflict, try again).
async fn transfer(node: &Node) -> Option<bool> {
    let (Some((Some(l), vl)), Some((Some(r), vr))) = (
        read(node, "left", "l").await,
        read(node, "right", "r").await,
    ) else {
        return None;
    };
    if l == 0 {
        return None;
    }
    let commit = Request::Commit(vec![
        part(
            "left",
            vec![Condition::Version {
                key: b"l".to_vec(),
                version: vl,
            }],
            &[("l", l - 1)],
        ),
        part(
            "right",
            vec![Condition::Version {
                key: b"r".to_vec(),
                version: vr,
            }],
            &[("r", r + 1)],
        ),
    ]);
    match node.table(commit).await {
        Reply::Committed(indexes) => {
            assert_eq!(indexes.len(), 2, "an index per table");
            Some(true)
        }
        Reply::Error(Error::NoQuorum) | Reply::Error(Error::Unavailable { .. }) => Some(false),
        Reply::Error(Error::Aborted { abort, .. })
            if matches!(abort, Abort::Changed { .. }) || abort.transient() =>
        {
            None
        }
        other => panic!("a transfer answered {other:?}"),
    }
}

/// `left` and `right` on `a` and `b` (two groups), `l` = `start`, `r` = 0.
async fn two_tables(members: &[Member], start: u64) {
    let ab = [&members[0], &members[1]];
    for name in ["left", "right"] {
        let reply = members[0]
            .node
            .table(Request::Create(spec(name, &ab, Copy::Ram)))
            .await;
        assert_eq!(reply, Reply::Done, "create {name}");
    }
    for name in ["left", "right"] {
        wait_for(&format!("{name}'s group on a and b"), || {
            members[..2].iter().all(|m| {
                m.node
                    .tables()
                    .replica_status(name)
                    .is_some_and(|s| s.leader.is_some() && s.voters.len() == 2)
            })
        })
        .await;
    }
    let setup = Request::Commit(vec![
        part("left", vec![], &[("l", start)]),
        part("right", vec![], &[("r", 0)]),
    ]);
    assert!(
        matches!(members[2].node.table(setup).await, Reply::Committed(_)),
        "the setup commits from c, which keeps neither table"
    );
}

/// Whether any replica of the two tables still holds a transaction.
fn in_flight(members: &[Member]) -> usize {
    members
        .iter()
        .flat_map(|m| {
            ["left", "right"]
                .into_iter()
                .filter_map(|t| m.node.tables().replica_status(t))
        })
        .map(|s| s.prepared + s.decisions)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_over_two_replicated_tables_commits_in_both_or_neither() {
    let dir = TempDir::new("several-tables");
    let members = three(&dir, LogMode::Ram).await;
    two_tables(&members, 100).await;
    let (a, c) = (&members[0].node, &members[2].node);
    assert_eq!(number(a, "left", "l").await, Some(100));
    assert_eq!(number(a, "right", "r").await, Some(0));

    // A failed condition in one table: nothing changes in either.
    let refused = Request::Commit(vec![
        part("left", vec![], &[("l", 1)]),
        part(
            "right",
            vec![Condition::Absent { key: b"r".to_vec() }],
            &[("x", 1)],
        ),
    ]);
    match c.table(refused).await {
        Reply::Error(Error::Aborted { table, abort }) => {
            assert_eq!(table, "right");
            assert_eq!(abort, Abort::Exists { key: b"r".to_vec() });
        }
        other => panic!("a transaction with a failed condition: {other:?}"),
    }
    assert_eq!(number(a, "left", "l").await, Some(100), "left unchanged");
    assert_eq!(number(a, "right", "x").await, None, "right unchanged");

    // Concurrent transfers from every node: each one whole, none lost.
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for m in &members {
        let node = m.node.clone();
        let done = done.clone();
        clients.push(tokio::spawn(async move {
            let mut mine = 0;
            while mine < 10 {
                match transfer(&node).await {
                    Some(true) => mine += 1,
                    Some(false) => panic!("no fault, yet an unknown outcome"),
                    None => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
            done.fetch_add(mine, Ordering::Relaxed);
        }));
    }
    for client in clients {
        tokio::time::timeout(Duration::from_secs(60), client)
            .await
            .expect("30 transfers within 60 s")
            .expect("a client");
    }
    assert_eq!(done.load(Ordering::Relaxed), 30);
    for m in &members {
        assert_eq!(
            number(&m.node, "left", "l").await,
            Some(70),
            "left on {}",
            m.dist.name()
        );
        assert_eq!(
            number(&m.node, "right", "r").await,
            Some(30),
            "right on {}",
            m.dist.name()
        );
    }
    wait_for("nothing in flight", || in_flight(&members) == 0).await;

    // A table of one node only, and a conflict-free table, take no part.
    let local = Request::Create(molt_abi::table::Spec {
        name: "mine".into(),
        kind: Kind::Set,
        indexes: Vec::new(),
        replicas: vec![Replica {
            node: members[2].dist.name().to_string(),
            copy: Copy::Ram,
        }],
    });
    assert_eq!(c.table(local).await, Reply::Done);
    let mixed = Request::Commit(vec![
        part("left", vec![], &[("l", 1)]),
        part("mine", vec![], &[("m", 1)]),
    ]);
    match c.table(mixed).await {
        Reply::Error(Error::Unsupported(why)) => assert!(why.contains("mine"), "{why}"),
        other => panic!("a transaction over a replicated and a local table: {other:?}"),
    }
    let mut counter = spec("hits", &[&members[0], &members[1]], Copy::Ram);
    counter.kind = Kind::Counter;
    assert_eq!(a.table(Request::Create(counter)).await, Reply::Done);
    // c learns of the new table from the coordination log.
    tokio::time::timeout(Duration::from_secs(20), async {
        let info = || Request::Info {
            table: "hits".into(),
        };
        while let Reply::Error(Error::NoTable(_)) = c.table(info()).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("c knows of hits within 20 s");
    let with_counter = Request::Commit(vec![
        part("left", vec![], &[("l", 1)]),
        (
            "hits".to_string(),
            Batch {
                conditions: vec![],
                ops: vec![Op::Add {
                    key: b"h".to_vec(),
                    delta: 1,
                }],
            },
        ),
    ]);
    match c.table(with_counter).await {
        Reply::Error(Error::Unsupported(why)) => assert!(why.contains("conflict-free"), "{why}"),
        other => panic!("a transaction over a replicated and a counter table: {other:?}"),
    }
    assert_eq!(number(a, "left", "l").await, Some(70), "nothing changed");

    for m in members {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_cut_off_mid_transaction_leaves_no_keys_held_and_no_transfer_half_done() {
    const START: u64 = 1_000;
    let dir = TempDir::new("several-cut");
    let members = three(&dir, LogMode::Ram).await;
    two_tables(&members, START).await;

    // c (which keeps neither table) coordinates transfers from several
    // clients at once, and is cut off from a and b while they run.
    let acked = Arc::new(AtomicU64::new(0));
    let unknown = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..6 {
        let node = members[2].node.clone();
        let (acked, unknown, stop) = (acked.clone(), unknown.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match transfer(&node).await {
                    Some(true) => acked.fetch_add(1, Ordering::Relaxed),
                    Some(false) => unknown.fetch_add(1, Ordering::Relaxed),
                    None => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        0
                    }
                };
            }
        }));
    }
    wait_for("some transfers", || acked.load(Ordering::Relaxed) >= 20).await;
    let cut = |faults: LinkFaults| {
        for i in 0..2 {
            members[2]
                .dist
                .nemesis()
                .set(members[i].dist.name(), faults);
            members[i]
                .dist
                .nemesis()
                .set(members[2].dist.name(), faults);
        }
    };
    // Cut c off until the cut leaves a transaction in flight on a or b
    // (a prepare or a decision without the rest), a few tries at most.
    let mut left_behind = false;
    for _ in 0..5 {
        cut(LinkFaults::CUT);
        tokio::time::sleep(Duration::from_millis(100)).await;
        left_behind = in_flight(&members[..2]) > 0;
        if left_behind {
            break;
        }
        cut(LinkFaults::default());
        let before = acked.load(Ordering::Relaxed);
        wait_for("transfers again", || {
            acked.load(Ordering::Relaxed) >= before + 5
        })
        .await;
    }
    assert!(
        left_behind,
        "cutting c off mid-transaction left something in flight"
    );

    // While c is still cut off, a and b finish what it left.
    wait_for("a and b resolve what c left", || {
        in_flight(&members[..2]) == 0
    })
    .await;
    let (a, b) = (&members[0].node, &members[1].node);
    let l = number(a, "left", "l").await.expect("l");
    let r = number(b, "right", "r").await.expect("r");
    assert_eq!(
        l + r,
        START,
        "every transfer whole while c is cut off (l {l}, r {r})"
    );
    // The keys are free: a commits at once.
    let free = Request::Commit(vec![
        part("left", vec![], &[("l", l - 1)]),
        part("right", vec![], &[("r", r + 1)]),
    ]);
    assert!(
        matches!(a.table(free).await, Reply::Committed(_)),
        "a commits"
    );

    cut(LinkFaults::default());
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        tokio::time::timeout(Duration::from_secs(30), client)
            .await
            .expect("clients end")
            .expect("a client");
    }
    wait_for("nothing in flight after the heal", || {
        in_flight(&members) == 0
    })
    .await;
    let l = number(a, "left", "l").await.expect("l");
    let r = number(a, "right", "r").await.expect("r");
    assert_eq!(l + r, START, "every transfer whole (l {l}, r {r})");
    let (acked, unknown) = (
        acked.load(Ordering::Relaxed),
        unknown.load(Ordering::Relaxed),
    );
    // a's own transfer, every acknowledged one, and some of the unknown.
    assert!(
        r > acked && r <= acked + unknown + 1,
        "r {r}: {acked} acknowledged, {unknown} unknown, one from a"
    );

    for m in members {
        m.stop().await;
    }
}

/// An order, as the cart example records it.
#[derive(serde::Deserialize)]
struct Order {
    items: Vec<(String, u32)>,
}

/// The first record of `key` in `table`, read linearizably on `node`,
/// decoded.
async fn record<T: serde::de::DeserializeOwned>(node: &Node, table: &str, key: &str) -> Option<T> {
    let request = Request::Get {
        table: table.to_string(),
        key: molt_tests::demo_wire::cart_key(key),
        consistency: Consistency::Linearizable,
    };
    match node.table(request).await {
        Reply::Rows(rows) => rows
            .rows
            .first()
            .and_then(|r| r.records.first())
            .map(|r| molt_abi::codec::decode(&r.value).expect("the cart's types")),
        other => panic!("a read of {table}/{key}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cart_example_checks_out_over_three_replicated_tables_all_or_nothing() {
    cart_checks_out_all_or_nothing(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cart_example_checks_out_over_a_fragmented_stock_all_or_nothing() {
    cart_checks_out_all_or_nothing(Some(3)).await;
}

/// The cart's checkout over `carts`, `stock` and `orders`, replicated on
/// three nodes; `stock` split into `fragments` if given.
async fn cart_checks_out_all_or_nothing(fragments: Option<u32>) {
    let dir = TempDir::new("several-cart");
    let members = three(&dir, LogMode::Ram).await;
    let (a, c) = (&members[0].node, &members[2].node);
    let mut me = c.mailbox().unwrap();
    let mut run = async |words: &[&str]| {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        molt_tests::run_to_exit(&mut me, "cart", molt_abi::codec::encode(&words)).await
    };
    let split = fragments.map(|n| n.to_string());
    let mut replicate = vec!["replicate", "10"];
    replicate.extend(split.as_deref());
    assert_eq!(run(&replicate).await, "normal");
    wait_for("the three tables' groups on every node", || {
        ["carts", "orders"].iter().all(|t| {
            a.tables()
                .replica_status(t)
                .is_some_and(|s| s.voters.len() == 3)
        })
    })
    .await;
    let voters_of = |table: &str| {
        members
            .iter()
            .filter_map(|m| m.node.tables().replica_status(table))
            .map(|s| s.voters.len())
            .max()
    };
    match fragments {
        None => wait_for("stock's group", || voters_of("stock") == Some(3)).await,
        Some(n) => {
            wait_for("each stock fragment's group, on two nodes", || {
                (0..n).all(|i| {
                    voters_of(&molt_host::table::fragments::name("stock", i, n)) == Some(2)
                })
            })
            .await
        }
    }
    assert_eq!(run(&["shop", "ann", "tea", "3"]).await, "normal");
    assert_eq!(run(&["checkout", "ann"]).await, "normal");
    assert_eq!(record::<u32>(a, "stock", "tea").await, Some(7));
    let order: Order = record(a, "orders", "ann").await.expect("ann's order");
    assert_eq!(order.items, vec![("tea".to_string(), 3)]);
    assert!(
        record::<molt_tests::demo_wire::Cart>(a, "carts", "ann")
            .await
            .is_none()
    );

    // Short of stock: nothing moves in any of the three tables.
    assert_eq!(run(&["shop", "bob", "cake", "2"]).await, "normal");
    assert_eq!(run(&["shop", "bob", "tea", "20"]).await, "normal");
    assert_eq!(run(&["checkout", "bob"]).await, "out_of_stock: tea");
    assert_eq!(record::<u32>(a, "stock", "tea").await, Some(7));
    assert_eq!(record::<u32>(a, "stock", "cake").await, Some(10));
    let cart: molt_tests::demo_wire::Cart = record(a, "carts", "bob").await.expect("bob's cart");
    assert_eq!(
        cart.items,
        vec![("cake".to_string(), 2), ("tea".to_string(), 20)]
    );
    assert!(record::<Order>(a, "orders", "bob").await.is_none());
    if let Some(n) = fragments {
        // The items are in more than one fragment: the checkout spanned
        // them.
        let spread: std::collections::BTreeSet<u32> = ["tea", "cake"]
            .iter()
            .map(|item| {
                molt_host::table::fragments::of_key(&molt_tests::demo_wire::cart_key(item), n)
            })
            .collect();
        assert!(spread.len() > 1 || n == 1, "{spread:?}");
    }

    for m in members {
        m.stop().await;
    }
}
