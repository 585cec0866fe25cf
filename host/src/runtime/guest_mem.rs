//! Reading and writing guest memory for host functions. Every pointer and
//! length a guest passes is checked here; a bad one becomes a
//! [`GuestFault`], which ends the calling process, never the node.
//!
//! This module uses no `unsafe`: wasmtime's `Memory::data` gives a slice
//! and every access goes through `get`.

use std::fmt;

use molt_abi::{PID_BYTES, Pid, REF_BYTES, Ref};

/// A guest passed a pointer or length outside its memory.
#[derive(Debug)]
pub(crate) struct GuestFault {
    pub what: &'static str,
    pub ptr: u32,
    pub len: u32,
    pub memory_bytes: usize,
}

impl fmt::Display for GuestFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{} at {:#x}+{} is outside linear memory ({} bytes)",
            molt_abi::reason::BAD_POINTER_PREFIX,
            self.what,
            self.ptr,
            self.len,
            self.memory_bytes
        )
    }
}

impl std::error::Error for GuestFault {}

// Guests pass pointers and lengths as i32; they are unsigned offsets.
fn range(
    mem_len: usize,
    ptr: i32,
    len: i32,
    what: &'static str,
) -> Result<std::ops::Range<usize>, GuestFault> {
    let (p, l) = (ptr as u32, len as u32);
    let start = p as usize;
    match start.checked_add(l as usize) {
        Some(end) if end <= mem_len => Ok(start..end),
        _ => Err(GuestFault {
            what,
            ptr: p,
            len: l,
            memory_bytes: mem_len,
        }),
    }
}

pub(crate) fn bytes<'m>(
    mem: &'m [u8],
    ptr: i32,
    len: i32,
    what: &'static str,
) -> Result<&'m [u8], GuestFault> {
    Ok(&mem[range(mem.len(), ptr, len, what)?])
}

pub(crate) fn bytes_mut<'m>(
    mem: &'m mut [u8],
    ptr: i32,
    len: i32,
    what: &'static str,
) -> Result<&'m mut [u8], GuestFault> {
    let r = range(mem.len(), ptr, len, what)?;
    Ok(&mut mem[r])
}

pub(crate) fn write(
    mem: &mut [u8],
    ptr: i32,
    data: &[u8],
    what: &'static str,
) -> Result<(), GuestFault> {
    bytes_mut(mem, ptr, data.len() as i32, what)?.copy_from_slice(data);
    Ok(())
}

pub(crate) fn pid(mem: &[u8], ptr: i32, what: &'static str) -> Result<Pid, GuestFault> {
    let b = bytes(mem, ptr, PID_BYTES as i32, what)?;
    Ok(Pid::from_slice(b).expect("24 bytes"))
}

pub(crate) fn reference(mem: &[u8], ptr: i32, what: &'static str) -> Result<Ref, GuestFault> {
    let b = bytes(mem, ptr, REF_BYTES as i32, what)?;
    Ok(Ref::from_slice(b).expect("24 bytes"))
}

/// A reference that may be absent: pointer 0 means none.
pub(crate) fn optional_reference(
    mem: &[u8],
    ptr: i32,
    what: &'static str,
) -> Result<Ref, GuestFault> {
    if ptr == 0 {
        Ok(Ref::NONE)
    } else {
        reference(mem, ptr, what)
    }
}

/// UTF-8 text (names, reasons); `None` if not UTF-8.
pub(crate) fn text<'m>(
    mem: &'m [u8],
    ptr: i32,
    len: i32,
    what: &'static str,
) -> Result<Option<&'m str>, GuestFault> {
    Ok(std::str::from_utf8(bytes(mem, ptr, len, what)?).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_bounds_and_overflow() {
        let mem = [7u8; 64];
        assert_eq!(bytes(&mem, 60, 4, "x").unwrap(), &[7; 4]);
        assert!(bytes(&mem, 61, 4, "x").is_err());
        assert!(bytes(&mem, -16, 64, "x").is_err());
        assert!(bytes(&mem, 0, -1, "x").is_err());
        let fault = bytes(&mem, 100, 8, "send payload").unwrap_err();
        assert_eq!(
            fault.to_string(),
            "bad_pointer: send payload at 0x64+8 is outside linear memory (64 bytes)"
        );
    }
}
