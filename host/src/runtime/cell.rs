//! The shared half of a process: its identity and its signal queue, which
//! any thread may push to. The process drains the queue itself (see
//! [`super::core`]), as the BEAM does, so signals from one sender arrive in
//! the order they were sent.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::Waker;

use futures_util::task::AtomicWaker;
use molt_abi::{Pid, Ref};

use super::payload::Payload;
use crate::code::ModuleVersion;

/// An exit reason. Cheap to clone; shared by every signal that carries it.
pub type Reason = Arc<str>;

/// A message: a tag, an optional reference and opaque bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The tag (see `molt_abi::tag`).
    pub tag: u32,
    /// The envelope reference; `Ref::NONE` if the sender gave none.
    pub reference: Ref,
    /// The payload.
    pub payload: Payload,
}

/// A signal between processes. Messages are one kind of signal; the rest
/// change links and monitors or end processes.
#[derive(Debug)]
pub(crate) enum Signal {
    Message {
        from: Pid,
        message: Message,
    },
    /// An exit signal. `linked` says it comes from a link (the sender died)
    /// rather than from `exit(pid, reason)`.
    Exit {
        from: Pid,
        reason: Reason,
        linked: bool,
    },
    Link {
        from: Pid,
    },
    Unlink {
        from: Pid,
    },
    Monitor {
        from: Pid,
        reference: Ref,
    },
    Demonitor {
        from: Pid,
        reference: Ref,
    },
    /// A monitored process ended.
    Down {
        pid: Pid,
        reference: Ref,
        reason: Reason,
    },
    /// End the process with this reason; cannot be trapped (a purge of
    /// the code it runs).
    Kill {
        reason: Reason,
        /// Only if it still runs this version when the signal applies.
        only_on: Option<Arc<ModuleVersion>>,
    },
    /// A request to the process itself rather than to its code: suspend,
    /// resume, change code (Erlang's system messages).
    System(super::upgrade::SysRequest),
    /// Say what the process holds (links, monitors, the head of its
    /// mailbox), as Erlang's `process_info`: applied where the process
    /// applies its other signals.
    Inspect {
        /// Messages of its mailbox to describe, from the head.
        messages: usize,
        /// Where the answer goes.
        reply: tokio::sync::oneshot::Sender<super::Inspected>,
    },
}

struct Queue {
    signals: VecDeque<Signal>,
    closed: bool,
}

/// The part of a process other threads may touch.
pub(crate) struct ProcessCell {
    pub pid: Pid,
    /// The module version it runs; `None` for a host mailbox. Changed
    /// only by the process itself, when it migrates to a new version.
    pub module: Mutex<Option<Arc<ModuleVersion>>>,
    /// Whether it is suspended (handles signals, not messages).
    pub suspended: AtomicBool,
    /// Whether it hibernates (keeps only its saved state).
    pub hibernated: AtomicBool,
    /// Whether its instance runs the baseline compiler's code.
    pub baseline_code: AtomicBool,
    /// Why its last attempt to move to a new version failed, with the
    /// version; cleared when it moves.
    pub upgrade_failure: Mutex<Option<String>>,
    queue: Mutex<Queue>,
    /// Rung whenever a signal is queued.
    pub wake: Doorbell,
    /// Set when a signal that cannot wait behind the mailbox's messages is
    /// queued (an exit, a kill, a system request, an inspection), so a
    /// running guest checks its queue at its next epoch tick, and one
    /// working through its mailbox before its next message.
    pub urgent: AtomicBool,
    /// Messages queued or waiting in the mailbox, for `mailbox_len_max`.
    pub mailbox_len: AtomicUsize,
    /// Whether the queue may hold signals: set with each push, cleared by
    /// the drain that empties it (both under the queue's lock), so that a
    /// process looking at an empty queue, as it does before it waits and
    /// between messages, does not take the lock.
    queued: AtomicBool,
    /// Size of its linear memory, in bytes (for `ps`).
    pub memory_bytes: AtomicUsize,
    /// What it did, for `ps`, the HTTP API and the metrics.
    pub counters: ProcessCounters,
    /// The process that spawned it linked (a supervisor, typically), if
    /// one did: the edge of the supervision tree the dashboard draws.
    pub parent: Option<Pid>,
    /// Lines the process reads first when it next runs, for whoever wakes
    /// it to fetch ahead.
    pub hot: Hot,
}

/// Cache lines a process reads first when it runs again, noted by the
/// process, fetched ahead (prefetched) by whoever queues a signal for it
/// while it waits: its state, its message loop, its guest's stack where
/// it last sent from, and the top of the native stack its guest calls
/// run on. A process woken by another process runs next on the waker's
/// thread (the scheduler's `next` slot), after the waker's own guest
/// call has unwound: the lines arrive meanwhile, in parallel, where the
/// process itself would wait for them one after another as each pointer
/// leads to the next. With many processes (a ring of 1,000 or 100,000) a
/// woken process's memory is out of the cache, and these waits were most
/// of a message's time. Only addresses, never read through: a stale one
/// (a store replaced, a process gone) costs a useless fetch.
#[derive(Default)]
pub(crate) struct Hot([AtomicUsize; Hot::LINES]);

impl Hot {
    const LINES: usize = 11;
    /// Four lines from the start of the process's `ProcState`.
    pub const STATE: usize = 0;
    /// Four lines from the start of its message loop's future.
    pub const LOOP: usize = 4;
    /// Its guest's memory where the destination (pid or name) and the
    /// payload of its last send were (typically its shadow stack).
    pub const GUEST: usize = 8;
    /// The top line of the page of the native stack its last send ran on:
    /// where a new fiber's first frames go.
    pub const STACK: usize = 10;

    /// Note `lines` consecutive cache lines from `addr`, in slots from
    /// `slot`. A slot already holding the address is not written (the
    /// line stays shared in the wakers' caches).
    pub fn note(&self, slot: usize, addr: usize, lines: usize) {
        for (k, cell) in self.0[slot..slot + lines].iter().enumerate() {
            let line = addr.wrapping_add(64 * k);
            if cell.load(Ordering::Relaxed) != line {
                cell.store(line, Ordering::Relaxed);
            }
        }
    }

    /// Note the top line of the page of the current native stack.
    #[inline(always)]
    pub fn note_stack(&self) {
        let probe = 0u8;
        let sp = std::hint::black_box(&probe) as *const u8 as usize;
        self.note(Self::STACK, (sp | 4095) + 1 - 64, 1);
    }

    /// Fetch every noted line ahead.
    #[inline]
    fn prefetch(&self) {
        for line in &self.0 {
            let addr = line.load(Ordering::Relaxed);
            if addr != 0 {
                prefetch(addr);
            }
        }
    }
}

/// Ask the CPU to bring the line at `addr` into its caches.
#[inline(always)]
fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint, not an access: it reads nothing into
    // the program and never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// How a process learns that something was queued for it: rung by any
/// thread, awaited by the one task that drives the process (its guest, or
/// the owner of a host mailbox). A ring while nobody waits is kept until
/// the next wait, which then returns at once.
///
/// One waiter and a flag need no list of waiters: where tokio's `Notify`
/// locks its waiter list to register and again to wake (each a cache line
/// both threads write, for every message of a ping-pong), this is an
/// atomic waker slot and a flag. A process on the node's scheduler does
/// without the slot too: its task's waker is kept here before anyone can
/// ring ([`Doorbell::keep`]), a ring calls it by reference, and a wait
/// registers nothing (the slot's registration cloned the waker and its
/// wake dropped it: four atomic read-modify-writes per message, about 7 %
/// of a local round trip).
#[derive(Default)]
pub(crate) struct Doorbell {
    rung: AtomicBool,
    /// The waker of the one task that waits, if kept.
    task: OnceLock<Waker>,
    waker: AtomicWaker,
}

impl Doorbell {
    /// Keep `task`, the waker that every wait on this doorbell will be
    /// polled with, before anyone can ring it (before the process can be
    /// found). Its wake must read and write the task's state whatever it
    /// finds (as `sched`'s tasks do), so that a wait that registers
    /// nothing still sees what a ring published before it.
    pub fn keep(&self, task: Waker) {
        if self.task.set(task).is_err() {
            debug_assert!(false, "a doorbell's task is kept once");
        }
    }

    /// Wake the waiting task, or the next one to wait.
    pub fn ring(&self) {
        self.rung.store(true, Ordering::Release);
        match self.task.get() {
            Some(task) => task.wake_by_ref(),
            None => self.waker.wake(),
        }
    }

    /// Wait until rung, counting from the last wait that returned. Cancel
    /// safe: dropped before it returns, it loses no ring.
    pub fn rung(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.take() {
                return std::task::Poll::Ready(());
            }
            if let Some(task) = self.task.get() {
                // The same task (its vtable may be another copy of the
                // same one, so `will_wake` can say no).
                debug_assert_eq!(task.data(), cx.waker().data(), "polled by its own task");
                return std::task::Poll::Pending;
            }
            self.waker.register(cx.waker());
            // A ring between the check and the registration found no
            // waker to wake: seen here.
            match self.take() {
                true => std::task::Poll::Ready(()),
                false => std::task::Poll::Pending,
            }
        })
    }

    /// Whether it was rung since the last wait returned.
    pub fn is_rung(&self) -> bool {
        self.rung.load(Ordering::Relaxed)
    }

    fn take(&self) -> bool {
        self.rung.load(Ordering::Relaxed) && self.rung.swap(false, Ordering::Acquire)
    }
}

/// What a process did, counted by the process itself and read by anyone.
/// Each counter has one writer (the process), so counting is a plain load
/// and store, with no locked instruction and no cache line shared with
/// other writers on the message path: aligned to a line pair of their own
/// (a line's neighbour is fetched with it), away from the queue and
/// `mailbox_len`, which senders write for every message.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct ProcessCounters {
    /// Messages it took from its mailbox.
    pub messages_in: AtomicU64,
    /// Messages it sent to processes of this node.
    pub sent_local: AtomicU64,
    /// Messages it sent to processes of other nodes.
    pub sent_remote: AtomicU64,
    /// Time it ran, in ns: the time inside the polls of its task (its
    /// guest, the host functions it calls, taking its messages), so
    /// waits are not counted.
    pub cpu_ns: AtomicU64,
    /// Messages it took from its mailbox and has not yet subtracted from
    /// `ProcessCell::mailbox_len` (it does so in batches: see
    /// `ProcessCell::mailbox_messages`). Kept whether or not counters are.
    pub taken: AtomicUsize,
}

impl ProcessCounters {
    /// Add `by` to `counter`. Only the process that owns the counters may
    /// call it (one writer: a load and a store suffice).
    pub fn bump(counter: &AtomicU64, by: u64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(by),
            Ordering::Relaxed,
        );
    }

    /// Count a message sent to a process of this node (`local`) or of
    /// another one.
    pub fn sent(&self, local: bool) {
        match local {
            true => Self::bump(&self.sent_local, 1),
            false => Self::bump(&self.sent_remote, 1),
        }
    }

    /// Messages it sent, to any node.
    pub fn sent_total(&self) -> u64 {
        self.sent_local.load(Ordering::Relaxed) + self.sent_remote.load(Ordering::Relaxed)
    }
}

impl ProcessCell {
    pub fn new(pid: Pid, module: Option<Arc<ModuleVersion>>, parent: Option<Pid>) -> Self {
        ProcessCell {
            pid,
            module: Mutex::new(module),
            suspended: AtomicBool::new(false),
            hibernated: AtomicBool::new(false),
            baseline_code: AtomicBool::new(false),
            upgrade_failure: Mutex::new(None),
            queue: Mutex::new(Queue {
                signals: VecDeque::new(),
                closed: false,
            }),
            wake: Doorbell::default(),
            urgent: AtomicBool::new(false),
            mailbox_len: AtomicUsize::new(0),
            queued: AtomicBool::new(false),
            memory_bytes: AtomicUsize::new(0),
            counters: ProcessCounters::default(),
            parent,
            hot: Hot::default(),
        }
    }

    /// Messages queued or waiting in its mailbox: `mailbox_len` less what
    /// the process took and has not subtracted yet. The process may be
    /// taking one meanwhile: an instant's count, as any.
    pub fn mailbox_messages(&self) -> usize {
        let taken = self.counters.taken.load(Ordering::Acquire);
        self.mailbox_len
            .load(Ordering::Acquire)
            .saturating_sub(taken)
    }

    /// Count one more message for the mailbox unless it holds `max`
    /// already (then `false`, and nothing counted). Most sends take the
    /// first branch: one write to the count, no look at what the process
    /// took.
    pub fn count_in(&self, max: usize) -> bool {
        let before = self.mailbox_len.fetch_add(1, Ordering::Relaxed);
        if before < max {
            return true;
        }
        let taken = self.counters.taken.load(Ordering::Acquire);
        if before.saturating_sub(taken) < max {
            return true;
        }
        self.mailbox_len.fetch_sub(1, Ordering::Relaxed);
        false
    }

    /// Queue a signal; gives it back if the process has ended.
    // A signal is as large as a message with its payload in place; the
    // caller gets it back, to route it elsewhere or answer for it, and
    // boxing it would bring back the allocation in-place payloads avoid.
    #[allow(clippy::result_large_err)]
    pub fn push(&self, signal: Signal) -> Result<(), Signal> {
        {
            let mut queue = self.queue.lock().expect("signal queue poisoned");
            if queue.closed {
                return Err(signal);
            }
            if matches!(
                signal,
                Signal::Exit { .. }
                    | Signal::Kill { .. }
                    | Signal::Inspect { .. }
                    | Signal::System(_)
            ) {
                self.urgent.store(true, Ordering::Release);
            }
            push_back_lean(&mut queue.signals, signal);
            if !self.queued.load(Ordering::Relaxed) {
                self.queued.store(true, Ordering::Release);
            }
        }
        // Not rung since it last waited: it waits, and will run soon,
        // likely on this thread. (A busy process has its lines at hand.)
        if !self.wake.is_rung() {
            self.hot.prefetch();
        }
        self.wake.ring();
        Ok(())
    }

    /// Move every queued signal to `into` (which should be empty).
    pub fn drain_into(&self, into: &mut VecDeque<Signal>) {
        // Set before the pushing thread lets go of the lock: once its push
        // is over, this sees it (as the lock would).
        if !self.queued.load(Ordering::Acquire) {
            return;
        }
        let mut queue = self.queue.lock().expect("signal queue poisoned");
        self.queued.store(false, Ordering::Relaxed);
        // Set only under the lock, with its signal: cleared with them. A
        // write only when set, so that draining does not take the line
        // from the senders' caches for nothing.
        if self.urgent.load(Ordering::Relaxed) {
            self.urgent.store(false, Ordering::Release);
        }
        std::mem::swap(&mut queue.signals, into);
    }

    /// The module version it runs now.
    pub fn version(&self) -> Option<Arc<ModuleVersion>> {
        self.module.lock().expect("cell module poisoned").clone()
    }

    /// Whether it is a guest process (not a host mailbox).
    pub fn is_guest(&self) -> bool {
        self.module.lock().expect("cell module poisoned").is_some()
    }

    /// Refuse all further signals and return those still queued.
    pub fn close(&self) -> VecDeque<Signal> {
        let mut queue = self.queue.lock().expect("signal queue poisoned");
        queue.closed = true;
        std::mem::take(&mut queue.signals)
    }
}

/// `queue.push_back(item)`, but an empty queue with no room gets room for
/// exactly one item, not the four `VecDeque` starts with: most processes
/// never hold more than one message or signal at a time, and each of a
/// process's three queues (its signals, the batch it takes them into, its
/// mailbox) would otherwise hold ~0.5 KB from its first message on, taken
/// from fresh memory. A queue that fills grows by doubling all the same.
pub(crate) fn push_back_lean<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.capacity() == 0 {
        queue.reserve_exact(1);
    }
    queue.push_back(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_takes_room_for_one_item_first_and_doubles_from_there() {
        let mut queue = VecDeque::new();
        push_back_lean(&mut queue, 1u64);
        assert_eq!(queue.capacity(), 1);
        push_back_lean(&mut queue, 2);
        push_back_lean(&mut queue, 3);
        assert!(queue.capacity() >= 3);
        assert_eq!(queue.drain(..).collect::<Vec<_>>(), [1, 2, 3]);
        // Emptied, it keeps its room.
        push_back_lean(&mut queue, 4);
        assert!(queue.capacity() >= 3);
    }

    #[test]
    fn noted_lines_are_only_hints_any_address_is_fetched_without_harm() {
        let hot = Hot::default();
        // Consecutive lines from the address, a slot per line.
        hot.note(Hot::LOOP, 0x1000, 4);
        let noted: Vec<usize> = hot.0[Hot::LOOP..Hot::LOOP + 4]
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect();
        assert_eq!(noted, [0x1000, 0x1040, 0x1080, 0x10c0]);
        // Addresses nothing is mapped at (null's page, the kernel's half,
        // the very top, wrapping) are fetched ahead without a fault: a
        // prefetch is never an access.
        hot.note(Hot::STATE, 8, 4);
        hot.note(Hot::GUEST, 0xffff_8000_0000_0000, 2);
        hot.note(Hot::STACK, usize::MAX - 63, 1);
        hot.note(Hot::LOOP, usize::MAX - 100, 4);
        hot.prefetch();
        // The stack's line is the top line of the current stack's page.
        hot.note_stack();
        let line = hot.0[Hot::STACK].load(Ordering::Relaxed);
        let probe = 0u8;
        let here = &probe as *const u8 as usize;
        assert_eq!(line % 4096, 4096 - 64);
        assert!(line.abs_diff(here) < 2 * 4096, "{line:#x} near {here:#x}");
    }

    #[tokio::test]
    async fn a_doorbell_wakes_its_waiter_and_keeps_a_ring_for_the_next_wait() {
        let bell = Arc::new(Doorbell::default());
        // Rung before anyone waits: the next wait returns at once, once.
        bell.ring();
        tokio::time::timeout(std::time::Duration::from_secs(5), bell.rung())
            .await
            .expect("a ring kept for the next wait");
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), bell.rung())
                .await
                .is_err(),
            "one ring, one wait"
        );
        // Rung from another thread while the task waits.
        for _ in 0..100 {
            let ringer = bell.clone();
            let waiting = tokio::spawn({
                let bell = bell.clone();
                async move { bell.rung().await }
            });
            tokio::task::yield_now().await;
            std::thread::spawn(move || ringer.ring()).join().unwrap();
            tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
                .await
                .expect("the waiter woke")
                .unwrap();
        }
    }

    #[test]
    fn a_signal_holds_a_short_message_in_two_cache_lines() {
        assert!(
            std::mem::size_of::<Signal>() <= 128,
            "{}",
            std::mem::size_of::<Signal>()
        );
    }
}
