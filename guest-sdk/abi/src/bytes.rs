//! For `Vec<u8>` fields: `#[serde(with = "molt_abi::bytes")]` (also
//! `molt_abi::codec::bytes`).
//!
//! serde treats a `Vec<u8>` as a sequence and encodes it one byte at a
//! time; this encodes it as one block. The bytes on the wire are the same
//! (a varint length, then the bytes), so a field can switch either way
//! without breaking peers, and large payloads encode many times faster.

use alloc::vec::Vec;
use core::fmt;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

/// Serialize as one block of bytes.
pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

/// Deserialize a block of bytes.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    deserializer.deserialize_byte_buf(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(b) = seq.next_element()? {
            out.push(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Fast(#[serde(with = "super")] Vec<u8>);

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Plain(Vec<u8>);

    #[test]
    fn same_bytes_on_the_wire() {
        for len in [0usize, 1, 250, 251, 70_000] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let fast = crate::codec::encode(&Fast(data.clone()));
            assert_eq!(
                fast,
                crate::codec::encode(&Plain(data.clone())),
                "len {len}"
            );
            assert_eq!(crate::codec::decode::<Fast>(&fast), Ok(Fast(data.clone())));
            assert_eq!(crate::codec::decode::<Plain>(&fast), Ok(Plain(data)));
        }
    }
}
