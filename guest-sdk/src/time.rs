//! Timers, clocks, references and randomness.

use std::time::Duration;

use molt_abi::{REF_BYTES, tag};
use serde::Serialize;

use crate::error::{Error, check};
use crate::process::{Pid, Ref};
use crate::sys;

/// A duration as the ABI's milliseconds, rounded up so that a short,
/// non-zero wait never becomes a poll; saturates at `i64::MAX`.
pub(crate) fn to_ms(d: Duration) -> i64 {
    let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// Send a typed message (tag `DATA`) to `pid` after `delay`. The returned
/// timer reference is also the message's envelope reference.
pub fn send_after<T: Serialize + ?Sized>(delay: Duration, pid: Pid, msg: &T) -> Result<Ref, Error> {
    crate::send::with_encoded(msg, |payload| {
        send_after_raw(delay, pid, tag::DATA, payload)
    })
}

/// [`send_after`] with an explicit tag and payload bytes as they are.
pub fn send_after_raw(delay: Duration, pid: Pid, tag: u32, payload: &[u8]) -> Result<Ref, Error> {
    let mut out = [0u8; REF_BYTES];
    check(sys::send_after(
        to_ms(delay),
        &pid.to_bytes(),
        tag,
        payload,
        &mut out,
    ))?;
    Ok(Ref::from_bytes(&out))
}

/// Cancel a timer this process started; returns the time it had left, or
/// `None` if it already fired, was cancelled, or is unknown.
pub fn cancel_timer(reference: Ref) -> Option<Duration> {
    let left = sys::cancel_timer(&reference.to_bytes());
    u64::try_from(left).ok().map(Duration::from_millis)
}

/// A new reference, unique on this node incarnation (and so in the cluster).
pub fn make_ref() -> Ref {
    let mut out = [0u8; REF_BYTES];
    sys::make_ref(&mut out);
    Ref::from_bytes(&out)
}

/// Suspend the calling process for `d`, leaving its mailbox as it is
/// (a receive on a fresh reference that no message carries);
/// [`Duration::MAX`] sleeps for ever.
///
/// ```no_run
/// molt_sdk::sleep(std::time::Duration::from_millis(10));
/// ```
pub fn sleep(d: Duration) {
    let never = crate::receive::Filter::any().reference(make_ref());
    let _ = crate::receive::receive_matching(&never, (d != Duration::MAX).then_some(d));
}

/// Monotonic time since the node started.
pub fn monotonic_time() -> Duration {
    Duration::from_nanos(u64::try_from(sys::monotonic_ns()).unwrap_or(0))
}

/// Wall-clock time as a duration since the Unix epoch (zero if the host
/// clock is before it).
pub fn system_time() -> Duration {
    Duration::from_nanos(u64::try_from(sys::system_time_ns()).unwrap_or(0))
}

/// Fill `buf` with random bytes from the host's operating system.
pub fn random_bytes(buf: &mut [u8]) {
    sys::random_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_up_and_saturate() {
        assert_eq!(to_ms(Duration::ZERO), 0);
        assert_eq!(to_ms(Duration::from_micros(1)), 1);
        assert_eq!(to_ms(Duration::from_millis(5)), 5);
        assert_eq!(to_ms(Duration::from_micros(5001)), 6);
        assert_eq!(to_ms(Duration::MAX), i64::MAX);
    }
}
