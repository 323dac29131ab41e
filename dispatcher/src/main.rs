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
use dispatcher::server::{self, AppState, ServerConfig};

#[derive(Parser)]
#[command(version, about = "Serverless functions on WebAssembly: HTTP routes to a fresh instance per request")]
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
    },
    /// Validate the manifests and compile their modules, then exit: 0 if all are good.
    Check {
        #[command(flatten)]
        load: LoadArgs,
    },
}

#[derive(clap::Args)]
struct LoadArgs {
    /// Folder of manifests, one `*.toml` per function.
    #[arg(long, env = "DISPATCHER_MANIFESTS", default_value = "manifests")]
    manifests: PathBuf,
    /// Folder for compiled modules, so a restart does not compile again.
    #[arg(long, env = "DISPATCHER_CACHE_DIR", default_value = ".dispatcher-cache")]
    cache_dir: PathBuf,
    /// Compile every module at start-up instead of using the cache.
    #[arg(long)]
    no_cache: bool,
    /// Instances that may run at once across all functions (the pool's size).
    #[arg(long, env = "DISPATCHER_MAX_INSTANCES", default_value_t = 1000)]
    max_instances: u32,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
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
                    Some(ms) => format!("{} {p} -> {}", ms.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","), f.name),
                    None => format!("* {p} -> {}", f.name),
                })
                .collect();
            for r in &routes {
                tracing::info!("route {r}");
            }
            let state = Arc::new(AppState {
                registry,
                config: ServerConfig {
                    max_body_bytes: max_body,
                    ..ServerConfig::default()
                },
            });
            // The one line scripts and tests wait for.
            println!("dispatcher listening on http://{addr}");
            std::io::stdout().flush().context("stdout")?;
            server::serve(listener, state, shutdown_signal()).await
        }
        Command::Check { load } => {
            let registry = load_registry(&load)?;
            println!("{} function(s) OK", registry.functions.len());
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
