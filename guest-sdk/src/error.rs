//! [`Error`]: the failures host functions report, one variant per status code.

use std::fmt;

use molt_abi::status;
use serde::{Deserialize, Serialize};

/// A host function failed. One variant per negative `molt_abi::status`
/// code; [`Error::code`] gives the code back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Error {
    /// An argument is out of range or malformed: an empty or oversized
    /// name, a reserved tag, a reason that is not UTF-8.
    BadArg,
    /// The target process does not exist (never did, or has exited).
    NoProc,
    /// No module with that name is loaded on this node.
    NoModule,
    /// The node already runs as many processes as it allows.
    ProcessLimit,
    /// The message (or spawn arguments) exceeds the node's message size limit.
    MessageTooLarge,
    /// The receiver's mailbox is full; the message was not delivered.
    MailboxFull,
    /// A receive found no matching message before its timeout.
    Timeout,
    /// Another process holds that name.
    NameTaken,
    /// This process already has a registered name.
    AlreadyRegistered,
    /// No process is registered under that name.
    NotRegistered,
    /// There is no current message to read.
    NoMessage,
    /// The buffer is smaller than the current message.
    BufferTooSmall,
    /// The node holds as many pending timers as it allows.
    TimerLimit,
    /// No such timer: it fired, was cancelled, or never existed.
    NoTimer,
    /// The target's node cannot be reached.
    NoConnection,
    /// A process group limit: the process holds `pg_memberships_max`
    /// memberships, or the node `pg_groups_max` groups.
    PgLimit,
    /// `pg::leave`: the process is not a member of that group.
    NotJoined,
    /// `link`: the process has `links_max` links already.
    LinkLimit,
    /// `monitor`: the process holds `monitors_max` monitors already.
    MonitorLimit,
    /// Cluster names, locks, elections: no quorum answered in time (this
    /// node is on a minority side, or a leader is being elected). The call
    /// may still take effect; if it does, the node undoes it.
    NoQuorum,
    /// A limit of the cluster's coordination state was reached.
    CoordLimit,
    /// The caller does not hold that cluster name or lock.
    NotHolder,
    /// The caller already holds one of the locks asked for.
    AlreadyHeld,
    /// The node runs no coordination group.
    NoCoordination,
    /// The node's coordination session ended during the call; try again.
    SessionLost,
    /// The caller is not a candidate in that election.
    NotCandidate,
    /// A fast table read failed; the table call says why.
    TableError,
    /// A negative code this SDK does not know (a newer host).
    Unknown(i32),
}

impl Error {
    /// The error for a status code, or `None` if the code means success
    /// (zero or positive).
    pub fn from_code(code: i32) -> Option<Error> {
        Some(match code {
            c if c >= 0 => return None,
            status::BAD_ARG => Error::BadArg,
            status::NOPROC => Error::NoProc,
            status::NO_MODULE => Error::NoModule,
            status::PROCESS_LIMIT => Error::ProcessLimit,
            status::MESSAGE_TOO_LARGE => Error::MessageTooLarge,
            status::MAILBOX_FULL => Error::MailboxFull,
            status::TIMEOUT => Error::Timeout,
            status::NAME_TAKEN => Error::NameTaken,
            status::ALREADY_REGISTERED => Error::AlreadyRegistered,
            status::NOT_REGISTERED => Error::NotRegistered,
            status::NO_MESSAGE => Error::NoMessage,
            status::BUFFER_TOO_SMALL => Error::BufferTooSmall,
            status::TIMER_LIMIT => Error::TimerLimit,
            status::NO_TIMER => Error::NoTimer,
            status::NOCONNECTION => Error::NoConnection,
            status::PG_LIMIT => Error::PgLimit,
            status::NOT_JOINED => Error::NotJoined,
            status::LINK_LIMIT => Error::LinkLimit,
            status::MONITOR_LIMIT => Error::MonitorLimit,
            status::NO_QUORUM => Error::NoQuorum,
            status::COORD_LIMIT => Error::CoordLimit,
            status::NOT_HOLDER => Error::NotHolder,
            status::ALREADY_HELD => Error::AlreadyHeld,
            status::NO_COORDINATION => Error::NoCoordination,
            status::SESSION_LOST => Error::SessionLost,
            status::NOT_CANDIDATE => Error::NotCandidate,
            status::TABLE_ERROR => Error::TableError,
            other => Error::Unknown(other),
        })
    }

    /// The raw (negative) ABI status code.
    pub fn code(self) -> i32 {
        match self {
            Error::BadArg => status::BAD_ARG,
            Error::NoProc => status::NOPROC,
            Error::NoModule => status::NO_MODULE,
            Error::ProcessLimit => status::PROCESS_LIMIT,
            Error::MessageTooLarge => status::MESSAGE_TOO_LARGE,
            Error::MailboxFull => status::MAILBOX_FULL,
            Error::Timeout => status::TIMEOUT,
            Error::NameTaken => status::NAME_TAKEN,
            Error::AlreadyRegistered => status::ALREADY_REGISTERED,
            Error::NotRegistered => status::NOT_REGISTERED,
            Error::NoMessage => status::NO_MESSAGE,
            Error::BufferTooSmall => status::BUFFER_TOO_SMALL,
            Error::TimerLimit => status::TIMER_LIMIT,
            Error::NoTimer => status::NO_TIMER,
            Error::NoConnection => status::NOCONNECTION,
            Error::PgLimit => status::PG_LIMIT,
            Error::NotJoined => status::NOT_JOINED,
            Error::LinkLimit => status::LINK_LIMIT,
            Error::MonitorLimit => status::MONITOR_LIMIT,
            Error::NoQuorum => status::NO_QUORUM,
            Error::CoordLimit => status::COORD_LIMIT,
            Error::NotHolder => status::NOT_HOLDER,
            Error::AlreadyHeld => status::ALREADY_HELD,
            Error::NoCoordination => status::NO_COORDINATION,
            Error::SessionLost => status::SESSION_LOST,
            Error::NotCandidate => status::NOT_CANDIDATE,
            Error::TableError => status::TABLE_ERROR,
            Error::Unknown(code) => code,
        }
    }
}

/// `Ok(code)` for a success status (zero or a count), else the error.
pub(crate) fn check(code: i32) -> Result<i32, Error> {
    match Error::from_code(code) {
        None => Ok(code),
        Some(e) => Err(e),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unknown(code) => write!(f, "unknown host error {code}"),
            known => f.write_str(status::name(known.code())),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        // Walk the ABI's codes until one has no name, so a code added there
        // without a variant here fails this test.
        let mut code = -1;
        while status::name(code) != "unknown" {
            let err = Error::from_code(code).unwrap();
            assert!(!matches!(err, Error::Unknown(_)), "code {code} unmapped");
            assert_eq!(err.code(), code);
            assert_eq!(err.to_string(), status::name(code));
            code -= 1;
        }
        assert!(code < status::TABLE_ERROR);
        assert_eq!(Error::from_code(-99), Some(Error::Unknown(-99)));
        assert_eq!(Error::Unknown(-99).code(), -99);
        assert_eq!(Error::from_code(0), None);
        assert_eq!(check(3), Ok(3));
        assert_eq!(check(status::MAILBOX_FULL), Err(Error::MailboxFull));
    }
}
