//! molt-host: the molt node. Runs WebAssembly processes with Erlang's
//! process model: mailboxes with selective receive, links, monitors, exit
//! signals, names and timers, each process isolated in its own wasm
//! instance and preempted so that no guest can starve the others.
//!
//! The [`Node`] is the entry point: start one inside a tokio runtime, load
//! modules through its [`CodeServer`], spawn processes and talk to them
//! through a [`HostMailbox`]. [`net::Distribution`] joins it to a cluster;
//! [`Control`] is the operator's API over it and the cluster (processes,
//! nodes, modules, code rollouts, watchers), the one the `molt` CLI uses.
//!
//! Layers: `runtime` (processes and signals) and `code` (module versions)
//! know nothing of the network; `net` carries signals and services between
//! nodes; `control` sits on all three.
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

pub mod cluster;
pub mod code;
pub mod config;
pub mod control;
pub mod engine;
pub mod http;
pub mod net;
pub mod runtime;
pub mod table;
pub mod top;

pub use code::{
    CodeServer, LoadError, LoadOptions, ModuleKind, ModuleVersion, Purge, PurgeError, UpgradeMode,
};
pub use config::NodeConfig;
pub use control::Control;
pub use runtime::counters::{Counted, ExitKind};
pub use runtime::{
    Filter, HostMailbox, Inspected, Message, MessagePreview, Node, NodeStats, PgError,
    ProcessDetail, ProcessInfo, ProcessOrder, SendError, SpawnError, StartError, SysError, SysOp,
    SysOutcome, TopProcesses,
};
