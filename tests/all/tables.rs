//! Tables as guests use them: `table_call` and `table_reply` driven from a
//! puppet, with requests and replies of `molt_abi::table`.

use molt_abi::table::{
    Abort, Batch, Change, Condition, Consistency, Copy, Error, Event as TableEvent, Kind, Op,
    Replica, Reply, Request, Row, Rows, Spec,
};
use molt_abi::{codec, status};
use molt_tests::{Cmd, Event, Outcome, Puppet, SystemEvent, node};

/// Run `request` in `p` with a reply buffer of `out_cap` bytes.
async fn call_with(p: &mut Puppet, request: &Request, out_cap: u32) -> Reply {
    let cmd = Cmd::Table {
        request: codec::encode(request),
        out_cap,
    };
    match p.cmd(cmd).await {
        Outcome::Bytes(bytes) => codec::decode(&bytes).expect("the reply decodes"),
        other => panic!("{request:?}: expected a reply, got {other:?}"),
    }
}

pub(crate) async fn call(p: &mut Puppet, request: Request) -> Reply {
    call_with(p, &request, 64 * 1024).await
}

fn spec(name: &str, kind: Kind, indexes: &[&str]) -> Spec {
    Spec {
        name: name.to_string(),
        kind,
        indexes: indexes.iter().map(|i| i.to_string()).collect(),
        replicas: Vec::new(),
    }
}

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.into(),
        index_values: Vec::new(),
    }
}

fn commit(table: &str, conditions: Vec<Condition>, ops: Vec<Op>) -> Request {
    Request::Commit(vec![(table.to_string(), Batch { conditions, ops })])
}

fn get(table: &str, key: &str) -> Request {
    Request::Get {
        table: table.to_string(),
        key: key.into(),
        consistency: Consistency::Dirty,
    }
}

fn rows(reply: Reply) -> Rows {
    match reply {
        Reply::Rows(rows) => rows,
        other => panic!("expected rows, got {other:?}"),
    }
}

/// The keys and values of a read, as text.
fn pairs(reply: Reply) -> Vec<(String, String)> {
    rows(reply)
        .rows
        .into_iter()
        .flat_map(|Row { key, records, .. }| {
            let key = String::from_utf8(key).unwrap();
            records
                .into_iter()
                .map(move |r| (key.clone(), String::from_utf8(r.value).unwrap()))
        })
        .collect()
}

fn text_pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_table_is_created_written_read_and_deleted() {
    let node = node();
    let mut p = Puppet::spawn(&node).await;
    let create = Request::Create(spec("users", Kind::Set, &[]));
    assert_eq!(call(&mut p, create.clone()).await, Reply::Done);
    assert_eq!(
        call(&mut p, create).await,
        Reply::Error(Error::Exists("users".into()))
    );
    assert_eq!(
        call(&mut p, Request::List).await,
        Reply::Tables(vec!["users".into()])
    );
    // An absent key reads as one row without records, version 0.
    let empty = rows(call(&mut p, get("users", "ann")).await);
    assert_eq!(empty.rows[0].version, 0);
    assert!(empty.rows[0].records.is_empty());

    let first = call(&mut p, commit("users", vec![], vec![put("ann", "v1")])).await;
    let Reply::Committed(at) = first else {
        panic!("{first:?}")
    };
    call(&mut p, commit("users", vec![], vec![put("ann", "v2")])).await;
    let read = rows(call(&mut p, get("users", "ann")).await);
    assert_eq!(read.rows[0].records.len(), 1, "a set keeps one record");
    assert_eq!(read.rows[0].records[0].value, b"v2");
    assert_eq!(
        read.rows[0].version,
        at[0] + 1,
        "the version is the log index"
    );
    assert!(!read.stale, "a local table is never stale");

    let info = match call(
        &mut p,
        Request::Info {
            table: "users".into(),
        },
    )
    .await
    {
        Reply::Info(info) => info,
        other => panic!("{other:?}"),
    };
    assert_eq!((info.records, info.index), (1, at[0] + 1));
    assert_eq!(
        info.spec.replicas,
        vec![Replica {
            node: node.config().name.clone(),
            copy: Copy::Ram
        }]
    );

    let delete = Request::Delete {
        table: "users".into(),
    };
    assert_eq!(call(&mut p, delete).await, Reply::Done);
    assert_eq!(
        call(&mut p, get("users", "ann")).await,
        Reply::Error(Error::NoTable("users".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_make_a_batch_all_or_nothing() {
    let node = node();
    let mut p = Puppet::spawn(&node).await;
    call(&mut p, Request::Create(spec("t", Kind::Set, &[]))).await;
    let Reply::Committed(at) = call(&mut p, commit("t", vec![], vec![put("a", "1")])).await else {
        panic!()
    };
    // A stale version: nothing of the batch applies, b included.
    let stale = commit(
        "t",
        vec![Condition::Version {
            key: "a".into(),
            version: at[0] - 1,
        }],
        vec![put("a", "2"), put("b", "2")],
    );
    assert_eq!(
        call(&mut p, stale).await,
        Reply::Error(Error::Aborted {
            table: "t".into(),
            abort: Abort::Changed {
                key: "a".into(),
                now: Some(at[0])
            }
        })
    );
    assert!(
        rows(call(&mut p, get("t", "b")).await).rows[0]
            .records
            .is_empty()
    );
    // The version read, and b absent: it applies.
    let fresh = commit(
        "t",
        vec![
            Condition::Version {
                key: "a".into(),
                version: at[0],
            },
            Condition::Absent { key: "b".into() },
        ],
        vec![put("a", "2"), put("b", "2")],
    );
    assert!(matches!(call(&mut p, fresh).await, Reply::Committed(_)));
    // A fence: once token 5 has written, token 4 cannot.
    let fenced = |token| {
        commit(
            "t",
            vec![Condition::Fence {
                lock: "L".into(),
                token,
            }],
            vec![put("c", &token.to_string())],
        )
    };
    assert!(matches!(call(&mut p, fenced(5)).await, Reply::Committed(_)));
    assert_eq!(
        call(&mut p, fenced(4)).await,
        Reply::Error(Error::Aborted {
            table: "t".into(),
            abort: Abort::StaleFence {
                lock: "L".into(),
                token: 4,
                newest: 5
            }
        })
    );
    assert_eq!(
        pairs(call(&mut p, get("t", "c")).await),
        text_pairs(&[("c", "5")])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_over_two_tables_applies_to_both_or_neither() {
    let node = node();
    let mut p = Puppet::spawn(&node).await;
    call(&mut p, Request::Create(spec("stock", Kind::Set, &[]))).await;
    call(&mut p, Request::Create(spec("orders", Kind::Bag, &[]))).await;
    let order = |condition: Condition| {
        Request::Commit(vec![
            (
                "stock".to_string(),
                Batch {
                    conditions: vec![condition],
                    ops: vec![put("tea", "9")],
                },
            ),
            (
                "orders".to_string(),
                Batch {
                    conditions: vec![],
                    ops: vec![put("ann", "tea")],
                },
            ),
        ])
    };
    let refused = order(Condition::Version {
        key: "tea".into(),
        version: 99,
    });
    assert!(matches!(
        call(&mut p, refused).await,
        Reply::Error(Error::Aborted { table, .. }) if table == "stock"
    ));
    assert!(pairs(call(&mut p, get("orders", "ann")).await).is_empty());
    let taken = order(Condition::Absent { key: "tea".into() });
    assert!(matches!(call(&mut p, taken).await, Reply::Committed(i) if i.len() == 2));
    assert_eq!(
        pairs(call(&mut p, get("orders", "ann")).await),
        text_pairs(&[("ann", "tea")])
    );
    // A table named twice in one commit is a bad request, not a merge.
    let twice = Request::Commit(vec![
        ("stock".to_string(), Batch::default()),
        ("stock".to_string(), Batch::default()),
    ]);
    assert!(matches!(
        call(&mut p, twice).await,
        Reply::Error(Error::BadRequest(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bags_indexes_ranges_and_prefixes() {
    let node = node();
    let mut p = Puppet::spawn(&node).await;
    call(
        &mut p,
        Request::Create(spec("tags", Kind::Bag, &["colour"])),
    )
    .await;
    let tagged = |key: &str, value: &str, colour: &str| Op::Put {
        key: key.into(),
        value: value.into(),
        index_values: vec![colour.into()],
    };
    let ops = vec![
        tagged("k1", "apple", "red"),
        tagged("k1", "cherry", "red"),
        tagged("k1", "apple", "red"),
        tagged("k2", "lime", "green"),
        tagged("k3", "plum", "red"),
    ];
    call(&mut p, commit("tags", vec![], ops)).await;
    assert_eq!(
        pairs(call(&mut p, get("tags", "k1")).await),
        text_pairs(&[("k1", "cherry"), ("k1", "apple")]),
        "a bag keeps each value once, in write order (a rewrite moves it last)"
    );
    let red = Request::IndexGet {
        table: "tags".into(),
        index: "colour".into(),
        value: "red".into(),
        limit: 0,
        consistency: Consistency::Dirty,
    };
    assert_eq!(
        pairs(call(&mut p, red).await),
        text_pairs(&[("k1", "cherry"), ("k1", "apple"), ("k3", "plum")])
    );
    let unknown_index = Request::IndexGet {
        table: "tags".into(),
        index: "size".into(),
        value: "big".into(),
        limit: 0,
        consistency: Consistency::Dirty,
    };
    assert!(matches!(
        call(&mut p, unknown_index).await,
        Reply::Error(Error::BadRequest(_))
    ));
    // Missing index values are refused by name.
    assert!(matches!(
        call(&mut p, commit("tags", vec![], vec![put("k9", "x")])).await,
        Reply::Error(Error::Aborted {
            abort: Abort::IndexValues {
                given: 0,
                wanted: 1
            },
            ..
        })
    ));
    // Next needs an ordered set; a range reads any table in key order.
    let next_in_bag = Request::Next {
        table: "tags".into(),
        key: "k1".into(),
        consistency: Consistency::Dirty,
    };
    assert!(matches!(
        call(&mut p, next_in_bag).await,
        Reply::Error(Error::BadRequest(_))
    ));
    let range = |table: &str, from: &str, to: Option<&str>, limit| Request::Range {
        table: table.into(),
        from: from.into(),
        to: to.map(Into::into),
        limit,
        consistency: Consistency::Dirty,
    };
    assert_eq!(
        pairs(call(&mut p, range("tags", "k2", None, 0)).await).len(),
        2
    );
    call(&mut p, Request::Create(spec("log", Kind::OrderedSet, &[]))).await;
    let ops = ["b", "a/2", "a/1", "c", "a/3"]
        .iter()
        .map(|k| put(k, k))
        .collect();
    call(&mut p, commit("log", vec![], ops)).await;
    let all = rows(call(&mut p, range("log", "", None, 0)).await);
    let keys: Vec<_> = all.rows.iter().map(|r| r.key.clone()).collect();
    assert_eq!(keys, [&b"a/1"[..], b"a/2", b"a/3", b"b", b"c"]);
    assert!(!all.more);
    let two = rows(call(&mut p, range("log", "a/2", Some("c"), 2)).await);
    let keys: Vec<_> = two.rows.iter().map(|r| r.key.clone()).collect();
    assert_eq!(keys, [&b"a/2"[..], b"a/3"]);
    assert!(two.more, "a range cut at its limit says there is more");
    let next = Request::Next {
        table: "log".into(),
        key: "a/3".into(),
        consistency: Consistency::Dirty,
    };
    assert_eq!(pairs(call(&mut p, next).await), text_pairs(&[("b", "b")]));
    let prefix = Request::Prefix {
        table: "log".into(),
        prefix: "a/".into(),
        limit: 0,
        consistency: Consistency::Dirty,
    };
    assert_eq!(pairs(call(&mut p, prefix).await).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_longer_than_the_buffer_is_kept_for_table_reply() {
    let node = node();
    let mut p = Puppet::spawn(&node).await;
    call(&mut p, Request::Create(spec("big", Kind::Set, &[]))).await;
    let value = "x".repeat(10_000);
    call(&mut p, commit("big", vec![], vec![put("k", &value)])).await;
    // A 64-byte buffer: the puppet gets the length, then the reply.
    let reply = call_with(&mut p, &get("big", "k"), 64).await;
    assert_eq!(rows(reply).rows[0].records[0].value.len(), 10_000);
    // Taken once: a second table_reply has nothing.
    assert_eq!(
        p.cmd(Cmd::TableReply(1 << 20)).await,
        Outcome::Status(status::NO_MESSAGE)
    );
    // Garbage is BAD_ARG, and the node goes on.
    let garbage = Cmd::Table {
        request: vec![0xff; 7],
        out_cap: 64,
    };
    assert_eq!(p.cmd(garbage).await, Outcome::Status(status::BAD_ARG));
    assert_eq!(
        pairs(call(&mut p, get("big", "k")).await)[0].1.len(),
        10_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_elsewhere_need_coordination_and_say_so() {
    let node = node();
    let mut p = Puppet::spawn(&node).await;
    let mut far = spec("far", Kind::Set, &[]);
    far.replicas = vec![Replica {
        node: "other@host".into(),
        copy: Copy::Ram,
    }];
    assert!(matches!(
        call(&mut p, Request::Create(far)).await,
        Reply::Error(Error::Unsupported(why)) if why.contains("other nodes")
    ));
    let mut empty = spec("", Kind::Set, &[]);
    empty.name.clear();
    assert!(matches!(
        call(&mut p, Request::Create(empty)).await,
        Reply::Error(Error::BadSpec(_))
    ));
}

/// The next table event `p` reports.
pub(crate) async fn table_event(p: &mut Puppet) -> TableEvent {
    match p.event().await {
        Event::Got {
            system: Some(SystemEvent::Table(event)),
            ..
        } => event,
        other => panic!("expected a table event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_every_change_in_commit_order() {
    let node = node();
    let mut writer = Puppet::spawn(&node).await;
    let mut watcher = Puppet::spawn(&node).await;
    call(&mut writer, Request::Create(spec("feed", Kind::Set, &[]))).await;
    let subscribe = Request::Subscribe {
        table: "feed".into(),
    };
    assert_eq!(call(&mut watcher, subscribe.clone()).await, Reply::Done);
    // Twice is still one subscription.
    assert_eq!(call(&mut watcher, subscribe).await, Reply::Done);
    let mut indexes = Vec::new();
    for i in 0..20 {
        let ops = vec![put(&format!("k{i}"), "v")];
        let Reply::Committed(at) = call(&mut writer, commit("feed", vec![], ops)).await else {
            panic!()
        };
        indexes.push(at[0]);
    }
    let delete = commit("feed", vec![], vec![Op::Delete { key: "k0".into() }]);
    call(&mut writer, delete).await;
    for (i, at) in indexes.iter().enumerate() {
        assert_eq!(
            table_event(&mut watcher).await,
            TableEvent::Committed {
                table: "feed".into(),
                index: *at,
                changes: vec![Change::Put {
                    key: format!("k{i}").into_bytes(),
                    value: b"v".to_vec()
                }]
            }
        );
    }
    assert!(matches!(
        table_event(&mut watcher).await,
        TableEvent::Committed { changes, .. } if changes == vec![Change::Delete { key: b"k0".to_vec() }]
    ));
    // Unsubscribed: no more events; a second unsubscribe says so.
    let unsubscribe = Request::Unsubscribe {
        table: "feed".into(),
    };
    assert_eq!(call(&mut watcher, unsubscribe.clone()).await, Reply::Done);
    assert_eq!(
        call(&mut watcher, unsubscribe).await,
        Reply::Error(Error::NotSubscribed("feed".into()))
    );
    call(&mut writer, commit("feed", vec![], vec![put("late", "v")])).await;
    assert_eq!(
        watcher
            .try_event(std::time::Duration::from_millis(200))
            .await,
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_ends_is_dropped_and_a_deleted_table_says_so() {
    let node = node();
    let mut writer = Puppet::spawn(&node).await;
    let mut gone = Puppet::spawn(&node).await;
    let mut stays = Puppet::spawn(&node).await;
    call(&mut writer, Request::Create(spec("t", Kind::Set, &[]))).await;
    for p in [&mut gone, &mut stays] {
        let subscribe = Request::Subscribe { table: "t".into() };
        assert_eq!(call(p, subscribe).await, Reply::Done);
    }
    let info = |reply| match reply {
        Reply::Info(info) => info.subscribers,
        other => panic!("{other:?}"),
    };
    let asked = Request::Info { table: "t".into() };
    assert_eq!(info(call(&mut writer, asked.clone()).await), 2);
    let down = gone.ctl.monitor(gone.pid);
    gone.order(Cmd::ExitSelf("done".into()));
    molt_tests::down_reason(&mut gone.ctl, down).await;
    assert_eq!(
        info(call(&mut writer, asked).await),
        1,
        "an ended process's subscription goes with it"
    );
    let delete = Request::Delete { table: "t".into() };
    call(&mut writer, delete).await;
    assert!(matches!(
        table_event(&mut stays).await,
        TableEvent::Ended { reason, .. } if reason == "deleted"
    ));
}

/// A key of the cart example's tables, as the SDK encodes it.
fn user_key(user: &str) -> Vec<u8> {
    use molt_sdk::table::Key;
    user.to_string().encode()
}

fn cart_of(node: &molt_host::Node, user: &str) -> Option<cart::Cart> {
    let (records, _) = node.tables().local().get("carts", &user_key(user)).unwrap();
    records.first().map(|r| codec::decode(&r.value).unwrap())
}

fn stock_of(node: &molt_host::Node, item: &str) -> u32 {
    let (records, _) = node.tables().local().get("stock", &user_key(item)).unwrap();
    codec::decode(&records[0].value).unwrap()
}

fn args(words: &[&str]) -> Vec<u8> {
    codec::encode(&words.iter().map(|w| w.to_string()).collect::<Vec<_>>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transactions_lose_no_update() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    assert_eq!(
        molt_tests::run_to_exit(&mut me, "cart", args(&["setup"])).await,
        "normal"
    );
    // Four shoppers fill one cart at once, 25 adds each, each add a
    // read-modify-write transaction on the same key.
    let mut downs = Vec::new();
    for _ in 0..4 {
        let (_, down) = me
            .spawn("cart", args(&["shop", "ann", "tea", "25"]), false, true)
            .unwrap();
        downs.push(down.unwrap());
    }
    for down in downs {
        assert_eq!(molt_tests::down_reason(&mut me, down).await, "normal");
    }
    assert_eq!(cart_of(&node, "ann").unwrap().count("tea"), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_over_three_tables_is_all_or_nothing() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let mut run =
        async |words: &[&str]| molt_tests::run_to_exit(&mut me, "cart", args(words)).await;
    assert_eq!(run(&["setup", "5"]).await, "normal");
    assert_eq!(run(&["shop", "ann", "tea", "3"]).await, "normal");
    assert_eq!(run(&["shop", "ann", "cake", "7"]).await, "normal");
    assert_eq!(run(&["checkout", "ann"]).await, "out_of_stock: cake");
    // Nothing moved: tea's stock, ann's cart, no order.
    assert_eq!(stock_of(&node, "tea"), 5);
    assert_eq!(cart_of(&node, "ann").unwrap().count("cake"), 7);
    assert!(
        node.tables()
            .local()
            .get("orders", &user_key("ann"))
            .unwrap()
            .0
            .is_empty()
    );

    // A watcher sees bob's order commit.
    let mut watcher_mailbox = node.mailbox().unwrap();
    let (_, watching) = watcher_mailbox
        .spawn("cart", args(&["watch", "1"]), false, true)
        .unwrap();
    // The watcher subscribes before bob checks out: wait until it has.
    let subscribed = async {
        loop {
            if node.tables().local().info("orders").unwrap().subscribers == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(molt_tests::WAIT, subscribed)
        .await
        .expect("the watcher subscribes");
    let mut run =
        async |words: &[&str]| molt_tests::run_to_exit(&mut me, "cart", args(words)).await;
    assert_eq!(run(&["shop", "bob", "tea", "2"]).await, "normal");
    assert_eq!(run(&["checkout", "bob"]).await, "normal");
    assert_eq!(stock_of(&node, "tea"), 3);
    assert_eq!(cart_of(&node, "bob"), None, "the cart is emptied");
    let orders = node
        .tables()
        .local()
        .get("orders", &user_key("bob"))
        .unwrap()
        .0;
    let order: cart::Order = codec::decode(&orders[0].value).unwrap();
    assert_eq!(order.items, vec![("tea".to_string(), 2)]);
    assert_eq!(
        molt_tests::down_reason(&mut watcher_mailbox, watching.unwrap()).await,
        "normal",
        "the watcher got the order's event"
    );
}

/// `molt table --node TARGET WORDS...` with cookie `secret`; (success,
/// stdout, stderr).
pub(crate) async fn table_cli(
    target: &str,
    words: &[&str],
    secret: &str,
) -> (bool, String, String) {
    let mut args = vec!["table", "--node", target];
    args.extend_from_slice(words);
    molt_cli(&args, secret).await
}

/// `molt` with the cookie of [`dist_node_with`]'s node; (success, stdout,
/// stderr).
pub(crate) async fn molt_cli(args: &[&str], secret: &str) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let secret = secret.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(molt_tests::molt_bin())
            .args(&args)
            .env("MOLT_COOKIE", secret)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_describes_dumps_creates_and_deletes_tables() {
    const SECRET: &str = "tables-cli-cookie";
    let (a, da) = molt_tests::dist_node_with("tables-cli", SECRET.as_bytes(), |_| {}).await;
    let target = molt_tests::address_of(&da);
    let mut me = a.mailbox().unwrap();
    let mut run =
        async |words: &[&str]| molt_tests::run_to_exit(&mut me, "cart", args(words)).await;
    assert_eq!(run(&["setup", "5"]).await, "normal");
    assert_eq!(run(&["shop", "ann", "tea", "2"]).await, "normal");

    let (ok, out, err) = molt_cli(&["tables", "--node", &target], SECRET).await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("carts") && lines[0].contains("1 records"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("stock") && lines[2].contains("3 records"),
        "{out}"
    );

    let (ok, out, err) = molt_cli(&["table", "--node", &target, "info", "orders"], SECRET).await;
    assert!(ok, "{err}");
    assert!(out.contains("kind        bag"), "{out}");
    assert!(out.contains("(ram)"), "{out}");

    // Keys are the SDK's encodings: a string and its 0 terminator.
    let (ok, out, err) = molt_cli(&["table", "--node", &target, "dump", "stock"], SECRET).await;
    assert!(ok, "{err}");
    let keys: Vec<&str> = out.lines().map(|l| l.split("  ").next().unwrap()).collect();
    assert_eq!(keys, ["0x63616b6500", "0x6a616d00", "0x74656100"], "{out}");
    let (ok, out, _) = molt_cli(
        &["table", "--node", &target, "dump", "stock", "--limit", "1"],
        SECRET,
    )
    .await;
    assert!(ok && out.lines().count() == 1, "{out}");

    let create = [
        "table",
        "--node",
        &target,
        "create",
        "notes",
        "--kind",
        "ordered-set",
    ];
    let (ok, out, err) = molt_cli(&create, SECRET).await;
    assert!(ok && out.contains("created notes"), "{out}{err}");
    let (ok, _, err) = molt_cli(&create, SECRET).await;
    assert!(!ok && err.contains("table notes exists"), "{err}");
    let (ok, _, err) = molt_cli(&["table", "--node", &target, "delete", "notes"], SECRET).await;
    assert!(ok, "{err}");
    let (ok, _, err) = molt_cli(&["table", "--node", &target, "info", "notes"], SECRET).await;
    assert!(!ok && err.contains("no table notes"), "{err}");
    // A disc_only copy needs the node's data directory; this one has none.
    let on_disc = [
        "table",
        "--node",
        &target,
        "create",
        "big",
        "--copy",
        "disc_only",
    ];
    let (ok, _, err) = molt_cli(&on_disc, SECRET).await;
    assert!(
        !ok && err.contains("disc_only copies on a node without a data directory"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_the_table_as_it_was_and_a_wrong_file_is_refused() {
    const SECRET: &str = "tables-backup-cookie";
    let (a, da) = molt_tests::dist_node_with("tables-backup", SECRET.as_bytes(), |_| {}).await;
    let target = molt_tests::address_of(&da);
    let dir = molt_tests::TempDir::new("table-backup");
    let file = |name: &str| dir.path().join(name).display().to_string();
    let mut me = a.mailbox().unwrap();
    let mut run =
        async |words: &[&str]| molt_tests::run_to_exit(&mut me, "cart", args(words)).await;
    assert_eq!(run(&["setup"]).await, "normal");
    assert_eq!(run(&["shop", "ann", "tea", "3"]).await, "normal");
    let backup = |name: &str, to: &str| {
        let (target, name, to) = (target.clone(), name.to_string(), to.to_string());
        async move { molt_cli(&["table", "--node", &target, "backup", &name, &to], SECRET).await }
    };
    let (ok, out, err) = backup("carts", &file("carts.bak")).await;
    assert!(ok && out.contains("(1 records)"), "{out}{err}");
    assert!(backup("stock", &file("stock.bak")).await.0);

    // Changed after the backup; the restore brings the backup's state back.
    assert_eq!(run(&["shop", "ann", "tea", "4"]).await, "normal");
    assert_eq!(run(&["shop", "bob", "jam", "1"]).await, "normal");
    assert_eq!(cart_of(&a, "ann").unwrap().count("tea"), 7);
    let restore = |name: &str, from: &str, rename: bool| {
        let (target, name, from) = (target.clone(), name.to_string(), from.to_string());
        async move {
            let mut words = vec!["table", "--node", &target, "restore", &name, &from];
            if rename {
                words.push("--rename");
            }
            molt_cli(&words, SECRET).await
        }
    };
    let (ok, out, err) = restore("carts", &file("carts.bak"), false).await;
    assert!(ok, "{out}{err}");
    assert_eq!(cart_of(&a, "ann").unwrap().count("tea"), 3);
    assert_eq!(cart_of(&a, "bob"), None, "written after the backup: gone");

    // A backup of another table, a damaged file, a missing one: refused,
    // and the table is untouched.
    let (ok, _, err) = restore("carts", &file("stock.bak"), false).await;
    assert!(
        !ok && err.contains("is a backup of table stock, not carts"),
        "{err}"
    );
    let mut bytes = std::fs::read(file("carts.bak")).unwrap();
    let last = bytes.len() - 40;
    bytes[last] ^= 1;
    std::fs::write(file("damaged.bak"), &bytes).unwrap();
    let (ok, _, err) = restore("carts", &file("damaged.bak"), false).await;
    assert!(!ok && err.contains("damaged table backup"), "{err}");
    let (ok, _, err) = restore("carts", &file("none.bak"), false).await;
    assert!(!ok && err.contains("none.bak"), "{err}");
    assert_eq!(cart_of(&a, "ann").unwrap().count("tea"), 3);

    // Under another name, asked for: a new table.
    let (ok, out, err) = restore("carts_copy", &file("carts.bak"), true).await;
    assert!(ok, "{out}{err}");
    let (records, _) = a
        .tables()
        .local()
        .get("carts_copy", &user_key("ann"))
        .unwrap();
    assert_eq!(records.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_backs_up_every_table_and_restores_them_all() {
    const SECRET: &str = "tables-backup-all-cookie";
    let (a, da) = molt_tests::dist_node_with("tables-backup-all", SECRET.as_bytes(), |_| {}).await;
    let target = molt_tests::address_of(&da);
    let dir = molt_tests::TempDir::new("table-backup-all");
    let to = dir.path().join("all").display().to_string();
    let mut me = a.mailbox().unwrap();
    let mut run =
        async |words: &[&str]| molt_tests::run_to_exit(&mut me, "cart", args(words)).await;
    assert_eq!(run(&["setup"]).await, "normal");
    assert_eq!(run(&["shop", "ann", "tea", "3"]).await, "normal");
    let (ok, out, err) = molt_cli(&["table", "--node", &target, "backup-all", &to], SECRET).await;
    assert!(ok, "{out}{err}");
    for table in ["carts", "orders", "stock"] {
        assert!(
            out.contains(&format!("backed up {table} at index")),
            "{out}"
        );
        let file = dir.path().join("all").join(format!("{table}.moltbak"));
        assert!(file.exists(), "{} written", file.display());
    }
    assert!(out.contains("3 tables"), "{out}");

    // Changed after; every table comes back as it was.
    assert_eq!(run(&["shop", "ann", "tea", "4"]).await, "normal");
    assert_eq!(run(&["shop", "bob", "jam", "1"]).await, "normal");
    let stock_before = stock_of(&a, "jam");
    let (ok, out, err) = molt_cli(&["table", "--node", &target, "restore-all", &to], SECRET).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("restored carts at index"), "{out}");
    assert_eq!(cart_of(&a, "ann").unwrap().count("tea"), 3);
    assert_eq!(cart_of(&a, "bob"), None, "written after the backup: gone");
    assert!(stock_of(&a, "jam") >= stock_before, "the stock as it was");

    // A file that is no backup is named, the others restored, and the
    // command fails.
    std::fs::write(dir.path().join("all").join("junk.moltbak"), b"not a backup").unwrap();
    let (ok, out, err) = molt_cli(&["table", "--node", &target, "restore-all", &to], SECRET).await;
    assert!(!ok, "{out}");
    assert!(
        err.contains("junk.moltbak") && err.contains("1 of 4 tables failed"),
        "{err}"
    );
    assert!(out.contains("restored stock at index"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_every_table_brings_back_disc_only_and_oddly_named_tables() {
    let dir = molt_tests::TempDir::new("backup-all-disc-only");
    let node = node_with_data(dir.path());
    let control = molt_host::Control::local(node.clone());
    let here = node.config().name.clone();
    let mut p = Puppet::spawn(&node).await;
    let odd = "a/b c.é";
    for (name, copy) in [("big", Copy::DiscOnly), (odd, Copy::Ram)] {
        assert_eq!(
            call(&mut p, Request::Create(super::tables::here(name, copy))).await,
            Reply::Done
        );
        let ops = (0..20)
            .map(|i| Op::Put {
                key: format!("k{i:02}").into(),
                value: format!("v{i}").into(),
                index_values: vec![vec![i % 2]],
            })
            .collect();
        assert!(matches!(
            call(&mut p, commit(name, vec![], ops)).await,
            Reply::Committed(_)
        ));
    }
    let to = dir.path().join("backups");
    let done = control.table_backup_all(&here, &to).await.unwrap();
    let names: Vec<&str> = done.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a/b c.é", "big"]);
    assert!(done.iter().all(|(_, r)| r == &Ok((1, 20))), "{done:?}");
    assert!(to.join("a%2Fb%20c%2E%C3%A9.moltbak").exists());

    // Both changed, one deleted: the restore brings both back.
    let gone = vec![Op::Delete { key: "k03".into() }];
    call(&mut p, commit("big", vec![], gone)).await;
    call(&mut p, Request::Delete { table: odd.into() }).await;
    let done = control.table_restore_all(&here, &to).await.unwrap();
    assert!(done.iter().all(|(_, r)| r.is_ok()), "{done:?}");
    assert_eq!(pairs(call(&mut p, get("big", "k03")).await).len(), 1);
    assert_eq!(pairs(call(&mut p, get(odd, "k03")).await).len(), 1);
    let by_index = Request::IndexGet {
        table: "big".into(),
        index: "i".into(),
        value: vec![1],
        limit: 0,
        consistency: Consistency::Dirty,
    };
    assert_eq!(pairs(call(&mut p, by_index).await).len(), 10);
    // The disc_only table is still kept on disc only, and intact after a
    // restart.
    let info = node.tables().local().info("big").unwrap();
    assert_eq!(info.copy, Copy::DiscOnly);
    node.shutdown(std::time::Duration::from_secs(5)).await;
    drop(p);
    drop(node);
    let node = node_with_data(dir.path());
    let mut p = Puppet::spawn(&node).await;
    assert_eq!(pairs(call(&mut p, get("big", "k03")).await).len(), 1);
    assert_eq!(
        rows(call(&mut p, get("big", "k03")).await).rows[0].version,
        1,
        "versions as backed up"
    );
}

fn node_with_data(dir: &std::path::Path) -> molt_host::Node {
    molt_tests::start_node(molt_host::NodeConfig {
        data_dir: Some(dir.to_path_buf()),
        ..molt_tests::test_config()
    })
}

fn here(name: &str, copy: Copy) -> Spec {
    Spec {
        replicas: vec![Replica {
            node: String::new(),
            copy,
        }],
        ..spec(name, Kind::OrderedSet, &["i"])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disc_table_is_intact_after_a_restart_and_a_ram_table_is_gone() {
    intact_after_a_restart(Copy::Disc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disc_only_table_is_intact_after_a_restart_and_a_ram_table_is_gone() {
    intact_after_a_restart(Copy::DiscOnly).await;
}

/// A table kept as `kept` (a `disc` or `disc_only` copy) comes back
/// whole after its node restarts, indexes, fences and a restore
/// included; a `ram` one does not.
async fn intact_after_a_restart(kept: Copy) {
    let dir = molt_tests::TempDir::new(&format!("disc-tables-{kept:?}"));
    let node = node_with_data(dir.path());
    let mut p = Puppet::spawn(&node).await;
    for (name, copy) in [("kept", kept), ("lost", Copy::Ram)] {
        assert_eq!(
            call(&mut p, Request::Create(here(name, copy))).await,
            Reply::Done
        );
        let ops = (0..50)
            .map(|i| Op::Put {
                key: format!("k{i:02}").into(),
                value: format!("v{i}").into(),
                index_values: vec![vec![i % 3]],
            })
            .collect();
        assert!(matches!(
            call(&mut p, commit(name, vec![], ops)).await,
            Reply::Committed(_)
        ));
    }
    let fence = Condition::Fence {
        lock: "L".into(),
        token: 9,
    };
    let deletes = vec![Op::Delete { key: "k07".into() }];
    assert!(matches!(
        call(&mut p, commit("kept", vec![fence], deletes)).await,
        Reply::Committed(_)
    ));
    let before = rows(call(&mut p, get("kept", "k08")).await);
    // A backup, a write after it, and the backup restored over the disc
    // table: its file holds the restored table (checked after the restart).
    let backup = dir.path().join("kept.bak");
    node.tables().backup("kept", &backup).unwrap();
    let gone = vec![Op::Delete { key: "k08".into() }];
    assert!(matches!(
        call(&mut p, commit("kept", vec![], gone)).await,
        Reply::Committed(_)
    ));
    let covered = node.table_restore("kept", &backup, false).await.unwrap();
    assert_eq!(covered.index, before.index);
    node.shutdown(std::time::Duration::from_secs(5)).await;
    drop(p);
    drop(node);

    let node = node_with_data(dir.path());
    assert!(
        node.tables().failed().is_empty(),
        "{:?}",
        node.tables().failed()
    );
    let mut p = Puppet::spawn(&node).await;
    assert_eq!(
        call(&mut p, Request::List).await,
        Reply::Tables(vec!["kept".into()])
    );
    let info = match call(
        &mut p,
        Request::Info {
            table: "kept".into(),
        },
    )
    .await
    {
        Reply::Info(info) => info,
        other => panic!("{other:?}"),
    };
    assert_eq!((info.records, info.index), (49, before.index));
    assert_eq!(info.spec.replicas[0].copy, kept);
    assert_eq!(
        rows(call(&mut p, get("kept", "k08")).await).rows,
        before.rows,
        "version kept"
    );
    assert!(pairs(call(&mut p, get("kept", "k07")).await).is_empty());
    // Indexes are rebuilt, and the fence kept: token 8 is refused.
    let by_index = Request::IndexGet {
        table: "kept".into(),
        index: "i".into(),
        value: vec![1],
        limit: 0,
        consistency: Consistency::Dirty,
    };
    assert_eq!(pairs(call(&mut p, by_index).await).len(), 16, "k07 deleted");
    let stale = Condition::Fence {
        lock: "L".into(),
        token: 8,
    };
    assert!(matches!(
        call(&mut p, commit("kept", vec![stale], vec![])).await,
        Reply::Error(Error::Aborted {
            abort: Abort::StaleFence { .. },
            ..
        })
    ));
    // Deleted, its file goes: not there after another restart.
    assert_eq!(
        call(
            &mut p,
            Request::Delete {
                table: "kept".into()
            }
        )
        .await,
        Reply::Done
    );
    node.shutdown(std::time::Duration::from_secs(5)).await;
    drop(p);
    drop(node);
    let node = node_with_data(dir.path());
    assert!(node.tables().local().names().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_disc_file_takes_down_its_table_only() {
    damaged_file_takes_down_its_table_only(Copy::Disc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_disc_only_file_takes_down_its_table_only() {
    damaged_file_takes_down_its_table_only(Copy::DiscOnly).await;
}

async fn damaged_file_takes_down_its_table_only(copy: Copy) {
    let dir = molt_tests::TempDir::new(&format!("disc-damaged-{copy:?}"));
    let node = node_with_data(dir.path());
    let mut p = Puppet::spawn(&node).await;
    for name in ["good", "bad", "cut"] {
        call(&mut p, Request::Create(here(name, copy))).await;
        let ops = vec![Op::Put {
            key: "k".into(),
            value: "v".into(),
            index_values: vec![vec![0]],
        }];
        call(&mut p, commit(name, vec![], ops)).await;
    }
    node.shutdown(std::time::Duration::from_secs(5)).await;
    drop(p);
    drop(node);
    // Garbage over the whole of one table's file; another's cut in half.
    let tables = dir.path().join("tables");
    let files: Vec<_> = std::fs::read_dir(&tables)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 3);
    let file_of = |name: &[u8]| {
        files
            .iter()
            .find(|f| std::fs::read(f).unwrap().windows(3).any(|w| w == name))
            .expect("the file that names the table")
            .clone()
    };
    let (bad, cut) = (file_of(b"bad"), file_of(b"cut"));
    let len = std::fs::metadata(&bad).unwrap().len() as usize;
    std::fs::write(&bad, vec![0xA5; len]).unwrap();
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();

    let node = node_with_data(dir.path());
    let mut failed: Vec<_> = node
        .tables()
        .failed()
        .iter()
        .map(|(f, _)| f.clone())
        .collect();
    failed.sort();
    let mut expected = vec![bad.clone(), cut.clone()];
    expected.sort();
    assert_eq!(failed, expected, "each damaged file is named");
    // The control layer (and `molt tables`) shows them, with why.
    let control = molt_host::Control::local(node.clone());
    let shown = control.table_failures(&node.config().name).await.unwrap();
    assert_eq!(shown.len(), 2);
    assert!(
        shown
            .iter()
            .all(|(file, why)| file.ends_with(".redb") && !why.is_empty())
    );
    let mut p = Puppet::spawn(&node).await;
    assert_eq!(
        call(&mut p, Request::List).await,
        Reply::Tables(vec!["good".into()])
    );
    assert_eq!(pairs(call(&mut p, get("good", "k")).await).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_data_directory_refuses_disc_tables_clearly() {
    let node = node();
    let mut p = Puppet::spawn(&node).await;
    assert!(matches!(
        call(&mut p, Request::Create(here("d", Copy::Disc))).await,
        Reply::Error(Error::Unsupported(why)) if why.contains("data directory")
    ));
}

/// A small tmpfs mounted for a test, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// Mount a `bytes`-byte tmpfs at a fresh directory; `None` (and why)
    /// without root or mount.
    fn mount(tag: &str, bytes: u64) -> Result<SmallDisk, String> {
        let dir = std::env::temp_dir().join(format!("molt-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_its_disc_table_loudly_and_the_others_go_on() {
    full_disk_stops_its_table(Copy::Disc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_its_disc_only_table_loudly_and_the_others_go_on() {
    full_disk_stops_its_table(Copy::DiscOnly).await;
}

async fn full_disk_stops_its_table(copy: Copy) {
    let test = format!("a full disk under a {copy:?} table");
    let disk = match SmallDisk::mount(&format!("full-disk-{copy:?}"), 2 << 20) {
        Ok(disk) => disk,
        Err(why) => {
            println!("skipped: {test} needs root to mount a small tmpfs: {why}");
            return;
        }
    };
    let node = node_with_data(&disk.0);
    let mut p = Puppet::spawn(&node).await;
    assert_eq!(
        call(&mut p, Request::Create(here("big", copy))).await,
        Reply::Done
    );
    assert_eq!(
        call(&mut p, Request::Create(here("mem", Copy::Ram))).await,
        Reply::Done
    );
    // 64 KiB values until the disk is full: a commit then fails with the
    // file and why, and the table refuses what follows.
    let value = vec![7u8; 64 << 10];
    let mut failure = None;
    for i in 0..200 {
        let ops = vec![Op::Put {
            key: format!("k{i:03}").into(),
            value: value.clone(),
            index_values: vec![vec![0]],
        }];
        match call(&mut p, commit("big", vec![], ops)).await {
            Reply::Committed(_) => continue,
            Reply::Error(e) => {
                failure = Some((i, e));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let (at, error) = failure.expect("a 2 MiB disk fills within 200 × 64 KiB");
    let Error::Unavailable { table, why } = &error else {
        panic!("expected Unavailable, got {error:?}");
    };
    assert_eq!(table, "big");
    assert!(why.contains(".redb"), "the file is named: {why}");
    assert!(at > 0, "some commits fit first");
    let after = vec![Op::Delete { key: "k000".into() }];
    assert!(matches!(
        call(&mut p, commit("big", vec![], after)).await,
        Reply::Error(Error::Unavailable { .. })
    ));
    // The node and its other tables go on.
    let ops = vec![Op::Put {
        key: "m".into(),
        value: "v".into(),
        index_values: vec![vec![0]],
    }];
    assert!(matches!(
        call(&mut p, commit("mem", vec![], ops)).await,
        Reply::Committed(_)
    ));
    assert_eq!(pairs(call(&mut p, get("mem", "m")).await).len(), 1);
    node.shutdown(std::time::Duration::from_secs(5)).await;
    drop(p);
    drop(node);
    drop(disk);
}
