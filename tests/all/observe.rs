//! The HTTP endpoint a node serves: `/alive`, `/ready`, `/metrics`
//! (OpenMetrics, parsed), the JSON API, and actions that need the admin
//! token.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use molt_abi::{Ref, codec};
use molt_host::Control;
use molt_host::http::{
    HttpConfig, HttpServer, NodeReport, ProcessDetailView, ProcessList, TreeNode,
};
use molt_tests::{Cmd, Outcome, Puppet, WAIT, node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request (the connection closed after it): the status and
/// the body.
async fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    http_with(addr, method, path, token, &[]).await
}

/// [`http`] with a request body.
async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the HTTP endpoint");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let answer = String::from_utf8(answer).expect("a UTF-8 answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    // The body may come chunked.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        loop {
            let (size, after) = rest.split_once("\r\n").expect("a chunk size");
            let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
            if size == 0 {
                break;
            }
            out.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        out
    } else {
        body.to_string()
    };
    (status, body)
}

async fn json<T: serde::de::DeserializeOwned>(addr: SocketAddr, path: &str) -> T {
    let (status, body) = http(addr, "GET", path, None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// An OpenMetrics text exposition, checked line by line: every sample
/// belongs to a family declared before it with `# TYPE` (a counter's
/// samples end in `_total`), every value parses, and it ends with `# EOF`.
/// The samples, by name and labels.
fn parse_openmetrics(text: &str) -> BTreeMap<String, f64> {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            let (kind, name) = (words.next().unwrap(), words.next().expect("a family name"));
            assert!(name.starts_with("molt_"), "{name} has the molt_ prefix");
            match kind {
                "TYPE" => {
                    let t = words.next().expect("a type");
                    assert!(
                        ["counter", "gauge", "info", "histogram", "unknown"].contains(&t),
                        "type {t}"
                    );
                    families.insert(name.to_string(), t.to_string());
                }
                "HELP" | "UNIT" => {}
                other => panic!("unknown descriptor {other} in {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample: name and value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("a value in {line}"));
        let name = series.split('{').next().unwrap();
        let family = families
            .iter()
            .filter(|(f, _)| name.starts_with(f.as_str()))
            .max_by_key(|(f, _)| f.len())
            .unwrap_or_else(|| panic!("{name} declared before its samples"));
        if family.1 == "counter" {
            assert_eq!(name, format!("{}_total", family.0), "a counter's sample");
        } else {
            assert_eq!(name, family.0, "a {}'s sample", family.1);
        }
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            assert!(!labels.contains("pid"), "no pid label: {line}");
        }
        samples.insert(series.to_string(), value);
    }
    samples
}

/// Serve `control`'s node read-only on a free loopback port.
async fn serve(control: Control) -> HttpServer {
    HttpServer::start(
        control,
        None,
        HttpConfig::new("127.0.0.1:0".parse().unwrap()),
    )
    .await
    .expect("serve HTTP")
}

async fn metrics(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (status, body) = http(addr, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    parse_openmetrics(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_endpoint_shows_the_node_its_processes_and_metrics_and_guards_actions() {
    let node = node();
    let token = "an-admin-token-of-some-length";
    let mut config = HttpConfig::new("127.0.0.1:0".parse().unwrap());
    config.admin_token = Some(token.to_string());
    let server = HttpServer::start(Control::local(node.clone()), None, config)
        .await
        .expect("serve HTTP");
    let addr = server.local_addr();

    assert_eq!(
        http(addr, "GET", "/alive", None).await,
        (200, "alive\n".into())
    );
    assert_eq!(
        http(addr, "GET", "/ready", None).await,
        (200, "ready\n".into())
    );

    // Three puppets; one keeps 40 messages waiting.
    let quiet = Puppet::spawn(&node).await;
    let busy = Puppet::busy(&node, 40).await;
    let other = Puppet::spawn(&node).await;

    let list: ProcessList = json(addr, "/api/processes?sort=mailbox&limit=2").await;
    assert_eq!(list.total, node.processes().len() as u64);
    assert_eq!(list.processes.len(), 2);
    assert_eq!(list.processes[0].pid, busy.pid.to_string());
    assert_eq!(list.processes[0].mailbox, 40);
    assert_eq!(list.processes[0].module.as_deref(), Some("puppet"));
    assert!(list.processes[1].mailbox <= 40);

    // Search, and a process's detail (with or without the brackets).
    let found: ProcessList = json(addr, "/api/processes?q=puppet&limit=100").await;
    assert_eq!(found.matched, 3);
    let bare = quiet.pid.to_string();
    let bare = bare.trim_start_matches('<').trim_end_matches('>');
    let detail: ProcessDetailView = json(addr, &format!("/api/processes/{bare}")).await;
    let detail = detail.process;
    assert_eq!(
        (detail.pid.as_str(), detail.status.as_str()),
        (quiet.pid.to_string().as_str(), "running")
    );
    let (status, body) = http(addr, "GET", "/api/processes/0.0.999999", None).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no process"), "{body}");

    // The metrics parse, and count what the API lists.
    let before = metrics(addr).await;
    assert_eq!(before["molt_processes"], node.processes().len() as f64);
    let puppets = before
        .iter()
        .find(|(k, _)| k.starts_with("molt_module_processes{") && k.contains("module=\"puppet\""))
        .map(|(_, v)| *v);
    assert_eq!(puppets, Some(3.0));
    assert!(before["molt_mailbox_messages"] >= 40.0);
    assert!(before.contains_key("molt_uptime_seconds"));
    // What freed pool slots hold, as the node reports it.
    let held = before["molt_pool_resident_bytes"];
    assert_eq!(held, node.pool_resident_bytes() as f64);
    let _more = [Puppet::spawn(&node).await, Puppet::spawn(&node).await];
    let after = metrics(addr).await;
    // Each puppet and its controller's mailbox.
    assert_eq!(
        after["molt_spawns_total"] - before["molt_spawns_total"],
        4.0,
        "two puppets and two mailboxes counted"
    );
    assert_eq!(after["molt_spawns_total"], node.stats().spawned as f64);

    // Actions need the token.
    let kill = format!("/api/processes/{bare}/kill");
    let (status, body) = http(addr, "POST", &kill, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = http(addr, "POST", &kill, Some("not-the-token-at-all")).await;
    assert_eq!(status, 403);
    assert!(node.processes().iter().any(|p| p.pid == quiet.pid));
    let (status, body) = http(addr, "POST", &kill, Some(token)).await;
    assert_eq!(status, 200, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while node.processes().iter().any(|p| p.pid == quiet.pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed process is gone"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = http(addr, "GET", &format!("/api/processes/{bare}"), None).await;
    assert_eq!(status, 404);

    // Code actions: a new version loaded, then the old one purged.
    let puppet = std::fs::read(molt_tests::guest_file("puppet")).unwrap();
    let next = molt_tests::with_version(&puppet, "puppet", "9.9.9");
    let load = "/api/modules/puppet/load";
    let (status, _) = http_with(addr, "POST", load, None, &next).await;
    assert_eq!(status, 401);
    let (status, body) = http_with(addr, "POST", load, Some(token), &next).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("loaded puppet 9.9.9"), "{body}");
    let (status, body) = http_with(addr, "POST", load, Some(token), b"not wasm").await;
    assert_eq!(status, 422, "{body}");
    let on_old = node
        .processes()
        .iter()
        .filter(|p| {
            p.module
                .as_ref()
                .is_some_and(|(m, v)| m == "puppet" && v != "9.9.9")
        })
        .count();
    assert!(on_old >= 2, "puppets still on the old version");
    let purge = "/api/modules/puppet/purge";
    let (status, _) = http(addr, "POST", purge, Some("not-the-token-at-all")).await;
    assert_eq!(status, 403);
    let (status, body) = http(addr, "POST", &format!("{purge}?soft=true"), Some(token)).await;
    assert_eq!(
        status, 422,
        "a soft purge refuses while puppets run it: {body}"
    );
    let (status, body) = http(addr, "POST", purge, Some(token)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("{on_old} process(es) killed")),
        "{body}"
    );
    let samples = metrics(addr).await;
    assert_eq!(samples["molt_purges_total"], 1.0);
    assert_eq!(
        samples["molt_exits_by_reason_total{reason=\"purged\"}"],
        on_old as f64
    );
    drop(other);
    server.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "stopped serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_an_admin_token_refuses_every_action() {
    let node = node();
    let server = serve(Control::local(node.clone())).await;
    let p = Puppet::spawn(&node).await;
    let pid = p.pid.to_string();
    let (status, body) = http(
        server.local_addr(),
        "POST",
        &format!(
            "/api/processes/{}/kill",
            pid.trim_start_matches('<').trim_end_matches('>')
        ),
        Some("any-token-whatsoever"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("--http-admin-token-file"), "{body}");
    assert!(node.processes().iter().any(|q| q.pid == p.pid));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_s_endpoint_shows_its_peers_and_another_node_s_processes() {
    use molt_tests::{address_of, control, dist_node};

    let (a, a_dist) = dist_node("obs-a").await;
    let (b, b_dist) = dist_node("obs-b").await;
    a_dist.join(&address_of(&b_dist)).await.expect("a joins b");
    let on_b = Puppet::spawn(&b).await;
    let server = serve(control(&a, &a_dist)).await;
    let addr = server.local_addr();

    // a's peers: b, with traffic both ways. The join returns once the
    // connection is up; b's first frame comes after it, so the view is
    // asked again (bounded) until b has been heard.
    let deadline = tokio::time::Instant::now() + WAIT;
    let (view, peer) = loop {
        let view: NodeReport = json(addr, "/api/node").await;
        let peer = view
            .peers
            .iter()
            .find(|p| p.name == b_dist.name())
            .expect("b is a's peer")
            .clone();
        if peer.last_heard_ms.is_some() || tokio::time::Instant::now() >= deadline {
            break (view, peer);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(view.name, a_dist.name());
    assert!(peer.bytes_out > 0 && peer.bytes_in > 0, "{peer:?}");
    assert_eq!(peer.reconnects, 0, "{peer:?}");
    assert!(peer.last_heard_ms.is_some(), "b was heard: {peer:?}");
    assert!(peer.last_heard_ms <= Some(peer.connected_ms), "{peer:?}");
    let samples = metrics(addr).await;
    let sent = format!("molt_peer_sent_bytes_total{{peer=\"{}\"}}", b_dist.name());
    assert!(
        samples.get(&sent).is_some_and(|v| *v > 0.0),
        "{sent} in {samples:?}"
    );
    assert_eq!(samples["molt_peers"], 1.0);

    // b's processes, viewed through a, as b lists them.
    let list: ProcessList = json(
        addr,
        &format!("/api/processes?node={}&limit=1000", b_dist.name()),
    )
    .await;
    assert_eq!(list.node, b_dist.name());
    let mut listed: Vec<String> = list.processes.iter().map(|p| p.pid.clone()).collect();
    let mut on_b_now: Vec<String> = b.processes().iter().map(|p| p.pid.to_string()).collect();
    listed.sort();
    on_b_now.sort();
    assert_eq!(listed, on_b_now);
    assert!(listed.contains(&on_b.pid.to_string()));
    let nodes: Vec<String> = json(addr, "/api/nodes").await;
    assert_eq!(
        nodes,
        [a_dist.name().to_string(), b_dist.name().to_string()]
    );
    // b's figures and a process's detail, through a.
    let b_view: NodeReport = json(addr, &format!("/api/node?node={}", b_dist.name())).await;
    assert_eq!(b_view.name, b_dist.name());
    assert_eq!(b_view.processes, b.stats().alive);
    let bare = on_b.pid.to_string();
    let bare = bare.trim_start_matches('<').trim_end_matches('>');
    let detail: ProcessDetailView = json(
        addr,
        &format!("/api/processes/{bare}?node={}", b_dist.name()),
    )
    .await;
    assert_eq!(detail.process.pid, on_b.pid.to_string());
    assert!(detail.answered, "the process on b answered: {detail:?}");
    // A node that is not there: a clear error, not a hang.
    let (status, body) = http(addr, "GET", "/api/processes?node=nobody@127.0.0.1", None).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("nobody@127.0.0.1"), "{body}");
    // b goes and comes back: a counts the reconnect.
    drop(on_b);
    b_dist.stop().await;
    drop(b);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !a_dist.nodes().is_empty() {
        assert!(std::time::Instant::now() < deadline, "a sees b gone");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_b, b_dist) = dist_node("obs-b").await;
    a_dist
        .join(&address_of(&b_dist))
        .await
        .expect("a joins b again");
    let view: NodeReport = json(addr, "/api/node").await;
    let peer = view
        .peers
        .iter()
        .find(|p| p.name == b_dist.name())
        .expect("b is a's peer again");
    assert_eq!(peer.reconnects, 1, "{peer:?}");
    let samples = metrics(addr).await;
    let reconnects = format!("molt_peer_reconnects_total{{peer=\"{}\"}}", b_dist.name());
    assert_eq!(samples.get(&reconnects), Some(&1.0), "{samples:?}");
    server.stop().await;
    a_dist.stop().await;
    b_dist.stop().await;
}

/// Run the `molt` CLI with the test cookie: its stdout, which must say it
/// succeeded.
async fn molt_cli(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(molt_tests::molt_bin())
            .args(&args)
            .env(
                "MOLT_COOKIE",
                String::from_utf8_lossy(molt_tests::COOKIE).as_ref(),
            )
            .output()
            .expect("running molt");
        assert!(
            out.status.success(),
            "molt {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_s_json_is_what_the_http_api_answers_for_the_same_node() {
    use molt_host::http::{ModulesView, TableView};
    use molt_tests::{address_of, control, dist_node};

    let (a, a_dist) = dist_node("json-a").await;
    let (_b, b_dist) = dist_node("json-b").await;
    a_dist.join(&address_of(&b_dist)).await.expect("a joins b");
    let _puppets = [Puppet::spawn(&a).await, Puppet::spawn(&a).await];
    let server = serve(control(&a, &a_dist)).await;
    let addr = server.local_addr();
    let target = address_of(&a_dist);

    let cli: ProcessList =
        serde_json::from_str(&molt_cli(&["ps", "--node", &target, "--format", "json"]).await)
            .expect("ps --format json is a process list");
    let api: ProcessList = json(addr, "/api/processes?limit=10000").await;
    assert_eq!(cli, api);
    assert!(
        cli.processes
            .iter()
            .filter(|p| p.module.as_deref() == Some("puppet"))
            .count()
            == 2
    );

    let cli: ModulesView =
        serde_json::from_str(&molt_cli(&["modules", "--node", &target, "--format", "json"]).await)
            .expect("modules --format json");
    let api: ModulesView = json(addr, "/api/modules").await;
    assert_eq!(cli, api);
    assert!(cli.modules.iter().any(|m| m.name == "puppet"));

    // A table, listed by both.
    use molt_abi::table::{Kind, Reply, Request, Spec};
    let created = a
        .table(Request::Create(Spec {
            name: "carts".into(),
            kind: Kind::OrderedSet,
            indexes: vec!["owner".into()],
            replicas: Vec::new(),
        }))
        .await;
    assert_eq!(created, Reply::Done);
    let cli: Vec<TableView> =
        serde_json::from_str(&molt_cli(&["tables", "--node", &target, "--format", "json"]).await)
            .expect("tables --format json");
    let api: Vec<TableView> = json(addr, "/api/tables").await;
    assert_eq!(cli, api);
    assert_eq!(cli.len(), 1);
    assert_eq!(
        (cli[0].name.as_str(), cli[0].kind.as_str(), cli[0].records),
        ("carts", "ordered_set", 0)
    );
    assert_eq!(cli[0].indexes, ["owner"]);

    let cli: Vec<String> =
        serde_json::from_str(&molt_cli(&["nodes", "--node", &target, "--format", "json"]).await)
            .expect("nodes --format json");
    let api: Vec<String> = json(addr, "/api/nodes").await;
    assert_eq!(cli, api);
    assert_eq!(cli, [a_dist.name().to_string(), b_dist.name().to_string()]);
    server.stop().await;
    a_dist.stop().await;
    b_dist.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn molt_node_serves_http_where_it_says_and_logs_json_when_asked() {
    use std::io::BufRead;

    let data = std::env::temp_dir().join(format!("molt-test-logjson-{}", std::process::id()));
    let mut child = std::process::Command::new(molt_tests::molt_bin())
        .args([
            "node",
            "--name",
            "logj",
            "--listen",
            "127.0.0.1:0",
            "--no-coordination",
            "--http",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .env("MOLT_COOKIE", "logj-cookie")
        .env("MOLT_DATA_DIR", &data)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting molt node");
    let stdout = child.stdout.take().expect("piped stdout");
    // Lines until the node says where it serves HTTP.
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.expect("a line");
            let done = line.starts_with("http on ");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    });
    let lines = tokio::time::timeout(Duration::from_secs(30), lines)
        .await
        .expect("the node starts")
        .unwrap();
    // It serves where it says.
    let served: Option<SocketAddr> = lines
        .last()
        .and_then(|l| l.strip_prefix("http on http://"))
        .and_then(|a| a.trim_end_matches('/').parse().ok());
    let alive = match served {
        Some(addr) => Some(http(addr, "GET", "/alive", None).await),
        None => None,
    };
    let _ = child.kill().map(|()| child.wait());
    let _ = std::fs::remove_dir_all(&data);
    assert_eq!(alive, Some((200, "alive\n".to_string())), "{lines:?}");

    // Every log line is a JSON object with a level and a message; the
    // distribution's start names the node.
    let logs: Vec<serde_json::Value> = lines
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!logs.is_empty(), "{lines:?}");
    for log in &logs {
        assert!(
            log["level"].is_string() && log["fields"]["message"].is_string(),
            "{log}"
        );
    }
    assert!(
        logs.iter().any(|l| l["fields"]["node"] == "logj@127.0.0.1"),
        "{logs:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("node logj@127.0.0.1 listening on "))
    );
}

/// Read a server-sent events stream until `want` accepts an event's data
/// (an event named `name`), within 10 s.
async fn wait_for_event<T: serde::de::DeserializeOwned>(
    stream: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    name: &str,
    mut want: impl FnMut(&T) -> bool,
) -> T {
    use tokio::io::AsyncBufReadExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut event = String::new();
    loop {
        let mut line = String::new();
        let read = tokio::time::timeout_at(deadline, stream.read_line(&mut line))
            .await
            .unwrap_or_else(|_| panic!("no `{name}` event as wanted within 10 s"))
            .expect("read the event stream");
        assert!(read > 0, "the event stream ended");
        // Chunk sizes of the chunked body come as lines of their own.
        let line = line.trim_end();
        if let Some(e) = line.strip_prefix("event: ") {
            event = e.to_string();
        } else if let Some(data) = line.strip_prefix("data: ")
            && event == name
        {
            let value: T = serde_json::from_str(data).expect("event data parses");
            if want(&value) {
                return value;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_s_detail_counters_tree_and_live_events_show_what_it_did() {
    let node = node();
    let server = serve(Control::local(node.clone())).await;
    let addr = server.local_addr();

    // Live events: the stream's figures follow the node.
    let mut events = tokio::net::TcpStream::connect(addr).await.unwrap();
    events
        .write_all(format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut events = tokio::io::BufReader::new(events);
    let first: NodeReport = wait_for_event(&mut events, "node", |_| true).await;

    // A parent that traps exits spawns a child linked and monitored; the
    // child is told to report to a mailbox of the test's.
    let mut parent = Puppet::spawn(&node).await;
    assert_eq!(parent.cmd(Cmd::TrapExit(true)).await, Outcome::Bool(false));
    let side = node.mailbox().unwrap();
    let spawned = parent
        .cmd(Cmd::Spawn {
            module: "puppet".into(),
            args: codec::encode(&molt_tests::PuppetArgs {
                controller: side.pid(),
            }),
            link: true,
            monitor: true,
        })
        .await;
    let Outcome::PidRef(child, _) = spawned else {
        panic!("spawned: {spawned:?}");
    };
    // The parent sends it 5 messages.
    assert_eq!(
        parent
            .cmd(Cmd::SendSeq {
                to: child,
                tag: 77,
                count: 5
            })
            .await,
        Outcome::Ok
    );
    let live: NodeReport = wait_for_event(&mut events, "node", |r: &NodeReport| {
        r.processes > first.processes
    })
    .await;
    assert!(live.spawned >= first.spawned + 3, "{live:?}");

    let bare = |pid: molt_abi::Pid| {
        pid.to_string()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string()
    };
    let p: ProcessDetailView = json(addr, &format!("/api/processes/{}", bare(parent.pid))).await;
    assert!(p.answered && p.trap_exit, "{p:?}");
    assert_eq!(p.links, [child.to_string()]);
    assert_eq!(
        p.monitors.iter().map(|m| m.pid.clone()).collect::<Vec<_>>(),
        [child.to_string()]
    );
    // Five to the child, and its answers to its controller.
    assert!(p.process.messages_out >= 5, "{p:?}");
    assert!(p.process.messages_in >= 3, "the commands it took: {p:?}");

    // The child took the 5 messages; it names its parent.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let c = loop {
        let c: ProcessDetailView =
            json(addr, &format!("/api/processes/{}?messages=3", bare(child))).await;
        if c.process.messages_in >= 5 || std::time::Instant::now() > deadline {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(c.process.messages_in, 5, "{c:?}");
    assert_eq!(c.parent, Some(parent.pid.to_string()));
    assert_eq!(c.links, [parent.pid.to_string()]);
    assert_eq!(c.monitored_by, [parent.pid.to_string()]);

    // The tree: the parent with the child under it.
    let trees: Vec<TreeNode> = json(addr, "/api/tree").await;
    let root = trees
        .iter()
        .find(|t| t.pid == parent.pid.to_string())
        .unwrap_or_else(|| panic!("the parent is a root: {trees:?}"));
    assert_eq!(root.children.len(), 1);
    assert_eq!(root.children[0].pid, child.to_string());
    assert_eq!(root.children[0].module.as_deref(), Some("puppet"));

    // A busy mailbox, described on request.
    let mut busy = Puppet::spawn(&node).await;
    assert_eq!(busy.cmd(Cmd::OnlyCommands(true)).await, Outcome::Ok);
    for text in ["first", "second", "third"] {
        busy.ctl
            .send(busy.pid, 77, Ref::NONE, text.as_bytes().to_vec())
            .unwrap();
    }
    let b: ProcessDetailView = json(
        addr,
        &format!("/api/processes/{}?messages=2", bare(busy.pid)),
    )
    .await;
    assert_eq!(b.process.mailbox, 3);
    let previews: Vec<(u32, &str)> = b
        .messages
        .iter()
        .map(|m| (m.tag, m.preview.as_str()))
        .collect();
    assert_eq!(previews, [(77, "first"), (77, "second")]);

    // Killing the child: one exit of kind `killed`, in the node's figures,
    // the metrics and the stream.
    let before: NodeReport = json(addr, "/api/node").await;
    assert_eq!(
        parent
            .cmd(Cmd::Exit {
                pid: child,
                reason: "kill".into()
            })
            .await,
        Outcome::Ok
    );
    let after: NodeReport = wait_for_event(&mut events, "node", |r: &NodeReport| {
        r.exits["killed"] > before.exits["killed"]
    })
    .await;
    assert_eq!(after.exits["killed"], before.exits["killed"] + 1);
    assert!(after.messages_local >= before.messages_local, "{after:?}");
    let samples = metrics(addr).await;
    assert_eq!(
        samples["molt_exits_by_reason_total{reason=\"killed\"}"],
        after.exits["killed"] as f64
    );
    assert!(samples["molt_messages_sent_local_total"] >= after.messages_local as f64);
    let trees: Vec<TreeNode> = json(addr, "/api/tree").await;
    assert!(
        !trees.iter().any(|t| t.pid == parent.pid.to_string()),
        "no children left: {trees:?}"
    );
    drop(events);
    server.stop().await;
}

/// With `perf_map`, the node writes `/tmp/perf-<pid>.map` naming the guest
/// functions it compiled, so that `perf report` shows them by name (the
/// guest SDK's `molt_init` among them); without it, no such file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_perf_map_names_guest_functions() {
    let map = std::path::PathBuf::from(format!("/tmp/perf-{}.map", std::process::id()));
    let _ = std::fs::remove_file(&map);
    let plain = node();
    let mut me = plain.mailbox().unwrap();
    me.spawn("counter", codec::encode(&0u64), false, false)
        .unwrap();
    assert!(!map.exists(), "{} written without perf_map", map.display());

    let profiled = molt_tests::start_node(molt_host::NodeConfig {
        perf_map: true,
        ..molt_tests::test_config()
    });
    let mut me = profiled.mailbox().unwrap();
    me.spawn("counter", codec::encode(&0u64), false, false)
        .unwrap();
    let text = std::fs::read_to_string(&map).expect("the perf map is written");
    let _ = std::fs::remove_file(&map);
    assert!(
        text.lines().any(|l| l.ends_with(" molt_init")),
        "no line names molt_init in {} lines",
        text.lines().count()
    );
}
