//! The manifest as written: serde types that mirror the TOML, before validation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::schedule::RawSchedule;

/// The file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawManifest {
    /// `name = "echo"`: unique across the platform, `[a-z0-9_-]+`.
    pub(super) name: String,
    /// `wasm = "../target/wasm32-wasip1/release/echo.wasm"`: relative to the manifest, or absolute.
    pub(super) wasm: PathBuf,
    /// `[trigger.http]` (and, later, other trigger kinds).
    #[serde(default)]
    pub(super) trigger: RawTriggers,
    /// `[env]`: variables given to every invocation; `${VAR}` reads the dispatcher's environment.
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    /// `[limits]`: memory, time and concurrency caps.
    #[serde(default)]
    pub(super) limits: RawLimits,
    /// `[network]`: where the function may connect and listen.
    #[serde(default)]
    pub(super) network: RawNetwork,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNetwork {
    /// `allow = ["db:3306", "127.0.0.1:*"]`: outbound connections.
    #[serde(default)]
    pub(super) allow: Vec<String>,
    /// `listen = ["127.0.0.1:*"]`: addresses it may bind.
    #[serde(default)]
    pub(super) listen: Vec<String>,
    /// `pool = false`: connect to the `mysql://` entries of `allow` directly instead of
    /// through the host's session pool (for a driver the pool does not suit).
    pub(super) pool: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTriggers {
    /// `[trigger.http]`: one route.
    pub(super) http: Option<RawHttpTrigger>,
    /// `[[trigger.schedule]]`: any number of cron schedules.
    #[serde(default)]
    pub(super) schedule: Vec<RawSchedule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttpTrigger {
    /// `path = "/orders/:id"`: exact, with `:params`, or ending in a `/...` wildcard.
    pub(super) path: String,
    /// `methods = ["GET", "POST"]`: absent means every method.
    pub(super) methods: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    /// `memory_mb = 128`
    pub(super) memory_mb: Option<i64>,
    /// `timeout_ms = 10000`
    pub(super) timeout_ms: Option<i64>,
    /// `max_concurrency = 64`
    pub(super) max_concurrency: Option<i64>,
    /// `max_sockets = 64`: sockets one instance may hold open at once.
    pub(super) max_sockets: Option<i64>,
    /// `max_db_sessions = 4`: pooled database sessions one instance may hold at once.
    pub(super) max_db_sessions: Option<i64>,
    /// `max_connections = 32`: outbound connections one instance may hold open at once.
    pub(super) max_connections: Option<i64>,
    /// `max_lookups = 32`: name look-ups in one invocation.
    pub(super) max_lookups: Option<i64>,
    /// `max_log_kb = 1024`: stderr of one invocation kept in the log.
    pub(super) max_log_kb: Option<i64>,
}
