//! Cluster coordination on real nodes over loopback: bootstrap and join,
//! global names, locks, elections, sessions, restarts with the log.

use std::time::{Duration, Instant};

use molt_abi::{codec, status, sysmsg, tag};
use molt_host::cluster::{
    CoordConfig, CoordStartError, Coordination, GlobalError, LockMode, LockRequest, LogMode,
};
use molt_host::net::Distribution;
use molt_host::{Filter, HostMailbox, Node};
use molt_tests::{
    ChildNode, Cmd, Event, Outcome, Puppet, SystemEvent, TempDir, WAIT, address_of, checker,
    dist_node,
};

/// A node of a coordinated test cluster.
pub(crate) struct Member {
    pub(crate) node: Node,
    pub(crate) dist: Distribution,
    pub(crate) coord: Coordination,
}

impl Member {
    pub(crate) async fn stop(self) {
        self.coord.shutdown().await;
        self.dist.shutdown();
        self.node.shutdown(Duration::from_secs(2)).await;
    }
}

/// Settings for tests: short sessions, quick voter changes.
pub(crate) fn config(dir: &TempDir, name: &str, mode: LogMode) -> CoordConfig {
    let mut config = CoordConfig::new(dir.path().join(name));
    config.log_mode = mode;
    config.session_ttl = Duration::from_millis(1500);
    config.voter_replace_after = Duration::from_secs(3);
    config.quorum_timeout = Duration::from_secs(2);
    config
}

/// Wait up to `within` for `coord`'s node to have a session. `ready`
/// answers `no_quorum` after the quorum timeout (an election may still be
/// under way, or a session being opened again): then it is asked again.
pub(crate) async fn session_within(coord: &Coordination, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        match coord.ready().await {
            Ok(_) => return,
            Err(GlobalError::NoQuorum(_)) if Instant::now() < deadline => {}
            Err(e) => panic!("no session within {within:?}: {e}"),
        }
    }
}

pub(crate) async fn member(
    dir: &TempDir,
    name: &str,
    join: Option<&Member>,
    mode: LogMode,
) -> Member {
    member_with(dir, name, join, mode, |_| {}).await
}

/// [`member`], its settings changed by `tweak` first.
pub(crate) async fn member_with(
    dir: &TempDir,
    name: &str,
    join: Option<&Member>,
    mode: LogMode,
    tweak: fn(&mut CoordConfig),
) -> Member {
    let (node, dist) = dist_node(name).await;
    let address = join.map(|m| address_of(&m.dist));
    let mut config = config(dir, name, mode);
    tweak(&mut config);
    let coord = Coordination::start(&node, &dist, config, address.as_deref())
        .await
        .unwrap_or_else(|e| panic!("{name} starts coordination: {e}"));
    session_within(&coord, WAIT).await;
    Member { node, dist, coord }
}

/// Nodes `a`, `b` and `c` started again over their data in `dir` (a
/// whole cluster's restart): all three start before any waits for a
/// quorum, `b` and `c` given `a`'s address.
pub(crate) async fn restart_three(dir: &TempDir, mode: LogMode) -> Vec<Member> {
    restart_in_order(dir, mode, ["a", "b", "c"]).await
}

/// Three nodes started again over their data in `dir`, in `order`: the
/// first without an address, the others given the first's. The members
/// in that order.
pub(crate) async fn restart_in_order(
    dir: &TempDir,
    mode: LogMode,
    order: [&str; 3],
) -> Vec<Member> {
    let mut members = Vec::new();
    for name in order {
        let (node, dist) = molt_tests::dist_node(name).await;
        let join = members
            .first()
            .map(|m: &Member| molt_tests::address_of(&m.dist));
        let config = config(dir, name, mode);
        let coord = Coordination::start(&node, &dist, config, join.as_deref())
            .await
            .unwrap_or_else(|e| panic!("{name} starts again: {e}"));
        members.push(Member { node, dist, coord });
    }
    members
}

/// Three nodes: `a` bootstraps, `b` and `c` join; waits for 3 voters.
pub(crate) async fn three(dir: &TempDir, mode: LogMode) -> Vec<Member> {
    three_with(dir, mode, |_| {}).await
}

/// [`three`], each node's settings changed by `tweak` first.
pub(crate) async fn three_with(
    dir: &TempDir,
    mode: LogMode,
    tweak: fn(&mut CoordConfig),
) -> Vec<Member> {
    let a = member_with(dir, "a", None, mode, tweak).await;
    let b = member_with(dir, "b", Some(&a), mode, tweak).await;
    let c = member_with(dir, "c", Some(&a), mode, tweak).await;
    let members = vec![a, b, c];
    // Every member knows the three voters, and the change has committed.
    wait_for("three voters, known to all", || {
        members
            .iter()
            .all(|m| m.coord.status().has_settled_voters(3))
    })
    .await;
    members
}

pub(crate) async fn wait_for(what: &str, ok: impl FnMut() -> bool) {
    wait_within(what, WAIT, ok).await;
}

/// [`wait_for`], up to `within`.
pub(crate) async fn wait_within(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting {within:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn exclusive(lock: &str) -> Vec<LockRequest> {
    vec![LockRequest {
        lock: lock.into(),
        mode: LockMode::Exclusive,
    }]
}

fn shared(lock: &str) -> Vec<LockRequest> {
    vec![LockRequest {
        lock: lock.into(),
        mode: LockMode::Shared,
    }]
}

async fn coord_message(mailbox: &mut HostMailbox) -> sysmsg::Coord {
    let message = mailbox
        .recv_matching(
            &Filter {
                tags: vec![tag::COORD],
                reference: None,
            },
            WAIT,
        )
        .await
        .expect("a coordination message");
    codec::decode(&message.payload).expect("a Coord payload")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_bootstraps_and_registers_names() {
    let dir = TempDir::new("coord-lone");
    let a = member(&dir, "a", None, LogMode::Disc).await;
    let status = a.coord.status();
    assert_eq!(status.role, "leader");
    assert_eq!(status.voters.len(), 1);
    assert!(status.cluster.is_some());

    let one = a.node.mailbox().unwrap();
    let two = a.node.mailbox().unwrap();
    let token = a.coord.register("db", one.pid()).await.unwrap();
    assert_eq!(a.coord.whereis("db"), Some(one.pid()));
    assert_eq!(
        a.coord.register("db", two.pid()).await,
        Err(GlobalError::AlreadyRegistered { holder: one.pid() })
    );
    assert_eq!(
        a.coord.unregister("db", two.pid()).await,
        Err(GlobalError::NotHolder { holder: one.pid() })
    );
    // The name is freed when its process ends.
    drop(one);
    wait_for("the name freed", || a.coord.whereis("db").is_none()).await;
    let later = a.coord.register("db", two.pid()).await.unwrap();
    assert!(later > token, "tokens grow: {later} after {token}");
    assert!(matches!(
        a.coord.register("", two.pid()).await,
        Err(GlobalError::BadName { .. })
    ));
    assert!(matches!(
        a.coord.register(&"x".repeat(300), two.pid()).await,
        Err(GlobalError::BadName { .. })
    ));
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_agree_on_names_and_one_registrar_wins() {
    let dir = TempDir::new("coord-names");
    let nodes = three(&dir, LogMode::Ram).await;
    let pa = nodes[1].node.mailbox().unwrap();
    let pb = nodes[2].node.mailbox().unwrap();
    let (ra, rb) = tokio::join!(
        nodes[1].coord.register("singleton", pa.pid()),
        nodes[2].coord.register("singleton", pb.pid())
    );
    let winner = match (&ra, &rb) {
        (Ok(_), Err(GlobalError::AlreadyRegistered { holder })) => {
            assert_eq!(*holder, pa.pid());
            pa.pid()
        }
        (Err(GlobalError::AlreadyRegistered { holder }), Ok(_)) => {
            assert_eq!(*holder, pb.pid());
            pb.pid()
        }
        other => panic!("exactly one registrar wins: {other:?}"),
    };
    for n in &nodes {
        assert_eq!(
            n.coord.whereis_linearizable("singleton").await.unwrap(),
            Some(winner)
        );
        wait_for("the replica", || {
            n.coord.whereis("singleton") == Some(winner)
        })
        .await;
    }
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_are_granted_in_order_with_growing_tokens() {
    let dir = TempDir::new("coord-locks");
    let nodes = three(&dir, LogMode::Ram).await;
    let holder = nodes[0].node.mailbox().unwrap();
    let first = nodes[1].node.mailbox().unwrap();
    let second = nodes[2].node.mailbox().unwrap();
    let g0 = nodes[0]
        .coord
        .lock(holder.pid(), &exclusive("l"), WAIT)
        .await
        .unwrap();
    // Two waiters, queued in this order.
    let c1 = nodes[1].coord.clone();
    let p1 = first.pid();
    let w1 = tokio::spawn(async move { c1.lock(p1, &exclusive("l"), WAIT).await });
    wait_for("the first waiter queued", || {
        nodes[0]
            .coord
            .locks()
            .first()
            .is_some_and(|l| l.queue.len() == 1)
    })
    .await;
    let c2 = nodes[2].coord.clone();
    let p2 = second.pid();
    let w2 = tokio::spawn(async move { c2.lock(p2, &exclusive("l"), WAIT).await });
    wait_for("the second waiter queued", || {
        nodes[0]
            .coord
            .locks()
            .first()
            .is_some_and(|l| l.queue.len() == 2)
    })
    .await;
    // A non-holder cannot release it.
    assert_eq!(
        nodes[1].coord.unlock("l", first.pid()).await,
        Err(GlobalError::NotHeld("l".into()))
    );
    nodes[0].coord.unlock("l", holder.pid()).await.unwrap();
    let g1 = w1.await.unwrap().unwrap();
    assert!(g1[0].token > g0[0].token);
    assert!(!w2.is_finished(), "the second waits for the first");
    // The holder's end releases the lock to the next in line.
    drop(first);
    let g2 = w2.await.unwrap().unwrap();
    assert!(g2[0].token > g1[0].token);
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_locks_coexist_and_a_waiter_times_out() {
    let dir = TempDir::new("coord-shared");
    let a = member(&dir, "a", None, LogMode::Ram).await;
    let r1 = a.node.mailbox().unwrap();
    let r2 = a.node.mailbox().unwrap();
    let w = a.node.mailbox().unwrap();
    a.coord.lock(r1.pid(), &shared("s"), WAIT).await.unwrap();
    a.coord.lock(r2.pid(), &shared("s"), WAIT).await.unwrap();
    let started = Instant::now();
    assert_eq!(
        a.coord
            .lock(w.pid(), &exclusive("s"), Duration::from_millis(300))
            .await,
        Err(GlobalError::Timeout(Duration::from_millis(300)))
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    // The timed-out waiter left the queue.
    assert!(a.coord.locks()[0].queue.is_empty());
    // A set naming one lock twice is refused.
    let twice = [exclusive("t"), exclusive("t")].concat();
    assert_eq!(
        a.coord.lock(w.pid(), &twice, WAIT).await,
        Err(GlobalError::Duplicate("t".into()))
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_moves_when_its_leader_ends() {
    let dir = TempDir::new("coord-elect");
    let nodes = three(&dir, LogMode::Ram).await;
    let mut first = nodes[1].node.mailbox().unwrap();
    let mut second = nodes[2].node.mailbox().unwrap();
    let base = Instant::now();
    let at = || Instant::now().duration_since(base).as_nanos() as u64;
    let mut seen = Vec::new();
    let (leader, term) = nodes[1].coord.elect("workers", first.pid()).await.unwrap();
    assert_eq!(leader, first.pid());
    seen.push(checker::Observation::elected(1, term, at()));
    assert_eq!(
        coord_message(&mut first).await,
        sysmsg::Coord::Elected {
            group: "workers".into(),
            term
        }
    );
    let (leader2, term2) = nodes[2].coord.elect("workers", second.pid()).await.unwrap();
    assert_eq!((leader2, term2), (first.pid(), term));
    seen.push(checker::Observation::leader_changed(2, 1, term2, at()));
    drop(first);
    match coord_message(&mut second).await {
        sysmsg::Coord::Elected { group, term: t } => {
            assert_eq!(group, "workers");
            assert!(t > term, "a new term: {t} after {term}");
            seen.push(checker::Observation::elected(2, t, at()));
        }
        other => panic!("the second candidate leads: {other:?}"),
    }
    checker::check_elections(&seen).unwrap_or_else(|v| panic!("{v}"));
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_whose_node_lost_its_session_stands_again_and_leads_when_its_turn_comes() {
    use molt_host::net::nemesis::LinkFaults;
    let dir = TempDir::new("coord-restand");
    let nodes = three(&dir, LogMode::Ram).await;
    let first = nodes[1].node.mailbox().unwrap();
    let mut second = nodes[2].node.mailbox().unwrap();
    let (leader, _) = nodes[1].coord.elect("workers", first.pid()).await.unwrap();
    assert_eq!(leader, first.pid());
    nodes[2].coord.elect("workers", second.pid()).await.unwrap();
    let candidates = |m: &Member| {
        m.coord
            .elections()
            .into_iter()
            .find(|e| e.group == "workers")
            .map(|e| e.candidates)
            .unwrap_or_default()
    };
    assert_eq!(candidates(&nodes[0]), [first.pid(), second.pid()]);
    // c is cut off for longer than its session lives: its session ends,
    // and with it the candidacy it held.
    let cut = |faults: LinkFaults| {
        for other in [0, 1] {
            nodes[2]
                .dist
                .nemesis()
                .set(nodes[other].dist.name(), faults);
            nodes[other]
                .dist
                .nemesis()
                .set(nodes[2].dist.name(), faults);
        }
    };
    cut(LinkFaults::CUT);
    wait_for("the majority freed c's candidacy", || {
        candidates(&nodes[0]) == [first.pid()]
    })
    .await;
    cut(LinkFaults::default());
    // Back, c's node stands its candidate again, at the end of the line,
    // and tells it who leads.
    wait_for("c's candidate stands again", || {
        candidates(&nodes[0]) == [first.pid(), second.pid()]
    })
    .await;
    assert_eq!(
        coord_message(&mut second).await,
        sysmsg::Coord::LeaderChanged {
            group: "workers".into(),
            leader: first.pid(),
            term: nodes[0].coord.leader("workers").unwrap().1,
        }
    );
    // Its turn comes when the leader ends.
    let (_, term) = nodes[0].coord.leader("workers").unwrap();
    drop(first);
    match coord_message(&mut second).await {
        sysmsg::Coord::Elected { group, term: t } => {
            assert_eq!(group, "workers");
            assert!(t > term, "a new term: {t} after {term}");
        }
        other => panic!("the candidate that stood again leads: {other:?}"),
    }
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused_by_name() {
    let dir = TempDir::new("coord-other");
    let a = member(&dir, "a", None, LogMode::Disc).await;
    let b = member(&dir, "b", None, LogMode::Disc).await;
    b.coord.shutdown().await;
    // b's log belongs to its own cluster.
    let refused = Coordination::start(
        &b.node,
        &b.dist,
        config(&dir, "b", LogMode::Disc),
        Some(&address_of(&a.dist)),
    )
    .await;
    let message = match refused {
        Err(e @ CoordStartError::Refused { .. }) => e.to_string(),
        Err(other) => panic!("refused as another cluster's node, not {other}"),
        Ok(_) => panic!("a node of another cluster was let in"),
    };
    assert!(message.contains("founded by b@127.0.0.1"), "{message}");
    assert!(message.contains("founded by a@127.0.0.1"), "{message}");
    b.dist.shutdown();
    b.node.shutdown(Duration::from_secs(2)).await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_disc_node_comes_back_with_its_log() {
    let dir = TempDir::new("coord-restart");
    let a = member(&dir, "a", None, LogMode::Disc).await;
    let keeper = a.node.mailbox().unwrap();
    a.coord.register("kept", keeper.pid()).await.unwrap();
    let cluster = a.coord.cluster();
    let id = a.coord.member_id();
    // A clean stop closes the session, which frees the name: so register
    // another name whose holder stays, and stop without closing.
    drop(keeper);
    wait_for("the name freed", || a.coord.whereis("kept").is_none()).await;
    let applied = a.coord.status().applied_index;
    a.stop().await;
    let a = member(&dir, "a", None, LogMode::Disc).await;
    assert_eq!(a.coord.cluster(), cluster);
    assert_eq!(a.coord.member_id(), id);
    assert!(a.coord.status().applied_index >= applied);
    assert_eq!(a.coord.status().voters.len(), 1);
    a.stop().await;
}

/// After a whole cluster's restart each node's vote still names the
/// leader of before. The node joined through first must not send the
/// others to that leader for good: it is not up yet (it starts last
/// here), and it waits for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_restarts_its_old_leader_last_and_joins_through_a_follower() {
    let dir = TempDir::new("coord-restart-leader-last");
    let members = three(&dir, LogMode::Disc).await;
    let leader = members[0].coord.status().leader.expect("a leader");
    let mut order: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|n| !leader.starts_with(&format!("{n}@")))
        .collect();
    order.push(&leader[..1]);
    let order: [&str; 3] = order.try_into().expect("the leader is one of a, b, c");
    for m in members {
        m.stop().await;
    }
    let members = restart_in_order(&dir, LogMode::Disc, order).await;
    for m in &members {
        session_within(&m.coord, Duration::from_secs(20)).await;
    }
    wait_for("three voters and a leader, known to all", || {
        members.iter().all(|m| {
            let status = m.coord.status();
            status.has_settled_voters(3) && status.leader.is_some()
        })
    })
    .await;
    let holder = members[2].node.mailbox().unwrap();
    members[2]
        .coord
        .register("after", holder.pid())
        .await
        .expect("the old leader registers a name after the restart");
    drop(holder);
    for m in members {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_session_frees_its_names_after_the_ttl() {
    let dir = TempDir::new("coord-session");
    let nodes = three(&dir, LogMode::Ram).await;
    let mut nodes = nodes.into_iter();
    let a = nodes.next().unwrap();
    let b = nodes.next().unwrap();
    let c = nodes.next().unwrap();
    let holder = c.node.mailbox().unwrap();
    c.coord.register("on-c", holder.pid()).await.unwrap();
    wait_for("a sees it", || a.coord.whereis("on-c").is_some()).await;
    // c vanishes without closing its session: its distribution and Raft
    // stop, its processes keep running.
    let started = Instant::now();
    c.dist.shutdown();
    wait_for("the session expired", || a.coord.whereis("on-c").is_none()).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1000),
        "freed only after the session could expire ({waited:?})"
    );
    drop(holder);
    c.coord.shutdown().await;
    c.node.shutdown(Duration::from_secs(2)).await;
    a.stop().await;
    b.stop().await;
}

/// The next coordination notice a puppet got.
async fn puppet_notice(puppet: &mut Puppet) -> sysmsg::Coord {
    loop {
        match puppet.event().await {
            Event::Got {
                system: Some(SystemEvent::Coord(notice)),
                ..
            } => return notice,
            _ => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_register_lock_and_elect_through_the_sdk() {
    let dir = TempDir::new("coord-guests");
    let a = member(&dir, "a", None, LogMode::Ram).await;
    let b = member(&dir, "b", Some(&a), LogMode::Ram).await;
    let mut pa = Puppet::spawn(&a.node).await;
    let mut pb = Puppet::spawn(&b.node).await;

    assert_eq!(pa.cmd(Cmd::GlobalRegister("svc".into())).await, Outcome::Ok);
    assert_eq!(
        pb.cmd(Cmd::GlobalRegister("svc".into())).await,
        Outcome::Pid(pa.pid),
        "the loser is told the holder"
    );
    assert_eq!(
        pb.cmd(Cmd::GlobalWhereis("svc".into(), true)).await,
        Outcome::MaybePid(Some(pa.pid))
    );
    assert_eq!(
        pb.cmd(Cmd::GlobalUnregister("svc".into())).await,
        Outcome::Status(status::NOT_HOLDER)
    );
    assert_eq!(
        pa.cmd(Cmd::GlobalRegister(String::new())).await,
        Outcome::Status(status::BAD_ARG)
    );
    // global_send reaches the holder on another node, in one call.
    assert_eq!(pa.cmd(Cmd::OnlyCommands(true)).await, Outcome::Ok);
    let send = |name: &str| Cmd::GlobalSend {
        name: name.into(),
        tag: 30,
        payload: b"to the holder".to_vec(),
    };
    assert_eq!(pb.cmd(send("svc")).await, Outcome::Ok);
    assert_eq!(
        pa.cmd(Cmd::Receive {
            tags: vec![30],
            reference: None,
            timeout_ms: Some(5_000),
        })
        .await,
        Outcome::Received(Some((30, None, b"to the holder".to_vec())))
    );
    assert_eq!(
        pb.cmd(send("nobody")).await,
        Outcome::Status(status::NOT_REGISTERED)
    );
    assert_eq!(pb.cmd(send("")).await, Outcome::Status(status::BAD_ARG));
    assert_eq!(pa.cmd(Cmd::OnlyCommands(false)).await, Outcome::Ok);

    let lock = |timeout_ms| Cmd::Lock {
        set: vec![("l".into(), false)],
        timeout_ms,
    };
    let Outcome::Tokens(first) = pa.cmd(lock(5_000)).await else {
        panic!("a grants the lock");
    };
    assert_eq!(pb.cmd(lock(200)).await, Outcome::Status(status::TIMEOUT));
    assert_eq!(
        pb.cmd(Cmd::Unlock("l".into())).await,
        Outcome::Status(status::NOT_HOLDER)
    );
    assert_eq!(
        pa.cmd(lock(100)).await,
        Outcome::Status(status::ALREADY_HELD)
    );
    assert_eq!(pa.cmd(Cmd::Unlock("l".into())).await, Outcome::Ok);
    let Outcome::Tokens(second) = pb.cmd(lock(5_000)).await else {
        panic!("b gets the lock once a gave it back");
    };
    assert!(second[0] > first[0]);

    let Outcome::Leader(leader, term) = pa.cmd(Cmd::Elect("g".into())).await else {
        panic!("a stands");
    };
    assert_eq!(leader, pa.pid);
    assert_eq!(
        puppet_notice(&mut pa).await,
        sysmsg::Coord::Elected {
            group: "g".into(),
            term
        }
    );
    assert_eq!(
        pb.cmd(Cmd::Elect("g".into())).await,
        Outcome::Leader(pa.pid, term)
    );
    assert_eq!(
        pb.cmd(Cmd::Resign("h".into())).await,
        Outcome::Status(status::NOT_CANDIDATE)
    );
    assert_eq!(pa.cmd(Cmd::Resign("g".into())).await, Outcome::Ok);
    match puppet_notice(&mut pb).await {
        sysmsg::Coord::LeaderChanged { .. } => {
            // The notice of a's term may come first; then b's own.
            match puppet_notice(&mut pb).await {
                sysmsg::Coord::Elected { term: t, .. } => assert!(t > term),
                other => panic!("b leads: {other:?}"),
            }
        }
        sysmsg::Coord::Elected { term: t, .. } => assert!(t > term),
        other => panic!("b leads: {other:?}"),
    }
    let Outcome::Leader(now, _) = pa.cmd(Cmd::Leader("g".into())).await else {
        panic!("a leader");
    };
    assert_eq!(now, pb.pid);
    drop((pa, pb));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_coordination_says_so() {
    let (node, dist) = dist_node("plain").await;
    let mut p = Puppet::spawn(&node).await;
    assert_eq!(
        p.cmd(Cmd::GlobalRegister("x".into())).await,
        Outcome::Status(status::NO_COORDINATION)
    );
    assert_eq!(
        p.cmd(Cmd::Lock {
            set: vec![("l".into(), false)],
            timeout_ms: 10
        })
        .await,
        Outcome::Status(status::NO_COORDINATION)
    );
    assert_eq!(
        p.cmd(Cmd::GlobalSend {
            name: "x".into(),
            tag: 30,
            payload: vec![1],
        })
        .await,
        Outcome::Status(status::NO_COORDINATION)
    );
    drop(p);
    dist.shutdown();
    node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn molt_cluster_shows_cli_nodes_adds_a_voter_and_removes_one() {
    const COOKIE: &str = "coord-cli-cookie-0123456789abcdef";
    fn os(s: &str) -> &std::ffi::OsStr {
        s.as_ref()
    }
    let (_a, addr_a) = ChildNode::start(&[os("--name"), os("ca")], COOKIE).await;
    let join = format!("ca@{addr_a}");
    let join_os = join.clone();
    let (_b, _) = ChildNode::start(
        &[os("--name"), os("cb"), os("--join"), os(&join_os)],
        COOKIE,
    )
    .await;
    let (_c, _) = ChildNode::start(
        &[os("--name"), os("cc"), os("--join"), os(&join_os)],
        COOKIE,
    )
    .await;
    let (_d, _) = ChildNode::start(
        &[os("--name"), os("cd"), os("--join"), os(&join_os)],
        COOKIE,
    )
    .await;
    let cluster = |args: &[&str]| {
        let out = std::process::Command::new(molt_tests::molt_bin())
            .arg(args[0])
            .args(["--node", &join])
            .args(&args[1..])
            .env("MOLT_COOKIE", COOKIE)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let deadline = Instant::now() + WAIT;
    let shown = loop {
        let (ok, text) = cluster(&["cluster"]);
        // The learner is up once its session shows.
        let learner_up = text
            .lines()
            .any(|l| l.starts_with("learner ") && !l.ends_with("no session"));
        if ok && text.matches("voter ").count() == 3 && learner_up {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "three voters and a learner in time:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(shown.contains("leader    ca@127.0.0.1"), "{shown}");
    assert!(shown.contains("founded by ca@127.0.0.1"), "{shown}");
    for n in ["ca", "cb", "cc", "cd"] {
        assert!(shown.contains(&format!("{n}@127.0.0.1")), "{shown}");
    }
    let (ok, names) = cluster(&["names"]);
    assert!(ok && names.starts_with("name"), "{names}");
    // The same listings as JSON: the HTTP API's views.
    let json = |args: &[&str]| {
        let (ok, text) = cluster(args);
        assert!(ok, "{args:?}: {text}");
        let first = text.lines().next().unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(first)
            .unwrap_or_else(|e| panic!("{args:?} prints JSON: {e}: {text}"))
    };
    let status = json(&["cluster", "--format", "json"]);
    assert_eq!(status["leader"], "ca@127.0.0.1", "{status}");
    assert_eq!(
        status["voters"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    for listing in ["names", "locks", "elections"] {
        let listed = json(&[listing, "--format", "json"]);
        assert_eq!(listed, serde_json::json!([]), "{listing}");
    }
    // One of the joiners stays a learner (three voters by default; which
    // one depends on the members' Raft ids); the operator makes it a voter.
    let learner = shown
        .lines()
        .find(|l| l.starts_with("learner "))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("a learner line")
        .to_string();
    assert_ne!(learner, "ca@127.0.0.1", "{shown}");
    let (ok, text) = cluster(&["cluster", "add-voter", &learner]);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("{learner} is a voter")), "{text}");
    assert!(
        text.contains("4 voters survive no more failures than 3 do"),
        "{text}"
    );
    let (ok, text) = cluster(&["cluster"]);
    assert!(ok && text.matches("voter ").count() == 4, "{text}");
    assert!(!text.contains("learner "), "{text}");
    let (ok, text) = cluster(&["cluster", "add-voter", &learner]);
    assert!(!ok && text.contains("a voter already"), "{text}");
    let (ok, text) = cluster(&["cluster", "add-voter", "nobody@127.0.0.1"]);
    assert!(!ok && text.contains("not a member"), "{text}");
    let (ok, text) = cluster(&["cluster", "remove", "cc@127.0.0.1"]);
    assert!(ok, "{text}");
    assert!(text.contains("removed cc@127.0.0.1"), "{text}");
    let (ok, text) = cluster(&["cluster", "remove", "nobody@127.0.0.1"]);
    assert!(!ok && text.contains("not a member"), "{text}");
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, text) = cluster(&["cluster"]);
        if !text.contains("cc@127.0.0.1") {
            break;
        }
        assert!(Instant::now() < deadline, "cc gone in time:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_holder_is_told_before_the_lock_moves_and_a_new_leader_takes_over() {
    let dir = TempDir::new("coord-fence");
    let nodes = three(&dir, LogMode::Ram).await;
    let mut nodes = nodes.into_iter();
    let a = nodes.next().unwrap();
    let b = nodes.next().unwrap();
    let c = nodes.next().unwrap();
    assert_eq!(a.coord.status().role, "leader");
    let base = Instant::now();
    let nanos = |t: Instant| t.duration_since(base).as_nanos() as u64;
    let mut holder = a.node.mailbox().unwrap();
    let held = a
        .coord
        .lock(holder.pid(), &exclusive("fenced"), WAIT)
        .await
        .unwrap();
    let held_at = Instant::now();
    let waiter = b.node.mailbox().unwrap();
    let coord_b = b.coord.clone();
    let wpid = waiter.pid();
    let wait = tokio::spawn(async move {
        let granted = coord_b.lock(wpid, &exclusive("fenced"), WAIT).await;
        (granted, Instant::now())
    });
    wait_for("the waiter queued", || {
        b.coord.locks().first().is_some_and(|l| l.queue.len() == 1)
    })
    .await;
    // a (the coordination leader and the holder's node) is cut off.
    a.dist.shutdown();
    let lost = coord_message(&mut holder).await;
    let lost_at = Instant::now();
    assert_eq!(
        lost,
        sysmsg::Coord::LockLost {
            lock: "fenced".into(),
            token: held[0].token
        }
    );
    let (granted, granted_at) = wait.await.unwrap();
    let granted = granted.expect("the waiter gets the lock after a's session expired");
    assert!(granted[0].token > held[0].token);
    assert!(
        lost_at <= granted_at,
        "the old holder was told before the lock moved"
    );
    // The recorded history, through the lock checker: the first hold ends
    // when its holder is told it lost the lock.
    let history = [
        checker::Hold::exclusive(1, held[0].token, nanos(held_at), Some(nanos(lost_at))),
        checker::Hold::exclusive(2, granted[0].token, nanos(granted_at), None),
    ];
    checker::check_lock(&history).unwrap_or_else(|v| panic!("{v}"));
    // b or c leads now.
    let leader = b.coord.status().leader.expect("a leader");
    assert!(
        leader.starts_with("b@") || leader.starts_with("c@"),
        "{leader}"
    );
    // The majority side goes on; the cut-off side cannot commit.
    let p = c.node.mailbox().unwrap();
    c.coord.register("after", p.pid()).await.unwrap();
    let q = a.node.mailbox().unwrap();
    assert!(matches!(
        a.coord.register("minority", q.pid()).await,
        Err(GlobalError::NoQuorum(_) | GlobalError::SessionLost)
    ));
    drop((holder, waiter, p, q));
    a.coord.shutdown().await;
    a.node.shutdown(Duration::from_secs(2)).await;
    b.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_singleton_example_moves_when_its_node_dies_and_its_counter_counts_under_the_lock() {
    let dir = TempDir::new("coord-singleton");
    let nodes = three(&dir, LogMode::Ram).await;
    let args = |a: &[&str]| codec::encode(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let mut keep = Vec::new();
    for n in &nodes {
        let mut m = n.node.mailbox().unwrap();
        m.spawn("singleton", args(&["singleton"]), false, false)
            .unwrap();
        keep.push(m);
    }
    wait_for("all three stand", || {
        nodes[0]
            .coord
            .elections()
            .first()
            .is_some_and(|e| e.candidates.len() == 3)
    })
    .await;
    let (first, term) = nodes[0].coord.leader(singleton::ELECTION).unwrap();
    let at = nodes.iter().position(|n| n.node.is_local(first)).unwrap();

    // The counter: a store on one node, 20 locked increments from each of
    // the two others.
    let store_at = (at + 1) % 3;
    let mut ctl = nodes[store_at].node.mailbox().unwrap();
    ctl.spawn("singleton", args(&["store"]), false, false)
        .unwrap();
    wait_for("the store registered", || {
        nodes
            .iter()
            .all(|n| n.coord.whereis(singleton::STORE).is_some())
    })
    .await;
    let mut incrs = Vec::new();
    for i in [at, (at + 2) % 3] {
        let mut m = nodes[i].node.mailbox().unwrap();
        let (_, monitor) = m
            .spawn("singleton", args(&["incr", "20"]), false, true)
            .unwrap();
        incrs.push((m, monitor.unwrap()));
    }
    for (m, monitor) in &mut incrs {
        assert_eq!(
            m.recv_down(*monitor, WAIT * 3).await.as_deref(),
            Some("normal")
        );
    }
    let store = nodes[store_at].coord.whereis(singleton::STORE).unwrap();
    ctl.send(
        store,
        tag::DATA,
        molt_abi::Ref::NONE,
        codec::encode(&singleton::StoreMsg::Get { from: ctl.pid() }),
    )
    .unwrap();
    let reply = ctl.recv(WAIT).await.expect("the store answers");
    assert_eq!(
        codec::decode::<singleton::StoreReply>(&reply.payload).unwrap(),
        singleton::StoreReply::Value(40)
    );

    // The leader's node is cut off: another singleton leads, with a later
    // term.
    let mut nodes = nodes;
    let gone = nodes.remove(at);
    gone.dist.shutdown();
    wait_for("another singleton leads", || {
        nodes[0]
            .coord
            .leader(singleton::ELECTION)
            .is_some_and(|(pid, t)| pid != first && t > term)
    })
    .await;
    let (now, _) = nodes[0].coord.leader(singleton::ELECTION).unwrap();
    assert!(nodes.iter().any(|n| n.node.is_local(now)));
    drop((keep, ctl, incrs));
    gone.coord.shutdown().await;
    gone.node.shutdown(Duration::from_secs(2)).await;
    for n in nodes {
        n.stop().await;
    }
}
