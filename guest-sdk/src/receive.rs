//! Receiving: the mailbox lives in the host; these functions take one
//! message out of it, optionally selected by tag and reference.
//!
//! Messages a selective receive skips stay in the mailbox, in order.

use std::time::Duration;

use molt_abi::{HEADER_BYTES, Header, sysmsg, tag, timeout};
use serde::de::DeserializeOwned;

use crate::codec::{self, DecodeError};
use crate::error::Error;
use crate::process::{Pid, Ref};
use crate::sys;
use crate::time::to_ms;

/// A received message: its tag, envelope reference and payload bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The message tag (`molt_abi::tag::DATA` for typed messages).
    pub tag: u32,
    /// The envelope reference, if the sender gave one (monitor and timer
    /// messages carry theirs).
    pub reference: Option<Ref>,
    /// The payload.
    pub payload: Vec<u8>,
}

/// A system message the host delivered (an [`Envelope`] with a reserved tag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum System {
    /// A trapped exit signal.
    Exit {
        /// The process that sent it (a linked process that exited, or the
        /// caller of `exit`).
        from: Pid,
        /// Its exit reason.
        reason: String,
    },
    /// A monitored process exited.
    Down {
        /// The monitor reference.
        reference: Ref,
        /// The monitored process.
        pid: Pid,
        /// Its exit reason (`noproc` if it was not alive when monitored).
        reason: String,
    },
    /// The connection to a node this process monitors (with
    /// [`crate::monitor_node`]) was lost, or was not there.
    NodeDown {
        /// The node's name.
        node: String,
    },
    /// News from the cluster's coordination group about a lock or an
    /// election the process takes part in (see [`crate::election`] and
    /// [`crate::global`]).
    Coord(molt_abi::sysmsg::Coord),
    /// A table the process subscribed to changed, or the subscription
    /// ended (see [`crate::table::Table::subscribe`]).
    Table(molt_abi::table::Event),
}

impl Envelope {
    /// Decode the payload as a `T` (see [`codec::decode`]).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        codec::decode(&self.payload)
    }

    /// The system message this is, if it is a well-formed EXIT, DOWN or
    /// NODEDOWN.
    pub fn system(&self) -> Option<System> {
        match self.tag {
            tag::EXIT => {
                let exit = sysmsg::Exit::decode(&self.payload).ok()?;
                Some(System::Exit {
                    from: exit.from,
                    reason: exit.reason.to_owned(),
                })
            }
            tag::DOWN => {
                let down = sysmsg::Down::decode(&self.payload).ok()?;
                Some(System::Down {
                    reference: self.reference.unwrap_or(Ref::NONE),
                    pid: down.pid,
                    reason: down.reason.to_owned(),
                })
            }
            tag::NODEDOWN => Some(System::NodeDown {
                node: std::str::from_utf8(&self.payload).ok()?.to_owned(),
            }),
            tag::COORD => codec::decode(&self.payload).ok().map(System::Coord),
            tag::TABLE => codec::decode(&self.payload).ok().map(System::Table),
            _ => None,
        }
    }

    /// Whether this is a typed message (tag `DATA`).
    pub fn is_data(&self) -> bool {
        self.tag == tag::DATA
    }
}

/// Which messages a selective receive takes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    tags: Vec<u32>,
    reference: Option<Ref>,
}

impl Filter {
    /// Any message.
    pub fn any() -> Filter {
        Filter::default()
    }

    /// Typed messages only (tag `DATA`).
    pub fn data() -> Filter {
        Filter::any().tags(&[tag::DATA])
    }

    /// Only messages whose tag is one of `tags` (any tag if empty).
    pub fn tags(mut self, tags: &[u32]) -> Filter {
        self.tags = tags.to_vec();
        self
    }

    /// Only messages whose envelope reference is `reference`.
    pub fn reference(mut self, reference: Ref) -> Filter {
        self.reference = Some(reference);
        self
    }
}

/// Take the next message, whatever it is, waiting for ever.
pub fn receive() -> Envelope {
    receive_matching(&Filter::any(), None).expect("a receive without timeout returned nothing")
}

/// Take the next message, waiting up to `timeout`; `None` if none came.
pub fn receive_timeout(timeout: Duration) -> Option<Envelope> {
    receive_matching(&Filter::any(), Some(timeout))
}

/// Take the first message that `filter` matches, waiting up to `timeout`
/// (for ever if `None`). Returns `None` only when the timeout passed.
/// `Some(Duration::ZERO)` polls.
pub fn receive_matching(filter: &Filter, timeout: Option<Duration>) -> Option<Envelope> {
    let timeout_ms = timeout.map_or(timeout::INFINITY, to_ms);
    let reference = filter.reference.map(Ref::to_bytes);
    let mut header = [0u8; HEADER_BYTES];
    match Error::from_code(sys::receive(
        &filter.tags,
        reference.as_ref(),
        timeout_ms,
        &mut header,
    )) {
        None => {}
        Some(Error::Timeout) => return None,
        Some(other) => panic!("receive failed: {other}"),
    }
    let header = Header::from_bytes(&header);
    Some(Envelope {
        tag: header.tag,
        reference: (!header.reference.is_none()).then_some(header.reference),
        payload: read_current(header.len as usize),
    })
}

/// Take the next typed (tag `DATA`) message and decode it, waiting for ever.
/// Other messages stay in the mailbox.
pub fn recv<T: DeserializeOwned>() -> Result<T, DecodeError> {
    let envelope = receive_matching(&Filter::data(), None)
        .expect("a receive without timeout returned nothing");
    envelope.decode()
}

/// [`recv`] with a timeout: `None` if no typed message came in time.
pub fn recv_timeout<T: DeserializeOwned>(timeout: Duration) -> Option<Result<T, DecodeError>> {
    receive_matching(&Filter::data(), Some(timeout)).map(|e| e.decode())
}

/// The payload of the current message, which is `len` bytes long.
pub(crate) fn read_current(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    read_current_into(&mut buf);
    buf
}

/// Call `f` on the current message of `len` bytes, read on the stack when
/// it fits `N` bytes (a process whose state needs no heap then never grows
/// its memory, which keeps spawning cheap and idle processes small), on
/// the heap otherwise.
pub(crate) fn with_current<const N: usize, R>(len: i32, f: impl FnOnce(&[u8]) -> R) -> R {
    let len = len as u32 as usize;
    if len <= N {
        let mut small = [0u8; N];
        read_current_into(&mut small[..len]);
        f(&small[..len])
    } else {
        f(&read_current(len))
    }
}

/// Copy the current message, exactly `buf.len()` bytes, into `buf`.
pub(crate) fn read_current_into(buf: &mut [u8]) {
    if buf.is_empty() {
        return;
    }
    let got = sys::msg_read(buf);
    if got < 0 || got as usize != buf.len() {
        panic!("msg_read returned {got}, expected {}", buf.len());
    }
}

/// The header of the current message.
pub(crate) fn current_header() -> Header {
    let mut header = [0u8; HEADER_BYTES];
    let status = sys::msg_header(&mut header);
    if let Some(err) = Error::from_code(status) {
        panic!("msg_header failed: {err}");
    }
    Header::from_bytes(&header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid() -> Pid {
        Pid {
            node: 1,
            incarnation: 2,
            serial: 3,
        }
    }

    #[test]
    fn system_messages_decode() {
        let r = Ref {
            node: 9,
            incarnation: 9,
            serial: 9,
        };
        let exit = Envelope {
            tag: tag::EXIT,
            reference: None,
            payload: sysmsg::Exit {
                from: pid(),
                reason: "boom",
            }
            .encode(),
        };
        assert_eq!(
            exit.system(),
            Some(System::Exit {
                from: pid(),
                reason: "boom".into()
            })
        );
        let down = Envelope {
            tag: tag::DOWN,
            reference: Some(r),
            payload: sysmsg::Down {
                pid: pid(),
                reason: "normal",
            }
            .encode(),
        };
        assert_eq!(
            down.system(),
            Some(System::Down {
                reference: r,
                pid: pid(),
                reason: "normal".into()
            })
        );
        let data = Envelope {
            tag: tag::DATA,
            reference: None,
            payload: codec::encode(&5u8),
        };
        assert_eq!(data.system(), None);
        let nodedown = Envelope {
            tag: tag::NODEDOWN,
            reference: None,
            payload: b"b@127.0.0.1".to_vec(),
        };
        assert_eq!(
            nodedown.system(),
            Some(System::NodeDown {
                node: "b@127.0.0.1".into()
            })
        );
        let garbled = Envelope {
            tag: tag::NODEDOWN,
            reference: None,
            payload: vec![0xff],
        };
        assert_eq!(garbled.system(), None);
        assert!(data.is_data());
        assert_eq!(data.decode::<u8>(), Ok(5));
        let short = Envelope {
            tag: tag::DOWN,
            reference: Some(r),
            payload: vec![1, 2],
        };
        assert_eq!(short.system(), None);
    }

    #[test]
    fn filters_build() {
        let r = Ref {
            node: 1,
            incarnation: 1,
            serial: 1,
        };
        let f = Filter::any().tags(&[1, 2]).reference(r);
        assert_eq!(f.tags, vec![1, 2]);
        assert_eq!(f.reference, Some(r));
        assert_eq!(Filter::data().tags, vec![tag::DATA]);
        assert!(Filter::any().tags.is_empty());
    }
}
