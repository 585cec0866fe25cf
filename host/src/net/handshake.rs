//! The handshake two nodes run after TLS is up: mutual proof of the cluster
//! cookie, bound to the TLS session and to both node names. I/O-free: bytes
//! and time in, bytes and a [`Status`] out.
//!
//! It runs on a dedicated QUIC stream. Messages use the frame framing
//! (little-endian `u32` length, then the codec's bytes). The exchange:
//!
//! ```text
//! initiator                                   acceptor
//!   Hello  ---------------------------------->  checks protocol, ABI, admit
//!          <----------------------------------  Hello, Proof
//!   checks protocol, ABI, admit; verifies
//!   Proof, Welcome  ------------------------->  verifies, takes Welcome
//!          <----------------------------------  Welcome
//!   Done                                        Done
//! ```
//!
//! The acceptor's `Welcome` is its last message and is emitted only with
//! its `Done`, once it holds the initiator's `Welcome` too: the node
//! puts the peer in its table before that message leaves, so when the
//! initiator is done (and its `join` returns) the acceptor already knows it.
//!
//! The acceptor says nothing until the initiator's `Hello` is admitted, so
//! a peer refused at that point learns nothing but the `Refuse`. Any side
//! that refuses discards its unsent output and sends only `Refuse`; after
//! that it never writes again.
//!
//! A proof is `HMAC-SHA256(key = cookie, data)` where `data` is
//! `"molt-dist-1" || tls_exporter (32) || the verifier's challenge (32) ||
//! len || prover's name || len || verifier's name` (each `len` a
//! little-endian `u32`, so no two pairs of names concatenate alike).
//! Binding the exporter means a relay cannot replay a proof on another TLS
//! session; binding the challenge means it cannot be replayed on a later
//! handshake; binding the names, in order, means a proof for one pair of
//! nodes (or one direction) is useless for another.

use std::fmt;
use std::time::Instant;

use ring::hmac;
use serde::{Deserialize, Serialize};

use super::frame::{FrameDecoder, FrameError, PROTOCOL_VERSION, encode_value_into};

/// Largest handshake message, in bytes: a hello carries two short strings.
pub const HANDSHAKE_BYTES_MAX: u32 = 16 * 1024;

/// Domain separation for the proof, so it means nothing to another protocol
/// keyed by the same cookie.
const PROOF_CONTEXT: &[u8] = b"molt-dist-1";

/// The reason a node sends when a proof does not verify.
const BAD_COOKIE: &str = "bad cookie";

/// Longest node name, in bytes.
pub const NODE_NAME_BYTES_MAX: usize = 255;

/// Longest refusal reason kept from a peer, in characters: it goes to our
/// log, so it is cut short and its control characters replaced.
const PEER_REASON_CHARS_MAX: usize = 256;

/// One handshake message on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandshakeMsg {
    /// Who the sender is, and the challenge the peer must answer.
    Hello {
        /// The sender's frame protocol version ([`PROTOCOL_VERSION`]).
        protocol: u32,
        /// The sender's guest ABI version (`molt_abi::ABI_VERSION`).
        abi: u32,
        /// The sender's node name.
        name: String,
        /// The sender's incarnation.
        incarnation: u64,
        /// The sender is hidden (not part of the full mesh).
        hidden: bool,
        /// Where the sender accepts connections, if it does.
        listen: Option<String>,
        /// Random bytes the peer's proof must cover.
        challenge: [u8; 32],
    },
    /// The sender's proof that it holds the cookie.
    Proof {
        /// HMAC-SHA256, see the module docs.
        mac: [u8; 32],
    },
    /// The sender verified the peer's proof.
    Welcome,
    /// The sender refuses the connection; nothing else follows.
    Refuse {
        /// Why, for the peer's log.
        reason: String,
    },
}

/// Which end of the connection this node is; the initiator speaks first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// This node opened the connection.
    Initiator,
    /// This node accepted the connection.
    Acceptor,
}

/// What this node tells its peer about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalInfo {
    /// Node name (`name@host`).
    pub name: String,
    /// This run's incarnation.
    pub incarnation: u64,
    /// Hidden nodes are not announced to the rest of the mesh.
    pub hidden: bool,
    /// Listen address, for peers to pass on (full mesh).
    pub listen: Option<String>,
}

/// What the peer said about itself. Before the handshake is `Done` this is
/// only a claim; after, the peer has proved it holds the cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Node name.
    pub name: String,
    /// The peer's incarnation: pids of other incarnations are stale.
    pub incarnation: u64,
    /// The peer is hidden.
    pub hidden: bool,
    /// The peer's listen address, if any.
    pub listen: Option<String>,
}

/// Why a handshake ended without a connection. Log it on the side where it
/// happened; the peer gets a `Refuse` with its text (except for
/// `PeerRefused`, which answers one).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The peer speaks another frame protocol version.
    #[error("protocol version mismatch: ours {ours}, theirs {theirs}")]
    ProtocolMismatch {
        /// Our [`PROTOCOL_VERSION`].
        ours: u32,
        /// The peer's.
        theirs: u32,
    },
    /// The peer runs another guest ABI version.
    #[error("ABI version mismatch: ours {ours}, theirs {theirs}")]
    AbiMismatch {
        /// Our `molt_abi::ABI_VERSION`.
        ours: u32,
        /// The peer's.
        theirs: u32,
    },
    /// The caller's `admit` hook refused the peer.
    #[error("not admitted: {0}")]
    NotAdmitted(NotAdmitted),
    /// The peer's proof does not verify: another cookie, or a proof made
    /// for another TLS session or pair of nodes.
    #[error("bad cookie")]
    BadCookie,
    /// The peer refused us; the text is its reason.
    #[error("refused by the peer: {0}")]
    PeerRefused(String),
    /// The deadline passed first.
    #[error("handshake timed out")]
    Timeout,
    /// The peer sent bytes that are not the handshake.
    #[error("malformed handshake: {0}")]
    Malformed(String),
}

/// Why a node's `admit` hook turned a peer away after its first message.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum NotAdmitted {
    /// The peer claims this node's own name.
    #[error("the peer has this node's own name {0}")]
    OwnName(String),
    /// An allowlist is set and does not name the peer.
    #[error("{0} is not in the allowlist")]
    NotAllowed(String),
    /// A node of that name is connected already.
    #[error("a node named {name} is already connected (incarnation {incarnation:x})")]
    AlreadyConnected {
        /// The name.
        name: String,
        /// The incarnation connected.
        incarnation: u64,
    },
    /// `connections_max` nodes are connected.
    #[error("connections_max ({0}) reached")]
    ConnectionsMax(usize),
    /// In CA mode, the peer's certificate does not name the node it claims
    /// to be (the text says what it names).
    #[error("{0}")]
    Certificate(String),
}

/// Where the handshake stands after a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Waiting for the peer.
    InProgress,
    /// Both sides proved the cookie and welcomed each other: the
    /// connection may carry frames.
    Done(PeerInfo),
    /// Ended without a connection. Send what [`Handshake::take_output`]
    /// holds (the `Refuse`), then close.
    Refused(Refusal),
}

/// How far the peer has come, in the order its messages must arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Hello,
    Proof,
    Welcome,
}

/// One side of the handshake.
///
/// Drive it like this: after [`new`](Self::new) and after every call, write
/// [`take_output`](Self::take_output) to the stream; feed what the stream
/// yields to [`receive`](Self::receive); call
/// [`poll_timeout`](Self::poll_timeout) when the deadline passes. Stop at
/// the first `Done` or `Refused`: later calls return the same status.
pub struct Handshake {
    role: Role,
    local: LocalInfo,
    key: hmac::Key,
    tls_exporter: [u8; 32],
    challenge: [u8; 32],
    deadline: Instant,
    decoder: FrameDecoder,
    output: Vec<u8>,
    expect: Expect,
    /// The peer's Hello, once admitted.
    peer: Option<PeerInfo>,
    /// Set once the handshake ended; it never changes after.
    end: Option<Status>,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the key, nor anything derived from it.
        f.debug_struct("Handshake")
            .field("role", &self.role)
            .field("local", &self.local.name)
            .field("expect", &self.expect)
            .field("peer", &self.peer)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

/// 32 bytes from the operating system's random generator, for
/// [`Handshake::new`].
///
/// # Panics
/// If the operating system cannot provide random bytes (nothing secure can
/// be done without them).
pub fn random_challenge() -> [u8; 32] {
    let mut challenge = [0u8; 32];
    getrandom::fill(&mut challenge).expect("the operating system's random generator failed");
    challenge
}

impl Handshake {
    /// Start a handshake. `cookie` is the cluster secret; `tls_exporter` is
    /// the TLS exporter value of this connection, the same on both sides;
    /// `challenge` should come from [`random_challenge`] (tests pass fixed
    /// bytes). The initiator's `Hello` is ready in
    /// [`take_output`](Self::take_output) at once.
    pub fn new(
        role: Role,
        local: LocalInfo,
        cookie: &[u8],
        tls_exporter: [u8; 32],
        challenge: [u8; 32],
        deadline: Instant,
    ) -> Self {
        let mut handshake = Handshake {
            role,
            local,
            key: hmac::Key::new(hmac::HMAC_SHA256, cookie),
            tls_exporter,
            challenge,
            deadline,
            decoder: FrameDecoder::new(HANDSHAKE_BYTES_MAX),
            output: Vec::new(),
            expect: Expect::Hello,
            peer: None,
            end: None,
        };
        if role == Role::Initiator {
            handshake.send_hello();
        }
        handshake
    }

    /// Bytes to write to the stream now; drain it after every call.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Feed bytes received from the peer. `admit` sees the peer's claimed
    /// identity once its `Hello` is in (before any proof) and decides
    /// whether it may join: `Err(reason)` refuses it with that reason.
    pub fn receive(
        &mut self,
        bytes: &[u8],
        admit: &mut dyn FnMut(&PeerInfo) -> Result<(), NotAdmitted>,
    ) -> Status {
        if let Some(end) = &self.end {
            return end.clone();
        }
        self.decoder.push(bytes);
        loop {
            let msg = match self.decoder.next_value::<HandshakeMsg>() {
                Ok(Some(msg)) => msg,
                Ok(None) => return Status::InProgress,
                Err(FrameError::TooLarge { len, max }) => {
                    return self.refuse(Refusal::Malformed(format!(
                        "message of {len} bytes, the limit is {max}"
                    )));
                }
                Err(FrameError::Malformed(text)) => return self.refuse(Refusal::Malformed(text)),
            };
            if let Some(end) = self.step(msg, admit) {
                return end;
            }
        }
    }

    /// Tell the handshake the time; past the deadline it ends with
    /// [`Refusal::Timeout`] (and a `Refuse` for the peer).
    pub fn poll_timeout(&mut self, now: Instant) -> Status {
        if let Some(end) = &self.end {
            return end.clone();
        }
        if now >= self.deadline {
            return self.refuse(Refusal::Timeout);
        }
        Status::InProgress
    }

    /// The deadline given at construction, for the caller's timer.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Handle one message; `Some` once the handshake ended.
    fn step(
        &mut self,
        msg: HandshakeMsg,
        admit: &mut dyn FnMut(&PeerInfo) -> Result<(), NotAdmitted>,
    ) -> Option<Status> {
        match (self.expect, msg) {
            (_, HandshakeMsg::Refuse { reason }) => {
                // Answering a refusal would be talking to a closed door.
                let reason = reason
                    .chars()
                    .take(PEER_REASON_CHARS_MAX)
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect();
                let end = Status::Refused(Refusal::PeerRefused(reason));
                self.output.clear();
                self.end = Some(end.clone());
                Some(end)
            }
            (
                Expect::Hello,
                HandshakeMsg::Hello {
                    protocol,
                    abi,
                    name,
                    incarnation,
                    hidden,
                    listen,
                    challenge,
                },
            ) => {
                let peer = PeerInfo {
                    name,
                    incarnation,
                    hidden,
                    listen,
                };
                if let Err(refusal) = self.check_hello(protocol, abi, &peer, &challenge, admit) {
                    return Some(self.refuse(refusal));
                }
                if self.role == Role::Acceptor {
                    self.send_hello();
                }
                let mac = self.proof(&challenge, &self.local.name, &peer.name);
                encode_value_into(&HandshakeMsg::Proof { mac }, &mut self.output);
                self.peer = Some(peer);
                self.expect = Expect::Proof;
                None
            }
            (Expect::Proof, HandshakeMsg::Proof { mac }) => {
                let peer = self
                    .peer
                    .as_ref()
                    .expect("a Proof follows an admitted Hello");
                let data = self.proof_data(&self.challenge, &peer.name, &self.local.name);
                if hmac::verify(&self.key, &data, &mac).is_err() {
                    return Some(self.refuse(Refusal::BadCookie));
                }
                // The initiator welcomes at once; the acceptor only once it
                // holds the initiator's Welcome (see the module docs).
                if self.role == Role::Initiator {
                    encode_value_into(&HandshakeMsg::Welcome, &mut self.output);
                }
                self.expect = Expect::Welcome;
                None
            }
            (Expect::Welcome, HandshakeMsg::Welcome) => {
                let peer = self
                    .peer
                    .clone()
                    .expect("a Welcome follows an admitted Hello");
                if self.role == Role::Acceptor {
                    encode_value_into(&HandshakeMsg::Welcome, &mut self.output);
                }
                let end = Status::Done(peer);
                self.end = Some(end.clone());
                Some(end)
            }
            (expect, msg) => Some(self.refuse(Refusal::Malformed(format!(
                "expected {expect:?}, got {}",
                msg_name(&msg)
            )))),
        }
    }

    fn check_hello(
        &self,
        protocol: u32,
        abi: u32,
        peer: &PeerInfo,
        challenge: &[u8; 32],
        admit: &mut dyn FnMut(&PeerInfo) -> Result<(), NotAdmitted>,
    ) -> Result<(), Refusal> {
        if protocol != PROTOCOL_VERSION {
            return Err(Refusal::ProtocolMismatch {
                ours: PROTOCOL_VERSION,
                theirs: protocol,
            });
        }
        if abi != molt_abi::ABI_VERSION {
            return Err(Refusal::AbiMismatch {
                ours: molt_abi::ABI_VERSION,
                theirs: abi,
            });
        }
        if peer.name.is_empty() {
            return Err(Refusal::Malformed("empty node name".into()));
        }
        // Names go to logs and to the admit hook's messages.
        if peer.name.len() > NODE_NAME_BYTES_MAX || peer.name.chars().any(char::is_control) {
            return Err(Refusal::Malformed(format!(
                "bad node name {:?}",
                peer.name.chars().take(64).collect::<String>()
            )));
        }
        // With equal names (or an echoed challenge) a peer could reflect
        // our own proof back at us.
        if peer.name == self.local.name {
            return Err(Refusal::NotAdmitted(NotAdmitted::OwnName(
                peer.name.clone(),
            )));
        }
        if *challenge == self.challenge {
            return Err(Refusal::Malformed("the peer echoed our challenge".into()));
        }
        admit(peer).map_err(Refusal::NotAdmitted)
    }

    fn send_hello(&mut self) {
        let hello = HandshakeMsg::Hello {
            protocol: PROTOCOL_VERSION,
            abi: molt_abi::ABI_VERSION,
            name: self.local.name.clone(),
            incarnation: self.local.incarnation,
            hidden: self.local.hidden,
            listen: self.local.listen.clone(),
            challenge: self.challenge,
        };
        encode_value_into(&hello, &mut self.output);
    }

    /// End with `refusal`: drop unsent output, send only the `Refuse`.
    fn refuse(&mut self, refusal: Refusal) -> Status {
        debug_assert!(self.end.is_none(), "a handshake ends once");
        debug_assert!(!matches!(refusal, Refusal::PeerRefused(_)));
        let reason = match &refusal {
            Refusal::BadCookie => BAD_COOKIE.to_string(),
            other => other.to_string(),
        };
        self.output.clear();
        encode_value_into(&HandshakeMsg::Refuse { reason }, &mut self.output);
        let end = Status::Refused(refusal);
        self.end = Some(end.clone());
        end
    }

    fn proof(&self, verifier_challenge: &[u8; 32], prover: &str, verifier: &str) -> [u8; 32] {
        let data = self.proof_data(verifier_challenge, prover, verifier);
        let tag = hmac::sign(&self.key, &data);
        let mut mac = [0u8; 32];
        mac.copy_from_slice(tag.as_ref());
        mac
    }

    fn proof_data(&self, verifier_challenge: &[u8; 32], prover: &str, verifier: &str) -> Vec<u8> {
        let mut data = Vec::with_capacity(PROOF_CONTEXT.len() + 72 + prover.len() + verifier.len());
        data.extend_from_slice(PROOF_CONTEXT);
        data.extend_from_slice(&self.tls_exporter);
        data.extend_from_slice(verifier_challenge);
        for name in [prover, verifier] {
            // Names are bounded by HANDSHAKE_BYTES_MAX, far below u32.
            data.extend_from_slice(&(name.len() as u32).to_le_bytes());
            data.extend_from_slice(name.as_bytes());
        }
        data
    }
}

fn msg_name(msg: &HandshakeMsg) -> &'static str {
    match msg {
        HandshakeMsg::Hello { .. } => "Hello",
        HandshakeMsg::Proof { .. } => "Proof",
        HandshakeMsg::Welcome => "Welcome",
        HandshakeMsg::Refuse { .. } => "Refuse",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const COOKIE: &[u8] = b"the cluster cookie";
    const EXPORTER: [u8; 32] = [7; 32];

    type Admit = Box<dyn FnMut(&PeerInfo) -> Result<(), NotAdmitted>>;

    fn admit_all() -> Admit {
        Box::new(|_| Ok(()))
    }

    fn info(name: &str) -> LocalInfo {
        LocalInfo {
            name: name.into(),
            incarnation: name.len() as u64 * 1000 + 1,
            hidden: name.starts_with("cli"),
            listen: Some(format!("127.0.0.1:{}", 4370 + name.len())),
        }
    }

    fn peer_info(name: &str) -> PeerInfo {
        let local = info(name);
        PeerInfo {
            name: local.name,
            incarnation: local.incarnation,
            hidden: local.hidden,
            listen: local.listen,
        }
    }

    /// One side of a test handshake.
    struct Setup {
        name: &'static str,
        cookie: &'static [u8],
        exporter: [u8; 32],
        challenge: [u8; 32],
        admit: Admit,
    }

    fn setup(name: &'static str, challenge: u8) -> Setup {
        Setup {
            name,
            cookie: COOKIE,
            exporter: EXPORTER,
            challenge: [challenge; 32],
            admit: admit_all(),
        }
    }

    fn start(role: Role, s: &Setup, deadline: Instant) -> Handshake {
        Handshake::new(
            role,
            info(s.name),
            s.cookie,
            s.exporter,
            s.challenge,
            deadline,
        )
    }

    fn messages(bytes: &[u8]) -> Vec<HandshakeMsg> {
        let mut decoder = FrameDecoder::new(HANDSHAKE_BYTES_MAX);
        decoder.push(bytes);
        let mut out = Vec::new();
        while let Some(msg) = decoder.next_value().unwrap() {
            out.push(msg);
        }
        assert_eq!(decoder.buffered(), 0, "output is whole messages");
        out
    }

    fn is_refuse(msg: &HandshakeMsg) -> bool {
        matches!(msg, HandshakeMsg::Refuse { .. })
    }

    /// Check what one call wrote, given the status it returned and whether
    /// the side had ended before: a side that refuses writes one `Refuse`
    /// and nothing else, ever; one answering a refusal writes nothing.
    fn check_output(side: &str, before: &Status, after: &Status, out: &[HandshakeMsg]) {
        match (before, after) {
            (Status::InProgress, Status::Refused(Refusal::PeerRefused(_))) => {
                assert!(out.is_empty(), "{side} answered a refusal: {out:?}")
            }
            (Status::InProgress, Status::Refused(_)) => {
                assert!(
                    out.len() == 1 && is_refuse(&out[0]),
                    "{side} refused but wrote {out:?}"
                )
            }
            (Status::InProgress, _) => {
                assert!(!out.iter().any(is_refuse), "{side} wrote {out:?}")
            }
            _ => assert!(out.is_empty(), "{side} wrote after it ended: {out:?}"),
        }
    }

    /// Run two handshakes back to back in memory until neither has
    /// anything to say; return (initiator, acceptor) statuses.
    fn run(mut i: Setup, mut a: Setup) -> (Status, Status) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut init = start(Role::Initiator, &i, deadline);
        let mut acc = start(Role::Acceptor, &a, deadline);
        assert!(
            acc.take_output().is_empty(),
            "the acceptor waits for a Hello"
        );
        let (mut init_status, mut acc_status) = (Status::InProgress, Status::InProgress);
        let mut to_acc = init.take_output();
        assert!(matches!(
            messages(&to_acc)[..],
            [HandshakeMsg::Hello { .. }]
        ));
        for _ in 0..10 {
            let before = acc_status.clone();
            acc_status = acc.receive(&std::mem::take(&mut to_acc), &mut a.admit);
            let to_init = acc.take_output();
            check_output("acceptor", &before, &acc_status, &messages(&to_init));

            let before = init_status.clone();
            init_status = init.receive(&to_init, &mut i.admit);
            to_acc = init.take_output();
            check_output("initiator", &before, &init_status, &messages(&to_acc));
            if to_acc.is_empty() && to_init.is_empty() {
                break;
            }
        }
        (init_status, acc_status)
    }

    fn check(case: &str, i: Setup, a: Setup, expected: (Status, Status)) {
        assert_eq!(run(i, a), expected, "{case}");
    }

    fn refused(r: Refusal) -> Status {
        Status::Refused(r)
    }

    fn peer_refused(reason: &str) -> Status {
        refused(Refusal::PeerRefused(reason.into()))
    }

    #[test]
    fn handshakes_between_two_nodes() {
        check(
            "success",
            setup("a@h", 1),
            setup("b@h", 2),
            (
                Status::Done(peer_info("b@h")),
                Status::Done(peer_info("a@h")),
            ),
        );
        check(
            "success the other way",
            setup("b@h", 2),
            setup("cli-a@h", 1),
            (
                Status::Done(peer_info("cli-a@h")),
                Status::Done(peer_info("b@h")),
            ),
        );
        check(
            "wrong cookie: the first verifier refuses, the other hears it",
            setup("a@h", 1),
            Setup {
                cookie: b"another cookie",
                ..setup("b@h", 2)
            },
            (refused(Refusal::BadCookie), peer_refused("bad cookie")),
        );
        check(
            "a relay between two TLS sessions (different exporters)",
            setup("a@h", 1),
            Setup {
                exporter: [8; 32],
                ..setup("b@h", 2)
            },
            (refused(Refusal::BadCookie), peer_refused("bad cookie")),
        );
        check(
            "the acceptor refuses a duplicate name",
            setup("a@h", 1),
            Setup {
                admit: Box::new(|p| {
                    Err(NotAdmitted::AlreadyConnected {
                        name: p.name.clone(),
                        incarnation: 0xab,
                    })
                }),
                ..setup("b@h", 2)
            },
            (
                peer_refused(
                    "not admitted: a node named a@h is already connected (incarnation ab)",
                ),
                refused(Refusal::NotAdmitted(NotAdmitted::AlreadyConnected {
                    name: "a@h".into(),
                    incarnation: 0xab,
                })),
            ),
        );
        check(
            "the initiator refuses a name not in its allowlist",
            Setup {
                admit: Box::new(|p| match p.name.as_str() {
                    "c@h" => Ok(()),
                    other => Err(NotAdmitted::NotAllowed(other.into())),
                }),
                ..setup("a@h", 1)
            },
            setup("b@h", 2),
            (
                refused(Refusal::NotAdmitted(NotAdmitted::NotAllowed("b@h".into()))),
                peer_refused("not admitted: b@h is not in the allowlist"),
            ),
        );
        check(
            "a peer with our own name",
            setup("a@h", 1),
            setup("a@h", 2),
            (
                peer_refused("not admitted: the peer has this node's own name a@h"),
                refused(Refusal::NotAdmitted(NotAdmitted::OwnName("a@h".into()))),
            ),
        );
        check(
            "a peer echoing our challenge",
            setup("a@h", 1),
            setup("b@h", 1),
            (
                peer_refused("malformed handshake: the peer echoed our challenge"),
                refused(Refusal::Malformed("the peer echoed our challenge".into())),
            ),
        );
    }

    fn hello(protocol: u32, abi: u32, name: &str) -> HandshakeMsg {
        let local = info(name);
        HandshakeMsg::Hello {
            protocol,
            abi,
            name: local.name,
            incarnation: local.incarnation,
            hidden: local.hidden,
            listen: local.listen,
            challenge: [9; 32],
        }
    }

    fn wire(msgs: &[HandshakeMsg]) -> Vec<u8> {
        let mut out = Vec::new();
        for msg in msgs {
            encode_value_into(msg, &mut out);
        }
        out
    }

    /// Feed `bytes` to a fresh acceptor "b@h"; return its status and what it
    /// wrote.
    fn feed_acceptor(bytes: &[u8]) -> (Status, Vec<HandshakeMsg>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut acc = start(Role::Acceptor, &setup("b@h", 2), deadline);
        let status = acc.receive(bytes, &mut |_| Ok(()));
        let out = messages(&acc.take_output());
        check_output("acceptor", &Status::InProgress, &status, &out);
        (status, out)
    }

    #[test]
    fn scripted_peers() {
        let abi = molt_abi::ABI_VERSION;
        let cases: Vec<(&str, Vec<u8>, Status)> = vec![
            (
                "protocol mismatch",
                wire(&[hello(PROTOCOL_VERSION + 1, abi, "a@h")]),
                refused(Refusal::ProtocolMismatch {
                    ours: PROTOCOL_VERSION,
                    theirs: PROTOCOL_VERSION + 1,
                }),
            ),
            (
                "ABI mismatch",
                wire(&[hello(PROTOCOL_VERSION, abi + 7, "a@h")]),
                refused(Refusal::AbiMismatch {
                    ours: abi,
                    theirs: abi + 7,
                }),
            ),
            (
                "empty name",
                wire(&[hello(PROTOCOL_VERSION, abi, "")]),
                refused(Refusal::Malformed("empty node name".into())),
            ),
            (
                "a name with control characters",
                wire(&[hello(PROTOCOL_VERSION, abi, "a\n@h")]),
                refused(Refusal::Malformed("bad node name \"a\\n@h\"".into())),
            ),
            (
                "a name too long",
                wire(&[hello(PROTOCOL_VERSION, abi, &"a".repeat(256))]),
                refused(Refusal::Malformed(format!(
                    "bad node name {:?}",
                    "a".repeat(64)
                ))),
            ),
            (
                "a long refusal with control characters is cut for the log",
                wire(&[HandshakeMsg::Refuse {
                    reason: format!("no\x1b[2J{}", "x".repeat(1000)),
                }]),
                peer_refused(&format!("no?[2J{}", "x".repeat(250))),
            ),
            (
                "a good hello waits for the proof",
                wire(&[hello(PROTOCOL_VERSION, abi, "a@h")]),
                Status::InProgress,
            ),
            (
                "a truncated hello just waits",
                wire(&[hello(PROTOCOL_VERSION, abi, "a@h")])[..20].to_vec(),
                Status::InProgress,
            ),
            (
                "welcome before hello",
                wire(&[HandshakeMsg::Welcome]),
                refused(Refusal::Malformed("expected Hello, got Welcome".into())),
            ),
            (
                "welcome before proof",
                wire(&[hello(PROTOCOL_VERSION, abi, "a@h"), HandshakeMsg::Welcome]),
                refused(Refusal::Malformed("expected Proof, got Welcome".into())),
            ),
            (
                "a second hello",
                wire(&[
                    hello(PROTOCOL_VERSION, abi, "a@h"),
                    hello(PROTOCOL_VERSION, abi, "a@h"),
                ]),
                refused(Refusal::Malformed("expected Proof, got Hello".into())),
            ),
            (
                "a proof with no cookie behind it",
                wire(&[
                    hello(PROTOCOL_VERSION, abi, "a@h"),
                    HandshakeMsg::Proof { mac: [0; 32] },
                ]),
                refused(Refusal::BadCookie),
            ),
            (
                "the peer refuses",
                wire(&[HandshakeMsg::Refuse {
                    reason: "go away".into(),
                }]),
                peer_refused("go away"),
            ),
            (
                "oversize message",
                (HANDSHAKE_BYTES_MAX + 1).to_le_bytes().to_vec(),
                refused(Refusal::Malformed(format!(
                    "message of {} bytes, the limit is {HANDSHAKE_BYTES_MAX}",
                    HANDSHAKE_BYTES_MAX + 1
                ))),
            ),
        ];
        for (case, bytes, expected) in cases {
            assert_eq!(feed_acceptor(&bytes).0, expected, "{case}");
        }
    }

    #[test]
    fn garbage_is_malformed() {
        for garbage in [
            vec![4, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
            vec![0, 0, 0, 0],
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        ] {
            let (status, out) = feed_acceptor(&garbage);
            assert!(
                matches!(status, Status::Refused(Refusal::Malformed(_))),
                "{garbage:?}: {status:?}"
            );
            assert!(matches!(&out[..], [HandshakeMsg::Refuse { .. }]));
        }
    }

    #[test]
    fn truncated_input_waits_then_completes() {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut init = start(Role::Initiator, &setup("a@h", 1), deadline);
        let mut acc = start(Role::Acceptor, &setup("b@h", 2), deadline);
        let hello = init.take_output();
        for byte in &hello[..hello.len() - 1] {
            assert_eq!(acc.receive(&[*byte], &mut |_| Ok(())), Status::InProgress);
            assert!(acc.take_output().is_empty());
        }
        assert_eq!(
            acc.receive(&hello[hello.len() - 1..], &mut |_| Ok(())),
            Status::InProgress
        );
        let reply = messages(&acc.take_output());
        assert!(matches!(
            &reply[..],
            [HandshakeMsg::Hello { .. }, HandshakeMsg::Proof { .. }]
        ));
    }

    /// The initiator's Hello and Proof from a completed session between
    /// `a@h` and `b@h` (acceptor challenge 2, exporter `EXPORTER`).
    fn captured_hello_and_proof() -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut init = start(Role::Initiator, &setup("a@h", 1), deadline);
        let mut acc = start(Role::Acceptor, &setup("b@h", 2), deadline);
        let mut captured = init.take_output();
        acc.receive(&captured, &mut |_| Ok(()));
        init.receive(&acc.take_output(), &mut |_| Ok(()));
        let proof_and_welcome = init.take_output();
        let msgs = messages(&proof_and_welcome);
        assert!(matches!(
            &msgs[..],
            [HandshakeMsg::Proof { .. }, HandshakeMsg::Welcome]
        ));
        captured.extend_from_slice(&wire(&msgs[..1]));
        captured
    }

    /// The acceptor's Welcome leaves only with its Done (after the
    /// initiator's Welcome), so the node can enter the peer before the
    /// initiator's handshake can end.
    #[test]
    fn the_acceptor_welcomes_last() {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut init = start(Role::Initiator, &setup("a@h", 1), deadline);
        let mut acc = start(Role::Acceptor, &setup("b@h", 2), deadline);
        acc.receive(&init.take_output(), &mut |_| Ok(()));
        init.receive(&acc.take_output(), &mut |_| Ok(()));
        let msgs = messages(&init.take_output());
        assert_eq!(
            acc.receive(&wire(&msgs[..1]), &mut |_| Ok(())),
            Status::InProgress
        );
        assert!(
            acc.take_output().is_empty(),
            "no Welcome before the initiator's"
        );
        assert_eq!(
            acc.receive(&wire(&msgs[1..]), &mut |_| Ok(())),
            Status::Done(peer_info("a@h"))
        );
        let welcome = acc.take_output();
        assert_eq!(messages(&welcome), [HandshakeMsg::Welcome]);
        assert_eq!(
            init.receive(&welcome, &mut |_| Ok(())),
            Status::Done(peer_info("b@h"))
        );
    }

    #[test]
    fn replayed_proofs_are_refused() {
        let replay = captured_hello_and_proof();
        let deadline = Instant::now() + Duration::from_secs(60);
        // The same acceptor challenge each time: only the exporter or the
        // names stand between the replay and success.
        let cases = [
            (
                "same session (control)",
                setup("b@h", 2),
                Status::InProgress,
            ),
            (
                "another TLS session",
                Setup {
                    exporter: [9; 32],
                    ..setup("b@h", 2)
                },
                refused(Refusal::BadCookie),
            ),
            (
                "another pair of names",
                setup("c@h", 2),
                refused(Refusal::BadCookie),
            ),
        ];
        for (case, acceptor, expected) in cases {
            let mut acc = start(Role::Acceptor, &acceptor, deadline);
            let status = acc.receive(&replay, &mut |_| Ok(()));
            assert_eq!(status, expected, "{case}");
            let out = messages(&acc.take_output());
            check_output(case, &Status::InProgress, &status, &out);
            if status == Status::InProgress {
                // The control: the acceptor took the proof and now waits
                // for the initiator's Welcome before it welcomes.
                assert!(
                    matches!(
                        &out[..],
                        [HandshakeMsg::Hello { .. }, HandshakeMsg::Proof { .. }]
                    ),
                    "{case}"
                );
            }
        }
    }

    #[test]
    fn timeout() {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(5);
        let mut init = start(Role::Initiator, &setup("a@h", 1), deadline);
        init.take_output();
        assert_eq!(init.deadline(), deadline);
        assert_eq!(init.poll_timeout(t0), Status::InProgress);
        assert_eq!(
            init.poll_timeout(deadline - Duration::from_millis(1)),
            Status::InProgress
        );
        assert_eq!(init.poll_timeout(deadline), refused(Refusal::Timeout));
        let out = messages(&init.take_output());
        assert_eq!(
            out,
            vec![HandshakeMsg::Refuse {
                reason: "handshake timed out".into()
            }]
        );
        // Ended for good: the same status, nothing more written.
        let late = wire(&[HandshakeMsg::Welcome]);
        assert_eq!(
            init.receive(&late, &mut |_| Ok(())),
            refused(Refusal::Timeout)
        );
        assert_eq!(init.poll_timeout(deadline), refused(Refusal::Timeout));
        assert!(init.take_output().is_empty());
    }

    #[test]
    fn random_challenges_differ() {
        assert_ne!(random_challenge(), random_challenge());
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let deadline = Instant::now();
        let hs = start(Role::Initiator, &setup("a@h", 1), deadline);
        let text = format!("{hs:?}");
        assert!(text.contains("a@h") && !text.contains("cookie"), "{text}");
    }
}
