//! Coordination under injected faults: three nodes, clients on each using
//! cluster names, a lock and an election while a seeded nemesis partitions,
//! pauses, drops and delays links (leader loss included); the recorded
//! histories go through the checkers (`tests/checker.rs`). A failing seed
//! replays with `MOLT_NEMESIS_SEED=<seed>`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use molt_abi::{Pid, codec, sysmsg, tag};
use molt_host::cluster::{Coordination, GlobalError, LogMode};
use molt_host::net::nemesis::LinkFaults;
use molt_host::{Filter, HostMailbox, Node};
use molt_tests::checker::{self, Entry, Hold, NameOp, NameRet, Nanos, Observation, Reign};
use molt_tests::{TempDir, WAIT};

use super::coord::{Member, exclusive, three, wait_for};

/// The names the clients fight over, and the lock and election they use.
const NAMES: [&str; 2] = ["n0", "n1"];
const LOCK: &str = "fault-lock";
const ELECTION: &str = "fault-election";

/// splitmix64: the test's own seeded choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Everything the clients and the nemesis saw, on one clock.
struct History {
    base: Instant,
    names: Mutex<Vec<(String, Entry<NameOp, NameRet>)>>,
    holds: Mutex<Vec<Hold>>,
    observations: Mutex<Vec<Observation>>,
    reigns: Mutex<Vec<Reign>>,
    /// Which clients run on which node (index), by model pid.
    clients: Mutex<HashMap<Pid, (u64, usize)>>,
    /// (node, from): windows in which a node's session could expire.
    exposed: Mutex<Vec<(usize, Nanos)>>,
    stop: AtomicBool,
}

impl History {
    fn now(&self) -> Nanos {
        self.base.elapsed().as_nanos() as Nanos
    }

    fn client(&self, pid: Pid, node: usize) -> u64 {
        let mut clients = self.clients.lock().unwrap();
        let id = clients.len() as u64 + 1;
        clients.entry(pid).or_insert((id, node)).0
    }

    fn model_pid(&self, pid: Pid) -> u64 {
        self.clients
            .lock()
            .unwrap()
            .get(&pid)
            .map_or(u64::MAX, |c| c.0)
    }

    fn name(&self, name: &str, entry: Entry<NameOp, NameRet>) {
        self.names.lock().unwrap().push((name.to_string(), entry));
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// A receive filter for coordination notices only.
fn coord_notices() -> Filter {
    Filter {
        tags: vec![tag::COORD],
        reference: None,
    }
}

/// What each client task starts with: its node's coordination, a mailbox
/// of its own (its pid), its id in the history, a seeded random source.
struct Client {
    coord: Coordination,
    mailbox: HostMailbox,
    pid: Pid,
    me: u64,
    history: Arc<History>,
    rng: Rng,
}

impl Client {
    fn new(
        node: &Node,
        coord: &Coordination,
        index: usize,
        history: &Arc<History>,
        seed: u64,
    ) -> Client {
        let mailbox = node.mailbox().unwrap();
        let pid = mailbox.pid();
        Client {
            coord: coord.clone(),
            me: history.client(pid, index),
            mailbox,
            pid,
            history: history.clone(),
            rng: Rng(seed),
        }
    }
}

/// Registers, unregisters and reads the names from one node until stopped.
async fn name_client(client: Client) {
    let Client {
        coord,
        mailbox,
        pid,
        me,
        history,
        mut rng,
    } = client;
    while !history.stopped() {
        let name = NAMES[rng.below(NAMES.len() as u64) as usize];
        let invoke = history.now();
        match rng.below(10) {
            0..4 => {
                let op = NameOp::Register { pid: me };
                let ret = match coord.register(name, pid).await {
                    Ok(_) => Some(NameRet::Registered),
                    Err(GlobalError::AlreadyRegistered { holder }) => {
                        Some(NameRet::AlreadyRegistered {
                            holder: history.model_pid(holder),
                        })
                    }
                    Err(_) => None,
                };
                let entry = match ret {
                    Some(ret) => Entry::ok(me, op, invoke, history.now(), ret),
                    None => {
                        // It may have committed late and then been undone
                        // (the late registration unregistered).
                        let undo = Entry::unknown(me, NameOp::Release { pid: me }, invoke);
                        history.name(name, undo);
                        Entry::unknown(me, op, invoke)
                    }
                };
                history.name(name, entry);
            }
            4..7 => {
                let op = NameOp::Unregister { pid: me };
                let entry = match coord.unregister(name, pid).await {
                    Ok(()) => Entry::ok(me, op, invoke, history.now(), NameRet::Unregistered),
                    Err(GlobalError::NotHolder { .. } | GlobalError::NotRegistered) => {
                        Entry::ok(me, op, invoke, history.now(), NameRet::NotHolder)
                    }
                    Err(_) => Entry::unknown(me, op, invoke),
                };
                history.name(name, entry);
            }
            _ => {
                // A read that failed took no effect: left out.
                if let Ok(holder) = coord.whereis_linearizable(name).await {
                    let ret = NameRet::Holder(holder.map(|p| history.model_pid(p)));
                    let entry = Entry::ok(me, NameOp::Whereis, invoke, history.now(), ret);
                    history.name(name, entry);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5 + rng.below(20))).await;
    }
    drop(mailbox);
}

fn lock_lost(message: &molt_host::Message) -> Option<u64> {
    match codec::decode::<sysmsg::Coord>(&message.payload) {
        Ok(sysmsg::Coord::LockLost { lock, token }) if lock == LOCK => Some(token),
        _ => None,
    }
}

/// Takes the lock, holds it a little (listening for `LockLost`), releases
/// it, until stopped.
async fn lock_client(client: Client) {
    let Client {
        coord,
        mut mailbox,
        pid,
        me,
        history,
        mut rng,
    } = client;
    let coord_only = coord_notices();
    while !history.stopped() {
        let requested = history.now();
        let Ok(grants) = coord
            .lock(pid, &exclusive(LOCK), Duration::from_secs(1))
            .await
        else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let acquired = history.now();
        let token = grants[0].token;
        let until = Instant::now() + Duration::from_millis(20 + rng.below(60));
        let mut lost = None;
        // Told of a loss while holding: the hold ends there. A notice of
        // an older grant's loss is stale and ignored.
        while lost.is_none() {
            let left = until.saturating_duration_since(Instant::now());
            match mailbox.recv_matching(&coord_only, left).await {
                Some(m) if lock_lost(&m) == Some(token) => lost = Some(history.now()),
                Some(_) => {}
                None => break,
            }
        }
        let released = lost.unwrap_or_else(|| history.now());
        let mut hold = Hold::exclusive(me, token, acquired, Some(released)).requested(requested);
        if let Some(at) = lost {
            // Revoked: fenced from the notice at the latest (`fence_lost`
            // moves it to the first newer grant if that came earlier).
            hold = hold.fenced_from(at);
        }
        history.holds.lock().unwrap().push(hold);
        if lost.is_none() {
            let _ = coord.unlock(LOCK, pid).await;
        }
    }
}

/// A hold that ended in `LockLost` was revoked by the service before it
/// granted the next token, and its holder hears of that later: a notice
/// takes the network's delay, and a grant's reply delayed past its
/// session's expiry reaches the holder after the revocation, the notice
/// right behind it. The fencing token is what protects a resource from
/// such a holder, so its hold counts until the first newer grant (or its
/// notice, if that came first), and still overlaps nothing older.
fn fence_lost(mut holds: Vec<Hold>) -> Vec<Hold> {
    let grants: Vec<(u64, Nanos)> = holds.iter().map(|h| (h.token, h.acquired_at)).collect();
    for hold in holds.iter_mut().filter(|h| h.fenced_after.is_some()) {
        let newer = grants
            .iter()
            .filter(|(token, _)| *token > hold.token)
            .map(|&(_, at)| at)
            .min();
        if let (Some(told), Some(newer)) = (hold.fenced_after, newer) {
            hold.fenced_after = Some(told.min(newer));
        }
    }
    holds
}

/// Stands in the election and records what it is told, standing again
/// when its candidacy is gone (its node's session expired).
async fn candidate(client: Client) {
    let Client {
        coord,
        mut mailbox,
        pid,
        me,
        history,
        ..
    } = client;
    let coord_only = coord_notices();
    let mut reign: Option<(u64, Nanos)> = None;
    let end_reign = |reign: &mut Option<(u64, Nanos)>, at: Nanos| {
        if let Some((term, from)) = reign.take() {
            let r = Reign {
                leader: me,
                term,
                from,
                until: Some(at),
            };
            history.reigns.lock().unwrap().push(r);
        }
    };
    while !history.stopped() {
        let standing = coord
            .elections()
            .iter()
            .any(|e| e.group == ELECTION && e.candidates.contains(&pid));
        if !standing {
            let _ = coord.elect(ELECTION, pid).await;
        }
        let Some(m) = mailbox
            .recv_matching(&coord_only, Duration::from_millis(300))
            .await
        else {
            continue;
        };
        let at = history.now();
        match codec::decode::<sysmsg::Coord>(&m.payload) {
            Ok(sysmsg::Coord::Elected { group, term }) if group == ELECTION => {
                end_reign(&mut reign, at);
                reign = Some((term, at));
                let o = Observation::elected(me, term, at);
                history.observations.lock().unwrap().push(o);
            }
            Ok(sysmsg::Coord::LeaderChanged {
                group,
                leader,
                term,
            }) if group == ELECTION => {
                end_reign(&mut reign, at);
                let o = Observation::leader_changed(me, history.model_pid(leader), term, at);
                history.observations.lock().unwrap().push(o);
            }
            Ok(sysmsg::Coord::LeaderLost { group, .. }) if group == ELECTION => {
                end_reign(&mut reign, at);
            }
            _ => {}
        }
    }
    let at = history.now();
    end_reign(&mut reign, at);
}

/// One fault, set on both ends of each link it names.
fn set_link(nodes: &[Member], i: usize, j: usize, faults: LinkFaults) {
    nodes[i].dist.nemesis().set(nodes[j].dist.name(), faults);
    nodes[j].dist.nemesis().set(nodes[i].dist.name(), faults);
}

/// From `from`, any node's session may expire: one cut off from the
/// leader, and one on the majority side whose renewals went to a leader
/// that was then cut off, until it learns of the new one.
fn expose_all(history: &History, from: Nanos) {
    let mut exposed = history.exposed.lock().unwrap();
    exposed.extend((0..3).map(|i| (i, from)));
}

/// Runs the seeded schedule: `rounds` faults, each followed by a heal.
async fn nemesis(nodes: &[Member], history: &History, seed: u64, rounds: usize) -> Vec<String> {
    let mut rng = Rng(seed);
    let mut log = Vec::new();
    for node in nodes {
        node.dist.nemesis().seed(rng.next());
    }
    for round in 0..rounds {
        let leader = nodes[0].coord.status().leader;
        let leader_at = nodes
            .iter()
            .position(|n| Some(n.dist.name()) == leader.as_deref());
        // Every other round that isolates one node isolates the Raft
        // leader's.
        let lone = match leader_at {
            Some(l) if round % 2 == 0 => l,
            _ => rng.below(3) as usize,
        };
        let others = [(lone + 1) % 3, (lone + 2) % 3];
        let hold = Duration::from_millis(500 + rng.below(2500));
        let from = history.now();
        let what = match rng.below(4) {
            0 => {
                for o in others {
                    set_link(nodes, lone, o, LinkFaults::CUT);
                }
                expose_all(history, from);
                format!("partition {} | others", nodes[lone].dist.name())
            }
            1 => {
                let paused = LinkFaults {
                    paused: true,
                    ..LinkFaults::default()
                };
                for o in others {
                    set_link(nodes, lone, o, paused);
                }
                expose_all(history, from);
                format!("pause {}'s links", nodes[lone].dist.name())
            }
            2 => {
                let lossy = LinkFaults {
                    drop_per_mille: 100 + rng.below(250) as u16,
                    ..LinkFaults::default()
                };
                for (i, j) in [(0, 1), (1, 2), (0, 2)] {
                    set_link(nodes, i, j, lossy);
                }
                expose_all(history, from);
                format!("drop {}‰ everywhere", lossy.drop_per_mille)
            }
            _ => {
                let slow = LinkFaults {
                    delay: Duration::from_millis(20 + rng.below(80)),
                    ..LinkFaults::default()
                };
                for (i, j) in [(0, 1), (1, 2), (0, 2)] {
                    set_link(nodes, i, j, slow);
                }
                format!("delay {:?} everywhere", slow.delay)
            }
        };
        log.push(format!("{what} for {hold:?}"));
        // The schedule itself: faults last a chosen time.
        tokio::time::sleep(hold).await;
        for n in nodes {
            n.dist.nemesis().heal_all();
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    log
}

async fn run(mode: LogMode, default_seed: u64, rounds: usize) {
    let seed = std::env::var("MOLT_NEMESIS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_seed);
    println!("nemesis seed {seed} ({mode:?})");
    let dir = TempDir::new("coord-faults");
    let nodes = three(&dir, mode).await;
    let history = Arc::new(History {
        base: Instant::now(),
        names: Mutex::default(),
        holds: Mutex::default(),
        observations: Mutex::default(),
        reigns: Mutex::default(),
        clients: Mutex::default(),
        exposed: Mutex::default(),
        stop: AtomicBool::new(false),
    });
    let mut rng = Rng(seed ^ 0x5eed);
    let mut tasks = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let client = |seed| Client::new(&n.node, &n.coord, i, &history, seed);
        tasks.push(tokio::spawn(name_client(client(rng.next()))));
        tasks.push(tokio::spawn(lock_client(client(rng.next()))));
        tasks.push(tokio::spawn(candidate(client(0))));
    }
    let schedule = nemesis(&nodes, &history, seed, rounds).await;
    for line in &schedule {
        println!("nemesis: {line}");
    }

    // Healed: the cluster comes back by itself, with one leader everyone
    // knows and a session on every node.
    wait_for("one leader all three agree on", || {
        let leaders: Vec<_> = nodes.iter().map(|n| n.coord.status().leader).collect();
        leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0])
    })
    .await;
    for n in &nodes {
        crate::coord::session_within(&n.coord, WAIT).await;
    }
    history.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        tokio::time::timeout(WAIT, t)
            .await
            .expect("clients end")
            .unwrap();
    }
    // Every node can use the group again, without a manual step (a call
    // that meets an election still under way may answer no_quorum, and one
    // made under a session the leader expired during the faults, before
    // this node heard of it, session_lost: the client asks again, as both
    // errors say, up to WAIT).
    for n in &nodes {
        let p = n.node.mailbox().unwrap();
        let name = format!("after-{}", n.dist.name());
        let deadline = Instant::now() + WAIT;
        loop {
            match n.coord.register(&name, p.pid()).await {
                Ok(_) => break,
                Err(GlobalError::NoQuorum(_) | GlobalError::SessionLost)
                    if Instant::now() < deadline => {}
                Err(e) => panic!("{name} after the heal: {e}"),
            }
        }
    }

    // A node's session may have expired in a window it was exposed in:
    // then each name its clients held was released at one unknown time.
    let mut names = history.names.lock().unwrap().clone();
    let clients = history.clients.lock().unwrap().clone();
    let registrars: std::collections::BTreeSet<u64> = names
        .iter()
        .filter_map(|(_, e)| match e.op {
            NameOp::Register { pid } => Some(pid),
            _ => None,
        })
        .collect();
    for &(node, from) in history.exposed.lock().unwrap().iter() {
        for &(id, at) in clients.values() {
            if at == node && registrars.contains(&id) {
                for name in NAMES {
                    let release = Entry::unknown(id, NameOp::Release { pid: id }, from);
                    names.push((name.to_string(), release));
                }
            }
        }
    }
    let holds = fence_lost(history.holds.lock().unwrap().clone());
    let observations = history.observations.lock().unwrap().clone();
    let reigns = history.reigns.lock().unwrap().clone();
    let ok_names = names
        .iter()
        .filter(|(_, e)| matches!(e.outcome, checker::Outcome::Ok(_)))
        .count();
    let terms: std::collections::BTreeSet<u64> = observations.iter().map(|o| o.term).collect();
    println!(
        "history: {} name ops ({ok_names} answered), {} holds, {} election observations over {} terms",
        names.len(),
        holds.len(),
        observations.len(),
        terms.len()
    );
    let mut on: Vec<_> = clients.values().collect();
    on.sort();
    println!("clients (id, node): {on:?}");
    checker::check_name_table(&names).unwrap_or_else(|v| panic!("names (seed {seed}): {v}"));
    checker::check_lock(&holds).unwrap_or_else(|v| panic!("lock (seed {seed}): {v}"));
    checker::check_elections(&observations)
        .unwrap_or_else(|v| panic!("elections (seed {seed}): {v}"));
    checker::check_reigns(&reigns).unwrap_or_else(|v| panic!("reigns (seed {seed}): {v}"));
    // The run did something worth checking.
    assert!(ok_names >= 20, "only {ok_names} name ops were answered");
    assert!(holds.len() >= 5, "only {} holds", holds.len());
    assert!(!terms.is_empty(), "no election was observed");
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_locks_and_elections_stay_correct_under_a_seeded_nemesis_in_ram_mode() {
    run(LogMode::Ram, 7, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_locks_and_elections_stay_correct_under_a_seeded_nemesis_in_disc_mode() {
    run(LogMode::Disc, 11, 5).await;
}

#[test]
fn a_revoked_hold_counts_until_the_next_grant_and_still_against_older_ones() {
    // Seen under a 21 ms delay fault: token 84's grant reached its holder
    // after the service had revoked it and granted 85, its `LockLost`
    // 28 µs behind the grant (both asked before either was granted).
    let holds = vec![
        Hold::exclusive(8, 85, 3_872_826_807, Some(3_894_301_206)).requested(3_860_000_000),
        Hold::exclusive(2, 84, 3_886_613_744, Some(3_886_642_150))
            .requested(3_850_000_000)
            .fenced_from(3_886_642_150),
    ];
    assert!(checker::check_lock(&holds).is_err(), "as the client saw it");
    assert_eq!(checker::check_lock(&fence_lost(holds)), Ok(()));
    // A revoked hold granted while an older one was still held is still
    // caught: only newer grants may overlap it.
    let holds = vec![
        Hold::exclusive(1, 10, 0, Some(100)),
        Hold::exclusive(2, 11, 50, Some(60)).fenced_from(60),
    ];
    let broken = checker::check_lock(&fence_lost(holds)).unwrap_err();
    assert_eq!(broken.rule, checker::Rule::LockOverlap);
}
