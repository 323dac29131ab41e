//! The platform assembled: engine, store, deployed set, HTTP listener, schedules, catalog sync
//! and folder watch, from one [`Config`] and a bound listener.
//!
//! The binary's `serve` is [`Platform::start`] then [`Platform::serve`]; tests and tools call
//! [`run`] in-process, as mini-redis's `server::run` is called, with a listener on port 0.
//! Nothing here reads the process's flags; the one thing read from the environment is
//! `${VAR}` in manifests, which each replica expands from its own.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

pub use crate::dbpool::PoolConfig;
use crate::dbpool::Pools;
use crate::deploy::{self, Deployments};
pub use crate::http::HttpConfig;
use crate::http::{self, AdminToken, AppState};
use crate::runtime::{Compile, Runtime, RuntimeConfig};
use crate::schedule::{self, SchedulerConfig};
use crate::store::Store;
use crate::telemetry::{Telemetry, Tracing};

/// Everything a platform is started with. (No `Debug`: it holds the admin token.)
#[derive(Clone, Default)]
pub struct Config {
    /// A folder of manifests deployed at start-up as one change (unchanged files are no-ops);
    /// `None` serves what the catalog holds.
    pub manifests: Option<PathBuf>,
    /// Redeploy a manifest of `manifests`, or its `.wasm`, when it changes on disk.
    pub watch: bool,
    /// The engine: compile cache, instance pool.
    pub runtime: RuntimeConfig,
    /// The platform database (a `mysql://` URL): catalog, schedule claims and history,
    /// shared by replicas. `None` keeps them in memory for this process alone.
    pub db_url: Option<String>,
    /// The admin API's token; `None` turns the API off.
    pub admin_token: Option<String>,
    /// Limits of the HTTP listener and of each invocation's output.
    pub http: HttpConfig,
    /// The database session pools: backends per endpoint, waits.
    pub db_pool: PoolConfig,
    /// Where Prometheus scrapes `/metrics`; `None`: no metrics listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Export traces over OTLP to the endpoint the `OTEL_EXPORTER_OTLP_*` variables name.
    pub otlp: bool,
}

/// A started platform: its functions deployed, not yet serving.
pub struct Platform {
    config: Config,
    store: Arc<Store>,
    deployments: Arc<Deployments>,
    telemetry: Arc<Telemetry>,
}

impl Platform {
    /// Builds the engine, opens the store, loads the catalog and deploys the manifests
    /// folder. A folder with any bad manifest deploys nothing and fails with every error.
    pub async fn start(config: Config) -> anyhow::Result<Platform> {
        let tracing = match config.otlp {
            true => Some(Tracing::otlp()?),
            false => None,
        };
        let telemetry = Arc::new(Telemetry::new(tracing));
        let runtime = Runtime::new(&config.runtime)?;
        let store = Arc::new(open_store(config.db_url.as_deref()).await?);
        let pools = Pools::new(config.db_pool, telemetry.clone());
        let deployments =
            Deployments::start(runtime, store.clone(), pools, telemetry.clone()).await?;
        if let Some(dir) = &config.manifests {
            deployments.deploy_folder(dir).await?;
        }
        Ok(Platform {
            config,
            store,
            deployments,
            telemetry,
        })
    }

    /// [`Platform::start`], with `listener` answering 503 `starting` meanwhile (health
    /// included), so probes and load balancers see a replica that is not ready yet.
    pub async fn start_on(config: Config, listener: &TcpListener) -> anyhow::Result<Platform> {
        http::while_starting(listener, Platform::start(config)).await
    }

    /// Serves HTTP on `listener` and runs the schedules until `shutdown` resolves; then
    /// drains requests and runs in flight (bounded by the drain timeout) and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Platform {
            config,
            store,
            deployments,
            telemetry,
        } = self;
        for r in deployments.live().load().route_lines() {
            tracing::info!("route {r}");
        }
        let admin = match config.admin_token.as_deref() {
            Some(t) if !t.is_empty() => Some(AdminToken::new(t)),
            _ => {
                tracing::info!(
                    "the admin API is off: set DISPATCHER_ADMIN_TOKEN to deploy to this platform"
                );
                None
            }
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let scheduler = tokio::spawn(schedule::run(
            deployments.live().clone(),
            store.clone(),
            SchedulerConfig {
                replica: schedule::replica_name(),
                max_output_bytes: config.http.max_output_bytes,
                drain_timeout: config.http.drain_timeout,
            },
            stop_rx.clone(),
        ));
        if store.is_shared() {
            tokio::spawn(deployments.clone().sync_loop(stop_rx.clone()));
        }
        if let (true, Some(dir)) = (config.watch, config.manifests.clone()) {
            tokio::spawn(deploy::watch(deployments.clone(), dir, stop_rx.clone()));
        }
        tokio::spawn(async move {
            shutdown.await;
            // Every receiver may be gone already (the server stopped by itself).
            stop_tx.send_replace(true);
        });
        if let Some(addr) = config.metrics_listen {
            let listener = bind(addr).await.context("--metrics-listen")?;
            tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
            tokio::spawn(http::serve_metrics(
                listener,
                telemetry.clone(),
                stop_rx.clone(),
            ));
        }
        let state = Arc::new(AppState {
            deployments,
            config: config.http,
            admin,
            draining: AtomicBool::new(false),
            shutdown: stop_rx.clone(),
            telemetry: telemetry.clone(),
        });
        let mut stop = stop_rx;
        let served = http::serve(listener, state, async move {
            if stop.wait_for(|s| *s).await.is_err() {
                tracing::warn!("the shutdown signal task ended; stopping");
            }
        })
        .await;
        let scheduled = scheduler.await.context("the scheduler task failed");
        if telemetry.tracing.is_some() {
            // The exporter's last batch goes out on its own thread; wait for it off the runtime.
            let t = telemetry.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || {
                if let Some(tracing) = &t.tracing {
                    tracing.shutdown();
                }
            })
            .await
            {
                tracing::warn!("flushing the traces failed: {e}");
            }
        }
        served?;
        scheduled?;
        Ok(())
    }
}

/// Starts the platform and serves until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Platform::start_on(config, &listener)
        .await?
        .serve(listener, shutdown)
        .await
}

/// Validates a folder of manifests and compiles their modules with Cranelift (filling the
/// cache, if there is one, as an image build does), deploying nothing: the number of
/// functions, or every error found.
pub async fn check(manifests: &Path, runtime: &RuntimeConfig) -> anyhow::Result<usize> {
    let runtime = RuntimeConfig {
        compile: Compile::Optimized,
        ..runtime.clone()
    };
    let telemetry = Arc::new(Telemetry::default());
    let deployments = Deployments::start(
        Runtime::new(&runtime)?,
        Arc::new(Store::memory()),
        Pools::new(PoolConfig::default(), telemetry.clone()),
        telemetry,
    )
    .await?;
    deployments.deploy_folder(manifests).await?;
    Ok(deployments.live().peek().functions.len())
}

/// Binds `addr` for [`Platform::serve`].
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// The platform database if one is configured, else memory.
async fn open_store(url: Option<&str>) -> anyhow::Result<Store> {
    match url.filter(|u| !u.is_empty()) {
        Some(url) => Store::connect(url).await.context("DISPATCHER_DB"),
        None => {
            tracing::warn!("no DISPATCHER_DB or DATABASE_URL: deploys and schedules live in memory, so they end with this process and replicas would each run every fire");
            Ok(Store::memory())
        }
    }
}
