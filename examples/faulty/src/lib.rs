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
    /// Exit `normal` at once.
    Normal,
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
        Fault::Normal => Ok(()),
    }
}

molt_sdk::main!(run);
