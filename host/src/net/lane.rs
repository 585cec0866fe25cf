//! A lane: one QUIC unidirectional stream to a peer, fed by a bounded
//! queue of encoded frames and written by one task that takes whatever is
//! queued in one write.
//!
//! Signals of one (sender, receiver) pair always use the same lane, so
//! their order holds; pairs on other lanes are not held up by a slow one.
//! The queue is bounded in bytes: a push past the bound still queues (a
//! signal is never dropped), but reports congestion, and the runtime then
//! suspends the sending process until the lane has drained below the bound.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use super::frame::{self, Frame};

/// The most room an emptied batch buffer keeps for the queue.
const KEEP_BYTES_MAX: usize = 1 << 20;

struct Queue {
    /// The encoded frames, one after the other: a sender encodes its frame
    /// straight in here, and the writer takes the whole buffer (swapping
    /// in an empty one: a signal lane's writer hands the buffer to quinn
    /// and swaps in a new one with room for as much, up to
    /// `KEEP_BYTES_MAX`; the control lane's reuses the one it wrote last),
    /// so a frame is neither allocated nor copied on its own.
    frames: Vec<u8>,
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
            queue: Mutex::new(Queue { frames: Vec::new() }),
            work: Notify::new(),
            room: Notify::new(),
            bytes_max,
            closed: AtomicBool::new(false),
        }
    }

    /// Queue encoded frames.
    pub fn push(&self, frames: impl AsRef<[u8]>) -> Pushed {
        self.push_with(|queue| queue.extend_from_slice(frames.as_ref()))
    }

    /// Queue `frame`, encoded straight into the queue.
    pub fn push_frame(&self, frame: &Frame) -> Pushed {
        self.push_with(|queue| frame::encode_into(frame, queue))
    }

    /// Queue what `encode` appends to the queue's bytes (whole frames).
    fn push_with(&self, encode: impl FnOnce(&mut Vec<u8>)) -> Pushed {
        let over = {
            let mut q = self.queue.lock().expect("lane poisoned");
            encode(&mut q.frames);
            q.frames.len() > self.bytes_max
        };
        self.work.notify_one();
        if over { Pushed::Congested } else { Pushed::Ok }
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queue.lock().expect("lane poisoned").frames.len()
    }

    /// Whether the queue is past its bound now.
    pub fn over_bound(&self) -> bool {
        self.queue.lock().expect("lane poisoned").frames.len() > self.bytes_max
    }

    /// Wait until the queue is within its bound (or the lane is closed).
    pub async fn wait_for_room(&self) {
        loop {
            let room = self.room.notified();
            {
                let q = self.queue.lock().expect("lane poisoned");
                if q.frames.len() <= self.bytes_max || self.closed.load(Ordering::Acquire) {
                    return;
                }
            }
            room.await;
        }
    }

    /// Room to give a new batch buffer after one of `len` bytes was taken:
    /// as much, up to `KEEP_BYTES_MAX`.
    pub fn room_after(len: usize) -> usize {
        len.min(KEEP_BYTES_MAX)
    }

    /// Take everything queued into `batch` (what it held is dropped; its
    /// room goes to the queue, up to `KEEP_BYTES_MAX`); waits while the
    /// queue is empty. Returns false once the lane is closed.
    pub async fn take_batch(&self, batch: &mut Vec<u8>) -> bool {
        batch.clear();
        // After a burst, the room goes back to the allocator rather than
        // staying with the queue (which holds at most a bound's worth of
        // its own).
        if batch.capacity() > KEEP_BYTES_MAX {
            *batch = Vec::new();
        }
        loop {
            let work = self.work.notified();
            {
                let mut q = self.queue.lock().expect("lane poisoned");
                if !q.frames.is_empty() {
                    std::mem::swap(&mut q.frames, batch);
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
    pub fn take_queued(&self) -> Vec<u8> {
        let frames = std::mem::take(&mut self.queue.lock().expect("lane poisoned").frames);
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
        assert_eq!(lane.push([1, 2, 3]), Pushed::Ok);
        assert_eq!(
            lane.push_with(|q| q.extend_from_slice(&[4, 5, 6, 7, 8, 9, 10, 11])),
            Pushed::Congested
        );
        let mut batch = Vec::new();
        assert!(lane.take_batch(&mut batch).await);
        assert_eq!(batch, (1..=11).collect::<Vec<u8>>());
        // Drained: a waiting sender goes on at once.
        lane.wait_for_room().await;
        lane.close();
        assert!(!lane.take_batch(&mut batch).await);
    }
}
