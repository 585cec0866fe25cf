//! `otp-proto`: the messages of the `otp-server` and `otp-task` test
//! guests, in a crate of their own so that both guests and the host tests
//! link them without linking each other's exports.

use molt_sdk::Pid;
use molt_sdk::server::CallError;
use molt_sdk::task::TaskError;
use serde::{Deserialize, Serialize};

/// The name of the server module.
pub const SERVER: &str = "otp-server";
/// The name of the task module.
pub const TASK: &str = "otp-task";

/// Init arguments of an `otp-server`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerArgs {
    /// The starting value.
    pub value: u64,
    /// Where [`Event`]s go, if anywhere.
    pub observer: Option<Pid>,
}

/// Calls an `otp-server` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    /// `Value(value)`.
    Get,
    /// Add to the value: `Value(new value)`.
    Add(u64),
    /// Panic with this text; no reply.
    Crash(String),
    /// No reply now: the caller is kept in the state (and the observer
    /// gets [`Event::Deferred`]) until a `Release`.
    Defer,
    /// Answer every deferred caller with `Value(n)`: `Released(count)`.
    Release(u64),
    /// Stop with `reason`, replying `Stopping` first if `reply`.
    Stop {
        /// The exit reason.
        reason: String,
        /// Reply before stopping.
        reply: bool,
    },
    /// Call `to` with `call` through `molt_sdk::server::call`, waiting up
    /// to `timeout_ms`: `Forwarded(outcome)`.
    Forward {
        /// The server to call.
        to: Pid,
        /// The call.
        call: Box<Call>,
        /// The call's timeout.
        timeout_ms: u64,
    },
    /// Cast `cast` to `to` through `molt_sdk::server::cast`: `Done`.
    CastTo {
        /// The server.
        to: Pid,
        /// The cast.
        cast: Cast,
    },
    /// Run `job` as an `otp-task` and wait up to `timeout_ms`: `Task`.
    Task {
        /// What the task does.
        job: Job,
        /// The wait's timeout.
        timeout_ms: u64,
    },
    /// Start `job` as an `otp-task` and keep it in the state; its
    /// outcome comes as an info message: `Started(pid)`.
    StartTask(Job),
    /// The outcome of the task `StartTask` kept, if it came: `Outcome`.
    TaskOutcome,
    /// What the server has seen besides calls: `Log`.
    Log,
}

/// Replies of an `otp-server`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The value.
    Value(u64),
    /// How many deferred callers were answered.
    Released(u64),
    /// The server stops after this reply.
    Stopping,
    /// The outcome of a forwarded call.
    Forwarded(Result<Box<Reply>, CallError>),
    /// The outcome of a task.
    Task {
        /// The task's process.
        pid: Pid,
        /// Its result.
        result: Result<u64, TaskError>,
    },
    /// A task started.
    Started(Pid),
    /// The outcome of a kept task, if it came.
    Outcome(Option<Result<u64, TaskError>>),
    /// Casts and info messages seen, oldest first.
    Log(Vec<String>),
    /// Done; nothing to say.
    Done,
    /// The request could not be carried out.
    Failed(String),
}

/// Casts an `otp-server` takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cast {
    /// Add to the value.
    Add(u64),
    /// Answer every deferred caller with `Value(n)`.
    Release(u64),
}

/// Typed info messages (tag `DATA`) an `otp-server` takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Info {
    /// Noted in the log.
    Note(String),
}

/// What an `otp-server` tells its observer (tag `DATA`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A call was deferred.
    Deferred,
    /// `terminate` ran with this reason; the value at that time.
    Terminated {
        /// The stop reason.
        reason: String,
        /// The value.
        value: u64,
    },
}

/// What an `otp-task` does; its result is a `u64`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Job {
    /// `n * n`.
    Square(u64),
    /// Panic with this text.
    Panic(String),
    /// Sleep this many milliseconds, then return them.
    Sleep(u64),
    /// Wait for a `u64` (tag `DATA`) and return it.
    Echo,
    /// The value of the `otp-server` at this pid, by `server::call` from
    /// the (raw) task process.
    GetFrom(Pid),
}
