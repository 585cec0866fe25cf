//! Nodes: this node's name, the connected nodes, pinging and monitoring
//! them, spawning on them and sending to names registered there.
//!
//! Sends to a pid of another node need nothing from here: [`crate::send`],
//! [`crate::link`] and [`crate::monitor`] work on any pid. Node names look
//! like `name@host`; a node that is not distributed is `nonode@nohost`.

use molt_abi::tag;
use serde::Serialize;

use crate::error::{Error, check};
use crate::process::{Pid, Ref};
use crate::{codec, sys};

/// Call a `node_name`-style host function, growing the buffer until the
/// text fits (the host returns the full length and writes only if it fits).
fn read_text(call: fn(&mut [u8]) -> i32) -> String {
    let mut buf = vec![0u8; 64];
    loop {
        let needed = call(&mut buf);
        let needed = usize::try_from(needed)
            .unwrap_or_else(|_| panic!("the host returned status {needed} for a name"));
        if needed <= buf.len() {
            buf.truncate(needed);
            return String::from_utf8_lossy(&buf).into_owned();
        }
        // The text changed size between calls (a node came): try again.
        buf.resize(needed, 0);
    }
}

/// This node's name (Erlang's `node()`): `name@host`, or `nonode@nohost`
/// when the node is not distributed.
pub fn node() -> String {
    read_text(sys::node_name)
}

/// The connected visible nodes, sorted (Erlang's `nodes()`). Empty when the
/// node is not distributed or alone.
pub fn nodes() -> Vec<String> {
    let list = read_text(sys::nodes);
    list.split('\n')
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Connect to `node` if needed and exchange a ping (Erlang's
/// `net_adm:ping`): whether it answered. Blocks this process (only) until
/// the answer or the node's request timeout.
pub fn ping(node: &str) -> bool {
    sys::ping(node.as_bytes()) == 1
}

/// Erlang's `monitor_node(Node, Flag)`. With `on`, this process gets a
/// NODEDOWN message ([`crate::System::NodeDown`]) when the connection to
/// `node` is lost, or at once if it is not connected; monitors stack.
/// With `on == false`, one such monitor is removed. Fails with
/// [`Error::BadArg`] only for a name the host refuses.
pub fn monitor_node(node: &str, on: bool) -> Result<(), Error> {
    check(sys::monitor_node(node.as_bytes(), i32::from(on))).map(drop)
}

/// Start a process on `node` running its current version of `module`, with
/// `args` (encoded with [`codec::encode`]). This node's own name spawns
/// here. Blocks this process until `node` answers. Fails with
/// [`Error::NoModule`] (the node has no such module: Erlang's `undef`),
/// [`Error::ProcessLimit`], [`Error::MessageTooLarge`] or
/// [`Error::NoConnection`].
pub fn spawn_on(node: &str, module: &str, args: &impl Serialize) -> Result<Pid, Error> {
    spawn_on_bytes(node, module, &codec::encode(args), false, false).map(|(pid, _)| pid)
}

/// [`spawn_on`], linking the new process to the caller before it runs.
pub fn spawn_link_on(node: &str, module: &str, args: &impl Serialize) -> Result<Pid, Error> {
    spawn_on_bytes(node, module, &codec::encode(args), true, false).map(|(pid, _)| pid)
}

/// [`spawn_on`], monitoring the new process; returns its pid and the
/// monitor reference.
pub fn spawn_monitor_on(
    node: &str,
    module: &str,
    args: &impl Serialize,
) -> Result<(Pid, Ref), Error> {
    let (pid, reference) = spawn_on_bytes(node, module, &codec::encode(args), false, true)?;
    Ok((pid, reference.unwrap_or(Ref::NONE)))
}

/// [`spawn_on`] with init argument bytes given as they are, optionally
/// linking and/or monitoring. The reference is `Some` iff `monitor`.
pub fn spawn_on_bytes(
    node: &str,
    module: &str,
    args: &[u8],
    link: bool,
    monitor: bool,
) -> Result<(Pid, Option<Ref>), Error> {
    crate::process::spawn_with(link, monitor, |flags, pid, reference| {
        sys::spawn_on(
            node.as_bytes(),
            module.as_bytes(),
            args,
            flags,
            pid,
            reference,
        )
    })
}

/// Send a typed message (tag `DATA`) to the process registered as `name`
/// on `node` (Erlang's `{Name, Node} ! Msg`), connecting first if needed.
/// This node's own name is [`crate::send_named`]. On another node a name
/// that is not registered is not reported: the message is dropped. Fails
/// with [`Error::NoConnection`], or as [`crate::send_named`].
pub fn send_named_on<T: Serialize + ?Sized>(node: &str, name: &str, msg: &T) -> Result<(), Error> {
    crate::send::with_encoded(msg, |payload| {
        send_named_on_raw(node, name, tag::DATA, None, payload)
    })
}

/// [`send_named_on`] with a tag, an optional envelope reference and
/// payload bytes as they are.
pub fn send_named_on_raw(
    node: &str,
    name: &str,
    tag: u32,
    reference: Option<Ref>,
    payload: &[u8],
) -> Result<(), Error> {
    let reference = reference.map(Ref::to_bytes);
    check(sys::send_named_on(
        node.as_bytes(),
        name.as_bytes(),
        tag,
        reference.as_ref(),
        payload,
    ))
    .map(drop)
}
