//! The engines: one per compiler tier, each with its pooling allocator and its linker.
//!
//! Cranelift's code is what requests run on for good. Winch, wasmtime's baseline compiler,
//! compiles a module about six times faster (the demo set: 3.6 s against 23 s) into slower code: with tiering on, a module seen
//! for the first time is served from Winch's code at once and swapped for Cranelift's when a
//! background compile is done (see `tier`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, PoolingAllocationConfig, Strategy,
};

use super::host::Host;
use super::{linking, RuntimeConfig};

/// How often the epoch advances; a spinning guest yields to tokio at this interval.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Bytes of each linear memory slot kept mapped between instances and reset in place.
const KEEP_RESIDENT: usize = 4 << 20;

/// One compiler's engine and the host functions defined for it.
pub struct Tier {
    pub engine: Engine,
    pub linker: Linker<Host>,
}

impl Tier {
    /// Builds the engine (pooling allocator, copy-on-write memory images, epoch
    /// interruption) for `strategy`, and its linker. `parallel`: a compile uses every core
    /// (else only the calling thread, as the background compiles do).
    pub fn new(config: &RuntimeConfig, strategy: Strategy, parallel: bool) -> anyhow::Result<Tier> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(config.max_instances)
            .total_memories(config.max_instances)
            .total_tables(config.max_instances)
            .total_stacks(config.max_instances)
            .max_memory_size(config.max_memory_bytes as usize)
            // Reset only the pages an instance dirtied and keep them mapped, instead of
            // unmapping and faulting them in again on the next request (Linux 6.7+;
            // elsewhere the keep-resident sizes below still avoid most faults).
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(256 << 10);
        let mut cfg = Config::new();
        cfg.strategy(strategy)
            .parallel_compilation(parallel)
            // Unwind tables serve native debuggers and profilers only (wasmtime's own traps
            // and backtraces walk frame pointers); Winch's short-lived code does without
            // them and compiles about 6% faster.
            .native_unwind_info(strategy != Strategy::Winch)
            .epoch_interruption(true)
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if config.perf_map {
            cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&cfg)
            .map_err(|e| anyhow::anyhow!("cannot create the wasm engine ({strategy:?}): {e}"))?;
        let mut linker = Linker::new(&engine);
        linking::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot define the WASI host: {e}"))?;
        Ok(Tier { engine, linker })
    }
}

/// A tier built on first use, so that a replica whose modules are all in the cache never
/// builds Winch's engine and pool (a few milliseconds of every warm start).
pub struct LazyTier {
    config: RuntimeConfig,
    strategy: Strategy,
    tier: OnceLock<Option<Arc<Tier>>>,
}

impl LazyTier {
    pub fn new(config: &RuntimeConfig, strategy: Strategy) -> LazyTier {
        LazyTier {
            config: config.clone(),
            strategy,
            tier: OnceLock::new(),
        }
    }

    /// The tier, built (with its epoch ticker) the first time; `None` if that failed, which
    /// is logged once: modules are then compiled by the optimized tier alone.
    pub fn get(&self) -> Option<&Arc<Tier>> {
        self.tier
            .get_or_init(|| {
                let built = Tier::new(&self.config, self.strategy, true).and_then(|tier| {
                    start_ticker(&[&tier.engine])?;
                    Ok(Arc::new(tier))
                });
                built
                    .map_err(|e| {
                        tracing::warn!(
                            "no {:?} engine; compiling with Cranelift: {e:#}",
                            self.strategy
                        )
                    })
                    .ok()
            })
            .as_ref()
    }
}

/// Advances the engines' epochs every [`EPOCH_TICK`]. It holds only weak handles, so it ends
/// with the last of them.
pub fn start_ticker(engines: &[&Engine]) -> std::io::Result<()> {
    let weak: Vec<_> = engines.iter().map(|e| e.weak()).collect();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            let mut alive = false;
            for engine in weak.iter().filter_map(|w| w.upgrade()) {
                engine.increment_epoch();
                alive = true;
            }
            if !alive {
                break;
            }
        })?;
    Ok(())
}
