//! The scheduler of guest processes (`NodeConfig::process_threads` > 0):
//! a few threads of the node's own that poll process tasks, beside the
//! tokio runtime that keeps the I/O, the timers and every host task.
//!
//! Why not tokio's: a process woken by another runs next on the waker's
//! thread, as in tokio (its LIFO slot), but tokio, after three such
//! hand-offs in a row, queues the task and wakes a sleeping worker to
//! steal it. Two processes exchanging messages then keep waking each other's
//! thread: a system call and, on a VM, an interrupt per wake. Here the
//! woken process waits in the thread's `next` slot; after `NEXT_RUNS_MAX`
//! hand-offs in a row, if anything else waits for the thread, it goes to
//! the back of the thread's queue **without waking anyone** (with nothing
//! else waiting it stays: queued, it could be stolen, and the pair would
//! move to another core and leave its lines behind). Another thread is
//! woken only for work beyond the next thing to run: a second task
//! waiting on this thread, or a task scheduled from outside (I/O, timers,
//! host tasks). A thread with nothing to do
//! searches (its queue, its inbox, the shared queue, the others' queues)
//! for `spin` before it sleeps, which is how Erlang's schedulers keep
//! wake-ups rare.
//!
//! A task woken from outside goes to the inbox of the thread that polled it
//! last (a new one, to the shared queue): it is freed where it was
//! allocated (a free from another thread costs more: glibc's allocator
//! locks the owner's arena, mimalloc, the `molt` binary's, queues the
//! block for its owner) and its data may still be in that core's cache.
//! With glibc's allocator, purging 10,000 processes took 93–103 ms instead
//! of 127–131, moving them to a new version 142–145 ms instead of 165–175.
//! The inboxes come after the thread's own queue, as the shared queue
//! does: a process that yields mid-upgrade goes to the back of its
//! thread's queue, and put behind thousands of prompted processes it would
//! hold two instances while they all start theirs on fresh slots (11 page
//! faults each).
//!
//! Tasks live as long as the tokio runtime the node started on: when it
//! shuts down (dropping its tasks, one of which is this scheduler's
//! sentinel), the threads stop and every unfinished task is dropped, as
//! tokio drops its own.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use futures_util::task::{ArcWake, waker_ref};

/// Hand-offs in a row through a thread's `next` slot before the woken task
/// goes to the back of the queue if other work waits for the thread, so
/// that two processes exchanging messages cannot starve the rest.
const NEXT_RUNS_MAX: u32 = 32;
/// Tasks run between two looks at the shared queue first (fairness for
/// work that comes from outside).
const SHARED_EVERY: u32 = 61;
/// A sleeping thread looks round this often even if nobody woke it.
const PARK_RECHECK: Duration = Duration::from_millis(20);
/// Shards of the live-task registry.
const SHARDS: usize = 16;

type BoxedTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Not scheduled, not running: waiting for a wake.
const IDLE: u8 = 0;
/// In a queue (or a `next` slot).
const SCHEDULED: u8 = 1;
/// Being polled.
const RUNNING: u8 = 2;
/// Being polled and woken meanwhile: scheduled again after the poll.
const NOTIFIED: u8 = 3;
/// Finished or dropped.
const DONE: u8 = 4;

/// `Task::home` of a task no worker thread has polled yet.
const NO_HOME: usize = usize::MAX;

/// One task: its future and where it stands.
struct Task {
    id: u64,
    state: AtomicU8,
    /// The worker thread that polled it last ([`NO_HOME`] before its
    /// first poll). Woken from outside the worker threads, it goes to that
    /// thread's inbox rather than the shared queue: what it allocated came
    /// from that thread's allocator arena, so it is freed there too (see
    /// the module's doc), and its data may still be in that core's cache.
    home: AtomicUsize,
    future: Mutex<Option<BoxedTask>>,
    shared: Arc<Shared>,
}

// `ArcWake` rather than std's `Wake`: a poll lends the task's own `Arc`
// as its waker (`waker_ref`) instead of cloning it for the poll.
//
// A wake is always a read-modify-write of the task's state, even where it
// changes nothing (already scheduled or notified): a waker may be called
// by reference by whoever made something ready, with nothing registered
// per wait (`Doorbell::keep`), so the poll that takes the task
// (`SCHEDULED` → `RUNNING`) must read this wake's write or a later one,
// and with it whatever the waker published before it (release, then
// acquire). A plain load here could read `SCHEDULED` before that poll
// began and return while the poll missed what it was woken for.
impl ArcWake for Task {
    fn wake_by_ref(task: &Arc<Self>) {
        let mut state = task.state.load(Ordering::Acquire);
        loop {
            let next = match state {
                IDLE => SCHEDULED,
                RUNNING => NOTIFIED,
                DONE => return,
                same => same,
            };
            match task
                .state
                .compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if state == IDLE => return task.shared.schedule(task.clone(), false),
                Ok(_) => return,
                Err(now) => state = now,
            }
        }
    }
}

/// One worker thread's stealable queues and how to wake it.
struct Worker {
    /// Tasks woken on this thread (and yielded ones).
    queue: Mutex<VecDeque<Arc<Task>>>,
    /// Tasks that ran here last, woken from outside the worker threads:
    /// taken after `queue`, as the shared queue is.
    inbox: Mutex<VecDeque<Arc<Task>>>,
    /// Set while it sleeps (or is about to).
    sleeping: AtomicBool,
    /// Set once its thread has started.
    thread: OnceLock<Thread>,
}

impl Worker {
    /// Wake this thread if it sleeps (and no one else woke it meanwhile);
    /// whether it did.
    fn wake_if_sleeping(&self) -> bool {
        let woken = self.sleeping.load(Ordering::SeqCst)
            && self
                .sleeping
                .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
        if woken && let Some(thread) = self.thread.get() {
            thread.unpark();
        }
        woken
    }
}

/// What the scheduler's threads and tasks share.
struct Shared {
    workers: Vec<Worker>,
    /// Tasks scheduled from outside the worker threads.
    inbox: Mutex<VecDeque<Arc<Task>>>,
    /// Threads searching for work (not sleeping, nothing to run).
    searching: AtomicUsize,
    /// Every task not finished, to drop them all at shutdown.
    live: Vec<Mutex<HashMap<u64, Arc<Task>>>>,
    next_id: AtomicU64,
    stopping: AtomicBool,
    spin: Duration,
    /// The tokio runtime the node started on.
    runtime: tokio::runtime::Handle,
}

/// The thread-local part of a worker thread.
struct Local {
    shared: Arc<Shared>,
    index: usize,
    /// The task to run next (not stealable).
    next: Option<Arc<Task>>,
    /// Tasks run from `next` in a row.
    next_runs: u32,
    ticks: u32,
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
    /// Set while a tokio task hands frames from the network to processes.
    static RUN_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Run `deliver` (the network handing frames to processes) so that a
/// process it wakes runs next on this tokio thread, as a tokio task, rather
/// than on the node's process threads: its reply then goes out from here
/// too, with no thread woken either way. Elsewhere processes run on the
/// process threads.
pub(crate) fn run_woken_here<R>(deliver: impl FnOnce() -> R) -> R {
    with_run_here(true, deliver)
}

/// Run `start` (the network spawning a process) so that the processes it
/// starts run on the node's process threads even inside
/// [`run_woken_here`]: a new process's instantiation, `init` and, for a
/// short-lived one, its end, would hold up the network's thread, where the
/// spawn's reply and the next frames wait.
pub(crate) fn start_elsewhere<R>(start: impl FnOnce() -> R) -> R {
    with_run_here(false, start)
}

/// Run `f` with `RUN_HERE` set to `here`, then as it was.
fn with_run_here<R>(here: bool, f: impl FnOnce() -> R) -> R {
    let before = RUN_HERE.replace(here);
    let result = f();
    RUN_HERE.set(before);
    result
}

impl Shared {
    fn schedule(self: &Arc<Self>, task: Arc<Task>, yielded: bool) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let task = LOCAL.with(|local| {
            let Ok(mut local) = local.try_borrow_mut() else {
                return Some(task);
            };
            let Some(local) = local.as_mut().filter(|l| Arc::ptr_eq(&l.shared, self)) else {
                return Some(task);
            };
            let worker = &self.workers[local.index];
            if local.next_runs >= NEXT_RUNS_MAX && !yielded && !self.others_wait(worker) {
                // Hand-offs in a row with nothing else waiting here: the
                // pair keeps this thread (queued, another thread could
                // steal it and the pair would move, leaving its lines in
                // this core's caches). Counted afresh.
                local.next_runs = 0;
            }
            if yielded || local.next_runs >= NEXT_RUNS_MAX {
                let waiting = {
                    let mut queue = worker.queue.lock().expect("queue poisoned");
                    queue.push_back(task);
                    queue.len() + usize::from(local.next.is_some())
                };
                if waiting >= 2 {
                    self.wake_one();
                }
            } else if let Some(displaced) = local.next.replace(task) {
                worker
                    .queue
                    .lock()
                    .expect("queue poisoned")
                    .push_back(displaced);
                self.wake_one();
            }
            None
        });
        if let Some(task) = task {
            if RUN_HERE.get() && tokio::runtime::Handle::try_current().is_ok() {
                drop(self.runtime.spawn(async move { run(task, None) }));
                return;
            }
            match self.workers.get(task.home.load(Ordering::Relaxed)) {
                Some(home) => {
                    home.inbox.lock().expect("inbox poisoned").push_back(task);
                    self.wake(home);
                }
                None => {
                    self.inbox.lock().expect("inbox poisoned").push_back(task);
                    self.wake_one();
                }
            }
        }
    }

    /// Whether a task other than the next one waits for `worker`'s
    /// thread: in its queue, its inbox or the shared queue.
    fn others_wait(&self, worker: &Worker) -> bool {
        !worker.queue.lock().expect("queue poisoned").is_empty()
            || !worker.inbox.lock().expect("inbox poisoned").is_empty()
            || !self.inbox.lock().expect("inbox poisoned").is_empty()
    }

    /// For work queued on `worker`: nothing if a thread is searching (it
    /// finds the work at once, where waking one costs a system call and an
    /// interrupt); else `worker` if it sleeps, else another sleeping thread.
    fn wake(&self, worker: &Worker) {
        if self.searching.load(Ordering::SeqCst) > 0 || worker.wake_if_sleeping() {
            return;
        }
        self.wake_one();
    }

    /// Wake a sleeping thread, unless one is already searching.
    fn wake_one(&self) {
        if self.searching.load(Ordering::SeqCst) > 0 {
            return;
        }
        self.workers.iter().any(Worker::wake_if_sleeping);
    }

    /// A task from the shared queue or stolen from another thread.
    fn find(&self, index: usize) -> Option<Arc<Task>> {
        if let Some(task) = self.inbox.lock().expect("inbox poisoned").pop_front() {
            return Some(task);
        }
        let n = self.workers.len();
        for k in 1..n {
            let other = &self.workers[(index + k) % n];
            for queue in [&other.queue, &other.inbox] {
                let mut queue = queue.lock().expect("queue poisoned");
                if queue.is_empty() {
                    continue;
                }
                // Take half (at least one); run the first, keep the rest.
                let take = queue.len().div_ceil(2);
                let mut stolen: VecDeque<Arc<Task>> = queue.drain(..take).collect();
                drop(queue);
                let first = stolen.pop_front();
                if !stolen.is_empty() {
                    self.workers[index]
                        .queue
                        .lock()
                        .expect("queue poisoned")
                        .extend(stolen);
                }
                return first;
            }
        }
        None
    }

    fn forget(&self, id: u64) {
        self.live[id as usize % SHARDS]
            .lock()
            .expect("live poisoned")
            .remove(&id);
    }
}

/// Poll `task` once on this thread: worker thread `worker`, or (`None`) a
/// tokio thread.
fn run(task: Arc<Task>, worker: Option<usize>) {
    if task
        .state
        .compare_exchange(SCHEDULED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    if let Some(index) = worker {
        task.home.store(index, Ordering::Relaxed);
    }
    let waker = waker_ref(&task);
    let mut cx = Context::from_waker(&waker);
    let mut slot = task.future.lock().expect("task poisoned");
    let Some(future) = slot.as_mut() else {
        task.state.store(DONE, Ordering::Release);
        return;
    };
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        future.as_mut().poll(&mut cx)
    }));
    match polled {
        Ok(Poll::Pending) => {
            drop(slot);
            if task
                .state
                .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // Woken while it ran: it goes behind the others.
                task.state.store(SCHEDULED, Ordering::Release);
                let shared = task.shared.clone();
                shared.schedule(task, true);
            }
        }
        finished => {
            if finished.is_err() {
                tracing::error!("a process task panicked; it is dropped");
            }
            let future = slot.take();
            drop(slot);
            task.state.store(DONE, Ordering::Release);
            task.shared.forget(task.id);
            drop(future);
        }
    }
}

fn worker_loop(shared: Arc<Shared>, index: usize) {
    let _tokio = shared.runtime.enter();
    LOCAL.with(|local| {
        *local.borrow_mut() = Some(Local {
            shared: shared.clone(),
            index,
            next: None,
            next_runs: 0,
            ticks: 0,
        })
    });
    let me = &shared.workers[index];
    'work: while !shared.stopping.load(Ordering::Acquire) {
        if let Some(task) = next_task(&shared, index) {
            run(task, Some(index));
            continue;
        }
        // Search for a while before sleeping.
        shared.searching.fetch_add(1, Ordering::SeqCst);
        let until = Instant::now() + shared.spin;
        loop {
            if let Some(task) = next_task(&shared, index) {
                shared.searching.fetch_sub(1, Ordering::SeqCst);
                run(task, Some(index));
                continue 'work;
            }
            if Instant::now() >= until || shared.stopping.load(Ordering::Acquire) {
                break;
            }
            for _ in 0..64 {
                std::hint::spin_loop();
            }
        }
        me.sleeping.store(true, Ordering::SeqCst);
        shared.searching.fetch_sub(1, Ordering::SeqCst);
        // Anything scheduled before `sleeping` was visible is found here;
        // anything after wakes this thread.
        if let Some(task) = next_task(&shared, index) {
            me.sleeping.store(false, Ordering::SeqCst);
            run(task, Some(index));
            continue;
        }
        // Woken (`sleeping` cleared by the waker), stopping, or a look
        // round after `PARK_RECHECK` in case a wake-up was missed.
        thread::park_timeout(PARK_RECHECK);
        me.sleeping.store(false, Ordering::SeqCst);
    }
    LOCAL.with(|local| local.borrow_mut().take());
}

/// What this thread runs next: its `next` slot, its queue, its inbox, the
/// shared queue, another thread's queues. Every `SHARED_EVERY` tasks the
/// two inboxes (work from outside) come first, in turn.
fn next_task(shared: &Arc<Shared>, index: usize) -> Option<Arc<Task>> {
    let (next, inbox_first) = LOCAL.with(|local| {
        let mut local = local.borrow_mut();
        let local = local.as_mut().expect("a worker thread");
        local.ticks = local.ticks.wrapping_add(1);
        let inbox_first = local
            .ticks
            .is_multiple_of(SHARED_EVERY)
            .then_some((local.ticks / SHARED_EVERY).is_multiple_of(2));
        if inbox_first.is_none()
            && let Some(task) = local.next.take()
        {
            local.next_runs += 1;
            return (Some(task), None);
        }
        local.next_runs = 0;
        (None, inbox_first)
    });
    if next.is_some() {
        return next;
    }
    let me = &shared.workers[index];
    if let Some(own_first) = inbox_first {
        let (a, b) = if own_first {
            (&me.inbox, &shared.inbox)
        } else {
            (&shared.inbox, &me.inbox)
        };
        for inbox in [a, b] {
            if let Some(task) = inbox.lock().expect("inbox poisoned").pop_front() {
                return Some(task);
            }
        }
    }
    if let Some(task) = LOCAL.with(|local| local.borrow_mut().as_mut().and_then(|l| l.next.take()))
    {
        return Some(task);
    }
    if let Some(task) = me.queue.lock().expect("queue poisoned").pop_front() {
        return Some(task);
    }
    if let Some(task) = me.inbox.lock().expect("inbox poisoned").pop_front() {
        return Some(task);
    }
    shared.find(index)
}

/// The node's process scheduler. Stops, dropping what is left, when the
/// tokio runtime it was started on shuts down.
pub(crate) struct Scheduler {
    shared: Arc<Shared>,
}

impl Scheduler {
    /// Start `threads` worker threads, each searching for `spin` before it
    /// sleeps, on the tokio runtime `runtime` (whose timers and I/O the
    /// tasks use).
    pub(crate) fn start(
        threads: usize,
        spin: Duration,
        runtime: &tokio::runtime::Handle,
    ) -> std::io::Result<Scheduler> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            workers: (0..threads)
                .map(|_| Worker {
                    queue: Mutex::new(VecDeque::new()),
                    inbox: Mutex::new(VecDeque::new()),
                    sleeping: AtomicBool::new(false),
                    thread: OnceLock::new(),
                })
                .collect(),
            inbox: Mutex::new(VecDeque::new()),
            searching: AtomicUsize::new(0),
            live: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            next_id: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            spin,
            runtime: runtime.clone(),
        });
        let mut handles = Vec::with_capacity(threads);
        for index in 0..threads {
            let shared2 = shared.clone();
            let handle = thread::Builder::new()
                .name(format!("molt-proc-{index}"))
                .spawn(move || worker_loop(shared2, index))?;
            let _ = shared.workers[index].thread.set(handle.thread().clone());
            handles.push(handle);
        }
        // Dropped when the runtime shuts down (or never, if it never does).
        let sentinel = Sentinel {
            shared: shared.clone(),
            handles,
        };
        runtime.spawn(async move {
            let _sentinel = sentinel;
            std::future::pending::<()>().await
        });
        Ok(Scheduler { shared })
    }

    /// Run `future` as a task of this scheduler.
    #[cfg(test)]
    pub(crate) fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        self.prepare(future).start();
    }

    /// A task of this scheduler that runs `future` once started: its
    /// waker is known before it runs (see [`Prepared::waker`]).
    pub(crate) fn prepare(&self, future: impl Future<Output = ()> + Send + 'static) -> Prepared {
        let shared = &self.shared;
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        Prepared(Some(Arc::new(Task {
            id,
            state: AtomicU8::new(SCHEDULED),
            home: AtomicUsize::new(NO_HOME),
            future: Mutex::new(Some(Box::pin(future))),
            shared: shared.clone(),
        })))
    }
}

/// A task made and not yet started ([`Scheduler::prepare`]). Dropped
/// unstarted, its future is dropped without running.
pub(crate) struct Prepared(Option<Arc<Task>>);

impl Prepared {
    /// The waker every poll of this task is given: calling it by reference
    /// wakes the task whenever it waits, with nothing to register per wait.
    pub(crate) fn waker(&self) -> std::task::Waker {
        futures_util::task::waker(self.0.clone().expect("not yet started"))
    }

    /// Queue the task to run.
    pub(crate) fn start(mut self) {
        let task = self.0.take().expect("started once");
        let shared = task.shared.clone();
        shared.live[task.id as usize % SHARDS]
            .lock()
            .expect("live poisoned")
            .insert(task.id, task.clone());
        shared.schedule(task, false);
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        // Never started: its future goes now (a waker of it kept elsewhere
        // must not keep it alive), and a wake finds it done.
        if let Some(task) = self.0.take() {
            task.state.store(DONE, Ordering::Release);
            let future = task.future.lock().expect("task poisoned").take();
            drop(future);
        }
    }
}

/// Stops the scheduler when dropped: the threads end after their current
/// poll and every unfinished task is dropped.
struct Sentinel {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let shared = &self.shared;
        shared.stopping.store(true, Ordering::SeqCst);
        for worker in &shared.workers {
            worker.sleeping.store(false, Ordering::SeqCst);
            if let Some(thread) = worker.thread.get() {
                thread.unpark();
            }
        }
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
        // Queued tasks only hold references; the futures go with the
        // registry. Each is dropped outside every lock, since dropping a
        // process ends it (links, monitors, the node's counts).
        shared.inbox.lock().expect("inbox poisoned").clear();
        for worker in &shared.workers {
            worker.queue.lock().expect("queue poisoned").clear();
            worker.inbox.lock().expect("inbox poisoned").clear();
        }
        for shard in &shared.live {
            let tasks: Vec<Arc<Task>> = shard
                .lock()
                .expect("live poisoned")
                .drain()
                .map(|(_, t)| t)
                .collect();
            for task in tasks {
                task.state.store(DONE, Ordering::Release);
                let future = task.future.lock().expect("task poisoned").take();
                drop(future);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_run_wake_each_other_and_finish() {
        let sched = Scheduler::start(
            2,
            Duration::from_micros(20),
            &tokio::runtime::Handle::current(),
        )
        .expect("threads");
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        // A ring of 50 tasks passing a token 10 times round, through
        // tokio channels; then a timer inside a task.
        let n = 50;
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..n {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
            senders.push(tx);
            receivers.push(rx);
        }
        for (i, mut rx) in receivers.into_iter().enumerate() {
            let next = senders[(i + 1) % n].clone();
            let done = done_tx.clone();
            sched.spawn(async move {
                while let Some(hops) = rx.recv().await {
                    if hops == 0 {
                        let _ = done.send(i);
                        return;
                    }
                    let _ = next.send(hops - 1);
                }
            });
        }
        senders[0].send(10 * n as u32).expect("first");
        let finished = tokio::time::timeout(Duration::from_secs(10), done_rx.recv())
            .await
            .expect("the token went round");
        assert_eq!(finished, Some(0));
        let slept = Arc::new(AtomicU32::new(0));
        let s = slept.clone();
        let done = done_tx.clone();
        sched.spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.store(1, Ordering::SeqCst);
            let _ = done.send(usize::MAX);
        });
        let woke = tokio::time::timeout(Duration::from_secs(10), done_rx.recv())
            .await
            .expect("the timer fired");
        assert_eq!(woke, Some(usize::MAX));
        assert_eq!(slept.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_pair_handing_off_forever_lets_a_queued_task_run() {
        // One thread. A wakes C and then B: B takes the `next` slot and C
        // goes to the queue behind it. A and B then wake each other for
        // ever through the slot; C must still run.
        let sched = Scheduler::start(1, Duration::ZERO, &tokio::runtime::Handle::current())
            .expect("threads");
        let (to_a, mut a_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (to_b, mut b_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (to_c, mut c_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (ran_tx, mut ran_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let hops = Arc::new(AtomicU32::new(0));
        let (to_b2, h) = (to_b.clone(), hops.clone());
        sched.spawn(async move {
            while b_rx.recv().await.is_some() {
                h.fetch_add(1, Ordering::Relaxed);
                let _ = to_a.send(());
            }
        });
        sched.spawn(async move {
            while c_rx.recv().await.is_some() {
                let _ = ran_tx.send(());
            }
        });
        sched.spawn(async move {
            let _ = to_c.send(());
            let _ = to_b2.send(());
            while a_rx.recv().await.is_some() {
                let _ = to_b2.send(());
            }
        });
        let ran = tokio::time::timeout(Duration::from_secs(10), ran_rx.recv())
            .await
            .expect("the queued task ran");
        assert_eq!(ran, Some(()));
        // And the pair went on.
        let before = hops.load(Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(10), async {
            while hops.load(Ordering::Relaxed) < before + 1_000 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the pair kept handing off");
        drop(to_b);
    }

    #[test]
    fn a_runtime_shutting_down_drops_the_tasks_left() {
        struct Dropped(Arc<AtomicU32>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicU32::new(0));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let sched = Scheduler::start(2, Duration::ZERO, runtime.handle()).expect("threads");
        for _ in 0..10 {
            let guard = Dropped(dropped.clone());
            sched.spawn(async move {
                let _guard = guard;
                std::future::pending::<()>().await
            });
        }
        drop(runtime);
        assert_eq!(dropped.load(Ordering::SeqCst), 10);
    }
}
