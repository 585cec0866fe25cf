//! Cluster-wide names and locks, as Erlang's `global` but on consensus:
//! the cluster's coordination group (a Raft group) decides, so a name
//! never has two holders and nothing is killed to resolve a clash.
//!
//! - [`register`] is compare-and-set: of two registrars one wins, the
//!   other gets [`Registered::Taken`] with the holder.
//! - [`whereis`] reads this node's replica (fast; it may lag the leader by
//!   the time an entry takes to arrive); [`whereis_linearizable`] asks the
//!   leader.
//! - [`lock`] takes a set of locks at once, waiting in each lock's FIFO
//!   queue: no starvation, and no deadlock between sets. Every grant has a
//!   fencing token, larger than every token granted before anywhere in the
//!   cluster: pass it to whatever the lock protects so that a stale
//!   holder's writes can be refused.
//! - [`trans`] runs a function holding a set of locks and releases them
//!   after, whatever it returns.
//! - What a process holds is freed when it exits, and everything its node
//!   held when the node's session expires. A node that cannot renew its
//!   session first tells each of its lock holders with a
//!   [`crate::System::Coord`] `LockLost` message.
//!
//! Calls that need the group wait for it, up to the node's quorum timeout,
//! and then fail with [`Error::NoQuorum`]. A node without coordination
//! answers [`Error::NoCoordination`].
//!
//! ```no_run
//! use molt_sdk::global::{self, Mode};
//! use std::time::Duration;
//!
//! global::register("db-primary", molt_sdk::self_pid()).unwrap();
//! let token = global::lock(&[("accounts", Mode::Exclusive)], Duration::from_secs(5)).unwrap()[0];
//! // ... write with `token` as the fence ...
//! global::unlock("accounts").unwrap();
//! # let _ = token;
//! ```

use std::time::Duration;

use molt_abi::{PID_BYTES, lock_mode, whereis_flags};
use serde::Serialize;

use crate::error::{Error, check};
use crate::process::Pid;
use crate::sys;

/// What [`register`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registered {
    /// The name is the process's now (or already was).
    Yes,
    /// Another process holds it.
    Taken(Pid),
}

/// Register the cluster name `name` for `pid`, a process of this node, if
/// no process holds it. Errors: [`Error::NoQuorum`],
/// [`Error::CoordLimit`], [`Error::SessionLost`], [`Error::BadArg`] (a
/// name empty or longer than 255 bytes, a pid of another node).
pub fn register(name: &str, pid: Pid) -> Result<Registered, Error> {
    let mut holder = [0u8; PID_BYTES];
    match sys::global_register(name.as_bytes(), &pid.to_bytes(), &mut holder) {
        molt_abi::status::ALREADY_REGISTERED => Ok(Registered::Taken(Pid::from_bytes(&holder))),
        code => check(code).map(|_| Registered::Yes),
    }
}

/// Free the cluster name `name`, held by `pid`. Errors:
/// [`Error::NotRegistered`], [`Error::NotHolder`], [`Error::NoQuorum`].
pub fn unregister(name: &str, pid: Pid) -> Result<(), Error> {
    check(sys::global_unregister(name.as_bytes(), &pid.to_bytes())).map(drop)
}

/// The holder of a cluster name, from this node's replica: fast, and it
/// may lag the leader.
pub fn whereis(name: &str) -> Option<Pid> {
    let mut out = [0u8; PID_BYTES];
    (sys::global_whereis(name.as_bytes(), 0, &mut out) == 0).then(|| Pid::from_bytes(&out))
}

/// The holder of a cluster name, as the coordination leader knows it once
/// it has confirmed it still leads. Errors: [`Error::NoQuorum`].
pub fn whereis_linearizable(name: &str) -> Result<Option<Pid>, Error> {
    let mut out = [0u8; PID_BYTES];
    match sys::global_whereis(name.as_bytes(), whereis_flags::LINEARIZABLE, &mut out) {
        molt_abi::status::NOT_REGISTERED => Ok(None),
        code => check(code).map(|_| Some(Pid::from_bytes(&out))),
    }
}

/// Send `msg` to the process holding the cluster name `name`, as this
/// node's replica knows it (Erlang's `global:send`), in one host call.
/// Errors: [`Error::NotRegistered`], [`Error::NoCoordination`],
/// [`Error::BadArg`] (a name empty or longer than 255 bytes), and those of
/// [`crate::send`].
pub fn send<T: Serialize + ?Sized>(name: &str, msg: &T) -> Result<(), Error> {
    crate::send::with_encoded(msg, |payload| {
        send_raw(name, molt_abi::tag::DATA, None, payload)
    })
}

/// Send payload bytes as they are, with `tag` and an optional envelope
/// reference, to the process holding the cluster name `name`. Errors as
/// [`send`].
pub fn send_raw(
    name: &str,
    tag: u32,
    reference: Option<crate::Ref>,
    payload: &[u8],
) -> Result<(), Error> {
    let reference = reference.map(crate::Ref::to_bytes);
    check(sys::global_send(
        name.as_bytes(),
        tag,
        reference.as_ref(),
        payload,
    ))
    .map(drop)
}

/// How a lock is wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One holder at a time.
    Exclusive,
    /// Any number of shared holders.
    Shared,
}

/// Take the locks `set` for the calling process, all at once, waiting in
/// their FIFO queues up to `timeout`. Returns each lock's fencing token,
/// in the set's order. Errors: [`Error::Timeout`], [`Error::NoQuorum`],
/// [`Error::CoordLimit`], [`Error::AlreadyHeld`] (the caller holds one, or
/// a lock is named twice), [`Error::SessionLost`], [`Error::BadArg`] (no
/// lock, more than 64, an id empty or longer than 255 bytes).
pub fn lock(set: &[(&str, Mode)], timeout: Duration) -> Result<Vec<u64>, Error> {
    let mut encoded = Vec::new();
    for (id, mode) in set {
        encoded.push(match mode {
            Mode::Exclusive => lock_mode::EXCLUSIVE,
            Mode::Shared => lock_mode::SHARED,
        });
        encoded.extend_from_slice(&(id.len() as u32).to_le_bytes());
        encoded.extend_from_slice(id.as_bytes());
    }
    let mut tokens = vec![0u8; set.len() * 8];
    let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    check(sys::lock(&encoded, ms, &mut tokens))?;
    Ok(tokens
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

/// Give back a lock the calling process holds. Errors:
/// [`Error::NotHolder`], [`Error::NoQuorum`].
pub fn unlock(id: &str) -> Result<(), Error> {
    check(sys::unlock(id.as_bytes())).map(drop)
}

/// Erlang's `global:trans`: take `set`, run `f` with the tokens, and give
/// every lock back after, whatever `f` returns. (If the process exits
/// inside `f`, the host frees the locks.)
pub fn trans<R>(
    set: &[(&str, Mode)],
    timeout: Duration,
    f: impl FnOnce(&[u64]) -> R,
) -> Result<R, Error> {
    let tokens = lock(set, timeout)?;
    let result = f(&tokens);
    for (id, _) in set {
        // A release that finds no quorum is retried by the node's session
        // expiry; the result of `f` stands.
        let _ = unlock(id);
    }
    Ok(result)
}
