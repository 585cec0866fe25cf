//! Tasks: run a computation in a process of its own and wait for its
//! result with a timeout; the task's failure becomes an error at the wait.
//!
//! Closures cannot cross wasm instances, so a task runs a module: one
//! whose entry is a function from its arguments to its result, exported
//! with [`task_main!`](crate::task_main!). [`start`] spawns it and
//! [`Task::wait`] takes the result.
//!
//! The starter **monitors** the task and does not link to it (Elixir's
//! `Task.Supervisor.async_nolink`, not `Task.async`): a task that panics
//! or exits gives [`TaskError::Failed`] at the wait and never takes the
//! starter down. The other way round, a task whose starter exits runs to
//! its end and its result is dropped; bound it with the wait's timeout
//! (a task that times out is killed, as `Task.await` does) or
//! [`Task::kill`].
//!
//! A [`Task`] is plain data (serializable), so a server may keep one in
//! its state across messages and across an upgrade. A server does not
//! wait for a kept task in a later handler (the result is a message, and
//! the host hands every message to the server's handlers in order): its
//! [`handle_info`](crate::server::Server::handle_info) passes each message
//! to [`Task::outcome`], which recognises the task's result or failure.
//!
//! Wire (see `ABI.md`, "SDK conventions"): the task's arguments are its
//! init arguments; the starter then sends it a call whose request is `()`,
//! with the monitor reference as the call reference, and the task replies
//! with its result. A result that comes after a timeout is handled as a
//! late call reply (see [`server`](mod@crate::server)).

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use molt_abi::{reason, tag};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::behaviour::Message;
use crate::codec;
use crate::error::Error;
use crate::process::{Pid, Ref, demonitor, exit, exit_self, self_pid, spawn_monitor};
use crate::receive::{Filter, read_current, receive_matching};
use crate::send::{send_raw, with_encoded};
use crate::server::{CallError, Caller, await_reply, drop_reply, take_reply};

/// A running task whose result is an `R`. Plain data: it may be kept in a
/// server's state and waited for from a later message.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Task<R> {
    pid: Pid,
    reference: Ref,
    #[serde(skip)]
    result: PhantomData<fn() -> R>,
}

/// Why [`Task::wait`] returned no result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskError {
    /// The task exited before it answered, with this reason: a panic
    /// text, a trap, an explicit exit, `noconnection` if its node went
    /// away, `noproc` if it was already gone.
    Failed(String),
    /// No result within the timeout; the task was killed.
    Timeout,
    /// The result did not decode as the expected type.
    BadResult(String),
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Failed(reason) => write!(f, "the task failed: {reason}"),
            TaskError::Timeout => f.write_str("the task timed out and was killed"),
            TaskError::BadResult(why) => write!(f, "the task's result does not decode: {why}"),
        }
    }
}

impl std::error::Error for TaskError {}

/// Start a task: spawn `module` (a [`task_main!`](crate::task_main!)
/// module) on this node with `args`, monitored, and ask it for its result.
///
/// ```no_run
/// use std::time::Duration;
/// let task = molt_sdk::task::start::<_, u64>("squarer", &7u64)?;
/// // ... other work ...
/// let square = task.wait(Duration::from_secs(1));
/// # Ok::<(), molt_sdk::Error>(())
/// ```
pub fn start<A: Serialize + ?Sized, R: DeserializeOwned>(
    module: &str,
    args: &A,
) -> Result<Task<R>, Error> {
    let (pid, reference) = spawn_monitor(module, &args)?;
    ask(pid, reference)
}

/// [`start`] on the named node (the module must be loaded there). A lost
/// connection to that node fails the task with `noconnection`.
///
/// ```no_run
/// let task = molt_sdk::task::start_on::<_, u64>("b@127.0.0.1", "squarer", &7u64)?;
/// # Ok::<(), molt_sdk::Error>(())
/// ```
pub fn start_on<A: Serialize + ?Sized, R: DeserializeOwned>(
    node: &str,
    module: &str,
    args: &A,
) -> Result<Task<R>, Error> {
    let (pid, reference) = crate::node::spawn_monitor_on(node, module, &args)?;
    ask(pid, reference)
}

/// Send the task its call, so it knows where its result goes.
fn ask<R>(pid: Pid, reference: Ref) -> Result<Task<R>, Error> {
    let task = Task {
        pid,
        reference,
        result: PhantomData,
    };
    let sent = with_encoded(&self_pid(), |payload| {
        send_raw(pid, tag::CALL, Some(reference), payload)
    });
    if let Err(e) = sent {
        task.kill();
        return Err(e);
    }
    Ok(task)
}

impl<R> Task<R> {
    /// The task's process.
    ///
    /// ```no_run
    /// # let task = molt_sdk::task::start::<_, u64>("squarer", &7u64).unwrap();
    /// assert!(molt_sdk::is_alive(task.pid()) || true);
    /// ```
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Stop the task now (exit reason `killed`) and forget it: its monitor
    /// and a result already queued are dropped. Elixir's
    /// `Task.shutdown(task, :brutal_kill)`.
    ///
    /// ```no_run
    /// # let task = molt_sdk::task::start::<_, u64>("squarer", &7u64).unwrap();
    /// task.kill();
    /// ```
    pub fn kill(self) {
        let _ = exit(self.pid, reason::KILL);
        demonitor(self.reference, true);
        drop_reply(self.reference);
    }
}

impl<R: DeserializeOwned> Task<R> {
    /// Wait up to `timeout` for the result ([`Duration::MAX`] waits for
    /// ever). Other messages stay queued, in order. On timeout the task is
    /// killed.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use molt_sdk::task::{self, TaskError};
    /// let task = task::start::<_, u64>("squarer", &7u64).unwrap();
    /// match task.wait(Duration::from_millis(500)) {
    ///     Ok(n) => molt_sdk::info!("7² = {n}"),
    ///     Err(TaskError::Failed(why)) => molt_sdk::warn!("it crashed: {why}"),
    ///     Err(e) => molt_sdk::warn!("{e}"),
    /// }
    /// ```
    pub fn wait(self, timeout: Duration) -> Result<R, TaskError> {
        let pid = self.pid;
        await_reply(pid, self.reference, timeout, || {
            let _ = exit(pid, reason::KILL);
        })
        .map_err(|e| match e {
            CallError::Timeout => TaskError::Timeout,
            CallError::Down(reason) => TaskError::Failed(reason),
            CallError::BadReply(why) => TaskError::BadResult(why),
            other => TaskError::Failed(other.to_string()),
        })
    }
}

impl<R: DeserializeOwned> Task<R> {
    /// The task's result or failure, if `msg` (a message a server or
    /// behaviour was handed) is the task's reply or its DOWN; `None` for
    /// any other message. After `Some`, the task is done: its monitor is
    /// gone and a later DOWN will not come.
    ///
    /// ```no_run
    /// # use molt_sdk::Message;
    /// # use molt_sdk::task::Task;
    /// fn handle_info(task: &mut Option<Task<u64>>, msg: Message<()>) {
    ///     if let Some(outcome) = task.as_ref().and_then(|t| t.outcome(&msg)) {
    ///         *task = None;
    ///         molt_sdk::info!("the task ended: {outcome:?}");
    ///     }
    /// }
    /// ```
    pub fn outcome<M>(&self, msg: &Message<M>) -> Option<Result<R, TaskError>> {
        match msg {
            Message::Other(envelope)
                if envelope.tag == tag::REPLY && envelope.reference == Some(self.reference) =>
            {
                demonitor(self.reference, true);
                Some(
                    envelope
                        .decode()
                        .map_err(|e| TaskError::BadResult(e.to_string())),
                )
            }
            Message::Down {
                reference, reason, ..
            } if *reference == self.reference => Some(match take_reply(self.reference) {
                Some(reply) => reply
                    .decode()
                    .map_err(|e| TaskError::BadResult(e.to_string())),
                None => Err(TaskError::Failed(reason.clone())),
            }),
            _ => None,
        }
    }
}

impl<R> fmt::Debug for Task<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("pid", &self.pid)
            .field("reference", &self.reference)
            .finish()
    }
}

/// `molt_main(args_len)` of a task module: decode the arguments, take the
/// starter's call, run `f`, reply with its result.
#[doc(hidden)]
pub fn run_task<A: DeserializeOwned, R: Serialize>(args_len: i32, f: impl FnOnce(A) -> R) {
    crate::entry::install_panic_hook();
    let bytes = read_current(args_len as u32 as usize);
    let args = match codec::decode::<A>(&bytes) {
        Ok(args) => args,
        Err(e) => exit_self(&format!("badarg: {e}")),
    };
    // Taken before `f` runs, so that a receive inside `f` cannot take it.
    let call = receive_matching(&Filter::any().tags(&[tag::CALL]), None)
        .expect("a receive without timeout returned nothing");
    let (Some(reference), Ok(starter)) = (call.reference, call.decode::<Pid>()) else {
        exit_self("badarg: a task's call must carry a reference and the starter's pid")
    };
    let result = f(args);
    let _ = Caller::<R>::new(starter, reference).reply(&result);
}

/// Export a function as a task module's entry point (see [`task`](crate::task)):
/// it takes the task's arguments (any `DeserializeOwned`) and returns its
/// result (any `Serialize`); a panic fails the task. Use once per crate:
///
/// ```no_run
/// fn square(n: u64) -> u64 {
///     n * n
/// }
///
/// molt_sdk::task_main!(square);
/// ```
///
/// A task module waits for its starter's call before it runs the
/// function, so it is meant to be started with [`start`], not spawned.
#[macro_export]
macro_rules! task_main {
    ($f:path) => {
        $crate::task_main!($f, name = ::core::env!("CARGO_PKG_NAME"));
    };
    ($f:path, name = $name:expr) => {
        $crate::module_section!(name = $name);

        // Exports exist only in the wasm build (see `behaviour!`).
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = $f;
        };
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            // SAFETY: a unique, ABI-defined export name; the signature is
            // the one molt_abi::exports::MAIN gives.
            #[unsafe(no_mangle)]
            pub extern "C" fn molt_main(args_len: i32) {
                $crate::__private::run_task(args_len, $f)
            }
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_survives_the_state_codec() {
        let task: Task<u64> = Task {
            pid: Pid {
                node: 1,
                incarnation: 2,
                serial: 3,
            },
            reference: Ref {
                node: 1,
                incarnation: 2,
                serial: 4,
            },
            result: PhantomData,
        };
        let back: Task<u64> = codec::decode(&codec::encode(&task)).unwrap();
        assert_eq!((back.pid, back.reference), (task.pid, task.reference));
    }

    #[test]
    fn task_errors_print_and_round_trip() {
        for e in [
            TaskError::Failed("panic: boom".into()),
            TaskError::Timeout,
            TaskError::BadResult("x".into()),
        ] {
            assert!(!e.to_string().is_empty());
            assert_eq!(codec::decode::<TaskError>(&codec::encode(&e)), Ok(e));
        }
    }
}
