//! Write molt processes in Rust: behaviours, raw processes, typed messages,
//! links and monitors, on one node or across a cluster.
//!
//! Guests are built for `wasm32-unknown-unknown` and run by a molt host. On
//! other targets the crate compiles (so guests can be linted and unit-tested
//! natively) but every host call panics.
//!
//! Messages are bytes plus a `u32` tag; typed messages use tag
//! `molt_abi::tag::DATA` and are encoded by [`codec`] (serde + bincode).
//!
//! # A behaviour
//!
//! The host calls the handler once per message; the state lives between
//! calls and moves to a new version on upgrade.
//!
//! ```no_run
//! use molt_sdk::{Behaviour, Message, Next, Pid};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct Counter { count: u64 }
//!
//! #[derive(Serialize, Deserialize)]
//! pub enum CounterMsg { Add(u64), Get { from: Pid } }
//!
//! impl Behaviour for Counter {
//!     type Args = u64;
//!     type Msg = CounterMsg;
//!
//!     fn init(start: u64) -> Result<Self, String> {
//!         Ok(Counter { count: start })
//!     }
//!
//!     fn handle(&mut self, msg: Message<CounterMsg>) -> Next {
//!         match msg {
//!             Message::Data(CounterMsg::Add(n)) => self.count += n,
//!             Message::Data(CounterMsg::Get { from }) => {
//!                 let _ = molt_sdk::send(from, &self.count);
//!             }
//!             _ => {}
//!         }
//!         Next::Continue
//!     }
//! }
//!
//! molt_sdk::behaviour!(Counter);
//! ```
//!
//! # A raw process
//!
//! An entry function with blocking receives; returning exits `normal`.
//!
//! ```no_run
//! fn run(rounds: u64) {
//!     let me = molt_sdk::self_pid();
//!     for i in 0..rounds {
//!         molt_sdk::send(me, &i).unwrap();
//!         let got: u64 = molt_sdk::recv().unwrap();
//!         molt_sdk::info!("got {got}");
//!     }
//! }
//!
//! molt_sdk::main!(run);
//! ```

#![deny(missing_docs)]

pub mod behaviour;
pub mod codec;
mod entry;
mod error;
pub mod log;
mod node;
mod process;
pub mod receive;
mod registry;
#[doc(hidden)]
pub mod section;
mod send;
#[doc(hidden)]
pub mod sys;
mod time;

pub use behaviour::{Behaviour, Message, Next};
pub use codec::DecodeError;
pub use entry::MainResult;
pub use error::Error;
pub use node::{
    monitor_node, node, nodes, ping, send_named_on, send_named_on_raw, spawn_link_on,
    spawn_monitor_on, spawn_on, spawn_on_bytes,
};
pub use process::{
    Pid, Ref, demonitor, exit, exit_self, is_alive, link, monitor, self_pid, spawn, spawn_bytes,
    spawn_link, spawn_monitor, trap_exit, unlink,
};
pub use receive::{
    Envelope, Filter, System, receive, receive_matching, receive_timeout, recv, recv_timeout,
};
pub use registry::{register, unregister, whereis};
pub use send::{send, send_named, send_named_raw, send_raw, send_tagged};
pub use time::{
    cancel_timer, make_ref, monotonic_time, random_bytes, send_after, send_after_raw, system_time,
};

/// The ABI this SDK implements (tags, status codes, limits).
pub use molt_abi as abi;

/// Items the export macros use; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::behaviour;
    pub use crate::entry::run_main;
    pub use serde;
}
