//! A guest process: one wasmtime `Store` and instance, run as a tokio task.
//! Behaviours are called once per message; raw processes run their entry
//! function, which blocks in `receive`.
//!
//! A behaviour moves to a new version of its module between two messages:
//! the old instance saves its state, a new store and instance of the new
//! version get it in `molt_code_change`, and the process (mailbox, links,
//! monitors) moves over. If the new version refuses, the process goes on
//! in the old instance as if nothing happened.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use molt_abi::{exports, reason};
use wasmtime::{
    Engine, Func, Instance, InstancePre, Memory, ResourceLimiter, Store, StoreContextMut,
    TypedFunc, UpdateDeadline,
};

use super::cell::{Hot, Message, ProcessCounters, Reason};
use super::core::ProcessCore;
use super::guest_mem::{self, GuestFault};
use super::upgrade::{SysError, SysOp, SysOutcome, SysRequest};
use crate::code::{ModuleKind, ModuleVersion, Upgrade};

/// Caps one process's linear memory and tables, and remembers whether it
/// refused, so the exit reason can name the limit.
pub(crate) struct Limiter {
    /// Where the current memory size is published, for `ps`.
    cell: Arc<super::cell::ProcessCell>,
    memory_bytes_max: usize,
    table_elements_max: usize,
    refused: Option<String>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes_max {
            self.refused = Some(format!(
                "{}linear memory would grow to {desired} bytes, past memory_bytes_max ({} bytes)",
                reason::LIMIT_PREFIX,
                self.memory_bytes_max
            ));
            return Ok(false);
        }
        self.cell.memory_bytes.store(desired, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements_max {
            self.refused = Some(format!(
                "{}table would grow to {desired} elements, past table_elements_max ({})",
                reason::LIMIT_PREFIX,
                self.table_elements_max
            ));
            return Ok(false);
        }
        Ok(true)
    }
}

/// The guest asked to end (`exit_self`), or a signal ended it: unwinds the
/// guest with this reason.
#[derive(Debug)]
pub(crate) struct ProcessExit(pub Reason);

impl fmt::Display for ProcessExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "process exit: {}", self.0)
    }
}

impl std::error::Error for ProcessExit {}

/// Everything a process's `Store` holds.
pub struct ProcState {
    pub(crate) core: ProcessCore,
    /// The message `msg_read` reads: the init arguments, then each message
    /// received or handled.
    pub(crate) current: Option<Message>,
    pub(crate) memory: Option<Memory>,
    limiter: Limiter,
    /// Set when a send filled a connection: wait on it before going on.
    pub(crate) backpressure: Option<super::backpressure::Wait>,
    /// Set while a migration's calls run (`molt_state_save`,
    /// `molt_code_change`): past it the call is cut off and the migration
    /// refused.
    migration_deadline: Option<std::time::Instant>,
    /// A `table_call` reply too long for the guest's buffer, until
    /// `table_reply` takes it.
    pub(crate) table_reply: Option<Vec<u8>>,
    /// Where `table_get` copies its table name and key.
    pub(crate) table_scratch: Vec<u8>,
    /// The version the instance runs (set when it is instantiated), so
    /// that `msg_next` sees a new one without asking the code server.
    version: Option<Arc<ModuleVersion>>,
    /// Messages `msg_next` may still hand the current `molt_handle` call
    /// (0 outside one).
    next_left: u32,
    /// The instance's inbox (`msg_inbox`): where a payload that fits is
    /// copied before `molt_handle` and in `msg_next`, as offset and length
    /// in its memory; `None` until it names one, and again in each new
    /// instance.
    pub(crate) inbox: Option<(i32, i32)>,
    /// The cell of the local process it last sent to (see
    /// `NodeInner::send_user_via`).
    pub(crate) last_sent_to: Option<Arc<super::cell::ProcessCell>>,
}

impl ProcState {
    /// For `msg_next`: the next queued message, if the behaviour may take
    /// it inside the current `molt_handle` call; `None` when the host has
    /// something to do between two messages first (see the import). An
    /// exit signal is an error, which ends the process.
    pub(crate) fn next_in_handle(&mut self) -> wasmtime::Result<Option<Message>> {
        if self.next_left == 0 {
            return Ok(None);
        }
        self.core.absorb_when_needed();
        if let Some(e) = self.exit_error() {
            return Err(e);
        }
        let superseded = self
            .version
            .as_ref()
            .is_none_or(|v| v.upgrade() != crate::code::Upgrade::NONE);
        if superseded
            || self.backpressure.is_some()
            || !self.core.system.is_empty()
            || self.core.cell.suspended.load(Ordering::Acquire)
        {
            return Ok(None);
        }
        let next = self.core.take_next();
        if next.is_some() {
            self.next_left -= 1;
        }
        Ok(next)
    }

    /// Copy the current message's payload into the inbox, if the instance
    /// named one and it fits there.
    pub(crate) fn fill_inbox(&self, mem: &mut [u8]) -> Result<(), GuestFault> {
        let (Some((at, room)), Some(current)) = (self.inbox, &self.current) else {
            return Ok(());
        };
        let payload = &current.payload;
        if payload.len() > room as usize {
            return Ok(());
        }
        guest_mem::write(mem, at, payload, "msg_inbox buffer")
    }

    /// The reason the guest should unwind with, if a signal ended it.
    pub(crate) fn exit_error(&self) -> Option<wasmtime::Error> {
        self.core
            .exit
            .as_ref()
            .map(|r| wasmtime::Error::new(ProcessExit(r.clone())))
    }
}

/// Run a process to its end and tell its links and monitors. The caller
/// counted the process on `version` ([`ModuleVersion::enter`]).
pub(crate) async fn run(core: ProcessCore, version: Arc<ModuleVersion>, args: Box<[u8]>) {
    let pid = core.pid();
    let cell = core.cell.clone();
    let args = data_message(args);
    let counting = core.node.config.process_counters;
    let store = new_store(core, Some(args), engine_now(&version));
    let mut process = Running {
        store,
        cell: cell.clone(),
        baseline: false,
        version,
        handlers: None,
        declined: None,
        hibernated: None,
        stays_awake: false,
        idle_timer: None,
    };
    // The process's time: every poll of its task (its guest, the host
    // functions it calls, taking its messages), two clock reads per poll
    // however many messages one poll handles.
    let cpu = counting.then_some(&cell.counters.cpu_ns);
    // At debug level, what the host logs while running this process says
    // which process it was (a span costs a little on every poll, so not
    // at the default level).
    let span = tracing::debug_span!(
        "process",
        node = %process.store.data().core.node.config.name,
        %pid,
        module = %process.version.identity.name,
        version = %process.version.identity.version,
    );
    // Boxed: the process's task then holds its message loop once, not
    // again in each future that passes it on.
    let drive = Box::pin(tracing::Instrument::instrument(process.drive(), span));
    cell.hot
        .note(Hot::LOOP, &*drive as *const _ as *const u8 as usize, 4);
    let outcome = on_cpu(cpu, drive).await;
    let why: Reason = match outcome {
        Ok(()) => reason::NORMAL.into(),
        Err(e) => exit_reason(&e, process.store.data()),
    };
    if process.hibernated.is_some() {
        process.count_asleep(false);
    }
    let Running { store, version, .. } = process;
    let state = store.into_data();
    log_exit(pid, &version, &why);
    // The version stops counting the process once it has left the table
    // and before its links and watchers hear of the end: a purge waiting
    // for the version to drain finds it gone from the table, and a soft
    // purge by whoever got its `DOWN` finds the version free.
    state.core.terminate(why, || version.leave());
}

/// A store for one instance of a process, with its limits and epoch
/// callback.
fn new_store(core: ProcessCore, current: Option<Message>, engine: &Engine) -> Store<ProcState> {
    let node = core.node.clone();
    let limiter = Limiter {
        cell: core.cell.clone(),
        memory_bytes_max: node.config.memory_bytes_max as usize,
        table_elements_max: node.config.table_elements_max as usize,
        refused: None,
    };
    let state = ProcState {
        core,
        current,
        memory: None,
        limiter,
        backpressure: None,
        migration_deadline: None,
        table_reply: None,
        table_scratch: Vec::new(),
        version: None,
        next_left: 0,
        inbox: None,
        last_sent_to: None,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_callback(on_epoch);
    // A new store's deadline is epoch 0, long past: the code wasmtime runs
    // to start an instance (its start function, initialisers) would yield
    // at its first check, and every spawn would go round the scheduler
    // once before its `init`. Still preempted at the next tick.
    store.set_epoch_deadline(1);
    store
}

fn log_exit(pid: molt_abi::Pid, version: &ModuleVersion, why: &str) {
    let module = &version.identity.name;
    let version = &version.identity.version;
    match why {
        // Exits that are part of normal operation (a supervisor's shutdown,
        // a kill the operator asked for) are not crashes.
        reason::NORMAL | reason::SHUTDOWN | reason::KILLED => {
            tracing::debug!(%pid, %module, %version, reason = %why, "process exited")
        }
        // A purge logs once for all it kills.
        _ if why.starts_with(reason::PURGED_PREFIX) => {
            tracing::debug!(%pid, %module, %version, reason = %why, "process exited")
        }
        reason::NOPROC | reason::NOCONNECTION => {
            tracing::info!(%pid, %module, %version, reason = %why, "process exited")
        }
        _ => tracing::warn!(%pid, %module, %version, reason = %why, "process crashed"),
    }
}

/// Epoch tick: yield to other processes, after checking for a pending
/// exit signal so that even a guest in an endless loop can be killed.
fn on_epoch(mut cx: StoreContextMut<'_, ProcState>) -> wasmtime::Result<UpdateDeadline> {
    let state = cx.data_mut();
    if state.core.cell.urgent.load(Ordering::Acquire) {
        state.core.absorb();
    }
    if let Some(e) = state.exit_error() {
        return Err(e);
    }
    if state
        .migration_deadline
        .is_some_and(|d| std::time::Instant::now() >= d)
    {
        let limit = state.core.node.config.code_change_timeout;
        return Err(wasmtime::Error::new(ProcessExit(
            format!(
                "{}ran past code_change_timeout ({} ms)",
                reason::LIMIT_PREFIX,
                limit.as_millis()
            )
            .into(),
        )));
    }
    match state.backpressure.take() {
        Some(wait) => Ok(UpdateDeadline::YieldCustom(1, wait)),
        None => Ok(UpdateDeadline::Yield(1)),
    }
}

/// Why a process ended, from the error its guest call returned.
fn exit_reason(error: &wasmtime::Error, state: &ProcState) -> Reason {
    if let Some(ProcessExit(why)) = error.downcast_ref::<ProcessExit>() {
        return why.clone();
    }
    if let Some(fault) = error.downcast_ref::<GuestFault>() {
        return fault.to_string().into();
    }
    if let Some(refused) = &state.limiter.refused {
        // A guest whose allocator failed usually aborts with a trap; the
        // limit it hit is the useful reason.
        return refused.as_str().into();
    }
    let text = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("{}{trap}", reason::TRAP_PREFIX),
        None => format!("{}{error:#}", reason::TRAP_PREFIX),
    };
    reason::truncate(&text).into()
}

/// A behaviour's entry points in its current instance.
struct Handlers {
    handle: TypedFunc<(i32, i32), ()>,
    /// `molt_state_save` and `molt_state_restore`, typed when they are
    /// called (an upgrade, a hibernation), not per instance: typing an
    /// export roots its type in the engine's registry, a lock and reference
    /// counts every process thread writes (4–5 % of a spawn for the four
    /// typed exports). Their types were checked when the module was loaded.
    state_save: Option<Func>,
    state_restore: Option<Func>,
}

impl Handlers {
    fn of(instance: &Instance, store: &mut Store<ProcState>) -> wasmtime::Result<Handlers> {
        Ok(Handlers {
            handle: instance.get_typed_func(&mut *store, exports::HANDLE.name)?,
            state_save: instance.get_func(&mut *store, exports::STATE_SAVE.name),
            state_restore: instance.get_func(&mut *store, exports::STATE_RESTORE.name),
        })
    }
}

/// What a behaviour's loop does next.
enum Event {
    /// The mailbox has a message: taken straight into the store's current
    /// message once the process is ready for it (see [`Running::handle_next`]),
    /// so the message is not moved through the loop.
    Message,
    /// Move to this version now (eager upgrade).
    Upgrade(Arc<ModuleVersion>),
    System(SysRequest),
    /// Idle for `hibernate_after`: hibernate.
    Hibernate,
}

/// A running process: its store (which a migration replaces) and the
/// version that store's instance runs.
struct Running {
    store: Store<ProcState>,
    /// Its cell (also its store's), at hand without a reference count
    /// taken per wait.
    cell: Arc<super::cell::ProcessCell>,
    /// Its instance runs the baseline tier's code (it moves onto the
    /// optimised code at its next message once that is ready).
    baseline: bool,
    version: Arc<ModuleVersion>,
    handlers: Option<Handlers>,
    /// A version whose migration failed: not tried again.
    declined: Option<Weak<ModuleVersion>>,
    /// While hibernating: the state it saved (its store holds no instance).
    hibernated: Option<Vec<u8>>,
    /// Its `molt_state_save` refused to hibernate once: it does not try again.
    stays_awake: bool,
    /// With `hibernate_after`: the timer of its idle waits, armed once and
    /// moved on only when it fires early (one timer per `hibernate_after`
    /// of activity rather than one per message).
    idle_timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The clock processes' CPU time is read from, twice per poll: the CPU's
/// time-stamp counter where it is invariant (else the OS clock). Two reads
/// measured 19 ns here against 49 ns for two `Instant` reads, about 4 % of
/// a local round trip.
static CPU_CLOCK: std::sync::LazyLock<quanta::Clock> = std::sync::LazyLock::new(quanta::Clock::new);

/// Set up [`CPU_CLOCK`] on a thread of its own, once per OS process, so
/// that no process waits for it: the counter is calibrated against the OS
/// clock first, a busy loop (0.6–0.7 ms on an idle machine here, longer
/// under load, 200 ms at most). A process polled before it is done waits
/// for the rest.
pub(crate) fn calibrate_cpu_clock() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let calibrate = || {
            std::sync::LazyLock::force(&CPU_CLOCK);
        };
        if std::thread::Builder::new()
            .name("molt-clock".into())
            .spawn(calibrate)
            .is_err()
        {
            calibrate();
        }
    });
}

/// Run `call`, adding the time spent inside its polls (running, not
/// waiting on an import or for its turn) to `cpu_ns`.
async fn on_cpu<T>(cpu_ns: Option<&AtomicU64>, call: impl Future<Output = T>) -> T {
    let Some(cpu_ns) = cpu_ns else {
        return call.await;
    };
    let clock: &quanta::Clock = &CPU_CLOCK;
    let mut call = std::pin::pin!(call);
    std::future::poll_fn(|cx| {
        let start = clock.raw();
        let polled = call.as_mut().poll(cx);
        ProcessCounters::bump(cpu_ns, clock.delta_as_nanos(start, clock.raw()));
        polled
    })
    .await
}

/// Why a migration did not happen; the process stays where it was.
type Refusal = String;

impl Running {
    async fn drive(&mut self) -> wasmtime::Result<()> {
        // Known before the instance runs any code: an epoch tick during
        // instantiation or `init` may take in a system request (it cannot
        // wait behind messages), which queues for the message loop only
        // in a behaviour.
        if matches!(self.version.kind, ModuleKind::Behaviour) {
            self.store.data_mut().core.behaviour = true;
        }
        // The rare paths' futures are boxed, each while it runs, so that
        // the process's future (one allocation for its life) is the size
        // of its message loop, not of its largest step.
        let instance = Box::pin(instantiate(&mut self.store, &self.version)).await?;
        self.set_baseline(self.on_baseline());
        let args_len = self
            .store
            .data()
            .current
            .as_ref()
            .map_or(0, |m| m.payload.len()) as i32;
        match self.version.kind {
            ModuleKind::Raw => {
                let main: TypedFunc<i32, ()> =
                    instance.get_typed_func(&mut self.store, exports::MAIN.name)?;
                self.store.set_epoch_deadline(1);
                Box::pin(main.call_async(&mut self.store, args_len)).await
            }
            ModuleKind::Behaviour => {
                let init: TypedFunc<i32, ()> =
                    instance.get_typed_func(&mut self.store, exports::INIT.name)?;
                self.handlers = Some(Handlers::of(&instance, &mut self.store)?);
                self.store.set_epoch_deadline(1);
                Box::pin(init.call_async(&mut self.store, args_len)).await?;
                self.store
                    .data()
                    .core
                    .node
                    .initialized
                    .fetch_add(1, Ordering::Relaxed);
                loop {
                    let event = self.next_event().await?;
                    // Whatever comes for a sleeper wakes it first (it only
                    // hibernates from awake).
                    if self.hibernated.is_some() {
                        Box::pin(self.wake()).await?;
                    }
                    match event {
                        Event::Hibernate => Box::pin(self.hibernate()).await?,
                        Event::Message => {
                            // Lazy or eager: a message is a boundary at
                            // which the process moves on first.
                            if let Some(target) = self.upgrade_target() {
                                Box::pin(self.upgrade(target)).await?;
                            }
                            if self.baseline && self.version.optimised() {
                                Box::pin(self.tier_up()).await?;
                            }
                            self.handle_next().await?;
                        }
                        Event::Upgrade(target) => {
                            Box::pin(self.upgrade(target)).await?;
                        }
                        Event::System(request) => Box::pin(self.system(request)).await?,
                    }
                }
            }
        }
    }

    /// Call `molt_handle` for the next message in the mailbox, taken into
    /// the store's current message in place (a message is 104 bytes: each
    /// move through the loop's futures was a copy).
    async fn handle_next(&mut self) -> wasmtime::Result<()> {
        let state = self.store.data_mut();
        state.current = state.core.take_next();
        // Only this process takes from its mailbox, and nothing between
        // `next_event` and here handles messages; an empty one is nothing
        // to do all the same.
        let Some(message) = &state.current else {
            return Ok(());
        };
        let (tag, len) = (message.tag as i32, message.payload.len() as i32);
        if let Some(memory) = state.memory {
            let (mem, state) = memory.data_and_store_mut(&mut self.store);
            state.fill_inbox(mem).map_err(wasmtime::Error::new)?;
        }
        self.store.set_epoch_deadline(1);
        // Borrowed, not cloned: cloning a TypedFunc bumps shared reference
        // counts in the engine, which both workers then fight over.
        let handlers = self.handlers.as_ref().expect("a behaviour");
        self.store.data_mut().next_left = molt_abi::NEXT_MAX;
        let handled = handlers
            .handle
            .call_async(&mut self.store, (tag, len))
            .await;
        self.store.data_mut().next_left = 0;
        handled
    }

    /// The next thing to do, waiting if there is none; an error if a signal
    /// ends the process first.
    async fn next_event(&mut self) -> wasmtime::Result<Event> {
        let cell = &self.cell;
        if let Some(wait) = self.store.data_mut().backpressure.take() {
            wait.await;
        }
        loop {
            let state = self.store.data_mut();
            state.core.absorb_when_needed();
            if let Some(e) = state.exit_error() {
                return Err(e);
            }
            if let Some(request) = state.core.system.pop_front() {
                return Ok(Event::System(request));
            }
            if !cell.suspended.load(Ordering::Acquire) {
                if self.version.upgrade() == Upgrade::EAGER
                    && let Some(target) = self.upgrade_target()
                {
                    return Ok(Event::Upgrade(target));
                }
                if !self.store.data().core.mailbox.is_empty() {
                    return Ok(Event::Message);
                }
            }
            match self.hibernate_after() {
                Some(after) => {
                    let asleep_at = tokio::time::Instant::now() + after;
                    // A timer armed in an earlier wait fires no later
                    // than `asleep_at` (same `after`, earlier start).
                    let timer = self
                        .idle_timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(asleep_at)));
                    loop {
                        tokio::select! {
                            biased;
                            () = cell.wake.rung() => break,
                            () = timer.as_mut() => {
                                // Armed during an earlier wait: idle since
                                // this one began only once `after` has passed.
                                if tokio::time::Instant::now() >= asleep_at {
                                    return Ok(Event::Hibernate);
                                }
                                timer.as_mut().reset(asleep_at);
                            }
                        }
                    }
                }
                None => cell.wake.rung().await,
            }
        }
    }

    /// How long this process may idle before it hibernates, if it may.
    fn hibernate_after(&self) -> Option<std::time::Duration> {
        let after = self.store.data().core.node.config.hibernate_after?;
        let able = self
            .handlers
            .as_ref()
            .is_some_and(|h| h.state_save.is_some() && h.state_restore.is_some());
        (able && self.hibernated.is_none() && !self.stays_awake).then_some(after)
    }

    /// Save the state and give back the instance (its slot, linear memory
    /// and native stack); the process keeps its mailbox, links and
    /// monitors in a store without an instance. A refusal to save keeps
    /// it awake for good.
    async fn hibernate(&mut self) -> wasmtime::Result<()> {
        let state = match self.save_state().await? {
            Ok(state) => state,
            Err(why) => {
                let pid = self.store.data().core.pid();
                tracing::debug!(%pid, "not hibernating: {why}");
                self.stays_awake = true;
                return Ok(());
            }
        };
        self.drop_instance();
        self.hibernated = Some(state);
        self.store
            .data()
            .core
            .cell
            .memory_bytes
            .store(0, Ordering::Relaxed);
        self.count_asleep(true);
        Ok(())
    }

    /// Show the process asleep or awake (`ps`) and count it on the node.
    fn count_asleep(&self, asleep: bool) {
        let core = &self.store.data().core;
        core.cell.hibernated.store(asleep, Ordering::Relaxed);
        match asleep {
            true => core.node.hibernated.fetch_add(1, Ordering::Relaxed),
            false => core.node.hibernated.fetch_sub(1, Ordering::Relaxed),
        };
    }

    /// Out of hibernation: a new instance of the same version, given the
    /// saved state in `molt_state_restore`. A refusal or a trap ends the
    /// process (`hibernation: ...`): it has no other state to go on with.
    async fn wake(&mut self) -> wasmtime::Result<()> {
        let state = self.hibernated.take().expect("hibernating");
        self.count_asleep(false);
        self.restore(state).await
    }

    /// Give back the instance: the process goes on in a store without
    /// one (on the engine its next instance will take).
    fn drop_instance(&mut self) {
        let bare = self.move_to_new_store(None, &self.version.clone());
        drop(std::mem::replace(&mut self.store, bare));
        self.handlers = None;
        self.set_baseline(false);
    }

    /// Onto the optimised code, which is ready, from the baseline code it
    /// runs, as a migration to the same version: its state saved
    /// (`molt_state_save`), a new instance on the optimised code given it
    /// in `molt_state_restore` (as after hibernation), and only then the
    /// old instance dropped. A behaviour that cannot save its state, or
    /// whose new instance refuses it, stays on the baseline code, untouched.
    async fn tier_up(&mut self) -> wasmtime::Result<()> {
        self.baseline = false;
        let able = self
            .handlers
            .as_ref()
            .is_some_and(|h| h.state_save.is_some() && h.state_restore.is_some());
        if !able {
            return Ok(());
        }
        let pid = self.store.data().core.pid();
        let state = match self.save_state().await? {
            Ok(state) => state,
            Err(why) => {
                tracing::debug!(%pid, "staying on baseline code: {why}");
                return Ok(());
            }
        };
        let len = state.len() as i32;
        let version = self.version.clone();
        let mut next =
            self.move_to_new_store(Some(data_message(state.into_boxed_slice())), &version);
        match restore_in(&mut next, &version, len).await {
            Ok(Ok(handlers)) => {
                let old = std::mem::replace(&mut self.store, next);
                self.handlers = Some(handlers);
                self.set_baseline(self.on_baseline());
                drop(old);
                Ok(())
            }
            Ok(Err(why)) => {
                swap_process(next.data_mut(), self.store.data_mut());
                self.republish_memory();
                tracing::debug!(%pid, "staying on baseline code: {why}");
                Ok(())
            }
            Err(e) => {
                swap_process(next.data_mut(), self.store.data_mut());
                Err(e)
            }
        }
    }

    /// A new instance of the process's version, given `state` in
    /// `molt_state_restore`; a refusal or a trap ends the process
    /// (`hibernation: ...`): it has no other state to go on with.
    async fn restore(&mut self, state: Vec<u8>) -> wasmtime::Result<()> {
        let len = state.len() as i32;
        self.store.data_mut().current = Some(data_message(state.into_boxed_slice()));
        let instance = instantiate(&mut self.store, &self.version).await?;
        self.set_baseline(self.on_baseline());
        let handlers = Handlers::of(&instance, &mut self.store)?;
        match call_state_restore(&mut self.store, &handlers, len).await? {
            Ok(()) => {
                self.handlers = Some(handlers);
                Ok(())
            }
            Err(why) => Err(wasmtime::Error::new(ProcessExit(
                reason::truncate(&format!("hibernation: cannot restore the state: {why}")).into(),
            ))),
        }
    }

    /// A new store for an instance of `version` (on the engine of its code
    /// ready now), with `current` as its current message; the process
    /// (mailbox, links, monitors, exit) moves into it, and this store
    /// keeps none.
    fn move_to_new_store(
        &mut self,
        current: Option<Message>,
        version: &ModuleVersion,
    ) -> Store<ProcState> {
        let core = &self.store.data().core;
        let placeholder = ProcessCore::new(core.node.clone(), core.cell.clone());
        let mut next = new_store(placeholder, current, engine_now(version));
        swap_process(self.store.data_mut(), next.data_mut());
        next
    }

    /// Note whether its instance runs baseline code (and show it).
    /// Called whenever the process takes a new store (its first
    /// instance, an upgrade, tiering up, hibernation), so also where the
    /// new store's state is noted for wakers to fetch ahead.
    fn set_baseline(&mut self, baseline: bool) {
        self.baseline = baseline;
        let state = self.store.data();
        let cell = &state.core.cell;
        cell.baseline_code.store(baseline, Ordering::Relaxed);
        cell.hot
            .note(Hot::STATE, state as *const ProcState as usize, 4);
    }

    /// Whether the store's instance runs the baseline tier's code.
    fn on_baseline(&self) -> bool {
        !Engine::same(self.store.engine(), &self.store.data().core.node.engine)
    }

    /// The version to move to, if this one is no longer current and the
    /// current one was not refused already.
    fn upgrade_target(&self) -> Option<Arc<ModuleVersion>> {
        if self.version.upgrade() == Upgrade::NONE {
            return None;
        }
        let code = &self.store.data().core.node.code;
        let target = code.current(&self.version.identity.name)?;
        let refused = self
            .declined
            .as_ref()
            .and_then(Weak::upgrade)
            .is_some_and(|d| Arc::ptr_eq(&d, &target));
        let usable = !Arc::ptr_eq(&target, &self.version)
            && !refused
            && target.kind == ModuleKind::Behaviour;
        usable.then_some(target)
    }

    async fn system(&mut self, request: SysRequest) -> wasmtime::Result<()> {
        let cell = self.store.data().core.cell.clone();
        match request.op {
            SysOp::Suspend => {
                cell.suspended.store(true, Ordering::Release);
                request.answer(Ok(SysOutcome::Done));
            }
            SysOp::Resume => {
                cell.suspended.store(false, Ordering::Release);
                request.answer(Ok(SysOutcome::Done));
            }
            SysOp::ChangeCode => {
                let code = &self.store.data().core.node.code;
                let target = code
                    .current(&self.version.identity.name)
                    .filter(|t| !Arc::ptr_eq(t, &self.version));
                let Some(target) = target else {
                    let version = self.version.identity.version.clone();
                    request.answer(Ok(SysOutcome::Unchanged { version }));
                    return Ok(());
                };
                let from = self.version.identity.version.clone();
                let to = target.identity.version.clone();
                if target.kind != ModuleKind::Behaviour {
                    request.refuse(SysError::Failed(format!("version {to} is not a behaviour")));
                    return Ok(());
                }
                match self.migrate(target.clone()).await? {
                    Ok(()) => request.answer(Ok(SysOutcome::Upgraded { from, to })),
                    Err(why) => {
                        self.report_refusal(&target, &why);
                        request.refuse(SysError::Failed(why));
                    }
                }
            }
        }
        Ok(())
    }

    /// Move to `target`; a refusal is reported and remembered, so the
    /// process does not try that version again.
    async fn upgrade(&mut self, target: Arc<ModuleVersion>) -> wasmtime::Result<()> {
        if let Err(why) = self.migrate(target.clone()).await? {
            self.report_refusal(&target, &why);
            self.declined = Some(Arc::downgrade(&target));
        }
        Ok(())
    }

    fn report_refusal(&self, target: &ModuleVersion, why: &str) {
        let core = &self.store.data().core;
        core.node
            .counters
            .failed_migrations
            .fetch_add(1, Ordering::Relaxed);
        let (pid, name) = (core.pid(), &self.version.identity.name);
        let (from, to) = (&self.version.identity.version, &target.identity.version);
        tracing::warn!(%pid, module = %name, %from, %to, "upgrade failed, process stays on {from}: {why}");
        core.node.code.record(
            name,
            format!("{pid} stays on {from}: upgrade to {to} failed: {why}"),
            true,
        );
        *core
            .cell
            .upgrade_failure
            .lock()
            .expect("upgrade failure poisoned") = Some(format!("to {to}: {why}"));
    }

    /// Move this process to `target`: save the state in the old instance,
    /// instantiate the new version in a new store, hand it the state in
    /// `code_change`. On success the old instance is dropped; on a refusal
    /// (`Ok(Err)`) the process goes on in the old one, untouched. `Err` is
    /// a signal that ends the process.
    async fn migrate(
        &mut self,
        target: Arc<ModuleVersion>,
    ) -> wasmtime::Result<Result<(), Refusal>> {
        let state = match self.save_state().await? {
            Ok(state) => state,
            Err(why) => return Ok(Err(why)),
        };
        let from = self.version.identity.version.as_bytes();
        let mut input = Vec::with_capacity(4 + from.len() + state.len());
        input.extend_from_slice(&(from.len() as u32).to_le_bytes());
        input.extend_from_slice(from);
        input.extend_from_slice(&state);
        let input_len = input.len() as i32;
        // The process (mailbox, links, monitors, exit) moves to the new store
        // for the call, and back if the new version refuses.
        let mut next =
            self.move_to_new_store(Some(data_message(input.into_boxed_slice())), &target);
        let outcome = start_new(&mut next, &target, input_len).await;
        let handlers = match outcome {
            Ok(Ok(handlers)) => handlers,
            Ok(Err(why)) => {
                swap_process(next.data_mut(), self.store.data_mut());
                self.republish_memory();
                return Ok(Err(why));
            }
            Err(e) => {
                swap_process(next.data_mut(), self.store.data_mut());
                return Err(e);
            }
        };
        let cell = next.data().core.cell.clone();
        *cell.module.lock().expect("cell module poisoned") = Some(target.clone());
        *cell
            .upgrade_failure
            .lock()
            .expect("upgrade failure poisoned") = None;
        target.enter();
        next.data()
            .core
            .node
            .counters
            .upgrades
            .fetch_add(1, Ordering::Relaxed);
        let old = std::mem::replace(&mut self.version, target);
        let old_store = std::mem::replace(&mut self.store, next);
        self.handlers = Some(handlers);
        self.set_baseline(self.on_baseline());
        tracing::debug!(
            pid = %cell.pid,
            module = %old.identity.name,
            from = %old.identity.version,
            to = %self.version.identity.version,
            "process upgraded"
        );
        // Frees the old instance's slot before the version can drain.
        drop(old_store);
        old.leave();
        Ok(Ok(()))
    }

    /// The old instance's state (`molt_state_save`); empty if it exports
    /// none.
    async fn save_state(&mut self) -> wasmtime::Result<Result<Vec<u8>, Refusal>> {
        let Some(save) = self.handlers.as_ref().and_then(|h| h.state_save) else {
            return Ok(Ok(Vec::new()));
        };
        let save = match save.typed::<(), i64>(&self.store) {
            Ok(save) => save,
            Err(e) => return refusal(e, &self.store, "molt_state_save"),
        };
        self.store.set_epoch_deadline(1);
        self.store.data_mut().migration_deadline = Some(migration_deadline(&self.store));
        let saved = save.call_async(&mut self.store, ()).await;
        self.store.data_mut().migration_deadline = None;
        let packed = match saved {
            Ok(packed) => packed,
            Err(e) => return refusal(e, &self.store, "molt_state_save"),
        };
        Ok(read_packed(&self.store, packed, "molt_state_save result").map(<[u8]>::to_vec))
    }

    /// After a refused migration: the old instance's memory size, for `ps`.
    fn republish_memory(&mut self) {
        if let Some(memory) = self.store.data().memory {
            let size = memory.data_size(&self.store);
            let cell = &self.store.data().core.cell;
            cell.memory_bytes.store(size, Ordering::Relaxed);
        }
    }
}

/// Move the process between two stores' data.
fn swap_process(from: &mut ProcState, to: &mut ProcState) {
    std::mem::swap(&mut from.core, &mut to.core);
    to.backpressure = from.backpressure.take();
}

/// Instantiate `version` in `store` (on the optimised code) and give it
/// the saved state (`len` bytes, the store's current message) in
/// `molt_state_restore`.
async fn restore_in(
    store: &mut Store<ProcState>,
    version: &Arc<ModuleVersion>,
    len: i32,
) -> wasmtime::Result<Result<Handlers, Refusal>> {
    let instance = match instantiate(store, version).await {
        Ok(instance) => instance,
        Err(e) => return refusal(e, store, "instantiating the optimised code"),
    };
    let handlers = match Handlers::of(&instance, store) {
        Ok(handlers) => handlers,
        Err(e) => return Ok(Err(format!("{e:#}"))),
    };
    store.data_mut().migration_deadline = Some(migration_deadline(store));
    let restored = call_state_restore(store, &handlers, len).await;
    store.data_mut().migration_deadline = None;
    Ok(restored?.map(|()| handlers))
}

/// Call `molt_state_restore` with the store's current message (`len`
/// bytes): `Ok(Err)` with the guest's reason if it refuses the state, or
/// with what happened if it trapped; `Err` for a signal that ends the
/// process.
async fn call_state_restore(
    store: &mut Store<ProcState>,
    handlers: &Handlers,
    len: i32,
) -> wasmtime::Result<Result<(), Refusal>> {
    let restore = handlers
        .state_restore
        .expect("only a behaviour that restores is given its state back");
    let restore = match restore.typed::<i32, i64>(&*store) {
        Ok(restore) => restore,
        Err(e) => return refusal(e, store, "molt_state_restore"),
    };
    store.set_epoch_deadline(1);
    match restore.call_async(&mut *store, len).await {
        Ok(0) => Ok(Ok(())),
        Ok(packed) => Ok(Err(read_packed(store, packed, "molt_state_restore reason")
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_else(|why| why))),
        Err(e) => refusal(e, store, "molt_state_restore"),
    }
}

/// A data message carrying `payload` (spawn arguments, saved state).
fn data_message(payload: Box<[u8]>) -> Message {
    Message {
        tag: molt_abi::tag::DATA,
        reference: molt_abi::Ref::NONE,
        payload: payload.into(),
    }
}

/// Instantiate `target` in `store` and call its `molt_code_change`.
async fn start_new(
    store: &mut Store<ProcState>,
    target: &Arc<ModuleVersion>,
    input_len: i32,
) -> wasmtime::Result<Result<Handlers, Refusal>> {
    let instance = match instantiate(store, target).await {
        Ok(instance) => instance,
        Err(e) => return refusal(e, store, "instantiating the new version"),
    };
    let Ok(code_change) =
        instance.get_typed_func::<i32, i64>(&mut *store, exports::CODE_CHANGE.name)
    else {
        return Ok(Err(format!(
            "version {} exports no {}",
            target.identity.version,
            exports::CODE_CHANGE.name
        )));
    };
    let handlers = match Handlers::of(&instance, store) {
        Ok(handlers) => handlers,
        Err(e) => return Ok(Err(format!("{e:#}"))),
    };
    store.set_epoch_deadline(1);
    store.data_mut().migration_deadline = Some(migration_deadline(store));
    let changed = code_change.call_async(&mut *store, input_len).await;
    store.data_mut().migration_deadline = None;
    match changed {
        Ok(0) => Ok(Ok(handlers)),
        Ok(packed) => {
            let why = match read_packed(store, packed, "molt_code_change reason") {
                Ok(bytes) => format!("code_change refused: {}", String::from_utf8_lossy(bytes)),
                Err(why) => why,
            };
            Ok(Err(reason::truncate(&why).to_string()))
        }
        Err(e) => refusal(e, store, "molt_code_change"),
    }
}

fn migration_deadline(store: &Store<ProcState>) -> std::time::Instant {
    std::time::Instant::now() + store.data().core.node.config.code_change_timeout
}

/// A call into the guest failed during a migration: a signal that ends the
/// process stays an error; anything the guest did (a trap, a panic,
/// `exit_self`, a limit) refuses the migration with that reason.
fn refusal<T>(
    error: wasmtime::Error,
    store: &Store<ProcState>,
    during: &str,
) -> wasmtime::Result<Result<T, Refusal>> {
    if store.data().core.exit.is_some() {
        return Err(error);
    }
    Ok(Err(format!(
        "{during}: {}",
        exit_reason(&error, store.data())
    )))
}

/// The bytes at `(len << 32) | ptr` in the store's memory.
fn read_packed<'s>(
    store: &'s Store<ProcState>,
    packed: i64,
    what: &'static str,
) -> Result<&'s [u8], Refusal> {
    let (ptr, len) = (packed as u32 as i32, (packed as u64 >> 32) as u32 as i32);
    let Some(memory) = store.data().memory else {
        return Err("the guest exports no memory".to_string());
    };
    super::guest_mem::bytes(memory.data(store), ptr, len, what).map_err(|e| e.to_string())
}

/// The runtime's linked form of a version's code.
fn pre_of(linked: &crate::code::Linked) -> &InstancePre<ProcState> {
    linked
        .downcast_ref::<InstancePre<ProcState>>()
        .expect("the runtime's PreLink links every version")
}

/// The engine a new store for `version` is made on: the optimised code's
/// once ready, else the baseline code's.
fn engine_now(version: &ModuleVersion) -> &Engine {
    pre_of(version.code.now()).module().engine()
}

/// Instantiate `version` in `store` (which records it as the version its
/// instance runs); a failure is an exit (`limit: cannot instantiate`), or
/// the signal that ended the process meanwhile.
async fn instantiate(
    store: &mut Store<ProcState>,
    version: &Arc<ModuleVersion>,
) -> wasmtime::Result<Instance> {
    let code = &version.code;
    let pre = [code.optimised_code(), code.baseline_code()]
        .into_iter()
        .flatten()
        .map(pre_of)
        .find(|pre| Engine::same(pre.module().engine(), store.engine()))
        .expect("a store is made on the engine of one of its version's tiers");
    // An inbox is named by the instance it is in.
    store.data_mut().inbox = None;
    let instance = match pre.instantiate_async(&mut *store).await {
        Ok(instance) => instance,
        // A signal that ended the process during instantiation keeps its reason.
        Err(e) if e.downcast_ref::<ProcessExit>().is_some() => return Err(e),
        // The module's start function or a data segment trapped: a trap,
        // on one line like every other (no wasm backtrace in the reason).
        Err(e) if e.downcast_ref::<wasmtime::Trap>().is_some() => {
            let trap = e.downcast_ref::<wasmtime::Trap>().expect("checked");
            return Err(wasmtime::Error::new(ProcessExit(
                reason::truncate(&format!("{}{trap} (at instantiation)", reason::TRAP_PREFIX))
                    .into(),
            )));
        }
        Err(e) => {
            // The pool or a limit said no; its first line says which.
            let why = format!("{e:#}");
            let why = why.lines().next().unwrap_or("").trim().to_string();
            return Err(wasmtime::Error::new(ProcessExit(
                reason::truncate(&format!(
                    "{}cannot instantiate: {why}",
                    reason::LIMIT_PREFIX
                ))
                .into(),
            )));
        }
    };
    let memory = instance.get_memory(&mut *store, exports::MEMORY);
    if let (Some(memory), Some(pages)) = (memory, code.statics_pages.clone()) {
        // Write the statics' pages first, before the guest reads them:
        // each then takes one fault instead of two and a TLB shootdown
        // (see `analyze::statics_pages`). They are zero (no guest code has
        // run), so a zero byte changes nothing; in a recycled slot, whose
        // pages are resident, it costs a store.
        let mem = memory.data_mut(&mut *store);
        for page in pages {
            let at = u64::from(page) * crate::code::analyze::STATICS_PAGE_BYTES;
            if let Some(byte) = mem.get_mut(at as usize) {
                *byte = 0;
            }
        }
    }
    store.data_mut().memory = memory;
    store.data_mut().version = Some(version.clone());
    Ok(instance)
}
