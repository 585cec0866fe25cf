//! Host functions a guest may import, all from module [`crate::IMPORT_MODULE`].
//!
//! Pointers are `i32` offsets into the guest's exported memory `memory`;
//! lengths are `i32` byte counts. A pointer/length pair that does not lie
//! inside that memory ends the calling process with reason
//! `bad_pointer: ...`; it never harms the node. Functions returning `i32`
//! return [`crate::status::OK`] (or a non-negative count) on success and a
//! negative [`crate::status`] code on failure.

/// A wasm value type used in an import signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValType {
    /// 32-bit integer (also pointers and lengths).
    I32,
    /// 64-bit integer (times, sizes that may exceed 4 GiB).
    I64,
}

use ValType::{I32, I64};

/// The name and signature of one host function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Import {
    /// Field name within [`crate::IMPORT_MODULE`].
    pub name: &'static str,
    /// Parameter types, in order.
    pub params: &'static [ValType],
    /// Result types (zero or one).
    pub results: &'static [ValType],
}

macro_rules! imports {
    ($( $(#[$doc:meta])* $konst:ident = $name:literal ( $($p:ident),* ) -> ( $($r:ident),* ); )*) => {
        $(
            $(#[$doc])*
            pub const $konst: Import = Import {
                name: $name,
                params: &[$($p),*],
                results: &[$($r),*],
            };
        )*

        /// Every host function, in the order `ABI.md` lists them.
        pub const ALL: &[Import] = &[$($konst),*];
    };
}

imports! {
    /// `self(pid_out)`: write the caller's pid (24 bytes) to `pid_out`.
    SELF = "self"(I32) -> ();

    /// `spawn(module_ptr, module_len, args_ptr, args_len, flags, pid_out, ref_out) -> status`:
    /// start a process running the current version of the named module,
    /// with `args` as its init argument bytes. `flags` is a set of
    /// [`crate::spawn_flags`]; with `MONITOR` the monitor reference is
    /// written to `ref_out` (ignored otherwise). Errors: `NO_MODULE`,
    /// `PROCESS_LIMIT`, `MESSAGE_TOO_LARGE` (args), `BAD_ARG`.
    SPAWN = "spawn"(I32, I32, I32, I32, I32, I32, I32) -> (I32);

    /// `send(pid_ptr, tag, ref_ptr, payload_ptr, payload_len) -> status`:
    /// send a message. `ref_ptr` may be 0 (no reference). Sending to a dead
    /// process succeeds and the message is dropped, as in Erlang. Errors:
    /// `BAD_ARG` (reserved tag), `MESSAGE_TOO_LARGE`, `MAILBOX_FULL`.
    SEND = "send"(I32, I32, I32, I32, I32) -> (I32);

    /// `send_named(name_ptr, name_len, tag, ref_ptr, payload_ptr, payload_len) -> status`:
    /// send to the process registered under a name. Errors as `send`, plus
    /// `NOT_REGISTERED`.
    SEND_NAMED = "send_named"(I32, I32, I32, I32, I32, I32) -> (I32);

    /// `receive(tags_ptr, tags_count, ref_ptr, timeout_ms, header_out) -> status`:
    /// take the first message in the mailbox whose tag is one of the
    /// `tags_count` little-endian `u32`s at `tags_ptr` (any tag if
    /// `tags_count` is 0) and, if `ref_ptr` is not 0, whose reference
    /// equals the 24 bytes there. Messages skipped stay in the mailbox, in
    /// order. Waits up to `timeout_ms` ([`crate::timeout`]). On success the
    /// message becomes the current message and its [`crate::Header`] is
    /// written to `header_out` (32 bytes). Errors: `TIMEOUT`; `BAD_ARG` if
    /// `tags_count` exceeds [`crate::RECEIVE_TAGS_MAX`] or the timeout is
    /// negative and not [`crate::timeout::INFINITY`].
    RECEIVE = "receive"(I32, I32, I32, I64, I32) -> (I32);

    /// `msg_read(buf_ptr, buf_len) -> len | status`: copy the current
    /// message's payload (the message last taken by `receive`, the message a
    /// behaviour's `molt_handle` was called for, or the init arguments) to
    /// `buf_ptr`. Returns its length. Errors: `NO_MESSAGE`, `BUFFER_TOO_SMALL`.
    MSG_READ = "msg_read"(I32, I32) -> (I32);

    /// `msg_header(header_out) -> status`: write the current message's
    /// [`crate::Header`] to `header_out`. Errors: `NO_MESSAGE`.
    MSG_HEADER = "msg_header"(I32) -> (I32);

    /// `msg_next(tag_out) -> len | status`: in a behaviour's `molt_handle`,
    /// take the next queued message now instead of returning for it. On
    /// success it becomes the current message, its tag is written to
    /// `tag_out` (`u32` LE) and its payload length returned: handle it as if
    /// `molt_handle` had been called for it. `NO_MESSAGE` when none is
    /// queued or the host must act between two messages first (a system
    /// request, a new version of the module, a suspension, a send waiting
    /// for room, or [`crate::NEXT_MAX`] messages taken in this call);
    /// outside `molt_handle` always `NO_MESSAGE`. An exit signal ends the
    /// process here as at any other host call.
    MSG_NEXT = "msg_next"(I32) -> (I32);

    /// `msg_inbox(buf_ptr, buf_len) -> status`: name a buffer of the
    /// instance's memory, its inbox: from now on, a message `molt_handle`
    /// is called for or `msg_next` takes whose payload fits (`len <=
    /// buf_len`) is copied there first, so the behaviour reads it without
    /// a `msg_read`. Longer ones are read with `msg_read` as before. For
    /// this instance only (a new one, after an upgrade or a hibernation,
    /// names its own); `buf_len` 0 stops it. The whole buffer must lie in
    /// memory. Errors: none besides a bad pointer.
    MSG_INBOX = "msg_inbox"(I32, I32) -> (I32);

    /// `link(pid_ptr) -> status`: link the caller and `pid` (both ways).
    /// If `pid` is not alive, a caller that traps exits gets an `EXIT`
    /// message with reason `noproc` (status `OK`); otherwise `NOPROC`.
    LINK = "link"(I32) -> (I32);

    /// `unlink(pid_ptr) -> status`: remove a link, if any. Always `OK`.
    UNLINK = "unlink"(I32) -> (I32);

    /// `monitor(pid_ptr, ref_out) -> status`: monitor `pid`; write the
    /// monitor reference to `ref_out`. When `pid` exits (or is already dead)
    /// the caller gets a `DOWN` message whose envelope reference is that
    /// reference. Monitors stack: each call makes a new one.
    MONITOR = "monitor"(I32, I32) -> (I32);

    /// `demonitor(ref_ptr, flags) -> 1 | 0`: remove a monitor; returns 1 if
    /// it was active. With [`crate::demonitor_flags::FLUSH`], also remove
    /// its `DOWN` message if one is already queued.
    DEMONITOR = "demonitor"(I32, I32) -> (I32);

    /// `exit(pid_ptr, reason_ptr, reason_len) -> status`: send an exit
    /// signal with a UTF-8 reason to `pid`, with Erlang's `exit/2`
    /// semantics (`normal` is ignored unless trapped, `kill` cannot be
    /// trapped and becomes `killed`). Errors: `BAD_ARG` (not UTF-8).
    EXIT = "exit"(I32, I32, I32) -> (I32);

    /// `exit_self(reason_ptr, reason_len)`: end the calling process with
    /// this reason. Does not return.
    EXIT_SELF = "exit_self"(I32, I32) -> ();

    /// `trap_exit(flag) -> previous`: set whether exit signals are turned
    /// into `EXIT` messages (1) or kill the process (0); returns the old flag.
    TRAP_EXIT = "trap_exit"(I32) -> (I32);

    /// `is_alive(pid_ptr) -> 1 | 0`: whether `pid` is a live process.
    IS_ALIVE = "is_alive"(I32) -> (I32);

    /// `register(name_ptr, name_len) -> status`: register the caller under
    /// a node-local name, freed when it exits. Errors: `NAME_TAKEN`,
    /// `ALREADY_REGISTERED`, `BAD_ARG` (empty, not UTF-8, or longer than
    /// [`crate::NAME_BYTES_MAX`]).
    REGISTER = "register"(I32, I32) -> (I32);

    /// `unregister(name_ptr, name_len) -> status`: remove a name. Errors:
    /// `NOT_REGISTERED`.
    UNREGISTER = "unregister"(I32, I32) -> (I32);

    /// `whereis(name_ptr, name_len, pid_out) -> 1 | 0`: look a name up;
    /// writes the pid and returns 1 if registered.
    WHEREIS = "whereis"(I32, I32, I32) -> (I32);

    /// `send_after(delay_ms, pid_ptr, tag, payload_ptr, payload_len, ref_out) -> status`:
    /// send a message to `pid` after `delay_ms`. The timer reference is
    /// written to `ref_out` and is also the envelope reference of the
    /// message. Errors as `send`, plus `TIMER_LIMIT`.
    SEND_AFTER = "send_after"(I64, I32, I32, I32, I32, I32) -> (I32);

    /// `cancel_timer(ref_ptr) -> remaining_ms | status`: cancel a timer (any
    /// process holding its reference may); returns the milliseconds it had
    /// left. Errors:
    /// `NO_TIMER` (fired, cancelled or unknown).
    CANCEL_TIMER = "cancel_timer"(I32) -> (I64);

    /// `make_ref(ref_out)`: write a new unique reference.
    MAKE_REF = "make_ref"(I32) -> ();

    /// `monotonic_ns() -> ns`: monotonic time since the node started.
    MONOTONIC_NS = "monotonic_ns"() -> (I64);

    /// `system_time_ns() -> ns`: wall-clock time since the Unix epoch.
    SYSTEM_TIME_NS = "system_time_ns"() -> (I64);

    /// `log(level, msg_ptr, msg_len)`: log a UTF-8 line at a
    /// [`crate::log_level`] through the host's logger, tagged with the
    /// caller's pid and module. Invalid UTF-8 is replaced, not refused.
    LOG = "log"(I32, I32, I32) -> ();

    /// `random_bytes(buf_ptr, buf_len)`: fill a buffer with random bytes
    /// from the operating system's generator.
    RANDOM_BYTES = "random_bytes"(I32, I32) -> ();

    /// `node_name(buf_ptr, buf_len) -> len`: this node's name (UTF-8;
    /// `nonode@nohost` when the node is not distributed). Returns the
    /// name's full length; the name is written only if that is at most
    /// `buf_len`, so a guest with a smaller buffer retries with one of the
    /// returned size. The whole buffer must lie in memory.
    NODE_NAME = "node_name"(I32, I32) -> (I32);

    /// `nodes(buf_ptr, buf_len) -> len`: the names of the connected visible
    /// nodes, sorted and separated by `\n` (no trailing separator; empty
    /// when there are none). Same buffer convention as `node_name`.
    NODES = "nodes"(I32, I32) -> (I32);

    /// `spawn_on(node_ptr, node_len, module_ptr, module_len, args_ptr, args_len, flags, pid_out, ref_out) -> status`:
    /// `spawn` on the named node; the caller waits for that node's answer.
    /// This node's own name spawns locally. Errors as `spawn` (`NO_MODULE`
    /// is the target's Erlang `undef`, `PROCESS_LIMIT` and
    /// `MESSAGE_TOO_LARGE` are the target's limits), plus `NOCONNECTION`
    /// (not reachable, refused, no answer in time, or no distribution).
    SPAWN_ON = "spawn_on"(I32, I32, I32, I32, I32, I32, I32, I32, I32) -> (I32);

    /// `send_named_on(node_ptr, node_len, name_ptr, name_len, tag, ref_ptr, payload_ptr, payload_len) -> status`:
    /// Erlang's `{Name, Node} ! Msg`, connecting first if needed. This
    /// node's own name is `send_named`. On another node, a name that is not
    /// registered there is not reported: the message is dropped. Errors as
    /// `send_named`, plus `NOCONNECTION`.
    SEND_NAMED_ON = "send_named_on"(I32, I32, I32, I32, I32, I32, I32, I32) -> (I32);

    /// `ping(node_ptr, node_len) -> 1 | 0`: Erlang's `net_adm:ping`:
    /// connect if needed and exchange a ping; 1 if the node answered
    /// (`pong`). Always 0 on a node without distribution.
    PING = "ping"(I32, I32) -> (I32);

    /// `monitor_node(node_ptr, node_len, flag) -> status`: Erlang's
    /// `monitor_node/2`. With `flag` 1, the caller gets a `NODEDOWN`
    /// message ([`crate::tag::NODEDOWN`], payload the node name) when the
    /// connection to that node is lost, or at once if it is not connected;
    /// monitors stack. With 0, one such monitor is removed. Monitoring this
    /// node's own name (when distributed) never fires. Errors: `BAD_ARG`
    /// (name not UTF-8).
    MONITOR_NODE = "monitor_node"(I32, I32, I32) -> (I32);

    /// `pg_join(scope_ptr, scope_len, group_ptr, group_len) -> status`:
    /// Erlang's `pg:join(Scope, Group, self())`: the caller joins a process
    /// group of a scope. Joining again adds another membership, to be left
    /// as many times. Memberships end when the caller exits; they are
    /// announced to every connected visible node. Errors: `PG_LIMIT`,
    /// `BAD_ARG` (a name empty, not UTF-8, or longer than
    /// [`crate::NAME_BYTES_MAX`]).
    PG_JOIN = "pg_join"(I32, I32, I32, I32) -> (I32);

    /// `pg_leave(scope_ptr, scope_len, group_ptr, group_len) -> status`:
    /// drop one of the caller's memberships of a group. Errors:
    /// `NOT_JOINED`, `BAD_ARG` (as `pg_join`).
    PG_LEAVE = "pg_leave"(I32, I32, I32, I32) -> (I32);

    /// `pg_members(scope_ptr, scope_len, group_ptr, group_len, buf_ptr, buf_len) -> count | status`:
    /// the members of a group on every connected node, as 24-byte pids
    /// sorted by pid, a pid once per membership. Returns the number of
    /// pids; they are written only if `count * 24` is at most `buf_len`, so
    /// a guest with a smaller buffer retries with a larger one. The whole
    /// buffer must lie in memory. An unknown group has no members. Errors:
    /// `BAD_ARG` (a name not UTF-8 or too long).
    PG_MEMBERS = "pg_members"(I32, I32, I32, I32, I32, I32) -> (I32);

    /// `pg_local_members(scope_ptr, scope_len, group_ptr, group_len, buf_ptr, buf_len) -> count | status`:
    /// as `pg_members`, only the members on this node.
    PG_LOCAL_MEMBERS = "pg_local_members"(I32, I32, I32, I32, I32, I32) -> (I32);

    /// `pg_which_groups(scope_ptr, scope_len, buf_ptr, buf_len) -> len | status`:
    /// the groups of a scope that have members, sorted, each as a
    /// little-endian `u32` byte length followed by the UTF-8 name. Returns
    /// the total length; written only if it is at most `buf_len` (as
    /// `node_name`). Errors: `BAD_ARG` (scope not UTF-8 or too long).
    PG_WHICH_GROUPS = "pg_which_groups"(I32, I32, I32, I32) -> (I32);

    /// `global_register(name_ptr, name_len, pid_ptr, holder_out) -> status`:
    /// Erlang's `global:register_name`, on consensus: register the cluster
    /// name for `pid` (a process of this node) if no process holds it.
    /// Waits for the coordination group. Errors: `ALREADY_REGISTERED`
    /// (another process holds it: its pid is written to `holder_out`),
    /// `NO_QUORUM`, `COORD_LIMIT`, `SESSION_LOST`, `NO_COORDINATION`,
    /// `BAD_ARG` (name empty, longer than 255 bytes or not UTF-8; pid not of
    /// this node).
    GLOBAL_REGISTER = "global_register"(I32, I32, I32, I32) -> (I32);

    /// `global_unregister(name_ptr, name_len, pid_ptr) -> status`: free the
    /// cluster name that `pid` holds. Errors: `NOT_REGISTERED`, `NOT_HOLDER`,
    /// `NO_QUORUM`, `NO_COORDINATION`, `BAD_ARG`.
    GLOBAL_UNREGISTER = "global_unregister"(I32, I32, I32) -> (I32);

    /// `global_whereis(name_ptr, name_len, flags, pid_out) -> status`: the
    /// holder of a cluster name, written to `pid_out`. With `flags` 0 it
    /// is read from this node's replica at once (it may lag the leader);
    /// with [`crate::whereis_flags::LINEARIZABLE`] the leader answers after
    /// confirming it still leads. Errors: `NOT_REGISTERED`, `NO_QUORUM`
    /// (linearizable only), `NO_COORDINATION`, `BAD_ARG`.
    GLOBAL_WHEREIS = "global_whereis"(I32, I32, I32, I32) -> (I32);

    /// `lock(set_ptr, set_len, timeout_ms, tokens_out, tokens_len) -> status`:
    /// take a set of cluster locks for the caller, all at once, waiting in
    /// their FIFO queues up to `timeout_ms` (`-1`: up to a day). The set is
    /// a sequence of entries, each a mode byte ([`crate::lock_mode`]), a
    /// little-endian `u32` length and the lock id (UTF-8, 1 to 255 bytes);
    /// at most 64 entries. On success one fencing token (`u64`,
    /// little-endian) per lock is written to `tokens_out`
    /// (`tokens_len` must hold them all). Errors: `TIMEOUT`, `NO_QUORUM`,
    /// `COORD_LIMIT`, `ALREADY_HELD`, `SESSION_LOST`, `NO_COORDINATION`,
    /// `BAD_ARG`.
    LOCK = "lock"(I32, I32, I64, I32, I32) -> (I32);

    /// `unlock(id_ptr, id_len) -> status`: give back a cluster lock the
    /// caller holds. Errors: `NOT_HOLDER`, `NO_QUORUM`, `NO_COORDINATION`,
    /// `BAD_ARG`.
    UNLOCK = "unlock"(I32, I32) -> (I32);

    /// `elect(group_ptr, group_len, leader_out, term_out) -> status`: stand
    /// in a cluster-wide election. The leader's pid is written to
    /// `leader_out` and its term (`u64`, a fencing token) to `term_out`.
    /// From now on the leader gets a [`crate::tag::COORD`] `Elected`
    /// message and every other candidate `LeaderChanged`, at each change.
    /// Errors: `NO_QUORUM`, `COORD_LIMIT`, `SESSION_LOST`,
    /// `NO_COORDINATION`, `BAD_ARG`.
    ELECT = "elect"(I32, I32, I32, I32) -> (I32);

    /// `resign(group_ptr, group_len) -> status`: leave an election (if the
    /// caller led it, the next candidate leads). Errors: `NOT_CANDIDATE`,
    /// `NO_QUORUM`, `NO_COORDINATION`, `BAD_ARG`.
    RESIGN = "resign"(I32, I32) -> (I32);

    /// `leader(group_ptr, group_len, leader_out, term_out) -> status`: the
    /// leader of an election and its term, from this node's replica.
    /// Errors: `NOT_REGISTERED` (no candidate), `NO_COORDINATION`,
    /// `BAD_ARG`.
    LEADER = "leader"(I32, I32, I32, I32) -> (I32);

    /// `global_send(name_ptr, name_len, tag, ref_ptr, payload_ptr,
    /// payload_len) -> status`: Erlang's `global:send`: send to the process
    /// holding the cluster name, as this node's replica knows it, in one
    /// call. Errors as `send`, plus `NOT_REGISTERED`, `NO_COORDINATION`,
    /// `BAD_ARG` (a name empty or longer than 255 bytes).
    GLOBAL_SEND = "global_send"(I32, I32, I32, I32, I32, I32) -> (I32);

    /// `table_call(req_ptr, req_len, out_ptr, out_cap) -> len | status`:
    /// run a table request ([`crate::table::Request`], encoded with the
    /// codec) for the caller, waiting for its table's replicas if it needs
    /// them. Returns the length of the encoded [`crate::table::Reply`]
    /// (a failed request is an `Error` reply, not a status). If it fits in
    /// `out_cap` it is written to `out_ptr`; if not, nothing is written
    /// and it stays with the caller for `table_reply`. Errors: `BAD_ARG`
    /// (the request does not decode, or is longer than the node's
    /// `table_request_bytes_max`).
    TABLE_CALL = "table_call"(I32, I32, I32, I32) -> (I32);

    /// `table_reply(out_ptr, out_cap) -> len | status`: copy the reply the
    /// last `table_call` kept (it was longer than its `out_cap`) to
    /// `out_ptr`, and forget it. Errors: `NO_MESSAGE` (no reply kept),
    /// `BUFFER_TOO_SMALL` (kept for another try).
    TABLE_REPLY = "table_reply"(I32, I32) -> (I32);

    /// `table_get(table_ptr, table_len, key_ptr, key_len, out_ptr, out_cap)
    /// -> len | status`: a dirty read of one key from this node's replica,
    /// without encoding a request or a reply: the fast path of `Get`.
    /// Writes to `out_ptr`, if it fits in `out_cap` (else nothing is
    /// written and the length is still returned): the key's version
    /// (`u64`), the table's log index (`u64`), flags (`u32`, bit 0: the
    /// replica may be stale), the number of records (`u32`), then each
    /// record as a length (`u32`) and its value; all little-endian.
    /// Errors: `TABLE_ERROR` (no such table, or a table name that is not
    /// UTF-8: `table_call` with `Get` says which), `BAD_ARG`.
    TABLE_GET = "table_get"(I32, I32, I32, I32, I32, I32) -> (I32);
}

/// Find a host function by name.
pub fn find(name: &str) -> Option<&'static Import> {
    ALL.iter().find(|i| i.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        for (i, a) in ALL.iter().enumerate() {
            for b in &ALL[i + 1..] {
                assert_ne!(a.name, b.name);
            }
        }
        assert_eq!(find("send"), Some(&SEND));
        assert_eq!(find("nope"), None);
    }
}
