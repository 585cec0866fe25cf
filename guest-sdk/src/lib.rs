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
//!
//! # Servers and tasks (OTP-style)
//!
//! [`server`](mod@server) is gen_server: a [`server::Server`] has typed calls (request
//! and reply), casts and info messages, may keep a caller and reply later
//! (a deferred reply), and may stop with a reason after `terminate`. It
//! runs as a behaviour, so its state (kept callers included) moves to a
//! new version on a hot upgrade. [`server::call`] monitors the callee and
//! waits with a timeout: a callee that is dead, crashes or whose node goes
//! away gives [`server::CallError::Down`], never a hang.
//!
//! ```no_run
//! use molt_sdk::server::{self, CallResult, Caller, Never, Server};
//! use molt_sdk::{Message, Next};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct Bank { balance: u64 }
//!
//! #[derive(Serialize, Deserialize)]
//! pub enum BankCall { Balance, Withdraw(u64) }
//!
//! impl Server for Bank {
//!     type Args = u64;
//!     type Call = BankCall;
//!     type Reply = Result<u64, String>;
//!     type Cast = u64; // deposit
//!     type Info = Never;
//!
//!     fn init(balance: u64) -> Result<Self, String> {
//!         Ok(Bank { balance })
//!     }
//!
//!     fn handle_call(&mut self, req: BankCall, _from: Caller<Self::Reply>) -> CallResult<Self::Reply> {
//!         CallResult::Reply(match req {
//!             BankCall::Balance => Ok(self.balance),
//!             BankCall::Withdraw(n) if n <= self.balance => {
//!                 self.balance -= n;
//!                 Ok(self.balance)
//!             }
//!             BankCall::Withdraw(_) => Err("insufficient funds".into()),
//!         })
//!     }
//!
//!     fn handle_cast(&mut self, deposit: u64) -> Next {
//!         self.balance += deposit;
//!         Next::Continue
//!     }
//! }
//!
//! molt_sdk::server!(Bank);
//!
//! // A client, in another process:
//! # fn client(bank: molt_sdk::Pid) {
//! server::cast::<Bank>(bank, &100).unwrap();
//! let left = server::call::<Bank>(bank, &BankCall::Withdraw(30), server::DEFAULT_TIMEOUT);
//! # }
//! ```
//!
//! [`task`] runs a computation in a process of its own (a module exported
//! with [`task_main!`]) and waits for its result with a timeout; a task
//! that fails gives [`task::TaskError::Failed`] at the wait, one that
//! times out is killed.
//!
//! ```no_run
//! use std::time::Duration;
//! let task = molt_sdk::task::start::<_, u64>("squarer", &12u64).unwrap();
//! let square = task.wait(Duration::from_secs(1));
//! ```
//!
//! # Supervisors and process groups
//!
//! A [`supervisor`](mod@supervisor) module says in its `init` what to run and how to
//! restart it (one for one, one for all, rest for one, or dynamic children
//! of one spec; permanent, transient or temporary children; a restart
//! intensity past which it gives up with `shutdown`); supervisors nest into
//! trees, and [`supervisor::run`] in a raw process's main is an
//! application's entry.
//!
//! ```no_run
//! use molt_sdk::supervisor::{ChildSpec, Flags, Spec, Supervisor};
//!
//! pub struct AppSup;
//!
//! impl Supervisor for AppSup {
//!     type Args = ();
//!     fn init(_: ()) -> Result<Spec, String> {
//!         Ok(Spec {
//!             flags: Flags::default(),
//!             children: vec![ChildSpec::worker("bank", "bank", &100u64)],
//!         })
//!     }
//! }
//!
//! molt_sdk::supervisor!(AppSup);
//! ```
//!
//! [`pg`] keeps named groups of processes across the cluster (Erlang's
//! `pg`): `pg::join("jobs", "workers")` in each worker, and
//! `pg::members("jobs", "workers")` anywhere.

#![deny(missing_docs)]

#[cfg(all(target_arch = "wasm32", feature = "allocator"))]
pub mod alloc;
pub mod behaviour;
pub mod codec;
pub mod election;
mod entry;
mod error;
pub mod global;
pub mod log;
mod node;
pub mod pg;
mod process;
pub mod receive;
mod registry;
#[doc(hidden)]
pub mod section;
mod send;
pub mod server;
pub mod supervisor;
#[doc(hidden)]
pub mod sys;
pub mod table;
pub mod task;
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
    spawn_link, spawn_monitor, trap_exit, try_monitor, unlink,
};
pub use receive::{
    Envelope, Filter, System, receive, receive_matching, receive_timeout, recv, recv_timeout,
};
pub use registry::{register, unregister, whereis};
pub use send::{send, send_named, send_named_raw, send_raw, send_tagged};
pub use time::{
    cancel_timer, make_ref, monotonic_time, random_bytes, send_after, send_after_raw, sleep,
    system_time,
};

/// The ABI this SDK implements (tags, status codes, limits).
pub use molt_abi as abi;

/// Items the export macros use; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::behaviour;
    pub use crate::entry::run_main;
    pub use crate::task::run_task;
    pub use serde;
}
