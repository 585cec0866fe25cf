//! `singleton`: cluster coordination from a guest, three roles of one
//! module (`molt run`-style arguments):
//!
//! - `singleton`: stands in the election `singleton`; of all the processes
//!   doing so on every node of the cluster exactly one leads at a time,
//!   and when its node dies the next candidate takes over (it is told
//!   `Elected`). The leader does the singleton's work: here, it logs a
//!   line each second with its term.
//! - `store`: a counter registered under the cluster name `counter-store`,
//!   which refuses an increment whose fencing token is older than one it
//!   has seen (a holder that lost its lock without knowing it).
//! - `incr N`: adds 1 to the store N times, each under the cluster lock
//!   `counter`, passing the lock's token; then logs the store's value.

use std::time::Duration;

use molt_sdk::election;
use molt_sdk::global::{self, Mode};
use molt_sdk::{Pid, System};
use serde::{Deserialize, Serialize};

/// The election the singletons stand in.
pub const ELECTION: &str = "singleton";
/// The counter store's cluster name.
pub const STORE: &str = "counter-store";
/// The lock that guards the counter.
pub const LOCK: &str = "counter";

/// What the store is asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreMsg {
    /// Add one, as the holder of the lock with `token`; answered with
    /// `StoreReply`.
    Add {
        /// Who to answer.
        from: Pid,
        /// The fencing token of the caller's grant.
        token: u64,
    },
    /// The value, answered with `StoreReply::Value`.
    Get {
        /// Who to answer.
        from: Pid,
    },
}

/// What the store answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreReply {
    /// The value now.
    Value(u64),
    /// The token is older than one already used: refused.
    Stale {
        /// The newest token seen.
        newest: u64,
    },
}

fn run(args: Vec<String>) -> Result<(), String> {
    match args.first().map(String::as_str) {
        None | Some("singleton") => singleton(),
        Some("store") => store(),
        Some("incr") => {
            let n = args
                .get(1)
                .map_or(Ok(10), |n| n.parse::<u64>())
                .map_err(|_| "incr takes a count".to_string())?;
            incr(n)
        }
        Some(other) => Err(format!(
            "unknown role {other:?}: singleton, store or incr N"
        )),
    }
}

fn singleton() -> Result<(), String> {
    let (leader, term) = election::stand(ELECTION).map_err(|e| format!("stand: {e}"))?;
    let mut leading = (leader == molt_sdk::self_pid()).then_some(term);
    loop {
        if let Some(term) = leading {
            molt_sdk::info!("singleton: leading, term {term}, on {}", molt_sdk::node());
        }
        let Some(envelope) = molt_sdk::receive_timeout(Duration::from_secs(1)) else {
            continue;
        };
        match envelope.system() {
            Some(System::Coord(election::Notice::Elected { term, .. })) => leading = Some(term),
            Some(System::Coord(election::Notice::LeaderChanged { leader, term, .. })) => {
                leading = None;
                molt_sdk::info!("singleton: {leader} leads, term {term}");
            }
            Some(System::Coord(election::Notice::LeaderLost { term, .. })) => {
                // Stop the singleton's work at once: another may lead soon.
                leading = None;
                molt_sdk::warn!("singleton: lost the lead of term {term}");
            }
            _ => {}
        }
    }
}

fn store() -> Result<(), String> {
    match global::register(STORE, molt_sdk::self_pid()).map_err(|e| format!("register: {e}"))? {
        global::Registered::Yes => {}
        global::Registered::Taken(holder) => return Err(format!("{STORE} is held by {holder}")),
    }
    let (mut value, mut newest) = (0u64, 0u64);
    loop {
        match molt_sdk::recv::<StoreMsg>() {
            Ok(StoreMsg::Add { from, token }) => {
                let reply = if token < newest {
                    StoreReply::Stale { newest }
                } else {
                    newest = token;
                    value += 1;
                    StoreReply::Value(value)
                };
                let _ = molt_sdk::send(from, &reply);
            }
            Ok(StoreMsg::Get { from }) => {
                let _ = molt_sdk::send(from, &StoreReply::Value(value));
            }
            Err(e) => molt_sdk::warn!("store: {e}"),
        }
    }
}

fn incr(n: u64) -> Result<(), String> {
    let me = molt_sdk::self_pid();
    let mut last = 0;
    for _ in 0..n {
        let reply = global::trans(
            &[(LOCK, Mode::Exclusive)],
            Duration::from_secs(30),
            |tokens| {
                global::send(
                    STORE,
                    &StoreMsg::Add {
                        from: me,
                        token: tokens[0],
                    },
                )
                .map_err(|e| format!("send to {STORE}: {e}"))?;
                molt_sdk::recv::<StoreReply>().map_err(|e| format!("store reply: {e}"))
            },
        )
        .map_err(|e| format!("lock {LOCK}: {e}"))??;
        match reply {
            StoreReply::Value(v) => last = v,
            StoreReply::Stale { newest } => {
                return Err(format!("refused as stale (newest {newest})"));
            }
        }
    }
    molt_sdk::info!("incr: {n} done, the counter was {last} after the last");
    Ok(())
}

molt_sdk::main!(run);
