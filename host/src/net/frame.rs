//! Frames between connected nodes: what each one means, and how they are
//! cut out of a byte stream. I/O-free: bytes in, frames out, so the decoder
//! is tested and fuzzed without sockets.
//!
//! On the wire a frame is a little-endian `u32` length, then that many
//! bytes of the frame encoded by `molt_abi::codec` (bincode). A length past
//! the connection's `frame_bytes_max` is refused before anything is
//! buffered.

use bytes::Bytes;
use molt_abi::{Pid, Ref};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::service::{ServiceFault, ServiceId};
use super::wire::SpawnFailure;
use crate::runtime::Payload;

/// Version of the frame protocol; both sides must speak the same. 2: code
/// control (`Code`/`CodeReply`) replaced `LoadModule`, node lists carry
/// addresses, process rows say suspended and failed upgrades. 3: process
/// groups (`PgUpdate`, `PgGone`, `PgSync`). 4: the service seam
/// (`Request`, `Reply`, `Notice`) carries code control, node information
/// and process groups, each in its own wire types (`net::wire`). 5:
/// process rows carry counters and the parent; node figures and process
/// inspection in the node-information service. 6: a peer's figures say
/// how long it has been up, when it was last heard and its reconnects. 7:
/// process rows say whether the process hibernates. 8: and whether it
/// runs baseline code.
pub const PROTOCOL_VERSION: u32 = 8;

/// One frame. Signals between processes travel on the lane of their
/// (sender, receiver) pair, so per-pair order holds; requests and node
/// business travel on the control lane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// A message from `from` to `to`.
    Message {
        /// Sender.
        from: Pid,
        /// Receiver, on the node that gets this frame.
        to: Pid,
        /// Tag.
        tag: u32,
        /// Envelope reference (`Ref::NONE` for none).
        reference: Ref,
        /// Payload (on the wire as `molt_abi::bytes`).
        payload: Payload,
    },
    /// A message to a registered name on the node that gets this frame.
    MessageNamed {
        /// Sender.
        from: Pid,
        /// Registered name.
        name: String,
        /// Tag.
        tag: u32,
        /// Envelope reference.
        reference: Ref,
        /// Payload.
        #[serde(with = "molt_abi::codec::bytes")]
        payload: Vec<u8>,
    },
    /// An exit signal (`linked`: because `from` died while linked).
    Exit {
        /// Sender.
        from: Pid,
        /// Receiver.
        to: Pid,
        /// Reason.
        reason: String,
        /// From a link rather than `exit(pid, reason)`.
        linked: bool,
    },
    /// `from` links to `to`.
    Link {
        /// Who links.
        from: Pid,
        /// Linked process.
        to: Pid,
    },
    /// `from` unlinks from `to`.
    Unlink {
        /// Who unlinks.
        from: Pid,
        /// The other end.
        to: Pid,
    },
    /// `from` monitors `to`.
    Monitor {
        /// Watcher.
        from: Pid,
        /// Monitored process.
        to: Pid,
        /// Monitor reference.
        reference: Ref,
    },
    /// `from` drops its monitor on `to`.
    Demonitor {
        /// Watcher.
        from: Pid,
        /// Monitored process.
        to: Pid,
        /// Monitor reference.
        reference: Ref,
    },
    /// A monitored process ended.
    Down {
        /// Watcher (on the node that gets this frame).
        watcher: Pid,
        /// The process that ended.
        pid: Pid,
        /// Monitor reference.
        reference: Ref,
        /// Its exit reason.
        reason: String,
    },
    /// Spawn `module` on the node that gets this frame.
    SpawnRequest {
        /// Correlates the reply.
        id: u64,
        /// The requesting process (link and monitor partner).
        from: Pid,
        /// Module name.
        module: String,
        /// Init argument bytes.
        #[serde(with = "molt_abi::codec::bytes")]
        args: Vec<u8>,
        /// Link the child to `from`.
        link: bool,
        /// Monitor the child by `from` with this reference.
        monitor: Option<Ref>,
    },
    /// The answer to a `SpawnRequest`.
    SpawnReply {
        /// The request's id.
        id: u64,
        /// The new pid, or why not.
        result: Result<Pid, SpawnFailure>,
    },
    /// `net_adm:ping`-style liveness check.
    Ping {
        /// Correlates the `Pong`.
        id: u64,
    },
    /// The answer to a `Ping`.
    Pong {
        /// The ping's id.
        id: u64,
    },
    /// The visible nodes the sender is connected to, as `(name, address)`:
    /// the receiver connects to those it lacks (full mesh).
    Peers {
        /// Node names and their listen addresses.
        nodes: Vec<(String, String)>,
    },
    /// A request to a service of the receiver (see `net::service`).
    Request {
        /// The service.
        service: ServiceId,
        /// Correlates the reply.
        id: u64,
        /// The service's request, encoded.
        #[serde(with = "molt_abi::codec::bytes")]
        body: Vec<u8>,
    },
    /// The answer to a `Request`: the service's reply (itself a result of
    /// the service's reply and error types), or why the service did not
    /// run.
    Reply {
        /// The request's id.
        id: u64,
        /// The service's answer, encoded, or the network layer's refusal.
        result: Result<Vec<u8>, ServiceFault>,
    },
    /// A one-way message to a service of the receiver; notices from one
    /// node are applied in the order sent.
    Notice {
        /// The service.
        service: ServiceId,
        /// The service's notice, encoded.
        #[serde(with = "molt_abi::codec::bytes")]
        body: Vec<u8>,
    },
}

/// At most the bytes a frame's fields other than its byte strings and
/// strings encode to (two pids, a reference, a tag and the lengths, as
/// varints), for [`Frame::encoded_len_hint`].
const FIXED_BYTES_MAX: usize = 128;

impl Frame {
    /// The variant's name, for logs (not its contents: they may be large,
    /// and they are the peer's data).
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Message { .. } => "Message",
            Frame::MessageNamed { .. } => "MessageNamed",
            Frame::Exit { .. } => "Exit",
            Frame::Link { .. } => "Link",
            Frame::Unlink { .. } => "Unlink",
            Frame::Monitor { .. } => "Monitor",
            Frame::Demonitor { .. } => "Demonitor",
            Frame::Down { .. } => "Down",
            Frame::SpawnRequest { .. } => "SpawnRequest",
            Frame::SpawnReply { .. } => "SpawnReply",
            Frame::Ping { .. } => "Ping",
            Frame::Pong { .. } => "Pong",
            Frame::Peers { .. } => "Peers",
            Frame::Request { .. } => "Request",
            Frame::Reply { .. } => "Reply",
            Frame::Notice { .. } => "Notice",
        }
    }

    /// About the bytes this frame encodes to, prefix included: its byte
    /// strings and strings and a bound for the rest. A lane makes room for
    /// this much before encoding (a frame larger than the hint is encoded
    /// all the same, with a copy more).
    pub fn encoded_len_hint(&self) -> usize {
        let variable = match self {
            Frame::Message { payload, .. } => payload.len(),
            Frame::MessageNamed { name, payload, .. } => name.len() + payload.len(),
            Frame::Exit { reason, .. } | Frame::Down { reason, .. } => reason.len(),
            Frame::SpawnRequest { module, args, .. } => module.len() + args.len(),
            Frame::Request { body, .. } | Frame::Notice { body, .. } => body.len(),
            Frame::Reply {
                result: Ok(body), ..
            } => body.len(),
            _ => 0,
        };
        PREFIX_BYTES + FIXED_BYTES_MAX + variable
    }
}

/// Bytes of the length prefix in front of every frame.
pub const PREFIX_BYTES: usize = 4;

/// Append one frame to `out`: its length as a little-endian `u32`, then
/// `molt_abi::codec::encode(frame)`.
///
/// The caller bounds what it sends by the connection's `frame_bytes_max`
/// (payloads are bounded by `message_bytes_max` long before that); this
/// function only asserts that the length fits the prefix.
pub fn encode_into(frame: &Frame, out: &mut Vec<u8>) {
    encode_value_into(frame, out);
}

/// One frame, length prefix included, in a fresh buffer.
pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(frame, &mut out);
    out
}

/// Length-prefix any serde value: the framing frames and handshake messages
/// share.
pub(crate) fn encode_value_into<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    // The body is encoded in place after room for its prefix, which is
    // filled in once the body's length is known.
    let at = out.len();
    out.extend_from_slice(&[0; PREFIX_BYTES]);
    molt_abi::codec::encode_to_vec(value, out);
    let body = out.len() - at - PREFIX_BYTES;
    // A zero-length body would read as a broken stream on the other side;
    // every enum encodes at least its variant index.
    debug_assert!(body > 0, "encoded frame is empty");
    // Release builds fail loudly too: a truncated prefix would desynchronise
    // the stream and turn the payload into frames.
    let len = u32::try_from(body).expect("frame larger than 4 GiB");
    out[at..at + PREFIX_BYTES].copy_from_slice(&len.to_le_bytes());
}

/// The length prefix at `at` of `bytes`.
fn prefix_at(bytes: &[u8], at: usize) -> u32 {
    let mut prefix = [0u8; PREFIX_BYTES];
    prefix.copy_from_slice(&bytes[at..at + PREFIX_BYTES]);
    u32::from_le_bytes(prefix)
}

/// Why a byte stream cannot be cut into frames. Either one ends the
/// connection: the stream is out of step and nothing after it can be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix announces more than `frame_bytes_max`: the peer is
    /// broken or hostile. Nothing past the prefix was buffered.
    #[error("frame of {len} bytes announced, the limit is {max}")]
    TooLarge {
        /// The announced length.
        len: u32,
        /// The decoder's `frame_bytes_max`.
        max: u32,
    },
    /// The bytes of a frame do not decode (or a frame is empty); the text
    /// says why.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Consumed bytes are dropped from the front of the buffer once they are at
/// least this many and at least half of it, so each byte is moved at most
/// a bounded number of times however small the frames are.
const COMPACT_BYTES_MIN: usize = 4096;

/// Cuts frames out of a byte stream; holds at most one partial frame.
///
/// Feed it with [`push`](Self::push) as bytes arrive, then call
/// [`next_frame`](Self::next_frame) until it returns `Ok(None)`. Every
/// length prefix is checked against `frame_bytes_max` as soon as its four
/// bytes are in, before any byte of its body is buffered, so a peer that
/// announces 4 GiB costs nothing.
pub struct FrameDecoder {
    /// Whole frames, prefixes checked, of a chunk that came while nothing
    /// was buffered, decoded where they arrived (`chunk[chunk_start..]`)
    /// rather than copied: they come before `buf`'s.
    chunk: Bytes,
    chunk_start: usize,
    /// `buf[start..scan]` holds whole frames whose prefix was checked;
    /// `buf[scan..]` holds at most one partial frame.
    buf: Vec<u8>,
    /// Start of the next frame to decode.
    start: usize,
    /// Start of the partial frame (the first frame not yet complete).
    scan: usize,
    frame_bytes_max: u32,
    /// Set once the stream is unusable. A bad prefix is reported after the
    /// whole frames before it; a bad body at once.
    error: Option<FrameError>,
}

impl std::fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the bytes: they may be large, and they are the peer's data.
        f.debug_struct("FrameDecoder")
            .field("buffered", &self.buffered())
            .field("frame_bytes_max", &self.frame_bytes_max)
            .field("error", &self.error)
            .finish()
    }
}

impl FrameDecoder {
    /// A decoder refusing frames longer than `frame_bytes_max` bytes
    /// (prefix not counted).
    pub fn new(frame_bytes_max: u32) -> Self {
        FrameDecoder {
            chunk: Bytes::new(),
            chunk_start: 0,
            buf: Vec::new(),
            start: 0,
            scan: 0,
            frame_bytes_max,
            error: None,
        }
    }

    /// Append a received chunk. Its whole frames are decoded where they
    /// are when nothing else is buffered (the usual case: a reader takes
    /// every frame before it reads again); only a partial frame at its end
    /// is copied. Otherwise as [`push`](Self::push).
    pub fn push_chunk(&mut self, chunk: Bytes) {
        if self.error.is_some() {
            return;
        }
        if self.chunk_start < self.chunk.len() || self.start < self.buf.len() {
            self.push(&chunk);
            return;
        }
        let mut whole = 0;
        while chunk.len() - whole >= PREFIX_BYTES {
            let len = prefix_at(&chunk, whole);
            if let Err(error) = self.check_len(len) {
                // The whole frames before it are still good.
                self.chunk = chunk.slice(..whole);
                self.chunk_start = 0;
                self.error = Some(error);
                return;
            }
            let end = whole + PREFIX_BYTES + len as usize;
            if end > chunk.len() {
                break;
            }
            whole = end;
        }
        self.chunk = chunk.slice(..whole);
        self.chunk_start = 0;
        self.push(&chunk[whole..]);
    }

    /// Append received bytes. Once the stream has failed, bytes are
    /// dropped.
    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        self.compact();
        while !bytes.is_empty() {
            // The partial frame: complete its prefix first.
            let have = self.buf.len() - self.scan;
            if have < PREFIX_BYTES {
                let take = (PREFIX_BYTES - have).min(bytes.len());
                self.buf.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.buf.len() - self.scan < PREFIX_BYTES {
                    return;
                }
            }
            let len = prefix_at(&self.buf, self.scan);
            if let Err(error) = self.check_len(len) {
                // Keep the whole frames before it; they are still good.
                self.buf.truncate(self.scan);
                self.error = Some(error);
                return;
            }
            let body_have = self.buf.len() - self.scan - PREFIX_BYTES;
            let take = (len as usize - body_have).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if body_have + take == len as usize {
                self.scan = self.buf.len();
            }
        }
        debug_assert!(self.start <= self.scan && self.scan <= self.buf.len());
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, `Err`
    /// once the stream is unusable; after an `Err` the decoder stays failed
    /// and keeps returning that error.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        self.next_value()
    }

    /// [`next_frame`](Self::next_frame) for any serde type (the handshake
    /// decodes its own messages with the same framing).
    pub(crate) fn next_value<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        if self.chunk_start < self.chunk.len() {
            let body_start = self.chunk_start + PREFIX_BYTES;
            let body_end = body_start + prefix_at(&self.chunk, self.chunk_start) as usize;
            let decoded = molt_abi::codec::decode::<T>(&self.chunk[body_start..body_end]);
            self.chunk_start = body_end;
            if self.chunk_start == self.chunk.len() {
                self.chunk = Bytes::new();
                self.chunk_start = 0;
            }
            return self.decoded(decoded);
        }
        if self.start == self.scan {
            return match &self.error {
                Some(error) => Err(error.clone()),
                None => Ok(None),
            };
        }
        let len = prefix_at(&self.buf, self.start) as usize;
        let body_start = self.start + PREFIX_BYTES;
        let body_end = body_start + len;
        debug_assert!(body_end <= self.scan, "a checked frame is whole");
        let decoded = molt_abi::codec::decode::<T>(&self.buf[body_start..body_end]);
        self.start = body_end;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            self.scan = 0;
        }
        self.decoded(decoded)
    }

    fn decoded<T>(
        &mut self,
        decoded: Result<T, molt_abi::codec::DecodeError>,
    ) -> Result<Option<T>, FrameError> {
        match decoded {
            Ok(value) => Ok(Some(value)),
            Err(e) => {
                let error = FrameError::Malformed(e.to_string());
                self.fail(error.clone());
                Err(error)
            }
        }
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.chunk.len() - self.chunk_start + self.buf.len() - self.start
    }

    fn check_len(&self, len: u32) -> Result<(), FrameError> {
        if len > self.frame_bytes_max {
            return Err(FrameError::TooLarge {
                len,
                max: self.frame_bytes_max,
            });
        }
        if len == 0 {
            return Err(FrameError::Malformed("zero-length frame".into()));
        }
        Ok(())
    }

    fn fail(&mut self, error: FrameError) {
        self.error = Some(error);
        self.chunk = Bytes::new();
        self.chunk_start = 0;
        self.buf = Vec::new();
        self.start = 0;
        self.scan = 0;
    }

    fn compact(&mut self) {
        if self.start >= COMPACT_BYTES_MIN && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.scan -= self.start;
            self.start = 0;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: u32 = 1 << 20;

    fn pid(serial: u64) -> Pid {
        Pid {
            node: 0xa1,
            incarnation: 7,
            serial,
        }
    }

    fn reference(serial: u64) -> Ref {
        Ref {
            node: 0xb2,
            incarnation: 9,
            serial,
        }
    }

    /// One frame of every variant (and both sides of every `Result`).
    pub(crate) fn samples() -> Vec<Frame> {
        vec![
            Frame::Message {
                from: pid(1),
                to: pid(2),
                tag: 42,
                reference: Ref::NONE,
                payload: b"hello".into(),
            },
            Frame::MessageNamed {
                from: pid(1),
                name: "logger".into(),
                tag: 0,
                reference: reference(3),
                payload: vec![0; 300],
            },
            Frame::Exit {
                from: pid(1),
                to: pid(2),
                reason: "kill".into(),
                linked: true,
            },
            Frame::Link {
                from: pid(1),
                to: pid(2),
            },
            Frame::Unlink {
                from: pid(2),
                to: pid(1),
            },
            Frame::Monitor {
                from: pid(1),
                to: pid(2),
                reference: reference(4),
            },
            Frame::Demonitor {
                from: pid(1),
                to: pid(2),
                reference: reference(4),
            },
            Frame::Down {
                watcher: pid(1),
                pid: pid(2),
                reference: reference(4),
                reason: "noconnection".into(),
            },
            Frame::SpawnRequest {
                id: 5,
                from: pid(1),
                module: "counter".into(),
                args: vec![1, 2, 3],
                link: true,
                monitor: Some(reference(6)),
            },
            Frame::SpawnReply {
                id: 5,
                result: Ok(pid(9)),
            },
            Frame::SpawnReply {
                id: 6,
                result: Err(SpawnFailure::NoModule("nope".into())),
            },
            Frame::SpawnReply {
                id: 7,
                result: Err(SpawnFailure::ProcessLimit(10)),
            },
            Frame::SpawnReply {
                id: 8,
                result: Err(SpawnFailure::ArgsTooLarge { size: 9, max: 8 }),
            },
            Frame::Ping { id: u64::MAX },
            Frame::Pong { id: 0 },
            Frame::Peers {
                nodes: vec![("b@h".into(), "127.0.0.1:4371".into())],
            },
            Frame::Peers { nodes: vec![] },
            Frame::Request {
                service: 2,
                id: 10,
                body: vec![7, 0, 1],
            },
            Frame::Reply {
                id: 10,
                result: Ok(vec![0, 1, 2, 3]),
            },
            Frame::Reply {
                id: 11,
                result: Err(ServiceFault::UnknownService(9)),
            },
            Frame::Reply {
                id: 12,
                result: Err(ServiceFault::Busy(256)),
            },
            Frame::Reply {
                id: 13,
                result: Err(ServiceFault::Malformed("unexpected end".into())),
            },
            Frame::Notice {
                service: 1,
                body: vec![],
            },
        ]
    }

    fn prefixed(len: u32, body: &[u8]) -> Vec<u8> {
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend_from_slice(body);
        bytes
    }

    /// Push `bytes` in `chunks`-sized pieces (cycling), collecting every
    /// frame until the decoder needs more bytes or fails.
    fn decode_chunked(
        bytes: &[u8],
        chunks: &[usize],
        max: u32,
    ) -> (Vec<Frame>, Result<(), FrameError>, FrameDecoder) {
        let mut decoder = FrameDecoder::new(max);
        let mut frames = Vec::new();
        let mut rest = bytes;
        let mut sizes = chunks.iter().copied().cycle();
        let mut pushes = 0;
        while !rest.is_empty() {
            let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
            // Both ways in: copied, and as a chunk decoded in place.
            pushes += 1;
            match pushes % 2 {
                0 => decoder.push(&rest[..n]),
                _ => decoder.push_chunk(Bytes::copy_from_slice(&rest[..n])),
            }
            rest = &rest[n..];
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    Err(e) => return (frames, Err(e), decoder),
                }
            }
        }
        (frames, Ok(()), decoder)
    }

    /// What a byte stream decodes to: frames, then whether it ended clean,
    /// mid-frame, or with an error.
    #[derive(Debug, PartialEq)]
    enum Outcome {
        Frames(usize),
        NeedMore { frames: usize, buffered: usize },
        Failed { frames: usize, error: FrameError },
    }

    fn check(case: &str, bytes: &[u8], max: u32, expected: Outcome) {
        let (frames, end, decoder) = decode_chunked(bytes, &[bytes.len().max(1)], max);
        let got = match end {
            Err(error) => Outcome::Failed {
                frames: frames.len(),
                error,
            },
            Ok(()) if decoder.buffered() > 0 => Outcome::NeedMore {
                frames: frames.len(),
                buffered: decoder.buffered(),
            },
            Ok(()) => Outcome::Frames(frames.len()),
        };
        assert_eq!(got, expected, "{case}");
    }

    #[test]
    fn every_variant_round_trips() {
        for frame in samples() {
            let bytes = encode(&frame);
            let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
            assert_eq!(len + PREFIX_BYTES, bytes.len(), "{frame:?}");
            let mut decoder = FrameDecoder::new(MAX);
            decoder.push(&bytes);
            assert_eq!(decoder.next_frame(), Ok(Some(frame.clone())));
            assert_eq!(decoder.next_frame(), Ok(None));
            assert_eq!(decoder.buffered(), 0);
        }
    }

    #[test]
    fn encode_into_appends() {
        let mut out = b"xyz".to_vec();
        encode_into(&Frame::Ping { id: 1 }, &mut out);
        assert_eq!(&out[..3], b"xyz");
        assert_eq!(&out[3..], &encode(&Frame::Ping { id: 1 })[..]);
    }

    #[test]
    fn frames_split_at_every_byte_boundary_reassemble() {
        let frames = samples();
        let mut stream = Vec::new();
        for frame in &frames {
            encode_into(frame, &mut stream);
        }
        for split in 0..=stream.len() {
            let mut decoder = FrameDecoder::new(MAX);
            let mut got = Vec::new();
            for part in [&stream[..split], &stream[split..]] {
                decoder.push(part);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    got.push(frame);
                }
            }
            assert_eq!(got, frames, "split at {split}");
            assert_eq!(decoder.buffered(), 0);
        }
        // And one byte at a time.
        let (got, end, decoder) = decode_chunked(&stream, &[1], MAX);
        assert_eq!((got, end, decoder.buffered()), (frames, Ok(()), 0));
    }

    #[test]
    fn many_frames_in_one_push() {
        let mut stream = Vec::new();
        for id in 0..10_000 {
            encode_into(&Frame::Ping { id }, &mut stream);
        }
        let mut decoder = FrameDecoder::new(MAX);
        decoder.push(&stream);
        for id in 0..10_000 {
            assert_eq!(decoder.next_frame(), Ok(Some(Frame::Ping { id })));
        }
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn consumed_bytes_are_compacted() {
        let one = encode(&Frame::Ping { id: 1 });
        let mut decoder = FrameDecoder::new(MAX);
        // Frames arrive with a partial one always pending, so the buffer
        // never empties by itself.
        decoder.push(&one[..2]);
        for _ in 0..100_000 {
            decoder.push(&one[2..]);
            decoder.push(&one[..2]);
            assert_eq!(decoder.next_frame(), Ok(Some(Frame::Ping { id: 1 })));
        }
        assert_eq!(decoder.buffered(), 2);
        assert!(decoder.buf.len() < 2 * COMPACT_BYTES_MIN + one.len());
    }

    #[test]
    fn oversize_prefix_is_refused_without_buffering() {
        let max = 64;
        let mut decoder = FrameDecoder::new(max);
        decoder.push(&u32::MAX.to_le_bytes()[..3]);
        assert_eq!(decoder.next_frame(), Ok(None));
        decoder.push(&[0xff, 1, 2, 3, 4, 5]);
        assert_eq!(decoder.buffered(), 0, "nothing past the prefix is kept");
        let error = FrameError::TooLarge { len: u32::MAX, max };
        assert_eq!(decoder.next_frame(), Err(error.clone()));
        // It stays failed and drops whatever comes next.
        decoder.push(&encode(&Frame::Ping { id: 1 }));
        assert_eq!(decoder.buffered(), 0);
        assert_eq!(decoder.next_frame(), Err(error));
    }

    #[test]
    fn byte_streams() {
        let ping = encode(&Frame::Ping { id: 3 });
        let two_pings = [ping.clone(), ping.clone()].concat();
        let max = 64;
        let too_large = FrameError::TooLarge { len: 65, max };
        check("empty stream", &[], max, Outcome::Frames(0));
        check("one frame", &ping, max, Outcome::Frames(1));
        check("two frames", &two_pings, max, Outcome::Frames(2));
        check(
            "truncated prefix waits",
            &ping[..3],
            max,
            Outcome::NeedMore {
                frames: 0,
                buffered: 3,
            },
        );
        check(
            "truncated body waits",
            &two_pings[..ping.len() + 5],
            max,
            Outcome::NeedMore {
                frames: 1,
                buffered: 5,
            },
        );
        check(
            "exactly the limit is accepted (and waits for its body)",
            &prefixed(max, &[0; 10]),
            max,
            Outcome::NeedMore {
                frames: 0,
                buffered: 14,
            },
        );
        check(
            "one past the limit",
            &prefixed(max + 1, &[]),
            max,
            Outcome::Failed {
                frames: 0,
                error: too_large.clone(),
            },
        );
        check(
            "whole frames before a bad prefix still arrive",
            &[ping.clone(), prefixed(max + 1, &[0; 100])].concat(),
            max,
            Outcome::Failed {
                frames: 1,
                error: too_large,
            },
        );
        check(
            "zero-length frame",
            &prefixed(0, &[]),
            max,
            Outcome::Failed {
                frames: 0,
                error: FrameError::Malformed("zero-length frame".into()),
            },
        );
    }

    #[test]
    fn garbage_after_a_valid_prefix_is_malformed() {
        for (case, body) in [
            ("unknown variant", vec![0xff, 0xff, 0xff, 0xff]),
            (
                "truncated fields",
                encode(&Frame::Ping { id: u64::MAX })[4..6].to_vec(),
            ),
            (
                "trailing bytes",
                [&encode(&Frame::Pong { id: 1 })[4..], &[0]].concat(),
            ),
        ] {
            let stream = [
                prefixed(body.len() as u32, &body),
                encode(&Frame::Pong { id: 2 }),
            ]
            .concat();
            let mut decoder = FrameDecoder::new(MAX);
            decoder.push(&stream);
            let first = decoder.next_frame();
            assert!(
                matches!(first, Err(FrameError::Malformed(_))),
                "{case}: {first:?}"
            );
            assert_eq!(decoder.next_frame(), first, "{case}: stays failed");
            assert_eq!(decoder.buffered(), 0, "{case}");
        }
    }

    fn any_pid() -> impl Strategy<Value = Pid> {
        any::<(u64, u64, u64)>().prop_map(|(node, incarnation, serial)| Pid {
            node,
            incarnation,
            serial,
        })
    }

    fn any_ref() -> impl Strategy<Value = Ref> {
        any::<(u64, u64, u64)>().prop_map(|(node, incarnation, serial)| Ref {
            node,
            incarnation,
            serial,
        })
    }

    fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..512)
    }

    fn any_spawn_failure() -> impl Strategy<Value = SpawnFailure> {
        prop_oneof![
            any::<String>().prop_map(SpawnFailure::NoModule),
            any::<u32>().prop_map(SpawnFailure::ProcessLimit),
            (any::<u64>(), any::<u64>())
                .prop_map(|(size, max)| SpawnFailure::ArgsTooLarge { size, max }),
        ]
    }

    /// Every variant, with arbitrary pids, references, strings and payloads.
    fn any_frame() -> impl Strategy<Value = Frame> {
        let s = any::<String>;
        prop_oneof![
            (any_pid(), any_pid(), any::<u32>(), any_ref(), any_bytes()).prop_map(
                |(from, to, tag, reference, payload)| Frame::Message {
                    from,
                    to,
                    tag,
                    reference,
                    payload: payload.into()
                }
            ),
            (any_pid(), s(), any::<u32>(), any_ref(), any_bytes()).prop_map(
                |(from, name, tag, reference, payload)| Frame::MessageNamed {
                    from,
                    name,
                    tag,
                    reference,
                    payload
                }
            ),
            (any_pid(), any_pid(), s(), any::<bool>()).prop_map(|(from, to, reason, linked)| {
                Frame::Exit {
                    from,
                    to,
                    reason,
                    linked,
                }
            }),
            (any_pid(), any_pid()).prop_map(|(from, to)| Frame::Link { from, to }),
            (any_pid(), any_pid()).prop_map(|(from, to)| Frame::Unlink { from, to }),
            (any_pid(), any_pid(), any_ref()).prop_map(|(from, to, reference)| Frame::Monitor {
                from,
                to,
                reference
            }),
            (any_pid(), any_pid(), any_ref()).prop_map(|(from, to, reference)| {
                Frame::Demonitor {
                    from,
                    to,
                    reference,
                }
            }),
            (any_pid(), any_pid(), any_ref(), s()).prop_map(|(watcher, pid, reference, reason)| {
                Frame::Down {
                    watcher,
                    pid,
                    reference,
                    reason,
                }
            }),
            (
                any::<u64>(),
                any_pid(),
                s(),
                any_bytes(),
                any::<bool>(),
                proptest::option::of(any_ref())
            )
                .prop_map(|(id, from, module, args, link, monitor)| {
                    Frame::SpawnRequest {
                        id,
                        from,
                        module,
                        args,
                        link,
                        monitor,
                    }
                }),
            (
                any::<u64>(),
                proptest::result::maybe_ok(any_pid(), any_spawn_failure())
            )
                .prop_map(|(id, result)| Frame::SpawnReply { id, result }),
            any::<u64>().prop_map(|id| Frame::Ping { id }),
            any::<u64>().prop_map(|id| Frame::Pong { id }),
            prop::collection::vec(any::<(String, String)>(), 0..8)
                .prop_map(|nodes| Frame::Peers { nodes }),
            (any::<u16>(), any::<u64>(), any_bytes())
                .prop_map(|(service, id, body)| Frame::Request { service, id, body }),
            (
                any::<u64>(),
                proptest::result::maybe_ok(
                    any_bytes(),
                    prop_oneof![
                        any::<u16>().prop_map(ServiceFault::UnknownService),
                        any::<u32>().prop_map(ServiceFault::Busy),
                        s().prop_map(ServiceFault::Malformed),
                    ]
                )
            )
                .prop_map(|(id, result)| Frame::Reply { id, result }),
            (any::<u16>(), any_bytes()).prop_map(|(service, body)| Frame::Notice { service, body }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The fuzz test: whatever bytes arrive, in whatever pieces, the
        /// decoder never panics, never holds more than it was given, and
        /// ends with frames, a need for more bytes, or a `FrameError`.
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..4096),
            chunks in prop::collection::vec(1usize..512, 1..16),
            max in prop_oneof![Just(16u32), Just(1024), Just(MAX)],
        ) {
            let (frames, end, decoder) = decode_chunked(&bytes, &chunks, max);
            prop_assert!(decoder.buffered() <= bytes.len());
            if end.is_err() {
                // Failed for good: nothing buffered, the same error again.
                let mut decoder = decoder;
                prop_assert_eq!(decoder.buffered(), 0);
                prop_assert_eq!(decoder.next_frame().err(), end.err());
            } else {
                // Every frame decoded re-encodes to bytes of the stream.
                let encoded: usize = frames.iter().map(|f| encode(f).len()).sum();
                prop_assert!(encoded + decoder.buffered() <= bytes.len());
            }
        }

        /// Valid frames survive any chunking.
        #[test]
        fn frames_round_trip_through_any_chunking(
            frames in prop::collection::vec(any_frame(), 0..8),
            chunks in prop::collection::vec(1usize..256, 1..16),
        ) {
            let mut stream = Vec::new();
            for frame in &frames {
                encode_into(frame, &mut stream);
            }
            let (got, end, decoder) = decode_chunked(&stream, &chunks, MAX);
            prop_assert_eq!(end, Ok(()));
            prop_assert_eq!(decoder.buffered(), 0);
            prop_assert_eq!(got, frames);
        }
    }
}
