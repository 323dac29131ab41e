//! `dispatcher`: the command line. Parses flags, loads manifests and hands a bound listener to
//! [`dispatcher::server::serve`].

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use dispatcher::admin::AdminToken;
use dispatcher::client::{print_details, print_list, print_reports, Client};
use dispatcher::deploy::{DeployError, Platform};
use dispatcher::manifest::{self, FunctionSpec};
use dispatcher::runtime::{Runtime, RuntimeConfig};
use dispatcher::scheduler::{self, SchedulerConfig};
use dispatcher::server::{self, AppState, ServerConfig};
use dispatcher::store::Store;

#[derive(Parser)]
#[command(
    version,
    about = "Serverless functions on WebAssembly: HTTP routes to a fresh instance per request"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
struct DbArgs {
    /// The platform database (schedule claims and history): a mysql:// URL. Defaults to
    /// DATABASE_URL. Without one, a lone dispatcher keeps schedules in memory.
    #[arg(long = "db", env = "DISPATCHER_DB")]
    url: Option<String>,
}

impl DbArgs {
    fn url(&self) -> Option<String> {
        self.url
            .clone()
            .filter(|u| !u.is_empty())
            .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()))
    }
}

#[derive(clap::Args)]
struct ClientArgs {
    /// The platform's URL.
    #[arg(
        long,
        env = "DISPATCHER_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// The admin token.
    #[arg(long, env = "DISPATCHER_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl ClientArgs {
    fn client(&self) -> anyhow::Result<Client> {
        Client::new(&self.server, self.token.clone())
    }

    fn print(
        &self,
        value: &serde_json::Value,
        human: impl FnOnce(&serde_json::Value),
    ) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            human(value);
        }
        Ok(())
    }
}

#[derive(clap::Args)]
struct EngineArgs {
    /// Folder for compiled modules, so a restart does not compile again.
    #[arg(
        long,
        env = "DISPATCHER_CACHE_DIR",
        default_value = ".dispatcher-cache"
    )]
    cache_dir: PathBuf,
    /// Compile every module at start-up instead of using the cache.
    #[arg(long)]
    no_cache: bool,
    /// Instances that may run at once across all functions (the pool's size).
    #[arg(long, env = "DISPATCHER_MAX_INSTANCES", default_value_t = 1000)]
    max_instances: u32,
}

/// mimalloc instead of glibc's malloc: the request path allocates a little at every step
/// (CGI variables, headers, bodies), and in an A/B run on the echo path mimalloc took 2 us of
/// CPU off each request and added 5% requests/s.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Log lines are formatted on the caller's thread and written by a background thread
    // through a buffer, so a busy server makes one write(2) per batch instead of per line.
    // Nothing is dropped: a full queue makes callers wait (lossy = false).
    let (writer, log_guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    // Flush the log before the final word, so the order on stderr is the order of events.
    drop(log_guard);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            manifests,
            watch,
            engine,
            max_deploy,
            listen,
            max_body,
            db,
        } => {
            let runtime = engine.runtime()?;
            let store = open_store(&db).await?;
            let platform = Platform::start(runtime.clone(), store.clone()).await?;
            if let Some(dir) = &manifests {
                deploy_folder(&platform, &runtime, dir).await?;
            }
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let addr = listener.local_addr()?;
            for r in platform.live().load().route_lines() {
                tracing::info!("route {r}");
            }
            let admin = match std::env::var("DISPATCHER_ADMIN_TOKEN") {
                Ok(t) if !t.is_empty() => Some(AdminToken::new(&t)),
                _ => {
                    tracing::info!("the admin API is off: set DISPATCHER_ADMIN_TOKEN to deploy to this platform");
                    None
                }
            };
            let config = ServerConfig {
                max_body_bytes: max_body,
                max_deploy_bytes: max_deploy,
                ..ServerConfig::default()
            };
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let scheduler = tokio::spawn(scheduler::run(
                platform.live().clone(),
                store.clone(),
                SchedulerConfig {
                    replica: scheduler::replica_name(),
                    max_output_bytes: config.max_output_bytes,
                    drain_timeout: config.drain_timeout,
                },
                stop_rx.clone(),
            ));
            if matches!(*store, Store::Db(_)) {
                tokio::spawn(platform.clone().sync_loop(stop_rx.clone()));
            }
            if let (true, Some(dir)) = (watch, manifests) {
                tokio::spawn(dispatcher::watch::run(
                    platform.clone(),
                    dir,
                    stop_rx.clone(),
                ));
            }
            tokio::spawn(async move {
                shutdown_signal().await;
                // Every receiver may be gone already (the server stopped by itself).
                stop_tx.send_replace(true);
            });
            let state = Arc::new(AppState {
                platform,
                config,
                admin,
            });
            // The one line scripts and tests wait for.
            println!("dispatcher listening on http://{addr}");
            std::io::stdout().flush().context("stdout")?;
            let mut stop = stop_rx;
            server::serve(listener, state, async move {
                if stop.wait_for(|s| *s).await.is_err() {
                    tracing::warn!("the shutdown signal task ended; stopping");
                }
            })
            .await?;
            scheduler.await.context("the scheduler task failed")?;
            Ok(())
        }
        Command::Check { manifests, engine } => {
            let runtime = engine.runtime()?;
            let platform = Platform::start(runtime.clone(), Arc::new(Store::memory())).await?;
            deploy_folder(&platform, &runtime, &manifests).await?;
            println!("{} function(s) OK", platform.live().load().functions.len());
            Ok(())
        }
        Command::Deploy { manifests, client } => {
            let c = client.client()?;
            let mut reports = Vec::new();
            for m in &manifests {
                reports.push(c.deploy(m).await?);
            }
            client.print(&serde_json::Value::Array(reports), |v| {
                print_reports(v.as_array().map(Vec::as_slice).unwrap_or_default())
            })
        }
        Command::List { client } => {
            let v = client.client()?.list().await?;
            client.print(&v, print_list)
        }
        Command::Show { name, client } => {
            let v = client.client()?.show(&name).await?;
            client.print(&v, print_details)
        }
        Command::Remove { name, client } => {
            let v = client.client()?.remove(&name).await?;
            client.print(&v, |v| print_reports(std::slice::from_ref(v)))
        }
        Command::Rollback { name, to, client } => {
            let v = client.client()?.rollback(&name, to).await?;
            client.print(&v, |v| print_reports(std::slice::from_ref(v)))
        }
        Command::Invoke {
            name,
            data,
            query,
            client,
        } => {
            let body = match data.as_deref() {
                None => Vec::new(),
                Some("@-") => {
                    let mut buf = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                        .context("reading the body from stdin")?;
                    buf
                }
                Some(d) => match d.strip_prefix('@') {
                    Some(file) => std::fs::read(file)
                        .with_context(|| format!("cannot read --data file {file}"))?,
                    None => d.as_bytes().to_vec(),
                },
            };
            let out = client
                .client()?
                .invoke(&name, query.as_deref(), body)
                .await?;
            let mut stdout = std::io::stdout();
            stdout.write_all(&out)?;
            stdout.flush()?;
            Ok(())
        }
        Command::Schedules { manifests } => {
            let (specs, errors) = manifest::load_dir(&manifests, &|k| std::env::var(k).ok());
            if !errors.is_empty() {
                return Err(manifest::ManifestErrors(errors).into());
            }
            let now = chrono::Utc::now();
            let mut any = false;
            for spec in &specs {
                for s in &spec.schedules {
                    any = true;
                    println!(
                        "{} / {}  cron \"{}\"  {}  overlap={:?} catch_up={:?} retries={}",
                        spec.name,
                        s.name,
                        s.expression,
                        s.timezone,
                        s.overlap,
                        s.catch_up,
                        s.retries
                    );
                    for t in s.upcoming(now, 5) {
                        println!("    {}", t.format("%Y-%m-%d %H:%M:%S %Z (%:z)"));
                    }
                }
            }
            if !any {
                println!("no schedules in {}", manifests.display());
            }
            Ok(())
        }
        Command::Runs {
            name,
            limit,
            json,
            db,
        } => {
            let url = db.url().context(
                "the run history lives in the platform database: set DISPATCHER_DB (or DATABASE_URL)",
            )?;
            let store = Store::connect(&url).await?;
            let runs = store.runs(name.as_deref(), limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
                return Ok(());
            }
            println!(
                "{:<16} {:<12} {:<27} {:>3} {:<10} {:>9}  {:<24} ERROR",
                "FUNCTION", "SCHEDULE", "FIRE TIME", "#", "STATUS", "MS", "REPLICA"
            );
            for r in runs {
                println!(
                    "{:<16} {:<12} {:<27} {:>3} {:<10} {:>9}  {:<24} {}",
                    r.function,
                    r.schedule,
                    r.fire_time,
                    r.attempt,
                    r.status,
                    r.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
                    r.replica,
                    r.error.unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}

impl EngineArgs {
    fn runtime(&self) -> anyhow::Result<Runtime> {
        Runtime::new(&RuntimeConfig {
            cache_dir: (!self.no_cache).then(|| self.cache_dir.clone()),
            max_instances: self.max_instances,
            ..RuntimeConfig::default()
        })
    }
}

/// Deploys every manifest of a folder as one change, or reports every problem and changes
/// nothing.
async fn deploy_folder(platform: &Platform, runtime: &Runtime, dir: &Path) -> anyhow::Result<()> {
    let (specs, mut errors) = manifest::load_dir(dir, &|k| std::env::var(k).ok());
    let with_source = |specs: Vec<FunctionSpec>| {
        specs
            .into_iter()
            .map(|s| {
                let source = s.manifest_path.display().to_string();
                (s, source)
            })
            .collect::<Vec<_>>()
    };
    if !errors.is_empty() {
        // Report the valid manifests' own problems too (modules, routes), without deploying.
        let scratch = Platform::start(runtime.clone(), Arc::new(Store::memory())).await?;
        if let Err(e) = scratch.deploy_specs(with_source(specs), "check").await {
            errors.extend(refused(e)?.0);
        }
        return Err(manifest::ManifestErrors(errors).into());
    }
    match platform.deploy_specs(with_source(specs), "manifests").await {
        Ok(reports) => {
            for r in reports.iter().filter(|r| r.action == "unchanged") {
                tracing::info!(function = %r.name, version = r.version, "unchanged");
            }
            Ok(())
        }
        Err(e) => Err(refused(e)?.into()),
    }
}

/// The manifest errors of a refused deploy; other failures pass through.
fn refused(e: DeployError) -> anyhow::Result<manifest::ManifestErrors> {
    match e {
        DeployError::Invalid(errors) | DeployError::Conflict { errors, .. } => Ok(errors),
        other => Err(other.into()),
    }
}

/// The platform database if one is configured, else memory.
async fn open_store(db: &DbArgs) -> anyhow::Result<Arc<Store>> {
    match db.url() {
        Some(url) => Ok(Arc::new(
            Store::connect(&url).await.context("DISPATCHER_DB")?,
        )),
        None => {
            tracing::warn!("no DISPATCHER_DB or DATABASE_URL: deploys and schedules live in memory, so they end with this process and replicas would each run every fire");
            Ok(Arc::new(Store::memory()))
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
