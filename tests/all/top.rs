//! `molt top`: its screen drawn from a node's real figures into a test
//! terminal, and the command itself in a real terminal (tmux).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use molt_abi::{Ref, codec};
use molt_host::Control;
use molt_host::top::ratatui::Terminal;
use molt_host::top::ratatui::backend::TestBackend;
use molt_host::top::ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use molt_host::top::{Sort, Top};
use molt_tests::{ChildNode, Event, Puppet, TempDir, node};

const WIDTH: u16 = 120;
const HEIGHT: u16 = 30;

/// `top` drawn on a 120×30 test terminal, line by line.
fn screen(top: &Top) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(WIDTH, HEIGHT)).unwrap();
    terminal.draw(|frame| top.draw(frame)).unwrap();
    terminal
        .backend()
        .buffer()
        .content
        .chunks(usize::from(WIDTH))
        .map(|line| line.iter().map(|cell| cell.symbol()).collect())
        .collect()
}

/// The process rows of a screen: the lines that start with a pid.
fn rows(screen: &[String]) -> Vec<&str> {
    screen
        .iter()
        .map(|l| l.trim_start())
        .filter(|l| l.starts_with('<'))
        .collect()
}

/// A row's cells from the right, where no cell has a space but memory
/// ("1.5 MiB"): in/s, cpu ms, msgs out, msgs in, memory unit, memory,
/// mailbox.
fn from_right(row: &str) -> Vec<&str> {
    row.split_whitespace().rev().collect()
}

fn mailbox(row: &str) -> u64 {
    from_right(row)[6].parse().expect("a mailbox count")
}

fn memory_bytes(row: &str) -> f64 {
    let cells = from_right(row);
    let n: f64 = cells[5].parse().expect("a memory figure");
    let unit = match cells[4] {
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("memory unit {other} in {row}"),
    };
    n * unit
}

fn pid_of(row: &str) -> &str {
    row.split_whitespace().next().unwrap()
}

fn footer(screen: &[String]) -> String {
    screen
        .iter()
        .find(|l| l.starts_with("sort: "))
        .cloned()
        .unwrap_or_else(|| panic!("a footer in\n{}", screen.join("\n")))
}

fn press(top: &mut Top, code: KeyCode) -> bool {
    top.key(KeyEvent::from(code))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_draws_the_node_and_its_processes_sorted_by_the_key_pressed() {
    let node = node();
    let control = Control::local(node.clone());
    let name = node.config().name.clone();
    let mut quiet = Puppet::spawn(&node).await;
    // 40 messages wait in busy's mailbox.
    let busy = Puppet::busy(&node, 40).await;
    let _other = Puppet::spawn(&node).await;

    let mut top = Top::new(&name);
    let before = Instant::now();
    top.update(
        control.node_report(&name).await.unwrap(),
        control.processes(&name).await.unwrap(),
        before,
    );
    assert!(!press(&mut top, KeyCode::Char('b')));
    assert_eq!(top.sort(), Sort::Mailbox);
    let shown = screen(&top);
    let text = shown.join("\n");
    assert!(shown[0].contains(&name), "the node's name first:\n{text}");
    assert!(text.contains("module@version"), "{text}");
    assert!(footer(&shown).starts_with("sort: mailbox"), "{text}");
    let listed = rows(&shown);
    assert_eq!(listed.len(), node.processes().len(), "{text}");
    assert_eq!(pid_of(listed[0]), busy.pid.to_string(), "{text}");
    assert_eq!(mailbox(listed[0]), 40, "{text}");
    assert!(listed[0].contains("puppet@"), "{text}");
    assert!(listed.windows(2).all(|w| mailbox(w[0]) >= mailbox(w[1])));

    // quiet takes 10 messages, the last one large enough to grow its
    // memory past every other process's.
    for n in 0..9u32 {
        quiet
            .ctl
            .send(quiet.pid, 77, Ref::NONE, codec::encode(&n))
            .unwrap();
    }
    let large = vec![7u8; 900 << 10];
    quiet
        .ctl
        .send(quiet.pid, 77, Ref::NONE, codec::encode(&large))
        .unwrap();
    for _ in 0..10 {
        assert!(matches!(quiet.event().await, Event::Got { .. }));
    }
    let processes = control.processes(&name).await.unwrap();
    // Two seconds later, as far as the rates can tell.
    top.update(
        control.node_report(&name).await.unwrap(),
        processes,
        before + Duration::from_secs(2),
    );

    // By memory: quiet first, then in non-increasing order.
    assert!(!press(&mut top, KeyCode::Char('m')));
    let shown = screen(&top);
    let text = shown.join("\n");
    assert!(footer(&shown).starts_with("sort: memory"), "{text}");
    let listed = rows(&shown);
    assert_eq!(pid_of(listed[0]), quiet.pid.to_string(), "{text}");
    assert!(
        listed
            .windows(2)
            .all(|w| memory_bytes(w[0]) >= memory_bytes(w[1])),
        "{text}"
    );

    // By rate: quiet took 10 messages in those two seconds.
    assert!(!press(&mut top, KeyCode::Char('r')));
    let shown = screen(&top);
    let text = shown.join("\n");
    assert!(footer(&shown).starts_with("sort: msgs in/s"), "{text}");
    let listed = rows(&shown);
    let rate = |row: &str| -> f64 { from_right(row)[0].parse().unwrap() };
    let quiet_row = listed
        .iter()
        .find(|r| pid_of(r) == quiet.pid.to_string())
        .expect("quiet is listed");
    assert_eq!(from_right(quiet_row)[0], "5.0", "{text}");
    assert!(
        listed.windows(2).all(|w| rate(w[0]) >= rate(w[1])),
        "{text}"
    );
    assert!(text.contains("messages/s  local "), "{text}");

    // By pid: oldest first.
    assert!(!press(&mut top, KeyCode::Char('p')));
    let shown = screen(&top);
    let pids: Vec<&str> = rows(&shown).into_iter().map(pid_of).collect();
    let mut by_pid = node.processes();
    by_pid.sort_by_key(|p| p.pid);
    let expected: Vec<String> = by_pid.iter().map(|p| p.pid.to_string()).collect();
    assert_eq!(pids, expected);

    // A node that stops answering: its last figures stay, the footer
    // says why.
    top.failed("no reply from b@127.0.0.1 within 10s");
    let shown = screen(&top);
    let text = shown.join("\n");
    assert!(
        text.contains("not updated: no reply from b@127.0.0.1"),
        "{text}"
    );
    assert!(!rows(&shown).is_empty(), "{text}");

    // The keys that quit, and Ctrl+other keys that do nothing.
    assert!(press(&mut top, KeyCode::Char('q')));
    assert!(press(&mut top, KeyCode::Esc));
    assert!(top.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)));
    assert!(!top.key(KeyEvent::new(KeyCode::Char('m'), KeyModifiers::CONTROL)));
    assert_eq!(top.sort(), Sort::Pid);
    assert!(!press(&mut top, KeyCode::Char('c')));
    assert_eq!(top.sort(), Sort::Cpu);
}

/// A tmux server of its own (its socket in a temporary directory), so the
/// test neither sees nor disturbs anyone else's sessions; its session is
/// killed when dropped.
struct Tmux {
    socket: PathBuf,
    session: String,
    // Dropped after the server is gone.
    _dir: TempDir,
}

impl Tmux {
    /// Run `command` (a shell command) in a detached 120×30 session.
    fn start(command: &str, env: &str) -> Tmux {
        let dir = TempDir::new("top-tmux");
        let tmux = Tmux {
            socket: dir.path().join("tmux.sock"),
            session: format!("molt-top-{}", std::process::id()),
            _dir: dir,
        };
        let width = WIDTH.to_string();
        let height = HEIGHT.to_string();
        let (ok, text) = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            &tmux.session,
            "-x",
            &width,
            "-y",
            &height,
            "-e",
            env,
            command,
        ]);
        assert!(ok, "tmux new-session: {text}");
        tmux
    }

    /// Run a tmux command on this server: whether it succeeded, and its
    /// output.
    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running tmux: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", &self.session]).1
    }

    fn alive(&self) -> bool {
        self.run(&["has-session", "-t", &self.session]).0
    }

    /// Wait up to `within` for the session to end.
    async fn ends_within(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.alive() {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-session", "-t", &self.session]);
        let _ = self.run(&["kill-server"]);
    }
}

/// tmux is needed, not optional: CI installs it.
fn require_tmux() {
    let found = Command::new("tmux").arg("-V").output();
    assert!(
        found.is_ok_and(|out| out.status.success()),
        "this test runs `molt top` in tmux, and there is no tmux here: \
         install it (apt-get install tmux; .ci/run does)"
    );
}

/// A shell word.
fn quoted(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// The shell command that runs `molt top` on `node` and leaves its exit
/// status and its stderr in `dir`.
fn top_command(node: &str, iterations: u32, dir: &Path) -> String {
    format!(
        "{} top --node {node} --iterations {iterations} 2>{}; echo $? >{}",
        quoted(molt_tests::molt_bin()),
        quoted(&dir.join("stderr")),
        quoted(&dir.join("status")),
    )
}

/// What `molt top` said when it ended: its status and its stderr.
/// `molt top` (run by `top_command` into `dir`) exited with status 0.
fn assert_exited_ok(dir: &Path) {
    let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
    assert_eq!(status.trim(), "0", "{}", ending(dir));
}

fn ending(dir: &Path) -> String {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    format!(
        "status {}, stderr: {}",
        read("status").trim(),
        read("stderr")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn molt_top_runs_in_a_terminal_and_quits_on_q() {
    require_tmux();
    const COOKIE: &str = "top-tmux-cookie-0123456789abcdef";
    let args = ["--name", "topnode", "--http", "off"].map(std::ffi::OsStr::new);
    let (_child, addr) = ChildNode::start(&args, COOKIE).await;
    let node = format!("topnode@{addr}");
    let cookie = format!("MOLT_COOKIE={COOKIE}");
    let out = TempDir::new("top-out");

    // Many refreshes: if q did nothing, the view would outlast the wait.
    let tmux = Tmux::start(&top_command(&node, 60, out.path()), &cookie);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown = tmux.screen();
        // The header and the table's frame come at once; the node's
        // figures ("processes N") with the first answer.
        if shown.contains("topnode@127.0.0.1")
            && shown.contains("module@version")
            && shown.contains("sort: ")
            && shown.contains("processes ")
        {
            break;
        }
        assert!(
            tmux.alive(),
            "molt top ended early: {}\n{shown}",
            ending(out.path())
        );
        assert!(
            Instant::now() < deadline,
            "no header, table and figures within 20 s:\n{shown}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, text) = tmux.run(&["send-keys", "-t", &tmux.session, "q"]);
    assert!(ok, "tmux send-keys: {text}");
    assert!(
        tmux.ends_within(Duration::from_secs(10)).await,
        "molt top still runs 10 s after q:\n{}",
        tmux.screen()
    );
    assert_exited_ok(out.path());
    drop(tmux);

    // Without keys, --iterations ends it.
    let out = TempDir::new("top-out");
    let tmux = Tmux::start(&top_command(&node, 2, out.path()), &cookie);
    assert!(
        tmux.ends_within(Duration::from_secs(20)).await,
        "molt top --iterations 2 still runs after 20 s:\n{}",
        tmux.screen()
    );
    assert_exited_ok(out.path());
}
