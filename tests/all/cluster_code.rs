//! Code across nodes: the two-phase cluster-wide load (all nodes switch, or
//! none), loads, purges and system requests on another node, the staging
//! bound, and the `molt load --all` / `molt modules` / `molt upgrade`
//! commands against a running cluster. Every node started here stops when
//! its test ends.

use std::time::Duration;

use counter::CounterMsg;
use molt_abi::{Pid, codec, reason};
use molt_host::code::{LoadError, LoadOptions, Purge, PurgeError, UpgradeMode};
use molt_host::control::{CodeError, RolloutError, RolloutEvent, STAGED_MAX};
use molt_host::net::{DistConfig, Distribution, RequestError};
use molt_host::{HostMailbox, Node, NodeConfig, SysError, SysOp, SysOutcome};
use molt_tests::{
    COOKIE, TICK, WAIT, address_of, control, count_of, dist_node, dist_node_with, down_reason,
    guest_file, send_counter, stats_of, test_config, version_of, wait_for_version, wat_fixture,
};

fn counter_v1() -> Vec<u8> {
    std::fs::read(guest_file("counter")).unwrap()
}

fn counter_v2() -> Vec<u8> {
    std::fs::read(guest_file("counter-v2")).unwrap()
}

/// `bytes` with a custom section appended: the same code, other bytes, so
/// another version (a module without a `molt.module` section is versioned
/// by its hash) or a larger file.
fn variant(bytes: &[u8], tag: &[u8]) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"molt-test-variant";
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name);
    body.extend_from_slice(tag);
    let mut out = bytes.to_vec();
    out.push(0);
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// Version `n` of the raw module `echo` (no `molt.module` section).
fn echo(n: u8) -> Vec<u8> {
    variant(&wat_fixture("echo.wat"), &[n])
}

/// Two test nodes joined, `a` and `b`.
async fn pair() -> ((Node, Distribution), (Node, Distribution)) {
    let a = dist_node("a").await;
    let b = dist_node("b").await;
    a.1.join(&address_of(&b.1)).await.unwrap();
    (a, b)
}

fn names(dists: &[&Distribution]) -> Vec<String> {
    dists.iter().map(|d| d.name().to_string()).collect()
}

fn current_version(node: &Node, module: &str) -> Option<String> {
    node.code()
        .current(module)
        .map(|v| v.identity.version.clone())
}

/// A counter starting at `start`, spawned from `me` (on `me`'s node).
fn spawn_counter(me: &mut HostMailbox, start: u64) -> Pid {
    me.spawn("counter", codec::encode(&start), false, false)
        .unwrap()
        .0
}

/// A node `name@127.0.0.1` refusing modules over `module_bytes_max` bytes,
/// with only counter 0.1.0 loaded.
async fn small_node(name: &str, module_bytes_max: usize) -> (Node, Distribution) {
    let node = Node::start(NodeConfig {
        name: format!("{name}@127.0.0.1"),
        module_bytes_max,
        ..test_config()
    })
    .unwrap();
    node.load(&counter_v1(), "counter").unwrap();
    let mut config = DistConfig::new("127.0.0.1:0".parse().unwrap(), COOKIE.to_vec());
    config.tick = TICK;
    let dist = Distribution::start(&node, config).await.unwrap();
    control(&node, &dist);
    (node, dist)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_wide_load_switches_every_node_and_keeps_state() {
    let ((a, da), (b, db)) = pair().await;
    let mut on_a = a.mailbox().unwrap();
    let mut on_b = b.mailbox().unwrap();
    let ca = spawn_counter(&mut on_a, 40);
    let cb = spawn_counter(&mut on_b, 7);
    send_counter(&mut on_a, ca, &CounterMsg::Add(2));
    assert_eq!(count_of(&mut on_a, ca).await, 42);
    assert_eq!(count_of(&mut on_b, cb).await, 7);

    // From a, a's own name included: a runs it here, b over the wire.
    let mut events = Vec::new();
    let switched = control(&a, &da)
        .load_cluster(
            &names(&[&da, &db]),
            "counter-v2",
            counter_v2(),
            LoadOptions::default(),
            |e| events.push(e),
        )
        .await
        .unwrap();

    let nodes: Vec<&str> = switched.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(nodes, ["a@127.0.0.1", "b@127.0.0.1"]);
    for (node, s) in &switched {
        assert_eq!(
            (s.module.as_str(), s.version.as_str(), s.previous.as_deref()),
            ("counter", "0.2.0", Some("0.1.0")),
            "{node}"
        );
        assert!(!s.unchanged, "{node}");
    }
    // Every node prepared before any switched.
    let phases: Vec<&str> = events
        .iter()
        .map(|e| match e {
            RolloutEvent::Prepared { .. } => "prepared",
            RolloutEvent::Switched { .. } => "switched",
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(phases, ["prepared", "prepared", "switched", "switched"]);
    if let RolloutEvent::Prepared { prepared, .. } = &events[0] {
        assert_eq!(prepared.current.as_deref(), Some("0.1.0"));
    }

    assert_eq!(current_version(&a, "counter").as_deref(), Some("0.2.0"));
    assert_eq!(current_version(&b, "counter").as_deref(), Some("0.2.0"));
    // Eager: both counters move without a message, their counts kept.
    wait_for_version(&a, ca, "0.2.0").await;
    wait_for_version(&b, cb, "0.2.0").await;
    assert_eq!(stats_of(&mut on_a, ca).await, (42, 0));
    assert_eq!(stats_of(&mut on_b, cb).await, (7, 0));

    // b's module list, asked from a.
    let report = control(&a, &da).modules_of(db.name()).await.unwrap();
    let counter = report
        .modules
        .iter()
        .find(|m| m.name == "counter")
        .expect("b lists counter");
    let current = counter.current.as_ref().unwrap();
    let old = counter.old.as_ref().unwrap();
    assert_eq!((current.version.as_str(), current.processes), ("0.2.0", 1));
    assert_eq!((old.version.as_str(), old.processes), ("0.1.0", 0));
    assert!(
        report
            .events
            .iter()
            .any(|e| e.module == "counter" && e.what.contains("0.2.0") && !e.failure),
        "{:?}",
        report.events
    );

    // The same bytes again change nothing anywhere.
    let again = control(&a, &da)
        .load_cluster(
            &names(&[&da, &db]),
            "counter-v2",
            counter_v2(),
            LoadOptions::default(),
            |_| {},
        )
        .await
        .unwrap();
    assert!(again.iter().all(|(_, s)| s.unchanged), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_one_node_refuses_switches_no_node() {
    let (v1, v2) = (counter_v1(), counter_v2());
    // b takes counter 0.1.0 and 0.2.0, but not this larger 0.2.0 file.
    let limit = v1.len().max(v2.len());
    let too_large = variant(&v2, &[0; 1024]);
    let (a, da) = dist_node("a").await;
    let (b, db) = small_node("b", limit).await;
    da.join(&address_of(&db)).await.unwrap();
    let mut on_a = a.mailbox().unwrap();
    let mut on_b = b.mailbox().unwrap();
    let ca = spawn_counter(&mut on_a, 1);
    let cb = spawn_counter(&mut on_b, 2);

    let mut events = Vec::new();
    let error = control(&a, &da)
        .load_cluster(
            &names(&[&da, &db]),
            "counter-v2",
            too_large,
            LoadOptions::default(),
            |e| events.push(e),
        )
        .await
        .unwrap_err();
    let RolloutError::Prepare { failures } = &error else {
        panic!("expected a phase-one failure, got {error:?}");
    };
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].node, "b@127.0.0.1");
    assert!(
        matches!(
            &failures[0].error,
            CodeError::Load(LoadError::TooLarge { max, .. }) if *max == limit
        ),
        "{}",
        failures[0].error
    );
    assert!(
        failures[0].error.to_string().contains("module_bytes_max"),
        "{}",
        failures[0].error
    );
    let text = error.to_string();
    assert!(
        text.contains("no node switched") && text.contains("b@127.0.0.1"),
        "{text}"
    );
    // a prepared, then dropped what it staged when b failed.
    assert!(events.contains(&RolloutEvent::Aborted {
        node: "a@127.0.0.1".into()
    }));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, RolloutEvent::Switched { .. })),
        "{events:?}"
    );

    for (node, pid, me) in [(&a, ca, &mut on_a), (&b, cb, &mut on_b)] {
        assert_eq!(current_version(node, "counter").as_deref(), Some("0.1.0"));
        assert!(node.code().old("counter").is_none());
        assert_eq!(version_of(node, pid).as_deref(), Some("0.1.0"));
        assert!(count_of(me, pid).await > 0, "the counter still answers");
    }
    // b keeps the refusal for `molt modules`.
    let report = control(&a, &da).modules_of(db.name()).await.unwrap();
    assert!(
        report
            .events
            .iter()
            .any(|e| e.failure && e.what.contains("module_bytes_max")),
        "{:?}",
        report.events
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_purged_on_one_node_switches_none_until_a_hard_purge() {
    let ((a, da), (b, db)) = pair().await;
    for node in [&a, &b] {
        node.load(&echo(1), "echo").unwrap();
    }
    // A raw echo on b keeps version 1 alive once it is old.
    let mut on_b = b.mailbox().unwrap();
    let (raw, watch) = on_b
        .spawn("echo", on_b.pid().to_bytes().to_vec(), false, true)
        .unwrap();
    let v1 = current_version(&b, "echo").unwrap();
    for node in [&a, &b] {
        node.load(&echo(2), "echo").unwrap();
    }
    let v2 = current_version(&a, "echo").unwrap();
    assert_eq!(b.code().old("echo").unwrap().processes(), 1);

    let error = control(&a, &da)
        .load_cluster(
            &names(&[&da, &db]),
            "echo",
            echo(3),
            LoadOptions::default(),
            |_| {},
        )
        .await
        .unwrap_err();
    let RolloutError::Prepare { failures } = &error else {
        panic!("expected a phase-one failure, got {error:?}");
    };
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].node, "b@127.0.0.1");
    // Typed on a as it was on b.
    assert!(
        matches!(
            &failures[0].error,
            CodeError::Load(LoadError::NotPurged { name, version, processes: 1 })
                if name == "echo" && *version == v1
        ),
        "{error}"
    );
    assert!(
        failures[0].error.to_string().contains("not_purged"),
        "{error}"
    );
    assert_eq!(current_version(&a, "echo"), Some(v2.clone()));
    assert_eq!(current_version(&b, "echo"), Some(v2.clone()));
    assert!(b.is_alive(raw));

    // With a hard purge the raw process goes and every node switches.
    let hard = LoadOptions {
        purge: Purge::Hard,
        mode: UpgradeMode::Eager,
    };
    let switched = control(&a, &da)
        .load_cluster(&names(&[&da, &db]), "echo", echo(3), hard, |_| {})
        .await
        .unwrap();
    let purged: Vec<(&str, u64)> = switched
        .iter()
        .map(|(n, s)| (n.as_str(), s.purged))
        .collect();
    assert_eq!(purged, [("a@127.0.0.1", 0), ("b@127.0.0.1", 1)]);
    assert_eq!(
        down_reason(&mut on_b, watch.unwrap()).await,
        format!("{}echo {v1}", reason::PURGED_PREFIX)
    );
    let v3 = current_version(&a, "echo").unwrap();
    assert_ne!(v3, v2);
    assert_eq!(current_version(&b, "echo"), Some(v3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_keeps_at_most_staged_max_prepared_versions() {
    let ((a, da), (b, db)) = pair().await;
    let ca = control(&a, &da);
    let mut hashes = Vec::new();
    for n in 0..=STAGED_MAX as u8 {
        let prepared = ca
            .prepare_on(db.name(), "echo", echo(n), Purge::Soft)
            .await
            .unwrap();
        hashes.push(prepared.hash);
    }
    assert!(b.code().current("echo").is_none(), "prepared is not loaded");
    let options = LoadOptions::default();
    // The oldest went when one more was staged.
    match ca.commit_on(db.name(), &hashes[0], options).await {
        Err(error @ CodeError::NotStaged(_)) => {
            assert!(error.to_string().contains("not staged"), "{error}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let newest = hashes.last().unwrap();
    let switched = ca.commit_on(db.name(), newest, options).await.unwrap();
    assert_eq!(switched.module, "echo");
    assert!(b.code().current("echo").is_some());
    // A commit takes the version out: a second one has nothing to commit.
    assert!(matches!(
        ca.commit_on(db.name(), newest, options).await,
        Err(CodeError::NotStaged(_))
    ));
    // Abort says whether there was something to drop.
    assert!(ca.abort_on(db.name(), &hashes[1]).await.unwrap());
    assert!(!ca.abort_on(db.name(), &hashes[1]).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_purges_and_system_requests_reach_another_node() {
    let ((a, da), (b, db)) = pair().await;
    let da = control(&a, &da);
    let mut on_b = b.mailbox().unwrap();
    let counter = spawn_counter(&mut on_b, 3);
    let target = db.name();

    let lazy = LoadOptions {
        purge: Purge::Soft,
        mode: UpgradeMode::Lazy,
    };
    let switched = da
        .load_on_with(target, "counter-v2", counter_v2(), lazy)
        .await
        .unwrap();
    assert_eq!(switched.version, "0.2.0");
    assert_eq!(switched.previous.as_deref(), Some("0.1.0"));
    // Lazy and idle: it stays on 0.1.0 until told.
    assert_eq!(version_of(&b, counter).as_deref(), Some("0.1.0"));

    let suspend = da
        .sys_on(target, SysOp::Suspend, vec![counter], WAIT)
        .await
        .unwrap();
    assert_eq!(suspend, [Ok(SysOutcome::Done)]);
    let row = da
        .processes(target)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.pid == counter)
        .unwrap();
    assert!(row.suspended && row.upgrade_failure.is_none(), "{row:?}");

    let upgrade = da
        .sys_on(target, SysOp::ChangeCode, vec![counter], WAIT)
        .await
        .unwrap();
    assert_eq!(
        upgrade,
        [Ok(SysOutcome::Upgraded {
            from: "0.1.0".into(),
            to: "0.2.0".into()
        })]
    );
    let gone = molt_tests::dead_pid(&b);
    let resume = da
        .sys_on(target, SysOp::Resume, vec![counter, gone], WAIT)
        .await
        .unwrap();
    assert_eq!(resume, [Ok(SysOutcome::Done), Err(SysError::NoProc)]);
    assert_eq!(stats_of(&mut on_b, counter).await, (3, 0));

    // The old version has no process left: a soft purge drops it.
    let purged = da.purge_on(target, "counter", true).await.unwrap();
    assert_eq!(purged.old.as_deref(), Some("0.1.0"));
    assert!(b.code().old("counter").is_none());
    let purged = da.purge_on(target, "counter", false).await.unwrap();
    assert_eq!((purged.old, purged.killed), (None, 0));

    // Delete: 0.2.0 becomes old; nothing new spawns on it.
    assert_eq!(
        da.delete_on(target, "counter").await.unwrap().as_deref(),
        Some("0.2.0")
    );
    assert!(b.code().current("counter").is_none());
    // The counter still runs 0.2.0, so a soft purge refuses.
    match da.purge_on(target, "counter", true).await {
        Err(CodeError::Purge(PurgeError::InUse { version, .. })) => assert_eq!(version, "0.2.0"),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // Nor can a new version come while it does (not_purged).
    match da.load_on(target, "counter", counter_v1()).await {
        Err(CodeError::Load(error @ LoadError::NotPurged { .. })) => {
            assert!(error.to_string().contains("not_purged"), "{error}")
        }
        other => panic!("expected not_purged, got {other:?}"),
    }
    // Once it stops, the default one-node load answers name and version.
    send_counter(&mut on_b, counter, &CounterMsg::Stop);
    let deadline = tokio::time::Instant::now() + WAIT;
    while b.is_alive(counter) {
        assert!(tokio::time::Instant::now() < deadline, "the counter stops");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        da.load_on(target, "counter", counter_v1()).await.unwrap(),
        ("counter".to_string(), "0.1.0".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_too_large_for_a_frame_is_not_sent() {
    let (a, da) = dist_node_with("a", COOKIE, |c| c.frame_bytes_max = 64 << 10).await;
    let (b, db) = dist_node("b").await;
    da.join(&address_of(&db)).await.unwrap();
    let bytes = counter_v2();
    assert!(bytes.len() > 64 << 10);
    match control(&a, &da)
        .load_on(db.name(), "counter-v2", bytes)
        .await
    {
        Err(CodeError::Request(RequestError::FrameTooLarge { size, max })) => {
            assert!(size > max as usize);
            assert_eq!(max, 64 << 10);
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    // Nothing was sent: the connection is fine and b unchanged.
    da.ping(db.name()).await.unwrap();
    assert_eq!(current_version(&b, "counter").as_deref(), Some("0.1.0"));
}

/// Run `molt` with the test cookie off the async threads; (success,
/// stdout, stderr).
async fn cli(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(molt_tests::molt_bin())
            .args(&args)
            .env("MOLT_COOKIE", std::str::from_utf8(COOKIE).unwrap())
            .output()
            .expect("running molt");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The line of `out` about `node` that contains `text`.
fn line_of<'a>(out: &'a str, node: &str, text: &str) -> Option<&'a str> {
    out.lines()
        .find(|l| l.starts_with(node) && l.contains(text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn molt_load_all_rolls_out_to_the_cluster_and_molt_modules_shows_it() {
    let ((a, da), (b, db)) = pair().await;
    let mut on_a = a.mailbox().unwrap();
    let mut on_b = b.mailbox().unwrap();
    let ca = spawn_counter(&mut on_a, 10);
    let cb = spawn_counter(&mut on_b, 20);
    let contact = address_of(&da);
    let v2 = guest_file("counter-v2");
    let v2 = v2.to_str().unwrap();

    let (ok, out, err) = cli(args(&["load", v2, "--node", &contact, "--all"])).await;
    assert!(ok, "{out}{err}");
    for node in ["a@127.0.0.1", "b@127.0.0.1"] {
        assert!(
            line_of(&out, node, "prepared counter 0.2.0").is_some(),
            "{node}:\n{out}"
        );
        assert!(
            line_of(&out, node, "switched to 0.2.0 (old: 0.1.0)").is_some(),
            "{node}:\n{out}"
        );
    }
    assert!(
        out.contains("counter 0.2.0 is current on 2 node(s)"),
        "{out}"
    );
    wait_for_version(&a, ca, "0.2.0").await;
    wait_for_version(&b, cb, "0.2.0").await;
    assert_eq!(stats_of(&mut on_a, ca).await, (10, 0));
    assert_eq!(stats_of(&mut on_b, cb).await, (20, 0));

    let (ok, out, err) = cli(args(&["modules", "--node", &address_of(&db)])).await;
    assert!(ok, "{out}{err}");
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("module") && header.contains("current (processes)"),
        "{out}"
    );
    let row = out
        .lines()
        .find(|l| l.starts_with("counter "))
        .unwrap_or_else(|| panic!("no counter row:\n{out}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        ["counter", "behaviour", "0.2.0", "(1)", "0.1.0", "(0)"],
        "{out}"
    );
    assert!(out.contains("recent events on b@127.0.0.1:"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(" ok ") && l.contains("counter: loaded version 0.2.0")),
        "{out}"
    );

    // Suspend, upgrade back to a reloaded 0.1.0 by hand, resume: by pid as
    // `ps` shows it, and by its last number.
    let (ok, out, err) = cli(args(&[
        "load",
        guest_file("counter").to_str().unwrap(),
        "--node",
        &address_of(&db),
        "--mode",
        "lazy",
    ]))
    .await;
    assert!(ok, "{out}{err}");
    assert_eq!(
        out.trim(),
        "counter 0.1.0 loaded on b@127.0.0.1 (old: 0.2.0)",
        "{err}"
    );
    let pid = cb.to_string();
    let serial = cb.serial.to_string();
    let (ok, out, err) = cli(args(&["suspend", &pid, "--node", &address_of(&db)])).await;
    assert!(
        ok && out.trim() == format!("{pid}  suspended"),
        "{out}{err}"
    );
    let (ok, out, err) = cli(args(&["ps", "--node", &address_of(&db)])).await;
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&pid) && l.contains("suspended")),
        "{out}"
    );
    let (ok, out, err) = cli(args(&["upgrade", &serial, "--node", &address_of(&db)])).await;
    assert!(
        ok && out.trim() == format!("{pid}  upgraded 0.2.0 -> 0.1.0"),
        "{out}{err}"
    );
    let (ok, out, err) = cli(args(&["resume", &pid, "nope", "--node", &address_of(&db)])).await;
    assert!(!ok, "an unknown pid fails the command: {out}{err}");
    assert!(out.contains(&format!("{pid}  resumed")), "{out}");
    assert!(
        out.contains("nope") && out.contains("FAILED: noproc"),
        "{out}"
    );
    assert_eq!(
        count_of(&mut on_b, cb).await,
        20,
        "back on 0.1.0, count kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn molt_load_all_names_the_failing_node_and_switches_none() {
    let ((a, da), (b, _db)) = pair().await;
    for node in [&a, &b] {
        node.load(&echo(1), "echo").unwrap();
    }
    let mut on_b = b.mailbox().unwrap();
    on_b.spawn("echo", on_b.pid().to_bytes().to_vec(), false, false)
        .unwrap();
    for node in [&a, &b] {
        node.load(&echo(2), "echo").unwrap();
    }
    let before = current_version(&a, "echo");
    let dir = std::env::temp_dir().join(format!("molt-test-{}-cluster-load", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("echo.wasm");
    std::fs::write(&file, echo(3)).unwrap();

    let (ok, out, err) = cli(args(&[
        "load",
        file.to_str().unwrap(),
        "--node",
        &address_of(&da),
        "--all",
    ]))
    .await;
    assert!(!ok, "{out}{err}");
    assert!(
        line_of(&out, "a@127.0.0.1", "prepared echo").is_some(),
        "{out}"
    );
    assert!(line_of(&out, "a@127.0.0.1", "aborted").is_some(), "{out}");
    let failed = line_of(&out, "b@127.0.0.1", "FAILED").unwrap_or_else(|| panic!("{out}"));
    assert!(failed.contains("not_purged"), "{failed}");
    assert!(
        err.contains("no node switched") && err.contains("b@127.0.0.1: not_purged"),
        "{err}"
    );
    assert!(!out.contains("switched to"), "{out}");
    assert_eq!(current_version(&a, "echo"), before);
    assert_eq!(current_version(&b, "echo"), before);

    // `molt purge --all` kills the raw process on b; then the load goes
    // through everywhere.
    let (ok, out, err) = cli(args(&[
        "purge",
        "echo",
        "--node",
        &address_of(&da),
        "--all",
    ]))
    .await;
    assert!(ok, "{out}{err}");
    assert!(
        line_of(&out, "b@127.0.0.1", "(1 process(es) killed)").is_some(),
        "{out}"
    );
    let (ok, out, err) = cli(args(&[
        "load",
        file.to_str().unwrap(),
        "--node",
        &address_of(&da),
        "--all",
    ]))
    .await;
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(ok, "{out}{err}");
    assert_ne!(current_version(&b, "echo"), before);
    assert_eq!(current_version(&a, "echo"), current_version(&b, "echo"));
}
