//! The node-local name registry.

use molt_abi::PID_BYTES;

use crate::error::{Error, check};
use crate::process::Pid;
use crate::sys;

/// Register the calling process under `name` until it exits or calls
/// [`unregister`]. Fails with [`Error::NameTaken`], [`Error::AlreadyRegistered`]
/// or [`Error::BadArg`] (empty or longer than `molt_abi::NAME_BYTES_MAX`).
pub fn register(name: &str) -> Result<(), Error> {
    check(sys::register(name.as_bytes())).map(drop)
}

/// Remove a registered name. Fails with [`Error::NotRegistered`].
pub fn unregister(name: &str) -> Result<(), Error> {
    check(sys::unregister(name.as_bytes())).map(drop)
}

/// The process registered under `name`, if any.
pub fn whereis(name: &str) -> Option<Pid> {
    let mut out = [0u8; PID_BYTES];
    (sys::whereis(name.as_bytes(), &mut out) == 1).then(|| Pid::from_bytes(&out))
}
