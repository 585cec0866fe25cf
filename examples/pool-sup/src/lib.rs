//! `pool-sup`: the supervisor of the pool example. It starts `workers`
//! `pool-worker` processes, one for one: a worker that crashes is
//! restarted alone; more than 5 restarts in 10 s and the pool gives up.

use std::time::Duration;

use molt_sdk::supervisor::{ChildSpec, Flags, Spec, Strategy, Supervisor};

/// The pool's supervisor.
pub struct PoolSup;

impl Supervisor for PoolSup {
    /// How many workers.
    type Args = u32;

    fn init(workers: u32) -> Result<Spec, String> {
        Ok(Spec {
            flags: Flags {
                strategy: Strategy::OneForOne,
                intensity: 5,
                period: Duration::from_secs(10),
            },
            children: (0..workers)
                .map(|i| ChildSpec::worker(&format!("worker-{i}"), "pool-worker", &i))
                .collect(),
        })
    }
}

molt_sdk::supervisor!(PoolSup);
