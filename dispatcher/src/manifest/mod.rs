//! Manifests: one TOML file per function, parsed (`Raw*`) and validated into [`FunctionSpec`]s.
//!
//! ```toml
//! name = "echo"
//! wasm = "../target/wasm32-wasip1/release/echo.wasm"
//! [trigger.http]
//! path = "/echo"
//! methods = ["POST"]
//! [env]
//! GREETING = "hi"
//! DATABASE_URL = "${DATABASE_URL}"
//! [limits]
//! memory_mb = 128
//! timeout_ms = 10000
//! max_concurrency = 64
//! ```
//!
//! Every manifest in a folder is validated before anything is served, and all the errors are
//! reported together. Each error names the file, the field and what was expected.

mod database;
mod error;
mod load;
mod parse;
mod raw;
mod route;
mod schedule;
mod spec;

pub use database::DatabaseUrl;
pub use error::{ManifestError, ManifestErrors};
pub use load::{load_dir, load_file};
pub use parse::{parse_manifest, WasmSource};
pub use route::{percent_decode, Lookup, RouteMatch, RoutePattern, RouteTable};
pub use schedule::{backoff, CatchUp, Overlap, ScheduleSpec, CATCH_UP_WINDOW};
pub use spec::{FunctionSpec, Limits};
