//! Node configuration: every limit the node enforces, with its default.
//!
//! Each field is a named limit with the unit last. The defaults need no
//! configuration file: `molt run` and `molt bench` start with
//! [`NodeConfig::default`] and change fields from command-line flags.

use std::path::PathBuf;
use std::time::Duration;

/// How a node is sized and what it refuses.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node's name. `nonode@nohost` (Erlang's name for a node that is
    /// not distributed) until the node joins a cluster.
    pub name: String,
    /// Most processes alive at once on this node (guest processes plus host
    /// mailboxes). Spawning past it fails with `process_limit`. Also sizes
    /// the instance pool.
    pub processes_max: u32,
    /// Most linear memory one process may have, in bytes. A guest that
    /// grows past it gets a failed `memory.grow` and, if it then dies, the
    /// exit reason names this limit.
    pub memory_bytes_max: u64,
    /// Most messages waiting in one process's mailbox. A send past it
    /// returns `mailbox_full` to the sender; the message is not delivered.
    pub mailbox_len_max: usize,
    /// Largest message payload (also init arguments), in bytes.
    pub message_bytes_max: usize,
    /// Largest module file accepted by `load`, in bytes.
    pub module_bytes_max: usize,
    /// Most distinct modules loaded on the node.
    pub modules_max: usize,
    /// Most compiled modules kept by content hash, so that loading bytes
    /// seen before (a downgrade, a push of a version the node has) does not
    /// compile again. 0 turns the cache off.
    pub compiled_cache_max: usize,
    /// Compile a new module in two tiers: first with the baseline
    /// compiler (Winch: a single pass, several times faster to compile,
    /// slower code), so the version serves spawns and upgrades at once,
    /// then with the optimising compiler (Cranelift) in the background.
    /// New instances take the optimised code as soon as it is ready, and
    /// each behaviour running baseline code moves onto it at its next
    /// message (its state saved and restored, as for hibernation).
    /// `false`: optimised code only, compiled before the load returns.
    pub baseline_compile: bool,
    /// Most optimising compiles waiting behind baseline ones (each holds
    /// its module's bytes): past it, a load compiles optimised code at
    /// once, before it returns.
    pub optimise_queue_max: usize,
    /// Keep compiled machine code in this directory too, keyed by the
    /// module's bytes and every engine setting that shapes the code, so a
    /// restarted node, or another node with the same limits, takes a module
    /// it compiled before without compiling it again. `None` (the default)
    /// keeps compiled code in memory only.
    pub compile_cache_dir: Option<PathBuf>,
    /// Size the on-disk compile cache is trimmed back to, least recently
    /// used first, in bytes (checked in the background now and then, so it
    /// may pass it for a while).
    pub compile_cache_bytes_max: u64,
    /// How long a hard purge waits for the processes it killed to end.
    pub purge_timeout: Duration,
    /// Longest a migration's guest calls (`molt_state_save` in the old
    /// version, `molt_code_change` in the new) may run; past it the
    /// migration is refused (`limit: ran past code_change_timeout`) and the
    /// process stays on its version.
    pub code_change_timeout: Duration,
    /// Most links one process may have. A `link` past it fails with
    /// `link_limit` (so does a linked spawn); the link is not made.
    pub links_max: usize,
    /// Most monitors one process may hold (monitors stack, so each call
    /// counts). A `monitor` past it fails with `monitor_limit` (so does a
    /// monitored spawn).
    pub monitors_max: usize,
    /// Most pending timers (`send_after`) on the node.
    pub timers_max: usize,
    /// Most process groups (Erlang's `pg`) with members on the node,
    /// across scopes, whether the members are local or remote. A join that
    /// would make a new group past it fails with `pg_limit`; a remote
    /// node's join past it is dropped with a warning.
    pub pg_groups_max: usize,
    /// Most group memberships one process may hold (a process that joins
    /// one group twice holds two). A join past it fails with `pg_limit`.
    /// Also applied to remote processes, as their node announces them.
    pub pg_memberships_max: usize,
    /// Longest guest log line, in bytes; longer lines are cut and marked.
    pub log_line_bytes_max: usize,
    /// Most table elements (function references) per instance.
    pub table_elements_max: u32,
    /// Size of each process's native stack for running wasm, in bytes.
    /// Deep guest recursion past it ends the process with a stack-overflow
    /// trap. Only the pages a process touches are resident.
    pub guest_stack_bytes: usize,
    /// Map each instance's initial memory copy-on-write from a shared image
    /// instead of copying the module's data segments. With pool slots that
    /// keep their pages (`pool_keep_resident_bytes`), images make warm
    /// spawns faster and idle processes smaller, and everything that maps
    /// an image into a slot slower. The bench guest (17 KB of data),
    /// measured one after the other on one machine, with images against
    /// without: warm spawn 6.5 against 8.6 µs, idle process 13.2 against
    /// 29.2 KiB (warm; on a fresh node 24.9 against 41.0 KiB proportional
    /// set size, while RSS, which counts a shared page once per mapping,
    /// shows 40.9 for both), but the first 100,000 spawns on a fresh node
    /// 44 against 23–27 µs and 10,000 processes onto a new version 700
    /// against 168 ms (each new instance maps the new image into its slot:
    /// two `mmap` calls that take the address-space lock and shoot down
    /// the other core's TLB). Off by default for those two; on for nodes
    /// that keep many idle processes and upgrade rarely.
    pub memory_images_cow: bool,
    /// Write `/tmp/perf-<pid>.map` as guest code is compiled, so that
    /// Linux `perf` names the guest functions a profile samples (compiled
    /// code is otherwise anonymous memory to it). For profiling; off by
    /// default (the file grows with every module loaded).
    pub perf_map: bool,
    /// Bytes of the pages a process touched that its pool slot keeps
    /// resident when it ends, zeroed, for the next process in that slot
    /// (its linear memory's; its function table keeps its first page).
    /// The next spawn, upgrade or wake into the slot then takes no page
    /// faults. Only the pages the process touched are kept, found with
    /// Linux's `PAGEMAP_SCAN` (6.7 and later; without it, or at 0, a slot
    /// gives every page back when its process ends). What this holds:
    /// at most this much per slot ever used, and slots are reused most
    /// recently used first, so at most this much per process of the
    /// node's peak (plus 100 slots): the memory those processes had
    /// anyway. `molt_pool_resident_bytes` in the metrics says how much
    /// freed slots hold now. Default 64 KiB.
    pub pool_keep_resident_bytes: usize,
    /// How long a guest runs before it yields to others (epoch tick).
    pub timeslice: Duration,
    /// How long a thread that runs processes and has nothing to run
    /// searches for work before it sleeps (the node's own threads; with
    /// `process_threads` 0, `molt` gives it to tokio's). Waking a sleeping
    /// thread costs a system call and, on a VM, an interrupt: searching a
    /// little keeps message exchanges cheap, at the price of a busy core
    /// for that long after each burst of work. Default 20 µs; 0: sleep at
    /// once.
    pub spin_before_park: Duration,
    /// Threads of the node's own that run its guest processes (see
    /// `runtime::sched`): a process woken by another runs next on the
    /// waker's thread, and another thread is woken only for work beyond
    /// that, so two processes exchanging messages do not keep waking each
    /// other's thread. An idle one searches for work for
    /// `spin_before_park` before it sleeps. Default: one per core
    /// (`available_parallelism`); 0: processes are tasks of the tokio
    /// runtime the node was started on.
    pub process_threads: usize,
    /// Raise `vm.max_map_count` if it is too low for `processes_max` and
    /// the node may (it runs as root). If false, or if raising fails, the
    /// node starts with fewer processes and says exactly what to run.
    pub raise_map_count: bool,
    /// Limits on the node's tables (`molt_sdk::table`).
    pub tables: crate::table::TablesLimits,
    /// Count what each process does (messages in and out, time its guest
    /// runs) for `ps`, the HTTP API and the metrics. Counting costs a
    /// load and a store per message and a clock read per guest call; off,
    /// those figures stay 0 (node-wide counts of exits, upgrades and
    /// purges are kept either way).
    pub process_counters: bool,
    /// Hibernate a behaviour idle this long (OTP's `hibernate_after`): it
    /// saves its state (`molt_state_save`) and gives back its instance,
    /// its linear memory and its native stack, keeping only the saved
    /// bytes, its mailbox, links and monitors; its next message or signal
    /// restores it (`molt_state_restore`) before it is handled. Only
    /// behaviours exporting both hibernate. `None` (the default): never.
    pub hibernate_after: Option<Duration>,
    /// Where the node keeps durable data: its disc tables, in
    /// `tables/` (loaded at start). `None`: no disc tables.
    pub data_dir: Option<std::path::PathBuf>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: "nonode@nohost".to_string(),
            processes_max: 110_000,
            memory_bytes_max: 16 << 20,
            mailbox_len_max: 100_000,
            message_bytes_max: 1 << 20,
            module_bytes_max: 32 << 20,
            modules_max: 1_024,
            compiled_cache_max: 64,
            baseline_compile: true,
            optimise_queue_max: 16,
            compile_cache_dir: None,
            compile_cache_bytes_max: 512 << 20,
            purge_timeout: Duration::from_secs(10),
            code_change_timeout: Duration::from_secs(5),
            timers_max: 1_000_000,
            links_max: 100_000,
            monitors_max: 100_000,
            pg_groups_max: 100_000,
            pg_memberships_max: 1_024,
            table_elements_max: 10_000,
            log_line_bytes_max: 16 << 10,
            guest_stack_bytes: 256 << 10,
            process_counters: true,
            hibernate_after: None,
            memory_images_cow: false,
            perf_map: false,
            pool_keep_resident_bytes: 64 << 10,
            timeslice: Duration::from_millis(2),
            spin_before_park: Duration::from_micros(20),
            process_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            raise_map_count: true,
            tables: crate::table::TablesLimits::default(),
            data_dir: None,
        }
    }
}
