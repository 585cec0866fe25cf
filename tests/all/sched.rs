//! Guest processes on the node's own scheduler threads
//! (`NodeConfig::process_threads`, the default) with one and two threads:
//! preemption, killing, per-sender order and a ring of many processes.

use std::time::Duration;

use molt_abi::codec;
use molt_host::{Node, NodeConfig};
use molt_tests::{
    Cmd, Event, Outcome, Puppet, loops_are_preempted_and_killed, ring_of_links, start_node,
    test_config, token_comes_back,
};

/// A node whose processes run on `threads` threads of its own, which
/// search for work for 20 µs before they sleep.
fn node_on_own_threads(threads: usize) -> Node {
    start_node(NodeConfig {
        process_threads: threads,
        spin_before_park: Duration::from_micros(20),
        ..test_config()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_loops_on_the_nodes_threads_are_preempted_and_killed() {
    // Four loops on one thread, then on two: without preemption nothing
    // else would ever run there.
    loops_are_preempted_and_killed(&node_on_own_threads(1), 4).await;
    loops_are_preempted_and_killed(&node_on_own_threads(2), 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_nodes_threads_each_senders_messages_keep_their_order() {
    let node = node_on_own_threads(2);
    let mut receiver = Puppet::spawn(&node).await;
    let mut senders = Vec::new();
    for t in 0..4u32 {
        let mut s = Puppet::spawn(&node).await;
        let send = Cmd::SendSeq {
            to: receiver.pid,
            tag: 10 + t,
            count: 300,
        };
        assert_eq!(s.cmd(send).await, Outcome::Ok);
        senders.push(s);
    }
    let mut next = [0u32; 4];
    for _ in 0..4 * 300 {
        match receiver.event().await {
            Event::Got { tag, payload, .. } if (10..14).contains(&tag) => {
                let n: u32 = codec::decode(&payload).expect("a sequence number");
                let i = (tag - 10) as usize;
                assert_eq!(n, next[i], "sender {i} out of order");
                next[i] += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(next, [300; 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_goes_round_a_ring_on_one_of_the_nodes_threads_and_comes_back_once() {
    // One thread: every hop is a hand-off on that thread, past the limit of
    // hand-offs in a row many times.
    let node = node_on_own_threads(1);
    let mut me = node.mailbox().unwrap();
    let order = ring_of_links(&node, &mut me, 200);
    assert!(
        token_comes_back(&mut me, order[0], 2_000).await,
        "the token comes back"
    );
    assert!(me.recv(Duration::from_millis(300)).await.is_none());
}
