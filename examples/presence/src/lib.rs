//! `presence`: who is online, on a conflict-free table that every node
//! keeps and writes, on both sides of a partition. Roles (`molt
//! run`-style arguments):
//!
//! - `setup`: create `presence` (last writer wins: user → where and when
//!   seen) and `visits` (a counter), kept on every node of the cluster.
//! - `online USER`: mark `USER` online on this node and count a visit.
//!   It succeeds at once on any node, cut off or not: a replica takes
//!   writes without a quorum, and the replicas converge once they hear
//!   from each other.
//! - `offline USER`: mark `USER` gone.
//! - `who`: log who is online, where, and the visits counted so far, as
//!   this node's replica holds them (said when it may lag).
//! - `watch N`: subscribe to `presence` and log the next N changes,
//!   conflicts included (two nodes marked a user at once, and one of the
//!   marks lost).

use molt_sdk::System;
use molt_sdk::table::{self, Change, Consistency, Copy, Event, Kind, Placement, Table, TableError};
use serde::{Deserialize, Serialize};

/// Where and when a user was seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// The node.
    pub node: String,
    /// When, in ms since the Unix epoch (the node's clock).
    pub at_ms: u64,
}

/// Who is online.
pub static PRESENCE: Table<String, Seen> = Table::new("presence");
/// Visits counted, under the key `"all"`.
pub static VISITS: Table<String, i64> = Table::new("visits");

fn run(args: Vec<String>) -> Result<(), String> {
    let arg = |i: usize| args.get(i).map(String::as_str);
    match arg(0) {
        Some("setup") => setup(),
        Some("online") => online(arg(1).ok_or("online takes USER")?),
        Some("offline") => PRESENCE
            .delete(&arg(1).ok_or("offline takes USER")?.to_string())
            .map(|_| ())
            .map_err(|e| format!("offline: {e}")),
        Some("who") => who(),
        Some("watch") => watch(
            arg(1)
                .map_or(Ok(1), str::parse)
                .map_err(|_| "watch takes a count")?,
        ),
        other => Err(format!(
            "unknown role {other:?}: setup, online USER, offline USER, who or watch N"
        )),
    }
}

/// A table that exists already is fine: every node may run `setup`.
fn created(result: Result<(), table::Error>, what: &str) -> Result<(), String> {
    match result {
        Ok(()) => Ok(()),
        Err(table::Error::Table(TableError::Exists(_))) => Ok(()),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

fn setup() -> Result<(), String> {
    let everywhere = || Placement::everywhere(Copy::Ram);
    created(PRESENCE.create_with(Kind::Lww, everywhere()), "presence")?;
    created(VISITS.create_with(Kind::Counter, everywhere()), "visits")?;
    molt_sdk::info!("presence: tables ready on every node");
    Ok(())
}

fn online(user: &str) -> Result<(), String> {
    let seen = Seen {
        node: molt_sdk::node(),
        at_ms: molt_sdk::system_time().as_millis() as u64,
    };
    PRESENCE
        .write(&user.to_string(), &seen)
        .map_err(|e| format!("online: {e}"))?;
    VISITS
        .add(&"all".to_string(), 1)
        .map_err(|e| format!("visits: {e}"))?;
    molt_sdk::info!("presence: {user} online on {}", seen.node);
    Ok(())
}

fn who() -> Result<(), String> {
    let online = PRESENCE
        .range(&String::new(), None, 0)
        .map_err(|e| format!("who: {e}"))?;
    let stale = PRESENCE
        .read_rows(&String::new(), Consistency::Dirty)
        .map_err(|e| format!("who: {e}"))?
        .stale;
    for (user, seen) in &online {
        molt_sdk::info!("presence: {user} on {}", seen.node);
    }
    let visits = VISITS
        .read(&"all".to_string())
        .map_err(|e| format!("visits: {e}"))?
        .unwrap_or(0);
    molt_sdk::info!(
        "presence: {} online, {visits} visits{}",
        online.len(),
        if stale { " (this replica may lag)" } else { "" }
    );
    Ok(())
}

fn watch(n: u32) -> Result<(), String> {
    PRESENCE
        .subscribe()
        .map_err(|e| format!("subscribe: {e}"))?;
    let mut seen = 0;
    while seen < n {
        let envelope = molt_sdk::receive();
        let Some(System::Table(Event::Committed { changes, .. })) = envelope.system() else {
            continue;
        };
        for change in changes {
            match change {
                Change::Put { key, .. } => {
                    let user: String = table::event_key(&key).map_err(|e| e.to_string())?;
                    molt_sdk::info!("presence: {user} seen");
                }
                Change::Delete { key } => {
                    let user: String = table::event_key(&key).map_err(|e| e.to_string())?;
                    molt_sdk::info!("presence: {user} gone");
                }
                Change::Conflict { key, kept, lost } => {
                    let user: String = table::event_key(&key).map_err(|e| e.to_string())?;
                    let node = |v: &Option<Vec<u8>>| match v {
                        Some(v) => table::event_value::<Seen>(v)
                            .map(|s| s.node)
                            .unwrap_or_default(),
                        None => "gone".into(),
                    };
                    molt_sdk::info!(
                        "presence: {user} was marked on two sides at once: kept {}, lost {}",
                        node(&kept),
                        node(&lost)
                    );
                }
                Change::DeleteValue { .. } => {}
            }
            seen += 1;
        }
    }
    Ok(())
}

molt_sdk::main!(run);
