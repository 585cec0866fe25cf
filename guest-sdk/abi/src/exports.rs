//! Functions and memory a guest module exports for the host to call.
//!
//! A module is a **behaviour** if it exports [`HANDLE`] (it must then also
//! export [`INIT`]), else a **raw** process if it exports [`MAIN`]. Every
//! module exports its linear memory as [`MEMORY`].

use crate::imports::{Import, ValType};

use ValType::{I32, I64};

/// The guest's linear memory, exported under this name.
pub const MEMORY: &str = "memory";

/// `molt_init(args_len)`: behaviour start. The init arguments are the
/// current message (read them with `msg_read`). To refuse to start, call
/// `exit_self` with a reason.
pub const INIT: Import = Import {
    name: "molt_init",
    params: &[I32],
    results: &[],
};

/// `molt_handle(tag, len)`: behaviour handler, called once per message,
/// which is the current message. To stop, call `exit_self`.
pub const HANDLE: Import = Import {
    name: "molt_handle",
    params: &[I32, I32],
    results: &[],
};

/// `molt_main(args_len)`: raw process entry. The init arguments are the
/// current message. Returning ends the process with reason `normal`.
pub const MAIN: Import = Import {
    name: "molt_main",
    params: &[I32],
    results: &[],
};

/// `molt_state_save() -> packed`: behaviour state, for migration to a new
/// version. Returns `(len << 32) | ptr` of the encoded state in guest
/// memory, valid until the next call into the guest. Optional.
pub const STATE_SAVE: Import = Import {
    name: "molt_state_save",
    params: &[],
    results: &[I64],
};

/// `molt_code_change(input_len) -> status`: called on a fresh instance of
/// the new version instead of `molt_init`. The input is the current
/// message: `from_version_len: u32 LE`, the old version string (UTF-8), then
/// the state bytes `molt_state_save` returned. Returns 0 on success; to
/// refuse (the process then stays on the old version), `(len << 32) | ptr`
/// of a UTF-8 reason in guest memory, `len > 0`. A trap or `exit_self`
/// refuses too, with its reason. Optional.
pub const CODE_CHANGE: Import = Import {
    name: "molt_code_change",
    params: &[I32],
    results: &[I64],
};

/// `molt_state_restore(state_len) -> status`: called on a fresh instance
/// of the same version instead of `molt_init` when a hibernated behaviour
/// wakes (see the node's `hibernate_after`). The input is the current
/// message: the state bytes `molt_state_save` returned when it hibernated.
/// Returns 0 on success, or `(len << 32) | ptr` of a UTF-8 reason, which
/// ends the process (`hibernation: <reason>`). A behaviour hibernates only
/// if it exports this and `molt_state_save`. Optional.
pub const STATE_RESTORE: Import = Import {
    name: "molt_state_restore",
    params: &[I32],
    results: &[I64],
};

/// Every function export the host knows.
pub const ALL: &[Import] = &[INIT, HANDLE, MAIN, STATE_SAVE, CODE_CHANGE, STATE_RESTORE];
