//! `sup-tree`: one supervisor module for every supervisor in the tests;
//! its init arguments say the strategy, the intensity and the children
//! (`sup-worker` workers, or nested `sup-tree` supervisors).

use std::time::Duration;

use molt_sdk::Pid;
use molt_sdk::supervisor::{ChildSpec, Flags, Restart, Shutdown, Spec, Strategy, Supervisor};
use serde::{Deserialize, Serialize};
use sup_worker::WorkerArgs;

/// A supervisor's init arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeArgs {
    /// Restart strategy.
    pub strategy: Strategy,
    /// Most restarts in `period_ms`.
    pub intensity: u32,
    /// The intensity's window.
    pub period_ms: u64,
    /// Children, in start order (for simple_one_for_one, the template).
    pub children: Vec<Kid>,
}

/// One child.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kid {
    /// Its id.
    pub id: String,
    /// Its restart type.
    pub restart: Restart,
    /// A worker or a nested supervisor.
    pub kind: KidKind,
}

/// What a child is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KidKind {
    /// A `sup-worker` reporting to `observer`.
    Worker {
        /// Who hears of its starts.
        observer: Pid,
        /// It ignores `shutdown`.
        ignore_shutdown: bool,
        /// Its shutdown timeout.
        shutdown_ms: u64,
    },
    /// A nested `sup-tree`.
    Tree(Box<TreeArgs>),
}

/// The supervisor module.
pub struct Tree;

impl Supervisor for Tree {
    type Args = TreeArgs;

    fn init(args: TreeArgs) -> Result<Spec, String> {
        let children = args
            .children
            .iter()
            .map(|kid| match &kid.kind {
                KidKind::Worker {
                    observer,
                    ignore_shutdown,
                    shutdown_ms,
                } => {
                    let worker = WorkerArgs {
                        observer: *observer,
                        id: kid.id.clone(),
                        ignore_shutdown: *ignore_shutdown,
                    };
                    ChildSpec::worker(&kid.id, "sup-worker", &worker)
                        .restart(kid.restart)
                        .shutdown(Shutdown::Timeout(Duration::from_millis(*shutdown_ms)))
                }
                KidKind::Tree(tree) => {
                    ChildSpec::supervisor(&kid.id, "sup-tree", tree.as_ref()).restart(kid.restart)
                }
            })
            .collect();
        Ok(Spec {
            flags: Flags {
                strategy: args.strategy,
                intensity: args.intensity,
                period: Duration::from_millis(args.period_ms),
            },
            children,
        })
    }
}

#[cfg(not(feature = "types-only"))]
molt_sdk::supervisor!(Tree);
