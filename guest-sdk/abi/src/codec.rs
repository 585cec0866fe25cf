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

/// Encode a value at the end of `buf` (reused, so a hot path need not
/// allocate).
///
/// # Panics
/// As [`encode`].
pub fn encode_to_vec<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) {
    struct Append<'a>(&'a mut Vec<u8>);
    impl bincode::enc::write::Writer for Append<'_> {
        fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
            append(self.0, bytes);
            Ok(())
        }
    }
    bincode::serde::encode_into_writer(value, Append(buf), CONFIG)
        .expect("encoding to a Vec cannot fail for plain data")
}

/// Append `bytes` to `buf`. bincode writes an integer as a slice of one,
/// two, four or eight bytes (a varint's first byte, then its value): those
/// are copied at a size known here, as plain loads and stores. A copy of a
/// length known only at run time is a `memory.copy` in a wasm32 guest, and
/// wasmtime runs that as a call out of the guest into the host's `memmove`
/// (eight such calls per message of the ring bench's token, each dearer
/// than the copy).
#[inline(always)]
fn append(buf: &mut Vec<u8>, bytes: &[u8]) {
    if let Ok(&[byte]) = <&[u8; 1]>::try_from(bytes) {
        buf.push(byte);
    } else if let Ok(two) = <&[u8; 2]>::try_from(bytes) {
        buf.extend_from_slice(two);
    } else if let Ok(four) = <&[u8; 4]>::try_from(bytes) {
        buf.extend_from_slice(four);
    } else if let Ok(eight) = <&[u8; 8]>::try_from(bytes) {
        buf.extend_from_slice(eight);
    } else {
        buf.extend_from_slice(bytes);
    }
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

pub use crate::bytes;

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

    #[test]
    fn encode_to_vec_appends_the_same_bytes_as_encode() {
        // Integers of every varint width (1, 3, 5, 9 and 17 bytes), a
        // string and bytes of other lengths, after what `buf` held.
        let value = (
            7u8,
            300u16,
            70_000u32,
            u64::MAX,
            u128::MAX,
            -5i64,
            String::from("abc"),
            vec![1u8; 13],
        );
        let mut buf = vec![9u8, 9];
        encode_to_vec(&value, &mut buf);
        assert_eq!(buf[..2], [9, 9]);
        assert_eq!(buf[2..], encode(&value)[..]);
        assert_eq!(
            decode_prefix::<(u8, u16, u32, u64, u128, i64, String, Vec<u8>)>(&buf[2..]),
            Ok((value, buf.len() - 2))
        );
    }
}
