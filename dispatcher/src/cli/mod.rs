//! The command line: clap types, and one file per command family: `serve` and `check`
//! ([`serve`]), the admin API's commands ([`remote`]), `schedules` and `runs` ([`history`]).

mod client;
mod history;
mod remote;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Serverless functions on WebAssembly: HTTP routes to a fresh instance per request"
)]
pub struct Cli {
    /// How the log is written: `text` for people, `json` (one object per line) for log
    /// shippers.
    #[arg(long, global = true, env = "DISPATCHER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The log's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP and schedules until SIGINT or SIGTERM: what the platform database holds,
    /// plus the manifests folder (deployed at start-up; unchanged files are no-ops).
    Serve {
        /// Folder of manifests to deploy at start-up, one `*.toml` per function.
        #[arg(long, env = "DISPATCHER_MANIFESTS")]
        manifests: Option<PathBuf>,
        /// Redeploy a manifest, or the `.wasm` it names, when it changes on disk.
        #[arg(long, requires = "manifests")]
        watch: bool,
        #[command(flatten)]
        engine: EngineArgs,
        /// Largest deploy (manifest and module) the admin API accepts, in bytes.
        #[arg(long, env = "DISPATCHER_MAX_DEPLOY", default_value_t = 256 << 20)]
        max_deploy: usize,
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, env = "DISPATCHER_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Largest request body, in bytes.
        #[arg(long, env = "DISPATCHER_MAX_BODY", default_value_t = 16 << 20)]
        max_body: usize,
        /// Most backend connections of each database session pool (per endpoint: host,
        /// port, user, schema) on this replica. The default leaves room for several replicas
        /// within MariaDB's default `max_connections` of 151.
        #[arg(long, env = "DISPATCHER_DB_POOL_SIZE", default_value_t = 16,
              value_parser = clap::value_parser!(u16).range(1..=1000))]
        db_pool_size: u16,
        /// After SIGTERM, seconds to keep accepting requests while health answers 503
        /// `draining`, so a load balancer takes this replica out before it stops listening.
        #[arg(long, env = "DISPATCHER_DRAIN_DELAY", default_value = "0", value_parser = seconds)]
        drain_delay: std::time::Duration,
        /// After that, seconds to wait for requests and runs in flight before closing them.
        #[arg(long, env = "DISPATCHER_DRAIN_TIMEOUT", default_value = "10", value_parser = seconds)]
        drain_timeout: std::time::Duration,
        /// Seconds a client has to send a request's headers; a keep-alive connection idle
        /// that long is closed too.
        #[arg(long, env = "DISPATCHER_HEADER_TIMEOUT", default_value = "30", value_parser = positive_seconds)]
        header_timeout: std::time::Duration,
        /// Seconds a request body may take (plus one per 64 KiB received; slower gets 408),
        /// and that a response may wait for its client to read it.
        #[arg(long, env = "DISPATCHER_BODY_TIMEOUT", default_value = "30", value_parser = positive_seconds)]
        body_timeout: std::time::Duration,
        /// Client connections open at once; past it new ones get 503 (lowered to what the
        /// descriptor limit, `ulimit -n`, leaves room for).
        #[arg(long, env = "DISPATCHER_MAX_CONNECTIONS", default_value_t = 10_000,
              value_parser = clap::value_parser!(u32).range(1..))]
        max_connections: u32,
        /// Serve Prometheus metrics at http://ADDR/metrics (off unless given).
        #[arg(long, env = "DISPATCHER_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Validate the manifests and compile their modules, then exit: 0 if all are good.
    Check {
        /// Folder of manifests.
        #[arg(long, env = "DISPATCHER_MANIFESTS", default_value = "manifests")]
        manifests: PathBuf,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Deploy manifests (each with the `.wasm` it names) to a running platform.
    Deploy {
        /// Manifest files.
        #[arg(required = true)]
        manifests: Vec<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the deployed functions.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one function and its versions.
    Show {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a function: its route answers 404 once requests in flight finish.
    Remove {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make the previous version (or --to VERSION) current again.
    Rollback {
        name: String,
        /// The version to go back to.
        #[arg(long)]
        to: Option<u32>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a function once and print its response body.
    Invoke {
        name: String,
        /// The body on the function's stdin: text, or @FILE, or @- for stdin.
        #[arg(long, short)]
        data: Option<String>,
        /// The query string the function sees, e.g. `id=7&verbose=1`.
        #[arg(long, short)]
        query: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a function's recent log lines on the server (its stderr and the platform's lines
    /// about it), oldest first.
    Logs {
        name: String,
        /// Only the lines of this invocation (its `X-Request-Id`).
        #[arg(long)]
        request: Option<String>,
        /// Keep printing new lines as they come, until stopped.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List each schedule with its next 5 fire times, in its time zone.
    Schedules {
        /// Folder of manifests.
        #[arg(long, env = "DISPATCHER_MANIFESTS", default_value = "manifests")]
        manifests: PathBuf,
    },
    /// Print the history of scheduled runs from the platform database, newest first.
    Runs {
        /// Only this function's runs.
        name: Option<String>,
        /// How many attempts to show.
        #[arg(long, default_value_t = 20)]
        limit: u64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(clap::Args)]
pub(crate) struct DbArgs {
    /// The platform database (schedule claims and history): a mysql:// URL. Defaults to
    /// DATABASE_URL. Without one, a lone dispatcher keeps schedules in memory.
    #[arg(long = "db", env = "DISPATCHER_DB")]
    pub(crate) url: Option<String>,
}

impl DbArgs {
    pub(crate) fn url(&self) -> Option<String> {
        self.url
            .clone()
            .filter(|u| !u.is_empty())
            .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()))
    }
}

#[derive(clap::Args)]
pub(crate) struct ClientArgs {
    /// The platform's URL.
    #[arg(
        long,
        env = "DISPATCHER_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub(crate) server: String,
    /// The admin token.
    #[arg(long, env = "DISPATCHER_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(clap::Args)]
pub(crate) struct EngineArgs {
    /// Folder for compiled modules, so a restart does not compile again.
    #[arg(
        long,
        env = "DISPATCHER_CACHE_DIR",
        default_value = ".dispatcher-cache"
    )]
    pub(crate) cache_dir: PathBuf,
    /// Compile every module at start-up instead of using the cache.
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// A read-only folder of compiled modules (a `--cache-dir` filled by `check`, e.g. at
    /// image build time), looked in after the cache.
    #[arg(long, env = "DISPATCHER_PRECOMPILED")]
    pub(crate) precompiled: Option<PathBuf>,
    /// Instances that may run at once across all functions (the pool's size).
    #[arg(long, env = "DISPATCHER_MAX_INSTANCES", default_value_t = 1000)]
    pub(crate) max_instances: u32,
    /// How a module not in the cache is compiled: `tiered` serves it from Winch's code at
    /// once and swaps in Cranelift's when a background compile is done; `optimized` waits for
    /// Cranelift; `baseline` runs Winch's code only (for tests and comparisons).
    #[arg(long, env = "DISPATCHER_COMPILE", value_enum, default_value_t = CompileArg::Tiered)]
    pub(crate) compile: CompileArg,
    /// Write `/tmp/perf-PID.map` naming the guests' compiled functions, so that `perf
    /// report` shows wasm frames by name (`make profile` sets it).
    #[arg(long, env = "DISPATCHER_PERF_MAP")]
    pub(crate) perf_map: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum CompileArg {
    Tiered,
    Optimized,
    Baseline,
}

impl EngineArgs {
    pub(crate) fn runtime_config(&self) -> crate::runtime::RuntimeConfig {
        crate::runtime::RuntimeConfig {
            cache_dir: (!self.no_cache).then(|| self.cache_dir.clone()),
            precompiled_dir: self.precompiled.clone().filter(|_| !self.no_cache),
            max_instances: self.max_instances,
            compile: match self.compile {
                CompileArg::Tiered => crate::runtime::Compile::Tiered,
                CompileArg::Optimized => crate::runtime::Compile::Optimized,
                CompileArg::Baseline => crate::runtime::Compile::Baseline,
            },
            perf_map: self.perf_map,
            ..crate::runtime::RuntimeConfig::default()
        }
    }
}

/// A number of seconds (`1.5` is allowed), not negative.
fn seconds(text: &str) -> Result<std::time::Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
        .filter(|d| *d <= std::time::Duration::from_secs(3600))
        .ok_or_else(|| format!("`{text}` is not a number of seconds between 0 and 3600"))
}

/// A number of seconds above 0 and at most 3600.
fn positive_seconds(text: &str) -> Result<std::time::Duration, String> {
    seconds(text)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{text}` is not a number of seconds above 0 and at most 3600"))
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            manifests,
            watch,
            engine,
            max_deploy,
            listen,
            max_body,
            db_pool_size,
            drain_delay,
            drain_timeout,
            header_timeout,
            body_timeout,
            max_connections,
            metrics_listen,
            db,
        } => {
            let config = crate::platform::Config {
                manifests,
                watch,
                runtime: engine.runtime_config(),
                db_url: db.url(),
                admin_token: std::env::var("DISPATCHER_ADMIN_TOKEN").ok(),
                http: crate::http::HttpConfig {
                    max_body_bytes: max_body,
                    max_deploy_bytes: max_deploy,
                    drain_delay,
                    drain_timeout,
                    header_timeout,
                    body_timeout,
                    max_connections: max_connections as usize,
                    ..crate::http::HttpConfig::default()
                },
                db_pool: crate::platform::PoolConfig {
                    max_backends: usize::from(db_pool_size),
                    ..crate::platform::PoolConfig::default()
                },
                metrics_listen,
                otlp: crate::telemetry::Tracing::configured(),
            };
            serve::serve(config, listen).await
        }
        Command::Check { manifests, engine } => serve::check(&manifests, &engine).await,
        Command::Deploy { manifests, client } => remote::deploy(&client, &manifests).await,
        Command::List { client } => remote::list(&client).await,
        Command::Show { name, client } => remote::show(&client, &name).await,
        Command::Remove { name, client } => remote::remove(&client, &name).await,
        Command::Rollback { name, to, client } => remote::rollback(&client, &name, to).await,
        Command::Invoke {
            name,
            data,
            query,
            client,
        } => remote::invoke(&client, &name, data.as_deref(), query.as_deref()).await,
        Command::Logs {
            name,
            request,
            follow,
            client,
        } => remote::logs(&client, &name, request.as_deref(), follow).await,
        Command::Schedules { manifests } => history::schedules(&manifests),
        Command::Runs {
            name,
            limit,
            json,
            db,
        } => history::runs(name.as_deref(), limit, json, &db).await,
    }
}
