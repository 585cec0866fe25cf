//! The message codec: serde values to bytes and back, with bincode 2
//! (standard configuration: little-endian, varint integers). This is the one
//! place molt names bincode; the SDK and the host both call it, so swapping
//! the codec is a change to this file alone.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

const CONFIG: bincode::config::Configuration = bincode::config::standard();

/// Bytes that do not decode as the expected type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot decode message: {}", self.0)
    }
}

impl core::error::Error for DecodeError {}

/// Encode a value.
///
/// # Panics
/// If the value's `Serialize` fails (a serde implementation that errors on
/// purpose); plain data never does.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, CONFIG)
        .expect("encoding to a Vec cannot fail for plain data")
}

/// Encode a value into `buf`; the length used, or `None` if it does not
/// fit (nothing useful is left in `buf` then).
pub fn encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut [u8]) -> Option<usize> {
    bincode::serde::encode_into_slice(value, buf, CONFIG).ok()
}

/// Decode a value from the front of `bytes` and say how many bytes it took;
/// the rest is left alone. For state whose later versions append fields: an
/// older version can keep the fields it knows (a downgrade).
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), DecodeError> {
    bincode::serde::decode_from_slice(bytes, CONFIG).map_err(|e| DecodeError(e.to_string()))
}

/// Decode a value; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, CONFIG).map_err(|e| DecodeError(e.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError(alloc::format!(
            "{} trailing bytes",
            bytes.len() - used
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn round_trip_and_trailing_bytes() {
        let v: Vec<String> = vec!["a".into(), "bc".into()];
        let bytes = encode(&v);
        assert_eq!(decode::<Vec<String>>(&bytes), Ok(v));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<Vec<String>>(&longer).is_err());
        assert!(decode::<u64>(&[]).is_err());
        assert_eq!(decode::<()>(&[]), Ok(()));
    }
}

/// For `Vec<u8>` fields: `#[serde(with = "molt_abi::codec::bytes")]`.
///
/// serde treats a `Vec<u8>` as a sequence and encodes it one byte at a
/// time; this encodes it as one block. The bytes on the wire are the same
/// (a varint length, then the bytes), so a field can switch either way
/// without breaking peers, and large payloads encode many times faster.
pub mod bytes {
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
}
