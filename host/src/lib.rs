//! molt-host: the molt node. Runs WebAssembly processes with Erlang's
//! process model: mailboxes with selective receive, links, monitors, exit
//! signals, names and timers, each process isolated in its own wasm
//! instance and preempted so that no guest can starve the others.
//!
//! The [`Node`] is the entry point: start one inside a tokio runtime, load
//! modules through its [`CodeServer`], spawn processes and talk to them
//! through a [`HostMailbox`].
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use molt_host::{Node, NodeConfig};
//! let node = Node::start(NodeConfig::default())?;
//! node.load_file("counter.wasm")?;
//! let mut mailbox = node.mailbox()?;
//! let (pid, _) = mailbox.spawn("counter", vec![], false, true)?;
//! # let _ = pid; Ok(()) }
//! ```

pub mod bench;
pub mod code;
pub mod config;
pub mod dist;
pub mod engine;
pub mod guest_build;
pub mod runtime;

pub use code::{
    CodeServer, LoadError, LoadOptions, ModuleKind, ModuleVersion, Purge, PurgeError, UpgradeMode,
};
pub use config::NodeConfig;
pub use runtime::{
    Filter, HostMailbox, Message, Node, NodeStats, PgError, ProcessInfo, SendError, SpawnError,
    StartError, SysError, SysOp, SysOutcome,
};
