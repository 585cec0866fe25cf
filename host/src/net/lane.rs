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

/// Room of the first chunk a batch starts with; each further chunk of the
/// same batch has twice the room of the one before, up to
/// `CHUNK_BYTES_MAX` (a frame larger than that gets a chunk of its own size).
const CHUNK_BYTES_FIRST: usize = 4 << 10;
/// The most room a chunk starts with.
const CHUNK_BYTES_MAX: usize = 64 << 10;

struct Queue {
    /// The encoded frames, one after the other, in chunks (oldest first;
    /// a frame never spans two): a sender encodes its frame straight into
    /// the last chunk, or starts a new one when the frame would not fit,
    /// and the writer takes all chunks at once and hands them to quinn as
    /// they are. So a frame is neither allocated nor copied on its own, and
    /// a growing queue never moves what it already holds (one buffer
    /// growing by reallocation copied each byte again, into fresh pages).
    chunks: Vec<Vec<u8>>,
    /// Bytes in `chunks`.
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
                chunks: Vec::new(),
                bytes: 0,
            }),
            work: Notify::new(),
            room: Notify::new(),
            bytes_max,
            closed: AtomicBool::new(false),
        }
    }

    /// Queue encoded frames.
    pub fn push(&self, frames: impl AsRef<[u8]>) -> Pushed {
        let frames = frames.as_ref();
        self.push_with(frames.len(), |queue| queue.extend_from_slice(frames))
    }

    /// Queue `frame`, encoded straight into the queue.
    pub fn push_frame(&self, frame: &Frame) -> Pushed {
        self.push_with(frame.encoded_len_hint(), |queue| {
            frame::encode_into(frame, queue)
        })
    }

    /// Queue what `encode` appends to a chunk of the queue (whole frames,
    /// about `hint` bytes).
    fn push_with(&self, hint: usize, encode: impl FnOnce(&mut Vec<u8>)) -> Pushed {
        let over = {
            let mut guard = self.queue.lock().expect("lane poisoned");
            let q = &mut *guard;
            let fits = q
                .chunks
                .last()
                .is_some_and(|chunk| chunk.capacity() - chunk.len() >= hint);
            if !fits {
                let room = (CHUNK_BYTES_FIRST << q.chunks.len().min(8)).min(CHUNK_BYTES_MAX);
                q.chunks.push(Vec::with_capacity(room.max(hint)));
            }
            let chunk = q.chunks.last_mut().expect("a chunk was just pushed");
            let before = chunk.len();
            encode(chunk);
            q.bytes += chunk.len() - before;
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

    /// Take every chunk queued into `batch` (emptied first), in order;
    /// waits while the queue is empty. Returns false once the lane is
    /// closed.
    pub async fn take_batch(&self, batch: &mut Vec<Vec<u8>>) -> bool {
        batch.clear();
        loop {
            let work = self.work.notified();
            {
                let mut q = self.queue.lock().expect("lane poisoned");
                if q.bytes > 0 {
                    std::mem::swap(&mut q.chunks, batch);
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
    pub fn take_queued(&self) -> Vec<u8> {
        let chunks = {
            let mut q = self.queue.lock().expect("lane poisoned");
            q.bytes = 0;
            std::mem::take(&mut q.chunks)
        };
        self.room.notify_waiters();
        chunks.concat()
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
            lane.push_with(8, |q| q.extend_from_slice(&[4, 5, 6, 7, 8, 9, 10, 11])),
            Pushed::Congested
        );
        let mut batch = Vec::new();
        assert!(lane.take_batch(&mut batch).await);
        assert_eq!(batch.concat(), (1..=11).collect::<Vec<u8>>());
        // Drained: a waiting sender goes on at once.
        lane.wait_for_room().await;
        lane.close();
        assert!(!lane.take_batch(&mut batch).await);
    }

    /// A queue that grows never moves what it already holds, keeps frames
    /// whole and in order, and gives a frame larger than a chunk a chunk
    /// of its own.
    #[tokio::test]
    async fn a_growing_queue_keeps_its_bytes_in_place_and_in_order() {
        let lane = Lane::new(usize::MAX);
        let frame = |i: usize, len: usize| vec![i as u8; len];
        lane.push(frame(0, 100));
        let first = lane.queue.lock().unwrap().chunks[0].as_ptr();
        let mut sent = frame(0, 100);
        for i in 1..2_000 {
            let len = if i == 1_000 {
                CHUNK_BYTES_MAX * 2
            } else {
                1 + i % 300
            };
            lane.push(frame(i, len));
            sent.extend(frame(i, len));
        }
        {
            let q = lane.queue.lock().unwrap();
            assert_eq!(q.chunks[0].as_ptr(), first, "the first chunk moved");
            assert!(q.chunks.len() > 2);
            assert!(q.chunks.iter().any(|c| c.len() == CHUNK_BYTES_MAX * 2));
            assert!(
                q.chunks
                    .iter()
                    .all(|c| c.capacity() <= CHUNK_BYTES_MAX || c.len() == CHUNK_BYTES_MAX * 2),
                "a chunk grew past the room it started with"
            );
        }
        assert_eq!(lane.queued_bytes(), sent.len());
        let mut batch = Vec::new();
        assert!(lane.take_batch(&mut batch).await);
        assert_eq!(batch.concat(), sent);
        assert_eq!(lane.queued_bytes(), 0);
    }
}
