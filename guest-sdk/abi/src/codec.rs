//! The message codec: serde values to bytes and back in bincode 2's
//! format (standard configuration: little-endian, varint integers),
//! encoded by bincode and decoded in place by [`de`] (see there why not by
//! bincode). This is the one place molt names bincode; the SDK and the
//! host both call it, so swapping the codec is a change to this module
//! alone.

mod de;

use alloc::string::String;
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
    bincode::serde::encode_to_vec(value, CONFIG).unwrap_or_else(|e| encode_failed(e))
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
        // Inline into bincode's encoders, where each piece's length is a
        // constant: the size dispatch in `append` then folds away.
        #[inline(always)]
        fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
            append(self.0, bytes);
            Ok(())
        }
    }
    bincode::serde::encode_into_writer(value, Append(buf), CONFIG)
        .unwrap_or_else(|e| encode_failed(e))
}

/// Panic for an encoding that failed: a `Serialize` that errs on purpose
/// (plain data never does). Its own message says why; the other errors
/// (bincode's `Debug`, which is also its `Display`) are named, not
/// formatted, which keeps every guest free of the formatting code their
/// `Debug` drags in (string escaping and its Unicode tables).
#[cold]
#[inline(never)]
fn encode_failed(error: bincode::error::EncodeError) -> ! {
    use bincode::error::EncodeError as E;
    match error {
        E::OtherString(why) => panic!("encoding failed: {why}"),
        E::Other(why) => panic!("encoding failed: {why}"),
        E::Serde(bincode::serde::EncodeError::SequenceMustHaveLength) => {
            panic!("encoding failed: a sequence without a length")
        }
        _ => panic!("encoding failed"),
    }
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
    let mut decoder = de::Decoder::new(bytes);
    let value = T::deserialize(&mut decoder).map_err(|e| DecodeError(e.into_message()))?;
    Ok((value, bytes.len() - decoder.left()))
}

/// Decode a value; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, used) = decode_prefix(bytes)?;
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
    use alloc::boxed::Box;
    use alloc::collections::BTreeMap;
    use alloc::string::ToString;
    use alloc::vec;
    use serde::{Deserialize, Serialize};

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

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Unit,
        Newtype(u32),
        Tuple(Option<char>, bool, i16),
        Struct { x: i64, name: String, tags: Vec<u8> },
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Unit;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Wrapper(u64);

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Everything {
        a: u8,
        b: i8,
        c: u16,
        d: i16,
        e: u32,
        f: i32,
        g: u64,
        h: i64,
        i: u128,
        j: i128,
        k: usize,
        l: isize,
        m: f32,
        n: f64,
        o: char,
        p: bool,
        q: String,
        r: Option<Box<Everything>>,
        s: Vec<Shape>,
        t: BTreeMap<u16, String>,
        u: (u8, char, Unit, Wrapper),
    }

    fn everything(depth: u32) -> Everything {
        Everything {
            a: 255,
            b: -128,
            c: 65_535,
            d: -32_768,
            e: 4_000_000_000,
            f: i32::MIN,
            g: u64::MAX,
            h: i64::MIN,
            i: u128::MAX,
            j: i128::MIN,
            k: 251,
            l: -251,
            m: 1.5,
            n: -0.1,
            o: '€',
            p: true,
            q: String::from("añ€😀"),
            r: (depth > 0).then(|| Box::new(everything(depth - 1))),
            s: vec![
                Shape::Unit,
                Shape::Newtype(70_000),
                Shape::Tuple(Some('😀'), false, -300),
                Shape::Tuple(None, true, 0),
                Shape::Struct {
                    x: -5,
                    name: String::from("x"),
                    tags: vec![0, 250, 251, 252, 253, 254, 255],
                },
            ],
            t: [(1, String::from("one")), (300, String::new())]
                .into_iter()
                .collect(),
            u: (0, 'a', Unit, Wrapper(1 << 40)),
        }
    }

    #[test]
    fn decodes_what_bincode_encodes() {
        let value = everything(2);
        let bytes = encode(&value);
        assert_eq!(decode::<Everything>(&bytes), Ok(value.clone()));
        let (by_bincode, used): (Everything, usize) =
            bincode::serde::decode_from_slice(&bytes, CONFIG).expect("bincode decodes it");
        assert_eq!((by_bincode, used), (value, bytes.len()));
        for cut in 0..bytes.len() {
            assert!(
                decode::<Everything>(&bytes[..cut]).is_err(),
                "{cut} of {} bytes decoded",
                bytes.len()
            );
        }
    }

    /// A small deterministic generator (xorshift) for the bytes below.
    struct Bytes(u64);

    impl Bytes {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// Bytes that often hit the format's edges: small values, varint
        /// markers, UTF-8 lead bytes.
        fn input(&mut self) -> Vec<u8> {
            let len = (self.next() % 24) as usize;
            (0..len)
                .map(|_| match self.next() % 8 {
                    0..=2 => (self.next() % 4) as u8,
                    3 => 250 + (self.next() % 6) as u8,
                    4 => 0xc0 + (self.next() % 0x40) as u8,
                    _ => self.next() as u8,
                })
                .collect()
        }
    }

    /// Decoded by bincode and by this codec: both fail, or both give the
    /// same value (compared by its encoding, so NaNs compare) from the
    /// same number of bytes. Where this codec finds the input too short,
    /// bincode is not asked: it allocates a string's or a byte vector's
    /// length before it reads the bytes, so a garbage length aborts it.
    fn same_as_bincode<T: DeserializeOwned + Serialize>(input: &[u8]) {
        let ours = decode_prefix::<T>(input);
        if let Err(e) = &ours
            && e.0.starts_with("unexpected end of input")
        {
            return;
        }
        let theirs = bincode::serde::decode_from_slice::<T, _>(input, CONFIG);
        match (ours, theirs) {
            (Ok((a, used_a)), Ok((b, used_b))) => {
                assert_eq!(encode(&a), encode(&b), "{input:?}");
                assert_eq!(used_a, used_b, "{input:?}");
            }
            (Err(_), Err(_)) => {}
            (ours, theirs) => panic!(
                "{input:?}: ours {:?}, bincode's {:?}",
                ours.map(|(v, n)| (encode(&v), n)),
                theirs.map(|(v, n)| (encode(&v), n))
            ),
        }
    }

    #[test]
    fn accepts_and_refuses_the_same_bytes_as_bincode() {
        let mut bytes = Bytes(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let input = bytes.input();
            same_as_bincode::<u16>(&input);
            same_as_bincode::<i32>(&input);
            same_as_bincode::<u64>(&input);
            same_as_bincode::<i64>(&input);
            same_as_bincode::<u128>(&input);
            same_as_bincode::<i128>(&input);
            same_as_bincode::<usize>(&input);
            same_as_bincode::<f64>(&input);
            same_as_bincode::<char>(&input);
            same_as_bincode::<bool>(&input);
            same_as_bincode::<Option<u32>>(&input);
            same_as_bincode::<String>(&input);
            same_as_bincode::<Vec<u16>>(&input);
            same_as_bincode::<(u8, i16, char)>(&input);
            same_as_bincode::<Shape>(&input);
            same_as_bincode::<Vec<Shape>>(&input);
            same_as_bincode::<BTreeMap<u16, String>>(&input);
        }
    }

    #[test]
    fn a_length_beyond_the_input_is_an_error_not_an_allocation() {
        // A string of 2^64 - 1 bytes, claimed by eight bytes of input.
        let mut input = vec![253];
        input.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode::<String>(&input).is_err());
        assert!(decode::<Vec<u8>>(&input).is_err());
        assert!(decode::<Vec<Shape>>(&input).is_err());
    }

    #[test]
    fn a_mismatch_names_what_was_found_and_what_was_expected() {
        // Variant 7 of an enum of four.
        let err = decode::<Shape>(&[7]).expect_err("no such variant");
        assert!(err.to_string().contains("integer `7`"), "{err}");
        assert!(
            err.to_string().contains("variant index 0 <= i < 4"),
            "{err}"
        );
        let err = decode::<bool>(&[2]).expect_err("not a bool");
        assert!(err.to_string().contains("boolean value 2"), "{err}");
        let err = decode::<u16>(&[252, 0, 0, 1, 0]).expect_err("too wide");
        assert!(err.to_string().contains("32 bits"), "{err}");
        let err = decode::<String>(&[2, 0xff, 0xfe]).expect_err("not UTF-8");
        assert!(err.to_string().contains("UTF-8"), "{err}");
        let err = decode::<u64>(&[253, 1]).expect_err("short");
        assert!(err.to_string().contains("7 more bytes"), "{err}");
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
