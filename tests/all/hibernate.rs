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
