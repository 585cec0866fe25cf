//! The cluster coordination part of `molt demo`: three local nodes, a
//! cluster name, a lock contended from two nodes, and a leader's failover.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use molt_abi::{Ref, codec, tag};
use molt_host::NodeConfig;
use molt_host::cluster::{GlobalError, LogMode};

use crate::demo_wire::{STORE, StoreMsg, StoreReply};
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
    Ok(())
}
