//! Guest processes on the node's own scheduler threads
//! (`NodeConfig::process_threads`): preemption, killing, per-sender order
//! and a ring of many processes behave as on tokio's.

use std::time::Duration;

use faulty::Fault;
use molt_abi::{Ref, codec, tag};
use molt_host::{Node, NodeConfig};
use molt_tests::{Cmd, Event, Outcome, Puppet, down_reason, start_node, test_config};

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
    // Twice as many loops as threads: without preemption nothing else
    // would ever run there.
    let node = node_on_own_threads(2);
    let mut watcher = node.mailbox().unwrap();
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (pid, r) = watcher
            .spawn("faulty", codec::encode(&Fault::Loop), false, true)
            .unwrap();
        loops.push((pid, r.unwrap()));
    }
    let mut p = Puppet::spawn(&node).await;
    let me = p.pid;
    for _ in 0..100 {
        assert_eq!(p.cmd(Cmd::IsAlive(me)).await, Outcome::Bool(true));
    }
    for &(pid, _) in &loops {
        assert!(node.is_alive(pid), "a loop ended by itself");
        node.exit(pid, "kill");
    }
    for (pid, r) in loops {
        assert_eq!(down_reason(&mut watcher, r).await, "killed");
        assert!(!node.is_alive(pid));
    }
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
    use molt_tests::bench_wire::{BenchArgs, BenchRing};
    // One thread: every hop is a hand-off on that thread, past the limit of
    // hand-offs in a row many times.
    let node = node_on_own_threads(1);
    let mut me = node.mailbox().unwrap();
    let spawn = |next| {
        node.spawn("bench-guest", codec::encode(&BenchArgs::RingLink { next }))
            .unwrap()
    };
    let first = spawn(None);
    let mut last = first;
    for _ in 1..200 {
        last = spawn(Some(last));
    }
    let send = |me: &mut molt_host::HostMailbox, msg: &BenchRing| {
        me.send(first, tag::DATA, Ref::NONE, codec::encode(msg))
            .unwrap()
    };
    send(&mut me, &BenchRing::Next(last));
    let report = me.pid();
    send(
        &mut me,
        &BenchRing::Token {
            hops: 2_000,
            report,
        },
    );
    let done = me
        .recv(Duration::from_secs(30))
        .await
        .expect("the token comes back");
    assert_eq!(
        codec::decode::<BenchRing>(&done.payload),
        Ok(BenchRing::Done)
    );
    assert!(me.recv(Duration::from_millis(300)).await.is_none());
}
