//! Servers: gen_server-style behaviours with typed calls (request and
//! reply), casts and info messages, deferred replies and stop with a
//! reason; and the client side, [`call`] and [`cast`].
//!
//! A [`Server`] runs as a [`Behaviour`] (through [`ServerBehaviour`] and
//! the [`server!`](crate::server!) macro), so its state is saved and
//! migrated on a hot upgrade like any behaviour's, deferred callers
//! included: a [`Caller`] is plain data.
//!
//! Wire (see `ABI.md`, "SDK conventions"): a call is tag `CALL` with the
//! caller's monitor reference as envelope reference and the payload
//! `(caller pid, request)`; the reply is tag `REPLY` with the same
//! reference; a cast is tag `CAST`; info messages are everything else
//! (typed ones are tag `DATA`).
//!
//! # Late replies
//!
//! Erlang since OTP 24 drops a reply that comes after the call timed out
//! (the caller's alias is gone). molt has no aliases, so a reply can still
//! arrive after [`call`] gave up with [`CallError::Timeout`]: `call` drops
//! one that is already queued when it gives up, but one that comes later
//! stays in the mailbox with tag `REPLY`. A raw process never sees it
//! through [`recv`](crate::recv) (which takes tag `DATA` only); a server
//! gets it in [`Server::handle_info`] as [`Message::Other`] with tag
//! `REPLY`, which a server should ignore, as gen_servers ignore stray
//! `{Ref, Reply}` messages.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use molt_abi::tag;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::behaviour::{Behaviour, Message, Next};
use crate::codec;
use crate::error::Error;
use crate::process::{Pid, Ref, demonitor, exit_self, monitor, self_pid};
use crate::receive::{Envelope, Filter, System, receive_matching};
use crate::send::{send_raw, with_encoded};

/// How long [`call`] waits when the caller has no better figure (Erlang's
/// default, five seconds).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A process defined by a serializable state and a handler per kind of
/// message: calls (with a reply), casts, and info (everything else).
///
/// Run it with [`server!`](crate::server!). The state is saved and handed
/// to [`Server::code_change`] of the new version on a hot upgrade.
///
/// ```no_run
/// use molt_sdk::server::{CallResult, Caller, Never, Server};
/// use molt_sdk::{Message, Next};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// pub struct Stack(Vec<u64>);
///
/// #[derive(Serialize, Deserialize)]
/// pub enum StackCall { Pop, Len }
///
/// impl Server for Stack {
///     type Args = Vec<u64>;
///     type Call = StackCall;
///     type Reply = Option<u64>;
///     type Cast = u64; // push
///     type Info = Never;
///
///     fn init(items: Vec<u64>) -> Result<Self, String> {
///         Ok(Stack(items))
///     }
///
///     fn handle_call(&mut self, req: StackCall, _from: Caller<Option<u64>>) -> CallResult<Option<u64>> {
///         match req {
///             StackCall::Pop => CallResult::Reply(self.0.pop()),
///             StackCall::Len => CallResult::Reply(Some(self.0.len() as u64)),
///         }
///     }
///
///     fn handle_cast(&mut self, item: u64) -> Next {
///         self.0.push(item);
///         Next::Continue
///     }
/// }
///
/// molt_sdk::server!(Stack);
/// ```
pub trait Server: Serialize + DeserializeOwned + Sized + 'static {
    /// The init arguments the spawner passes.
    type Args: DeserializeOwned;
    /// Requests that expect a reply ([`call`]).
    type Call: Serialize + DeserializeOwned;
    /// Replies to [`Server::Call`].
    type Reply: Serialize + DeserializeOwned;
    /// Requests without a reply ([`cast`]); [`Never`] if there are none.
    type Cast: Serialize + DeserializeOwned;
    /// Typed info messages (tag `DATA`, sent with [`send`](crate::send));
    /// [`Never`] if there are none.
    type Info: DeserializeOwned;

    /// Build the initial state. `Err(reason)` ends the process with that
    /// reason (a caller waiting on it gets [`CallError::Down`]).
    fn init(args: Self::Args) -> Result<Self, String>;

    /// Handle a call. Reply now, later (keep `from`, possibly in the state,
    /// and use [`Caller::reply`] from another handler), or stop.
    fn handle_call(
        &mut self,
        req: Self::Call,
        from: Caller<Self::Reply>,
    ) -> CallResult<Self::Reply>;

    /// Handle a cast. The default ignores it.
    fn handle_cast(&mut self, cast: Self::Cast) -> Next {
        let _ = cast;
        Next::Continue
    }

    /// Handle any other message: typed info (`Message::Data`), trapped
    /// exits, DOWN and NODEDOWN messages, and `Message::Other` (other tags,
    /// `DATA` that did not decode as `Info`, a call or cast that did not
    /// decode, a reply that came after its call timed out). The default
    /// ignores it.
    fn handle_info(&mut self, msg: Message<Self::Info>) -> Next {
        let _ = msg;
        Next::Continue
    }

    /// Called before the process stops because a handler asked it to (a
    /// [`Next::Stop`] or a [`CallResult::Stop`]), with the reason it will
    /// exit with. Not called when the process is killed or panics.
    fn terminate(&mut self, reason: &str) {
        let _ = reason;
    }

    /// Build this version's state from the state an older version saved.
    /// The default decodes it as this same type.
    fn code_change(from_version: &str, state: &[u8]) -> Result<Self, String> {
        let _ = from_version;
        codec::decode(state).map_err(|e| e.to_string())
    }
}

/// What [`Server::handle_call`] does with a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallResult<R> {
    /// Reply now.
    Reply(R),
    /// Do not reply now: the handler kept the [`Caller`] and answers later
    /// with [`Caller::reply`] (Erlang's `{noreply, State}` + `gen_server:reply`).
    NoReply,
    /// Stop with `reason`: [`Server::terminate`] runs, then `reply` (if
    /// any) goes to the caller, then the process exits. A caller given no
    /// reply gets [`CallError::Down`] with `reason`.
    Stop {
        /// The exit reason.
        reason: String,
        /// The reply to this call, if any.
        reply: Option<R>,
    },
}

/// An uninhabited message type, for a server with no casts or no typed
/// info messages: `type Cast = Never;`. Nothing decodes as it, so a stray
/// `DATA` message reaches [`Server::handle_info`] as `Message::Other`.
///
/// ```
/// use molt_sdk::server::Never;
/// assert!(molt_sdk::codec::decode::<Never>(&[0]).is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Never {}

/// Who made a call: where the reply goes. Plain data (serializable), so a
/// server can keep it in its state and answer later, even after an
/// upgrade. `R` is the reply type, so a kept caller gets the right type.
///
/// (Erlang calls this `From`; the name would shadow `std::convert::From`.)
///
/// ```no_run
/// use molt_sdk::server::Caller;
/// fn answer_later(pending: &mut Vec<Caller<u64>>) {
///     for caller in pending.drain(..) {
///         let _ = caller.reply(&42);
///     }
/// }
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Caller<R> {
    /// The calling process.
    pub pid: Pid,
    /// The call's reference (the envelope reference of the reply).
    pub reference: Ref,
    #[serde(skip)]
    reply: PhantomData<fn(R)>,
}

impl<R> Caller<R> {
    /// A caller from its parts (for a server that decodes calls itself).
    ///
    /// ```
    /// use molt_sdk::server::Caller;
    /// use molt_sdk::{Pid, Ref};
    /// let caller: Caller<u8> = Caller::new(Pid::default(), Ref::NONE);
    /// assert_eq!(caller.reference, Ref::NONE);
    /// ```
    pub fn new(pid: Pid, reference: Ref) -> Caller<R> {
        Caller {
            pid,
            reference,
            reply: PhantomData,
        }
    }
}

impl<R: Serialize> Caller<R> {
    /// Send the reply (tag `REPLY`, the call's reference). Replying to a
    /// caller that is gone, or twice, is harmless: the message is dropped
    /// (or, if the caller is still alive, ignored by it as stray).
    ///
    /// ```no_run
    /// # let caller: molt_sdk::server::Caller<String> = todo!();
    /// caller.reply(&"done".to_string()).unwrap();
    /// ```
    pub fn reply(&self, reply: &R) -> Result<(), Error> {
        with_encoded(reply, |payload| {
            send_raw(self.pid, tag::REPLY, Some(self.reference), payload)
        })
    }
}

impl<R> Clone for Caller<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Caller<R> {}

impl<R> PartialEq for Caller<R> {
    fn eq(&self, other: &Self) -> bool {
        (self.pid, self.reference) == (other.pid, other.reference)
    }
}

impl<R> Eq for Caller<R> {}

impl<R> fmt::Debug for Caller<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("pid", &self.pid)
            .field("reference", &self.reference)
            .finish()
    }
}

/// Reply to a kept caller of server `S` (the same as [`Caller::reply`]).
///
/// ```no_run
/// # use molt_sdk::server::{Caller, Server};
/// fn release<S: Server>(from: Caller<S::Reply>, reply: S::Reply) {
///     let _ = molt_sdk::server::reply::<S>(from, &reply);
/// }
/// ```
pub fn reply<S: Server>(from: Caller<S::Reply>, reply: &S::Reply) -> Result<(), Error> {
    from.reply(reply)
}

/// Why a [`call`] returned no reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallError {
    /// The callee exited before replying, with this reason: `noproc` if
    /// it was not alive, `noconnection` if its node could not be reached
    /// or went away, a panic text if it crashed.
    Down(String),
    /// No reply within the timeout. The callee may still be working on
    /// the call; see the module docs for a reply that comes late.
    Timeout,
    /// The reply did not decode as the expected type (client and server
    /// disagree on the protocol).
    BadReply(String),
    /// The request could not be sent (too large, a full mailbox).
    Send(Error),
    /// A process called itself, which could only time out.
    CallingSelf,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Down(reason) => write!(f, "the server exited: {reason}"),
            CallError::Timeout => f.write_str("the call timed out"),
            CallError::BadReply(why) => write!(f, "the reply does not decode: {why}"),
            CallError::Send(e) => write!(f, "the call could not be sent: {e}"),
            CallError::CallingSelf => f.write_str("a process called itself"),
        }
    }
}

impl std::error::Error for CallError {}

/// Call server `S` at `to` and wait up to `timeout` for its reply
/// ([`Duration::MAX`] waits for ever). Works from a raw process and from
/// inside another server's handler; other messages stay queued, in order.
///
/// The caller monitors the callee for the duration of the call, so a
/// callee that is dead, dies, or whose node goes away ends the wait with
/// [`CallError::Down`] instead of a hang.
///
/// ```no_run
/// # use molt_sdk::server::{self, CallResult, Caller, Never, Server};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Stack(Vec<u64>);
/// # impl Server for Stack {
/// #     type Args = (); type Call = (); type Reply = Option<u64>; type Cast = Never; type Info = Never;
/// #     fn init(_: ()) -> Result<Self, String> { Ok(Stack(vec![])) }
/// #     fn handle_call(&mut self, _: (), _: Caller<Option<u64>>) -> CallResult<Option<u64>> { CallResult::Reply(self.0.pop()) }
/// # }
/// # let stack = molt_sdk::self_pid();
/// match server::call::<Stack>(stack, &(), server::DEFAULT_TIMEOUT) {
///     Ok(top) => molt_sdk::info!("popped {top:?}"),
///     Err(e) => molt_sdk::warn!("no answer: {e}"),
/// }
/// ```
pub fn call<S: Server>(to: Pid, req: &S::Call, timeout: Duration) -> Result<S::Reply, CallError> {
    call_as(to, req, timeout)
}

/// [`call`] typed by the request and reply types instead of the server
/// type, for a client that does not link the server's crate (the reply
/// type is usually inferred).
///
/// ```no_run
/// # let counter = molt_sdk::self_pid();
/// let count: u64 = molt_sdk::server::call_as(counter, &"get", molt_sdk::server::DEFAULT_TIMEOUT)?;
/// # Ok::<(), molt_sdk::server::CallError>(())
/// ```
pub fn call_as<Q: Serialize + ?Sized, R: DeserializeOwned>(
    to: Pid,
    req: &Q,
    timeout: Duration,
) -> Result<R, CallError> {
    if to == self_pid() {
        return Err(CallError::CallingSelf);
    }
    let reference = monitor(to);
    let sent = with_encoded(&(self_pid(), req), |payload| {
        send_raw(to, tag::CALL, Some(reference), payload)
    });
    if let Err(e) = sent {
        demonitor(reference, true);
        return Err(CallError::Send(e));
    }
    await_reply(to, reference, timeout, || {})
}

/// Wait for the reply tagged `reference` from `callee`, monitored under
/// that same reference; the monitor is gone when this returns. On timeout
/// `on_timeout` runs first (a task is killed there).
pub(crate) fn await_reply<R: DeserializeOwned>(
    callee: Pid,
    reference: Ref,
    timeout: Duration,
    on_timeout: impl FnOnce(),
) -> Result<R, CallError> {
    let filter = Filter::any()
        .tags(&[tag::REPLY, tag::DOWN])
        .reference(reference);
    let wait = (timeout != Duration::MAX).then_some(timeout);
    let Some(envelope) = receive_matching(&filter, wait) else {
        on_timeout();
        demonitor(reference, true);
        // A reply that came in the meantime would only be stray later.
        drop_reply(reference);
        return Err(CallError::Timeout);
    };
    if envelope.tag == tag::REPLY {
        demonitor(reference, true);
        return decode_reply(&envelope);
    }
    // The callee may have replied and then exited; its reply, if it came,
    // is the answer.
    if let Some(reply) = take_reply(reference) {
        return decode_reply(&reply);
    }
    match envelope.system() {
        Some(System::Down { reason, .. }) => Err(CallError::Down(reason)),
        _ => Err(CallError::Down(format!("malformed DOWN from {callee}"))),
    }
}

fn decode_reply<R: DeserializeOwned>(envelope: &Envelope) -> Result<R, CallError> {
    envelope
        .decode()
        .map_err(|e| CallError::BadReply(e.to_string()))
}

/// A reply tagged `reference` already in the mailbox, if any.
pub(crate) fn take_reply(reference: Ref) -> Option<Envelope> {
    let filter = Filter::any().tags(&[tag::REPLY]).reference(reference);
    receive_matching(&filter, Some(Duration::ZERO))
}

/// Drop a reply tagged `reference` already in the mailbox.
pub(crate) fn drop_reply(reference: Ref) {
    let _ = take_reply(reference);
}

/// Send a cast to server `S` at `to` (tag `CAST`); no reply, no wait.
/// Like [`send`](crate::send), it succeeds if `to` is dead.
///
/// ```no_run
/// # use molt_sdk::server::{self, CallResult, Caller, Never, Server};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Stack(Vec<u64>);
/// # impl Server for Stack {
/// #     type Args = (); type Call = (); type Reply = (); type Cast = u64; type Info = Never;
/// #     fn init(_: ()) -> Result<Self, String> { Ok(Stack(vec![])) }
/// #     fn handle_call(&mut self, _: (), _: Caller<()>) -> CallResult<()> { CallResult::Reply(()) }
/// # }
/// # let stack = molt_sdk::self_pid();
/// server::cast::<Stack>(stack, &7).unwrap();
/// ```
pub fn cast<S: Server>(to: Pid, cast: &S::Cast) -> Result<(), Error> {
    cast_as(to, cast)
}

/// [`cast`] typed by the cast's type instead of the server type.
///
/// ```no_run
/// # let counter = molt_sdk::self_pid();
/// molt_sdk::server::cast_as(counter, &5u64).unwrap();
/// ```
pub fn cast_as<C: Serialize + ?Sized>(to: Pid, cast: &C) -> Result<(), Error> {
    with_encoded(cast, |payload| send_raw(to, tag::CAST, None, payload))
}

/// The [`Behaviour`] that runs a [`Server`]: it sorts messages into calls,
/// casts and info. Its state is the server's, encoded the same way, so
/// upgrades migrate the server's state unchanged. Export it with
/// [`server!`](crate::server!).
///
/// ```
/// # use molt_sdk::server::{CallResult, Caller, Never, Server, ServerBehaviour};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Unit;
/// # impl Server for Unit {
/// #     type Args = (); type Call = (); type Reply = (); type Cast = Never; type Info = Never;
/// #     fn init(_: ()) -> Result<Self, String> { Ok(Unit) }
/// #     fn handle_call(&mut self, _: (), _: Caller<()>) -> CallResult<()> { CallResult::Reply(()) }
/// # }
/// let running = ServerBehaviour(Unit);
/// assert!(molt_sdk::codec::encode(&running).is_empty());
/// ```
pub struct ServerBehaviour<S>(pub S);

impl<S: Server> Serialize for ServerBehaviour<S> {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, S: Server> Deserialize<'de> for ServerBehaviour<S> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        S::deserialize(deserializer).map(ServerBehaviour)
    }
}

impl<S: Server> Behaviour for ServerBehaviour<S> {
    type Args = S::Args;
    type Msg = S::Info;

    fn init(args: S::Args) -> Result<Self, String> {
        S::init(args).map(ServerBehaviour)
    }

    fn handle(&mut self, msg: Message<S::Info>) -> Next {
        match msg {
            Message::Other(envelope) if envelope.tag == tag::CALL => self.dispatch_call(envelope),
            Message::Other(envelope) if envelope.tag == tag::CAST => {
                match envelope.decode::<S::Cast>() {
                    Ok(cast) => self.0.handle_cast(cast),
                    Err(e) => {
                        crate::warn!("a cast does not decode as this server's Cast type: {e}");
                        self.0.handle_info(Message::Other(envelope))
                    }
                }
            }
            other => self.0.handle_info(other),
        }
    }

    fn terminate(&mut self, reason: &str) {
        self.0.terminate(reason)
    }

    fn code_change(from_version: &str, state: &[u8]) -> Result<Self, String> {
        S::code_change(from_version, state).map(ServerBehaviour)
    }
}

impl<S: Server> ServerBehaviour<S> {
    fn dispatch_call(&mut self, envelope: Envelope) -> Next {
        let decoded = match envelope.reference {
            Some(reference) => envelope
                .decode::<(Pid, S::Call)>()
                .map(|(pid, req)| (Caller::new(pid, reference), req))
                .map_err(|e| e.to_string()),
            None => Err("no reference".to_owned()),
        };
        let (from, req) = match decoded {
            Ok(call) => call,
            Err(why) => {
                // The caller, if any, waits for its timeout or this
                // server's exit: a malformed call is its bug, not ours.
                crate::warn!("a call does not decode as this server's Call type: {why}");
                return self.0.handle_info(Message::Other(envelope));
            }
        };
        match self.0.handle_call(req, from) {
            CallResult::Reply(reply) => {
                let _ = from.reply(&reply);
                Next::Continue
            }
            CallResult::NoReply => Next::Continue,
            CallResult::Stop {
                reason,
                reply: None,
            } => Next::Stop(reason),
            CallResult::Stop {
                reason,
                reply: Some(reply),
            } => {
                // As gen_server: terminate first, so the caller sees its
                // effects once it has the reply.
                self.0.terminate(&reason);
                let _ = from.reply(&reply);
                exit_self(&reason)
            }
        }
    }
}

/// Export a [`Server`] as this module's entry points (through
/// [`ServerBehaviour`] and [`behaviour!`](crate::behaviour!)): use once per
/// crate, `molt_sdk::server!(Stack);`, or
/// `molt_sdk::server!(StackV2, name = "stack");` to name the module other
/// than the package.
///
/// ```no_run
/// # use molt_sdk::server::{CallResult, Caller, Never, Server};
/// # #[derive(serde::Serialize, serde::Deserialize)] pub struct Unit;
/// # impl Server for Unit {
/// #     type Args = (); type Call = (); type Reply = (); type Cast = Never; type Info = Never;
/// #     fn init(_: ()) -> Result<Self, String> { Ok(Unit) }
/// #     fn handle_call(&mut self, _: (), _: Caller<()>) -> CallResult<()> { CallResult::Reply(()) }
/// # }
/// molt_sdk::server!(Unit);
/// ```
#[macro_export]
macro_rules! server {
    ($ty:ty) => {
        $crate::behaviour!($crate::server::ServerBehaviour<$ty>);
    };
    ($ty:ty, name = $name:expr) => {
        $crate::behaviour!($crate::server::ServerBehaviour<$ty>, name = $name);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Pending {
        value: u64,
        waiting: Vec<Caller<u64>>,
    }

    impl Server for Pending {
        type Args = u64;
        type Call = ();
        type Reply = u64;
        type Cast = Never;
        type Info = Never;
        fn init(value: u64) -> Result<Self, String> {
            Ok(Pending {
                value,
                waiting: Vec::new(),
            })
        }
        fn handle_call(&mut self, _: (), from: Caller<u64>) -> CallResult<u64> {
            self.waiting.push(from);
            CallResult::NoReply
        }
    }

    fn pid(serial: u64) -> Pid {
        Pid {
            node: 1,
            incarnation: 2,
            serial,
        }
    }

    #[test]
    fn a_kept_caller_survives_the_state_codec() {
        let reference = Ref {
            node: 1,
            incarnation: 2,
            serial: 9,
        };
        let state = Pending {
            value: 7,
            waiting: vec![Caller::new(pid(3), reference)],
        };
        let bytes = codec::encode(&ServerBehaviour(state));
        let back = <ServerBehaviour<Pending> as Behaviour>::code_change("0.1.0", &bytes).unwrap();
        assert_eq!(back.0.value, 7);
        assert_eq!(back.0.waiting, vec![Caller::new(pid(3), reference)]);
        // The wrapper adds nothing to the encoding.
        assert_eq!(
            bytes,
            codec::encode(&Pending {
                value: 7,
                waiting: vec![Caller::new(pid(3), reference)]
            })
        );
    }

    #[test]
    fn the_call_payload_is_the_caller_then_the_request() {
        let payload = codec::encode(&(pid(4), &5u64));
        let (caller, used) = codec::decode_prefix::<Pid>(&payload).unwrap();
        assert_eq!(caller, pid(4));
        assert_eq!(codec::decode::<u64>(&payload[used..]), Ok(5));
        // A task's call: the request `()` adds nothing.
        assert_eq!(codec::encode(&(pid(4), ())), codec::encode(&pid(4)));
    }

    #[test]
    fn nothing_decodes_as_never() {
        assert!(codec::decode::<Never>(&[]).is_err());
        assert!(codec::decode::<Never>(&[0]).is_err());
    }

    #[test]
    fn call_errors_print_and_round_trip() {
        for e in [
            CallError::Down("noconnection".into()),
            CallError::Timeout,
            CallError::BadReply("x".into()),
            CallError::Send(Error::MailboxFull),
            CallError::CallingSelf,
        ] {
            assert!(!e.to_string().is_empty());
            assert_eq!(codec::decode::<CallError>(&codec::encode(&e)), Ok(e));
        }
    }
}
