//! Process groups, as Erlang's `pg`: named groups of processes, in
//! scopes, across the connected nodes.
//!
//! A process [`join`]s a group of a scope (a scope is just a namespace:
//! groups of different scopes are unrelated). It may join the same group
//! several times and stays a member until it has [`leave`]n as many times,
//! or until it exits: the host removes an ended process from every group.
//! [`members`] lists the members on every connected node, a pid once per
//! membership; [`local_members`] only those of this node.
//!
//! The groups live in the host, not in the process, so memberships survive
//! a hot upgrade of the member's module. Across nodes the view is
//! eventually consistent, as in Erlang: a join on one node shows on another
//! once its announcement arrives, a node that connects later gets every
//! membership at once, and a node that goes away takes its members with
//! it.
//!
//! ```no_run
//! use molt_sdk::pg;
//!
//! // In a worker: offer its services.
//! pg::join("jobs", "resize").unwrap();
//!
//! // In a client: pick a worker anywhere in the cluster.
//! let workers = pg::members("jobs", "resize");
//! if let Some(worker) = workers.first() {
//!     molt_sdk::send(*worker, &"thumbnail.png").unwrap();
//! }
//! ```
//!
//! Names are 1 to [`molt_abi::NAME_BYTES_MAX`] bytes. A process holds at
//! most the node's `pg_memberships_max` memberships and a node has at most
//! `pg_groups_max` groups; past either, [`join`] fails with
//! [`Error::PgLimit`].

use molt_abi::PID_BYTES;

use crate::error::{Error, check};
use crate::process::Pid;
use crate::sys;

/// Join `group` of `scope` once more (Erlang's `pg:join(Scope, Group,
/// self())`). Fails with [`Error::PgLimit`] or [`Error::BadArg`] (a name
/// empty or longer than `NAME_BYTES_MAX`).
///
/// ```no_run
/// molt_sdk::pg::join("chat", "lobby").unwrap();
/// ```
pub fn join(scope: &str, group: &str) -> Result<(), Error> {
    check(sys::pg_join(scope.as_bytes(), group.as_bytes())).map(drop)
}

/// Leave `group` of `scope` once (Erlang's `pg:leave`). Fails with
/// [`Error::NotJoined`] if the process is not a member.
///
/// ```no_run
/// use molt_sdk::pg;
/// pg::join("chat", "lobby").unwrap();
/// pg::leave("chat", "lobby").unwrap();
/// assert_eq!(pg::leave("chat", "lobby"), Err(molt_sdk::Error::NotJoined));
/// ```
pub fn leave(scope: &str, group: &str) -> Result<(), Error> {
    check(sys::pg_leave(scope.as_bytes(), group.as_bytes())).map(drop)
}

/// The members of `group` of `scope` on every connected node, sorted by
/// pid, a pid once per membership (Erlang's `pg:get_members`). Empty for a
/// group nobody joined (or a name the host refuses).
///
/// ```no_run
/// for member in molt_sdk::pg::members("chat", "lobby") {
///     molt_sdk::send(member, &"hello").unwrap();
/// }
/// ```
pub fn members(scope: &str, group: &str) -> Vec<Pid> {
    read_members(scope, group, false)
}

/// As [`members`], only the processes of this node (Erlang's
/// `pg:get_local_members`).
///
/// ```no_run
/// let here = molt_sdk::pg::local_members("chat", "lobby");
/// ```
pub fn local_members(scope: &str, group: &str) -> Vec<Pid> {
    read_members(scope, group, true)
}

/// The groups of `scope` that have members anywhere, sorted (Erlang's
/// `pg:which_groups`).
///
/// ```no_run
/// let groups: Vec<String> = molt_sdk::pg::which_groups("chat");
/// ```
pub fn which_groups(scope: &str) -> Vec<String> {
    let mut buf = vec![0u8; 256];
    let bytes = loop {
        let needed = sys::pg_which_groups(scope.as_bytes(), &mut buf);
        let Ok(needed) = usize::try_from(needed) else {
            return Vec::new();
        };
        if needed <= buf.len() {
            buf.truncate(needed);
            break buf;
        }
        // Groups came between the calls: ask again with room for them.
        buf.resize(needed, 0);
    };
    decode_groups(&bytes)
}

/// Call `pg_members` (or `pg_local_members`), growing the buffer until
/// the pids fit.
fn read_members(scope: &str, group: &str, local: bool) -> Vec<Pid> {
    let mut buf = vec![0u8; 16 * PID_BYTES];
    loop {
        let count = sys::pg_members(scope.as_bytes(), group.as_bytes(), &mut buf, local);
        let Ok(count) = usize::try_from(count) else {
            return Vec::new();
        };
        if count * PID_BYTES <= buf.len() {
            return buf[..count * PID_BYTES]
                .chunks_exact(PID_BYTES)
                .map(|b| Pid::from_slice(b).expect("24 bytes"))
                .collect();
        }
        // Members joined between the calls: ask again with room for them.
        buf.resize(count * PID_BYTES, 0);
    }
}

/// Group names as the host writes them: `u32` length + UTF-8 each.
fn decode_groups(mut bytes: &[u8]) -> Vec<String> {
    let mut groups = Vec::new();
    while let Some((len, rest)) = bytes.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        let Some((name, rest)) = rest.split_at_checked(len) else {
            break;
        };
        groups.push(String::from_utf8_lossy(name).into_owned());
        bytes = rest;
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_lists_decode() {
        assert_eq!(
            decode_groups(&[2, 0, 0, 0, b'a', b'b', 1, 0, 0, 0, b'c']),
            vec!["ab".to_string(), "c".to_string()]
        );
        assert_eq!(decode_groups(&[]), Vec::<String>::new());
        // A cut list yields the names that are whole.
        assert_eq!(decode_groups(&[1, 0, 0, 0, b'a', 5, 0]), vec!["a"]);
    }
}
