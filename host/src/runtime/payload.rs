//! A message's bytes. Short payloads live inside the message itself, so
//! that sending one costs neither its sender nor its receiver a trip to
//! the allocator: the sender would allocate on its thread and the receiver
//! free on another, and between the two threads the allocator's lines
//! bounce (a sixth of a one-way stream's time before). Erlang keeps
//! binaries of up to 64 bytes on the process heap, copied, for the same
//! reason; longer payloads are allocated once and moved.

use std::fmt;
use std::ops::Deref;

/// Payloads of up to this many bytes are held in place.
pub const PAYLOAD_INLINE_MAX: usize = 64;

/// The bytes of a message: in place up to [`PAYLOAD_INLINE_MAX`] bytes, on
/// the heap beyond. Reads as a `[u8]`.
#[derive(Clone)]
pub struct Payload(Repr);

#[derive(Clone)]
enum Repr {
    Inline {
        len: u8,
        bytes: [u8; PAYLOAD_INLINE_MAX],
    },
    Heap(Box<[u8]>),
}

impl Payload {
    /// An empty payload.
    pub const fn empty() -> Self {
        Payload(Repr::Inline {
            len: 0,
            bytes: [0; PAYLOAD_INLINE_MAX],
        })
    }

    /// The bytes, as a vector (a copy if they are held in place).
    pub fn into_vec(self) -> Vec<u8> {
        match self.0 {
            Repr::Inline { len, bytes } => bytes[..usize::from(len)].to_vec(),
            Repr::Heap(bytes) => bytes.into_vec(),
        }
    }

    /// Whether the bytes are held in place rather than on the heap.
    pub fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline { .. })
    }

    fn inline(from: &[u8]) -> Self {
        debug_assert!(from.len() <= PAYLOAD_INLINE_MAX);
        let mut bytes = [0; PAYLOAD_INLINE_MAX];
        bytes[..from.len()].copy_from_slice(from);
        Payload(Repr::Inline {
            // At most PAYLOAD_INLINE_MAX (64): fits a u8.
            len: from.len() as u8,
            bytes,
        })
    }
}

impl Default for Payload {
    fn default() -> Self {
        Payload::empty()
    }
}

impl Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Heap(bytes) => bytes,
        }
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<&[u8]> for Payload {
    fn from(bytes: &[u8]) -> Self {
        match bytes.len() <= PAYLOAD_INLINE_MAX {
            true => Payload::inline(bytes),
            false => Payload(Repr::Heap(bytes.into())),
        }
    }
}

impl<const N: usize> From<&[u8; N]> for Payload {
    fn from(bytes: &[u8; N]) -> Self {
        Payload::from(&bytes[..])
    }
}

impl From<Vec<u8>> for Payload {
    /// Short vectors are copied in place (and freed here, on the thread
    /// that made them); longer ones are kept as they are.
    fn from(bytes: Vec<u8>) -> Self {
        match bytes.len() <= PAYLOAD_INLINE_MAX {
            true => Payload::inline(&bytes),
            false => Payload(Repr::Heap(bytes.into_boxed_slice())),
        }
    }
}

impl From<Box<[u8]>> for Payload {
    fn from(bytes: Box<[u8]>) -> Self {
        match bytes.len() <= PAYLOAD_INLINE_MAX {
            true => Payload::inline(&bytes),
            false => Payload(Repr::Heap(bytes)),
        }
    }
}

impl From<Payload> for Vec<u8> {
    fn from(payload: Payload) -> Self {
        payload.into_vec()
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Payload {}

impl PartialEq<[u8]> for Payload {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// On the wire as one block of bytes (a varint length, then the bytes):
/// the same bytes as a `Vec<u8>` field with `molt_abi::bytes`, so the two
/// can stand for each other. Decoding from a buffer takes the bytes
/// straight from it, with no vector in between.
impl serde::Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self)
    }
}

impl<'de> serde::Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(PayloadVisitor)
    }
}

struct PayloadVisitor;

impl<'de> serde::de::Visitor<'de> for PayloadVisitor {
    type Value = Payload;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Payload, E> {
        Ok(Payload::from(v))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Payload, E> {
        Ok(Payload::from(v))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Payload, A::Error> {
        molt_abi::bytes::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
            .map(Payload::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_the_same_bytes_as_a_vector_of_bytes() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct AsVec(#[serde(with = "molt_abi::bytes")] Vec<u8>);
        for len in [0, 1, 64, 65, 300, 5000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let wire = molt_abi::codec::encode(&AsVec(bytes.clone()));
            assert_eq!(molt_abi::codec::encode(&Payload::from(&bytes[..])), wire);
            let payload: Payload = molt_abi::codec::decode(&wire).expect("decodes");
            assert_eq!(&*payload, &bytes[..], "len {len}");
            assert_eq!(payload.is_inline(), len <= PAYLOAD_INLINE_MAX);
        }
    }

    #[test]
    fn short_payloads_are_held_in_place_and_long_ones_on_the_heap() {
        for len in [0, 1, 63, 64, 65, 1000] {
            let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for payload in [
                Payload::from(bytes.clone()),
                Payload::from(&bytes[..]),
                Payload::from(bytes.clone().into_boxed_slice()),
            ] {
                assert_eq!(&*payload, &bytes[..], "len {len}");
                assert_eq!(payload.is_inline(), len <= PAYLOAD_INLINE_MAX, "len {len}");
                assert_eq!(payload.clone().into_vec(), bytes, "len {len}");
            }
        }
        assert_eq!(Payload::from(vec![1, 2]), Payload::from(&[1u8, 2]));
        assert_ne!(Payload::from(vec![1, 2]), Payload::from(&[1u8, 2, 0]));
        assert!(Payload::empty().is_empty());
    }
}
