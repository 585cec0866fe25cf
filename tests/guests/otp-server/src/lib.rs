//! `otp-server`: a `molt_sdk::server::Server` for the end-to-end tests. It
//! holds a value, defers calls until released, crashes or stops on
//! request, logs casts and info messages, and, as a client, forwards calls
//! and runs tasks through the SDK, so the tests exercise `server::call`
//! and `task::wait` from inside a handler.

use std::time::Duration;

use molt_sdk::server::{self, CallResult, Caller, Server};
use molt_sdk::task::{self, Task, TaskError};
use molt_sdk::{Message, Next, Pid};
use otp_proto::{Call, Cast, Event, Info, Job, Reply, ServerArgs, TASK};
use serde::{Deserialize, Serialize};

/// The state, saved and migrated on upgrade (deferred callers and a kept
/// task included).
#[derive(Debug, Serialize, Deserialize)]
pub struct OtpServer {
    value: u64,
    observer: Option<Pid>,
    deferred: Vec<Caller<Reply>>,
    log: Vec<String>,
    task: Option<Task<u64>>,
    outcome: Option<Result<u64, TaskError>>,
}

impl OtpServer {
    fn tell(&self, event: &Event) {
        if let Some(observer) = self.observer {
            let _ = molt_sdk::send(observer, event);
        }
    }

    fn release(&mut self, n: u64) -> u64 {
        let count = self.deferred.len() as u64;
        for caller in self.deferred.drain(..) {
            let _ = caller.reply(&Reply::Value(n));
        }
        count
    }
}

fn task_reply(task: Task<u64>, timeout_ms: u64) -> Reply {
    let pid = task.pid();
    Reply::Task {
        pid,
        result: task.wait(Duration::from_millis(timeout_ms)),
    }
}

fn start(job: Job) -> Result<Task<u64>, String> {
    task::start::<Job, u64>(TASK, &job).map_err(|e| e.to_string())
}

impl Server for OtpServer {
    type Args = ServerArgs;
    type Call = Call;
    type Reply = Reply;
    type Cast = Cast;
    type Info = Info;

    fn init(args: ServerArgs) -> Result<Self, String> {
        Ok(OtpServer {
            value: args.value,
            observer: args.observer,
            deferred: Vec::new(),
            log: Vec::new(),
            task: None,
            outcome: None,
        })
    }

    fn handle_call(&mut self, req: Call, from: Caller<Reply>) -> CallResult<Reply> {
        CallResult::Reply(match req {
            Call::Get => Reply::Value(self.value),
            Call::Add(n) => {
                self.value += n;
                Reply::Value(self.value)
            }
            Call::Crash(text) => panic!("{text}"),
            Call::Defer => {
                self.deferred.push(from);
                self.tell(&Event::Deferred);
                return CallResult::NoReply;
            }
            Call::Release(n) => Reply::Released(self.release(n)),
            Call::Stop { reason, reply } => {
                return CallResult::Stop {
                    reason,
                    reply: reply.then_some(Reply::Stopping),
                };
            }
            Call::Forward {
                to,
                call,
                timeout_ms,
            } => Reply::Forwarded(
                server::call::<OtpServer>(to, &call, Duration::from_millis(timeout_ms))
                    .map(Box::new),
            ),
            Call::CastTo { to, cast } => match server::cast::<OtpServer>(to, &cast) {
                Ok(()) => Reply::Done,
                Err(e) => Reply::Failed(e.to_string()),
            },
            Call::Task { job, timeout_ms } => match start(job) {
                Ok(task) => task_reply(task, timeout_ms),
                Err(e) => Reply::Failed(e),
            },
            Call::StartTask(job) => match start(job) {
                Ok(task) => {
                    let pid = task.pid();
                    self.task = Some(task);
                    self.outcome = None;
                    Reply::Started(pid)
                }
                Err(e) => Reply::Failed(e),
            },
            Call::TaskOutcome => Reply::Outcome(self.outcome.clone()),
            Call::Log => Reply::Log(self.log.clone()),
        })
    }

    fn handle_cast(&mut self, cast: Cast) -> Next {
        match cast {
            Cast::Add(n) => {
                self.value += n;
                self.log.push(format!("cast add {n}"));
            }
            Cast::Release(n) => {
                let count = self.release(n);
                self.log.push(format!("cast release {count}"));
            }
        }
        Next::Continue
    }

    fn handle_info(&mut self, msg: Message<Info>) -> Next {
        if let Some(outcome) = self.task.as_ref().and_then(|t| t.outcome(&msg)) {
            self.task = None;
            self.outcome = Some(outcome);
            return Next::Continue;
        }
        let entry = match msg {
            Message::Data(Info::Note(text)) => format!("note {text}"),
            Message::Exit { reason, .. } => format!("exit {reason}"),
            Message::Down { reason, .. } => format!("down {reason}"),
            Message::NodeDown { node } => format!("nodedown {node}"),
            Message::Coord(notice) => format!("coord {notice:?}"),
            Message::Table(event) => format!("table {event:?}"),
            Message::Other(envelope) => format!("other tag {}", envelope.tag),
        };
        self.log.push(entry);
        Next::Continue
    }

    fn terminate(&mut self, reason: &str) {
        self.tell(&Event::Terminated {
            reason: reason.to_owned(),
            value: self.value,
        });
    }
}

molt_sdk::server!(OtpServer);
