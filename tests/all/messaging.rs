//! Messages: order per sender, selective receive, timeouts, names, timers.

use molt_abi::{Ref, codec, status, tag};
use molt_tests::{Cmd, Event, Outcome, Puppet, QUIET, node, ring_of_links, token_comes_back};

fn seq_of(event: Event) -> (u32, u32) {
    match event {
        Event::Got { tag, payload, .. } => (
            tag,
            codec::decode::<u32>(&payload).expect("a u32 sequence number"),
        ),
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_one_sender_arrive_in_send_order() {
    let node = node();
    let mut a = Puppet::spawn(&node).await;
    let mut b = Puppet::spawn(&node).await;
    // Two senders interleave; each one's messages must stay in order.
    let mut c = Puppet::spawn(&node).await;
    assert_eq!(
        a.cmd(Cmd::SendSeq {
            to: b.pid,
            tag: 10,
            count: 500
        })
        .await,
        Outcome::Ok
    );
    assert_eq!(
        c.cmd(Cmd::SendSeq {
            to: b.pid,
            tag: 11,
            count: 500
        })
        .await,
        Outcome::Ok
    );
    let (mut next_a, mut next_c) = (0, 0);
    for _ in 0..1000 {
        match seq_of(b.event().await) {
            (10, n) => {
                assert_eq!(n, next_a, "sender a out of order");
                next_a += 1;
            }
            (11, n) => {
                assert_eq!(n, next_c, "sender c out of order");
                next_c += 1;
            }
            other => panic!("unexpected message {other:?}"),
        }
    }
    assert_eq!((next_a, next_c), (500, 500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selective_receive_keeps_skipped_messages_in_order() {
    let node = node();
    let mut p = Puppet::spawn(&node).await;
    // Messages with tags 20, 21, 20 wait in the puppet's mailbox.
    assert_eq!(p.cmd(Cmd::OnlyCommands(true)).await, Outcome::Ok);
    for (t, n) in [(20u32, 1u32), (21, 2), (20, 3)] {
        p.ctl.send(p.pid, t, Ref::NONE, codec::encode(&n)).unwrap();
    }
    let got = p
        .cmd(Cmd::Receive {
            tags: vec![21],
            reference: None,
            timeout_ms: Some(5_000),
        })
        .await;
    assert_eq!(
        got,
        Outcome::Received(Some((21, None, codec::encode(&2u32))))
    );
    // The two skipped messages are still there, in order.
    for expected in [1u32, 3] {
        let got = p
            .cmd(Cmd::Receive {
                tags: vec![20],
                reference: None,
                timeout_ms: Some(0),
            })
            .await;
        assert_eq!(
            got,
            Outcome::Received(Some((20, None, codec::encode(&expected))))
        );
    }
    let got = p
        .cmd(Cmd::Receive {
            tags: vec![20, 21],
            reference: None,
            timeout_ms: Some(0),
        })
        .await;
    assert_eq!(got, Outcome::Received(None), "the mailbox should be empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_by_reference_and_timeout() {
    let node = node();
    let mut p = Puppet::spawn(&node).await;
    let r = Ref {
        node: 1,
        incarnation: 2,
        serial: 3,
    };
    assert_eq!(p.cmd(Cmd::OnlyCommands(true)).await, Outcome::Ok);
    p.ctl.send(p.pid, 30, Ref::NONE, vec![1]).unwrap();
    p.ctl.send(p.pid, 30, r, vec![2]).unwrap();
    let got = p
        .cmd(Cmd::Receive {
            tags: vec![],
            reference: Some(r),
            timeout_ms: Some(5_000),
        })
        .await;
    assert_eq!(got, Outcome::Received(Some((30, Some(r), vec![2]))));
    let started = std::time::Instant::now();
    let got = p
        .cmd(Cmd::Receive {
            tags: vec![31],
            reference: None,
            timeout_ms: Some(50),
        })
        .await;
    assert_eq!(got, Outcome::Received(None), "nothing with tag 31 was sent");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(50),
        "timed out early"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_names_resolve_and_are_freed_on_exit() {
    let node = node();
    let mut p = Puppet::spawn(&node).await;
    let mut q = Puppet::spawn(&node).await;
    assert_eq!(p.cmd(Cmd::Register("svc".into())).await, Outcome::Ok);
    assert_eq!(
        q.cmd(Cmd::Register("svc".into())).await,
        Outcome::Status(status::NAME_TAKEN)
    );
    assert_eq!(
        p.cmd(Cmd::Register("other".into())).await,
        Outcome::Status(status::ALREADY_REGISTERED)
    );
    assert_eq!(
        q.cmd(Cmd::Whereis("svc".into())).await,
        Outcome::MaybePid(Some(p.pid))
    );
    assert_eq!(node.whereis("svc"), Some(p.pid));
    let payload = codec::encode(&7u32);
    assert_eq!(
        q.cmd(Cmd::SendNamed {
            name: "svc".into(),
            tag: 40,
            payload: payload.clone()
        })
        .await,
        Outcome::Ok
    );
    assert_eq!(seq_of(p.event().await), (40, 7));
    assert_eq!(
        q.cmd(Cmd::SendNamed {
            name: "nobody".into(),
            tag: 40,
            payload
        })
        .await,
        Outcome::Status(status::NOT_REGISTERED)
    );
    // The name dies with its process.
    let watch = q.ctl.monitor(p.pid);
    p.ctl.exit(p.pid, "kill");
    assert_eq!(molt_tests::down_reason(&mut q.ctl, watch).await, "killed");
    assert_eq!(
        q.cmd(Cmd::Whereis("svc".into())).await,
        Outcome::MaybePid(None)
    );
    assert_eq!(q.cmd(Cmd::Register("svc".into())).await, Outcome::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_and_cancel() {
    let node = node();
    let mut p = Puppet::spawn(&node).await;
    let me = p.pid;
    let fired = p
        .cmd(Cmd::SendAfter {
            delay_ms: 20,
            to: me,
            tag: 50,
            payload: codec::encode(&1u32),
        })
        .await;
    let Outcome::Ref(fired_ref) = fired else {
        panic!("send_after gave {fired:?}")
    };
    let cancelled = p
        .cmd(Cmd::SendAfter {
            delay_ms: 60_000,
            to: me,
            tag: 51,
            payload: codec::encode(&2u32),
        })
        .await;
    let Outcome::Ref(cancelled_ref) = cancelled else {
        panic!("send_after gave {cancelled:?}")
    };
    match p.cmd(Cmd::CancelTimer(cancelled_ref)).await {
        Outcome::Remaining(Some(ms)) => assert!(ms > 50_000 && ms <= 60_000, "remaining {ms} ms"),
        other => panic!("cancel_timer gave {other:?}"),
    }
    // The first fires, carrying its timer reference; the cancelled one never does.
    match p.event().await {
        Event::Got {
            tag: 50,
            reference,
            payload,
            ..
        } => {
            assert_eq!(reference, Some(fired_ref));
            assert_eq!(codec::decode::<u32>(&payload).unwrap(), 1);
        }
        other => panic!("expected the timer message, got {other:?}"),
    }
    assert_eq!(
        p.cmd(Cmd::CancelTimer(fired_ref)).await,
        Outcome::Remaining(None)
    );
    assert_eq!(
        p.cmd(Cmd::CancelTimer(cancelled_ref)).await,
        Outcome::Remaining(None)
    );
    assert_eq!(p.try_event(QUIET).await, None, "a cancelled timer fired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_tags_cannot_be_sent() {
    let node = node();
    let mut p = Puppet::spawn(&node).await;
    let to = p.ctl.pid();
    let sent = p
        .cmd(Cmd::Send {
            to,
            tag: tag::EXIT,
            payload: vec![0; 24],
        })
        .await;
    assert_eq!(sent, Outcome::Status(status::BAD_ARG));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_distribution_other_nodes_are_unreachable() {
    let node = node();
    let mut p = Puppet::spawn(&node).await;
    let mut ctl = node.mailbox().unwrap();
    assert_eq!(
        p.cmd(Cmd::NodeName).await,
        Outcome::Text("nonode@nohost".into())
    );
    assert_eq!(p.cmd(Cmd::Nodes).await, Outcome::Names(vec![]));
    assert_eq!(
        p.cmd(Cmd::Ping("other@host".into())).await,
        Outcome::Bool(false)
    );
    let spawn = |on: &str| Cmd::SpawnOn {
        node: on.into(),
        module: "puppet".into(),
        args: codec::encode(&molt_tests::PuppetArgs {
            controller: ctl.pid(),
        }),
        link: false,
        monitor: true,
    };
    assert_eq!(
        p.cmd(spawn("other@host")).await,
        Outcome::Status(status::NOCONNECTION)
    );
    // Its own name is this node.
    let Outcome::PidRef(child, _) = p.cmd(spawn("nonode@nohost")).await else {
        panic!("spawn_on its own node failed");
    };
    assert!(node.is_alive(child));
    let ready = ctl
        .recv(molt_tests::WAIT)
        .await
        .expect("the child is ready");
    assert_eq!(
        codec::decode::<Event>(&ready.payload).unwrap(),
        Event::Ready(child)
    );
    let send = |on: &str| Cmd::SendNamedOn {
        node: on.into(),
        name: "here".into(),
        tag: 5,
        payload: b"hi".to_vec(),
    };
    assert_eq!(
        p.cmd(send("other@host")).await,
        Outcome::Status(status::NOCONNECTION)
    );
    let mut named = Puppet::spawn(&node).await;
    assert_eq!(named.cmd(Cmd::Register("here".into())).await, Outcome::Ok);
    assert_eq!(p.cmd(send("nonode@nohost")).await, Outcome::Ok);
    match named.event().await {
        Event::Got { tag, payload, .. } => assert_eq!((tag, payload), (5, b"hi".to_vec())),
        other => panic!("expected the named message, got {other:?}"),
    }
    // A node monitor fires at once: nothing is connected.
    assert_eq!(
        p.cmd(Cmd::MonitorNode("other@host".into(), true)).await,
        Outcome::Ok
    );
    match p.event().await {
        Event::Got {
            tag: t,
            system: Some(molt_tests::SystemEvent::NodeDown { node: down }),
            ..
        } => assert_eq!((t, down.as_str()), (tag::NODEDOWN, "other@host")),
        other => panic!("expected NODEDOWN, got {other:?}"),
    }
    assert_eq!(p.cmd(Cmd::IsAlive(p.pid)).await, Outcome::Bool(true));
}

/// Links that allocate a little (decoding the token) keep the memory size
/// their module starts with: the SDK's allocator takes the free end of the
/// initial memory before it grows it, so the pool slot a process leaves
/// needs no change of protection for the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_that_allocate_a_little_keep_their_initial_memory() {
    use molt_tests::bench_wire::BenchArgs;
    let node = node();
    let mut me = node.mailbox().unwrap();
    // An idle process allocates nothing: its size is the initial one.
    let idle = node
        .spawn("bench-guest", codec::encode(&BenchArgs::Idle))
        .unwrap();
    let order = ring_of_links(&node, &mut me, 20);
    assert!(
        token_comes_back(&mut me, order[0], 200).await,
        "the token comes back"
    );
    let sizes = || -> std::collections::HashMap<_, _> {
        node.processes()
            .into_iter()
            .map(|p| (p.pid, p.memory_bytes))
            .collect()
    };
    crate::coord::wait_within(
        "the idle process's memory",
        std::time::Duration::from_secs(10),
        || sizes().get(&idle).is_some_and(|&b| b > 0),
    )
    .await;
    let sizes = sizes();
    let initial = sizes[&idle];
    for pid in &order {
        assert_eq!(sizes.get(pid), Some(&initial), "link {pid} grew its memory");
    }
}

/// The ring `molt bench` measures: bench-guest links, each passing the
/// token to the next, as the bench builds it from its own mirror types.
/// The token makes exactly its hops and comes back once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_goes_round_a_ring_of_links_and_comes_back_once() {
    use molt_tests::bench_wire::BenchMsg;
    let node = node();
    let mut me = node.mailbox().unwrap();
    let order = ring_of_links(&node, &mut me, 300);
    // Ten laps and a half: the last link to hold it is halfway round.
    assert!(
        token_comes_back(&mut me, order[0], 3_150).await,
        "the token comes back"
    );
    // Once: nothing else comes (a bounded wait for an absence).
    assert!(
        me.recv(std::time::Duration::from_millis(300))
            .await
            .is_none()
    );
    // A link killed halfway round stops a token that would pass it: one
    // that ends just before it still comes back.
    let watch = me.monitor(order[150]);
    me.exit(order[150], molt_abi::reason::KILL);
    let why = me
        .recv_down(watch, std::time::Duration::from_secs(10))
        .await;
    assert_eq!(why.as_deref(), Some(molt_abi::reason::KILLED));
    assert!(
        token_comes_back(&mut me, order[0], 149).await,
        "a token short of the dead link comes back"
    );
    let token = BenchMsg::Token {
        hops: 150,
        report: me.pid(),
    };
    me.send(order[0], tag::DATA, Ref::NONE, codec::encode(&token))
        .unwrap();
    assert!(
        me.recv(std::time::Duration::from_millis(300))
            .await
            .is_none(),
        "the dead link ends the token's way"
    );
}
