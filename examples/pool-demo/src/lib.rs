//! `pool-demo`: a supervised worker pool in which a worker crashes and is
//! restarted. A raw process (run it with `molt run pool_demo.wasm`; the
//! node finds `pool_sup.wasm` and `pool_worker.wasm` beside it):
//!
//! 1. starts `pool-sup` with 3 `pool-worker`s and lists them;
//! 2. gives each a job with a call;
//! 3. tells worker-1 to crash (its call fails with the panic as reason);
//! 4. lists the pool again: worker-1 has a new pid, the others the same;
//! 5. gives worker-1 a job: the new process answers, its job count is 1;
//! 6. stops the pool with `shutdown`.

use std::time::Duration;

use molt_sdk::server::{self, CallError};
use molt_sdk::supervisor::{self, ChildInfo};
use molt_sdk::{Pid, info};
use pool_worker::{Done, Job};

const WORKERS: u32 = 3;
const TIMEOUT: Duration = Duration::from_secs(5);

fn job(worker: Pid, n: u64) -> Result<Done, CallError> {
    server::call_as::<Job, Done>(worker, &Job::Square(n), TIMEOUT)
}

fn show(children: &[ChildInfo]) -> String {
    children
        .iter()
        .map(|c| match c.pid {
            Some(pid) => format!("{}={pid}", c.id),
            None => format!("{}=(stopped)", c.id),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn pid_of(children: &[ChildInfo], id: &str) -> Result<Pid, String> {
    children
        .iter()
        .find(|c| c.id == id)
        .and_then(|c| c.pid)
        .ok_or_else(|| format!("no running {id}"))
}

fn run(_args: Vec<String>) -> Result<(), String> {
    molt_sdk::trap_exit(true);
    let pool = supervisor::start_link("pool-sup", &WORKERS).map_err(|e| e.to_string())?;
    let before = supervisor::which_children(pool).map_err(|e| e.to_string())?;
    info!("pool {pool} runs {}", show(&before));
    for (i, child) in before.iter().enumerate() {
        let pid = child.pid.ok_or("a worker is not running")?;
        let done = job(pid, 10 + i as u64).map_err(|e| e.to_string())?;
        info!(
            "{} squared {} = {} (jobs done: {})",
            child.id,
            10 + i as u64,
            done.result,
            done.jobs
        );
    }
    let victim = pid_of(&before, "worker-1")?;
    match server::call_as::<Job, Done>(victim, &Job::Crash, TIMEOUT) {
        Err(CallError::Down(why)) => info!("worker-1 crashed during the call: {why}"),
        other => return Err(format!("expected worker-1 to crash, got {other:?}")),
    }
    // The supervisor restarts it; wait (bounded) until it lists a new pid.
    let mut after = before.clone();
    for _ in 0..500 {
        after = supervisor::which_children(pool).map_err(|e| e.to_string())?;
        if pid_of(&after, "worker-1").is_ok_and(|p| p != victim) {
            break;
        }
        molt_sdk::sleep(Duration::from_millis(2));
    }
    let restarted = pid_of(&after, "worker-1")?;
    if restarted == victim {
        return Err("worker-1 was not restarted".into());
    }
    info!("pool {pool} runs {} (worker-1 restarted)", show(&after));
    for id in ["worker-0", "worker-2"] {
        if pid_of(&before, id)? != pid_of(&after, id)? {
            return Err(format!(
                "{id} was restarted too, but one_for_one restarts only the one that crashed"
            ));
        }
    }
    let done = job(restarted, 7).map_err(|e| e.to_string())?;
    info!(
        "the new worker-1 squared 7 = {} (jobs done: {}, a fresh process)",
        done.result, done.jobs
    );
    molt_sdk::exit(pool, "shutdown").map_err(|e| e.to_string())?;
    info!("pool stopped");
    Ok(())
}

molt_sdk::main!(run);
