//! A validated function: what the rest of the platform reads of a manifest.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::database::DatabaseUrl;
use super::route::RoutePattern;
use super::schedule::ScheduleSpec;
use crate::runtime::NetPolicy;

/// Default linear-memory cap for a function, in MiB.
pub const DEFAULT_MEMORY_MB: u64 = 128;
/// Largest memory cap a manifest may ask for, in MiB: the runtime's slot size.
pub const MAX_MEMORY_MB: u64 = crate::runtime::MAX_MEMORY_MB;
/// Default wall-clock limit for one invocation.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Largest wall-clock limit a manifest may ask for (15 minutes, as Lambda).
pub const MAX_TIMEOUT_MS: u64 = 900_000;
/// Default number of instances of one function in flight at once.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 64;
/// Largest per-function concurrency a manifest may ask for.
pub const MAX_CONCURRENCY: u32 = 1000;
/// Default number of sockets one instance may hold open.
pub const DEFAULT_MAX_SOCKETS: u32 = 64;
/// Largest per-instance socket cap a manifest may ask for.
pub const MAX_SOCKETS: u32 = 4096;
/// Default number of pooled database sessions one instance may hold: a request rarely needs
/// more than one, and a pool of 16 then serves at least four instances at once.
pub const DEFAULT_MAX_DB_SESSIONS: u32 = 4;
/// Largest per-instance database session cap a manifest may ask for.
pub const MAX_DB_SESSIONS: u32 = 64;
/// Default number of outbound connections one instance may hold open.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 32;
/// Default number of name look-ups in one invocation.
pub const DEFAULT_MAX_LOOKUPS: u32 = 32;
/// Largest look-up cap a manifest may ask for.
pub const MAX_LOOKUPS: u32 = 4096;
/// Default stderr bytes of one invocation kept in the log, in KiB.
pub const DEFAULT_MAX_LOG_KB: u32 = 1024;
/// Largest stderr cap a manifest may ask for, in KiB.
pub const MAX_LOG_KB: u32 = 64 << 10;

/// A validated function, ready to be compiled and served.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// Unique function name, used in logs, errors and metrics.
    pub name: String,
    /// The manifest this came from, for error messages.
    pub manifest_path: PathBuf,
    /// Absolute-or-resolved path of the `.wasm` file.
    pub wasm_path: PathBuf,
    /// The module's bytes, read once at load time.
    pub wasm: Vec<u8>,
    /// The manifest's text as written, `${VAR}` unexpanded: what a deploy stores, so that
    /// each replica expands variables from its own environment.
    pub source: String,
    /// The HTTP route, if the function has one.
    pub http: Option<HttpTriggerSpec>,
    /// Cron schedules, if any.
    pub schedules: Vec<ScheduleSpec>,
    /// `[env]` with `${VAR}` already expanded, in a stable order.
    pub env: Vec<(String, String)>,
    /// Resource caps for each invocation.
    pub limits: Limits,
    /// Where the function may connect and listen.
    pub network: Arc<NetPolicy>,
    /// The `mysql://` entries of `[network] allow` whose sessions the host serves from its
    /// pool (empty with `pool = false`).
    pub databases: Vec<DatabaseUrl>,
}

/// An HTTP route bound to a function.
#[derive(Debug, Clone)]
pub struct HttpTriggerSpec {
    /// The parsed path pattern.
    pub pattern: RoutePattern,
    /// Allowed methods, upper case; `None` means every method.
    pub methods: Option<Vec<http::Method>>,
}

/// Per-invocation resource caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory cap in bytes.
    pub memory_bytes: u64,
    /// Wall-clock limit for the whole invocation.
    pub timeout: Duration,
    /// Instances of this function in flight at once.
    pub max_concurrency: u32,
    /// Sockets one instance may hold open at once.
    pub max_sockets: u32,
    /// Pooled database sessions one instance may hold at once.
    pub max_db_sessions: u32,
    /// Outbound connections one instance may hold open at once.
    pub max_connections: u32,
    /// Name look-ups in one invocation.
    pub max_lookups: u32,
    /// Stderr bytes of one invocation kept in the log, in KiB.
    pub max_log_kb: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: DEFAULT_MEMORY_MB << 20,
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            max_sockets: DEFAULT_MAX_SOCKETS,
            max_db_sessions: DEFAULT_MAX_DB_SESSIONS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_lookups: DEFAULT_MAX_LOOKUPS,
            max_log_kb: DEFAULT_MAX_LOG_KB,
        }
    }
}
