//! `send_after` / `cancel_timer`: node-wide timers, each a sleeping task
//! that delivers one message unless cancelled first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use molt_abi::{Pid, Ref};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::NodeInner;
use super::cell::Message;

struct Timer {
    deadline: Instant,
    task: AbortHandle,
}

/// Pending timers by reference, at most `timers_max`.
/// Stands in for a deadline past what `Instant` can hold.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

pub(crate) struct Timers {
    max: usize,
    pending: Arc<Mutex<HashMap<Ref, Timer>>>,
}

/// `send_after` on a node holding `timers_max` timers.
#[derive(Debug)]
pub(crate) struct TimerLimit;

impl Timers {
    pub fn new(max: usize) -> Self {
        Timers {
            max,
            pending: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Deliver `message` (whose reference is the timer's) to `to` after
    /// `delay`.
    pub fn start(
        &self,
        node: &Arc<NodeInner>,
        delay: Duration,
        to: Pid,
        message: Message,
    ) -> Result<(), TimerLimit> {
        let reference = message.reference;
        let mut pending = self.pending.lock().expect("timers poisoned");
        if pending.len() >= self.max {
            return Err(TimerLimit);
        }
        // A delay too long to represent fires never (in about 30 years).
        let deadline = Instant::now()
            .checked_add(delay)
            .unwrap_or_else(|| Instant::now() + FAR_FUTURE);
        let (table, node_for_task) = (self.pending.clone(), Arc::downgrade(node));
        let task = node.runtime.spawn(async move {
            tokio::time::sleep_until(deadline).await;
            // Whoever removes the entry decides: fire, or cancel.
            let fired = table
                .lock()
                .expect("timers poisoned")
                .remove(&reference)
                .is_some();
            if let (true, Some(node)) = (fired, node_for_task.upgrade()) {
                // A dead receiver drops it, as a send would; a full
                // mailbox is logged, never dropped silently.
                // A full connection delays it; it is not refused.
                while let Some(wait) = node.congested(Pid::default(), to) {
                    wait.await;
                }
                if let Err(e) = node.send_user(Pid::default(), to, message) {
                    tracing::warn!(%to, timer = %reference, "timer message not delivered: {e}");
                }
            }
        });
        pending.insert(
            reference,
            Timer {
                deadline,
                task: task.abort_handle(),
            },
        );
        Ok(())
    }

    /// Cancel; returns the time it had left, or `None` if it already fired
    /// or never was.
    pub fn cancel(&self, reference: Ref) -> Option<Duration> {
        let timer = self
            .pending
            .lock()
            .expect("timers poisoned")
            .remove(&reference)?;
        timer.task.abort();
        Some(timer.deadline.saturating_duration_since(Instant::now()))
    }
}
