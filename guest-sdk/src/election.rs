//! Cluster-wide leader election (as `gen_leader`), on the cluster's
//! coordination group: at most one leader per election and term, by
//! construction.
//!
//! A process [`stand`]s as a candidate. The leader is told with a
//! [`crate::System::Coord`] message `Elected { group, term }`, every other
//! candidate `LeaderChanged { group, leader, term }`, now and whenever the
//! leader changes (it resigned, exited, or its node's session expired);
//! candidates lead in the order they stood. The term is a fencing token:
//! larger than every earlier term. A leader whose node cannot renew its
//! session is told `LeaderLost` before another can be elected.
//!
//! A candidate stays one until it [`resign`]s or ends: when its node's
//! session is lost (the node was cut off from the cluster's majority for
//! longer than the session lives), the cluster drops its candidacy, and
//! the node stands it again, at the end of the line, as soon as it has a
//! session again; it is then told who leads (`LeaderChanged`, or
//! `Elected`).
//!
//! ```no_run
//! use molt_sdk::election;
//! let (leader, term) = election::stand("scheduler").unwrap();
//! if leader == molt_sdk::self_pid() {
//!     // lead, with `term` as the fence
//! }
//! # let _ = term;
//! ```

use molt_abi::PID_BYTES;

pub use molt_abi::sysmsg::Coord as Notice;

use crate::error::{Error, check};
use crate::process::Pid;
use crate::sys;

/// Stand in election `group`: the leader now and its term. Errors:
/// [`Error::NoQuorum`], [`Error::CoordLimit`], [`Error::SessionLost`],
/// [`Error::BadArg`].
pub fn stand(group: &str) -> Result<(Pid, u64), Error> {
    call(group, false)
}

/// Leave election `group` (if the caller led, the next candidate does).
/// Errors: [`Error::NotCandidate`], [`Error::NoQuorum`].
pub fn resign(group: &str) -> Result<(), Error> {
    check(sys::resign(group.as_bytes())).map(drop)
}

/// The leader of `group` and its term, from this node's replica; `None`
/// if it has no candidate.
pub fn leader(group: &str) -> Option<(Pid, u64)> {
    call(group, true).ok()
}

fn call(group: &str, read_only: bool) -> Result<(Pid, u64), Error> {
    let mut leader = [0u8; PID_BYTES];
    let mut term = [0u8; 8];
    check(sys::elect(
        group.as_bytes(),
        read_only,
        &mut leader,
        &mut term,
    ))?;
    Ok((Pid::from_bytes(&leader), u64::from_le_bytes(term)))
}
