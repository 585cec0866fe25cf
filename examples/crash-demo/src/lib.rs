//! `crash-demo`: spawn counters, talk to them, and watch one crash and one
//! stop through a link and a monitor. With a node name as its argument it
//! then does the same across nodes: a counter spawned and linked on that
//! node, messages both ways, and its crash caught here.
//!
//! Needs the `counter` module loaded on this node (and on the other).

use std::time::Duration;

use counter::{CounterMsg, CounterReply};
use molt_sdk::{Filter, Pid, System, abi::tag};

/// How long each step waits for an answer before giving up.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

fn run(args: Vec<String>) -> Result<(), String> {
    molt_sdk::info!("crash-demo: I am {}", molt_sdk::self_pid());

    // 1. A counter, some messages, a reply.
    let first = molt_sdk::spawn("counter", &10u64).map_err(|e| format!("spawn counter: {e}"))?;
    molt_sdk::info!("crash-demo: spawned counter {first} starting at 10");
    send(first, &CounterMsg::Add(5))?;
    send(first, &CounterMsg::Add(5))?;
    send(
        first,
        &CounterMsg::Get {
            from: molt_sdk::self_pid(),
        },
    )?;
    let CounterReply::Count(count) = molt_sdk::recv_timeout::<CounterReply>(STEP_TIMEOUT)
        .ok_or("no reply from the counter")?
        .map_err(|e| format!("bad reply: {e}"))?;
    molt_sdk::info!("crash-demo: after Add(5) twice the counter holds {count} (expected 20)");

    // 2. A linked counter crashes; trapping exits turns its death into a message.
    molt_sdk::trap_exit(true);
    let linked = molt_sdk::spawn_link("counter", &0u64).map_err(|e| format!("spawn_link: {e}"))?;
    molt_sdk::info!("crash-demo: linked to counter {linked}, telling it to crash");
    send(linked, &CounterMsg::Crash("boom".into()))?;
    let exit = molt_sdk::receive_matching(&Filter::any().tags(&[tag::EXIT]), Some(STEP_TIMEOUT))
        .ok_or("no EXIT from the crashed counter")?;
    match exit.system() {
        Some(System::Exit { from, reason }) => {
            molt_sdk::info!("crash-demo: EXIT from {from} caught by the link: {reason}")
        }
        other => return Err(format!("expected an EXIT message, got {other:?}")),
    }

    // 3. A monitored counter stops normally; the monitor reports DOWN.
    let (watched, reference) =
        molt_sdk::spawn_monitor("counter", &0u64).map_err(|e| format!("spawn_monitor: {e}"))?;
    molt_sdk::info!("crash-demo: monitoring counter {watched}, telling it to stop");
    send(watched, &CounterMsg::Stop)?;
    let down = molt_sdk::receive_matching(
        &Filter::any().tags(&[tag::DOWN]).reference(reference),
        Some(STEP_TIMEOUT),
    )
    .ok_or("no DOWN from the stopped counter")?;
    match down.system() {
        Some(System::Down { pid, reason, .. }) => {
            molt_sdk::info!("crash-demo: DOWN from {pid}: {reason}")
        }
        other => return Err(format!("expected a DOWN message, got {other:?}")),
    }

    // 4. The same across nodes, if given one.
    if let Some(node) = args.first() {
        remote(node)?;
    }

    molt_sdk::info!("crash-demo: done");
    Ok(())
}

fn remote(node: &str) -> Result<(), String> {
    molt_sdk::info!(
        "crash-demo: I run on {}; connected nodes: {:?}",
        molt_sdk::node(),
        molt_sdk::nodes()
    );
    let counter = molt_sdk::spawn_link_on(node, "counter", &100u64)
        .map_err(|e| format!("spawn_link_on {node}: {e}"))?;
    molt_sdk::info!("crash-demo: spawned and linked counter {counter} on {node}");
    send(counter, &CounterMsg::Add(1))?;
    send(
        counter,
        &CounterMsg::Get {
            from: molt_sdk::self_pid(),
        },
    )?;
    let CounterReply::Count(count) = molt_sdk::recv_timeout::<CounterReply>(STEP_TIMEOUT)
        .ok_or("no reply from the remote counter")?
        .map_err(|e| format!("bad reply: {e}"))?;
    molt_sdk::info!("crash-demo: the counter on {node} holds {count} (expected 101)");
    send(counter, &CounterMsg::Crash("remote boom".into()))?;
    let exit = molt_sdk::receive_matching(&Filter::any().tags(&[tag::EXIT]), Some(STEP_TIMEOUT))
        .ok_or("no EXIT from the remote counter")?;
    match exit.system() {
        Some(System::Exit { from, reason }) => {
            molt_sdk::info!("crash-demo: EXIT from {from} on {node} caught by the link: {reason}");
            Ok(())
        }
        other => Err(format!("expected an EXIT message, got {other:?}")),
    }
}

fn send(to: Pid, msg: &CounterMsg) -> Result<(), String> {
    molt_sdk::send(to, msg).map_err(|e| format!("send to {to}: {e}"))
}

molt_sdk::main!(run);
