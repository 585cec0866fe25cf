//! `pool-worker`: a worker of the supervised pool example, a server that
//! answers jobs. It keeps a count of the jobs it did, so a restarted
//! worker is visibly a new one (its count starts again at 0).

use molt_sdk::server::{CallResult, Caller, Server};
use molt_sdk::{Message, Next};
use serde::{Deserialize, Serialize};

/// A request to a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Job {
    /// Square this number.
    Square(u64),
    /// Panic (a bug in the worker, for the demo).
    Crash,
}

/// A worker's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// Which worker.
    pub worker: u32,
    /// The result.
    pub result: u64,
    /// Jobs this worker process has done, this one included.
    pub jobs: u64,
}

/// A worker's state.
#[derive(Debug, Serialize, Deserialize)]
pub struct PoolWorker {
    index: u32,
    jobs: u64,
}

impl Server for PoolWorker {
    type Args = u32;
    type Call = Job;
    type Reply = Done;
    type Cast = molt_sdk::server::Never;
    type Info = molt_sdk::server::Never;

    fn init(index: u32) -> Result<Self, String> {
        molt_sdk::info!("pool-worker {index} started as {}", molt_sdk::self_pid());
        Ok(PoolWorker { index, jobs: 0 })
    }

    fn handle_call(&mut self, job: Job, _from: Caller<Done>) -> CallResult<Done> {
        match job {
            Job::Square(n) => {
                self.jobs += 1;
                CallResult::Reply(Done {
                    worker: self.index,
                    result: n.saturating_mul(n),
                    jobs: self.jobs,
                })
            }
            Job::Crash => panic!("pool-worker {} was told to crash", self.index),
        }
    }

    fn handle_info(&mut self, _msg: Message<molt_sdk::server::Never>) -> Next {
        Next::Continue
    }
}

#[cfg(not(feature = "types-only"))]
molt_sdk::server!(PoolWorker);
