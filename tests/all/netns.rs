//! Three `molt node` processes, each in a network namespace of its own
//! (veth pairs on a bridge in a fourth namespace): a 2|1 partition by
//! dropping packets with nftables, a node paused with SIGSTOP past its
//! session TTL, and the coordination leader's node killed with SIGKILL,
//! observed as an operator sees them: `molt cluster`, `molt elections`,
//! `molt names`, `molt spawn` and the nodes' logs. Needs root, iproute2
//! and nftables; without them each test prints why it skipped.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use molt_tests::checker::{self, Observation};
use molt_tests::{TempDir, compile_cache_dir, guest_file, molt_bin};

/// The cluster's cookie.
const COOKIE: &str = "netns-test-cookie-0123456789abcdef";
/// Every node listens on this port of its own address.
const PORT: u16 = 4370;
/// The nodes' coordination session TTL.
const TTL: Duration = Duration::from_millis(1500);
/// The nodes' keep-alive tick: a peer silent this long is down, so a
/// partition longer than this cuts the connections and healing it needs
/// new ones.
const TICK: Duration = Duration::from_millis(2000);
/// How long a test waits for what should happen (a start, a failover,
/// convergence after a heal).
const PATIENCE: Duration = Duration::from_secs(30);
/// How long one CLI command may run.
const CLI_LIMIT: Duration = Duration::from_secs(15);
/// Between two looks.
const POLL: Duration = Duration::from_millis(100);
/// The nodes, one namespace each.
const NODES: [&str; 3] = ["a", "b", "c"];
/// The nftables table a partition adds to a namespace.
const TABLE: &str = "molt_partition";

/// One test at a time: three nodes each are plenty on a small machine,
/// and the TTL is short.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Why these tests cannot run here, if they cannot.
fn missing_prerequisite() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("unknown")
        .to_string();
    if euid != "0" {
        return Some(format!("not root (effective uid {euid})"));
    }
    for (tool, arg, package) in [("ip", "-V", "iproute2"), ("nft", "--version", "nftables")] {
        let ok = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Some(format!("`{tool}` is missing (install {package})"));
        }
    }
    None
}

/// Whether to skip, saying why.
fn skip(test: &str) -> bool {
    match missing_prerequisite() {
        Some(why) => {
            println!("skipped: {test} needs root and iproute2/nftables: {why}");
            true
        }
        None => false,
    }
}

/// Run `command` to its end within [`CLI_LIMIT`] (killed
/// past it); whether it succeeded and its stdout + stderr.
fn run_bounded(mut command: Command) -> (bool, String) {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(CLI_LIMIT) {
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            (out.status.success(), text)
        }
        Ok(Err(e)) => (false, format!("waiting for {command:?}: {e}")),
        Err(_) => {
            // Our own child, by its id; the thread reaps it.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            (false, format!("{command:?} still ran after {CLI_LIMIT:?}"))
        }
    }
}

/// `ip ARGS`, which must succeed.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Text with ANSI escape sequences (colours) removed.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters final-letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Namespaces of an earlier run of these tests that ended without
/// removing them (its process was killed): removed, with the nodes it
/// left running in them.
fn remove_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // molt<pid>-<test>-<a|b|c|br>: ours only.
        let Some(pid) = name
            .strip_prefix("molt")
            .and_then(|rest| rest.split_once('-'))
            .map(|(pid, _)| pid)
        else {
            continue;
        };
        let ours = name.ends_with("-a")
            || name.ends_with("-b")
            || name.ends_with("-c")
            || name.ends_with("-br");
        if ours
            && !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            // Nodes the dead run left running in it go first, by pid.
            let pids = Command::new("ip")
                .args(["netns", "pids", &name])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
            let _ = Command::new("ip").args(["netns", "delete", &name]).status();
        }
    }
}

/// What `molt cluster` shows.
#[derive(Clone, Debug)]
struct ClusterView {
    /// This node's role: leader, follower, candidate, learner.
    role: String,
    /// The leader it knows of.
    leader: Option<String>,
    /// The Raft term.
    term: u64,
    /// How many voters.
    voters: usize,
    /// How many voters have a session.
    sessions: usize,
}

impl ClusterView {
    fn parse(text: &str) -> Option<ClusterView> {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key).map(str::trim))
                .map(str::to_string)
        };
        let role = field("node ")?
            .split_once('(')?
            .1
            .split(',')
            .next()?
            .to_string();
        let leader = field("leader ")?;
        let leader = (leader != "(none)").then_some(leader);
        let term = field("term ")?.parse().ok()?;
        let voters: Vec<&str> = text.lines().filter(|l| l.starts_with("voter ")).collect();
        let sessions = voters.iter().filter(|l| !l.contains("no session")).count();
        Some(ClusterView {
            role,
            leader,
            term,
            voters: voters.len(),
            sessions,
        })
    }
}

/// The `singleton` election as `molt elections` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ElectionView {
    /// Leader pid and term.
    leader: Option<(String, u64)>,
    /// Candidates' pids.
    candidates: Vec<String>,
}

impl ElectionView {
    fn parse(text: &str) -> ElectionView {
        let mut view = ElectionView::default();
        let mut ours = false;
        for line in text.lines() {
            if let Some(c) = line.trim_start().strip_prefix("candidate ") {
                if ours {
                    view.candidates.push(c.trim().to_string());
                }
                continue;
            }
            ours = line.starts_with(&format!("{} ", singleton::ELECTION));
            if !ours {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            // singleton  leader <pid> term T
            if let ["leader", pid, "term", term] = words[1..] {
                view.leader = term.parse().ok().map(|t| (pid.to_string(), t));
            }
        }
        view
    }
}

/// One node: its namespace, address, process and log.
struct NetNode {
    /// `a`, `b` or `c`.
    short: &'static str,
    /// Its namespace.
    ns: String,
    /// Its address.
    ip: String,
    /// The `molt node` process (gone once killed).
    child: Option<Child>,
    /// Where its stdout and stderr go.
    log: PathBuf,
}

impl NetNode {
    /// Its node name.
    fn name(&self) -> String {
        format!("{}@{}", self.short, self.ip)
    }

    /// Where to reach it: `name@ip:port`.
    fn address(&self) -> String {
        format!("{}:{PORT}", self.name())
    }

    /// Its process id.
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("the node runs").id()
    }

    /// Its log so far, without colours.
    fn log_text(&self) -> String {
        plain(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }
}

/// The test network and its nodes. Dropping it kills every node and
/// deletes every namespace it made, also when the test panicked.
struct Net {
    /// The namespaces made, to delete.
    made: Vec<String>,
    nodes: Vec<NetNode>,
    /// Data directories and logs.
    dir: TempDir,
    /// Time zero of the test's timeline.
    t0: Instant,
    /// What happened when, printed at the end (and on failure).
    timeline: Vec<String>,
    /// Who each pid spawned as a singleton candidate belongs to.
    singletons: Vec<(String, usize)>,
    /// Who each node's `molt elections` said leads, for the checker.
    observations: Vec<Observation>,
}

impl Net {
    /// A bridge namespace and three node namespaces `molt<pid>-<test>-{a,b,c}`
    /// on `10.231.<subnet>.0/24` (`.1`, `.2`, `.3`), loopback up in each.
    fn new(test: &str, subnet: u8) -> Net {
        remove_stale_namespaces();
        let prefix = format!("molt{}-{test}", std::process::id());
        let mut net = Net {
            made: Vec::new(),
            nodes: Vec::new(),
            dir: TempDir::new(&format!("netns-{test}")),
            t0: Instant::now(),
            timeline: Vec::new(),
            singletons: Vec::new(),
            observations: Vec::new(),
        };
        let bridge = format!("{prefix}-br");
        ip(&["netns", "add", &bridge]);
        net.made.push(bridge.clone());
        ip(&["-n", &bridge, "link", "set", "lo", "up"]);
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge, "link", "set", "br0", "up"]);
        for (i, short) in NODES.into_iter().enumerate() {
            let ns = format!("{prefix}-{short}");
            ip(&["netns", "add", &ns]);
            net.made.push(ns.clone());
            let port = format!("v{short}");
            // Both ends are made inside our namespaces: nothing in the
            // host's own namespace is touched.
            ip(&[
                "-n", &bridge, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            ip(&["-n", &bridge, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &bridge, "link", "set", &port, "up"]);
            let addr = format!("10.231.{subnet}.{}", i + 1);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            let log = net.dir.path().join(format!("{short}.log"));
            net.nodes.push(NetNode {
                short,
                ns,
                ip: addr,
                child: None,
                log,
            });
        }
        net.note(format!(
            "namespaces {prefix}-{{br,a,b,c}} on 10.231.{subnet}.0/24"
        ));
        net
    }

    /// Milliseconds since the test began.
    fn now_ms(&self) -> u128 {
        self.t0.elapsed().as_millis()
    }

    /// Record (and print) what happened now.
    fn note(&mut self, what: impl Into<String>) {
        let line = format!("{:>6} ms  {}", self.now_ms(), what.into());
        println!("{line}");
        self.timeline.push(line);
    }

    /// Start `molt node` on node `i` (joining `a` unless it is `a`), wait
    /// until it says where it listens and that its coordination started.
    fn start(&mut self, i: usize) {
        let node = &self.nodes[i];
        let data = self.dir.path().join(format!("{}-data", node.short));
        let log = File::create(&node.log).expect("a log file");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &node.ns])
            .arg(molt_bin())
            .args(["node", "--name", node.short])
            .args(["--listen", &format!("{}:{PORT}", node.ip)])
            .args(["--session-ttl-ms", &TTL.as_millis().to_string()])
            .args(["--tick-ms", &TICK.as_millis().to_string()])
            .arg("--data-dir")
            .arg(&data)
            .arg("--load")
            .arg(guest_file("singleton"))
            .arg("--compile-cache-dir")
            .arg(compile_cache_dir());
        if i > 0 {
            command.args(["--join", &self.nodes[0].address()]);
        }
        let child = command
            .env("MOLT_COOKIE", COOKIE)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log)
            .spawn()
            .expect("starting molt node");
        let pid = child.id();
        self.nodes[i].child = Some(child);
        // `ip netns exec` execs the program in place: signals sent to this
        // pid reach the node itself.
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = self.nodes[i].log_text();
            if log.contains(" listening on ") && log.contains("coordination: cluster") {
                break;
            }
            assert!(
                self.nodes[i]
                    .child
                    .as_mut()
                    .unwrap()
                    .try_wait()
                    .unwrap()
                    .is_none(),
                "node {} ended:\n{log}",
                self.nodes[i].short
            );
            assert!(
                Instant::now() < deadline,
                "node {} did not start in {PATIENCE:?}:\n{log}",
                self.nodes[i].short
            );
            std::thread::sleep(POLL);
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_eq!(comm.trim(), "molt", "pid {pid} is the node itself");
        let name = self.nodes[i].name();
        self.note(format!("{name} started (pid {pid})"));
    }

    /// Start the three nodes and wait until `a` shows three voters, a
    /// leader and three sessions.
    fn start_cluster(&mut self) {
        for i in 0..NODES.len() {
            self.start(i);
        }
        let view = self.wait_cluster(0, "three voters with sessions", |v| {
            v.voters == 3 && v.sessions == 3 && v.leader.is_some()
        });
        self.note(format!(
            "three voters, leader {}, term {}",
            view.leader.unwrap_or_default(),
            view.term
        ));
    }

    /// `molt ARGS[0] --node <node i> ARGS[1..]`, run in node `i`'s
    /// namespace: whether it succeeded, and its output.
    fn cli(&self, i: usize, args: &[&str]) -> (bool, String) {
        let node = &self.nodes[i];
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &node.ns])
            .arg(molt_bin())
            .arg(args[0])
            .args(["--node", &node.address()])
            .args(&args[1..])
            .env("MOLT_COOKIE", COOKIE)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG");
        let (ok, text) = run_bounded(command);
        (ok, plain(&text))
    }

    /// `molt cluster` on node `i`.
    fn cluster(&self, i: usize) -> Result<ClusterView, String> {
        let (ok, text) = self.cli(i, &["cluster"]);
        match ClusterView::parse(&text) {
            Some(view) if ok => Ok(view),
            _ => Err(text),
        }
    }

    /// `molt elections` on node `i`, recorded for the election checker.
    fn elections(&mut self, i: usize) -> Result<ElectionView, String> {
        let (ok, text) = self.cli(i, &["elections"]);
        if !ok {
            return Err(text);
        }
        let view = ElectionView::parse(&text);
        if let Some((pid, term)) = &view.leader {
            let leader = self.owner(pid).map_or(u64::MAX, |n| n as u64);
            let at = self.t0.elapsed().as_nanos() as u64;
            self.observations
                .push(Observation::leader_changed(i as u64, leader, *term, at));
        }
        Ok(view)
    }

    /// The node whose singleton `pid` is.
    fn owner(&self, pid: &str) -> Option<usize> {
        self.singletons
            .iter()
            .find(|(p, _)| p == pid)
            .map(|(_, n)| *n)
    }

    /// Poll `look` until it gives `Ok`, for at most [`PATIENCE`]; the
    /// panic shows the last thing it saw.
    fn wait<T>(&mut self, what: &str, mut look: impl FnMut(&mut Net) -> Result<T, String>) -> T {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match look(self) {
                Ok(v) => return v,
                Err(last) => {
                    if Instant::now() > deadline {
                        self.note(format!("gave up waiting for {what}"));
                        panic!(
                            "{what}: not within {PATIENCE:?}; last seen:\n{last}\ntimeline:\n{}",
                            self.timeline.join("\n")
                        );
                    }
                }
            }
            std::thread::sleep(POLL);
        }
    }

    /// Wait until `molt cluster` on node `i` shows what `ok` wants.
    fn wait_cluster(
        &mut self,
        i: usize,
        what: &str,
        ok: impl Fn(&ClusterView) -> bool,
    ) -> ClusterView {
        let what = format!("{what} (`molt cluster` on {})", self.nodes[i].short);
        self.wait(&what, |net| {
            let (done, text) = net.cli(i, &["cluster"]);
            match ClusterView::parse(&text) {
                Some(view) if done && ok(&view) => Ok(view),
                // The whole output: this node's own session, how far its
                // log is applied, which voter lacks a session.
                Some(view) => Err(format!("{view:?}\n{text}")),
                None => Err(text),
            }
        })
    }

    /// Wait until `molt elections` on each of `on` shows the same leader
    /// and `ok` likes it; that leader's node and term.
    fn wait_singleton(
        &mut self,
        on: &[usize],
        what: &str,
        ok: impl Fn(usize, u64, &ElectionView) -> bool,
    ) -> (usize, u64) {
        let on = on.to_vec();
        let names: Vec<&str> = on.iter().map(|&i| self.nodes[i].short).collect();
        let what = format!("{what} (`molt elections` on {})", names.join(", "));
        self.wait(&what, |net| {
            let mut seen = Vec::new();
            for &i in &on {
                seen.push(net.elections(i)?);
            }
            let first = &seen[0];
            let Some((pid, term)) = &first.leader else {
                return Err(format!("no leader: {seen:?}"));
            };
            let leader = net
                .owner(pid)
                .ok_or_else(|| format!("{pid} is none of our singletons: {seen:?}"))?;
            if seen.iter().all(|v| v.leader == first.leader) && ok(leader, *term, first) {
                Ok((leader, *term))
            } else {
                Err(format!("{seen:?}"))
            }
        })
    }

    /// Spawn a `singleton` candidate on node `i`; returns its pid.
    fn spawn_singleton(&mut self, i: usize) -> String {
        let (ok, text) = self.cli(i, &["spawn", "singleton", "singleton"]);
        assert!(ok, "molt spawn on {}: {text}", self.nodes[i].short);
        let pid = text.trim().to_string();
        self.singletons.push((pid.clone(), i));
        let name = self.nodes[i].name();
        self.note(format!("singleton {pid} spawned on {name}"));
        pid
    }

    /// Spawn the three singletons, `first` first, and wait until it leads
    /// with the others as candidates (as every node sees it); the term.
    fn three_singletons(&mut self, first: usize) -> u64 {
        self.spawn_singleton(first);
        self.wait_singleton(&[first], "the first singleton leads", |l, _, _| l == first);
        for i in (0..NODES.len()).filter(|&i| i != first) {
            self.spawn_singleton(i);
        }
        let (_, term) = self.wait_singleton(&[0, 1, 2], "three singleton candidates", |l, _, v| {
            l == first && v.candidates.len() == 3
        });
        self.note(format!(
            "singleton on {} leads, term {term}, three candidates",
            self.nodes[first].name()
        ));
        term
    }

    /// Drop packets between node `minority` and the two others (input
    /// hooks on both sides, so both directions are cut).
    fn partition(&mut self, minority: usize) {
        for i in 0..NODES.len() {
            let from: Vec<String> = if i == minority {
                (0..NODES.len())
                    .filter(|&j| j != minority)
                    .map(|j| self.nodes[j].ip.clone())
                    .collect()
            } else {
                vec![self.nodes[minority].ip.clone()]
            };
            let ns = &self.nodes[i].ns;
            for rule in [
                format!("add table inet {TABLE}"),
                format!(
                    "add chain inet {TABLE} input {{ type filter hook input priority 0; policy accept; }}"
                ),
                format!(
                    "add rule inet {TABLE} input ip saddr {{ {} }} drop",
                    from.join(", ")
                ),
            ] {
                nft(ns, &rule);
            }
        }
        let name = self.nodes[minority].name();
        self.note(format!("partition: {name} | the two others"));
    }

    /// Undo [`Net::partition`].
    fn heal(&mut self) {
        for node in &self.nodes {
            nft(&node.ns, &format!("delete table inet {TABLE}"));
        }
        self.note("healed: partition rules deleted");
    }

    /// Send `signal` (`STOP`, `CONT`) to node `i`'s process.
    fn signal(&mut self, i: usize, signal: &str) {
        let pid = self.nodes[i].pid();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} {pid}");
        let name = self.nodes[i].name();
        self.note(format!("kill -{signal} {name} (pid {pid})"));
    }

    /// SIGKILL node `i`'s process and reap it.
    fn kill(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().expect("the node runs");
        let pid = child.id();
        child.kill().expect("kill -9");
        let _ = child.wait();
        let name = self.nodes[i].name();
        self.note(format!("kill -9 {name} (pid {pid})"));
    }

    /// The node index of a node name.
    fn index_of(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name() == name)
            .unwrap_or_else(|| panic!("{name} is none of our nodes"))
    }

    /// Check every `molt elections` observation: one leader per term, no
    /// node's term going back.
    fn check_elections(&mut self) {
        let n = self.observations.len();
        if let Err(v) = checker::check_elections(&self.observations) {
            panic!(
                "election observations break a rule: {v}\ntimeline:\n{}",
                self.timeline.join("\n")
            );
        }
        self.note(format!(
            "{n} `molt elections` observations pass the election checker"
        ));
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                // SIGKILL ends a stopped process too.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for ns in self.made.iter().rev() {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
        if std::thread::panicking() {
            // The whole logs are kept for a look; the ends are shown here,
            // without the CLIs' own comings and goings.
            let kept = std::env::temp_dir().join(format!(
                "molt-netns-logs-{}",
                self.made[0].trim_end_matches("-br")
            ));
            let _ = std::fs::create_dir_all(&kept);
            for node in &self.nodes {
                let _ = std::fs::copy(&node.log, kept.join(format!("{}.log", node.short)));
                let text = node.log_text();
                let lines: Vec<&str> = text.lines().filter(|l| !l.contains("molt-cli-")).collect();
                eprintln!(
                    "--- log of {} (whole: {}) ---\n{}",
                    node.short,
                    kept.join(format!("{}.log", node.short)).display(),
                    tail(&lines.join("\n"), 40)
                );
            }
        }
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `nft RULE` in namespace `ns`, which must succeed.
fn nft(ns: &str, rule: &str) {
    ip(&["netns", "exec", ns, "nft", rule]);
}

/// One test at a time (a failed one does not stop the next).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The other two nodes.
fn others(of: usize) -> Vec<usize> {
    (0..NODES.len()).filter(|&i| i != of).collect()
}

/// The node `molt cluster` on node `i` names as leader.
fn raft_leader(net: &mut Net, i: usize) -> (usize, u64) {
    let view = net.wait_cluster(i, "a coordination leader", |v| v.leader.is_some());
    (net.index_of(view.leader.as_deref().unwrap()), view.term)
}

/// Wait until node `i`'s log, past its first `from` bytes, has a line
/// with `needle`; that line.
fn wait_log(net: &mut Net, i: usize, from: usize, needle: &str) -> String {
    let what = format!("`{needle}` in the log of {}", net.nodes[i].short);
    net.wait(&what, |net| {
        let log = net.nodes[i].log_text();
        log.get(from..)
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains(needle))
            .map(str::to_string)
            .ok_or_else(|| tail(&log, 15))
    })
}

/// Spawn the singleton example's store on node `on` and wait until the
/// cluster name it registers (`counter-store`) shows on each of `seen_by`
/// (`where_` says which, for the timeline); the store's pid as printed.
fn spawn_store(net: &mut Net, on: usize, seen_by: &[usize], where_: &str) -> String {
    let (ok, store) = net.cli(on, &["spawn", "singleton", "store"]);
    assert!(ok, "{store}");
    let store = store.trim().to_string();
    net.wait(&format!("the store's name on {where_}"), |net| {
        for &i in seen_by {
            let (ok, names) = net.cli(i, &["names"]);
            if !ok
                || !names
                    .lines()
                    .any(|l| l.contains("counter-store") && l.contains(&store))
            {
                return Err(names);
            }
        }
        Ok(())
    });
    store
}

/// The test's three nodes up, and which leads the coordination group in
/// which Raft term; `None` (having said why) where it cannot run here. The
/// guard keeps these tests one at a time; the cluster stops before it.
fn started(
    test: &str,
    tag: &str,
    seed: u8,
) -> Option<(std::sync::MutexGuard<'static, ()>, Net, usize, u64)> {
    if skip(test) {
        return None;
    }
    let one = serial();
    let mut net = Net::new(tag, seed);
    net.start_cluster();
    let (leader, term) = raft_leader(&mut net, 0);
    Some((one, net, leader, term))
}

#[test]
fn a_2_1_partition_leaves_the_majority_working_and_heals_without_help() {
    let test = "a_2_1_partition_leaves_the_majority_working_and_heals_without_help";
    let Some((_one, mut net, minority, raft_term)) = started(test, "part", 1) else {
        return;
    };
    // A table replicated on all three nodes, written once.
    let (ok, text) = net.cli(0, &["table", "create", "ledger", "--replica", "all"]);
    assert!(ok, "{text}");
    net.wait("a first write to the replicated table", |net| {
        let (ok, text) = net.cli(0, &["table", "put", "ledger", "before", "first"]);
        if ok { Ok(()) } else { Err(text) }
    });
    // And a conflict-free counter on all three.
    let (ok, text) = net.cli(
        0,
        &[
            "table",
            "create",
            "hits",
            "--kind",
            "counter",
            "--replica",
            "all",
        ],
    );
    assert!(ok, "{text}");
    // The coordination leader's node, where the singleton leads too, is
    // the one cut off.
    let term = net.three_singletons(minority);
    let majority = others(minority);
    let minority_name = net.nodes[minority].name();
    net.partition(minority);
    let cut = Instant::now();

    // The majority elects a coordination leader of its own.
    for &i in &majority {
        let view = net.wait_cluster(i, "a new coordination leader on the majority side", |v| {
            v.leader.as_ref().is_some_and(|l| *l != minority_name) && v.term > raft_term
        });
        let shown = format!(
            "{} shows leader {} term {} ({} ms after the cut)",
            net.nodes[i].short,
            view.leader.unwrap_or_default(),
            view.term,
            cut.elapsed().as_millis()
        );
        net.note(shown);
    }
    // The cut-off singleton is told it lost the lead before another is
    // elected (its node could not renew its session) ...
    let lost = wait_log(
        &mut net,
        minority,
        0,
        &format!("singleton: lost the lead of term {term}"),
    );
    let told = cut.elapsed();
    net.note(format!(
        "{minority_name}'s singleton told at +{} ms: {}",
        told.as_millis(),
        lost.trim()
    ));
    // ... and the singleton moves to the majority once that session
    // expired.
    let (leader, new_term) = net.wait_singleton(&majority, "the singleton moves", |l, t, _| {
        l != minority && t > term
    });
    let moved = cut.elapsed();
    let leader_name = net.nodes[leader].name();
    net.note(format!(
        "singleton on {leader_name} leads, term {new_term} ({} ms after the cut)",
        moved.as_millis()
    ));
    assert!(told < moved, "told at {told:?}, moved at {moved:?}");

    // The majority registers a cluster name and takes a lock.
    let store = spawn_store(&mut net, majority[0], &majority, "the majority side");
    net.note(format!(
        "counter-store registered by {store} on the majority"
    ));
    let log_from = net.nodes[majority[1]].log_text().len();
    let (ok, text) = net.cli(majority[1], &["spawn", "singleton", "incr", "5"]);
    assert!(ok, "{text}");
    let done = wait_log(&mut net, majority[1], log_from, "incr: 5 done");
    net.note(format!("majority: {}", done.trim()));
    assert!(done.contains("the counter was 5"), "{done}");

    // The replicated table: the majority writes; the minority's write is
    // refused with no quorum, and its replica says it may be stale.
    net.wait("a write to the table on the majority side", |net| {
        let (ok, text) = net.cli(majority[0], &["table", "put", "ledger", "during", "second"]);
        if ok { Ok(()) } else { Err(text) }
    });
    let asked = Instant::now();
    let (ok, refused) = net.cli(minority, &["table", "put", "ledger", "minor", "third"]);
    assert!(
        !ok && refused.to_lowercase().contains("no quorum"),
        "{refused}"
    );
    net.note(format!(
        "minority: a table write refused after {} ms: {}",
        asked.elapsed().as_millis(),
        refused.trim()
    ));
    let (ok, stale) = net.cli(minority, &["table", "get", "ledger", "before"]);
    assert!(
        ok && stale.contains("\"first\"") && stale.contains("may be stale"),
        "{stale}"
    );
    // The conflict-free counter takes adds on both sides at once.
    let (ok, text) = net.cli(minority, &["table", "add", "hits", "home", "7"]);
    assert!(ok && text.contains("\"home\": 7"), "minority add: {text}");
    let (ok, text) = net.cli(majority[0], &["table", "add", "hits", "home", "5"]);
    assert!(ok, "majority add: {text}");
    net.note("the counter took an add on each side of the partition");

    // The minority cannot: a registration there fails with no quorum,
    // in bounded time.
    let (ok, refused) = net.cli(minority, &["spawn", "singleton", "store"]);
    assert!(ok, "{refused}");
    let refused = refused.trim().to_string();
    let asked = Instant::now();
    let crash = wait_log(&mut net, minority, 0, &refused);
    net.note(format!(
        "minority: {refused} ended after {} ms: {}",
        asked.elapsed().as_millis(),
        crash.trim()
    ));
    assert!(
        crash.contains("process crashed") && crash.to_lowercase().contains("quorum"),
        "{crash}"
    );
    let (_, names) = net.cli(minority, &["names"]);
    assert!(!names.contains(&refused), "{names}");
    // Its operator sees it is alone: no session of its own, and as the
    // old leader, how long no quorum has answered it.
    let (_, alone) = net.cli(minority, &["cluster"]);
    assert!(alone.contains("session   none"), "{alone}");
    assert!(
        !alone.contains("(leader,") || alone.contains("no quorum has answered it"),
        "{alone}"
    );
    let seen = net.cluster(minority);
    net.note(format!("minority's own view meanwhile: {seen:?}"));
    if let Ok(view) = seen {
        assert!(
            view.term < new_term || view.leader.as_deref() != Some(&*leader_name),
            "the minority cannot know of the new leader: {view:?}"
        );
    }

    // Heal: everything converges, with no manual step.
    net.heal();
    let healed = Instant::now();
    let views = net.wait("all three agree on the coordination group", |net| {
        let views = (0..NODES.len())
            .map(|i| net.cluster(i))
            .collect::<Result<Vec<_>, _>>()?;
        let first = &views[0];
        let agree = views
            .iter()
            .all(|v| v.leader == first.leader && v.term == first.term);
        let whole = views.iter().all(|v| v.voters == 3 && v.sessions == 3);
        if first.leader.is_some() && agree && whole {
            Ok(views)
        } else {
            Err(format!("{views:#?}"))
        }
    });
    net.note(format!(
        "converged {} ms after the heal: leader {}, term {}, roles {:?}, three sessions",
        healed.elapsed().as_millis(),
        views[0].leader.clone().unwrap_or_default(),
        views[0].term,
        views.iter().map(|v| v.role.as_str()).collect::<Vec<_>>()
    ));
    net.wait_singleton(&[0, 1, 2], "one singleton leader everywhere", |l, t, _| {
        l == leader && t == new_term
    });
    net.wait("the store's name on all three", |net| {
        for i in 0..NODES.len() {
            let (ok, names) = net.cli(i, &["names"]);
            let held: Vec<&str> = names
                .lines()
                .filter(|l| l.starts_with("counter-store"))
                .collect();
            if !ok || held.len() != 1 || !held[0].contains(&store) {
                return Err(names);
            }
        }
        Ok(())
    });
    net.note("every node shows counter-store held by the majority's store");
    // The minority's replica caught up by itself.
    net.wait("the majority's table write on the old minority", |net| {
        let (ok, text) = net.cli(minority, &["table", "get", "ledger", "during"]);
        if ok && text.contains("\"second\"") && !text.contains("stale") {
            Ok(())
        } else {
            Err(text)
        }
    });
    net.note("the old minority's replica holds the majority's table write");
    // The counter's replicas converged: both adds, on every node.
    for node in 0..3 {
        net.wait("both sides' adds counted on every node", |net| {
            let (ok, text) = net.cli(node, &["table", "add", "hits", "home", "0"]);
            if ok && text.contains("\"home\": 12") {
                Ok(())
            } else {
                Err(text)
            }
        });
    }
    net.note("every node counts 12: both sides' adds, once each");
    // The cut-off singleton never led again.
    let log = net.nodes[minority].log_text();
    let after = log.split_once(lost.as_str()).map_or("", |(_, rest)| rest);
    assert!(
        !after.contains("singleton: leading"),
        "{minority_name}'s singleton led again after it was told it lost:\n{}",
        tail(after, 20)
    );
    net.check_elections();
}

/// Pause node `holder`, whose singleton leads `term`, with SIGSTOP until
/// the singleton leads elsewhere (and, if `long`, until the others'
/// connections to it timed out too), then resume it: its singleton is
/// told it lost the lead and never leads again, and every node agrees on
/// the new leader. The new leader's node and term.
fn pause_past_the_ttl(net: &mut Net, holder: usize, term: u64, long: bool) -> (usize, u64) {
    let rest = others(holder);
    let holder_name = net.nodes[holder].name();
    let logs_at_pause: Vec<usize> = net.nodes.iter().map(|n| n.log_text().len()).collect();
    net.signal(holder, "STOP");
    let stopped = Instant::now();
    let (leader, new_term) = net.wait_singleton(&rest, "the singleton moves", |l, t, _| {
        l != holder && t > term
    });
    let moved = stopped.elapsed();
    let leader_name = net.nodes[leader].name();
    net.note(format!(
        "singleton on {leader_name} leads, term {new_term}, {} ms after the pause (TTL {} ms)",
        moved.as_millis(),
        TTL.as_millis()
    ));
    // The leader expires a session a TTL after its last renewal reached
    // it, and renewals go every TTL/5.
    assert!(
        moved >= TTL * 4 / 5,
        "moved after {moved:?}, before the session could expire"
    );
    if long {
        // A long pause (a stalled VM, swapping): it resumes with its
        // session gone and no connection left.
        for &i in &rest {
            let needle = format!("node down node={holder_name}");
            let down = wait_log(net, i, logs_at_pause[i], &needle);
            net.note(format!("{}: {}", net.nodes[i].short, down.trim()));
        }
    }
    // The pause lasts past the TTL. The singleton may move a little
    // before a whole TTL has passed since the pause (the session's TTL
    // runs from its last renewal, up to TTL/5 before it), so the rest of
    // the pause is held here: a set length, not a hope.
    if let Some(rest) = (TTL + TTL / 10).checked_sub(stopped.elapsed()) {
        std::thread::sleep(rest);
    }
    assert!(stopped.elapsed() > TTL, "paused {:?}", stopped.elapsed());
    let resumed_log = net.nodes[holder].log_text().len();
    assert_eq!(resumed_log, logs_at_pause[holder], "a stopped node logged");
    net.signal(holder, "CONT");
    let resumed = Instant::now();
    let lost = wait_log(
        net,
        holder,
        resumed_log,
        &format!("singleton: lost the lead of term {term}"),
    );
    net.note(format!(
        "{holder_name}'s singleton told {} ms after resuming: {}",
        resumed.elapsed().as_millis(),
        lost.trim()
    ));
    net.wait_singleton(&[0, 1, 2], "one singleton leader everywhere", |l, t, _| {
        l == leader && t == new_term
    });
    net.wait_cluster(holder, "the resumed node back with a session", |v| {
        v.voters == 3 && v.sessions == 3 && v.leader.is_some()
    });
    net.note(format!("{holder_name} agrees and has a session again"));
    let log = net.nodes[holder].log_text();
    let after = log.split_once(lost.as_str()).map_or("", |(_, rest)| rest);
    assert!(
        !after.contains(&format!("singleton: leading, term {term},")),
        "{holder_name}'s singleton led again after it was told it lost:\n{}",
        tail(after, 20)
    );
    (leader, new_term)
}

#[test]
fn a_paused_leader_past_its_ttl_loses_the_lead_and_is_told_when_resumed() {
    let test = "a_paused_leader_past_its_ttl_loses_the_lead_and_is_told_when_resumed";
    let Some((_one, mut net, raft, _)) = started(test, "stop", 2) else {
        return;
    };
    // First the singleton leads on a node that does not lead the
    // coordination group, so only its session is at stake; it resumes
    // while its connections are still up, and the leader's expiry of its
    // session may reach it as soon as its own renewal.
    let holder = (raft + 1) % NODES.len();
    let term = net.three_singletons(holder);
    let (holder, term) = pause_past_the_ttl(&mut net, holder, term, false);
    // Then the singleton's new node, paused until the others gave up on
    // its connections (the coordination leader's node too, if it is).
    pause_past_the_ttl(&mut net, holder, term, true);
    net.check_elections();
}

#[test]
fn killing_the_coordination_leader_elects_another_and_the_cluster_serves_again() {
    let test = "killing_the_coordination_leader_elects_another_and_the_cluster_serves_again";
    let Some((_one, mut net, victim, raft_term)) = started(test, "kill", 3) else {
        return;
    };
    // The singleton leads on the same node.
    let term = net.three_singletons(victim);
    let rest = others(victim);
    let victim_name = net.nodes[victim].name();
    net.kill(victim);
    let killed = Instant::now();
    let view = net.wait("a new coordination leader on both survivors", |net| {
        let views = rest
            .iter()
            .map(|&i| net.cluster(i))
            .collect::<Result<Vec<_>, _>>()?;
        let new = |v: &ClusterView| {
            v.leader.as_ref().is_some_and(|l| *l != victim_name) && v.term > raft_term
        };
        if views.iter().all(new) && views[0].leader == views[1].leader {
            Ok(views[0].clone())
        } else {
            Err(format!("{views:#?}"))
        }
    });
    net.note(format!(
        "leader {} term {} on both survivors, {} ms after the kill",
        view.leader.clone().unwrap_or_default(),
        view.term,
        killed.elapsed().as_millis()
    ));
    let (leader, new_term) = net.wait_singleton(&rest, "the singleton moves", |l, t, _| {
        l != victim && t > term
    });
    net.note(format!(
        "singleton on {} leads, term {new_term}, {} ms after the kill",
        net.nodes[leader].name(),
        killed.elapsed().as_millis()
    ));
    // The cluster serves: a cluster name registered on one survivor is
    // seen on both, and a locked increment completes.
    let store = spawn_store(&mut net, rest[1], &rest, "both survivors");
    let log_from = net.nodes[rest[0]].log_text().len();
    let (ok, text) = net.cli(rest[0], &["spawn", "singleton", "incr", "3"]);
    assert!(ok, "{text}");
    let done = wait_log(&mut net, rest[0], log_from, "incr: 3 done");
    net.note(format!(
        "survivors serve: {store} registered; {}",
        done.trim()
    ));
    assert!(done.contains("the counter was 3"), "{done}");
    let view = net.cluster(rest[0]).expect("molt cluster on a survivor");
    net.note(format!("survivor's view: {view:?}"));
    assert_eq!(view.sessions, 2, "{view:?}");
    net.check_elections();
}
