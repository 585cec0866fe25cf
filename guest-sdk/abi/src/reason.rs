//! Exit reasons: UTF-8 strings, some with fixed meanings.
//!
//! A reason longer than [`REASON_BYTES_MAX`] is cut to that length (on a
//! character boundary) by the host.

/// The process finished its work. Ignored by linked processes that do not
/// trap exits.
pub const NORMAL: &str = "normal";
/// Sent with `exit(pid, "kill")`: cannot be trapped; the target dies with
/// [`KILLED`].
pub const KILL: &str = "kill";
/// The reason a process killed by [`KILL`] exits with.
pub const KILLED: &str = "killed";
/// The process did not exist when linked or monitored.
pub const NOPROC: &str = "noproc";
/// The connection to the process's node was lost.
pub const NOCONNECTION: &str = "noconnection";
/// An orderly shutdown (supervisors, node stop).
pub const SHUTDOWN: &str = "shutdown";

/// Prefix of the reason of a guest that panicked: `panic: <message>`.
pub const PANIC_PREFIX: &str = "panic: ";
/// Prefix of the reason of a guest that trapped: `trap: <kind>`.
pub const TRAP_PREFIX: &str = "trap: ";
/// Prefix of the reason of a guest that passed a bad pointer to a host call.
pub const BAD_POINTER_PREFIX: &str = "bad_pointer: ";
/// Prefix of the reason of a process that crossed a node limit.
pub const LIMIT_PREFIX: &str = "limit: ";

/// Prefix of the reason of a process killed because the old version of
/// its module was purged: `purged: <module> <version>`. Cannot be trapped.
pub const PURGED_PREFIX: &str = "purged: ";

/// Longest reason kept, in bytes.
pub const REASON_BYTES_MAX: usize = 1024;

/// `reason` cut to at most [`REASON_BYTES_MAX`] bytes on a char boundary.
pub fn truncate(reason: &str) -> &str {
    if reason.len() <= REASON_BYTES_MAX {
        return reason;
    }
    let mut end = REASON_BYTES_MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;

    #[test]
    fn truncate_keeps_char_boundaries() {
        let long: String = core::iter::repeat_n('é', REASON_BYTES_MAX).collect();
        let cut = truncate(&long);
        assert!(cut.len() <= REASON_BYTES_MAX);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(truncate("normal"), "normal");
    }
}
