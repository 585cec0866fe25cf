//! The contract between a molt host and its wasm guests.
//!
//! This crate is the only place where import names, their signatures, error
//! codes, reserved tags, the in-memory layout of pids and references, and the
//! encoding of system messages are written down. The host (`molt-host`) and
//! the guest SDK (`molt-sdk`) both use it, so nothing types an import name
//! twice. `ABI.md` at the repository root describes the same contract in
//! prose, well enough to write a guest by hand in WAT.
//!
//! The crate has no dependencies (serde only behind the optional `serde`
//! feature, so pids and references can travel in typed messages) and does
//! no I/O.

#![no_std]

extern crate alloc;

#[cfg(feature = "serde")]
pub mod bytes;
#[cfg(feature = "codec")]
pub mod codec;
pub mod exports;
pub mod imports;
pub mod reason;
pub mod section;
pub mod sysmsg;
#[cfg(feature = "serde")]
pub mod table;

use core::fmt;

/// Version of this ABI. A guest declares the version it was built against
/// in its `molt.module` custom section; a host refuses other versions.
pub const ABI_VERSION: u32 = 1;

/// Name of the wasm import module every molt host function lives in.
pub const IMPORT_MODULE: &str = "molt";

/// Status codes returned by host functions. `OK` (zero) or a positive value
/// means success; a negative value is one of these errors.
pub mod status {
    /// Success.
    pub const OK: i32 = 0;
    /// An argument is out of range or malformed (an empty or oversized name,
    /// a reserved tag, a reason that is not UTF-8, ...).
    pub const BAD_ARG: i32 = -1;
    /// The target process does not exist (never did, or has exited).
    pub const NOPROC: i32 = -2;
    /// No module with that name is loaded on this node.
    pub const NO_MODULE: i32 = -3;
    /// The node runs `processes_max` processes already.
    pub const PROCESS_LIMIT: i32 = -4;
    /// The message is larger than `message_bytes_max`.
    pub const MESSAGE_TOO_LARGE: i32 = -5;
    /// The receiver's mailbox holds `mailbox_len_max` messages already; the
    /// message was not delivered.
    pub const MAILBOX_FULL: i32 = -6;
    /// A receive with a timeout found no matching message in time.
    pub const TIMEOUT: i32 = -7;
    /// `register`: another process holds that name.
    pub const NAME_TAKEN: i32 = -8;
    /// `register`: the calling process already has a name.
    pub const ALREADY_REGISTERED: i32 = -9;
    /// `unregister` / `send_named`: no process is registered under that name.
    pub const NOT_REGISTERED: i32 = -10;
    /// `msg_read`: there is no current message (nothing was received yet).
    pub const NO_MESSAGE: i32 = -11;
    /// `msg_read`: the buffer is smaller than the current message.
    pub const BUFFER_TOO_SMALL: i32 = -12;
    /// `send_after`: the node holds `timers_max` pending timers already.
    pub const TIMER_LIMIT: i32 = -13;
    /// `cancel_timer`: no such timer (it fired, was cancelled, or never was).
    pub const NO_TIMER: i32 = -14;
    /// The target's node cannot be reached (not connected, or the
    /// connection was lost).
    pub const NOCONNECTION: i32 = -15;
    /// `pg_join`: a process group limit was reached: the caller holds
    /// `pg_memberships_max` memberships already, or the node has
    /// `pg_groups_max` groups and this would be a new one.
    pub const PG_LIMIT: i32 = -16;
    /// `pg_leave`: the caller is not a member of that group.
    pub const NOT_JOINED: i32 = -17;
    /// `link`: the caller has `links_max` links already.
    pub const LINK_LIMIT: i32 = -18;
    /// `monitor`: the caller holds `monitors_max` monitors already.
    pub const MONITOR_LIMIT: i32 = -19;
    /// Cluster names, locks, elections: the coordination group did not
    /// commit within its quorum timeout (this node is on a minority side,
    /// or a leader is being elected). The call may still take effect; if it
    /// does, the node undoes it.
    pub const NO_QUORUM: i32 = -20;
    /// Cluster names, locks, elections: a limit of the replicated state
    /// was reached (`names_max`, `locks_max`, `waiters_per_lock_max`,
    /// `waiters_max`, `elections_max`, `candidates_max`); nothing changed.
    pub const COORD_LIMIT: i32 = -21;
    /// `global_unregister` / `unlock`: another process holds the name, or
    /// the caller does not hold the lock.
    pub const NOT_HOLDER: i32 = -22;
    /// `lock`: the caller already holds one of the locks, or names one
    /// twice.
    pub const ALREADY_HELD: i32 = -23;
    /// The node runs no coordination group (cluster names, locks and
    /// elections are off).
    pub const NO_COORDINATION: i32 = -24;
    /// The node's coordination session ended during the call (it could
    /// not renew it in time); try again.
    pub const SESSION_LOST: i32 = -25;
    /// `resign`: the caller is not a candidate in that election.
    pub const NOT_CANDIDATE: i32 = -26;
    /// `table_get`: the read failed (no such table, say); `table_call`
    /// with the same read gives the reason.
    pub const TABLE_ERROR: i32 = -27;

    /// A short, stable name for a status code, for logs and errors.
    pub fn name(code: i32) -> &'static str {
        match code {
            OK => "ok",
            BAD_ARG => "bad_arg",
            NOPROC => "noproc",
            NO_MODULE => "no_module",
            PROCESS_LIMIT => "process_limit",
            MESSAGE_TOO_LARGE => "message_too_large",
            MAILBOX_FULL => "mailbox_full",
            TIMEOUT => "timeout",
            NAME_TAKEN => "name_taken",
            ALREADY_REGISTERED => "already_registered",
            NOT_REGISTERED => "not_registered",
            NO_MESSAGE => "no_message",
            BUFFER_TOO_SMALL => "buffer_too_small",
            TIMER_LIMIT => "timer_limit",
            NO_TIMER => "no_timer",
            NOCONNECTION => "noconnection",
            PG_LIMIT => "pg_limit",
            NOT_JOINED => "not_joined",
            LINK_LIMIT => "link_limit",
            MONITOR_LIMIT => "monitor_limit",
            NO_QUORUM => "no_quorum",
            COORD_LIMIT => "coord_limit",
            NOT_HOLDER => "not_holder",
            ALREADY_HELD => "already_held",
            NO_COORDINATION => "no_coordination",
            SESSION_LOST => "session_lost",
            NOT_CANDIDATE => "not_candidate",
            TABLE_ERROR => "table_error",
            c if c >= 0 => "ok",
            _ => "unknown",
        }
    }
}

/// Flags of `global_whereis`.
pub mod whereis_flags {
    /// Ask the coordination leader, which confirms it still leads.
    pub const LINEARIZABLE: i32 = 1;
}

/// Modes of a lock in a `lock` set.
pub mod lock_mode {
    /// One holder at a time.
    pub const EXCLUSIVE: u8 = 0;
    /// Any number of shared holders.
    pub const SHARED: u8 = 1;
}

/// Message tags. A tag is a `u32` carried beside every message; guests use
/// it for selective receive. Tags at or above [`tag::RESERVED_MIN`] belong
/// to the host: a guest cannot send them, so a system message cannot be
/// forged.
pub mod tag {
    /// The tag the SDK uses for ordinary typed messages.
    pub const DATA: u32 = 0;
    /// The SDK's tag for a gen_server-style request (reserved for the OTP
    /// library; an ordinary user tag as far as the host is concerned).
    pub const CALL: u32 = 1;
    /// The SDK's tag for a reply to [`CALL`].
    pub const REPLY: u32 = 2;
    /// The SDK's tag for a gen_server-style cast (a request with no reply;
    /// an ordinary user tag as far as the host is concerned).
    pub const CAST: u32 = 3;
    /// The first tag reserved for the host.
    pub const RESERVED_MIN: u32 = 0xFFFF_FF00;
    /// A trapped exit signal, delivered as a message. Payload:
    /// [`crate::sysmsg::Exit`].
    pub const EXIT: u32 = 0xFFFF_FF01;
    /// A monitor fired. The envelope's reference is the monitor reference.
    /// Payload: [`crate::sysmsg::Down`].
    pub const DOWN: u32 = 0xFFFF_FF02;
    /// A node this process monitors lost its connection. Payload: the
    /// node's name, UTF-8.
    pub const NODEDOWN: u32 = 0xFFFF_FF03;
    /// News from the coordination group about a lock or an election the
    /// process takes part in. Payload: [`crate::sysmsg::Coord`], encoded
    /// with the codec.
    pub const COORD: u32 = 0xFFFF_FF04;
    /// A table the process subscribed to changed, or the subscription
    /// ended. Payload: [`crate::table::Event`], encoded with the codec.
    pub const TABLE: u32 = 0xFFFF_FF05;

    /// Whether a guest may send a message with this tag.
    pub const fn is_user(tag: u32) -> bool {
        tag < RESERVED_MIN
    }
}

/// Flags for [`imports::SPAWN`] and [`imports::SPAWN_ON`].
pub mod spawn_flags {
    /// Link the new process to the caller before it runs (spawn_link).
    pub const LINK: i32 = 1;
    /// Monitor the new process; the reference is written to `ref_out`
    /// (spawn_monitor).
    pub const MONITOR: i32 = 2;
}

/// Flags for [`imports::DEMONITOR`].
pub mod demonitor_flags {
    /// Also remove a DOWN message for this monitor already in the mailbox.
    pub const FLUSH: i32 = 1;
}

/// Log levels for [`imports::LOG`].
pub mod log_level {
    /// Errors.
    pub const ERROR: i32 = 1;
    /// Warnings.
    pub const WARN: i32 = 2;
    /// Information.
    pub const INFO: i32 = 3;
    /// Debugging detail.
    pub const DEBUG: i32 = 4;
    /// Tracing detail.
    pub const TRACE: i32 = 5;
}

/// Receive timeouts, in milliseconds, for [`imports::RECEIVE`].
pub mod timeout {
    /// Wait for ever.
    pub const INFINITY: i64 = -1;
    /// Do not wait: take a matching message if one is queued now.
    pub const POLL: i64 = 0;
}

/// Longest registered name, in bytes. Also the longest process group scope
/// and group name.
pub const NAME_BYTES_MAX: usize = 255;

/// Most tags one selective receive may list.
pub const RECEIVE_TAGS_MAX: usize = 64;

/// Most messages `msg_next` hands one `molt_handle` call after the one it
/// was called for; the host's loop then takes over for a moment.
pub const NEXT_MAX: u32 = 64;

/// Size in bytes of an encoded [`Pid`].
pub const PID_BYTES: usize = 24;
/// Size in bytes of an encoded [`Ref`].
pub const REF_BYTES: usize = 24;
/// Size in bytes of the header [`imports::RECEIVE`] writes.
pub const HEADER_BYTES: usize = 32;

/// A process identifier: which node, which incarnation of that node, and a
/// serial number local to that incarnation. A pid from an earlier
/// incarnation of a node never names a process of a later one.
///
/// Encoded as three little-endian `u64`s: `node`, `incarnation`, `serial`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Pid {
    /// Identity of the node (a hash of its name).
    pub node: u64,
    /// Incarnation of the node: a fresh random value each time it starts.
    pub incarnation: u64,
    /// Serial number of the process on that incarnation; never reused.
    pub serial: u64,
}

/// A unique reference (monitor, timer, call correlation). Same layout as a
/// [`Pid`]; the all-zero reference means "none".
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Ref {
    /// Identity of the node that made it.
    pub node: u64,
    /// Incarnation of that node.
    pub incarnation: u64,
    /// Serial number, unique per incarnation.
    pub serial: u64,
}

macro_rules! triple_codec {
    ($ty:ident) => {
        impl $ty {
            /// Encode as 24 little-endian bytes.
            pub fn to_bytes(self) -> [u8; 24] {
                let mut out = [0u8; 24];
                out[0..8].copy_from_slice(&self.node.to_le_bytes());
                out[8..16].copy_from_slice(&self.incarnation.to_le_bytes());
                out[16..24].copy_from_slice(&self.serial.to_le_bytes());
                out
            }

            /// Decode from 24 little-endian bytes.
            pub fn from_bytes(bytes: &[u8; 24]) -> Self {
                let word = |i: usize| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
                    u64::from_le_bytes(w)
                };
                $ty {
                    node: word(0),
                    incarnation: word(1),
                    serial: word(2),
                }
            }

            /// Decode from the start of `bytes`, if it is long enough.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                let head: &[u8; 24] = bytes.get(..24)?.try_into().ok()?;
                Some(Self::from_bytes(head))
            }
        }
    };
}
triple_codec!(Pid);
triple_codec!(Ref);

impl Ref {
    /// The "no reference" value.
    pub const NONE: Ref = Ref {
        node: 0,
        incarnation: 0,
        serial: 0,
    };

    /// Whether this is [`Ref::NONE`].
    pub fn is_none(self) -> bool {
        self == Ref::NONE
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Pid {
    /// Erlang-like: `<node.incarnation.serial>`, node and incarnation
    /// shortened to 4 hex digits for readability.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<{:04x}.{:04x}.{}>",
            self.node & 0xffff,
            self.incarnation & 0xffff,
            self.serial
        )
    }
}

impl fmt::Debug for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#Ref<{:04x}.{:04x}.{}>",
            self.node & 0xffff,
            self.incarnation & 0xffff,
            self.serial
        )
    }
}

/// The header [`imports::RECEIVE`] writes for the message it took:
/// `tag: u32`, `len: u32`, `reference: [u8; 24]`, little-endian, 32 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The message's tag.
    pub tag: u32,
    /// Length of the payload in bytes; read it with [`imports::MSG_READ`].
    pub len: u32,
    /// The envelope reference ([`Ref::NONE`] when the sender gave none).
    pub reference: Ref,
}

impl Header {
    /// Encode as [`HEADER_BYTES`] bytes.
    pub fn to_bytes(self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out[0..4].copy_from_slice(&self.tag.to_le_bytes());
        out[4..8].copy_from_slice(&self.len.to_le_bytes());
        out[8..32].copy_from_slice(&self.reference.to_bytes());
        out
    }

    /// Decode from [`HEADER_BYTES`] bytes.
    pub fn from_bytes(bytes: &[u8; HEADER_BYTES]) -> Self {
        let mut r = [0u8; 24];
        r.copy_from_slice(&bytes[8..32]);
        Header {
            tag: u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            len: u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            reference: Ref::from_bytes(&r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn pid_round_trips_and_prints() {
        let pid = Pid {
            node: 0xabcd_1234,
            incarnation: 7,
            serial: 42,
        };
        assert_eq!(Pid::from_bytes(&pid.to_bytes()), pid);
        assert_eq!(pid.to_string(), "<1234.0007.42>");
        assert_eq!(Pid::from_slice(&pid.to_bytes()[..23]), None);
    }

    #[test]
    fn header_round_trips() {
        let h = Header {
            tag: tag::DOWN,
            len: 99,
            reference: Ref {
                node: 1,
                incarnation: 2,
                serial: 3,
            },
        };
        assert_eq!(Header::from_bytes(&h.to_bytes()), h);
    }

    #[test]
    fn reserved_tags_are_not_user_tags() {
        assert!(tag::is_user(tag::DATA));
        assert!(!tag::is_user(tag::EXIT));
        assert!(!tag::is_user(tag::DOWN));
        assert!(!tag::is_user(tag::RESERVED_MIN));
    }
}
