//! `molt`: run, inspect, build and benchmark molt modules, start nodes and
//! talk to running ones. Argument parsing and printing only: the node is
//! the `molt_host` library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use molt_host::NodeConfig;
use tracing_subscriber::EnvFilter;

/// The node's allocator: mimalloc rather than glibc's. A node allocates
/// from many threads at once (the process threads, the network's, a
/// compile's), and glibc's arenas are locked per allocation and per free,
/// so two threads freeing into one arena wait on each other. Measured on
/// this design's machines, interleaved with glibc's: a Winch compile of a
/// 130 KB module 23 → 16 ms, a purge of 10,000 processes 110–128 →
/// 77–79 ms, a ring hop 1.50 → 1.34 µs; spawns level, local one-way
/// messages about 6 % slower. Freed memory goes back to the kernel
/// [`PURGE_DELAY_MS`] after it is freed. The `molt_host` library leaves
/// the choice to the program that embeds it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long memory the node freed stays with its allocator before it goes
/// back to the kernel, unless `MIMALLOC_PURGE_DELAY` (ms) says otherwise.
/// mimalloc purges per arena: the first free arms the delay, and when it
/// runs out everything free at that moment goes back, however recently it
/// was freed, so a node with steady churn faults its free heap in again
/// once per delay. mimalloc's own 1 s did so between two bursts of spawns
/// or messages (warm spawns 12.8–20.7 against 10.0–10.6 µs at 10 s), and
/// 10 s still did within a run of spawns: interleaved, six runs of 100,000
/// spawns each, medians 9.3, 9.3, 8.3 µs at 10 s against 8.4, 8.2, 7.9 µs
/// at 60 s (runs with 0.22–0.34 page faults per spawn against at most
/// 0.04).
const PURGE_DELAY_MS: i64 = 60_000;

/// mimalloc's `mi_option_purge_delay` (`mimalloc.h`; the sys crate names
/// no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc's `mi_option_allow_thp` (`mimalloc.h`, v3): whether it asks
/// the kernel for transparent huge pages for its heap.
///
/// Off in the `molt` binary unless `MIMALLOC_ALLOW_THP` says otherwise: a
/// growing heap on huge pages makes the kernel clear 2 MiB at a time, and
/// on a virtual machine whose memory the host backs as it is first
/// touched (this design's machines), those pages most likely come from
/// memory the host has not backed yet: interleaved, two pairs, the first
/// 100,000 spawns on a fresh node took 73.0, 62.7 µs each with huge pages against
/// 19.0, 18.8 µs without (80 % of the time was the kernel clearing huge
/// pages), a million ring links 27.6 against 15.2 µs each. What huge
/// pages give back is reach of the TLB: a warm spawn 7.7, 7.0 against 8.4,
/// 8.0 µs, local one-way 7.08, 6.88 against 6.66, 6.53 M msgs/s, a ring
/// hop of 1,000 links 1.65 against 1.72 µs.
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// The allocator's settings, before the node allocates much.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: stores one option's value, which mimalloc reads each
        // time it schedules a purge; no memory is touched.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _) };
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: stores one option's value, which mimalloc reads each
        // time it maps memory from the kernel.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0) };
        // mimalloc read the option when it started, before `main`, and may
        // have asked for huge pages for its first region then; this is what
        // it does itself when the option is off at its start: no huge pages
        // for this OS process at all (its own setting, not the machine's).
        // Nothing logs yet at this point; a kernel without the flag (before
        // 3.15) keeps huge pages as the machine has them, which works too.
        // SAFETY: sets a flag of this process; no memory is touched.
        let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

/// Print a line to stdout. A closed stdout (`molt ps | head -1`) ends the
/// command quietly with status 0, as Unix tools do, instead of a panic.
macro_rules! out {
    () => {
        $crate::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// [`out!`] without the newline.
macro_rules! out_raw {
    ($($arg:tt)*) => {
        $crate::write_out(format_args!($($arg)*))
    };
}

mod bench;
mod bench_coord;
mod bench_million;
mod bench_observe;
mod bench_ring;
mod bench_tables;
mod bench_wire;
mod cluster;
mod code;
mod demo_coord;
mod demo_upgrade;
mod demo_wire;
mod guest_build;
mod inspect;
mod local_cluster;
mod node;
mod remote;
mod run;
mod tables;
mod top;

use self::remote::Remote;

/// An Erlang-style process host for WebAssembly.
#[derive(Parser)]
#[command(name = "molt", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    limits: Limits,
    /// How the log is written: `text` for people, or `json`,
    /// one object per line with `timestamp`, `level`, `fields` (the
    /// message and its context: node, pid, module, version, peer, ...)
    /// and the spans it happened in.
    #[arg(long, global = true, value_enum, default_value_t)]
    log_format: LogFormat,
}

/// How the log is written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Node limits, each with the default of `NodeConfig`.
#[derive(clap::Args)]
struct Limits {
    /// Most processes alive at once.
    #[arg(long, global = true)]
    processes_max: Option<u32>,
    /// Most linear memory per process, in bytes.
    #[arg(long, global = true)]
    memory_bytes_max: Option<u64>,
    /// Most messages waiting in one mailbox.
    #[arg(long, global = true)]
    mailbox_len_max: Option<usize>,
    /// Largest message, in bytes.
    #[arg(long, global = true)]
    message_bytes_max: Option<usize>,
    /// Largest module file, in bytes.
    #[arg(long, global = true)]
    module_bytes_max: Option<usize>,
    /// Map instance memory copy-on-write from a shared image instead of
    /// copying data segments: faster spawns and smaller idle processes,
    /// slower upgrades (see `NodeConfig::memory_images_cow`).
    #[arg(long, global = true)]
    memory_images_cow: bool,
    /// Write /tmp/perf-<pid>.map as guest code is compiled, so that `perf
    /// report` names guest functions (see `NodeConfig::perf_map`).
    #[arg(long, global = true)]
    perf_map: bool,
    /// Bytes of touched pages a freed pool slot keeps resident for the
    /// next process (default 65536; 0: give every page back at each exit).
    #[arg(long, global = true, value_name = "BYTES")]
    pool_keep_resident_bytes: Option<usize>,
    /// Compile new modules with the optimising compiler only, before the
    /// load returns (default: a fast baseline compile first, the
    /// optimised code in the background).
    #[arg(long, global = true)]
    no_baseline_compile: bool,
    /// Keep compiled modules in DIR too, so a restarted node does not
    /// compile again what it compiled before.
    #[arg(long, global = true, value_name = "DIR")]
    compile_cache_dir: Option<PathBuf>,
    /// Hibernate a behaviour idle this many milliseconds: it keeps only
    /// its saved state until its next message (default: never).
    #[arg(long, global = true, value_name = "MS")]
    hibernate_after_ms: Option<u64>,
    /// A thread that runs processes and has nothing to do searches for
    /// work this many microseconds before it sleeps (default 20; 0: sleeps
    /// at once).
    #[arg(long, global = true, value_name = "US")]
    spin_before_park_us: Option<u64>,
    /// Run guest processes on N threads of the node's own scheduler (a
    /// woken process runs next on its waker's thread; idle threads search
    /// for `--spin-before-park-us` before they sleep). Default: one per
    /// core; 0: on tokio's.
    #[arg(long, global = true, value_name = "N")]
    process_threads: Option<usize>,
}

impl Limits {
    fn apply(&self, mut config: NodeConfig) -> NodeConfig {
        if let Some(v) = self.processes_max {
            config.processes_max = v;
        }
        if let Some(v) = self.memory_bytes_max {
            config.memory_bytes_max = v;
        }
        if let Some(v) = self.mailbox_len_max {
            config.mailbox_len_max = v;
        }
        if let Some(v) = self.message_bytes_max {
            config.message_bytes_max = v;
        }
        if let Some(v) = self.module_bytes_max {
            config.module_bytes_max = v;
        }
        config.memory_images_cow |= self.memory_images_cow;
        config.perf_map |= self.perf_map;
        if let Some(v) = self.pool_keep_resident_bytes {
            config.pool_keep_resident_bytes = v;
        }
        config.baseline_compile &= !self.no_baseline_compile;
        if let Some(dir) = &self.compile_cache_dir {
            config.compile_cache_dir = Some(dir.clone());
        }
        if let Some(us) = self.spin_before_park_us {
            config.spin_before_park = Duration::from_micros(us);
        }
        if let Some(ms) = self.hibernate_after_ms {
            config.hibernate_after = Some(Duration::from_millis(ms));
        }
        if let Some(n) = self.process_threads {
            config.process_threads = n;
        }
        config
    }
}

#[derive(Subcommand)]
enum Command {
    /// Start a node, spawn the module's entry process, and exit when it
    /// exits (0 on a normal exit, 1 otherwise). Modules it spawns by name
    /// are loaded from the module's directory and `--path` directories.
    Run {
        /// The module file.
        module: PathBuf,
        /// Arguments, passed to the entry process as its init arguments: a
        /// `Vec<String>` (empty if none), like `std::env::args`.
        args: Vec<String>,
        /// More directories to load modules from.
        #[arg(long)]
        path: Vec<PathBuf>,
    },
    /// Start a long-running node that other nodes can join.
    Node(node::NodeArgs),
    #[command(flatten)]
    Coord(cluster::CoordCommand),
    #[command(flatten)]
    Tables(tables::TableCommand),
    /// List a running node and the nodes it is connected to.
    Nodes {
        #[command(flatten)]
        remote: Remote,
        /// `text` or `json`.
        #[arg(long, value_enum, default_value_t)]
        format: remote::Format,
    },
    /// List the processes of a running node.
    Ps {
        #[command(flatten)]
        remote: Remote,
        /// `text` or `json`.
        #[arg(long, value_enum, default_value_t)]
        format: remote::Format,
    },
    /// Watch a running node on the terminal, like etop: its figures and
    /// its processes, refreshed every second. Keys: m memory, b mailbox,
    /// r messages in per second, c cpu, p pid (the order of the table);
    /// q, Esc or Ctrl-C quit.
    Top {
        #[command(flatten)]
        remote: Remote,
        /// Exit after this many refreshes (default: run until a quit key).
        #[arg(long, value_name = "N")]
        iterations: Option<u64>,
    },
    /// Check that a running node answers (`pong`) or not (`pang`).
    Ping {
        #[command(flatten)]
        remote: Remote,
    },
    /// Spawn a process of a loaded module on a running node; its init
    /// arguments are ARGS as a `Vec<String>`.
    Spawn {
        #[command(flatten)]
        remote: Remote,
        /// The module.
        module: String,
        /// Arguments for the entry process.
        args: Vec<String>,
    },
    /// Load, modules, purge, delete, suspend, resume, upgrade.
    #[command(flatten)]
    Code(code::CodeCommand),
    /// Send a text message (a `String`, tag DATA unless --tag) to a
    /// registered process of a running node.
    Send {
        #[command(flatten)]
        remote: Remote,
        /// The registered name.
        name: String,
        /// The text.
        text: String,
        /// The message tag.
        #[arg(long, default_value_t = molt_abi::tag::DATA)]
        tag: u32,
    },
    /// Print a module's name, version, kind, exports and imports, and
    /// whether it satisfies the ABI.
    Inspect {
        /// The module file.
        module: PathBuf,
    },
    /// Build a guest crate for wasm32 (`cargo build --release --target
    /// wasm32-unknown-unknown`) and print the module files.
    Build {
        /// The crate's directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Build the example guests and run the demo: spawn, messages, a crash
    /// caught by a link, a monitor, the same across two nodes, and a live
    /// upgrade of running counters to a new version.
    Demo,
    /// Measure spawn, memory per process and message passing.
    Bench(bench::BenchCli),
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    // Commands that talk to a running node print results, not the life of
    // their own short-lived node.
    let quiet = matches!(
        cli.command,
        Command::Nodes { .. }
            | Command::Ps { .. }
            | Command::Top { .. }
            | Command::Ping { .. }
            | Command::Spawn { .. }
            | Command::Send { .. }
            | Command::Code(_)
            | Command::Coord(_)
            | Command::Tables(_)
    );
    // openraft reports every unreachable peer of an election as an error;
    // the coordination layer logs what matters itself. Unless RUST_LOG
    // names openraft (RUST_LOG=info,openraft=info shows it), it is off.
    let default_level = if matches!(cli.command, Command::Top { .. }) {
        // `molt top` owns the screen: a log line would break it up, and
        // its footer shows what goes wrong.
        "off"
    } else if quiet {
        "warn"
    } else {
        "info"
    };
    let directives = match std::env::var("RUST_LOG") {
        Ok(given) if given.contains("openraft") => given,
        Ok(given) if !given.trim().is_empty() => format!("{given},openraft=off"),
        _ => format!("{default_level},openraft=off"),
    };
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("molt: RUST_LOG={directives:?} is not a log filter ({e}); using {default_level}");
        EnvFilter::new(format!("{default_level},openraft=off"))
    });
    // Colours only for a terminal: a log piped to a file or a collector
    // stays plain text.
    let log = tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(filter);
    match cli.log_format {
        LogFormat::Text => log.with_target(false).init(),
        LogFormat::Json => log
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
    let config = cli.limits.apply(NodeConfig::default());
    match dispatch(cli.command, config) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("molt: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Write to stdout for [`out!`]: a closed pipe ends the process with
/// status 0; any other write error with status 1 and the reason.
fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("molt: cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// How long tokio's idle workers spin: `spin_before_park`, unless the
/// node's own threads run the processes (they spin instead).
fn tokio_spin(config: &NodeConfig) -> Duration {
    if config.process_threads > 0 {
        Duration::ZERO
    } else {
        config.spin_before_park
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    runtime_spinning(Duration::ZERO)
}

/// The scheduler; a worker about to sleep first spins for `spin` (see
/// `NodeConfig::spin_before_park`).
fn runtime_spinning(spin: Duration) -> Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if !spin.is_zero() {
        builder.on_thread_park(move || {
            let start = std::time::Instant::now();
            while start.elapsed() < spin {
                std::hint::spin_loop();
            }
        });
    }
    builder
        .enable_all()
        .build()
        .context("starting the scheduler")
}

fn dispatch(command: Command, config: NodeConfig) -> Result<ExitCode> {
    match command {
        Command::Run { module, args, path } => {
            let args = molt_abi::codec::encode(&args);
            runtime_spinning(tokio_spin(&config))?.block_on(run::run(config, module, args, path))
        }
        Command::Node(args) => {
            runtime_spinning(tokio_spin(&config))?.block_on(node::node(config, args))
        }
        remote @ (Command::Nodes { .. }
        | Command::Ps { .. }
        | Command::Ping { .. }
        | Command::Spawn { .. }
        | Command::Send { .. }) => runtime()?.block_on(remote::remote_command(remote)),
        Command::Top { remote, iterations } => top::top(&runtime()?, remote, iterations),
        Command::Code(command) => runtime()?.block_on(code::run(command)),
        Command::Coord(command) => runtime()?.block_on(cluster::run(command)),
        Command::Tables(command) => runtime()?.block_on(tables::run(command)),
        Command::Inspect { module } => inspect::inspect(module, &config),
        Command::Build { dir } => {
            for file in guest_build::build_crate(&dir)? {
                out!("{}", file.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => {
            eprintln!("building the example guests...");
            let dir = guest_build::build_workspace_guests(&[
                "counter",
                "counter-v2",
                "cart",
                "crash-demo",
                "ping-pong",
                "singleton",
            ])?;
            runtime()?.block_on(run::demo(config, dir))
        }
        Command::Bench(args) => {
            runtime_spinning(tokio_spin(&config))?.block_on(bench::run(config, args))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test for both settings: `tune_allocator` sets them together,
    /// and tests in parallel would see each other's.
    #[test]
    fn the_allocator_settings_are_set_on_mimallocs_own_options() {
        // SAFETY: reads one option's value.
        let get = |option| unsafe { libmimalloc_sys::mi_option_get(option) };
        let delay_from_env = std::env::var_os("MIMALLOC_PURGE_DELAY").is_some();
        let thp_from_env = std::env::var_os("MIMALLOC_ALLOW_THP").is_some();
        // mimalloc's defaults, 1,000 ms and 1: the indices name those
        // options, not others.
        if !delay_from_env {
            assert_eq!(get(MI_OPTION_PURGE_DELAY), 1_000);
        }
        if !thp_from_env {
            assert_eq!(get(MI_OPTION_ALLOW_THP), 1);
        }
        tune_allocator();
        if !delay_from_env {
            assert_eq!(get(MI_OPTION_PURGE_DELAY), PURGE_DELAY_MS);
        }
        if !thp_from_env {
            assert_eq!(get(MI_OPTION_ALLOW_THP), 0);
            // SAFETY: reads a flag of this process.
            let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
            assert_eq!(disabled, 1);
        }
    }
}
