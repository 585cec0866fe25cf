//! Processes: who am I, spawning, links, monitors, exit signals.

use molt_abi::{PID_BYTES, REF_BYTES, demonitor_flags, spawn_flags};
use serde::Serialize;

use crate::error::{Error, check};
use crate::{codec, sys};

pub use molt_abi::{Pid, Ref};

/// The calling process's pid.
pub fn self_pid() -> Pid {
    let mut out = [0u8; PID_BYTES];
    sys::self_pid(&mut out);
    Pid::from_bytes(&out)
}

/// Start a process running the current version of `module`, with `args`
/// (encoded with [`codec::encode`]) as its init arguments.
pub fn spawn(module: &str, args: &impl Serialize) -> Result<Pid, Error> {
    spawn_bytes(module, &codec::encode(args), false, false).map(|(pid, _)| pid)
}

/// [`spawn`], linking the new process to the caller before it runs.
pub fn spawn_link(module: &str, args: &impl Serialize) -> Result<Pid, Error> {
    spawn_bytes(module, &codec::encode(args), true, false).map(|(pid, _)| pid)
}

/// [`spawn`], monitoring the new process; returns its pid and the monitor
/// reference.
pub fn spawn_monitor(module: &str, args: &impl Serialize) -> Result<(Pid, Ref), Error> {
    let (pid, reference) = spawn_bytes(module, &codec::encode(args), false, true)?;
    Ok((pid, reference.unwrap_or(Ref::NONE)))
}

/// Spawn with init argument bytes given as they are (no encoding), and
/// optionally link and/or monitor. The reference is `Some` iff `monitor`.
pub fn spawn_bytes(
    module: &str,
    args: &[u8],
    link: bool,
    monitor: bool,
) -> Result<(Pid, Option<Ref>), Error> {
    spawn_with(link, monitor, |flags, pid, reference| {
        sys::spawn(module.as_bytes(), args, flags, pid, reference)
    })
}

/// The common part of `spawn` and `spawn_on`: flags in, pid and optional
/// monitor reference out. `call` makes the host call with the flags and the
/// output buffers.
pub(crate) fn spawn_with(
    link: bool,
    monitor: bool,
    call: impl FnOnce(i32, &mut [u8; PID_BYTES], &mut [u8; REF_BYTES]) -> i32,
) -> Result<(Pid, Option<Ref>), Error> {
    let mut flags = 0;
    if link {
        flags |= spawn_flags::LINK;
    }
    if monitor {
        flags |= spawn_flags::MONITOR;
    }
    let (mut pid, mut reference) = ([0u8; PID_BYTES], [0u8; REF_BYTES]);
    check(call(flags, &mut pid, &mut reference))?;
    Ok((
        Pid::from_bytes(&pid),
        monitor.then(|| Ref::from_bytes(&reference)),
    ))
}

/// Link the caller and `pid`, both ways. Fails with [`Error::NoProc`] if
/// `pid` is not alive, [`Error::LinkLimit`] if the caller has `links_max`
/// links already.
pub fn link(pid: Pid) -> Result<(), Error> {
    check(sys::link(&pid.to_bytes())).map(drop)
}

/// Remove the link between the caller and `pid`, if there is one.
pub fn unlink(pid: Pid) -> Result<(), Error> {
    check(sys::unlink(&pid.to_bytes())).map(drop)
}

/// Monitor `pid`. When it exits (at once if it is already dead) the caller
/// gets a DOWN message whose envelope reference is the returned reference.
/// Monitors stack: each call makes a new one. A process that holds
/// `monitors_max` monitors already panics here (as Erlang raises
/// `system_limit`); [`try_monitor`] returns the error instead.
pub fn monitor(pid: Pid) -> Ref {
    match try_monitor(pid) {
        Ok(reference) => reference,
        Err(e) => panic!("monitor: {e}"),
    }
}

/// [`monitor`], failing with [`Error::MonitorLimit`] when the caller holds
/// `monitors_max` monitors already. A dead pid is not an error: it yields
/// DOWN `noproc`.
pub fn try_monitor(pid: Pid) -> Result<Ref, Error> {
    let mut out = [0u8; REF_BYTES];
    check(sys::monitor(&pid.to_bytes(), &mut out))?;
    Ok(Ref::from_bytes(&out))
}

/// Remove a monitor; returns whether it was active. With `flush`, also
/// drop its DOWN message if one is already queued.
pub fn demonitor(reference: Ref, flush: bool) -> bool {
    let flags = if flush { demonitor_flags::FLUSH } else { 0 };
    sys::demonitor(&reference.to_bytes(), flags) == 1
}

/// Send an exit signal with `reason` to `pid` (Erlang's `exit/2`): `normal`
/// is ignored unless `pid` traps exits, `kill` cannot be trapped.
pub fn exit(pid: Pid, reason: &str) -> Result<(), Error> {
    check(sys::exit(&pid.to_bytes(), reason.as_bytes())).map(drop)
}

/// End the calling process with `reason`. Does not return.
pub fn exit_self(reason: &str) -> ! {
    sys::exit_self(reason.as_bytes())
}

/// Set whether exit signals become EXIT messages (`true`) or kill this
/// process (`false`); returns the previous setting.
pub fn trap_exit(trap: bool) -> bool {
    sys::trap_exit(i32::from(trap)) != 0
}

/// Whether `pid` is a live process.
pub fn is_alive(pid: Pid) -> bool {
    sys::is_alive(&pid.to_bytes()) == 1
}
