//! Behaviours: gen_server-like processes the host drives one message at a
//! time, with no native stack held between messages. Export one with
//! [`behaviour!`](crate::behaviour!).

use std::cell::{RefCell, UnsafeCell};
use std::thread::LocalKey;

use molt_abi::tag;
use serde::{Serialize, de::DeserializeOwned};

use crate::codec;
use crate::process::{Pid, Ref, exit_self};
use crate::receive::{Envelope, System, current_header, read_current_into, with_current};

/// A process defined by its state and a handler per message.
///
/// The state must be serializable: on a code upgrade the host saves it from
/// the old version and hands it to [`Behaviour::code_change`] in the new one.
pub trait Behaviour: Serialize + DeserializeOwned + Sized + 'static {
    /// The init arguments the spawner passes.
    type Args: DeserializeOwned;
    /// The typed (tag `DATA`) messages this behaviour handles.
    type Msg: DeserializeOwned;

    /// Build the initial state. `Err(reason)` ends the process with that reason.
    fn init(args: Self::Args) -> Result<Self, String>;

    /// Handle one message.
    fn handle(&mut self, msg: Message<Self::Msg>) -> Next;

    /// Called before the process stops because a handler returned
    /// [`Next::Stop`].
    fn terminate(&mut self, _reason: &str) {}

    /// Build this version's state from the state an older version saved.
    /// The default decodes it as this same type.
    fn code_change(from_version: &str, state: &[u8]) -> Result<Self, String> {
        let _ = from_version;
        codec::decode(state).map_err(|e| e.to_string())
    }
}

/// What a behaviour does after a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait for the next message.
    Continue,
    /// Call [`Behaviour::terminate`], then exit with this reason.
    Stop(String),
}

impl Next {
    /// Stop with reason `normal`.
    pub fn stop_normal() -> Next {
        Next::Stop(molt_abi::reason::NORMAL.to_owned())
    }
}

/// One message as a behaviour sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<T> {
    /// A typed message (tag `DATA`) that decoded as the behaviour's `Msg`.
    Data(T),
    /// A trapped exit signal.
    Exit {
        /// Who sent it.
        from: Pid,
        /// Why.
        reason: String,
    },
    /// A monitored process exited.
    Down {
        /// The monitor reference.
        reference: Ref,
        /// The process that exited.
        pid: Pid,
        /// Its exit reason.
        reason: String,
    },
    /// The connection to a monitored node was lost (see
    /// [`crate::monitor_node`]).
    NodeDown {
        /// The node's name.
        node: String,
    },
    /// News from the coordination group (see [`crate::election`]).
    Coord(molt_abi::sysmsg::Coord),
    /// A table the process subscribed to changed, or the subscription
    /// ended (see [`crate::table::Table::subscribe`]).
    Table(molt_abi::table::Event),
    /// Anything else: other tags, or `DATA` that did not decode as `Msg`
    /// (logged at warn level).
    Other(Envelope),
}

/// Where the [`behaviour!`](crate::behaviour!) macro keeps a process's state.
#[doc(hidden)]
pub type StateCell<B> = LocalKey<RefCell<Option<B>>>;

thread_local! {
    /// The receive buffer for payloads longer than the inbox, reused so a
    /// handler call does not allocate for them.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The last encoded state, kept alive until the next `molt_state_save`.
    static SAVED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Bytes of a behaviour's inbox: a message payload up to this long comes
/// with the `molt_handle` call (or `msg_next`), with no `msg_read`.
const INBOX_BYTES: usize = 256;

/// The inbox (`msg_inbox`). The host writes it only at the start of a
/// `molt_handle` call and inside `msg_next`; the SDK reads it between,
/// and never holds a reference to it across a host call. Between messages
/// nothing reads it, and `molt_state_save` encodes a small state there.
struct Inbox(UnsafeCell<[u8; INBOX_BYTES]>);

// SAFETY: a wasm32 guest runs on one thread; the host writes the inbox
// only while the guest is in a host call or not running (see `Inbox`).
unsafe impl Sync for Inbox {}

static INBOX: Inbox = Inbox(UnsafeCell::new([0; INBOX_BYTES]));

/// Name the inbox to the host: once in each instance, before its first
/// message (every instance runs `molt_init`, `molt_code_change` or
/// `molt_state_restore` first).
fn name_inbox() {
    // SAFETY: `INBOX` is a static, so it lives as long as the instance,
    // and it is read only as `Inbox` says.
    let status = unsafe { crate::sys::msg_inbox(INBOX.0.get().cast(), INBOX_BYTES) };
    assert_eq!(status, molt_abi::status::OK, "msg_inbox failed");
}

/// Call `f` on the current message's payload of `len` bytes: in the inbox
/// when it fits there (the host put it there), else read into a reused
/// buffer.
fn with_payload<R>(len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
    if len <= INBOX_BYTES {
        // SAFETY: the host wrote this payload to the inbox before this
        // `molt_handle` call or in the `msg_next` that took it, and writes
        // it again only in the next `msg_next`, after `f` has returned
        // (`f` only decodes, it makes no host call).
        let inbox = unsafe { &*INBOX.0.get() };
        return f(&inbox[..len]);
    }
    SCRATCH.with_borrow_mut(|buf| {
        buf.clear();
        buf.resize(len, 0);
        read_current_into(buf);
        f(buf)
    })
}

/// `molt_init(args_len)`.
#[doc(hidden)]
pub fn init<B: Behaviour>(cell: &'static StateCell<B>, args_len: i32) {
    crate::entry::install_panic_hook();
    name_inbox();
    let args = match with_current::<128, _>(args_len, codec::decode::<B::Args>) {
        Ok(args) => args,
        Err(e) => exit_self(&format!("badarg: {e}")),
    };
    match B::init(args) {
        Ok(state) => cell.with_borrow_mut(|slot| *slot = Some(state)),
        Err(reason) => exit_self(&reason),
    }
}

/// `molt_handle(tag, len)`.
#[doc(hidden)]
pub fn handle<B: Behaviour>(cell: &'static StateCell<B>, tag: i32, len: i32) {
    let (mut tag, mut len) = (tag as u32, len as u32 as usize);
    // Messages already queued are handled in this same call (`msg_next`),
    // until the host wants the process back between two of them.
    loop {
        let message = current_message::<B::Msg>(tag, len);
        let next = cell.with_borrow_mut(|slot| state(slot).handle(message));
        if let Next::Stop(reason) = next {
            cell.with_borrow_mut(|slot| state(slot).terminate(&reason));
            exit_self(&reason);
        }
        let mut tag_out = [0u8; 4];
        let got = crate::sys::msg_next(&mut tag_out);
        if got < 0 {
            return;
        }
        (tag, len) = (u32::from_le_bytes(tag_out), got as usize);
    }
}

fn state<B>(slot: &mut Option<B>) -> &mut B {
    slot.as_mut()
        .expect("behaviour has no state (molt_init did not run)")
}

fn current_message<T: DeserializeOwned>(tag: u32, len: usize) -> Message<T> {
    if tag == tag::DATA {
        let decoded = with_payload(len, |payload| {
            codec::decode::<T>(payload).map_err(|e| (e, payload.to_vec()))
        });
        return match decoded {
            Ok(msg) => Message::Data(msg),
            Err((e, payload)) => {
                crate::warn!(
                    "a DATA message does not decode as this behaviour's Msg type; handled as Other: {e}"
                );
                Message::Other(Envelope {
                    tag,
                    reference: None,
                    payload,
                })
            }
        };
    }
    let header = current_header();
    let envelope = Envelope {
        tag,
        reference: (!header.reference.is_none()).then_some(header.reference),
        payload: with_payload(len, <[u8]>::to_vec),
    };
    match envelope.system() {
        Some(System::Exit { from, reason }) => Message::Exit { from, reason },
        Some(System::Down {
            reference,
            pid,
            reason,
        }) => Message::Down {
            reference,
            pid,
            reason,
        },
        Some(System::NodeDown { node }) => Message::NodeDown { node },
        Some(System::Coord(notice)) => Message::Coord(notice),
        Some(System::Table(event)) => Message::Table(event),
        None => Message::Other(envelope),
    }
}

/// A state this small is saved without touching the heap, so that moving
/// an idle process to a new version does not grow either instance's memory:
/// in the inbox, which nothing reads between messages (a buffer of its own
/// would cost every process its bytes of statics, and a page each for
/// guests whose statics it pushed over a page boundary).
const SMALL_STATE_BYTES: usize = INBOX_BYTES;

/// `molt_state_save() -> (len << 32) | ptr`.
#[doc(hidden)]
pub fn state_save<B: Behaviour>(cell: &'static StateCell<B>) -> i64 {
    let small = cell.with_borrow(|slot| {
        let state = slot.as_ref()?;
        // SAFETY: `molt_state_save` runs between messages, when no
        // reference to the inbox is held and the host does not write it
        // (see `Inbox`); this one ends here. The host takes the state
        // before it calls into the guest again, as the export's contract
        // says, so the next message cannot overwrite it first.
        let buf = unsafe { &mut *INBOX.0.get() };
        let used = codec::encode_into(state, &mut buf[..])?;
        Some(pack(buf.as_ptr() as usize, used))
    });
    if let Some(packed) = small {
        return packed;
    }
    let bytes = cell.with_borrow(|slot| slot.as_ref().map(codec::encode).unwrap_or_default());
    SAVED.with_borrow_mut(|saved| {
        *saved = bytes;
        pack(saved.as_ptr() as usize, saved.len())
    })
}

/// `(len << 32) | ptr`, both as 32-bit values (wasm32 addresses and lengths).
fn pack(ptr: usize, len: usize) -> i64 {
    (((len as u64) << 32) | (ptr as u32 as u64)) as i64
}

/// `molt_code_change(input_len) -> 0 | (len << 32) | ptr` of the reason.
#[doc(hidden)]
pub fn code_change<B: Behaviour>(cell: &'static StateCell<B>, input_len: i32) -> i64 {
    crate::entry::install_panic_hook();
    name_inbox();
    let result = with_current::<{ SMALL_STATE_BYTES + 64 }, _>(input_len, |input| {
        split_code_change_input(input).and_then(|(from, state)| B::code_change(from, state))
    });
    match result {
        Ok(state) => {
            cell.with_borrow_mut(|slot| *slot = Some(state));
            0
        }
        Err(reason) => {
            let reason = if reason.is_empty() {
                "code_change refused".to_owned()
            } else {
                reason
            };
            SAVED.with_borrow_mut(|saved| {
                *saved = reason.into_bytes();
                pack(saved.as_ptr() as usize, saved.len())
            })
        }
    }
}

/// `molt_state_restore(state_len) -> 0 | (len << 32) | ptr` of the reason:
/// the state this same version saved when it hibernated, decoded as it
/// was (no [`Behaviour::code_change`]: the version did not change).
#[doc(hidden)]
pub fn state_restore<B: Behaviour>(cell: &'static StateCell<B>, state_len: i32) -> i64 {
    crate::entry::install_panic_hook();
    name_inbox();
    match with_current::<SMALL_STATE_BYTES, _>(state_len, codec::decode::<B>) {
        Ok(state) => {
            cell.with_borrow_mut(|slot| *slot = Some(state));
            0
        }
        Err(e) => SAVED.with_borrow_mut(|saved| {
            *saved = format!("the saved state does not decode: {e}").into_bytes();
            pack(saved.as_ptr() as usize, saved.len())
        }),
    }
}

/// Split `from_version_len: u32 LE`, the version, the state.
fn split_code_change_input(input: &[u8]) -> Result<(&str, &[u8]), String> {
    let head: [u8; 4] = input
        .get(..4)
        .and_then(|h| h.try_into().ok())
        .ok_or("code_change input shorter than 4 bytes")?;
    let version_len = u32::from_le_bytes(head) as usize;
    let rest = &input[4..];
    if version_len > rest.len() {
        return Err(format!(
            "code_change version length {version_len} exceeds input"
        ));
    }
    let (version, state) = rest.split_at(version_len);
    let version =
        std::str::from_utf8(version).map_err(|_| "code_change version is not UTF-8".to_owned())?;
    Ok((version, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_pointer_and_length() {
        assert_eq!(pack(0x1000, 0x20), 0x20_0000_1000);
        assert_eq!(pack(0xFFFF_FFF0, 0xFFFF_FFFF) as u64, 0xFFFF_FFFF_FFFF_FFF0);
    }

    #[test]
    fn splits_code_change_input() {
        let mut input = 5u32.to_le_bytes().to_vec();
        input.extend_from_slice(b"1.0.0");
        input.extend_from_slice(&[1, 2, 3]);
        assert_eq!(
            split_code_change_input(&input),
            Ok(("1.0.0", &[1u8, 2, 3][..]))
        );
        assert!(split_code_change_input(&[1, 0]).is_err());
        assert!(split_code_change_input(&[9, 0, 0, 0, b'x']).is_err());
        assert_eq!(split_code_change_input(&[0, 0, 0, 0]), Ok(("", &[][..])));
    }

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Count(u64);

    impl Behaviour for Count {
        type Args = u64;
        type Msg = u64;
        fn init(args: u64) -> Result<Self, String> {
            Ok(Count(args))
        }
        fn handle(&mut self, msg: Message<u64>) -> Next {
            if let Message::Data(n) = msg {
                self.0 += n;
            }
            Next::Continue
        }
    }

    #[test]
    fn default_code_change_decodes_the_same_type() {
        assert_eq!(
            Count::code_change("0.1.0", &codec::encode(&Count(7))),
            Ok(Count(7))
        );
        assert!(Count::code_change("0.1.0", &[]).is_err());
    }
}
