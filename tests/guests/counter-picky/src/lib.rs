//! `counter` version 0.3.0-picky, for the upgrade tests: a counter whose
//! `code_change` refuses some states, so a test can watch one process stay
//! on its old version while the others move on.
//!
//! It understands `counter`'s messages (`counter::CounterMsg`). Its
//! `code_change` keeps the count of any earlier version (the count comes
//! first in every version's state) but refuses a count of 13 with an error,
//! panics on a count of 666 and loops for ever on a count of 999. Its `Get` answers the count plus 1000, so
//! a test can tell which version answered.

use counter::{CounterMsg, CounterReply};
use molt_sdk::{Behaviour, Message, Next};
use serde::{Deserialize, Serialize};

/// The state: the count.
#[derive(Debug, Serialize, Deserialize)]
pub struct Picky {
    count: u64,
}

impl Behaviour for Picky {
    type Args = u64;
    type Msg = CounterMsg;

    fn init(start: u64) -> Result<Self, String> {
        Ok(Picky { count: start })
    }

    fn handle(&mut self, msg: Message<CounterMsg>) -> Next {
        match msg {
            Message::Data(CounterMsg::Add(n)) => self.count = self.count.saturating_add(n),
            Message::Data(CounterMsg::Get { from }) => {
                let _ = molt_sdk::send(from, &CounterReply::Count(self.count + 1000));
            }
            Message::Data(CounterMsg::Crash(text)) => panic!("{text}"),
            Message::Data(CounterMsg::Stop) => return Next::stop_normal(),
            _ => {}
        }
        Next::Continue
    }

    fn code_change(from_version: &str, state: &[u8]) -> Result<Self, String> {
        let (count, _) = molt_sdk::codec::decode_prefix::<u64>(state).map_err(|e| e.to_string())?;
        match count {
            13 => Err(format!("count 13 from {from_version} is unlucky")),
            666 => panic!("count 666 from {from_version}"),
            999 => loop {
                std::hint::black_box(count);
            },
            _ => Ok(Picky { count }),
        }
    }
}

molt_sdk::behaviour!(Picky, name = "counter");
