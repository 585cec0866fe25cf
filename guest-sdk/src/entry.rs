//! Entry glue shared by the export macros: the panic hook, raw process
//! start-up, and the [`behaviour!`](crate::behaviour!) and [`main!`](crate::main!) macros.

use std::fmt::Display;
use std::sync::Once;

use serde::de::DeserializeOwned;

use crate::codec;
use crate::process::exit_self;
use crate::receive::read_current;

/// Make a panic end the process with reason `panic: <message> at <file>:<line>`.
/// Installed once, by the exported entry points.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info
                .payload_as_str()
                .unwrap_or("(non-string panic payload)");
            let reason = match info.location() {
                Some(at) => format!(
                    "{}{message} at {}:{}",
                    molt_abi::reason::PANIC_PREFIX,
                    at.file(),
                    at.line()
                ),
                None => format!("{}{message}", molt_abi::reason::PANIC_PREFIX),
            };
            exit_self(&reason)
        }));
    });
}

/// What a raw process's main function may return.
pub trait MainResult {
    /// The exit reason: `None` for `normal` (return from `molt_main`).
    fn into_exit_reason(self) -> Option<String>;
}

impl MainResult for () {
    fn into_exit_reason(self) -> Option<String> {
        None
    }
}

impl<E: Display> MainResult for Result<(), E> {
    fn into_exit_reason(self) -> Option<String> {
        self.err().map(|e| e.to_string())
    }
}

/// `molt_main(args_len)`: decode the init arguments and run `main`.
#[doc(hidden)]
pub fn run_main<A: DeserializeOwned, R: MainResult>(args_len: i32, main: impl FnOnce(A) -> R) {
    install_panic_hook();
    let bytes = read_current(args_len as u32 as usize);
    let args = match codec::decode::<A>(&bytes) {
        Ok(args) => args,
        Err(e) => exit_self(&format!("badarg: {e}")),
    };
    if let Some(reason) = main(args).into_exit_reason() {
        exit_self(&reason);
    }
}

/// Export a [`Behaviour`](crate::Behaviour) as this module's entry points
/// (`molt_init`, `molt_handle`, `molt_state_save`, `molt_code_change`,
/// `molt_state_restore`) and
/// emit the `molt.module` section. Use once per crate:
/// `molt_sdk::behaviour!(Counter);`, or
/// `molt_sdk::behaviour!(CounterV2, name = "counter");` to name the module
/// other than the package (a new version of `counter` built from a package
/// of its own; the version is still the package's).
#[macro_export]
macro_rules! behaviour {
    ($ty:ty) => {
        $crate::behaviour!($ty, name = ::core::env!("CARGO_PKG_NAME"));
    };
    ($ty:ty, name = $name:expr) => {
        $crate::module_section!(name = $name);

        // Exports exist only in the wasm build: natively a guest crate is a
        // library of its message types (tests and tools link several).
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static MOLT_STATE: ::core::cell::RefCell<::core::option::Option<$ty>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            // SAFETY: a unique, ABI-defined export name; the signature is
            // the one molt_abi::exports::INIT gives.
            #[unsafe(no_mangle)]
            pub extern "C" fn molt_init(args_len: i32) {
                $crate::__private::behaviour::init::<$ty>(&MOLT_STATE, args_len)
            }

            // SAFETY: as above, molt_abi::exports::HANDLE.
            #[unsafe(no_mangle)]
            pub extern "C" fn molt_handle(tag: i32, len: i32) {
                $crate::__private::behaviour::handle::<$ty>(&MOLT_STATE, tag, len)
            }

            // SAFETY: as above, molt_abi::exports::STATE_SAVE.
            #[unsafe(no_mangle)]
            pub extern "C" fn molt_state_save() -> i64 {
                $crate::__private::behaviour::state_save::<$ty>(&MOLT_STATE)
            }

            // SAFETY: as above, molt_abi::exports::CODE_CHANGE.
            #[unsafe(no_mangle)]
            pub extern "C" fn molt_code_change(input_len: i32) -> i64 {
                $crate::__private::behaviour::code_change::<$ty>(&MOLT_STATE, input_len)
            }

            // SAFETY: as above, molt_abi::exports::STATE_RESTORE.
            #[unsafe(no_mangle)]
            pub extern "C" fn molt_state_restore(state_len: i32) -> i64 {
                $crate::__private::behaviour::state_restore::<$ty>(&MOLT_STATE, state_len)
            }
        };
    };
}

/// Export a function as a raw process's entry point (`molt_main`) and emit
/// the `molt.module` section. The function takes the init arguments, of any
/// `DeserializeOwned` type (`()` when spawned with empty arguments;
/// `Vec<String>` when started by `molt run`, which passes its command-line
/// arguments), and
/// returns `()` or `Result<(), E: Display>` (an `Err` becomes the exit
/// reason). Arguments that do not decode end the process with reason
/// `badarg: <why>`. Use once per crate: `molt_sdk::main!(run);`
#[macro_export]
macro_rules! main {
    ($main:path) => {
        $crate::main!($main, name = ::core::env!("CARGO_PKG_NAME"));
    };
    ($main:path, name = $name:expr) => {
        $crate::module_section!(name = $name);

        // Exports exist only in the wasm build (see `behaviour!`).
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = $main;
        };
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            // SAFETY: a unique, ABI-defined export name; the signature is
            // the one molt_abi::exports::MAIN gives.
            #[unsafe(no_mangle)]
            pub extern "C" fn molt_main(args_len: i32) {
                $crate::__private::run_main(args_len, $main)
            }
        };
    };
}
