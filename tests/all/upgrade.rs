//! Hot code upgrade on one node: versions, migration of behaviour state,
//! refused migrations, purge, soft purge, downgrade, suspend/upgrade/resume,
//! and an upgrade in the middle of a message stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use counter::{CounterMsg, CounterReply};
use molt_abi::{Pid, Ref, codec, reason, tag};
use molt_host::code::{LoadError, LoadOptions, Purge, PurgeError, UpgradeMode};
use molt_host::{HostMailbox, NodeConfig, SpawnError, SysError, SysOutcome};
use molt_tests::*;
use sequencer::{Echoed, SeqMsg, SeqReport};

fn counter_v1() -> Vec<u8> {
    std::fs::read(guest_file("counter")).unwrap()
}

fn counter_v2() -> Vec<u8> {
    std::fs::read(guest_file("counter-v2")).unwrap()
}

fn counter_picky() -> Vec<u8> {
    std::fs::read(guest_file("counter-picky")).unwrap()
}

fn spawn_counter(me: &mut HostMailbox, start: u64) -> (Pid, Ref) {
    let (pid, reference) = me
        .spawn("counter", codec::encode(&start), false, true)
        .unwrap();
    (pid, reference.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_v1_to_v2_keeps_its_count_and_gains_stats() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let (a, _) = spawn_counter(&mut me, 40);
    send_counter(&mut me, a, &CounterMsg::Add(2));
    assert_eq!(count_of(&mut me, a).await, 42);
    assert_eq!(version_of(&node, a).as_deref(), Some("0.1.0"));

    let loaded = node
        .load_with(counter_v2(), "counter", LoadOptions::default())
        .await
        .unwrap();
    assert_eq!(loaded.version.identity.version, "0.2.0");
    assert_eq!(
        loaded
            .previous
            .as_ref()
            .map(|p| p.identity.version.as_str()),
        Some("0.1.0")
    );
    // Eager: the idle counter moves without a message. The process
    // records its new version a moment before it leaves the old one (it
    // frees the old instance first), so wait for both.
    wait_for_version(&node, a, "0.2.0").await;
    let counter = || {
        node.modules()
            .into_iter()
            .find(|m| m.name == "counter")
            .unwrap()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while counter().old.as_ref().unwrap().processes > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "0.1.0 never drained"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let module = counter();
    assert_eq!(module.current.as_ref().unwrap().version, "0.2.0");
    assert_eq!(module.current.as_ref().unwrap().processes, 1);
    assert_eq!(module.old.as_ref().unwrap().version, "0.1.0");
    assert_eq!(module.old.as_ref().unwrap().processes, 0);

    assert_eq!(count_of(&mut me, a).await, 42, "the count carried over");
    assert_eq!(stats_of(&mut me, a).await, (42, 0), "the new message works");
    send_counter(&mut me, a, &CounterMsg::Add(1));
    assert_eq!(stats_of(&mut me, a).await, (43, 1));

    // New spawns use the current version.
    let (b, _) = spawn_counter(&mut me, 7);
    assert_eq!(version_of(&node, b).as_deref(), Some("0.2.0"));
    assert_eq!(stats_of(&mut me, b).await, (7, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_mode_moves_a_process_at_its_next_message() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let (a, _) = spawn_counter(&mut me, 5);
    assert_eq!(count_of(&mut me, a).await, 5);
    let lazy = LoadOptions {
        mode: UpgradeMode::Lazy,
        ..LoadOptions::default()
    };
    node.load_with(counter_v2(), "counter", lazy).await.unwrap();
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        version_of(&node, a).as_deref(),
        Some("0.1.0"),
        "an idle process stays until a message comes"
    );
    // The message that arrives is handled by the new version.
    assert_eq!(stats_of(&mut me, a).await, (5, 0));
    assert_eq!(version_of(&node, a).as_deref(), Some("0.2.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_code_change_keeps_only_that_process_on_the_old_version() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let (fine, _) = spawn_counter(&mut me, 5);
    let (refuses, _) = spawn_counter(&mut me, 13);
    let (panics, _) = spawn_counter(&mut me, 666);
    for pid in [fine, refuses, panics] {
        count_of(&mut me, pid).await;
    }

    node.load_with(counter_picky(), "counter", LoadOptions::default())
        .await
        .unwrap();
    wait_for_version(&node, fine, "0.3.0-picky").await;
    // Both others tried and stay; the failure shows in ps and the events.
    let deadline = tokio::time::Instant::now() + WAIT;
    let failures = loop {
        let failed: Vec<_> = node
            .processes()
            .into_iter()
            .filter(|p| p.upgrade_failure.is_some())
            .collect();
        if failed.len() == 2 {
            break failed;
        }
        assert!(tokio::time::Instant::now() < deadline, "{failed:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    for p in &failures {
        assert_eq!(p.module.as_ref().unwrap().1, "0.1.0");
    }
    let why = |pid: Pid| {
        failures
            .iter()
            .find(|p| p.pid == pid)
            .and_then(|p| p.upgrade_failure.clone())
            .unwrap()
    };
    assert!(
        why(refuses).contains("count 13 from 0.1.0 is unlucky"),
        "{}",
        why(refuses)
    );
    assert!(
        why(panics).contains("panic: count 666 from 0.1.0"),
        "{}",
        why(panics)
    );
    let events = node.code_events();
    assert!(
        events
            .iter()
            .any(|e| e.failure && e.what.contains("unlucky") && e.module == "counter"),
        "{events:?}"
    );

    // Each still works, on the version it runs.
    assert_eq!(count_of(&mut me, fine).await, 1005, "picky answers +1000");
    assert_eq!(count_of(&mut me, refuses).await, 13);
    assert_eq!(count_of(&mut me, panics).await, 666);
    send_counter(&mut me, refuses, &CounterMsg::Add(1));
    assert_eq!(count_of(&mut me, refuses).await, 14);
    assert_eq!(version_of(&node, refuses).as_deref(), Some("0.1.0"));

    let module = node
        .modules()
        .into_iter()
        .find(|m| m.name == "counter")
        .unwrap();
    assert_eq!(module.current.unwrap().processes, 1);
    assert_eq!(module.old.unwrap().processes, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_change_that_never_returns_is_cut_off_and_the_process_stays() {
    let node = start_node(NodeConfig {
        code_change_timeout: Duration::from_millis(200),
        ..test_config()
    });
    let mut me = node.mailbox().unwrap();
    let (looping, _) = spawn_counter(&mut me, 999);
    let (fine, _) = spawn_counter(&mut me, 1);
    count_of(&mut me, looping).await;
    node.load(&counter_picky(), "counter").unwrap();
    wait_for_version(&node, fine, "0.3.0-picky").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let why = loop {
        let failure = node
            .processes()
            .into_iter()
            .find(|p| p.pid == looping)
            .and_then(|p| p.upgrade_failure);
        if let Some(why) = failure {
            break why;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        why.contains("molt_code_change: limit: ran past code_change_timeout (200 ms)"),
        "{why}"
    );
    assert_eq!(
        count_of(&mut me, looping).await,
        999,
        "it answers, on 0.1.0"
    );
    assert_eq!(version_of(&node, looping).as_deref(), Some("0.1.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_while_old_has_processes_is_not_purged_and_hard_purge_kills_them() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let (stays, stays_ref) = spawn_counter(&mut me, 13);
    count_of(&mut me, stays).await;
    node.load_with(counter_picky(), "counter", LoadOptions::default())
        .await
        .unwrap();
    // Wait for its refusal: it stays on 0.1.0, now old.
    let deadline = tokio::time::Instant::now() + WAIT;
    while node
        .processes()
        .iter()
        .all(|p| p.pid != stays || p.upgrade_failure.is_none())
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    match node
        .load_with(counter_v2(), "counter", LoadOptions::default())
        .await
    {
        Err(LoadError::NotPurged {
            name,
            version,
            processes,
        }) => {
            assert_eq!(
                (name.as_str(), version.as_str(), processes),
                ("counter", "0.1.0", 1)
            );
        }
        other => panic!("expected not_purged, got {other:?}"),
    }
    let text = node
        .load_with(counter_v2(), "counter", LoadOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(text.starts_with("not_purged"), "{text}");
    assert_eq!(
        node.code().current("counter").unwrap().identity.version,
        "0.3.0-picky",
        "a refused load changes nothing"
    );

    let hard = LoadOptions {
        purge: Purge::Hard,
        ..LoadOptions::default()
    };
    let loaded = node.load_with(counter_v2(), "counter", hard).await.unwrap();
    assert_eq!(loaded.purged, 1);
    assert_eq!(
        down_reason(&mut me, stays_ref).await,
        format!("{}counter 0.1.0", reason::PURGED_PREFIX)
    );
    assert_eq!(loaded.version.identity.version, "0.2.0");
    assert_eq!(
        node.code()
            .old("counter")
            .map(|o| o.identity.version.clone()),
        Some("0.3.0-picky".to_string())
    );
}

/// Puppet (a raw process) under another version string: the same code.
fn puppet_as(version: &str) -> Vec<u8> {
    let bytes = std::fs::read(guest_file("puppet")).unwrap();
    with_version(&bytes, "puppet", version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_processes_stay_on_their_version_until_purged() {
    let node = node();
    let mut raw = Puppet::spawn(&node).await;
    let watch = raw.ctl.monitor(raw.pid);
    assert_eq!(version_of(&node, raw.pid).as_deref(), Some("0.1.0"));

    node.load(&puppet_as("0.1.1"), "puppet").unwrap();
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        version_of(&node, raw.pid).as_deref(),
        Some("0.1.0"),
        "a raw process never migrates"
    );
    assert_eq!(raw.cmd(Cmd::TrapExit(false)).await, Outcome::Bool(false));

    // A third version cannot come while the raw process holds the old one.
    let refused = node.load(&puppet_as("0.1.2"), "puppet").unwrap_err();
    assert!(matches!(refused, LoadError::NotPurged { .. }), "{refused}");
    // soft_purge refuses too, and changes nothing.
    match node.soft_purge("puppet") {
        Err(PurgeError::InUse {
            version, processes, ..
        }) => assert_eq!((version.as_str(), processes), ("0.1.0", 1)),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(node.is_alive(raw.pid));

    // A hard purge kills it, with a reason that says why, even though
    // puppets could trap exits.
    assert_eq!(raw.cmd(Cmd::TrapExit(true)).await, Outcome::Bool(false));
    assert_eq!(node.purge("puppet").await.unwrap(), 1);
    assert!(!node.is_alive(raw.pid), "purge returns once it is gone");
    assert_eq!(
        down_reason(&mut raw.ctl, watch).await,
        "purged: puppet 0.1.0"
    );
    assert!(node.code().old("puppet").is_none());
    node.load(&puppet_as("0.1.2"), "puppet").unwrap();
    assert_eq!(node.code().old("puppet").unwrap().identity.version, "0.1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_purge_drops_an_old_version_nobody_runs() {
    let node = node();
    let mut raw = Puppet::spawn(&node).await;
    let watch = raw.ctl.monitor(raw.pid);
    node.load(&puppet_as("0.1.1"), "puppet").unwrap();
    assert!(node.soft_purge("puppet").is_err());
    raw.order(Cmd::ExitSelf("done".into()));
    assert_eq!(down_reason(&mut raw.ctl, watch).await, "done");
    assert_eq!(node.soft_purge("puppet"), Ok(true));
    assert!(node.code().old("puppet").is_none());
    assert_eq!(
        node.soft_purge("puppet"),
        Ok(false),
        "nothing left to purge"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downgrade_from_v2_to_v1_keeps_the_count() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let (a, _) = spawn_counter(&mut me, 7);
    count_of(&mut me, a).await;
    node.load(&counter_v2(), "counter").unwrap();
    wait_for_version(&node, a, "0.2.0").await;
    send_counter(&mut me, a, &CounterMsg::Add(3));
    assert_eq!(stats_of(&mut me, a).await, (10, 1));

    // Back to 0.1.0: its code_change gets 0.2.0's state and keeps the count.
    let back = node.load(&counter_v1(), "counter").unwrap();
    assert_eq!(back.identity.version, "0.1.0");
    wait_for_version(&node, a, "0.1.0").await;
    assert_eq!(count_of(&mut me, a).await, 10);
    assert_eq!(
        node.code()
            .old("counter")
            .map(|o| o.identity.version.clone()),
        Some("0.2.0".to_string())
    );
    // 0.1.0 does not know Stats: ignored, no answer.
    let from = me.pid();
    me.send(
        a,
        tag::DATA,
        Ref::NONE,
        codec::encode(&counter_v2::CounterMsg::Stats { from }),
    )
    .unwrap();
    assert!(me.recv(QUIET).await.is_none());
    assert_eq!(count_of(&mut me, a).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_the_same_bytes_again_changes_nothing_and_a_cached_version_is_not_compiled_again() {
    let node = node();
    let (first, compiled) = node.code().prepare(&counter_v2(), "x").unwrap();
    assert_eq!(compiled, molt_host::code::Compiled::Fresh);
    let (again, compiled) = node.code().prepare(&counter_v2(), "x").unwrap();
    assert_eq!(compiled, molt_host::code::Compiled::Cached);
    assert!(Arc::ptr_eq(&first, &again));

    let current = node.code().current("counter").unwrap();
    let same = node
        .load_with(counter_v1(), "counter", LoadOptions::default())
        .await
        .unwrap();
    assert!(same.unchanged);
    assert!(Arc::ptr_eq(&same.version, &current));
    assert!(node.code().old("counter").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_stops_new_spawns_and_purge_ends_the_rest() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let (a, a_ref) = spawn_counter(&mut me, 1);
    node.delete("counter").unwrap();
    assert!(node.code().current("counter").is_none());
    assert!(matches!(
        me.spawn("counter", codec::encode(&1u64), false, false),
        Err(SpawnError::NoModule(_))
    ));
    assert_eq!(count_of(&mut me, a).await, 1, "it runs on, on old code");
    assert_eq!(node.purge("counter").await.unwrap(), 1);
    assert_eq!(down_reason(&mut me, a_ref).await, "purged: counter 0.1.0");
    assert!(node.modules().iter().all(|m| m.name != "counter"));
    // Loading it again brings it back.
    node.load(&counter_v1(), "counter").unwrap();
    let (b, _) = spawn_counter(&mut me, 2);
    assert_eq!(count_of(&mut me, b).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_upgrade_resume_moves_a_set_together() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let set: Vec<Pid> = (0..3).map(|i| spawn_counter(&mut me, 10 * i).0).collect();
    let (outside, _) = spawn_counter(&mut me, 100);
    for pid in &set {
        count_of(&mut me, *pid).await;
    }
    let results = node.suspend(&set, WAIT).await;
    assert!(
        results.iter().all(|r| *r == Ok(SysOutcome::Done)),
        "{results:?}"
    );
    assert!(
        node.processes()
            .iter()
            .filter(|p| set.contains(&p.pid))
            .all(|p| p.suspended)
    );
    // Suspended: messages queue, nothing answers.
    for pid in &set {
        send_counter(&mut me, *pid, &CounterMsg::Add(5));
        let from = me.pid();
        send_counter(&mut me, *pid, &CounterMsg::Get { from });
    }
    assert!(me.recv(QUIET).await.is_none());

    // Eager load: the others move, the suspended set waits.
    node.load(&counter_picky(), "counter").unwrap();
    wait_for_version(&node, outside, "0.3.0-picky").await;
    for pid in &set {
        assert_eq!(version_of(&node, *pid).as_deref(), Some("0.1.0"));
    }
    // Move the set now, still suspended.
    let results = node.change_code(&set, WAIT).await;
    for r in &results {
        assert_eq!(
            *r,
            Ok(SysOutcome::Upgraded {
                from: "0.1.0".into(),
                to: "0.3.0-picky".into()
            })
        );
    }
    for pid in &set {
        assert_eq!(version_of(&node, *pid).as_deref(), Some("0.3.0-picky"));
    }
    assert!(me.recv(QUIET).await.is_none(), "still suspended");
    assert_eq!(
        node.change_code(&set[..1], WAIT).await,
        vec![Ok(SysOutcome::Unchanged {
            version: "0.3.0-picky".into()
        })]
    );

    // Resume: the queued messages run on the new version, state intact.
    let results = node.resume(&set, WAIT).await;
    assert!(
        results.iter().all(|r| *r == Ok(SysOutcome::Done)),
        "{results:?}"
    );
    let mut counts = Vec::new();
    for _ in &set {
        let m = me.recv(WAIT).await.expect("answers after resume");
        let CounterReply::Count(n) = codec::decode(&m.payload).unwrap();
        counts.push(n);
    }
    counts.sort();
    assert_eq!(counts, vec![1005, 1015, 1025]);
}

/// A behaviour working through a long backlog takes a system request at
/// its next message, not once the backlog is gone: suspended with messages
/// still waiting, and after it resumes every one of them is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspend_takes_effect_in_the_middle_of_a_backlog() {
    const N: u64 = 50_000;
    let node = node();
    let mut me = node.mailbox().unwrap();
    let (a, _) = spawn_counter(&mut me, 0);
    assert_eq!(node.suspend(&[a], WAIT).await, vec![Ok(SysOutcome::Done)]);
    for _ in 0..N {
        send_counter(&mut me, a, &CounterMsg::Add(1));
    }
    assert_eq!(node.resume(&[a], WAIT).await, vec![Ok(SysOutcome::Done)]);
    assert_eq!(node.suspend(&[a], WAIT).await, vec![Ok(SysOutcome::Done)]);
    let waiting = node
        .processes()
        .into_iter()
        .find(|p| p.pid == a)
        .expect("the counter lives")
        .mailbox_len;
    assert!(
        waiting > 0,
        "suspended only once its {N} messages were handled"
    );
    assert_eq!(node.resume(&[a], WAIT).await, vec![Ok(SysOutcome::Done)]);
    assert_eq!(count_of(&mut me, a).await, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_requests_to_raw_or_dead_processes_fail_clearly() {
    let node = node();
    let raw = Puppet::spawn(&node).await;
    let dead = dead_pid(&node);
    let results = node.suspend(&[raw.pid, dead], WAIT).await;
    assert_eq!(
        results,
        vec![Err(SysError::NotBehaviour), Err(SysError::NoProc)]
    );
    // A suspended process can still be killed.
    let mut me = node.mailbox().unwrap();
    let (a, a_ref) = spawn_counter(&mut me, 1);
    assert_eq!(node.suspend(&[a], WAIT).await, vec![Ok(SysOutcome::Done)]);
    node.exit(a, reason::KILL);
    assert_eq!(down_reason(&mut me, a_ref).await, reason::KILLED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_in_the_middle_of_a_stream_loses_nothing_and_keeps_order() {
    // 4 senders × 5,000 messages/s for 2 s: 20,000 messages/s.
    const SENDERS: u64 = 4;
    const EACH: u64 = 10_000;
    const BATCH: u64 = 50;
    const EVERY: Duration = Duration::from_millis(10);
    let node = node();
    let mut me = node.mailbox().unwrap();
    let (seq, _) = me
        .spawn("sequencer", codec::encode(&()), false, true)
        .unwrap();
    let v2 = with_version(
        &std::fs::read(guest_file("sequencer")).unwrap(),
        "sequencer",
        "0.2.0",
    );
    // Compiled before the stream starts, switched in the middle of it.
    let (v2, _) = node.code().prepare(&v2, "sequencer").unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let started = std::time::Instant::now();
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let mut mailbox = node.mailbox().unwrap();
        let sent = sent.clone();
        senders.push(tokio::spawn(async move {
            let from = mailbox.pid();
            let mut tick = tokio::time::interval(EVERY);
            for n in 1..=EACH {
                if n % BATCH == 1 {
                    tick.tick().await;
                }
                let msg = codec::encode(&SeqMsg::Seq { from, n });
                mailbox.send(seq, tag::DATA, Ref::NONE, msg).unwrap();
                sent.fetch_add(1, Ordering::Relaxed);
            }
            mailbox
        }));
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while sent.load(Ordering::Relaxed) < SENDERS * EACH / 3 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let loaded = node.install(v2, LoadOptions::default()).await.unwrap();
    assert_eq!(loaded.version.identity.version, "0.2.0");
    let sent_at_load = sent.load(Ordering::Relaxed);
    wait_for_version(&node, seq, "0.2.0").await;
    let sent_at_switch = sent.load(Ordering::Relaxed);
    let mut mailboxes = Vec::new();
    for s in senders {
        mailboxes.push(s.await.unwrap());
    }
    let elapsed = started.elapsed();
    assert!(
        sent_at_switch < SENDERS * EACH,
        "the process switched while the stream ran ({sent_at_load} sent at the load, {sent_at_switch} at the switch)"
    );
    let from = me.pid();
    me.send(
        seq,
        tag::DATA,
        Ref::NONE,
        codec::encode(&SeqMsg::Report { from }),
    )
    .unwrap();
    let m = me.recv(WAIT).await.expect("a report");
    let report: SeqReport = codec::decode(&m.payload).unwrap();
    assert_eq!(report.received, SENDERS * EACH, "nothing lost");
    assert_eq!(report.out_of_order, 0, "nothing reordered");
    for mailbox in &mailboxes {
        assert_eq!(report.last.get(&mailbox.pid()), Some(&EACH));
    }
    let rate = (SENDERS * EACH) as f64 / elapsed.as_secs_f64();
    assert!(
        rate >= 10_000.0,
        "the stream ran at {rate:.0} messages/s; the test means something from 10,000/s"
    );
}

/// Whether `pid` runs baseline code, as the node shows it.
fn on_baseline(node: &molt_host::Node, pid: Pid) -> bool {
    node.processes()
        .into_iter()
        .find(|p| p.pid == pid)
        .expect("the process lives")
        .baseline_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_serves_on_baseline_code_and_its_behaviours_move_to_optimised_code_with_their_state()
 {
    let node = node();
    let mut me = node.mailbox().unwrap();
    // The optimising compile is held back: the new version can only run
    // its baseline code.
    let hold = node.code().hold_optimising();
    let loaded = node
        .load_with(counter_v2(), "counter", LoadOptions::default())
        .await
        .unwrap();
    assert!(!loaded.version.optimised());
    let (a, _) = spawn_counter(&mut me, 40);
    send_counter(&mut me, a, &CounterMsg::Add(2));
    assert_eq!(count_of(&mut me, a).await, 42);
    assert!(on_baseline(&node, a), "spawned on the baseline code");
    assert_eq!(version_of(&node, a).as_deref(), Some("0.2.0"));
    // Once the optimised code is ready, new processes start on it, and the
    // running one moves at its next message, its count kept.
    drop(hold);
    molt_tests::wait_optimised(&loaded.version).await;
    assert!(on_baseline(&node, a), "idle, it has not moved yet");
    send_counter(&mut me, a, &CounterMsg::Add(1));
    assert_eq!(count_of(&mut me, a).await, 43);
    assert!(!on_baseline(&node, a), "moved to the optimised code");
    assert_eq!(stats_of(&mut me, a).await.0, 43);
    let (b, _) = spawn_counter(&mut me, 7);
    assert_eq!(count_of(&mut me, b).await, 7);
    assert!(!on_baseline(&node, b), "a new process starts optimised");
    // Past `optimise_queue_max` optimising compiles waiting, a load
    // compiles optimised code before it returns.
    let queued = molt_host::Node::start(NodeConfig {
        optimise_queue_max: 1,
        ..test_config()
    })
    .unwrap();
    let hold = queued.code().hold_optimising();
    let raw = |n: u32| {
        format!(
            r#"(module (memory (export "memory") 1) (global i32 (i32.const {n}))
                (func (export "molt_main") (param i32)))"#
        )
    };
    let first = queued.load(raw(1).as_bytes(), "raw-one").unwrap();
    let second = queued.load(raw(2).as_bytes(), "raw-two").unwrap();
    assert!(!first.optimised(), "the first waits behind the hold");
    assert!(second.optimised(), "the queue was full: compiled at once");
    drop(hold);
    // A node that compiles in one tier runs optimised code from the start.
    let single = start_node(NodeConfig {
        baseline_compile: false,
        ..test_config()
    });
    let version = single.code().current("counter").unwrap();
    assert!(version.optimised());
    let mut them = single.mailbox().unwrap();
    let (c, _) = spawn_counter(&mut them, 1);
    assert_eq!(count_of(&mut them, c).await, 1);
    assert!(!on_baseline(&single, c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_behaviour_gets_each_payload_intact_either_side_of_its_inbox_before_and_after_an_upgrade()
{
    // The SDK's inbox takes payloads of up to 256 bytes; an echo of n
    // filler bytes encodes to a little more than n, so these straddle it.
    let sizes: Vec<usize> = [0, 1, 100, 1000, 4096]
        .into_iter()
        .chain(200..=300)
        .collect();
    let node = node();
    let mut me = node.mailbox().unwrap();
    let from = me.pid();
    let (seq, _) = me
        .spawn("sequencer", codec::encode(&()), false, true)
        .unwrap();
    let filler = |n: usize, salt: u8| (0..n).map(|i| (i as u8) ^ salt).collect::<Vec<u8>>();
    async fn echoes(me: &mut HostMailbox, expected: &[Vec<u8>], when: &str) {
        for (i, bytes) in expected.iter().enumerate() {
            let m = me.recv(WAIT).await.expect("an echo");
            let Echoed(got) = codec::decode(&m.payload).expect("an Echoed");
            assert_eq!(&got, bytes, "{when}: echo {i} ({} bytes)", bytes.len());
        }
    }
    for (round, when) in ["0.1.0", "0.2.0"].into_iter().enumerate() {
        // One at a time: each comes with its own molt_handle call.
        let mut expected = Vec::new();
        for &n in &sizes {
            let bytes = filler(n, 0x5a ^ round as u8);
            let msg = codec::encode(&SeqMsg::Echo {
                from,
                bytes: bytes.clone(),
            });
            me.send(seq, tag::DATA, Ref::NONE, msg).unwrap();
            echoes(&mut me, std::slice::from_ref(&bytes), when).await;
            expected.push(bytes);
        }
        // A burst queued while it is suspended: after the first, msg_next
        // hands it the rest in the same call.
        assert_eq!(node.suspend(&[seq], WAIT).await, vec![Ok(SysOutcome::Done)]);
        let mut burst = Vec::new();
        for &n in sizes.iter().rev() {
            let bytes = filler(n, 0xa5 ^ round as u8);
            let msg = codec::encode(&SeqMsg::Echo {
                from,
                bytes: bytes.clone(),
            });
            me.send(seq, tag::DATA, Ref::NONE, msg).unwrap();
            burst.push(bytes);
        }
        assert_eq!(node.resume(&[seq], WAIT).await, vec![Ok(SysOutcome::Done)]);
        echoes(&mut me, &burst, when).await;
        if round == 0 {
            // A new instance names an inbox of its own.
            let v2 = with_version(
                &std::fs::read(guest_file("sequencer")).unwrap(),
                "sequencer",
                "0.2.0",
            );
            node.load(&v2, "sequencer").unwrap();
            wait_for_version(&node, seq, "0.2.0").await;
        }
    }
}
