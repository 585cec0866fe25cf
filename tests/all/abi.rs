//! The ABI as `ABI.md` writes it: hand-written WAT guests load and behave,
//! modules that break the ABI are refused with the right problem, the
//! linker provides every import with its exact signature, and the `molt`
//! binary runs and inspects modules.

use std::fmt::Write as _;

use molt_abi::imports::{self, ValType};
use molt_abi::{Ref, status, tag};
use molt_host::code::{self, LoadError, ModuleKind, Problem};
use molt_tests::{
    QUIET, WAIT, guests_dir, molt, node, run_to_exit, spinners_are_preempted_and_killed,
    wat_fixture,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wat_echo_returns_every_message_to_its_pid() {
    let node = node();
    let version = node.load(&wat_fixture("echo.wat"), "echo").unwrap();
    assert_eq!(version.identity.name, "echo");
    assert_eq!(version.kind, ModuleKind::Raw);
    let mut me = node.mailbox().unwrap();
    let (echo, _) = me
        .spawn("echo", me.pid().to_bytes().to_vec(), true, false)
        .unwrap();
    // Either side of the size the host keeps inside a message rather than
    // on the heap (64 bytes), each byte distinct so a short or shifted copy
    // shows.
    let counting = |n: usize| (0..n).map(|i| i as u8 ^ 0x5a).collect::<Vec<u8>>();
    let sent = [
        (0u32, vec![]),
        (5, b"hello".to_vec()),
        (63, counting(63)),
        (64, counting(64)),
        (65, counting(65)),
        (0x1234, vec![7; 1000]),
    ];
    for (t, payload) in &sent {
        me.send(echo, *t, Ref::NONE, payload.clone()).unwrap();
    }
    for (t, payload) in &sent {
        let back = me.recv(WAIT).await.expect("an echo");
        assert_eq!((back.tag, &*back.payload), (*t, &payload[..]));
    }
    // Larger than its 64 KiB buffer: msg_read says BUFFER_TOO_SMALL and the
    // echo skips it; the next message comes back.
    me.send(echo, 1, Ref::NONE, vec![1; 70_000]).unwrap();
    me.send(echo, 2, Ref::NONE, vec![2; 65_536]).unwrap();
    let back = me.recv(WAIT).await.expect("an echo");
    assert_eq!((back.tag, back.payload.len()), (2, 65_536));
    assert_eq!(me.recv(QUIET).await, None);
    assert!(node.is_alive(echo));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wat_echo_refuses_bad_arguments() {
    let node = node();
    node.load(&wat_fixture("echo.wat"), "echo").unwrap();
    let mut me = node.mailbox().unwrap();
    let why = run_to_exit(&mut me, "echo", vec![1, 2, 3]).await;
    assert_eq!(why, "badarg: echo wants a 24-byte pid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_length_in_a_request_is_refused_and_the_node_runs_on() {
    // A table request whose table name claims 2^62 - 1 bytes: decoded by
    // allocating that much first, it would abort the node.
    let node = node();
    node.load(&wat_fixture("table_forged.wat"), "table-forged")
        .unwrap();
    node.load(&wat_fixture("echo.wat"), "echo").unwrap();
    let mut me = node.mailbox().unwrap();
    me.spawn("table-forged", me.pid().to_bytes().to_vec(), false, false)
        .unwrap();
    let answer = me.recv(WAIT).await.expect("the status table_call returned");
    assert_eq!(
        (answer.tag, &*answer.payload),
        (1, &status::BAD_ARG.to_le_bytes()[..])
    );
    let (echo, _) = me
        .spawn("echo", me.pid().to_bytes().to_vec(), true, false)
        .unwrap();
    me.send(echo, 7, Ref::NONE, b"still here".to_vec()).unwrap();
    let back = me.recv(WAIT).await.expect("an echo");
    assert_eq!((back.tag, &*back.payload), (7, &b"still here"[..]));
}

fn u64_le(n: u64) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wat_behaviour_counts_and_reports() {
    let node = node();
    // Named by its molt.module section, not by the name given here.
    let version = node.load(&wat_fixture("behaviour.wat"), "ignored").unwrap();
    assert_eq!(version.identity.name, "wat-counter");
    assert_eq!(version.identity.version, "1.0.0");
    assert!(version.identity.declared);
    assert_eq!(version.kind, ModuleKind::Behaviour);
    let mut me = node.mailbox().unwrap();
    let (counter, _) = me.spawn("wat-counter", u64_le(40), true, false).unwrap();
    me.send(counter, 0, Ref::NONE, u64_le(1)).unwrap();
    me.send(counter, 0, Ref::NONE, u64_le(1)).unwrap();
    // Ignored: wrong tag, wrong size.
    me.send(counter, 3, Ref::NONE, u64_le(1000)).unwrap();
    me.send(counter, 0, Ref::NONE, vec![9; 4]).unwrap();
    me.send(counter, 7, Ref::NONE, me.pid().to_bytes().to_vec())
        .unwrap();
    let report = me.recv(WAIT).await.expect("the count");
    assert_eq!((report.tag, &*report.payload), (tag::DATA, &u64_le(42)[..]));
    me.send(counter, 0, Ref::NONE, u64_le(100)).unwrap();
    me.send(counter, 7, Ref::NONE, me.pid().to_bytes().to_vec())
        .unwrap();
    let report = me.recv(WAIT).await.expect("the count");
    assert_eq!(&*report.payload, &u64_le(142)[..]);
    let why = run_to_exit(&mut me, "wat-counter", vec![0; 3]).await;
    assert_eq!(why, "badarg: wat-counter wants a u64");
}

fn abi_problems(result: Result<impl std::fmt::Debug, LoadError>) -> Vec<Problem> {
    match result {
        Err(LoadError::Abi { problems, .. }) => problems,
        other => panic!("expected LoadError::Abi, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_that_break_the_abi_are_refused() {
    let node = node();
    let load = |wat: &str, name: &str| node.load(&wat::parse_str(wat).unwrap(), name);
    assert_eq!(
        abi_problems(node.load(&wat_fixture("no_exports.wat"), "no-exports")),
        vec![Problem::NoEntry]
    );
    assert_eq!(
        abi_problems(node.load(&wat_fixture("bad_import.wat"), "bad-import")),
        vec![Problem::UnknownImport("no_such_function".into())]
    );
    assert!(node.code().current("no-exports").is_none());
    assert!(node.code().current("bad-import").is_none());
    let main = r#"(memory (export "memory") 1) (func (export "molt_main") (param i32))"#;
    // A real import with the wrong signature.
    let problems = abi_problems(load(
        &format!(r#"(module (import "molt" "send" (func (param i32) (result i32))) {main})"#),
        "wrong-sig",
    ));
    assert!(
        matches!(&problems[..], [Problem::WrongSignature { name, .. }] if name == "send"),
        "{problems:?}"
    );
    // An import from another module.
    assert_eq!(
        abi_problems(load(
            &format!(r#"(module (import "wasi" "fd_write" (func (param i32))) {main})"#),
            "foreign",
        )),
        vec![Problem::ForeignImport {
            module: "wasi".into(),
            name: "fd_write".into()
        }]
    );
    // Built for another ABI version.
    assert_eq!(
        abi_problems(load(
            &format!(
                r#"(module (@custom "molt.module" "name=future\nversion=1\nabi=2\n") {main})"#
            ),
            "future",
        )),
        vec![Problem::AbiVersion(2)]
    );
    // No memory; a behaviour without molt_init.
    assert_eq!(
        abi_problems(load(
            r#"(module (func (export "molt_main") (param i32)))"#,
            "no-memory"
        )),
        vec![Problem::NoMemory]
    );
    assert_eq!(
        abi_problems(load(
            r#"(module (memory (export "memory") 1) (func (export "molt_handle") (param i32 i32)))"#,
            "no-init"
        )),
        vec![Problem::MissingInit]
    );
}

#[test]
fn inspect_reports_identity_kind_and_problems() {
    let bytes = std::fs::read(guests_dir().join("counter.wasm")).unwrap();
    let report = code::inspect(&bytes, "whatever").unwrap();
    assert_eq!(report.identity.name, "counter");
    assert_eq!(report.identity.version, "0.1.0");
    assert!(report.identity.declared);
    assert_eq!(report.kind, Some(ModuleKind::Behaviour));
    assert_eq!(report.problems, vec![]);
    assert!(report.exports.iter().any(|e| e.starts_with("molt_handle:")));
    assert!(report.imports.iter().all(|i| i.starts_with("molt.")));

    let echo = wat_fixture("echo.wat");
    let report = code::inspect(&echo, "echo").unwrap();
    assert_eq!(report.identity.name, "echo");
    assert!(!report.identity.declared);
    assert!(
        report.identity.version.starts_with("sha256:"),
        "{}",
        report.identity.version
    );
    assert_eq!(&report.identity.version[7..], &report.identity.hash[..16]);
    assert_eq!(report.kind, Some(ModuleKind::Raw));
    assert_eq!(report.problems, vec![]);

    let report = code::inspect(&wat_fixture("no_exports.wat"), "no-exports").unwrap();
    assert_eq!(report.kind, None);
    assert_eq!(report.problems, vec![Problem::NoEntry]);
    assert!(matches!(
        code::inspect(b"not wasm", "junk"),
        Err(LoadError::Invalid(_))
    ));
}

fn wat_type(t: ValType) -> &'static str {
    match t {
        ValType::I32 => "i32",
        ValType::I64 => "i64",
    }
}

/// A raw module importing every host function of the ABI, each with the
/// signature `molt_abi` gives.
fn every_import_wat() -> String {
    let mut wat = String::from("(module\n");
    for import in imports::ALL {
        write!(wat, r#"  (import "molt" "{}" (func"#, import.name).unwrap();
        for p in import.params {
            write!(wat, " (param {})", wat_type(*p)).unwrap();
        }
        for r in import.results {
            write!(wat, " (result {})", wat_type(*r)).unwrap();
        }
        wat.push_str("))\n");
    }
    wat.push_str("  (memory (export \"memory\") 1)\n");
    wat.push_str("  (func (export \"molt_main\") (param i32)))\n");
    wat
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_linker_provides_every_import_with_its_abi_signature() {
    let node = node();
    let wat = every_import_wat();
    assert_eq!(wat.matches("(import").count(), imports::ALL.len());
    let bytes = wat::parse_str(&wat).unwrap();
    let report = code::inspect(&bytes, "every-import").unwrap();
    assert_eq!(report.problems, vec![], "{wat}");
    assert_eq!(report.imports.len(), imports::ALL.len());
    // `load` links it: a host function missing or with another signature
    // than the ABI says fails here.
    let version = node
        .load(&bytes, "every-import")
        .unwrap_or_else(|e| panic!("{e}\n{wat}"));
    assert_eq!(version.kind, ModuleKind::Raw);
    // And it instantiates and runs.
    let mut me = node.mailbox().unwrap();
    assert_eq!(run_to_exit(&mut me, "every-import", vec![]).await, "normal");
}

#[test]
fn molt_run_runs_the_crash_demo() {
    let demo = guests_dir().join("crash_demo.wasm");
    let (out, text) = molt(&["run".as_ref(), demo.as_os_str()]);
    assert!(out.status.success(), "molt run failed:\n{text}");
    assert!(
        text.contains("crash-demo: after Add(5) twice the counter holds 20"),
        "{text}"
    );
    assert!(text.contains("caught by the link: panic: boom"), "{text}");
    assert!(text.contains("crash-demo: done"), "{text}");
}

#[test]
fn molt_run_passes_arguments_and_reports_a_failing_process() {
    let ping_pong = guests_dir().join("ping_pong.wasm");
    let (out, text) = molt(&["run".as_ref(), ping_pong.as_os_str(), "500".as_ref()]);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ping-pong: 500 round trips in"), "{text}");
    let (out, text) = molt(&["run".as_ref(), ping_pong.as_os_str(), "many".as_ref()]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("(ping-pong) exited: rounds must be a number, not \"many\""),
        "{text}"
    );
}

#[test]
fn molt_inspect_prints_the_module_and_its_abi_check() {
    let counter = guests_dir().join("counter.wasm");
    let (out, text) = molt(&["inspect".as_ref(), counter.as_os_str()]);
    assert!(out.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("module:   counter\n"), "{stdout}");
    assert!(stdout.contains("version:  0.1.0\n"), "{stdout}");
    assert!(stdout.contains("kind:     behaviour\n"), "{stdout}");
    assert!(stdout.contains("abi:      ok"), "{stdout}");

    let file =
        std::env::temp_dir().join(format!("molt-test-{}-no_exports.wasm", std::process::id()));
    std::fs::write(&file, wat_fixture("no_exports.wat")).unwrap();
    let (out, text) = molt(&["inspect".as_ref(), file.as_os_str()]);
    std::fs::remove_file(&file).unwrap();
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("abi:      NOT satisfied"), "{text}");
    assert!(
        text.contains("exports neither `molt_handle` (behaviour) nor `molt_main` (raw process)"),
        "{text}"
    );
}

/// `molt bench` encodes bench-guest's init arguments with its own mirror of
/// `BenchArgs` (the host links no guest crate); both must encode alike.
#[test]
fn the_bench_mirror_of_bench_args_encodes_like_the_guest() {
    use bench_guest::BenchArgs as Guest;
    use molt_tests::bench_wire::BenchArgs as Host;
    let pid = molt_abi::Pid {
        node: 7,
        incarnation: 8,
        serial: 9,
    };
    let pairs = [
        (molt_abi::codec::encode(&Host::Idle), Guest::Idle),
        (molt_abi::codec::encode(&Host::Ponger), Guest::Ponger),
        (
            molt_abi::codec::encode(&Host::Pinger {
                ponger: pid,
                rounds: 3,
            }),
            Guest::Pinger {
                ponger: pid,
                rounds: 3,
            },
        ),
        (
            molt_abi::codec::encode(&Host::Sink {
                expect: 10,
                ack_every: 2,
            }),
            Guest::Sink {
                expect: 10,
                ack_every: 2,
            },
        ),
        (
            molt_abi::codec::encode(&Host::Sender {
                sink: pid,
                count: 5,
                window: 4,
                payload_bytes: 64,
            }),
            Guest::Sender {
                sink: pid,
                count: 5,
                window: 4,
                payload_bytes: 64,
            },
        ),
        (
            molt_abi::codec::encode(&Host::WhereisGlobal {
                name: "n".into(),
                reads: 6,
            }),
            Guest::WhereisGlobal {
                name: "n".into(),
                reads: 6,
            },
        ),
        (
            molt_abi::codec::encode(&Host::RingLink { next: None }),
            Guest::RingLink { next: None },
        ),
        (
            molt_abi::codec::encode(&Host::TimedPinger {
                ponger: pid,
                rounds: 5,
                warmup: 2,
                report: pid,
            }),
            Guest::TimedPinger {
                ponger: pid,
                rounds: 5,
                warmup: 2,
                report: pid,
            },
        ),
        (
            molt_abi::codec::encode(&Host::RemoteSpawner {
                node: "b@127.0.0.1".into(),
                count: 4,
                report: pid,
            }),
            Guest::RemoteSpawner {
                node: "b@127.0.0.1".into(),
                count: 4,
                report: pid,
            },
        ),
        (
            molt_abi::codec::encode(&Host::RingLink {
                next: Some(molt_abi::Pid {
                    node: 1,
                    incarnation: 2,
                    serial: 3,
                }),
            }),
            Guest::RingLink {
                next: Some(molt_abi::Pid {
                    node: 1,
                    incarnation: 2,
                    serial: 3,
                }),
            },
        ),
    ];
    use bench_guest::TableOp as GuestOp;
    use molt_tests::bench_wire::TableOp as HostOp;
    let ops = [
        (HostOp::Transaction, GuestOp::Transaction),
        (HostOp::DirtyWrite, GuestOp::DirtyWrite),
        (HostOp::DirtyRead, GuestOp::DirtyRead),
    ];
    let pairs = pairs
        .into_iter()
        .chain(ops.into_iter().map(|(host, guest)| {
            let bytes = molt_abi::codec::encode(&Host::Table {
                op: host,
                from: -1,
                to: 2,
            });
            let expected = Guest::Table {
                op: guest,
                from: -1,
                to: 2,
            };
            (bytes, expected)
        }));
    for (bytes, expected) in pairs {
        assert_eq!(molt_abi::codec::decode::<Guest>(&bytes), Ok(expected));
    }
}

/// The ring and the two-node latency bench send bench-guest `Next` and
/// `Token` and read `Done` and `Latency` through the host's own mirror of
/// `BenchMsg`.
#[test]
fn the_bench_mirror_of_bench_msg_encodes_like_the_guest() {
    use bench_guest::BenchMsg as Guest;
    use molt_tests::bench_wire::BenchMsg as Host;
    let pid = molt_abi::Pid {
        node: 1,
        incarnation: 2,
        serial: 3,
    };
    let pairs = [
        (Host::Ping { from: pid }, Guest::Ping { from: pid }),
        (Host::Pong, Guest::Pong),
        (Host::Next(pid), Guest::Next(pid)),
        (
            Host::Token {
                hops: 7,
                report: pid,
            },
            Guest::Token {
                hops: 7,
                report: pid,
            },
        ),
        (Host::Done, Guest::Done),
        (Host::Ack(4), Guest::Ack(4)),
        (
            Host::Latency {
                p50_ns: 81_000,
                p99_ns: 170_000,
            },
            Guest::Latency {
                p50_ns: 81_000,
                p99_ns: 170_000,
            },
        ),
        (Host::Hello(pid), Guest::Hello(pid)),
        (
            Host::Spawned {
                count: 4,
                ns: 400_000,
            },
            Guest::Spawned {
                count: 4,
                ns: 400_000,
            },
        ),
    ];
    for (host, guest) in pairs {
        let bytes = molt_abi::codec::encode(&host);
        assert_eq!(molt_abi::codec::decode::<Guest>(&bytes), Ok(guest.clone()));
        assert_eq!(
            molt_abi::codec::decode::<Host>(&molt_abi::codec::encode(&guest)),
            Ok(host)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribution_imports_check_their_pointers() {
    let node = node();
    // Memory is one page (64 KiB); 0x20000 is outside it. The node name
    // `nonode@nohost` (13 bytes) is at 0, the module `puppet` (6) at 16.
    let call = |body: &str| {
        format!(
            r#"(module
  (import "molt" "node_name" (func $node_name (param i32 i32) (result i32)))
  (import "molt" "spawn_on" (func $spawn_on (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "molt" "send_named_on" (func $send_named_on (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "nonode@nohost")
  (data (i32.const 16) "puppet")
  (func (export "molt_main") (param i32) {body}))"#
        )
    };
    let cases = [
        (
            "node-name-buffer",
            "(drop (call $node_name (i32.const 0x20000) (i32.const 64)))",
            "bad_pointer: node_name buffer",
        ),
        (
            "spawn-on-pid-out",
            "(drop (call $spawn_on (i32.const 0) (i32.const 13) (i32.const 16) (i32.const 6) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0x20000) (i32.const 0)))",
            "bad_pointer: spawn_on pid_out",
        ),
        (
            "spawn-on-node",
            "(drop (call $spawn_on (i32.const 0x20000) (i32.const 13) (i32.const 16) (i32.const 6) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 64) (i32.const 0)))",
            "bad_pointer: spawn_on node",
        ),
        (
            "send-named-on-payload",
            "(drop (call $send_named_on (i32.const 0) (i32.const 13) (i32.const 16) (i32.const 6) (i32.const 5) (i32.const 0) (i32.const 0x20000) (i32.const 8)))",
            "bad_pointer: message payload",
        ),
    ];
    let mut me = node.mailbox().unwrap();
    for (name, body, expected) in cases {
        node.load(&wat::parse_str(call(body)).unwrap(), name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let spawned = node.stats().spawned;
        let why = run_to_exit(&mut me, name, vec![]).await;
        assert!(why.starts_with(expected), "{name}: {why}");
        // Only the faulty process itself was spawned: no child was left.
        assert_eq!(node.stats().spawned, spawned + 1, "{name}");
    }
    assert!(node.stats().alive >= 1, "the node runs on");
}

/// The text of a WAT fixture, as a user would hand the file to molt.
fn wat_text(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("guests/wat")
            .join(name),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wat_file_is_named_by_its_custom_annotation() {
    let node = node();
    // The text itself, not assembled by the test: the node assembles it
    // and honours `(@custom "molt.module" ...)`.
    let version = node.load(&wat_text("behaviour.wat"), "ignored").unwrap();
    assert_eq!(version.identity.name, "wat-counter");
    assert_eq!(version.identity.version, "1.0.0");
    assert!(version.identity.declared);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_neither_wasm_nor_wat_say_so() {
    let node = node();
    for (bytes, says) in [
        (&b"\x01\x02\xff\xfe"[..], "and not WAT text (not UTF-8)"),
        (&b""[..], "and not WAT text: the file is empty"),
        (&b"(module (func $f (unknown)))"[..], ", and as WAT text: "),
    ] {
        let error = node.load(bytes, "junk").unwrap_err().to_string();
        assert!(
            error.contains("not a wasm module (no \\0asm header)") && error.contains(says),
            "{error}"
        );
        assert!(!error.contains('\n'), "one line: {error}");
    }
    // The CLI names the file.
    let dir = molt_tests::TempDir::new("junk");
    let file = dir.path().join("junk.wasm");
    std::fs::write(&file, b"\x01\x02\xff\xfe").unwrap();
    let (out, text) = molt(&["run".as_ref(), file.as_os_str()]);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&file.display().to_string()) && text.contains("not a wasm module"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_named_by_its_file_spawns_by_either_spelling() {
    // No molt.module section: `foo_bar.wasm` is module `foo-bar`.
    let dir = molt_tests::TempDir::new("names");
    std::fs::write(dir.path().join("foo_bar.wasm"), wat_fixture("echo.wat")).unwrap();
    let node = node();
    node.code().add_path(dir.path());
    let mut me = node.mailbox().unwrap();
    let (first, _) = me
        .spawn("foo_bar", me.pid().to_bytes().to_vec(), false, false)
        .expect("spawn by the file's spelling");
    let (second, _) = me
        .spawn("foo-bar", me.pid().to_bytes().to_vec(), false, false)
        .expect("spawn by the module's name");
    let module_of = |pid| {
        node.processes()
            .into_iter()
            .find(|p| p.pid == pid)
            .and_then(|p| p.module)
            .map(|(name, _)| name)
    };
    assert_eq!(module_of(first).as_deref(), Some("foo-bar"));
    assert_eq!(module_of(second).as_deref(), Some("foo-bar"));
}

#[test]
fn molt_inspect_reports_against_the_limits_in_force() {
    let dir = molt_tests::TempDir::new("inspect-limits");
    // echo with a 32 MiB initial memory: past the default 16 MiB
    // memory_bytes_max, though it satisfies the ABI.
    let big = String::from_utf8(wat_text("echo.wat")).unwrap().replace(
        r#"(memory (export "memory") 2)"#,
        r#"(memory (export "memory") 512)"#,
    );
    let file = dir.path().join("big_memory.wat");
    std::fs::write(&file, big).unwrap();
    let (out, text) = molt(&["inspect".as_ref(), file.as_os_str()]);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("abi:      ok"), "{text}");
    assert!(
        text.contains("its memory starts at 33554432 bytes, more than memory_bytes_max"),
        "{text}"
    );
    // With room for it, it passes.
    let (out, text) = molt(&[
        "--memory-bytes-max".as_ref(),
        "67108864".as_ref(),
        "inspect".as_ref(),
        file.as_os_str(),
    ]);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("limits:   ok"), "{text}");
    // A size limit below the file's size.
    let counter = guests_dir().join("counter.wasm");
    let (out, text) = molt(&[
        "--module-bytes-max".as_ref(),
        "1000".as_ref(),
        "inspect".as_ref(),
        counter.as_os_str(),
    ]);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("larger than module_bytes_max (1000 bytes)"),
        "{text}"
    );
}

/// echo.wat with `edit` applied to its text.
fn echo_with(edit: impl Fn(String) -> String) -> Vec<u8> {
    edit(String::from_utf8(wat_text("echo.wat")).unwrap()).into_bytes()
}

/// echo.wat with a start function whose body is `body`.
fn echo_starting_with(body: &str) -> Vec<u8> {
    echo_with(|t| {
        t.replace(
            "(memory (export \"memory\") 2)",
            &format!("(memory (export \"memory\") 2)\n  (func $start {body})\n  (start $start)"),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_segment_past_the_initial_memory_is_refused_at_load() {
    let node = node();
    let module = echo_with(|t| {
        t.replace(
            r#"(data (i32.const 100) "badarg"#,
            r#"(data (i32.const 131070) "badarg"#,
        )
    });
    let error = node.load(&module, "echo-oob").unwrap_err().to_string();
    assert!(
        error.contains("data segment 0 (32 bytes at offset 131070) does not fit the initial memory (131072 bytes)"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_while_instantiating_is_a_one_line_trap() {
    let node = node();
    // A start function that traps: every spawn traps before molt_main.
    let module = echo_starting_with("unreachable");
    node.load(&module, "echo-start").unwrap();
    let mut me = node.mailbox().unwrap();
    let args = me.pid().to_bytes().to_vec();
    let why = run_to_exit(&mut me, "echo-start", args).await;
    assert!(why.starts_with("trap: "), "{why}");
    assert!(why.contains("unreachable"), "{why}");
    assert!(why.ends_with("(at instantiation)"), "{why}");
    assert!(!why.contains('\n'), "one line: {why:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_function_that_never_returns_is_preempted_and_killed() {
    let node = node();
    // A start function that spins: every spawn loops before molt_main.
    let module = echo_starting_with("(loop $again (br $again))");
    node.load(&module, "echo-spin").unwrap();
    // More spinners than the threads that run processes; the node goes on
    // running other processes meanwhile, and each spinner ends `killed`.
    spinners_are_preempted_and_killed(&node, 4, "echo-spin", &[]).await;
}

/// A raw WAT guest that gets its parent's pid as init arguments (kept at
/// 0..24), runs `body`, and sends its parent each status `body` stores at
/// 64 with `report` (a 4-byte message, tag 0).
fn status_probe(body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
  (import "molt" "msg_read" (func $msg_read (param i32 i32) (result i32)))
  (import "molt" "send" (func $send (param i32 i32 i32 i32 i32) (result i32)))
  (import "molt" "register" (func $register (param i32 i32) (result i32)))
  (import "molt" "spawn" (func $spawn (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "molt" "msg_inbox" (func $msg_inbox (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 32) "probe")
  (func $report (param $status i32)
    (i32.store (i32.const 64) (local.get $status))
    (drop (call $send (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 64) (i32.const 4))))
  (func (export "molt_main") (param i32)
    (drop (call $msg_read (i32.const 0) (i32.const 24)))
    {body}))"#
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_are_the_ones_abi_md_gives() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    async fn statuses(me: &mut molt_host::HostMailbox, n: usize) -> Vec<i32> {
        let mut out = Vec::new();
        for _ in 0..n {
            let m = me.recv(WAIT).await.expect("a status");
            out.push(i32::from_le_bytes(m.payload[..4].try_into().unwrap()));
        }
        out
    }
    // Registering the caller's own name again: already_registered.
    node.load(
        &status_probe(
            "(call $report (call $register (i32.const 32) (i32.const 5)))
             (call $report (call $register (i32.const 32) (i32.const 5)))",
        ),
        "probe-register",
    )
    .unwrap();
    me.spawn("probe-register", me.pid().to_bytes().to_vec(), false, false)
        .unwrap();
    assert_eq!(
        statuses(&mut me, 2).await,
        [status::OK, status::ALREADY_REGISTERED]
    );
    // Spawning an empty module name: bad_arg (no module can be named so).
    node.load(
        &status_probe(
            "(call $report (call $spawn (i32.const 32) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 128) (i32.const 160)))",
        ),
        "probe-spawn",
    )
    .unwrap();
    me.spawn("probe-spawn", me.pid().to_bytes().to_vec(), false, false)
        .unwrap();
    assert_eq!(statuses(&mut me, 1).await, [status::BAD_ARG]);

    // Pointers: the whole buffer msg_read is given must be memory, though
    // the message (24 bytes) would fit in the part that is; and a payload
    // length of 0xFFFFFFFF is a bad pointer, not a large message.
    for (name, body, expected) in [
        (
            "probe-msg-read",
            "(drop (call $msg_read (i32.const 0xff00) (i32.const 0x1000)))",
            "bad_pointer: msg_read buffer",
        ),
        (
            "probe-send-len",
            "(drop (call $send (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 64) (i32.const -1)))",
            "bad_pointer: message payload",
        ),
        // An inbox must lie wholly in memory (one page here).
        (
            "probe-inbox",
            "(drop (call $msg_inbox (i32.const 0xff80) (i32.const 0x100)))",
            "bad_pointer: msg_inbox buffer",
        ),
    ] {
        node.load(&status_probe(body), name).unwrap();
        let args = me.pid().to_bytes().to_vec();
        let why = run_to_exit(&mut me, name, args).await;
        assert!(why.starts_with(expected), "{name}: {why}");
    }
}

/// `molt demo` talks to the singleton example's store with its own
/// mirror of the store's name and messages; both must encode alike.
#[test]
fn the_demo_mirror_of_the_store_messages_encodes_like_the_example() {
    use molt_tests::demo_wire as host;
    let pid = molt_abi::Pid {
        node: 7,
        incarnation: 8,
        serial: 9,
    };
    assert_eq!(host::STORE, singleton::STORE);
    let asked = [
        (
            host::StoreMsg::Add {
                from: pid,
                token: 5,
            },
            singleton::StoreMsg::Add {
                from: pid,
                token: 5,
            },
        ),
        (
            host::StoreMsg::Get { from: pid },
            singleton::StoreMsg::Get { from: pid },
        ),
    ];
    for (mirror, theirs) in asked {
        let bytes = molt_abi::codec::encode(&mirror);
        assert_eq!(molt_abi::codec::decode(&bytes), Ok(theirs));
    }
    for (theirs, mirror) in [
        (singleton::StoreReply::Value(3), host::StoreReply::Value(3)),
        (
            singleton::StoreReply::Stale { newest: 4 },
            host::StoreReply::Stale { newest: 4 },
        ),
    ] {
        let bytes = molt_abi::codec::encode(&theirs);
        assert_eq!(molt_abi::codec::decode(&bytes), Ok(mirror));
    }
}

/// `molt demo` reads the cart example's `carts` table with its own mirror
/// of a cart and of its key; both must encode alike.
#[test]
fn the_demo_mirror_of_a_cart_encodes_like_the_example() {
    use molt_sdk::table::Key;
    use molt_tests::demo_wire as host;
    let theirs = cart::Cart {
        items: vec![("tea".into(), 3)],
        done: 3,
    };
    let bytes = molt_abi::codec::encode(&theirs);
    let mirror: host::Cart = molt_abi::codec::decode(&bytes).unwrap();
    assert_eq!(mirror.items, theirs.items);
    assert_eq!(mirror.done, theirs.done);
    assert_eq!(host::cart_key("ann"), "ann".to_string().encode());
}
