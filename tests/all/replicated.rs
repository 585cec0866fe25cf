//! Replicated tables on three coordinated nodes over loopback: a table
//! kept on every node, written from each, read everywhere; its group
//! survives the loss of a node, and a minority refuses writes.

use std::time::{Duration, Instant};

use molt_abi::table::{
    Abort, Batch, Condition, Consistency, Copy, Error, Kind, Op, Replica, Reply, Request, Spec,
};
use molt_host::cluster::LogMode;
use molt_host::table::Tables;
use molt_tests::TempDir;

use crate::coord::{Member, three, wait_for};

/// A set table kept as `copy` on each of `nodes`.
pub(crate) fn spec(name: &str, nodes: &[&Member], copy: Copy) -> Spec {
    Spec {
        name: name.to_string(),
        kind: Kind::Set,
        indexes: Vec::new(),
        replicas: nodes
            .iter()
            .map(|m| Replica {
                node: m.dist.name().to_string(),
                copy,
            })
            .collect(),
    }
}

fn put(table: &str, key: &str, value: &str) -> Request {
    Request::Commit(vec![(
        table.to_string(),
        Batch {
            conditions: Vec::new(),
            ops: vec![Op::Put {
                key: key.into(),
                value: value.into(),
                index_values: Vec::new(),
            }],
        },
    )])
}

fn get(table: &str, key: &str, consistency: Consistency) -> Request {
    Request::Get {
        table: table.to_string(),
        key: key.into(),
        consistency,
    }
}

/// The value of `key` read on `m`, and whether the replica said stale.
async fn read(
    m: &Member,
    table: &str,
    key: &str,
    consistency: Consistency,
) -> (Option<String>, bool) {
    match m.node.table(get(table, key, consistency)).await {
        Reply::Rows(rows) => {
            let value = rows
                .rows
                .first()
                .and_then(|r| r.records.first())
                .map(|r| String::from_utf8(r.value.clone()).expect("text"));
            (value, rows.stale)
        }
        other => panic!("{}: a read of {key} answered {other:?}", m.dist.name()),
    }
}

/// Write `key`, asking again while the table's group elects a leader
/// (the write is the same each time, so a repeat changes nothing).
async fn write_through(m: &Member, table: &str, key: &str, value: &str) -> Reply {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match m.node.table(put(table, key, value)).await {
                Reply::Error(Error::NoQuorum) => continue,
                reply => return reply,
            }
        }
    })
    .await
    .expect("a write within 20 s")
}

fn committed(reply: Reply, what: &str) -> u64 {
    match reply {
        Reply::Committed(indexes) => indexes[0],
        other => panic!("{what}: {other:?}"),
    }
}

fn tables(m: &Member) -> &Tables {
    m.node.tables()
}

fn leader_of(members: &[Member], table: &str) -> Option<String> {
    members
        .iter()
        .find_map(|m| tables(m).replica_status(table).and_then(|s| s.leader))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_on_three_nodes_takes_writes_from_each_and_outlives_a_node() {
    let dir = TempDir::new("replicated-three");
    let mut members = three(&dir, LogMode::Ram).await;
    let all: Vec<&Member> = members.iter().collect();
    let created = members[0]
        .node
        .table(Request::Create(spec("carts", &all, Copy::Ram)))
        .await;
    assert_eq!(created, Reply::Done);
    // Every node lists it and keeps a replica in a group of three voters.
    wait_for("three voters in the table's group", || {
        members.iter().all(|m| {
            tables(m)
                .replica_status("carts")
                .is_some_and(|s| s.voters.len() == 3 && s.leader.is_some())
        })
    })
    .await;
    for m in &members {
        assert_eq!(
            m.node.table(Request::List).await,
            Reply::Tables(vec!["carts".into()])
        );
    }
    // A write from each node; each is read back at once on the node that
    // wrote it, and linearizably from every node.
    for (i, m) in members.iter().enumerate() {
        let key = format!("k{i}");
        let index = committed(
            m.node.table(put("carts", &key, &format!("v{i}"))).await,
            "a write",
        );
        assert!(index > 0);
        let (value, _) = read(m, "carts", &key, Consistency::Dirty).await;
        assert_eq!(value.as_deref(), Some(format!("v{i}").as_str()));
    }
    for m in &members {
        for i in 0..3 {
            let (value, stale) =
                read(m, "carts", &format!("k{i}"), Consistency::Linearizable).await;
            assert_eq!(value, Some(format!("v{i}")), "on {}", m.dist.name());
            assert!(!stale);
        }
    }
    // A conditional write: absent fails once the key is there.
    let again = Request::Commit(vec![(
        "carts".to_string(),
        Batch {
            conditions: vec![Condition::Absent { key: "k0".into() }],
            ops: vec![Op::Put {
                key: "k0".into(),
                value: "other".into(),
                index_values: Vec::new(),
            }],
        },
    )]);
    match members[1].node.table(again).await {
        Reply::Error(Error::Aborted { table, abort }) => {
            assert_eq!(table, "carts");
            assert!(matches!(abort, Abort::Exists { .. }), "{abort:?}");
        }
        other => panic!("expected an abort, got {other:?}"),
    }

    // The table group's leader's node stops; the other two go on.
    let leader = leader_of(&members, "carts").expect("a leader");
    let at = members
        .iter()
        .position(|m| m.dist.name() == leader)
        .expect("the leader is a member");
    let gone = members.remove(at);
    gone.stop().await;
    let reply = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match members[0].node.table(put("carts", "after", "loss")).await {
                Reply::Error(Error::NoQuorum) => continue,
                reply => return reply,
            }
        }
    })
    .await
    .expect("a write within 20 s of losing a node");
    committed(reply, "a write after the loss");
    for m in &members {
        for (key, value) in [("k0", "v0"), ("k1", "v1"), ("k2", "v2"), ("after", "loss")] {
            let (read, _) = read(m, "carts", key, Consistency::Linearizable).await;
            assert_eq!(read.as_deref(), Some(value), "{key} on {}", m.dist.name());
        }
    }

    // Deleting it takes it off every node.
    assert_eq!(
        members[1]
            .node
            .table(Request::Delete {
                table: "carts".into()
            })
            .await,
        Reply::Done
    );
    wait_for("the table gone from every node", || {
        members
            .iter()
            .all(|m| tables(m).replica_status("carts").is_none())
    })
    .await;
    // Each node lists the tables its copy of the cluster's catalog holds:
    // the delete's last entry reaches every copy within a moment.
    for m in &members {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let listed = m.node.table(Request::List).await;
            if listed == Reply::Tables(vec![]) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} still lists {listed:?}",
                m.dist.name()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for m in members {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_replica_reads_and_writes_through_one_and_bad_specs_are_refused() {
    let dir = TempDir::new("replicated-remote");
    let members = three(&dir, LogMode::Ram).await;
    let two: Vec<&Member> = members[..2].iter().collect();
    assert_eq!(
        members[2]
            .node
            .table(Request::Create(spec("sessions", &two, Copy::Ram)))
            .await,
        Reply::Done
    );
    wait_for("two voters", || {
        members[..2].iter().all(|m| {
            tables(m)
                .replica_status("sessions")
                .is_some_and(|s| s.voters.len() == 2)
        })
    })
    .await;
    assert!(tables(&members[2]).replica_status("sessions").is_none());
    let c = &members[2];
    committed(
        c.node.table(put("sessions", "s1", "alice")).await,
        "a write from c",
    );
    let (value, _) = read(c, "sessions", "s1", Consistency::Linearizable).await;
    assert_eq!(value.as_deref(), Some("alice"));
    let (value, _) = read(&members[0], "sessions", "s1", Consistency::Linearizable).await;
    assert_eq!(value.as_deref(), Some("alice"));
    match c
        .node
        .table(Request::Info {
            table: "sessions".into(),
        })
        .await
    {
        Reply::Info(info) => {
            // Described by a replica: its records too.
            assert_eq!(info.spec.replicas.len(), 2);
            assert_eq!(info.records, 1);
        }
        other => panic!("info: {other:?}"),
    }
    // A guest on c, which keeps no replica, runs the cart example's
    // transactions on a `carts` kept by a and b (its reads go through a
    // replica).
    assert_eq!(
        c.node
            .table(Request::Create(spec("carts", &two, Copy::Ram)))
            .await,
        Reply::Done
    );
    let mut me = c.node.mailbox().unwrap();
    let words = ["shop", "ann", "tea", "3"].map(String::from).to_vec();
    let reason = molt_tests::run_to_exit(&mut me, "cart", molt_abi::codec::encode(&words)).await;
    assert_eq!(reason, "normal");
    let request = Request::Get {
        table: "carts".into(),
        key: molt_tests::demo_wire::cart_key("ann"),
        consistency: Consistency::Linearizable,
    };
    let Reply::Rows(rows) = members[0].node.table(request).await else {
        panic!("ann's cart");
    };
    let cart: molt_tests::demo_wire::Cart =
        molt_abi::codec::decode(&rows.rows[0].records[0].value).unwrap();
    assert_eq!(cart.items, vec![("tea".to_string(), 3)]);
    // A replica on a node that is not in the cluster, or named twice.
    let mut bad = spec("bad", &two, Copy::Ram);
    bad.replicas[1].node = "nobody@nowhere".into();
    match c.node.table(Request::Create(bad)).await {
        Reply::Error(Error::BadSpec(why)) => assert!(why.contains("nobody@nowhere"), "{why}"),
        other => panic!("expected BadSpec, got {other:?}"),
    }
    // The same definition rules as a local table: an index named twice.
    let mut indexes = spec("indexes", &two, Copy::Ram);
    indexes.indexes = vec!["by_user".into(), "by_user".into()];
    assert!(matches!(
        c.node.table(Request::Create(indexes)).await,
        Reply::Error(Error::BadSpec(why)) if why.contains("named twice")
    ));
    let mut twice = spec("twice", &two, Copy::Ram);
    twice.replicas[1].node = twice.replicas[0].node.clone();
    assert!(matches!(
        c.node.table(Request::Create(twice)).await,
        Reply::Error(Error::BadSpec(_))
    ));
    // A second table of the same name.
    assert_eq!(
        members[0]
            .node
            .table(Request::Create(spec("sessions", &two, Copy::Ram)))
            .await,
        Reply::Error(Error::Exists("sessions".into()))
    );
    for m in members {
        m.stop().await;
    }
}

fn status(m: &Member, table: &str) -> Option<molt_host::table::ReplicaStatus> {
    tables(m).replica_status(table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_added_changed_and_removed_while_the_table_is_in_use() {
    use molt_abi::table::Event as TableEvent;
    use molt_tests::Puppet;

    use crate::tables::{call, table_event};

    let dir = TempDir::new("replicated-schema");
    let members = three(&dir, LogMode::Ram).await;
    let (a, b, c) = (&members[0], &members[1], &members[2]);
    assert_eq!(
        a.node
            .table(Request::Create(spec("stock", &[a, b], Copy::Ram)))
            .await,
        Reply::Done
    );
    for i in 0..50 {
        committed(
            a.node
                .table(put("stock", &format!("item{i:02}"), "5"))
                .await,
            "a write",
        );
    }
    // c gets a replica: it catches up, and its subscriber hears of writes.
    let add = |node: &Member, copy| Request::AddReplica {
        table: "stock".into(),
        replica: Replica {
            node: node.dist.name().to_string(),
            copy,
        },
    };
    assert_eq!(b.node.table(add(c, Copy::Ram)).await, Reply::Done);
    wait_for("c a voter of the table's group", || {
        status(c, "stock")
            .is_some_and(|s| s.voters.len() == 3 && s.voters.contains(&c.dist.name().to_string()))
    })
    .await;
    wait_for("c caught up", || {
        tables(c)
            .local()
            .get("stock", b"item49")
            .is_ok_and(|(records, _)| records.len() == 1)
    })
    .await;
    let mut watcher = Puppet::spawn(&c.node).await;
    let subscribe = Request::Subscribe {
        table: "stock".into(),
    };
    assert_eq!(call(&mut watcher, subscribe.clone()).await, Reply::Done);
    let index = committed(a.node.table(put("stock", "item50", "7")).await, "a write");
    match table_event(&mut watcher).await {
        TableEvent::Committed {
            table,
            index: at,
            changes,
        } => {
            assert_eq!((table.as_str(), at), ("stock", index));
            assert_eq!(changes.len(), 1);
        }
        other => panic!("expected a change, got {other:?}"),
    }
    // a stops keeping one; it still reads and writes through the others.
    assert_eq!(
        c.node
            .table(Request::RemoveReplica {
                table: "stock".into(),
                node: a.dist.name().to_string(),
            })
            .await,
        Reply::Done
    );
    wait_for("a out of the group", || {
        status(a, "stock").is_none()
            && [b, c]
                .iter()
                .all(|m| status(m, "stock").is_some_and(|s| s.voters.len() == 2))
    })
    .await;
    committed(
        a.node.table(put("stock", "item51", "1")).await,
        "a write from a",
    );
    let (value, _) = read(a, "stock", "item51", Consistency::Linearizable).await;
    assert_eq!(value.as_deref(), Some("1"));
    // c's replica goes to disc: the same member, its log moved to disc;
    // its subscriber goes on hearing of writes.
    let member = status(c, "stock").expect("a replica").member;
    assert_eq!(a.node.table(add(c, Copy::Disc)).await, Reply::Done);
    wait_for("c a disc voter", || {
        status(c, "stock").is_some_and(|s| s.disc && s.voters.len() == 2 && s.leader.is_some())
    })
    .await;
    assert_eq!(status(c, "stock").unwrap().member, member);
    let after = committed(a.node.table(put("stock", "item52", "2")).await, "a write");
    loop {
        match table_event(&mut watcher).await {
            TableEvent::Committed { index: at, .. } if at < after => {}
            TableEvent::Committed {
                index: at, changes, ..
            } => {
                assert_eq!(at, after);
                assert_eq!(changes.len(), 1);
                break;
            }
            other => panic!("expected item52's change, got {other:?}"),
        }
    }
    let (value, _) = read(c, "stock", "item51", Consistency::Linearizable).await;
    assert_eq!(value.as_deref(), Some("1"));
    match a
        .node
        .table(Request::Info {
            table: "stock".into(),
        })
        .await
    {
        Reply::Info(info) => {
            let copies: Vec<(String, Copy)> = info
                .spec
                .replicas
                .iter()
                .map(|r| (r.node.clone(), r.copy))
                .collect();
            assert_eq!(
                copies,
                vec![
                    (b.dist.name().to_string(), Copy::Ram),
                    (c.dist.name().to_string(), Copy::Disc)
                ]
            );
        }
        other => panic!("info: {other:?}"),
    }
    // Bad changes are refused clearly.
    let remove = |node: &Member| Request::RemoveReplica {
        table: "stock".into(),
        node: node.dist.name().to_string(),
    };
    assert!(matches!(
        a.node.table(remove(a)).await,
        Reply::Error(Error::BadSpec(why)) if why.contains("keeps no replica")
    ));
    assert_eq!(a.node.table(remove(b)).await, Reply::Done);
    assert!(matches!(
        a.node.table(remove(c)).await,
        Reply::Error(Error::BadSpec(why)) if why.contains("last replica")
    ));
    drop(watcher);
    for m in members {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_disc_replicas_and_rejoins_with_new_ram_ones() {
    use crate::coord::member;

    let dir = TempDir::new("replicated-restart");
    let mut members = three(&dir, LogMode::Disc).await;
    let all: Vec<&Member> = members.iter().collect();
    for (table, copy) in [("kept", Copy::Disc), ("cache", Copy::Ram)] {
        assert_eq!(
            members[0]
                .node
                .table(Request::Create(spec(table, &all, copy)))
                .await,
            Reply::Done
        );
    }
    wait_for("both groups of three", || {
        members.iter().all(|m| {
            ["kept", "cache"]
                .iter()
                .all(|t| status(m, t).is_some_and(|s| s.voters.len() == 3))
        })
    })
    .await;
    for table in ["kept", "cache"] {
        committed(
            write_through(&members[0], table, "before", "1").await,
            "a write",
        );
    }
    // Two disc tables deleted while b is down: b removes their files when
    // it learns of it.
    let mut doomed_ap = spec("doomed-ap", &all, Copy::Disc);
    doomed_ap.kind = Kind::Lww;
    for create in [spec("doomed", &all, Copy::Disc), doomed_ap] {
        assert_eq!(
            members[0].node.table(Request::Create(create)).await,
            Reply::Done
        );
    }
    wait_for("the doomed tables on b", || {
        ["doomed", "doomed-ap"]
            .iter()
            .all(|t| status(&members[1], t).is_some())
    })
    .await;
    drop(all);
    let files =
        |dir: std::path::PathBuf| -> usize { std::fs::read_dir(dir).map_or(0, |d| d.count()) };
    let raft_dir = dir.path().join("b").join("tables").join("raft");
    let ap_dir = dir.path().join("b").join("tables").join("ap");
    assert_eq!(files(raft_dir.clone()), 2, "kept's and doomed's logs");
    assert_eq!(files(ap_dir.clone()), 1, "doomed-ap's file");
    let b = members.remove(1);
    let kept_id = status(&b, "kept").expect("a replica").member;
    let cache_id = status(&b, "cache").expect("a replica").member;
    b.stop().await;
    for table in ["doomed", "doomed-ap"] {
        let delete = Request::Delete {
            table: table.into(),
        };
        assert_eq!(members[0].node.table(delete).await, Reply::Done, "{table}");
    }
    assert_eq!(files(raft_dir.clone()), 2, "b is down: its files are there");
    // Written while b is away (b may have led a group: a write meets its
    // successor's election, and is asked again).
    for table in ["kept", "cache"] {
        committed(
            write_through(&members[0], table, "during", "2").await,
            "a write",
        );
    }
    let b = member(&dir, "b", Some(&members[0]), LogMode::Disc).await;
    wait_for("b's replicas back in both groups", || {
        ["kept", "cache"].iter().all(|t| {
            status(&b, t).is_some_and(|s| s.voters.len() == 3 && s.learners.is_empty() && !s.stale)
        })
    })
    .await;
    wait_for(
        "b removed the files of the tables deleted while it was down",
        || files(raft_dir.clone()) == 1 && files(ap_dir.clone()) == 0,
    )
    .await;
    // The disc replica came back as itself, with its log; the ram one
    // joined afresh and replaced the old one.
    assert_eq!(status(&b, "kept").unwrap().member, kept_id);
    assert_ne!(status(&b, "cache").unwrap().member, cache_id);
    for table in ["kept", "cache"] {
        wait_for("b has the write made while it was away", || {
            tables(&b)
                .local()
                .get(table, b"during")
                .is_ok_and(|(records, _)| records.len() == 1)
        })
        .await;
        let (value, _) = read(&b, table, "before", Consistency::Dirty).await;
        assert_eq!(value.as_deref(), Some("1"), "{table}");
    }
    members.push(b);
    for m in members {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_describes_and_replicates_a_table() {
    use crate::tables::molt_cli;

    let cookie = std::str::from_utf8(molt_tests::COOKIE).unwrap();
    let dir = TempDir::new("replicated-cli");
    let members = three(&dir, LogMode::Ram).await;
    let target = molt_tests::address_of(&members[0].dist);
    let [a, b, c] = [0, 1, 2].map(|i| members[i].dist.name().to_string());
    let table = |words: &[&str]| {
        let mut args = vec!["table", "--node", target.as_str()];
        args.extend_from_slice(words);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = async |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        molt_cli(&args, cookie).await
    };
    let b_disc = format!("{b}:disc");
    let (ok, out, err) = run(table(&[
        "create",
        "shop",
        "--replica",
        &a,
        "--replica",
        &b_disc,
    ]))
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("replicated on {a} (ram), {b} (disc)")),
        "{out}"
    );
    let (ok, out, err) = run(table(&["info", "shop"])).await;
    assert!(ok, "{err}");
    assert!(out.contains("group       term"), "{out}");
    assert!(
        out.contains("this replica leader") || out.contains("this replica follower"),
        "{out}"
    );

    let (ok, out, err) = run(table(&["add-replica", "shop", &c])).await;
    assert!(ok, "{err}");
    assert!(out.contains(&format!("shop is kept on {c} too")), "{out}");
    wait_for("c in the group", || {
        status(&members[2], "shop").is_some_and(|s| s.voters.len() == 3)
    })
    .await;
    let (ok, _, err) = run(table(&["remove-replica", "shop", &a])).await;
    assert!(ok, "{err}");
    let (ok, _, err) = run(table(&["remove-replica", "shop", &a])).await;
    assert!(!ok && err.contains("keeps no replica"), "{err}");
    let (ok, out, err) = run(vec!["tables".into(), "--node".into(), target.clone()]).await;
    assert!(ok, "{err}");
    assert!(
        out.starts_with("shop") && out.contains(&format!("{b} (disc), {c} (ram)")),
        "{out}"
    );
    // A replica on a node that is not in the cluster.
    let (ok, _, err) = run(table(&["create", "bad", "--replica", "x@nowhere"])).await;
    assert!(
        !ok && err.contains("x@nowhere is not a node of this cluster"),
        "{err}"
    );
    for m in members {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_by_more_than_a_frame_catches_up() {
    use molt_host::net::nemesis::LinkFaults;

    let dir = TempDir::new("replicated-big");
    let members = three(&dir, LogMode::Ram).await;
    let all: Vec<&Member> = members.iter().collect();
    assert_eq!(
        members[0]
            .node
            .table(Request::Create(spec("blobs", &all, Copy::Ram)))
            .await,
        Reply::Done
    );
    wait_for("three voters", || {
        members
            .iter()
            .all(|m| status(m, "blobs").is_some_and(|s| s.voters.len() == 3))
    })
    .await;
    // c is cut off while 24 MiB are written: more than one frame
    // (frame_bytes_max, 16 MiB) behind.
    let c = members[2].dist.name().to_string();
    for m in &members[..2] {
        m.dist.nemesis().set(&c, LinkFaults::CUT);
        members[2]
            .dist
            .nemesis()
            .set(m.dist.name(), LinkFaults::CUT);
    }
    let value = "x".repeat(1 << 20);
    for i in 0..24 {
        // Each write normally commits in milliseconds; a bound missed says
        // what each replica saw (role, term, leader) and the last answer.
        let mut last = None;
        let written = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match members[0]
                    .node
                    .table(put("blobs", &format!("b{i:02}"), &value))
                    .await
                {
                    Reply::Error(Error::NoQuorum) => last = Some(Error::NoQuorum),
                    reply => return reply,
                }
            }
        })
        .await;
        let Ok(reply) = written else {
            panic!(
                "1 MiB write {i} did not commit on the majority side within 20 s \
                 (last answer {last:?}); replicas: {:?}",
                members
                    .iter()
                    .map(|m| status(m, "blobs"))
                    .collect::<Vec<_>>()
            );
        };
        committed(reply, "a 1 MiB write");
    }
    for m in &members {
        m.dist.nemesis().heal_all();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !tables(&members[2])
        .local()
        .get("blobs", b"b23")
        .is_ok_and(|(records, _)| records.len() == 1)
    {
        assert!(
            Instant::now() < deadline,
            "c did not catch up: {:?} connected {:?}",
            members
                .iter()
                .map(|m| status(m, "blobs"))
                .collect::<Vec<_>>(),
            members.iter().map(|m| m.dist.nodes()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for m in members {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_replicated_table_restores_on_every_replica_at_one_index() {
    use molt_abi::table::Event as TableEvent;
    use molt_tests::Puppet;

    use crate::tables::{call, table_event};

    let dir = TempDir::new("replicated-backup");
    let members = three(&dir, LogMode::Ram).await;
    let two: Vec<&Member> = members[..2].iter().collect();
    assert_eq!(
        members[0]
            .node
            .table(Request::Create(spec("prices", &two, Copy::Ram)))
            .await,
        Reply::Done
    );
    for (key, value) in [("tea", "3"), ("jam", "5")] {
        committed(
            members[0].node.table(put("prices", key, value)).await,
            "a write",
        );
    }
    let file = dir.path().join("prices.bak");
    let covered = tables(&members[0])
        .backup("prices", &file)
        .expect("a backup");
    assert_eq!(covered.records, 2);
    // Changed after the backup; a subscriber on b watches.
    committed(
        members[1].node.table(put("prices", "tea", "4")).await,
        "a write",
    );
    committed(
        members[1].node.table(put("prices", "cake", "9")).await,
        "a write",
    );
    let mut watcher = Puppet::spawn(&members[1].node).await;
    let subscribe = Request::Subscribe {
        table: "prices".into(),
    };
    assert_eq!(call(&mut watcher, subscribe).await, Reply::Done);
    // Restored from c, which keeps no replica: through the group.
    let restored = members[2]
        .node
        .table_restore("prices", &file, false)
        .await
        .expect("a restore");
    assert_eq!(restored.records, 2);
    match table_event(&mut watcher).await {
        TableEvent::Ended {
            table,
            reason,
            index,
        } => {
            assert_eq!((table.as_str(), reason.as_str()), ("prices", "restored"));
            assert_eq!(index, restored.index);
        }
        other => panic!("expected the end of the subscription, got {other:?}"),
    }
    for m in &members[..2] {
        wait_for("the restore on every replica", || {
            tables(m)
                .local()
                .get("prices", b"cake")
                .is_ok_and(|(records, _)| records.is_empty())
        })
        .await;
        let (tea, _) = read(m, "prices", "tea", Consistency::Dirty).await;
        assert_eq!(tea.as_deref(), Some("3"));
        // Every row restored at the restore's index.
        let (_, version) = tables(m).local().get("prices", b"jam").unwrap();
        assert_eq!(version, Some(restored.index));
    }
    // A backup of another kind of table is refused.
    let other_dir = dir.path().join("other.bak");
    assert_eq!(
        members[0]
            .node
            .table(Request::Create(Spec {
                kind: Kind::Bag,
                ..spec("bags", &two, Copy::Ram)
            }))
            .await,
        Reply::Done
    );
    tables(&members[0])
        .backup("bags", &other_dir)
        .expect("a backup");
    let refused = members[0]
        .node
        .table_restore("prices", &other_dir, true)
        .await
        .expect_err("another kind is refused");
    assert!(refused.to_string().contains("another kind"), "{refused}");
    drop(watcher);
    for m in members {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_change_under_load_and_no_acknowledged_write_is_lost() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = TempDir::new("replicated-load");
    let members = Arc::new(three(&dir, LogMode::Ram).await);
    let (a, b, c) = (&members[0], &members[1], &members[2]);
    assert_eq!(
        a.node
            .table(Request::Create(spec("load", &[a, b], Copy::Ram)))
            .await,
        Reply::Done
    );
    wait_for("two voters", || {
        status(a, "load").is_some_and(|s| s.voters.len() == 2)
    })
    .await;
    // A writer on each node, each writing its own keys in order, keeping
    // the ones acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (members, stop) = (members.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let node = &members[w].node;
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{w}-{i:05}");
                if let Reply::Committed(_) = node.table(put("load", &key, "1")).await {
                    acked.push(key);
                }
                i += 1;
            }
            acked
        }));
    }
    let replica = |m: &Member, copy| Request::AddReplica {
        table: "load".into(),
        replica: Replica {
            node: m.dist.name().to_string(),
            copy,
        },
    };
    let remove = |m: &Member| Request::RemoveReplica {
        table: "load".into(),
        node: m.dist.name().to_string(),
    };
    // Under the writers: c joins, a leaves, c goes to disc, a comes back.
    for (step, request, settled) in [
        ("c joins", replica(c, Copy::Ram), 3),
        ("a leaves", remove(a), 2),
        ("c goes to disc", replica(c, Copy::Disc), 2),
        ("a comes back", replica(a, Copy::Ram), 3),
    ] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(b.node.table(request).await, Reply::Done, "{step}");
        // A removal may take up to ten quorum timeouts (20 s) under load.
        let deadline = Instant::now() + Duration::from_secs(25);
        while !status(b, "load").is_some_and(|s| {
            s.voters.len() == settled && s.learners.is_empty() && s.leader.is_some()
        }) {
            if Instant::now() > deadline {
                let seen: Vec<_> = members.iter().map(|m| status(m, "load")).collect();
                panic!("timed out waiting 25 s for \"{step}\" to settle: {seen:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        acked.len() >= 50,
        "only {} writes acknowledged",
        acked.len()
    );
    // Every acknowledged write is on every replica.
    wait_for("every replica with every acknowledged write", || {
        members.iter().all(|m| {
            acked.iter().all(|key| {
                tables(m)
                    .local()
                    .get("load", key.as_bytes())
                    .is_ok_and(|(records, _)| records.len() == 1)
            })
        })
    })
    .await;
    let members = Arc::try_unwrap(members).unwrap_or_else(|_| panic!("writers ended"));
    for m in members {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ram_table_is_empty_and_usable_after_every_replica_restarts() {
    let dir = TempDir::new("replicated-full-restart");
    let members = three(&dir, LogMode::Disc).await;
    let all: Vec<&Member> = members.iter().collect();
    assert_eq!(
        members[0]
            .node
            .table(Request::Create(spec("cache", &all, Copy::Ram)))
            .await,
        Reply::Done
    );
    committed(
        write_through(&members[1], "cache", "k", "before").await,
        "a write",
    );
    for m in members {
        m.stop().await;
    }
    // The whole cluster restarts: the table is still defined (the
    // coordination log is on disc), its ram replicas are all new.
    // All three start before any waits for a quorum.
    let members = crate::coord::restart_three(&dir, LogMode::Disc).await;
    for m in &members {
        crate::coord::session_within(&m.coord, Duration::from_secs(20)).await;
    }
    wait_for("the table's group founded again, on three nodes", || {
        members
            .iter()
            .all(|m| status(m, "cache").is_some_and(|s| s.voters.len() == 3 && s.leader.is_some()))
    })
    .await;
    let (value, _) = read(&members[2], "cache", "k", Consistency::Linearizable).await;
    assert_eq!(value, None, "a ram table is empty after a full restart");
    committed(
        write_through(&members[0], "cache", "k", "after").await,
        "a write",
    );
    let (value, _) = read(&members[1], "cache", "k", Consistency::Linearizable).await;
    assert_eq!(value.as_deref(), Some("after"));
    for m in members {
        m.stop().await;
    }
}

/// A table of two replicas loses the one that leads: the group needs
/// that replica to agree to its own removal, so its node keeps it until
/// the group no longer counts it, and the other goes on alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leading_replica_of_two_leaves_the_other_taking_writes() {
    let dir = TempDir::new("two-to-one");
    let members = three(&dir, LogMode::Ram).await;
    let (a, b, c) = (&members[0], &members[1], &members[2]);
    let create = Request::Create(spec("pair", &[b, c], Copy::Ram));
    assert_eq!(a.node.table(create).await, Reply::Done);
    committed(write_through(a, "pair", "k", "1").await, "a first write");
    let leader = leader_of(&members, "pair").expect("a leader");
    let remove = Request::RemoveReplica {
        table: "pair".into(),
        node: leader.clone(),
    };
    assert_eq!(a.node.table(remove).await, Reply::Done);
    committed(write_through(a, "pair", "k", "2").await, "a write after");
    let (value, _) = read(a, "pair", "k", Consistency::Linearizable).await;
    assert_eq!(value.as_deref(), Some("2"));
    let gone = members
        .iter()
        .find(|m| m.dist.name() == leader)
        .expect("the leader is a member");
    // It runs on until its group no longer counts it, at most ten quorum
    // timeouts (2 s here): the bound of this wait, with a margin.
    let deadline = Instant::now() + Duration::from_secs(25);
    while let Some(still) = status(gone, "pair") {
        assert!(
            Instant::now() < deadline,
            "the removed replica still runs after 25 s: {still:?}\nthe other's: {:?}",
            members
                .iter()
                .find(|m| m.dist.name() != leader && m.dist.name() != a.dist.name())
                .and_then(|m| status(m, "pair"))
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for m in members {
        m.stop().await;
    }
}

/// The `disc_only` rows files under a node's tables directory.
fn rows_files(dir: &TempDir, node: &str) -> Vec<std::path::PathBuf> {
    let rows = dir.path().join(node).join("tables").join("rows");
    std::fs::read_dir(rows)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|group| std::fs::read_dir(group.path()).into_iter().flatten())
        .flatten()
        .map(|f| f.path())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disc_only_replica_reads_from_its_file_across_a_restart_and_copy_changes() {
    use crate::coord::{member_with, three_with};

    fn frequent_snapshots(config: &mut molt_host::cluster::CoordConfig) {
        config.snapshot_every = 50;
    }

    let dir = TempDir::new("replicated-disc-only");
    // Snapshots every 50 entries: the group takes several, b's from its
    // file, and b restarts and c changes its copy from one.
    let mut members = three_with(&dir, LogMode::Disc, frequent_snapshots).await;
    let (a, b, c) = (&members[0], &members[1], &members[2]);
    let mut create = spec("big", &[a, b, c], Copy::Disc);
    create.replicas[1].copy = Copy::DiscOnly;
    create.replicas[2].copy = Copy::Ram;
    assert_eq!(a.node.table(Request::Create(create)).await, Reply::Done);
    wait_for("the group of three", || {
        [a, b, c]
            .iter()
            .all(|m| status(m, "big").is_some_and(|s| s.voters.len() == 3))
    })
    .await;
    for i in 0..200 {
        committed(
            write_through(a, "big", &format!("k{i:03}"), &format!("v{i}")).await,
            "a write",
        );
    }
    let has = |m: &Member, key: &str| {
        tables(m)
            .local()
            .get("big", key.as_bytes())
            .is_ok_and(|(records, _)| records.len() == 1)
    };
    wait_for("b caught up", || has(b, "k199")).await;
    let info = tables(b).local().info("big").expect("b's replica");
    assert_eq!(info.copy, Copy::DiscOnly);
    assert_eq!(info.records, 200);
    assert_eq!(rows_files(&dir, "b").len(), 1, "b keeps its rows in a file");
    assert!(
        rows_files(&dir, "a").is_empty(),
        "a's disc replica is in memory"
    );
    for consistency in [Consistency::Dirty, Consistency::Linearizable] {
        let (value, _) = read(b, "big", "k123", consistency).await;
        assert_eq!(value.as_deref(), Some("v123"), "{consistency:?}");
    }
    // A range on b comes from its file, in key order.
    let range = Request::Range {
        table: "big".into(),
        from: b"k010".to_vec(),
        to: Some(b"k015".to_vec()),
        limit: 100,
        consistency: Consistency::Dirty,
    };
    match b.node.table(range).await {
        Reply::Rows(rows) => {
            let keys: Vec<&[u8]> = rows.rows.iter().map(|r| r.key.as_slice()).collect();
            assert_eq!(keys, [b"k010", b"k011", b"k012", b"k013", b"k014"]);
        }
        other => panic!("a range on b: {other:?}"),
    }

    // b restarts: its replica comes back as itself, its rows rebuilt in
    // its file from the group's snapshot and log, with what was written
    // while it was away.
    let b = members.remove(1);
    let member_id = status(&b, "big").expect("a replica").member;
    b.stop().await;
    committed(
        write_through(&members[0], "big", "during", "away").await,
        "a write while b is away",
    );
    let b = member_with(
        &dir,
        "b",
        Some(&members[0]),
        LogMode::Disc,
        frequent_snapshots,
    )
    .await;
    wait_for("b back with the write made while it was away", || {
        has(&b, "during") && has(&b, "k000")
    })
    .await;
    assert_eq!(status(&b, "big").unwrap().member, member_id);
    let info = tables(&b).local().info("big").expect("b's replica");
    assert_eq!((info.copy, info.records), (Copy::DiscOnly, 201));
    assert_eq!(rows_files(&dir, "b").len(), 1);
    members.insert(1, b);
    let (a, b, c) = (&members[0], &members[1], &members[2]);

    // b's replica to memory and back to its file; c's to a file. Every
    // key reads back on each.
    let add = |node: &Member, copy| Request::AddReplica {
        table: "big".into(),
        replica: Replica {
            node: node.dist.name().to_string(),
            copy,
        },
    };
    assert_eq!(a.node.table(add(b, Copy::Ram)).await, Reply::Done);
    wait_for("b's replica in memory", || {
        tables(b)
            .local()
            .info("big")
            .is_ok_and(|i| i.copy == Copy::Ram)
            && rows_files(&dir, "b").is_empty()
    })
    .await;
    committed(write_through(a, "big", "in-memory", "1").await, "a write");
    assert_eq!(a.node.table(add(b, Copy::DiscOnly)).await, Reply::Done);
    assert_eq!(a.node.table(add(c, Copy::DiscOnly)).await, Reply::Done);
    wait_for("b and c disc_only", || {
        [b, c].iter().all(|m| {
            tables(m)
                .local()
                .info("big")
                .is_ok_and(|i| i.copy == Copy::DiscOnly)
        })
    })
    .await;
    assert_eq!(rows_files(&dir, "b").len(), 1);
    assert_eq!(rows_files(&dir, "c").len(), 1);
    committed(write_through(a, "big", "last", "1").await, "a write");
    for m in [b, c] {
        wait_for("the last write everywhere", || has(m, "last")).await;
        let info = tables(m).local().info("big").expect("a replica");
        assert_eq!(info.records, 203, "{}", m.dist.name());
        for i in (0..200).step_by(7) {
            let (value, _) = read(m, "big", &format!("k{i:03}"), Consistency::Dirty).await;
            assert_eq!(value, Some(format!("v{i}")), "{} k{i:03}", m.dist.name());
        }
    }
    // Deleting the table removes the files.
    assert_eq!(
        a.node
            .table(Request::Delete {
                table: "big".into()
            })
            .await,
        Reply::Done
    );
    wait_for("the rows files gone", || {
        rows_files(&dir, "b").is_empty() && rows_files(&dir, "c").is_empty()
    })
    .await;
    for m in members {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_created_through_one_node_is_known_at_once_on_the_others() {
    let dir = TempDir::new("replicated-known");
    let members = three(&dir, LogMode::Ram).await;
    let (a, b, c) = (&members[0], &members[1], &members[2]);
    // c hears from a and b 80 ms late (less than an election timeout):
    // its coordination replica lags.
    // Created through a, then at once written through c and read on b: c
    // has not applied the definition yet, and learns of it before
    // answering (never NoTable).
    for from in [a, b] {
        c.dist.nemesis().set(
            from.dist.name(),
            molt_host::net::nemesis::LinkFaults {
                delay: Duration::from_millis(80),
                ..Default::default()
            },
        );
    }
    for i in 0..3 {
        let name = format!("fresh{i}");
        assert_eq!(
            a.node
                .table(Request::Create(spec(&name, &[a, b], Copy::Ram)))
                .await,
            Reply::Done
        );
        let written = committed(write_through(c, &name, "k", "v").await, "a write through c");
        assert!(written > 0);
        let (value, _) = read(b, &name, "k", Consistency::Linearizable).await;
        assert_eq!(value.as_deref(), Some("v"), "{name}");
    }
    for from in [a, b] {
        c.dist.nemesis().heal(from.dist.name());
    }
    // A table nobody created is still NoTable, after the wait.
    assert_eq!(
        c.node.table(get("never", "k", Consistency::Dirty)).await,
        Reply::Error(Error::NoTable("never".into()))
    );
    for m in members {
        m.stop().await;
    }
}
