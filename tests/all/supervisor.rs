//! Supervisors (`molt_sdk::supervisor`): each restart strategy, restart
//! intensity, restart types, dynamic children, shutdown timeouts, nested
//! trees, and a supervisor that keeps its children across an upgrade.
//!
//! The supervisors are `sup-tree` processes whose children are `sup-worker`
//! servers; every worker start is reported to the test's mailbox, so a
//! restart is an event the test waits for.

use std::collections::HashMap;
use std::time::Duration;

use molt_abi::{Pid, Ref, codec, reason, tag};
use molt_host::{Filter, HostMailbox, Node};
use molt_sdk::supervisor::{ChildInfo, Restart, Strategy, SupCall, SupReply};
use molt_tests::*;
use sup_tree::{Kid, KidKind, TreeArgs};
use sup_worker::{WorkerArgs, WorkerEvent, WorkerMsg};

/// Worker starts come as `DATA` messages; replies and DOWNs stay queued.
fn data_only() -> Filter {
    Filter {
        tags: vec![tag::DATA],
        reference: None,
    }
}

fn worker(me: &HostMailbox, id: &str, restart: Restart) -> Kid {
    Kid {
        id: id.to_string(),
        restart,
        kind: KidKind::Worker {
            observer: me.pid(),
            ignore_shutdown: false,
            shutdown_ms: 1_000,
        },
    }
}

fn tree(strategy: Strategy, intensity: u32, children: Vec<Kid>) -> TreeArgs {
    TreeArgs {
        strategy,
        intensity,
        period_ms: 10_000,
        children,
    }
}

/// Start a supervisor monitored by `me`.
fn start(me: &mut HostMailbox, args: &TreeArgs) -> (Pid, Ref) {
    let (sup, watch) = me
        .spawn("sup-tree", codec::encode(args), false, true)
        .unwrap();
    (sup, watch.unwrap())
}

/// The next worker start: (id, pid).
async fn started(me: &mut HostMailbox) -> (String, Pid) {
    let m = me
        .recv_matching(&data_only(), WAIT)
        .await
        .expect("a worker start");
    let WorkerEvent::Started { id, pid } = codec::decode(&m.payload).unwrap();
    (id, pid)
}

/// The next `n` worker starts, by id.
async fn starts(me: &mut HostMailbox, n: usize) -> HashMap<String, Pid> {
    let mut all = HashMap::new();
    for _ in 0..n {
        let (id, pid) = started(me).await;
        assert!(all.insert(id.clone(), pid).is_none(), "{id} started twice");
    }
    all
}

/// No further worker start within [`QUIET`].
async fn no_more_starts(me: &mut HostMailbox) {
    if let Some(m) = me.recv_matching(&data_only(), QUIET).await {
        panic!(
            "unexpected start: {:?}",
            codec::decode::<WorkerEvent>(&m.payload)
        );
    }
}

fn tell(me: &mut HostMailbox, pid: Pid, msg: &WorkerMsg) {
    me.send(pid, tag::DATA, Ref::NONE, codec::encode(msg))
        .unwrap();
}

/// A supervisor call, as `molt_sdk::server::call` makes it.
async fn call(me: &mut HostMailbox, sup: Pid, req: &SupCall) -> SupReply {
    let watch = me.monitor(sup);
    me.send(sup, tag::CALL, watch, codec::encode(&(me.pid(), req)))
        .unwrap();
    let filter = Filter {
        tags: vec![tag::REPLY, tag::DOWN],
        reference: Some(watch),
    };
    let m = me.recv_matching(&filter, WAIT).await.expect("an answer");
    me.demonitor(watch, true);
    assert_eq!(m.tag, tag::REPLY, "the supervisor went down");
    codec::decode(&m.payload).unwrap()
}

async fn children(me: &mut HostMailbox, sup: Pid) -> Vec<ChildInfo> {
    match call(me, sup, &SupCall::WhichChildren).await {
        SupReply::Children(c) => c,
        other => panic!("{other:?}"),
    }
}

fn pid_of(children: &[ChildInfo], id: &str) -> Option<Pid> {
    children.iter().find(|c| c.id == id).and_then(|c| c.pid)
}

async fn wait_dead(node: &Node, pid: Pid) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while node.is_alive(pid) {
        assert!(tokio::time::Instant::now() < deadline, "{pid} still alive");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn abc(me: &HostMailbox) -> Vec<Kid> {
    ["a", "b", "c"]
        .iter()
        .map(|id| worker(me, id, Restart::Permanent))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_one_restarts_only_the_child_that_crashed() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let args = tree(Strategy::OneForOne, 3, abc(&me));
    let (sup, _) = start(&mut me, &args);
    let first = starts(&mut me, 3).await;
    tell(&mut me, first["b"], &WorkerMsg::Crash("b fails".into()));
    let (id, b2) = started(&mut me).await;
    assert_eq!(id, "b");
    assert_ne!(b2, first["b"]);
    no_more_starts(&mut me).await;
    let now = children(&mut me, sup).await;
    assert_eq!(pid_of(&now, "a"), Some(first["a"]));
    assert_eq!(pid_of(&now, "b"), Some(b2));
    assert_eq!(pid_of(&now, "c"), Some(first["c"]));
    assert!(node.is_alive(first["a"]) && node.is_alive(first["c"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_restarts_every_child() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let args = tree(Strategy::OneForAll, 3, abc(&me));
    let (sup, _) = start(&mut me, &args);
    let first = starts(&mut me, 3).await;
    tell(&mut me, first["b"], &WorkerMsg::Crash("b fails".into()));
    let second = starts(&mut me, 3).await;
    for id in ["a", "b", "c"] {
        assert_ne!(second[id], first[id], "{id} restarted");
        wait_dead(&node, first[id]).await;
    }
    no_more_starts(&mut me).await;
    let now = children(&mut me, sup).await;
    let order: Vec<_> = now.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(order, ["a", "b", "c"], "start order kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_for_one_restarts_the_child_and_those_after_it() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let args = tree(Strategy::RestForOne, 3, abc(&me));
    let (sup, _) = start(&mut me, &args);
    let first = starts(&mut me, 3).await;
    tell(&mut me, first["b"], &WorkerMsg::Crash("b fails".into()));
    let second = starts(&mut me, 2).await;
    assert!(second.contains_key("b") && second.contains_key("c"));
    no_more_starts(&mut me).await;
    wait_dead(&node, first["c"]).await;
    let now = children(&mut me, sup).await;
    assert_eq!(pid_of(&now, "a"), Some(first["a"]), "a is untouched");
    assert_eq!(pid_of(&now, "c"), Some(second["c"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_restarts_shut_the_supervisor_down() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let kids = vec![
        worker(&me, "a", Restart::Permanent),
        worker(&me, "b", Restart::Permanent),
    ];
    let (sup, sup_watch) = start(&mut me, &tree(Strategy::OneForOne, 2, kids));
    let first = starts(&mut me, 2).await;
    let mut a = first["a"];
    // Two restarts are within the intensity...
    for _ in 0..2 {
        tell(&mut me, a, &WorkerMsg::Crash("again".into()));
        let (id, next) = started(&mut me).await;
        assert_eq!(id, "a");
        a = next;
    }
    assert!(node.is_alive(sup));
    // ...the third is one too many.
    tell(&mut me, a, &WorkerMsg::Crash("again".into()));
    assert_eq!(down_reason(&mut me, sup_watch).await, reason::SHUTDOWN);
    no_more_starts(&mut me).await;
    wait_dead(&node, a).await;
    wait_dead(&node, first["b"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_and_temporary_children_on_normal_and_abnormal_exits() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let kids = vec![
        worker(&me, "transient", Restart::Transient),
        worker(&me, "temporary", Restart::Temporary),
    ];
    let (sup, _) = start(&mut me, &tree(Strategy::OneForOne, 5, kids));
    let first = starts(&mut me, 2).await;

    // A transient child that ends normally stays ended, spec kept.
    tell(
        &mut me,
        first["transient"],
        &WorkerMsg::Exit("normal".into()),
    );
    no_more_starts(&mut me).await;
    let now = children(&mut me, sup).await;
    assert_eq!(pid_of(&now, "transient"), None);
    assert!(now.iter().any(|c| c.id == "transient"));
    // It can be restarted by hand, and an abnormal exit restarts it.
    let SupReply::Started(t2) =
        call(&mut me, sup, &SupCall::RestartChild("transient".into())).await
    else {
        panic!("restart_child refused");
    };
    assert_eq!(started(&mut me).await, ("transient".to_string(), t2));
    tell(&mut me, t2, &WorkerMsg::Crash("abnormal".into()));
    assert_eq!(started(&mut me).await.0, "transient");

    // A temporary child is never restarted, and is forgotten.
    tell(
        &mut me,
        first["temporary"],
        &WorkerMsg::Crash("abnormal".into()),
    );
    no_more_starts(&mut me).await;
    let now = children(&mut me, sup).await;
    assert!(now.iter().all(|c| c.id != "temporary"), "{now:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_one_for_one_runs_dynamic_children_of_one_spec() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let template = worker(&me, "pool", Restart::Permanent);
    let (sup, _) = start(&mut me, &tree(Strategy::SimpleOneForOne, 5, vec![template]));
    assert!(children(&mut me, sup).await.is_empty());
    let mut pids = HashMap::new();
    for id in ["w1", "w2", "w3"] {
        let args = WorkerArgs {
            observer: me.pid(),
            id: id.to_string(),
            ignore_shutdown: false,
        };
        let req = SupCall::StartDynamic(codec::encode(&args));
        let SupReply::Started(pid) = call(&mut me, sup, &req).await else {
            panic!("start refused");
        };
        assert_eq!(started(&mut me).await, (id.to_string(), pid));
        pids.insert(id, pid);
    }
    // A crash restarts that child with its own arguments.
    tell(&mut me, pids["w2"], &WorkerMsg::Crash("w2 fails".into()));
    let (id, w2) = started(&mut me).await;
    assert_eq!(id, "w2");
    no_more_starts(&mut me).await;
    // Terminating one by pid removes it.
    assert_eq!(
        call(&mut me, sup, &SupCall::TerminatePid(pids["w1"])).await,
        SupReply::Done
    );
    assert!(!node.is_alive(pids["w1"]));
    let now = children(&mut me, sup).await;
    let live: Vec<_> = now.iter().filter_map(|c| c.pid).collect();
    assert_eq!(live.len(), 2);
    assert!(live.contains(&w2) && live.contains(&pids["w3"]));
    // Static-child requests do not apply.
    let refused = call(&mut me, sup, &SupCall::TerminateChild("pool".into())).await;
    assert!(matches!(refused, SupReply::Refused(_)), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_ignores_shutdown_is_killed_after_its_timeout() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let stubborn = Kid {
        id: "stubborn".into(),
        restart: Restart::Permanent,
        kind: KidKind::Worker {
            observer: me.pid(),
            ignore_shutdown: true,
            shutdown_ms: 200,
        },
    };
    let kids = vec![worker(&me, "polite", Restart::Permanent), stubborn];
    let (sup, _) = start(&mut me, &tree(Strategy::OneForOne, 3, kids));
    let first = starts(&mut me, 2).await;
    let polite = me.monitor(first["polite"]);
    let stubborn = me.monitor(first["stubborn"]);

    let began = std::time::Instant::now();
    let reply = call(&mut me, sup, &SupCall::TerminateChild("stubborn".into())).await;
    assert_eq!(reply, SupReply::Done);
    assert!(
        began.elapsed() >= Duration::from_millis(200),
        "it waited the timeout first"
    );
    assert_eq!(down_reason(&mut me, stubborn).await, reason::KILLED);
    assert_eq!(
        call(&mut me, sup, &SupCall::TerminateChild("polite".into())).await,
        SupReply::Done
    );
    assert_eq!(down_reason(&mut me, polite).await, reason::SHUTDOWN);
    no_more_starts(&mut me).await;
    assert!(children(&mut me, sup).await.iter().all(|c| c.pid.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_supervisors_restart_a_subtree_and_stop_as_a_tree() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let inner = tree(
        Strategy::OneForOne,
        3,
        vec![worker(&me, "leaf", Restart::Permanent)],
    );
    let kids = vec![
        Kid {
            id: "inner".into(),
            restart: Restart::Permanent,
            kind: KidKind::Tree(Box::new(inner)),
        },
        worker(&me, "sibling", Restart::Permanent),
    ];
    let (root, root_watch) = start(&mut me, &tree(Strategy::OneForOne, 3, kids));
    let first = starts(&mut me, 2).await;
    let inner_pid = pid_of(&children(&mut me, root).await, "inner").unwrap();

    // The inner supervisor dies: the root restarts it, and it its leaf.
    node.exit(inner_pid, reason::KILL);
    assert_eq!(started(&mut me).await.0, "leaf");
    wait_dead(&node, first["leaf"]).await;
    let inner2 = pid_of(&children(&mut me, root).await, "inner").unwrap();
    assert_ne!(inner2, inner_pid);
    assert!(node.is_alive(first["sibling"]));

    // Stopping the root stops the whole tree, children first.
    let leaf = pid_of(&children(&mut me, inner2).await, "leaf").unwrap();
    let leaf_watch = me.monitor(leaf);
    me.exit(root, reason::SHUTDOWN);
    assert_eq!(down_reason(&mut me, root_watch).await, reason::SHUTDOWN);
    assert_eq!(down_reason(&mut me, leaf_watch).await, reason::SHUTDOWN);
    wait_dead(&node, first["sibling"]).await;
    wait_dead(&node, inner2).await;
    no_more_starts(&mut me).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_keeps_its_children_across_an_upgrade() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let args = tree(Strategy::OneForOne, 3, abc(&me));
    let (sup, _) = start(&mut me, &args);
    let first = starts(&mut me, 3).await;
    let bytes = std::fs::read(guest_file("sup-tree")).unwrap();
    node.load(&with_version(&bytes, "sup-tree", "0.2.0"), "sup-tree")
        .unwrap();
    wait_for_version(&node, sup, "0.2.0").await;
    let now = children(&mut me, sup).await;
    for id in ["a", "b", "c"] {
        assert_eq!(pid_of(&now, id), Some(first[id]), "{id} kept");
    }
    // Still linked to its children, still supervising them.
    tell(
        &mut me,
        first["c"],
        &WorkerMsg::Crash("after the upgrade".into()),
    );
    assert_eq!(started(&mut me).await.0, "c");
    no_more_starts(&mut me).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_example_restarts_a_crashed_worker() {
    // examples/pool-demo checks each step itself and exits with a reason
    // saying which one failed.
    let node = node();
    let mut me = node.mailbox().unwrap();
    let args = codec::encode(&Vec::<String>::new());
    assert_eq!(
        run_to_exit(&mut me, "pool-demo", args).await,
        reason::NORMAL
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_entry_runs_a_tree_and_ends_with_it() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    // The tree gives up (intensity 0) at the first crash: it exits
    // `shutdown`, and the application returns normally.
    let args = tree(
        Strategy::OneForOne,
        0,
        vec![worker(&me, "a", Restart::Permanent)],
    );
    let (app, app_watch) = me
        .spawn("sup-app", codec::encode(&args), false, true)
        .unwrap();
    let (_, a) = started(&mut me).await;
    assert!(node.is_alive(app));
    tell(&mut me, a, &WorkerMsg::Crash("first and last".into()));
    assert_eq!(
        down_reason(&mut me, app_watch.unwrap()).await,
        reason::NORMAL
    );

    // A root that is killed takes the application down with its reason.
    let args = tree(
        Strategy::OneForOne,
        3,
        vec![worker(&me, "b", Restart::Permanent)],
    );
    let (_, app_watch) = me
        .spawn("sup-app", codec::encode(&args), false, true)
        .unwrap();
    let (_, b) = started(&mut me).await;
    let root = node
        .processes()
        .into_iter()
        .find(|p| p.module.as_ref().is_some_and(|(m, _)| m == "sup-tree"))
        .map(|p| p.pid)
        .unwrap();
    node.exit(root, reason::KILL);
    assert_eq!(
        down_reason(&mut me, app_watch.unwrap()).await,
        reason::KILLED
    );
    wait_dead(&node, b).await;
}
