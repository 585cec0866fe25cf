//! Process groups (Erlang's `pg`): join, leave and members from real
//! guests (puppets driving `molt_sdk::pg`), members removed when they
//! exit, limits, membership through a hot upgrade, and the same groups
//! seen across two nodes on loopback.

use molt_abi::{Pid, Ref, codec, status, tag};
use molt_host::{Node, NodeConfig, PgError};
use molt_tests::{
    Cmd, Outcome, Puppet, QUIET, WAIT, address_of, dist_node, down_reason, guest_file, node,
    start_node, test_config, version_of, with_version,
};

fn join(scope: &str, group: &str) -> Cmd {
    Cmd::PgJoin {
        scope: scope.into(),
        group: group.into(),
    }
}

fn leave(scope: &str, group: &str) -> Cmd {
    Cmd::PgLeave {
        scope: scope.into(),
        group: group.into(),
    }
}

fn members(scope: &str, group: &str, local: bool) -> Cmd {
    Cmd::PgMembers {
        scope: scope.into(),
        group: group.into(),
        local,
    }
}

fn sorted(mut pids: Vec<Pid>) -> Vec<Pid> {
    pids.sort();
    pids
}

/// Wait until `node` sees exactly `expected` (sorted) in the group.
async fn wait_members(node: &Node, scope: &str, group: &str, expected: &[Pid]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = node.pg_members(scope, group);
        if now == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{scope}/{group} has {now:?}, expected {expected:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_and_members_count_memberships() {
    let node = node();
    let mut a = Puppet::spawn(&node).await;
    let mut b = Puppet::spawn(&node).await;
    assert_eq!(a.cmd(join("s", "g")).await, Outcome::Ok);
    assert_eq!(a.cmd(join("s", "g")).await, Outcome::Ok);
    assert_eq!(b.cmd(join("s", "g")).await, Outcome::Ok);
    let all = sorted(vec![a.pid, a.pid, b.pid]);
    assert_eq!(
        b.cmd(members("s", "g", false)).await,
        Outcome::Pids(all.clone())
    );
    assert_eq!(
        b.cmd(members("s", "g", true)).await,
        Outcome::Pids(all.clone())
    );
    assert_eq!(node.pg_members("s", "g"), all);
    assert_eq!(
        a.cmd(Cmd::PgWhichGroups("s".into())).await,
        Outcome::Names(vec!["g".into()])
    );

    // Joined twice, left once: still a member.
    assert_eq!(a.cmd(leave("s", "g")).await, Outcome::Ok);
    assert_eq!(node.pg_members("s", "g"), sorted(vec![a.pid, b.pid]));
    assert_eq!(a.cmd(leave("s", "g")).await, Outcome::Ok);
    assert_eq!(node.pg_members("s", "g"), vec![b.pid]);
    assert_eq!(
        a.cmd(leave("s", "g")).await,
        Outcome::Status(status::NOT_JOINED)
    );
    assert_eq!(b.cmd(leave("s", "g")).await, Outcome::Ok);
    assert_eq!(a.cmd(members("s", "g", false)).await, Outcome::Pids(vec![]));
    assert_eq!(
        a.cmd(Cmd::PgWhichGroups("s".into())).await,
        Outcome::Names(vec![])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_are_separate() {
    let node = node();
    let mut a = Puppet::spawn(&node).await;
    let mut b = Puppet::spawn(&node).await;
    assert_eq!(a.cmd(join("one", "g")).await, Outcome::Ok);
    assert_eq!(b.cmd(join("two", "g")).await, Outcome::Ok);
    assert_eq!(b.cmd(join("two", "h")).await, Outcome::Ok);
    assert_eq!(node.pg_members("one", "g"), vec![a.pid]);
    assert_eq!(node.pg_members("two", "g"), vec![b.pid]);
    assert_eq!(
        a.cmd(Cmd::PgWhichGroups("two".into())).await,
        Outcome::Names(vec!["g".into(), "h".into()])
    );
    assert_eq!(
        a.cmd(leave("two", "g")).await,
        Outcome::Status(status::NOT_JOINED)
    );
    assert_eq!(node.pg_which_groups("three"), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_exits_is_removed() {
    let node = node();
    let mut watcher = node.mailbox().unwrap();
    let mut stays = Puppet::spawn(&node).await;
    assert_eq!(stays.cmd(join("s", "g")).await, Outcome::Ok);
    for (how, cmd) in [
        ("normal", Cmd::ExitSelf("normal".into())),
        ("crash", Cmd::Panic("boom".into())),
    ] {
        let mut goes = Puppet::spawn(&node).await;
        assert_eq!(goes.cmd(join("s", "g")).await, Outcome::Ok);
        assert_eq!(goes.cmd(join("s", "g")).await, Outcome::Ok);
        assert_eq!(goes.cmd(join("s", "other")).await, Outcome::Ok);
        assert_eq!(
            node.pg_members("s", "g"),
            sorted(vec![stays.pid, goes.pid, goes.pid])
        );
        let down = watcher.monitor(goes.pid);
        goes.order(cmd);
        let why = down_reason(&mut watcher, down).await;
        assert!(how != "normal" || why == "normal", "{why}");
        // Removed by the time its DOWN is out: every membership, every group.
        assert_eq!(node.pg_members("s", "g"), vec![stays.pid], "{how}");
        assert_eq!(node.pg_which_groups("s"), vec!["g".to_string()], "{how}");
    }
    assert_eq!(
        stays.cmd(members("s", "g", false)).await,
        Outcome::Pids(vec![stays.pid])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_refused_with_a_clear_status() {
    let node = start_node(NodeConfig {
        pg_groups_max: 3,
        pg_memberships_max: 2,
        ..test_config()
    });
    let mut a = Puppet::spawn(&node).await;
    assert_eq!(a.cmd(join("s", "g1")).await, Outcome::Ok);
    assert_eq!(a.cmd(join("s", "g1")).await, Outcome::Ok);
    assert_eq!(
        a.cmd(join("s", "g2")).await,
        Outcome::Status(status::PG_LIMIT),
        "pg_memberships_max per process"
    );
    let mut b = Puppet::spawn(&node).await;
    assert_eq!(b.cmd(join("s", "g2")).await, Outcome::Ok);
    assert_eq!(b.cmd(join("t", "g3")).await, Outcome::Ok);
    let mut c = Puppet::spawn(&node).await;
    assert_eq!(
        c.cmd(join("t", "g4")).await,
        Outcome::Status(status::PG_LIMIT),
        "pg_groups_max per node"
    );
    // An existing group can still grow.
    assert_eq!(c.cmd(join("t", "g3")).await, Outcome::Ok);
    // Names are bounded like registered names.
    let long = "x".repeat(molt_abi::NAME_BYTES_MAX + 1);
    assert_eq!(
        c.cmd(join("s", &long)).await,
        Outcome::Status(status::BAD_ARG)
    );
    assert_eq!(c.cmd(join("", "g")).await, Outcome::Status(status::BAD_ARG));
    // The same limits from the host API.
    let mut m = node.mailbox().unwrap();
    assert_eq!(m.pg_join("u", "g5"), Err(PgError::GroupLimit(3)));
    assert_eq!(m.pg_leave("t", "g3"), Err(PgError::NotJoined));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_survives_a_hot_upgrade() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let args = codec::encode(&("svc".to_string(), "api".to_string()));
    let (member, _) = me.spawn("pg-member", args, false, false).unwrap();
    wait_members(&node, "svc", "api", &[member]).await;

    let v2 = with_version(
        &std::fs::read(guest_file("pg-member")).unwrap(),
        "pg-member",
        "0.2.0",
    );
    node.load(&v2, "pg-member").unwrap();
    // It moves at its next message, then answers from the new version.
    me.send(member, tag::DATA, Ref::NONE, codec::encode(&me.pid()))
        .unwrap();
    let reply = me.recv(WAIT).await.expect("the member answers");
    assert_eq!(
        codec::decode::<Vec<Pid>>(&reply.payload).unwrap(),
        vec![member]
    );
    assert_eq!(
        version_of(&node, member).as_deref(),
        Some("0.2.0"),
        "migrated to the new version"
    );
    assert_eq!(node.pg_members("svc", "api"), vec![member]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_span_two_nodes() {
    let (a, da) = dist_node("a").await;
    let (b, db) = dist_node("b").await;
    da.join(&address_of(&db)).await.unwrap();
    let mut on_a = Puppet::spawn(&a).await;
    let mut on_b = Puppet::spawn(&b).await;

    // A join on A shows on B, and the other way round.
    assert_eq!(on_a.cmd(join("s", "g")).await, Outcome::Ok);
    wait_members(&b, "s", "g", &[on_a.pid]).await;
    assert_eq!(on_b.cmd(join("s", "g")).await, Outcome::Ok);
    let both = sorted(vec![on_a.pid, on_b.pid]);
    wait_members(&a, "s", "g", &both).await;
    assert_eq!(
        on_b.cmd(members("s", "g", false)).await,
        Outcome::Pids(both.clone())
    );
    assert_eq!(
        on_b.cmd(members("s", "g", true)).await,
        Outcome::Pids(vec![on_b.pid])
    );
    assert_eq!(b.pg_local_members("s", "g"), vec![on_b.pid]);

    // Counts travel: a second join and one leave on A.
    assert_eq!(on_a.cmd(join("s", "g")).await, Outcome::Ok);
    wait_members(&b, "s", "g", &sorted(vec![on_a.pid, on_a.pid, on_b.pid])).await;
    assert_eq!(on_a.cmd(leave("s", "g")).await, Outcome::Ok);
    wait_members(&b, "s", "g", &both).await;

    // A member on A that exits disappears on B.
    let mut watcher = a.mailbox().unwrap();
    let down = watcher.monitor(on_a.pid);
    on_a.order(Cmd::Panic("gone".into()));
    down_reason(&mut watcher, down).await;
    wait_members(&b, "s", "g", &[on_b.pid]).await;
    wait_members(&a, "s", "g", &[on_b.pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_goes_away_takes_its_members() {
    let (a, da) = dist_node("a").await;
    let (b, db) = dist_node("b").await;
    da.join(&address_of(&db)).await.unwrap();
    let mut on_a = Puppet::spawn(&a).await;
    let mut on_b = Puppet::spawn(&b).await;
    assert_eq!(on_a.cmd(join("s", "g")).await, Outcome::Ok);
    assert_eq!(on_b.cmd(join("s", "g")).await, Outcome::Ok);
    let both = sorted(vec![on_a.pid, on_b.pid]);
    wait_members(&a, "s", "g", &both).await;
    db.shutdown();
    wait_members(&a, "s", "g", &[on_a.pid]).await;
    assert_eq!(a.pg_which_groups("s"), vec!["g".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_connects_later_gets_the_groups() {
    let (a, da) = dist_node("a").await;
    let (b, db) = dist_node("b").await;
    let mut on_a = Puppet::spawn(&a).await;
    let mut on_b = Puppet::spawn(&b).await;
    assert_eq!(on_a.cmd(join("s", "g")).await, Outcome::Ok);
    assert_eq!(on_a.cmd(join("s", "g")).await, Outcome::Ok);
    assert_eq!(on_a.cmd(join("t", "h")).await, Outcome::Ok);
    assert_eq!(on_b.cmd(join("s", "g")).await, Outcome::Ok);
    // Not connected: each sees its own.
    tokio::time::sleep(QUIET).await;
    assert_eq!(b.pg_members("s", "g"), vec![on_b.pid]);

    db.join(&address_of(&da)).await.unwrap();
    let all = sorted(vec![on_a.pid, on_a.pid, on_b.pid]);
    wait_members(&b, "s", "g", &all).await;
    wait_members(&a, "s", "g", &all).await;
    wait_members(&b, "t", "h", &[on_a.pid]).await;
    assert_eq!(
        on_b.cmd(Cmd::PgWhichGroups("t".into())).await,
        Outcome::Names(vec!["h".into()])
    );
}
