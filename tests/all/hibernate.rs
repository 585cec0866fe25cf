//! Hibernation (`NodeConfig::hibernate_after`): an idle behaviour gives
//! back its instance and keeps only its saved state; its next message,
//! upgrade or signal finds it as it was.

use std::time::Duration;

use counter::CounterMsg;
use molt_abi::{Pid, codec, reason};
use molt_host::{Node, NodeConfig};
use molt_tests::*;

fn hibernating_node() -> Node {
    start_node(NodeConfig {
        hibernate_after: Some(Duration::from_millis(50)),
        ..test_config()
    })
}

/// Wait until `pids` all hibernate (the node counts them, `ps` shows them
/// hibernated, with no linear memory).
async fn wait_hibernated(node: &Node, pids: &[Pid]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let asleep = node
            .processes()
            .iter()
            .filter(|p| pids.contains(&p.pid) && p.memory_bytes == 0 && p.status() == "hibernated")
            .count();
        if asleep == pids.len() && node.stats().hibernated >= pids.len() as u64 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{asleep} of {} hibernated ({} counted)",
            pids.len(),
            node.stats().hibernated
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_behaviours_hibernate_and_wake_with_their_state_in_order() {
    let node = hibernating_node();
    let mut me = node.mailbox().unwrap();
    let mut pids = Vec::new();
    for start in 0..20u64 {
        let (pid, _) = me
            .spawn("counter", codec::encode(&(start * 100)), false, false)
            .unwrap();
        send_counter(&mut me, pid, &CounterMsg::Add(start));
        pids.push(pid);
    }
    wait_hibernated(&node, &pids).await;
    // Messages queued while it sleeps are handled in order after it wakes,
    // on the state it saved.
    for (i, pid) in pids.iter().enumerate() {
        send_counter(&mut me, *pid, &CounterMsg::Add(1));
        send_counter(&mut me, *pid, &CounterMsg::Add(2));
        assert_eq!(count_of(&mut me, *pid).await, i as u64 * 101 + 3);
    }
    // And it sleeps again once idle, and wakes again.
    wait_hibernated(&node, &pids).await;
    assert_eq!(count_of(&mut me, pids[7]).await, 710);
    assert_eq!(node.stats().alive, 21, "every counter and the mailbox live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hibernating_behaviour_upgrades_keeps_its_monitors_and_is_killed() {
    let node = hibernating_node();
    let mut me = node.mailbox().unwrap();
    let (pid, watch) = me
        .spawn("counter", codec::encode(&40u64), false, true)
        .unwrap();
    send_counter(&mut me, pid, &CounterMsg::Add(2));
    wait_hibernated(&node, &[pid]).await;
    // An eager upgrade wakes it and migrates the state it saved.
    let v2 = std::fs::read(guest_file("counter-v2")).unwrap();
    node.load_with(v2, "counter", Default::default())
        .await
        .unwrap();
    wait_for_version(&node, pid, "0.2.0").await;
    assert_eq!(stats_of(&mut me, pid).await, (42, 0));
    // Asleep on the new version, it still has its monitor: a kill ends it
    // and the monitor hears why.
    wait_hibernated(&node, &[pid]).await;
    me.exit(pid, reason::KILL);
    let why = me.recv_down(watch.unwrap(), WAIT).await;
    assert_eq!(why.as_deref(), Some(reason::KILLED));
    assert_eq!(node.stats().hibernated, 0, "no longer counted");
}

/// A hand-written behaviour: `msg_next` in `molt_init` must say
/// `no_message` (else it traps); a message of tag 9 makes its handler call
/// `msg_next` with a pointer outside its memory; it saves an empty state
/// and refuses every restore with `no`.
const SLEEPER_WAT: &str = r#"(module
  (import "molt" "msg_next" (func $msg_next (param i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "no")
  (func (export "molt_init") (param i32)
    (if (i32.ne (call $msg_next (i32.const 0)) (i32.const -11)) (then unreachable)))
  (func (export "molt_handle") (param $tag i32) (param $len i32)
    (if (i32.eq (local.get $tag) (i32.const 9))
      (then (drop (call $msg_next (i32.const 0x7fffffff))))))
  (func (export "molt_state_save") (result i64) (i64.const 0))
  (func (export "molt_state_restore") (param i32) (result i64)
    (i64.or (i64.shl (i64.const 2) (i64.const 32)) (i64.const 16))))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_restore_and_a_bad_msg_next_pointer_end_only_that_process() {
    let node = hibernating_node();
    node.load(SLEEPER_WAT.as_bytes(), "sleeper").unwrap();
    let mut me = node.mailbox().unwrap();
    // A message for a sleeper that cannot take its state back ends it with
    // a reason that says so.
    let (sleeper, watch) = me.spawn("sleeper", Vec::new(), false, true).unwrap();
    wait_hibernated(&node, &[sleeper]).await;
    me.send(sleeper, 1, molt_abi::Ref::NONE, Vec::new())
        .unwrap();
    let why = me.recv_down(watch.unwrap(), WAIT).await;
    assert_eq!(
        why.as_deref(),
        Some("hibernation: cannot restore the state: no")
    );
    assert_eq!(node.stats().hibernated, 0);
    // The rest of the node goes on.
    let (counter, _) = me
        .spawn("counter", codec::encode(&5u64), false, false)
        .unwrap();
    assert_eq!(count_of(&mut me, counter).await, 5);
    // On a node that never hibernates, a sleeper spawned on baseline code
    // cannot move onto the optimised code either (its new instance refuses
    // the state): it stays where it is, and goes on.
    let awake = molt_tests::node();
    let hold = awake.code().hold_optimising();
    let version = awake.load(SLEEPER_WAT.as_bytes(), "sleeper").unwrap();
    let mut me = awake.mailbox().unwrap();
    let (other, watch) = me.spawn("sleeper", Vec::new(), false, true).unwrap();
    let info = |node: &molt_host::Node| node.processes().into_iter().find(|p| p.pid == other);
    // Its instance is made when its task first runs: on baseline code only
    // if that is before the optimised code is ready.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !info(&awake).is_some_and(|p| p.baseline_code) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "it starts on baseline code"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(hold);
    molt_tests::wait_optimised(&version).await;
    // Two messages: once it takes the second, the first (and the move it
    // tried before it) is done.
    me.send(other, 1, molt_abi::Ref::NONE, Vec::new()).unwrap();
    me.send(other, 1, molt_abi::Ref::NONE, Vec::new()).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while info(&awake).is_some_and(|p| p.messages_in < 2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "message 1 not taken"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let other_info = info(&awake).expect("it stays alive");
    assert!(other_info.baseline_code, "it stays on baseline code");
    // `msg_next` checks the guest's pointer like every import.
    me.send(other, 9, molt_abi::Ref::NONE, Vec::new()).unwrap();
    let why = me.recv_down(watch.unwrap(), WAIT).await.unwrap();
    assert!(why.starts_with(reason::BAD_POINTER_PREFIX), "{why}");
    assert!(why.contains("msg_next"), "{why}");
}
