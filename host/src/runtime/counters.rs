//! A node's counters: what its processes did, kept where the work happens
//! and read on demand (by `/metrics`, the HTTP API and `molt top`).
//!
//! Per-message figures live in each process's [`ProcessCounters`], written
//! by that process alone; the node adds a process's figures to its own
//! when the process ends, so a node total is the sum over live processes
//! plus what the ended ones left. Rare events (exits, upgrades, purges)
//! are counted here directly.

use std::sync::atomic::{AtomicU64, Ordering};

use molt_abi::reason;

use super::cell::ProcessCounters;

/// The kinds an exit reason is counted under (a bounded metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    /// `normal`.
    Normal,
    /// `shutdown` (a supervisor stopping a child).
    Shutdown,
    /// `killed`.
    Killed,
    /// A trap, a panic or a bad pointer: the guest crashed.
    Crash,
    /// A limit ended it (`limit: ...`).
    Limit,
    /// A purge of the code it ran (`purged: ...`).
    Purged,
    /// `noproc` or `noconnection` (from a link).
    Noproc,
    /// Any other reason (an `exit(reason)` of the guest's own).
    Other,
}

impl ExitKind {
    /// Every kind, in the order of [`ExitKind::index`].
    pub const ALL: [ExitKind; 8] = [
        ExitKind::Normal,
        ExitKind::Shutdown,
        ExitKind::Killed,
        ExitKind::Crash,
        ExitKind::Limit,
        ExitKind::Purged,
        ExitKind::Noproc,
        ExitKind::Other,
    ];

    /// The kind of exit reason `why`.
    pub fn of(why: &str) -> ExitKind {
        match why {
            reason::NORMAL => ExitKind::Normal,
            reason::KILLED => ExitKind::Killed,
            reason::NOPROC | reason::NOCONNECTION => ExitKind::Noproc,
            _ if why == reason::SHUTDOWN || why.starts_with("shutdown:") => ExitKind::Shutdown,
            _ if why.starts_with(reason::TRAP_PREFIX)
                || why.starts_with(reason::PANIC_PREFIX)
                || why.starts_with(reason::BAD_POINTER_PREFIX) =>
            {
                ExitKind::Crash
            }
            _ if why.starts_with(reason::LIMIT_PREFIX) => ExitKind::Limit,
            _ if why.starts_with(reason::PURGED_PREFIX) => ExitKind::Purged,
            _ => ExitKind::Other,
        }
    }

    /// Its name, as a metric label and a JSON key.
    pub fn name(self) -> &'static str {
        match self {
            ExitKind::Normal => "normal",
            ExitKind::Shutdown => "shutdown",
            ExitKind::Killed => "killed",
            ExitKind::Crash => "crash",
            ExitKind::Limit => "limit",
            ExitKind::Purged => "purged",
            ExitKind::Noproc => "noproc",
            ExitKind::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The node's own counters.
#[derive(Debug, Default)]
pub(crate) struct NodeCounters {
    /// What ended processes did (their [`ProcessCounters`], added at
    /// their end).
    retired: ProcessCounters,
    /// Messages that came from processes of other nodes.
    pub remote_in: AtomicU64,
    exits: [AtomicU64; ExitKind::ALL.len()],
    /// Processes that moved to a new version.
    pub upgrades: AtomicU64,
    /// Migrations refused or failed (the process stayed on its version).
    pub failed_migrations: AtomicU64,
    /// Purges of an old version.
    pub purges: AtomicU64,
}

/// A snapshot of a node's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    /// Messages processes took from their mailboxes.
    pub messages_received: u64,
    /// Messages sent to processes of this node.
    pub messages_local: u64,
    /// Messages sent to processes of other nodes.
    pub messages_remote_out: u64,
    /// Messages that came from processes of other nodes.
    pub messages_remote_in: u64,
    /// Time guests ran, in ns.
    pub cpu_ns: u64,
    /// Exits by kind, in the order of [`ExitKind::ALL`].
    pub exits: [u64; ExitKind::ALL.len()],
    /// Processes that moved to a new version.
    pub upgrades: u64,
    /// Migrations refused or failed.
    pub failed_migrations: u64,
    /// Purges of an old version.
    pub purges: u64,
    /// Linear memory of the live processes, in bytes.
    pub memory_bytes: u64,
    /// Messages waiting in their mailboxes.
    pub mailbox_messages: u64,
}

impl NodeCounters {
    /// A process ended with `why`: keep what it counted.
    pub fn retire(&self, counters: &ProcessCounters, why: &str) {
        let add = |into: &AtomicU64, from: &AtomicU64| {
            let n = from.load(Ordering::Relaxed);
            if n > 0 {
                into.fetch_add(n, Ordering::Relaxed);
            }
        };
        add(&self.retired.messages_in, &counters.messages_in);
        add(&self.retired.sent_local, &counters.sent_local);
        add(&self.retired.sent_remote, &counters.sent_remote);
        add(&self.retired.cpu_ns, &counters.cpu_ns);
        self.exits[ExitKind::of(why).index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The node's figures: what ended processes left; add the live ones
    /// with [`Counted::add_live`].
    pub fn snapshot(&self) -> Counted {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counted {
            messages_received: load(&self.retired.messages_in),
            messages_local: load(&self.retired.sent_local),
            messages_remote_out: load(&self.retired.sent_remote),
            messages_remote_in: load(&self.remote_in),
            cpu_ns: load(&self.retired.cpu_ns),
            exits: std::array::from_fn(|i| load(&self.exits[i])),
            upgrades: load(&self.upgrades),
            failed_migrations: load(&self.failed_migrations),
            purges: load(&self.purges),
            memory_bytes: 0,
            mailbox_messages: 0,
        }
    }
}

impl Counted {
    /// Add a live process's counters.
    pub(crate) fn add_live(&mut self, p: &ProcessCounters) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        self.messages_received += load(&p.messages_in);
        self.messages_local += load(&p.sent_local);
        self.messages_remote_out += load(&p.sent_remote);
        self.cpu_ns += load(&p.cpu_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_reasons_fall_into_their_kinds() {
        let cases = [
            ("normal", ExitKind::Normal),
            ("shutdown", ExitKind::Shutdown),
            ("killed", ExitKind::Killed),
            ("trap: wasm trap: unreachable", ExitKind::Crash),
            ("panic: index out of bounds", ExitKind::Crash),
            ("limit: memory_bytes_max", ExitKind::Limit),
            ("purged: counter 0.1.0", ExitKind::Purged),
            ("noconnection", ExitKind::Noproc),
            ("my_own_reason", ExitKind::Other),
        ];
        for (why, kind) in cases {
            assert_eq!(ExitKind::of(why), kind, "{why}");
        }
        for (i, kind) in ExitKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }

    #[test]
    fn a_node_total_is_the_ended_processes_plus_the_live_ones() {
        let node = NodeCounters::default();
        let ended = ProcessCounters::default();
        ProcessCounters::bump(&ended.messages_in, 3);
        ProcessCounters::bump(&ended.sent_local, 2);
        node.retire(&ended, "normal");
        let live = ProcessCounters::default();
        ProcessCounters::bump(&live.messages_in, 4);
        ProcessCounters::bump(&live.sent_remote, 1);
        let mut counted = node.snapshot();
        counted.add_live(&live);
        assert_eq!(counted.messages_received, 7);
        assert_eq!(counted.messages_local, 2);
        assert_eq!(counted.messages_remote_out, 1);
        assert_eq!(counted.exits[0], 1);
        assert_eq!(counted.exits.iter().sum::<u64>(), 1);
    }
}
