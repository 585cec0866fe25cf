//! `molt node --watch`: a module file written into the watched directory is
//! loaded and running processes move to it; the same bytes again change
//! nothing; a truncated file is refused and the running version stays.

use std::path::Path;

use counter::CounterMsg;
use molt_abi::{Pid, codec};
use molt_host::control::watch::{self, WatchError, WatchEvent, WatchOutcome};
use molt_host::{HostMailbox, Node};
use molt_tests::*;
use tokio::sync::broadcast;

/// Write `bytes` to `to` the way cargo and editors do: a hidden temporary
/// file renamed over the target.
fn write_by_rename(to: &Path, bytes: &[u8]) {
    let name = to.file_name().unwrap().to_string_lossy();
    let tmp = to.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// The next thing the watcher did, within [`WAIT`].
async fn next_event(events: &mut broadcast::Receiver<WatchEvent>) -> WatchEvent {
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Ok(event)) => return event,
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(broadcast::error::RecvError::Closed)) => panic!("the watcher stopped"),
            Err(_) => panic!("no watch event within {WAIT:?}"),
        }
    }
}

fn loaded(version: &str, previous: Option<&str>) -> WatchOutcome {
    WatchOutcome::Loaded {
        module: "counter".into(),
        version: version.into(),
        previous: previous.map(str::to_string),
    }
}

/// Current and old version of `counter`, as `molt modules` shows them.
fn counter_versions(node: &Node) -> (Option<String>, Option<String>) {
    let module = node
        .modules()
        .into_iter()
        .find(|m| m.name == "counter")
        .expect("counter is loaded");
    (
        module.current.map(|v| v.version),
        module.old.map(|v| v.version),
    )
}

fn spawn_counter(me: &mut HostMailbox, start: u64) -> Pid {
    me.spawn("counter", codec::encode(&start), false, false)
        .unwrap()
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_module_is_loaded_and_its_processes_move_to_it() {
    let dir = TempDir::new("rebuilt");
    let node = node();
    let mut me = node.mailbox().unwrap();
    let counter = spawn_counter(&mut me, 5);
    send_counter(&mut me, counter, &CounterMsg::Add(7));
    assert_eq!(count_of(&mut me, counter).await, 12);
    let mut watcher = watch::watch(node.clone(), dir.path()).unwrap();
    let mut events = watcher.events();
    let file = dir.path().join("counter.wasm");

    // The version the node runs already: nothing changes, no code event.
    let code_events = node.code_events().len();
    std::fs::copy(guest_file("counter"), &file).unwrap();
    let event = next_event(&mut events).await;
    assert_eq!(event.file, file);
    assert_eq!(
        event.outcome,
        WatchOutcome::Unchanged {
            module: "counter".into(),
            version: "0.1.0".into()
        }
    );
    assert_eq!(node.code_events().len(), code_events);
    assert_eq!(counter_versions(&node), (Some("0.1.0".into()), None));

    // A rebuild renamed over it: 0.2.0 is current and the counter runs it
    // with its count.
    write_by_rename(&file, &std::fs::read(guest_file("counter-v2")).unwrap());
    let event = next_event(&mut events).await;
    assert_eq!(event.file, file);
    assert_eq!(event.outcome, loaded("0.2.0", Some("0.1.0")));
    assert_eq!(
        counter_versions(&node),
        (Some("0.2.0".into()), Some("0.1.0".into()))
    );
    assert_eq!(stats_of(&mut me, counter).await, (12, 0));
    send_counter(&mut me, counter, &CounterMsg::Add(1));
    assert_eq!(stats_of(&mut me, counter).await, (13, 1));
    assert_eq!(version_of(&node, counter).as_deref(), Some("0.2.0"));
    let last = node.code_events().pop().unwrap();
    assert!(!last.failure, "{last:?}");
    assert!(last.what.contains("0.2.0"), "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_file_is_refused_and_the_running_version_stays() {
    let dir = TempDir::new("truncated");
    let node = node();
    let mut me = node.mailbox().unwrap();
    let counter = spawn_counter(&mut me, 3);
    let mut watcher = watch::watch(node.clone(), dir.path()).unwrap();
    let mut events = watcher.events();
    let file = dir.path().join("counter.wasm");

    let v2 = std::fs::read(guest_file("counter-v2")).unwrap();
    std::fs::write(&file, &v2[..v2.len() / 2]).unwrap();
    let event = next_event(&mut events).await;
    assert_eq!(event.file, file);
    let WatchOutcome::Refused { reason } = &event.outcome else {
        panic!("a half file must be refused, got {:?}", event.outcome);
    };
    assert!(reason.contains("invalid module"), "{reason}");
    let last = node.code_events().pop().unwrap();
    assert!(last.failure, "{last:?}");
    assert_eq!(last.module, "counter.wasm");
    assert!(last.what.contains("invalid module"), "{last:?}");
    assert_eq!(counter_versions(&node), (Some("0.1.0".into()), None));
    send_counter(&mut me, counter, &CounterMsg::Add(4));
    assert_eq!(count_of(&mut me, counter).await, 7);
    assert_eq!(version_of(&node, counter).as_deref(), Some("0.1.0"));

    // The writer finishes: the whole file loads.
    std::fs::write(&file, &v2).unwrap();
    let event = next_event(&mut events).await;
    assert_eq!(event.outcome, loaded("0.2.0", Some("0.1.0")));
    assert_eq!(stats_of(&mut me, counter).await, (7, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_in_the_directory_at_start_are_loaded() {
    let dir = TempDir::new("existing");
    std::fs::copy(guest_file("counter-v2"), dir.path().join("counter_v2.wasm")).unwrap();
    // Not module files: skipped.
    std::fs::write(dir.path().join("notes.txt"), b"not wasm").unwrap();
    std::fs::write(dir.path().join(".counter.wasm.swp"), b"editor swap").unwrap();
    let node = node();
    let mut watcher = watch::watch(node.clone(), dir.path()).unwrap();
    let mut events = watcher.events();
    let event = next_event(&mut events).await;
    assert_eq!(event.file, dir.path().join("counter_v2.wasm"));
    assert_eq!(event.outcome, loaded("0.2.0", Some("0.1.0")));
    assert_eq!(watcher.dir(), dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_a_missing_directory_fails() {
    let dir = TempDir::new("missing");
    let missing = dir.path().join("nope");
    let err = watch::watch(node(), &missing).unwrap_err();
    assert!(
        matches!(err, WatchError::NotADirectory(ref p) if *p == missing),
        "{err}"
    );
}

#[test]
fn molt_demo_upgrades_counters_under_a_stream_and_loses_nothing() {
    let (out, text) = molt(&["demo".as_ref()]);
    // The demo's own account (lines without a log timestamp; its log has
    // no colours off a terminal) and its last lines come first: the error
    // it ended with is there.
    let story: Vec<&str> = text.lines().filter(|l| !l.starts_with("20")).collect();
    let tail: Vec<&str> = text.lines().rev().take(20).collect();
    assert!(
        out.status.success(),
        "molt demo failed; what it said:\n{}\n\nits last lines, newest first:\n{}\n\nall of it:\n{text}",
        story.join("\n"),
        tail.join("\n")
    );
    assert!(text.contains("crash-demo: done"), "{text}");
    let upgraded = text
        .lines()
        .filter(|l| l.contains("0.1.0 -> 0.2.0") && l.contains(" sent; Stats: "))
        .count();
    assert_eq!(upgraded, 3, "{text}");
    assert!(text.contains("nothing lost"), "{text}");
    // The replicated table's part: the two shoppers off the lost node
    // finish, every add of theirs there exactly once.
    let exact = text
        .lines()
        .filter(|l| l.contains("tea from 200 transactions, each add exactly once"))
        .count();
    assert_eq!(exact, 2, "{text}");
    assert!(
        text.contains("(its shopper was on the lost node)"),
        "{text}"
    );
}

/// The current version of `module` on `node`, as `molt modules` reports it.
async fn current_on(
    control: &molt_host::Control,
    node: &str,
    module: &str,
) -> (Option<String>, Vec<molt_host::code::CodeEvent>) {
    let report = control.modules_of(node).await.expect("a module report");
    let current = report
        .modules
        .iter()
        .find(|m| m.name == module)
        .and_then(|m| m.current.as_ref())
        .map(|v| v.version.clone());
    (current, report.events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn molt_node_watch_loads_rebuilt_files_and_refuses_broken_ones() {
    let secret = "watch-cli-cookie";
    let dir = TempDir::new("cli");
    std::fs::copy(guest_file("counter"), dir.path().join("counter.wasm")).unwrap();
    let (child, addr) = ChildNode::start(
        &[
            "--name".as_ref(),
            "w".as_ref(),
            "--watch".as_ref(),
            dir.path().as_os_str(),
        ],
        secret,
    )
    .await;
    let (a, da) = dist_node_with("watcher", secret.as_bytes(), |_| {}).await;
    da.join(&format!("w@{addr}"))
        .await
        .expect("joining the node");
    let da = molt_tests::control(&a, &da);
    let node = "w@127.0.0.1";

    // Wait (bounded) until the node reports `want` as counter's current.
    let wait_for = |want: &'static str| {
        let da = da.clone();
        async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let (current, events) = current_on(&da, node, "counter").await;
                if current.as_deref() == Some(want) {
                    return events;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "counter is {current:?}, not {want}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    wait_for("0.1.0").await;

    // A rebuilt module, written as cargo does (a new file renamed over).
    let staged = dir.path().join(".counter.wasm.tmp");
    std::fs::copy(guest_file("counter-v2"), &staged).unwrap();
    std::fs::rename(&staged, dir.path().join("counter.wasm")).unwrap();
    wait_for("0.2.0").await;

    // A half-written file is refused, logged as a failure, and 0.2.0 stays.
    let v1 = std::fs::read(guest_file("counter")).unwrap();
    std::fs::write(dir.path().join("counter.wasm"), &v1[..v1.len() / 2]).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (current, events) = current_on(&da, node, "counter").await;
        assert_eq!(
            current.as_deref(),
            Some("0.2.0"),
            "the running version stays"
        );
        if events
            .iter()
            .any(|e| e.failure && e.module.contains("counter.wasm"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refusal: {events:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    da.disconnect().await;
    drop(child);
}
