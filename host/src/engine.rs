//! The one wasmtime `Engine` of a node: pooling allocator, copy-on-write
//! memory images, async fibers and epoch interruption, sized from
//! [`NodeConfig`].

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use wasmtime::{
    Cache, CacheConfig, Config, Enabled, Engine, InstanceAllocationStrategy,
    PoolingAllocationConfig,
};

use crate::config::NodeConfig;

/// Memory mappings one process costs the kernel. Measured with `molt
/// bench`: 2 per pool slot at start (fiber stack and its guard page), 2 more
/// per live process (memory slot split, table), 4 with copy-on-write
/// images; rounded up.
const MAPS_PER_PROCESS: u64 = 7;
/// Mappings the rest of the process (libraries, heap, threads) needs.
const MAPS_BASE: u64 = 8_192;
/// Instances beyond `processes_max`: a process moving to a new version holds
/// its old and its new instance for a moment.
const INSTANCES_SPARE: u32 = 64;
/// Freed pool slots whose pages are given back to the kernel in one call.
const DECOMMIT_BATCH: usize = 256;
/// Bytes of a freed function table kept resident (zeroed) when slots keep
/// their pages: the first page, 512 elements.
const TABLE_KEEP_RESIDENT: usize = 4096;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime refused the configuration (for example, the pool does not
    /// fit in the address space).
    #[error("cannot create the wasm engine: {0:#}")]
    Wasmtime(wasmtime::Error),
    /// The compile cache directory cannot be used.
    #[error("cannot use the compile cache in {dir}: {error:#}")]
    CompileCache {
        /// `compile_cache_dir`.
        dir: std::path::PathBuf,
        /// What went wrong.
        error: wasmtime::Error,
    },
}

/// Build the engine. `processes_max` may already have been lowered by
/// [`fit_map_count`]; `keep` is [`keeps_pages`] of `config`.
pub(crate) fn build(config: &NodeConfig, keep: bool) -> Result<Engine, EngineError> {
    let slots = config.processes_max + INSTANCES_SPARE;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(slots)
        .total_memories(slots)
        .total_tables(slots)
        .total_stacks(slots)
        .total_component_instances(0)
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .max_memory_size(config.memory_bytes_max as usize)
        .table_elements(config.table_elements_max as usize)
        // A freed slot keeps the pages its process touched (up to
        // `pool_keep_resident_bytes`), zeroed, so the next process there
        // takes no page faults: with the PAGEMAP_SCAN ioctl wasmtime finds
        // exactly those pages. Without it, keeping pages would mean
        // zeroing the first bytes of every slot at each free, faulting in
        // pages the guest never touched: slower and bigger, so then a
        // freed slot gives all its pages back. Fiber stacks always do.
        .linear_memory_keep_resident(if keep {
            config.pool_keep_resident_bytes
        } else {
            0
        })
        .table_keep_resident(if keep { TABLE_KEEP_RESIDENT } else { 0 })
        .pagemap_scan(if keep { Enabled::Yes } else { Enabled::No })
        .async_stack_keep_resident(0)
        // Give freed pages back in batches (one process_madvise call per
        // batch instead of one madvise per memory, table and stack, each
        // with a TLB shootdown): purging 10,000 processes measured 255 ms
        // unbatched, 95 ms at 64, 58 ms at 256.
        .decommit_batch_size(DECOMMIT_BATCH);

    let mut wasm = guest_settings(config);
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        // With table pages kept resident, fill function tables lazily: an
        // instance then resolves only the elements it calls through
        // (filling all of them eagerly was ~8 % of a spawn, `func_loc` per
        // element). Without, fill them at instantiation: lazy filling of a
        // fresh page reads it before writing it, a fault on the zero page
        // and then a copy-on-write fault with a TLB shootdown (measured 21
        // µs per spawn instead of 11 µs).
        .table_lazy_init(keep)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    compile_cache(&mut wasm, config)?;
    Engine::new(&wasm).map_err(EngineError::Wasmtime)
}

/// Whether freed pool slots keep their touched pages resident:
/// `pool_keep_resident_bytes` is set and the kernel has `PAGEMAP_SCAN`.
pub(crate) fn keeps_pages(config: &NodeConfig) -> bool {
    config.pool_keep_resident_bytes > 0 && PoolingAllocationConfig::is_pagemap_scan_available()
}

/// With `compile_cache_dir`: compiled code kept on disk too (each engine's
/// under keys of its own settings).
fn compile_cache(wasm: &mut Config, config: &NodeConfig) -> Result<(), EngineError> {
    if let Some(dir) = &config.compile_cache_dir {
        let mut cache = CacheConfig::new();
        cache
            .with_directory(dir)
            .with_files_total_size_soft_limit(config.compile_cache_bytes_max);
        let cache = Cache::new(cache).map_err(|error| EngineError::CompileCache {
            dir: dir.clone(),
            error,
        })?;
        wasm.cache(Some(cache));
    }
    Ok(())
}

/// The baseline engine, if `config.baseline_compile`: Winch, a
/// single-pass compiler, for code that serves a new version at once while
/// the optimising compile runs. Its instances are allocated on demand,
/// not from a pool: they are few and short-lived (each moves onto the
/// optimised code at its next message), so they do not get a second pool
/// of address space. Every setting the guest can observe (memory limits,
/// stack, epochs) is the main engine's.
pub(crate) fn build_baseline(config: &NodeConfig) -> Result<Option<Engine>, EngineError> {
    if !config.baseline_compile {
        return Ok(None);
    }
    let mut wasm = guest_settings(config);
    wasm.strategy(wasmtime::Strategy::Winch);
    compile_cache(&mut wasm, config)?;
    Engine::new(&wasm).map(Some).map_err(EngineError::Wasmtime)
}

/// What both engines share, and a guest can observe: epochs, stacks,
/// memory limits.
fn guest_settings(config: &NodeConfig) -> Config {
    let mut wasm = Config::new();
    wasm.epoch_interruption(true)
        .async_stack_size(config.guest_stack_bytes)
        .max_wasm_stack(config.guest_stack_bytes * 3 / 4)
        // Each memory slot reserves exactly its limit: no guard region, so
        // bounds are checked explicitly and 100k slots fit easily.
        .memory_reservation(config.memory_bytes_max)
        .memory_guard_size(0)
        .memory_reservation_for_growth(0)
        .guard_before_linear_memory(false)
        .memory_may_move(false)
        .memory_init_cow(config.memory_images_cow);
    if config.perf_map {
        wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    wasm
}

/// Bumps the engines' epochs every `timeslice` so running guests yield.
/// Stops when the returned flag is set.
pub(crate) fn start_ticker(engines: &[Engine], timeslice: Duration) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let (engines, flag) = (engines.to_vec(), stop.clone());
    thread::Builder::new()
        .name("molt-epoch".into())
        .spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                thread::sleep(timeslice);
                for engine in &engines {
                    engine.increment_epoch();
                }
            }
        })
        .expect("spawning the epoch thread");
    stop
}

const MAP_COUNT_PATH: &str = "/proc/sys/vm/max_map_count";

/// What [`fit_map_count`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapCount {
    /// The limit is high enough (or cannot be read, e.g. not Linux).
    Enough,
    /// The node raised `vm.max_map_count` from the first value to the second.
    Raised(u64, u64),
    /// Too low and could not be raised: the node runs with fewer processes.
    Lowered {
        /// The kernel limit found.
        map_count: u64,
        /// The limit that `processes_max` needs.
        needed: u64,
        /// `processes_max` the node uses instead.
        processes_max: u32,
    },
}

/// Mappings needed for `processes`.
pub fn map_count_needed(processes: u32) -> u64 {
    MAPS_BASE + (processes as u64 + INSTANCES_SPARE as u64) * MAPS_PER_PROCESS
}

/// Make sure the kernel lets the node map `processes_max` processes: every
/// pooled memory slot and fiber stack costs mappings, and Linux's default
/// `vm.max_map_count` (65530) stops a node at a few thousand processes with
/// ENOMEM. Raise the limit if allowed, else lower `processes_max` to fit
/// and report exactly what to run.
pub fn fit_map_count(config: &mut NodeConfig) -> MapCount {
    let Some(current) = fs::read_to_string(MAP_COUNT_PATH)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    else {
        return MapCount::Enough;
    };
    // Other nodes (or anything else) in this OS process use mappings too.
    let in_use = fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count() as u64);
    let raise = |needed: u64| {
        config.raise_map_count && fs::write(MAP_COUNT_PATH, needed.to_string()).is_ok()
    };
    let outcome = plan_map_count(current, in_use, config.processes_max, raise);
    if let MapCount::Lowered { processes_max, .. } = outcome {
        config.processes_max = processes_max;
    }
    outcome
}

/// The decision of [`fit_map_count`], without the I/O: `current` is the
/// kernel limit, `in_use` the mappings this OS process has now, and `raise`
/// tries to set the limit and says whether it worked.
fn plan_map_count(
    current: u64,
    in_use: u64,
    processes_max: u32,
    raise: impl FnOnce(u64) -> bool,
) -> MapCount {
    let needed = in_use + map_count_needed(processes_max);
    if current >= needed {
        return MapCount::Enough;
    }
    if raise(needed) {
        return MapCount::Raised(current, needed);
    }
    let room = current.saturating_sub(in_use).saturating_sub(MAPS_BASE);
    let fit = (room / MAPS_PER_PROCESS)
        .saturating_sub(INSTANCES_SPARE as u64)
        .max(16);
    MapCount::Lowered {
        map_count: current,
        needed,
        processes_max: (fit as u32).min(processes_max),
    }
}

impl MapCount {
    /// Log what happened, with the command to run when the node had to shrink.
    pub fn log(&self) {
        match self {
            MapCount::Enough => {}
            MapCount::Raised(from, to) => {
                tracing::info!(from, to, "raised vm.max_map_count to fit processes_max")
            }
            MapCount::Lowered {
                map_count,
                needed,
                processes_max,
            } => tracing::warn!(
                "vm.max_map_count is {map_count}, too low for the configured processes_max \
                 (needs {needed}); this node runs at most {processes_max} processes. \
                 To allow more, run as root: sysctl -w vm.max_map_count={needed}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_count_is_raised_or_processes_lowered() {
        let needed = map_count_needed(100_000);
        let no_raise = |_| panic!("no need to raise");
        assert_eq!(
            plan_map_count(needed, 0, 100_000, no_raise),
            MapCount::Enough
        );
        assert_eq!(
            plan_map_count(65_530, 0, 100_000, |n| n == needed),
            MapCount::Raised(65_530, needed)
        );
        let MapCount::Lowered { processes_max, .. } = plan_map_count(65_530, 0, 100_000, |_| false)
        else {
            panic!("expected the node to shrink");
        };
        // What it keeps must itself fit in the kernel limit.
        assert!(map_count_needed(processes_max) <= 65_530);
        assert!(processes_max > 7_000, "only {processes_max} processes");
    }

    #[test]
    fn mappings_already_in_use_count() {
        // A second node in the same OS process needs room beside the first.
        let first = map_count_needed(100_000);
        let both = first + map_count_needed(10_000);
        assert_eq!(
            plan_map_count(first, first, 10_000, |n| n == both),
            MapCount::Raised(first, both)
        );
        let MapCount::Lowered { processes_max, .. } =
            plan_map_count(first + 100_000, first, 50_000, |_| false)
        else {
            panic!("expected the node to shrink");
        };
        assert!(first + map_count_needed(processes_max) <= first + 100_000);
    }
}
