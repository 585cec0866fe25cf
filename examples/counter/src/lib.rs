//! `counter`: a behaviour holding a number, shown by the crash demo.
//!
//! Init arguments: the start value (`u64`). Messages: [`CounterMsg`];
//! replies: [`CounterReply`]. The message types are public so other guests
//! (the crash demo) can depend on this crate for them.

use molt_sdk::{Behaviour, Message, Next, Pid};
use serde::{Deserialize, Serialize};

/// The counter's state.
#[derive(Debug, Serialize, Deserialize)]
pub struct Counter {
    count: u64,
}

/// What a counter understands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CounterMsg {
    /// Add to the count.
    Add(u64),
    /// Send [`CounterReply::Count`] to `from`.
    Get {
        /// Who asks.
        from: Pid,
    },
    /// Panic with this text (to show a crash caught by a link).
    Crash(String),
    /// Stop with reason `normal`.
    Stop,
}

/// What a counter answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CounterReply {
    /// The current count.
    Count(u64),
}

impl Behaviour for Counter {
    type Args = u64;
    type Msg = CounterMsg;

    fn init(start: u64) -> Result<Self, String> {
        molt_sdk::info!("counter {} starts at {start}", molt_sdk::self_pid());
        Ok(Counter { count: start })
    }

    fn handle(&mut self, msg: Message<CounterMsg>) -> Next {
        match msg {
            Message::Data(CounterMsg::Add(n)) => self.count = self.count.saturating_add(n),
            Message::Data(CounterMsg::Get { from }) => {
                if let Err(e) = molt_sdk::send(from, &CounterReply::Count(self.count)) {
                    molt_sdk::warn!("counter: reply to {from} failed: {e}");
                }
            }
            Message::Data(CounterMsg::Crash(text)) => panic!("{text}"),
            Message::Data(CounterMsg::Stop) => return Next::stop_normal(),
            other => molt_sdk::debug!("counter: ignoring {other:?}"),
        }
        Next::Continue
    }

    /// The state of this version, or of a later one (a downgrade): later
    /// versions keep the count first and add fields after it, which this
    /// version drops.
    fn code_change(from_version: &str, state: &[u8]) -> Result<Self, String> {
        let (counter, used) =
            molt_sdk::codec::decode_prefix::<Counter>(state).map_err(|e| e.to_string())?;
        if used < state.len() {
            molt_sdk::info!(
                "counter: state of version {from_version} taken back to {}: count {} kept",
                env!("CARGO_PKG_VERSION"),
                counter.count
            );
        }
        Ok(counter)
    }
}

#[cfg(not(feature = "types-only"))]
molt_sdk::behaviour!(Counter);

// Cargo unifies features across the packages one invocation selects, so
// building `counter` together with a `types-only` dependent would produce a
// counter.wasm without exports. Refuse that instead of shipping it.
#[cfg(all(feature = "types-only", target_arch = "wasm32"))]
const _: () = assert!(
    option_env!("CARGO_PRIMARY_PACKAGE").is_none(),
    "counter was built with feature `types-only` (a dependent asked for it); build the counter guest in its own cargo invocation"
);
