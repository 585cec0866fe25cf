//! The decoding half of the codec: a serde `Deserializer` over a byte
//! slice in bincode 2's standard format (the format `encode` writes:
//! little-endian, variable-length integers), read in place.
//!
//! bincode's own deserializer reports a type mismatch through serde's
//! default `Error::invalid_type` and `invalid_value`, which format the
//! value found (serde's `Unexpected`) whatever it is: every guest that
//! decodes an enum then carries the float formatter and the Unicode tables
//! of `str`'s `Debug`, 3.5–5 KB of read-only data that every instance
//! copies into its linear memory at instantiation and that its pool slot
//! zeroes again at its end, a page per process. These errors name the kind
//! of value found, not the value.
//!
//! The format, as bincode 2.0 writes it (`standard()`): `u8`, `i8` and
//! `bool` one byte; wider integers a varint (below 251 one byte, else a
//! marker 251, 252, 253 or 254 and then 2, 4, 8 or 16 bytes), signed ones
//! zigzagged first; floats their bytes; a `char` its UTF-8; strings, byte
//! strings, sequences and maps a varint length first; an `Option` a byte 0
//! or 1; an enum variant its index as a varint; structs and tuples their
//! fields in order. A test holds it to bincode's: the same values from the
//! same bytes, and an error wherever bincode gives one.

use alloc::string::{String, ToString};
use core::fmt;

use serde::de::{
    self, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, Unexpected,
    VariantAccess, Visitor,
};

/// Why bytes did not decode.
#[derive(Debug)]
pub(super) struct Error(String);

// The errors are made out of line: formatting one inline would give every
// small read on the hot path the stack frame of a `format!` (in a guest, a
// shadow-stack frame set up and torn down in linear memory per call).
impl Error {
    #[cold]
    #[inline(never)]
    fn end(needed: usize) -> Error {
        Error(alloc::format!(
            "unexpected end of input: {needed} more bytes needed"
        ))
    }

    #[cold]
    #[inline(never)]
    fn msg(msg: &str) -> Error {
        Error(msg.to_string())
    }

    #[cold]
    #[inline(never)]
    fn too_wide(width: u32, bits: u32) -> Error {
        Error(alloc::format!(
            "invalid integer: {width} bits where at most {bits} fit"
        ))
    }

    #[cold]
    #[inline(never)]
    fn number(what: &str, n: u64) -> Error {
        Error(alloc::format!("{what} {n}"))
    }

    pub(super) fn into_message(self) -> String {
        self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl core::error::Error for Error {}

impl de::Error for Error {
    #[cold]
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }

    #[cold]
    fn invalid_type(found: Unexpected, expected: &dyn de::Expected) -> Self {
        Error(alloc::format!(
            "invalid type: {}, expected {expected}",
            Kind(found)
        ))
    }

    #[cold]
    fn invalid_value(found: Unexpected, expected: &dyn de::Expected) -> Self {
        Error(alloc::format!(
            "invalid value: {}, expected {expected}",
            Kind(found)
        ))
    }
}

/// What was found, named without formatting a float or escaping a string.
struct Kind<'a>(Unexpected<'a>);

impl fmt::Display for Kind<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Unexpected::Bool(b) => write!(f, "boolean `{b}`"),
            Unexpected::Unsigned(n) => write!(f, "integer `{n}`"),
            Unexpected::Signed(n) => write!(f, "integer `{n}`"),
            Unexpected::Float(_) => f.write_str("a floating point number"),
            Unexpected::Char(_) => f.write_str("a character"),
            Unexpected::Str(_) => f.write_str("a string"),
            Unexpected::Bytes(_) => f.write_str("a byte array"),
            Unexpected::Unit => f.write_str("unit value"),
            Unexpected::Option => f.write_str("Option value"),
            Unexpected::NewtypeStruct => f.write_str("newtype struct"),
            Unexpected::Seq => f.write_str("sequence"),
            Unexpected::Map => f.write_str("map"),
            Unexpected::Enum => f.write_str("enum"),
            Unexpected::UnitVariant => f.write_str("unit variant"),
            Unexpected::NewtypeVariant => f.write_str("newtype variant"),
            Unexpected::TupleVariant => f.write_str("tuple variant"),
            Unexpected::StructVariant => f.write_str("struct variant"),
            Unexpected::Other(other) => f.write_str(other),
        }
    }
}

type Result<T> = core::result::Result<T, Error>;

/// Varint markers: the integer follows in 2, 4, 8 or 16 bytes.
const U16_MARK: u8 = 251;
const U32_MARK: u8 = 252;
const U64_MARK: u8 = 253;
const U128_MARK: u8 = 254;

/// Reads values from the front of `input`, which holds what is left.
pub(super) struct Decoder<'de> {
    input: &'de [u8],
}

impl<'de> Decoder<'de> {
    pub(super) fn new(input: &'de [u8]) -> Self {
        Decoder { input }
    }

    /// Bytes not yet read.
    pub(super) fn left(&self) -> usize {
        self.input.len()
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        match self.input.split_at_checked(n) {
            Some((taken, rest)) => {
                self.input = rest;
                Ok(taken)
            }
            None => Err(Error::end(n - self.input.len())),
        }
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        match self.input.split_first_chunk::<N>() {
            Some((taken, rest)) => {
                self.input = rest;
                Ok(*taken)
            }
            None => Err(Error::end(N - self.input.len())),
        }
    }

    #[inline]
    fn byte(&mut self) -> Result<u8> {
        match self.input.split_first() {
            Some((&byte, rest)) => {
                self.input = rest;
                Ok(byte)
            }
            None => Err(Error::end(1)),
        }
    }

    /// A varint of at most `bits` (16, 32 or 64): one byte below 251 (the
    /// common case, inline at every call), else [`Decoder::varint_wide`].
    #[inline(always)]
    fn varint(&mut self, bits: u32) -> Result<u64> {
        match self.input.split_first() {
            Some((&first, rest)) if first < U16_MARK => {
                self.input = rest;
                Ok(u64::from(first))
            }
            _ => self.varint_wide(bits),
        }
    }

    #[inline(never)]
    fn varint_wide(&mut self, bits: u32) -> Result<u64> {
        let first = self.byte()?;
        let width = match first {
            0..U16_MARK => return Ok(u64::from(first)),
            U16_MARK => 16,
            U32_MARK => 32,
            U64_MARK => 64,
            U128_MARK => 128,
            _ => return Err(Error::msg("invalid integer: a reserved varint marker")),
        };
        if width > bits {
            return Err(Error::too_wide(width, bits));
        }
        Ok(match width {
            16 => u64::from(u16::from_le_bytes(self.array()?)),
            32 => u64::from(u32::from_le_bytes(self.array()?)),
            _ => u64::from_le_bytes(self.array()?),
        })
    }

    fn varint_u128(&mut self) -> Result<u128> {
        match self.input.first() {
            Some(&U128_MARK) => {
                self.input = &self.input[1..];
                Ok(u128::from_le_bytes(self.array()?))
            }
            _ => self.varint(64).map(u128::from),
        }
    }

    /// A length: a varint that must fit a `usize`.
    #[inline]
    fn len(&mut self) -> Result<usize> {
        let len = self.varint(64)?;
        usize::try_from(len).map_err(|_| Error::number("length out of range:", len))
    }

    fn str(&mut self) -> Result<&'de str> {
        let len = self.len()?;
        core::str::from_utf8(self.take(len)?).map_err(|_| Error::msg("invalid UTF-8 in a string"))
    }

    fn char(&mut self) -> Result<char> {
        let first = self.byte()?;
        let width = match first {
            0x00..=0x7f => return Ok(char::from(first)),
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return Err(Error::msg("invalid UTF-8 in a char")),
        };
        let mut bytes = [first, 0, 0, 0];
        bytes[1..width].copy_from_slice(self.take(width - 1)?);
        core::str::from_utf8(&bytes[..width])
            .ok()
            .and_then(|s| s.chars().next())
            .ok_or_else(|| Error::msg("invalid UTF-8 in a char"))
    }
}

/// Zigzag: 0, -1, 1, -2 … as 0, 1, 2, 3 ….
fn unzigzag(n: u64) -> i64 {
    (n >> 1) as i64 ^ -((n & 1) as i64)
}

fn unzigzag128(n: u128) -> i128 {
    (n >> 1) as i128 ^ -((n & 1) as i128)
}

#[cold]
#[inline(never)]
fn not_supported<T>(what: &str) -> Result<T> {
    Err(Error(alloc::format!(
        "{what} is not supported: the codec is not self-describing"
    )))
}

impl<'de> de::Deserializer<'de> for &mut Decoder<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        not_supported("deserialize_any")
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.byte()? {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            other => Err(Error::number("invalid boolean value", u64::from(other))),
        }
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i8(self.byte()? as i8)
    }

    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i16(unzigzag(self.varint(16)?) as i16)
    }

    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i32(unzigzag(self.varint(32)?) as i32)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i64(unzigzag(self.varint(64)?))
    }

    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i128(unzigzag128(self.varint_u128()?))
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u8(self.byte()?)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u16(self.varint(16)? as u16)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u32(self.varint(32)? as u32)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u64(self.varint(64)?)
    }

    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u128(self.varint_u128()?)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_f32(f32::from_le_bytes(self.array()?))
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_f64(f64::from_le_bytes(self.array()?))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_char(self.char()?)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_str(self.str()?)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_str(self.str()?)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.len()?;
        visitor.visit_borrowed_bytes(self.take(len)?)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.byte()? {
            0 => visitor.visit_none(),
            1 => visitor.visit_some(self),
            other => Err(Error::number("invalid Option tag", u64::from(other))),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let left = self.len()?;
        visitor.visit_seq(Counted { de: self, left })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        visitor.visit_seq(Counted {
            de: self,
            left: len,
        })
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let left = self.len()?;
        visitor.visit_map(Counted { de: self, left })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_tuple(fields.len(), visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_enum(self)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        not_supported("deserialize_identifier")
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        not_supported("deserialize_ignored_any")
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The elements of a sequence, tuple or map: `left` more to read.
struct Counted<'a, 'de> {
    de: &'a mut Decoder<'de>,
    left: usize,
}

impl<'de> Counted<'_, 'de> {
    /// The next element (or map key), if any are left.
    fn next<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }
}

impl<'de> SeqAccess<'de> for Counted<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        self.next(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> MapAccess<'de> for Counted<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        self.next(seed)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> EnumAccess<'de> for &mut Decoder<'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        let index = self.varint(32)? as u32;
        let value = seed.deserialize(IntoDeserializer::<Error>::into_deserializer(index))?;
        Ok((value, self))
    }
}

impl<'de> VariantAccess<'de> for &mut Decoder<'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<()> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        de::Deserializer::deserialize_tuple(self, len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        de::Deserializer::deserialize_tuple(self, fields.len(), visitor)
    }
}
