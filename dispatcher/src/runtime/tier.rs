//! Tiered compilation's second half: Cranelift compiles of modules that serve from Winch's
//! code meanwhile, one at a time on a thread of their own (the optimized engine compiles
//! serially when tiered, so it takes at most one core), each swapped in when done.
//!
//! The thread runs at normal priority: at nice 10 it was starved under load while it held
//! (or queued for) wasmtime's locks that instantiation also takes, and requests stalled for
//! up to 1.1 s behind it (bench section 7, p99 625 ms).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cache::ModuleCache;
use super::engine::Tier;
use super::{compile_optimized, Code};

/// A module to compile again with Cranelift, and the code cell to swap.
struct Job {
    hash: String,
    wasm: Vec<u8>,
    code: Arc<Code>,
}

/// The queue of background compiles. Its thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct Optimizer {
    jobs: mpsc::Sender<Job>,
    pending: Arc<AtomicUsize>,
    /// Baseline compiles running now: the background waits for them (a start-up or a deploy
    /// is waiting for those), so it never takes their cores.
    foreground: Arc<AtomicUsize>,
}

/// Marks a baseline compile as running, until dropped.
pub struct Foreground(Arc<AtomicUsize>);

impl Drop for Foreground {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How often the background checks whether baseline compiles are done.
const IDLE_POLL: Duration = Duration::from_millis(25);

impl Optimizer {
    /// Starts the thread. It holds the optimized tier and the cache, not the runtime.
    pub fn start(optimized: Arc<Tier>, cache: Option<ModuleCache>) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let pending = Arc::new(AtomicUsize::new(0));
        let count = pending.clone();
        let foreground = Arc::new(AtomicUsize::new(0));
        let busy = foreground.clone();
        std::thread::Builder::new()
            .name("optimizer".into())
            .spawn(move || {
                for job in queue {
                    // Idle for two polls in a row: a batch (a start-up folder) is done, not
                    // between two of its modules.
                    while busy.load(Ordering::SeqCst) > 0 || {
                        std::thread::sleep(IDLE_POLL);
                        busy.load(Ordering::SeqCst) > 0
                    } {
                        std::thread::sleep(IDLE_POLL);
                    }
                    optimize(&optimized, cache.as_ref(), job);
                    count.fetch_sub(1, Ordering::SeqCst);
                }
            })?;
        Ok(Optimizer {
            jobs,
            pending,
            foreground,
        })
    }

    /// Queues `wasm` for Cranelift; `code` gets the result.
    pub fn submit(&self, hash: String, wasm: Vec<u8>, code: Arc<Code>) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.jobs.send(Job { hash, wasm, code }).is_err() {
            // Only if the thread died: the module keeps its baseline code.
            self.pending.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("the background compiler is gone: the module stays on baseline code");
        }
    }

    /// Holds the background compiles back while the guard lives.
    pub fn foreground(&self) -> Foreground {
        self.foreground.fetch_add(1, Ordering::SeqCst);
        Foreground(self.foreground.clone())
    }

    /// Compiles queued or running.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }
}

/// Compiles one module with Cranelift (storing the artifact in the cache) and swaps its code.
/// A failure leaves the baseline code serving, and is logged.
fn optimize(tier: &Tier, cache: Option<&ModuleCache>, job: Job) {
    let started = Instant::now();
    let short = &job.hash[..job.hash.len().min(12)];
    let linked = compile_optimized(tier, cache, &job.wasm, &job.hash);
    match linked {
        Ok(pre) => {
            job.code.store(Arc::new(pre));
            tracing::info!(
                hash = short,
                ms = started.elapsed().as_millis() as u64,
                "optimized code swapped in"
            );
        }
        Err(e) => tracing::warn!(
            hash = short,
            "cannot compile with Cranelift; the module keeps its baseline code: {e}"
        ),
    }
}
