//! Suspending a sender whose outgoing connection is full.
//!
//! A send to another node queues the frame on a lane; if that leaves the
//! lane over its bound, routing returns a future that resolves when the
//! lane has room, and the send that routed it hands it to the sending
//! process, which is suspended on it at its next safe point (the next
//! epoch check in wasm, or its next message boundary). Nothing is dropped;
//! the runtime never learns what a lane is. The wait travels with the
//! routing result, so a signal that is not a guest's send (a link, an exit
//! signal, a host mailbox's message) never suspends anyone.

use std::future::Future;
use std::pin::Pin;

/// What a congested sender waits on.
pub(crate) type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;
