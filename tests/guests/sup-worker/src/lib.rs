//! `sup-worker`: a server for the supervisor tests. It tells its observer
//! each time it starts (so a test sees restarts), crashes or exits with a
//! reason when told, and, if asked, traps exits and ignores `shutdown`
//! (so a test sees the supervisor kill it after its shutdown timeout).

use molt_sdk::server::{CallResult, Caller, Never, Server};
use molt_sdk::{Message, Next, Pid};
use serde::{Deserialize, Serialize};

/// Init arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerArgs {
    /// Who hears of each start.
    pub observer: Pid,
    /// The worker's name in the events.
    pub id: String,
    /// Trap exits, so `exit(pid, "shutdown")` does not stop it.
    pub ignore_shutdown: bool,
}

/// What the observer hears.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerEvent {
    /// A worker started (or restarted).
    Started {
        /// Its id.
        id: String,
        /// Its pid.
        pid: Pid,
    },
}

/// What a worker can be told (typed info messages).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerMsg {
    /// Panic with this text.
    Crash(String),
    /// Exit with this reason (`normal`, `shutdown`, ...).
    Exit(String),
}

/// The state.
#[derive(Debug, Serialize, Deserialize)]
pub struct Worker {
    id: String,
}

impl Server for Worker {
    type Args = WorkerArgs;
    type Call = ();
    type Reply = String;
    type Cast = Never;
    type Info = WorkerMsg;

    fn init(args: WorkerArgs) -> Result<Self, String> {
        if args.ignore_shutdown {
            molt_sdk::trap_exit(true);
        }
        let started = WorkerEvent::Started {
            id: args.id.clone(),
            pid: molt_sdk::self_pid(),
        };
        molt_sdk::send(args.observer, &started).map_err(|e| e.to_string())?;
        Ok(Worker { id: args.id })
    }

    fn handle_call(&mut self, _: (), _from: Caller<String>) -> CallResult<String> {
        CallResult::Reply(self.id.clone())
    }

    fn handle_info(&mut self, msg: Message<WorkerMsg>) -> Next {
        match msg {
            Message::Data(WorkerMsg::Crash(text)) => panic!("{text}"),
            Message::Data(WorkerMsg::Exit(reason)) => Next::Stop(reason),
            _ => Next::Continue,
        }
    }
}

#[cfg(not(feature = "types-only"))]
molt_sdk::server!(Worker);
