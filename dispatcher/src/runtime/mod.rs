//! The engine: compiles modules once, and runs each event in a fresh, limited instance.
//!
//! Everything wasmtime-specific lives under this module, so that triggers and the registry
//! only see [`Runtime`], [`Prepared`], [`Invocation`] and [`InvokeError`].
//!
//! Layers, each using only those above it in this list:
//! - `abi`: errno table, constants and record layouts, checked guest memory;
//! - `fd`: the descriptor table (stdio and sockets);
//! - `host`: the per-instance state the calls see (`Host`, memory limiter, exit code);
//! - `preview1` and `sockets`: the host calls (neither uses the other);
//! - `linking`: puts both into the `Linker` and stubs what is missing.
//!
//! Beside them, `cache` keeps compiled modules on disk and `net_policy` is the allow-list.

mod abi;
mod cache;
mod fd;
mod host;
mod linking;
mod net_policy;
mod preview1;
mod sockets;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Store, UpdateDeadline,
};

use cache::ModuleCache;
pub use cache::{content_hash, Origin};
use fd::FdTable;
use host::{ExitCode, Host, MemoryLimiter};
pub use net_policy::{Endpoint, NetPolicy};

/// How often the epoch advances; a spinning guest yields to tokio at this interval.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Bytes of each linear memory slot kept mapped between instances and reset in place.
const KEEP_RESIDENT: usize = 4 << 20;

/// Largest linear memory an instance may have, in MiB: the pooling allocator's slot size.
pub const MAX_MEMORY_MB: u64 = 4096;

/// Settings of the engine, fixed for the life of the process.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled artifacts are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Instances that may exist at once across all functions (pooling allocator slots).
    pub max_instances: u32,
    /// Largest linear memory any instance may have, in bytes.
    pub max_memory_bytes: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            max_instances: 1000,
            max_memory_bytes: MAX_MEMORY_MB << 20,
        }
    }
}

/// A module that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a valid WebAssembly module: {0}")]
    Invalid(String),
    #[error("{0}")]
    Unsupported(String),
}

/// Why an invocation did not produce output.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("did not finish within {0:?}")]
    Timeout(Duration),
    #[error("exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    #[error("wrote more than the {0}-byte output limit")]
    OutputLimit(usize),
    #[error("exited with code {0}")]
    Exit(i32),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("no instance slot was free: {0}")]
    Capacity(String),
}

/// The shared engine and linker. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    /// The host functions, shared by every module.
    linker: Arc<Linker<Host>>,
    /// The compile cache, if configured.
    cache: Option<ModuleCache>,
    /// Modules this process has compiled or loaded, by content hash, so a redeploy or a
    /// rollback to a module seen before costs no compile (and no cache read).
    seen: Arc<Mutex<HashMap<String, Module>>>,
}

/// Most modules kept in [`Runtime::seen`]; past it the map starts over (the on-disk cache
/// still has them).
const SEEN_MAX: usize = 256;

impl Runtime {
    /// Builds the engine (pooling allocator, copy-on-write memory images, epoch interruption)
    /// and starts the epoch ticker.
    pub fn new(config: &RuntimeConfig) -> anyhow::Result<Self> {
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
        cfg.epoch_interruption(true)
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine =
            Engine::new(&cfg).map_err(|e| anyhow::anyhow!("cannot create the wasm engine: {e}"))?;

        let mut linker = Linker::new(&engine);
        linking::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot define the WASI host: {e}"))?;

        let cache = match &config.cache_dir {
            Some(dir) => Some(ModuleCache::new(dir.clone(), &engine).map_err(|e| {
                anyhow::anyhow!("cannot create the compile cache at {}: {e}", dir.display())
            })?),
            None => None,
        };

        // The ticker holds only a weak handle, so it ends with the last engine.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            })?;

        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
            cache,
            seen: Arc::default(),
        })
    }

    /// Compiles (or loads from the cache) and pre-links a module. The module must be a WASI
    /// command (export `_start`) that imports only from `wasi_snapshot_preview1`.
    pub fn prepare(&self, wasm: &[u8]) -> Result<Prepared, LoadError> {
        let started = Instant::now();
        let hash = content_hash(wasm);
        let (module, origin) = match self.known(&hash) {
            Some(module) => (module, Origin::Cached),
            None => {
                let module = match &self.cache {
                    Some(cache) => cache.compile(&self.engine, wasm, &hash),
                    None => Module::from_binary(&self.engine, wasm),
                }
                .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
                (module, Origin::Compiled)
            }
        };
        let prepared = self.link(module.clone(), hash.clone(), origin, started)?;
        self.remember(hash, module);
        Ok(prepared)
    }

    /// Pre-links a module seen before (by this process or the compile cache) from its hash
    /// alone, so its bytes need not be fetched. `None` if it was not seen.
    pub fn prepare_known(&self, hash: &str) -> Option<Result<Prepared, LoadError>> {
        let started = Instant::now();
        let module = self.known(hash)?;
        Some(self.link(module, hash.to_string(), Origin::Cached, started))
    }

    fn known(&self, hash: &str) -> Option<Module> {
        if let Some(m) = self.seen_map().get(hash) {
            return Some(m.clone());
        }
        let module = self.cache.as_ref()?.load(&self.engine, hash)?;
        self.remember(hash.to_string(), module.clone());
        Some(module)
    }

    fn remember(&self, hash: String, module: Module) {
        let mut seen = self.seen_map();
        if seen.len() >= SEEN_MAX {
            seen.clear();
        }
        seen.insert(hash, module);
    }

    fn seen_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Module>> {
        // The map is only ever inserted into or read; a panic elsewhere leaves it usable.
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks the module's shape and imports, and pre-links it.
    fn link(
        &self,
        module: Module,
        hash: String,
        origin: Origin,
        started: Instant,
    ) -> Result<Prepared, LoadError> {
        match module.get_export("_start") {
            Some(wasmtime::ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {}
            _ => {
                return Err(LoadError::Unsupported(
                    "the module has no `_start` function: expected a WASI command (a Rust `bin` crate built for wasm32-wasip1)".into(),
                ))
            }
        }
        let pre = linking::pre_link(&self.linker, &module).map_err(LoadError::Unsupported)?;

        Ok(Prepared {
            pre,
            hash,
            origin,
            load_time: started.elapsed(),
        })
    }
}

/// A compiled, pre-linked module: instantiating it costs microseconds.
#[derive(Clone)]
pub struct Prepared {
    pre: InstancePre<Host>,
    /// SHA-256 of the module's bytes.
    pub hash: String,
    /// Whether it was compiled now or loaded from the cache.
    pub origin: Origin,
    /// How long compiling or loading took.
    pub load_time: Duration,
}

/// One event for one instance.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The function's name, for logs.
    pub function: Arc<str>,
    /// `argv`, starting with the program name.
    pub args: Vec<String>,
    /// The environment, in order.
    pub env: Vec<(String, String)>,
    /// The event's input, on stdin.
    pub stdin: Bytes,
    /// Linear memory cap in bytes.
    pub memory_bytes: u64,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Most sockets open at once.
    pub max_sockets: usize,
    /// Most sessions with endpoints the host serves (database pools) at once.
    pub max_pooled_sessions: usize,
    /// Most bytes the guest may write to stdout.
    pub stdout_cap: usize,
    /// Where the guest may connect and listen.
    pub net: Arc<NetPolicy>,
}

impl Prepared {
    /// Runs the module's `_start` in a fresh instance and returns what it wrote to stdout.
    /// The instance is dropped afterwards, whatever happened.
    pub async fn invoke(&self, inv: Invocation) -> Result<Vec<u8>, InvokeError> {
        let host = Host {
            args: inv.args.into_iter().map(String::into_bytes).collect(),
            env: inv
                .env
                .into_iter()
                .map(|(k, v)| {
                    let mut e = k.into_bytes();
                    e.push(b'=');
                    e.extend_from_slice(v.as_bytes());
                    e
                })
                .collect(),
            fds: FdTable::new(inv.stdin, inv.stdout_cap, inv.function.clone()),
            limiter: MemoryLimiter {
                max_bytes: inv.memory_bytes as usize,
                hit: false,
                peak: 0,
            },
            function: inv.function,
            net: inv.net,
            resolved: Vec::new(),
            max_sockets: inv.max_sockets,
            max_pooled_sessions: inv.max_pooled_sessions,
        };
        let mut store = Store::new(self.pre.module().engine(), host);
        store.limiter(|h| &mut h.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));

        let result = tokio::time::timeout(inv.timeout, run(&self.pre, &mut store)).await;
        let host = store.data_mut();
        tracing::debug!(function = %host.function, peak_memory = host.limiter.peak, "instance done");
        let stdout = host.fds.take_stdout();
        if let Some(c) = &stdout {
            if c.overflowed {
                return Err(InvokeError::OutputLimit(c.cap));
            }
        }
        let exit = match result {
            Err(_elapsed) => return Err(InvokeError::Timeout(inv.timeout)),
            Ok(Ok(())) => 0,
            Ok(Err(e)) => match e.downcast_ref::<ExitCode>() {
                Some(ExitCode(code)) => *code,
                None if host.limiter.hit => {
                    return Err(InvokeError::MemoryLimit(host.limiter.max_bytes))
                }
                None if e.is::<wasmtime::PoolConcurrencyLimitError>() => {
                    return Err(InvokeError::Capacity(format!("{e:#}")))
                }
                None => return Err(InvokeError::Trap(format!("{e:?}"))),
            },
        };
        if exit != 0 {
            return Err(InvokeError::Exit(exit));
        }
        Ok(stdout.map(|c| c.data).unwrap_or_default())
    }
}

async fn run(pre: &InstancePre<Host>, store: &mut Store<Host>) -> wasmtime::Result<()> {
    let instance = pre.instantiate_async(&mut *store).await?;
    let start = instance.get_typed_func::<(), ()>(&mut *store, "_start")?;
    start.call_async(&mut *store, ()).await
}
