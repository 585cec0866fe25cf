//! Fragmented tables on three coordinated nodes over loopback: a table
//! split by key into fragments placed across the nodes, each fragment a
//! replicated table of its own; reads, ranges and transactions name the
//! table, and a transaction over keys of several fragments commits in all
//! of them or none.

use std::time::Duration;

use molt_abi::table::{
    Abort, Batch, Condition, Consistency, Copy, Error, Fragments, Kind, Op, Replica, Reply,
    Request, Spec,
};
use molt_host::cluster::LogMode;
use molt_host::table::fragments;
use molt_tests::TempDir;

use crate::coord::{Member, three, wait_for};

/// Table `name` of `kind`, one index, pooled over `nodes`.
fn pool(name: &str, kind: Kind, nodes: &[&Member]) -> Spec {
    Spec {
        name: name.to_string(),
        kind,
        indexes: vec!["parity".into()],
        replicas: nodes
            .iter()
            .map(|m| Replica {
                node: m.dist.name().to_string(),
                copy: Copy::Ram,
            })
            .collect(),
    }
}

fn put(key: &str, value: &str) -> Op {
    let parity = (key.bytes().last().unwrap_or(0) % 2).to_string();
    Op::Put {
        key: key.into(),
        value: value.into(),
        index_values: vec![parity.into_bytes()],
    }
}

fn commit(table: &str, conditions: Vec<Condition>, ops: Vec<Op>) -> Request {
    Request::Commit(vec![(table.to_string(), Batch { conditions, ops })])
}

/// Ask again while a fragment's group elects its first leader.
async fn ask(m: &Member, request: Request) -> Reply {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match m.node.table(request.clone()).await {
                Reply::Error(Error::NoQuorum) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                other => return other,
            }
        }
    })
    .await
    .expect("answered within 20 s")
}

fn keys(reply: &Reply) -> Vec<String> {
    match reply {
        Reply::Rows(rows) => rows
            .rows
            .iter()
            .map(|r| String::from_utf8(r.key.clone()).unwrap())
            .collect(),
        other => panic!("expected rows, got {other:?}"),
    }
}

fn value_and_version(reply: &Reply) -> Option<(String, u64)> {
    match reply {
        Reply::Rows(rows) => rows.rows.first().map(|r| {
            (
                String::from_utf8(r.records[0].value.clone()).unwrap(),
                r.version,
            )
        }),
        other => panic!("expected rows, got {other:?}"),
    }
}

fn range(from: &[u8], limit: u32) -> Request {
    Request::Range {
        table: "kv".into(),
        from: from.to_vec(),
        to: None,
        limit,
        consistency: Consistency::Linearizable,
    }
}

fn get(key: &str) -> Request {
    Request::Get {
        table: "kv".into(),
        key: key.into(),
        consistency: Consistency::Linearizable,
    }
}

/// The fragments of `table` this node keeps a replica of.
fn kept(m: &Member, table: &str) -> Vec<String> {
    m.node
        .tables()
        .local()
        .names()
        .into_iter()
        .filter(|n| fragments::parse(n).is_some_and(|(t, _, _)| t == table))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmented_table_spreads_its_keys_and_reads_and_commits_as_one_table() {
    let dir = TempDir::new("fragments");
    let nodes = three(&dir, LogMode::Ram).await;
    let all: Vec<&Member> = nodes.iter().collect();
    let (a, c) = (&nodes[0], &nodes[2]);
    let create = Request::CreateFragmented {
        spec: pool("kv", Kind::OrderedSet, &all),
        fragments: Fragments {
            count: 6,
            copies: 2,
        },
    };
    assert_eq!(a.node.table(create).await, Reply::Done);
    // Placed evenly: 6 fragments × 2 copies over 3 nodes, 4 on each.
    wait_for("each node keeps 4 fragments", || {
        nodes.iter().all(|m| kept(m, "kv").len() == 4)
    })
    .await;

    // Written from c, one key per commit, read back through a.
    let names: Vec<String> = (0..60).map(|k| format!("k{k:02}")).collect();
    for key in &names {
        let reply = ask(c, commit("kv", vec![], vec![put(key, &format!("v-{key}"))])).await;
        assert!(matches!(reply, Reply::Committed(_)), "{key}: {reply:?}");
    }
    for key in names.iter().step_by(7) {
        let got = value_and_version(&ask(a, get(key)).await);
        assert_eq!(got.map(|(v, _)| v), Some(format!("v-{key}")));
    }
    // Every fragment took some keys.
    let mut per_fragment = [0; 6];
    for key in &names {
        per_fragment[fragments::of_key(key.as_bytes(), 6) as usize] += 1;
    }
    assert!(per_fragment.iter().all(|n| *n > 0), "{per_fragment:?}");

    // Ranges merge the fragments in key order, page by page.
    assert_eq!(keys(&ask(a, range(b"", 0)).await), names);
    let mut paged = Vec::new();
    let mut from = Vec::new();
    loop {
        let reply = ask(a, range(&from, 7)).await;
        let page = keys(&reply);
        let Reply::Rows(rows) = reply else {
            unreachable!()
        };
        if let Some(last) = page.last() {
            from = last.clone().into_bytes();
            from.push(0);
        }
        paged.extend(page);
        if !rows.more {
            break;
        }
    }
    assert_eq!(paged, names, "every key once, in order");
    let prefix = Request::Prefix {
        table: "kv".into(),
        prefix: b"k1".to_vec(),
        limit: 0,
        consistency: Consistency::Dirty,
    };
    assert_eq!(keys(&ask(c, prefix).await), names[10..20]);
    let next = Request::Next {
        table: "kv".into(),
        key: b"k05".to_vec(),
        consistency: Consistency::Linearizable,
    };
    assert_eq!(keys(&ask(a, next).await), ["k06"]);
    let by_index = Request::IndexGet {
        table: "kv".into(),
        index: "parity".into(),
        value: b"0".to_vec(),
        limit: 0,
        consistency: Consistency::Linearizable,
    };
    let even: Vec<String> = names
        .iter()
        .filter(|k| k.as_bytes()[2] % 2 == 0)
        .cloned()
        .collect();
    assert_eq!(keys(&ask(a, by_index).await), even);
    match ask(a, Request::Info { table: "kv".into() }).await {
        Reply::Info(info) => {
            assert_eq!(info.records, 60);
            assert_eq!(info.spec.replicas.len(), 3, "the pool");
            assert_eq!(info.spec.kind, Kind::OrderedSet);
        }
        other => panic!("{other:?}"),
    }

    // Two keys in different fragments: a transaction on both commits in
    // both or in neither.
    let x = "k00";
    let y = names
        .iter()
        .find(|k| fragments::of_key(k.as_bytes(), 6) != fragments::of_key(x.as_bytes(), 6))
        .unwrap()
        .clone();
    let (_, vx) = value_and_version(&ask(a, get(x)).await).unwrap();
    let (_, vy) = value_and_version(&ask(a, get(&y)).await).unwrap();
    let stale = vec![
        Condition::Version {
            key: x.into(),
            version: vx,
        },
        Condition::Version {
            key: y.clone().into_bytes(),
            version: vy + 1_000,
        },
    ];
    let reply = ask(
        a,
        commit("kv", stale, vec![put(x, "moved"), put(&y, "moved")]),
    )
    .await;
    assert!(
        matches!(
            reply,
            Reply::Error(Error::Aborted {
                abort: Abort::Changed { .. },
                ..
            })
        ),
        "{reply:?}"
    );
    assert_eq!(value_and_version(&ask(a, get(x)).await).unwrap().0, "v-k00");
    let fresh = vec![
        Condition::Version {
            key: x.into(),
            version: vx,
        },
        Condition::Version {
            key: y.clone().into_bytes(),
            version: vy,
        },
    ];
    let reply = ask(
        c,
        commit("kv", fresh, vec![put(x, "moved"), put(&y, "moved")]),
    )
    .await;
    match &reply {
        Reply::Committed(indexes) => assert_eq!(indexes.len(), 1, "one index for the table"),
        other => panic!("{other:?}"),
    }
    for key in [x, y.as_str()] {
        assert_eq!(
            value_and_version(&ask(a, get(key)).await).unwrap().0,
            "moved"
        );
    }

    // What a fragmented table refuses, by name.
    let refused = [
        (
            Request::CreateFragmented {
                spec: pool("lww", Kind::Lww, &all),
                fragments: Fragments {
                    count: 2,
                    copies: 1,
                },
            },
            "conflict-free",
        ),
        (
            Request::CreateFragmented {
                spec: pool("wide", Kind::Set, &all),
                fragments: Fragments {
                    count: 2,
                    copies: 4,
                },
            },
            "copies",
        ),
        (
            Request::CreateFragmented {
                spec: pool("none", Kind::Set, &all),
                fragments: Fragments {
                    count: 0,
                    copies: 1,
                },
            },
            "fragments_max",
        ),
        (Request::Create(pool("x#1/2", Kind::Set, &all)), "fragment"),
        (
            Request::RemoveReplica {
                table: "kv".into(),
                node: "nowhere@127.0.0.1".into(),
            },
            "keeps no fragment",
        ),
    ];
    for (request, says) in refused {
        let reply = a.node.table(request.clone()).await;
        let Reply::Error(e) = &reply else {
            panic!("{request:?} was taken: {reply:?}");
        };
        assert!(format!("{e:?}").contains(says), "{request:?}: {e:?}");
    }
    assert!(matches!(
        a.node
            .table(Request::Create(pool("kv", Kind::Set, &all)))
            .await,
        Reply::Error(Error::Exists(_))
    ));

    // Deleted: every fragment goes, on every node.
    assert_eq!(
        a.node.table(Request::Delete { table: "kv".into() }).await,
        Reply::Done
    );
    wait_for("no fragment kept anywhere", || {
        nodes.iter().all(|m| kept(m, "kv").is_empty())
    })
    .await;
    assert!(matches!(
        c.node.table(get("k00")).await,
        Reply::Error(Error::NoTable(_))
    ));
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_a_fragmented_table() {
    use crate::tables::{molt_cli, table_cli};
    let cookie = std::str::from_utf8(molt_tests::COOKIE).unwrap();
    let dir = TempDir::new("fragments-cli");
    let nodes = three(&dir, LogMode::Ram).await;
    let a = molt_tests::address_of(&nodes[0].dist);
    let run = async |words: &[&str]| table_cli(&a, words, cookie).await;
    let (ok, out, err) = run(&[
        "create",
        "logs",
        "--kind",
        "ordered-set",
        "--replica",
        "all",
        "--fragments",
        "3",
        "--copies",
        "2",
    ])
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("created logs in 3 fragments of 2 copies each"),
        "{out}"
    );
    let (ok, out, err) = run(&["put", "logs", "today", "rain"]).await;
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(&["get", "logs", "today", "--linearizable"]).await;
    assert!(ok && out.contains("rain"), "{out}{err}");
    let (ok, out, err) = run(&["info", "logs"]).await;
    assert!(ok && out.contains("records     1\n"), "{out}{err}");
    // `molt tables` lists the table and its fragments.
    let (ok, out, err) = molt_cli(&["tables", "--node", a.as_str()], cookie).await;
    assert!(ok, "{err}");
    let listed: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        listed,
        ["logs", "logs#0/3", "logs#1/3", "logs#2/3"],
        "{out}"
    );
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_or_leaving_the_pool_moves_fragments_and_no_key_is_lost() {
    let dir = TempDir::new("fragments-move");
    let nodes = three(&dir, LogMode::Ram).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let create = Request::CreateFragmented {
        spec: pool("kv", Kind::OrderedSet, &[a, b]),
        fragments: Fragments {
            count: 3,
            copies: 2,
        },
    };
    assert_eq!(a.node.table(create).await, Reply::Done);
    wait_for("a and b keep every fragment, c none", || {
        kept(a, "kv").len() == 3 && kept(b, "kv").len() == 3 && kept(c, "kv").is_empty()
    })
    .await;
    let names: Vec<String> = (0..40).map(|k| format!("k{k:02}")).collect();
    for key in &names {
        let reply = ask(c, commit("kv", vec![], vec![put(key, &format!("v-{key}"))])).await;
        assert!(matches!(reply, Reply::Committed(_)), "{key}: {reply:?}");
    }
    let every_key = async |m: &Member| {
        assert_eq!(keys(&ask(m, range(b"", 0)).await), names);
        for key in names.iter().step_by(5) {
            let got = value_and_version(&ask(m, get(key)).await).map(|(v, _)| v);
            assert_eq!(got, Some(format!("v-{key}")), "{key}");
        }
    };

    // c joins the pool: over [a, b, c], fragment i on nodes i and i+1,
    // so two fragments on each node.
    let join = Request::AddReplica {
        table: "kv".into(),
        replica: Replica {
            node: c.dist.name().to_string(),
            copy: Copy::Ram,
        },
    };
    assert_eq!(ask(a, join).await, Reply::Done);
    wait_for("each node keeps two fragments", || {
        nodes.iter().all(|m| kept(m, "kv").len() == 2)
    })
    .await;
    every_key(b).await;

    // a leaves it: b and c keep all three.
    let leave = Request::RemoveReplica {
        table: "kv".into(),
        node: a.dist.name().to_string(),
    };
    assert_eq!(ask(b, leave).await, Reply::Done);
    wait_for("a keeps no fragment, b and c all three", || {
        kept(a, "kv").is_empty() && kept(b, "kv").len() == 3 && kept(c, "kv").len() == 3
    })
    .await;
    every_key(a).await;

    // One copy per fragment: not moved (a group of two would have to
    // lose the member it needs).
    let single = Request::CreateFragmented {
        spec: pool("single", Kind::Set, &[b]),
        fragments: Fragments {
            count: 2,
            copies: 1,
        },
    };
    assert_eq!(b.node.table(single).await, Reply::Done);
    let reply = b
        .node
        .table(Request::AddReplica {
            table: "single".into(),
            replica: Replica {
                node: c.dist.name().to_string(),
                copy: Copy::Ram,
            },
        })
        .await;
    assert!(
        matches!(&reply, Reply::Error(Error::Unsupported(why)) if why.contains("two copies or more")),
        "{reply:?}"
    );
    // Fewer nodes than copies: refused, nothing moves.
    let twice = Request::CreateFragmented {
        spec: pool("pairs", Kind::Set, &[b, c]),
        fragments: Fragments {
            count: 2,
            copies: 2,
        },
    };
    assert_eq!(b.node.table(twice).await, Reply::Done);
    let reply = b
        .node
        .table(Request::RemoveReplica {
            table: "pairs".into(),
            node: c.dist.name().to_string(),
        })
        .await;
    let Reply::Error(Error::BadSpec(why)) = &reply else {
        panic!("{reply:?}");
    };
    assert!(why.contains("1 nodes would be left for 2 copies"), "{why}");
    for n in nodes {
        n.stop().await;
    }
}
