//! The one seam between typed messages and bytes: serde + bincode 2.
//!
//! Everything the SDK encodes (messages, init arguments, behaviour state)
//! goes through [`encode`] and [`decode`]. They are `molt_abi::codec`'s,
//! which the host uses too, so the wire format of typed messages is written
//! in one place for both sides. Decoding rejects trailing bytes.

pub use molt_abi::codec::{
    DecodeError, bytes, decode, decode_prefix, encode, encode_into, encode_to_vec,
};

#[cfg(test)]
mod tests {
    use super::*;
    use molt_abi::{Pid, Ref};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Add(u64),
        Get { from: Pid, reference: Option<Ref> },
        Text(String),
    }

    #[test]
    fn round_trips() {
        let pid = Pid {
            node: 1,
            incarnation: 2,
            serial: 3,
        };
        for msg in [
            Msg::Add(5),
            Msg::Get {
                from: pid,
                reference: Some(Ref {
                    node: 4,
                    incarnation: 5,
                    serial: 6,
                }),
            },
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
        let err = decode::<u64>(&bytes).unwrap_err();
        assert!(err.to_string().contains("1 trailing bytes"), "{err}");
    }

    #[test]
    fn encodes_into_a_buffer_when_it_fits() {
        let mut buf = [0u8; 8];
        let used = encode_into(&(7u64, 9u64), &mut buf).unwrap();
        assert_eq!(&buf[..used], &encode(&(7u64, 9u64))[..]);
        assert_eq!(encode_into("a string longer than eight", &mut buf), None);
    }

    #[test]
    fn decodes_a_prefix() {
        let mut bytes = encode(&(7u64, 9u64));
        bytes.extend_from_slice(&encode("more"));
        let (first, used) = decode_prefix::<u64>(&bytes).unwrap();
        assert_eq!(first, 7);
        assert_eq!(used, 1);
        assert!(decode_prefix::<String>(&[]).is_err());
    }

    #[test]
    fn rejects_garbage() {
        let err: DecodeError = decode::<Msg>(&[9]).unwrap_err();
        assert!(!err.to_string().is_empty());
        assert!(decode::<String>(&[]).is_err());
    }

    #[test]
    fn unsized_values_encode() {
        assert_eq!(encode("ab"), encode(&String::from("ab")));
        assert_eq!(encode(&[1u8, 2][..]), encode(&vec![1u8, 2]));
    }
}
