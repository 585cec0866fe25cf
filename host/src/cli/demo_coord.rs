//! The cluster coordination part of `molt demo`: three local nodes, a
//! cluster name, a lock contended from two nodes, transactions on a
//! replicated table that go on through the loss of its leader's node, and
//! a leader's failover.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use molt_abi::{Ref, codec, tag};
use molt_host::NodeConfig;
use molt_host::cluster::{GlobalError, LogMode};

use crate::demo_wire::{Cart, STORE, StoreMsg, StoreReply, cart_key};
use crate::local_cluster::{stop, stop_member, three};

fn args(a: &[&str]) -> Vec<u8> {
    codec::encode(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        if Instant::now() > deadline {
            bail!("the coordination demo waited 20 s for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The first record of a `String` key of `table`, read linearizably on
/// `node`, decoded (none if the key has none).
async fn linearizable<T: serde::de::DeserializeOwned>(
    node: &molt_host::Node,
    table: &str,
    key: &str,
) -> Result<Option<T>> {
    use molt_abi::table::{Consistency, Reply, Request};
    let request = Request::Get {
        table: table.into(),
        key: cart_key(key),
        consistency: Consistency::Linearizable,
    };
    match node.table(request).await {
        Reply::Rows(rows) => Ok(rows
            .rows
            .first()
            .and_then(|r| r.records.first())
            .and_then(|r| codec::decode(&r.value).ok())),
        other => bail!("reading {key} of {table}: {other:?}"),
    }
}

/// Shoppers on each node fill their carts in a replicated table, one
/// transaction per add; the node that leads the table's group is cut off
/// halfway; the others' shoppers go on, and every add is there exactly
/// once.
async fn tables(config: &NodeConfig, guests: &Path) -> Result<()> {
    use molt_abi::table::{Consistency, Reply, Request};
    const ADDS: u32 = 200;
    eprintln!("\n== three nodes: a replicated table, transactions through the loss of a node");
    let cart = guests.join("cart.wasm");
    let mut members = three(
        config,
        "shop",
        &std::env::temp_dir(),
        LogMode::Ram,
        Some(&cart),
    )
    .await?;
    let mut ctl = members[0].node.mailbox()?;
    let stock = 1_000;
    let (_, made) = ctl.spawn(
        "cart",
        args(&["replicate", &stock.to_string()]),
        false,
        true,
    )?;
    let why = ctl
        .recv_down(made.expect("monitored"), Duration::from_secs(20))
        .await;
    if why.as_deref() != Some("normal") {
        bail!("creating the replicated carts ended with {why:?}");
    }
    // Every table's group on three nodes before a node is lost: a group
    // whose only copy was on the lost node would wait for it (as an
    // mnesia table waits for the node with its only loaded copy).
    until("the three tables' groups on three nodes", || {
        members.iter().all(|m| {
            ["carts", "stock", "orders"].iter().all(|table| {
                m.node
                    .tables()
                    .replica_status(table)
                    .is_some_and(|s| s.voters.len() == 3 && s.leader.is_some())
            })
        })
    })
    .await?;
    let leader = members[0]
        .node
        .tables()
        .replica_status("carts")
        .and_then(|s| s.leader)
        .expect("a leader");
    eprintln!("table `carts`, replicated on all three nodes; its group's leader is {leader}");
    let users = ["ann", "bob", "cat"];
    let mut shoppers = Vec::new();
    for (m, user) in members.iter().zip(users) {
        let mut mailbox = m.node.mailbox()?;
        let n = ADDS.to_string();
        let role = args(&["shop-exactly", user, "tea", &n]);
        let (_, watch) = mailbox.spawn("cart", role, false, true)?;
        shoppers.push((
            m.dist.name().to_string(),
            user,
            mailbox,
            watch.expect("monitored"),
        ));
    }
    // Halfway through (by the leader's shopper's cart), cut the leader's
    // node off.
    let at = members
        .iter()
        .position(|m| m.dist.name() == leader)
        .expect("the leader is a member");
    let read = async |m: &crate::local_cluster::Member, user: &str| -> Option<Cart> {
        let request = Request::Get {
            table: "carts".into(),
            key: cart_key(user),
            consistency: Consistency::Dirty,
        };
        match m.node.table(request).await {
            Reply::Rows(rows) => rows
                .rows
                .first()
                .and_then(|r| r.records.first())
                .and_then(|r| codec::decode(&r.value).ok()),
            _ => None,
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while read(&members[at], users[at])
        .await
        .is_none_or(|c| c.done < ADDS / 2)
    {
        if Instant::now() > deadline {
            bail!("the shoppers made no progress in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gone = members.remove(at);
    let cut = Instant::now();
    gone.dist.shutdown();
    eprintln!("cut off {leader}, the carts' leader, with its shopper halfway");
    let mut lost_shopper = None;
    for (node, user, mut mailbox, watch) in shoppers {
        if node == leader {
            lost_shopper = Some(user);
            continue;
        }
        let why = mailbox.recv_down(watch, Duration::from_secs(60)).await;
        if why.as_deref() != Some("normal") {
            bail!("{user}'s shopper on {node} ended with {why:?}");
        }
    }
    let new_leader = members[0]
        .node
        .tables()
        .replica_status("carts")
        .and_then(|s| s.leader)
        .unwrap_or_default();
    eprintln!(
        "the other shoppers finished {} ms after the cut; the carts' new leader is {new_leader}",
        cut.elapsed().as_millis()
    );
    for user in users {
        let cart: Cart = linearizable(&members[0].node, "carts", user)
            .await?
            .unwrap_or_default();
        let tea = cart
            .items
            .iter()
            .find(|(i, _)| i == "tea")
            .map_or(0, |(_, n)| *n);
        if tea != cart.done {
            bail!("{user}'s cart holds {tea} tea after {} adds", cart.done);
        }
        if Some(user) == lost_shopper {
            eprintln!("{user}'s cart (its shopper was on the lost node): {tea} tea, each add once");
        } else if tea != ADDS {
            bail!("{user}'s cart holds {tea} tea, not {ADDS}");
        } else {
            eprintln!("{user}'s cart: {tea} tea from {ADDS} transactions, each add exactly once");
        }
    }
    // A checkout on a node that is left: one transaction over the three
    // replicated tables (three groups), after the loss.
    let buyer = users
        .into_iter()
        .find(|u| Some(*u) != lost_shopper)
        .expect("a shopper on a node that is left");
    let mut mailbox = members[0].node.mailbox()?;
    let (_, watch) = mailbox.spawn("cart", args(&["checkout", buyer]), false, true)?;
    let why = mailbox
        .recv_down(watch.expect("monitored"), Duration::from_secs(60))
        .await;
    if why.as_deref() != Some("normal") {
        bail!("{buyer}'s checkout ended with {why:?}");
    }
    // Items are keyed as carts are (a `String` key).
    let left: u32 = linearizable(&members[1].node, "stock", "tea")
        .await?
        .unwrap_or_default();
    let emptied = linearizable::<Cart>(&members[1].node, "carts", buyer)
        .await?
        .is_none();
    if left != stock - ADDS || !emptied {
        bail!("after {buyer}'s checkout: {left} tea in stock, cart emptied: {emptied}");
    }
    eprintln!(
        "{buyer} checked out on {}: one transaction over carts, stock and orders (three groups); {left} tea left in stock",
        members[0].dist.name()
    );
    drop(ctl);
    stop_member(gone).await;
    stop(members).await;
    Ok(())
}

pub async fn run(config: NodeConfig, guests: &Path) -> Result<()> {
    eprintln!("\n== three nodes: a cluster name, a contended lock, a failover");
    // In memory: the demo leaves nothing on disk.
    let singleton = guests.join("singleton.wasm");
    let mut members = three(
        &config,
        "demo",
        &std::env::temp_dir(),
        LogMode::Ram,
        Some(&singleton),
    )
    .await?;
    let status = members[0].coord.status();
    eprintln!(
        "cluster {} with 3 voters, leader {}",
        status.cluster.map(|c| c.to_string()).unwrap_or_default(),
        status.leader.unwrap_or_default()
    );

    // A cluster name, compare-and-set.
    let mut ctl = members[2].node.mailbox()?;
    ctl.spawn("singleton", args(&["store"]), false, false)?;
    until("the store's name", || {
        members.iter().all(|m| m.coord.whereis(STORE).is_some())
    })
    .await?;
    let store = members[0].coord.whereis(STORE).expect("registered");
    eprintln!("`counter-store` is {store} on demo-c, as every node sees it");
    let other = members[0].node.mailbox()?;
    match members[0].coord.register(STORE, other.pid()).await {
        Err(GlobalError::AlreadyRegistered { holder }) => {
            eprintln!("registering it again from demo-a: refused, already registered by {holder}")
        }
        other => bail!("a second registration should be refused, got {other:?}"),
    }

    // A lock contended from two nodes, guarding the store's counter.
    let started = Instant::now();
    let mut incrs = Vec::new();
    for m in &members[..2] {
        let mut mailbox = m.node.mailbox()?;
        let (_, monitor) = mailbox.spawn("singleton", args(&["incr", "50"]), false, true)?;
        incrs.push((mailbox, monitor.expect("monitored")));
    }
    for (mailbox, monitor) in &mut incrs {
        let why = mailbox.recv_down(*monitor, Duration::from_secs(60)).await;
        if why.as_deref() != Some("normal") {
            bail!("an incrementer ended with {why:?}");
        }
    }
    ctl.send(
        store,
        tag::DATA,
        Ref::NONE,
        codec::encode(&StoreMsg::Get { from: ctl.pid() }),
    )?;
    let reply = ctl
        .recv(Duration::from_secs(5))
        .await
        .context("the store's answer")?;
    let value: StoreReply = codec::decode(&reply.payload)?;
    eprintln!(
        "50 + 50 increments under the lock `counter` from demo-a and demo-b in {} ms: counter = {}",
        started.elapsed().as_millis(),
        match value {
            StoreReply::Value(v) => v,
            StoreReply::Stale { .. } => 0,
        }
    );

    // An elected singleton, and its failover.
    let mut keep = Vec::new();
    for m in &members {
        let mut mailbox = m.node.mailbox()?;
        mailbox.spawn("singleton", args(&["singleton"]), false, false)?;
        keep.push(mailbox);
    }
    until("three candidates", || {
        members[0]
            .coord
            .elections()
            .first()
            .is_some_and(|e| e.candidates.len() == 3)
    })
    .await?;
    let (leader, term) = members[0].coord.leader("singleton").expect("a leader");
    let at = members
        .iter()
        .position(|m| m.node.is_local(leader))
        .expect("a member's process");
    eprintln!(
        "singleton: {leader} on {} leads, term {term}; cutting that node off",
        members[at].dist.name()
    );
    let gone = members.remove(at);
    let cut = Instant::now();
    gone.dist.shutdown();
    until("a new singleton leader", || {
        members[0]
            .coord
            .leader("singleton")
            .is_some_and(|(pid, t)| pid != leader && t > term)
    })
    .await?;
    let (now, new_term) = members[0].coord.leader("singleton").expect("a leader");
    let on = members
        .iter()
        .find(|m| m.node.is_local(now))
        .map_or("?", |m| m.dist.name());
    eprintln!(
        "singleton: {now} on {on} leads, term {new_term}, {} ms later (once the lost node's session expired)",
        cut.elapsed().as_millis()
    );
    drop((keep, ctl, other, incrs));
    stop_member(gone).await;
    stop(members).await;
    tables(&config, guests).await
}
