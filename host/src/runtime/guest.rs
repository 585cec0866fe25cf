//! A guest process: one wasmtime `Store` and instance, run as a tokio task.
//! Behaviours are called once per message; raw processes run their entry
//! function, which blocks in `receive`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use molt_abi::{exports, reason};
use wasmtime::{Memory, ResourceLimiter, Store, StoreContextMut, TypedFunc, UpdateDeadline};

use super::cell::{Message, Reason};
use super::core::ProcessCore;
use super::guest_mem::GuestFault;
use crate::code::{ModuleKind, ModuleVersion};

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
}

impl ProcState {
    /// The reason the guest should unwind with, if a signal ended it.
    pub(crate) fn exit_error(&self) -> Option<wasmtime::Error> {
        self.core
            .exit
            .as_ref()
            .map(|r| wasmtime::Error::new(ProcessExit(r.clone())))
    }
}

/// Run a process to its end and tell its links and monitors.
pub(crate) async fn run(core: ProcessCore, version: Arc<ModuleVersion>, args: Box<[u8]>) {
    let node = core.node.clone();
    let pid = core.pid();
    let limiter = Limiter {
        cell: core.cell.clone(),
        memory_bytes_max: node.config.memory_bytes_max as usize,
        table_elements_max: node.config.table_elements_max as usize,
        refused: None,
    };
    let state = ProcState {
        core,
        current: Some(Message {
            tag: molt_abi::tag::DATA,
            reference: molt_abi::Ref::NONE,
            payload: args,
        }),
        memory: None,
        limiter,
        backpressure: None,
    };
    let mut store = Store::new(&node.engine, state);
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_callback(on_epoch);
    let outcome = drive(&mut store, &version).await;
    let why: Reason = match outcome {
        Ok(()) => reason::NORMAL.into(),
        Err(e) => exit_reason(&e, store.data()),
    };
    let state = store.into_data();
    log_exit(pid, &version, &why);
    state.core.terminate(why);
}

fn log_exit(pid: molt_abi::Pid, version: &ModuleVersion, why: &str) {
    let module = &version.identity.name;
    match why {
        // Exits that are part of normal operation (a supervisor's shutdown,
        // a kill the operator asked for) are not crashes.
        reason::NORMAL | reason::SHUTDOWN | reason::KILLED => {
            tracing::debug!(%pid, %module, reason = %why, "process exited")
        }
        reason::NOPROC | reason::NOCONNECTION => {
            tracing::info!(%pid, %module, reason = %why, "process exited")
        }
        _ => tracing::warn!(%pid, %module, reason = %why, "process crashed"),
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

async fn drive(store: &mut Store<ProcState>, version: &ModuleVersion) -> wasmtime::Result<()> {
    let instance = match version.pre.instantiate_async(&mut *store).await {
        Ok(instance) => instance,
        // A signal that ended the process during instantiation keeps its reason.
        Err(e) if e.downcast_ref::<ProcessExit>().is_some() => return Err(e),
        Err(e) => {
            return Err(wasmtime::Error::new(ProcessExit(
                format!("{}cannot instantiate: {e:#}", reason::LIMIT_PREFIX).into(),
            )));
        }
    };
    store.data_mut().memory = instance.get_memory(&mut *store, exports::MEMORY);
    let args_len = store.data().current.as_ref().map_or(0, |m| m.payload.len()) as i32;
    match version.kind {
        ModuleKind::Raw => {
            let main: TypedFunc<i32, ()> =
                instance.get_typed_func(&mut *store, exports::MAIN.name)?;
            store.set_epoch_deadline(1);
            main.call_async(&mut *store, args_len).await
        }
        ModuleKind::Behaviour => {
            let init: TypedFunc<i32, ()> =
                instance.get_typed_func(&mut *store, exports::INIT.name)?;
            let handle: TypedFunc<(i32, i32), ()> =
                instance.get_typed_func(&mut *store, exports::HANDLE.name)?;
            store.set_epoch_deadline(1);
            init.call_async(&mut *store, args_len).await?;
            store
                .data()
                .core
                .node
                .initialized
                .fetch_add(1, Ordering::Relaxed);
            loop {
                let message = next_message(store).await?;
                let (tag, len) = (message.tag as i32, message.payload.len() as i32);
                store.data_mut().current = Some(message);
                store.set_epoch_deadline(1);
                handle.call_async(&mut *store, (tag, len)).await?;
            }
        }
    }
}

/// The next message for a behaviour, waiting if there is none; an error if
/// a signal ends the process first.
async fn next_message(store: &mut Store<ProcState>) -> wasmtime::Result<Message> {
    let cell = store.data().core.cell.clone();
    if let Some(wait) = store.data_mut().backpressure.take() {
        wait.await;
    }
    loop {
        let state = store.data_mut();
        state.core.absorb();
        if let Some(e) = state.exit_error() {
            return Err(e);
        }
        if let Some(m) = state.core.take_next() {
            return Ok(m);
        }
        cell.wake.notified().await;
    }
}
