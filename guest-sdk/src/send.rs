//! Sending messages: typed (tag DATA), tagged, raw bytes, and by name.
//!
//! Sending to a dead process succeeds and the message is dropped, as in
//! Erlang. Tags at or above `molt_abi::tag::RESERVED_MIN` cannot be sent.

use std::cell::RefCell;

use molt_abi::tag;
use serde::Serialize;

use crate::error::{Error, check};
use crate::process::{Pid, Ref};
use crate::{codec, sys};

/// The most room the encoding buffer keeps from one send to the next; a
/// larger message's room goes back to the allocator after it is sent.
const SCRATCH_BYTES_MAX: usize = 64 << 10;

thread_local! {
    /// Where typed messages are encoded: reused, so that a send does not
    /// allocate and free a buffer (and grow it a few times on the way).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Call `f` with `value` encoded. The bytes are in a buffer reused from
/// one call to the next; a call made while another holds it (from `f`, or
/// from a `Serialize` impl) encodes into a buffer of its own.
pub(crate) fn with_encoded<T: Serialize + ?Sized, R>(value: &T, f: impl FnOnce(&[u8]) -> R) -> R {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            codec::encode_to_vec(value, &mut buf);
            let out = f(&buf);
            if buf.capacity() > SCRATCH_BYTES_MAX {
                *buf = Vec::new();
            }
            out
        }
        Err(_) => f(&codec::encode(value)),
    })
}

/// Send a typed message (tag `DATA`, no reference).
pub fn send<T: Serialize + ?Sized>(pid: Pid, msg: &T) -> Result<(), Error> {
    with_encoded(msg, |payload| send_raw(pid, tag::DATA, None, payload))
}

/// Send a typed message with an explicit tag and optional envelope reference.
pub fn send_tagged<T: Serialize + ?Sized>(
    pid: Pid,
    tag: u32,
    reference: Option<Ref>,
    msg: &T,
) -> Result<(), Error> {
    with_encoded(msg, |payload| send_raw(pid, tag, reference, payload))
}

/// Send payload bytes as they are.
pub fn send_raw(pid: Pid, tag: u32, reference: Option<Ref>, payload: &[u8]) -> Result<(), Error> {
    let reference = reference.map(Ref::to_bytes);
    check(sys::send(&pid.to_bytes(), tag, reference.as_ref(), payload)).map(drop)
}

/// Send a typed message (tag `DATA`) to the process registered under
/// `name`. Fails with [`Error::NotRegistered`] if there is none.
pub fn send_named<T: Serialize + ?Sized>(name: &str, msg: &T) -> Result<(), Error> {
    with_encoded(msg, |payload| {
        send_named_raw(name, tag::DATA, None, payload)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_reuses_one_buffer_and_nested_calls_get_their_own() {
        let first = with_encoded(&(1u32, "one"), |bytes| {
            assert_eq!(codec::decode::<(u32, String)>(bytes), Ok((1, "one".into())));
            bytes.as_ptr()
        });
        // The same buffer again for the next message.
        let again = with_encoded(&(2u32, "two"), |bytes| {
            assert_eq!(codec::decode::<(u32, String)>(bytes), Ok((2, "two".into())));
            bytes.as_ptr()
        });
        assert_eq!(first, again);
        // A send from inside a send encodes elsewhere, and both are intact.
        with_encoded(&7u64, |outer| {
            with_encoded(&9u64, |inner| {
                assert_ne!(outer.as_ptr(), inner.as_ptr());
                assert_eq!(codec::decode::<u64>(inner), Ok(9));
            });
            assert_eq!(codec::decode::<u64>(outer), Ok(7));
        });
    }

    #[test]
    fn a_large_message_does_not_stay_in_the_buffer() {
        let big = vec![5u8; SCRATCH_BYTES_MAX * 2];
        with_encoded(&big, |bytes| assert!(bytes.len() > SCRATCH_BYTES_MAX));
        SCRATCH.with_borrow(|buf| assert!(buf.capacity() <= SCRATCH_BYTES_MAX));
    }
}
