//! Suspending a sender whose outgoing connection is full.
//!
//! A send to another node queues the frame on a lane; if that leaves the
//! lane over its bound, the router hands the runtime a future that resolves
//! when the lane has room. The sending process is suspended on it at its
//! next safe point (the next epoch check in wasm, or its next message
//! boundary). Nothing is dropped; the runtime never learns what a lane is.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;

/// What a congested sender waits on.
pub(crate) type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

thread_local! {
    // Set by the router during a host call, taken by that same host call:
    // both run synchronously on this thread.
    static PENDING: RefCell<Option<Wait>> = const { RefCell::new(None) };
}

/// Called by a router: the sender of the signal being routed must wait.
pub(crate) fn suspend_sender(wait: Wait) {
    PENDING.with_borrow_mut(|p| *p = Some(wait));
}

/// Called after routing: the wait the router asked for, if any.
pub(crate) fn take() -> Option<Wait> {
    PENDING.with_borrow_mut(Option::take)
}
