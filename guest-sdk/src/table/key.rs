//! Keys as bytes that sort as the keys do: an ordered set keeps its keys
//! in byte order, so [`Key::encode`] must map the key order onto byte
//! order, and a key's leading components onto a byte prefix (for
//! [`super::Table::match_prefix`]).
//!
//! - unsigned integers: big-endian, fixed width;
//! - signed integers: big-endian with the sign bit flipped;
//! - `bool`: one byte;
//! - strings and byte strings: each `0x00` written as `0x00 0xFF`, then a
//!   `0x00` terminator, so no encoding is a prefix of another and
//!   `"a" < "ab"` as bytes too;
//! - tuples: their components' encodings, in order.

/// A table key: encodes to bytes that sort as the keys do.
pub trait Key: Sized {
    /// Append the key's bytes to `out`.
    fn encode_into(&self, out: &mut Vec<u8>);

    /// Read a key from the front of `bytes`; the rest, or `None` if the
    /// bytes are not such a key.
    fn decode_from(bytes: &[u8]) -> Option<(Self, &[u8])>;

    /// The key's bytes.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// The key whose bytes these are (all of them).
    fn decode(bytes: &[u8]) -> Option<Self> {
        match Self::decode_from(bytes)? {
            (key, []) => Some(key),
            _ => None,
        }
    }
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl Key for $t {
            fn encode_into(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
            fn decode_from(bytes: &[u8]) -> Option<(Self, &[u8])> {
                const N: usize = std::mem::size_of::<$t>();
                let head = bytes.get(..N)?;
                Some((<$t>::from_be_bytes(head.try_into().ok()?), &bytes[N..]))
            }
        }
    )*};
}

macro_rules! signed {
    ($($t:ty => $u:ty),*) => {$(
        impl Key for $t {
            fn encode_into(&self, out: &mut Vec<u8>) {
                let flipped = (*self as $u) ^ (1 << (<$u>::BITS - 1));
                flipped.encode_into(out);
            }
            fn decode_from(bytes: &[u8]) -> Option<(Self, &[u8])> {
                let (flipped, rest) = <$u>::decode_from(bytes)?;
                Some(((flipped ^ (1 << (<$u>::BITS - 1))) as $t, rest))
            }
        }
    )*};
}

unsigned!(u8, u16, u32, u64, u128);
signed!(i8 => u8, i16 => u16, i32 => u32, i64 => u64, i128 => u128);

impl Key for bool {
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode_from(bytes: &[u8]) -> Option<(Self, &[u8])> {
        match bytes.split_first()? {
            (0, rest) => Some((false, rest)),
            (1, rest) => Some((true, rest)),
            _ => None,
        }
    }
}

fn escape_into(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.push(0);
}

fn unescape(bytes: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut value = Vec::new();
    let mut i = 0;
    loop {
        match *bytes.get(i)? {
            0 => match bytes.get(i + 1) {
                Some(0xFF) => {
                    value.push(0);
                    i += 2;
                }
                _ => return Some((value, &bytes[i + 1..])),
            },
            b => {
                value.push(b);
                i += 1;
            }
        }
    }
}

impl Key for Vec<u8> {
    fn encode_into(&self, out: &mut Vec<u8>) {
        escape_into(self, out);
    }
    fn decode_from(bytes: &[u8]) -> Option<(Self, &[u8])> {
        unescape(bytes)
    }
}

impl Key for String {
    fn encode_into(&self, out: &mut Vec<u8>) {
        escape_into(self.as_bytes(), out);
    }
    fn decode_from(bytes: &[u8]) -> Option<(Self, &[u8])> {
        let (raw, rest) = unescape(bytes)?;
        Some((String::from_utf8(raw).ok()?, rest))
    }
}

impl Key for crate::Pid {
    fn encode_into(&self, out: &mut Vec<u8>) {
        self.node.encode_into(out);
        self.incarnation.encode_into(out);
        self.serial.encode_into(out);
    }
    fn decode_from(bytes: &[u8]) -> Option<(Self, &[u8])> {
        let (node, rest) = u64::decode_from(bytes)?;
        let (incarnation, rest) = u64::decode_from(rest)?;
        let (serial, rest) = u64::decode_from(rest)?;
        Some((
            crate::Pid {
                node,
                incarnation,
                serial,
            },
            rest,
        ))
    }
}

macro_rules! tuple {
    ($($name:ident),+) => {
        impl<$($name: Key),+> Key for ($($name,)+) {
            #[allow(non_snake_case)]
            fn encode_into(&self, out: &mut Vec<u8>) {
                let ($($name,)+) = self;
                $($name.encode_into(out);)+
            }
            #[allow(non_snake_case)]
            fn decode_from(bytes: &[u8]) -> Option<(Self, &[u8])> {
                let rest = bytes;
                $(let ($name, rest) = $name::decode_from(rest)?;)+
                Some((($($name,)+), rest))
            }
        }
    };
}

tuple!(A, B);
tuple!(A, B, C);
tuple!(A, B, C, D);

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted_like_bytes<K: Key + Ord + Clone + std::fmt::Debug>(mut keys: Vec<K>) {
        let mut by_bytes = keys.clone();
        by_bytes.sort_by_key(|k| k.encode());
        keys.sort();
        assert_eq!(keys, by_bytes);
        for k in &keys {
            assert_eq!(K::decode(&k.encode()).as_ref(), Some(k));
        }
    }

    #[test]
    fn keys_sort_as_their_bytes_and_round_trip() {
        sorted_like_bytes(vec![0u64, 1, 255, 256, u64::MAX, 70_000]);
        sorted_like_bytes(vec![i64::MIN, -300, -1, 0, 1, 300, i64::MAX]);
        sorted_like_bytes(vec![-5i8, 5, i8::MIN, i8::MAX]);
        sorted_like_bytes(
            ["", "a", "ab", "b", "a\0", "a\0b", "\0", "zz"]
                .map(String::from)
                .to_vec(),
        );
        sorted_like_bytes(vec![
            ("a".to_string(), 2u32),
            ("a".to_string(), 10),
            ("ab".to_string(), 1),
            ("".to_string(), 7),
        ]);
        sorted_like_bytes(vec![vec![0u8, 0], vec![0], vec![], vec![1, 0xFF]]);
        sorted_like_bytes(vec![true, false]);
    }

    #[test]
    fn a_leading_component_is_a_byte_prefix() {
        let key = ("alice".to_string(), 42u64).encode();
        assert!(key.starts_with(&"alice".to_string().encode()));
        assert!(!key.starts_with(&"ali".to_string().encode()));
    }

    #[test]
    fn garbage_does_not_decode() {
        assert_eq!(u64::decode(&[1, 2, 3]), None);
        assert_eq!(String::decode(b"abc"), None, "no terminator");
        assert_eq!(bool::decode(&[2]), None);
        assert_eq!(u8::decode(&[1, 2]), None, "trailing bytes");
    }
}
