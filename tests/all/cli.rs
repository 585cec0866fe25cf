//! What a new user meets at the command line: a closed output pipe, a send
//! to a name nobody holds, a cookie file others can read.

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use molt_abi::codec;
use molt_tests::{TempDir, address_of, dist_node_with, molt_bin};

/// The cookie these tests' nodes share.
const SECRET: &str = "cli-user-cookie";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn molt_ps_into_a_closed_pipe_exits_quietly() {
    let (a, da) = dist_node_with("ps-pipe", SECRET.as_bytes(), |_| {}).await;
    // Enough processes that `ps` writes well past a pipe's buffer.
    let mut me = a.mailbox().unwrap();
    for start in 0..1_500u64 {
        me.spawn("counter", codec::encode(&start), false, false)
            .unwrap();
    }
    let target = address_of(&da);
    let status = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(molt_bin())
            .args(["ps", "--node", &target])
            .env("MOLT_COOKIE", SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running molt ps");
        // `| head -1`: read the header, then close the pipe.
        let mut first = String::new();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut first).unwrap();
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        (
            first,
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap();
    let (first, status, stderr) = status;
    assert!(first.starts_with("pid"), "{first}");
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn molt_send_to_a_name_nobody_registered_says_so() {
    let (_a, da) = dist_node_with("send-nobody", SECRET.as_bytes(), |_| {}).await;
    let target = address_of(&da);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(molt_bin())
            .args(["send", "--node", &target, "nobody", "hello"])
            .env("MOLT_COOKIE", SECRET)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no process is registered as `nobody`"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_explains_a_cookie_file_others_can_read() {
    let dir = TempDir::new("cookie");
    let file = dir.path().join("cookie");
    std::fs::write(&file, "0123456789abcdef0123456789abcdef").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file = file.to_str().unwrap().to_string();
    let node = "x@127.0.0.1:9";
    for command in [
        vec!["ping", "--node", node],
        vec!["ps", "--node", node],
        vec!["nodes", "--node", node],
        vec!["modules", "--node", node],
        vec!["send", "--node", node, "n", "t"],
    ] {
        let out = Command::new(molt_bin())
            .args(&command)
            .args(["--cookie-file", &file])
            .env_remove("MOLT_COOKIE")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command:?}: {stderr}");
        assert!(
            stderr.contains("accessible by others (mode 644)") && stderr.contains("chmod 600"),
            "{command:?}: {stderr}"
        );
    }
}

/// `molt bench --perf-control FIFO` tells perf (here a reader standing in
/// for it) to profile each timed section and nothing else: one `enable`
/// and one `disable` per run, in turn, and the figure is still printed.
#[test]
fn bench_perf_control_brackets_each_timed_run() {
    let dir = TempDir::new("perf-control");
    let fifo = dir.path().join("ctl");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&fifo).expect("open the FIFO to read");
            std::io::BufReader::new(file)
                .lines()
                .map(|line| line.expect("a line"))
                .collect::<Vec<String>>()
        })
    };
    let guest = molt_tests::guests_dir().join("bench_guest.wasm");
    let out = Command::new(molt_bin())
        .args([
            "bench", "--only", "pingpong", "--runs", "2", "--rounds", "2000",
        ])
        .arg("--guest")
        .arg(&guest)
        .arg("--perf-control")
        .arg(&fifo)
        .output()
        .expect("run molt bench");
    // Should the bench have never opened the FIFO, this open lets the
    // reader's go through (and read nothing) instead of waiting forever;
    // with the reader gone it fails, which is fine.
    {
        use std::os::unix::fs::OpenOptionsExt;
        const O_NONBLOCK: i32 = 0o4000; // Linux
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(O_NONBLOCK)
            .open(&fifo);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("local ping-pong"), "{stdout}");
    let commands = reader.join().expect("the reader");
    assert_eq!(commands, ["enable", "disable", "enable", "disable"]);
}
