//! The one seam between typed messages and bytes: serde + bincode 2.
//!
//! Everything the SDK encodes (messages, init arguments, behaviour state)
//! goes through [`encode`] and [`decode`], so changing the wire format of
//! typed messages means changing this file only.

use std::fmt;

use serde::{Serialize, de::DeserializeOwned};

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encode a value as message bytes.
///
/// # Panics
///
/// If the value's `Serialize` implementation fails, which the types serde
/// derives for never do (a hand-written one that serializes a sequence of
/// unknown length can).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    match bincode::serde::encode_to_vec(value, config()) {
        Ok(bytes) => bytes,
        Err(e) => panic!("molt_sdk::codec::encode: {e}"),
    }
}

/// Decode message bytes as a `T`. All of `bytes` must be used: trailing
/// bytes mean the sender encoded some other type.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            extra: bytes.len() - used,
        });
    }
    Ok(value)
}

/// Why bytes could not be decoded as the expected type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes are not an encoding of the type (too short, a bad enum
    /// variant, invalid UTF-8, ...). Carries bincode's description.
    Malformed(String),
    /// The bytes start with a valid encoding but `extra` bytes follow it.
    TrailingBytes {
        /// How many bytes were left over.
        extra: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Malformed(why) => write!(f, "malformed message: {why}"),
            DecodeError::TrailingBytes { extra } => {
                write!(f, "malformed message: {extra} trailing bytes")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

#[cfg(test)]
mod tests {
    use super::*;
    use molt_abi::{Pid, Ref};
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Add(u64),
        Get { from: Pid, reference: Option<Ref> },
        Text(String),
    }

    #[test]
    fn round_trips() {
        let pid = Pid { node: 1, incarnation: 2, serial: 3 };
        for msg in [
            Msg::Add(5),
            Msg::Get { from: pid, reference: Some(Ref { node: 4, incarnation: 5, serial: 6 }) },
            Msg::Text("héllo".into()),
        ] {
            assert_eq!(decode::<Msg>(&encode(&msg)), Ok(msg));
        }
    }

    #[test]
    fn unit_is_zero_bytes() {
        assert!(encode(&()).is_empty());
        assert_eq!(decode::<()>(&[]), Ok(()));
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut bytes = encode(&7u64);
        bytes.push(0);
        assert_eq!(decode::<u64>(&bytes), Err(DecodeError::TrailingBytes { extra: 1 }));
    }

    #[test]
    fn rejects_garbage() {
        let err = decode::<Msg>(&[9]).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed(_)), "{err:?}");
        assert!(err.to_string().starts_with("malformed message"));
        assert!(decode::<String>(&[]).is_err());
    }

    #[test]
    fn unsized_values_encode() {
        assert_eq!(encode("ab"), encode(&String::from("ab")));
        assert_eq!(encode(&[1u8, 2][..]), encode(&vec![1u8, 2]));
    }
}
