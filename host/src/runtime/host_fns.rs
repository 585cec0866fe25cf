//! The host functions of the ABI, registered on the node's linker under
//! the names and signatures `molt-abi` gives. Guest memory is reached only
//! through [`super::guest_mem`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use molt_abi::{
    Header, IMPORT_MODULE, Pid, imports, log_level, reason, spawn_flags, status, timeout,
};
use wasmtime::{AsContextMut, Caller, Linker};

use super::cell::{Hot, Message};
use super::core::Filter;
use super::guest::{ProcState, ProcessExit};
use super::guest_mem::{self as gm, GuestFault};
use super::registry::RegisterError;
use super::{SendError, SpawnError};

type Result<T> = wasmtime::Result<T>;

/// Guest memory and process state, borrowed together.
pub(super) fn split<'a>(
    caller: &'a mut Caller<'_, ProcState>,
) -> Result<(&'a mut [u8], &'a mut ProcState)> {
    let memory = caller
        .data()
        .memory
        .ok_or_else(|| wasmtime::Error::msg("the guest exports no memory"))?;
    Ok(memory.data_and_store_mut(caller))
}

pub(super) fn fault(e: GuestFault) -> wasmtime::Error {
    wasmtime::Error::new(e)
}

pub(super) fn send_status(result: std::result::Result<(), SendError>) -> i32 {
    match result {
        Ok(()) => status::OK,
        Err(SendError::TooLarge { .. }) => status::MESSAGE_TOO_LARGE,
        Err(SendError::MailboxFull(_)) => status::MAILBOX_FULL,
        Err(SendError::ReservedTag(_)) => status::BAD_ARG,
        Err(SendError::NotRegistered(_)) => status::NOT_REGISTERED,
        // Guests wait for room instead (`send_user_waiting`); only host
        // senders are refused.
        Err(SendError::Congested) => status::MAILBOX_FULL,
    }
}

/// Read a payload. A pointer and length that do not lie in the guest's
/// memory are a bad pointer (the process ends), checked first; a payload
/// in memory but over `message_bytes_max` is `message_too_large`.
pub(super) fn payload(
    mem: &[u8],
    state: &ProcState,
    ptr: i32,
    len: i32,
) -> Result<std::result::Result<super::Payload, i32>> {
    let bytes = gm::bytes(mem, ptr, len, "message payload").map_err(fault)?;
    if bytes.len() > state.core.node.config.message_bytes_max {
        return Ok(Err(status::MESSAGE_TOO_LARGE));
    }
    Ok(Ok(bytes.into()))
}

/// If the send filled a connection, suspend the guest at its next epoch
/// check (deadline now) until the connection has room.
fn suspend_if_congested(c: &mut Caller<'_, ProcState>, wait: Option<super::backpressure::Wait>) {
    if let Some(wait) = wait {
        c.data_mut().backpressure = Some(wait);
        c.as_context_mut().set_epoch_deadline(0);
    }
}

/// Note for wakers where this process's guest and its native stack
/// are busy: around `at` (offsets in `mem` of a send's destination, pid
/// or name, and payload, as the guest passed them: a hint, never read
/// through) and here.
fn note_hot(mem: &[u8], st: &ProcState, at: [i32; 2]) {
    let hot = &st.core.cell.hot;
    let base = mem.as_ptr() as usize;
    for (k, at) in at.into_iter().enumerate() {
        hot.note(Hot::GUEST + k, base + at as u32 as usize, 1);
    }
    hot.note_stack();
}

/// The common tail of `send`, `send_named` and `global_send`: read the
/// reference and the payload, apply the limits, deliver. With the status,
/// the wait a congested connection asks of the sender.
fn send_from_guest(
    mem: &[u8],
    st: &mut ProcState,
    to: Pid,
    tag: i32,
    ref_ptr: i32,
    ptr: i32,
    len: i32,
) -> Result<(i32, Option<super::backpressure::Wait>)> {
    let reference = gm::optional_reference(mem, ref_ptr, "send ref").map_err(fault)?;
    let payload = match payload(mem, st, ptr, len)? {
        Ok(p) => p,
        Err(code) => return Ok((code, None)),
    };
    let message = Message {
        tag: tag as u32,
        reference,
        payload,
    };
    Ok(
        match st
            .core
            .node
            .send_user_via(&mut st.last_sent_to, st.core.pid(), to, message)
        {
            Ok(wait) => {
                st.core.sent(to);
                (status::OK, wait)
            }
            Err(e) => (send_status(Err(e)), None),
        },
    )
}

/// Register a send to a name (`send_named`, `global_send`): the import
/// reads the name (`BAD_ARG` if it is not UTF-8), asks `holder` for the
/// name's holder or the status to answer, and sends as `send` does.
pub(super) fn wrap_send_to_name(
    linker: &mut Linker<ProcState>,
    import: &'static str,
    holder: fn(&ProcState, &str) -> std::result::Result<Pid, i32>,
) -> Result<()> {
    linker.func_wrap(
        IMPORT_MODULE,
        import,
        move |mut c: Caller<'_, ProcState>,
              name_ptr: i32,
              name_len: i32,
              tag: i32,
              ref_ptr: i32,
              ptr: i32,
              len: i32|
              -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let Some(name) = gm::text(mem, name_ptr, name_len, import).map_err(fault)? else {
                return Ok(status::BAD_ARG);
            };
            let to = match holder(st, name) {
                Ok(to) => to,
                Err(status) => return Ok(status),
            };
            note_hot(mem, st, [name_ptr, ptr]);
            let (status, wait) = send_from_guest(mem, st, to, tag, ref_ptr, ptr, len)?;
            suspend_if_congested(&mut c, wait);
            Ok(status)
        },
    )?;
    Ok(())
}

/// The header the ABI describes a message by.
fn header_of(message: &Message) -> Header {
    Header {
        tag: message.tag,
        len: message.payload.len() as u32,
        reference: message.reference,
    }
}

/// Register every host function of the ABI.
pub(crate) fn register(linker: &mut Linker<ProcState>) -> Result<()> {
    let m = IMPORT_MODULE;

    linker.func_wrap(
        m,
        imports::SELF.name,
        |mut c: Caller<'_, ProcState>, out: i32| -> Result<()> {
            let (mem, st) = split(&mut c)?;
            gm::write(mem, out, &st.core.pid().to_bytes(), "self pid_out").map_err(fault)
        },
    )?;

    linker.func_wrap(
        m,
        imports::SPAWN.name,
        |mut c: Caller<'_, ProcState>,
         name_ptr: i32,
         name_len: i32,
         args_ptr: i32,
         args_len: i32,
         flags: i32,
         pid_out: i32,
         ref_out: i32|
         -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let Some(module) =
                gm::text(mem, name_ptr, name_len, "spawn module name").map_err(fault)?
            else {
                return Ok(status::BAD_ARG);
            };
            // No module can have such a name: malformed, not missing.
            if !molt_abi::section::valid_module_name(module) {
                return Ok(status::BAD_ARG);
            }
            let module = module.to_string();
            let args = match payload(mem, st, args_ptr, args_len)? {
                Ok(a) => a,
                Err(code) => return Ok(code),
            };
            let me = st.core.pid();
            let config = &st.core.node.config;
            if flags & spawn_flags::LINK != 0 && st.core.links.len() >= config.links_max {
                return Ok(status::LINK_LIMIT);
            }
            if flags & spawn_flags::MONITOR != 0
                && st.core.monitors_out.len() >= config.monitors_max
            {
                return Ok(status::MONITOR_LIMIT);
            }
            let link = (flags & spawn_flags::LINK != 0).then_some(me);
            let monitor = (flags & spawn_flags::MONITOR != 0).then(|| st.core.node.make_ref());
            let node = st.core.node.clone();
            match node.spawn(&module, args.into_vec(), link, monitor.map(|r| (r, me))) {
                Ok(child) => {
                    if link.is_some() {
                        st.core.links.insert(child);
                    }
                    if let Some(r) = monitor {
                        st.core.monitors_out.insert(r, child);
                        gm::write(mem, ref_out, &r.to_bytes(), "spawn ref_out").map_err(fault)?;
                    }
                    gm::write(mem, pid_out, &child.to_bytes(), "spawn pid_out").map_err(fault)?;
                    Ok(status::OK)
                }
                Err(SpawnError::NoModule(_)) => Ok(status::NO_MODULE),
                Err(SpawnError::ProcessLimit(_)) => Ok(status::PROCESS_LIMIT),
                Err(SpawnError::ArgsTooLarge { .. }) => Ok(status::MESSAGE_TOO_LARGE),
                Err(SpawnError::NoConnection(_)) => Ok(status::NOCONNECTION),
            }
        },
    )?;

    linker.func_wrap(
        m,
        imports::SEND.name,
        |mut c: Caller<'_, ProcState>,
         pid_ptr: i32,
         tag: i32,
         ref_ptr: i32,
         ptr: i32,
         len: i32|
         -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let to = gm::pid(mem, pid_ptr, "send pid").map_err(fault)?;
            note_hot(mem, st, [pid_ptr, ptr]);
            let (status, wait) = send_from_guest(mem, st, to, tag, ref_ptr, ptr, len)?;
            suspend_if_congested(&mut c, wait);
            Ok(status)
        },
    )?;

    wrap_send_to_name(linker, imports::SEND_NAMED.name, |st, name| {
        let registry = st.core.node.registry.lock().expect("registry poisoned");
        registry.whereis(name).ok_or(status::NOT_REGISTERED)
    })?;

    linker.func_wrap_async(
        m,
        imports::RECEIVE.name,
        |mut c: Caller<'_, ProcState>, (tags_ptr, tags_count, ref_ptr, timeout_ms, header_out): (i32, i32, i32, i64, i32)| {
            Box::new(async move { receive(&mut c, tags_ptr, tags_count, ref_ptr, timeout_ms, header_out).await })
        },
    )?;

    linker.func_wrap(
        m,
        imports::MSG_READ.name,
        |mut c: Caller<'_, ProcState>, ptr: i32, len: i32| -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let Some(current) = &st.current else {
                return Ok(status::NO_MESSAGE);
            };
            let payload = &current.payload;
            // The whole buffer the guest named must be its memory, however
            // much of it this message fills.
            let buffer = gm::bytes_mut(mem, ptr, len, "msg_read buffer").map_err(fault)?;
            if buffer.len() < payload.len() {
                return Ok(status::BUFFER_TOO_SMALL);
            }
            buffer[..payload.len()].copy_from_slice(payload);
            Ok(payload.len() as i32)
        },
    )?;

    linker.func_wrap(
        m,
        imports::MSG_HEADER.name,
        |mut c: Caller<'_, ProcState>, out: i32| -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let Some(current) = &st.current else {
                return Ok(status::NO_MESSAGE);
            };
            gm::write(mem, out, &header_of(current).to_bytes(), "msg_header out").map_err(fault)?;
            Ok(status::OK)
        },
    )?;

    linker.func_wrap(
        m,
        imports::MSG_NEXT.name,
        |mut c: Caller<'_, ProcState>, tag_out: i32| -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            gm::bytes_mut(mem, tag_out, 4, "msg_next tag_out").map_err(fault)?;
            let Some(message) = st.next_in_handle()? else {
                return Ok(status::NO_MESSAGE);
            };
            let (tag, len) = (message.tag, message.payload.len() as i32);
            st.current = Some(message);
            st.fill_inbox(mem).map_err(fault)?;
            gm::write(mem, tag_out, &tag.to_le_bytes(), "msg_next tag_out").map_err(fault)?;
            Ok(len)
        },
    )?;

    linker.func_wrap(
        m,
        imports::MSG_INBOX.name,
        |mut c: Caller<'_, ProcState>, ptr: i32, len: i32| -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            gm::bytes_mut(mem, ptr, len, "msg_inbox buffer").map_err(fault)?;
            st.inbox = (len > 0).then_some((ptr, len));
            Ok(status::OK)
        },
    )?;

    linker.func_wrap(
        m,
        imports::LINK.name,
        |mut c: Caller<'_, ProcState>, pid_ptr: i32| -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let other = gm::pid(mem, pid_ptr, "link pid").map_err(fault)?;
            // A link already there is no new one.
            if !st.core.links.contains(&other)
                && other != st.core.pid()
                && st.core.links.len() >= st.core.node.config.links_max
            {
                return Ok(status::LINK_LIMIT);
            }
            Ok(match st.core.link(other) {
                Ok(()) => status::OK,
                Err(reason::NOCONNECTION) => status::NOCONNECTION,
                Err(_) => status::NOPROC,
            })
        },
    )?;

    linker.func_wrap(
        m,
        imports::UNLINK.name,
        |mut c: Caller<'_, ProcState>, pid_ptr: i32| -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let other = gm::pid(mem, pid_ptr, "unlink pid").map_err(fault)?;
            st.core.unlink(other);
            Ok(status::OK)
        },
    )?;

    linker.func_wrap(
        m,
        imports::MONITOR.name,
        |mut c: Caller<'_, ProcState>, pid_ptr: i32, ref_out: i32| -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let target = gm::pid(mem, pid_ptr, "monitor pid").map_err(fault)?;
            // Check the output before the monitor exists, so a fault leaves none.
            gm::bytes(mem, ref_out, molt_abi::REF_BYTES as i32, "monitor ref_out")
                .map_err(fault)?;
            if st.core.monitors_out.len() >= st.core.node.config.monitors_max {
                return Ok(status::MONITOR_LIMIT);
            }
            let r = st.core.monitor(target);
            gm::write(mem, ref_out, &r.to_bytes(), "monitor ref_out").map_err(fault)?;
            Ok(status::OK)
        },
    )?;

    linker.func_wrap(
        m,
        imports::DEMONITOR.name,
        |mut c: Caller<'_, ProcState>, ref_ptr: i32, flags: i32| -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let r = gm::reference(mem, ref_ptr, "demonitor ref").map_err(fault)?;
            let flush = flags & molt_abi::demonitor_flags::FLUSH != 0;
            Ok(st.core.demonitor(r, flush) as i32)
        },
    )?;

    linker.func_wrap(
        m,
        imports::EXIT.name,
        |mut c: Caller<'_, ProcState>, pid_ptr: i32, ptr: i32, len: i32| -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let to = gm::pid(mem, pid_ptr, "exit pid").map_err(fault)?;
            let Some(why) = gm::text(mem, ptr, len, "exit reason").map_err(fault)? else {
                return Ok(status::BAD_ARG);
            };
            st.core.send_exit(to, reason::truncate(why).into());
            // `exit(self(), kill)` and the like end the caller now.
            match st.exit_error() {
                Some(e) => Err(e),
                None => Ok(status::OK),
            }
        },
    )?;

    linker.func_wrap(
        m,
        imports::EXIT_SELF.name,
        |mut c: Caller<'_, ProcState>, ptr: i32, len: i32| -> Result<()> {
            let (mem, _) = split(&mut c)?;
            let why = String::from_utf8_lossy(
                gm::bytes(mem, ptr, len, "exit_self reason").map_err(fault)?,
            );
            Err(wasmtime::Error::new(ProcessExit(
                reason::truncate(&why).into(),
            )))
        },
    )?;

    linker.func_wrap(
        m,
        imports::TRAP_EXIT.name,
        |mut c: Caller<'_, ProcState>, flag: i32| -> i32 {
            let st = c.data_mut();
            std::mem::replace(&mut st.core.trap_exit, flag != 0) as i32
        },
    )?;

    linker.func_wrap(
        m,
        imports::IS_ALIVE.name,
        |mut c: Caller<'_, ProcState>, pid_ptr: i32| -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let pid = gm::pid(mem, pid_ptr, "is_alive pid").map_err(fault)?;
            Ok(st.core.node.lookup(pid).is_some() as i32)
        },
    )?;

    linker.func_wrap(
        m,
        imports::REGISTER.name,
        |mut c: Caller<'_, ProcState>, ptr: i32, len: i32| -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let Some(name) = gm::text(mem, ptr, len, "register name").map_err(fault)? else {
                return Ok(status::BAD_ARG);
            };
            let pid = st.core.pid();
            let result = st
                .core
                .node
                .registry
                .lock()
                .expect("registry poisoned")
                .register(name, pid);
            Ok(match result {
                Ok(()) => status::OK,
                Err(RegisterError::BadName) => status::BAD_ARG,
                Err(RegisterError::Taken) => status::NAME_TAKEN,
                Err(RegisterError::AlreadyRegistered) => status::ALREADY_REGISTERED,
            })
        },
    )?;

    linker.func_wrap(
        m,
        imports::UNREGISTER.name,
        |mut c: Caller<'_, ProcState>, ptr: i32, len: i32| -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let Some(name) = gm::text(mem, ptr, len, "unregister name").map_err(fault)? else {
                return Ok(status::BAD_ARG);
            };
            let removed = st
                .core
                .node
                .registry
                .lock()
                .expect("registry poisoned")
                .unregister(name);
            Ok(if removed.is_some() {
                status::OK
            } else {
                status::NOT_REGISTERED
            })
        },
    )?;

    linker.func_wrap(
        m,
        imports::WHEREIS.name,
        |mut c: Caller<'_, ProcState>, ptr: i32, len: i32, pid_out: i32| -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let Some(name) = gm::text(mem, ptr, len, "whereis name").map_err(fault)? else {
                return Ok(status::BAD_ARG);
            };
            let found = st
                .core
                .node
                .registry
                .lock()
                .expect("registry poisoned")
                .whereis(name);
            match found {
                Some(pid) => {
                    gm::write(mem, pid_out, &pid.to_bytes(), "whereis pid_out").map_err(fault)?;
                    Ok(1)
                }
                None => Ok(0),
            }
        },
    )?;

    linker.func_wrap(
        m,
        imports::SEND_AFTER.name,
        |mut c: Caller<'_, ProcState>,
         delay_ms: i64,
         pid_ptr: i32,
         tag: i32,
         ptr: i32,
         len: i32,
         ref_out: i32|
         -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let to = gm::pid(mem, pid_ptr, "send_after pid").map_err(fault)?;
            if !molt_abi::tag::is_user(tag as u32) || delay_ms < 0 {
                return Ok(status::BAD_ARG);
            }
            let payload = match payload(mem, st, ptr, len)? {
                Ok(p) => p,
                Err(code) => return Ok(code),
            };
            gm::bytes(
                mem,
                ref_out,
                molt_abi::REF_BYTES as i32,
                "send_after ref_out",
            )
            .map_err(fault)?;
            let node = st.core.node.clone();
            let reference = node.make_ref();
            let message = Message {
                tag: tag as u32,
                reference,
                payload,
            };
            if node
                .timers
                .start(&node, Duration::from_millis(delay_ms as u64), to, message)
                .is_err()
            {
                return Ok(status::TIMER_LIMIT);
            }
            gm::write(mem, ref_out, &reference.to_bytes(), "send_after ref_out").map_err(fault)?;
            Ok(status::OK)
        },
    )?;

    linker.func_wrap(
        m,
        imports::CANCEL_TIMER.name,
        |mut c: Caller<'_, ProcState>, ref_ptr: i32| -> Result<i64> {
            let (mem, st) = split(&mut c)?;
            let r = gm::reference(mem, ref_ptr, "cancel_timer ref").map_err(fault)?;
            Ok(match st.core.node.timers.cancel(r) {
                Some(left) => left.as_millis() as i64,
                None => status::NO_TIMER as i64,
            })
        },
    )?;

    linker.func_wrap(
        m,
        imports::MAKE_REF.name,
        |mut c: Caller<'_, ProcState>, out: i32| -> Result<()> {
            let (mem, st) = split(&mut c)?;
            let r = st.core.node.make_ref();
            gm::write(mem, out, &r.to_bytes(), "make_ref out").map_err(fault)
        },
    )?;

    linker.func_wrap(
        m,
        imports::MONOTONIC_NS.name,
        |c: Caller<'_, ProcState>| -> i64 {
            c.data().core.node.started.elapsed().as_nanos() as i64
        },
    )?;

    linker.func_wrap(
        m,
        imports::SYSTEM_TIME_NS.name,
        |_c: Caller<'_, ProcState>| -> i64 {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64)
        },
    )?;

    linker.func_wrap(
        m,
        imports::LOG.name,
        |mut c: Caller<'_, ProcState>, level: i32, ptr: i32, len: i32| -> Result<()> {
            let (mem, st) = split(&mut c)?;
            let bytes = gm::bytes(mem, ptr, len, "log message").map_err(fault)?;
            let max = st.core.node.config.log_line_bytes_max;
            let mut text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]);
            if bytes.len() > max {
                let cut = bytes.len() - max;
                text.to_mut()
                    .push_str(&format!(" [cut: {cut} bytes past log_line_bytes_max]"));
            }
            let pid = st.core.pid();
            let version = st.core.cell.version();
            let module = version.as_ref().map_or("", |m| m.identity.name.as_str());
            let version = version.as_ref().map_or("", |m| m.identity.version.as_str());
            let node = st.core.node.config.name.as_str();
            match level {
                log_level::ERROR => {
                    tracing::error!(target: "molt::guest", node, %pid, module, version, "{text}")
                }
                log_level::WARN => {
                    tracing::warn!(target: "molt::guest", node, %pid, module, version, "{text}")
                }
                log_level::INFO => {
                    tracing::info!(target: "molt::guest", node, %pid, module, version, "{text}")
                }
                log_level::DEBUG => {
                    tracing::debug!(target: "molt::guest", node, %pid, module, version, "{text}")
                }
                _ => tracing::trace!(target: "molt::guest", node, %pid, module, version, "{text}"),
            }
            Ok(())
        },
    )?;

    linker.func_wrap(
        m,
        imports::RANDOM_BYTES.name,
        |mut c: Caller<'_, ProcState>, ptr: i32, len: i32| -> Result<()> {
            let (mem, _) = split(&mut c)?;
            let buf = gm::bytes_mut(mem, ptr, len, "random_bytes buffer").map_err(fault)?;
            getrandom::fill(buf)
                .map_err(|e| wasmtime::Error::msg(format!("random generator failed: {e}")))
        },
    )?;

    super::host_fns_dist::register(linker)?;
    super::host_fns_pg::register(linker)?;
    super::host_fns_global::register(linker)?;
    super::host_fns_table::register(linker)
}

/// The `receive` host function: selective receive with a timeout. Skipped
/// messages stay in the mailbox, in order.
async fn receive(
    c: &mut Caller<'_, ProcState>,
    tags_ptr: i32,
    tags_count: i32,
    ref_ptr: i32,
    timeout_ms: i64,
    header_out: i32,
) -> Result<i32> {
    let filter = {
        let (mem, _) = split(c)?;
        let count = tags_count as u32;
        if count as usize > molt_abi::RECEIVE_TAGS_MAX {
            return Ok(status::BAD_ARG);
        }
        let raw = gm::bytes(mem, tags_ptr, (count * 4) as i32, "receive tags").map_err(fault)?;
        let tags = raw
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let reference = if ref_ptr == 0 {
            None
        } else {
            Some(gm::reference(mem, ref_ptr, "receive ref").map_err(fault)?)
        };
        gm::bytes(
            mem,
            header_out,
            molt_abi::HEADER_BYTES as i32,
            "receive header_out",
        )
        .map_err(fault)?;
        Filter { tags, reference }
    };
    let deadline = match timeout_ms {
        timeout::INFINITY => None,
        ms if ms < 0 => return Ok(status::BAD_ARG),
        // A timeout too long to represent is no timeout.
        ms => tokio::time::Instant::now().checked_add(Duration::from_millis(ms as u64)),
    };
    let cell = c.data().core.cell.clone();
    let mut scanned = 0;
    let mut expired = false;
    loop {
        let st = c.data_mut();
        st.core.absorb();
        if let Some(e) = st.exit_error() {
            return Err(e);
        }
        if let Some(message) = st.core.take_matching(&filter, scanned) {
            let header = header_of(&message);
            st.current = Some(message);
            let (mem, _) = split(c)?;
            gm::write(mem, header_out, &header.to_bytes(), "receive header_out").map_err(fault)?;
            return Ok(status::OK);
        }
        if expired {
            return Ok(status::TIMEOUT);
        }
        scanned = st.core.mailbox.len();
        match deadline {
            None => cell.wake.rung().await,
            // On expiry, look once more: a message may have come with the deadline.
            Some(d) => expired = tokio::time::timeout_at(d, cell.wake.rung()).await.is_err(),
        }
    }
}
