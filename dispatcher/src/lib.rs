//! The dispatcher: a serverless platform that serves WebAssembly functions from manifests.
//!
//! The rooms, each depending only on those listed before it:
//! - [`api`]: the admin API's request and answer types, shared by server and CLI.
//! - [`runtime`]: the engine; a fresh, limited instance per event; the WASI host.
//! - `manifest`: files to validated specs (routes, schedules, limits, network policy).
//! - `telemetry`: metrics, request ids, each function's recent lines and invocations, traces.
//! - `function`: a deployed function and the one way any trigger runs it (the CGI contract).
//! - `dbpool`: database sessions from a host-side pool, for the guests' `mysql://` endpoints.
//! - `store`: the platform database (catalog, schedule claims and history) or memory.
//! - `deploy`: changing what is deployed, the live registry, catalog sync, `--watch`.
//! - `schedule`: the schedule trigger. `http`: the listener, the HTTP trigger, the admin API.
//! - [`platform`]: all of it assembled, from a [`platform::Config`] and a listener.
//! - [`cli`]: the command line, over the above.

pub mod api;
pub mod cli;
mod dbpool;
mod deploy;
mod function;
/// The fuzz targets' entry points (`fuzz/`, `make fuzz`).
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod manifest;
pub mod platform;
pub mod runtime;
mod schedule;
mod store;
mod telemetry;

pub use platform::{run, Config, Platform};
/// The process log's batching writer (`main` installs it).
pub use telemetry::{BatchedLog, FlushGuard};

/// For `make bench`: the mean cost of one invocation's telemetry (metrics, request id,
/// recent-invocations ring) on one thread.
#[doc(hidden)]
pub use telemetry::cost_per_invocation as telemetry_cost_per_invocation;
