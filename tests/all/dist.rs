//! Distribution: nodes on loopback, remote send, spawn, links and monitors
//! across nodes, node failure, authentication. Every node started here is
//! stopped when its test ends (its runtime ends with the test).

use std::net::UdpSocket;

use faulty::Fault;
use molt_abi::{Pid, Ref, codec, reason, status, tag};
use molt_host::SpawnError;
use molt_host::net::tls::TlsMode;
use molt_tests::{
    COOKIE, Cmd, Event, Outcome, Puppet, PuppetArgs, QUIET, SystemEvent, TICK, TestCa, WAIT,
    address_of, dist_node, dist_node_with, down_reason,
};

/// Wait until `dist` lists exactly `expected` (sorted) as its nodes.
async fn wait_for_nodes(dist: &molt_host::net::Distribution, expected: &[&str]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if dist.nodes() == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} sees {:?}, expected {expected:?}",
            dist.name(),
            dist.nodes()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A puppet on `node`, controlled by a mailbox there.
async fn puppet(node: &molt_host::Node) -> Puppet {
    Puppet::spawn(node).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_connect_and_ping() {
    let (_a, da) = dist_node("a").await;
    let (_b, db) = dist_node("b").await;
    da.join(&address_of(&db)).await.expect("a joins b");
    assert_eq!(da.nodes(), vec!["b@127.0.0.1".to_string()]);
    wait_for_nodes(&db, &["a@127.0.0.1"]).await;
    da.ping("b@127.0.0.1").await.expect("b answers a ping");
    db.ping("a@127.0.0.1").await.expect("a answers a ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_sends_keep_per_sender_order() {
    let (a, da) = dist_node("a").await;
    let (b, db) = dist_node("b").await;
    da.join(&address_of(&db)).await.unwrap();
    let mut receiver = puppet(&b).await;
    let mut s1 = puppet(&a).await;
    let mut s2 = puppet(&a).await;
    // Two senders on A interleave toward one receiver on B.
    let (n1, n2) = (400u32, 400u32);
    s1.ctl
        .send(
            s1.pid,
            tag::DATA,
            Ref::NONE,
            codec::encode(&Cmd::SendSeq {
                to: receiver.pid,
                tag: 60,
                count: n1,
            }),
        )
        .unwrap();
    s2.ctl
        .send(
            s2.pid,
            tag::DATA,
            Ref::NONE,
            codec::encode(&Cmd::SendSeq {
                to: receiver.pid,
                tag: 61,
                count: n2,
            }),
        )
        .unwrap();
    let (mut next1, mut next2) = (0u32, 0u32);
    while next1 + next2 < n1 + n2 {
        match receiver.event().await {
            Event::Got { tag, payload, .. } => {
                let n: u32 = codec::decode(&payload).unwrap();
                let next = if tag == 60 { &mut next1 } else { &mut next2 };
                assert_eq!(n, *next, "sender with tag {tag} out of order");
                *next += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(s1.event().await, Event::Done(Outcome::Ok));
    assert_eq!(s2.event().await, Event::Done(Outcome::Ok));
    let _ = b;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_spawn_runs_on_the_target_and_fails_clearly_for_unknown_modules() {
    let (a, da) = dist_node("a").await;
    let (b, db) = dist_node("b").await;
    da.join(&address_of(&db)).await.unwrap();
    let mut mailbox = a.mailbox().unwrap();
    let args = codec::encode(&PuppetArgs {
        controller: mailbox.pid(),
    });
    let (child, _) = da
        .spawn_from(&mut mailbox, "b@127.0.0.1", "puppet", args, false, false)
        .await
        .expect("remote spawn");
    assert_eq!(child.node, b.identity().0, "the child runs on b");
    assert!(b.is_alive(child));
    // The remote puppet reports to its controller on A.
    let m = mailbox
        .recv(WAIT)
        .await
        .expect("the remote puppet says it is ready");
    assert_eq!(
        codec::decode::<Event>(&m.payload).unwrap(),
        Event::Ready(child)
    );
    let err = da
        .spawn_from(
            &mut mailbox,
            "b@127.0.0.1",
            "no-such-module",
            vec![],
            false,
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(err, SpawnError::NoModule("no-such-module".into()));
    assert!(err.to_string().starts_with("undef"), "{err}");
    let err = da
        .spawn_from(
            &mut mailbox,
            "nobody@127.0.0.1",
            "puppet",
            vec![],
            false,
            false,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SpawnError::NoConnection(_)), "{err:?}");
}

/// `molt bench`'s two-node latency figure: a pinger on A times its round
/// trips with a ponger on B and reports their percentiles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_pinger_reports_its_round_trips_with_a_ponger_on_another_node() {
    use molt_tests::bench_wire::{BenchArgs, BenchMsg};
    let (a, da) = dist_node("a").await;
    let (b, db) = dist_node("b").await;
    da.join(&address_of(&db)).await.unwrap();
    let mut mailbox = a.mailbox().unwrap();
    let (ponger, _) = da
        .spawn_from(
            &mut mailbox,
            "b@127.0.0.1",
            "bench-guest",
            codec::encode(&BenchArgs::Ponger),
            false,
            false,
        )
        .await
        .expect("a ponger on b");
    let timed = BenchArgs::TimedPinger {
        ponger,
        rounds: 200,
        warmup: 20,
        report: mailbox.pid(),
    };
    let (pinger, watch) = mailbox
        .spawn("bench-guest", codec::encode(&timed), false, true)
        .unwrap();
    assert_eq!(pinger.node, a.identity().0, "the pinger runs on a");
    let report = mailbox.recv(WAIT).await.expect("the pinger reports");
    assert_eq!(report.tag, tag::DATA, "a report, not the pinger's end");
    let Ok(BenchMsg::Latency { p50_ns, p99_ns }) = codec::decode(&report.payload) else {
        panic!("not a latency report: {:?}", report.payload);
    };
    assert!(
        0 < p50_ns && p50_ns <= p99_ns && p99_ns < WAIT.as_nanos() as u64,
        "p50 {p50_ns} ns, p99 {p99_ns} ns"
    );
    assert_eq!(
        down_reason(&mut mailbox, watch.expect("monitored")).await,
        reason::NORMAL
    );
    assert!(b.is_alive(ponger), "the ponger goes on");
}

/// `molt bench`'s remote spawn figure: a process on A spawns children on
/// B one at a time, each greeting it before the next, and reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_spawner_spawns_children_on_another_node_one_at_a_time() {
    use molt_tests::bench_wire::{BenchArgs, BenchMsg};
    let (a, da) = dist_node("a").await;
    let (b, db) = dist_node("b").await;
    da.join(&address_of(&db)).await.unwrap();
    let spawned_before = b.stats().spawned;
    let mut mailbox = a.mailbox().unwrap();
    let spawner = BenchArgs::RemoteSpawner {
        node: "b@127.0.0.1".into(),
        count: 30,
        report: mailbox.pid(),
    };
    let (_, watch) = mailbox
        .spawn("bench-guest", codec::encode(&spawner), false, true)
        .unwrap();
    let report = mailbox.recv(WAIT).await.expect("the spawner reports");
    assert_eq!(report.tag, tag::DATA, "a report, not the spawner's end");
    let Ok(BenchMsg::Spawned { count, ns }) = codec::decode(&report.payload) else {
        panic!("not a spawn report: {:?}", report.payload);
    };
    assert_eq!(count, 30);
    assert!(0 < ns && ns < WAIT.as_nanos() as u64, "{ns} ns");
    assert_eq!(
        down_reason(&mut mailbox, watch.expect("monitored")).await,
        reason::NORMAL
    );
    assert_eq!(b.stats().spawned - spawned_before, 30, "all ran on b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_on_one_node_kills_a_linked_process_on_the_other() {
    let (a, da) = dist_node("a").await;
    let (b, db) = dist_node("b").await;
    da.join(&address_of(&db)).await.unwrap();
    let mut watcher = a.mailbox().unwrap();
    let mut plain = puppet(&a).await;
    let mut trapping = puppet(&a).await;
    assert_eq!(
        trapping.cmd(Cmd::TrapExit(true)).await,
        Outcome::Bool(false)
    );
    let mut victim = puppet(&b).await;
    assert_eq!(plain.cmd(Cmd::Link(victim.pid)).await, Outcome::Ok);
    assert_eq!(trapping.cmd(Cmd::Link(victim.pid)).await, Outcome::Ok);
    let watch = watcher.monitor(plain.pid);
    // Make sure both links reached B before the crash: a message from each
    // linker follows its link on their (sender, receiver) lane, so once the
    // victim has both messages it has both links.
    for linker in [&mut plain, &mut trapping] {
        let send = Cmd::Send {
            to: victim.pid,
            tag: 70,
            payload: vec![],
        };
        assert_eq!(linker.cmd(send).await, Outcome::Ok);
    }
    for _ in 0..2 {
        assert!(matches!(victim.event().await, Event::Got { tag: 70, .. }));
    }
    victim
        .ctl
        .send(
            victim.pid,
            tag::DATA,
            Ref::NONE,
            codec::encode(&Cmd::Panic("remote boom".into())),
        )
        .unwrap();
    let why = down_reason(&mut watcher, watch).await;
    assert!(why.starts_with("panic: remote boom"), "{why}");
    match trapping.event().await {
        Event::Got {
            system: Some(SystemEvent::Exit { from, reason }),
            ..
        } => {
            assert_eq!(from, victim.pid);
            assert!(reason.starts_with("panic: remote boom"), "{reason}");
        }
        other => panic!("expected an EXIT, got {other:?}"),
    }
    let _ = b;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_work_across_nodes() {
    let (a, da) = dist_node("a").await;
    let (b, db) = dist_node("b").await;
    da.join(&address_of(&db)).await.unwrap();
    let mut watcher = a.mailbox().unwrap();
    let target = puppet(&b).await;
    let r = watcher.monitor(target.pid);
    // A remote process that does not exist: DOWN noproc from the other node.
    let gone = molt_tests::dead_pid(&b);
    let r_gone = watcher.monitor(gone);
    assert_eq!(down_reason(&mut watcher, r_gone).await, reason::NOPROC);
    b.exit(target.pid, "shutdown");
    assert_eq!(down_reason(&mut watcher, r).await, "shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_node_fires_links_and_monitors_with_noconnection() {
    let (a, da) = dist_node("a").await;
    let (b, db) = dist_node("b").await;
    da.join(&address_of(&db)).await.unwrap();
    let mut watcher = a.mailbox().unwrap();
    let mut linked = puppet(&a).await;
    assert_eq!(linked.cmd(Cmd::TrapExit(true)).await, Outcome::Bool(false));
    let remote = puppet(&b).await;
    assert_eq!(linked.cmd(Cmd::Link(remote.pid)).await, Outcome::Ok);
    let r = watcher.monitor(remote.pid);
    da.monitor_node("b@127.0.0.1", watcher.pid());
    let started = std::time::Instant::now();
    db.shutdown();
    assert_eq!(down_reason(&mut watcher, r).await, reason::NOCONNECTION);
    match linked.event().await {
        Event::Got {
            system: Some(SystemEvent::Exit { from, reason: why }),
            ..
        } => {
            assert_eq!((from, why.as_str()), (remote.pid, reason::NOCONNECTION));
        }
        other => panic!("expected EXIT noconnection, got {other:?}"),
    }
    assert_eq!(molt_tests::nodedown(&mut watcher).await, "b@127.0.0.1");
    assert!(
        started.elapsed() < TICK * 2,
        "noticed after {:?}",
        started.elapsed()
    );
    assert!(da.nodes().is_empty());
    let _ = b;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_a_full_mesh() {
    let (_a, da) = dist_node("a").await;
    let (_b, db) = dist_node("b").await;
    let (_c, dc) = dist_node("c").await;
    da.join(&address_of(&db)).await.unwrap();
    dc.join(&address_of(&db)).await.unwrap();
    wait_for_nodes(&da, &["b@127.0.0.1", "c@127.0.0.1"]).await;
    wait_for_nodes(&dc, &["a@127.0.0.1", "b@127.0.0.1"]).await;
    wait_for_nodes(&db, &["a@127.0.0.1", "c@127.0.0.1"]).await;
}

/// Two nodes that connect to each other at the same moment (as two
/// nodes do that each learn of the other from a third) end with one
/// connection between them, the same at both ends: a second one kept
/// at one end only would stay open and refuse every new connection
/// once the other was gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_connecting_to_each_other_at_once_keep_one_connection() {
    for _ in 0..8 {
        let (_a, da) = dist_node("a").await;
        let (_b, db) = dist_node("b").await;
        let (to_b, to_a) = (address_of(&db), address_of(&da));
        let (ab, ba) = tokio::join!(da.join(&to_b), db.join(&to_a));
        ab.expect("a joins b");
        ba.expect("b joins a");
        wait_for_nodes(&da, &["b@127.0.0.1"]).await;
        wait_for_nodes(&db, &["a@127.0.0.1"]).await;
        crate::coord::wait_for("one open connection at each end", || {
            da.open_connections() == 1 && db.open_connections() == 1
        })
        .await;
        da.ping("b@127.0.0.1").await.expect("b answers a ping");
        db.ping("a@127.0.0.1").await.expect("a answers a ping");
        da.shutdown();
        db.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cookie_is_refused_on_both_sides() {
    let (_a, da) = dist_node("a").await;
    let (_b, db) = dist_node_with("b", b"not-the-cookie", |_| {}).await;
    let err = db.join(&address_of(&da)).await.unwrap_err();
    assert!(err.to_string().contains("cookie"), "{err}");
    assert!(da.nodes().is_empty() && db.nodes().is_empty());
    let _ = COOKIE;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_do_not_disturb_a_node() {
    let (_a, da) = dist_node("a").await;
    let (_b, db) = dist_node("b").await;
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for len in [0usize, 1, 7, 40, 1200, 1500, 9000] {
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = socket.send_to(&junk, da.local_addr());
    }
    db.join(&address_of(&da))
        .await
        .expect("a still accepts nodes");
    db.ping("a@127.0.0.1").await.expect("and answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_is_a_new_incarnation() {
    let (a, da) = dist_node("a").await;
    let (b, db) = dist_node("b").await;
    da.join(&address_of(&db)).await.unwrap();
    let old = puppet(&b).await.pid;
    db.shutdown();
    drop(db);
    drop(b);
    wait_for_nodes(&da, &[]).await;
    // B comes back under the same name (a new incarnation).
    let (b2, db2) = dist_node("b").await;
    da.join(&address_of(&db2)).await.expect("the new b joins");
    assert_eq!(b2.identity().0, old.node, "same name, same node id");
    assert_ne!(b2.identity().1, old.incarnation, "a new incarnation");
    // A pid of the old incarnation names no process of the new one.
    let mut watcher = a.mailbox().unwrap();
    let r = watcher.monitor(old);
    assert_eq!(down_reason(&mut watcher, r).await, reason::NOPROC);
    let fresh = puppet(&b2).await;
    let r = watcher.monitor(fresh.pid);
    // Sent by the watcher, the kill follows the monitor on their lane.
    watcher.exit(fresh.pid, "kill");
    assert_eq!(down_reason(&mut watcher, r).await, reason::KILLED);
}

// ---- The distribution API from a guest (the SDK through `puppet`) ----

const A: &str = "a@127.0.0.1";
const B: &str = "b@127.0.0.1";
const C: &str = "c@127.0.0.1";
const NOBODY: &str = "nobody@127.0.0.1";

/// The NODEDOWN a puppet reports, or a panic.
async fn nodedown_of(p: &mut Puppet) -> String {
    match p.event().await {
        Event::Got {
            tag: t,
            system: Some(SystemEvent::NodeDown { node }),
            payload,
            ..
        } => {
            assert_eq!(t, tag::NODEDOWN);
            assert_eq!(payload, node.as_bytes());
            node
        }
        other => panic!("expected NODEDOWN, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_sees_its_node_the_cluster_and_pings() {
    let (a, da) = dist_node("a").await;
    let (_b, db) = dist_node("b").await;
    let (_c, dc) = dist_node("c").await;
    da.join(&address_of(&db)).await.unwrap();
    dc.join(&address_of(&db)).await.unwrap();
    wait_for_nodes(&da, &[B, C]).await;
    let mut p = puppet(&a).await;
    assert_eq!(p.cmd(Cmd::NodeName).await, Outcome::Text(A.into()));
    assert_eq!(
        p.cmd(Cmd::Nodes).await,
        Outcome::Names(vec![B.into(), C.into()])
    );
    assert_eq!(p.cmd(Cmd::Ping(B.into())).await, Outcome::Bool(true));
    assert_eq!(p.cmd(Cmd::Ping(A.into())).await, Outcome::Bool(true));
    assert_eq!(p.cmd(Cmd::Ping(NOBODY.into())).await, Outcome::Bool(false));
    assert_eq!(
        p.cmd(Cmd::Ping("not a node".into())).await,
        Outcome::Bool(false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_spawns_on_another_node() {
    let (a, da) = dist_node("a").await;
    let (b, db) = dist_node("b").await;
    da.join(&address_of(&db)).await.unwrap();
    let mut p = puppet(&a).await;
    let mut ctl = a.mailbox().unwrap();
    let args = codec::encode(&PuppetArgs {
        controller: ctl.pid(),
    });
    let spawn = |node: &str, module: &str| Cmd::SpawnOn {
        node: node.into(),
        module: module.into(),
        args: args.clone(),
        link: false,
        monitor: false,
    };
    let Outcome::Pid(child) = p.cmd(spawn(B, "puppet")).await else {
        panic!("spawn_on b failed");
    };
    assert_eq!(child.node, b.identity().0, "the child runs on b");
    assert!(b.is_alive(child));
    let ready = ctl.recv(WAIT).await.expect("the child reports to a");
    assert_eq!(
        codec::decode::<Event>(&ready.payload).unwrap(),
        Event::Ready(child)
    );
    // This node's own name spawns here.
    let Outcome::Pid(local) = p.cmd(spawn(A, "puppet")).await else {
        panic!("spawn_on a (itself) failed");
    };
    assert_eq!(local.node, a.identity().0);
    assert!(a.is_alive(local));
    assert_eq!(
        p.cmd(spawn(B, "no-such-module")).await,
        Outcome::Status(status::NO_MODULE)
    );
    assert_eq!(
        p.cmd(spawn(NOBODY, "puppet")).await,
        Outcome::Status(status::NOCONNECTION)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_link_on_brings_a_remote_crash_home() {
    let (a, da) = dist_node("a").await;
    let (_b, db) = dist_node("b").await;
    da.join(&address_of(&db)).await.unwrap();
    let mut watcher = a.mailbox().unwrap();
    let mut parent = puppet(&a).await;
    let watch = watcher.monitor(parent.pid);
    // The parent may die before it answers: order, then watch.
    parent.order(Cmd::SpawnOn {
        node: B.into(),
        module: "faulty".into(),
        args: codec::encode(&Fault::Panic("remote boom".into())),
        link: true,
        monitor: false,
    });
    let why = down_reason(&mut watcher, watch).await;
    assert!(why.starts_with("panic: remote boom"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_monitor_on_reports_the_remote_exit() {
    let (a, da) = dist_node("a").await;
    let (b, db) = dist_node("b").await;
    da.join(&address_of(&db)).await.unwrap();
    let mut p = puppet(&a).await;
    let outcome = p
        .cmd(Cmd::SpawnOn {
            node: B.into(),
            module: "faulty".into(),
            args: codec::encode(&Fault::Panic("watched boom".into())),
            link: false,
            monitor: true,
        })
        .await;
    let Outcome::PidRef(child, r) = outcome else {
        panic!("expected a pid and a reference, got {outcome:?}");
    };
    assert_eq!(child.node, b.identity().0);
    match p.event().await {
        Event::Got {
            reference,
            system:
                Some(SystemEvent::Down {
                    reference: down_ref,
                    pid,
                    reason: why,
                }),
            ..
        } => {
            assert_eq!((reference, down_ref, pid), (Some(r), r, child));
            assert!(why.starts_with("panic: watched boom"), "{why}");
        }
        other => panic!("expected DOWN, got {other:?}"),
    }
    // The parent is unharmed: the monitor is one-way.
    assert_eq!(p.cmd(Cmd::IsAlive(p.pid)).await, Outcome::Bool(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_sends_to_a_name_on_another_node() {
    let (a, da) = dist_node("a").await;
    let (b, db) = dist_node("b").await;
    da.join(&address_of(&db)).await.unwrap();
    let mut far = puppet(&b).await;
    assert_eq!(far.cmd(Cmd::Register("svc".into())).await, Outcome::Ok);
    let mut near = puppet(&a).await;
    assert_eq!(near.cmd(Cmd::Register("svc".into())).await, Outcome::Ok);
    let mut p = puppet(&a).await;
    let send = |node: &str, name: &str, payload: &[u8]| Cmd::SendNamedOn {
        node: node.into(),
        name: name.into(),
        tag: 77,
        payload: payload.to_vec(),
    };
    assert_eq!(p.cmd(send(B, "svc", b"to b")).await, Outcome::Ok);
    assert_eq!(p.cmd(send(A, "svc", b"to a")).await, Outcome::Ok);
    for (target, expected) in [(&mut far, b"to b"), (&mut near, b"to a")] {
        match target.event().await {
            Event::Got {
                tag: t, payload, ..
            } => {
                assert_eq!((t, payload.as_slice()), (77, &expected[..]));
            }
            other => panic!("expected the named message, got {other:?}"),
        }
    }
    // Here an unknown name is an error; there it is dropped, as in Erlang.
    assert_eq!(
        p.cmd(send(A, "nobody", b"x")).await,
        Outcome::Status(status::NOT_REGISTERED)
    );
    assert_eq!(p.cmd(send(B, "nobody", b"x")).await, Outcome::Ok);
    assert_eq!(
        p.cmd(send(NOBODY, "svc", b"x")).await,
        Outcome::Status(status::NOCONNECTION)
    );
    let reserved = Cmd::SendNamedOn {
        node: B.into(),
        name: "svc".into(),
        tag: tag::EXIT,
        payload: vec![],
    };
    assert_eq!(p.cmd(reserved).await, Outcome::Status(status::BAD_ARG));
    // Nothing else reached the registered puppets.
    assert_eq!(far.try_event(molt_tests::QUIET).await, None);
    let _ = b;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_node_delivers_nodedown() {
    let (a, da) = dist_node("a").await;
    let (_b, db) = dist_node("b").await;
    da.join(&address_of(&db)).await.unwrap();
    let mut p = puppet(&a).await;
    let mut off = puppet(&a).await;
    // Not connected: NODEDOWN at once.
    assert_eq!(
        p.cmd(Cmd::MonitorNode(NOBODY.into(), true)).await,
        Outcome::Ok
    );
    assert_eq!(nodedown_of(&mut p).await, NOBODY);
    // Its own node never goes down under it.
    assert_eq!(p.cmd(Cmd::MonitorNode(A.into(), true)).await, Outcome::Ok);
    assert_eq!(p.cmd(Cmd::MonitorNode(B.into(), true)).await, Outcome::Ok);
    assert_eq!(off.cmd(Cmd::MonitorNode(B.into(), true)).await, Outcome::Ok);
    assert_eq!(
        off.cmd(Cmd::MonitorNode(B.into(), false)).await,
        Outcome::Ok
    );
    let started = std::time::Instant::now();
    db.shutdown();
    assert_eq!(nodedown_of(&mut p).await, B);
    assert!(
        started.elapsed() < TICK * 2,
        "noticed after {:?}",
        started.elapsed()
    );
    // One NODEDOWN per monitor; none for the one turned off, none for a.
    assert_eq!(p.try_event(molt_tests::QUIET).await, None);
    assert_eq!(off.try_event(molt_tests::QUIET).await, None);
    // The puppet still takes commands after its NODEDOWNs.
    assert_eq!(p.cmd(Cmd::Nodes).await, Outcome::Names(vec![]));
    assert_eq!(p.cmd(Cmd::Ping(B.into())).await, Outcome::Bool(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_a_running_node_over_an_authenticated_channel() {
    let secret = "cli-test-cookie";
    let (a, da) = molt_tests::dist_node_with("a", secret.as_bytes(), |_| {}).await;
    let (_b, db) = molt_tests::dist_node_with("b", secret.as_bytes(), |_| {}).await;
    da.join(&address_of(&db)).await.unwrap();
    let target = address_of(&da);
    let cli = move |args: Vec<String>, cookie: &'static str| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
            let out = std::process::Command::new(molt_tests::molt_bin())
                .args(&args)
                .env("MOLT_COOKIE", cookie)
                .output()
                .expect("running molt");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (
                out.status.success(),
                text,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let arg = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();

    let (ok, out, err) = cli(arg(&["nodes", "--node", &target]), secret)
        .await
        .unwrap();
    assert!(ok, "{err}");
    assert_eq!(
        out, "a@127.0.0.1\nb@127.0.0.1\n",
        "the CLI itself is hidden"
    );

    let (ok, out, err) = cli(arg(&["ping", "--node", &target]), secret)
        .await
        .unwrap();
    assert!(ok && out.starts_with("pong from a@127.0.0.1"), "{out}{err}");

    let (ok, out, err) = cli(arg(&["spawn", "--node", &target, "counter"]), secret)
        .await
        .unwrap();
    assert!(ok, "{err}");
    let spawned = out.trim().to_string();
    assert!(
        a.processes().iter().any(|p| p.pid.to_string() == spawned),
        "{spawned} runs on a"
    );

    let (ok, out, err) = cli(arg(&["ps", "--node", &target]), secret).await.unwrap();
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&spawned) && l.contains("counter")),
        "{out}"
    );

    // `molt send` reaches a registered process.
    let mut p = Puppet::spawn(&a).await;
    assert_eq!(p.cmd(Cmd::Register("inbox".into())).await, Outcome::Ok);
    let (ok, _, err) = cli(arg(&["send", "--node", &target, "inbox", "hello"]), secret)
        .await
        .unwrap();
    assert!(ok, "{err}");
    match p.event().await {
        Event::Got { payload, .. } => {
            assert_eq!(codec::decode::<String>(&payload).unwrap(), "hello")
        }
        other => panic!("expected the CLI's message, got {other:?}"),
    }

    // `molt load` pushes a module the node does not have.
    let dir = std::env::temp_dir().join(format!("molt-test-{}-load", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pushed_echo.wasm");
    std::fs::write(&file, molt_tests::wat_fixture("echo.wat")).unwrap();
    assert!(a.code().current("pushed-echo").is_none());
    let path = file.to_str().unwrap().to_string();
    let (ok, out, err) = cli(arg(&["load", "--node", &target, &path]), secret)
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(ok, "{err}");
    assert!(
        out.starts_with("pushed-echo sha256:") && out.contains("loaded on a@127.0.0.1"),
        "{out}"
    );
    assert!(
        a.code().current("pushed-echo").is_some(),
        "the node has it now"
    );

    // Without the cookie there is no way in.
    let (ok, out, _) = cli(arg(&["ping", "--node", &target]), "wrong")
        .await
        .unwrap();
    assert!(!ok && out.contains("pang"), "{out}");
    let (ok, _, err) = cli(arg(&["ps", "--node", &target]), "wrong").await.unwrap();
    assert!(!ok && err.contains("cookie"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_detected_within_the_tick() {
    let secret = "kill-test-cookie";
    let (a, da) = molt_tests::dist_node_with("a", secret.as_bytes(), |_| {}).await;
    let tick_ms = TICK.as_millis().to_string();
    let puppet_wasm = molt_tests::guests_dir().join("puppet.wasm");
    let (child, addr) = molt_tests::ChildNode::start(
        &[
            "--name".as_ref(),
            "b".as_ref(),
            "--tick-ms".as_ref(),
            tick_ms.as_ref(),
            "--load".as_ref(),
            puppet_wasm.as_os_str(),
        ],
        secret,
    )
    .await;
    da.join(&format!("b@{addr}"))
        .await
        .expect("a joins the child node");

    let mut watcher = a.mailbox().unwrap();
    let args = codec::encode(&PuppetArgs {
        controller: watcher.pid(),
    });
    let (remote, r) = da
        .spawn_from(&mut watcher, "b@127.0.0.1", "puppet", args, false, true)
        .await
        .expect("a puppet on the child node");
    let ready = watcher
        .recv(WAIT)
        .await
        .expect("the remote puppet is ready");
    assert_eq!(
        codec::decode::<Event>(&ready.payload).unwrap(),
        Event::Ready(remote)
    );
    da.monitor_node("b@127.0.0.1", watcher.pid());

    // SIGKILL: no goodbye on the wire; only the keep-alive tick can tell.
    let started = std::time::Instant::now();
    drop(child);
    assert_eq!(
        down_reason(&mut watcher, r.unwrap()).await,
        reason::NOCONNECTION
    );
    assert_eq!(molt_tests::nodedown(&mut watcher).await, "b@127.0.0.1");
    let took = started.elapsed();
    assert!(
        took < TICK * 3,
        "a killed node was noticed after {took:?} with a {TICK:?} tick"
    );
}

/// A node `name@127.0.0.1` in CA mode with `tls`.
async fn ca_node(name: &str, tls: TlsMode) -> (molt_host::Node, molt_host::net::Distribution) {
    dist_node_with(name, COOKIE, move |c| c.tls = tls).await
}

/// Neither node lists the other, for a moment after a refusal.
async fn stay_apart(x: &molt_host::net::Distribution, y: &molt_host::net::Distribution) {
    tokio::time::sleep(QUIET).await;
    assert!(x.nodes().is_empty(), "{} sees {:?}", x.name(), x.nodes());
    assert!(y.nodes().is_empty(), "{} sees {:?}", y.name(), y.nodes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_certificates_from_one_ca_connect_and_ping() {
    let ca = TestCa::new("cluster CA");
    let (_a, da) = ca_node("a", ca.mode_for("a@127.0.0.1")).await;
    let (_b, db) = ca_node("b", ca.mode_for("b@127.0.0.1")).await;
    da.join(&address_of(&db)).await.expect("a joins b");
    wait_for_nodes(&db, &["a@127.0.0.1"]).await;
    da.ping("b@127.0.0.1").await.expect("b answers a ping");
    db.ping("a@127.0.0.1").await.expect("a answers a ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    let (ca, other) = (TestCa::new("cluster CA"), TestCa::new("other CA"));
    let (_a, da) = ca_node("a", ca.mode_for("a@127.0.0.1")).await;
    let (_b, db) = ca_node("b", other.mode_for("b@127.0.0.1")).await;
    // b's certificate fails a's check, and a's fails b's: either way round.
    let err = db.join(&address_of(&da)).await.unwrap_err().to_string();
    assert!(err.contains("certificate"), "{err}");
    let err = da.join(&address_of(&db)).await.unwrap_err().to_string();
    assert!(err.contains("certificate"), "{err}");
    stay_apart(&da, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_node_name_is_refused() {
    let ca = TestCa::new("cluster CA");
    let (_a, da) = ca_node("a", ca.mode_for("a@127.0.0.1")).await;
    // b holds a good certificate of the cluster, but it names c.
    let (_b, db) = ca_node("b", ca.mode_for("c@127.0.0.1")).await;
    let err = db.join(&address_of(&da)).await.unwrap_err().to_string();
    assert!(
        err.contains("certificate does not name node b@127.0.0.1"),
        "{err}"
    );
    // Connecting to b, a's TLS asks for b's name, which the certificate
    // does not give.
    let err = da.join(&address_of(&db)).await.unwrap_err().to_string();
    assert!(err.contains("certificate"), "{err}");
    stay_apart(&da, &db).await;
    // The node that certificate does name is welcome.
    let (_c, dc) = ca_node("c", ca.mode_for("c@127.0.0.1")).await;
    dc.join(&address_of(&da)).await.expect("c joins a");
    // Both sides know each other once the join returns.
    da.ping("c@127.0.0.1").await.expect("c answers a's ping");
    dc.ping("a@127.0.0.1").await.expect("a answers c's ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_node_refuses_a_self_signed_node() {
    let ca = TestCa::new("cluster CA");
    let (_a, da) = ca_node("a", ca.mode_for("a@127.0.0.1")).await;
    let (_b, db) = dist_node("b").await;
    let err = da.join(&address_of(&db)).await.unwrap_err().to_string();
    assert!(err.contains("certificate"), "{err}");
    let err = db.join(&address_of(&da)).await.unwrap_err().to_string();
    assert!(err.contains("certificate"), "{err}");
    stay_apart(&da, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_lane_suspends_the_sender_and_loses_nothing() {
    // 64 bytes hold about one message frame: nearly every send leaves the
    // lane over its bound and suspends the sender until it drains.
    let (a, da) = dist_node_with("a", COOKIE, |c| c.lane_bytes_max = 64).await;
    let (b, db) = dist_node("b").await;
    da.join(&address_of(&db)).await.unwrap();
    let mut receiver = puppet(&b).await;
    let mut sender = puppet(&a).await;
    let count = 5_000u32;
    let started = std::time::Instant::now();
    sender.order(Cmd::SendSeq {
        to: receiver.pid,
        tag: 80,
        count,
    });
    for expected in 0..count {
        match receiver.event().await {
            Event::Got {
                tag: 80, payload, ..
            } => {
                let n: u32 = codec::decode(&payload).unwrap();
                assert_eq!(n, expected, "message {expected} lost or out of order");
            }
            other => panic!("expected message {expected}, got {other:?}"),
        }
        assert!(
            started.elapsed() < WAIT,
            "only {expected} of {count} messages after {:?}",
            started.elapsed()
        );
    }
    assert_eq!(sender.event().await, Event::Done(Outcome::Ok));
    // Nothing more: no message arrived twice.
    assert_eq!(receiver.try_event(QUIET).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allowlist_refuses_other_names() {
    let (_a, da) = dist_node_with("a", COOKIE, |c| c.allow = Some(vec![C.into()])).await;
    let (_b, db) = dist_node("b").await;
    let (_c, dc) = dist_node("c").await;
    let err = db.join(&address_of(&da)).await.unwrap_err().to_string();
    assert!(err.contains("not in the allowlist"), "{err}");
    stay_apart(&da, &db).await;
    dc.join(&address_of(&da)).await.expect("c joins a");
    wait_for_nodes(&da, &[C]).await;
    da.ping(C).await.expect("c answers a ping");
    // Through c, b learns of a, and a of b (full mesh): a still refuses b.
    db.join(&address_of(&dc)).await.expect("b joins c");
    wait_for_nodes(&dc, &[A, B]).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(da.nodes(), vec![C.to_string()]);
    assert_eq!(db.nodes(), vec![C.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_with_a_taken_name_is_refused() {
    let (a, da) = dist_node("a").await;
    let (b, db) = dist_node("b").await;
    da.join(&address_of(&db)).await.unwrap();
    wait_for_nodes(&db, &[A]).await;
    let (_impostor, dimpostor) = dist_node("b").await;
    assert_ne!(dimpostor.local_addr(), db.local_addr());
    let err = dimpostor
        .join(&address_of(&da))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a node named b@127.0.0.1 is already connected"),
        "{err}"
    );
    tokio::time::sleep(QUIET).await;
    assert!(dimpostor.nodes().is_empty(), "{:?}", dimpostor.nodes());
    // The first b keeps its connection, and messages still reach it.
    assert_eq!(da.nodes(), vec![B.to_string()]);
    assert_eq!(db.nodes(), vec![A.to_string()]);
    da.ping(B).await.expect("the first b answers a ping");
    let mut inbox = b.mailbox().unwrap();
    let mut from_a = a.mailbox().unwrap();
    from_a
        .send(inbox.pid(), 81, Ref::NONE, b"still b".to_vec())
        .unwrap();
    let m = inbox
        .recv(WAIT)
        .await
        .expect("the first b gets a's message");
    assert_eq!((m.tag, &*m.payload), (81, &b"still b"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_max_is_enforced() {
    let (_a, da) = dist_node_with("a", COOKIE, |c| c.connections_max = 1).await;
    let (_b, db) = dist_node("b").await;
    let (_c, dc) = dist_node("c").await;
    db.join(&address_of(&da)).await.expect("b joins a");
    wait_for_nodes(&da, &[B]).await;
    let err = dc.join(&address_of(&da)).await.unwrap_err().to_string();
    assert!(err.contains("connections_max (1)"), "{err}");
    tokio::time::sleep(QUIET).await;
    assert_eq!(da.nodes(), vec![B.to_string()]);
    assert!(dc.nodes().is_empty(), "{:?}", dc.nodes());
    da.ping(B).await.expect("b is still connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_closes_only_that_connection() {
    use molt_host::net::frame::Frame;
    let (a, da) = dist_node("a").await;
    let (b, db) = dist_node("b").await;
    db.join(&address_of(&da)).await.unwrap();
    let mut rogue = molt_tests::RawPeer::connect("rogue", &da).await;
    wait_for_nodes(&da, &[B, "rogue@127.0.0.1"]).await;
    // The connection works: a answers a ping on it.
    let ping = molt_host::net::frame::encode(&Frame::Ping { id: 7 });
    rogue.send.write_all(&ping).await.unwrap();
    loop {
        match rogue.next_frame().await {
            Frame::Pong { id: 7 } => break,
            Frame::Peers { .. } | Frame::Notice { .. } => continue,
            other => panic!("expected the Pong, got {other:?}"),
        }
    }
    // A well-framed body that is no frame: an unknown variant.
    let garbage = [4u32.to_le_bytes().as_slice(), &[0xff; 4]].concat();
    rogue.send.write_all(&garbage).await.unwrap();
    let why = tokio::time::timeout(WAIT, rogue.connection.closed())
        .await
        .expect("a closes the connection");
    match why {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(&*close.reason, b"bad frame", "{close:?}");
        }
        other => panic!("expected a close by a, got {other}"),
    }
    wait_for_nodes(&da, &[B]).await;
    // a still serves b, both ways.
    da.ping(B).await.expect("b answers a ping");
    db.ping(A).await.expect("a answers a ping");
    let mut inbox = a.mailbox().unwrap();
    hears_from(&mut inbox, &b, 82).await;
}

/// `inbox` gets a message a mailbox on `node` sends it with `tag`.
async fn hears_from(inbox: &mut molt_host::HostMailbox, node: &molt_host::Node, tag: u32) {
    let mut from = node.mailbox().unwrap();
    from.send(inbox.pid(), tag, Ref::NONE, b"hello".to_vec())
        .unwrap();
    let m = inbox.recv(WAIT).await.expect("the message arrives");
    assert_eq!((m.tag, &*m.payload), (tag, &b"hello"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_right_behind_the_handshake_are_not_lost() {
    use molt_host::net::frame::{self, Frame};
    let (_a, da) = dist_node("a").await;
    let (address, endpoint) = molt_tests::RawPeer::listen("far");
    // The peer's Welcome and its first frame arrive together: a, the
    // initiator, must hand that frame on to its frame reader.
    let ping = frame::encode(&Frame::Ping { id: 9 });
    let accept = tokio::spawn(molt_tests::RawPeer::accept("far", endpoint, ping));
    da.join(&address).await.expect("a joins the raw peer");
    let mut far = accept.await.unwrap();
    loop {
        match far.next_frame().await {
            Frame::Pong { id: 9 } => break,
            Frame::Peers { .. } | Frame::Notice { .. } => continue,
            other => panic!("expected the Pong, got {other:?}"),
        }
    }
    // And the other way round: a's first frame (it announces its peers)
    // reaches a raw peer that joins it.
    let (_b, db) = dist_node("b").await;
    db.join(&address_of(&da)).await.unwrap();
    let mut near = molt_tests::RawPeer::connect("near", &da).await;
    match near.next_frame().await {
        Frame::Peers { nodes } => {
            let names: Vec<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, [B], "far has no listen address to pass on");
        }
        other => panic!("expected a's peers first, got {other:?}"),
    }
}

/// Close `rogue` after `frame`: the node must close the connection as a
/// protocol violation.
async fn expect_violation(rogue: &mut molt_tests::RawPeer, frame: molt_host::net::frame::Frame) {
    let bytes = molt_host::net::frame::encode(&frame);
    rogue.send.write_all(&bytes).await.unwrap();
    let why = tokio::time::timeout(WAIT, rogue.connection.closed())
        .await
        .expect("the node closes the connection");
    match why {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(&*close.reason, b"protocol violation", "{close:?}");
        }
        other => panic!("expected a close by the node, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_forge_system_messages_or_speak_for_other_nodes() {
    use molt_host::net::frame::Frame;
    let (a, da) = dist_node("a").await;
    let (b, db) = dist_node("b").await;
    db.join(&address_of(&da)).await.unwrap();
    let mut inbox = a.mailbox().unwrap();
    let rogue_pid = Pid {
        node: molt_host::net::node_id("rogue@127.0.0.1"),
        incarnation: 1,
        serial: 5,
    };

    // A DOWN, EXIT or NODEDOWN payload as a plain message: refused.
    let forged = [
        molt_abi::tag::DOWN,
        molt_abi::tag::EXIT,
        molt_abi::tag::NODEDOWN,
    ];
    for tag in forged {
        let mut rogue = molt_tests::RawPeer::connect("rogue", &da).await;
        let frame = Frame::Message {
            from: rogue_pid,
            to: inbox.pid(),
            tag,
            reference: Ref::NONE,
            payload: b"not a host payload".into(),
        };
        expect_violation(&mut rogue, frame).await;
        wait_for_nodes(&da, &[B]).await;
    }
    // A link from a process of b, sent by the rogue: refused, and no link
    // (b's process does not exist anyway; a must not answer it either).
    let mut rogue = molt_tests::RawPeer::connect("rogue", &da).await;
    let of_b = Pid {
        node: molt_host::net::node_id(B),
        incarnation: 1,
        serial: 9,
    };
    expect_violation(
        &mut rogue,
        Frame::Exit {
            from: of_b,
            to: inbox.pid(),
            reason: "kill".into(),
            linked: false,
        },
    )
    .await;
    // A signal for a third node's process: nodes do not relay.
    let mut rogue = molt_tests::RawPeer::connect("rogue", &da).await;
    expect_violation(
        &mut rogue,
        Frame::Link {
            from: rogue_pid,
            to: of_b,
        },
    )
    .await;

    // None of it reached the mailbox, which is alive and hears from b.
    assert_eq!(inbox.pending(), 0);
    hears_from(&mut inbox, &b, 83).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_answers_does_not_hold_up_other_connections() {
    // A UDP socket that reads nothing: a QUIC connect to it waits for the
    // whole handshake_timeout.
    let ghost = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ghost_address = format!("ghost@{}", ghost.local_addr().unwrap());
    let (a, da) = molt_tests::dist_node_with("a", molt_tests::COOKIE, |c| {
        c.handshake_timeout = std::time::Duration::from_secs(4)
    })
    .await;
    let (b, db) = dist_node("b").await;
    let (c, dc) = dist_node("c").await;
    let pending = {
        let da = da.clone();
        tokio::spawn(async move { da.join(&ghost_address).await })
    };
    // Let the ghost connect start first (were it late, the test would pass
    // without showing anything, never fail for it).
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    da.join(&address_of(&db)).await.expect("a joins b");
    da.join(&address_of(&dc)).await.expect("a joins c");
    let mut inbox = a.mailbox().unwrap();
    for node in [&b, &c] {
        let mut from = node.mailbox().unwrap();
        from.send(inbox.pid(), 84, Ref::NONE, b"hi".to_vec())
            .unwrap();
        let m = inbox.recv(WAIT).await.expect("a hears from b and c");
        assert_eq!(m.tag, 84);
    }
    assert!(
        !pending.is_finished(),
        "b and c had to wait for the ghost's connect"
    );
    let ghost_result = pending.await.unwrap();
    assert!(ghost_result.is_err(), "the ghost never answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_is_bounded_by_addresses_max_and_connections_max() {
    use molt_host::net::frame::{self, Frame};
    let (_a, da) =
        molt_tests::dist_node_with("a", molt_tests::COOKIE, |c| c.addresses_max = 50).await;
    let mut rogue = molt_tests::RawPeer::connect("rogue", &da).await;
    // 10,000 made-up nodes, each at a port nothing listens on.
    let nodes: Vec<(String, String)> = (0..10_000)
        .map(|i| {
            (
                format!("fake{i}@127.0.0.1"),
                format!("127.0.0.1:{}", 1 + i % 1000),
            )
        })
        .collect();
    let bytes = frame::encode(&Frame::Peers { nodes });
    rogue.send.write_all(&bytes).await.unwrap();
    // The frame is applied once a ping behind it is answered.
    rogue
        .send
        .write_all(&frame::encode(&Frame::Ping { id: 41 }))
        .await
        .unwrap();
    loop {
        match rogue.next_frame().await {
            Frame::Pong { id: 41 } => break,
            Frame::Peers { .. } | Frame::Notice { .. } => continue,
            other => panic!("expected the Pong, got {other:?}"),
        }
    }
    assert!(da.addresses_known() <= 50, "{}", da.addresses_known());
    // a is fine: another node still joins it and they talk.
    let (_b, db) = dist_node("b").await;
    db.join(&address_of(&da)).await.expect("b joins a");
    db.ping(A).await.expect("a answers b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_past_stakes_max_is_disconnected_and_dead_targets_hold_none() {
    use molt_host::net::frame::{self, Frame};
    let (a, da) = molt_tests::dist_node_with("a", molt_tests::COOKIE, |c| c.stakes_max = 10).await;
    let inbox = a.mailbox().unwrap();
    let dead = molt_tests::dead_pid(&a);
    let mut rogue = molt_tests::RawPeer::connect("rogue", &da).await;
    let rogue_pid = Pid {
        node: molt_host::net::node_id("rogue@127.0.0.1"),
        incarnation: 1,
        serial: 5,
    };
    let monitor = |to: Pid, serial: u64| {
        frame::encode(&Frame::Monitor {
            from: rogue_pid,
            to,
            reference: Ref {
                node: rogue_pid.node,
                incarnation: 1,
                serial,
            },
        })
    };
    // Monitors of a process that does not exist leave nothing behind (the
    // rogue gets DOWN noproc for each)...
    for serial in 0..50 {
        rogue.send.write_all(&monitor(dead, serial)).await.unwrap();
    }
    // ...so ten of a live one fit stakes_max exactly,
    for serial in 100..110 {
        rogue
            .send
            .write_all(&monitor(inbox.pid(), serial))
            .await
            .unwrap();
    }
    rogue
        .send
        .write_all(&frame::encode(&Frame::Ping { id: 5 }))
        .await
        .unwrap();
    loop {
        match rogue.next_frame().await {
            Frame::Pong { id: 5 } => break,
            Frame::Peers { .. } | Frame::Notice { .. } | Frame::Down { .. } => continue,
            other => panic!("expected the Pong, got {other:?}"),
        }
    }
    // and one more closes the connection.
    rogue
        .send
        .write_all(&monitor(inbox.pid(), 200))
        .await
        .unwrap();
    let why = tokio::time::timeout(WAIT, rogue.connection.closed())
        .await
        .expect("a closes the connection");
    match why {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(&*close.reason, b"stakes_max", "{close:?}")
        }
        other => panic!("expected a close by a, got {other}"),
    }
}

/// Send 4 KiB messages from `me` to `to` (a process of a peer that reads
/// nothing) until a send is refused; the refusal.
async fn fill_lane(me: &mut molt_host::HostMailbox, to: Pid) -> molt_host::SendError {
    let blob = vec![7u8; 4096];
    let mut sent = 0usize;
    loop {
        if let Err(e) = me.send(to, 0, Ref::NONE, blob.clone()) {
            return e;
        }
        sent += 1;
        // Far past any QUIC window plus lane_bytes_max: without a bound
        // this would go on queueing.
        assert!(sent < 20_000, "never refused after {sent} sends");
        if sent.is_multiple_of(64) {
            // Let the lane's writer run.
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_sender_is_refused_at_a_full_connection_instead_of_queueing() {
    let (a, da) =
        molt_tests::dist_node_with("a", molt_tests::COOKIE, |c| c.lane_bytes_max = 64 << 10).await;
    // A peer that reads none of a's lanes: what a sends it piles up.
    let _rogue = molt_tests::RawPeer::connect("rogue", &da).await;
    let rogue_pid = Pid {
        node: molt_host::net::node_id("rogue@127.0.0.1"),
        incarnation: 1,
        serial: 5,
    };
    let mut me = a.mailbox().unwrap();
    let refused = fill_lane(&mut me, rogue_pid).await;
    assert!(
        matches!(refused, molt_host::SendError::Congested),
        "{refused}"
    );
    // The refusal says what happened.
    assert!(refused.to_string().contains("lane_bytes_max"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_on_a_congested_lane_does_not_suspend_the_next_local_send() {
    // One lane: every pair to the rogue shares it.
    let (a, da) = molt_tests::dist_node_with("a", COOKIE, |c| {
        c.lanes = 1;
        c.lane_bytes_max = 64 << 10;
    })
    .await;
    let _rogue = molt_tests::RawPeer::connect("rogue", &da).await;
    let rogue_pid = Pid {
        node: molt_host::net::node_id("rogue@127.0.0.1"),
        incarnation: 1,
        serial: 5,
    };
    // Fill the lane: the rogue reads nothing.
    let mut filler = a.mailbox().unwrap();
    fill_lane(&mut filler, rogue_pid).await;
    // A guest links to the rogue's process (routed onto the full lane),
    // then sends to a local process: that send must not wait for the
    // lane, which never drains. Repeated, so the link and the send land
    // on the same worker thread often.
    let mut p = Puppet::spawn(&a).await;
    let mut sink = a.mailbox().unwrap();
    for round in 0..20u8 {
        assert_eq!(p.cmd(Cmd::Link(rogue_pid)).await, Outcome::Ok, "{round}");
        let send = Cmd::Send {
            to: sink.pid(),
            tag: 0,
            payload: vec![round],
        };
        assert_eq!(p.cmd(send).await, Outcome::Ok, "{round}");
        let m = sink.recv(WAIT).await.expect("the local message arrives");
        assert_eq!(&*m.payload, &[round]);
    }
}

/// Once `join` returns, the node joined knows the joiner too: the
/// acceptor puts the peer in its table before its last handshake message
/// leaves, so a call from either side right away finds the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_join_returns_both_sides_know_each_other() {
    for round in 0..10 {
        let (na, a) = dist_node(&format!("ja{round}")).await;
        let (nb, b) = dist_node(&format!("jb{round}")).await;
        b.join(&address_of(&a)).await.expect("b joins a");
        let b_name = b.name().to_string();
        assert!(
            a.nodes().contains(&b_name),
            "round {round}: a does not list {b_name} yet: {:?}",
            a.nodes()
        );
        a.ping(&b_name).await.expect("b answers a's ping");
        a.shutdown();
        b.shutdown();
        na.shutdown(std::time::Duration::from_secs(2)).await;
        nb.shutdown(std::time::Duration::from_secs(2)).await;
    }
}
