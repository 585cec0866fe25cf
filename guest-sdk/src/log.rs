//! Logging through the host's logger: [`error!`](crate::error!),
//! [`warn!`](crate::warn!), [`info!`](crate::info!), [`debug!`](crate::debug!),
//! [`trace!`](crate::trace!). The host tags each line with the caller's pid
//! and module.

use std::fmt;

pub use molt_abi::log_level as level;

use crate::sys;

/// Log one line at a `molt_abi::log_level`.
pub fn log(level: i32, message: &str) {
    sys::log(level, message.as_bytes());
}

/// Log formatted arguments; the macros call this. Formats without
/// allocating when the arguments are a plain string.
#[doc(hidden)]
pub fn log_fmt(level: i32, args: fmt::Arguments<'_>) {
    match args.as_str() {
        Some(text) => log(level, text),
        None => log(level, &args.to_string()),
    }
}

/// Log at error level, with `format!` arguments.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => {
        $crate::log::log_fmt($crate::log::level::ERROR, ::core::format_args!($($arg)+))
    };
}

/// Log at warn level, with `format!` arguments.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => {
        $crate::log::log_fmt($crate::log::level::WARN, ::core::format_args!($($arg)+))
    };
}

/// Log at info level, with `format!` arguments.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => {
        $crate::log::log_fmt($crate::log::level::INFO, ::core::format_args!($($arg)+))
    };
}

/// Log at debug level, with `format!` arguments.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => {
        $crate::log::log_fmt($crate::log::level::DEBUG, ::core::format_args!($($arg)+))
    };
}

/// Log at trace level, with `format!` arguments.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => {
        $crate::log::log_fmt($crate::log::level::TRACE, ::core::format_args!($($arg)+))
    };
}
