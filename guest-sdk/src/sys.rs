//! The host functions: raw imports and thin safe wrappers over them.
//!
//! This module and the export glue in the `behaviour!` / `main!` / `module_section!`
//! macros hold all of the SDK's `unsafe`. The raw imports are declared once,
//! by the `host_functions!` macro below, which also records their names and
//! signatures so a test can compare them with `molt_abi::imports::ALL`.
//!
//! Every wrapper passes pointers to live Rust buffers of the size the ABI
//! expects (24 bytes for a pid or reference, 32 for a header), so the host
//! never reads or writes outside them. On targets other than `wasm32` the
//! imports are stubs that panic, so the SDK and its users compile, lint and
//! unit-test natively.

use molt_abi::{HEADER_BYTES, PID_BYTES, REF_BYTES};

/// Declares the raw imports (wasm32) or panicking stubs (elsewhere), and the
/// `SIGNATURES` table the tests check against the ABI crate.
macro_rules! host_functions {
    ($( $link:literal => fn $name:ident ( $($arg:ident : $ty:ident),* ) $(-> $ret:ident)? ; )*) => {
        /// The raw host functions, one per `molt_abi::imports::ALL` entry.
        ///
        /// Pointers and lengths are `i32` offsets and byte counts into this
        /// module's linear memory. Prefer the safe wrappers in [`crate::sys`]
        /// and the public SDK functions.
        pub mod raw {
            #[cfg(target_arch = "wasm32")]
            #[link(wasm_import_module = "molt")]
            unsafe extern "C" {
                $(
                    #[doc = concat!("The host function `molt.", $link, "`.")]
                    #[link_name = $link]
                    pub fn $name($($arg: $ty),*) $(-> $ret)?;
                )*
            }

            $(
                #[cfg(not(target_arch = "wasm32"))]
                #[doc = concat!("Stand-in for the host function `molt.", $link, "`; panics.")]
                ///
                /// # Safety
                ///
                /// Always safe to call; it only panics. It is `unsafe` to
                /// match the signature of the real import.
                #[allow(clippy::too_many_arguments)]
                pub unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                    let _ = ($($arg,)*);
                    super::outside_host()
                }
            )*
        }

        /// `(link name, params, results)` of every import declared above.
        #[cfg(test)]
        const SIGNATURES: &[(&str, &[molt_abi::imports::ValType], &[molt_abi::imports::ValType])] = &[
            $( ($link, &[$(valtype!($ty)),*], &[$(valtype!($ret))?]), )*
        ];
    };
}

#[cfg(test)]
macro_rules! valtype {
    (i32) => {
        molt_abi::imports::ValType::I32
    };
    (i64) => {
        molt_abi::imports::ValType::I64
    };
}

host_functions! {
    "self" => fn self_pid(pid_out: i32);
    "spawn" => fn spawn(module_ptr: i32, module_len: i32, args_ptr: i32, args_len: i32, flags: i32, pid_out: i32, ref_out: i32) -> i32;
    "send" => fn send(pid_ptr: i32, tag: i32, ref_ptr: i32, payload_ptr: i32, payload_len: i32) -> i32;
    "send_named" => fn send_named(name_ptr: i32, name_len: i32, tag: i32, ref_ptr: i32, payload_ptr: i32, payload_len: i32) -> i32;
    "receive" => fn receive(tags_ptr: i32, tags_count: i32, ref_ptr: i32, timeout_ms: i64, header_out: i32) -> i32;
    "msg_read" => fn msg_read(buf_ptr: i32, buf_len: i32) -> i32;
    "msg_header" => fn msg_header(header_out: i32) -> i32;
    "msg_next" => fn msg_next(tag_out: i32) -> i32;
    "msg_inbox" => fn msg_inbox(buf_ptr: i32, buf_len: i32) -> i32;
    "link" => fn link(pid_ptr: i32) -> i32;
    "unlink" => fn unlink(pid_ptr: i32) -> i32;
    "monitor" => fn monitor(pid_ptr: i32, ref_out: i32) -> i32;
    "demonitor" => fn demonitor(ref_ptr: i32, flags: i32) -> i32;
    "exit" => fn exit(pid_ptr: i32, reason_ptr: i32, reason_len: i32) -> i32;
    "exit_self" => fn exit_self(reason_ptr: i32, reason_len: i32);
    "trap_exit" => fn trap_exit(flag: i32) -> i32;
    "is_alive" => fn is_alive(pid_ptr: i32) -> i32;
    "register" => fn register(name_ptr: i32, name_len: i32) -> i32;
    "unregister" => fn unregister(name_ptr: i32, name_len: i32) -> i32;
    "whereis" => fn whereis(name_ptr: i32, name_len: i32, pid_out: i32) -> i32;
    "send_after" => fn send_after(delay_ms: i64, pid_ptr: i32, tag: i32, payload_ptr: i32, payload_len: i32, ref_out: i32) -> i32;
    "cancel_timer" => fn cancel_timer(ref_ptr: i32) -> i64;
    "make_ref" => fn make_ref(ref_out: i32);
    "monotonic_ns" => fn monotonic_ns() -> i64;
    "system_time_ns" => fn system_time_ns() -> i64;
    "log" => fn log(level: i32, msg_ptr: i32, msg_len: i32);
    "random_bytes" => fn random_bytes(buf_ptr: i32, buf_len: i32);
    "node_name" => fn node_name(buf_ptr: i32, buf_len: i32) -> i32;
    "nodes" => fn nodes(buf_ptr: i32, buf_len: i32) -> i32;
    "spawn_on" => fn spawn_on(node_ptr: i32, node_len: i32, module_ptr: i32, module_len: i32, args_ptr: i32, args_len: i32, flags: i32, pid_out: i32, ref_out: i32) -> i32;
    "send_named_on" => fn send_named_on(node_ptr: i32, node_len: i32, name_ptr: i32, name_len: i32, tag: i32, ref_ptr: i32, payload_ptr: i32, payload_len: i32) -> i32;
    "ping" => fn ping(node_ptr: i32, node_len: i32) -> i32;
    "monitor_node" => fn monitor_node(node_ptr: i32, node_len: i32, flag: i32) -> i32;
    "pg_join" => fn pg_join(scope_ptr: i32, scope_len: i32, group_ptr: i32, group_len: i32) -> i32;
    "pg_leave" => fn pg_leave(scope_ptr: i32, scope_len: i32, group_ptr: i32, group_len: i32) -> i32;
    "pg_members" => fn pg_members(scope_ptr: i32, scope_len: i32, group_ptr: i32, group_len: i32, buf_ptr: i32, buf_len: i32) -> i32;
    "pg_local_members" => fn pg_local_members(scope_ptr: i32, scope_len: i32, group_ptr: i32, group_len: i32, buf_ptr: i32, buf_len: i32) -> i32;
    "pg_which_groups" => fn pg_which_groups(scope_ptr: i32, scope_len: i32, buf_ptr: i32, buf_len: i32) -> i32;
    "global_register" => fn global_register(name_ptr: i32, name_len: i32, pid_ptr: i32, holder_out: i32) -> i32;
    "global_unregister" => fn global_unregister(name_ptr: i32, name_len: i32, pid_ptr: i32) -> i32;
    "global_whereis" => fn global_whereis(name_ptr: i32, name_len: i32, flags: i32, pid_out: i32) -> i32;
    "lock" => fn lock(set_ptr: i32, set_len: i32, timeout_ms: i64, tokens_out: i32, tokens_len: i32) -> i32;
    "unlock" => fn unlock(id_ptr: i32, id_len: i32) -> i32;
    "elect" => fn elect(group_ptr: i32, group_len: i32, leader_out: i32, term_out: i32) -> i32;
    "resign" => fn resign(group_ptr: i32, group_len: i32) -> i32;
    "leader" => fn leader(group_ptr: i32, group_len: i32, leader_out: i32, term_out: i32) -> i32;
    "global_send" => fn global_send(name_ptr: i32, name_len: i32, tag: i32, ref_ptr: i32, payload_ptr: i32, payload_len: i32) -> i32;
    "table_call" => fn table_call(req_ptr: i32, req_len: i32, out_ptr: i32, out_cap: i32) -> i32;
    "table_reply" => fn table_reply(out_ptr: i32, out_cap: i32) -> i32;
    "table_get" => fn table_get(table_ptr: i32, table_len: i32, key_ptr: i32, key_len: i32, out_ptr: i32, out_cap: i32) -> i32;
}

#[cfg(not(target_arch = "wasm32"))]
#[cold]
fn outside_host() -> ! {
    panic!("molt guest functions only run inside a molt host")
}

/// A pointer as the ABI's `i32` offset. On wasm32 addresses are 32 bits wide;
/// elsewhere the value is never used (the stubs panic).
fn ptr(p: *const u8) -> i32 {
    p as usize as i32
}

/// A length as the ABI's `i32`. A wasm32 slice is at most `isize::MAX`
/// (2 GiB - 1) bytes long, so this never wraps there.
fn len(n: usize) -> i32 {
    n as i32
}

/// The pointer of an optional 24-byte reference, or 0 for none.
fn opt_ptr(r: Option<&[u8; REF_BYTES]>) -> i32 {
    r.map_or(0, |r| ptr(r.as_ptr()))
}

/// `self`: the caller's pid.
pub fn self_pid(out: &mut [u8; PID_BYTES]) {
    // SAFETY: `out` is a live, writable 24-byte buffer, the size `self` writes.
    unsafe { raw::self_pid(ptr(out.as_mut_ptr())) }
}

/// `spawn`: returns the status; fills `pid_out` and (with the MONITOR flag) `ref_out`.
pub fn spawn(
    module: &[u8],
    args: &[u8],
    flags: i32,
    pid_out: &mut [u8; PID_BYTES],
    ref_out: &mut [u8; REF_BYTES],
) -> i32 {
    // SAFETY: every pointer/length pair names a live Rust buffer of that
    // length; the outputs are writable and exactly 24 bytes each.
    unsafe {
        raw::spawn(
            ptr(module.as_ptr()),
            len(module.len()),
            ptr(args.as_ptr()),
            len(args.len()),
            flags,
            ptr(pid_out.as_mut_ptr()),
            ptr(ref_out.as_mut_ptr()),
        )
    }
}

/// `send`: returns the status.
pub fn send(
    pid: &[u8; PID_BYTES],
    tag: u32,
    reference: Option<&[u8; REF_BYTES]>,
    payload: &[u8],
) -> i32 {
    // SAFETY: the pid, the optional reference and the payload are live
    // buffers of the lengths passed; the host only reads them.
    unsafe {
        raw::send(
            ptr(pid.as_ptr()),
            tag as i32,
            opt_ptr(reference),
            ptr(payload.as_ptr()),
            len(payload.len()),
        )
    }
}

/// `send_named`: returns the status.
pub fn send_named(
    name: &[u8],
    tag: u32,
    reference: Option<&[u8; REF_BYTES]>,
    payload: &[u8],
) -> i32 {
    by_name(name, tag, reference, payload, |a, b, c, d, e, f| {
        // SAFETY: `by_name` passes live buffers of the lengths given, for
        // the duration of the call; the host only reads them.
        unsafe { raw::send_named(a, b, c, d, e, f) }
    })
}

/// `global_send`: returns the status.
pub fn global_send(
    name: &[u8],
    tag: u32,
    reference: Option<&[u8; REF_BYTES]>,
    payload: &[u8],
) -> i32 {
    by_name(name, tag, reference, payload, |a, b, c, d, e, f| {
        // SAFETY: as in `send_named`.
        unsafe { raw::global_send(a, b, c, d, e, f) }
    })
}

/// `table_call`: the reply's length (written to `out` if it fits), or a
/// status.
pub fn table_call(request: &[u8], out: &mut [u8]) -> i32 {
    // SAFETY: both buffers are live for the call and of the lengths
    // given; the host reads `request` and writes at most `out.len()` bytes
    // to `out`.
    unsafe {
        raw::table_call(
            ptr(request.as_ptr()),
            len(request.len()),
            ptr(out.as_mut_ptr()),
            len(out.len()),
        )
    }
}

/// `table_get`: the read's length (written to `out` if it fits), or a
/// status.
pub fn table_get(table: &str, key: &[u8], out: &mut [u8]) -> i32 {
    // SAFETY: every buffer is live for the call and of the length given;
    // the host reads `table` and `key` and writes at most `out.len()`
    // bytes to `out`.
    unsafe {
        raw::table_get(
            ptr(table.as_ptr()),
            len(table.len()),
            ptr(key.as_ptr()),
            len(key.len()),
            ptr(out.as_mut_ptr()),
            len(out.len()),
        )
    }
}

/// `table_reply`: the kept reply's length (written to `out`), or a status.
pub fn table_reply(out: &mut [u8]) -> i32 {
    // SAFETY: `out` is live for the call; the host writes at most
    // `out.len()` bytes to it.
    unsafe { raw::table_reply(ptr(out.as_mut_ptr()), len(out.len())) }
}

/// A send to a name: `import(name_ptr, name_len, tag, ref_ptr,
/// payload_ptr, payload_len)`, with every buffer borrowed for the call.
fn by_name(
    name: &[u8],
    tag: u32,
    reference: Option<&[u8; REF_BYTES]>,
    payload: &[u8],
    import: impl FnOnce(i32, i32, i32, i32, i32, i32) -> i32,
) -> i32 {
    import(
        ptr(name.as_ptr()),
        len(name.len()),
        tag as i32,
        opt_ptr(reference),
        ptr(payload.as_ptr()),
        len(payload.len()),
    )
}

/// `receive`: returns the status; on success fills `header_out`.
pub fn receive(
    tags: &[u32],
    reference: Option<&[u8; REF_BYTES]>,
    timeout_ms: i64,
    header_out: &mut [u8; HEADER_BYTES],
) -> i32 {
    // SAFETY: `tags` is a live array of `tags.len()` u32s (little-endian on
    // wasm32, as the ABI wants); the reference is 24 live bytes or 0; the
    // header buffer is 32 writable bytes.
    unsafe {
        raw::receive(
            ptr(tags.as_ptr().cast()),
            len(tags.len()),
            opt_ptr(reference),
            timeout_ms,
            ptr(header_out.as_mut_ptr()),
        )
    }
}

/// `msg_read`: copies the current message into `buf`; returns its length or a status.
pub fn msg_read(buf: &mut [u8]) -> i32 {
    // SAFETY: `buf` is live and writable for `buf.len()` bytes.
    unsafe { raw::msg_read(ptr(buf.as_mut_ptr()), len(buf.len())) }
}

/// `msg_header`: returns the status; on success fills `header_out`.
pub fn msg_header(header_out: &mut [u8; HEADER_BYTES]) -> i32 {
    // SAFETY: the header buffer is 32 writable bytes.
    unsafe { raw::msg_header(ptr(header_out.as_mut_ptr())) }
}

/// `msg_inbox`: name `buf` as this instance's inbox (see the import).
///
/// # Safety
/// The host writes message payloads into `buf` from then on, at the start
/// of each `molt_handle` call and in each `msg_next` that takes a message:
/// `buf` must live as long as the instance and be read only between those.
pub unsafe fn msg_inbox(buf: *mut u8, buf_len: usize) -> i32 {
    // SAFETY: the caller keeps `buf` valid for the instance's life.
    unsafe { raw::msg_inbox(ptr(buf), len(buf_len)) }
}

/// `msg_next`: the next message's payload length (its tag in `tag_out`),
/// or a status (< 0).
pub fn msg_next(tag_out: &mut [u8; 4]) -> i32 {
    // SAFETY: the tag buffer is 4 writable bytes.
    unsafe { raw::msg_next(ptr(tag_out.as_mut_ptr())) }
}

/// `link`: returns the status.
pub fn link(pid: &[u8; PID_BYTES]) -> i32 {
    // SAFETY: `pid` is 24 live bytes.
    unsafe { raw::link(ptr(pid.as_ptr())) }
}

/// `unlink`: returns the status.
pub fn unlink(pid: &[u8; PID_BYTES]) -> i32 {
    // SAFETY: `pid` is 24 live bytes.
    unsafe { raw::unlink(ptr(pid.as_ptr())) }
}

/// `monitor`: returns the status; fills `ref_out`.
pub fn monitor(pid: &[u8; PID_BYTES], ref_out: &mut [u8; REF_BYTES]) -> i32 {
    // SAFETY: `pid` is 24 live bytes; `ref_out` is 24 writable bytes.
    unsafe { raw::monitor(ptr(pid.as_ptr()), ptr(ref_out.as_mut_ptr())) }
}

/// `demonitor`: returns 1 if the monitor was active.
pub fn demonitor(reference: &[u8; REF_BYTES], flags: i32) -> i32 {
    // SAFETY: `reference` is 24 live bytes.
    unsafe { raw::demonitor(ptr(reference.as_ptr()), flags) }
}

/// `exit`: returns the status.
pub fn exit(pid: &[u8; PID_BYTES], reason: &[u8]) -> i32 {
    // SAFETY: `pid` is 24 live bytes; `reason` is live for its length.
    unsafe { raw::exit(ptr(pid.as_ptr()), ptr(reason.as_ptr()), len(reason.len())) }
}

/// `exit_self`: ends the process; never returns.
pub fn exit_self(reason: &[u8]) -> ! {
    // SAFETY: `reason` is live for its length.
    unsafe { raw::exit_self(ptr(reason.as_ptr()), len(reason.len())) };
    // The host unwinds the instance instead of returning; if it ever did,
    // trap rather than run on.
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    unreachable!("exit_self returned")
}

/// `trap_exit`: returns the previous flag.
pub fn trap_exit(flag: i32) -> i32 {
    // SAFETY: no pointers.
    unsafe { raw::trap_exit(flag) }
}

/// `is_alive`: 1 or 0.
pub fn is_alive(pid: &[u8; PID_BYTES]) -> i32 {
    // SAFETY: `pid` is 24 live bytes.
    unsafe { raw::is_alive(ptr(pid.as_ptr())) }
}

/// `register`: returns the status.
pub fn register(name: &[u8]) -> i32 {
    // SAFETY: `name` is live for its length.
    unsafe { raw::register(ptr(name.as_ptr()), len(name.len())) }
}

/// `unregister`: returns the status.
pub fn unregister(name: &[u8]) -> i32 {
    // SAFETY: `name` is live for its length.
    unsafe { raw::unregister(ptr(name.as_ptr()), len(name.len())) }
}

/// `whereis`: 1 (and `pid_out` filled) or 0.
pub fn whereis(name: &[u8], pid_out: &mut [u8; PID_BYTES]) -> i32 {
    // SAFETY: `name` is live for its length; `pid_out` is 24 writable bytes.
    unsafe {
        raw::whereis(
            ptr(name.as_ptr()),
            len(name.len()),
            ptr(pid_out.as_mut_ptr()),
        )
    }
}

/// `send_after`: returns the status; fills `ref_out`.
pub fn send_after(
    delay_ms: i64,
    pid: &[u8; PID_BYTES],
    tag: u32,
    payload: &[u8],
    ref_out: &mut [u8; REF_BYTES],
) -> i32 {
    // SAFETY: `pid` is 24 live bytes, `payload` live for its length,
    // `ref_out` 24 writable bytes.
    unsafe {
        raw::send_after(
            delay_ms,
            ptr(pid.as_ptr()),
            tag as i32,
            ptr(payload.as_ptr()),
            len(payload.len()),
            ptr(ref_out.as_mut_ptr()),
        )
    }
}

/// `cancel_timer`: remaining milliseconds or a negative status.
pub fn cancel_timer(reference: &[u8; REF_BYTES]) -> i64 {
    // SAFETY: `reference` is 24 live bytes.
    unsafe { raw::cancel_timer(ptr(reference.as_ptr())) }
}

/// `make_ref`: fills `ref_out` with a fresh reference.
pub fn make_ref(ref_out: &mut [u8; REF_BYTES]) {
    // SAFETY: `ref_out` is 24 writable bytes.
    unsafe { raw::make_ref(ptr(ref_out.as_mut_ptr())) }
}

/// `monotonic_ns`.
pub fn monotonic_ns() -> i64 {
    // SAFETY: no pointers.
    unsafe { raw::monotonic_ns() }
}

/// `system_time_ns`.
pub fn system_time_ns() -> i64 {
    // SAFETY: no pointers.
    unsafe { raw::system_time_ns() }
}

/// `log`.
pub fn log(level: i32, msg: &[u8]) {
    // SAFETY: `msg` is live for its length.
    unsafe { raw::log(level, ptr(msg.as_ptr()), len(msg.len())) }
}

/// `random_bytes`: fills `buf`.
pub fn random_bytes(buf: &mut [u8]) {
    // SAFETY: `buf` is live and writable for its length.
    unsafe { raw::random_bytes(ptr(buf.as_mut_ptr()), len(buf.len())) }
}

/// `node_name`: the name's full length; written to `buf` only if it fits.
pub fn node_name(buf: &mut [u8]) -> i32 {
    // SAFETY: `buf` is live and writable for its length.
    unsafe { raw::node_name(ptr(buf.as_mut_ptr()), len(buf.len())) }
}

/// `nodes`: the list's full length; written to `buf` only if it fits.
pub fn nodes(buf: &mut [u8]) -> i32 {
    // SAFETY: `buf` is live and writable for its length.
    unsafe { raw::nodes(ptr(buf.as_mut_ptr()), len(buf.len())) }
}

/// `spawn_on`: returns the status; fills `pid_out` and (with the MONITOR flag) `ref_out`.
pub fn spawn_on(
    node: &[u8],
    module: &[u8],
    args: &[u8],
    flags: i32,
    pid_out: &mut [u8; PID_BYTES],
    ref_out: &mut [u8; REF_BYTES],
) -> i32 {
    // SAFETY: every pointer/length pair names a live Rust buffer of that
    // length; the outputs are writable and exactly 24 bytes each.
    unsafe {
        raw::spawn_on(
            ptr(node.as_ptr()),
            len(node.len()),
            ptr(module.as_ptr()),
            len(module.len()),
            ptr(args.as_ptr()),
            len(args.len()),
            flags,
            ptr(pid_out.as_mut_ptr()),
            ptr(ref_out.as_mut_ptr()),
        )
    }
}

/// `send_named_on`: returns the status.
pub fn send_named_on(
    node: &[u8],
    name: &[u8],
    tag: u32,
    reference: Option<&[u8; REF_BYTES]>,
    payload: &[u8],
) -> i32 {
    // SAFETY: the node, the name, the optional reference and the payload
    // are live buffers of the lengths passed; the host only reads them.
    unsafe {
        raw::send_named_on(
            ptr(node.as_ptr()),
            len(node.len()),
            ptr(name.as_ptr()),
            len(name.len()),
            tag as i32,
            opt_ptr(reference),
            ptr(payload.as_ptr()),
            len(payload.len()),
        )
    }
}

/// `ping`: 1 (pong) or 0.
pub fn ping(node: &[u8]) -> i32 {
    // SAFETY: `node` is live for its length.
    unsafe { raw::ping(ptr(node.as_ptr()), len(node.len())) }
}

/// `monitor_node`: returns the status.
pub fn monitor_node(node: &[u8], flag: i32) -> i32 {
    // SAFETY: `node` is live for its length.
    unsafe { raw::monitor_node(ptr(node.as_ptr()), len(node.len()), flag) }
}

/// `global_register`: the status; the holder is written on
/// `ALREADY_REGISTERED`.
pub fn global_register(name: &[u8], pid: &[u8; PID_BYTES], holder: &mut [u8; PID_BYTES]) -> i32 {
    // SAFETY: `name` and `pid` are live for their lengths and only read;
    // `holder` is a live, writable 24-byte buffer.
    unsafe {
        raw::global_register(
            ptr(name.as_ptr()),
            len(name.len()),
            ptr(pid.as_ptr()),
            ptr(holder.as_mut_ptr()),
        )
    }
}

/// `global_unregister`: the status.
pub fn global_unregister(name: &[u8], pid: &[u8; PID_BYTES]) -> i32 {
    // SAFETY: both are live for their lengths and only read.
    unsafe { raw::global_unregister(ptr(name.as_ptr()), len(name.len()), ptr(pid.as_ptr())) }
}

/// `global_whereis`: the status; the pid is written on `OK`.
pub fn global_whereis(name: &[u8], flags: i32, out: &mut [u8; PID_BYTES]) -> i32 {
    // SAFETY: `name` is live and only read; `out` is a live, writable
    // 24-byte buffer.
    unsafe {
        raw::global_whereis(
            ptr(name.as_ptr()),
            len(name.len()),
            flags,
            ptr(out.as_mut_ptr()),
        )
    }
}

/// `lock`: the status; a token per lock is written to `tokens` on `OK`.
pub fn lock(set: &[u8], timeout_ms: i64, tokens: &mut [u8]) -> i32 {
    // SAFETY: `set` is live and only read; `tokens` is live and writable
    // for its length.
    unsafe {
        raw::lock(
            ptr(set.as_ptr()),
            len(set.len()),
            timeout_ms,
            ptr(tokens.as_mut_ptr()),
            len(tokens.len()),
        )
    }
}

/// `unlock`: the status.
pub fn unlock(id: &[u8]) -> i32 {
    // SAFETY: `id` is live for its length and only read.
    unsafe { raw::unlock(ptr(id.as_ptr()), len(id.len())) }
}

/// `elect` (or `leader` if `read_only`): the status; the leader and term
/// are written on `OK`.
pub fn elect(
    group: &[u8],
    read_only: bool,
    leader: &mut [u8; PID_BYTES],
    term: &mut [u8; 8],
) -> i32 {
    let call = if read_only { raw::leader } else { raw::elect };
    // SAFETY: `group` is live and only read; `leader` and `term` are live,
    // writable buffers of the sizes the host writes.
    unsafe {
        call(
            ptr(group.as_ptr()),
            len(group.len()),
            ptr(leader.as_mut_ptr()),
            ptr(term.as_mut_ptr()),
        )
    }
}

/// `resign`: the status.
pub fn resign(group: &[u8]) -> i32 {
    // SAFETY: `group` is live for its length and only read.
    unsafe { raw::resign(ptr(group.as_ptr()), len(group.len())) }
}

/// `pg_join`: returns the status.
pub fn pg_join(scope: &[u8], group: &[u8]) -> i32 {
    // SAFETY: `scope` and `group` are live for their lengths; the host
    // only reads them.
    unsafe {
        raw::pg_join(
            ptr(scope.as_ptr()),
            len(scope.len()),
            ptr(group.as_ptr()),
            len(group.len()),
        )
    }
}

/// `pg_leave`: returns the status.
pub fn pg_leave(scope: &[u8], group: &[u8]) -> i32 {
    // SAFETY: as `pg_join`.
    unsafe {
        raw::pg_leave(
            ptr(scope.as_ptr()),
            len(scope.len()),
            ptr(group.as_ptr()),
            len(group.len()),
        )
    }
}

/// `pg_members` (or `pg_local_members` if `local`): the member count, or
/// a status; the pids are written to `buf` only if they all fit.
pub fn pg_members(scope: &[u8], group: &[u8], buf: &mut [u8], local: bool) -> i32 {
    let call = if local {
        raw::pg_local_members
    } else {
        raw::pg_members
    };
    // SAFETY: `scope` and `group` are live for their lengths and only
    // read; `buf` is live and writable for its length.
    unsafe {
        call(
            ptr(scope.as_ptr()),
            len(scope.len()),
            ptr(group.as_ptr()),
            len(group.len()),
            ptr(buf.as_mut_ptr()),
            len(buf.len()),
        )
    }
}

/// `pg_which_groups`: the list's full length, or a status; written to
/// `buf` only if it fits.
pub fn pg_which_groups(scope: &[u8], buf: &mut [u8]) -> i32 {
    // SAFETY: `scope` is live for its length and only read; `buf` is live
    // and writable for its length.
    unsafe {
        raw::pg_which_groups(
            ptr(scope.as_ptr()),
            len(scope.len()),
            ptr(buf.as_mut_ptr()),
            len(buf.len()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::SIGNATURES;

    #[test]
    fn imports_match_the_abi() {
        assert_eq!(
            molt_abi::IMPORT_MODULE,
            "molt",
            "#[link(wasm_import_module)] is a literal"
        );
        let ours: Vec<_> = SIGNATURES
            .iter()
            .map(|(n, p, r)| (*n, p.to_vec(), r.to_vec()))
            .collect();
        let abi: Vec<_> = molt_abi::imports::ALL
            .iter()
            .map(|i| (i.name, i.params.to_vec(), i.results.to_vec()))
            .collect();
        assert_eq!(ours, abi);
    }

    #[test]
    #[should_panic(expected = "only run inside a molt host")]
    fn stubs_panic_outside_a_host() {
        super::monotonic_ns();
    }
}
