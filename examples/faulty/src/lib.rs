//! `faulty`: a raw process that misbehaves on purpose, chosen by its init
//! arguments ([`Fault`]), so tests can check that a guest fault ends the
//! process with the right reason and never harms the node.

use std::hint::black_box;

use molt_sdk::Pid;
use serde::{Deserialize, Serialize};

/// What to do wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// Spin for ever without calling the host (tests preemption and kill).
    Loop,
    /// Allocate and touch memory until allocation fails (tests the memory
    /// limit; the allocation failure aborts, which traps).
    MemoryBomb,
    /// Panic with this text (reason `panic: <text> at <file>:<line>`).
    Panic(String),
    /// Divide by a zero the compiler cannot see; Rust checks the division
    /// and panics with `attempt to divide by zero`.
    DivideByZero,
    /// Execute wasm's `unreachable` instruction: a real trap.
    Unreachable,
    /// Call the raw `send` import with a payload pointer far outside linear
    /// memory (reason `bad_pointer: ...`).
    BadPointer,
    /// Send a message of `bytes` zero bytes to `to`, then send `to` the
    /// status as a typed `i32` (0 or a negative `molt_abi::status`) and
    /// exit `normal`.
    SendHuge {
        /// Receiver of the big message and of the status.
        to: Pid,
        /// Payload size.
        bytes: u32,
    },
    /// Count the bytes of memory wasm says start zeroed that are not (a
    /// static buffer, and pages grown past the heap), send `to` the count
    /// as a typed `u64`, then fill them with a pattern and exit `normal`:
    /// a process must never see what one before it left in memory.
    Snoop {
        /// Receiver of the count.
        to: Pid,
    },
    /// Exit `normal` at once.
    Normal,
}

/// Bytes of the static buffer `Snoop` reads and fills.
const SNOOP_BYTES: usize = 32 << 10;
/// Pages `Snoop` grows the memory by, reads and fills.
#[cfg(target_arch = "wasm32")]
const SNOOP_PAGES: usize = 4;

/// Zero in every fresh instance (bss), by wasm's and Rust's rules.
static mut SNOOPED: [u8; SNOOP_BYTES] = [0; SNOOP_BYTES];

/// Count the non-zero bytes of `len` bytes at `at`, and fill them with a
/// pattern.
///
/// # Safety
/// `at..at + len` must lie in this instance's linear memory and nothing
/// else may use it meanwhile.
unsafe fn count_and_fill(at: *mut u8, len: usize) -> u64 {
    let mut dirty = 0;
    for i in 0..len {
        // SAFETY: in bounds, by the caller's promise; volatile so the
        // compiler cannot assume what the memory holds.
        unsafe {
            let p = at.add(i);
            if p.read_volatile() != 0 {
                dirty += 1;
            }
            p.write_volatile(0xA5);
        }
    }
    dirty
}

fn snoop() -> Result<u64, String> {
    // SAFETY: `SNOOPED` is this instance's own static, used by nothing
    // else; a raw pointer, never a reference.
    let statics = unsafe { count_and_fill((&raw mut SNOOPED).cast::<u8>(), SNOOP_BYTES) };
    Ok(statics + snoop_grown()?)
}

/// `Snoop` on `SNOOP_PAGES` pages grown past the heap.
#[cfg(target_arch = "wasm32")]
fn snoop_grown() -> Result<u64, String> {
    let before = core::arch::wasm32::memory_grow(0, SNOOP_PAGES);
    if before == usize::MAX {
        return Err("memory.grow failed".into());
    }
    // SAFETY: the pages just grown belong to no allocation (the allocator
    // grows past them when it needs memory).
    Ok(unsafe { count_and_fill((before * 65536) as *mut u8, SNOOP_PAGES * 65536) })
}

/// Not wasm: no linear memory to grow.
#[cfg(not(target_arch = "wasm32"))]
fn snoop_grown() -> Result<u64, String> {
    Ok(0)
}

fn run(fault: Fault) -> Result<(), String> {
    match fault {
        Fault::Loop => {
            let mut spins = 0u64;
            loop {
                spins = black_box(spins.wrapping_add(1));
            }
        }
        Fault::MemoryBomb => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Touch every page so the memory is really committed.
                hoard.push(vec![black_box(1u8); 1 << 20]);
                black_box(&hoard);
            }
        }
        Fault::Panic(text) => panic!("{text}"),
        Fault::DivideByZero => {
            let zero = black_box(0u32);
            black_box(1u32 / zero);
            Err("division by zero did not fault".into())
        }
        Fault::Unreachable => {
            #[cfg(target_arch = "wasm32")]
            core::arch::wasm32::unreachable();
            #[cfg(not(target_arch = "wasm32"))]
            unreachable!("wasm only")
        }
        Fault::BadPointer => {
            let me = molt_sdk::self_pid().to_bytes();
            // SAFETY: the host checks every pointer/length pair against
            // linear memory before touching it and ends this process with
            // `bad_pointer: ...` when it is out of bounds; nothing in this
            // instance is read or written. `me` is a live 24-byte pid.
            let status = unsafe {
                molt_sdk::sys::raw::send(
                    me.as_ptr() as usize as i32,
                    0,
                    0,
                    0xFFFF_FFF0_u32 as i32,
                    64,
                )
            };
            Err(format!("bad pointer was accepted with status {status}"))
        }
        Fault::SendHuge { to, bytes } => {
            let status = match molt_sdk::send_raw(
                to,
                molt_sdk::abi::tag::DATA,
                None,
                &vec![0u8; bytes as usize],
            ) {
                Ok(()) => 0,
                Err(e) => e.code(),
            };
            molt_sdk::send(to, &status).map_err(|e| format!("reporting status: {e}"))
        }
        Fault::Snoop { to } => {
            let dirty = snoop()?;
            molt_sdk::send(to, &dirty).map_err(|e| format!("reporting the count: {e}"))
        }
        Fault::Normal => Ok(()),
    }
}

molt_sdk::main!(run);
