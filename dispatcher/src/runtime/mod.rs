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
mod cstrings;
mod engine;
mod fd;
mod host;
mod linking;
mod net_policy;
mod preview1;
mod sockets;
#[cfg(test)]
mod tests;
mod tier;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::FutureExt;
use wasmtime::{InstancePre, Module, Store, Strategy, UpdateDeadline};

use cache::ModuleCache;
pub use cache::{content_hash, Origin};
pub use cstrings::CStrings;
use engine::{LazyTier, Tier};
pub use fd::LogSink;
use fd::{FdTable, LogLines};
pub use host::Caps;
use host::{ExitCode, Host, MemoryLimiter};
pub use net_policy::{Endpoint, NetPolicy};
pub use tier::Foreground;
use tier::Optimizer;

/// Largest linear memory an instance may have, in MiB: the pooling allocator's slot size.
pub const MAX_MEMORY_MB: u64 = 4096;

/// How a module this process has not seen before is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compile {
    /// With Winch first, so it serves within a fraction of a second, then with Cranelift in
    /// the background; the optimized code replaces the baseline code when it is ready
    /// (requests already running finish on the code they started with).
    #[default]
    Tiered,
    /// With Cranelift only: the deploy (or start-up) waits for the optimized code.
    Optimized,
    /// With Winch only, never optimized and never cached: to run a suite or a bench on
    /// baseline code.
    Baseline,
}

/// Settings of the engine, fixed for the life of the process.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled artifacts are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// A read-only folder of compiled artifacts (a cache folder filled ahead, e.g. in an
    /// image), looked in after `cache_dir`.
    pub precompiled_dir: Option<PathBuf>,
    /// Instances that may exist at once across all functions (pooling allocator slots), per
    /// compiler tier.
    pub max_instances: u32,
    /// Largest linear memory any instance may have, in bytes.
    pub max_memory_bytes: u64,
    /// How modules not seen before are compiled.
    pub compile: Compile,
    /// Whether to write a perf map of the compiled code for `perf`.
    pub perf_map: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            precompiled_dir: None,
            max_instances: 1000,
            max_memory_bytes: MAX_MEMORY_MB << 20,
            compile: Compile::default(),
            perf_map: false,
        }
    }
}

/// Told of each connection an instance opens to an endpoint the host serves itself (a
/// database pool), by the connection's local address, so the host's side can tell which
/// invocation a session belongs to.
pub trait HostSessions: Send + Sync + std::fmt::Debug {
    fn opened(&self, local: std::net::SocketAddr);
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
    /// A host call panicked: a bug in the host, not the guest's fault. Only this invocation
    /// is lost; its instance is dropped.
    #[error("the host failed while serving it: {0}")]
    HostPanic(String),
}

/// A module's pre-linked code, swapped from baseline to optimized in place.
type Code = ArcSwap<InstancePre<Host>>;

/// The shared engines and linkers. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    /// Cranelift: the code every module ends up running.
    optimized: Arc<Tier>,
    /// Winch (built on first use), unless compiles are `Optimized` only.
    baseline: Option<Arc<LazyTier>>,
    /// The background compiles that replace baseline code, when `Tiered`.
    optimizer: Option<Optimizer>,
    /// The compile cache, if configured (optimized code only).
    cache: Option<ModuleCache>,
    /// Modules this process has compiled or loaded, by content hash, so a redeploy or a
    /// rollback to a module seen before costs no compile (and no cache read).
    seen: Arc<Mutex<HashMap<String, Arc<Code>>>>,
}

/// Most modules kept in [`Runtime::seen`]; past it the map starts over (the on-disk cache
/// still has them).
const SEEN_MAX: usize = 256;

impl Runtime {
    /// Builds the engines and starts the epoch ticker (and, tiered, the background compiler).
    pub fn new(config: &RuntimeConfig) -> anyhow::Result<Self> {
        // Tiered, Cranelift only compiles behind, on one thread, after the baseline compiles
        // of a start-up or a deploy, so that it takes at most one core from requests.
        let parallel = config.compile != Compile::Tiered;
        let optimized = Arc::new(Tier::new(config, Strategy::Cranelift, parallel)?);
        let cache = match (&config.cache_dir, &config.precompiled_dir) {
            (None, None) => None,
            (dir, precompiled) => Some(ModuleCache::new(
                dir.clone(),
                precompiled.clone(),
                &optimized.engine,
            )),
        };
        let baseline = match config.compile {
            Compile::Optimized => None,
            Compile::Tiered | Compile::Baseline => {
                Some(Arc::new(LazyTier::new(config, Strategy::Winch)))
            }
        };
        let optimizer = match config.compile {
            Compile::Tiered => Some(Optimizer::start(optimized.clone(), cache.clone())?),
            Compile::Optimized | Compile::Baseline => None,
        };
        engine::start_ticker(&[&optimized.engine])?;
        Ok(Runtime {
            optimized,
            baseline,
            optimizer,
            // Baseline code is never cached, and cached (optimized) code not used.
            cache: cache.filter(|_| config.compile != Compile::Baseline),
            seen: Arc::default(),
        })
    }

    /// Compiles (or loads from the cache) and pre-links a module. The module must be a WASI
    /// command (export `_start`) that imports only from `wasi_snapshot_preview1`.
    pub fn prepare(&self, wasm: &[u8]) -> Result<Prepared, LoadError> {
        let started = Instant::now();
        let hash = content_hash(wasm);
        if let Some(code) = self.known(&hash) {
            return Ok(Prepared::new(code?, hash, Origin::Cached, started));
        }
        let _busy = self.hold_background();
        let code = match self.baseline.as_ref().and_then(|b| b.get()) {
            Some(tier) => match Module::from_binary(&tier.engine, wasm) {
                Ok(module) => {
                    let code = Arc::new(Code::from_pointee(link(tier, &module)?));
                    if let Some(optimizer) = &self.optimizer {
                        optimizer.submit(hash.clone(), wasm.to_vec(), code.clone());
                    }
                    code
                }
                // Winch does not take every proposal Cranelift does: wait for Cranelift.
                Err(_) => self.compile_optimized(wasm, &hash)?,
            },
            None => self.compile_optimized(wasm, &hash)?,
        };
        self.remember(hash.clone(), code.clone());
        Ok(Prepared::new(code, hash, Origin::Compiled, started))
    }

    /// Pre-links a module seen before (by this process or the compile cache) from its hash
    /// alone, so its bytes need not be fetched. `None` if it was not seen.
    pub fn prepare_known(&self, hash: &str) -> Option<Result<Prepared, LoadError>> {
        let started = Instant::now();
        let code = self.known(hash)?;
        Some(code.map(|c| Prepared::new(c, hash.to_string(), Origin::Cached, started)))
    }

    /// Holds background (Cranelift) compiles back until dropped: a deploy or a start-up
    /// holds it over all of its compiles, so that the gaps between them (storing a module,
    /// say) do not let a multi-second background compile start in the middle.
    pub fn hold_background(&self) -> Option<Foreground> {
        self.optimizer.as_ref().map(Optimizer::foreground)
    }

    /// Background compiles queued or running (0 without tiering).
    pub fn optimizing(&self) -> usize {
        self.optimizer.as_ref().map_or(0, Optimizer::pending)
    }

    /// Whether `prepared` runs Cranelift's code now (not, or no longer, Winch's).
    pub fn is_optimized(&self, prepared: &Prepared) -> bool {
        wasmtime::Engine::same(
            prepared.code.load().module().engine(),
            &self.optimized.engine,
        )
    }

    fn compile_optimized(&self, wasm: &[u8], hash: &str) -> Result<Arc<Code>, LoadError> {
        let pre = compile_optimized(&self.optimized, self.cache.as_ref(), wasm, hash)?;
        Ok(Arc::new(Code::from_pointee(pre)))
    }

    fn known(&self, hash: &str) -> Option<Result<Arc<Code>, LoadError>> {
        if let Some(code) = self.seen_map().get(hash) {
            return Some(Ok(code.clone()));
        }
        let module = self.cache.as_ref()?.load(&self.optimized.engine, hash)?;
        let code = match link(&self.optimized, &module) {
            Ok(pre) => Arc::new(Code::from_pointee(pre)),
            Err(e) => return Some(Err(e)),
        };
        self.remember(hash.to_string(), code.clone());
        Some(Ok(code))
    }

    fn remember(&self, hash: String, code: Arc<Code>) {
        let mut seen = self.seen_map();
        if seen.len() >= SEEN_MAX {
            seen.clear();
        }
        seen.insert(hash, code);
    }

    fn seen_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Code>>> {
        // The map is only ever inserted into or read; a panic elsewhere leaves it usable.
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Compiles `wasm` with Cranelift (storing the artifact in `cache`, if any) and pre-links it:
/// a deploy with `--compile optimized` does it in the foreground, a tiered one behind.
fn compile_optimized(
    tier: &Tier,
    cache: Option<&ModuleCache>,
    wasm: &[u8],
    hash: &str,
) -> Result<InstancePre<Host>, LoadError> {
    let module = match cache {
        Some(cache) => cache.compile(&tier.engine, wasm, hash),
        None => Module::from_binary(&tier.engine, wasm),
    }
    .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
    link(tier, &module)
}

/// Checks the module's shape and imports, and pre-links it with `tier`'s host functions.
fn link(tier: &Tier, module: &Module) -> Result<InstancePre<Host>, LoadError> {
    match module.get_export("_start") {
        Some(wasmtime::ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {}
        _ => {
            return Err(LoadError::Unsupported(
                "the module has no `_start` function: expected a WASI command (a Rust `bin` crate built for wasm32-wasip1)".into(),
            ))
        }
    }
    linking::pre_link(&tier.linker, module).map_err(LoadError::Unsupported)
}

/// A compiled, pre-linked module: instantiating it costs microseconds.
#[derive(Clone)]
pub struct Prepared {
    /// Baseline code until the optimized code replaces it.
    code: Arc<Code>,
    /// SHA-256 of the module's bytes.
    pub hash: String,
    /// Whether it was compiled now or loaded from the cache.
    pub origin: Origin,
    /// How long compiling or loading took (until it could serve).
    pub load_time: Duration,
}

impl Prepared {
    fn new(code: Arc<Code>, hash: String, origin: Origin, started: Instant) -> Prepared {
        Prepared {
            code,
            hash,
            origin,
            load_time: started.elapsed(),
        }
    }
}

/// One event for one instance.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The function's name, for logs.
    pub function: Arc<str>,
    /// The invocation's id, on its stderr lines.
    pub request_id: Arc<str>,
    /// Gets the guest's stderr lines besides the process log.
    pub log: Option<Arc<dyn LogSink>>,
    /// `argv`, starting with the program name.
    pub args: CStrings,
    /// The environment, in order.
    pub env: CStrings,
    /// The event's input, on stdin.
    pub stdin: Bytes,
    /// Linear memory cap in bytes.
    pub memory_bytes: u64,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// What the instance may hold and use.
    pub caps: Caps,
    /// Told of each session opened with an endpoint the host serves.
    pub sessions: Option<Arc<dyn HostSessions>>,
    /// Where the guest may connect and listen.
    pub net: Arc<NetPolicy>,
}

/// How long the parts of one invocation took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Creating the instance.
    pub instantiate: Duration,
    /// The guest's `_start`, until it returned or was stopped.
    pub guest: Duration,
    /// Bytes written to stdout.
    pub output_bytes: usize,
}

impl Prepared {
    /// Runs the module's `_start` in a fresh instance and returns what it wrote to stdout.
    /// The instance is dropped afterwards, whatever happened.
    pub async fn invoke(&self, inv: Invocation) -> Result<Vec<u8>, InvokeError> {
        self.invoke_timed(inv, &mut Timings::default()).await
    }

    /// [`Prepared::invoke`], recording how long its parts took in `timings`.
    pub async fn invoke_timed(
        &self,
        inv: Invocation,
        timings: &mut Timings,
    ) -> Result<Vec<u8>, InvokeError> {
        let host = Host {
            args: inv.args,
            env: inv.env,
            fds: FdTable::new(
                inv.stdin,
                inv.caps.stdout_bytes,
                LogLines::new(
                    inv.function.clone(),
                    inv.request_id,
                    inv.log,
                    inv.caps.log_bytes,
                ),
            ),
            limiter: MemoryLimiter {
                max_bytes: inv.memory_bytes as usize,
                hit: false,
                peak: 0,
            },
            function: inv.function,
            net: inv.net,
            resolved: Vec::new(),
            caps: inv.caps,
            lookups: 0,
            reported: 0,
            sessions: inv.sessions,
        };
        // The code current now; a swap to optimized code affects the next invocation.
        let pre = self.code.load_full();
        let mut store = Store::new(pre.module().engine(), host);
        store.limiter(|h| &mut h.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));

        let started = Instant::now();
        let mut instantiated = None;
        // A panic in a host call unwinds through the guest's frames to here: it ends this
        // invocation only (wasmtime leaves the store usable for dropping).
        let running = tokio::time::timeout(inv.timeout, run(&pre, &mut store, &mut instantiated));
        let result = match AssertUnwindSafe(running).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => {
                let message = panic_message(&*panic);
                tracing::error!(function = %store.data().function, "a host call panicked: {message}");
                return Err(InvokeError::HostPanic(message));
            }
        };
        let instantiated = instantiated.unwrap_or_else(Instant::now);
        timings.instantiate = instantiated.saturating_duration_since(started);
        timings.guest = instantiated.elapsed();
        let host = store.data_mut();
        tracing::debug!(function = %host.function, peak_memory = host.limiter.peak, "instance done");
        let stdout = host.fds.take_stdout();
        if let Some(c) = &stdout {
            timings.output_bytes = c.data.len();
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

/// The text of a panic's payload.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_string(),
        (_, Some(s)) => s.clone(),
        _ => "a panic without a message".into(),
    }
}

/// Instantiates and runs `_start`, noting in `instantiated` when the instance was ready.
async fn run(
    pre: &InstancePre<Host>,
    store: &mut Store<Host>,
    instantiated: &mut Option<Instant>,
) -> wasmtime::Result<()> {
    let instance = pre.instantiate_async(&mut *store).await?;
    *instantiated = Some(Instant::now());
    let start = instance.get_typed_func::<(), ()>(&mut *store, "_start")?;
    start.call_async(&mut *store, ()).await
}
