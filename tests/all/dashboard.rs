//! The dashboard in a real browser: headless chromium driven through
//! chromedriver (both from Debian's packages, which `.ci/run` installs).
//! It lists a node's processes, sorts them by mailbox, opens one, follows
//! a live change, and shows an action refused without the admin token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use molt_host::Control;
use molt_host::http::{HttpConfig, HttpServer};
use molt_tests::{Puppet, node};
use serde_json::{Value, json};

/// chromedriver, stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_program(names: &[&str]) -> PathBuf {
    for name in names {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
            let path = PathBuf::from(dir).join(name);
            if path.exists() {
                return path;
            }
        }
    }
    panic!(
        "none of {names:?} is installed: the dashboard test needs Debian's chromium and \
         chromium-driver (`apt-get install -y chromium chromium-driver`; .ci/run installs them)"
    );
}

/// Start chromedriver on a free port and wait until it listens.
async fn driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(find_program(&["chromedriver"]))
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver { child, port };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not listen within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    driver
}

async fn browser(driver: &Driver) -> Client {
    let chromium = find_program(&["chromium", "chromium-browser"]);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,800"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a chromium session through chromedriver")
}

/// Evaluate `script` in the page every 100 ms until it returns something
/// truthy (within 15 s); that value.
async fn until(c: &Client, what: &str, script: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut last: Value;
    loop {
        match c.execute(script, vec![]).await {
            Ok(v) if !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") => {
                return v;
            }
            Ok(v) => last = v,
            Err(e) => last = json!(e.to_string()),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 15 s (last: {last})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Go to the dashboard's page `route` and wait until it has loaded
/// (`page`, as the page marks itself).
async fn open(c: &Client, base: &str, route: &str, page: &str) {
    c.goto(&format!("{base}#/{route}")).await.unwrap();
    until(
        c,
        &format!("the {page} page loaded"),
        &format!("return document.body.dataset.loaded === '{page}'"),
    )
    .await;
}

/// Click the action button `button` (no admin token is given) and wait
/// for `result` to say it was refused with 401.
async fn refused_without_token(c: &Client, button: &str, result: &str) {
    c.find(Locator::Css(button))
        .await
        .unwrap_or_else(|e| panic!("{button}: {e}"))
        .click()
        .await
        .unwrap();
    let refused = until(
        c,
        &format!("{button} refused"),
        &format!(
            "const e = document.querySelector('{result}'); \
             return e && e.textContent.startsWith('refused') && e.textContent"
        ),
    )
    .await;
    assert!(
        refused.as_str().is_some_and(|t| t.contains("401")),
        "{refused}"
    );
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_lists_sorts_opens_follows_and_refuses_in_a_real_browser() {
    let node = node();
    let mut config = HttpConfig::new("127.0.0.1:0".parse().unwrap());
    config.admin_token = Some("dashboard-test-token-0123".into());
    let server = HttpServer::start(Control::local(node.clone()), None, config)
        .await
        .expect("serve HTTP");
    let addr: SocketAddr = server.local_addr();

    // Three puppets; one keeps 40 messages waiting.
    let quiet = Puppet::spawn(&node).await;
    let busy = Puppet::busy(&node, 40).await;
    let _other = Puppet::spawn(&node).await;

    let driver = driver().await;
    let c = browser(&driver).await;
    let base = format!("http://{addr}/");

    // Home: the node's figures.
    open(&c, &base, "", "home").await;
    let alive = node.stats().alive;
    until(
        &c,
        "the process count",
        &format!(
            "return document.querySelector('#stat-processes').textContent.trim() === '{alive}'"
        ),
    )
    .await;

    // Processes: every puppet listed; sorted by mailbox, the busy one first.
    open(&c, &base, "processes", "processes").await;
    for p in [quiet.pid, busy.pid] {
        until(
            &c,
            "a puppet's row",
            &format!("return document.querySelector('tr[data-pid=\"{p}\"]') !== null"),
        )
        .await;
    }
    c.find(Locator::Css("#sort-mailbox"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let first = until(
        &c,
        "the busy puppet first",
        &format!(
            "const r = document.querySelector('#process-table tbody tr'); \
             return r && r.dataset.pid === '{}' && r.querySelector('.mailbox').textContent.trim()",
            busy.pid
        ),
    )
    .await;
    assert_eq!(first, json!("40"));

    // Its detail, from a click on its row.
    c.find(Locator::Css(&format!("tr[data-pid=\"{}\"] a", busy.pid)))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "the detail",
        "return document.body.dataset.loaded === 'process'",
    )
    .await;
    assert_eq!(
        text_of(&c, "#detail-pid").await.trim(),
        busy.pid.to_string()
    );
    assert!(text_of(&c, "#detail-module").await.contains("puppet"));
    assert_eq!(text_of(&c, "#detail-mailbox").await.trim(), "40");

    // An action without the token is refused, and the process lives.
    refused_without_token(&c, "#kill", "#action-result").await;
    assert!(node.processes().iter().any(|p| p.pid == busy.pid));

    // A module with an old version offers a purge; refused without the
    // token, and the old version stays.
    let puppet = std::fs::read(molt_tests::guest_file("puppet")).unwrap();
    node.load(
        &molt_tests::with_version(&puppet, "puppet", "9.9.9"),
        "puppet",
    )
    .expect("a new puppet version");
    open(&c, &base, "modules", "modules").await;
    until(
        &c,
        "a purge button",
        "return document.querySelector('button.purge[data-module=\"puppet\"]') !== null",
    )
    .await;
    refused_without_token(
        &c,
        "button.purge[data-module=\"puppet\"]",
        "#module-action-result",
    )
    .await;
    assert!(
        node.modules()
            .iter()
            .any(|m| m.name == "puppet" && m.old.is_some()),
        "the old version stays"
    );

    // Across the cluster (one node here): the new version is current.
    let across = until(
        &c,
        "the module across the cluster",
        "const r = document.querySelector('#cluster-modules-table tr[data-module=\"puppet\"]'); \
         return r && r.textContent",
    )
    .await;
    assert!(
        across
            .as_str()
            .is_some_and(|t| t.contains("9.9.9") && t.contains("same everywhere")),
        "{across}"
    );

    // Live: more processes appear on the home page by themselves.
    open(&c, &base, "", "home").await;
    let more = [
        Puppet::spawn(&node).await,
        Puppet::spawn(&node).await,
        Puppet::spawn(&node).await,
    ];
    let alive = node.stats().alive;
    until(
        &c,
        "the live process count",
        &format!(
            "return document.querySelector('#stat-processes').textContent.trim() === '{alive}'"
        ),
    )
    .await;

    // A picture of the process list for the README.
    if let Some(path) = std::env::var_os("MOLT_DASHBOARD_SCREENSHOT") {
        open(&c, &base, "processes", "processes").await;
        let png = c.screenshot().await.unwrap();
        std::fs::write(&path, png).unwrap();
    }

    c.close().await.unwrap();
    drop(driver);
    drop(more);
    server.stop().await;
}
