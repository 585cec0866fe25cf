//! The signal semantics of one process, shared by guest processes and host
//! mailboxes: draining the signal queue into the mailbox, links, monitors,
//! exit signals (Erlang's rules, exactly), selective receive and the
//! cleanup when a process ends.
//!
//! Invariant: only the process itself touches its `ProcessCore`; other
//! processes reach it through signals on its [`ProcessCell`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use molt_abi::{Pid, Ref, reason, sysmsg, tag};

use super::NodeInner;
use super::cell::{Message, ProcessCell, ProcessCounters, Reason, Signal, push_back_lean};

/// Which messages a receive takes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Tags accepted; empty means any.
    pub tags: Vec<u32>,
    /// If set, only messages with this envelope reference.
    pub reference: Option<Ref>,
}

impl Filter {
    /// Any message.
    pub fn any() -> Self {
        Filter::default()
    }

    /// Whether `m` passes.
    pub fn matches(&self, m: &Message) -> bool {
        (self.tags.is_empty() || self.tags.contains(&m.tag))
            && self.reference.is_none_or(|r| r == m.reference)
    }
}

pub(crate) struct ProcessCore {
    pub node: Arc<NodeInner>,
    pub cell: Arc<ProcessCell>,
    pub mailbox: VecDeque<Message>,
    pub links: HashSet<Pid>,
    /// Monitors this process holds: reference → monitored pid.
    pub monitors_out: HashMap<Ref, Pid>,
    /// Monitors on this process: reference → watcher.
    pub monitors_in: HashMap<Ref, Pid>,
    /// Node monitors this process turned on through the router: node name
    /// → how many, so they are turned off when it ends.
    node_monitors: HashMap<String, u32>,
    pub trap_exit: bool,
    /// A host mailbox: exit signals never end it (see `on_exit_signal`).
    pub host_driven: bool,
    /// A behaviour: system requests (suspend, resume, change code) queue
    /// in `system` for its message loop; anything else refuses them.
    pub behaviour: bool,
    /// System requests waiting for the message loop.
    pub system: VecDeque<super::upgrade::SysRequest>,
    /// Set once the process must end, with why.
    pub exit: Option<Reason>,
    /// It joined a process group once: its end must sweep the groups.
    /// Processes that never joined one do not pay for that.
    pg_member: bool,
    /// The batch of signals [`absorb`](Self::absorb) takes from the cell
    /// (empty between two), kept for its room.
    scratch: VecDeque<Signal>,
}

/// Messages a process takes before it subtracts them from its cell's
/// `mailbox_len` in one write (and whenever it looks at its queue).
/// Senders add to that count and the process subtracts from it, so a write
/// per message would move its cache line between their cores twice per
/// message. Until then the process counts them in `taken`, on a line of
/// its own, which a sender reads only when the mailbox looks full (see
/// `ProcessCell::mailbox_messages`).
const TAKEN_BATCH: usize = 64;

impl ProcessCore {
    pub fn new(node: Arc<NodeInner>, cell: Arc<ProcessCell>) -> Self {
        ProcessCore {
            node,
            cell,
            mailbox: VecDeque::new(),
            links: HashSet::new(),
            monitors_out: HashMap::new(),
            monitors_in: HashMap::new(),
            node_monitors: HashMap::new(),
            trap_exit: false,
            host_driven: false,
            behaviour: false,
            system: VecDeque::new(),
            exit: None,
            pg_member: false,
            scratch: VecDeque::new(),
        }
    }

    pub fn pid(&self) -> Pid {
        self.cell.pid
    }

    fn die(&mut self, why: Reason) {
        if self.exit.is_none() {
            self.exit = Some(why);
        }
    }

    /// Put a message the host made (EXIT, DOWN) in the mailbox.
    fn deliver_system(&mut self, tag: u32, reference: Ref, payload: Vec<u8>) {
        self.cell.mailbox_len.fetch_add(1, Ordering::Relaxed);
        push_back_lean(
            &mut self.mailbox,
            Message {
                tag,
                reference,
                payload: payload.into(),
            },
        );
    }

    /// Apply every queued signal. Afterwards `exit` says whether the process
    /// must end.
    pub fn absorb(&mut self) {
        self.count_taken();
        // Taken one by one from where they were drained to: moving the
        // batch's queue out and back per absorb (32 bytes, written in
        // halves by the drain and read whole) stalled on store forwarding,
        // about a tenth of a local round trip.
        self.cell.drain_into(&mut self.scratch);
        while let Some(signal) = self.scratch.pop_front() {
            self.apply(signal);
        }
    }

    /// [`absorb`](Self::absorb) when the process needs its queue: its
    /// mailbox is empty, a signal that cannot wait behind the messages
    /// already there is queued (exits, kills, system requests,
    /// inspections: see `ProcessCell::urgent`), or it is suspended (it
    /// applies its signals however many messages wait). Other signals
    /// (messages, links, monitors) keep their order behind the mailbox's
    /// messages anyway, so a process working through its mailbox takes
    /// them in one batch when it gets to them instead of locking its queue
    /// per message while senders fill it.
    pub fn absorb_when_needed(&mut self) {
        if self.mailbox.is_empty()
            || self.cell.urgent.load(Ordering::Acquire)
            || self.cell.suspended.load(Ordering::Acquire)
        {
            self.absorb();
        }
    }

    /// Subtract the messages taken since the last time from the cell's
    /// count.
    fn count_taken(&self) {
        let taken = &self.cell.counters.taken;
        let n = taken.load(Ordering::Relaxed);
        if n > 0 {
            // Zeroed first: meanwhile a sender sees the mailbox fuller than
            // it is, never emptier (never past the limit).
            taken.store(0, Ordering::Relaxed);
            self.cell.mailbox_len.fetch_sub(n, Ordering::Release);
        }
    }

    fn apply(&mut self, signal: Signal) {
        match signal {
            Signal::Message { message, .. } => push_back_lean(&mut self.mailbox, message),
            Signal::Exit {
                from,
                reason,
                linked,
            } => self.on_exit_signal(from, reason, linked),
            Signal::Link { from } => {
                self.links.insert(from);
            }
            Signal::Unlink { from } => {
                self.links.remove(&from);
            }
            Signal::Monitor { from, reference } => {
                self.monitors_in.insert(reference, from);
            }
            Signal::Demonitor { reference, .. } => {
                self.monitors_in.remove(&reference);
            }
            Signal::Down {
                pid,
                reference,
                reason,
            } => {
                // A DOWN for a monitor already removed is dropped: after
                // `demonitor` no DOWN arrives, as in Erlang.
                if self.monitors_out.remove(&reference).is_some() {
                    let payload = sysmsg::Down {
                        pid,
                        reason: &reason,
                    }
                    .encode();
                    self.deliver_system(tag::DOWN, reference, payload);
                }
            }
            Signal::Kill { reason, only_on } => {
                let moved_on = only_on.is_some_and(|v| {
                    !self
                        .cell
                        .version()
                        .is_some_and(|current| Arc::ptr_eq(&current, &v))
                });
                if moved_on {
                    // It migrated off the purged version in between.
                } else if self.host_driven {
                    let payload = sysmsg::Exit {
                        from: self.pid(),
                        reason: &reason,
                    }
                    .encode();
                    self.deliver_system(tag::EXIT, Ref::NONE, payload);
                } else {
                    self.die(reason);
                }
            }
            Signal::Inspect { messages, reply } => {
                let _ = reply.send(self.inspect(messages));
            }
            Signal::System(request) => {
                if self.behaviour {
                    self.system.push_back(request);
                } else {
                    request.refuse(super::upgrade::SysError::NotBehaviour);
                }
            }
        }
    }

    /// What it holds, for an inspection: links, monitors both ways, and
    /// the first `messages` messages of its mailbox.
    fn inspect(&self, messages: usize) -> super::Inspected {
        let mut links: Vec<Pid> = self.links.iter().copied().collect();
        links.sort();
        let mut monitors: Vec<(Ref, Pid)> =
            self.monitors_out.iter().map(|(r, p)| (*r, *p)).collect();
        monitors.sort();
        let mut monitored_by: Vec<Pid> = self.monitors_in.values().copied().collect();
        monitored_by.sort();
        let messages = self
            .mailbox
            .iter()
            .take(messages.min(super::MAILBOX_PREVIEW_MAX))
            .map(super::MessagePreview::of)
            .collect();
        super::Inspected {
            links,
            monitors,
            monitored_by,
            trap_exit: self.trap_exit,
            messages,
        }
    }

    /// Erlang's exit-signal rules.
    fn on_exit_signal(&mut self, from: Pid, why: Reason, linked: bool) {
        // After unlink, no exit signal due to the link arrives.
        if linked && !self.links.remove(&from) {
            return;
        }
        if self.host_driven {
            // A host mailbox ends when its owner drops it: every exit
            // signal, `kill` included, is a message to it.
            let payload = sysmsg::Exit { from, reason: &why }.encode();
            self.deliver_system(tag::EXIT, Ref::NONE, payload);
        } else if !linked && &*why == reason::KILL {
            self.die(reason::KILLED.into());
        } else if self.trap_exit {
            let payload = sysmsg::Exit { from, reason: &why }.encode();
            self.deliver_system(tag::EXIT, Ref::NONE, payload);
        } else if &*why == reason::NORMAL {
            // `exit(self(), normal)` ends the caller; any other normal exit
            // signal is ignored by a process that does not trap exits.
            if !linked && from == self.pid() {
                self.die(why);
            }
        } else {
            self.die(why);
        }
    }

    /// Take the first message in the mailbox that passes `filter`, scanning
    /// from `start` (messages before it were already rejected).
    pub fn take_matching(&mut self, filter: &Filter, start: usize) -> Option<Message> {
        let at = self
            .mailbox
            .iter()
            .skip(start)
            .position(|m| filter.matches(m))?;
        let m = self.mailbox.remove(start + at)?;
        self.took_one();
        Some(m)
    }

    pub fn take_next(&mut self) -> Option<Message> {
        let m = self.mailbox.pop_front()?;
        self.took_one();
        Some(m)
    }

    /// A message left the mailbox for the process.
    fn took_one(&self) {
        let taken = &self.cell.counters.taken;
        let n = taken.load(Ordering::Relaxed) + 1;
        // One writer (this process): a load and a store.
        taken.store(n, Ordering::Release);
        if n >= TAKEN_BATCH {
            self.count_taken();
        }
        if self.node.config.process_counters {
            ProcessCounters::bump(&self.cell.counters.messages_in, 1);
        }
    }

    /// Count a message this process sent to `to`.
    pub fn sent(&self, to: Pid) {
        self.sent_to_node(to.node == self.node.node_id);
    }

    /// Count a message this process sent to this node (`local`) or to
    /// another one.
    pub fn sent_to_node(&self, local: bool) {
        if self.node.config.process_counters {
            self.cell.counters.sent(local);
        }
    }

    /// `link(pid)`. If `pid` is not alive (or its node cannot be reached),
    /// a process that traps exits gets `EXIT` with `noproc` (or
    /// `noconnection`) and `Ok`; one that does not gets that reason as the
    /// error, as Erlang's `link/1`.
    pub fn link(&mut self, other: Pid) -> Result<(), &'static str> {
        if other == self.pid() {
            return Ok(());
        }
        let me = self.pid();
        match self.node.route(me, other, Signal::Link { from: me }) {
            Ok(_) => {
                self.links.insert(other);
                Ok(())
            }
            Err(undelivered) if self.trap_exit => {
                let payload = sysmsg::Exit {
                    from: other,
                    reason: undelivered.reason(),
                }
                .encode();
                self.deliver_system(tag::EXIT, Ref::NONE, payload);
                Ok(())
            }
            Err(undelivered) => Err(undelivered.reason()),
        }
    }

    pub fn unlink(&mut self, other: Pid) {
        if self.links.remove(&other) {
            let me = self.pid();
            let _ = self.node.route(me, other, Signal::Unlink { from: me });
        }
    }

    /// `monitor(pid)`: a DOWN `noproc` (or `noconnection`) at once if it is
    /// not alive (or its node cannot be reached).
    pub fn monitor(&mut self, target: Pid) -> Ref {
        let reference = self.node.make_ref();
        self.monitors_out.insert(reference, target);
        let me = self.pid();
        let signal = Signal::Monitor {
            from: me,
            reference,
        };
        if let Err(undelivered) = self.node.route(me, target, signal) {
            self.apply(Signal::Down {
                pid: target,
                reference,
                reason: undelivered.reason().into(),
            });
        }
        reference
    }

    /// `demonitor(ref, flush)`: true if the monitor was active.
    pub fn demonitor(&mut self, reference: Ref, flush: bool) -> bool {
        let active = match self.monitors_out.remove(&reference) {
            Some(target) => {
                let me = self.pid();
                let _ = self.node.route(
                    me,
                    target,
                    Signal::Demonitor {
                        from: me,
                        reference,
                    },
                );
                true
            }
            None => false,
        };
        if flush {
            // A DOWN may sit in the queue or the mailbox already.
            self.absorb();
            let before = self.mailbox.len();
            self.mailbox
                .retain(|m| !(m.tag == tag::DOWN && m.reference == reference));
            let removed = before - self.mailbox.len();
            self.cell.mailbox_len.fetch_sub(removed, Ordering::Relaxed);
        }
        active
    }

    /// `monitor_node(node, on)`, Erlang's `monitor_node/2`: a `NODEDOWN`
    /// message when the connection to `node` is lost, at once if it is not
    /// connected (always, on a node without distribution). This node's own
    /// name, when distributed, never goes down.
    pub fn monitor_node(&mut self, node: &str, on: bool) {
        let me = self.pid();
        let Some(router) = self.node.router().cloned() else {
            if on {
                self.deliver_system(tag::NODEDOWN, Ref::NONE, node.as_bytes().to_vec());
            }
            return;
        };
        if node == self.node.config.name {
            return;
        }
        if on {
            *self.node_monitors.entry(node.to_string()).or_default() += 1;
        } else if let Some(n) = self.node_monitors.get_mut(node) {
            *n -= 1;
            if *n == 0 {
                self.node_monitors.remove(node);
            }
        }
        router.monitor_node(node, me, on);
    }

    /// `pg:join(Scope, Group, self())`.
    pub fn pg_join(&mut self, scope: &str, group: &str) -> Result<(), super::PgError> {
        self.node.pg_join(scope, group, self.pid())?;
        self.pg_member = true;
        Ok(())
    }

    /// `pg:leave(Scope, Group, self())`.
    pub fn pg_leave(&mut self, scope: &str, group: &str) -> Result<(), super::PgError> {
        self.node.pg_leave(scope, group, self.pid())
    }

    /// `exit(pid, reason)`.
    pub fn send_exit(&mut self, to: Pid, why: Reason) {
        let signal = Signal::Exit {
            from: self.pid(),
            reason: why,
            linked: false,
        };
        if to == self.pid() {
            // Applied at once, so that `exit(self(), kill)` ends the caller
            // before its next instruction that could observe otherwise.
            self.apply(signal);
        } else {
            let _ = self.node.route(self.pid(), to, signal);
        }
    }

    /// The process has ended: refuse further signals, free its name, run
    /// `gone` once it has left the process table, then tell every linked
    /// process and every watcher. Whoever hears of the end sees what
    /// `gone` did (the guest's version no longer counts the process, so a
    /// soft purge after its `DOWN` succeeds).
    pub fn terminate(mut self, why: Reason, gone: impl FnOnce()) {
        // Signals that raced with the end: links and monitors made just
        // before are honoured with the real reason.
        for signal in self.cell.close() {
            match signal {
                Signal::Message { .. }
                | Signal::Exit { .. }
                | Signal::Down { .. }
                | Signal::Kill { .. } => {}
                // Dropping the request tells the asker the process is gone.
                Signal::System(_) => {}
                bookkeeping => self.apply(bookkeeping),
            }
        }
        let pid = self.pid();
        let node = self.node.clone();
        node.counters.retire(&self.cell.counters, &why);
        node.forget(pid);
        if self.pg_member {
            node.pg_gone(pid);
        }
        gone();
        for linked in self.links.drain() {
            let _ = node.route(
                pid,
                linked,
                Signal::Exit {
                    from: pid,
                    reason: why.clone(),
                    linked: true,
                },
            );
        }
        for (reference, watcher) in self.monitors_in.drain() {
            let _ = node.route(
                pid,
                watcher,
                Signal::Down {
                    pid,
                    reference,
                    reason: why.clone(),
                },
            );
        }
        if let Some(router) = node.router() {
            for (watched, count) in self.node_monitors.drain() {
                for _ in 0..count {
                    router.monitor_node(&watched, pid, false);
                }
            }
        }
        for (reference, target) in self.monitors_out.drain() {
            let _ = node.route(
                pid,
                target,
                Signal::Demonitor {
                    from: pid,
                    reference,
                },
            );
        }
    }
}
