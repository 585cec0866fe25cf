//! A lane: one QUIC unidirectional stream to a peer, fed by a bounded
//! queue of encoded frames and written by one task that batches whatever
//! is queued into one write.
//!
//! Signals of one (sender, receiver) pair always use the same lane, so
//! their order holds; pairs on other lanes are not held up by a slow one.
//! The queue is bounded in bytes: a push past the bound still queues (a
//! signal is never dropped), but reports congestion, and the runtime then
//! suspends the sending process until the lane has drained below the bound.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

struct Queue {
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
}

/// The sending half of a lane.
pub(crate) struct Lane {
    queue: Mutex<Queue>,
    /// Woken when frames are queued.
    work: Notify,
    /// Woken when the queue drains below the bound.
    room: Notify,
    bytes_max: usize,
    closed: AtomicBool,
}

/// Whether a push left the lane over its bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Within the bound.
    Ok,
    /// Over the bound: the sender should wait for [`Lane::wait_for_room`].
    Congested,
}

impl Lane {
    pub fn new(bytes_max: usize) -> Self {
        Lane {
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                bytes: 0,
            }),
            work: Notify::new(),
            room: Notify::new(),
            bytes_max,
            closed: AtomicBool::new(false),
        }
    }

    /// Queue an encoded frame.
    pub fn push(&self, frame: Vec<u8>) -> Pushed {
        let over = {
            let mut q = self.queue.lock().expect("lane poisoned");
            q.bytes += frame.len();
            q.frames.push_back(frame);
            q.bytes > self.bytes_max
        };
        self.work.notify_one();
        if over { Pushed::Congested } else { Pushed::Ok }
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queue.lock().expect("lane poisoned").bytes
    }

    /// Whether the queue is past its bound now.
    pub fn over_bound(&self) -> bool {
        self.queue.lock().expect("lane poisoned").bytes > self.bytes_max
    }

    /// Wait until the queue is within its bound (or the lane is closed).
    pub async fn wait_for_room(&self) {
        loop {
            let room = self.room.notified();
            {
                let q = self.queue.lock().expect("lane poisoned");
                if q.bytes <= self.bytes_max || self.closed.load(Ordering::Acquire) {
                    return;
                }
            }
            room.await;
        }
    }

    /// Take everything queued into `batch` (cleared first); waits while
    /// the queue is empty. Returns false once the lane is closed.
    pub async fn take_batch(&self, batch: &mut Vec<u8>) -> bool {
        batch.clear();
        loop {
            let work = self.work.notified();
            {
                let mut q = self.queue.lock().expect("lane poisoned");
                if !q.frames.is_empty() {
                    for frame in q.frames.drain(..) {
                        batch.extend_from_slice(&frame);
                    }
                    q.bytes = 0;
                    drop(q);
                    self.room.notify_waiters();
                    return true;
                }
            }
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            work.await;
        }
    }

    /// Take every frame queued and not yet written, in order.
    pub fn take_queued(&self) -> VecDeque<Vec<u8>> {
        let frames = {
            let mut q = self.queue.lock().expect("lane poisoned");
            q.bytes = 0;
            std::mem::take(&mut q.frames)
        };
        self.room.notify_waiters();
        frames
    }

    /// No more frames will be written: wake everyone waiting.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.work.notify_one();
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_in_order_and_reports_congestion() {
        let lane = Lane::new(10);
        assert_eq!(lane.push(vec![1, 2, 3]), Pushed::Ok);
        assert_eq!(lane.push(vec![4, 5, 6, 7, 8, 9, 10, 11]), Pushed::Congested);
        let mut batch = Vec::new();
        assert!(lane.take_batch(&mut batch).await);
        assert_eq!(batch, (1..=11).collect::<Vec<u8>>());
        // Drained: a waiting sender goes on at once.
        lane.wait_for_room().await;
        lane.close();
        assert!(!lane.take_batch(&mut batch).await);
    }
}
