//! Shared helpers for molt's end-to-end tests: build the guests once, start
//! nodes with test-sized limits, and drive `puppet` processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use molt_abi::{Pid, Ref, codec, sysmsg, tag};
use molt_host::net::tls::TlsMode;
use molt_host::net::{DistConfig, Distribution};
use molt_host::{Filter, HostMailbox, Message, Node, NodeConfig};
pub use puppet::{Cmd, Event, Outcome, PuppetArgs, SystemEvent};

/// Building the workspace's guests: the `molt` binary's own code (the
/// demo and the bench use it), shared by file because it only works inside
/// this repository and so is no part of the library's API.
#[path = "../host/src/cli/guest_build.rs"]
#[allow(dead_code)]
mod guest_build;

/// What `molt bench` sends bench-guest, from the binary's own code; a test
/// checks it against the guest's types.
#[path = "../host/src/cli/bench_wire.rs"]
pub mod bench_wire;

/// What `molt demo` says to the singleton example's store, from the
/// binary's own code; a test checks it against the example's types.
#[path = "../host/src/cli/demo_wire.rs"]
pub mod demo_wire;

/// Checkers of recorded histories (names, locks, elections).
pub mod checker;

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a test waits for something that should not happen.
pub const QUIET: Duration = Duration::from_millis(200);

/// Guests the tests use, built once per test binary. [`start_node`]
/// loads all but [`LATER_VERSIONS`].
pub const GUESTS: &[&str] = &[
    "puppet",
    "faulty",
    "counter",
    "bench-guest",
    "ping-pong",
    "crash-demo",
    "counter-v2",
    "counter-picky",
    "sequencer",
    "pg-member",
    "sup-worker",
    "sup-tree",
    "sup-app",
    "pool-worker",
    "pool-sup",
    "pool-demo",
    "otp-server",
    "otp-task",
    "singleton",
    "cart",
    "presence",
];

/// Guests that are later versions of a module another guest provides
/// (`counter` 0.2.0 and 0.3.0-picky): built, but loaded only by the tests
/// that upgrade to them.
pub const LATER_VERSIONS: &[&str] = &["counter-v2", "counter-picky"];

/// `module` (a wasm binary) declaring `name` and `version` instead: the
/// same code as another version, for tests of loading and purging.
pub fn with_version(module: &[u8], name: &str, version: &str) -> Vec<u8> {
    molt_host::code::analyze::restamp(module, name, version).expect("a well-formed module")
}

/// The built `.wasm` file of a guest package.
pub fn guest_file(package: &str) -> PathBuf {
    guests_dir().join(format!("{}.wasm", package.replace('-', "_")))
}

/// Directory of the built guests.
pub fn guests_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        guest_build::build_workspace_guests(GUESTS)
            .unwrap_or_else(|e| panic!("building the test guests: {e}"))
    })
}

/// A hand-written WAT fixture, assembled.
pub fn wat_fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("guests/wat")
        .join(name);
    wat::parse_file(&path).unwrap_or_else(|e| panic!("assembling {}: {e}", path.display()))
}

/// Limits small enough for many nodes at once, and one compile cache for
/// every node the tests start, so each guest is compiled once rather than
/// once per node.
pub fn test_config() -> NodeConfig {
    NodeConfig {
        processes_max: 2_000,
        compile_cache_dir: Some(compile_cache_dir().to_path_buf()),
        ..NodeConfig::default()
    }
}

/// The tests' compile cache: beside the test binary, under the build's
/// target directory, so `cargo clean` removes it. Entries are keyed by the
/// module's bytes and the engine's settings, so a stale one is never used.
pub fn compile_cache_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("current exe");
        exe.parent()
            .expect("target/<profile>/deps")
            .join("molt-test-compile-cache")
    })
}

/// With `MOLT_TEST_LOG` set (a `RUST_LOG`-style filter), what the nodes
/// a test runs in its own process log is printed with the test's output
/// (shown when it fails).
pub fn log_if_asked() {
    if let Ok(filter) = std::env::var("MOLT_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Start a node with `config` and every test guest loaded.
pub fn start_node(config: NodeConfig) -> Node {
    log_if_asked();
    let node = Node::start(config).expect("starting a node");
    let dir = guests_dir();
    for g in GUESTS.iter().filter(|g| !LATER_VERSIONS.contains(g)) {
        let file = dir.join(format!("{}.wasm", g.replace('-', "_")));
        node.load_file(&file)
            .unwrap_or_else(|e| panic!("loading {}: {e}", file.display()));
    }
    node
}

/// A child process (a `molt node`), killed and reaped when dropped, so a
/// test never leaves one behind.
pub struct ChildNode(pub std::process::Child, Option<PathBuf>);

impl ChildNode {
    /// Start `molt node --listen 127.0.0.1:0` with `args` and `cookie`, and
    /// wait (bounded) for its first line, which says where it listens.
    /// Returns the child and that address (`127.0.0.1:PORT`).
    pub async fn start(args: &[&std::ffi::OsStr], cookie: &str) -> (ChildNode, String) {
        use std::io::BufRead;
        // Each child keeps its coordination log in a directory of its own
        // (removed when it is dropped) unless the test names one.
        static CHILDREN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let data = std::env::temp_dir().join(format!(
            "molt-test-data-{}-{}",
            std::process::id(),
            CHILDREN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let child = Command::new(molt_bin())
            .args(["node", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("MOLT_COOKIE", cookie)
            .env("MOLT_DATA_DIR", &data)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("starting molt node");
        let mut child = ChildNode(child, Some(data));
        let stdout = child.0.stdout.take().expect("piped stdout");
        // "node NAME@127.0.0.1 listening on 127.0.0.1:PORT"
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .map(|_| line)
        });
        let line = tokio::time::timeout(WAIT, line)
            .await
            .expect("the node starts")
            .unwrap()
            .unwrap();
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .expect("an address")
            .to_string();
        (child, addr)
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if let Some(dir) = self.1.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The cookie test clusters share.
pub const COOKIE: &[u8] = b"molt-test-cookie";

/// A node named `name@127.0.0.1` with the test guests loaded, listening on
/// a free loopback port with a short tick.
pub async fn dist_node(name: &str) -> (Node, Distribution) {
    dist_node_with(name, COOKIE, |_| {}).await
}

/// As [`dist_node`], with a cookie and a chance to change the config.
pub async fn dist_node_with(
    name: &str,
    cookie: &[u8],
    tweak: impl FnOnce(&mut DistConfig),
) -> (Node, Distribution) {
    let node = start_node(NodeConfig {
        name: format!("{name}@127.0.0.1"),
        ..test_config()
    });
    let mut config = DistConfig::new("127.0.0.1:0".parse().unwrap(), cookie.to_vec());
    config.tick = TICK;
    tweak(&mut config);
    let dist = Distribution::start(&node, config)
        .await
        .expect("distribution starts");
    // Like `molt node`: other nodes can ask this one about its processes
    // and code.
    control(&node, &dist);
    (node, dist)
}

/// Control of `node` in its cluster (the control services registered with
/// `dist` on the first call).
pub fn control(node: &Node, dist: &Distribution) -> molt_host::Control {
    molt_host::Control::new(node.clone(), dist.clone()).expect("the control services register")
}

/// The keep-alive tick of test clusters.
pub const TICK: Duration = Duration::from_millis(600);

/// `name@host:port` of a node, for `join`.
pub fn address_of(dist: &Distribution) -> String {
    format!("{}:{}", dist.name(), dist.local_addr().port())
}

/// A node with default test limits.
pub fn node() -> Node {
    start_node(test_config())
}

/// A puppet process and the mailbox that controls it.
pub struct Puppet {
    /// The puppet's pid.
    pub pid: Pid,
    /// The controller.
    pub ctl: HostMailbox,
    /// Events that arrived while waiting for a command's outcome.
    stash: Vec<Event>,
}

impl Puppet {
    /// Spawn a puppet controlled by a fresh mailbox; waits until it is ready.
    pub async fn spawn(node: &Node) -> Puppet {
        let mut ctl = node.mailbox().expect("mailbox");
        let args = codec::encode(&PuppetArgs {
            controller: ctl.pid(),
        });
        let (pid, _) = ctl
            .spawn("puppet", args, false, false)
            .expect("spawn puppet");
        let mut p = Puppet {
            pid,
            ctl,
            stash: Vec::new(),
        };
        assert_eq!(p.event().await, Event::Ready(pid));
        p
    }

    /// A puppet that takes only commands, with `waiting` messages (tag
    /// 77, payload `n: u32`) left in its mailbox.
    pub async fn busy(node: &Node, waiting: u32) -> Puppet {
        let mut p = Puppet::spawn(node).await;
        assert_eq!(p.cmd(Cmd::OnlyCommands(true)).await, Outcome::Ok);
        for n in 0..waiting {
            p.ctl
                .send(p.pid, 77, Ref::NONE, codec::encode(&n))
                .expect("send to puppet");
        }
        p
    }

    /// Send a command without waiting for its outcome: for commands that
    /// end the puppet (`ExitSelf`, `Panic`) or may end it before it
    /// answers. Should it answer after all, the next [`Puppet::cmd`] would
    /// take that answer for its own, so use it only for such commands.
    pub fn order(&mut self, cmd: Cmd) {
        self.ctl
            .send(self.pid, tag::DATA, Ref::NONE, codec::encode(&cmd))
            .expect("send to puppet");
    }

    /// Run a command in the puppet and return its outcome.
    pub async fn cmd(&mut self, cmd: Cmd) -> Outcome {
        self.order(cmd);
        let filter = Filter {
            tags: vec![tag::DATA],
            reference: None,
        };
        loop {
            let m = self
                .ctl
                .recv_matching(&filter, WAIT)
                .await
                .expect("puppet answers");
            match codec::decode::<Event>(&m.payload) {
                Ok(Event::Done(outcome)) => return outcome,
                Ok(other) => self.stash.push(other),
                Err(e) => panic!("undecodable event from puppet: {e}"),
            }
        }
    }

    /// The next event the puppet reports (a message it got, an EXIT, a DOWN).
    pub async fn event(&mut self) -> Event {
        self.try_event(WAIT)
            .await
            .expect("an event from the puppet")
    }

    /// The next event, or `None` after `timeout`.
    pub async fn try_event(&mut self, timeout: Duration) -> Option<Event> {
        if !self.stash.is_empty() {
            return Some(self.stash.remove(0));
        }
        let filter = Filter {
            tags: vec![tag::DATA],
            reference: None,
        };
        let m = self.ctl.recv_matching(&filter, timeout).await?;
        Some(codec::decode::<Event>(&m.payload).expect("event decodes"))
    }
}

/// The module version `pid` runs, as `ps` shows it.
pub fn version_of(node: &Node, pid: Pid) -> Option<String> {
    node.processes()
        .into_iter()
        .find(|p| p.pid == pid)
        .and_then(|p| p.module.map(|(_, v)| v))
}

/// Wait until `version`'s optimised code is ready (bounded by `WAIT`).
pub async fn wait_optimised(version: &molt_host::ModuleVersion) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !version.optimised() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the optimised code was not ready within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait (bounded) until `pid` runs `version`.
pub async fn wait_for_version(node: &Node, pid: Pid, version: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while version_of(node, pid).as_deref() != Some(version) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pid} still runs {:?}, not {version}",
            version_of(node, pid)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Send a `counter` message (understood by 0.1.0 and later versions).
pub fn send_counter(me: &mut HostMailbox, to: Pid, msg: &counter::CounterMsg) {
    me.send(to, tag::DATA, Ref::NONE, codec::encode(msg))
        .unwrap();
}

/// Ask a counter (any version) for its count.
pub async fn count_of(me: &mut HostMailbox, counter: Pid) -> u64 {
    let from = me.pid();
    send_counter(me, counter, &counter::CounterMsg::Get { from });
    let m = me.recv(WAIT).await.expect("a counter answers Get");
    match codec::decode::<counter::CounterReply>(&m.payload).expect("a CounterReply") {
        counter::CounterReply::Count(n) => n,
    }
}

/// `(count, adds)` from a counter 0.2.0 (0.1.0 does not answer `Stats`).
pub async fn stats_of(me: &mut HostMailbox, counter: Pid) -> (u64, u64) {
    let from = me.pid();
    let stats = counter_v2::CounterMsg::Stats { from };
    me.send(counter, tag::DATA, Ref::NONE, codec::encode(&stats))
        .unwrap();
    let m = me.recv(WAIT).await.expect("a 0.2.0 counter answers Stats");
    match codec::decode::<counter_v2::CounterReply>(&m.payload).expect("a 0.2.0 reply") {
        counter_v2::CounterReply::Stats { count, adds } => (count, adds),
        other => panic!("expected Stats, got {other:?}"),
    }
}

/// Wait for the DOWN of monitor `reference` and return its reason.
pub async fn down_reason(mailbox: &mut HostMailbox, reference: Ref) -> String {
    mailbox
        .recv_down(reference, WAIT)
        .await
        .expect("a DOWN message")
}

/// Spawn `loops` endless loops (more than the threads that run processes),
/// check that a puppet still answers 100 commands meanwhile (so the loops
/// are preempted), then kill them: each ends `killed`.
pub async fn loops_are_preempted_and_killed(node: &Node, loops: usize) {
    let args = codec::encode(&faulty::Fault::Loop);
    spinners_are_preempted_and_killed(node, loops, "faulty", &args).await;
}

/// [`loops_are_preempted_and_killed`] for any module that never returns
/// when spawned with `args`.
pub async fn spinners_are_preempted_and_killed(
    node: &Node,
    loops: usize,
    module: &str,
    args: &[u8],
) {
    let mut watcher = node.mailbox().unwrap();
    let mut running = Vec::new();
    for _ in 0..loops {
        let (pid, r) = watcher.spawn(module, args.to_vec(), false, true).unwrap();
        running.push((pid, r.unwrap()));
    }
    let mut p = Puppet::spawn(node).await;
    let me = p.pid;
    for _ in 0..100 {
        assert_eq!(p.cmd(Cmd::IsAlive(me)).await, Outcome::Bool(true));
    }
    for &(pid, _) in &running {
        assert!(node.is_alive(pid), "a loop ended by itself");
    }
    for &(pid, _) in &running {
        node.exit(pid, "kill");
    }
    for (pid, r) in running {
        assert_eq!(down_reason(&mut watcher, r).await, "killed");
        assert!(!node.is_alive(pid));
    }
}

/// A ring of `n` bench-guest links (the ring `molt bench` measures):
/// returns its first link (which takes the token) and its links from
/// the first round to the last. The first is told its successor.
pub fn ring_of_links(node: &Node, me: &mut HostMailbox, n: usize) -> Vec<Pid> {
    use bench_wire::{BenchArgs, BenchMsg};
    let spawn = |next| {
        node.spawn("bench-guest", codec::encode(&BenchArgs::RingLink { next }))
            .unwrap()
    };
    let first = spawn(None);
    let mut last = first;
    let mut spawned = Vec::new();
    for _ in 1..n {
        last = spawn(Some(last));
        spawned.push(last);
    }
    me.send(
        first,
        tag::DATA,
        Ref::NONE,
        codec::encode(&BenchMsg::Next(last)),
    )
    .unwrap();
    std::iter::once(first)
        .chain(spawned.into_iter().rev())
        .collect()
}

/// Send a token of `hops` into the ring at `first`; whether it comes back
/// (`Done`) within 30 s.
pub async fn token_comes_back(me: &mut HostMailbox, first: Pid, hops: u64) -> bool {
    use bench_wire::BenchMsg;
    let report = me.pid();
    let token = BenchMsg::Token { hops, report };
    me.send(first, tag::DATA, Ref::NONE, codec::encode(&token))
        .unwrap();
    match me.recv(Duration::from_secs(30)).await {
        Some(done) => {
            assert_eq!(codec::decode::<BenchMsg>(&done.payload), Ok(BenchMsg::Done));
            true
        }
        None => false,
    }
}

/// Wait for a `NODEDOWN` message and return the node it names.
pub async fn nodedown(mailbox: &mut HostMailbox) -> String {
    let filter = Filter {
        tags: vec![tag::NODEDOWN],
        reference: None,
    };
    let m = mailbox
        .recv_matching(&filter, WAIT)
        .await
        .expect("a NODEDOWN message");
    String::from_utf8(m.payload.into_vec()).expect("a UTF-8 node name")
}

/// A pid of this node that is certainly dead: a mailbox opened and closed.
pub fn dead_pid(node: &Node) -> Pid {
    let mailbox = node.mailbox().expect("mailbox");
    let pid = mailbox.pid();
    drop(mailbox);
    assert!(!node.is_alive(pid));
    pid
}

/// Spawn `module` monitored by `mailbox` and wait for its exit reason.
pub async fn run_to_exit(mailbox: &mut HostMailbox, module: &str, args: Vec<u8>) -> String {
    let (_, reference) = mailbox.spawn(module, args, false, true).expect("spawn");
    down_reason(mailbox, reference.expect("monitored")).await
}

/// Decode an EXIT message: (from, reason).
pub fn exit_of(m: &Message) -> (Pid, String) {
    assert_eq!(
        m.tag,
        tag::EXIT,
        "expected an EXIT message, got tag {:#x}",
        m.tag
    );
    let e = sysmsg::Exit::decode(&m.payload).expect("EXIT decodes");
    (e.from, e.reason.to_string())
}

/// The `molt` binary of this build, (re)built so it matches the sources.
pub fn molt_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // The test runs as target/<profile>/deps/all-<hash>. Cargo builds
        // a package's binaries only for that package's own tests, so build
        // it here; a no-op when it is fresh.
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps");
        let bin = profile_dir.join(format!("molt{}", std::env::consts::EXE_SUFFIX));
        {
            let profile = profile_dir
                .file_name()
                .and_then(|p| p.to_str())
                .expect("a profile directory");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = Command::new(cargo);
            build.current_dir(env!("CARGO_MANIFEST_DIR")).args([
                "build",
                "--quiet",
                "-p",
                "molt-host",
                "--bin",
                "molt",
            ]);
            match profile {
                "debug" => {}
                "release" => {
                    build.arg("--release");
                }
                other => {
                    build.args(["--profile", other]);
                }
            }
            let out = build.output().expect("running cargo build");
            assert!(
                out.status.success(),
                "building molt: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(bin.is_file(), "no molt binary at {}", bin.display());
        bin
    })
}

/// Run `molt` with `args` to its end; returns its output and stdout +
/// stderr as text.
pub fn molt(args: &[&std::ffi::OsStr]) -> (Output, String) {
    let out = Command::new(molt_bin())
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("running molt");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

/// A certificate authority for tests of mutual TLS: signs node
/// certificates naming nodes as `node_name_to_san` says.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    /// A fresh CA with its own key.
    pub fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        TestCa { issuer }
    }

    /// CA-mode TLS with a certificate this CA signed naming
    /// `named_node` (a full node name, `b@127.0.0.1`), usable by client
    /// and server alike.
    pub fn mode_for(&self, named_node: &str) -> TlsMode {
        let key = rcgen::KeyPair::generate().expect("node key");
        let san = molt_host::net::tls::node_name_to_san(named_node);
        let mut params = rcgen::CertificateParams::new(vec![san]).expect("node params");
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("node certificate");
        TlsMode::Ca {
            ca_cert_pem: self.issuer.pem().into_bytes(),
            cert_pem: cert.pem().into_bytes(),
            key_pem: key.serialize_pem().into_bytes(),
        }
    }
}

/// A peer that speaks the node protocol by hand: it runs the real
/// handshake (self-signed TLS, the test cookie) as `name@127.0.0.1`, then
/// lets a test write any bytes on its control stream.
pub struct RawPeer {
    /// The authenticated connection.
    pub connection: quinn::Connection,
    /// The control stream, where the node reads frames from this peer.
    pub send: quinn::SendStream,
    recv: quinn::RecvStream,
    _endpoint: quinn::Endpoint,
}

impl RawPeer {
    /// Connect to `target` and complete the handshake.
    pub async fn connect(name: &str, target: &Distribution) -> RawPeer {
        use molt_host::net::{handshake::Role, tls};
        let name = format!("{name}@127.0.0.1");
        let (_, client_crypto) =
            tls::quic_configs(&TlsMode::SelfSigned, &name).expect("client TLS config");
        let mut config = quinn::ClientConfig::new(std::sync::Arc::new(client_crypto));
        config.transport_config(raw_transport());
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("endpoint");
        let server_name =
            tls::server_name_for(&TlsMode::SelfSigned, target.name()).expect("server name");
        let connection = endpoint
            .connect_with(config, target.local_addr(), &server_name)
            .expect("connecting")
            .await
            .expect("QUIC connection");
        let (send, recv) = connection.open_bi().await.expect("control stream");
        RawPeer::handshake(
            name,
            Role::Initiator,
            endpoint,
            connection,
            send,
            recv,
            vec![],
        )
        .await
    }

    /// Listen on a free loopback port; the address (`name@127.0.0.1:port`)
    /// for a node to join, and the endpoint to pass to [`RawPeer::accept`].
    pub fn listen(name: &str) -> (String, quinn::Endpoint) {
        let (server_crypto, _) =
            molt_host::net::tls::quic_configs(&TlsMode::SelfSigned, &format!("{name}@127.0.0.1"))
                .expect("server TLS config");
        let mut config = quinn::ServerConfig::with_crypto(std::sync::Arc::new(server_crypto));
        config.transport_config(raw_transport());
        let endpoint =
            quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).expect("endpoint");
        let port = endpoint.local_addr().expect("local address").port();
        (format!("{name}@127.0.0.1:{port}"), endpoint)
    }

    /// Accept one node on `endpoint` (from [`RawPeer::listen`]) and
    /// complete the handshake; `after_welcome` goes out in the same write
    /// as this side's last handshake message.
    pub async fn accept(name: &str, endpoint: quinn::Endpoint, after_welcome: Vec<u8>) -> RawPeer {
        use molt_host::net::handshake::Role;
        let incoming = tokio::time::timeout(WAIT, endpoint.accept())
            .await
            .expect("a node connects")
            .expect("the endpoint is open");
        let connection = incoming.await.expect("QUIC connection");
        let (send, recv) = tokio::time::timeout(WAIT, connection.accept_bi())
            .await
            .expect("the node opens the control stream")
            .expect("control stream");
        let name = format!("{name}@127.0.0.1");
        RawPeer::handshake(
            name,
            Role::Acceptor,
            endpoint,
            connection,
            send,
            recv,
            after_welcome,
        )
        .await
    }

    async fn handshake(
        name: String,
        role: molt_host::net::handshake::Role,
        endpoint: quinn::Endpoint,
        connection: quinn::Connection,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        after_welcome: Vec<u8>,
    ) -> RawPeer {
        use molt_host::net::handshake::{self, Handshake, LocalInfo, Status};
        // The same exporter label as the nodes use.
        let mut exporter = [0u8; 32];
        connection
            .export_keying_material(&mut exporter, b"molt-dist-1", b"")
            .expect("TLS exporter");
        let local = LocalInfo {
            name,
            incarnation: 1,
            hidden: false,
            listen: None,
        };
        let deadline = std::time::Instant::now() + WAIT;
        let mut hs = Handshake::new(
            role,
            local,
            COOKIE,
            exporter,
            handshake::random_challenge(),
            deadline,
        );
        loop {
            let out = hs.take_output();
            if !out.is_empty() {
                send.write_all(&out).await.expect("handshake write");
            }
            let message = read_message(&mut recv).await;
            match hs.receive(&message, &mut |_| Ok(())) {
                Status::InProgress => continue,
                Status::Done(_) => break,
                Status::Refused(why) => panic!("the node refused the raw peer: {why}"),
            }
        }
        let mut out = hs.take_output();
        out.extend_from_slice(&after_welcome);
        if !out.is_empty() {
            send.write_all(&out).await.expect("handshake write");
        }
        RawPeer {
            connection,
            send,
            recv,
            _endpoint: endpoint,
        }
    }

    /// The next frame the node sends on the control stream.
    pub async fn next_frame(&mut self) -> molt_host::net::frame::Frame {
        let message = read_message(&mut self.recv).await;
        let mut decoder = molt_host::net::frame::FrameDecoder::new(u32::MAX);
        decoder.push(&message);
        decoder
            .next_frame()
            .expect("a well-formed frame")
            .expect("a whole frame")
    }
}

/// Transport settings of a [`RawPeer`]: keep-alives within the test tick.
fn raw_transport() -> std::sync::Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(TICK / 4));
    std::sync::Arc::new(transport)
}

/// One length-prefixed message from `recv`, prefix included, read exactly
/// (nothing past it), within [`WAIT`].
async fn read_message(recv: &mut quinn::RecvStream) -> Vec<u8> {
    let read = async {
        let mut prefix = [0u8; 4];
        recv.read_exact(&mut prefix).await?;
        let mut message = prefix.to_vec();
        message.resize(4 + u32::from_le_bytes(prefix) as usize, 0);
        recv.read_exact(&mut message[4..]).await?;
        Ok::<_, quinn::ReadExactError>(message)
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("a message from the node")
        .expect("the stream stays open")
}

/// A fresh directory under the system's temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory, named after `tag`.
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("molt-test-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
