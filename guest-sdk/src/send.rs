//! Sending messages: typed (tag DATA), tagged, raw bytes, and by name.
//!
//! Sending to a dead process succeeds and the message is dropped, as in
//! Erlang. Tags at or above `molt_abi::tag::RESERVED_MIN` cannot be sent.

use molt_abi::tag;
use serde::Serialize;

use crate::error::{Error, check};
use crate::process::{Pid, Ref};
use crate::{codec, sys};

/// Send a typed message (tag `DATA`, no reference).
pub fn send<T: Serialize + ?Sized>(pid: Pid, msg: &T) -> Result<(), Error> {
    send_raw(pid, tag::DATA, None, &codec::encode(msg))
}

/// Send a typed message with an explicit tag and optional envelope reference.
pub fn send_tagged<T: Serialize + ?Sized>(
    pid: Pid,
    tag: u32,
    reference: Option<Ref>,
    msg: &T,
) -> Result<(), Error> {
    send_raw(pid, tag, reference, &codec::encode(msg))
}

/// Send payload bytes as they are.
pub fn send_raw(pid: Pid, tag: u32, reference: Option<Ref>, payload: &[u8]) -> Result<(), Error> {
    let reference = reference.map(Ref::to_bytes);
    check(sys::send(&pid.to_bytes(), tag, reference.as_ref(), payload)).map(drop)
}

/// Send a typed message (tag `DATA`) to the process registered under
/// `name`. Fails with [`Error::NotRegistered`] if there is none.
pub fn send_named<T: Serialize + ?Sized>(name: &str, msg: &T) -> Result<(), Error> {
    send_named_raw(name, tag::DATA, None, &codec::encode(msg))
}

/// Send payload bytes as they are to the process registered under `name`.
pub fn send_named_raw(
    name: &str,
    tag: u32,
    reference: Option<Ref>,
    payload: &[u8],
) -> Result<(), Error> {
    let reference = reference.map(Ref::to_bytes);
    check(sys::send_named(
        name.as_bytes(),
        tag,
        reference.as_ref(),
        payload,
    ))
    .map(drop)
}
