//! `otp-task`: a task module (see `molt_sdk::task`) whose result is a
//! `u64`: it squares, panics, sleeps, or calls an `otp-server` from a raw
//! process, as the [`Job`] says.

use std::time::Duration;

use molt_sdk::server;
use otp_proto::{Call, Job, Reply};

/// Run one job.
pub fn run(job: Job) -> u64 {
    match job {
        Job::Square(n) => n * n,
        Job::Panic(text) => panic!("{text}"),
        Job::Sleep(ms) => {
            molt_sdk::sleep(Duration::from_millis(ms));
            ms
        }
        Job::Echo => molt_sdk::recv::<u64>().expect("a u64"),
        Job::GetFrom(pid) => {
            match server::call_as::<Call, Reply>(pid, &Call::Get, server::DEFAULT_TIMEOUT) {
                Ok(Reply::Value(v)) => v,
                other => panic!("Get answered {other:?}"),
            }
        }
    }
}

molt_sdk::task_main!(run);
