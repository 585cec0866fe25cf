//! `ping-pong`: a raw process that times message round trips between two
//! processes of this same module.

use molt_sdk::Pid;
use serde::{Deserialize, Serialize};

/// This module's name, for spawning the ponger.
const MODULE: &str = "ping-pong";

/// Init arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PingPongArgs {
    /// Spawn a ponger and do `rounds` round trips with it.
    Main {
        /// How many round trips.
        rounds: u64,
    },
    /// Answer every `Ping` with a `Pong`, for ever.
    Ponger,
}

/// The messages exchanged.
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

fn run(args: PingPongArgs) -> Result<(), String> {
    match args {
        PingPongArgs::Main { rounds } => main(rounds),
        PingPongArgs::Ponger => ponger(),
    }
}

fn main(rounds: u64) -> Result<(), String> {
    let me = molt_sdk::self_pid();
    let ponger = molt_sdk::spawn_link(MODULE, &PingPongArgs::Ponger)
        .map_err(|e| format!("spawn ponger: {e}"))?;
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
