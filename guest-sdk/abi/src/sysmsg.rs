//! Encodings of the system messages the host delivers (tags at or above
//! [`crate::tag::RESERVED_MIN`]).
//!
//! Both have the same payload layout: the 24-byte pid the message is about,
//! then the exit reason as UTF-8 (the rest of the payload).

use alloc::vec::Vec;

use crate::{PID_BYTES, Pid};

/// Payload of an [`crate::tag::EXIT`] message: a linked process (or a
/// process that called `exit(pid, reason)`) sent an exit signal that the
/// receiver trapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit<'a> {
    /// Who sent the signal.
    pub from: Pid,
    /// Why.
    pub reason: &'a str,
}

/// Payload of a [`crate::tag::DOWN`] message: a monitored process exited.
/// The monitor reference is the message's envelope reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Down<'a> {
    /// The process that was monitored.
    pub pid: Pid,
    /// Its exit reason (`noproc` if it was not alive when monitored).
    pub reason: &'a str,
}

/// Why a system-message payload could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than a pid.
    Truncated,
    /// The reason is not UTF-8.
    BadReason,
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DecodeError::Truncated => "system message shorter than a pid",
            DecodeError::BadReason => "system message reason is not UTF-8",
        })
    }
}

impl core::error::Error for DecodeError {}

fn encode(pid: Pid, reason: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(PID_BYTES + reason.len());
    out.extend_from_slice(&pid.to_bytes());
    out.extend_from_slice(reason.as_bytes());
    out
}

fn decode(bytes: &[u8]) -> Result<(Pid, &str), DecodeError> {
    let pid = Pid::from_slice(bytes).ok_or(DecodeError::Truncated)?;
    let reason = core::str::from_utf8(&bytes[PID_BYTES..]).map_err(|_| DecodeError::BadReason)?;
    Ok((pid, reason))
}

impl<'a> Exit<'a> {
    /// Encode as a message payload.
    pub fn encode(&self) -> Vec<u8> {
        encode(self.from, self.reason)
    }

    /// Decode a message payload.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        decode(bytes).map(|(from, reason)| Exit { from, reason })
    }
}

impl<'a> Down<'a> {
    /// Encode as a message payload.
    pub fn encode(&self) -> Vec<u8> {
        encode(self.pid, self.reason)
    }

    /// Decode a message payload.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        decode(bytes).map(|(pid, reason)| Down { pid, reason })
    }
}

/// Payload of a [`crate::tag::COORD`] message: news from the cluster's
/// coordination group about a lock or an election the process takes part
/// in. Encoded with [`crate::codec`].
#[cfg(feature = "serde")]
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Coord {
    /// The process leads `group` for `term` (a fencing token: larger than
    /// every earlier term of the group).
    Elected {
        /// The election.
        group: alloc::string::String,
        /// The term.
        term: u64,
    },
    /// Another candidate leads `group` now.
    LeaderChanged {
        /// The election.
        group: alloc::string::String,
        /// The leader.
        leader: Pid,
        /// Its term.
        term: u64,
    },
    /// The process no longer leads `group`: its node could not renew its
    /// session in time, and another candidate may be elected. Sent before
    /// the cluster can elect one. The process stays a candidate: its node
    /// stands it again once it has a session.
    LeaderLost {
        /// The election.
        group: alloc::string::String,
        /// The term that ended.
        term: u64,
    },
    /// The process no longer holds `lock`: its node could not renew its
    /// session in time, and the lock may be granted to the next waiter.
    /// Sent before the cluster can grant it.
    LockLost {
        /// The lock.
        lock: alloc::string::String,
        /// The token of the grant that was lost.
        token: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let pid = Pid {
            node: 1,
            incarnation: 2,
            serial: 3,
        };
        let exit = Exit {
            from: pid,
            reason: "boom",
        };
        assert_eq!(Exit::decode(&exit.encode()), Ok(exit));
        let down = Down { pid, reason: "" };
        assert_eq!(Down::decode(&down.encode()), Ok(down));
        assert_eq!(Down::decode(&[0; 23]), Err(DecodeError::Truncated));
        let mut bad = exit.encode();
        bad.push(0xff);
        assert_eq!(Exit::decode(&bad), Err(DecodeError::BadReason));
    }
}
