//! A mailbox driven by host code: a process without a guest. The CLI,
//! benchmarks, tests and embedders use it to talk to processes. Its life is
//! its owner's: every exit signal, even `kill`, becomes an `EXIT` message,
//! and it ends (with reason `normal`) only when dropped.

use std::sync::Arc;
use std::time::Duration;

use molt_abi::{Pid, Ref, reason, sysmsg, tag};

use super::cell::{Message, ProcessCell};
use super::core::{Filter, ProcessCore};
use super::{NodeInner, SendError, SpawnError};

/// A host-side process handle. Dropping it ends the process with reason
/// `normal`.
pub struct HostMailbox {
    core: Option<ProcessCore>,
}

impl HostMailbox {
    pub(crate) fn open(node: Arc<NodeInner>) -> Result<Self, SpawnError> {
        let pid = node.reserve()?;
        let cell = Arc::new(ProcessCell::new(pid, None, None));
        node.enter(cell.clone());
        let mut core = ProcessCore::new(node, cell);
        core.trap_exit = true;
        core.host_driven = true;
        Ok(HostMailbox { core: Some(core) })
    }

    fn core(&mut self) -> &mut ProcessCore {
        self.core.as_mut().expect("core present until drop")
    }

    /// This mailbox's pid.
    pub fn pid(&self) -> Pid {
        self.core.as_ref().expect("core present until drop").pid()
    }

    /// Send a message.
    pub fn send(
        &mut self,
        to: Pid,
        tag: u32,
        reference: Ref,
        payload: Vec<u8>,
    ) -> Result<(), SendError> {
        let message = Message {
            tag,
            reference,
            payload: payload.into(),
        };
        let from = self.pid();
        let core = self.core();
        core.node.send_user(from, to, message)?;
        core.sent(to);
        Ok(())
    }

    /// [`send`](Self::send), waiting first until the connection to `to`'s
    /// node has room (a send to a full one is refused with
    /// [`SendError::Congested`]).
    pub async fn send_when_room(
        &mut self,
        to: Pid,
        tag: u32,
        reference: Ref,
        payload: Vec<u8>,
    ) -> Result<(), SendError> {
        let from = self.pid();
        while let Some(wait) = self.core().node.congested(from, to) {
            wait.await;
        }
        // Past the wait, queue it even if another sender filled the lane
        // meanwhile: each waiting sender adds at most one message.
        let message = Message {
            tag,
            reference,
            payload: payload.into(),
        };
        let core = self.core();
        core.node.send_user_waiting(from, to, message)?;
        core.sent(to);
        Ok(())
    }

    /// Send to a registered name.
    pub fn send_named(&mut self, name: &str, tag: u32, payload: Vec<u8>) -> Result<(), SendError> {
        let to = self
            .core()
            .node
            .registry
            .lock()
            .expect("registry poisoned")
            .whereis(name);
        let to = to.ok_or_else(|| SendError::NotRegistered(name.to_string()))?;
        self.send(to, tag, Ref::NONE, payload)
    }

    /// Spawn a process, optionally linked to this mailbox and/or monitored
    /// by it.
    pub fn spawn(
        &mut self,
        module: &str,
        args: Vec<u8>,
        link: bool,
        monitor: bool,
    ) -> Result<(Pid, Option<Ref>), SpawnError> {
        let me = self.pid();
        let core = self.core();
        let reference = monitor.then(|| core.node.make_ref());
        let node = core.node.clone();
        let child = node.spawn(module, args, link.then_some(me), reference.map(|r| (r, me)))?;
        if link {
            core.links.insert(child);
        }
        if let Some(r) = reference {
            core.monitors_out.insert(r, child);
        }
        Ok((child, reference))
    }

    /// Record a child spawned elsewhere (on another node) as linked to
    /// and/or monitored by this mailbox, with reference `monitor`.
    pub(crate) fn adopt(&mut self, child: Pid, link: bool, monitor: Option<Ref>) {
        let core = self.core();
        if link {
            core.links.insert(child);
        }
        if let Some(r) = monitor {
            core.monitors_out.insert(r, child);
        }
    }

    /// A new reference.
    pub fn make_ref(&mut self) -> Ref {
        self.core().node.make_ref()
    }

    /// Monitor a process; a `DOWN` message with the returned reference
    /// arrives when it ends.
    pub fn monitor(&mut self, pid: Pid) -> Ref {
        self.core().monitor(pid)
    }

    /// Remove a monitor (and, with `flush`, its queued DOWN).
    pub fn demonitor(&mut self, reference: Ref, flush: bool) -> bool {
        self.core().demonitor(reference, flush)
    }

    /// Link to a process; false if it is not alive (an `EXIT noproc`
    /// message is delivered then, since a mailbox traps exits).
    pub fn link(&mut self, pid: Pid) -> bool {
        self.core().link(pid).is_ok()
    }

    /// Join a process group of a scope (Erlang's `pg:join`); it is left
    /// when the mailbox is dropped.
    pub fn pg_join(&mut self, scope: &str, group: &str) -> Result<(), super::PgError> {
        self.core().pg_join(scope, group)
    }

    /// Leave a process group once (Erlang's `pg:leave`).
    pub fn pg_leave(&mut self, scope: &str, group: &str) -> Result<(), super::PgError> {
        self.core().pg_leave(scope, group)
    }

    /// Send an exit signal.
    pub fn exit(&mut self, pid: Pid, why: &str) {
        self.core().send_exit(pid, reason::truncate(why).into());
    }

    /// Wait up to `timeout` for any message.
    pub async fn recv(&mut self, timeout: Duration) -> Option<Message> {
        self.recv_matching(&Filter::any(), timeout).await
    }

    /// Wait up to `timeout` for the first message that passes `filter`;
    /// others stay queued, in order.
    pub async fn recv_matching(&mut self, filter: &Filter, timeout: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + timeout;
        let cell = self.core().cell.clone();
        let mut scanned = 0;
        let mut expired = false;
        loop {
            let core = self.core();
            core.absorb();
            if let Some(m) = core.take_matching(filter, scanned) {
                return Some(m);
            }
            if expired {
                return None;
            }
            scanned = core.mailbox.len();
            expired = tokio::time::timeout_at(deadline, cell.wake.rung())
                .await
                .is_err();
        }
    }

    /// Wait up to `timeout` for the `DOWN` of monitor `reference` and
    /// return the monitored process's exit reason.
    pub async fn recv_down(&mut self, reference: Ref, timeout: Duration) -> Option<String> {
        let filter = Filter {
            tags: vec![tag::DOWN],
            reference: Some(reference),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self.recv_matching(&filter, left).await?;
            // Only this node writes DOWN payloads (peers cannot send
            // reserved tags), but a bad one must not take the caller down.
            match sysmsg::Down::decode(&m.payload) {
                Ok(down) => return Some(down.reason.to_string()),
                Err(e) => tracing::error!(pid = %self.pid(), "malformed DOWN dropped: {e}"),
            }
        }
    }

    /// Messages waiting (after taking in queued signals).
    pub fn pending(&mut self) -> usize {
        let core = self.core();
        core.absorb();
        core.mailbox.len()
    }
}

impl Drop for HostMailbox {
    fn drop(&mut self) {
        if let Some(core) = self.core.take() {
            core.terminate(reason::NORMAL.into(), || {});
        }
    }
}
