//! `counter` version 0.2.0: the next version of `examples/counter`, to load
//! over it while it runs.
//!
//! What changed: the state gains `adds`, how many `Add` messages it has
//! handled, and a new message `Stats { from }` answers with count and adds.
//! Everything version 0.1.0 understood is still understood (the new message
//! is appended to the enum, so old senders' messages decode the same).
//! `code_change` turns a 0.1.x state (`count` only) into this shape with
//! `adds: 0`.

use molt_sdk::{Behaviour, Message, Next, Pid};
use serde::{Deserialize, Serialize};

/// The counter's state in this version. The count stays first, so that
/// version 0.1.0 can take it back on a downgrade.
#[derive(Debug, Serialize, Deserialize)]
pub struct Counter {
    count: u64,
    adds: u64,
}

/// The state of version 0.1.x.
#[derive(Debug, Serialize, Deserialize)]
struct CounterV1 {
    count: u64,
}

/// What a counter understands: 0.1.0's messages, then the new one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CounterMsg {
    /// Add to the count.
    Add(u64),
    /// Send [`CounterReply::Count`] to `from`.
    Get {
        /// Who asks.
        from: Pid,
    },
    /// Panic with this text.
    Crash(String),
    /// Stop with reason `normal`.
    Stop,
    /// New in 0.2.0: send [`CounterReply::Stats`] to `from`.
    Stats {
        /// Who asks.
        from: Pid,
    },
}

/// What a counter answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CounterReply {
    /// The current count.
    Count(u64),
    /// New in 0.2.0: the count, and how many `Add` messages made it.
    Stats {
        /// The current count.
        count: u64,
        /// `Add` messages handled by this version and later ones.
        adds: u64,
    },
}

impl Behaviour for Counter {
    type Args = u64;
    type Msg = CounterMsg;

    fn init(start: u64) -> Result<Self, String> {
        Ok(Counter {
            count: start,
            adds: 0,
        })
    }

    fn handle(&mut self, msg: Message<CounterMsg>) -> Next {
        let reply = |to: Pid, r: CounterReply| {
            if let Err(e) = molt_sdk::send(to, &r) {
                molt_sdk::warn!("counter: reply to {to} failed: {e}");
            }
        };
        match msg {
            Message::Data(CounterMsg::Add(n)) => {
                self.count = self.count.saturating_add(n);
                self.adds += 1;
            }
            Message::Data(CounterMsg::Get { from }) => reply(from, CounterReply::Count(self.count)),
            Message::Data(CounterMsg::Stats { from }) => reply(
                from,
                CounterReply::Stats {
                    count: self.count,
                    adds: self.adds,
                },
            ),
            Message::Data(CounterMsg::Crash(text)) => panic!("{text}"),
            Message::Data(CounterMsg::Stop) => return Next::stop_normal(),
            other => molt_sdk::debug!("counter: ignoring {other:?}"),
        }
        Next::Continue
    }

    /// From 0.1.x: keep the count, start counting adds. From this version
    /// (a restart): the same shape.
    fn code_change(from_version: &str, state: &[u8]) -> Result<Self, String> {
        if from_version.starts_with("0.1.") {
            let old: CounterV1 = molt_sdk::codec::decode(state).map_err(|e| e.to_string())?;
            molt_sdk::info!(
                "counter: upgraded from {from_version}: count {} kept, adds start at 0",
                old.count
            );
            return Ok(Counter {
                count: old.count,
                adds: 0,
            });
        }
        molt_sdk::codec::decode(state).map_err(|e| e.to_string())
    }
}

molt_sdk::behaviour!(Counter, name = "counter");
