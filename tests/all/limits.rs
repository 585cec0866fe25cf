//! Hostile guests and limits: an endless loop is preempted and killable,
//! memory, message, mailbox and process limits give their specific error or
//! exit reason, and bad modules are refused, all without harming the node.

use faulty::Fault;
use molt_abi::{Pid, Ref, codec, status, tag};
use molt_host::code::LoadError;
use molt_host::{HostMailbox, Node, NodeConfig, SendError, SpawnError};
use molt_tests::{
    Cmd, Outcome, Puppet, WAIT, down_reason, guests_dir, loops_are_preempted_and_killed, node,
    run_to_exit, start_node, test_config, wat_fixture,
};

fn fault(f: Fault) -> Vec<u8> {
    codec::encode(&f)
}

/// Check that the node still spawns and runs processes.
async fn assert_node_works(node: &Node) {
    let mut p = Puppet::spawn(node).await;
    let me = p.pid;
    assert_eq!(p.cmd(Cmd::IsAlive(me)).await, Outcome::Bool(true));
}

/// Wait for the status a `SendHuge` guest reports (a typed `i32`).
async fn reported_status(mailbox: &mut HostMailbox) -> i32 {
    let filter = molt_host::Filter {
        tags: vec![tag::DATA],
        reference: None,
    };
    let m = mailbox
        .recv_matching(&filter, WAIT)
        .await
        .expect("a status from the guest");
    codec::decode(&m.payload).expect("an i32 status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_is_preempted_and_can_be_killed() {
    // Default timeslice; more loops than the runtime has worker threads, so
    // without preemption nothing else would ever run.
    let node = node();
    assert_eq!(node.config().timeslice, NodeConfig::default().timeslice);
    loops_are_preempted_and_killed(&node, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_never_sees_what_an_earlier_one_left_in_its_pool_slot() {
    // Each snooper fills a static buffer and freshly grown pages with a
    // pattern and ends; later ones, spawned into slots that kept those
    // pages resident, must find them zeroed. Freed slots come back in
    // batches (`DECOMMIT_BATCH` regions, a few per process), so enough
    // rounds for several batches. 1 MiB kept is all a snooper touches,
    // so its slot keeps every page. With copy-on-write memory images too
    // (the module's data mapped from a shared image, written pages put
    // back from it).
    for (keep, cow) in [(1 << 20, false), (0, false), (1 << 20, true)] {
        let node = start_node(NodeConfig {
            pool_keep_resident_bytes: keep,
            memory_images_cow: cow,
            ..test_config()
        });
        let mut me = node.mailbox().unwrap();
        // Pool slots are for optimised code (baseline code is allocated
        // on demand).
        let faulty = node.code().current("faulty").expect("faulty is loaded");
        molt_tests::wait_optimised(&faulty).await;
        let filter = molt_host::Filter {
            tags: vec![tag::DATA],
            reference: None,
        };
        let mut held_most = 0;
        for round in 0..400 {
            let (_, watch) = me
                .spawn("faulty", fault(Fault::Snoop { to: me.pid() }), false, true)
                .unwrap();
            let m = me
                .recv_matching(&filter, WAIT)
                .await
                .expect("a count from the snooper");
            let dirty: u64 = codec::decode(&m.payload).expect("a u64 count");
            assert_eq!(
                dirty, 0,
                "round {round}, keep {keep}, cow {cow}: bytes left by an earlier process"
            );
            assert_eq!(down_reason(&mut me, watch.unwrap()).await, "normal");
            held_most = held_most.max(node.pool_resident_bytes());
        }
        if keep == 0 {
            assert_eq!(held_most, 0, "nothing kept at pool_keep_resident_bytes 0");
        } else if node.pool_keeps_pages() {
            // Freed slots kept pages, which later snoopers were spawned
            // onto (most recently used slots first).
            assert!(held_most > 0, "freed slots keep their touched pages");
            assert!(
                held_most <= 400 * (keep + 4096) as u64,
                "{held_most} bytes held"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_process_dies_of_any_exit_signal() {
    // A loop never reaches a receive, yet an exit signal other than `kill`
    // still ends it at its next timeslice when it does not trap exits.
    let node = node();
    let mut watcher = node.mailbox().unwrap();
    let (pid, r) = watcher
        .spawn("faulty", fault(Fault::Loop), false, true)
        .unwrap();
    node.exit(pid, "shutdown");
    assert_eq!(down_reason(&mut watcher, r.unwrap()).await, "shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_hits_memory_bytes_max() {
    let node = start_node(NodeConfig {
        memory_bytes_max: 4 << 20,
        ..test_config()
    });
    let mut watcher = node.mailbox().unwrap();
    let why = run_to_exit(&mut watcher, "faulty", fault(Fault::MemoryBomb)).await;
    assert!(why.starts_with("limit: "), "reason {why:?}");
    assert!(
        why.contains("memory_bytes_max (4194304 bytes)"),
        "reason {why:?}"
    );
    assert_node_works(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_faults_end_only_the_guest_with_a_specific_reason() {
    let node = node();
    let mut watcher = node.mailbox().unwrap();
    let why = run_to_exit(&mut watcher, "faulty", fault(Fault::BadPointer)).await;
    assert!(
        why.starts_with("bad_pointer: message payload at 0xfffffff0+64 is outside linear memory"),
        "reason {why:?}"
    );
    assert_node_works(&node).await;
    let why = run_to_exit(&mut watcher, "faulty", fault(Fault::Unreachable)).await;
    assert!(why.starts_with("trap: "), "reason {why:?}");
    assert!(why.contains("unreachable"), "reason {why:?}");
    let why = run_to_exit(&mut watcher, "faulty", fault(Fault::DivideByZero)).await;
    assert!(
        why.starts_with("panic: attempt to divide by zero"),
        "reason {why:?}"
    );
    let why = run_to_exit(&mut watcher, "faulty", fault(Fault::Normal)).await;
    assert_eq!(why, "normal");
    // Arguments that do not decode: the SDK refuses to start.
    let why = run_to_exit(&mut watcher, "faulty", vec![0xff; 3]).await;
    assert!(why.starts_with("badarg: "), "reason {why:?}");
    assert_node_works(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_larger_than_message_bytes_max_are_refused() {
    let node = start_node(NodeConfig {
        message_bytes_max: 1024,
        ..test_config()
    });
    let mut watcher = node.mailbox().unwrap();
    let me = watcher.pid();
    // From a guest: the send reports MESSAGE_TOO_LARGE and nothing arrives.
    let why = run_to_exit(
        &mut watcher,
        "faulty",
        fault(Fault::SendHuge {
            to: me,
            bytes: 4096,
        }),
    )
    .await;
    assert_eq!(why, "normal");
    assert_eq!(
        reported_status(&mut watcher).await,
        status::MESSAGE_TOO_LARGE
    );
    assert_eq!(watcher.pending(), 0, "the oversized message was delivered");
    // Exactly the limit passes.
    let why = run_to_exit(
        &mut watcher,
        "faulty",
        fault(Fault::SendHuge {
            to: me,
            bytes: 1024,
        }),
    )
    .await;
    assert_eq!(why, "normal");
    let big = watcher.recv(WAIT).await.expect("the 1024-byte message");
    assert_eq!(big.payload.len(), 1024);
    assert_eq!(reported_status(&mut watcher).await, status::OK);
    // From the host.
    let p = Puppet::spawn(&node).await;
    let too_large = SendError::TooLarge {
        size: 1025,
        max: 1024,
    };
    assert_eq!(node.send(p.pid, 5, vec![0; 1025]), Err(too_large.clone()));
    assert_eq!(
        watcher.send(p.pid, 5, Ref::NONE, vec![0; 1025]),
        Err(too_large)
    );
    assert_eq!(node.send(p.pid, 5, vec![0; 1024]), Ok(()));
    // Init arguments too.
    assert_eq!(
        node.spawn("faulty", vec![0; 2000]),
        Err(SpawnError::ArgsTooLarge {
            size: 2000,
            max: 1024
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_refuses_more_messages() {
    let node = start_node(NodeConfig {
        mailbox_len_max: 10,
        ..test_config()
    });
    let mut watcher = node.mailbox().unwrap();
    // The receiver never receives.
    let (sink, watch) = watcher
        .spawn("faulty", fault(Fault::Loop), false, true)
        .unwrap();
    for i in 0..10u32 {
        assert_eq!(
            watcher.send(sink, 9, Ref::NONE, codec::encode(&i)),
            Ok(()),
            "message {i}"
        );
    }
    assert_eq!(
        watcher.send(sink, 9, Ref::NONE, codec::encode(&10u32)),
        Err(SendError::MailboxFull(10))
    );
    assert_eq!(node.send(sink, 9, vec![]), Err(SendError::MailboxFull(10)));
    let mut p = Puppet::spawn(&node).await;
    assert_eq!(
        p.cmd(Cmd::Send {
            to: sink,
            tag: 9,
            payload: vec![]
        })
        .await,
        Outcome::Status(status::MAILBOX_FULL)
    );
    // Other mailboxes are not affected.
    assert_eq!(
        p.cmd(Cmd::Send {
            to: watcher.pid(),
            tag: 9,
            payload: vec![]
        })
        .await,
        Outcome::Ok
    );
    node.exit(sink, "kill");
    assert_eq!(down_reason(&mut watcher, watch.unwrap()).await, "killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_takes_messages_makes_room() {
    let node = start_node(NodeConfig {
        mailbox_len_max: 10,
        ..test_config()
    });
    let mut sink = node.mailbox().unwrap();
    let to = sink.pid();
    for _ in 0..10 {
        assert_eq!(node.send(to, 9, vec![]), Ok(()));
    }
    assert_eq!(node.send(to, 9, vec![]), Err(SendError::MailboxFull(10)));
    assert!(sink.recv(WAIT).await.is_some());
    assert_eq!(node.send(to, 9, vec![]), Ok(()));
    assert_eq!(node.send(to, 9, vec![]), Err(SendError::MailboxFull(10)));
    assert_eq!(sink.pending(), 10);
}

/// Spawn idle processes until the node refuses; returns them.
fn fill(node: &Node, watcher: &mut HostMailbox) -> Vec<(Pid, Ref)> {
    let max = node.config().processes_max;
    let mut idle = Vec::new();
    loop {
        match watcher.spawn("counter", codec::encode(&0u64), false, true) {
            Ok((pid, r)) => idle.push((pid, r.unwrap())),
            Err(e) => {
                assert_eq!(e, SpawnError::ProcessLimit(max));
                break;
            }
        }
        assert!(idle.len() <= max as usize, "spawned past processes_max");
    }
    idle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawning_past_processes_max_fails_until_some_exit() {
    let node = start_node(NodeConfig {
        processes_max: 20,
        ..test_config()
    });
    assert_eq!(node.config().processes_max, 20);
    let mut watcher = node.mailbox().unwrap();
    let mut p = Puppet::spawn(&node).await;
    // watcher, the puppet and its controller: 3.
    let idle = fill(&node, &mut watcher);
    assert_eq!(idle.len(), 17);
    assert_eq!(node.stats().alive, 20);
    assert_eq!(
        node.spawn("counter", codec::encode(&0u64)),
        Err(SpawnError::ProcessLimit(20))
    );
    assert!(matches!(node.mailbox(), Err(SpawnError::ProcessLimit(20))));
    let spawn_counter = Cmd::Spawn {
        module: "counter".into(),
        args: codec::encode(&0u64),
        link: false,
        monitor: false,
    };
    assert_eq!(
        p.cmd(spawn_counter.clone()).await,
        Outcome::Status(status::PROCESS_LIMIT)
    );
    // One exits: its slot is free once its DOWN is out.
    let (pid, r) = idle[0];
    node.exit(pid, "kill");
    assert_eq!(down_reason(&mut watcher, r).await, "killed");
    match p.cmd(spawn_counter.clone()).await {
        Outcome::Pid(child) => assert!(node.is_alive(child)),
        other => panic!("spawn after an exit gave {other:?}"),
    }
    assert_eq!(
        p.cmd(spawn_counter).await,
        Outcome::Status(status::PROCESS_LIMIT)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawning_an_unknown_module_fails() {
    let node = node();
    let mut p = Puppet::spawn(&node).await;
    assert_eq!(
        node.spawn("no-such-module", vec![]),
        Err(SpawnError::NoModule("no-such-module".into()))
    );
    let mut watcher = node.mailbox().unwrap();
    assert_eq!(
        watcher.spawn("no-such-module", vec![], true, true),
        Err(SpawnError::NoModule("no-such-module".into()))
    );
    assert_eq!(
        p.cmd(Cmd::Spawn {
            module: "no-such-module".into(),
            args: vec![],
            link: true,
            monitor: true,
        })
        .await,
        Outcome::Status(status::NO_MODULE)
    );
    // A failed spawn_link leaves no link behind: the puppet is fine.
    let me = p.pid;
    assert_eq!(p.cmd(Cmd::IsAlive(me)).await, Outcome::Bool(true));
}

/// Bytes that look random but are the same on every run.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_modules_are_refused_and_the_node_keeps_running() {
    let node = node();
    let mut p = Puppet::spawn(&node).await;
    let before = node.code().current("puppet").unwrap().identity.clone();
    let real = std::fs::read(guests_dir().join("puppet.wasm")).unwrap();
    let mut header_then_noise = b"\0asm\x01\0\0\0".to_vec();
    header_then_noise.extend(noise(512));
    let cases: [(&str, Vec<u8>); 4] = [
        ("random bytes", noise(4096)),
        ("a truncated guest", real[..real.len() / 2].to_vec()),
        ("an empty file", Vec::new()),
        ("a wasm header then noise", header_then_noise),
    ];
    for (what, bytes) in cases {
        match node.load(&bytes, "puppet") {
            Err(LoadError::Invalid(_)) => {}
            other => panic!("{what}: expected LoadError::Invalid, got {other:?}"),
        }
    }
    // Nothing was replaced, and what ran runs on.
    assert_eq!(node.code().current("puppet").unwrap().identity, before);
    let me = p.pid;
    assert_eq!(p.cmd(Cmd::IsAlive(me)).await, Outcome::Bool(true));
    assert_node_works(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_larger_than_module_bytes_max_is_refused() {
    // No guests preloaded: they are larger than this limit.
    let node = Node::start(NodeConfig {
        module_bytes_max: 16 << 10,
        ..test_config()
    })
    .unwrap();
    let echo = wat_fixture("echo.wat");
    assert!(echo.len() <= 16 << 10);
    node.load(&echo, "echo").expect("a small module loads");
    let mut watcher = node.mailbox().unwrap();
    let echo_pid = node
        .spawn("echo", watcher.pid().to_bytes().to_vec())
        .unwrap();
    let big = std::fs::read(guests_dir().join("puppet.wasm")).unwrap();
    assert!(big.len() > 16 << 10);
    match node.load(&big, "puppet") {
        Err(LoadError::TooLarge { size, max }) => assert_eq!((size, max), (big.len(), 16 << 10)),
        other => panic!("expected LoadError::TooLarge, got {other:?}"),
    }
    assert!(node.code().current("puppet").is_none());
    // The echo process still echoes.
    watcher
        .send(echo_pid, 12, Ref::NONE, vec![1, 2, 3])
        .unwrap();
    let back = watcher.recv(WAIT).await.expect("the echo");
    assert_eq!((back.tag, &*back.payload), (12, &[1u8, 2, 3][..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_delays_too_long_to_represent_mean_never() {
    let node = node();
    let mut p = Puppet::spawn(&node).await;
    let watch = p.ctl.monitor(p.pid);
    // A timer of ~146 million years: accepted, never fires.
    let far = Cmd::SendAfter {
        delay_ms: u64::MAX / 2,
        to: p.pid,
        tag: tag::DATA,
        payload: vec![],
    };
    assert!(matches!(p.cmd(far).await, Outcome::Ref(_)));
    // A receive that long waits like one without a timeout...
    p.order(Cmd::Receive {
        tags: vec![0x7777],
        reference: None,
        timeout_ms: Some(u64::MAX / 2),
    });
    assert!(p.try_event(molt_tests::QUIET).await.is_none());
    assert!(node.is_alive(p.pid));
    // ...and the process can still be ended, with the usual reason.
    node.exit(p.pid, molt_abi::reason::KILL);
    assert_eq!(
        down_reason(&mut p.ctl, watch).await,
        molt_abi::reason::KILLED
    );
    assert_node_works(&node).await;
}

/// A raw guest that gets its parent's pid (kept at 0..24), then calls
/// `call` (which leaves a status) until it fails, and sends its parent
/// `(successes, status)` as two little-endian i32s.
fn until_refused(call: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
  (import "molt" "msg_read" (func $msg_read (param i32 i32) (result i32)))
  (import "molt" "send" (func $send (param i32 i32 i32 i32 i32) (result i32)))
  (import "molt" "monitor" (func $monitor (param i32 i32) (result i32)))
  (import "molt" "spawn" (func $spawn (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "molt" "receive" (func $receive (param i32 i32 i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 32) "idle")
  (func (export "molt_main") (param i32)
    (local $n i32) (local $s i32)
    (drop (call $msg_read (i32.const 0) (i32.const 24)))
    (block $done
      (loop $again
        (local.set $s {call})
        (br_if $done (i32.ne (local.get $s) (i32.const 0)))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $again)))
    (i32.store (i32.const 64) (local.get $n))
    (i32.store (i32.const 68) (local.get $s))
    (drop (call $send (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 64) (i32.const 8)))
    ;; Stay alive (holding what it made) until told otherwise.
    (drop (call $receive (i32.const 0) (i32.const 0) (i32.const 0) (i64.const -1) (i32.const 96)))))"#
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_and_monitors_per_process_are_bounded() {
    let node = start_node(NodeConfig {
        links_max: 5,
        monitors_max: 7,
        ..test_config()
    });
    let idle = wat::parse_str(
        r#"(module
  (import "molt" "receive" (func $receive (param i32 i32 i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "molt_main") (param i32)
    (drop (call $receive (i32.const 0) (i32.const 0) (i32.const 0) (i64.const -1) (i32.const 0)))))"#,
    )
    .unwrap();
    node.load(&idle, "idle").unwrap();
    let cases = [
        (
            "monitor-loop",
            "(call $monitor (i32.const 0) (i32.const 128))",
            7,
            status::MONITOR_LIMIT,
        ),
        (
            "link-loop",
            // spawn_link("idle"): a new link each time.
            "(call $spawn (i32.const 32) (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 128) (i32.const 160))",
            5,
            status::LINK_LIMIT,
        ),
    ];
    let mut me = node.mailbox().unwrap();
    for (name, call, made, refused) in cases {
        node.load(&until_refused(call), name).unwrap();
        let alive = node.stats().alive;
        me.spawn(name, me.pid().to_bytes().to_vec(), false, false)
            .unwrap();
        let m = me.recv(WAIT).await.expect("the guest reports");
        let n = i32::from_le_bytes(m.payload[..4].try_into().unwrap());
        let s = i32::from_le_bytes(m.payload[4..8].try_into().unwrap());
        assert_eq!((n, s), (made, refused), "{name}");
        if name == "link-loop" {
            // The refused spawn made no process: the guest and its five.
            assert_eq!(node.stats().alive, alive + 1 + 5);
        }
    }
}
