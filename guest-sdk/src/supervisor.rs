//! Supervisors: processes that start children, watch them, and restart
//! them by a strategy, as Erlang's `supervisor`.
//!
//! A supervisor module implements [`Supervisor`] (its `init` returns the
//! [`Spec`]: restart strategy, intensity, and child specs) and is exported
//! with [`supervisor!`](crate::supervisor!). It runs as a
//! [`Server`], so its state (children, restart
//! history) migrates on a hot upgrade, and the client functions here
//! ([`start_child`], [`which_children`], ...) are calls. Supervisors nest:
//! a child may be another supervisor ([`ChildSpec::supervisor`]); a tree is
//! started by starting its root, from an application's entry with [`run`].
//!
//! - **Strategies:** [`Strategy::OneForOne`] restarts the child that ended;
//!   [`Strategy::OneForAll`] stops all others and restarts all;
//!   [`Strategy::RestForOne`] stops and restarts the children started after
//!   it; [`Strategy::SimpleOneForOne`] runs dynamic children of one spec,
//!   started with [`start_dynamic`], each restarted on its own.
//! - **Restart types:** [`Restart::Permanent`] always; [`Restart::Transient`]
//!   only after an abnormal exit (not `normal`, `shutdown` or
//!   `shutdown: ...`); [`Restart::Temporary`] never (and forgotten).
//! - **Intensity:** more than [`Flags::intensity`] restarts within
//!   [`Flags::period`] and the supervisor stops its children and exits
//!   with reason `shutdown`, for its own supervisor to handle.
//! - **Shutdown:** a child is stopped with exit signal `shutdown`, then
//!   killed if it has not ended within its [`Shutdown::Timeout`]; children
//!   stop in the reverse of their start order.
//!
//! ```no_run
//! use std::time::Duration;
//! use molt_sdk::supervisor::{ChildSpec, Flags, Spec, Strategy, Supervisor};
//!
//! pub struct PoolSup;
//!
//! impl Supervisor for PoolSup {
//!     type Args = u32; // workers
//!
//!     fn init(workers: u32) -> Result<Spec, String> {
//!         Ok(Spec {
//!             flags: Flags { strategy: Strategy::OneForOne, intensity: 5, period: Duration::from_secs(10) },
//!             children: (0..workers)
//!                 .map(|i| ChildSpec::worker(&format!("worker-{i}"), "pool-worker", &i))
//!                 .collect(),
//!         })
//!     }
//! }
//!
//! molt_sdk::supervisor!(PoolSup);
//! ```

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::time::Duration;

use molt_abi::{reason, tag};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::behaviour::{Message, Next};
use crate::codec;
use crate::error::Error;
use crate::process::{Pid, demonitor, exit, monitor, spawn_bytes, trap_exit, unlink};
use crate::receive::{Filter, System, receive_matching};
use crate::server::{self, CallError, CallResult, Caller, Never, Server};

/// How a supervisor restarts children.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// Restart only the child that ended.
    OneForOne,
    /// Stop every other child, then restart them all, in start order.
    OneForAll,
    /// Stop the children started after the one that ended, then restart it
    /// and them, in start order.
    RestForOne,
    /// Children are started dynamically ([`start_dynamic`]) from the one
    /// child spec, with their own arguments; each is restarted on its own.
    SimpleOneForOne,
}

/// When a child that ended is restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Restart {
    /// Always.
    Permanent,
    /// Only if it ended abnormally: not `normal`, `shutdown` or
    /// `shutdown: ...`.
    Transient,
    /// Never; the child is forgotten when it ends.
    Temporary,
}

/// How a child is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shutdown {
    /// `exit(child, "kill")` at once.
    BrutalKill,
    /// `exit(child, "shutdown")`, then `kill` if it has not ended in time.
    Timeout(Duration),
    /// `exit(child, "shutdown")` and wait as long as it takes (for child
    /// supervisors, which stop their own children first).
    Infinity,
}

/// One child: how to start it and what to do when it ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildSpec {
    /// Unique among the supervisor's children.
    pub id: String,
    /// The module to spawn.
    pub module: String,
    /// Its init arguments, encoded.
    #[serde(with = "crate::codec::bytes")]
    pub args: Vec<u8>,
    /// When it is restarted.
    pub restart: Restart,
    /// How it is stopped.
    pub shutdown: Shutdown,
}

/// A worker's default [`Shutdown::Timeout`] (Erlang's: five seconds).
pub const WORKER_SHUTDOWN: Duration = Duration::from_secs(5);

impl ChildSpec {
    /// A permanent worker stopped with a [`WORKER_SHUTDOWN`] timeout.
    ///
    /// ```
    /// use molt_sdk::supervisor::{ChildSpec, Restart};
    /// let spec = ChildSpec::worker("cache", "cache-server", &1024u32).restart(Restart::Transient);
    /// assert_eq!(spec.module, "cache-server");
    /// ```
    pub fn worker(id: &str, module: &str, args: &impl Serialize) -> ChildSpec {
        ChildSpec {
            id: id.to_string(),
            module: module.to_string(),
            args: codec::encode(args),
            restart: Restart::Permanent,
            shutdown: Shutdown::Timeout(WORKER_SHUTDOWN),
        }
    }

    /// A permanent child supervisor, stopped without a timeout (it stops
    /// its own children first).
    pub fn supervisor(id: &str, module: &str, args: &impl Serialize) -> ChildSpec {
        ChildSpec {
            shutdown: Shutdown::Infinity,
            ..ChildSpec::worker(id, module, args)
        }
    }

    /// With another restart type.
    pub fn restart(mut self, restart: Restart) -> ChildSpec {
        self.restart = restart;
        self
    }

    /// With another way to stop it.
    pub fn shutdown(mut self, shutdown: Shutdown) -> ChildSpec {
        self.shutdown = shutdown;
        self
    }
}

/// Strategy and restart intensity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    /// How children are restarted.
    pub strategy: Strategy,
    /// Most restarts within `period`; one more and the supervisor gives up.
    pub intensity: u32,
    /// The window `intensity` counts in.
    pub period: Duration,
}

impl Default for Flags {
    /// One for one, at most 1 restart in 5 s (Erlang's defaults).
    fn default() -> Flags {
        Flags {
            strategy: Strategy::OneForOne,
            intensity: 1,
            period: Duration::from_secs(5),
        }
    }
}

/// What a supervisor runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// Strategy and intensity.
    pub flags: Flags,
    /// Children in start order. For [`Strategy::SimpleOneForOne`], exactly
    /// one: the template of the dynamic children (its `args` are unused).
    pub children: Vec<ChildSpec>,
}

/// A supervisor module: its `init` says what to run. Export it with
/// [`supervisor!`](crate::supervisor!). One module can serve several
/// supervisors of a tree, told apart by their arguments.
pub trait Supervisor: 'static {
    /// The init arguments the starter passes.
    type Args: DeserializeOwned;

    /// The strategy and the children. `Err(reason)` ends the supervisor
    /// with that reason before it starts anything.
    fn init(args: Self::Args) -> Result<Spec, String>;
}

/// A child as [`which_children`] shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildInfo {
    /// Its id (for dynamic children, the template's).
    pub id: String,
    /// Its pid, or `None` if it is not running (a transient child that
    /// ended normally, or one terminated with [`terminate_child`]).
    pub pid: Option<Pid>,
    /// Its module.
    pub module: String,
    /// Its restart type.
    pub restart: Restart,
}

/// Requests a supervisor answers (see the client functions).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SupCall {
    /// Add and start a child ([`start_child`]).
    StartChild(ChildSpec),
    /// Start a dynamic child with these encoded arguments ([`start_dynamic`]).
    StartDynamic(#[serde(with = "crate::codec::bytes")] Vec<u8>),
    /// Stop a child, keeping its spec ([`terminate_child`]).
    TerminateChild(String),
    /// Stop a dynamic child ([`terminate_pid`]).
    TerminatePid(Pid),
    /// Start a stopped child again ([`restart_child`]).
    RestartChild(String),
    /// Forget a stopped child's spec ([`delete_child`]).
    DeleteChild(String),
    /// List the children ([`which_children`]).
    WhichChildren,
}

/// Answers to [`SupCall`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SupReply {
    /// A child started.
    Started(Pid),
    /// Done.
    Done,
    /// Refused, with why.
    Refused(String),
    /// The children, in start order.
    Children(Vec<ChildInfo>),
}

/// Why a supervisor request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SupError {
    /// The call failed (the supervisor is not alive, timed out, ...).
    Call(CallError),
    /// The supervisor refused, with why.
    Refused(String),
}

impl std::fmt::Display for SupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SupError::Call(e) => write!(f, "supervisor call failed: {e}"),
            SupError::Refused(why) => write!(f, "supervisor refused: {why}"),
        }
    }
}

impl std::error::Error for SupError {}

/// How long the client functions wait for the supervisor. Starting or
/// stopping a child can wait for its shutdown timeout, so this is longer
/// than [`server::DEFAULT_TIMEOUT`].
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn request(sup: Pid, req: &SupCall) -> Result<SupReply, SupError> {
    match server::call_as::<SupCall, SupReply>(sup, req, CALL_TIMEOUT) {
        Ok(SupReply::Refused(why)) => Err(SupError::Refused(why)),
        Ok(reply) => Ok(reply),
        Err(e) => Err(SupError::Call(e)),
    }
}

fn started(reply: SupReply) -> Result<Pid, SupError> {
    match reply {
        SupReply::Started(pid) => Ok(pid),
        other => Err(SupError::Refused(format!("unexpected answer {other:?}"))),
    }
}

/// Start supervisor module `module` linked to the caller.
pub fn start_link(module: &str, args: &impl Serialize) -> Result<Pid, Error> {
    crate::process::spawn_link(module, args)
}

/// Add a child to a running supervisor and start it.
pub fn start_child(sup: Pid, spec: ChildSpec) -> Result<Pid, SupError> {
    started(request(sup, &SupCall::StartChild(spec))?)
}

/// Start a dynamic child of a [`Strategy::SimpleOneForOne`] supervisor with
/// these init arguments.
pub fn start_dynamic(sup: Pid, args: &impl Serialize) -> Result<Pid, SupError> {
    started(request(sup, &SupCall::StartDynamic(codec::encode(args)))?)
}

/// Stop a child, keeping its spec (it can be started again with
/// [`restart_child`]). A temporary child is forgotten.
pub fn terminate_child(sup: Pid, id: &str) -> Result<(), SupError> {
    request(sup, &SupCall::TerminateChild(id.to_string())).map(|_| ())
}

/// Stop a dynamic child of a [`Strategy::SimpleOneForOne`] supervisor.
pub fn terminate_pid(sup: Pid, pid: Pid) -> Result<(), SupError> {
    request(sup, &SupCall::TerminatePid(pid)).map(|_| ())
}

/// Start a stopped child again.
pub fn restart_child(sup: Pid, id: &str) -> Result<Pid, SupError> {
    started(request(sup, &SupCall::RestartChild(id.to_string()))?)
}

/// Forget a stopped child.
pub fn delete_child(sup: Pid, id: &str) -> Result<(), SupError> {
    request(sup, &SupCall::DeleteChild(id.to_string())).map(|_| ())
}

/// The supervisor's children, in start order.
pub fn which_children(sup: Pid) -> Result<Vec<ChildInfo>, SupError> {
    match request(sup, &SupCall::WhichChildren)? {
        SupReply::Children(children) => Ok(children),
        other => Err(SupError::Refused(format!("unexpected answer {other:?}"))),
    }
}

/// An application's entry: start the root supervisor `module` linked to
/// the caller and wait for it to end. `Ok` if it ended `normal` or
/// `shutdown`, else its reason. Use it from a raw process's main:
///
/// ```no_run
/// fn app(_: Vec<String>) -> Result<(), String> {
///     molt_sdk::supervisor::run("my-app-sup", &())
/// }
/// molt_sdk::main!(app);
/// ```
pub fn run(module: &str, args: &impl Serialize) -> Result<(), String> {
    trap_exit(true);
    let root = start_link(module, args).map_err(|e| format!("cannot start {module}: {e}"))?;
    loop {
        let envelope = receive_matching(&Filter::any().tags(&[tag::EXIT]), None)
            .expect("a receive without timeout returns a message");
        if let Some(System::Exit { from, reason }) = envelope.system()
            && from == root
        {
            return match reason.as_str() {
                reason::NORMAL | reason::SHUTDOWN => Ok(()),
                _ => Err(reason),
            };
        }
    }
}

/// One child as the supervisor keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Child {
    spec: ChildSpec,
    pid: Option<Pid>,
}

/// The [`Server`] that runs a [`Supervisor`]: its state is the children
/// and the restart history, so it migrates on an upgrade. Export it with
/// [`supervisor!`](crate::supervisor!).
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Sup<T> {
    flags: Flags,
    children: Vec<Child>,
    /// The child spec of dynamic children ([`Strategy::SimpleOneForOne`]).
    template: Option<ChildSpec>,
    /// When recent restarts happened, in ms of monotonic time.
    restarts: VecDeque<u64>,
    #[serde(skip)]
    callbacks: PhantomData<fn() -> T>,
}

/// Whether a child that ended with `why` counts as ended normally.
fn normal_exit(why: &str) -> bool {
    why == reason::NORMAL || why == reason::SHUTDOWN || why.starts_with("shutdown: ")
}

fn now_ms() -> u64 {
    crate::time::monotonic_time().as_millis() as u64
}

fn spawn_child(spec: &ChildSpec) -> Result<Pid, String> {
    spawn_bytes(&spec.module, &spec.args, true, false)
        .map(|(pid, _)| pid)
        .map_err(|e| format!("cannot start child `{}` ({}): {e}", spec.id, spec.module))
}

/// Stop `pid` as `shutdown` says and wait until it has ended. The link is
/// dropped first, so its exit does not come back as an `EXIT` message.
fn stop_child(pid: Pid, shutdown: Shutdown) {
    let watch = monitor(pid);
    let _ = unlink(pid);
    let down = Filter::any().tags(&[tag::DOWN]).reference(watch);
    let wait = match shutdown {
        Shutdown::BrutalKill => {
            let _ = exit(pid, reason::KILL);
            None
        }
        Shutdown::Timeout(limit) => {
            let _ = exit(pid, reason::SHUTDOWN);
            Some(limit)
        }
        Shutdown::Infinity => {
            let _ = exit(pid, reason::SHUTDOWN);
            None
        }
    };
    if receive_matching(&down, wait).is_none() {
        crate::warn!("supervisor: {pid} did not stop within its shutdown timeout; killing it");
        let _ = exit(pid, reason::KILL);
        let _ = receive_matching(&down, None);
    }
    demonitor(watch, true);
}

impl<T: Supervisor> Sup<T> {
    /// Stop running children from the last to `from` (inclusive).
    fn stop_from(&mut self, from: usize) {
        for child in self.children[from..].iter_mut().rev() {
            if let Some(pid) = child.pid.take() {
                stop_child(pid, child.spec.shutdown);
            }
        }
    }

    /// Count a restart; false if that is one too many for the intensity.
    fn allow_restart(&mut self) -> bool {
        let now = now_ms();
        let period = self.flags.period.as_millis() as u64;
        while self
            .restarts
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= period)
        {
            self.restarts.pop_front();
        }
        self.restarts.push_back(now);
        self.restarts.len() <= self.flags.intensity as usize
    }

    /// Start the children at `indices` that have no pid; false if one
    /// could not start even within the restart intensity.
    fn start_all(&mut self, indices: std::ops::Range<usize>) -> bool {
        for i in indices {
            if self.children[i].pid.is_some() {
                continue;
            }
            loop {
                match spawn_child(&self.children[i].spec) {
                    Ok(pid) => {
                        self.children[i].pid = Some(pid);
                        break;
                    }
                    Err(why) => {
                        crate::warn!("supervisor: {why}");
                        if !self.allow_restart() {
                            return false;
                        }
                    }
                }
            }
        }
        true
    }

    /// A child ended: restart what the strategy says. `Next::Stop` when the
    /// intensity is exceeded.
    fn child_exited(&mut self, at: usize, why: &str) -> Next {
        let child = &mut self.children[at];
        child.pid = None;
        let restart = match child.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => !normal_exit(why),
            Restart::Temporary => false,
        };
        let id = child.spec.id.clone();
        if !restart {
            let dynamic = self.flags.strategy == Strategy::SimpleOneForOne;
            if child.spec.restart == Restart::Temporary || dynamic {
                self.children.remove(at);
            }
            return Next::Continue;
        }
        crate::info!("supervisor: child `{id}` exited ({why}); restarting");
        if !self.allow_restart() {
            crate::warn!(
                "supervisor: more than {} restarts in {:?}; shutting down",
                self.flags.intensity,
                self.flags.period
            );
            return Next::Stop(reason::SHUTDOWN.to_string());
        }
        let started = match self.flags.strategy {
            Strategy::OneForOne | Strategy::SimpleOneForOne => self.start_all(at..at + 1),
            Strategy::OneForAll => {
                self.stop_from(0);
                self.start_all(0..self.children.len())
            }
            Strategy::RestForOne => {
                self.stop_from(at);
                self.start_all(at..self.children.len())
            }
        };
        if started {
            Next::Continue
        } else {
            Next::Stop(reason::SHUTDOWN.to_string())
        }
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.children.iter().position(|c| c.spec.id == id)
    }

    fn handle(&mut self, req: SupCall) -> SupReply {
        let dynamic = self.flags.strategy == Strategy::SimpleOneForOne;
        match req {
            SupCall::StartChild(spec) if !dynamic => {
                if self.position(&spec.id).is_some() {
                    return SupReply::Refused(format!("a child `{}` exists already", spec.id));
                }
                match spawn_child(&spec) {
                    Ok(pid) => {
                        self.children.push(Child {
                            spec,
                            pid: Some(pid),
                        });
                        SupReply::Started(pid)
                    }
                    Err(why) => SupReply::Refused(why),
                }
            }
            SupCall::StartDynamic(args) if dynamic => {
                let template = self
                    .template
                    .clone()
                    .expect("a simple_one_for_one template");
                let spec = ChildSpec { args, ..template };
                match spawn_child(&spec) {
                    Ok(pid) => {
                        self.children.push(Child {
                            spec,
                            pid: Some(pid),
                        });
                        SupReply::Started(pid)
                    }
                    Err(why) => SupReply::Refused(why),
                }
            }
            SupCall::TerminatePid(pid) if dynamic => {
                let Some(at) = self.children.iter().position(|c| c.pid == Some(pid)) else {
                    return SupReply::Refused(format!("{pid} is not a child"));
                };
                let child = self.children.remove(at);
                stop_child(pid, child.spec.shutdown);
                SupReply::Done
            }
            SupCall::TerminateChild(id) if !dynamic => {
                let Some(at) = self.position(&id) else {
                    return SupReply::Refused(format!("no child `{id}`"));
                };
                if let Some(pid) = self.children[at].pid.take() {
                    stop_child(pid, self.children[at].spec.shutdown);
                }
                if self.children[at].spec.restart == Restart::Temporary {
                    self.children.remove(at);
                }
                SupReply::Done
            }
            SupCall::RestartChild(id) if !dynamic => {
                let Some(at) = self.position(&id) else {
                    return SupReply::Refused(format!("no child `{id}`"));
                };
                if self.children[at].pid.is_some() {
                    return SupReply::Refused(format!("child `{id}` is running"));
                }
                match spawn_child(&self.children[at].spec) {
                    Ok(pid) => {
                        self.children[at].pid = Some(pid);
                        SupReply::Started(pid)
                    }
                    Err(why) => SupReply::Refused(why),
                }
            }
            SupCall::DeleteChild(id) if !dynamic => match self.position(&id) {
                Some(at) if self.children[at].pid.is_none() => {
                    self.children.remove(at);
                    SupReply::Done
                }
                Some(_) => SupReply::Refused(format!("child `{id}` is running")),
                None => SupReply::Refused(format!("no child `{id}`")),
            },
            SupCall::WhichChildren => SupReply::Children(
                self.children
                    .iter()
                    .map(|c| ChildInfo {
                        id: c.spec.id.clone(),
                        pid: c.pid,
                        module: c.spec.module.clone(),
                        restart: c.spec.restart,
                    })
                    .collect(),
            ),
            other => SupReply::Refused(format!(
                "{other:?} does not apply to a {:?} supervisor",
                self.flags.strategy
            )),
        }
    }
}

impl<T: Supervisor> Server for Sup<T> {
    type Args = T::Args;
    type Call = SupCall;
    type Reply = SupReply;
    type Cast = Never;
    type Info = Never;

    fn init(args: T::Args) -> Result<Self, String> {
        trap_exit(true);
        let spec = T::init(args)?;
        let mut ids = std::collections::HashSet::new();
        if let Some(dup) = spec.children.iter().find(|c| !ids.insert(c.id.as_str())) {
            return Err(format!(
                "bad supervisor spec: two children named `{}`",
                dup.id
            ));
        }
        let dynamic = spec.flags.strategy == Strategy::SimpleOneForOne;
        if dynamic && spec.children.len() != 1 {
            return Err(format!(
                "bad supervisor spec: simple_one_for_one takes exactly one child spec, not {}",
                spec.children.len()
            ));
        }
        let mut sup = Sup {
            flags: spec.flags,
            children: Vec::new(),
            template: None,
            restarts: VecDeque::new(),
            callbacks: PhantomData,
        };
        if dynamic {
            sup.template = spec.children.into_iter().next();
            return Ok(sup);
        }
        for child in spec.children {
            match spawn_child(&child) {
                Ok(pid) => sup.children.push(Child {
                    spec: child,
                    pid: Some(pid),
                }),
                Err(why) => {
                    sup.stop_from(0);
                    return Err(format!("shutdown: {why}"));
                }
            }
        }
        Ok(sup)
    }

    fn handle_call(&mut self, req: SupCall, _from: Caller<SupReply>) -> CallResult<SupReply> {
        CallResult::Reply(self.handle(req))
    }

    fn handle_info(&mut self, msg: Message<Never>) -> Next {
        let Message::Exit { from, reason } = msg else {
            return Next::Continue;
        };
        match self.children.iter().position(|c| c.pid == Some(from)) {
            Some(at) => self.child_exited(at, &reason),
            // Not a child: the parent (or another linked process) ended,
            // and the supervisor ends with it, children first.
            None if reason != reason::NORMAL => Next::Stop(reason),
            None => Next::Continue,
        }
    }

    fn terminate(&mut self, _reason: &str) {
        self.stop_from(0);
    }
}

/// Export a [`Supervisor`] as this module's process:
/// `molt_sdk::supervisor!(MySup);` (also with `name = ".."`, as
/// [`behaviour!`](crate::behaviour!)).
#[macro_export]
macro_rules! supervisor {
    ($ty:ty) => {
        $crate::server!($crate::supervisor::Sup<$ty>);
    };
    ($ty:ty, name = $name:expr) => {
        $crate::server!($crate::supervisor::Sup<$ty>, name = $name);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree;

    impl Supervisor for Tree {
        type Args = ();
        fn init(_: ()) -> Result<Spec, String> {
            Ok(Spec {
                flags: Flags::default(),
                children: vec![],
            })
        }
    }

    #[test]
    fn normal_exits_are_normal_shutdown_and_shutdown_with_a_reason() {
        assert!(normal_exit("normal"));
        assert!(normal_exit("shutdown"));
        assert!(normal_exit("shutdown: upstream gone"));
        assert!(!normal_exit("killed"));
        assert!(!normal_exit("panic: boom at src/lib.rs:1"));
    }

    #[test]
    fn state_round_trips_through_the_codec() {
        let sup: Sup<Tree> = Sup {
            flags: Flags {
                strategy: Strategy::RestForOne,
                intensity: 3,
                period: Duration::from_secs(10),
            },
            children: vec![Child {
                spec: ChildSpec::worker("a", "worker", &7u32).restart(Restart::Transient),
                pid: None,
            }],
            template: None,
            restarts: VecDeque::from([1, 2]),
            callbacks: PhantomData,
        };
        let back: Sup<Tree> = codec::decode(&codec::encode(&sup)).unwrap();
        assert_eq!(back.flags, sup.flags);
        assert_eq!(back.children[0].spec, sup.children[0].spec);
        assert_eq!(back.restarts, sup.restarts);
    }

    #[test]
    fn child_specs_build() {
        let s = ChildSpec::supervisor("sub", "sub-sup", &());
        assert_eq!(s.shutdown, Shutdown::Infinity);
        assert_eq!(s.restart, Restart::Permanent);
        let w = ChildSpec::worker("w", "worker", &1u8).shutdown(Shutdown::BrutalKill);
        assert_eq!(w.shutdown, Shutdown::BrutalKill);
        assert_eq!(w.args, codec::encode(&1u8));
    }
}
