//! `sequencer`, for the upgrade tests: a behaviour that checks the order of
//! numbered messages from each sender, so a test can upgrade it in the
//! middle of a stream and see whether anything was lost or reordered.

use std::collections::BTreeMap;

use molt_sdk::{Behaviour, Message, Next, Pid};
use serde::{Deserialize, Serialize};

/// What a sequencer understands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeqMsg {
    /// The `n`th message (from 1) of `from`.
    Seq {
        /// The sender.
        from: Pid,
        /// Its sequence number.
        n: u64,
    },
    /// Send a [`SeqReport`] to `from`.
    Report {
        /// Who asks.
        from: Pid,
    },
    /// Send `bytes` back to `from` as an [`Echoed`].
    Echo {
        /// Who asks.
        from: Pid,
        /// Anything.
        bytes: Vec<u8>,
    },
}

/// The answer to [`SeqMsg::Echo`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Echoed(pub Vec<u8>);

/// What it has seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqReport {
    /// `Seq` messages received.
    pub received: u64,
    /// Messages whose number was not the sender's previous number plus 1.
    pub out_of_order: u64,
    /// Highest number seen per sender.
    pub last: BTreeMap<Pid, u64>,
}

/// The state: the report so far.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sequencer(SeqReport);

impl Behaviour for Sequencer {
    type Args = ();
    type Msg = SeqMsg;

    fn init(_: ()) -> Result<Self, String> {
        Ok(Sequencer(SeqReport::default()))
    }

    fn handle(&mut self, msg: Message<SeqMsg>) -> Next {
        let report = &mut self.0;
        match msg {
            Message::Data(SeqMsg::Seq { from, n }) => {
                report.received += 1;
                let last = report.last.entry(from).or_default();
                if n != *last + 1 {
                    report.out_of_order += 1;
                }
                *last = n;
            }
            Message::Data(SeqMsg::Report { from }) => {
                let _ = molt_sdk::send(from, report);
            }
            Message::Data(SeqMsg::Echo { from, bytes }) => {
                let _ = molt_sdk::send(from, &Echoed(bytes));
            }
            _ => {}
        }
        Next::Continue
    }
}

molt_sdk::behaviour!(Sequencer);
