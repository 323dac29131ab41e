//! `dispatcher`: the command line. Parses flags, loads manifests and hands a bound listener to
//! [`dispatcher::server::serve`].

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use dispatcher::manifest;
use dispatcher::registry::Registry;
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
    /// Validate the manifests, compile their modules, and serve HTTP until SIGINT or SIGTERM.
    Serve {
        #[command(flatten)]
        load: LoadArgs,
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
        #[command(flatten)]
        load: LoadArgs,
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
struct LoadArgs {
    /// Folder of manifests, one `*.toml` per function.
    #[arg(long, env = "DISPATCHER_MANIFESTS", default_value = "manifests")]
    manifests: PathBuf,
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
            load,
            listen,
            max_body,
            db,
        } => {
            let registry = load_registry(&load)?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let addr = listener.local_addr()?;
            let routes: Vec<String> = registry
                .routes
                .iter()
                .map(|(p, m, f)| match m {
                    Some(ms) => format!(
                        "{} {p} -> {}",
                        ms.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","),
                        f.name
                    ),
                    None => format!("* {p} -> {}", f.name),
                })
                .collect();
            for r in &routes {
                tracing::info!("route {r}");
            }
            let registry = Arc::new(registry);
            let store = open_store(&db, &registry).await?;
            let config = ServerConfig {
                max_body_bytes: max_body,
                ..ServerConfig::default()
            };
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let scheduler = tokio::spawn(scheduler::run(
                registry.clone(),
                store,
                SchedulerConfig {
                    replica: scheduler::replica_name(),
                    max_output_bytes: config.max_output_bytes,
                    drain_timeout: config.drain_timeout,
                },
                stop_rx.clone(),
            ));
            tokio::spawn(async move {
                shutdown_signal().await;
                // Every receiver may be gone already (the server stopped by itself).
                stop_tx.send_replace(true);
            });
            let state = Arc::new(AppState { registry, config });
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
        Command::Check { load } => {
            let registry = load_registry(&load)?;
            println!("{} function(s) OK", registry.functions.len());
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

fn load_registry(load: &LoadArgs) -> anyhow::Result<Registry> {
    let (specs, mut errors) = manifest::load_dir(&load.manifests, &|k| std::env::var(k).ok());
    let runtime = Runtime::new(&RuntimeConfig {
        cache_dir: (!load.no_cache).then(|| load.cache_dir.clone()),
        max_instances: load.max_instances,
        ..RuntimeConfig::default()
    })?;
    let (registry, build_errors) = Registry::build(&runtime, specs);
    errors.extend(build_errors);
    if errors.is_empty() {
        Ok(registry)
    } else {
        Err(manifest::ManifestErrors(errors).into())
    }
}

/// The platform database if one is configured, else memory; connected only when some
/// function has a schedule.
async fn open_store(db: &DbArgs, registry: &Registry) -> anyhow::Result<Arc<Store>> {
    let scheduled = registry
        .functions
        .values()
        .any(|f| !f.spec.schedules.is_empty());
    if !scheduled {
        return Ok(Arc::new(Store::memory()));
    }
    match db.url() {
        Some(url) => Ok(Arc::new(
            Store::connect(&url).await.context("DISPATCHER_DB")?,
        )),
        None => {
            tracing::warn!("no DISPATCHER_DB or DATABASE_URL: schedules run from memory, so several replicas would each run every fire");
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
