//! `ping-pong`: a raw process that times message round trips between two
//! processes of this same module.

use molt_sdk::Pid;
use serde::{Deserialize, Serialize};

/// This module's name, for spawning the ponger.
const MODULE: &str = "ping-pong";

/// What the pinger and the ponger say to each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PingPongMsg {
    /// Asks for a `Pong` to `from`.
    Ping {
        /// Who to answer.
        from: Pid,
    },
    /// The answer.
    Pong,
}

/// The argument that makes a process the ponger.
pub const PONGER: &str = "ponger";
/// Round trips when none are given.
pub const ROUNDS_DEFAULT: u64 = 10_000;

/// The entry takes command-line style arguments, so `molt run
/// ping_pong.wasm 100000` works: `[rounds]` plays the pinger (10,000 rounds
/// without one); `["ponger"]` is the ponger it spawns.
fn run(args: Vec<String>) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some(PONGER) => ponger(),
        Some(n) => main(
            n.parse()
                .map_err(|_| format!("rounds must be a number, not {n:?}"))?,
        ),
        None => main(ROUNDS_DEFAULT),
    }
}

fn main(rounds: u64) -> Result<(), String> {
    let me = molt_sdk::self_pid();
    let ponger =
        molt_sdk::spawn_link(MODULE, &vec![PONGER]).map_err(|e| format!("spawn ponger: {e}"))?;
    let start = molt_sdk::monotonic_time();
    for _ in 0..rounds {
        molt_sdk::send(ponger, &PingPongMsg::Ping { from: me })
            .map_err(|e| format!("ping: {e}"))?;
        match molt_sdk::recv::<PingPongMsg>() {
            Ok(PingPongMsg::Pong) => {}
            other => return Err(format!("expected Pong, got {other:?}")),
        }
    }
    let micros = molt_sdk::monotonic_time().saturating_sub(start).as_micros();
    molt_sdk::info!("ping-pong: {rounds} round trips in {micros} µs");
    // The ponger is linked: `kill` it so it does not outlive us.
    let _ = molt_sdk::exit(ponger, molt_sdk::abi::reason::KILL);
    Ok(())
}

fn ponger() -> Result<(), String> {
    loop {
        match molt_sdk::recv::<PingPongMsg>() {
            Ok(PingPongMsg::Ping { from }) => {
                molt_sdk::send(from, &PingPongMsg::Pong).map_err(|e| format!("pong: {e}"))?;
            }
            other => molt_sdk::warn!("ponger: unexpected {other:?}"),
        }
    }
}

molt_sdk::main!(run);
