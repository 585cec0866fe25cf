//! Signals with Erlang's semantics: links, exit signals, trapping, `kill`,
//! monitors and demonitor, spawn_link / spawn_monitor, and guest panics.

use faulty::Fault;
use molt_abi::{Pid, Ref, codec, status, tag};
use molt_host::Node;
use molt_tests::{
    Cmd, Event, Outcome, Puppet, PuppetArgs, QUIET, SystemEvent, WAIT, dead_pid, down_reason,
    exit_of, node,
};

/// A puppet that traps exits.
async fn trapping(node: &Node) -> Puppet {
    let mut p = Puppet::spawn(node).await;
    assert_eq!(p.cmd(Cmd::TrapExit(true)).await, Outcome::Bool(false));
    p
}

/// Check that `p` is alive and still runs commands.
async fn assert_alive(node: &Node, p: &mut Puppet) {
    let me = p.pid;
    assert_eq!(p.cmd(Cmd::IsAlive(me)).await, Outcome::Bool(true));
    assert!(node.is_alive(p.pid));
}

fn exit_from(event: Event) -> (Pid, String) {
    match event {
        Event::Got {
            tag: tag::EXIT,
            reference: None,
            system: Some(SystemEvent::Exit { from, reason }),
            ..
        } => (from, reason),
        other => panic!("expected an EXIT message, got {other:?}"),
    }
}

/// `(reference, pid, reason)` of a DOWN message, checking that the
/// envelope reference is the monitor reference.
fn down_of(event: Event) -> (Ref, Pid, String) {
    match event {
        Event::Got {
            tag: tag::DOWN,
            reference: Some(envelope),
            system:
                Some(SystemEvent::Down {
                    reference,
                    pid,
                    reason,
                }),
            ..
        } => {
            assert_eq!(envelope, reference, "envelope and monitor reference differ");
            (reference, pid, reason)
        }
        other => panic!("expected a DOWN message, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abnormal_exit_of_a_linked_process_kills_a_non_trapping_one() {
    let node = node();
    let mut watcher = node.mailbox().unwrap();
    for (crash, expected) in [
        (Cmd::ExitSelf("boom".into()), "boom"),
        (Cmd::Panic("kaboom".into()), "panic: kaboom"),
    ] {
        let mut a = Puppet::spawn(&node).await;
        let mut b = Puppet::spawn(&node).await;
        let watch_a = watcher.monitor(a.pid);
        let watch_b = watcher.monitor(b.pid);
        assert_eq!(a.cmd(Cmd::Link(b.pid)).await, Outcome::Ok);
        b.order(crash);
        let b_reason = down_reason(&mut watcher, watch_b).await;
        assert!(b_reason.starts_with(expected), "b exited with {b_reason:?}");
        // A dies of the very same reason, text and all.
        assert_eq!(down_reason(&mut watcher, watch_a).await, b_reason);
        assert!(!node.is_alive(a.pid));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_process_gets_exit_messages_and_lives() {
    let node = node();
    let mut a = trapping(&node).await;
    let mut b = Puppet::spawn(&node).await;
    let mut c = Puppet::spawn(&node).await;
    // Linked from either side: links are bidirectional.
    assert_eq!(a.cmd(Cmd::Link(b.pid)).await, Outcome::Ok);
    assert_eq!(c.cmd(Cmd::Link(a.pid)).await, Outcome::Ok);
    b.order(Cmd::ExitSelf("boom".into()));
    assert_eq!(exit_from(a.event().await), (b.pid, "boom".to_string()));
    c.order(Cmd::Panic("kaboom".into()));
    let (from, why) = exit_from(a.event().await);
    assert_eq!(from, c.pid);
    assert!(why.starts_with("panic: kaboom"), "reason {why:?}");
    assert_alive(&node, &mut a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_exit_of_a_linked_process_reaches_only_trapping_ones() {
    let node = node();
    let mut watcher = node.mailbox().unwrap();
    let mut plain = Puppet::spawn(&node).await;
    let mut trap = trapping(&node).await;
    let mut b = Puppet::spawn(&node).await;
    assert_eq!(plain.cmd(Cmd::Link(b.pid)).await, Outcome::Ok);
    assert_eq!(trap.cmd(Cmd::Link(b.pid)).await, Outcome::Ok);
    let watch_b = watcher.monitor(b.pid);
    b.order(Cmd::ExitSelf("normal".into()));
    assert_eq!(down_reason(&mut watcher, watch_b).await, "normal");
    assert_eq!(exit_from(trap.event().await), (b.pid, "normal".to_string()));
    // The exit signal reached `plain` before this command (one sender's
    // signals arrive in order) and was dropped: it still answers, and
    // reports no EXIT.
    assert_alive(&node, &mut plain).await;
    assert_eq!(plain.cmd(Cmd::IsAlive(b.pid)).await, Outcome::Bool(false));
    assert_eq!(plain.try_event(QUIET).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_cannot_be_trapped_and_becomes_killed() {
    let node = node();
    let mut watcher = node.mailbox().unwrap();
    let a = trapping(&node).await;
    let mut b = Puppet::spawn(&node).await;
    let mut linked = trapping(&node).await;
    assert_eq!(linked.cmd(Cmd::Link(a.pid)).await, Outcome::Ok);
    let watch_a = watcher.monitor(a.pid);
    assert_eq!(
        b.cmd(Cmd::Exit {
            pid: a.pid,
            reason: "kill".into()
        })
        .await,
        Outcome::Ok
    );
    assert_eq!(down_reason(&mut watcher, watch_a).await, "killed");
    // Processes linked to it see `killed`, not `kill`.
    assert_eq!(
        exit_from(linked.event().await),
        (a.pid, "killed".to_string())
    );
    // From the host too, on a process that does not trap.
    let watch_b = watcher.monitor(b.pid);
    node.exit(b.pid, "kill");
    assert_eq!(down_reason(&mut watcher, watch_b).await, "killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dying_with_reason_kill_sends_an_ordinary_kill_through_links() {
    // Only `exit(pid, kill)` is untrappable; a process that itself ends
    // with reason `kill` sends `kill` through its links like any reason.
    let node = node();
    let mut watcher = node.mailbox().unwrap();
    let mut trap = trapping(&node).await;
    let mut plain = Puppet::spawn(&node).await;
    let mut b = Puppet::spawn(&node).await;
    assert_eq!(trap.cmd(Cmd::Link(b.pid)).await, Outcome::Ok);
    assert_eq!(plain.cmd(Cmd::Link(b.pid)).await, Outcome::Ok);
    let watch_plain = watcher.monitor(plain.pid);
    b.order(Cmd::ExitSelf("kill".into()));
    assert_eq!(exit_from(trap.event().await), (b.pid, "kill".to_string()));
    assert_alive(&node, &mut trap).await;
    assert_eq!(down_reason(&mut watcher, watch_plain).await, "kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_signals_sent_with_exit() {
    let node = node();
    let mut watcher = node.mailbox().unwrap();
    let mut a = trapping(&node).await;
    let mut b = Puppet::spawn(&node).await;
    let mut plain = Puppet::spawn(&node).await;
    // Any other reason to a trapping process becomes an EXIT message; it
    // need not be linked.
    assert_eq!(
        b.cmd(Cmd::Exit {
            pid: a.pid,
            reason: "other".into()
        })
        .await,
        Outcome::Ok
    );
    assert_eq!(exit_from(a.event().await), (b.pid, "other".to_string()));
    // `normal` to a process that does not trap is ignored.
    assert_eq!(
        b.cmd(Cmd::Exit {
            pid: plain.pid,
            reason: "normal".into()
        })
        .await,
        Outcome::Ok
    );
    assert_alive(&node, &mut plain).await;
    assert_eq!(plain.try_event(QUIET).await, None);
    // ... and so would be `normal` to a trapping one, were it not trapped.
    assert_eq!(
        b.cmd(Cmd::Exit {
            pid: a.pid,
            reason: "normal".into()
        })
        .await,
        Outcome::Ok
    );
    assert_eq!(exit_from(a.event().await), (b.pid, "normal".to_string()));
    // Any other reason kills a process that does not trap.
    let watch_plain = watcher.monitor(plain.pid);
    assert_eq!(
        b.cmd(Cmd::Exit {
            pid: plain.pid,
            reason: "shutdown".into()
        })
        .await,
        Outcome::Ok
    );
    assert_eq!(down_reason(&mut watcher, watch_plain).await, "shutdown");
    // `exit(self(), normal)` ends the caller, normally.
    let watch_b = watcher.monitor(b.pid);
    let me = b.pid;
    b.order(Cmd::Exit {
        pid: me,
        reason: "normal".into(),
    });
    assert_eq!(down_reason(&mut watcher, watch_b).await, "normal");
    assert_eq!(b.try_event(QUIET).await, None, "b answered after its exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_unlink_a_crash_does_not_propagate() {
    let node = node();
    let mut watcher = node.mailbox().unwrap();
    let mut plain = Puppet::spawn(&node).await;
    let mut trap = trapping(&node).await;
    let mut b = Puppet::spawn(&node).await;
    assert_eq!(plain.cmd(Cmd::Link(b.pid)).await, Outcome::Ok);
    assert_eq!(trap.cmd(Cmd::Link(b.pid)).await, Outcome::Ok);
    assert_eq!(plain.cmd(Cmd::Unlink(b.pid)).await, Outcome::Ok);
    // Unlinking from the other side removes the link too.
    assert_eq!(b.cmd(Cmd::Unlink(trap.pid)).await, Outcome::Ok);
    let watch_b = watcher.monitor(b.pid);
    b.order(Cmd::ExitSelf("boom".into()));
    assert_eq!(down_reason(&mut watcher, watch_b).await, "boom");
    assert_alive(&node, &mut plain).await;
    assert_alive(&node, &mut trap).await;
    assert_eq!(trap.try_event(QUIET).await, None, "an EXIT after unlink");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_carries_the_reason_and_the_monitor_reference() {
    let node = node();
    let mut a = Puppet::spawn(&node).await;
    let mut b = Puppet::spawn(&node).await;
    let Outcome::Ref(r) = a.cmd(Cmd::Monitor(b.pid)).await else {
        panic!("monitor gives a reference")
    };
    b.order(Cmd::ExitSelf("boom".into()));
    assert_eq!(down_of(a.event().await), (r, b.pid, "boom".to_string()));
    // A monitor is one-way: the watcher lives on.
    assert_alive(&node, &mut a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_stack() {
    let node = node();
    let mut a = Puppet::spawn(&node).await;
    let mut b = Puppet::spawn(&node).await;
    let mut refs = Vec::new();
    for _ in 0..2 {
        match a.cmd(Cmd::Monitor(b.pid)).await {
            Outcome::Ref(r) => refs.push(r),
            other => panic!("monitor gave {other:?}"),
        }
    }
    assert_ne!(refs[0], refs[1]);
    b.order(Cmd::ExitSelf("boom".into()));
    let mut got = Vec::new();
    for _ in 0..2 {
        let (r, pid, why) = down_of(a.event().await);
        assert_eq!((pid, why.as_str()), (b.pid, "boom"));
        got.push(r);
    }
    got.sort();
    refs.sort();
    assert_eq!(got, refs, "one DOWN per monitor");
    assert_eq!(a.try_event(QUIET).await, None, "a third DOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_of_a_dead_process_is_down_noproc_at_once() {
    let node = node();
    let dead = dead_pid(&node);
    let mut a = Puppet::spawn(&node).await;
    assert_eq!(a.cmd(Cmd::OnlyCommands(true)).await, Outcome::Ok);
    let Outcome::Ref(r) = a.cmd(Cmd::Monitor(dead)).await else {
        panic!("monitor gives a reference")
    };
    // Queued before `monitor` returned: a receive that does not wait finds it.
    let got = a
        .cmd(Cmd::Receive {
            tags: vec![tag::DOWN],
            reference: Some(r),
            timeout_ms: Some(0),
        })
        .await;
    let mut expected_payload = dead.to_bytes().to_vec();
    expected_payload.extend_from_slice(b"noproc");
    assert_eq!(
        got,
        Outcome::Received(Some((tag::DOWN, Some(r), expected_payload)))
    );
    // The host mailbox gets the same.
    let mut watcher = node.mailbox().unwrap();
    let watch = watcher.monitor(dead);
    assert_eq!(down_reason(&mut watcher, watch).await, "noproc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_to_a_dead_process() {
    let node = node();
    let dead = dead_pid(&node);
    let mut plain = Puppet::spawn(&node).await;
    assert_eq!(
        plain.cmd(Cmd::Link(dead)).await,
        Outcome::Status(status::NOPROC)
    );
    assert_alive(&node, &mut plain).await;
    let mut trap = trapping(&node).await;
    assert_eq!(trap.cmd(Cmd::Link(dead)).await, Outcome::Ok);
    assert_eq!(exit_from(trap.event().await), (dead, "noproc".to_string()));
    assert_alive(&node, &mut trap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_demonitor_no_down_arrives() {
    let node = node();
    let mut watcher = node.mailbox().unwrap();
    let mut a = Puppet::spawn(&node).await;
    let mut b = Puppet::spawn(&node).await;
    let Outcome::Ref(r) = a.cmd(Cmd::Monitor(b.pid)).await else {
        panic!("monitor gives a reference")
    };
    assert_eq!(
        a.cmd(Cmd::Demonitor {
            reference: r,
            flush: false
        })
        .await,
        Outcome::Bool(true)
    );
    // A second demonitor finds nothing active.
    assert_eq!(
        a.cmd(Cmd::Demonitor {
            reference: r,
            flush: false
        })
        .await,
        Outcome::Bool(false)
    );
    let watch_b = watcher.monitor(b.pid);
    b.order(Cmd::ExitSelf("boom".into()));
    assert_eq!(down_reason(&mut watcher, watch_b).await, "boom");
    assert_eq!(a.try_event(QUIET).await, None, "a DOWN after demonitor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demonitor_with_flush_removes_a_queued_down() {
    let node = node();
    let mut watcher = node.mailbox().unwrap();
    let mut a = Puppet::spawn(&node).await;
    assert_eq!(a.cmd(Cmd::OnlyCommands(true)).await, Outcome::Ok);
    // The target is a host mailbox: dropping it ends it at once, in this
    // thread, so its DOWN is queued at `a` when the drop returns.
    let target = node.mailbox().unwrap();
    let Outcome::Ref(r) = a.cmd(Cmd::Monitor(target.pid())).await else {
        panic!("monitor gives a reference")
    };
    let Outcome::Ref(kept) = a.cmd(Cmd::Monitor(target.pid())).await else {
        panic!("monitor gives a reference")
    };
    let watch = watcher.monitor(target.pid());
    drop(target);
    assert_eq!(down_reason(&mut watcher, watch).await, "normal");
    // The monitor fired already, so it was not active; its DOWN is gone.
    assert_eq!(
        a.cmd(Cmd::Demonitor {
            reference: r,
            flush: true
        })
        .await,
        Outcome::Bool(false)
    );
    assert_eq!(
        a.cmd(Cmd::Receive {
            tags: vec![tag::DOWN],
            reference: Some(r),
            timeout_ms: Some(0)
        })
        .await,
        Outcome::Received(None)
    );
    // Only that monitor's DOWN: the other one is still queued.
    match a
        .cmd(Cmd::Receive {
            tags: vec![],
            reference: None,
            timeout_ms: Some(0),
        })
        .await
    {
        Outcome::Received(Some((tag::DOWN, Some(got), _))) => assert_eq!(got, kept),
        other => panic!("expected the other DOWN, got {other:?}"),
    }
    assert_eq!(
        a.cmd(Cmd::Receive {
            tags: vec![],
            reference: None,
            timeout_ms: Some(0)
        })
        .await,
        Outcome::Received(None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_spawn_linked_child_kills_its_parent() {
    let node = node();
    let mut watcher = node.mailbox().unwrap();
    let mut parent = Puppet::spawn(&node).await;
    let watch = watcher.monitor(parent.pid);
    // The child may crash before the parent answers; the parent dies then.
    parent.order(Cmd::Spawn {
        module: "faulty".into(),
        args: codec::encode(&Fault::Panic("child boom".into())),
        link: true,
        monitor: false,
    });
    let why = down_reason(&mut watcher, watch).await;
    assert!(
        why.starts_with("panic: child boom"),
        "parent exited {why:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_parent_gets_the_exit_of_a_spawn_linked_child() {
    let node = node();
    let mut parent = trapping(&node).await;
    let got = parent
        .cmd(Cmd::Spawn {
            module: "faulty".into(),
            args: codec::encode(&Fault::Panic("child boom".into())),
            link: true,
            monitor: false,
        })
        .await;
    let Outcome::Pid(child) = got else {
        panic!("spawn_link gave {got:?}")
    };
    let (from, why) = exit_from(parent.event().await);
    assert_eq!(from, child);
    assert!(why.starts_with("panic: child boom"), "reason {why:?}");
    assert_alive(&node, &mut parent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_monitor_reports_the_childs_panic() {
    let node = node();
    let mut parent = Puppet::spawn(&node).await;
    let got = parent
        .cmd(Cmd::Spawn {
            module: "faulty".into(),
            args: codec::encode(&Fault::Panic("child boom".into())),
            link: false,
            monitor: true,
        })
        .await;
    let Outcome::PidRef(child, r) = got else {
        panic!("spawn_monitor gave {got:?}")
    };
    let (reference, pid, why) = down_of(parent.event().await);
    assert_eq!((reference, pid), (r, child));
    assert!(why.starts_with("panic: child boom at "), "reason {why:?}");
    assert!(why.contains("faulty/src/lib.rs:"), "reason {why:?}");
    assert_alive(&node, &mut parent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_ends_only_the_panicking_process() {
    let node = node();
    let mut watcher = node.mailbox().unwrap();
    let mut victim = Puppet::spawn(&node).await;
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(Puppet::spawn(&node).await);
    }
    let watch = watcher.monitor(victim.pid);
    victim.order(Cmd::Panic("oh no: a bug".into()));
    let why = down_reason(&mut watcher, watch).await;
    assert!(why.starts_with("panic: oh no: a bug at "), "reason {why:?}");
    assert!(!node.is_alive(victim.pid));
    for p in &mut others {
        assert_alive(&node, p).await;
    }
    // And the node still spawns.
    let mut fresh = Puppet::spawn(&node).await;
    assert_alive(&node, &mut fresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_signal_right_after_spawn_ends_the_process_with_its_reason() {
    // The signal may arrive while the new process is still being
    // instantiated; its reason must be the signal's all the same.
    let node = node();
    let mut watcher = node.mailbox().unwrap();
    let args = codec::encode(&PuppetArgs {
        controller: watcher.pid(),
    });
    for (sent, expected) in [("shutdown", "shutdown"), ("kill", "killed")] {
        for _ in 0..20 {
            let (pid, r) = watcher.spawn("puppet", args.clone(), false, true).unwrap();
            node.exit(pid, sent);
            assert_eq!(down_reason(&mut watcher, r.unwrap()).await, expected);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_mailbox_gets_even_kill_as_a_message_and_ends_when_dropped() {
    let node = node();
    let mut watcher = node.mailbox().unwrap();
    let mut held = node.mailbox().unwrap();
    let mut killer = Puppet::spawn(&node).await;
    let watch = watcher.monitor(held.pid());
    let exit = Cmd::Exit {
        pid: held.pid(),
        reason: "kill".into(),
    };
    assert_eq!(killer.cmd(exit).await, Outcome::Ok);
    let m = held.recv(WAIT).await.expect("an EXIT message");
    assert_eq!(exit_of(&m), (killer.pid, "kill".to_string()));
    assert!(
        node.is_alive(held.pid()),
        "the mailbox belongs to its owner"
    );
    drop(held);
    assert_eq!(down_reason(&mut watcher, watch).await, "normal");
}
